/* SPDX-License-Identifier: Apache-2.0 */
/* kumod's mail catcher from Lua (a kumod extension, not KumoMTA API):
 * kumo.start_mail_catcher{dir, max_messages, max_bytes, ui_dir, segment_bytes}
 * opens the store
 * served under /api/v1/ by kumo.start_http_listener, and
 * kumo.mail_catcher_capture(msg) stores a received message there (the
 * sink calls it from smtp_server_message_received). */
#include <errno.h>
#include <string.h>

#include "ctl/catcher.h"
#include "io/loop.h"
#include "lua/lua_int.h"
#include "policy.h"
#include "smtp/transcript.h"
#include "spool/message.h"

static uint64_t check_count(lua_State *L, int idx, const char *what)
{
	int isint = 0;
	lua_Integer v = lua_type(L, idx) == LUA_TNUMBER ? lua_tointegerx(L, idx, &isint) : 0;
	if (!isint || v < 0)
		luaL_error(L, "%s: expected a non-negative integer, got %s", what,
			   isint ? "a negative number" : luaL_typename(L, idx));
	return (uint64_t)v;
}

static int l_start_mail_catcher(lua_State *L)
{
	static const char *const keys[] = {"dir", "max_messages", "max_bytes", "ui_dir",
					   "segment_bytes"};
	luaL_checktype(L, 1, LUA_TTABLE);
	struct catcher_config cfg = {.max_messages = 10000, .max_bytes = 1ull << 30};
	lua_pushnil(L);
	while (lua_next(L, 1)) {
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
		if (!k)
			return luaL_error(L, "start_mail_catcher: keys must be strings");
		if (strcmp(k, "dir") == 0) {
			if (lua_type(L, -1) != LUA_TSTRING)
				return luaL_error(L, "start_mail_catcher: dir: expected a string");
			cfg.dir = lua_tostring(L, -1); /* the table keeps it alive */
		} else if (strcmp(k, "ui_dir") == 0) {
			if (lua_type(L, -1) != LUA_TSTRING)
				return luaL_error(L,
						  "start_mail_catcher: ui_dir: expected a string");
			cfg.ui_dir = lua_tostring(L, -1);
		} else if (strcmp(k, "max_messages") == 0) {
			cfg.max_messages = check_count(L, -1, "start_mail_catcher: max_messages");
		} else if (strcmp(k, "max_bytes") == 0) {
			cfg.max_bytes = check_count(L, -1, "start_mail_catcher: max_bytes");
		} else if (strcmp(k, "segment_bytes") == 0) {
			cfg.segment_bytes = check_count(L, -1, "start_mail_catcher: segment_bytes");
			if (cfg.segment_bytes < 4096 || cfg.segment_bytes > (1ull << 32))
				return luaL_error(L, "start_mail_catcher: segment_bytes: expected "
						     "4096 to 4294967296");
		} else {
			return lua_api__unknown_key(L, "start_mail_catcher", k, keys,
						    sizeof(keys) / sizeof(keys[0]));
		}
		lua_pop(L, 1);
	}
	if (lua_engine__validating())
		return 0;
	char err[512] = "";
	if (catcher_start(kumod_loop(), &cfg, err, sizeof(err)) != 0)
		return luaL_error(L, "%s", err[0] ? err : "start_mail_catcher: failed");
	/* each message carries its SMTP conversation */
	if (smtp_transcript_enable(SMTP_TRANSCRIPT_CATCHER) != 0)
		return luaL_error(L, "start_mail_catcher: no room for the SMTP transcript "
				     "subscriber (smtp_trace list full)");
	return 0;
}

static int l_mail_catcher_capture(lua_State *L)
{
	struct message *m = lua_message__body(L, 1, "mail_catcher_capture");
	if (lua_engine__validating()) { /* --validate: the store is not opened */
		lua_pushstring(L, m->id);
		return 1;
	}
	char id[64];
	if (catcher_capture(m, id, sizeof(id)) == -ENOTCONN)
		return luaL_error(L, "mail_catcher_capture: call kumo.start_mail_catcher first");
	lua_pushstring(L, id);
	return 1;
}

/* kumo.mail_catcher_set_faults(json_text or nil): the sink's fault plan
 * (validated; raises with the reason). */
static int l_mail_catcher_set_faults(lua_State *L)
{
	json_t *plan = NULL;
	if (!lua_isnoneornil(L, 1)) {
		size_t n;
		const char *text = luaL_checklstring(L, 1, &n);
		json_error_t je;
		plan = json_loadb(text, n, 0, &je);
		if (!plan)
			return luaL_error(L, "mail_catcher_set_faults: invalid JSON: %s (line %d)",
					  je.text, je.line);
	}
	char err[300];
	if (catcher_faults_set(plan, err, sizeof(err)) != 0) {
		json_decref(plan);
		return luaL_error(L, "mail_catcher_set_faults: %s", err);
	}
	return 0;
}

/* kumo.mail_catcher_faults([known_version]) -> version, seconds since the
 * plan was set, and the plan table unless it is known_version's (nil when
 * there is no plan): the sink converts a plan once, not per event. */
static int l_mail_catcher_faults(lua_State *L)
{
	uint64_t version;
	double age;
	json_t *plan = catcher_faults_get(&version, &age);
	lua_Integer known = luaL_optinteger(L, 1, -1);
	lua_pushinteger(L, (lua_Integer)version);
	lua_pushnumber(L, age);
	if (known == (lua_Integer)version)
		return 2;
	lua_json__push(L, plan);
	return 3;
}

/* kumo.delay_reply(ms | "hang"): hold the reply of the current
 * smtp_server_connection_accepted/ehlo/mail_from/rcpt_to/data_command/
 * message_received handler (with or without kumo.reject)
 * for ms milliseconds (at most 10 minutes), or never answer ("hang": the
 * session is closed at client_timeout without a reply). */
static int l_delay_reply(lua_State *L)
{
	uint32_t ms;
	if (lua_type(L, 1) == LUA_TSTRING && strcmp(lua_tostring(L, 1), "hang") == 0) {
		ms = POLICY_HANG;
	} else {
		int isint = 0;
		lua_Integer v = lua_tointegerx(L, 1, &isint);
		if (!isint || v < 0 || v > 600000)
			return luaL_error(L, "delay_reply: expected milliseconds 0..600000 or "
					     "\"hang\"");
		ms = (uint32_t)v;
	}
	if (lua_engine__delay_reply(L, ms) != 0)
		return luaL_error(L, "delay_reply: only inside an event handler");
	return 0;
}

void lua_catcher__register(lua_State *L)
{
	lua_pushcfunction(L, l_delay_reply);
	lua_setfield(L, -2, "delay_reply");
	lua_pushcfunction(L, l_mail_catcher_set_faults);
	lua_setfield(L, -2, "mail_catcher_set_faults");
	lua_pushcfunction(L, l_mail_catcher_faults);
	lua_setfield(L, -2, "mail_catcher_faults");
	lua_pushcfunction(L, l_start_mail_catcher);
	lua_setfield(L, -2, "start_mail_catcher");
	lua_pushcfunction(L, l_mail_catcher_capture);
	lua_setfield(L, -2, "mail_catcher_capture");
}
