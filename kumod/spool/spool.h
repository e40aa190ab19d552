/* SPDX-License-Identifier: Apache-2.0 */
/* Durable message spool: KumoMTA's two spools ("data" and "meta"), one file
 * per message in each, written temp -> fsync -> rename -> fsync(dir) off the
 * loop thread. Concurrent stores share one batch (group commit): the flusher
 * takes every pending store, writes and fsyncs the files, renames them and
 * fsyncs each directory once for the batch, then completes every store.
 * Files are self-validating (kumod/proto/spool_record.h); a torn or corrupt
 * file is moved into <path>/quarantine/ and logged, never loaded.
 * Owner: the spool keeps a message reference while an operation is in
 * flight. All callbacks run on the loop thread.
 * Callers: kumod/smtp (reception), kumod/queue (requeue, removal, recovery),
 * kumod/lua (kumo.define_spool). */
#ifndef KUMOD_SPOOL_SPOOL_H
#define KUMOD_SPOOL_SPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct message;

struct spool_config {
	const char *data_path; /* created (mkdir -p) when missing */
	const char *meta_path;
	int flush; /* 1: fsync before completing (default); 0: rename only */
};

/* Opens (creates) both spools; only one spool pair per process. Returns 0
 * or -errno with a one-line reason in err. */
int spool_open(uv_loop_t *loop, const struct spool_config *cfg, char *err, size_t errlen);
int spool_is_open(void);

/* err: 0, or -errno (-ENOSPC, -EIO, ...) when nothing was made durable. */
typedef void (*spool_cb)(void *ctx, int err);

/* Stores data and meta of m (sender, recipients, meta object, created time,
 * the queue fields in m->meta). cb runs once both files are durable (flush)
 * or renamed (no flush). */
void spool_store(struct message *m, spool_cb cb, void *ctx);
/* Rewrites only the meta file (attempt count, due time, meta changes). */
void spool_update_meta(struct message *m, spool_cb cb, void *ctx);
/* Removes both files (async; errors logged). cb may be NULL. */
void spool_remove(const char *id, spool_cb cb, void *ctx);

/* Enumerates the meta spool on the thread pool and loads each message
 * (meta and data) that validates; for each one fn(m, ctx) runs on the loop
 * thread with a reference the callee must take if it keeps m. Corrupt or
 * orphaned files are quarantined and counted. done(ctx, loaded, quarantined)
 * runs last. */
void spool_recover(void (*fn)(struct message *m, void *ctx),
		   void (*done)(void *ctx, size_t loaded, size_t quarantined), void *ctx);

/* Waits for in-flight operations (bounded) and closes. */
void spool_close(void);

struct spool_stats {
	uint64_t stored, removed, updated, errors, quarantined;
	uint64_t batches, batch_msgs_max;
	uint64_t pending;
};
void spool_get_stats(struct spool_stats *st);

#endif
