/* SPDX-License-Identifier: Apache-2.0 */
/* A rolling counter: a ring of time buckets of whole seconds (KumoMTA's counter series).
 * The current bucket advances by the whole buckets elapsed since it last advanced (the
 * remainder is dropped, as KumoMTA's); buckets passed over are zeroed. Values are unsigned
 * and saturate at 0 and UINT64_MAX. Time is passed in (monotonic ns) so the rules are
 * testable. Owner: the caller (kumod/lua/lua_counter_series.c). */
#ifndef KUMOD_BASE_COUNTER_SERIES_H
#define KUMOD_BASE_COUNTER_SERIES_H

#include <stdint.h>

#define COUNTER_SERIES_MAX_BUCKETS 255

struct counter_series {
	uint64_t buckets[COUNTER_SERIES_MAX_BUCKETS];
	unsigned nbuckets;    /* 1..COUNTER_SERIES_MAX_BUCKETS */
	uint64_t bucket_secs; /* >= 1 */
	unsigned cur;
	uint64_t updated_ns; /* when cur last advanced */
};

/* All buckets 0 but the current one, which is initial. */
void counter_series_init(struct counter_series *cs, unsigned nbuckets, uint64_t bucket_secs,
			 uint64_t initial, uint64_t now_ns);
void counter_series_increment(struct counter_series *cs, uint64_t v, uint64_t now_ns);
void counter_series_delta(struct counter_series *cs, int64_t d, uint64_t now_ns);
void counter_series_observe(struct counter_series *cs, uint64_t v, uint64_t now_ns);
/* The total of every bucket (saturating). */
uint64_t counter_series_sum(struct counter_series *cs, uint64_t now_ns);
/* The total of the newest ceil(secs / bucket_secs) buckets, at least 1, at most all. */
uint64_t counter_series_sum_over(struct counter_series *cs, uint64_t secs, uint64_t now_ns);

#endif
