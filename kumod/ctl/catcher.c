/* SPDX-License-Identifier: Apache-2.0 */
/* The mail catcher: on-disk store, index replay, retention, the writer and
 * reader jobs on libuv's thread pool, long-poll waiters and the JSON API
 * (see catcher.h and sink/README.md). */
#include "ctl/catcher.h"
#include "ctl/catcher_int.h"

#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "ctl/http_int.h"
#include "ktrace.h"
#include "proto/console_proto.h"
#include "proto/json_compact.h"
#include "proto/mime_view.h"
#include "proto/rfc5322.h"
#include "smtp/transcript.h"
#include "spool/message.h"

#define CAT_TAG_MAX 48
#define CAT_SNIPPET_MAX 250
#define CAT_PAGE_MAX 1000 /* larger pages are refused, never cut */
#define CAT_WAIT_MAX_S 300
#define CAT_TERMS_MAX 8
#define CAT_TERM_MAX 200
#define CAT_SEG_DEFAULT (64u << 20) /* a segment file rolls over beyond this */
#define CAT_STEXT_BODY 1024	    /* body text kept in the search text */
#define CAT_SEARCH_WIN (1u << 20)   /* a search reads the index in windows this big */
#define CAT_UNBUILT_MAX 20000	    /* beyond, captures build their summary on the loop */
#define CAT_WBUF_KEEP (8u << 20)    /* a writer buffer larger than this is freed after use */

/* One stored message: all the loop keeps in memory per message. */
struct cat_entry {
	char id[MESSAGE_ID_LEN + 1];
	char tag[CAT_TAG_MAX];
	uint64_t created_ms;
	uint64_t off;	  /* its line in the index file */
	uint64_t seg_off; /* its bytes in segment seg */
	uint32_t line_len, slen, seg, size;
	uint16_t hdr; /* fixed fields before the search text */
	unsigned char dead, read;
};

/* A segment file (seg/NNNNNNNN.seg) and its live messages. */
struct cat_seg {
	uint32_t no, live;
};

/* A snapshot of an entry handed to a reader job. */
struct cat_ref {
	char id[MESSAGE_ID_LEN + 1];
	char tag[CAT_TAG_MAX];
	uint64_t off, seg_off;
	uint32_t line_len, slen, seg, size;
	uint16_t hdr;
	unsigned char read;
};

enum cat_field {
	CAT_ANY,
	CAT_FROM,
	CAT_TO,
	CAT_SUBJECT,
	CAT_TAG
};

struct cat_query {
	size_t nterms;
	struct {
		enum cat_field field;
		char text[CAT_TERM_MAX];
	} terms[CAT_TERMS_MAX];
};

enum cat_op_kind {
	CAT_OP_ADD,
	CAT_OP_DEL,
	CAT_OP_DROPSEG
};

/* A queued disk change; the writer job applies a batch in order. */
struct cat_op {
	enum cat_op_kind kind;
	uint64_t seq;
	char id[MESSAGE_ID_LEN + 1];
	char tag[CAT_TAG_MAX];
	uint64_t created_ms;
	uint32_t size;
	struct buf eml; /* ADD: the message */
	/* ADD: what the summary needs of the message, copied on the loop (the
	 * summary is built on the writer's thread: op_build) */
	char *sender, *peer;
	char **rcpts;
	size_t nrcpts;
	json_t *session; /* meta smtp_session (a reference; never changed) */
	struct smtp_transcript_snap *session_snap; /* or the lines, made JSON by op_build */
	int built;				   /* summary, text, stext and line are set */
	struct buf line;  /* ADD: the summary JSON; DEL: the index record */
	struct buf stext; /* ADD: the search text */
	struct buf text;  /* ADD: decoded text for waiters (loop only) */
	uint64_t off;	  /* set by the writer: the index line */
	uint64_t seg_off; /* set by the writer: the message in segment seg */
	uint32_t seg, line_len;
	uint16_t hdr;
	int err; /* errno from the writer */
	struct cat_op *next;
};

struct cat_batch {
	uv_work_t req;
	struct cat_op *ops;
	uint64_t base;	   /* index size before the batch */
	uint64_t new_size; /* after */
	int roll;	   /* start a new segment first (after a clear) */
	uint32_t wseg;	   /* out: segments below this one are never written again */
	size_t built;	   /* out: ops whose summary batch_work built */
};

enum cat_job_kind {
	CAT_JOB_PAGE,
	CAT_JOB_SEARCH,
	CAT_JOB_GET,
	CAT_JOB_RAW,
	CAT_JOB_HEADERS,
	CAT_JOB_HTML,
};

struct cat_job {
	uv_work_t req;
	enum cat_job_kind kind;
	uint64_t conn_id;
	uint64_t waiter_id; /* a wait's scan of stored messages */
	struct cat_ref *refs;
	size_t nrefs;
	struct cat_query q;
	size_t start, limit, matched, unread;
	int download;
	/* results */
	int status;
	char err[256];
	json_t *out;
	struct buf raw;
};

struct cat_waiter {
	uint64_t id;
	uint64_t conn_id;
	struct cat_query q;
	char tag[CAT_TAG_MAX];
	uv_timer_t timer;
	int done;
	struct cat_waiter *next;
};

struct cat_file {
	char name[64];
	const char *type;
	struct buf body;
	struct cat_file *next;
};

/* Everything the UI and HTML previews may load: same-origin files, inline
 * styles and data: images; never scripts in a mail, never remote loads. */
#define CAT_UI_CSP                                                                           \
	"Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; " \
	"img-src 'self' data:; connect-src 'self'; frame-src 'self'; base-uri 'none'; "      \
	"form-action 'none'; frame-ancestors 'none'\r\nX-Content-Type-Options: nosniff\r\n"  \
	"Referrer-Policy: no-referrer\r\n"
#define CAT_MAIL_CSP                                                                               \
	"Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; img-src data:; "  \
	"font-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'self'; sandbox\r\n" \
	"X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n"

static struct {
	uv_loop_t *loop;
	char *dir;
	uint64_t max_messages, max_bytes, seg_max;
	int idx_fd;  /* read-only: readers pread records */
	int idx_wfd; /* O_APPEND: the writer job only */
	uint64_t idx_size;
	int seg_wfd;	    /* writer job only: the open segment or -1 */
	uint32_t seg_wno;   /* writer job only: its number (or the last one) */
	uint64_t seg_wsize; /* writer job only: its size */
	/* writer job only: a batch's messages and index lines, kept across
	 * batches (growing and trimming the heap per batch cost ~20 % of the
	 * capture CPU) unless one grew beyond CAT_WBUF_KEEP */
	struct buf wdata, widx;
	struct cat_seg *segs;
	size_t nsegs, segs_cap;
	uint32_t seg_floor; /* loop: segments below are closed for writing */
	int roll;	    /* loop: the next batch starts a new segment */
	struct cat_entry *e;
	size_t n, cap, live, dead;
	uint64_t bytes;
	uint32_t *hash; /* entry index + 1, 0 empty; open addressing */
	size_t hcap;
	struct cat_op *pending, **pending_tail;
	size_t pending_unbuilt; /* ADDs queued or being written without a summary yet */
	int writing;
	uint64_t seq, clear_seq;
	struct cat_waiter *waiters;
	uint64_t next_waiter;
	struct task *task;
	int started;
	struct cat_file *ui; /* share/catcher, read once at start */
	uint64_t *sse;	     /* connection ids of event streams */
	size_t nsse, sse_cap;
	uv_timer_t sse_timer; /* keep-alive comments */
} C;

/* --- helpers ------------------------------------------------------------------ */

static uint64_t now_ms(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

static void format_rfc3339(uint64_t ms, char *out, size_t cap)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	char base[32];
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, cap, "%s.%03uZ", base, (unsigned)(ms % 1000));
}

static uint32_t id_hash(const char *id)
{
	uint32_t h = 2166136261u;
	for (; *id; id++)
		h = (h ^ (unsigned char)*id) * 16777619u;
	return h;
}

static void hash_insert(size_t idx)
{
	size_t mask = C.hcap - 1;
	for (size_t i = id_hash(C.e[idx].id) & mask;; i = (i + 1) & mask) {
		if (!C.hash[i]) {
			C.hash[i] = (uint32_t)idx + 1;
			return;
		}
	}
}

static void hash_rebuild(void)
{
	size_t want = 1024;
	while (want < C.n * 2 + 2)
		want *= 2;
	free(C.hash);
	C.hcap = want;
	C.hash = xcalloc(C.hcap, sizeof(*C.hash));
	for (size_t i = 0; i < C.n; i++)
		if (!C.e[i].dead)
			hash_insert(i);
}

/* The live entry with that id, or NULL. */
static struct cat_entry *entry_find(const char *id)
{
	if (!C.hcap)
		return NULL;
	size_t mask = C.hcap - 1;
	for (size_t i = id_hash(id) & mask; C.hash[i]; i = (i + 1) & mask) {
		struct cat_entry *e = &C.e[C.hash[i] - 1];
		if (!e->dead && strcmp(e->id, id) == 0)
			return e;
	}
	return NULL;
}

static struct cat_seg *seg_find(uint32_t no)
{
	for (size_t i = C.nsegs; i-- > 0;)
		if (C.segs[i].no == no)
			return &C.segs[i];
	return NULL;
}

static void seg_count(uint32_t no)
{
	struct cat_seg *sg = seg_find(no);
	if (!sg) {
		if (C.nsegs == C.segs_cap) {
			C.segs_cap = C.segs_cap ? C.segs_cap * 2 : 16;
			C.segs = xrealloc(C.segs, C.segs_cap * sizeof(*C.segs));
		}
		sg = &C.segs[C.nsegs++];
		sg->no = no;
		sg->live = 0;
	}
	sg->live++;
}

static struct cat_entry *entry_add(const char *id, const char *tag, uint64_t created_ms,
				   uint32_t size, uint32_t seg, uint64_t seg_off)
{
	if (C.n == C.cap) {
		C.cap = C.cap ? C.cap * 2 : 1024;
		C.e = xrealloc(C.e, C.cap * sizeof(*C.e));
	}
	struct cat_entry *e = &C.e[C.n];
	memset(e, 0, sizeof(*e));
	snprintf(e->id, sizeof(e->id), "%s", id);
	snprintf(e->tag, sizeof(e->tag), "%s", tag);
	e->created_ms = created_ms;
	e->size = size;
	e->seg = seg;
	e->seg_off = seg_off;
	seg_count(seg);
	C.n++;
	C.live++;
	C.bytes += size;
	if (C.n * 2 + 2 > C.hcap)
		hash_rebuild();
	else
		hash_insert(C.n - 1);
	return e;
}

static void entry_kill(struct cat_entry *e)
{
	if (e->dead)
		return;
	e->dead = 1;
	struct cat_seg *sg = seg_find(e->seg);
	if (sg && sg->live)
		sg->live--;
	C.live--;
	C.dead++;
	C.bytes -= e->size;
}

/* Drops dead entries from the array once they outnumber the live ones. */
static void entries_compact(void)
{
	if (C.dead < 1024 || C.dead < C.live)
		return;
	size_t w = 0;
	for (size_t i = 0; i < C.n; i++)
		if (!C.e[i].dead)
			C.e[w++] = C.e[i];
	C.n = w;
	C.dead = 0;
	hash_rebuild();
}

static void seg_path(char *out, size_t cap, uint32_t no)
{
	snprintf(out, cap, "%s/seg/%08" PRIu32 ".seg", C.dir, no);
}

/* --- extraction of what a summary shows ------------------------------------ */

struct addr_ctx {
	json_t *arr;
};

static json_t *json_str_lossy(const char *p, size_t n)
{
	struct buf b;
	buf_init(&b);
	buf_append_utf8_lossy(&b, p, n);
	json_t *j = json_stringn(b.data ? b.data : "", b.len);
	buf_free(&b);
	return j ? j : json_string("");
}

static void on_address(const char *name, size_t nlen, const char *addr, size_t alen, void *ctx)
{
	struct addr_ctx *a = ctx;
	struct buf nm;
	buf_init(&nm);
	mime_view_decode_header(name, nlen, &nm);
	json_array_append_new(a->arr, json_pack("{s:o, s:o}", "Name",
						json_str_lossy(nm.data ? nm.data : "", nm.len),
						"Address", json_str_lossy(addr, alen)));
	buf_free(&nm);
}

/* The address list of the first header `name` as [{Name, Address}]. */
static json_t *header_addresses(const char *msg, size_t hlen, const char *name)
{
	struct addr_ctx a = {json_array()};
	struct buf v;
	buf_init(&v);
	if (rfc5322_get_first(msg, hlen, name, &v))
		mime_view_addresses(v.data ? v.data : "", v.len, on_address, &a);
	buf_free(&v);
	return a.arr;
}

static json_t *header_decoded(const char *msg, size_t hlen, const char *name)
{
	struct buf v, d;
	buf_init(&v);
	buf_init(&d);
	if (rfc5322_get_first(msg, hlen, name, &v))
		mime_view_decode_header(v.data ? v.data : "", v.len, &d);
	json_t *j = json_str_lossy(d.data ? d.data : "", d.len);
	buf_free(&v);
	buf_free(&d);
	return j;
}

/* The first text/plain and text/html leaves (decoded, UTF-8) and the
 * attachment list [{PartID, FileName, ContentType, ContentID, Size}]. */
struct bodies {
	struct buf text, html;
	json_t *attachments, *inlines;
};

static void bodies_extract(const char *msg, size_t len, struct bodies *b)
{
	/* one view per thread (loop and pool workers), reused: it is large */
	static __thread struct mime_view *v;
	if (!v)
		v = xmalloc(sizeof(*v));
	mime_view_parse(msg, len, v);
	buf_init(&b->text);
	buf_init(&b->html);
	b->attachments = json_array();
	b->inlines = json_array();
	int have_text = 0, have_html = 0;
	struct buf raw;
	buf_init(&raw);
	for (size_t i = 0; i < v->nparts; i++) {
		const struct mime_view_part *p = &v->parts[i];
		buf_reset(&raw);
		mime_view_decode(msg + p->off, p->len, p->cte, &raw);
		if (!p->attachment && !have_text && strcmp(p->type, "text/plain") == 0) {
			mime_view_to_utf8(raw.data ? raw.data : "", raw.len, p->charset, &b->text);
			have_text = 1;
			continue;
		}
		if (!p->attachment && !have_html && strcmp(p->type, "text/html") == 0) {
			mime_view_to_utf8(raw.data ? raw.data : "", raw.len, p->charset, &b->html);
			have_html = 1;
			continue;
		}
		struct buf fn;
		buf_init(&fn);
		mime_view_decode_header(p->filename, strlen(p->filename), &fn);
		char part_id[24];
		snprintf(part_id, sizeof(part_id), "%zu", i + 1);
		json_t *a = json_pack("{s:s, s:o, s:o, s:o, s:I}", "PartID", part_id, "FileName",
				      json_str_lossy(fn.data ? fn.data : "", fn.len), "ContentType",
				      json_str_lossy(p->type, strlen(p->type)), "ContentID",
				      json_str_lossy(p->content_id, strlen(p->content_id)), "Size",
				      (json_int_t)raw.len);
		json_array_append_new(p->attachment ? b->attachments : b->inlines, a);
		buf_free(&fn);
	}
	buf_free(&raw);
}

static void bodies_free(struct bodies *b)
{
	buf_free(&b->text);
	buf_free(&b->html);
	json_decref(b->attachments);
	json_decref(b->inlines);
}

/* Visible text of HTML: tags dropped, a few entities decoded. */
static void html_to_text(const char *h, size_t n, struct buf *out)
{
	int in_tag = 0;
	for (size_t i = 0; i < n; i++) {
		char c = h[i];
		if (in_tag) {
			if (c == '>') {
				in_tag = 0;
				buf_appendc(out, ' ');
			}
		} else if (c == '<') {
			in_tag = 1;
		} else if (c == '&' && n - i >= 4 && strncmp(h + i, "&lt;", 4) == 0) {
			buf_appendc(out, '<');
			i += 3;
		} else if (c == '&' && n - i >= 4 && strncmp(h + i, "&gt;", 4) == 0) {
			buf_appendc(out, '>');
			i += 3;
		} else if (c == '&' && n - i >= 5 && strncmp(h + i, "&amp;", 5) == 0) {
			buf_appendc(out, '&');
			i += 4;
		} else if (c == '&' && n - i >= 6 && strncmp(h + i, "&nbsp;", 6) == 0) {
			buf_appendc(out, ' ');
			i += 5;
		} else {
			buf_appendc(out, c);
		}
	}
}

/* Whitespace collapsed, at most CAT_SNIPPET_MAX bytes, cut on a UTF-8
 * character boundary. */
static json_t *snippet_of(const char *t, size_t n)
{
	char s[CAT_SNIPPET_MAX + 1];
	size_t o = 0;
	int space = 1;
	for (size_t i = 0; i < n && o < CAT_SNIPPET_MAX; i++) {
		char c = t[i];
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			if (!space)
				s[o++] = ' ';
			space = 1;
			continue;
		}
		space = 0;
		s[o++] = c;
	}
	while (o && s[o - 1] == ' ')
		o--;
	if (o == CAT_SNIPPET_MAX) /* drop a cut multi-byte character */
		while (o && ((unsigned char)s[o - 1] & 0xc0) == 0x80)
			o--, s[o] = 0;
	if (o && ((unsigned char)s[o - 1] & 0xc0) == 0xc0)
		o--;
	return json_str_lossy(s, o);
}

/* The namespace of a message: the first value of an X-Tags header, else
 * the sub-address of the first envelope recipient with one (user+TAG@). */
static void tag_of(const struct cat_op *op, const char *hdr, size_t hlen, char *tag, size_t cap)
{
	tag[0] = 0;
	struct buf v;
	buf_init(&v);
	if (rfc5322_get_first(hdr, hlen, "X-Tags", &v) && v.len) {
		const char *p = v.data;
		size_t n = strcspn(p, ",");
		while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		while (n && (*p == ' ' || *p == '\t'))
			p++, n--;
		if (n >= cap)
			n = cap - 1;
		memcpy(tag, p, n);
		tag[n] = 0;
	}
	buf_free(&v);
	for (size_t i = 0; !tag[0] && i < op->nrcpts; i++) {
		const char *r = op->rcpts[i];
		const char *at = strrchr(r, '@');
		const char *plus = strchr(r, '+');
		if (!plus || (at && plus > at))
			continue;
		size_t n = (size_t)((at ? at : r + strlen(r)) - plus - 1);
		if (n >= cap)
			n = cap - 1;
		memcpy(tag, plus + 1, n);
		tag[n] = 0;
	}
	/* a tag is printable ASCII without quotes, so it is safe everywhere */
	for (char *p = tag; *p; p++)
		if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e || *p == '"' ||
		    *p == '\'' || *p == '<' || *p == '>' || *p == '&' || *p == '\\')
			*p = '_';
}

/* The summary record (Mailpit's message summary plus Envelope). */
static json_t *summary_build(const struct cat_op *op, struct bodies *b)
{
	const char *msg = op->eml.data ? op->eml.data : "", *tag = op->tag;
	size_t len = op->eml.len;
	uint64_t created_ms = op->created_ms;
	size_t hlen = rfc5322_header_end(msg, len);
	json_t *from = header_addresses(msg, hlen, "From");
	json_t *from1 = json_array_size(from)
			    ? json_incref(json_array_get(from, 0))
			    : json_pack("{s:s, s:o}", "Name", "", "Address",
					json_str_lossy(op->sender, strlen(op->sender)));
	json_decref(from);
	json_t *mid = header_decoded(msg, hlen, "Message-ID");
	const char *ms = json_string_value(mid);
	size_t ml = strlen(ms);
	if (ml >= 2 && ms[0] == '<' && ms[ml - 1] == '>') {
		json_t *t = json_stringn(ms + 1, ml - 2);
		json_decref(mid);
		mid = t;
	}
	json_t *to = json_array();
	for (size_t i = 0; i < op->nrcpts; i++)
		json_array_append_new(to, json_str_lossy(op->rcpts[i], strlen(op->rcpts[i])));
	const char *peer = op->peer;
	json_t *env =
	    json_pack("{s:o, s:o, s:o}", "From", json_str_lossy(op->sender, strlen(op->sender)),
		      "To", to, "Peer", json_str_lossy(peer ? peer : "", peer ? strlen(peer) : 0));
	char created[40];
	format_rfc3339(created_ms, created, sizeof(created));
	struct buf plain;
	buf_init(&plain);
	if (b->text.len)
		buf_append(&plain, b->text.data, b->text.len);
	else
		html_to_text(b->html.data ? b->html.data : "", b->html.len, &plain);
	json_t *s = json_pack(
	    "{s:s, s:o, s:b, s:o, s:o, s:o, s:o, s:o, s:o, s:s, s:o, s:I, s:I, s:o, s:o, s:I}",
	    "ID", op->id, "MessageID", mid, "Read", 0, "From", from1, "To",
	    header_addresses(msg, hlen, "To"), "Cc", header_addresses(msg, hlen, "Cc"), "ReplyTo",
	    header_addresses(msg, hlen, "Reply-To"), "Subject",
	    header_decoded(msg, hlen, "Subject"), "Snippet",
	    snippet_of(plain.data ? plain.data : "", plain.len), "Created", created, "Tags",
	    tag[0] ? json_pack("[s]", tag) : json_array(), "Size", (json_int_t)len, "Attachments",
	    (json_int_t)json_array_size(b->attachments), "Envelope", env, "Bcc", json_array(),
	    "_ms", (json_int_t)created_ms);
	buf_free(&plain);
	if (op->session)
		json_object_set(s, "Session", op->session);
	return s;
}

/* --- queries ------------------------------------------------------------------ */

static void query_lower(struct cat_query *q);

/* Parses `from:x to:"a b" subject:y tag:z words` (terms lowercased); -1
 * with err. */
static int query_parse(const char *s, struct cat_query *q, char *err, size_t errlen)
{
	memset(q, 0, sizeof(*q));
	static const struct {
		const char *prefix;
		enum cat_field f;
	} fields[] = {
	    {"from:", CAT_FROM}, {"to:", CAT_TO}, {"subject:", CAT_SUBJECT}, {"tag:", CAT_TAG}};
	while (*s) {
		while (*s == ' ' || *s == '\t')
			s++;
		if (!*s)
			break;
		if (q->nterms == CAT_TERMS_MAX) {
			snprintf(err, errlen, "query: at most %d terms", CAT_TERMS_MAX);
			return -1;
		}
		enum cat_field f = CAT_ANY;
		for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
			size_t pl = strlen(fields[i].prefix);
			if (strncasecmp(s, fields[i].prefix, pl) == 0) {
				f = fields[i].f;
				s += pl;
				break;
			}
		}
		char *t = q->terms[q->nterms].text;
		size_t o = 0;
		if (*s == '"') {
			s++;
			while (*s && *s != '"') {
				if (o + 1 >= CAT_TERM_MAX)
					goto too_long;
				t[o++] = *s++;
			}
			if (*s == '"')
				s++;
		} else {
			while (*s && *s != ' ' && *s != '\t') {
				if (o + 1 >= CAT_TERM_MAX)
					goto too_long;
				t[o++] = *s++;
			}
		}
		t[o] = 0;
		if (!o)
			continue;
		q->terms[q->nterms++].field = f;
	}
	query_lower(q);
	return 0;
too_long:
	snprintf(err, errlen, "query: a term is longer than %d bytes", CAT_TERM_MAX - 1);
	return -1;
}

static int contains(const char *hay, const char *needle)
{
	return hay && strcasestr(hay, needle) != NULL;
}

static int addr_list_contains(json_t *arr, const char *needle)
{
	size_t i;
	json_t *a;
	json_array_foreach(arr, i, a)
	{
		if (json_is_string(a) && contains(json_string_value(a), needle))
			return 1;
		if (contains(json_string_value(json_object_get(a, "Name")), needle) ||
		    contains(json_string_value(json_object_get(a, "Address")), needle))
			return 1;
	}
	return 0;
}

static int match_from(json_t *s, const char *t)
{
	json_t *f = json_object_get(s, "From");
	return contains(json_string_value(json_object_get(f, "Name")), t) ||
	       contains(json_string_value(json_object_get(f, "Address")), t) ||
	       contains(json_string_value(json_object_get(json_object_get(s, "Envelope"), "From")),
			t);
}

static int match_to(json_t *s, const char *t)
{
	return addr_list_contains(json_object_get(s, "To"), t) ||
	       addr_list_contains(json_object_get(s, "Cc"), t) ||
	       addr_list_contains(json_object_get(json_object_get(s, "Envelope"), "To"), t);
}

static int match_tag(json_t *s, const char *t)
{
	size_t i;
	json_t *a;
	json_array_foreach(json_object_get(s, "Tags"), i,
			   a) if (strcasecmp(json_string_value(a), t) == 0) return 1;
	return 0;
}

/* text_fn loads the body text on first need (NULL: only the summary). */
typedef const char *(*cat_text_fn)(void *ctx);

static int query_match(const struct cat_query *q, json_t *s, cat_text_fn text_fn, void *ctx)
{
	for (size_t i = 0; i < q->nterms; i++) {
		const char *t = q->terms[i].text;
		int ok = 0;
		switch (q->terms[i].field) {
		case CAT_FROM:
			ok = match_from(s, t);
			break;
		case CAT_TO:
			ok = match_to(s, t);
			break;
		case CAT_SUBJECT:
			ok = contains(json_string_value(json_object_get(s, "Subject")), t);
			break;
		case CAT_TAG:
			ok = match_tag(s, t);
			break;
		case CAT_ANY:
			ok = match_from(s, t) || match_to(s, t) ||
			     contains(json_string_value(json_object_get(s, "Subject")), t) ||
			     contains(json_string_value(json_object_get(s, "Snippet")), t) ||
			     (text_fn && contains(text_fn(ctx), t));
			break;
		}
		if (!ok)
			return 0;
	}
	return 1;
}

/* --- reader jobs (thread pool) ------------------------------------------------ */

/* The summary record at ref (NULL when unreadable: deleted meanwhile). */
static json_t *record_read(const struct cat_ref *r)
{
	size_t jlen = r->line_len - r->hdr - r->slen;
	if (!r->line_len || !jlen)
		return NULL;
	char *b = malloc(jlen + 1);
	if (!b)
		return NULL;
	ssize_t got = pread(C.idx_fd, b, jlen, (off_t)(r->off + r->hdr + r->slen));
	json_t *j = NULL;
	if (got == (ssize_t)jlen)
		j = json_loadb(b, jlen, 0, NULL);
	free(b);
	if (j && strcmp(json_string_value(json_object_get(j, "ID")) ?: "", r->id) != 0) {
		json_decref(j);
		j = NULL;
	}
	if (j) {
		json_object_del(j, "_ms");
		json_object_set_new(j, "Read", json_boolean(r->read));
	}
	return j;
}

/* Reads the message's bytes from its segment into out; 0 or -errno (a
 * segment dropped meanwhile: -ENOENT). */
static int eml_read(const struct cat_ref *r, struct buf *out)
{
	char path[4200];
	seg_path(path, sizeof(path), r->seg);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (buf_try_reserve(out, (size_t)r->size + 1) != 0) {
		close(fd);
		return -ENOMEM;
	}
	size_t got = 0;
	while (got < r->size) {
		ssize_t n =
		    pread(fd, out->data + out->len + got, r->size - got, (off_t)(r->seg_off + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	if (got != r->size)
		return -EIO;
	out->len += got;
	return 0;
}

/* The search text of a message: lowercase (ASCII) sections from, to,
 * subject, tag and the first CAT_STEXT_BODY bytes of its text, separated
 * by 0x1f, items within a section by 0x1e; written beside the summary in
 * the index so a search never parses JSON nor reads a message. */
enum {
	CAT_S_FROM,
	CAT_S_TO,
	CAT_S_SUBJECT,
	CAT_S_TAG,
	CAT_S_TEXT,
	CAT_S_N
};

static void stext_add(struct buf *b, const char *s, size_t n)
{
	buf_reserve(b, n + 1); /* one reservation: this runs over every body */
	unsigned char *o = (unsigned char *)b->data + b->len;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f)
			c = ' ';
		else if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		o[i] = c;
	}
	o[n] = 0x1e;
	b->len += n + 1;
}

static void stext_add_str(struct buf *b, json_t *v)
{
	if (json_is_string(v))
		stext_add(b, json_string_value(v), json_string_length(v));
}

static void stext_add_addrs(struct buf *b, json_t *arr)
{
	size_t i;
	json_t *a;
	json_array_foreach(arr, i, a)
	{
		stext_add_str(b, a);
		stext_add_str(b, json_object_get(a, "Name"));
		stext_add_str(b, json_object_get(a, "Address"));
	}
}

static void stext_build(struct buf *b, json_t *s, const char *tag, const char *text)
{
	json_t *f = json_object_get(s, "From"), *env = json_object_get(s, "Envelope");
	stext_add_str(b, json_object_get(f, "Name"));
	stext_add_str(b, json_object_get(f, "Address"));
	stext_add_str(b, json_object_get(env, "From"));
	buf_appendc(b, 0x1f);
	stext_add_addrs(b, json_object_get(s, "To"));
	stext_add_addrs(b, json_object_get(s, "Cc"));
	stext_add_addrs(b, json_object_get(env, "To"));
	buf_appendc(b, 0x1f);
	stext_add_str(b, json_object_get(s, "Subject"));
	buf_appendc(b, 0x1f);
	stext_add(b, tag, strlen(tag));
	buf_appendc(b, 0x1f);
	size_t tl = strlen(text);
	stext_add(b, text, tl < CAT_STEXT_BODY ? tl : CAT_STEXT_BODY);
}

static int lower_contains(const char *hay, size_t n, const char *needle)
{
	return memmem(hay, n, needle, strlen(needle)) != NULL;
}

/* query_match over a search text (terms lowercased by query_lower). */
static int stext_match(const struct cat_query *q, const char *st, size_t n)
{
	const char *sec[CAT_S_N] = {0};
	size_t len[CAT_S_N] = {0};
	const char *p = st, *end = st + n;
	for (int i = 0; i < CAT_S_N; i++) {
		const char *e = i < CAT_S_N - 1 ? memchr(p, 0x1f, (size_t)(end - p)) : NULL;
		if (!e)
			e = end;
		sec[i] = p;
		len[i] = (size_t)(e - p);
		p = e < end ? e + 1 : end;
	}
	for (size_t i = 0; i < q->nterms; i++) {
		const char *t = q->terms[i].text;
		int ok = 0;
		switch (q->terms[i].field) {
		case CAT_FROM:
			ok = lower_contains(sec[CAT_S_FROM], len[CAT_S_FROM], t);
			break;
		case CAT_TO:
			ok = lower_contains(sec[CAT_S_TO], len[CAT_S_TO], t);
			break;
		case CAT_SUBJECT:
			ok = lower_contains(sec[CAT_S_SUBJECT], len[CAT_S_SUBJECT], t);
			break;
		case CAT_TAG: {
			size_t tl = strlen(t);
			ok = len[CAT_S_TAG] == tl + 1 && memcmp(sec[CAT_S_TAG], t, tl) == 0;
			break;
		}
		case CAT_ANY:
			ok = lower_contains(st, n, t);
			break;
		}
		if (!ok)
			return 0;
	}
	return 1;
}

static void query_lower(struct cat_query *q)
{
	for (size_t i = 0; i < q->nterms; i++)
		for (char *c = q->terms[i].text; *c; c++)
			if (*c >= 'A' && *c <= 'Z')
				*c = (char)(*c - 'A' + 'a');
}

static void links_cb(const char *s, size_t n, void *ctx)
{
	json_array_append_new(ctx, json_str_lossy(s, n));
}

static void job_get(struct cat_job *j, const struct cat_ref *r)
{
	json_t *s = record_read(r);
	struct buf eml;
	buf_init(&eml);
	if (!s || eml_read(r, &eml) != 0) {
		j->status = 404;
		snprintf(j->err, sizeof(j->err), "no message %s", r->id);
		json_decref(s);
		buf_free(&eml);
		return;
	}
	const char *msg = eml.data ? eml.data : "";
	struct bodies b;
	bodies_extract(msg, eml.len, &b);
	size_t hlen = rfc5322_header_end(msg, eml.len);
	json_object_set_new(s, "Date", header_decoded(msg, hlen, "Date"));
	json_object_set_new(s, "Text", json_str_lossy(b.text.data ? b.text.data : "", b.text.len));
	json_object_set_new(s, "HTML", json_str_lossy(b.html.data ? b.html.data : "", b.html.len));
	json_object_set(s, "Attachments", b.attachments);
	json_object_set(s, "Inline", b.inlines);
	json_t *links = json_array(), *codes = json_array();
	struct buf plain;
	buf_init(&plain);
	buf_append(&plain, b.text.data ? b.text.data : "", b.text.len);
	buf_appendc(&plain, '\n');
	mime_view_links(plain.data, plain.len, links_cb, links);
	mime_view_links(b.html.data ? b.html.data : "", b.html.len, links_cb, links);
	if (!b.text.len)
		html_to_text(b.html.data ? b.html.data : "", b.html.len, &plain);
	mime_view_codes(plain.data, plain.len, links_cb, codes);
	/* a link seen in both bodies once */
	json_t *uniq = json_array();
	size_t i, k;
	json_t *a, *c;
	json_array_foreach(links, i, a)
	{
		int dup = 0;
		json_array_foreach(uniq, k, c) dup |= json_equal(a, c);
		if (!dup)
			json_array_append(uniq, a);
	}
	json_decref(links);
	json_object_set_new(s, "Links", uniq);
	json_object_set_new(s, "Codes", codes);
	buf_free(&plain);
	bodies_free(&b);
	buf_free(&eml);
	j->out = s;
}

static void job_headers(struct cat_job *j, const struct cat_ref *r)
{
	struct buf eml;
	buf_init(&eml);
	if (eml_read(r, &eml) != 0) {
		j->status = 404;
		snprintf(j->err, sizeof(j->err), "no message %s", r->id);
		return;
	}
	const char *msg = eml.data ? eml.data : "";
	size_t hlen = rfc5322_header_end(msg, eml.len), pos = 0;
	json_t *o = json_object();
	struct rfc5322_header h;
	struct buf v, d;
	buf_init(&v);
	buf_init(&d);
	while (rfc5322_header_next(msg, hlen, &pos, &h)) {
		buf_reset(&v);
		buf_reset(&d);
		rfc5322_unfold(h.raw_value, h.raw_len, &v);
		mime_view_decode_header(v.data ? v.data : "", v.len, &d);
		char name[256];
		size_t nl = h.name_len < sizeof(name) - 1 ? h.name_len : sizeof(name) - 1;
		memcpy(name, h.name, nl);
		name[nl] = 0;
		struct buf nb;
		buf_init(&nb);
		buf_append_utf8_lossy(&nb, name, nl);
		buf_appendc(&nb, 0);
		json_t *arr = json_object_get(o, nb.data);
		if (!arr) {
			arr = json_array();
			json_object_set_new(o, nb.data, arr);
		}
		json_array_append_new(arr, json_str_lossy(d.data ? d.data : "", d.len));
		buf_free(&nb);
	}
	buf_free(&v);
	buf_free(&d);
	buf_free(&eml);
	j->out = o;
}

static void job_work(uv_work_t *req)
{
	struct cat_job *j = req->data;
	j->status = 200;
	switch (j->kind) {
	case CAT_JOB_PAGE: {
		json_t *arr = json_array();
		for (size_t i = 0; i < j->nrefs; i++) {
			json_t *s = record_read(&j->refs[i]);
			if (s) {
				json_object_del(s, "Session"); /* with the message only */
				json_array_append_new(arr, s);
			}
		}
		j->out = arr;
		break;
	}
	case CAT_JOB_SEARCH: {
		json_t *arr = json_array();
		size_t matched = 0;
		/* newest first is back to front in the index: read it in windows
		 * of CAT_SEARCH_WIN bytes ending at the text wanted */
		char *win = xmalloc(CAT_SEARCH_WIN);
		uint64_t wbase = 0, wlen = 0;
		for (size_t i = 0; i < j->nrefs; i++) {
			const struct cat_ref *r = &j->refs[i];
			uint64_t a = r->off + r->hdr, z = a + r->slen;
			if (r->slen > CAT_SEARCH_WIN)
				continue; /* cannot be: the text is bounded */
			if (a < wbase || z > wbase + wlen) {
				wbase = z > CAT_SEARCH_WIN ? z - CAT_SEARCH_WIN : 0;
				ssize_t got = pread(C.idx_fd, win, z - wbase, (off_t)wbase);
				wlen = got > 0 ? (uint64_t)got : 0;
				if (z > wbase + wlen)
					continue;
			}
			if (!stext_match(&j->q, win + (a - wbase), r->slen))
				continue;
			if (matched >= j->start && json_array_size(arr) < j->limit) {
				json_t *s = record_read(r);
				if (!s)
					continue; /* deleted meanwhile */
				json_object_del(s, "Session");
				json_array_append_new(arr, s);
			}
			matched++;
		}
		free(win);
		j->out = arr;
		j->matched = matched;
		break;
	}
	case CAT_JOB_GET:
		job_get(j, &j->refs[0]);
		break;
	case CAT_JOB_HEADERS:
		job_headers(j, &j->refs[0]);
		break;
	case CAT_JOB_HTML: {
		struct buf eml;
		buf_init(&eml);
		if (eml_read(&j->refs[0], &eml) != 0) {
			j->status = 404;
			snprintf(j->err, sizeof(j->err), "no message %s", j->refs[0].id);
		} else {
			struct bodies b;
			bodies_extract(eml.data ? eml.data : "", eml.len, &b);
			buf_append(&j->raw, b.html.data ? b.html.data : "", b.html.len);
			bodies_free(&b);
		}
		buf_free(&eml);
		break;
	}
	case CAT_JOB_RAW:
		if (eml_read(&j->refs[0], &j->raw) != 0) {
			j->status = 404;
			snprintf(j->err, sizeof(j->err), "no message %s", j->refs[0].id);
		}
		break;
	}
}

static void waiter_finish(struct cat_waiter *w, int status, json_t *msg);
static struct cat_waiter *waiter_find(uint64_t id);

static void job_done(uv_work_t *req, int status)
{
	struct cat_job *j = req->data;
	if (j->waiter_id) {
		struct cat_waiter *w = waiter_find(j->waiter_id);
		if (w && !w->done && status == 0 && json_array_size(j->out))
			waiter_finish(w, 200, json_incref(json_array_get(j->out, 0)));
		goto out;
	}
	struct http_conn *hc = http__conn_lookup(j->conn_id);
	if (!hc)
		goto out;
	if (status != 0) {
		http__error(hc, 500, "catcher job cancelled");
	} else if (j->status != 200) {
		http__error(hc, j->status, "%s", j->err);
	} else if (j->kind == CAT_JOB_RAW) {
		char extra[160];
		if (j->download)
			snprintf(extra, sizeof(extra),
				 "Content-Disposition: attachment; filename=\"%s.eml\"\r\n"
				 "X-Content-Type-Options: nosniff\r\n",
				 j->refs[0].id);
		else
			snprintf(extra, sizeof(extra), "X-Content-Type-Options: nosniff\r\n");
		http__respond_extra(hc, 200,
				    j->download ? "message/rfc822" : "text/plain; charset=utf-8",
				    j->raw.data ? j->raw.data : "", j->raw.len, extra);
	} else if (j->kind == CAT_JOB_HTML) {
		http__respond_extra(hc, 200, "text/html; charset=utf-8",
				    j->raw.data ? j->raw.data : "", j->raw.len, CAT_MAIL_CSP);
	} else if (j->kind == CAT_JOB_PAGE || j->kind == CAT_JOB_SEARCH) {
		json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:O}", "total", (json_int_t)C.live,
				      "unread", (json_int_t)j->unread, "count",
				      (json_int_t)json_array_size(j->out), "messages_count",
				      (json_int_t)j->matched, "start", (json_int_t)j->start,
				      "messages", j->out);
		http__respond_json(hc, 200, o);
	} else {
		http__respond_json(hc, 200, json_incref(j->out));
	}
out:
	json_decref(j->out);
	buf_free(&j->raw);
	free(j->refs);
	free(j);
}

static struct cat_job *job_new(enum cat_job_kind kind, uint64_t conn_id, size_t nrefs)
{
	struct cat_job *j = xcalloc(1, sizeof(*j));
	j->kind = kind;
	j->conn_id = conn_id;
	j->refs = xcalloc(nrefs ? nrefs : 1, sizeof(*j->refs));
	buf_init(&j->raw);
	j->req.data = j;
	return j;
}

static void ref_of(struct cat_ref *r, const struct cat_entry *e)
{
	memcpy(r->id, e->id, sizeof(r->id));
	memcpy(r->tag, e->tag, sizeof(r->tag));
	r->off = e->off;
	r->line_len = e->line_len;
	r->hdr = e->hdr;
	r->slen = e->slen;
	r->seg = e->seg;
	r->seg_off = e->seg_off;
	r->size = e->size;
	r->read = e->read;
}

static void job_submit(struct cat_job *j)
{
	uv_queue_work(C.loop, &j->req, job_work, job_done);
}

/* --- writer ------------------------------------------------------------------- */

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Writer job: closes the open segment; the next message opens a new one. */
static void seg_close(void)
{
	if (C.seg_wfd >= 0)
		close(C.seg_wfd);
	C.seg_wfd = -1;
	C.seg_wsize = 0;
}

static int seg_open_next(void)
{
	char path[4200];
	seg_path(path, sizeof(path), C.seg_wno + 1);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	C.seg_wno++;
	C.seg_wfd = fd;
	C.seg_wsize = 0;
	return 0;
}

/* Writes the buffered messages of ops [from, to) to the open segment;
 * on failure marks those ops. */
static void seg_flush(struct buf *data, struct cat_op *from, struct cat_op *to)
{
	if (!data->len)
		return;
	int rc = write_all(C.seg_wfd, data->data, data->len);
	if (rc) {
		for (struct cat_op *op = from; op != to; op = op->next)
			if (op->kind == CAT_OP_ADD && !op->err)
				op->err = -rc;
		seg_close(); /* a partly written segment is never appended to again */
	} else {
		C.seg_wsize += data->len;
	}
	buf_reset(data);
}

static void op_build(struct cat_op *op);

/* Applies a batch: the summaries built (op_build, off the loop), the
 * messages appended to the open segment (one write per segment touched),
 * then one append of their index lines; no fsync (see sink/README.md: a
 * crash of the machine may lose the last seconds). */
static void batch_work(uv_work_t *req)
{
	struct cat_batch *b = req->data;
	struct buf *idx = &C.widx, *data = &C.wdata;
	buf_reset(idx);
	buf_reset(data);
	char path[4200];
	for (struct cat_op *op = b->ops; op; op = op->next)
		if (op->kind == CAT_OP_ADD && !op->built) {
			op_build(op);
			b->built++;
		}
	if (b->roll && C.seg_wfd >= 0 && C.seg_wsize)
		seg_close();
	struct cat_op *chunk = b->ops;
	for (struct cat_op *op = b->ops; op; op = op->next) {
		if (op->kind == CAT_OP_DROPSEG) {
			seg_path(path, sizeof(path), op->seg);
			if (unlink(path) != 0 && errno != ENOENT)
				op->err = errno;
			continue;
		}
		if (op->kind != CAT_OP_ADD)
			continue;
		if (C.seg_wfd >= 0 && C.seg_wsize + data->len &&
		    C.seg_wsize + data->len + op->eml.len > C.seg_max) {
			seg_flush(data, chunk, op);
			seg_close();
		}
		if (C.seg_wfd < 0) {
			chunk = op;
			int rc = seg_open_next();
			if (rc) {
				op->err = -rc;
				continue;
			}
		}
		op->seg = C.seg_wno;
		op->seg_off = C.seg_wsize + data->len;
		buf_append(data, op->eml.data ? op->eml.data : "", op->eml.len);
	}
	if (C.seg_wfd >= 0)
		seg_flush(data, chunk, NULL);
	for (struct cat_op *op = b->ops; op; op = op->next) {
		if (op->err || op->kind == CAT_OP_DROPSEG)
			continue;
		op->off = b->base + idx->len;
		if (op->kind == CAT_OP_DEL) {
			buf_append(idx, op->line.data, op->line.len);
			continue;
		}
		size_t h0 = idx->len;
		buf_printf(idx,
			   "A %s %" PRIu64 " %" PRIu32 " %" PRIu32 " %" PRIu64 " =%s %zu %zu\t",
			   op->id, op->created_ms, op->size, op->seg, op->seg_off, op->tag,
			   op->stext.len, op->line.len);
		op->hdr = (uint16_t)(idx->len - h0);
		buf_append(idx, op->stext.data ? op->stext.data : "", op->stext.len);
		buf_append(idx, op->line.data ? op->line.data : "", op->line.len);
		op->line_len = (uint32_t)(idx->len - h0);
		buf_appendc(idx, '\n');
	}
	int rc = idx->len ? write_all(C.idx_wfd, idx->data, idx->len) : 0;
	struct stat st;
	b->new_size = fstat(C.idx_wfd, &st) == 0 ? (uint64_t)st.st_size : b->base;
	if (rc)
		for (struct cat_op *op = b->ops; op; op = op->next)
			if (!op->err)
				op->err = -rc;
	b->wseg = C.seg_wfd >= 0 ? C.seg_wno : C.seg_wno + 1;
	buf_reset(idx);
	if (idx->cap > CAT_WBUF_KEEP)
		buf_free(idx);
	if (data->cap > CAT_WBUF_KEEP)
		buf_free(data);
}

static void writer_kick(void);
static void waiters_offer(json_t *summary, const char *tag, const char *text);

static void op_free(struct cat_op *op)
{
	buf_free(&op->eml);
	free(op->sender);
	free(op->peer);
	for (size_t i = 0; i < op->nrcpts; i++)
		free(op->rcpts[i]);
	free(op->rcpts);
	json_decref(op->session);
	smtp_transcript_snap_free(op->session_snap);
	buf_free(&op->line);
	buf_free(&op->stext);
	buf_free(&op->text);
	free(op);
}

static void op_enqueue(struct cat_op *op)
{
	op->seq = ++C.seq;
	op->next = NULL;
	*C.pending_tail = op;
	C.pending_tail = &op->next;
	writer_kick();
}

static void sse_broadcast(const char *event, json_t *data);

static void del_enqueue(const char *id, const char *why)
{
	json_t *ev = json_pack("{s:s, s:s}", "ID", id, "Reason", why);
	sse_broadcast("delete", ev);
	json_decref(ev);
	struct cat_op *op = xcalloc(1, sizeof(*op));
	op->kind = CAT_OP_DEL;
	snprintf(op->id, sizeof(op->id), "%s", id);
	buf_printf(&op->line, "D %s\n", id);
	KTRACE(catcher_dropped, id, why);
	op_enqueue(op);
}

/* Drops the segments without live messages that are closed for writing. */
static void segs_sweep(void)
{
	size_t w = 0;
	for (size_t i = 0; i < C.nsegs; i++) {
		if (C.segs[i].live || C.segs[i].no >= C.seg_floor) {
			C.segs[w++] = C.segs[i];
			continue;
		}
		struct cat_op *op = xcalloc(1, sizeof(*op));
		op->kind = CAT_OP_DROPSEG;
		op->seg = C.segs[i].no;
		log_debug("kumod::catcher", "segment %" PRIu32 " has no live message: dropped",
			  op->seg);
		op_enqueue(op);
	}
	C.nsegs = w;
}

/* Oldest first until within the caps. */
static void retention_apply(void)
{
	for (size_t i = 0; i < C.n && C.live; i++) {
		if ((!C.max_messages || C.live <= C.max_messages) &&
		    (!C.max_bytes || C.bytes <= C.max_bytes))
			break;
		struct cat_entry *e = &C.e[i];
		if (e->dead)
			continue;
		entry_kill(e);
		del_enqueue(e->id, "retention");
	}
}

/* A stored message to the waiters and the event streams. */
static void op_announce(struct cat_op *op)
{
	json_t *summary = json_loadb(op->line.data, op->line.len, 0, NULL);
	if (!summary) { /* stored all the same: listed, searchable, readable */
		log_warn("kumod::catcher", "%s: its summary does not parse: not announced", op->id);
		return;
	}
	waiters_offer(summary, op->tag, op->text.data);
	json_object_del(summary, "_ms");
	json_object_del(summary, "Session");
	sse_broadcast("message", summary);
	json_decref(summary);
}

static void batch_done(uv_work_t *req, int status)
{
	struct cat_batch *b = req->data;
	struct task *prev = task_enter(C.task);
	C.writing = 0;
	C.idx_size = b->new_size;
	C.pending_unbuilt -= b->built;
	if (b->wseg > C.seg_floor)
		C.seg_floor = b->wseg;
	for (struct cat_op *op = b->ops, *next; op; op = next) {
		next = op->next;
		if (op->kind == CAT_OP_DROPSEG) {
			if (op->err)
				log_warn("kumod::catcher", "segment %" PRIu32 ": cannot remove: %s",
					 op->seg, strerror(op->err));
		} else if (op->kind == CAT_OP_ADD && op->err) {
			log_warn("kumod::catcher", "%s: cannot store: %s", op->id,
				 strerror(op->err));
			KTRACE(catcher_stored, op->id, (uint64_t)op->size, "write_error");
		} else if (op->kind == CAT_OP_ADD && op->seq < C.clear_seq) {
			del_enqueue(op->id, "cleared"); /* cleared while being written */
		} else if (op->kind == CAT_OP_ADD) {
			struct cat_entry *e = entry_add(op->id, op->tag, op->created_ms, op->size,
							op->seg, op->seg_off);
			e->off = op->off;
			e->line_len = op->line_len;
			e->hdr = op->hdr;
			e->slen = (uint32_t)op->stext.len;
			KTRACE(catcher_stored, op->id, (uint64_t)op->size, "stored");
			if (C.waiters || C.nsse)
				op_announce(op);
		}
		op_free(op);
	}
	free(b);
	retention_apply();
	segs_sweep();
	entries_compact();
	task_set_phase(C.task, C.pending ? "Writing" : "Idle", NULL);
	writer_kick();
	task_exit(C.task, prev);
}

static void writer_kick(void)
{
	if (C.writing || !C.pending)
		return;
	struct cat_batch *b = xcalloc(1, sizeof(*b));
	b->ops = C.pending;
	b->base = C.idx_size;
	b->roll = C.roll;
	C.roll = 0;
	b->req.data = b;
	C.pending = NULL;
	C.pending_tail = &C.pending;
	C.writing = 1;
	task_set_phase(C.task, "Writing", "fs");
	uv_queue_work(C.loop, &b->req, batch_work, batch_done);
}

/* --- capture ------------------------------------------------------------------ */

/* The summary, the text for waiters, the search text and the index
 * line of an ADD: pure work on the op's own copies, so it runs on the
 * writer's thread (batch_work) or, when the writer lags far behind, on
 * the loop (catcher_capture). */
static void op_build(struct cat_op *op)
{
	if (op->session_snap) {
		op->session = smtp_transcript_snap_json(op->session_snap);
		smtp_transcript_snap_free(op->session_snap);
		op->session_snap = NULL;
	}
	const char *msg = op->eml.data ? op->eml.data : "";
	size_t len = op->eml.len;
	tag_of(op, msg, rfc5322_header_end(msg, len), op->tag, sizeof(op->tag));
	struct bodies b;
	bodies_extract(msg, len, &b);
	json_t *summary = summary_build(op, &b);
	buf_append(&op->text, b.text.data ? b.text.data : "", b.text.len);
	buf_appendc(&op->text, '\n');
	html_to_text(b.html.data ? b.html.data : "", b.html.len, &op->text);
	buf_appendc(&op->text, 0);
	bodies_free(&b);
	stext_build(&op->stext, summary, op->tag, op->text.data);
	json_compact(&op->line, summary);
	/* freed here, off the loop; batch_done parses the line again only
	 * when a waiter or an event stream wants it */
	json_decref(summary);
	json_decref(op->session);
	op->session = NULL;
	op->built = 1;
}

int catcher_capture(const struct message *m, char *id_out, size_t idlen)
{
	if (!C.started)
		return -ENOTCONN;
	const char *msg = m->data.data ? m->data.data : "";
	size_t len = m->data.len;
	struct cat_op *op = xcalloc(1, sizeof(*op));
	op->kind = CAT_OP_ADD;
	snprintf(op->id, sizeof(op->id), "%s", m->id);
	op->created_ms = now_ms();
	op->size = (uint32_t)(len > UINT32_MAX ? UINT32_MAX : len);
	buf_append(&op->eml, msg, len);
	op->sender = xstrdup(m->sender ? m->sender : "");
	const char *peer = message_get_meta_str(m, "received_from");
	op->peer = peer ? xstrdup(peer) : NULL;
	op->nrcpts = m->nrecipients;
	op->rcpts = xcalloc(m->nrecipients + 1, sizeof(*op->rcpts));
	for (size_t i = 0; i < m->nrecipients; i++)
		op->rcpts[i] = xstrdup(m->recipients[i]);
	/* the transcript as lines (made JSON on the writer's thread) unless a
	 * policy already read or replaced it */
	const struct smtp_transcript_snap *snap = message_lazy_obj(m, "smtp_session");
	if (snap)
		op->session_snap = smtp_transcript_snap_dup(snap);
	else
		op->session = json_incref(message_get_meta(m, "smtp_session"));
	/* Backpressure: a writer far behind gets no more work handed over, so
	 * the queue of unbuilt messages (their copies) stays bounded. */
	if (C.pending_unbuilt >= CAT_UNBUILT_MAX)
		op_build(op);
	else
		C.pending_unbuilt++;
	snprintf(id_out, idlen, "%s", m->id);
	op_enqueue(op);
	return 0;
}

void catcher_stats(uint64_t *count, uint64_t *bytes)
{
	*count = C.live;
	*bytes = C.bytes;
}

int catcher_enabled(void)
{
	return C.started;
}

/* --- waiters ------------------------------------------------------------------ */

static struct cat_waiter *waiter_find(uint64_t id)
{
	for (struct cat_waiter *w = C.waiters; w; w = w->next)
		if (w->id == id)
			return w;
	return NULL;
}

static void waiter_closed(uv_handle_t *h)
{
	struct cat_waiter *w = h->data;
	for (struct cat_waiter **pp = &C.waiters; *pp; pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	}
	free(w);
}

/* Answers the waiting request (msg stolen; NULL: timed out). */
static void waiter_finish(struct cat_waiter *w, int status, json_t *msg)
{
	w->done = 1;
	struct http_conn *hc = http__conn_lookup(w->conn_id);
	if (hc && msg)
		http__respond_json(hc, status, msg);
	else if (hc)
		http__error(hc, status, "no matching message arrived in time");
	else
		json_decref(msg);
	uv_timer_stop(&w->timer);
	uv_close((uv_handle_t *)&w->timer, waiter_closed);
}

static void waiter_timeout(uv_timer_t *t)
{
	struct cat_waiter *w = t->data;
	if (!w->done)
		waiter_finish(w, 408, NULL);
}

static const char *text_of(void *ctx)
{
	return ctx;
}

/* --- event stream (Server-Sent Events) --------------------------------------- */

/* Sends "event: NAME\ndata: JSON\n\n" to every stream; drops the gone. */
static void sse_broadcast(const char *event, json_t *data)
{
	if (!C.nsse)
		return;
	char *js = json_dumps(data, JSON_COMPACT | JSON_ENSURE_ASCII);
	struct buf b;
	buf_init(&b);
	buf_printf(&b, "event: %s\ndata: %s\n\n", event, js);
	free(js);
	size_t w = 0;
	for (size_t i = 0; i < C.nsse; i++) {
		struct http_conn *hc = http__conn_lookup(C.sse[i]);
		if (!hc)
			continue;
		conn_write(&hc->conn, b.data, b.len);
		conn_flush(&hc->conn);
		C.sse[w++] = C.sse[i];
	}
	C.nsse = w;
	buf_free(&b);
}

static void sse_keepalive(uv_timer_t *t)
{
	json_t *o = json_pack("{s:I}", "Messages", (json_int_t)C.live);
	sse_broadcast("ping", o);
	json_decref(o);
}

static void api_events(struct http_conn *hc)
{
	static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
				   "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
				   "retry: 1000\n\n";
	if (C.nsse == C.sse_cap) {
		C.sse_cap = C.sse_cap ? C.sse_cap * 2 : 8;
		C.sse = xrealloc(C.sse, C.sse_cap * sizeof(*C.sse));
	}
	C.sse[C.nsse++] = hc->id;
	hc->busy = 1; /* the stream holds the connection until it closes */
	hc->req.close = 1;
	conn_write(&hc->conn, head, sizeof(head) - 1);
	conn_flush(&hc->conn);
	if (!uv_is_active((uv_handle_t *)&C.sse_timer))
		uv_timer_start(&C.sse_timer, sse_keepalive, 15000, 15000);
}

static void waiters_offer(json_t *summary, const char *tag, const char *text)
{
	for (struct cat_waiter *w = C.waiters; w; w = w->next) {
		if (w->done || (w->tag[0] && strcmp(w->tag, tag) != 0))
			continue;
		if (!query_match(&w->q, summary, text_of, (void *)(text ? text : "")))
			continue;
		json_t *s = json_deep_copy(summary);
		json_object_del(s, "_ms");
		json_object_del(s, "Session");
		waiter_finish(w, 200, s);
	}
}

/* --- start ------------------------------------------------------------------- */

static int mkdir_p(const char *dir)
{
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s", dir);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* The fixed fields of an "A" line, `A ID MS SIZE SEG SEGOFF =TAG SLEN
 * JLEN<TAB>`, at the start of hb (NUL-terminated): the entry added with its
 * line length; -1 when malformed. */
static int index_head_add(char *hb, size_t n, uint64_t off, uint64_t *line_len)
{
	char *tab = memchr(hb, '\t', n);
	if (!tab)
		return -1;
	*tab = 0;
	char id[MESSAGE_ID_LEN + 2], tag[CAT_TAG_MAX + 2];
	uint64_t ms, seg_off;
	uint32_t size, seg;
	size_t slen, jlen;
	if (sscanf(hb, "A %33s %" SCNu64 " %" SCNu32 " %" SCNu32 " %" SCNu64 " %49s %zu %zu", id,
		   &ms, &size, &seg, &seg_off, tag, &slen, &jlen) != 8 ||
	    tag[0] != '=' || strlen(tag) > CAT_TAG_MAX || !message_id_valid(id) ||
	    slen > UINT32_MAX || jlen > UINT32_MAX)
		return -1;
	size_t hdr = (size_t)(tab - hb) + 1;
	struct cat_entry *e = entry_add(id, tag + 1, ms, size, seg, seg_off);
	e->off = off;
	e->hdr = (uint16_t)hdr;
	e->slen = (uint32_t)slen;
	e->line_len = (uint32_t)(hdr + slen + jlen);
	*line_len = e->line_len;
	return 0;
}

/* Replays index.v2 into memory: per line one small read of its fixed
 * fields, then a jump over the search text and the JSON (never parsed).
 * A torn last line (a crash mid-append) is cut off; the index is rewritten
 * without dead lines when they are the majority. Runs once at start-up,
 * before any request. */
static int index_replay(const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "start_mail_catcher: %s: %s", path, strerror(errno));
		return -errno;
	}
	struct stat st;
	uint64_t size = fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0, off = 0, last = 0;
	size_t records = 0, bad = 0;
	char buf[512];
	int check_nl = 0; /* the previous "A" line's newline, read with this line */
	while (off < size) {
		uint64_t at = check_nl ? off - 1 : off;
		ssize_t n = pread(fd, buf, sizeof(buf) - 1, (off_t)at);
		if (n <= 0)
			break;
		buf[n] = 0;
		char *hb = buf;
		if (check_nl) {
			if (buf[0] != '\n')
				break; /* the previous line is torn: cut below */
			hb++;
			n--;
			check_nl = 0;
		}
		char *nl = memchr(hb, '\n', (size_t)n);
		uint64_t len = 0; /* the line without its newline */
		if (n > 2 && hb[0] == 'D' && hb[1] == ' ' && nl) {
			*nl = 0;
			struct cat_entry *e = entry_find(hb + 2);
			if (e)
				entry_kill(e);
			len = (uint64_t)(nl - hb);
		} else if (n > 2 && hb[0] == 'A' && hb[1] == ' ' &&
			   index_head_add(hb, (size_t)n, off, &len) == 0) {
			check_nl = 1;
		} else { /* unreadable: skip to the next newline */
			bad++;
			uint64_t o = off;
			while (!nl && o + (uint64_t)n < size) {
				o += (uint64_t)n;
				n = pread(fd, buf, sizeof(buf) - 1, (off_t)o);
				if (n <= 0)
					break;
				hb = buf;
				nl = memchr(hb, '\n', (size_t)n);
			}
			if (!nl)
				break;
			len = o + (uint64_t)(nl - hb) - off;
		}
		records++;
		last = off;
		off += len + 1;
	}
	if (check_nl) { /* the newline of the last "A" line read */
		char c = 0;
		if (off > size || pread(fd, &c, 1, (off_t)(off - 1)) != 1 || c != '\n') {
			entry_kill(&C.e[C.n - 1]);
			bad++;
			off = last;
		}
	}
	if (off < size && ftruncate(fd, (off_t)off) == 0)
		log_warn("kumod::catcher", "%s: torn last record cut off at %" PRIu64, path, off);
	close(fd);
	C.idx_size = off;
	if (bad)
		log_warn("kumod::catcher", "%s: %zu unreadable records skipped", path, bad);
	if (records < 64 || records <= 2 * C.live)
		return 0;
	/* compact: copy the live records, then rename over the index */
	char tmp[4300];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	int in = open(path, O_RDONLY | O_CLOEXEC);
	FILE *out = fopen(tmp, "w");
	if (in < 0 || !out) {
		if (in >= 0)
			close(in);
		if (out)
			fclose(out);
		return 0; /* keep the long index: still correct */
	}
	uint64_t noff = 0;
	char *rec = NULL;
	for (size_t i = 0; i < C.n; i++) {
		struct cat_entry *e = &C.e[i];
		if (e->dead)
			continue;
		rec = xrealloc(rec, e->line_len + 1);
		if (pread(in, rec, e->line_len, (off_t)e->off) != (ssize_t)e->line_len) {
			e->line_len = 0; /* unreadable: listed as gone */
			continue;
		}
		rec[e->line_len] = '\n';
		fwrite(rec, 1, e->line_len + 1, out);
		e->off = noff;
		noff += e->line_len + 1;
	}
	free(rec);
	close(in);
	int ok = fflush(out) == 0 && fsync(fileno(out)) == 0;
	ok &= fclose(out) == 0;
	if (ok && rename(tmp, path) == 0) {
		C.idx_size = noff;
		size_t w = 0;
		for (size_t i = 0; i < C.n; i++)
			if (!C.e[i].dead)
				C.e[w++] = C.e[i];
		C.n = w;
		C.dead = 0;
		hash_rebuild();
		log_info("kumod::catcher", "index compacted: %zu records to %zu", records, C.live);
	} else {
		unlink(tmp);
		snprintf(err, errlen, "start_mail_catcher: cannot compact %s", path);
		return -EIO;
	}
	return 0;
}

/* Removes the segment files no live message is in (left by drops that a
 * stop interrupted); new messages go to a new segment after the highest. */
static void segs_start(const char *segdir)
{
	DIR *d = opendir(segdir);
	uint32_t max = 0;
	struct dirent *de;
	while (d && (de = readdir(d))) {
		char *end = NULL;
		unsigned long no = strtoul(de->d_name, &end, 10);
		if (!end || strcmp(end, ".seg") != 0 || end == de->d_name || no > UINT32_MAX)
			continue;
		if (no > max)
			max = (uint32_t)no;
		struct cat_seg *sg = seg_find((uint32_t)no);
		if (!sg || !sg->live) {
			char path[4400];
			snprintf(path, sizeof(path), "%s/%s", segdir, de->d_name);
			unlink(path);
		}
	}
	if (d)
		closedir(d);
	for (size_t i = 0; i < C.nsegs; i++)
		if (C.segs[i].no > max)
			max = C.segs[i].no; /* a live message in a missing segment: 404 on read */
	C.seg_wno = max;
	C.seg_floor = max + 1;
}

/* share/catcher beside the binary (installed: ../share/kumod/catcher; build
 * tree: the repository's share/catcher), or cfg->ui_dir. */
static void ui_load(const char *ui_dir)
{
	static const struct {
		const char *name, *type;
	} files[] = {{"index.html", "text/html; charset=utf-8"},
		     {"app.js", "text/javascript; charset=utf-8"},
		     {"style.css", "text/css; charset=utf-8"}};
	char dir[4096] = "";
	if (ui_dir) {
		snprintf(dir, sizeof(dir), "%s", ui_dir);
	} else {
		char exe[2048];
		ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
		if (n <= 0)
			return;
		exe[n] = 0;
		*strrchr(exe, '/') = 0;
		static const char *const cand[] = {"/../share/kumod/catcher", "/../share/catcher",
						   "/../../share/catcher"};
		for (size_t i = 0; i < sizeof(cand) / sizeof(cand[0]) && !dir[0]; i++) {
			char probe[4096];
			snprintf(probe, sizeof(probe), "%s%s/index.html", exe, cand[i]);
			if (access(probe, R_OK) == 0)
				snprintf(dir, sizeof(dir), "%s%s", exe, cand[i]);
		}
	}
	for (size_t i = 0; dir[0] && i < sizeof(files) / sizeof(files[0]); i++) {
		char path[4200];
		snprintf(path, sizeof(path), "%s/%s", dir, files[i].name);
		FILE *fp = fopen(path, "rb");
		if (!fp) {
			log_warn("kumod::catcher", "UI file %s: %s", path, strerror(errno));
			continue;
		}
		struct cat_file *f = xcalloc(1, sizeof(*f));
		snprintf(f->name, sizeof(f->name), "%s", files[i].name);
		f->type = files[i].type;
		buf_init(&f->body);
		char chunk[8192];
		size_t got;
		while ((got = fread(chunk, 1, sizeof(chunk), fp)) > 0)
			buf_append(&f->body, chunk, got);
		fclose(fp);
		f->next = C.ui;
		C.ui = f;
	}
}

int catcher_start(uv_loop_t *loop, const struct catcher_config *cfg, char *err, size_t errlen)
{
	if (C.started) {
		snprintf(err, errlen, "start_mail_catcher: already started (once per process)");
		return -EALREADY;
	}
	if (!cfg->dir || !*cfg->dir) {
		snprintf(err, errlen, "start_mail_catcher: 'dir' is required");
		return -EINVAL;
	}
	char segdir[4096];
	snprintf(segdir, sizeof(segdir), "%s/seg", cfg->dir);
	int rc = mkdir_p(segdir);
	if (rc) {
		snprintf(err, errlen, "start_mail_catcher: cannot create %s: %s", segdir,
			 strerror(-rc));
		return rc;
	}
	C.loop = loop;
	C.dir = xstrdup(cfg->dir);
	C.max_messages = cfg->max_messages;
	C.max_bytes = cfg->max_bytes;
	C.seg_max = cfg->segment_bytes ? cfg->segment_bytes : CAT_SEG_DEFAULT;
	C.pending_tail = &C.pending;
	hash_rebuild();
	char path[4200];
	snprintf(path, sizeof(path), "%s/index.jsonl", cfg->dir);
	if (access(path, F_OK) == 0)
		log_warn("kumod::catcher",
			 "%s/index.jsonl and msg/ are an older store format, not read: "
			 "remove them (messages are now kept in %s/seg/)",
			 cfg->dir, cfg->dir);
	snprintf(path, sizeof(path), "%s/index.v2", cfg->dir);
	C.seg_wfd = -1;
	rc = index_replay(path, err, errlen);
	if (rc)
		return rc;
	segs_start(segdir);
	C.idx_wfd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	C.idx_fd = C.idx_wfd >= 0 ? open(path, O_RDONLY | O_CLOEXEC) : -1;
	if (C.idx_wfd < 0 || C.idx_fd < 0) {
		snprintf(err, errlen, "start_mail_catcher: cannot open %s: %s", path,
			 strerror(errno));
		return -errno;
	}
	ui_load(cfg->ui_dir);
	uv_timer_init(loop, &C.sse_timer);
	uv_unref((uv_handle_t *)&C.sse_timer);
	C.task = task_spawn("catcher", cfg->dir, 0);
	task_set_field(C.task, "dir", cfg->dir);
	task_set_phase(C.task, "Idle", NULL);
	C.started = 1;
	KTRACE(catcher_start, cfg->dir, (uint64_t)C.live, C.bytes);
	retention_apply();
	return 0;
}

/* --- HTTP API ----------------------------------------------------------------- */

/* ?name= as a non-negative integer into *out (def when absent); 0 or -1
 * after answering 400. */
static int query_size(struct http_conn *hc, struct http_request *req, const char *name, size_t def,
		      size_t *out)
{
	char v[32];
	int rc = http__query_get(req, name, v, sizeof(v));
	*out = def;
	if (rc == 0)
		return 0;
	char *end = NULL;
	unsigned long long x = rc > 0 ? strtoull(v, &end, 10) : 0;
	if (rc < 0 || !v[0] || *end || v[0] == '-') {
		http__error(hc, 400, "%s: expected a non-negative integer", name);
		return -1;
	}
	*out = (size_t)x;
	return 0;
}

/* ?tag= into tag ("" when absent); 0 or -1 after answering 400. */
static int query_tag(struct http_conn *hc, struct http_request *req, char *tag)
{
	int rc = http__query_get(req, "tag", tag, CAT_TAG_MAX);
	if (rc < 0) {
		http__error(hc, 400, "tag: badly encoded or longer than %d bytes", CAT_TAG_MAX - 1);
		return -1;
	}
	if (rc == 0)
		tag[0] = 0;
	return 0;
}

/* start/limit with the explicit cap: 0 or -1 after answering 400. */
static int query_page(struct http_conn *hc, struct http_request *req, size_t *start, size_t *limit)
{
	if (query_size(hc, req, "start", 0, start) || query_size(hc, req, "limit", 50, limit))
		return -1;
	if (*limit == 0 || *limit > CAT_PAGE_MAX) {
		http__error(hc, 400, "limit: between 1 and %d (page with start=)", CAT_PAGE_MAX);
		return -1;
	}
	return 0;
}

static int entry_in(const struct cat_entry *e, const char *tag)
{
	return !e->dead && (!tag[0] || strcmp(e->tag, tag) == 0);
}

static void api_list(struct http_conn *hc, struct http_request *req, int search)
{
	char tag[CAT_TAG_MAX], qs[2048], err[128];
	size_t start, limit;
	if (query_tag(hc, req, tag) || query_page(hc, req, &start, &limit))
		return;
	struct cat_query q;
	memset(&q, 0, sizeof(q));
	if (search) {
		int rc = http__query_get(req, "query", qs, sizeof(qs));
		if (rc <= 0) {
			http__error(hc, 400, "query: %s",
				    rc ? "badly encoded or too long" : "required");
			return;
		}
		if (query_parse(qs, &q, err, sizeof(err))) {
			http__error(hc, 400, "%s", err);
			return;
		}
	}
	size_t matching = 0, unread = 0;
	for (size_t i = 0; i < C.n; i++)
		if (entry_in(&C.e[i], tag)) {
			matching++;
			unread += !C.e[i].read;
		}
	struct cat_job *j;
	if (search) { /* every candidate, newest first; the job counts and pages */
		j = job_new(CAT_JOB_SEARCH, hc->id, matching);
		for (size_t i = C.n; i-- > 0;)
			if (entry_in(&C.e[i], tag))
				ref_of(&j->refs[j->nrefs++], &C.e[i]);
		j->q = q;
	} else {
		j = job_new(CAT_JOB_PAGE, hc->id, limit);
		size_t seen = 0;
		for (size_t i = C.n; i-- > 0 && j->nrefs < limit;) {
			if (!entry_in(&C.e[i], tag))
				continue;
			if (seen++ >= start)
				ref_of(&j->refs[j->nrefs++], &C.e[i]);
		}
		j->matched = matching;
	}
	j->start = start;
	j->limit = limit;
	j->unread = unread;
	hc->busy = 1;
	job_submit(j);
}

/* The entry an id names ("latest": the newest, within ?tag=). */
static struct cat_entry *entry_named(struct http_request *req, const char *id)
{
	if (strcmp(id, "latest") != 0)
		return entry_find(id);
	char tag[CAT_TAG_MAX];
	if (http__query_get(req, "tag", tag, sizeof(tag)) <= 0)
		tag[0] = 0;
	for (size_t i = C.n; i-- > 0;)
		if (entry_in(&C.e[i], tag))
			return &C.e[i];
	return NULL;
}

static void api_message(struct http_conn *hc, struct http_request *req, const char *rest)
{
	char id[MESSAGE_ID_LEN + 8];
	size_t n = strcspn(rest, "/");
	const char *sub = rest + n;
	if (n >= sizeof(id)) {
		http__error(hc, 404, "no such message");
		return;
	}
	memcpy(id, rest, n);
	id[n] = 0;
	struct cat_entry *e = entry_named(req, id);
	int method = req->r->method;
	if (!e) {
		http__error(hc, 404, "no message %s", message_id_valid(id) ? id : "with that id");
		return;
	}
	if (method == HTTP_DELETE && !*sub) {
		entry_kill(e);
		del_enqueue(e->id, "api");
		http__respond_json(hc, 200, json_pack("{s:i}", "deleted", 1));
		return;
	}
	if (method != HTTP_GET && method != HTTP_HEAD) {
		http__error_extra(hc, 405, "Allow: GET, DELETE\r\n", "method not allowed here");
		return;
	}
	enum cat_job_kind kind;
	if (!*sub)
		kind = CAT_JOB_GET;
	else if (strcmp(sub, "/raw") == 0)
		kind = CAT_JOB_RAW;
	else if (strcmp(sub, "/headers") == 0)
		kind = CAT_JOB_HEADERS;
	else if (strcmp(sub, "/html") == 0)
		kind = CAT_JOB_HTML;
	else {
		http__error(hc, 404, "no such endpoint (message/ID, /raw, /headers, /html)");
		return;
	}
	struct cat_job *j = job_new(kind, hc->id, 1);
	if (kind == CAT_JOB_GET)
		e->read = 1;
	ref_of(&j->refs[0], e);
	j->nrefs = 1;
	char dl[8];
	j->download = http__query_get(req, "dl", dl, sizeof(dl)) > 0 && strcmp(dl, "1") == 0;
	hc->busy = 1;
	job_submit(j);
}

static void api_delete_all(struct http_conn *hc, struct http_request *req)
{
	char tag[CAT_TAG_MAX];
	if (query_tag(hc, req, tag))
		return;
	size_t deleted = 0;
	if (req->r->body.len) { /* {"IDs": [...]}: JSON only, so no simple cross-site form */
		json_t *j = http__json_body(hc, req);
		if (!j)
			return;
		static const char *const keys[] = {"IDs", NULL};
		const char *unknown = http__json_unknown_key(j, keys);
		json_t *ids = json_object_get(j, "IDs");
		if (unknown || !json_is_array(ids)) {
			http__error(hc, 422,
				    unknown ? "unknown field '%s' (expected {\"IDs\": [...]})"
					    : "field 'IDs' must be an array%s",
				    unknown ? unknown : "");
			json_decref(j);
			return;
		}
		size_t i;
		json_t *v;
		json_array_foreach(ids, i, v)
		{
			struct cat_entry *e =
			    json_is_string(v) ? entry_find(json_string_value(v)) : NULL;
			if (e && entry_in(e, tag)) {
				entry_kill(e);
				del_enqueue(e->id, "api");
				deleted++;
			}
		}
		json_decref(j);
	} else if (tag[0]) {
		for (size_t i = 0; i < C.n; i++)
			if (entry_in(&C.e[i], tag)) {
				entry_kill(&C.e[i]);
				del_enqueue(C.e[i].id, "api");
				deleted++;
			}
	} else {
		deleted = C.live;
		C.roll = 1; /* the open segment holds nothing live now */
		for (size_t i = 0; i < C.n; i++)
			if (!C.e[i].dead) {
				entry_kill(&C.e[i]);
				del_enqueue(C.e[i].id, "cleared");
			}
		C.clear_seq = C.seq + 1; /* adds being written now are dropped too */
	}
	entries_compact();
	http__respond_json(hc, 200, json_pack("{s:I}", "deleted", (json_int_t)deleted));
}

static void api_wait(struct http_conn *hc, struct http_request *req)
{
	char tag[CAT_TAG_MAX], qs[2048], err[128];
	size_t timeout;
	if (query_tag(hc, req, tag) || query_size(hc, req, "timeout", 10, &timeout))
		return;
	if (timeout > CAT_WAIT_MAX_S) {
		http__error(hc, 400, "timeout: at most %d seconds", CAT_WAIT_MAX_S);
		return;
	}
	int rc = http__query_get(req, "query", qs, sizeof(qs));
	if (rc < 0) {
		http__error(hc, 400, "query: badly encoded or too long");
		return;
	}
	struct cat_waiter *w = xcalloc(1, sizeof(*w));
	if (rc > 0 && query_parse(qs, &w->q, err, sizeof(err))) {
		free(w);
		http__error(hc, 400, "%s", err);
		return;
	}
	char newonly[8];
	int only_new =
	    http__query_get(req, "new", newonly, sizeof(newonly)) > 0 && strcmp(newonly, "1") == 0;
	snprintf(w->tag, sizeof(w->tag), "%s", tag);
	w->id = ++C.next_waiter;
	w->conn_id = hc->id;
	uv_timer_init(C.loop, &w->timer);
	uv_unref((uv_handle_t *)&w->timer); /* a waiting client never holds up shutdown */
	w->timer.data = w;
	uv_timer_start(&w->timer, waiter_timeout, (uint64_t)timeout * 1000, 0);
	w->next = C.waiters;
	C.waiters = w;
	hc->busy = 1;
	if (only_new)
		return;
	/* the newest stored match answers at once; new captures race it */
	struct cat_job *j = job_new(CAT_JOB_SEARCH, 0, C.live);
	for (size_t i = C.n; i-- > 0;)
		if (entry_in(&C.e[i], tag))
			ref_of(&j->refs[j->nrefs++], &C.e[i]);
	j->q = w->q;
	j->limit = 1;
	j->waiter_id = w->id;
	job_submit(j);
}

static void api_tags(struct http_conn *hc)
{
	json_t *o = json_object();
	for (size_t i = 0; i < C.n; i++) {
		if (C.e[i].dead || !C.e[i].tag[0])
			continue;
		json_t *c = json_object_get(o, C.e[i].tag);
		json_object_set_new(o, C.e[i].tag, json_integer(c ? json_integer_value(c) + 1 : 1));
	}
	http__respond_json(hc, 200, json_pack("{s:o}", "tags", o));
}

static void api_info(struct http_conn *hc)
{
	size_t waiting = 0;
	for (struct cat_waiter *w = C.waiters; w; w = w->next)
		waiting += !w->done;
	http__respond_json(hc, 200,
			   json_pack("{s:I, s:I, s:s, s:I, s:I, s:I}", "Messages",
				     (json_int_t)C.live, "Size", (json_int_t)C.bytes, "Dir", C.dir,
				     "MaxMessages", (json_int_t)C.max_messages, "MaxBytes",
				     (json_int_t)C.max_bytes, "Waiters", (json_int_t)waiting));
}

void catcher_http_handle(struct http_conn *hc, struct http_request *req)
{
	const char *path = req->r->path.data ? req->r->path.data : "";
	int m = req->r->method;
	int get = m == HTTP_GET || m == HTTP_HEAD;
	if (strcmp(path, "/api/v1/faults") == 0) {
		catcher_faults__http(hc, req);
		return;
	}
	if (!C.started) {
		http__error(hc, 404, "the mail catcher is not started (kumo.start_mail_catcher)");
		return;
	}
	if (strcmp(path, "/") == 0 || strncmp(path, "/ui/", 4) == 0) {
		const char *name = strcmp(path, "/") == 0 ? "index.html" : path + 4;
		for (struct cat_file *f = C.ui; f; f = f->next)
			if (get && strcmp(f->name, name) == 0) {
				http__respond_extra(hc, 200, f->type,
						    f->body.data ? f->body.data : "", f->body.len,
						    CAT_UI_CSP);
				return;
			}
		http__error(hc, 404,
			    C.ui ? "no such file: %s"
				 : "the catcher UI files (share/catcher) were not found: %s",
			    path);
	} else if (strcmp(path, "/api/v1/events") == 0 && get) {
		api_events(hc);
	} else if (strncmp(path, "/api/v1/message/", 16) == 0) {
		api_message(hc, req, path + 16);
	} else if (strcmp(path, "/api/v1/messages") == 0 && get) {
		api_list(hc, req, 0);
	} else if (strcmp(path, "/api/v1/messages") == 0 && m == HTTP_DELETE) {
		api_delete_all(hc, req);
	} else if (strcmp(path, "/api/v1/search") == 0 && get) {
		api_list(hc, req, 1);
	} else if (strcmp(path, "/api/v1/wait") == 0 && get) {
		api_wait(hc, req);
	} else if (strcmp(path, "/api/v1/tags") == 0 && get) {
		api_tags(hc);
	} else if (strcmp(path, "/api/v1/info") == 0 && get) {
		api_info(hc);
	} else {
		http__error(hc, 404, "no such endpoint: %s", path);
	}
}
