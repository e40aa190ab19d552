/* SPDX-License-Identifier: Apache-2.0 */
/* Base64 (RFC 4648, standard alphabet, '=' padding): the encoder for
 * RFC 2047 words and HTTP Basic credentials, a strict decoder for the
 * latter and a lenient one for MIME bodies (Content-Transfer-Encoding:
 * base64). Pure functions; anyone may call them. */
#ifndef KUMOD_BASE_BASE64_H
#define KUMOD_BASE_BASE64_H

#include <stddef.h>

#include "base/buf.h"

/* Appends the encoding of p[0..n) to out (no line breaks). */
void base64_encode(struct buf *out, const void *p, size_t n);

/* Decodes s[0..n) into out[0..outlen). Strict: n is a non-zero multiple of
 * 4, only the alphabet, '=' only as the last one or two characters. The
 * decoded length (>= 0), or -1 when s is not canonical base64 or does not
 * fit in outlen bytes. */
long base64_decode(const char *s, size_t n, unsigned char *out, size_t outlen);

/* Appends the decoding of s[0..n) to out, as a MIME reader must (RFC 2045
 * §6.8): characters outside the alphabet (line breaks, white space, junk)
 * are skipped, the first '=' ends the data, and the bits of an incomplete
 * last quantum are dropped. Never fails. */
void base64_decode_lenient(const char *s, size_t n, struct buf *out);

/* As base64_decode_lenient, also taking the URL-safe alphabet's '-' and
 * '_' (RFC 4648 section 5) for '+' and '/': for what mail readers show. */
void base64_decode_lenient_any(const char *s, size_t n, struct buf *out);

/* The value of one hexadecimal digit (either case), or -1. */
int hex_digit_value(int c);

#endif
