/* SPDX-License-Identifier: Apache-2.0 */
/* DKIM tag-list parsing (see dkim_tags.h). */
#include <stdio.h>
#include <string.h>

#include "proto/dkim_tags.h"

static int is_fws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_name_char(char c)
{
	return is_alpha(c) || (c >= '0' && c <= '9') || c == '_';
}

static void trim(const char **p, size_t *n)
{
	while (*n && is_fws(**p))
		(*p)++, (*n)--;
	while (*n && is_fws((*p)[*n - 1]))
		(*n)--;
}

/* One tag-spec s[0..n) into t; -1 with err. */
static int parse_spec(const char *s, size_t n, struct dkim_tag *t, char *err, size_t errlen)
{
	const char *eq = memchr(s, '=', n);
	if (!eq) {
		snprintf(err, errlen, "tag without '=': '%.*s'", (int)(n > 40 ? 40 : n), s);
		return -1;
	}
	const char *name = s, *val = eq + 1;
	size_t nlen = (size_t)(eq - s), vlen = n - nlen - 1;
	trim(&name, &nlen);
	trim(&val, &vlen);
	if (!nlen || !is_alpha(name[0])) {
		snprintf(err, errlen, "invalid tag name '%.*s'", (int)(nlen > 40 ? 40 : nlen),
			 name);
		return -1;
	}
	for (size_t i = 0; i < nlen; i++)
		if (!is_name_char(name[i])) {
			snprintf(err, errlen, "invalid tag name '%.*s'",
				 (int)(nlen > 40 ? 40 : nlen), name);
			return -1;
		}
	for (size_t i = 0; i < vlen; i++) {
		unsigned char c = (unsigned char)val[i];
		if ((c < 0x21 && !is_fws((char)c)) || c == 0x7f) {
			snprintf(err, errlen, "invalid character in the value of tag '%.*s'",
				 (int)nlen, name);
			return -1;
		}
	}
	*t = (struct dkim_tag){name, val, nlen, vlen};
	return 0;
}

int dkim_tags_parse(const char *s, size_t len, struct dkim_tags *out, char *err, size_t errlen)
{
	out->n = 0;
	size_t i = 0;
	while (i < len) {
		const char *semi = memchr(s + i, ';', len - i);
		size_t end = semi ? (size_t)(semi - s) : len;
		const char *spec = s + i;
		size_t n = end - i;
		i = semi ? end + 1 : len;
		const char *tp = spec;
		size_t tn = n;
		trim(&tp, &tn);
		if (!tn) {
			if (semi && i < len) { /* ";;" or a leading ";": an empty tag-spec */
				const char *rest = s + i;
				size_t rn = len - i;
				trim(&rest, &rn);
				if (rn || out->n == 0) {
					snprintf(err, errlen, "empty tag");
					goto fail;
				}
			}
			continue;
		}
		if (out->n == DKIM_TAGS_MAX) {
			snprintf(err, errlen, "more than %d tags", DKIM_TAGS_MAX);
			goto fail;
		}
		struct dkim_tag *t = &out->t[out->n];
		if (parse_spec(spec, n, t, err, errlen) != 0)
			goto fail;
		for (size_t k = 0; k < out->n; k++)
			if (out->t[k].nlen == t->nlen &&
			    memcmp(out->t[k].name, t->name, t->nlen) == 0) {
				snprintf(err, errlen, "tag '%.*s' given twice", (int)t->nlen,
					 t->name);
				goto fail;
			}
		out->n++;
	}
	return 0;
fail:
	out->n = 0;
	return -1;
}

const struct dkim_tag *dkim_tags_get(const struct dkim_tags *tags, const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; i < tags->n; i++)
		if (tags->t[i].nlen == n && memcmp(tags->t[i].name, name, n) == 0)
			return &tags->t[i];
	return NULL;
}

void dkim_tag_nows(const char *v, size_t n, struct buf *out)
{
	for (size_t i = 0; i < n; i++)
		if (!is_fws(v[i]))
			buf_appendc(out, v[i]);
}
