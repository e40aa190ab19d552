/* SPDX-License-Identifier: Apache-2.0 */
/* SMTP replies: the server's formatter (safe multi-line output from any text) and the outbound
 * client's parser (one complete, bounded multi-line reply at a time).
 * Owner: a struct smtp_reply owns its text buffer (smtp_reply_init()/smtp_reply_free()); the
 * formatter only appends to the caller's buffer. Pure: no I/O, no globals.
 * Callers: kumod/smtp (session replies, client), kumod/lua (reject texts), tests and
 * fuzz/fuzz_reply_parser.c.
 * Contract: smtp_reply_parse() returns >0 bytes consumed for one complete reply, 0 when more
 * data is needed, -EPROTO when the bytes can never become a valid reply (r->error says why). */
#ifndef KUMOD_PROTO_SMTP_REPLY_H
#define KUMOD_PROTO_SMTP_REPLY_H

#include <stddef.h>

#include "base/buf.h"

#define SMTP_REPLY_LINE_MAX 512		 /* formatter: octets per line incl. CRLF */
#define SMTP_REPLY_PARSE_LINE_MAX 4096	 /* parser: octets per line incl. CRLF */
#define SMTP_REPLY_PARSE_TOTAL_MAX 65536 /* parser: octets per reply */

/* Appends a formatted reply to out. code must be 200..599 (anything else is a caller bug and
 * becomes "451 4.3.0 Internal error: invalid reply code"). enhanced may be NULL; one that is not
 * "c.sss.ddd" with c matching the code's class is dropped. An LF (or CRLF) in text starts a new
 * line of a multi-line reply ("250-..." until the last "250 ..."), a trailing LF is ignored,
 * every other byte outside HT/32-126 becomes '?', and lines longer than SMTP_REPLY_LINE_MAX are
 * split (at a space when one is near). The enhanced code is repeated on every line (RFC 2034);
 * with enhanced == NULL, a code the text itself starts with is kept and carried to following
 * lines that have none; a line that starts with its own code keeps it either way. */
void smtp_reply_format(struct buf *out, int code, const char *enhanced, const char *text);

struct smtp_reply {
	int code;
	char enhanced[16]; /* first line's enhanced code, "" when absent */
	struct buf text;   /* lines joined with "\n", enhanced codes stripped; never holds CR */
	size_t nlines;
	const char *error; /* static reason when smtp_reply_parse() returned -EPROTO */
};

void smtp_reply_init(struct smtp_reply *r);
void smtp_reply_free(struct smtp_reply *r);

/* Parses ONE complete (possibly multi-line) reply from buf[0..len), CRLF line endings only.
 * Returns >0 bytes consumed (the rest is the next reply), 0 when more data is needed (r holds
 * nothing useful), -EPROTO when malformed: a code that is not [2-5]DD, a separator other than
 * SP/'-'/CRLF, different codes across lines, a bare CR or LF, a line over
 * SMTP_REPLY_PARSE_LINE_MAX or a reply over SMTP_REPLY_PARSE_TOTAL_MAX. Malformed input is
 * reported as soon as the offending bytes are present. Stateless: call again from the start of
 * the reply with more data (a reply is bounded, so re-scanning is bounded too). */
int smtp_reply_parse(const char *buf, size_t len, struct smtp_reply *r);

/* Line i (0-based, < r->nlines) of a parsed reply's text, without its enhanced code; *len gets
 * its length. NULL when i is out of range. For EHLO capability lists: line 0 is the greeting. */
const char *smtp_reply_line(const struct smtp_reply *r, size_t i, size_t *len);

/* Recognises an enhanced status code "c.sss.ddd" (c in 2/4/5, 1-3 digits each) at the start
 * of s[0..len), followed by a space or the end. Returns 1 and fills the parts and *consumed
 * (the code plus one following space), else 0 (outputs untouched). */
int smtp_enhanced_parse(const char *s, size_t len, int *cls, int *subject, int *detail,
			size_t *consumed);

#endif
