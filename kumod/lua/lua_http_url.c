/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.http.build_url(base, params) (KumoMTA's mod-http): the base URL with params appended
 * to its query, form-urlencoded (application/x-www-form-urlencoded: space as '+', bytes
 * other than ALPHA / DIGIT / "*-._" as %XX), in key order. The base gets the light
 * normalisation of a URL parser: scheme and host lower-cased, the scheme's default port
 * dropped, an empty path of an http(s)/ws(s)/ftp URL becomes "/". */
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "lua/lua_int.h"

static void form_encode(struct buf *out, const char *s, size_t n)
{
	static const char hexd[] = "0123456789ABCDEF";
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    strchr("*-._", c))
			buf_appendc(out, (char)c);
		else if (c == ' ')
			buf_appendc(out, '+');
		else
			buf_printf(out, "%%%c%c", hexd[c >> 4], hexd[c & 15]);
	}
}

static void lower(char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] >= 'A' && p[i] <= 'Z')
			p[i] = (char)(p[i] + 32);
}

static int key_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Appends base, normalised, without its fragment (returned in *frag, may be NULL); 0, or
 * -1 when base is not an absolute URL. *has_query: base has a '?'. */
static int put_base(struct buf *out, const char *base, const char **frag, int *has_query)
{
	size_t sl =
	    strspn(base, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-");
	if (!sl || base[sl] != ':' ||
	    !((base[0] >= 'a' && base[0] <= 'z') || (base[0] >= 'A' && base[0] <= 'Z')))
		return -1;
	size_t start = out->len;
	buf_append(out, base, sl);
	lower(out->data + start, sl);
	char scheme[16];
	snprintf(scheme, sizeof(scheme), "%.*s", (int)(sl < 15 ? sl : 15), out->data + start);
	static const char *const special[] = {"http", "https", "ws", "wss", "ftp"};
	static const char *const ports[] = {"80", "443", "80", "443", "21"};
	int sp = -1;
	for (int i = 0; i < 5; i++)
		if (!strcmp(scheme, special[i]))
			sp = i;
	buf_appendc(out, ':');
	const char *p = base + sl + 1;
	if (p[0] == '/' && p[1] == '/') {
		p += 2;
		size_t al = strcspn(p, "/?#");
		const char *at = memchr(p, '@', al);
		const char *host = at ? at + 1 : p;
		size_t hl = al - (size_t)(host - p);
		const char *colon = NULL; /* the port's, not an IPv6 literal's */
		for (const char *c = host + hl; c > host; c--)
			if (c[-1] == ':') {
				colon = c - 1;
				break;
			} else if (c[-1] == ']') {
				break;
			}
		size_t name_len = colon ? (size_t)(colon - host) : hl;
		if (sp >= 0 && !name_len)
			return -1; /* an http URL needs a host */
		buf_appends(out, "//");
		buf_append(out, p, (size_t)(host - p));
		size_t h0 = out->len;
		buf_append(out, host, name_len);
		lower(out->data + h0, name_len);
		if (colon) {
			const char *port = colon + 1;
			size_t pl = (size_t)(host + hl - port);
			if (pl && strspn(port, "0123456789") < pl)
				return -1;
			if (pl &&
			    !(sp >= 0 && strlen(ports[sp]) == pl && !memcmp(port, ports[sp], pl)))
				buf_printf(out, ":%.*s", (int)pl, port);
		}
		p += al;
	}
	size_t pl = strcspn(p, "?#");
	if (!pl && sp >= 0)
		buf_appendc(out, '/');
	buf_append(out, p, pl);
	p += pl;
	*has_query = *p == '?';
	size_t ql = strcspn(p, "#");
	buf_append(out, p, ql);
	p += ql;
	*frag = *p == '#' ? p : NULL;
	return 0;
}

static int l_build_url(lua_State *L)
{
	static const char fn[] = "kumo.http.build_url";
	const char *base = luaL_checkstring(L, 1);
	luaL_checktype(L, 2, LUA_TTABLE);
	lua_settop(L, 2);
	size_t n = 0;
	for (lua_pushnil(L); lua_next(L, 2); lua_pop(L, 1)) {
		if (lua_type(L, -2) != LUA_TSTRING)
			return luaL_error(L, "%s: parameter names must be strings", fn);
		int t = lua_type(L, -1);
		if (t != LUA_TSTRING && t != LUA_TNUMBER)
			return luaL_error(L,
					  "%s: parameter '%s' must be a string or a number, got %s",
					  fn, lua_tostring(L, -2), luaL_typename(L, -1));
		n++;
	}
	/* the keys, sorted (KumoMTA takes them in hash order: any order is KumoMTA's) */
	const char **keys = lua_newuserdatauv(L, (n ? n : 1) * sizeof(*keys), 0);
	size_t i = 0;
	for (lua_pushnil(L); lua_next(L, 2); lua_pop(L, 1))
		keys[i++] = lua_tostring(L, -2); /* anchored by the table */
	qsort(keys, n, sizeof(*keys), key_cmp);

	struct buf out;
	buf_init(&out);
	const char *frag = NULL;
	int has_query = 0;
	if (put_base(&out, base, &frag, &has_query) < 0) {
		buf_free(&out);
		return luaL_error(L, "%s: '%s' is not an absolute URL", fn, base);
	}
	int nonempty = has_query && out.data[out.len - 1] != '?';
	if (!has_query)
		buf_appendc(&out, '?');
	for (i = 0; i < n; i++) {
		lua_getfield(L, 2, keys[i]);
		size_t vl;
		lua_pushvalue(L, -1);
		const char *v = lua_tolstring(L, -1, &vl);
		if (nonempty || i)
			buf_appendc(&out, '&');
		form_encode(&out, keys[i], strlen(keys[i]));
		buf_appendc(&out, '=');
		form_encode(&out, v, vl);
		lua_pop(L, 2);
	}
	if (frag)
		buf_appends(&out, frag);
	lua_pushlstring(L, out.data, out.len);
	buf_free(&out);
	return 1;
}

void lua_http_url__register(lua_State *L)
{
	lua_pushcfunction(L, l_build_url);
	lua_setfield(L, -2, "build_url");
}
