/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `dkim_tags`: the DKIM tag-list parser (kumod/proto/dkim_tags.c), i.e.
 * what msg:dkim_verify reads from any DKIM-Signature field a client sends and from any
 * key record a domain publishes. Invariants:
 *  - a parse either fails with a reason and no tags, or yields at most DKIM_TAGS_MAX tags
 *    whose names and values lie inside the input, names start with a letter and hold only
 *    letters, digits and '_', values neither start nor end with whitespace and hold no ';';
 *  - no tag name appears twice, and dkim_tags_get finds each tag by its name;
 *  - dkim_tag_nows output has no whitespace and is no longer than the value. */
#include <stdint.h>
#include <string.h>

#include "base/buf.h"
#include "proto/dkim_tags.h"
#include "fuzz_check.h"

static int ws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 16384)
		return 0;
	const char *s = (const char *)data;
	struct dkim_tags tags;
	char err[160] = "";
	if (dkim_tags_parse(s, size, &tags, err, sizeof(err)) != 0) {
		CHECK(err[0] && tags.n == 0);
		return 0;
	}
	CHECK(tags.n <= DKIM_TAGS_MAX);
	for (size_t i = 0; i < tags.n; i++) {
		const struct dkim_tag *t = &tags.t[i];
		CHECK(t->name >= s && t->name + t->nlen <= s + size);
		CHECK(t->val >= s && t->val + t->vlen <= s + size);
		CHECK(t->nlen > 0);
		CHECK((t->name[0] >= 'a' && t->name[0] <= 'z') ||
		      (t->name[0] >= 'A' && t->name[0] <= 'Z'));
		for (size_t k = 0; k < t->vlen; k++)
			CHECK(t->val[k] != ';');
		if (t->vlen)
			CHECK(!ws(t->val[0]) && !ws(t->val[t->vlen - 1]));
		char name[64];
		if (t->nlen < sizeof(name)) {
			memcpy(name, t->name, t->nlen);
			name[t->nlen] = 0;
			CHECK(dkim_tags_get(&tags, name) == t);
		}
		struct buf out;
		buf_init(&out);
		dkim_tag_nows(t->val, t->vlen, &out);
		CHECK(out.len <= t->vlen);
		for (size_t k = 0; k < out.len; k++)
			CHECK(!ws(out.data[k]));
		buf_free(&out);
	}
	return 0;
}
