/* SPDX-License-Identifier: Apache-2.0 */
/* traffic-gen HTTP inject driver: each client keeps one HTTP/1.1
 * keep-alive connection and POSTs batches of recipients to
 * /api/inject/v1 (kumo-compat §10), one request at a time. A minimal
 * response reader (status line, Content-Length body) is enough for the
 * JSON replies of the inject API. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "io/conn.h"
#include "ktrace.h"
#include "tg.h"

#define HTTP_MAX_HEAD (64u * 1024)
#define HTTP_MAX_BODY (16u << 20)
#define HTTP_MAX_RETRIES 10

enum http_state {
	HTTP_IDLE = 0,
	HTTP_CONNECTING,
	HTTP_READY,
	HTTP_REQUEST,
	HTTP_CLOSING,
};

struct tg_http {
	struct tg_client base;
	struct conn conn;
	uv_timer_t timer;
	struct task *task;
	enum http_state state;
	int handles;   /* open libuv handles (timer, conn) */
	int conn_live; /* conn handle initialised and not closed */
	int waiting;   /* timer used for a throttle/reconnect wait */
	int pending;   /* batch claimed, waiting for its throttle slot */
	int stopped, finished, freed;
	int reconnect;
	int close_after; /* server said Connection: close */
	unsigned retries;
	uint64_t batch; /* recipients in the current request */
	uint64_t t0;
	struct buf req, body, hdr;
	char sender[320], rcpt[320];
};

static const char *const http_phase[] = {"Idle", "Connecting", "Ready", "Request", "Closing"};

static void http_next(struct tg_http *h);
static void http_send(struct tg_http *h);
static void http_connect(struct tg_http *h);

static void http_set_state(struct tg_http *h, enum http_state s)
{
	h->state = s;
	task_set_phase(h->task, http_phase[s], s == HTTP_REQUEST ? "peer_read" : NULL);
}

static void http_finish(struct tg_http *h, const char *why)
{
	if (h->finished)
		return;
	h->finished = h->stopped = 1;
	KTRACE(tg_client_stop, h->base.idx, why);
	tg_client_finished(h->base.tg);
}

static void http_maybe_free(struct tg_http *h)
{
	if (!h->freed || h->handles)
		return;
	buf_free(&h->req);
	buf_free(&h->body);
	buf_free(&h->hdr);
	task_close(h->task);
	free(h);
}

/* Ends the connection; on_closed decides what comes next. */
static void http_drop(struct tg_http *h, int abort)
{
	uv_timer_stop(&h->timer);
	h->waiting = 0;
	if (!h->conn_live || h->state == HTTP_CLOSING)
		return;
	if (h->state == HTTP_REQUEST) {
		tg_unclaim(h->base.tg, h->batch); /* outcome unknown: not counted */
		h->batch = 0;
	}
	http_set_state(h, HTTP_CLOSING);
	if (abort)
		conn_abort(&h->conn);
	else
		conn_close(&h->conn);
}

static void http_timer_cb(uv_timer_t *t)
{
	struct tg_http *h = t->data;
	struct task *prev = task_enter(h->task);
	if (h->waiting) {
		h->waiting = 0;
		if (!h->conn_live) {
			http_connect(h);
		} else if (h->pending) {
			h->pending = 0;
			if (h->stopped || tg_stopping(h->base.tg)) {
				tg_unclaim(h->base.tg, h->batch);
				h->batch = 0;
				http_drop(h, 0);
			} else {
				http_send(h); /* claim and slot were kept */
			}
		}
	} else {
		/* request or connect timed out */
		h->reconnect = !h->stopped;
		http_drop(h, 1);
	}
	task_exit(h->task, prev);
}

static void http_build(struct tg_http *h)
{
	struct tg *tg = h->base.tg;
	tg_make_message(tg, h->sender, sizeof(h->sender), h->rcpt, sizeof(h->rcpt), &h->hdr);
	struct buf *b = &h->body;
	buf_reset(b);
	buf_appends(b, "{\"envelope_sender\":\"");
	tg_json_escape(b, h->sender, strlen(h->sender));
	buf_appends(b, "\",\"content\":\"");
	tg_json_escape(b, h->hdr.data, h->hdr.len);
	buf_append(b, tg->body_json.data, tg->body_json.len);
	buf_appends(b, "\",\"recipients\":[");
	for (uint64_t i = 0; i < h->batch; i++) {
		if (i)
			tg_make_recipient(tg, h->rcpt, sizeof(h->rcpt));
		buf_appends(b, i ? ",{\"email\":\"" : "{\"email\":\"");
		tg_json_escape(b, h->rcpt, strlen(h->rcpt));
		buf_appends(b, "\"}");
	}
	buf_appendc(b, ']');
	if (tg->o.http_defer_spool)
		buf_appends(b, ",\"deferred_spool\":true");
	if (tg->o.http_defer_generation)
		buf_appends(b, ",\"deferred_generation\":true");
	buf_appendc(b, '}');
	buf_reset(&h->req);
	buf_printf(&h->req,
		   "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: traffic-gen\r\n"
		   "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
		   tg->http_path, tg->hostport, b->len);
}

static void http_send(struct tg_http *h)
{
	struct tg *tg = h->base.tg;
	http_build(h);
	conn_write(&h->conn, h->req.data, h->req.len);
	conn_write(&h->conn, h->body.data, h->body.len);
	conn_flush(&h->conn);
	h->t0 = clock_mono_ns();
	http_set_state(h, HTTP_REQUEST);
	uv_timer_start(&h->timer, http_timer_cb, tg->o.timeout_ms, 0);
}

static void http_next(struct tg_http *h)
{
	struct tg *tg = h->base.tg;
	if (h->stopped || tg_stopping(tg) || !(h->batch = tg_claim(tg, tg->o.http_batch))) {
		h->stopped = 1;
		http_drop(h, 0);
		return;
	}
	uint64_t delay = tg_throttle_delay(tg, h->batch);
	if (delay >= 1000000) {
		h->pending = h->waiting = 1;
		task_set_phase(h->task, "Throttled", "timer");
		uv_timer_start(&h->timer, http_timer_cb, delay / 1000000, 0);
		return;
	}
	http_send(h);
}

/* Accounts one complete response. */
static void http_account(struct tg_http *h, int status, const char *body, size_t len)
{
	struct tg *tg = h->base.tg;
	uint64_t ok = 0, bad = h->batch;
	if (status == 200) {
		json_error_t jerr;
		json_t *j = json_loadb(body, len, 0, &jerr);
		json_t *s = j ? json_object_get(j, "success_count") : NULL;
		json_t *f = j ? json_object_get(j, "fail_count") : NULL;
		if (json_is_integer(s)) {
			ok = (uint64_t)json_integer_value(s);
			bad = json_is_integer(f) ? (uint64_t)json_integer_value(f) : h->batch - ok;
		} else {
			ok = h->batch; /* 200 without counts: all taken */
			bad = 0;
		}
		json_decref(j);
	}
	KTRACE(tg_http_done, h->base.idx, status, ok, bad);
	tg->sent += ok;
	tg->failed += bad;
	tg_count_reply(tg, status, ok + bad);
	if (ok)
		hist_record(&tg->lat, clock_mono_ns() - h->t0);
	h->batch = 0;
	h->retries = 0;
	if (bad && !tg->o.keep_going) {
		tg_warn(tg, "client %u: inject failed: HTTP %d %.*s", h->base.idx, status,
			(int)(len > 200 ? 200 : len), body);
		h->stopped = 1;
	}
}

/* 1 = a response was handled, 0 = need more, -1 = garbage. */
static int http_parse(struct tg_http *h)
{
	struct buf *in = &h->conn.in;
	const char *p = buf_rptr(in);
	size_t avail = buf_avail(in);
	const char *eoh = memmem(p, avail, "\r\n\r\n", 4);
	if (!eoh)
		return avail > HTTP_MAX_HEAD ? -1 : 0;
	int minor, status;
	if (sscanf(p, "HTTP/1.%d %d", &minor, &status) != 2 || status < 100 || status > 599)
		return -1;
	size_t head = (size_t)(eoh - p) + 4, clen = 0;
	int close_conn = minor == 0;
	for (const char *l = memchr(p, '\n', head) + 1; l < eoh; l = memchr(l, '\n', head) + 1) {
		if (!strncasecmp(l, "Content-Length:", 15))
			clen = strtoul(l + 15, NULL, 10);
		else if (!strncasecmp(l, "Connection:", 11))
			close_conn = strncasecmp(l + 11 + strspn(l + 11, " "), "close", 5) == 0;
		else if (!strncasecmp(l, "Transfer-Encoding:", 18))
			return -1; /* the inject API answers with Content-Length */
	}
	if (clen > HTTP_MAX_BODY)
		return -1;
	if (avail < head + clen)
		return 0;
	uv_timer_stop(&h->timer);
	if (status >= 100 && status < 200) { /* 100 Continue: skip */
		buf_consume(in, head);
		return 1;
	}
	http_account(h, status, p + head, clen);
	buf_consume(in, head + clen);
	h->close_after = close_conn;
	http_set_state(h, HTTP_READY);
	return 1;
}

static void http_on_data(struct conn *c)
{
	struct tg_http *h = c->owner;
	while (h->state == HTTP_REQUEST && buf_avail(&c->in)) {
		int rc = http_parse(h);
		if (rc == 0)
			return;
		if (rc < 0) {
			h->base.tg->conn_errors++;
			tg_warn(h->base.tg, "client %u: malformed HTTP response", h->base.idx);
			h->stopped = !h->base.tg->o.keep_going;
			h->reconnect = !h->stopped;
			http_drop(h, 1);
			return;
		}
	}
	if (h->state != HTTP_READY)
		return;
	if (h->close_after) {
		h->reconnect = !h->stopped;
		http_drop(h, 0);
		return;
	}
	http_next(h);
}

static void http_on_eof(struct conn *c, int err)
{
	struct tg_http *h = c->owner;
	h->reconnect = !h->stopped && h->state != HTTP_CLOSING;
	http_drop(h, 1);
}

static void http_on_connect(struct conn *c, int status)
{
	struct tg_http *h = c->owner;
	struct tg *tg = h->base.tg;
	if (h->state != HTTP_CONNECTING)
		return;
	uv_timer_stop(&h->timer);
	if (status < 0) {
		if (!tg->ever_connected) {
			tg_fatal(tg, "cannot connect to %s: %s", tg->hostport, uv_strerror(status));
		} else {
			h->reconnect = !h->stopped;
		}
		http_drop(h, 1);
		return;
	}
	tg->ever_connected = 1;
	tg->open_conns++;
	h->retries = 0;
	conn_start_read(c);
	http_set_state(h, HTTP_READY);
	http_next(h);
}

static void http_on_closed(struct conn *c)
{
	struct tg_http *h = c->owner;
	struct tg *tg = h->base.tg;
	h->conn_live = 0;
	h->handles--;
	if (h->freed) {
		http_maybe_free(h);
		return;
	}
	if (c->local[0] && tg->open_conns)
		tg->open_conns--;
	http_set_state(h, HTTP_IDLE);
	if (!h->reconnect || h->stopped || tg_stopping(tg)) {
		http_finish(h, "done");
		return;
	}
	h->reconnect = 0;
	tg->reconnects++;
	if (++h->retries > HTTP_MAX_RETRIES) {
		tg->conn_errors++;
		http_finish(h, "too many reconnects");
		return;
	}
	h->waiting = 1;
	uv_timer_start(&h->timer, http_timer_cb, h->retries > 1 ? 100 : 1, 0);
}

static const struct conn_handler http_conn_handler = {
    .on_data = http_on_data,
    .on_eof = http_on_eof,
    .on_closed = http_on_closed,
    .on_connect = http_on_connect,
};

static void http_connect(struct tg_http *h)
{
	struct tg *tg = h->base.tg;
	http_set_state(h, HTTP_CONNECTING);
	int rc = conn_connect(&h->conn, tg->loop, (const struct sockaddr *)&tg->addr,
			      &http_conn_handler, h, h->task);
	if (h->conn.tcp.loop) {
		h->conn_live = 1;
		h->handles++;
	}
	if (rc < 0) {
		tg_fatal(tg, "cannot connect to %s: %s", tg->hostport, uv_strerror(rc));
		h->stopped = 1;
		http_drop(h, 1);
		if (!h->conn_live)
			http_finish(h, "connect failed");
		return;
	}
	uv_timer_start(&h->timer, http_timer_cb,
		       tg->o.timeout_ms < 10000 ? tg->o.timeout_ms : 10000, 0);
}

static void http_start(struct tg_client *cl)
{
	http_connect((struct tg_http *)cl);
}

static void http_stop(struct tg_client *cl)
{
	struct tg_http *h = (struct tg_http *)cl;
	h->stopped = 1;
	if (h->finished)
		return;
	if (!h->conn_live) {
		uv_timer_stop(&h->timer);
		h->waiting = 0;
		http_finish(h, "stopped");
		return;
	}
	if (h->pending) {
		h->pending = 0;
		tg_unclaim(cl->tg, h->batch);
		h->batch = 0;
		h->state = HTTP_READY;
	}
	if (h->state == HTTP_READY || h->state == HTTP_CONNECTING || cl->tg->stop == TG_STOP_FATAL)
		http_drop(h, h->state != HTTP_READY);
}

static void http_timer_closed(uv_handle_t *hd)
{
	struct tg_http *h = hd->data;
	h->handles--;
	http_maybe_free(h);
}

static void http_free(struct tg_client *cl)
{
	struct tg_http *h = (struct tg_http *)cl;
	h->freed = 1;
	if (h->conn_live && h->state != HTTP_CLOSING) {
		h->state = HTTP_CLOSING;
		conn_abort(&h->conn);
	}
	uv_close((uv_handle_t *)&h->timer, http_timer_closed);
}

static int http_done(const struct tg_client *cl)
{
	return ((const struct tg_http *)cl)->finished;
}

static const struct tg_client_ops http_ops = {
    .start = http_start,
    .stop = http_stop,
    .free = http_free,
    .done = http_done,
};

struct tg_client *tg_http_client_new(struct tg *tg, unsigned idx)
{
	struct tg_http *h = xcalloc(1, sizeof(*h));
	h->base.ops = &http_ops;
	h->base.tg = tg;
	h->base.idx = idx;
	char name[32];
	snprintf(name, sizeof(name), "http-client-%u", idx);
	h->task = task_spawn("traffic_gen_http", name, tg->task ? tg->task->id : 0);
	buf_init(&h->req);
	buf_init(&h->body);
	buf_init(&h->hdr);
	uv_timer_init(tg->loop, &h->timer);
	h->timer.data = h;
	h->handles = 1;
	return &h->base;
}
