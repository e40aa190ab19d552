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

/* Task events go to the log under target runtime::task. The seed's filter
 * `KUMOD_LOG=tokio=trace,runtime=trace,info` names `tokio` too, whose own
 * task instrumentation uses target tokio::task: when runtime::task is off
 * for an event but tokio::task is on, the line goes out under tokio::task.
 * One line at most per event; probes (USDT, LTTng) fire once either way. */
#define TASK_TRACE(name, ...)                                                                     \
	do {                                                                                      \
		static struct log_site rt_site_ = KTRACE_SITE_INIT(name);                         \
		static struct log_site tk_site_ = {"tokio::task", KT_LEVEL_##name, ~0u, 0};       \
		kt_##name##_at(log_site_enabled(&rt_site_) ? &rt_site_ : &tk_site_, __VA_ARGS__); \
	} while (0)

/* One registry per loop thread (kumod runs one loop today). */
static struct {
	struct task *head, *tail;
	struct task *hash[TASK_HASH_SIZE];
	struct task *current;
	uint64_t next_id;
	uint64_t seq;
	uint64_t retention_ns;
	uint64_t hold_seq;
	size_t retained_max;
	size_t count, live;
	uint64_t polls;
	uint64_t longest_poll_ns, longest_poll_task;
	struct hist *poll_hist;
} reg = {.next_id = 1, .retention_ns = 0, .hold_seq = UINT64_MAX, .retained_max = SIZE_MAX};

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
	TASK_TRACE(task_spawn, t->id, kind, t->name, parent, location);
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
		size_t n = strnlen(phase, sizeof(t->phase) - 1); /* truncates like snprintf */
		memcpy(t->phase, phase, n);
		t->phase[n] = '\0';
		t->phase_since_ns = clock_wall_ns();
	}
	t->wait = wait;
	task_touch(t);
	TASK_TRACE(task_phase, t->id, t->kind, t->phase, wait ? wait : "");
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
	/* A wake while running (input read inside the poll it started, a
	 * completion handled in place) is counted (self_wakes) but not traced:
	 * the task_poll of that poll follows and carries the count. */
	if (t->state != TASK_RUNNING)
		TASK_TRACE(task_wake, t->id, t->wakes);
}

struct task *task_enter(struct task *t)
{
	struct task *prev = reg.current;
	uint64_t now = clock_wall_ns();
	if (t->state == TASK_SCHEDULED && t->last_wake_ns && now > t->last_wake_ns) {
		t->scheduled_ns += now - t->last_wake_ns;
		if (t->hists)
			hist_record(&t->hists->sched, now - t->last_wake_ns);
	}
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
	reg.polls++;
	if (d > reg.longest_poll_ns) {
		reg.longest_poll_ns = d;
		reg.longest_poll_task = t->id;
	}
	if (t->hists)
		hist_record(&t->hists->poll, d);
	if (reg.poll_hist)
		hist_record(reg.poll_hist, d);
	t->last_poll_ended_ns = now;
	if (t->state == TASK_RUNNING)
		t->state = TASK_IDLE;
	reg.current = prev;
	task_touch(t);
	TASK_TRACE(task_poll, t->id, t->polls, t->wakes, d);
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
	TASK_TRACE(task_close, t->id, t->kind, t->polls, t->busy_ns);
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
	free(t->hists);
	reg.count--;
	free(t);
}

void task_registry_set_retention(uint64_t ns)
{
	reg.retention_ns = ns;
}

uint64_t task_registry_retention(void)
{
	return reg.retention_ns;
}

void task_registry_hold(uint64_t seq)
{
	reg.hold_seq = seq;
}

void task_registry_set_retained_max(size_t n)
{
	reg.retained_max = n;
}

void task_registry_reap(uint64_t now_ns)
{
	size_t done = reg.count - reg.live;
	size_t excess = done > reg.retained_max ? done - reg.retained_max : 0;
	struct task *t = reg.head, *next;
	for (; t; t = next) {
		next = t->next_all;
		if (t->state != TASK_DONE || t->change_seq > reg.hold_seq)
			continue;
		if (excess || now_ns - t->dropped_ns >= reg.retention_ns) {
			excess -= excess ? 1 : 0;
			task_free(t); /* oldest first: the list is in creation order */
		}
	}
}

void task_watch(struct task *t, int on)
{
	if (on) {
		if (!t->hists) {
			t->hists = xmalloc(sizeof(*t->hists));
			t->hists->watchers = 0;
			hist_init(&t->hists->poll);
			hist_init(&t->hists->sched);
		}
		t->hists->watchers++;
		return;
	}
	if (!t->hists || !t->hists->watchers)
		panic("%s: task %" PRIu64 " is not watched", __func__, t->id);
	if (--t->hists->watchers == 0)
		xfree(t->hists);
}

void task_registry_loop_stats(struct task_loop_stats *out)
{
	out->polls = reg.polls;
	out->longest_poll_ns = reg.longest_poll_ns;
	out->longest_poll_task = reg.longest_poll_task;
	reg.longest_poll_ns = 0;
	reg.longest_poll_task = 0;
}

void task_registry_set_poll_hist(struct hist *h)
{
	reg.poll_hist = h;
}

void task_foreach(void (*fn)(struct task *t, void *ctx), void *ctx)
{
	struct task *t = reg.head, *next;
	for (; t; t = next) {
		next = t->next_all;
		fn(t, ctx);
	}
}

int task_foreach_after(uint64_t after_id, int (*fn)(struct task *t, void *ctx), void *ctx)
{
	struct task *t = after_id ? task_lookup(after_id) : NULL;
	t = t ? t->next_all : reg.head;
	for (; t; t = t->next_all) {
		if (t->id <= after_id)
			continue;
		int rc = fn(t, ctx);
		if (rc)
			return rc;
	}
	return 0;
}

uint64_t task_registry_last_id(void)
{
	return reg.next_id - 1;
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
