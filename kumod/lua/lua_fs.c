/* SPDX-License-Identifier: Apache-2.0 */
/* KumoMTA's mod-filesystem and a few small kumo names: kumo.fs.glob,
 * kumo.fs.uncached_glob, kumo.fs.read_dir, kumo.fs.metadata_for_path,
 * kumo.fs.symlink_metadata_for_path (and the deprecated kumo.glob,
 * kumo.uncached_glob, kumo.read_dir), kumo.version, kumo.sleep and
 * kumo.time.sleep, and `require 'kumo.string'` / `require 'kumo.regex'`.
 *
 * Globs use glob(3): `*`, `?`, `[...]` and `{a,b}`; KumoMTA's recursive
 * `**` is refused by name rather than matched differently. Missing or
 * unreadable directories give no entries (as KumoMTA). kumo.glob results are
 * cached process-wide by (pattern, relative_to) for ttl_seconds (default
 * 60), at most 32 entries (least recently used goes), as KumoMTA's cache.
 * The file system calls run on the loop thread: they are meant for
 * configuration, not per message. Sleeping suspends the handler's coroutine
 * on a libuv timer (lua_engine__wait): refused by name where the event
 * cannot wait. */
#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/clock.h"
#include "base/xalloc.h"
#include "io/loop.h"
#include "lua/lua_int.h"

/* --- glob ---------------------------------------------------------------------- */

#define GLOB_CACHE_CAP 32 /* KumoMTA's GLOB_CACHE_CAPACITY */
#define GLOB_DEFAULT_TTL 60.0

struct glob_entry {
	char *pattern, *rel; /* rel NULL: relative_to not given */
	char **paths;
	size_t n;
	uint64_t expires_ns, used_ns;
};

static struct glob_entry glob_cache[GLOB_CACHE_CAP];

static void entry_clear(struct glob_entry *e)
{
	for (size_t i = 0; i < e->n; i++)
		free(e->paths[i]);
	free(e->paths);
	free(e->pattern);
	free(e->rel);
	memset(e, 0, sizeof(*e));
}

/* Matches into a malloc'd array of strings, sorted; raises on `**` (before
 * anything is allocated). */
static char **do_glob(lua_State *L, const char *fn, const char *pattern, const char *rel,
		      size_t *np)
{
	if (strstr(pattern, "**"))
		luaL_error(L,
			   "%s: '%s': the recursive '**' of KumoMTA's glob is not implemented in "
			   "kumod",
			   fn, pattern);
	const char *base = rel ? rel : ".";
	size_t bl = strlen(base);
	while (bl > 1 && base[bl - 1] == '/')
		bl--;
	char *full;
	if (pattern[0] == '/')
		full = xstrdup(pattern);
	else
		full = xasprintf("%.*s/%s", (int)bl, base, pattern);
	glob_t g;
	memset(&g, 0, sizeof(g));
	int rc = glob(full, GLOB_BRACE, NULL, &g);
	free(full);
	if (rc == GLOB_NOSPACE) {
		globfree(&g);
		luaL_error(L, "%s: '%s': out of memory", fn, pattern);
	}
	char **out = xcalloc(rc == 0 ? g.gl_pathc + 1 : 1, sizeof(*out));
	size_t n = 0;
	for (size_t i = 0; rc == 0 && i < g.gl_pathc; i++) {
		const char *p = g.gl_pathv[i];
		/* results under relative_to lose that prefix (KumoMTA) */
		if (strncmp(p, base, bl) == 0 && p[bl] == '/')
			p += bl + 1;
		out[n++] = xstrdup(p);
	}
	globfree(&g);
	*np = n;
	return out;
}

static void push_list(lua_State *L, char *const *paths, size_t n)
{
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		lua_pushstring(L, paths[i]);
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
}

static int same(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static struct glob_entry *cache_find(const char *pattern, const char *rel, uint64_t now)
{
	for (size_t i = 0; i < GLOB_CACHE_CAP; i++) {
		struct glob_entry *e = &glob_cache[i];
		if (e->pattern && strcmp(e->pattern, pattern) == 0 && same(e->rel, rel)) {
			if (e->expires_ns > now)
				return e;
			entry_clear(e);
		}
	}
	return NULL;
}

/* A free slot, else an expired one, else the least recently used. */
static struct glob_entry *cache_slot(uint64_t now)
{
	struct glob_entry *best = &glob_cache[0];
	for (size_t i = 0; i < GLOB_CACHE_CAP; i++) {
		struct glob_entry *e = &glob_cache[i];
		if (!e->pattern || e->expires_ns <= now)
			return e;
		if (e->used_ns < best->used_ns)
			best = e;
	}
	return best;
}

static int l_glob(lua_State *L)
{
	const char *pattern = luaL_checkstring(L, 1);
	const char *rel = luaL_optstring(L, 2, NULL);
	lua_Number ttl = luaL_optnumber(L, 3, GLOB_DEFAULT_TTL);
	if (!(ttl >= 0 && ttl < 1e9))
		return luaL_error(L, "kumo.fs.glob: ttl_seconds must be between 0 and 1e9");
	uint64_t now = clock_mono_ns();
	struct glob_entry *e = cache_find(pattern, rel, now);
	if (e) {
		e->used_ns = now;
		push_list(L, e->paths, e->n);
		return 1;
	}
	size_t n;
	char **paths = do_glob(L, "kumo.fs.glob", pattern, rel, &n);
	push_list(L, paths, n);
	e = cache_slot(now);
	entry_clear(e);
	e->pattern = xstrdup(pattern);
	e->rel = rel ? xstrdup(rel) : NULL;
	e->paths = paths;
	e->n = n;
	e->used_ns = now;
	e->expires_ns = now + (uint64_t)(ttl * 1e9);
	return 1;
}

static int l_uncached_glob(lua_State *L)
{
	const char *pattern = luaL_checkstring(L, 1);
	const char *rel = luaL_optstring(L, 2, NULL);
	size_t n;
	char **paths = do_glob(L, "kumo.fs.uncached_glob", pattern, rel, &n);
	push_list(L, paths, n);
	for (size_t i = 0; i < n; i++)
		free(paths[i]);
	free(paths);
	return 1;
}

/* --- read_dir, metadata ---------------------------------------------------------- */

static int cmp_cstr(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The entries' paths (path joined with each name, "." and ".." left out),
 * sorted; raises "kumo.fs.read_dir: path: reason". */
static int l_read_dir(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	DIR *d = opendir(path);
	if (!d)
		return luaL_error(L, "kumo.fs.read_dir: %s: %s", path, strerror(errno));
	size_t pl = strlen(path), n = 0, cap = 16;
	while (pl > 1 && path[pl - 1] == '/')
		pl--;
	char **names = xcalloc(cap, sizeof(*names));
	struct dirent *de;
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (n == cap)
			names = xrealloc(names, (cap *= 2) * sizeof(*names));
		names[n++] = xasprintf("%.*s/%s", (int)pl, path, de->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), cmp_cstr);
	push_list(L, names, n);
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return 1;
}

static void set_int(lua_State *L, const char *k, lua_Integer v)
{
	lua_pushinteger(L, v);
	lua_setfield(L, -2, k);
}

static void set_bool(lua_State *L, const char *k, int v)
{
	lua_pushboolean(L, v);
	lua_setfield(L, -2, k);
}

static void set_time(lua_State *L, const char *k, const struct timespec *ts)
{
	lua_time__push(L, (int64_t)ts->tv_sec * 1000000000LL + ts->tv_nsec);
	lua_setfield(L, -2, k);
}

/* KumoMTA's Metadata fields, as a plain table. */
static int push_metadata(lua_State *L, const char *fn, int follow)
{
	const char *path = luaL_checkstring(L, 1);
	struct stat st;
	if ((follow ? stat(path, &st) : lstat(path, &st)) != 0)
		return luaL_error(L, "%s: %s: %s", fn, path, strerror(errno));
	lua_createtable(L, 0, 20);
	lua_pushstring(L, path);
	lua_setfield(L, -2, "path");
	set_bool(L, "is_file", S_ISREG(st.st_mode));
	set_bool(L, "is_dir", S_ISDIR(st.st_mode));
	set_bool(L, "is_symlink", S_ISLNK(st.st_mode));
	set_int(L, "len", st.st_size);
	set_bool(L, "readonly", (st.st_mode & 0222) == 0);
	set_int(L, "dev", (lua_Integer)st.st_dev);
	set_int(L, "ino", (lua_Integer)st.st_ino);
	set_int(L, "mode", st.st_mode);
	set_int(L, "nlink", (lua_Integer)st.st_nlink);
	set_int(L, "uid", st.st_uid);
	set_int(L, "gid", st.st_gid);
	set_int(L, "rdev", (lua_Integer)st.st_rdev);
	set_int(L, "size", st.st_size);
	set_int(L, "blksize", st.st_blksize);
	set_int(L, "blocks", st.st_blocks);
	set_time(L, "mtime", &st.st_mtim);
	set_time(L, "atime", &st.st_atim);
	set_time(L, "ctime", &st.st_ctim);
	return 1;
}

static int l_metadata_for_path(lua_State *L)
{
	return push_metadata(L, "kumo.fs.metadata_for_path", 1);
}

static int l_symlink_metadata_for_path(lua_State *L)
{
	return push_metadata(L, "kumo.fs.symlink_metadata_for_path", 0);
}

/* --- sleep ------------------------------------------------------------------------- */

static void sleep_fire(uint64_t call)
{
	if (lua_engine__thread(call)) /* NULL: the call was dropped meanwhile */
		lua_engine__wake(call, 0);
}

static int sleep_k(lua_State *L, int status, lua_KContext ctx)
{
	(void)L, (void)status, (void)ctx;
	return 0;
}

static int do_sleep(lua_State *L, const char *fn)
{
	lua_Number s = luaL_checknumber(L, 1);
	if (!(s >= 0 && s <= 86400.0 * 365))
		return luaL_error(L, "%s: seconds must be between 0 and one year", fn);
	uint64_t call = lua_engine__wait_begin(L, fn); /* raises where it cannot wait */
	/* a sleeping handler does not hold the daemon up at shutdown */
	kumod_loop_after(kumod_loop(), (uint64_t)(s * 1000.0 + 0.5), sleep_fire, call);
	return lua_engine__wait(L, 0, sleep_k);
}

static int l_sleep(lua_State *L)
{
	return do_sleep(L, "kumo.sleep");
}

static int l_time_sleep(lua_State *L)
{
	return do_sleep(L, "kumo.time.sleep");
}

/* --- registration -------------------------------------------------------------------- */

/* package.preload[name] = a Lua function returning kumo[field]: a Lua loader,
 * so --list-api sees the module as provided. */
static void preload_alias(lua_State *L, int kumo, const char *name, const char *field)
{
	if (lua_getglobal(L, "package") != LUA_TTABLE) {
		lua_pop(L, 1);
		return;
	}
	lua_getfield(L, -1, "preload");
	if (luaL_loadstring(L, "local t = ... return function() return t end") != LUA_OK)
		panic("%s: %s", __func__, lua_tostring(L, -1));
	lua_getfield(L, kumo, field);
	lua_call(L, 1, 1);
	lua_setfield(L, -2, name);
	lua_pop(L, 2);
}

void lua_fs__register(lua_State *L)
{
	static const luaL_Reg fs_funcs[] = {
	    {"glob", l_glob},
	    {"uncached_glob", l_uncached_glob},
	    {"read_dir", l_read_dir},
	    {"metadata_for_path", l_metadata_for_path},
	    {"symlink_metadata_for_path", l_symlink_metadata_for_path},
	    {NULL, NULL},
	};
	static const luaL_Reg kumo_funcs[] = {
	    {"glob", l_glob},
	    {"uncached_glob", l_uncached_glob},
	    {"read_dir", l_read_dir},
	    {"sleep", l_sleep},
	    {NULL, NULL},
	};
	int kumo = lua_gettop(L);
	luaL_newlib(L, fs_funcs);
	lua_fs_file__register(L);
	lua_setfield(L, kumo, "fs");
	luaL_setfuncs(L, kumo_funcs, 0);
	lua_pushliteral(L, KUMOD_VERSION);
	lua_setfield(L, kumo, "version");
	if (lua_getfield(L, kumo, "time") == LUA_TTABLE) {
		lua_pushcfunction(L, l_time_sleep);
		lua_setfield(L, -2, "sleep");
	}
	lua_pop(L, 1);
	preload_alias(L, kumo, "kumo.string", "string");
	preload_alias(L, kumo, "kumo.regex", "regex");
}
