/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.encode.charset_decode(charset, bytes) and
 * kumo.encode.charset_encode(charset, utf8, ignore_errors) over glibc's
 * iconv(3). As KumoMTA: an unknown charset raises "unknown charset NAME";
 * bytes that do not decode raise; encoding takes UTF-8 text (anything else
 * raises) and, unless ignore_errors is false, leaves out the characters the
 * charset cannot represent (a partial encoding) instead of raising.
 * KumoMTA's converter knows the WHATWG Encoding Standard's charsets, where the
 * labels latin1, ISO-8859-1, US-ASCII and their aliases all mean windows-1252
 * (what mail labelled so really holds); those labels are mapped to iconv's
 * WINDOWS-1252 here, other names go to iconv as they are. */
#include <errno.h>
#include <iconv.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lua/lua_int.h"

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	size_t len = s[0] < 0x80	     ? 1
		     : (s[0] & 0xe0) == 0xc0 ? 2
		     : (s[0] & 0xf0) == 0xe0 ? 3
		     : (s[0] & 0xf8) == 0xf0 ? 4
					     : 0;
	if (len == 0 || len > n || (len == 2 && s[0] < 0xc2))
		return 0;
	for (size_t i = 1; i < len; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	if (len == 3 && ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0)))
		return 0; /* overlong, surrogate */
	if (len == 4 &&
	    ((s[0] == 0xf0 && s[1] < 0x90) || s[0] > 0xf4 || (s[0] == 0xf4 && s[1] >= 0x90)))
		return 0;
	return len;
}

struct conv {
	iconv_t cd;
	char *out;
	size_t cap, len;
};

static int grow(struct conv *c)
{
	size_t cap = c->cap ? c->cap * 2 : 256;
	char *p = realloc(c->out, cap);
	if (!p)
		return -1;
	c->out = p;
	c->cap = cap;
	return 0;
}

/* Converts all of in; skip_bad skips one UTF-8 character of input at a time
 * where the target cannot represent it. Returns 0, or errno (EILSEQ, EINVAL,
 * ENOMEM) with *at the failing input offset. */
static int convert(struct conv *c, const char *in, size_t inlen, int skip_bad, size_t *at)
{
	char *ip = (char *)in;
	size_t left = inlen;
	int flushing = 0;
	for (;;) {
		if (c->cap - c->len < 16 && grow(c))
			return ENOMEM;
		char *op = c->out + c->len;
		size_t room = c->cap - c->len;
		size_t r = flushing ? iconv(c->cd, NULL, NULL, &op, &room)
				    : iconv(c->cd, &ip, &left, &op, &room);
		int e = errno;
		c->len = (size_t)(op - c->out);
		if (r != (size_t)-1) {
			if (flushing)
				return 0;
			flushing = 1;
			continue;
		}
		if (e == E2BIG) {
			if (grow(c))
				return ENOMEM;
			continue;
		}
		*at = (size_t)(ip - in);
		if (e == EILSEQ && skip_bad) {
			size_t n = utf8_seq((const unsigned char *)ip, left);
			if (n == 0)
				return EILSEQ;
			ip += n;
			left -= n;
			continue;
		}
		return e;
	}
}

/* The WHATWG labels of windows-1252, or name itself. */
static const char *iconv_name(const char *name)
{
	static const char *const cp1252[] = {
	    "ansi_x3.4-1968", "ascii",		 "cp1252",     "cp819",	    "csisolatin1",
	    "ibm819",	      "iso-8859-1",	 "iso-ir-100", "iso8859-1", "iso88591",
	    "iso_8859-1",     "iso_8859-1:1987", "l1",	       "latin1",    "us-ascii",
	    "windows-1252",   "x-cp1252",
	};
	for (size_t i = 0; i < sizeof(cp1252) / sizeof(cp1252[0]); i++)
		if (strcasecmp(name, cp1252[i]) == 0)
			return "WINDOWS-1252";
	return name;
}

static iconv_t open_or_raise(lua_State *L, const char *to, const char *from, const char *name)
{
	iconv_t cd = iconv_open(to, from);
	if (cd == (iconv_t)-1)
		luaL_error(L, "unknown charset %s", name);
	return cd;
}

static int push_result(lua_State *L, struct conv *c)
{
	iconv_close(c->cd);
	lua_pushlstring(L, c->out ? c->out : "", c->len);
	free(c->out);
	return 1;
}

static int l_charset_decode(lua_State *L)
{
	const char *charset = luaL_checkstring(L, 1);
	size_t len, at = 0;
	const char *in = luaL_checklstring(L, 2, &len);
	struct conv c = {.cd = open_or_raise(L, "UTF-8", iconv_name(charset), charset)};
	int e = convert(&c, in, len, 0, &at);
	if (e) {
		iconv_close(c.cd);
		free(c.out);
		return luaL_error(L, "input string did not decode from %s bytes: %s at byte %d",
				  charset,
				  e == EINVAL	? "incomplete sequence"
				  : e == EILSEQ ? "invalid sequence"
						: "out of memory",
				  (int)at);
	}
	return push_result(L, &c);
}

static int l_charset_encode(lua_State *L)
{
	const char *charset = luaL_checkstring(L, 1);
	size_t len, at = 0;
	const char *in = luaL_checklstring(L, 2, &len);
	int ignore =
	    lua_isnoneornil(L, 3) ? 1 : (luaL_checktype(L, 3, LUA_TBOOLEAN), lua_toboolean(L, 3));
	for (size_t i = 0; i < len;) {
		size_t n = utf8_seq((const unsigned char *)in + i, len - i);
		if (n == 0)
			return luaL_error(L, "charset_encode: input is not UTF-8 (byte %d)",
					  (int)i);
		i += n;
	}
	struct conv c = {.cd = open_or_raise(L, iconv_name(charset), "UTF-8", charset)};
	int e = convert(&c, in, len, ignore, &at);
	if (e) {
		iconv_close(c.cd);
		free(c.out);
		return luaL_error(
		    L, "input string did not encode into %s bytes: %s at byte %d", charset,
		    e == EILSEQ ? "a character the charset cannot represent" : "out of memory",
		    (int)at);
	}
	return push_result(L, &c);
}

void lua_charset__register(lua_State *L)
{
	lua_pushcfunction(L, l_charset_decode);
	lua_setfield(L, -2, "charset_decode");
	lua_pushcfunction(L, l_charset_encode);
	lua_setfield(L, -2, "charset_encode");
}
