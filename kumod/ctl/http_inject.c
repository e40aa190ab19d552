/* SPDX-License-Identifier: Apache-2.0 */
/* POST /api/inject/v1: KumoMTA's injection request, validated and built
 * by proto/inject_req. One message per recipient goes through
 * http_message_generated, then the spool; the answer waits until every
 * message is durable (or failed), exactly like the 250 after SMTP DATA.
 * Messages are made a window at a time (INJECT_STORE_WINDOW stores in
 * flight): each is generated when a store slot is free, queued as soon as
 * it is durable (its body then leaves memory) and its part of the request
 * is freed once built, so a request with many recipients holds the
 * long-lived part of each message (envelope, meta) rather than every body,
 * spool record and request object at once (docs/limits.md). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/memlimit.h"
#include "base/metrics.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "ctl/http_inject.h"
#include "ctl/http_int.h"
#include "io/loop.h"
#include "ktrace.h"
#include "policy.h"
#include "proto/inject_req.h"
#include "proto/rfc5322.h"
#include "queue/queue.h"
#include "spool/logrec.h"
#include "spool/message.h"
#include "spool/timeline.h"
#include "spool/spool.h"

#define INJECT_STORE_WINDOW 256 /* spool stores in flight per request */

/* Messages being made durable; outlives the connection if the client goes. */
struct inject_txn {
	uint64_t conn_id;
	struct inject_req q; /* recipients not yet generated are read from here */
	size_t nr, next;     /* recipients in the request, the next to generate */
	size_t inflight;     /* stores issued, not yet completed */
	int pumping;
	size_t success, fail;
	size_t temp_fail; /* failures the client should retry (queue config, spool) */
	json_t *failed, *errors;
	char peer_ip[48];
	json_t *auth_info;   /* KumoMTA's AuthInfo, for http_message_generated */
	json_t *http_auth;   /* the "http_auth" meta value, one string shared by all */
	size_t max_received; /* the listener's max_received_headers */
	/* kumo.api.inject.inject_v1 (no connection): the answer goes here */
	http_inject_local_fn local_done;
	void *local_arg;
};

/* One store in flight. */
struct inject_store {
	struct inject_txn *t;
	struct message *m;
};

/* Builds recipient i's message (NULL with err when that recipient fails). */
static struct message *build_message(const struct inject_req *q, size_t i, char *err, size_t errlen)
{
	char date[64];
	rfc5322_format_date(time(NULL), date, sizeof(date));
	struct message *m = message_new();
	message_set_sender(m, q->sender);
	message_add_recipient(m, inject_req_rcpt_email(q, i));
	struct buf data;
	buf_init(&data);
	if (inject_req_build(q, i, m->id, date, &data, err, errlen) != 0) {
		buf_free(&data);
		message_unref(m);
		return NULL;
	}
	message_set_data(m, data.data, data.len);
	buf_free(&data);
	const char *k;
	json_t *v;
	json_object_foreach(inject_req_rcpt_metadata(q, i), k, v)
	{
		message_set_meta(m, k, json_incref(v));
	}
	return m;
}

/* --- spooling and the answer -------------------------------------------------------- */

static void txn_fail(struct inject_txn *t, const char *email, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void txn_fail(struct inject_txn *t, const char *email, const char *fmt, ...)
{
	char text[700];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	t->fail++;
	json_array_append_new(t->failed, json_string(email));
	json_array_append_new(t->errors, json_sprintf("%s: %s", email, text));
}

static void txn_free(struct inject_txn *t)
{
	inject_req_free(&t->q);
	json_decref(t->failed);
	json_decref(t->errors);
	json_decref(t->auth_info);
	json_decref(t->http_auth);
	free(t);
}

static void txn_answer(struct inject_txn *t)
{
	if (t->local_done) {
		json_t *j = json_pack("{s:I, s:I, s:O, s:O}", "success_count",
				      (json_int_t)t->success, "fail_count", (json_int_t)t->fail,
				      "failed_recipients", t->failed, "errors", t->errors);
		t->local_done(t->local_arg, j);
		json_decref(j);
		return;
	}
	struct http_conn *hc = http__conn_lookup(t->conn_id);
	if (!hc)
		return; /* the client left; what was spooled is delivered all the same */
	/* answered later (from a spool completion) or at once (inside the request) */
	int enter = task_current() != hc->task;
	struct task *t_hc = hc->task, *prev = enter ? task_enter(t_hc) : NULL;
	json_t *j =
	    json_pack("{s:I, s:I, s:O, s:O}", "success_count", (json_int_t)t->success, "fail_count",
		      (json_int_t)t->fail, "failed_recipients", t->failed, "errors", t->errors);
	/* nothing accepted and something worth retrying: a 5xx the client
	 * retries, with the reasons (the JSON body says which recipients) */
	int status = 200;
	if (!t->success && t->temp_fail) {
		status = 503;
		json_object_set(j, "error", json_array_get(t->errors, 0));
	}
	http__respond_json(hc, status, j);
	if (enter)
		task_exit(t_hc, prev);
}

/* One store completed: the message is queued (its body may leave memory
 * from here) or removed and reported. */
static void store_done(struct inject_txn *t, struct message *m, int err)
{
	const char *rcpt = m->recipients[0];
	if (err) {
		spool_remove(m->id, NULL, NULL);
		KTRACE(http_inject, t->conn_id, m->id, rcpt, "spool_error", strerror(-err));
		txn_fail(t, rcpt, "spool error: %s", strerror(-err));
		t->temp_fail++;
		return;
	}
	struct logrec_response resp = {.code = 250, .content = "OK"};
	struct logrec_peer peer = {.addr = t->peer_ip};
	logrec_log("Reception", m, NULL, &resp, &peer, NULL, NULL, NULL, NULL, "HTTP");
	queue_insert(m, "Received");
	KTRACE(http_inject, t->conn_id, m->id, rcpt, "ok", "");
	MSG_TIMELINE(m->id, "Reception", "HTTP inject for %s", rcpt);
	metrics_counter_add("total_messages_received", "service", "http_listener", 1);
	t->success++;
}

static int pump(struct inject_txn *t);

static void stored_cb(void *ctx, int err)
{
	struct inject_store *s = ctx;
	struct inject_txn *t = s->t;
	store_done(t, s->m, err);
	message_unref(s->m);
	free(s);
	t->inflight--;
	if (t->pumping)
		return;
	/* the next messages are generated (policy included) as the connection's
	 * work, as they were inside the request */
	struct http_conn *hc = http__conn_lookup(t->conn_id);
	struct task *t_hc = hc ? hc->task : NULL, *prev = NULL;
	int enter = t_hc && task_current() != t_hc;
	if (enter)
		prev = task_enter(t_hc);
	pump(t);
	if (enter)
		task_exit(t_hc, prev);
}

/* KumoMTA's "http_auth" meta: the Basic user, else the first identity,
 * else the peer address. */
static const char *http_auth_summary(json_t *auth_info)
{
	json_t *ids = json_object_get(auth_info, "identities");
	json_t *first = json_array_get(ids, 0);
	if (first)
		return json_string_value(json_object_get(first, "identity"));
	return json_string_value(json_object_get(auth_info, "peer_address"));
}

/* Runs http_message_generated; returns the message to spool, or NULL when
 * it failed (recorded in t) or went to the null queue (counted a success). */
static struct message *generate_one(struct inject_txn *t, const struct inject_req *q, size_t i)
{
	const char *email = inject_req_rcpt_email(q, i);
	char err[512];
	if (memlimit_check(0) == MEM_OVER) {
		/* the rest of the request is for the client to retry */
		memlimit_count_refusal();
		KTRACE(http_inject, t->conn_id, "", email, "memory_soft_limit", "");
		txn_fail(t, email, "451 4.3.1 insufficient system memory; try again later");
		t->temp_fail++;
		return NULL;
	}
	struct message *m = build_message(q, i, err, sizeof(err));
	if (!m) {
		KTRACE(http_inject, t->conn_id, "", email, "error", err);
		txn_fail(t, email, "%s", err);
		return NULL;
	}
	size_t received =
	    t->max_received ? rfc5322_count_named(m->data.data, m->data.len, "Received") : 0;
	if (received > t->max_received) {
		KTRACE(http_inject, t->conn_id, m->id, email, "mail_loop", "");
		txn_fail(t, email,
			 "554 5.4.6 too many Received headers (%zu, limit %zu): mail loop",
			 received, t->max_received);
		message_unref(m);
		return NULL;
	}
	message_set_meta(m, "http_auth", json_incref(t->http_auth));
	struct policy_result r;
	policy_http_message_generated(m, t->auth_info, &r);
	if (r.status != POLICY_OK) {
		KTRACE(http_inject, t->conn_id, m->id, email,
		       r.status == POLICY_REJECT ? "rejected" : "error", r.text);
		if (r.status == POLICY_REJECT)
			txn_fail(t, email, "%d %s", r.code, r.text);
		else
			txn_fail(t, email, "policy error: %s", r.text);
		message_unref(m);
		return NULL;
	}
	const char *queue = message_get_meta_str(m, "queue");
	if (queue && strcmp(queue, "null") == 0) {
		KTRACE(http_inject, t->conn_id, m->id, email, "ok", "null queue");
		metrics_counter_add("total_messages_received", "service", "http_listener", 1);
		t->success++;
		message_unref(m);
		return NULL;
	}
	char qerr[600];
	if (queue_check_config(m, "HTTP", t->peer_ip, qerr, sizeof(qerr)) != 0) {
		/* refused, not queued under defaults: the client keeps it */
		KTRACE(http_inject, t->conn_id, m->id, email, "queue_config_error", qerr);
		txn_fail(t, email, "451 4.3.0 %s", qerr);
		t->temp_fail++;
		message_unref(m);
		return NULL;
	}
	return m;
}

/* Generates and stores recipients while the window has room; answers
 * and frees t once every recipient is done (returns 1 then, else 0). */
static int pump(struct inject_txn *t)
{
	t->pumping = 1;
	while (t->inflight < INJECT_STORE_WINDOW && t->next < t->nr) {
		size_t i = t->next++;
		struct message *m = NULL;
		if (kumod_shutting_down() || !spool_is_open()) {
			/* began before the shutdown: the rest is for the client to retry */
			const char *email = inject_req_rcpt_email(&t->q, i);
			KTRACE(http_inject, t->conn_id, "", email, "shutting_down", "");
			txn_fail(t, email, "451 4.3.2 shutting down; try again later");
			t->temp_fail++;
		} else {
			m = generate_one(t, &t->q, i);
		}
		inject_req_release_rcpt(&t->q, i); /* its memory serves the next ones */
		if (!m)
			continue;
		struct inject_store *s = xmalloc(sizeof(*s));
		*s = (struct inject_store){t, m};
		t->inflight++;
		if (t->q.deferred_spool) /* the client's choice: in memory until it must stay */
			spool_store_deferred(m, stored_cb, s);
		else
			spool_store(m, stored_cb, s);
	}
	t->pumping = 0;
	if (t->inflight || t->next < t->nr)
		return 0;
	txn_answer(t);
	txn_free(t);
	return 1;
}

void http_inject__handle(struct http_conn *hc, struct http_request *req)
{
	json_t *j = http__json_body(hc, req);
	if (!j)
		return;
	struct inject_req q;
	char err[INJECT_REQ_MAX_ERROR];
	int st = inject_req_parse(j, &q, err, sizeof(err));
	json_decref(j);
	/* the text is parsed: only the tree is read from here on */
	buf_free(&req->r->body);
	buf_init(&req->r->body);
	if (st) {
		http__error(hc, st, "%s", err);
		return;
	}
	if (kumod_shutting_down() || !spool_is_open()) {
		http__error(hc, 503, "%s",
			    kumod_shutting_down()
				? "shutting down"
				: "no spool is defined (kumo.define_spool); message not accepted");
		inject_req_free(&q);
		return;
	}
	if (spool_space_check(NULL, 0) < 0) { /* as KumoMTA */
		KTRACE(http_limit, hc->id, hc->conn.peer, "min_free_space");
		http__error_extra(hc, 503, "Retry-After: 5\r\n", "disk is too full");
		inject_req_free(&q);
		return;
	}
	size_t nr = inject_req_count(&q), max = http__config(hc)->max_recipients_per_inject;
	const char *limit = max && nr > max		    ? "max_recipients_per_inject"
			    : memlimit_check(0) == MEM_OVER ? "memory_soft_limit"
							    : NULL;
	if (limit) {
		KTRACE(http_limit, hc->id, hc->conn.peer, limit);
		if (max && nr > max) {
			http__error(hc, 413, "%zu recipients: max_recipients_per_inject is %zu", nr,
				    max);
		} else {
			memlimit_count_refusal();
			http__error_extra(hc, 503, "Retry-After: 5\r\n",
					  "load shedding: over the memory limit");
		}
		inject_req_free(&q);
		return;
	}
	struct inject_txn *t = xcalloc(1, sizeof(*t));
	t->max_received = http__config(hc)->max_received_headers;
	t->conn_id = hc->id;
	t->q = q;
	t->nr = nr;
	t->failed = json_array();
	t->errors = json_array();
	snprintf(t->peer_ip, sizeof(t->peer_ip), "%s", hc->conn.peer_ip);
	t->auth_info = http__auth_info(hc, req);
	t->http_auth = json_string(http_auth_summary(t->auth_info));
	if (pump(t))
		return; /* nothing was stored: answered at once */
	hc->busy = 1;	/* answered from a store completion */
	task_set_phase(hc->task, "Spooling", "spool");
	uv_timer_stop(&hc->timer);
}

/* KumoMTA's local-system AuthInfo: the request comes from loopback. */
static json_t *local_auth_info(void)
{
	return json_pack("{s:s,s:[{s:s,s:s}],s:[]}", "peer_address", "127.0.0.1", "identities",
			 "identity", "kumod", "context", "LocalSystem", "groups");
}

int http_inject_local(json_t *request, size_t max_received, http_inject_local_fn done, void *arg,
		      char *err, size_t errlen)
{
	struct inject_req q;
	char why[INJECT_REQ_MAX_ERROR];
	if (inject_req_parse(request, &q, why, sizeof(why)) != 0) {
		snprintf(err, errlen, "%s", why);
		return -EINVAL;
	}
	if (kumod_shutting_down() || !spool_is_open()) {
		snprintf(err, errlen, "%s",
			 kumod_shutting_down()
			     ? "shutting down"
			     : "no spool is defined (kumo.define_spool); message not accepted");
		inject_req_free(&q);
		return -EAGAIN;
	}
	if (spool_space_check(why, sizeof(why)) < 0) {
		snprintf(err, errlen, "disk is too full: %s", why);
		inject_req_free(&q);
		return -ENOSPC;
	}
	struct inject_txn *t = xcalloc(1, sizeof(*t));
	t->max_received = max_received;
	t->q = q;
	t->nr = inject_req_count(&q);
	t->failed = json_array();
	t->errors = json_array();
	snprintf(t->peer_ip, sizeof(t->peer_ip), "127.0.0.1");
	t->auth_info = local_auth_info();
	t->http_auth = json_string(http_auth_summary(t->auth_info));
	t->local_done = done;
	t->local_arg = arg;
	if (pump(t))
		return 0; /* answered (done called) already */
	return 1;
}
