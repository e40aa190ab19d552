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

enum task_state {
	TASK_IDLE = 0,
	TASK_SCHEDULED,
	TASK_RUNNING,
	TASK_DONE,
};

#define TASK_MAX_FIELDS 6

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
	uint64_t change_seq; /* registry sequence of the last change (for deltas) */
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

/* Completed tasks are kept this long (ns) before being freed. */
void task_registry_set_retention(uint64_t ns);
void task_registry_reap(uint64_t now_ns);
/* Iterate all tasks (live and retained) in creation order. */
void task_foreach(void (*fn)(struct task *t, void *ctx), void *ctx);
size_t task_count(size_t *live);
uint64_t task_registry_seq(void);
const char *task_state_name(enum task_state s);
/* Frees everything (tests, shutdown). */
void task_registry_clear(void);

#endif
