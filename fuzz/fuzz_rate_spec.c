/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `rate_spec`: rate_spec_parse() behind max_message_rate and
 * max_connection_rate. Invariants: a result has limit 1..10^12 and a period of at least 1 ms;
 * *out is untouched on failure; the verdict and result agree with an independent reference
 * for inputs whose period is a bare unit (digits grouped by single ',' or '_', optional
 * "local:" prefix); a canonical rewrite ("<limit>/<period_ms>ms") parses back to the same
 * rate; a "local:" prefix never changes the result. (The GCRA that consumes the rate lives in
 * kumod/queue and has unit tests.) Input: a NUL-free text of at most 256 bytes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proto/rate_spec.h"
#include "fuzz_check.h"

/* Reference for "N/unit" only, written independently of rate_spec.c:
 * 1 = valid (limit, period), 0 = invalid, -1 = period is not a bare unit. */
static int ref_parse(const char *s, uint64_t *limit, uint64_t *period)
{
	static const char *const units[] = {"s", "sec", "second", "m", "min", "minute",
					    "h", "hr",	"hour",	  "d", "day"};
	static const uint64_t ms[] = {1000,    1000,	1000,	 60000,	   60000,   60000,
				      3600000, 3600000, 3600000, 86400000, 86400000};
	if (strncasecmp(s, "local:", 6) == 0)
		s += 6;
	const char *slash = strchr(s, '/');
	if (!slash)
		return 0;
	int unit = -1;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (strcasecmp(slash + 1, units[i]) == 0)
			unit = (int)i;
	if (unit < 0)
		return -1;
	uint64_t v = 0;
	int last_digit = 0, any = 0;
	for (const char *p = s; p < slash; p++) {
		if (*p >= '0' && *p <= '9') {
			if (v > 100000000000ull)
				return 0; /* would exceed 10^12 */
			v = v * 10 + (uint64_t)(*p - '0');
			last_digit = any = 1;
		} else if ((*p == ',' || *p == '_') && last_digit && p + 1 < slash) {
			last_digit = 0;
		} else {
			return 0;
		}
	}
	if (!any || !last_digit || v == 0 || v > 1000000000000ull)
		return 0;
	*limit = v;
	*period = ms[unit];
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 256 || memchr(data, 0, size))
		return 0;
	char *text = strndup((const char *)data, size);
	struct rate_spec r = {12345, 678}, sentinel = r;
	int rc = rate_spec_parse(text, &r);
	CHECK(rc == 0 || rc == -1);
	if (rc != 0) {
		CHECK(r.limit == sentinel.limit && r.period_ms == sentinel.period_ms);
	} else {
		CHECK(r.limit >= 1 && r.limit <= 1000000000000ull && r.period_ms >= 1);
		char canon[64];
		struct rate_spec back;
		snprintf(canon, sizeof(canon), "%llu/%llums", (unsigned long long)r.limit,
			 (unsigned long long)r.period_ms);
		CHECK(rate_spec_parse(canon, &back) == 0);
		CHECK(back.limit == r.limit && back.period_ms == r.period_ms);
	}
	uint64_t limit = 0, period = 0;
	int ref = ref_parse(text, &limit, &period);
	if (ref >= 0) {
		if ((rc == 0) != ref) {
			fprintf(stderr, "rate_spec_parse(\"%s\") = %d, reference %d\n", text, rc,
				ref);
			abort();
		}
		if (ref == 1)
			CHECK(r.limit == limit && r.period_ms == period);
	}
	if (strncasecmp(text, "local:", 6) != 0 && size < 200) {
		char prefixed[300];
		struct rate_spec p;
		snprintf(prefixed, sizeof(prefixed), "local:%s", text);
		int prc = rate_spec_parse(prefixed, &p);
		CHECK(prc == rc);
		if (rc == 0)
			CHECK(p.limit == r.limit && p.period_ms == r.period_ms);
	}
	free(text);
	return 0;
}
