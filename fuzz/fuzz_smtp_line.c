/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the SMTP command-line splitter: one-shot vs chunked vs a reference
 * model; lines never hold CR/LF; consumption and buffering stay bounded. Aborts on violation.
 * Input: byte 0 picks the limit and the chunking seed; the rest is the stream. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "proto/smtp_line.h"
#include "fuzz_check.h"

/* Events as text: 'O' + 4-byte length + line, 'L' too long, 'B' bad ending. */
static void fz_event(struct buf *log, char kind, const char *p, size_t n)
{
	uint32_t n32 = (uint32_t)n;
	buf_appendc(log, kind);
	if (kind == 'O') {
		buf_append(log, &n32, sizeof(n32));
		buf_append(log, p, n);
	}
}

static void fz_run(size_t limit, const char *in, size_t len, uint32_t seed, struct buf *log)
{
	struct smtp_line_reader r;
	struct buf rb;
	size_t off = 0;

	smtp_line_reader_init(&r, limit);
	buf_init(&rb);
	do {
		size_t n = len - off;
		if (seed) {
			seed = seed * 1103515245u + 12345u;
			n = (seed >> 16) % 23;
			if (n > len - off)
				n = len - off;
		}
		buf_append(&rb, in + off, n);
		off += n;
		for (;;) {
			size_t ll, used, avail = buf_avail(&rb);
			enum smtp_line_status st =
			    smtp_line_next(&r, buf_rptr(&rb), avail, &ll, &used);
			CHECK(used <= avail);
			if (st == SMTP_LINE_OK) {
				CHECK(used == ll + 2 && ll <= r.limit);
				CHECK(!memchr(buf_rptr(&rb), '\r', ll) &&
				      !memchr(buf_rptr(&rb), '\n', ll));
				CHECK(!memcmp(buf_rptr(&rb) + ll, "\r\n", 2));
				fz_event(log, 'O', buf_rptr(&rb), ll);
			} else {
				CHECK(ll == 0);
			}
			if (st == SMTP_LINE_TOO_LONG)
				fz_event(log, 'L', NULL, 0);
			if (st == SMTP_LINE_BAD_ENDING)
				fz_event(log, 'B', NULL, 0);
			if (st != SMTP_LINE_NEED_MORE)
				CHECK(used > 0);
			else
				CHECK(r.discarding ? used == avail : used == 0);
			if (used)
				buf_consume(&rb, used);
			if (st == SMTP_LINE_NEED_MORE) {
				CHECK(buf_avail(&rb) <= r.limit + 1);
				break;
			}
		}
	} while (off < len);
	buf_free(&rb);
}

/* Reference: split at CRLF; content longer than limit is too long, else any CR/LF is bad;
 * an unterminated tail counts once it reaches limit + 2 bytes. */
static void fz_reference(size_t limit, const char *in, size_t len, struct buf *log)
{
	size_t pos = 0;

	while (pos < len) {
		size_t j = pos;
		while (j + 1 < len && !(in[j] == '\r' && in[j + 1] == '\n'))
			j++;
		if (j + 1 >= len) {
			if (len - pos >= limit + 2)
				fz_event(log, 'L', NULL, 0);
			return;
		}
		if (j - pos > limit)
			fz_event(log, 'L', NULL, 0);
		else if (memchr(in + pos, '\r', j - pos) || memchr(in + pos, '\n', j - pos))
			fz_event(log, 'B', NULL, 0);
		else
			fz_event(log, 'O', in + pos, j - pos);
		pos = j + 2;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf one, chunked, ref;

	if (size < 1)
		return 0;
	size_t limit = data[0] & 0x80 ? 998 : (size_t)(data[0] & 0x0f) + 1;
	uint32_t seed = (uint32_t)(data[0] >> 4) * 2654435761u + (uint32_t)size + 1;
	const char *in = (const char *)data + 1;
	size_t len = size - 1;

	buf_init(&one);
	buf_init(&chunked);
	buf_init(&ref);
	fz_run(limit, in, len, 0, &one);
	fz_run(limit, in, len, seed, &chunked);
	fz_reference(limit, in, len, &ref);
	CHECK(one.len == chunked.len && (!one.len || !memcmp(one.data, chunked.data, one.len)));
	CHECK(one.len == ref.len && (!one.len || !memcmp(one.data, ref.data, one.len)));
	buf_free(&one);
	buf_free(&chunked);
	buf_free(&ref);
	return 0;
}
