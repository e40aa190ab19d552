/* SPDX-License-Identifier: Apache-2.0 */
/* DNS message parser: question, CNAME chain, records of the asked type, SOA of negative
 * answers. */
#include "proto/dns_wire.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define DNS_HDR_LEN 12
#define DNS_CLASS_IN 1
#define DNS_NAME_WIRE_MAX 255
#define DNS_MAX_JUMPS 64

struct rr_hdr {
	uint16_t type, class;
	uint32_t ttl;
	size_t rdoff;
	uint16_t rdlen;
};

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int fail(struct dns_wire_answer *a, const char *why, size_t pos)
{
	a->error = why;
	a->error_pos = pos;
	return -EBADMSG;
}

/* Appends one label in presentation form; returns the new output length. */
static size_t put_label(char *out, size_t o, const uint8_t *lab, size_t n)
{
	if (o)
		out[o++] = '.';
	for (size_t i = 0; i < n; i++) {
		uint8_t c = lab[i];
		if (c >= 'A' && c <= 'Z')
			out[o++] = (char)(c - 'A' + 'a');
		else if (c > 0x20 && c < 0x7f && c != '.' && c != '\\')
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, 5, "\\%03u", c);
	}
	return o;
}

int dns_wire_name(const uint8_t *msg, size_t len, size_t off, char *out)
{
	size_t pos = off, used = 0, o = 0, wire = 1;
	size_t limit = off; /* a pointer must go before every place read so far */
	int jumps = 0;

	out[0] = 0;
	for (;;) {
		if (pos >= len)
			return -EBADMSG;
		uint8_t c = msg[pos];
		if ((c & 0xc0) == 0xc0) {
			if (pos + 1 >= len || ++jumps > DNS_MAX_JUMPS)
				return -EBADMSG;
			size_t ptr = (size_t)(c & 0x3f) << 8 | msg[pos + 1];
			if (!used)
				used = pos + 2 - off;
			if (ptr >= limit)
				return -EBADMSG;
			pos = limit = ptr;
			continue;
		}
		if (c & 0xc0)
			return -EBADMSG; /* extended label types (RFC 6891 §5) are not used */
		if (c == 0)
			break;
		wire += (size_t)c + 1;
		if (wire > DNS_NAME_WIRE_MAX || pos + 1 + c > len)
			return -EBADMSG;
		o = put_label(out, o, msg + pos + 1, c);
		pos += (size_t)c + 1;
	}
	out[o] = 0;
	if (!used)
		used = pos + 1 - off;
	return (int)used;
}

/* Reads an RR header at *pos (owner into owner when not NULL) and moves *pos past the
 * record. */
static int rr_next(const uint8_t *msg, size_t len, size_t *pos, char *owner, struct rr_hdr *h,
		   struct dns_wire_answer *a)
{
	char scratch[DNS_WIRE_NAME_MAX];
	int n = dns_wire_name(msg, len, *pos, owner ? owner : scratch);
	if (n < 0)
		return fail(a, "bad record owner name", *pos);
	size_t p = *pos + (size_t)n;
	if (p + 10 > len)
		return fail(a, "truncated record header", p);
	h->type = get16(msg + p);
	h->class = get16(msg + p + 2);
	h->ttl = get32(msg + p + 4);
	if (h->ttl & 0x80000000u)
		h->ttl = 0;
	h->rdlen = get16(msg + p + 8);
	h->rdoff = p + 10;
	if (h->rdoff + h->rdlen > len)
		return fail(a, "record data beyond the message", h->rdoff);
	*pos = h->rdoff + h->rdlen;
	return 0;
}

/* A name inside rdata that must end exactly at rdoff + rdlen. */
static int rdata_name(const uint8_t *msg, size_t len, size_t off, size_t end, char *out)
{
	int n = dns_wire_name(msg, len, off, out);
	if (n < 0 || off + (size_t)n != end)
		return -EBADMSG;
	return 0;
}

static int chain_has(const struct dns_wire_answer *a, const char *name)
{
	for (size_t i = 0; i <= a->ncname; i++)
		if (!strcmp(a->names[i], name))
			return 1;
	return 0;
}

/* Follows CNAMEs from the question name through the answer section (in any order); stops
 * at DNS_WIRE_MAX_CHAIN hops or at the first repeated name. */
static int follow_chain(const uint8_t *msg, size_t len, size_t an_off, unsigned ancount,
			struct dns_wire_answer *a)
{
	char owner[DNS_WIRE_NAME_MAX];
	struct rr_hdr h;

	while (a->ncname < DNS_WIRE_MAX_CHAIN) {
		char *next = a->names[a->ncname + 1];
		size_t pos = an_off;
		int found = 0;
		for (unsigned i = 0; i < ancount && !found; i++) {
			if (rr_next(msg, len, &pos, owner, &h, a) < 0)
				return -EBADMSG;
			if (h.type != DNS_WIRE_T_CNAME || h.class != DNS_CLASS_IN ||
			    strcmp(owner, a->names[a->ncname]))
				continue;
			if (rdata_name(msg, len, h.rdoff, h.rdoff + h.rdlen, next) < 0)
				return fail(a, "bad CNAME target", h.rdoff);
			found = 1;
			if (h.ttl < a->ttl)
				a->ttl = h.ttl;
		}
		if (!found || chain_has(a, next))
			return 0;
		a->ncname++;
	}
	return 0;
}

/* TXT data is one or more <length, bytes> strings filling the record exactly. */
static int txt_check(const uint8_t *p, size_t n)
{
	if (!n)
		return -EBADMSG;
	for (size_t o = 0; o < n; o += 1 + (size_t)p[o])
		if (o + 1 + p[o] > n)
			return -EBADMSG;
	return 0;
}

size_t dns_wire_txt_join(const uint8_t *msg, const struct dns_wire_rr *r, char *out)
{
	const uint8_t *p = msg + r->rdoff;
	size_t w = 0;
	for (size_t o = 0; o < r->rdlen; o += 1 + (size_t)p[o]) {
		memcpy(out + w, p + o + 1, p[o]);
		w += p[o];
	}
	return w;
}

static int take_rr(const uint8_t *msg, size_t len, const struct rr_hdr *h,
		   struct dns_wire_answer *a)
{
	if (a->nrr == DNS_WIRE_MAX_RECORDS) {
		a->nskipped++;
		return 0;
	}
	struct dns_wire_rr *r = &a->rr[a->nrr];
	memset(r, 0, sizeof(*r));
	r->ttl = h->ttl;
	r->rdoff = h->rdoff;
	r->rdlen = h->rdlen;
	switch (h->type) {
	case DNS_WIRE_T_A:
		if (h->rdlen != 4)
			return fail(a, "A record is not 4 bytes", h->rdoff);
		memcpy(r->addr, msg + h->rdoff, 4);
		break;
	case DNS_WIRE_T_AAAA:
		if (h->rdlen != 16)
			return fail(a, "AAAA record is not 16 bytes", h->rdoff);
		memcpy(r->addr, msg + h->rdoff, 16);
		break;
	case DNS_WIRE_T_MX:
		if (h->rdlen < 3)
			return fail(a, "MX record too short", h->rdoff);
		r->preference = get16(msg + h->rdoff);
		if (rdata_name(msg, len, h->rdoff + 2, h->rdoff + h->rdlen, r->name) < 0)
			return fail(a, "bad MX exchange", h->rdoff + 2);
		break;
	case DNS_WIRE_T_TXT:
		if (txt_check(msg + h->rdoff, h->rdlen) < 0)
			return fail(a, "TXT character-string overruns the record", h->rdoff);
		break;
	case DNS_WIRE_T_CNAME:
	case DNS_WIRE_T_NS:
	case DNS_WIRE_T_PTR:
		if (rdata_name(msg, len, h->rdoff, h->rdoff + h->rdlen, r->name) < 0)
			return fail(a, "bad name in record", h->rdoff);
		break;
	default:
		break; /* counted; data not decoded */
	}
	if (h->ttl < a->ttl)
		a->ttl = h->ttl;
	a->nrr++;
	return 0;
}

static int collect(const uint8_t *msg, size_t len, size_t *pos, unsigned ancount,
		   struct dns_wire_answer *a)
{
	char owner[DNS_WIRE_NAME_MAX];
	struct rr_hdr h;

	for (unsigned i = 0; i < ancount; i++) {
		if (rr_next(msg, len, pos, owner, &h, a) < 0)
			return -EBADMSG;
		if (h.type != a->qtype || h.class != DNS_CLASS_IN || !chain_has(a, owner))
			continue;
		if (take_rr(msg, len, &h, a) < 0)
			return -EBADMSG;
	}
	return 0;
}

static int authority(const uint8_t *msg, size_t len, size_t pos, unsigned nscount,
		     struct dns_wire_answer *a)
{
	char name[DNS_WIRE_NAME_MAX];
	struct rr_hdr h;

	for (unsigned i = 0; i < nscount; i++) {
		if (rr_next(msg, len, &pos, NULL, &h, a) < 0)
			return -EBADMSG;
		if (h.type != DNS_WIRE_T_SOA || a->has_soa)
			continue;
		size_t p = h.rdoff, end = h.rdoff + h.rdlen;
		for (int k = 0; k < 2; k++) { /* MNAME, RNAME */
			int n = dns_wire_name(msg, len, p, name);
			if (n < 0 || p + (size_t)n > end)
				return fail(a, "bad SOA name", p);
			p += (size_t)n;
		}
		if (p + 20 != end)
			return fail(a, "bad SOA length", p);
		uint32_t minimum = get32(msg + p + 16);
		a->has_soa = 1;
		a->neg_ttl = h.ttl < minimum ? h.ttl : minimum;
		if (a->neg_ttl & 0x80000000u)
			a->neg_ttl = 0;
	}
	return 0;
}

int dns_wire_parse(const uint8_t *msg, size_t len, struct dns_wire_answer *a)
{
	a->rcode = 0;
	a->truncated = 0;
	a->qtype = 0;
	a->nrr = a->nskipped = a->ncname = 0;
	a->ttl = UINT32_MAX;
	a->has_soa = 0;
	a->neg_ttl = 0;
	a->error = NULL;
	a->error_pos = 0;
	a->names[0][0] = 0;
	if (len < DNS_HDR_LEN)
		return fail(a, "shorter than a DNS header", len);
	uint16_t flags = get16(msg + 2);
	a->truncated = !!(flags & 0x0200);
	a->rcode = flags & 0x000f;
	unsigned qdcount = get16(msg + 4), ancount = get16(msg + 6), nscount = get16(msg + 8);
	if (qdcount != 1)
		return fail(a, "not exactly one question", 4);
	int n = dns_wire_name(msg, len, DNS_HDR_LEN, a->names[0]);
	if (n < 0)
		return fail(a, "bad question name", DNS_HDR_LEN);
	size_t pos = DNS_HDR_LEN + (size_t)n;
	if (pos + 4 > len)
		return fail(a, "truncated question", pos);
	a->qtype = get16(msg + pos);
	pos += 4;
	if (a->qtype != DNS_WIRE_T_CNAME && follow_chain(msg, len, pos, ancount, a) < 0)
		return -EBADMSG;
	if (collect(msg, len, &pos, ancount, a) < 0)
		return -EBADMSG;
	if (authority(msg, len, pos, nscount, a) < 0)
		return -EBADMSG;
	if (!a->nrr)
		a->ttl = 0;
	return 0;
}

int dns_wire_is_null_mx(const struct dns_wire_answer *a)
{
	if (a->qtype != DNS_WIRE_T_MX || !a->nrr)
		return 0;
	for (size_t i = 0; i < a->nrr; i++)
		if (a->rr[i].name[0])
			return 0;
	return 1;
}

const char *dns_wire_type_name(unsigned type, char *buf)
{
	switch (type) {
	case DNS_WIRE_T_A:
		return "A";
	case DNS_WIRE_T_NS:
		return "NS";
	case DNS_WIRE_T_CNAME:
		return "CNAME";
	case DNS_WIRE_T_SOA:
		return "SOA";
	case DNS_WIRE_T_PTR:
		return "PTR";
	case DNS_WIRE_T_MX:
		return "MX";
	case DNS_WIRE_T_TXT:
		return "TXT";
	case DNS_WIRE_T_AAAA:
		return "AAAA";
	default:
		snprintf(buf, 12, "TYPE%u", type & 0xffff);
		return buf;
	}
}
