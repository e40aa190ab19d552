/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.toml_load/toml_parse/toml_encode/toml_encode_pretty and the
 * kumo.serde module, over kumod/proto/toml.c (TOML 1.0) and lua_json.c.
 * Conversions as KumoMTA's serde bridge: TOML date-times become a one-key
 * table {["$__toml_private_datetime"] = "1979-05-27T07:32:00Z"} (and encode
 * back from one); an empty Lua table is a TOML table; a sequence 1..n is an
 * array. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/fsutil.h"
#include "lua/lua_int.h"
#include "proto/toml.h"

#define TOML_DATETIME_KEY "$__toml_private_datetime"
#define LUA_TOML_MAX_DEPTH 100

/* --- TOML -> Lua --------------------------------------------------------------- */

static void push_value(lua_State *L, const struct toml_value *v)
{
	luaL_checkstack(L, 4, "TOML document nested too deeply");
	switch (v->type) {
	case TOML_BOOL:
		lua_pushboolean(L, v->u.b);
		return;
	case TOML_INTEGER:
		lua_pushinteger(L, (lua_Integer)v->u.i);
		return;
	case TOML_FLOAT:
		lua_pushnumber(L, v->u.f);
		return;
	case TOML_STRING:
		lua_pushlstring(L, v->u.str.ptr, v->u.str.len);
		return;
	case TOML_DATETIME:
	case TOML_DATETIME_LOCAL:
	case TOML_DATE_LOCAL:
	case TOML_TIME_LOCAL:
		lua_createtable(L, 0, 1);
		lua_pushlstring(L, v->u.str.ptr, v->u.str.len);
		lua_setfield(L, -2, TOML_DATETIME_KEY);
		return;
	case TOML_ARRAY:
		lua_createtable(L, (int)v->u.arr.n, 0);
		for (size_t i = 0; i < v->u.arr.n; i++) {
			push_value(L, v->u.arr.items[i]);
			lua_rawseti(L, -2, (lua_Integer)i + 1);
		}
		return;
	case TOML_TABLE:
		lua_createtable(L, 0, (int)v->u.tab.n);
		for (size_t i = 0; i < v->u.tab.n; i++) {
			lua_pushlstring(L, v->u.tab.kv[i].key, v->u.tab.kv[i].keylen);
			push_value(L, v->u.tab.kv[i].val);
			lua_rawset(L, -3);
		}
		return;
	}
	lua_pushnil(L);
}

/* Parses text and pushes the table, or raises "<what>: <where>:L:C: msg". */
static int parse_and_push(lua_State *L, const char *what, const char *where, const char *s,
			  size_t len)
{
	struct toml_error err;
	struct toml_value *root = toml_parse(s, len, &err);
	if (!root) {
		if (where[0])
			return luaL_error(L, "%s: %s:%d:%d: %s", what, where, err.line, err.column,
					  err.msg);
		return luaL_error(L, "%s: line %d, column %d: %s", what, err.line, err.column,
				  err.msg);
	}
	push_value(L, root);
	toml_free(root);
	return 1;
}

static int l_toml_parse(lua_State *L)
{
	return lua_util__parse_text(L, "toml_parse", parse_and_push);
}

static int l_toml_load(lua_State *L)
{
	return lua_util__parse_file(L, "toml_load", parse_and_push);
}

/* --- Lua -> TOML ---------------------------------------------------------------- */

struct conv {
	char err[200];
	int depth;
};

static struct toml_value *to_toml(lua_State *L, int idx, struct conv *c);

static struct toml_value *conv_fail(struct conv *c, const char *msg, const char *arg)
{
	if (!c->err[0])
		snprintf(c->err, sizeof(c->err), msg, arg);
	return NULL;
}

static struct toml_value *datetime_wrapper(lua_State *L, int idx)
{
	lua_pushnil(L);
	if (!lua_next(L, idx))
		return NULL;
	int one = lua_type(L, -2) == LUA_TSTRING &&
		  strcmp(lua_tostring(L, -2), TOML_DATETIME_KEY) == 0 &&
		  lua_type(L, -1) == LUA_TSTRING;
	lua_pop(L, 1);
	if (!one) {
		lua_pop(L, 1);
		return NULL;
	}
	int more = lua_next(L, idx);
	lua_pop(L, more ? 2 : 0);
	if (more)
		return NULL;
	lua_getfield(L, idx, TOML_DATETIME_KEY);
	size_t len;
	const char *s = lua_tolstring(L, -1, &len);
	int kind = toml_datetime_kind(s, len);
	struct toml_value *v = NULL;
	if (kind >= 0) {
		v = toml_new_string(s, len);
		v->type = (enum toml_type)kind;
	}
	lua_pop(L, 1);
	return v;
}

static struct toml_value *table_to_toml(lua_State *L, int idx, struct conv *c)
{
	struct toml_value *dt = datetime_wrapper(L, idx);
	if (dt)
		return dt;
	c->depth++;
	size_t n = lua_rawlen(L, idx), count = 0;
	int seq = n > 0;
	lua_pushnil(L);
	while (seq && lua_next(L, idx)) {
		lua_pop(L, 1);
		if (!lua_isinteger(L, -1) || ++count > n) {
			lua_pop(L, 1);
			seq = 0;
		}
	}
	seq = seq && count == n;
	struct toml_value *out;
	if (seq) {
		out = toml_new(TOML_ARRAY);
		for (size_t i = 1; i <= n; i++) {
			lua_rawgeti(L, idx, (lua_Integer)i);
			struct toml_value *v = to_toml(L, lua_gettop(L), c);
			lua_pop(L, 1);
			if (!v) {
				toml_free(out);
				return NULL;
			}
			toml_array_push(out, v);
		}
		c->depth--;
		return out;
	}
	/* keys sorted, so the encoding is deterministic */
	lua_newtable(L);
	int keys = lua_gettop(L);
	lua_Integer nk = 0;
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		if (lua_type(L, -1) == LUA_TSTRING) {
			lua_pushvalue(L, -1);
		} else if (lua_isinteger(L, -1)) {
			lua_pushfstring(L, "%I", (LUA_INTEGER)lua_tointeger(L, -1));
		} else {
			const char *tn = luaL_typename(L, -1);
			lua_pop(L, 2);
			return conv_fail(c, "table keys must be strings or integers, not %s", tn);
		}
		lua_rawseti(L, keys, ++nk);
	}
	lua_getglobal(L, "table");
	lua_getfield(L, -1, "sort");
	lua_remove(L, -2);
	if (lua_isfunction(L, -1)) {
		lua_pushvalue(L, keys);
		lua_call(L, 1, 0);
	} else {
		lua_pop(L, 1);
	}
	out = toml_new(TOML_TABLE);
	for (lua_Integer i = 1; i <= nk; i++) {
		lua_rawgeti(L, keys, i);
		size_t klen;
		const char *k = lua_tolstring(L, -1, &klen);
		/* the original key: a string, or the integer it was made from */
		lua_pushvalue(L, -1);
		lua_rawget(L, idx);
		if (lua_isnil(L, -1)) {
			lua_pop(L, 1);
			lua_Integer ik = 0;
			sscanf(k, "%lld", (long long *)&ik);
			lua_rawgeti(L, idx, ik);
		}
		struct toml_value *v = to_toml(L, lua_gettop(L), c);
		if (v && toml_table_set(out, k, klen, v) != 0) {
			toml_free(v);
			v = conv_fail(c, "duplicate key '%s' (a string and an integer key)", k);
		}
		lua_pop(L, 2);
		if (!v) {
			toml_free(out);
			lua_pop(L, 1);
			return NULL;
		}
	}
	lua_pop(L, 1);
	c->depth--;
	return out;
}

static struct toml_value *to_toml(lua_State *L, int idx, struct conv *c)
{
	struct toml_value *v;
	if (lua_type(L, idx) == LUA_TTABLE) {
		if (c->depth >= LUA_TOML_MAX_DEPTH)
			return conv_fail(c, "%s",
					 "nesting too deep (a table that contains itself?)");
		if (!lua_checkstack(L, 8))
			return conv_fail(c, "%s", "Lua stack exhausted");
		return table_to_toml(L, lua_absindex(L, idx), c);
	}
	switch (lua_type(L, idx)) {
	case LUA_TBOOLEAN:
		v = toml_new(TOML_BOOL);
		v->u.b = lua_toboolean(L, idx);
		return v;
	case LUA_TNUMBER:
		if (lua_isinteger(L, idx)) {
			v = toml_new(TOML_INTEGER);
			v->u.i = (int64_t)lua_tointeger(L, idx);
		} else {
			v = toml_new(TOML_FLOAT);
			v->u.f = lua_tonumber(L, idx);
		}
		return v;
	case LUA_TSTRING: {
		size_t len;
		const char *s = lua_tolstring(L, idx, &len);
		return toml_new_string(s, len);
	}
	default:
		return conv_fail(c, "cannot encode a %s value as TOML", luaL_typename(L, idx));
	}
}

static int encode_common(lua_State *L, int pretty, const char *what)
{
	luaL_checkany(L, 1);
	struct conv c = {.err = ""};
	struct toml_value *v = to_toml(L, 1, &c);
	if (!v)
		return luaL_error(L, "%s: %s", what, c.err);
	struct buf out;
	char err[200];
	buf_init(&out);
	int rc = toml_encode(v, pretty, &out, err, sizeof(err));
	toml_free(v);
	if (rc != 0) {
		buf_free(&out);
		return luaL_error(L, "%s: %s", what, err);
	}
	lua_pushlstring(L, out.data ? out.data : "", out.len);
	buf_free(&out);
	return 1;
}

static int l_toml_encode(lua_State *L)
{
	return encode_common(L, 0, "toml_encode");
}

static int l_toml_encode_pretty(lua_State *L)
{
	return encode_common(L, 1, "toml_encode_pretty");
}

static const luaL_Reg toml_funcs[] = {
    {"toml_load", l_toml_load},
    {"toml_parse", l_toml_parse},
    {"toml_encode", l_toml_encode},
    {"toml_encode_pretty", l_toml_encode_pretty},
    {NULL, NULL},
};

void lua_toml__register(lua_State *L)
{
	luaL_setfuncs(L, toml_funcs, 0);
	/* kumo.serde: the same functions (+ toml_encode_pretty_compact), JSON and YAML */
	lua_newtable(L);
	luaL_setfuncs(L, toml_funcs, 0);
	lua_pushcfunction(L, l_toml_encode_pretty);
	lua_setfield(L, -2, "toml_encode_pretty_compact");
	lua_json__register(L);
	lua_yaml__register(L);
	lua_setfield(L, -2, "serde");
}
