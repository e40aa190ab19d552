/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.domain_map.new, kumo.cidr.make_map and kumo.regex_set_map.new:
 * userdata maps indexed like tables (kumo-policy-surface.md §1.3-1.5).
 * The matching lives in kumod/proto (domain_map.c, cidr_map.c) and PCRE2;
 * the Lua values sit in the userdata's uservalue table, referenced by the
 * numbers the proto maps hold. All three can be returned by a memoized
 * function (the same object comes back). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/xalloc.h"
#include "lua/lua_int.h"
#include "proto/cidr_map.h"
#include "proto/domain_map.h"

#define DOMAIN_MAP_MT "kumo.domain_map"
#define CIDR_MAP_MT "kumo.cidr_map"
#define REGEX_SET_MAP_MT "kumo.regex_set_map"

/* The uservalue table of the userdata at idx (pushed). */
static int push_values(lua_State *L, int idx)
{
	lua_getiuservalue(L, idx, 1);
	return lua_gettop(L);
}

static void *new_map(lua_State *L, size_t size, const char *mt, lua_CFunction index,
		     lua_CFunction newindex, lua_CFunction gc)
{
	void *p = lua_newuserdatauv(L, size, 1);
	memset(p, 0, size);
	if (luaL_newmetatable(L, mt)) {
		lua_pushcfunction(L, index);
		lua_setfield(L, -2, "__index");
		lua_pushcfunction(L, newindex);
		lua_setfield(L, -2, "__newindex");
		lua_pushcfunction(L, gc);
		lua_setfield(L, -2, "__gc");
		lua_pushboolean(L, 0);
		lua_setfield(L, -2, "__metatable");
	}
	lua_setmetatable(L, -2);
	lua_newtable(L);
	lua_setiuservalue(L, -2, 1);
	return p;
}

/* Calls newindex(map, k, v) for every pair of the seed table at idx. */
static void seed(lua_State *L, int map, int idx, lua_CFunction newindex)
{
	if (lua_isnoneornil(L, idx))
		return;
	luaL_checktype(L, idx, LUA_TTABLE);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pushcfunction(L, newindex);
		lua_pushvalue(L, map);
		lua_pushvalue(L, -4);
		lua_pushvalue(L, -4);
		lua_call(L, 3, 0);
		lua_pop(L, 1);
	}
}

/* --- kumo.domain_map ------------------------------------------------------------ */

struct l_domain_map {
	struct domain_map *m;
};

static struct l_domain_map *check_dm(lua_State *L)
{
	struct l_domain_map *d = luaL_checkudata(L, 1, DOMAIN_MAP_MT);
	if (!d->m)
		luaL_error(L, "domain_map: used after it was freed");
	return d;
}

static int dm_index(lua_State *L)
{
	struct l_domain_map *d = check_dm(L);
	if (lua_type(L, 2) != LUA_TSTRING)
		return 0; /* only names can be covered */
	size_t len;
	const char *name = lua_tolstring(L, 2, &len);
	int64_t ref;
	if (!domain_map_get(d->m, name, len, &ref))
		return 0;
	push_values(L, 1);
	lua_rawgeti(L, -1, (lua_Integer)ref);
	return 1;
}

static int dm_newindex(lua_State *L)
{
	struct l_domain_map *d = check_dm(L);
	if (lua_type(L, 2) != LUA_TSTRING)
		return luaL_error(L, "domain_map: keys must be domain name strings, not %s",
				  luaL_typename(L, 2));
	size_t len;
	const char *name = lua_tolstring(L, 2, &len);
	int values = push_values(L, 1);
	int64_t old;
	if (lua_isnil(L, 3)) {
		if (domain_map_unset(d->m, name, len, &old))
			luaL_unref(L, values, (int)old);
		return 0;
	}
	lua_pushvalue(L, 3);
	int ref = luaL_ref(L, values);
	if (domain_map_set(d->m, name, len, ref, &old))
		luaL_unref(L, values, (int)old);
	return 0;
}

static int dm_gc(lua_State *L)
{
	struct l_domain_map *d = luaL_checkudata(L, 1, DOMAIN_MAP_MT);
	domain_map_free(d->m);
	d->m = NULL;
	return 0;
}

static int l_domain_map_new(lua_State *L)
{
	lua_settop(L, 1); /* the seed table or nil; the map goes to 2 */
	struct l_domain_map *d =
	    new_map(L, sizeof(*d), DOMAIN_MAP_MT, dm_index, dm_newindex, dm_gc);
	d->m = domain_map_new();
	seed(L, lua_gettop(L), 1, dm_newindex);
	return 1;
}

/* --- kumo.cidr.make_map ---------------------------------------------------------- */

struct l_cidr_map {
	struct cidr_map m;
};

static int cm_index(lua_State *L)
{
	struct l_cidr_map *c = luaL_checkudata(L, 1, CIDR_MAP_MT);
	const char *key = luaL_checkstring(L, 2);
	int family;
	uint8_t addr[16];
	if (cidr_map_addr_parse(key, &family, addr) != 0)
		return luaL_error(L, "cidr map: '%s' is not an IP address", key);
	int64_t ref;
	if (!cidr_map_get(&c->m, family, addr, &ref))
		return 0;
	push_values(L, 1);
	lua_rawgeti(L, -1, (lua_Integer)ref);
	return 1;
}

static void cm_drop(int64_t ref, void *ctx)
{
	lua_State *L = ctx;
	luaL_unref(L, -1, (int)ref);
}

static int cm_newindex(lua_State *L)
{
	struct l_cidr_map *c = luaL_checkudata(L, 1, CIDR_MAP_MT);
	if (lua_type(L, 2) != LUA_TSTRING)
		return luaL_error(L, "cidr map: keys must be IP or CIDR strings, not %s",
				  luaL_typename(L, 2));
	struct cidr key;
	char err[200];
	if (cidr_map_key_parse(lua_tostring(L, 2), &key, err, sizeof(err)) != 0)
		return luaL_error(L, "cidr map: %s", err);
	push_values(L, 1); /* top: cm_drop unrefs from it */
	if (lua_isnil(L, 3)) {
		size_t w = 0;
		for (size_t i = 0; i < c->m.n; i++) {
			const struct cidr *k = &c->m.e[i].key;
			if (k->family == key.family && k->prefix == key.prefix &&
			    memcmp(k->addr, key.addr, sizeof(k->addr)) == 0)
				cm_drop(c->m.e[i].value, L);
			else
				c->m.e[w++] = c->m.e[i];
		}
		c->m.n = w;
		return 0;
	}
	lua_pushvalue(L, 3);
	int ref = luaL_ref(L, -2);
	cidr_map_set(&c->m, &key, ref, cm_drop, L);
	return 0;
}

static int cm_gc(lua_State *L)
{
	struct l_cidr_map *c = luaL_checkudata(L, 1, CIDR_MAP_MT);
	cidr_map_free(&c->m);
	return 0;
}

static int l_cidr_make_map(lua_State *L)
{
	lua_settop(L, 1);
	new_map(L, sizeof(struct l_cidr_map), CIDR_MAP_MT, cm_index, cm_newindex, cm_gc);
	seed(L, lua_gettop(L), 1, cm_newindex);
	return 1;
}

/* --- kumo.regex_set_map.new --------------------------------------------------------- */

struct l_regex_set {
	size_t n;
	pcre2_code **re;
	int *refs;
	pcre2_match_data *md;
};

static int rs_index(lua_State *L)
{
	struct l_regex_set *r = luaL_checkudata(L, 1, REGEX_SET_MAP_MT);
	size_t len;
	const char *s = luaL_checklstring(L, 2, &len);
	for (size_t i = 0; i < r->n; i++) {
		int rc = pcre2_match(r->re[i], (PCRE2_SPTR)s, len, 0, 0, r->md, NULL);
		if (rc >= 0) {
			push_values(L, 1);
			lua_rawgeti(L, -1, r->refs[i]);
			return 1;
		}
		if (rc != PCRE2_ERROR_NOMATCH && rc != PCRE2_ERROR_BADUTFOFFSET) {
			if (rc <= PCRE2_ERROR_UTF8_ERR1 && rc >= PCRE2_ERROR_UTF8_ERR21)
				return luaL_error(L,
						  "regex_set_map: the subject is not valid UTF-8");
			PCRE2_UCHAR msg[160];
			pcre2_get_error_message(rc, msg, sizeof(msg));
			return luaL_error(L, "regex_set_map: matching failed: %s",
					  (const char *)msg);
		}
	}
	return 0;
}

static int rs_newindex(lua_State *L)
{
	return luaL_error(
	    L, "regex_set_map is immutable: build a new one with kumo.regex_set_map.new");
}

static int rs_gc(lua_State *L)
{
	struct l_regex_set *r = luaL_checkudata(L, 1, REGEX_SET_MAP_MT);
	for (size_t i = 0; i < r->n; i++)
		pcre2_code_free(r->re[i]);
	free(r->re);
	free(r->refs);
	pcre2_match_data_free(r->md);
	memset(r, 0, sizeof(*r));
	return 0;
}

static int l_regex_set_map_new(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	struct l_regex_set *r =
	    new_map(L, sizeof(*r), REGEX_SET_MAP_MT, rs_index, rs_newindex, rs_gc);
	int map = lua_gettop(L);
	int values = push_values(L, map);
	size_t cap = 0;
	lua_pushnil(L);
	while (lua_next(L, 1)) {
		if (lua_type(L, -2) != LUA_TSTRING)
			return luaL_error(
			    L, "regex_set_map: keys must be regular expression strings, not %s",
			    luaL_typename(L, -2));
		size_t plen;
		const char *pat = lua_tolstring(L, -2, &plen);
		pcre2_code *re = lua_regex__compile(L, "regex_set_map", pat, plen);
		if (r->n == cap) {
			cap = cap ? cap * 2 : 8;
			r->re = xrealloc(r->re, cap * sizeof(*r->re));
			r->refs = xrealloc(r->refs, cap * sizeof(*r->refs));
		}
		r->re[r->n] = re;
		r->refs[r->n] = luaL_ref(L, values); /* pops the value */
		r->n++;
	}
	r->md = pcre2_match_data_create(1, NULL);
	lua_settop(L, map);
	return 1;
}

void lua_maps__register(lua_State *L)
{
	lua_newtable(L);
	lua_pushcfunction(L, l_domain_map_new);
	lua_setfield(L, -2, "new");
	lua_setfield(L, -2, "domain_map");
	lua_newtable(L);
	lua_pushcfunction(L, l_cidr_make_map);
	lua_setfield(L, -2, "make_map");
	lua_setfield(L, -2, "cidr");
	lua_newtable(L);
	lua_pushcfunction(L, l_regex_set_map_new);
	lua_setfield(L, -2, "new");
	lua_setfield(L, -2, "regex_set_map");
}
