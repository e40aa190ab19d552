/* SPDX-License-Identifier: Apache-2.0 */
/* Scheduling specs (kumod/proto/sched_spec.c): parsing KumoMTA's scheduling
 * JSON, the canonical form, and the next permitted time. */
#include "proto/duration.h"
#include "proto/sched_spec.h"
#include "test.h"

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
	parse_fails("{\"tz\":\"America/Phoenix\"}",
		    "tz: 'America/Phoenix': only UTC is implemented (kumod does not implement "
		    "IANA time zones yet)");
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
