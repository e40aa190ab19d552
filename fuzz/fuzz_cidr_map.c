/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `cidr_map`: kumod/proto/cidr_map.c (kumo.cidr.make_map). Input: lines;
 * before the first empty line, keys to insert (value = line number); after it, addresses
 * to look up. Invariants:
 *  - a key is accepted exactly when cidr_parse() accepts it and every bit past its prefix is
 *    zero; a refused key with a valid CIDR says "did you mean <network>/<prefix>?", and that
 *    suggestion is itself accepted;
 *  - an address is accepted exactly when, stripped of one pair of brackets and/or a ":port"
 *    of digits (IPv4 only without brackets), inet_pton accepts it;
 *  - a lookup answers the value of the longest key (by an independent bit-by-bit comparison)
 *    among the keys not covered by a later insert, and nothing when none matches. */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/cidr_map.h"
#include "fuzz_check.h"

#define MAXK 32

static int bit(const uint8_t *a, unsigned i)
{
	return (a[i / 8] >> (7 - i % 8)) & 1;
}

static int ref_match(const struct cidr *k, int family, const uint8_t *addr)
{
	uint8_t v4[16] = {0};
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	if (family == 6 && memcmp(addr, mapped, 12) == 0) {
		memcpy(v4, addr + 12, 4);
		addr = v4;
		family = 4;
	}
	if (k->family != family)
		return 0;
	for (unsigned i = 0; i < k->prefix; i++)
		if (bit(k->addr, i) != bit(addr, i))
			return 0;
	return 1;
}

static int ref_addr_in(char *tmp, int *family, uint8_t *addr);

static int ref_addr(const char *s, int *family, uint8_t *addr)
{
	char *tmp = strdup(s);
	int rc = ref_addr_in(tmp, family, addr);
	free(tmp);
	return rc;
}

static int ref_addr_in(char *tmp, int *family, uint8_t *addr)
{
	char *a = tmp;
	if (tmp[0] == '[') {
		char *close = strchr(tmp, ']');
		if (!close)
			return -1;
		char *rest = close + 1;
		if (*rest) {
			if (*rest != ':' || !rest[1])
				return -1;
			for (char *q = rest + 1; *q; q++)
				if (*q < '0' || *q > '9')
					return -1;
		}
		*close = 0;
		a = tmp + 1;
	} else {
		char *c = strchr(tmp, ':');
		if (c && !strchr(c + 1, ':')) {
			if (!c[1])
				return -1;
			for (char *q = c + 1; *q; q++)
				if (*q < '0' || *q > '9')
					return -1;
			*c = 0;
		}
	}
	memset(addr, 0, 16);
	if (inet_pton(AF_INET, a, addr) == 1) {
		*family = 4;
		return 0;
	}
	if (inet_pton(AF_INET6, a, addr) == 1) {
		*family = 6;
		return 0;
	}
	return -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 4096 || memchr(data, 0, size))
		return 0;
	struct cidr_map m = {0};
	struct cidr keys[MAXK];
	int64_t vals[MAXK];
	int live[MAXK];
	size_t nk = 0;
	char *text = malloc(size + 1);
	memcpy(text, data, size);
	text[size] = 0;
	int phase = 0, line = 0;
	for (char *p = text, *nl; p; p = nl ? nl + 1 : NULL) {
		nl = strchr(p, '\n');
		if (nl)
			*nl = 0;
		line++;
		if (phase == 0 && !*p) {
			phase = 1;
			continue;
		}
		if (phase == 0) {
			struct cidr k, parsed;
			char err[200];
			int rc = cidr_map_key_parse(p, &k, err, sizeof(err));
			int valid = cidr_parse(p, &parsed) == 0;
			int zero = 1;
			if (valid)
				for (unsigned i = parsed.prefix;
				     i < (parsed.family == 4 ? 32u : 128u); i++)
					zero &= !bit(parsed.addr, i);
			CHECK((rc == 0) == (valid && zero));
			if (rc != 0 && valid) {
				const char *dm = strstr(err, "did you mean ");
				CHECK(dm != NULL);
				char sugg[80];
				snprintf(sugg, sizeof(sugg), "%s", dm + 13);
				char *q = strchr(sugg, '?');
				CHECK(q != NULL);
				*q = 0;
				struct cidr s;
				CHECK(cidr_map_key_parse(sugg, &s, err, sizeof(err)) == 0);
			}
			if (rc == 0 && nk < MAXK) {
				for (size_t i = 0; i < nk; i++)
					if (live[i] && keys[i].family == k.family &&
					    keys[i].prefix >= k.prefix &&
					    ref_match(&k, keys[i].family, keys[i].addr))
						live[i] = 0;
				keys[nk] = k;
				vals[nk] = line;
				live[nk] = 1;
				nk++;
				cidr_map_set(&m, &k, line, NULL, NULL);
			}
			continue;
		}
		int fa, fb;
		uint8_t a[16], b[16];
		int ra = cidr_map_addr_parse(p, &fa, a), rb = ref_addr(p, &fb, b);
		CHECK(ra == rb);
		if (ra != 0)
			continue;
		CHECK(fa == fb && memcmp(a, b, 16) == 0);
		int best = -1;
		for (size_t i = 0; i < nk; i++)
			if (live[i] && ref_match(&keys[i], fa, a) &&
			    (best < 0 || keys[i].prefix > keys[best].prefix))
				best = (int)i;
		int64_t v;
		int hit = cidr_map_get(&m, fa, a, &v);
		CHECK(hit == (best >= 0));
		if (hit)
			CHECK(keys[best].prefix == keys[best].prefix && v == vals[best]);
	}
	free(text);
	cidr_map_free(&m);
	return 0;
}
