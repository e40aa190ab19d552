/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `console_proto`: the introspection server's command path.
 * The input is a byte stream from a viewer, split into lines exactly as the
 * server does, each line decoded as a command. Invariants: line framing
 * consumes within bounds and never returns a line over the limit; a decoded
 * command has a known kind, a non-zero id for watch_task and session, a
 * queue name and a limit in range for queue_messages, a message id for
 * message, and NUL-terminated string members; every accepted
 * command is valid JSON; an error names a position inside the line; an error
 * frame built from the message is itself valid JSON. Byte 0 also drives the
 * duration parser and the JSON string writer (round trip through the
 * validator). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "proto/console_proto.h"
#include "fuzz_check.h"

static void fz_line(const char *p, size_t len)
{
	struct console_cmd cmd;
	char err[128];
	size_t pos = 0;
	int rc = console_cmd_decode(p, len, &cmd, err, sizeof(err), &pos);
	if (rc == 0) {
		CHECK(cmd.kind >= CONSOLE_CMD_PAUSE && cmd.kind <= CONSOLE_CMD_MESSAGE);
		CHECK(cmd.kind != CONSOLE_CMD_WATCH_TASK || cmd.id != 0);
		CHECK(cmd.kind != CONSOLE_CMD_SESSION || cmd.id != 0);
		CHECK(memchr(cmd.queue, 0, sizeof(cmd.queue)) &&
		      memchr(cmd.after, 0, sizeof(cmd.after)) &&
		      memchr(cmd.message_id, 0, sizeof(cmd.message_id)));
		CHECK(cmd.kind != CONSOLE_CMD_QUEUE_MESSAGES ||
		      (cmd.queue[0] && cmd.limit >= 1 && cmd.limit <= CONSOLE_LIMIT_MAX));
		CHECK(cmd.kind != CONSOLE_CMD_MESSAGE || cmd.message_id[0]);
		CHECK(console_json_validate(p, len, NULL) == 0);
		return;
	}
	CHECK(rc == -EINVAL);
	CHECK(pos <= len);
	CHECK(err[0] != '\0');
	struct buf b;
	buf_init(&b);
	console_error_frame(&b, err, pos);
	CHECK(b.len > 0 && b.data[b.len - 1] == '\n');
	CHECK(console_json_validate(b.data, b.len - 1, NULL) == 0);
	buf_free(&b);
}

static void fz_writers(const char *p, size_t len)
{
	struct buf b;
	buf_init(&b);
	console_json_strn(&b, p, len);
	CHECK(console_json_validate(b.data, b.len, NULL) == 0);
	buf_free(&b);
	char *s = malloc(len + 1);
	CHECK(s);
	memcpy(s, p, len);
	s[len] = '\0';
	uint64_t ns;
	(void)console_parse_duration(s, &ns);
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	size_t max = size && (data[0] & 1) ? 64 : CONSOLE_CMD_MAX;
	if (size && (data[0] & 2))
		fz_writers(p, size);
	while (size) {
		size_t linelen = 0;
		int n = console_line_next(p, size, max, &linelen);
		if (n == 0)
			break;
		if (n < 0) {
			CHECK(n == -E2BIG && size > max);
			break;
		}
		CHECK((size_t)n <= size && linelen < (size_t)n && linelen <= max);
		fz_line(p, linelen);
		p += n;
		size -= (size_t)n;
	}
	return 0;
}
