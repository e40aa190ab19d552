/* SPDX-License-Identifier: Apache-2.0 */
/* Lua classes handed to event handlers: Message (a reference to a struct
 * message), address objects (.user, .domain, .email) and conn_meta (a
 * reference to the connection's JSON metadata). Userdata hold references,
 * never borrowed pointers, so a handler keeping one alive stays safe. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "lua/lua_int.h"
#include "proto/rfc5322.h"
#include "proto/smtp_cmd.h"
#include "queue/queue.h"
#include "spool/message.h"

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
	for (size_t i = a->at + 1; i < len; i++)
		if (a->email[i] >= 'A' && a->email[i] <= 'Z')
			a->email[i] = (char)(a->email[i] - 'A' + 'a');
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
	struct message *m = check_msg(L);
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
	return lua_dkim__sign(L, check_msg(L), 2);
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
	create_class(L, LUA_KUMO_ADDRESS_MT, address_meta, NULL);
	create_class(L, LUA_KUMO_CONN_META_MT, conn_meta_meta, conn_meta_methods);
	lua_newtable(L);
	lua_createtable(L, 0, 1);
	lua_pushliteral(L, "v");
	lua_setfield(L, -2, "__mode");
	lua_setmetatable(L, -2);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &conn_meta_cache_key);
}
