/* SPDX-License-Identifier: Apache-2.0 */
/* Per-message timelines (spool/timeline.c): the ring, finished stories. */
#include <stdlib.h>
#include <string.h>

#include "spool/timeline.h"
#include "test.h"

TEST_IMPL(timeline_ring_keeps_newest)
{
	setenv("KUMOD_MESSAGE_TIMELINE", "4", 1);
	for (int i = 0; i < 6; i++)
		MSG_TIMELINE("aaaa", "Step", "n=%d", i);
	MSG_TIMELINE("bbbb", "Other", "x");
	int finished = -1;
	uint64_t dropped = 0;
	json_t *a = msg_timeline_json("aaaa", &finished, &dropped);
	ASSERT(a != NULL);
	ASSERT_EQ(json_array_size(a), 4);
	ASSERT_EQ(dropped, 2);
	ASSERT_EQ(finished, 0);
	ASSERT_STR_EQ(json_string_value(json_object_get(json_array_get(a, 0), "detail")), "n=2");
	ASSERT_STR_EQ(json_string_value(json_object_get(json_array_get(a, 3), "detail")), "n=5");
	ASSERT_EQ(json_integer_value(json_object_get(json_array_get(a, 0), "elapsed_us")), 0);
	json_decref(a);
	msg_timeline_end("aaaa");
	a = msg_timeline_json("aaaa", &finished, NULL);
	ASSERT(a && finished == 1);
	json_decref(a);
	/* a note after the end (the spool's remove completes later) still lands */
	MSG_TIMELINE("aaaa", "Spool", "removed");
	a = msg_timeline_json("aaaa", NULL, NULL);
	ASSERT_STR_EQ(json_string_value(json_object_get(json_array_get(a, 3), "event")), "Spool");
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

/* The packed story: times survive the oldest entries being dropped (the
 * first kept one's wall time moves forward), long and empty details keep
 * their length, and the elapsed times never go backwards. */
TEST_IMPL(timeline_packed_entries)
{
	setenv("KUMOD_MESSAGE_TIMELINE", "3", 1);
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
	ASSERT_EQ(json_array_size(a), 3);
	ASSERT_EQ(dropped, 1);
	json_t *e0 = json_array_get(a, 0), *e2 = json_array_get(a, 2);
	ASSERT_STR_EQ(json_string_value(json_object_get(e0, "event")), "Second");
	ASSERT_EQ(strlen(json_string_value(json_object_get(e0, "detail"))), 239);
	ASSERT_EQ(json_integer_value(json_object_get(e0, "elapsed_us")), 0);
	ASSERT_EQ(json_integer_value(json_object_get(e0, "delta_us")), 0);
	ASSERT_STR_EQ(json_string_value(json_object_get(e2, "event")), "Fourth");
	ASSERT_STR_EQ(json_string_value(json_object_get(e2, "detail")), "four");
	json_int_t prev = 0;
	for (size_t i = 0; i < 3; i++) {
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
