/* SPDX-License-Identifier: Apache-2.0 */
/* Server TLS contexts: PEM files or a generated self-signed certificate. */
#include "io/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "base/xalloc.h"

static void tls_err(char *err, size_t errlen, const char *what)
{
	char why[256] = "";
	unsigned long e = ERR_get_error();
	if (e)
		ERR_error_string_n(e, why, sizeof(why));
	snprintf(err, errlen, "%s%s%s", what, *why ? ": " : "", why);
	ERR_clear_error();
}

/* A fresh EC P-256 key and a one-year self-signed certificate. */
static int tls_self_signed(SSL_CTX *ctx, const char *hostname, char *err, size_t errlen)
{
	EVP_PKEY *pkey = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	int ok = 0;
	if (!pkey || !x) {
		tls_err(err, errlen, "generating a self-signed certificate");
		goto out;
	}
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), (long)time(NULL));
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 365L * 24 * 3600);
	X509_set_pubkey(x, pkey);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)hostname, -1,
				   -1, 0);
	X509_set_issuer_name(x, name);
	if (!X509_sign(x, pkey, EVP_sha256()) || SSL_CTX_use_certificate(ctx, x) != 1 ||
	    SSL_CTX_use_PrivateKey(ctx, pkey) != 1) {
		tls_err(err, errlen, "installing the self-signed certificate");
		goto out;
	}
	ok = 1;
out:
	X509_free(x);
	EVP_PKEY_free(pkey);
	return ok;
}

SSL_CTX *tls_server_ctx_new(const char *cert, const char *key, const char *hostname, char *err,
			    size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		tls_err(err, errlen, "creating a TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_RELEASE_BUFFERS);
	if (cert || key) {
		if (!cert || !key) {
			snprintf(err, errlen,
				 "tls_certificate and tls_private_key must be set together");
			goto fail;
		}
		if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
			char what[600];
			snprintf(what, sizeof(what), "loading tls_certificate '%s'", cert);
			tls_err(err, errlen, what);
			goto fail;
		}
		if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
		    SSL_CTX_check_private_key(ctx) != 1) {
			char what[600];
			snprintf(what, sizeof(what), "loading tls_private_key '%s'", key);
			tls_err(err, errlen, what);
			goto fail;
		}
	} else if (!tls_self_signed(ctx, hostname, err, errlen)) {
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* --- client contexts ------------------------------------------------------ */

struct tls_client_ctx {
	int verify;
	char *ca_file; /* "" = system trust store */
	SSL_CTX *ctx;
	struct tls_client_ctx *next;
};

static struct tls_client_ctx *tls_client_ctxs;

static SSL_CTX *tls_client_ctx_make(int verify, const char *ca_file, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx) {
		tls_err(err, errlen, "creating a TLS client context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_set_verify(ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	if (!verify)
		return ctx;
	int ok = *ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
			  : SSL_CTX_set_default_verify_paths(ctx);
	if (ok != 1) {
		char what[600];
		snprintf(what, sizeof(what), "loading tls_ca_file '%s'",
			 *ca_file ? ca_file : "(system trust store)");
		tls_err(err, errlen, what);
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

SSL_CTX *tls_client_ctx(int verify, const char *ca_file, char *err, size_t errlen)
{
	const char *key = verify && ca_file ? ca_file : "";
	for (struct tls_client_ctx *t = tls_client_ctxs; t; t = t->next)
		if (t->verify == !!verify && strcmp(t->ca_file, key) == 0)
			return t->ctx;
	SSL_CTX *ctx = tls_client_ctx_make(verify, key, err, errlen);
	if (!ctx)
		return NULL;
	struct tls_client_ctx *t = xcalloc(1, sizeof(*t));
	t->verify = !!verify;
	t->ca_file = xstrdup(key);
	t->ctx = ctx;
	t->next = tls_client_ctxs;
	tls_client_ctxs = t;
	return ctx;
}
