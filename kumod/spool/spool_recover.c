/* SPDX-License-Identifier: Apache-2.0 */
/* Spool recovery and the file shapes: the meta JSON, reading and validating
 * both files of a message, and the restart enumeration. Enumeration reads
 * on the thread pool in chunks (the oldest bucket first) and hands each
 * chunk to the loop thread; nothing here moves a file: quarantine and
 * pruning are queued to the flusher, which revalidates in its serialized
 * lane so a store or remove in flight is never mistaken for damage. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "ktrace.h"
#include "proto/spool_record.h"
#include "spool/message.h"
#include "spool/spool_int.h"

#define SPOOL_META_MAX (64u << 20)   /* a meta file is JSON: bounded */
#define SPOOL_DATA_MAX (1024u << 20) /* beyond any sane message size */
#define RECOVER_CHUNK_MSGS 256
#define RECOVER_CHUNK_BYTES (32u << 20)
#define RECOVER_CHUNK_ENTRIES 4096
#define RECOVER_PROGRESS_NS (5ull * 1000000000ull)

/* --- meta JSON ------------------------------------------------------------------ */

static json_t *recipients_json(const struct message *m)
{
	if (m->nrecipients == 1)
		return json_string(m->recipients[0]);
	json_t *a = json_array();
	for (size_t i = 0; i < m->nrecipients; i++) {
		json_t *r = json_string(m->recipients[i]);
		if (!r || json_array_append_new(a, r) != 0) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

/* {"id", "sender", "recipient" (string, or array when several), "meta",
 * "created" (unix ms), "attempts", "due" (unix ms, 0 = now)}. */
char *spool__meta_encode(const struct message *m, size_t *len, const char **why)
{
	json_t *sender = json_string(m->sender ? m->sender : "");
	json_t *rcpt = m->nrecipients ? recipients_json(m) : NULL;
	char *out = NULL;
	if (!sender || !rcpt) {
		*why = !sender		? "sender is not valid UTF-8"
		       : m->nrecipients ? "a recipient is not valid UTF-8"
					: "message has no recipient";
		json_decref(sender);
		json_decref(rcpt);
		return NULL;
	}
	json_t *o = json_object();
	json_object_set_new(o, "id", json_string(m->id));
	json_object_set_new(o, "sender", sender);
	json_object_set_new(o, "recipient", rcpt);
	json_object_set(o, "meta", json_is_object(m->meta) ? m->meta : json_object());
	json_object_set_new(o, "created", json_integer((json_int_t)(m->created_ns / 1000000u)));
	json_object_set_new(o, "attempts", json_integer((json_int_t)m->attempts));
	json_object_set_new(o, "due", json_integer((json_int_t)m->due_ms));
	out = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!out) {
		*why = "meta cannot be serialized";
		return NULL;
	}
	*len = strlen(out);
	return out;
}

static int meta_int(json_t *o, const char *key, int required, uint64_t max, uint64_t *out)
{
	json_t *v = json_object_get(o, key);
	if (!v)
		return required ? -1 : 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) > max)
		return -1;
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static int meta_recipients(json_t *r, struct message *m)
{
	if (json_is_string(r)) {
		message_add_recipient(m, json_string_value(r));
		return 0;
	}
	if (!json_is_array(r) || json_array_size(r) == 0)
		return -1;
	size_t i;
	json_t *v;
	json_array_foreach(r, i, v)
	{
		if (!json_is_string(v))
			return -1;
		message_add_recipient(m, json_string_value(v));
	}
	return 0;
}

/* The fields into a new message with the given id, or NULL and *why. */
static struct message *meta_decode(const unsigned char *p, size_t n, const char *id,
				   const char **why)
{
	json_error_t je;
	json_t *o = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &je);
	struct message *m = NULL;
	uint64_t created = 0, attempts = 0, due = 0;
	*why = "meta JSON does not parse";
	if (!o)
		return NULL;
	json_t *jid = json_object_get(o, "id"), *sender = json_object_get(o, "sender");
	json_t *meta = json_object_get(o, "meta");
	if (!json_is_object(o) || !json_is_string(jid) || strcmp(json_string_value(jid), id) != 0)
		*why = "meta JSON: missing id or id does not match the file name";
	else if (!json_is_string(sender))
		*why = "meta JSON: sender is not a string";
	else if (!json_is_object(meta))
		*why = "meta JSON: meta is not an object";
	else if (meta_int(o, "created", 1, UINT64_MAX / 1000000u, &created) ||
		 meta_int(o, "attempts", 0, UINT32_MAX, &attempts) ||
		 meta_int(o, "due", 0, INT64_MAX, &due))
		*why = "meta JSON: created, attempts or due is not a valid integer";
	else
		m = message_new_with_id(id);
	if (m) {
		message_set_sender(m, json_string_value(sender));
		json_decref(m->meta);
		m->meta = json_incref(meta);
		m->created_ns = created * 1000000u;
		m->attempts = (uint32_t)attempts;
		m->due_ms = due;
		if (meta_recipients(json_object_get(o, "recipient"), m) != 0) {
			*why =
			    "meta JSON: recipient is not a string or a non-empty array of strings";
			message_unref(m);
			m = NULL;
		}
	}
	json_decref(o);
	return m;
}

/* --- reading and validating ------------------------------------------------------- */

int spool__read_file(int dirfd, const char *rel, size_t max, struct buf *out)
{
	int fd = openat(dirfd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	struct stat st;
	int rc = 0;
	if (fstat(fd, &st) != 0)
		rc = -errno;
	else if (!S_ISREG(st.st_mode))
		rc = -EISDIR;
	else if ((uint64_t)st.st_size > max)
		rc = -EFBIG;
	if (rc == 0)
		buf_reserve(out, (size_t)st.st_size + 1);
	while (rc == 0) {
		if (out->cap - out->len < 2)
			buf_reserve(out, out->len < 4096 ? 4096 : out->len);
		ssize_t n = read(fd, out->data + out->len, out->cap - out->len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			rc = -errno;
		else if (n == 0)
			break;
		else if ((out->len += (size_t)n) > max)
			rc = -EFBIG;
	}
	close(fd);
	return rc;
}

int spool__fetch(enum spool_which which, const char *id, size_t max, struct buf *out)
{
	if (spool__kind == SPOOL_KIND_ROCKSDB)
		return spool__rocks_get(which, id, MESSAGE_ID_LEN, max, out);
	char rel[SPOOL_REL_MAX];
	spool__rel_path(rel, id);
	return spool__read_file(spool__root[which], rel, max, out);
}

int spool__exists(enum spool_which which, const char *id)
{
	if (spool__kind == SPOOL_KIND_ROCKSDB)
		return spool__rocks_exists(which, id, MESSAGE_ID_LEN);
	char rel[SPOOL_REL_MAX];
	spool__rel_path(rel, id);
	return faccessat(spool__root[which], rel, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

static int load_fail(char *why, size_t whylen, const char *file, const char *what)
{
	snprintf(why, whylen, "%s file: %s", file, what);
	return -EBADMSG;
}

/* Validates one stored record of id (p, n: the file or value). */
static int decode_record(enum spool_which which, const char *id, const void *p, size_t n,
			 struct spool_record *rec, char *why, size_t whylen)
{
	const char *file = which == SPOOL_DATA ? "data" : "meta";
	if (n > (which == SPOOL_DATA ? SPOOL_DATA_MAX : SPOOL_META_MAX))
		return load_fail(why, whylen, file, "too large");
	if (spool_record_decode(p ? p : "", n,
				which == SPOOL_DATA ? SPOOL_RECORD_DATA : SPOOL_RECORD_META,
				rec) != 0)
		return load_fail(why, whylen, file, rec->error);
	if (strcmp(rec->id, id) != 0)
		return load_fail(why, whylen, file,
				 "id in the header does not match the file name");
	return 0;
}

static int read_record(enum spool_which which, const char *id, struct buf *b,
		       struct spool_record *rec, char *why, size_t whylen)
{
	const char *file = which == SPOOL_DATA ? "data" : "meta";
	int rc = spool__fetch(which, id, which == SPOOL_DATA ? SPOOL_DATA_MAX : SPOOL_META_MAX, b);
	if (rc == -ENOENT && which == SPOOL_META) {
		snprintf(why, whylen, "meta file vanished");
		return -ENOENT;
	}
	if (rc == -ENOENT)
		return load_fail(why, whylen, "data",
				 "missing (a meta file without its data file)");
	if (rc < 0)
		return load_fail(why, whylen, file, rc == -EFBIG ? "too large" : strerror(-rc));
	return decode_record(which, id, b->data, b->len, rec, why, whylen);
}

/* spool__load from values already read (RocksDB's recovery walk): data
 * NULL when the data value is missing. The body is copied once. */
static int load_values(const char *id, const char *meta, size_t mlen, const char *data, size_t dlen,
		       struct message **out, char *why, size_t whylen)
{
	struct spool_record rec;
	const char *jwhy = NULL;
	struct message *m = NULL;
	int rc = decode_record(SPOOL_META, id, meta, mlen, &rec, why, whylen);
	if (rc == 0 && !(m = meta_decode(rec.payload, rec.len, id, &jwhy)))
		rc = load_fail(why, whylen, "meta", jwhy);
	if (rc == 0 && !data)
		rc = load_fail(why, whylen, "data", "missing (a meta file without its data file)");
	if (rc == 0)
		rc = decode_record(SPOOL_DATA, id, data, dlen, &rec, why, whylen);
	if (rc < 0) {
		message_unref(m);
		return rc;
	}
	struct buf b;
	buf_init(&b);
	buf_reserve(&b, rec.len + 1);
	memcpy(b.data, rec.payload, rec.len);
	b.len = rec.len;
	buf_free(&m->data);
	m->data = b;
	m->data_stored = 1;
	*out = m;
	return 0;
}

int spool__load(const char *id, struct message **out, char *why, size_t whylen)
{
	struct buf b;
	struct spool_record rec;
	const char *jwhy = NULL;
	struct message *m = NULL;
	buf_init(&b);
	int rc = read_record(SPOOL_META, id, &b, &rec, why, whylen);
	if (rc == 0 && !(m = meta_decode(rec.payload, rec.len, id, &jwhy)))
		rc = load_fail(why, whylen, "meta", jwhy);
	buf_reset(&b);
	if (rc == 0)
		rc = read_record(SPOOL_DATA, id, &b, &rec, why, whylen);
	if (rc < 0) {
		message_unref(m);
		buf_free(&b);
		return rc;
	}
	/* the file buffer becomes the message content: no copy */
	memmove(b.data, rec.payload, rec.len);
	b.len = rec.len;
	buf_free(&m->data);
	m->data = b;
	m->data_stored = 1;
	*out = m;
	return 0;
}

/* --- spool_load_data: a shrunk message's body, read back off the loop ----------------- */

struct spool_loader {
	uv_work_t req;
	struct message *m; /* one reference */
	spool_load_cb cb;
	void *ctx;
	struct buf b;
	int rc;	       /* worker: 0, -ENOENT, -EBADMSG (corrupt) or -errno (read) */
	char why[200]; /* the reason for a failure */
	uint64_t start_ns;
};

static void loader_work(uv_work_t *req)
{
	struct spool_loader *l = req->data;
	struct spool_record rec;
	int rc = spool__fetch(SPOOL_DATA, l->m->id, SPOOL_DATA_MAX, &l->b);
	if (rc == -ENOENT) {
		snprintf(l->why, sizeof(l->why), "data file: missing");
	} else if (rc == -EFBIG) {
		rc = load_fail(l->why, sizeof(l->why), "data", "too large");
	} else if (rc < 0) {
		snprintf(l->why, sizeof(l->why), "data file: %s", strerror(-rc));
	} else if (spool_record_decode(l->b.data ? l->b.data : "", l->b.len, SPOOL_RECORD_DATA,
				       &rec) != 0) {
		rc = load_fail(l->why, sizeof(l->why), "data", rec.error);
	} else if (strcmp(rec.id, l->m->id) != 0) {
		rc = load_fail(l->why, sizeof(l->why), "data",
			       "id in the header does not match the file name");
	} else {
		memmove(l->b.data, rec.payload, rec.len);
		l->b.len = rec.len;
		buf_shrink(&l->b, 0);
	}
	l->rc = rc;
}

static void loader_finish(struct spool_loader *l, int err)
{
	uint64_t us = (clock_mono_ns() - l->start_ns) / 1000;
	if (!err) {
		size_t len = l->b.len;
		message_restore_data(l->m, &l->b);
		KTRACE(spool_reload, l->m->id, (uint64_t)len, us);
	} else {
		KTRACE(spool_reload_failed, l->m->id, err, l->why, us);
	}
	buf_free(&l->b);
	if (l->cb)
		l->cb(l->ctx, err, l->why);
	message_unref(l->m);
	free(l);
}

/* After the quarantine op of a body that did not read back: 1 when the
 * message was moved aside. */
static void loader_quarantined(void *ctx, int moved)
{
	struct spool_loader *l = ctx;
	if (moved == 1)
		loader_finish(l, -EBADMSG);
	else if (l->rc == -ENOENT && !spool__exists(SPOOL_META, l->m->id))
		loader_finish(l, -ENOENT); /* the message is no longer in the spool */
	else
		loader_finish(l, l->rc == -EBADMSG ? -EIO : l->rc); /* still valid: retry */
}

static void loader_after(uv_work_t *req, int status)
{
	struct spool_loader *l = req->data;
	if (status < 0 && !l->rc) {
		l->rc = status;
		snprintf(l->why, sizeof(l->why), "data file: read cancelled");
	}
	if (l->rc == 0 || (l->rc != -ENOENT && l->rc != -EBADMSG)) {
		loader_finish(l, l->rc);
	} else if (!spool_is_open()) {
		loader_finish(l, -EIO); /* closing: the next start's recovery decides */
	} else {
		/* unreadable: revalidate and move aside, as recovery does */
		struct spool_op *op = spool__op_new(SPOOL_OP_QUARANTINE, l->m->id);
		op->q->which = SPOOL_META;
		spool__rel_path(op->q->rel, l->m->id);
		op->cb = loader_quarantined;
		op->ctx = l;
		spool__submit(op);
	}
	spool__hold(-1);
}

void spool_load_data(struct message *m, spool_load_cb cb, void *ctx)
{
	if (!spool_is_open())
		panic("%s: spool is not open", __func__);
	struct spool_loader *l = xcalloc(1, sizeof(*l));
	l->req.data = l;
	l->m = message_ref(m);
	l->cb = cb;
	l->ctx = ctx;
	l->start_ns = clock_mono_ns();
	buf_init(&l->b);
	spool__hold(1);
	spool__queue_work(&l->req, loader_work, loader_after);
}

/* --- enumeration (worker side) ------------------------------------------------------ */

struct recover_item {
	enum spool_op_kind kind; /* QUARANTINE (id), QUARANTINE_FILE or PRUNE (which, rel) */
	enum spool_which which;
	char id[MESSAGE_ID_LEN + 1];
	char rel[SPOOL_NAME_MAX];
	char reason[160];
};

struct recover_chunk {
	struct message **msgs;
	size_t nmsgs, capmsgs, bytes;
	struct recover_item *items;
	size_t nitems, capitems;
};

struct spool_recovery {
	uv_work_t req;
	void (*fn)(struct message *m, void *ctx);
	void (*done)(void *ctx, size_t loaded, size_t quarantined);
	void *ctx;
	/* worker cursor: the meta spool first, then the data spool (orphans) */
	enum spool_which walking;
	int finished;
	char (*buckets)[SPOOL_BUCKET_LEN + 1];
	size_t nbuckets, bi;
	DIR *dir;
	size_t bucket_live;
	struct spool_rocks_iter *rit; /* RocksDB: the meta key cursor instead */
	struct spool_rocks_iter *dit; /* and the data key cursor beside it */
	int dit_failed;		      /* a data read error: point reads from then on */
	int has_mkey;		      /* the meta key below waits for its data value */
	char mkey[MESSAGE_ID_LEN + 1];
	struct recover_chunk chunk; /* filled by the worker */
	/* loop side */
	int running, stopping, cancelled;
	size_t loaded, quarantined, skipped, outstanding;
	uint64_t start_ns, last_progress_ns;
	struct task *task; /* "spool_recovery": phase and counts for the console */
};

/* One recovery at a time; quarantine completions find it here. */
static struct spool_recovery *active;
/* The current (or last) recovery's counts, for the metrics. */
static struct spool_recovery_stats rstats;

int spool__recovery_active(void)
{
	return active != NULL;
}

void spool_recovery_get_stats(struct spool_recovery_stats *st)
{
	*st = rstats;
}

/* Loop thread: the task's phase names the spool being walked, its fields
 * and the metrics carry the counts so far. */
static void report_progress(struct spool_recovery *r, const char *phase)
{
	char n[32];
	rstats.loaded = r->loaded;
	rstats.quarantined = r->quarantined;
	task_set_phase(r->task, phase, "disk");
	snprintf(n, sizeof(n), "%zu", r->loaded);
	task_set_field(r->task, "loaded", n);
	snprintf(n, sizeof(n), "%zu", r->quarantined);
	task_set_field(r->task, "quarantined", n);
}

static struct recover_item *chunk_item(struct recover_chunk *c, enum spool_op_kind kind,
				       enum spool_which which)
{
	if (c->nitems == c->capitems) {
		c->capitems = c->capitems ? c->capitems * 2 : 16;
		c->items = xrealloc(c->items, c->capitems * sizeof(*c->items));
	}
	struct recover_item *it = &c->items[c->nitems++];
	memset(it, 0, sizeof(*it));
	it->kind = kind;
	it->which = which;
	return it;
}

static void chunk_msg(struct recover_chunk *c, struct message *m)
{
	if (c->nmsgs == c->capmsgs) {
		c->capmsgs = c->capmsgs ? c->capmsgs * 2 : 64;
		c->msgs = xrealloc(c->msgs, c->capmsgs * sizeof(*c->msgs));
	}
	c->msgs[c->nmsgs++] = m;
	c->bytes += m->data.len;
}

static int is_bucket_name(const char *s)
{
	if (strlen(s) != SPOOL_BUCKET_LEN)
		return 0;
	for (const char *p = s; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return 0;
	return 1;
}

static int cmp_bucket(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* Bucket directories of the spool being walked, oldest first. Other names
 * (new, quarantine, lock, an operator's files) are left alone. */
static void list_buckets(struct spool_recovery *r)
{
	size_t cap = 0;
	int fd = openat(spool__root[r->walking], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *e;
	r->nbuckets = r->bi = 0;
	r->buckets = xmalloc(sizeof(*r->buckets));
	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((e = readdir(d))) {
		if (!is_bucket_name(e->d_name))
			continue;
		if (r->nbuckets == cap) {
			cap = cap ? cap * 2 : 64;
			r->buckets = xrealloc(r->buckets, cap * sizeof(*r->buckets));
		}
		memcpy(r->buckets[r->nbuckets++], e->d_name, SPOOL_BUCKET_LEN + 1);
	}
	closedir(d);
	qsort(r->buckets, r->nbuckets, sizeof(*r->buckets), cmp_bucket);
}

static void visit_meta(struct spool_recovery *r, const char *rel, const char *id)
{
	struct message *m = NULL;
	char why[160];
	int rc = spool__load(id, &m, why, sizeof(why));
	if (rc == 0) {
		chunk_msg(&r->chunk, m);
		r->bucket_live++;
	} else if (rc != -ENOENT) {
		struct recover_item *it = chunk_item(&r->chunk, SPOOL_OP_QUARANTINE, SPOOL_META);
		memcpy(it->id, id, MESSAGE_ID_LEN + 1); /* validated */
		snprintf(it->rel, sizeof(it->rel), "%s", rel);
		snprintf(it->reason, sizeof(it->reason), "%s", why);
	}
}

static void visit_data(struct spool_recovery *r, const char *rel, const char *id)
{
	if (spool__exists(SPOOL_META, id)) {
		r->bucket_live++;
		return;
	}
	struct recover_item *it = chunk_item(&r->chunk, SPOOL_OP_QUARANTINE, SPOOL_DATA);
	memcpy(it->id, id, MESSAGE_ID_LEN + 1); /* validated */
	snprintf(it->rel, sizeof(it->rel), "%s", rel);
	snprintf(it->reason, sizeof(it->reason), "data without meta (crash leftover)");
}

static void visit(struct spool_recovery *r, const char *bucket, const char *name)
{
	char rel[SPOOL_REL_MAX];
	if (!message_id_valid(name) || memcmp(name, bucket, SPOOL_BUCKET_LEN) != 0) {
		struct recover_item *it =
		    chunk_item(&r->chunk, SPOOL_OP_QUARANTINE_FILE, r->walking);
		snprintf(it->rel, sizeof(it->rel), "%s/%s", bucket, name);
		snprintf(it->reason, sizeof(it->reason), "unexpected file name in the %s spool",
			 r->walking == SPOOL_META ? "meta" : "data");
		return;
	}
	spool__rel_path(rel, name);
	if (r->walking == SPOOL_META)
		visit_meta(r, rel, name);
	else
		visit_data(r, rel, name);
}

/* Opens the next bucket, or moves on to the next spool; 0 when finished. */
static int next_bucket(struct spool_recovery *r)
{
	while (!r->dir) {
		if (!r->buckets)
			list_buckets(r);
		if (r->bi == r->nbuckets) {
			xfree(r->buckets);
			if (r->walking == SPOOL_DATA) {
				r->finished = 1;
				return 0;
			}
			r->walking = SPOOL_DATA;
			continue;
		}
		int fd = openat(spool__root[r->walking], r->buckets[r->bi],
				O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		r->dir = fd >= 0 ? fdopendir(fd) : NULL;
		r->bucket_live = 0;
		if (!r->dir) {
			if (fd >= 0)
				close(fd);
			r->bi++;
		}
	}
	return 1;
}

static void end_bucket(struct spool_recovery *r)
{
	closedir(r->dir);
	r->dir = NULL;
	if (!r->bucket_live) {
		struct recover_item *it = chunk_item(&r->chunk, SPOOL_OP_PRUNE, r->walking);
		snprintf(it->rel, sizeof(it->rel), "%s", r->buckets[r->bi]);
	}
	r->bi++;
}

/* A key that is not a message id: quarantined when it can be named. */
static void visit_rocks_odd_key(struct spool_recovery *r, enum spool_which which, const char *key,
				size_t klen)
{
	int printable = klen < SPOOL_NAME_MAX - 16;
	for (size_t i = 0; printable && i < klen; i++)
		printable = key[i] > ' ' && key[i] < 0x7f;
	if (!printable) {
		log_warn("kumod::spool",
			 "%s spool: a key of %zu bytes that is not a message id is left in place "
			 "(not printable or too long to quarantine by name)",
			 which == SPOOL_META ? "meta" : "data", klen);
		return;
	}
	struct recover_item *it = chunk_item(&r->chunk, SPOOL_OP_QUARANTINE_FILE, which);
	snprintf(it->rel, sizeof(it->rel), "%s", key);
	snprintf(it->reason, sizeof(it->reason), "unexpected key in the %s spool",
		 which == SPOOL_META ? "meta" : "data");
}

/* A data key with no meta key beside it in the walk: a crash leftover
 * candidate (the lane revalidates it before removing anything). */
static void visit_rocks_data_only(struct spool_recovery *r, const char *key, size_t klen)
{
	if (klen != MESSAGE_ID_LEN || !message_id_valid(key)) {
		visit_rocks_odd_key(r, SPOOL_DATA, key, klen);
		return;
	}
	struct recover_item *it = chunk_item(&r->chunk, SPOOL_OP_QUARANTINE, SPOOL_DATA);
	memcpy(it->id, key, MESSAGE_ID_LEN + 1);
	snprintf(it->rel, sizeof(it->rel), "%s", key);
	snprintf(it->reason, sizeof(it->reason), "data without meta (crash leftover)");
}

/* The pending meta key r->mkey with the data value the data cursor holds
 * (found: 1) or without (0): loaded, or a quarantine suspect. */
static void visit_rocks_message(struct spool_recovery *r, int found)
{
	size_t mlen = 0, dlen = 0;
	const char *meta = spool__rocks_iter_value(r->rit, &mlen);
	const char *data = found ? spool__rocks_iter_value(r->dit, &dlen) : NULL;
	struct message *m = NULL;
	char why[160];
	if (load_values(r->mkey, meta, mlen, data, dlen, &m, why, sizeof(why)) == 0) {
		chunk_msg(&r->chunk, m);
		return;
	}
	struct recover_item *it = chunk_item(&r->chunk, SPOOL_OP_QUARANTINE, SPOOL_META);
	memcpy(it->id, r->mkey, MESSAGE_ID_LEN + 1); /* validated */
	snprintf(it->rel, sizeof(it->rel), "%s", r->mkey);
	snprintf(it->reason, sizeof(it->reason), "%s", why);
}

/* RocksDB: one merge walk over both databases in key (= id = time) order:
 * the meta cursor gives each message's meta value, the data cursor beside
 * it the data value (no point read per message); data keys the data cursor
 * passes without a meta key are leftover suspects; the data keys after the
 * last meta key are walked last ("Recovering data"). Every suspect is
 * revalidated in the flusher's lane, as with LocalDisk. */
static void recover_step_rocks(struct spool_recovery *r)
{
	size_t examined = 0;
	char key[SPOOL_NAME_MAX];
	while (r->chunk.nmsgs < RECOVER_CHUNK_MSGS && r->chunk.bytes < RECOVER_CHUNK_BYTES &&
	       examined < RECOVER_CHUNK_ENTRIES && !r->finished) {
		size_t klen = 0;
		int rc;
		if (r->walking == SPOOL_META && !r->rit) {
			r->rit = spool__rocks_iter_new(SPOOL_META);
			r->dit = spool__rocks_iter_new(SPOOL_DATA);
		}
		if (r->walking == SPOOL_META && !r->has_mkey) {
			rc = spool__rocks_iter_next(r->rit, key, sizeof(key), &klen);
			if (rc <= 0) {
				/* a read error ends the walk of that spool: what was
				 * not read stays stored and is found at the next start */
				spool__rocks_iter_free(r->rit);
				r->rit = NULL;
				r->walking = SPOOL_DATA;
				continue;
			}
			examined++;
			if (klen != MESSAGE_ID_LEN || !message_id_valid(key)) {
				visit_rocks_odd_key(r, SPOOL_META, key, klen);
				continue;
			}
			memcpy(r->mkey, key, MESSAGE_ID_LEN + 1);
			r->has_mkey = 1;
		}
		if (r->dit_failed) {
			if (r->walking == SPOOL_DATA) {
				r->finished = 1;
			} else {
				visit_meta(r, r->mkey, r->mkey);
				r->has_mkey = 0;
			}
			continue;
		}
		const char *want = r->walking == SPOOL_META ? r->mkey : NULL;
		rc = spool__rocks_iter_skip_below(r->dit, want, MESSAGE_ID_LEN, key, sizeof(key),
						  &klen);
		if (rc == 3) {
			examined++;
			visit_rocks_data_only(r, key, klen);
		} else if (rc < 0) {
			spool__rocks_iter_free(r->dit);
			r->dit = NULL;
			r->dit_failed = 1;
		} else if (r->walking == SPOOL_META) {
			visit_rocks_message(r, rc == 1);
			r->has_mkey = 0;
		} else {
			r->finished = 1; /* rc 0: the data walk is done */
		}
	}
}

static void recover_step(uv_work_t *req)
{
	struct spool_recovery *r = req->data;
	size_t examined = 0;
	if (spool__kind == SPOOL_KIND_ROCKSDB) {
		recover_step_rocks(r);
		return;
	}
	while (r->chunk.nmsgs < RECOVER_CHUNK_MSGS && r->chunk.bytes < RECOVER_CHUNK_BYTES &&
	       examined < RECOVER_CHUNK_ENTRIES && next_bucket(r)) {
		struct dirent *e = readdir(r->dir);
		if (!e) {
			end_bucket(r);
			continue;
		}
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		examined++;
		visit(r, r->buckets[r->bi], e->d_name);
	}
}

/* --- loop side ------------------------------------------------------------------------ */

static void maybe_complete(struct spool_recovery *r)
{
	if (r->running || r->outstanding || !(r->finished || r->stopping))
		return;
	uint64_t ms = (clock_mono_ns() - r->start_ns) / 1000000u;
	KTRACE(spool_recovered, r->loaded, r->quarantined, r->skipped, ms);
	report_progress(r, "Done");
	rstats.active = 0;
	rstats.elapsed_ms = ms;
	task_close(r->task);
	active = NULL;
	spool__recovery_finished();
	if (r->dir)
		closedir(r->dir);
	spool__rocks_iter_free(r->rit);
	spool__rocks_iter_free(r->dit);
	free(r->buckets);
	free(r->chunk.msgs);
	free(r->chunk.items);
	void (*done)(void *, size_t, size_t) = r->done;
	void *ctx = r->ctx;
	size_t loaded = r->loaded, quarantined = r->quarantined;
	int cancelled = r->cancelled;
	free(r);
	if (cancelled)
		log_warn("kumod::spool", "recovery not run: the spool did not open");
	else if (done)
		done(ctx, loaded, quarantined);
	spool__hold(-1);
}

static void trace_move(const struct spool_op *op, enum spool_which which, const char *from)
{
	char src[4096], dst[4096];
	snprintf(src, sizeof(src), "%s/%s", spool__path[which], from);
	snprintf(dst, sizeof(dst), "%s/%s", spool__path[which], op->q->moved_to[which]);
	KTRACE(spool_quarantine, src, op->q->reason[0] ? op->q->reason : "corrupt", dst);
}

void spool__quarantine_done(struct spool_op *op)
{
	char rel[SPOOL_REL_MAX];
	if (op->kind == SPOOL_OP_QUARANTINE_FILE) {
		if (op->q->moved[op->q->which])
			trace_move(op, op->q->which, op->q->rel);
	} else if (op->leftover) {
		char path[4096];
		if (spool__kind == SPOOL_KIND_ROCKSDB)
			snprintf(path, sizeof(path), "%s", spool__path[SPOOL_DATA]);
		else
			snprintf(path, sizeof(path), "%s/%.8s/%s", spool__path[SPOOL_DATA], op->id,
				 op->id);
		KTRACE(spool_leftover, op->id, path);
	} else {
		spool__rel_path(rel, op->id);
		for (int w = SPOOL_META; w >= SPOOL_DATA; w--)
			if (op->q->moved[w])
				trace_move(op, (enum spool_which)w, rel);
	}
	if (op->cb) { /* a failed spool_load_data, not recovery's: 1 = moved aside */
		op->cb(op->ctx, op->q->moved[SPOOL_DATA] || op->q->moved[SPOOL_META] ? 1 : op->err);
		return;
	}
	struct spool_recovery *r = active;
	if (!r)
		return;
	r->quarantined += op->q->moved[SPOOL_DATA] || op->q->moved[SPOOL_META];
	r->outstanding--;
	maybe_complete(r);
}

static void submit_items(struct spool_recovery *r, struct recover_item *items, size_t n)
{
	for (size_t i = 0; i < n && !r->stopping; i++) {
		struct recover_item *it = &items[i];
		struct spool_op *op = spool__op_new(it->kind, it->id[0] ? it->id : NULL);
		op->q->which = it->which;
		snprintf(op->q->rel, sizeof(op->q->rel), "%s", it->rel);
		if (it->kind == SPOOL_OP_QUARANTINE_FILE)
			snprintf(op->q->reason, sizeof(op->q->reason), "%s", it->reason);
		r->outstanding += it->kind != SPOOL_OP_PRUNE;
		spool__submit(op);
	}
}

static void recover_after(uv_work_t *req, int status);

static void deliver(struct spool_recovery *r, struct message **msgs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct message *m = msgs[i];
		if (!spool_is_open())
			r->stopping = 1; /* closed from fn: deliver no more */
		if (r->stopping || spool__stored_here(m->id)) {
			/* stored by this process: its owner queued it already */
			r->skipped += !r->stopping;
		} else {
			r->loaded++;
			KTRACE(spool_load, m->id, (uint64_t)m->data.len);
			if (r->fn)
				r->fn(m, r->ctx);
		}
		message_unref(m);
	}
}

static void recover_after(uv_work_t *req, int status)
{
	struct spool_recovery *r = req->data;
	struct task *prev = task_enter(spool__task());
	struct recover_chunk c = r->chunk;
	memset(&r->chunk, 0, sizeof(r->chunk));
	int finished = r->finished;
	enum spool_which walking = r->walking; /* the worker may move it next */
	r->running = 0;
	if (!spool_is_open() || status < 0)
		r->stopping = 1; /* closed, or cancelled: the spool did not open */
	r->cancelled |= status < 0;
	submit_items(r, c.items, c.nitems);
	if (!finished && !r->stopping) {
		/* read the next chunk while this one is delivered */
		r->running = 1;
		spool__queue_work(&r->req, recover_step, recover_after);
	}
	deliver(r, c.msgs, c.nmsgs);
	free(c.msgs);
	free(c.items);
	report_progress(r, walking == SPOOL_META ? "Recovering meta" : "Recovering data");
	uint64_t now = clock_mono_ns();
	if (now - r->last_progress_ns >= RECOVER_PROGRESS_NS && !finished) {
		r->last_progress_ns = now;
		log_info("kumod::spool", "recovery in progress loaded=%zu quarantined=%zu",
			 r->loaded, r->quarantined);
	}
	task_exit(spool__task(), prev);
	maybe_complete(r);
}

void spool_recover(void (*fn)(struct message *m, void *ctx),
		   void (*done)(void *ctx, size_t loaded, size_t quarantined), void *ctx)
{
	if (!spool_is_open())
		panic("%s: spool is not open", __func__);
	if (active)
		panic("%s: a recovery is already running", __func__);
	struct spool_recovery *r = xcalloc(1, sizeof(*r));
	r->req.data = r;
	r->fn = fn;
	r->done = done;
	r->ctx = ctx;
	r->walking = SPOOL_META;
	r->start_ns = r->last_progress_ns = clock_mono_ns();
	r->running = 1;
	r->task = task_spawn("spool_recovery", spool__path[SPOOL_META], spool__task()->id);
	memset(&rstats, 0, sizeof(rstats));
	rstats.active = 1;
	/* RocksDB: the walk starts once the databases are open */
	report_progress(r, spool_opening() ? "Waiting for the spool to open" : "Recovering meta");
	active = r;
	if (strcmp(spool__task()->phase, "Idle") == 0)
		task_set_phase(spool__task(), "Recovering", NULL);
	spool__hold(1);
	log_info("kumod::spool", "recovery started meta=%s data=%s%s", spool__path[SPOOL_META],
		 spool__path[SPOOL_DATA], spool_opening() ? " (after the spool opens)" : "");
	spool__queue_work(&r->req, recover_step, recover_after);
}
