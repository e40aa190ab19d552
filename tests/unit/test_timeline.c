/* SPDX-License-Identifier: Apache-2.0 */
/* Per-message timelines (spool/timeline.c): the ring, finished stories. */
#include <stdlib.h>

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
