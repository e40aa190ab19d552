/* SPDX-License-Identifier: Apache-2.0 */
/* The Message: envelope, JSON metadata and RFC 5322 content, reference
 * counted. Header edits go through the pure rfc5322 module, which owns
 * validation (no CR, LF or NUL; printable names without ':') and folding. */
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/xalloc.h"
#include "proto/rfc5322.h"
#include "spool/message.h"
#include "spool/timeline.h"

/* --- ids ----------------------------------------------------------------- */

/* Per-thread id state: ids are strictly increasing within a thread; the
 * random tail keeps ids from different threads or processes apart. */
static _Thread_local struct {
	uint64_t last_ms;
	uint16_t counter;
	unsigned char pool[256];
	size_t pool_off;
} idgen = {.pool_off = sizeof(idgen.pool)};

static void id_random(unsigned char out[8])
{
	if (idgen.pool_off + 8 > sizeof(idgen.pool)) {
		size_t got = 0;
		while (got < sizeof(idgen.pool)) {
			ssize_t n = getrandom(idgen.pool + got, sizeof(idgen.pool) - got, 0);
			if (n < 0 && errno != EINTR)
				panic("%s: getrandom: %s", __func__, strerror(errno));
			if (n > 0)
				got += (size_t)n;
		}
		idgen.pool_off = 0;
	}
	memcpy(out, idgen.pool + idgen.pool_off, 8);
	idgen.pool_off += 8;
}

void message_make_id(char out[MESSAGE_ID_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	uint64_t ms = clock_wall_ns() / 1000000u;
	if (ms <= idgen.last_ms) {
		/* same millisecond (or the clock stepped back): keep counting, and
		 * borrow the next millisecond when the counter wraps */
		ms = idgen.last_ms;
		if (++idgen.counter == 0)
			ms++;
	} else {
		idgen.counter = 0;
	}
	idgen.last_ms = ms;
	unsigned char b[16];
	for (int i = 0; i < 6; i++)
		b[i] = (unsigned char)(ms >> (40 - 8 * i));
	b[6] = (unsigned char)(idgen.counter >> 8);
	b[7] = (unsigned char)idgen.counter;
	id_random(b + 8);
	for (int i = 0; i < 16; i++) {
		out[2 * i] = hex[b[i] >> 4];
		out[2 * i + 1] = hex[b[i] & 15];
	}
	out[MESSAGE_ID_LEN] = 0;
}

/* --- lifetime ------------------------------------------------------------ */

static struct message *message_alloc(void)
{
	struct message *m = xcalloc(1, sizeof(*m));
	m->refs = 1;
	m->sender = xstrdup("");
	m->meta = json_object();
	if (!m->meta)
		panic("%s: out of memory", __func__);
	buf_init(&m->data);
	m->created_ns = clock_wall_ns();
	return m;
}

struct message *message_new(void)
{
	struct message *m = message_alloc();
	message_make_id(m->id);
	return m;
}

int message_id_valid(const char *id)
{
	if (!id || strnlen(id, MESSAGE_ID_LEN + 1) != MESSAGE_ID_LEN)
		return 0;
	for (size_t i = 0; i < MESSAGE_ID_LEN; i++)
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
			return 0;
	return 1;
}

struct message *message_new_with_id(const char *id)
{
	if (!message_id_valid(id))
		return NULL;
	struct message *m = message_alloc();
	memcpy(m->id, id, MESSAGE_ID_LEN + 1);
	return m;
}

struct message *message_ref(struct message *m)
{
	assert(m->refs > 0);
	m->refs++;
	return m;
}

static size_t shrunk_count; /* loop thread only, as shrink and restore */
static void lazy_free(struct message *m);

void message_unref(struct message *m)
{
	if (!m)
		return;
	assert(m->refs > 0);
	if (--m->refs)
		return;
	msg_timeline_end(m->id);
	free(m->sender);
	for (size_t i = 0; i < m->nrecipients; i++)
		free(m->recipients[i]);
	free(m->recipients);
	json_decref(m->meta);
	lazy_free(m);
	buf_free(&m->data);
	message_spill_unref(m->spill);
	if (m->data_shrunk)
		shrunk_count--;
	free(m);
}

/* --- envelope, data, meta ------------------------------------------------ */

void message_set_sender(struct message *m, const char *sender)
{
	char *s = xstrdup(sender ? sender : "");
	free(m->sender);
	m->sender = s;
}

void message_add_recipient(struct message *m, const char *rcpt)
{
	m->recipients = xrealloc(m->recipients, (m->nrecipients + 1) * sizeof(*m->recipients));
	m->recipients[m->nrecipients++] = xstrdup(rcpt);
}

void message_retain_recipients(struct message *m, const unsigned char *keep)
{
	size_t n = 0;
	for (size_t i = 0; i < m->nrecipients; i++) {
		if (keep[i])
			m->recipients[n++] = m->recipients[i];
		else
			free(m->recipients[i]);
	}
	m->nrecipients = n;
}

void message_set_data(struct message *m, const char *data, size_t len)
{
	m->data_stored = 0;
	message_spill_unref(m->spill); /* a new body replaces the spilled one */
	m->spill = NULL;
	if (m->data_shrunk) { /* a new body replaces the one in the spool */
		m->data_shrunk = 0;
		shrunk_count--;
	}
	if (data >= m->data.data && data < m->data.data + m->data.len) {
		/* setting from our own buffer: copy before resetting it */
		char *copy = xmalloc(len ? len : 1);
		memcpy(copy, data, len);
		buf_reset(&m->data);
		buf_append(&m->data, copy, len);
		free(copy);
		return;
	}
	buf_reset(&m->data);
	buf_append(&m->data, data, len);
}

struct message_lazy_meta {
	char *key;
	void *obj;
	json_t *(*build)(const void *obj);
	void (*release)(void *obj);
};

static void lazy_free(struct message *m)
{
	if (!m->lazy)
		return;
	m->lazy->release(m->lazy->obj);
	free(m->lazy->key);
	free(m->lazy);
	m->lazy = NULL;
}

int message_set_meta(struct message *m, const char *key, json_t *value)
{
	if (!value)
		return -EINVAL;
	if (m->lazy && strcmp(m->lazy->key, key) == 0)
		lazy_free(m); /* set explicitly: the pending value is stale */
	/* json_object_set_new consumes value even when it fails */
	return json_object_set_new(m->meta, key, value) == 0 ? 0 : -EINVAL;
}

void message_set_meta_lazy(struct message *m, const char *key, void *obj,
			   json_t *(*build)(const void *obj), void (*release)(void *obj))
{
	lazy_free(m);
	json_object_del(m->meta, key);
	m->lazy = xcalloc(1, sizeof(*m->lazy));
	m->lazy->key = xstrdup(key);
	m->lazy->obj = obj;
	m->lazy->build = build;
	m->lazy->release = release;
}

void message_meta_build_for(const struct message *m, const char *name)
{
	if (!m->lazy)
		return;
	size_t n = strlen(name);
	const char *key = m->lazy->key;
	if (n && name[n - 1] == '*' ? strncmp(key, name, n - 1) == 0 : strcmp(key, name) == 0)
		message_get_meta(m, key);
}

const void *message_lazy_obj(const struct message *m, const char *key)
{
	return m->lazy && strcmp(m->lazy->key, key) == 0 ? m->lazy->obj : NULL;
}

json_t *message_get_meta(const struct message *m, const char *key)
{
	json_t *v = json_object_get(m->meta, key);
	if (v || !m->lazy || strcmp(m->lazy->key, key) != 0)
		return v;
	/* built once, on the first read: a cache, so the const is kept for
	 * the callers (the message's observable meta does not change) */
	struct message *w = (struct message *)m;
	v = w->lazy->build(w->lazy->obj);
	/* key may be the lazy entry's own copy: stored before that is freed */
	int rc = v ? json_object_set_new(w->meta, key, v) : -1;
	lazy_free(w);
	return rc == 0 ? v : NULL;
}

const char *message_get_meta_str(const struct message *m, const char *key)
{
	return json_string_value(json_object_get(m->meta, key));
}

/* --- headers ------------------------------------------------------------- */

/* --- spilled bodies ------------------------------------------------------ */

struct message_spill *message_spill_new(int fd)
{
	struct message_spill *sp = xcalloc(1, sizeof(*sp));
	sp->refs = 1;
	sp->fd = fd;
	return sp;
}

struct message_spill *message_spill_ref(struct message_spill *sp)
{
	assert(sp->refs > 0);
	sp->refs++;
	return sp;
}

void message_spill_unref(struct message_spill *sp)
{
	if (!sp)
		return;
	assert(sp->refs > 0);
	if (--sp->refs)
		return;
	if (sp->fd >= 0)
		close(sp->fd);
	free(sp);
}

void message_set_spilled_data(struct message *m, const char *head, size_t len,
			      struct message_spill *sp)
{
	struct message_spill *ref = message_spill_ref(sp); /* sp may be m's own */
	message_set_data(m, head, len);
	m->spill = ref;
}

int message_load_spill(struct message *m)
{
	struct message_spill *sp = m->spill;
	if (!sp)
		return 0;
	if (sp->len > SIZE_MAX / 2)
		return -ENOMEM;
	size_t head = buf_avail(&m->data), n = (size_t)sp->len;
	struct buf b;
	buf_init(&b);
	if (buf_try_reserve(&b, head + n) != 0)
		return -ENOMEM;
	buf_append(&b, buf_rptr(&m->data), head);
	size_t got = 0;
	while (got < n) {
		ssize_t r = pread(sp->fd, b.data + b.len, n - got, (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			int err = r < 0 ? -errno : -EIO; /* shorter than written */
			buf_free(&b);
			return err;
		}
		got += (size_t)r;
		b.len += (size_t)r;
	}
	buf_free(&m->data);
	m->data = b;
	m->spill = NULL;
	message_spill_unref(sp);
	return 0; /* data_stored stays: the content is the same */
}

void message_copy_data(struct message *dst, const struct message *src)
{
	message_set_data(dst, buf_rptr(&src->data), buf_avail(&src->data));
	if (src->spill)
		dst->spill = message_spill_ref(src->spill);
}

size_t message_data_len(const struct message *m)
{
	if (m->data_shrunk)
		return m->data_shrunk_len;
	return m->data.len + (m->spill ? (size_t)m->spill->len : 0);
}

int message_data_resident(const struct message *m)
{
	return !m->data_shrunk && !m->spill;
}

int message_shrink_data(struct message *m)
{
	if (m->data_shrunk || !m->data_stored || m->spool_deferred)
		return 0;
	m->data_shrunk_len = message_data_len(m);
	buf_free(&m->data);
	message_spill_unref(m->spill);
	m->spill = NULL;
	m->data_shrunk = 1;
	shrunk_count++;
	return 1;
}

int message_restore_data(struct message *m, struct buf *b)
{
	if (!m->data_shrunk && !m->spill) {
		buf_free(b);
		return 0;
	}
	if (!m->data_shrunk && !m->data_stored) {
		/* a spilled message edited since its store: the spool's record is
		 * older than its header section, so the spill is read instead
		 * (on failure it stays non-resident, and is never sent as is) */
		buf_free(b);
		return message_load_spill(m) == 0;
	}
	buf_free(&m->data);
	m->data = *b;
	memset(b, 0, sizeof(*b));
	message_spill_unref(m->spill);
	m->spill = NULL;
	if (m->data_shrunk)
		shrunk_count--;
	m->data_shrunk = 0;
	m->data_stored = 1;
	return 1;
}

size_t message_shrunk_count(void)
{
	return shrunk_count;
}

int message_prepend_header(struct message *m, const char *name, const char *value)
{
	m->data_stored = 0;
	return rfc5322_prepend_header(&m->data, name, value);
}

int message_prepend_headers(struct message *m, size_t n, const char *const *names,
			    const char *const *values)
{
	m->data_stored = 0;
	return rfc5322_prepend_headers(&m->data, n, names, values);
}

int message_append_header(struct message *m, const char *name, const char *value)
{
	m->data_stored = 0;
	return rfc5322_append_header(&m->data, name, value);
}

size_t message_remove_all_named_headers(struct message *m, const char *name)
{
	m->data_stored = 0;
	return rfc5322_remove_all_named(&m->data, name);
}

int message_get_first_named_header_value(const struct message *m, const char *name, struct buf *out)
{
	return rfc5322_get_first(m->data.data ? m->data.data : "", m->data.len, name, out);
}

size_t message_get_all_named_header_values(const struct message *m, const char *name,
					   void (*cb)(const char *v, size_t n, void *ctx),
					   void *ctx)
{
	return rfc5322_get_all(m->data.data ? m->data.data : "", m->data.len, name, cb, ctx);
}

/* "X-Foo-Bar" -> "x_foo_bar" */
static char *x_header_key(const char *name, size_t n)
{
	char *k = xstrndup(name, n);
	for (char *p = k; *p; p++)
		*p = *p == '-' ? '_' : (char)tolower((unsigned char)*p);
	return k;
}

static int wanted(const char *name, size_t n, const char *const *names, size_t nnames)
{
	if (!nnames)
		return n > 2 && (name[0] == 'X' || name[0] == 'x') && name[1] == '-';
	for (size_t i = 0; i < nnames; i++)
		if (strlen(names[i]) == n && strncasecmp(names[i], name, n) == 0)
			return 1;
	return 0;
}

/* Each wanted field in order, so the last of a repeated name wins (as in
 * KumoMTA). Values that are not UTF-8 cannot be JSON strings and are
 * skipped. Returns the number of fields imported. */
size_t message_import_x_headers(struct message *m, const char *const *names, size_t nnames)
{
	size_t count = 0, pos = 0;
	const char *msg = m->data.data + m->data.off;
	size_t len = m->data.len - m->data.off;
	size_t hdr_end = msg ? rfc5322_header_end(msg, len) : 0;
	struct rfc5322_header h;
	struct buf value;
	buf_init(&value);
	while (msg && rfc5322_header_next(msg, hdr_end, &pos, &h)) {
		if (!wanted(h.name, h.name_len, names, nnames))
			continue;
		buf_reset(&value);
		rfc5322_unfold(h.raw_value, h.raw_len, &value);
		json_t *v = json_stringn(value.data ? value.data : "", value.len);
		if (!v)
			continue;
		char *key = x_header_key(h.name, h.name_len);
		count += message_set_meta(m, key, v) == 0;
		free(key);
	}
	buf_free(&value);
	return count;
}
