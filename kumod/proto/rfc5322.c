/* SPDX-License-Identifier: Apache-2.0 */
/* RFC 5322 header section: scanning, unfolding, folding and in-place editing. */
#include "proto/rfc5322.h"

#include <errno.h>
#include <string.h>
#include <time.h>

static int rfc5322_is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* Offset just past the physical line starting at pos (after its LF, or lim); *content_end
 * is where its CRLF or LF begins. */
static size_t rfc5322_line_end(const char *msg, size_t pos, size_t lim, size_t *content_end)
{
	const char *lf = memchr(msg + pos, '\n', lim - pos);
	size_t at;

	if (!lf) {
		*content_end = lim;
		return lim;
	}
	at = (size_t)(lf - msg);
	*content_end = at > pos && msg[at - 1] == '\r' ? at - 1 : at;
	return at + 1;
}

/* Length of the blank line (CRLF or LF) at pos, or 0. */
static size_t rfc5322_blank_len(const char *msg, size_t pos, size_t lim)
{
	if (pos < lim && msg[pos] == '\n')
		return 1;
	if (pos + 1 < lim && msg[pos] == '\r' && msg[pos + 1] == '\n')
		return 2;
	return 0;
}

/* 1 and *blank = offset of the blank line ending the header section, or 0 if none. */
static int rfc5322_find_blank(const char *msg, size_t len, size_t *blank)
{
	size_t pos = 0, ce;

	while (pos < len) {
		if (rfc5322_blank_len(msg, pos, len)) {
			*blank = pos;
			return 1;
		}
		pos = rfc5322_line_end(msg, pos, len, &ce);
	}
	return 0;
}

size_t rfc5322_header_end(const char *msg, size_t len)
{
	size_t blank;

	if (!rfc5322_find_blank(msg, len, &blank))
		return len;
	return blank + rfc5322_blank_len(msg, blank, len);
}

static int rfc5322_name_chars_ok(const char *name, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c < 33 || c > 126 || c == ':')
			return 0;
	}
	return len > 0;
}

int rfc5322_name_valid(const char *name, size_t len)
{
	return len <= RFC5322_HARD_LIMIT - 2 && rfc5322_name_chars_ok(name, len);
}

int rfc5322_value_valid(const char *v, size_t len)
{
	return !memchr(v, '\r', len) && !memchr(v, '\n', len) && !memchr(v, '\0', len);
}

/* Fills h from the field msg[start..end) whose first line ends at first_ce and last line at
 * last_ce; 0 if it is not a well-formed field. */
static int rfc5322_field(const char *msg, size_t start, size_t first_ce, size_t last_ce, size_t end,
			 struct rfc5322_header *h)
{
	const char *colon;
	size_t name_len;

	if (rfc5322_is_wsp(msg[start]))
		return 0; /* continuation line without a field */
	colon = memchr(msg + start, ':', first_ce - start);
	if (!colon)
		return 0;
	name_len = (size_t)(colon - (msg + start));
	while (name_len > 0 && rfc5322_is_wsp(msg[start + name_len - 1]))
		name_len--; /* obsolete "Name :" form */
	if (!rfc5322_name_chars_ok(msg + start, name_len))
		return 0;
	h->name = msg + start;
	h->name_len = name_len;
	h->raw_value = colon + 1;
	h->raw_len = (size_t)(msg + last_ce - (colon + 1));
	h->start = start;
	h->end = end;
	return 1;
}

int rfc5322_header_next(const char *msg, size_t hdr_end, size_t *pos, struct rfc5322_header *h)
{
	size_t p = *pos;

	while (p < hdr_end && !rfc5322_blank_len(msg, p, hdr_end)) {
		size_t start = p, first_ce, last_ce;
		p = rfc5322_line_end(msg, p, hdr_end, &first_ce);
		last_ce = first_ce;
		while (p < hdr_end && rfc5322_is_wsp(msg[p]))
			p = rfc5322_line_end(msg, p, hdr_end, &last_ce);
		if (rfc5322_field(msg, start, first_ce, last_ce, p, h)) {
			*pos = p;
			return 1;
		}
	}
	*pos = p;
	return 0;
}

static int rfc5322_trim_char(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

void rfc5322_unfold(const char *raw, size_t len, struct buf *out)
{
	size_t b = 0, e = len;

	while (b < e && rfc5322_trim_char(raw[b]))
		b++;
	while (e > b && rfc5322_trim_char(raw[e - 1]))
		e--;
	buf_reserve(out, e - b);
	while (b < e) {
		const char *lf = memchr(raw + b, '\n', e - b);
		size_t seg = lf ? (size_t)(lf - raw) : e, seg_end = seg;
		if (lf && seg_end > b && raw[seg_end - 1] == '\r')
			seg_end--;
		buf_append(out, raw + b, seg_end - b);
		b = seg + 1;
	}
}

/* Appends p[0..n) breaking with CRLF SP whenever a physical line reaches the hard limit. */
static void rfc5322_emit_hard(struct buf *out, size_t *col, const char *p, size_t n)
{
	while (n > 0) {
		size_t take;
		if (*col >= RFC5322_HARD_LIMIT) {
			buf_append(out, "\r\n ", 3);
			*col = 1;
		}
		take = RFC5322_HARD_LIMIT - *col;
		if (take > n)
			take = n;
		buf_append(out, p, take);
		*col += take;
		p += take;
		n -= take;
	}
}

void rfc5322_format_header(struct buf *out, const char *name, const char *value)
{
	size_t nlen = strlen(name), b = 0, e = strlen(value), col, run;

	while (b < e && rfc5322_is_wsp(value[b]))
		b++;
	while (e > b && rfc5322_is_wsp(value[e - 1]))
		e--;
	buf_append(out, name, nlen);
	buf_appendc(out, ':');
	col = nlen + 1;
	if (b < e && col + 1 >= RFC5322_HARD_LIMIT) {
		buf_append(out, "\r\n ", 3); /* no room left after a maximal name */
		col = 1;
	} else if (b < e) {
		buf_appendc(out, ' ');
		col++;
	}
	/* Segments are a whitespace run (empty for the first) and the word after it; a soft
	 * fold goes before the whitespace, which then starts the continuation line. Bytes
	 * copied unchanged accumulate in value[run..) and are appended in one piece when
	 * something else (a fold, a squashed run) has to go in between. */
	run = b;
	for (size_t i = b; i < e;) {
		size_t ws = i, we;
		while (ws < e && rfc5322_is_wsp(value[ws]))
			ws++;
		we = ws;
		while (we < e && !rfc5322_is_wsp(value[we]))
			we++;
		size_t wsl = ws - i;
		int squash = wsl > RFC5322_HARD_LIMIT / 2;
		if (squash)
			wsl = 1;
		if (i > b && col + wsl + (we - ws) > RFC5322_SOFT_LIMIT) {
			buf_append(out, value + run, i - run);
			buf_append(out, "\r\n", 2);
			col = 0;
			run = i;
		}
		if (!squash && col + wsl + (we - ws) <= RFC5322_HARD_LIMIT) {
			col += wsl + (we - ws); /* fits: stays in the run */
		} else {
			buf_append(out, value + run, i - run);
			rfc5322_emit_hard(out, &col, squash ? " " : value + i, wsl);
			rfc5322_emit_hard(out, &col, value + ws, we - ws);
			run = we;
		}
		i = we;
	}
	buf_append(out, value + run, e - run);
	buf_append(out, "\r\n", 2);
}

void rfc5322_format_date(time_t t, char *out, size_t outlen)
{
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, outlen, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

static int rfc5322_name_eq(const struct rfc5322_header *h, const char *name, size_t nlen)
{
	if (h->name_len != nlen)
		return 0;
	for (size_t i = 0; i < nlen; i++) {
		unsigned char a = (unsigned char)h->name[i], c = (unsigned char)name[i];
		if (a >= 'A' && a <= 'Z')
			a += 'a' - 'A';
		if (c >= 'A' && c <= 'Z')
			c += 'a' - 'A';
		if (a != c)
			return 0;
	}
	return 1;
}

static int rfc5322_check(const char *name, const char *value)
{
	return rfc5322_name_valid(name, strlen(name)) && rfc5322_value_valid(value, strlen(value));
}

/* The message part of a buffer (NULL, with *len 0, for a buffer never written). */
static char *rfc5322_msg(struct buf *msg, size_t *len)
{
	*len = msg->len - msg->off;
	return msg->data ? msg->data + msg->off : NULL;
}

/* Where a field goes at the end of a message without a blank line: a last line left open is
 * terminated first (into `field`) so the field starts a line of its own, except a lone CR,
 * which completed would become the blank line: the field goes before it instead. */
static size_t rfc5322_open_line(const char *m, size_t len, struct buf *field)
{
	if (len == 0 || m[len - 1] == '\n')
		return len;
	if (m[len - 1] == '\r' && (len == 1 || m[len - 2] == '\n'))
		return len - 1;
	if (m[len - 1] == '\r')
		buf_appendc(field, '\n');
	else
		buf_append(field, "\r\n", 2);
	return len;
}

int rfc5322_prepend_headers(struct buf *msg, size_t n, const char *const *names,
			    const char *const *values)
{
	struct buf field;
	size_t len, at = 0, ce;
	const char *m = rfc5322_msg(msg, &len);

	for (size_t i = 0; i < n; i++)
		if (!rfc5322_check(names[i], values[i]))
			return -EINVAL;
	while (at < len && rfc5322_is_wsp(m[at]))
		at = rfc5322_line_end(m, at, len, &ce);
	buf_init(&field);
	if (at == len)
		at = rfc5322_open_line(m, len, &field);
	for (size_t i = 0; i < n; i++)
		rfc5322_format_header(&field, names[i], values[i]);
	buf_insert(msg, msg->off + at, field.data, field.len); /* one move of the body */
	buf_free(&field);
	return 0;
}

int rfc5322_prepend_header(struct buf *msg, const char *name, const char *value)
{
	return rfc5322_prepend_headers(msg, 1, &name, &value);
}

int rfc5322_append_header(struct buf *msg, const char *name, const char *value)
{
	struct buf field;
	size_t len, at;
	const char *m = rfc5322_msg(msg, &len);

	if (!rfc5322_check(name, value))
		return -EINVAL;
	buf_init(&field);
	if (!rfc5322_find_blank(m, len, &at))
		at = rfc5322_open_line(m, len, &field);
	rfc5322_format_header(&field, name, value);
	buf_insert(msg, msg->off + at, field.data, field.len);
	buf_free(&field);
	return 0;
}

size_t rfc5322_remove_all_named(struct buf *msg, const char *name)
{
	size_t len, nlen = strlen(name), pos = 0, keep = 0, w = 0, n = 0, hdr_end;
	char *m = rfc5322_msg(msg, &len);
	struct rfc5322_header h;

	if (len == 0)
		return 0;
	hdr_end = rfc5322_header_end(m, len);
	/* Compact in place: kept bytes only ever move below what the scanner still reads. */
	while (rfc5322_header_next(m, hdr_end, &pos, &h)) {
		if (!rfc5322_name_eq(&h, name, nlen))
			continue;
		memmove(m + w, m + keep, h.start - keep);
		w += h.start - keep;
		keep = h.end;
		n++;
	}
	if (n == 0)
		return 0;
	memmove(m + w, m + keep, len - keep);
	w += len - keep;
	msg->len = msg->off + w;
	return n;
}

int rfc5322_get_first(const char *msg, size_t len, const char *name, struct buf *value_out)
{
	size_t nlen = strlen(name), pos = 0, hdr_end = rfc5322_header_end(msg, len);
	struct rfc5322_header h;

	while (rfc5322_header_next(msg, hdr_end, &pos, &h)) {
		if (rfc5322_name_eq(&h, name, nlen)) {
			rfc5322_unfold(h.raw_value, h.raw_len, value_out);
			return 1;
		}
	}
	return 0;
}

size_t rfc5322_get_all(const char *msg, size_t len, const char *name,
		       void (*cb)(const char *v, size_t n, void *ctx), void *ctx)
{
	size_t nlen = strlen(name), pos = 0, n = 0, hdr_end = rfc5322_header_end(msg, len);
	struct rfc5322_header h;
	struct buf v;

	buf_init(&v);
	while (rfc5322_header_next(msg, hdr_end, &pos, &h)) {
		if (!rfc5322_name_eq(&h, name, nlen))
			continue;
		buf_reset(&v);
		rfc5322_unfold(h.raw_value, h.raw_len, &v);
		cb(v.data ? v.data : "", v.len, ctx);
		n++;
	}
	buf_free(&v);
	return n;
}

size_t rfc5322_count_named(const char *msg, size_t len, const char *name)
{
	size_t nlen = strlen(name), pos = 0, n = 0, hdr_end = rfc5322_header_end(msg, len);
	struct rfc5322_header h;
	while (rfc5322_header_next(msg, hdr_end, &pos, &h))
		n += rfc5322_name_eq(&h, name, nlen);
	return n;
}
