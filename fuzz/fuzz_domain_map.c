/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `domain_map`: kumod/proto/domain_map.c (kumo.domain_map). Input: lines;
 * before the first empty line, entries to set (value = line number; a line starting with '-'
 * unsets the name after it); after it, names to look up. Invariants: every lookup answers
 * exactly what an independent, naive reading of the documented rule answers (walk the labels
 * from the right; at the first suffix no entry ends with, the "*" entry beside it answers;
 * when all match, the name's own entry answers), and the count of values matches. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/domain_map.h"
#include "fuzz_check.h"

#define MAXE 64

struct ref {
	char *name[MAXE];
	size_t len[MAXE];
	int64_t value[MAXE];
	int set[MAXE];
	size_t n;
};

static int ref_find(const struct ref *r, const char *s, size_t n)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->len[i] == n && memcmp(r->name[i], s, n) == 0)
			return (int)i;
	return -1;
}

/* Some entry (set or not: the tree keeps its places) ends with the label-aligned suffix s. */
static int ref_node(const struct ref *r, const char *s, size_t n)
{
	for (size_t i = 0; i < r->n; i++) {
		size_t l = r->len[i];
		if (l == n && memcmp(r->name[i], s, n) == 0)
			return 1;
		if (l > n && memcmp(r->name[i] + l - n, s, n) == 0 && r->name[i][l - n - 1] == '.')
			return 1;
	}
	return 0;
}

static int ref_value(const struct ref *r, const char *s, size_t n, int64_t *v)
{
	int i = ref_find(r, s, n);
	if (i < 0 || !r->set[i])
		return 0;
	*v = r->value[i];
	return 1;
}

static int ref_get(const struct ref *r, const char *name, size_t len, int64_t *v)
{
	size_t start = len; /* matched suffix name[start..len) */
	int top = 1;
	for (;;) {
		size_t i = top ? len : start - 1;
		while (i > 0 && name[i - 1] != '.')
			i--;
		if (!ref_node(r, name + i, len - i)) {
			char w[600];
			size_t sl = len - (top ? len : start);
			w[0] = '*';
			if (sl) {
				w[1] = '.';
				memcpy(w + 2, name + start, sl);
			}
			return ref_value(r, w, sl ? sl + 2 : 1, v);
		}
		if (i == 0)
			return ref_value(r, name, len, v);
		start = i;
		top = 0;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 4096)
		return 0;
	struct domain_map *m = domain_map_new();
	struct ref r = {.n = 0};
	const char *p = (const char *)data, *end = p + size;
	int phase = 0, line = 0;
	size_t values = 0;
	while (p <= end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		size_t n = (size_t)(le - p);
		line++;
		if (n > 250) {
			p = le + 1;
			continue;
		}
		if (phase == 0 && n == 0) {
			phase = 1;
		} else if (phase == 0) {
			int unset = p[0] == '-';
			const char *s = p + unset;
			size_t sl = n - (size_t)unset;
			int i = ref_find(&r, s, sl);
			int64_t old;
			if (unset) {
				int had = domain_map_unset(m, s, sl, &old);
				CHECK(had == (i >= 0 && r.set[i]));
				if (had) {
					CHECK(old == r.value[i]);
					r.set[i] = 0;
					values--;
				}
			} else if (i >= 0 || r.n < MAXE) {
				int had = domain_map_set(m, s, sl, line, &old);
				if (i < 0) {
					i = (int)r.n++;
					r.name[i] = malloc(sl + 1);
					memcpy(r.name[i], s, sl);
					r.len[i] = sl;
					r.set[i] = 0;
					/* intermediate places count as nodes too: ref_node sees
					 * them */
				}
				CHECK(had == r.set[i]);
				if (had)
					CHECK(old == r.value[i]);
				else
					values++;
				r.set[i] = 1;
				r.value[i] = line;
			}
		} else {
			int64_t a = -1, b = -1;
			int ha = domain_map_get(m, p, n, &a), hb = ref_get(&r, p, n, &b);
			CHECK(ha == hb);
			if (ha)
				CHECK(a == b);
		}
		if (!nl)
			break;
		p = nl + 1;
	}
	CHECK(domain_map_count(m) == values);
	for (size_t i = 0; i < r.n; i++)
		free(r.name[i]);
	domain_map_free(m);
	return 0;
}
