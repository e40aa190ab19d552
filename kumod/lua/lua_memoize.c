/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.memoize(fn, {name, ttl, capacity, ...}): a process-wide LRU cache
 * with a time to live in front of fn, as KumoMTA's (kumo-policy-surface.md
 * §1.1). The key is the JSON text of the arguments (none -> null, one ->
 * that value, several -> an array, so f(1, 2) and f({1, 2}) share an
 * entry; object keys sorted). Several results are cached as one array. A
 * failing fn is cached as that error for 60 s whatever the ttl. A table
 * comes back as a copy of its top level (copy_top). Caches live as long as the Lua state; the same
 * name with the same parameters reuses its cache (the policy re-runs),
 * changed parameters start a new one. Every lookup updates the
 * memoize_cache_* and lruttl_* metrics and fires the memoize_lookup
 * tracepoint (result hit, miss, expired, error). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/metrics.h"
#include "base/xalloc.h"
#include "ktrace.h"
#include "lua/lua_int.h"
#include "proto/duration.h"

#define MEMO_CACHE_MT "kumod.memoize_cache"
#define MEMO_CACHES_KEY "kumod.memoize_caches"
#define MEMO_ERROR_TTL_NS (60ull * 1000000000ull)
#define MEMO_KEY_MAX_DEPTH 32

struct memo_entry {
	struct memo_entry *hnext;
	struct memo_entry *prev, *next; /* LRU: head is the most recent */
	uint64_t hash;
	uint64_t expires_ns;
	int ref; /* in the cache's store table */
	int is_error;
	int narr, nrec; /* a table value's sizes, so its copies never rehash */
	size_t keylen;
	char key[];
};

struct memo_cache {
	char *name;
	char *sig; /* the parameters, to tell a re-run from a change */
	uint64_t ttl_ns;
	size_t capacity, count;
	struct memo_entry **buckets;
	size_t nbuckets;
	struct memo_entry *head, *tail;
	struct metrics_series *lookup, *hit, *miss, *populated, *l_lookup, *l_hit, *l_miss,
	    *l_populated, *l_insert, *l_evict, *l_expire, *l_error, *l_size;
};

static struct buf keybuf; /* loop thread only */

/* --- results ------------------------------------------------------------------- */

/* A table result comes back as a fresh copy of its top level (KumoMTA's
 * top-level copy-on-write): a caller may add, change or remove keys without
 * changing what the next caller gets, and the result is a plain table that
 * every builder and encoder reads. Nested tables are the cached ones,
 * shared: changing them changes the cache (see docs/policy-utils.md). The
 * copy keeps the table's metatable, so an object with methods (the result
 * of kumo.shaping.load) stays one. */
static void copy_top(lua_State *L, const struct memo_entry *e)
{
	if (lua_type(L, -1) != LUA_TTABLE)
		return;
	int src = lua_gettop(L);
	lua_createtable(L, e->narr, e->nrec);
	lua_pushnil(L);
	while (lua_next(L, src)) {
		lua_pushvalue(L, -2);
		lua_insert(L, -2);
		lua_rawset(L, -4);
	}
	if (lua_getmetatable(L, src))
		lua_setmetatable(L, -2);
	lua_remove(L, src);
}

/* --- keys ----------------------------------------------------------------------- */

struct skey {
	const char *s; /* a string key (anchored by the table) or the integer's text */
	size_t len;
	lua_Integer i;
	int is_num;
};

static int skey_cmp(const void *a, const void *b)
{
	const struct skey *x = a, *y = b;
	size_t n = x->len < y->len ? x->len : y->len;
	int c = memcmp(x->s, y->s, n);
	return c ? c : (x->len > y->len) - (x->len < y->len);
}

static void key_string(struct buf *b, const char *s, size_t n)
{
	buf_appendc(b, '"');
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			buf_appendc(b, '\\');
			buf_appendc(b, (char)c);
		} else if (c < 0x20) {
			buf_printf(b, "\\u%04x", c);
		} else {
			buf_appendc(b, (char)c);
		}
	}
	buf_appendc(b, '"');
}

static int key_append(lua_State *L, int idx, struct buf *b, int depth);

/* The entries of the (plain) table at t, as a JSON array when its keys are
 * 1..n, else as an object with sorted keys. */
static int key_table(lua_State *L, int t, struct buf *b, int depth)
{
	size_t n = lua_rawlen(L, t), count = 0, cap = 8;
	struct skey *keys = xmalloc(cap * sizeof(*keys));
	int seq = 1;
	lua_pushnil(L);
	while (lua_next(L, t)) {
		lua_pop(L, 1);
		if (count == cap) {
			cap *= 2;
			keys = xrealloc(keys, cap * sizeof(*keys));
		}
		struct skey *k = &keys[count++];
		k->is_num = lua_isinteger(L, -1);
		if (lua_type(L, -1) == LUA_TSTRING) {
			k->s = lua_tolstring(L, -1, &k->len);
			seq = 0;
		} else if (k->is_num) {
			k->i = lua_tointeger(L, -1);
			if (k->i < 1 || (size_t)k->i > n)
				seq = 0;
		} else {
			const char *tn = luaL_typename(L, -1);
			lua_pop(L, 1);
			free(keys);
			lua_pushfstring(L, "cannot use a table with %s keys in a memoize key", tn);
			return -1;
		}
	}
	int rc = 0;
	if (seq && count == n && n > 0) {
		buf_appendc(b, '[');
		for (size_t i = 1; i <= n && rc == 0; i++) {
			if (i > 1)
				buf_appendc(b, ',');
			lua_rawgeti(L, t, (lua_Integer)i);
			rc = key_append(L, lua_gettop(L), b, depth + 1);
			lua_remove(L, rc ? -2 : -1); /* the element; a message stays */
		}
		buf_appendc(b, ']');
		free(keys);
		return rc;
	}
	char *nums = xmalloc(count * 24 + 1);
	for (size_t i = 0; i < count; i++) {
		if (keys[i].is_num) {
			keys[i].len =
			    (size_t)snprintf(nums + i * 24, 24, "%lld", (long long)keys[i].i);
			keys[i].s = nums + i * 24;
		}
	}
	qsort(keys, count, sizeof(*keys), skey_cmp);
	buf_appendc(b, '{');
	for (size_t i = 0; i < count && rc == 0; i++) {
		if (i)
			buf_appendc(b, ',');
		key_string(b, keys[i].s, keys[i].len);
		buf_appendc(b, ':');
		if (keys[i].is_num) {
			lua_rawgeti(L, t, keys[i].i);
		} else {
			lua_pushlstring(L, keys[i].s, keys[i].len);
			lua_rawget(L, t);
		}
		rc = key_append(L, lua_gettop(L), b, depth + 1);
		lua_remove(L, rc ? -2 : -1);
	}
	buf_appendc(b, '}');
	free(nums);
	free(keys);
	return rc;
}

/* Appends the JSON text of the value at idx; 0, or -1 with a message pushed. */
static int key_append(lua_State *L, int idx, struct buf *b, int depth)
{
	switch (lua_type(L, idx)) {
	case LUA_TNIL:
		buf_appends(b, "null");
		return 0;
	case LUA_TBOOLEAN:
		buf_appends(b, lua_toboolean(L, idx) ? "true" : "false");
		return 0;
	case LUA_TNUMBER:
		if (lua_isinteger(L, idx))
			buf_printf(b, "%lld", (long long)lua_tointeger(L, idx));
		else
			buf_printf(b, "%.17g", (double)lua_tonumber(L, idx));
		return 0;
	case LUA_TSTRING: {
		size_t n;
		const char *s = lua_tolstring(L, idx, &n);
		key_string(b, s, n);
		return 0;
	}
	case LUA_TTABLE:
		break;
	default:
		lua_pushfstring(L, "cannot use a %s as (part of) a memoize key",
				luaL_typename(L, idx));
		return -1;
	}
	if (depth > MEMO_KEY_MAX_DEPTH || !lua_checkstack(L, 6)) {
		lua_pushliteral(L, "memoize key nested too deeply (a table that contains itself?)");
		return -1;
	}
	return key_table(L, lua_absindex(L, idx), b, depth);
}

static uint64_t hash64(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
	return h;
}

/* --- cache ---------------------------------------------------------------------- */

static struct memo_entry *find(struct memo_cache *c, const char *key, size_t len, uint64_t h)
{
	for (struct memo_entry *e = c->buckets[h & (c->nbuckets - 1)]; e; e = e->hnext)
		if (e->hash == h && e->keylen == len && memcmp(e->key, key, len) == 0)
			return e;
	return NULL;
}

static void lru_unlink(struct memo_cache *c, struct memo_entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		c->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		c->tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_front(struct memo_cache *c, struct memo_entry *e)
{
	e->next = c->head;
	e->prev = NULL;
	if (c->head)
		c->head->prev = e;
	c->head = e;
	if (!c->tail)
		c->tail = e;
}

/* Unlinks and frees e; the store slot is released when L is given. */
static void drop(lua_State *L, int store, struct memo_cache *c, struct memo_entry *e)
{
	struct memo_entry **pp = &c->buckets[e->hash & (c->nbuckets - 1)];
	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	lru_unlink(c, e);
	if (L)
		luaL_unref(L, store, e->ref);
	free(e);
	c->count--;
	metrics_set(c->l_size, (double)c->count);
}

static int cache_gc(lua_State *L)
{
	struct memo_cache *c = luaL_checkudata(L, 1, MEMO_CACHE_MT);
	while (c->head)
		drop(NULL, 0, c, c->head);
	free(c->buckets);
	free(c->name);
	free(c->sig);
	c->buckets = NULL;
	c->name = c->sig = NULL;
	return 0;
}

static struct metrics_series *series(const char *family, int gauge, const char *name)
{
	return metrics_series(
	    metrics_family(family, gauge ? METRICS_GAUGE : METRICS_COUNTER, "cache_name"), name);
}

static void cache_init(struct memo_cache *c, const char *name, const char *sig, uint64_t ttl_ns,
		       size_t capacity)
{
	memset(c, 0, sizeof(*c));
	c->name = xstrdup(name);
	c->sig = xstrdup(sig);
	c->ttl_ns = ttl_ns;
	c->capacity = capacity;
	c->nbuckets = 16;
	while (c->nbuckets < capacity && c->nbuckets < (1u << 20))
		c->nbuckets *= 2;
	c->buckets = xcalloc(c->nbuckets, sizeof(*c->buckets));
	c->lookup = series("memoize_cache_lookup_count", 0, name);
	c->hit = series("memoize_cache_hit_count", 0, name);
	c->miss = series("memoize_cache_miss_count", 0, name);
	c->populated = series("memoize_cache_populated_count", 0, name);
	c->l_lookup = series("lruttl_lookup_count", 0, name);
	c->l_hit = series("lruttl_hit_count", 0, name);
	c->l_miss = series("lruttl_miss_count", 0, name);
	c->l_populated = series("lruttl_populated_count", 0, name);
	c->l_insert = series("lruttl_insert_count", 0, name);
	c->l_evict = series("lruttl_evict_count", 0, name);
	c->l_expire = series("lruttl_expire_count", 0, name);
	c->l_error = series("lruttl_error_count", 0, name);
	c->l_size = series("lruttl_cache_size", 1, name);
	metrics_set(c->l_size, 0);
}

/* Stores the value on top (popped) under the key in keybuf. */
static struct memo_entry *insert(lua_State *L, int store, struct memo_cache *c, const char *key,
				 size_t keylen, uint64_t h, int is_error, uint64_t now)
{
	struct memo_entry *e = xmalloc(sizeof(*e) + keylen);
	memcpy(e->key, key, keylen);
	e->keylen = keylen;
	e->hash = h;
	e->is_error = is_error;
	e->expires_ns = now + (is_error ? MEMO_ERROR_TTL_NS : c->ttl_ns);
	e->narr = e->nrec = 0;
	if (lua_type(L, -1) == LUA_TTABLE) {
		e->narr = (int)lua_rawlen(L, -1);
		lua_pushnil(L);
		while (lua_next(L, -2)) {
			lua_pop(L, 1);
			e->nrec++;
		}
		e->nrec -= e->narr < e->nrec ? e->narr : e->nrec;
	}
	e->ref = luaL_ref(L, store);
	e->prev = e->next = NULL;
	size_t b = h & (c->nbuckets - 1);
	e->hnext = c->buckets[b];
	c->buckets[b] = e;
	lru_front(c, e);
	c->count++;
	metrics_add(c->l_insert, 1);
	while (c->count > c->capacity) {
		KTRACE(memoize_evict, c->name, (uint64_t)c->capacity);
		metrics_add(c->l_evict, 1);
		drop(L, store, c, c->tail);
	}
	metrics_set(c->l_size, (double)c->count);
	return e;
}

/* upvalues: 1 fn, 2 cache userdata (uservalue 1: the store table).
 * Stack while fn runs: args 1..n, the store, the key (ctx), fn's results. */
static int memo_finish(lua_State *L, int status, lua_KContext ctx)
{
	int kidx = (int)ctx, store = kidx - 1;
	struct memo_cache *c = lua_touserdata(L, lua_upvalueindex(2));
	uint64_t now = clock_mono_ns();
	size_t klen;
	const char *key = lua_tolstring(L, kidx, &klen);
	uint64_t h = hash64(key, klen);
	if (status != LUA_OK && status != LUA_YIELD) {
		/* the error object is on top */
		metrics_add(c->l_error, 1);
		KTRACE(memoize_lookup, c->name, "error", (uint64_t)c->count);
		if (!find(c, key, klen, h)) {
			lua_pushvalue(L, -1);
			insert(L, store, c, key, klen, h, 1, now);
		}
		return lua_error(L);
	}
	int nres = lua_gettop(L) - kidx;
	if (nres == 0) {
		lua_pushnil(L);
	} else if (nres > 1) {
		lua_createtable(L, nres, 0);
		for (int i = 1; i <= nres; i++) {
			lua_pushvalue(L, kidx + i);
			lua_rawseti(L, -2, i);
		}
	}
	metrics_add(c->populated, 1);
	metrics_add(c->l_populated, 1);
	struct memo_entry *old = find(c, key, klen, h);
	if (old) /* fn yielded and another caller filled the key meanwhile */
		drop(L, store, c, old);
	lua_pushvalue(L, -1);
	copy_top(L, insert(L, store, c, key, klen, h, 0, now));
	return 1;
}

static int memo_call(lua_State *L)
{
	struct memo_cache *c = lua_touserdata(L, lua_upvalueindex(2));
	int nargs = lua_gettop(L);
	buf_reset(&keybuf);
	if (nargs == 0)
		buf_appends(&keybuf, "null");
	if (nargs > 1)
		buf_appendc(&keybuf, '[');
	for (int i = 1; i <= nargs; i++) {
		if (i > 1)
			buf_appendc(&keybuf, ',');
		if (key_append(L, i, &keybuf, 0) != 0)
			return luaL_error(L, "memoize %s: %s", c->name, lua_tostring(L, -1));
	}
	if (nargs > 1)
		buf_appendc(&keybuf, ']');
	uint64_t h = hash64(keybuf.data, keybuf.len);
	lua_getiuservalue(L, lua_upvalueindex(2), 1);
	int store = lua_gettop(L);
	metrics_add(c->lookup, 1);
	metrics_add(c->l_lookup, 1);
	struct memo_entry *e = find(c, keybuf.data, keybuf.len, h);
	uint64_t now = clock_mono_ns();
	if (e && now < e->expires_ns) {
		metrics_add(c->hit, 1);
		metrics_add(c->l_hit, 1);
		KTRACE(memoize_lookup, c->name, e->is_error ? "error" : "hit", (uint64_t)c->count);
		if (e != c->head) {
			lru_unlink(c, e);
			lru_front(c, e);
		}
		lua_rawgeti(L, store, e->ref);
		if (e->is_error)
			return lua_error(L);
		copy_top(L, e);
		return 1;
	}
	if (e) {
		metrics_add(c->l_expire, 1);
		KTRACE(memoize_lookup, c->name, "expired", (uint64_t)c->count);
		drop(L, store, c, e);
	} else {
		KTRACE(memoize_lookup, c->name, "miss", (uint64_t)c->count);
	}
	metrics_add(c->miss, 1);
	metrics_add(c->l_miss, 1);
	lua_pushlstring(L, keybuf.data, keybuf.len);
	int kidx = lua_gettop(L);
	lua_pushvalue(L, lua_upvalueindex(1));
	for (int i = 1; i <= nargs; i++)
		lua_pushvalue(L, i);
	int status = lua_pcallk(L, nargs, LUA_MULTRET, 0, (lua_KContext)kidx, memo_finish);
	return memo_finish(L, status, (lua_KContext)kidx);
}

/* --- kumo.memoize --------------------------------------------------------------- */

static uint64_t param_duration_ns(lua_State *L, int idx, const char *name)
{
	if (lua_type(L, idx) == LUA_TNUMBER) {
		double s = lua_tonumber(L, idx);
		if (!(s >= 0 && s < 1e10))
			luaL_error(L, "memoize: %s must be a non-negative number of seconds", name);
		return (uint64_t)(s * 1e9);
	}
	uint64_t ms;
	if (lua_type(L, idx) != LUA_TSTRING || duration_parse_ms(lua_tostring(L, idx), &ms) != 0)
		luaL_error(
		    L, "memoize: %s must be a duration ('5 minutes', '30s' or seconds), not %s",
		    name,
		    lua_type(L, idx) == LUA_TSTRING ? lua_tostring(L, idx) : luaL_typename(L, idx));
	if (ms > UINT64_MAX / 2000000ull)
		luaL_error(L, "memoize: %s is too long", name);
	return ms * 1000000ull;
}

static int l_memoize(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TFUNCTION);
	luaL_checktype(L, 2, LUA_TTABLE);
	const char *name = NULL;
	uint64_t ttl_ns = 0;
	lua_Integer capacity = -1;
	int have_ttl = 0;
	lua_pushnil(L);
	while (lua_next(L, 2)) {
		if (lua_type(L, -2) != LUA_TSTRING)
			return luaL_error(L, "memoize: parameter names must be strings");
		const char *k = lua_tostring(L, -2);
		if (strcmp(k, "name") == 0) {
			if (lua_type(L, -1) != LUA_TSTRING)
				return luaL_error(L, "memoize: name must be a string");
			name = lua_tostring(L, -1);
		} else if (strcmp(k, "ttl") == 0) {
			ttl_ns = param_duration_ns(L, -1, "ttl");
			have_ttl = 1;
		} else if (strcmp(k, "capacity") == 0) {
			if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1)
				return luaL_error(L,
						  "memoize: capacity must be a positive integer");
			capacity = lua_tointeger(L, -1);
		} else if (strcmp(k, "populate_timeout") == 0) {
			(void)param_duration_ns(L, -1, "populate_timeout");
		} else if (strcmp(k, "invalidate_with_epoch") == 0 ||
			   strcmp(k, "retry_on_populate_timeout") == 0 ||
			   strcmp(k, "allow_stale_reads") == 0) {
			if (lua_type(L, -1) != LUA_TBOOLEAN)
				return luaL_error(L, "memoize: %s must be a boolean", k);
		} else {
			return luaL_error(L,
					  "memoize: unknown parameter '%s' (name, ttl, capacity, "
					  "invalidate_with_epoch, populate_timeout, "
					  "retry_on_populate_timeout, allow_stale_reads)",
					  k);
		}
		lua_pop(L, 1);
	}
	if (!name || !name[0])
		return luaL_error(L, "memoize: missing name");
	if (!have_ttl)
		return luaL_error(L, "memoize: missing ttl");
	if (capacity < 0)
		return luaL_error(L, "memoize: missing capacity");
	char sig[64];
	snprintf(sig, sizeof(sig), "%llu/%lld", (unsigned long long)ttl_ns, (long long)capacity);

	if (lua_getfield(L, LUA_REGISTRYINDEX, MEMO_CACHES_KEY) != LUA_TTABLE) {
		lua_pop(L, 1);
		lua_newtable(L);
		lua_pushvalue(L, -1);
		lua_setfield(L, LUA_REGISTRYINDEX, MEMO_CACHES_KEY);
	}
	int caches = lua_gettop(L);
	lua_getfield(L, caches, name);
	struct memo_cache *c = lua_touserdata(L, -1);
	if (!c || strcmp(c->sig, sig) != 0) {
		lua_pop(L, 1);
		c = lua_newuserdatauv(L, sizeof(*c), 1);
		memset(c, 0, sizeof(*c));
		if (luaL_newmetatable(L, MEMO_CACHE_MT)) {
			lua_pushcfunction(L, cache_gc);
			lua_setfield(L, -2, "__gc");
			lua_pushboolean(L, 0);
			lua_setfield(L, -2, "__metatable");
		}
		lua_setmetatable(L, -2);
		cache_init(c, name, sig, ttl_ns, (size_t)capacity);
		lua_newtable(L);
		lua_setiuservalue(L, -2, 1);
		lua_pushvalue(L, -1);
		lua_setfield(L, caches, name);
	}
	lua_pushvalue(L, 1);
	lua_insert(L, -2);
	lua_pushcclosure(L, memo_call, 2);
	return 1;
}

static const luaL_Reg memo_funcs[] = {
    {"memoize", l_memoize},
    {NULL, NULL},
};

void lua_memoize__register(lua_State *L)
{
	luaL_setfuncs(L, memo_funcs, 0);
}
