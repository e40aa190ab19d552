/* SPDX-License-Identifier: Apache-2.0 */
/* TLS contexts for listeners: configured PEM certificate and key, or a
 * self-signed certificate generated at start-up. */
#ifndef KUMOD_IO_TLS_H
#define KUMOD_IO_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

/* cert/key may be NULL: then a self-signed certificate for `hostname` is
 * generated. Returns NULL with a message in err on failure. */
SSL_CTX *tls_server_ctx_new(const char *cert, const char *key, const char *hostname, char *err,
			    size_t errlen);

#endif
