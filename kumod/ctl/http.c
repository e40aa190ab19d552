/* SPDX-License-Identifier: Apache-2.0 */
/* HTTP listener: accept, keep-alive and pipelining (one request at a time),
 * timeouts, access control, routing and responses. Parsing, limits and body
 * decompression are proto/http_req's. */
#include "ctl/http.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/fdlimit.h"
#include "base/log.h"
#include "base/memlimit.h"
#include "base/metrics.h"
#include "base/peertab.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "ctl/http_int.h"
#include "ctl/metrics_collect.h"
#include "ctl/trace_smtp.h"
#include "io/loop.h"
#include "io/tls.h"
#include "ktrace.h"
#include "policy.h"

#define HTTP_RESERVED_TIMEOUT_MS 1000 /* a reserved slot is not held idle */
#define HTTP_REQUEST_TIMEOUT_MS 30000
#define HTTP_IDLE_TIMEOUT_MS 60000
#define HTTP_RETRY_AFTER "Retry-After: 5\r\n"

static struct {
	struct http_listener *listeners;
	struct http_conn *conns;
	size_t nconns;
	size_t nreserved; /* connections in the liveness/metrics slots */
	uint64_t accepted;
	struct peertab clients;
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
	cfg->max_connections_per_client = 64;
	cfg->max_recipients_per_inject = 10000;
	cfg->max_received_headers = 50;
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

/* A request's first bytes arrived. */
static void request_begin(struct http_conn *hc)
{
	memlimit_account(-(int64_t)hc->req.accounted);
	memset(&hc->req, 0, sizeof(hc->req));
	hc->req.r = http_req_current(hc->parser);
	hc->in_request = 1;
	task_set_phase(hc->task, "ReadingRequest", "peer_read");
	conn_arm_timer(hc);
}

static int request_check_host(struct http_conn *hc, const char *host);
static int request_authorize(struct http_conn *hc, struct http_request *req);

/* The route of the request target (path only), from the head. */
static const struct http_route *head_route(struct http_request *req,
					   const struct http_route **other)
{
	char path[512];
	const struct buf *u = &req->r->url;
	size_t n = u->len;
	const char *q = u->data ? memchr(u->data, '?', u->len) : NULL;
	if (q)
		n = (size_t)(q - u->data);
	if (n >= sizeof(path))
		return NULL;
	memcpy(path, u->data ? u->data : "", n);
	path[n] = 0;
	return http_api__find(path, other, req->r->method);
}

/* Decides from the head, before any body byte is read: a connection in a
 * reserved slot serves liveness and metrics only (503 otherwise), access
 * is checked (401/403 and close), and a body that would take memory over
 * the soft limit is refused (503 Retry-After). 1: go on; 0: answered. */
static int request_head_checks(struct http_conn *hc)
{
	struct http_request *req = &hc->req;
	const struct http_route *other = NULL, *rt = head_route(req, &other);
	if (hc->reserved)
		req->close = 1; /* one answer per reserved slot */
	if (hc->reserved && !(rt && (rt->open || strncmp(rt->path, "/metrics", 8) == 0))) {
		http__error_extra(hc, 503, HTTP_RETRY_AFTER, "too many connections");
		return 0;
	}
	if (!rt || !request_check_host(hc, req->r->host))
		return 1; /* answered after the body as before (404/405), or 403 and closed */
	if (!rt->open) {
		req->close = 1; /* a refusal closes: the body is never read */
		if (!request_authorize(hc, req))
			return 0;
		req->close = 0;
		req->authorized = 1;
	}
	uint64_t clen = req->r->has_content_length ? req->r->content_length : 0;
	if (clen && clen <= hc->l->cfg.request_body_limit) {
		if (memlimit_check((size_t)clen) == MEM_OVER) {
			memlimit_count_refusal();
			KTRACE(http_limit, hc->id, hc->conn.peer, "memory_soft_limit");
			req->close = 1;
			http__error_extra(hc, 503, HTTP_RETRY_AFTER,
					  "load shedding: over the memory limit");
			return 0;
		}
		req->accounted = (size_t)clen;
		memlimit_account((int64_t)clen);
	}
	return 1;
}

static void request_release(struct http_conn *hc)
{
	memlimit_account(-(int64_t)hc->req.accounted);
	hc->req.accounted = 0;
}

/* The head is complete: the body may follow after 100 Continue. */
static void request_head(struct http_conn *hc)
{
	hc->req.start_ns = clock_mono_ns();
	if (!request_head_checks(hc))
		return;
	if (http_req_wants_continue(hc->req.r)) {
		static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
		conn_write(&hc->conn, cont, sizeof(cont) - 1);
		conn_flush(&hc->conn);
	}
}

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
	int close_after = r->close || !r->r->keep_alive || kumod_shutting_down();
	char head[512];
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			 "Cache-Control: no-store\r\n%s%s\r\n",
			 status, status_text(status), content_type, len, extra ? extra : "",
			 close_after ? "Connection: close\r\n" : "");
	conn_write(&hc->conn, head, (size_t)n);
	r->close = close_after;
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
	request_release(hc);
	if (r->r->method != HTTP_HEAD)
		conn_write(&hc->conn, body, len);
	conn_flush(&hc->conn);
	hc->in_request = 0;
	int was_busy = hc->busy;
	hc->busy = 0;
	if (r->close) {
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

void http__respond_extra(struct http_conn *hc, int status, const char *content_type,
			 const char *body, size_t len, const char *extra)
{
	respond_extra(hc, status, content_type, body, len, extra);
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

void http__error_extra(struct http_conn *hc, int status, const char *extra, const char *text)
{
	json_t *j = json_pack("{s:s}", "error", text);
	if (!j) { /* not UTF-8 (client bytes in the text): escape them */
		char safe[1024];
		http_req_escape(safe, sizeof(safe), text, strlen(text));
		j = json_pack("{s:s}", "error", safe);
	}
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
	http__error_extra(hc, status, NULL, text);
}

void http__upgrade(struct http_conn *hc, const char *extra, struct trace_sub *ws)
{
	struct http_request *r = &hc->req;
	uint64_t us = r->start_ns ? (clock_mono_ns() - r->start_ns) / 1000 : 0;
	KTRACE(http_response, hc->id, 101, us);
	char head[512];
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
			 "Connection: Upgrade\r\n%s\r\n",
			 extra);
	conn_write(&hc->conn, head, (size_t)n);
	conn_flush(&hc->conn);
	request_release(hc);
	hc->in_request = 0;
	hc->ws = ws;
	uv_timer_stop(&hc->timer);
	task_set_phase(hc->task, "WebSocket", "peer_read");
}

void http__close(struct http_conn *hc, const char *reason)
{
	hconn_close(hc, reason);
}

struct http_conn *http__conn_lookup(uint64_t id)
{
	for (struct http_conn *hc = http.conns; hc; hc = hc->next)
		if (hc->id == id)
			return hc->gone || uv_is_closing((uv_handle_t *)&hc->conn.tcp) ? NULL : hc;
	return NULL;
}

/* --- request helpers ------------------------------------------------------- */

int http__query_get(const struct http_request *req, const char *key, char *out, size_t outlen)
{
	return http_req_query_get(req->r, key, out, outlen);
}

json_t *http__json_body(struct http_conn *hc, struct http_request *req)
{
	char err[HTTP_REQ_MAX_ERROR + JSON_ERROR_TEXT_LENGTH * 4];
	json_t *j = NULL;
	int st = http_req_json_body(req->r->content_type, req->r->body.data, req->r->body.len, &j,
				    err, sizeof(err));
	if (st)
		http__error(hc, st, "%s", err);
	return j;
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
		http__error_extra(
		    hc, 401, "WWW-Authenticate: Basic realm=\"kumod\", Bearer realm=\"kumod\"\r\n",
		    why);
	else
		http__error(hc, status, "%s", why);
}

/* Runs the policy check for parsed credentials; sets the audit identity
 * when accepted. POLICY_ERROR in *status. */
static int auth_check(struct http_request *req, const struct http_req_auth *a, int *status)
{
	int ok = 0;
	struct policy_result pr;
	if (a->scheme == HTTP_REQ_AUTH_BASIC)
		policy_http_validate_auth_basic(a->user, a->password, &ok, &pr);
	else
		policy_http_validate_auth_bearer(a->token, &ok, &pr);
	*status = pr.status;
	if (!ok || pr.status != POLICY_OK)
		return 0;
	req->auth_scheme = a->scheme;
	if (a->scheme == HTTP_REQ_AUTH_BEARER) {
		snprintf(req->identity, sizeof(req->identity), "bearer token");
		return 1;
	}
	snprintf(req->auth_user, sizeof(req->auth_user), "%s", a->user);
	char user[128];
	log_escape(user, sizeof(user), a->user, strlen(a->user));
	snprintf(req->identity, sizeof(req->identity), "user %s", user);
	return 1;
}

json_t *http__auth_info(const struct http_conn *hc, const struct http_request *req)
{
	json_t *identities = json_array(), *groups = json_array();
	if (req->auth_scheme == HTTP_REQ_AUTH_BASIC)
		json_array_append_new(identities, json_pack("{s:s,s:s}", "identity", req->auth_user,
							    "context", "HttpBasicAuth"));
	else if (req->auth_scheme == HTTP_REQ_AUTH_BEARER) /* the token is no identity */
		json_array_append_new(
		    identities, json_pack("{s:s,s:s}", "identity", "", "context", "BearerToken"));
	else
		json_array_append_new(groups, json_string("kumomta:http-listener-trusted-ip"));
	return json_pack("{s:s,s:o,s:o}", "peer_address", hc->conn.peer_ip, "identities",
			 identities, "groups", groups);
}

/* 1: go on; 0: answered. Every decision is traced (http_auth). */
static int request_authorize(struct http_conn *hc, struct http_request *req)
{
	if (cidr_list_match(&hc->l->cfg.trusted_hosts, hc->conn.peer_family, hc->conn.peer_addr)) {
		snprintf(req->identity, sizeof(req->identity), "trusted %s", hc->conn.peer_ip);
		KTRACE(http_auth, hc->id, "trusted", "ok");
		return 1;
	}
	const char *value = req->r->authorization;
	if (!value) {
		KTRACE(http_auth, hc->id, "none", "denied");
		auth_denied(hc, 401, "authentication required");
		return 0;
	}
	struct http_req_auth a;
	if (http_req_auth_parse(value, &a) != 0) {
		http_req_auth_clear(&a);
		KTRACE(http_auth, hc->id, "none", "malformed");
		auth_denied(hc, 400, "Malformed or unsupported Authorization header");
		return 0;
	}
	const char *method = a.scheme == HTTP_REQ_AUTH_BASIC ? "basic" : "bearer";
	int status;
	int ok = auth_check(req, &a, &status);
	http_req_auth_clear(&a);
	KTRACE(http_auth, hc->id, method, ok ? "ok" : status == POLICY_ERROR ? "error" : "denied");
	if (status == POLICY_ERROR)
		auth_denied(hc, 500, "try again later");
	else if (!ok)
		auth_denied(hc, 401, "invalid credentials");
	return ok;
}

/* --- dispatch -------------------------------------------------------------- */

/* 1: Host names this listener; else answered 403 (then closed). */
static int request_check_host(struct http_conn *hc, const char *host)
{
	if (!host || host_allowed(hc, host))
		return 1;
	hc->req.close = 1;
	char shown[300];
	http_req_escape(shown, sizeof(shown), host, strlen(host));
	http__error(hc, 403, "Host '%s' is not an address or name of this listener", shown);
	return 0;
}

static void request_dispatch(struct http_conn *hc)
{
	struct http_request *req = &hc->req;
	struct http_req *r = req->r;
	const char *path = r->path.data;
	KTRACE(http_request, hc->id, r->method_name, path);
	task_set_phase(hc->task, "Handling", NULL);
	if (!request_check_host(hc, r->host))
		return;
	const struct http_route *other = NULL;
	const struct http_route *rt = http_api__find(path, &other, r->method);
	if (!rt && other) {
		char allow[64];
		snprintf(allow, sizeof(allow), "Allow: %s\r\n",
			 http_method_str((enum http_method)other->method_id));
		char text[128];
		snprintf(text, sizeof(text), "method %s not allowed for %s (use %s)",
			 r->method_name, other->path,
			 http_method_str((enum http_method)other->method_id));
		http__error_extra(hc, 405, allow, text);
		return;
	}
	if (!rt) {
		http__error(hc, 404, "no such endpoint: %s", path);
		return;
	}
	if (!rt->open && !req->authorized && !request_authorize(hc, req))
		return;
	if (http_req_decode_body(r, hc->l->cfg.request_body_limit) != 0) {
		http__error(hc, r->status, "%s", r->error);
		return;
	}
	rt->fn(hc, req);
}

/* Feeds what was read to the parser and handles each event, one request
 * at a time: a handler that answers later (busy) stops reading. */
static void conn_process(struct http_conn *hc)
{
	if (hc->ws) {
		trace_smtp__on_data(hc);
		return;
	}
	while (!hc->busy && !hc->gone && !hc->conn.closing && !hc->ws) {
		size_t avail = buf_avail(&hc->conn.in), n = 0;
		if (!avail)
			break;
		int was_reading = http_req_in_progress(hc->parser);
		enum http_req_event ev =
		    http_req_feed(hc->parser, buf_rptr(&hc->conn.in), avail, &n);
		buf_consume(&hc->conn.in, n);
		if (!was_reading && (ev != HTTP_REQ_MORE || http_req_in_progress(hc->parser)))
			request_begin(hc);
		if (ev == HTTP_REQ_HEAD) {
			request_head(hc);
		} else if (ev == HTTP_REQ_DONE) {
			request_dispatch(hc);
		} else if (ev == HTTP_REQ_ERROR) {
			hc->req.close = 1;
			http__error(hc, hc->req.r->status, "%s", hc->req.r->error);
			return;
		}
	}
	if (hc->busy)
		conn_pause_read(&hc->conn);
	if (hc->ws && !hc->gone && buf_avail(&hc->conn.in))
		trace_smtp__on_data(hc); /* a frame sent right behind the upgrade request */
}

/* --- connections ----------------------------------------------------------- */

static void conn_timer_cb(uv_timer_t *t)
{
	struct http_conn *hc = t->data;
	struct task *prev = task_enter(hc->task);
	if (hc->in_request && !hc->busy) {
		hc->req.close = 1;
		http__error(hc, 408, "request not received in time");
	} else if (!hc->busy) {
		hconn_close(hc, "idle");
	}
	task_exit(hc->task, prev);
}

static void conn_arm_timer(struct http_conn *hc)
{
	if (hc->gone || hc->busy || hc->ws)
		return;
	uv_timer_start(&hc->timer, conn_timer_cb,
		       hc->reserved	? HTTP_RESERVED_TIMEOUT_MS
		       : hc->in_request ? HTTP_REQUEST_TIMEOUT_MS
					: HTTP_IDLE_TIMEOUT_MS,
		       0);
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
	http.nreserved -= hc->reserved;
	if (hc->client)
		hc->client->conns--;
	request_release(hc);
	http_req_parser_free(hc->parser);
	hc->parser = NULL;
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
	if (hc->ws)
		trace_smtp__detach(hc, reason);
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

/* 503 before reading anything: over the connection cap with no reserved
 * slot left, or over the per-client cap. */
static void conn_refuse_busy(struct http_conn *hc, const char *why)
{
	char body[160], head[200];
	int b = snprintf(body, sizeof(body), "{\"error\":\"%s\"}\n", why);
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
			 "Content-Length: %d\r\n" HTTP_RETRY_AFTER "Connection: close\r\n\r\n",
			 b);
	conn_write(&hc->conn, head, (size_t)n);
	conn_write(&hc->conn, body, (size_t)b);
	metrics_counter_add("total_connections_denied", "service", "http_listener", 1);
	KTRACE(http_limit, hc->id, hc->conn.peer, why);
	hconn_close(hc, why);
}

static void listener_accept(struct http_listener *l)
{
	struct http_conn *hc = xcalloc(1, sizeof(*hc));
	hc->l = l;
	hc->task = task_spawn("http_server", "", l->task ? l->task->id : 0);
	hc->id = hc->task->id;
	hc->parser = http_req_parser_new(l->cfg.request_body_limit);
	hc->req.r = http_req_current(hc->parser);
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
	hc->client = peertab_get(&http.clients, hc->conn.peer_family, hc->conn.peer_addr,
				 clock_mono_ns() / 1000000, 0);
	hc->client->conns++;
	size_t per_client = l->cfg.max_connections_per_client;
	if (per_client && hc->client->conns > per_client) {
		conn_refuse_busy(hc, "too many connections from your address");
		return;
	}
	if (http.nconns - http.nreserved > fdlimit_http_budget()) {
		/* over the cap: a reserved slot answers liveness and metrics only */
		if (http.nreserved >= FDLIMIT_HTTP_RESERVED) {
			conn_refuse_busy(hc, "too many connections");
			return;
		}
		hc->reserved = 1;
		http.nreserved++;
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
	int rc =
	    conn_listen(loop, &l->tcp, &ss, 128, listener_on_connection, l->addr, sizeof(l->addr));
	l->tcp.data = l;
	if (rc < 0) {
		snprintf(err, errlen, "start_http_listener: cannot listen on %s: %s", cfg->listen,
			 uv_strerror(rc));
		SSL_CTX_free(l->tls_ctx);
		uv_close((uv_handle_t *)&l->tcp, (uv_close_cb)free);
		return rc;
	}
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
			 "the http_server_validate_auth_* events still gate every request",
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
