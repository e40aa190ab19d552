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

int lua_util__parse_text(lua_State *L, const char *what, lua_text_parser parse)
{
	size_t len;
	const char *s = luaL_checklstring(L, 1, &len);
	return parse(L, what, "", s, len);
}

int lua_util__parse_file(lua_State *L, const char *what, lua_text_parser parse)
{
	const char *path = luaL_checkstring(L, 1);
	lua_util__push_file(L, what, path); /* a Lua string: nothing leaks if parsing raises */
	size_t len;
	const char *s = lua_tolstring(L, -1, &len);
	return parse(L, what, path, s, len);
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

/* The one reader of KumoMTA KeySources (kumo.secrets.load, DKIM signer
 * keys, config keys that take a secret): a string is a file path, a table
 * is { key_data = '...' }. Vault and event sources are refused by name, so
 * is any other field. Sets *path or *data (and *dlen); reads nothing. */
void lua_util__keysource(lua_State *L, int idx, const char *what, const char **path,
			 const char **data, size_t *dlen)
{
	idx = lua_absindex(L, idx);
	*path = NULL;
	*data = NULL;
	*dlen = 0;
	if (lua_type(L, idx) == LUA_TSTRING) {
		*path = lua_tostring(L, idx);
		return;
	}
	if (lua_type(L, idx) != LUA_TTABLE)
		luaL_error(L,
			   "%s: a key source is a file path or a table { key_data = ... }, not %s",
			   what, luaL_typename(L, idx));
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
		if (strcmp(k, "key_data") == 0) {
			if (lua_type(L, -1) != LUA_TSTRING)
				luaL_error(L, "%s: key_data must be a string, got %s", what,
					   luaL_typename(L, -1));
			*data = lua_tolstring(L, -1, dlen); /* anchored by the table */
		} else if (strncmp(k, "vault_", 6) == 0) {
			luaL_error(L,
				   "%s: HashiCorp Vault key sources (%s) are a KumoMTA feature "
				   "kumod does not implement yet; use a file path or "
				   "{ key_data = ... }",
				   what, k);
		} else if (strcmp(k, "event_name") == 0 || strcmp(k, "event_args") == 0) {
			luaL_error(L,
				   "%s: event key sources (%s) are a KumoMTA feature kumod does "
				   "not implement yet; use a file path or { key_data = ... }",
				   what, k);
		} else {
			luaL_error(L,
				   "%s: unknown key source field '%s' (expected a file path or "
				   "{ key_data = ... })",
				   what, k);
		}
		lua_pop(L, 1);
	}
	if (!*data)
		luaL_error(L, "%s: a key source is a file path or { key_data = ... }", what);
}

/* kumo.secrets.load(keysource) -> string. A path is read on every call. */
static int l_secrets_load(lua_State *L)
{
	const char *path, *data;
	size_t dlen;
	lua_util__keysource(L, 1, "secrets.load", &path, &data, &dlen);
	if (path)
		lua_util__push_file(L, "secrets.load", path);
	else
		lua_pushlstring(L, data, dlen);
	return 1;
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
	lua_crypto_aws__register(L);
	lua_counter_series__register(L);
	lua_knobs__register(L);
	lua_jsonl__register(L);
	lua_fs__register(L);
	lua_mime__register(L);
	lua_pushcfunction(L, l_validation_failed);
	lua_setfield(L, -2, "validation_failed");
	lua_pushcfunction(L, l_traceback);
	lua_setfield(L, -2, "traceback");
	lua_newtable(L);
	lua_pushcfunction(L, l_secrets_load);
	lua_setfield(L, -2, "load");
	lua_setfield(L, -2, "secrets");
}
