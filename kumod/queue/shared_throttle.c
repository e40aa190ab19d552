/* SPDX-License-Identifier: Apache-2.0 */
/* Redis-shared rate throttles and connection-limit leases
 * (queue/shared_throttle.h). The Lua below is kumod's own; what it must
 * share with KumoMTA is the key names, the stored values and the
 * arithmetic, which it does. */
#include "queue/shared_throttle.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/metrics.h"
#include "base/uuid.h"
#include "base/xalloc.h"
#include "io/redis.h"
#include "ktrace.h"

/* GCRA, period/limit seconds per token, burst tokens of tolerance; the
 * cell's value is its theoretical arrival time in (fractional) seconds
 * of the server's clock, whole seconds of TIME as "now". Reply: throttled,
 * remaining, reset_after, retry_after (seconds), diff, interval. */
static const char GCRA_LUA[] =
    "local step = tonumber(ARGV[2]) / tonumber(ARGV[1])\n"
    "local cost = step * tonumber(ARGV[4])\n"
    "local tolerance = step * tonumber(ARGV[3])\n"
    "local now = tonumber(redis.call('TIME')[1])\n"
    "local stored = redis.call('GET', KEYS[1])\n"
    "local tat = now\n"
    "if stored then tat = math.max(tonumber(stored), now) end\n"
    "local next_tat = tat + cost\n"
    "local slack = now - (next_tat - tolerance)\n"
    "local left = math.floor(slack / step)\n"
    "if left < 0 then\n"
    "  return {1, math.floor((now - (tat - tolerance)) / step), math.ceil(tat - now),\n"
    "          math.ceil(-slack), tostring(slack), tostring(step)}\n"
    "end\n"
    "if left == 0 and cost <= 0 then\n"
    "  return {1, 0, math.ceil(tat - now), 0, tostring(slack), tostring(step)}\n"
    "end\n"
    "local ttl = math.ceil(next_tat - now)\n"
    "redis.call('SET', KEYS[1], next_tat, 'EX', ttl)\n"
    "return {0, left, ttl, 0, tostring(slack), tostring(step)}\n";

/* Lease acquisition on a sorted set (member: lease id, score: expiry in
 * Unix seconds): drop the expired, add ours when below the limit, else
 * answer the seconds until the earliest expiry. */
static const char LEASE_LUA[] =
    "local now = math.floor(tonumber(ARGV[1]))\n"
    "local expiry = math.ceil(tonumber(ARGV[2]))\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 1)\n"
    "if redis.call('ZCARD', KEYS[1]) + 1 > tonumber(ARGV[3]) then\n"
    "  local first = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '+inf', 'WITHSCORES',\n"
    "                           'LIMIT', 0, 1)\n"
    "  return math.ceil(tonumber(first[2]) - now)\n"
    "end\n"
    "redis.call('ZADD', KEYS[1], 'NX', expiry, ARGV[4])\n"
    "return redis.status_reply('OK')\n";

static const struct metrics_decl shared_metrics[] = {
    {"redis_throttle_decisions", METRICS_COUNTER, "decision",
     "Shared (Redis) throttle decisions: `allowed`, `throttled`, `error` (Redis failed: nothing "
     "decided, the caller waits or retries); leases: `lease_acquired`, `lease_full`, "
     "`lease_lost`."},
};

int shared_throttle_enabled(void)
{
	return redis_enabled();
}

void shared_throttle_declare_metrics(void)
{
	metrics_declare(shared_metrics, sizeof(shared_metrics) / sizeof(shared_metrics[0]));
	redis_declare_metrics();
}

static void decision(const char *what)
{
	metrics_counter_add("redis_throttle_decisions", "decision", what, 1);
}

/* Every call record starts with this flag: cancelling marks it, and the
 * reply then frees the record without calling its owner back (an acquired
 * lease nobody wants any more is released at once). */
void shared_op_cancel(struct redis_op *op)
{
	if (op)
		*(int *)redis_op_ud(op) = 1;
}

/* --- rates ------------------------------------------------------------------ */

struct rate_call {
	int cancelled; /* first: see shared_op_cancel */
	shared_rate_fn fn;
	void *ud;
	uint64_t burst;
	char key[];
};

static int64_t elem_int(const redisReply *r, size_t i)
{
	if (i >= r->elements)
		return 0;
	const redisReply *e = r->element[i];
	if (e->type == REDIS_REPLY_INTEGER)
		return (int64_t)e->integer;
	if (e->type == REDIS_REPLY_STRING)
		return strtoll(e->str, NULL, 10);
	return 0;
}

static void rate_reply(void *ud, const redisReply *reply, const char *err)
{
	struct rate_call *c = ud;
	char why[300];
	if (!err && (reply->type != REDIS_REPLY_ARRAY || reply->elements < 5)) {
		snprintf(why, sizeof(why), "redis throttle %s: unexpected reply%s%.200s", c->key,
			 reply->type == REDIS_REPLY_ERROR ? ": " : "",
			 reply->type == REDIS_REPLY_ERROR ? reply->str : "");
		err = why;
	}
	if (err) {
		decision("error");
		KTRACE(shared_throttle, c->key, -1, 0, 0);
		if (!c->cancelled)
			c->fn(c->ud, NULL, err);
		free(c);
		return;
	}
	struct shared_rate_result r = {0};
	if (redis_has_cell()) { /* throttled, limit, remaining, retry_after, reset_after */
		r.throttled = elem_int(reply, 0) != 0;
		r.limit = (uint64_t)elem_int(reply, 1);
		r.remaining = (uint64_t)elem_int(reply, 2);
		int64_t retry = elem_int(reply, 3), reset = elem_int(reply, 4);
		r.retry_after_s = retry > 0 ? (uint64_t)retry : 0;
		r.reset_after_s = reset > 0 ? (uint64_t)reset : 0;
	} else { /* throttled, remaining, reset_after, retry_after, ... */
		r.throttled = elem_int(reply, 0) == 1;
		r.limit = c->burst + 1;
		int64_t rem = elem_int(reply, 1), reset = elem_int(reply, 2),
			retry = elem_int(reply, 3);
		r.remaining = rem > 0 ? (uint64_t)rem : 0;
		r.reset_after_s = reset > 0 ? (uint64_t)reset : 0;
		r.retry_after_s = retry > 0 ? (uint64_t)retry : 0;
	}
	if (r.throttled && !r.retry_after_s)
		r.retry_after_s = 1;
	decision(r.throttled ? "throttled" : "allowed");
	KTRACE(shared_throttle, c->key, r.throttled, r.remaining, r.retry_after_s * 1000u);
	if (!c->cancelled)
		c->fn(c->ud, &r, NULL);
	free(c);
}

struct redis_op *shared_rate_take(const char *name, uint64_t limit, uint64_t period_s,
				  uint64_t burst, shared_rate_fn fn, void *ud)
{
	char key[1400];
	snprintf(key, sizeof(key), "%.1300s:%" PRIu64 ":%" PRIu64 ":%" PRIu64, name, limit, burst,
		 period_s);
	size_t klen = strlen(key);
	struct rate_call *c = xcalloc(1, sizeof(*c) + klen + 1);
	c->fn = fn;
	c->ud = ud;
	c->burst = burst;
	memcpy(c->key, key, klen + 1);
	char a[4][24];
	snprintf(a[0], sizeof(a[0]), "%" PRIu64, limit);
	snprintf(a[1], sizeof(a[1]), "%" PRIu64, period_s);
	snprintf(a[2], sizeof(a[2]), "%" PRIu64, burst);
	snprintf(a[3], sizeof(a[3]), "1");
	struct redis_op *op;
	if (redis_has_cell()) { /* CL.THROTTLE key max_burst count period quantity */
		const char *argv[] = {"CL.THROTTLE", c->key, a[2], a[0], a[1], a[3]};
		op = redis_command("query", 6, argv, NULL, rate_reply, c);
	} else { /* EVAL script 1 key limit period max_burst quantity */
		const char *argv[] = {"EVAL", GCRA_LUA, "1", c->key, a[0], a[1], a[2], a[3]};
		op = redis_command("script", 8, argv, NULL, rate_reply, c);
	}
	if (!op) {
		decision("error");
		KTRACE(shared_throttle, c->key, -1, 0, 0);
		free(c);
	}
	return op;
}

/* --- leases ----------------------------------------------------------------- */

struct lease_call {
	int cancelled; /* first: see shared_op_cancel */
	shared_lease_fn fn;
	void *ud;
	int extend;
	char uuid[37];
	char key[];
};

static struct lease_call *lease_call_new(const char *key, shared_lease_fn fn, void *ud)
{
	size_t klen = strlen(key);
	struct lease_call *c = xcalloc(1, sizeof(*c) + klen + 1);
	c->fn = fn;
	c->ud = ud;
	memcpy(c->key, key, klen + 1);
	return c;
}

static void lease_reply(void *ud, const redisReply *reply, const char *err)
{
	struct lease_call *c = ud;
	char why[300];
	int ok = 0;
	const char *action = c->extend == 2 ? "release" : c->extend ? "extend" : "acquire";
	if (!err && reply->type == REDIS_REPLY_ERROR) {
		snprintf(why, sizeof(why), "redis lease %s %s: %.200s", action, c->key, reply->str);
		err = why;
	} else if (!err && c->extend) {
		ok = reply->type == REDIS_REPLY_INTEGER && reply->integer == 1;
	} else if (!err) {
		ok = reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "OK") == 0;
		if (!ok && reply->type != REDIS_REPLY_INTEGER) {
			snprintf(why, sizeof(why), "redis lease %s %s: unexpected reply", action,
				 c->key);
			err = why;
		}
	}
	const char *result = err ? "error" : ok ? "ok" : c->extend ? "lost" : "full";
	if (c->extend == 2) {
		KTRACE(shared_lease, c->key, c->uuid, action, err ? "error" : "ok");
		free(c);
		return;
	}
	KTRACE(shared_lease, c->key, c->uuid, action, result);
	if (err)
		decision("error");
	else if (!c->extend)
		decision(ok ? "lease_acquired" : "lease_full");
	else if (!ok)
		decision("lease_lost");
	if (c->cancelled && !c->extend && ok)
		shared_lease_release(c->key, c->uuid); /* its dispatcher is gone */
	else if (!c->cancelled && c->fn)
		c->fn(c->ud, err ? 0 : ok, err);
	free(c);
}

static double unix_now(void)
{
	return (double)clock_wall_ns() / 1e9;
}

struct redis_op *shared_lease_acquire(const char *key, uint64_t limit, uint64_t duration_ms,
				      char uuid[37], shared_lease_fn fn, void *ud)
{
	struct lease_call *c = lease_call_new(key, fn, ud);
	uuid_random(c->uuid);
	memcpy(uuid, c->uuid, 37);
	double now = unix_now();
	char a[3][40];
	snprintf(a[0], sizeof(a[0]), "%.6f", now);
	snprintf(a[1], sizeof(a[1]), "%.6f", now + (double)duration_ms / 1000.0);
	snprintf(a[2], sizeof(a[2]), "%" PRIu64, limit);
	const char *argv[] = {"EVAL", LEASE_LUA, "1", c->key, a[0], a[1], a[2], c->uuid};
	struct redis_op *op = redis_command("script", 8, argv, NULL, lease_reply, c);
	if (!op) {
		KTRACE(shared_lease, key, c->uuid, "acquire", "error");
		decision("error");
		free(c);
	}
	return op;
}

struct redis_op *shared_lease_extend(const char *key, const char *uuid, uint64_t duration_ms,
				     shared_lease_fn fn, void *ud)
{
	struct lease_call *c = lease_call_new(key, fn, ud);
	c->extend = 1;
	snprintf(c->uuid, sizeof(c->uuid), "%s", uuid);
	char exp[40];
	snprintf(exp, sizeof(exp), "%.6f", unix_now() + (double)duration_ms / 1000.0);
	const char *argv[] = {"ZADD", c->key, "XX", "CH", exp, c->uuid};
	struct redis_op *op = redis_command("query", 6, argv, NULL, lease_reply, c);
	if (!op) {
		KTRACE(shared_lease, key, uuid, "extend", "error");
		decision("error");
		free(c);
	}
	return op;
}

void shared_lease_release(const char *key, const char *uuid)
{
	struct lease_call *c = lease_call_new(key, NULL, NULL);
	c->extend = 2;
	snprintf(c->uuid, sizeof(c->uuid), "%s", uuid);
	const char *argv[] = {"ZREM", c->key, c->uuid};
	if (!redis_command("query", 3, argv, NULL, lease_reply, c))
		free(c);
}
