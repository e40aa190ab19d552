/* SPDX-License-Identifier: Apache-2.0 */
/* Redis URL parsing (proto/redis_url.h). */
#include "proto/redis_url.h"

#include <stdlib.h>
#include <string.h>

/* Copies [s, e) into out (size n): 0, or -1 when it does not fit. */
static int copy_span(char *out, size_t n, const char *s, const char *e)
{
	size_t len = (size_t)(e - s);
	if (len >= n)
		return -1;
	memcpy(out, s, len);
	out[len] = '\0';
	return 0;
}

/* Digits only, value within [lo, hi]: 0 and *v, else -1. */
static int number(const char *s, const char *e, long lo, long hi, int *v)
{
	long x = 0;
	if (s == e || e - s > 9)
		return -1;
	for (const char *p = s; p < e; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		x = x * 10 + (*p - '0');
	}
	if (x < lo || x > hi)
		return -1;
	*v = (int)x;
	return 0;
}

int redis_url_parse(const char *url, struct redis_url *out)
{
	memset(out, 0, sizeof(*out));
	out->port = 6379;
	if (strncmp(url, "redis://", 8) != 0)
		return -1;
	const char *p = url + 8;
	const char *end = p + strcspn(p, "/?");
	if (*end == '?')
		return -1; /* a query needs the path's '/' first */
	const char *at = NULL;
	for (const char *q = p; q < end; q++)
		if (*q == '@')
			at = q; /* the last '@' ends the credentials */
	if (at) {
		const char *colon = memchr(p, ':', (size_t)(at - p));
		if (copy_span(out->user, sizeof(out->user), p, colon ? colon : at) != 0)
			return -1;
		if (colon && copy_span(out->password, sizeof(out->password), colon + 1, at) != 0)
			return -1;
		p = at + 1;
	}
	const char *hs = p, *he;
	if (*p == '[') {
		he = memchr(p, ']', (size_t)(end - p));
		if (!he)
			return -1;
		hs = p + 1;
		p = he + 1;
		if (!memchr(hs, ':', (size_t)(he - hs)))
			return -1; /* brackets hold IPv6 addresses only */
	} else {
		he = memchr(p, ':', (size_t)(end - p));
		if (!he)
			he = end;
		p = he;
	}
	if (he == hs || copy_span(out->host, sizeof(out->host), hs, he) != 0)
		return -1;
	for (const char *q = hs; q < he; q++)
		if ((unsigned char)*q <= ' ' || (unsigned char)*q == 0x7f || *q == '@' ||
		    *q == '[' || *q == ']')
			return -1;
	if (p < end) {
		if (*p != ':' || number(p + 1, end, 1, 65535, &out->port) != 0)
			return -1;
	}
	if (*end == '/') {
		const char *db = end + 1;
		const char *qm = strchr(db, '?');
		const char *dbe = qm ? qm : db + strlen(db);
		if (dbe > db && number(db, dbe, 0, 1000000, &out->db) != 0)
			return -1;
		if (qm && strcmp(qm, "?protocol=resp2") != 0 && strcmp(qm, "?protocol=2") != 0)
			return -1;
	}
	return 0;
}
