/* SPDX-License-Identifier: Apache-2.0 */
/* CIDR parsing and matching. */
#include "proto/cidr.h"
#include "test.h"

TEST_IMPL(cidr_parse_table)
{
	static const struct {
		const char *in;
		int ok;
		int family;
		unsigned prefix;
	} cases[] = {
	    {"127.0.0.1", 1, 4, 32},
	    {"127.0.0.0/8", 1, 4, 8},
	    {"0.0.0.0/0", 1, 4, 0},
	    {"::1", 1, 6, 128},
	    {"::/0", 1, 6, 0},
	    {"2001:db8::/32", 1, 6, 32},
	    {"10.0.0.0/33", 0, 0, 0},
	    {"::/129", 0, 0, 0},
	    {"10.0.0.0/", 0, 0, 0},
	    {"10.0.0.0/a", 0, 0, 0},
	    {"", 0, 0, 0},
	    {"example.com", 0, 0, 0},
	    {"1.2.3.4/0008", 0, 0, 0},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct cidr c;
		int rc = cidr_parse(cases[i].in, &c);
		if (!cases[i].ok) {
			ASSERT_NE(rc, 0);
			continue;
		}
		ASSERT_EQ(rc, 0);
		ASSERT_EQ(c.family, cases[i].family);
		ASSERT_EQ(c.prefix, cases[i].prefix);
	}
}

TEST_IMPL(cidr_match_table)
{
	struct cidr_list l = {0};
	ASSERT_EQ(cidr_list_add(&l, "127.0.0.0/8"), 0);
	ASSERT_EQ(cidr_list_add(&l, "192.168.1.0/24"), 0);
	ASSERT_EQ(cidr_list_add(&l, "2001:db8::/32"), 0);
	ASSERT_NE(cidr_list_add(&l, "bogus"), 0);
	ASSERT_EQ(l.n, 3);
	static const struct {
		const char *addr;
		int want;
	} cases[] = {
	    {"127.0.0.1", 1},	{"127.255.255.254", 1},	 {"128.0.0.1", 0},     {"192.168.1.77", 1},
	    {"192.168.2.1", 0}, {"::ffff:127.0.0.1", 1}, {"2001:db8:1::5", 1}, {"2001:db9::1", 0},
	    {"::1", 0},		{"not-an-ip", 0},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		if (cidr_list_match_str(&l, cases[i].addr) != cases[i].want)
			TEST_FAIL("%s: want %d", cases[i].addr, cases[i].want);
	}
	cidr_list_free(&l);
}

/* Fuzz finding (fuzz/corpus/cidr/crash-v4-mapped-entry-never-matches): an IPv4-mapped IPv6
 * entry was kept as IPv6 while the matcher reads mapped peers as IPv4, so it matched nothing. */
TEST_IMPL(cidr_v4_mapped_entry)
{
	static const struct {
		const char *entry, *addr;
		int want;
	} cases[] = {
	    {"::ffff:127.0.0.1", "127.0.0.1", 1},
	    {"::ffff:127.0.0.1", "::ffff:127.0.0.1", 1},
	    {"::ffff:127.0.0.1", "127.0.0.2", 0},
	    {"::ffff:10.0.0.0/104", "10.200.0.1", 1},
	    {"::ffff:10.0.0.0/104", "::ffff:10.1.2.3", 1},
	    {"::ffff:10.0.0.0/104", "11.0.0.1", 0},
	    {"::ffff:0.0.0.0/96", "192.0.2.1", 1},
	    {"::ffff:0:0/95", "2001:db8::1", 0},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct cidr_list l = {0};
		ASSERT_EQ(cidr_list_add(&l, cases[i].entry), 0);
		if (cidr_list_match_str(&l, cases[i].addr) != cases[i].want)
			TEST_FAIL("%s vs %s: want %d", cases[i].entry, cases[i].addr,
				  cases[i].want);
		cidr_list_free(&l);
	}
	struct cidr c;
	ASSERT_EQ(cidr_parse("::ffff:10.0.0.0/104", &c), 0);
	ASSERT_EQ(c.family, 4);
	ASSERT_EQ(c.prefix, 8);
	ASSERT_EQ(c.addr[0], 10);
	ASSERT_EQ(cidr_parse("::ffff:0:0/95", &c), 0);
	ASSERT_EQ(c.family, 6);
	ASSERT_EQ(c.prefix, 95);
}
