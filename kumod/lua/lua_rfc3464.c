/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.generate_rfc3464_message(params, orig_msg, log_record) (KumoMTA's):
 * a delivery status notification (RFC 3464 multipart/report) for a Bounce
 * (of an ESMTP delivery) or Expiration log record, addressed from the null
 * sender to the record's sender, as a Message ready for kumo.inject_message;
 * nil when the record does not call for one (another type, a type not
 * enabled, the null sender). The layout follows KumoMTA's documented
 * samples; written here from them (docs/policy-api.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"
#include "lua/lua_int.h"
#include "proto/rfc5322.h"
#include "spool/message.h"

#define FN "kumo.generate_rfc3464_message"

enum include_orig {
	INCLUDE_NO,
	INCLUDE_HEADERS,
	INCLUDE_FULL
};

struct dsn_params {
	enum include_orig include;
	int enable_bounce, enable_expiration, stable;
	const char *mta_type, *mta_name;
};

static int opt_bool(lua_State *L, int idx, const char *k)
{
	int t = lua_getfield(L, idx, k);
	if (t != LUA_TNIL && t != LUA_TBOOLEAN)
		luaL_error(L, FN ": params.%s: expected a boolean, got %s", k, lua_typename(L, t));
	int v = lua_toboolean(L, -1);
	lua_pop(L, 1);
	return v;
}

static void check_params(lua_State *L, int idx, struct dsn_params *p)
{
	static const char *const keys[] = {"include_original_message", "enable_expiration",
					   "enable_bounce", "reporting_mta", "stable_content"};
	luaL_checktype(L, idx, LUA_TTABLE);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
		size_t i = 0;
		while (i < sizeof(keys) / sizeof(keys[0]) && strcmp(keys[i], k) != 0)
			i++;
		if (i == sizeof(keys) / sizeof(keys[0]))
			luaL_error(L, FN ": params: unknown key '%s'", k);
		lua_pop(L, 1);
	}
	lua_getfield(L, idx, "include_original_message");
	const char *inc = lua_tostring(L, -1);
	if (!inc || lua_type(L, -1) != LUA_TSTRING)
		luaL_error(L, FN ": params.include_original_message: required, one of "
				 "'FullContent', 'HeadersOnly' or 'No'");
	if (!strcmp(inc, "FullContent"))
		p->include = INCLUDE_FULL;
	else if (!strcmp(inc, "HeadersOnly"))
		p->include = INCLUDE_HEADERS;
	else if (!strcmp(inc, "No"))
		p->include = INCLUDE_NO;
	else
		luaL_error(L,
			   FN ": params.include_original_message: '%s' is not one of "
			      "'FullContent', 'HeadersOnly' or 'No'",
			   inc);
	lua_pop(L, 1);
	p->enable_bounce = opt_bool(L, idx, "enable_bounce");
	p->enable_expiration = opt_bool(L, idx, "enable_expiration");
	p->stable = opt_bool(L, idx, "stable_content");
	if (lua_getfield(L, idx, "reporting_mta") != LUA_TTABLE)
		luaL_error(L,
			   FN ": params.reporting_mta: required, a table with mta_type and name");
	lua_getfield(L, -1, "mta_type");
	lua_getfield(L, -2, "name");
	p->mta_type = lua_tostring(L, -2);
	p->mta_name = lua_tostring(L, -1);
	if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING ||
	    strpbrk(p->mta_type, "\r\n") || strpbrk(p->mta_name, "\r\n<>"))
		luaL_error(L, FN ": params.reporting_mta: mta_type and name must be one-line "
				 "strings");
	/* the strings stay anchored on the stack until the function returns */
}

/* The record's string field k, or "" (any CR/LF made a space on output). */
static const char *rec_str(json_t *rec, const char *k)
{
	const char *s = json_string_value(json_object_get(rec, k));
	return s ? s : "";
}

static void put_line(struct buf *b, const char *s)
{
	for (; *s; s++)
		buf_appendc(b, *s == '\r' || *s == '\n' ? ' ' : *s);
}

/* "code c.s.d text" on one line; status gets "c.s.d text" (the class of
 * the code with .0.0 when the reply had no enhanced code). */
static void response_lines(json_t *rec, struct buf *line, struct buf *status)
{
	json_t *resp = json_object_get(rec, "response");
	int code = (int)json_integer_value(json_object_get(resp, "code"));
	json_t *e = json_object_get(resp, "enhanced_code");
	const char *text = json_string_value(json_object_get(resp, "content"));
	char enh[48];
	if (json_is_object(e))
		snprintf(enh, sizeof(enh), "%d.%d.%d",
			 (int)json_integer_value(json_object_get(e, "class")),
			 (int)json_integer_value(json_object_get(e, "subject")),
			 (int)json_integer_value(json_object_get(e, "detail")));
	else
		enh[0] = '\0';
	buf_printf(line, "%d%s%s ", code, enh[0] ? " " : "", enh);
	put_line(line, text ? text : "");
	if (!enh[0])
		snprintf(enh, sizeof(enh), "%d.0.0", code / 100);
	buf_printf(status, "%s ", enh);
	put_line(status, text ? text : "");
}

static void date_of(json_t *rec, const char *k, char *out, size_t len)
{
	json_t *v = json_object_get(rec, k);
	time_t t = json_is_integer(v) ? (time_t)json_integer_value(v) : time(NULL);
	rfc5322_format_date(t, out, len);
}

static void exposition(struct buf *b, json_t *rec, int bounce, const char *rcpts, const char *line)
{
	char created[64];
	date_of(rec, "created", created, sizeof(created));
	buf_printf(b, "The message was received at %s\r\nfrom ", created);
	put_line(b, rec_str(rec, "sender"));
	buf_printf(b, " and addressed to %s.\r\n", rcpts);
	json_t *peer = json_object_get(rec, "peer_address");
	if (bounce && json_is_object(peer)) {
		buf_printf(b, "While communicating with ");
		put_line(b, rec_str(peer, "name"));
		buf_printf(b, " (");
		put_line(b, rec_str(peer, "addr"));
		buf_printf(b, "):\r\nResponse: %s\r\n", line);
	} else {
		buf_printf(b, "Status: %s\r\n", line);
	}
	buf_printf(b,
		   "%sThe message will be deleted from the queue.\r\n"
		   "No further attempts will be made to deliver it.\r\n",
		   bounce ? "\r\n" : "");
}

static void status_part(struct buf *b, json_t *rec, const struct dsn_params *p, json_t *rcpts,
			const char *line, const char *status)
{
	char arrival[64], last[64];
	date_of(rec, "created", arrival, sizeof(arrival));
	date_of(rec, "timestamp", last, sizeof(last));
	buf_printf(b, "Reporting-MTA: %s; %s\r\nArrival-Date: %s\r\n", p->mta_type, p->mta_name,
		   arrival);
	json_t *peer = json_object_get(rec, "peer_address");
	size_t i;
	json_t *r;
	json_array_foreach(rcpts, i, r)
	{
		buf_printf(b, "\r\nFinal-Recipient: rfc822;");
		put_line(b, json_string_value(r));
		buf_printf(b, "\r\nAction: failed\r\nStatus: %s\r\n", status);
		if (json_is_object(peer)) {
			buf_printf(b, "Remote-MTA: dns; ");
			put_line(b, rec_str(peer, "name"));
			buf_printf(b, "\r\n");
		}
		buf_printf(b, "Diagnostic-Code: smtp; %s\r\nLast-Attempt-Date: %s\r\n", line, last);
	}
}

/* The original message's header section (blank line excluded), or all. */
static void original_part(struct buf *b, const struct message *m, int full)
{
	const char *d = m->data.data ? m->data.data : "";
	size_t n = m->data.len;
	if (!full) {
		const char *end = NULL;
		for (size_t i = 0; i + 3 < n && !end; i++)
			if (!memcmp(d + i, "\r\n\r\n", 4))
				end = d + i + 2;
		if (end)
			n = (size_t)(end - d);
	}
	buf_append(b, d, n);
	if (n < 2 || memcmp(d + n - 2, "\r\n", 2) != 0)
		buf_printf(b, "\r\n");
}

static int l_generate(lua_State *L)
{
	struct dsn_params p = {0};
	check_params(L, 1, &p);
	struct message *orig = lua_isnoneornil(L, 2) ? NULL : lua_message__body(L, 2, FN);
	luaL_checktype(L, 3, LUA_TTABLE);
	char err[200];
	json_t *rec = lua_json__to_json(L, 3, err, sizeof(err));
	if (!rec)
		return luaL_error(L, FN ": log_record: %s", err);
	const char *type = rec_str(rec, "type");
	int bounce = !strcmp(type, "Bounce") && p.enable_bounce &&
		     !strcmp(rec_str(rec, "delivery_protocol"), "ESMTP");
	int expiration = !strcmp(type, "Expiration") && p.enable_expiration;
	const char *sender = rec_str(rec, "sender");
	json_t *rcpts = json_object_get(rec, "recipient");
	if (json_is_string(rcpts))
		rcpts = json_pack("[O]", rcpts);
	else
		rcpts = json_is_array(rcpts) ? json_incref(rcpts) : json_array();
	if ((!bounce && !expiration) || !*sender || !json_array_size(rcpts)) {
		json_decref(rcpts);
		json_decref(rec);
		lua_pushnil(L);
		return 1;
	}
	if (p.include != INCLUDE_NO && !orig) {
		json_decref(rcpts);
		json_decref(rec);
		return luaL_error(L, FN ": include_original_message is not 'No': pass the original "
					"message");
	}
	struct buf line, status, list, body;
	buf_init(&line);
	buf_init(&status);
	buf_init(&list);
	buf_init(&body);
	response_lines(rec, &line, &status);
	size_t i;
	json_t *r;
	json_array_foreach(rcpts, i, r)
	{
		buf_printf(&list, "%s", i ? ", " : "");
		put_line(&list, json_string_value(r) ? json_string_value(r) : "");
	}
	struct message *m = message_new();
	char boundary[64], date[64];
	snprintf(boundary, sizeof(boundary), "%s", p.stable ? "report-boundary" : m->id);
	rfc5322_format_date(time(NULL), date, sizeof(date));
	buf_printf(&body,
		   "Content-Type: multipart/report;\r\n  boundary=\"%s\";\r\n"
		   "  report-type=\"delivery-status\"\r\nSubject: Returned mail\r\n"
		   "Mime-Version: 1.0\r\nMessage-ID: <%s@%s>\r\nDate: %s\r\nTo: ",
		   boundary, p.stable ? "UUID" : m->id, p.mta_name, date);
	put_line(&body, sender);
	buf_printf(&body,
		   "\r\nFrom: Mail Delivery Subsystem <mailer-daemon@%s>\r\n\r\n--%s\r\n"
		   "Content-Type: text/plain;\r\n  charset=\"us-ascii\"\r\n\r\n",
		   p.mta_name, boundary);
	exposition(&body, rec, bounce, buf_cstr(&list), buf_cstr(&line));
	buf_printf(&body,
		   "--%s\r\nContent-Type: message/delivery-status;\r\n"
		   "  charset=\"us-ascii\"\r\n\r\n",
		   boundary);
	status_part(&body, rec, &p, rcpts, buf_cstr(&line), buf_cstr(&status));
	if (p.include != INCLUDE_NO) {
		buf_printf(&body, "\r\n--%s\r\nContent-Type: %s\r\n\r\n", boundary,
			   p.include == INCLUDE_FULL ? "message/rfc822" : "text/rfc822-headers");
		original_part(&body, orig, p.include == INCLUDE_FULL);
	}
	buf_printf(&body, "--%s--\r\n", boundary);
	message_set_sender(m, "");
	message_add_recipient(m, sender);
	message_set_data(m, body.data, body.len);
	m->policy_made = 1; /* for kumo.inject_message */
	lua_message__push(L, m);
	message_unref(m);
	buf_free(&line);
	buf_free(&status);
	buf_free(&list);
	buf_free(&body);
	json_decref(rcpts);
	json_decref(rec);
	return 1;
}

void lua_rfc3464__register(lua_State *L)
{
	lua_pushcfunction(L, l_generate);
	lua_setfield(L, -2, "generate_rfc3464_message");
}
