/* SPDX-License-Identifier: Apache-2.0 */
/* CIDR lists ("127.0.0.0/8", "::1", "10.0.0.1") and address matching, used
 * for relay_hosts, relay_from and trusted_hosts. Pure: no I/O. */
#ifndef KUMOD_PROTO_CIDR_H
#define KUMOD_PROTO_CIDR_H

#include <stddef.h>
#include <stdint.h>

struct cidr {
	int family; /* 4 or 6 */
	uint8_t addr[16];
	unsigned prefix;
};

struct cidr_list {
	struct cidr *items;
	size_t n;
};

/* Parses one CIDR (address with optional /prefix of 1-3 digits). 0 or -EINVAL. An IPv4-mapped
 * IPv6 entry with a prefix of at least 96 ("::ffff:10.0.0.0/104") is stored as the IPv4 entry
 * it covers ("10.0.0.0/8"). */
int cidr_parse(const char *s, struct cidr *out);
/* Appends; 0 or -EINVAL (list unchanged). */
int cidr_list_add(struct cidr_list *l, const char *s);
void cidr_list_free(struct cidr_list *l);
/* family 4 (addr 4 bytes) or 6 (16 bytes); IPv4-mapped IPv6 matches v4 entries. */
int cidr_list_match(const struct cidr_list *l, int family, const uint8_t *addr);
/* Matches a textual address ("127.0.0.1", "::1"). */
int cidr_list_match_str(const struct cidr_list *l, const char *addr);

#endif
