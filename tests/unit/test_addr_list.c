/* SPDX-License-Identifier: Apache-2.0 */
/* RFC 5322 address lists (kumod/proto/addr_list.c). */
#include "proto/addr_list.h"
#include "test.h"

static struct addr_list parse_ok(const char *s)
{
	struct addr_list l;
	char err[200];
	if (addr_list_parse(s, strlen(s), &l, err, sizeof(err)) != 0)
		TEST_FAIL("parse %s: %s", s, err);
	return l;
}

#define ENTRY(l, i, nm, lo, dom, grp)                                                           \
	do {                                                                                    \
		ASSERT((nm) ? (l).v[i].name &&strcmp((l).v[i].name, (nm) ? (nm) : "") == 0      \
			    : (l).v[i].name == NULL);                                           \
		ASSERT_STR_EQ((l).v[i].local, lo);                                              \
		ASSERT_STR_EQ((l).v[i].domain, dom);                                            \
		ASSERT((grp) ? (l).v[i].group &&strcmp((l).v[i].group, (grp) ? (grp) : "") == 0 \
			     : (l).v[i].group == NULL);                                         \
	} while (0)

TEST_IMPL(addr_list_forms)
{
	struct addr_list l = parse_ok("John Smith <john.smith@example.com>");
	ASSERT_EQ(l.n, 1);
	ENTRY(l, 0, "John Smith", "john.smith", "example.com", NULL);
	addr_list_free(&l);

	l = parse_ok("user@example.com, \"Doe, Jane\" <jane@x.example> (work),"
		     "<bare@y.example>, \"quoted local\"@z.example");
	ASSERT_EQ(l.n, 4);
	ENTRY(l, 0, NULL, "user", "example.com", NULL);
	ENTRY(l, 1, "Doe, Jane", "jane", "x.example", NULL);
	ENTRY(l, 2, NULL, "bare", "y.example", NULL);
	ENTRY(l, 3, NULL, "quoted local", "z.example", NULL);
	addr_list_free(&l);

	l = parse_ok("Team: a@x.example, B <b@x.example>;, c@y.example, Empty:;");
	ASSERT_EQ(l.n, 4);
	ASSERT_EQ(l.groups, 2);
	ENTRY(l, 0, NULL, "a", "x.example", "Team");
	ENTRY(l, 1, "B", "b", "x.example", "Team");
	ENTRY(l, 2, NULL, "c", "y.example", NULL);
	ASSERT(l.v[3].local == NULL && strcmp(l.v[3].group, "Empty") == 0);
	addr_list_free(&l);

	/* RFC 2047: adjacent encoded words join; Latin-1 becomes UTF-8 */
	l = parse_ok("=?UTF-8?B?SsO2cmc=?= =?utf-8?Q?_M=C3=BCller?= <jm@example.de>, "
		     "=?iso-8859-1?q?Andr=E9?= <a@example.fr>, =?koi8-r?b?x8/E?= <k@example.ru>");
	ENTRY(l, 0, "J\xc3\xb6rg M\xc3\xbcller", "jm", "example.de", NULL);
	ENTRY(l, 1, "Andr\xc3\xa9", "a", "example.fr", NULL);
	ENTRY(l, 2, "=?koi8-r?b?x8/E?=", "k", "example.ru", NULL);
	addr_list_free(&l);
}

TEST_IMPL(addr_list_errors)
{
	struct addr_list l;
	char err[200];
	ASSERT_EQ(addr_list_parse("Name <a@b", 9, &l, err, sizeof(err)), -1);
	ASSERT_STR_EQ(err, "expected '>' at offset 9");
	ASSERT_EQ(addr_list_parse("just words", 10, &l, err, sizeof(err)), -1);
	ASSERT_STR_EQ(err, "expected '@' at offset 5");
	ASSERT_EQ(addr_list_parse("a@b c@d", 7, &l, err, sizeof(err)), -1);
	ASSERT_STR_EQ(err, "expected ',' between addresses at offset 4");
	ASSERT_EQ(addr_list_parse("G: a@b", 6, &l, err, sizeof(err)), -1);
	ASSERT_STR_EQ(err, "group without ';' at offset 6");
	ASSERT_EQ(addr_list_parse("(x a@b", 6, &l, err, sizeof(err)), -1);
	ASSERT_STR_EQ(err, "unterminated comment at offset 6");
	ASSERT_EQ(addr_list_parse("", 0, &l, err, sizeof(err)), 0);
	ASSERT_EQ(l.n, 0);
}
