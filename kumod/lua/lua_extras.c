/* SPDX-License-Identifier: Apache-2.0 */
/* require 'policy-extras.<name>' without LUA_PATH: a searcher appended to
 * package.searchers (so a user's own package.path, LUA_PATH included, is
 * searched first) that loads kumod's own helper modules from its share
 * directory: <dir of the kumod binary>/../share/kumod/policy-extras when
 * installed, else the source tree's policy/policy-extras (build/kumod and
 * build/<sanitizer>/kumod). KumoMTA helpers kumod does not have yet are
 * refused by name instead of "module not found". */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lua/lua_int.h"

#define EXTRAS_PREFIX "policy-extras."

/* KumoMTA's helpers that kumod does not provide (yet), and why. */
static const char *const missing[][2] = {
    {"queue", "is not implemented yet (issue 16 item 2)"},
    {"shaping", "is not implemented yet (issue 16 item 2)"},
    {"dkim_sign", "comes with DKIM signing, which kumod does not have yet"},
    {"log_hooks", "comes with log hooks (kumo.configure_log_hook), which kumod does not have yet"},
};

/* The directory of the running kumod binary into dir; 0 or -1. */
static int exe_dir(char *dir, size_t len)
{
	ssize_t n = readlink("/proc/self/exe", dir, len - 1);
	if (n <= 0)
		return -1;
	dir[n] = 0;
	char *slash = strrchr(dir, '/');
	if (!slash)
		return -1;
	*slash = 0;
	return 0;
}

static int missing_loader(lua_State *L)
{
	return luaL_error(L, "%s", lua_tostring(L, lua_upvalueindex(1)));
}

static int searcher(lua_State *L)
{
	size_t n;
	const char *name = luaL_checklstring(L, 1, &n);
	size_t pl = sizeof(EXTRAS_PREFIX) - 1;
	if (n <= pl || strncmp(name, EXTRAS_PREFIX, pl) != 0 || strpbrk(name + pl, "./"))
		return 0;
	const char *mod = name + pl;
	static const char *const rel[] = {"../share/kumod/policy-extras", "../policy/policy-extras",
					  "../../policy/policy-extras"};
	char dir[PATH_MAX];
	for (size_t i = 0; exe_dir(dir, sizeof(dir)) == 0 && i < sizeof(rel) / sizeof(rel[0]);
	     i++) {
		char path[2 * PATH_MAX];
		if ((size_t)snprintf(path, sizeof(path), "%s/%s/%s.lua", dir, rel[i], mod) >=
			sizeof(path) ||
		    access(path, R_OK) != 0)
			continue;
		if (luaL_loadfile(L, path) != LUA_OK)
			return luaL_error(L, "error loading module '%s' from %s:\n\t%s", name, path,
					  lua_tostring(L, -1));
		lua_pushstring(L, path);
		return 2;
	}
	for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
		if (strcmp(mod, missing[i][0]) == 0) {
			lua_pushfstring(L, "require '%s': kumod's %s helper %s", name, mod,
					missing[i][1]);
			lua_pushcclosure(L, missing_loader, 1);
			lua_pushliteral(L, "kumod");
			return 2;
		}
	}
	lua_pushfstring(L, "\n\tno kumod helper '%s' (kumod's share directory)", name);
	return 1;
}

void lua_extras__register(lua_State *L)
{
	lua_getglobal(L, "package");
	if (!lua_istable(L, -1)) {
		lua_pop(L, 1);
		return;
	}
	lua_getfield(L, -1, "searchers");
	if (lua_istable(L, -1)) {
		lua_pushcfunction(L, searcher);
		lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
	}
	lua_pop(L, 2);
}
