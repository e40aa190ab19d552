/* SPDX-License-Identifier: Apache-2.0 */
/* Throttle spec parser ("N/period"). */
#include "proto/rate_spec.h"

#include <string.h>
#include <strings.h>

#include "proto/duration.h"

#define RATE_SPEC_MAX_LIMIT 1000000000000ull

/* The count before '/': digits with optional ',' or '_' between digits. */
static int rate_count(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	int digits = 0, prev_digit = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c >= '0' && c <= '9') {
			v = v * 10 + (uint64_t)(c - '0');
			if (v > RATE_SPEC_MAX_LIMIT)
				return -1;
			digits++;
			prev_digit = 1;
		} else if ((c == ',' || c == '_') && prev_digit && i + 1 < n) {
			prev_digit = 0;
		} else {
			return -1;
		}
	}
	if (!digits || !prev_digit || v == 0)
		return -1;
	*out = v;
	return 0;
}

/* The period after '/': a bare unit means one of it; else a duration. */
static int rate_period(const char *s, uint64_t *out)
{
	static const struct {
		const char *unit;
		uint64_t ms;
	} units[] = {
	    {"s", 1000},       {"sec", 1000},	  {"second", 1000},  {"m", 60000},
	    {"min", 60000},    {"minute", 60000}, {"h", 3600000},    {"hr", 3600000},
	    {"hour", 3600000}, {"d", 86400000},	  {"day", 86400000},
	};
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (strcasecmp(s, units[i].unit) == 0) {
			*out = units[i].ms;
			return 0;
		}
	uint64_t ms;
	if (*s < '0' || *s > '9' || duration_parse_ms(s, &ms) != 0 || ms == 0)
		return -1;
	*out = ms;
	return 0;
}

int rate_spec_parse(const char *s, struct rate_spec *out)
{
	if (strncasecmp(s, "local:", 6) == 0)
		s += 6;
	const char *slash = strchr(s, '/');
	struct rate_spec r;
	if (!slash || rate_count(s, (size_t)(slash - s), &r.limit) != 0 ||
	    rate_period(slash + 1, &r.period_ms) != 0)
		return -1;
	*out = r;
	return 0;
}

struct rate_gcra rate_gcra_take(uint64_t *tat_us, uint64_t limit, uint64_t period_ms,
				uint64_t burst, uint64_t now_us)
{
	struct rate_gcra res = {0};
	/* emission interval T, rounded up: never faster than the spec */
	double ti = (double)period_ms * 1000.0 / (double)(limit ? limit : 1);
	uint64_t interval = ti < 1.0 ? 1 : (uint64_t)ti + (ti > (double)(uint64_t)ti);
	double tau_d = (double)interval * (double)(burst ? burst - 1 : 0);
	uint64_t tau = tau_d > 1e18 ? (uint64_t)1e18 : (uint64_t)tau_d;
	uint64_t tat = *tat_us > now_us ? *tat_us : now_us;
	if (tat - now_us > tau) {
		res.throttled = 1;
		res.retry_after_us = tat - now_us - tau;
		res.reset_after_us = tat - now_us;
		return res;
	}
	*tat_us = tat + interval;
	uint64_t used = *tat_us - now_us; /* the debt after this one */
	res.reset_after_us = used;
	res.remaining = used > tau + interval ? 0 : (tau + interval - used) / interval;
	return res;
}
