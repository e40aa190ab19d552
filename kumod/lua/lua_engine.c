/* SPDX-License-Identifier: Apache-2.0 */
/* The Lua policy engine behind policy.h: one lua_State, the kumo.on event
 * registry, and the bounded call path every handler runs through (one
 * coroutine per call, instruction and wall-clock budget, traceback on
 * error, kumo.reject decoded into a reply). */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lualib.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/xalloc.h"
#include "dispatch/loghook.h"
#include "ktrace.h"
#include "lua/lua_int.h"
#include "policy.h"
#include "spool/logrec.h"
#include "spool/message.h"

#define LUA_CALL_MAX_INSTRUCTIONS 100000000ull
#define LUA_CALL_DEADLINE_NS (2ull * 1000000000ull)
#define LUA_HOOK_EVERY 1000

/* Events that take several handlers, run in registration order
 * (kumo-compat.md §4, kind M); every other name takes one. */
static const char *const multi_events[] = {
    "pre_init",
    "validate_config",
    "get_queue_config",
    "get_acl_definition",
    "throttle_insert_ready_queue",
    "requeue_message",
    "should_enqueue_log_record",
};

struct lua_slot {
	char *name;
	int multi;
	int ref;   /* registry: sequence of handler functions */
	int count; /* cached so a missing handler costs no Lua call */
};

/* One bounded handler invocation; found by the count hook through the
 * thread's extra space (the back-pointer). */
struct lua_call {
	const char *event;
	uint64_t deadline_ns;
	uint64_t budget_left_ns; /* wall-clock time the handler may still run */
	uint64_t instructions;
	int exceeded;
	uint32_t delay_ms;	 /* kumo.delay_reply */
	int handler;		 /* counts in eng.in_handler (not the main chunk) */
	struct lua_async *async; /* set when the call may wait (policy_*_async) */
	lua_State *co;		 /* the call's own coroutine (waits only from it) */
	int waiting;		 /* lua_engine__wait was called in this resume */
};

static struct {
	lua_State *L;
	struct lua_slot *slots;
	size_t nslots, capslots;
	int in_handler; /* kumo.on is refused while > 0 */
	int validating;
	int loaded;	  /* load errors go to the caller, later ones to the log */
	lua_State *spare; /* a finished, reset coroutine kept for the next call */
	int spare_ref;
	struct lua_async *asyncs; /* calls whose handler waits (policy_*_async) */
	uint64_t next_async_id;
	int conns_ref; /* custom_lua connection objects by id */
	uint64_t next_conn_id;
} eng;

static void async_free(struct lua_async *a);

static struct lua_call **call_slot(lua_State *L)
{
	return (struct lua_call **)lua_getextraspace(L);
}

/* --- registry ------------------------------------------------------------ */

static struct lua_slot *slot_find(const char *event)
{
	for (size_t i = 0; i < eng.nslots; i++)
		if (strcmp(eng.slots[i].name, event) == 0)
			return &eng.slots[i];
	return NULL;
}

static int event_is_multi(const char *event)
{
	for (size_t i = 0; i < sizeof(multi_events) / sizeof(multi_events[0]); i++)
		if (strcmp(multi_events[i], event) == 0)
			return 1;
	return 0;
}

static struct lua_slot *slot_create(lua_State *L, const char *event)
{
	if (eng.nslots == eng.capslots) {
		eng.capslots = eng.capslots ? eng.capslots * 2 : 16;
		eng.slots = xrealloc(eng.slots, eng.capslots * sizeof(*eng.slots));
	}
	struct lua_slot *s = &eng.slots[eng.nslots++];
	s->name = xstrdup(event);
	s->multi = event_is_multi(event);
	s->count = 0;
	lua_newtable(L);
	s->ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return s;
}

int lua_engine__register(lua_State *L, const char *event, int fn_index)
{
	fn_index = lua_absindex(L, fn_index);
	if (eng.in_handler) {
		lua_pushfstring(L,
				"kumo.on('%s'): handlers can only be registered while "
				"the policy file loads, not from inside an event handler",
				event);
		return -1;
	}
	struct lua_slot *s = slot_find(event);
	if (!s)
		s = slot_create(L, event);
	lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
	if (!s->multi && s->count > 0) {
		lua_Debug ar;
		lua_rawgeti(L, -1, 1);
		lua_getinfo(L, ">S", &ar);
		lua_pop(L, 1);
		lua_pushfstring(L, "%s event already has a handler defined at %s:%d", event,
				ar.short_src, ar.linedefined);
		return -1;
	}
	lua_pushvalue(L, fn_index);
	lua_rawseti(L, -2, ++s->count);
	lua_pop(L, 1);
	return 0;
}

int lua_engine__validating(void)
{
	return eng.validating;
}

int policy_has_handler(const char *event)
{
	struct lua_slot *s = eng.L ? slot_find(event) : NULL;
	return s && s->count > 0;
}

/* --- bounded calls ------------------------------------------------------- */

/* Count hook: every LUA_HOOK_EVERY instructions, check the budget. Once
 * exceeded, fire on every instruction so a pcall loop cannot swallow it. */
static void call_hook(lua_State *L, lua_Debug *ar)
{
	(void)ar;
	struct lua_call *c = *call_slot(L);
	if (!c)
		return;
	if (!c->exceeded) {
		c->instructions += LUA_HOOK_EVERY;
		if (c->instructions < LUA_CALL_MAX_INSTRUCTIONS && clock_mono_ns() < c->deadline_ns)
			return;
		c->exceeded = 1;
		lua_sethook(L, call_hook, LUA_MASKCOUNT, 1);
	}
	luaL_where(L, 0);
	lua_pushliteral(L, "policy call exceeded its budget");
	lua_concat(L, 2);
	lua_error(L);
}

/* A string error on one line (line breaks and the tabs after them become
 * "; ": require's error lists its whole search path that way), or a
 * description of any other object. */
static void error_first_line(lua_State *co, int idx, char *out, size_t outlen)
{
	int t = lua_type(co, idx);
	if (t == LUA_TSTRING || t == LUA_TNUMBER) {
		const char *s = lua_tostring(co, idx);
		size_t o = 0;
		for (; *s && o + 3 < outlen; s++) {
			if (*s == '\n' || *s == '\r') {
				while (s[1] == '\n' || s[1] == '\r' || s[1] == '\t')
					s++;
				if (o && s[1]) {
					if (out[o - 1] != ':')
						out[o++] = ';';
					out[o++] = ' ';
				}
			} else {
				out[o++] = *s == '\t' ? ' ' : *s;
			}
		}
		out[o] = 0;
	} else {
		snprintf(out, outlen, "(error object is a %s value)", lua_typename(co, t));
	}
}

static void call_failed(const char *event, lua_State *co, struct policy_result *r)
{
	int code = 0, disconnect = 0;
	int rej = lua_kumo__is_reject(co, -1, &code, r->text, sizeof(r->text), &disconnect);
	if (rej == 1) {
		r->status = POLICY_REJECT;
		r->code = code;
		r->disconnect = disconnect;
		return;
	}
	r->status = POLICY_ERROR;
	if (rej == 0)
		error_first_line(co, -1, r->text, sizeof(r->text));
	if (eng.loaded)
		KTRACE(lua_error, event, r->text); /* logs at ERROR under kumod::lua */
	else
		KTRACE(lua_startup_error, event, r->text); /* main prints it, once */
	/* the dead coroutine keeps its frames: walk them for the traceback */
	luaL_traceback(eng.L, co, r->text, 0);
	const char *tb = luaL_gsub(eng.L, lua_tostring(eng.L, -1), "\n\t", " <- ");
	log_debug("kumod::lua", "event %s traceback: %s", event, tb);
	lua_pop(eng.L, 2);
}

typedef int (*take_fn)(lua_State *co, int nres, void *ctx, struct policy_result *r);

/* Resumes co (nargs values on its stack) under call's budget. A yield is
 * kept (LUA_YIELD) only when an asynchronous builtin asked to wait
 * (lua_engine__wait); any other yield, and an exhausted budget, become
 * errors with the message on co. The wall-clock budget counts only the time
 * the handler runs, not the time it waits. */
static int call_resume(struct lua_call *call, lua_State *co, int nargs, int *nres)
{
	uint64_t start = clock_mono_ns();
	call->deadline_ns = start + call->budget_left_ns;
	call->waiting = 0;
	struct lua_call *prev_main = *call_slot(eng.L);
	/* coroutines created by the handler copy the main thread's extra space */
	*call_slot(eng.L) = call;
	*call_slot(co) = call;
	eng.in_handler += call->handler;
	lua_sethook(co, call_hook, LUA_MASKCOUNT, LUA_HOOK_EVERY);
	int st = lua_resume(co, eng.L, nargs, nres);
	if (st == LUA_OK && call->exceeded) {
		st = LUA_ERRRUN;
		lua_pushliteral(co, "policy call exceeded its budget");
	} else if (st == LUA_YIELD && !call->waiting) {
		st = LUA_ERRRUN;
		lua_pushliteral(co, "event handler yielded, but no asynchronous operation is "
				    "available to resume it");
	}
	lua_sethook(co, NULL, 0, 0);
	eng.in_handler -= call->handler;
	*call_slot(co) = st == LUA_YIELD ? call : NULL;
	*call_slot(eng.L) = prev_main;
	uint64_t used = clock_mono_ns() - start;
	call->budget_left_ns = used < call->budget_left_ns ? call->budget_left_ns - used : 1;
	return st;
}

/* After a handler finished (st is not LUA_YIELD): hands results to take or
 * fills r from the error, and leaves co ready for reuse. Returns 1 when take
 * asked to stop. */
static int call_complete(const char *event, lua_State *co, int st, int nres, take_fn take,
			 void *ctx, struct policy_result *r)
{
	int stop = 0;
	*call_slot(co) = NULL;
	if (st != LUA_OK)
		call_failed(event, co, r);
	else if (take)
		stop = take(co, nres, ctx, r);
	/* A handler that returned has closed its to-be-closed variables already:
	 * dropping its results leaves the thread ready for the next call. After
	 * an error, __close handlers run here. */
	if (st == LUA_OK)
		lua_settop(co, 0);
	else
		lua_resetthread(co);
	return stop;
}

#define EV_THROTTLE_INSERT "throttle_insert_ready_queue"

/* The delay asked by the throttle_insert_ready_queue handlers now running. */
static uint64_t msg_delay_ms;

int lua_engine__delay_message(lua_State *L, uint64_t ms)
{
	struct lua_call *c = *call_slot(L);
	if (!c || !c->handler || strcmp(c->event, EV_THROTTLE_INSERT) != 0)
		return -1;
	if (ms > msg_delay_ms)
		msg_delay_ms = ms;
	return 0;
}

int lua_engine__delay_reply(lua_State *L, uint32_t ms)
{
	struct lua_call *c = *call_slot(L);
	if (!c)
		return -1;
	c->delay_ms = ms;
	return 0;
}

/* Runs the function and nargs arguments already on co under the budget,
 * without waiting. Results are handed to take (may be NULL). Returns 1 when
 * take asked to stop (first non-nil wins), 0 otherwise. */
static int call_run(const char *event, lua_State *co, int nargs, int handler, take_fn take,
		    void *ctx, struct policy_result *r)
{
	struct lua_call call = {
	    .event = event,
	    .budget_left_ns = LUA_CALL_DEADLINE_NS,
	    .handler = handler,
	};
	int nres = 0;
	int st = call_resume(&call, co, nargs, &nres);
	int stop = call_complete(event, co, st, nres, take, ctx, r);
	if (call.delay_ms) /* kumo.delay_reply */
		r->delay_ms = call.delay_ms;
	return stop;
}

/* Pushes the event's arguments onto co; returns their count. */
typedef int (*push_fn)(lua_State *co, void *ctx);

/* One spare coroutine, reused across calls: lua_resetthread() leaves a
 * finished thread clean (status OK, empty stack), and creating a thread per
 * call was a large share of the per-message cost (allocation and GC). A
 * nested dispatch simply gets a fresh thread. */
static lua_State *thread_get(int *ref)
{
	if (eng.spare) {
		lua_State *co = eng.spare;
		*ref = eng.spare_ref;
		eng.spare = NULL;
		return co;
	}
	lua_State *co = lua_newthread(eng.L);
	*ref = luaL_ref(eng.L, LUA_REGISTRYINDEX);
	return co;
}

static void thread_put(lua_State *co, int ref)
{
	if (!eng.spare && lua_status(co) == LUA_OK && lua_gettop(co) == 0) {
		eng.spare = co;
		eng.spare_ref = ref;
		return;
	}
	luaL_unref(eng.L, LUA_REGISTRYINDEX, ref);
}

static void dispatch(const char *event, push_fn push, take_fn take, void *ctx,
		     struct policy_result *r)
{
	memset(r, 0, sizeof(*r));
	r->status = POLICY_OK;
	struct lua_slot *s = eng.L ? slot_find(event) : NULL;
	if (!s || s->count == 0)
		return;
	KTRACE(lua_event, event, (int32_t)s->count);
	for (int i = 1; i <= s->count; i++) {
		int ref;
		lua_State *co = thread_get(&ref);
		lua_rawgeti(eng.L, LUA_REGISTRYINDEX, s->ref);
		lua_rawgeti(eng.L, -1, i);
		lua_xmove(eng.L, co, 1);
		lua_pop(eng.L, 1);
		int nargs = push ? push(co, ctx) : 0;
		int stop = call_run(event, co, nargs, 1, take, ctx, r);
		thread_put(co, ref);
		if (stop || r->status != POLICY_OK)
			break;
	}
	r->handlers = s->count;
}

/* --- loading ------------------------------------------------------------- */

static int lua_panic(lua_State *L)
{
	const char *msg = lua_tostring(L, -1);
	panic("lua: unprotected error: %s", msg ? msg : "(non-string error)");
}

/* package.path = "<dir of the policy>/?.lua;" .. package.path */
static void set_package_path(lua_State *L, const char *path)
{
	const char *slash = strrchr(path, '/');
	lua_getglobal(L, "package");
	if (slash)
		lua_pushlstring(L, path, (size_t)(slash - path));
	else
		lua_pushliteral(L, ".");
	lua_pushliteral(L, "/?.lua;");
	lua_getfield(L, -3, "path");
	lua_concat(L, 3);
	lua_setfield(L, -2, "path");
	lua_pop(L, 1);
}

static int load_fail(char *err, size_t errlen, const char *msg)
{
	snprintf(err, errlen, "%.*s", (int)strcspn(msg, "\n"), msg);
	policy_close();
	return -1;
}

/* Loads (text only) and runs the main chunk in a bounded coroutine. */
static int load_chunk(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "policy file '%s': %s", path, strerror(errno));
		policy_close();
		return -1;
	}
	fclose(f);
	lua_State *co = lua_newthread(eng.L);
	int ref = luaL_ref(eng.L, LUA_REGISTRYINDEX);
	int st = luaL_loadfilex(co, path, "t");
	if (st == LUA_ERRFILE) {
		const char *why = strrchr(lua_tostring(co, -1), ':');
		snprintf(err, errlen, "policy file '%s': %s", path, why ? why + 2 : "cannot read");
		luaL_unref(eng.L, LUA_REGISTRYINDEX, ref);
		policy_close();
		return -1;
	}
	if (st != LUA_OK) {
		char msg[512];
		error_first_line(co, -1, msg, sizeof(msg));
		luaL_unref(eng.L, LUA_REGISTRYINDEX, ref);
		return load_fail(err, errlen, msg);
	}
	struct policy_result r = {0};
	call_run("policy", co, 0, 0, NULL, NULL, &r);
	luaL_unref(eng.L, LUA_REGISTRYINDEX, ref);
	return r.status == POLICY_OK ? 0 : load_fail(err, errlen, r.text);
}

static int run_phase(const char *event, char *err, size_t errlen)
{
	struct policy_result r;
	dispatch(event, NULL, NULL, NULL, &r);
	if (r.status == POLICY_OK)
		return 0;
	if (r.status == POLICY_REJECT) {
		char msg[1700];
		snprintf(msg, sizeof(msg), "%s: kumo.reject(%d, '%s')", event, r.code, r.text);
		return load_fail(err, errlen, msg);
	}
	return load_fail(err, errlen, r.text);
}

/* kumod's own Lua modules (policy-extras): <bin>/../share/kumod when
 * installed, the repository's share/ when run from the build tree
 * (build/kumod, or a sanitizer build's build/address/kumod). */
static int share_dir(char *out, size_t len)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return -1;
	exe[n] = 0;
	char *slash = strrchr(exe, '/');
	if (!slash)
		return -1;
	*slash = 0;
	static const char *const cand[] = {"/../share/kumod", "/../share", "/../../share"};
	for (size_t i = 0; i < sizeof(cand) / sizeof(cand[0]); i++) {
		char probe[PATH_MAX + 64];
		snprintf(probe, sizeof(probe), "%s%s/policy-extras", exe, cand[i]);
		struct stat st;
		if (stat(probe, &st) == 0 && S_ISDIR(st.st_mode)) {
			char *real = realpath(probe, NULL);
			if (!real)
				return -1;
			*strrchr(real, '/') = 0;
			snprintf(out, len, "%s", real);
			free(real);
			return 0;
		}
	}
	return -1;
}

/* Last on package.path, so the user's LUA_PATH and policy directory win
 * (KumoMTA's own helper files placed first on LUA_PATH load instead). */
static void add_share_path(lua_State *L)
{
	char dir[PATH_MAX];
	if (share_dir(dir, sizeof(dir)) != 0)
		return;
	lua_getglobal(L, "package");
	lua_getfield(L, -1, "path");
	lua_pushfstring(L, "%s;%s/?.lua", lua_tostring(L, -1), dir);
	lua_setfield(L, -3, "path");
	lua_pop(L, 2);
}

/* Standard libraries, the global `kumo` (also package.loaded.kumo, so
 * require 'kumo' works) and the object classes; every name a policy may
 * reach for and kumod lacks raises a clear error (lua_api.c). */
static void open_state(lua_State *L)
{
	luaL_openlibs(L);
	luaL_requiref(L, "kumo", lua_kumo__open, 1);
	lua_api__guard_kumo(L, -1);
	lua_pop(L, 1);
	lua_message__register(L);
	lua_api__guard_class(L, LUA_KUMO_MESSAGE_MT, "msg");
	lua_api__guard_class(L, LUA_KUMO_CONN_META_MT, "conn_meta");
	lua_api__install_searcher(L);
	add_share_path(L);
}

void policy_list_api(FILE *out, int markdown)
{
	lua_State *L = luaL_newstate();
	if (!L)
		panic("%s: cannot create a Lua state", __func__);
	lua_atpanic(L, lua_panic);
	*call_slot(L) = NULL;
	open_state(L);
	lua_api__list(L, out, markdown);
	lua_close(L);
}

static int log_filter(const char *event, const struct message *m, const char **why);

int policy_load(const char *path, int validate, char *err, size_t errlen)
{
	policy_close();
	eng.L = luaL_newstate();
	if (!eng.L)
		panic("%s: cannot create a Lua state", __func__);
	lua_atpanic(eng.L, lua_panic);
	*call_slot(eng.L) = NULL;
	eng.validating = validate;
	open_state(eng.L);
	set_package_path(eng.L, path);
	if (load_chunk(path, err, errlen) != 0)
		return -1;
	if (run_phase("pre_init", err, errlen) != 0 || run_phase("init", err, errlen) != 0)
		return -1;
	if (validate && run_phase("validate_config", err, errlen) != 0)
		return -1;
	logrec_set_filter(log_filter);
	eng.loaded = 1;
	log_debug("lua", "policy %s loaded: %zu events with handlers", path, eng.nslots);
	return 0;
}

void policy_close(void)
{
	while (eng.asyncs) /* waiting calls are dropped: their callers never hear back */
		async_free(eng.asyncs);
	if (eng.L) {
		lua_close(eng.L); /* __gc drops message and conn_meta references */
		eng.L = NULL;
		eng.spare = NULL;
		eng.conns_ref = 0;
	}
	for (size_t i = 0; i < eng.nslots; i++)
		free(eng.slots[i].name);
	xfree(eng.slots);
	eng.nslots = eng.capslots = 0;
	eng.in_handler = 0;
	eng.validating = 0;
	eng.loaded = 0;
	lua_throttle__free_all();
	loghook_free_all();
}

/* --- SMTP server events -------------------------------------------------- */

struct event_args {
	const char *str[4]; /* leading string arguments (domain, listener) */
	int nstr;
	int address; /* str[0] is an envelope address: push an address object */
	struct message *msg;
	json_t *conn_meta;
	struct policy_listener_domain *ld;
	/* tagged configuration results (get_queue_config, ...) */
	const char *mt;	  /* metatable the result must carry */
	const char *want; /* "kumo.make_queue_config{...}" for the error text */
	json_t **out;
	uint64_t conn;	       /* custom_lua: the connection object's id */
	struct message **msgs; /* custom_lua send_batch: the batch */
	size_t nmsgs;
	/* smtp_server_ehlo's extensions (EHLO only): pushed after conn_meta;
	 * a handler's returned list replaces its entries (ext_set then) */
	json_t *ext;
	int ext_set;
};

static int push_conn_send(lua_State *co, void *ctx);
static int push_conn_send_batch(lua_State *co, void *ctx);

static int push_event_args(lua_State *co, void *ctx)
{
	struct event_args *a = ctx;
	int n = 0;
	for (int i = 0; i < a->nstr; i++, n++) {
		if (i == 0 && a->address)
			lua_address__push(co, a->str[0] ? a->str[0] : "");
		else
			lua_pushstring(co, a->str[i] ? a->str[i] : "");
	}
	if (a->msg) {
		lua_message__push(co, a->msg);
		n++;
	}
	if (a->conn_meta) {
		lua_conn_meta__push(co, a->conn_meta);
		n++;
	}
	if (a->ext) {
		lua_json__push(co, a->ext);
		n++;
	}
	return n;
}

/* configure_local_logs' filter_event: one call per record with the
 * message; only a boolean true logs it. */
struct filter_args {
	struct event_args a; /* first: push_event_args reads it */
	int ok;
};

static int take_filter(lua_State *co, int nres, void *ctx, struct policy_result *r)
{
	struct filter_args *f = ctx;
	f->ok = nres >= 1 && lua_isboolean(co, 1) && lua_toboolean(co, 1);
	return 1;
}

static int log_filter(const char *event, const struct message *m, const char **why)
{
	if (!policy_has_handler(event)) {
		*why = "no filter_event handler";
		return 0;
	}
	struct policy_result r;
	/* the handler gets the message object, as KumoMTA's */
	struct filter_args f = {.a = {.msg = (struct message *)m}};
	dispatch(event, push_event_args, take_filter, &f, &r);
	if (r.status != POLICY_OK) {
		*why = "filter_event handler failed";
		return 0;
	}
	*why = "filter_event returned false";
	return f.ok;
}

/* --- handlers that may wait ------------------------------------------------ */

/* An event call whose handlers may wait for I/O (kumo.http): it lives here
 * while a handler's coroutine is suspended; the builtin's completion finds
 * it by id (lua_engine__wake). Holds references on the message and the
 * connection metadata, so the caller may go away meanwhile. */
struct lua_async {
	uint64_t id;
	const char *event; /* static */
	struct event_args args;
	push_fn push;
	take_fn take;
	int next;      /* next handler to run (1-based) */
	int handlers;  /* handlers defined for the event (1 for direct calls) */
	int direct;    /* one call whose function push() pushes too (conn:send) */
	lua_State *co; /* the running handler's coroutine, NULL between handlers */
	int co_ref;
	struct lua_call call;
	struct policy_result r;
	policy_done_fn done;
	void *arg;
	struct lua_async *next_async, *prev_async;
};

static struct lua_async *async_find(uint64_t id)
{
	for (struct lua_async *a = eng.asyncs; a; a = a->next_async)
		if (a->id == id)
			return a;
	return NULL;
}

static void async_free(struct lua_async *a)
{
	if (a->prev_async)
		a->prev_async->next_async = a->next_async;
	else if (eng.asyncs == a)
		eng.asyncs = a->next_async;
	if (a->next_async)
		a->next_async->prev_async = a->prev_async;
	if (a->co && eng.L)
		luaL_unref(eng.L, LUA_REGISTRYINDEX, a->co_ref); /* a suspended thread: collected */
	json_decref(a->args.conn_meta);
	json_decref(a->args.ext);
	if (a->args.msg)
		message_unref(a->args.msg);
	for (size_t i = 0; i < a->args.nmsgs; i++)
		message_unref(a->args.msgs[i]);
	free(a->args.msgs);
	free(a);
}

/* Runs a's handlers from a->next on; when a->co is set, its handler has
 * just returned from a resume with status st. Returns 1 when a handler
 * waits, 0 when the call is over (a->r holds the outcome). */
static int async_run(struct lua_async *a, int st, int nres)
{
	for (;;) {
		if (a->co) {
			if (st == LUA_YIELD)
				return 1;
			int stop =
			    call_complete(a->event, a->co, st, nres, a->take, &a->args, &a->r);
			if (a->call.delay_ms) /* kumo.delay_reply */
				a->r.delay_ms = a->call.delay_ms;
			thread_put(a->co, a->co_ref);
			a->co = NULL;
			if (stop || a->r.status != POLICY_OK)
				return 0;
		}
		struct lua_slot *s = eng.L && !a->direct ? slot_find(a->event) : NULL;
		if (!eng.L || (a->direct ? a->next > 1 : (!s || a->next > s->count)))
			return 0;
		a->co = thread_get(&a->co_ref);
		if (s) {
			lua_rawgeti(eng.L, LUA_REGISTRYINDEX, s->ref);
			lua_rawgeti(eng.L, -1, a->next);
			lua_xmove(eng.L, a->co, 1);
			lua_pop(eng.L, 1);
		}
		a->next++;
		int nargs = a->push ? a->push(a->co, &a->args) : 0;
		a->call = (struct lua_call){.event = a->event,
					    .budget_left_ns = LUA_CALL_DEADLINE_NS,
					    .handler = 1,
					    .async = a,
					    .co = a->co};
		nres = 0;
		st = call_resume(&a->call, a->co, nargs, &nres);
	}
}

/* dispatch() for an event whose handlers may wait: 0 when it completed
 * (r filled, done never called), 1 when a handler waits (done is called
 * once later, *id names the call). */
static int dispatch_async(const char *event, push_fn push, take_fn take,
			  const struct event_args *args, struct policy_result *r,
			  policy_done_fn done, void *arg, uint64_t *id)
{
	memset(r, 0, sizeof(*r));
	r->status = POLICY_OK;
	int direct = push == push_conn_send || push == push_conn_send_batch;
	struct lua_slot *s = eng.L && !direct ? slot_find(event) : NULL;
	if (!eng.L || (!direct && (!s || s->count == 0)))
		return 0;
	KTRACE(lua_event, event, (int32_t)(s ? s->count : 1));
	struct lua_async *a = xcalloc(1, sizeof(*a));
	a->id = ++eng.next_async_id;
	a->event = s ? s->name : event; /* lives as long as the policy */
	a->direct = direct;
	a->args = *args;
	json_incref(a->args.conn_meta);
	json_incref(a->args.ext);
	if (a->args.msg)
		message_ref(a->args.msg);
	if (args->nmsgs) { /* the caller's array may go away meanwhile */
		a->args.msgs = xcalloc(args->nmsgs, sizeof(*a->args.msgs));
		for (size_t i = 0; i < args->nmsgs; i++)
			a->args.msgs[i] = message_ref(args->msgs[i]);
	}
	a->push = push;
	a->take = take;
	a->next = 1;
	a->handlers = s ? s->count : 1;
	a->next_async = eng.asyncs;
	if (eng.asyncs)
		eng.asyncs->prev_async = a;
	eng.asyncs = a;
	if (async_run(a, LUA_OK, 0)) {
		a->done = done;
		a->arg = arg;
		*id = a->id;
		KTRACE(lua_wait, event, a->id);
		return 1;
	}
	*r = a->r;
	r->handlers = a->handlers;
	async_free(a);
	return 0;
}

uint64_t lua_engine__wait_begin(lua_State *L, const char *what)
{
	struct lua_call *c = *call_slot(L);
	if (!c || !c->async) {
		luaL_error(L,
			   "%s: cannot wait for I/O in %s%s%s: kumod runs it synchronously (the "
			   "events that may wait are listed in docs/policy-api.md)",
			   what, c ? "event '" : "the policy's main chunk", c ? c->event : "",
			   c ? "'" : "");
		return 0;
	}
	if (L != c->co || !lua_isyieldable(L)) {
		luaL_error(L,
			   "%s: cannot wait for I/O inside a coroutine the handler of '%s' "
			   "created, or inside a metamethod; call it from the handler itself",
			   what, c->event);
		return 0;
	}
	return c->async->id;
}

int lua_engine__can_wait(lua_State *L)
{
	struct lua_call *c = *call_slot(L);
	return c && c->async && L == c->co && lua_isyieldable(L);
}

int lua_engine__wait(lua_State *L, lua_KContext ctx, lua_KFunction k)
{
	struct lua_call *c = *call_slot(L);
	if (!c || !c->async)
		panic("%s: no lua_engine__wait_begin", __func__);
	c->waiting = 1;
	return lua_yieldk(L, 0, ctx, k);
}

lua_State *lua_engine__thread(uint64_t id)
{
	struct lua_async *a = async_find(id);
	return a && a->co && lua_status(a->co) == LUA_YIELD ? a->co : NULL;
}

const char *lua_engine__event(lua_State *L)
{
	struct lua_call *c = *call_slot(L);
	return c ? c->event : NULL;
}

void lua_engine__wake(uint64_t id, int nres)
{
	struct lua_async *a = async_find(id);
	if (!a || !a->co)
		panic("%s: call %" PRIu64 " is not waiting", __func__, id);
	KTRACE(lua_wake, a->event, a->id);
	int n = 0;
	int st = call_resume(&a->call, a->co, nres, &n);
	if (async_run(a, st, n))
		return;
	if (eng.asyncs == a)
		eng.asyncs = a->next_async;
	if (a->prev_async)
		a->prev_async->next_async = a->next_async;
	if (a->next_async)
		a->next_async->prev_async = a->prev_async;
	a->next_async = a->prev_async = NULL;
	a->r.handlers = a->handlers;
	a->done(a->arg, &a->r);
	async_free(a);
}

void policy_cancel(uint64_t id)
{
	struct lua_async *a = async_find(id);
	if (a)
		async_free(a);
}

/* --- log hooks ----------------------------------------------------------------- */

struct enqueue_args {
	struct message *msg;
	const char *hook;
	int *enqueue;
};

static int push_enqueue(lua_State *co, void *ctx)
{
	struct enqueue_args *a = ctx;
	lua_message__push(co, a->msg);
	lua_pushstring(co, a->hook);
	return 2;
}

/* nil: the next handler decides; true or false: that is the answer. */
static int take_enqueue(lua_State *co, int nres, void *ctx, struct policy_result *r)
{
	struct enqueue_args *a = ctx;
	int idx = lua_gettop(co) - nres + 1;
	if (nres < 1 || lua_isnil(co, idx))
		return 0;
	if (!lua_isboolean(co, idx)) {
		r->status = POLICY_ERROR;
		snprintf(r->text, sizeof(r->text),
			 "should_enqueue_log_record: handler returned a %s; expected true, false "
			 "or nil",
			 luaL_typename(co, idx));
		return 1;
	}
	*a->enqueue = lua_toboolean(co, idx);
	return 1;
}

void policy_spool_message_enumerated(struct message *msg, struct policy_result *r)
{
	struct event_args a = {.msg = msg};
	dispatch("spool_message_enumerated", push_event_args, NULL, &a, r);
}

/* smtp_server_rewrite_response(status, response, command, conn_meta) */
struct rewrite_resp_args {
	int status;
	const char *response, *command;
	json_t *conn_meta;
	int *code, *has_text;
	char *text;
	size_t textlen;
};

static int push_rewrite_resp(lua_State *co, void *ctx)
{
	struct rewrite_resp_args *a = ctx;
	lua_pushinteger(co, a->status);
	lua_pushstring(co, a->response);
	if (a->command)
		lua_pushstring(co, a->command);
	else
		lua_pushnil(co);
	lua_conn_meta__push(co, a->conn_meta);
	return 4;
}

static int take_rewrite_resp(lua_State *co, int nres, void *ctx, struct policy_result *r)
{
	struct rewrite_resp_args *a = ctx;
	int idx = lua_gettop(co) - nres + 1;
	const char *bad = NULL;
	if (nres >= 1 && !lua_isnil(co, idx)) {
		lua_Integer c = lua_isinteger(co, idx) ? lua_tointeger(co, idx) : 0;
		if (c < 200 || c > 599)
			bad = "the status must be an SMTP code (200..599) or nil";
		else
			*a->code = (int)c;
	}
	if (!bad && nres >= 2 && !lua_isnil(co, idx + 1)) {
		size_t n;
		const char *s =
		    lua_type(co, idx + 1) == LUA_TSTRING ? lua_tolstring(co, idx + 1, &n) : NULL;
		if (!s || n >= a->textlen || memchr(s, '\0', n) || memchr(s, '\r', n))
			bad =
			    "the response must be a string (LF between lines, no CR or NUL) or nil";
		else {
			memcpy(a->text, s, n + 1);
			*a->has_text = 1;
		}
	}
	if (bad) {
		r->status = POLICY_ERROR;
		snprintf(r->text, sizeof(r->text), "smtp_server_rewrite_response: %s", bad);
	}
	return 1;
}

void policy_smtp_rewrite_response(int status, const char *response, const char *command,
				  json_t *conn_meta, int *code, char *text, size_t textlen,
				  int *has_text, struct policy_result *r)
{
	struct rewrite_resp_args a = {status, response, command, conn_meta,
				      code,   has_text, text,	 textlen};
	*code = 0;
	*has_text = 0;
	dispatch("smtp_server_rewrite_response", push_rewrite_resp, take_rewrite_resp, &a, r);
	if (r->status != POLICY_OK) {
		*code = 0;
		*has_text = 0;
	}
}

/* requeue_message(msg, smtp_response, insert_context, increment_attempts, delay) */
struct requeue_args {
	struct message *msg;
	const char *response, *reason;
	int increment;
};

static int push_requeue(lua_State *co, void *ctx)
{
	struct requeue_args *a = ctx;
	lua_message__push(co, a->msg);
	lua_pushstring(co, a->response);
	lua_createtable(co, 1, 0);
	lua_pushstring(co, a->reason);
	lua_rawseti(co, -2, 1);
	lua_pushboolean(co, a->increment);
	lua_pushnil(co); /* delay: the queue's own retry schedule applies */
	return 5;
}

void policy_requeue_message(struct message *msg, const char *response, const char *reason,
			    int increment, struct policy_result *r)
{
	struct requeue_args a = {msg, response, reason, increment};
	dispatch("requeue_message", push_requeue, NULL, &a, r);
}

/* smtp_client_rewrite_delivery_status(response, domain, tenant, campaign,
 * routing_domain): nil keeps the code; an integer 200..599 replaces it. */
struct rewrite_args {
	const char *s[5];
	int *code;
};

static int push_rewrite(lua_State *co, void *ctx)
{
	struct rewrite_args *a = ctx;
	for (int i = 0; i < 5; i++)
		if (a->s[i])
			lua_pushstring(co, a->s[i]);
		else
			lua_pushnil(co);
	return 5;
}

static int take_rewrite(lua_State *co, int nres, void *ctx, struct policy_result *r)
{
	struct rewrite_args *a = ctx;
	int idx = lua_gettop(co) - nres + 1;
	if (nres < 1 || lua_isnil(co, idx))
		return 0;
	lua_Integer c = lua_isinteger(co, idx) ? lua_tointeger(co, idx) : 0;
	if (c < 200 || c > 599) {
		r->status = POLICY_ERROR;
		snprintf(r->text, sizeof(r->text),
			 "smtp_client_rewrite_delivery_status: handler returned %s; expected an "
			 "SMTP status code (200..599) or nil",
			 lua_isinteger(co, idx) ? "an out-of-range integer"
						: luaL_typename(co, idx));
		return 1;
	}
	*a->code = (int)c;
	return 1;
}

void policy_smtp_client_rewrite_delivery_status(const char *response, const char *domain,
						const char *tenant, const char *campaign,
						const char *routing_domain, int *code,
						struct policy_result *r)
{
	struct rewrite_args a = {{response, domain, tenant, campaign, routing_domain}, code};
	*code = 0;
	dispatch("smtp_client_rewrite_delivery_status", push_rewrite, take_rewrite, &a, r);
	if (r->status != POLICY_OK)
		*code = 0;
}

void policy_should_enqueue_log_record(struct message *msg, const char *hook, int *enqueue,
				      struct policy_result *r)
{
	struct enqueue_args a = {.msg = msg, .hook = hook, .enqueue = enqueue};
	*enqueue = 0;
	dispatch("should_enqueue_log_record", push_enqueue, take_enqueue, &a, r);
	if (r->status != POLICY_OK)
		*enqueue = 0;
}

struct disposition_args {
	struct message *msg;
	json_t *record;
};

static int push_disposition(lua_State *co, void *ctx)
{
	struct disposition_args *a = ctx;
	lua_message__push(co, a->msg);
	lua_json__push(co, a->record);
	return 2;
}

void policy_log_disposition(const char *event, struct message *msg, json_t *record,
			    struct policy_result *r)
{
	struct disposition_args a = {.msg = msg, .record = record};
	dispatch(event, push_disposition, NULL, &a, r);
}

/* --- custom_lua delivery ------------------------------------------------------ */

/* Connection objects live in a registry table, by id. */
static void conns_push(lua_State *L)
{
	if (!eng.conns_ref) {
		lua_newtable(eng.L);
		eng.conns_ref = luaL_ref(eng.L, LUA_REGISTRYINDEX);
	}
	lua_rawgeti(L, LUA_REGISTRYINDEX, eng.conns_ref);
}

/* The constructor's result: a table with a send (or, for batches,
 * send_batch) method, kept by id. */
static int take_conn(lua_State *co, int nres, void *ctx, struct policy_result *r)
{
	(void)ctx;
	int idx = lua_gettop(co) - nres + 1;
	int ok = nres >= 1 && lua_type(co, idx) == LUA_TTABLE;
	if (ok) {
		lua_getfield(co, idx, "send");
		lua_getfield(co, idx, "send_batch");
		ok = lua_isfunction(co, -2) || lua_isfunction(co, -1);
		lua_pop(co, 2);
	}
	if (!ok) {
		r->status = POLICY_ERROR;
		snprintf(r->text, sizeof(r->text),
			 "custom_lua constructor returned %s; expected a table with a send (or "
			 "send_batch) method",
			 nres >= 1 ? luaL_typename(co, idx) : "nothing");
		KTRACE(lua_error, "custom_lua", r->text);
		return 1;
	}
	conns_push(co);
	r->handle = ++eng.next_conn_id;
	lua_pushvalue(co, idx);
	lua_rawseti(co, -2, (lua_Integer)r->handle);
	lua_pop(co, 1);
	return 1;
}

static int conn_gone(lua_State *L)
{
	return luaL_error(L, "custom_lua: the connection object is gone");
}

static int conn_no_method(lua_State *L)
{
	return luaL_error(L, "custom_lua: the connection object has no %s method",
			  lua_tostring(L, lua_upvalueindex(1)));
}

/* Pushes conn[method] and conn; 0 (and a function raising the error) when
 * the object is gone or has no such method. */
static int push_conn_method(lua_State *co, uint64_t conn, const char *method)
{
	conns_push(co);
	if (lua_rawgeti(co, -1, (lua_Integer)conn) != LUA_TTABLE) {
		lua_pop(co, 2);
		lua_pushcfunction(co, conn_gone);
		return 0;
	}
	lua_getfield(co, -1, method); /* conns, conn, method */
	if (!lua_isfunction(co, -1)) {
		lua_pop(co, 3);
		lua_pushstring(co, method);
		lua_pushcclosure(co, conn_no_method, 1);
		return 0;
	}
	lua_rotate(co, -3, 1); /* method, conns, conn */
	lua_remove(co, -2);    /* method, conn */
	return 1;
}

/* conn:send(msg): pushes the method, the object and the message. */
static int push_conn_send(lua_State *co, void *ctx)
{
	struct event_args *a = ctx;
	if (!push_conn_method(co, a->conn, "send"))
		return 0;
	lua_message__push(co, a->msg);
	return 2;
}

/* conn:send_batch(msgs): the messages as an array, in queue order. */
static int push_conn_send_batch(lua_State *co, void *ctx)
{
	struct event_args *a = ctx;
	if (!push_conn_method(co, a->conn, "send_batch"))
		return 0;
	lua_createtable(co, (int)a->nmsgs, 0);
	for (size_t i = 0; i < a->nmsgs; i++) {
		lua_message__push(co, a->msgs[i]);
		lua_rawseti(co, -2, (lua_Integer)i + 1);
	}
	return 2;
}

/* send's result: a string (the response text logged) or nil. */
static int take_send(lua_State *co, int nres, void *ctx, struct policy_result *r)
{
	(void)ctx;
	int idx = lua_gettop(co) - nres + 1;
	if (nres >= 1 && lua_type(co, idx) == LUA_TSTRING) {
		error_first_line(co, idx, r->text, sizeof(r->text));
	} else if (nres >= 1 && !lua_isnil(co, idx)) {
		r->status = POLICY_ERROR;
		snprintf(r->text, sizeof(r->text),
			 "custom_lua send returned a %s; expected a string or nil",
			 luaL_typename(co, idx));
	}
	return 1;
}

int policy_lua_conn_open(const char *constructor, const char *domain, const char *tenant,
			 const char *campaign, struct policy_result *r, policy_done_fn done,
			 void *arg, uint64_t *id)
{
	struct event_args a = {.str = {domain, tenant, campaign}, .nstr = 3};
	if (!policy_has_handler(constructor)) {
		memset(r, 0, sizeof(*r));
		r->status = POLICY_ERROR;
		snprintf(r->text, sizeof(r->text),
			 "custom_lua constructor '%s' has no handler (kumo.on('%s', ...))",
			 constructor, constructor);
		return 0;
	}
	int rc = dispatch_async(constructor, push_event_args, take_conn, &a, r, done, arg, id);
	if (!rc && r->status == POLICY_OK && !r->handle) {
		r->status = POLICY_ERROR;
		snprintf(r->text, sizeof(r->text), "custom_lua constructor '%s' returned nothing",
			 constructor);
	}
	return rc;
}

int policy_lua_conn_send(uint64_t conn, struct message *msg, struct policy_result *r,
			 policy_done_fn done, void *arg, uint64_t *id)
{
	struct event_args a = {.msg = msg, .conn = conn};
	return dispatch_async("custom_lua send", push_conn_send, take_send, &a, r, done, arg, id);
}

int policy_lua_conn_send_batch(uint64_t conn, struct message *const *msgs, size_t n,
			       struct policy_result *r, policy_done_fn done, void *arg,
			       uint64_t *id)
{
	struct event_args a = {.msgs = (struct message **)msgs, .nmsgs = n, .conn = conn};
	return dispatch_async("custom_lua send_batch", push_conn_send_batch, take_send, &a, r, done,
			      arg, id);
}

void policy_lua_conn_close(uint64_t conn)
{
	if (!eng.L || !conn)
		return;
	conns_push(eng.L);
	if (lua_rawgeti(eng.L, -1, (lua_Integer)conn) == LUA_TTABLE &&
	    lua_getfield(eng.L, -1, "close") == LUA_TFUNCTION) {
		int ref;
		lua_State *co = thread_get(&ref);
		lua_xmove(eng.L, co, 1); /* close */
		lua_pushvalue(eng.L, -1);
		lua_xmove(eng.L, co, 1); /* the object */
		struct policy_result r;
		memset(&r, 0, sizeof(r));
		call_run("custom_lua close", co, 1, 1, NULL, NULL, &r);
		thread_put(co, ref);
	} else {
		lua_pop(eng.L, 1);
	}
	lua_pop(eng.L, 1);
	lua_pushnil(eng.L);
	lua_rawseti(eng.L, -2, (lua_Integer)conn);
	lua_pop(eng.L, 1);
}

void policy_smtp_connection_accepted(json_t *conn_meta, struct policy_result *r)
{
	struct event_args a = {.conn_meta = conn_meta};
	dispatch("smtp_server_connection_accepted", push_event_args, NULL, &a, r);
}

int policy_smtp_connection_accepted_async(json_t *conn_meta, struct policy_result *r,
					  policy_done_fn done, void *arg, uint64_t *id)
{
	struct event_args a = {.conn_meta = conn_meta};
	return dispatch_async("smtp_server_connection_accepted", push_event_args, NULL, &a, r, done,
			      arg, id);
}

/* Event arguments followed by one JSON value (as a Lua value), when set:
 * http_message_generated's auth_info. */
struct json_tail_args {
	struct event_args a; /* first: push_event_args reads it */
	json_t *tail;
};

static int push_json_tail_args(lua_State *co, void *ctx)
{
	struct json_tail_args *t = ctx;
	int n = push_event_args(co, &t->a);
	if (!t->tail)
		return n;
	lua_json__push(co, t->tail);
	return n + 1;
}

/* nil keeps kumod's list; a list of printable ASCII strings replaces the
 * entries of a->ext (in place: the caller holds the same array). */
static int take_ehlo(lua_State *co, int nres, void *ctx, struct policy_result *r)
{
	struct event_args *a = ctx;
	int idx = lua_gettop(co) - nres + 1;
	if (!a->ext || nres < 1 || lua_isnil(co, idx))
		return 0;
	const char *bad = NULL;
	if (lua_type(co, idx) != LUA_TTABLE)
		bad = "a list of extension strings or nil";
	json_t *list = json_array();
	for (lua_Integer i = 1; !bad && i <= (lua_Integer)lua_rawlen(co, idx); i++) {
		if (lua_rawgeti(co, idx, i) != LUA_TSTRING) {
			bad = "a list of extension strings";
		} else {
			size_t len;
			const char *s = lua_tolstring(co, -1, &len);
			for (size_t j = 0; j < len && !bad; j++)
				if (s[j] < 0x20 || s[j] > 0x7e)
					bad = "extensions of printable ASCII, one line each";
			if (!len || len > 200)
				bad = "extensions of 1 to 200 characters";
			if (!bad)
				json_array_append_new(list, json_stringn(s, len));
		}
		lua_pop(co, 1);
	}
	if (bad || json_array_size(list) > 64) {
		json_decref(list);
		r->status = POLICY_ERROR;
		snprintf(r->text, sizeof(r->text),
			 "smtp_server_ehlo: handler returned %s; expected %s (at most 64)",
			 luaL_typename(co, idx), bad ? bad : "fewer extensions");
		KTRACE(lua_error, "smtp_server_ehlo", r->text);
		return 1;
	}
	json_array_clear(a->ext);
	json_array_extend(a->ext, list);
	json_decref(list);
	a->ext_set = 1;
	return 1;
}

void policy_smtp_ehlo(const char *domain, json_t *conn_meta, json_t *extensions, json_t **out_ext,
		      struct policy_result *r)
{
	struct event_args a = {.str = {domain},
			       .nstr = 1,
			       .conn_meta = conn_meta,
			       .ext = extensions ? json_copy(extensions) : NULL};
	if (out_ext)
		*out_ext = NULL;
	dispatch("smtp_server_ehlo", push_event_args, take_ehlo, &a, r);
	if (r->status == POLICY_OK && out_ext && a.ext_set)
		*out_ext = json_incref(a.ext);
	json_decref(a.ext);
}

int policy_smtp_ehlo_async(const char *domain, json_t *conn_meta, json_t *extensions,
			   struct policy_result *r, policy_done_fn done, void *arg, uint64_t *id)
{
	struct event_args a = {
	    .str = {domain}, .nstr = 1, .conn_meta = conn_meta, .ext = extensions};
	return dispatch_async("smtp_server_ehlo", push_event_args, take_ehlo, &a, r, done, arg, id);
}

void policy_smtp_mail_from(const char *sender, json_t *conn_meta, struct policy_result *r)
{
	struct event_args a = {.str = {sender}, .nstr = 1, .address = 1, .conn_meta = conn_meta};
	dispatch("smtp_server_mail_from", push_event_args, NULL, &a, r);
}

int policy_smtp_rcpt_to_async(const char *recipient, json_t *conn_meta, struct policy_result *r,
			      policy_done_fn done, void *arg, uint64_t *id)
{
	struct event_args a = {.str = {recipient}, .nstr = 1, .address = 1, .conn_meta = conn_meta};
	return dispatch_async("smtp_server_rcpt_to", push_event_args, NULL, &a, r, done, arg, id);
}

int policy_smtp_mail_from_async(const char *sender, json_t *conn_meta, struct policy_result *r,
				policy_done_fn done, void *arg, uint64_t *id)
{
	struct event_args a = {.str = {sender}, .nstr = 1, .address = 1, .conn_meta = conn_meta};
	return dispatch_async("smtp_server_mail_from", push_event_args, NULL, &a, r, done, arg, id);
}

void policy_smtp_rcpt_to(const char *recipient, json_t *conn_meta, struct policy_result *r)
{
	struct event_args a = {.str = {recipient}, .nstr = 1, .address = 1, .conn_meta = conn_meta};
	dispatch("smtp_server_rcpt_to", push_event_args, NULL, &a, r);
}

void policy_smtp_data_command(json_t *conn_meta, struct policy_result *r)
{
	struct event_args a = {.conn_meta = conn_meta};
	dispatch("smtp_server_data_command", push_event_args, NULL, &a, r);
}

void policy_smtp_message_received(struct message *msg, json_t *conn_meta, struct policy_result *r)
{
	struct event_args a = {.msg = msg, .conn_meta = conn_meta};
	dispatch("smtp_server_message_received", push_event_args, NULL, &a, r);
}

void policy_smtp_data(struct message *msg, json_t *conn_meta, struct policy_result *r)
{
	struct event_args a = {.msg = msg, .conn_meta = conn_meta};
	dispatch("smtp_server_data", push_event_args, NULL, &a, r);
}

int policy_smtp_message_received_async(struct message *msg, json_t *conn_meta,
				       struct policy_result *r, policy_done_fn done, void *arg,
				       uint64_t *id)
{
	struct event_args a = {.msg = msg, .conn_meta = conn_meta};
	return dispatch_async("smtp_server_message_received", push_event_args, NULL, &a, r, done,
			      arg, id);
}

struct auth_plain_args {
	const char *str[3];
	json_t *conn_meta;
	int *ok;
};

static int push_auth_plain(lua_State *co, void *ctx)
{
	struct auth_plain_args *a = ctx;
	for (int i = 0; i < 3; i++)
		lua_pushstring(co, a->str[i]);
	lua_conn_meta__push(co, a->conn_meta);
	return 4;
}

/* true, or an AuthInfo table, accepts; anything else refuses. */
static int take_auth_plain(lua_State *co, int nres, void *ctx, struct policy_result *r)
{
	struct auth_plain_args *a = ctx;
	int t = nres >= 1 ? lua_type(co, -nres) : LUA_TNIL;
	*a->ok = (t == LUA_TBOOLEAN && lua_toboolean(co, -nres)) || t == LUA_TTABLE;
	return 1;
}

void policy_smtp_auth_plain(const char *authz, const char *authc, const char *password,
			    json_t *conn_meta, int *ok, struct policy_result *r)
{
	*ok = 0;
	struct auth_plain_args a = {
	    .str = {authz, authc, password}, .conn_meta = conn_meta, .ok = ok};
	dispatch("smtp_server_auth_plain", push_auth_plain, take_auth_plain, &a, r);
	if (r->status != POLICY_OK)
		*ok = 0;
}

static int take_listener_domain(lua_State *co, int nres, void *ctx, struct policy_result *r)
{
	struct event_args *a = ctx;
	if (nres < 1 || lua_isnil(co, -nres))
		return 0;
	if (lua_kumo__listener_domain(co, -nres, &a->ld->relay_to, &a->ld->relay_from,
				      &a->ld->relay_from_authz)) {
		lua_kumo__listener_domain_logs(co, -nres, &a->ld->log_arf, &a->ld->log_oob);
		a->ld->found = 1;
		return 1;
	}
	r->status = POLICY_ERROR;
	snprintf(r->text, sizeof(r->text),
		 "get_listener_domain: handler returned a %s; expected "
		 "kumo.make_listener_domain{...} or nil",
		 luaL_typename(co, -nres));
	KTRACE(lua_error, "get_listener_domain", r->text);
	return 1;
}

void policy_get_listener_domain(const char *domain, const char *listener, json_t *conn_meta,
				struct policy_listener_domain *out, struct policy_result *r)
{
	memset(out, 0, sizeof(*out));
	struct event_args a = {
	    .str = {domain, listener}, .nstr = 2, .conn_meta = conn_meta, .ld = out};
	dispatch("get_listener_domain", push_event_args, take_listener_domain, &a, r);
}

/* --- configuration events ---------------------------------------------------- */

/* A handler result: nil (next handler / defaults) or a table made by the
 * matching kumo.make_*{} builder, returned as JSON. */
static int take_tagged(lua_State *co, int nres, void *ctx, struct policy_result *r)
{
	struct event_args *a = ctx;
	int idx = lua_gettop(co) - nres + 1;
	if (nres < 1 || lua_isnil(co, idx))
		return 0;
	int ok = 0;
	if (lua_type(co, idx) == LUA_TTABLE && lua_getmetatable(co, idx)) {
		luaL_getmetatable(co, a->mt);
		ok = lua_rawequal(co, -1, -2);
		lua_pop(co, 2);
	}
	if (ok) {
		char err[256] = "";
		lua_pushvalue(co, idx);
		lua_pushnil(co);
		lua_setmetatable(co, -2); /* plain table for the converter */
		*a->out = lua_json__to_json(co, -1, err, sizeof(err));
		lua_pop(co, 1);
		/* restore the tag: the table may be cached by the policy */
		luaL_getmetatable(co, a->mt);
		lua_setmetatable(co, idx);
		if (*a->out)
			return 1;
		r->status = POLICY_ERROR;
		snprintf(r->text, sizeof(r->text), "%s: %s", a->want, err);
		return 1;
	}
	r->status = POLICY_ERROR;
	snprintf(r->text, sizeof(r->text), "handler returned a %s; expected %s or nil",
		 luaL_typename(co, idx), a->want);
	KTRACE(lua_error, a->want, r->text);
	return 1;
}

static void dispatch_tagged(const char *event, struct event_args *a, json_t **out,
			    struct policy_result *r)
{
	*out = NULL;
	a->out = out;
	dispatch(event, push_event_args, take_tagged, a, r);
	if (r->status != POLICY_OK && *out) {
		json_decref(*out);
		*out = NULL;
	}
}

void policy_get_queue_config(const char *domain, const char *tenant, const char *campaign,
			     const char *routing_domain, json_t **out, struct policy_result *r)
{
	struct event_args a = {.str = {domain, tenant, campaign, routing_domain},
			       .nstr = 4,
			       .mt = LUA_KUMO_QUEUE_CONFIG_MT,
			       .want = "kumo.make_queue_config{...}"};
	dispatch_tagged("get_queue_config", &a, out, r);
}

void policy_get_egress_path_config(const char *routing_domain, const char *egress_source,
				   const char *site_name, json_t **out, struct policy_result *r)
{
	struct event_args a = {.str = {routing_domain, egress_source, site_name},
			       .nstr = 3,
			       .mt = LUA_KUMO_EGRESS_PATH_MT,
			       .want = "kumo.make_egress_path{...}"};
	dispatch_tagged("get_egress_path_config", &a, out, r);
}

void policy_get_egress_pool(const char *name, json_t **out, struct policy_result *r)
{
	struct event_args a = {.str = {name},
			       .nstr = 1,
			       .mt = LUA_KUMO_EGRESS_POOL_MT,
			       .want = "kumo.make_egress_pool{...}"};
	dispatch_tagged("get_egress_pool", &a, out, r);
}

void policy_get_egress_source(const char *name, json_t **out, struct policy_result *r)
{
	struct event_args a = {.str = {name},
			       .nstr = 1,
			       .mt = LUA_KUMO_EGRESS_SOURCE_MT,
			       .want = "kumo.make_egress_source{...}"};
	dispatch_tagged("get_egress_source", &a, out, r);
}

/* --- HTTP listener events -------------------------------------------------- */

/* Stops the series once a handler delayed the message. */
static int take_throttle(lua_State *co, int nres, void *ctx, struct policy_result *r)
{
	(void)co;
	(void)nres;
	(void)ctx;
	(void)r;
	return msg_delay_ms > 0;
}

void policy_throttle_insert_ready_queue(struct message *msg, uint64_t *delay_ms,
					struct policy_result *r)
{
	struct event_args a = {.msg = msg};
	msg_delay_ms = 0;
	dispatch(EV_THROTTLE_INSERT, push_event_args, take_throttle, &a, r);
	*delay_ms = r->status == POLICY_OK ? msg_delay_ms : 0;
	msg_delay_ms = 0;
}

void policy_http_message_generated(struct message *msg, json_t *auth_info, struct policy_result *r)
{
	struct json_tail_args t = {.a = {.msg = msg}, .tail = auth_info};
	dispatch("http_message_generated", push_json_tail_args, NULL, &t, r);
}

/* Arguments of the Basic (user, password) and Bearer (token) checks. */
struct auth_basic_args {
	const char *user, *password, *token;
	int *ok;
};

static int push_auth_basic(lua_State *co, void *ctx)
{
	struct auth_basic_args *a = ctx;
	lua_pushstring(co, a->user);
	lua_pushstring(co, a->password);
	return 2;
}

/* Only a true result accepts; anything else (false, nil, a string) refuses.
 * Shared by the Basic and Bearer events. */
static int take_auth_basic(lua_State *co, int nres, void *ctx, struct policy_result *r)
{
	struct auth_basic_args *a = ctx;
	*a->ok = nres >= 1 && lua_isboolean(co, -nres) && lua_toboolean(co, -nres);
	return 1;
}

void policy_http_validate_auth_basic(const char *user, const char *password, int *ok,
				     struct policy_result *r)
{
	*ok = 0;
	struct auth_basic_args a = {.user = user, .password = password, .ok = ok};
	dispatch("http_server_validate_auth_basic", push_auth_basic, take_auth_basic, &a, r);
	if (r->status != POLICY_OK)
		*ok = 0;
}

static int push_auth_bearer(lua_State *co, void *ctx)
{
	lua_pushstring(co, ((struct auth_basic_args *)ctx)->token);
	return 1;
}

void policy_http_validate_auth_bearer(const char *token, int *ok, struct policy_result *r)
{
	*ok = 0;
	struct auth_basic_args a = {.token = token, .ok = ok};
	dispatch("http_server_validate_auth_bearer", push_auth_bearer, take_auth_basic, &a, r);
	if (r->status != POLICY_OK)
		*ok = 0;
}
