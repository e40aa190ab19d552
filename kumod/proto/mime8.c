/* SPDX-License-Identifier: Apache-2.0 */
/* 8-bit to 7-bit MIME conversion for a server without 8BITMIME (RFC 6152
 * §3, RFC 2045 §6.7, RFC 2046 §5.1.1): a recursive walk over the entity
 * tree that re-encodes 8-bit leaf parts as quoted-printable and copies the
 * rest. */
#include "proto/mime8.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "proto/mime_lex.h"

#define MIME8_MAX_DEPTH 32
#define MIME8_QP_LINE 76 /* RFC 2045 §6.7 rule 5, soft break included */

int mime8_has_8bit(const char *p, size_t n)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		if (w & 0x8080808080808080ull)
			return 1;
	}
	for (; i < n; i++)
		if ((unsigned char)p[i] & 0x80)
			return 1;
	return 0;
}

size_t mime8_header_len(const char *p, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t e = mime_lex_line_end(p, n, i);
		if (mime_lex_content_end(p, i, e) == i && e > i && p[e - 1] == '\n')
			return e;
		i = e;
	}
	return n;
}

/* --- header fields ---------------------------------------------------------- */

struct mime8_entity {
	char type[32], subtype[64];
	char boundary[MIME_LEX_VALUE_MAX + 1];
	char cte[32]; /* lower case; "" when absent */
	int has_mime_version;
};

static void content_type_param(void *ctx, const char *name, size_t len, const char *val)
{
	struct mime8_entity *e = ctx;
	if (len == 8 && strncasecmp(name, "boundary", 8) == 0)
		snprintf(e->boundary, sizeof(e->boundary), "%s", val);
}

/* Content-Type: type "/" subtype *(";" attribute "=" value). Only the
 * boundary parameter matters here. */
static void parse_content_type(struct mime8_entity *e, const char *v, size_t n)
{
	mime_lex_content_type(v, n, e->type, sizeof(e->type), e->subtype, sizeof(e->subtype),
			      content_type_param, e);
}

/* Visits the fields of the header section h[0..n): name and unfolded-by-
 * the-parser value (continuation lines included). */
static void parse_headers(struct mime8_entity *e, const char *h, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t end = mime_lex_line_end(h, n, i);
		while (end < n && (h[end] == ' ' || h[end] == '\t'))
			end = mime_lex_line_end(h, n, end); /* folded continuation */
		const char *colon = memchr(h + i, ':', end - i);
		if (colon) {
			size_t nl = (size_t)(colon - (h + i));
			const char *v = colon + 1;
			size_t vn = (size_t)(h + end - v);
			if (nl == 12 && strncasecmp(h + i, "Content-Type", 12) == 0) {
				parse_content_type(e, v, vn);
			} else if (nl == 25 &&
				   strncasecmp(h + i, "Content-Transfer-Encoding", 25) == 0) {
				mime_lex_first_token(v, vn, e->cte, sizeof(e->cte));
			} else if (nl == 12 && strncasecmp(h + i, "MIME-Version", 12) == 0) {
				e->has_mime_version = 1;
			}
		}
		i = end;
	}
}

/* Appends the header section without its Content-Transfer-Encoding field(s)
 * and without the empty line that ends it. */
static void copy_headers_but_cte(struct buf *out, const char *h, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t end = mime_lex_line_end(h, n, i);
		while (end < n && (h[end] == ' ' || h[end] == '\t'))
			end = mime_lex_line_end(h, n, end);
		int blank = mime_lex_content_end(h, i, end) == i;
		int cte = end - i > 26 && strncasecmp(h + i, "Content-Transfer-Encoding:", 26) == 0;
		if (!blank && !cte) {
			buf_append(out, h + i, end - i);
			if (h[end - 1] != '\n')
				buf_append(out, "\r\n", 2);
		}
		i = end;
	}
}

/* --- quoted-printable ----------------------------------------------------------- */

/* One line of content (no line break) as quoted-printable lines, each at
 * most 76 characters including a soft break "=". The original line break
 * becomes the hard break CRLF (appended when the line had one). */
static void qp_line(struct buf *out, const char *s, size_t n, int had_break)
{
	static const char hex[] = "0123456789ABCDEF";
	/* worst case: every octet encoded (3n), a soft break after at least
	 * 73 characters (fewer than n/24 + 1 of them, 3 each), the CRLF */
	buf_reserve(out, n * 3 + (n / 16 + 2) * 3 + 2);
	char *w = out->data + out->len;
	size_t col = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		int last = i + 1 == n;
		/* literal: printable ASCII but "=", and space/tab unless last */
		int lit =
		    (ch >= 33 && ch <= 126 && ch != '=') || ((ch == ' ' || ch == '\t') && !last);
		size_t tl = lit ? 1 : 3;
		/* room for the token and, unless it ends the line, a soft break */
		if (col + tl > MIME8_QP_LINE - (last ? 0 : 1)) {
			memcpy(w, "=\r\n", 3);
			w += 3;
			col = 0;
		}
		if (lit) {
			*w++ = (char)ch;
		} else {
			*w++ = '=';
			*w++ = hex[ch >> 4];
			*w++ = hex[ch & 15];
		}
		col += tl;
	}
	if (had_break) {
		memcpy(w, "\r\n", 2);
		w += 2;
	}
	out->len = (size_t)(w - out->data);
}

static void qp_body(struct buf *out, const char *b, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t end = mime_lex_line_end(b, n, i);
		qp_line(out, b + i, mime_lex_content_end(b, i, end) - i, b[end - 1] == '\n');
		i = end;
	}
}

/* --- entities ----------------------------------------------------------------- */

static int convert_entity(const char *p, size_t n, struct buf *out, struct mime8_result *res,
			  int depth, int is_msg);

static int fail(struct mime8_result *res, const char *why)
{
	res->why = why;
	return -EINVAL;
}

static int convert_multipart(const struct mime8_entity *e, const char *b, size_t n, struct buf *out,
			     struct mime8_result *res, int depth)
{
	size_t bl = strlen(e->boundary);
	if (!bl)
		return fail(res, "8-bit octets in a multipart without a boundary");
	size_t part = 0;
	int in_part = 0, closed = 0;
	for (size_t i = 0; i < n;) {
		size_t end = mime_lex_line_end(b, n, i);
		int d = closed ? 0
			       : mime_lex_delimiter(b + i, mime_lex_content_end(b, i, end) - i,
						    e->boundary, bl);
		if (d) {
			if (in_part) {
				if (convert_entity(b + part, i - part, out, res, depth + 1, 0) < 0)
					return -EINVAL;
			} else if (mime8_has_8bit(b, i)) {
				return fail(res, "8-bit octets in a multipart preamble");
			} else {
				buf_append(out, b, i);
			}
			buf_append(out, b + i, end - i);
			in_part = d == 1;
			closed = d == 2;
			part = end;
		}
		i = end;
	}
	if (in_part) /* no close delimiter: the last part runs to the end */
		return convert_entity(b + part, n - part, out, res, depth + 1, 0);
	if (!closed && !part) {
		/* no delimiter at all: only text that is not a part */
		return fail(res, "8-bit octets in a multipart without any part");
	}
	if (mime8_has_8bit(b + part, n - part))
		return fail(res, "8-bit octets in a multipart epilogue");
	buf_append(out, b + part, n - part);
	return 0;
}

/* is_msg: p is a message (the top level or a message/rfc822 body), whose
 * header needs MIME-Version for the encoding to count (RFC 2045 §4). */
static int convert_entity(const char *p, size_t n, struct buf *out, struct mime8_result *res,
			  int depth, int is_msg)
{
	size_t hl = mime8_header_len(p, n);
	const char *b = p + hl;
	size_t bn = n - hl;
	if (!mime8_has_8bit(b, bn)) {
		if (mime8_has_8bit(p, hl))
			return fail(res, "8-bit octets in a header field");
		buf_append(out, p, n);
		return 0;
	}
	if (depth > MIME8_MAX_DEPTH)
		return fail(res, "MIME parts nested too deep");
	if (mime8_has_8bit(p, hl))
		return fail(res, "8-bit octets in a header field");
	struct mime8_entity e = {0};
	parse_headers(&e, p, hl);
	if (strcmp(e.type, "multipart") == 0) {
		buf_append(out, p, hl);
		return convert_multipart(&e, b, bn, out, res, depth);
	}
	if (strcmp(e.type, "message") == 0) {
		/* never encoded itself (RFC 2045 6.4): its own parts are */
		if (strcmp(e.subtype, "rfc822") != 0)
			return fail(res, "8-bit octets in a message/* part other than rfc822");
		buf_append(out, p, hl);
		return convert_entity(b, bn, out, res, depth + 1, 1);
	}
	if (e.cte[0] && strcmp(e.cte, "7bit") != 0 && strcmp(e.cte, "8bit") != 0)
		return fail(res, strcmp(e.cte, "binary") == 0
				     ? "a binary part"
				     : "8-bit octets in a part with an encoding that forbids them");
	copy_headers_but_cte(out, p, hl);
	if (is_msg && !e.has_mime_version)
		buf_append(out, "MIME-Version: 1.0\r\n", 19);
	buf_appends(out, "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
	qp_body(out, b, bn);
	res->converted++;
	return 0;
}

int mime8_to_7bit(const char *in, size_t len, struct buf *out, struct mime8_result *res)
{
	res->converted = 0;
	res->why = NULL;
	return convert_entity(in, len, out, res, 0, 1);
}
