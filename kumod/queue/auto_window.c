/* SPDX-License-Identifier: Apache-2.0 */
/* Sliding-window event counts for shaping automation thresholds. */
#include "queue/auto_window.h"

#include <stdlib.h>
#include <string.h>

#include "base/xalloc.h"

#define NBUCKETS 1024

struct win {
	char *key;
	uint64_t period_ms;
	size_t cap;	/* the limit: newest cap events kept */
	size_t n, head; /* head: index of the oldest */
	uint64_t *ts;
	struct win *next;
};

struct auto_window_set {
	struct win *b[NBUCKETS];
	size_t count;
};

static size_t hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return (size_t)(h % NBUCKETS);
}

struct auto_window_set *auto_window_new(void)
{
	return xcalloc(1, sizeof(struct auto_window_set));
}

static void win_free(struct win *w)
{
	free(w->key);
	free(w->ts);
	free(w);
}

void auto_window_free(struct auto_window_set *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < NBUCKETS; i++)
		while (s->b[i]) {
			struct win *w = s->b[i];
			s->b[i] = w->next;
			win_free(w);
		}
	free(s);
}

static struct win **win_find(struct auto_window_set *s, const char *key)
{
	struct win **pp = &s->b[hash(key)];
	while (*pp && strcmp((*pp)->key, key) != 0)
		pp = &(*pp)->next;
	return pp;
}

/* Drops events at or before now - period. */
static void win_expire(struct win *w, uint64_t now_ms)
{
	while (w->n && w->ts[w->head] + w->period_ms <= now_ms) {
		w->head = (w->head + 1) % w->cap;
		w->n--;
	}
}

size_t auto_window_hit(struct auto_window_set *s, const char *key, size_t limit, uint64_t period_ms,
		       uint64_t now_ms)
{
	if (limit < 1)
		limit = 1;
	if (period_ms < 1)
		period_ms = 1;
	struct win **pp = win_find(s, key);
	struct win *w = *pp;
	if (w && (w->cap != limit || w->period_ms != period_ms)) {
		*pp = w->next;
		win_free(w);
		s->count--;
		w = NULL;
	}
	if (!w) {
		w = xcalloc(1, sizeof(*w));
		w->key = xstrdup(key);
		w->period_ms = period_ms;
		w->cap = limit;
		w->ts = xcalloc(limit, sizeof(*w->ts));
		w->next = s->b[hash(key)];
		s->b[hash(key)] = w;
		s->count++;
	}
	win_expire(w, now_ms);
	if (w->n == w->cap) { /* full: the oldest goes */
		w->head = (w->head + 1) % w->cap;
		w->n--;
	}
	w->ts[(w->head + w->n) % w->cap] = now_ms;
	w->n++;
	return w->n;
}

size_t auto_window_prune(struct auto_window_set *s, uint64_t now_ms)
{
	for (size_t i = 0; i < NBUCKETS; i++) {
		struct win **pp = &s->b[i];
		while (*pp) {
			struct win *w = *pp;
			win_expire(w, now_ms);
			if (w->n == 0) {
				*pp = w->next;
				win_free(w);
				s->count--;
			} else {
				pp = &w->next;
			}
		}
	}
	return s->count;
}
