/* SPDX-License-Identifier: Apache-2.0 */
/* kumo-console: the viewer's state model (merged from server frames), its
 * derived times and lints, and the interfaces between the model, the
 * terminal UI and the transport (live socket or recording). */
#ifndef KUMO_CONSOLE_H
#define KUMO_CONSOLE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Lints (warnings computed in the viewer), -W/-A NAME. */
enum kc_lint {
	KC_LINT_LONG_CALLBACK = 0, /* a poll blocked the loop > long_callback_ms */
	KC_LINT_LOST_WAKE,	   /* idle, nothing pending that could wake it */
	KC_LINT_WATCHDOG,	   /* stuck in one phase past watchdog_s */
	KC_LINT_SELF_WAKES,	   /* more than half of its wakes are self-wakes */
	KC_LINT__COUNT,
};

struct kc_task {
	uint64_t id, parent;
	char *kind, *name, *location;
	json_t *fields; /* object */
	char state[16], phase[64], wait[32];
	uint64_t phase_since, created_at, dropped_at;
	uint64_t polls, wakes, self_wakes;
	uint64_t last_wake, first_poll, last_poll_started, last_poll_ended;
	uint64_t busy_ns, scheduled_ns, longest_poll_ns;
	unsigned warnings;  /* bit per enum kc_lint */
	uint64_t seen_done; /* viewer time (ns) when first seen done */
};

/* Derived times at `now` (tokio-console's rules). */
struct kc_times {
	uint64_t total, busy, sched, idle, in_phase;
};

struct kc_queue {
	char *kind, *name;
	json_t *obj;
};

struct kc_model {
	json_t *hello;
	struct kc_task **tasks; /* sorted by id */
	size_t ntasks, cap;
	struct kc_queue *queues;
	size_t nqueues, qcap;
	json_t *loop;
	json_t *details; /* last task_details frame */
	json_t *qpage;	 /* last queue_messages frame (a page of a queue's messages) */
	json_t *message; /* last message frame (metadata and timeline) */
	json_t *session; /* last session frame */
	uint64_t now;	 /* server time of the latest frame */
	uint64_t dropped_events;
	int paused;	       /* server confirmed pause */
	int snapshot_complete; /* the first full state arrived */
	uint64_t frames;       /* frames applied */
	char last_error[256];  /* last error frame from the server */
	uint64_t retain_ns;    /* drop done tasks this long after they end (0 = never) */
	unsigned lints_on;     /* bit per lint */
	uint64_t long_callback_ns, watchdog_ns;
};

void kc_model_init(struct kc_model *m);
void kc_model_free(struct kc_model *m);
/* Clears tasks and queues (a new snapshot starts, or a reconnect). */
void kc_model_reset(struct kc_model *m);
/* Applies one frame line. 0, or -1 with a message in err (not JSON, not an
 * object, unknown shape). */
int kc_model_apply(struct kc_model *m, const char *line, size_t len, char *err, size_t errlen);
/* Recomputes lints and drops done tasks past the retention. */
void kc_model_refresh(struct kc_model *m);
struct kc_task *kc_model_task(const struct kc_model *m, uint64_t id);
void kc_task_times(const struct kc_model *m, const struct kc_task *t, struct kc_times *out);
/* "RUNNING" / "BUSY" style label and a glyph. */
const char *kc_state_label(const struct kc_task *t, int ascii);
const char *kc_lint_name(enum kc_lint l);
int kc_lint_parse(const char *name);
const char *kc_lint_text(enum kc_lint l);
/* Fields as "k=v k=v". */
void kc_task_fields(const struct kc_task *t, char *out, size_t outlen);
/* Filter: space-separated terms, each a substring of name, kind, phase,
 * state or fields, or key:value with key kind, phase, state, name, wait, id. */
int kc_task_matches(const struct kc_task *t, const char *filter, int ascii);

/* Task table columns (sort keys). */
enum kc_col {
	KC_COL_WARN = 0,
	KC_COL_ID,
	KC_COL_STATE,
	KC_COL_NAME,
	KC_COL_KIND,
	KC_COL_PHASE,
	KC_COL_INPHASE,
	KC_COL_TOTAL,
	KC_COL_BUSY,
	KC_COL_SCHED,
	KC_COL_IDLE,
	KC_COL_POLLS,
	KC_COL_FIELDS,
	KC_COL__COUNT,
};
extern const char *const kc_col_names[KC_COL__COUNT];
/* Rows matching filter, sorted; returns count, *rows malloc'd. */
size_t kc_model_rows(const struct kc_model *m, const char *filter, enum kc_col sort, int invert,
		     int ascii, struct kc_task ***rows);
/* Queue rows sorted by column (0 kind, 1 name, 2 count). */
size_t kc_model_queue_rows(const struct kc_model *m, int sort, int invert, struct kc_queue ***rows);

/* Widths of the text columns (Name, Kind, Phase) sized to their content:
 * the longest cell of rows, at least the header, at most cap (0: none). */
void kc_text_col_widths(struct kc_task *const *rows, size_t n, int cap, int *name, int *kind,
			int *phase);

/* Output of --once. */
void kc_print_json(const struct kc_model *m, FILE *out);
void kc_print_table(const struct kc_model *m, FILE *out, int ascii);

/* Formatting: "1.23s", "450us", "-" for 0 when dash. */
void kc_fmt_dur(uint64_t ns, char *out, size_t cap);

/* --- terminal UI (tui.c) --- */
struct kc_tui_status {
	const char *conn;   /* "CONNECTED 127.0.0.1:6669", "RECONNECTING IN 2s (...)" */
	const char *replay; /* NULL, or "REPLAY x1.0 frame 10/200 [PAUSED]" */
	int replay_paused;
};
enum kc_key_result {
	KC_KEY_NONE = 0,
	KC_KEY_QUIT,
	KC_KEY_PAUSE, /* space */
	KC_KEY_WATCH, /* details opened: watch kc_tui_watch_id() */
	KC_KEY_UNWATCH,
	KC_KEY_STEP,	/* replay: '.' */
	KC_KEY_FASTER,	/* replay: '+' */
	KC_KEY_SLOWER,	/* replay: '-' */
	KC_KEY_REQUEST, /* a drill-down view wants data: send kc_tui_request() */
};
int kc_tui_start(int ascii, int colors);
void kc_tui_stop(void);
void kc_tui_draw(struct kc_model *m, const struct kc_tui_status *st);
/* Reads pending keys up to the first one that needs the caller and returns
 * it; KC_KEY_NONE once no key is left. */
enum kc_key_result kc_tui_keys(struct kc_model *m);
uint64_t kc_tui_watch_id(void);
/* The command line (newline included) the current view needs from the
 * server, refreshed while it is shown: a page of a queue's messages or one
 * message. 0 when the view needs none. */
size_t kc_tui_request(char *out, size_t cap);

#endif
