/* SPDX-License-Identifier: Apache-2.0 */
/* Lua classes handed to event handlers: Message (a reference to a struct
 * message), address objects (.user, .domain, .email) and conn_meta (a
 * reference to the connection's JSON metadata). Userdata hold references,
 * never borrowed pointers, so a handler keeping one alive stays safe. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/ascii.h"
#include "base/buf.h"
#include "ktrace.h"
#include "lua/lua_int.h"
#include "proto/arf.h"
#include "proto/dsn.h"
#include "proto/duration.h"
#include "proto/mime_build.h"
#include "proto/rfc5322.h"
#include "proto/smtp_cmd.h"
#include "queue/queue.h"
#include "queue/tzdb.h"
#include "proto/addr_list.h"
#include "proto/sched_spec.h"
#include "spool/message.h"
#include "spool/timeline.h"

/* --- address ------------------------------------------------------------- */

struct lua_address {
	size_t len;
	size_t at; /* index of the last '@', or len when there is none */
	char email[];
};

void lua_address__push(lua_State *L, const char *email)
{
	size_t len = strlen(email);
	struct lua_address *a = lua_newuserdatauv(L, sizeof(*a) + len + 1, 0);
	a->len = len;
	memcpy(a->email, email, len + 1);
	const char *at = strrchr(email, '@');
	a->at = at ? (size_t)(at - email) : len;
	/* the domain lower-cased (ASCII), the local part as received: domains
	 * compare case-insensitively, so policies see one spelling */
	if (a->at < len)
		ascii_lower(a->email + a->at + 1);
	luaL_setmetatable(L, LUA_KUMO_ADDRESS_MT);
}

static int address_missing(lua_State *L, const char *k)
{
	lua_createtable(L, 0, 3); /* the names, for the nearest-name hint */
	lua_pushboolean(L, 1);
	lua_setfield(L, -2, "user");
	lua_pushboolean(L, 1);
	lua_setfield(L, -2, "domain");
	lua_pushboolean(L, 1);
	lua_setfield(L, -2, "email");
	return lua_api__missing_member(L, "address", k, lua_gettop(L));
}

static int address_index(lua_State *L)
{
	struct lua_address *a = luaL_checkudata(L, 1, LUA_KUMO_ADDRESS_MT);
	const char *k = luaL_checkstring(L, 2);
	if (strcmp(k, "email") == 0)
		lua_pushlstring(L, a->email, a->len);
	else if (strcmp(k, "user") == 0)
		lua_pushlstring(L, a->email, a->at);
	else if (strcmp(k, "domain") == 0)
		lua_pushlstring(L, a->at < a->len ? a->email + a->at + 1 : "",
				a->at < a->len ? a->len - a->at - 1 : 0);
	else
		return address_missing(L, k);
	return 1;
}

static int address_tostring(lua_State *L)
{
	struct lua_address *a = luaL_checkudata(L, 1, LUA_KUMO_ADDRESS_MT);
	lua_pushlstring(L, a->email, a->len);
	return 1;
}

static int address_eq(lua_State *L)
{
	struct lua_address *a = luaL_checkudata(L, 1, LUA_KUMO_ADDRESS_MT);
	struct lua_address *b = luaL_checkudata(L, 2, LUA_KUMO_ADDRESS_MT);
	lua_pushboolean(L, a->len == b->len && memcmp(a->email, b->email, a->len) == 0);
	return 1;
}

static const luaL_Reg address_meta[] = {
    {"__index", address_index},
    {"__tostring", address_tostring},
    {"__eq", address_eq},
    {NULL, NULL},
};

/* --- conn_meta ----------------------------------------------------------- */

struct lua_conn_meta {
	json_t *meta; /* own reference, NULL once closed */
};

/* Registry key of a weak-valued table: conn_meta object -> its userdata. */
static const char conn_meta_cache_key;

/* A connection's events share one userdata instead of allocating (and later
 * finalizing) one per event: three per message on the sink. An entry is
 * valid only while its userdata still holds that object (the reference it
 * holds also keeps the address from being reused while it does). */
void lua_conn_meta__push(lua_State *L, json_t *meta)
{
	lua_rawgetp(L, LUA_REGISTRYINDEX, &conn_meta_cache_key);
	if (lua_rawgetp(L, -1, meta) == LUA_TUSERDATA) {
		struct lua_conn_meta *hit = lua_touserdata(L, -1);
		if (hit->meta == meta) {
			lua_remove(L, -2);
			return;
		}
	}
	lua_pop(L, 1);
	struct lua_conn_meta *c = lua_newuserdatauv(L, sizeof(*c), 0);
	c->meta = NULL;
	luaL_setmetatable(L, LUA_KUMO_CONN_META_MT);
	c->meta = json_incref(meta);
	lua_pushvalue(L, -1);
	lua_rawsetp(L, -3, meta);
	lua_remove(L, -2);
}

static json_t *check_conn_meta(lua_State *L)
{
	struct lua_conn_meta *c = luaL_checkudata(L, 1, LUA_KUMO_CONN_META_MT);
	if (!c->meta)
		luaL_error(L, "conn_meta object is closed");
	return c->meta;
}

static int conn_meta_get_meta(lua_State *L)
{
	json_t *meta = check_conn_meta(L);
	const char *k = luaL_checkstring(L, 2);
	lua_json__push(L, json_object_get(meta, k));
	return 1;
}

static int conn_meta_set_meta(lua_State *L)
{
	json_t *meta = check_conn_meta(L);
	const char *k = luaL_checkstring(L, 2);
	luaL_checkany(L, 3);
	if (lua_isnil(L, 3)) {
		json_object_del(meta, k);
		return 0;
	}
	char err[200];
	json_t *v = lua_json__to_json(L, 3, err, sizeof(err));
	if (!v)
		return luaL_error(L, "set_meta('%s'): %s", k, err);
	if (json_object_set_new(meta, k, v) != 0)
		return luaL_error(L, "set_meta: key is not valid UTF-8");
	return 0;
}

static int conn_meta_gc(lua_State *L)
{
	struct lua_conn_meta *c = luaL_checkudata(L, 1, LUA_KUMO_CONN_META_MT);
	json_decref(c->meta);
	c->meta = NULL;
	return 0;
}

static const luaL_Reg conn_meta_methods[] = {
    {"get_meta", conn_meta_get_meta},
    {"set_meta", conn_meta_set_meta},
    {NULL, NULL},
};

static const luaL_Reg conn_meta_meta[] = {
    {"__gc", conn_meta_gc},
    {"__close", conn_meta_gc},
    {NULL, NULL},
};

/* --- Message ------------------------------------------------------------- */

struct lua_message {
	struct message *m; /* own reference, NULL once closed */
};

void lua_message__push(lua_State *L, struct message *m)
{
	struct lua_message *u = lua_newuserdatauv(L, sizeof(*u), 0);
	u->m = NULL;
	luaL_setmetatable(L, LUA_KUMO_MESSAGE_MT);
	u->m = message_ref(m);
}

static struct message *check_msg(lua_State *L)
{
	struct lua_message *u = luaL_checkudata(L, 1, LUA_KUMO_MESSAGE_MT);
	if (!u->m)
		luaL_error(L, "message object is closed");
	return u->m;
}

/* A method that reads the body: a body streamed to the spool during
 * reception (data_spill_threshold) is read back into memory first. */
static struct message *check_msg_body(lua_State *L, const char *method)
{
	struct message *m = check_msg(L);
	int rc = message_load_spill(m);
	if (rc < 0)
		luaL_error(L, "msg:%s: reading the streamed body back failed: %s", method,
			   strerror(-rc));
	return m;
}

struct message *lua_message__body(lua_State *L, int idx, const char *method)
{
	struct message *m = lua_message__check(L, idx);
	int rc = message_load_spill(m);
	if (rc < 0)
		luaL_error(L, "%s: reading the streamed body back failed: %s", method,
			   strerror(-rc));
	return m;
}

struct message *lua_message__check(lua_State *L, int idx)
{
	struct lua_message *u = luaL_checkudata(L, idx, LUA_KUMO_MESSAGE_MT);
	if (!u->m)
		luaL_error(L, "message object is closed");
	return u->m;
}

static int msg_gc(lua_State *L)
{
	struct lua_message *u = luaL_checkudata(L, 1, LUA_KUMO_MESSAGE_MT);
	if (u->m) {
		message_unref(u->m);
		u->m = NULL;
	}
	return 0;
}

static int msg_tostring(lua_State *L)
{
	struct lua_message *u = luaL_checkudata(L, 1, LUA_KUMO_MESSAGE_MT);
	lua_pushfstring(L, "Message(%s)", u->m ? u->m->id : "closed");
	return 1;
}

static int msg_id(lua_State *L)
{
	lua_pushstring(L, check_msg(L)->id);
	return 1;
}

static int msg_sender(lua_State *L)
{
	struct message *m = check_msg(L);
	lua_address__push(L, m->sender ? m->sender : "");
	return 1;
}

static int msg_recipient(lua_State *L)
{
	struct message *m = check_msg(L);
	if (m->nrecipients)
		lua_address__push(L, m->recipients[0]);
	else
		lua_pushnil(L);
	return 1;
}

static int msg_recipient_list(lua_State *L)
{
	struct message *m = check_msg(L);
	lua_createtable(L, (int)m->nrecipients, 0);
	for (size_t i = 0; i < m->nrecipients; i++) {
		lua_address__push(L, m->recipients[i]);
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
	return 1;
}

static int msg_set_meta(lua_State *L)
{
	struct message *m = check_msg(L);
	const char *k = luaL_checkstring(L, 2);
	luaL_checkany(L, 3);
	char err[200];
	json_t *v = lua_json__to_json(L, 3, err, sizeof(err));
	if (!v)
		return luaL_error(L, "set_meta('%s'): %s", k, err);
	message_set_meta(m, k, v);
	return 0;
}

static int msg_get_meta(lua_State *L)
{
	struct message *m = check_msg(L);
	lua_json__push(L, message_get_meta(m, luaL_checkstring(L, 2)));
	return 1;
}

static int msg_get_data(lua_State *L)
{
	struct message *m = check_msg_body(L, "get_data");
	lua_pushlstring(L, m->data.data ? m->data.data : "", m->data.len);
	return 1;
}

static int msg_set_data(lua_State *L)
{
	struct message *m = check_msg(L);
	size_t len;
	const char *s = luaL_checklstring(L, 2, &len);
	message_set_data(m, s, len);
	return 0;
}

/* Header names and values arrive from Lua as counted strings; an embedded
 * NUL would hide the rest from the C side, so it is refused here. */
static const char *check_header_str(lua_State *L, int idx, const char *fn, const char *what)
{
	size_t len;
	const char *s = luaL_checklstring(L, idx, &len);
	if (memchr(s, 0, len))
		luaL_error(L, "%s: header %s contains a NUL byte", fn, what);
	return s;
}

static int header_add(lua_State *L, const char *fn,
		      int (*add)(struct message *, const char *, const char *))
{
	struct message *m = check_msg(L);
	const char *name = check_header_str(L, 2, fn, "name");
	const char *value = check_header_str(L, 3, fn, "value");
	if (add(m, name, value) != 0)
		return luaL_error(L,
				  "%s: invalid header '%s' (names are printable ASCII without "
				  "':'; CR, LF and NUL are not allowed in names or values)",
				  fn, name);
	return 0;
}

static int msg_prepend_header(lua_State *L)
{
	return header_add(L, "prepend_header", message_prepend_header);
}

static int msg_append_header(lua_State *L)
{
	return header_add(L, "append_header", message_append_header);
}

static int msg_get_first_named_header_value(lua_State *L)
{
	struct message *m = check_msg(L);
	const char *name = luaL_checkstring(L, 2);
	struct buf out;
	buf_init(&out);
	if (message_get_first_named_header_value(m, name, &out))
		lua_pushlstring(L, out.data ? out.data : "", out.len);
	else
		lua_pushnil(L);
	buf_free(&out);
	return 1;
}

struct header_list {
	lua_State *L;
	lua_Integer n;
};

static void header_list_add(const char *v, size_t n, void *ctx)
{
	struct header_list *hl = ctx;
	lua_pushlstring(hl->L, v, n);
	lua_rawseti(hl->L, -2, ++hl->n);
}

static int msg_get_all_named_header_values(lua_State *L)
{
	struct message *m = check_msg(L);
	const char *name = luaL_checkstring(L, 2);
	struct header_list hl = {L, 0};
	lua_newtable(L);
	message_get_all_named_header_values(m, name, header_list_add, &hl);
	return 1;
}

static int msg_remove_all_named_headers(lua_State *L)
{
	struct message *m = check_msg(L);
	message_remove_all_named_headers(m, luaL_checkstring(L, 2));
	return 0;
}

static int msg_import_x_headers(lua_State *L)
{
	struct message *m = check_msg(L);
	if (lua_isnoneornil(L, 2)) {
		message_import_x_headers(m, NULL, 0);
		return 0;
	}
	luaL_checktype(L, 2, LUA_TTABLE);
	size_t n = lua_rawlen(L, 2);
	/* the strings stay alive on the stack while C reads them */
	const char **names = lua_newuserdatauv(L, (n ? n : 1) * sizeof(*names), 0);
	for (size_t i = 0; i < n; i++) {
		lua_rawgeti(L, 2, (lua_Integer)i + 1);
		if (lua_type(L, -1) != LUA_TSTRING)
			return luaL_error(L, "import_x_headers: names must be strings");
		names[i] = lua_tostring(L, -1);
	}
	message_import_x_headers(m, names, n);
	return 0;
}

/* The envelope address at idx (an address object or a string), checked as
 * MAIL/RCPT would (UTF-8 allowed); raises naming the method otherwise. */
static const char *check_envelope(lua_State *L, int idx, int is_sender, const char *method)
{
	const char *a = luaL_tolstring(L, idx, NULL); /* address objects via __tostring */
	lua_replace(L, idx);
	if (is_sender && !*a)
		return a; /* the null sender */
	char path[1100];
	snprintf(path, sizeof(path), "<%s>", a);
	struct smtp_mailbox mb;
	struct smtp_reply_err err;
	size_t used;
	if (strlen(a) > 1000 ||
	    smtp_path_parse(path, strlen(path), is_sender, 1, &mb, &used, &err) != 0 ||
	    used != strlen(path) || (!is_sender && mb.postmaster))
		luaL_error(L, "msg:%s: '%s' is not a valid envelope address", method, a);
	return a;
}

static int msg_set_sender(lua_State *L)
{
	struct message *m = check_msg(L);
	luaL_checkany(L, 2);
	message_set_sender(m, check_envelope(L, 2, 1, "set_sender"));
	return 0;
}

/* One address, or (KumoMTA's recipient list form) a list of them. */
static int msg_set_recipient(lua_State *L)
{
	struct message *m = check_msg(L);
	luaL_checkany(L, 2);
	int list = lua_type(L, 2) == LUA_TTABLE;
	lua_Integer n = list ? (lua_Integer)lua_rawlen(L, 2) : 1;
	if (n < 1)
		return luaL_error(L, "msg:set_recipient: the recipient list is empty");
	for (lua_Integer i = 1; list && i <= n; i++) { /* check all before changing any */
		lua_rawgeti(L, 2, i);
		check_envelope(L, lua_gettop(L), 0, "set_recipient");
		lua_pop(L, 1);
	}
	if (!list)
		check_envelope(L, 2, 0, "set_recipient");
	unsigned char none[1] = {0};
	unsigned char *keep = m->nrecipients > 1 ? calloc(m->nrecipients, 1) : none;
	if (!keep)
		return luaL_error(L, "msg:set_recipient: out of memory");
	message_retain_recipients(m, keep);
	if (keep != none)
		free(keep);
	for (lua_Integer i = 1; i <= n; i++) {
		if (list)
			lua_rawgeti(L, 2, i);
		else
			lua_pushvalue(L, 2);
		message_add_recipient(m, luaL_tolstring(L, -1, NULL));
		lua_pop(L, 2);
	}
	return 0;
}

static int msg_queue_name(lua_State *L)
{
	char name[1024];
	queue_message_name(check_msg(L), name, sizeof(name));
	lua_pushstring(L, name);
	return 1;
}

static int msg_num_attempts(lua_State *L)
{
	lua_pushinteger(L, check_msg(L)->attempts);
	return 1;
}

static int msg_increment_num_attempts(lua_State *L)
{
	check_msg(L)->attempts++;
	return 0;
}

/* {{name, value}, ...} in order, values unfolded. */
static int msg_get_all_headers(lua_State *L)
{
	struct message *m = check_msg(L);
	const char *d = m->data.data ? m->data.data : "";
	size_t end = rfc5322_header_end(d, m->data.len), pos = 0;
	struct rfc5322_header h;
	struct buf v;
	buf_init(&v);
	lua_newtable(L);
	for (lua_Integer i = 1; rfc5322_header_next(d, end, &pos, &h) == 1; i++) {
		lua_createtable(L, 2, 0);
		lua_pushlstring(L, h.name, h.name_len);
		lua_rawseti(L, -2, 1);
		buf_reset(&v);
		rfc5322_unfold(h.raw_value, h.raw_len, &v);
		lua_pushlstring(L, v.data ? v.data : "", v.len);
		lua_rawseti(L, -2, 2);
		lua_rawseti(L, -2, i);
	}
	buf_free(&v);
	return 1;
}

/* Removes X-* headers (all, or those named). */
static int msg_remove_x_headers(lua_State *L)
{
	struct message *m = check_msg(L);
	if (!lua_isnoneornil(L, 2)) {
		luaL_checktype(L, 2, LUA_TTABLE);
		for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, 2); i++) {
			lua_rawgeti(L, 2, i);
			const char *name = luaL_checkstring(L, -1);
			if ((name[0] == 'x' || name[0] == 'X') && name[1] == '-')
				message_remove_all_named_headers(m, name);
			lua_pop(L, 1);
		}
		return 0;
	}
	lua_newtable(L); /* the distinct X- names first: removal moves the data */
	const char *d = m->data.data ? m->data.data : "";
	size_t end = rfc5322_header_end(d, m->data.len), pos = 0;
	struct rfc5322_header h;
	while (rfc5322_header_next(d, end, &pos, &h) == 1)
		if (h.name_len > 2 && (h.name[0] == 'x' || h.name[0] == 'X') && h.name[1] == '-') {
			lua_pushlstring(L, h.name, h.name_len);
			lua_pushboolean(L, 1);
			lua_rawset(L, -3);
		}
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		lua_pop(L, 1);
		message_remove_all_named_headers(m, lua_tostring(L, -1));
	}
	return 0;
}

static int msg_dkim_sign(lua_State *L)
{
	return lua_dkim__sign(L, check_msg_body(L, "dkim_sign"), 2);
}

static int msg_dkim_verify(lua_State *L)
{
	return lua_dkim__verify(L, check_msg_body(L, "dkim_verify"));
}

static int msg_add_authentication_results(lua_State *L)
{
	return lua_dkim__add_auth_results(L, check_msg_body(L, "add_authentication_results"));
}

/* --- delivery and feedback reports ---------------------------------------- */

/* msg:parse_rfc3464() / msg:parse_rfc5965(): nil when the message is not a
 * report of that kind, the report table (proto/dsn.h, proto/arf.h shapes;
 * JSON null fields are absent) when it is, a Lua error naming the reason
 * when it is one but malformed (as KumoMTA). */
static int msg_parse_report(lua_State *L, const char *method,
			    int (*parse)(const char *, size_t, json_t **, char *, size_t))
{
	struct message *m = check_msg_body(L, method);
	json_t *report = NULL;
	char err[300];
	int rc = parse(m->data.data ? m->data.data : "", m->data.len, &report, err, sizeof(err));
	if (rc < 0)
		return luaL_error(L, "%s: %s", method, err);
	if (rc == 0) {
		lua_pushnil(L);
		return 1;
	}
	lua_json__push(L, report);
	json_decref(report);
	return 1;
}

static int msg_parse_rfc3464(lua_State *L)
{
	return msg_parse_report(L, "parse_rfc3464", dsn_parse);
}

static int msg_parse_rfc5965(lua_State *L)
{
	return msg_parse_report(L, "parse_rfc5965", arf_parse);
}

static const luaL_Reg msg_methods[] = {
    {"set_sender", msg_set_sender},
    {"set_recipient", msg_set_recipient},
    {"queue_name", msg_queue_name},
    {"num_attempts", msg_num_attempts},
    {"increment_num_attempts", msg_increment_num_attempts},
    {"get_all_headers", msg_get_all_headers},
    {"remove_x_headers", msg_remove_x_headers},
    {"id", msg_id},
    {"sender", msg_sender},
    {"recipient", msg_recipient},
    {"recipient_list", msg_recipient_list},
    {"set_meta", msg_set_meta},
    {"get_meta", msg_get_meta},
    {"get_data", msg_get_data},
    {"set_data", msg_set_data},
    {"prepend_header", msg_prepend_header},
    {"append_header", msg_append_header},
    {"get_first_named_header_value", msg_get_first_named_header_value},
    {"get_all_named_header_values", msg_get_all_named_header_values},
    {"remove_all_named_headers", msg_remove_all_named_headers},
    {"import_x_headers", msg_import_x_headers},
    {"dkim_sign", msg_dkim_sign},
    {"dkim_verify", msg_dkim_verify},
    {"add_authentication_results", msg_add_authentication_results},
    {"parse_rfc3464", msg_parse_rfc3464},
    {"parse_rfc5965", msg_parse_rfc5965},
    {NULL, NULL},
};

/* --- scheduling: msg:set_scheduling, msg:import_scheduling_header --------------------
 * The spec (proto/sched_spec.h) is kept, canonical, in the meta key
 * SCHED_SPEC_META_KEY: spooled with the meta, read by the scheduler
 * (kumod/queue/queue.c) at insertion and at every requeue. */

/* Validates j (stolen), stores its canonical form and pushes that as a
 * table; raises "fn: reason" on a bad spec. */
static int sched_store(lua_State *L, struct message *m, json_t *j, const char *fn, const char *what)
{
	struct sched_spec ss;
	char err[300];
	int rc = tzdb_sched_spec(j, &ss, err, sizeof(err)); /* the zone must exist */
	json_decref(j);
	if (rc != 0)
		return luaL_error(L, "%s: %s%s", fn, what, err);
	json_t *canon = sched_spec_to_json(&ss);
	lua_json__push(L, canon);
	message_set_meta(m, SCHED_SPEC_META_KEY, canon);
	return 1;
}

static int msg_set_scheduling(lua_State *L)
{
	struct message *m = check_msg(L);
	if (lua_isnoneornil(L, 2)) {
		if (json_is_object(m->meta))
			json_object_del(m->meta, SCHED_SPEC_META_KEY);
		lua_pushnil(L);
		return 1;
	}
	luaL_checktype(L, 2, LUA_TTABLE);
	char err[200];
	json_t *j = lua_json__to_json(L, 2, err, sizeof(err));
	if (!j)
		return luaL_error(L, "set_scheduling: %s", err);
	return sched_store(L, m, j, "set_scheduling", "");
}

static int msg_import_scheduling_header(lua_State *L)
{
	struct message *m = check_msg(L);
	const char *name = check_header_str(L, 2, "import_scheduling_header", "name");
	int remove = lua_toboolean(L, 3);
	struct buf v;
	buf_init(&v);
	if (!message_get_first_named_header_value(m, name, &v)) {
		buf_free(&v);
		lua_pushnil(L);
		return 1;
	}
	json_error_t je;
	json_t *j = json_loadb(v.data ? v.data : "", v.len, JSON_REJECT_DUPLICATES, &je);
	buf_free(&v);
	if (!j)
		return luaL_error(L, "import_scheduling_header: %s: invalid JSON: %s", name,
				  je.text);
	char what[120];
	snprintf(what, sizeof(what), "%s: ", name);
	sched_store(L, m, j, "import_scheduling_header", what);
	if (remove)
		message_remove_all_named_headers(m, name);
	return 1;
}

/* msg:set_due(nil | "RFC 3339 time"): the first delivery attempt's time, read
 * by the scheduled queue when the received message is inserted (KumoMTA
 * allows it at reception only; elsewhere it would have no effect here, so it
 * is refused by name). A message's scheduling (set_scheduling) still
 * applies on top. */
static int msg_set_due(lua_State *L)
{
	struct message *m = check_msg(L);
	const char *ev = lua_engine__event(L);
	if (!ev || (strcmp(ev, "smtp_server_message_received") != 0 &&
		    strcmp(ev, "http_message_generated") != 0))
		return luaL_error(L,
				  "msg:set_due: only in smtp_server_message_received or "
				  "http_message_generated in kumod (called in %s)",
				  ev ? ev : "the policy's main chunk");
	if (lua_isnoneornil(L, 2)) {
		m->due_ms = 0;
		return 0;
	}
	const char *s = lua_tostring(L, 2);
	uint64_t ms;
	if (lua_type(L, 2) != LUA_TSTRING || rfc3339_parse_ms(s, &ms) != 0)
		return luaL_error(L, "msg:set_due: expected nil or an RFC 3339 time, got %s",
				  s ? s : luaL_typename(L, 2));
	m->due_ms = ms;
	return 0;
}

/* --- address headers: msg:from_header, msg:to_header, msg:get_address_header ---------
 * An AddressHeader is a table { list = { {name, email, user, domain}, ... } }
 * whose metatable answers name/email/user/domain for a single plain mailbox
 * (raising otherwise, as KumoMTA) and tostring() with JSON. */

static const char addr_header_mt_key = 0, addr_entry_mt_key = 0;

static void entry_json(lua_State *L, int idx, struct buf *b)
{
	lua_getfield(L, idx, "name");
	lua_getfield(L, idx, "email");
	json_t *o = json_pack("{s:o,s:o}", "name",
			      lua_isstring(L, -2) ? json_string(lua_tostring(L, -2)) : json_null(),
			      "address",
			      lua_isstring(L, -1) ? json_string(lua_tostring(L, -1)) : json_null());
	lua_pop(L, 2);
	char *t = o ? json_dumps(o, JSON_COMPACT) : NULL;
	buf_appends(b, t ? t : "null");
	free(t);
	json_decref(o);
}

static int addr_entry_tostring(lua_State *L)
{
	struct buf b;
	buf_init(&b);
	entry_json(L, 1, &b);
	lua_pushlstring(L, b.data, b.len);
	buf_free(&b);
	return 1;
}

static int addr_header_tostring(lua_State *L)
{
	struct buf b;
	buf_init(&b);
	buf_appendc(&b, '[');
	lua_getfield(L, 1, "list");
	size_t n = lua_rawlen(L, -1);
	for (size_t i = 1; i <= n; i++) {
		lua_rawgeti(L, -1, (lua_Integer)i);
		if (i > 1)
			buf_appendc(&b, ',');
		entry_json(L, lua_gettop(L), &b);
		lua_pop(L, 1);
	}
	buf_appendc(&b, ']');
	lua_pushlstring(L, b.data, b.len);
	buf_free(&b);
	return 1;
}

/* header.name / .email / .user / .domain: the single mailbox's field. */
static int addr_header_index(lua_State *L)
{
	const char *k = luaL_checkstring(L, 2);
	if (strcmp(k, "name") && strcmp(k, "email") && strcmp(k, "user") && strcmp(k, "domain"))
		return luaL_error(L,
				  "addressheader has no field '%s' (list, name, email, user, "
				  "domain)",
				  k);
	lua_getfield(L, 1, "list");
	lua_getfield(L, 1, "_single");
	if (!lua_toboolean(L, -1))
		return luaL_error(L,
				  "addressheader.%s: the header is not a single simple address "
				  "(use .list)",
				  k);
	lua_rawgeti(L, -2, 1);
	lua_getfield(L, -1, k);
	return 1;
}

static void push_addr_header(lua_State *L, const struct addr_list *l)
{
	lua_createtable(L, 0, 2);
	lua_createtable(L, (int)l->n, 0);
	size_t mailboxes = 0;
	for (size_t i = 0; i < l->n; i++) {
		const struct addr_entry *e = &l->v[i];
		if (!e->local)
			continue; /* an empty group */
		lua_createtable(L, 0, 4);
		if (e->name) {
			lua_pushstring(L, e->name);
			lua_setfield(L, -2, "name");
		}
		lua_pushfstring(L, "%s@%s", e->local, e->domain);
		lua_setfield(L, -2, "email");
		lua_pushstring(L, e->local);
		lua_setfield(L, -2, "user");
		lua_pushstring(L, e->domain);
		lua_setfield(L, -2, "domain");
		lua_rawgetp(L, LUA_REGISTRYINDEX, &addr_entry_mt_key);
		lua_setmetatable(L, -2);
		lua_rawseti(L, -2, (lua_Integer)++mailboxes);
	}
	lua_setfield(L, -2, "list");
	lua_pushboolean(L, mailboxes == 1 && l->n == 1 && !l->groups);
	lua_setfield(L, -2, "_single");
	lua_rawgetp(L, LUA_REGISTRYINDEX, &addr_header_mt_key);
	lua_setmetatable(L, -2);
}

/* The first header named name as an AddressHeader, nil when absent; raises
 * when it is not an address list. */
static int address_header(lua_State *L, struct message *m, const char *name, const char *fn)
{
	struct buf v;
	buf_init(&v);
	if (!message_get_first_named_header_value(m, name, &v)) {
		buf_free(&v);
		lua_pushnil(L);
		return 1;
	}
	struct addr_list l;
	char err[200];
	int rc = addr_list_parse(v.data ? v.data : "", v.len, &l, err, sizeof(err));
	buf_free(&v);
	if (rc != 0)
		return luaL_error(L, "%s: %s header: %s", fn, name, err);
	push_addr_header(L, &l);
	addr_list_free(&l);
	return 1;
}

static int msg_from_header(lua_State *L)
{
	return address_header(L, check_msg(L), "From", "msg:from_header");
}

static int msg_to_header(lua_State *L)
{
	return address_header(L, check_msg(L), "To", "msg:to_header");
}

static int msg_get_address_header(lua_State *L)
{
	struct message *m = check_msg(L);
	const char *name = check_header_str(L, 2, "msg:get_address_header", "name");
	return address_header(L, m, name, "msg:get_address_header");
}

static void register_addr_header(lua_State *L)
{
	lua_createtable(L, 0, 2);
	lua_pushcfunction(L, addr_header_index);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, addr_header_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_rawsetp(L, LUA_REGISTRYINDEX, &addr_header_mt_key);
	lua_createtable(L, 0, 1);
	lua_pushcfunction(L, addr_entry_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_rawsetp(L, LUA_REGISTRYINDEX, &addr_entry_mt_key);
}

/* --- msg:check_fix_conformance(checks, fixes[, settings]) -------------------------------
 * KumoMTA's flags, detected on the top-level message (INVALID_MIME_HEADERS on
 * every MIME entity): issues named in checks
 * (and not in fixes) are returned as "Message has conformance issues: A | B";
 * the missing Date, Message-ID and MIME-Version headers are added; line
 * endings, long lines, 8-bit content and header names ending with space are
 * fixed by a MIME rebuild (kumod/proto/mime_build.c), which raises when it
 * cannot be done without losing content. Fixing MISSING_COLON_VALUE or
 * INVALID_MIME_HEADERS is refused by name. */

enum {
	CF_MISSING_COLON_VALUE = 1 << 0,
	CF_NON_CANONICAL_LINE_ENDINGS = 1 << 1,
	CF_NAME_ENDS_WITH_SPACE = 1 << 2,
	CF_LINE_TOO_LONG = 1 << 3,
	CF_NEEDS_TRANSFER_ENCODING = 1 << 4,
	CF_MISSING_DATE_HEADER = 1 << 5,
	CF_MISSING_MESSAGE_ID_HEADER = 1 << 6,
	CF_MISSING_MIME_VERSION = 1 << 7,
	CF_INVALID_MIME_HEADERS = 1 << 8,
};
static const char *const cf_names[] = {"MISSING_COLON_VALUE",	    "NON_CANONICAL_LINE_ENDINGS",
				       "NAME_ENDS_WITH_SPACE",	    "LINE_TOO_LONG",
				       "NEEDS_TRANSFER_ENCODING",   "MISSING_DATE_HEADER",
				       "MISSING_MESSAGE_ID_HEADER", "MISSING_MIME_VERSION",
				       "INVALID_MIME_HEADERS"};
#define CF_N (sizeof(cf_names) / sizeof(cf_names[0]))
#define CF_REBUILD                                                                    \
	(CF_NON_CANONICAL_LINE_ENDINGS | CF_NAME_ENDS_WITH_SPACE | CF_LINE_TOO_LONG | \
	 CF_NEEDS_TRANSFER_ENCODING)
#define CF_FIXABLE                                                                         \
	(CF_MISSING_DATE_HEADER | CF_MISSING_MESSAGE_ID_HEADER | CF_MISSING_MIME_VERSION | \
	 CF_REBUILD)

/* "A|B" (spaces allowed, empty = none) to a mask; raises on an unknown name. */
static unsigned cf_parse(lua_State *L, int idx, const char *what)
{
	const char *s = luaL_checkstring(L, idx);
	unsigned mask = 0;
	while (*s) {
		while (*s == ' ' || *s == '|')
			s++;
		size_t n = strcspn(s, " |");
		if (!n)
			break;
		size_t i = 0;
		while (i < CF_N && !(strlen(cf_names[i]) == n && strncmp(cf_names[i], s, n) == 0))
			i++;
		if (i == CF_N) {
			char flag[64];
			snprintf(flag, sizeof(flag), "%.*s", (int)(n < 60 ? n : 60), s);
			luaL_error(L, "msg:check_fix_conformance: %s: unknown flag '%s'", what,
				   flag);
		}
		mask |= 1u << i;
		s += n;
	}
	return mask;
}

/* 1 when the header is present and its unfolded value passes ok. */
static int header_ok(const struct message *m, const char *name, int (*ok)(const char *))
{
	struct buf v;
	buf_init(&v);
	int r = message_get_first_named_header_value(m, name, &v) && ok(buf_cstr(&v));
	buf_free(&v);
	return r;
}

static int nonblank(const char *v)
{
	return v[strspn(v, " \t")] != 0;
}

static int msgid_like(const char *v)
{
	const char *lt = strchr(v, '<'), *at = lt ? strchr(lt, '@') : NULL;
	return at && strchr(at, '>') != NULL;
}

static int mime_10(const char *v)
{
	v += strspn(v, " \t");
	return strncmp(v, "1.0", 3) == 0 && v[3 + strspn(v + 3, " \t")] == 0;
}

static unsigned cf_detect(const struct message *m)
{
	const char *d = m->data.data ? m->data.data : "";
	size_t len = m->data.len, hend = rfc5322_header_end(d, len);
	unsigned c = 0, line_start = 1;
	size_t prev = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)d[i];
		if (ch >= 0x80)
			c |= CF_NEEDS_TRANSFER_ENCODING;
		if ((ch == '\r' && (i + 1 >= len || d[i + 1] != '\n')) ||
		    (ch == '\n' && (i == 0 || d[i - 1] != '\r')))
			c |= CF_NON_CANONICAL_LINE_ENDINGS;
		if (ch == '\n') {
			/* as KumoMTA: more than 78 bytes from one LF to the next */
			if (i - prev > 78)
				c |= CF_LINE_TOO_LONG;
			prev = i;
		}
		if (i < hend && line_start && ch != ' ' && ch != '\t' && ch != '\r' && ch != '\n') {
			/* a field's first line: "name:" */
			size_t k = i;
			while (k < hend && d[k] != ':' && d[k] != '\n')
				k++;
			if (k >= hend || d[k] != ':')
				c |= CF_MISSING_COLON_VALUE;
			else if (k > i && (d[k - 1] == ' ' || d[k - 1] == '\t'))
				c |= CF_NAME_ENDS_WITH_SPACE;
		}
		line_start = ch == '\n';
	}
	if (!header_ok(m, "Date", nonblank))
		c |= CF_MISSING_DATE_HEADER;
	if (!header_ok(m, "Message-ID", msgid_like))
		c |= CF_MISSING_MESSAGE_ID_HEADER;
	if (!header_ok(m, "MIME-Version", mime_10))
		c |= CF_MISSING_MIME_VERSION;
	if (mime_build_invalid_headers(d, len))
		c |= CF_INVALID_MIME_HEADERS;
	return c;
}

static void cf_list(struct buf *b, unsigned mask)
{
	for (size_t i = 0; i < CF_N; i++)
		if (mask & (1u << i))
			buf_printf(b, "%s%s", b->len ? " | " : "", cf_names[i]);
}

static int msg_check_fix_conformance(lua_State *L)
{
	struct message *m = check_msg_body(L, "check_fix_conformance");
	unsigned check = cf_parse(L, 2, "checks"), fix = cf_parse(L, 3, "fixes");
	const char *msgid = NULL;
	if (!lua_isnoneornil(L, 4)) {
		luaL_checktype(L, 4, LUA_TTABLE);
		lua_pushnil(L);
		while (lua_next(L, 4)) {
			const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
			if (strcmp(k, "message_id") == 0 && lua_type(L, -1) == LUA_TSTRING)
				msgid = lua_tostring(L, -1); /* kept alive by the table */
			else if (strcmp(k, "detect_encoding") == 0 && !lua_toboolean(L, -1))
				;
			else
				return luaL_error(L,
						  "msg:check_fix_conformance: settings.%s is not "
						  "implemented (message_id is)",
						  k);
			lua_pop(L, 1);
		}
	}
	unsigned refused = fix & ~CF_FIXABLE;
	if (refused) {
		struct buf b;
		buf_init(&b);
		cf_list(&b, refused);
		lua_pushfstring(L,
				"msg:check_fix_conformance: fixing %s is not implemented in kumod "
				"(a header line without a colon, or a MIME field that does not "
				"parse, is not rebuilt)",
				buf_cstr(&b));
		buf_free(&b);
		return lua_error(L);
	}
	unsigned found = cf_detect(m);
	unsigned problems = found & check & ~fix;
	if (problems) {
		struct buf l;
		buf_init(&l);
		cf_list(&l, problems);
		lua_pushfstring(L, "Message has conformance issues: %s", buf_cstr(&l));
		buf_free(&l);
		return 1;
	}
	unsigned to_fix = found & fix;
	if (to_fix & CF_REBUILD) {
		struct buf out, names;
		struct mime_build_result res;
		buf_init(&out);
		buf_init(&names);
		cf_list(&names, to_fix & CF_REBUILD);
		size_t in_len = m->data.len;
		if (mime_build_rebuild(m->data.data ? m->data.data : "", in_len, &out, &res) != 0) {
			KTRACE(mime_rebuild_refused, m->id, buf_cstr(&names), res.why);
			lua_pushfstring(
			    L,
			    "msg:check_fix_conformance: cannot rebuild the message to fix "
			    "%s: %s",
			    buf_cstr(&names), res.why);
			buf_free(&out);
			buf_free(&names);
			return lua_error(L);
		}
		KTRACE(mime_rebuilt, m->id, buf_cstr(&names), (uint64_t)in_len, (uint64_t)out.len,
		       (uint64_t)res.reencoded, (uint64_t)res.headers);
		MSG_TIMELINE(m->id, "Rebuilt",
			     "check_fix_conformance %s: %zu -> %zu bytes, %zu parts re-encoded, "
			     "%zu header fields rewritten, %zu lossy, %zu dropped",
			     buf_cstr(&names), in_len, out.len, res.reencoded, res.headers,
			     res.lossy, res.dropped);
		message_set_data(m, out.data ? out.data : "", out.len);
		buf_free(&out);
		buf_free(&names);
	}
	if (to_fix & CF_MISSING_DATE_HEADER) {
		char date[64];
		rfc5322_format_date(time(NULL), date, sizeof(date));
		message_remove_all_named_headers(m, "Date");
		message_append_header(m, "Date", date);
	}
	if (to_fix & CF_MISSING_MIME_VERSION) {
		message_remove_all_named_headers(m, "MIME-Version");
		message_append_header(m, "MIME-Version", "1.0");
	}
	if (to_fix & CF_MISSING_MESSAGE_ID_HEADER) {
		char id[600];
		if (msgid)
			snprintf(id, sizeof(id), "<%s>", msgid);
		else {
			const char *at = m->sender ? strrchr(m->sender, '@') : NULL;
			snprintf(id, sizeof(id), "<%s@%s>", m->id, at ? at + 1 : "localhost");
		}
		message_remove_all_named_headers(m, "Message-ID");
		if (message_append_header(m, "Message-ID", id) != 0)
			return luaL_error(L, "msg:check_fix_conformance: invalid message_id");
	}
	lua_pushnil(L);
	return 1;
}

static const luaL_Reg msg_sched_methods[] = {
    {"check_fix_conformance", msg_check_fix_conformance},
    {"set_scheduling", msg_set_scheduling},
    {"set_due", msg_set_due},
    {"import_scheduling_header", msg_import_scheduling_header},
    {"from_header", msg_from_header},
    {"to_header", msg_to_header},
    {"get_address_header", msg_get_address_header},
    {NULL, NULL},
};

static const luaL_Reg msg_meta[] = {
    {"__gc", msg_gc},
    {"__close", msg_gc},
    {"__tostring", msg_tostring},
    {NULL, NULL},
};

/* --- registration -------------------------------------------------------- */

static void create_class(lua_State *L, const char *name, const luaL_Reg *meta,
			 const luaL_Reg *methods)
{
	luaL_newmetatable(L, name);
	luaL_setfuncs(L, meta, 0);
	if (methods) {
		lua_newtable(L);
		luaL_setfuncs(L, methods, 0);
		lua_setfield(L, -2, "__index");
	}
	lua_pop(L, 1);
}

void lua_message__register(lua_State *L)
{
	create_class(L, LUA_KUMO_MESSAGE_MT, msg_meta, msg_methods);
	luaL_getmetatable(L, LUA_KUMO_MESSAGE_MT);
	lua_getfield(L, -1, "__index");
	luaL_setfuncs(L, msg_sched_methods, 0);
	lua_mime__register_msg(L, lua_gettop(L));
	lua_pop(L, 2);
	register_addr_header(L);
	create_class(L, LUA_KUMO_ADDRESS_MT, address_meta, NULL);
	create_class(L, LUA_KUMO_CONN_META_MT, conn_meta_meta, conn_meta_methods);
	lua_newtable(L);
	lua_createtable(L, 0, 1);
	lua_pushliteral(L, "v");
	lua_setfield(L, -2, "__mode");
	lua_setmetatable(L, -2);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &conn_meta_cache_key);
}
