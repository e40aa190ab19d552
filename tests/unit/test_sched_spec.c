/* SPDX-License-Identifier: Apache-2.0 */
/* Scheduling specs (kumod/proto/sched_spec.c): parsing KumoMTA's scheduling
 * JSON, the canonical form, and the next permitted time. */
#include "proto/duration.h"
#include "proto/sched_spec.h"
#include "proto/tzif.h"
#include "test.h"
#include "tz_zone.h"

static uint64_t at(const char *s)
{
	uint64_t ms;
	if (rfc3339_parse_ms(s, &ms) != 0)
		TEST_FAIL("bad time %s", s);
	return ms;
}

static void parse_fails(const char *text, const char *want)
{
	struct sched_spec s;
	char err[256];
	ASSERT_EQ(sched_spec_parse(text, strlen(text), &s, err, sizeof(err)), -1);
	ASSERT_STR_EQ(err, want);
}

TEST_IMPL(sched_spec_parse_and_canonical_form)
{
	const char *text = "{\"first_attempt\":\"2026-12-08T10:00:00+01:00\",\"expires\":"
			   "\"2026-12-10T00:00:00Z\",\"dow\":\"wed,Monday,Fri\",\"tz\":\"UTC\","
			   "\"start\":\"09:00\",\"end\":\"17:30:15\"}";
	struct sched_spec s, back;
	char err[256];
	ASSERT_EQ(sched_spec_parse(text, strlen(text), &s, err, sizeof(err)), 0);
	ASSERT(s.has_first && s.has_expires && s.has_window);
	ASSERT_EQ(s.first_ms, at("2026-12-08T09:00:00Z"));
	ASSERT_EQ(s.dow, 1u | 4u | 16u);
	ASSERT_EQ(s.start_s, 9 * 3600);
	ASSERT_EQ(s.end_s, 17 * 3600 + 30 * 60 + 15);
	json_t *j = sched_spec_to_json(&s);
	char *dump = json_dumps(j, JSON_COMPACT);
	ASSERT_STR_EQ(dump, "{\"first_attempt\":\"2026-12-08T09:00:00.000Z\",\"expires\":"
			    "\"2026-12-10T00:00:00.000Z\",\"dow\":\"Mon,Wed,Fri\",\"tz\":\"UTC\","
			    "\"start\":\"09:00:00\",\"end\":\"17:30:15\"}");
	ASSERT_EQ(sched_spec_from_json(j, &back, err, sizeof(err)), 0);
	ASSERT(memcmp(&s, &back, sizeof(s)) == 0);
	free(dump);
	json_decref(j);

	parse_fails("{\"dow\":\"Mon\",\"start\":\"09:00:00\"}",
		    "scheduling restrictions requires all restriction fields to be present. "
		    "tz, end are missing");
	parse_fails("{\"dow\":\"Mon\",\"start\":\"09:00:00\",\"end\":\"10:00\"}",
		    "scheduling restrictions requires all restriction fields to be present. "
		    "tz is missing");
	parse_fails("{\"dow\":\"Mon,Sumday\"}", "dow: invalid day 'Sumday'");
	parse_fails("{\"expires\":\"tomorrow\"}",
		    "expires: 'tomorrow' is not an RFC 3339 date-time");
	parse_fails("{\"when\":\"now\"}", "invalid field name when");
	parse_fails("{\"tz\":\"../../etc/passwd\"}",
		    "tz: '../../etc/passwd' is not a time zone name");
	parse_fails("{\"tz\":\"/etc/localtime\"}", "tz: '/etc/localtime' is not a time zone name");
	parse_fails("{\"tz\":\"America//New_York\"}",
		    "tz: 'America//New_York' is not a time zone name");
	parse_fails("{\"tz\":\"UTC+1 \"}", "tz: 'UTC+1 ' is not a time zone name");
	parse_fails("{\"dow\":\"Mon\",\"tz\":\"UTC\",\"start\":\"18:00\",\"end\":\"09:00\"}",
		    "'start' must be before 'end' and define a time window within a given day");
	parse_fails("{\"start\":\"25:00\"}", "start: '25:00' is not a time of day (HH:MM:SS)");
	parse_fails("[1]", "scheduling must be an object");
}

TEST_IMPL(sched_spec_adjust_windows)
{
	struct sched_spec s;
	char err[256];
	const char *text = "{\"dow\":\"Mon,Wed\",\"tz\":\"UTC\",\"start\":\"09:00:00\","
			   "\"end\":\"17:00:00\"}";
	ASSERT_EQ(sched_spec_parse(text, strlen(text), &s, err, sizeof(err)), 0);
	/* 2026-12-07 is a Monday */
	ASSERT_EQ(sched_spec_adjust(&s, at("2026-12-07T08:00:00Z")), at("2026-12-07T09:00:00Z"));
	ASSERT_EQ(sched_spec_adjust(&s, at("2026-12-07T12:34:56Z")), at("2026-12-07T12:34:56Z"));
	ASSERT(sched_spec_permits(&s, at("2026-12-07T12:34:56Z")));
	ASSERT_EQ(sched_spec_adjust(&s, at("2026-12-07T17:00:00Z")), at("2026-12-09T09:00:00Z"));
	ASSERT_EQ(sched_spec_adjust(&s, at("2026-12-10T10:00:00Z")), at("2026-12-14T09:00:00Z"));
	ASSERT(!sched_spec_permits(&s, at("2026-12-08T10:00:00Z")));
	/* first_attempt first, then the window */
	s.has_first = 1;
	s.first_ms = at("2026-12-09T18:00:00Z");
	ASSERT_EQ(sched_spec_adjust(&s, at("2026-12-07T10:00:00Z")), at("2026-12-14T09:00:00Z"));
}

/* Windows in local time: the days and hours of the zone, across a DST
 * change, and a local day that is another UTC day. */
TEST_IMPL(sched_spec_adjust_in_time_zone)
{
	struct sched_spec s;
	char err[256];
	const char *text = "{\"dow\":\"Mon\",\"tz\":\"America/New_York\",\"start\":\"09:00\","
			   "\"end\":\"17:00\"}";
	ASSERT_EQ(sched_spec_parse(text, strlen(text), &s, err, sizeof(err)), 0);
	ASSERT(sched_spec_needs_zone(&s));
	ASSERT_STR_EQ(s.tz, "America/New_York");
	struct tzif_zone *ny = test_tz_zone("America/New_York");
	s.zone = ny;
	/* Monday 2026-03-02, EST (-5): 07:00 local waits until 09:00 = 14:00Z */
	ASSERT_EQ(sched_spec_adjust(&s, at("2026-03-02T12:00:00Z")), at("2026-03-02T14:00:00Z"));
	ASSERT(sched_spec_permits(&s, at("2026-03-02T21:59:59Z")));
	ASSERT(!sched_spec_permits(&s, at("2026-03-02T22:00:00Z")));
	/* Friday evening before the change on Sunday 03-08: Monday 09:00 EDT (-4) */
	ASSERT_EQ(sched_spec_adjust(&s, at("2026-03-06T22:30:00Z")), at("2026-03-09T13:00:00Z"));
	/* in UTC it is Tuesday 01:00 already, in New York still Monday 21:00: next week */
	ASSERT_EQ(sched_spec_adjust(&s, at("2026-03-10T01:00:00Z")), at("2026-03-16T13:00:00Z"));
	tzif_free(ny);

	text = "{\"dow\":\"Mon\",\"tz\":\"Asia/Kolkata\",\"start\":\"00:00\",\"end\":\"01:00\"}";
	ASSERT_EQ(sched_spec_parse(text, strlen(text), &s, err, sizeof(err)), 0);
	struct tzif_zone *in = test_tz_zone("Asia/Kolkata");
	s.zone = in;
	/* Sunday 18:45Z is Monday 00:15 in India: permitted */
	ASSERT(sched_spec_permits(&s, at("2026-03-08T18:45:00Z")));
	ASSERT_EQ(sched_spec_adjust(&s, at("2026-03-08T12:00:00Z")), at("2026-03-08T18:30:00Z"));
	ASSERT(!sched_spec_permits(&s, at("2026-03-09T18:45:00Z")));
	tzif_free(in);

	/* a start inside the spring-forward gap (02:30 does not exist on 03-08):
	 * the window begins as far past the gap, 03:30 EDT */
	text = "{\"dow\":\"Sun\",\"tz\":\"America/New_York\",\"start\":\"02:30\","
	       "\"end\":\"05:00\"}";
	ASSERT_EQ(sched_spec_parse(text, strlen(text), &s, err, sizeof(err)), 0);
	s.zone = ny = test_tz_zone("America/New_York");
	ASSERT_EQ(sched_spec_adjust(&s, at("2026-03-08T05:00:00Z")), at("2026-03-08T07:30:00Z"));
	tzif_free(ny);
}
