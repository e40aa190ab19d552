/* SPDX-License-Identifier: Apache-2.0 */
/* The mail catcher (kumod extension, used by sink/sink.lua): captured
 * messages appended to segment files plus an append-only index of
 * fixed-field records that survives restarts, with a retention cap by count and bytes (oldest
 * dropped first); served over the HTTP listener as a Mailpit-style JSON API
 * (list, get, raw, delete, search, long-poll wait, per-test tags, link and
 * code extraction). Memory holds one small entry per stored message; the
 * summaries live in the index file and are read on the thread pool, as are
 * all message files, so the loop never blocks on disk.
 * Owns: its store and its waiters. Callers: kumod/lua (start, capture),
 * kumod/ctl/http_api.c (routes). */
#ifndef KUMOD_CTL_CATCHER_H
#define KUMOD_CTL_CATCHER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct uv_loop_s;
struct message;
struct http_conn;
struct http_request;

struct catcher_config {
	const char *dir;	/* created if missing: DIR/index.v2, DIR/seg/NNNNNNNN.seg */
	uint64_t max_messages;	/* 0 = unlimited */
	uint64_t max_bytes;	/* sum of message sizes; 0 = unlimited */
	const char *ui_dir;	/* NULL: share/catcher beside the binary */
	uint64_t segment_bytes; /* a segment file rolls beyond this; 0: 64 MiB */
};

/* Opens (or creates) the store and replays its index, compacting it when
 * more than half of it is deleted records. Once per process. Returns 0 or
 * -errno with a message in err. */
int catcher_start(struct uv_loop_s *loop, const struct catcher_config *cfg, char *err,
		  size_t errlen);
/* 1 once catcher_start succeeded. */
int catcher_enabled(void);
/* Queues m for storage (written on the thread pool; listed, searchable and
 * waking waiters once written). id_out gets its catcher id (the message
 * id). Returns 0, or -ENOTCONN when the catcher is not started. */
int catcher_capture(const struct message *m, char *id_out, size_t idlen);
/* Stored messages, their bytes, and the effective settings line. */
void catcher_stats(uint64_t *count, uint64_t *bytes);

/* The sink's fault plan (see sink/README.md): validated, then replaces
 * the current one (plan stolen on success; NULL clears). Works without
 * catcher_start. Returns 0 or -EINVAL with the reason in err. */
int catcher_faults_set(json_t *plan, char *err, size_t errlen);
/* The current plan (borrowed; NULL when none), its version (changes with
 * every set) and the seconds since it was set (rules' time windows). */
json_t *catcher_faults_get(uint64_t *version, double *age_s);

/* The HTTP API under /api/v1/ (GET, DELETE), the event stream
 * /api/v1/events and the UI (/ and /ui/): see sink/README.md. */
void catcher_http_handle(struct http_conn *hc, struct http_request *req);

#endif
