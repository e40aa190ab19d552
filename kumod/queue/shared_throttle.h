/* SPDX-License-Identifier: Apache-2.0 */
/* Throttles and connection limits shared through Redis
 * (kumo.configure_redis_throttles), with KumoMTA's algorithms and keys so
 * KumoMTA and kumod nodes share one budget:
 * - rates: GCRA on key "<name>:<limit>:<burst>:<period_secs>", through
 *   redis-cell's CL.THROTTLE when the server has it, else a Lua script
 *   doing the same arithmetic on the same stored value (the theoretical
 *   arrival time in seconds, expiring with the cell);
 * - connection limits: a sorted set per key, member = lease UUID, score =
 *   expiry (Unix seconds); acquire prunes expired members and adds one
 *   when fewer than the limit remain; extend moves an existing member's
 *   expiry (ZADD XX CH); release removes it (ZREM). A node that dies
 *   leaves its leases to expire.
 * Everything is asynchronous: the callback runs later, once, unless the
 * returned op is cancelled (shared_op_cancel). NULL return: Redis is down
 * (nothing will call back). Callers: kumod/dispatch/ready.c, kumod/lua. */
#ifndef KUMOD_QUEUE_SHARED_THROTTLE_H
#define KUMOD_QUEUE_SHARED_THROTTLE_H

#include <stddef.h>
#include <stdint.h>

struct redis_op;

/* Declares the metric families (ready_init, at start-up). */
void shared_throttle_declare_metrics(void);
/* 1 once kumo.configure_redis_throttles succeeded. */
int shared_throttle_enabled(void);

struct shared_rate_result {
	int throttled;
	uint64_t limit, remaining;
	uint64_t reset_after_s, retry_after_s;
};
/* err NULL: r holds the decision; else r is NULL. */
typedef void (*shared_rate_fn)(void *ud, const struct shared_rate_result *r, const char *err);
/* name is KumoMTA's throttle name (the key prefix); period in whole
 * seconds (KumoMTA's unit). */
struct redis_op *shared_rate_take(const char *name, uint64_t limit, uint64_t period_s,
				  uint64_t burst, shared_rate_fn fn, void *ud);

/* acquire: ok 1 = lease held (uuid filled at the call), 0 = full (retry
 * later), err set = Redis failed. extend: ok 1 = extended, 0 = the lease
 * is gone. */
typedef void (*shared_lease_fn)(void *ud, int ok, const char *err);
struct redis_op *shared_lease_acquire(const char *key, uint64_t limit, uint64_t duration_ms,
				      char uuid[37], shared_lease_fn fn, void *ud);
struct redis_op *shared_lease_extend(const char *key, const char *uuid, uint64_t duration_ms,
				     shared_lease_fn fn, void *ud);
/* Fire and forget (an expired lease goes anyway). */
void shared_lease_release(const char *key, const char *uuid);

void shared_op_cancel(struct redis_op *op);

#endif
