/* SPDX-License-Identifier: Apache-2.0 */
/* Incremental SMTP DATA framer (end-of-data detection, dot-unstuffing, bare CR/LF policy, size
 * and line limits) and its inverse, the dot-stuffer used by the outbound client.
 * Owner: the session embeds one struct smtp_data_framer per DATA transaction and owns `out`;
 * pure, no I/O. Callers: kumod/smtp (server and client), tests, fuzz/fuzz_data_framer.c.
 * Contract: smtp_data_feed() returns the bytes consumed; it consumes everything it is given
 * until it has seen the end of data, then stops right after it (f->done = 1) and returns 0
 * on later calls. End of data is only CRLF "." CRLF where the CRLF ended the previous line,
 * or "." CRLF as the very first line; every other mix of CR, LF, NUL and "." is content. */
#ifndef KUMOD_PROTO_SMTP_DATA_H
#define KUMOD_PROTO_SMTP_DATA_H

#include <stddef.h>

#include "base/buf.h"

#define SMTP_DATA_DEFAULT_LINE_LIMIT 998

/* What to do with a bare CR or LF in message content (listener `invalid_line_endings`). */
enum smtp_eol_policy {
	SMTP_EOL_DENY = 0, /* store as received, flag bare_eol: the caller rejects at the end */
	SMTP_EOL_ALLOW,	   /* store as received */
	SMTP_EOL_FIX,	   /* store each bare CR or LF as CRLF */
};

struct smtp_data_framer {
	enum smtp_eol_policy policy;
	size_t max_size;   /* content bytes allowed; 0 = unlimited */
	size_t line_limit; /* max content line length excluding CRLF, after unstuffing (998) */
	/* Results, read by the caller once done: */
	size_t size;	   /* content bytes seen after unstuffing (and fixing), even if too_big */
	int bare_eol;	   /* saw a bare CR or LF */
	int line_too_long; /* a line exceeded line_limit */
	int too_big;	   /* size exceeded max_size: only the first max_size bytes were appended */
	int done;	   /* end of data seen */
	/* Internal: */
	int state;	 /* enum smtp_data_state in smtp_data.c */
	size_t line_len; /* content bytes of the current line */
};

/* policy as above; max_size 0 = unlimited; line_limit 0 = SMTP_DATA_DEFAULT_LINE_LIMIT. */
void smtp_data_framer_init(struct smtp_data_framer *f, enum smtp_eol_policy policy, size_t max_size,
			   size_t line_limit);

/* Feeds bytes that follow the 354 reply; any split into chunks gives the same result. Appends
 * unstuffed content to `out` (ending with the last line's CRLF; the final ".\r\n" is not
 * content), at most max_size bytes of it. Returns the bytes consumed: len while not done; once the
 * end of data is seen, the count up to and including its ".\r\n" (the rest is the next command). */
size_t smtp_data_feed(struct smtp_data_framer *f, const char *data, size_t len, struct buf *out);

/* For the outbound client and tests: appends `in` with every bare CR or LF normalised to
 * CRLF, every line starting with "." dot-stuffed, a final CRLF added if `in` is non-empty
 * and lacks one, then ".\r\n". */
void smtp_data_stuff(struct buf *out, const char *in, size_t len);

#endif
