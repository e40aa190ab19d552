/* SPDX-License-Identifier: Apache-2.0 */
#include "proto/json_compact.h"

#include <stdio.h>
#include <string.h>

#include "proto/console_proto.h"

/* jansson's real format: "%.17g", ".0" when it reads as an integer, and
 * the exponent without '+' or leading zeros ("1e+20" -> "1e20"). */
static void real_out(struct buf *b, double d)
{
	char s[40];
	int n = snprintf(s, sizeof(s), "%.17g", d);
	if (n < 0 || (size_t)n >= sizeof(s))
		n = 0;
	for (int i = 0; i < n; i++)
		if (s[i] == ',') /* a locale's decimal point */
			s[i] = '.';
	char *e = memchr(s, 'e', (size_t)n);
	if (!memchr(s, '.', (size_t)n) && !e) {
		buf_append(b, s, (size_t)n);
		buf_append(b, ".0", 2);
		return;
	}
	if (!e) {
		buf_append(b, s, (size_t)n);
		return;
	}
	char *p = e + 1;
	buf_append(b, s, (size_t)(p - s));
	if (*p == '+')
		p++;
	else if (*p == '-')
		buf_appendc(b, *p++);
	while (*p == '0' && p[1])
		p++;
	buf_appends(b, p);
}

void json_compact(struct buf *b, const json_t *v)
{
	const char *k;
	json_t *x;
	size_t i;
	int first = 1;
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		buf_appendc(b, '{');
		json_object_foreach((json_t *)v, k, x)
		{
			if (!first)
				buf_appendc(b, ',');
			first = 0;
			console_json_strn(b, k, strlen(k));
			buf_appendc(b, ':');
			json_compact(b, x);
		}
		buf_appendc(b, '}');
		break;
	case JSON_ARRAY:
		buf_appendc(b, '[');
		json_array_foreach(v, i, x)
		{
			if (i)
				buf_appendc(b, ',');
			json_compact(b, x);
		}
		buf_appendc(b, ']');
		break;
	case JSON_STRING:
		console_json_strn(b, json_string_value(v), json_string_length(v));
		break;
	case JSON_INTEGER: { /* no printf: a record holds dozens */
		json_int_t n = json_integer_value(v);
		unsigned long long u = n < 0 ? 0ULL - (unsigned long long)n : (unsigned long long)n;
		char d[24];
		size_t o = sizeof(d);
		do
			d[--o] = (char)('0' + u % 10);
		while (u /= 10);
		if (n < 0)
			d[--o] = '-';
		buf_append(b, d + o, sizeof(d) - o);
		break;
	}
	case JSON_REAL:
		real_out(b, json_real_value(v));
		break;
	case JSON_TRUE:
		buf_appends(b, "true");
		break;
	case JSON_FALSE:
		buf_appends(b, "false");
		break;
	case JSON_NULL:
		buf_appends(b, "null");
		break;
	}
}
