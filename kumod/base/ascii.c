/* SPDX-License-Identifier: Apache-2.0 */
/* ASCII case mapping for protocol text. */
#include "base/ascii.h"

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

void ascii_lower(char *s)
{
	for (; *s; s++)
		*s = lower(*s);
}

void ascii_lower_n(char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = lower(p[i]);
}

void ascii_lower_copy(char *dst, size_t cap, const char *s, size_t n)
{
	if (n >= cap)
		n = cap - 1;
	for (size_t i = 0; i < n; i++)
		dst[i] = lower(s[i]);
	dst[n] = '\0';
}
