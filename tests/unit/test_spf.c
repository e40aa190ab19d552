/* SPDX-License-Identifier: Apache-2.0 */
/* SPF record parsing, macro expansion and address matching
 * (kumod/proto/spf.c); RFC 7208 7.4's macro examples among them. */
#include <arpa/inet.h>

#include "base/buf.h"
#include "proto/spf.h"
#include "test.h"

static void ctx_rfc(struct spf_macro_ctx *c, int v6)
{
	memset(c, 0, sizeof(*c));
	c->sender = "strong-bad@email.example.com";
	c->domain = "email.example.com";
	c->v6 = v6;
	if (v6)
		inet_pton(AF_INET6, "2001:db8::cb01", c->ip);
	else
		inet_pton(AF_INET, "192.0.2.3", c->ip);
}

static void expands(int v6, const char *spec, const char *want)
{
	struct spf_macro_ctx c;
	ctx_rfc(&c, v6);
	struct buf out;
	char err[128] = "";
	buf_init(&out);
	int rc = spf_macro_expand(spec, strlen(spec), &c, 0, &out, err, sizeof(err));
	if (rc != 0)
		TEST_FAIL("%s: %s", spec, err);
	ASSERT_STR_EQ(buf_cstr(&out), want);
	buf_free(&out);
}

TEST_IMPL(spf_macro_rfc7208_examples)
{
	expands(0, "%{s}", "strong-bad@email.example.com");
	expands(0, "%{o}", "email.example.com");
	expands(0, "%{d}", "email.example.com");
	expands(0, "%{d4}", "email.example.com");
	expands(0, "%{d3}", "email.example.com");
	expands(0, "%{d2}", "example.com");
	expands(0, "%{d1}", "com");
	expands(0, "%{dr}", "com.example.email");
	expands(0, "%{d2r}", "example.email");
	expands(0, "%{l}", "strong-bad");
	expands(0, "%{l-}", "strong.bad");
	expands(0, "%{lr}", "strong-bad");
	expands(0, "%{lr-}", "bad.strong");
	expands(0, "%{l1r-}", "strong");
	expands(0, "%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com");
	expands(0, "%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com");
	expands(0, "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}",
		"bad.strong.lp.3.2.0.192.in-addr._spf.example.com");
	expands(0, "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}",
		"3.2.0.192.in-addr.strong.lp._spf.example.com");
	expands(0, "%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net");
	expands(
	    1, "%{ir}.%{v}._spf.%{d2}",
	    "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com");
	/* escapes and URL-encoding of an upper-case letter */
	expands(0, "a%%b%_c%-d", "a%b c%20d");
	expands(0, "%{L}", "strong-bad");
	expands(0, "%{p}.%{h}", "unknown.unknown");
}

TEST_IMPL(spf_macro_errors_and_limits)
{
	static const char *const bad[] = {"%",	  "%{",	  "%{d", "%{x}",     "%{d0}", "%{c}",
					  "%{t}", "%{r}", "%a",	 "%{d1234}", "a b"};
	struct spf_macro_ctx c;
	ctx_rfc(&c, 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct buf out;
		char err[128] = "";
		buf_init(&out);
		ASSERT_EQ(spf_macro_expand(bad[i], strlen(bad[i]), &c, 0, &out, err, sizeof(err)),
			  -1);
		ASSERT(err[0]);
		ASSERT_EQ(out.len, 0);
		buf_free(&out);
	}
	/* c, r and t only in an explanation */
	struct buf out;
	char err[128];
	buf_init(&out);
	c.receiver = "mx.example.org";
	c.now = 1700000000;
	ASSERT_EQ(spf_macro_expand("%{c} %{r} %{t}", 14, &c, 1, &out, err, sizeof(err)), 0);
	ASSERT_STR_EQ(buf_cstr(&out), "192.0.2.3 mx.example.org 1700000000");
	/* a result over 253 octets loses labels on the left */
	buf_reset(&out);
	char longname[400];
	memset(longname, 0, sizeof(longname));
	for (int i = 0; i < 30; i++)
		strcat(longname, "abcdefghi.");
	strcat(longname, "example.com");
	c.domain = longname;
	ASSERT_EQ(spf_macro_expand("%{d}", 4, &c, 0, &out, err, sizeof(err)), 0);
	ASSERT_LE(out.len, 253);
	ASSERT_GT(out.len, 240);
	ASSERT(strcmp(buf_cstr(&out) + out.len - 11, "example.com") == 0);
	buf_free(&out);
}

static void parses(const char *txt, size_t nterms)
{
	struct spf_record r;
	char err[160] = "";
	if (spf_record_parse(txt, strlen(txt), &r, err, sizeof(err)) != 0)
		TEST_FAIL("%s: %s", txt, err);
	ASSERT_EQ(r.nterms, nterms);
	spf_record_free(&r);
}

TEST_IMPL(spf_record_parse_ok)
{
	struct spf_record r;
	char err[160];
	const char *t =
	    "v=spf1 +a mx/24 -ip4:192.0.2.0/24 ~ip6:2001:db8::/32 "
	    "a:%{d}.example.com//64 mx:mail.example.com/26//48 ?include:_spf.example.org "
	    "exists:%{ir}.%{v}.bl.example.net ptr redirect=_spf.example.com "
	    "exp=explain._spf.%{d} foo=bar -all";
	ASSERT_EQ(spf_record_parse(t, strlen(t), &r, err, sizeof(err)), 0);
	ASSERT_EQ(r.nterms, 10);
	ASSERT_EQ(r.terms[0].mech, SPF_A);
	ASSERT_EQ(r.terms[0].qual, SPF_PASS);
	ASSERT(r.terms[0].domain_spec == NULL);
	ASSERT_EQ(r.terms[0].cidr4, 32);
	ASSERT_EQ(r.terms[0].cidr6, 128);
	ASSERT_EQ(r.terms[1].mech, SPF_MX);
	ASSERT_EQ(r.terms[1].cidr4, 24);
	ASSERT_EQ(r.terms[2].mech, SPF_IP4);
	ASSERT_EQ(r.terms[2].qual, SPF_FAIL);
	ASSERT_EQ(r.terms[2].cidr4, 24);
	ASSERT_EQ(r.terms[2].net[0], 192);
	ASSERT_EQ(r.terms[3].mech, SPF_IP6);
	ASSERT_EQ(r.terms[3].qual, SPF_SOFTFAIL);
	ASSERT_EQ(r.terms[3].cidr6, 32);
	ASSERT_STR_EQ(r.terms[4].domain_spec, "%{d}.example.com");
	ASSERT_EQ(r.terms[4].cidr4, 32);
	ASSERT_EQ(r.terms[4].cidr6, 64);
	ASSERT_STR_EQ(r.terms[5].domain_spec, "mail.example.com");
	ASSERT_EQ(r.terms[5].cidr4, 26);
	ASSERT_EQ(r.terms[5].cidr6, 48);
	ASSERT_EQ(r.terms[6].mech, SPF_INCLUDE);
	ASSERT_EQ(r.terms[6].qual, SPF_NEUTRAL);
	ASSERT_EQ(r.terms[7].mech, SPF_EXISTS);
	ASSERT_EQ(r.terms[8].mech, SPF_PTR);
	ASSERT_EQ(r.terms[9].mech, SPF_ALL);
	ASSERT_STR_EQ(r.terms[9].text, "-all");
	ASSERT_STR_EQ(r.redirect, "_spf.example.com");
	ASSERT_STR_EQ(r.exp, "explain._spf.%{d}");
	spf_record_free(&r);
	parses("v=spf1", 0);
	parses("V=SPF1 ALL", 1);
	parses("v=spf1  -all  ", 1);
	parses("v=spf1 a:example.com. -all", 2);
	ASSERT_EQ(spf_is_record("v=spf10", 7), 0);
	ASSERT_EQ(spf_is_record("v=spf1 -all", 11), 1);
	ASSERT_EQ(spf_is_record("spf2.0/pra", 10), 0);
}

TEST_IMPL(spf_record_parse_malformed)
{
	static const char *const bad[] = {
	    "v=spf2 -all",
	    "v=spf1 -alls",
	    "v=spf1 all:x",
	    "v=spf1 foo",
	    "v=spf1 include",
	    "v=spf1 include:",
	    "v=spf1 exists",
	    "v=spf1 ip4",
	    "v=spf1 ip4:",
	    "v=spf1 ip4:192.0.2.300",
	    "v=spf1 ip4:192.0.2.0/33",
	    "v=spf1 ip4:192.0.2.0/024",
	    "v=spf1 ip6:2001:db8::/129",
	    "v=spf1 ip6:192.0.2.1",
	    "v=spf1 a/33",
	    "v=spf1 a//129",
	    "v=spf1 mx:example.com/",
	    "v=spf1 a:foo",
	    "v=spf1 a:example.123",
	    "v=spf1 include:%{x}.example.com",
	    "v=spf1 redirect=a.example.com redirect=b.example.com",
	    "v=spf1 exp=a.example.com exp=b.example.com",
	    "v=spf1 redirect=",
	    "v=spf1 1bad=x",
	    "v=spf1 foo=%{",
	    "v=spf1 *all",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct spf_record r;
		char err[160] = "";
		if (spf_record_parse(bad[i], strlen(bad[i]), &r, err, sizeof(err)) != -1)
			TEST_FAIL("accepted: %s", bad[i]);
		ASSERT(err[0]);
		ASSERT(r.terms == NULL && r.nterms == 0);
	}
}

TEST_IMPL(spf_ip_match_and_names)
{
	unsigned char ip[16], net[16];
	inet_pton(AF_INET, "192.0.2.77", ip);
	inet_pton(AF_INET, "192.0.2.76", net);
	ASSERT_EQ(spf_ip_match(0, ip, 0, net, 26), 1);
	ASSERT_EQ(spf_ip_match(0, ip, 0, net, 31), 1);
	ASSERT_EQ(spf_ip_match(0, ip, 0, net, 32), 0);
	ASSERT_EQ(spf_ip_match(0, ip, 0, net, 0), 1);
	ASSERT_EQ(spf_ip_match(0, ip, 1, net, 0), 0);
	inet_pton(AF_INET6, "2001:db8::cb01", ip);
	inet_pton(AF_INET6, "2001:db8::", net);
	ASSERT_EQ(spf_ip_match(1, ip, 1, net, 32), 1);
	ASSERT_EQ(spf_ip_match(1, ip, 1, net, 128), 0);
	ASSERT_EQ(spf_domain_valid("example.com"), 1);
	ASSERT_EQ(spf_domain_valid("example.com."), 1);
	ASSERT_EQ(spf_domain_valid("com"), 0);
	ASSERT_EQ(spf_domain_valid("a..com"), 0);
	ASSERT_EQ(spf_domain_valid(""), 0);
	ASSERT_EQ(spf_domain_valid("192.0.2.1"), 0);
	ASSERT_EQ(spf_domain_valid("2.1.example.123"), 0);
	ASSERT_EQ(spf_domain_valid("1.0.192.in-addr.arpa"), 1);
	ASSERT_STR_EQ(spf_result_name(SPF_SOFTFAIL), "softfail");
	ASSERT_STR_EQ(spf_result_name(SPF_PERMERROR), "permerror");
}
