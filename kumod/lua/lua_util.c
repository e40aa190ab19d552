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
	lua_string__register(L);
	lua_time__register(L);
	lua_crypto__register(L);
	lua_pushcfunction(L, l_validation_failed);
	lua_setfield(L, -2, "validation_failed");
	lua_newtable(L);
	lua_pushcfunction(L, l_secrets_load);
	lua_setfield(L, -2, "load");
	lua_setfield(L, -2, "secrets");
}
