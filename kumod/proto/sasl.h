/* SPDX-License-Identifier: Apache-2.0 */
/* SMTP AUTH responses (RFC 4954): the base64 a client sends after AUTH or
 * a 334, and the PLAIN message inside it (RFC 4616: authzid NUL authcid
 * NUL passwd). Pure; the session (kumod/smtp) calls it and wipes buf. */
#ifndef KUMOD_PROTO_SASL_H
#define KUMOD_PROTO_SASL_H

#include <stddef.h>

/* Decodes one response into buf (NUL-terminated; "=" is the empty
 * response). The decoded length, or -1 when it is not canonical base64 or
 * does not fit in buflen - 1 bytes. */
long sasl_response_decode(const char *b64, size_t n, char *buf, size_t buflen);

/* 1 when p[0..n) can be an identity in logs and conn_meta: no control
 * bytes, at most 255 bytes. */
int sasl_identity_ok(const char *p, size_t n);

enum sasl_plain_status {
	SASL_PLAIN_OK = 0,
	SASL_PLAIN_BAD_BASE64 = -1, /* 501 5.5.2 Invalid base64 */
	SASL_PLAIN_MALFORMED = -2,  /* not exactly two NULs, empty authcid, bad identity */
};

/* Decodes a PLAIN response into buf and points authz, authc and pass into
 * it (each NUL-terminated; authz may be empty). */
enum sasl_plain_status sasl_plain_decode(const char *b64, size_t n, char *buf, size_t buflen,
					 const char **authz, const char **authc, const char **pass);

#endif
