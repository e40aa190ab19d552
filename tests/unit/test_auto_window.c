/* SPDX-License-Identifier: Apache-2.0 */
/* Threshold counting of shaping automation rules (queue/auto_window.c):
 * events in a sliding window, per key, bounded by the limit. */
#include "queue/auto_window.h"
#include "test.h"

TEST_IMPL(auto_window_counts_within_the_period)
{
	struct auto_window_set *s = auto_window_new();
	/* "3/hour": the third event within an hour reaches the limit */
	uint64_t h = 3600000;
	ASSERT_EQ(auto_window_hit(s, "r1|site-a", 3, h, 1000), 1);
	ASSERT_EQ(auto_window_hit(s, "r1|site-a", 3, h, 2000), 2);
	ASSERT_EQ(auto_window_hit(s, "r1|site-b", 3, h, 2500), 1); /* keys apart */
	ASSERT_EQ(auto_window_hit(s, "r1|site-a", 3, h, 3000), 3);
	/* at most limit are kept: still 3 */
	ASSERT_EQ(auto_window_hit(s, "r1|site-a", 3, h, 4000), 3);
	/* 1000 and 2000 and 3000 leave the window at +1h; 4000 stays */
	ASSERT_EQ(auto_window_hit(s, "r1|site-a", 3, h, 3000 + h), 2);
	/* the boundary: an event exactly one period old is out */
	ASSERT_EQ(auto_window_hit(s, "r1|site-a", 3, h, 4000 + 2 * h), 1);
	auto_window_free(s);
}

TEST_IMPL(auto_window_new_limit_restarts_and_prune_forgets)
{
	struct auto_window_set *s = auto_window_new();
	ASSERT_EQ(auto_window_hit(s, "k", 5, 1000, 10), 1);
	ASSERT_EQ(auto_window_hit(s, "k", 5, 1000, 20), 2);
	/* the rule changed (reloaded with another Threshold): counting restarts */
	ASSERT_EQ(auto_window_hit(s, "k", 2, 1000, 30), 1);
	ASSERT_EQ(auto_window_hit(s, "k", 2, 1000, 40), 2);
	ASSERT_EQ(auto_window_hit(s, "other", 2, 5000, 40), 1);
	ASSERT_EQ(auto_window_prune(s, 500), 2);
	ASSERT_EQ(auto_window_prune(s, 1040), 1); /* "k" is quiet for its period */
	ASSERT_EQ(auto_window_prune(s, 5040), 0);
	ASSERT_EQ(auto_window_hit(s, "k", 2, 1000, 6000), 1);
	/* limit 1: every event alone reaches it */
	ASSERT_EQ(auto_window_hit(s, "one", 1, 1000, 1), 1);
	ASSERT_EQ(auto_window_hit(s, "one", 1, 1000, 2), 1);
	auto_window_free(s);
}
