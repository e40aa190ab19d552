/* SPDX-License-Identifier: Apache-2.0 */
/* Log records (kumo.configure_local_logs): KumoMTA-compatible JSON lines,
 * one per event (Reception, Delivery, TransientFailure, Bounce, Expiration,
 * Rejection, AdminBounce...), written by a writer thread into segment files
 * under log_dir (zstd-compressed by default, plain text as an option),
 * rolled by max_segment_duration and max_file_size. The loop thread only
 * formats and enqueues; a bounded queue gives back-pressure (the enqueue
 * waits, traced and counted) instead of unbounded memory.
 * Owns: per logger (one per configure_local_logs call), its writer thread,
 * queue, open segments (one per per_record file) and "log_writer" task; the
 * compiled per_record templates. Every function here is for the loop
 * thread only (the task registry and the diagnostic log are loop-side
 * state: the writer threads never call them, the loop side reports for
 * them).
 * Callers: kumod/smtp, kumod/queue, kumod/dispatch, kumod/lua, kumod/main.c. */
#ifndef KUMOD_SPOOL_LOGREC_H
#define KUMOD_SPOOL_LOGREC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct message;

/* One per_record entry: settings of a record type (or "Any", for the types
 * without an entry of their own; a type's entry replaces Any wholesale). */
struct logrec_per_record {
	const char *type;	    /* "Reception", ... or "Any" (logrec_record_types) */
	const char *log_dir;	    /* NULL: the logger's log_dir; created when missing */
	const char *suffix;	    /* appended to segment file names, or NULL */
	int enable;		    /* 0: records of this type are not logged */
	const char *tmpl;	    /* Jinja-subset template (proto/template.h), or NULL: JSON */
	const char *segment_header; /* written at the start of each segment, or NULL */
};

/* The record types per_record accepts, NULL-terminated ("Any" last). */
extern const char *const logrec_record_types[];
/* The index of type in logrec_record_types, or -1. */
int logrec_record_type_index(const char *type);

struct logrec_config {
	const char *log_dir;		  /* created (mkdir -p) when missing */
	uint64_t max_segment_duration_ms; /* 0: no time-based roll */
	uint64_t max_file_size;		  /* bytes of uncompressed JSON; 0: default 1e9 */
	/* zstd level; 0 = plain text. NB KumoMTA's compression_level=0 means
	 * "zstd default (3)": the Lua binding maps it. */
	int compression_level;
	const char *const *headers; /* header names to capture ("Subject", "X-*"...) */
	size_t nheaders;
	const char *const *meta; /* meta keys to capture ("*" or "prefix*" too) */
	size_t nmeta;
	size_t back_pressure; /* max queued records; 0: default 128000 */
	const struct logrec_per_record *per_record;
	size_t nper_record;
	/* An event called with the message of each record this logger would
	 * write (records without a message, Rejection, are not filtered): true
	 * logs it; false, an error or no handler leaves it out. NULL: none. */
	const char *filter_event;
};

/* The filter_event call, installed by the policy layer: 1 to log, 0 not;
 * *why says which ("false", "error", "no handler"). Without one, a logger
 * with a filter_event logs nothing that has a message. */
typedef int (*logrec_filter_fn)(const char *event, const struct message *m, const char **why);
void logrec_set_filter(logrec_filter_fn fn);

struct bounce_classifier;
/* Installs the bounce classifier (takes ownership; NULL removes it): it
 * fills bounce_classification of Bounce, TransientFailure, Expiration,
 * AdminBounce, OOB, Feedback and Rejection records. */
void logrec_set_classifier(struct bounce_classifier *bc);

/* Adds a logger: creates log_dir (and the per_record directories), compiles
 * the templates, starts its writer thread and task. Several loggers run side
 * by side (up to 8), each record going to every logger that enables it; a
 * directory already used by another logger is refused (-EEXIST). Returns 0
 * or -errno with a one-line reason in err (a template error names the type,
 * line and column). */
int logrec_configure(const struct logrec_config *cfg, char *err, size_t errlen);
int logrec_enabled(void);

/* The response part of a record (KumoMTA "response"). */
struct logrec_response {
	int code;	      /* 250, 451, ... */
	const char *enhanced; /* "2.0.0" or NULL (then a leading "x.y.z " of
				 content whose class matches code is split off) */
	const char *content;  /* reply text */
	const char *command;  /* the command that got it, or NULL */
};

/* Peer part ("peer_address": {"name", "addr"}); NULL fields are omitted. */
struct logrec_peer {
	const char *name;
	const char *addr;
};

/* Builds and enqueues one record. type: "Reception", "Delivery", ...
 * recipient may be NULL: then every recipient of m (a string for one, an
 * array for a batch). queue NULL: m's queue name from its meta, as the
 * scheduled queue computes it. site, egress_pool, egress_source may be
 * NULL. reception_protocol NULL: meta "reception_protocol". Never fails the
 * caller: when logging is not configured this is a no-op. May block while
 * back_pressure records are pending. */
void logrec_log(const char *type, const struct message *m, const char *recipient,
		const struct logrec_response *resp, const struct logrec_peer *peer,
		const char *queue, const char *site, const char *egress_pool,
		const char *egress_source, const char *reception_protocol);

/* TLS facts of the session the record is about. */
struct logrec_tls {
	const char *cipher;	      /* "TLS_AES_256_GCM_SHA384" */
	const char *protocol_version; /* "TLSv1.3" */
	const char *const *peer_subject_name;
	size_t npeer_subject_name;
};

/* Every field of a record; logrec_log() is this with the optional ones
 * NULL. All pointers are borrowed for the duration of the call. */
struct logrec_event {
	const char *type;
	const struct message *m; /* NULL for a Rejection before any message exists */
	const char *sender;	 /* used when m is NULL */
	json_t *meta;		 /* used when m is NULL: meta object to select from */
	const char *recipient;
	const struct logrec_response *resp;
	const struct logrec_peer *peer;
	const char *queue, *site, *egress_pool, *egress_source;
	const char *reception_protocol;
	const char *delivery_protocol; /* NULL: "ESMTP" when site is set, else null */
	/* NULL: unknown (omitted); Reception and Rejection fall back to the
	 * connection meta tls_cipher, tls_protocol_version, tls_peer_subject_name */
	const struct logrec_tls *tls;
	const char *source_address; /* our "ip:port" when sending, or NULL */
	const char *provider_name;  /* or NULL (omitted) */
	const char *session_id;	    /* connection UUID or NULL (omitted) */
};
void logrec_log_event(const struct logrec_event *ev);

/* The records of a received report (listener domains with log_arf or
 * log_oob), ev being the message's Reception. arf (a proto/arf.h object):
 * one Feedback record carrying it as feedback_report, in place of the
 * Reception record. Else dsn (a proto/dsn.h object): the Reception record,
 * then one OOB record per "failed" recipient entry, as KumoMTA writes it:
 * sender = the report's envelope recipient, recipient = the entry's
 * original (else final) recipient, response = the code and text of an
 * "smtp;" diagnostic (else 550, "") with the entry's Status as enhanced
 * code, peer_address.name = the Reporting-MTA, timestamp = its
 * Last-Attempt-Date (else now), size and num_attempts 0. Borrowed. */
void logrec_log_report(const struct logrec_event *ev, json_t *arf, json_t *dsn);

/* Log hooks (kumod/dispatch/loghook.c): fn sees every record (the JSON
 * object, borrowed, built as for the local logs) with its event, whether or
 * not local logs are configured. NULL removes it. */
typedef void (*logrec_hook_fn)(const struct logrec_event *ev, json_t *record);
void logrec_set_hook(logrec_hook_fn fn);

/* Loop side housekeeping: reports what the writer did since the last call
 * (segment open/close traces, write errors to the diagnostic log) and shows
 * its phase (Idle, Writing, Rolling) on the task. Cheap; also done by every
 * logrec_log() and logrec_get_stats(). Call it from a periodic timer so an
 * idle logger is reported too. */
void logrec_poll(void);

/* Flushes and closes the current segment, joins the writer (shutdown). */
void logrec_shutdown(void);

/* This node's id for "nodeid": KUMO_NODE_ID, else the id stored in
 * KUMO_NODE_ID_PATH (created there when missing), else a random UUID chosen
 * once per process. Lower-case hyphenated UUID. */
const char *logrec_nodeid(void);

struct logrec_stats {
	uint64_t written, dropped_never, waits, segments, queued;
	uint64_t errors;    /* failed open/write/compress/close operations */
	uint64_t lost;	    /* records that did not reach a file */
	uint64_t bytes_in;  /* JSON bytes handed to segments */
	uint64_t bytes_out; /* bytes written to segment files */
	uint64_t wait_ns;   /* loop time spent waiting on back-pressure */
};
void logrec_get_stats(struct logrec_stats *st);

#endif
