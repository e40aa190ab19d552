/* SPDX-License-Identifier: Apache-2.0 */
/* CIDR maps (see cidr_map.h): a flat list, scanned for the longest match
 * (maps in policies hold a handful of networks). */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/xalloc.h"
#include "proto/cidr_map.h"

/* addr with every bit past prefix cleared */
static void mask_bits(uint8_t *addr, unsigned prefix, unsigned width)
{
	for (unsigned bit = prefix; bit < width; bit++)
		addr[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
}

int cidr_map_key_parse(const char *s, struct cidr *out, char *err, size_t errlen)
{
	if (cidr_parse(s, out) != 0) {
		snprintf(err, errlen, "'%.80s' is not an IP address or CIDR block", s);
		return -1;
	}
	unsigned width = out->family == 4 ? 32 : 128;
	struct cidr masked = *out;
	mask_bits(masked.addr, masked.prefix, width);
	if (memcmp(masked.addr, out->addr, sizeof(out->addr)) != 0) {
		char text[INET6_ADDRSTRLEN];
		inet_ntop(out->family == 4 ? AF_INET : AF_INET6, masked.addr, text, sizeof(text));
		snprintf(err, errlen, "'%.80s' has host bits set: did you mean %s/%u?", s, text,
			 out->prefix);
		return -1;
	}
	return 0;
}

int cidr_map_addr_parse(const char *s, int *family, uint8_t addr[16])
{
	char tmp[64];
	size_t n = strlen(s);
	const char *a = s;
	size_t alen = n;
	if (n && s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close)
			return -1;
		a = s + 1;
		alen = (size_t)(close - a);
		const char *rest = close + 1;
		if (*rest && (*rest != ':' || !rest[1] ||
			      strspn(rest + 1, "0123456789") != strlen(rest + 1)))
			return -1;
	} else {
		const char *colon = strchr(s, ':');
		if (colon && !strchr(colon + 1, ':')) { /* exactly one colon: IPv4 with a port */
			if (!colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1))
				return -1;
			alen = (size_t)(colon - s);
		}
	}
	if (alen == 0 || alen >= sizeof(tmp))
		return -1;
	memcpy(tmp, a, alen);
	tmp[alen] = 0;
	memset(addr, 0, 16);
	if (inet_pton(AF_INET, tmp, addr) == 1) {
		*family = 4;
		return 0;
	}
	if (inet_pton(AF_INET6, tmp, addr) == 1) {
		*family = 6;
		return 0;
	}
	return -1;
}

static int covers(const struct cidr *outer, const struct cidr *inner)
{
	if (outer->family != inner->family || inner->prefix < outer->prefix)
		return 0;
	struct cidr_list one = {.items = (struct cidr *)outer, .n = 1};
	return cidr_list_match(&one, inner->family, inner->addr);
}

void cidr_map_set(struct cidr_map *m, const struct cidr *key, int64_t value,
		  void (*drop)(int64_t value, void *ctx), void *ctx)
{
	size_t w = 0;
	for (size_t i = 0; i < m->n; i++) {
		if (covers(key, &m->e[i].key)) {
			if (drop)
				drop(m->e[i].value, ctx);
		} else {
			m->e[w++] = m->e[i];
		}
	}
	m->n = w;
	if (m->n == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 8;
		m->e = xrealloc(m->e, m->cap * sizeof(*m->e));
	}
	m->e[m->n].key = *key;
	m->e[m->n].value = value;
	m->n++;
}

int cidr_map_get(const struct cidr_map *m, int family, const uint8_t *addr, int64_t *value)
{
	int best = -1;
	for (size_t i = 0; i < m->n; i++) {
		struct cidr_list one = {.items = &m->e[i].key, .n = 1};
		if ((best < 0 || m->e[i].key.prefix > m->e[best].key.prefix) &&
		    cidr_list_match(&one, family, addr))
			best = (int)i;
	}
	if (best < 0)
		return 0;
	*value = m->e[best].value;
	return 1;
}

void cidr_map_free(struct cidr_map *m)
{
	free(m->e);
	m->e = NULL;
	m->n = m->cap = 0;
}
