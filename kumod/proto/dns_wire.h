/* SPDX-License-Identifier: Apache-2.0 */
/* DNS messages (RFC 1035 §4): the parser the resolver runs on every answer c-ares hands
 * back, so that it sees TTLs, the SOA of negative answers and root MX exchanges exactly.
 * Owner: the caller owns the struct dns_wire_answer (about 43 KiB: allocate it, do not put
 * it on a small stack). Pure: no I/O, no globals.
 * Callers: kumod/dns (resolver), tests/unit/test_dns.c and fuzz/fuzz_dns_wire.c.
 * Contract: dns_wire_parse() returns 0 with the answer filled in, or -EBADMSG when the
 * message is malformed (a->error is a static reason, a->error_pos the offset of the
 * offending byte). */
#ifndef KUMOD_PROTO_DNS_WIRE_H
#define KUMOD_PROTO_DNS_WIRE_H

#include <stddef.h>
#include <stdint.h>

enum dns_wire_type {
	DNS_WIRE_T_A = 1,
	DNS_WIRE_T_NS = 2,
	DNS_WIRE_T_CNAME = 5,
	DNS_WIRE_T_SOA = 6,
	DNS_WIRE_T_PTR = 12,
	DNS_WIRE_T_MX = 15,
	DNS_WIRE_T_TXT = 16,
	DNS_WIRE_T_AAAA = 28,
};

enum dns_wire_rcode {
	DNS_WIRE_NOERROR = 0,
	DNS_WIRE_FORMERR = 1,
	DNS_WIRE_SERVFAIL = 2,
	DNS_WIRE_NXDOMAIN = 3,
	DNS_WIRE_NOTIMP = 4,
	DNS_WIRE_REFUSED = 5,
};

/* A name in presentation form: lower-case, labels joined by '.', no trailing dot, the root
 * is "". Label bytes other than [0x21-0x7e] and '.', '\\' are written as \DDD (as dig
 * does), so a 255-octet wire name fits. */
#define DNS_WIRE_NAME_MAX 1024
/* Records of the question's type kept per answer; further ones are counted in nskipped. */
#define DNS_WIRE_MAX_RECORDS 32
/* CNAME hops followed from the question name. */
#define DNS_WIRE_MAX_CHAIN 8

struct dns_wire_rr {
	uint32_t ttl;
	uint16_t preference;	      /* MX */
	uint8_t addr[16];	      /* A: 4 bytes, AAAA: 16 */
	char name[DNS_WIRE_NAME_MAX]; /* MX exchange, PTR/CNAME/NS target */
	size_t rdoff;		      /* the record's data in the message (TXT: checked to be */
	uint16_t rdlen;		      /* a sequence of character-strings) */
};

struct dns_wire_answer {
	unsigned rcode;	  /* enum dns_wire_rcode (4 bits) */
	int truncated;	  /* TC set */
	uint16_t qtype;	  /* the question's type */
	size_t nrr;	  /* records of qtype kept in rr[] */
	size_t nskipped;  /* records of qtype beyond DNS_WIRE_MAX_RECORDS */
	size_t ncname;	  /* CNAME hops followed: names[1..ncname] */
	uint32_t ttl;	  /* smallest TTL of the records and of the CNAMEs followed; 0 if none */
	int has_soa;	  /* an SOA in the authority section (negative answers) */
	uint32_t neg_ttl; /* min(SOA TTL, SOA MINIMUM) (RFC 2308 §5) when has_soa */
	const char *error;
	size_t error_pos;
	/* names[0] is the question name; names[ncname] the canonical name. The records kept
	 * are those of qtype owned by one of these names, in message order. */
	char names[DNS_WIRE_MAX_CHAIN + 1][DNS_WIRE_NAME_MAX];
	struct dns_wire_rr rr[DNS_WIRE_MAX_RECORDS];
};

/* Parses one complete message (header, one question, answer and authority sections; the
 * additional section is not read). TTLs with the top bit set count as 0 (RFC 2181 §8). */
int dns_wire_parse(const uint8_t *msg, size_t len, struct dns_wire_answer *a);

/* Reads the possibly compressed name at msg[off] into out (DNS_WIRE_NAME_MAX bytes, see
 * above). Compression pointers must point backwards (no loops). Returns the bytes the name
 * occupies at off (a pointer counts 2), or -EBADMSG. */
int dns_wire_name(const uint8_t *msg, size_t len, size_t off, char *out);

/* A TXT record's character-strings joined with nothing between them (as KumoMTA's
 * lookup_txt does) into out, which must hold r->rdlen bytes; msg is the message the record
 * was parsed from. Returns the length written (the bytes may include NUL). */
size_t dns_wire_txt_join(const uint8_t *msg, const struct dns_wire_rr *r, char *out);

/* 1 when an MX answer is a null MX (RFC 7505): at least one record and every exchange is
 * the root. */
int dns_wire_is_null_mx(const struct dns_wire_answer *a);

/* "A", "AAAA", "MX", ... or "TYPE<n>" in buf (at least 12 bytes). */
const char *dns_wire_type_name(unsigned type, char *buf);

#endif
