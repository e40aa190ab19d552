/* SPDX-License-Identifier: Apache-2.0 */
/* Domain maps (see domain_map.h). The tree is kept flat: one hash table of
 * label-aligned suffixes ("com", "ex.com", "*.ex.com"), each a node that may
 * hold a value. A lookup probes the suffixes of the name from the shortest;
 * the first absent one sends it to the wildcard sibling. */
#include <stdlib.h>
#include <string.h>

#include "base/xalloc.h"
#include "proto/domain_map.h"

struct dm_node {
	char *name;
	size_t len;
	uint64_t hash;
	int has_value;
	int64_t value;
};

struct domain_map {
	struct dm_node *slots; /* open addressing; name NULL = empty */
	size_t cap, used, values;
};

static uint64_t dm_hash(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
	return h;
}

struct domain_map *domain_map_new(void)
{
	struct domain_map *m = xcalloc(1, sizeof(*m));
	m->cap = 16;
	m->slots = xcalloc(m->cap, sizeof(*m->slots));
	return m;
}

void domain_map_free(struct domain_map *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->cap; i++)
		free(m->slots[i].name);
	free(m->slots);
	free(m);
}

static struct dm_node *dm_find(const struct domain_map *m, const char *s, size_t n)
{
	uint64_t h = dm_hash(s, n);
	for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		struct dm_node *e = &m->slots[i];
		if (!e->name)
			return NULL;
		if (e->hash == h && e->len == n && memcmp(e->name, s, n) == 0)
			return e;
	}
}

static void dm_place(struct dm_node *slots, size_t cap, struct dm_node *node)
{
	size_t i = node->hash & (cap - 1);
	while (slots[i].name)
		i = (i + 1) & (cap - 1);
	slots[i] = *node;
}

static struct dm_node *dm_add(struct domain_map *m, const char *s, size_t n)
{
	struct dm_node *e = dm_find(m, s, n);
	if (e)
		return e;
	if ((m->used + 1) * 2 > m->cap) {
		size_t cap = m->cap * 2;
		struct dm_node *slots = xcalloc(cap, sizeof(*slots));
		for (size_t i = 0; i < m->cap; i++)
			if (m->slots[i].name)
				dm_place(slots, cap, &m->slots[i]);
		free(m->slots);
		m->slots = slots;
		m->cap = cap;
	}
	struct dm_node node = {.name = xmalloc(n + 1), .len = n, .hash = dm_hash(s, n)};
	memcpy(node.name, s, n);
	node.name[n] = 0;
	m->used++;
	dm_place(m->slots, m->cap, &node);
	return dm_find(m, s, n);
}

int domain_map_set(struct domain_map *m, const char *name, size_t len, int64_t value, int64_t *old)
{
	/* every label-aligned suffix becomes a node */
	for (size_t i = len; i-- > 0;)
		if (name[i] == '.')
			dm_add(m, name + i + 1, len - i - 1);
	struct dm_node *e = dm_add(m, name, len);
	int had = e->has_value;
	if (had && old)
		*old = e->value;
	if (!had)
		m->values++;
	e->has_value = 1;
	e->value = value;
	return had;
}

int domain_map_unset(struct domain_map *m, const char *name, size_t len, int64_t *old)
{
	struct dm_node *e = dm_find(m, name, len);
	if (!e || !e->has_value)
		return 0;
	if (old)
		*old = e->value;
	e->has_value = 0;
	m->values--;
	return 1;
}

/* The value of the "*" node beside the suffix name[start..len) (the whole
 * name's parent level: "*" + "." + suffix, or "*" at the top). */
static int dm_wild(const struct domain_map *m, const char *name, size_t len, size_t start,
		   int64_t *value)
{
	char stack[256];
	size_t sufl = len - start;
	size_t wl = sufl ? sufl + 2 : 1;
	char *w = wl <= sizeof(stack) ? stack : xmalloc(wl);
	w[0] = '*';
	if (sufl) {
		w[1] = '.';
		memcpy(w + 2, name + start, sufl);
	}
	const struct dm_node *e = dm_find(m, w, wl);
	if (w != stack)
		free(w);
	if (e && e->has_value) {
		*value = e->value;
		return 1;
	}
	return 0;
}

int domain_map_get(const struct domain_map *m, const char *name, size_t len, int64_t *value)
{
	/* suffixes from the shortest: the last label, then two, ... */
	size_t start = len; /* the suffix matched so far is name[start..len) */
	int top = 1;
	for (;;) {
		size_t i = start;
		if (!top)
			i--; /* skip the dot before the matched suffix */
		while (i > 0 && name[i - 1] != '.')
			i--;
		const struct dm_node *e = dm_find(m, name + i, len - i);
		if (!e)
			return dm_wild(m, name, len, top ? len : start, value);
		if (i == 0) {
			if (!e->has_value)
				return 0;
			*value = e->value;
			return 1;
		}
		start = i;
		top = 0;
	}
}

void domain_map_each(const struct domain_map *m, void (*fn)(int64_t value, void *ctx), void *ctx)
{
	for (size_t i = 0; i < m->cap; i++)
		if (m->slots[i].name && m->slots[i].has_value)
			fn(m->slots[i].value, ctx);
}

size_t domain_map_count(const struct domain_map *m)
{
	return m->values;
}
