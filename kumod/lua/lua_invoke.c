/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.invoke_get_queue_config(queue_name): runs the policy's get_queue_config handlers
 * for the parts of a KumoMTA queue name (`campaign:tenant@domain!routing_domain`, split
 * as the scheduler does) and returns their kumo.make_queue_config{} parameters; kumod
 * also takes the parts as (domain, tenant, campaign, routing_domain).
 * kumo.invoke_get_egress_path_config(routing_domain, egress_source, site_name): runs the
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

/* Splits name like the scheduler (kumod/queue/queue.c); pushes nothing. Fields point
 * into buf; absent parts are NULL, which the handler sees as "" exactly as when the
 * scheduler configures that queue (kumod passes "" where KumoMTA passes nil). */
static void split_queue_name(char *buf, const char **domain, const char **tenant,
			     const char **campaign, const char **routing)
{
	char *bang = strchr(buf, '!');
	*routing = NULL;
	*tenant = *campaign = NULL;
	if (bang) {
		*bang = 0;
		*routing = bang + 1;
	}
	char *at = strchr(buf, '@');
	char *colon = strchr(buf, ':');
	if (at) {
		*at = 0;
		*domain = at + 1;
		if (colon && colon < at) {
			*colon = 0;
			*campaign = buf;
			*tenant = colon + 1;
		} else {
			*tenant = buf;
		}
	} else if (colon) {
		*colon = 0;
		*campaign = buf;
		*domain = colon + 1;
	} else {
		*domain = buf;
	}
	for (char *p = (char *)*domain; *p; p++)
		*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
	for (char *p = (char *)(*routing ? *routing : ""); *p; p++)
		*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
}

static int l_invoke_get_queue_config(lua_State *L)
{
	const char *domain, *tenant, *campaign, *routing;
	if (lua_gettop(L) <= 1) {
		size_t n;
		const char *name = luaL_checklstring(L, 1, &n);
		char *buf = lua_newuserdatauv(L, n + 1, 0); /* freed by the GC */
		memcpy(buf, name, n + 1);
		split_queue_name(buf, &domain, &tenant, &campaign, &routing);
	} else {
		domain = luaL_checkstring(L, 1);
		tenant = luaL_optstring(L, 2, NULL);
		campaign = luaL_optstring(L, 3, NULL);
		routing = luaL_optstring(L, 4, NULL);
	}
	if (domain[0] == 0)
		return luaL_error(L, "kumo.invoke_get_queue_config: the queue name has no domain");
	if (depth >= INVOKE_MAX_DEPTH)
		return luaL_error(L,
				  "kumo.invoke_get_queue_config: nested %d deep (a handler "
				  "that invokes itself?)",
				  depth);
	json_t *o = NULL;
	struct policy_result r;
	depth++;
	policy_get_queue_config(domain, tenant, campaign, routing, &o, &r);
	depth--;
	if (r.status != POLICY_OK) {
		json_decref(o);
		return luaL_error(L, "kumo.invoke_get_queue_config: %s", r.text);
	}
	if (!o) { /* no handler returned one: KumoMTA's defaults, none set here */
		lua_newtable(L);
		return 1;
	}
	push_params(L, o);
	json_decref(o);
	return 1;
}

void lua_invoke__register(lua_State *L)
{
	lua_pushcfunction(L, l_invoke_get_queue_config);
	lua_setfield(L, -2, "invoke_get_queue_config");
	lua_pushcfunction(L, l_invoke_get_egress_path_config);
	lua_setfield(L, -2, "invoke_get_egress_path_config");
}
