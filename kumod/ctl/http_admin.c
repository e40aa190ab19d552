/* SPDX-License-Identifier: Apache-2.0 */
/* Admin endpoints that change or inspect the queues (KumoMTA shapes):
 * /api/admin/bounce/v1, /api/admin/suspend/v1, /api/admin/suspend-ready-q/v1
 * /api/admin/inspect-message/v1 and the trace-smtp websockets. The route
 * table is in http_api.c. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "base/buf.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "ctl/http_int.h"
#include "ctl/trace_smtp.h"
#include "dispatch/ready.h"
#include "ktrace.h"
#include "proto/duration.h"
#include "queue/queue.h"
#include "spool/message.h"
#include "spool/spool.h"
#include "spool/timeline.h"

static double now_unix(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* --- /api/admin/bounce/v1 ------------------------------------------------------ */

/* POST {domain, campaign, tenant, routing_domain, queue, reason, duration}:
 * KumoMTA's shape; duration in seconds (number) or text ("5m"), default 5
 * minutes. GET lists live entries; DELETE {id} cancels one. */
static int parse_duration_s(json_t *v, uint64_t *ms)
{
	if (!v || json_is_null(v)) {
		*ms = 300000;
		return 0;
	}
	if (json_is_number(v) && json_number_value(v) >= 0) {
		*ms = (uint64_t)(json_number_value(v) * 1000);
		return 0;
	}
	return json_is_string(v) ? duration_parse_ms(json_string_value(v), ms) : -1;
}

void http_admin__bounce(struct http_conn *hc, struct http_request *req)
{
	static const char *const keys[] = {"domain", "campaign", "tenant",   "routing_domain",
					   "queue",  "reason",	 "duration", NULL};
	json_t *j = http__json_body(hc, req);
	if (!j)
		return;
	const char *unknown = http__json_unknown_key(j, keys);
	if (unknown) {
		http__error(hc, 422, "unknown field '%s'", unknown);
		json_decref(j);
		return;
	}
	const char *reason = json_string_value(json_object_get(j, "reason"));
	if (!reason || !*reason) {
		http__error(hc, 422, "field 'reason' is required (a string)");
		json_decref(j);
		return;
	}
	for (size_t i = 0; i < 5; i++) {
		json_t *v = json_object_get(j, keys[i]);
		if (v && !json_is_string(v) && !json_is_null(v)) {
			http__error(hc, 422, "field '%s' must be a string", keys[i]);
			json_decref(j);
			return;
		}
	}
	uint64_t ms;
	if (parse_duration_s(json_object_get(j, "duration"), &ms) != 0) {
		http__error(hc, 422, "field 'duration' must be seconds or text like \"5m\"");
		json_decref(j);
		return;
	}
	struct queue_bounce_match mt = {
	    .queue = json_string_value(json_object_get(j, "queue")),
	    .domain = json_string_value(json_object_get(j, "domain")),
	    .campaign = json_string_value(json_object_get(j, "campaign")),
	    .tenant = json_string_value(json_object_get(j, "tenant")),
	    .routing_domain = json_string_value(json_object_get(j, "routing_domain")),
	};
	size_t n = 0;
	uint64_t id = queue_admin_bounce(&mt, reason, ms, &n);
	KTRACE(http_admin, hc->id, req->identity, "bounce", reason);
	json_decref(j);
	http__respond_json(
	    hc, 200, json_pack("{s:I, s:I}", "id", (json_int_t)id, "total_bounced", (json_int_t)n));
}

void http_admin__bounce_list(struct http_conn *hc, struct http_request *req)
{
	http__respond_json(hc, 200, queue_admin_bounce_list());
}

void http_admin__bounce_cancel(struct http_conn *hc, struct http_request *req)
{
	static const char *const keys[] = {"id", NULL};
	json_t *j = http__json_body(hc, req);
	if (!j)
		return;
	json_t *id = json_object_get(j, "id");
	if (http__json_unknown_key(j, keys) || !json_is_integer(id)) {
		http__error(hc, 422, "expected {\"id\": <integer>}");
		json_decref(j);
		return;
	}
	int rc = queue_admin_bounce_cancel((uint64_t)json_integer_value(id));
	KTRACE(http_admin, hc->id, req->identity, "bounce-cancel", "");
	if (rc != 0)
		http__error(hc, 404, "no bounce entry with id %lld",
			    (long long)json_integer_value(id));
	else
		http__respond_json(hc, 200, json_pack("{s:I}", "id", json_integer_value(id)));
	json_decref(j);
}

/* --- suspensions: shared request parsing ------------------------------------------ */

struct suspend_req {
	json_t *j;
	const char *reason;
	uint64_t expires_ms;
};

/* Validates a suspend body: allowed keys only, the string fields among
 * them, a reason, and duration (default 5m) or expires (RFC 3339). On
 * failure answers 422 naming the problem and returns -1. */
static int suspend_req_parse(struct http_conn *hc, json_t *j, const char *const *keys,
			     const char *const *strings, struct suspend_req *r)
{
	const char *unknown = http__json_unknown_key(j, keys);
	if (unknown) {
		http__error(hc, 422, "unknown field '%s'", unknown);
		return -1;
	}
	for (size_t i = 0; strings[i]; i++) {
		json_t *v = json_object_get(j, strings[i]);
		if (v && !json_is_string(v) && !json_is_null(v)) {
			http__error(hc, 422, "field '%s' must be a string", strings[i]);
			return -1;
		}
	}
	r->reason = json_string_value(json_object_get(j, "reason"));
	if (!r->reason || !*r->reason) {
		http__error(hc, 422, "field 'reason' is required (a string)");
		return -1;
	}
	json_t *dur = json_object_get(j, "duration"), *exp = json_object_get(j, "expires");
	uint64_t now = (uint64_t)(now_unix() * 1000), ms;
	if (dur && exp && !json_is_null(dur) && !json_is_null(exp)) {
		http__error(hc, 422, "give either 'duration' or 'expires', not both");
		return -1;
	}
	if (exp && !json_is_null(exp)) {
		if (!json_is_string(exp) || rfc3339_parse_ms(json_string_value(exp), &ms) != 0) {
			http__error(hc, 422,
				    "field 'expires' must be an RFC 3339 time such as "
				    "\"2030-01-01T00:00:00Z\"");
			return -1;
		}
		if (ms <= now) {
			http__error(hc, 422, "field 'expires' is in the past");
			return -1;
		}
		r->expires_ms = ms;
		return 0;
	}
	if (parse_duration_s(dur, &ms) != 0 || ms == 0) {
		http__error(hc, 422,
			    "field 'duration' must be a positive duration: seconds or text like "
			    "\"5m\" or \"1h 30m\"");
		return -1;
	}
	r->expires_ms = now + ms;
	return 0;
}

/* DELETE bodies: {"id": "<uuid>"}; NULL after answering 422. */
static const char *suspend_cancel_id(struct http_conn *hc, json_t *j)
{
	static const char *const keys[] = {"id", NULL};
	const char *id = json_string_value(json_object_get(j, "id"));
	if (http__json_unknown_key(j, keys) || !id) {
		http__error(hc, 422, "expected {\"id\": \"<suspension id>\"}");
		return NULL;
	}
	return id;
}

/* --- /api/admin/suspend/v1 ------------------------------------------------------- */

void http_admin__suspend(struct http_conn *hc, struct http_request *req)
{
	static const char *const keys[] = {"domain",   "tenant",  "campaign", "reason",
					   "duration", "expires", NULL};
	json_t *j = http__json_body(hc, req);
	if (!j)
		return;
	struct suspend_req r = {0};
	if (suspend_req_parse(hc, j, keys, keys, &r) == 0) {
		const char *id = queue_admin_suspend(
		    json_string_value(json_object_get(j, "domain")),
		    json_string_value(json_object_get(j, "tenant")),
		    json_string_value(json_object_get(j, "campaign")), r.reason, r.expires_ms);
		KTRACE(http_admin, hc->id, req->identity, "suspend", id);
		http__respond_json(hc, 200, json_pack("{s:s}", "id", id));
	}
	json_decref(j);
}

void http_admin__suspend_list(struct http_conn *hc, struct http_request *req)
{
	http__respond_json(hc, 200, queue_admin_suspend_list());
}

void http_admin__suspend_cancel(struct http_conn *hc, struct http_request *req)
{
	json_t *j = http__json_body(hc, req);
	if (!j)
		return;
	const char *id = suspend_cancel_id(hc, j);
	size_t released = 0;
	if (id) {
		int rc = queue_admin_suspend_cancel(id, &released);
		KTRACE(http_admin, hc->id, req->identity, "suspend-cancel", id);
		if (rc != 0)
			http__error(hc, 404, "no suspension with id '%s'", id);
		else
			http__respond_json(
			    hc, 200,
			    json_pack("{s:s, s:I}", "id", id, "released", (json_int_t)released));
	}
	json_decref(j);
}

/* --- /api/admin/suspend-ready-q/v1 ----------------------------------------------- */

void http_admin__suspend_ready_q(struct http_conn *hc, struct http_request *req)
{
	static const char *const keys[] = {"name", "reason", "duration", "expires", NULL};
	static const char *const strings[] = {"name", "reason", "expires", NULL};
	json_t *j = http__json_body(hc, req);
	if (!j)
		return;
	struct suspend_req r = {0};
	if (suspend_req_parse(hc, j, keys, strings, &r) == 0) {
		const char *name = json_string_value(json_object_get(j, "name"));
		if (!name || !*name) {
			http__error(hc, 422,
				    "field 'name' is required: a ready queue such as "
				    "\"unspecified->mx_list:127.0.0.1:25@smtp\"");
		} else {
			const char *id = ready_admin_suspend(name, r.reason, r.expires_ms);
			KTRACE(http_admin, hc->id, req->identity, "suspend-ready-q", id);
			http__respond_json(hc, 200, json_pack("{s:s}", "id", id));
		}
	}
	json_decref(j);
}

void http_admin__suspend_ready_q_list(struct http_conn *hc, struct http_request *req)
{
	http__respond_json(hc, 200, ready_admin_suspend_list());
}

void http_admin__suspend_ready_q_cancel(struct http_conn *hc, struct http_request *req)
{
	json_t *j = http__json_body(hc, req);
	if (!j)
		return;
	const char *id = suspend_cancel_id(hc, j);
	if (id) {
		int rc = ready_admin_suspend_cancel(id);
		KTRACE(http_admin, hc->id, req->identity, "suspend-ready-q-cancel", id);
		if (rc != 0)
			http__error(hc, 404, "no ready-queue suspension with id '%s'", id);
		else
			http__respond_json(hc, 200, json_pack("{s:s}", "id", id));
	}
	json_decref(j);
}

/* --- /api/admin/inspect-message/v1 ------------------------------------------------ */

/* The message as KumoMTA shows it. A queued message keeps its envelope and
 * meta in memory; its body may be in the spool only (data_resident false):
 * with want_body it is read back first (inspect_message below). */
static json_t *inspect_json(const struct qmsg *qm, int want_body)
{
	const struct message *m = qm->m;
	json_t *rcpts = json_array();
	for (size_t i = 0; i < m->nrecipients; i++)
		json_array_append_new(rcpts, json_string(m->recipients[i]));
	message_meta_build_for(m, "*"); /* the whole meta, lazy values included */
	json_t *o = json_pack("{s:s, s:o, s:o, s:I, s:s}", "sender", m->sender, "recipient", rcpts,
			      "meta", m->meta ? json_incref(m->meta) : json_object(),
			      "num_attempts", (json_int_t)m->attempts, "queue", queue_name(qm->q));
	json_object_set_new(o, "data_resident", json_boolean(message_data_resident(m)));
	json_object_set_new(o, "size", json_integer((json_int_t)message_data_len(m)));
	if (qm->heap_idx != SIZE_MAX) {
		char due[40];
		rfc3339_format_ms(qm->due_ms, due, sizeof(due));
		json_object_set_new(o, "due", json_string(due));
	}
	json_t *sched = json_object_get(m->meta, "scheduling");
	if (sched)
		json_object_set(o, "scheduling", sched);
	if (want_body && message_data_resident(m)) {
		struct buf b;
		buf_init(&b);
		buf_append_utf8_lossy(&b, m->data.data ? m->data.data : "", m->data.len);
		json_object_set_new(o, "data", json_stringn(b.data ? b.data : "", b.len));
		buf_free(&b);
	}
	return o;
}

static void inspect_answer(struct http_conn *hc, const char *id, const struct qmsg *qm,
			   int want_body, int want_timeline, const char *load_error);

/* An inspection waiting for a body to come back from the spool. */
struct inspect_wait {
	uint64_t conn_id;
	int want_timeline;
	struct message *m; /* one reference */
};

static void inspect_loaded(void *ctx, int err, const char *why)
{
	struct inspect_wait *w = ctx;
	struct http_conn *hc = http__conn_lookup(w->conn_id);
	if (hc) {
		int enter = task_current() != hc->task;
		struct task *t_hc = hc->task, *prev = enter ? task_enter(t_hc) : NULL;
		const struct qmsg *qm = queue_find_message(w->m->id);
		char reason[300];
		snprintf(reason, sizeof(reason), "%s", why ? why : "");
		inspect_answer(hc, w->m->id, qm && qm->m == w->m ? qm : NULL, 1, w->want_timeline,
			       err ? reason : NULL);
		if (enter)
			task_exit(t_hc, prev);
	}
	message_unref(w->m);
	free(w);
}

void http_admin__inspect_message(struct http_conn *hc, struct http_request *req)
{
	char id[80], wb[16];
	int rc = http__query_get(req, "id", id, sizeof(id));
	if (rc <= 0) {
		http__error(hc, 400,
			    rc == 0 ? "query parameter 'id' is required (a message id)"
				    : "id: badly encoded or too long");
		return;
	}
	for (char *p = id; *p; p++)
		if (*p >= 'A' && *p <= 'F')
			*p = (char)(*p - 'A' + 'a');
	if (!message_id_valid(id)) {
		http__error(hc, 400, "id: '%s' is not a message id (32 hex digits)", id);
		return;
	}
	int want_body = 0;
	rc = http__query_get(req, "want_body", wb, sizeof(wb));
	if (rc < 0 || (rc == 1 && strcmp(wb, "true") != 0 && strcmp(wb, "false") != 0)) {
		http__error(hc, 400, "want_body: expected true or false");
		return;
	}
	want_body = rc == 1 && strcmp(wb, "true") == 0;
	int want_timeline = 0;
	rc = http__query_get(req, "timeline", wb, sizeof(wb));
	if (rc < 0 || (rc == 1 && strcmp(wb, "true") != 0 && strcmp(wb, "false") != 0)) {
		http__error(hc, 400, "timeline: expected true or false");
		return;
	}
	want_timeline = rc == 1 && strcmp(wb, "true") == 0;
	const struct qmsg *qm = queue_find_message(id);
	if (qm && want_body && !message_data_resident(qm->m) && spool_is_open()) {
		/* the body is in the spool only: read it back off the loop */
		struct inspect_wait *w = xcalloc(1, sizeof(*w));
		w->conn_id = hc->id;
		w->want_timeline = want_timeline;
		w->m = message_ref(qm->m);
		hc->busy = 1;
		task_set_phase(hc->task, "LoadingMessage", "spool");
		uv_timer_stop(&hc->timer);
		spool_load_data(w->m, inspect_loaded, w);
		return;
	}
	inspect_answer(hc, id, qm, want_body, want_timeline, NULL);
}

static void inspect_answer(struct http_conn *hc, const char *id, const struct qmsg *qm,
			   int want_body, int want_timeline, const char *load_error)
{
	int finished = 0;
	uint64_t dropped = 0;
	json_t *tl = want_timeline ? msg_timeline_json(id, &finished, &dropped) : NULL;
	if (!qm && !tl) {
		http__error(hc, 404,
			    want_timeline
				? "no queued message with id %s, and no timeline kept for it"
				: "no queued message with id %s",
			    id);
		return;
	}
	json_t *o = json_pack("{s:s, s:o}", "id", id, "message",
			      qm ? inspect_json(qm, want_body) : json_null());
	if (load_error) /* the body could not be read back: say why */
		json_object_set_new(o, "data_error", json_string(load_error));
	if (want_timeline) {
		json_object_set_new(o, "timeline", tl ? tl : json_array());
		json_object_set_new(o, "timeline_finished", json_boolean(finished));
		json_object_set_new(o, "timeline_dropped", json_integer((json_int_t)dropped));
	}
	http__respond_json(hc, 200, o);
}

/* --- /api/admin/trace-smtp-server/v1, /api/admin/trace-smtp-client/v1 ------------- */

/* Websockets (KumoMTA's endpoints): the first text frame is the trace
 * request; events follow as text frames (ctl/trace_smtp.c). */
void http_admin__trace_smtp_server(struct http_conn *hc, struct http_request *req)
{
	trace_smtp__upgrade(hc, req, SMTP_TRACE_SERVER);
}

void http_admin__trace_smtp_client(struct http_conn *hc, struct http_request *req)
{
	trace_smtp__upgrade(hc, req, SMTP_TRACE_CLIENT);
}
