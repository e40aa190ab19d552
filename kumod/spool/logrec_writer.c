/* SPDX-License-Identifier: Apache-2.0 */
/* The log-record writer thread of one logger: drains the queue of formatted
 * lines into segment files (one zstd frame per segment, or plain text) under
 * log_dir and the per_record files (another directory or a suffix, each with
 * its own open segment), rolls them on size and age as KumoMTA does, and
 * leaves notes of what it did for the loop side to report. It never logs, traces or touches the
 * task registry itself: those are loop-thread state. */
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

/* Writer-thread private state of one file (log_dir plus suffix): one open
 * segment at most. */
struct logrec_seg {
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
};

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

static void note(struct logrec_writer *w, struct logrec_seg *s, enum logrec_note_kind kind,
		 const char *what, int err, uint64_t lost)
{
	const char *path = s && s->path ? s->path : w->log_dir;
	size_t plen = strlen(path) + 1;
	struct logrec_note *n = xmalloc(sizeof(*n) + plen);
	*n = (struct logrec_note){.kind = kind,
				  .what = what,
				  .err = err,
				  .records = s ? s->records : 0,
				  .bytes_in = s ? s->bytes_in : 0,
				  .bytes_out = s ? s->bytes_out : 0,
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
static int out_drain(struct logrec_writer *w, struct logrec_seg *s)
{
	size_t off = 0;
	while (off < s->olen) {
		int ferr = fault(FAULT_WRITE);
		ssize_t k = ferr ? (errno = ferr, -1) : write(s->fd, s->obuf + off, s->olen - off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			s->op = "write";
			return -errno;
		}
		off += (size_t)k;
		s->bytes_out += (size_t)k;
		w->delta.bytes_out += (size_t)k;
	}
	s->olen = 0;
	return 0;
}

static int plain_append(struct logrec_writer *w, struct logrec_seg *s, const char *p, size_t n)
{
	while (n) {
		if (s->olen == s->ocap) {
			int rc = out_drain(w, s);
			if (rc < 0)
				return rc;
		}
		size_t k = s->ocap - s->olen < n ? s->ocap - s->olen : n;
		memcpy(s->obuf + s->olen, p, k);
		s->olen += k;
		p += k;
		n -= k;
	}
	return 0;
}

/* Feeds p[0..n) to the compressor with the given directive; for flush and
 * end, until the compressor has nothing left. */
static int zstd_feed(struct logrec_writer *w, struct logrec_seg *s, const void *p, size_t n,
		     ZSTD_EndDirective mode)
{
	ZSTD_inBuffer in = {p, n, 0};
	for (;;) {
		if (s->olen == s->ocap) {
			int rc = out_drain(w, s);
			if (rc < 0)
				return rc;
		}
		ZSTD_outBuffer out = {s->obuf + s->olen, s->ocap - s->olen, 0};
		size_t left = ZSTD_compressStream2(s->zc, &out, &in, mode);
		if (ZSTD_isError(left)) {
			s->op = "compress";
			return -EIO;
		}
		s->olen += out.pos;
		if (mode == ZSTD_e_continue ? in.pos == in.size : left == 0)
			return 0;
	}
}

/* Everything given so far is in the file. */
static void mark_on_disk(struct logrec_writer *w, struct logrec_seg *s)
{
	w->delta.written += s->records - s->records_on_disk;
	s->records_on_disk = s->records;
	s->dirty = 0;
}

/* Pushes buffered records into the file: plain text is written as is; zstd
 * is flushed (ZSTD_e_flush) so the records can be read from the open file. */
static int segment_flush(struct logrec_writer *w, struct logrec_seg *s)
{
	int rc = s->zc && s->dirty ? zstd_feed(w, s, NULL, 0, ZSTD_e_flush) : 0;
	if (rc == 0)
		rc = out_drain(w, s);
	if (rc == 0 && (!s->zc || s->dirty))
		mark_on_disk(w, s);
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

static void segment_reset(struct logrec_seg *s)
{
	s->fd = -1;
	xfree(s->path);
	s->expires_ns = 0;
	s->records = s->records_on_disk = s->bytes_in = s->bytes_out = 0;
	s->dirty = 0;
	s->olen = 0;
	if (s->zc)
		ZSTD_CCtx_reset(s->zc, ZSTD_reset_session_only);
}

/* The segment cannot be trusted any more: records not known to be in the file
 * are lost, the file is closed as it is and no new one is opened for a while. */
static void segment_fail(struct logrec_writer *w, struct logrec_seg *s, int err)
{
	uint64_t lost = s->records - s->records_on_disk;
	w->delta.lost += lost;
	w->delta.errors++;
	note(w, s, LOGREC_NOTE_ERROR, s->op, err, lost);
	mark_done_fd(s->fd);
	close(s->fd);
	s->records = s->records_on_disk;
	note(w, s, LOGREC_NOTE_CLOSE, "error", 0, 0);
	segment_reset(s);
	s->retry_ns = clock_mono_ns() + RETRY_OPEN_NS;
}

static void segment_close(struct logrec_writer *w, struct logrec_seg *s, const char *reason)
{
	if (s->fd < 0)
		return;
	set_phase(w, LOGREC_PHASE_ROLLING);
	int rc = s->zc ? zstd_feed(w, s, NULL, 0, ZSTD_e_end) : 0;
	if (rc == 0)
		rc = out_drain(w, s);
	if (rc < 0) {
		segment_fail(w, s, rc);
		return;
	}
	mark_on_disk(w, s);
	mark_done_fd(s->fd);
	if (close(s->fd) != 0) {
		/* the data may not have reached the disk (NFS, quota) */
		s->op = "close";
		w->delta.errors++;
		note(w, s, LOGREC_NOTE_ERROR, s->op, -errno, 0);
	}
	note(w, s, LOGREC_NOTE_CLOSE, reason, 0, 0);
	segment_reset(s);
}

/* <dir>/YYYYMMDD-HHMMSS.nnnnnnnnn<suffix> from the UTC open time, as
 * KumoMTA's "%Y%m%d-%H%M%S%.f" (nine digits always, so names sort by time)
 * followed by the per_record suffix. */
static char *segment_name(const struct logrec_file *f, uint64_t wall_ns)
{
	time_t t = (time_t)(wall_ns / 1000000000u);
	struct tm tm;
	char stamp[32];
	gmtime_r(&t, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
	return xasprintf("%s/%s.%09u%s", f->dir, stamp, (unsigned)(wall_ns % 1000000000u),
			 f->suffix ? f->suffix : "");
}

static int segment_open(struct logrec_writer *w, struct logrec_file *f, uint64_t now)
{
	struct logrec_seg *s = f->seg;
	if (now < s->retry_ns)
		return -EAGAIN;
	uint64_t wall = clock_wall_ns();
	int fd = -1, err = 0;
	for (int tries = 0; tries < 16; tries++, wall++) {
		xfree(s->path);
		s->path = segment_name(f, wall);
		int ferr = fault(FAULT_OPEN);
		fd = ferr ? (errno = ferr, -1)
			  : open(s->path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0666);
		err = fd < 0 ? errno : 0;
		if (fd >= 0 || err != EEXIST)
			break;
	}
	if (fd < 0) {
		w->delta.errors++;
		s->op = "open";
		note(w, s, LOGREC_NOTE_ERROR, s->op, -err, 1);
		xfree(s->path);
		s->retry_ns = now + RETRY_OPEN_NS;
		return -err;
	}
	s->fd = fd;
	s->expires_ns = w->max_segment_ns ? now + w->max_segment_ns : 0;
	w->delta.segments++;
	note(w, s, LOGREC_NOTE_OPEN, "open", 0, 0);
	/* per_record segment_header: the first bytes of every segment */
	if (f->header && *f->header) {
		size_t n = strlen(f->header);
		int rc = s->zc ? zstd_feed(w, s, f->header, n, ZSTD_e_continue)
			       : plain_append(w, s, f->header, n);
		if (rc < 0) {
			segment_fail(w, s, rc);
			return rc;
		}
	}
	return 0;
}

/* --- records ---------------------------------------------------------------- */

static void write_record(struct logrec_writer *w, struct logrec_file *f, const char *line,
			 size_t len)
{
	struct logrec_seg *s = f->seg;
	uint64_t now = clock_mono_ns();
	if (s->fd < 0 && segment_open(w, f, now) < 0) {
		w->delta.lost++;
		return;
	}
	s->records++;
	s->bytes_in += len;
	w->delta.bytes_in += len;
	int rc =
	    s->zc ? zstd_feed(w, s, line, len, ZSTD_e_continue) : plain_append(w, s, line, len);
	if (rc < 0) {
		segment_fail(w, s, rc);
		return;
	}
	if (s->zc && !s->dirty) {
		s->dirty = 1;
		s->flush_due_ns = now + FLUSH_INTERVAL_NS;
	}
	/* as KumoMTA: checked after the record, so a segment may exceed
	 * max_file_size by one record */
	if (s->bytes_in >= w->max_file_size)
		segment_close(w, s, "size");
	else if (s->expires_ns && now >= s->expires_ns)
		segment_close(w, s, "age");
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
		write_record(w, &w->files[it->file < w->nfiles ? it->file : 0], it->line, it->len);
		free(it);
		it = next;
		n++;
	}
	/* plain text goes out with every batch; zstd output as blocks complete */
	for (size_t i = 0; i < w->nfiles; i++) {
		struct logrec_seg *s = w->files[i].seg;
		if (s->fd < 0)
			continue;
		int rc = s->zc ? out_drain(w, s) : segment_flush(w, s);
		if (rc < 0)
			segment_fail(w, s, rc);
	}
	return n;
}

/* Time-driven work: the age roll of an idle segment and the periodic flush. */
static void timers(struct logrec_writer *w, uint64_t now)
{
	for (size_t i = 0; i < w->nfiles; i++) {
		struct logrec_seg *s = w->files[i].seg;
		if (s->fd < 0)
			continue;
		if (s->expires_ns && now >= s->expires_ns) {
			segment_close(w, s, "age");
			continue;
		}
		if (s->dirty && now >= s->flush_due_ns) {
			int rc = segment_flush(w, s);
			if (rc < 0)
				segment_fail(w, s, rc);
		}
	}
}

static uint64_t next_deadline(struct logrec_writer *w)
{
	uint64_t d = 0;
	for (size_t i = 0; i < w->nfiles; i++) {
		struct logrec_seg *s = w->files[i].seg;
		if (s->fd >= 0 && s->expires_ns && (!d || s->expires_ns < d))
			d = s->expires_ns;
		if (s->fd >= 0 && s->dirty && (!d || s->flush_due_ns < d))
			d = s->flush_due_ns;
	}
	return d;
}

/* With w->mu held: returns when records are queued, stop was asked, or a
 * timer (flush, age) is due. */
static void wait_for_work(struct logrec_writer *w)
{
	while (!w->head && !w->stop) {
		uint64_t deadline = next_deadline(w);
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

static void close_all(struct logrec_writer *w, const char *reason)
{
	for (size_t i = 0; i < w->nfiles; i++)
		segment_close(w, w->files[i].seg, reason);
}

static void *writer_main(void *arg)
{
	struct logrec_writer *w = arg;
	pthread_setname_np(pthread_self(), "kumod-logrec");
	for (size_t i = 0; i < w->nfiles; i++) {
		size_t j = 0;
		while (j < i && strcmp(w->files[j].dir, w->files[i].dir) != 0)
			j++;
		if (j == i) /* each directory once */
			mark_existing_done(w->files[i].dir);
	}
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
			close_all(w, "shutdown");
		else
			timers(w, clock_mono_ns());

		pthread_mutex_lock(&w->mu);
		w->pending -= n;
		add_counts(&w->total, &w->delta);
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

static int compressor_new(struct logrec_seg *s, int level, char *err, size_t errlen)
{
	s->zc = ZSTD_createCCtx();
	if (!s->zc)
		panic("%s: ZSTD_createCCtx: out of memory", __func__);
	size_t r = ZSTD_CCtx_setParameter(s->zc, ZSTD_c_compressionLevel, level);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setParameter(s->zc, ZSTD_c_checksumFlag, 1);
	if (ZSTD_isError(r)) {
		snprintf(err, errlen, "zstd compression level %d: %s", level, ZSTD_getErrorName(r));
		ZSTD_freeCCtx(s->zc);
		s->zc = NULL;
		return -EINVAL;
	}
	return 0;
}

static void writer_free_private(struct logrec_writer *w)
{
	for (size_t i = 0; i < w->nfiles; i++) {
		struct logrec_seg *s = w->files[i].seg;
		if (!s)
			continue;
		ZSTD_freeCCtx(s->zc);
		xfree(s->obuf);
		xfree(s->path);
		free(s);
		w->files[i].seg = NULL;
	}
	w->delta = (struct logrec_counts){0};
}

int logrec__writer_start(struct logrec_writer *w, char *err, size_t errlen)
{
	for (size_t i = 0; i < w->nfiles; i++) {
		struct logrec_seg *s = xcalloc(1, sizeof(*s));
		s->fd = -1;
		w->files[i].seg = s;
		if (w->level && compressor_new(s, w->level, err, errlen) < 0) {
			writer_free_private(w);
			return -EINVAL;
		}
		s->ocap = s->zc ? ZSTD_CStreamOutSize() : PLAIN_BUF_SIZE;
		s->obuf = xmalloc(s->ocap);
	}

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
		writer_free_private(w);
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
	writer_free_private(w);
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
