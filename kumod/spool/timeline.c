/* SPDX-License-Identifier: Apache-2.0 */
/* Per-message timelines (see timeline.h): a chained hash of rings keyed by
 * message id; finished rings wait in a FIFO of MSG_TIMELINE_KEEP. */
#include "spool/timeline.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/xalloc.h"

#define TL_BUCKETS 65536
#define TL_DETAIL_MAX 240

struct tl_entry {
	uint64_t wall_ns, mono_ns;
	const char *event;
	char *detail;
};

struct timeline {
	char id[40];
	struct tl_entry *e; /* ring of cap entries, n used, oldest at start */
	size_t cap, n, start;
	uint64_t dropped;
	int finished;
	struct timeline *next_hash;
	struct timeline *next_done; /* FIFO of finished ones */
};

int msg_timeline_size = -1;
static int in_log;
static struct {
	struct timeline **bucket;
	size_t live, done;
	struct timeline *done_head, *done_tail;
} TL;

static void settings(void)
{
	const char *s = getenv("KUMOD_MESSAGE_TIMELINE");
	long n = s && *s ? strtol(s, NULL, 10) : 32;
	msg_timeline_size = n < 0 ? 0 : n > 1024 ? 1024 : (int)n;
	const char *l = getenv("KUMOD_MESSAGE_TIMELINE_LOG");
	in_log = l && strcmp(l, "1") == 0 && msg_timeline_size > 0;
	if (msg_timeline_size)
		TL.bucket = xcalloc(TL_BUCKETS, sizeof(*TL.bucket));
}

int msg_timeline_in_log(void)
{
	if (msg_timeline_size < 0)
		settings();
	return in_log;
}

static size_t hash(const char *id)
{
	size_t h = 1469598103934665603ull;
	for (; *id; id++)
		h = (h ^ (unsigned char)*id) * 1099511628211ull;
	return h % TL_BUCKETS;
}

static struct timeline *find(const char *id, struct timeline ***slot)
{
	struct timeline **pp = &TL.bucket[hash(id)];
	for (; *pp; pp = &(*pp)->next_hash)
		if (strcmp((*pp)->id, id) == 0)
			break;
	if (slot)
		*slot = pp;
	return *pp;
}

static void tl_free(struct timeline *t)
{
	for (size_t i = 0; i < t->n; i++)
		free(t->e[(t->start + i) % t->cap].detail);
	free(t->e);
	free(t);
}

void msg_timeline__note(const char *id, const char *event, const char *fmt, ...)
{
	if (msg_timeline_size < 0)
		settings();
	if (!msg_timeline_size || !id || !*id)
		return;
	struct timeline **slot, *t = find(id, &slot);
	if (!t) {
		if (TL.live >= MSG_TIMELINE_LIVE_MAX)
			return;
		t = xcalloc(1, sizeof(*t));
		snprintf(t->id, sizeof(t->id), "%s", id);
		*slot = t;
		TL.live++;
	}
	if (t->n == t->cap && t->cap < (size_t)msg_timeline_size) {
		/* grow (the ring has not wrapped yet: start is 0) */
		size_t cap = t->cap ? t->cap * 2 : 8;
		t->cap = cap < (size_t)msg_timeline_size ? cap : (size_t)msg_timeline_size;
		t->e = xrealloc(t->e, t->cap * sizeof(*t->e));
	}
	struct tl_entry *e;
	if (t->n == t->cap) { /* full: the oldest entry goes */
		e = &t->e[t->start];
		free(e->detail);
		t->start = (t->start + 1) % t->cap;
		t->dropped++;
	} else {
		e = &t->e[(t->start + t->n++) % t->cap];
	}
	char d[TL_DETAIL_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(d, sizeof(d), fmt, ap);
	va_end(ap);
	e->wall_ns = clock_wall_ns();
	e->mono_ns = clock_mono_ns();
	e->event = event;
	e->detail = xstrdup(d);
}

void msg_timeline_end(const char *id)
{
	if (msg_timeline_size <= 0 || !id)
		return;
	struct timeline *t = find(id, NULL);
	if (!t || t->finished)
		return;
	t->finished = 1;
	TL.live--;
	if (TL.done_tail)
		TL.done_tail->next_done = t;
	else
		TL.done_head = t;
	TL.done_tail = t;
	if (++TL.done <= MSG_TIMELINE_KEEP)
		return;
	struct timeline *old = TL.done_head, **slot;
	TL.done_head = old->next_done;
	TL.done--;
	find(old->id, &slot);
	*slot = old->next_hash;
	tl_free(old);
}

static json_t *when_json(uint64_t wall_ns)
{
	time_t s = (time_t)(wall_ns / 1000000000u);
	struct tm tm;
	gmtime_r(&s, &tm);
	char out[48];
	size_t n = strftime(out, sizeof(out), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, sizeof(out) - n, ".%06uZ", (unsigned)(wall_ns % 1000000000u / 1000u));
	return json_string(out);
}

json_t *msg_timeline_json(const char *id, int *finished, uint64_t *dropped)
{
	if (msg_timeline_size < 0)
		settings();
	struct timeline *t = msg_timeline_size ? find(id, NULL) : NULL;
	if (!t)
		return NULL;
	json_t *a = json_array();
	uint64_t first = t->n ? t->e[t->start].mono_ns : 0, prev = first;
	for (size_t i = 0; i < t->n; i++) {
		const struct tl_entry *e = &t->e[(t->start + i) % t->cap];
		json_t *d = json_string(e->detail);
		json_array_append_new(
		    a, json_pack("{s:o, s:s, s:o, s:I, s:I}", "at", when_json(e->wall_ns), "event",
				 e->event, "detail", d ? d : json_string("(not UTF-8)"),
				 "elapsed_us", (json_int_t)((e->mono_ns - first) / 1000u),
				 "delta_us", (json_int_t)((e->mono_ns - prev) / 1000u)));
		prev = e->mono_ns;
	}
	if (finished)
		*finished = t->finished;
	if (dropped)
		*dropped = t->dropped;
	return a;
}
