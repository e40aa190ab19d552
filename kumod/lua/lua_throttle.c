/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.make_throttle(name, spec): KumoMTA's named throttles, node-local.
 *
 * The spec is "[local:]Q/period[,max_burst=B]" (proto/rate_spec.h for the
 * rate); objects with the same name, limit, burst and period share one
 * GCRA cell (KumoMTA's key "<name>:<limit>:<burst>:<period_secs>"), kept
 * for the life of the process like KumoMTA's, so a per-call
 * kumo.make_throttle(...) in a handler counts against the same cell.
 * Without Redis every throttle is local. After
 * kumo.configure_redis_throttles{...} (below) a throttle without "local:"
 * is decided in Redis (queue/shared_throttle.h, the same key): :throttle()
 * then waits for Redis, so it needs an event that may wait (it raises
 * naming the event otherwise, and raises when Redis fails, as KumoMTA's
 * does). sleep_if_throttled needs a handler that waits and says so when
 * called; delay_message_if_throttled works in throttle_insert_ready_queue
 * (the scheduler reschedules the message) and says so elsewhere. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/clock.h"
#include "base/xalloc.h"
#include "io/redis.h"
#include "ktrace.h"
#include "lua/lua_int.h"
#include "proto/duration.h"
#include "proto/rate_spec.h"
#include "proto/redis_url.h"
#include "queue/shared_throttle.h"

#define THROTTLE_MT "kumod.throttle"
#define CELL_BUCKETS 256

struct throttle_cell {
	char *key;	 /* "<name>:<limit>:<burst>:<period_secs>" */
	uint64_t tat_us; /* GCRA theoretical arrival time; 0 = never used */
	struct throttle_cell *next;
};

static struct throttle_cell *cells[CELL_BUCKETS];

struct lua_throttle {
	char *key; /* its cell, looked up per call: idle cells are pruned */
	char *name;
	uint64_t limit, burst, period_ms;
	int local; /* "local:": never shared through Redis */
};

static uint32_t key_hash(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

/* The cell for key. Cells of the same bucket whose arrival time has
 * passed hold no state (a new cell is the same) and are freed on the way,
 * so per-sender or per-tenant throttles do not accumulate. */
static struct throttle_cell *cell_get(const char *key, uint64_t now_us)
{
	uint32_t b = key_hash(key) % CELL_BUCKETS;
	struct throttle_cell *found = NULL;
	for (struct throttle_cell **pp = &cells[b]; *pp;) {
		struct throttle_cell *c = *pp;
		if (strcmp(c->key, key) == 0) {
			found = c;
		} else if (c->tat_us <= now_us) {
			*pp = c->next;
			free(c->key);
			free(c);
			continue;
		}
		pp = &c->next;
	}
	if (found)
		return found;
	struct throttle_cell *c = xcalloc(1, sizeof(*c));
	c->key = xstrdup(key);
	c->next = cells[b];
	cells[b] = c;
	return c;
}

void lua_throttle__free_all(void)
{
	for (size_t b = 0; b < CELL_BUCKETS; b++)
		while (cells[b]) {
			struct throttle_cell *c = cells[b];
			cells[b] = c->next;
			free(c->key);
			free(c);
		}
}

/* "[local:]Q/period[,max_burst=B]": 0, or -1 with why in err. */
static int throttle_spec_parse(const char *spec, struct rate_spec *r, uint64_t *burst, char *err,
			       size_t errlen)
{
	char rate[128];
	const char *mb = strstr(spec, ",max_burst=");
	size_t n = mb ? (size_t)(mb - spec) : strlen(spec);
	/* another ',' is a digit separator ("1,000/hr") */
	if (n >= sizeof(rate)) {
		snprintf(err, errlen, "throttle spec is too long");
		return -1;
	}
	memcpy(rate, spec, n);
	rate[n] = 0;
	if (rate_spec_parse(rate, r) != 0) {
		snprintf(err, errlen,
			 "invalid throttle spec '%s': expected [local:]quantity/period"
			 "[,max_burst=N] such as '100/s', '1,000/hr' or '20/30min'",
			 spec);
		return -1;
	}
	*burst = r->limit;
	if (mb) {
		char *end;
		unsigned long long b = strtoull(mb + 11, &end, 10);
		if (end == mb + 11 || *end || b < 1 || b > 1000000000000ull) {
			snprintf(err, errlen,
				 "invalid throttle spec '%s': max_burst must be a "
				 "positive integer",
				 spec);
			return -1;
		}
		*burst = b;
	}
	return 0;
}

static void push_duration(lua_State *L, uint64_t us)
{
	lua_createtable(L, 0, 2);
	lua_pushinteger(L, (lua_Integer)(us / 1000000u));
	lua_setfield(L, -2, "secs");
	lua_pushinteger(L, (lua_Integer)(us % 1000000u) * 1000);
	lua_setfield(L, -2, "nanos");
}

static struct lua_throttle *check_throttle(lua_State *L)
{
	return luaL_checkudata(L, 1, THROTTLE_MT);
}

static void push_result(lua_State *L, int throttled, uint64_t limit, uint64_t remaining,
			uint64_t reset_after_us, uint64_t retry_after_us)
{
	lua_createtable(L, 0, 5);
	lua_pushboolean(L, throttled);
	lua_setfield(L, -2, "throttled");
	lua_pushinteger(L, (lua_Integer)limit);
	lua_setfield(L, -2, "limit");
	lua_pushinteger(L, (lua_Integer)remaining);
	lua_setfield(L, -2, "remaining");
	push_duration(L, reset_after_us);
	lua_setfield(L, -2, "reset_after");
	if (throttled) {
		push_duration(L, retry_after_us);
		lua_setfield(L, -2, "retry_after");
	}
}

static int shared_done_k(lua_State *L, int status, lua_KContext ctx)
{
	(void)status;
	(void)ctx;
	if (lua_isnil(L, -2))
		return lua_error(L); /* the message on top */
	lua_pop(L, 1);
	return 1;
}

static void shared_done(void *ud, const struct shared_rate_result *r, const char *err)
{
	uint64_t call = (uint64_t)(uintptr_t)ud;
	lua_State *co = lua_engine__thread(call);
	if (!co)
		return; /* the event call was dropped */
	if (err) {
		lua_pushnil(co);
		lua_pushfstring(co, "throttle:throttle(): %s", err);
	} else {
		push_result(co, r->throttled, r->limit, r->remaining, r->reset_after_s * 1000000u,
			    r->retry_after_s * 1000000u);
		lua_pushboolean(co, 1);
	}
	lua_engine__wake(call, 2);
}

static int l_throttle_throttle(lua_State *L)
{
	struct lua_throttle *t = check_throttle(L);
	if (shared_throttle_enabled() && !t->local) {
		uint64_t call = lua_engine__wait_begin(L, "throttle:throttle (Redis throttles)");
		char name[500];
		snprintf(name, sizeof(name), "lua-user-throttle-%.400s", t->name);
		uint64_t period_s = t->period_ms / 1000u ? t->period_ms / 1000u : 1;
		if (!shared_rate_take(name, t->limit, period_s, t->burst, shared_done,
				      (void *)(uintptr_t)call))
			return luaL_error(L, "throttle:throttle(): %s", redis_last_error());
		return lua_engine__wait(L, 0, shared_done_k);
	}
	uint64_t now_us = clock_mono_ns() / 1000u + 1; /* never 0 */
	struct throttle_cell *cell = cell_get(t->key, now_us);
	struct rate_gcra r =
	    rate_gcra_take(&cell->tat_us, t->limit, t->period_ms, t->burst, now_us);
	KTRACE(lua_throttle, t->name, r.throttled, r.retry_after_us / 1000u);
	push_result(L, r.throttled, t->burst, r.remaining, r.reset_after_us, r.retry_after_us);
	return 1;
}

static int l_throttle_explain(lua_State *L)
{
	struct lua_throttle *t = check_throttle(L);
	lua_pushfstring(L, "throttle '%s': %d per %d ms, max_burst %d (%s)", t->name, (int)t->limit,
			(int)t->period_ms, (int)t->burst,
			shared_throttle_enabled() && !t->local ? "GCRA shared through Redis"
							       : "node-local GCRA");
	return 1;
}

/* The waiting methods need a handler that can be suspended. */
static int l_throttle_wait(lua_State *L)
{
	return luaL_error(L,
			  "throttle:%s() is a KumoMTA method that kumod does not implement yet "
			  "(it needs asynchronous handlers); use throttle:throttle() and "
			  "kumo.reject(451, ...) instead",
			  lua_tostring(L, lua_upvalueindex(1)));
}

/* throttle:delay_message_if_throttled(msg): counts one event; when throttled, the message
 * goes back to its scheduled queue for the retry_after (no jitter, as KumoMTA) and true is
 * returned. kumod can delay a message only from throttle_insert_ready_queue. */
static int l_throttle_delay_message(lua_State *L)
{
	struct lua_throttle *t = check_throttle(L);
	lua_message__check(L, 2);
	if (shared_throttle_enabled() && !t->local)
		return luaL_error(
		    L, "throttle:delay_message_if_throttled(): with kumo.configure_redis_throttles "
		       "the throttle lives in Redis, and kumod cannot wait for Redis in "
		       "throttle_insert_ready_queue yet; use a 'local:' throttle there, or "
		       "throttle:throttle() in an event that may wait");
	uint64_t now_us = clock_mono_ns() / 1000u + 1;
	struct throttle_cell *cell = cell_get(t->key, now_us);
	/* checked before counting, so that a refused call leaves the cell as it was */
	if (lua_engine__delay_message(L, 0) != 0)
		return luaL_error(
		    L, "throttle:delay_message_if_throttled(): kumod can delay a message "
		       "only in a throttle_insert_ready_queue handler; elsewhere use "
		       "throttle:throttle() and kumo.reject(451, ...)");
	struct rate_gcra r =
	    rate_gcra_take(&cell->tat_us, t->limit, t->period_ms, t->burst, now_us);
	KTRACE(lua_throttle, t->name, r.throttled, r.retry_after_us / 1000u);
	if (r.throttled)
		lua_engine__delay_message(L, (r.retry_after_us + 999u) / 1000u);
	lua_pushboolean(L, r.throttled);
	return 1;
}

static int l_throttle_gc(lua_State *L)
{
	struct lua_throttle *t = check_throttle(L);
	free(t->name);
	free(t->key);
	t->name = t->key = NULL;
	return 0;
}

static int l_make_throttle(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	const char *spec = luaL_checkstring(L, 2);
	struct rate_spec r;
	uint64_t burst;
	char err[300];
	if (throttle_spec_parse(spec, &r, &burst, err, sizeof(err)) != 0)
		return luaL_error(L, "kumo.make_throttle: %s", err);
	char key[600];
	snprintf(key, sizeof(key), "lua-user-throttle-%.400s:%" PRIu64 ":%" PRIu64 ":%" PRIu64,
		 name, r.limit, burst, r.period_ms / 1000u);
	struct lua_throttle *t = lua_newuserdatauv(L, sizeof(*t), 0);
	memset(t, 0, sizeof(*t));
	luaL_setmetatable(L, THROTTLE_MT);
	t->key = xstrdup(key);
	t->name = xstrdup(name);
	t->limit = r.limit;
	t->burst = burst;
	t->period_ms = r.period_ms;
	t->local = strncmp(spec, "local:", 6) == 0;
	return 1;
}

/* --- kumo.configure_redis_throttles ----------------------------------------- */

static uint64_t cfg_duration_ms(lua_State *L, int idx, const char *key)
{
	uint64_t ms = 0;
	if (lua_type(L, idx) == LUA_TNUMBER) {
		double v = lua_tonumber(L, idx);
		if (!(v >= 0 && v <= 1e9))
			luaL_error(L, "kumo.configure_redis_throttles: %s: out of range", key);
		return (uint64_t)(v * 1000 + 0.5);
	}
	if (lua_type(L, idx) != LUA_TSTRING || duration_parse_ms(lua_tostring(L, idx), &ms) != 0)
		luaL_error(L,
			   "kumo.configure_redis_throttles: %s: expected a duration such as '30s'",
			   key);
	return ms;
}

/* KumoMTA's redis.open parameters. One node only: a Redis cluster (several
 * nodes, cluster = true) is refused, as are the cluster-only credentials
 * and replica reads; pool_size, wait_timeout and recycle_timeout are pool
 * settings of KumoMTA's client with nothing to set in kumod's single
 * pipelined connection (validated, then unused). */
static int l_configure_redis_throttles(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	const char *url = NULL;
	struct redis_config cfg = {0};
	lua_pushnil(L);
	while (lua_next(L, 1)) {
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
		if (strcmp(k, "node") == 0) {
			if (lua_type(L, -1) == LUA_TTABLE) {
				if (luaL_len(L, -1) != 1)
					return luaL_error(
					    L,
					    "kumo.configure_redis_throttles: node: a "
					    "list of %d nodes is a Redis cluster, which "
					    "kumod does not implement; give one URL",
					    (int)luaL_len(L, -1));
				lua_rawgeti(L, -1, 1);
				lua_replace(L, -2);
			}
			if (lua_type(L, -1) != LUA_TSTRING)
				return luaL_error(L,
						  "kumo.configure_redis_throttles: node: expected "
						  "a redis:// URL");
			url = lua_tostring(L, -1);
			lua_pushvalue(L, -1);
			lua_setfield(L, LUA_REGISTRYINDEX, "kumod.redis_throttles.url");
		} else if (strcmp(k, "cluster") == 0) {
			if (lua_toboolean(L, -1))
				return luaL_error(
				    L, "kumo.configure_redis_throttles: cluster = true: a "
				       "Redis cluster is not implemented in kumod");
		} else if (strcmp(k, "read_from_replicas") == 0) {
			if (lua_toboolean(L, -1))
				return luaL_error(L,
						  "kumo.configure_redis_throttles: "
						  "read_from_replicas applies to a Redis cluster, "
						  "which kumod does not implement");
		} else if (strcmp(k, "username") == 0 || strcmp(k, "password") == 0) {
			return luaL_error(L,
					  "kumo.configure_redis_throttles: %s applies to a Redis "
					  "cluster only (KumoMTA ignores it for one node), which "
					  "kumod does not implement; give credentials in the URL "
					  "(redis://user:password@host/)",
					  k);
		} else if (strcmp(k, "pool_size") == 0) {
			if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1)
				return luaL_error(L, "kumo.configure_redis_throttles: pool_size: "
						     "expected a positive integer");
		} else if (strcmp(k, "connect_timeout") == 0) {
			cfg.connect_timeout_ms = cfg_duration_ms(L, -1, k);
		} else if (strcmp(k, "response_timeout") == 0) {
			cfg.response_timeout_ms = cfg_duration_ms(L, -1, k);
		} else if (strcmp(k, "wait_timeout") == 0 || strcmp(k, "recycle_timeout") == 0) {
			cfg_duration_ms(L, -1, k);
		} else {
			return luaL_error(L,
					  "kumo.configure_redis_throttles: unknown parameter '%s' "
					  "(KumoMTA's redis.open parameters: node, cluster, "
					  "pool_size, connect_timeout, wait_timeout, "
					  "response_timeout, recycle_timeout, read_from_replicas, "
					  "username, password)",
					  k);
		}
		lua_pop(L, 1);
	}
	if (!url)
		return luaL_error(L, "kumo.configure_redis_throttles: node is required");
	lua_getfield(L, LUA_REGISTRYINDEX, "kumod.redis_throttles.url");
	url = lua_tostring(L, -1); /* kept alive by the registry */
	lua_pop(L, 1);
	struct redis_url u;
	if (redis_url_parse(url, &u) != 0)
		return luaL_error(L,
				  "kumo.configure_redis_throttles: invalid node URL '%s': expected "
				  "redis://[user][:password@]host[:port][/db]",
				  url);
	if (lua_engine__validating())
		return 0; /* --validate: checked, not connected */
	cfg.url = url;
	char err[512];
	if (redis_configure(&cfg, err, sizeof(err)) != 0)
		return luaL_error(L, "kumo.configure_redis_throttles: %s", err);
	return 0;
}

void lua_throttle__register(lua_State *L)
{
	if (luaL_newmetatable(L, THROTTLE_MT)) {
		lua_pushcfunction(L, l_throttle_gc);
		lua_setfield(L, -2, "__gc");
		lua_createtable(L, 0, 4);
		lua_pushcfunction(L, l_throttle_throttle);
		lua_setfield(L, -2, "throttle");
		lua_pushcfunction(L, l_throttle_explain);
		lua_setfield(L, -2, "explain");
		lua_pushstring(L, "sleep_if_throttled");
		lua_pushcclosure(L, l_throttle_wait, 1);
		lua_setfield(L, -2, "sleep_if_throttled");
		lua_pushcfunction(L, l_throttle_delay_message);
		lua_setfield(L, -2, "delay_message_if_throttled");
		lua_setfield(L, -2, "__index");
	}
	lua_pop(L, 1);
	lua_pushcfunction(L, l_make_throttle);
	lua_setfield(L, -2, "make_throttle");
	lua_pushcfunction(L, l_configure_redis_throttles);
	lua_setfield(L, -2, "configure_redis_throttles");
}
