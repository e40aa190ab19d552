/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.invoke_get_egress_path_config(routing_domain, egress_source, site_name): runs the
 * policy's get_egress_path_config handlers (as the dispatcher would) and returns their
 * kumo.make_egress_path{} parameters as a table that make_egress_path accepts again:
 * durations as text ("60s", "250ms"). As in KumoMTA, a handler may call it (beware mutual
 * recursion: nesting deeper than INVOKE_MAX_DEPTH raises). */
#include <stdio.h>
#include <string.h>

#include "lua/lua_int.h"
#include "policy.h"

#define INVOKE_MAX_DEPTH 8

static int depth;

/* The normalised parameters (durations as "<key>_ms" milliseconds) as KumoMTA's shape. */
static void push_params(lua_State *L, json_t *o)
{
	const char *k;
	json_t *v;
	lua_createtable(L, 0, (int)json_object_size(o));
	json_object_foreach(o, k, v)
	{
		size_t n = strlen(k);
		if (n > 3 && !strcmp(k + n - 3, "_ms") && json_is_integer(v)) {
			json_int_t ms = json_integer_value(v);
			lua_pushlstring(L, k, n - 3);
			if (ms % 1000 == 0)
				lua_pushfstring(L, "%Is", (lua_Integer)(ms / 1000));
			else
				lua_pushfstring(L, "%Ims", (lua_Integer)ms);
		} else {
			lua_pushstring(L, k);
			lua_json__push(L, v);
		}
		lua_rawset(L, -3);
	}
}

static int l_invoke_get_egress_path_config(lua_State *L)
{
	const char *domain = luaL_checkstring(L, 1);
	const char *source = luaL_checkstring(L, 2);
	const char *site = luaL_checkstring(L, 3);
	if (depth >= INVOKE_MAX_DEPTH)
		return luaL_error(L,
				  "kumo.invoke_get_egress_path_config: nested %d deep (a handler "
				  "that invokes itself?)",
				  depth);
	json_t *o = NULL;
	struct policy_result r;
	depth++;
	policy_get_egress_path_config(domain, source, site, &o, &r);
	depth--;
	if (r.status != POLICY_OK) {
		json_decref(o);
		return luaL_error(L, "kumo.invoke_get_egress_path_config: %s", r.text);
	}
	if (!o) { /* no handler returned one: KumoMTA's defaults, which here means none set */
		lua_newtable(L);
		return 1;
	}
	push_params(L, o);
	json_decref(o);
	return 1;
}

void lua_invoke__register(lua_State *L)
{
	lua_pushcfunction(L, l_invoke_get_egress_path_config);
	lua_setfield(L, -2, "invoke_get_egress_path_config");
}
