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
#define TL_DETAIL_MAX 240 /* bytes, NUL included: a length fits one byte */
#define TL_EVENTS_MAX 255 /* distinct event names; index 255 is "?" */
#define TL_ID_MAX 32	  /* message ids are 32 characters */
#define TL_HEAD 4	  /* first entries always kept: reception, policy, spool */

/* A queued message keeps its story while it waits (days, for a slow
 * destination), so the story is packed into one allocation: per entry the
 * time since the previous entry in microseconds (LEB128 varint, usually 1-3
 * bytes), the event (an index into a table of names), the detail length
 * and the detail bytes (no NUL); oldest first. Wall times are the first
 * entry's plus the monotonic time elapsed since. */
struct timeline {
	struct timeline *next_hash;
	struct timeline *next_done; /* FIFO of finished ones */
	unsigned char *log;	    /* n packed entries in used of cap bytes */
	uint64_t wall0_ns;	    /* the first entry's wall time */
	uint64_t last_mono_ns;	    /* the newest entry's monotonic time */
	uint32_t used, cap, dropped;
	uint16_t n;
	uint8_t finished;
	char id[TL_ID_MAX + 1];
};

/* One decoded entry (detail points into the log, len bytes). */
struct tl_entry {
	uint64_t delta_us;
	const char *event;
	const char *detail;
	size_t len;
};

static const char *tl_events[TL_EVENTS_MAX];
static size_t tl_nevents;

/* The index of a (static) event name, added on first use. */
static unsigned char event_index(const char *event)
{
	for (size_t i = 0; i < tl_nevents; i++)
		if (tl_events[i] == event || strcmp(tl_events[i], event) == 0)
			return (unsigned char)i;
	if (tl_nevents == TL_EVENTS_MAX)
		return TL_EVENTS_MAX;
	tl_events[tl_nevents] = event;
	return (unsigned char)tl_nevents++;
}

static size_t varint_put(unsigned char *p, uint64_t v)
{
	size_t n = 0;
	do {
		p[n] = (unsigned char)(v & 0x7f) | (v > 0x7f ? 0x80 : 0);
		v >>= 7;
		n++;
	} while (v);
	return n;
}

static size_t varint_get(const unsigned char *p, uint64_t *v)
{
	size_t n = 0;
	*v = 0;
	do {
		*v |= (uint64_t)(p[n] & 0x7f) << (7 * n);
	} while (p[n++] & 0x80);
	return n;
}

/* Decodes the entry at offset off; returns the offset of the next one. */
static size_t entry_at(const struct timeline *t, size_t off, struct tl_entry *e)
{
	const unsigned char *p = t->log + off;
	size_t v = varint_get(p, &e->delta_us);
	e->event = p[v] < tl_nevents ? tl_events[p[v]] : "?";
	e->len = p[v + 1];
	e->detail = (const char *)p + v + 2;
	return off + v + 2 + e->len;
}

/* Drops the oldest entry: the second becomes the first (its delta, now
 * folded into the first entry's times, is rewritten as 0). */
static void drop_oldest(struct timeline *t)
{
	struct tl_entry e;
	size_t second = entry_at(t, 0, &e);
	t->n--;
	t->dropped++;
	if (!t->n) {
		t->used = 0;
		return;
	}
	uint64_t d;
	size_t v = varint_get(t->log + second, &d);
	t->wall0_ns += d * 1000u;
	t->log[0] = 0;
	memmove(t->log + 1, t->log + second + v, t->used - second - v);
	t->used -= (uint32_t)(second + v - 1);
}

/* Drops entry k (k > 0, the first after the kept head): its delta is
 * folded into the next entry's (or, when it was the newest, the newest
 * time goes back to the entry before it), so every later time stays right. */
static void drop_after_head(struct timeline *t, size_t k)
{
	struct tl_entry e;
	size_t off = 0;
	for (size_t i = 0; i < k; i++)
		off = entry_at(t, off, &e);
	size_t next = entry_at(t, off, &e);
	t->n--;
	t->dropped++;
	if (next >= t->used) { /* it was the newest */
		t->last_mono_ns -= e.delta_us * 1000u;
		t->used = (uint32_t)off;
		return;
	}
	uint64_t d;
	size_t v = varint_get(t->log + next, &d);
	unsigned char head[10];
	size_t hn = varint_put(head, d + e.delta_us); /* fits: hn <= (next - off) + v */
	memmove(t->log + off + hn, t->log + next + v, t->used - next - v);
	memcpy(t->log + off, head, hn);
	t->used -= (uint32_t)(next + v - off - hn);
}

/* Entries kept at the start when the story is over its budget. */
static size_t head_entries(void)
{
	return msg_timeline_size > TL_HEAD ? TL_HEAD : msg_timeline_size - 1;
}

/* Makes room for the newest entries: the first after the head goes. */
static void drop_one(struct timeline *t)
{
	size_t h = head_entries();
	if (h && t->n > h)
		drop_after_head(t, h);
	else
		drop_oldest(t);
}

/* Bytes of the first k entries. */
static size_t prefix_bytes(const struct timeline *t, size_t k)
{
	struct tl_entry e;
	size_t off = 0;
	for (size_t i = 0; i < k && i < t->n; i++)
		off = entry_at(t, off, &e);
	return off;
}

int msg_timeline_size = -1;
static size_t tl_budget; /* bytes of packed entries per message; 0: no limit */
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
	const char *b = getenv("KUMOD_MESSAGE_TIMELINE_BYTES");
	long nb = b && *b ? strtol(b, NULL, 10) : MSG_TIMELINE_BYTES;
	tl_budget = nb <= 0 ? 0 : nb < 128 ? 128 : nb > 65536 ? 65536 : (size_t)nb;
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
	free(t->log);
	free(t);
}

void msg_timeline__note(const char *id, const char *event, const char *fmt, ...)
{
	if (msg_timeline_size < 0)
		settings();
	if (!msg_timeline_size || !id || !*id || strlen(id) > TL_ID_MAX)
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
	char d[TL_DETAIL_MAX];
	va_list ap;
	va_start(ap, fmt);
	int dn = vsnprintf(d, sizeof(d), fmt, ap);
	va_end(ap);
	size_t len = dn < 0 ? 0 : (size_t)dn < sizeof(d) ? (size_t)dn : sizeof(d) - 1;
	if (t->n >= (size_t)msg_timeline_size) /* full: one entry goes */
		drop_one(t);
	size_t h = head_entries();
	if (tl_budget) {
		/* a head entry takes at most a fifth of the budget; a later one
		 * what the head leaves (12 bytes: the largest time, event, length) */
		size_t p = prefix_bytes(t, h);
		size_t room = t->n < h		   ? tl_budget / 5 - 12
			      : p + 12 < tl_budget ? tl_budget - p - 12
						   : 0;
		if (len > room) { /* cut on a UTF-8 character's start */
			len = room;
			while (len && ((unsigned char)d[len] & 0xc0) == 0x80)
				len--;
		}
		while (t->n && t->used + 12 + len > tl_budget)
			drop_one(t);
	}
	uint64_t mono = clock_mono_ns(), delta_us = 0;
	if (t->n == 0) {
		t->wall0_ns = clock_wall_ns();
		t->last_mono_ns = mono;
	} else if (mono > t->last_mono_ns) {
		delta_us = (mono - t->last_mono_ns) / 1000u;
		t->last_mono_ns += delta_us * 1000u; /* no drift from the rounding */
	}
	unsigned char head[12];
	size_t hn = varint_put(head, delta_us);
	head[hn++] = event_index(event);
	head[hn++] = (unsigned char)len;
	size_t need = t->used + hn + len;
	if (need > t->cap) { /* grown in 32-byte steps: little slack per message */
		t->cap = (uint32_t)((need + 31) & ~(size_t)31);
		if (tl_budget && need <= tl_budget && t->cap > tl_budget)
			t->cap = (uint32_t)tl_budget;
		t->log = xrealloc(t->log, t->cap);
	}
	memcpy(t->log + t->used, head, hn);
	memcpy(t->log + t->used + hn, d, len);
	t->used = (uint32_t)need;
	t->n++;
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
	uint64_t elapsed_us = 0;
	size_t off = 0, h = head_entries();
	for (size_t i = 0; i < t->n; i++) {
		if (i == h && t->dropped) { /* where the dropped ones were */
			char m[64];
			snprintf(m, sizeof(m), "\u2026 %u earlier events dropped",
				 (unsigned)t->dropped);
			json_array_append_new(
			    a, json_pack("{s:o, s:s, s:s, s:I, s:I}", "at",
					 when_json(t->wall0_ns + elapsed_us * 1000u), "event",
					 "Dropped", "detail", m, "elapsed_us",
					 (json_int_t)elapsed_us, "delta_us", (json_int_t)0));
		}
		struct tl_entry e;
		off = entry_at(t, off, &e);
		uint64_t delta_us = i ? e.delta_us : 0;
		elapsed_us += delta_us;
		json_t *d = json_stringn(e.detail, e.len);
		json_array_append_new(
		    a, json_pack("{s:o, s:s, s:o, s:I, s:I}", "at",
				 when_json(t->wall0_ns + elapsed_us * 1000u), "event", e.event,
				 "detail", d ? d : json_string("(not UTF-8)"), "elapsed_us",
				 (json_int_t)elapsed_us, "delta_us", (json_int_t)delta_us));
	}
	if (finished)
		*finished = t->finished;
	if (dropped)
		*dropped = t->dropped;
	return a;
}
