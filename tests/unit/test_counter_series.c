/* SPDX-License-Identifier: Apache-2.0 */
/* Rolling counters: rotation by whole elapsed buckets, pruning, saturation, sum_over. */
#include "base/counter_series.h"
#include "test.h"

#define S 1000000000ull /* one second in ns */

TEST_IMPL(counter_series_rotation_zeroes_aged_buckets)
{
	struct counter_series cs;
	counter_series_init(&cs, 3, 2, 7, 100 * S); /* 3 buckets of 2 s, current seeded 7 */
	counter_series_increment(&cs, 1, 100 * S);
	ASSERT_EQ(counter_series_sum(&cs, 100 * S), 8);
	/* 1.9 s later: still the same bucket */
	counter_series_increment(&cs, 2, 101 * S + 900000000ull);
	ASSERT_EQ(counter_series_sum_over(&cs, 1, 101 * S), 10);
	/* 2 s after the start: the next bucket; the old one still counts in sum */
	counter_series_increment(&cs, 5, 102 * S);
	ASSERT_EQ(counter_series_sum_over(&cs, 2, 102 * S), 5);
	ASSERT_EQ(counter_series_sum_over(&cs, 3, 102 * S), 15);
	ASSERT_EQ(counter_series_sum(&cs, 102 * S), 15);
	/* 4 more seconds (2 buckets): the first bucket is the one that is pruned again */
	ASSERT_EQ(counter_series_sum(&cs, 106 * S), 5);
	ASSERT_EQ(counter_series_sum_over(&cs, 2, 106 * S), 0);
	/* a long time: every bucket pruned once */
	ASSERT_EQ(counter_series_sum(&cs, 10000 * S), 0);
}

TEST_IMPL(counter_series_remainder_is_dropped_on_rotation)
{
	/* as KumoMTA's: the bucket start moves to the time of the rotation */
	struct counter_series cs;
	counter_series_init(&cs, 2, 2, 0, 0);
	counter_series_increment(&cs, 1, 0);
	counter_series_increment(&cs, 1, 3 * S); /* rotates at 3 s: bucket starts at 3 s */
	ASSERT_EQ(counter_series_sum(&cs, 3 * S), 2);
	/* 1.5 s later: the same bucket (buckets aligned to 0 would have advanced at 4 s) */
	counter_series_increment(&cs, 1, 4 * S + S / 2);
	ASSERT_EQ(counter_series_sum_over(&cs, 1, 4 * S + S / 2), 2);
	/* 2 s after 3 s: the next bucket, where the first increment was, is zeroed */
	ASSERT_EQ(counter_series_sum_over(&cs, 1, 5 * S), 0);
	ASSERT_EQ(counter_series_sum(&cs, 5 * S), 2);
}

TEST_IMPL(counter_series_saturates)
{
	struct counter_series cs;
	counter_series_init(&cs, 2, 1, UINT64_MAX - 1, 0);
	counter_series_increment(&cs, 5, 0);
	ASSERT(counter_series_sum(&cs, 0) == UINT64_MAX);
	counter_series_observe(&cs, 3, 0);
	counter_series_delta(&cs, -10, 0);
	ASSERT_EQ(counter_series_sum(&cs, 0), 0);
	counter_series_delta(&cs, INT64_MIN, 0);
	ASSERT_EQ(counter_series_sum(&cs, 0), 0);
	counter_series_delta(&cs, 4, 0);
	counter_series_delta(&cs, -1, 0);
	ASSERT_EQ(counter_series_sum(&cs, 0), 3);
	counter_series_observe(&cs, UINT64_MAX, S); /* the next bucket */
	ASSERT(counter_series_sum(&cs, S) == UINT64_MAX);
	ASSERT_EQ(counter_series_sum_over(&cs, 0, S) == UINT64_MAX, 1);
}

TEST_IMPL(counter_series_sum_over_rounds_up_and_caps)
{
	static const struct {
		uint64_t secs, want;
	} cases[] = {{0, 4}, {1, 4}, {10, 4}, {11, 7}, {20, 7}, {21, 9}, {30, 9}, {999, 9}};
	struct counter_series cs;
	counter_series_init(&cs, 3, 10, 0, 0);
	counter_series_increment(&cs, 2, 0);
	counter_series_increment(&cs, 3, 10 * S);
	counter_series_increment(&cs, 4, 20 * S);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
		ASSERT_EQ(counter_series_sum_over(&cs, cases[i].secs, 20 * S), cases[i].want);
}
