/* SPDX-License-Identifier: Apache-2.0 */
/* Rolling counters over a ring of time buckets (see counter_series.h). */
#include "base/counter_series.h"

#include <string.h>

#include "base/xalloc.h"

void counter_series_init(struct counter_series *cs, unsigned nbuckets, uint64_t bucket_secs,
			 uint64_t initial, uint64_t now_ns)
{
	if (nbuckets < 1 || nbuckets > COUNTER_SERIES_MAX_BUCKETS || bucket_secs < 1)
		panic("%s: %u buckets of %llu s", __func__, nbuckets,
		      (unsigned long long)bucket_secs);
	memset(cs, 0, sizeof(*cs));
	cs->nbuckets = nbuckets;
	cs->bucket_secs = bucket_secs;
	cs->buckets[0] = initial;
	cs->updated_ns = now_ns;
}

/* Advances cur past the buckets that aged out, zeroing them; the current index. */
static unsigned rotate(struct counter_series *cs, uint64_t now_ns)
{
	uint64_t secs = now_ns > cs->updated_ns ? (now_ns - cs->updated_ns) / 1000000000u : 0;
	uint64_t slots = secs / cs->bucket_secs;
	if (slots) {
		uint64_t prune = slots < cs->nbuckets ? slots : cs->nbuckets;
		cs->cur = (unsigned)((slots + cs->cur) % cs->nbuckets);
		cs->updated_ns = now_ns;
		for (uint64_t i = 0; i < prune; i++)
			cs->buckets[(cs->cur + cs->nbuckets - i) % cs->nbuckets] = 0;
	}
	return cs->cur;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

void counter_series_increment(struct counter_series *cs, uint64_t v, uint64_t now_ns)
{
	unsigned i = rotate(cs, now_ns);
	cs->buckets[i] = sat_add(cs->buckets[i], v);
}

void counter_series_delta(struct counter_series *cs, int64_t d, uint64_t now_ns)
{
	unsigned i = rotate(cs, now_ns);
	if (d >= 0) {
		cs->buckets[i] = sat_add(cs->buckets[i], (uint64_t)d);
	} else {
		uint64_t m = (uint64_t)(-(d + 1)) + 1; /* |d| without overflow at INT64_MIN */
		cs->buckets[i] = cs->buckets[i] > m ? cs->buckets[i] - m : 0;
	}
}

void counter_series_observe(struct counter_series *cs, uint64_t v, uint64_t now_ns)
{
	cs->buckets[rotate(cs, now_ns)] = v;
}

uint64_t counter_series_sum(struct counter_series *cs, uint64_t now_ns)
{
	return counter_series_sum_over(cs, UINT64_MAX, now_ns);
}

uint64_t counter_series_sum_over(struct counter_series *cs, uint64_t secs, uint64_t now_ns)
{
	unsigned cur = rotate(cs, now_ns);
	uint64_t n = secs / cs->bucket_secs + (secs % cs->bucket_secs != 0);
	if (n > cs->nbuckets)
		n = cs->nbuckets;
	if (n < 1)
		n = 1;
	uint64_t total = 0;
	for (uint64_t i = 0; i < n; i++)
		total = sat_add(total, cs->buckets[(cur + cs->nbuckets - i) % cs->nbuckets]);
	return total;
}
