/* SPDX-License-Identifier: Apache-2.0 */
/* Lua <-> JSON (jansson) conversion and the kumo.json_* functions.
 * JSON null <-> nil, arrays <-> sequences, objects <-> tables with string
 * keys; an empty table encodes as {} (as KumoMTA's serde bridge does). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua/lua_int.h"
#include "proto/jsonc.h"

#define LUA_JSON_MAX_DEPTH 128

struct json_enc {
	int prec; /* shortest %g precision that round-trips every real seen */
	int depth;
	char *err;
	size_t errlen;
};

static json_t *to_json(lua_State *L, int idx, struct json_enc *e);

/* jansson prints reals with one precision per dump; 0.1 would come out as
 * 0.10000000000000001 at its default of 17. Track the smallest precision
 * that still round-trips every real in the document instead. */
static void note_real(struct json_enc *e, double d)
{
	char tmp[40];
	for (int p = e->prec; p < 17; p++) {
		snprintf(tmp, sizeof(tmp), "%.*g", p, d);
		if (strtod(tmp, NULL) == d) {
			e->prec = p;
			return;
		}
	}
	e->prec = 17;
}

static json_t *enc_fail(struct json_enc *e, const char *msg, const char *arg)
{
	if (e->err[0] == 0)
		snprintf(e->err, e->errlen, msg, arg);
	return NULL;
}

/* A table is a JSON array when its keys are exactly 1..#t (and #t > 0). */
static int table_is_sequence(lua_State *L, int idx, size_t *n)
{
	size_t count = 0;
	*n = lua_rawlen(L, idx);
	if (*n == 0)
		return 0;
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		if (!lua_isinteger(L, -1) || ++count > *n) {
			lua_pop(L, 1);
			return 0;
		}
	}
	return count == *n;
}

static json_t *table_to_array(lua_State *L, int idx, size_t n, struct json_enc *e)
{
	json_t *a = json_array();
	for (size_t i = 1; i <= n; i++) {
		lua_rawgeti(L, idx, (lua_Integer)i);
		json_t *v = to_json(L, lua_gettop(L), e);
		lua_pop(L, 1);
		if (!v) {
			json_decref(a);
			return NULL;
		}
		json_array_append_new(a, v);
	}
	return a;
}

static json_t *table_to_object(lua_State *L, int idx, struct json_enc *e)
{
	json_t *o = json_object();
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		char num[32];
		const char *k;
		size_t klen;
		if (lua_type(L, -2) == LUA_TSTRING) {
			k = lua_tolstring(L, -2, &klen);
		} else if (lua_isinteger(L, -2)) {
			/* never lua_tolstring a number key: it would confuse lua_next */
			klen = (size_t)snprintf(num, sizeof(num), "%lld",
						(long long)lua_tointeger(L, -2));
			k = num;
		} else {
			const char *tn = luaL_typename(L, -2);
			lua_pop(L, 2);
			json_decref(o);
			return enc_fail(e, "table keys must be strings or integers, not %s", tn);
		}
		json_t *v = to_json(L, lua_gettop(L), e);
		if (v && json_object_setn_new(o, k, klen, v) != 0)
			v = enc_fail(e, "%s", "object key is not valid UTF-8");
		lua_pop(L, 1);
		if (!v) {
			lua_pop(L, 1);
			json_decref(o);
			return NULL;
		}
	}
	return o;
}

static json_t *table_to_json(lua_State *L, int idx, struct json_enc *e)
{
	if (e->depth >= LUA_JSON_MAX_DEPTH)
		return enc_fail(e, "%s", "nesting too deep (a table that contains itself?)");
	if (!lua_checkstack(L, 4))
		return enc_fail(e, "%s", "Lua stack exhausted");
	size_t n;
	e->depth++;
	json_t *v = table_is_sequence(L, idx, &n) ? table_to_array(L, idx, n, e)
						  : table_to_object(L, idx, e);
	e->depth--;
	return v;
}

static json_t *to_json(lua_State *L, int idx, struct json_enc *e)
{
	switch (lua_type(L, idx)) {
	case LUA_TNIL:
		return json_null();
	case LUA_TBOOLEAN:
		return json_boolean(lua_toboolean(L, idx));
	case LUA_TNUMBER:
		if (lua_isinteger(L, idx))
			return json_integer((json_int_t)lua_tointeger(L, idx));
		double d = lua_tonumber(L, idx);
		if (!isfinite(d))
			return enc_fail(e, "%s", "cannot encode NaN or infinity");
		note_real(e, d);
		return json_real(d);
	case LUA_TSTRING: {
		size_t len;
		const char *s = lua_tolstring(L, idx, &len);
		json_t *v = json_stringn(s, len);
		return v ? v : enc_fail(e, "%s", "string is not valid UTF-8");
	}
	case LUA_TTABLE:
		return table_to_json(L, idx, e);
	default:
		return enc_fail(e, "cannot encode a %s value", luaL_typename(L, idx));
	}
}

json_t *lua_json__to_json(lua_State *L, int idx, char *err, size_t errlen)
{
	struct json_enc e = {.prec = 1, .err = err, .errlen = errlen};
	err[0] = 0;
	return to_json(L, lua_absindex(L, idx), &e);
}

void lua_json__push(lua_State *L, const json_t *v)
{
	luaL_checkstack(L, 3, "JSON value nested too deeply");
	switch (v ? json_typeof(v) : JSON_NULL) {
	case JSON_OBJECT: {
		lua_createtable(L, 0, (int)json_object_size(v));
		for (void *it = json_object_iter((json_t *)v); it;
		     it = json_object_iter_next((json_t *)v, it)) {
			lua_pushlstring(L, json_object_iter_key(it), json_object_iter_key_len(it));
			lua_json__push(L, json_object_iter_value(it));
			lua_rawset(L, -3);
		}
		break;
	}
	case JSON_ARRAY: {
		size_t n = json_array_size(v);
		lua_createtable(L, (int)n, 0);
		for (size_t i = 0; i < n; i++) {
			lua_json__push(L, json_array_get(v, i));
			lua_rawseti(L, -2, (lua_Integer)i + 1);
		}
		break;
	}
	case JSON_STRING:
		lua_pushlstring(L, json_string_value(v), json_string_length(v));
		break;
	case JSON_INTEGER:
		lua_pushinteger(L, (lua_Integer)json_integer_value(v));
		break;
	case JSON_REAL:
		lua_pushnumber(L, json_real_value(v));
		break;
	case JSON_TRUE:
		lua_pushboolean(L, 1);
		break;
	case JSON_FALSE:
		lua_pushboolean(L, 0);
		break;
	case JSON_NULL:
		lua_pushnil(L);
		break;
	}
}

char *lua_json__encode(lua_State *L, int idx, int pretty)
{
	char err[200];
	struct json_enc e = {.prec = 1, .err = err, .errlen = sizeof(err)};
	err[0] = 0;
	json_t *v = to_json(L, lua_absindex(L, idx), &e);
	if (!v)
		luaL_error(L, "json_encode: %s", err);
	size_t flags = JSON_ENCODE_ANY | JSON_SORT_KEYS | JSON_REAL_PRECISION(e.prec) |
		       (pretty ? JSON_INDENT(2) : JSON_COMPACT);
	char *s = json_dumps(v, flags);
	json_decref(v);
	if (!s)
		luaL_error(L, "json_encode: cannot serialise value");
	return s;
}

static int encode_common(lua_State *L, int pretty)
{
	luaL_checkany(L, 1);
	char *s = lua_json__encode(L, 1, pretty);
	lua_pushstring(L, s);
	free(s);
	return 1;
}

static int l_json_encode(lua_State *L)
{
	return encode_common(L, 0);
}

static int l_json_encode_pretty(lua_State *L)
{
	return encode_common(L, 1);
}

/* Parses text with comments (KumoMTA strips // # and block comments
 * first); where is "" or the file name for messages. */
static int parse_commented(lua_State *L, const char *what, const char *where, const char *s,
			   size_t len)
{
	char *copy = malloc(len + 1);
	if (!copy)
		return luaL_error(L, "%s: out of memory", what);
	memcpy(copy, s, len);
	copy[len] = 0;
	int open_comment = jsonc_strip(copy, len) != 0;
	json_error_t jerr;
	json_t *v = json_loadb(copy, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	free(copy);
	if (!v && open_comment)
		return luaL_error(L, "%s: %s%sa /* comment is not closed", what, where,
				  where[0] ? ": " : "");
	if (!v && where[0])
		return luaL_error(L, "%s: %s: %s (line %d column %d)", what, where, jerr.text,
				  jerr.line, jerr.column);
	if (!v)
		return luaL_error(L, "%s: %s at line %d column %d", what, jerr.text, jerr.line,
				  jerr.column);
	lua_json__push(L, v);
	json_decref(v);
	return 1;
}

static int l_json_parse(lua_State *L)
{
	return lua_util__parse_text(L, "json_parse", parse_commented);
}

static int l_json_load(lua_State *L)
{
	return lua_util__parse_file(L, "json_load", parse_commented);
}

static const luaL_Reg json_funcs[] = {
    {"json_encode", l_json_encode},
    {"json_encode_pretty", l_json_encode_pretty},
    {"json_parse", l_json_parse},
    {"json_load", l_json_load},
    {NULL, NULL},
};

void lua_json__register(lua_State *L)
{
	luaL_setfuncs(L, json_funcs, 0);
}
