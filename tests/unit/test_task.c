/* SPDX-License-Identifier: Apache-2.0 */
/* Task registry accounting, phases, retention. */
#include <unistd.h>

#include "base/clock.h"
#include "base/task.h"
#include "test.h"

TEST_IMPL(task_lifecycle_accounting)
{
	struct task *t = task_spawn("smtp_server", "127.0.0.1:4000", 7);
	ASSERT_GT(t->id, 0);
	ASSERT_EQ(t->parent, 7);
	ASSERT_STR_EQ(t->kind, "smtp_server");
	ASSERT_EQ(t->state, TASK_IDLE);
	ASSERT(task_lookup(t->id) == t);
	task_set_field(t, "peer", "127.0.0.1:4000");
	task_set_field(t, "peer", "127.0.0.1:4001");
	ASSERT_EQ(t->nfields, 1);
	ASSERT_STR_EQ(t->fields[0].value, "127.0.0.1:4001");

	task_wake(t);
	ASSERT_EQ(t->state, TASK_SCHEDULED);
	usleep(2000);
	struct task *prev = task_enter(t);
	ASSERT(prev == NULL);
	ASSERT(task_current() == t);
	ASSERT_EQ(t->state, TASK_RUNNING);
	ASSERT_GT(t->scheduled_ns, 1000000);
	task_wake(t); /* woken while running: a self-wake */
	usleep(1000);
	task_exit(t, prev);
	ASSERT(task_current() == NULL);
	ASSERT_EQ(t->polls, 1);
	ASSERT_EQ(t->wakes, 2);
	ASSERT_EQ(t->self_wakes, 1);
	ASSERT_GE(t->busy_ns, 1000000);
	ASSERT_EQ(t->state, TASK_IDLE);

	uint64_t seq = task_registry_seq();
	task_set_phase(t, "Data", "peer_read");
	ASSERT_STR_EQ(t->phase, "Data");
	ASSERT_GT(task_registry_seq(), seq);
	seq = task_registry_seq();
	task_set_phase(t, "Data", "peer_read"); /* unchanged: no new change */
	ASSERT_EQ(task_registry_seq(), seq);

	size_t live;
	ASSERT_EQ(task_count(&live), 1);
	ASSERT_EQ(live, 1);
	uint64_t id = t->id;
	task_close(t);
	ASSERT_EQ(task_count(&live), 1);
	ASSERT_EQ(live, 0);
	task_registry_set_retention(1000000000ull);
	task_registry_reap(clock_wall_ns());
	ASSERT(task_lookup(id) != NULL); /* retained */
	task_registry_reap(clock_wall_ns() + 2000000000ull);
	ASSERT(task_lookup(id) == NULL);
	ASSERT_EQ(task_count(NULL), 0);
}

TEST_IMPL(task_nested_enter_restores_current)
{
	struct task *a = task_spawn("listener", "a", 0);
	struct task *b = task_spawn("smtp_server", "b", a->id);
	struct task *p1 = task_enter(a);
	struct task *p2 = task_enter(b);
	ASSERT(task_current() == b);
	task_exit(b, p2);
	ASSERT(task_current() == a);
	task_exit(a, p1);
	ASSERT(task_current() == NULL);
	ASSERT_EQ(task_current_id(), 0);
	task_registry_clear();
	ASSERT_EQ(task_count(NULL), 0);
}
