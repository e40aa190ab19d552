/* SPDX-License-Identifier: Apache-2.0 */
/* Per-client-address counters for connection limits: open connections and
 * connections started in the current rate window, keyed by the address
 * (family 4 or 6 and its 4 or 16 bytes). An entry lives while it has
 * connections or its rate window is running. Loop thread only; owner: the
 * listener module that embeds the table (kumod/smtp, kumod/ctl). */
#ifndef KUMOD_BASE_PEERTAB_H
#define KUMOD_BASE_PEERTAB_H

#include <stddef.h>
#include <stdint.h>

struct peer_entry {
	uint8_t key[17];       /* family, then the address */
	size_t conns;	       /* open connections */
	uint64_t window_ms;    /* start of the rate window */
	uint64_t window_conns; /* connections started in it */
	struct peer_entry *next;
};

struct peertab {
	struct peer_entry **slots;
	size_t nslots, n;
	uint64_t gets; /* sweeps run every 4096 lookups */
};

/* The entry of an address (created with zero counts). Expired idle entries
 * are swept now and then; now_ms is the caller's monotonic clock. */
struct peer_entry *peertab_get(struct peertab *t, int family, const uint8_t *addr, uint64_t now_ms,
			       uint64_t window_len_ms);
/* Counts one connection start against rate/period_ms (0: no rate); returns
 * 1 when it exceeds the rate. */
int peertab_rate_hit(struct peer_entry *e, uint64_t now_ms, uint64_t limit, uint64_t period_ms);
/* Frees every entry. */
void peertab_free(struct peertab *t);

#endif
