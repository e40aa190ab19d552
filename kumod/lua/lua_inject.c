/* SPDX-License-Identifier: Apache-2.0 */
/* Messages made by policy (KumoMTA's kumo.make_message, kumo.inject_message
 * and kumo.api.inject.inject_v1; docs/policy-api.md, "Messages made by
 * policy"). inject_message takes the path of a received message: queue
 * configuration checked first (refused, never routed under defaults), spool
 * store, Reception record, scheduled queue. In an event that may wait the
 * handler waits for the store and a failure raises; elsewhere (a synchronous
 * event such as a log_disposition hook) the store completes after the call
 * returns and a failure is logged at ERROR (lua_inject_failed), naming the
 * message. inject_v1 runs the HTTP injection code itself (ctl/http_inject.h). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/xalloc.h"
#include "ctl/http_inject.h"
#include "io/loop.h"
#include "ktrace.h"
#include "lua/lua_int.h"
#include "proto/inject_req.h"
#include "proto/smtp_cmd.h"
#include "queue/queue.h"
#include "spool/logrec.h"
#include "spool/message.h"
#include "spool/spool.h"
#include "spool/timeline.h"

#define INJECT_PROTOCOL "Lua" /* the Reception record's reception_protocol */

/* The envelope address at idx as MAIL/RCPT would take it (UTF-8 allowed; ""
 * is the null sender); raises naming the argument otherwise. */
static const char *check_address(lua_State *L, int idx, int is_sender, const char *what)
{
	size_t len;
	const char *a = luaL_checklstring(L, idx, &len);
	if (is_sender && len == 0)
		return a;
	char path[1100];
	struct smtp_mailbox mb;
	struct smtp_reply_err err;
	size_t used = 0;
	int n = snprintf(path, sizeof(path), "<%s>", a);
	if (len > 1000 || memchr(a, 0, len) || n < 0 ||
	    smtp_path_parse(path, (size_t)n, is_sender, 1, &mb, &used, &err) != 0 ||
	    used != (size_t)n || (!is_sender && mb.postmaster))
		luaL_error(L, "kumo.make_message: %s '%s' is not a valid envelope address", what,
			   a);
	return a;
}

/* kumo.make_message(sender, recipient, body): a message in memory only,
 * empty meta, until kumo.inject_message takes it. */
static int l_make_message(lua_State *L)
{
	const char *sender = check_address(L, 1, 1, "sender");
	const char *rcpt = check_address(L, 2, 0, "recipient");
	size_t len;
	const char *body = luaL_checklstring(L, 3, &len);
	struct message *m = message_new();
	message_set_sender(m, sender);
	message_add_recipient(m, rcpt);
	message_set_data(m, body, len);
	m->policy_made = 1;
	lua_message__push(L, m);
	message_unref(m); /* the userdata holds it */
	KTRACE(lua_inject, m->id, rcpt, "made", "");
	return 1;
}

/* --- kumo.inject_message ----------------------------------------------------------- */

/* One store in flight; call is the waiting event call (0: nobody waits). */
struct inject_store {
	struct message *m;
	uint64_t call;
};

static void inject_stored(void *ctx, int err)
{
	struct inject_store *s = ctx;
	struct message *m = s->m;
	const char *rcpt = m->recipients[0];
	if (err) {
		spool_remove(m->id, NULL, NULL);
		KTRACE(lua_inject, m->id, rcpt, "spool_error", strerror(-err));
		if (!s->call || !lua_engine__thread(s->call))
			KTRACE(lua_inject_failed, m->id, rcpt, strerror(-err));
	} else {
		struct logrec_response resp = {.code = 250, .content = "OK"};
		logrec_log("Reception", m, NULL, &resp, NULL, NULL, NULL, NULL, NULL,
			   INJECT_PROTOCOL);
		queue_insert(m, "Received");
		KTRACE(lua_inject, m->id, rcpt, "ok", "");
		MSG_TIMELINE(m->id, "Reception", "kumo.inject_message for %s", rcpt);
	}
	lua_State *co = s->call ? lua_engine__thread(s->call) : NULL;
	if (co) {
		if (err)
			lua_pushfstring(co, "kumo.inject_message: message %s: spool error: %s",
					m->id, strerror(-err));
		else
			lua_pushnil(co);
		lua_engine__wake(s->call, 1);
	}
	message_unref(m);
	free(s);
}

static int inject_done_k(lua_State *L, int status, lua_KContext ctx)
{
	(void)status;
	(void)ctx;
	if (!lua_isnil(L, -1))
		return lua_error(L);
	return 0;
}

/* Raises "kumo.inject_message: <why>" after tracing the refusal. */
static int inject_refuse(lua_State *L, struct message *m, const char *outcome, const char *why)
{
	KTRACE(lua_inject, m->id, m->nrecipients ? m->recipients[0] : "", outcome, why);
	return luaL_error(L, "kumo.inject_message: message %s: %s", m->id, why);
}

/* Everything that can refuse before the store; 0 or raises. */
static void inject_check(lua_State *L, struct message *m)
{
	char why[800];
	if (!m->policy_made)
		inject_refuse(L, m, "refused",
			      "not a message made by kumo.make_message, or already injected "
			      "(injecting a received or queued message would deliver it twice)");
	if (!m->nrecipients)
		inject_refuse(L, m, "refused", "the message has no recipient");
	if (kumod_shutting_down())
		inject_refuse(L, m, "shutting_down", "shutting down");
	if (!spool_is_open())
		inject_refuse(L, m, "refused", "no spool is defined (kumo.define_spool)");
	if (spool_space_check(why, sizeof(why)) < 0)
		inject_refuse(L, m, "min_free_space", why);
	int rc = message_load_spill(m);
	if (rc < 0)
		inject_refuse(L, m, "error", strerror(-rc));
	if (queue_check_config(m, INJECT_PROTOCOL, NULL, why, sizeof(why)) != 0)
		inject_refuse(L, m, "queue_config_error", why);
}

/* kumo.inject_message(msg[, deferred_spool]) */
static int l_inject_message(lua_State *L)
{
	struct message *m = lua_message__check(L, 1);
	int deferred = lua_toboolean(L, 2);
	inject_check(L, m);
	const char *queue = message_get_meta_str(m, "queue");
	m->policy_made = 0;
	if (queue && strcmp(queue, "null") == 0) { /* as reception: gone, successfully */
		KTRACE(lua_inject, m->id, m->recipients[0], "ok", "null queue");
		return 0;
	}
	int wait = lua_engine__can_wait(L);
	struct inject_store *s = xmalloc(sizeof(*s));
	s->m = message_ref(m);
	s->call = wait ? lua_engine__wait_begin(L, "kumo.inject_message") : 0;
	KTRACE(lua_inject, m->id, m->recipients[0], "storing", wait ? "waits" : "background");
	if (deferred)
		spool_store_deferred(m, inject_stored, s);
	else
		spool_store(m, inject_stored, s);
	if (!wait)
		return 0;
	return lua_engine__wait(L, 0, inject_done_k);
}

/* --- kumo.api.inject.inject_v1 ----------------------------------------------------- */

/* One inject_v1 call: the answer may come inside http_inject_local (kept
 * in result until the caller returns it) or later (the handler waits). */
struct inject_v1 {
	uint64_t call;
	int waiting;
	json_t *result;
};

static void inject_v1_done(void *arg, json_t *result)
{
	struct inject_v1 *v = arg;
	if (!v->waiting) {
		v->result = json_incref(result);
		return;
	}
	lua_State *co = lua_engine__thread(v->call);
	if (co) { /* else the event call was dropped; what was spooled is delivered */
		lua_json__push(co, result);
		lua_engine__wake(v->call, 1);
	}
	free(v);
}

static int inject_v1_k(lua_State *L, int status, lua_KContext ctx)
{
	(void)status;
	(void)ctx;
	return 1;
}

/* kumo.api.inject.inject_v1(request): the /api/inject/v1 request shape;
 * returns {success_count, fail_count, failed_recipients, errors}; a
 * malformed request or a daemon that cannot accept mail raises. */
static int l_inject_v1(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	char err[INJECT_REQ_MAX_ERROR];
	json_t *req = lua_json__to_json(L, 1, err, sizeof(err));
	if (!req)
		return luaL_error(L, "kumo.api.inject.inject_v1: %s", err);
	if (!json_is_object(req)) {
		json_decref(req);
		return luaL_error(L, "kumo.api.inject.inject_v1: the request must be a table "
				     "with named fields");
	}
	uint64_t call = lua_engine__wait_begin(L, "kumo.api.inject.inject_v1");
	struct inject_v1 *v = xcalloc(1, sizeof(*v));
	v->call = call;
	int rc = http_inject_local(req, 0, inject_v1_done, v, err, sizeof(err));
	json_decref(req);
	if (rc <= 0) {
		json_t *result = v->result;
		free(v);
		if (rc < 0)
			return luaL_error(L, "kumo.api.inject.inject_v1: %s", err);
		lua_json__push(L, result); /* answered inside the call: nothing was stored */
		json_decref(result);
		return 1;
	}
	v->waiting = 1;
	return lua_engine__wait(L, 0, inject_v1_k);
}

/* --- registration ------------------------------------------------------------------ */

void lua_inject__register(lua_State *L)
{
	lua_pushcfunction(L, l_make_message);
	lua_setfield(L, -2, "make_message");
	lua_pushcfunction(L, l_inject_message);
	lua_setfield(L, -2, "inject_message");
	if (lua_getfield(L, -1, "api") != LUA_TTABLE) {
		lua_pop(L, 1);
		lua_newtable(L);
		lua_pushvalue(L, -1);
		lua_setfield(L, -3, "api");
	}
	lua_newtable(L);
	lua_pushcfunction(L, l_inject_v1);
	lua_setfield(L, -2, "inject_v1");
	lua_api__guard_table(L, -1, "kumo.api.inject");
	lua_setfield(L, -2, "inject");
	lua_pop(L, 1);
}
