/* SPDX-License-Identifier: Apache-2.0 */
/* Durable message spool: KumoMTA's two spools ("data" and "meta"). Kind
 * LocalDisk (the default): one file per message in each, written temp ->
 * fsync -> rename -> fsync(dir) off the loop thread. Kind RocksDB: one
 * database per spool, one synced WriteBatch per spool per batch
 * (spool_rocks.c); the interface below is the same for both. Concurrent stores share one batch
 * (group commit): the flusher takes every pending store, writes and fsyncs the files, renames them
 * and fsyncs each directory once for the batch, then completes every store. Files are
 * self-validating (kumod/proto/spool_record.h); a torn or corrupt file is moved into
 * <path>/quarantine/ and logged, never loaded. Layout, format and the durability contract:
 * docs/spool.md. Owner: the spool keeps a message reference while an operation is in flight. All
 * callbacks run on the loop thread. Callers: kumod/smtp (reception), kumod/queue (requeue, removal,
 * recovery), kumod/lua (kumo.define_spool). */
#ifndef KUMOD_SPOOL_SPOOL_H
#define KUMOD_SPOOL_SPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct message;

/* The storage kind of both spools (KumoMTA's define_spool `kind`). */
enum spool_kind {
	SPOOL_KIND_LOCALDISK = 0, /* one file per message (the default) */
	SPOOL_KIND_ROCKSDB = 1,	  /* one RocksDB database per spool path */
};

/* KumoMTA's `rocks_params` that kumod applies (RocksDB's C API); -1 leaves
 * RocksDB's own default. spool_rocks_params_init sets KumoMTA's defaults. */
struct spool_rocks_params {
	int64_t increase_parallelism;
	int64_t optimize_level_style_compaction; /* memtable budget, bytes */
	int64_t optimize_universal_style_compaction;
	int paranoid_checks; /* 0 (KumoMTA's default) */
	int compression;     /* rocksdb_*_compression; Snappy */
	int64_t compaction_readahead_size;
	int level_compaction_dynamic_level_bytes; /* 0 */
	int64_t max_open_files;
	int64_t write_buffer_size;
	int64_t level0_stop_writes_trigger;
	int log_level; /* 0 Debug .. 5 Header; 1 (Info) */
	int64_t memtable_huge_page_size;
	uint64_t log_file_time_to_roll_s;  /* 1 day */
	uint64_t obsolete_files_period_us; /* 6 hours */
};
void spool_rocks_params_init(struct spool_rocks_params *p);
/* RocksDB's number for a KumoMTA compression name ("None", "Snappy", "Zlib",
 * "Bz2", "Lz4", "Lz4hc", "Zstd"), or -1. */
int spool_rocks_compression(const char *name);
/* RocksDB's info log level for "Debug", "Info", "Warn", "Error", "Fatal",
 * "Header", or -1. */
int spool_rocks_log_level(const char *name);
/* For a KumoMTA rocks_params key kumod does not apply: why (a sentence);
 * NULL for every other key. */
const char *spool_rocks_refused_key(const char *key);

/* A free-space threshold (KumoMTA's MinFree): a percentage of the file
 * system (percent = 1, value 0..100) or an absolute count (bytes or
 * inodes). All zero: no minimum. */
struct spool_min_free {
	uint64_t value;
	int percent;
};

struct spool_config {
	const char *data_path; /* created (mkdir -p) when missing */
	const char *meta_path;
	int flush; /* 1: fsync before completing (default); 0: rename only */
	/* With flush: make each batch durable with one syncfs() per file system
	 * instead of one fdatasync per file and one fsync per directory. Much
	 * faster on ext4 (one cache flush per batch instead of one per file),
	 * but it also waits for every other dirty file on that file system: for
	 * spools on their own file system. Default 0. */
	int sync_fs;
	/* LocalDisk (0, the default) or RocksDB; both spools share the kind.
	 * RocksDB ignores sync_fs (its WAL sync is the one flush per batch). */
	enum spool_kind kind;
	const struct spool_rocks_params *rocks[2]; /* data, meta; NULL: defaults */
	/* Below these new messages are refused (spool_space_check). */
	struct spool_min_free data_min_free_space, data_min_free_inodes;
	struct spool_min_free meta_min_free_space, meta_min_free_inodes;
};

/* Opens (creates) both spools; only one spool pair per process. Returns 0
 * or -errno with a one-line reason in err. A path holding a spool of the
 * other kind is refused (-EEXIST, the path named in err). LocalDisk opens
 * before returning; RocksDB checks the directories, then opens its
 * databases on the thread pool (the write-ahead log replay grows with the
 * spool): spool_is_open() is 1 at once, operations and recovery queue until
 * the open is done (spool_opening(); the flusher task's phase "Opening"), and
 * when it fails every queued and later operation fails with its error and
 * the spool_on_open_failure hook runs once with the reason. */
int spool_open(uv_loop_t *loop, const struct spool_config *cfg, char *err, size_t errlen);
int spool_is_open(void);
int spool_opening(void);
void spool_on_open_failure(void (*fn)(const char *err));

/* err: 0, or -errno (-ENOSPC, -EIO, ...) when nothing was made durable. */
typedef void (*spool_cb)(void *ctx, int err);

/* Stores data and meta of m (sender, recipients, meta object, created time,
 * m->attempts and m->due_ms). cb runs once both files are durable (flush)
 * or renamed (no flush); never from inside the call. m->data must not change
 * until cb ran (the flusher writes it from a worker thread without a copy).
 * A message without recipient or with a non-UTF-8 sender or recipient fails
 * with -EINVAL. On any error neither file is visible. For new messages only:
 * the data file is written once; later changes go through spool_update_meta. */
void spool_store(struct message *m, spool_cb cb, void *ctx);
/* Rewrites only the meta file (attempt count, due time, meta changes).
 * -ENOENT when the message is no longer in the spool (never resurrected). */
void spool_update_meta(struct message *m, spool_cb cb, void *ctx);
/* Removes both files (async; errors logged; -ENOENT when neither file
 * existed). cb may be NULL. */
void spool_remove(const char *id, spool_cb cb, void *ctx);

/* Deferred spooling (KumoMTA's deferred_spool; docs/spool.md, "Deferred
 * spooling"): the caller's explicit choice to acknowledge m without a spool
 * write. The spool must be open, as for spool_store. m is checked as
 * spool_store would check it (a message it would refuse, -EINVAL for an
 * invalid id, no recipient or a non-UTF-8 address, goes through spool_store
 * and fails there); otherwise m is marked spool_deferred and cb(ctx, 0)
 * runs on a later loop iteration (never from inside the call; at shutdown,
 * once the loop's handles are closed, m takes the durable path instead). The message then exists
 * only in memory: a crash or kill -9 loses it. Whoever keeps it beyond its first attempt calls
 * spool_save_deferred; whoever ends it calls spool_discard. */
void spool_store_deferred(struct message *m, spool_cb cb, void *ctx);
/* Writes a deferred message to the spool now (data and meta, as
 * spool_store) because it must stay: why names the cause for the trace and
 * the timeline ("TransientFailure", "Shutdown", ...). Returns 1 when a save
 * started, 0 when m is not deferred or a save is already in flight, -ENOENT
 * without an open spool (logged: the message stays in memory only). done
 * (may be NULL) runs on the loop thread after the save, err 0 or -errno;
 * on error m stays deferred (a later spool_save_deferred tries again). */
int spool_save_deferred(struct message *m, const char *why,
			void (*done)(struct message *m, int err));
/* The message left the system (delivered, bounced, expired): removes its
 * spool files (spool_remove); nothing for a deferred message never written;
 * after the save for one whose save is in flight. Marks m spool_gone. */
void spool_discard(struct message *m);

/* A temporary file for a body streamed during reception (docs/spool.md,
 * "Streamed bodies"): unnamed (O_TMPFILE, else created and unlinked at once)
 * in the data spool's new/ directory, so it is on the spool's file system
 * and a crash leaves nothing that recovery could take for mail. Returns an
 * fd open for reading and writing (the caller owns it; wrap it in a
 * message_spill), -ENOTSUP for the RocksDB kind (bodies stay in memory),
 * -ENOENT without a spool, or another -errno (-EMFILE, -ENOSPC). One
 * openat on the calling (loop) thread. A message carrying a spill is stored
 * by copying the file into its data record (spool_store). */
int spool_spill_open(void);

/* Reads the body of a shrunk message (message_shrink_data) back from the
 * data spool on the thread pool, either kind. cb(ctx, err, why) runs on the
 * loop thread: err 0 and m's body restored (or left alone when it was
 * already resident); -EBADMSG when the data record was missing or corrupt
 * and the message was quarantined as recovery does (it is no longer in the
 * spool); -ENOENT when neither file exists any more; another -errno (-EIO,
 * -EMFILE, ...) for a read that may succeed later (the message stays
 * spooled). why names the reason. Traced as spool_reload /
 * spool_reload_failed with the duration. */
typedef void (*spool_load_cb)(void *ctx, int err, const char *why);
void spool_load_data(struct message *m, spool_load_cb cb, void *ctx);

/* Enumerates the meta spool on the thread pool and loads each message
 * (meta and data) that validates; for each one fn(m, ctx) runs on the loop
 * thread with a reference the callee must take if it keeps m. Corrupt or
 * orphaned files are quarantined and counted. done(ctx, loaded, quarantined)
 * runs last. Call once after spool_open (stores may run meanwhile: messages
 * stored by this process are not enumerated again); oldest messages first,
 * in chunks of at most 256 messages or 32 MiB per loop iteration. */
void spool_recover(void (*fn)(struct message *m, void *ctx),
		   void (*done)(void *ctx, size_t loaded, size_t quarantined), void *ctx);

/* Closes without blocking the loop: spool_is_open() is 0 at once, new
 * operations are refused (panic), queued and in-flight ones still complete
 * (their callbacks run; the pending work keeps the loop alive), a running
 * recovery stops after its current chunk, and the directories and locks are
 * released after the last completion. */
void spool_close(void);

/* 0 while both spools' file systems have the configured free space and
 * inodes; -ENOSPC and a one-line reason (spool, path, what is short, the
 * minimum) otherwise. Evaluated with fstatvfs at most once a second; the
 * change to and from short is logged (ERROR / INFO). 0 without a spool. */
int spool_space_check(char *reason, size_t len);

/* Free space of a spool's file system as of the last check (0 = data,
 * 1 = meta): 0, or -ENOENT without a spool, -EIO when fstatvfs failed. */
struct spool_space {
	uint64_t space_bytes, inodes;
	unsigned space_pct, inodes_pct;
	int valid;
};
int spool_space_get(int which, struct spool_space *out);

struct spool_stats {
	uint64_t stored, removed, updated, errors, quarantined;
	uint64_t batches, batch_msgs_max;
	uint64_t pending;
	uint64_t file_syncs, dir_syncs, fs_syncs; /* fdatasync, directory fsync, syncfs */
};
void spool_get_stats(struct spool_stats *st);

/* The current (or last) recovery: active while it runs, then the final
 * counts and its duration. */
struct spool_recovery_stats {
	int active;
	uint64_t loaded, quarantined, elapsed_ms;
};
void spool_recovery_get_stats(struct spool_recovery_stats *st);

#endif
