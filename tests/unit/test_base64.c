/* SPDX-License-Identifier: Apache-2.0 */
/* The lenient base64 decoder for MIME bodies: line breaks and junk skipped,
 * '=' ends the data, an incomplete last quantum dropped. */
#include "base/base64.h"
#include "test.h"

TEST_IMPL(base64_lenient_table)
{
	static const struct {
		const char *name, *in, *want;
	} cases[] = {
	    {"canonical", "aGVsbG8gd29ybGQ=", "hello world"},
	    {"folded lines", "aGVs\r\nbG8g\r\n d29y bGQ=\r\n", "hello world"},
	    {"junk skipped", "aG*Vs!bG8", "hello"},
	    {"'=' ends the data", "aGk=aGVsbG8=", "hi"},
	    {"no padding", "aGk", "hi"},
	    {"incomplete quantum dropped", "aGkxM", "hi1"},
	    {"one char", "a", ""},
	    {"empty", "", ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf b;
		buf_init(&b);
		base64_decode_lenient(cases[i].in, strlen(cases[i].in), &b);
		const char *got = buf_cstr(&b);
		if (strcmp(got, cases[i].want) != 0)
			TEST_FAIL("%s: \"%s\" vs \"%s\"", cases[i].name, got, cases[i].want);
		buf_free(&b);
	}
}

TEST_IMPL(base64_lenient_binary_round_trip)
{
	unsigned char raw[256];
	for (size_t i = 0; i < sizeof(raw); i++)
		raw[i] = (unsigned char)(255 - i);
	struct buf enc, dec;
	buf_init(&enc);
	buf_init(&dec);
	base64_encode(&enc, raw, sizeof(raw));
	base64_decode_lenient(enc.data, enc.len, &dec);
	ASSERT_MEM_EQ(dec.data, dec.len, raw, sizeof(raw));
	buf_free(&enc);
	buf_free(&dec);
}

TEST_IMPL(base64_lenient_any_takes_url_safe)
{
	struct buf a, b;
	buf_init(&a);
	buf_init(&b);
	/* 0xfb 0xff 0xbf: "+/+/" standard, "-_-_" URL-safe */
	base64_decode_lenient_any("-_-_", 4, &a);
	base64_decode_lenient_any("+/+/", 4, &b);
	ASSERT_MEM_EQ(a.data, a.len, "\xfb\xff\xbf", 3);
	ASSERT_MEM_EQ(b.data, b.len, "\xfb\xff\xbf", 3);
	buf_reset(&a);
	base64_decode_lenient("-_-_", 4, &a); /* not in the standard alphabet: skipped */
	ASSERT_EQ(a.len, 0);
	buf_free(&a);
	buf_free(&b);
}
