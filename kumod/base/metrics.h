/* SPDX-License-Identifier: Apache-2.0 */
/* The metrics registry: counters, gauges and histograms with at most one
 * label, plus pull collectors (callbacks run at scrape time, so a module
 * whose state already holds the number needs no bookkeeping), rendered as
 * Prometheus text (version 0.0.4) or KumoMTA's metrics.json shape.
 * Owns every family and series; loop thread only (no locking). HELP text is
 * the metric name, as in the seed sample. Any module may register; kumod/ctl
 * renders. Rendering is in-memory and never blocks. */
#ifndef KUMOD_BASE_METRICS_H
#define KUMOD_BASE_METRICS_H

#include <stddef.h>

#include "base/buf.h"

enum metrics_type {
	METRICS_COUNTER = 0,
	METRICS_GAUGE,
	METRICS_HISTOGRAM,
};

struct metrics_family;
struct metrics_series;
struct metrics_scrape;

/* Finds or registers a family. label_name NULL: unlabeled. Histograms use
 * the Prometheus default buckets (5 ms .. 10 s), values in seconds.
 * Re-registering a name with another type or label panics (a bug). */
struct metrics_family *metrics_family(const char *name, enum metrics_type type,
				      const char *label_name);
/* Finds or creates the series for label_value (NULL for an unlabeled
 * family). The pointer stays valid until metrics_series_remove(). */
struct metrics_series *metrics_series(struct metrics_family *f, const char *label_value);
/* Prunes an idle series (its queue was reaped). Unknown labels are fine. */
void metrics_series_remove(struct metrics_family *f, const char *label_value);

void metrics_add(struct metrics_series *s, double v);
void metrics_set(struct metrics_series *s, double v);
/* Histograms: one observation, in seconds. */
void metrics_observe(struct metrics_series *s, double seconds);
/* Counter/gauge value, or a histogram's observation count. */
double metrics_value(const struct metrics_series *s);

/* One-shot helpers for code that does not keep the handles. */
void metrics_counter_add(const char *name, const char *label_name, const char *label_value,
			 double v);
void metrics_histogram_observe(const char *name, const char *label_name, const char *label_value,
			       double seconds);

/* Pull collectors run at every scrape, in registration order, and emit
 * counter or gauge samples that live for that scrape only (so series of
 * queues that no longer exist vanish by themselves). Registering the same
 * fn and ctx twice is a no-op. */
typedef void (*metrics_collector_fn)(struct metrics_scrape *sc, void *ctx);
void metrics_register_collector(metrics_collector_fn fn, void *ctx);
/* Emits one sample during a scrape. Samples of a family render in emission
 * order, before its registered series; a collector must not emit the same
 * label twice (sum first). */
void metrics_emit(struct metrics_scrape *sc, const char *name, enum metrics_type type,
		  const char *label_name, const char *label_value, double v);

/* Declarations: every family a module updates or a collector emits is
 * declared once, from a static table, with its one-line meaning; the
 * metrics catalogue (kumod --list-metrics, docs/metrics.md) is generated
 * from them. help must be static text; declaring without help panics.
 * Declaring registers the family (it renders only once it has samples). */
struct metrics_decl {
	const char *name;
	enum metrics_type type;
	const char *label_name; /* NULL: unlabeled */
	const char *help;	/* one-line meaning (Markdown allowed) */
};
void metrics_declare(const struct metrics_decl *d, size_t n);
/* The first registered family without a declaration, or NULL (tests). */
const char *metrics_first_undeclared(void);
/* Appends every registered family sorted by name: one "name type label
 * help" line each, or (markdown) a table | Name | Type | Labels | Meaning |. */
void metrics_list(struct buf *out, int markdown);

/* Appends the whole registry (collectors run first). Families render sorted
 * by name; families without any sample are left out. */
void metrics_render_text(struct buf *out);
/* {"<name>": {"help", "type", "value"}} where value is a number, a
 * histogram {"avg","bucket","count","sum"}, or {"<label>": {"<v>": ...}}. */
void metrics_render_json(struct buf *out);

/* 1 when name is a valid Prometheus metric or label name. */
int metrics_name_valid(const char *name, int is_label);
/* Appends s with Prometheus label-value escaping (\\, \", \n). */
void metrics_escape_label(struct buf *out, const char *s);
/* Frees everything (tests, shutdown). */
void metrics_reset(void);

#endif
