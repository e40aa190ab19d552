/* SPDX-License-Identifier: Apache-2.0 */
/* The throttle Redis connection (io/redis.h): hiredis async + libuv. */
#include "io/redis.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/async.h>
#include <uv.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "io/loop.h"
#include "proto/redis_url.h"
#include "ktrace.h"

#define RECONNECT_MS 1000u
#define WATCHDOG_MS 250u
#define DEFAULT_CONNECT_TIMEOUT_MS 30000u
#define DEFAULT_RESPONSE_TIMEOUT_MS 10000u
/* A reconnection attempt not through within this is abandoned and retried
 * (a host that drops packets). */
#define RECONNECT_DEADLINE_MS 2000u

struct redis_op {
	redis_reply_fn fn;
	void *ud;
	const char *operation;
	uint64_t start_ns;
	struct redis_op *next, *prev;
};

enum redis_state {
	RS_DOWN = 0,
	RS_CONNECTING,
	RS_READY
};

static struct {
	int enabled, has_cell, stopping;
	char url[512];
	struct redis_url u;
	uint64_t response_timeout_ms;
	redisAsyncContext *ac;
	enum redis_state state;
	uint64_t connecting_since_ns, down_since_ns, stop_since_ns;
	int outage_logged;
	char last_error[512];
	struct redis_op *head, *tail; /* pending, oldest first (replies come in order) */
	uv_timer_t *timer;	      /* reconnect and reply watchdog */
	struct task *task;
} RC;

static const struct metrics_decl redis_metrics[] = {
    {"redis_operation_latency", METRICS_HISTOGRAM, "operation",
     "Latency of a command to the throttle Redis (KumoMTA's name; one label here: operation "
     "`script`, `query`), successful or not."},
    {"redis_errors", METRICS_COUNTER, "kind",
     "Throttle Redis failures: `connect` (could not connect), `lost` (connection dropped), "
     "`timeout` (no reply within response_timeout), `reply` (an error reply)."},
};

void redis_declare_metrics(void)
{
	metrics_declare(redis_metrics, sizeof(redis_metrics) / sizeof(redis_metrics[0]));
}

const char *redis_last_error(void)
{
	return RC.last_error[0] ? RC.last_error : "redis is not connected";
}

int redis_enabled(void)
{
	return RC.enabled;
}

int redis_has_cell(void)
{
	return RC.has_cell;
}

const char *redis_url(void)
{
	return RC.url;
}

/* hiredis on libuv. Debian's hiredis 0.14 ships adapters/libuv.h, but its
 * poll callback drops an error status (a connection reset, seen as
 * POLLERR, after which libuv stops the poll) without telling hiredis: the
 * connection then hangs until the reply watchdog. This glue is the same
 * shape (hiredis's ev hooks on one uv_poll_t) and treats a poll error as
 * the end of the connection. */
struct redis_glue {
	redisAsyncContext *ac;
	uv_poll_t poll;
	int events;
};

static void went_down(const char *why, const char *kind);

static void glue_poll_cb(uv_poll_t *h, int status, int events)
{
	struct redis_glue *g = h->data;
	if (!g->ac)
		return;
	if (status < 0) { /* libuv stopped the poll: hiredis reads the socket's error */
		redisAsyncContext *ac = g->ac;
		if (!(ac->c.flags & REDIS_CONNECTED))
			redisAsyncHandleWrite(ac); /* connect's outcome (ECONNREFUSED...) */
		else
			redisAsyncHandleRead(ac);
		if (g->ac) { /* hiredis saw nothing wrong, but nothing watches it now */
			if (ac == RC.ac)
				went_down(uv_strerror(status), "lost");
			redisAsyncFree(ac);
		}
		return;
	}
	if (events & UV_READABLE)
		redisAsyncHandleRead(g->ac);
	if (g->ac && (events & UV_WRITABLE))
		redisAsyncHandleWrite(g->ac);
}

static void glue_update(struct redis_glue *g, int add, int ev)
{
	if (add)
		g->events |= ev;
	else
		g->events &= ~ev;
	if (g->events)
		uv_poll_start(&g->poll, g->events, glue_poll_cb);
	else
		uv_poll_stop(&g->poll);
}

static void glue_add_read(void *p)
{
	glue_update(p, 1, UV_READABLE);
}

static void glue_del_read(void *p)
{
	glue_update(p, 0, UV_READABLE);
}

static void glue_add_write(void *p)
{
	glue_update(p, 1, UV_WRITABLE);
}

static void glue_del_write(void *p)
{
	glue_update(p, 0, UV_WRITABLE);
}

static void glue_close_cb(uv_handle_t *h)
{
	free(h->data);
}

static void glue_cleanup(void *p)
{
	struct redis_glue *g = p;
	g->ac = NULL;
	uv_close((uv_handle_t *)&g->poll, glue_close_cb);
}

static int glue_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
	struct redis_glue *g = xcalloc(1, sizeof(*g));
	if (uv_poll_init_socket(loop, &g->poll, ac->c.fd) != 0) {
		free(g);
		return -1;
	}
	g->ac = ac;
	g->poll.data = g;
	ac->ev.data = g;
	ac->ev.addRead = glue_add_read;
	ac->ev.delRead = glue_del_read;
	ac->ev.addWrite = glue_add_write;
	ac->ev.delWrite = glue_del_write;
	ac->ev.cleanup = glue_cleanup;
	return 0;
}

static void set_phase(const char *phase, const char *detail)
{
	if (RC.task)
		task_set_phase(RC.task, phase, NULL);
	KTRACE(redis_state, RC.url, phase, detail ? detail : "");
}

static void op_unlink(struct redis_op *op)
{
	if (op->prev)
		op->prev->next = op->next;
	else
		RC.head = op->next;
	if (op->next)
		op->next->prev = op->prev;
	else
		RC.tail = op->prev;
}

/* Connection is gone (failed, lost, timed out): log once per outage. */
static void went_down(const char *why, const char *kind)
{
	snprintf(RC.last_error, sizeof(RC.last_error), "redis %.200s: %.250s", RC.url, why);
	metrics_counter_add("redis_errors", "kind", kind, 1);
	if (RC.state == RS_READY || !RC.down_since_ns)
		RC.down_since_ns = clock_mono_ns();
	RC.state = RS_DOWN;
	RC.ac = NULL;
	set_phase("Down", why);
	if (!RC.outage_logged && !RC.stopping) {
		RC.outage_logged = 1;
		log_warn(
		    "kumod::redis",
		    "redis throttles: %s is unavailable (%s); shared throttles and connection "
		    "limits wait until it is back (retrying every %u ms; logged once per outage)",
		    RC.url, why, RECONNECT_MS);
	}
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	if (ac != RC.ac)
		return;
	if (status != REDIS_OK) { /* hiredis frees ac after this */
		went_down(ac->errstr[0] ? ac->errstr : "connect failed", "connect");
		return;
	}
	RC.state = RS_READY;
	RC.last_error[0] = '\0';
	char detail[96] = "";
	if (RC.outage_logged) {
		uint64_t ms = (clock_mono_ns() - RC.down_since_ns) / 1000000u;
		snprintf(detail, sizeof(detail), "back after %" PRIu64 " ms", ms);
		log_info("kumod::redis",
			 "redis throttles: %s is reachable again after %" PRIu64 " ms", RC.url, ms);
	}
	RC.outage_logged = 0;
	RC.down_since_ns = 0;
	set_phase("Ready", detail);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	if (ac != RC.ac)
		return;
	went_down(status == REDIS_OK ? "closed" : (ac->errstr[0] ? ac->errstr : "connection lost"),
		  "lost");
}

static void on_reply(redisAsyncContext *ac, void *r, void *priv)
{
	(void)ac;
	struct redis_op *op = priv;
	redisReply *reply = r;
	op_unlink(op);
	uint64_t lat = clock_mono_ns() - op->start_ns;
	metrics_histogram_observe("redis_operation_latency", "operation", op->operation,
				  (double)lat / 1e9);
	const char *err = NULL;
	if (!reply)
		err = RC.last_error[0] ? RC.last_error : "redis connection lost";
	else if (reply->type == REDIS_REPLY_ERROR)
		metrics_counter_add("redis_errors", "kind", "reply", 1);
	KTRACE(redis_reply, op->operation,
	       !reply || reply->type == REDIS_REPLY_ERROR ? "error" : "ok", lat / 1000u,
	       err				  ? err
	       : reply->type == REDIS_REPLY_ERROR ? reply->str
						  : "");
	if (op->fn && RC.task) {
		struct task *t = RC.task, *prev = task_enter(t);
		op->fn(op->ud, reply, err);
		task_exit(t, prev);
	} else if (op->fn) {
		op->fn(op->ud, reply, err);
	}
	free(op);
}

static void auth_reply(redisAsyncContext *ac, void *r, void *priv)
{
	(void)ac;
	redisReply *reply = r;
	if (reply && reply->type == REDIS_REPLY_ERROR)
		log_warn("kumod::redis", "redis throttles: %s %s: %s", RC.url, (const char *)priv,
			 reply->str);
}

static void start_connect(void)
{
	redisAsyncContext *ac = redisAsyncConnect(RC.u.host, RC.u.port);
	if (!ac) {
		went_down("out of memory", "connect");
		return;
	}
	if (ac->err) {
		char why[200];
		snprintf(why, sizeof(why), "%s", ac->errstr);
		redisAsyncFree(ac);
		went_down(why, "connect");
		return;
	}
	if (glue_attach(ac, kumod_loop()) != 0) {
		redisAsyncFree(ac);
		went_down("cannot watch the socket", "connect");
		return;
	}
	RC.ac = ac;
	RC.state = RS_CONNECTING;
	RC.connecting_since_ns = clock_mono_ns();
	set_phase("Connecting", NULL);
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	/* queued before any command: they go first on the wire */
	if (RC.u.password[0]) {
		if (RC.u.user[0])
			redisAsyncCommand(ac, auth_reply, "AUTH", "AUTH %s %s", RC.u.user,
					  RC.u.password);
		else
			redisAsyncCommand(ac, auth_reply, "AUTH", "AUTH %s", RC.u.password);
	}
	if (RC.u.db)
		redisAsyncCommand(ac, auth_reply, "SELECT", "SELECT %d", RC.u.db);
	/* hiredis learns the outcome of a non-blocking connect once it has
	 * something to write: a command is always queued */
	redisAsyncCommand(ac, auth_reply, "PING", "PING");
}

/* Every WATCHDOG_MS: reconnects when down; drops a connection whose
 * oldest command (or connect) is older than response_timeout. */
static void timer_close_cb(uv_handle_t *h);

static void timer_cb(uv_timer_t *t)
{
	(void)t;
	if (RC.stopping) { /* shutdown: the last releases had 1 s to go out */
		if (RC.ac && clock_mono_ns() - RC.stop_since_ns > 1000000000ull) {
			redisAsyncContext *ac = RC.ac;
			RC.ac = NULL;
			redisAsyncFree(ac);
		}
		if (!RC.ac && RC.timer) {
			uv_close((uv_handle_t *)RC.timer, timer_close_cb);
			RC.timer = NULL;
		}
		return;
	}
	uint64_t now = clock_mono_ns(), limit = RC.response_timeout_ms * 1000000u;
	if (RC.state == RS_DOWN) {
		static uint64_t last_try;
		if (now - last_try >= RECONNECT_MS * 1000000ull) {
			last_try = now;
			start_connect();
		}
		return;
	}
	int stalled = RC.head && now - RC.head->start_ns > limit;
	uint64_t cl = RECONNECT_DEADLINE_MS < RC.response_timeout_ms ? RECONNECT_DEADLINE_MS
								     : RC.response_timeout_ms;
	int slow_connect =
	    RC.state == RS_CONNECTING && now - RC.connecting_since_ns > cl * 1000000u;
	if (stalled || slow_connect) {
		redisAsyncContext *ac = RC.ac;
		went_down(stalled ? "no reply within response_timeout" : "connect timed out",
			  "timeout");
		/* pending commands fail (reply NULL); callbacks see RC.ac != ac */
		redisAsyncFree(ac);
	}
}

int redis_configure(const struct redis_config *cfg, char *err, size_t errlen)
{
	if (RC.enabled) {
		snprintf(err, errlen, "redis throttles are already configured (once per process)");
		return -1;
	}
	if (redis_url_parse(cfg->url, &RC.u) != 0) {
		snprintf(err, errlen,
			 "invalid redis URL '%s': expected "
			 "redis://[user][:password@]host[:port][/db]",
			 cfg->url);
		return -1;
	}
	snprintf(RC.url, sizeof(RC.url), "redis://%s%s%s:%d/", strchr(RC.u.host, ':') ? "[" : "",
		 RC.u.host, strchr(RC.u.host, ':') ? "]" : "", RC.u.port);
	uint64_t cto =
	    cfg->connect_timeout_ms ? cfg->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
	RC.response_timeout_ms =
	    cfg->response_timeout_ms ? cfg->response_timeout_ms : DEFAULT_RESPONSE_TIMEOUT_MS;
	struct timeval tv = {(time_t)(cto / 1000u), (suseconds_t)(cto % 1000u) * 1000};
	/* KumoMTA checks the server at configure time (init fails when down) */
	redisContext *c = redisConnectWithTimeout(RC.u.host, RC.u.port, tv);
	if (!c || c->err) {
		snprintf(err, errlen, "cannot connect to %s: %s", RC.url,
			 c ? c->errstr : "out of memory");
		if (c)
			redisFree(c);
		return -1;
	}
	redisSetTimeout(c, tv);
	redisReply *r = NULL;
	if (RC.u.password[0]) {
		r = RC.u.user[0] ? redisCommand(c, "AUTH %s %s", RC.u.user, RC.u.password)
				 : redisCommand(c, "AUTH %s", RC.u.password);
		if (!r || r->type == REDIS_REPLY_ERROR) {
			snprintf(err, errlen, "%s AUTH: %s", RC.url, r ? r->str : c->errstr);
			goto fail;
		}
		freeReplyObject(r);
	}
	if (RC.u.db) {
		r = redisCommand(c, "SELECT %d", RC.u.db);
		if (!r || r->type == REDIS_REPLY_ERROR) {
			snprintf(err, errlen, "%s SELECT %d: %s", RC.url, RC.u.db,
				 r ? r->str : c->errstr);
			goto fail;
		}
		freeReplyObject(r);
	}
	r = redisCommand(c, "PING");
	if (!r || r->type == REDIS_REPLY_ERROR) {
		snprintf(err, errlen, "%s PING: %s", RC.url, r ? r->str : c->errstr);
		goto fail;
	}
	freeReplyObject(r);
	/* KumoMTA's detection: COMMAND INFO CL.THROTTLE has a non-nil entry */
	r = redisCommand(c, "COMMAND INFO CL.THROTTLE");
	RC.has_cell = 0;
	if (r && r->type == REDIS_REPLY_ARRAY)
		for (size_t i = 0; i < r->elements; i++)
			if (r->element[i]->type != REDIS_REPLY_NIL)
				RC.has_cell = 1;
	if (r)
		freeReplyObject(r);
	redisFree(c);
	RC.enabled = 1;
	RC.task = task_spawn("redis_throttles", RC.url, 0);
	task_set_field(RC.task, "url", RC.url);
	task_set_field(RC.task, "backend", RC.has_cell ? "redis-cell" : "gcra-script");
	RC.timer = xcalloc(1, sizeof(*RC.timer));
	uv_timer_init(kumod_loop(), RC.timer);
	uv_timer_start(RC.timer, timer_cb, WATCHDOG_MS, WATCHDOG_MS);
	uv_unref((uv_handle_t *)RC.timer);
	start_connect();
	return 0;
fail:
	if (r)
		freeReplyObject(r);
	redisFree(c);
	return -1;
}

struct redis_op *redis_command(const char *operation, int argc, const char **argv,
			       const size_t *lens, redis_reply_fn fn, void *ud)
{
	if (!RC.ac || RC.stopping)
		return NULL;
	struct redis_op *op = xcalloc(1, sizeof(*op));
	op->fn = fn;
	op->ud = ud;
	op->operation = operation;
	op->start_ns = clock_mono_ns();
	if (redisAsyncCommandArgv(RC.ac, on_reply, op, argc, argv, lens) != REDIS_OK) {
		free(op);
		return NULL;
	}
	op->prev = RC.tail;
	if (RC.tail)
		RC.tail->next = op;
	else
		RC.head = op;
	RC.tail = op;
	return op;
}

void redis_op_cancel(struct redis_op *op)
{
	if (op)
		op->fn = NULL;
}

void *redis_op_ud(const struct redis_op *op)
{
	return op->ud;
}

static void timer_close_cb(uv_handle_t *h)
{
	free(h);
}

void redis_shutdown(void)
{
	if (!RC.enabled || RC.stopping)
		return;
	RC.stopping = 1;
	RC.stop_since_ns = clock_mono_ns();
	if (RC.ac && RC.state == RS_READY) {
		/* after the pending replies (lease releases), bounded by the timer */
		redisAsyncDisconnect(RC.ac);
		if (RC.timer)
			uv_ref((uv_handle_t *)RC.timer);
	} else {
		if (RC.ac) { /* not connected: nothing to flush */
			redisAsyncContext *ac = RC.ac;
			RC.ac = NULL;
			redisAsyncFree(ac);
		}
		if (RC.timer)
			uv_close((uv_handle_t *)RC.timer, timer_close_cb);
		RC.timer = NULL;
	}
	if (RC.task)
		task_close(RC.task);
	RC.task = NULL;
}
