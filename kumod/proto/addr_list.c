/* SPDX-License-Identifier: Apache-2.0 */
/* RFC 5322 address lists (see addr_list.h): a recursive-descent scanner over
 * the value with comment skipping, phrases, quoted strings and addr-specs. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "base/xalloc.h"
#include "proto/addr_list.h"

#define MAX_ENTRIES 1000
#define MAX_COMMENT_DEPTH 32

struct p {
	const char *s;
	size_t n, i;
	char *err;
	size_t errlen;
	int failed;
};

static int fail(struct p *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct p *p, const char *fmt, ...)
{
	if (!p->failed) {
		p->failed = 1;
		char msg[160];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		snprintf(p->err, p->errlen, "%s at offset %zu", msg, p->i);
	}
	return -1;
}

static int wsp(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Skips whitespace and (nested) comments. */
static int cfws(struct p *p)
{
	for (;;) {
		while (p->i < p->n && wsp(p->s[p->i]))
			p->i++;
		if (p->i >= p->n || p->s[p->i] != '(')
			return 0;
		int depth = 0;
		do {
			char c = p->s[p->i++];
			if (c == '\\' && p->i < p->n)
				p->i++;
			else if (c == '(' && ++depth > MAX_COMMENT_DEPTH)
				return fail(p, "comments nested too deep");
			else if (c == ')')
				depth--;
		} while (depth > 0 && p->i < p->n);
		if (depth > 0)
			return fail(p, "unterminated comment");
	}
}

/* atext of RFC 5322, plus bytes >= 0x80 (RFC 6532). */
static int atext(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (unsigned char)c >= 0x80 || strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* A quoted string at p->i (the quote), unquoted into out. */
static int quoted(struct p *p, struct buf *out)
{
	p->i++;
	while (p->i < p->n && p->s[p->i] != '"') {
		char c = p->s[p->i++];
		if (c == '\\') {
			if (p->i >= p->n)
				break;
			c = p->s[p->i++];
		} else if (c == '\r' || c == '\n')
			continue; /* folding */
		buf_appendc(out, c);
	}
	if (p->i >= p->n)
		return fail(p, "unterminated quoted string");
	p->i++;
	return 0;
}

/* dot-atom text (dots allowed anywhere: obs-local-part is common) into out. */
static int atom(struct p *p, struct buf *out, int dots)
{
	size_t start = p->i;
	while (p->i < p->n && (atext(p->s[p->i]) || (dots && p->s[p->i] == '.')))
		buf_appendc(out, p->s[p->i++]);
	return p->i > start ? 0 : -1;
}

/* RFC 2047 "=?charset?B|Q?text?=": decoded into out when the charset is
 * UTF-8, US-ASCII or ISO-8859-1; -1 (left as it is) otherwise. */
static int b64v(char c)
{
	return c >= 'A' && c <= 'Z'   ? c - 'A'
	       : c >= 'a' && c <= 'z' ? c - 'a' + 26
	       : c >= '0' && c <= '9' ? c - '0' + 52
	       : c == '+'	      ? 62
	       : c == '/'	      ? 63
				      : -1;
}

static int hexv(char c)
{
	return c >= '0' && c <= '9'   ? c - '0'
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
				      : -1;
}

static int encoded_word(const char *w, size_t n, struct buf *out)
{
	if (n < 8 || w[0] != '=' || w[1] != '?' || w[n - 2] != '?' || w[n - 1] != '=')
		return -1;
	const char *cs = w + 2, *q1 = memchr(cs, '?', n - 2);
	if (!q1 || q1 + 3 > w + n - 2 || q1[2] != '?')
		return -1;
	size_t cslen = (size_t)(q1 - cs);
	const char *star = memchr(cs, '*', cslen); /* RFC 2231 language */
	if (star)
		cslen = (size_t)(star - cs);
	int latin1 = cslen == 10 && strncasecmp(cs, "iso-8859-1", 10) == 0;
	if (!latin1 && !(cslen == 5 && strncasecmp(cs, "utf-8", 5) == 0) &&
	    !(cslen == 8 && strncasecmp(cs, "us-ascii", 8) == 0))
		return -1;
	char enc = q1[1];
	const char *t = q1 + 3, *end = w + n - 2;
	struct buf raw;
	buf_init(&raw);
	if (enc == 'B' || enc == 'b') {
		unsigned acc = 0;
		int bits = 0;
		for (; t < end && *t != '='; t++) {
			int v = b64v(*t);
			if (v < 0) {
				buf_free(&raw);
				return -1;
			}
			acc = acc << 6 | (unsigned)v;
			bits += 6;
			if (bits >= 8) {
				bits -= 8;
				buf_appendc(&raw, (char)(acc >> bits & 0xff));
			}
		}
	} else if (enc == 'Q' || enc == 'q') {
		for (; t < end; t++) {
			if (*t == '_')
				buf_appendc(&raw, ' ');
			else if (*t == '=' && t + 2 < end + 1 && hexv(t[1]) >= 0 &&
				 hexv(t[2]) >= 0) {
				buf_appendc(&raw, (char)(hexv(t[1]) << 4 | hexv(t[2])));
				t += 2;
			} else
				buf_appendc(&raw, *t);
		}
	} else {
		buf_free(&raw);
		return -1;
	}
	for (size_t i = 0; i < raw.len; i++) {
		unsigned char c = (unsigned char)raw.data[i];
		if (latin1 && c >= 0x80) {
			buf_appendc(out, (char)(0xC0 | c >> 6));
			buf_appendc(out, (char)(0x80 | (c & 0x3F)));
		} else
			buf_appendc(out, (char)c);
	}
	buf_free(&raw);
	return 0;
}

/* A phrase (display name): words and quoted strings, joined by one space;
 * adjacent encoded words join without the space (RFC 2047 §6.2). Stops
 * before '<', ':', ',', ';', '@' or the end. */
static int phrase(struct p *p, struct buf *out)
{
	int prev_encoded = 0;
	size_t words = 0;
	for (;;) {
		if (cfws(p) < 0)
			return -1;
		if (p->i >= p->n)
			break;
		char c = p->s[p->i];
		struct buf w;
		buf_init(&w);
		int encoded = 0;
		if (c == '"') {
			if (quoted(p, &w) < 0) {
				buf_free(&w);
				return -1;
			}
		} else if (atext(c) || c == '.') {
			size_t start = p->i;
			atom(p, &w, 1);
			struct buf dec;
			buf_init(&dec);
			if (encoded_word(p->s + start, p->i - start, &dec) == 0) {
				buf_free(&w);
				w = dec;
				encoded = 1;
			} else
				buf_free(&dec);
		} else {
			buf_free(&w);
			break;
		}
		if (words && !(encoded && prev_encoded))
			buf_appendc(out, ' ');
		buf_append(out, w.data ? w.data : "", w.len);
		buf_free(&w);
		prev_encoded = encoded;
		words++;
	}
	return (int)words;
}

/* local@domain at p->i (after '<' or at a bare addr-spec). */
static int addr_spec(struct p *p, struct addr_entry *e)
{
	struct buf local, dom;
	buf_init(&local);
	buf_init(&dom);
	int rc = -1;
	if (cfws(p) < 0)
		goto out;
	if (p->i < p->n && p->s[p->i] == '"') {
		if (quoted(p, &local) < 0)
			goto out;
	} else if (atom(p, &local, 1) < 0) {
		fail(p, "expected a local part");
		goto out;
	}
	if (cfws(p) < 0)
		goto out;
	if (p->i >= p->n || p->s[p->i] != '@') {
		fail(p, "expected '@'");
		goto out;
	}
	p->i++;
	if (cfws(p) < 0)
		goto out;
	if (p->i < p->n && p->s[p->i] == '[') {
		while (p->i < p->n && p->s[p->i] != ']')
			buf_appendc(&dom, p->s[p->i++]);
		if (p->i >= p->n) {
			fail(p, "unterminated domain literal");
			goto out;
		}
		buf_appendc(&dom, p->s[p->i++]);
	} else if (atom(p, &dom, 1) < 0) {
		fail(p, "expected a domain");
		goto out;
	}
	e->local = xstrndup(local.data ? local.data : "", local.len);
	e->domain = xstrndup(dom.data ? dom.data : "", dom.len);
	rc = cfws(p);
out:
	if (rc < 0) {
		free(e->local);
		free(e->domain);
		e->local = e->domain = NULL;
	}
	buf_free(&local);
	buf_free(&dom);
	return rc;
}

static int add(struct p *p, struct addr_list *l, struct addr_entry *e)
{
	if (l->n == MAX_ENTRIES) {
		free(e->name);
		free(e->local);
		free(e->domain);
		free(e->group);
		return fail(p, "more than %d addresses", MAX_ENTRIES);
	}
	l->v = xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
	l->v[l->n++] = *e;
	return 0;
}

/* One mailbox: "Name <a@b>", "<a@b>" or "a@b" (a bare addr-spec begins
 * like a phrase: the phrase is read, then '@' tells). */
static int mailbox(struct p *p, struct addr_list *l, const char *group)
{
	struct addr_entry e = {0};
	size_t start = p->i;
	struct buf name;
	buf_init(&name);
	int words = phrase(p, &name);
	if (words < 0) {
		buf_free(&name);
		return -1;
	}
	if (p->i < p->n && p->s[p->i] == '<') {
		p->i++;
		if (addr_spec(p, &e) < 0 || p->i >= p->n || p->s[p->i] != '>') {
			buf_free(&name);
			free(e.local);
			free(e.domain);
			return fail(p, "expected '>'");
		}
		p->i++;
		if (words)
			e.name = xstrndup(name.data ? name.data : "", name.len);
	} else {
		p->i = start;
		if (addr_spec(p, &e) < 0) {
			buf_free(&name);
			return -1;
		}
	}
	buf_free(&name);
	if (cfws(p) < 0) {
		free(e.name);
		free(e.local);
		free(e.domain);
		return -1;
	}
	e.group = group ? xstrdup(group) : NULL;
	return add(p, l, &e);
}

int addr_list_parse(const char *s, size_t len, struct addr_list *out, char *err, size_t errlen)
{
	char dummy[1];
	if (!err || !errlen)
		err = dummy, errlen = sizeof(dummy);
	memset(out, 0, sizeof(*out));
	struct p p = {.s = s ? s : "", .n = len, .err = err, .errlen = errlen};
	for (;;) {
		if (cfws(&p) < 0)
			break;
		if (p.i >= p.n)
			break;
		if (p.s[p.i] == ',') { /* empty list elements are tolerated */
			p.i++;
			continue;
		}
		/* a group is a phrase followed by ':' */
		size_t start = p.i;
		struct buf gname;
		buf_init(&gname);
		int words = phrase(&p, &gname);
		if (words > 0 && p.i < p.n && p.s[p.i] == ':') {
			p.i++;
			char *g = xstrndup(gname.data ? gname.data : "", gname.len);
			buf_free(&gname);
			out->groups++;
			size_t before = out->n;
			for (;;) {
				if (cfws(&p) < 0)
					break;
				if (p.i < p.n && p.s[p.i] == ';') {
					p.i++;
					break;
				}
				if (p.i < p.n && p.s[p.i] == ',') {
					p.i++;
					continue;
				}
				if (p.i >= p.n) {
					fail(&p, "group without ';'");
					break;
				}
				if (mailbox(&p, out, g) < 0)
					break;
			}
			if (!p.failed && out->n == before) {
				struct addr_entry e = {.group = xstrdup(g)};
				add(&p, out, &e);
			}
			free(g);
		} else {
			buf_free(&gname);
			if (words < 0)
				break;
			p.i = start;
			if (mailbox(&p, out, NULL) < 0)
				break;
		}
		if (p.failed || cfws(&p) < 0)
			break;
		if (p.i < p.n && p.s[p.i] != ',') {
			fail(&p, "expected ',' between addresses");
			break;
		}
	}
	if (p.failed) {
		addr_list_free(out);
		return -1;
	}
	return 0;
}

void addr_list_free(struct addr_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].name);
		free(l->v[i].local);
		free(l->v[i].domain);
		free(l->v[i].group);
	}
	free(l->v);
	memset(l, 0, sizeof(*l));
}
