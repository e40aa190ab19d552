/* SPDX-License-Identifier: Apache-2.0 */
/* KumoMTA's MimePart objects: kumo.mimepart.parse / new_* and
 * msg:parse_mime, msg:append_text_plain, msg:append_text_html. A part is a
 * userdata holding its header section and (leaf) transfer-encoded body or
 * (multipart) boundary, preamble and epilogue; its children are MimePart
 * userdata in its user value, so a part taken from get_simple_structure is
 * the same object as in the tree and tostring(root) shows its changes.
 * Structure as kumod/proto/mime_view.c reads it; encoding as
 * kumod/proto/mime_build.c chooses. */
#include <errno.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>

#include "base/base64.h"
#include "base/buf.h"
#include "base/uuid.h"
#include "ktrace.h"
#include "lua/lua_int.h"
#include "proto/mime_build.h"
#include "proto/mime_view.h"
#include "proto/rfc5322.h"
#include "spool/message.h"
#include "spool/timeline.h"

#define MIMEPART_MT "kumo.MimePart"
#define HEADERMAP_MT "kumo.HeaderMap"
#define MIMEPART_MAX_DEPTH MIME_VIEW_MAX_DEPTH

struct mimepart {
	struct buf hdr;	 /* header fields with their line breaks, then the blank line */
	struct buf body; /* a leaf's transfer-encoded body */
	struct buf preamble, epilogue;
	char boundary[160]; /* "" for a leaf */
	int id;
	int digest_child;  /* default type message/rfc822 (RFC 2046 §5.1.5) */
	char close_eol[3]; /* the line break after the close delimiter, as parsed */
};

static struct mimepart *check_part(lua_State *L, int idx)
{
	return luaL_checkudata(L, idx, MIMEPART_MT);
}

static int part_gc(lua_State *L)
{
	struct mimepart *p = check_part(L, 1);
	buf_free(&p->hdr);
	buf_free(&p->body);
	buf_free(&p->preamble);
	buf_free(&p->epilogue);
	return 0;
}

/* Pushes a new, empty part (no header fields, no children). */
static struct mimepart *push_part(lua_State *L)
{
	struct mimepart *p = lua_newuserdatauv(L, sizeof(*p), 1);
	memset(p, 0, sizeof(*p));
	buf_init(&p->hdr);
	buf_init(&p->body);
	buf_init(&p->preamble);
	buf_init(&p->epilogue);
	luaL_setmetatable(L, MIMEPART_MT);
	lua_newtable(L);
	lua_setiuservalue(L, -2, 1);
	return p;
}

static const char *cstr(const struct buf *b)
{
	return b->data ? b->data : "";
}

/* --- parsing ------------------------------------------------------------------------ */

/* Pushes the part parsed from s[0..n). */
static void parse_part(lua_State *L, const char *s, size_t n, const char *default_type, int depth,
		       int *next_id)
{
	luaL_checkstack(L, 4, "MIME nesting");
	struct mimepart *p = push_part(L);
	p->id = (*next_id)++;
	p->digest_child = strcmp(default_type, "message/rfc822") == 0;
	size_t hl = rfc5322_header_end(s, n);
	buf_append(&p->hdr, s, hl);
	if (hl == n) { /* no blank line: end the section with one */
		if (hl && s[hl - 1] != '\n')
			buf_append(&p->hdr, "\r\n", 2);
		buf_append(&p->hdr, "\r\n", 2);
	}
	struct mime_view_entity e;
	mime_view_read_entity(s, hl, default_type, &e);
	const char *b = s + hl, *end = s + n;
	if (strncmp(e.type, "multipart/", 10) == 0 && e.boundary[0] && depth < MIMEPART_MAX_DEPTH) {
		const char *child_default =
		    strcmp(e.type, "multipart/digest") == 0 ? "message/rfc822" : "text/plain";
		size_t bl = strlen(e.boundary);
		const char *part = NULL, *first = NULL;
		int count = 0;
		lua_getiuservalue(L, -1, 1);
		for (const char *q = b; q < end;) {
			const char *nl = mime_view_next_line(q, end);
			int k = mime_view_delimiter(q, end, e.boundary, bl);
			if (k) {
				if (!first)
					first = q;
				if (part) {
					parse_part(
					    L, part,
					    (size_t)(mime_view_strip_line_end(part, q) - part),
					    child_default, depth + 1, next_id);
					lua_rawseti(L, -2, ++count);
				}
				part = k == 1 ? nl : NULL;
				if (k == 2) {
					const char *ce = mime_view_strip_line_end(q, nl);
					snprintf(p->close_eol, sizeof(p->close_eol), "%.*s",
						 (int)(nl - ce), ce);
					buf_append(&p->epilogue, nl, (size_t)(end - nl));
					break;
				}
			}
			q = nl;
		}
		if (part) { /* no close delimiter: one is written */
			parse_part(L, part, (size_t)(end - part), child_default, depth + 1,
				   next_id);
			lua_rawseti(L, -2, ++count);
			memcpy(p->close_eol, "\r\n", 3);
		}
		lua_pop(L, 1);
		if (first) {
			snprintf(p->boundary, sizeof(p->boundary), "%s", e.boundary);
			buf_append(&p->preamble, b, (size_t)(first - b));
			return;
		}
	}
	buf_append(&p->body, b, (size_t)(end - b));
}

/* --- serialising -------------------------------------------------------------------- */

static void write_part(lua_State *L, int idx, struct buf *out, int depth)
{
	if (depth > 4 * MIMEPART_MAX_DEPTH)
		luaL_error(L, "MimePart: the tree is nested too deep (a part inside itself?)");
	luaL_checkstack(L, 4, "MIME nesting");
	struct mimepart *p = check_part(L, idx);
	buf_append(out, cstr(&p->hdr), p->hdr.len);
	if (!p->boundary[0]) {
		buf_append(out, cstr(&p->body), p->body.len);
		return;
	}
	buf_append(out, cstr(&p->preamble), p->preamble.len);
	lua_getiuservalue(L, idx, 1);
	int t = lua_gettop(L);
	lua_Integer nchild = luaL_len(L, t);
	for (lua_Integer i = 1; i <= nchild; i++) {
		buf_printf(out, "--%s\r\n", p->boundary);
		lua_rawgeti(L, t, i);
		write_part(L, lua_gettop(L), out, depth + 1);
		lua_pop(L, 1);
		buf_append(out, "\r\n", 2);
	}
	lua_pop(L, 1);
	buf_printf(out, "--%s--%s", p->boundary, p->close_eol);
	buf_append(out, cstr(&p->epilogue), p->epilogue.len);
}

static int part_tostring(lua_State *L)
{
	check_part(L, 1);
	struct buf out;
	buf_init(&out);
	write_part(L, 1, &out, 0);
	lua_pushlstring(L, cstr(&out), out.len);
	buf_free(&out);
	return 1;
}

/* --- fields ------------------------------------------------------------------------- */

static void entity(const struct mimepart *p, struct mime_view_entity *e)
{
	mime_view_read_entity(cstr(&p->hdr), p->hdr.len,
			      p->digest_child ? "message/rfc822" : "text/plain", e);
}

/* Pushes the decoded body of a leaf. */
static void push_body(lua_State *L, const struct mimepart *p)
{
	if (p->boundary[0])
		luaL_error(L, "MimePart.body: a multipart part has no body of its own");
	struct mime_view_entity e;
	entity(p, &e);
	struct buf d;
	buf_init(&d);
	mime_view_decode(cstr(&p->body), p->body.len, e.cte, &d);
	lua_pushlstring(L, cstr(&d), d.len);
	buf_free(&d);
}

static int has_8bit(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] & 0x80)
			return 1;
	return 0;
}

/* Sets a leaf's body to content, transfer-encoded for its Content-Type
 * (text types as text, anything else base64), replacing its
 * Content-Transfer-Encoding field. */
static const char *set_body(lua_State *L, struct mimepart *p, const char *content, size_t n)
{
	if (p->boundary[0])
		luaL_error(L, "MimePart.body: a multipart part has no body of its own");
	struct mime_view_entity e;
	entity(p, &e);
	struct buf enc;
	buf_init(&enc);
	const char *cte = mime_build_encode(&enc, content, n, strncmp(e.type, "text/", 5) == 0);
	rfc5322_remove_all_named(&p->hdr, "Content-Transfer-Encoding");
	if (strcmp(cte, "7bit") != 0)
		rfc5322_append_header(&p->hdr, "Content-Transfer-Encoding", cte);
	buf_reset(&p->body);
	buf_append(&p->body, cstr(&enc), enc.len);
	buf_free(&enc);
	return cte;
}

static int part_index(lua_State *L)
{
	struct mimepart *p = check_part(L, 1);
	const char *k = luaL_checkstring(L, 2);
	if (strcmp(k, "body") == 0) {
		push_body(L, p);
		return 1;
	}
	if (strcmp(k, "id") == 0) {
		lua_pushinteger(L, p->id);
		return 1;
	}
	if (strcmp(k, "headers") == 0) {
		lua_newuserdatauv(L, 0, 1);
		lua_pushvalue(L, 1);
		lua_setiuservalue(L, -2, 1);
		luaL_setmetatable(L, HEADERMAP_MT);
		return 1;
	}
	luaL_getmetatable(L, MIMEPART_MT);
	lua_getfield(L, -1, "methods");
	lua_getfield(L, -1, k);
	if (!lua_isnil(L, -1))
		return 1;
	return luaL_error(L,
			  "MimePart.%s is not implemented in kumod (fields: body, headers, id; "
			  "methods: append_part, get_simple_structure, rebuild, replace_body)",
			  k);
}

static int part_newindex(lua_State *L)
{
	struct mimepart *p = check_part(L, 1);
	const char *k = luaL_checkstring(L, 2);
	if (strcmp(k, "body") != 0)
		return luaL_error(L, "MimePart.%s cannot be assigned (only body can)", k);
	size_t n;
	const char *v = luaL_checklstring(L, 3, &n);
	set_body(L, p, v, n);
	return 0;
}

/* --- header fields ------------------------------------------------------------------ */

/* value as RFC 2047 UTF-8 words when it has 8-bit octets (KumoMTA's
 * HeaderMap:append does the same), else as it is; raises on a bad field. */
static void header_add(lua_State *L, struct mimepart *p, const char *name, const char *value,
		       int prepend, const char *fn)
{
	struct buf v;
	buf_init(&v);
	size_t n = strlen(value);
	if (has_8bit(value, n)) {
		struct buf u;
		buf_init(&u);
		buf_append_utf8_lossy(&u, value, n);
		for (size_t i = 0; i < u.len;) {
			size_t cut = u.len - i > 45 ? i + 45 : u.len;
			while (cut < u.len && cut > i + 1 &&
			       ((unsigned char)u.data[cut] & 0xc0) == 0x80)
				cut--;
			buf_appends(&v, i ? " =?UTF-8?B?" : "=?UTF-8?B?");
			base64_encode(&v, u.data + i, cut - i);
			buf_appends(&v, "?=");
			i = cut;
		}
		buf_free(&u);
		value = buf_cstr(&v);
	}
	int rc = prepend ? rfc5322_prepend_header(&p->hdr, name, value)
			 : rfc5322_append_header(&p->hdr, name, value);
	buf_free(&v);
	if (rc != 0)
		luaL_error(L, "HeaderMap:%s: invalid header name or value", fn);
}

static struct mimepart *headers_part(lua_State *L)
{
	luaL_checkudata(L, 1, HEADERMAP_MT);
	lua_getiuservalue(L, 1, 1);
	struct mimepart *p = check_part(L, -1);
	lua_pop(L, 1); /* the HeaderMap's user value keeps the part alive */
	return p;
}

static int hm_append(lua_State *L)
{
	struct mimepart *p = headers_part(L);
	header_add(L, p, luaL_checkstring(L, 2), luaL_checkstring(L, 3), 0, "append");
	return 0;
}

static int hm_prepend(lua_State *L)
{
	struct mimepart *p = headers_part(L);
	header_add(L, p, luaL_checkstring(L, 2), luaL_checkstring(L, 3), 1, "prepend");
	return 0;
}

static int hm_remove_all_named(lua_State *L)
{
	struct mimepart *p = headers_part(L);
	rfc5322_remove_all_named(&p->hdr, luaL_checkstring(L, 2));
	return 0;
}

static int hm_subject(lua_State *L)
{
	struct mimepart *p = headers_part(L);
	struct buf v, d;
	buf_init(&v);
	buf_init(&d);
	if (rfc5322_get_first(cstr(&p->hdr), p->hdr.len, "Subject", &v)) {
		mime_view_decode_header(cstr(&v), v.len, &d);
		lua_pushlstring(L, cstr(&d), d.len);
	} else {
		lua_pushnil(L);
	}
	buf_free(&v);
	buf_free(&d);
	return 1;
}

static int hm_set_subject(lua_State *L)
{
	struct mimepart *p = headers_part(L);
	const char *v = luaL_checkstring(L, 2);
	rfc5322_remove_all_named(&p->hdr, "Subject");
	header_add(L, p, "Subject", v, 0, "set_subject");
	return 0;
}

static const luaL_Reg headermap_methods[] = {
    {"append", hm_append},
    {"prepend", hm_prepend},
    {"remove_all_named", hm_remove_all_named},
    {"subject", hm_subject},
    {"set_subject", hm_set_subject},
    {NULL, NULL},
};

static int hm_index(lua_State *L)
{
	const char *k = luaL_checkstring(L, 2);
	luaL_getmetatable(L, HEADERMAP_MT);
	lua_getfield(L, -1, "methods");
	lua_getfield(L, -1, k);
	if (!lua_isnil(L, -1))
		return 1;
	return luaL_error(L,
			  "HeaderMap:%s is not implemented in kumod (append, prepend, "
			  "remove_all_named, subject, set_subject are)",
			  k);
}

/* --- methods ------------------------------------------------------------------------ */

static int is_inline(const struct mime_view_entity *e)
{
	return strcmp(e->disp, "inline") == 0;
}

/* A leaf is an attachment when its disposition says so, or it is named and
 * not inline text, or it is neither text nor a message. */
static int is_attachment(const struct mime_view_entity *e)
{
	int text = strncmp(e->type, "text/", 5) == 0;
	return strcmp(e->disp, "attachment") == 0 || (e->filename[0] && !(text && is_inline(e))) ||
	       (!text && strncmp(e->type, "message/", 8) != 0 && !e->content_id[0]);
}

/* Walks the part at idx, filling the structure table at st. */
static void walk(lua_State *L, int idx, int st, int depth)
{
	if (depth > 4 * MIMEPART_MAX_DEPTH)
		luaL_error(L, "MimePart: the tree is nested too deep (a part inside itself?)");
	luaL_checkstack(L, 6, "MIME nesting");
	struct mimepart *p = check_part(L, idx);
	if (p->boundary[0]) {
		lua_getiuservalue(L, idx, 1);
		int t = lua_gettop(L);
		lua_Integer n = luaL_len(L, t);
		for (lua_Integer i = 1; i <= n; i++) {
			lua_rawgeti(L, t, i);
			walk(L, lua_gettop(L), st, depth + 1);
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
		return;
	}
	struct mime_view_entity e;
	entity(p, &e);
	if (is_attachment(&e)) {
		lua_getfield(L, st, "attachments");
		lua_createtable(L, 0, 5);
		if (e.filename[0]) {
			lua_pushstring(L, e.filename);
			lua_setfield(L, -2, "file_name");
		}
		lua_pushboolean(L, is_inline(&e));
		lua_setfield(L, -2, "inline");
		if (e.content_id[0]) {
			lua_pushstring(L, e.content_id);
			lua_setfield(L, -2, "content_id");
		}
		lua_pushstring(L, e.type);
		lua_setfield(L, -2, "content_type");
		lua_pushvalue(L, idx);
		lua_setfield(L, -2, "part");
		lua_rawseti(L, -2, (lua_Integer)luaL_len(L, -2) + 1);
		lua_pop(L, 1);
		return;
	}
	const char *field = strcmp(e.type, "text/plain") == 0	     ? "text_part"
			    : strcmp(e.type, "text/html") == 0	     ? "html_part"
			    : strcmp(e.type, "text/x-amp-html") == 0 ? "amp_html_part"
								     : NULL;
	if (field && lua_getfield(L, st, field) == LUA_TNIL) {
		lua_pushvalue(L, idx);
		lua_setfield(L, st, field);
	}
	if (field)
		lua_pop(L, 1);
}

static int part_get_simple_structure(lua_State *L)
{
	check_part(L, 1);
	lua_createtable(L, 0, 5);
	int st = lua_gettop(L);
	lua_newtable(L);
	lua_setfield(L, st, "attachments");
	lua_pushvalue(L, 1);
	lua_setfield(L, st, "header_part");
	walk(L, 1, st, 0);
	return 1;
}

static int part_append_part(lua_State *L)
{
	struct mimepart *p = check_part(L, 1);
	check_part(L, 2);
	if (!p->boundary[0])
		return luaL_error(L, "MimePart:append_part: the part is not a multipart with a "
				     "boundary");
	if (lua_rawequal(L, 1, 2))
		return luaL_error(L, "MimePart:append_part: a part cannot contain itself");
	lua_getiuservalue(L, 1, 1);
	lua_pushvalue(L, 2);
	lua_rawseti(L, -2, (lua_Integer)luaL_len(L, -2) + 1);
	return 0;
}

static int valid_utf8(const char *s, size_t n)
{
	struct buf t;
	buf_init(&t);
	buf_append_utf8_lossy(&t, s, n);
	int ok = t.len == n && (!n || memcmp(t.data, s, n) == 0);
	buf_free(&t);
	return ok;
}

static int part_replace_body(lua_State *L)
{
	struct mimepart *p = check_part(L, 1);
	size_t n;
	const char *content = luaL_checklstring(L, 2, &n);
	const char *ct = luaL_optstring(L, 3, NULL);
	if (p->boundary[0])
		return luaL_error(L, "MimePart:replace_body: a multipart part has no body of its "
				     "own");
	struct buf v;
	buf_init(&v);
	if (!ct && !rfc5322_get_first(cstr(&p->hdr), p->hdr.len, "Content-Type", &v))
		ct = valid_utf8(content, n) ? "text/plain" : "application/octet-stream";
	if (ct) {
		buf_reset(&v);
		buf_appends(&v, ct);
		if (strncasecmp(ct, "text/", 5) == 0 && !strcasestr(ct, "charset="))
			buf_appends(&v, has_8bit(content, n) ? "; charset=utf-8"
							     : "; charset=us-ascii");
		rfc5322_remove_all_named(&p->hdr, "Content-Type");
		int rc = rfc5322_append_header(&p->hdr, "Content-Type", buf_cstr(&v));
		buf_free(&v);
		if (rc != 0)
			return luaL_error(L, "MimePart:replace_body: invalid content type");
	}
	buf_free(&v);
	set_body(L, p, content, n);
	return 0;
}

static void push_parsed(lua_State *L, const char *s, size_t n)
{
	int id = 0;
	parse_part(L, s, n, "text/plain", 0, &id);
}

/* mimepart:rebuild(): a new part from the text that msg:check_fix_conformance
 * would produce for this one (kumod/proto/mime_build.c). */
static int part_rebuild(lua_State *L)
{
	check_part(L, 1);
	struct buf in, out;
	buf_init(&in);
	buf_init(&out);
	write_part(L, 1, &in, 0);
	struct mime_build_result res;
	int rc = mime_build_rebuild(cstr(&in), in.len, &out, &res);
	buf_free(&in);
	if (rc != 0) {
		buf_free(&out);
		return luaL_error(L, "MimePart:rebuild: %s", res.why);
	}
	push_parsed(L, cstr(&out), out.len);
	buf_free(&out);
	return 1;
}

static const luaL_Reg part_methods[] = {
    {"append_part", part_append_part},
    {"get_simple_structure", part_get_simple_structure},
    {"rebuild", part_rebuild},
    {"replace_body", part_replace_body},
    {NULL, NULL},
};

/* --- kumo.mimepart ------------------------------------------------------------------- */

static int mp_parse(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	push_parsed(L, s, n);
	return 1;
}

/* A new text leaf: Content-Type ct with charset us-ascii or utf-8. */
static void push_text(lua_State *L, const char *ct, const char *content, size_t n)
{
	struct mimepart *p = push_part(L);
	struct buf v;
	buf_init(&v);
	buf_printf(&v, "%s; charset=%s", ct, has_8bit(content, n) ? "utf-8" : "us-ascii");
	buf_appends(&p->hdr, "\r\n");
	int rc = rfc5322_append_header(&p->hdr, "Content-Type", buf_cstr(&v));
	buf_free(&v);
	if (rc != 0)
		luaL_error(L, "kumo.mimepart: invalid content type '%s'", ct);
	set_body(L, p, content, n);
}

static int mp_new_text(lua_State *L)
{
	const char *ct = luaL_checkstring(L, 1);
	size_t n;
	const char *s = luaL_checklstring(L, 2, &n);
	push_text(L, ct, s, n);
	return 1;
}

static int mp_new_text_plain(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	push_text(L, "text/plain", s, n);
	return 1;
}

static int mp_new_html(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	push_text(L, "text/html", s, n);
	return 1;
}

/* name="value" (quotes and backslashes escaped); an 8-bit or control value
 * as RFC 2231 name*=UTF-8''percent-encoded. */
static void param(struct buf *b, const char *name, const char *v)
{
	int plain = 1;
	for (const char *c = v; *c; c++)
		if ((unsigned char)*c < 32 || (unsigned char)*c > 126)
			plain = 0;
	if (plain) {
		buf_printf(b, "; %s=\"", name);
		for (const char *c = v; *c; c++) {
			if (*c == '"' || *c == '\\')
				buf_appendc(b, '\\');
			buf_appendc(b, *c);
		}
		buf_appendc(b, '"');
		return;
	}
	static const char hex[] = "0123456789ABCDEF";
	buf_printf(b, "; %s*=UTF-8''", name);
	for (const unsigned char *c = (const unsigned char *)v; *c; c++) {
		if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		    (*c >= '0' && *c <= '9') || strchr("!#$&+-.^_`|~", *c))
			buf_appendc(b, (char)*c);
		else
			buf_printf(b, "%%%c%c", hex[*c >> 4], hex[*c & 15]);
	}
}

static const char *opt_string(lua_State *L, int t, const char *k)
{
	lua_getfield(L, t, k);
	const char *v = lua_isnil(L, -1) ? NULL : luaL_checkstring(L, -1);
	lua_pop(L, 1); /* the options table keeps the string alive */
	return v;
}

static int mp_new_binary(lua_State *L)
{
	const char *ct = luaL_checkstring(L, 1);
	size_t n;
	const char *s = luaL_checklstring(L, 2, &n);
	const char *file_name = NULL, *content_id = NULL;
	int has_opts = !lua_isnoneornil(L, 3), inl = 0;
	if (has_opts) {
		luaL_checktype(L, 3, LUA_TTABLE);
		lua_pushnil(L);
		while (lua_next(L, 3)) {
			const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
			if (strcmp(k, "file_name") && strcmp(k, "inline") &&
			    strcmp(k, "content_id"))
				return luaL_error(L,
						  "kumo.mimepart.new_binary: unknown option '%s' "
						  "(file_name, inline, content_id)",
						  k);
			lua_pop(L, 1);
		}
		file_name = opt_string(L, 3, "file_name");
		content_id = opt_string(L, 3, "content_id");
		lua_getfield(L, 3, "inline");
		inl = lua_toboolean(L, -1);
		lua_pop(L, 1);
	}
	struct mimepart *p = push_part(L);
	buf_appends(&p->hdr, "\r\n");
	struct buf v;
	buf_init(&v);
	buf_appends(&v, ct);
	if (file_name)
		param(&v, "name", file_name);
	int rc = rfc5322_append_header(&p->hdr, "Content-Type", buf_cstr(&v));
	if (rc == 0 && has_opts) {
		buf_reset(&v);
		buf_appends(&v, inl ? "inline" : "attachment");
		if (file_name)
			param(&v, "filename", file_name);
		rc = rfc5322_append_header(&p->hdr, "Content-Disposition", buf_cstr(&v));
	}
	if (rc == 0 && content_id) {
		buf_reset(&v);
		buf_printf(&v, "<%s>", content_id);
		rc = rfc5322_append_header(&p->hdr, "Content-ID", buf_cstr(&v));
	}
	buf_free(&v);
	if (rc != 0)
		return luaL_error(L, "kumo.mimepart.new_binary: invalid content type or option");
	set_body(L, p, s, n);
	return 1;
}

static int mp_new_multipart(lua_State *L)
{
	const char *ct = luaL_checkstring(L, 1);
	int has_parts = !lua_isnoneornil(L, 2);
	if (has_parts)
		luaL_checktype(L, 2, LUA_TTABLE);
	const char *boundary = luaL_optstring(L, 3, NULL);
	char gen[UUID_TEXT_LEN + 1];
	if (!boundary) {
		uuid_random(gen);
		boundary = gen;
	}
	size_t bl = strlen(boundary);
	if (!bl || bl > 70 ||
	    strspn(boundary, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			     "0123456789'()+_,-./:=? ") != bl ||
	    boundary[bl - 1] == ' ')
		return luaL_error(L,
				  "kumo.mimepart.new_multipart: invalid boundary (RFC 2046: 1 to "
				  "70 characters of its set)");
	struct mimepart *p = push_part(L);
	int self = lua_gettop(L);
	snprintf(p->boundary, sizeof(p->boundary), "%s", boundary);
	memcpy(p->close_eol, "\r\n", 3);
	buf_appends(&p->hdr, "\r\n");
	struct buf v;
	buf_init(&v);
	buf_appends(&v, ct);
	param(&v, "boundary", boundary);
	int rc = rfc5322_append_header(&p->hdr, "Content-Type", buf_cstr(&v));
	buf_free(&v);
	if (rc != 0)
		return luaL_error(L, "kumo.mimepart.new_multipart: invalid content type '%s'", ct);
	if (has_parts) {
		lua_getiuservalue(L, self, 1);
		lua_Integer n = luaL_len(L, 2);
		for (lua_Integer i = 1; i <= n; i++) {
			lua_rawgeti(L, 2, i);
			check_part(L, -1);
			lua_rawseti(L, -2, i);
		}
		lua_pop(L, 1);
	}
	return 1;
}

/* --- kumo.mimepart.builder() ----------------------------------------------------------
 * A userdata whose user value holds {text, html, amp (parts), attachments,
 * stable, built}. */

#define BUILDER_MT "kumo.MimeBuilder"

static int builder_state(lua_State *L, const char *method)
{
	luaL_checkudata(L, 1, BUILDER_MT);
	lua_getiuservalue(L, 1, 1);
	if (lua_getfield(L, -1, "built") != LUA_TNIL)
		luaL_error(L, "builder:%s: the builder was already built", method);
	lua_pop(L, 1);
	return lua_gettop(L);
}

/* Calls fn with the arguments from index 2 on; the part is stored as key. */
static int builder_set(lua_State *L, lua_CFunction fn, const char *key, const char *method)
{
	int st = builder_state(L, method);
	lua_pushcfunction(L, fn);
	lua_pushvalue(L, 2);
	lua_call(L, 1, 1);
	lua_setfield(L, st, key);
	return 0;
}

static int b_text_plain(lua_State *L)
{
	return builder_set(L, mp_new_text_plain, "text", "text_plain");
}

static int b_text_html(lua_State *L)
{
	return builder_set(L, mp_new_html, "html", "text_html");
}

static int amp_part(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	push_text(L, "text/x-amp-html", s, n);
	return 1;
}

static int b_text_amp_html(lua_State *L)
{
	return builder_set(L, amp_part, "amp", "text_amp_html");
}

static void builder_add_attachment(lua_State *L, int st)
{
	lua_getfield(L, st, "attachments");
	lua_insert(L, -2);
	lua_rawseti(L, -2, (lua_Integer)luaL_len(L, -2) + 1);
	lua_pop(L, 1);
}

static int b_attach(lua_State *L)
{
	int st = builder_state(L, "attach");
	lua_pushcfunction(L, mp_new_binary);
	lua_pushvalue(L, 2);
	lua_pushvalue(L, 3);
	lua_pushvalue(L, 4);
	lua_call(L, 3, 1);
	builder_add_attachment(L, st);
	return 0;
}

static int b_attach_part(lua_State *L)
{
	int st = builder_state(L, "attach_part");
	check_part(L, 2);
	lua_pushvalue(L, 2);
	builder_add_attachment(L, st);
	return 0;
}

static int b_set_stable_content(lua_State *L)
{
	int st = builder_state(L, "set_stable_content");
	lua_pushboolean(L, lua_toboolean(L, 2));
	lua_setfield(L, st, "stable");
	return 0;
}

/* Pushes new_multipart(ct, parts at index list, boundary or a random one). */
static void builder_multipart(lua_State *L, const char *ct, int list, int stable,
			      const char *stable_boundary)
{
	lua_pushcfunction(L, mp_new_multipart);
	lua_pushstring(L, ct);
	lua_pushvalue(L, list);
	if (stable)
		lua_pushstring(L, stable_boundary);
	else
		lua_pushnil(L);
	lua_call(L, 3, 1);
}

static int b_build(lua_State *L)
{
	int st = builder_state(L, "build");
	lua_getfield(L, st, "stable");
	int stable = lua_toboolean(L, -1);
	lua_pop(L, 1);
	/* text, AMP, HTML: the order of RFC 2046 alternatives (least to most
	 * preferred) that the AMP email spec asks for */
	lua_newtable(L);
	int alt = lua_gettop(L);
	static const char *const keys[] = {"text", "amp", "html"};
	for (size_t i = 0; i < 3; i++) {
		if (lua_getfield(L, st, keys[i]) == LUA_TNIL)
			lua_pop(L, 1);
		else
			lua_rawseti(L, alt, (lua_Integer)luaL_len(L, alt) + 1);
	}
	lua_getfield(L, st, "attachments");
	int att = lua_gettop(L);
	lua_Integer nalt = luaL_len(L, alt), natt = luaL_len(L, att);
	if (nalt + natt == 0)
		return luaL_error(L, "builder:build: no text, html or attachment was added");
	if (nalt == 1)
		lua_rawgeti(L, alt, 1);
	else if (nalt > 1)
		builder_multipart(L, "multipart/alternative", alt, stable, "ma-boundary");
	if (natt) {
		lua_newtable(L);
		int mixed = lua_gettop(L);
		if (nalt) {
			lua_pushvalue(L, mixed - 1);
			lua_rawseti(L, mixed, 1);
		}
		for (lua_Integer i = 1; i <= natt; i++) {
			lua_rawgeti(L, att, i);
			lua_rawseti(L, mixed, (lua_Integer)luaL_len(L, mixed) + 1);
		}
		builder_multipart(L, "multipart/mixed", mixed, stable, "mm-boundary");
	}
	struct mimepart *root = check_part(L, -1);
	char date[64];
	if (stable)
		snprintf(date, sizeof(date), "%s", "Tue, 1 Jul 2003 10:52:37 +0200");
	else
		rfc5322_format_date(time(NULL), date, sizeof(date));
	if (rfc5322_append_header(&root->hdr, "Mime-Version", "1.0") != 0 ||
	    rfc5322_append_header(&root->hdr, "Date", date) != 0)
		return luaL_error(L, "builder:build: cannot add the root headers");
	lua_pushboolean(L, 1);
	lua_setfield(L, st, "built");
	return 1;
}

static const luaL_Reg builder_methods[] = {
    {"text_plain", b_text_plain},
    {"text_html", b_text_html},
    {"text_amp_html", b_text_amp_html},
    {"attach", b_attach},
    {"attach_part", b_attach_part},
    {"set_stable_content", b_set_stable_content},
    {"build", b_build},
    {NULL, NULL},
};

static int mp_builder(lua_State *L)
{
	lua_newuserdatauv(L, 0, 1);
	lua_createtable(L, 0, 6);
	lua_newtable(L);
	lua_setfield(L, -2, "attachments");
	lua_setiuservalue(L, -2, 1);
	luaL_setmetatable(L, BUILDER_MT);
	return 1;
}

static const luaL_Reg mimepart_funcs[] = {
    {"builder", mp_builder},
    {"parse", mp_parse},
    {"new_text", mp_new_text},
    {"new_text_plain", mp_new_text_plain},
    {"new_html", mp_new_html},
    {"new_binary", mp_new_binary},
    {"new_multipart", mp_new_multipart},
    {NULL, NULL},
};

/* --- message methods ------------------------------------------------------------------ */

static int msg_parse_mime(lua_State *L)
{
	struct message *m = lua_message__body(L, 1, "parse_mime");
	push_parsed(L, cstr(&m->data), m->data.len);
	return 1;
}

/* Appends text to the decoded body of the message's primary part of that
 * type (get_simple_structure's); the message data is updated. false when
 * there is no such part. */
static int append_text(lua_State *L, const char *field, const char *method)
{
	struct message *m = lua_message__body(L, 1, method);
	size_t n;
	const char *add = luaL_checklstring(L, 2, &n);
	push_parsed(L, cstr(&m->data), m->data.len);
	int root = lua_gettop(L);
	lua_pushcfunction(L, part_get_simple_structure);
	lua_pushvalue(L, root);
	lua_call(L, 1, 1);
	if (lua_getfield(L, -1, field) == LUA_TNIL) {
		lua_pushboolean(L, 0);
		return 1;
	}
	struct mimepart *p = check_part(L, -1);
	push_body(L, p);
	lua_pushlstring(L, add, n);
	lua_concat(L, 2);
	size_t bn;
	const char *body = lua_tolstring(L, -1, &bn);
	struct mime_view_entity e;
	entity(p, &e);
	if (has_8bit(body, bn) && (!e.charset[0] || strcmp(e.charset, "us-ascii") == 0)) {
		/* the text is no longer ASCII: label it UTF-8 */
		struct buf v;
		buf_init(&v);
		buf_printf(&v, "%s; charset=utf-8", e.type);
		rfc5322_remove_all_named(&p->hdr, "Content-Type");
		rfc5322_append_header(&p->hdr, "Content-Type", buf_cstr(&v));
		buf_free(&v);
	}
	const char *cte = set_body(L, p, body, bn);
	struct buf out;
	buf_init(&out);
	write_part(L, root, &out, 0);
	message_set_data(m, cstr(&out), out.len);
	KTRACE(mime_text_appended, m->id, e.type, (uint64_t)n, (uint64_t)out.len, cte);
	MSG_TIMELINE(m->id, "TextAppended", "%s: %zu bytes appended to its %s part (now %s)",
		     method, n, e.type, cte);
	buf_free(&out);
	lua_pushboolean(L, 1);
	return 1;
}

static int msg_append_text_plain(lua_State *L)
{
	return append_text(L, "text_part", "append_text_plain");
}

static int msg_append_text_html(lua_State *L)
{
	return append_text(L, "html_part", "append_text_html");
}

static const luaL_Reg msg_mime_methods[] = {
    {"parse_mime", msg_parse_mime},
    {"append_text_plain", msg_append_text_plain},
    {"append_text_html", msg_append_text_html},
    {NULL, NULL},
};

void lua_mime__register_msg(lua_State *L, int methods)
{
	lua_pushvalue(L, methods);
	luaL_setfuncs(L, msg_mime_methods, 0);
	lua_pop(L, 1);
}

void lua_mime__register(lua_State *L)
{
	luaL_newmetatable(L, MIMEPART_MT);
	lua_pushcfunction(L, part_gc);
	lua_setfield(L, -2, "__gc");
	lua_pushcfunction(L, part_gc);
	lua_setfield(L, -2, "__close");
	lua_pushcfunction(L, part_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pushcfunction(L, part_index);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, part_newindex);
	lua_setfield(L, -2, "__newindex");
	luaL_newlib(L, part_methods);
	lua_setfield(L, -2, "methods");
	lua_pop(L, 1);
	luaL_newmetatable(L, HEADERMAP_MT);
	lua_pushcfunction(L, hm_index);
	lua_setfield(L, -2, "__index");
	luaL_newlib(L, headermap_methods);
	lua_setfield(L, -2, "methods");
	lua_pop(L, 1);
	luaL_newmetatable(L, BUILDER_MT);
	luaL_newlib(L, builder_methods);
	lua_setfield(L, -2, "__index");
	lua_pop(L, 1);
	luaL_newlib(L, mimepart_funcs);
	lua_setfield(L, -2, "mimepart");
}
