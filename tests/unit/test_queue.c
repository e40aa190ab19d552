/* SPDX-License-Identifier: Apache-2.0 */
/* Scheduled-queue pure helpers: retry schedule and queue names. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
#include <uv.h>

#include "policy.h"
#include "queue/queue.h"
#include "spool/message.h"
#include "test.h"

TEST_IMPL(queue_retry_delay_doubles_and_caps)
{
	struct queue_config c = {.retry_interval_ms = 20 * 60 * 1000};
	/* KumoMTA: 20m, 40m, 80m, ... */
	ASSERT_INT_OP(queue_retry_delay_ms(&c, 0), ==, 20 * 60 * 1000);
	ASSERT_INT_OP(queue_retry_delay_ms(&c, 1), ==, 40 * 60 * 1000);
	ASSERT_INT_OP(queue_retry_delay_ms(&c, 2), ==, 80 * 60 * 1000);
	c.max_retry_interval_ms = 60 * 60 * 1000;
	ASSERT_INT_OP(queue_retry_delay_ms(&c, 1), ==, 40 * 60 * 1000);
	ASSERT_INT_OP(queue_retry_delay_ms(&c, 2), ==, 60 * 60 * 1000);
	ASSERT_INT_OP(queue_retry_delay_ms(&c, 30), ==, 60 * 60 * 1000);
	/* no overflow for absurd attempt counts */
	c.max_retry_interval_ms = 0;
	ASSERT(queue_retry_delay_ms(&c, 1000) > 0);
	/* unset interval: the 20 minute default */
	struct queue_config d = {0};
	ASSERT_INT_OP(queue_retry_delay_ms(&d, 0), ==, 20 * 60 * 1000);
}

TEST_IMPL(queue_make_name_forms)
{
	char n[256];
	queue_make_name(n, sizeof(n), NULL, NULL, "example.com", NULL);
	ASSERT_STR_EQ(n, "example.com");
	queue_make_name(n, sizeof(n), "", "acme", "example.com", "");
	ASSERT_STR_EQ(n, "acme@example.com");
	queue_make_name(n, sizeof(n), "spring", "acme", "example.com", NULL);
	ASSERT_STR_EQ(n, "spring:acme@example.com");
	queue_make_name(n, sizeof(n), "spring", NULL, "example.com", NULL);
	ASSERT_STR_EQ(n, "spring:@example.com");
	queue_make_name(n, sizeof(n), NULL, "acme", "example.com", "relay.example.net");
	ASSERT_STR_EQ(n, "acme@example.com!relay.example.net");
}

/* --- queue_walk: paging through one queue's messages ----------------------- */

static struct qmsg *routed[16];
static size_t nrouted;

static void hold_router(struct qmsg *qm)
{
	if (nrouted < ARRAY_SIZE(routed))
		routed[nrouted++] = qm;
}

struct walk_out {
	char ids[8][64];
	size_t n, stop_at; /* stop_at: refuse the message at this index (0 = never) */
};

static int walk_take(const struct qmsg *qm, void *ctx)
{
	struct walk_out *w = ctx;
	if (w->stop_at && w->n == w->stop_at)
		return 1;
	snprintf(w->ids[w->n++], sizeof(w->ids[0]), "%s", qm->m->id);
	return 0;
}

static void walk(const char *q, const char *after, size_t limit, struct walk_out *w, int *more,
		 int *restarted)
{
	size_t stop = w->stop_at;
	memset(w, 0, sizeof(*w));
	w->stop_at = stop;
	ASSERT_EQ(queue_walk(q, after, limit, walk_take, w, more, restarted), 0);
}

TEST_IMPL(queue_walk_pages_in_arrival_order)
{
	static const char policy[] =
	    "local kumo = require('kumo')\n"
	    "kumo.on('get_queue_config', function() return kumo.make_queue_config{} end)\n";
	char path[] = "/tmp/kumod-walk-XXXXXX.lua", err[512] = "";
	int fd = mkstemps(path, 4);
	ASSERT(fd >= 0 && write(fd, policy, strlen(policy)) == (ssize_t)strlen(policy));
	close(fd);
	if (policy_load(path, 0, err, sizeof(err)) != 0)
		TEST_FAIL("policy_load: %s", err);
	unlink(path);
	ASSERT_EQ(queue_init(uv_default_loop()), 0);
	queue_set_router(hold_router);
	char ids[5][64];
	for (int i = 0; i < 6; i++) {
		struct message *m = message_new();
		message_set_sender(m, "s@example.com");
		message_add_recipient(m, i == 3 ? "r@other.example" : "r@walk.example");
		if (i != 3)
			snprintf(ids[i < 3 ? i : i - 1], sizeof(ids[0]), "%s", m->id);
		queue_insert(m, "Received");
		message_unref(m);
	}
	ASSERT_EQ(queue_count_of("walk.example"), 5);
	ASSERT_EQ(queue_count_of("other.example"), 1);
	ASSERT_EQ(queue_count_of("nowhere.example"), -ENOENT);
	struct walk_out w = {0};
	int more, restarted;
	ASSERT_EQ(queue_walk("nowhere.example", NULL, 5, walk_take, &w, &more, &restarted),
		  -ENOENT);
	/* pages of two: 2 + 2 + 1, each after the last id of the one before */
	walk("walk.example", NULL, 2, &w, &more, &restarted);
	ASSERT(w.n == 2 && more && !restarted);
	ASSERT_STR_EQ(w.ids[0], ids[0]);
	ASSERT_STR_EQ(w.ids[1], ids[1]);
	walk("walk.example", ids[1], 2, &w, &more, &restarted);
	ASSERT(w.n == 2 && more && !restarted);
	ASSERT_STR_EQ(w.ids[0], ids[2]);
	ASSERT_STR_EQ(w.ids[1], ids[3]);
	walk("walk.example", ids[3], 2, &w, &more, &restarted);
	ASSERT(w.n == 1 && !more && !restarted);
	ASSERT_STR_EQ(w.ids[0], ids[4]);
	/* the callback may stop early: the refused message counts as following */
	w.stop_at = 1;
	walk("walk.example", NULL, 5, &w, &more, &restarted);
	ASSERT(w.n == 1 && more);
	w.stop_at = 0;
	/* a message of another queue is no cursor here: the walk restarts */
	struct walk_out other = {0};
	walk("other.example", NULL, 5, &other, &more, &restarted);
	ASSERT_EQ(other.n, 1);
	walk("walk.example", other.ids[0], 3, &w, &more, &restarted);
	ASSERT(restarted && w.n == 3 && more);
	ASSERT_STR_EQ(w.ids[0], ids[0]);
	/* routed messages stay listed; one that leaves is unlinked from its place */
	for (int i = 0; i < 100 && nrouted < 6; i++)
		uv_run(uv_default_loop(), UV_RUN_NOWAIT);
	ASSERT_EQ(nrouted, 6);
	struct qmsg *gone = NULL;
	for (size_t i = 0; i < nrouted; i++)
		if (strcmp(routed[i]->m->id, ids[2]) == 0) {
			gone = routed[i];
			routed[i] = NULL; /* freed below */
		}
	ASSERT(gone != NULL && gone->heap_idx == SIZE_MAX);
	queue_done(gone);
	walk("walk.example", NULL, 10, &w, &more, &restarted);
	ASSERT(w.n == 4 && !more);
	ASSERT_STR_EQ(w.ids[1], ids[1]);
	ASSERT_STR_EQ(w.ids[2], ids[3]);
	/* its id as a cursor: gone, so the walk restarts from the first */
	walk("walk.example", ids[2], 10, &w, &more, &restarted);
	ASSERT(restarted && w.n == 4);
	/* the last one leaves: the tail moves back */
	for (size_t i = 0; i < nrouted; i++)
		if (routed[i] && strcmp(routed[i]->m->id, ids[4]) == 0)
			queue_done(routed[i]);
	walk("walk.example", ids[3], 10, &w, &more, &restarted);
	ASSERT(w.n == 0 && !more && !restarted);
	ASSERT_EQ(queue_count_of("walk.example"), 3);
}
