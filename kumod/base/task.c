/* SPDX-License-Identifier: Apache-2.0 */
/* Task registry: accounting of every long-lived asynchronous activity. */
#include "base/task.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/xalloc.h"
#include "ktrace.h"

#define TASK_HASH_SIZE 4096

/* One registry per loop thread (kumod runs one loop today). */
static struct {
	struct task *head, *tail;
	struct task *hash[TASK_HASH_SIZE];
	struct task *current;
	uint64_t next_id;
	uint64_t seq;
	uint64_t retention_ns;
	size_t count, live;
} reg = {.next_id = 1, .retention_ns = 3600ull * 1000000000ull};

static size_t task_hash(uint64_t id)
{
	return (size_t)(id * 0x9E3779B97F4A7C15ull >> 52) & (TASK_HASH_SIZE - 1);
}

static void task_touch(struct task *t)
{
	t->change_seq = ++reg.seq;
}

struct task *task_spawn_at(const char *kind, const char *name, uint64_t parent,
			   const char *location)
{
	struct task *t = xcalloc(1, sizeof(*t));
	t->id = reg.next_id++;
	t->parent = parent;
	t->kind = kind;
	t->name = xstrdup(name ? name : "");
	t->location = location;
	t->state = TASK_IDLE;
	t->created_ns = clock_wall_ns();
	t->phase_since_ns = t->created_ns;
	t->prev_all = reg.tail;
	if (reg.tail)
		reg.tail->next_all = t;
	else
		reg.head = t;
	reg.tail = t;
	size_t h = task_hash(t->id);
	t->next_hash = reg.hash[h];
	reg.hash[h] = t;
	reg.count++;
	reg.live++;
	task_touch(t);
	KTRACE(task_spawn, t->id, kind, t->name, parent, location);
	return t;
}

void task_set_field(struct task *t, const char *key, const char *value)
{
	for (size_t i = 0; i < t->nfields; i++) {
		if (strcmp(t->fields[i].key, key) == 0) {
			free(t->fields[i].value);
			t->fields[i].value = xstrdup(value ? value : "");
			task_touch(t);
			return;
		}
	}
	if (t->nfields == TASK_MAX_FIELDS)
		panic("%s: task %s has more than %d fields", __func__, t->kind, TASK_MAX_FIELDS);
	t->fields[t->nfields].key = xstrdup(key);
	t->fields[t->nfields].value = xstrdup(value ? value : "");
	t->nfields++;
	task_touch(t);
}

void task_set_phase(struct task *t, const char *phase, const char *wait)
{
	if (strcmp(t->phase, phase) == 0 && t->wait == wait)
		return;
	if (strcmp(t->phase, phase) != 0) {
		snprintf(t->phase, sizeof(t->phase), "%s", phase);
		t->phase_since_ns = clock_wall_ns();
	}
	t->wait = wait;
	task_touch(t);
	KTRACE(task_phase, t->id, t->kind, t->phase, wait ? wait : "");
}

void task_wake(struct task *t)
{
	t->wakes++;
	if (t->state == TASK_RUNNING) {
		t->self_wakes++;
	} else {
		t->state = TASK_SCHEDULED;
	}
	t->last_wake_ns = clock_wall_ns();
	task_touch(t);
}

struct task *task_enter(struct task *t)
{
	struct task *prev = reg.current;
	uint64_t now = clock_wall_ns();
	if (t->state == TASK_SCHEDULED && t->last_wake_ns && now > t->last_wake_ns)
		t->scheduled_ns += now - t->last_wake_ns;
	t->state = TASK_RUNNING;
	t->polls++;
	if (!t->first_poll_ns)
		t->first_poll_ns = now;
	t->last_poll_started_ns = now;
	reg.current = t;
	return prev;
}

void task_exit(struct task *t, struct task *prev)
{
	uint64_t now = clock_wall_ns();
	uint64_t d = now > t->last_poll_started_ns ? now - t->last_poll_started_ns : 0;
	t->busy_ns += d;
	if (d > t->longest_poll_ns)
		t->longest_poll_ns = d;
	t->last_poll_ended_ns = now;
	if (t->state == TASK_RUNNING)
		t->state = TASK_IDLE;
	reg.current = prev;
	task_touch(t);
	KTRACE(task_poll, t->id, t->polls, d);
}

void task_close(struct task *t)
{
	if (!t)
		return;
	if (t->state == TASK_DONE)
		panic("%s: task %" PRIu64 " closed twice", __func__, t->id);
	t->state = TASK_DONE;
	t->dropped_ns = clock_wall_ns();
	reg.live--;
	task_touch(t);
	KTRACE(task_close, t->id, t->kind, t->polls, t->busy_ns);
	if (reg.current == t)
		reg.current = NULL;
}

struct task *task_current(void)
{
	return reg.current;
}

uint64_t task_current_id(void)
{
	return reg.current ? reg.current->id : 0;
}

struct task *task_lookup(uint64_t id)
{
	for (struct task *t = reg.hash[task_hash(id)]; t; t = t->next_hash)
		if (t->id == id)
			return t;
	return NULL;
}

static void task_free(struct task *t)
{
	struct task **pp = &reg.hash[task_hash(t->id)];
	while (*pp != t)
		pp = &(*pp)->next_hash;
	*pp = t->next_hash;
	if (t->prev_all)
		t->prev_all->next_all = t->next_all;
	else
		reg.head = t->next_all;
	if (t->next_all)
		t->next_all->prev_all = t->prev_all;
	else
		reg.tail = t->prev_all;
	for (size_t i = 0; i < t->nfields; i++) {
		free(t->fields[i].key);
		free(t->fields[i].value);
	}
	free(t->name);
	reg.count--;
	free(t);
}

void task_registry_set_retention(uint64_t ns)
{
	reg.retention_ns = ns;
}

void task_registry_reap(uint64_t now_ns)
{
	struct task *t = reg.head, *next;
	for (; t; t = next) {
		next = t->next_all;
		if (t->state == TASK_DONE && now_ns - t->dropped_ns >= reg.retention_ns)
			task_free(t);
	}
}

void task_foreach(void (*fn)(struct task *t, void *ctx), void *ctx)
{
	struct task *t = reg.head, *next;
	for (; t; t = next) {
		next = t->next_all;
		fn(t, ctx);
	}
}

size_t task_count(size_t *live)
{
	if (live)
		*live = reg.live;
	return reg.count;
}

uint64_t task_registry_seq(void)
{
	return reg.seq;
}

const char *task_state_name(enum task_state s)
{
	switch (s) {
	case TASK_IDLE:
		return "idle";
	case TASK_SCHEDULED:
		return "scheduled";
	case TASK_RUNNING:
		return "running";
	case TASK_DONE:
		return "done";
	}
	return "?";
}

void task_registry_clear(void)
{
	while (reg.head)
		task_free(reg.head);
	reg.current = NULL;
	reg.live = 0;
}
