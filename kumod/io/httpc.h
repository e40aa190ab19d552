/* SPDX-License-Identifier: Apache-2.0 */
/* Asynchronous HTTP client on kumod's loop (libcurl's multi interface
 * driven by uv_poll and one uv_timer): nothing here blocks the loop thread.
 * One multi handle per loop owns the connection cache, so keep-alive
 * connections are reused across requests. Each request is a task in the
 * registry (kind "http_client", phases Resolving, Connecting, Sending,
 * Waiting, Receiving) and fires http_client_start / http_client_done.
 * Callers: kumod/lua/lua_http.c (kumo.http). Completions are found by
 * request id; a cancelled request never calls back. */
#ifndef KUMOD_IO_HTTPC_H
#define KUMOD_IO_HTTPC_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

/* Largest response body kept; a bigger one fails the request. */
#define HTTPC_MAX_BODY (64u * 1024 * 1024)

struct httpc_req {
	const char *method;	    /* "GET", "POST", "PUT", ... */
	const char *url;	    /* http:// or https:// only */
	const char *const *headers; /* "Name: value" lines */
	size_t nheaders;
	const char *body; /* NULL: none */
	size_t body_len;
	const char *user_agent;	       /* NULL: libcurl sends none */
	uint64_t timeout_ms;	       /* whole request; 0: none */
	uint64_t connect_timeout_ms;   /* 0: libcurl's default */
	uint64_t pool_idle_timeout_ms; /* idle connection reuse limit; 0: default */
	int insecure;		       /* 1: no certificate or host name check */
	uint64_t parent_task;	       /* task id the request belongs to (0: none) */
};

struct httpc_resp {
	int status;	    /* HTTP status; 0 when the request failed */
	char error[256];    /* why it failed ("" when status > 0) */
	struct buf headers; /* header lines of the final response, CRLF-separated */
	struct buf body;
	uint64_t duration_us;
};

/* resp is valid during the call; the callback may take its buffers (leave
 * them buf_init()ed) and httpc frees whatever remains. */
typedef void (*httpc_done_fn)(uint64_t id, struct httpc_resp *resp, void *arg);

/* Starts req on kumod's loop (everything in req is copied). Returns 0 and
 * the request id in *id, then done is called exactly once from the loop;
 * or -errno (bad URL scheme: -EINVAL) and done is never called. */
int httpc_start(const struct httpc_req *req, httpc_done_fn done, void *arg, uint64_t *id);
/* Abandons a running request: its callback is never called. Unknown ids
 * (finished already) are ignored. */
void httpc_cancel(uint64_t id);
/* Requests in flight. */
size_t httpc_inflight(void);
/* Cancels everything and releases libcurl (shutdown, tests). */
void httpc_shutdown(void);

#endif
