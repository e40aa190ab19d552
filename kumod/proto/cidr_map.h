/* SPDX-License-Identifier: Apache-2.0 */
/* CIDR maps with the semantics of KumoMTA's kumo.cidr.make_map
 * (kumo-policy-surface.md §1.4): keys are an IP or a CIDR block whose host
 * bits are zero; a lookup takes an address ("10.0.0.1", "10.0.0.1:25",
 * "[::1]", "[::1]:25") and answers the value of the longest matching prefix;
 * inserting a block replaces the entries it covers (same or longer prefix).
 * Values are opaque 64-bit numbers (the Lua layer stores references).
 * Pure: no I/O. */
#ifndef KUMOD_PROTO_CIDR_MAP_H
#define KUMOD_PROTO_CIDR_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "proto/cidr.h"

struct cidr_map_entry {
	struct cidr key;
	int64_t value;
};

struct cidr_map {
	struct cidr_map_entry *e;
	size_t n, cap;
};

/* Parses a key. 0, or -1 with a message in err: not an IP or CIDR, or host
 * bits set ("10.0.0.1/24 has host bits set: did you mean 10.0.0.0/24?"). */
int cidr_map_key_parse(const char *s, struct cidr *out, char *err, size_t errlen);
/* Parses a lookup address (optionally bracketed, optionally with a port).
 * 0 with family 4 (4 bytes) or 6 (16 bytes) in addr, or -1. */
int cidr_map_addr_parse(const char *s, int *family, uint8_t addr[16]);
/* Inserts; every entry the key covers (itself included) is removed first,
 * its value passed to drop. */
void cidr_map_set(struct cidr_map *m, const struct cidr *key, int64_t value,
		  void (*drop)(int64_t value, void *ctx), void *ctx);
/* 1 and *value for the longest prefix matching the address, else 0. */
int cidr_map_get(const struct cidr_map *m, int family, const uint8_t *addr, int64_t *value);
void cidr_map_free(struct cidr_map *m);

#endif
