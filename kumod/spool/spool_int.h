/* SPDX-License-Identifier: Apache-2.0 */
/* Spool internals shared by spool.c (the flusher: stores, updates, removes,
 * quarantine) and spool_recover.c (enumeration, file validation, the meta
 * JSON shape). Never included from outside kumod/spool/ (the unit tests'
 * fault injection is the one exception). */
#ifndef KUMOD_SPOOL_SPOOL_INT_H
#define KUMOD_SPOOL_SPOOL_INT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/buf.h"
#include "spool/message.h"
#include "spool/spool.h"

/* The two spools; index into spool__root[] and friends. */
enum spool_which {
	SPOOL_DATA = 0,
	SPOOL_META = 1,
};

/* Files live in <root>/<bucket>/<id>; the bucket is the id's first 8 hex
 * characters (the top 32 bits of its 48-bit millisecond timestamp), so one
 * bucket covers 65.5 s of ids and a batch of new messages touches one
 * directory per spool. */
#define SPOOL_BUCKET_LEN 8
#define SPOOL_REL_MAX (SPOOL_BUCKET_LEN + 1 + MESSAGE_ID_LEN + 1)
/* Any "<bucket>/<name>" (a misnamed file) or "quarantine/<name>.<n>". */
#define SPOOL_NAME_MAX 288

enum spool_op_kind {
	SPOOL_OP_STORE,	 /* data + meta */
	SPOOL_OP_UPDATE, /* meta only, the message must still exist */
	SPOOL_OP_REMOVE,
	SPOOL_OP_QUARANTINE,	  /* revalidate a message (by id) and move it aside */
	SPOOL_OP_QUARANTINE_FILE, /* move one misnamed file aside */
	SPOOL_OP_PRUNE,		  /* rmdir an old bucket if empty */
};

/* One queued operation; owned by the flusher from submission to completion. */
struct spool_op {
	struct spool_op *next;
	enum spool_op_kind kind;
	uint64_t seq; /* unique temp-file suffix */
	char id[MESSAGE_ID_LEN + 1];
	struct message *m; /* store/update: one reference */
	char *meta;	   /* store/update: serialized meta JSON */
	size_t meta_len;
	const char *data; /* store: view of m->data, unchanged until completion */
	size_t data_len;
	struct message_spill *spill; /* store: the body bytes after data (LocalDisk) */
	spool_cb cb;
	void *ctx;
	uint64_t submit_ns;
	int err;	  /* 0 or -errno */
	const char *what; /* static name of the failed step */
	/* worker state; the Writing shards touch only index [their spool] */
	int werr[2];
	const char *wwhat[2];
	unsigned char tmp[2];	  /* temp file exists, per spool */
	unsigned char visible[2]; /* renamed into place (store rollback) */
	/* quarantine / prune only (1 KiB: not carried by every store, of
	 * which thousands may be pending after a large inject) */
	struct spool_op_aside {
		enum spool_which which;
		char rel[SPOOL_NAME_MAX]; /* file or bucket relative to the root */
		char reason[160];	  /* why (filled in by the flusher's revalidation) */
		char moved_to[2][SPOOL_NAME_MAX];
		unsigned char moved[2];
	} * q;
	unsigned char leftover; /* a data file without meta file was removed */
};

/* Immutable after spool_open (read by worker threads). */
extern int spool__root[2];
extern const char *spool__path[2];
extern enum spool_kind spool__kind;

/* Queues an op for the flusher (loop thread). Quarantine ops complete
 * through spool__quarantine_done(). */
void spool__submit(struct spool_op *op);
struct spool_op *spool__op_new(enum spool_op_kind kind, const char *id);
void spool__quarantine_done(struct spool_op *op);
/* 1 when id was stored by this process since spool_open (recovery skips it). */
int spool__stored_here(const char *id);
void spool__recovery_finished(void);
int spool__recovery_active(void);
uv_loop_t *spool__loop(void);
/* uv_queue_work on the spool's loop; held back while the spool opens
 * (after(req, UV_ECANCELED) when the open fails or the spool closed). */
void spool__queue_work(uv_work_t *req, uv_work_cb work, uv_after_work_cb after);
struct task *spool__task(void);
/* Recovery holds the spool open while it runs; spool_close waits for it. */
void spool__hold(int delta);

/* "<bucket>/<id>" */
void spool__rel_path(char out[SPOOL_REL_MAX], const char *id);
/* Bucket name of the current time ("" when the clock is unusable). */
void spool__bucket_now(char out[SPOOL_BUCKET_LEN + 1]);

/* Meta JSON (loop thread): NULL with *why set when m cannot be stored. */
char *spool__meta_encode(const struct message *m, size_t *len, const char **why);
/* spool_close: closes the deferred spooling timer (spool_defer.c). */
void spool__defer_close(void);
/* Worker threads: reads and validates both files of id. Returns 0 and a new
 * message, or a negative errno with a reason ("meta file: checksum
 * mismatch"); -ENOENT when the meta file does not exist. */
int spool__load(const char *id, struct message **out, char *why, size_t whylen);
/* Reads a whole file (at most max bytes) relative to dirfd. */
int spool__read_file(int dirfd, const char *rel, size_t max, struct buf *out);
/* Worker threads, either kind: the stored record of id in one spool
 * (-ENOENT when absent), and whether it exists. */
int spool__fetch(enum spool_which which, const char *id, size_t max, struct buf *out);
int spool__exists(enum spool_which which, const char *id);
/* Records the first failure of op (returns err). */
int spool__op_fail(struct spool_op *op, int err, const char *what);

/* The RocksDB kind (spool_rocks.c). Open and close run on the loop thread;
 * the rest on the flusher's lane or recovery's worker. */
int spool__rocks_open(const char *const paths[2], const struct spool_rocks_params *const p[2],
		      int flush, char *err, size_t errlen);
void spool__rocks_close(int flush_memtables);
/* One batch, every op kind: data puts (one synced write), meta puts and
 * deletes (one synced write), data deletes (unsynced), then quarantine
 * moves. *syncs counts the synced writes (WAL syncs). */
void spool__rocks_commit(struct spool_op **ops, size_t n, uint64_t *syncs);
int spool__rocks_get(enum spool_which which, const char *key, size_t klen, size_t max,
		     struct buf *out);
int spool__rocks_exists(enum spool_which which, const char *key, size_t klen);
struct spool_rocks_iter;
struct spool_rocks_iter *spool__rocks_iter_new(enum spool_which which);
int spool__rocks_iter_next(struct spool_rocks_iter *i, char *key, size_t cap, size_t *klen);
void spool__rocks_iter_free(struct spool_rocks_iter *i);
/* The value at the key iter_next returned (valid until the next move). */
const char *spool__rocks_iter_value(struct spool_rocks_iter *i, size_t *len);
/* A merge walk (keys in order, quarantined ones skipped; not mixed with
 * iter_next): 3 with the next key below key (copied like iter_next's;
 * call again), 1 when the iterator is on key itself (its value readable;
 * the next call steps past it), 2 when key is not there (the iterator
 * waits on the next greater key), 0 at the end, <0 on a read error. key
 * NULL: every remaining key comes out as 3. */
int spool__rocks_iter_skip_below(struct spool_rocks_iter *i, const char *key, size_t klen,
				 char *skipped, size_t cap, size_t *sklen);
/* Tests and `kumod --spool-debug`: raw bytes under key, synced. */
int spool__rocks_put_raw(enum spool_which which, const char *key, const void *val, size_t len);

/* Fault injection for the unit tests: the nth (1-based) call of syscall
 * ("write", "fdatasync", "rename", "fsync_dir") fails with err. */
void spool__inject_fault(const char *syscall, unsigned nth, int err);
int spool__fault(const char *syscall);

/* spool_space.c: takes the thresholds of cfg (spool_open). */
void spool__space_configure(const struct spool_config *cfg);

#endif
