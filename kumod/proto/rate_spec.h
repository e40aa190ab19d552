/* SPDX-License-Identifier: Apache-2.0 */
/* KumoMTA throttle specs as text: "100/s", "1,000/hr", "10/m", "5/5m",
 * "local:50/minute" — a count (digits, optionally grouped with ',' or '_')
 * per period. The period is a unit (s, sec, second, m, min, minute, h, hr,
 * hour, d, day, case-insensitive) or a duration such as "5m" or "90s"
 * (proto/duration.h). The "local:" prefix (not shared through Redis even
 * when kumo.configure_redis_throttles is set) is accepted and skipped
 * here; callers look for it themselves. Pure.
 * Callers: kumod/lua (make_egress_path validation), kumod/dispatch (the
 * rates of a ready queue). */
#ifndef KUMOD_PROTO_RATE_SPEC_H
#define KUMOD_PROTO_RATE_SPEC_H

#include <stdint.h>

struct rate_spec {
	uint64_t limit;	    /* events per period, >= 1 */
	uint64_t period_ms; /* >= 1 */
};

/* 0 and *out, or -1 when s is not a rate (zero count, zero period, a count
 * above 10^12, trailing text). *out is untouched on error. */
int rate_spec_parse(const char *s, struct rate_spec *out);

/* One GCRA decision (the generic cell rate algorithm KumoMTA's throttles
 * use): limit events per period_ms with a burst tolerance of burst - 1
 * emission intervals beyond the steady rate. *tat_us is the cell's
 * theoretical arrival time (0 = never used); now_us > 0. */
struct rate_gcra {
	int throttled;		 /* 1: refused, nothing counted */
	uint64_t remaining;	 /* events still allowed at once after this one */
	uint64_t reset_after_us; /* until the cell is empty again */
	uint64_t retry_after_us; /* throttled: until one is allowed */
};
struct rate_gcra rate_gcra_take(uint64_t *tat_us, uint64_t limit, uint64_t period_ms,
				uint64_t burst, uint64_t now_us);

#endif
