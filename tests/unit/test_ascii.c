/* SPDX-License-Identifier: Apache-2.0 */
/* ASCII case mapping (kumod/base/ascii.c): only A-Z change, whatever the
 * locale; bytes >= 0x80 and the NUL bound are kept. */
#include "base/ascii.h"
#include "test.h"

TEST_IMPL(ascii_lower_in_place)
{
	char s[] = "Mx.EXAMPLE.Com@[AZaz09]\xc3\x89";
	ascii_lower(s);
	ASSERT_STR_EQ(s, "mx.example.com@[azaz09]\xc3\x89");
	char p[] = "ABCDEF";
	ascii_lower_n(p, 3);
	ASSERT_STR_EQ(p, "abcDEF");
}

TEST_IMPL(ascii_lower_copy_truncates)
{
	static const struct {
		const char *name, *in;
		size_t n, cap;
		const char *want;
	} cases[] = {
	    {"whole", "Multipart", 9, 16, "multipart"},
	    {"prefix only", "Text/PLAIN", 4, 16, "text"},
	    {"truncated to cap - 1", "BOUNDARY", 8, 4, "bou"},
	    {"empty", "X", 0, 4, ""},
	    {"cap 1", "X", 1, 1, ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[16];
		memset(out, 'z', sizeof(out));
		ascii_lower_copy(out, cases[i].cap, cases[i].in, cases[i].n);
		if (strcmp(out, cases[i].want) != 0)
			TEST_FAIL("%s: \"%s\" vs \"%s\"", cases[i].name, out, cases[i].want);
	}
}
