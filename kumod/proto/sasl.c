/* SPDX-License-Identifier: Apache-2.0 */
/* SMTP AUTH responses: base64 and the PLAIN message (RFC 4954, RFC 4616). */
#include "proto/sasl.h"

#include <string.h>

#include "base/base64.h"

long sasl_response_decode(const char *b64, size_t n, char *buf, size_t buflen)
{
	if (!buflen)
		return -1;
	if (n == 1 && b64[0] == '=') {
		buf[0] = 0;
		return 0;
	}
	long len = n ? base64_decode(b64, n, (unsigned char *)buf, buflen - 1) : -1;
	if (len >= 0)
		buf[len] = 0;
	return len;
}

int sasl_identity_ok(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
			return 0;
	return n <= 255;
}

enum sasl_plain_status sasl_plain_decode(const char *b64, size_t n, char *buf, size_t buflen,
					 const char **authz, const char **authc, const char **pass)
{
	long len = sasl_response_decode(b64, n, buf, buflen);
	if (len < 0)
		return SASL_PLAIN_BAD_BASE64;
	const char *end = buf + len;
	const char *c = memchr(buf, 0, (size_t)len);
	const char *p = c ? memchr(c + 1, 0, (size_t)(end - c - 1)) : NULL;
	if (!p || memchr(p + 1, 0, (size_t)(end - p - 1)) || !c[1] ||
	    !sasl_identity_ok(buf, (size_t)(c - buf)) ||
	    !sasl_identity_ok(c + 1, (size_t)(p - c - 1)))
		return SASL_PLAIN_MALFORMED;
	*authz = buf;
	*authc = c + 1;
	*pass = p + 1;
	return SASL_PLAIN_OK;
}
