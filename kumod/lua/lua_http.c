/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.http (KumoMTA's mod-http): build_client{...} -> Client with
 * :get(url), :post(url), :put(url), :close(); Request with :header,
 * :headers, :basic_auth, :bearer_auth, :body, :form_url_encoded, :timeout,
 * :send(); Response with :status_code, :status_reason, :status_is_*(),
 * :headers() (case-insensitive), :content_length, :bytes, :text. send()
 * runs on the loop through kumod/io/httpc.c: the handler's coroutine waits
 * (lua_engine__wait) and nothing blocks; where the event cannot wait, it
 * raises naming the event. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/base64.h"
#include "base/buf.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "io/httpc.h"
#include "lua/lua_int.h"
#include "proto/duration.h"

#define CLIENT_MT "kumo.http.Client"
#define REQUEST_MT "kumo.http.Request"
#define RESPONSE_MT "kumo.http.Response"
#define HEADERS_MT "kumo.http.HeaderMap"

#define DEFAULT_TIMEOUT_MS 60000
#define DEFAULT_POOL_IDLE_MS 90000
#define MAX_HEADERS 128

struct l_client {
	int closed;
	char *user_agent;
	uint64_t timeout_ms, connect_timeout_ms, pool_idle_ms;
	int insecure;
};

struct l_request {
	char method[8];
	char *url;
	char *headers[MAX_HEADERS]; /* "Name: value" */
	size_t nheaders;
	char *body;
	size_t body_len;
	int has_body;
	char *user_agent;
	uint64_t timeout_ms, connect_timeout_ms, pool_idle_ms;
	int insecure;
};

struct l_response {
	int status;
	struct buf headers;
	struct buf body;
};

/* --- helpers --------------------------------------------------------------- */

static uint64_t check_duration_ms(lua_State *L, int idx, const char *what)
{
	if (lua_type(L, idx) == LUA_TNUMBER) {
		double v = lua_tonumber(L, idx);
		if (!(v >= 0 && v <= 1e9))
			luaL_error(L, "%s: duration must be between 0 and 1e9 seconds", what);
		return (uint64_t)(v * 1000 + 0.5);
	}
	uint64_t ms = 0;
	if (lua_type(L, idx) != LUA_TSTRING)
		luaL_error(L, "%s: expected a duration (seconds or text like \"5s\"), got %s", what,
			   luaL_typename(L, idx));
	if (duration_parse_ms(lua_tostring(L, idx), &ms) != 0)
		luaL_error(L, "%s: invalid duration '%s'", what, lua_tostring(L, idx));
	return ms;
}

/* Header names are tokens; values must not break the request's framing. */
static void check_header(lua_State *L, const char *name, size_t nlen, const char *value,
			 size_t vlen)
{
	if (!nlen)
		luaL_error(L, "request:header: empty header name");
	for (size_t i = 0; i < nlen; i++)
		if (name[i] <= 0x20 || name[i] >= 0x7f || name[i] == ':')
			luaL_error(L, "request:header: invalid header name '%s'", name);
	for (size_t i = 0; i < vlen; i++)
		if (value[i] == '\r' || value[i] == '\n' || value[i] == 0)
			luaL_error(L, "request:header: value of '%s' contains a line break or NUL",
				   name);
}

/* Sets (replaces) one header; later calls with the same name win. */
static void request_set_header(lua_State *L, struct l_request *q, const char *name,
			       const char *value)
{
	size_t nlen = strlen(name), vlen = strlen(value);
	check_header(L, name, nlen, value, vlen);
	for (size_t i = 0; i < q->nheaders; i++) {
		if (strncasecmp(q->headers[i], name, nlen) == 0 && q->headers[i][nlen] == ':') {
			free(q->headers[i]);
			q->headers[i] = xasprintf("%s: %s", name, value);
			return;
		}
	}
	if (q->nheaders == MAX_HEADERS)
		luaL_error(L, "request:header: more than %d headers", MAX_HEADERS);
	q->headers[q->nheaders++] = xasprintf("%s: %s", name, value);
}

static void request_set_body(struct l_request *q, const char *p, size_t n)
{
	free(q->body);
	q->body = xmalloc(n ? n : 1);
	memcpy(q->body, p, n);
	q->body_len = n;
	q->has_body = 1;
}

/* --- client ---------------------------------------------------------------- */

static struct l_client *check_client(lua_State *L)
{
	struct l_client *c = luaL_checkudata(L, 1, CLIENT_MT);
	if (c->closed)
		luaL_error(L, "kumo.http: client was closed");
	return c;
}

static const char *const client_keys[] = {
    "user_agent", "connection_verbose",	  "pool_idle_timeout",
    "timeout",	  "accept_invalid_certs", "connect_timeout",
};

static void client_option(lua_State *L, struct l_client *c, const char *k)
{
	const char *b = "kumo.http.build_client";
	if (strcmp(k, "user_agent") == 0) {
		free(c->user_agent);
		c->user_agent = xstrdup(luaL_checkstring(L, -1));
	} else if (strcmp(k, "timeout") == 0) {
		c->timeout_ms = check_duration_ms(L, -1, "kumo.http.build_client: timeout");
	} else if (strcmp(k, "connect_timeout") == 0) {
		c->connect_timeout_ms =
		    check_duration_ms(L, -1, "kumo.http.build_client: connect_timeout");
	} else if (strcmp(k, "pool_idle_timeout") == 0) {
		c->pool_idle_ms =
		    check_duration_ms(L, -1, "kumo.http.build_client: pool_idle_timeout");
	} else if (strcmp(k, "accept_invalid_certs") == 0) {
		c->insecure = lua_toboolean(L, -1);
	} else if (strcmp(k, "connection_verbose") == 0) {
		/* diagnostics: kumod traces every request (http_client_start/done) */
	} else {
		lua_api__unknown_key(L, b, k, client_keys,
				     sizeof(client_keys) / sizeof(client_keys[0]));
	}
}

static int client_gc(lua_State *L)
{
	struct l_client *c = luaL_checkudata(L, 1, CLIENT_MT);
	xfree(c->user_agent);
	c->closed = 1;
	return 0;
}

static int l_build_client(lua_State *L)
{
	if (!lua_isnoneornil(L, 1))
		luaL_checktype(L, 1, LUA_TTABLE);
	struct l_client *c = lua_newuserdatauv(L, sizeof(*c), 0);
	memset(c, 0, sizeof(*c));
	c->timeout_ms = DEFAULT_TIMEOUT_MS;
	c->pool_idle_ms = DEFAULT_POOL_IDLE_MS;
	luaL_setmetatable(L, CLIENT_MT);
	if (lua_istable(L, 1)) {
		lua_pushnil(L);
		while (lua_next(L, 1)) {
			if (lua_type(L, -2) != LUA_TSTRING)
				return luaL_error(L,
						  "kumo.http.build_client: keys must be strings");
			client_option(L, c, lua_tostring(L, -2));
			lua_pop(L, 1);
		}
	}
	return 1;
}

static int client_request(lua_State *L, const char *method)
{
	struct l_client *c = check_client(L);
	size_t len;
	const char *url = luaL_checklstring(L, 2, &len);
	if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0)
		return luaL_error(L, "client:%s: URL '%s' is not http:// or https://", method, url);
	struct l_request *q = lua_newuserdatauv(L, sizeof(*q), 0);
	memset(q, 0, sizeof(*q));
	luaL_setmetatable(L, REQUEST_MT);
	for (size_t i = 0; method[i] && i < sizeof(q->method) - 1; i++)
		q->method[i] = (char)(method[i] - 'a' + 'A');
	q->url = xstrdup(url);
	q->user_agent = c->user_agent ? xstrdup(c->user_agent) : NULL;
	q->timeout_ms = c->timeout_ms;
	q->connect_timeout_ms = c->connect_timeout_ms;
	q->pool_idle_ms = c->pool_idle_ms;
	q->insecure = c->insecure;
	return 1;
}

static int client_get(lua_State *L)
{
	return client_request(L, "get");
}

static int client_post(lua_State *L)
{
	return client_request(L, "post");
}

static int client_put(lua_State *L)
{
	return client_request(L, "put");
}

static int client_close(lua_State *L)
{
	struct l_client *c = luaL_checkudata(L, 1, CLIENT_MT);
	c->closed = 1;
	return 0;
}

/* --- request --------------------------------------------------------------- */

static struct l_request *check_request(lua_State *L)
{
	struct l_request *q = luaL_checkudata(L, 1, REQUEST_MT);
	if (!q->url)
		luaL_error(L, "kumo.http: request used after it was sent");
	return q;
}

static int request_gc(lua_State *L)
{
	struct l_request *q = luaL_checkudata(L, 1, REQUEST_MT);
	for (size_t i = 0; i < q->nheaders; i++)
		xfree(q->headers[i]);
	q->nheaders = 0;
	xfree(q->url);
	xfree(q->body);
	xfree(q->user_agent);
	return 0;
}

static int request_header(lua_State *L)
{
	struct l_request *q = check_request(L);
	request_set_header(L, q, luaL_checkstring(L, 2), luaL_checkstring(L, 3));
	lua_settop(L, 1);
	return 1;
}

static int request_headers(lua_State *L)
{
	struct l_request *q = check_request(L);
	luaL_checktype(L, 2, LUA_TTABLE);
	lua_pushnil(L);
	while (lua_next(L, 2)) {
		if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
			return luaL_error(L, "request:headers: expected string names and values");
		request_set_header(L, q, lua_tostring(L, -2), lua_tostring(L, -1));
		lua_pop(L, 1);
	}
	lua_settop(L, 1);
	return 1;
}

static int request_basic_auth(lua_State *L)
{
	struct l_request *q = check_request(L);
	const char *user = luaL_checkstring(L, 2);
	const char *pass = luaL_optstring(L, 3, "");
	struct buf plain, enc;
	buf_init(&plain);
	buf_init(&enc);
	buf_printf(&plain, "%s:%s", user, pass);
	buf_appends(&enc, "Basic ");
	base64_encode(&enc, plain.data, plain.len);
	explicit_bzero(plain.data, plain.len);
	buf_free(&plain);
	request_set_header(L, q, "Authorization", buf_cstr(&enc));
	buf_free(&enc);
	lua_settop(L, 1);
	return 1;
}

static int request_bearer_auth(lua_State *L)
{
	struct l_request *q = check_request(L);
	lua_pushfstring(L, "Bearer %s", luaL_checkstring(L, 2));
	request_set_header(L, q, "Authorization", lua_tostring(L, -1));
	lua_settop(L, 1);
	return 1;
}

static int request_body(lua_State *L)
{
	struct l_request *q = check_request(L);
	size_t n;
	const char *p = luaL_checklstring(L, 2, &n);
	request_set_body(q, p, n);
	lua_settop(L, 1);
	return 1;
}

/* application/x-www-form-urlencoded: unreserved bytes as-is, space as '+'. */
static void form_escape(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '.' || c == '_' || c == '*')
			buf_appendc(b, (char)c);
		else if (c == ' ')
			buf_appendc(b, '+');
		else
			buf_printf(b, "%%%c%c", hex[c >> 4], hex[c & 15]);
	}
}

static int request_form_url_encoded(lua_State *L)
{
	struct l_request *q = check_request(L);
	luaL_checktype(L, 2, LUA_TTABLE);
	struct buf b;
	buf_init(&b);
	lua_pushnil(L);
	while (lua_next(L, 2)) {
		if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) {
			buf_free(&b);
			return luaL_error(L, "request:form_url_encoded: expected string names and "
					     "values");
		}
		size_t kl, vl;
		const char *k = lua_tolstring(L, -2, &kl), *v = lua_tolstring(L, -1, &vl);
		if (b.len)
			buf_appendc(&b, '&');
		form_escape(&b, k, kl);
		buf_appendc(&b, '=');
		form_escape(&b, v, vl);
		lua_pop(L, 1);
	}
	request_set_body(q, b.data ? b.data : "", b.len);
	buf_free(&b);
	request_set_header(L, q, "Content-Type", "application/x-www-form-urlencoded");
	lua_settop(L, 1);
	return 1;
}

static int request_not_implemented(lua_State *L)
{
	return luaL_error(L, "request:%s is a KumoMTA method that kumod does not implement yet",
			  lua_tostring(L, lua_upvalueindex(1)));
}

static int request_timeout(lua_State *L)
{
	struct l_request *q = check_request(L);
	q->timeout_ms = check_duration_ms(L, 2, "request:timeout");
	lua_settop(L, 1);
	return 1;
}

static int send_done_k(lua_State *L, int status, lua_KContext ctx)
{
	(void)status;
	(void)ctx;
	if (lua_isnil(L, -2))
		return lua_error(L); /* the message on top */
	lua_pop(L, 1);
	return 1; /* the Response */
}

/* httpc completion: resumes the waiting handler with the Response or with
 * (nil, message). */
static void send_done(uint64_t rid, struct httpc_resp *resp, void *arg)
{
	(void)rid;
	uint64_t call = (uint64_t)(uintptr_t)arg;
	lua_State *co = lua_engine__thread(call);
	if (!co)
		return; /* the event call was dropped (its session went away) */
	if (resp->status == 0) {
		lua_pushnil(co);
		lua_pushfstring(co, "kumo.http: request failed: %s", resp->error);
	} else {
		struct l_response *r = lua_newuserdatauv(co, sizeof(*r), 0);
		r->status = resp->status;
		r->headers = resp->headers;
		r->body = resp->body;
		buf_init(&resp->headers);
		buf_init(&resp->body);
		luaL_setmetatable(co, RESPONSE_MT);
		lua_pushnil(co);
	}
	lua_engine__wake(call, 2);
}

static int request_send(lua_State *L)
{
	struct l_request *q = check_request(L);
	uint64_t call = lua_engine__wait_begin(L, "request:send");
	struct httpc_req req = {
	    .method = q->method,
	    .url = q->url,
	    .headers = (const char *const *)q->headers,
	    .nheaders = q->nheaders,
	    .body = q->has_body ? q->body : NULL,
	    .body_len = q->body_len,
	    .user_agent = q->user_agent,
	    .timeout_ms = q->timeout_ms,
	    .connect_timeout_ms = q->connect_timeout_ms,
	    .pool_idle_timeout_ms = q->pool_idle_ms,
	    .insecure = q->insecure,
	    .parent_task = task_current_id(),
	};
	uint64_t rid;
	int rc = httpc_start(&req, send_done, (void *)(uintptr_t)call, &rid);
	if (rc != 0)
		return luaL_error(L, "request:send: %s %s: %s", q->method, q->url, strerror(-rc));
	return lua_engine__wait(L, 0, send_done_k);
}

/* --- response -------------------------------------------------------------- */

static struct l_response *check_response(lua_State *L)
{
	return luaL_checkudata(L, 1, RESPONSE_MT);
}

static int response_gc(lua_State *L)
{
	struct l_response *r = check_response(L);
	buf_free(&r->headers);
	buf_free(&r->body);
	return 0;
}

static int response_status_code(lua_State *L)
{
	lua_pushinteger(L, check_response(L)->status);
	return 1;
}

static const char *reason_phrase(int code)
{
	static const struct {
		int code;
		const char *text;
	} t[] = {
	    {100, "Continue"},
	    {101, "Switching Protocols"},
	    {200, "OK"},
	    {201, "Created"},
	    {202, "Accepted"},
	    {203, "Non Authoritative Information"},
	    {204, "No Content"},
	    {205, "Reset Content"},
	    {206, "Partial Content"},
	    {300, "Multiple Choices"},
	    {301, "Moved Permanently"},
	    {302, "Found"},
	    {303, "See Other"},
	    {304, "Not Modified"},
	    {307, "Temporary Redirect"},
	    {308, "Permanent Redirect"},
	    {400, "Bad Request"},
	    {401, "Unauthorized"},
	    {402, "Payment Required"},
	    {403, "Forbidden"},
	    {404, "Not Found"},
	    {405, "Method Not Allowed"},
	    {406, "Not Acceptable"},
	    {408, "Request Timeout"},
	    {409, "Conflict"},
	    {410, "Gone"},
	    {411, "Length Required"},
	    {413, "Payload Too Large"},
	    {415, "Unsupported Media Type"},
	    {422, "Unprocessable Entity"},
	    {429, "Too Many Requests"},
	    {500, "Internal Server Error"},
	    {501, "Not Implemented"},
	    {502, "Bad Gateway"},
	    {503, "Service Unavailable"},
	    {504, "Gateway Timeout"},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (t[i].code == code)
			return t[i].text;
	return NULL;
}

static int response_status_reason(lua_State *L)
{
	const char *r = reason_phrase(check_response(L)->status);
	if (r)
		lua_pushstring(L, r);
	else
		lua_pushnil(L);
	return 1;
}

static int status_in(lua_State *L, int lo)
{
	int s = check_response(L)->status;
	lua_pushboolean(L, s >= lo && s <= lo + 99);
	return 1;
}

static int response_is_informational(lua_State *L)
{
	return status_in(L, 100);
}

static int response_is_success(lua_State *L)
{
	return status_in(L, 200);
}

static int response_is_redirection(lua_State *L)
{
	return status_in(L, 300);
}

static int response_is_client_error(lua_State *L)
{
	return status_in(L, 400);
}

static int response_is_server_error(lua_State *L)
{
	return status_in(L, 500);
}

/* Looks a header name up case-insensitively (keys are stored lower-case). */
static int headers_index(lua_State *L)
{
	if (lua_type(L, 2) != LUA_TSTRING)
		return 0;
	size_t n;
	const char *k = lua_tolstring(L, 2, &n);
	luaL_Buffer b;
	char *p = luaL_buffinitsize(L, &b, n);
	for (size_t i = 0; i < n; i++)
		p[i] = (char)((k[i] >= 'A' && k[i] <= 'Z') ? k[i] + 32 : k[i]);
	luaL_pushresultsize(&b, n);
	lua_rawget(L, 1);
	return 1;
}

/* A table of lower-cased names; repeated headers are joined with ", ". */
static int response_headers(lua_State *L)
{
	struct l_response *r = check_response(L);
	lua_newtable(L);
	const char *p = r->headers.data ? r->headers.data : "";
	const char *end = p + r->headers.len;
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *le = eol ? eol : end;
		const char *colon = memchr(p, ':', (size_t)(le - p));
		if (colon && colon > p) {
			luaL_Buffer b;
			luaL_buffinit(L, &b);
			for (const char *c = p; c < colon; c++)
				luaL_addchar(&b, (*c >= 'A' && *c <= 'Z') ? *c + 32 : *c);
			luaL_pushresult(&b);
			const char *v = colon + 1, *ve = le;
			while (v < ve && (*v == ' ' || *v == '\t'))
				v++;
			while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
				ve--;
			lua_pushvalue(L, -1);
			if (lua_rawget(L, -3) == LUA_TSTRING) {
				lua_pushliteral(L, ", ");
				lua_pushlstring(L, v, (size_t)(ve - v));
				lua_concat(L, 3);
			} else {
				lua_pop(L, 1);
				lua_pushlstring(L, v, (size_t)(ve - v));
			}
			lua_rawset(L, -3);
		}
		p = eol ? eol + 1 : end;
	}
	luaL_setmetatable(L, HEADERS_MT);
	return 1;
}

static int response_content_length(lua_State *L)
{
	response_headers(L);
	lua_getfield(L, -1, "content-length");
	const char *v = lua_tostring(L, -1);
	char *e = NULL;
	long long n = v ? strtoll(v, &e, 10) : -1;
	if (!v || !*v || *e || n < 0)
		lua_pushnil(L);
	else
		lua_pushinteger(L, n);
	return 1;
}

static int response_bytes(lua_State *L)
{
	struct l_response *r = check_response(L);
	lua_pushlstring(L, r->body.data ? r->body.data : "", r->body.len);
	return 1;
}

/* UTF-8 with malformed sequences replaced by U+FFFD (bodies in another
 * charset are not converted). */
static int response_text(lua_State *L)
{
	struct l_response *r = check_response(L);
	struct buf b;
	buf_init(&b);
	buf_append_utf8_lossy(&b, r->body.data ? r->body.data : "", r->body.len);
	lua_pushlstring(L, b.data ? b.data : "", b.len);
	buf_free(&b);
	return 1;
}

/* --- registration ------------------------------------------------------------ */

static const luaL_Reg client_methods[] = {
    {"get", client_get},     {"post", client_post}, {"put", client_put},
    {"close", client_close}, {NULL, NULL},
};

static const luaL_Reg request_methods[] = {
    {"header", request_header},
    {"headers", request_headers},
    {"basic_auth", request_basic_auth},
    {"bearer_auth", request_bearer_auth},
    {"body", request_body},
    {"form_url_encoded", request_form_url_encoded},
    {"timeout", request_timeout},
    {"send", request_send},
    {NULL, NULL},
};

static const luaL_Reg response_methods[] = {
    {"status_code", response_status_code},
    {"status_reason", response_status_reason},
    {"status_is_informational", response_is_informational},
    {"status_is_success", response_is_success},
    {"status_is_redirection", response_is_redirection},
    {"status_is_client_error", response_is_client_error},
    {"status_is_server_error", response_is_server_error},
    {"headers", response_headers},
    {"content_length", response_content_length},
    {"bytes", response_bytes},
    {"text", response_text},
    {NULL, NULL},
};

static const luaL_Reg http_funcs[] = {
    {"build_client", l_build_client},
    {NULL, NULL},
};

void lua_http__register(lua_State *L)
{
	lua_util__class(L, CLIENT_MT, client_methods, "__gc", client_gc);
	lua_util__class(L, REQUEST_MT, request_methods, "__gc", request_gc);
	lua_util__class(L, RESPONSE_MT, response_methods, "__gc", response_gc);
	/* KumoMTA methods kumod lacks raise by name */
	luaL_getmetatable(L, REQUEST_MT);
	lua_getfield(L, -1, "__index");
	static const char *const missing[] = {"form_multipart_data", "aws_sign_v4"};
	for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
		lua_pushstring(L, missing[i]);
		lua_pushcclosure(L, request_not_implemented, 1);
		lua_setfield(L, -2, missing[i]);
	}
	lua_pop(L, 2);
	luaL_newmetatable(L, HEADERS_MT);
	lua_pushcfunction(L, headers_index);
	lua_setfield(L, -2, "__index");
	lua_pop(L, 1);
	luaL_newlib(L, http_funcs);
	lua_http_url__register(L);
	lua_setfield(L, -2, "http");
}
