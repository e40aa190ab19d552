/* SPDX-License-Identifier: Apache-2.0 */
/* SMTP DATA framer and dot-stuffer: the only code that decides where message content ends. */
#include "proto/smtp_data.h"

#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Where the framer stands between two input bytes. Lines start only after CRLF (or at the
 * very beginning): a bare CR or LF never makes a following "." special. */
enum smtp_data_state {
	SMTP_DATA_BOL = 0, /* at the start of a line */
	SMTP_DATA_DOT,	   /* "." at the start of a line: never content */
	SMTP_DATA_DOT_CR,  /* "." CR at the start of a line: the CR is not in the output yet */
	SMTP_DATA_MID,	   /* inside a line */
	SMTP_DATA_CR,	   /* CR inside a line, already in the output (or in the pending run) */
	SMTP_DATA_DONE,
};

/* First CR or LF in [p, end), or end: one pass instead of two memchr() per line. */
static const char *smtp_data_find_eol(const char *p, const char *end)
{
#ifdef __SSE2__
	const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
	while (end - p >= 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
		int m =
		    _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf)));
		if (m)
			return p + __builtin_ctz((unsigned)m);
		p += 16;
	}
	while (p < end && *p != '\r' && *p != '\n')
		p++;
	return p;
#else
	const char *c = memchr(p, '\r', (size_t)(end - p));
	const char *l = memchr(p, '\n', c ? (size_t)(c - p) : (size_t)(end - p));
	return l ? l : c ? c : end;
#endif
}

void smtp_data_framer_init(struct smtp_data_framer *f, enum smtp_eol_policy policy, size_t max_size,
			   size_t line_limit)
{
	memset(f, 0, sizeof(*f));
	f->policy = policy;
	f->max_size = max_size;
	f->line_limit = line_limit ? line_limit : SMTP_DATA_DEFAULT_LINE_LIMIT;
	f->state = SMTP_DATA_BOL;
}

/* Appends content up to the size limit (so the stored prefix never depends on how the input
 * was chunked); size keeps counting past it. */
static void smtp_data_emit(struct smtp_data_framer *f, struct buf *out, const char *p, size_t n)
{
	if (n == 0 || f->too_big) {
		f->size += n;
		return;
	}
	if (f->max_size && n > f->max_size - f->size) {
		buf_append(out, p, f->max_size - f->size);
		f->too_big = 1;
	} else {
		buf_append(out, p, n);
	}
	f->size += n;
}

static void smtp_data_line_add(struct smtp_data_framer *f, size_t n)
{
	f->line_len += n;
	if (f->line_len > f->line_limit)
		f->line_too_long = 1;
}

/* A bare CR (already in the run, just before pos) or LF (at pos, is_lf): record it, and
 * under Fix store CRLF in its place. */
static void smtp_data_bare(struct smtp_data_framer *f, struct buf *out, const char **run,
			   const char *pos, int is_lf)
{
	f->bare_eol = 1;
	f->line_len = 0;
	if (f->policy != SMTP_EOL_FIX)
		return;
	smtp_data_emit(f, out, *run, (size_t)(pos - *run));
	smtp_data_emit(f, out, is_lf ? "\r\n" : "\n", is_lf ? 2 : 1);
	*run = pos + is_lf;
}

/* One step at a line boundary (every state but MID). Returns the new input position; *stop
 * is set at the end of data. */
static const char *smtp_data_edge(struct smtp_data_framer *f, struct buf *out, const char **run,
				  const char *p, int *stop)
{
	switch (f->state) {
	case SMTP_DATA_BOL:
		f->state = SMTP_DATA_MID;
		if (*p != '.')
			return p;
		smtp_data_emit(f, out, *run, (size_t)(p - *run));
		*run = p + 1;
		f->state = SMTP_DATA_DOT;
		return p + 1;
	case SMTP_DATA_DOT:
		if (*p != '\r') {
			f->state = SMTP_DATA_MID; /* dot-unstuffed: reread *p as content */
			return p;
		}
		*run = p + 1;
		f->state = SMTP_DATA_DOT_CR;
		return p + 1;
	case SMTP_DATA_DOT_CR:
		if (*p == '\n') {
			*run = p + 1;
			f->state = SMTP_DATA_DONE;
			f->done = 1;
			*stop = 1;
			return p + 1;
		}
		/* "." CR x: the CR held back from the output is a bare CR after all. */
		smtp_data_emit(f, out, "\r", 1);
		f->state = SMTP_DATA_CR;
		return p;
	case SMTP_DATA_CR:
		if (*p == '\n') {
			f->line_len = 0;
			f->state = SMTP_DATA_BOL;
			return p + 1;
		}
		smtp_data_bare(f, out, run, p, 0);
		f->state = SMTP_DATA_MID;
		return p;
	default:
		*stop = 1;
		return p;
	}
}

size_t smtp_data_feed(struct smtp_data_framer *f, const char *data, size_t len, struct buf *out)
{
	const char *p = data, *end = data + len, *run = data;
	int stop = 0;

	if (f->done)
		return 0;
	while (p < end && !stop) {
		if (f->state != SMTP_DATA_MID) {
			p = smtp_data_edge(f, out, &run, p, &stop);
			continue;
		}
		/* Inside a line: skip to the next CR or LF. */
		const char *q = smtp_data_find_eol(p, end);
		smtp_data_line_add(f, (size_t)(q - p));
		if (q == end) {
			p = end;
		} else if (*q == '\r') {
			f->state = SMTP_DATA_CR;
			p = q + 1;
		} else {
			smtp_data_bare(f, out, &run, q, 1);
			p = q + 1;
		}
	}
	smtp_data_emit(f, out, run, (size_t)(p - run));
	return (size_t)(p - data);
}

void smtp_data_stuff(struct buf *out, const char *in, size_t len)
{
	const char *p = in, *end = in + len, *run = in;

	buf_reserve(out, len + len / 64 + 8);
	while (p < end) {
		/* p is at the start of a line */
		if (*p == '.') {
			buf_append(out, run, (size_t)(p - run));
			buf_appendc(out, '.');
			run = p; /* the original dot follows the added one */
		}
		const char *q = smtp_data_find_eol(p, end);
		if (q == end)
			break;
		if (*q == '\r' && q + 1 < end && q[1] == '\n') {
			p = q + 2;
			continue;
		}
		buf_append(out, run, (size_t)(q - run));
		buf_append(out, "\r\n", 2);
		p = run = q + 1;
	}
	buf_append(out, run, (size_t)(end - run));
	if (len && in[len - 1] != '\n' && in[len - 1] != '\r')
		buf_append(out, "\r\n", 2);
	buf_append(out, ".\r\n", 3);
}
