/* SPDX-License-Identifier: Apache-2.0 */
/* DKIM canonicalization, header selection and field formatting
 * (kumod/proto/dkim.c); RFC 6376 3.4.5's examples among them. */
#include "base/buf.h"
#include "proto/dkim.h"
#include "proto/rfc5322.h"
#include "test.h"

static void emit(void *ctx, const void *p, size_t n)
{
	buf_append(ctx, p, n);
}

static void body_is(enum dkim_canon c, const char *in, const char *want)
{
	struct buf out;
	buf_init(&out);
	dkim_canon_body(c, in, strlen(in), emit, &out);
	ASSERT_STR_EQ(buf_cstr(&out), want);
	buf_free(&out);
}

TEST_IMPL(dkim_body_rfc6376_example)
{
	body_is(DKIM_RELAXED, " C \r\nD \t E\r\n\r\n\r\n", " C\r\nD E\r\n");
	body_is(DKIM_SIMPLE, " C \r\nD \t E\r\n\r\n\r\n", " C \r\nD \t E\r\n");
}

TEST_IMPL(dkim_body_edges)
{
	/* empty: simple is one CRLF, relaxed nothing (RFC 6376 3.4.3, 3.4.4) */
	body_is(DKIM_SIMPLE, "", "\r\n");
	body_is(DKIM_RELAXED, "", "");
	body_is(DKIM_SIMPLE, "\r\n\r\n", "\r\n");
	body_is(DKIM_RELAXED, "\r\n \t\r\n", "");
	/* a last line without its CRLF gets one */
	body_is(DKIM_SIMPLE, "abc", "abc\r\n");
	body_is(DKIM_RELAXED, "a  b\t", "a b\r\n");
	/* blank lines inside are kept, only trailing ones go */
	body_is(DKIM_RELAXED, "a\r\n\r\n \r\nb\r\n\r\n", "a\r\n\r\n\r\nb\r\n");
	/* LF-only line endings become CRLF; 8-bit bytes pass through */
	body_is(DKIM_SIMPLE, "x\ny\n\n", "x\r\ny\r\n");
	body_is(DKIM_RELAXED, "\xc3\xbc  \xe2\x9c\x93 \n", "\xc3\xbc \xe2\x9c\x93\r\n");
	/* leading whitespace is reduced, not removed, by relaxed */
	body_is(DKIM_RELAXED, "\t\tx\r\n", " x\r\n");
}

static void header_is(enum dkim_canon c, const char *in, const char *want)
{
	struct buf out;
	buf_init(&out);
	dkim_canon_header(c, in, strlen(in), &out);
	ASSERT_STR_EQ(buf_cstr(&out), want);
	buf_free(&out);
}

TEST_IMPL(dkim_header_rfc6376_example)
{
	header_is(DKIM_RELAXED, "A: X\r\n", "a:X\r\n");
	header_is(DKIM_RELAXED, "B : Y\t\r\n Z  \r\n", "b:Y Z\r\n");
	header_is(DKIM_SIMPLE, "B : Y\t\r\n Z  \r\n", "B : Y\t\r\n Z  \r\n");
	header_is(DKIM_SIMPLE, "B: Y", "B: Y\r\n");
	header_is(DKIM_RELAXED, "Subject:   \r\n", "subject:\r\n");
	header_is(DKIM_RELAXED, "X-Fold: a\r\n\tb \r\n  c", "x-fold:a b c\r\n");
}

static const char msg[] = "Received: r2\r\n"
			  "From: a@example.com\r\n"
			  "Subject: one\r\n"
			  "To: b@example.net\r\n"
			  "Subject:  two\r\n"
			  "\r\n"
			  "body\r\n";

TEST_IMPL(dkim_h_list_and_over_sign)
{
	size_t end = rfc5322_header_end(msg, strlen(msg));
	struct buf h;
	buf_init(&h);
	dkim_h_list(msg, end, "From:Subject:X-Missing", 0, &h);
	ASSERT_STR_EQ(buf_cstr(&h), "from:subject:x-missing");
	buf_reset(&h);
	/* distinct names sorted, each once more than the message has it */
	dkim_h_list(msg, end, "To:from:Subject:FROM:X-Missing", 1, &h);
	ASSERT_STR_EQ(buf_cstr(&h), "from:from:subject:subject:subject:to:to:x-missing");
	buf_free(&h);
}

TEST_IMPL(dkim_selects_bottom_up)
{
	size_t end = rfc5322_header_end(msg, strlen(msg));
	struct buf out;
	buf_init(&out);
	/* the last Subject first, then the one above, then nothing */
	dkim_canon_headers(DKIM_RELAXED, msg, end, "subject:from:subject:subject", &out);
	ASSERT_STR_EQ(buf_cstr(&out), "subject:two\r\nfrom:a@example.com\r\nsubject:one\r\n");
	buf_reset(&out);
	dkim_canon_headers(DKIM_SIMPLE, msg, end, "to:x-none", &out);
	ASSERT_STR_EQ(buf_cstr(&out), "To: b@example.net\r\n");
	buf_free(&out);
}

TEST_IMPL(dkim_signature_field)
{
	struct dkim_sig s = {
	    .algo = "rsa-sha256",
	    .domain = "example.com",
	    .selector = "sel",
	    .hc = DKIM_RELAXED,
	    .bc = DKIM_SIMPLE,
	    .bh = "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=",
	    .h = "from:from:subject:subject:to:to:x-a-rather-long-header-name:"
		 "x-a-rather-long-header-name:date:date",
	    .t = 1700000000,
	    .x = 1700003600,
	};
	struct buf f;
	buf_init(&f);
	dkim_sig_format(&f, &s);
	const char *t = buf_cstr(&f);
	ASSERT(strncmp(t, "DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=sel;", 56) == 0);
	ASSERT(strstr(t, "c=relaxed/simple;"));
	ASSERT(strstr(t, "t=1700000000;"));
	ASSERT(strstr(t, "x=1700003600;"));
	ASSERT(strstr(t, "bh=frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=;"));
	ASSERT(strcmp(t + f.len - 6, "\r\n\tb=;") == 0);
	char sig[345];
	memset(sig, 'A', sizeof(sig) - 1);
	sig[sizeof(sig) - 1] = 0;
	dkim_sig_finish(&f, sig, strlen(sig));
	t = buf_cstr(&f);
	/* folded: every line at most 76 columns, continuation lines start with HTAB */
	size_t col = 0, lines = 1, as = 0;
	for (const char *p = t; *p; p++) {
		if (*p == '\n') {
			ASSERT_LE(col, 77);
			ASSERT_EQ(p[1] == 0 || p[1] == '\t', 1);
			col = 0;
			lines++;
			continue;
		}
		as += *p == 'A';
		col++;
	}
	ASSERT_EQ(as, strlen(sig));
	ASSERT_GE(lines, 8);
	ASSERT(strcmp(t + f.len - 3, ";\r\n") == 0);
	/* the h= list survives the folding when the whitespace is removed */
	struct buf u;
	buf_init(&u);
	for (const char *p = strstr(t, "\th=") + 1; *p != ';'; p++)
		if (*p != '\r' && *p != '\n' && *p != '\t')
			buf_appendc(&u, *p);
	ASSERT_STR_EQ(buf_cstr(&u), "h=from:from:subject:subject:to:to:x-a-rather-long-header-"
				    "name:x-a-rather-long-header-name:date:date");
	buf_free(&u);
	buf_free(&f);
}
