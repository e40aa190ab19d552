/* SPDX-License-Identifier: Apache-2.0 */
/* The introspection server's drill-down views (see introspect_int.h): built
 * on request from state the loop already holds, each bounded so no frame
 * passes CONSOLE_FRAME_MAX and no request walks more than it returns. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/introspect_int.h"
#include "queue/queue.h"
#include "smtp/server.h"
#include "spool/message.h"
#include "spool/timeline.h"

/* A queue page stops growing past this many bytes (more = true). */
#define VIEW_PAGE_BYTES (192u * 1024)
/* A message's meta larger than this is replaced by its size. */
#define VIEW_META_BYTES (32u * 1024)
/* The timeline keeps its latest entries within this many bytes. */
#define VIEW_TIMELINE_BYTES (160u * 1024)
#define VIEW_STR_MAX 512

static void put_json(struct buf *b, const char *key, json_t *v)
{
	console_json_key(b, key);
	char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	buf_appends(b, s ? s : "null");
	free(s);
}

static void put_str(struct buf *b, const char *key, const char *s)
{
	console_json_key(b, key);
	size_t n = s ? strlen(s) : 0;
	console_json_strn(b, s ? s : "", n > VIEW_STR_MAX ? VIEW_STR_MAX : n);
}

static void frame_head(struct buf *b, const char *type, uint64_t now)
{
	buf_appends(b, "{\"type\":");
	console_json_str(b, type);
	console_json_kv_u64(b, "now", now);
}

/* --- session ----------------------------------------------------------------- */

void introspect__session_member(struct buf *b, uint64_t task_id)
{
	json_t *s = smtp_server_session_info(task_id, INTROSPECT_SESSION_LINES);
	if (!s)
		return;
	put_json(b, "session", s);
	json_decref(s);
}

int introspect__session_frame(struct buf *b, uint64_t task_id, uint64_t now, char *err,
			      size_t errlen)
{
	json_t *s = smtp_server_session_info(task_id, INTROSPECT_SESSION_LINES);
	if (!s) {
		snprintf(err, errlen, "no live smtp_server session runs as task %llu",
			 (unsigned long long)task_id);
		return -1;
	}
	frame_head(b, "session", now);
	console_json_kv_u64(b, "id", task_id);
	put_json(b, "session", s);
	buf_appends(b, "}\n");
	json_decref(s);
	return 0;
}

/* --- queue messages ------------------------------------------------------------ */

/* "scheduled" (waiting in its queue), "held" (by an admin suspension) or
 * "routed" (in a ready queue or being delivered). */
static const char *qmsg_state(const struct qmsg *qm)
{
	if (qm->heap_idx == SIZE_MAX)
		return "routed";
	return qm->held ? "held" : "scheduled";
}

static void put_qmsg(struct buf *b, const struct qmsg *qm)
{
	const struct message *m = qm->m;
	buf_appendc(b, '{');
	put_str(b, "id", m->id);
	put_str(b, "sender", m->sender);
	put_str(b, "recipient", m->nrecipients ? m->recipients[0] : "");
	console_json_kv_u64(b, "rcpt_count", m->nrecipients);
	console_json_kv_u64(b, "attempts", m->attempts);
	console_json_kv_str(b, "state", qmsg_state(qm));
	console_json_kv_u64(b, "due_ms", qm->heap_idx == SIZE_MAX ? 0 : qm->due_ms);
	console_json_kv_u64(b, "created_ms", m->created_ns / 1000000);
	console_json_kv_u64(b, "size", message_data_len(m));
	console_json_key(b, "last_error");
	if (qm->last_error)
		console_json_str(b, qm->last_error);
	else
		buf_appends(b, "null");
	buf_appendc(b, '}');
}

struct page {
	struct buf *b;
	const char *last; /* id of the last message taken */
	size_t n;
};

static int page_add(const struct qmsg *qm, void *ctx)
{
	struct page *p = ctx;
	if (p->b->len > VIEW_PAGE_BYTES)
		return 1; /* full: the client asks again after the last one */
	if (p->n++)
		buf_appendc(p->b, ',');
	put_qmsg(p->b, qm);
	p->last = qm->m->id;
	return 0;
}

int introspect__queue_messages_frame(struct buf *b, const struct console_cmd *cmd, uint64_t now,
				     char *err, size_t errlen)
{
	long count = queue_count_of(cmd->queue);
	if (count < 0) {
		snprintf(err, errlen, "no scheduled queue named '%.200s'", cmd->queue);
		return -1;
	}
	frame_head(b, "queue_messages", now);
	put_str(b, "queue", cmd->queue);
	console_json_kv_u64(b, "count", (uint64_t)count);
	put_str(b, "after", cmd->after);
	console_json_kv_u64(b, "limit", cmd->limit);
	console_json_key(b, "messages");
	buf_appendc(b, '[');
	struct page p = {.b = b};
	int more = 0, restarted = 0;
	queue_walk(cmd->queue, cmd->after, cmd->limit, page_add, &p, &more, &restarted);
	buf_appendc(b, ']');
	console_json_kv_bool(b, "more", more);
	console_json_kv_bool(b, "restarted", restarted);
	console_json_key(b, "next_after");
	if (more && p.last)
		console_json_str(b, p.last);
	else
		buf_appends(b, "null");
	buf_appends(b, "}\n");
	return 0;
}

/* --- message -------------------------------------------------------------------- */

static void put_message(struct buf *b, const struct qmsg *qm)
{
	const struct message *m = qm->m;
	buf_appendc(b, '{');
	put_str(b, "sender", m->sender);
	console_json_key(b, "recipients");
	buf_appendc(b, '[');
	for (size_t i = 0; i < m->nrecipients && i < 100; i++) {
		console_json_sep(b);
		console_json_str(b, m->recipients[i]);
	}
	buf_appendc(b, ']');
	console_json_kv_u64(b, "rcpt_count", m->nrecipients);
	put_str(b, "queue", queue_name(qm->q));
	console_json_kv_u64(b, "attempts", m->attempts);
	console_json_kv_str(b, "state", qmsg_state(qm));
	console_json_kv_u64(b, "due_ms", qm->heap_idx == SIZE_MAX ? 0 : qm->due_ms);
	console_json_kv_u64(b, "created_ms", m->created_ns / 1000000);
	console_json_kv_u64(b, "size", message_data_len(m));
	console_json_kv_bool(b, "data_resident", message_data_resident(m));
	console_json_key(b, "last_error");
	if (qm->last_error)
		console_json_str(b, qm->last_error);
	else
		buf_appends(b, "null");
	message_meta_build_for(m, "*"); /* the whole meta, lazy values included */
	char *meta = m->meta ? json_dumps(m->meta, JSON_COMPACT) : NULL;
	console_json_key(b, "meta");
	if (meta && strlen(meta) <= VIEW_META_BYTES)
		buf_appends(b, meta);
	else if (meta)
		buf_printf(b, "{\"_truncated_bytes\":%zu}", strlen(meta));
	else
		buf_appends(b, "{}");
	free(meta);
	buf_appendc(b, '}');
}

/* The timeline's latest entries within VIEW_TIMELINE_BYTES; *cut counts
 * the ones left out. */
static char *timeline_text(json_t *tl, size_t *cut)
{
	*cut = 0;
	for (;;) {
		char *s = json_dumps(tl, JSON_COMPACT);
		if (!s || strlen(s) <= VIEW_TIMELINE_BYTES || json_array_size(tl) == 0)
			return s;
		free(s);
		size_t drop = json_array_size(tl) / 4 + 1;
		for (size_t i = 0; i < drop; i++)
			json_array_remove(tl, 0);
		*cut += drop;
	}
}

int introspect__message_frame(struct buf *b, const char *id, uint64_t now, char *err, size_t errlen)
{
	char lid[CONSOLE_MESSAGE_ID_MAX];
	snprintf(lid, sizeof(lid), "%s", id);
	for (char *p = lid; *p; p++)
		if (*p >= 'A' && *p <= 'F')
			*p = (char)(*p - 'A' + 'a');
	if (!message_id_valid(lid)) {
		snprintf(err, errlen, "'%.60s' is not a message id (32 hex digits)", id);
		return -1;
	}
	const struct qmsg *qm = queue_find_message(lid);
	int finished = 0;
	uint64_t dropped = 0;
	json_t *tl = msg_timeline_json(lid, &finished, &dropped);
	if (!qm && !tl) {
		snprintf(err, errlen, "no queued message with id %s, and no timeline kept for it",
			 lid);
		return -1;
	}
	frame_head(b, "message", now);
	put_str(b, "message_id", lid);
	console_json_key(b, "message");
	if (qm)
		put_message(b, qm);
	else
		buf_appends(b, "null");
	size_t cut = 0;
	char *t = tl ? timeline_text(tl, &cut) : NULL;
	console_json_key(b, "timeline");
	buf_appends(b, t ? t : "[]");
	free(t);
	json_decref(tl);
	console_json_kv_bool(b, "timeline_finished", finished);
	console_json_kv_u64(b, "timeline_dropped", dropped + cut);
	console_json_kv_bool(b, "timeline_on", msg_timeline_size != 0);
	buf_appends(b, "}\n");
	return 0;
}
