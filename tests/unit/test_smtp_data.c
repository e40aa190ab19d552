/* SPDX-License-Identifier: Apache-2.0 */
/* DATA framer and dot-stuffer: end-of-data variants, policies, limits, every chunking. */
#include "proto/smtp_data.h"
#include "test.h"

struct data_result {
	struct buf out;
	size_t consumed;
	size_t size;
	int done, bare_eol, line_too_long, too_big;
};

/* Feeds `in` split at the (sorted) offsets cuts[0..ncuts), checking the consumption
 * contract on every call. */
static void data_run(enum smtp_eol_policy pol, size_t max, size_t limit, const char *in, size_t len,
		     const size_t *cuts, size_t ncuts, struct data_result *res)
{
	struct smtp_data_framer f;
	size_t off = 0;

	smtp_data_framer_init(&f, pol, max, limit);
	buf_init(&res->out);
	res->consumed = 0;
	for (size_t i = 0; i <= ncuts && !f.done; i++) {
		size_t to = i < ncuts ? cuts[i] : len;
		if (to < off)
			to = off;
		size_t n = smtp_data_feed(&f, in + off, to - off, &res->out);
		res->consumed += n;
		if (!f.done)
			ASSERT_EQ(n, to - off);
		else
			ASSERT_LE(n, to - off);
		off = to;
	}
	buf_cstr(&res->out); /* never NULL, for memcmp */
	res->size = f.size;
	res->done = f.done;
	res->bare_eol = f.bare_eol;
	res->line_too_long = f.line_too_long;
	res->too_big = f.too_big;
}

static void data_same(const struct data_result *a, const struct data_result *b, const char *in,
		      size_t len, const char *how)
{
	if (a->out.len != b->out.len || memcmp(a->out.data, b->out.data, a->out.len) != 0 ||
	    a->consumed != b->consumed || a->done != b->done || a->bare_eol != b->bare_eol ||
	    a->line_too_long != b->line_too_long || a->too_big != b->too_big || a->size != b->size)
		TEST_FAIL("input \"%.*s\": %s differs from one-shot (out %zu/%zu consumed %zu/%zu)",
			  (int)len, in, how, a->out.len, b->out.len, a->consumed, b->consumed);
}

/* Every 1-cut, every 2-cut (short inputs) and byte-at-a-time give the one-shot result. */
static void data_all_chunkings(enum smtp_eol_policy pol, size_t max, size_t limit, const char *in,
			       size_t len, struct data_result *one)
{
	struct data_result r;
	size_t cuts[4096];

	data_run(pol, max, limit, in, len, NULL, 0, one);
	for (size_t a = 0; a <= len; a++) {
		cuts[0] = a;
		data_run(pol, max, limit, in, len, cuts, 1, &r);
		data_same(one, &r, in, len, "one cut");
		buf_free(&r.out);
		for (size_t b = a; len <= 64 && b <= len; b++) {
			cuts[1] = b;
			data_run(pol, max, limit, in, len, cuts, 2, &r);
			data_same(one, &r, in, len, "two cuts");
			buf_free(&r.out);
		}
	}
	if (len < ARRAY_SIZE(cuts)) {
		for (size_t i = 0; i < len; i++)
			cuts[i] = i + 1;
		data_run(pol, max, limit, in, len, cuts, len, &r);
		data_same(one, &r, in, len, "bytewise");
		buf_free(&r.out);
	}
}

#define S(x) x, sizeof(x) - 1
#define W(x)                     \
	{                        \
		x, sizeof(x) - 1 \
	}
#define SAME            \
	{               \
		NULL, 0 \
	}
#define ALL ((size_t)-1)

struct data_bytes {
	const char *s;
	size_t n;
};

static const struct {
	const char *in;
	size_t len;
	int done;
	size_t consumed;	/* ALL: the whole input */
	struct data_bytes keep; /* output under Deny and Allow */
	struct data_bytes fix;	/* output under Fix (SAME: as keep) */
	int bare;
} data_cases[] = {
    {S("Hello\r\n.\r\n"), 1, 10, W("Hello\r\n"), SAME, 0},
    {S(".\r\n"), 1, 3, W(""), SAME, 0},
    {S(".\r\nMAIL FROM:<a>\r\n"), 1, 3, W(""), SAME, 0},
    {S("\r\n.\r\n"), 1, 5, W("\r\n"), SAME, 0},
    {S("a\r\n..b\r\n.\r\n"), 1, ALL, W("a\r\n.b\r\n"), SAME, 0},
    {S("a\r\n.b\r\n.\r\n"), 1, ALL, W("a\r\nb\r\n"), SAME, 0},
    {S("a\r\n..\r\n.\r\n"), 1, ALL, W("a\r\n.\r\n"), SAME, 0},
    {S("..\r\n.\r\n"), 1, ALL, W(".\r\n"), SAME, 0},
    {S("a\r\n. \r\n.\r\n"), 1, ALL, W("a\r\n \r\n"), SAME, 0},
    {S("a\r\n\r\n.\r\n"), 1, ALL, W("a\r\n\r\n"), SAME, 0},
    {S("x\r\n.\r\n.\r\n"), 1, 6, W("x\r\n"), SAME, 0},
    {S("x\r\n.\r\nMAIL FROM:<b>\r\nRCPT TO:<c>\r\nDATA\r\n"), 1, 6, W("x\r\n"), SAME, 0},
    {S("a.b\r\n.c\r\n.\r\n"), 1, ALL, W("a.b\r\nc\r\n"), SAME, 0},
    /* smuggling variants (bare CR/LF/NUL around the dot): none of these end the data */
    {S("a\n.\r\n"), 0, ALL, W("a\n.\r\n"), W("a\r\n.\r\n"), 1},
    {S("a\r\n.\n"), 0, ALL, W("a\r\n\n"), W("a\r\n\r\n"), 1},
    {S("a\r.\r\n"), 0, ALL, W("a\r.\r\n"), W("a\r\n.\r\n"), 1},
    {S("a\n.\n"), 0, ALL, W("a\n.\n"), W("a\r\n.\r\n"), 1},
    {S("a\r.\r"), 0, ALL, W("a\r.\r"), W("a\r\n.\r"), 1},
    {S("a\r\n\0.\r\n"), 0, ALL, W("a\r\n\0.\r\n"), SAME, 0},
    {S("a\r\n.\0\r\n"), 0, ALL, W("a\r\n\0\r\n"), SAME, 0},
    {S("a\0\r\n.\r\n"), 1, ALL, W("a\0\r\n"), SAME, 0},
    {S("a\r\n.\r\0\n"), 0, ALL, W("a\r\n\r\0\n"), W("a\r\n\r\n\0\r\n"), 1},
    {S("a\r\n.\r\r\n.\r\n"), 1, ALL, W("a\r\n\r\r\n"), W("a\r\n\r\n\r\n"), 1},
    {S("a\r\n.\n.\r\n"), 0, ALL, W("a\r\n\n.\r\n"), W("a\r\n\r\n.\r\n"), 1},
    {S("a\r\r\n.\r\n"), 1, ALL, W("a\r\r\n"), W("a\r\n\r\n"), 1},
    {S("\n.\r\n"), 0, ALL, W("\n.\r\n"), W("\r\n.\r\n"), 1},
    {S("\r.\r\n"), 0, ALL, W("\r.\r\n"), W("\r\n.\r\n"), 1},
    {S("a\n\r\n.\r\n"), 1, ALL, W("a\n\r\n"), W("a\r\n\r\n"), 1},
    {S("a\r\n.\r"), 0, ALL, W("a\r\n"), SAME, 0},
    {S("a\r\n."), 0, ALL, W("a\r\n"), SAME, 0},
    {S("a\r\n\r"), 0, ALL, W("a\r\n\r"), SAME, 0},
    {S(""), 0, ALL, W(""), SAME, 0},
    {S("a\r\n.\r\n\r\n.\r\n"), 1, 6, W("a\r\n"), SAME, 0},
    {S("a\nb\rc\r\n.\r\n"), 1, ALL, W("a\nb\rc\r\n"), W("a\r\nb\r\nc\r\n"), 1},
};

TEST_IMPL(smtp_data_table)
{
	static const enum smtp_eol_policy pols[] = {SMTP_EOL_DENY, SMTP_EOL_ALLOW, SMTP_EOL_FIX};

	for (size_t i = 0; i < ARRAY_SIZE(data_cases); i++) {
		for (size_t p = 0; p < ARRAY_SIZE(pols); p++) {
			struct data_result r;
			struct data_bytes want = data_cases[i].keep;
			size_t consumed = data_cases[i].consumed;
			if (pols[p] == SMTP_EOL_FIX && data_cases[i].fix.s)
				want = data_cases[i].fix;
			data_all_chunkings(pols[p], 0, 0, data_cases[i].in, data_cases[i].len, &r);
			if (r.done != data_cases[i].done)
				TEST_FAIL("case %zu policy %zu: done %d", i, p, r.done);
			if (consumed == ALL)
				consumed = data_cases[i].len;
			ASSERT_EQ(r.consumed, consumed);
			ASSERT_MEM_EQ(r.out.data, r.out.len, want.s, want.n);
			ASSERT_EQ(r.bare_eol, data_cases[i].bare);
			ASSERT_EQ(r.too_big, 0);
			ASSERT_EQ(r.line_too_long, 0);
			if (r.done)
				ASSERT_EQ(r.size, r.out.len);
			buf_free(&r.out);
		}
	}
}

TEST_IMPL(smtp_data_after_done)
{
	struct smtp_data_framer f;
	struct buf out;

	buf_init(&out);
	smtp_data_framer_init(&f, SMTP_EOL_DENY, 0, 0);
	ASSERT_EQ(f.line_limit, 998);
	ASSERT_EQ(smtp_data_feed(&f, S("a\r\n.\r\nQUIT\r\n"), &out), 6);
	ASSERT_EQ(f.done, 1);
	ASSERT_EQ(smtp_data_feed(&f, S("QUIT\r\n"), &out), 0);
	ASSERT_MEM_EQ(out.data, out.len, "a\r\n", 3);
	/* Re-init for the next transaction starts at a line start again. */
	buf_reset(&out);
	smtp_data_framer_init(&f, SMTP_EOL_DENY, 0, 0);
	ASSERT_EQ(smtp_data_feed(&f, S(".\r\n"), &out), 3);
	ASSERT_EQ(f.done, 1);
	ASSERT_EQ(out.len, 0);
	buf_free(&out);
}

TEST_IMPL(smtp_data_size_limit)
{
	static const struct {
		const char *in;
		size_t len;
		size_t max;
		int too_big;
		size_t size;
	} cases[] = {
	    {S("01234567\r\n.\r\n"), 10, 0, 10},
	    {S("012345678\r\n.\r\n"), 10, 1, 11},
	    {S("0123456789\r\n.\r\nQUIT\r\n"), 10, 1, 12},
	    {S("..2345678\r\n.\r\n"), 10, 0, 10},
	    {S("a\nb\n\r\n.\r\n"), 6, 0, 6},
	    {S("0123456789\r\n.\r\n"), 0, 0, 12},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct data_result r;
		data_all_chunkings(SMTP_EOL_DENY, cases[i].max, 0, cases[i].in, cases[i].len, &r);
		ASSERT_EQ(r.done, 1);
		ASSERT_EQ(r.too_big, cases[i].too_big);
		ASSERT_EQ(r.size, cases[i].size);
		ASSERT_EQ(r.consumed, cases[i].len - (strstr(cases[i].in, "QUIT") ? 6 : 0));
		if (r.too_big)
			ASSERT_EQ(r.out.len, cases[i].max);
		else
			ASSERT_EQ(r.out.len, r.size);
		buf_free(&r.out);
	}
	/* Fix counts the CRLF it stores. */
	struct data_result r;
	data_all_chunkings(SMTP_EOL_FIX, 6, 0, S("a\nb\n\r\n.\r\n"), &r);
	ASSERT_EQ(r.size, 8);
	ASSERT_EQ(r.too_big, 1);
	buf_free(&r.out);
}

/* Builds `n` x's, optionally led by a dot, then CRLF, a short line and the end. */
static void data_long_line(struct buf *b, size_t n, int dot, const char *eol)
{
	buf_reset(b);
	if (dot)
		buf_appendc(b, '.');
	for (size_t i = 0; i < n; i++)
		buf_appendc(b, 'x');
	buf_appends(b, eol);
	buf_appends(b, "short\r\n.\r\n");
}

TEST_IMPL(smtp_data_line_limit)
{
	struct buf in;
	struct data_result r;

	buf_init(&in);
	for (size_t n = 996; n <= 1000; n++) {
		for (int dot = 0; dot <= 1; dot++) {
			data_long_line(&in, n, dot, "\r\n");
			data_all_chunkings(SMTP_EOL_DENY, 0, 0, in.data, in.len, &r);
			ASSERT_EQ(r.done, 1);
			ASSERT_EQ(r.line_too_long, n > 998);
			ASSERT_EQ(r.out.len, n + 2 + 7); /* the stuffed dot is not counted */
			buf_free(&r.out);
		}
	}
	/* A bare LF or CR ends a line for counting, under every policy. */
	buf_reset(&in);
	for (size_t i = 0; i < 600; i++)
		buf_appendc(&in, 'x');
	buf_appends(&in, "\n");
	for (size_t i = 0; i < 600; i++)
		buf_appendc(&in, 'y');
	buf_appends(&in, "\r");
	for (size_t i = 0; i < 600; i++)
		buf_appendc(&in, 'z');
	buf_appends(&in, "\r\n.\r\n");
	for (int pol = SMTP_EOL_DENY; pol <= SMTP_EOL_FIX; pol++) {
		data_all_chunkings(pol, 0, 0, in.data, in.len, &r);
		ASSERT_EQ(r.line_too_long, 0);
		ASSERT_EQ(r.bare_eol, 1);
		buf_free(&r.out);
	}
	/* A configurable small limit. */
	data_all_chunkings(SMTP_EOL_DENY, 0, 3, S("abc\r\n.\r\n"), &r);
	ASSERT_EQ(r.line_too_long, 0);
	buf_free(&r.out);
	data_all_chunkings(SMTP_EOL_DENY, 0, 3, S("abcd\r\n.\r\n"), &r);
	ASSERT_EQ(r.line_too_long, 1);
	ASSERT_EQ(r.done, 1);
	buf_free(&r.out);
	buf_free(&in);
}

/* A realistic message with every awkward feature, split every way. */
TEST_IMPL(smtp_data_every_chunking)
{
	static const char msg[] = "From: a@b\r\nSubject: x\r\n\r\n..dot\r\n.\0nul\r\n"
				  "bare\nlf\rcr\r\n.\r\r\n\r\n.\r\nMAIL FROM:<x>\r\n";
	for (int pol = SMTP_EOL_DENY; pol <= SMTP_EOL_FIX; pol++) {
		struct data_result r;
		data_all_chunkings(pol, 0, 0, msg, sizeof(msg) - 1, &r);
		ASSERT_EQ(r.done, 1);
		ASSERT_EQ(r.consumed, sizeof(msg) - 1 - strlen("MAIL FROM:<x>\r\n"));
		buf_free(&r.out);
	}
}

/* The reference normalisation: bare CR/LF -> CRLF, final CRLF added to non-empty input. */
static void data_normalise(const char *in, size_t len, struct buf *out)
{
	for (size_t i = 0; i < len; i++) {
		if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n') {
			buf_append(out, "\r\n", 2);
			i++;
		} else if (in[i] == '\r' || in[i] == '\n') {
			buf_append(out, "\r\n", 2);
		} else {
			buf_appendc(out, in[i]);
		}
	}
	if (len && in[len - 1] != '\r' && in[len - 1] != '\n')
		buf_append(out, "\r\n", 2);
}

TEST_IMPL(smtp_data_stuff_table)
{
	static const struct {
		const char *in;
		size_t len;
		const char *want;
	} cases[] = {
	    {S(""), ".\r\n"},
	    {S("a"), "a\r\n.\r\n"},
	    {S("a\r\n"), "a\r\n.\r\n"},
	    {S(".a"), "..a\r\n.\r\n"},
	    {S("a\n.b"), "a\r\n..b\r\n.\r\n"},
	    {S("a\r.b"), "a\r\n..b\r\n.\r\n"},
	    {S("a\r"), "a\r\n.\r\n"},
	    {S("a\r\r\n"), "a\r\n\r\n.\r\n"},
	    {S(".\r\n"), "..\r\n.\r\n"},
	    {S("\n"), "\r\n.\r\n"},
	    {S("x\r\n.\r\n"), "x\r\n..\r\n.\r\n"},
	    {S("x\r\n.\r\ny"), "x\r\n..\r\ny\r\n.\r\n"},
	    {S("a.b\r\n..c\n"), "a.b\r\n...c\r\n.\r\n"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct buf out;
		buf_init(&out);
		smtp_data_stuff(&out, cases[i].in, cases[i].len);
		ASSERT_STR_EQ(buf_cstr(&out), cases[i].want);
		buf_free(&out);
	}
}

static void data_roundtrip(const char *in, size_t len)
{
	struct buf st, want;
	struct data_result r;

	buf_init(&st);
	buf_init(&want);
	smtp_data_stuff(&st, in, len);
	buf_appends(&st, "NOOP\r\n");
	data_normalise(in, len, &want);
	buf_cstr(&want);
	for (int pol = SMTP_EOL_DENY; pol <= SMTP_EOL_FIX; pol++) {
		data_run(pol, 0, 0, st.data, st.len, NULL, 0, &r);
		ASSERT_EQ(r.done, 1);
		ASSERT_EQ(r.bare_eol, 0);
		ASSERT_EQ(r.consumed, st.len - 6);
		ASSERT_MEM_EQ(r.out.data, r.out.len, want.data, want.len);
		buf_free(&r.out);
	}
	buf_free(&st);
	buf_free(&want);
}

TEST_IMPL(smtp_data_stuff_roundtrip)
{
	static const char alpha[] = {'a', '.', '\r', '\n', '\0', 'b'};
	char in[24];
	unsigned seed = 12345;

	for (size_t i = 0; i < ARRAY_SIZE(data_cases); i++)
		data_roundtrip(data_cases[i].in, data_cases[i].len);
	for (int iter = 0; iter < 20000; iter++) {
		size_t len = (seed = seed * 1103515245u + 12345u) >> 16 & 15;
		for (size_t i = 0; i < len; i++) {
			seed = seed * 1103515245u + 12345u;
			in[i] = alpha[(seed >> 16) % sizeof(alpha)];
		}
		data_roundtrip(in, len);
	}
}
