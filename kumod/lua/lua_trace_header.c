/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.apply_supplemental_trace_header(msg[, params]) (KumoMTA's): the
 * supplemental trace header a listener adds (trace_headers), on demand,
 * for messages made by policy or changed after reception. params are the
 * listener's trace_headers keys; received_header is accepted and has no
 * effect here (KumoMTA's function adds only the supplemental header). */
#include <stdlib.h>
#include <string.h>

#include "base/base64.h"
#include "base/buf.h"
#include "lua/lua_int.h"
#include "proto/rfc5322.h"
#include "spool/message.h"

#define FN "kumo.apply_supplemental_trace_header"

struct sup_params {
	int enabled;
	const char *name;
	int meta_idx; /* include_meta_names list on the stack, or 0 */
};

static void check_params(lua_State *L, int idx, struct sup_params *p)
{
	*p = (struct sup_params){1, "X-KumoRef", 0};
	if (lua_isnoneornil(L, idx))
		return;
	luaL_checktype(L, idx, LUA_TTABLE);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
		if (!strcmp(k, "supplemental_header") || !strcmp(k, "received_header")) {
			if (!lua_isboolean(L, -1))
				luaL_error(L, FN ": %s: expected a boolean, got %s", k,
					   luaL_typename(L, -1));
			if (k[0] == 's')
				p->enabled = lua_toboolean(L, -1);
		} else if (!strcmp(k, "header_name")) {
			size_t n;
			const char *s = lua_tolstring(L, -1, &n);
			if (lua_type(L, -1) != LUA_TSTRING || !rfc5322_name_valid(s, n))
				luaL_error(L, FN ": header_name: expected a header field name");
			p->name = s; /* anchored by the params table */
		} else if (!strcmp(k, "include_meta_names")) {
			if (!lua_istable(L, -1))
				luaL_error(L,
					   FN ": include_meta_names: expected a list of strings");
			for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, -1); i++) {
				if (lua_rawgeti(L, -1, i) != LUA_TSTRING)
					luaL_error(L,
						   FN ": include_meta_names: expected a string, "
						      "got %s",
						   luaL_typename(L, -1));
				lua_pop(L, 1);
			}
			p->meta_idx = 1;
		} else {
			lua_api__unknown_key(L, "start_esmtp_listener.trace_headers", k, NULL, 0);
		}
		lua_pop(L, 1);
	}
	if (p->meta_idx) {
		lua_getfield(L, idx, "include_meta_names");
		p->meta_idx = lua_gettop(L);
	}
}

static int l_apply_supplemental(lua_State *L)
{
	struct message *m = lua_message__check(L, 1);
	struct sup_params p;
	check_params(L, 2, &p);
	if (!p.enabled)
		return 0;
	if (!m->nrecipients)
		return luaL_error(L, FN ": the message has no recipient");
	json_t *r = json_array();
	for (size_t i = 0; i < m->nrecipients; i++)
		json_array_append_new(r, json_string(m->recipients[i]));
	if (m->nrecipients == 1) {
		json_t *one = json_incref(json_array_get(r, 0));
		json_decref(r);
		r = one;
	}
	/* KumoMTA's marker first: its feedback-report parser looks for it */
	json_t *j = json_pack("{s:s, s:o*}", "_@_", "\\_/", "recipient", r);
	for (lua_Integer i = 1; j && p.meta_idx && i <= (lua_Integer)lua_rawlen(L, p.meta_idx);
	     i++) {
		lua_rawgeti(L, p.meta_idx, i);
		const char *k = lua_tostring(L, -1);
		json_t *v = message_get_meta(m, k);
		if (v)
			json_object_set(j, k, v);
		lua_pop(L, 1);
	}
	char *js = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!js)
		return luaL_error(L, FN ": the recipient or meta is not valid UTF-8");
	struct buf b64;
	buf_init(&b64);
	base64_encode(&b64, js, strlen(js));
	free(js);
	int rc = message_prepend_header(m, p.name, buf_cstr(&b64));
	buf_free(&b64);
	if (rc != 0)
		return luaL_error(L, FN ": could not add the %s header", p.name);
	return 0;
}

void lua_trace_header__register(lua_State *L)
{
	lua_pushcfunction(L, l_apply_supplemental);
	lua_setfield(L, -2, "apply_supplemental_trace_header");
}
