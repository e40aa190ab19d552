/* SPDX-License-Identifier: Apache-2.0 */
#include "proto/duration.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <strings.h>
#include <time.h>

/* The sum of the parts in milliseconds (fractional), or -1. */
static int parse_total_ms(const char *s, double *out)
{
	static const struct {
		const char *unit;
		double ms;
	} units[] = {
	    {"us", 1e-3},	   {"usec", 1e-3},     {"micros", 1e-3},  {"microseconds", 1e-3},
	    {"microsecond", 1e-3}, {"ms", 1},	       {"msec", 1},	  {"millis", 1},
	    {"milliseconds", 1},   {"millisecond", 1}, {"s", 1e3},	  {"sec", 1e3},
	    {"secs", 1e3},	   {"second", 1e3},    {"seconds", 1e3},  {"m", 6e4},
	    {"min", 6e4},	   {"mins", 6e4},      {"minute", 6e4},	  {"minutes", 6e4},
	    {"h", 36e5},	   {"hr", 36e5},       {"hrs", 36e5},	  {"hour", 36e5},
	    {"hours", 36e5},	   {"d", 864e5},       {"day", 864e5},	  {"days", 864e5},
	    {"w", 6048e5},	   {"week", 6048e5},   {"weeks", 6048e5},
	};
	double total = 0;
	int parts = 0;
	while (*s) {
		while (isspace((unsigned char)*s))
			s++;
		if (!*s)
			break;
		char *end;
		if (!isdigit((unsigned char)*s))
			return -1;
		double v = strtod(s, &end);
		s = end;
		while (isspace((unsigned char)*s))
			s++;
		const char *u = s;
		while (isalpha((unsigned char)*s))
			s++;
		size_t ulen = (size_t)(s - u);
		double mul = -1;
		for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
			if (strlen(units[i].unit) == ulen &&
			    strncasecmp(units[i].unit, u, ulen) == 0)
				mul = units[i].ms;
		if (mul < 0)
			return -1;
		total += v * mul;
		parts++;
	}
	if (!parts || total > 1e15)
		return -1;
	*out = total;
	return 0;
}

int duration_parse_ms(const char *s, uint64_t *out)
{
	double ms;
	if (parse_total_ms(s, &ms) != 0)
		return -1;
	*out = (uint64_t)(ms + 0.5);
	return 0;
}

int duration_parse_us(const char *s, uint64_t *out)
{
	double ms;
	if (parse_total_ms(s, &ms) != 0)
		return -1;
	*out = (uint64_t)(ms * 1000 + 0.5);
	return 0;
}

void duration_format_ms(uint64_t ms, char *out, size_t outlen)
{
	static const struct {
		const char *unit;
		uint64_t ms;
	} units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
	size_t off = 0;
	if (outlen)
		out[0] = 0;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]) && off < outlen; i++) {
		uint64_t n = ms / units[i].ms;
		if (!n)
			continue;
		ms -= n * units[i].ms;
		int w = snprintf(out + off, outlen - off, "%s%llu%s", off ? " " : "",
				 (unsigned long long)n, units[i].unit);
		off += w > 0 ? (size_t)w : 0;
	}
	if (outlen && !out[0])
		snprintf(out, outlen, "0s");
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil), so no time zone state (timegm) is involved. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

/* n decimal digits at *s into *v; advances *s. */
static int digits(const char **s, int n, int *v)
{
	*v = 0;
	for (int i = 0; i < n; i++, (*s)++) {
		if (!isdigit((unsigned char)**s))
			return -1;
		*v = *v * 10 + (**s - '0');
	}
	return 0;
}

int rfc3339_parse_ms(const char *s, uint64_t *out)
{
	int y, mo, d, h, mi, sec;
	if (digits(&s, 4, &y) || *s++ != '-' || digits(&s, 2, &mo) || *s++ != '-' ||
	    digits(&s, 2, &d) || (*s != 'T' && *s != 't' && *s != ' ') || !*s++ ||
	    digits(&s, 2, &h) || *s++ != ':' || digits(&s, 2, &mi) || *s++ != ':' ||
	    digits(&s, 2, &sec))
		return -1;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		return -1;
	int64_t frac_ms = 0;
	if (*s == '.') {
		s++;
		if (!isdigit((unsigned char)*s))
			return -1;
		for (int scale = 100; isdigit((unsigned char)*s); s++, scale /= 10)
			frac_ms += (*s - '0') * scale;
	}
	int64_t off_s = 0;
	if (*s == 'Z' || *s == 'z') {
		s++;
	} else if (*s == '+' || *s == '-') {
		int sign = *s++ == '-' ? -1 : 1, oh, om;
		if (digits(&s, 2, &oh) || *s++ != ':' || digits(&s, 2, &om) || oh > 23 || om > 59)
			return -1;
		off_s = sign * (oh * 3600 + om * 60);
	} else {
		return -1;
	}
	if (*s)
		return -1;
	int64_t t = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 +
		    sec - off_s;
	if (t < 0)
		return -1;
	*out = (uint64_t)t * 1000 + (uint64_t)frac_ms;
	return 0;
}

void rfc3339_format_ms(uint64_t ms, char *out, size_t outlen)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	char head[32];
	strftime(head, sizeof(head), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, outlen, "%s.%03uZ", head, (unsigned)(ms % 1000));
}
