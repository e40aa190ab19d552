/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.configure_log_hook{ name, meta, headers, per_record, back_pressure,
 * deferred_spool }: KumoMTA's log hook (kumod/dispatch/loghook.c does the
 * work). per_record takes { [type or Any] = { enable, template } }: the
 * template (proto/template.h, the same engine as configure_local_logs) makes
 * the message body instead of the JSON record. */
#include <stdlib.h>
#include <string.h>

#include "dispatch/loghook.h"
#include "lua/lua_int.h"
#include "proto/template.h"
#include "spool/logrec.h"

#define MAX_NAMES 64

/* A list of strings at idx into out (pointers into the Lua state). */
static size_t check_names(lua_State *L, int idx, const char *what, const char **out)
{
	luaL_checktype(L, idx, LUA_TTABLE);
	size_t n = lua_rawlen(L, idx);
	if (n > MAX_NAMES)
		luaL_error(L, "kumo.configure_log_hook: %s: at most %d names", what, MAX_NAMES);
	for (size_t i = 1; i <= n; i++) {
		if (lua_rawgeti(L, idx, (lua_Integer)i) != LUA_TSTRING)
			luaL_error(L, "kumo.configure_log_hook: %s must be a list of strings",
				   what);
		out[i - 1] = lua_tostring(L, -1);
		lua_pop(L, 1); /* the table keeps the string alive */
	}
	return n;
}

/* per_record = { Reception = { enable = false }, Any = { template = '...' } }:
 * the types are the log record types (or Any); keys enable and template. */
static size_t check_per_record(lua_State *L, int idx, struct loghook_record_cfg *out)
{
	luaL_checktype(L, idx, LUA_TTABLE);
	size_t n = 0;
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		const char *type = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
		if (logrec_record_type_index(type) < 0)
			luaL_error(L,
				   "kumo.configure_log_hook: per_record: unknown record type '%s' "
				   "(Reception, Delivery, ... or Any)",
				   type);
		if (!lua_istable(L, -1))
			luaL_error(L, "kumo.configure_log_hook: per_record.%s must be a table",
				   type);
		if (n == MAX_NAMES)
			luaL_error(L, "kumo.configure_log_hook: per_record: too many entries");
		struct loghook_record_cfg *pr = &out[n++];
		*pr = (struct loghook_record_cfg){.type = type, .enable = 1};
		lua_pushnil(L);
		while (lua_next(L, -2)) {
			const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
			if (strcmp(k, "template") == 0) {
				if (lua_type(L, -1) != LUA_TSTRING)
					luaL_error(
					    L,
					    "kumo.configure_log_hook: per_record.%s.template "
					    "must be a string",
					    type);
				pr->tmpl = lua_tostring(L, -1); /* kept alive by the table */
			} else if (strcmp(k, "enable") == 0) {
				pr->enable = lua_toboolean(L, -1);
			} else {
				luaL_error(
				    L,
				    "kumo.configure_log_hook: per_record.%s: unknown key '%s' "
				    "(expected enable or template)",
				    type, k);
			}
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	return n;
}

static int l_configure_log_hook(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	const char *meta[MAX_NAMES], *headers[MAX_NAMES];
	struct loghook_record_cfg pr[MAX_NAMES];
	struct loghook_cfg cfg = {.meta = meta, .headers = headers, .per_record = pr};
	lua_getfield(L, 1, "name");
	if (lua_type(L, -1) != LUA_TSTRING || !lua_rawlen(L, -1))
		return luaL_error(L, "kumo.configure_log_hook: name is required (a string)");
	cfg.name = lua_tostring(L, -1);
	lua_pushnil(L);
	while (lua_next(L, 1)) {
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
		int v = lua_gettop(L);
		if (strcmp(k, "name") == 0) {
		} else if (strcmp(k, "meta") == 0) {
			cfg.nmeta = check_names(L, v, "meta", meta);
		} else if (strcmp(k, "headers") == 0) {
			cfg.nheaders = check_names(L, v, "headers", headers);
		} else if (strcmp(k, "per_record") == 0) {
			cfg.nper_record = check_per_record(L, v, pr);
		} else if (strcmp(k, "back_pressure") == 0) {
			lua_Integer bp = luaL_checkinteger(L, v);
			if (bp < 1)
				return luaL_error(L,
						  "kumo.configure_log_hook: back_pressure must be "
						  "positive");
			cfg.back_pressure = (size_t)bp;
		} else if (strcmp(k, "deferred_spool") == 0) {
			if (!lua_isboolean(L, v))
				return luaL_error(L,
						  "kumo.configure_log_hook: deferred_spool must be "
						  "a boolean");
			cfg.deferred_spool = lua_toboolean(L, v);
		} else {
			return lua_api__unknown_key(L, "configure_log_hook", k, NULL, 0);
		}
		lua_pop(L, 1);
	}
	/* templates are checked when validating too (loghook_add compiles them) */
	for (size_t i = 0; i < cfg.nper_record; i++) {
		if (!pr[i].tmpl)
			continue;
		struct tmpl_error te;
		struct tmpl *t = tmpl_compile(pr[i].tmpl, strlen(pr[i].tmpl), &te);
		if (!t)
			return luaL_error(
			    L,
			    "kumo.configure_log_hook: hook '%s': per_record.%s.template: "
			    "line %d column %d: %s",
			    cfg.name, pr[i].type, te.line, te.column, te.msg);
		tmpl_free(t);
	}
	/* meta, headers and per_record strings stay referenced by argument 1 */
	char err[256];
	if (!lua_engine__validating() && loghook_add(&cfg, err, sizeof(err)) != 0)
		return luaL_error(L, "kumo.configure_log_hook: %s", err);
	return 0;
}

/* kumo.configure_log_disposition_hook{ name, per_record }: KumoMTA's
 * disposition hook (kumod/dispatch/loghook.c calls log_disposition_<name>);
 * per_record takes enable only. */
static int l_configure_log_disposition_hook(lua_State *L)
{
	static const char fn[] = "kumo.configure_log_disposition_hook";
	luaL_checktype(L, 1, LUA_TTABLE);
	struct loghook_record_cfg pr[MAX_NAMES];
	struct loghook_cfg cfg = {.per_record = pr};
	lua_getfield(L, 1, "name");
	if (lua_type(L, -1) != LUA_TSTRING || !lua_rawlen(L, -1))
		return luaL_error(L, "%s: name is required (a string)", fn);
	cfg.name = lua_tostring(L, -1);
	lua_pushnil(L);
	while (lua_next(L, 1)) {
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
		if (strcmp(k, "per_record") == 0)
			cfg.nper_record = check_per_record(L, lua_gettop(L), pr);
		else if (strcmp(k, "name") != 0)
			return luaL_error(L, "%s: unknown key '%s' (expected name or per_record)",
					  fn, k);
		lua_pop(L, 1);
	}
	for (size_t i = 0; i < cfg.nper_record; i++)
		if (pr[i].tmpl)
			return luaL_error(L,
					  "%s: per_record.%s.template: a disposition hook "
					  "renders no message (only enable applies)",
					  fn, pr[i].type);
	char err[256];
	if (!lua_engine__validating() && loghook_add_disposition(&cfg, err, sizeof(err)) != 0)
		return luaL_error(L, "%s: %s", fn, err);
	return 0;
}

void lua_loghook__register(lua_State *L)
{
	lua_pushcfunction(L, l_configure_log_hook);
	lua_setfield(L, -2, "configure_log_hook");
	lua_pushcfunction(L, l_configure_log_disposition_hook);
	lua_setfield(L, -2, "configure_log_disposition_hook");
}
