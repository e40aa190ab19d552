/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.dkim: KumoMTA's DKIM signers and msg:dkim_sign (RFC 6376, RFC 8463).
 *
 * kumo.dkim.rsa_sha256_signer{} and kumo.dkim.ed25519_signer{} build a
 * signer from KumoMTA's parameters; unknown keys, and KumoMTA's keys it
 * refuses itself (atps, atpsh, agent_user_identifier, body_length,
 * reporting), are errors naming the key. Signers are cached by all their
 * parameters and keys by their KeySource, both for `ttl` (300 s), in two
 * tables in the Lua registry, so a policy building its signer for every
 * message parses the key once per ttl. Canonicalization and the field's
 * text are kumod/proto/dkim.c; hashing and signing are OpenSSL 3 EVP. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "base/base64.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/fsutil.h"
#include "base/metrics.h"
#include "ktrace.h"
#include "lua/lua_int.h"
#include "proto/dkim.h"
#include "proto/duration.h"
#include "proto/rfc5322.h"
#include "spool/message.h"

#define DKIM_KEY_MT "kumod.dkim_key"
#define DKIM_CACHE_MAX 1024
#define DKIM_DEFAULT_TTL_MS 300000

/* Cache entries (userdata) start with their expiry. */
struct dkim_key {
	uint64_t expires_ns;
	EVP_PKEY *pkey;
	int ed25519;
};

struct dkim_signer {
	uint64_t expires_ns;
	char *domain, *selector;
	char *headers; /* ':'-joined as configured */
	enum dkim_canon hc, bc;
	int over_sign;
	int64_t expiration;   /* seconds, 0: none */
	struct dkim_key *key; /* kept alive by the userdata's user value */
	EVP_PKEY_CTX *ctx;    /* RSA signing context, made on first use */
};

static const char signer_cache_key, key_cache_key;

/* The metrics are declared in kumod/ctl/metrics_collect.c. */
static void count(const char *name)
{
	metrics_counter_add(name, NULL, NULL, 1);
}

/* The registry table `which` maps a string to an entry; an entry is used
 * until its expires_ns. Pushes the fresh entry for the key at key_idx and
 * returns it (counting a hit), or pushes nothing and returns NULL. */
static void *cache_get(lua_State *L, const void *which, int key_idx, const char *metric)
{
	lua_rawgetp(L, LUA_REGISTRYINDEX, which);
	lua_pushvalue(L, key_idx);
	if (lua_rawget(L, -2) == LUA_TUSERDATA) {
		uint64_t *expires_ns = lua_touserdata(L, -1);
		if (*expires_ns > clock_mono_ns()) {
			metrics_counter_add(metric, NULL, NULL, 1);
			lua_remove(L, -2);
			return expires_ns;
		}
	}
	lua_pop(L, 2);
	return NULL;
}

/* Stores the entry at val_idx under the key at key_idx; a full table starts
 * over (entries expire after their ttl anyway). */
static void cache_put(lua_State *L, const void *which, int key_idx, int val_idx)
{
	lua_rawgetp(L, LUA_REGISTRYINDEX, which);
	lua_getfield(L, -1, "n");
	lua_Integer n = lua_tointeger(L, -1) + 1;
	lua_pop(L, 1);
	if (n > DKIM_CACHE_MAX) {
		lua_pop(L, 1);
		lua_newtable(L);
		lua_pushvalue(L, -1);
		lua_rawsetp(L, LUA_REGISTRYINDEX, which);
		n = 1;
	}
	lua_pushinteger(L, n);
	lua_setfield(L, -2, "n");
	lua_pushvalue(L, key_idx);
	lua_pushvalue(L, val_idx);
	lua_rawset(L, -3);
	lua_pop(L, 1);
}

/* --- keys ------------------------------------------------------------------ */

static int key_gc(lua_State *L)
{
	struct dkim_key *k = luaL_checkudata(L, 1, DKIM_KEY_MT);
	EVP_PKEY_free(k->pkey);
	k->pkey = NULL;
	return 0;
}

/* Parses PEM (PKCS#1 "RSA PRIVATE KEY" or PKCS#8 "PRIVATE KEY") or DER key
 * bytes; NULL with why in err. */
static EVP_PKEY *parse_key(const char *data, size_t len, char *err, size_t errlen)
{
	EVP_PKEY *pkey = NULL;
	if (memmem(data, len, "-----BEGIN", 10)) {
		BIO *bio = BIO_new_mem_buf(data, (int)len);
		if (bio)
			pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
		BIO_free(bio);
	} else {
		const unsigned char *p = (const unsigned char *)data;
		pkey = d2i_AutoPrivateKey(NULL, &p, (long)len);
	}
	if (!pkey) {
		unsigned long e = ERR_peek_last_error();
		snprintf(err, errlen, "not a PEM or DER private key (%s)",
			 e ? ERR_reason_error_string(e) : "no key found");
		ERR_clear_error();
		return NULL;
	}
	if (EVP_PKEY_is_a(pkey, "RSA")) {
		if (EVP_PKEY_get_bits(pkey) < 1024) {
			snprintf(err, errlen,
				 "RSA key of %d bits is too short (RFC 8301: at least 1024)",
				 EVP_PKEY_get_bits(pkey));
			EVP_PKEY_free(pkey);
			return NULL;
		}
	} else if (!EVP_PKEY_is_a(pkey, "ED25519")) {
		snprintf(err, errlen, "a %s key is neither RSA nor Ed25519",
			 EVP_PKEY_get0_type_name(pkey) ? EVP_PKEY_get0_type_name(pkey) : "?");
		EVP_PKEY_free(pkey);
		return NULL;
	}
	return pkey;
}

/* Reads the KeySource at idx (a path, or {key_data = '...'}): pushes the key
 * userdata, from the key cache when fresh. Raises naming the problem. */
static struct dkim_key *load_key(lua_State *L, int idx, const char *fn, uint64_t ttl_ms)
{
	const char *path, *data;
	size_t dlen;
	char what[96];
	snprintf(what, sizeof(what), "%s: key", fn);
	lua_util__keysource(L, idx, what, &path, &data, &dlen);
	if (path)
		lua_pushfstring(L, "f:%s", path);
	else {
		lua_pushliteral(L, "d:");
		lua_pushlstring(L, data, dlen);
		lua_concat(L, 2);
	}
	int ck = lua_gettop(L);
	struct dkim_key *hit = cache_get(L, &key_cache_key, ck, "dkim_signer_key_cache_hit");
	if (hit)
		return hit;
	count("dkim_signer_key_cache_miss");
	char err[256];
	struct buf file;
	buf_init(&file);
	if (path) {
		int rc = fs_read_file(path, &file);
		if (rc != 0) {
			buf_free(&file);
			luaL_error(L, "%s: key '%s': %s", fn, path, strerror(-rc));
		}
		data = file.data ? file.data : "";
		dlen = file.len;
	}
	EVP_PKEY *pkey = parse_key(data, dlen, err, sizeof(err));
	buf_free(&file);
	if (!pkey)
		luaL_error(L, "%s: key %s%s%s: %s", fn, path ? "'" : "", path ? path : "(key_data)",
			   path ? "'" : "", err);
	struct dkim_key *k = lua_newuserdatauv(L, sizeof(*k), 0);
	k->pkey = pkey;
	k->ed25519 = EVP_PKEY_is_a(pkey, "ED25519");
	k->expires_ns = clock_mono_ns() + ttl_ms * 1000000;
	luaL_setmetatable(L, DKIM_KEY_MT);
	cache_put(L, &key_cache_key, ck, lua_gettop(L));
	return k;
}

/* --- signers --------------------------------------------------------------- */

static int signer_gc(lua_State *L)
{
	struct dkim_signer *s = luaL_checkudata(L, 1, LUA_KUMO_DKIM_SIGNER_MT);
	free(s->domain);
	free(s->selector);
	free(s->headers);
	EVP_PKEY_CTX_free(s->ctx);
	memset(s, 0, sizeof(*s));
	return 0;
}

static const char *const refused[] = {"atps", "atpsh", "agent_user_identifier", "body_length",
				      "reporting"};

/* A domain or selector: non-empty, printable, no ';', '=' or whitespace (it
 * lands verbatim in the field). */
static const char *check_token(lua_State *L, int idx, const char *fn, const char *what)
{
	size_t n;
	if (lua_type(L, idx) != LUA_TSTRING)
		luaL_error(L, "%s: %s: expected a string, got %s", fn, what, luaL_typename(L, idx));
	const char *s = lua_tolstring(L, idx, &n);
	if (n == 0)
		luaL_error(L, "%s: %s is empty", fn, what);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= ' ' || c >= 127 || c == ';' || c == '=')
			luaL_error(L, "%s: %s '%s' has a character a DKIM tag cannot hold", fn,
				   what, s);
	}
	return s;
}

static enum dkim_canon check_canon(lua_State *L, int idx, const char *fn, const char *what)
{
	const char *s = lua_type(L, idx) == LUA_TSTRING ? lua_tostring(L, idx) : NULL;
	if (s && strcmp(s, "Relaxed") == 0)
		return DKIM_RELAXED;
	if (s && strcmp(s, "Simple") == 0)
		return DKIM_SIMPLE;
	luaL_error(L, "%s: %s: expected 'Relaxed' or 'Simple', got %s", fn, what,
		   s ? s : luaL_typename(L, idx));
	return DKIM_RELAXED;
}

/* headers = {'From', 'To', ...}: pushes them joined with ':' (valid names,
 * From among them). */
static void check_headers(lua_State *L, int idx, const char *fn)
{
	if (lua_type(L, idx) != LUA_TTABLE)
		luaL_error(L, "%s: headers: expected a list of header names, got %s", fn,
			   luaL_typename(L, idx));
	int from = 0;
	lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
	if (n == 0)
		luaL_error(L, "%s: headers is empty (it must include From)", fn);
	luaL_checkstack(L, 3, fn);
	lua_pushliteral(L, "");
	for (lua_Integer i = 1; i <= n; i++) {
		lua_rawgeti(L, idx, i);
		size_t len;
		const char *h = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
		if (!h || !rfc5322_name_valid(h, len))
			luaL_error(L, "%s: headers[%d]: not a header name", fn, (int)i);
		from |= len == 4 && strncasecmp(h, "from", 4) == 0;
		if (i > 1) {
			lua_pushliteral(L, ":");
			lua_insert(L, -2);
			lua_concat(L, 3);
		} else {
			lua_concat(L, 2);
		}
	}
	if (!from)
		luaL_error(L, "%s: headers must include From (RFC 6376 5.4)", fn);
}

static int64_t check_seconds(lua_State *L, int idx, const char *fn, const char *what)
{
	int isint = 0;
	lua_Integer v = lua_type(L, idx) == LUA_TNUMBER ? lua_tointegerx(L, idx, &isint) : 0;
	if (!isint || v <= 0)
		luaL_error(L, "%s: %s: expected a positive number of seconds", fn, what);
	return (int64_t)v;
}

static uint64_t check_ttl(lua_State *L, int idx, const char *fn)
{
	uint64_t ms;
	if (lua_type(L, idx) == LUA_TSTRING) {
		if (duration_parse_ms(lua_tostring(L, idx), &ms) != 0 || ms == 0)
			luaL_error(L, "%s: ttl: '%s' is not a duration", fn, lua_tostring(L, idx));
		return ms;
	}
	return (uint64_t)check_seconds(L, idx, fn, "ttl") * 1000;
}

/* kumo.dkim.rsa_sha256_signer / ed25519_signer: upvalue 1 is 1 for Ed25519. */
static int l_signer(lua_State *L)
{
	int ed = (int)lua_tointeger(L, lua_upvalueindex(1));
	const char *fn = ed ? "kumo.dkim.ed25519_signer" : "kumo.dkim.rsa_sha256_signer";
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	struct dkim_signer p = {.hc = DKIM_RELAXED, .bc = DKIM_RELAXED};
	const char *domain = NULL, *selector = NULL;
	uint64_t ttl_ms = DKIM_DEFAULT_TTL_MS;
	int key_idx = 0;
	int have_headers = 0;
	struct buf ck;
	/* the strings stay on the stack (keys of table 1) while used */
	lua_pushnil(L);
	while (lua_next(L, 1)) {
		if (lua_type(L, -2) != LUA_TSTRING)
			return luaL_error(L, "%s: parameter names are strings", fn);
		const char *k = lua_tostring(L, -2);
		int v = lua_gettop(L);
		if (strcmp(k, "domain") == 0)
			domain = check_token(L, v, fn, "domain");
		else if (strcmp(k, "selector") == 0)
			selector = check_token(L, v, fn, "selector");
		else if (strcmp(k, "headers") == 0)
			have_headers = 1;
		else if (strcmp(k, "key") == 0)
			key_idx = 1;
		else if (strcmp(k, "header_canonicalization") == 0)
			p.hc = check_canon(L, v, fn, k);
		else if (strcmp(k, "body_canonicalization") == 0)
			p.bc = check_canon(L, v, fn, k);
		else if (strcmp(k, "expiration") == 0)
			p.expiration = check_seconds(L, v, fn, k);
		else if (strcmp(k, "over_sign") == 0) {
			if (lua_type(L, v) != LUA_TBOOLEAN)
				return luaL_error(L, "%s: over_sign: expected a boolean", fn);
			p.over_sign = lua_toboolean(L, v);
		} else if (strcmp(k, "ttl") == 0)
			ttl_ms = check_ttl(L, v, fn);
		else {
			int known = 0;
			for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
				known |= strcmp(k, refused[i]) == 0;
			/* KumoMTA accepts these two at their default, false */
			if ((strcmp(k, "body_length") == 0 || strcmp(k, "reporting") == 0) &&
			    lua_type(L, v) == LUA_TBOOLEAN && !lua_toboolean(L, v))
				known = 2;
			if (known == 1)
				return luaL_error(
				    L,
				    "%s: %s is not supported (KumoMTA refuses it too: "
				    "\"not currently supported\")",
				    fn, k);
			if (!known)
				return lua_api__unknown_key(L, fn, k, NULL, 0);
		}
		lua_pop(L, 1);
	}
	if (!domain || !selector || !have_headers || !key_idx)
		return luaL_error(L, "%s: %s is required", fn,
				  !domain     ? "domain"
				  : !selector ? "selector"
				  : !key_idx  ? "key"
					      : "headers");
	lua_getfield(L, 1, "headers");
	check_headers(L, lua_gettop(L), fn);
	int hdr_at = lua_gettop(L);
	const char *headers = lua_tostring(L, hdr_at);
	lua_getfield(L, 1, "key");
	int key_at = lua_gettop(L);
	/* the cache key: every parameter (freed before anything can raise) */
	buf_init(&ck);
	buf_printf(&ck, "%d\n%s\n%s\n%s\n%d%d%d\n%lld\n%llu\n", ed, domain, selector, headers,
		   (int)p.hc, (int)p.bc, p.over_sign, (long long)p.expiration,
		   (unsigned long long)ttl_ms);
	if (lua_type(L, key_at) == LUA_TTABLE) {
		lua_getfield(L, key_at, "key_data");
		size_t n;
		const char *d = lua_tolstring(L, -1, &n);
		buf_appendc(&ck, 'd');
		if (d)
			buf_append(&ck, d, n);
		lua_pop(L, 1);
	} else if (lua_type(L, key_at) == LUA_TSTRING) {
		buf_printf(&ck, "f%s", lua_tostring(L, key_at));
	}
	lua_pushlstring(L, ck.data, ck.len);
	buf_free(&ck);
	int ck_at = lua_gettop(L);
	uint64_t now = clock_mono_ns();
	if (cache_get(L, &signer_cache_key, ck_at, "dkim_signer_cache_hit"))
		return 1;
	count("dkim_signer_cache_miss");
	struct dkim_key *key = load_key(L, key_at, fn, ttl_ms);
	int key_ud = lua_gettop(L);
	if (key->ed25519 != ed)
		return luaL_error(L, "%s: the key is an %s key; use kumo.dkim.%s", fn,
				  key->ed25519 ? "Ed25519" : "RSA",
				  key->ed25519 ? "ed25519_signer" : "rsa_sha256_signer");
	struct dkim_signer *s = lua_newuserdatauv(L, sizeof(*s), 1);
	memset(s, 0, sizeof(*s));
	luaL_setmetatable(L, LUA_KUMO_DKIM_SIGNER_MT);
	*s = p;
	s->domain = strdup(domain);
	s->selector = strdup(selector);
	s->headers = strdup(headers);
	if (!s->domain || !s->selector || !s->headers)
		return luaL_error(L, "%s: out of memory", fn);
	s->key = key;
	s->expires_ns = now + ttl_ms * 1000000;
	lua_pushvalue(L, key_ud);
	lua_setiuservalue(L, -2, 1);
	cache_put(L, &signer_cache_key, ck_at, lua_gettop(L));
	metrics_histogram_observe("dkim_signer_creation", NULL, NULL,
				  (double)(clock_mono_ns() - now) / 1e9);
	return 1;
}

/* --- signing --------------------------------------------------------------- */

static void digest_emit(void *ctx, const void *p, size_t n)
{
	EVP_DigestUpdate(ctx, p, n);
}

/* SHA-256 of the signing input; the RSA or Ed25519 signature of it into sig
 * (RFC 8463: Ed25519 signs the SHA-256 hash). 0, or -1. */
static int sign_digest(struct dkim_signer *s, const unsigned char *hash, unsigned char *sig,
		       size_t *siglen)
{
	EVP_PKEY *pkey = s->key->pkey;
	if (s->key->ed25519) {
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		int ok = md && EVP_DigestSignInit(md, NULL, NULL, NULL, pkey) == 1 &&
			 EVP_DigestSign(md, sig, siglen, hash, 32) == 1;
		EVP_MD_CTX_free(md);
		return ok ? 0 : -1;
	}
	if (!s->ctx) {
		s->ctx = EVP_PKEY_CTX_new(pkey, NULL);
		if (!s->ctx || EVP_PKEY_sign_init(s->ctx) != 1 ||
		    EVP_PKEY_CTX_set_rsa_padding(s->ctx, RSA_PKCS1_PADDING) != 1 ||
		    EVP_PKEY_CTX_set_signature_md(s->ctx, EVP_sha256()) != 1) {
			EVP_PKEY_CTX_free(s->ctx);
			s->ctx = NULL;
			return -1;
		}
	}
	return EVP_PKEY_sign(s->ctx, sig, siglen, hash, 32) == 1 ? 0 : -1;
}

static int sha256(const void *p, size_t n, unsigned char out[32])
{
	unsigned int len = 32;
	return EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) == 1 ? 0 : -1;
}

int lua_dkim__sign(lua_State *L, struct message *m, int idx)
{
	struct dkim_signer *s = luaL_checkudata(L, idx, LUA_KUMO_DKIM_SIGNER_MT);
	if (!s->key || !s->key->pkey)
		return luaL_error(L, "dkim_sign: the signer is closed");
	uint64_t t0 = clock_mono_ns();
	const char *data = m->data.data ? m->data.data + m->data.off : "";
	size_t len = m->data.len - m->data.off;
	size_t hdr_end = rfc5322_header_end(data, len);
	unsigned char bh[32], hash[32], sig[512];
	size_t siglen = sizeof(sig);
	unsigned int bhlen = 0;
	struct buf h, in, field, b64;
	buf_init(&h);
	buf_init(&in);
	buf_init(&field);
	buf_init(&b64);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
	if (ok) {
		dkim_canon_body(s->bc, data + hdr_end, len - hdr_end, digest_emit, md);
		ok = EVP_DigestFinal_ex(md, bh, &bhlen) == 1;
	}
	EVP_MD_CTX_free(md);
	if (ok) {
		base64_encode(&b64, bh, bhlen);
		dkim_h_list(data, hdr_end, s->headers, s->over_sign, &h);
		time_t now = time(NULL);
		struct dkim_sig ds = {
		    .algo = s->key->ed25519 ? "ed25519-sha256" : "rsa-sha256",
		    .domain = s->domain,
		    .selector = s->selector,
		    .hc = s->hc,
		    .bc = s->bc,
		    .bh = buf_cstr(&b64),
		    .h = buf_cstr(&h),
		    .t = (int64_t)now,
		    .x = s->expiration ? (int64_t)now + s->expiration : 0,
		};
		dkim_sig_format(&field, &ds);
		dkim_canon_headers(s->hc, data, hdr_end, ds.h, &in);
		dkim_canon_header(s->hc, field.data, field.len, &in);
		in.len -= 2; /* the signature field is hashed without its CRLF */
		ok = sha256(in.data, in.len, hash) == 0 && sign_digest(s, hash, sig, &siglen) == 0;
	}
	if (ok) {
		buf_reset(&b64);
		base64_encode(&b64, sig, siglen);
		dkim_sig_finish(&field, b64.data, b64.len);
		buf_insert(&m->data, m->data.off, field.data, field.len);
		m->data_stored = 0; /* differs from the spool's copy: keep it resident */
	}
	uint64_t ns = clock_mono_ns() - t0;
	buf_free(&h);
	buf_free(&in);
	buf_free(&field);
	buf_free(&b64);
	if (!ok) {
		unsigned long e = ERR_get_error();
		ERR_clear_error();
		return luaL_error(L, "dkim_sign: signing failed: %s",
				  e ? ERR_reason_error_string(e) : "OpenSSL error");
	}
	metrics_histogram_observe("dkim_signer_sign", NULL, NULL, (double)ns / 1e9);
	KTRACE(dkim_sign, m->id, s->domain, s->selector,
	       s->key->ed25519 ? "ed25519-sha256" : "rsa-sha256", (uint64_t)len, ns);
	return 0;
}

/* kumo.dkim.set_signing_threads(n): KumoMTA starts a pool of n signing
 * threads; kumod signs on the thread that runs the policy, so the count is
 * checked and has no effect (as the other *_threads knobs). */
static int l_set_signing_threads(lua_State *L)
{
	int isint = 0;
	lua_Integer n = lua_tointegerx(L, 1, &isint);
	if (!isint || n < 1)
		return luaL_error(L, "kumo.dkim.set_signing_threads: expected a thread count of at "
				     "least 1");
	return 0;
}

/* --- registration ---------------------------------------------------------- */

void lua_dkim__open(lua_State *L)
{
	if (luaL_newmetatable(L, LUA_KUMO_DKIM_SIGNER_MT)) {
		lua_pushcfunction(L, signer_gc);
		lua_setfield(L, -2, "__gc");
		lua_pushliteral(L, "DkimSigner");
		lua_setfield(L, -2, "__name");
	}
	lua_pop(L, 1);
	if (luaL_newmetatable(L, DKIM_KEY_MT)) {
		lua_pushcfunction(L, key_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_pop(L, 1);
	lua_newtable(L);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &signer_cache_key);
	lua_newtable(L);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &key_cache_key);
	lua_createtable(L, 0, 3);
	lua_pushinteger(L, 0);
	lua_pushcclosure(L, l_signer, 1);
	lua_setfield(L, -2, "rsa_sha256_signer");
	lua_pushinteger(L, 1);
	lua_pushcclosure(L, l_signer, 1);
	lua_setfield(L, -2, "ed25519_signer");
	lua_pushcfunction(L, l_set_signing_threads);
	lua_setfield(L, -2, "set_signing_threads");
	lua_setfield(L, -2, "dkim");
}
