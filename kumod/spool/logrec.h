/* SPDX-License-Identifier: Apache-2.0 */
/* Log records (kumo.configure_local_logs): KumoMTA-compatible JSON lines,
 * one per event (Reception, Delivery, TransientFailure, Bounce, Expiration,
 * Rejection, AdminBounce...), written by a writer thread into segment files
 * under log_dir (zstd-compressed by default, plain text as an option),
 * rolled by max_segment_duration and max_file_size. The loop thread only
 * formats and enqueues; a bounded queue gives back-pressure (the enqueue
 * waits, traced and counted) instead of unbounded memory.
 * Callers: kumod/smtp, kumod/queue, kumod/dispatch, kumod/lua. */
#ifndef KUMOD_SPOOL_LOGREC_H
#define KUMOD_SPOOL_LOGREC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct message;

struct logrec_config {
	const char *log_dir;
	uint64_t max_segment_duration_ms; /* 0: no time-based roll */
	uint64_t max_file_size;		  /* bytes of uncompressed JSON; default 1 GB */
	int compression_level;		  /* zstd level; 0 = plain text */
	const char *const *headers;	  /* header names to capture ("Subject", "X-*"...) */
	size_t nheaders;
	const char *const *meta;	  /* meta keys to capture */
	size_t nmeta;
	size_t back_pressure;		  /* max queued records; default 128000 */
};

int logrec_configure(const struct logrec_config *cfg, char *err, size_t errlen);
int logrec_enabled(void);

/* The response part of a record (KumoMTA "response"). */
struct logrec_response {
	int code;		/* 250, 451, ... */
	const char *enhanced;	/* "2.0.0" or NULL */
	const char *content;	/* reply text */
	const char *command;	/* the command that got it, or NULL */
};

/* Peer part ("peer_address": {"name", "addr"}); NULL fields are omitted. */
struct logrec_peer {
	const char *name;
	const char *addr;
};

/* Builds and enqueues one record. type: "Reception", "Delivery", ...
 * recipient may be NULL (then m->recipients[0]). queue, site, egress_pool,
 * egress_source may be NULL. Never fails the caller: when logging is not
 * configured this is a no-op. */
void logrec_log(const char *type, const struct message *m, const char *recipient,
		const struct logrec_response *resp, const struct logrec_peer *peer,
		const char *queue, const char *site, const char *egress_pool,
		const char *egress_source, const char *reception_protocol);

/* Flushes and closes the current segment, joins the writer (shutdown). */
void logrec_shutdown(void);

struct logrec_stats {
	uint64_t written, dropped_never, waits, segments, queued;
};
void logrec_get_stats(struct logrec_stats *st);

#endif
