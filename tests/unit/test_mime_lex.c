/* SPDX-License-Identifier: Apache-2.0 */
/* The MIME header value lexer shared by report.c and mime8.c: Content-Type
 * with comments, quoted and folded parameters, truncation, and the first
 * token of a Content-Transfer-Encoding value. */
#include "proto/mime_lex.h"
#include "test.h"

struct params {
	char seen[512];
};

static void collect(void *ctx, const char *name, size_t len, const char *val)
{
	struct params *p = ctx;
	size_t l = strlen(p->seen);
	snprintf(p->seen + l, sizeof(p->seen) - l, "%.*s=[%s];", (int)len, name, val);
}

TEST_IMPL(mime_lex_content_type_table)
{
	static const struct {
		const char *name, *in, *type, *sub, *params;
	} cases[] = {
	    {"plain", "text/plain", "text", "plain", ""},
	    {"case and comments", " (c) Multipart (x\\)y) / REPORT ; Report-Type = delivery-status",
	     "multipart", "report", "Report-Type=[delivery-status];"},
	    {"quoted, escaped, folded", "multipart/mixed; boundary=\"a\\\"b\r\n c\"; x=y",
	     "multipart", "mixed", "boundary=[a\"b c];x=[y];"},
	    {"no subtype", "text; charset=us-ascii", "text", "", "charset=[us-ascii];"},
	    {"stops at a parameter without =", "a/b; x; y=z", "a", "b", ""},
	    {"unterminated quote", "a/b; x=\"abc", "a", "b", "x=[abc];"},
	    {"empty", "", "", "", ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char type[32] = "", sub[32] = "";
		struct params p = {""};
		mime_lex_content_type(cases[i].in, strlen(cases[i].in), type, sizeof(type), sub,
				      sizeof(sub), collect, &p);
		if (strcmp(type, cases[i].type) || strcmp(sub, cases[i].sub) ||
		    strcmp(p.seen, cases[i].params))
			TEST_FAIL("%s: \"%s\" \"%s\" \"%s\" vs \"%s\" \"%s\" \"%s\"", cases[i].name,
				  type, sub, p.seen, cases[i].type, cases[i].sub, cases[i].params);
	}
}

TEST_IMPL(mime_lex_value_truncated)
{
	char in[600] = "a/b; boundary=";
	size_t l = strlen(in);
	memset(in + l, 'x', 400);
	in[l + 400] = '\0';
	char val[MIME_LEX_VALUE_MAX + 1];
	size_t end = mime_lex_param_value(in, strlen(in), l, val, sizeof(val));
	ASSERT_EQ(end, l + 400);
	ASSERT_EQ(strlen(val), MIME_LEX_VALUE_MAX);
	char type[4];
	mime_lex_content_type("TEXTUAL/x", 9, type, sizeof(type), val, sizeof(val), NULL, NULL);
	ASSERT_STR_EQ(type, "tex");
	ASSERT_STR_EQ(val, "x");
}

TEST_IMPL(mime_lex_first_token)
{
	char cte[32];
	const char *v = " (comment) Quoted-Printable (x)\r\n";
	mime_lex_first_token(v, strlen(v), cte, sizeof(cte));
	ASSERT_STR_EQ(cte, "quoted-printable");
	mime_lex_first_token("", 0, cte, sizeof(cte));
	ASSERT_STR_EQ(cte, "");
	ASSERT(mime_lex_is_ws('\n') && !mime_lex_is_ws('x'));
}
