/* SPDX-License-Identifier: Apache-2.0 */
/* The SMTP conversation of a server session: commands and replies with
 * their time since connect, in a bounded ring per session. It is one
 * subscriber of the smtp_trace hook (smtp_trace.h), so it sees exactly what
 * `kcli trace-smtp-server` sees, AUTH secrets already replaced.
 * Two users switch it on:
 * - the mail catcher (SMTP_TRANSCRIPT_CATCHER): the first lines and the
 *   latest ones are kept, and copied into each received message's meta as
 *   "smtp_session": the session's opening (greeting, EHLO, STARTTLS, AUTH)
 *   and the lines of the message's own transaction (each MAIL drops the
 *   previous transaction's lines);
 * - the introspection server (SMTP_TRANSCRIPT_CONSOLE): the latest lines of
 *   each live session for kumo-console's session view (a smaller ring when
 *   the catcher is off).
 * Off until enabled: then a session pays one subscriber call per line.
 * Owner: embedded in struct smtp_session. Callers: kumod/smtp/session.c;
 * kumod/lua (kumo.start_mail_catcher); kumod/ctl/introspect.c. */
#ifndef KUMOD_SMTP_TRANSCRIPT_H
#define KUMOD_SMTP_TRANSCRIPT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define SMTP_TRANSCRIPT_HEAD 8		 /* catcher: lines always kept from the start */
#define SMTP_TRANSCRIPT_LINES 64	 /* catcher: at most, the rest the latest */
#define SMTP_TRANSCRIPT_CONSOLE_LINES 24 /* console only: the latest lines */
#define SMTP_TRANSCRIPT_LINE_MAX 200

enum smtp_transcript_user {
	SMTP_TRANSCRIPT_CATCHER = 1,
	SMTP_TRANSCRIPT_CONSOLE = 2,
};

struct smtp_transcript {
	uint64_t start_ns;
	size_t n, dropped;
	size_t head_n;	    /* lines before the first MAIL (+1; 0: none yet) */
	uint16_t cap, head; /* set with lines: the ring's size and kept head */
	uint8_t txn_reset;  /* catcher: a MAIL drops the last transaction */
	struct smtp_transcript_line {
		uint32_t ms;
		char dir; /* 'C' client, 'S' server */
		char text[SMTP_TRANSCRIPT_LINE_MAX];
	} * lines; /* allocated on the first line, when enabled */
};

/* Switches recording on for a user (idempotent). 0, or -ENOSPC when the
 * smtp_trace subscriber list is full. */
int smtp_transcript_enable(enum smtp_transcript_user who);
/* Bit set of the users that enabled it. */
unsigned smtp_transcript_users(void);
/* Records one line (text[0..len), truncated). */
void smtp_transcript_add(struct smtp_transcript *t, char dir, const char *text, size_t len);
/* Records a reply "code enhanced text". */
void smtp_transcript_reply(struct smtp_transcript *t, int code, const char *enhanced,
			   const char *text);
/* A copy of what the catcher keeps of a transcript (one allocation), so
 * its JSON can be built later, on any thread, or never: received messages
 * carry one (meta "smtp_session", built when first read). NULL unless the
 * catcher enabled recording. */
struct smtp_transcript_snap;
struct smtp_transcript_snap *smtp_transcript_snap(const struct smtp_transcript *t, const char *ehlo,
						  const char *tls);
struct smtp_transcript_snap *smtp_transcript_snap_dup(const struct smtp_transcript_snap *s);
/* The catcher's {"Ehlo", "Tls", "Lines": [{"Ms", "Dir", "Line"}],
 * "Dropped"}. New reference; s is not changed (thread-safe on a copy). */
json_t *smtp_transcript_snap_json(const struct smtp_transcript_snap *s);
void smtp_transcript_snap_free(struct smtp_transcript_snap *s);
/* The latest `last` lines as [{"ms", "dir", "line"}] (new reference). */
json_t *smtp_transcript_tail_json(const struct smtp_transcript *t, size_t last);
void smtp_transcript_free(struct smtp_transcript *t);

#endif
