/* SPDX-License-Identifier: Apache-2.0 */
/* Egress shaping shared by the ready queues: pools (which egress source a
 * message leaves from: smooth weighted round robin over the pool's entries,
 * as nginx balances upstreams) and throttles (max_message_rate and
 * max_connection_rate: GCRA, a token bucket without a refill timer).
 * The pool cache asks the policy (get_egress_pool) at most once per pool
 * `ttl` (default 60 s) and keeps each pool's round-robin state across
 * refreshes while its entries stay the same.
 * Callers: kumod/dispatch (routing and dispatchers); unit tests use the pure
 * egress_wrr_next and egress_gcra_take. Loop thread only. */
#ifndef KUMOD_QUEUE_EGRESS_H
#define KUMOD_QUEUE_EGRESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proto/rate_spec.h"

/* One pool entry for smooth weighted round robin. */
struct egress_wrr_entry {
	int64_t weight;	 /* >= 0; 0 = never chosen */
	int64_t current; /* selector state, starts at 0 */
};

/* Smooth WRR: every entry's current grows by its weight, the largest wins
 * (first on ties) and loses the total. Over any sum(weights) consecutive
 * picks each entry is chosen exactly `weight` times, interleaved.
 * Returns the index, or -1 when n == 0 or every weight is 0. */
int egress_wrr_next(struct egress_wrr_entry *e, size_t n);

/* GCRA state of one throttle; zero-initialised = never used. */
struct egress_gcra {
	uint64_t tat_us; /* theoretical arrival time, microseconds */
};

/* Takes one event at now_ms under rate r with a burst of r->limit (as
 * KumoMTA's default max_burst): returns 0 when it is allowed (and counts
 * it), else the milliseconds to wait (>= 1) before asking again (nothing
 * counted). */
uint64_t egress_gcra_take(struct egress_gcra *g, const struct rate_spec *r, uint64_t now_ms);

/* The egress source for the next message of pool `pool` into out; 0, or
 * -ENOENT with a reason in err when the pool cannot be read or every
 * weight is 0. */
int egress_pool_select(const char *pool, uint64_t now_ms, char *out, size_t outlen, char *err,
		       size_t errlen);
/* What make_egress_source{} says about one source (get_egress_source). */
struct egress_source_cfg {
	struct sockaddr_storage addr; /* source_address, port 0 */
	int has_addr;
	char address[64];      /* source_address as configured ("" = none) */
	char ehlo_domain[256]; /* "" = none */
	int remote_port;       /* 0 = none */
};

/* Asks the policy for source `name` ("unspecified" has no policy object:
 * *out is all empty, 0). 0, or -ENOENT / -EINVAL with a reason in err (no
 * such source, a source_address that is not an IP address); *out then
 * holds the defaults. */
int egress_source_load(const char *name, struct egress_source_cfg *out, char *err, size_t errlen);

/* Forgets every cached pool (shutdown). */
void egress_pools_free(void);

#endif
