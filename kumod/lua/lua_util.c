/* SPDX-License-Identifier: Apache-2.0 */
/* The utility modules KumoMTA policies stand on (docs/policy-utils.md),
 * registered into the kumo table in one call from lua_kumo__open, plus the
 * two small ones that live here: kumo.secrets.load and
 * kumo.validation_failed. */
#include <errno.h>
#include <string.h>

#include "base/buf.h"
#include "base/fsutil.h"
#include "lua/lua_int.h"
#include "policy.h"

static int validation_failed;

void lua_util__class(lua_State *L, const char *mt, const luaL_Reg *methods, const char *event,
		     lua_CFunction fn)
{
	luaL_newmetatable(L, mt);
	lua_newtable(L);
	luaL_setfuncs(L, methods, 0);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, fn);
	lua_setfield(L, -2, event);
	lua_pop(L, 1);
}

void lua_util__push_file(lua_State *L, const char *what, const char *path)
{
	struct buf b;
	buf_init(&b);
	int rc = fs_read_file(path, &b);
	if (rc != 0) {
		buf_free(&b);
		luaL_error(L, "%s: %s: %s", what, path, strerror(-rc));
		return;
	}
	lua_pushlstring(L, b.data ? b.data : "", b.len);
	buf_free(&b);
}

int policy_validation_failed(void)
{
	return validation_failed;
}

/* kumo.validation_failed(): marks the configuration invalid; `kumod
 * --validate` finishes its checks, then exits 1 with "Validation failed". */
static int l_validation_failed(lua_State *L)
{
	(void)L;
	validation_failed = 1;
	return 0;
}

/* kumo.traceback(level) -> a list of frame tables from that stack level
 * (0 is traceback itself, 1 its caller), as KumoMTA: event name name_what
 * source short_src line_defined last_line_defined what curr_line
 * is_tail_call (absent values are nil). */
static int l_traceback(lua_State *L)
{
	lua_Integer level = luaL_optinteger(L, 1, 1);
	if (level < 0)
		return luaL_error(L, "traceback: level must be >= 0");
	lua_newtable(L);
	lua_Debug ar;
	lua_Integer k = 0;
	for (int n = (int)level; lua_getstack(L, n, &ar); n++) {
		lua_getinfo(L, "nSlt", &ar);
		lua_createtable(L, 0, 10);
		lua_pushstring(L, ar.istailcall ? "TailCall" : "Call");
		lua_setfield(L, -2, "event");
		if (ar.name) {
			lua_pushstring(L, ar.name);
			lua_setfield(L, -2, "name");
		}
		if (ar.namewhat && ar.namewhat[0]) {
			lua_pushstring(L, ar.namewhat);
			lua_setfield(L, -2, "name_what");
		}
		if (ar.source) {
			lua_pushlstring(L, ar.source, ar.srclen);
			lua_setfield(L, -2, "source");
		}
		lua_pushstring(L, ar.short_src);
		lua_setfield(L, -2, "short_src");
		if (ar.linedefined >= 0) {
			lua_pushinteger(L, ar.linedefined);
			lua_setfield(L, -2, "line_defined");
		}
		if (ar.lastlinedefined >= 0) {
			lua_pushinteger(L, ar.lastlinedefined);
			lua_setfield(L, -2, "last_line_defined");
		}
		lua_pushstring(L, ar.what);
		lua_setfield(L, -2, "what");
		if (ar.currentline >= 0) {
			lua_pushinteger(L, ar.currentline);
			lua_setfield(L, -2, "curr_line");
		}
		lua_pushboolean(L, ar.istailcall);
		lua_setfield(L, -2, "is_tail_call");
		lua_rawseti(L, -2, ++k);
	}
	return 1;
}

/* kumo.secrets.load(keysource) -> string. A string is a file path (read on
 * every call); {key_data = '...'} is the secret itself. Vault and event
 * sources are refused by name. */
static int l_secrets_load(lua_State *L)
{
	if (lua_type(L, 1) == LUA_TSTRING) {
		lua_util__push_file(L, "secrets.load", lua_tostring(L, 1));
		return 1;
	}
	if (lua_type(L, 1) != LUA_TTABLE)
		return luaL_error(L,
				  "secrets.load: a key source is a file path or a table "
				  "{key_data = ...}, not %s",
				  luaL_typename(L, 1));
	if (lua_getfield(L, 1, "key_data") != LUA_TNIL) {
		if (lua_type(L, -1) != LUA_TSTRING)
			return luaL_error(L, "secrets.load: key_data must be a string");
		return 1;
	}
	lua_pop(L, 1);
	if (lua_getfield(L, 1, "vault_mount") != LUA_TNIL ||
	    lua_getfield(L, 1, "vault_path") != LUA_TNIL)
		return luaL_error(L, "secrets.load: HashiCorp Vault key sources (vault_mount, "
				     "vault_path) are not supported by kumod; use {key_data = ...} "
				     "or a file path");
	lua_settop(L, 1);
	if (lua_getfield(L, 1, "event_name") != LUA_TNIL)
		return luaL_error(L, "secrets.load: event key sources (event_name) are not "
				     "supported by kumod yet; use {key_data = ...} or a file path");
	return luaL_error(L, "secrets.load: unknown key source (expected a file path, key_data, "
			     "vault_mount/vault_path or event_name)");
}

void lua_util__register(lua_State *L)
{
	validation_failed = 0;
	lua_toml__register(L);
	lua_memoize__register(L);
	lua_maps__register(L);
	lua_regex__register(L);
	lua_string__register(L);
	lua_time__register(L);
	lua_crypto__register(L);
	lua_pushcfunction(L, l_validation_failed);
	lua_setfield(L, -2, "validation_failed");
	lua_pushcfunction(L, l_traceback);
	lua_setfield(L, -2, "traceback");
	lua_newtable(L);
	lua_pushcfunction(L, l_secrets_load);
	lua_setfield(L, -2, "load");
	lua_setfield(L, -2, "secrets");
}
