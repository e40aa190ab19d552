/* SPDX-License-Identifier: Apache-2.0 */
/* The spool flusher: one serialized lane of batched disk work on the libuv
 * thread pool (group commit). Every mutation of the spool directories
 * (store, meta update, remove, quarantine, prune) goes through the lane, so
 * recovery and the flusher never race on a file.
 *
 * A batch runs in two steps. Writing (two shards in parallel, one per
 * spool): each file goes to a unique temp file <root>/new/.tmp-<id>-<seq>
 * (O_EXCL), then every temp file of the batch is fdatasync'ed. Syncing: renames into
 * <root>/<bucket>/<id> (data before meta, so a visible meta file always has its data file), removes
 * (meta before data), quarantine moves, then one fsync per touched directory. Batch k+1 may write
 * its temp files while batch k syncs; syncs stay in submission order. With flush off both steps
 * skip every fsync.
 *
 * The RocksDB kind uses the same lane and batches, with one job per batch
 * (spool_rocks.c) instead of the two steps.
 *
 * On a failure nothing half-done stays visible: temp files are unlinked, a
 * store whose rename or directory fsync failed is rolled back (its files
 * unlinked), and its callback gets the negative errno. */
#include "spool/spool.h"
#include "spool/timeline.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/fsutil.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "ktrace.h"
#include "proto/spool_record.h"
#include "spool/message.h"
#include "spool/spool_int.h"

#define SPOOL_BATCH_MAX 4096	      /* operations per batch */
#define SPOOL_SYNC_CHUNK 64	      /* temp files open at once while syncing */
#define SPOOL_SPILL_COPY (256u << 10) /* copy buffer for a spilled body */

static const char *const spool_names[2] = {"data", "meta"};

/* Directory keys of a batch's fsync set: spool, kind, bucket number. */
enum spool_dirkind {
	SPOOL_DIR_BUCKET = 1,
	SPOOL_DIR_ROOT = 2,
	SPOOL_DIR_QUARANTINE = 3,
};

struct spool_batch {
	uv_work_t req;	   /* the Syncing step */
	uv_work_t wreq[2]; /* the Writing step: one shard per spool */
	int wpending;
	uint64_t file_syncs_w[2];
	struct spool_op **ops;
	size_t n;
	int has_writes;
	uint64_t start_ns, bytes;
	uint64_t file_syncs, dir_syncs, fs_syncs; /* written by the worker */
	uint64_t *dirs;
	size_t ndirs, capdirs;
	int dir_err[2]; /* a directory fsync (or syncfs) of that spool failed */
};

/* Set-of-ids: messages stored by this process while recovery has not
 * finished, so that recovery does not enumerate them a second time. */
struct spool_idset {
	char (*slot)[MESSAGE_ID_LEN + 1];
	size_t n, cap;
};

int spool__root[2] = {-1, -1};
const char *spool__path[2];
enum spool_kind spool__kind;

/* Buckets known to exist (the Syncing step only, so one thread at a time):
 * a direct-mapped cache that spares the mkdir per file. */
#define SPOOL_BUCKET_CACHE 64
static struct {
	uint32_t bucket;
	unsigned char valid;
} known_bucket[2][SPOOL_BUCKET_CACHE];

static struct {
	int open, closing, completing;
	uv_loop_t *loop;
	int flush, sync_fs, same_fs;
	char *path[2];
	int lock_fd[2];
	struct task *task;
	uint64_t next_seq;
	struct spool_op *head, *tail;
	size_t npending;
	struct spool_batch *writing, *wait_sync, *syncing;
	int rocks_inflight, rocks_exclusive; /* RocksDB: batches committing */
	size_t inflight;
	int holds;
	int recovery_done;
	struct spool_idset stored;
	struct spool_stats st;
	/* RocksDB: the databases open on the thread pool after spool_open
	 * returned (the listeners start meanwhile); ops and thread-pool work
	 * submitted before wait for it. open_failed: -errno once it failed
	 * (every op then fails with it; the process is told to exit). */
	int opening, open_failed;
	uv_work_t open_req;
	uint64_t open_start_ns;
	struct spool_rocks_params rocks[2];
	int has_rocks[2];
	char *open_gate; /* test hook: the open waits while this file exists */
	char open_err[512];
	struct spool_deferred *deferred, **deferred_tail;
} S = {.lock_fd = {-1, -1}};

/* Thread-pool work (recovery, body reads) queued while the spool opens. */
struct spool_deferred {
	struct spool_deferred *next;
	uv_work_t *req;
	uv_work_cb work;
	uv_after_work_cb after;
};

static void (*open_failed_hook)(const char *err);

/* --- fault injection (unit tests) ------------------------------------------ */

static const char *const fault_names[] = {"write", "fdatasync", "rename", "fsync_dir", "syncfs"};
#define NFAULTS (sizeof(fault_names) / sizeof(fault_names[0]))
static struct {
	atomic_uint calls[NFAULTS];
	unsigned nth[NFAULTS];
	int err[NFAULTS];
} faults;

void spool__inject_fault(const char *syscall, unsigned nth, int err)
{
	for (size_t i = 0; i < NFAULTS; i++) {
		if (strcmp(fault_names[i], syscall) == 0) {
			atomic_store(&faults.calls[i], 0);
			faults.nth[i] = nth;
			faults.err[i] = err;
			return;
		}
	}
	panic("%s: unknown syscall '%s'", __func__, syscall);
}

/* 0, or the injected negative errno for this call. */
int spool__fault(const char *syscall)
{
	for (size_t i = 0; i < NFAULTS; i++) {
		if (faults.nth[i] && strcmp(fault_names[i], syscall) == 0) {
			unsigned c = atomic_fetch_add(&faults.calls[i], 1) + 1;
			return c == faults.nth[i] ? faults.err[i] : 0;
		}
	}
	return 0;
}

/* --- small helpers ----------------------------------------------------------- */

static uint32_t bucket_of(const char *id)
{
	uint32_t v = 0;
	for (int i = 0; i < SPOOL_BUCKET_LEN; i++) {
		char c = id[i];
		v = v << 4 | (uint32_t)(c <= '9' ? c - '0' : c - 'a' + 10);
	}
	return v;
}

void spool__rel_path(char out[SPOOL_REL_MAX], const char *id)
{
	memcpy(out, id, SPOOL_BUCKET_LEN);
	out[SPOOL_BUCKET_LEN] = '/';
	memcpy(out + SPOOL_BUCKET_LEN + 1, id, MESSAGE_ID_LEN + 1);
}

void spool__bucket_now(char out[SPOOL_BUCKET_LEN + 1])
{
	char id[MESSAGE_ID_LEN + 1];
	message_make_id(id);
	memcpy(out, id, SPOOL_BUCKET_LEN);
	out[SPOOL_BUCKET_LEN] = 0;
}

static void tmp_name(char *out, size_t cap, const struct spool_op *op)
{
	snprintf(out, cap, "new/.tmp-%s-%016" PRIx64, op->id, op->seq);
}

static uint64_t dirkey(enum spool_which which, enum spool_dirkind kind, uint32_t bucket)
{
	return (uint64_t)which << 40 | (uint64_t)kind << 32 | bucket;
}

static void batch_add_dir(struct spool_batch *b, uint64_t key)
{
	if (b->ndirs && b->dirs[b->ndirs - 1] == key)
		return;
	if (b->ndirs == b->capdirs) {
		b->capdirs = b->capdirs ? b->capdirs * 2 : 8;
		b->dirs = xrealloc(b->dirs, b->capdirs * sizeof(*b->dirs));
	}
	b->dirs[b->ndirs++] = key;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int op_fail(struct spool_op *op, int err, const char *what)
{
	if (!op->err) {
		op->err = err;
		op->what = what;
	}
	return err;
}

int spool__op_fail(struct spool_op *op, int err, const char *what)
{
	return op_fail(op, err, what);
}

/* --- idset ------------------------------------------------------------------- */

static size_t idset_hash(const char *id)
{
	uint64_t h = 1469598103934665603ull;
	for (int i = 0; i < MESSAGE_ID_LEN; i++)
		h = (h ^ (unsigned char)id[i]) * 1099511628211ull;
	return (size_t)h;
}

static int idset_has(const struct spool_idset *s, const char *id)
{
	if (!s->cap)
		return 0;
	for (size_t i = idset_hash(id) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
		if (!s->slot[i][0])
			return 0;
		if (memcmp(s->slot[i], id, MESSAGE_ID_LEN) == 0)
			return 1;
	}
}

static void idset_put_nogrow(struct spool_idset *s, const char *id)
{
	size_t i = idset_hash(id) & (s->cap - 1);
	while (s->slot[i][0]) {
		if (memcmp(s->slot[i], id, MESSAGE_ID_LEN) == 0)
			return;
		i = (i + 1) & (s->cap - 1);
	}
	memcpy(s->slot[i], id, MESSAGE_ID_LEN + 1);
	s->n++;
}

static void idset_add(struct spool_idset *s, const char *id)
{
	if ((s->n + 1) * 2 > s->cap) {
		struct spool_idset bigger = {NULL, 0, s->cap ? s->cap * 2 : 1024};
		bigger.slot = xcalloc(bigger.cap, sizeof(*bigger.slot));
		for (size_t i = 0; i < s->cap; i++)
			if (s->slot[i][0])
				idset_put_nogrow(&bigger, s->slot[i]);
		free(s->slot);
		*s = bigger;
	}
	idset_put_nogrow(s, id);
}

static void idset_free(struct spool_idset *s)
{
	xfree(s->slot);
	s->n = s->cap = 0;
}

/* --- worker: I/O primitives ----------------------------------------------------- */

static int write_all(int fd, struct iovec *iov, int iovcnt)
{
	int injected = spool__fault("write");
	if (injected)
		return injected;
	while (iovcnt > 0) {
		ssize_t n = writev(fd, iov, iovcnt);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			iovcnt--;
		}
		if (iovcnt > 0) {
			iov->iov_base = (char *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

static int sync_file(int fd)
{
	int injected = spool__fault("fdatasync");
	if (injected)
		return injected;
	return fdatasync(fd) == 0 ? 0 : -errno;
}

static int sync_dir(enum spool_which which, const char *rel)
{
	int fd = openat(spool__root[which], rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = spool__fault("fsync_dir");
	if (!rc && fsync(fd) != 0)
		rc = -errno;
	close(fd);
	return rc;
}

static int rename_at(enum spool_which which, const char *from, const char *to)
{
	int injected = spool__fault("rename");
	if (injected)
		return injected;
	int root = spool__root[which];
	return renameat(root, from, root, to) == 0 ? 0 : -errno;
}

static int bucket_known(enum spool_which which, uint32_t bucket)
{
	return known_bucket[which][bucket % SPOOL_BUCKET_CACHE].valid &&
	       known_bucket[which][bucket % SPOOL_BUCKET_CACHE].bucket == bucket;
}

static void bucket_remember(enum spool_which which, uint32_t bucket, int exists)
{
	known_bucket[which][bucket % SPOOL_BUCKET_CACHE].bucket = bucket;
	known_bucket[which][bucket % SPOOL_BUCKET_CACHE].valid = (unsigned char)exists;
}

/* mkdir the bucket of id unless this process saw it exist already (the
 * cache spares a failing mkdir per file); a new bucket puts the root
 * directory into the fsync set. */
static int ensure_bucket(struct spool_batch *b, enum spool_which which, const char *id)
{
	char bucket[SPOOL_BUCKET_LEN + 1];
	uint32_t n = bucket_of(id);
	batch_add_dir(b, dirkey(which, SPOOL_DIR_BUCKET, n));
	if (bucket_known(which, n))
		return 0;
	memcpy(bucket, id, SPOOL_BUCKET_LEN);
	bucket[SPOOL_BUCKET_LEN] = 0;
	if (mkdirat(spool__root[which], bucket, 0750) == 0)
		batch_add_dir(b, dirkey(which, SPOOL_DIR_ROOT, 0));
	else if (errno != EEXIST)
		return -errno;
	bucket_remember(which, n, 1);
	return 0;
}

/* --- worker: the Writing step ------------------------------------------------------ */

struct open_tmp {
	struct spool_op *op;
	int fd;
};

/* The Writing step runs as two shards in parallel, one per spool (their
 * temp files live in different directories, so creates do not contend on a
 * directory lock). A shard touches only its own fields of an op: werr[w],
 * wwhat[w] and tmp[w]; write_done() merges them on the loop thread. */
static void shard_fail(struct spool_op *op, enum spool_which w, int err, const char *what)
{
	if (!op->werr[w]) {
		op->werr[w] = err;
		op->wwhat[w] = what;
	}
}

/* The data record of a store whose body was spilled during reception:
 * the resident head, then the spill file copied through a bounded buffer
 * (the CRC computed on the way), so a large body never has to be in
 * memory whole. A read error comes back as -EIO. */
static int write_spilled(struct spool_op *op, int fd)
{
	unsigned char hdr[SPOOL_RECORD_HEADER_LEN], tr[SPOOL_RECORD_TRAILER_LEN];
	uint64_t total = op->data_len + op->spill->len;
	spool_record_header(hdr, SPOOL_RECORD_DATA, op->id, total);
	uint32_t crc = spool_record_crc32(0, hdr, sizeof(hdr));
	crc = spool_record_crc32(crc, op->data, op->data_len);
	struct iovec iov[2] = {{hdr, sizeof(hdr)}, {(void *)op->data, op->data_len}};
	int rc = write_all(fd, iov, 2);
	size_t cap = SPOOL_SPILL_COPY;
	char *chunk = rc == 0 ? malloc(cap) : NULL;
	if (rc == 0 && !chunk)
		rc = -ENOMEM;
	for (uint64_t off = 0; rc == 0 && off < op->spill->len;) {
		size_t want = op->spill->len - off < cap ? (size_t)(op->spill->len - off) : cap;
		ssize_t n = pread(op->spill->fd, chunk, want, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = -EIO; /* the spill is shorter than recorded, or unreadable */
			break;
		}
		crc = spool_record_crc32(crc, chunk, (size_t)n);
		struct iovec c = {chunk, (size_t)n};
		rc = write_all(fd, &c, 1);
		off += (uint64_t)n;
	}
	free(chunk);
	if (rc == 0) {
		spool_record_trailer_crc(tr, crc);
		struct iovec t = {tr, sizeof(tr)};
		rc = write_all(fd, &t, 1);
	}
	return rc;
}

static void write_tmp(struct spool_op *op, enum spool_which which, int *fdp)
{
	char name[96];
	unsigned char hdr[SPOOL_RECORD_HEADER_LEN], tr[SPOOL_RECORD_TRAILER_LEN];
	const void *payload = which == SPOOL_DATA ? (const void *)op->data : op->meta;
	size_t len = which == SPOOL_DATA ? op->data_len : op->meta_len;

	tmp_name(name, sizeof(name), op);
	int fd = openat(spool__root[which], name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd < 0) {
		shard_fail(op, which, -errno, "create temp file");
		return;
	}
	op->tmp[which] = 1;
	*fdp = fd;
	int rc;
	if (which == SPOOL_DATA && op->spill) {
		rc = write_spilled(op, fd);
		if (rc < 0)
			shard_fail(op, which, rc, "write (spilled body)");
	} else {
		spool_record_header(
		    hdr, which == SPOOL_DATA ? SPOOL_RECORD_DATA : SPOOL_RECORD_META, op->id, len);
		spool_record_trailer(tr, hdr, payload, len);
		struct iovec iov[3] = {
		    {hdr, sizeof(hdr)}, {(void *)payload, len}, {tr, sizeof(tr)}};
		rc = write_all(fd, iov, 3);
		if (rc < 0)
			shard_fail(op, which, rc, "write");
	}
	if (rc == 0 && S.flush && !S.sync_fs)
		/* start writeback now so that the fdatasync pass finds it under way */
		sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}

static void sync_chunk(struct spool_batch *b, enum spool_which w, struct open_tmp *t, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (S.flush && !S.sync_fs && !t[i].op->werr[w]) {
			b->file_syncs_w[w]++;
			int rc = sync_file(t[i].fd);
			if (rc < 0)
				shard_fail(t[i].op, w, rc, "fdatasync");
		}
		if (close(t[i].fd) != 0)
			shard_fail(t[i].op, w, -errno, "close");
	}
}

static void unlink_tmps(struct spool_op *op)
{
	char name[96];
	tmp_name(name, sizeof(name), op);
	for (int w = 0; w < 2; w++) {
		if (op->tmp[w])
			unlinkat(spool__root[w], name, 0);
		op->tmp[w] = 0;
	}
}

static void write_shard(uv_work_t *req)
{
	struct spool_batch *b = req->data;
	enum spool_which w = req == &b->wreq[SPOOL_DATA] ? SPOOL_DATA : SPOOL_META;
	struct open_tmp t[SPOOL_SYNC_CHUNK];
	size_t nt = 0;
	for (size_t i = 0; i < b->n; i++) {
		struct spool_op *op = b->ops[i];
		if (op->err || !(op->kind == SPOOL_OP_STORE ||
				 (op->kind == SPOOL_OP_UPDATE && w == SPOOL_META)))
			continue;
		if (nt == SPOOL_SYNC_CHUNK) {
			sync_chunk(b, w, t, nt);
			nt = 0;
		}
		int fd = -1;
		write_tmp(op, w, &fd);
		if (fd >= 0)
			t[nt++] = (struct open_tmp){op, fd};
	}
	sync_chunk(b, w, t, nt);
}

/* --- worker: the Syncing step -------------------------------------------------------- */

static void commit_store(struct spool_batch *b, struct spool_op *op)
{
	char tmp[96], rel[SPOOL_REL_MAX];
	tmp_name(tmp, sizeof(tmp), op);
	spool__rel_path(rel, op->id);
	int first = op->kind == SPOOL_OP_STORE ? SPOOL_DATA : SPOOL_META;
	if (op->kind == SPOOL_OP_UPDATE && faccessat(spool__root[SPOOL_META], rel, F_OK, 0) != 0) {
		/* never resurrect a removed message as an orphan meta file */
		op_fail(op, -ENOENT, "update of a message not in the spool");
		unlink_tmps(op);
		return;
	}
	for (int w = first; w <= SPOOL_META; w++) {
		int rc = ensure_bucket(b, (enum spool_which)w, op->id);
		if (rc == 0)
			rc = rename_at((enum spool_which)w, tmp, rel);
		if (rc == -ENOENT && bucket_known((enum spool_which)w, bucket_of(op->id))) {
			/* the bucket was removed behind our back: create it again */
			bucket_remember((enum spool_which)w, bucket_of(op->id), 0);
			rc = ensure_bucket(b, (enum spool_which)w, op->id);
			if (rc == 0)
				rc = rename_at((enum spool_which)w, tmp, rel);
		}
		if (rc < 0) {
			op_fail(op, rc, rc == -ENOSPC ? "mkdir bucket or rename" : "rename");
			break;
		}
		op->tmp[w] = 0;
		op->visible[w] = 1;
	}
	if (!op->err)
		return;
	unlink_tmps(op);
	if (op->kind == SPOOL_OP_STORE && op->visible[SPOOL_DATA])
		unlinkat(spool__root[SPOOL_DATA], rel, 0);
	op->visible[SPOOL_DATA] = op->visible[SPOOL_META] = 0;
}

static void commit_remove(struct spool_batch *b, struct spool_op *op)
{
	char rel[SPOOL_REL_MAX];
	int gone = 0;
	spool__rel_path(rel, op->id);
	for (int w = SPOOL_META; w >= SPOOL_DATA; w--) {
		if (unlinkat(spool__root[w], rel, 0) == 0) {
			gone++;
			batch_add_dir(
			    b, dirkey((enum spool_which)w, SPOOL_DIR_BUCKET, bucket_of(op->id)));
		} else if (errno != ENOENT) {
			op_fail(op, -errno, "unlink");
		}
	}
	if (!gone && !op->err)
		op_fail(op, -ENOENT, "remove of a message not in the spool");
}

/* Moves rel of spool `which` into quarantine/ under its base name, with a
 * numeric suffix when that name is taken. */
static int quarantine_move(struct spool_batch *b, struct spool_op *op, enum spool_which which,
			   const char *rel)
{
	const char *base = strrchr(rel, '/') ? strrchr(rel, '/') + 1 : rel;
	char *dst = op->q->moved_to[which];
	size_t cap = sizeof(op->q->moved_to[which]);
	int root = spool__root[which];
	for (int i = 0; i < 1000; i++) {
		if (i == 0)
			snprintf(dst, cap, "quarantine/%s", base);
		else
			snprintf(dst, cap, "quarantine/%s.%d", base, i);
		int rc = renameat2(root, rel, root, dst, RENAME_NOREPLACE);
		if (rc != 0 && (errno == EINVAL || errno == ENOSYS)) {
			/* no RENAME_NOREPLACE on this file system: check, then rename */
			if (faccessat(root, dst, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
				continue;
			rc = renameat(root, rel, root, dst);
		}
		if (rc == 0) {
			op->q->moved[which] = 1;
			batch_add_dir(b, dirkey(which, SPOOL_DIR_QUARANTINE, 0));
			/* rel is always "<bucket>/<name>" */
			batch_add_dir(b, dirkey(which, SPOOL_DIR_BUCKET, bucket_of(rel)));
			return 0;
		}
		if (errno != EEXIST)
			return op_fail(op, -errno, "rename into quarantine");
	}
	return op_fail(op, -EEXIST, "rename into quarantine");
}

/* Revalidates in the lane (no store or remove can be half-way now): a
 * message that loads after all, or was removed meanwhile, is left alone. */
static void commit_quarantine(struct spool_batch *b, struct spool_op *op)
{
	char rel[SPOOL_REL_MAX];
	if (op->kind == SPOOL_OP_QUARANTINE_FILE) {
		quarantine_move(b, op, op->q->which, op->q->rel);
		return;
	}
	spool__rel_path(rel, op->id);
	int has_meta = faccessat(spool__root[SPOOL_META], rel, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
	int has_data = faccessat(spool__root[SPOOL_DATA], rel, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
	if (has_meta) {
		struct message *m = NULL;
		if (spool__load(op->id, &m, op->q->reason, sizeof(op->q->reason)) == 0) {
			message_unref(m);
			return;
		}
		quarantine_move(b, op, SPOOL_META, rel);
	} else if (has_data) {
		/* a crash leftover (written and never acknowledged, or half
		 * removed after delivery): data is renamed before meta and
		 * removed after it, so this is never an acknowledged message */
		if (unlinkat(spool__root[SPOOL_DATA], rel, 0) == 0) {
			op->leftover = 1;
			batch_add_dir(b, dirkey(SPOOL_DATA, SPOOL_DIR_BUCKET, bucket_of(op->id)));
		} else if (errno != ENOENT) {
			op_fail(op, -errno, "unlink leftover data file");
		}
		return;
	}
	if (has_data)
		quarantine_move(b, op, SPOOL_DATA, rel);
}

static void commit_prune(struct spool_batch *b, struct spool_op *op)
{
	char now[SPOOL_BUCKET_LEN + 1];
	spool__bucket_now(now);
	if (strcmp(op->q->rel, now) >= 0)
		return; /* the current bucket fills right now */
	if (unlinkat(spool__root[op->q->which], op->q->rel, AT_REMOVEDIR) == 0) {
		batch_add_dir(b, dirkey(op->q->which, SPOOL_DIR_ROOT, 0));
		uint32_t n = (uint32_t)strtoul(op->q->rel, NULL, 16);
		if (bucket_known(op->q->which, n))
			bucket_remember(op->q->which, n, 0);
	}
}

static void sync_dirs(struct spool_batch *b)
{
	if (b->ndirs)
		qsort(b->dirs, b->ndirs, sizeof(*b->dirs), cmp_u64);
	for (size_t i = 0; i < b->ndirs; i++) {
		if (i && b->dirs[i] == b->dirs[i - 1])
			continue;
		enum spool_which which = (enum spool_which)(b->dirs[i] >> 40);
		enum spool_dirkind kind = (enum spool_dirkind)(b->dirs[i] >> 32 & 0xff);
		char rel[16];
		if (kind == SPOOL_DIR_ROOT)
			snprintf(rel, sizeof(rel), ".");
		else if (kind == SPOOL_DIR_QUARANTINE)
			snprintf(rel, sizeof(rel), "quarantine");
		else
			snprintf(rel, sizeof(rel), "%08" PRIx32, (uint32_t)b->dirs[i]);
		b->dir_syncs++;
		int rc = sync_dir(which, rel);
		if (rc < 0 && !b->dir_err[which])
			b->dir_err[which] = rc;
	}
}

/* sync_fs mode: one syncfs() per file system covers the data of every
 * file, the inodes and the directory entries of the batch. */
static void sync_filesystems(struct spool_batch *b)
{
	for (int w = SPOOL_DATA; w <= SPOOL_META; w++) {
		if (w == SPOOL_META && S.same_fs) {
			b->dir_err[SPOOL_META] = b->dir_err[SPOOL_DATA];
			break;
		}
		b->fs_syncs++;
		int rc = spool__fault("syncfs");
		if (!rc && syncfs(spool__root[w]) != 0)
			rc = -errno;
		b->dir_err[w] = rc;
	}
}

/* A directory fsync failed: nothing in that spool is known durable, so
 * every store of the batch touching it is rolled back and fails. */
static void apply_dir_errors(struct spool_batch *b)
{
	for (size_t i = 0; i < b->n; i++) {
		struct spool_op *op = b->ops[i];
		if (op->err)
			continue;
		int err = 0;
		if (op->kind == SPOOL_OP_STORE)
			err = b->dir_err[SPOOL_DATA] ? b->dir_err[SPOOL_DATA]
						     : b->dir_err[SPOOL_META];
		else if (op->kind == SPOOL_OP_UPDATE)
			err = b->dir_err[SPOOL_META];
		else if (op->kind == SPOOL_OP_REMOVE)
			err = b->dir_err[SPOOL_META] ? b->dir_err[SPOOL_META]
						     : b->dir_err[SPOOL_DATA];
		if (!err)
			continue;
		op_fail(op, err, S.sync_fs ? "syncfs" : "fsync directory");
		if (op->kind == SPOOL_OP_STORE) {
			char rel[SPOOL_REL_MAX];
			spool__rel_path(rel, op->id);
			unlinkat(spool__root[SPOOL_META], rel, 0);
			unlinkat(spool__root[SPOOL_DATA], rel, 0);
		}
	}
}

static void commit_step(uv_work_t *req)
{
	struct spool_batch *b = req->data;
	if (spool__kind == SPOOL_KIND_ROCKSDB) {
		if (!S.open_failed) /* else every op failed already (rocks_kick) */
			spool__rocks_commit(b->ops, b->n, &b->file_syncs);
		return;
	}
	for (size_t i = 0; i < b->n; i++) {
		struct spool_op *op = b->ops[i];
		if (op->err) {
			unlink_tmps(op); /* the Writing step failed for this op */
			continue;
		}
		switch (op->kind) {
		case SPOOL_OP_STORE:
		case SPOOL_OP_UPDATE:
			commit_store(b, op);
			break;
		case SPOOL_OP_REMOVE:
			commit_remove(b, op);
			break;
		case SPOOL_OP_QUARANTINE:
		case SPOOL_OP_QUARANTINE_FILE:
			commit_quarantine(b, op);
			break;
		case SPOOL_OP_PRUNE:
			commit_prune(b, op);
			break;
		}
	}
	if (S.flush) {
		if (S.sync_fs)
			sync_filesystems(b);
		else
			sync_dirs(b);
		apply_dir_errors(b);
	}
}

/* --- loop thread: completion ------------------------------------------------------ */

static void trace_error(const struct spool_op *op, const char *opname)
{
	if (!KTRACE_ENABLED(spool_error))
		return;
	char what[160];
	snprintf(what, sizeof(what), "%s: %s", op->what ? op->what : "?", strerror(-op->err));
	KTRACE(spool_error, op->id, opname, op->err, what);
}

static void complete_write(struct spool_op *op, uint64_t now)
{
	const char *opname = op->kind == SPOOL_OP_STORE ? "store" : "update";
	if (op->kind == SPOOL_OP_STORE && op->data && op->m->data.data &&
	    (op->data != buf_rptr(&op->m->data) || op->data_len != buf_avail(&op->m->data)))
		panic("%s: message %s data changed while it was being stored", __func__, op->id);
	if (op->err) {
		S.st.errors++;
		trace_error(op, opname);
	} else {
		if (op->kind == SPOOL_OP_STORE) {
			S.st.stored++;
			op->m->data_stored = 1; /* unchanged since submission (checked) */
		} else
			S.st.updated++;
		uint64_t bytes = op->meta_len + op->data_len + (op->spill ? op->spill->len : 0) +
				 SPOOL_RECORD_OVERHEAD * (op->kind == SPOOL_OP_STORE ? 2 : 1);
		KTRACE(spool_store, op->id, opname, bytes, (now - op->submit_ns) / 1000);
		if (op->kind == SPOOL_OP_STORE) /* KumoMTA's name: a new message made durable */
			metrics_histogram_observe("message_save_latency", NULL, NULL,
						  (double)(now - op->submit_ns) / 1e9);
		MSG_TIMELINE(op->id, "Spool", "%s %" PRIu64 " bytes durable in %" PRIu64 "us",
			     opname, bytes, (now - op->submit_ns) / 1000);
	}
	if (op->cb)
		op->cb(op->ctx, op->err);
}

static void complete_op(struct spool_op *op, uint64_t now)
{
	switch (op->kind) {
	case SPOOL_OP_STORE:
	case SPOOL_OP_UPDATE:
		complete_write(op, now);
		break;
	case SPOOL_OP_REMOVE:
		if (op->err && op->err != -ENOENT) {
			S.st.errors++;
			trace_error(op, "remove");
		} else if (!op->err) {
			S.st.removed++;
			KTRACE(spool_remove, op->id, (now - op->submit_ns) / 1000);
			MSG_TIMELINE(op->id, "Spool", "removed in %" PRIu64 "us",
				     (now - op->submit_ns) / 1000);
		}
		if (op->cb)
			op->cb(op->ctx, op->err);
		break;
	case SPOOL_OP_QUARANTINE:
	case SPOOL_OP_QUARANTINE_FILE:
		if (op->err) {
			S.st.errors++;
			trace_error(op, "quarantine");
		}
		S.st.quarantined += op->q->moved[SPOOL_DATA] || op->q->moved[SPOOL_META];
		spool__quarantine_done(op);
		break;
	case SPOOL_OP_PRUNE:
		break;
	}
	message_unref(op->m);
	message_spill_unref(op->spill);
	free(op->meta);
	free(op->q);
	free(op);
}

static void set_phase(void)
{
	if (!S.task)
		return;
	if (S.opening)
		task_set_phase(S.task, "Opening", "disk");
	else if (S.syncing || S.rocks_inflight)
		task_set_phase(S.task, "Syncing", "disk");
	else if (S.writing || S.wait_sync)
		task_set_phase(S.task, "Writing", "disk");
	else
		task_set_phase(S.task, spool__recovery_active() ? "Recovering" : "Idle", NULL);
}

static void maybe_finish_close(void);
static void kick(void);
static void write_done(uv_work_t *req, int status);
static void commit_done(uv_work_t *req, int status);

static void start_sync(struct spool_batch *b)
{
	S.syncing = b;
	uv_queue_work(S.loop, &b->req, commit_step, commit_done);
}

static void commit_done(uv_work_t *req, int status)
{
	struct spool_batch *b = req->data;
	struct task *t = S.task, *prev = task_enter(t);
	if (spool__kind == SPOOL_KIND_ROCKSDB) {
		S.rocks_inflight--;
		S.rocks_exclusive = 0;
	}
	S.syncing = NULL;
	if (S.wait_sync) {
		struct spool_batch *next = S.wait_sync;
		S.wait_sync = NULL;
		start_sync(next);
	}
	kick();
	set_phase();
	uint64_t now = clock_mono_ns();
	S.st.batches++;
	S.st.file_syncs += b->file_syncs;
	S.st.dir_syncs += b->dir_syncs;
	S.st.fs_syncs += b->fs_syncs;
	if (b->n > S.st.batch_msgs_max)
		S.st.batch_msgs_max = b->n;
	KTRACE(spool_batch, b->n, b->bytes, b->file_syncs, b->dir_syncs, b->fs_syncs,
	       (now - b->start_ns) / 1000);
	S.inflight -= b->n;
	S.completing = 1; /* a callback may close the spool: release it after */
	for (size_t i = 0; i < b->n; i++)
		complete_op(b->ops[i], now);
	S.completing = 0;
	free(b->ops);
	free(b->dirs);
	free(b);
	task_exit(t, prev);
	maybe_finish_close();
}

/* The Writing step is done (or had nothing to write): on to Syncing, in
 * order behind the batch that syncs now. */
static void to_sync(struct spool_batch *b)
{
	if (S.syncing) {
		S.wait_sync = b;
		return;
	}
	start_sync(b);
}

static void write_done(uv_work_t *req, int status)
{
	struct spool_batch *b = req->data;
	if (--b->wpending > 0)
		return; /* the other shard is still writing */
	struct task *prev = task_enter(S.task);
	S.writing = NULL;
	for (size_t i = 0; i < b->n; i++) {
		struct spool_op *op = b->ops[i];
		for (int w = SPOOL_DATA; w <= SPOOL_META; w++)
			if (op->werr[w])
				op_fail(op, op->werr[w], op->wwhat[w]);
	}
	b->file_syncs = b->file_syncs_w[SPOOL_DATA] + b->file_syncs_w[SPOOL_META];
	to_sync(b);
	kick();
	set_phase();
	task_exit(S.task, prev);
}

static struct spool_batch *batch_new(void)
{
	struct spool_batch *b = xcalloc(1, sizeof(*b));
	b->req.data = b;
	b->start_ns = clock_mono_ns();
	b->ops = xmalloc((S.npending < SPOOL_BATCH_MAX ? S.npending : SPOOL_BATCH_MAX) *
			 sizeof(*b->ops));
	return b;
}

static void batch_take_head(struct spool_batch *b)
{
	struct spool_op *op = S.head;
	S.head = op->next;
	op->next = NULL;
	S.npending--;
	b->ops[b->n++] = op;
	b->bytes += op->meta_len + op->data_len;
	if (!S.head)
		S.tail = NULL;
}

/* RocksDB: a batch takes every pending op (group commit). While one
 * commits, a second may start with new stores only (new ids cannot touch
 * what the first one writes; RocksDB joins concurrent synced writes into one
 * WAL sync), so a straggler's small batch does not hold back the sessions
 * that are answered next. Updates, removes and quarantine keep the lane's
 * order: they start only when nothing else commits, and quarantine commits
 * alone. */
static void rocks_kick(void)
{
	if (S.opening)
		return; /* open_done kicks */
	while (S.head && S.rocks_inflight < 2 && !S.rocks_exclusive) {
		int stores_only = S.rocks_inflight > 0;
		if (stores_only && S.head->kind != SPOOL_OP_STORE)
			return;
		struct spool_batch *b = batch_new();
		while (S.head && b->n < SPOOL_BATCH_MAX &&
		       (!stores_only || S.head->kind == SPOOL_OP_STORE)) {
			S.rocks_exclusive |= S.head->kind >= SPOOL_OP_QUARANTINE;
			batch_take_head(b);
			if (S.open_failed)
				op_fail(b->ops[b->n - 1], S.open_failed, "spool open failed");
		}
		S.rocks_inflight++;
		uv_queue_work(S.loop, &b->req, commit_step, commit_done);
	}
	set_phase();
}

/* Forms the next batch from every pending op when the Writing slot is free
 * (group commit: ops arriving meanwhile wait for the next one). */
static void kick(void)
{
	if (spool__kind == SPOOL_KIND_ROCKSDB) {
		rocks_kick();
		return;
	}
	if (S.writing || S.wait_sync || !S.head)
		return;
	struct spool_batch *b = xcalloc(1, sizeof(*b));
	b->req.data = b;
	b->start_ns = clock_mono_ns();
	b->ops = xmalloc((S.npending < SPOOL_BATCH_MAX ? S.npending : SPOOL_BATCH_MAX) *
			 sizeof(*b->ops));
	while (S.head && b->n < SPOOL_BATCH_MAX) {
		struct spool_op *op = S.head;
		S.head = op->next;
		op->next = NULL;
		S.npending--;
		b->ops[b->n++] = op;
		b->has_writes |= op->kind == SPOOL_OP_STORE || op->kind == SPOOL_OP_UPDATE;
		b->bytes += op->meta_len + op->data_len;
	}
	if (!S.head)
		S.tail = NULL;
	if (!b->has_writes) {
		to_sync(b);
	} else {
		S.writing = b;
		b->wpending = 2;
		for (int w = SPOOL_DATA; w <= SPOOL_META; w++) {
			b->wreq[w].data = b;
			uv_queue_work(S.loop, &b->wreq[w], write_shard, write_done);
		}
	}
	set_phase();
}

/* --- loop thread: submission ---------------------------------------------------------- */

struct spool_op *spool__op_new(enum spool_op_kind kind, const char *id)
{
	struct spool_op *op = xcalloc(1, sizeof(*op));
	if (kind >= SPOOL_OP_QUARANTINE)
		op->q = xcalloc(1, sizeof(*op->q));
	op->kind = kind;
	op->seq = ++S.next_seq;
	op->submit_ns = clock_mono_ns();
	if (id)
		snprintf(op->id, sizeof(op->id), "%s", id);
	return op;
}

void spool__submit(struct spool_op *op)
{
	if (!S.open && !(S.closing && op->kind >= SPOOL_OP_QUARANTINE))
		panic("%s: spool is not open", __func__);
	if (S.tail)
		S.tail->next = op;
	else
		S.head = op;
	S.tail = op;
	S.npending++;
	S.inflight++;
	kick();
}

static void submit_write(enum spool_op_kind kind, struct message *m, spool_cb cb, void *ctx)
{
	struct spool_op *op = spool__op_new(kind, m->id);
	const char *why = NULL;
	op->m = message_ref(m);
	op->cb = cb;
	op->ctx = ctx;
	if (!message_id_valid(m->id)) {
		op_fail(op, -EINVAL, "invalid message id");
	} else if (!(op->meta = spool__meta_encode(m, &op->meta_len, &why))) {
		op_fail(op, -EINVAL, why);
	} else if (kind == SPOOL_OP_STORE) {
		op->data = m->data.data ? buf_rptr(&m->data) : "";
		op->data_len = m->data.data ? buf_avail(&m->data) : 0;
		if (m->spill && spool__kind != SPOOL_KIND_LOCALDISK)
			op_fail(op, -ENOTSUP, "a spilled body needs the LocalDisk kind");
		else if (m->spill)
			op->spill = message_spill_ref(m->spill);
		if (!S.recovery_done)
			idset_add(&S.stored, m->id);
	}
	spool__submit(op);
}

void spool_store(struct message *m, spool_cb cb, void *ctx)
{
	submit_write(SPOOL_OP_STORE, m, cb, ctx);
}

void spool_update_meta(struct message *m, spool_cb cb, void *ctx)
{
	submit_write(SPOOL_OP_UPDATE, m, cb, ctx);
}

void spool_remove(const char *id, spool_cb cb, void *ctx)
{
	struct spool_op *op = spool__op_new(SPOOL_OP_REMOVE, id);
	op->cb = cb;
	op->ctx = ctx;
	if (!message_id_valid(id))
		op_fail(op, -EINVAL, "invalid message id");
	spool__submit(op);
}

int spool__stored_here(const char *id)
{
	return idset_has(&S.stored, id);
}

void spool__recovery_finished(void)
{
	S.recovery_done = 1;
	idset_free(&S.stored);
	set_phase();
}

uv_loop_t *spool__loop(void)
{
	return S.loop;
}

struct task *spool__task(void)
{
	return S.task;
}

void spool__hold(int delta)
{
	S.holds += delta;
	assert(S.holds >= 0);
	if (delta < 0)
		maybe_finish_close();
}

/* --- open and close ---------------------------------------------------------------- */

static int lock_root(int which, char *err, size_t errlen)
{
	int fd = openat(spool__root[which], "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0) {
		snprintf(err, errlen, "unable to open pid file %s/lock: %s", S.path[which],
			 strerror(errno));
		return -errno;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		int e = errno;
		char pid[32] = "";
		ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = 0;
		pid[strcspn(pid, "\r\n")] = 0;
		snprintf(err, errlen, "unable to lock pid file %s/lock: %s%s%s", S.path[which],
			 strerror(e), pid[0] ? "; held by pid " : "", pid);
		close(fd);
		return -e;
	}
	char pid[32];
	int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
		/* the lock itself holds; the pid is informational */
	}
	S.lock_fd[which] = fd;
	return 0;
}

/* Uncommitted temp files of a previous run are never part of a message. */
static size_t clean_new(int which)
{
	int fd = openat(spool__root[which], "new", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	size_t n = 0;
	struct dirent *e;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	while ((e = readdir(d))) {
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
		    unlinkat(dirfd(d), e->d_name, 0) == 0)
			n++;
	}
	closedir(d);
	return n;
}

static const char *const kind_names[2] = {"LocalDisk", "RocksDB"};

/* The kind of spool the directory fd holds, -1 when it holds neither: a
 * RocksDB database has CURRENT and IDENTITY, a LocalDisk spool its lock
 * file and new/ (both created at its first open). */
static int layout_of(int fd)
{
	if (faccessat(fd, "CURRENT", F_OK, 0) == 0 || faccessat(fd, "IDENTITY", F_OK, 0) == 0)
		return SPOOL_KIND_ROCKSDB;
	if (faccessat(fd, "new", F_OK, 0) == 0 || faccessat(fd, "lock", F_OK, 0) == 0)
		return SPOOL_KIND_LOCALDISK;
	return -1;
}

static int open_root(int which, const char *path, enum spool_kind kind, char *err, size_t errlen)
{
	static const char *const subdirs[] = {"new", "quarantine"};
	S.path[which] = xstrdup(path);
	spool__path[which] = S.path[which];
	int rc = fs_mkdir_p(path, 0750);
	if (rc < 0) {
		snprintf(err, errlen, "%s spool: cannot create %s: %s", spool_names[which], path,
			 strerror(-rc));
		return rc;
	}
	spool__root[which] = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (spool__root[which] < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s spool: cannot open %s: %s", spool_names[which], path,
			 strerror(errno));
		return rc;
	}
	int found = layout_of(spool__root[which]);
	if (found >= 0 && found != (int)kind) {
		snprintf(err, errlen,
			 "%s spool: %s holds a %s spool; refusing to open it as kind '%s' "
			 "(switching the kind of an existing spool is not supported: drain it "
			 "or use a new path)",
			 spool_names[which], path, kind_names[found], kind_names[kind]);
		return -EEXIST;
	}
	if (kind == SPOOL_KIND_ROCKSDB)
		return 0; /* RocksDB has its own LOCK file and layout */
	for (size_t i = 0; i < 2; i++) {
		if (mkdirat(spool__root[which], subdirs[i], 0750) != 0 && errno != EEXIST) {
			rc = -errno;
			snprintf(err, errlen, "%s spool: cannot create %s/%s: %s",
				 spool_names[which], path, subdirs[i], strerror(errno));
			return rc;
		}
	}
	return 0;
}

/* 2: the same directory, 1: the same file system, 0: apart. */
static int same_dir(void)
{
	struct stat a, b;
	if (fstat(spool__root[0], &a) != 0 || fstat(spool__root[1], &b) != 0 ||
	    a.st_dev != b.st_dev)
		return 0;
	return a.st_ino == b.st_ino ? 2 : 1;
}

static void release(int flush_memtables)
{
	for (int w = 0; w < 2; w++) {
		if (S.lock_fd[w] >= 0)
			close(S.lock_fd[w]);
		if (spool__root[w] >= 0)
			close(spool__root[w]);
		spool__root[w] = -1;
		spool__path[w] = NULL;
		xfree(S.path[w]);
	}
	if (spool__kind == SPOOL_KIND_ROCKSDB)
		spool__rocks_close(flush_memtables);
	spool__kind = SPOOL_KIND_LOCALDISK;
	memset(known_bucket, 0, sizeof(known_bucket));
	if (S.task)
		task_close(S.task);
	idset_free(&S.stored);
	free(S.open_gate);
	memset(&S, 0, sizeof(S));
	S.lock_fd[0] = S.lock_fd[1] = -1;
}

/* The "spool open" line and trace, once the databases are open (at once
 * for LocalDisk, after the thread-pool open for RocksDB). */
static void opened(size_t cleaned)
{
	uint64_t ms = (clock_mono_ns() - S.open_start_ns) / 1000000u;
	KTRACE(spool_open_done, kind_names[spool__kind], 0, "", ms);
	log_info(
	    "kumod::spool",
	    "spool open kind=%s data=%s meta=%s flush=%s removed_temp_files=%zu open_ms=%" PRIu64,
	    kind_names[spool__kind], S.path[SPOOL_DATA], S.path[SPOOL_META],
	    !S.flush	? "false"
	    : S.sync_fs ? "syncfs"
			: "true",
	    cleaned, ms);
}

void spool__queue_work(uv_work_t *req, uv_work_cb work, uv_after_work_cb after)
{
	if (!S.opening) {
		uv_queue_work(S.loop, req, work, after);
		return;
	}
	struct spool_deferred *d = xcalloc(1, sizeof(*d));
	d->req = req;
	d->work = work;
	d->after = after;
	*S.deferred_tail = d;
	S.deferred_tail = &d->next;
}

/* Thread pool: RocksDB's open (replays its write-ahead log: grows with
 * what the last run left unflushed). */
static void open_work(uv_work_t *req)
{
	const char *paths[2] = {S.path[SPOOL_DATA], S.path[SPOOL_META]};
	const struct spool_rocks_params *p[2] = {S.has_rocks[0] ? &S.rocks[0] : NULL,
						 S.has_rocks[1] ? &S.rocks[1] : NULL};
	/* test hook (docs/spool.md): hold the open while the gate file exists,
	 * at most 120 s */
	for (int i = 0; S.open_gate && i < 12000 && access(S.open_gate, F_OK) == 0; i++)
		usleep(10000);
	S.open_failed = spool__rocks_open(paths, p, S.flush, S.open_err, sizeof(S.open_err));
}

static void open_done(uv_work_t *req, int status)
{
	struct task *prev = task_enter(S.task);
	S.opening = 0;
	if (status < 0 && !S.open_failed) {
		S.open_failed = status;
		snprintf(S.open_err, sizeof(S.open_err), "spool open cancelled");
	}
	struct spool_deferred *d = S.deferred;
	S.deferred = NULL;
	S.deferred_tail = &S.deferred;
	if (S.open_failed) {
		uint64_t ms = (clock_mono_ns() - S.open_start_ns) / 1000000u;
		KTRACE(spool_open_done, kind_names[spool__kind], S.open_failed, S.open_err, ms);
		log_error("kumod::spool", "%s", S.open_err);
	} else {
		opened(0);
	}
	/* recovery and body reads: run now, or cancelled when the open failed
	 * or the spool is closing (recovery then stops, reads fail -EIO) */
	while (d) {
		struct spool_deferred *next = d->next;
		if (S.open_failed || !S.open)
			d->after(d->req, UV_ECANCELED);
		else
			uv_queue_work(S.loop, d->req, d->work, d->after);
		free(d);
		d = next;
	}
	kick(); /* what waited: stored now, or failed with the open's error */
	set_phase();
	if (S.open_failed && S.open && open_failed_hook)
		open_failed_hook(S.open_err);
	task_exit(S.task, prev);
	maybe_finish_close();
}

static void open_timer_closed(uv_handle_t *h)
{
	free(h);
}

/* The loop runs: the policy's init (and with it the listeners' start) is
 * over, so the open no longer competes with it for the CPU. */
static void open_start(uv_timer_t *t)
{
	uv_close((uv_handle_t *)t, open_timer_closed);
	uv_queue_work(S.loop, &S.open_req, open_work, open_done);
}

void spool_on_open_failure(void (*fn)(const char *err))
{
	open_failed_hook = fn;
}

int spool_opening(void)
{
	return S.opening;
}

int spool_open(uv_loop_t *loop, const struct spool_config *cfg, char *err, size_t errlen)
{
	const char *paths[2] = {cfg->data_path, cfg->meta_path};
	if (S.open || S.closing) {
		snprintf(err, errlen, "the spool is already open");
		return -EBUSY;
	}
	if (!paths[0] || !paths[0][0] || !paths[1] || !paths[1][0]) {
		snprintf(err, errlen, "both the data and the meta spool need a path");
		return -EINVAL;
	}
	int rc = 0;
	if (cfg->kind != SPOOL_KIND_LOCALDISK && cfg->kind != SPOOL_KIND_ROCKSDB) {
		snprintf(err, errlen, "unknown spool kind %d", (int)cfg->kind);
		return -EINVAL;
	}
	S.open_start_ns = clock_mono_ns();
	KTRACE(spool_open_begin, kind_names[cfg->kind], paths[0], paths[1]);
	for (int w = 0; w < 2 && rc == 0; w++)
		rc = open_root(w, paths[w], cfg->kind, err, errlen);
	if (rc == 0 && same_dir() == 2) {
		snprintf(err, errlen, "data and meta spools must be different directories (%s)",
			 paths[0]);
		rc = -EINVAL;
	}
	for (int w = 0; w < 2 && rc == 0 && cfg->kind == SPOOL_KIND_LOCALDISK; w++)
		rc = lock_root(w, err, errlen);
	if (rc < 0) {
		release(0); /* the caller reports err */
		return rc;
	}
	S.loop = loop;
	S.flush = cfg->flush;
	S.sync_fs = cfg->sync_fs;
	S.same_fs = same_dir() == 1;
	S.open = 1;
	S.deferred_tail = &S.deferred;
	spool__space_configure(cfg);
	size_t cleaned = 0;
	if (cfg->kind == SPOOL_KIND_LOCALDISK)
		cleaned = clean_new(SPOOL_DATA) + clean_new(SPOOL_META);
	char name[256];
	snprintf(name, sizeof(name), "data=%s meta=%s", paths[0], paths[1]);
	S.task = task_spawn("spool_flusher", name, 0);
	task_set_field(S.task, "kind", kind_names[cfg->kind]);
	task_set_field(S.task, "flush",
		       !cfg->flush					   ? "false"
		       : cfg->sync_fs && cfg->kind == SPOOL_KIND_LOCALDISK ? "syncfs"
									   : "true");
	if (cfg->kind == SPOOL_KIND_ROCKSDB) {
		/* the databases open on the thread pool: the caller goes on to
		 * start its listeners; what needs the spool waits (docs/spool.md,
		 * "Start-up order") */
		spool__kind = SPOOL_KIND_ROCKSDB;
		for (int w = 0; w < 2; w++) {
			S.has_rocks[w] = cfg->rocks[w] != NULL;
			if (cfg->rocks[w])
				S.rocks[w] = *cfg->rocks[w];
		}
		const char *gate = getenv("KUMOD_TEST_SPOOL_OPEN_GATE");
		S.open_gate = gate && gate[0] ? xstrdup(gate) : NULL;
		S.opening = 1;
		S.open_req.data = NULL;
		task_set_phase(S.task, "Opening", "disk");
		uv_timer_t *t = xcalloc(1, sizeof(*t));
		uv_timer_init(loop, t);
		uv_timer_start(t, open_start, 0, 0);
	} else {
		task_set_phase(S.task, "Idle", NULL);
		opened(cleaned);
	}
	spool_space_check(NULL, 0); /* logs a shortage at once */
	return 0;
}

int spool_spill_open(void)
{
	if (!S.open)
		return -ENOENT;
	if (spool__kind != SPOOL_KIND_LOCALDISK)
		return -ENOTSUP;
	int root = spool__root[SPOOL_DATA];
	int fd = openat(root, "new", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
		return fd >= 0 ? fd : -errno;
	/* no O_TMPFILE here: a named file unlinked at once (a crash in
	 * between leaves it in new/, which spool_open empties) */
	char name[64];
	snprintf(name, sizeof(name), "new/.spill-%016" PRIx64, ++S.next_seq);
	fd = openat(root, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	unlinkat(root, name, 0);
	return fd;
}

int spool_is_open(void)
{
	return S.open;
}

static void maybe_finish_close(void)
{
	if (!S.closing || S.opening || S.completing || S.inflight || S.holds || S.writing ||
	    S.wait_sync || S.syncing || S.rocks_inflight)
		return;
	log_info("kumod::spool",
		 "spool closed stored=%" PRIu64 " removed=%" PRIu64 " errors=%" PRIu64
		 " batches=%" PRIu64,
		 S.st.stored, S.st.removed, S.st.errors, S.st.batches);
	release(1);
}

/* Returns at once: queued and in-flight operations still complete (their
 * callbacks run on the loop, which stays alive for them); the directories
 * and locks are released after the last one. */
void spool_close(void)
{
	if (!S.open)
		return;
	S.open = 0;
	S.closing = 1;
	spool__defer_close();
	maybe_finish_close();
}

void spool_get_stats(struct spool_stats *st)
{
	*st = S.st;
	st->pending = S.inflight;
}
