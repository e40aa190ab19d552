/* SPDX-License-Identifier: Apache-2.0 */
/* 8-bit message content for a server without 8BITMIME (RFC 6152 §3): the
 * message is rewritten so that every MIME leaf part holding 8-bit octets is
 * quoted-printable (RFC 2045 §6.7), recursing into multipart and
 * message/rfc822 parts, which are never encoded themselves (RFC 2045 §6.4).
 * Decoding each converted part gives its original bytes; parts without 8-bit
 * octets are copied unchanged.
 * Owner: the caller owns `out`; pure, no I/O.
 * Callers: kumod/smtp/client.c, tests/unit, fuzz/fuzz_mime8.c. */
#ifndef KUMOD_PROTO_MIME8_H
#define KUMOD_PROTO_MIME8_H

#include <stddef.h>

#include "base/buf.h"

/* 1 when any octet of p[0..n) has the high bit set. */
int mime8_has_8bit(const char *p, size_t n);

/* Length of the header section of an RFC 5322 message, up to and including
 * the empty line (CRLF or LF) that ends it; n when there is none. */
size_t mime8_header_len(const char *p, size_t n);

struct mime8_result {
	size_t converted; /* leaf parts re-encoded as quoted-printable */
	const char *why;  /* when conversion is impossible: a static reason */
};

/* Appends the 7-bit form of the message in[0..len) to out (lines end with
 * CRLF). Returns 0, or -EINVAL when the message cannot be made 7-bit without
 * losing information (8-bit octets in a header field, in a multipart preamble
 * or epilogue, in a part declared "binary" or nested too deep): then res->why
 * says which and out holds partial output the caller discards. */
int mime8_to_7bit(const char *in, size_t len, struct buf *out, struct mime8_result *res);

#endif
