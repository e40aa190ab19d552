/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.serde.yaml_parse / yaml_load / yaml_encode over libyaml (Debian's
 * libyaml: it scans and parses, this file only walks its events).
 * Values as KumoMTA's serde bridge (YAML -> JSON value -> Lua): plain scalars
 * resolve by the YAML 1.2 core schema (null ~ "" -> nil, true/false in their
 * three spellings, decimal/0x/0o integers, floats with .inf/.nan), quoted and
 * block scalars and !!str stay strings; mapping keys are scalars taken as
 * their text; one document at most (none -> nil); an alias reuses the
 * anchored value (a shared Lua table, so no expansion blow-up). Errors name
 * the line and column (1-based). Encoding goes through lua_json's converter
 * (so sequences, key rules and errors are json_encode's) and emits block
 * style with sorted keys; strings that would read back as another type are
 * single-quoted, text of several lines is a literal block. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "base/buf.h"
#include "lua/lua_int.h"

#define LUA_YAML_MAX_DEPTH 128
#define LUA_YAML_PARSER_MT "kumod.yaml_parser"

/* A Lua userdata, so that a Lua error anywhere in the walk (a syntax error,
 * out of memory) still frees libyaml's parser and event: its __gc does. */
struct yparse {
	lua_State *L;
	yaml_parser_t p;
	int have_p;
	yaml_event_t ev; /* the current event (owned while have_ev) */
	int have_ev;
	int anchors; /* stack index of the anchor -> value table */
	const char *what;
	const char *where; /* "" or the file name */
};

static void yfree(struct yparse *y)
{
	if (y->have_ev)
		yaml_event_delete(&y->ev);
	if (y->have_p)
		yaml_parser_delete(&y->p);
	y->have_ev = y->have_p = 0;
}

static int yparse_gc(lua_State *L)
{
	yfree(luaL_checkudata(L, 1, LUA_YAML_PARSER_MT));
	return 0;
}

static int yraise(struct yparse *y, const char *msg, size_t line, size_t col)
{
	lua_State *L = y->L;
	return luaL_error(L, "%s: %s%s%s at line %d column %d", y->what, y->where,
			  y->where[0] ? ": " : "", msg, (int)line + 1, (int)col + 1);
}

static void ynext(struct yparse *y)
{
	if (y->have_ev) {
		yaml_event_delete(&y->ev);
		y->have_ev = 0;
	}
	if (!yaml_parser_parse(&y->p, &y->ev)) {
		char msg[300];
		snprintf(msg, sizeof(msg), "%s%s%s", y->p.problem ? y->p.problem : "invalid YAML",
			 y->p.context ? " " : "", y->p.context ? y->p.context : "");
		yraise(y, msg, y->p.problem_mark.line, y->p.problem_mark.column);
	}
	y->have_ev = 1;
}

static int all_digits(const char *s, size_t n, int base)
{
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		int c = (unsigned char)s[i];
		int ok = base == 16  ? ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
					(c >= 'A' && c <= 'F'))
			 : base == 8 ? (c >= '0' && c <= '7')
				     : (c >= '0' && c <= '9');
		if (!ok)
			return 0;
	}
	return 1;
}

static int is_one_of(const char *s, const char *const *set)
{
	for (; *set; set++)
		if (strcmp(s, *set) == 0)
			return 1;
	return 0;
}

/* Pushes the value of a plain scalar by the YAML 1.2 core schema; returns 0
 * (nothing pushed) when it is a string. */
static int push_plain(lua_State *L, const char *s, size_t n)
{
	static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
	static const char *const trues[] = {"true", "True", "TRUE", NULL};
	static const char *const falses[] = {"false", "False", "FALSE", NULL};
	static const char *const infs[] = {".inf", ".Inf", ".INF", NULL};
	static const char *const nans[] = {".nan", ".NaN", ".NAN", NULL};
	if (strlen(s) != n) /* an embedded NUL: only a string can hold it */
		return 0;
	if (is_one_of(s, nulls)) {
		lua_pushnil(L);
		return 1;
	}
	if (is_one_of(s, trues) || is_one_of(s, falses)) {
		lua_pushboolean(L, s[0] == 't' || s[0] == 'T');
		return 1;
	}
	const char *b = s + (s[0] == '+' || s[0] == '-');
	if (is_one_of(b, infs)) {
		lua_pushnumber(L, s[0] == '-' ? -HUGE_VAL : HUGE_VAL);
		return 1;
	}
	if (b == s && is_one_of(s, nans)) {
		lua_pushnumber(L, NAN);
		return 1;
	}
	int base = 0;
	const char *digits = b;
	if (b == s && s[0] == '0' && (s[1] == 'x' || s[1] == 'o')) {
		base = s[1] == 'x' ? 16 : 8;
		digits = s + 2;
	} else if (all_digits(b, strlen(b), 10)) {
		base = 10;
	}
	if (base && all_digits(digits, strlen(digits), base)) {
		errno = 0;
		char *end;
		long long v = base == 10 ? strtoll(s, &end, 10) : strtoll(digits, &end, base);
		if (errno == 0 && *end == 0) {
			lua_pushinteger(L, (lua_Integer)v);
			return 1;
		}
		/* out of range for an integer: a float, as serde's f64 fallback */
		lua_pushnumber(L, strtod(s, NULL));
		return 1;
	}
	/* [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )? */
	const char *p = b;
	size_t ip = strspn(p, "0123456789");
	p += ip;
	size_t fp = 0;
	if (*p == '.') {
		p++;
		fp = strspn(p, "0123456789");
		p += fp;
	}
	if (ip + fp == 0)
		return 0;
	if (*p == 'e' || *p == 'E') {
		p++;
		p += (*p == '+' || *p == '-');
		size_t ep = strspn(p, "0123456789");
		if (ep == 0)
			return 0;
		p += ep;
	}
	if (*p)
		return 0;
	lua_pushnumber(L, strtod(s, NULL));
	return 1;
}

static void push_node(struct yparse *y, int depth);

static void remember_anchor(struct yparse *y, const yaml_char_t *anchor)
{
	if (!anchor)
		return;
	lua_pushstring(y->L, (const char *)anchor);
	lua_pushvalue(y->L, -2);
	lua_rawset(y->L, y->anchors);
}

/* The current event is MAPPING_START; consumes through MAPPING_END. */
static void push_mapping(struct yparse *y, int depth)
{
	lua_State *L = y->L;
	lua_newtable(L);
	remember_anchor(y, y->ev.data.mapping_start.anchor);
	for (;;) {
		ynext(y);
		if (y->ev.type == YAML_MAPPING_END_EVENT)
			return;
		yaml_mark_t km = y->ev.start_mark;
		if (y->ev.type == YAML_SCALAR_EVENT) {
			lua_pushlstring(L, (const char *)y->ev.data.scalar.value,
					y->ev.data.scalar.length);
			if (y->ev.data.scalar.anchor)
				remember_anchor(y, y->ev.data.scalar.anchor);
		} else if (y->ev.type == YAML_ALIAS_EVENT) {
			lua_pushstring(L, (const char *)y->ev.data.alias.anchor);
			if (lua_rawget(L, y->anchors) != LUA_TSTRING)
				yraise(y, "a mapping key must be a string", km.line, km.column);
		} else {
			yraise(y, "a mapping key must be a string, not a collection", km.line,
			       km.column);
		}
		ynext(y);
		push_node(y, depth + 1);
		lua_rawset(L, -3);
	}
}

/* The current event is SEQUENCE_START; consumes through SEQUENCE_END. */
static void push_sequence(struct yparse *y, int depth)
{
	lua_State *L = y->L;
	lua_newtable(L);
	remember_anchor(y, y->ev.data.sequence_start.anchor);
	for (lua_Integer i = 1;; i++) {
		ynext(y);
		if (y->ev.type == YAML_SEQUENCE_END_EVENT)
			return;
		push_node(y, depth + 1);
		lua_rawseti(L, -2, i);
	}
}

/* Pushes the node starting at the current event. */
static void push_node(struct yparse *y, int depth)
{
	lua_State *L = y->L;
	yaml_mark_t m = y->ev.start_mark;
	if (depth > LUA_YAML_MAX_DEPTH || !lua_checkstack(L, 6))
		yraise(y, "nesting too deep", m.line, m.column);
	switch (y->ev.type) {
	case YAML_SCALAR_EVENT: {
		const char *s = (const char *)y->ev.data.scalar.value;
		size_t n = y->ev.data.scalar.length;
		const char *tag = (const char *)y->ev.data.scalar.tag;
		int as_string = y->ev.data.scalar.style != YAML_PLAIN_SCALAR_STYLE ||
				(tag && strcmp(tag, YAML_STR_TAG) == 0);
		if (as_string || !push_plain(L, s, n))
			lua_pushlstring(L, s, n);
		remember_anchor(y, y->ev.data.scalar.anchor);
		return;
	}
	case YAML_ALIAS_EVENT:
		lua_pushstring(L, (const char *)y->ev.data.alias.anchor);
		lua_rawget(L, y->anchors);
		return;
	case YAML_SEQUENCE_START_EVENT:
		push_sequence(y, depth);
		return;
	case YAML_MAPPING_START_EVENT:
		push_mapping(y, depth);
		return;
	default:
		yraise(y, "unexpected YAML event", m.line, m.column);
	}
}

/* Parses len bytes at s; pushes the value (nil for an empty stream). */
static int parse_text(lua_State *L, const char *what, const char *where, const char *s, size_t len)
{
	struct yparse *y = lua_newuserdatauv(L, sizeof(*y), 0);
	memset(y, 0, sizeof(*y));
	if (luaL_newmetatable(L, LUA_YAML_PARSER_MT)) {
		lua_pushcfunction(L, yparse_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_setmetatable(L, -2);
	y->L = L;
	y->what = what;
	y->where = where;
	lua_newtable(L);
	y->anchors = lua_gettop(L);
	if (!yaml_parser_initialize(&y->p))
		return luaL_error(L, "%s: out of memory", what);
	y->have_p = 1;
	yaml_parser_set_input_string(&y->p, (const unsigned char *)s, len);
	ynext(y); /* STREAM_START */
	ynext(y);
	if (y->ev.type == YAML_STREAM_END_EVENT) {
		lua_pushnil(L);
	} else {
		ynext(y); /* past DOCUMENT_START */
		push_node(y, 0);
		ynext(y); /* DOCUMENT_END */
		ynext(y);
		if (y->ev.type != YAML_STREAM_END_EVENT)
			yraise(y, "more than one YAML document is not supported",
			       y->ev.start_mark.line, y->ev.start_mark.column);
	}
	yfree(y);
	return 1;
}

static int l_yaml_parse(lua_State *L)
{
	return lua_util__parse_text(L, "yaml_parse", parse_text);
}

static int l_yaml_load(lua_State *L)
{
	return lua_util__parse_file(L, "yaml_load", parse_text);
}

/* --- encoding ------------------------------------------------------------ */

/* Emission raises no Lua error (out of memory in struct buf aborts, as
 * internal bookkeeping does), so the emitter and the JSON value are always
 * freed; the Lua stack is only touched by push_plain's balanced probes. */
struct yemit {
	yaml_emitter_t e;
	const char *fail;
};

static int write_out(void *ctx, unsigned char *data, size_t size)
{
	buf_append(ctx, data, size);
	return 1;
}

static int emit(struct yemit *w, yaml_event_t *ev)
{
	if (!w->fail && !yaml_emitter_emit(&w->e, ev))
		w->fail = w->e.problem ? w->e.problem : "emitter error";
	return w->fail == NULL;
}

static int emit_scalar(struct yemit *w, const char *s, size_t n, yaml_scalar_style_t style)
{
	yaml_event_t ev;
	if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)n, 1, 1, style)) {
		w->fail = "out of memory";
		return 0;
	}
	return emit(w, &ev);
}

static int cmp_keys(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int emit_json(struct yemit *w, lua_State *L, json_t *v)
{
	yaml_event_t ev;
	char num[48];
	switch (json_typeof(v)) {
	case JSON_OBJECT: {
		size_t n = json_object_size(v), i = 0;
		const char **keys = malloc((n ? n : 1) * sizeof(*keys));
		if (!keys) {
			w->fail = "out of memory";
			return 0;
		}
		const char *k;
		json_t *x;
		json_object_foreach(v, k, x) keys[i++] = k;
		qsort(keys, n, sizeof(*keys), cmp_keys);
		yaml_mapping_start_event_initialize(
		    &ev, NULL, NULL, 1, n ? YAML_BLOCK_MAPPING_STYLE : YAML_FLOW_MAPPING_STYLE);
		int ok = emit(w, &ev);
		for (i = 0; ok && i < n; i++) {
			json_t *kv = json_string(keys[i]);
			ok = kv && emit_json(w, L, kv) &&
			     emit_json(w, L, json_object_get(v, keys[i]));
			json_decref(kv);
		}
		free(keys);
		yaml_mapping_end_event_initialize(&ev);
		return ok && emit(w, &ev);
	}
	case JSON_ARRAY: {
		size_t i;
		json_t *x;
		yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE);
		if (!emit(w, &ev))
			return 0;
		json_array_foreach(v, i, x) if (!emit_json(w, L, x)) return 0;
		yaml_sequence_end_event_initialize(&ev);
		return emit(w, &ev);
	}
	case JSON_STRING: {
		const char *s = json_string_value(v);
		size_t n = json_string_length(v);
		int top = lua_gettop(L);
		/* quote what would read back as null, a boolean or a number; text of
		 * several lines as a literal block (libyaml falls back to quoting when
		 * a block cannot hold it, e.g. trailing spaces) */
		int plain_other = push_plain(L, s, n);
		lua_settop(L, top);
		yaml_scalar_style_t style = plain_other		 ? YAML_SINGLE_QUOTED_SCALAR_STYLE
					    : memchr(s, '\n', n) ? YAML_LITERAL_SCALAR_STYLE
								 : YAML_ANY_SCALAR_STYLE;
		return emit_scalar(w, s, n, style);
	}
	case JSON_INTEGER:
		snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
		return emit_scalar(w, num, strlen(num), YAML_PLAIN_SCALAR_STYLE);
	case JSON_REAL: {
		double d = json_real_value(v);
		for (int p = 1; p <= 17; p++) {
			snprintf(num, sizeof(num), "%.*g", p, d);
			if (strtod(num, NULL) == d)
				break;
		}
		if (!strpbrk(num, ".eEn")) /* keep it a float when read back: 1 -> 1.0 */
			strcat(num, ".0");
		return emit_scalar(w, num, strlen(num), YAML_PLAIN_SCALAR_STYLE);
	}
	case JSON_TRUE:
		return emit_scalar(w, "true", 4, YAML_PLAIN_SCALAR_STYLE);
	case JSON_FALSE:
		return emit_scalar(w, "false", 5, YAML_PLAIN_SCALAR_STYLE);
	case JSON_NULL:
		return emit_scalar(w, "null", 4, YAML_PLAIN_SCALAR_STYLE);
	}
	return 0;
}

static int l_yaml_encode(lua_State *L)
{
	luaL_checkany(L, 1);
	char err[200];
	lua_Number d = lua_type(L, 1) == LUA_TNUMBER ? lua_tonumber(L, 1) : 0;
	if (!isfinite(d)) { /* lua_json refuses them; YAML spells them */
		lua_pushstring(L, isnan(d) ? ".nan\n" : d > 0 ? ".inf\n" : "-.inf\n");
		return 1;
	}
	json_t *v = lua_json__to_json(L, 1, err, sizeof(err));
	if (!v)
		return luaL_error(L, "yaml_encode: %s", err);
	luaL_checkstack(L, 4, "yaml_encode");
	struct buf out;
	buf_init(&out);
	struct yemit w = {0};
	yaml_event_t ev;
	if (!yaml_emitter_initialize(&w.e)) {
		json_decref(v);
		return luaL_error(L, "yaml_encode: out of memory");
	}
	yaml_emitter_set_output(&w.e, write_out, &out);
	yaml_emitter_set_unicode(&w.e, 1);
	yaml_emitter_set_width(&w.e, -1);
	yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING);
	int ok = emit(&w, &ev);
	yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1);
	ok = ok && emit(&w, &ev) && emit_json(&w, L, v);
	yaml_document_end_event_initialize(&ev, 1);
	ok = ok && emit(&w, &ev);
	yaml_stream_end_event_initialize(&ev);
	ok = ok && emit(&w, &ev);
	json_decref(v);
	const char *fail = w.fail;
	yaml_emitter_delete(&w.e);
	if (!ok) {
		buf_free(&out);
		return luaL_error(L, "yaml_encode: %s", fail ? fail : "emitter error");
	}
	lua_pushlstring(L, out.data ? out.data : "", out.len);
	buf_free(&out);
	return 1;
}

static const luaL_Reg yaml_funcs[] = {
    {"yaml_parse", l_yaml_parse},
    {"yaml_load", l_yaml_load},
    {"yaml_encode", l_yaml_encode},
    {NULL, NULL},
};

void lua_yaml__register(lua_State *L)
{
	luaL_setfuncs(L, yaml_funcs, 0);
}
