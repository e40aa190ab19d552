/* SPDX-License-Identifier: Apache-2.0 */
/* Per-client-address connection counters (chained hash table). */
#include "base/peertab.h"

#include <stdlib.h>
#include <string.h>

#include "base/xalloc.h"

static size_t key_make(uint8_t key[17], int family, const uint8_t *addr)
{
	size_t n = family == 6 ? 16 : 4;
	memset(key, 0, 17);
	key[0] = (uint8_t)family;
	memcpy(key + 1, addr, n);
	return n + 1;
}

static size_t key_hash(const uint8_t key[17], size_t nslots)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (size_t i = 0; i < 17; i++)
		h = (h ^ key[i]) * 1099511628211ull;
	return (size_t)(h % nslots);
}

static void sweep(struct peertab *t, uint64_t now_ms, uint64_t window_len_ms)
{
	for (size_t i = 0; i < t->nslots; i++) {
		struct peer_entry **pp = &t->slots[i];
		while (*pp) {
			struct peer_entry *e = *pp;
			if (!e->conns && now_ms - e->window_ms >= window_len_ms) {
				*pp = e->next;
				free(e);
				t->n--;
			} else {
				pp = &e->next;
			}
		}
	}
}

static void grow(struct peertab *t)
{
	size_t nslots = t->nslots ? t->nslots * 4 : 256;
	struct peer_entry **slots = xcalloc(nslots, sizeof(*slots));
	for (size_t i = 0; i < t->nslots; i++) {
		struct peer_entry *e = t->slots[i], *next;
		for (; e; e = next) {
			next = e->next;
			size_t h = key_hash(e->key, nslots);
			e->next = slots[h];
			slots[h] = e;
		}
	}
	free(t->slots);
	t->slots = slots;
	t->nslots = nslots;
}

struct peer_entry *peertab_get(struct peertab *t, int family, const uint8_t *addr, uint64_t now_ms,
			       uint64_t window_len_ms)
{
	uint8_t key[17];
	key_make(key, family, addr);
	if (t->nslots && ++t->gets % 4096 == 0)
		sweep(t, now_ms, window_len_ms);
	if (t->n >= t->nslots)
		grow(t);
	size_t h = key_hash(key, t->nslots);
	for (struct peer_entry *e = t->slots[h]; e; e = e->next)
		if (memcmp(e->key, key, sizeof(key)) == 0)
			return e;
	struct peer_entry *e = xcalloc(1, sizeof(*e));
	memcpy(e->key, key, sizeof(key));
	e->window_ms = now_ms;
	e->next = t->slots[h];
	t->slots[h] = e;
	t->n++;
	return e;
}

int peertab_rate_hit(struct peer_entry *e, uint64_t now_ms, uint64_t limit, uint64_t period_ms)
{
	if (!limit || !period_ms)
		return 0;
	if (now_ms - e->window_ms >= period_ms) {
		e->window_ms = now_ms;
		e->window_conns = 0;
	}
	return ++e->window_conns > limit;
}

void peertab_free(struct peertab *t)
{
	for (size_t i = 0; i < t->nslots; i++) {
		struct peer_entry *e = t->slots[i], *next;
		for (; e; e = next) {
			next = e->next;
			free(e);
		}
	}
	free(t->slots);
	memset(t, 0, sizeof(*t));
}
