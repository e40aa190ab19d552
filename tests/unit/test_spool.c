/* SPDX-License-Identifier: Apache-2.0 */
/* The durable spool against real files in a mkdtemp directory under /tmp
 * with a running uv loop: group commit, recovery with identical bytes,
 * quarantine of corrupt and orphaned files, flush=false, remove and update,
 * injected I/O errors and a full tmpfs. Includes spool_int.h for the fault
 * injection hook (the one user outside kumod/spool/). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "base/clock.h"
#include "base/log.h"
#include "proto/spool_record.h"
#include "spool/message.h"
#include "spool/spool.h"
#include "spool/spool_int.h"
#include "test.h"

static uv_loop_t loop;
static char dir[64], data_path[128], meta_path[128];
static int sync_fs_mode;
static enum spool_kind kind_mode;

/* --- fixture ------------------------------------------------------------------ */

static void rm_rf(const char *path)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup of %s failed\n", path);
}

static void setup_in(const char *base)
{
	char err[256];
	/* the failures these tests provoke are expected: keep the output quiet */
	ASSERT_EQ(log_set_filter("kumod::spool=off", err, sizeof(err)), 0);
	ASSERT_EQ(uv_loop_init(&loop), 0);
	snprintf(data_path, sizeof(data_path), "%s/data", base);
	snprintf(meta_path, sizeof(meta_path), "%s/meta", base);
}

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/kumod-spool-test.XXXXXX");
	ASSERT(mkdtemp(dir) != NULL);
	setup_in(dir);
}

static void open_spool(int flush)
{
	char err[256] = "";
	struct spool_config cfg = {.data_path = data_path,
				   .meta_path = meta_path,
				   .flush = flush,
				   .sync_fs = sync_fs_mode,
				   .kind = kind_mode};
	int rc = spool_open(&loop, &cfg, err, sizeof(err));
	if (rc != 0)
		TEST_FAIL("spool_open: %d %s", rc, err);
	while (spool_opening()) /* RocksDB opens on the thread pool */
		uv_run(&loop, UV_RUN_ONCE);
}

/* Closes and runs the loop until the spool let go of its files. */
static void close_spool(void)
{
	spool_close();
	uv_run(&loop, UV_RUN_DEFAULT);
	ASSERT(!spool_is_open());
}

static void teardown(void)
{
	close_spool();
	ASSERT_EQ(uv_loop_close(&loop), 0);
	rm_rf(dir);
}

static struct message *make_msg(unsigned i, size_t size)
{
	struct message *m = message_new();
	char s[64];
	snprintf(s, sizeof(s), "sender%u@example.com", i);
	message_set_sender(m, s);
	snprintf(s, sizeof(s), "rcpt%u@example.net", i);
	message_add_recipient(m, s);
	if (i % 2)
		message_add_recipient(m, "second@example.org");
	message_set_meta(m, "queue", json_sprintf("q%u", i % 3));
	message_set_meta(m, "n", json_integer(i));
	char *data = malloc(size ? size : 1);
	for (size_t k = 0; k < size; k++)
		data[k] = (char)((k * 7 + i) & 0xff); /* 8-bit, NULs, bare CR/LF */
	message_set_data(m, data, size);
	free(data);
	m->attempts = i % 5;
	m->due_ms = i % 2 ? 1700000000000ull + i : 0;
	return m;
}

static void assert_same(const struct message *a, const struct message *b)
{
	ASSERT_STR_EQ(a->id, b->id);
	ASSERT_STR_EQ(a->sender, b->sender);
	ASSERT_EQ(a->nrecipients, b->nrecipients);
	for (size_t i = 0; i < a->nrecipients; i++)
		ASSERT_STR_EQ(a->recipients[i], b->recipients[i]);
	ASSERT(json_equal(a->meta, b->meta));
	ASSERT_EQ(a->data.len, b->data.len);
	ASSERT(a->data.len == 0 || memcmp(a->data.data, b->data.data, a->data.len) == 0);
	ASSERT_EQ(a->created_ns / 1000000u, b->created_ns / 1000000u);
	ASSERT_EQ(a->attempts, b->attempts);
	ASSERT_EQ(a->due_ms, b->due_ms);
}

static void file_path(char *out, size_t cap, const char *root, const char *id)
{
	snprintf(out, cap, "%s/%.8s/%s", root, id, id);
}

static int exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

static size_t count_dir(const char *path)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "ls -A '%s' | wc -l", path);
	FILE *f = popen(cmd, "r");
	size_t n = 0;
	ASSERT(f && fscanf(f, "%zu", &n) == 1);
	pclose(f);
	return n;
}

/* --- completions ------------------------------------------------------------------ */

struct results {
	int err[2048];
	size_t done;
};

static void on_done(void *ctx, int err)
{
	struct results *r = ctx;
	r->err[r->done++] = err;
}

/* Stores each message and waits for every callback; returns the errors in
 * completion order (which is submission order). */
static void store_all(struct message **m, size_t n, struct results *r)
{
	memset(r, 0, sizeof(*r));
	for (size_t i = 0; i < n; i++)
		spool_store(m[i], on_done, r);
	ASSERT_EQ(r->done, 0); /* never called from inside spool_store */
	while (r->done < n)
		uv_run(&loop, UV_RUN_ONCE);
}

struct collected {
	struct message *msgs[2048];
	size_t n, loaded, quarantined;
	int done, close_on_first;
};

static void on_msg(struct message *m, void *ctx)
{
	struct collected *c = ctx;
	c->msgs[c->n++] = message_ref(m);
	if (c->close_on_first && c->n == 1)
		spool_close();
}

static void on_recovered(void *ctx, size_t loaded, size_t quarantined)
{
	struct collected *c = ctx;
	c->loaded = loaded;
	c->quarantined = quarantined;
	c->done = 1;
}

static void recover(struct collected *c)
{
	memset(c, 0, sizeof(*c));
	spool_recover(on_msg, on_recovered, c);
	ASSERT(!c->done);
	while (!c->done)
		uv_run(&loop, UV_RUN_ONCE);
}

static void collected_free(struct collected *c)
{
	for (size_t i = 0; i < c->n; i++)
		message_unref(c->msgs[i]);
	c->n = 0;
}

static const struct message *find(struct collected *c, const char *id)
{
	for (size_t i = 0; i < c->n; i++)
		if (strcmp(c->msgs[i]->id, id) == 0)
			return c->msgs[i];
	return NULL;
}

/* m[0..n) = make_msg(i, size). */
static void make_msgs(struct message **m, unsigned n, size_t size)
{
	for (unsigned i = 0; i < n; i++)
		m[i] = make_msg(i, size);
}

static void unref_msgs(struct message **m, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		message_unref(m[i]);
}

/* A restart: close, open again and recover into c. */
static void reopen_and_recover(int flush, struct collected *c)
{
	close_spool();
	open_spool(flush);
	recover(c);
}

/* Every m[0..n) was recovered byte for byte. */
static void assert_all_recovered(struct message **m, unsigned n, struct collected *c)
{
	for (unsigned i = 0; i < n; i++)
		assert_same(m[i], find(c, m[i]->id));
}

/* --- tests ------------------------------------------------------------------------- */

TEST_IMPL(spool_store_batches_and_recovers_identical_bytes)
{
	enum {
		N = 200
	};
	struct message *m[N];
	struct results r;
	struct collected c;
	struct spool_stats st;
	setup();
	open_spool(1);
	for (unsigned i = 0; i < N; i++)
		m[i] = make_msg(i, i * 37 % 5000);
	store_all(m, N, &r);
	for (size_t i = 0; i < N; i++)
		ASSERT_EQ(r.err[i], 0);
	spool_get_stats(&st);
	ASSERT_EQ(st.stored, N);
	ASSERT_EQ(st.errors, 0);
	ASSERT_EQ(st.pending, 0);
	ASSERT_LT(st.batches, N); /* concurrent stores shared batches */
	ASSERT_GT(st.batch_msgs_max, 1);
	ASSERT_EQ(st.file_syncs, 2 * N);
	ASSERT_LT(st.dir_syncs, 2 * N);
	char p[256];
	file_path(p, sizeof(p), data_path, m[0]->id);
	ASSERT(exists(p));
	file_path(p, sizeof(p), meta_path, m[0]->id);
	ASSERT(exists(p));
	snprintf(p, sizeof(p), "%s/new", data_path);
	ASSERT_EQ(count_dir(p), 0);

	reopen_and_recover(1, &c);
	ASSERT_EQ(c.loaded, N);
	ASSERT_EQ(c.quarantined, 0);
	ASSERT_EQ(c.n, N);
	for (size_t i = 0; i < N; i++) {
		const struct message *got = find(&c, m[i]->id);
		if (!got)
			TEST_FAIL("message %zu (%s) not recovered", i, m[i]->id);
		assert_same(m[i], got);
	}
	/* oldest bucket first, and ids are time-ordered within this test */
	ASSERT(strncmp(c.msgs[0]->id, c.msgs[N - 1]->id, 8) <= 0);
	collected_free(&c);
	unref_msgs(m, N);
	teardown();
}

TEST_IMPL(spool_recover_twice_is_idempotent)
{
	struct message *m[3];
	struct results r;
	struct collected c;
	setup();
	open_spool(1);
	make_msgs(m, 3, 100);
	store_all(m, 3, &r);
	close_spool();
	for (int round = 0; round < 2; round++) {
		open_spool(1);
		recover(&c);
		ASSERT_EQ(c.loaded, 3);
		ASSERT_EQ(c.quarantined, 0);
		collected_free(&c);
		close_spool();
	}
	open_spool(1);
	unref_msgs(m, 3);
	teardown();
}

static void corrupt_byte(const char *path, off_t off)
{
	int fd = open(path, O_RDWR);
	ASSERT(fd >= 0);
	unsigned char c;
	ASSERT_EQ(pread(fd, &c, 1, off), 1);
	c ^= 0x20;
	ASSERT_EQ(pwrite(fd, &c, 1, off), 1);
	close(fd);
}

static void write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0640);
	ASSERT(fd >= 0);
	ASSERT_EQ(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	ASSERT(f);
	static char buf[65536];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	fclose(f);
	return buf;
}

TEST_IMPL(spool_corrupt_and_orphan_files_are_quarantined)
{
	enum {
		N = 6
	};
	struct message *m[N];
	struct results r;
	struct collected c;
	char p[256], q[256], lerr[64];
	setup();
	open_spool(1);
	make_msgs(m, N, 300);
	store_all(m, N, &r);
	close_spool();

	file_path(p, sizeof(p), meta_path, m[1]->id); /* bit flip in meta */
	corrupt_byte(p, SPOOL_RECORD_HEADER_LEN + 5);
	file_path(p, sizeof(p), data_path, m[2]->id); /* torn data file */
	ASSERT_EQ(truncate(p, 100), 0);
	file_path(p, sizeof(p), data_path, m[3]->id); /* meta without data */
	ASSERT_EQ(unlink(p), 0);
	file_path(p, sizeof(p), meta_path, m[4]->id); /* data without meta: a leftover */
	ASSERT_EQ(unlink(p), 0);
	snprintf(p, sizeof(p), "%s/%.8s/garbage", meta_path, m[0]->id);
	write_file(p, "not a spool file");
	snprintf(p, sizeof(p), "%s/new/.tmp-%s-1", meta_path, m[5]->id); /* crash leftover */
	write_file(p, "half");

	/* capture the warnings */
	snprintf(q, sizeof(q), "%s/stderr.log", dir);
	int saved = dup(2), fd = open(q, O_WRONLY | O_CREAT | O_TRUNC, 0640);
	ASSERT(fd >= 0 && saved >= 0);
	dup2(fd, 2);
	close(fd);
	ASSERT_EQ(log_set_filter("kumod::spool=warn", lerr, sizeof(lerr)), 0);
	open_spool(1);
	snprintf(p, sizeof(p), "%s/new", meta_path);
	ASSERT_EQ(count_dir(p), 0); /* temp files removed at open */
	recover(&c);
	dup2(saved, 2);
	close(saved);

	ASSERT_EQ(c.loaded, 2);
	ASSERT(find(&c, m[0]->id) && find(&c, m[5]->id));
	ASSERT_EQ(c.quarantined, 4);
	struct spool_stats st;
	spool_get_stats(&st);
	ASSERT_EQ(st.quarantined, 4);
	/* moved aside, not deleted; nothing corrupt left in the buckets */
	const struct {
		const char *root;
		int i;
		int in_quarantine;
	} want[] = {
	    {meta_path, 1, 1}, {data_path, 1, 1}, {meta_path, 2, 1}, {data_path, 2, 1},
	    {meta_path, 3, 1}, {meta_path, 0, 0}, {data_path, 5, 0},
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		snprintf(p, sizeof(p), "%s/quarantine/%s", want[i].root, m[want[i].i]->id);
		if (exists(p) != want[i].in_quarantine)
			TEST_FAIL("%s: want in quarantine %d", p, want[i].in_quarantine);
		file_path(p, sizeof(p), want[i].root, m[want[i].i]->id);
		if (exists(p) == want[i].in_quarantine)
			TEST_FAIL("%s: want in the spool %d", p, !want[i].in_quarantine);
	}
	/* the leftover data file is removed, not quarantined (and no WARN) */
	snprintf(p, sizeof(p), "%s/quarantine/%s", data_path, m[4]->id);
	ASSERT(!exists(p));
	file_path(p, sizeof(p), data_path, m[4]->id);
	ASSERT(!exists(p));
	snprintf(p, sizeof(p), "%s/quarantine/garbage", meta_path);
	ASSERT(exists(p));
	const char *log = slurp(q);
	snprintf(p, sizeof(p), "%.8s/%s", m[1]->id, m[1]->id);
	ASSERT(strstr(log, p) != NULL);
	ASSERT(strstr(log, "meta file: checksum mismatch") != NULL);
	ASSERT(strstr(log, "data file: truncated") != NULL);
	ASSERT(strstr(log, "data file: missing") != NULL);
	ASSERT(strstr(log, m[4]->id) == NULL);
	ASSERT(strstr(log, "unexpected file name in the meta spool") != NULL);
	collected_free(&c);

	/* a second recovery finds the same two messages and nothing to move */
	reopen_and_recover(1, &c);
	ASSERT_EQ(c.loaded, 2);
	ASSERT_EQ(c.quarantined, 0);
	collected_free(&c);
	unref_msgs(m, N);
	teardown();
}

/* spool_close from inside recovery's callback while quarantine moves are
 * queued: every completion still runs, done() is called once, and the spool
 * is released after the last one. */
TEST_IMPL(spool_close_during_recovery)
{
	enum {
		N = 40
	};
	struct message *m[N];
	struct results r;
	struct collected c;
	char p[256];
	setup();
	open_spool(1);
	make_msgs(m, N, 100);
	store_all(m, N, &r);
	close_spool();
	for (unsigned i = 0; i < N; i += 2) {
		file_path(p, sizeof(p), data_path, m[i]->id);
		ASSERT_EQ(truncate(p, 10), 0);
	}
	open_spool(1);
	memset(&c, 0, sizeof(c));
	c.close_on_first = 1;
	spool_recover(on_msg, on_recovered, &c);
	uv_run(&loop, UV_RUN_DEFAULT);
	ASSERT(!spool_is_open());
	ASSERT(c.done);
	ASSERT_EQ(c.n, 1);		 /* the rest of the chunk was dropped */
	ASSERT_EQ(c.quarantined, N / 2); /* queued before the close: completed */
	collected_free(&c);
	open_spool(1); /* released */
	recover(&c);
	ASSERT_EQ(c.loaded, N / 2);
	ASSERT_EQ(c.quarantined, 0);
	collected_free(&c);
	unref_msgs(m, N);
	teardown();
}

TEST_IMPL(spool_no_flush_skips_fsync)
{
	struct message *m[20];
	struct results r;
	struct collected c;
	struct spool_stats st;
	setup();
	open_spool(0);
	spool__inject_fault("fdatasync", 1, -EIO); /* would fail if called */
	spool__inject_fault("fsync_dir", 1, -EIO);
	make_msgs(m, 20, 1000);
	store_all(m, 20, &r);
	for (size_t i = 0; i < 20; i++)
		ASSERT_EQ(r.err[i], 0);
	spool_get_stats(&st);
	ASSERT_EQ(st.file_syncs, 0);
	ASSERT_EQ(st.dir_syncs, 0);
	reopen_and_recover(0, &c);
	ASSERT_EQ(c.loaded, 20);
	assert_all_recovered(m, 20, &c);
	collected_free(&c);
	unref_msgs(m, 20);
	teardown();
}

TEST_IMPL(spool_remove_and_update)
{
	struct message *m[2];
	struct results r;
	struct collected c;
	char p[256];
	setup();
	open_spool(1);
	m[0] = make_msg(0, 10);
	m[1] = make_msg(1, 10);
	store_all(m, 2, &r);

	m[1]->attempts = 3;
	m[1]->due_ms = 1234567;
	message_set_meta(m[1], "queue", json_string("retry.example"));
	memset(&r, 0, sizeof(r));
	spool_update_meta(m[1], on_done, &r);
	spool_remove(m[0]->id, on_done, &r);
	spool_remove(m[0]->id, on_done, &r); /* same batch: already gone */
	while (r.done < 3)
		uv_run(&loop, UV_RUN_ONCE);
	ASSERT_EQ(r.err[0], 0);
	ASSERT_EQ(r.err[1], 0);
	ASSERT_EQ(r.err[2], -ENOENT);
	file_path(p, sizeof(p), data_path, m[0]->id);
	ASSERT(!exists(p));
	file_path(p, sizeof(p), meta_path, m[0]->id);
	ASSERT(!exists(p));

	/* an update never resurrects a removed message */
	memset(&r, 0, sizeof(r));
	spool_update_meta(m[0], on_done, &r);
	spool_remove(m[0]->id, NULL, NULL);
	while (r.done < 1)
		uv_run(&loop, UV_RUN_ONCE);
	ASSERT_EQ(r.err[0], -ENOENT);
	ASSERT(!exists(p));
	uv_run(&loop, UV_RUN_DEFAULT);

	struct spool_stats st;
	spool_get_stats(&st);
	ASSERT_EQ(st.removed, 1);
	ASSERT_EQ(st.updated, 1);
	reopen_and_recover(1, &c);
	ASSERT_EQ(c.n, 1);
	assert_same(m[1], c.msgs[0]);
	ASSERT_STR_EQ(message_get_meta_str(c.msgs[0], "queue"), "retry.example");
	collected_free(&c);
	message_unref(m[0]);
	message_unref(m[1]);
	teardown();
}

TEST_IMPL(spool_invalid_message_fails_async)
{
	struct results r = {0};
	setup();
	open_spool(1);
	struct message *m = message_new(); /* no recipient */
	spool_store(m, on_done, &r);
	ASSERT_EQ(r.done, 0);
	struct message *bad = make_msg(1, 10);
	message_set_sender(bad, "\xff\xfe@example.com"); /* not UTF-8 */
	spool_store(bad, on_done, &r);
	while (r.done < 2)
		uv_run(&loop, UV_RUN_ONCE);
	ASSERT_EQ(r.err[0], -EINVAL);
	ASSERT_EQ(r.err[1], -EINVAL);
	message_unref(m);
	message_unref(bad);
	teardown();
}

/* Every file of the spool except lock files: the ids still visible. */
static size_t count_visible(const char *root)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "find '%s' -type f ! -name lock | wc -l", root);
	FILE *f = popen(cmd, "r");
	size_t n = 0;
	ASSERT(f && fscanf(f, "%zu", &n) == 1);
	pclose(f);
	return n;
}

static void fault_case(const char *syscall, unsigned nth, int err, size_t want_failed)
{
	enum {
		N = 8
	};
	struct message *m[N];
	struct results r;
	setup();
	open_spool(1);
	/* m[0] is stored before the fault is armed; of the next seven, the
	 * first starts a batch alone and the other six share the next one */
	make_msgs(m, N, 500);
	store_all(m, 1, &r);
	ASSERT_EQ(r.err[0], 0);
	spool__inject_fault(syscall, nth, err);
	store_all(m + 1, N - 1, &r);
	size_t failed = 0;
	for (size_t i = 0; i < N - 1; i++) {
		ASSERT(r.err[i] == 0 || r.err[i] == err);
		char p[256];
		file_path(p, sizeof(p), meta_path, m[i + 1]->id);
		ASSERT_EQ(exists(p), r.err[i] == 0); /* a failed store is not visible */
		file_path(p, sizeof(p), data_path, m[i + 1]->id);
		ASSERT_EQ(exists(p), r.err[i] == 0);
		failed += r.err[i] != 0;
	}
	if (failed != want_failed)
		TEST_FAIL("%s fault: %zu stores failed, want %zu", syscall, failed, want_failed);
	ASSERT_EQ(count_visible(data_path), N - failed);
	ASSERT_EQ(count_visible(meta_path), N - failed);
	unref_msgs(m, N);
	teardown();
}

TEST_IMPL(spool_fault_write_enospc)
{
	fault_case("write", 3, -ENOSPC, 1); /* m2's data file */
}

TEST_IMPL(spool_fault_fdatasync_eio)
{
	fault_case("fdatasync", 5, -EIO, 1); /* m3's data file */
}

TEST_IMPL(spool_fault_rename_eio)
{
	fault_case("rename", 2, -EIO, 1); /* m1's meta: its data rolled back */
}

TEST_IMPL(spool_fault_fsync_dir_eio_fails_whole_batch)
{
	/* batch [m1] syncs two bucket directories, then [m2..m7] fails */
	fault_case("fsync_dir", 3, -EIO, 6);
}

TEST_IMPL(spool_fault_syncfs_eio_fails_whole_batch)
{
	sync_fs_mode = 1;
	fault_case("syncfs", 2, -EIO, 6);
}

TEST_IMPL(spool_sync_fs_mode)
{
	struct message *m[30];
	struct results r;
	struct collected c;
	struct spool_stats st;
	sync_fs_mode = 1;
	setup();
	open_spool(1);
	make_msgs(m, 30, 2000);
	store_all(m, 30, &r);
	for (size_t i = 0; i < 30; i++)
		ASSERT_EQ(r.err[i], 0);
	spool_get_stats(&st);
	ASSERT_EQ(st.file_syncs, 0);
	ASSERT_EQ(st.dir_syncs, 0);
	ASSERT_EQ(st.fs_syncs, st.batches); /* data and meta share /tmp's file system */
	reopen_and_recover(1, &c);
	ASSERT_EQ(c.loaded, 30);
	assert_all_recovered(m, 30, &c);
	collected_free(&c);
	unref_msgs(m, 30);
	teardown();
}

TEST_IMPL(spool_disk_full_tmpfs)
{
	enum {
		N = 12
	};
	snprintf(dir, sizeof(dir), "/tmp/kumod-spool-tmpfs.XXXXXX");
	ASSERT(mkdtemp(dir) != NULL);
	if (mount("none", dir, "tmpfs", 0, "size=256k") != 0) {
		fprintf(stderr, "  skipped: cannot mount a tmpfs on %s: %s\n", dir,
			strerror(errno));
		rmdir(dir);
		return;
	}
	setup_in(dir);
	open_spool(1);
	struct message *m[N];
	struct results r;
	make_msgs(m, N, 40000);
	store_all(m, N, &r);
	size_t ok = 0, full = 0;
	for (size_t i = 0; i < N; i++) {
		ok += r.err[i] == 0;
		full += r.err[i] == -ENOSPC;
		char p[256];
		file_path(p, sizeof(p), data_path, m[i]->id);
		ASSERT_EQ(exists(p), r.err[i] == 0);
		file_path(p, sizeof(p), meta_path, m[i]->id);
		ASSERT_EQ(exists(p), r.err[i] == 0);
	}
	fprintf(stderr, "  tmpfs 256k: %zu stored, %zu ENOSPC\n", ok, full);
	ASSERT_GT(ok, 0);
	ASSERT_GT(full, 0);
	ASSERT_EQ(ok + full, N);
	char p[256];
	snprintf(p, sizeof(p), "%s/new", data_path);
	ASSERT_EQ(count_dir(p), 0);
	snprintf(p, sizeof(p), "%s/new", meta_path);
	ASSERT_EQ(count_dir(p), 0);
	/* what was acknowledged is all there after a restart */
	close_spool();
	open_spool(1);
	struct collected c;
	recover(&c);
	ASSERT_EQ(c.loaded, ok);
	ASSERT_EQ(c.quarantined, 0);
	for (size_t i = 0; i < N; i++)
		if (r.err[i] == 0)
			assert_same(m[i], find(&c, m[i]->id));
	collected_free(&c);
	unref_msgs(m, N);
	close_spool();
	ASSERT_EQ(uv_loop_close(&loop), 0);
	umount2(dir, MNT_DETACH);
	rmdir(dir);
}

TEST_IMPL(spool_recover_skips_messages_stored_meanwhile)
{
	struct message *old[4], *fresh[3];
	struct results r;
	struct collected c;
	setup();
	open_spool(1);
	for (unsigned i = 0; i < 4; i++)
		old[i] = make_msg(i, 64);
	store_all(old, 4, &r);
	close_spool();
	open_spool(1);
	/* new receptions before and during recovery are queued by their owner */
	for (unsigned i = 0; i < 3; i++)
		fresh[i] = make_msg(10 + i, 64);
	store_all(fresh, 2, &r);
	memset(&c, 0, sizeof(c));
	spool_recover(on_msg, on_recovered, &c);
	spool_store(fresh[2], NULL, NULL);
	while (!c.done)
		uv_run(&loop, UV_RUN_ONCE);
	ASSERT_EQ(c.loaded, 4);
	for (unsigned i = 0; i < 3; i++)
		ASSERT(find(&c, fresh[i]->id) == NULL);
	collected_free(&c);
	for (unsigned i = 0; i < 4; i++)
		message_unref(old[i]);
	for (unsigned i = 0; i < 3; i++)
		message_unref(fresh[i]);
	teardown();
}

TEST_IMPL(spool_open_errors)
{
	char err[256];
	setup();
	open_spool(1);
	struct spool_config cfg = {.data_path = data_path, .meta_path = meta_path, .flush = 1};
	ASSERT_EQ(spool_open(&loop, &cfg, err, sizeof(err)), -EBUSY);
	/* another process holding the lock */
	pid_t pid = fork();
	if (pid == 0) {
		close_spool();
		int rc = spool_open(&loop, &cfg, err, sizeof(err));
		_exit(rc == -EWOULDBLOCK && strstr(err, "unable to lock pid file") &&
			      strstr(err, "held by pid")
			  ? 0
			  : 1);
	}
	int status;
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close_spool();
	struct spool_config same = {.data_path = data_path, .meta_path = data_path, .flush = 1};
	ASSERT_EQ(spool_open(&loop, &same, err, sizeof(err)), -EINVAL);
	ASSERT(strstr(err, "different directories") != NULL);
	struct spool_config none = {.meta_path = meta_path, .flush = 1};
	ASSERT_EQ(spool_open(&loop, &none, err, sizeof(err)), -EINVAL);
	open_spool(1); /* everything was released */
	teardown();
}

/* define_spool's min_free_space / min_free_inodes: an unreachable minimum
 * refuses with a reason naming the spool; none, or 0%, accepts. */
TEST_IMPL(spool_min_free_space)
{
	char err[256], why[256];
	setup();
	struct spool_config cfg = {.data_path = data_path, .meta_path = meta_path, .flush = 1};
	ASSERT_EQ(spool_open(&loop, &cfg, err, sizeof(err)), 0);
	ASSERT_EQ(spool_space_check(why, sizeof(why)), 0);
	struct spool_space sp;
	ASSERT_EQ(spool_space_get(0, &sp), 0);
	ASSERT(sp.space_bytes > 0 && sp.space_pct <= 100);
	close_spool();
	cfg.meta_min_free_space = (struct spool_min_free){UINT64_MAX, 0};
	ASSERT_EQ(spool_open(&loop, &cfg, err, sizeof(err)), 0);
	ASSERT_EQ(spool_space_check(why, sizeof(why)), -ENOSPC);
	ASSERT(strncmp(why, "meta spool ", 11) == 0);
	ASSERT(strstr(why, "free, minimum 18446744073709551615 bytes") != NULL);
	close_spool();
	cfg.meta_min_free_space = (struct spool_min_free){0, 1};
	cfg.data_min_free_inodes = (struct spool_min_free){101, 1}; /* never reached */
	ASSERT_EQ(spool_open(&loop, &cfg, err, sizeof(err)), 0);
	ASSERT_EQ(spool_space_check(why, sizeof(why)), -ENOSPC);
	ASSERT(strncmp(why, "data spool ", 11) == 0 && strstr(why, "inodes") != NULL);
	close_spool();
	teardown();
}

/* --- the RocksDB kind ------------------------------------------------------------------ */

/* Ends a RocksDB test's process without exit handlers: in this forked test
 * child, after RocksDB ran on libuv's worker threads, LTTng-UST's
 * destructor crashes in pthread_cancel (kumod itself exits cleanly, see
 * tests/integration/test_spool_rocks.py). */
static void rocks_test_exit(void)
{
	fflush(NULL);
	_exit(0);
}

/* A fresh RocksDB spool in a new directory, open with flush. */
static void rocks_setup(void)
{
	kind_mode = SPOOL_KIND_ROCKSDB;
	setup();
	open_spool(1);
}

/* Closes the spool, removes its directory and ends the test process. */
static void rocks_teardown(void)
{
	teardown();
	rocks_test_exit();
}

TEST_IMPL(spool_rocks_params_pure)
{
	struct spool_rocks_params p;
	spool_rocks_params_init(&p);
	ASSERT_EQ(p.compression, spool_rocks_compression("Snappy")); /* KumoMTA's default */
	ASSERT_EQ(p.log_level, spool_rocks_log_level("Info"));
	ASSERT_EQ(p.paranoid_checks, 0);
	ASSERT_EQ(p.log_file_time_to_roll_s, 86400);
	ASSERT_EQ(p.obsolete_files_period_us, 6ull * 3600 * 1000000);
	ASSERT_EQ(p.max_open_files, -1);
	const struct {
		const char *name;
		int want;
	} comp[] = {{"None", 0},  {"Snappy", 1}, {"Zlib", 2},	 {"Bz2", 3}, {"Lz4", 4},
		    {"Lz4hc", 5}, {"Zstd", 7},	 {"snappy", -1}, {"", -1},   {"Xpress", -1}};
	for (size_t i = 0; i < sizeof(comp) / sizeof(comp[0]); i++)
		ASSERT_EQ(spool_rocks_compression(comp[i].name), comp[i].want);
	const char *levels[] = {"Debug", "Info", "Warn", "Error", "Fatal", "Header"};
	for (int i = 0; i < 6; i++)
		ASSERT_EQ(spool_rocks_log_level(levels[i]), i);
	ASSERT_EQ(spool_rocks_log_level("info"), -1);
	const char *refused[] = {"limit_concurrent_stores",  "limit_concurrent_loads",
				 "limit_concurrent_removes", "store_deadline",
				 "error_latch_duration",     "error_unlatch_duration",
				 "allow_error_unlatch"};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		ASSERT(spool_rocks_refused_key(refused[i]) != NULL);
	const char *applied[] = {"increase_parallelism",  "compression_type",
				 "max_open_files",	  "log_level",
				 "obsolete_files_period", "bogus"};
	for (size_t i = 0; i < sizeof(applied) / sizeof(applied[0]); i++)
		ASSERT(spool_rocks_refused_key(applied[i]) == NULL);
}

TEST_IMPL(spool_rocks_store_update_remove_recover)
{
	enum {
		N = 40
	};
	struct message *m[N];
	struct results r;
	struct collected c;
	struct spool_stats st;
	char p[256];
	rocks_setup();
	for (unsigned i = 0; i < N; i++)
		m[i] = make_msg(i, i * 97);
	store_all(m, N, &r);
	for (unsigned i = 0; i < N; i++)
		ASSERT_EQ(r.err[i], 0);
	spool_get_stats(&st);
	ASSERT_EQ(st.stored, N);
	/* group commit: two WAL syncs (data, meta) per batch, whatever its size */
	ASSERT_EQ(st.file_syncs, 2 * st.batches);
	ASSERT(st.batches < N);
	snprintf(p, sizeof(p), "%s/CURRENT", data_path);
	ASSERT(exists(p));
	snprintf(p, sizeof(p), "%s/new", data_path);
	ASSERT(!exists(p)); /* no LocalDisk layout */

	m[1]->attempts = 3;
	message_set_meta(m[1], "queue", json_string("retry.example"));
	memset(&r, 0, sizeof(r));
	spool_update_meta(m[1], on_done, &r);
	spool_remove(m[0]->id, on_done, &r);
	spool_remove(m[0]->id, on_done, &r); /* same batch: already gone */
	while (r.done < 3)
		uv_run(&loop, UV_RUN_ONCE);
	ASSERT_EQ(r.err[0], 0);
	ASSERT_EQ(r.err[1], 0);
	ASSERT_EQ(r.err[2], -ENOENT);
	memset(&r, 0, sizeof(r));
	spool_update_meta(m[0], on_done, &r); /* never resurrected */
	while (r.done < 1)
		uv_run(&loop, UV_RUN_ONCE);
	ASSERT_EQ(r.err[0], -ENOENT);

	reopen_and_recover(1, &c);
	ASSERT_EQ(c.loaded, N - 1);
	ASSERT_EQ(c.quarantined, 0);
	ASSERT(find(&c, m[0]->id) == NULL);
	for (unsigned i = 1; i < N; i++) {
		const struct message *got = find(&c, m[i]->id);
		ASSERT(got != NULL);
		assert_same(m[i], got);
	}
	/* oldest first: ids are time-ordered keys */
	for (size_t i = 1; i < c.n; i++)
		ASSERT(strcmp(c.msgs[i - 1]->id, c.msgs[i]->id) < 0);
	collected_free(&c);
	unref_msgs(m, N);
	rocks_teardown();
}

TEST_IMPL(spool_rocks_corrupt_value_quarantined_leftover_removed)
{
	struct message *m[2];
	struct results r;
	struct collected c;
	rocks_setup();
	m[0] = make_msg(0, 100);
	m[1] = make_msg(1, 100);
	store_all(m, 2, &r);
	char bad[MESSAGE_ID_LEN + 1], left[MESSAGE_ID_LEN + 1];
	snprintf(bad, sizeof(bad), "%.20s000000000000", m[0]->id);
	snprintf(left, sizeof(left), "%.20s111111111111", m[0]->id);
	ASSERT_EQ(spool__rocks_put_raw(SPOOL_META, bad, "KSPL garbage", 12), 0);
	ASSERT_EQ(spool__rocks_put_raw(SPOOL_DATA, bad, "x", 1), 0);
	ASSERT_EQ(spool__rocks_put_raw(SPOOL_DATA, left, "KSPL", 4), 0);
	ASSERT_EQ(spool__rocks_put_raw(SPOOL_META, "zz-not-an-id", "?", 1), 0);
	recover(&c);
	ASSERT_EQ(c.loaded, 0);	     /* both stored by this process: skipped */
	ASSERT_EQ(c.quarantined, 2); /* bad (meta and data) and the odd key */
	collected_free(&c);
	reopen_and_recover(1, &c);
	ASSERT_EQ(c.loaded, 2);
	ASSERT_EQ(c.quarantined, 0); /* nothing new: idempotent */
	collected_free(&c);
	struct buf b;
	buf_init(&b);
	ASSERT_EQ(spool__fetch(SPOOL_META, bad, 1 << 20, &b), -ENOENT);
	ASSERT_EQ(spool__fetch(SPOOL_DATA, left, 1 << 20, &b), -ENOENT);
	char q[64];
	snprintf(q, sizeof(q), "quarantine/%s", bad);
	ASSERT_EQ(spool__rocks_get(SPOOL_META, q, strlen(q), 1 << 20, &b), 0);
	ASSERT_EQ(b.len, 12);
	ASSERT(memcmp(b.data, "KSPL garbage", 12) == 0);
	buf_free(&b);
	ASSERT(spool__rocks_exists(SPOOL_META, "quarantine/zz-not-an-id", 23));
	message_unref(m[0]);
	message_unref(m[1]);
	rocks_teardown();
}

/* RocksDB opens after spool_open returned: a store submitted meanwhile
 * completes once the database is open, durable. */
TEST_IMPL(spool_rocks_store_waits_for_the_open)
{
	struct collected c;
	char err[256] = "";
	kind_mode = SPOOL_KIND_ROCKSDB;
	setup();
	struct spool_config cfg = {
	    .data_path = data_path, .meta_path = meta_path, .flush = 1, .kind = SPOOL_KIND_ROCKSDB};
	ASSERT_EQ(spool_open(&loop, &cfg, err, sizeof(err)), 0);
	ASSERT(spool_is_open() && spool_opening());
	struct message *m = make_msg(0, 300);
	struct results r;
	store_all(&m, 1, &r);
	ASSERT_EQ(r.err[0], 0);
	ASSERT(!spool_opening());
	reopen_and_recover(1, &c);
	ASSERT_EQ(c.loaded, 1);
	assert_same(m, find(&c, m->id));
	collected_free(&c);
	message_unref(m);
	rocks_teardown();
}

static char open_failure[512];
static int open_failures;

static void on_open_failure(const char *err)
{
	snprintf(open_failure, sizeof(open_failure), "%s", err);
	open_failures++;
}

/* A database that does not open: what waited fails (never acknowledged),
 * so does what comes after, and the hook hears the reason once. */
TEST_IMPL(spool_rocks_open_failure_fails_waiting_ops)
{
	char err[256] = "", path[256];
	rocks_setup();
	close_spool();
	snprintf(path, sizeof(path), "%s/CURRENT", data_path);
	FILE *f = fopen(path, "w");
	ASSERT(f != NULL);
	fputs("garbage", f);
	fclose(f);
	spool_on_open_failure(on_open_failure);
	open_failures = 0;
	struct spool_config cfg = {
	    .data_path = data_path, .meta_path = meta_path, .flush = 1, .kind = SPOOL_KIND_ROCKSDB};
	ASSERT_EQ(spool_open(&loop, &cfg, err, sizeof(err)), 0); /* the directories are fine */
	struct message *m = make_msg(0, 100);
	struct results r;
	store_all(&m, 1, &r);
	ASSERT_EQ(r.err[0], -EIO);
	ASSERT_EQ(open_failures, 1);
	char want[256];
	snprintf(want, sizeof(want), "data spool: cannot open RocksDB at %s: ", data_path);
	ASSERT(strncmp(open_failure, want, strlen(want)) == 0);
	memset(&r, 0, sizeof(r));
	spool_remove(m->id, on_done, &r);
	while (r.done < 1)
		uv_run(&loop, UV_RUN_ONCE);
	ASSERT_EQ(r.err[0], -EIO);
	spool_on_open_failure(NULL);
	message_unref(m);
	rocks_teardown();
}

/* Recovery's merge walk over both databases: data keys without meta before,
 * between and after the messages are removed as leftovers, a meta value
 * without its data value is quarantined, every message loads. */
TEST_IMPL(spool_rocks_merge_walk_leftovers_and_missing_data)
{
	struct message *m[4];
	struct results r;
	struct collected c;
	rocks_setup();
	make_msgs(m, 4, 200);
	store_all(m, 4, &r);
	char left[3][MESSAGE_ID_LEN + 1];
	snprintf(left[0], sizeof(left[0]), "%032d", 0);
	snprintf(left[1], sizeof(left[1]), "%s", m[1]->id);
	left[1][MESSAGE_ID_LEN - 1] = left[1][MESSAGE_ID_LEN - 1] == 'f' ? 'e' : 'f';
	memset(left[2], 'f', MESSAGE_ID_LEN);
	left[2][MESSAGE_ID_LEN] = 0;
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(spool__rocks_put_raw(SPOOL_DATA, left[i], "KSPL", 4), 0);
	/* a valid meta record whose data value was never written */
	struct message *lone = make_msg(9, 10);
	const char *why = NULL;
	size_t mlen = 0;
	char *meta = spool__meta_encode(lone, &mlen, &why);
	ASSERT(meta != NULL);
	struct buf rec;
	buf_init(&rec);
	spool_record_encode(&rec, SPOOL_RECORD_META, lone->id, meta, mlen);
	ASSERT_EQ(spool__rocks_put_raw(SPOOL_META, lone->id, rec.data, rec.len), 0);
	buf_free(&rec);
	free(meta);
	reopen_and_recover(1, &c);
	ASSERT_EQ(c.loaded, 4);
	ASSERT_EQ(c.quarantined, 1); /* lone; the leftovers are removed, not counted */
	assert_all_recovered(m, 4, &c);
	collected_free(&c);
	struct buf b;
	buf_init(&b);
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(spool__fetch(SPOOL_DATA, left[i], 1 << 20, &b), -ENOENT);
	ASSERT_EQ(spool__fetch(SPOOL_META, lone->id, 1 << 20, &b), -ENOENT);
	char q[64];
	snprintf(q, sizeof(q), "quarantine/%s", lone->id);
	ASSERT(spool__rocks_exists(SPOOL_META, q, strlen(q)));
	buf_free(&b);
	message_unref(lone);
	unref_msgs(m, 4);
	rocks_teardown();
}

TEST_IMPL(spool_rocks_kind_switch_refused)
{
	char err[512];
	setup();
	open_spool(1); /* LocalDisk */
	close_spool();
	struct spool_config cfg = {
	    .data_path = data_path, .meta_path = meta_path, .flush = 1, .kind = SPOOL_KIND_ROCKSDB};
	ASSERT_EQ(spool_open(&loop, &cfg, err, sizeof(err)), -EEXIST);
	char want[256];
	snprintf(want, sizeof(want), "data spool: %s holds a LocalDisk spool", data_path);
	ASSERT(strstr(err, want) != NULL);
	ASSERT(!spool_is_open());
	rm_rf(data_path);
	rm_rf(meta_path);
	ASSERT_EQ(spool_open(&loop, &cfg, err, sizeof(err)), 0);
	close_spool();
	cfg.kind = SPOOL_KIND_LOCALDISK;
	ASSERT_EQ(spool_open(&loop, &cfg, err, sizeof(err)), -EEXIST);
	ASSERT(strstr(err, "holds a RocksDB spool; refusing to open it as kind 'LocalDisk'"));
	kind_mode = SPOOL_KIND_ROCKSDB;
	open_spool(1);
	rocks_teardown();
}

/* --- group commit measurement ---------------------------------------------------------- */

struct bench {
	struct message **m;
	size_t n, next, done;
	uint64_t lat_sum_ns, lat_max_ns;
};

struct bench_client {
	struct bench *b;
	uint64_t t0;
};

static void bench_next(struct bench_client *cl);

static void bench_done(void *ctx, int err)
{
	struct bench_client *cl = ctx;
	ASSERT_EQ(err, 0);
	uint64_t d = clock_mono_ns() - cl->t0;
	cl->b->lat_sum_ns += d;
	if (d > cl->b->lat_max_ns)
		cl->b->lat_max_ns = d;
	cl->b->done++;
	bench_next(cl);
}

static void bench_next(struct bench_client *cl)
{
	if (cl->b->next == cl->b->n)
		return;
	cl->t0 = clock_mono_ns();
	spool_store(cl->b->m[cl->b->next++], bench_done, cl);
}

/* n messages of size bytes from `clients` closed-loop clients (each stores
 * its next message when the previous one is durable, as SMTP sessions do). */
static void bench_run(size_t n, size_t clients, size_t size)
{
	struct bench b = {.n = n};
	struct bench_client *cl = calloc(clients, sizeof(*cl));
	struct spool_stats st0, st;
	b.m = calloc(n, sizeof(*b.m));
	for (size_t i = 0; i < n; i++)
		b.m[i] = make_msg((unsigned)i, size);
	spool_get_stats(&st0);
	uint64_t t0 = clock_mono_ns();
	for (size_t i = 0; i < clients; i++) {
		cl[i].b = &b;
		bench_next(&cl[i]);
	}
	while (b.done < n)
		uv_run(&loop, UV_RUN_ONCE);
	double secs = (double)(clock_mono_ns() - t0) / 1e9;
	spool_get_stats(&st);
	uint64_t batches = st.batches - st0.batches;
	uint64_t fsyncs = st.file_syncs - st0.file_syncs + st.dir_syncs - st0.dir_syncs +
			  st.fs_syncs - st0.fs_syncs;
	fprintf(stderr,
		"  %s: %4zu stores x %6zu B, %3zu clients: %6.0f msg/s, %5.1f msg/batch, "
		"%.3f syncs/msg (%.3f dir), mean %.2f ms, max %.2f ms\n",
		sync_fs_mode ? "syncfs " : "fdatasync", n, size, clients, (double)n / secs,
		(double)n / (double)batches, (double)fsyncs / (double)n,
		(double)(st.dir_syncs - st0.dir_syncs) / (double)n,
		(double)b.lat_sum_ns / (double)n / 1e6, (double)b.lat_max_ns / 1e6);
	ASSERT(clients == 1 || batches < n);
	for (size_t i = 0; i < n; i++) {
		spool_remove(b.m[i]->id, NULL, NULL);
		message_unref(b.m[i]);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	free(b.m);
	free(cl);
}

/* KUMOD_SPOOL_BENCH=1 build/unit-tests spool_group_commit: the full
 * measurement (1000 stores at 1, 10, 50 and 200 clients); otherwise a
 * short run that only checks that concurrent stores batch. */
TEST_IMPL(spool_group_commit)
{
	setup();
	open_spool(1);
	if (getenv("KUMOD_SPOOL_BENCH")) {
		alarm(600);
		bench_run(200, 1, 1024);
		bench_run(1000, 10, 1024);
		bench_run(1000, 50, 1024);
		bench_run(1000, 200, 1024);
		bench_run(1000, 50, 100 * 1024);
		close_spool();
		sync_fs_mode = 1;
		open_spool(1);
		bench_run(200, 1, 1024);
		bench_run(1000, 10, 1024);
		bench_run(1000, 50, 1024);
		bench_run(1000, 200, 1024);
		bench_run(1000, 50, 100 * 1024);
	} else {
		bench_run(200, 20, 1024);
	}
	teardown();
}

/* A body streamed during reception (spool_spill_open, message_spill): the
 * store copies the spill file into the data record; messages sharing one
 * spill store the same body; the temp file is never visible in new/;
 * recovery and message_load_spill give back header section + body. */
TEST_IMPL(spool_spilled_body_store_and_recover)
{
	enum {
		BODY = 700 * 1024 + 13
	};
	struct results r;
	struct collected c;
	setup();
	open_spool(1);
	int fd = spool_spill_open();
	ASSERT_GE(fd, 0);
	char *body = malloc(BODY);
	for (size_t k = 0; k < BODY; k++)
		body[k] = (char)((k * 13 + 5) & 0xff);
	ASSERT_EQ(write(fd, body, BODY), BODY);
	char p[256];
	snprintf(p, sizeof(p), "%s/new", data_path);
	ASSERT_EQ(count_dir(p), 0); /* unnamed */
	struct message_spill *sp = message_spill_new(fd);
	sp->len = BODY;
	const char head[] = "Subject: spilled\r\n\r\n";
	struct message *m[2];
	m[0] = make_msg(1, 0);
	message_set_spilled_data(m[0], head, sizeof(head) - 1, sp);
	message_spill_unref(sp);
	m[1] = make_msg(2, 0);
	message_copy_data(m[1], m[0]);
	for (int i = 0; i < 2; i++) {
		ASSERT_EQ(message_data_len(m[i]), sizeof(head) - 1 + BODY);
		ASSERT_EQ(message_data_resident(m[i]), 0);
	}
	store_all(m, 2, &r);
	ASSERT_EQ(r.err[0], 0);
	ASSERT_EQ(r.err[1], 0);
	ASSERT_EQ(m[0]->data_stored, 1);
	ASSERT_EQ(count_dir(p), 0);
	/* read back from the spill: the whole content, resident now */
	ASSERT_EQ(message_load_spill(m[1]), 0);
	ASSERT_EQ(message_data_resident(m[1]), 1);
	ASSERT_EQ(m[1]->data.len, sizeof(head) - 1 + BODY);
	ASSERT(memcmp(m[1]->data.data, head, sizeof(head) - 1) == 0);
	ASSERT(memcmp(m[1]->data.data + sizeof(head) - 1, body, BODY) == 0);
	/* stored: the shrink drops header section and spill */
	ASSERT_EQ(message_shrink_data(m[0]), 1);
	ASSERT(m[0]->spill == NULL);
	ASSERT_EQ(message_data_len(m[0]), sizeof(head) - 1 + BODY);

	close_spool(); /* a restart */
	open_spool(1);
	recover(&c);
	ASSERT_EQ(c.loaded, 2);
	ASSERT_EQ(c.quarantined, 0);
	for (int i = 0; i < 2; i++) {
		const struct message *got = find(&c, m[i]->id);
		ASSERT(got != NULL);
		ASSERT_EQ(got->data.len, sizeof(head) - 1 + BODY);
		ASSERT(memcmp(got->data.data, head, sizeof(head) - 1) == 0);
		ASSERT(memcmp(got->data.data + sizeof(head) - 1, body, BODY) == 0);
	}
	collected_free(&c);
	message_unref(m[0]);
	message_unref(m[1]);
	free(body);
	teardown();
}

/* The RocksDB kind keeps bodies in memory: no spill file is offered. */
TEST_IMPL(spool_spill_refused_for_rocksdb)
{
	setup();
	kind_mode = SPOOL_KIND_ROCKSDB;
	open_spool(0);
	ASSERT_EQ(spool_spill_open(), -ENOTSUP);
	close_spool();
	kind_mode = SPOOL_KIND_LOCALDISK;
	ASSERT_EQ(uv_loop_close(&loop), 0);
	rm_rf(dir);
}

/* --- deferred spooling (spool_defer.c) ------------------------------------------ */

static void on_saved(struct message *m, int err)
{
	(void)m;
	ASSERT_EQ(err, 0);
}

/* Accepted without a write, acknowledged on a later loop iteration; never
 * shrunk; discarded without touching the disk, or saved (once) and then
 * recovered; discarded during its save: removed once the save completed. */
TEST_IMPL(spool_deferred_lifecycle)
{
	setup();
	open_spool(1);
	struct message *m[3];
	make_msgs(m, 3, 300);
	struct results r = {0};
	for (int i = 0; i < 3; i++)
		spool_store_deferred(m[i], on_done, &r);
	ASSERT_EQ(r.done, 0); /* never from inside the call */
	while (r.done < 3)
		uv_run(&loop, UV_RUN_ONCE);
	for (int i = 0; i < 3; i++) {
		ASSERT_EQ(r.err[i], 0);
		ASSERT_EQ(m[i]->spool_deferred, 1);
		ASSERT_EQ(message_shrink_data(m[i]), 0); /* the only copy of the body */
	}
	char p[256];
	file_path(p, sizeof(p), meta_path, m[0]->id);
	struct spool_stats st;
	spool_get_stats(&st);
	ASSERT_EQ(st.stored, 0);

	spool_discard(m[0]); /* delivered at once: no file, no removal */
	ASSERT_EQ(m[0]->spool_gone, 1);
	ASSERT_EQ(spool_save_deferred(m[0], "TransientFailure", on_saved), 0);

	ASSERT_EQ(spool_save_deferred(m[1], "TransientFailure", on_saved), 1);
	ASSERT_EQ(spool_save_deferred(m[1], "TransientFailure", on_saved), 0); /* in flight */
	ASSERT_EQ(spool_save_deferred(m[2], "Shutdown", on_saved), 1);
	spool_discard(m[2]); /* its outcome arrives while the save is in flight */
	while (m[1]->spool_saving || m[2]->spool_saving)
		uv_run(&loop, UV_RUN_ONCE);
	ASSERT_EQ(m[1]->spool_deferred, 0);
	ASSERT_EQ(m[1]->data_stored, 1);
	uv_run(&loop, UV_RUN_NOWAIT);
	spool_get_stats(&st);
	while (st.removed < 1) { /* m[2]'s removal follows its save */
		uv_run(&loop, UV_RUN_ONCE);
		spool_get_stats(&st);
	}
	ASSERT_EQ(st.stored, 2);
	ASSERT_EQ(st.removed, 1);
	ASSERT(!exists(p));
	file_path(p, sizeof(p), meta_path, m[2]->id);
	ASSERT(!exists(p));
	ASSERT_EQ(message_shrink_data(m[1]), 1); /* stored now: may leave memory */

	close_spool(); /* a restart */
	open_spool(1);
	struct collected c;
	recover(&c);
	ASSERT_EQ(c.loaded, 1);
	ASSERT(find(&c, m[1]->id) != NULL);
	collected_free(&c);
	unref_msgs(m, 3);
	teardown();
}

/* A message the spool could not write later is refused at once. */
TEST_IMPL(spool_deferred_refuses_what_it_could_not_save)
{
	setup();
	open_spool(1);
	struct message *m = message_new();
	message_set_sender(m, "a@example.com");
	message_set_data(m, "x", 1); /* no recipient */
	struct results r = {0};
	spool_store_deferred(m, on_done, &r);
	while (r.done < 1)
		uv_run(&loop, UV_RUN_ONCE);
	ASSERT_EQ(r.err[0], -EINVAL);
	ASSERT_EQ(m->spool_deferred, 0);
	message_unref(m);
	teardown();
}
