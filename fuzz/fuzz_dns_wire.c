/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `dns_wire`: the DNS answer parser the resolver runs on every reply, and
 * the routing-name helpers fed from what it decodes. Invariants: the parser returns 0 or
 * -EBADMSG (with a reason and a position inside the message), decoded names are
 * NUL-terminated and bounded, counts stay within their arrays, TTLs never have the top bit
 * set, a message without records has TTL 0, and every kept record's TTL is at least the
 * answer's. Input: one DNS message. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "proto/dns_name.h"
#include "proto/dns_wire.h"
#include "fuzz_check.h"

static void fz_names(const struct dns_wire_answer *a)
{
	const char *names[DNS_WIRE_MAX_RECORDS] = {NULL};
	char site[256], norm[256];
	size_t n = 0;
	struct sockaddr_storage ss;

	for (size_t i = 0; i < a->nrr; i++) {
		if (a->qtype != DNS_WIRE_T_MX)
			break;
		names[n++] = a->rr[i].name;
		if (dns_name_normalize(a->rr[i].name, norm, sizeof(norm)) == 0)
			CHECK(strlen(norm) <= 253);
		CHECK(dns_literal_parse(a->rr[i].name, &ss) <= 1);
	}
	int rc = dns_site_name(names, n, site, sizeof(site));
	CHECK(rc == -ENOSPC || (rc >= 0 && (size_t)rc == strlen(site)));
	if (n) {
		unsigned prefs[DNS_WIRE_MAX_RECORDS];
		size_t order[DNS_WIRE_MAX_RECORDS];
		uint64_t rng = 1;
		for (size_t i = 0; i < n; i++)
			prefs[i] = a->rr[i].preference;
		dns_pref_order(prefs, n, order, &rng);
		for (size_t i = 1; i < n; i++)
			CHECK(prefs[order[i - 1]] <= prefs[order[i]]);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct dns_wire_answer a;
	int rc = dns_wire_parse(data, size, &a);
	CHECK(rc == 0 || rc == -EBADMSG);
	if (rc < 0) {
		CHECK(a.error != NULL && a.error_pos <= size);
		return 0;
	}
	CHECK(a.nrr <= DNS_WIRE_MAX_RECORDS && a.ncname <= DNS_WIRE_MAX_CHAIN);
	CHECK(a.rcode <= 15 && !(a.ttl & 0x80000000u) && !(a.neg_ttl & 0x80000000u));
	CHECK(a.nrr || a.ttl == 0);
	for (size_t i = 0; i <= a.ncname; i++)
		CHECK(strlen(a.names[i]) < DNS_WIRE_NAME_MAX);
	for (size_t i = 0; i < a.nrr; i++) {
		CHECK(strlen(a.rr[i].name) < DNS_WIRE_NAME_MAX);
		CHECK(a.rr[i].ttl >= a.ttl);
		CHECK(a.rr[i].rdoff + a.rr[i].rdlen <= size);
		if (a.qtype == DNS_WIRE_T_TXT) {
			static char txt[65536];
			CHECK(dns_wire_txt_join(data, &a.rr[i], txt) < a.rr[i].rdlen);
		}
	}
	if (dns_wire_is_null_mx(&a))
		CHECK(a.qtype == DNS_WIRE_T_MX && a.nrr && !a.rr[0].name[0]);
	fz_names(&a);
	return 0;
}
