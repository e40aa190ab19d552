/* SPDX-License-Identifier: Apache-2.0 */
/* Admin suspension entries (matching, expiry, cancel) and the duration /
 * RFC 3339 helpers the admin API uses. */
#include "proto/duration.h"
#include "queue/suspend.h"
#include "test.h"

TEST_IMPL(suspend_match_sched_criteria)
{
	struct suspend_list l = {0};
	suspend_add(&l, "Example.com", NULL, NULL, NULL, "r1", 1000);
	suspend_add(&l, NULL, "acme", "spring", NULL, "r2", 1000);
	suspend_add(&l, "", "", "", "ready->q@smtp", "ready", 1000); /* ready entry: never sched */
	static const struct {
		const char *domain, *tenant, *campaign, *want;
	} cases[] = {
	    {"example.com", "", "", "r1"},	   {"EXAMPLE.COM", "x", "y", "r1"},
	    {"other.com", "acme", "spring", "r2"}, {"other.com", "acme", "", NULL},
	    {"other.com", "", "spring", NULL},	   {"example.org", "", "", NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct suspend_entry *e = suspend_match_sched(
		    &l, cases[i].domain, cases[i].tenant, cases[i].campaign, 500);
		if (cases[i].want)
			ASSERT_STR_EQ(e ? e->reason : NULL, cases[i].want);
		else
			ASSERT(e == NULL);
	}
	ASSERT(suspend_match_name(&l, "ready->q@smtp", 500) != NULL);
	ASSERT(suspend_match_name(&l, "ready->other@smtp", 500) == NULL);
	ASSERT_EQ(l.count, 3);
	suspend_clear(&l);
	ASSERT(l.head == NULL);
}

static size_t expired_seen;
static void count_expired(const struct suspend_entry *e, void *ctx)
{
	expired_seen++;
}

TEST_IMPL(suspend_expiry_and_cancel)
{
	struct suspend_list l = {0};
	struct suspend_entry *a = suspend_add(&l, "a.test", NULL, NULL, NULL, "a", 1000);
	struct suspend_entry *b = suspend_add(&l, "b.test", NULL, NULL, NULL, "b", 3000);
	ASSERT_EQ(strlen(a->id), UUID_TEXT_LEN);
	ASSERT(strcmp(a->id, b->id) != 0);
	ASSERT_EQ(suspend_next_expiry(&l), 1000);
	/* an expired entry no longer matches, even before it is pruned */
	ASSERT(suspend_match_sched(&l, "a.test", "", "", 999) != NULL);
	ASSERT(suspend_match_sched(&l, "a.test", "", "", 1000) == NULL);
	ASSERT_EQ(suspend_prune(&l, 1000, count_expired, NULL), 1);
	ASSERT_EQ(expired_seen, 1);
	ASSERT_EQ(l.count, 1);
	ASSERT_EQ(suspend_next_expiry(&l), 3000);
	char id[UUID_TEXT_LEN + 1];
	memcpy(id, b->id, sizeof(id));
	for (char *p = id; *p; p++)
		if (*p >= 'a' && *p <= 'f')
			*p = (char)(*p - 'a' + 'A'); /* ids compare case-insensitively */
	ASSERT(suspend_take(&l, "no-such-id") == NULL);
	struct suspend_entry *t = suspend_take(&l, id);
	ASSERT(t == b);
	suspend_entry_free(t);
	ASSERT_EQ(l.count, 0);
	ASSERT_EQ(suspend_next_expiry(&l), 0);
}

TEST_IMPL(duration_format_round_trips)
{
	static const struct {
		uint64_t ms;
		const char *want;
	} cases[] = {
	    {0, "0s"},
	    {250, "250ms"},
	    {1000, "1s"},
	    {299000, "4m 59s"},
	    {3723004, "1h 2m 3s 4ms"},
	    {90000000, "1d 1h"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[64];
		duration_format_ms(cases[i].ms, out, sizeof(out));
		ASSERT_STR_EQ(out, cases[i].want);
		uint64_t back = 1;
		ASSERT_EQ(duration_parse_ms(out, &back), 0);
		ASSERT_EQ(back, cases[i].ms);
	}
}

TEST_IMPL(duration_parse_microseconds)
{
	static const struct {
		const char *in;
		int rc;
		uint64_t us, ms;
	} cases[] = {
	    {"50us", 0, 50, 0},
	    {"50 microseconds", 0, 50, 0},
	    {"1 microsecond", 0, 1, 0},
	    {"250usec", 0, 250, 0},
	    {"0.5ms", 0, 500, 1},
	    {"1ms 500us", 0, 1500, 2},
	    {"2s", 0, 2000000, 2000},
	    {"1499micros", 0, 1499, 1},
	    {"5 parsecs", -1, 0, 0},
	    {"us", -1, 0, 0},
	    {"", -1, 0, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t us = 7, ms = 7;
		ASSERT_EQ(duration_parse_us(cases[i].in, &us), cases[i].rc);
		ASSERT_EQ(duration_parse_ms(cases[i].in, &ms), cases[i].rc);
		if (cases[i].rc == 0) {
			ASSERT_EQ(us, cases[i].us);
			ASSERT_EQ(ms, cases[i].ms);
		}
	}
}

TEST_IMPL(rfc3339_parse_cases)
{
	static const struct {
		const char *in;
		int rc;
		uint64_t ms;
	} cases[] = {
	    {"1970-01-01T00:00:00Z", 0, 0},
	    {"2026-11-29T10:00:00Z", 0, 1795946400000ull},
	    {"2026-11-29T11:00:00+01:00", 0, 1795946400000ull},
	    {"2026-11-29t09:30:00.25-00:30", 0, 1795946400250ull},
	    {"2000-02-29T00:00:00Z", 0, 951782400000ull},
	    {"2026-11-29T10:00:00", -1, 0},
	    {"2026-13-01T00:00:00Z", -1, 0},
	    {"2026-11-29T10:00Z", -1, 0},
	    {"1969-12-31T23:59:59Z", -1, 0},
	    {"tomorrow", -1, 0},
	    {"2026-11-29T10:00:00Zjunk", -1, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t ms = 0;
		int rc = rfc3339_parse_ms(cases[i].in, &ms);
		if (rc != cases[i].rc)
			TEST_FAIL("%s: rc %d, want %d", cases[i].in, rc, cases[i].rc);
		if (rc == 0)
			ASSERT_EQ(ms, cases[i].ms);
	}
	char out[40];
	rfc3339_format_ms(1795946400250ull, out, sizeof(out));
	ASSERT_STR_EQ(out, "2026-11-29T10:00:00.250Z");
}
