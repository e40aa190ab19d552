/* SPDX-License-Identifier: Apache-2.0 */
/* Scrape-time collectors: connection_count, ready_count, delivered /
 * transfail / fail totals per destination, delayed_count and
 * scheduled_count per scheduled queue, spool and log-record statistics,
 * memory_usage. Only queues that exist produce series, so idle queues
 * vanish from the output when they are reaped. */
#include "ctl/metrics_collect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/memlimit.h"
#include "base/metrics.h"
#include "base/xalloc.h"
#include "ctl/http.h"
#include "dispatch/loghook.h"
#include "dispatch/ready.h"
#include "dispatch/shaping_auto.h"
#include "io/loop.h"
#include "queue/shared_throttle.h"
#include "queue/queue.h"
#include "smtp/server.h"
#include "spool/logrec.h"
#include "spool/message.h"
#include "spool/spool.h"

int metrics_collect_service_label(const char *ready_queue, char *out, size_t outlen)
{
	const char *arrow = strstr(ready_queue, "->");
	size_t n = strlen(ready_queue);
	static const char suffix[] = "@smtp";
	size_t sl = sizeof(suffix) - 1;
	if (!arrow || n < sl || strcmp(ready_queue + n - sl, suffix) != 0 ||
	    arrow + 2 > ready_queue + n - sl) {
		snprintf(out, outlen, "smtp_client:%s", ready_queue);
		return -1;
	}
	const char *site = arrow + 2;
	snprintf(out, outlen, "smtp_client:%.*s", (int)(ready_queue + n - sl - site), site);
	return 0;
}

/* --- ready queues: summed per destination site ------------------------------ */

struct site_row {
	char *service;
	double count, connections, delivered, transfail, failed;
};

struct site_rows {
	struct site_row *v;
	size_t n, cap;
};

static void ready_cb(const struct ready_info *ri, void *ctx)
{
	struct site_rows *rows = ctx;
	if (rows->n == rows->cap) {
		rows->cap = rows->cap ? rows->cap * 2 : 16;
		rows->v = xrealloc(rows->v, rows->cap * sizeof(*rows->v));
	}
	char service[600];
	metrics_collect_service_label(ri->name, service, sizeof(service));
	rows->v[rows->n++] = (struct site_row){
	    .service = xstrdup(service),
	    .count = (double)ri->count,
	    .connections = (double)ri->connections,
	    .delivered = (double)ri->delivered,
	    .transfail = (double)ri->transfail,
	    .failed = (double)ri->failed,
	};
}

static int row_cmp(const void *a, const void *b)
{
	return strcmp(((const struct site_row *)a)->service, ((const struct site_row *)b)->service);
}

/* Sorted by service, rows of one site merged into the first. */
static void rows_merge(struct site_rows *rows)
{
	if (rows->n > 1)
		qsort(rows->v, rows->n, sizeof(*rows->v), row_cmp);
	size_t w = 0;
	for (size_t i = 0; i < rows->n; i++) {
		struct site_row *r = &rows->v[i];
		if (w && strcmp(rows->v[w - 1].service, r->service) == 0) {
			struct site_row *d = &rows->v[w - 1];
			d->count += r->count;
			d->connections += r->connections;
			d->delivered += r->delivered;
			d->transfail += r->transfail;
			d->failed += r->failed;
			free(r->service);
			continue;
		}
		rows->v[w++] = *r;
	}
	rows->n = w;
}

/* connection_count: the ESMTP listener, then each destination, so the seed
 * sample comes out literally. HTTP connections are not in it (the seed was
 * scraped over HTTP and shows none): they are http_connection_count. */
static void collect_ready(struct metrics_scrape *sc, void *ctx)
{
	struct site_rows rows = {0};
	ready_foreach(ready_cb, &rows);
	rows_merge(&rows);
	metrics_emit(sc, "connection_count", METRICS_GAUGE, "service", "esmtp_listener",
		     (double)smtp_server_session_count());
	for (size_t i = 0; i < rows.n; i++)
		metrics_emit(sc, "connection_count", METRICS_GAUGE, "service", rows.v[i].service,
			     rows.v[i].connections);
	metrics_emit(sc, "http_connection_count", METRICS_GAUGE, NULL, NULL,
		     (double)http_server_connection_count());
	static const struct {
		const char *name;
		enum metrics_type type;
		size_t off;
	} cols[] = {
	    {"ready_count", METRICS_GAUGE, offsetof(struct site_row, count)},
	    {"total_messages_delivered", METRICS_COUNTER, offsetof(struct site_row, delivered)},
	    {"total_messages_transfail", METRICS_COUNTER, offsetof(struct site_row, transfail)},
	    {"total_messages_fail", METRICS_COUNTER, offsetof(struct site_row, failed)},
	};
	for (size_t c = 0; c < sizeof(cols) / sizeof(cols[0]); c++)
		for (size_t i = 0; i < rows.n; i++)
			metrics_emit(sc, cols[c].name, cols[c].type, "service", rows.v[i].service,
				     *(const double *)((const char *)&rows.v[i] + cols[c].off));
	for (size_t i = 0; i < rows.n; i++)
		free(rows.v[i].service);
	free(rows.v);
}

/* --- scheduled queues ---------------------------------------------------------- */

struct sched_totals {
	struct metrics_scrape *sc;
	int pass; /* 0: delayed_count, 1: scheduled_count */
	double total, queues;
};

static void sched_cb(const struct queue_info *qi, void *ctx)
{
	struct sched_totals *t = ctx;
	metrics_emit(t->sc, t->pass ? "scheduled_count" : "delayed_count", METRICS_GAUGE, "queue",
		     qi->name, (double)qi->count);
	if (t->pass == 0) {
		t->total += (double)qi->count;
		t->queues++;
	}
}

static void collect_sched(struct metrics_scrape *sc, void *ctx)
{
	struct sched_totals t = {.sc = sc};
	queue_foreach(sched_cb, &t);
	t.pass = 1;
	queue_foreach(sched_cb, &t);
	metrics_emit(sc, "scheduled_count_total", METRICS_GAUGE, NULL, NULL, t.total);
	metrics_emit(sc, "scheduled_queue_count", METRICS_GAUGE, NULL, NULL, t.queues);
}

/* --- spool, log records, process ------------------------------------------------ */

static void collect_spool(struct metrics_scrape *sc, void *ctx)
{
	if (spool_is_open()) {
		struct spool_stats st = {0};
		spool_get_stats(&st);
		metrics_emit(sc, "spool_stored_total", METRICS_COUNTER, NULL, NULL,
			     (double)st.stored);
		metrics_emit(sc, "spool_removed_total", METRICS_COUNTER, NULL, NULL,
			     (double)st.removed);
		metrics_emit(sc, "spool_errors_total", METRICS_COUNTER, NULL, NULL,
			     (double)st.errors);
		metrics_emit(sc, "spool_quarantined_total", METRICS_COUNTER, NULL, NULL,
			     (double)st.quarantined);
		metrics_emit(sc, "spool_pending", METRICS_GAUGE, NULL, NULL, (double)st.pending);
		struct spool_recovery_stats rs;
		spool_recovery_get_stats(&rs);
		metrics_emit(sc, "spool_recovery_active", METRICS_GAUGE, NULL, NULL,
			     (double)rs.active);
		metrics_emit(sc, "spool_recovery_loaded", METRICS_GAUGE, NULL, NULL,
			     (double)rs.loaded);
		metrics_emit(sc, "spool_recovery_quarantined", METRICS_GAUGE, NULL, NULL,
			     (double)rs.quarantined);
		for (int w = 0; w < 2; w++) {
			struct spool_space sp;
			if (spool_space_get(w, &sp) != 0)
				continue;
			const char *name = w ? "meta spool" : "data spool";
			metrics_emit(sc, "disk_free_bytes", METRICS_GAUGE, "name", name,
				     (double)sp.space_bytes);
			metrics_emit(sc, "disk_free_percent", METRICS_GAUGE, "name", name,
				     (double)sp.space_pct);
			if (sp.inodes != UINT64_MAX)
				metrics_emit(sc, "disk_free_inodes", METRICS_GAUGE, "name", name,
					     (double)sp.inodes);
			metrics_emit(sc, "disk_free_inodes_percent", METRICS_GAUGE, "name", name,
				     (double)sp.inodes_pct);
		}
	}
	if (logrec_enabled()) {
		struct logrec_stats ls = {0};
		logrec_get_stats(&ls);
		metrics_emit(sc, "log_records_written_total", METRICS_COUNTER, "logger", "local",
			     (double)ls.written);
		metrics_emit(sc, "log_submit_full", METRICS_COUNTER, "logger", "local",
			     (double)ls.waits);
		metrics_emit(sc, "log_records_queued", METRICS_GAUGE, "logger", "local",
			     (double)ls.queued);
	}
	struct loghook_stats hs;
	loghook_get_stats(&hs);
	if (hs.hooks) {
		const struct {
			const char *outcome;
			uint64_t n;
		} by[] = {{"queued", hs.queued},
			  {"declined", hs.declined},
			  {"dropped", hs.dropped},
			  {"spool_error", hs.spool_errors},
			  {"disposition", hs.dispositions},
			  {"disposition_error", hs.disposition_errors}};
		for (size_t i = 0; i < sizeof(by) / sizeof(by[0]); i++)
			metrics_emit(sc, "log_hook_records_total", METRICS_COUNTER, "outcome",
				     by[i].outcome, (double)by[i].n);
		metrics_emit(sc, "log_hook_backlog_count", METRICS_GAUGE, NULL, NULL,
			     (double)hs.pending);
	}
	metrics_emit(sc, "message_count", METRICS_GAUGE, NULL, NULL, (double)queue_total());
	/* a queued message keeps its meta in memory; its body leaves memory
	 * while it waits in a scheduled queue (docs/spool.md) */
	size_t shrunk = message_shrunk_count();
	metrics_emit(sc, "message_data_resident_count", METRICS_GAUGE, NULL, NULL,
		     (double)(queue_total() > shrunk ? queue_total() - shrunk : 0));
	metrics_emit(sc, "message_meta_resident_count", METRICS_GAUGE, NULL, NULL,
		     (double)queue_total());
}

/* The memory budget (base/memlimit) and the listeners' abuse limits
 * (docs/limits.md). */
static void collect_memory(struct metrics_scrape *sc, void *ctx)
{
	memlimit_check(0); /* a scrape also notices a state change */
	metrics_emit(sc, "memory_usage", METRICS_GAUGE, NULL, NULL, (double)memlimit_usage());
	metrics_emit(sc, "memory_limit", METRICS_GAUGE, NULL, NULL, (double)memlimit_soft());
	metrics_emit(sc, "memory_hard_limit", METRICS_GAUGE, NULL, NULL, (double)memlimit_hard());
	metrics_emit(sc, "memory_low_thresh", METRICS_GAUGE, NULL, NULL,
		     (double)memlimit_low_thresh());
	metrics_emit(sc, "memory_low_count", METRICS_COUNTER, NULL, NULL,
		     (double)memlimit_low_count());
	metrics_emit(sc, "memory_over_limit_count", METRICS_COUNTER, NULL, NULL,
		     (double)memlimit_over_count());
	metrics_emit(sc, "memory_buffered_bytes", METRICS_GAUGE, NULL, NULL,
		     (double)memlimit_accounted());
	metrics_emit(sc, "memory_refused_total", METRICS_COUNTER, NULL, NULL,
		     (double)memlimit_refusals());
	struct smtp_limit_stats st;
	smtp_server_limit_stats(&st);
	static const char name[] = "smtp_limit_denied_total";
	metrics_emit(sc, name, METRICS_COUNTER, "limit", "max_connections_per_client",
		     (double)st.client_concurrency_denied);
	metrics_emit(sc, name, METRICS_COUNTER, "limit", "max_connection_rate_per_client",
		     (double)st.client_rate_denied);
	metrics_emit(sc, name, METRICS_COUNTER, "limit", "file_descriptors",
		     (double)st.fd_budget_denied);
	metrics_emit(sc, name, METRICS_COUNTER, "limit", "memory", (double)st.memory_denied);
	metrics_emit(sc, name, METRICS_COUNTER, "limit", "memory_shed_idle", (double)st.idle_shed);
	metrics_emit(sc, name, METRICS_COUNTER, "limit", "fd_shed_idle", (double)st.fd_shed);
	metrics_emit(sc, name, METRICS_COUNTER, "limit", "min_free_space", (double)st.disk_denied);
	metrics_emit(sc, name, METRICS_COUNTER, "limit", "max_received_headers",
		     (double)st.mail_loops);
	metrics_emit(sc, "listener_accept_errors_total", METRICS_COUNTER, "service",
		     "esmtp_listener", (double)st.accept_errors);
	metrics_emit(
	    sc, "total_connections_denied", METRICS_COUNTER, "service", "esmtp_listener",
	    (double)(st.client_concurrency_denied + st.client_rate_denied + st.fd_budget_denied));
}

/* Every family this module's collectors emit, and the http_listener
 * counters that kumod/ctl/http.c and http_inject.c update (one table for
 * the ctl layer). The meanings are the docs/metrics.md table. */
static const struct metrics_decl decls[] = {
    {"connection_count", METRICS_GAUGE, "service",
     "open connections: `esmtp_listener` (inbound SMTP sessions) and `smtp_client:<site>` "
     "(outbound, per destination site)"},
    {"http_connection_count", METRICS_GAUGE, NULL,
     "open HTTP API connections. Ours: kept out of `connection_count` so the seed's sample "
     "(scraped over HTTP) comes out literally"},
    {"ready_count", METRICS_GAUGE, "service",
     "messages waiting in the ready queues of `smtp_client:<site>`"},
    {"total_messages_delivered", METRICS_COUNTER, "service",
     "2xx delivery outcomes for `smtp_client:<site>` (counted by the ready queues; restarts "
     "when a ready queue is recreated)"},
    {"total_messages_transfail", METRICS_COUNTER, "service",
     "4xx / connection failures for `smtp_client:<site>`"},
    {"total_messages_fail", METRICS_COUNTER, "service",
     "5xx outcomes (bounces) for `smtp_client:<site>`"},
    {"delayed_count", METRICS_GAUGE, "queue", "messages in a scheduled queue (the seed's name)"},
    {"scheduled_count", METRICS_GAUGE, "queue",
     "messages in a scheduled queue: `delayed_count` under upstream's current name"},
    {"scheduled_count_total", METRICS_GAUGE, NULL, "messages in all scheduled queues"},
    {"scheduled_queue_count", METRICS_GAUGE, NULL, "number of scheduled queues"},
    {"message_count", METRICS_GAUGE, NULL, "messages held by the queue layer (scheduled or ready)"},
    {"total_messages_received", METRICS_COUNTER, "service",
     "messages accepted: `esmtp_listener` (one per queued message, counted when the 250 is "
     "due) and `http_listener` (one per injected message)"},
    {"total_connection_count", METRICS_COUNTER, "service",
     "connections accepted: `esmtp_listener`, `http_listener`"},
    {"total_connections_denied", METRICS_COUNTER, "service",
     "connections refused: `esmtp_listener` (per-client concurrency or rate, file descriptor "
     "budget) and `http_listener` (over the connection or per-client cap), docs/limits.md"},
    {"message_data_resident_count", METRICS_GAUGE, NULL,
     "messages whose data is in memory: every queued message (kumod keeps bodies resident)"},
    {"message_meta_resident_count", METRICS_GAUGE, NULL,
     "messages whose meta is in memory: every queued message"},
    {"message_save_latency", METRICS_HISTOGRAM, NULL,
     "seconds to make a new message durable in the spool (data and meta written, synced)"},
    {"deliver_message_latency_rollup", METRICS_HISTOGRAM, "service",
     "seconds of one successful SMTP transaction (MAIL FROM to the reply to the end of data), "
     "`smtp_client`"},
    {"memory_usage", METRICS_GAUGE, NULL,
     "memory in bytes that drives the memory limits: resident set size (`/proc/self/statm`, "
     "sampled every 100 ms) plus buffered bytes grown since the sample"},
    {"memory_limit", METRICS_GAUGE, NULL,
     "soft memory limit in bytes (`kumo.set_memory_soft_limit`; 0 = none)"},
    {"memory_hard_limit", METRICS_GAUGE, NULL,
     "hard memory limit in bytes (`kumo.set_memory_hard_limit`; 0 = none) (Ours)"},
    {"memory_low_thresh", METRICS_GAUGE, NULL, "low memory threshold in bytes"},
    {"memory_low_count", METRICS_COUNTER, NULL, "times the low memory threshold was exceeded"},
    {"memory_over_limit_count", METRICS_COUNTER, NULL, "times the soft memory limit was exceeded"},
    {"memory_buffered_bytes", METRICS_GAUGE, NULL,
     "bytes kumod holds for clients: SMTP DATA and HTTP request bodies being received (Ours)"},
    {"memory_refused_total", METRICS_COUNTER, NULL,
     "connections, DATA, transactions and injects refused over the soft memory limit (Ours)"},
    {"smtp_limit_denied_total", METRICS_COUNTER, "limit",
     "SMTP connections or messages refused by an abuse limit of docs/limits.md (Ours)"},
    {"listener_accept_errors_total", METRICS_COUNTER, "service",
     "accept() failures on a listener (EMFILE, ENFILE, ...) (Ours)"},
    {"spool_stored_total", METRICS_COUNTER, NULL,
     "messages made durable in the spool (Ours; once a spool is defined)"},
    {"spool_removed_total", METRICS_COUNTER, NULL,
     "messages removed from the spool (Ours; once a spool is defined)"},
    {"spool_errors_total", METRICS_COUNTER, NULL,
     "failed spool operations (Ours; once a spool is defined)"},
    {"spool_quarantined_total", METRICS_COUNTER, NULL,
     "corrupt spool files moved aside (Ours; once a spool is defined)"},
    {"spool_pending", METRICS_GAUGE, NULL,
     "spool operations in flight (Ours; once a spool is defined)"},
    {"spool_recovery_active", METRICS_GAUGE, NULL,
     "1 while the restart recovery of the spool runs, then 0 (Ours; KumoMTA has no "
     "equivalent; once a spool is defined)"},
    {"spool_recovery_loaded", METRICS_GAUGE, NULL,
     "messages re-queued so far by the running (or the last) spool recovery (Ours)"},
    {"spool_recovery_quarantined", METRICS_GAUGE, NULL,
     "records quarantined so far by the running (or the last) spool recovery (Ours)"},
    {"disk_free_bytes", METRICS_GAUGE, "name",
     "free bytes (for unprivileged users) of the file system of the `data spool` and "
     "`meta spool`, checked at most once a second"},
    {"disk_free_percent", METRICS_GAUGE, "name", "the same as a percentage of the file system"},
    {"disk_free_inodes", METRICS_GAUGE, "name",
     "free inodes of the spools' file systems (none where the file system has no inode count)"},
    {"disk_free_inodes_percent", METRICS_GAUGE, "name",
     "the same as a percentage of the file system's inodes"},
    {"log_hook_records_total", METRICS_COUNTER, "outcome",
     "log records offered to log hooks (`kumo.configure_log_hook`), by outcome: `queued` "
     "(spooled as a hook message), `declined` (should_enqueue_log_record said no, or failed), "
     "`dropped` (back_pressure or no spool), `spool_error`; `disposition` and "
     "`disposition_error` count the calls of disposition hooks "
     "(`kumo.configure_log_disposition_hook`) and those that raised (Ours; once a hook is "
     "configured)"},
    {"log_hook_backlog_count", METRICS_GAUGE, NULL,
     "hook records waiting for the spool (once a hook is configured)"},
    {"log_records_written_total", METRICS_COUNTER, "logger",
     "log records written by `configure_local_logs` (`local`) (Ours)"},
    {"log_submit_full", METRICS_COUNTER, "logger",
     "times a log record had to wait for the writer (back-pressure)"},
    {"log_records_queued", METRICS_GAUGE, "logger", "log records waiting for the writer (Ours)"},
    {"suspension_count", METRICS_GAUGE, "kind",
     "live admin suspensions: `scheduled` (`/api/admin/suspend/v1`) and `ready_queue` "
     "(`/api/admin/suspend-ready-q/v1`) (Ours)"},
    {"shaping_automation_fired_total", METRICS_COUNTER, "action",
     "traffic shaping automation rules that fired, by action (`Suspend`, `SetConfig`, ...): "
     "effects created in-process by policy-extras.shaping (Ours; once one fired)"},
    {"shaping_automation_repeat_total", METRICS_COUNTER, NULL,
     "automation rule matches whose effect was still live (not stacked) (Ours; once one "
     "fired)"},
    {"shaping_automation_expired_total", METRICS_COUNTER, NULL,
     "traffic shaping automation effects that ended (Ours; once one fired)"},
    {"shaping_automation_active_count", METRICS_GAUGE, NULL,
     "live traffic shaping automation effects (Ours; once one fired)"},
    {"busy_poll_windows_total", METRICS_COUNTER, NULL,
     "busy-poll windows that ended (once `kumo.set_busy_poll` is on) (Ours)"},
    {"busy_poll_tail_seconds_total", METRICS_COUNTER, NULL,
     "time the loop spun after the last input of each busy-poll window: the CPU "
     "busy polling cost beyond useful work (Ours)"},
    {"delayed_due_to_throttle_insert_ready", METRICS_COUNTER, "queue",
     "due messages that a throttle_insert_ready_queue handler sent back to their scheduled "
     "queue (throttle:delay_message_if_throttled), one per Delayed record"},
    {"smtp_server_auth_total", METRICS_COUNTER, "result",
     "SMTP AUTH decisions of smtp_server_auth_plain: `ok`, `denied`, `error` (Ours)"},
    {"suspend_held_total", METRICS_COUNTER, NULL,
     "due messages held by a scheduled-queue suspension, one per TransientFailure record "
     "it wrote (Ours)"},
    {"memoize_cache_lookup_count", METRICS_COUNTER, "cache_name",
     "calls of a `kumo.memoize` function"},
    {"memoize_cache_hit_count", METRICS_COUNTER, "cache_name",
     "`kumo.memoize` calls answered from the cache"},
    {"memoize_cache_miss_count", METRICS_COUNTER, "cache_name",
     "`kumo.memoize` calls that ran the function (absent or expired entry)"},
    {"memoize_cache_populated_count", METRICS_COUNTER, "cache_name",
     "`kumo.memoize` entries filled by a successful call of the function"},
    {"lruttl_lookup_count", METRICS_COUNTER, "cache_name", "cache lookups (`kumo.memoize` caches)"},
    {"lruttl_hit_count", METRICS_COUNTER, "cache_name", "cache lookups that found a live entry"},
    {"lruttl_miss_count", METRICS_COUNTER, "cache_name", "cache lookups that found no live entry"},
    {"lruttl_populated_count", METRICS_COUNTER, "cache_name",
     "entries populated after a miss (successful populate)"},
    {"lruttl_insert_count", METRICS_COUNTER, "cache_name",
     "entries inserted (values and cached populate errors)"},
    {"lruttl_evict_count", METRICS_COUNTER, "cache_name",
     "least recently used entries evicted at capacity"},
    {"lruttl_expire_count", METRICS_COUNTER, "cache_name",
     "entries found expired at lookup and dropped"},
    {"lruttl_error_count", METRICS_COUNTER, "cache_name",
     "populate calls that failed (the error is cached for 60 s)"},
    {"lruttl_cache_size", METRICS_GAUGE, "cache_name", "entries held by the cache"},
    {"user_lua_latency", METRICS_HISTOGRAM, "label",
     "seconds between `kumo.time.start_timer(label)` and its `:done()` (or `<close>`)"},
    /* DKIM signing (kumod/lua/lua_dkim.c), KumoMTA's names */
    {"dkim_signer_sign", METRICS_HISTOGRAM, NULL,
     "seconds to DKIM-sign a message in `msg:dkim_sign` (canonicalize, hash, sign)"},
    {"dkim_signer_creation", METRICS_HISTOGRAM, NULL,
     "seconds to create a DKIM signer on a signer cache miss (key load included)"},
    {"dkim_signer_cache_hit", METRICS_COUNTER, NULL,
     "DKIM signer constructions answered from the signer cache"},
    {"dkim_signer_cache_miss", METRICS_COUNTER, NULL,
     "DKIM signer constructions that built a new signer"},
    {"dkim_signer_key_cache_hit", METRICS_COUNTER, NULL,
     "DKIM key loads answered from the key cache"},
    {"dkim_signer_key_cache_miss", METRICS_COUNTER, NULL,
     "DKIM key loads that read and parsed the key"},
};

/* --- admin suspensions ------------------------------------------------------------ */

static void collect_suspend(struct metrics_scrape *sc, void *ctx)
{
	size_t active;
	uint64_t held;
	queue_admin_suspend_stats(&active, &held);
	metrics_emit(sc, "suspension_count", METRICS_GAUGE, "kind", "scheduled", (double)active);
	metrics_emit(sc, "suspension_count", METRICS_GAUGE, "kind", "ready_queue",
		     (double)ready_admin_suspend_count());
	metrics_emit(sc, "suspend_held_total", METRICS_COUNTER, NULL, NULL, (double)held);
}

/* --- traffic shaping automation ----------------------------------------------------- */

static void collect_shaping_auto(struct metrics_scrape *sc, void *ctx)
{
	(void)ctx;
	struct shaping_auto_stats st;
	shaping_auto_get_stats(&st);
	uint64_t any = st.expired + st.live_repeats;
	for (int i = 0; i < SA__COUNT; i++)
		any += st.fired[i];
	if (!any)
		return; /* nothing ever fired: no families */
	for (int i = 0; i < SA__COUNT; i++)
		metrics_emit(sc, "shaping_automation_fired_total", METRICS_COUNTER, "action",
			     shaping_auto_action_name((enum shaping_auto_action)i),
			     (double)st.fired[i]);
	metrics_emit(sc, "shaping_automation_repeat_total", METRICS_COUNTER, NULL, NULL,
		     (double)st.live_repeats);
	metrics_emit(sc, "shaping_automation_expired_total", METRICS_COUNTER, NULL, NULL,
		     (double)st.expired);
	metrics_emit(sc, "shaping_automation_active_count", METRICS_GAUGE, NULL, NULL,
		     (double)st.active);
}

/* --- event loop busy poll --------------------------------------------------------- */

static void collect_busy_poll(struct metrics_scrape *sc, void *ctx)
{
	(void)ctx;
	struct kumod_busy_poll_stats st = kumod_loop_busy_poll_stats();
	if (!kumod_loop_busy_poll_us() && !st.windows)
		return; /* never configured: no families */
	metrics_emit(sc, "busy_poll_windows_total", METRICS_COUNTER, NULL, NULL,
		     (double)st.windows);
	metrics_emit(sc, "busy_poll_tail_seconds_total", METRICS_COUNTER, NULL, NULL,
		     (double)st.tail_ns / 1e9);
}

void metrics_collect_register(void)
{
	metrics_declare(decls, sizeof(decls) / sizeof(decls[0]));
	shared_throttle_declare_metrics();
	metrics_register_collector(collect_suspend, NULL);
	metrics_register_collector(collect_ready, NULL);
	metrics_register_collector(collect_sched, NULL);
	metrics_register_collector(collect_spool, NULL);
	metrics_register_collector(collect_memory, NULL);
	metrics_register_collector(collect_busy_poll, NULL);
	metrics_register_collector(collect_shaping_auto, NULL);
}
