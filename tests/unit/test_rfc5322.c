/* SPDX-License-Identifier: Apache-2.0 */
/* RFC 5322 header scanner and editor: iteration, unfolding, folding, message edits. */
#include <errno.h>

#include "proto/rfc5322.h"
#include "test.h"

#define S(x) x, sizeof(x) - 1

static void hdr_set(struct buf *b, const char *s)
{
	buf_reset(b);
	buf_appends(b, s);
}

TEST_IMPL(rfc5322_header_end_table)
{
	static const struct {
		const char *in;
		size_t want;
	} cases[] = {
	    {"A: b\r\n\r\nbody", 8},
	    {"A: b\n\nbody", 6},
	    {"A: b\r\nC: d\r\n", 12},
	    {"\r\nbody", 2},
	    {"\nbody", 1},
	    {"", 0},
	    {"A: b", 4},
	    {"A: b\r\n \r\n\r\nx", 11},
	    {"A: b\r\n\r", 7},
	    {"A: b\r\r\n\r\nx", 9},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
		ASSERT_EQ(rfc5322_header_end(cases[i].in, strlen(cases[i].in)), cases[i].want);
}

/* Iteration: "name=raw|" per field, skipping malformed lines. */
static void hdr_list(const char *msg, struct buf *log)
{
	size_t len = strlen(msg), end = rfc5322_header_end(msg, len), pos = 0, prev_end = 0;
	struct rfc5322_header h;

	buf_reset(log);
	while (rfc5322_header_next(msg, end, &pos, &h)) {
		ASSERT_GE(h.start, prev_end);
		ASSERT_LE(h.end, end);
		ASSERT_EQ(h.end, pos);
		ASSERT(h.name == msg + h.start);
		prev_end = h.end;
		buf_printf(log, "%.*s=%.*s|", (int)h.name_len, h.name, (int)h.raw_len, h.raw_value);
	}
	ASSERT_EQ(rfc5322_header_next(msg, end, &pos, &h), 0);
}

TEST_IMPL(rfc5322_iterate_table)
{
	static const struct {
		const char *in;
		const char *want;
	} cases[] = {
	    {"A: 1\r\nB: 2\r\n\r\nC: 3\r\n", "A= 1|B= 2|"},
	    {"A: 1\nB: 2\n\nC: 3\n", "A= 1|B= 2|"},
	    {"Subject: a\r\n b\r\n\tc\r\nX: y\r\n\r\n", "Subject= a\r\n b\r\n\tc|X= y|"},
	    {"garbage\r\nA: 1\r\n\r\n", "A= 1|"},
	    {" orphan\r\n more\r\nA: 1\r\n\r\n", "A= 1|"},
	    {"Name : v\r\n\r\n", "Name= v|"},
	    {"From x@y Mon Jan 1 00:00:00 2024\r\nA:1\r\n\r\n", "A=1|"},
	    {": novalue\r\nA:\r\n\r\n", "A=|"},
	    {"A: 1", "A= 1|"},
	    {"A: 1\r\n b", "A= 1\r\n b|"},
	    {"\r\nA: 1\r\n", ""},
	    {"", ""},
	    {"A\x80: x\r\nB: y\r\n", "B= y|"},
	};
	struct buf log;

	buf_init(&log);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		hdr_list(cases[i].in, &log);
		ASSERT_STR_EQ(buf_cstr(&log), cases[i].want);
	}
	buf_free(&log);
}

TEST_IMPL(rfc5322_unfold_table)
{
	static const struct {
		const char *in;
		const char *want;
	} cases[] = {
	    {" a\r\n b ", "a b"}, {"\r\n\tx", "x"},	  {"a\n b", "a b"}, {"", ""},
	    {"  \t ", ""},	  {"a\r\n\r\n b", "a b"}, {"a\rb", "a\rb"}, {"a  b", "a  b"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct buf out;
		buf_init(&out);
		rfc5322_unfold(cases[i].in, strlen(cases[i].in), &out);
		ASSERT_STR_EQ(buf_cstr(&out), cases[i].want);
		buf_free(&out);
	}
}

TEST_IMPL(rfc5322_validation)
{
	static const struct {
		const char *s;
		size_t len;
		int name_ok, value_ok;
	} cases[] = {
	    {S("Subject"), 1, 1},
	    {S("X-Kumo-Test"), 1, 1},
	    {S("!#$%&'*+-.^_`|~"), 1, 1},
	    {S(""), 0, 1},
	    {S("a b"), 0, 1},
	    {S("a:b"), 0, 0 + 1},
	    {S("a\tb"), 0, 1},
	    {S("\xc3\xa4"), 0, 1},
	    {S("a\x7f"), 0, 1},
	    {S("a\r\nBcc: x"), 0, 0},
	    {S("a\nb"), 0, 0},
	    {S("a\rb"), 0, 0},
	    {S("a\0b"), 0, 0},
	};
	char big[1001];

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		ASSERT_EQ(rfc5322_name_valid(cases[i].s, cases[i].len), cases[i].name_ok);
		ASSERT_EQ(rfc5322_value_valid(cases[i].s, cases[i].len), cases[i].value_ok);
	}
	memset(big, 'a', sizeof(big));
	ASSERT_EQ(rfc5322_name_valid(big, 996), 1);
	ASSERT_EQ(rfc5322_name_valid(big, 997), 0);
}

/* Every physical line fits the hard limit (and the soft one when `soft`), continuation lines
 * start with whitespace and the field ends in exactly one CRLF. */
static void hdr_check_lines(const char *f, size_t len, int soft)
{
	size_t start = 0;

	ASSERT_GE(len, 2);
	ASSERT(f[len - 2] == '\r' && f[len - 1] == '\n');
	while (start < len) {
		const char *lf = memchr(f + start, '\n', len - start);
		ASSERT(lf && lf > f + start && lf[-1] == '\r');
		size_t l = (size_t)(lf - f) - 1 - start;
		ASSERT_LE(l, 998);
		if (soft)
			ASSERT_LE(l, 78);
		ASSERT(!memchr(f + start, '\r', l));
		if (start)
			ASSERT(f[start] == ' ' || f[start] == '\t');
		ASSERT(l == 0 || (f[start + l - 1] != ' ' && f[start + l - 1] != '\t'));
		start = (size_t)(lf - f) + 1;
	}
}

static void hdr_roundtrip(const char *name, const char *value, const char *want_value, int soft)
{
	struct buf f, v;

	buf_init(&f);
	buf_init(&v);
	rfc5322_format_header(&f, name, value);
	hdr_check_lines(f.data, f.len, soft);
	ASSERT_EQ(rfc5322_get_first(f.data, f.len, name, &v), 1);
	ASSERT_STR_EQ(buf_cstr(&v), want_value);
	buf_free(&f);
	buf_free(&v);
}

TEST_IMPL(rfc5322_format_table)
{
	static const struct {
		const char *name, *value, *want;
	} cases[] = {
	    {"Subject", "hello", "Subject: hello\r\n"},
	    {"X", "", "X:\r\n"},
	    {"X", "  padded\t ", "X: padded\r\n"},
	    {"X", "a  b", "X: a  b\r\n"},
	    {"Subject",
	     "aaaaaaaaa bbbbbbbbb ccccccccc ddddddddd eeeeeeeee fffffffff ggggggggg hhhhhhhhh iii",
	     "Subject: aaaaaaaaa bbbbbbbbb ccccccccc ddddddddd eeeeeeeee fffffffff ggggggggg\r\n"
	     " hhhhhhhhh iii\r\n"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct buf f;
		buf_init(&f);
		rfc5322_format_header(&f, cases[i].name, cases[i].value);
		ASSERT_STR_EQ(buf_cstr(&f), cases[i].want);
		buf_free(&f);
	}
}

TEST_IMPL(rfc5322_format_folding)
{
	struct buf v, want;

	buf_init(&v);
	buf_init(&want);
	/* Many words: soft folds only, value preserved exactly. */
	for (int i = 0; i < 200; i++)
		buf_printf(&v, "%sword%d", i ? (i % 7 ? " " : "\t") : "", i);
	hdr_roundtrip("Subject", buf_cstr(&v), buf_cstr(&v), 1);
	/* An unbreakable 3000-octet run: hard folds at 998 (each inserts one SP). */
	buf_reset(&v);
	for (int i = 0; i < 3000; i++)
		buf_appendc(&v, (char)('a' + i % 26));
	buf_reset(&want);
	size_t col = strlen("X-Long: ");
	for (int i = 0; i < 3000; i++) {
		if (col == 998) {
			buf_appendc(&want, ' ');
			col = 1;
		}
		buf_appendc(&want, (char)('a' + i % 26));
		col++;
	}
	hdr_roundtrip("X-Long", buf_cstr(&v), buf_cstr(&want), 0);
	/* A whitespace run too long for a line collapses to one SP. */
	buf_reset(&v);
	buf_appends(&v, "a");
	for (int i = 0; i < 1200; i++)
		buf_appendc(&v, ' ');
	buf_appends(&v, "b");
	hdr_roundtrip("X", buf_cstr(&v), "a b", 1);
	/* Longest valid name with a value still fits. */
	buf_reset(&v);
	for (int i = 0; i < 996; i++)
		buf_appendc(&v, 'N');
	hdr_roundtrip(buf_cstr(&v), "value here", "value here", 0);
	buf_free(&v);
	buf_free(&want);
}

static const char hdr_msg[] = "From: a@example.com\r\n"
			      "Subject: hello\r\n"
			      " world\r\n"
			      "X-Multi: one\r\n"
			      "x-multi: two\r\n"
			      "To: b@example.com\r\n"
			      "\r\n"
			      "Subject: not a header\r\n"
			      "X-Multi: body\r\n";

TEST_IMPL(rfc5322_prepend_append)
{
	struct buf m;

	buf_init(&m);
	hdr_set(&m, hdr_msg);
	ASSERT_EQ(rfc5322_prepend_header(&m, "Received", "from x by y"), 0);
	ASSERT_EQ(rfc5322_append_header(&m, "X-Last", "z"), 0);
	ASSERT_MEM_EQ(m.data, m.len,
		      "Received: from x by y\r\n"
		      "From: a@example.com\r\nSubject: hello\r\n world\r\nX-Multi: one\r\n"
		      "x-multi: two\r\nTo: b@example.com\r\nX-Last: z\r\n\r\n"
		      "Subject: not a header\r\nX-Multi: body\r\n",
		      strlen(hdr_msg) + strlen("Received: from x by y\r\nX-Last: z\r\n"));
	/* LF-only messages: append goes before the LF blank line. */
	hdr_set(&m, "A: 1\nB: 2\n\nbody\n");
	ASSERT_EQ(rfc5322_append_header(&m, "C", "3"), 0);
	ASSERT_STR_EQ(buf_cstr(&m), "A: 1\nB: 2\nC: 3\r\n\nbody\n");
	/* Messages without a body separator. */
	static const struct {
		const char *in, *want;
	} nobody[] = {
	    {"A: 1\r\n", "A: 1\r\nB: 2\r\n"},
	    {"A: 1", "A: 1\r\nB: 2\r\n"},
	    {"A: 1\r", "A: 1\r\nB: 2\r\n"},
	    {"A: 1\n", "A: 1\nB: 2\r\n"},
	    {"", "B: 2\r\n"},
	    {"\r\nbody", "B: 2\r\n\r\nbody"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(nobody); i++) {
		hdr_set(&m, nobody[i].in);
		ASSERT_EQ(rfc5322_append_header(&m, "B", "2"), 0);
		ASSERT_STR_EQ(buf_cstr(&m), nobody[i].want);
	}
	/* Never-written buffers. */
	buf_free(&m);
	ASSERT_EQ(rfc5322_append_header(&m, "B", "2"), 0);
	ASSERT_STR_EQ(buf_cstr(&m), "B: 2\r\n");
	buf_free(&m);
	ASSERT_EQ(rfc5322_prepend_header(&m, "B", "2"), 0);
	ASSERT_STR_EQ(buf_cstr(&m), "B: 2\r\n");
	buf_free(&m);
	ASSERT_EQ(rfc5322_remove_all_named(&m, "B"), 0);
	/* Stray continuation lines at the start are not captured by a prepended field. */
	hdr_set(&m, " orphan\r\nA: 1\r\n\r\n");
	ASSERT_EQ(rfc5322_prepend_header(&m, "P", "v"), 0);
	ASSERT_STR_EQ(buf_cstr(&m), " orphan\r\nP: v\r\nA: 1\r\n\r\n");
	struct buf v;
	buf_init(&v);
	ASSERT_EQ(rfc5322_get_first(m.data, m.len, "p", &v), 1);
	ASSERT_STR_EQ(buf_cstr(&v), "v");
	buf_free(&v);
	buf_free(&m);
}

TEST_IMPL(rfc5322_invalid_rejected)
{
	static const struct {
		const char *name, *value;
	} bad[] = {
	    {"", "v"},
	    {"a b", "v"},
	    {"a:b", "v"},
	    {"X\xff", "v"},
	    {"X", "a\r\nBcc: evil@x"},
	    {"X", "a\nb"},
	    {"X", "a\r"},
	    {"X\r\nBcc", "v"},
	};
	struct buf m;

	buf_init(&m);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		hdr_set(&m, hdr_msg);
		ASSERT_EQ(rfc5322_prepend_header(&m, bad[i].name, bad[i].value), -EINVAL);
		ASSERT_EQ(rfc5322_append_header(&m, bad[i].name, bad[i].value), -EINVAL);
		ASSERT_STR_EQ(buf_cstr(&m), hdr_msg);
	}
	buf_free(&m);
}

static void hdr_collect(const char *v, size_t n, void *ctx)
{
	struct buf *b = ctx;
	buf_append(b, v, n);
	buf_appendc(b, '|');
}

TEST_IMPL(rfc5322_get)
{
	struct buf v;

	buf_init(&v);
	ASSERT_EQ(rfc5322_get_first(S(hdr_msg), "SUBJECT", &v), 1);
	ASSERT_STR_EQ(buf_cstr(&v), "hello world");
	buf_reset(&v);
	ASSERT_EQ(rfc5322_get_first(S(hdr_msg), "Missing", &v), 0);
	ASSERT_EQ(v.len, 0);
	ASSERT_EQ(rfc5322_get_first(S(hdr_msg), "Subj", &v), 0);
	ASSERT_EQ(rfc5322_get_all(S(hdr_msg), "x-MULTI", hdr_collect, &v), 2);
	ASSERT_STR_EQ(buf_cstr(&v), "one|two|");
	buf_reset(&v);
	ASSERT_EQ(rfc5322_get_all(S("A: 1\nB:  \n  two\nA:\n\nA: body\n"), "a", hdr_collect, &v),
		  2);
	ASSERT_STR_EQ(buf_cstr(&v), "1||");
	buf_reset(&v);
	ASSERT_EQ(rfc5322_get_all(S("B:  \n  two\n\n"), "b", hdr_collect, &v), 1);
	ASSERT_STR_EQ(buf_cstr(&v), "two|");
	buf_reset(&v);
	ASSERT_EQ(rfc5322_get_all(NULL, 0, "a", hdr_collect, &v), 0);
	ASSERT_EQ(rfc5322_get_first(NULL, 0, "a", &v), 0);
	buf_free(&v);
}

TEST_IMPL(rfc5322_remove)
{
	struct buf m;

	buf_init(&m);
	hdr_set(&m, hdr_msg);
	ASSERT_EQ(rfc5322_remove_all_named(&m, "X-MULTI"), 2);
	ASSERT_STR_EQ(buf_cstr(&m), "From: a@example.com\r\nSubject: hello\r\n world\r\n"
				    "To: b@example.com\r\n\r\nSubject: not a header\r\n"
				    "X-Multi: body\r\n");
	ASSERT_EQ(rfc5322_remove_all_named(&m, "subject"), 1);
	ASSERT_STR_EQ(buf_cstr(&m), "From: a@example.com\r\nTo: b@example.com\r\n\r\n"
				    "Subject: not a header\r\nX-Multi: body\r\n");
	ASSERT_EQ(rfc5322_remove_all_named(&m, "Nope"), 0);
	ASSERT_EQ(rfc5322_remove_all_named(&m, "From"), 1);
	ASSERT_EQ(rfc5322_remove_all_named(&m, "To"), 1);
	ASSERT_STR_EQ(buf_cstr(&m), "\r\nSubject: not a header\r\nX-Multi: body\r\n");
	/* Malformed lines survive; LF-only; no body. */
	hdr_set(&m, "junk line\nA: 1\n  cont\nB: 2\nA: 3");
	ASSERT_EQ(rfc5322_remove_all_named(&m, "a"), 2);
	ASSERT_STR_EQ(buf_cstr(&m), "junk line\nB: 2\n");
	buf_free(&m);
}

/* Edits respect the buffer's read offset. */
TEST_IMPL(rfc5322_buf_offset)
{
	struct buf m;
	struct buf v;

	buf_init(&m);
	buf_init(&v);
	buf_appends(&m, "XXXXA: 1\r\n\r\nbody");
	m.off = 4;
	ASSERT_EQ(rfc5322_prepend_header(&m, "P", "p"), 0);
	ASSERT_EQ(rfc5322_append_header(&m, "Q", "q"), 0);
	buf_cstr(&m);
	ASSERT_STR_EQ(buf_rptr(&m), "P: p\r\nA: 1\r\nQ: q\r\n\r\nbody");
	ASSERT_EQ(rfc5322_remove_all_named(&m, "a"), 1);
	ASSERT_STR_EQ(buf_cstr(&m), "XXXXP: p\r\nQ: q\r\n\r\nbody");
	ASSERT_EQ(rfc5322_get_first(buf_rptr(&m), buf_avail(&m), "q", &v), 1);
	ASSERT_STR_EQ(buf_cstr(&v), "q");
	buf_free(&m);
	buf_free(&v);
}
