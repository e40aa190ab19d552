/* SPDX-License-Identifier: Apache-2.0 */
/* Per-message timelines (spool/timeline.c): the ring, finished stories. */
#include <stdlib.h>
#include <string.h>

#include "spool/timeline.h"
#include "test.h"

static const char *field(json_t *a, size_t i, const char *key)
{
	return json_string_value(json_object_get(json_array_get(a, i), key));
}

/* Over the entry count the first 4 entries stay, then a "Dropped" entry
 * counting the middle ones lost, then the newest. */
TEST_IMPL(timeline_ring_keeps_head_and_newest)
{
	setenv("KUMOD_MESSAGE_TIMELINE", "5", 1);
	for (int i = 0; i < 7; i++)
		MSG_TIMELINE("aaaa", "Step", "n=%d", i);
	MSG_TIMELINE("bbbb", "Other", "x");
	int finished = -1;
	uint64_t dropped = 0;
	json_t *a = msg_timeline_json("aaaa", &finished, &dropped);
	ASSERT(a != NULL);
	ASSERT_EQ(json_array_size(a), 6);
	ASSERT_EQ(dropped, 2);
	ASSERT_EQ(finished, 0);
	ASSERT_STR_EQ(field(a, 0, "detail"), "n=0");
	ASSERT_STR_EQ(field(a, 3, "detail"), "n=3");
	ASSERT_STR_EQ(field(a, 4, "event"), "Dropped");
	ASSERT_STR_EQ(field(a, 4, "detail"), "\u2026 2 earlier events dropped");
	ASSERT_STR_EQ(field(a, 5, "detail"), "n=6");
	ASSERT_EQ(json_integer_value(json_object_get(json_array_get(a, 0), "elapsed_us")), 0);
	json_decref(a);
	msg_timeline_end("aaaa");
	a = msg_timeline_json("aaaa", &finished, NULL);
	ASSERT(a && finished == 1);
	json_decref(a);
	/* a note after the end (the spool's remove completes later) still lands */
	MSG_TIMELINE("aaaa", "Spool", "removed");
	a = msg_timeline_json("aaaa", NULL, &dropped);
	ASSERT_EQ(dropped, 3);
	ASSERT_STR_EQ(field(a, 4, "detail"), "\u2026 3 earlier events dropped");
	ASSERT_STR_EQ(field(a, 5, "event"), "Spool");
	json_decref(a);
	ASSERT(msg_timeline_json("cccc", NULL, NULL) == NULL);
}

TEST_IMPL(timeline_finished_are_bounded)
{
	setenv("KUMOD_MESSAGE_TIMELINE", "2", 1);
	char id[40];
	for (int i = 0; i < MSG_TIMELINE_KEEP + 10; i++) {
		snprintf(id, sizeof(id), "m%d", i);
		MSG_TIMELINE(id, "Reception", "r");
		msg_timeline_end(id);
	}
	ASSERT(msg_timeline_json("m0", NULL, NULL) == NULL); /* evicted, oldest first */
	ASSERT(msg_timeline_json("m9", NULL, NULL) == NULL);
	json_t *a = msg_timeline_json("m10", NULL, NULL);
	ASSERT(a != NULL);
	json_decref(a);
}

TEST_IMPL(timeline_off)
{
	setenv("KUMOD_MESSAGE_TIMELINE", "0", 1);
	MSG_TIMELINE("aaaa", "Step", "x");
	ASSERT(msg_timeline_json("aaaa", NULL, NULL) == NULL);
	ASSERT_EQ(msg_timeline_size, 0);
}

/* The packed story: times survive entries being dropped (a dropped one's
 * delta moves to the next), long and empty details keep their length
 * without a byte budget, and the elapsed times never go backwards. */
TEST_IMPL(timeline_packed_entries)
{
	setenv("KUMOD_MESSAGE_TIMELINE", "3", 1);
	setenv("KUMOD_MESSAGE_TIMELINE_BYTES", "0", 1);
	char longd[300];
	memset(longd, 'x', sizeof(longd) - 1);
	longd[sizeof(longd) - 1] = 0;
	MSG_TIMELINE("pppp", "First", "%s", "");
	MSG_TIMELINE("pppp", "Second", "%s", longd);
	MSG_TIMELINE("pppp", "Third", "t");
	MSG_TIMELINE("pppp", "Fourth", "four");
	uint64_t dropped = 0;
	json_t *a = msg_timeline_json("pppp", NULL, &dropped);
	ASSERT(a != NULL);
	ASSERT_EQ(json_array_size(a), 4); /* First, Second, Dropped, Fourth */
	ASSERT_EQ(dropped, 1);
	json_t *e0 = json_array_get(a, 0), *e1 = json_array_get(a, 1), *e3 = json_array_get(a, 3);
	ASSERT_STR_EQ(json_string_value(json_object_get(e0, "event")), "First");
	ASSERT_STR_EQ(json_string_value(json_object_get(e0, "detail")), "");
	ASSERT_EQ(json_integer_value(json_object_get(e0, "elapsed_us")), 0);
	ASSERT_EQ(json_integer_value(json_object_get(e0, "delta_us")), 0);
	ASSERT_STR_EQ(json_string_value(json_object_get(e1, "event")), "Second");
	ASSERT_EQ(strlen(json_string_value(json_object_get(e1, "detail"))), 239);
	ASSERT_STR_EQ(field(a, 2, "event"), "Dropped");
	ASSERT_STR_EQ(json_string_value(json_object_get(e3, "event")), "Fourth");
	ASSERT_STR_EQ(json_string_value(json_object_get(e3, "detail")), "four");
	json_int_t prev = 0;
	for (size_t i = 0; i < 4; i++) {
		json_int_t el =
		    json_integer_value(json_object_get(json_array_get(a, i), "elapsed_us"));
		ASSERT(el >= prev);
		ASSERT_EQ(el - prev,
			  json_integer_value(json_object_get(json_array_get(a, i), "delta_us")));
		prev = el;
	}
	json_decref(a);
	/* an id longer than a message id gets no story rather than a wrong one */
	MSG_TIMELINE("0123456789abcdef0123456789abcdef0", "Step", "x");
	ASSERT(msg_timeline_json("0123456789abcdef0123456789abcdef0", NULL, NULL) == NULL);
}

/* The byte budget: many long attempts stay within it, keeping the first 4
 * entries (a head entry cut at a fifth of the budget) and the newest ones
 * whole; the elapsed times still add up across the gap. */
TEST_IMPL(timeline_byte_budget)
{
	setenv("KUMOD_MESSAGE_TIMELINE", "32", 1);
	setenv("KUMOD_MESSAGE_TIMELINE_BYTES", "256", 1);
	char longd[200];
	memset(longd, 'r', sizeof(longd) - 1);
	longd[sizeof(longd) - 1] = 0;
	MSG_TIMELINE("bbbb", "Reception", "HTTP inject for %s", longd);
	MSG_TIMELINE("bbbb", "Spool", "store 900 bytes");
	MSG_TIMELINE("bbbb", "Ready", "ready queue q");
	MSG_TIMELINE("bbbb", "Logged", "Reception record");
	for (int i = 1; i <= 20; i++) {
		MSG_TIMELINE("bbbb", "Attempt", "attempt %d via mx.example", i);
		MSG_TIMELINE("bbbb", "TransientFailure", "451 4.7.1 try again later, attempt %d",
			     i);
	}
	uint64_t dropped = 0;
	json_t *a = msg_timeline_json("bbbb", NULL, &dropped);
	ASSERT(a != NULL);
	size_t n = json_array_size(a);
	ASSERT(n >= 7 && n < 12);
	ASSERT_EQ(dropped + (n - 1), 44); /* every note is kept or counted */
	ASSERT_STR_EQ(field(a, 0, "event"), "Reception");
	ASSERT_EQ(strlen(field(a, 0, "detail")), 256 / 5 - 12);
	ASSERT_STR_EQ(field(a, 1, "detail"), "store 900 bytes");
	ASSERT_STR_EQ(field(a, 2, "event"), "Ready");
	ASSERT_STR_EQ(field(a, 3, "event"), "Logged");
	ASSERT_STR_EQ(field(a, 4, "event"), "Dropped");
	char want[64];
	snprintf(want, sizeof(want), "\u2026 %u earlier events dropped", (unsigned)dropped);
	ASSERT_STR_EQ(field(a, 4, "detail"), want);
	ASSERT_STR_EQ(field(a, n - 1, "detail"), "451 4.7.1 try again later, attempt 20");
	ASSERT_STR_EQ(field(a, n - 2, "detail"), "attempt 20 via mx.example");
	/* the packed entries (a 1-byte time, event, length and the detail) fit */
	size_t bytes = 0;
	json_int_t prev = 0;
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(a, i);
		if (strcmp(field(a, i, "event"), "Dropped") != 0)
			bytes += 3 + strlen(field(a, i, "detail"));
		json_int_t el = json_integer_value(json_object_get(e, "elapsed_us"));
		ASSERT(el >= prev);
		ASSERT_EQ(el - prev, json_integer_value(json_object_get(e, "delta_us")));
		prev = el;
	}
	ASSERT(bytes <= 256);
	json_decref(a);
	/* a later detail longer than what the head leaves is cut to fit */
	MSG_TIMELINE("bbbb", "Delivery", "%s", longd);
	a = msg_timeline_json("bbbb", NULL, NULL);
	n = json_array_size(a);
	ASSERT_STR_EQ(field(a, n - 1, "event"), "Delivery");
	ASSERT(strlen(field(a, n - 1, "detail")) > 80 && strlen(field(a, n - 1, "detail")) < 199);
	json_decref(a);
}

/* A detail cut by the budget ends on a whole UTF-8 character. */
TEST_IMPL(timeline_budget_cut_keeps_utf8)
{
	setenv("KUMOD_MESSAGE_TIMELINE", "32", 1);
	setenv("KUMOD_MESSAGE_TIMELINE_BYTES", "128", 1);
	char d[200] = "";
	for (int i = 0; i < 60; i++)
		strcat(d, "\xc3\xa9"); /* é: 2 bytes; 13 would cut the 7th */
	MSG_TIMELINE("uuuu", "Reception", "%s", d);
	json_t *a = msg_timeline_json("uuuu", NULL, NULL);
	ASSERT(a != NULL);
	const char *got = field(a, 0, "detail");
	ASSERT(got != NULL);
	ASSERT_EQ(strlen(got), 12); /* 128 / 5 - 12 = 13 bytes, less half an é */
	ASSERT(strncmp(got, d, 12) == 0);
	json_decref(a);
}
