/* SPDX-License-Identifier: Apache-2.0 */
/* A live server session described for kumo-console's session view: its
 * connection facts, the open envelope and the latest transcript lines
 * (smtp/transcript.h, fed by the smtp_trace hook). */
#include <jansson.h>
#include <string.h>

#include "base/buf.h"
#include "io/conn.h"
#include "smtp/server.h"
#include "smtp/server_int.h"
#include "smtp/transcript.h"
#include "spool/message.h"

/* Recipients listed in the envelope (the count is always given). */
#define SESSION_INFO_RCPTS 20

static json_t *str_lossy(const char *s)
{
	struct buf b;
	buf_init(&b);
	buf_append_utf8_lossy(&b, s ? s : "", s ? strlen(s) : 0);
	json_t *j = json_stringn(b.data ? b.data : "", b.len);
	buf_free(&b);
	return j;
}

static json_t *envelope(const struct message *m)
{
	if (!m)
		return json_null();
	json_t *rc = json_array();
	for (size_t i = 0; i < m->nrecipients && i < SESSION_INFO_RCPTS; i++)
		json_array_append_new(rc, str_lossy(m->recipients[i]));
	return json_pack("{s:o, s:o, s:I}", "sender", str_lossy(m->sender), "recipients", rc,
			 "rcpt_count", (json_int_t)m->nrecipients);
}

json_t *smtp_server_session_info(uint64_t task_id, size_t lines)
{
	struct smtp_session *s = smtp_session__by_task(task_id);
	if (!s)
		return NULL;
	const char *tls = conn_tls_version(&s->conn);
	json_t *authn = json_object_get(s->meta, "authn_id");
	return json_pack("{s:I, s:I, s:s, s:s, s:s, s:s, s:o, s:o, s:O, s:I, s:o, s:o, s:I, s:b}",
			 "session_id", (json_int_t)s->id, "task", (json_int_t)task_id, "peer",
			 s->conn.peer, "local", s->conn.local, "listener", s->l->addr, "state",
			 smtp_session__state_name(s), "helo",
			 s->helo ? str_lossy(s->helo) : json_null(), "tls",
			 tls && *tls ? json_string(tls) : json_null(), "authn_id",
			 authn && s->authenticated ? authn : json_null(), "messages",
			 (json_int_t)s->messages, "envelope", envelope(s->msg), "transcript",
			 smtp_transcript_tail_json(&s->ts, lines), "transcript_dropped",
			 (json_int_t)s->ts.dropped, "transcript_on", smtp_transcript_users() != 0);
}
