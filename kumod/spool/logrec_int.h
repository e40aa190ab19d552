/* SPDX-License-Identifier: Apache-2.0 */
/* Log-record internals shared by logrec.c (the loop side: configuration,
 * record formatting, the producer end of the queue, reporting) and
 * logrec_writer.c (the writer thread: segments, zstd, rolling). Never
 * included from outside kumod/spool/ (the unit tests' fault injection is the
 * one exception). */
#ifndef KUMOD_SPOOL_LOGREC_INT_H
#define KUMOD_SPOOL_LOGREC_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* One formatted record: a JSON line ending in '\n'. Allocated by the loop
 * side, freed by the writer once the line is in a segment (or lost). */
struct logrec_item {
	struct logrec_item *next;
	unsigned file; /* index in the writer's files */
	size_t len;
	char line[];
};

/* The writer's phase, shown on the task by the loop side. */
enum logrec_phase {
	LOGREC_PHASE_IDLE = 0,
	LOGREC_PHASE_WRITING,
	LOGREC_PHASE_ROLLING,
};

/* Something the writer did that the loop side reports (tracepoints and the
 * diagnostic log are loop-thread only). */
enum logrec_note_kind {
	LOGREC_NOTE_OPEN,
	LOGREC_NOTE_CLOSE,
	LOGREC_NOTE_ERROR,
};

struct logrec_note {
	struct logrec_note *next;
	enum logrec_note_kind kind;
	const char *what; /* static: close reason or failed operation */
	int err;	  /* ERROR: negative errno */
	uint64_t records, bytes_in, bytes_out, lost;
	char path[];
};

/* Counters the writer adds to the shared totals after each batch. */
struct logrec_counts {
	uint64_t written, lost, errors, segments, bytes_in, bytes_out;
};

/* At most this many unreported notes are kept; more are counted. */
#define LOGREC_NOTES_MAX 256

struct logrec_seg; /* writer-thread private: the open segment of a file */

/* One output of a logger: log_dir itself (files[0]) or a per_record
 * directory and/or suffix. Set before the thread starts. */
struct logrec_file {
	char *dir;
	char *suffix; /* appended to segment names, or NULL */
	char *header; /* per_record segment_header, or NULL */
	struct logrec_seg *seg;
};

/* One per configure_local_logs call. Shared between the loop thread and the
 * writer thread. The settings are
 * written before the thread starts and read-only while it runs; everything
 * below `mu` is guarded by it, except `phase` (atomic). */
struct logrec_writer {
	char *log_dir;
	uint64_t max_file_size;
	uint64_t max_segment_ns; /* 0: no time-based roll */
	int level;		 /* 0: plain text */
	size_t back_pressure;
	struct logrec_file *files; /* files[0]: log_dir, no suffix */
	size_t nfiles;
	struct logrec_counts delta; /* writer thread only: counts of the batch */

	pthread_mutex_t mu;
	pthread_cond_t wake; /* writer: records queued or stop */
	pthread_cond_t room; /* producer: pending dropped below back_pressure */
	struct logrec_item *head, *tail;
	size_t pending; /* queued plus taken by the writer but not yet written */
	int stop;
	struct logrec_note *notes, *notes_tail;
	size_t nnotes;
	uint64_t notes_dropped;
	struct logrec_counts total;

	int phase; /* enum logrec_phase; __atomic access */
	pthread_t thread;
	int started;
};

/* Initialises the locks, the compressors and starts the thread. 0 or
 * -errno with a reason in err. On failure nothing is left to free but
 * w->log_dir and w->files (the caller's). */
int logrec__writer_start(struct logrec_writer *w, char *err, size_t errlen);
/* Asks the writer to drain, close its segment and exit, and joins it. */
void logrec__writer_stop(struct logrec_writer *w);
/* After stop: frees unreported notes and destroys the locks. */
void logrec__writer_destroy(struct logrec_writer *w);

/* Unit tests: the nth..nth+count-1 calls (1-based, counted from now) of op
 * ("open" or "write") in the writer fail with err (a positive errno). */
void logrec__inject_fault(const char *op, unsigned nth, unsigned count, int err);

#endif
