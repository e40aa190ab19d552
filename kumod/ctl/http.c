/* SPDX-License-Identifier: Apache-2.0 */
/* HTTP listener: accept, HTTP/1.1 framing with libhttp-parser, keep-alive
 * and pipelining (one request at a time), limits, body decompression,
 * access control, routing and responses. */
#include "ctl/http.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <zlib.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "ctl/http_int.h"
#include "ctl/metrics_collect.h"
#include "io/loop.h"
#include "io/tls.h"
#include "ktrace.h"
#include "policy.h"

#define HTTP_MAX_CONNECTIONS 1024
#define HTTP_MAX_URL 8192
#define HTTP_MAX_HEADERS 100
#define HTTP_MAX_HEADER_VALUE 8192
#define HTTP_REQUEST_TIMEOUT_MS 30000
#define HTTP_IDLE_TIMEOUT_MS 60000

static struct {
	struct http_listener *listeners;
	struct http_conn *conns;
	size_t nconns;
	uint64_t accepted;
} http;

static void conn_process(struct http_conn *hc);
static void hconn_close(struct http_conn *hc, const char *reason);
static void conn_arm_timer(struct http_conn *hc);
static void listener_maybe_free(struct http_listener *l);

/* --- configuration ------------------------------------------------------- */

void http_listener_config_init(struct http_listener_config *cfg)
{
	char host[256] = "localhost";
	memset(cfg, 0, sizeof(*cfg));
	gethostname(host, sizeof(host) - 1);
	cfg->listen = xstrdup("127.0.0.1:8000");
	cfg->hostname = xstrdup(host);
	cidr_list_add(&cfg->trusted_hosts, "127.0.0.1");
	cidr_list_add(&cfg->trusted_hosts, "::1");
	cfg->request_body_limit = 2u << 20;
}

void http_listener_config_free(struct http_listener_config *cfg)
{
	free(cfg->listen);
	free(cfg->hostname);
	free(cfg->tls_certificate);
	free(cfg->tls_private_key);
	cidr_list_free(&cfg->trusted_hosts);
	memset(cfg, 0, sizeof(*cfg));
}

const struct http_listener_config *http__config(const struct http_conn *hc)
{
	return &hc->l->cfg;
}

/* --- requests ------------------------------------------------------------ */

static void request_init(struct http_request *r)
{
	memset(r, 0, sizeof(*r));
	buf_init(&r->url);
	buf_init(&r->path);
	buf_init(&r->query);
	buf_init(&r->field);
	buf_init(&r->value);
	buf_init(&r->body);
}

static void request_free(struct http_request *r)
{
	buf_free(&r->url);
	buf_free(&r->path);
	buf_free(&r->query);
	buf_free(&r->field);
	buf_free(&r->value);
	buf_free(&r->body);
	free(r->content_type);
	free(r->content_encoding);
	free(r->authorization);
	free(r->host);
	free(r->expect);
	memset(r, 0, sizeof(*r));
}

static void request_reset(struct http_request *r)
{
	request_free(r);
	request_init(r);
}

static struct http_conn *parser_conn(http_parser *p)
{
	return p->data;
}

static int parser_reject(http_parser *p, int status, const char *why)
{
	struct http_conn *hc = parser_conn(p);
	if (!hc->req.reject_status) {
		hc->req.reject_status = status;
		hc->req.reject_why = why;
	}
	http_parser_pause(p, 1);
	return 0;
}

static int on_message_begin(http_parser *p)
{
	struct http_conn *hc = parser_conn(p);
	request_reset(&hc->req);
	hc->in_request = 1;
	task_set_phase(hc->task, "ReadingRequest", "peer_read");
	conn_arm_timer(hc);
	return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
	struct http_conn *hc = parser_conn(p);
	if (hc->req.url.len + n > HTTP_MAX_URL)
		return parser_reject(p, 414, "request target too long");
	buf_append(&hc->req.url, at, n);
	return 0;
}

/* Keeps the headers the API reads; the rest only count against limits. */
static void header_store(struct http_request *r)
{
	static const struct {
		const char *name;
		size_t off;
	} kept[] = {
	    {"content-type", offsetof(struct http_request, content_type)},
	    {"content-encoding", offsetof(struct http_request, content_encoding)},
	    {"authorization", offsetof(struct http_request, authorization)},
	    {"host", offsetof(struct http_request, host)},
	    {"expect", offsetof(struct http_request, expect)},
	};
	const char *name = buf_cstr(&r->field);
	for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++) {
		if (strcasecmp(name, kept[i].name) != 0)
			continue;
		char **slot = (char **)((char *)r + kept[i].off);
		free(*slot);
		*slot = xstrdup(buf_cstr(&r->value));
	}
	buf_reset(&r->field);
	buf_reset(&r->value);
	r->in_value = 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
	struct http_request *r = &parser_conn(p)->req;
	if (r->in_value)
		header_store(r);
	if (r->field.len == 0 && ++r->nheaders > HTTP_MAX_HEADERS)
		return parser_reject(p, 431, "too many header fields");
	if (r->field.len + n > 256)
		return parser_reject(p, 431, "header field name too long");
	buf_append(&r->field, at, n);
	return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
	struct http_request *r = &parser_conn(p)->req;
	r->in_value = 1;
	if (r->value.len + n > HTTP_MAX_HEADER_VALUE)
		return parser_reject(p, 431, "header field value too long");
	buf_append(&r->value, at, n);
	return 0;
}

static int on_headers_complete(http_parser *p)
{
	struct http_conn *hc = parser_conn(p);
	struct http_request *r = &hc->req;
	if (r->in_value || r->field.len)
		header_store(r);
	r->method_id = p->method;
	r->method = http_method_str((enum http_method)p->method);
	r->start_ns = clock_mono_ns();
	size_t limit = hc->l->cfg.request_body_limit;
	if ((p->flags & F_CONTENTLENGTH) && p->content_length > limit)
		return parser_reject(p, 413, "request body exceeds request_body_limit");
	if (r->expect && strcasecmp(r->expect, "100-continue") == 0 && p->http_minor >= 1) {
		static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
		conn_write(&hc->conn, cont, sizeof(cont) - 1);
		conn_flush(&hc->conn);
	}
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
	struct http_conn *hc = parser_conn(p);
	if (hc->req.body.len + n > hc->l->cfg.request_body_limit)
		return parser_reject(p, 413, "request body exceeds request_body_limit");
	buf_append(&hc->req.body, at, n);
	return 0;
}

static int on_message_complete(http_parser *p)
{
	struct http_conn *hc = parser_conn(p);
	hc->req.keep_alive = http_should_keep_alive(p);
	http_parser_pause(p, 1); /* one request at a time: the loop dispatches it */
	return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* --- responses ----------------------------------------------------------- */

static const char *status_text(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 413:
		return "Payload Too Large";
	case 414:
		return "URI Too Long";
	case 415:
		return "Unsupported Media Type";
	case 422:
		return "Unprocessable Entity";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 503:
		return "Service Unavailable";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Unknown";
	}
}

static void respond_head(struct http_conn *hc, int status, const char *content_type, size_t len,
			 const char *extra)
{
	struct http_request *r = &hc->req;
	int close_after = !r->keep_alive || r->reject_status || kumod_shutting_down();
	char head[512];
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			 "Cache-Control: no-store\r\n%s%s\r\n",
			 status, status_text(status), content_type, len, extra ? extra : "",
			 close_after ? "Connection: close\r\n" : "");
	conn_write(&hc->conn, head, (size_t)n);
	r->keep_alive = !close_after;
}

static void respond_extra(struct http_conn *hc, int status, const char *content_type,
			  const char *body, size_t len, const char *extra)
{
	if (hc->gone)
		return;
	struct http_request *r = &hc->req;
	uint64_t us = r->start_ns ? (clock_mono_ns() - r->start_ns) / 1000 : 0;
	KTRACE(http_response, hc->id, status, us);
	respond_head(hc, status, content_type, len, extra);
	if (r->method_id != HTTP_HEAD)
		conn_write(&hc->conn, body, len);
	conn_flush(&hc->conn);
	hc->in_request = 0;
	int was_busy = hc->busy;
	hc->busy = 0;
	if (!r->keep_alive) {
		hconn_close(hc, "response with Connection: close");
		return;
	}
	task_set_phase(hc->task, "Idle", "peer_read");
	conn_arm_timer(hc);
	if (was_busy) {
		conn_resume_read(&hc->conn);
		conn_process(hc); /* pipelined requests that waited */
	}
}

void http__respond(struct http_conn *hc, int status, const char *content_type, const char *body,
		   size_t len)
{
	respond_extra(hc, status, content_type, body, len, NULL);
}

void http__respond_json(struct http_conn *hc, int status, json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
	json_decref(j);
	size_t n = strlen(s);
	s = xrealloc(s, n + 2);
	s[n++] = '\n';
	s[n] = 0;
	http__respond(hc, status, "application/json", s, n);
	free(s);
}

static void error_extra(struct http_conn *hc, int status, const char *extra, const char *text)
{
	json_t *j = json_pack("{s:s}", "error", text);
	char *s = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
	json_decref(j);
	char *body = xasprintf("%s\n", s);
	free(s);
	respond_extra(hc, status, "application/json", body, strlen(body), extra);
	free(body);
}

void http__error(struct http_conn *hc, int status, const char *fmt, ...)
{
	char text[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	error_extra(hc, status, NULL, text);
}

struct http_conn *http__conn_lookup(uint64_t id)
{
	for (struct http_conn *hc = http.conns; hc; hc = hc->next)
		if (hc->id == id)
			return hc->gone || uv_is_closing((uv_handle_t *)&hc->conn.tcp) ? NULL : hc;
	return NULL;
}

/* --- request helpers ------------------------------------------------------- */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decodes s[0..n) ('+' is a space) into out; -1 on a bad escape, a
 * NUL byte or overflow. */
static int url_decode(const char *s, size_t n, char *out, size_t outlen)
{
	size_t j = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '%') {
			if (i + 2 >= n)
				return -1;
			int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
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

int http__query_get(const struct http_request *req, const char *key, char *out, size_t outlen)
{
	const char *q = req->query.data ? req->query.data : "";
	size_t qlen = req->query.len, klen = strlen(key);
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

json_t *http__json_body(struct http_conn *hc, struct http_request *req)
{
	const char *ct = req->content_type ? req->content_type : "";
	size_t n = strcspn(ct, "; \t");
	if (n != strlen("application/json") || strncasecmp(ct, "application/json", n) != 0) {
		http__error(hc, 415, "expected Content-Type: application/json");
		return NULL;
	}
	json_error_t jerr;
	json_t *j = json_loadb(req->body.data ? req->body.data : "", req->body.len,
			       JSON_REJECT_DUPLICATES, &jerr);
	if (!j) {
		http__error(hc, 400, "invalid JSON at line %d column %d: %s", jerr.line,
			    jerr.column, jerr.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		http__error(hc, 422, "expected a JSON object");
		return NULL;
	}
	return j;
}

/* Inflates a gzip or zlib (or raw deflate) body in place; the limit applies
 * to the decompressed size. 0, or an HTTP status with *why set. */
static int body_inflate(struct buf *body, size_t limit, const char **why)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		z_stream zs;
		memset(&zs, 0, sizeof(zs));
		/* 15+32: gzip or zlib header; -15: raw deflate (what some clients send) */
		if (inflateInit2(&zs, attempt ? -15 : 15 + 32) != Z_OK)
			panic("%s: inflateInit2 failed", __func__);
		struct buf out;
		buf_init(&out);
		zs.next_in = (unsigned char *)body->data;
		zs.avail_in = (uInt)body->len;
		int rc = Z_OK;
		while (rc == Z_OK) {
			if (out.len > limit)
				break;
			buf_reserve(&out, 65536);
			zs.next_out = (unsigned char *)out.data + out.len;
			zs.avail_out = 65536;
			rc = inflate(&zs, Z_NO_FLUSH);
			out.len = (size_t)((char *)zs.next_out - out.data);
			if (rc == Z_BUF_ERROR && zs.avail_in == 0)
				break;
		}
		inflateEnd(&zs);
		if (out.len > limit) {
			buf_free(&out);
			*why = "decompressed request body exceeds request_body_limit";
			return 413;
		}
		if (rc == Z_STREAM_END && zs.avail_in == 0) {
			buf_free(body);
			*body = out;
			return 0;
		}
		buf_free(&out);
	}
	*why = "request body is not valid gzip or deflate data";
	return 400;
}

static int request_decode_body(struct http_conn *hc, struct http_request *r)
{
	const char *enc = r->content_encoding;
	if (!enc || !*enc || strcasecmp(enc, "identity") == 0)
		return 0;
	if (strcasecmp(enc, "gzip") != 0 && strcasecmp(enc, "x-gzip") != 0 &&
	    strcasecmp(enc, "deflate") != 0) {
		http__error(hc, 415, "unsupported Content-Encoding '%s' (gzip, deflate)", enc);
		return -1;
	}
	const char *why = NULL;
	int st = body_inflate(&r->body, hc->l->cfg.request_body_limit, &why);
	if (st) {
		http__error(hc, st, "%s", why);
		return -1;
	}
	return 0;
}

/* --- access control -------------------------------------------------------- */

/* Host must name us: an IP literal, localhost, or the configured hostname
 * (refuses DNS-rebinding pages that reach a loopback listener). */
static int host_allowed(struct http_conn *hc, const char *host)
{
	char name[256];
	if (host[0] == '[') {
		const char *end = strchr(host, ']');
		return end != NULL; /* IPv6 literal */
	}
	size_t n = strcspn(host, ":");
	if (n == 0 || n >= sizeof(name))
		return 0;
	memcpy(name, host, n);
	name[n] = 0;
	if (strspn(name, "0123456789.") == n)
		return 1;
	return strcasecmp(name, "localhost") == 0 || strcasecmp(name, hc->l->cfg.hostname) == 0;
}

static void auth_denied(struct http_conn *hc, int status, const char *why)
{
	KTRACE(http_auth_fail, hc->id, hc->conn.peer, status, why);
	if (status == 401)
		error_extra(hc, 401, "WWW-Authenticate: Basic realm=\"kumod\"\r\n", why);
	else
		http__error(hc, status, "%s", why);
}

/* 1: go on; 0: answered. */
static int request_authorize(struct http_conn *hc, struct http_request *r)
{
	if (cidr_list_match(&hc->l->cfg.trusted_hosts, hc->conn.peer_family, hc->conn.peer_addr)) {
		snprintf(r->identity, sizeof(r->identity), "trusted %s", hc->conn.peer_ip);
		return 1;
	}
	const char *a = r->authorization;
	if (!a) {
		auth_denied(hc, 401, "authentication required");
		return 0;
	}
	if (strncasecmp(a, "Basic ", 6) != 0) {
		auth_denied(hc, 400, "Malformed or unsupported Authorization header");
		return 0;
	}
	const char *b64 = a + 6 + strspn(a + 6, " ");
	size_t n = strlen(b64);
	unsigned char dec[600];
	int len = n && n % 4 == 0 && n / 4 * 3 < sizeof(dec)
		      ? EVP_DecodeBlock(dec, (const unsigned char *)b64, (int)n)
		      : -1;
	if (len >= 0)
		len -= (n >= 1 && b64[n - 1] == '=') + (n >= 2 && b64[n - 2] == '=');
	char *colon = len > 0 ? memchr(dec, ':', (size_t)len) : NULL;
	if (!colon || memchr(dec, 0, (size_t)len)) {
		auth_denied(hc, 400, "Malformed or unsupported Authorization header");
		return 0;
	}
	dec[len] = 0;
	*colon = 0;
	int ok = 0;
	struct policy_result pr;
	policy_http_validate_auth_basic((char *)dec, colon + 1, &ok, &pr);
	OPENSSL_cleanse(dec, sizeof(dec));
	if (pr.status == POLICY_ERROR) {
		auth_denied(hc, 500, "try again later");
		return 0;
	}
	if (!ok) {
		auth_denied(hc, 401, "invalid credentials");
		return 0;
	}
	char user[128];
	log_escape(user, sizeof(user), (const char *)dec, strlen((const char *)dec));
	snprintf(r->identity, sizeof(r->identity), "user %s", user);
	return 1;
}

/* --- dispatch -------------------------------------------------------------- */

static int request_split_url(struct http_request *r)
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

static void request_dispatch(struct http_conn *hc)
{
	struct http_request *r = &hc->req;
	if (r->reject_status) {
		http__error(hc, r->reject_status, "%s", r->reject_why);
		return;
	}
	if (request_split_url(r) != 0) {
		http__error(hc, 400, "invalid request target");
		return;
	}
	const char *path = buf_cstr(&r->path);
	KTRACE(http_request, hc->id, r->method, path);
	task_set_phase(hc->task, "Handling", NULL);
	if (hc->parser.http_major == 1 && hc->parser.http_minor >= 1 && !r->host) {
		r->reject_status = 400; /* answered, then closed */
		http__error(hc, 400, "missing Host header");
		return;
	}
	if (r->host && !host_allowed(hc, r->host)) {
		r->reject_status = 403;
		http__error(hc, 403, "Host '%s' is not an address or name of this listener",
			    r->host);
		return;
	}
	const struct http_route *other = NULL;
	const struct http_route *rt = http_api__find(path, &other, r->method_id);
	if (!rt && other) {
		char allow[64];
		snprintf(allow, sizeof(allow), "Allow: %s\r\n",
			 http_method_str((enum http_method)other->method_id));
		char text[128];
		snprintf(text, sizeof(text), "method %s not allowed for %s (use %s)", r->method,
			 other->path, http_method_str((enum http_method)other->method_id));
		error_extra(hc, 405, allow, text);
		return;
	}
	if (!rt) {
		http__error(hc, 404, "no such endpoint: %s", path);
		return;
	}
	if (!rt->open && !request_authorize(hc, r))
		return;
	if (request_decode_body(hc, r) != 0)
		return;
	rt->fn(hc, r);
}

static const char *parse_error_status(enum http_errno e, int *status)
{
	switch (e) {
	case HPE_HEADER_OVERFLOW:
		*status = 431;
		return "request head too large";
	case HPE_INVALID_VERSION:
		*status = 505;
		return "unsupported HTTP version";
	default:
		*status = 400;
		return http_errno_description(e);
	}
}

static void conn_process(struct http_conn *hc)
{
	while (!hc->busy && !hc->gone && !hc->conn.closing) {
		size_t avail = buf_avail(&hc->conn.in);
		if (!avail)
			break;
		size_t n = http_parser_execute(&hc->parser, &parser_settings,
					       buf_rptr(&hc->conn.in), avail);
		buf_consume(&hc->conn.in, n);
		enum http_errno e = HTTP_PARSER_ERRNO(&hc->parser);
		if (e == HPE_PAUSED) {
			http_parser_pause(&hc->parser, 0);
			request_dispatch(hc);
			continue;
		}
		if (e != HPE_OK) {
			int status;
			const char *why = parse_error_status(e, &status);
			hc->req.reject_status = status;
			http__error(hc, status, "malformed HTTP request: %s", why);
			return;
		}
		if (n < avail)
			break; /* cannot happen without an error; stay safe */
	}
	if (hc->busy)
		conn_pause_read(&hc->conn);
}

/* --- connections ----------------------------------------------------------- */

static void conn_timer_cb(uv_timer_t *t)
{
	struct http_conn *hc = t->data;
	struct task *prev = task_enter(hc->task);
	if (hc->in_request && !hc->busy) {
		hc->req.reject_status = 408;
		http__error(hc, 408, "request not received in time");
	} else if (!hc->busy) {
		hconn_close(hc, "idle");
	}
	task_exit(hc->task, prev);
}

static void conn_arm_timer(struct http_conn *hc)
{
	if (hc->gone || hc->busy)
		return;
	uv_timer_start(&hc->timer, conn_timer_cb,
		       hc->in_request ? HTTP_REQUEST_TIMEOUT_MS : HTTP_IDLE_TIMEOUT_MS, 0);
}

static void conn_handle_closed(struct http_conn *hc)
{
	if (--hc->open_handles)
		return;
	struct http_listener *l = hc->l;
	if (hc->prev)
		hc->prev->next = hc->next;
	else
		http.conns = hc->next;
	if (hc->next)
		hc->next->prev = hc->prev;
	http.nconns--;
	l->nconn--;
	request_free(&hc->req);
	task_close(hc->task);
	free(hc);
	listener_maybe_free(l);
}

static void conn_on_closed(struct conn *c)
{
	conn_handle_closed(c->owner);
}

static void timer_closed_cb(uv_handle_t *h)
{
	conn_handle_closed(h->data);
}

static void hconn_close(struct http_conn *hc, const char *reason)
{
	if (hc->gone)
		return;
	hc->gone = 1;
	KTRACE(http_conn_close, hc->id, reason);
	task_set_phase(hc->task, "Closing", NULL);
	uv_close((uv_handle_t *)&hc->timer, timer_closed_cb);
	conn_close(&hc->conn);
}

static void conn_on_data(struct conn *c)
{
	conn_process(c->owner);
}

static void conn_on_eof(struct conn *c, int err)
{
	hconn_close(c->owner, err ? "read error" : "peer closed");
}

static void conn_on_tls(struct conn *c, int ok)
{
	if (!ok)
		hconn_close(c->owner, "TLS handshake failed");
}

static const struct conn_handler http_conn_handler = {
    .on_data = conn_on_data,
    .on_eof = conn_on_eof,
    .on_tls = conn_on_tls,
    .on_closed = conn_on_closed,
};

static void conn_refuse_busy(struct http_conn *hc)
{
	static const char body[] = "{\"error\":\"too many connections\"}\n";
	char head[160];
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n",
			 sizeof(body) - 1);
	conn_write(&hc->conn, head, (size_t)n);
	conn_write(&hc->conn, body, sizeof(body) - 1);
	metrics_counter_add("total_connections_denied", "service", "http_listener", 1);
	hconn_close(hc, "too many connections");
}

static void listener_accept(struct http_listener *l)
{
	struct http_conn *hc = xcalloc(1, sizeof(*hc));
	hc->l = l;
	hc->task = task_spawn("http_server", "", l->task ? l->task->id : 0);
	hc->id = hc->task->id;
	request_init(&hc->req);
	int rc = conn_accept(&hc->conn, (uv_stream_t *)&l->tcp, &http_conn_handler, hc, hc->task);
	uv_timer_init(l->tcp.loop, &hc->timer);
	hc->timer.data = hc;
	hc->open_handles = 2;
	hc->next = http.conns;
	if (http.conns)
		http.conns->prev = hc;
	http.conns = hc;
	http.nconns++;
	l->nconn++;
	if (rc < 0) {
		log_warn("kumod::http", "accept on %s failed: %s", l->addr, uv_strerror(rc));
		hconn_close(hc, "accept failed");
		return;
	}
	task_set_field(hc->task, "peer", hc->conn.peer);
	task_set_phase(hc->task, "Idle", "peer_read");
	KTRACE(http_conn_open, hc->id, hc->conn.peer);
	metrics_counter_add("total_connection_count", "service", "http_listener", 1);
	http_parser_init(&hc->parser, HTTP_REQUEST);
	hc->parser.data = hc;
	if (http.nconns > HTTP_MAX_CONNECTIONS) {
		conn_refuse_busy(hc);
		return;
	}
	if (l->tls_ctx)
		conn_starttls_server(&hc->conn, l->tls_ctx);
	conn_start_read(&hc->conn);
	conn_arm_timer(hc);
}

/* --- listeners ------------------------------------------------------------- */

static int addr_is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return (((const unsigned char *)&((const struct sockaddr_in *)ss)->sin_addr)[0]) ==
		       127;
	if (ss->ss_family == AF_INET6) {
		static const unsigned char lo[16] = {[15] = 1};
		return memcmp(&((const struct sockaddr_in6 *)ss)->sin6_addr, lo, 16) == 0;
	}
	return 0;
}

static void listener_on_connection(uv_stream_t *server, int status)
{
	struct http_listener *l = server->data;
	struct task *prev = task_enter(l->task);
	if (l->closed)
		;
	else if (status < 0)
		log_warn("kumod::http", "accept on %s failed: %s", l->addr, uv_strerror(status));
	else
		listener_accept(l);
	task_exit(l->task, prev);
}

static void listener_free(struct http_listener *l)
{
	SSL_CTX_free(l->tls_ctx);
	http_listener_config_free(&l->cfg);
	free(l);
}

int http_listener_start(uv_loop_t *loop, struct http_listener_config *cfg, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (conn_parse_listen_addr(cfg->listen, &ss) != 0) {
		snprintf(err, errlen, "start_http_listener: invalid listen address '%s'",
			 cfg->listen);
		return -EINVAL;
	}
	struct http_listener *l = xcalloc(1, sizeof(*l));
	if (cfg->use_tls) {
		l->tls_ctx = tls_server_ctx_new(cfg->tls_certificate, cfg->tls_private_key,
						cfg->hostname, err, errlen);
		if (!l->tls_ctx) {
			free(l);
			return -EINVAL;
		}
	}
	uv_tcp_init(loop, &l->tcp);
	l->tcp.data = l;
	int rc = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&l->tcp, 128, listener_on_connection);
	if (rc < 0) {
		snprintf(err, errlen, "start_http_listener: cannot listen on %s: %s", cfg->listen,
			 uv_strerror(rc));
		SSL_CTX_free(l->tls_ctx);
		uv_close((uv_handle_t *)&l->tcp, (uv_close_cb)free);
		return rc;
	}
	int len = sizeof(ss);
	uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len);
	conn_format_addr((struct sockaddr *)&ss, l->addr, sizeof(l->addr), NULL, 0, NULL, NULL);
	l->cfg = *cfg;
	memset(cfg, 0, sizeof(*cfg));
	char name[80];
	snprintf(name, sizeof(name), "http %s", l->addr);
	l->task = task_spawn("listener", name, 0);
	task_set_field(l->task, "addr", l->addr);
	task_set_phase(l->task, "Accepting", "accept");
	l->next = http.listeners;
	http.listeners = l;
	metrics_collect_register();
	if (!addr_is_loopback(&ss))
		log_warn("kumod::http",
			 "http listener on %s is reachable from other hosts; trusted_hosts and "
			 "http_server_validate_auth_basic still gate every request",
			 l->addr);
	KTRACE(http_listener_start, l->tls_ctx ? "https" : "http", l->addr);
	return 0;
}

/* A listener is freed once its handle closed and its last connection
 * ended: connections read its configuration until then. */
static void listener_maybe_free(struct http_listener *l)
{
	if (l->closed != 2 || l->nconn)
		return;
	for (struct http_listener **pp = &http.listeners; *pp; pp = &(*pp)->next) {
		if (*pp == l) {
			*pp = l->next;
			break;
		}
	}
	listener_free(l);
}

static void listener_close_cb(uv_handle_t *h)
{
	struct http_listener *l = h->data;
	task_close(l->task);
	l->task = NULL;
	l->closed = 2;
	listener_maybe_free(l);
}

void http_server_shutdown(void)
{
	for (struct http_listener *l = http.listeners; l; l = l->next) {
		if (!l->closed) {
			l->closed = 1;
			task_set_phase(l->task, "Closed", NULL);
			uv_close((uv_handle_t *)&l->tcp, listener_close_cb);
		}
	}
	for (struct http_conn *hc = http.conns; hc; hc = hc->next)
		hconn_close(hc, "shutdown");
}

size_t http_server_connection_count(void)
{
	return http.nconns;
}
