/* SPDX-License-Identifier: Apache-2.0 */
/* DNS answers (proto/dns_wire) and routing names (proto/dns_name): parsing, null MX,
 * literals, preference order, site names. The network side is tests/integration/test_dns.py. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>

#include "proto/dns_name.h"
#include "proto/dns_wire.h"
#include "test.h"

/* Answers produced by the integration test's server (dnslib), id 0x1234. */
#define HEX_TWO_MX                                                                             \
	"1234858000010002000000000374776f047465737400000f0001c00c000f00010000012c00080014036d" \
	"7832c00cc00c000f00010000012c0008000a036d7831c00c"
#define HEX_NULL_MX                                                                            \
	"123485800001000100000000066e756c6c6d78047465737400000f0001c00c000f00010000012c000300" \
	"0000"
#define HEX_NXDOMAIN                                                                           \
	"123485830001000000010000026e78047465737400000f0001c00f0006000100000e100026026e73c00f" \
	"0a686f73746d6173746572c00f0000000100000e1000000258000151800000002d"
#define HEX_CNAME_A                                                                            \
	"12348580000100020000000005616c69617304746573740000010001c00c000500010000003200090674" \
	"6172676574c00cc028000100010000025800047f00001e"
#define HEX_AAAA                                                                              \
	"1234858000010001000000000676366f6e6c79047465737400001c0001c00c001c00010000006400102" \
	"0010db8000000000000000000000006"
#define HEX_NODATA_MX                                                                          \
	"12348580000100000001000008696d706c69636974047465737400000f0001c0150006000100000e1000" \
	"26026e73c0150a686f73746d6173746572c0150000000100000e1000000258000151800000002d"

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
	size_t n = strlen(hex) / 2;
	if (n > cap)
		TEST_FAIL("hex too long");
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
			TEST_FAIL("bad hex at %zu", i);
		out[i] = (uint8_t)v;
	}
	return n;
}

static struct dns_wire_answer *parse_hex(const char *hex, int want_rc)
{
	static uint8_t msg[1024];
	struct dns_wire_answer *a = malloc(sizeof(*a));
	size_t n = unhex(hex, msg, sizeof(msg));
	int rc = dns_wire_parse(msg, n, a);
	if (rc != want_rc)
		TEST_FAIL("parse rc %d, want %d (%s at %zu)", rc, want_rc, a->error ? a->error : "",
			  a->error_pos);
	return a;
}

TEST_IMPL(dns_wire_mx_answer)
{
	struct dns_wire_answer *a = parse_hex(HEX_TWO_MX, 0);
	ASSERT_EQ(a->rcode, DNS_WIRE_NOERROR);
	ASSERT_EQ(a->qtype, DNS_WIRE_T_MX);
	ASSERT_STR_EQ(a->names[0], "two.test");
	ASSERT_EQ(a->nrr, 2);
	ASSERT_EQ(a->rr[0].preference, 20); /* message order; the resolver sorts */
	ASSERT_STR_EQ(a->rr[0].name, "mx2.two.test");
	ASSERT_EQ(a->rr[1].preference, 10);
	ASSERT_STR_EQ(a->rr[1].name, "mx1.two.test");
	ASSERT_EQ(a->ttl, 300);
	ASSERT_EQ(a->has_soa, 0);
	ASSERT_EQ(dns_wire_is_null_mx(a), 0);
	free(a);
}

TEST_IMPL(dns_wire_null_mx)
{
	struct dns_wire_answer *a = parse_hex(HEX_NULL_MX, 0);
	ASSERT_EQ(a->nrr, 1);
	ASSERT_EQ(a->rr[0].preference, 0);
	ASSERT_STR_EQ(a->rr[0].name, "");
	ASSERT_EQ(dns_wire_is_null_mx(a), 1);
	/* a root exchange next to a real one is not a null MX (RFC 7505 §3: misconfigured) */
	a->nrr = 2;
	snprintf(a->rr[1].name, sizeof(a->rr[1].name), "mx.example");
	ASSERT_EQ(dns_wire_is_null_mx(a), 0);
	a->nrr = 0;
	ASSERT_EQ(dns_wire_is_null_mx(a), 0);
	free(a);
}

TEST_IMPL(dns_wire_negative_answers)
{
	struct dns_wire_answer *a = parse_hex(HEX_NXDOMAIN, 0);
	ASSERT_EQ(a->rcode, DNS_WIRE_NXDOMAIN);
	ASSERT_EQ(a->nrr, 0);
	ASSERT_EQ(a->ttl, 0);
	ASSERT_EQ(a->has_soa, 1);
	ASSERT_EQ(a->neg_ttl, 45); /* min(SOA TTL 3600, MINIMUM 45) */
	free(a);
	a = parse_hex(HEX_NODATA_MX, 0);
	ASSERT_EQ(a->rcode, DNS_WIRE_NOERROR);
	ASSERT_EQ(a->nrr, 0);
	ASSERT_EQ(a->has_soa, 1);
	ASSERT_EQ(a->neg_ttl, 45);
	free(a);
}

TEST_IMPL(dns_wire_cname_and_aaaa)
{
	struct dns_wire_answer *a = parse_hex(HEX_CNAME_A, 0);
	ASSERT_EQ(a->ncname, 1);
	ASSERT_STR_EQ(a->names[1], "target.alias.test");
	ASSERT_EQ(a->nrr, 1);
	ASSERT_MEM_EQ(a->rr[0].addr, 4, "\x7f\x00\x00\x1e", 4);
	ASSERT_EQ(a->ttl, 50); /* the CNAME's TTL (50) is below the A's (600) */
	free(a);
	a = parse_hex(HEX_AAAA, 0);
	ASSERT_EQ(a->qtype, DNS_WIRE_T_AAAA);
	ASSERT_EQ(a->nrr, 1);
	ASSERT_MEM_EQ(a->rr[0].addr, 16,
		      "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x06", 16);
	ASSERT_EQ(a->ttl, 100);
	free(a);
}

TEST_IMPL(dns_wire_every_prefix_is_rejected)
{
	uint8_t msg[512];
	struct dns_wire_answer *a = malloc(sizeof(*a));
	static const char *const all[] = {HEX_TWO_MX,  HEX_NULL_MX, HEX_NXDOMAIN,
					  HEX_CNAME_A, HEX_AAAA,    HEX_NODATA_MX};
	for (size_t k = 0; k < ARRAY_SIZE(all); k++) {
		size_t n = unhex(all[k], msg, sizeof(msg));
		for (size_t len = 0; len < n; len++) {
			if (dns_wire_parse(msg, len, a) != -EBADMSG)
				TEST_FAIL("message %zu cut at %zu/%zu parsed", k, len, n);
			ASSERT(a->error != NULL);
			ASSERT_LE(a->error_pos, n);
		}
		ASSERT_EQ(dns_wire_parse(msg, n, a), 0);
	}
	free(a);
}

TEST_IMPL(dns_wire_malformed_table)
{
	static const struct {
		const char *what, *hex;
	} cases[] = {
	    {"no question", "123481800000000000000000"},
	    {"two questions", "1234818000020000000000000000010001"},
	    {"pointer to itself", "123481800001000000000000c00c00010001"},
	    {"forward pointer", "123481800001000000000000c00e000000010001"},
	    {"pointer loop", "1234818000010000000000000161c00c00010001"},
	    {"extended label type", "12348180000100000000000041610000010001"},
	    {"label past the end", "12348180000100000000000005616100010001"},
	    {"A record of 3 bytes",
	     "1234818000010001000000000161000001000101610000010001000000010003010203"},
	    {"rdata past the end",
	     "12348180000100010000000001610000010001016100000100010000000100ff01020304"},
	    {"MX exchange overruns rdata",
	     "123481800001000100000000016100000f0001c00c000f000100000001000300010161"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		uint8_t msg[256];
		struct dns_wire_answer *a = malloc(sizeof(*a));
		size_t n = unhex(cases[i].hex, msg, sizeof(msg));
		if (dns_wire_parse(msg, n, a) != -EBADMSG)
			TEST_FAIL("%s: parsed", cases[i].what);
		ASSERT(a->error != NULL);
		free(a);
	}
}

TEST_IMPL(dns_wire_name_forms)
{
	/* "A.b" with an upper-case byte, a dot and a NUL inside labels, then root */
	static const uint8_t msg[] = {3, 'A', '.', 'b', 2, 0, 'Z', 0};
	char out[DNS_WIRE_NAME_MAX];
	ASSERT_EQ(dns_wire_name(msg, sizeof(msg), 0, out), (int)sizeof(msg));
	ASSERT_STR_EQ(out, "a\\046b.\\000z");
	static const uint8_t root[] = {0};
	ASSERT_EQ(dns_wire_name(root, 1, 0, out), 1);
	ASSERT_STR_EQ(out, "");
	/* 255 octets is the limit: 4 labels of 63 are 257 */
	uint8_t longname[300];
	size_t o = 0;
	for (int l = 0; l < 4; l++) {
		longname[o++] = 63;
		memset(longname + o, 'a', 63);
		o += 63;
	}
	longname[o++] = 0;
	ASSERT_EQ(dns_wire_name(longname, o, 0, out), -EBADMSG);
	longname[3 * 64] = 61; /* 3 x 63 + 61: 255 with the length octets and the root */
	longname[3 * 64 + 62] = 0;
	ASSERT_EQ(dns_wire_name(longname, 3 * 64 + 63, 0, out), 3 * 64 + 63);
	ASSERT_EQ(strlen(out), 3 * 63 + 61 + 3);
}

TEST_IMPL(dns_wire_ttl_top_bit_is_zero)
{
	uint8_t msg[512];
	struct dns_wire_answer *a = malloc(sizeof(*a));
	size_t n = unhex(HEX_AAAA, msg, sizeof(msg));
	/* the answer's TTL sits 4 bytes after its owner pointer, type and class */
	size_t ttl_off = n - 16 - 2 - 4;
	msg[ttl_off] = 0x80;
	ASSERT_EQ(dns_wire_parse(msg, n, a), 0);
	ASSERT_EQ(a->ttl, 0);
	free(a);
}

TEST_IMPL(dns_name_normalize_table)
{
	static const struct {
		const char *in, *want; /* want NULL: -EINVAL */
	} cases[] = {
	    {"Example.COM", "example.com"},
	    {"example.com.", "example.com"},
	    {"a", "a"},
	    {"xn--bcher-kva.example", "xn--bcher-kva.example"},
	    {"_dmarc.example", "_dmarc.example"},
	    {"", NULL},
	    {".", NULL},
	    {"example..com", NULL},
	    {".example.com", NULL},
	    {"example.com..", NULL},
	    {"exa mple.com", NULL},
	    {"example.com:25", NULL},
	    {"[1.2.3.4]", NULL},
	    {"a|b.example", NULL},
	    {"tab\there", NULL},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char out[256];
		int rc = dns_name_normalize(cases[i].in, out, sizeof(out));
		if (!cases[i].want) {
			if (rc != -EINVAL)
				TEST_FAIL("'%s': accepted as '%s'", cases[i].in, out);
			continue;
		}
		ASSERT_EQ(rc, 0);
		ASSERT_STR_EQ(out, cases[i].want);
	}
	char label[80], name[400], out[400];
	memset(label, 'a', 64);
	label[64] = 0;
	ASSERT_EQ(dns_name_normalize(label, out, sizeof(out)), -EINVAL); /* label of 64 */
	label[63] = 0;
	ASSERT_EQ(dns_name_normalize(label, out, sizeof(out)), 0);
	snprintf(name, sizeof(name), "%s.%s.%s.%.61s", label, label, label, label);
	ASSERT_EQ(strlen(name), 253);
	ASSERT_EQ(dns_name_normalize(name, out, sizeof(out)), 0);
	snprintf(name, sizeof(name), "%s.%s.%s.%.62s", label, label, label, label);
	ASSERT_EQ(dns_name_normalize(name, out, sizeof(out)), -EINVAL);
}

TEST_IMPL(dns_literal_table)
{
	static const struct {
		const char *in;
		int rc, family;
		const char *addr;
	} cases[] = {
	    {"[192.0.2.1]", 1, AF_INET, "192.0.2.1"},
	    {"[IPv6:2001:db8::1]", 1, AF_INET6, "2001:db8::1"},
	    {"[ipv6:::1]", 1, AF_INET6, "::1"},
	    {"[2001:db8::2]", 1, AF_INET6, "2001:db8::2"},
	    {"192.0.2.3", 1, AF_INET, "192.0.2.3"},
	    {"::1", 1, AF_INET6, "::1"},
	    {"example.com", 0, 0, NULL},
	    {"1.2.3", 0, 0, NULL},
	    {"[example.com]", -EINVAL, 0, NULL},
	    {"[300.1.1.1]", -EINVAL, 0, NULL},
	    {"[IPv6:192.0.2.1]", -EINVAL, 0, NULL},
	    {"[192.0.2.1", -EINVAL, 0, NULL},
	    {"[]", -EINVAL, 0, NULL},
	    {"[tag:whatever]", -EINVAL, 0, NULL},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct sockaddr_storage ss;
		int rc = dns_literal_parse(cases[i].in, &ss);
		if (rc != cases[i].rc)
			TEST_FAIL("'%s': rc %d, want %d", cases[i].in, rc, cases[i].rc);
		if (rc != 1)
			continue;
		char ip[INET6_ADDRSTRLEN];
		ASSERT_EQ(ss.ss_family, cases[i].family);
		if (ss.ss_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof(ip));
		else
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip,
				  sizeof(ip));
		ASSERT_STR_EQ(ip, cases[i].addr);
		ASSERT_EQ(((struct sockaddr_in *)&ss)->sin_port, 0);
	}
}

TEST_IMPL(dns_pref_order_sorts_and_shuffles_ties)
{
	static const unsigned prefs[] = {20, 10, 10, 30, 10, 20};
	size_t order[6];
	dns_pref_order(prefs, 6, order, NULL);
	static const size_t stable[] = {1, 2, 4, 0, 5, 3};
	for (size_t i = 0; i < 6; i++)
		ASSERT_EQ(order[i], stable[i]);
	uint64_t rng = 42;
	unsigned seen_first[6] = {0};
	for (int round = 0; round < 300; round++) {
		dns_pref_order(prefs, 6, order, &rng);
		for (size_t i = 1; i < 6; i++)
			ASSERT_LE(prefs[order[i - 1]], prefs[order[i]]);
		seen_first[order[0]]++;
	}
	/* each of the three preference-10 records comes first sometimes */
	ASSERT_GT(seen_first[1], 50);
	ASSERT_GT(seen_first[2], 50);
	ASSERT_GT(seen_first[4], 50);
	ASSERT_EQ(seen_first[0] + seen_first[3] + seen_first[5], 0);
	dns_pref_order(prefs, 0, order, &rng); /* empty is fine */
}

TEST_IMPL(dns_site_name_table)
{
	static const struct {
		const char *names[6];
		const char *want;
	} cases[] = {
	    {{"mta5.am0.yahoodns.net", "mta6.am0.yahoodns.net", "mta7.am0.yahoodns.net"},
	     "(mta5|mta6|mta7).am0.yahoodns.net."},
	    {{"mta5.AM0.yahoodns.net", "mta6.am0.yAHOodns.net.", "mta7.am0.yahoodns.net"},
	     "(mta5|mta6|mta7).am0.yahoodns.net."},
	    {{"alt3.gmail-smtp-in.l.google.com", "gmail-smtp-in.l.google.com",
	      "alt1.gmail-smtp-in.l.google.com", "alt4.gmail-smtp-in.l.google.com",
	      "alt2.gmail-smtp-in.l.google.com"},
	     "(alt1|alt2|alt3|alt4)?.gmail-smtp-in.l.google.com."},
	    {{"mx.example.com"}, "mx.example.com."},
	    {{"mx.example.com", "MX.example.com."}, "mx.example.com."},
	    {{"a.x.example", "b.y.example"}, "(a|b).(x|y).example."},
	    {{"example.com", "x.example.com"}, "x?.example.com."},
	    {{"mx1.a.example", "bad name", "mx2.a.example"}, "(mx1|mx2).a.example."},
	    {{NULL}, ""},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		size_t n = 0;
		while (n < 6 && cases[i].names[n])
			n++;
		char out[256];
		int rc = dns_site_name(cases[i].names, n, out, sizeof(out));
		ASSERT_EQ(rc, (int)strlen(cases[i].want));
		ASSERT_STR_EQ(out, cases[i].want);
	}
	const char *two[] = {"mx1.example.com", "mx2.example.com"};
	char small[8];
	ASSERT_EQ(dns_site_name(two, 2, small, sizeof(small)), -ENOSPC);
	ASSERT_STR_EQ(small, "(mx1|mx");
}

TEST_IMPL(dns_shuffle_is_a_permutation)
{
	int v[10], tmp;
	uint64_t rng = 7;
	for (int round = 0; round < 100; round++) {
		for (int i = 0; i < 10; i++)
			v[i] = i;
		dns_shuffle(v, 10, sizeof(int), &tmp, &rng);
		int seen = 0;
		for (int i = 0; i < 10; i++)
			seen |= 1 << v[i];
		ASSERT_EQ(seen, 0x3ff);
	}
}

/* dnslib: two TXT records ("part one, " + "part two" in two strings; one empty string) and a
 * PTR answer. */
#define HEX_TXT                                                                                \
	"1234858000010002000000000374787404746573740000100001c00c001000010000012c00140a706172" \
	"74206f6e652c2008706172742074776fc00c00100001000000c8000100"
#define HEX_PTR                                                                                \
	"1234858000010001000000000131013001300331323707696e2d61646472046172706100000c0001c00c" \
	"000c00010000012c0010096c6f63616c686f7374047465737400"

TEST_IMPL(dns_wire_txt_and_ptr)
{
	static uint8_t msg[1024];
	size_t n = unhex(HEX_TXT, msg, sizeof(msg));
	struct dns_wire_answer *a = malloc(sizeof(*a));
	ASSERT_EQ(dns_wire_parse(msg, n, a), 0);
	ASSERT_EQ(a->qtype, DNS_WIRE_T_TXT);
	ASSERT_EQ(a->nrr, 2);
	ASSERT_EQ(a->ttl, 200);
	char out[256];
	size_t len = dns_wire_txt_join(msg, &a->rr[0], out);
	ASSERT_EQ(len, 18);
	out[len] = 0;
	ASSERT_STR_EQ(out, "part one, part two");
	ASSERT_EQ(dns_wire_txt_join(msg, &a->rr[1], out), 0);
	/* a string whose length runs past the record: the last TXT's length 0 -> 5 */
	msg[n - 1] = 5;
	ASSERT_EQ(dns_wire_parse(msg, n, a), -EBADMSG);
	ASSERT_STR_EQ(a->error, "TXT character-string overruns the record");

	n = unhex(HEX_PTR, msg, sizeof(msg));
	ASSERT_EQ(dns_wire_parse(msg, n, a), 0);
	ASSERT_EQ(a->qtype, DNS_WIRE_T_PTR);
	ASSERT_EQ(a->nrr, 1);
	ASSERT_STR_EQ(a->rr[0].name, "localhost.test");
	free(a);
}

TEST_IMPL(dns_reverse_ip_table)
{
	static const struct {
		const char *ip;
		int ptr;
		const char *want; /* NULL: -EINVAL */
	} cases[] = {
	    {"127.0.0.1", 0, "1.0.0.127"},
	    {"127.0.0.1", 1, "1.0.0.127.in-addr.arpa"},
	    {"192.0.2.10", 0, "10.2.0.192"},
	    {"::1", 0, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0"},
	    {"2001:DB8::1", 1,
	     "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"},
	    {"localhost", 0, NULL},
	    {"1.2.3", 0, NULL},
	    {"[::1]", 0, NULL},
	    {"", 1, NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[DNS_REVERSE_MAX];
		int rc = dns_reverse_ip(cases[i].ip, cases[i].ptr, out, sizeof(out));
		if (!cases[i].want) {
			ASSERT_EQ(rc, -EINVAL);
			continue;
		}
		ASSERT_EQ(rc, (int)strlen(cases[i].want));
		ASSERT_STR_EQ(out, cases[i].want);
	}
	char small[8];
	ASSERT_EQ(dns_reverse_ip("127.0.0.1", 0, small, sizeof(small)), -ENOSPC);
}

TEST_IMPL(dns_ip_of_socket_table)
{
	static const struct {
		const char *in, *want; /* want NULL: -EINVAL */
	} cases[] = {
	    {"127.0.0.2", "127.0.0.2"},
	    {"127.0.0.2:25", "127.0.0.2"},
	    {"::1", "::1"},
	    {"[::1]", "::1"},
	    {"[::1]:2525", "::1"},
	    {"[127.0.0.1]", NULL},
	    {"127.0.0.2:", NULL},
	    {"127.0.0.2:123456", NULL},
	    {"[::1]x", NULL},
	    {"host:25", NULL},
	    {"", NULL},
	    {"1.2.3.4:2a", NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[64];
		int rc = dns_ip_of_socket(cases[i].in, out, sizeof(out));
		if (!cases[i].want) {
			ASSERT_EQ(rc, -EINVAL);
			continue;
		}
		ASSERT_EQ(rc, 0);
		ASSERT_STR_EQ(out, cases[i].want);
	}
}
