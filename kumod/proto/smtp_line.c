/* SPDX-License-Identifier: Apache-2.0 */
/* SMTP command-line splitter: CRLF-only line endings, bounded over-long lines. */
#include "proto/smtp_line.h"

#include <stdint.h>
#include <string.h>

void smtp_line_reader_init(struct smtp_line_reader *r, size_t limit)
{
	memset(r, 0, sizeof(*r));
	if (limit == 0)
		limit = SMTP_LINE_DEFAULT_LIMIT;
	if (limit > SIZE_MAX / 2)
		limit = SIZE_MAX / 2;
	r->limit = limit;
}

/* Skips the rest of an over-long line. Returns SMTP_LINE_DISCARDED once its CRLF was
 * consumed, or SMTP_LINE_NEED_MORE after consuming everything. r->cr carries a CR that
 * ended the previous chunk, so a CRLF split across reads is still seen. */
static enum smtp_line_status smtp_line_discard(struct smtp_line_reader *r, const char *data,
					       size_t len, size_t *consumed)
{
	size_t i = 0;
	const char *lf;

	if (len == 0) {
		*consumed = 0;
		return SMTP_LINE_NEED_MORE;
	}
	if (r->cr && data[0] == '\n') {
		i = 1;
		goto found;
	}
	while (i < len && (lf = memchr(data + i, '\n', len - i))) {
		i = (size_t)(lf - data) + 1;
		if (i >= 2 && data[i - 2] == '\r')
			goto found;
	}
	r->cr = data[len - 1] == '\r';
	*consumed = len;
	return SMTP_LINE_NEED_MORE;
found:
	r->discarding = 0;
	r->cr = 0;
	*consumed = i;
	return SMTP_LINE_DISCARDED;
}

/* A CRLF was found with its LF at data[at]: classify the line data[0..at-1). */
static enum smtp_line_status smtp_line_finish(struct smtp_line_reader *r, const char *data,
					      size_t at, size_t *line_len, size_t *consumed)
{
	int bad = r->bad || memchr(data, '\r', at - 1) != NULL;

	r->scanned = 0;
	r->bad = 0;
	*consumed = at + 1;
	if (bad)
		return SMTP_LINE_BAD_ENDING;
	*line_len = at - 1;
	return SMTP_LINE_OK;
}

enum smtp_line_status smtp_line_next(struct smtp_line_reader *r, const char *data, size_t len,
				     size_t *line_len, size_t *consumed)
{
	/* A line of `limit` bytes plus CRLF is the longest acceptable one: its LF sits at
	 * index limit + 1, so only the first limit + 2 bytes need searching. */
	size_t window = len < r->limit + 2 ? len : r->limit + 2;
	size_t i = r->scanned < window ? r->scanned : window;
	const char *lf;
	size_t rest;

	*line_len = 0;
	*consumed = 0;
	if (r->discarding)
		return smtp_line_discard(r, data, len, consumed);
	while (i < window && (lf = memchr(data + i, '\n', window - i))) {
		size_t at = (size_t)(lf - data);
		if (at > 0 && data[at - 1] == '\r')
			return smtp_line_finish(r, data, at, line_len, consumed);
		r->bad = 1; /* bare LF: keep looking for the CRLF that really ends the line */
		i = at + 1;
	}
	if (len < r->limit + 2) {
		r->scanned = window;
		return SMTP_LINE_NEED_MORE;
	}
	/* Over-long: report now, and drop what follows up to the CRLF (maybe already here). */
	r->scanned = 0;
	r->bad = 0;
	r->discarding = 1;
	r->cr = data[window - 1] == '\r';
	smtp_line_discard(r, data + window, len - window, &rest);
	*consumed = window + rest;
	return SMTP_LINE_TOO_LONG;
}
