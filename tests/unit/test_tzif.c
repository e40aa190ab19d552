/* SPDX-License-Identifier: Apache-2.0 */
/* IANA time zones (kumod/proto/tzif.c): TZif files from /usr/share/zoneinfo
 * compared with glibc's localtime_r under TZ at many instants, across DST
 * changes, past the table (the footer's rule), and malformed input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proto/tzif.h"
#include "test.h"
#include "tz_zone.h"

struct tzif_zone *test_tz_zone(const char *name)
{
	char path[256];
	snprintf(path, sizeof(path), "/usr/share/zoneinfo/%s", name);
	FILE *f = fopen(path, "rb");
	if (!f)
		TEST_FAIL("cannot open %s (tzdata installed?)", path);
	static unsigned char buf[1 << 20];
	size_t n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	struct tzif_zone *z;
	char err[200];
	if (tzif_parse(buf, n, &z, err, sizeof(err)) != 0)
		TEST_FAIL("%s: %s", name, err);
	return z;
}

static void check_at(const struct tzif_zone *z, const char *name, int64_t t)
{
	struct tm tm;
	time_t tt = (time_t)t;
	if (!localtime_r(&tt, &tm))
		TEST_FAIL("localtime_r failed at %" PRId64, t);
	struct tzif_local l;
	tzif_lookup(z, t, &l);
	if (l.utoff != tm.tm_gmtoff || l.isdst != (tm.tm_isdst > 0) ||
	    strcmp(l.abbr, tm.tm_zone) != 0)
		TEST_FAIL("%s at %" PRId64 ": ours %d %d %s, glibc %ld %d %s", name, t, l.utoff,
			  l.isdst, l.abbr, tm.tm_gmtoff, tm.tm_isdst, tm.tm_zone);
	/* the local time maps back to t, or to an earlier instant in a fold */
	int64_t u = tzif_local_to_utc(z, t + l.utoff);
	struct tzif_local lu;
	tzif_lookup(z, u, &lu);
	if (u > t || u + lu.utoff != t + l.utoff)
		TEST_FAIL("%s: local time of %" PRId64 " maps back to %" PRId64, name, t, u);
}

static int64_t glibc_off(int64_t t)
{
	struct tm tm;
	time_t tt = (time_t)t;
	localtime_r(&tt, &tm);
	return tm.tm_gmtoff * 2 + (tm.tm_isdst > 0);
}

/* Samples from 1850 to 2150 (every 7 h 3 min), denser around now and in
 * the footer's years (every 31 min), and both sides of every change glibc
 * reports between samples (found by bisection). */
static void compare_zone(const char *name, size_t min_changes)
{
	char tz[80];
	snprintf(tz, sizeof(tz), ":%s", name);
	setenv("TZ", tz, 1);
	tzset();
	struct tzif_zone *z = test_tz_zone(name);
	const struct {
		int64_t from, to, step;
	} spans[] = {
	    {-3786825600LL, 5680281600LL, 7 * 3600 + 180}, /* 1850 .. 2150 */
	    {1577836800LL, 2524608000LL, 31 * 60},	   /* 2020 .. 2050 */
	};
	size_t n = 0, changes = 0;
	for (size_t s = 0; s < sizeof(spans) / sizeof(spans[0]); s++) {
		int64_t prev = spans[s].from;
		for (int64_t t = spans[s].from; t < spans[s].to; t += spans[s].step, n++) {
			check_at(z, name, t);
			if (t != prev && glibc_off(t) != glibc_off(prev)) {
				int64_t lo = prev, hi = t; /* off(lo) != off(hi) */
				while (hi - lo > 1) {
					int64_t mid = lo + (hi - lo) / 2;
					if (glibc_off(mid) == glibc_off(lo))
						lo = mid;
					else
						hi = mid;
				}
				check_at(z, name, lo);
				check_at(z, name, hi);
				changes++;
			}
			prev = t;
		}
	}
	tzif_free(z);
	ASSERT_GT(n, 100000);
	ASSERT_GT(changes, min_changes);
}

TEST_IMPL(tzif_new_york_matches_glibc)
{
	compare_zone("America/New_York", 500);
}

TEST_IMPL(tzif_london_matches_glibc)
{
	compare_zone("Europe/London", 500);
}

TEST_IMPL(tzif_lord_howe_matches_glibc)
{
	compare_zone("Australia/Lord_Howe", 200); /* DST of 30 minutes, southern hemisphere */
}

TEST_IMPL(tzif_kolkata_matches_glibc)
{
	compare_zone("Asia/Kolkata", 4); /* +05:30, no DST since 1945 */
}

TEST_IMPL(tzif_utc)
{
	struct tzif_zone *z = test_tz_zone("UTC");
	ASSERT(tzif_is_utc(z));
	tzif_free(z);
	z = test_tz_zone("Asia/Kolkata");
	ASSERT(!tzif_is_utc(z));
	tzif_free(z);
}

TEST_IMPL(tzif_rules)
{
	static const struct {
		const char *s;
		int ok;
	} cases[] = {
	    {"EST5EDT,M3.2.0,M11.1.0", 1},
	    {"<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", 1},
	    {"IST-5:30", 1},
	    {"<-03>3", 1},
	    {"EST5EDT", 1},
	    {"XXX3EDT4,0/0,J365/25", 1},
	    {"CET-1CEST,M3.5.0,M10.5.0/3", 1},
	    {"", 0},
	    {"E5", 0},
	    {"EST", 0},
	    {"EST5EDT,M13.1.0,M11.1.0", 0},
	    {"EST5EDT,M3.2.0", 0},
	    {"EST25", 0},
	    {"<+05", 0},
	    {"EST5EDT,M3.2.0/168,M11.1.0", 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct tzif_rule r;
		int rc = tzif_rule_parse(cases[i].s, strlen(cases[i].s), &r);
		if ((rc == 0) != cases[i].ok)
			TEST_FAIL("'%s': rc %d", cases[i].s, rc);
	}
	struct tzif_rule r;
	struct tzif_local l;
	/* Lord Howe: +10:30, DST +11 from the first Sunday of October */
	ASSERT_EQ(tzif_rule_parse("<+1030>-10:30<+11>-11,M10.1.0,M4.1.0",
				  strlen("<+1030>-10:30<+11>-11,M10.1.0,M4.1.0"), &r),
		  0);
	tzif_rule_lookup(&r, 4102444800LL, &l); /* 2100-01-01: summer */
	ASSERT_EQ(l.utoff, 11 * 3600);
	ASSERT_STR_EQ(l.abbr, "+11");
	ASSERT_EQ(l.isdst, 1);
	tzif_rule_lookup(&r, 4118083200LL, &l); /* 2100-07-01: winter */
	ASSERT_EQ(l.utoff, 10 * 3600 + 1800);
	ASSERT_EQ(l.isdst, 0);
	/* all-year DST (start Jan 1 00:00, end Dec 31 25:00) */
	ASSERT_EQ(tzif_rule_parse("XXX3EDT4,0/0,J365/25", strlen("XXX3EDT4,0/0,J365/25"), &r), 0);
	tzif_rule_lookup(&r, 1767225600LL, &l); /* 2026-01-01 */
	ASSERT_EQ(l.utoff, -4 * 3600);
	tzif_rule_lookup(&r, 1798761599LL, &l);
	ASSERT_EQ(l.utoff, -4 * 3600);
}

TEST_IMPL(tzif_malformed)
{
	static const unsigned char hdr[44] = "TZif2";
	struct tzif_zone *z = (struct tzif_zone *)1;
	char err[200];
	ASSERT_EQ(tzif_parse("", 0, &z, err, sizeof(err)), -1);
	ASSERT(z == NULL);
	ASSERT_STR_EQ(err, "not a TZif file");
	ASSERT_EQ(tzif_parse(hdr, sizeof(hdr), &z, err, sizeof(err)), -1);
	/* v1, one type, one abbreviation byte: valid; a bad type index is not */
	unsigned char v1[44 + 4 + 1 + 6 + 4] = "TZif";
	v1[35] = 1; /* timecnt */
	v1[39] = 1; /* typecnt */
	v1[43] = 4; /* charcnt */
	memcpy(v1 + 44 + 4 + 1 + 6, "ABC", 4);
	ASSERT_EQ(tzif_parse(v1, sizeof(v1), &z, err, sizeof(err)), 0);
	struct tzif_local l;
	tzif_lookup(z, 0, &l);
	ASSERT_STR_EQ(l.abbr, "ABC");
	ASSERT_EQ(l.utoff, 0);
	tzif_free(z);
	v1[48] = 1; /* the transition's type */
	ASSERT_EQ(tzif_parse(v1, sizeof(v1), &z, err, sizeof(err)), -1);
	ASSERT_STR_EQ(err, "TZif transition 0 is out of order or of no type");
	v1[48] = 0;
	ASSERT_EQ(tzif_parse(v1, sizeof(v1) - 1, &z, err, sizeof(err)), -1);
}
