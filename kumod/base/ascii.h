/* SPDX-License-Identifier: Apache-2.0 */
/* ASCII case mapping for protocol text (domain names, MIME tokens, header
 * field names): independent of the locale, bytes outside A-Z unchanged.
 * Pure functions; anyone may call them. */
#ifndef KUMOD_BASE_ASCII_H
#define KUMOD_BASE_ASCII_H

#include <stddef.h>

/* Lower-cases the NUL-terminated s in place. */
void ascii_lower(char *s);

/* Lower-cases p[0..n) in place. */
void ascii_lower_n(char *p, size_t n);

/* Copies s[0..n) lower-cased into dst, truncated to cap - 1 bytes, and
 * NUL-terminates it (cap > 0). */
void ascii_lower_copy(char *dst, size_t cap, const char *s, size_t n);

#endif
