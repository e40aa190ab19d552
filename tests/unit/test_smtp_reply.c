/* SPDX-License-Identifier: Apache-2.0 */
/* SMTP replies: formatting (multi-line, sanitising, splitting, enhanced codes), parsing (single,
 * multi-line, need-more at every split point, malformed), enhanced status codes. */
#include <errno.h>

#include "base/buf.h"
#include "proto/smtp_reply.h"
#include "test.h"

/* Table-driven tests name the failing case. */
static const char *test_case = "";
#undef TEST_FAIL
#define TEST_FAIL(...)                                                          \
	do {                                                                    \
		fprintf(stderr, "%s:%d: [%s] ", __FILE__, __LINE__, test_case); \
		fprintf(stderr, __VA_ARGS__);                                   \
		fputc('\n', stderr);                                            \
		abort();                                                        \
	} while (0)

#define S(x) x, sizeof(x) - 1

/* Every line of a formatted reply: <= 512 octets, CRLF-terminated, no other CR/LF, the same
 * code, '-' on all but the last. The result parses back as exactly one reply. */
static void reply_check_wellformed(const char *p, size_t n, int code)
{
	size_t pos = 0, lines = 0;
	struct smtp_reply r;
	char c3[4];

	snprintf(c3, sizeof(c3), "%03d", code);
	while (pos < n) {
		const char *lf = memchr(p + pos, '\n', n - pos);
		ASSERT(lf != NULL);
		size_t ll = (size_t)(lf - (p + pos)) + 1;
		ASSERT_LE(ll, SMTP_REPLY_LINE_MAX);
		ASSERT_GE(ll, 5);
		ASSERT_EQ(p[pos + ll - 2], '\r');
		ASSERT(!memchr(p + pos, '\r', ll - 2));
		ASSERT_MEM_EQ(p + pos, 3, c3, 3);
		int last = pos + ll == n;
		if (last)
			ASSERT(ll == 5 || p[pos + 3] == ' ');
		else
			ASSERT_EQ(p[pos + 3], '-');
		for (size_t k = 0; k < ll - 2; k++)
			ASSERT(p[pos + k] == '\t' || (p[pos + k] >= 32 && p[pos + k] <= 126));
		pos += ll;
		lines++;
	}
	smtp_reply_init(&r);
	ASSERT_EQ(smtp_reply_parse(p, n, &r), (int)n);
	ASSERT_EQ(r.code, code);
	ASSERT_EQ(r.nlines, lines);
	smtp_reply_free(&r);
}

struct fmt_case {
	const char *name;
	int code;
	const char *enh, *text, *want;
};

static const struct fmt_case fmt_cases[] = {
    {"simple", 250, NULL, "OK", "250 OK\r\n"},
    {"enhanced", 250, "2.0.0", "OK", "250 2.0.0 OK\r\n"},
    {"ehlo list", 250, NULL, "mx.example Aloha c\nPIPELINING\nSMTPUTF8",
     "250-mx.example Aloha c\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n"},
    {"multi enhanced", 550, "5.7.1", "a\nb", "550-5.7.1 a\r\n550 5.7.1 b\r\n"},
    {"crlf in text", 451, "4.3.0", "a\r\nb", "451-4.3.0 a\r\n451 4.3.0 b\r\n"},
    {"trailing lf", 250, NULL, "a\n", "250 a\r\n"},
    {"trailing crlf", 250, NULL, "a\r\n", "250 a\r\n"},
    {"only lf", 250, NULL, "\n", "250\r\n"},
    {"empty", 250, NULL, "", "250\r\n"},
    {"null text", 221, NULL, NULL, "221\r\n"},
    {"empty with enhanced", 250, "2.0.0", "", "250 2.0.0\r\n"},
    {"empty middle line", 250, NULL, "a\n\nb", "250-a\r\n250-\r\n250 b\r\n"},
    {"empty middle enhanced", 250, "2.0.0", "a\n\nb",
     "250-2.0.0 a\r\n250-2.0.0\r\n250 2.0.0 b\r\n"},
    {"two lfs at end", 250, NULL, "a\n\n", "250-a\r\n250\r\n"},
    {"sanitised", 550, NULL,
     "a\rb\x01"
     "c\x7f\x1b\xc3\xa9\td",
     "550 a?b?c????\td\r\n"},
    {"lone cr at end", 550, NULL, "a\r", "550 a?\r\n"},
    {"cr cr lf", 550, NULL, "a\r\r\nb", "550-a?\r\n550 b\r\n"},
    {"crlf injection", 550, "5.7.1", "no\r\n250 OK", "550-5.7.1 no\r\n550 5.7.1 250 OK\r\n"},
    {"code in text kept", 452, NULL, "4.1.1 mailbox is full", "452 4.1.1 mailbox is full\r\n"},
    {"code in text inherited", 452, NULL, "4.1.1 a\nb", "452-4.1.1 a\r\n452 4.1.1 b\r\n"},
    {"own code per line", 550, NULL, "5.7.1 a\n5.7.2 b\nc",
     "550-5.7.1 a\r\n550-5.7.2 b\r\n550 5.7.1 c\r\n"},
    {"own code beats given", 550, "5.7.1", "5.1.1 no such user", "550 5.1.1 no such user\r\n"},
    {"code only text", 550, NULL, "5.1.1", "550 5.1.1\r\n"},
    {"class mismatch text", 250, NULL, "5.1.1 x\ny", "250-5.1.1 x\r\n250 y\r\n"},
    {"class mismatch given", 250, "5.1.1", "x", "250 x\r\n"},
    {"malformed given", 250, "2.0", "x", "250 x\r\n"},
    {"given with space", 250, "2.0.0 ", "x", "250 x\r\n"},
    {"given too long", 250, "2.1000.0", "x", "250 x\r\n"},
    {"code 199", 199, NULL, "x", "451 4.3.0 Internal error: invalid reply code\r\n"},
    {"code 600", 600, "2.0.0", "x", "451 4.3.0 Internal error: invalid reply code\r\n"},
    {"code 0", 0, NULL, "x", "451 4.3.0 Internal error: invalid reply code\r\n"},
    {"code 599", 599, NULL, "x", "599 x\r\n"},
    {"code 200", 200, NULL, "x", "200 x\r\n"},
};

TEST_IMPL(smtp_reply_format_table)
{
	struct buf b;

	buf_init(&b);
	for (size_t i = 0; i < ARRAY_SIZE(fmt_cases); i++) {
		const struct fmt_case *c = &fmt_cases[i];
		test_case = c->name;
		buf_reset(&b);
		buf_appends(&b, "prev");
		smtp_reply_format(&b, c->code, c->enh, c->text);
		ASSERT_MEM_EQ(b.data, 4, "prev", 4);
		ASSERT_MEM_EQ(b.data + 4, b.len - 4, c->want, strlen(c->want));
		reply_check_wellformed(b.data + 4, b.len - 4,
				       c->code >= 200 && c->code <= 599 ? c->code : 451);
	}
	buf_free(&b);
}

/* Long lines split at <= 512 octets; rejoining the pieces gives the text back. */
static void reply_check_split(int code, const char *enh, const char *text, int at_spaces)
{
	struct buf b, joined;
	struct smtp_reply r;

	buf_init(&b);
	buf_init(&joined);
	smtp_reply_format(&b, code, enh, text);
	reply_check_wellformed(b.data, b.len, code);
	smtp_reply_init(&r);
	ASSERT_EQ(smtp_reply_parse(b.data, b.len, &r), (int)b.len);
	ASSERT_GT(r.nlines, 1);
	if (enh)
		ASSERT_STR_EQ(r.enhanced, enh);
	/* Rejoin: a split at a space lost that space. */
	for (size_t i = 0; i < r.text.len; i++) {
		char c = r.text.data[i];
		buf_appendc(&joined, c == '\n' ? (at_spaces ? ' ' : 0) : c);
		if (c == '\n' && !at_spaces)
			joined.len--;
	}
	ASSERT_MEM_EQ(joined.data, joined.len, text, strlen(text));
	smtp_reply_free(&r);
	buf_free(&b);
	buf_free(&joined);
}

TEST_IMPL(smtp_reply_format_long)
{
	char text[2100];

	memset(text, 'a', 2000);
	text[2000] = 0;
	reply_check_split(250, NULL, text, 0);
	reply_check_split(550, "5.7.1", text, 0);
	for (size_t i = 0; i < 2000; i++)
		text[i] = i % 10 == 9 ? ' ' : (char)('a' + i % 26);
	text[1999] = 'z';
	reply_check_split(250, NULL, text, 1);
	reply_check_split(550, "5.999.999", text, 1);

	/* Exactly at the limit: one line of 512 octets. */
	struct buf b;
	buf_init(&b);
	memset(text, 'b', 506);
	text[506] = 0;
	smtp_reply_format(&b, 250, NULL, text);
	ASSERT_EQ(b.len, 512);
	reply_check_wellformed(b.data, b.len, 250);
	buf_reset(&b);
	text[506] = 'b';
	text[507] = 0;
	smtp_reply_format(&b, 250, NULL, text);
	ASSERT_EQ(b.len, 512 + 7);
	reply_check_wellformed(b.data, b.len, 250);
	buf_free(&b);
}

struct parse_case {
	const char *name;
	const char *in;
	size_t len;
	int rc; /* consumed, 0 or -EPROTO */
	int code;
	const char *enh, *text;
	size_t nlines;
};

#define POK(n, in, used, code, enh, text, nl)       \
	{                                           \
		n, S(in), used, code, enh, text, nl \
	}
#define PMORE(n, in)                          \
	{                                     \
		n, S(in), 0, 0, NULL, NULL, 0 \
	}
#define PBAD(n, in)                                 \
	{                                           \
		n, S(in), -EPROTO, 0, NULL, NULL, 0 \
	}

static const struct parse_case parse_cases[] = {
    POK("single", "250 OK\r\n", 8, 250, "", "OK", 1),
    POK("enhanced", "250 2.0.0 OK\r\n", 14, 250, "2.0.0", "OK", 1),
    POK("multi", "250-a\r\n250-2.1.0 b\r\n250 c\r\n", 27, 250, "", "a\nb\nc", 3),
    POK("multi enhanced", "550-5.7.1 a\r\n550 5.7.1 b\r\n", 26, 550, "5.7.1", "a\nb", 2),
    POK("no text", "250\r\n", 5, 250, "", "", 1),
    POK("empty continuation", "250-\r\n250 x\r\n", 13, 250, "", "\nx", 2),
    POK("code only", "250 2.0.0\r\n", 11, 250, "2.0.0", "", 1),
    POK("pipelined next", "220 hi\r\n250 next\r\n", 8, 220, "", "hi", 1),
    POK("354", "354 Send body\r\n", 15, 354, "", "Send body", 1),
    POK("class 3 no enhanced", "354 3.0.0 x\r\n", 13, 354, "", "3.0.0 x", 1),
    POK("class mismatch", "250 5.1.1 x\r\n", 13, 250, "", "5.1.1 x", 1),
    POK("tab after code", "550 5.1.1\tx\r\n", 13, 550, "", "5.1.1\tx", 1),
    POK("enh glued", "550 5.1.1x\r\n", 12, 550, "", "5.1.1x", 1),
    POK("leading space kept", "250  x\r\n", 8, 250, "", " x", 1),
    POK("high bytes kept", "250 \xc3\xa9\r\n", 8, 250, "", "\xc3\xa9", 1),
    PMORE("empty", ""),
    PMORE("one digit", "2"),
    PMORE("code", "250"),
    PMORE("no crlf", "250 OK"),
    PMORE("cr only", "250 OK\r"),
    PMORE("continuation only", "250-a\r\n"),
    PMORE("continuation and partial", "250-a\r\n25"),
    PMORE("continuation and code", "250-a\r\n250"),
    PBAD("4-digit code", "2500 OK\r\n"),
    PBAD("letters", "abc\r\n"),
    PBAD("http", "HTTP/1.1 400 Bad Request\r\n"),
    PBAD("http partial", "H"),
    PBAD("code 1xx", "150 x\r\n"),
    PBAD("code 6xx", "650 x\r\n"),
    PBAD("code 0xx", "050 x\r\n"),
    PBAD("second digit", "2x0 x\r\n"),
    PBAD("third digit partial", "25x"),
    PBAD("short code", "25\r\n"),
    PBAD("empty line", "\r\n"),
    PBAD("bare lf", "250 OK\n"),
    PBAD("bare lf only", "\n"),
    PBAD("bare lf continuation", "250-a\n250 b\r\n"),
    PBAD("bare cr", "250 a\rb\r\n"),
    PBAD("bare cr partial", "250 a\rb"),
    PBAD("cr cr lf", "250 x\r\r\n"),
    PBAD("bad separator", "250x\r\n"),
    PBAD("bad separator partial", "250x"),
    PBAD("mixed codes", "250-a\r\n251 b\r\n"),
    PBAD("mixed codes partial", "250-a\r\n251"),
    PBAD("mixed class", "250-a\r\n550 b\r\n"),
    PBAD("garbage continuation", "250-a\r\n25x"),
    PBAD("space before code", " 250 x\r\n"),
};

static void parse_check_case(const struct parse_case *c, struct smtp_reply *r)
{
	int rc = smtp_reply_parse(c->in, c->len, r);

	test_case = c->name;
	ASSERT_EQ(rc, c->rc);
	if (rc < 0)
		ASSERT(r->error != NULL);
	if (rc <= 0)
		return;
	ASSERT_EQ(r->code, c->code);
	ASSERT_STR_EQ(r->enhanced, c->enh);
	ASSERT_MEM_EQ(r->text.data, r->text.len, c->text, strlen(c->text));
	ASSERT_EQ(r->nlines, c->nlines);
	ASSERT(!memchr(r->text.data, '\r', r->text.len));
}

TEST_IMPL(smtp_reply_parse_table)
{
	struct smtp_reply r;

	smtp_reply_init(&r);
	for (size_t i = 0; i < ARRAY_SIZE(parse_cases); i++)
		parse_check_case(&parse_cases[i], &r);
	smtp_reply_free(&r);
	smtp_reply_free(&r); /* idempotent */
}

/* Every prefix of a complete reply needs more; every prefix of a malformed one needs more
 * until the first bad byte, then stays malformed. */
TEST_IMPL(smtp_reply_parse_split_points)
{
	struct smtp_reply r;

	smtp_reply_init(&r);
	for (size_t i = 0; i < ARRAY_SIZE(parse_cases); i++) {
		const struct parse_case *c = &parse_cases[i];
		int bad = 0;
		test_case = c->name;
		for (size_t k = 0; k <= c->len; k++) {
			int rc = smtp_reply_parse(c->in, k, &r);
			if (c->rc > 0 && k < (size_t)c->rc)
				ASSERT_EQ(rc, 0);
			else if (c->rc > 0)
				ASSERT_EQ(rc, c->rc);
			if (c->rc < 0) {
				if (bad)
					ASSERT_EQ(rc, -EPROTO);
				else
					ASSERT(rc == 0 || rc == -EPROTO);
				bad = rc < 0;
			}
		}
		if (c->rc < 0)
			ASSERT(bad);
	}
	smtp_reply_free(&r);
}

/* Builds `lines` lines of `each` octets (incl. CRLF), the last one final. */
static void reply_build(struct buf *b, size_t lines, size_t each, const char *tail)
{
	buf_reset(b);
	for (size_t i = 0; i < lines; i++) {
		buf_appends(b, i + 1 == lines ? "250 " : "250-");
		for (size_t k = 0; k < each - 6; k++)
			buf_appendc(b, 'x');
		buf_appends(b, "\r\n");
	}
	if (tail)
		buf_appends(b, tail);
}

TEST_IMPL(smtp_reply_parse_limits)
{
	struct smtp_reply r;
	struct buf b;

	smtp_reply_init(&r);
	buf_init(&b);
	/* One line of exactly 4096 octets is fine, 4097 is not. */
	reply_build(&b, 1, 4096, NULL);
	ASSERT_EQ(smtp_reply_parse(b.data, b.len, &r), 4096);
	ASSERT_EQ(r.text.len, 4090);
	reply_build(&b, 1, 4097, NULL);
	ASSERT_EQ(smtp_reply_parse(b.data, b.len, &r), -EPROTO);
	/* Unterminated: need more below the line limit, malformed at it. */
	ASSERT_EQ(smtp_reply_parse(b.data, 4095, &r), 0);
	ASSERT_EQ(smtp_reply_parse(b.data, 4096, &r), -EPROTO);
	ASSERT_STR_EQ(r.error, "reply line too long");
	/* 16 lines of 4096 = 65536 octets exactly is fine; one more octet is not. */
	reply_build(&b, 16, 4096, NULL);
	ASSERT_EQ(b.len, 65536);
	ASSERT_EQ(smtp_reply_parse(b.data, b.len, &r), 65536);
	ASSERT_EQ(r.nlines, 16);
	reply_build(&b, 17, 4096, NULL);
	ASSERT_EQ(smtp_reply_parse(b.data, b.len, &r), -EPROTO);
	ASSERT_STR_EQ(r.error, "reply too long");
	/* Detected as soon as the 64 KiB are buffered, not at the end of the reply. */
	ASSERT_EQ(smtp_reply_parse(b.data, 65535, &r), 0);
	ASSERT_EQ(smtp_reply_parse(b.data, 65536, &r), -EPROTO);
	/* Many short continuation lines: bounded by the total too. */
	reply_build(&b, 20000, 8, NULL);
	ASSERT_EQ(smtp_reply_parse(b.data, b.len, &r), -EPROTO);
	buf_free(&b);
	smtp_reply_free(&r);
}

/* Consecutive replies in one buffer come out one at a time. */
TEST_IMPL(smtp_reply_parse_pipelined)
{
	static const char in[] = "250 2.1.0 ok\r\n550-5.1.1 no\r\n550 5.1.1 user\r\n354 go\r\n";
	struct smtp_reply r;
	size_t pos = 0;
	int rc;

	smtp_reply_init(&r);
	rc = smtp_reply_parse(in + pos, sizeof(in) - 1 - pos, &r);
	ASSERT_EQ(rc, 14);
	ASSERT_EQ(r.code, 250);
	pos += (size_t)rc;
	rc = smtp_reply_parse(in + pos, sizeof(in) - 1 - pos, &r);
	ASSERT_EQ(rc, 30);
	ASSERT_EQ(r.code, 550);
	ASSERT_STR_EQ(r.enhanced, "5.1.1");
	ASSERT_MEM_EQ(r.text.data, r.text.len, "no\nuser", 7);
	pos += (size_t)rc;
	rc = smtp_reply_parse(in + pos, sizeof(in) - 1 - pos, &r);
	ASSERT_EQ(rc, 8);
	ASSERT_EQ(r.code, 354);
	ASSERT_EQ(r.text.len, 2);
	pos += (size_t)rc;
	ASSERT_EQ(smtp_reply_parse(in + pos, sizeof(in) - 1 - pos, &r), 0);
	smtp_reply_free(&r);
}

struct enh_case {
	const char *name;
	const char *in;
	size_t len;
	int want, cls, subject, detail;
	size_t consumed;
};

static const struct enh_case enh_cases[] = {
    {"with text", S("4.1.1 text"), 1, 4, 1, 1, 6},
    {"alone", S("5.7.1"), 1, 5, 7, 1, 5},
    {"max", S("5.999.999 x"), 1, 5, 999, 999, 10},
    {"leading zeros", S("2.00.000 "), 1, 2, 0, 0, 9},
    {"two spaces", S("2.0.0  x"), 1, 2, 0, 0, 6},
    {"glued", S("2.0.0x"), 0, 0, 0, 0, 0},
    {"tab", S("2.0.0\tx"), 0, 0, 0, 0, 0},
    {"class 3", S("3.0.0 x"), 0, 0, 0, 0, 0},
    {"class 1", S("1.0.0"), 0, 0, 0, 0, 0},
    {"four digit subject", S("5.1000.1"), 0, 0, 0, 0, 0},
    {"four digit detail", S("5.1.1000"), 0, 0, 0, 0, 0},
    {"empty subject", S("5..1"), 0, 0, 0, 0, 0},
    {"empty detail", S("5.1."), 0, 0, 0, 0, 0},
    {"extra dot", S("5.1.1.1"), 0, 0, 0, 0, 0},
    {"two parts", S("5.1 x"), 0, 0, 0, 0, 0},
    {"empty", S(""), 0, 0, 0, 0, 0},
    {"short", S("5.1"), 0, 0, 0, 0, 0},
    {"no dot", S("511 x"), 0, 0, 0, 0, 0},
    {"leading space", S(" 5.1.1"), 0, 0, 0, 0, 0},
    {"truncated by len", "5.1.1 x", 4, 0, 0, 0, 0, 0},
};

TEST_IMPL(smtp_enhanced_parse)
{
	for (size_t i = 0; i < ARRAY_SIZE(enh_cases); i++) {
		const struct enh_case *c = &enh_cases[i];
		int cls = -1, sub = -1, det = -1;
		size_t used = 77;
		test_case = c->name;
		ASSERT_EQ(smtp_enhanced_parse(c->in, c->len, &cls, &sub, &det, &used), c->want);
		if (!c->want) {
			ASSERT_EQ(cls, -1);
			ASSERT_EQ(used, 77);
			continue;
		}
		ASSERT_EQ(cls, c->cls);
		ASSERT_EQ(sub, c->subject);
		ASSERT_EQ(det, c->detail);
		ASSERT_EQ(used, c->consumed);
	}
	ASSERT_EQ(smtp_enhanced_parse(S("2.0.0"), NULL, NULL, NULL, NULL), 1);
}

TEST_IMPL(smtp_reply_line)
{
	static const char in[] = "250-mx Hello\r\n250-2.0.0 PIPELINING\r\n250-\r\n250 STARTTLS\r\n";
	static const char *const want[] = {"mx Hello", "PIPELINING", "", "STARTTLS"};
	struct smtp_reply r;
	size_t n;

	smtp_reply_init(&r);
	ASSERT_EQ(smtp_reply_line(&r, 0, &n), NULL);
	ASSERT_EQ(smtp_reply_parse(in, sizeof(in) - 1, &r), (int)sizeof(in) - 1);
	ASSERT_EQ(r.nlines, 4);
	for (size_t i = 0; i < 4; i++) {
		const char *l = smtp_reply_line(&r, i, &n);
		ASSERT(l != NULL);
		ASSERT_MEM_EQ(l, n, want[i], strlen(want[i]));
	}
	ASSERT(smtp_reply_line(&r, 4, &n) == NULL);
	ASSERT_EQ(n, 0);
	ASSERT_EQ(smtp_reply_parse("250\r\n", 5, &r), 5);
	ASSERT(smtp_reply_line(&r, 0, &n) != NULL);
	ASSERT_EQ(n, 0);
	smtp_reply_free(&r);
}
