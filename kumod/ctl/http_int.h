/* SPDX-License-Identifier: Apache-2.0 */
/* Private layout shared by the HTTP listener files (http.c, http_api.c,
 * http_inject.c). Never included from outside kumod/ctl/. */
#ifndef KUMOD_CTL_HTTP_INT_H
#define KUMOD_CTL_HTTP_INT_H

#include <http_parser.h>
#include <jansson.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <uv.h>

#include "base/buf.h"
#include "ctl/http.h"
#include "io/conn.h"
#include "proto/http_req.h"

struct task;
struct peer_entry;
struct trace_sub;

struct http_listener {
	uv_tcp_t tcp;
	struct http_listener_config cfg;
	struct task *task;
	SSL_CTX *tls_ctx; /* NULL without use_tls */
	char addr[64];
	size_t nconn;
	int closed; /* 1: close requested, 2: handle closed */
	struct http_listener *next;
};

/* The request being answered: the parsed request (owned by the
 * connection's parser) and what the listener adds to it. */
struct http_request {
	struct http_req *r;
	uint64_t start_ns;
	int close;	    /* answer with Connection: close, then close */
	int authorized;	    /* access checked from the head, before the body */
	size_t accounted;   /* Content-Length counted in the memory budget */
	char identity[160]; /* "trusted 127.0.0.1", "user alice", "bearer token" (audit) */
	/* how access was granted: 0 trusted host, else enum http_req_auth_scheme */
	int auth_scheme;
	char auth_user[HTTP_REQ_MAX_CREDENTIALS + 1]; /* the Basic user name, as sent */
};

struct http_conn {
	struct conn conn;
	uv_timer_t timer;
	int open_handles;
	struct http_listener *l;
	struct task *task;
	uint64_t id;
	struct http_req_parser *parser;
	struct http_request req;
	int in_request;		   /* a request head started and was not answered yet */
	int busy;		   /* the handler answers later (injection waits for the spool) */
	int gone;		   /* closing: async completions must not answer */
	int reserved;		   /* over the connection cap: liveness and metrics only */
	struct peer_entry *client; /* per-client-address counters */
	struct trace_sub *ws;	   /* upgraded to a trace websocket (trace_smtp.c) */
	struct http_conn *next, *prev;
};

/* KumoMTA's AuthInfo of req (peer_address, identities, groups), as the
 * http_message_generated event receives it. */
json_t *http__auth_info(const struct http_conn *hc, const struct http_request *req);

typedef void (*http_handler_fn)(struct http_conn *hc, struct http_request *req);

struct http_route {
	const char *path;
	int method_id; /* enum http_method */
	int open;      /* no access control (liveness) */
	http_handler_fn fn;
};

/* http_api.c: the route table. NULL when no route has that path. */
const struct http_route *http_api__find(const char *path, const struct http_route **other_method,
					int method_id);
/* The first key of obj not in the NULL-terminated allowed list, or NULL. */
static inline const char *http__json_unknown_key(json_t *obj, const char *const *allowed)
{
	return http_req_json_unknown_key(obj, allowed);
}
/* http_admin.c: the admin bounce, suspend, suspend-ready-q and
 * inspect-message endpoints. */
void http_admin__bounce(struct http_conn *hc, struct http_request *req);
void http_admin__bounce_list(struct http_conn *hc, struct http_request *req);
void http_admin__bounce_cancel(struct http_conn *hc, struct http_request *req);
void http_admin__suspend(struct http_conn *hc, struct http_request *req);
void http_admin__suspend_list(struct http_conn *hc, struct http_request *req);
void http_admin__suspend_cancel(struct http_conn *hc, struct http_request *req);
void http_admin__suspend_ready_q(struct http_conn *hc, struct http_request *req);
void http_admin__suspend_ready_q_list(struct http_conn *hc, struct http_request *req);
void http_admin__suspend_ready_q_cancel(struct http_conn *hc, struct http_request *req);
void http_admin__inspect_message(struct http_conn *hc, struct http_request *req);
void http_admin__trace_smtp_server(struct http_conn *hc, struct http_request *req);
void http_admin__trace_smtp_client(struct http_conn *hc, struct http_request *req);
/* http_inject.c: POST /api/inject/v1. */
void http_inject__handle(struct http_conn *hc, struct http_request *req);

/* http.c: answers. Each request gets exactly one answer; a handler that
 * cannot answer at once sets hc->busy and answers later, finding the
 * connection again by id (it may be gone by then). */
void http__respond(struct http_conn *hc, int status, const char *content_type, const char *body,
		   size_t len);
/* As http__respond, with extra header lines ("Name: v\r\n"). */
void http__respond_extra(struct http_conn *hc, int status, const char *content_type,
			 const char *body, size_t len, const char *extra);
/* Answers with the JSON value (reference stolen). */
void http__respond_json(struct http_conn *hc, int status, json_t *j);
/* Answers {"error": "<text>"} with extra header lines ("Name: v\r\n"). */
void http__error_extra(struct http_conn *hc, int status, const char *extra, const char *text);
/* Answers {"error": "<text>"}. */
void http__error(struct http_conn *hc, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Answers 101 with the extra header lines and hands the connection to
 * the websocket ws: its input goes to trace_smtp__on_data(), no timer. */
void http__upgrade(struct http_conn *hc, const char *extra, struct trace_sub *ws);
/* Closes the connection (after what is queued is sent). */
void http__close(struct http_conn *hc, const char *reason);
/* The live connection with that id, or NULL. */
struct http_conn *http__conn_lookup(uint64_t id);
/* Decoded query parameter into out (NUL-terminated); 1 found, 0 absent,
 * -1 too long or badly encoded. */
int http__query_get(const struct http_request *req, const char *key, char *out, size_t outlen);
/* The request body as a JSON object: on failure answers (415 without
 * Content-Type: application/json, 400 syntax, 422 not an object) and
 * returns NULL. New reference. */
json_t *http__json_body(struct http_conn *hc, struct http_request *req);
/* The listener hostname a request came in on. */
const struct http_listener_config *http__config(const struct http_conn *hc);

#endif
