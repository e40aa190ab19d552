/* SPDX-License-Identifier: Apache-2.0 */
/* Scheduled queues: every spooled message waits here until it is due.
 * Queue names follow KumoMTA (`campaign:tenant@domain!routing_domain`, or
 * meta `queue`); a queue is created on first insert and configured by the
 * get_queue_config event (retry_interval, max_retry_interval, max_age,
 * egress_pool, protocol.smtp.mx_list). Due times live in one binary heap
 * over all queues (O(log n) insert and pop, one uv_timer for the earliest),
 * so a million queued messages stay cheap.
 * When a message is due it is handed to the router registered by the ready
 * queue layer (kumod/dispatch), which calls back queue_requeue() or
 * queue_done() for it. Each queue and the maintainer are tasks.
 * Callers: kumod/smtp (Received), spool recovery (Enumerated),
 * kumod/dispatch (outcomes), kumod/ctl (snapshots). */
#ifndef KUMOD_QUEUE_QUEUE_H
#define KUMOD_QUEUE_QUEUE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

struct message;
struct sched_queue;

struct queue_config {
	uint64_t retry_interval_ms;	/* default 20 min */
	uint64_t max_retry_interval_ms; /* 0 = none */
	uint64_t max_age_ms;		/* default 7 days */
	uint64_t refresh_ms;		/* refresh_interval: get_queue_config again after (60 s) */
	uint64_t reap_ms;		/* reap_interval: an empty queue is freed after (10 min) */
	char egress_pool[128];		/* "" = unspecified */
	char **mx_list;			/* protocol.smtp.mx_list entries ("host[:port]") */
	char **mx_names;		/* per entry: the MX name of a { name, addr } entry (mx_list
					 * then holds addr), else NULL */
	size_t nmx;
	char *custom_lua; /* protocol.custom_lua.constructor: delivered by Lua, or NULL */
	/* custom_lua batching (KumoMTA's keys): up to batch_size messages per
	 * send_batch call (1: send, one message), sent once min_batch_size are
	 * ready or max_batch_latency after the first one was taken */
	size_t lua_batch_size, lua_min_batch_size;
	uint64_t lua_max_batch_latency_ms;
};

/* One queued message (owned by the queue layer while it exists). */
struct qmsg {
	struct message *m; /* one reference */
	struct sched_queue *q;
	uint64_t due_ms;	      /* wall clock ms */
	size_t heap_idx;	      /* SIZE_MAX when not in the heap */
	struct qmsg *next;	      /* ready-queue FIFO link (kumod/dispatch) */
	struct qmsg *next_id;	      /* id index chain (queue layer) */
	struct qmsg *q_prev, *q_next; /* its scheduled queue's list, arrival order */
	char *last_error;	      /* the last transient failure ("451 4.x.x text"), or NULL */
	int held;		      /* waiting for a suspension to end (due_ms = its expiry) */
};

int queue_init(uv_loop_t *loop);
/* Stops timers; messages stay spooled. */
void queue_shutdown(void);

/* Inserts a spooled message (takes a reference): due now. reason is a
 * KumoMTA InsertReason name ("Received", "Enumerated"). For "Enumerated"
 * the attempt count is inferred from the message age and the schedule;
 * a message already past max_age expires. */
void queue_insert(struct message *m, const char *reason);

/* Reception's check, before anything is spooled or acknowledged: the
 * message's scheduled queue (created when new) has a configuration from
 * get_queue_config. Returns 0, or -1 with the reason in err after logging
 * a Bounce record (code 500, "QueueManager::insert failed during
 * reception: ..." as KumoMTA); the caller refuses the message with 4xx so
 * the client keeps it. Never routed under defaults. */
int queue_check_config(const struct message *m, const char *protocol, const char *peer_addr,
		       char *err, size_t errlen);

/* Router: called on the loop thread for each due message. It takes
 * ownership of qm and must eventually call queue_requeue() or
 * queue_done() for it. */
typedef void (*queue_router_fn)(struct qmsg *qm);
void queue_set_router(queue_router_fn fn);

/* Back to the scheduled queue after a failure. increment: count an
 * attempt (transient failure) or not (ready queue full). A message whose
 * next due time would exceed max_age expires instead (Expiration record,
 * removal from the spool). */
void queue_requeue(struct qmsg *qm, const char *reason, int increment, const char *why_code,
		   const char *why_text);
/* The message left the system (delivered or bounced): frees qm. The
 * caller already logged it and called spool_discard. Called without
 * spool_discard (shutdown: the message stays queued), a message accepted
 * with deferred_spool and not yet written is written to the spool first. */
void queue_done(struct qmsg *qm);

const char *queue_name(const struct sched_queue *q);
/* The scheduled queue name m belongs to now (meta queue, else
 * campaign:tenant@domain!routing_domain with the domains lower-cased). */
void queue_message_name(const struct message *m, char *out, size_t outlen);
const char *queue_domain(const struct sched_queue *q);
const char *queue_routing_domain(const struct sched_queue *q); /* routing or recipient domain */
const struct queue_config *queue_config_of(const struct sched_queue *q);

/* Admin bounces (KumoMTA /api/admin/bounce/v1): every scheduled message
 * matching all given criteria (NULL or "" = any) is bounced now (an
 * AdminBounce record, removed from the spool), and for `duration_ms` every
 * matching message that becomes due is bounced too (retries included).
 * Messages already in a ready queue or being delivered finish that attempt
 * first and are caught when they come back. Returns the entry id; *bounced
 * gets the count bounced now. */
struct queue_bounce_match {
	const char *queue, *domain, *campaign, *tenant, *routing_domain;
};
uint64_t queue_admin_bounce(const struct queue_bounce_match *mt, const char *reason,
			    uint64_t duration_ms, size_t *bounced);
/* Cancels an entry; 0, or -ENOENT. */
int queue_admin_bounce_cancel(uint64_t id);
/* Live entries as a JSON array (new reference): id, criteria, reason,
 * expires (unix seconds), bounced (total so far). */
json_t *queue_admin_bounce_list(void);

/* Admin suspensions (KumoMTA /api/admin/suspend/v1): while an entry
 * lives, messages of a matching scheduled queue (domain, tenant, campaign;
 * NULL or "" = any) that become due are not routed: each gets a
 * TransientFailure record (`451 4.4.4 KumoMTA internal: scheduled queue is
 * suspended: <reason>`) and waits, without counting an attempt, until the
 * entry expires. Cancelling makes the held messages due at once. Not
 * persisted (a restart forgets suspensions). Returns the entry's UUID
 * (borrowed; valid until the entry ends). */
const char *queue_admin_suspend(const char *domain, const char *tenant, const char *campaign,
				const char *reason, uint64_t expires_ms);
/* Cancels an entry by UUID; 0 and the count of released messages in
 * *released, or -ENOENT. */
int queue_admin_suspend_cancel(const char *id, size_t *released);
/* Live entries as a JSON array (new reference): id, domain, tenant,
 * campaign (null = any), reason, duration (time left, "4m 59s"), expires
 * (RFC 3339). */
json_t *queue_admin_suspend_list(void);
/* Live entries and messages held by a suspension so far (metrics). */
void queue_admin_suspend_stats(size_t *active, uint64_t *held_total);

/* The queued message with that id (scheduled, routed or being delivered),
 * or NULL. qm->heap_idx != SIZE_MAX means it waits in its scheduled queue
 * until qm->due_ms. O(1). */
const struct qmsg *queue_find_message(const char *id);

/* Pages through one scheduled queue's messages (scheduled, routed or being
 * delivered) in arrival order, for the console: fn runs for at most `limit`
 * messages after the one whose id is `after` (NULL or "": from the first).
 * Each call costs O(limit), whatever the queue's size, so a viewer paging
 * through a million messages never stalls the loop. Returns 0 with *more
 * set when messages follow the last one given (pass its id as the next
 * `after`) and *restarted set when `after` is no longer in that queue (the
 * walk then began at the first message); -ENOENT when no queue has that
 * name. fn returns 0 to go on, or nonzero to stop before that message
 * (which then counts as following). fn must not change the queue. */
int queue_walk(const char *queue, const char *after, size_t limit,
	       int (*fn)(const struct qmsg *qm, void *ctx), void *ctx, int *more, int *restarted);
/* The scheduled queue's message count, or -ENOENT. */
long queue_count_of(const char *queue);

/* Snapshot of the scheduled queues for metrics / console. */
struct queue_info {
	const char *name;
	size_t count;
	uint64_t next_due_ms; /* 0 when empty */
	int suspended;	      /* an admin suspension matches */
};
void queue_foreach(void (*fn)(const struct queue_info *qi, void *ctx), void *ctx);
size_t queue_total(void);

/* Pure helpers (tested in tests/unit): delay before attempt n+1 (after n
 * failures) without jitter, and the KumoMTA queue name for parts. */
uint64_t queue_retry_delay_ms(const struct queue_config *cfg, unsigned attempts);
void queue_make_name(char *out, size_t outlen, const char *campaign, const char *tenant,
		     const char *domain, const char *routing_domain);

#endif
