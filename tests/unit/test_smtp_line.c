/* SPDX-License-Identifier: Apache-2.0 */
/* SMTP command-line splitter: every split point, limits, bare CR/LF, resynchronisation. */
#include "proto/smtp_line.h"
#include "base/buf.h"
#include "test.h"

/* Feeds `in` as the session does (a growing read buffer) in chunks of `step` bytes (0: all
 * at once; `split` > 0: two chunks at that offset) and logs each event: a line as its text
 * followed by '|', "!LONG|", "!BAD|"; "~" per SMTP_LINE_DISCARDED when `show_discard`; a
 * trailing "+" if still discarding at the end. */
static void line_drive(size_t limit, const char *in, size_t len, size_t step, size_t split,
		       int show_discard, struct buf *log)
{
	struct smtp_line_reader r;
	struct buf rb;
	size_t off = 0;

	smtp_line_reader_init(&r, limit);
	buf_init(&rb);
	while (off < len) {
		size_t n = split ? (off == 0 ? split : len - off) : (step ? step : len);
		if (n > len - off)
			n = len - off;
		buf_append(&rb, in + off, n);
		off += n;
		for (;;) {
			size_t ll = 99, used = 99, avail = buf_avail(&rb);
			enum smtp_line_status st =
			    smtp_line_next(&r, buf_rptr(&rb), avail, &ll, &used);
			ASSERT_LE(used, avail);
			if (st != SMTP_LINE_OK)
				ASSERT_EQ(ll, 0);
			if (st == SMTP_LINE_OK) {
				ASSERT_EQ(used, ll + 2);
				ASSERT(!memchr(buf_rptr(&rb), '\r', ll) &&
				       !memchr(buf_rptr(&rb), '\n', ll));
				for (size_t i = 0; i < ll; i++) {
					char c = buf_rptr(&rb)[i];
					if (c)
						buf_appendc(log, c);
					else
						buf_appends(log, "\\0");
				}
				buf_appendc(log, '|');
			} else if (st == SMTP_LINE_TOO_LONG) {
				buf_appends(log, "!LONG|");
			} else if (st == SMTP_LINE_BAD_ENDING) {
				buf_appends(log, "!BAD|");
			} else if (st == SMTP_LINE_DISCARDED && show_discard) {
				buf_appendc(log, '~');
			}
			if (st == SMTP_LINE_NEED_MORE && !r.discarding)
				ASSERT_EQ(used, 0);
			if (st == SMTP_LINE_NEED_MORE && r.discarding)
				ASSERT_EQ(used, avail);
			if (st != SMTP_LINE_NEED_MORE)
				ASSERT_GT(used, 0);
			/* Over-long input is never buffered beyond the limit plus CR. */
			if (st == SMTP_LINE_NEED_MORE)
				ASSERT_LE(avail - used, r.limit + 1);
			if (used)
				buf_consume(&rb, used);
			if (st == SMTP_LINE_NEED_MORE)
				break;
		}
	}
	if (r.discarding)
		buf_appendc(log, '+');
	buf_free(&rb);
}

static void line_check_all_splits(size_t limit, const char *in, size_t len, const char *want)
{
	struct buf log;

	buf_init(&log);
	for (size_t mode = 0; mode <= len + 1; mode++) {
		buf_reset(&log);
		if (mode == 0)
			line_drive(limit, in, len, 0, 0, 0, &log);
		else if (mode == len + 1)
			line_drive(limit, in, len, 1, 0, 0, &log);
		else
			line_drive(limit, in, len, 0, mode, 0, &log);
		if (strcmp(buf_cstr(&log), want) != 0)
			TEST_FAIL("input \"%.*s\" mode %zu: got \"%s\" want \"%s\"", (int)len, in,
				  mode, buf_cstr(&log), want);
	}
	buf_free(&log);
}

#define S(x) x, sizeof(x) - 1

TEST_IMPL(smtp_line_table)
{
	static const struct {
		const char *in;
		size_t len;
		size_t limit;
		const char *want;
	} cases[] = {
	    {S("HELO a\r\n"), 0, "HELO a|"},
	    {S("\r\n"), 0, "|"},
	    {S("A\r\nB\r\n"), 0, "A|B|"},
	    {S("EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<a@b>\r\nDATA\r\n"), 0,
	     "EHLO x|MAIL FROM:<>|RCPT TO:<a@b>|DATA|"},
	    {S("A"), 0, ""},
	    {S("A\r"), 0, ""},
	    {S("A\r\n\n"), 0, "A|"},
	    {S("A\nB\r\n"), 0, "!BAD|"},
	    {S("A\rB\r\n"), 0, "!BAD|"},
	    {S("A\r\r\n"), 0, "!BAD|"},
	    {S("\n\r\n"), 0, "!BAD|"},
	    {S("\r\r\n"), 0, "!BAD|"},
	    {S("A\n\nB\r\nC\r\n"), 0, "!BAD|C|"},
	    {S("RSET\nMAIL FROM:<evil>\r\nNOOP\r\n"), 0, "!BAD|NOOP|"},
	    {S("MAIL\0X\r\n"), 0, "MAIL\\0X|"},
	    {S("0123456789\r\n"), 10, "0123456789|"},
	    {S("0123456789A\r\n"), 10, "!LONG|"},
	    {S("0123456789A\r\nQ\r\n"), 10, "!LONG|Q|"},
	    {S("0123456789AB"), 10, "!LONG|+"},
	    {S("0123456789A\r"), 10, "!LONG|+"},
	    {S("0123456789\r"), 10, ""},
	    {S("0123456789AB\nCD\r\nQ\r\n"), 10, "!LONG|Q|"},
	    {S("0123456789AB\r\r\nQ\r\n"), 10, "!LONG|Q|"},
	    {S("ab\n0123456789ABCDEF\r\nQ\r\n"), 10, "!LONG|Q|"},
	    {S("ab\ncd\r\n0123456789ABCDEF\r\nQ\r\n"), 10, "!BAD|!LONG|Q|"},
	    {S("0123456789AB\r\n0123456789AB\r\nQ\r\n"), 10, "!LONG|!LONG|Q|"},
	    {S("0123456789ABCDEFGHIJ\nQ\r\nR\r\n"), 10, "!LONG|R|"},
	    {S("x\r\n\r\n"), 1, "x||"},
	    {S("xy\r\nz\r\n"), 1, "!LONG|z|"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
		line_check_all_splits(cases[i].limit ? cases[i].limit : 998, cases[i].in,
				      cases[i].len, cases[i].want);
}

/* 998 octets plus CRLF is the longest line accepted by default; 999 is too long. */
TEST_IMPL(smtp_line_default_limit_998_999)
{
	struct buf in, want;

	buf_init(&in);
	buf_init(&want);
	for (size_t n = 996; n <= 1001; n++) {
		buf_reset(&in);
		buf_reset(&want);
		for (size_t i = 0; i < n; i++)
			buf_appendc(&in, (char)('a' + i % 26));
		if (n <= 998)
			buf_append(&want, in.data, in.len);
		else
			buf_appends(&want, "!LONG");
		buf_appends(&want, "|NOOP|");
		buf_appends(&in, "\r\nNOOP\r\n");
		line_check_all_splits(0, in.data, in.len, buf_cstr(&want));
	}
	buf_free(&in);
	buf_free(&want);
}

TEST_IMPL(smtp_line_init_default)
{
	struct smtp_line_reader r;

	smtp_line_reader_init(&r, 0);
	ASSERT_EQ(r.limit, 998);
	ASSERT_EQ(r.discarding, 0);
	smtp_line_reader_init(&r, 512);
	ASSERT_EQ(r.limit, 512);
}

/* The exact consumption contract the session relies on. */
TEST_IMPL(smtp_line_consumption)
{
	struct smtp_line_reader r;
	size_t ll, used;

	smtp_line_reader_init(&r, 4);
	ASSERT_EQ(smtp_line_next(&r, "abc", 3, &ll, &used), SMTP_LINE_NEED_MORE);
	ASSERT_EQ(used, 0);
	ASSERT_EQ(smtp_line_next(&r, "abcd\r", 5, &ll, &used), SMTP_LINE_NEED_MORE);
	ASSERT_EQ(used, 0);
	ASSERT_EQ(smtp_line_next(&r, "abcd\r\nX", 7, &ll, &used), SMTP_LINE_OK);
	ASSERT_EQ(ll, 4);
	ASSERT_EQ(used, 6);
	/* Reaching the limit: reported at once, everything consumed. */
	ASSERT_EQ(smtp_line_next(&r, "abcdef", 6, &ll, &used), SMTP_LINE_TOO_LONG);
	ASSERT_EQ(used, 6);
	ASSERT_EQ(r.discarding, 1);
	ASSERT_EQ(smtp_line_next(&r, "ghi\n\r", 5, &ll, &used), SMTP_LINE_NEED_MORE);
	ASSERT_EQ(used, 5);
	ASSERT_EQ(r.discarding, 1);
	ASSERT_EQ(smtp_line_next(&r, "", 0, &ll, &used), SMTP_LINE_NEED_MORE);
	ASSERT_EQ(used, 0);
	ASSERT_EQ(smtp_line_next(&r, "\nQUIT\r\n", 7, &ll, &used), SMTP_LINE_DISCARDED);
	ASSERT_EQ(used, 1);
	ASSERT_EQ(r.discarding, 0);
	ASSERT_EQ(smtp_line_next(&r, "QUIT\r\n", 6, &ll, &used), SMTP_LINE_OK);
	ASSERT_EQ(ll, 4);
	/* A complete over-long line: reported once, consumed through its CRLF. */
	ASSERT_EQ(smtp_line_next(&r, "abcdefgh\r\nQUIT\r\n", 16, &ll, &used), SMTP_LINE_TOO_LONG);
	ASSERT_EQ(used, 10);
	ASSERT_EQ(r.discarding, 0);
	/* A bad line: consumed through the CRLF that really ends it. */
	ASSERT_EQ(smtp_line_next(&r, "a\nb\r\nQ", 6, &ll, &used), SMTP_LINE_BAD_ENDING);
	ASSERT_EQ(used, 5);
	ASSERT_EQ(ll, 0);
	/* A bare LF waits for the CRLF (nothing consumed), then the whole line is one event. */
	ASSERT_EQ(smtp_line_next(&r, "a\n", 2, &ll, &used), SMTP_LINE_NEED_MORE);
	ASSERT_EQ(used, 0);
	ASSERT_EQ(smtp_line_next(&r, "a\nb\r\n", 5, &ll, &used), SMTP_LINE_BAD_ENDING);
	ASSERT_EQ(used, 5);
}

TEST_IMPL(smtp_line_discard_events)
{
	struct buf log;

	buf_init(&log);
	line_drive(4, S("abcdefgh\r\nQ\r\n"), 0, 0, 1, &log);
	ASSERT_STR_EQ(buf_cstr(&log), "!LONG|Q|");
	buf_reset(&log);
	line_drive(4, S("abcdefgh\r\nQ\r\n"), 1, 0, 1, &log);
	ASSERT_STR_EQ(buf_cstr(&log), "!LONG|~Q|");
	buf_reset(&log);
	/* CRLF split over two reads while discarding. */
	line_drive(4, S("abcdefgh\r\nQ\r\n"), 0, 9, 1, &log);
	ASSERT_STR_EQ(buf_cstr(&log), "!LONG|~Q|");
	buf_free(&log);
}

/* A megabyte flood without CRLF never holds more than limit + 2 bytes (asserted in the
 * driver) and yields a single reply. */
TEST_IMPL(smtp_line_flood)
{
	size_t n = 1 << 20;
	char *in = malloc(n + 8);
	struct buf log;

	memset(in, 'x', n);
	memcpy(in + n, "\r\nQ\r\n", 5);
	buf_init(&log);
	line_drive(0, in, n + 5, 4096, 0, 0, &log);
	ASSERT_STR_EQ(buf_cstr(&log), "!LONG|Q|");
	buf_reset(&log);
	line_drive(0, in, n, 1000, 0, 0, &log);
	ASSERT_STR_EQ(buf_cstr(&log), "!LONG|+");
	buf_free(&log);
	free(in);
}
