/* SPDX-License-Identifier: Apache-2.0 */
/* Command-line splitter for the SMTP server's read buffer: finds CRLF-terminated lines, refuses
 * bare CR/LF and bounds over-long lines without buffering more than the limit.
 * Owner: the session embeds one struct smtp_line_reader per connection; pure, no I/O.
 * Callers: kumod/smtp (server session); tests and fuzz/fuzz_smtp_line.c.
 * Contract: smtp_line_next() never reads beyond data[len), *consumed <= len, and a line is
 * only ever reported as one of OK / TOO_LONG / BAD_ENDING, exactly once. */
#ifndef KUMOD_PROTO_SMTP_LINE_H
#define KUMOD_PROTO_SMTP_LINE_H

#include <stddef.h>

#define SMTP_LINE_DEFAULT_LIMIT 998

struct smtp_line_reader {
	size_t limit;	/* max line length excluding CRLF (998 default) */
	int discarding; /* inside an over-long line already reported */
	size_t scanned; /* internal: bytes of the pending line already searched for LF */
	int bad;	/* internal: the pending line holds a bare LF */
	int cr;		/* internal: discarding, and the last discarded byte was CR */
};

/* limit 0 selects SMTP_LINE_DEFAULT_LIMIT. */
void smtp_line_reader_init(struct smtp_line_reader *r, size_t limit);

enum smtp_line_status {
	SMTP_LINE_NEED_MORE = 0,
	SMTP_LINE_OK,
	SMTP_LINE_TOO_LONG,
	SMTP_LINE_BAD_ENDING,
	/* The rest of an over-long line (already reported as SMTP_LINE_TOO_LONG) was consumed up
	 * to and including its CRLF: send nothing, call again for the next line. */
	SMTP_LINE_DISCARDED,
};

/* Looks at data[0..len), which must start where the previous call's consumption ended.
 * SMTP_LINE_OK: the line is data[0..*line_len) (no CR or LF in it), *consumed includes CRLF.
 * SMTP_LINE_TOO_LONG: reported once per over-long line, either when more than `limit` bytes
 * arrived without a CRLF (everything is consumed and `discarding` set) or when a complete
 * over-long line is present (consumed through its CRLF).
 * SMTP_LINE_BAD_ENDING: a line holding a bare CR or LF, consumed through its CRLF.
 * SMTP_LINE_DISCARDED: see the enum.
 * SMTP_LINE_NEED_MORE: no complete line; nothing consumed, except while discarding, when
 * every byte is consumed. *line_len is 0 for everything but SMTP_LINE_OK. */
enum smtp_line_status smtp_line_next(struct smtp_line_reader *r, const char *data, size_t len,
				     size_t *line_len, size_t *consumed);

#endif
