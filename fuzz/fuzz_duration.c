/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `duration`: duration_parse_ms()/_us() (every KumoMTA duration in the Lua
 * builders and the admin API: retry_interval, max_age, client_timeout, suspend/bounce
 * duration, ...) and rfc3339_parse_ms() (admin `expires`). Byte 0 picks the parser, the
 * rest is the text (NUL-free, at most 256 bytes). Invariants:
 *  - the result is 0 or -1 and the same for the text in upper and in lower case (both
 *    parsers are case-insensitive: units, "T" and "Z");
 *  - duration_parse_us() accepts exactly the same texts, and its microseconds round to
 *    the milliseconds of duration_parse_ms() (within half a millisecond);
 *  - a parsed duration formats (duration_format_ms) to text that parses back to the same
 *    number of milliseconds, and whose own format is identical (a fixed point);
 *  - a parsed timestamp formats (rfc3339_format_ms, UTC) to text that parses back to the
 *    same milliseconds; so does the timestamp one second later, 1000 ms further. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/duration.h"
#include "fuzz_check.h"

static void check_case(const char *text, int (*parse)(const char *, uint64_t *), int rc, uint64_t v)
{
	char *up = strdup(text), *low = strdup(text);
	for (char *p = up; *p; p++)
		*p = (char)toupper((unsigned char)*p);
	for (char *p = low; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	uint64_t a = 0, b = 0;
	int ra = parse(up, &a), rb = parse(low, &b);
	CHECK(ra == rc && rb == rc);
	if (rc == 0)
		CHECK(a == v && b == v);
	free(up);
	free(low);
}

static void check_duration(const char *text)
{
	uint64_t ms = 0;
	int rc = duration_parse_ms(text, &ms);
	CHECK(rc == 0 || rc == -1);
	check_case(text, duration_parse_ms, rc, ms);
	uint64_t us = 0;
	CHECK(duration_parse_us(text, &us) == rc);
	if (rc != 0)
		return;
	CHECK(us + 501 >= ms * 1000 && us <= ms * 1000 + 501);
	char f1[128], f2[128];
	uint64_t back = 0;
	duration_format_ms(ms, f1, sizeof(f1));
	CHECK(duration_parse_ms(f1, &back) == 0);
	CHECK(back == ms);
	duration_format_ms(back, f2, sizeof(f2));
	CHECK(strcmp(f1, f2) == 0);
}

static void check_rfc3339(const char *text)
{
	uint64_t ms = 0;
	int rc = rfc3339_parse_ms(text, &ms);
	CHECK(rc == 0 || rc == -1);
	check_case(text, rfc3339_parse_ms, rc, ms);
	if (rc != 0)
		return;
	char f[64];
	uint64_t back = 0, later = 0;
	rfc3339_format_ms(ms, f, sizeof(f));
	CHECK(rfc3339_parse_ms(f, &back) == 0);
	CHECK(back == ms);
	rfc3339_format_ms(ms + 1000, f, sizeof(f));
	CHECK(rfc3339_parse_ms(f, &later) == 0);
	CHECK(later == ms + 1000);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 257 || memchr(data + 1, 0, size - 1))
		return 0;
	char *text = strndup((const char *)data + 1, size - 1);
	if (data[0] & 1)
		check_rfc3339(text);
	else
		check_duration(text);
	free(text);
	return 0;
}
