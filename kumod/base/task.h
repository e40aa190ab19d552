/* SPDX-License-Identifier: Apache-2.0 */
/* Task registry: every long-lived asynchronous activity (listener, session,
 * timer, dispatcher...) is a task with id, kind, name, fields, state, MTA
 * phase and poll accounting. Every libuv callback a task owns is entered
 * through task_enter()/task_exit(). The registry owns task memory: the owner
 * holds the pointer until task_close(); closed tasks are retained for the
 * configured retention and then freed by task_registry_reap(). */
#ifndef KUMOD_BASE_TASK_H
#define KUMOD_BASE_TASK_H

#include <stddef.h>
#include <stdint.h>

#include "base/hist.h"

enum task_state {
	TASK_IDLE = 0,
	TASK_SCHEDULED,
	TASK_RUNNING,
	TASK_DONE,
};

#define TASK_MAX_FIELDS 6

/* Poll-time and scheduled-time histograms, kept only while someone watches
 * the task (the console's task details): task_watch(). */
struct task_hists {
	unsigned watchers;
	struct hist poll, sched;
};

struct task_field {
	char *key;
	char *value;
};

struct task {
	uint64_t id;
	uint64_t parent;
	const char *kind;     /* static string: "listener", "smtp_server", ... */
	char *name;	      /* owned */
	const char *location; /* static "file:line" of the spawning code */
	struct task_field fields[TASK_MAX_FIELDS];
	size_t nfields;
	enum task_state state;
	char phase[48];
	const char *wait; /* static wait reason or NULL */
	uint64_t phase_since_ns;
	uint64_t created_ns, dropped_ns;
	uint64_t busy_ns, scheduled_ns;
	uint64_t polls, wakes, self_wakes;
	uint64_t last_wake_ns, first_poll_ns, last_poll_started_ns, last_poll_ended_ns;
	uint64_t longest_poll_ns;
	uint64_t change_seq;	  /* registry sequence of the last change (for deltas) */
	struct task_hists *hists; /* NULL unless watched */
	struct task *next_all, *prev_all;
	struct task *next_hash;
};

#define TASK_STR_(x) #x
#define TASK_STR(x) TASK_STR_(x)
#define task_spawn(kind, name, parent) \
	task_spawn_at((kind), (name), (parent), __FILE__ ":" TASK_STR(__LINE__))

struct task *task_spawn_at(const char *kind, const char *name, uint64_t parent,
			   const char *location);
void task_set_field(struct task *t, const char *key, const char *value);
/* Sets the MTA phase (copied) and wait reason (static string or NULL);
 * emits a phase tracepoint when the phase text changes. */
void task_set_phase(struct task *t, const char *phase, const char *wait);
/* Work for the task became ready (timer due, completion posted...). */
void task_wake(struct task *t);
/* Enter/exit one poll (libuv callback). Returns the previously current
 * task, to be handed back to task_exit(). */
struct task *task_enter(struct task *t);
void task_exit(struct task *t, struct task *prev);
/* The owner is done with the task; the pointer must not be used after. */
void task_close(struct task *t);

struct task *task_current(void);
uint64_t task_current_id(void);
struct task *task_lookup(uint64_t id);

/* Completed tasks are kept this long (ns) before being freed. The default
 * is 0 (freed at the next reap): only a viewer needs them, and the
 * introspection server sets TOKIO_CONSOLE_RETENTION when it starts. */
void task_registry_set_retention(uint64_t ns);
uint64_t task_registry_retention(void);
/* Frees completed tasks older than the retention, except those changed
 * after the hold sequence (task_registry_hold). */
void task_registry_reap(uint64_t now_ns);
/* Completed tasks whose last change is newer than seq are not reaped, so a
 * viewer that has seen the registry up to seq learns of every close.
 * UINT64_MAX (the default) holds nothing back. */
void task_registry_hold(uint64_t seq);
/* At most n completed tasks are kept whatever their age; the oldest go
 * first (default SIZE_MAX). The hold still applies. */
void task_registry_set_retained_max(size_t n);
/* Starts (on=1) or stops (on=0) keeping t->hists; watchers are counted. */
void task_watch(struct task *t, int on);

/* Loop-wide poll accounting since the last call, for the console's loop
 * panel; longest_poll_* are reset by each call. */
struct task_loop_stats {
	uint64_t polls;		  /* total polls ever */
	uint64_t longest_poll_ns; /* longest poll since the previous call */
	uint64_t longest_poll_task;
};
void task_registry_loop_stats(struct task_loop_stats *out);
/* Records every poll's duration into h (NULL stops); the caller owns h. */
void task_registry_set_poll_hist(struct hist *h);
/* Iterate all tasks (live and retained) in creation order. */
void task_foreach(void (*fn)(struct task *t, void *ctx), void *ctx);
/* Iterates, in creation order, the tasks with an id above after_id until fn
 * returns non-zero (that value is returned; 0 when the end was reached).
 * fn must not close or free tasks. */
int task_foreach_after(uint64_t after_id, int (*fn)(struct task *t, void *ctx), void *ctx);
/* Id of the most recently spawned task (0 before the first). */
uint64_t task_registry_last_id(void);
size_t task_count(size_t *live);
uint64_t task_registry_seq(void);
const char *task_state_name(enum task_state s);
/* Frees everything (tests, shutdown). */
void task_registry_clear(void);

#endif
