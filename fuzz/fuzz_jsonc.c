/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `jsonc`: jsonc_strip() (comments in kumo.json_load/json_parse input).
 * Invariants: every byte either stays or becomes a space, and newlines always stay (so
 * parser positions still point into the original); stripping is idempotent; a document
 * with no '#' and no '/' is unchanged; after stripping, no comment opener is left outside
 * strings (checked by a second, independent scan of string boundaries). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/jsonc.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *a = malloc(size + 1), *b = malloc(size + 1);
	memcpy(a, data, size);
	int rc = jsonc_strip(a, size);
	CHECK(rc == 0 || rc == -1);
	int plain = !memchr(data, '#', size) && !memchr(data, '/', size);
	for (size_t i = 0; i < size; i++) {
		CHECK(a[i] == (char)data[i] || a[i] == ' ');
		if (data[i] == '\n')
			CHECK(a[i] == '\n');
		if (plain)
			CHECK(a[i] == (char)data[i]);
	}
	memcpy(b, a, size);
	CHECK(jsonc_strip(b, size) == 0);
	CHECK(memcmp(a, b, size) == 0);
	int in_str = 0;
	for (size_t i = 0; i < size; i++) {
		if (in_str) {
			if (a[i] == '\\')
				i++;
			else if (a[i] == '"')
				in_str = 0;
			continue;
		}
		if (a[i] == '"')
			in_str = 1;
		CHECK(a[i] != '#');
		CHECK(!(a[i] == '/' && i + 1 < size && (a[i + 1] == '/' || a[i + 1] == '*')));
	}
	free(a);
	free(b);
	return 0;
}
