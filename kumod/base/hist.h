/* SPDX-License-Identifier: Apache-2.0 */
/* Fixed-size log-linear histogram of durations in nanoseconds (1 us .. 60 s,
 * values outside counted as outliers in the edge buckets), used for
 * latency reports (traffic-gen), metrics and the console. No allocation
 * after init; merging and percentiles are exact to the bucket width
 * (relative error <= 1/HIST_SUB_BUCKETS). */
#ifndef KUMOD_BASE_HIST_H
#define KUMOD_BASE_HIST_H

#include <stddef.h>
#include <stdint.h>

#define HIST_SUB_BUCKETS 32 /* per power of two */
#define HIST_MIN_NS 1000ull
#define HIST_MAX_NS 60000000000ull
#define HIST_OCTAVES 26 /* 1 us * 2^26 > 60 s */
#define HIST_NBUCKETS (HIST_OCTAVES * HIST_SUB_BUCKETS + 2)

struct hist {
	uint64_t count;
	uint64_t sum_ns;
	uint64_t min_ns, max_ns;
	uint64_t low_outliers, high_outliers;
	uint64_t buckets[HIST_NBUCKETS];
};

void hist_init(struct hist *h);
void hist_record(struct hist *h, uint64_t ns);
void hist_merge(struct hist *dst, const struct hist *src);
/* Value at percentile p (0..100); 0 when empty. Exact min/max at 0 and 100. */
uint64_t hist_percentile(const struct hist *h, double p);
uint64_t hist_mean(const struct hist *h);
/* Formats a duration like "1.234ms", "60.001234567s", "850us". */
size_t hist_format_duration(uint64_t ns, char *out, size_t cap);

#endif
