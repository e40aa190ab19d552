/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.fs.open(path[, mode]) (KumoMTA's async-file): a file object with read([size]),
 * write(data), seek([whence[, pos]]), flush() and close(). Where the handler may wait,
 * every call that touches the file (open, read, write, seek) runs on libuv's thread pool
 * while the handler's coroutine is suspended (lua_engine__wait), so a large file never
 * blocks the loop; elsewhere (the policy's main chunk, init, events that cannot wait) it
 * runs in place, as kumo.fs.glob does. Writes are not buffered: flush has nothing to do. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/xalloc.h"
#include "io/loop.h"
#include "lua/lua_int.h"

#define FILE_MT "kumo.fs.AsyncFile"
#define FS_READ_ALL_MAX ((size_t)1 << 30) /* read() of the rest: at most 1 GiB */

/* The open file; shared by its userdata and the operations in flight (refs). */
struct fs_file {
	int fd; /* -1 once closed */
	unsigned refs;
	int close_pending; /* closed (or collected) while an operation was in flight */
};

/* The userdata: a pointer to the shared file. */
struct fs_handle {
	struct fs_file *f;
};

enum fs_kind {
	FS_OPEN,
	FS_READ,
	FS_WRITE,
	FS_SEEK
};

/* One operation: filled in, run (in place or on the pool), then its results pushed. */
struct fs_op {
	uv_work_t req;
	enum fs_kind kind;
	uint64_t call; /* the waiting handler (async) */
	struct fs_file *f;
	char *path; /* open */
	int flags;
	int err;	  /* errno of the failure, or 0 */
	char *data;	  /* read: the bytes read; write: the bytes to write */
	size_t len;	  /* read: requested (0: the rest) then read; write: to write */
	int whence;	  /* seek */
	int64_t pos, res; /* seek: offset in, position out */
};

static void file_unref(struct fs_file *f)
{
	if (--f->refs)
		return;
	if (f->fd >= 0)
		close(f->fd);
	free(f);
}

static void op_run(struct fs_op *op)
{
	int fd = op->f ? op->f->fd : -1;
	switch (op->kind) {
	case FS_OPEN:
		op->res = open(op->path, op->flags | O_CLOEXEC, 0666);
		op->err = op->res < 0 ? errno : 0;
		break;
	case FS_READ: {
		size_t want = op->len, cap = want ? want : 65536, got = 0;
		op->data = malloc(cap);
		if (!op->data) {
			op->err = ENOMEM;
			break;
		}
		for (;;) {
			if (got == cap) {
				if (want || cap >= FS_READ_ALL_MAX) {
					op->err = want ? 0 : EFBIG;
					break;
				}
				char *n = realloc(op->data, cap * 2);
				if (!n) {
					op->err = ENOMEM;
					break;
				}
				op->data = n;
				cap *= 2;
			}
			ssize_t r = read(fd, op->data + got, cap - got);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0) {
				op->err = errno;
				break;
			}
			got += (size_t)r;
			if (r == 0 || want) /* a sized read returns what one read gave */
				break;
		}
		op->len = got;
		break;
	}
	case FS_WRITE: {
		size_t done = 0;
		while (done < op->len) {
			ssize_t r = write(fd, op->data + done, op->len - done);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0) {
				op->err = errno;
				break;
			}
			done += (size_t)r;
		}
		break;
	}
	case FS_SEEK: {
		off_t r = lseek(fd, (off_t)op->pos, op->whence);
		op->res = (int64_t)r;
		op->err = r < 0 ? errno : 0;
		break;
	}
	}
}

static const char *const fn_names[] = {"kumo.fs.open", "file:read", "file:write", "file:seek"};

static void op_free(struct fs_op *op)
{
	if (op->f)
		file_unref(op->f);
	free(op->path);
	free(op->data);
	free(op);
}

/* Pushes (nil, value) or (error text, nil) and frees op. */
static void op_push(lua_State *L, struct fs_op *op)
{
	if (op->err) {
		if (op->kind == FS_OPEN)
			lua_pushfstring(L, "kumo.fs.open: %s: %s", op->path, strerror(op->err));
		else if (op->err == EFBIG)
			lua_pushfstring(L, "file:read: the rest of the file is over %d MiB",
					(int)(FS_READ_ALL_MAX >> 20));
		else
			lua_pushfstring(L, "%s: %s", fn_names[op->kind], strerror(op->err));
		lua_pushnil(L);
		if (op->kind == FS_OPEN && op->res >= 0)
			close((int)op->res);
	} else {
		lua_pushnil(L);
		switch (op->kind) {
		case FS_OPEN: {
			struct fs_handle *h = lua_newuserdatauv(L, sizeof(*h), 0);
			h->f = NULL;
			luaL_setmetatable(L, FILE_MT);
			h->f = xcalloc(1, sizeof(*h->f));
			h->f->fd = (int)op->res;
			h->f->refs = 1;
			break;
		}
		case FS_READ:
			lua_pushlstring(L, op->data ? op->data : "", op->len);
			break;
		case FS_WRITE:
			lua_pushnil(L);
			break;
		case FS_SEEK:
			lua_pushinteger(L, (lua_Integer)op->res);
			break;
		}
	}
	op_free(op);
}

static void work_cb(uv_work_t *req)
{
	op_run((struct fs_op *)req);
}

static void after_cb(uv_work_t *req, int status)
{
	struct fs_op *op = (struct fs_op *)req;
	if (status == UV_ECANCELED && !op->err)
		op->err = ECANCELED;
	lua_State *co = lua_engine__thread(op->call);
	if (!co) { /* the handler was dropped meanwhile: an opened file is closed */
		if (op->kind == FS_OPEN && op->res >= 0)
			close((int)op->res);
		op_free(op);
		return;
	}
	uint64_t call = op->call;
	op_push(co, op);
	lua_engine__wake(call, 2);
}

/* Continuation: raises the error, or returns the value (none for write). */
static int op_k(lua_State *L, int status, lua_KContext nvals)
{
	(void)status;
	int first = lua_gettop(L) - 1;
	if (!lua_isnil(L, first)) {
		lua_pushvalue(L, first);
		return lua_error(L);
	}
	return (int)nvals;
}

/* Runs op on the pool while the handler waits, or in place; returns what op_k returns. */
static int op_start(lua_State *L, struct fs_op *op, int nvals)
{
	if (op->f)
		op->f->refs++;
	if (lua_engine__can_wait(L)) {
		op->call = lua_engine__wait_begin(L, fn_names[op->kind]);
		int rc = uv_queue_work(kumod_loop(), &op->req, work_cb, after_cb);
		if (rc == 0)
			return lua_engine__wait(L, nvals, op_k);
		op->err = -rc; /* could not queue: report it in place */
	} else {
		op_run(op);
	}
	op_push(L, op);
	return op_k(L, LUA_OK, nvals);
}

/* --- the file object ------------------------------------------------------------------ */

static struct fs_file *check_open(lua_State *L, const char *fn)
{
	struct fs_handle *h = luaL_checkudata(L, 1, FILE_MT);
	if (!h->f || h->f->fd < 0 || h->f->close_pending)
		luaL_error(L, "%s: the file is closed", fn);
	return h->f;
}

static int f_read(lua_State *L)
{
	struct fs_file *f = check_open(L, "file:read");
	lua_Integer n = luaL_optinteger(L, 2, 0);
	if (!lua_isnoneornil(L, 2) && (n < 1 || n > (lua_Integer)FS_READ_ALL_MAX))
		return luaL_error(L, "file:read: size must be between 1 and %d",
				  (int)FS_READ_ALL_MAX);
	struct fs_op *op = xcalloc(1, sizeof(*op));
	op->kind = FS_READ;
	op->f = f;
	op->len = (size_t)n;
	return op_start(L, op, 1);
}

static int f_write(lua_State *L)
{
	struct fs_file *f = check_open(L, "file:write");
	size_t n;
	const char *s = luaL_checklstring(L, 2, &n);
	struct fs_op *op = xcalloc(1, sizeof(*op));
	op->kind = FS_WRITE;
	op->f = f;
	op->data = xmalloc(n ? n : 1);
	memcpy(op->data, s, n);
	op->len = n;
	return op_start(L, op, 0);
}

static int f_seek(lua_State *L)
{
	struct fs_file *f = check_open(L, "file:seek");
	static const char *const names[] = {"cur", "set", "end", NULL};
	static const int whence[] = {SEEK_CUR, SEEK_SET, SEEK_END};
	int w = luaL_checkoption(L, 2, "cur", names);
	lua_Integer pos = luaL_optinteger(L, 3, 0);
	struct fs_op *op = xcalloc(1, sizeof(*op));
	op->kind = FS_SEEK;
	op->f = f;
	op->whence = whence[w];
	op->pos = (int64_t)pos;
	return op_start(L, op, 1);
}

static int f_flush(lua_State *L)
{
	check_open(L, "file:flush");
	return 0; /* nothing is buffered */
}

/* close, __close and __gc: the fd closes now, or when the last operation in flight ends. */
static int f_close(lua_State *L)
{
	struct fs_handle *h = luaL_checkudata(L, 1, FILE_MT);
	struct fs_file *f = h->f;
	h->f = NULL;
	if (!f)
		return 0;
	if (f->refs > 1)
		f->close_pending = 1;
	file_unref(f);
	return 0;
}

static int f_tostring(lua_State *L)
{
	struct fs_handle *h = luaL_checkudata(L, 1, FILE_MT);
	if (h->f && h->f->fd >= 0 && !h->f->close_pending)
		lua_pushfstring(L, "kumo.fs file (fd %d)", h->f->fd);
	else
		lua_pushliteral(L, "kumo.fs file (closed)");
	return 1;
}

/* open(path[, mode]): KumoMTA's modes; "r+" creates the file too, as KumoMTA's. */
static int l_open(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	const char *mode = luaL_optstring(L, 2, "r");
	static const struct {
		const char *m;
		int flags;
	} modes[] = {
	    {"r", O_RDONLY},
	    {"w", O_WRONLY | O_CREAT | O_TRUNC},
	    {"a", O_WRONLY | O_CREAT | O_APPEND},
	    {"r+", O_RDWR | O_CREAT},
	    {"w+", O_RDWR | O_CREAT | O_TRUNC},
	    {"a+", O_RDWR | O_CREAT | O_APPEND},
	};
	char m[4] = "";
	size_t ml = strlen(mode);
	if (ml && ml <= 3) {
		memcpy(m, mode, ml + 1);
		if (m[ml - 1] == 'b') /* "rb", "r+b": binary is all there is */
			m[ml - 1] = 0;
	}
	int flags = -1;
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
		if (!strcmp(modes[i].m, m))
			flags = modes[i].flags;
	if (flags < 0)
		return luaL_error(L,
				  "kumo.fs.open: unknown mode '%s' (r, w, a, r+, w+, a+, each "
				  "with an optional b)",
				  mode);
	struct fs_op *op = xcalloc(1, sizeof(*op));
	op->kind = FS_OPEN;
	op->path = xstrdup(path);
	op->flags = flags;
	op->res = -1;
	return op_start(L, op, 1);
}

void lua_fs_file__register(lua_State *L)
{
	static const luaL_Reg methods[] = {
	    {"read", f_read},	{"write", f_write}, {"seek", f_seek},
	    {"flush", f_flush}, {"close", f_close}, {NULL, NULL},
	};
	lua_util__class(L, FILE_MT, methods, "__gc", f_close);
	luaL_getmetatable(L, FILE_MT);
	lua_pushcfunction(L, f_close);
	lua_setfield(L, -2, "__close");
	lua_pushcfunction(L, f_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pop(L, 1);
	lua_pushcfunction(L, l_open);
	lua_setfield(L, -2, "open");
}
