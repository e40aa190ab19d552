/* SPDX-License-Identifier: Apache-2.0 */
/* DKIM tag-lists (RFC 6376 3.2): the syntax of DKIM-Signature field values
 * and of DKIM key records (selector._domainkey TXT). Pure; values point into
 * the input. Callers: kumod/lua/lua_dkim_verify.c, tests/unit/test_dkim_tags.c,
 * fuzz/fuzz_dkim_tags.c. */
#ifndef KUMOD_PROTO_DKIM_TAGS_H
#define KUMOD_PROTO_DKIM_TAGS_H

#include <stddef.h>

#include "base/buf.h"

#define DKIM_TAGS_MAX 32

struct dkim_tag {
	const char *name, *val; /* into the input; val without surrounding FWS */
	size_t nlen, vlen;
};

struct dkim_tags {
	size_t n;
	struct dkim_tag t[DKIM_TAGS_MAX];
};

/* Parses tag-list s[0..len): tag-spec *( ";" tag-spec ) [ ";" ], tag-spec =
 * [FWS] tag-name [FWS] "=" [FWS] tag-value [FWS]; tag-name = ALPHA *(ALPHA /
 * DIGIT / "_"); a value has no ';' and no control other than FWS. 0, or -1
 * with why in err: a syntax error, a tag given twice, more than
 * DKIM_TAGS_MAX tags. */
int dkim_tags_parse(const char *s, size_t len, struct dkim_tags *out, char *err, size_t errlen);

/* The tag named name, or NULL. */
const struct dkim_tag *dkim_tags_get(const struct dkim_tags *tags, const char *name);

/* Appends v[0..n) without its whitespace (SP, HTAB, CR, LF): b=, bh=, p=. */
void dkim_tag_nows(const char *v, size_t n, struct buf *out);

#endif
