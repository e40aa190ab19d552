/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.crypto (KumoMTA's mod-crypto and mod-aws-sigv4) over OpenSSL:
 *  aes_encrypt_block(algo, plaintext, { key = KeySource }) -> string: AES-128/256 (16 or
 *      32 byte key) with PKCS#7 padding; 'Cbc' returns a random IV followed by the
 *      ciphertext, 'Ecb' the ciphertext alone;
 *  aes_decrypt_block(algo, ciphertext, { key = KeySource }) -> BinaryResult (the kumo.digest
 *      result object: .bytes .hex .base64 ...);
 *  aws_sign_v4(params) -> { authorization, timestamp, signature, canonical_request,
 *      string_to_sign }: AWS Signature Version 4 as KumoMTA computes it. */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"
#include "base/xalloc.h"
#include "lua/lua_int.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Pushes the bytes of the KeySource at idx (kumo.secrets.load resolves it). */
static void push_keysource(lua_State *L, int idx)
{
	idx = lua_absindex(L, idx);
	lua_getglobal(L, "kumo");
	lua_getfield(L, -1, "secrets");
	lua_getfield(L, -1, "load");
	lua_pushvalue(L, idx);
	lua_call(L, 1, 1);
	lua_replace(L, -3);
	lua_pop(L, 1);
}

/* --- AES ------------------------------------------------------------------------------ */

/* The cipher for algo ('Cbc' or 'Ecb', KumoMTA's names) and the key of the config at 3
 * (pushed on the stack: keep it there while the key is used). */
static const EVP_CIPHER *aes_args(lua_State *L, const char *fn, int *cbc, const char **key)
{
	const char *algo = luaL_checkstring(L, 1);
	luaL_checktype(L, 2, LUA_TSTRING);
	luaL_checktype(L, 3, LUA_TTABLE);
	if (strcmp(algo, "Cbc") != 0 && strcmp(algo, "Ecb") != 0)
		luaL_error(L, "%s: unknown algorithm '%s' (Cbc or Ecb)", fn, algo);
	*cbc = algo[0] == 'C';
	for (lua_pushnil(L); lua_next(L, 3); lua_pop(L, 1))
		if (lua_type(L, -2) != LUA_TSTRING || strcmp(lua_tostring(L, -2), "key") != 0)
			luaL_error(L, "%s: unknown key '%s' in the key config (key)", fn,
				   lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?");
	if (lua_getfield(L, 3, "key") == LUA_TNIL)
		luaL_error(L, "%s: the key config needs key (a KeySource)", fn);
	push_keysource(L, -1);
	lua_remove(L, -2);
	size_t kn;
	*key = lua_tolstring(L, -1, &kn);
	if (kn == 16)
		return *cbc ? EVP_aes_128_cbc() : EVP_aes_128_ecb();
	if (kn == 32)
		return *cbc ? EVP_aes_256_cbc() : EVP_aes_256_ecb();
	luaL_error(L, "%s: key length must be 16 or 32 bytes, got %d", fn, (int)kn);
	return NULL;
}

/* Runs the cipher over in; the result (or NULL with nothing pushed) in a new buffer. */
static unsigned char *aes_run(const EVP_CIPHER *c, int enc, const char *key,
			      const unsigned char *iv, const unsigned char *in, size_t n,
			      size_t *outn)
{
	if (n > (size_t)INT32_MAX - 32)
		return NULL;
	unsigned char *out = malloc(n + 32);
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int l1 = 0, l2 = 0;
	int ok = out && ctx &&
		 EVP_CipherInit_ex(ctx, c, NULL, (const unsigned char *)key, iv, enc) == 1 &&
		 EVP_CipherUpdate(ctx, out, &l1, in, (int)n) == 1 &&
		 EVP_CipherFinal_ex(ctx, out + l1, &l2) == 1;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok) {
		free(out);
		return NULL;
	}
	*outn = (size_t)l1 + (size_t)l2;
	return out;
}

static int l_aes_encrypt(lua_State *L)
{
	static const char fn[] = "kumo.crypto.aes_encrypt_block";
	int cbc;
	const char *key;
	const EVP_CIPHER *c = aes_args(L, fn, &cbc, &key);
	size_t n, outn;
	const char *in = lua_tolstring(L, 2, &n);
	unsigned char iv[16];
	if (cbc && RAND_bytes(iv, sizeof(iv)) != 1)
		return luaL_error(L, "%s: no random IV (OpenSSL RAND_bytes failed)", fn);
	unsigned char *out =
	    aes_run(c, 1, key, cbc ? iv : NULL, (const unsigned char *)in, n, &outn);
	if (!out)
		return luaL_error(L, "%s: encryption failed", fn);
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	if (cbc)
		luaL_addlstring(&b, (const char *)iv, sizeof(iv));
	luaL_addlstring(&b, (const char *)out, outn);
	free(out);
	luaL_pushresult(&b);
	return 1;
}

static int l_aes_decrypt(lua_State *L)
{
	static const char fn[] = "kumo.crypto.aes_decrypt_block";
	int cbc;
	const char *key;
	const EVP_CIPHER *c = aes_args(L, fn, &cbc, &key);
	size_t n, outn;
	const unsigned char *in = (const unsigned char *)lua_tolstring(L, 2, &n);
	if (cbc && n < 16)
		return luaL_error(L, "%s: ciphertext must be prefixed by iv with len at least 16",
				  fn);
	const unsigned char *iv = cbc ? in : NULL;
	if (cbc)
		in += 16, n -= 16;
	unsigned char *out = aes_run(c, 0, key, iv, in, n, &outn);
	if (!out)
		return luaL_error(L,
				  "%s: decryption failed (wrong key or algorithm, or the data is "
				  "not a whole number of padded blocks)",
				  fn);
	lua_crypto__push_binary(L, out, outn);
	free(out);
	return 1;
}

/* --- AWS Signature Version 4 ----------------------------------------------------------- */

/* KumoMTA's percent-encoding set for SigV4: controls, non-ASCII and these. */
static int sig_encode_byte(unsigned char c)
{
	return c < 0x20 || c >= 0x7F || strchr(" !\"#$%&'()*+,/:;=?@[]", c);
}

static void sig_encode(struct buf *out, const char *s, size_t n)
{
	static const char hexd[] = "0123456789ABCDEF";
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (sig_encode_byte(c))
			buf_printf(out, "%%%c%c", hexd[c >> 4], hexd[c & 15]);
		else
			buf_appendc(out, (char)c);
	}
}

static void sha256_hex(const void *p, size_t n, char out[65])
{
	unsigned char md[32];
	unsigned len = 0;
	EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void hmac256(const void *key, size_t kn, const char *msg, unsigned char out[32])
{
	unsigned len = 32;
	HMAC(EVP_sha256(), key, (int)kn, (const unsigned char *)msg, strlen(msg), out, &len);
}

/* AWS's "trimall": runs of spaces and tabs become one space, none at the ends; quoted
 * text is kept as it is (as KumoMTA does). */
static void trimall(struct buf *out, const char *v)
{
	int quoted = 0, pending = 0, emitted = 0;
	for (const char *p = v; *p; p++) {
		if (*p == '"') {
			if (pending && emitted)
				buf_appendc(out, ' ');
			pending = 0;
			buf_appendc(out, '"');
			emitted = 1;
			quoted = !quoted;
		} else if (quoted) {
			buf_appendc(out, *p);
		} else if (*p == ' ' || *p == '\t') {
			pending = 1;
		} else {
			if (pending && emitted)
				buf_appendc(out, ' ');
			pending = 0;
			buf_appendc(out, *p);
			emitted = 1;
		}
	}
}

struct kv {
	char *k, *v;
};

static int kv_cmp(const void *a, const void *b)
{
	const struct kv *x = a, *y = b;
	int c = strcmp(x->k, y->k);
	return c ? c : strcmp(x->v, y->v);
}

struct kvs {
	struct kv *a;
	size_t n, cap;
};

static void kvs_set(struct kvs *s, const char *k, const char *v)
{
	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->a[i].k, k)) {
			free(s->a[i].v);
			s->a[i].v = xstrdup(v);
			return;
		}
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 8;
		s->a = xrealloc(s->a, s->cap * sizeof(*s->a));
	}
	s->a[s->n].k = xstrdup(k);
	s->a[s->n++].v = xstrdup(v);
}

static void kvs_free(struct kvs *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->a[i].k);
		free(s->a[i].v);
	}
	free(s->a);
	memset(s, 0, sizeof(*s));
}

/* The request being signed; freed by sig_free (a raise in between leaks nothing: all of
 * it is copied out of Lua only after the parameters were checked). */
struct sig {
	const char *region, *service, *method, *uri, *payload, *token;
	size_t payload_len;
	int64_t when;
};

static const char *const sig_keys[] = {
    "access_key", "headers", "method",	      "payload",   "query_params", "region",
    "secret_key", "service", "session_token", "timestamp", "uri",
};

/* A string field of the params (numbers are taken as their text); NULL when absent. */
static const char *sig_str(lua_State *L, const char *field, int required, size_t *len)
{
	int t = lua_getfield(L, 1, field);
	if (t == LUA_TNIL && !required) {
		lua_pop(L, 1);
		return NULL;
	}
	if (t != LUA_TSTRING && t != LUA_TNUMBER)
		luaL_error(L, "kumo.crypto.aws_sign_v4: %s %s (a string)",
			   t == LUA_TNIL ? "missing field" : "bad field", field);
	const char *s = lua_tolstring(L, -1, len);
	lua_pop(L, 1); /* still referenced by the params table */
	return s;
}

/* A table of string to string at field of the params into out. */
static void sig_map(lua_State *L, const char *field, struct kvs *out, int lower)
{
	int t = lua_getfield(L, 1, field);
	if (t == LUA_TNIL) {
		lua_pop(L, 1);
		return;
	}
	if (t != LUA_TTABLE)
		luaL_error(L, "kumo.crypto.aws_sign_v4: %s must be a table", field);
	for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) {
		if (lua_type(L, -2) != LUA_TSTRING ||
		    (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
			luaL_error(L, "kumo.crypto.aws_sign_v4: %s: keys and values are strings",
				   field);
		char k[256];
		snprintf(k, sizeof(k), "%s", lua_tostring(L, -2));
		if (lower)
			for (char *p = k; *p; p++)
				if (*p >= 'A' && *p <= 'Z')
					*p = (char)(*p + 32);
		lua_pushvalue(L, -1);
		kvs_set(out, k, lua_tostring(L, -1));
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
}

/* The timestamp field: a kumo.time Time, or RFC 3339 text; now when absent. */
static int64_t sig_time(lua_State *L)
{
	int t = lua_getfield(L, 1, "timestamp");
	if (t == LUA_TNIL) {
		lua_pop(L, 1);
		return (int64_t)time(NULL);
	}
	if (t == LUA_TSTRING) {
		lua_getglobal(L, "kumo");
		lua_getfield(L, -1, "time");
		lua_getfield(L, -1, "parse_rfc3339");
		lua_pushvalue(L, -4);
		lua_call(L, 1, 1);
		lua_replace(L, -4);
		lua_pop(L, 2);
	}
	if (lua_type(L, -1) != LUA_TUSERDATA ||
	    lua_getfield(L, -1, "unix_timestamp") != LUA_TNUMBER)
		luaL_error(L, "kumo.crypto.aws_sign_v4: timestamp must be a kumo.time Time or RFC "
			      "3339 text");
	int64_t s = (int64_t)lua_tointeger(L, -1);
	lua_pop(L, 2);
	return s;
}

static int l_aws_sign_v4(lua_State *L)
{
	static const char fn[] = "kumo.crypto.aws_sign_v4";
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	for (lua_pushnil(L); lua_next(L, 1); lua_pop(L, 1)) {
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
		int known = 0;
		for (size_t i = 0; i < NELEM(sig_keys); i++)
			known |= !strcmp(sig_keys[i], k);
		if (!known)
			return luaL_error(L, "%s: unknown field '%s'", fn, k);
	}
	struct sig s = {0};
	size_t n;
	s.region = sig_str(L, "region", 1, &n);
	s.service = sig_str(L, "service", 1, &n);
	s.method = sig_str(L, "method", 1, &n);
	s.uri = sig_str(L, "uri", 1, &n);
	s.payload = sig_str(L, "payload", 0, &s.payload_len);
	s.token = sig_str(L, "session_token", 0, &n);
	s.when = sig_time(L);
	for (const char *f = "access_key"; f; f = f[0] == 'a' ? "secret_key" : NULL) {
		if (lua_getfield(L, 1, f) == LUA_TNIL)
			return luaL_error(L, "%s: missing field %s (a KeySource)", fn, f);
		push_keysource(L, -1);
		lua_remove(L, -2);
	}
	size_t akn, skn;
	const char *ak = lua_tolstring(L, 2, &akn), *sk = lua_tolstring(L, 3, &skn);
	if (memchr(ak, 0, akn) || memchr(sk, 0, skn))
		return luaL_error(L, "%s: access_key and secret_key must be text", fn);

	struct kvs q = {0}, h = {0};
	sig_map(L, "query_params", &q, 0);
	sig_map(L, "headers", &h, 1);
	int has_host = 0;
	for (size_t i = 0; i < h.n; i++)
		has_host |= !strcmp(h.a[i].k, "host");
	if (!has_host) {
		kvs_free(&q);
		kvs_free(&h);
		return luaL_error(L, "%s: headers must include 'host'", fn);
	}
	time_t tt = (time_t)s.when;
	struct tm tm;
	gmtime_r(&tt, &tm);
	char amz_date[32], date[16], payload_hash[65];
	strftime(amz_date, sizeof(amz_date), "%Y%m%dT%H%M%SZ", &tm);
	strftime(date, sizeof(date), "%Y%m%d", &tm);
	sha256_hex(s.payload ? s.payload : "", s.payload ? s.payload_len : 0, payload_hash);
	kvs_set(&h, "x-amz-date", amz_date);
	if (s.token)
		kvs_set(&h, "x-amz-security-token", s.token);
	if (!strcmp(s.service, "s3"))
		kvs_set(&h, "x-amz-content-sha256", payload_hash);

	struct buf creq, signed_h, sts, tmp;
	buf_init(&creq);
	buf_init(&signed_h);
	buf_init(&sts);
	buf_init(&tmp);
	buf_printf(&creq, "%s\n", s.method);
	if (!s.uri[0]) {
		buf_appendc(&creq, '/');
	} else {
		for (const char *p = s.uri;;) {
			size_t seg = strcspn(p, "/");
			sig_encode(&creq, p, seg);
			if (!p[seg])
				break;
			buf_appendc(&creq, '/');
			p += seg + 1;
		}
	}
	buf_appendc(&creq, '\n');
	/* query: each key and value encoded, then sorted */
	for (size_t i = 0; i < q.n; i++) {
		buf_reset(&tmp);
		sig_encode(&tmp, q.a[i].k, strlen(q.a[i].k));
		buf_appendc(&tmp, 0);
		size_t vk = tmp.len;
		sig_encode(&tmp, q.a[i].v, strlen(q.a[i].v));
		char *ek = xstrdup(buf_cstr(&tmp)), *ev = xstrndup(tmp.data + vk, tmp.len - vk);
		free(q.a[i].k);
		free(q.a[i].v);
		q.a[i].k = ek;
		q.a[i].v = ev;
	}
	if (q.n)
		qsort(q.a, q.n, sizeof(*q.a), kv_cmp);
	for (size_t i = 0; i < q.n; i++)
		buf_printf(&creq, "%s%s=%s", i ? "&" : "", q.a[i].k, q.a[i].v);
	buf_appendc(&creq, '\n');
	if (h.n)
		qsort(h.a, h.n, sizeof(*h.a), kv_cmp);
	for (size_t i = 0; i < h.n; i++) {
		buf_printf(&creq, "%s:", h.a[i].k);
		trimall(&creq, h.a[i].v);
		buf_appendc(&creq, '\n');
		buf_printf(&signed_h, "%s%s", i ? ";" : "", h.a[i].k);
	}
	buf_printf(&creq, "\n%s\n%s", buf_cstr(&signed_h), payload_hash);

	char creq_hash[65];
	sha256_hex(creq.data, creq.len, creq_hash);
	buf_printf(&sts, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s", amz_date, date,
		   s.region, s.service, creq_hash);

	unsigned char k1[32], k2[32], k3[32], k4[32], sig[32];
	buf_reset(&tmp);
	buf_printf(&tmp, "AWS4%s", sk);
	hmac256(tmp.data, tmp.len, date, k1);
	hmac256(k1, 32, s.region, k2);
	hmac256(k2, 32, s.service, k3);
	hmac256(k3, 32, "aws4_request", k4);
	buf_appendc(&sts, 0);
	hmac256(k4, 32, sts.data, sig);
	sts.len--;
	char sig_hex[65];
	for (int i = 0; i < 32; i++)
		snprintf(sig_hex + 2 * i, 3, "%02x", sig[i]);

	lua_createtable(L, 0, 5);
	lua_pushfstring(L,
			"AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, "
			"Signature=%s",
			ak, date, s.region, s.service, buf_cstr(&signed_h), sig_hex);
	lua_setfield(L, -2, "authorization");
	lua_pushstring(L, amz_date);
	lua_setfield(L, -2, "timestamp");
	lua_pushstring(L, sig_hex);
	lua_setfield(L, -2, "signature");
	lua_pushlstring(L, creq.data, creq.len);
	lua_setfield(L, -2, "canonical_request");
	lua_pushlstring(L, sts.data, sts.len);
	lua_setfield(L, -2, "string_to_sign");
	OPENSSL_cleanse(k1, 32);
	OPENSSL_cleanse(k4, 32);
	if (tmp.data)
		OPENSSL_cleanse(tmp.data, tmp.len);
	buf_free(&creq);
	buf_free(&signed_h);
	buf_free(&sts);
	buf_free(&tmp);
	kvs_free(&q);
	kvs_free(&h);
	return 1;
}

static const luaL_Reg funcs[] = {
    {"aes_encrypt_block", l_aes_encrypt},
    {"aes_decrypt_block", l_aes_decrypt},
    {"aws_sign_v4", l_aws_sign_v4},
    {NULL, NULL},
};

void lua_crypto_aws__register(lua_State *L)
{
	luaL_newlib(L, funcs);
	lua_setfield(L, -2, "crypto");
}
