/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `bounce`: kumod/proto/bounce.c (kumo.configure_bounce_classifier).
 * Input: a rules file, then an empty line, then responses, one per line ("<code> text").
 * The rules are read as TOML when the input starts with '[' or '#', else as JSON. Invariants:
 * loading never crashes and either adds rules or explains why; every classification is
 * "Uncategorized" or one of the labels the rules file defines; classifying the same response
 * again (now from the cache) answers the same label; the subject never exceeds its bound. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "proto/bounce.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	const char *sep = NULL;
	for (size_t i = 0; i + 1 < size; i++)
		if (s[i] == '\n' && s[i + 1] == '\n') {
			sep = s + i;
			break;
		}
	size_t rules_len = sep ? (size_t)(sep - s) : size;
	struct bounce_classifier *bc = bounce_classifier_new(4, 4); /* small: evictions happen */
	char err[600] = "";
	const char *name = size && (s[0] == '[' || s[0] == '#') ? "fuzz.toml" : "fuzz.json";
	int rc = bounce_classifier_load(bc, name, s, rules_len, err, sizeof(err));
	CHECK(rc == 0 || err[0]);
	if (sep) {
		const char *p = sep + 2, *end = s + size;
		while (p < end) {
			const char *nl = memchr(p, '\n', (size_t)(end - p));
			size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
			char line[1200];
			if (n >= sizeof(line))
				n = sizeof(line) - 1;
			memcpy(line, p, n);
			line[n] = 0;
			int code = atoi(line);
			const char *a = bounce_classify(bc, code, NULL, line);
			CHECK(a != NULL);
			const char *b = bounce_classify(bc, code, NULL, line);
			CHECK(strcmp(a, b) == 0);
			char subj[64];
			CHECK(bounce_subject(subj, sizeof(subj), code, "5.1.1", line) <
			      sizeof(subj));
			p = nl ? nl + 1 : end;
		}
	}
	bounce_classifier_free(bc);
	return 0;
}
