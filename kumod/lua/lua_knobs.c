/* SPDX-License-Identifier: Apache-2.0 */
/* KumoMTA tuning calls for machinery kumod does not have, accepted without effect: each
 * call logs one INFO line naming itself and why (docs/policy-api.md, "accepted, no
 * effect"). Only calls that cannot change what happens to mail are here: the Lua context
 * pool (kumod runs one Lua state on its loop thread), named LRU cache capacities (kumod's
 * caches are its own and bounded by their own rules; capacity changes hit rates only) and
 * ready-queue maintenance threads (one loop thread). */
#include <string.h>

#include "base/log.h"
#include "lua/lua_int.h"

static const struct {
	const char *name, *why;
	int nargs; /* 1: (n), 2: (cache name, n) */
} knobs[] = {
    {"set_max_lua_context_age", "kumod runs one Lua state, not a pool of contexts", 1},
    {"set_max_lua_context_use_count", "kumod runs one Lua state, not a pool of contexts", 1},
    {"set_max_spare_lua_contexts", "kumod runs one Lua state, not a pool of contexts", 1},
    {"set_lruttl_cache_capacity",
     "kumod has no KumoMTA-named LRU caches; its caches are bounded by their own rules", 2},
    {"set_ready_qmaint_threads", "kumod runs ready queues on its one loop thread", 1},
};

static int l_knob(lua_State *L)
{
	size_t i = (size_t)lua_tointeger(L, lua_upvalueindex(1));
	if (knobs[i].nargs == 2)
		luaL_checkstring(L, 1);
	lua_Integer n = luaL_checkinteger(L, knobs[i].nargs);
	if (n < 0)
		return luaL_error(L, "kumo.%s: the value must not be negative", knobs[i].name);
	if (knobs[i].nargs == 2)
		log_info("kumod::lua", "kumo.%s('%s', %lld) has no effect: %s", knobs[i].name,
			 lua_tostring(L, 1), (long long)n, knobs[i].why);
	else
		log_info("kumod::lua", "kumo.%s(%lld) has no effect: %s", knobs[i].name,
			 (long long)n, knobs[i].why);
	return 0;
}

void lua_knobs__register(lua_State *L)
{
	for (size_t i = 0; i < sizeof(knobs) / sizeof(knobs[0]); i++) {
		lua_pushinteger(L, (lua_Integer)i);
		lua_pushcclosure(L, l_knob, 1);
		lua_setfield(L, -2, knobs[i].name);
	}
}
