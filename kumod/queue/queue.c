/* SPDX-License-Identifier: Apache-2.0 */
/* Scheduled queues: names, configuration, the due-time heap and retries. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/ascii.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "ktrace.h"
#include "policy.h"
#include "proto/duration.h"
#include "proto/sched_spec.h"
#include "queue/queue.h"
#include "queue/suspend.h"
#include "queue/tzdb.h"
#include "spool/logrec.h"
#include "spool/message.h"
#include "spool/spool.h"
#include "spool/timeline.h"

#define QUEUE_DEFAULT_RETRY_MS (20ull * 60 * 1000)
#define QUEUE_DEFAULT_MAX_AGE_MS (7ull * 24 * 3600 * 1000)
#define QUEUE_REFRESH_MS (60ull * 1000)
#define QUEUE_REAP_MS (10ull * 60 * 1000)
#define QUEUE_BUCKETS 1024
/* Due messages handed to the router per timer callback: keeps the loop
 * responsive when a large backlog becomes due at once. */
#define QUEUE_DUE_BATCH 256
/* Shrunk bodies being read back at once (due messages wait in the heap
 * beyond this). */
#define QUEUE_LOADS_MAX 512

struct sched_queue {
	char *name, *domain, *tenant, *campaign, *routing_domain;
	struct queue_config cfg;
	uint64_t cfg_loaded_ms;
	char
	    *cfg_error; /* why the last get_queue_config failed; NULL = the policy's config holds */
	size_t count;	/* messages owned by this queue (scheduled or routed) */
	struct qmsg *head, *tail; /* those messages, arrival order (queue_walk) */
	uint64_t empty_since_ms;  /* when count last dropped to 0 (reaping) */
	struct task *task;
	uint64_t snap_due_ms; /* queue_foreach's scratch: earliest due_ms in the heap */
	struct sched_queue *next_hash, *next_all;
};

static struct {
	uv_loop_t *loop;
	uv_timer_t timer;
	uv_timer_t reap_timer; /* frees queues empty for their reap_interval */
	uint64_t reap_due_ms;  /* when reap_timer fires, 0 = not armed */
	int timer_init;
	struct task *task; /* the maintainer */
	struct qmsg **heap;
	size_t nheap, capheap;
	struct sched_queue *buckets[QUEUE_BUCKETS];
	struct sched_queue *all;
	size_t total;
	queue_router_fn router;
	int shutting_down;
	struct admin_bounce *bounces;
	uint64_t next_bounce_id;
	struct suspend_list suspends;
	uint64_t suspend_held; /* messages held by a suspension so far */
	struct qmsg **idx;     /* id index: chained buckets, power of two */
	size_t idx_nb, idx_n;
	/* lean queued messages (docs/spool.md, "Resident bodies") */
	uv_timer_t shrink_timer; /* next loop iteration: release scheduled bodies */
	struct message **shrink; /* candidates, one reference each */
	size_t nshrink, capshrink;
	struct qload *loads; /* bodies being read back */
	size_t nloads;
} Q;

/* A due (or admin-bounced) message whose body is being read back from the
 * spool; qm NULL once the queue layer shut down meanwhile. */
struct qload {
	struct qmsg *qm;
	int bounce; /* admin bounce (reason) instead of the due path */
	char *reason;
	struct qload *next, *prev;
};

struct admin_bounce {
	uint64_t id;
	char *queue, *domain, *campaign, *tenant, *routing_domain, *reason;
	uint64_t expires_ms;
	uint64_t bounced;
	struct admin_bounce *next;
};

static uint64_t now_ms(void)
{
	return clock_wall_ns() / 1000000u;
}

/* --- pure helpers ---------------------------------------------------------- */

uint64_t queue_retry_delay_ms(const struct queue_config *cfg, unsigned attempts)
{
	uint64_t d = cfg->retry_interval_ms ? cfg->retry_interval_ms : QUEUE_DEFAULT_RETRY_MS;
	for (unsigned i = 0; i < attempts && i < 40; i++) {
		if (cfg->max_retry_interval_ms && d >= cfg->max_retry_interval_ms)
			break;
		d *= 2;
	}
	if (cfg->max_retry_interval_ms && d > cfg->max_retry_interval_ms)
		d = cfg->max_retry_interval_ms;
	return d;
}

void queue_make_name(char *out, size_t outlen, const char *campaign, const char *tenant,
		     const char *domain, const char *routing_domain)
{
	int has_c = campaign && *campaign, has_t = tenant && *tenant;
	snprintf(out, outlen, "%s%s%s%s%s%s%s", has_c ? campaign : "", has_c ? ":" : "",
		 has_t ? tenant : "", (has_c || has_t) ? "@" : "", domain,
		 routing_domain && *routing_domain ? "!" : "",
		 routing_domain && *routing_domain ? routing_domain : "");
}

/* Jitter as KumoMTA: J = min(retry_interval / 20, 60 s), uniform in [-J/2, J/2]. */
static int64_t jitter_ms(const struct queue_config *cfg)
{
	uint64_t j = cfg->retry_interval_ms / 20;
	if (j > 60000)
		j = 60000;
	if (j == 0)
		return 0;
	return (int64_t)((uint64_t)random() % (j + 1)) - (int64_t)(j / 2);
}

/* Creation time (wall ms): kept by the Message and restored from the spool. */
static uint64_t message_created_ms(const struct message *m)
{
	return m->created_ns / 1000000u;
}

/* --- heap ---------------------------------------------------------------- */

static void heap_set(size_t i, struct qmsg *qm)
{
	Q.heap[i] = qm;
	qm->heap_idx = i;
}

static void heap_up(size_t i)
{
	struct qmsg *qm = Q.heap[i];
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (Q.heap[p]->due_ms <= qm->due_ms)
			break;
		heap_set(i, Q.heap[p]);
		i = p;
	}
	heap_set(i, qm);
}

static void heap_down(size_t i)
{
	struct qmsg *qm = Q.heap[i];
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		uint64_t best = qm->due_ms;
		if (l < Q.nheap && Q.heap[l]->due_ms < best) {
			m = l;
			best = Q.heap[l]->due_ms;
		}
		if (r < Q.nheap && Q.heap[r]->due_ms < best)
			m = r;
		if (m == i)
			break;
		heap_set(i, Q.heap[m]);
		i = m;
	}
	heap_set(i, qm);
}

static void heap_push(struct qmsg *qm)
{
	if (Q.nheap == Q.capheap) {
		Q.capheap = Q.capheap ? Q.capheap * 2 : 256;
		Q.heap = xrealloc(Q.heap, Q.capheap * sizeof(*Q.heap));
	}
	Q.heap[Q.nheap] = qm;
	qm->heap_idx = Q.nheap++;
	heap_up(qm->heap_idx);
}

static struct qmsg *heap_pop(void)
{
	struct qmsg *top = Q.heap[0];
	Q.nheap--;
	if (Q.nheap) {
		Q.heap[0] = Q.heap[Q.nheap];
		heap_down(0);
	}
	top->heap_idx = SIZE_MAX;
	return top;
}

/* Restores the heap property after entries were removed or re-timed in place. */
static void heap_rebuild(void)
{
	for (size_t i = 0; i < Q.nheap; i++)
		Q.heap[i]->heap_idx = i;
	for (size_t i = Q.nheap / 2; i-- > 0;)
		heap_down(i);
}

/* --- id index (inspect-message) ------------------------------------------- */

static uint32_t hash_str(const char *s);

static void idx_put(struct qmsg *qm)
{
	size_t slot = hash_str(qm->m->id) & (Q.idx_nb - 1);
	qm->next_id = Q.idx[slot];
	Q.idx[slot] = qm;
}

static void idx_add(struct qmsg *qm)
{
	if (Q.idx_n >= Q.idx_nb) {
		struct qmsg **old = Q.idx;
		size_t oldnb = Q.idx_nb;
		Q.idx_nb = oldnb ? oldnb * 2 : 1024;
		Q.idx = xcalloc(Q.idx_nb, sizeof(*Q.idx));
		for (size_t i = 0; i < oldnb; i++)
			for (struct qmsg *e = old[i], *nx; e; e = nx) {
				nx = e->next_id;
				idx_put(e);
			}
		free(old);
	}
	idx_put(qm);
	Q.idx_n++;
}

static void idx_del(struct qmsg *qm)
{
	if (!Q.idx_nb)
		return;
	for (struct qmsg **pp = &Q.idx[hash_str(qm->m->id) & (Q.idx_nb - 1)]; *pp;
	     pp = &(*pp)->next_id) {
		if (*pp == qm) {
			*pp = qm->next_id;
			Q.idx_n--;
			return;
		}
	}
}

const struct qmsg *queue_find_message(const char *id)
{
	if (!Q.idx_nb)
		return NULL;
	for (struct qmsg *e = Q.idx[hash_str(id) & (Q.idx_nb - 1)]; e; e = e->next_id)
		if (strcmp(e->m->id, id) == 0)
			return e;
	return NULL;
}

/* --- queues -------------------------------------------------------------- */

static uint32_t hash_str(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static void config_free(struct queue_config *c)
{
	for (size_t i = 0; i < c->nmx; i++) {
		free(c->mx_list[i]);
		free(c->mx_names[i]);
	}
	free(c->mx_list);
	free(c->mx_names);
	free(c->custom_lua);
	memset(c, 0, sizeof(*c));
}

static uint64_t json_ms(json_t *o, const char *key, uint64_t dflt)
{
	json_t *v = json_object_get(o, key);
	return json_is_number(v) ? (uint64_t)json_number_value(v) : dflt;
}

static size_t json_size_or(json_t *o, const char *key, size_t dflt)
{
	json_t *v = json_object_get(o, key);
	return json_is_number(v) && json_number_value(v) >= 1 ? (size_t)json_number_value(v) : dflt;
}

/* protocol.custom_lua's batching keys (checked by make_queue_config):
 * KumoMTA's defaults are 1, 1 and 0 s. */
static void config_lua_batch(struct queue_config *c, json_t *cl)
{
	json_t *lat = json_object_get(cl, "max_batch_latency");
	c->lua_batch_size = json_size_or(cl, "batch_size", 1);
	c->lua_min_batch_size = json_size_or(cl, "min_batch_size", 1);
	c->lua_max_batch_latency_ms = 0;
	if (json_is_number(lat)) /* seconds */
		c->lua_max_batch_latency_ms = (uint64_t)(json_number_value(lat) * 1000 + 0.5);
	else if (json_is_string(lat) &&
		 duration_parse_ms(json_string_value(lat), &c->lua_max_batch_latency_ms) != 0)
		c->lua_max_batch_latency_ms = 0;
}

/* Runs get_queue_config. On failure the queue is marked (cfg_error) and
 * routes nothing until a later call succeeds: its messages are held, never
 * sent under defaults the policy did not choose. The retry timing fields
 * fall back to defaults only so held messages are retried with backoff. */
static void queue_load_config(struct sched_queue *q)
{
	json_t *o = NULL;
	struct policy_result r;
	policy_get_queue_config(q->domain, q->tenant, q->campaign, q->routing_domain, &o, &r);
	q->cfg_loaded_ms = now_ms();
	if (r.status != POLICY_OK) {
		if (r.status == POLICY_REJECT) /* kumo.reject() in a config handler */
			snprintf(r.text + strlen(r.text), sizeof(r.text) - strlen(r.text),
				 " (kumo.reject %d)", r.code);
		KTRACE(queue_config_error, q->name, r.text);
		json_decref(o);
		free(q->cfg_error);
		q->cfg_error = xstrdup(r.text);
		if (q->cfg.retry_interval_ms == 0) {
			q->cfg.retry_interval_ms = QUEUE_DEFAULT_RETRY_MS;
			q->cfg.max_age_ms = QUEUE_DEFAULT_MAX_AGE_MS;
			q->cfg.refresh_ms = QUEUE_REFRESH_MS;
			q->cfg.reap_ms = QUEUE_REAP_MS;
		}
		return;
	}
	if (q->cfg_error)
		KTRACE(queue_config_ok, q->name);
	free(q->cfg_error);
	q->cfg_error = NULL;
	config_free(&q->cfg);
	q->cfg.retry_interval_ms = json_ms(o, "retry_interval_ms", QUEUE_DEFAULT_RETRY_MS);
	if (q->cfg.retry_interval_ms == 0)
		q->cfg.retry_interval_ms = 1000;
	q->cfg.max_retry_interval_ms = json_ms(o, "max_retry_interval_ms", 0);
	q->cfg.max_age_ms = json_ms(o, "max_age_ms", QUEUE_DEFAULT_MAX_AGE_MS);
	q->cfg.refresh_ms = json_ms(o, "refresh_interval_ms", QUEUE_REFRESH_MS);
	/* Epoch: kumod's configuration epoch never changes while it runs */
	const char *strategy = json_string_value(json_object_get(o, "refresh_strategy"));
	if (strategy && strcmp(strategy, "Epoch") == 0)
		q->cfg.refresh_ms = UINT64_MAX;
	q->cfg.reap_ms = json_ms(o, "reap_interval_ms", QUEUE_REAP_MS);
	const char *pool = json_string_value(json_object_get(o, "egress_pool"));
	snprintf(q->cfg.egress_pool, sizeof(q->cfg.egress_pool), "%s", pool ? pool : "");
	json_t *cl = json_object_get(json_object_get(o, "protocol"), "custom_lua");
	const char *ctor = json_string_value(json_object_get(cl, "constructor"));
	q->cfg.custom_lua = ctor ? xstrdup(ctor) : NULL;
	config_lua_batch(&q->cfg, cl);
	json_t *mx =
	    json_object_get(json_object_get(json_object_get(o, "protocol"), "smtp"), "mx_list");
	if (json_is_array(mx) && json_array_size(mx)) {
		q->cfg.mx_list = xcalloc(json_array_size(mx), sizeof(char *));
		q->cfg.mx_names = xcalloc(json_array_size(mx), sizeof(char *));
		size_t i;
		json_t *v;
		json_array_foreach(mx, i, v)
		{
			/* "host[:port]", or { name, addr } (checked by make_queue_config) */
			const char *addr =
			    json_string_value(json_is_object(v) ? json_object_get(v, "addr") : v);
			const char *name = json_string_value(json_object_get(v, "name"));
			if (!addr)
				continue;
			q->cfg.mx_names[q->cfg.nmx] = name ? xstrdup(name) : NULL;
			q->cfg.mx_list[q->cfg.nmx++] = xstrdup(addr);
		}
	}
	json_decref(o);
}

/* Splits a queue name into its parts (kumo-compat.md §7); the domains are
 * lower-cased for the policy events (an explicit queue name is kept). */
static void parse_queue_name(struct sched_queue *q)
{
	char *s = xstrdup(q->name);
	char *bang = strchr(s, '!');
	if (bang) {
		*bang = 0;
		q->routing_domain = xstrdup(bang + 1);
	} else {
		q->routing_domain = xstrdup("");
	}
	char *at = strchr(s, '@');
	if (at) {
		*at = 0;
		q->domain = xstrdup(at + 1);
		char *colon = strchr(s, ':');
		if (colon) {
			*colon = 0;
			q->campaign = xstrdup(s);
			q->tenant = xstrdup(colon + 1);
		} else {
			q->campaign = xstrdup("");
			q->tenant = xstrdup(s);
		}
	} else {
		char *colon = strchr(s, ':');
		q->domain = xstrdup(colon ? colon + 1 : s);
		if (colon)
			*colon = 0;
		q->campaign = xstrdup(colon ? s : "");
		q->tenant = xstrdup("");
	}
	free(s);
	ascii_lower(q->domain);
	ascii_lower(q->routing_domain);
}

static struct sched_queue *queue_lookup(const char *name)
{
	for (struct sched_queue *q = Q.buckets[hash_str(name) % QUEUE_BUCKETS]; q; q = q->next_hash)
		if (strcmp(q->name, name) == 0)
			return q;
	return NULL;
}

static struct sched_queue *queue_get(const char *name)
{
	uint32_t b = hash_str(name) % QUEUE_BUCKETS;
	struct sched_queue *q = queue_lookup(name);
	if (q)
		return q;
	q = xcalloc(1, sizeof(*q));
	q->name = xstrdup(name);
	parse_queue_name(q);
	q->task = task_spawn("scheduled_queue", name, Q.task ? Q.task->id : 0);
	task_set_field(q->task, "queue", name);
	task_set_phase(q->task, "Idle", NULL);
	q->next_hash = Q.buckets[b];
	Q.buckets[b] = q;
	q->next_all = Q.all;
	Q.all = q;
	queue_load_config(q);
	KTRACE(queue_created, q->name, q->cfg.retry_interval_ms, q->cfg.max_age_ms);
	return q;
}

/* The queue name a message belongs to: meta queue, else from its parts. */
void queue_message_name(const struct message *m, char *out, size_t outlen)
{
	const char *explicit = message_get_meta_str(m, "queue");
	if (explicit && *explicit) {
		snprintf(out, outlen, "%s", explicit);
		return;
	}
	const char *rcpt = m->nrecipients ? m->recipients[0] : "";
	const char *at = strrchr(rcpt, '@');
	char domain[300];
	snprintf(domain, sizeof(domain), "%s", at ? at + 1 : rcpt);
	ascii_lower(domain);
	char routing[300];
	const char *rd = message_get_meta_str(m, "routing_domain");
	snprintf(routing, sizeof(routing), "%s", rd ? rd : "");
	ascii_lower(routing);
	queue_make_name(out, outlen, message_get_meta_str(m, "campaign"),
			message_get_meta_str(m, "tenant"), domain, rd ? routing : NULL);
}

static const struct suspend_entry *suspend_for(const struct sched_queue *q)
{
	return Q.suspends.head
		   ? suspend_match_sched(&Q.suspends, q->domain, q->tenant, q->campaign, now_ms())
		   : NULL;
}

static void queue_update_phase(struct sched_queue *q)
{
	char phase[64];
	if (suspend_for(q))
		snprintf(phase, sizeof(phase), "Suspended, holding %zu", q->count);
	else
		snprintf(phase, sizeof(phase), q->count ? "Holding %zu" : "Idle", q->count);
	task_set_phase(q->task, phase, q->count ? "due_time" : NULL);
}

/* --- timer --------------------------------------------------------------- */

static void queue_arm(void);
static void reap_arm(uint64_t due);
static void qload_start(struct qmsg *qm, int bounce, const char *reason);
static void shrink_later(struct message *m);
static void admin_bounce_reason(struct qmsg *qm, const char *reason);
static void schedule(struct qmsg *qm, uint64_t due, const char *reason);
static void defer_save(struct message *m, const char *why);
static struct admin_bounce *bounce_for(const struct sched_queue *q);
static void admin_bounce_one(struct qmsg *qm, struct admin_bounce *b);
static void suspend_hold(struct qmsg *qm, const struct suspend_entry *e, uint64_t now);

/* A due message whose queue has no configuration from the policy: kept,
 * a TransientFailure record says why, retried with backoff. It never
 * expires meanwhile (max_age is the policy's to give). */
static void config_error_hold(struct qmsg *qm, uint64_t now)
{
	struct sched_queue *q = qm->q;
	char text[700];
	snprintf(text, sizeof(text), "KumoMTA internal: failed to obtain queue config for %s: %s",
		 q->name, q->cfg_error);
	struct logrec_response resp = {.code = 451, .enhanced = "4.3.0", .content = text};
	logrec_log("TransientFailure", qm->m, NULL, &resp, NULL, q->name, NULL, NULL, NULL, NULL);
	uint64_t delay = queue_retry_delay_ms(&q->cfg, qm->m->attempts);
	qm->m->attempts++;
	KTRACE(queue_config_hold, qm->m->id, q->name, delay, q->cfg_error);
	schedule(qm, now + delay, "QueueConfigError");
}

/* throttle_insert_ready_queue: 1 when a handler delayed the message or failed (then it
 * is back in the scheduled queue; an error never lets it through unchecked). */
static int throttled_by_policy(struct qmsg *qm, uint64_t now)
{
	if (!policy_has_handler("throttle_insert_ready_queue"))
		return 0;
	uint64_t delay = 0;
	struct policy_result r;
	policy_throttle_insert_ready_queue(qm->m, &delay, &r);
	if (r.status != POLICY_OK) {
		delay = queue_retry_delay_ms(&qm->q->cfg, qm->m->attempts);
		KTRACE(queue_throttle_error, qm->m->id, qm->q->name, delay, r.text);
		schedule(qm, now + delay, "ThrottleInsertReadyQueueError");
		return 1;
	}
	if (!delay)
		return 0;
	KTRACE(queue_throttle_delay, qm->m->id, qm->q->name, delay);
	/* as KumoMTA: a Delayed record (not an attempt) and a per-queue counter */
	char text[400], due[40];
	duration_format_ms(delay, due, sizeof(due));
	snprintf(text, sizeof(text),
		 "KumoMTA internal: %s throttle_insert_ready_queue event throttled message rate, "
		 "due in %s",
		 qm->q->name, due);
	struct logrec_response resp = {.code = 451, .enhanced = "4.4.4", .content = text};
	logrec_log("Delayed", qm->m, NULL, &resp, NULL, qm->q->name, NULL, NULL, NULL, NULL);
	metrics_counter_add("delayed_due_to_throttle_insert_ready", "queue", qm->q->name, 1);
	schedule(qm, now + delay, "ThrottledByPolicy");
	return 1;
}

/* A due message (body resident): bounced, held or handed to the router. */
static void due_one(struct qmsg *qm, uint64_t now)
{
	struct admin_bounce *b = Q.bounces ? bounce_for(qm->q) : NULL;
	if (b) {
		admin_bounce_one(qm, b);
		return;
	}
	const struct suspend_entry *se = suspend_for(qm->q);
	if (se) {
		suspend_hold(qm, se, now);
		return;
	}
	qm->held = 0;
	struct sched_queue *q = qm->q;
	/* a failed config is asked again at most once a second */
	if (now - q->cfg_loaded_ms > q->cfg.refresh_ms ||
	    (q->cfg_error && now - q->cfg_loaded_ms >= 1000))
		queue_load_config(q);
	if (q->cfg_error) {
		config_error_hold(qm, now);
		return;
	}
	if (Q.router && throttled_by_policy(qm, now))
		return;
	if (Q.router) {
		Q.router(qm);
	} else {
		/* nothing can deliver yet: keep it, try again later */
		qm->due_ms = now + 1000;
		heap_push(qm);
		defer_save(qm->m, "NoRouter");
	}
}

static void queue_timer_cb(uv_timer_t *t)
{
	struct task *prev = task_enter(Q.task);
	task_wake(Q.task);
	uint64_t now = now_ms();
	size_t n = 0;
	while (Q.nheap && Q.heap[0]->due_ms <= now && n < QUEUE_DUE_BATCH && !Q.shutting_down) {
		struct qmsg *qm = heap_pop();
		n++;
		KTRACE(queue_due, qm->m->id, qm->q->name);
		MSG_TIMELINE(qm->m->id, "Due", "queue %s", qm->q->name);
		if (!message_data_resident(qm->m)) {
			qload_start(qm, 0, NULL); /* due_one when the body is back */
			if (Q.nloads >= QUEUE_LOADS_MAX)
				break;
			continue;
		}
		due_one(qm, now);
	}
	task_set_phase(Q.task, Q.nheap ? "Waiting" : "Idle", Q.nheap ? "next_due" : NULL);
	queue_arm();
	task_exit(Q.task, prev);
}

static void queue_arm(void)
{
	if (!Q.timer_init || Q.shutting_down)
		return;
	if (!Q.nheap || Q.nloads >= QUEUE_LOADS_MAX) { /* a finished load re-arms */
		uv_timer_stop(&Q.timer);
		return;
	}
	uint64_t now = now_ms(), due = Q.heap[0]->due_ms;
	uv_timer_start(&Q.timer, queue_timer_cb, due > now ? due - now : 0, 0);
}

/* --- admin bounces ------------------------------------------------------------ */

static int field_matches(const char *want, const char *have)
{
	return !want || !*want || strcasecmp(want, have ? have : "") == 0;
}

static int bounce_matches(const struct admin_bounce *b, const struct sched_queue *q)
{
	return field_matches(b->queue, q->name) && field_matches(b->domain, q->domain) &&
	       field_matches(b->campaign, q->campaign) && field_matches(b->tenant, q->tenant) &&
	       field_matches(b->routing_domain, q->routing_domain);
}

static void admin_bounce_free(struct admin_bounce *b)
{
	free(b->queue);
	free(b->domain);
	free(b->campaign);
	free(b->tenant);
	free(b->routing_domain);
	free(b->reason);
	free(b);
}

/* The live entry matching q, if any (expired entries are dropped). */
static struct admin_bounce *bounce_for(const struct sched_queue *q)
{
	uint64_t now = now_ms();
	struct admin_bounce **pp = &Q.bounces;
	while (*pp) {
		struct admin_bounce *b = *pp;
		if (b->expires_ms <= now) {
			*pp = b->next;
			admin_bounce_free(b);
			continue;
		}
		if (bounce_matches(b, q))
			return b;
		pp = &b->next;
	}
	return NULL;
}

static void admin_bounce_reason(struct qmsg *qm, const char *reason)
{
	char text[600];
	snprintf(text, sizeof(text), "KumoMTA internal: Administrator bounced: %s", reason);
	struct logrec_response resp = {.code = 551, .enhanced = "5.6.0", .content = text};
	logrec_log("AdminBounce", qm->m, NULL, &resp, NULL, qm->q->name, NULL, NULL, NULL, NULL);
	KTRACE(queue_admin_bounce, qm->m->id, qm->q->name, reason);
	MSG_TIMELINE(qm->m->id, "AdminBounce", "%s", reason);
	spool_discard(qm->m);
	queue_done(qm);
}

static void admin_bounce_one(struct qmsg *qm, struct admin_bounce *b)
{
	b->bounced++;
	admin_bounce_reason(qm, b->reason);
}

static char *opt_dup(const char *s)
{
	return s && *s ? xstrdup(s) : NULL;
}

uint64_t queue_admin_bounce(const struct queue_bounce_match *mt, const char *reason,
			    uint64_t duration_ms, size_t *bounced)
{
	struct admin_bounce *b = xcalloc(1, sizeof(*b));
	b->id = ++Q.next_bounce_id;
	b->queue = opt_dup(mt->queue);
	b->domain = opt_dup(mt->domain);
	b->campaign = opt_dup(mt->campaign);
	b->tenant = opt_dup(mt->tenant);
	b->routing_domain = opt_dup(mt->routing_domain);
	b->reason = xstrdup(reason);
	b->expires_ms = now_ms() + duration_ms;
	b->next = Q.bounces;
	Q.bounces = b;
	/* bounce what is scheduled now: keep the rest and rebuild the heap */
	size_t keep = 0, n = 0;
	for (size_t i = 0; i < Q.nheap; i++) {
		struct qmsg *qm = Q.heap[i];
		if (bounce_matches(b, qm->q)) {
			qm->heap_idx = SIZE_MAX;
			if (message_data_resident(qm->m)) {
				admin_bounce_one(qm, b);
			} else { /* its record wants the headers: read the body first */
				b->bounced++;
				qload_start(qm, 1, b->reason);
			}
			n++;
		} else {
			Q.heap[keep++] = qm;
		}
	}
	Q.nheap = keep;
	heap_rebuild();
	queue_arm();
	*bounced = n;
	return b->id;
}

int queue_admin_bounce_cancel(uint64_t id)
{
	for (struct admin_bounce **pp = &Q.bounces; *pp; pp = &(*pp)->next) {
		if ((*pp)->id == id) {
			struct admin_bounce *b = *pp;
			*pp = b->next;
			admin_bounce_free(b);
			return 0;
		}
	}
	return -ENOENT;
}

json_t *queue_admin_bounce_list(void)
{
	json_t *a = json_array();
	uint64_t now = now_ms();
	for (struct admin_bounce *b = Q.bounces; b; b = b->next) {
		if (b->expires_ms <= now)
			continue;
		json_t *o = json_pack("{s:I, s:s, s:f, s:I}", "id", (json_int_t)b->id, "reason",
				      b->reason, "expires", (double)b->expires_ms / 1000.0,
				      "bounced", (json_int_t)b->bounced);
		const char *keys[] = {"queue", "domain", "campaign", "tenant", "routing_domain"};
		const char *vals[] = {b->queue, b->domain, b->campaign, b->tenant,
				      b->routing_domain};
		for (size_t i = 0; i < 5; i++)
			json_object_set_new(o, keys[i],
					    vals[i] ? json_string(vals[i]) : json_null());
		json_array_append_new(a, o);
	}
	return a;
}

/* --- admin suspensions ----------------------------------------------------- */

/* A due message of a suspended queue: logged as KumoMTA does and put back
 * until the entry expires (no attempt counted; the message stays spooled). */
static void suspend_hold(struct qmsg *qm, const struct suspend_entry *e, uint64_t now)
{
	char text[600];
	snprintf(text, sizeof(text), "KumoMTA internal: scheduled queue is suspended: %s",
		 e->reason);
	struct logrec_response resp = {.code = 451, .enhanced = "4.4.4", .content = text};
	logrec_log("TransientFailure", qm->m, NULL, &resp, NULL, qm->q->name, NULL, NULL, NULL,
		   NULL);
	KTRACE(queue_suspend_hold, qm->m->id, qm->q->name, e->reason, e->expires_ms - now);
	MSG_TIMELINE(qm->m->id, "Suspended", "held: %s", e->reason);
	Q.suspend_held++;
	qm->held = 1;
	qm->due_ms = e->expires_ms;
	heap_push(qm);
	queue_update_phase(qm->q);
	defer_save(qm->m, "Suspended");
	shrink_later(qm->m);
}

static void suspend_criteria(const struct suspend_entry *e, char *out, size_t outlen)
{
	snprintf(out, outlen, "domain=%s tenant=%s campaign=%s", e->domain ? e->domain : "*",
		 e->tenant ? e->tenant : "*", e->campaign ? e->campaign : "*");
}

static void suspend_expired_cb(const struct suspend_entry *e, void *ctx)
{
	char crit[800];
	suspend_criteria(e, crit, sizeof(crit));
	KTRACE(queue_suspend, e->id, "expired", crit, e->reason, 0);
}

/* Drops expired entries: their held messages are due at the expiry already. */
static void suspend_prune_expired(void)
{
	if (Q.suspends.head)
		suspend_prune(&Q.suspends, now_ms(), suspend_expired_cb, NULL);
}

const char *queue_admin_suspend(const char *domain, const char *tenant, const char *campaign,
				const char *reason, uint64_t expires_ms)
{
	suspend_prune_expired();
	struct suspend_entry *e =
	    suspend_add(&Q.suspends, domain, tenant, campaign, NULL, reason, expires_ms);
	char crit[800];
	suspend_criteria(e, crit, sizeof(crit));
	KTRACE(queue_suspend, e->id, "created", crit, e->reason, 0);
	for (struct sched_queue *q = Q.all; q; q = q->next_all)
		queue_update_phase(q);
	return e->id;
}

/* Held messages no live entry covers any more become due now. */
static size_t suspend_release(void)
{
	uint64_t now = now_ms();
	size_t n = 0;
	for (size_t i = 0; i < Q.nheap; i++) {
		struct qmsg *qm = Q.heap[i];
		if (!qm->held || suspend_for(qm->q))
			continue;
		qm->held = 0;
		qm->due_ms = now;
		n++;
	}
	if (n) {
		heap_rebuild();
		queue_arm();
	}
	return n;
}

int queue_admin_suspend_cancel(const char *id, size_t *released)
{
	struct suspend_entry *e = suspend_take(&Q.suspends, id);
	if (!e)
		return -ENOENT;
	*released = suspend_release();
	char crit[800];
	suspend_criteria(e, crit, sizeof(crit));
	KTRACE(queue_suspend, e->id, "cancelled", crit, e->reason, (uint64_t)*released);
	suspend_entry_free(e);
	for (struct sched_queue *q = Q.all; q; q = q->next_all)
		queue_update_phase(q);
	return 0;
}

static json_t *json_str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

json_t *queue_admin_suspend_list(void)
{
	suspend_prune_expired();
	json_t *a = json_array();
	uint64_t now = now_ms();
	for (const struct suspend_entry *e = Q.suspends.head; e; e = e->next) {
		char left[64], expires[40];
		duration_format_ms(e->expires_ms > now ? e->expires_ms - now : 0, left,
				   sizeof(left));
		rfc3339_format_ms(e->expires_ms, expires, sizeof(expires));
		json_array_append_new(
		    a, json_pack("{s:s, s:o, s:o, s:o, s:s, s:s, s:s}", "id", e->id, "domain",
				 json_str_or_null(e->domain), "tenant", json_str_or_null(e->tenant),
				 "campaign", json_str_or_null(e->campaign), "reason", e->reason,
				 "duration", left, "expires", expires));
	}
	return a;
}

void queue_admin_suspend_stats(size_t *active, uint64_t *held_total)
{
	suspend_prune_expired();
	*active = Q.suspends.count;
	*held_total = Q.suspend_held;
}

/* --- reaping idle queues ------------------------------------------------------ */

static void queue_free(struct sched_queue *q)
{
	config_free(&q->cfg);
	free(q->cfg_error);
	task_close(q->task);
	free(q->name);
	free(q->domain);
	free(q->tenant);
	free(q->campaign);
	free(q->routing_domain);
	free(q);
}

/* Unlinks and frees q (no message refers to it: count is 0). */
static void queue_reap(struct sched_queue *q, uint64_t now)
{
	struct sched_queue **pp = &Q.buckets[hash_str(q->name) % QUEUE_BUCKETS];
	while (*pp != q)
		pp = &(*pp)->next_hash;
	*pp = q->next_hash;
	for (pp = &Q.all; *pp != q; pp = &(*pp)->next_all)
		;
	*pp = q->next_all;
	KTRACE(queue_reap, q->name, now - q->empty_since_ms);
	queue_free(q);
}

static void reap_cb(uv_timer_t *t)
{
	(void)t;
	struct task *prev = task_enter(Q.task);
	task_wake(Q.task);
	Q.reap_due_ms = 0;
	uint64_t now = now_ms(), next = 0;
	for (struct sched_queue *q = Q.all, *n; q; q = n) {
		n = q->next_all;
		if (q->count)
			continue;
		uint64_t due = q->empty_since_ms + q->cfg.reap_ms;
		if (due <= now)
			queue_reap(q, now);
		else if (!next || due < next)
			next = due;
	}
	if (next)
		reap_arm(next);
	task_exit(Q.task, prev);
}

/* Makes reap_timer fire no later than due (wall clock ms). */
static void reap_arm(uint64_t due)
{
	if (!Q.timer_init || Q.shutting_down || (Q.reap_due_ms && Q.reap_due_ms <= due))
		return;
	uint64_t now = now_ms();
	Q.reap_due_ms = due;
	uv_timer_start(&Q.reap_timer, reap_cb, due > now ? due - now : 0, 0);
}

/* --- API ----------------------------------------------------------------- */

int queue_init(uv_loop_t *loop)
{
	Q.loop = loop;
	Q.task = task_spawn("queue_maintainer", "scheduled queues", 0);
	task_set_phase(Q.task, "Idle", NULL);
	uv_timer_init(loop, &Q.timer);
	uv_timer_init(loop, &Q.reap_timer);
	uv_timer_init(loop, &Q.shrink_timer);
	Q.timer_init = 1;
	srandom((unsigned)clock_mono_ns());
	return 0;
}

void queue_set_router(queue_router_fn fn)
{
	Q.router = fn;
}

/* --- lean queued messages: release bodies, read them back when due --------------- */

/* Releases the bodies of the candidates still waiting in the heap that only
 * their queue holds (a reception, a Lua value, a dispatcher or a spool
 * operation holding a reference may still read the body: those stay). */
static void shrink_cb(uv_timer_t *t)
{
	(void)t;
	struct task *prev = task_enter(Q.task);
	for (size_t i = 0; i < Q.nshrink; i++) {
		struct message *m = Q.shrink[i];
		const struct qmsg *qm = queue_find_message(m->id);
		if (qm && qm->m == m && qm->heap_idx != SIZE_MAX && m->refs == 2 &&
		    spool_is_open()) {
			size_t len = message_data_len(m);
			if (message_shrink_data(m))
				KTRACE(queue_shrink, m->id, qm->q->name, (uint64_t)len);
		}
		message_unref(m);
	}
	Q.nshrink = 0;
	if (Q.capshrink > 4096) { /* after a burst */
		free(Q.shrink);
		Q.shrink = NULL;
		Q.capshrink = 0;
	}
	task_exit(Q.task, prev);
}

static void shrink_later(struct message *m)
{
	if (!m->data_stored || m->data_shrunk || !spool_is_open() || !Q.timer_init ||
	    Q.shutting_down)
		return;
	if (Q.nshrink == Q.capshrink) {
		Q.capshrink = Q.capshrink ? 2 * Q.capshrink : 64;
		Q.shrink = xrealloc(Q.shrink, Q.capshrink * sizeof(*Q.shrink));
	}
	Q.shrink[Q.nshrink++] = message_ref(m);
	if (Q.nshrink == 1)
		uv_timer_start(&Q.shrink_timer, shrink_cb, 0, 0);
}

/* --- deferred spooling (docs/spool.md, "Deferred spooling") ------------------------ */

/* A deferred message was written: its body may now leave memory like any
 * scheduled message's. */
static void defer_saved(struct message *m, int err)
{
	const struct qmsg *qm = err ? NULL : queue_find_message(m->id);
	if (qm && qm->m == m && qm->heap_idx != SIZE_MAX)
		shrink_later(m);
}

/* m stays queued beyond its first attempt (or beyond this process): a
 * message accepted with deferred_spool is written to the spool now, as
 * KumoMTA saves it when it goes to the delayed queue. */
static void defer_save(struct message *m, const char *why)
{
	if (m->spool_deferred)
		spool_save_deferred(m, why, defer_saved);
}

static void qload_done(void *ctx, int err, const char *why)
{
	struct qload *l = ctx;
	struct qmsg *qm = l->qm;
	if (!qm) { /* shut down meanwhile */
		free(l->reason);
		free(l);
		return;
	}
	struct task *prev = task_enter(Q.task);
	if (l->prev)
		l->prev->next = l->next;
	else
		Q.loads = l->next;
	if (l->next)
		l->next->prev = l->prev;
	Q.nloads--;
	uint64_t now = now_ms();
	if (!err) {
		if (l->bounce)
			admin_bounce_reason(qm, l->reason);
		else
			due_one(qm, now);
	} else {
		/* the attempt fails before it starts: a TransientFailure record
		 * names the reason; a quarantined or vanished message leaves the
		 * queue (its files, if any, are in <path>/quarantine/), a read
		 * error is retried */
		int gone = err == -EBADMSG || err == -ENOENT;
		char text[600];
		snprintf(text, sizeof(text),
			 "KumoMTA internal: failed to load message data from the spool: %s%s", why,
			 err == -EBADMSG  ? " (message quarantined)"
			 : err == -ENOENT ? " (message no longer in the spool)"
					  : " (will retry)");
		struct logrec_response resp = {.code = 451, .enhanced = "4.3.0", .content = text};
		logrec_log("TransientFailure", qm->m, NULL, &resp, NULL, qm->q->name, NULL, NULL,
			   NULL, NULL);
		MSG_TIMELINE(qm->m->id, "TransientFailure", "%s", text);
		log_warn("kumod::queue", "message %s: %s", qm->m->id, text);
		if (gone)
			queue_done(qm);
		else
			schedule(qm, now + 1000 + (uint64_t)(random() % 1000), "LoadFailed");
	}
	free(l->reason);
	free(l);
	queue_arm();
	task_exit(Q.task, prev);
}

/* qm is out of the heap; its body is read back, then it goes on. */
static void qload_start(struct qmsg *qm, int bounce, const char *reason)
{
	struct qload *l = xcalloc(1, sizeof(*l));
	l->qm = qm;
	l->bounce = bounce;
	l->reason = reason ? xstrdup(reason) : NULL;
	l->next = Q.loads;
	if (Q.loads)
		Q.loads->prev = l;
	Q.loads = l;
	Q.nloads++;
	spool_load_data(qm->m, qload_done, l);
}

static void schedule(struct qmsg *qm, uint64_t due, const char *reason)
{
	uint64_t now = now_ms();
	qm->due_ms = due;
	heap_push(qm);
	KTRACE(queue_insert, qm->m->id, qm->q->name, reason, due > now ? due - now : 0,
	       (int32_t)qm->m->attempts);
	MSG_TIMELINE(qm->m->id, "Scheduled", "queue %s reason %s due in %" PRIu64 "ms, attempts %d",
		     qm->q->name, reason, due > now ? due - now : 0, (int)qm->m->attempts);
	queue_update_phase(qm->q);
	if (qm->heap_idx == 0)
		queue_arm();
	if (due > now)
		defer_save(qm->m, reason);
	shrink_later(qm->m);
}

/* Expiration: logged and removed from the spool. */
static void queue_expire(struct qmsg *qm, uint64_t next_delay_ms)
{
	char text[256];
	snprintf(text, sizeof(text),
		 "Next delivery time would be %" PRIu64 "s after creation, which exceeds "
		 "max_age=%" PRIu64 "s",
		 (now_ms() + next_delay_ms - message_created_ms(qm->m)) / 1000,
		 qm->q->cfg.max_age_ms / 1000);
	struct logrec_response resp = {.code = 551, .enhanced = "5.4.7", .content = text};
	logrec_log("Expiration", qm->m, NULL, &resp, NULL, qm->q->name, NULL, NULL, NULL, NULL);
	KTRACE(queue_expire, qm->m->id, qm->q->name, (int32_t)qm->m->attempts);
	MSG_TIMELINE(qm->m->id, "Expiration", "after %d attempts", (int)qm->m->attempts);
	spool_discard(qm->m);
	queue_done(qm);
}

/* --- per-message scheduling (msg:set_scheduling) ---------------------------------- */

/* 1 and the message's scheduling spec, or 0 when it has none (a spec that
 * no longer parses is ignored: it was validated when it was set; a time
 * zone that can no longer be loaded leaves its window in UTC, logged). */
static int message_sched(const struct message *m, struct sched_spec *ss)
{
	json_t *j = message_get_meta(m, SCHED_SPEC_META_KEY);
	char err[300];
	if (!j || sched_spec_from_json(j, ss, err, sizeof(err)) != 0)
		return 0;
	if (sched_spec_needs_zone(ss) && !(ss->zone = tzdb_get(ss->tz, err, sizeof(err))))
		log_warn("kumod::queue",
			 "message %s: scheduling tz %s; its window is applied in UTC", m->id, err);
	return 1;
}

/* Expiration at the scheduled expiry: logged and removed from the spool. */
static void queue_expire_scheduled(struct qmsg *qm, uint64_t due, const struct sched_spec *ss)
{
	char text[256], d[40], e[40];
	rfc3339_format_ms(due, d, sizeof(d));
	rfc3339_format_ms(ss->expires_ms, e, sizeof(e));
	snprintf(text, sizeof(text),
		 "Next delivery time %s would be at or after the scheduled expiration %s", d, e);
	struct logrec_response resp = {.code = 551, .enhanced = "5.4.7", .content = text};
	logrec_log("Expiration", qm->m, NULL, &resp, NULL, qm->q->name, NULL, NULL, NULL, NULL);
	KTRACE(queue_expire, qm->m->id, qm->q->name, (int32_t)qm->m->attempts);
	spool_discard(qm->m);
	queue_done(qm);
}

/* The due time the message's scheduling allows for wanted; 1 when it is
 * at or past the scheduled expiry (then *due is that time). */
static int sched_due(struct qmsg *qm, const struct sched_spec *ss, uint64_t wanted, uint64_t *due)
{
	uint64_t now = now_ms();
	*due = sched_spec_adjust(ss, wanted);
	if (*due != wanted)
		KTRACE(queue_scheduled, qm->m->id, qm->q->name, wanted > now ? wanted - now : 0,
		       *due > now ? *due - now : 0);
	return ss->has_expires && *due >= ss->expires_ms;
}

void queue_insert(struct message *m, const char *reason)
{
	char name[1024];
	queue_message_name(m, name, sizeof(name));
	struct sched_queue *q = queue_get(name);
	struct qmsg *qm = xcalloc(1, sizeof(*qm));
	qm->m = message_ref(m);
	qm->q = q;
	qm->heap_idx = SIZE_MAX;
	idx_add(qm);
	qm->q_prev = q->tail;
	if (q->tail)
		q->tail->q_next = qm;
	else
		q->head = qm;
	q->tail = qm;
	q->count++;
	Q.total++;
	uint64_t now = now_ms(), due = now;
	if (strcmp(reason, "Received") == 0 && m->due_ms > now)
		due = m->due_ms; /* msg:set_due at reception */
	if (strcmp(reason, "Enumerated") == 0) {
		/* attempts inferred from age and the retry schedule (KumoMTA) */
		uint64_t created = message_created_ms(m), t = created;
		unsigned n = 0;
		while (n < 1000) {
			uint64_t d = queue_retry_delay_ms(&q->cfg, n);
			if (t + d > now)
				break;
			t += d;
			n++;
		}
		qm->m->attempts = n;
		struct sched_spec es;
		if (now - created > q->cfg.max_age_ms &&
		    !(message_sched(m, &es) && es.has_expires)) {
			queue_expire(qm, 0);
			return;
		}
	}
	struct sched_spec ss;
	if (message_sched(m, &ss) && sched_due(qm, &ss, due, &due)) {
		queue_expire_scheduled(qm, due, &ss);
		return;
	}
	schedule(qm, due, reason);
}

int queue_check_config(const struct message *m, const char *protocol, const char *peer_addr,
		       char *err, size_t errlen)
{
	char name[1024];
	queue_message_name(m, name, sizeof(name));
	struct sched_queue *q = queue_lookup(name);
	if (!q)
		q = queue_get(name); /* creating it runs get_queue_config */
	else if (q->cfg_error)
		queue_load_config(q); /* perhaps fixed since (policy reloaded, database back) */
	if (!q->cfg_error)
		return 0;
	snprintf(err, errlen, "failed to obtain queue config for %s: %s", q->name, q->cfg_error);
	for (char *p = err; *p; p++) /* one line: it goes into an SMTP reply */
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
	/* KumoMTA's record for a message refused at insertion during reception */
	char text[800];
	snprintf(text, sizeof(text),
		 "KumoMTA internal: QueueManager::insert failed during reception: %s", err);
	struct logrec_response resp = {.code = 500, .content = text};
	struct logrec_peer peer = {.addr = peer_addr};
	logrec_log("Bounce", m, NULL, &resp, &peer, q->name, NULL, NULL, NULL, protocol);
	KTRACE(queue_config_refused, m->id, q->name, q->cfg_error);
	if (!q->count) { /* freed after its reap_interval unless a message comes */
		q->empty_since_ms = now_ms();
		reap_arm(q->empty_since_ms + q->cfg.reap_ms);
	}
	return -1;
}

static void rebind_saved(void *ctx, int err)
{
	char *id = ctx;
	if (err && err != -ENOENT)
		log_warn("kumod::queue",
			 "message %s: saving its new queue after requeue_message failed (%s); "
			 "after a restart it returns to the queue it was in",
			 id, strerror(-err));
	free(id);
}

/* requeue_message (KumoMTA's): the handlers may rebind the message to
 * another queue (meta queue, tenant, campaign, routing_domain). Returns 1
 * when the message was dealt with here: bounced by kumo.reject (a Bounce
 * record, removed from the spool), or moved to its new queue, due now
 * (the attempt still counted). 0: requeue as usual, in the queue it was in
 * (also after a handler error: logged by the engine). */
static int requeue_event(struct qmsg *qm, const char *reason, int increment, const char *why_code,
			 const char *why_text)
{
	if (!policy_has_handler("requeue_message"))
		return 0;
	char resp[600], before[1024], after[1024];
	if (why_code || why_text)
		snprintf(resp, sizeof(resp), "%s%s%s", why_code ? why_code : "",
			 why_code && why_text ? " " : "", why_text ? why_text : "");
	else
		snprintf(resp, sizeof(resp), "451 KumoMTA internal: %s", reason);
	queue_message_name(qm->m, before, sizeof(before));
	struct policy_result r;
	policy_requeue_message(qm->m, resp, reason, increment, &r);
	if (r.status == POLICY_REJECT) {
		struct logrec_response lr = {.code = r.code, .content = r.text};
		logrec_log("Bounce", qm->m, NULL, &lr, NULL, qm->q->name, NULL, NULL, NULL, NULL);
		KTRACE(queue_requeue_event, qm->m->id, qm->q->name, "", "bounced");
		MSG_TIMELINE(qm->m->id, "Bounce", "requeue_message: kumo.reject(%d)", r.code);
		spool_discard(qm->m);
		queue_done(qm);
		return 1;
	}
	queue_message_name(qm->m, after, sizeof(after));
	if (r.status != POLICY_OK || strcmp(before, after) == 0 ||
	    strcmp(after, qm->q->name) == 0) {
		KTRACE(queue_requeue_event, qm->m->id, qm->q->name, "",
		       r.status == POLICY_OK ? "kept" : "error");
		return 0;
	}
	/* rebound: out of this queue's list, into the new one's, due now */
	struct sched_queue *from = qm->q, *to = queue_get(after);
	if (qm->q_prev)
		qm->q_prev->q_next = qm->q_next;
	else
		from->head = qm->q_next;
	if (qm->q_next)
		qm->q_next->q_prev = qm->q_prev;
	else
		from->tail = qm->q_prev;
	from->count--;
	queue_update_phase(from);
	if (!from->count) {
		from->empty_since_ms = now_ms();
		reap_arm(from->empty_since_ms + from->cfg.reap_ms);
	}
	qm->q = to;
	qm->q_next = NULL;
	qm->q_prev = to->tail;
	if (to->tail)
		to->tail->q_next = qm;
	else
		to->head = qm;
	to->tail = qm;
	to->count++;
	if (increment)
		qm->m->attempts++;
	KTRACE(queue_requeue_event, qm->m->id, from->name, to->name, "rebound");
	MSG_TIMELINE(qm->m->id, "Rebind", "requeue_message: %s -> %s", from->name, to->name);
	if (qm->m->spool_deferred)
		defer_save(qm->m, "TransientFailure");
	else /* the new meta survives a restart */
		spool_update_meta(qm->m, rebind_saved, xstrdup(qm->m->id));
	schedule(qm, now_ms(), reason);
	return 1;
}

void queue_requeue(struct qmsg *qm, const char *reason, int increment, const char *why_code,
		   const char *why_text)
{
	if (requeue_event(qm, reason, increment, why_code, why_text))
		return;
	struct sched_queue *q = qm->q;
	uint64_t delay;
	struct sched_spec ss;
	int has_sched = message_sched(qm->m, &ss);
	if (increment) {
		delay = queue_retry_delay_ms(&q->cfg, qm->m->attempts);
		qm->m->attempts++; /* the Message's count: spooled and logged from there */
		int64_t j = jitter_ms(&q->cfg);
		if (j < 0 && (uint64_t)-j >= delay)
			j = 0;
		delay = (uint64_t)((int64_t)delay + j);
		uint64_t age = now_ms() - message_created_ms(qm->m);
		/* a scheduled expiry replaces max_age (KumoMTA) */
		if (!(has_sched && ss.has_expires) && age + delay > q->cfg.max_age_ms) {
			queue_expire(qm, delay);
			return;
		}
	} else {
		/* not an attempt (ready queue full, routing deferred): short delay */
		delay = 1000 + (uint64_t)(random() % 1000);
	}
	if (increment && (why_code || why_text)) {
		char err[256];
		snprintf(err, sizeof(err), "%s%s%s", why_code ? why_code : "",
			 why_code && why_text ? " " : "", why_text ? why_text : "");
		free(qm->last_error);
		qm->last_error = xstrdup(err);
	}
	uint64_t due = now_ms() + delay;
	if (has_sched && sched_due(qm, &ss, due, &due)) {
		queue_expire_scheduled(qm, due, &ss);
		return;
	}
	if (increment)
		defer_save(qm->m, "TransientFailure");
	schedule(qm, due, reason);
}

void queue_done(struct qmsg *qm)
{
	struct sched_queue *q = qm->q;
	/* leaves memory without an outcome (shutdown): a deferred message is
	 * written first, so it is delivered after the restart */
	if (qm->m->spool_deferred && !qm->m->spool_gone)
		spool_save_deferred(qm->m, "Shutdown", NULL);
	idx_del(qm);
	if (qm->q_prev)
		qm->q_prev->q_next = qm->q_next;
	else
		q->head = qm->q_next;
	if (qm->q_next)
		qm->q_next->q_prev = qm->q_prev;
	else
		q->tail = qm->q_prev;
	free(qm->last_error);
	q->count--;
	Q.total--;
	queue_update_phase(q);
	message_unref(qm->m);
	free(qm);
	if (!q->count) {
		q->empty_since_ms = now_ms();
		reap_arm(q->empty_since_ms + q->cfg.reap_ms);
	}
}

void queue_shutdown(void)
{
	Q.shutting_down = 1;
	if (Q.timer_init) {
		uv_timer_stop(&Q.timer);
		uv_close((uv_handle_t *)&Q.timer, NULL);
		uv_close((uv_handle_t *)&Q.reap_timer, NULL);
		uv_close((uv_handle_t *)&Q.shrink_timer, NULL);
		Q.timer_init = 0;
	}
	/* bodies being read back: the message leaves memory (it stays spooled) */
	for (struct qload *l = Q.loads; l; l = l->next) {
		queue_done(l->qm);
		l->qm = NULL;
	}
	Q.loads = NULL;
	Q.nloads = 0;
	for (size_t i = 0; i < Q.nshrink; i++)
		message_unref(Q.shrink[i]);
	free(Q.shrink);
	Q.shrink = NULL;
	Q.nshrink = Q.capshrink = 0;
	/* Scheduled messages stay in the spool; free the in-memory copies. */
	while (Q.nheap) {
		struct qmsg *qm = heap_pop();
		queue_done(qm);
	}
	free(Q.heap);
	Q.heap = NULL;
	Q.capheap = 0;
	struct sched_queue *q = Q.all, *next;
	for (; q; q = next) {
		next = q->next_all;
		queue_free(q);
	}
	Q.all = NULL;
	memset(Q.buckets, 0, sizeof(Q.buckets));
	suspend_clear(&Q.suspends);
	free(Q.idx);
	Q.idx = NULL;
	Q.idx_nb = Q.idx_n = 0;
	while (Q.bounces) {
		struct admin_bounce *b = Q.bounces;
		Q.bounces = b->next;
		admin_bounce_free(b);
	}
	if (Q.task) {
		task_close(Q.task);
		Q.task = NULL;
	}
}

const char *queue_name(const struct sched_queue *q)
{
	return q->name;
}

const char *queue_domain(const struct sched_queue *q)
{
	return q->domain;
}

const char *queue_routing_domain(const struct sched_queue *q)
{
	return q->routing_domain[0] ? q->routing_domain : q->domain;
}

const struct queue_config *queue_config_of(const struct sched_queue *q)
{
	return &q->cfg;
}

/* The heap is shared by every queue, so each queue's earliest due time is
 * found by one pass over it: O(scheduled messages) per snapshot, which the
 * callers (console snapshots, metrics scrapes, admin API) take at most a few
 * times a second. Routed messages (not in the heap) have no due time. */
void queue_foreach(void (*fn)(const struct queue_info *qi, void *ctx), void *ctx)
{
	for (struct sched_queue *q = Q.all; q; q = q->next_all)
		q->snap_due_ms = 0;
	for (size_t i = 0; i < Q.nheap; i++) {
		struct qmsg *qm = Q.heap[i];
		if (!qm->q->snap_due_ms || qm->due_ms < qm->q->snap_due_ms)
			qm->q->snap_due_ms = qm->due_ms;
	}
	for (struct sched_queue *q = Q.all; q; q = q->next_all) {
		struct queue_info qi = {.name = q->name,
					.count = q->count,
					.next_due_ms = q->snap_due_ms,
					.suspended = suspend_for(q) != NULL};
		fn(&qi, ctx);
	}
}

int queue_walk(const char *queue, const char *after, size_t limit,
	       int (*fn)(const struct qmsg *qm, void *ctx), void *ctx, int *more, int *restarted)
{
	struct sched_queue *q = queue_lookup(queue);
	*more = *restarted = 0;
	if (!q)
		return -ENOENT;
	const struct qmsg *qm = q->head;
	if (after && *after) {
		const struct qmsg *a = queue_find_message(after);
		if (a && a->q == q)
			qm = a->q_next;
		else
			*restarted = 1;
	}
	for (size_t n = 0; qm && n < limit && fn(qm, ctx) == 0; n++)
		qm = qm->q_next;
	*more = qm != NULL;
	return 0;
}

long queue_count_of(const char *queue)
{
	struct sched_queue *q = queue_lookup(queue);
	return q ? (long)q->count : -ENOENT;
}

size_t queue_total(void)
{
	return Q.total;
}
