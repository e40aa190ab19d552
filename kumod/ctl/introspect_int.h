/* SPDX-License-Identifier: Apache-2.0 */
/* Private to kumod/ctl/introspect*.c: the frames of the drill-down views
 * (docs/console-protocol.md): a server session with its transcript, a page
 * of a scheduled queue's messages, one message with its timeline. */
#ifndef KUMOD_CTL_INTROSPECT_INT_H
#define KUMOD_CTL_INTROSPECT_INT_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "proto/console_proto.h"

/* Transcript lines a session view shows. */
#define INTROSPECT_SESSION_LINES 20

/* Each builds one frame (newline included) into b and returns 0, or
 * returns -1 with the reason in err (the caller sends an error frame). */
int introspect__session_frame(struct buf *b, uint64_t task_id, uint64_t now, char *err,
			      size_t errlen);
int introspect__queue_messages_frame(struct buf *b, const struct console_cmd *cmd, uint64_t now,
				     char *err, size_t errlen);
int introspect__message_frame(struct buf *b, const char *id, uint64_t now, char *err,
			      size_t errlen);
/* ,"session":{...} when task_id runs a live server session (task details). */
void introspect__session_member(struct buf *b, uint64_t task_id);

#endif
