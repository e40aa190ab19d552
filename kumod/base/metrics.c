/* SPDX-License-Identifier: Apache-2.0 */
/* Metrics registry and its two renderings (Prometheus text, metrics.json).
 * Histograms keep exact Prometheus buckets rather than base/hist.h's
 * log-linear ones: `le` boundaries must count exactly, not to 1/32. */
#include "base/metrics.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/xalloc.h"

static const double default_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define NBUCKETS (sizeof(default_buckets) / sizeof(default_buckets[0]))

struct metrics_hist {
	uint64_t counts[NBUCKETS]; /* per bucket, not cumulative */
	uint64_t count;
	double sum;
};

struct metrics_series {
	char *label; /* NULL: unlabeled */
	double value;
	struct metrics_hist *h;
	struct metrics_series *next;
};

struct metrics_family {
	char *name, *label_name;
	const char *help; /* declared meaning (static text), or NULL */
	enum metrics_type type;
	struct metrics_series *series, **series_tail;
	struct metrics_series *scrape, **scrape_tail; /* this scrape's samples */
	struct metrics_family *next;		      /* sorted by name */
};

struct metrics_collector {
	metrics_collector_fn fn;
	void *ctx;
	struct metrics_collector *next;
};

struct metrics_scrape {
	struct metrics_family *last; /* lookup cache: collectors emit runs */
};

static struct {
	struct metrics_family *families;
	struct metrics_collector *collectors, **collectors_tail;
} reg;

static const char *const type_names[] = {"counter", "gauge", "histogram"};

/* --- registry ------------------------------------------------------------- */

int metrics_name_valid(const char *name, int is_label)
{
	if (!name || !*name)
		return 0;
	for (const char *p = name; *p; p++) {
		char c = *p;
		int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
			    (!is_label && c == ':');
		if (!alpha && !(p != name && c >= '0' && c <= '9'))
			return 0;
	}
	return 1;
}

static struct metrics_family *family_find(const char *name)
{
	for (struct metrics_family *f = reg.families; f; f = f->next)
		if (strcmp(f->name, name) == 0)
			return f;
	return NULL;
}

struct metrics_family *metrics_family(const char *name, enum metrics_type type,
				      const char *label_name)
{
	struct metrics_family *f = family_find(name);
	if (f) {
		int same_label = label_name
				     ? f->label_name && strcmp(label_name, f->label_name) == 0
				     : !f->label_name;
		if (f->type != type || !same_label)
			panic("%s: metric %s re-registered with another type or label", __func__,
			      name);
		return f;
	}
	if (!metrics_name_valid(name, 0) || (label_name && !metrics_name_valid(label_name, 1)))
		panic("%s: invalid metric or label name '%s'", __func__, name);
	f = xcalloc(1, sizeof(*f));
	f->name = xstrdup(name);
	f->label_name = label_name ? xstrdup(label_name) : NULL;
	f->type = type;
	f->series_tail = &f->series;
	f->scrape_tail = &f->scrape;
	struct metrics_family **pp = &reg.families;
	while (*pp && strcmp((*pp)->name, name) < 0)
		pp = &(*pp)->next;
	f->next = *pp;
	*pp = f;
	return f;
}

static int label_eq(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

static struct metrics_series *series_new(struct metrics_family *f, const char *label_value)
{
	struct metrics_series *s = xcalloc(1, sizeof(*s));
	s->label = label_value ? xstrdup(label_value) : NULL;
	if (f->type == METRICS_HISTOGRAM)
		s->h = xcalloc(1, sizeof(*s->h));
	return s;
}

static void series_free(struct metrics_series *s)
{
	if (!s)
		return;
	free(s->label);
	free(s->h);
	free(s);
}

struct metrics_series *metrics_series(struct metrics_family *f, const char *label_value)
{
	if (!f->label_name != !label_value)
		panic("%s: %s: label value %s", __func__, f->name,
		      label_value ? "given for an unlabeled family" : "missing");
	for (struct metrics_series *s = f->series; s; s = s->next)
		if (label_eq(s->label, label_value))
			return s;
	struct metrics_series *s = series_new(f, label_value);
	*f->series_tail = s;
	f->series_tail = &s->next;
	return s;
}

void metrics_series_remove(struct metrics_family *f, const char *label_value)
{
	struct metrics_series **pp = &f->series;
	for (; *pp; pp = &(*pp)->next) {
		struct metrics_series *s = *pp;
		if (!label_eq(s->label, label_value))
			continue;
		*pp = s->next;
		if (f->series_tail == &s->next)
			f->series_tail = pp;
		series_free(s);
		return;
	}
}

void metrics_add(struct metrics_series *s, double v)
{
	s->value += v;
}

void metrics_set(struct metrics_series *s, double v)
{
	s->value = v;
}

void metrics_observe(struct metrics_series *s, double seconds)
{
	if (!s->h)
		panic("%s: not a histogram series", __func__);
	size_t i = 0;
	while (i < NBUCKETS && seconds > default_buckets[i])
		i++;
	if (i < NBUCKETS)
		s->h->counts[i]++;
	s->h->count++;
	s->h->sum += seconds;
}

double metrics_value(const struct metrics_series *s)
{
	return s->h ? (double)s->h->count : s->value;
}

void metrics_counter_add(const char *name, const char *label_name, const char *label_value,
			 double v)
{
	metrics_add(metrics_series(metrics_family(name, METRICS_COUNTER, label_name), label_value),
		    v);
}

void metrics_histogram_observe(const char *name, const char *label_name, const char *label_value,
			       double seconds)
{
	struct metrics_family *f = metrics_family(name, METRICS_HISTOGRAM, label_name);
	metrics_observe(metrics_series(f, label_value), seconds);
}

/* --- collectors ----------------------------------------------------------- */

void metrics_register_collector(metrics_collector_fn fn, void *ctx)
{
	for (struct metrics_collector *c = reg.collectors; c; c = c->next)
		if (c->fn == fn && c->ctx == ctx)
			return;
	if (!reg.collectors_tail)
		reg.collectors_tail = &reg.collectors;
	struct metrics_collector *c = xcalloc(1, sizeof(*c));
	c->fn = fn;
	c->ctx = ctx;
	*reg.collectors_tail = c;
	reg.collectors_tail = &c->next;
}

void metrics_emit(struct metrics_scrape *sc, const char *name, enum metrics_type type,
		  const char *label_name, const char *label_value, double v)
{
	if (type == METRICS_HISTOGRAM)
		panic("%s: collectors emit counters and gauges only (%s)", __func__, name);
	struct metrics_family *f = sc->last;
	if (!f || strcmp(f->name, name) != 0)
		f = sc->last = metrics_family(name, type, label_name);
	if (!f->label_name != !label_value)
		panic("%s: %s: label value %s", __func__, name,
		      label_value ? "given for an unlabeled family" : "missing");
	struct metrics_series *s = series_new(f, label_value);
	s->value = v;
	*f->scrape_tail = s;
	f->scrape_tail = &s->next;
}

static void scrape_begin(struct metrics_scrape *sc)
{
	sc->last = NULL;
	for (struct metrics_collector *c = reg.collectors; c; c = c->next)
		c->fn(sc, c->ctx);
}

static void scrape_end(void)
{
	for (struct metrics_family *f = reg.families; f; f = f->next) {
		while (f->scrape) {
			struct metrics_series *s = f->scrape;
			f->scrape = s->next;
			series_free(s);
		}
		f->scrape_tail = &f->scrape;
	}
}

/* --- rendering ------------------------------------------------------------ */

static void append_number(struct buf *out, double v)
{
	if (isnan(v))
		buf_appends(out, "NaN");
	else if (isinf(v))
		buf_appends(out, v > 0 ? "+Inf" : "-Inf");
	else if (v == floor(v) && fabs(v) < 9007199254740992.0)
		buf_printf(out, "%.0f", v);
	else
		buf_printf(out, "%.17g", v);
}

void metrics_escape_label(struct buf *out, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\')
			buf_appends(out, "\\\\");
		else if (*s == '"')
			buf_appends(out, "\\\"");
		else if (*s == '\n')
			buf_appends(out, "\\n");
		else
			buf_appendc(out, *s);
	}
}

/* name{label="value",le="x"} ; extra_le NULL for none. */
static void text_sample_name(struct buf *out, const struct metrics_family *f, const char *suffix,
			     const struct metrics_series *s, const char *le)
{
	buf_appends(out, f->name);
	buf_appends(out, suffix);
	if (!s->label && !le)
		return;
	buf_appendc(out, '{');
	if (s->label) {
		buf_printf(out, "%s=\"", f->label_name);
		metrics_escape_label(out, s->label);
		buf_appendc(out, '"');
	}
	if (le)
		buf_printf(out, "%sle=\"%s\"", s->label ? "," : "", le);
	buf_appendc(out, '}');
}

static void text_hist(struct buf *out, const struct metrics_family *f,
		      const struct metrics_series *s)
{
	uint64_t cum = 0;
	char le[32];
	for (size_t i = 0; i < NBUCKETS; i++) {
		cum += s->h->counts[i];
		snprintf(le, sizeof(le), "%g", default_buckets[i]);
		text_sample_name(out, f, "_bucket", s, le);
		buf_printf(out, " %llu\n", (unsigned long long)cum);
	}
	text_sample_name(out, f, "_bucket", s, "+Inf");
	buf_printf(out, " %llu\n", (unsigned long long)s->h->count);
	text_sample_name(out, f, "_sum", s, NULL);
	buf_appendc(out, ' ');
	append_number(out, s->h->sum);
	buf_appendc(out, '\n');
	text_sample_name(out, f, "_count", s, NULL);
	buf_printf(out, " %llu\n", (unsigned long long)s->h->count);
}

static void text_series_list(struct buf *out, const struct metrics_family *f,
			     const struct metrics_series *s)
{
	for (; s; s = s->next) {
		if (s->h) {
			text_hist(out, f, s);
			continue;
		}
		text_sample_name(out, f, "", s, NULL);
		buf_appendc(out, ' ');
		append_number(out, s->value);
		buf_appendc(out, '\n');
	}
}

void metrics_render_text(struct buf *out)
{
	struct metrics_scrape sc;
	scrape_begin(&sc);
	for (struct metrics_family *f = reg.families; f; f = f->next) {
		if (!f->scrape && !f->series)
			continue;
		buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->name, f->name,
			   type_names[f->type]);
		text_series_list(out, f, f->scrape);
		text_series_list(out, f, f->series);
	}
	scrape_end();
}

/* Length of a valid UTF-8 sequence at p (n bytes left), 0 if invalid. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
	size_t len = p[0] < 0x80		    ? 1
		     : p[0] >= 0xc2 && p[0] <= 0xdf ? 2
		     : p[0] >= 0xe0 && p[0] <= 0xef ? 3
		     : p[0] >= 0xf0 && p[0] <= 0xf4 ? 4
						    : 0;
	if (!len || len > n)
		return 0;
	for (size_t i = 1; i < len; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	return len;
}

static void json_string(struct buf *out, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s);
	buf_appendc(out, '"');
	for (size_t i = 0; i < n;) {
		unsigned char c = p[i];
		if (c == '"' || c == '\\') {
			buf_appendc(out, '\\');
			buf_appendc(out, (char)c);
			i++;
		} else if (c < 0x20) {
			buf_printf(out, "\\u%04x", c);
			i++;
		} else {
			size_t len = utf8_len(p + i, n - i);
			if (len)
				buf_append(out, p + i, len);
			else
				buf_appends(out, "\\ufffd");
			i += len ? len : 1;
		}
	}
	buf_appendc(out, '"');
}

static void json_number(struct buf *out, double v)
{
	if (isnan(v) || isinf(v))
		buf_appends(out, "null");
	else
		append_number(out, v);
}

static void json_hist(struct buf *out, const struct metrics_hist *h)
{
	buf_appends(out, "{\"avg\":");
	json_number(out, h->count ? h->sum / (double)h->count : 0);
	buf_appends(out, ",\"bucket\":{");
	uint64_t cum = 0;
	for (size_t i = 0; i < NBUCKETS; i++) {
		cum += h->counts[i];
		buf_printf(out, "%s\"%g\":%llu", i ? "," : "", default_buckets[i],
			   (unsigned long long)cum);
	}
	buf_printf(out, ",\"+Inf\":%llu},\"count\":%llu,\"sum\":", (unsigned long long)h->count,
		   (unsigned long long)h->count);
	json_number(out, h->sum);
	buf_appendc(out, '}');
}

static void json_value(struct buf *out, const struct metrics_series *s)
{
	if (s->h)
		json_hist(out, s->h);
	else
		json_number(out, s->value);
}

static void json_labeled(struct buf *out, const struct metrics_family *f)
{
	buf_appendc(out, '{');
	json_string(out, f->label_name);
	buf_appends(out, ":{");
	int first = 1;
	const struct metrics_series *lists[2] = {f->scrape, f->series};
	for (size_t l = 0; l < 2; l++) {
		for (const struct metrics_series *s = lists[l]; s; s = s->next) {
			if (!first)
				buf_appendc(out, ',');
			first = 0;
			json_string(out, s->label);
			buf_appendc(out, ':');
			json_value(out, s);
		}
	}
	buf_appends(out, "}}");
}

void metrics_render_json(struct buf *out)
{
	struct metrics_scrape sc;
	scrape_begin(&sc);
	buf_appendc(out, '{');
	int first = 1;
	for (struct metrics_family *f = reg.families; f; f = f->next) {
		const struct metrics_series *any = f->scrape ? f->scrape : f->series;
		if (!any)
			continue;
		if (!first)
			buf_appendc(out, ',');
		first = 0;
		json_string(out, f->name);
		buf_appends(out, ":{\"help\":");
		json_string(out, f->name);
		buf_printf(out, ",\"type\":\"%s\",\"value\":", type_names[f->type]);
		if (f->label_name)
			json_labeled(out, f);
		else
			json_value(out, any);
		buf_appendc(out, '}');
	}
	buf_appends(out, "}\n");
	scrape_end();
}

void metrics_declare(const struct metrics_decl *d, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (!d[i].help || !*d[i].help)
			panic("%s: metric %s declared without help text", __func__, d[i].name);
		metrics_family(d[i].name, d[i].type, d[i].label_name)->help = d[i].help;
	}
}

const char *metrics_first_undeclared(void)
{
	for (const struct metrics_family *f = reg.families; f; f = f->next)
		if (!f->help)
			return f->name;
	return NULL;
}

/* Markdown table cell: '|' would end the cell. */
static void md_cell(struct buf *out, const char *s)
{
	for (; *s; s++) {
		if (*s == '|')
			buf_appendc(out, '\\');
		buf_appendc(out, *s);
	}
}

void metrics_list(struct buf *out, int markdown)
{
	if (markdown)
		buf_appends(out, "| Name | Type | Labels | Meaning |\n|---|---|---|---|\n");
	for (const struct metrics_family *f = reg.families; f; f = f->next) {
		const char *help = f->help ? f->help : "(undeclared)";
		if (!markdown) {
			buf_printf(out, "%s %s %s %s\n", f->name, type_names[f->type],
				   f->label_name ? f->label_name : "-", help);
			continue;
		}
		buf_printf(out, "| `%s` | %s | ", f->name, type_names[f->type]);
		if (f->label_name)
			buf_printf(out, "`%s`", f->label_name);
		else
			buf_appends(out, "—");
		buf_appends(out, " | ");
		md_cell(out, help);
		buf_appends(out, " |\n");
	}
}

void metrics_reset(void)
{
	while (reg.families) {
		struct metrics_family *f = reg.families;
		reg.families = f->next;
		while (f->series) {
			struct metrics_series *s = f->series;
			f->series = s->next;
			series_free(s);
		}
		free(f->name);
		free(f->label_name);
		free(f);
	}
	while (reg.collectors) {
		struct metrics_collector *c = reg.collectors;
		reg.collectors = c->next;
		free(c);
	}
	reg.collectors_tail = &reg.collectors;
}
