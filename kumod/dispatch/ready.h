/* SPDX-License-Identifier: Apache-2.0 */
/* Ready queues and dispatchers: due messages are routed (protocol.smtp.mx_list
 * or DNS MX) into a ready queue named `<egress_source>-><site>@smtp`, shaped
 * by get_egress_path_config (connection_limit, max_ready,
 * max_deliveries_per_connection, enable_tls, smtp_port, prohibited_hosts,
 * timeouts). Up to connection_limit dispatchers per ready queue, each one
 * task whose phase is KumoMTA's (Starting, AttemptingConnection,
 * DeliveringMessage, Idle, Closing), deliver with the SMTP client
 * (kumod/smtp/client.h). Outcomes: 2xx Delivery (removed from the spool),
 * 5xx Bounce (removed), anything else TransientFailure (back to the
 * scheduled queue with backoff, or Expiration).
 * Callers: kumod/main.c (init/shutdown), kumod/ctl (snapshots). */
#ifndef KUMOD_DISPATCH_READY_H
#define KUMOD_DISPATCH_READY_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

int ready_init(uv_loop_t *loop);
/* Aborts dispatchers; in-flight messages (those ready_drain's grace did not
 * finish) stay spooled (a later retry may duplicate one whose reply was
 * lost: never a loss). */
void ready_shutdown(void);
/* Shutdown begins: no message starts a new delivery; the transactions in
 * flight finish (their outcome is logged and the spool updated), then their
 * connections QUIT. */
void ready_drain(void);
/* Messages in a delivery transaction right now (SMTP or custom_lua). */
size_t ready_inflight(void);
/* After the loop ended: frees the ready queues. */
void ready_free_all(void);

struct ready_info {
	const char *name;
	size_t count;
	size_t connections, connection_limit, max_ready;
	uint64_t delivered, transfail, failed;
	int suspended; /* an admin suspension (suspend-ready-q) covers it */
};
void ready_foreach(void (*fn)(const struct ready_info *ri, void *ctx), void *ctx);

/* KumoMTA's /api/admin/inspect-ready-q/v1 answer for the ready queue named
 * name (new reference): queue_name, site_name, egress_source, egress_pool,
 * protocol, mx [{host, addr}], state {ready_count, connection_count,
 * connection_limited, connection_rate_throttled, message_rate_throttled,
 * suspended}, path_config, counters, dispatchers [{session_id, started_at,
 * age, phase, detail, time_in_current_phase, delivered_this_connection,
 * message_id}], scheduled_queue_names (of the messages it holds or sends),
 * now. NULL when no ready queue has that name. */
json_t *ready_inspect(const char *name);

/* Admin ready-queue suspensions (KumoMTA /api/admin/suspend-ready-q/v1):
 * until expires_ms (unix ms) the ready queue named name (it need not exist
 * yet) starts no new connection or transaction; a transaction in flight
 * finishes. Its messages stay queued in the ready queue (spooled); when the
 * entry is cancelled or expires, dispatchers start again at once. Not
 * persisted. Returns the entry's UUID (borrowed). */
const char *ready_admin_suspend(const char *name, const char *reason, uint64_t expires_ms);
/* 0, or -ENOENT when no entry has that id. */
int ready_admin_suspend_cancel(const char *id);
/* Live entries as a JSON array (new reference): id, name, reason, duration
 * (time left), expires (RFC 3339). */
json_t *ready_admin_suspend_list(void);
size_t ready_admin_suspend_count(void);

/* The ready queues of source (NULL: any) towards site (NULL: any) load
 * their egress path configuration again when next used (a traffic shaping
 * automation override started or ended: dispatch/shaping_auto.c). */
void ready_path_refresh(const char *source, const char *site);

#endif
