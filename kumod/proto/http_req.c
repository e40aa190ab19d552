/* SPDX-License-Identifier: Apache-2.0 */
/* HTTP request parsing: libhttp-parser callbacks into struct http_req,
 * limits, body inflation, query, JSON body and Authorization decoding. */
#include "proto/http_req.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>
#include <zlib.h>

#include "base/base64.h"
#include "base/xalloc.h"

struct http_req_parser {
	http_parser hp;
	struct http_req req;
	size_t body_limit;
	struct buf field, value; /* the header being read */
	int in_field, in_value;
	int in_progress;	   /* between message begin and complete */
	enum http_req_event event; /* set by a callback that paused the parser */
	/* The first limit the head broke, answered once the head is complete:
	 * libhttp-parser calls back at token ends or at the end of the input,
	 * so refusing at once would let the chunking decide between this and
	 * a syntax error later in the same token. */
	int head_status;
	const char *head_why;
};

/* --- the request ------------------------------------------------------------- */

static void req_init(struct http_req *r)
{
	memset(r, 0, sizeof(*r));
	buf_init(&r->url);
	buf_init(&r->path);
	buf_init(&r->query);
	buf_init(&r->body);
}

static void req_free(struct http_req *r)
{
	buf_free(&r->url);
	buf_free(&r->path);
	buf_free(&r->query);
	buf_free(&r->body);
	free(r->content_type);
	free(r->content_encoding);
	free(r->authorization);
	free(r->host);
	free(r->expect);
	free(r->connection);
	free(r->upgrade);
	free(r->ws_key);
	free(r->ws_version);
	memset(r, 0, sizeof(*r));
}

static void req_fail(struct http_req *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void req_fail(struct http_req *r, int status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->error, sizeof(r->error), fmt, ap);
	va_end(ap);
	r->status = status;
}

size_t http_req_escape(char *dst, size_t dstlen, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t j = 0;
	if (!dstlen)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		int plain = c >= 0x20 && c < 0x7f && c != '\\' && c != '\'';
		if (j + (plain ? 1 : 4) >= dstlen)
			break;
		if (plain) {
			dst[j++] = (char)c;
			continue;
		}
		dst[j++] = '\\';
		dst[j++] = 'x';
		dst[j++] = hex[c >> 4];
		dst[j++] = hex[c & 15];
	}
	dst[j] = 0;
	return j;
}

/* --- parser callbacks ------------------------------------------------------------ */

static struct http_req_parser *cb_parser(http_parser *hp)
{
	return hp->data;
}

/* Records a refusal of the head, effective at the end of the head. */
static void cb_defer(struct http_req_parser *p, int status, const char *why)
{
	if (!p->head_status) {
		p->head_status = status;
		p->head_why = why;
	}
}

/* Records the refusal and stops the parser: the connection is answered and closed. */
static int cb_reject(http_parser *hp, int status, const char *why)
{
	struct http_req_parser *p = cb_parser(hp);
	if (p->event != HTTP_REQ_ERROR)
		req_fail(&p->req, status, "%s", why);
	p->event = HTTP_REQ_ERROR;
	http_parser_pause(hp, 1);
	return 0;
}

static int on_message_begin(http_parser *hp)
{
	struct http_req_parser *p = cb_parser(hp);
	req_free(&p->req);
	req_init(&p->req);
	buf_reset(&p->field);
	buf_reset(&p->value);
	p->in_field = p->in_value = 0;
	p->head_status = 0;
	p->head_why = NULL;
	p->in_progress = 1;
	return 0;
}

static int on_url(http_parser *hp, const char *at, size_t n)
{
	struct http_req_parser *p = cb_parser(hp);
	if (p->req.url.len + n > HTTP_REQ_MAX_URL)
		cb_defer(p, 414, "request target too long");
	else
		buf_append(&p->req.url, at, n);
	return 0;
}

/* Keeps the headers the API reads (the last of duplicates); the rest only
 * count against the limits. */
static void header_store(struct http_req_parser *p)
{
	static const struct {
		const char *name;
		size_t off;
	} kept[] = {
	    {"content-type", offsetof(struct http_req, content_type)},
	    {"content-encoding", offsetof(struct http_req, content_encoding)},
	    {"authorization", offsetof(struct http_req, authorization)},
	    {"host", offsetof(struct http_req, host)},
	    {"expect", offsetof(struct http_req, expect)},
	    {"connection", offsetof(struct http_req, connection)},
	    {"upgrade", offsetof(struct http_req, upgrade)},
	    {"sec-websocket-key", offsetof(struct http_req, ws_key)},
	    {"sec-websocket-version", offsetof(struct http_req, ws_version)},
	};
	const char *name = buf_cstr(&p->field), *value = buf_cstr(&p->value);
	for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]) && !p->head_status; i++) {
		if (strcasecmp(name, kept[i].name) != 0)
			continue;
		char **slot = (char **)((char *)&p->req + kept[i].off);
		free(*slot);
		*slot = xstrdup(value);
	}
	buf_reset(&p->field);
	buf_reset(&p->value);
	p->in_field = p->in_value = 0;
}

static int on_header_field(http_parser *hp, const char *at, size_t n)
{
	struct http_req_parser *p = cb_parser(hp);
	if (p->in_value)
		header_store(p);
	if (!p->in_field && ++p->req.nheaders > HTTP_REQ_MAX_HEADERS)
		cb_defer(p, 431, "too many header fields");
	p->in_field = 1;
	if (p->field.len + n > HTTP_REQ_MAX_NAME)
		cb_defer(p, 431, "header field name too long");
	else
		buf_append(&p->field, at, n);
	return 0;
}

/* libhttp-parser checks every byte of a value but the first: a control
 * character there (NUL included) is refused here, as it would be later. */
static int value_chars_valid(const char *at, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)at[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return 0;
	}
	return 1;
}

static int on_header_value(http_parser *hp, const char *at, size_t n)
{
	struct http_req_parser *p = cb_parser(hp);
	p->in_value = 1;
	if (!value_chars_valid(at, n))
		cb_defer(p, 400, "malformed HTTP request: invalid character in header");
	if (p->value.len + n > HTTP_REQ_MAX_VALUE)
		cb_defer(p, 431, "header field value too long");
	else
		buf_append(&p->value, at, n);
	return 0;
}

static int on_headers_complete(http_parser *hp)
{
	struct http_req_parser *p = cb_parser(hp);
	struct http_req *r = &p->req;
	if (p->in_value || p->in_field)
		header_store(p);
	if (p->head_status)
		return cb_reject(hp, p->head_status, p->head_why);
	r->method = hp->method;
	r->method_name = http_method_str((enum http_method)hp->method);
	r->http_major = hp->http_major;
	r->http_minor = hp->http_minor;
	if (hp->flags & F_CONTENTLENGTH) {
		r->has_content_length = 1;
		r->content_length = hp->content_length;
		if (hp->content_length > p->body_limit)
			return cb_reject(hp, 413, "request body exceeds request_body_limit");
	}
	p->event = HTTP_REQ_HEAD;
	http_parser_pause(hp, 1);
	return 0;
}

static int on_body(http_parser *hp, const char *at, size_t n)
{
	struct http_req_parser *p = cb_parser(hp);
	if (p->req.body.len + n > p->body_limit)
		return cb_reject(hp, 413, "request body exceeds request_body_limit");
	if (buf_try_reserve(&p->req.body, n) != 0) /* a client-sized allocation: 503, no abort */
		return cb_reject(hp, 503, "insufficient memory for the request body");
	buf_append(&p->req.body, at, n);
	return 0;
}

/* Splits the target into path and query; -1 when it is not origin-form or
 * absolute-form with a path. */
static int req_split_url(struct http_req *r)
{
	struct http_parser_url u;
	http_parser_url_init(&u);
	const char *url = buf_cstr(&r->url);
	if (r->url.len == 0 || http_parser_parse_url(url, r->url.len, 0, &u) != 0 ||
	    !(u.field_set & (1 << UF_PATH)))
		return -1;
	buf_append(&r->path, url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
	if (u.field_set & (1 << UF_QUERY))
		buf_append(&r->query, url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
	buf_cstr(&r->path);
	buf_cstr(&r->query);
	return 0;
}

static int on_message_complete(http_parser *hp)
{
	struct http_req_parser *p = cb_parser(hp);
	struct http_req *r = &p->req;
	p->in_progress = 0;
	r->keep_alive = http_should_keep_alive(hp);
	buf_cstr(&r->body);
	if (req_split_url(r) != 0)
		return cb_reject(hp, 400, "invalid request target");
	if (r->http_major == 1 && r->http_minor >= 1 && !r->host)
		return cb_reject(hp, 400, "missing Host header");
	p->event = HTTP_REQ_DONE;
	http_parser_pause(hp, 1); /* one request at a time */
	return 0;
}

static const http_parser_settings req_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* --- feeding -------------------------------------------------------------------- */

struct http_req_parser *http_req_parser_new(size_t body_limit)
{
	struct http_req_parser *p = xcalloc(1, sizeof(*p));
	http_parser_init(&p->hp, HTTP_REQUEST);
	p->hp.data = p;
	p->body_limit = body_limit;
	req_init(&p->req);
	buf_init(&p->field);
	buf_init(&p->value);
	return p;
}

void http_req_parser_free(struct http_req_parser *p)
{
	if (!p)
		return;
	req_free(&p->req);
	buf_free(&p->field);
	buf_free(&p->value);
	free(p);
}

static void parse_error(struct http_req *r, enum http_errno e)
{
	switch (e) {
	case HPE_HEADER_OVERFLOW:
		req_fail(r, 431, "malformed HTTP request: request head too large");
		break;
	case HPE_INVALID_VERSION:
		req_fail(r, 505, "malformed HTTP request: unsupported HTTP version");
		break;
	default:
		req_fail(r, 400, "malformed HTTP request: %s", http_errno_description(e));
		break;
	}
}

enum http_req_event http_req_feed(struct http_req_parser *p, const char *data, size_t len,
				  size_t *consumed)
{
	*consumed = 0;
	if (p->event == HTTP_REQ_ERROR)
		return HTTP_REQ_ERROR;
	p->event = HTTP_REQ_MORE;
	size_t n = http_parser_execute(&p->hp, &req_settings, data, len);
	*consumed = n;
	enum http_errno e = HTTP_PARSER_ERRNO(&p->hp);
	if (e == HPE_PAUSED) {
		if (p->event != HTTP_REQ_ERROR)
			http_parser_pause(&p->hp, 0);
		return p->event;
	}
	if (e != HPE_OK) {
		parse_error(&p->req, e);
		p->event = HTTP_REQ_ERROR;
		return HTTP_REQ_ERROR;
	}
	if (n < len) { /* the parser stopped without a pause: not HTTP we serve */
		req_fail(&p->req, 400, "malformed HTTP request: unexpected data after the request");
		p->event = HTTP_REQ_ERROR;
		return HTTP_REQ_ERROR;
	}
	return HTTP_REQ_MORE;
}

struct http_req *http_req_current(struct http_req_parser *p)
{
	return &p->req;
}

int http_req_in_progress(const struct http_req_parser *p)
{
	return p->in_progress;
}

int http_req_wants_continue(const struct http_req *r)
{
	return r->expect && strcasecmp(r->expect, "100-continue") == 0 && r->http_major == 1 &&
	       r->http_minor >= 1;
}

/* --- body ------------------------------------------------------------------------ */

/* Inflates in[0..n) with the given zlib window bits into out, stopping once
 * out exceeds limit. Z_STREAM_END when the stream ended exactly at the end
 * of the input, else another zlib code. */
static int inflate_all(const char *in, size_t n, int window, size_t limit, struct buf *out)
{
	z_stream zs;
	memset(&zs, 0, sizeof(zs));
	if (inflateInit2(&zs, window) != Z_OK)
		panic("%s: inflateInit2 failed", __func__);
	zs.next_in = (unsigned char *)in;
	zs.avail_in = (uInt)n;
	int rc = Z_OK;
	while (rc == Z_OK && out->len <= limit) {
		buf_reserve(out, 65536);
		zs.next_out = (unsigned char *)out->data + out->len;
		zs.avail_out = 65536;
		rc = inflate(&zs, Z_NO_FLUSH);
		out->len = (size_t)((char *)zs.next_out - out->data);
	}
	if (rc == Z_STREAM_END && zs.avail_in != 0)
		rc = Z_DATA_ERROR; /* trailing bytes */
	inflateEnd(&zs);
	return rc;
}

/* 15+32: a gzip or zlib header; -15: raw deflate (what some clients send). */
static int body_inflate(struct http_req *r, size_t limit)
{
	static const int windows[] = {15 + 32, -15};
	if (r->body.len > UINT32_MAX)
		panic("%s: body of %zu bytes over zlib's input size", __func__, r->body.len);
	for (size_t i = 0; i < sizeof(windows) / sizeof(windows[0]); i++) {
		struct buf out;
		buf_init(&out);
		int rc = inflate_all(r->body.data, r->body.len, windows[i], limit, &out);
		if (out.len > limit) {
			buf_free(&out);
			req_fail(r, 413, "decompressed request body exceeds request_body_limit");
			return 413;
		}
		if (rc == Z_STREAM_END) {
			buf_free(&r->body);
			r->body = out;
			buf_cstr(&r->body);
			return 0;
		}
		buf_free(&out);
	}
	req_fail(r, 400, "request body is not valid gzip or deflate data");
	return 400;
}

int http_req_decode_body(struct http_req *r, size_t limit)
{
	const char *enc = r->content_encoding;
	if (!enc || !*enc || strcasecmp(enc, "identity") == 0)
		return 0;
	if (strcasecmp(enc, "gzip") != 0 && strcasecmp(enc, "x-gzip") != 0 &&
	    strcasecmp(enc, "deflate") != 0) {
		char shown[80];
		http_req_escape(shown, sizeof(shown), enc, strlen(enc));
		req_fail(r, 415, "unsupported Content-Encoding '%s' (gzip, deflate)", shown);
		return 415;
	}
	return body_inflate(r, limit);
}

/* --- query ------------------------------------------------------------------------ */

/* Percent-decodes s[0..n) ('+' is a space) into out; -1 on a bad escape, a
 * NUL byte or overflow. */
static int url_decode(const char *s, size_t n, char *out, size_t outlen)
{
	size_t j = 0;
	if (!outlen)
		return -1;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '%') {
			if (i + 2 >= n)
				return -1;
			int hi = hex_digit_value(s[i + 1]), lo = hex_digit_value(s[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			c = (char)(hi * 16 + lo);
			i += 2;
		} else if (c == '+') {
			c = ' ';
		}
		if (c == 0 || j + 1 >= outlen)
			return -1;
		out[j++] = c;
	}
	out[j] = 0;
	return 0;
}

int http_req_query_get(const struct http_req *r, const char *key, char *out, size_t outlen)
{
	const char *q = r->query.data ? r->query.data : "";
	size_t qlen = r->query.len, klen = strlen(key);
	size_t i = 0;
	while (i < qlen) {
		size_t end = i;
		while (end < qlen && q[end] != '&')
			end++;
		const char *eq = memchr(q + i, '=', end - i);
		size_t nlen = eq ? (size_t)(eq - (q + i)) : end - i;
		if (nlen == klen && memcmp(q + i, key, klen) == 0) {
			const char *v = eq ? eq + 1 : q + end;
			return url_decode(v, (size_t)(q + end - v), out, outlen) == 0 ? 1 : -1;
		}
		i = end + 1;
	}
	return 0;
}

/* --- JSON body -------------------------------------------------------------------- */

int http_req_json_body(const char *content_type, const char *body, size_t len, json_t **out,
		       char *err, size_t errlen)
{
	const char *ct = content_type ? content_type : "";
	size_t n = strcspn(ct, "; \t");
	*out = NULL;
	if (n != strlen("application/json") || strncasecmp(ct, "application/json", n) != 0) {
		snprintf(err, errlen, "expected Content-Type: application/json");
		return 415;
	}
	json_error_t jerr;
	json_t *j = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &jerr);
	if (!j) {
		char text[JSON_ERROR_TEXT_LENGTH * 4];
		http_req_escape(text, sizeof(text), jerr.text, strlen(jerr.text));
		snprintf(err, errlen, "invalid JSON at line %d column %d: %s", jerr.line,
			 jerr.column, text);
		return 400;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		snprintf(err, errlen, "expected a JSON object");
		return 422;
	}
	*out = j;
	return 0;
}

const char *http_req_json_unknown_key(json_t *obj, const char *const *allowed)
{
	const char *key;
	json_t *v;
	json_object_foreach(obj, key, v)
	{
		size_t i = 0;
		while (allowed[i] && strcmp(allowed[i], key) != 0)
			i++;
		if (!allowed[i])
			return key;
	}
	return NULL;
}

/* --- Authorization ------------------------------------------------------------------ */

/* The credentials after "<scheme> " (case-insensitive scheme, then spaces),
 * trailing blanks dropped; NULL when value has another scheme. */
static const char *auth_param(const char *value, const char *scheme, size_t *len)
{
	size_t sl = strlen(scheme);
	if (strncasecmp(value, scheme, sl) != 0 || value[sl] != ' ')
		return NULL;
	const char *s = value + sl + strspn(value + sl, " ");
	size_t n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	*len = n;
	return s;
}

static int auth_basic(const char *b64, size_t n, struct http_req_auth *a)
{
	long len = base64_decode(b64, n, (unsigned char *)a->buf, HTTP_REQ_MAX_CREDENTIALS);
	if (len <= 0 || memchr(a->buf, 0, (size_t)len))
		return -EINVAL;
	char *colon = memchr(a->buf, ':', (size_t)len);
	if (!colon)
		return -EINVAL;
	a->buf[len] = 0;
	*colon = 0;
	a->scheme = HTTP_REQ_AUTH_BASIC;
	a->user = a->buf;
	a->password = colon + 1;
	return 0;
}

/* token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */
static int auth_bearer(const char *t, size_t n, struct http_req_auth *a)
{
	size_t i = 0;
	while (i < n &&
	       (strchr("-._~+/", t[i]) || (t[i] >= '0' && t[i] <= '9') ||
		((t[i] | 0x20) >= 'a' && (t[i] | 0x20) <= 'z')) &&
	       t[i])
		i++;
	if (i == 0)
		return -EINVAL;
	while (i < n && t[i] == '=')
		i++;
	if (i != n || n > HTTP_REQ_MAX_CREDENTIALS)
		return -EINVAL;
	memcpy(a->buf, t, n);
	a->buf[n] = 0;
	a->scheme = HTTP_REQ_AUTH_BEARER;
	a->token = a->buf;
	return 0;
}

int http_req_auth_parse(const char *value, struct http_req_auth *a)
{
	size_t n = 0;
	const char *s;
	memset(a, 0, sizeof(*a));
	if ((s = auth_param(value, "Basic", &n)))
		return auth_basic(s, n, a);
	if ((s = auth_param(value, "Bearer", &n)))
		return auth_bearer(s, n, a);
	return -EINVAL;
}

void http_req_auth_clear(struct http_req_auth *a)
{
	explicit_bzero(a, sizeof(*a));
}

void http_req_auth_format_basic(struct buf *out, const char *user, const char *password)
{
	struct buf plain;
	buf_init(&plain);
	buf_printf(&plain, "%s:%s", user, password);
	buf_appends(out, "Basic ");
	base64_encode(out, plain.data, plain.len);
	explicit_bzero(plain.data, plain.len);
	buf_free(&plain);
}
