/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `sched_spec`: sched_spec_parse() (msg:import_scheduling_header's header
 * value, msg:set_scheduling's table as JSON) and sched_spec_adjust(). Input: any bytes as the
 * JSON text. Invariants:
 *  - parsing returns 0, or -1 with a non-empty reason;
 *  - an accepted spec's canonical JSON parses back to the same spec;
 *  - adjust never goes back in time and is idempotent: its result is permitted, and
 *    adjusting it again returns it (for times where an 8-day search finds a slot). */
#include <stdint.h>
#include <string.h>

#include "proto/sched_spec.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sched_spec s, back;
	char err[256] = "";
	if (sched_spec_parse((const char *)data, size, &s, err, sizeof(err)) != 0) {
		CHECK(err[0] != 0);
		return 0;
	}
	json_t *j = sched_spec_to_json(&s);
	CHECK(sched_spec_from_json(j, &back, err, sizeof(err)) == 0);
	json_decref(j);
	/* the canonical form keeps milliseconds: compare field by field */
	CHECK(back.has_first == s.has_first && back.has_expires == s.has_expires &&
	      back.has_window == s.has_window);
	CHECK(!s.has_first || back.first_ms == s.first_ms);
	CHECK(!s.has_expires || back.expires_ms == s.expires_ms);
	CHECK(!s.has_window ||
	      (back.dow == s.dow && back.start_s == s.start_s && back.end_s == s.end_s));
	static const uint64_t times[] = {0, 1765000000000ull, 1765103696123ull, 4102444800000ull};
	for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
		uint64_t t = sched_spec_adjust(&s, times[i]);
		CHECK(t >= times[i]);
		if (!s.has_window || (s.dow && s.start_s < s.end_s))
			CHECK(sched_spec_adjust(&s, t) == t);
	}
	return 0;
}
