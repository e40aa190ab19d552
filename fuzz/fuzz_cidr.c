/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `cidr`: cidr_parse() and the list matcher behind relay_hosts, relay_from and
 * trusted_hosts. Invariants: accepted exactly when an independent reference (inet_pton plus
 * 1-3 decimal digits <= the family's width) accepts, with the same address and prefix; the
 * canonical text (inet_ntop "/" prefix) parses back to the same entry; an entry matches every
 * address that shares its first `prefix` bits and no address that differs inside them; an
 * IPv4 entry matches the IPv4-mapped IPv6 form of its addresses, and an IPv4-mapped IPv6 entry
 * with a prefix >= 96 is stored as that IPv4 entry; a failed cidr_list_add() leaves the list
 * unchanged.
 * Input: a NUL-free CIDR text; an optional 0xFF byte separates 16 bytes used as a probe. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/cidr.h"
#include "fuzz_check.h"

/* Written independently of cidr.c: 0 and *out, or -EINVAL. */
static int ref_parse(const char *s, struct cidr *out)
{
	char addr[64];
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	unsigned max, v = 0;

	memset(out, 0, sizeof(*out));
	if (alen == 0 || alen >= sizeof(addr))
		return -EINVAL;
	memcpy(addr, s, alen);
	addr[alen] = 0;
	if (inet_pton(AF_INET, addr, out->addr) == 1)
		out->family = 4;
	else if (inet_pton(AF_INET6, addr, out->addr) == 1)
		out->family = 6;
	else
		return -EINVAL;
	max = out->family == 4 ? 32 : 128;
	out->prefix = max;
	if (!slash)
		return 0;
	size_t digits = strlen(slash + 1);
	if (digits < 1 || digits > 3 || strspn(slash + 1, "0123456789") != digits)
		return -EINVAL;
	for (const char *p = slash + 1; *p; p++)
		v = v * 10 + (unsigned)(*p - '0');
	if (v > max)
		return -EINVAL;
	out->prefix = v;
	return 0;
}

static const uint8_t fz_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* The documented normalisation: ::ffff:a.b.c.d/p with p >= 96 is a.b.c.d/(p - 96). */
static int ref_parse_entry(const char *s, struct cidr *out)
{
	int rc = ref_parse(s, out);
	if (rc == 0 && out->family == 6 && out->prefix >= 96 && !memcmp(out->addr, fz_mapped, 12)) {
		uint8_t v4[4];
		memcpy(v4, out->addr + 12, 4);
		memset(out->addr, 0, sizeof(out->addr));
		memcpy(out->addr, v4, 4);
		out->family = 4;
		out->prefix -= 96;
	}
	return rc;
}

static int fz_same(const struct cidr *a, const struct cidr *b)
{
	return a->family == b->family && a->prefix == b->prefix &&
	       !memcmp(a->addr, b->addr, a->family == 4 ? 4 : 16);
}

/* Bit i (from the most significant) of addr. */
static int fz_bit(const uint8_t *addr, unsigned i)
{
	return (addr[i / 8] >> (7 - i % 8)) & 1;
}

static void fz_match(const struct cidr *c, const uint8_t *probe)
{
	struct cidr_list l = {NULL, 0};
	unsigned width = c->family == 4 ? 32 : 128;
	uint8_t a[16], mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	char text[INET6_ADDRSTRLEN + 8];

	CHECK(inet_ntop(c->family == 4 ? AF_INET : AF_INET6, c->addr, text, sizeof(text)));
	snprintf(text + strlen(text), 8, "/%u", c->prefix);
	CHECK(cidr_list_add(&l, text) == 0 && l.n == 1 && fz_same(&l.items[0], c));
	CHECK(cidr_list_add(&l, "") == -EINVAL && l.n == 1);
	/* An entry matches its own address; an IPv6 entry left holding an IPv4-mapped address
	 * (prefix < 96) cannot, since such a peer is read as IPv4. */
	int mapped_v6 = c->family == 6 && !memcmp(c->addr, fz_mapped, 12);
	CHECK(cidr_list_match(&l, c->family, c->addr) == !mapped_v6);

	/* The probe agrees with the entry on its first k bits; it matches iff k >= prefix. */
	unsigned k = probe[0] % (width + 1);
	memcpy(a, probe, sizeof(a));
	for (unsigned i = 0; i < width; i++) {
		uint8_t m = (uint8_t)(0x80 >> (i % 8));
		if (i < k)
			a[i / 8] = (uint8_t)((a[i / 8] & ~m) | (c->addr[i / 8] & m));
		else if (i == k)
			a[i / 8] = (uint8_t)((a[i / 8] & ~m) | (~c->addr[i / 8] & m));
	}
	if (k < width)
		CHECK(fz_bit(a, k) != fz_bit(c->addr, k));
	int want = k >= c->prefix;
	if (c->family == 6 && !memcmp(a, fz_mapped, 12))
		want = 0; /* read as IPv4-mapped: an IPv6 entry never matches it */
	CHECK(cidr_list_match(&l, c->family, a) == want);
	if (c->family == 4) {
		memcpy(mapped + 12, a, 4);
		CHECK(cidr_list_match(&l, 6, mapped) == want);
		CHECK(inet_ntop(AF_INET, a, text, sizeof(text)));
		CHECK(cidr_list_match_str(&l, text) == want);
	}
	cidr_list_free(&l);
	CHECK(l.items == NULL && l.n == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *sep = memchr(data, 0xff, size);
	size_t tlen = sep ? (size_t)(sep - data) : size;
	uint8_t probe[16] = {0};
	struct cidr got, want;
	char *text;

	if (memchr(data, 0, tlen))
		return 0;
	if (sep)
		memcpy(probe, sep + 1, size - tlen - 1 < 16 ? size - tlen - 1 : 16);
	text = strndup((const char *)data, tlen);
	int rc = cidr_parse(text, &got);
	int ref = ref_parse_entry(text, &want);
	if (ref != rc) {
		fprintf(stderr, "cidr_parse(\"%s\") = %d, reference %d\n", text, rc, ref);
		abort();
	}
	CHECK(rc == 0 || rc == -EINVAL);
	if (rc == 0) {
		CHECK(fz_same(&got, &want));
		fz_match(&got, probe);
	}
	free(text);
	return 0;
}
