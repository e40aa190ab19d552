/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the DATA framer: one-shot vs chunked vs a line-based reference model,
 * no bare CR/LF under Deny-clean and Fix, and stuff -> feed round-trips. Aborts on violation.
 * Input: byte 0 picks policy, limits and the chunking seed; the rest is the stream. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "proto/smtp_data.h"
#include "fuzz_check.h"

struct fz_result {
	struct buf out;
	size_t consumed, size;
	int done, bare, ltl, too_big;
};

static void fz_feed(int pol, size_t max, size_t limit, const char *in, size_t len, uint32_t seed,
		    struct fz_result *r)
{
	struct smtp_data_framer f;
	size_t off = 0;

	smtp_data_framer_init(&f, pol, max, limit);
	buf_init(&r->out);
	r->consumed = 0;
	do {
		size_t n = len - off;
		if (seed) {
			seed = seed * 1103515245u + 12345u;
			n = (seed >> 16) % 17; /* includes empty feeds */
			if (n > len - off)
				n = len - off;
		}
		size_t c = smtp_data_feed(&f, in + off, n, &r->out);
		CHECK(c <= n);
		CHECK(f.done || c == n);
		r->consumed += c;
		off += n;
		if (f.done) {
			CHECK(smtp_data_feed(&f, in, len, &r->out) == 0);
			break;
		}
	} while (off < len);
	r->size = f.size;
	r->done = f.done;
	r->bare = f.bare_eol;
	r->ltl = f.line_too_long;
	r->too_big = f.too_big;
}

/* Content of one line (CR/LF inside are bare) under the policy; `open` marks an incomplete
 * last line, whose trailing CR is still pending (stored, not yet judged). */
static void fz_ref_content(int pol, size_t limit, const char *p, size_t n, int open,
			   struct buf *out, int *bare, int *ltl)
{
	size_t seg = 0;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if ((c == '\r' || c == '\n') && !(open && c == '\r' && i == n - 1)) {
			*bare = 1;
			seg = 0;
			buf_append(out, pol == SMTP_EOL_FIX ? "\r\n" : &p[i],
				   pol == SMTP_EOL_FIX ? 2 : 1);
			continue;
		}
		buf_appendc(out, c);
		if (c != '\r' && ++seg > limit)
			*ltl = 1;
	}
}

/* Reference: lines end only at CRLF; "." CRLF ends; a leading dot is dropped. */
static void fz_reference(int pol, size_t limit, const char *in, size_t len, struct fz_result *r)
{
	size_t pos = 0;

	memset(r, 0, sizeof(*r));
	buf_init(&r->out);
	for (;;) {
		const char *crlf = NULL;
		for (size_t j = pos; j + 1 < len; j++) {
			if (in[j] == '\r' && in[j + 1] == '\n') {
				crlf = in + j;
				break;
			}
		}
		size_t end = crlf ? (size_t)(crlf - in) : len;
		if (crlf && end == pos + 1 && in[pos] == '.') {
			r->done = 1;
			r->consumed = end + 2;
			break;
		}
		size_t s = pos < end && in[pos] == '.' ? pos + 1 : pos;
		if (!crlf && s > pos && end - s == 1 && in[s] == '\r')
			s = end; /* "." CR at the end: the CR is held back */
		fz_ref_content(pol, limit, in + s, end - s, !crlf, &r->out, &r->bare, &r->ltl);
		if (!crlf) {
			r->consumed = len;
			break;
		}
		buf_append(&r->out, "\r\n", 2);
		pos = end + 2;
	}
	r->size = r->out.len;
}

static int fz_has_bare(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
			return 1;
		if (p[i] == '\r' && (i + 1 == n || p[i + 1] != '\n'))
			return 1;
	}
	return 0;
}

static void fz_same(const struct fz_result *a, const struct fz_result *b)
{
	CHECK(a->out.len == b->out.len);
	CHECK(!a->out.len || memcmp(a->out.data, b->out.data, a->out.len) == 0);
	CHECK(a->consumed == b->consumed && a->size == b->size && a->done == b->done);
	CHECK(a->bare == b->bare && a->ltl == b->ltl && a->too_big == b->too_big);
}

static void fz_roundtrip(int pol, const char *in, size_t len)
{
	struct buf st, want;
	struct fz_result r;

	buf_init(&st);
	buf_init(&want);
	smtp_data_stuff(&st, in, len);
	CHECK(!fz_has_bare(st.data, st.len));
	for (size_t i = 0; i < len; i++) {
		if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n') {
			buf_append(&want, "\r\n", 2);
			i++;
		} else if (in[i] == '\r' || in[i] == '\n') {
			buf_append(&want, "\r\n", 2);
		} else {
			buf_appendc(&want, in[i]);
		}
	}
	if (len && in[len - 1] != '\r' && in[len - 1] != '\n')
		buf_append(&want, "\r\n", 2);
	fz_feed(pol, 0, 0, st.data, st.len, 0, &r);
	CHECK(r.done && r.consumed == st.len && !r.bare);
	CHECK(r.out.len == want.len);
	CHECK(!want.len || memcmp(r.out.data, want.data, want.len) == 0);
	buf_free(&r.out);
	buf_free(&st);
	buf_free(&want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t maxes[] = {0, 16, 64, 0};
	struct fz_result one, chunked, ref;

	if (size < 1)
		return 0;
	int pol = data[0] % 3;
	size_t max = maxes[(data[0] >> 2) & 3];
	size_t limit = (data[0] >> 4) & 1 ? 6 : 998;
	uint32_t seed = (uint32_t)(data[0] >> 5) * 2654435761u + (uint32_t)size + 1;
	const char *in = (const char *)data + 1;
	size_t len = size - 1;

	fz_feed(pol, max, limit, in, len, 0, &one);
	fz_feed(pol, max, limit, in, len, seed, &chunked);
	fz_same(&one, &chunked);
	fz_reference(pol, limit, in, len, &ref);
	CHECK(one.done == ref.done && one.consumed == ref.consumed && one.size == ref.size);
	CHECK(one.bare == ref.bare && one.ltl == ref.ltl);
	CHECK(one.too_big == (max && ref.size > max));
	size_t kept = one.too_big ? max : ref.size;
	CHECK(one.out.len == kept && (!kept || memcmp(one.out.data, ref.out.data, kept) == 0));
	/* End of data only at CRLF "." CRLF, or "." CRLF as the very first line. */
	if (one.done)
		CHECK(one.consumed >= 3 && !memcmp(in + one.consumed - 3, ".\r\n", 3) &&
		      (one.consumed == 3 || !memcmp(in + one.consumed - 5, "\r\n", 2)));
	/* Deny and Allow store content as received: bare_eol is set exactly when the stored
	 * content holds a bare CR or LF (so a clean Deny result has none). */
	if (one.done && !one.too_big && pol != SMTP_EOL_FIX)
		CHECK(one.bare == fz_has_bare(one.out.data, one.out.len));
	if (one.done && one.size && !one.too_big)
		CHECK(one.out.len >= 2 && !memcmp(one.out.data + one.out.len - 2, "\r\n", 2));
	if (one.done && !one.too_big && (pol == SMTP_EOL_FIX || !one.bare))
		CHECK(!fz_has_bare(one.out.data, one.out.len));
	if (pol == SMTP_EOL_FIX && !one.too_big && one.out.len) /* a pending CR may end it */
		CHECK(!fz_has_bare(one.out.data,
				   one.out.len - (one.out.data[one.out.len - 1] == '\r')));
	fz_roundtrip(pol, in, len);
	buf_free(&one.out);
	buf_free(&chunked.out);
	buf_free(&ref.out);
	return 0;
}
