/* SPDX-License-Identifier: Apache-2.0 */
/* 8-bit to 7-bit MIME conversion (RFC 6152 §3): exact output for small
 * cases, refusals, and quoted-printable lines that decode to the original. */
#include <errno.h>
#include <string.h>

#include "proto/mime8.h"
#include "test.h"

struct mime8_case {
	const char *name, *in, *want; /* want NULL: refused with why */
	const char *why;
	size_t converted;
};

static const struct mime8_case mime8_cases[] = {
    {"7bit copied", "Subject: a\r\n\r\nplain\r\n", "Subject: a\r\n\r\nplain\r\n", NULL, 0},
    {"8-bit header refused", "Subject: gr\xc3\xbc\r\n\r\nx\r\n", NULL,
     "8-bit octets in a header field", 0},
    {"single part gets MIME-Version and CTE", "Subject: a\r\n\r\ncaf\xc3\xa9\r\n",
     "Subject: a\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
     "caf=C3=A9\r\n",
     NULL, 1},
    {"existing folded CTE replaced, = and trailing space encoded",
     "MIME-Version: 1.0\r\nContent-Transfer-Encoding:\r\n 8bit\r\nX: y\r\n\r\n"
     "a=b \xff \r\nend\tx\t\r\n",
     "MIME-Version: 1.0\r\nX: y\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
     "a=3Db =FF=20\r\nend\tx=09\r\n",
     NULL, 1},
    {"LF line ends and no final line break", "Subject: a\n\n\xe9t\xe9\nlast \xe9",
     "Subject: a\nMIME-Version: 1.0\r\n"
     "Content-Transfer-Encoding: quoted-printable\r\n\r\n=E9t=E9\r\nlast =E9",
     NULL, 1},
    {"multipart: only the 8-bit part is encoded",
     "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b b\"\r\n\r\n"
     "pre\r\n--b b\r\nContent-Type: text/plain\r\n\r\n\xc3\xa4\r\n--b b  \r\n\r\nascii\r\n"
     "--b b--\r\nepi\r\n",
     "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b b\"\r\n\r\n"
     "pre\r\n--b b\r\nContent-Type: text/plain\r\n"
     "Content-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A4\r\n--b b  \r\n\r\nascii\r\n"
     "--b b--\r\nepi\r\n",
     NULL, 1},
    {"message/rfc822 walked, not encoded",
     "MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\n\xe9\r\n",
     "MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\n"
     "MIME-Version: 1.0\r\n"
     "Content-Transfer-Encoding: quoted-printable\r\n\r\n=E9\r\n",
     NULL, 1},
    {"binary part refused", "Content-Transfer-Encoding: binary\r\n\r\n\xe9\r\n", NULL,
     "a binary part", 0},
    {"8-bit in base64 refused", "Content-Transfer-Encoding: base64\r\n\r\n\xe9\r\n", NULL,
     "8-bit octets in a part with an encoding that forbids them", 0},
    {"8-bit preamble refused",
     "Content-Type: multipart/mixed; boundary=b\r\n\r\n\xe9\r\n--b\r\n\r\nx\r\n--b--\r\n", NULL,
     "8-bit octets in a multipart preamble", 0},
    {"8-bit epilogue refused",
     "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n\xe9\r\n", NULL,
     "8-bit octets in a multipart epilogue", 0},
    {"multipart without boundary refused", "Content-Type: multipart/mixed\r\n\r\n\xe9\r\n", NULL,
     "8-bit octets in a multipart without a boundary", 0},
    {"message/partial refused", "Content-Type: message/partial; id=1\r\n\r\n\xe9\r\n", NULL,
     "8-bit octets in a message/* part other than rfc822", 0},
};

TEST_IMPL(mime8_table)
{
	for (size_t i = 0; i < ARRAY_SIZE(mime8_cases); i++) {
		const struct mime8_case *c = &mime8_cases[i];
		struct buf out;
		struct mime8_result res;
		buf_init(&out);
		int rc = mime8_to_7bit(c->in, strlen(c->in), &out, &res);
		if (c->want) {
			if (rc != 0)
				TEST_FAIL("%s: refused: %s", c->name, res.why);
			ASSERT_STR_EQ(buf_cstr(&out), c->want);
			ASSERT_EQ(res.converted, c->converted);
			ASSERT(!mime8_has_8bit(out.data, out.len));
		} else {
			if (rc != -EINVAL)
				TEST_FAIL("%s: not refused: %s", c->name, buf_cstr(&out));
			ASSERT_STR_EQ(res.why, c->why);
		}
		buf_free(&out);
	}
}

static int hexval(char ch)
{
	return ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : ch - '0';
}

/* Reference decoder for the output of qp_body (RFC 2045 §6.7). */
static void qp_decode(const char *s, size_t n, struct buf *out)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '=' && i + 2 < n && s[i + 1] == '\r' && s[i + 2] == '\n')
			i += 2; /* soft line break */
		else if (s[i] == '=' && i + 2 < n) {
			buf_appendc(out, (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2])));
			i += 2;
		} else
			buf_appendc(out, s[i]);
	}
}

TEST_IMPL(mime8_long_lines_round_trip)
{
	/* every byte value, lines of several lengths, so soft breaks fall
	 * before, on and after encoded triplets */
	struct buf body, msg, out, dec;
	buf_init(&body);
	buf_init(&msg);
	buf_init(&out);
	buf_init(&dec);
	for (int len = 1; len < 300; len += 7) {
		for (int k = 0; k < len; k++) {
			unsigned char ch = (unsigned char)((k * 37 + len) & 0xff);
			if (ch == '\r' || ch == '\n')
				ch = 0xe9;
			buf_appendc(&body, (char)ch);
		}
		buf_appends(&body, "\r\n");
	}
	buf_appends(&msg, "Subject: x\r\n\r\n");
	buf_append(&msg, body.data, body.len);
	struct mime8_result res;
	ASSERT_EQ(mime8_to_7bit(msg.data, msg.len, &out, &res), 0);
	ASSERT(!mime8_has_8bit(out.data, out.len));
	const char *b = strstr(buf_cstr(&out), "\r\n\r\n") + 4;
	size_t bl = out.len - (size_t)(b - out.data);
	for (size_t i = 0; i < bl;) {
		const char *e = memchr(b + i, '\n', bl - i);
		size_t ll = e ? (size_t)(e - (b + i)) + 1 : bl - i;
		ASSERT_LE(ll, 78); /* 76 + CRLF */
		if (ll >= 3 && b[i + ll - 3] == ' ')
			TEST_FAIL("space before a line break at %zu", i);
		i += ll;
	}
	qp_decode(b, bl, &dec);
	ASSERT_MEM_EQ(dec.data, dec.len, body.data, body.len);
	buf_free(&body);
	buf_free(&msg);
	buf_free(&out);
	buf_free(&dec);
}

TEST_IMPL(mime8_has_8bit_and_header_len)
{
	ASSERT(!mime8_has_8bit("0123456789abcdef", 16));
	ASSERT(mime8_has_8bit("0123456789abcde\x80", 16));
	ASSERT(mime8_has_8bit("\x80", 1));
	ASSERT_EQ(mime8_header_len("A: b\r\n\r\nbody", 13), 8);
	ASSERT_EQ(mime8_header_len("A: b\n\nbody", 10), 6);
	ASSERT_EQ(mime8_header_len("\r\nbody", 6), 2);
	ASSERT_EQ(mime8_header_len("A: b\r\n", 6), 6);
}
