/* SPDX-License-Identifier: Apache-2.0 */
/* CIDR parsing and matching. */
#include "proto/cidr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/xalloc.h"

static const uint8_t cidr_v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* cidr_list_match() reads an IPv4-mapped peer as IPv4, so an IPv4-mapped IPv6 entry
 * ("::ffff:127.0.0.1", "::ffff:10.0.0.0/104") must be stored as the IPv4 entry it covers, or it
 * could never match anything. A shorter prefix also covers non-mapped addresses: kept as is. */
static void cidr_unmap(struct cidr *c)
{
	if (c->family != 6 || c->prefix < 96 || memcmp(c->addr, cidr_v4_mapped, 12) != 0)
		return;
	c->family = 4;
	c->prefix -= 96;
	memmove(c->addr, c->addr + 12, 4);
	memset(c->addr + 4, 0, 12);
}

int cidr_parse(const char *s, struct cidr *out)
{
	char tmp[64];
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	if (alen == 0 || alen >= sizeof(tmp))
		return -EINVAL;
	memcpy(tmp, s, alen);
	tmp[alen] = 0;
	memset(out, 0, sizeof(*out));
	unsigned max;
	if (inet_pton(AF_INET, tmp, out->addr) == 1) {
		out->family = 4;
		max = 32;
	} else if (inet_pton(AF_INET6, tmp, out->addr) == 1) {
		out->family = 6;
		max = 128;
	} else {
		return -EINVAL;
	}
	out->prefix = max;
	if (slash) {
		const char *p = slash + 1;
		if (!*p || strlen(p) > 3)
			return -EINVAL;
		unsigned v = 0;
		for (; *p; p++) {
			if (*p < '0' || *p > '9')
				return -EINVAL;
			v = v * 10 + (unsigned)(*p - '0');
		}
		if (v > max)
			return -EINVAL;
		out->prefix = v;
	}
	cidr_unmap(out);
	return 0;
}

int cidr_list_add(struct cidr_list *l, const char *s)
{
	struct cidr c;
	if (cidr_parse(s, &c) != 0)
		return -EINVAL;
	l->items = xrealloc(l->items, (l->n + 1) * sizeof(*l->items));
	l->items[l->n++] = c;
	return 0;
}

void cidr_list_free(struct cidr_list *l)
{
	free(l->items);
	l->items = NULL;
	l->n = 0;
}

static int prefix_match(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	size_t bytes = bits / 8;
	if (memcmp(a, b, bytes) != 0)
		return 0;
	unsigned rest = bits % 8;
	if (!rest)
		return 1;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (a[bytes] & mask) == (b[bytes] & mask);
}

int cidr_list_match(const struct cidr_list *l, int family, const uint8_t *addr)
{
	if (family == 6 && memcmp(addr, cidr_v4_mapped, 12) == 0) {
		family = 4;
		addr += 12;
	}
	for (size_t i = 0; i < l->n; i++) {
		const struct cidr *c = &l->items[i];
		if (c->family == family && prefix_match(c->addr, addr, c->prefix))
			return 1;
	}
	return 0;
}

int cidr_list_match_str(const struct cidr_list *l, const char *addr)
{
	uint8_t a[16];
	if (inet_pton(AF_INET, addr, a) == 1)
		return cidr_list_match(l, 4, a);
	if (inet_pton(AF_INET6, addr, a) == 1)
		return cidr_list_match(l, 6, a);
	return 0;
}
