/* SPDX-License-Identifier: Apache-2.0 */
/* SMTP reply formatter (server) and bounded multi-line reply parser (outbound client). */
#include "proto/smtp_reply.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* --- enhanced status codes ----------------------------------------------- */

/* 1-3 digits at s[*i]; returns the value or -1. */
static int smtp_enh_number(const char *s, size_t len, size_t *i)
{
	int v = 0;
	size_t n = 0;

	while (*i < len && n < 3 && s[*i] >= '0' && s[*i] <= '9') {
		v = v * 10 + (s[*i] - '0');
		(*i)++;
		n++;
	}
	return n ? v : -1;
}

int smtp_enhanced_parse(const char *s, size_t len, int *cls, int *subject, int *detail,
			size_t *consumed)
{
	size_t i;
	int sub, det;

	if (len < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
		return 0;
	i = 2;
	sub = smtp_enh_number(s, len, &i);
	if (sub < 0 || i >= len || s[i] != '.')
		return 0;
	i++;
	det = smtp_enh_number(s, len, &i);
	if (det < 0 || (i < len && s[i] != ' '))
		return 0;
	if (cls)
		*cls = s[0] - '0';
	if (subject)
		*subject = sub;
	if (detail)
		*detail = det;
	if (consumed)
		*consumed = i < len ? i + 1 : i;
	return 1;
}

/* Length of the enhanced code (without its space) starting s when its class is `cls`, else 0. */
static size_t smtp_enh_len(const char *s, size_t len, int cls)
{
	int c;
	size_t used;

	if (!smtp_enhanced_parse(s, len, &c, NULL, NULL, &used) || c != cls)
		return 0;
	return s[used - 1] == ' ' ? used - 1 : used;
}

/* --- formatter ----------------------------------------------------------- */

/* One physical line: "ddd-" [enh SP] sanitised text CRLF. Returns the offset of the '-'. */
static size_t smtp_reply_emit(struct buf *out, int code, const char *enh, size_t elen,
			      const char *p, size_t n)
{
	size_t sep;
	char *w;

	/* code is 200..599 here (smtp_reply_format substitutes anything else) */
	char digits[3] = {(char)('0' + code / 100), (char)('0' + code / 10 % 10),
			  (char)('0' + code % 10)};
	buf_append(out, digits, 3);
	sep = out->len;
	buf_appendc(out, '-');
	if (elen) {
		buf_append(out, enh, elen);
		if (n)
			buf_appendc(out, ' ');
	}
	buf_reserve(out, n + 2);
	w = out->data + out->len;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		w[i] = (c == '\t' || (c >= 32 && c <= 126)) ? (char)c : '?';
	}
	out->len += n;
	buf_append(out, "\r\n", 2);
	return sep;
}

/* One logical line (no LF in it), split into physical lines of at most SMTP_REPLY_LINE_MAX. */
static size_t smtp_reply_segment(struct buf *out, int code, const char *enh, size_t elen,
				 const char *p, size_t n)
{
	size_t max = SMTP_REPLY_LINE_MAX - 2 - 4 - (elen ? elen + 1 : 0);
	size_t sep;

	while (n > max) {
		size_t cut = max, skip = 0;
		for (size_t k = max; k > max / 2; k--) {
			if (p[k] == ' ') {
				cut = k;
				skip = 1;
				break;
			}
		}
		smtp_reply_emit(out, code, enh, elen, p, cut);
		p += cut + skip;
		n -= cut + skip;
	}
	sep = smtp_reply_emit(out, code, enh, elen, p, n);
	return sep;
}

void smtp_reply_format(struct buf *out, int code, const char *enhanced, const char *text)
{
	size_t elen = 0, inherit_len = 0, sep = 0;
	const char *inherit = NULL;
	const char *p, *end;

	if (code < 200 || code > 599) {
		code = 451;
		enhanced = "4.3.0";
		text = "Internal error: invalid reply code";
	}
	if (!text)
		text = "";
	if (enhanced) {
		elen = strlen(enhanced);
		if (smtp_enh_len(enhanced, elen, code / 100) != elen)
			elen = 0;
	}
	p = text;
	end = text + strlen(text);
	if (end > p && end[-1] == '\n') {
		/* A trailing LF (or CRLF) ends the last line; it does not start an empty one. */
		end--;
		if (end > p && end[-1] == '\r')
			end--;
	}
	for (int first = 1;; first = 0) {
		const char *lf = memchr(p, '\n', (size_t)(end - p));
		const char *le = lf ? lf : end;
		size_t own;
		if (le > p && le[-1] == '\r' && lf)
			le--;
		own = smtp_enh_len(p, (size_t)(le - p), code / 100);
		if (own) {
			size_t skip = own < (size_t)(le - p) ? own + 1 : own;
			if (first && !elen) {
				inherit = p;
				inherit_len = own;
			}
			sep = smtp_reply_segment(out, code, p, own, p + skip,
						 (size_t)(le - p) - skip);
		} else if (elen) {
			sep = smtp_reply_segment(out, code, enhanced, elen, p, (size_t)(le - p));
		} else {
			sep = smtp_reply_segment(out, code, inherit, inherit_len, p,
						 (size_t)(le - p));
		}
		if (!lf)
			break;
		p = lf + 1;
	}
	/* The last line ends the reply: "ddd text", or just "ddd" when it has no text. */
	if (out->len - sep == 3)
		buf_remove(out, sep, 1);
	else
		out->data[sep] = ' ';
}

/* --- parser -------------------------------------------------------------- */

void smtp_reply_init(struct smtp_reply *r)
{
	memset(r, 0, sizeof(*r));
	buf_init(&r->text);
}

void smtp_reply_free(struct smtp_reply *r)
{
	buf_free(&r->text);
	r->nlines = 0;
	r->code = 0;
	r->enhanced[0] = 0;
}

static int smtp_reply_fail(struct smtp_reply *r, const char *why)
{
	r->error = why;
	return -EPROTO;
}

/* Checks the first n bytes of a line (possibly incomplete): "[2-5]DD" then SP, '-' or CR,
 * and the same code as the previous lines. Returns 0 or -EPROTO. */
static int smtp_reply_head(struct smtp_reply *r, const char *l, size_t n)
{
	for (size_t k = 0; k < n && k < 4; k++) {
		char c = l[k];
		if (k == 0 && (c < '2' || c > '5'))
			return smtp_reply_fail(r, "bad reply code");
		if ((k == 1 || k == 2) && (c < '0' || c > '9'))
			return smtp_reply_fail(r, "bad reply code");
		if (k == 3 && c != ' ' && c != '-' && c != '\r')
			return smtp_reply_fail(r, "bad separator after reply code");
	}
	if (r->nlines && n >= 3 && (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0') != r->code)
		return smtp_reply_fail(r, "mixed reply codes");
	return 0;
}

/* A bare CR (one not directly followed by LF) in l[0..n). */
static int smtp_reply_bare_cr(const char *l, size_t n)
{
	const char *cr = l;

	while ((cr = memchr(cr, '\r', n - (size_t)(cr - l)))) {
		if ((size_t)(cr - l) + 1 < n && cr[1] != '\n')
			return 1;
		cr++;
		if ((size_t)(cr - l) >= n)
			break;
	}
	return 0;
}

/* A complete line l[0..n) whose CRLF follows; adds it to r. */
static void smtp_reply_add(struct smtp_reply *r, const char *l, size_t n)
{
	const char *t = n > 4 ? l + 4 : l + n;
	size_t tl = n > 4 ? n - 4 : 0;
	size_t own;

	r->code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
	own = smtp_enh_len(t, tl, r->code / 100);
	if (own) {
		if (r->nlines == 0)
			snprintf(r->enhanced, sizeof(r->enhanced), "%.*s", (int)own, t);
		t += own < tl ? own + 1 : own;
		tl -= own < tl ? own + 1 : own;
	}
	if (r->nlines)
		buf_appendc(&r->text, '\n');
	buf_append(&r->text, t, tl);
	r->nlines++;
}

int smtp_reply_parse(const char *buf, size_t len, struct smtp_reply *r)
{
	size_t pos = 0;

	buf_reset(&r->text);
	r->code = 0;
	r->enhanced[0] = 0;
	r->nlines = 0;
	r->error = NULL;
	for (;;) {
		const char *l = buf + pos;
		size_t avail = len - pos;
		size_t scan = avail < SMTP_REPLY_PARSE_LINE_MAX ? avail : SMTP_REPLY_PARSE_LINE_MAX;
		const char *lf = memchr(l, '\n', scan);
		size_t n = lf ? (size_t)(lf - l) : scan; /* bytes before LF (or seen so far) */
		if (smtp_reply_head(r, l, n))
			return -EPROTO;
		if (smtp_reply_bare_cr(l, n))
			return smtp_reply_fail(r, "bare CR in reply");
		if (!lf) {
			if (avail >= SMTP_REPLY_PARSE_LINE_MAX)
				return smtp_reply_fail(r, "reply line too long");
			if (pos + avail >= SMTP_REPLY_PARSE_TOTAL_MAX)
				return smtp_reply_fail(r, "reply too long");
			return 0;
		}
		if (n == 0 || l[n - 1] != '\r')
			return smtp_reply_fail(r, "bare LF in reply");
		if (pos + n + 1 > SMTP_REPLY_PARSE_TOTAL_MAX)
			return smtp_reply_fail(r, "reply too long");
		if (n - 1 < 3)
			return smtp_reply_fail(r, "bad reply code");
		smtp_reply_add(r, l, n - 1);
		pos += n + 1;
		if (n - 1 == 3 || l[3] == ' ')
			return (int)pos;
	}
}

const char *smtp_reply_line(const struct smtp_reply *r, size_t i, size_t *len)
{
	const char *p = r->text.data, *end = r->text.data + r->text.len;

	*len = 0;
	if (i >= r->nlines)
		return NULL;
	if (!p)
		return "";
	for (; i > 0; i--)
		p = (const char *)memchr(p, '\n', (size_t)(end - p)) + 1;
	const char *lf = memchr(p, '\n', (size_t)(end - p));
	*len = lf ? (size_t)(lf - p) : (size_t)(end - p);
	return p;
}
