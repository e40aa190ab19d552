/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.configure_bounce_classifier{ files = {...}, cache_size,
 * uncategorized_cache_size, back_pressure, pool_size }: KumoMTA's bounce
 * classifier. Each file (.toml, else JSON with comments) holds a [rules]
 * table of label -> list of regular expressions; rules concatenate in
 * file, label and rule order (labels in the order the file writes them)
 * and the first match wins (proto/bounce.h). Compiled once, here; the log
 * records use it from then on. Once per process, as KumoMTA. */
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "lua/lua_int.h"
#include "proto/bounce.h"
#include "spool/logrec.h"

static int configured;

static int l_configure_bounce_classifier(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	if (configured)
		return luaL_error(L, "configure_bounce_classifier: already configured (once per "
				     "process, as KumoMTA)");
	lua_Integer cache = 0, uncache = 0;
	lua_pushnil(L);
	while (lua_next(L, 1)) {
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
		if (strcmp(k, "cache_size") == 0)
			cache = luaL_checkinteger(L, -1);
		else if (strcmp(k, "uncategorized_cache_size") == 0)
			uncache = luaL_checkinteger(L, -1);
		else if (strcmp(k, "back_pressure") != 0 && strcmp(k, "pool_size") != 0 &&
			 strcmp(k, "files") != 0)
			lua_api__unknown_key(L, "configure_bounce_classifier", k, NULL, 0);
		lua_pop(L, 1);
	}
	if (cache < 0 || cache > 10000000 || uncache < 0 || uncache > 10000000)
		return luaL_error(L,
				  "configure_bounce_classifier: cache sizes must be 0..10000000");
	lua_getfield(L, 1, "files");
	if (lua_type(L, -1) != LUA_TTABLE || lua_rawlen(L, -1) == 0)
		return luaL_error(L, "configure_bounce_classifier: files must list at least one "
				     "rules file");
	int files = lua_gettop(L);
	struct bounce_classifier *bc = bounce_classifier_new((size_t)cache, (size_t)uncache);
	for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, files); i++) {
		lua_rawgeti(L, files, i);
		const char *path = lua_tostring(L, -1);
		if (!path) {
			bounce_classifier_free(bc);
			return luaL_error(L, "configure_bounce_classifier: files[%d] is not a path",
					  (int)i);
		}
		lua_util__push_file(L, "configure_bounce_classifier", path);
		size_t len;
		const char *s = lua_tolstring(L, -1, &len);
		char err[600];
		if (bounce_classifier_load(bc, path, s, len, err, sizeof(err)) != 0) {
			bounce_classifier_free(bc);
			return luaL_error(L, "configure_bounce_classifier: %s", err);
		}
		lua_pop(L, 2);
	}
	log_info("kumod::logging", "bounce classifier: %zu rules from %d file%s",
		 bounce_classifier_rules(bc), (int)lua_rawlen(L, files),
		 lua_rawlen(L, files) == 1 ? "" : "s");
	if (lua_engine__validating()) {
		bounce_classifier_free(bc); /* checked, not installed */
		return 0;
	}
	configured = 1;
	logrec_set_classifier(bc);
	return 0;
}

void lua_bounce__register(lua_State *L)
{
	lua_pushcfunction(L, l_configure_bounce_classifier);
	lua_setfield(L, -2, "configure_bounce_classifier");
}
