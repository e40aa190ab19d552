/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.regex (KumoMTA's mod-regex, used by its policy-extras typing.lua):
 * compile(pattern) -> Regex with :is_match(s), :find(s) (first match text
 * or nil), :find_all(s), :captures(s) (nil, or a table: [0] the whole
 * match, [n] each group that took part, [name] each named group),
 * :replace(s, rep) (first match), :replace_all(s, rep), :replacen(s, n, rep)
 * (n = 0: all), :split(s); and escape(s). Patterns are PCRE2 (UTF, Unicode
 * properties); replacements use Rust's syntax: $1, ${1}, $name, ${name},
 * $$ for a dollar; an unknown group inserts nothing. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <string.h>

#include "lua/lua_int.h"

#define REGEX_MT "kumo.regex.Regex"

struct l_regex {
	pcre2_code *re;
	pcre2_match_data *md;
};

static struct l_regex *check_re(lua_State *L)
{
	struct l_regex *r = luaL_checkudata(L, 1, REGEX_MT);
	if (!r->re)
		luaL_error(L, "regex: used after it was freed");
	return r;
}

/* Next match at or after off; 1 with ov set, 0 for none; raises on errors. */
static int next_match(lua_State *L, struct l_regex *r, const char *s, size_t n, size_t off,
		      PCRE2_SIZE **ov)
{
	int rc = pcre2_match(r->re, (PCRE2_SPTR)s, n, off, 0, r->md, NULL);
	if (rc == PCRE2_ERROR_NOMATCH)
		return 0;
	if (rc < 0) {
		PCRE2_UCHAR msg[160];
		pcre2_get_error_message(rc, msg, sizeof(msg));
		return luaL_error(L, "regex: %s", (const char *)msg);
	}
	*ov = pcre2_get_ovector_pointer(r->md);
	return 1;
}

/* After an empty match at e, the next search starts one character later. */
static size_t advance(const char *s, size_t n, size_t b, size_t e)
{
	if (e > b)
		return e;
	size_t k = e + 1;
	while (k < n && ((unsigned char)s[k] & 0xC0) == 0x80)
		k++;
	return k;
}

/* Successive matches as Rust's find_iter: an empty match right where the
 * previous match ended is skipped. */
struct iter {
	size_t off, last_end;
	int have;
};

static int iter_next(lua_State *L, struct l_regex *r, const char *s, size_t n, struct iter *it,
		     PCRE2_SIZE **ov)
{
	for (;;) {
		if (it->off > n || !next_match(L, r, s, n, it->off, ov))
			return 0;
		size_t b = (*ov)[0], e = (*ov)[1];
		it->off = advance(s, n, b, e);
		if (b == e && it->have && b == it->last_end)
			continue;
		it->have = 1;
		it->last_end = e;
		return 1;
	}
}

/* The regex (argument 1), the subject (argument 2) and its first match. */
static int first_match(lua_State *L, struct l_regex **r, const char **s, size_t *n, PCRE2_SIZE **ov)
{
	*r = check_re(L);
	*s = luaL_checklstring(L, 2, n);
	return next_match(L, *r, *s, *n, 0, ov);
}

/* :is_match(s) and :find(s); upvalue: true for find. */
static int l_first(lua_State *L)
{
	struct l_regex *r;
	const char *s;
	size_t n;
	PCRE2_SIZE *ov;
	int found = first_match(L, &r, &s, &n, &ov);
	if (!lua_toboolean(L, lua_upvalueindex(1)))
		lua_pushboolean(L, found);
	else if (found)
		lua_pushlstring(L, s + ov[0], ov[1] - ov[0]);
	else
		lua_pushnil(L);
	return 1;
}

/* :find_all(s) (the matches) and :split(s) (the text between them);
 * upvalue: true for split. */
static int l_all(lua_State *L)
{
	struct l_regex *r = check_re(L);
	int split = lua_toboolean(L, lua_upvalueindex(1));
	size_t n, last = 0;
	const char *s = luaL_checklstring(L, 2, &n);
	lua_newtable(L);
	lua_Integer k = 0;
	PCRE2_SIZE *ov;
	struct iter it = {0};
	while (iter_next(L, r, s, n, &it, &ov)) {
		if (split)
			lua_pushlstring(L, s + last, ov[0] - last);
		else
			lua_pushlstring(L, s + ov[0], ov[1] - ov[0]);
		lua_rawseti(L, -2, ++k);
		last = ov[1];
	}
	if (split) {
		lua_pushlstring(L, s + last, n - last);
		lua_rawseti(L, -2, ++k);
	}
	return 1;
}

static int l_captures(lua_State *L)
{
	struct l_regex *r;
	const char *s;
	size_t n;
	PCRE2_SIZE *ov;
	if (!first_match(L, &r, &s, &n, &ov))
		return 0;
	uint32_t groups = pcre2_get_ovector_count(r->md);
	lua_newtable(L);
	for (uint32_t g = 0; g < groups; g++) {
		if (ov[2 * g] == PCRE2_UNSET)
			continue;
		lua_pushlstring(L, s + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
		lua_rawseti(L, -2, g);
	}
	uint32_t names, entry;
	PCRE2_SPTR table;
	pcre2_pattern_info(r->re, PCRE2_INFO_NAMECOUNT, &names);
	pcre2_pattern_info(r->re, PCRE2_INFO_NAMEENTRYSIZE, &entry);
	pcre2_pattern_info(r->re, PCRE2_INFO_NAMETABLE, &table);
	for (uint32_t i = 0; i < names; i++) {
		const unsigned char *e = table + i * entry;
		uint32_t g = (uint32_t)(e[0] << 8 | e[1]);
		if (g < groups && ov[2 * g] != PCRE2_UNSET) {
			lua_pushlstring(L, s + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
			lua_setfield(L, -2, (const char *)e + 2);
		}
	}
	return 1;
}

static int is_name_char(int c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       c == '_';
}

/* Appends group g (a number or a name) of the current match, if set. */
static void add_group(struct l_regex *r, luaL_Buffer *b, const char *s, const PCRE2_SIZE *ov,
		      const char *name, size_t nl)
{
	char tmp[128];
	int g = -1;
	if (nl && strspn(name, "0123456789") >= nl) {
		g = 0;
		for (size_t i = 0; i < nl && g < 100000; i++)
			g = g * 10 + (name[i] - '0');
	} else if (nl && nl < sizeof(tmp)) {
		memcpy(tmp, name, nl);
		tmp[nl] = 0;
		g = pcre2_substring_number_from_name(r->re, (PCRE2_SPTR)tmp);
	}
	if (g < 0 || (uint32_t)g >= pcre2_get_ovector_count(r->md) || ov[2 * g] == PCRE2_UNSET)
		return;
	luaL_addlstring(b, s + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
}

static void expand(struct l_regex *r, luaL_Buffer *b, const char *s, const PCRE2_SIZE *ov,
		   const char *rep, size_t rn)
{
	for (size_t i = 0; i < rn; i++) {
		if (rep[i] != '$' || i + 1 >= rn) {
			luaL_addchar(b, rep[i]);
			continue;
		}
		if (rep[i + 1] == '$') {
			luaL_addchar(b, '$');
			i++;
		} else if (rep[i + 1] == '{') {
			const char *close = memchr(rep + i + 2, '}', rn - i - 2);
			if (!close) {
				luaL_addchar(b, '$');
				continue;
			}
			add_group(r, b, s, ov, rep + i + 2, (size_t)(close - rep) - i - 2);
			i = (size_t)(close - rep);
		} else if (is_name_char((unsigned char)rep[i + 1])) {
			size_t j = i + 1;
			while (j < rn && is_name_char((unsigned char)rep[j]))
				j++;
			add_group(r, b, s, ov, rep + i + 1, j - i - 1);
			i = j - 1;
		} else {
			luaL_addchar(b, '$');
		}
	}
}

static int replace_impl(lua_State *L, lua_Integer limit, int rep_arg)
{
	struct l_regex *r = check_re(L);
	size_t n, rn;
	const char *s = luaL_checklstring(L, 2, &n);
	const char *rep = luaL_checklstring(L, rep_arg, &rn);
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	size_t last = 0;
	lua_Integer done = 0;
	PCRE2_SIZE *ov;
	struct iter it = {0};
	while ((limit == 0 || done < limit) && iter_next(L, r, s, n, &it, &ov)) {
		luaL_addlstring(&b, s + last, ov[0] - last);
		expand(r, &b, s, ov, rep, rn);
		last = ov[1];
		done++;
	}
	luaL_addlstring(&b, s + last, n - last);
	luaL_pushresult(&b);
	return 1;
}

static int l_replace(lua_State *L)
{
	return replace_impl(L, 1, 3);
}

static int l_replace_all(lua_State *L)
{
	return replace_impl(L, 0, 3);
}

static int l_replacen(lua_State *L)
{
	lua_Integer lim = luaL_checkinteger(L, 3);
	if (lim < 0)
		return luaL_error(L, "replacen: the limit must be >= 0");
	return replace_impl(L, lim, 4);
}

static int l_gc(lua_State *L)
{
	struct l_regex *r = luaL_checkudata(L, 1, REGEX_MT);
	pcre2_match_data_free(r->md);
	pcre2_code_free(r->re);
	r->md = NULL;
	r->re = NULL;
	return 0;
}

void *lua_regex__compile(lua_State *L, const char *what, const char *pat, size_t plen)
{
	int errcode;
	PCRE2_SIZE erroff;
	pcre2_code *re =
	    pcre2_compile((PCRE2_SPTR)pat, plen, PCRE2_UTF | PCRE2_UCP, &errcode, &erroff, NULL);
	if (!re) {
		PCRE2_UCHAR msg[160];
		pcre2_get_error_message(errcode, msg, sizeof(msg));
		luaL_error(L, "%s: invalid regular expression '%s' at offset %d: %s", what, pat,
			   (int)erroff, (const char *)msg);
		return NULL;
	}
	pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* best effort: interpreted otherwise */
	return re;
}

static int l_compile(lua_State *L)
{
	size_t plen;
	const char *pat = luaL_checklstring(L, 1, &plen);
	pcre2_code *re = lua_regex__compile(L, "regex.compile", pat, plen);
	struct l_regex *r = lua_newuserdatauv(L, sizeof(*r), 0);
	r->re = re;
	r->md = pcre2_match_data_create_from_pattern(re, NULL);
	luaL_setmetatable(L, REGEX_MT);
	return 1;
}

/* Backslash before every character with a meaning in a pattern. */
static int l_escape(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	for (size_t i = 0; i < n; i++) {
		if (strchr("\\.+*?()|[]{}^$#&-~", s[i]) && s[i])
			luaL_addchar(&b, '\\');
		luaL_addchar(&b, s[i]);
	}
	luaL_pushresult(&b);
	return 1;
}

void lua_regex__register(lua_State *L)
{
	static const luaL_Reg methods[] = {
	    {"captures", l_captures}, {"replace", l_replace}, {"replace_all", l_replace_all},
	    {"replacen", l_replacen}, {NULL, NULL},
	};
	static const luaL_Reg funcs[] = {
	    {"compile", l_compile}, {"escape", l_escape}, {NULL, NULL}};
	lua_util__class(L, REGEX_MT, methods, "__gc", l_gc);
	luaL_getmetatable(L, REGEX_MT);
	lua_getfield(L, -1, "__index");
	for (int second = 0; second <= 1; second++) {
		lua_pushboolean(L, second);
		lua_pushcclosure(L, l_first, 1);
		lua_setfield(L, -2, second ? "find" : "is_match");
		lua_pushboolean(L, second);
		lua_pushcclosure(L, l_all, 1);
		lua_setfield(L, -2, second ? "split" : "find_all");
	}
	lua_pop(L, 2);
	luaL_newlib(L, funcs);
	lua_setfield(L, -2, "regex");
}
