/* SPDX-License-Identifier: Apache-2.0 */
/* The introspection protocol's pure parts (docs/console-protocol.md):
 * newline framing, the client-command decoder, duration values of the
 * TOKIO_CONSOLE_* variables, and the JSON writers the server builds its
 * frames with. Bytes in, structs or bytes out; no I/O, no globals.
 * Callers: kumod/ctl/introspect.c (server), the fuzz driver and unit tests. */
#ifndef KUMOD_PROTO_CONSOLE_PROTO_H
#define KUMOD_PROTO_CONSOLE_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

#define CONSOLE_PROTO_VERSION 1
/* Longest command line a client may send (bytes before the newline). */
#define CONSOLE_CMD_MAX 4096
/* No server frame is longer than this (bytes, newline included). */
#define CONSOLE_FRAME_MAX (256 * 1024)
/* Nesting limit of a command's JSON value. */
#define CONSOLE_JSON_DEPTH 16

/* --- framing --------------------------------------------------------------- */

/* Finds the first complete line in p[0..len).
 * >0: bytes consumed (line plus its '\n'); *linelen is the line length
 *     without the '\n' and without one '\r' before it.
 *  0: no newline yet and len <= max: need more bytes.
 * -E2BIG: more than max bytes without a newline (the line is oversized). */
int console_line_next(const char *p, size_t len, size_t max, size_t *linelen);

/* --- commands -------------------------------------------------------------- */

enum console_cmd_kind {
	CONSOLE_CMD_PAUSE = 1,
	CONSOLE_CMD_RESUME,
	CONSOLE_CMD_WATCH_TASK,	    /* "watch_task" or "details", with "id" */
	CONSOLE_CMD_UNWATCH_TASK,   /* "unwatch_task" */
	CONSOLE_CMD_SNAPSHOT,	    /* "snapshot": send the full state again */
	CONSOLE_CMD_SESSION,	    /* "session" with "id": an smtp_server task */
	CONSOLE_CMD_QUEUE_MESSAGES, /* "queue_messages" with "queue", "after", "limit" */
	CONSOLE_CMD_MESSAGE,	    /* "message" with "message_id" */
};

#define CONSOLE_QUEUE_NAME_MAX 1024 /* bytes of a queue name, NUL included */
#define CONSOLE_MESSAGE_ID_MAX 64   /* bytes of a message id, NUL included */
#define CONSOLE_LIMIT_DEFAULT 50    /* queue_messages without "limit" */
#define CONSOLE_LIMIT_MAX 500	    /* largest "limit" accepted */

struct console_cmd {
	enum console_cmd_kind kind;
	uint64_t id;				 /* watch_task, session */
	char queue[CONSOLE_QUEUE_NAME_MAX];	 /* queue_messages */
	char after[CONSOLE_MESSAGE_ID_MAX];	 /* queue_messages: "" = from the first */
	uint64_t limit;				 /* queue_messages: 1..CONSOLE_LIMIT_MAX */
	char message_id[CONSOLE_MESSAGE_ID_MAX]; /* message */
};

/* Decodes one command line (without its newline): a JSON object with a
 * string member "cmd"; watch_task and session need an unsigned integer
 * "id", queue_messages a string "queue" (and optionally a string "after",
 * a message id, and an integer "limit"), message a string "message_id".
 * Strings are ASCII (other characters become '?'); other members are
 * ignored. 0 on success; -EINVAL on error with a message in err and the
 * byte offset of the problem in *errpos. */
int console_cmd_decode(const char *p, size_t len, struct console_cmd *cmd, char *err, size_t errlen,
		       size_t *errpos);
const char *console_cmd_name(enum console_cmd_kind k);

/* Validates p[0..len) as one JSON value (RFC 8259, UTF-8, depth limited).
 * 0 or -EINVAL with *errpos. */
int console_json_validate(const char *p, size_t len, size_t *errpos);

/* --- values ---------------------------------------------------------------- */

/* Parses a duration as people type it: "30s", "5m", "1h", "250ms", "1500us",
 * "2d", "1h30m", or a bare number of milliseconds ("1000"). 0 or -EINVAL
 * (empty, unknown unit, overflow). */
int console_parse_duration(const char *s, uint64_t *ns);

/* --- JSON writers ---------------------------------------------------------- */

/* Appends ',' unless the buffer ends in '{', '[', ':' or is empty: lets
 * the writers below be called in sequence without tracking commas. */
void console_json_sep(struct buf *b);
/* A JSON string: quotes, escapes; invalid UTF-8 becomes U+FFFD. */
void console_json_str(struct buf *b, const char *s);
void console_json_strn(struct buf *b, const char *s, size_t n);
/* ,"key": (separator included) */
void console_json_key(struct buf *b, const char *key);
void console_json_kv_str(struct buf *b, const char *key, const char *v);
void console_json_kv_u64(struct buf *b, const char *key, uint64_t v);
void console_json_kv_i64(struct buf *b, const char *key, int64_t v);
void console_json_kv_bool(struct buf *b, const char *key, int v);
void console_json_u64(struct buf *b, uint64_t v);

/* An error frame: {"type":"error","error":msg,"at":pos} plus '\n'. */
void console_error_frame(struct buf *b, const char *msg, size_t pos);

#endif
