/* SPDX-License-Identifier: Apache-2.0 */
/* The RocksDB spool kind (KumoMTA's kind = 'RocksDB'): one RocksDB database
 * per spool path, key = the 32-hex message id, value = the same
 * self-validating record a LocalDisk file holds (kumod/proto/spool_record.h),
 * quarantined values under "quarantine/<id>" in the same database. Only
 * RocksDB's C API (rocksdb/c.h) is used.
 *
 * Everything here runs on the flusher's lane (one batch at a time on the
 * thread pool) or in recovery's worker, never on the loop thread except open
 * and close. A batch is one group commit: the data puts of every store in
 * one WriteBatch written with sync (one WAL sync), then the meta puts of
 * stores and updates and the meta deletes of removes in one WriteBatch with
 * sync, then the data deletes of removes as an unsynced WriteBatch (a lost
 * data tombstone leaves a data value without meta, which recovery removes
 * as a crash leftover). Data before meta: a visible meta value always has
 * its data value. */
#include <errno.h>
#include <inttypes.h>
#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/xalloc.h"
#include "ktrace.h"
#include "proto/spool_record.h"
#include "spool/spool_int.h"

#define QUARANTINE_PREFIX "quarantine/"
#define QUARANTINE_PREFIX_LEN (sizeof(QUARANTINE_PREFIX) - 1)

static struct {
	rocksdb_t *db[2];
	rocksdb_options_t *opts[2];
	rocksdb_writeoptions_t *wsync, *wnosync;
	rocksdb_readoptions_t *ropts;
	rocksdb_readoptions_t *rscan; /* recovery's walks: sequential, not cached */
	int flush;
} R;

static const char *const spool_names[2] = {"data", "meta"};

/* --- parameters (pure) ------------------------------------------------------------ */

void spool_rocks_params_init(struct spool_rocks_params *p)
{
	memset(p, 0, sizeof(*p));
	p->increase_parallelism = -1;
	p->optimize_level_style_compaction = -1;
	p->optimize_universal_style_compaction = -1;
	p->compression = rocksdb_snappy_compression;
	p->compaction_readahead_size = -1;
	p->max_open_files = -1;
	p->write_buffer_size = -1;
	p->level0_stop_writes_trigger = -1;
	p->log_level = 1; /* Info */
	p->memtable_huge_page_size = -1;
	p->log_file_time_to_roll_s = 86400;
	p->obsolete_files_period_us = 6ull * 3600 * 1000000;
}

int spool_rocks_compression(const char *name)
{
	static const struct {
		const char *name;
		int value;
	} t[] = {
	    {"None", rocksdb_no_compression},	{"Snappy", rocksdb_snappy_compression},
	    {"Zlib", rocksdb_zlib_compression}, {"Bz2", rocksdb_bz2_compression},
	    {"Lz4", rocksdb_lz4_compression},	{"Lz4hc", rocksdb_lz4hc_compression},
	    {"Zstd", rocksdb_zstd_compression},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (strcmp(name, t[i].name) == 0)
			return t[i].value;
	return -1;
}

int spool_rocks_log_level(const char *name)
{
	static const char *const t[] = {"Debug", "Info", "Warn", "Error", "Fatal", "Header"};
	for (int i = 0; i < (int)(sizeof(t) / sizeof(t[0])); i++)
		if (strcmp(name, t[i]) == 0)
			return i;
	return -1;
}

const char *spool_rocks_refused_key(const char *key)
{
	static const struct {
		const char *key, *why;
	} t[] = {
	    {"limit_concurrent_stores", "kumod writes through one serialized group-commit lane; "
					"per-call concurrency limits are not implemented"},
	    {"limit_concurrent_loads", "kumod loads only at recovery, in one worker; per-call "
				       "concurrency limits are not implemented"},
	    {"limit_concurrent_removes", "kumod writes through one serialized group-commit "
					 "lane; per-call concurrency limits are not implemented"},
	    {"store_deadline", "write back-pressure deadlines are not implemented (kumod's "
			       "writes block in the lane until RocksDB accepts them)"},
	    {"error_latch_duration", "the load-shedding error latch is not implemented"},
	    {"error_unlatch_duration", "the load-shedding error latch is not implemented"},
	    {"allow_error_unlatch", "the load-shedding error latch is not implemented"},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (strcmp(key, t[i].key) == 0)
			return t[i].why;
	return NULL;
}

/* --- errors -------------------------------------------------------------------------- */

/* A negative errno for a RocksDB status text (frees it). */
static int rocks_err(char *msg, const char *what, const char *id)
{
	int rc = -EIO;
	if (strstr(msg, "No space left") || strstr(msg, "ENOSPC"))
		rc = -ENOSPC;
	else if (strstr(msg, "quota") || strstr(msg, "Quota"))
		rc = -EDQUOT;
	log_error("kumod::spool", "id=%s rocksdb %s failed: %s", id ? id : "-", what, msg);
	rocksdb_free(msg);
	return rc;
}

/* --- open and close --------------------------------------------------------------------- */

static rocksdb_options_t *make_options(const struct spool_rocks_params *p, int flush)
{
	rocksdb_options_t *o = rocksdb_options_create();
	rocksdb_options_set_create_if_missing(o, 1);
	rocksdb_options_set_use_fsync(o, flush);
	rocksdb_options_set_keep_log_file_num(o, 10);
	if (p->increase_parallelism >= 0)
		rocksdb_options_increase_parallelism(o, (int)p->increase_parallelism);
	if (p->optimize_level_style_compaction >= 0)
		rocksdb_options_optimize_level_style_compaction(
		    o, (uint64_t)p->optimize_level_style_compaction);
	if (p->optimize_universal_style_compaction >= 0)
		rocksdb_options_optimize_universal_style_compaction(
		    o, (uint64_t)p->optimize_universal_style_compaction);
	if (p->compaction_readahead_size >= 0)
		rocksdb_options_compaction_readahead_size(o, (size_t)p->compaction_readahead_size);
	if (p->max_open_files >= 0)
		rocksdb_options_set_max_open_files(o, (int)p->max_open_files);
	if (p->write_buffer_size >= 0)
		rocksdb_options_set_write_buffer_size(o, (size_t)p->write_buffer_size);
	if (p->level0_stop_writes_trigger >= 0)
		rocksdb_options_set_level0_stop_writes_trigger(o,
							       (int)p->level0_stop_writes_trigger);
	if (p->memtable_huge_page_size >= 0)
		rocksdb_options_set_memtable_huge_page_size(o, (size_t)p->memtable_huge_page_size);
	rocksdb_options_set_paranoid_checks(o, (unsigned char)p->paranoid_checks);
	rocksdb_options_set_level_compaction_dynamic_level_bytes(
	    o, (unsigned char)p->level_compaction_dynamic_level_bytes);
	rocksdb_options_set_compression(o, p->compression);
	rocksdb_options_set_info_log_level(o, p->log_level);
	rocksdb_options_set_log_file_time_to_roll(o, (size_t)p->log_file_time_to_roll_s);
	rocksdb_options_set_delete_obsolete_files_period_micros(o, p->obsolete_files_period_us);
	return o;
}

int spool__rocks_open(const char *const paths[2], const struct spool_rocks_params *const p[2],
		      int flush, char *err, size_t errlen)
{
	struct spool_rocks_params defaults;
	spool_rocks_params_init(&defaults);
	R.flush = flush;
	for (int w = 0; w < 2; w++) {
		char *e = NULL;
		R.opts[w] = make_options(p[w] ? p[w] : &defaults, flush);
		R.db[w] = rocksdb_open(R.opts[w], paths[w], &e);
		if (e) {
			snprintf(err, errlen, "%s spool: cannot open RocksDB at %s: %s",
				 spool_names[w], paths[w], e);
			rocksdb_free(e);
			R.db[w] = NULL;
			spool__rocks_close(0);
			return -EIO;
		}
		KTRACE(spool_rocks_open, spool_names[w], paths[w], (uint64_t)flush);
	}
	R.wsync = rocksdb_writeoptions_create();
	rocksdb_writeoptions_set_sync(R.wsync, (unsigned char)flush);
	R.wnosync = rocksdb_writeoptions_create();
	R.ropts = rocksdb_readoptions_create();
	/* a recovery walk reads every block once, in order: read ahead, and
	 * leave the block cache to the point reads of the running system */
	R.rscan = rocksdb_readoptions_create();
	rocksdb_readoptions_set_fill_cache(R.rscan, 0);
	rocksdb_readoptions_set_readahead_size(R.rscan, 2u << 20);
	return 0;
}

/* A clean close writes the memtables to SST files first: the next start then
 * has no write-ahead log to replay (RocksDB flushes at close only when the
 * WAL is off). A failed flush loses nothing: the WAL still holds the data. */
static void rocks_flush_memtables(int w)
{
	uint64_t t0 = clock_mono_ns();
	char *err = NULL;
	rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
	rocksdb_flushoptions_set_wait(fo, 1);
	rocksdb_flush(R.db[w], fo, &err);
	rocksdb_flushoptions_destroy(fo);
	uint64_t ms = (clock_mono_ns() - t0) / 1000000;
	KTRACE(spool_rocks_flush, spool_names[w], err ? err : "", ms);
	if (err)
		log_warn("kumod::spool",
			 "%s spool: flushing RocksDB memtables at close failed "
			 "(the write-ahead log keeps the data): %s",
			 spool_names[w], err);
	rocksdb_free(err);
}

void spool__rocks_close(int flush_memtables)
{
	for (int w = 0; w < 2; w++) {
		if (R.db[w] && flush_memtables)
			rocks_flush_memtables(w);
		if (R.db[w])
			rocksdb_close(R.db[w]);
		if (R.opts[w])
			rocksdb_options_destroy(R.opts[w]);
	}
	if (R.wsync)
		rocksdb_writeoptions_destroy(R.wsync);
	if (R.wnosync)
		rocksdb_writeoptions_destroy(R.wnosync);
	if (R.ropts)
		rocksdb_readoptions_destroy(R.ropts);
	if (R.rscan)
		rocksdb_readoptions_destroy(R.rscan);
	memset(&R, 0, sizeof(R));
}

/* --- reads (worker threads) ------------------------------------------------------------ */

int spool__rocks_get(enum spool_which which, const char *key, size_t klen, size_t max,
		     struct buf *out)
{
	char *e = NULL;
	size_t vlen = 0;
	char *v = rocksdb_get(R.db[which], R.ropts, key, klen, &vlen, &e);
	if (e)
		return rocks_err(e, "get", NULL);
	if (!v)
		return -ENOENT;
	int rc = 0;
	if (vlen > max) {
		rc = -EFBIG;
	} else {
		buf_reserve(out, vlen + 1);
		memcpy(out->data + out->len, v, vlen);
		out->len += vlen;
	}
	rocksdb_free(v);
	return rc;
}

int spool__rocks_exists(enum spool_which which, const char *key, size_t klen)
{
	char *e = NULL;
	size_t vlen = 0;
	char *v = rocksdb_get(R.db[which], R.ropts, key, klen, &vlen, &e);
	if (e) {
		rocks_err(e, "get", NULL);
		return 1; /* unknown: never treat a read error as "gone" */
	}
	rocksdb_free(v);
	return v != NULL;
}

struct spool_rocks_iter {
	rocksdb_iterator_t *it;
	int started;
	int pending_next; /* skip_below: the current key was handed out */
};

struct spool_rocks_iter *spool__rocks_iter_new(enum spool_which which)
{
	struct spool_rocks_iter *i = xcalloc(1, sizeof(*i));
	i->it = rocksdb_create_iterator(R.db[which], R.rscan);
	return i;
}

const char *spool__rocks_iter_value(struct spool_rocks_iter *i, size_t *len)
{
	return rocksdb_iter_value(i->it, len);
}

/* Compares the iterator's key with key (memcmp order, as RocksDB's
 * default comparator). */
static int iter_cmp(struct spool_rocks_iter *i, const char *key, size_t klen)
{
	size_t n = 0;
	const char *k = rocksdb_iter_key(i->it, &n);
	int c = memcmp(k, key, n < klen ? n : klen);
	return c ? c : (n > klen) - (n < klen);
}

/* The iterator's current key, past quarantined ones: 1 with it in *k and *n,
 * 0 at the end, <0 on a read error. */
static int iter_current(struct spool_rocks_iter *i, const char **k, size_t *n)
{
	for (;;) {
		if (!rocksdb_iter_valid(i->it)) {
			char *e = NULL;
			rocksdb_iter_get_error(i->it, &e);
			return e ? rocks_err(e, "iterate", NULL) : 0;
		}
		*k = rocksdb_iter_key(i->it, n);
		if (*n >= QUARANTINE_PREFIX_LEN &&
		    memcmp(*k, QUARANTINE_PREFIX, QUARANTINE_PREFIX_LEN) == 0) {
			/* '/' + 1 == '0': the first key after every quarantine key */
			rocksdb_iter_seek(i->it, "quarantine0", QUARANTINE_PREFIX_LEN);
			continue;
		}
		return 1;
	}
}

static void copy_key(const char *k, size_t n, char *out, size_t cap)
{
	n = n < cap - 1 ? n : cap - 1;
	memcpy(out, k, n);
	out[n] = 0;
}

int spool__rocks_iter_skip_below(struct spool_rocks_iter *i, const char *key, size_t klen,
				 char *skipped, size_t cap, size_t *sklen)
{
	if (!i->started) {
		rocksdb_iter_seek_to_first(i->it);
		i->started = 1;
	} else if (i->pending_next) {
		rocksdb_iter_next(i->it);
	}
	i->pending_next = 0;
	const char *k;
	size_t n = 0;
	int rc = iter_current(i, &k, &n);
	if (rc <= 0)
		return rc;
	int c = key ? iter_cmp(i, key, klen) : -1;
	if (c == 0) {
		i->pending_next = 1; /* consumed: step past it next time */
		return 1;
	}
	if (c > 0)
		return 2;
	*sklen = n;
	copy_key(k, n, skipped, cap);
	i->pending_next = 1;
	return 3;
}

/* Keys in order, quarantined ones skipped. 1 with the key (truncated to
 * cap-1 bytes, NUL-terminated; *klen is its real length), 0 at the end,
 * <0 on a read error. */
int spool__rocks_iter_next(struct spool_rocks_iter *i, char *key, size_t cap, size_t *klen)
{
	if (!i->started)
		rocksdb_iter_seek_to_first(i->it);
	else
		rocksdb_iter_next(i->it);
	i->started = 1;
	const char *k;
	size_t n = 0;
	int rc = iter_current(i, &k, &n);
	if (rc <= 0)
		return rc;
	*klen = n;
	copy_key(k, n, key, cap);
	return 1;
}

void spool__rocks_iter_free(struct spool_rocks_iter *i)
{
	if (!i)
		return;
	rocksdb_iter_destroy(i->it);
	free(i);
}

/* --- the batch (the flusher's lane) ------------------------------------------------------ */

struct rocks_wb {
	rocksdb_writebatch_t *wb;
	size_t puts, dels;
};

static void put_record(struct rocks_wb *w, struct spool_op *op, enum spool_which which,
		       unsigned char hdr[SPOOL_RECORD_HEADER_LEN],
		       unsigned char tr[SPOOL_RECORD_TRAILER_LEN])
{
	const char *payload = which == SPOOL_DATA ? op->data : op->meta;
	size_t len = which == SPOOL_DATA ? op->data_len : op->meta_len;
	spool_record_header(hdr, which == SPOOL_DATA ? SPOOL_RECORD_DATA : SPOOL_RECORD_META,
			    op->id, len);
	spool_record_trailer(tr, hdr, payload, len);
	const char *key = op->id;
	size_t klen = MESSAGE_ID_LEN;
	const char *vals[3] = {(const char *)hdr, payload ? payload : "", (const char *)tr};
	size_t vlens[3] = {SPOOL_RECORD_HEADER_LEN, len, SPOOL_RECORD_TRAILER_LEN};
	rocksdb_writebatch_putv(w->wb, 1, &key, &klen, 3, vals, vlens);
	w->puts++;
}

static void del_key(struct rocks_wb *w, const char *key, size_t klen)
{
	rocksdb_writebatch_delete(w->wb, key, klen);
	w->dels++;
}

/* Writes w (sync when asked and flushing) and resets it; 0 or -errno. */
static int write_wb(struct rocks_wb *w, enum spool_which which, int sync, uint64_t *syncs)
{
	if (!w->puts && !w->dels)
		return 0;
	char *e = NULL;
	uint64_t t0 = clock_mono_ns();
	int synced = sync && R.flush;
	rocksdb_write(R.db[which], synced ? R.wsync : R.wnosync, w->wb, &e);
	int rc = e ? rocks_err(e, "write", NULL) : 0;
	if (rc == 0) {
		*syncs += (uint64_t)synced;
		KTRACE(spool_rocks_write, spool_names[which], (uint64_t)w->puts, (uint64_t)w->dels,
		       (uint64_t)synced, (clock_mono_ns() - t0) / 1000);
	}
	rocksdb_writebatch_clear(w->wb);
	w->puts = w->dels = 0;
	return rc;
}

static int is_write(const struct spool_op *op)
{
	return op->kind == SPOOL_OP_STORE || op->kind == SPOOL_OP_UPDATE ||
	       op->kind == SPOOL_OP_REMOVE;
}

/* Moves key of spool `which` to quarantine/<key>[.n] (one synced batch). */
static int quarantine_key(struct spool_op *op, enum spool_which which, const char *key,
			  uint64_t *syncs)
{
	struct buf v;
	char *dst = op->q->moved_to[which];
	size_t cap = sizeof(op->q->moved_to[which]);
	buf_init(&v);
	int rc = spool__rocks_get(which, key, strlen(key), SIZE_MAX, &v);
	for (int i = 0; rc == 0 && i < 1000; i++) {
		if (i == 0)
			snprintf(dst, cap, QUARANTINE_PREFIX "%s", key);
		else
			snprintf(dst, cap, QUARANTINE_PREFIX "%s.%d", key, i);
		if (!spool__rocks_exists(which, dst, strlen(dst)))
			break;
		if (i == 999)
			rc = -EEXIST;
	}
	if (rc == 0) {
		struct rocks_wb w = {rocksdb_writebatch_create(), 0, 0};
		rocksdb_writebatch_put(w.wb, dst, strlen(dst), v.data ? v.data : "", v.len);
		w.puts++;
		del_key(&w, key, strlen(key));
		rc = write_wb(&w, which, 1, syncs);
		rocksdb_writebatch_destroy(w.wb);
	}
	buf_free(&v);
	if (rc == 0)
		op->q->moved[which] = 1;
	else if (rc != -ENOENT)
		spool__op_fail(op, rc, "move into quarantine");
	return rc;
}

/* Revalidates in the lane, as LocalDisk does: a message that loads after
 * all, or was removed meanwhile, is left alone; a data value without its
 * meta value is a crash leftover and is deleted. */
static void commit_quarantine(struct spool_op *op, uint64_t *syncs)
{
	if (op->kind == SPOOL_OP_QUARANTINE_FILE) {
		quarantine_key(op, op->q->which, op->q->rel, syncs);
		return;
	}
	int has_meta = spool__rocks_exists(SPOOL_META, op->id, MESSAGE_ID_LEN);
	int has_data = spool__rocks_exists(SPOOL_DATA, op->id, MESSAGE_ID_LEN);
	if (has_meta) {
		struct message *m = NULL;
		if (spool__load(op->id, &m, op->q->reason, sizeof(op->q->reason)) == 0) {
			message_unref(m);
			return;
		}
		quarantine_key(op, SPOOL_META, op->id, syncs);
	} else if (has_data) {
		struct rocks_wb w = {rocksdb_writebatch_create(), 0, 0};
		del_key(&w, op->id, MESSAGE_ID_LEN);
		int rc = write_wb(&w, SPOOL_DATA, 0, syncs);
		rocksdb_writebatch_destroy(w.wb);
		if (rc < 0)
			spool__op_fail(op, rc, "delete leftover data");
		else
			op->leftover = 1;
		return;
	}
	if (has_data)
		quarantine_key(op, SPOOL_DATA, op->id, syncs);
}

/* Ids removed earlier in the same batch (its writes are not applied yet). */
struct idset {
	const char **slot;
	size_t cap;
};

static size_t id_hash(const char *id)
{
	uint64_t h = 1469598103934665603ull;
	for (int i = 0; i < MESSAGE_ID_LEN; i++)
		h = (h ^ (unsigned char)id[i]) * 1099511628211ull;
	return (size_t)h;
}

/* 1 when id is in the set; adds it when add is set. */
static int idset_check(struct idset *s, const char *id, int add)
{
	size_t i = id_hash(id) & (s->cap - 1);
	for (; s->slot[i]; i = (i + 1) & (s->cap - 1))
		if (memcmp(s->slot[i], id, MESSAGE_ID_LEN) == 0)
			return 1;
	if (add)
		s->slot[i] = id;
	return 0;
}

/* Existence checks before anything is written: an update of a removed
 * message is -ENOENT (never resurrected), as is a remove of nothing. */
static void precheck(struct spool_op *op, struct idset *removed)
{
	if (op->kind == SPOOL_OP_UPDATE) {
		if (idset_check(removed, op->id, 0) ||
		    !spool__rocks_exists(SPOOL_META, op->id, MESSAGE_ID_LEN))
			spool__op_fail(op, -ENOENT, "update of a message not in the spool");
	} else if (op->kind == SPOOL_OP_REMOVE) {
		if (idset_check(removed, op->id, 1)) {
			spool__op_fail(op, -ENOENT, "remove of a message not in the spool");
			return;
		}
		op->visible[SPOOL_META] =
		    (unsigned char)spool__rocks_exists(SPOOL_META, op->id, MESSAGE_ID_LEN);
		/* with its meta value the data value is there too (data first), and a
		 * tombstone for a missing key is harmless: read the data value only
		 * to tell a remove of nothing */
		op->visible[SPOOL_DATA] = op->visible[SPOOL_META] ||
					  spool__rocks_exists(SPOOL_DATA, op->id, MESSAGE_ID_LEN);
		if (!op->visible[SPOOL_META] && !op->visible[SPOOL_DATA])
			spool__op_fail(op, -ENOENT, "remove of a message not in the spool");
	}
}

void spool__rocks_commit(struct spool_op **ops, size_t n, uint64_t *syncs)
{
	unsigned char(*hdr)[SPOOL_RECORD_HEADER_LEN] = xmalloc((n ? n : 1) * sizeof(*hdr));
	unsigned char(*tr)[SPOOL_RECORD_TRAILER_LEN] = xmalloc((n ? n : 1) * sizeof(*tr));
	struct rocks_wb w = {rocksdb_writebatch_create(), 0, 0};
	struct idset removed = {NULL, 16};
	while (removed.cap < 2 * n)
		removed.cap *= 2;
	removed.slot = xcalloc(removed.cap, sizeof(*removed.slot));
	/* 1. every store's data value, one synced write */
	for (size_t i = 0; i < n; i++) {
		struct spool_op *op = ops[i];
		if (!op->err && is_write(op))
			precheck(op, &removed);
		if (!op->err && op->kind == SPOOL_OP_STORE)
			put_record(&w, op, SPOOL_DATA, hdr[i], tr[i]);
	}
	int rc = write_wb(&w, SPOOL_DATA, 1, syncs);
	for (size_t i = 0; rc < 0 && i < n; i++)
		if (!ops[i]->err && ops[i]->kind == SPOOL_OP_STORE)
			spool__op_fail(ops[i], rc, "write data (rocksdb)");
	/* 2. meta values and meta deletes, one synced write */
	for (size_t i = 0; i < n; i++) {
		struct spool_op *op = ops[i];
		if (op->err)
			continue;
		if (op->kind == SPOOL_OP_STORE || op->kind == SPOOL_OP_UPDATE)
			put_record(&w, op, SPOOL_META, hdr[i], tr[i]);
		else if (op->kind == SPOOL_OP_REMOVE && op->visible[SPOOL_META])
			del_key(&w, op->id, MESSAGE_ID_LEN);
	}
	rc = write_wb(&w, SPOOL_META, 1, syncs);
	/* 3. data tombstones of removes (and of stores whose meta failed), unsynced */
	for (size_t i = 0; i < n; i++) {
		struct spool_op *op = ops[i];
		if (!op->err && rc < 0 && is_write(op)) {
			spool__op_fail(op, rc, "write meta (rocksdb)");
			if (op->kind == SPOOL_OP_STORE)
				del_key(&w, op->id, MESSAGE_ID_LEN); /* roll back */
			continue;
		}
		if (!op->err && op->kind == SPOOL_OP_REMOVE && op->visible[SPOOL_DATA])
			del_key(&w, op->id, MESSAGE_ID_LEN);
	}
	if (write_wb(&w, SPOOL_DATA, 0, syncs) < 0) {
		/* the meta deletes are durable: what is left is a leftover that
		 * recovery removes; a rolled-back store was never acknowledged */
	}
	rocksdb_writebatch_destroy(w.wb);
	free(removed.slot);
	free(hdr);
	free(tr);
	/* 4. quarantine moves (recovery's suspects), revalidated here */
	for (size_t i = 0; i < n; i++)
		if (!ops[i]->err && (ops[i]->kind == SPOOL_OP_QUARANTINE ||
				     ops[i]->kind == SPOOL_OP_QUARANTINE_FILE))
			commit_quarantine(ops[i], syncs);
}

/* Test and debug hook: writes raw bytes under key in one spool, synced. */
int spool__rocks_put_raw(enum spool_which which, const char *key, const void *val, size_t len)
{
	uint64_t syncs = 0;
	struct rocks_wb w = {rocksdb_writebatch_create(), 0, 0};
	rocksdb_writebatch_put(w.wb, key, strlen(key), val, len);
	w.puts++;
	int rc = write_wb(&w, which, 1, &syncs);
	rocksdb_writebatch_destroy(w.wb);
	return rc;
}
