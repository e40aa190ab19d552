/* SPDX-License-Identifier: Apache-2.0 */
/* Latency histogram: recording, outliers, percentiles, merge, formatting. */
#include "base/hist.h"
#include "test.h"

TEST_IMPL(hist_empty)
{
	struct hist h;
	hist_init(&h);
	ASSERT_EQ(h.count, 0);
	ASSERT_EQ(hist_percentile(&h, 50), 0);
	ASSERT_EQ(hist_percentile(&h, 100), 0);
	ASSERT_EQ(hist_mean(&h), 0);
}

TEST_IMPL(hist_min_max_mean_exact)
{
	struct hist h;
	hist_init(&h);
	hist_record(&h, 5000);
	hist_record(&h, 1500000);
	hist_record(&h, 2500);
	ASSERT_EQ(h.count, 3);
	ASSERT_EQ(hist_percentile(&h, 0), 2500);
	ASSERT_EQ(hist_percentile(&h, 100), 1500000);
	ASSERT_EQ(hist_mean(&h), (5000 + 1500000 + 2500) / 3);
}

/* Uniform 1..10000 us: every percentile within one sub-bucket (1/32). */
TEST_IMPL(hist_percentiles_within_bucket_error)
{
	static const struct {
		double p;
		uint64_t want_us;
	} cases[] = {{50, 5000}, {75, 7500},   {90, 9000}, {95, 9500},
		     {99, 9900}, {99.9, 9990}, {1, 100}};
	struct hist h;
	hist_init(&h);
	for (uint64_t us = 1; us <= 10000; us++)
		hist_record(&h, us * 1000);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		uint64_t got = hist_percentile(&h, cases[i].p);
		uint64_t want = cases[i].want_us * 1000;
		uint64_t diff = got > want ? got - want : want - got;
		if (diff * HIST_SUB_BUCKETS > want)
			TEST_FAIL("p%g: got %llu want %llu", cases[i].p, (unsigned long long)got,
				  (unsigned long long)want);
	}
}

TEST_IMPL(hist_single_value_is_exact)
{
	struct hist h;
	hist_init(&h);
	for (int i = 0; i < 100; i++)
		hist_record(&h, 1234567);
	/* clamped to [min, max] */
	ASSERT_EQ(hist_percentile(&h, 50), 1234567);
	ASSERT_EQ(hist_percentile(&h, 99.9), 1234567);
}

TEST_IMPL(hist_outliers)
{
	struct hist h;
	hist_init(&h);
	hist_record(&h, 10);		  /* below 1 us */
	hist_record(&h, 120000000000ull); /* above 60 s */
	hist_record(&h, HIST_MAX_NS);	  /* the edge is in range */
	ASSERT_EQ(h.low_outliers, 1);
	ASSERT_EQ(h.high_outliers, 1);
	ASSERT_EQ(h.buckets[0], 1);
	ASSERT_EQ(h.buckets[HIST_NBUCKETS - 1], 1);
	ASSERT_EQ(hist_percentile(&h, 10), 10);
	ASSERT_EQ(hist_percentile(&h, 99), 120000000000ull);
	uint64_t total = 0;
	for (size_t i = 0; i < HIST_NBUCKETS; i++)
		total += h.buckets[i];
	ASSERT_EQ(total, 3);
}

TEST_IMPL(hist_merge_equals_recording_together)
{
	struct hist a, b, all;
	hist_init(&a);
	hist_init(&b);
	hist_init(&all);
	for (uint64_t v = 1000; v < 5000000; v = v * 3 / 2 + 7) {
		hist_record(&a, v);
		hist_record(&all, v);
		hist_record(&b, v * 2);
		hist_record(&all, v * 2);
	}
	struct hist empty;
	hist_init(&empty);
	hist_merge(&a, &empty);
	hist_merge(&a, &b);
	ASSERT_EQ(a.count, all.count);
	ASSERT_EQ(a.sum_ns, all.sum_ns);
	ASSERT_EQ(a.min_ns, all.min_ns);
	ASSERT_EQ(a.max_ns, all.max_ns);
	ASSERT(memcmp(a.buckets, all.buckets, sizeof(a.buckets)) == 0);
	ASSERT_EQ(hist_percentile(&a, 90), hist_percentile(&all, 90));
	hist_merge(&empty, &b); /* into an empty histogram: min taken from src */
	ASSERT_EQ(empty.min_ns, b.min_ns);
}

TEST_IMPL(hist_format_duration_cases)
{
	static const struct {
		uint64_t ns;
		const char *want;
	} cases[] = {
	    {0, "0ns"},
	    {850, "850ns"},
	    {850000, "850us"},
	    {1500, "1.5us"},
	    {1234000, "1.234ms"},
	    {1000000, "1ms"},
	    {60001234567ull, "60.001234567s"},
	    {2000000000ull, "2s"},
	    {1100000000ull, "1.1s"},
	    {999999, "999.999us"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char out[32];
		size_t n = hist_format_duration(cases[i].ns, out, sizeof(out));
		ASSERT_STR_EQ(out, cases[i].want);
		ASSERT_EQ(n, strlen(cases[i].want));
	}
	char small[4];
	hist_format_duration(60001234567ull, small, sizeof(small));
	ASSERT_STR_EQ(small, "60.");
}
