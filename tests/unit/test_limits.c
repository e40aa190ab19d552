/* SPDX-License-Identifier: Apache-2.0 */
/* Abuse limits: the per-client table, the memory budget's limits and
 * accounting, the Received count of the mail-loop check, buffers that fail
 * instead of aborting. */
#include <stdint.h>
#include <string.h>

#include "base/buf.h"
#include "base/memlimit.h"
#include "base/peertab.h"
#include "proto/rfc5322.h"
#include "test.h"

TEST_IMPL(peertab_counts_per_address)
{
	struct peertab t = {0};
	uint8_t a[16] = {127, 0, 0, 1}, b[16] = {127, 0, 0, 2};
	struct peer_entry *ea = peertab_get(&t, 4, a, 1000, 0);
	ea->conns++;
	ASSERT(peertab_get(&t, 4, a, 1000, 0) == ea);
	struct peer_entry *eb = peertab_get(&t, 4, b, 1000, 0);
	ASSERT(eb != ea);
	ASSERT_EQ(eb->conns, 0);
	/* the same 4 bytes as IPv6 are another client */
	ASSERT(peertab_get(&t, 6, a, 1000, 0) != ea);
	for (unsigned i = 0; i < 2000; i++) { /* grows and rehashes */
		uint8_t x[16] = {10, (uint8_t)(i >> 8), (uint8_t)i, 1};
		peertab_get(&t, 4, x, 1000, 0)->conns = i + 1;
	}
	ASSERT(peertab_get(&t, 4, a, 1000, 0) == ea);
	ASSERT_EQ(ea->conns, 1);
	peertab_free(&t);
}

TEST_IMPL(peertab_rate_window)
{
	struct peertab t = {0};
	uint8_t a[16] = {192, 0, 2, 1};
	struct peer_entry *e = peertab_get(&t, 4, a, 0, 60000);
	ASSERT_EQ(peertab_rate_hit(e, 0, 3, 60000), 0);
	ASSERT_EQ(peertab_rate_hit(e, 10, 3, 60000), 0);
	ASSERT_EQ(peertab_rate_hit(e, 20, 3, 60000), 0);
	ASSERT_EQ(peertab_rate_hit(e, 30, 3, 60000), 1);    /* the fourth in a minute */
	ASSERT_EQ(peertab_rate_hit(e, 60001, 3, 60000), 0); /* a new window */
	ASSERT_EQ(peertab_rate_hit(e, 60002, 0, 0), 0);	    /* no rate */
	peertab_free(&t);
}

TEST_IMPL(memlimit_defaults_and_states)
{
	memlimit_set_soft(0);
	memlimit_set_hard(0);
	memlimit_set_low_thresh(0);
	ASSERT_EQ(memlimit_check(1u << 30), MEM_OK); /* no limit: never over */
	memlimit_set_hard(400u << 20);
	ASSERT_EQ(memlimit_soft(), 300u << 20); /* 3/4 of the hard limit */
	ASSERT_EQ(memlimit_low_thresh(), 240u << 20);
	memlimit_set_soft((uint64_t)1 << 40);
	ASSERT_EQ(memlimit_check(0), MEM_OK);
	uint64_t over = memlimit_over_count();
	ASSERT_EQ(memlimit_check((size_t)1 << 41), MEM_OVER);
	ASSERT_EQ(memlimit_over_count(), over + 1);
	ASSERT_EQ(memlimit_check(0), MEM_OK);
	/* buffered bytes count before the next RSS sample */
	uint64_t before = memlimit_usage();
	memlimit_account(64u << 20);
	ASSERT(memlimit_usage() >= before + (64u << 20) - (8u << 20));
	ASSERT_EQ(memlimit_accounted(), 64u << 20);
	memlimit_account(-(int64_t)(64u << 20));
	ASSERT_EQ(memlimit_accounted(), 0);
	memlimit_set_soft(0);
	memlimit_set_hard(0);
	memlimit_check(0);
}

TEST_IMPL(rfc5322_count_received)
{
	static const char msg[] = "Received: from a\r\n\tby b; x\r\nreceived: from c\r\n"
				  "Subject: Received: no\r\n\r\nReceived: in the body\r\n";
	ASSERT_EQ(rfc5322_count_named(msg, sizeof(msg) - 1, "Received"), 2);
	ASSERT_EQ(rfc5322_count_named(msg, sizeof(msg) - 1, "X-Nope"), 0);
	ASSERT_EQ(rfc5322_count_named("", 0, "Received"), 0);
}

TEST_IMPL(buf_try_reserve_fails_without_abort)
{
	struct buf b;
	buf_init(&b);
	buf_append(&b, "abc", 3);
#ifndef __SANITIZE_ADDRESS__ /* ASan reports an impossible size instead of NULL */
	ASSERT_EQ(buf_try_reserve(&b, SIZE_MAX / 4), -1);
#endif
	ASSERT_EQ(b.len, 3);
	ASSERT(memcmp(b.data, "abc", 3) == 0);
	ASSERT_EQ(buf_try_reserve(&b, 1u << 20), 0);
	ASSERT(b.cap > (1u << 20));
	buf_shrink(&b, 16);
	ASSERT_EQ(b.cap, 3 + 16 + 1);
	ASSERT(memcmp(b.data, "abc", 3) == 0);
	buf_free(&b);
}
