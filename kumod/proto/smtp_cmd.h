/* SPDX-License-Identifier: Apache-2.0 */
/* SMTP command-line parser and formatter: one command line (without its CRLF) in, one
 * struct smtp_cmd out, or the exact reply to send for a syntax error.
 * Owner: nothing; the module keeps no state and allocates nothing. Every smtp_slice points into
 * the caller's line, which must outlive the struct smtp_cmd.
 * Callers: kumod/smtp (server session), kumod/lua (envelope setters, via smtp_path_parse()),
 * tests and fuzz/fuzz_{parser,address,esmtp_params}.c.
 * Contract: parsers never read outside s[0..len); they return 0 or -EINVAL and, on -EINVAL, fill
 * the struct smtp_reply_err with a static reply (code, enhanced code, text). */
#ifndef KUMOD_PROTO_SMTP_CMD_H
#define KUMOD_PROTO_SMTP_CMD_H

#include <stddef.h>
#include <stdint.h>

enum smtp_verb {
	SMTP_VERB_UNKNOWN = 0,
	SMTP_VERB_HELO,
	SMTP_VERB_EHLO,
	SMTP_VERB_LHLO,
	SMTP_VERB_MAIL,
	SMTP_VERB_RCPT,
	SMTP_VERB_DATA,
	SMTP_VERB_RSET,
	SMTP_VERB_NOOP,
	SMTP_VERB_QUIT,
	SMTP_VERB_VRFY,
	SMTP_VERB_EXPN,
	SMTP_VERB_HELP,
	SMTP_VERB_STARTTLS,
	SMTP_VERB_AUTH,
	SMTP_VERB_BDAT,
	SMTP_VERB_XCLIENT,
	SMTP_VERB__COUNT
};

struct smtp_slice {
	const char *p;
	size_t len;
};

struct smtp_mailbox {
	struct smtp_slice local;  /* local part as written (quotes and quoted-pairs kept) */
	struct smtp_slice domain; /* domain, or address literal incl. brackets; empty for <> and
				   * <Postmaster> */
	unsigned null_path : 1, postmaster : 1, quoted : 1, literal : 1, utf8 : 1 /* non-ASCII */;
};

#define SMTP_MAX_PARAMS 16

struct smtp_param {
	struct smtp_slice key, value;
	int has_value;
};

enum smtp_body {
	SMTP_BODY_NONE = 0,
	SMTP_BODY_7BIT,
	SMTP_BODY_8BITMIME
};

struct smtp_cmd {
	enum smtp_verb verb;
	/* Text after the verb and its space, with surrounding spaces trimmed: the HELO/EHLO/LHLO
	 * domain, VRFY/EXPN/HELP/NOOP/AUTH/BDAT/XCLIENT arguments; for MAIL/RCPT the whole
	 * "FROM:<...> params" text (for logging only). */
	struct smtp_slice arg;
	struct smtp_mailbox path; /* MAIL / RCPT */
	struct smtp_param params[SMTP_MAX_PARAMS];
	size_t nparams;
	uint64_t size;
	int has_size;
	enum smtp_body body;
	int smtputf8; /* MAIL carried SMTPUTF8 */
};

struct smtp_reply_err {
	int code;
	const char *enhanced; /* "5.5.2" or NULL */
	const char *text;     /* static text */
};

/* Parses one command line (no CRLF; the line splitter already refused bare CR/LF).
 * Returns 0 and fills *cmd, or -EINVAL and fills *err with the reply to send. On -EINVAL
 * cmd->verb is still set when the verb was recognised (so the session can answer 503 for a
 * command out of sequence before judging its arguments); it is SMTP_VERB_UNKNOWN for an
 * unknown verb and for lines with control characters.
 * RCPT: the parser accepts a UTF-8 path (cmd->path.utf8); whether that is allowed depends on
 * the transaction's MAIL SMTPUTF8, which the caller checks with smtp_cmd_check_utf8(). */
int smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *cmd, struct smtp_reply_err *err);

/* "MAIL" ... ; "UNKNOWN" for SMTP_VERB_UNKNOWN and out-of-range values. */
const char *smtp_verb_name(enum smtp_verb v);

/* Parses a path "<...>" (or a lenient bare mailbox ending at a space or at len) at s, as used
 * for MAIL/RCPT and by the Lua envelope setters. `is_sender` allows <> and picks the 5.1.7
 * (sender) vs 5.1.3 (recipient) texts, and only a recipient may be <Postmaster>; `smtputf8`
 * allows (strictly valid) UTF-8, otherwise non-ASCII is 553 5.6.7.
 * Returns 0 with *consumed = bytes used (<= len; the caller checks what follows), or -EINVAL
 * and *err. Source routes are skipped; mb->domain excludes them. */
int smtp_path_parse(const char *s, size_t len, int is_sender, int smtputf8, struct smtp_mailbox *mb,
		    size_t *consumed, struct smtp_reply_err *err);

/* Writes "local@domain" ("" for <>, "Postmaster" for <Postmaster>) NUL-terminated into dst
 * (truncated to cap - 1 bytes; dst may be NULL when cap is 0); returns the length needed. */
size_t smtp_mailbox_format(const struct smtp_mailbox *mb, char *dst, size_t cap);

/* Re-encodes a parsed command as a canonical line (no CRLF): upper-case verb, "FROM:<...>",
 * route dropped, parameters as written. Same return convention as smtp_mailbox_format(). */
size_t smtp_cmd_format(const struct smtp_cmd *cmd, char *dst, size_t cap);

/* For RCPT: a non-ASCII recipient is allowed only when the transaction's MAIL carried
 * SMTPUTF8. Returns 0, or -EINVAL with 553 5.6.7 in *err. */
int smtp_cmd_check_utf8(const struct smtp_cmd *cmd, int txn_smtputf8, struct smtp_reply_err *err);

/* 1 when p[0..len) is strictly valid UTF-8 (no overlongs, surrogates, > U+10FFFF, truncated
 * sequences), else 0. */
int smtp_utf8_valid(const char *p, size_t len);

/* 1 when p[0..len) is an ASCII domain (LDH labels of 1..63 octets, no leading/trailing hyphen,
 * no empty label, so no trailing dot; <= 255 octets) or an address literal "[a.b.c.d]" /
 * "[IPv6:...]"; else 0. */
int smtp_domain_valid(const char *p, size_t len);

/* Same, additionally allowing U-labels (strictly valid UTF-8 non-ASCII) for SMTPUTF8. */
int smtp_domain_valid_utf8(const char *p, size_t len);

#endif
