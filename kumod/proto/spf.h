/* SPDX-License-Identifier: Apache-2.0 */
/* SPF (RFC 7208) without DNS: the record parser (section 4.6 and 12's
 * grammar), the macro expander (section 7) and address matching against ip4/
 * ip6/a/mx networks. Pure: text in, structs out; evaluation, with its DNS
 * lookups and limits, is the caller's (kumod/lua/lua_spf.c). Callers:
 * lua_spf.c, tests/unit/test_spf.c, fuzz/fuzz_spf.c. */
#ifndef KUMOD_PROTO_SPF_H
#define KUMOD_PROTO_SPF_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

/* check_host() results (RFC 7208 2.6), in KumoMTA's names (spf_result_name). */
enum spf_result {
	SPF_NONE = 0,
	SPF_NEUTRAL,
	SPF_PASS,
	SPF_FAIL,
	SPF_SOFTFAIL,
	SPF_TEMPERROR,
	SPF_PERMERROR,
};

/* "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror". */
const char *spf_result_name(enum spf_result r);

enum spf_mech {
	SPF_ALL = 0,
	SPF_INCLUDE,
	SPF_A,
	SPF_MX,
	SPF_PTR,
	SPF_IP4,
	SPF_IP6,
	SPF_EXISTS,
};

/* "all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists". */
const char *spf_mech_name(enum spf_mech m);

/* One directive: [qualifier] mechanism. */
struct spf_term {
	enum spf_mech mech;
	enum spf_result qual;  /* SPF_PASS, SPF_FAIL, SPF_SOFTFAIL or SPF_NEUTRAL */
	char *domain_spec;     /* include/exists (required), a/mx/ptr (optional: NULL) */
	int cidr4, cidr6;      /* prefix lengths: ip4 and a/mx (cidr4), ip6 and a/mx (cidr6) */
	unsigned char net[16]; /* ip4 (4 bytes) / ip6 network */
	char *text;	       /* the directive as written, e.g. "-all", "ip4:10.0.0.0/8" */
};

struct spf_record {
	size_t nterms;
	struct spf_term *terms;
	char *redirect; /* redirect= domain-spec, or NULL */
	char *exp;	/* exp= domain-spec, or NULL */
};

/* A TXT string is an SPF record: "v=spf1" (any case) alone or followed by
 * SP (RFC 7208 4.5). */
int spf_is_record(const char *txt, size_t len);

/* Parses a record (one TXT record's strings joined). 0 with *out filled
 * (free with spf_record_free), or -1 with why in err: a syntax error is a
 * permerror (RFC 7208 4.6). Unknown modifiers are checked and ignored;
 * redirect and exp may appear once each. */
int spf_record_parse(const char *txt, size_t len, struct spf_record *out, char *err, size_t errlen);
void spf_record_free(struct spf_record *r);

/* What the macros (RFC 7208 7.2) expand to. */
struct spf_macro_ctx {
	const char *sender;    /* <sender> local-part@domain ("postmaster@helo" if empty) */
	const char *domain;    /* <domain> being checked (%{d}) */
	const char *helo;      /* HELO/EHLO name (%{h}), "unknown" when NULL */
	const char *validated; /* %{p}: a validated name of the client, "unknown" when NULL */
	const char *receiver;  /* %{r} (exp only), "unknown" when NULL */
	int64_t now;	       /* %{t} (exp only) */
	int v6;		       /* client address family */
	unsigned char ip[16];  /* client address: 4 or 16 bytes */
};

/* Expands the macro-string spec[0..len) into out (appended). exp: the
 * explanation string context (c, r, t letters allowed). A domain-spec result
 * longer than 253 octets loses labels from the left (RFC 7208 7.3). 0, or -1
 * with why in err (a syntax error: permerror). */
int spf_macro_expand(const char *spec, size_t len, const struct spf_macro_ctx *c, int exp,
		     struct buf *out, char *err, size_t errlen);

/* The client address ip (4 or 16 bytes as v6 says) lies in net/cidr of the
 * same family (an IPv4 client never matches an ip6 network, nor the
 * reverse). */
int spf_ip_match(int v6, const unsigned char *ip, int net_v6, const unsigned char *net, int cidr);

/* A domain name usable as a DNS query: labels of 1..63 octets (a final empty
 * label, i.e. a trailing dot, allowed), at most 253 octets without that dot,
 * at least two labels (RFC 7208 4.3), the last not all digits (so an
 * address expanded from a macro is never resolved as a literal). */
int spf_domain_valid(const char *d);

#endif
