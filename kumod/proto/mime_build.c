/* SPDX-License-Identifier: Apache-2.0 */
/* MIME rebuild for conformance fixing (see mime_build.h): a recursive walk
 * that follows mime_view's reading of the structure, copies clean entities
 * and rewrites the rest. */
#include "proto/mime_build.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

#include "base/base64.h"
#include "proto/mime_lex.h"
#include "proto/mime_view.h"
#include "proto/rfc5322.h"

#define MIME_BUILD_HARD 998 /* RFC 5322 §2.1.1, without CRLF */
#define MIME_BUILD_WORD 45  /* octets per encoded word: 60 base64 chars, 72 in all */

static int is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

static int fail(struct mime_build_result *res, const char *why)
{
	res->why = why;
	return -EINVAL;
}

static int has_8bit(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] & 0x80)
			return 1;
	return 0;
}

int mime_build_lines_clean(const char *p, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t e = mime_lex_line_end(p, n, i), ce = e;
		if (ce > i && p[ce - 1] == '\n') {
			ce--;
			if (ce == i || p[ce - 1] != '\r')
				return 0; /* a bare LF */
			ce--;
		}
		if (ce - i > MIME_BUILD_LINE)
			return 0;
		for (size_t k = i; k < ce; k++)
			if (p[k] == '\r' || ((unsigned char)p[k] & 0x80))
				return 0;
		i = e;
	}
	return 1;
}

int mime_build_is_clean(const char *p, size_t n)
{
	if (!mime_build_lines_clean(p, n))
		return 0;
	size_t hl = rfc5322_header_end(p, n);
	for (size_t i = 0; i < hl;) {
		size_t e = mime_lex_line_end(p, hl, i), ce = mime_lex_content_end(p, i, e);
		const char *colon = ce > i && !is_wsp(p[i]) ? memchr(p + i, ':', ce - i) : NULL;
		if (colon && colon > p + i && is_wsp(colon[-1]))
			return 0;
		i = e;
	}
	return 1;
}

/* --- encoders ------------------------------------------------------------------ */

/* One line s[0..n) without its break, in lines of at most MIME_BUILD_LINE
 * octets joined by soft breaks. A line never starts with "--" (the first
 * "-" is encoded), so no encoded line can be read as a multipart delimiter. */
static void qp_line(struct buf *out, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	/* worst case: every octet encoded (3n) and a soft break (3) per 25
	 * octets or fewer */
	buf_reserve(out, n * 3 + (n / 24 + 2) * 3);
	char *w = out->data + out->len;
	size_t col = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		int last = i + 1 == n;
		int lit =
		    (ch >= 33 && ch <= 126 && ch != '=') || ((ch == ' ' || ch == '\t') && !last);
		if (col == 0 && ch == '-' && i + 1 < n && s[i + 1] == '-')
			lit = 0;
		size_t tl = lit ? 1 : 3;
		/* room for the token and, unless it ends the line, a soft break */
		if (col + tl > MIME_BUILD_LINE - (last ? 0 : 1)) {
			memcpy(w, "=\r\n", 3);
			w += 3;
			col = 0;
			if (ch == '-' && i + 1 < n && s[i + 1] == '-' && lit) {
				lit = 0;
				tl = 3;
			}
		}
		if (lit) {
			*w++ = (char)ch;
		} else {
			w[0] = '=';
			w[1] = hex[ch >> 4];
			w[2] = hex[ch & 15];
			w += 3;
		}
		col += tl;
	}
	out->len = (size_t)(w - out->data);
}

void mime_build_qp(struct buf *out, const char *s, size_t n)
{
	size_t i = 0;
	for (;;) {
		size_t j = i;
		while (j < n && s[j] != '\r' && s[j] != '\n')
			j++;
		qp_line(out, s + i, j - i);
		if (j >= n)
			return;
		buf_append(out, "\r\n", 2);
		if (s[j] == '\r' && j + 1 < n && s[j + 1] == '\n')
			j++;
		i = j + 1;
		if (i >= n)
			return;
	}
}

void mime_build_base64(struct buf *out, const void *p, size_t n)
{
	struct buf t;
	buf_init(&t);
	base64_encode(&t, p, n);
	for (size_t i = 0; i < t.len; i += 76) {
		if (i)
			buf_append(out, "\r\n", 2);
		buf_append(out, t.data + i, t.len - i < 76 ? t.len - i : 76);
	}
	buf_free(&t);
}

/* Text with every CRLF, lone LF and lone CR as CRLF. */
static void canonical_text(struct buf *out, const char *s, size_t n)
{
	buf_reserve(out, n * 2);
	char *w = out->data + out->len;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\r' || s[i] == '\n') {
			*w++ = '\r';
			*w++ = '\n';
			if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n')
				i++;
		} else {
			*w++ = s[i];
		}
	}
	out->len = (size_t)(w - out->data);
}

static size_t base64_len(size_t n)
{
	size_t l = (n + 2) / 3 * 4;
	return l + (l ? (l - 1) / 76 * 2 : 0);
}

const char *mime_build_encode(struct buf *out, const char *p, size_t n, int text)
{
	if (!text) {
		mime_build_base64(out, p, n);
		return "base64";
	}
	struct buf t;
	buf_init(&t);
	canonical_text(&t, p, n);
	size_t mark = out->len;
	const char *cte = "quoted-printable";
	mime_build_qp(out, t.data ? t.data : "", t.len);
	size_t ql = out->len - mark;
	if (ql == t.len && (!ql || memcmp(out->data + mark, t.data, ql) == 0)) {
		cte = "7bit";
	} else if (ql > base64_len(t.len)) {
		out->len = mark;
		mime_build_base64(out, t.data ? t.data : "", t.len);
		cte = "base64";
	}
	buf_free(&t);
	return cte;
}

/* --- header fields --------------------------------------------------------------- */

/* Fields whose value is free text (RFC 5322 §3.6.5, RFC 2045 §8, X- fields):
 * 8-bit octets there become RFC 2047 encoded words. */
static int unstructured(const char *name, size_t nl)
{
	return (nl == 7 && strncasecmp(name, "Subject", 7) == 0) ||
	       (nl == 8 && strncasecmp(name, "Comments", 8) == 0) ||
	       (nl == 19 && strncasecmp(name, "Content-Description", 19) == 0) ||
	       (nl > 2 && strncasecmp(name, "X-", 2) == 0);
}

/* Appends the header line l[0..m) and CRLF, folded before white space so
 * that each piece has at most MIME_BUILD_LINE octets where the text allows
 * (a fold needs text before it on its line and after it in the field);
 * lead: octets at the start that no fold may split (the name and colon).
 * -1 when a piece stays over 998 octets. */
static int fold_line(struct buf *out, const char *l, size_t m, size_t lead)
{
	size_t last_text = m; /* the last non-white octet */
	while (last_text > 0 && is_wsp(l[last_text - 1]))
		last_text--;
	size_t s = 0;
	while (m - s > MIME_BUILD_LINE) {
		size_t t = s == 0 ? lead : s;
		while (t < m && is_wsp(l[t]))
			t++;
		size_t at = 0;
		for (size_t j = s + MIME_BUILD_LINE; j > t; j--)
			if (is_wsp(l[j]) && j < last_text) {
				at = j;
				break;
			}
		for (size_t j = s + MIME_BUILD_LINE + 1; !at && j < last_text; j++)
			if (j > t && is_wsp(l[j]))
				at = j;
		if (!at)
			break;
		if (at - s > MIME_BUILD_HARD)
			return -1;
		buf_append(out, l + s, at - s);
		buf_append(out, "\r\n", 2);
		s = at;
	}
	if (m - s > MIME_BUILD_HARD)
		return -1;
	buf_append(out, l + s, m - s);
	buf_append(out, "\r\n", 2);
	return 0;
}

/* "Name: =?UTF-8?B?...?=" words of at most MIME_BUILD_WORD octets each,
 * cut between UTF-8 characters, one per line. */
static void encoded_words(struct buf *out, const char *name, size_t nl, const char *v, size_t n)
{
	buf_append(out, name, nl);
	buf_appendc(out, ':');
	for (size_t i = 0; i < n;) {
		size_t cut = n - i > MIME_BUILD_WORD ? i + MIME_BUILD_WORD : n;
		while (cut < n && cut > i + 1 && ((unsigned char)v[cut] & 0xc0) == 0x80)
			cut--;
		buf_appends(out, i ? "\r\n =?UTF-8?B?" : " =?UTF-8?B?");
		base64_encode(out, v + i, cut - i);
		buf_appends(out, "?=");
		i = cut;
	}
	buf_append(out, "\r\n", 2);
}

struct hdr_opts {
	const char *ct_charset; /* appended to Content-Type fields as "; charset=X" */
	int drop_cte;		/* leave Content-Transfer-Encoding fields out */
	int has_ct, has_mv;	/* out: a Content-Type / MIME-Version field was seen */
};

/* Appends the fields of the header section h[0..hl) in order, without the
 * blank line that ends it. */
static int build_headers(const char *h, size_t hl, struct buf *out, struct mime_build_result *res,
			 struct hdr_opts *o)
{
	struct buf line, val;
	buf_init(&line);
	buf_init(&val);
	int rc = 0;
	for (size_t i = 0; i < hl && rc == 0;) {
		size_t e = mime_lex_line_end(h, hl, i), ce = mime_lex_content_end(h, i, e);
		if (ce == i)
			break; /* the blank line */
		if (is_wsp(h[i])) {
			rc = fail(res, "a header continuation line without a field");
			break;
		}
		size_t f_end = e;
		while (f_end < hl && is_wsp(h[f_end]))
			f_end = mime_lex_line_end(h, hl, f_end);
		const char *colon = memchr(h + i, ':', ce - i);
		if (!colon) {
			rc = fail(res, "a header line without a colon (MISSING_COLON_VALUE)");
			break;
		}
		size_t nl = (size_t)(colon - (h + i));
		while (nl > 0 && is_wsp(h[i + nl - 1]))
			nl--;
		if (!rfc5322_name_valid(h + i, nl)) {
			rc = fail(res, "an invalid header field name");
			break;
		}
		const char *name = h + i;
		int is_cte = nl == 25 && strncasecmp(name, "Content-Transfer-Encoding", 25) == 0;
		int is_ct = nl == 12 && strncasecmp(name, "Content-Type", 12) == 0;
		if (is_ct)
			o->has_ct = 1;
		if (nl == 12 && strncasecmp(name, "MIME-Version", 12) == 0)
			o->has_mv = 1;
		if (is_cte && o->drop_cte) {
			i = f_end;
			continue;
		}
		size_t mark = out->len;
		if (has_8bit(h + i, f_end - i) && unstructured(name, nl)) {
			/* the unfolded value, white space at both ends trimmed */
			buf_reset(&val);
			for (size_t k = (size_t)(colon + 1 - h); k < f_end;) {
				size_t ke = mime_lex_line_end(h, f_end, k);
				buf_append(&val, h + k, mime_lex_content_end(h, k, ke) - k);
				k = ke;
			}
			size_t b = 0, n = val.len;
			while (b < n && is_wsp(val.data[b]))
				b++;
			while (n > b && is_wsp(val.data[n - 1]))
				n--;
			buf_reset(&line);
			buf_append_utf8_lossy(&line, val.data + b, n - b);
			if (memchr(line.data, '\r', line.len)) {
				rc = fail(res, "a CR not followed by LF in a header field");
				break;
			}
			encoded_words(out, name, nl, line.data, line.len);
		} else {
			for (size_t k = i; k < f_end && rc == 0;) {
				size_t ke = mime_lex_line_end(h, f_end, k),
				       kce = mime_lex_content_end(h, k, ke);
				buf_reset(&line);
				size_t lead = 0;
				if (k == i) {
					buf_append(&line, name, nl);
					lead = nl + 1;
					buf_append(&line, colon, (size_t)(h + kce - colon));
				} else {
					buf_append(&line, h + k, kce - k);
				}
				if (is_ct && o->ct_charset && ke == f_end) {
					buf_appends(&line, "; charset=");
					buf_appends(&line, o->ct_charset);
				}
				if (memchr(line.data, '\r', line.len))
					rc = fail(res, "a CR not followed by LF in a header field");
				else if (fold_line(out, line.data, line.len, lead) != 0)
					rc = fail(res,
						  "a header line over 998 octets that cannot be "
						  "folded");
				k = ke;
			}
		}
		if (rc == 0 && (out->len - mark != f_end - i ||
				memcmp(out->data + mark, h + i, f_end - i) != 0))
			res->headers++;
		i = f_end;
	}
	buf_free(&line);
	buf_free(&val);
	return rc;
}

/* --- entities --------------------------------------------------------------------- */

static int build_entity(const char *p, size_t n, struct buf *out, struct mime_build_result *res,
			int depth, int is_msg, const char *default_type);

/* A preamble or epilogue: kept when clean, else dropped (it is not content). */
static void extra_text(const char *p, size_t n, struct buf *out, struct mime_build_result *res)
{
	if (mime_build_lines_clean(p, n))
		buf_append(out, p, n);
	else
		res->dropped++;
}

static void delimiter_line(struct buf *out, const char *boundary, int close)
{
	buf_append(out, "--", 2);
	buf_appends(out, boundary);
	buf_appends(out, close ? "--\r\n" : "\r\n");
}

/* The body b[0..bn) of a multipart, delimited as mime_view reads it; the
 * close delimiter is written even when the input had none. */
static int build_multipart(const struct mime_view_entity *e, const char *b, size_t bn,
			   struct buf *out, struct mime_build_result *res, int depth)
{
	const char *child_default =
	    strcmp(e->type, "multipart/digest") == 0 ? "message/rfc822" : "text/plain";
	size_t bl = strlen(e->boundary);
	const char *end = b + bn, *part = NULL;
	int seen = 0;
	for (const char *q = b; q < end;) {
		const char *nl = mime_view_next_line(q, end);
		int k = mime_view_delimiter(q, end, e->boundary, bl);
		if (k) {
			if (part) {
				const char *pe = mime_view_strip_line_end(part, q);
				if (build_entity(part, (size_t)(pe - part), out, res, depth + 1, 0,
						 child_default) != 0)
					return -EINVAL;
				buf_append(out, "\r\n", 2);
			} else if (!seen) {
				extra_text(b, (size_t)(q - b), out, res);
			}
			seen = 1;
			delimiter_line(out, e->boundary, k == 2);
			part = k == 1 ? nl : NULL;
			if (k == 2) {
				extra_text(nl, (size_t)(end - nl), out, res);
				return 0;
			}
		}
		q = nl;
	}
	if (!seen)
		return fail(res, "a multipart without any part");
	if (part) { /* no close delimiter: the last part ran to the end */
		if (build_entity(part, (size_t)(end - part), out, res, depth + 1, 0,
				 child_default) != 0)
			return -EINVAL;
		buf_append(out, "\r\n", 2);
		delimiter_line(out, e->boundary, 1);
	}
	return 0;
}

static int valid_utf8(const char *p, size_t n)
{
	struct buf t;
	buf_init(&t);
	buf_append_utf8_lossy(&t, p, n);
	int ok = t.len == n && (!n || memcmp(t.data, p, n) == 0);
	buf_free(&t);
	return ok;
}

/* A leaf whose body needs it: decoded and re-encoded, its header fields
 * rewritten around a new Content-Transfer-Encoding. */
static int build_leaf(const char *p, size_t hl, const char *b, size_t bn,
		      const struct mime_view_entity *e, struct buf *out,
		      struct mime_build_result *res, int is_msg)
{
	struct buf raw, enc;
	buf_init(&raw);
	buf_init(&enc);
	mime_view_decode(b, bn, e->cte, &raw);
	const char *cte = "base64";
	struct hdr_opts o = {.drop_cte = 1};
	if (strncmp(e->type, "text/", 5) == 0) {
		const char *d = raw.data ? raw.data : "";
		size_t dn = raw.len;
		struct buf lossy;
		buf_init(&lossy);
		if (!e->charset[0] && has_8bit(d, dn)) {
			o.ct_charset = "utf-8";
			if (!valid_utf8(d, dn)) { /* as KumoMTA: undeclared 8-bit is UTF-8 */
				buf_append_utf8_lossy(&lossy, d, dn);
				d = lossy.data;
				dn = lossy.len;
				res->lossy++;
			}
		}
		cte = mime_build_encode(&enc, d, dn, 1);
		buf_free(&lossy);
	} else {
		cte = mime_build_encode(&enc, raw.data ? raw.data : "", raw.len, 0);
	}
	int rc = build_headers(p, hl, out, res, &o);
	if (rc == 0) {
		if (o.ct_charset && !o.has_ct)
			buf_appends(out, "Content-Type: text/plain; charset=utf-8\r\n");
		if (is_msg && !o.has_mv)
			buf_appends(out, "MIME-Version: 1.0\r\n");
		buf_printf(out, "Content-Transfer-Encoding: %s\r\n\r\n", cte);
		buf_append(out, enc.data ? enc.data : "", enc.len);
		res->reencoded++;
	}
	buf_free(&raw);
	buf_free(&enc);
	return rc;
}

static int build_entity(const char *p, size_t n, struct buf *out, struct mime_build_result *res,
			int depth, int is_msg, const char *default_type)
{
	if (mime_build_is_clean(p, n)) {
		buf_append(out, p, n);
		return 0;
	}
	if (depth > MIME_VIEW_MAX_DEPTH)
		return fail(res, "MIME parts nested too deep");
	size_t hl = rfc5322_header_end(p, n);
	struct mime_view_entity e;
	mime_view_read_entity(p, hl, default_type, &e);
	const char *b = p + hl;
	size_t bn = n - hl;
	struct hdr_opts o = {0};
	if (strncmp(e.type, "multipart/", 10) == 0) {
		if (!e.boundary[0])
			return fail(res, "a multipart without a boundary");
		if (build_headers(p, hl, out, res, &o) != 0)
			return -EINVAL;
		buf_append(out, "\r\n", 2);
		return build_multipart(&e, b, bn, out, res, depth);
	}
	if (strcmp(e.type, "message/rfc822") == 0 || strcmp(e.type, "message/global") == 0) {
		/* never encoded itself (RFC 2045 §6.4): the message inside is rebuilt */
		if (build_headers(p, hl, out, res, &o) != 0)
			return -EINVAL;
		buf_append(out, "\r\n", 2);
		return build_entity(b, bn, out, res, depth + 1, 1, "text/plain");
	}
	if (mime_build_lines_clean(b, bn)) {
		if (build_headers(p, hl, out, res, &o) != 0)
			return -EINVAL;
		buf_append(out, "\r\n", 2);
		buf_append(out, b, bn);
		return 0;
	}
	if (strncmp(e.type, "message/", 8) == 0)
		return fail(res, "a message/* part other than rfc822 that needs encoding");
	return build_leaf(p, hl, b, bn, &e, out, res, is_msg);
}

/* --- INVALID_MIME_HEADERS -------------------------------------------------------------- */

/* 1 when v[0..n) is token ["/" token] *(";" attribute "=" (token |
 * quoted-string)) with CFWS around the pieces (RFC 2045 §5.1, §6.1; RFC 2183
 * §2); a trailing ";" is tolerated, as mail writers leave one. */
static int structured_ok(const char *v, size_t n, int slash)
{
	size_t i = mime_lex_skip_cfws(v, n, 0), t = mime_lex_token_end(v, n, i);
	if (t == i)
		return 0;
	i = mime_lex_skip_cfws(v, n, t);
	if (slash) {
		if (i >= n || v[i] != '/')
			return 0;
		i = mime_lex_skip_cfws(v, n, i + 1);
		t = mime_lex_token_end(v, n, i);
		if (t == i)
			return 0;
		i = mime_lex_skip_cfws(v, n, t);
	}
	while (i < n) {
		if (v[i] != ';')
			return 0;
		i = mime_lex_skip_cfws(v, n, i + 1);
		if (i >= n)
			return 1;
		t = mime_lex_token_end(v, n, i);
		if (t == i)
			return 0;
		i = mime_lex_skip_cfws(v, n, t);
		if (i >= n || v[i] != '=')
			return 0;
		i = mime_lex_skip_cfws(v, n, i + 1);
		if (i < n && v[i] == '"') {
			for (i++; i < n && v[i] != '"'; i++)
				if (v[i] == '\\')
					i++;
			if (i >= n)
				return 0; /* unterminated quoted string */
			i++;
		} else {
			t = mime_lex_token_end(v, n, i);
			if (t == i)
				return 0;
			i = t;
		}
		i = mime_lex_skip_cfws(v, n, i);
	}
	return 1;
}

static int entity_headers_ok(const char *p, size_t hl)
{
	struct buf v;
	buf_init(&v);
	size_t pos = 0;
	struct rfc5322_header h;
	int ok = 1;
	while (ok && rfc5322_header_next(p, hl, &pos, &h)) {
		int slash = h.name_len == 12 && strncasecmp(h.name, "Content-Type", 12) == 0;
		if (!slash &&
		    !(h.name_len == 25 &&
		      strncasecmp(h.name, "Content-Transfer-Encoding", 25) == 0) &&
		    !(h.name_len == 19 && strncasecmp(h.name, "Content-Disposition", 19) == 0))
			continue;
		buf_reset(&v);
		rfc5322_unfold(h.raw_value, h.raw_len, &v);
		ok = structured_ok(v.data ? v.data : "", v.len, slash);
	}
	buf_free(&v);
	return ok;
}

static int tree_headers_ok(const char *p, size_t n, const char *default_type, int depth)
{
	size_t hl = rfc5322_header_end(p, n);
	if (!entity_headers_ok(p, hl))
		return 0;
	struct mime_view_entity e;
	mime_view_read_entity(p, hl, default_type, &e);
	if (strncmp(e.type, "multipart/", 10) != 0 || !e.boundary[0] ||
	    depth >= MIME_VIEW_MAX_DEPTH)
		return 1;
	const char *child_default =
	    strcmp(e.type, "multipart/digest") == 0 ? "message/rfc822" : "text/plain";
	size_t bl = strlen(e.boundary);
	const char *b = p + hl, *end = p + n, *part = NULL;
	for (const char *q = b; q < end;) {
		const char *nl = mime_view_next_line(q, end);
		int k = mime_view_delimiter(q, end, e.boundary, bl);
		if (k) {
			if (part && !tree_headers_ok(
					part, (size_t)(mime_view_strip_line_end(part, q) - part),
					child_default, depth + 1))
				return 0;
			part = k == 1 ? nl : NULL;
			if (k == 2)
				return 1;
		}
		q = nl;
	}
	return !part || tree_headers_ok(part, (size_t)(end - part), child_default, depth + 1);
}

int mime_build_invalid_headers(const char *in, size_t len)
{
	return !tree_headers_ok(in, len, "text/plain", 0);
}

int mime_build_rebuild(const char *in, size_t len, struct buf *out, struct mime_build_result *res)
{
	memset(res, 0, sizeof(*res));
	return build_entity(in, len, out, res, 0, 1, "text/plain");
}
