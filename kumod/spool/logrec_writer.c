/* SPDX-License-Identifier: Apache-2.0 */
/* The log-record writer thread: drains the queue of formatted JSON lines into
 * segment files under log_dir (one zstd frame per segment, or plain text),
 * rolls them on size and age as KumoMTA does, and leaves notes of what it did
 * for the loop side to report. It never logs, traces or touches the task
 * registry itself: those are loop-thread state. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "base/clock.h"
#include "base/xalloc.h"
#include "spool/logrec_int.h"

/* A compressed segment is flushed (a complete zstd block, so a reader of the
 * open file sees the records) this long after its first unflushed record. */
#define FLUSH_INTERVAL_NS 1000000000ull
/* After a failed open or write, segments are not reopened before this delay;
 * records arriving meanwhile are counted as lost. */
#define RETRY_OPEN_NS 1000000000ull
#define PLAIN_BUF_SIZE (64 * 1024)

/* Writer-thread private state: one open segment at most. */
static struct {
	ZSTD_CCtx *zc; /* NULL: plain text */
	char *obuf;    /* output not yet written to the file */
	size_t ocap, olen;
	int fd; /* -1: no segment open */
	char *path;
	uint64_t expires_ns; /* monotonic; 0: never */
	uint64_t records, records_on_disk, bytes_in, bytes_out;
	int dirty; /* zstd: records given to the compressor since the last flush */
	uint64_t flush_due_ns;
	uint64_t retry_ns; /* monotonic: no open before */
	const char *op;	   /* the step that failed */
	struct logrec_counts delta;
} wr = {.fd = -1};

/* --- fault injection (unit tests) ----------------------------------------- */

enum {
	FAULT_OPEN,
	FAULT_WRITE,
	NFAULTS
};
static struct {
	unsigned calls, first, last;
	int err;
} faults[NFAULTS];
static pthread_mutex_t faults_mu = PTHREAD_MUTEX_INITIALIZER;

void logrec__inject_fault(const char *op, unsigned nth, unsigned count, int err)
{
	int i = strcmp(op, "open") == 0 ? FAULT_OPEN : FAULT_WRITE;
	pthread_mutex_lock(&faults_mu);
	faults[i].calls = 0;
	faults[i].first = nth;
	faults[i].last = nth + count - 1;
	faults[i].err = err;
	pthread_mutex_unlock(&faults_mu);
}

/* 0, or the errno the current call of op must fail with. */
static int fault(int op)
{
	pthread_mutex_lock(&faults_mu);
	unsigned n = ++faults[op].calls;
	int err =
	    faults[op].err && n >= faults[op].first && n <= faults[op].last ? faults[op].err : 0;
	pthread_mutex_unlock(&faults_mu);
	return err;
}

/* --- notes and phase -------------------------------------------------------- */

static void note(struct logrec_writer *w, enum logrec_note_kind kind, const char *what, int err,
		 uint64_t lost)
{
	const char *path = wr.path ? wr.path : w->log_dir;
	size_t plen = strlen(path) + 1;
	struct logrec_note *n = xmalloc(sizeof(*n) + plen);
	*n = (struct logrec_note){.kind = kind,
				  .what = what,
				  .err = err,
				  .records = wr.records,
				  .bytes_in = wr.bytes_in,
				  .bytes_out = wr.bytes_out,
				  .lost = lost};
	memcpy(n->path, path, plen);
	pthread_mutex_lock(&w->mu);
	if (w->nnotes >= LOGREC_NOTES_MAX) {
		w->notes_dropped++;
		free(n);
	} else {
		if (w->notes_tail)
			w->notes_tail->next = n;
		else
			w->notes = n;
		w->notes_tail = n;
		w->nnotes++;
	}
	pthread_mutex_unlock(&w->mu);
}

static void set_phase(struct logrec_writer *w, enum logrec_phase p)
{
	__atomic_store_n(&w->phase, (int)p, __ATOMIC_RELAXED);
}

/* --- output ----------------------------------------------------------------- */

/* Writes the output buffer to the segment. */
static int out_drain(void)
{
	size_t off = 0;
	while (off < wr.olen) {
		int ferr = fault(FAULT_WRITE);
		ssize_t k = ferr ? (errno = ferr, -1) : write(wr.fd, wr.obuf + off, wr.olen - off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			wr.op = "write";
			return -errno;
		}
		off += (size_t)k;
		wr.bytes_out += (size_t)k;
		wr.delta.bytes_out += (size_t)k;
	}
	wr.olen = 0;
	return 0;
}

static int plain_append(const char *p, size_t n)
{
	while (n) {
		if (wr.olen == wr.ocap) {
			int rc = out_drain();
			if (rc < 0)
				return rc;
		}
		size_t k = wr.ocap - wr.olen < n ? wr.ocap - wr.olen : n;
		memcpy(wr.obuf + wr.olen, p, k);
		wr.olen += k;
		p += k;
		n -= k;
	}
	return 0;
}

/* Feeds p[0..n) to the compressor with the given directive; for flush and
 * end, until the compressor has nothing left. */
static int zstd_feed(const void *p, size_t n, ZSTD_EndDirective mode)
{
	ZSTD_inBuffer in = {p, n, 0};
	for (;;) {
		if (wr.olen == wr.ocap) {
			int rc = out_drain();
			if (rc < 0)
				return rc;
		}
		ZSTD_outBuffer out = {wr.obuf + wr.olen, wr.ocap - wr.olen, 0};
		size_t left = ZSTD_compressStream2(wr.zc, &out, &in, mode);
		if (ZSTD_isError(left)) {
			wr.op = "compress";
			return -EIO;
		}
		wr.olen += out.pos;
		if (mode == ZSTD_e_continue ? in.pos == in.size : left == 0)
			return 0;
	}
}

/* Everything given so far is in the file. */
static void mark_on_disk(void)
{
	wr.delta.written += wr.records - wr.records_on_disk;
	wr.records_on_disk = wr.records;
	wr.dirty = 0;
}

/* Pushes buffered records into the file: plain text is written as is; zstd
 * is flushed (ZSTD_e_flush) so the records can be read from the open file. */
static int segment_flush(void)
{
	int rc = wr.zc && wr.dirty ? zstd_feed(NULL, 0, ZSTD_e_flush) : 0;
	if (rc == 0)
		rc = out_drain();
	if (rc == 0 && (!wr.zc || wr.dirty))
		mark_on_disk();
	return rc;
}

/* --- segments --------------------------------------------------------------- */

/* Clears the write bits: KumoMTA's signal to tailers that a segment is done. */
static void mark_done_fd(int fd)
{
	struct stat st;
	if (fstat(fd, &st) == 0)
		(void)fchmod(fd, st.st_mode & ~(mode_t)0222);
}

static void segment_reset(void)
{
	wr.fd = -1;
	xfree(wr.path);
	wr.expires_ns = 0;
	wr.records = wr.records_on_disk = wr.bytes_in = wr.bytes_out = 0;
	wr.dirty = 0;
	wr.olen = 0;
	if (wr.zc)
		ZSTD_CCtx_reset(wr.zc, ZSTD_reset_session_only);
}

/* The segment cannot be trusted any more: records not known to be in the file
 * are lost, the file is closed as it is and no new one is opened for a while. */
static void segment_fail(struct logrec_writer *w, int err)
{
	uint64_t lost = wr.records - wr.records_on_disk;
	wr.delta.lost += lost;
	wr.delta.errors++;
	note(w, LOGREC_NOTE_ERROR, wr.op, err, lost);
	mark_done_fd(wr.fd);
	close(wr.fd);
	wr.records = wr.records_on_disk;
	note(w, LOGREC_NOTE_CLOSE, "error", 0, 0);
	segment_reset();
	wr.retry_ns = clock_mono_ns() + RETRY_OPEN_NS;
}

static void segment_close(struct logrec_writer *w, const char *reason)
{
	if (wr.fd < 0)
		return;
	set_phase(w, LOGREC_PHASE_ROLLING);
	int rc = wr.zc ? zstd_feed(NULL, 0, ZSTD_e_end) : 0;
	if (rc == 0)
		rc = out_drain();
	if (rc < 0) {
		segment_fail(w, rc);
		return;
	}
	mark_on_disk();
	mark_done_fd(wr.fd);
	if (close(wr.fd) != 0) {
		/* the data may not have reached the disk (NFS, quota) */
		wr.op = "close";
		wr.delta.errors++;
		note(w, LOGREC_NOTE_ERROR, wr.op, -errno, 0);
	}
	note(w, LOGREC_NOTE_CLOSE, reason, 0, 0);
	segment_reset();
}

/* <log_dir>/YYYYMMDD-HHMMSS.nnnnnnnnn from the UTC open time, as KumoMTA's
 * "%Y%m%d-%H%M%S%.f" (nine digits always, so names sort by time). */
static char *segment_name(const char *dir, uint64_t wall_ns)
{
	time_t s = (time_t)(wall_ns / 1000000000u);
	struct tm tm;
	char stamp[32];
	gmtime_r(&s, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
	return xasprintf("%s/%s.%09u", dir, stamp, (unsigned)(wall_ns % 1000000000u));
}

static int segment_open(struct logrec_writer *w, uint64_t now)
{
	if (now < wr.retry_ns)
		return -EAGAIN;
	uint64_t wall = clock_wall_ns();
	int fd = -1, err = 0;
	for (int tries = 0; tries < 16; tries++, wall++) {
		xfree(wr.path);
		wr.path = segment_name(w->log_dir, wall);
		int ferr = fault(FAULT_OPEN);
		fd = ferr ? (errno = ferr, -1)
			  : open(wr.path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0666);
		err = fd < 0 ? errno : 0;
		if (fd >= 0 || err != EEXIST)
			break;
	}
	if (fd < 0) {
		wr.delta.errors++;
		wr.op = "open";
		note(w, LOGREC_NOTE_ERROR, wr.op, -err, 1);
		xfree(wr.path);
		wr.retry_ns = now + RETRY_OPEN_NS;
		return -err;
	}
	wr.fd = fd;
	wr.expires_ns = w->max_segment_ns ? now + w->max_segment_ns : 0;
	wr.delta.segments++;
	note(w, LOGREC_NOTE_OPEN, "open", 0, 0);
	return 0;
}

/* --- records ---------------------------------------------------------------- */

static void write_record(struct logrec_writer *w, const char *line, size_t len)
{
	uint64_t now = clock_mono_ns();
	if (wr.fd < 0 && segment_open(w, now) < 0) {
		wr.delta.lost++;
		return;
	}
	wr.records++;
	wr.bytes_in += len;
	wr.delta.bytes_in += len;
	int rc = wr.zc ? zstd_feed(line, len, ZSTD_e_continue) : plain_append(line, len);
	if (rc < 0) {
		segment_fail(w, rc);
		return;
	}
	if (wr.zc && !wr.dirty) {
		wr.dirty = 1;
		wr.flush_due_ns = now + FLUSH_INTERVAL_NS;
	}
	/* as KumoMTA: checked after the record, so a segment may exceed
	 * max_file_size by one record */
	if (wr.bytes_in >= w->max_file_size)
		segment_close(w, "size");
	else if (wr.expires_ns && now >= wr.expires_ns)
		segment_close(w, "age");
	else
		set_phase(w, LOGREC_PHASE_WRITING);
}

/* Writes and frees a batch; returns how many records it held. */
static size_t write_batch(struct logrec_writer *w, struct logrec_item *it)
{
	size_t n = 0;
	set_phase(w, LOGREC_PHASE_WRITING);
	while (it) {
		struct logrec_item *next = it->next;
		write_record(w, it->line, it->len);
		free(it);
		it = next;
		n++;
	}
	/* plain text goes out with every batch; zstd output as blocks complete */
	if (wr.fd >= 0) {
		int rc = wr.zc ? out_drain() : segment_flush();
		if (rc < 0)
			segment_fail(w, rc);
	}
	return n;
}

/* Time-driven work: the age roll of an idle segment and the periodic flush. */
static void timers(struct logrec_writer *w, uint64_t now)
{
	if (wr.fd < 0)
		return;
	if (wr.expires_ns && now >= wr.expires_ns) {
		segment_close(w, "age");
		return;
	}
	if (wr.dirty && now >= wr.flush_due_ns) {
		int rc = segment_flush();
		if (rc < 0)
			segment_fail(w, rc);
	}
}

static uint64_t next_deadline(void)
{
	uint64_t d = 0;
	if (wr.fd >= 0 && wr.expires_ns)
		d = wr.expires_ns;
	if (wr.fd >= 0 && wr.dirty && (!d || wr.flush_due_ns < d))
		d = wr.flush_due_ns;
	return d;
}

/* With w->mu held: returns when records are queued, stop was asked, or a
 * timer (flush, age) is due. */
static void wait_for_work(struct logrec_writer *w)
{
	while (!w->head && !w->stop) {
		uint64_t deadline = next_deadline();
		if (!deadline) {
			pthread_cond_wait(&w->wake, &w->mu);
			continue;
		}
		if (clock_mono_ns() >= deadline)
			return;
		struct timespec ts = {(time_t)(deadline / 1000000000u),
				      (long)(deadline % 1000000000u)};
		pthread_cond_timedwait(&w->wake, &w->mu, &ts);
	}
}

/* KumoMTA marks every file already in log_dir as done at start: a tailer
 * must not wait for segments of a previous run. */
static void mark_existing_done(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISREG(st.st_mode) && (st.st_mode & 0222))
			(void)fchmodat(dirfd(d), de->d_name, st.st_mode & ~(mode_t)0222, 0);
	}
	closedir(d);
}

static void add_counts(struct logrec_counts *to, struct logrec_counts *from)
{
	to->written += from->written;
	to->lost += from->lost;
	to->errors += from->errors;
	to->segments += from->segments;
	to->bytes_in += from->bytes_in;
	to->bytes_out += from->bytes_out;
	*from = (struct logrec_counts){0};
}

static void *writer_main(void *arg)
{
	struct logrec_writer *w = arg;
	pthread_setname_np(pthread_self(), "kumod-logrec");
	mark_existing_done(w->log_dir);
	pthread_mutex_lock(&w->mu);
	for (;;) {
		set_phase(w, LOGREC_PHASE_IDLE);
		wait_for_work(w);
		struct logrec_item *batch = w->head;
		int stop = w->stop;
		w->head = w->tail = NULL;
		pthread_mutex_unlock(&w->mu);

		size_t n = batch ? write_batch(w, batch) : 0;
		if (stop && !batch)
			segment_close(w, "shutdown");
		else
			timers(w, clock_mono_ns());

		pthread_mutex_lock(&w->mu);
		w->pending -= n;
		add_counts(&w->total, &wr.delta);
		if (n)
			pthread_cond_broadcast(&w->room);
		if (stop && !batch)
			break;
	}
	set_phase(w, LOGREC_PHASE_IDLE);
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* --- start and stop ---------------------------------------------------------- */

static int compressor_new(int level, char *err, size_t errlen)
{
	wr.zc = ZSTD_createCCtx();
	if (!wr.zc)
		panic("%s: ZSTD_createCCtx: out of memory", __func__);
	size_t r = ZSTD_CCtx_setParameter(wr.zc, ZSTD_c_compressionLevel, level);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setParameter(wr.zc, ZSTD_c_checksumFlag, 1);
	if (ZSTD_isError(r)) {
		snprintf(err, errlen, "zstd compression level %d: %s", level, ZSTD_getErrorName(r));
		ZSTD_freeCCtx(wr.zc);
		wr.zc = NULL;
		return -EINVAL;
	}
	return 0;
}

static void writer_free_private(void)
{
	ZSTD_freeCCtx(wr.zc);
	wr.zc = NULL;
	xfree(wr.obuf);
	xfree(wr.path);
	wr.fd = -1;
	wr.retry_ns = 0;
	wr.delta = (struct logrec_counts){0};
}

int logrec__writer_start(struct logrec_writer *w, char *err, size_t errlen)
{
	if (w->level && compressor_new(w->level, err, errlen) < 0)
		return -EINVAL;
	wr.ocap = wr.zc ? ZSTD_CStreamOutSize() : PLAIN_BUF_SIZE;
	wr.obuf = xmalloc(wr.ocap);
	wr.olen = 0;

	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->wake, &ca);
	pthread_cond_init(&w->room, NULL);
	pthread_condattr_destroy(&ca);

	/* signals stay with the loop thread */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = pthread_create(&w->thread, NULL, writer_main, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		snprintf(err, errlen, "starting the log writer thread: %s", strerror(rc));
		pthread_cond_destroy(&w->wake);
		pthread_cond_destroy(&w->room);
		pthread_mutex_destroy(&w->mu);
		writer_free_private();
		return -rc;
	}
	w->started = 1;
	return 0;
}

void logrec__writer_stop(struct logrec_writer *w)
{
	if (!w->started)
		return;
	pthread_mutex_lock(&w->mu);
	w->stop = 1;
	pthread_cond_signal(&w->wake);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);
	w->started = 0;
	writer_free_private();
}

void logrec__writer_destroy(struct logrec_writer *w)
{
	if (w->started)
		panic("%s: writer still running", __func__);
	while (w->notes) {
		struct logrec_note *n = w->notes;
		w->notes = n->next;
		free(n);
	}
	w->notes_tail = NULL;
	w->nnotes = 0;
	pthread_cond_destroy(&w->wake);
	pthread_cond_destroy(&w->room);
	pthread_mutex_destroy(&w->mu);
}
