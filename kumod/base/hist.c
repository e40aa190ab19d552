/* SPDX-License-Identifier: Apache-2.0 */
/* Log-linear latency histogram: HIST_OCTAVES powers of two from 1 us, each
 * split into HIST_SUB_BUCKETS linear sub-buckets; bucket 0 and the last
 * bucket hold the outliers below 1 us and above 60 s. */
#include "base/hist.h"

#include <stdio.h>
#include <string.h>

#define HIST_LOW 0
#define HIST_HIGH (HIST_NBUCKETS - 1)

void hist_init(struct hist *h)
{
	memset(h, 0, sizeof(*h));
}

/* Bucket index of an in-range value (HIST_MIN_NS <= ns <= HIST_MAX_NS). */
static size_t hist_index(uint64_t ns)
{
	uint64_t units = ns / HIST_MIN_NS; /* >= 1 */
	unsigned octave = 63u - (unsigned)__builtin_clzll(units);
	uint64_t base = 1ull << octave;
	uint64_t sub = (units - base) * HIST_SUB_BUCKETS / base;
	if (octave >= HIST_OCTAVES) /* cannot happen below HIST_MAX_NS; stay safe */
		return HIST_HIGH;
	return 1 + (size_t)octave * HIST_SUB_BUCKETS + (size_t)sub;
}

/* Lower bound and width (ns) of an in-range bucket. */
static void hist_bucket_range(size_t idx, uint64_t *lo, uint64_t *width)
{
	size_t k = idx - 1;
	unsigned octave = (unsigned)(k / HIST_SUB_BUCKETS);
	uint64_t sub = k % HIST_SUB_BUCKETS;
	uint64_t base = (1ull << octave) * HIST_MIN_NS;
	*width = base / HIST_SUB_BUCKETS;
	*lo = base + sub * *width;
}

void hist_record(struct hist *h, uint64_t ns)
{
	if (h->count == 0 || ns < h->min_ns)
		h->min_ns = ns;
	if (ns > h->max_ns)
		h->max_ns = ns;
	h->count++;
	h->sum_ns += ns;
	if (ns < HIST_MIN_NS) {
		h->low_outliers++;
		h->buckets[HIST_LOW]++;
	} else if (ns > HIST_MAX_NS) {
		h->high_outliers++;
		h->buckets[HIST_HIGH]++;
	} else {
		h->buckets[hist_index(ns)]++;
	}
}

void hist_merge(struct hist *dst, const struct hist *src)
{
	if (!src->count)
		return;
	if (!dst->count || src->min_ns < dst->min_ns)
		dst->min_ns = src->min_ns;
	if (src->max_ns > dst->max_ns)
		dst->max_ns = src->max_ns;
	dst->count += src->count;
	dst->sum_ns += src->sum_ns;
	dst->low_outliers += src->low_outliers;
	dst->high_outliers += src->high_outliers;
	for (size_t i = 0; i < HIST_NBUCKETS; i++)
		dst->buckets[i] += src->buckets[i];
}

static uint64_t hist_clamp(const struct hist *h, uint64_t v)
{
	if (v < h->min_ns)
		return h->min_ns;
	if (v > h->max_ns)
		return h->max_ns;
	return v;
}

uint64_t hist_percentile(const struct hist *h, double p)
{
	if (!h->count)
		return 0;
	if (p <= 0)
		return h->min_ns;
	if (p >= 100)
		return h->max_ns;
	/* Nearest rank: the smallest value with at least p% at or below it. */
	double exact = p / 100.0 * (double)h->count;
	uint64_t rank = (uint64_t)exact;
	if ((double)rank < exact)
		rank++;
	if (rank == 0)
		rank = 1;
	uint64_t seen = 0;
	for (size_t i = 0; i < HIST_NBUCKETS; i++) {
		seen += h->buckets[i];
		if (seen < rank)
			continue;
		if (i == HIST_LOW)
			return h->min_ns;
		if (i == HIST_HIGH)
			return h->max_ns;
		uint64_t lo, width;
		hist_bucket_range(i, &lo, &width);
		return hist_clamp(h, lo + width / 2);
	}
	return h->max_ns;
}

uint64_t hist_mean(const struct hist *h)
{
	return h->count ? h->sum_ns / h->count : 0;
}

/* Prints whole.frac with the fraction's trailing zeros removed (Rust's
 * Debug formatting of Duration, which traffic-gen users know). */
static size_t hist_fmt_decimal(char *out, size_t cap, uint64_t whole, uint64_t frac,
			       unsigned digits, const char *unit)
{
	if (!frac)
		return (size_t)snprintf(out, cap, "%llu%s", (unsigned long long)whole, unit);
	char f[24];
	snprintf(f, sizeof(f), "%0*llu", (int)digits, (unsigned long long)frac);
	size_t n = strlen(f);
	while (n > 1 && f[n - 1] == '0')
		f[--n] = '\0';
	return (size_t)snprintf(out, cap, "%llu.%s%s", (unsigned long long)whole, f, unit);
}

size_t hist_format_duration(uint64_t ns, char *out, size_t cap)
{
	size_t n;
	if (ns >= 1000000000ull)
		n = hist_fmt_decimal(out, cap, ns / 1000000000ull, ns % 1000000000ull, 9, "s");
	else if (ns >= 1000000ull)
		n = hist_fmt_decimal(out, cap, ns / 1000000ull, ns % 1000000ull, 6, "ms");
	else if (ns >= 1000ull)
		n = hist_fmt_decimal(out, cap, ns / 1000ull, ns % 1000ull, 3, "us");
	else
		n = (size_t)snprintf(out, cap, "%lluns", (unsigned long long)ns);
	if (cap && n >= cap)
		n = cap - 1;
	return n;
}
