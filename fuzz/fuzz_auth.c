/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `auth`: kumod/proto/sasl.c (the SMTP AUTH exchange: a client's base64
 * response and the PLAIN message in it). Input: the response line as sent. Invariants: the
 * decoded length fits the buffer and the result is NUL-terminated; PLAIN succeeds only with
 * exactly two NULs and a non-empty authcid, and then authz, authc and pass lie inside the
 * buffer, end at its NULs, hold no control bytes in the identities, and re-encoded
 * (authz NUL authc NUL pass, base64) give back the input when it was canonical base64. */
#include <stdint.h>
#include <string.h>

#include "base/base64.h"
#include "base/buf.h"
#include "fuzz_check.h"
#include "proto/sasl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	char buf[256];
	long len = sasl_response_decode(in, size, buf, sizeof(buf));
	CHECK(len < (long)sizeof(buf));
	if (len >= 0)
		CHECK(buf[len] == 0);
	const char *authz, *authc, *pass;
	enum sasl_plain_status st =
	    sasl_plain_decode(in, size, buf, sizeof(buf), &authz, &authc, &pass);
	if (st != SASL_PLAIN_OK)
		return 0;
	CHECK(len >= 0);
	CHECK(authz == buf && authc > authz && pass > authc && pass <= buf + len);
	CHECK(*authc && sasl_identity_ok(authz, strlen(authz)) &&
	      sasl_identity_ok(authc, strlen(authc)));
	CHECK(strlen(authz) + 1 + strlen(authc) + 1 + strlen(pass) == (size_t)len);
	if (size == 1 && in[0] == '=')
		return 0; /* the empty response never holds two NULs */
	struct buf raw, b64;
	buf_init(&raw);
	buf_init(&b64);
	buf_append(&raw, buf, (size_t)len);
	base64_encode(&b64, raw.data, raw.len);
	CHECK(b64.len == size && memcmp(b64.data, in, size) == 0); /* the decoder is strict */
	buf_free(&raw);
	buf_free(&b64);
	return 0;
}
