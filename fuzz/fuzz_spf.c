/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `spf`: the SPF record parser and macro expander
 * (kumod/proto/spf.c), i.e. what kumo.spf.check_host reads from any domain's
 * TXT records. Byte 0: bit 0 the client is IPv6, bit 1 expand as an explanation;
 * the rest is a TXT record. Invariants:
 *  - a parsed record has a text for every term, a domain-spec for every include
 *    and exists, prefix lengths within 32/128;
 *  - every domain-spec (and redirect/exp) of a parsed record expands without
 *    error, to at most 253 octets;
 *  - expanding the input itself as a macro-string either fails leaving the
 *    output untouched or succeeds (domain-spec results within 253 octets);
 *  - a failed parse leaves an empty record and names why. */
#include <stdint.h>
#include <string.h>

#include "base/buf.h"
#include "proto/spf.h"
#include "fuzz_check.h"

static void expand_ok(const char *spec, const struct spf_macro_ctx *c, int exp)
{
	struct buf out;
	char err[128];
	buf_init(&out);
	CHECK(spf_macro_expand(spec, strlen(spec), c, exp, &out, err, sizeof(err)) == 0);
	CHECK(exp || out.len <= 253);
	buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 8192)
		return 0;
	struct spf_macro_ctx c = {.sender = "user.name@mail.example.com",
				  .domain = "mail.example.com",
				  .helo = "helo.example.net",
				  .v6 = data[0] & 1,
				  .ip = {192, 0, 2, 1, 0x20, 1, 0xd, 0xb8}};
	int exp = (data[0] & 2) != 0;
	const char *txt = (const char *)data + 1;
	size_t len = size - 1;
	struct spf_record r;
	char err[160] = "";
	if (spf_record_parse(txt, len, &r, err, sizeof(err)) == 0) {
		for (size_t i = 0; i < r.nterms; i++) {
			const struct spf_term *t = &r.terms[i];
			CHECK(t->text != NULL);
			CHECK(t->cidr4 <= 32 && t->cidr6 <= 128);
			if (t->mech == SPF_INCLUDE || t->mech == SPF_EXISTS)
				CHECK(t->domain_spec != NULL);
			if (t->domain_spec)
				expand_ok(t->domain_spec, &c, 0);
		}
		if (r.redirect)
			expand_ok(r.redirect, &c, 0);
		if (r.exp)
			expand_ok(r.exp, &c, 0);
		spf_record_free(&r);
	} else {
		CHECK(err[0] && r.nterms == 0 && r.terms == NULL && !r.redirect && !r.exp);
	}
	struct buf out;
	buf_init(&out);
	buf_appends(&out, "x");
	if (spf_macro_expand(txt, len, &c, exp, &out, err, sizeof(err)) != 0)
		CHECK(out.len == 1);
	else
		CHECK(exp || out.len - 1 <= 253);
	buf_free(&out);
	return 0;
}
