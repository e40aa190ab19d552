/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.counter_series (KumoMTA's mod-counter-series): define{ name, num_buckets,
 * bucket_size, initial_value } returns a handle with increment, delta, observe, sum and
 * sum_over over a rolling counter (base/counter_series.c) on the monotonic clock. Series
 * live for the process, cached by name: a define with the same shape returns the same
 * series (across configuration reloads), another shape replaces it (handles to the old one
 * keep working on it, detached). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/counter_series.h"
#include "base/xalloc.h"
#include "lua/lua_int.h"
#include "proto/duration.h"

#define SERIES_MT "kumo.counter_series.CounterSeries"

/* A series shared by the cache and the handles (refs). */
struct cseries {
	char *name;
	unsigned refs;
	struct counter_series cs;
	struct cseries *next; /* in the cache */
};

static struct cseries *cache;

static void series_unref(struct cseries *s)
{
	if (--s->refs)
		return;
	free(s->name);
	free(s);
}

/* Whole seconds of a KumoMTA duration at idx (integer seconds or text), sub-seconds
 * rounded up when up, else dropped. */
static uint64_t check_secs(lua_State *L, int idx, const char *what, int up)
{
	uint64_t ms = 0;
	if (lua_isinteger(L, idx)) {
		lua_Integer s = lua_tointeger(L, idx);
		if (s < 0 || s > (lua_Integer)(UINT64_MAX / 1000))
			luaL_error(L, "%s: duration out of range", what);
		ms = (uint64_t)s * 1000;
	} else if (lua_type(L, idx) == LUA_TSTRING) {
		if (duration_parse_ms(lua_tostring(L, idx), &ms) != 0)
			luaL_error(L, "%s: invalid duration '%s'", what, lua_tostring(L, idx));
	} else {
		luaL_error(L,
			   "%s: expected a duration (integer seconds or text like \"1m\"), got %s",
			   what, luaL_typename(L, idx));
	}
	return ms / 1000 + (up && ms % 1000 != 0);
}

static uint64_t check_u64(lua_State *L, int idx, const char *what)
{
	if (!lua_isinteger(L, idx) || lua_tointeger(L, idx) < 0)
		luaL_error(L, "%s: expected an integer >= 0, got %s", what,
			   lua_isinteger(L, idx) ? "a negative number" : luaL_typename(L, idx));
	return (uint64_t)lua_tointeger(L, idx);
}

static void push_u64(lua_State *L, uint64_t v)
{
	if (v <= (uint64_t)INT64_MAX)
		lua_pushinteger(L, (lua_Integer)v);
	else
		lua_pushnumber(L, (lua_Number)v); /* beyond a Lua integer */
}

static struct cseries *check_series(lua_State *L)
{
	struct cseries **h = luaL_checkudata(L, 1, SERIES_MT);
	return *h;
}

static int s_increment(lua_State *L)
{
	struct cseries *s = check_series(L);
	counter_series_increment(&s->cs, check_u64(L, 2, "counter_series:increment"),
				 clock_mono_ns());
	return 0;
}

static int s_delta(lua_State *L)
{
	struct cseries *s = check_series(L);
	if (!lua_isinteger(L, 2))
		return luaL_error(L, "counter_series:delta: expected an integer, got %s",
				  luaL_typename(L, 2));
	counter_series_delta(&s->cs, (int64_t)lua_tointeger(L, 2), clock_mono_ns());
	return 0;
}

static int s_observe(lua_State *L)
{
	struct cseries *s = check_series(L);
	counter_series_observe(&s->cs, check_u64(L, 2, "counter_series:observe"), clock_mono_ns());
	return 0;
}

static int s_sum(lua_State *L)
{
	push_u64(L, counter_series_sum(&check_series(L)->cs, clock_mono_ns()));
	return 1;
}

static int s_sum_over(lua_State *L)
{
	struct cseries *s = check_series(L);
	uint64_t secs = check_secs(L, 2, "counter_series:sum_over", 0);
	push_u64(L, counter_series_sum_over(&s->cs, secs, clock_mono_ns()));
	return 1;
}

static int s_gc(lua_State *L)
{
	struct cseries **h = luaL_checkudata(L, 1, SERIES_MT);
	if (*h)
		series_unref(*h);
	*h = NULL;
	return 0;
}

static int l_define(lua_State *L)
{
	static const char fn[] = "kumo.counter_series.define";
	luaL_checktype(L, 1, LUA_TTABLE);
	for (lua_pushnil(L); lua_next(L, 1); lua_pop(L, 1)) {
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
		if (strcmp(k, "name") && strcmp(k, "num_buckets") && strcmp(k, "bucket_size") &&
		    strcmp(k, "initial_value"))
			return luaL_error(L, "%s: unknown field '%s'", fn, k);
	}
	lua_getfield(L, 1, "name");
	const char *name = lua_tostring(L, -1);
	if (lua_type(L, -1) != LUA_TSTRING)
		return luaL_error(L, "%s: name (a string) is required", fn);
	lua_getfield(L, 1, "num_buckets");
	if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0 || lua_tointeger(L, -1) > 255)
		return luaL_error(L, "%s: num_buckets must be an integer from 1 to 255", fn);
	lua_Integer nb = lua_tointeger(L, -1);
	if (nb == 0)
		return luaL_error(L, "%s: num_buckets must be >= 1", fn);
	if (lua_getfield(L, 1, "bucket_size") == LUA_TNIL)
		return luaL_error(L, "%s: bucket_size is required", fn);
	uint64_t secs = check_secs(L, -1, fn, 1);
	if (secs < 1)
		return luaL_error(L, "%s: bucket_size must be >= 1 second", fn);
	uint64_t initial = 0;
	if (lua_getfield(L, 1, "initial_value") != LUA_TNIL)
		initial = check_u64(L, -1, "kumo.counter_series.define: initial_value");

	struct cseries **pp = &cache, *s;
	while ((s = *pp) && strcmp(s->name, name))
		pp = &s->next;
	if (s && (s->cs.nbuckets != (unsigned)nb || s->cs.bucket_secs != secs)) {
		*pp = s->next; /* another shape: replaced, old handles keep the old series */
		series_unref(s);
		s = NULL;
	}
	if (!s) {
		s = xcalloc(1, sizeof(*s));
		s->name = xstrdup(name);
		s->refs = 1; /* the cache */
		counter_series_init(&s->cs, (unsigned)nb, secs, initial, clock_mono_ns());
		s->next = cache;
		cache = s;
	}
	struct cseries **h = lua_newuserdatauv(L, sizeof(*h), 0);
	*h = NULL;
	luaL_setmetatable(L, SERIES_MT);
	*h = s;
	s->refs++;
	return 1;
}

void lua_counter_series__register(lua_State *L)
{
	static const luaL_Reg methods[] = {
	    {"increment", s_increment}, {"delta", s_delta}, {"observe", s_observe}, {"sum", s_sum},
	    {"sum_over", s_sum_over},	{NULL, NULL},
	};
	lua_util__class(L, SERIES_MT, methods, "__gc", s_gc);
	lua_newtable(L);
	lua_pushcfunction(L, l_define);
	lua_setfield(L, -2, "define");
	lua_setfield(L, -2, "counter_series");
}
