/* SPDX-License-Identifier: Apache-2.0 */
/* Egress shaping: throttle specs (proto/rate_spec), the smooth weighted
 * round robin of pools and the GCRA throttle (queue/egress). */
#include "proto/rate_spec.h"
#include "queue/egress.h"
#include "test.h"

TEST_IMPL(rate_spec_table)
{
	static const struct {
		const char *in;
		int ok;
		uint64_t limit, period_ms;
	} cases[] = {
	    {"100/s", 1, 100, 1000},
	    {"1,000/hr", 1, 1000, 3600000},
	    {"10/m", 1, 10, 60000},
	    {"5/sec", 1, 5, 1000},
	    {"7/second", 1, 7, 1000},
	    {"3/min", 1, 3, 60000},
	    {"3/minute", 1, 3, 60000},
	    {"2/h", 1, 2, 3600000},
	    {"2/hour", 1, 2, 3600000},
	    {"50/d", 1, 50, 86400000},
	    {"50/day", 1, 50, 86400000},
	    {"1_000_000/S", 1, 1000000, 1000},
	    {"local:20/m", 1, 20, 60000},
	    {"10/5m", 1, 10, 300000},
	    {"10/90s", 1, 10, 90000},
	    {"1000000000000/s", 1, 1000000000000ull, 1000},
	    {"1000000000001/s", 0, 0, 0},
	    {"0/s", 0, 0, 0},
	    {"10/0s", 0, 0, 0},
	    {"/s", 0, 0, 0},
	    {"10", 0, 0, 0},
	    {"10/", 0, 0, 0},
	    {"10/fortnight", 0, 0, 0},
	    {",10/s", 0, 0, 0},
	    {"10,/s", 0, 0, 0},
	    {"1,,0/s", 0, 0, 0},
	    {"-1/s", 0, 0, 0},
	    {" 10/s", 0, 0, 0},
	    {"10/s ", 0, 0, 0},
	    {"10/s/s", 0, 0, 0},
	    {"", 0, 0, 0},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct rate_spec r = {0, 0};
		int rc = rate_spec_parse(cases[i].in, &r);
		if ((rc == 0) != cases[i].ok)
			TEST_FAIL("\"%s\": rc %d, want ok=%d", cases[i].in, rc, cases[i].ok);
		if (rc == 0 && (r.limit != cases[i].limit || r.period_ms != cases[i].period_ms))
			TEST_FAIL(
			    "\"%s\": %" PRIu64 "/%" PRIu64 "ms, want %" PRIu64 "/%" PRIu64 "ms",
			    cases[i].in, r.limit, r.period_ms, cases[i].limit, cases[i].period_ms);
	}
}

/* Smooth WRR picks for weights 5:1:1 are nginx's documented sequence. */
TEST_IMPL(egress_wrr_nginx_sequence)
{
	struct egress_wrr_entry e[3] = {{5, 0}, {1, 0}, {1, 0}};
	static const int want[] = {0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0};
	for (size_t i = 0; i < ARRAY_SIZE(want); i++)
		ASSERT_EQ(egress_wrr_next(e, 3), want[i]);
}

TEST_IMPL(egress_wrr_split)
{
	static const struct {
		int64_t w[3];
		size_t n, picks;
		size_t want[3];
	} cases[] = {
	    {{3, 1, 0}, 2, 40, {30, 10, 0}}, {{1, 1, 1}, 3, 30, {10, 10, 10}},
	    {{0, 2, 0}, 3, 9, {0, 9, 0}},    {{2, 3, 5}, 3, 100, {20, 30, 50}},
	    {{1, 0, 0}, 1, 5, {5, 0, 0}},
	};
	for (size_t c = 0; c < ARRAY_SIZE(cases); c++) {
		struct egress_wrr_entry e[3] = {{0, 0}, {0, 0}, {0, 0}};
		size_t got[3] = {0, 0, 0};
		int64_t total = 0;
		for (size_t i = 0; i < cases[c].n; i++) {
			e[i].weight = cases[c].w[i];
			total += e[i].weight;
		}
		for (size_t p = 0; p < cases[c].picks; p++) {
			int i = egress_wrr_next(e, cases[c].n);
			ASSERT(i >= 0 && (size_t)i < cases[c].n);
			got[i]++;
			/* interleaved: after every full round each entry had its share */
			if ((p + 1) % (size_t)total == 0)
				for (size_t k = 0; k < cases[c].n; k++)
					ASSERT_EQ(got[k],
						  (size_t)cases[c].w[k] * (p + 1) / (size_t)total);
		}
		for (size_t i = 0; i < 3; i++)
			ASSERT_EQ(got[i], cases[c].want[i]);
	}
	struct egress_wrr_entry zero[2] = {{0, 0}, {0, 0}};
	ASSERT_EQ(egress_wrr_next(zero, 2), -1);
	ASSERT_EQ(egress_wrr_next(zero, 0), -1);
}

TEST_IMPL(egress_gcra_burst_then_rate)
{
	struct rate_spec r = {5, 1000}; /* 5/s: burst 5, then one per 200 ms */
	struct egress_gcra g = {0};
	uint64_t t = 1000000;
	for (int i = 0; i < 5; i++)
		ASSERT_EQ(egress_gcra_take(&g, &r, t), 0);
	ASSERT_EQ(egress_gcra_take(&g, &r, t), 200);
	ASSERT_EQ(egress_gcra_take(&g, &r, t + 150), 50);
	ASSERT_EQ(egress_gcra_take(&g, &r, t + 200), 0);
	ASSERT_EQ(egress_gcra_take(&g, &r, t + 200), 200);
	/* over any window, at most limit + rate x window events pass */
	struct egress_gcra h = {0};
	size_t allowed = 0;
	for (uint64_t ms = 0; ms < 10000; ms++)
		while (egress_gcra_take(&h, &r, t + ms) == 0)
			allowed++;
	ASSERT_GE(allowed, 5 + 49);
	ASSERT_LE(allowed, 5 + 50);
	/* idle time refills the bucket to the burst, never beyond */
	for (int i = 0; i < 5; i++)
		ASSERT_EQ(egress_gcra_take(&h, &r, t + 60000), 0);
	ASSERT_GT(egress_gcra_take(&h, &r, t + 60000), 0);
}

TEST_IMPL(egress_gcra_slow_rates)
{
	struct rate_spec r = {1, 3600000}; /* 1/h */
	struct egress_gcra g = {0};
	ASSERT_EQ(egress_gcra_take(&g, &r, 5000), 0);
	ASSERT_EQ(egress_gcra_take(&g, &r, 5000), 3600000);
	struct rate_spec fast = {1000000, 1000}; /* faster than the clock's resolution */
	struct egress_gcra f = {0};
	for (int i = 0; i < 1000000; i++)
		ASSERT_EQ(egress_gcra_take(&f, &fast, 5000), 0);
	ASSERT_EQ(egress_gcra_take(&f, &fast, 5000), 1);
}

TEST_IMPL(rate_gcra_burst_and_remaining)
{
	/* 10/s with max_burst 3: three at once, remaining counts down, then
	 * one per 100 ms; reset_after is the time until the cell is empty */
	uint64_t tat = 0, t = 5000000;
	struct rate_gcra d = rate_gcra_take(&tat, 10, 1000, 3, t);
	ASSERT_EQ(d.throttled, 0);
	ASSERT_EQ(d.remaining, 2);
	ASSERT_EQ(d.reset_after_us, 100000);
	d = rate_gcra_take(&tat, 10, 1000, 3, t);
	ASSERT_EQ(d.remaining, 1);
	d = rate_gcra_take(&tat, 10, 1000, 3, t);
	ASSERT_EQ(d.throttled, 0);
	ASSERT_EQ(d.remaining, 0);
	ASSERT_EQ(d.reset_after_us, 300000);
	d = rate_gcra_take(&tat, 10, 1000, 3, t);
	ASSERT_EQ(d.throttled, 1);
	ASSERT_EQ(d.retry_after_us, 100000);
	ASSERT_EQ(d.reset_after_us, 300000);
	d = rate_gcra_take(&tat, 10, 1000, 3, t + 100000);
	ASSERT_EQ(d.throttled, 0);
	ASSERT_EQ(d.remaining, 0);
}
