/* SPDX-License-Identifier: Apache-2.0 */
/* MIME leaf parts, body decoding, encoded words and link/code extraction
 * for the mail catcher (see mime_view.h). */
#include "proto/mime_view.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "base/ascii.h"
#include "base/base64.h"
#include "proto/rfc5322.h"

/* --- header parameters ------------------------------------------------------ */

static void copy_raw(char *dst, size_t cap, const char *s, size_t n)
{
	if (n >= cap)
		n = cap - 1;
	memcpy(dst, s, n);
	dst[n] = 0;
}

/* The leading token of a structured value ("multipart/mixed" of
 * "multipart/mixed; boundary=x"), trimmed, into dst. */
static void value_token(const char *v, size_t n, char *dst, size_t cap, int lower)
{
	size_t i = 0;
	while (i < n && (v[i] == ' ' || v[i] == '\t'))
		i++;
	size_t s = i;
	while (i < n && v[i] != ';' && v[i] != ' ' && v[i] != '\t')
		i++;
	if (lower)
		ascii_lower_copy(dst, cap, v + s, i - s);
	else
		copy_raw(dst, cap, v + s, i - s);
}

/* The parameter `name` of a structured value (quoted or token), into dst;
 * 1 found, 0 absent. RFC 2231 continuations are not joined. */
static int value_param(const char *v, size_t n, const char *name, char *dst, size_t cap)
{
	size_t nl = strlen(name), i = 0;
	int in_quote = 0;
	while (i < n) {
		char c = v[i];
		if (in_quote) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_quote = 0;
			i++;
			continue;
		}
		if (c == '"') {
			in_quote = 1;
			i++;
			continue;
		}
		if (c != ';') {
			i++;
			continue;
		}
		i++;
		while (i < n && (v[i] == ' ' || v[i] == '\t'))
			i++;
		if (i + nl >= n || strncasecmp(v + i, name, nl) != 0)
			continue;
		size_t j = i + nl;
		while (j < n && (v[j] == ' ' || v[j] == '\t'))
			j++;
		if (j >= n || v[j] != '=')
			continue;
		j++;
		while (j < n && (v[j] == ' ' || v[j] == '\t'))
			j++;
		size_t o = 0;
		if (j < n && v[j] == '"') {
			j++;
			while (j < n && v[j] != '"') {
				if (v[j] == '\\' && j + 1 < n)
					j++;
				if (o + 1 < cap)
					dst[o++] = v[j];
				j++;
			}
		} else {
			while (j < n && v[j] != ';' && v[j] != ' ' && v[j] != '\t') {
				if (o + 1 < cap)
					dst[o++] = v[j];
				j++;
			}
		}
		dst[o] = 0;
		return 1;
	}
	return 0;
}

/* --- structure ---------------------------------------------------------------- */

void mime_view_read_entity(const char *p, size_t hlen, const char *default_type,
			   struct mime_view_entity *eh)
{
	memset(eh, 0, sizeof(*eh));
	snprintf(eh->type, sizeof(eh->type), "%s", default_type);
	struct buf val;
	buf_init(&val);
	size_t pos = 0;
	struct rfc5322_header h;
	while (rfc5322_header_next(p, hlen, &pos, &h)) {
		buf_reset(&val);
		rfc5322_unfold(h.raw_value, h.raw_len, &val);
		const char *v = val.data ? val.data : "";
		size_t n = val.len;
		if (h.name_len == 12 && strncasecmp(h.name, "Content-Type", 12) == 0) {
			value_token(v, n, eh->type, sizeof(eh->type), 1);
			if (!strchr(eh->type, '/'))
				snprintf(eh->type, sizeof(eh->type), "%s", "text/plain");
			char cs[40];
			if (value_param(v, n, "charset", cs, sizeof(cs)))
				ascii_lower_copy(eh->charset, sizeof(eh->charset), cs, strlen(cs));
			value_param(v, n, "boundary", eh->boundary, sizeof(eh->boundary));
			if (!eh->filename[0])
				value_param(v, n, "name", eh->filename, sizeof(eh->filename));
		} else if (h.name_len == 25 &&
			   strncasecmp(h.name, "Content-Transfer-Encoding", 25) == 0) {
			char enc[32];
			value_token(v, n, enc, sizeof(enc), 1);
			eh->cte = strcmp(enc, "base64") == 0		 ? MIME_VIEW_CTE_BASE64
				  : strcmp(enc, "quoted-printable") == 0 ? MIME_VIEW_CTE_QP
									 : MIME_VIEW_CTE_IDENTITY;
		} else if (h.name_len == 19 &&
			   strncasecmp(h.name, "Content-Disposition", 19) == 0) {
			value_token(v, n, eh->disp, sizeof(eh->disp), 1);
			value_param(v, n, "filename", eh->filename, sizeof(eh->filename));
		} else if (h.name_len == 10 && strncasecmp(h.name, "Content-ID", 10) == 0) {
			value_token(v, n, eh->content_id, sizeof(eh->content_id), 0);
		}
	}
	buf_free(&val);
}

/* Where the line starting at p (within [p, end)) is a delimiter of
 * boundary b: 1 delimiter, 2 close delimiter, 0 not one. */
int mime_view_delimiter(const char *p, const char *end, const char *b, size_t bl)
{
	if ((size_t)(end - p) < 2 + bl || p[0] != '-' || p[1] != '-' || memcmp(p + 2, b, bl) != 0)
		return 0;
	const char *q = p + 2 + bl;
	int close = 0;
	if (end - q >= 2 && q[0] == '-' && q[1] == '-') {
		close = 1;
		q += 2;
	}
	while (q < end && (*q == ' ' || *q == '\t'))
		q++;
	if (q < end && *q != '\r' && *q != '\n')
		return 0;
	return close ? 2 : 1;
}

const char *mime_view_next_line(const char *p, const char *end)
{
	const char *nl = memchr(p, '\n', (size_t)(end - p));
	return nl ? nl + 1 : end;
}

const char *mime_view_strip_line_end(const char *start, const char *line)
{
	if (line > start && line[-1] == '\n')
		line--;
	if (line > start && line[-1] == '\r')
		line--;
	return line;
}

static void add_leaf(struct mime_view *v, const char *msg, const struct mime_view_entity *eh,
		     const char *body, const char *end)
{
	if (v->nparts >= MIME_VIEW_MAX_PARTS) {
		v->truncated = 1;
		return;
	}
	struct mime_view_part *pt = &v->parts[v->nparts++];
	memset(pt, 0, sizeof(*pt));
	snprintf(pt->type, sizeof(pt->type), "%s", eh->type);
	snprintf(pt->charset, sizeof(pt->charset), "%s", eh->charset);
	snprintf(pt->filename, sizeof(pt->filename), "%s", eh->filename);
	snprintf(pt->content_id, sizeof(pt->content_id), "%s", eh->content_id);
	pt->cte = eh->cte;
	int is_text = strncmp(eh->type, "text/", 5) == 0;
	pt->attachment = strcmp(eh->disp, "attachment") == 0 ||
			 (eh->filename[0] && strcmp(eh->disp, "inline") != 0) ||
			 (!is_text && !eh->content_id[0]);
	pt->off = (size_t)(body - msg);
	pt->len = (size_t)(end - body);
}

static void parse_entity(struct mime_view *v, const char *msg, const char *start, const char *end,
			 int depth, const char *default_type)
{
	size_t hlen = rfc5322_header_end(start, (size_t)(end - start));
	struct mime_view_entity eh;
	mime_view_read_entity(start, hlen, default_type, &eh);
	const char *body = start + hlen;
	if (depth == 0)
		v->header_len = hlen;
	if (strncmp(eh.type, "multipart/", 10) != 0 || !eh.boundary[0]) {
		add_leaf(v, msg, &eh, body, end);
		return;
	}
	if (depth >= MIME_VIEW_MAX_DEPTH) {
		v->truncated = 1;
		return;
	}
	const char *child_default =
	    strcmp(eh.type, "multipart/digest") == 0 ? "message/rfc822" : "text/plain";
	size_t bl = strlen(eh.boundary);
	const char *part = NULL; /* start of the current part's headers */
	for (const char *p = body; p < end;) {
		const char *nl = mime_view_next_line(p, end);
		int k = mime_view_delimiter(p, end, eh.boundary, bl);
		if (k) {
			if (part)
				parse_entity(v, msg, part, mime_view_strip_line_end(part, p),
					     depth + 1, child_default);
			part = k == 1 ? nl : NULL;
			if (k == 2)
				return;
		}
		p = nl;
	}
	if (part) /* no close delimiter: the part runs to the end */
		parse_entity(v, msg, part, end, depth + 1, child_default);
}

void mime_view_parse(const char *msg, size_t len, struct mime_view *v)
{
	v->nparts = 0;
	v->truncated = 0;
	v->header_len = 0;
	parse_entity(v, msg, msg, msg + len, 0, "text/plain");
}

/* --- decoding ----------------------------------------------------------------- */

/* Quoted-printable; in_header: '_' is a space (RFC 2047 Q). */
static void decode_qp(const char *p, size_t n, struct buf *out, int in_header)
{
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if (c == '_' && in_header) {
			buf_appendc(out, ' ');
		} else if (c != '=') {
			buf_appendc(out, c);
		} else if (i + 1 < n && p[i + 1] == '\n') {
			i += 1; /* soft line break */
		} else if (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n') {
			i += 2;
		} else if (i + 2 < n && hex_digit_value(p[i + 1]) >= 0 &&
			   hex_digit_value(p[i + 2]) >= 0) {
			buf_appendc(out, (char)(hex_digit_value(p[i + 1]) * 16 +
						hex_digit_value(p[i + 2])));
			i += 2;
		} else {
			buf_appendc(out, c);
		}
	}
}

void mime_view_decode(const char *p, size_t n, enum mime_view_cte cte, struct buf *out)
{
	if (cte == MIME_VIEW_CTE_BASE64)
		base64_decode_lenient_any(p, n, out);
	else if (cte == MIME_VIEW_CTE_QP)
		decode_qp(p, n, out, 0);
	else
		buf_append(out, p, n);
}

static int is_latin1(const char *cs)
{
	return strcmp(cs, "iso-8859-1") == 0 || strcmp(cs, "latin1") == 0 ||
	       strcmp(cs, "iso8859-1") == 0 || strcmp(cs, "windows-1252") == 0 ||
	       strcmp(cs, "cp1252") == 0 || strcmp(cs, "iso-8859-15") == 0;
}

void mime_view_to_utf8(const char *p, size_t n, const char *charset, struct buf *out)
{
	char cs[40];
	ascii_lower_copy(cs, sizeof(cs), charset ? charset : "", charset ? strlen(charset) : 0);
	if (!is_latin1(cs)) {
		buf_append_utf8_lossy(out, p, n);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c < 0x80) {
			buf_appendc(out, (char)c);
		} else {
			buf_appendc(out, (char)(0xc0 | (c >> 6)));
			buf_appendc(out, (char)(0x80 | (c & 0x3f)));
		}
	}
}

/* One encoded word "=?charset?X?text?=" at v[i..n): its length, and the
 * decoded text appended to out; 0 when there is none (out unchanged). */
static size_t encoded_word(const char *v, size_t n, size_t i, struct buf *out)
{
	if (i + 8 > n || v[i] != '=' || v[i + 1] != '?')
		return 0;
	size_t cs = i + 2, q1 = cs;
	while (q1 < n && v[q1] != '?' && q1 - cs < 39)
		q1++;
	if (q1 + 3 >= n || v[q1] != '?' || v[q1 + 2] != '?')
		return 0;
	char enc = (char)toupper((unsigned char)v[q1 + 1]);
	if (enc != 'B' && enc != 'Q')
		return 0;
	size_t t = q1 + 3, e = t;
	while (e + 1 < n && !(v[e] == '?' && v[e + 1] == '=') && v[e] != ' ')
		e++;
	if (e + 1 >= n || v[e] != '?' || v[e + 1] != '=')
		return 0;
	char charset[40];
	ascii_lower_copy(charset, sizeof(charset), v + cs, q1 - cs);
	char *star = strchr(charset, '*'); /* RFC 2231 language suffix */
	if (star)
		*star = 0;
	struct buf raw;
	buf_init(&raw);
	if (enc == 'B')
		base64_decode_lenient_any(v + t, e - t, &raw);
	else
		decode_qp(v + t, e - t, &raw, 1);
	mime_view_to_utf8(raw.data ? raw.data : "", raw.len, charset, out);
	buf_free(&raw);
	return e + 2 - i;
}

void mime_view_decode_header(const char *v, size_t n, struct buf *out)
{
	size_t i = 0;
	int last_was_word = 0;
	while (i < n) {
		size_t w = encoded_word(v, n, i, out);
		if (w) {
			i += w;
			last_was_word = 1;
			continue;
		}
		if (last_was_word && (v[i] == ' ' || v[i] == '\t')) {
			size_t j = i;
			while (j < n && (v[j] == ' ' || v[j] == '\t'))
				j++;
			struct buf probe;
			buf_init(&probe);
			size_t w2 = j < n ? encoded_word(v, n, j, &probe) : 0;
			buf_free(&probe);
			if (w2) { /* whitespace between encoded words is dropped */
				i = j;
				continue;
			}
		}
		last_was_word = 0;
		size_t s = i++;
		while (i < n && v[i] != ' ' && v[i] != '\t' &&
		       !(v[i] == '=' && i + 1 < n && v[i + 1] == '?'))
			i++;
		buf_append_utf8_lossy(out, v + s, i - s);
	}
}

/* --- addresses --------------------------------------------------------------- */

static void trim(const char **p, size_t *n)
{
	while (*n && ((*p)[0] == ' ' || (*p)[0] == '\t')) {
		(*p)++;
		(*n)--;
	}
	while (*n && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t'))
		(*n)--;
}

/* One mailbox v[0..n): "Name <addr>", "<addr>" or "addr" (a group's
 * "name:" prefix and "(comments)" outside quotes are dropped). */
static int one_mailbox(const char *v, size_t n,
		       void (*cb)(const char *name, size_t nlen, const char *addr, size_t alen,
				  void *ctx),
		       void *ctx)
{
	struct buf name;
	buf_init(&name);
	const char *addr = NULL;
	size_t alen = 0;
	int q = 0, depth = 0;
	for (size_t i = 0; i < n; i++) {
		char c = v[i];
		if (q) {
			if (c == '\\' && i + 1 < n)
				c = v[++i];
			else if (c == '"') {
				q = 0;
				continue;
			}
			buf_appendc(&name, c);
		} else if (c == '"') {
			q = 1;
		} else if (c == '(') {
			depth++;
		} else if (c == ')' && depth) {
			depth--;
		} else if (depth) {
			continue;
		} else if (c == ':') {
			buf_reset(&name); /* group display name */
		} else if (c == '<') {
			const char *e = memchr(v + i, '>', n - i);
			addr = v + i + 1;
			alen = e ? (size_t)(e - addr) : n - i - 1;
			i = e ? (size_t)(e - v) : n;
		} else if (c != ';') {
			buf_appendc(&name, c);
		}
	}
	const char *np = name.data ? name.data : "";
	size_t nl = name.len;
	trim(&np, &nl);
	int found = 0;
	if (addr) {
		trim(&addr, &alen);
		if (alen) {
			cb(np, nl, addr, alen, ctx);
			found = 1;
		}
	} else if (nl && memchr(np, '@', nl)) {
		cb("", 0, np, nl, ctx);
		found = 1;
	}
	buf_free(&name);
	return found;
}

size_t mime_view_addresses(const char *v, size_t n,
			   void (*cb)(const char *name, size_t nlen, const char *addr, size_t alen,
				      void *ctx),
			   void *ctx)
{
	size_t count = 0, s = 0;
	int q = 0, angle = 0, depth = 0;
	for (size_t i = 0; i < n; i++) {
		char c = v[i];
		if (q) {
			if (c == '\\' && i + 1 < n)
				i++;
			else if (c == '"')
				q = 0;
			continue;
		}
		if (c == '"')
			q = 1;
		else if (c == '<')
			angle = 1;
		else if (c == '>')
			angle = 0;
		else if (c == '(')
			depth++;
		else if (c == ')' && depth)
			depth--;
		else if ((c == ',' || c == ';') && !angle && !depth) {
			if (i > s)
				count += (size_t)one_mailbox(v + s, i - s, cb, ctx);
			s = i + 1;
		}
	}
	if (n > s)
		count += (size_t)one_mailbox(v + s, n - s, cb, ctx);
	return count;
}

/* --- extraction ------------------------------------------------------------- */

struct seen {
	struct buf all; /* NUL-separated values already reported */
};

static int seen_add(struct seen *s, const char *p, size_t n)
{
	for (size_t o = 0; o < s->all.len;) {
		size_t l = strlen(s->all.data + o);
		if (l == n && memcmp(s->all.data + o, p, n) == 0)
			return 0;
		o += l + 1;
	}
	buf_append(&s->all, p, n);
	buf_appendc(&s->all, 0);
	return 1;
}

static int link_end(char c)
{
	return (unsigned char)c <= ' ' || c == '"' || c == '\'' || c == '<' || c == '>' ||
	       c == '`' || (unsigned char)c == 0x7f;
}

size_t mime_view_links(const char *text, size_t n, void (*cb)(const char *s, size_t len, void *ctx),
		       void *ctx)
{
	struct seen s;
	buf_init(&s.all);
	size_t count = 0;
	for (size_t i = 0; i < n; i++) {
		size_t pl = 0;
		if (n - i >= 8 && strncasecmp(text + i, "https://", 8) == 0)
			pl = 8;
		else if (n - i >= 7 && strncasecmp(text + i, "http://", 7) == 0)
			pl = 7;
		if (!pl || (i > 0 && isalnum((unsigned char)text[i - 1])))
			continue;
		size_t e = i + pl;
		while (e < n && !link_end(text[e]))
			e++;
		size_t end = e;
		while (end > i + pl && strchr(".,);:!?", text[end - 1]))
			end--;
		if (end > i + pl && seen_add(&s, text + i, end - i)) {
			cb(text + i, end - i, ctx);
			count++;
		}
		i = e;
	}
	buf_free(&s.all);
	return count;
}

size_t mime_view_codes(const char *text, size_t n, void (*cb)(const char *s, size_t len, void *ctx),
		       void *ctx)
{
	struct seen s;
	buf_init(&s.all);
	size_t count = 0;
	for (size_t i = 0; i < n;) {
		if (!isalnum((unsigned char)text[i])) {
			i++;
			continue;
		}
		size_t e = i;
		int all_digits = 1;
		while (e < n && (isalnum((unsigned char)text[e]) || text[e] == '_')) {
			if (!isdigit((unsigned char)text[e]))
				all_digits = 0;
			e++;
		}
		size_t len = e - i;
		if (all_digits && len >= 4 && len <= 8 && seen_add(&s, text + i, len)) {
			cb(text + i, len, ctx);
			count++;
		}
		i = e;
	}
	buf_free(&s.all);
	return count;
}
