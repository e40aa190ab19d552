/* SPDX-License-Identifier: Apache-2.0 */
/* The mail catcher's MIME view: leaves of a nested multipart, decoding,
 * encoded words and link/code extraction. */
#include <string.h>

#include "proto/mime_view.h"
#include "test.h"

static const char nested[] =
    "Subject: x\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n"
    "preamble\r\n--outer\r\nContent-Type: multipart/alternative; boundary=in\r\n\r\n"
    "--in\r\nContent-Type: text/plain; charset=\"ISO-8859-1\"\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9 soft=\r\nbreak\r\n"
    "--in\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    "PGI+aGk8\r\nL2I+\r\n--in--\r\n"
    "--outer\r\nContent-Type: application/pdf; name=x.pdf\r\n"
    "Content-Disposition: attachment; filename=\"r e.pdf\"\r\n\r\n%PDF\r\n--outer--\r\nepi\r\n";

static struct mime_view v;

static void decoded(size_t i, struct buf *out)
{
	const struct mime_view_part *p = &v.parts[i];
	struct buf raw;
	buf_init(&raw);
	mime_view_decode(nested + p->off, p->len, p->cte, &raw);
	buf_reset(out);
	mime_view_to_utf8(raw.data ? raw.data : "", raw.len, p->charset, out);
	buf_appendc(out, 0);
	buf_free(&raw);
}

TEST_IMPL(mime_view_nested_multipart)
{
	mime_view_parse(nested, strlen(nested), &v);
	ASSERT_EQ(v.nparts, 3);
	ASSERT_EQ(v.truncated, 0);
	ASSERT_STR_EQ(v.parts[0].type, "text/plain");
	ASSERT_STR_EQ(v.parts[0].charset, "iso-8859-1");
	ASSERT_EQ(v.parts[0].attachment, 0);
	ASSERT_STR_EQ(v.parts[1].type, "text/html");
	ASSERT_STR_EQ(v.parts[2].type, "application/pdf");
	ASSERT_STR_EQ(v.parts[2].filename, "r e.pdf");
	ASSERT_EQ(v.parts[2].attachment, 1);
	struct buf out;
	buf_init(&out);
	decoded(0, &out);
	ASSERT_STR_EQ(out.data, "caf\xc3\xa9 softbreak");
	decoded(1, &out);
	ASSERT_STR_EQ(out.data, "<b>hi</b>");
	decoded(2, &out);
	ASSERT_STR_EQ(out.data, "%PDF");
	buf_free(&out);
}

TEST_IMPL(mime_view_unclosed_and_plain)
{
	const char *m = "Content-Type: multipart/mixed; boundary=b\n\n--b\n\nfirst\n--b\n\nlast";
	mime_view_parse(m, strlen(m), &v);
	ASSERT_EQ(v.nparts, 2);
	ASSERT_MEM_EQ(m + v.parts[0].off, v.parts[0].len, "first", 5);
	ASSERT_MEM_EQ(m + v.parts[1].off, v.parts[1].len, "last", 4);
	const char *p = "Subject: a\r\n\r\nbody";
	mime_view_parse(p, strlen(p), &v);
	ASSERT_EQ(v.nparts, 1);
	ASSERT_STR_EQ(v.parts[0].type, "text/plain");
	ASSERT_EQ(v.header_len, 14);
}

TEST_IMPL(mime_view_encoded_words)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
	    {"=?utf-8?B?aMOpbGxv?= =?iso-8859-1?Q?caf=E9_x?=", "h\xc3\xa9llocaf\xc3\xa9 x"},
	    {"plain =?UTF-8?q?a=20b?= tail", "plain a b tail"},
	    {"=?utf-8?X?bad?= kept", "=?utf-8?X?bad?= kept"},
	    {"bytes \xff", "bytes \xef\xbf\xbd"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf out;
		buf_init(&out);
		mime_view_decode_header(cases[i].in, strlen(cases[i].in), &out);
		buf_appendc(&out, 0);
		ASSERT_STR_EQ(out.data, cases[i].want);
		buf_free(&out);
	}
}

static void collect(const char *s, size_t n, void *ctx)
{
	struct buf *b = ctx;
	buf_append(b, s, n);
	buf_appendc(b, '|');
}

TEST_IMPL(mime_view_links_and_codes)
{
	const char *t =
	    "Open https://app.test/verify?t=abc&u=1. or <http://x.test/a>, again "
	    "https://app.test/verify?t=abc&u=1 code: 482913, order A12345 12 2026-12-07";
	struct buf out;
	buf_init(&out);
	ASSERT_EQ(mime_view_links(t, strlen(t), collect, &out), 2);
	buf_appendc(&out, 0);
	ASSERT_STR_EQ(out.data, "https://app.test/verify?t=abc&u=1|http://x.test/a|");
	buf_reset(&out);
	ASSERT_EQ(mime_view_codes(t, strlen(t), collect, &out), 2);
	buf_appendc(&out, 0);
	ASSERT_STR_EQ(out.data, "482913|2026|");
	buf_free(&out);
}

static void on_addr(const char *name, size_t nlen, const char *addr, size_t alen, void *ctx)
{
	struct buf *b = ctx;
	buf_append(b, name, nlen);
	buf_appendc(b, '=');
	buf_append(b, addr, alen);
	buf_appendc(b, '|');
}

TEST_IMPL(mime_view_address_lists)
{
	const char *list = "\"Doe, Jane\" <jane@x.test>, bob@y.test (Bob), team: a@z.test, "
			   "<b@z.test>;, =?utf-8?Q?R=C3=A9?= <r@e.test>, not-an-address";
	struct buf out;
	buf_init(&out);
	ASSERT_EQ(mime_view_addresses(list, strlen(list), on_addr, &out), 5);
	buf_appendc(&out, 0);
	ASSERT_STR_EQ(out.data, "Doe, Jane=jane@x.test|=bob@y.test|=a@z.test|=b@z.test|"
				"=?utf-8?Q?R=C3=A9?==r@e.test|");
	buf_free(&out);
}
