/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.jsonl.new_writer (KumoMTA's kumo-jsonl LogWriter): JSON lines into zstd-compressed
 * segment files under log_dir, named by the time the segment opened
 * ("20240101-120000.000000000" in UTC or tz, then suffix); a segment rolls once
 * max_file_size uncompressed bytes were written or (checked at a write)
 * max_segment_duration has passed since it opened; a finished segment is made read-only
 * (all write bits cleared) so a tailer knows it is complete. As KumoMTA's code: writes after
 * close() raise. The writes run in place on the loop thread (zstd keeps up to a block
 * buffered; a segment becomes readable as it closes): meant for modest volumes. The
 * tailers (new_tailer, new_multi_tailer) are not implemented. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "base/clock.h"
#include "base/fsutil.h"
#include "base/xalloc.h"
#include "lua/lua_int.h"
#include "proto/duration.h"
#include "proto/tzif.h"
#include "queue/tzdb.h"

#define WRITER_MT "kumo.jsonl.LogWriter"

struct jwriter {
	char *log_dir, *suffix;
	const struct tzif_zone *zone; /* NULL: UTC */
	uint64_t max_file_size;
	uint64_t max_duration_ns; /* 0: roll on size only */
	int level;
	int closed;
	/* the open segment: fd >= 0 */
	int fd;
	char *path;
	ZSTD_CCtx *zc;
	uint64_t written, opened_ns;
};

static int out_write(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t r = write(fd, c, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		c += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Feeds n bytes (or ends the frame when end) and writes what zstd produced. */
static int feed(struct jwriter *w, const void *p, size_t n, int end)
{
	char obuf[16384];
	ZSTD_inBuffer in = {p, n, 0};
	for (;;) {
		ZSTD_outBuffer out = {obuf, sizeof(obuf), 0};
		size_t left =
		    ZSTD_compressStream2(w->zc, &out, &in, end ? ZSTD_e_end : ZSTD_e_continue);
		if (ZSTD_isError(left)) {
			errno = EIO;
			return -1;
		}
		if (out.pos && out_write(w->fd, obuf, out.pos) < 0)
			return -1;
		if (end ? left == 0 : in.pos == in.size)
			return 0;
	}
}

/* Finishes the open segment and makes it read-only; -1 with errno. */
static int segment_close(struct jwriter *w)
{
	if (w->fd < 0)
		return 0;
	int rc = feed(w, NULL, 0, 1);
	int e = errno;
	struct stat st;
	if (close(w->fd) < 0 && !rc)
		rc = -1, e = errno;
	w->fd = -1;
	if (!rc && (stat(w->path, &st) < 0 || chmod(w->path, st.st_mode & ~0222u) < 0))
		rc = -1, e = errno;
	ZSTD_freeCCtx(w->zc);
	w->zc = NULL;
	xfree(w->path);
	errno = e;
	return rc;
}

static int segment_open(struct jwriter *w, char *err, size_t errlen)
{
	uint64_t now = clock_wall_ns();
	time_t secs = (time_t)(now / 1000000000u);
	if (w->zone) {
		struct tzif_local loc;
		tzif_lookup(w->zone, (int64_t)secs, &loc);
		secs += loc.utoff;
	}
	struct tm tm;
	gmtime_r(&secs, &tm);
	char stamp[32];
	strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
	if (fs_mkdir_p(w->log_dir, 0755) < 0) {
		snprintf(err, errlen, "%s: %s", w->log_dir, strerror(errno));
		return -1;
	}
	size_t n = strlen(w->log_dir) + strlen(stamp) + strlen(w->suffix) + 32;
	w->path = xmalloc(n);
	snprintf(w->path, n, "%s/%s.%09llu%s", w->log_dir, stamp,
		 (unsigned long long)(now % 1000000000u), w->suffix);
	w->fd = open(w->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
	if (w->fd < 0) {
		snprintf(err, errlen, "%s: %s", w->path, strerror(errno));
		xfree(w->path);
		return -1;
	}
	w->zc = ZSTD_createCCtx();
	if (!w->zc)
		panic("%s: ZSTD_createCCtx", __func__);
	ZSTD_CCtx_setParameter(w->zc, ZSTD_c_compressionLevel, w->level);
	w->written = 0;
	w->opened_ns = clock_mono_ns();
	return 0;
}

static struct jwriter *check_writer(lua_State *L, const char *fn)
{
	struct jwriter *w = luaL_checkudata(L, 1, WRITER_MT);
	if (w->closed)
		luaL_error(L, "%s: writer has been closed", fn);
	return w;
}

static int write_line(lua_State *L, struct jwriter *w, const char *fn, const char *line, size_t n)
{
	char err[600];
	if (w->fd < 0 && segment_open(w, err, sizeof(err)) < 0)
		return luaL_error(L, "%s: %s", fn, err);
	int nl = !n || line[n - 1] != '\n';
	if (feed(w, line, n, 0) < 0 || (nl && feed(w, "\n", 1, 0) < 0)) {
		int e = errno;
		segment_close(w);
		return luaL_error(L, "%s: writing a segment: %s", fn, strerror(e));
	}
	w->written += n + (size_t)nl;
	if (w->written >= w->max_file_size ||
	    (w->max_duration_ns && clock_mono_ns() - w->opened_ns >= w->max_duration_ns)) {
		if (segment_close(w) < 0)
			return luaL_error(L, "%s: closing a segment: %s", fn, strerror(errno));
	}
	return 0;
}

static int w_write_line(lua_State *L)
{
	struct jwriter *w = check_writer(L, "writer:write_line");
	size_t n;
	const char *s = luaL_checklstring(L, 2, &n);
	return write_line(L, w, "writer:write_line", s, n);
}

static int w_write_record(lua_State *L)
{
	struct jwriter *w = check_writer(L, "writer:write_record");
	luaL_checkany(L, 2);
	char *json = lua_json__encode(L, 2, 0);
	lua_pushstring(L, json); /* anchored: a raise below frees nothing */
	free(json);
	size_t n;
	const char *s = lua_tolstring(L, -1, &n);
	return write_line(L, w, "writer:write_record", s, n);
}

static int w_close(lua_State *L)
{
	struct jwriter *w = luaL_checkudata(L, 1, WRITER_MT);
	if (w->closed)
		return 0;
	w->closed = 1;
	int rc = segment_close(w);
	int e = errno;
	xfree(w->log_dir);
	xfree(w->suffix);
	if (rc < 0 && lua_type(L, 2) > LUA_TNIL)
		return 0; /* __close while an error unwinds: that error goes on */
	if (rc < 0)
		return luaL_error(L, "writer:close: %s", strerror(e));
	return 0;
}

static int w_gc(lua_State *L)
{
	struct jwriter *w = luaL_checkudata(L, 1, WRITER_MT);
	if (!w->closed) {
		w->closed = 1;
		segment_close(w); /* nowhere to report a failure */
		xfree(w->log_dir);
		xfree(w->suffix);
	}
	return 0;
}

static int l_new_writer(lua_State *L)
{
	static const char fn[] = "kumo.jsonl.new_writer";
	luaL_checktype(L, 1, LUA_TTABLE);
	static const char *const keys[] = {
	    "log_dir", "max_file_size", "compression_level", "max_segment_duration", "suffix",
	    "tz"};
	for (lua_pushnil(L); lua_next(L, 1); lua_pop(L, 1)) {
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
		size_t i = 0;
		while (i < sizeof(keys) / sizeof(keys[0]) && strcmp(keys[i], k))
			i++;
		if (i == sizeof(keys) / sizeof(keys[0]))
			return luaL_error(L, "%s: unknown field '%s'", fn, k);
	}
	if (lua_getfield(L, 1, "log_dir") != LUA_TSTRING)
		return luaL_error(L, "%s: log_dir (a string) is required", fn);
	lua_Integer size = 134217728, level = 3;
	if (lua_getfield(L, 1, "max_file_size") != LUA_TNIL) {
		if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1)
			return luaL_error(L, "%s: max_file_size must be a positive integer", fn);
		size = lua_tointeger(L, -1);
	}
	if (lua_getfield(L, 1, "compression_level") != LUA_TNIL) {
		level = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : -1;
		if (level < 0 || level > 21)
			return luaL_error(
			    L, "%s: compression_level must be 0 (zstd's default) or 1 to 21", fn);
	}
	uint64_t dur_ms = 0;
	if (lua_getfield(L, 1, "max_segment_duration") != LUA_TNIL) {
		const char *d = lua_tostring(L, -1);
		if (!d || duration_parse_ms(d, &dur_ms) != 0 || !dur_ms)
			return luaL_error(L, "%s: invalid max_segment_duration '%s'", fn,
					  d ? d : luaL_typename(L, -1));
	}
	const char *suffix = "";
	if (lua_getfield(L, 1, "suffix") != LUA_TNIL) {
		suffix = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "/";
		if (strchr(suffix, '/'))
			return luaL_error(L, "%s: suffix must be a string without '/'", fn);
	}
	const struct tzif_zone *zone = NULL;
	if (lua_getfield(L, 1, "tz") != LUA_TNIL) {
		char err[200];
		const char *tz = lua_tostring(L, -1);
		if (lua_type(L, -1) != LUA_TSTRING || !(zone = tzdb_get(tz, err, sizeof(err))))
			return luaL_error(L, "%s: tz: %s", fn,
					  lua_type(L, -1) == LUA_TSTRING ? err : "a zone name");
	}
	struct jwriter *w = lua_newuserdatauv(L, sizeof(*w), 0);
	memset(w, 0, sizeof(*w));
	w->closed = 1; /* safe to collect until filled in */
	w->fd = -1;
	luaL_setmetatable(L, WRITER_MT);
	lua_getfield(L, 1, "log_dir");
	w->log_dir = xstrdup(lua_tostring(L, -1));
	lua_pop(L, 1);
	w->suffix = xstrdup(suffix);
	w->zone = zone;
	w->max_file_size = (uint64_t)size;
	w->max_duration_ns = dur_ms * 1000000u;
	w->level = level ? (int)level : ZSTD_CLEVEL_DEFAULT;
	w->closed = 0;
	return 1;
}

void lua_jsonl__register(lua_State *L)
{
	static const luaL_Reg methods[] = {
	    {"write_line", w_write_line},
	    {"write_record", w_write_record},
	    {"close", w_close},
	    {NULL, NULL},
	};
	lua_util__class(L, WRITER_MT, methods, "__gc", w_gc);
	luaL_getmetatable(L, WRITER_MT);
	lua_pushcfunction(L, w_close);
	lua_setfield(L, -2, "__close");
	lua_pop(L, 1);
	lua_newtable(L);
	lua_pushcfunction(L, l_new_writer);
	lua_setfield(L, -2, "new_writer");
	lua_setfield(L, -2, "jsonl");
}
