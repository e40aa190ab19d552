/* SPDX-License-Identifier: Apache-2.0 */
/* The SMTP conversation of a server session, kept for the mail catcher:
 * commands and replies with their time since connect, bounded (the first
 * lines and the latest ones), copied into each received message's meta as
 * "smtp_session": the session's opening (greeting, EHLO, STARTTLS, AUTH)
 * and the lines of the message's own transaction (each MAIL drops the
 * previous transaction's lines). Off unless smtp_transcript_enable() was called: then a
 * session pays one branch per line.
 * Owner: embedded in struct smtp_session. Callers: kumod/smtp/session.c;
 * kumod/lua (enable, via kumo.start_mail_catcher). */
#ifndef KUMOD_SMTP_TRANSCRIPT_H
#define KUMOD_SMTP_TRANSCRIPT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define SMTP_TRANSCRIPT_HEAD 8	 /* lines always kept from the start */
#define SMTP_TRANSCRIPT_LINES 64 /* at most, the rest the latest */
#define SMTP_TRANSCRIPT_LINE_MAX 200

struct smtp_transcript {
	uint64_t start_ns;
	size_t n, dropped;
	size_t head_n; /* lines before the first MAIL (+1; 0: none yet) */
	struct smtp_transcript_line {
		uint32_t ms;
		char dir; /* 'C' client, 'S' server */
		char text[SMTP_TRANSCRIPT_LINE_MAX];
	} * lines; /* allocated on the first line, when enabled */
};

void smtp_transcript_enable(void);
int smtp_transcript_enabled(void);
/* Records one line (text[0..len), truncated) when enabled. */
void smtp_transcript_add(struct smtp_transcript *t, char dir, const char *text, size_t len);
/* Records a reply "code enhanced text" when enabled. */
void smtp_transcript_reply(struct smtp_transcript *t, int code, const char *enhanced,
			   const char *text);
/* {"Ehlo", "Tls", "Lines": [{"Ms", "Dir", "Line"}], "Dropped"}; NULL when
 * disabled. New reference. */
json_t *smtp_transcript_json(const struct smtp_transcript *t, const char *ehlo, const char *tls);
void smtp_transcript_free(struct smtp_transcript *t);

#endif
