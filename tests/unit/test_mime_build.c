/* SPDX-License-Identifier: Apache-2.0 */
/* MIME rebuild for msg:check_fix_conformance: exact output for small cases,
 * refusals, long lines and multipart structure kept, and the encoders. */
#include <errno.h>
#include <string.h>

#include "proto/mime_build.h"
#include "proto/mime_view.h"
#include "test.h"

struct mime_build_case {
	const char *name, *in, *want; /* want NULL: refused with why */
	const char *why;
};

static const struct mime_build_case mime_build_cases[] = {
    {"clean copied", "Subject: a\r\n\r\nplain\r\n", "Subject: a\r\n\r\nplain\r\n", NULL},
    {"bare LF in a 7-bit body: line ends only", "Subject: a\n\nx\ny\n",
     "Subject: a\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: 7bit\r\n\r\nx\r\ny\r\n", NULL},
    {"8-bit body: quoted-printable, charset added to an existing Content-Type",
     "Content-Type: text/plain\r\nMIME-Version: 1.0\r\n\r\ncaf\xc3\xa9\r\n",
     "Content-Type: text/plain; charset=utf-8\r\nMIME-Version: 1.0\r\n"
     "Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n",
     NULL},
    {"undeclared invalid UTF-8 becomes U+FFFD", "Subject: a\r\n\r\n\xe9t\xe9\r\n",
     "Subject: a\r\nContent-Type: text/plain; charset=utf-8\r\nMIME-Version: 1.0\r\n"
     "Content-Transfer-Encoding: base64\r\n\r\n77+9dO+/vQ0K",
     NULL},
    {"declared charset kept with its bytes",
     "Content-Type: text/plain; charset=iso-8859-1\r\n\r\nd\xe9j\xe0 vu, encore une fois\r\n",
     "Content-Type: text/plain; charset=iso-8859-1\r\nMIME-Version: 1.0\r\n"
     "Content-Transfer-Encoding: quoted-printable\r\n\r\nd=E9j=E0 vu, encore une fois\r\n",
     NULL},
    {"name ending with space trimmed, order kept", "A: 1\r\nSubject : x\r\nB: 2\r\n\r\nb\r\n",
     "A: 1\r\nSubject: x\r\nB: 2\r\n\r\nb\r\n", NULL},
    {"old transfer encoding replaced",
     "Content-Transfer-Encoding: 8bit\r\nX: y\r\n\r\n\xc3\xbc\r\n",
     "X: y\r\nContent-Type: text/plain; charset=utf-8\r\nMIME-Version: 1.0\r\n"
     "Content-Transfer-Encoding: quoted-printable\r\n\r\n=C3=BC\r\n",
     NULL},
    {"8-bit subject as encoded words", "Subject: gr\xc3\xbc\xc3\x9f\r\n\r\nx\r\n",
     "Subject: =?UTF-8?B?Z3LDvMOf?=\r\n\r\nx\r\n", NULL},
    {"binary part as base64", "Content-Type: application/octet-stream\r\n\r\n\x01\xff\n",
     "Content-Type: application/octet-stream\r\nMIME-Version: 1.0\r\n"
     "Content-Transfer-Encoding: base64\r\n\r\nAf8K",
     NULL},
    {"a line starting with -- is never left literal", "Subject: a\r\n\r\n--x caf\xc3\xa9 au lait\n",
     "Subject: a\r\nContent-Type: text/plain; charset=utf-8\r\nMIME-Version: 1.0\r\n"
     "Content-Transfer-Encoding: quoted-printable\r\n\r\n=2D-x caf=C3=A9 au lait\r\n",
     NULL},
    {"multipart: preamble kept, 8-bit epilogue dropped, close delimiter kept",
     "Content-Type: multipart/mixed; boundary=b\r\n\r\npre\r\n--b\r\n\r\nok\r\n--b\r\n\r\n"
     "caf\xc3\xa9 au lait\r\n--b--\r\n\xff\r\n",
     "Content-Type: multipart/mixed; boundary=b\r\n\r\npre\r\n--b\r\n\r\nok\r\n--b\r\n"
     "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: "
     "quoted-printable\r\n\r\ncaf=C3=A9 au lait\r\n--b--\r\n",
     NULL},
    {"missing close delimiter added", "Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx\n",
     "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Transfer-Encoding: "
     "7bit\r\n\r\nx\r\n\r\n--b--\r\n",
     NULL},
    {"header line without colon refused", "Subject: a\r\nbroken\r\n\r\n\xff\r\n", NULL,
     "a header line without a colon (MISSING_COLON_VALUE)"},
    {"multipart without boundary refused", "Content-Type: multipart/mixed\r\n\r\n\xff\r\n", NULL,
     "a multipart without a boundary"},
    {"multipart without parts refused",
     "Content-Type: multipart/mixed; boundary=q\r\n\r\nno parts \xff\r\n", NULL,
     "a multipart without any part"},
    {"delivery-status needing encoding refused",
     "Content-Type: message/delivery-status\r\n\r\n\xff\r\n", NULL,
     "a message/* part other than rfc822 that needs encoding"},
};

TEST_IMPL(mime_build_table)
{
	for (size_t i = 0; i < sizeof(mime_build_cases) / sizeof(mime_build_cases[0]); i++) {
		const struct mime_build_case *c = &mime_build_cases[i];
		struct buf out;
		struct mime_build_result res;
		buf_init(&out);
		int rc = mime_build_rebuild(c->in, strlen(c->in), &out, &res);
		if (c->want) {
			if (rc != 0)
				TEST_FAIL("%s: refused: %s", c->name, res.why);
			if (out.len != strlen(c->want) || memcmp(out.data, c->want, out.len) != 0)
				TEST_FAIL("%s:\n got: %.*s\nwant: %s", c->name, (int)out.len,
					  out.data, c->want);
		} else {
			if (rc != -EINVAL)
				TEST_FAIL("%s: not refused: %s", c->name, buf_cstr(&out));
			ASSERT_STR_EQ(res.why, c->why);
		}
		buf_free(&out);
	}
}

TEST_IMPL(mime_build_long_line_and_header)
{
	struct buf in, out, dec;
	buf_init(&in);
	buf_init(&out);
	buf_init(&dec);
	buf_appends(&in, "Subject:");
	for (int i = 0; i < 60; i++)
		buf_appends(&in, " word");
	buf_appends(&in, "\r\n\r\n");
	size_t hl = in.len;
	for (int i = 0; i < 2000; i++)
		buf_appendc(&in, (char)('a' + i % 26));
	buf_appends(&in, "\r\n");
	struct mime_build_result res;
	ASSERT_EQ(mime_build_rebuild(in.data, in.len, &out, &res), 0);
	ASSERT_EQ(res.reencoded, 1);
	ASSERT_EQ(res.headers, 1);
	ASSERT(mime_build_is_clean(out.data, out.len));
	/* the subject is folded, not changed */
	ASSERT(memcmp(out.data, "Subject: word word", 18) == 0);
	struct mime_view v;
	mime_view_parse(out.data, out.len, &v);
	ASSERT_EQ(v.nparts, 1);
	ASSERT_EQ(v.parts[0].cte, MIME_VIEW_CTE_QP);
	mime_view_decode(out.data + v.parts[0].off, v.parts[0].len, v.parts[0].cte, &dec);
	ASSERT_MEM_EQ(dec.data, dec.len, in.data + hl, in.len - hl);
	buf_free(&in);
	buf_free(&out);
	buf_free(&dec);
}

TEST_IMPL(mime_build_unfoldable_header_refused)
{
	struct buf in, out;
	buf_init(&in);
	buf_init(&out);
	buf_appends(&in, "X-Long: ");
	for (int i = 0; i < 1200; i++)
		buf_appendc(&in, 'x');
	buf_appends(&in, "\r\n\r\nb\n");
	struct mime_build_result res;
	ASSERT_EQ(mime_build_rebuild(in.data, in.len, &out, &res), -EINVAL);
	ASSERT_STR_EQ(res.why, "a header line over 998 octets that cannot be folded");
	buf_free(&in);
	buf_free(&out);
}

TEST_IMPL(mime_build_encoders)
{
	struct buf b;
	buf_init(&b);
	mime_build_qp(&b, "a \r\nb\rc\n=\t", 10);
	ASSERT_STR_EQ(buf_cstr(&b), "a=20\r\nb\r\nc\r\n=3D=09");
	buf_reset(&b);
	char big[120];
	memset(big, 'z', sizeof(big));
	mime_build_base64(&b, big, sizeof(big));
	ASSERT_EQ(b.len, 160 + 2 * 2);
	ASSERT(memcmp(b.data + 76, "\r\n", 2) == 0);
	buf_reset(&b);
	mime_build_qp(&b, big, sizeof(big));
	ASSERT_EQ(b.len, 120 + 3);
	ASSERT(memcmp(b.data + 75, "=\r\n", 3) == 0);
	buf_free(&b);
	ASSERT(mime_build_is_clean("A: b\r\n\r\nc", 9));
	ASSERT(!mime_build_is_clean("A : b\r\n\r\nc", 10));
	ASSERT(!mime_build_is_clean("A: b\n\r\nc", 8));
	ASSERT(!mime_build_is_clean("A: b\r\n\r\nc\rd", 11));
}

TEST_IMPL(mime_build_invalid_headers)
{
	static const struct {
		const char *in;
		int invalid;
	} cases[] = {
	    {"Subject: a\r\n\r\nb\r\n", 0},
	    {"Content-Type: text/plain; charset=\"utf-8\" (c)\r\n\r\nb", 0},
	    {"Content-Type: text/plain;\r\n\tformat=flowed;\r\n\r\nb", 0},
	    {"Content-Type: text\r\n\r\nb", 1},
	    {"Content-Type: text/plain; charset\r\n\r\nb", 1},
	    {"Content-Type: text/plain; name=\"open\r\n\r\nb", 1},
	    {"Content-Transfer-Encoding: base 64\r\n\r\nb", 1},
	    {"Content-Disposition: attachment; filename=@\r\n\r\nb", 1},
	    {"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\nContent-Type: a/b; "
	     "x=\"y\"\r\n"
	     "\r\nz\r\n--q--\r\n",
	     0},
	    {"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\nContent-Type: a/b; x=\r\n"
	     "\r\nz\r\n--q--\r\n",
	     1},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (mime_build_invalid_headers(cases[i].in, strlen(cases[i].in)) !=
		    cases[i].invalid)
			TEST_FAIL("case %zu: %s", i, cases[i].in);
}
