/* SPDX-License-Identifier: Apache-2.0 */
/* TLS contexts for listeners: configured PEM certificate and key, or a
 * self-signed certificate generated at start-up. */
#ifndef KUMOD_IO_TLS_H
#define KUMOD_IO_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

/* Client contexts, one per (verify, ca_file), created on first use and
 * kept for the process (loop thread only). verify = 0: no certificate
 * checks. verify = 1: SSL_VERIFY_PEER against ca_file (PEM, may hold
 * several certificates) or, when ca_file is NULL or "", the system trust
 * store; the peer name is set per connection (conn_starttls_client).
 * Returns NULL with a message in err when ca_file cannot be loaded. */
SSL_CTX *tls_client_ctx(int verify, const char *ca_file, char *err, size_t errlen);

/* cert/key may be NULL: then a self-signed certificate for `hostname` is
 * generated. Returns NULL with a message in err on failure. */
SSL_CTX *tls_server_ctx_new(const char *cert, const char *key, const char *hostname, char *err,
			    size_t errlen);

#endif
