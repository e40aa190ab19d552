/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.uuid, kumo.digest and kumo.encode (kumo-policy-surface.md §1.10),
 * over OpenSSL (digests, HMAC, randomness) and zlib (crc32).
 *  uuid: new_v1/new_v4/new_v6/new_v7() and parse(s) -> object with fields
 *        bytes hyphenated simple braced urn (tostring: hyphenated).
 *  digest: sha1 sha224 sha256 sha384 sha512 sha512_256 sha3_256 sha3_384
 *        sha3_512 crc32 (variadic: strings as bytes, other values as their
 *        JSON text), hmac_sha1/224/256/384/512(keysource, msg); the result
 *        has fields hex bytes base32[_nopad] base32hex[_nopad] base64[_nopad]
 *        base64url[_nopad] (tostring: hex; crc32: 4 big-endian bytes).
 *  encode: {base32,base32hex,base64,base64url}[_nopad]_{encode,decode},
 *        hex_encode/hex_decode; charset_encode/decode (lua_charset.c). */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "base/base64.h"
#include "base/buf.h"
#include "base/clock.h"
#include "lua/lua_int.h"

#define DIGEST_MT "kumo.digest.Digest"
#define UUID_MT "kumo.uuid.Uuid"

/* --- base32 / base64 / hex ------------------------------------------------------ */

struct codec {
	const char *name;
	const char *alphabet;
	int bits; /* 5 or 6 */
	int pad;
};

static const char B32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
static const char B32HEX[] = "0123456789ABCDEFGHIJKLMNOPQRSTUV";
static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static const struct codec codecs[] = {
    {"base32", B32, 5, 1},	 {"base32_nopad", B32, 5, 0},
    {"base32hex", B32HEX, 5, 1}, {"base32hex_nopad", B32HEX, 5, 0},
    {"base64", B64, 6, 1},	 {"base64_nopad", B64, 6, 0},
    {"base64url", B64URL, 6, 1}, {"base64url_nopad", B64URL, 6, 0},
};

static void enc(luaL_Buffer *b, const struct codec *c, const unsigned char *p, size_t n)
{
	uint32_t acc = 0;
	int have = 0;
	size_t out = 0;
	for (size_t i = 0; i < n; i++) {
		acc = (acc << 8) | p[i];
		have += 8;
		while (have >= c->bits) {
			have -= c->bits;
			luaL_addchar(b, c->alphabet[(acc >> have) & ((1u << c->bits) - 1)]);
			out++;
		}
	}
	if (have > 0) {
		luaL_addchar(b, c->alphabet[(acc << (c->bits - have)) & ((1u << c->bits) - 1)]);
		out++;
	}
	size_t group = c->bits == 5 ? 8 : 4;
	if (c->pad)
		while (out % group) {
			luaL_addchar(b, '=');
			out++;
		}
}

/* Strict: the codec's alphabet; '=' padding exactly as encoding makes it
 * (padded codecs) or none; unused trailing bits zero. 0, or -1. */
static int dec(struct buf *out, const struct codec *c, const char *s, size_t n)
{
	size_t group = c->bits == 5 ? 8 : 4;
	size_t data = n;
	while (data > 0 && s[data - 1] == '=')
		data--;
	if (c->pad ? (n % group != 0 || n - data >= group) : data != n)
		return -1;
	uint32_t acc = 0;
	int have = 0;
	for (size_t i = 0; i < data; i++) {
		const char *q = memchr(c->alphabet, s[i], (size_t)1 << c->bits);
		if (!q || !s[i])
			return -1;
		acc = (acc << c->bits) | (uint32_t)(q - c->alphabet);
		have += c->bits;
		if (have >= 8) {
			have -= 8;
			buf_appendc(out, (char)((acc >> have) & 0xFF));
		}
	}
	if (have >= c->bits || (acc & ((1u << have) - 1)) != 0)
		return -1; /* a dangling character or non-zero leftover bits */
	if (c->pad) {
		/* the padding must be what encoding the data would produce */
		size_t chars = data, expect = (chars + group - 1) / group * group;
		if (expect != n)
			return -1;
	}
	return 0;
}

static int l_encode(lua_State *L)
{
	const struct codec *c = lua_touserdata(L, lua_upvalueindex(1));
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	enc(&b, c, (const unsigned char *)s, n);
	luaL_pushresult(&b);
	return 1;
}

static int l_decode(lua_State *L)
{
	const struct codec *c = lua_touserdata(L, lua_upvalueindex(1));
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	struct buf out;
	buf_init(&out);
	if (dec(&out, c, s, n) != 0) {
		buf_free(&out);
		return luaL_error(L, "%s_decode: the input is not valid %s", c->name, c->name);
	}
	lua_pushlstring(L, out.data ? out.data : "", out.len);
	buf_free(&out);
	return 1;
}

static void hex(luaL_Buffer *b, const unsigned char *p, size_t n)
{
	static const char d[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		luaL_addchar(b, d[p[i] >> 4]);
		luaL_addchar(b, d[p[i] & 15]);
	}
}

static int l_hex_encode(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	hex(&b, (const unsigned char *)s, n);
	luaL_pushresult(&b);
	return 1;
}

static int l_hex_decode(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	if (n % 2)
		return luaL_error(L, "hex_decode: odd number of digits");
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	for (size_t i = 0; i < n; i += 2) {
		int hi = hex_digit_value((unsigned char)s[i]),
		    lo = hex_digit_value((unsigned char)s[i + 1]);
		if (hi < 0 || lo < 0)
			return luaL_error(L, "hex_decode: invalid hex digit at offset %d",
					  (int)(hi < 0 ? i : i + 1));
		luaL_addchar(&b, (char)(hi << 4 | lo));
	}
	luaL_pushresult(&b);
	return 1;
}

/* --- digests ------------------------------------------------------------------------ */

/* A digest result: the raw bytes in a userdata. */
struct digest {
	size_t len;
	unsigned char b[]; /* len bytes (kumo.crypto's results may be any length) */
};

static void push_digest(lua_State *L, const unsigned char *p, size_t n)
{
	struct digest *d = lua_newuserdatauv(L, sizeof(*d) + n, 0);
	d->len = n;
	memcpy(d->b, p, n);
	luaL_setmetatable(L, DIGEST_MT);
}

void lua_crypto__push_binary(lua_State *L, const void *p, size_t n)
{
	push_digest(L, p, n);
}

static int digest_index(lua_State *L)
{
	struct digest *d = luaL_checkudata(L, 1, DIGEST_MT);
	const char *k = luaL_checkstring(L, 2);
	luaL_Buffer b;
	if (!strcmp(k, "bytes")) {
		lua_pushlstring(L, (const char *)d->b, d->len);
		return 1;
	}
	if (!strcmp(k, "hex")) {
		luaL_buffinit(L, &b);
		hex(&b, d->b, d->len);
		luaL_pushresult(&b);
		return 1;
	}
	for (size_t i = 0; i < sizeof(codecs) / sizeof(codecs[0]); i++) {
		if (!strcmp(k, codecs[i].name)) {
			luaL_buffinit(L, &b);
			enc(&b, &codecs[i], d->b, d->len);
			luaL_pushresult(&b);
			return 1;
		}
	}
	return luaL_error(L, "digest has no field '%s'", k);
}

static int digest_tostring(lua_State *L)
{
	lua_settop(L, 1);
	lua_pushliteral(L, "hex");
	return digest_index(L);
}

/* The bytes of argument i: a string as is, anything else as JSON text. */
static const char *arg_bytes(lua_State *L, int i, size_t *n, char **owned)
{
	*owned = NULL;
	if (lua_type(L, i) == LUA_TSTRING)
		return lua_tolstring(L, i, n);
	*owned = lua_json__encode(L, i, 0);
	*n = strlen(*owned);
	return *owned;
}

static int l_digest(lua_State *L)
{
	const char *alg = lua_tostring(L, lua_upvalueindex(1));
	int nargs = lua_gettop(L);
	if (!strcmp(alg, "crc32")) {
		uLong crc = crc32(0L, Z_NULL, 0);
		for (int i = 1; i <= nargs; i++) {
			size_t n;
			char *owned;
			const char *p = arg_bytes(L, i, &n, &owned);
			crc = crc32(crc, (const Bytef *)p, (uInt)n);
			free(owned);
		}
		unsigned char be[4] = {(unsigned char)(crc >> 24), (unsigned char)(crc >> 16),
				       (unsigned char)(crc >> 8), (unsigned char)crc};
		push_digest(L, be, 4);
		return 1;
	}
	const EVP_MD *md = EVP_get_digestbyname(alg);
	if (!md)
		return luaL_error(L, "digest: %s is not available in this OpenSSL", alg);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	EVP_DigestInit_ex(ctx, md, NULL);
	for (int i = 1; i <= nargs; i++) {
		size_t n;
		char *owned;
		const char *p = arg_bytes(L, i, &n, &owned);
		EVP_DigestUpdate(ctx, p, n);
		free(owned);
	}
	unsigned char out[EVP_MAX_MD_SIZE];
	unsigned len = 0;
	EVP_DigestFinal_ex(ctx, out, &len);
	EVP_MD_CTX_free(ctx);
	push_digest(L, out, len);
	return 1;
}

static int l_hmac(lua_State *L)
{
	const char *alg = lua_tostring(L, lua_upvalueindex(1));
	luaL_checkany(L, 1);
	size_t mn;
	const char *msg = luaL_checklstring(L, 2, &mn);
	/* the key is a KeySource: kumo.secrets.load resolves it */
	lua_getglobal(L, "kumo");
	lua_getfield(L, -1, "secrets");
	lua_getfield(L, -1, "load");
	lua_pushvalue(L, 1);
	lua_call(L, 1, 1);
	size_t kn;
	const char *key = lua_tolstring(L, -1, &kn);
	unsigned char out[EVP_MAX_MD_SIZE];
	unsigned len = 0;
	const EVP_MD *md = EVP_get_digestbyname(alg);
	if (!md || !HMAC(md, key, (int)kn, (const unsigned char *)msg, mn, out, &len))
		return luaL_error(L, "hmac: %s failed", alg);
	push_digest(L, out, len);
	return 1;
}

/* --- uuid ------------------------------------------------------------------------ */

struct uuid {
	unsigned char b[16];
};

static void push_uuid(lua_State *L, const unsigned char *b)
{
	struct uuid *u = lua_newuserdatauv(L, sizeof(*u), 0);
	memcpy(u->b, b, 16);
	luaL_setmetatable(L, UUID_MT);
}

static void uuid_text(const unsigned char *b, char *out, int hyphens)
{
	static const char d[] = "0123456789abcdef";
	size_t w = 0;
	for (int i = 0; i < 16; i++) {
		if (hyphens && (i == 4 || i == 6 || i == 8 || i == 10))
			out[w++] = '-';
		out[w++] = d[b[i] >> 4];
		out[w++] = d[b[i] & 15];
	}
	out[w] = 0;
}

static int uuid_index(lua_State *L)
{
	struct uuid *u = luaL_checkudata(L, 1, UUID_MT);
	const char *k = luaL_checkstring(L, 2);
	char t[40];
	if (!strcmp(k, "bytes")) {
		lua_pushlstring(L, (const char *)u->b, 16);
		return 1;
	}
	uuid_text(u->b, t, strcmp(k, "simple") != 0);
	if (!strcmp(k, "hyphenated") || !strcmp(k, "simple"))
		lua_pushstring(L, t);
	else if (!strcmp(k, "braced"))
		lua_pushfstring(L, "{%s}", t);
	else if (!strcmp(k, "urn"))
		lua_pushfstring(L, "urn:uuid:%s", t);
	else
		return luaL_error(L, "uuid has no field '%s'", k);
	return 1;
}

static int uuid_tostring(lua_State *L)
{
	struct uuid *u = luaL_checkudata(L, 1, UUID_MT);
	char t[40];
	uuid_text(u->b, t, 1);
	lua_pushstring(L, t);
	return 1;
}

static int uuid_eq(lua_State *L)
{
	struct uuid *a = luaL_checkudata(L, 1, UUID_MT), *b = luaL_checkudata(L, 2, UUID_MT);
	lua_pushboolean(L, memcmp(a->b, b->b, 16) == 0);
	return 1;
}

static void set_version(unsigned char *b, int v)
{
	b[6] = (unsigned char)((b[6] & 0x0F) | (v << 4));
	b[8] = (unsigned char)((b[8] & 0x3F) | 0x80); /* RFC 4122 variant */
}

/* 100 ns intervals since 1582-10-15 (v1 and v6 timestamps). */
static uint64_t gregorian_ticks(void)
{
	return clock_wall_ns() / 100 + 0x01B21DD213814000ull;
}

static int l_uuid_new(lua_State *L)
{
	int v = (int)lua_tointeger(L, lua_upvalueindex(1));
	unsigned char b[16];
	if (RAND_bytes(b, sizeof(b)) != 1)
		return luaL_error(L, "uuid: no randomness available");
	if (v == 1 || v == 6) {
		uint64_t t = gregorian_ticks();
		if (v == 1) {
			uint32_t lo = (uint32_t)t;
			uint16_t mid = (uint16_t)(t >> 32), hi = (uint16_t)((t >> 48) & 0x0FFF);
			b[0] = (unsigned char)(lo >> 24), b[1] = (unsigned char)(lo >> 16);
			b[2] = (unsigned char)(lo >> 8), b[3] = (unsigned char)lo;
			b[4] = (unsigned char)(mid >> 8), b[5] = (unsigned char)mid;
			b[6] = (unsigned char)(hi >> 8), b[7] = (unsigned char)hi;
		} else {
			uint64_t hi = t >> 12; /* 48 most significant bits */
			for (int i = 0; i < 6; i++)
				b[i] = (unsigned char)(hi >> (40 - 8 * i));
			b[6] = (unsigned char)((t >> 8) & 0x0F);
			b[7] = (unsigned char)t;
		}
		b[10] |= 0x01; /* random node id: multicast bit set (RFC 4122 4.5) */
	} else if (v == 7) {
		uint64_t ms = clock_wall_ns() / 1000000;
		for (int i = 0; i < 6; i++)
			b[i] = (unsigned char)(ms >> (40 - 8 * i));
	}
	set_version(b, v);
	push_uuid(L, b);
	return 1;
}

static int l_uuid_parse(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	const char *p = s;
	size_t len = n;
	if (len >= 9 && !strncasecmp(p, "urn:uuid:", 9))
		p += 9, len -= 9;
	else if (len >= 2 && p[0] == '{' && p[len - 1] == '}')
		p++, len -= 2;
	unsigned char b[16];
	size_t got = 0;
	int hyph = len == 36;
	if (len != 32 && len != 36)
		goto bad;
	for (size_t i = 0; i < len; i++) {
		if (hyph && (i == 8 || i == 13 || i == 18 || i == 23)) {
			if (p[i] != '-')
				goto bad;
			continue;
		}
		int h = hex_digit_value((unsigned char)p[i]), l;
		if (h < 0 || i + 1 >= len || (l = hex_digit_value((unsigned char)p[i + 1])) < 0)
			goto bad;
		b[got++] = (unsigned char)(h << 4 | l);
		i++;
	}
	if (got != 16)
		goto bad;
	push_uuid(L, b);
	return 1;
bad:
	return luaL_error(L, "uuid.parse: '%s' is not a UUID", s);
}

/* --- registration --------------------------------------------------------------------- */

void lua_crypto__register(lua_State *L)
{
	static const luaL_Reg dmeta[] = {
	    {"__index", digest_index}, {"__tostring", digest_tostring}, {NULL, NULL}};
	static const luaL_Reg umeta[] = {{"__index", uuid_index},
					 {"__tostring", uuid_tostring},
					 {"__eq", uuid_eq},
					 {NULL, NULL}};
	luaL_newmetatable(L, DIGEST_MT);
	luaL_setfuncs(L, dmeta, 0);
	lua_pop(L, 1);
	luaL_newmetatable(L, UUID_MT);
	luaL_setfuncs(L, umeta, 0);
	lua_pop(L, 1);

	/* kumo.digest */
	static const char *const algs[][2] = {
	    {"sha1", "SHA1"},	      {"sha224", "SHA224"},	{"sha256", "SHA256"},
	    {"sha384", "SHA384"},     {"sha512", "SHA512"},	{"sha512_256", "SHA512-256"},
	    {"sha3_256", "SHA3-256"}, {"sha3_384", "SHA3-384"}, {"sha3_512", "SHA3-512"},
	    {"crc32", "crc32"},
	};
	lua_newtable(L);
	for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
		lua_pushstring(L, algs[i][1]);
		lua_pushcclosure(L, l_digest, 1);
		lua_setfield(L, -2, algs[i][0]);
	}
	static const char *const hmacs[][2] = {
	    {"hmac_sha1", "SHA1"},     {"hmac_sha224", "SHA224"}, {"hmac_sha256", "SHA256"},
	    {"hmac_sha384", "SHA384"}, {"hmac_sha512", "SHA512"},
	};
	for (size_t i = 0; i < sizeof(hmacs) / sizeof(hmacs[0]); i++) {
		lua_pushstring(L, hmacs[i][1]);
		lua_pushcclosure(L, l_hmac, 1);
		lua_setfield(L, -2, hmacs[i][0]);
	}
	lua_setfield(L, -2, "digest");

	/* kumo.encode */
	lua_newtable(L);
	for (size_t i = 0; i < sizeof(codecs) / sizeof(codecs[0]); i++) {
		char name[48];
		lua_pushlightuserdata(L, (void *)&codecs[i]);
		lua_pushcclosure(L, l_encode, 1);
		snprintf(name, sizeof(name), "%s_encode", codecs[i].name);
		lua_setfield(L, -2, name);
		lua_pushlightuserdata(L, (void *)&codecs[i]);
		lua_pushcclosure(L, l_decode, 1);
		snprintf(name, sizeof(name), "%s_decode", codecs[i].name);
		lua_setfield(L, -2, name);
	}
	lua_pushcfunction(L, l_hex_encode);
	lua_setfield(L, -2, "hex_encode");
	lua_pushcfunction(L, l_hex_decode);
	lua_setfield(L, -2, "hex_decode");
	lua_charset__register(L);
	lua_setfield(L, -2, "encode");

	/* kumo.uuid */
	lua_newtable(L);
	static const int versions[] = {1, 4, 6, 7};
	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		char name[16];
		lua_pushinteger(L, versions[i]);
		lua_pushcclosure(L, l_uuid_new, 1);
		snprintf(name, sizeof(name), "new_v%d", versions[i]);
		lua_setfield(L, -2, name);
	}
	lua_pushcfunction(L, l_uuid_parse);
	lua_setfield(L, -2, "parse");
	lua_setfield(L, -2, "uuid");
}
