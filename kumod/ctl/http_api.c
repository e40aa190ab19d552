/* SPDX-License-Identifier: Apache-2.0 */
/* The HTTP API's route table and its read-mostly endpoints: /metrics,
 * /metrics.json, liveness, the diagnostic log filter, ready-queue states
 * and scheduled-queue inspection. Injection lives in http_inject.c, the
 * admin bounce, suspend and inspect-message endpoints in http_admin.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "base/log.h"
#include "base/memlimit.h"
#include "base/metrics.h"
#include "ctl/catcher.h"
#include "ctl/http_int.h"
#include "dispatch/ready.h"
#include "dispatch/shaping_auto.h"
#include "io/loop.h"
#include "ktrace.h"
#include "queue/queue.h"
#include "spool/spool.h"

/* Keeps the lines of families whose name starts with prefix: samples and
 * their "# HELP name" / "# TYPE name" lines (KumoMTA's ?prefix=). */
static void metrics_filter_prefix(const struct buf *in, const char *prefix, struct buf *out)
{
	size_t pl = strlen(prefix);
	const char *p = in->data ? in->data : "", *end = p + in->len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *e = nl ? nl + 1 : end;
		const char *name = p;
		if (strncmp(p, "# HELP ", 7) == 0 || strncmp(p, "# TYPE ", 7) == 0)
			name = p + 7;
		if ((size_t)(e - name) >= pl && strncmp(name, prefix, pl) == 0)
			buf_append(out, p, (size_t)(e - p));
		p = e;
	}
}

static void api_metrics(struct http_conn *hc, struct http_request *req)
{
	char prefix[256];
	int rc = http__query_get(req, "prefix", prefix, sizeof(prefix));
	if (rc < 0) {
		http__error(hc, 400, "prefix: badly encoded or too long");
		return;
	}
	struct buf out, sel;
	buf_init(&out);
	buf_init(&sel);
	metrics_render_text(&out);
	const struct buf *b = &out;
	if (rc == 1 && prefix[0]) {
		metrics_filter_prefix(&out, prefix, &sel);
		b = &sel;
	}
	http__respond(hc, 200, "text/plain; version=0.0.4; charset=utf-8", b->data ? b->data : "",
		      b->len);
	buf_free(&out);
	buf_free(&sel);
}

static void api_metrics_json(struct http_conn *hc, struct http_request *req)
{
	struct buf out;
	buf_init(&out);
	metrics_render_json(&out);
	http__respond(hc, 200, "application/json", out.data, out.len);
	buf_free(&out);
}

static void api_liveness(struct http_conn *hc, struct http_request *req)
{
	if (kumod_shutting_down()) {
		http__error(hc, 503, "shutting down");
		return;
	}
	if (memlimit_check(0) == MEM_OVER) { /* as KumoMTA: no headroom, not live */
		http__error(hc, 503, "load shedding");
		return;
	}
	if (spool_space_check(NULL, 0) < 0) { /* as KumoMTA */
		http__error(hc, 503, "storage is too full");
		return;
	}
	http__respond(hc, 200, "text/plain; charset=utf-8", "OK\n", 3);
}

static void api_set_log_filter(struct http_conn *hc, struct http_request *req)
{
	static const char *const keys[] = {"filter", NULL};
	json_t *j = http__json_body(hc, req);
	if (!j)
		return;
	const char *unknown = http__json_unknown_key(j, keys);
	json_t *f = json_object_get(j, "filter");
	if (unknown || !json_is_string(f)) {
		if (unknown)
			http__error(hc, 422, "unknown field '%s' (expected {\"filter\": \"...\"})",
				    unknown);
		else
			http__error(hc, 422, "field 'filter' must be a string");
		json_decref(j);
		return;
	}
	char err[512];
	if (log_set_filter(json_string_value(f), err, sizeof(err)) != 0) {
		http__error(hc, 400, "%s", err);
		json_decref(j);
		return;
	}
	KTRACE(http_admin, hc->id, req->identity, "set_diagnostic_log_filter",
	       json_string_value(f));
	json_decref(j);
	http__respond_json(hc, 200, json_pack("{s:s}", "filter", log_filter_text()));
}

static double now_unix(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void ready_state_cb(const struct ready_info *ri, void *ctx)
{
	json_t *states = ctx;
	json_object_set_new(
	    states, ri->name,
	    json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:b}", "ready_count",
		      (json_int_t)ri->count, "connection_count", (json_int_t)ri->connections,
		      "connection_limit", (json_int_t)ri->connection_limit, "max_ready",
		      (json_int_t)ri->max_ready, "delivered", (json_int_t)ri->delivered,
		      "transfail", (json_int_t)ri->transfail, "failed", (json_int_t)ri->failed,
		      "connection_limited",
		      ri->connection_limit && ri->connections >= ri->connection_limit, "ready_full",
		      ri->max_ready && ri->count >= ri->max_ready));
	json_object_set_new(json_object_get(states, ri->name), "suspended",
			    json_boolean(ri->suspended));
}

static void api_ready_q_states(struct http_conn *hc, struct http_request *req)
{
	json_t *states = json_object();
	ready_foreach(ready_state_cb, states);
	http__respond_json(
	    hc, 200, json_pack("{s:o, s:f}", "states_by_ready_queue", states, "now", now_unix()));
}

struct sched_find {
	const char *name;
	int found;
	size_t count;
	uint64_t next_due_ms;
	int suspended;
	json_t *all;
};

static void sched_find_cb(const struct queue_info *qi, void *ctx)
{
	struct sched_find *f = ctx;
	if (f->all) {
		json_object_set_new(f->all, qi->name, json_integer((json_int_t)qi->count));
		return;
	}
	if (strcmp(qi->name, f->name) != 0)
		return;
	f->found = 1;
	f->count = qi->count;
	f->next_due_ms = qi->next_due_ms;
	f->suspended = qi->suspended;
}

/* ?queue_name= into name: 1 found, 0 absent, -1 after answering 400. */
static int query_queue_name(struct http_conn *hc, struct http_request *req, char *name, size_t cap)
{
	int rc = http__query_get(req, "queue_name", name, cap);
	if (rc < 0) {
		http__error(hc, 400, "queue_name: badly encoded or too long");
		return -1;
	}
	return rc > 0;
}

static void api_inspect_sched_q(struct http_conn *hc, struct http_request *req)
{
	char name[512];
	int rc = query_queue_name(hc, req, name, sizeof(name));
	if (rc < 0)
		return;
	if (rc == 0) {
		struct sched_find f = {.all = json_object()};
		queue_foreach(sched_find_cb, &f);
		http__respond_json(
		    hc, 200, json_pack("{s:o, s:f}", "scheduled_queues", f.all, "now", now_unix()));
		return;
	}
	struct sched_find f = {.name = name};
	queue_foreach(sched_find_cb, &f);
	if (!f.found) {
		http__error(hc, 404, "no scheduled queue named '%s'", name);
		return;
	}
	json_t *next = f.next_due_ms ? json_real((double)f.next_due_ms / 1000.0) : json_null();
	http__respond_json(hc, 200,
			   json_pack("{s:s, s:I, s:I, s:o, s:b, s:f}", "queue_name", name,
				     "num_scheduled", (json_int_t)f.count, "delayed_metric",
				     (json_int_t)f.count, "next_due", next, "suspended",
				     f.suspended, "now", now_unix()));
}

static void api_inspect_ready_q(struct http_conn *hc, struct http_request *req)
{
	char name[512];
	int rc = query_queue_name(hc, req, name, sizeof(name));
	if (rc < 0)
		return;
	if (rc == 0) {
		http__error(hc, 400, "queue_name: required (a name from ready-q-states)");
		return;
	}
	json_t *o = ready_inspect(name);
	if (!o) {
		http__error(hc, 404, "no ready queue named '%s'", name);
		return;
	}
	http__respond_json(hc, 200, o);
}

/* kumod's own: the live effects of traffic shaping automation rules. */
static void api_shaping_automation(struct http_conn *hc, struct http_request *req)
{
	(void)req;
	http__respond_json(hc, 200, shaping_auto_list());
}

static const struct http_route routes[] = {
    {"/metrics", HTTP_GET, 0, api_metrics},
    {"/metrics.json", HTTP_GET, 0, api_metrics_json},
    {"/api/check-liveness/v1", HTTP_GET, 1, api_liveness},
    {"/api/inject/v1", HTTP_POST, 0, http_inject__handle},
    {"/api/admin/set_diagnostic_log_filter/v1", HTTP_POST, 0, api_set_log_filter},
    {"/api/admin/ready-q-states/v1", HTTP_GET, 0, api_ready_q_states},
    {"/api/admin/inspect-sched-q/v1", HTTP_GET, 0, api_inspect_sched_q},
    {"/api/admin/inspect-ready-q/v1", HTTP_GET, 0, api_inspect_ready_q},
    {"/api/admin/bounce/v1", HTTP_POST, 0, http_admin__bounce},
    {"/api/admin/bounce/v1", HTTP_GET, 0, http_admin__bounce_list},
    {"/api/admin/bounce/v1", HTTP_DELETE, 0, http_admin__bounce_cancel},
    {"/api/admin/suspend/v1", HTTP_POST, 0, http_admin__suspend},
    {"/api/admin/suspend/v1", HTTP_GET, 0, http_admin__suspend_list},
    {"/api/admin/suspend/v1", HTTP_DELETE, 0, http_admin__suspend_cancel},
    {"/api/admin/suspend-ready-q/v1", HTTP_POST, 0, http_admin__suspend_ready_q},
    {"/api/admin/suspend-ready-q/v1", HTTP_GET, 0, http_admin__suspend_ready_q_list},
    {"/api/admin/suspend-ready-q/v1", HTTP_DELETE, 0, http_admin__suspend_ready_q_cancel},
    {"/api/admin/inspect-message/v1", HTTP_GET, 0, http_admin__inspect_message},
    {"/api/admin/shaping-automation/v1", HTTP_GET, 0, api_shaping_automation},
    {"/api/admin/trace-smtp-server/v1", HTTP_GET, 0, http_admin__trace_smtp_server},
    {"/api/admin/trace-smtp-client/v1", HTTP_GET, 0, http_admin__trace_smtp_client},
    /* the mail catcher (kumo.start_mail_catcher); a trailing '*' matches a prefix */
    {"/api/v1/*", HTTP_GET, 0, catcher_http_handle},
    {"/api/v1/*", HTTP_DELETE, 0, catcher_http_handle},
    {"/api/v1/faults", HTTP_PUT, 0, catcher_http_handle},
    {"/", HTTP_GET, 0, catcher_http_handle},
    {"/ui/*", HTTP_GET, 0, catcher_http_handle},
};

/* 1 when path is the route's path, or starts with it up to a trailing '*'. */
static int route_matches(const char *route, const char *path)
{
	size_t n = strlen(route);
	if (n && route[n - 1] == '*')
		return strncmp(route, path, n - 1) == 0;
	return strcmp(route, path) == 0;
}

const struct http_route *http_api__find(const char *path, const struct http_route **other_method,
					int method_id)
{
	*other_method = NULL;
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (!route_matches(routes[i].path, path))
			continue;
		if (routes[i].method_id == method_id ||
		    (routes[i].method_id == HTTP_GET && method_id == HTTP_HEAD))
			return &routes[i];
		*other_method = &routes[i];
	}
	return NULL;
}
