/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `tzif`: tzif_parse() (a TZif file, RFC 8536, as read from
 * /usr/share/zoneinfo) and tzif_rule_parse() (its footer's POSIX TZ rule).
 * Input: any bytes, as a whole file and as a TZ string. Invariants:
 *  - parsing returns 0 with a zone, or -1 with a non-empty reason and no zone;
 *  - at any instant the offset is within a day and the abbreviation a C string;
 *  - a local time maps back to an instant whose local time is the same, or
 *    (in a gap) to one at most a day away;
 *  - a parsed rule gives offsets within a day at any instant. */
#include <stdint.h>
#include <string.h>

#include "proto/tzif.h"
#include "fuzz_check.h"

static const int64_t times[] = {INT64_MIN / 4, -5000000000LL, -1,	    0, 1, 1700000000LL,
				2147483647LL,  4102444800LL,  INT64_MAX / 4};

static void check_local(const struct tzif_local *l)
{
	CHECK(l->utoff > -90000 && l->utoff < 93600);
	CHECK(memchr(l->abbr, 0, sizeof(l->abbr)) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tzif_zone *z = NULL;
	char err[200] = "";
	if (tzif_parse(data, size, &z, err, sizeof(err)) != 0) {
		CHECK(err[0] != 0 && z == NULL);
	} else {
		for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
			struct tzif_local l, b;
			tzif_lookup(z, times[i], &l);
			check_local(&l);
			int64_t local = times[i] + l.utoff;
			int64_t u = tzif_local_to_utc(z, local);
			tzif_lookup(z, u, &b);
			CHECK(u + b.utoff == local ||
			      (u - times[i] < 2 * 86400 && times[i] - u < 2 * 86400));
		}
		(void)tzif_is_utc(z);
		tzif_free(z);
	}
	struct tzif_rule r;
	if (size < 200 && tzif_rule_parse((const char *)data, size, &r) == 0) {
		for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
			struct tzif_local l;
			tzif_rule_lookup(&r, times[i], &l);
			check_local(&l);
		}
	}
	return 0;
}
