/* SPDX-License-Identifier: Apache-2.0 */
/* DKIM canonicalization and field formatting (see dkim.h). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proto/dkim.h"
#include "proto/rfc5322.h"

#define DKIM_FOLD_AT 76

const char *dkim_canon_name(enum dkim_canon c)
{
	return c == DKIM_RELAXED ? "relaxed" : "simple";
}

static int is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* --- body ------------------------------------------------------------------ */

static const char crlf[] = "\r\n";

/* Emits one relaxed line content: WSP runs become one SP, trailing WSP is
 * dropped. Returns 1 when something was emitted. */
static int relaxed_line(const char *p, size_t n, dkim_emit_fn emit, void *ctx)
{
	while (n && is_wsp(p[n - 1]))
		n--;
	size_t i = 0, run = 0;
	while (i < n) {
		if (!is_wsp(p[i])) {
			i++;
			continue;
		}
		emit(ctx, p + run, i - run);
		emit(ctx, " ", 1);
		while (i < n && is_wsp(p[i]))
			i++;
		run = i;
	}
	emit(ctx, p + run, n - run);
	return n > 0;
}

void dkim_canon_body(enum dkim_canon c, const char *body, size_t len, dkim_emit_fn emit, void *ctx)
{
	size_t pos = 0, empty = 0;
	int any = 0;
	while (pos < len) {
		const char *nl = memchr(body + pos, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - body) : len;
		size_t next = nl ? end + 1 : len;
		size_t n = end - pos;
		if (nl && n && body[end - 1] == '\r')
			n--;
		const char *line = body + pos;
		size_t keep = n;
		if (c == DKIM_RELAXED)
			while (keep && is_wsp(line[keep - 1]))
				keep--;
		if (keep == 0) {
			empty++;
		} else {
			for (; empty; empty--)
				emit(ctx, crlf, 2);
			if (c == DKIM_RELAXED)
				relaxed_line(line, keep, emit, ctx);
			else
				emit(ctx, line, n);
			emit(ctx, crlf, 2);
			any = 1;
		}
		pos = next;
	}
	if (!any && c == DKIM_SIMPLE)
		emit(ctx, crlf, 2);
}

/* --- header fields --------------------------------------------------------- */

void dkim_canon_header(enum dkim_canon c, const char *field, size_t len, struct buf *out)
{
	if (len && field[len - 1] == '\n') {
		len--;
		if (len && field[len - 1] == '\r')
			len--;
	}
	if (c == DKIM_SIMPLE) {
		buf_append(out, field, len);
		buf_append(out, crlf, 2);
		return;
	}
	const char *colon = memchr(field, ':', len);
	size_t nlen = colon ? (size_t)(colon - field) : len;
	while (nlen && is_wsp(field[nlen - 1]))
		nlen--;
	buf_reserve(out, len + 2);
	for (size_t i = 0; i < nlen; i++)
		buf_appendc(out, lower(field[i]));
	buf_appendc(out, ':');
	if (colon) {
		/* unfold: line breaks go, the whitespace around them is one run */
		const char *v = colon + 1;
		size_t vlen = len - (size_t)(v - field);
		int pending = 0, started = 0;
		for (size_t i = 0; i < vlen; i++) {
			char ch = v[i];
			if (ch == '\r' || ch == '\n')
				continue;
			if (is_wsp(ch)) {
				pending = started;
				continue;
			}
			if (pending)
				buf_appendc(out, ' ');
			pending = 0;
			started = 1;
			buf_appendc(out, ch);
		}
	}
	buf_append(out, crlf, 2);
}

/* --- h= lists -------------------------------------------------------------- */

struct name {
	const char *p;
	size_t n;
};

/* Splits a ':'-separated list (empty items and surrounding WSP dropped);
 * returns a malloc'd array and its length in *count. */
static struct name *split_names(const char *names, size_t *count)
{
	size_t cap = 1;
	for (const char *s = names; *s; s++)
		cap += *s == ':';
	struct name *v = calloc(cap, sizeof(*v));
	size_t n = 0;
	const char *s = names;
	while (v && *s) {
		const char *e = strchr(s, ':');
		size_t l = e ? (size_t)(e - s) : strlen(s);
		const char *p = s;
		while (l && is_wsp(*p))
			p++, l--;
		while (l && is_wsp(p[l - 1]))
			l--;
		if (l)
			v[n++] = (struct name){p, l};
		s = e ? e + 1 : s + strlen(s);
	}
	*count = n;
	return v;
}

static int name_eq(const struct rfc5322_header *h, const struct name *nm)
{
	return h->name_len == nm->n && strncasecmp(h->name, nm->p, nm->n) == 0;
}

static size_t count_fields(const char *msg, size_t hdr_end, const struct name *nm)
{
	size_t pos = 0, n = 0;
	struct rfc5322_header h;
	while (rfc5322_header_next(msg, hdr_end, &pos, &h))
		n += name_eq(&h, nm);
	return n;
}

static int name_cmp(const void *a, const void *b)
{
	const struct name *x = a, *y = b;
	size_t n = x->n < y->n ? x->n : y->n;
	int r = strncasecmp(x->p, y->p, n);
	return r ? r : (x->n > y->n) - (x->n < y->n);
}

static void append_lower(struct buf *out, const struct name *nm)
{
	if (out->len)
		buf_appendc(out, ':');
	for (size_t i = 0; i < nm->n; i++)
		buf_appendc(out, lower(nm->p[i]));
}

void dkim_h_list(const char *msg, size_t hdr_end, const char *names, int over_sign, struct buf *out)
{
	size_t n;
	struct name *v = split_names(names, &n);
	if (!v)
		return;
	if (!over_sign) {
		for (size_t i = 0; i < n; i++)
			append_lower(out, &v[i]);
		free(v);
		return;
	}
	qsort(v, n, sizeof(*v), name_cmp);
	for (size_t i = 0; i < n; i++) {
		if (i && name_cmp(&v[i - 1], &v[i]) == 0)
			continue;
		size_t times = count_fields(msg, hdr_end, &v[i]) + 1;
		while (times--)
			append_lower(out, &v[i]);
	}
	free(v);
}

void dkim_canon_headers(enum dkim_canon c, const char *msg, size_t hdr_end, const char *h,
			struct buf *out)
{
	size_t n;
	struct name *v = split_names(h, &n);
	if (!v)
		return;
	size_t nf = 0, cap = 16, pos = 0;
	struct rfc5322_header *f = malloc(cap * sizeof(*f));
	while (f && rfc5322_header_next(msg, hdr_end, &pos, &f[nf])) {
		if (++nf == cap) {
			struct rfc5322_header *g = realloc(f, (cap *= 2) * sizeof(*f));
			if (!g)
				break;
			f = g;
		}
	}
	unsigned char *used = f ? calloc(nf ? nf : 1, 1) : NULL;
	for (size_t i = 0; used && i < n; i++) {
		for (size_t j = nf; j-- > 0;) {
			if (used[j] || !name_eq(&f[j], &v[i]))
				continue;
			used[j] = 1;
			dkim_canon_header(c, msg + f[j].start, f[j].end - f[j].start, out);
			break;
		}
	}
	free(used);
	free(f);
	free(v);
}

/* --- the DKIM-Signature field ---------------------------------------------- */

/* Column of the end of out (bytes since its last LF). */
static size_t column(const struct buf *out)
{
	size_t i = out->len;
	while (i > out->off && out->data[i - 1] != '\n')
		i--;
	return out->len - i;
}

/* Appends " tag" or, when it would pass the fold column, CRLF HTAB + tag. */
static void add_tag(struct buf *out, const char *tag, size_t n, int fresh_line)
{
	if (fresh_line || column(out) + 1 + n > DKIM_FOLD_AT)
		buf_append(out, "\r\n\t", 3);
	else
		buf_appendc(out, ' ');
	buf_append(out, tag, n);
}

void dkim_sig_format(struct buf *out, const struct dkim_sig *s)
{
	struct buf t;
	buf_init(&t);
	buf_appends(out, "DKIM-Signature: v=1;");
	buf_printf(&t, "a=%s;", s->algo);
	add_tag(out, t.data, t.len, 0);
	buf_reset(&t);
	buf_printf(&t, "d=%s;", s->domain);
	add_tag(out, t.data, t.len, 0);
	buf_reset(&t);
	buf_printf(&t, "s=%s;", s->selector);
	add_tag(out, t.data, t.len, 0);
	buf_reset(&t);
	buf_printf(&t, "c=%s/%s;", dkim_canon_name(s->hc), dkim_canon_name(s->bc));
	add_tag(out, t.data, t.len, 0);
	buf_reset(&t);
	buf_printf(&t, "t=%lld;", (long long)s->t);
	add_tag(out, t.data, t.len, 0);
	if (s->x) {
		buf_reset(&t);
		buf_printf(&t, "x=%lld;", (long long)s->x);
		add_tag(out, t.data, t.len, 0);
	}
	buf_reset(&t);
	buf_printf(&t, "bh=%s;", s->bh);
	add_tag(out, t.data, t.len, 0);
	/* h= on a line of its own, folded after a ':' when long */
	buf_append(out, "\r\n\th=", 5);
	const char *p = s->h;
	while (*p) {
		const char *e = strchr(p, ':');
		size_t n = e ? (size_t)(e - p) + 1 : strlen(p);
		if (column(out) + n + 1 > DKIM_FOLD_AT)
			buf_append(out, "\r\n\t", 3);
		buf_append(out, p, n);
		p += n;
	}
	buf_appendc(out, ';');
	buf_append(out, "\r\n\tb=;", 6);
	buf_free(&t);
}

void dkim_sig_finish(struct buf *out, const char *b64, size_t n)
{
	if (out->len > out->off && out->data[out->len - 1] == ';')
		out->len--; /* the empty b= value's ';' */
	while (n) {
		size_t room = DKIM_FOLD_AT - column(out);
		if (room < 8) {
			buf_append(out, "\r\n\t", 3);
			continue;
		}
		size_t k = n < room ? n : room;
		buf_append(out, b64, k);
		b64 += k;
		n -= k;
	}
	buf_append(out, ";\r\n", 3);
}
