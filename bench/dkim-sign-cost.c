/* SPDX-License-Identifier: Apache-2.0 */
/* In-process DKIM signing cost, for bench/dkim-relay.sh (which builds it
 * against build/obj): per message, the whole policy step a KumoMTA policy
 * runs (kumo.dkim.rsa_sha256_signer{...} from the signer cache, then
 * msg:dkim_sign: canonicalize, hash, sign, prepend) on a 1 KiB message,
 * against the raw OpenSSL signature (EVP_PKEY_sign of a SHA-256 digest with
 * the same RSA-2048 key, a reused context), in alternating batches, both in
 * process CPU time so the load of a shared machine does not tilt it.
 *   dkim-sign-cost KEY.pem [N] [ROUNDS]   prints: full_us raw_us per round */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lua/lua_int.h"
#include "spool/message.h"

static double cpu_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: dkim-sign-cost KEY.pem [N] [ROUNDS]\n");
		return 2;
	}
	int n = argc > 2 ? atoi(argv[2]) : 1000, rounds = argc > 3 ? atoi(argv[3]) : 5;
	lua_State *L = luaL_newstate();
	luaL_openlibs(L);
	lua_message__register(L);
	luaL_requiref(L, "kumo", lua_kumo__open, 1);
	lua_pop(L, 1);
	char code[1024];
	snprintf(code, sizeof(code),
		 "local msg = ...\n"
		 "msg:dkim_sign(kumo.dkim.rsa_sha256_signer{ domain = 'example.com', "
		 "selector = 'bench', headers = { 'From', 'To', 'Subject', 'Date', "
		 "'Message-ID' }, key = '%s' })",
		 argv[1]);
	if (luaL_loadstring(L, code) != LUA_OK) {
		fprintf(stderr, "%s\n", lua_tostring(L, -1));
		return 1;
	}
	int fn = luaL_ref(L, LUA_REGISTRYINDEX);
	static char data[2048];
	int len = snprintf(data, sizeof(data),
			   "From: <bench@example.com>\r\nTo: <rcpt@example.net>\r\n"
			   "Subject: bench\r\nDate: Mon, 7 Dec 2026 10:00:00 +0000\r\n"
			   "Message-ID: <bench@example.com>\r\n\r\n");
	while (len < 1024 + 120)
		len += snprintf(data + len, sizeof(data) - (size_t)len,
				"A line of the body, seventy-odd octets long, like text.\r\n");

	FILE *f = fopen(argv[1], "r");
	EVP_PKEY *key = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
	if (f)
		fclose(f);
	EVP_PKEY_CTX *ctx = key ? EVP_PKEY_CTX_new(key, NULL) : NULL;
	if (!ctx || EVP_PKEY_sign_init(ctx) != 1 ||
	    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) != 1 ||
	    EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) != 1) {
		fprintf(stderr, "cannot load %s\n", argv[1]);
		return 1;
	}
	unsigned char digest[32] = {1}, sig[512];
	for (int r = 0; r < rounds; r++) {
		double t0 = cpu_s();
		for (int i = 0; i < n; i++) {
			struct message *m = message_new();
			message_set_data(m, data, (size_t)len);
			lua_rawgeti(L, LUA_REGISTRYINDEX, fn);
			lua_message__push(L, m);
			if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
				fprintf(stderr, "%s\n", lua_tostring(L, -1));
				return 1;
			}
			message_unref(m);
		}
		lua_gc(L, LUA_GCCOLLECT);
		double t1 = cpu_s();
		for (int i = 0; i < n; i++) {
			size_t sl = sizeof(sig);
			if (EVP_PKEY_sign(ctx, sig, &sl, digest, sizeof(digest)) != 1)
				return 1;
		}
		double t2 = cpu_s();
		printf("%.1f %.1f\n", (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6);
	}
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(key);
	lua_close(L);
	return 0;
}
