/* SPDX-License-Identifier: Apache-2.0 */
#include "proto/duration.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int duration_parse_ms(const char *s, uint64_t *out)
{
	static const struct {
		const char *unit;
		double ms;
	} units[] = {
	    {"ms", 1},		{"msec", 1},	   {"millis", 1},    {"milliseconds", 1},
	    {"millisecond", 1}, {"s", 1e3},	   {"sec", 1e3},     {"secs", 1e3},
	    {"second", 1e3},	{"seconds", 1e3},  {"m", 6e4},	     {"min", 6e4},
	    {"mins", 6e4},	{"minute", 6e4},   {"minutes", 6e4}, {"h", 36e5},
	    {"hr", 36e5},	{"hrs", 36e5},	   {"hour", 36e5},   {"hours", 36e5},
	    {"d", 864e5},	{"day", 864e5},	   {"days", 864e5},  {"w", 6048e5},
	    {"week", 6048e5},	{"weeks", 6048e5},
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
	*out = (uint64_t)(total + 0.5);
	return 0;
}
