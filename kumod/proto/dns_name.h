/* SPDX-License-Identifier: Apache-2.0 */
/* Names for mail routing: domain normalisation, address literals, MX preference order and
 * KumoMTA's site-name rollup (the ready-queue key shared by domains with the same MX hosts).
 * Pure: no I/O, no globals; randomness comes from the caller's state.
 * Callers: kumod/dns (resolver), tools/kumo-dig, tests/unit/test_dns.c. */
#ifndef KUMOD_PROTO_DNS_NAME_H
#define KUMOD_PROTO_DNS_NAME_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Writes name lower-cased without one trailing dot into out (outlen >= 254 suffices).
 * Returns 0, or -EINVAL when the name is empty, has an empty label, a label over 63 or a
 * total over 253 characters, or a byte that cannot be in a host name on the wire (controls,
 * space, '[', ']', '\\', DEL). Bytes >= 0x80 pass unchanged (no IDNA conversion). */
int dns_name_normalize(const char *name, char *out, size_t outlen);

/* Recognises an address literal: "[1.2.3.4]", "[IPv6:2001:db8::1]" (RFC 5321 §4.1.3; the
 * tag is case-insensitive; "[2001:db8::1]" is accepted too) or a bare IPv4/IPv6 address.
 * Returns 1 and fills ss (port 0) for a literal, 0 when s is not one (a name), -EINVAL for a
 * bracketed form that does not hold a valid address. */
int dns_literal_parse(const char *s, struct sockaddr_storage *ss);

/* KumoMTA's reverse_ip / ptr_host: the address ip (IPv4 or IPv6 text, nothing else) with
 * its octets (IPv4) or hex nibbles (IPv6, lower case) in reverse order, dot-separated,
 * followed by ".in-addr.arpa" / ".ip6.arpa" when ptr is set: "127.0.0.1" -> "1.0.0.127".
 * Returns the length written, -EINVAL when ip is not an address, -ENOSPC when out is too
 * small (DNS_REVERSE_MAX bytes always suffice). */
#define DNS_REVERSE_MAX 80
int dns_reverse_ip(const char *ip, int ptr, char *out, size_t outlen);

/* The address part of an IP or socket address as KumoMTA's rbl_lookup takes it: "1.2.3.4",
 * "1.2.3.4:25", "::1", "[::1]" or "[::1]:25" (a port, when present, must be 1-5 digits).
 * Writes the bare address into out (INET6_ADDRSTRLEN bytes suffice); returns 0 or -EINVAL. */
int dns_ip_of_socket(const char *s, char *out, size_t outlen);

/* Fills order[0..n) with the indexes of prefs sorted by ascending preference; indexes of
 * equal preference are shuffled with *rng (RFC 5321 §5.1) or kept in input order when rng is
 * NULL. *rng is any non-zero seed, advanced on use. */
void dns_pref_order(const unsigned *prefs, size_t n, size_t *order, uint64_t *rng);

/* Shuffles items in place (Fisher-Yates): n items of size bytes, tmp has size bytes. */
void dns_shuffle(void *items, size_t n, size_t size, void *tmp, uint64_t *rng);

/* The next value of the caller's xorshift64* state. */
uint64_t dns_rand(uint64_t *rng);

/* KumoMTA's MX rollup: names lower-cased, sorted by their labels read from the root and
 * de-duplicated; at each label position (from the root) the distinct labels in that order
 * become "x" for one or "(x|y)" for several, with "?" appended when some name has no label
 * there; positions joined with '.' and a trailing '.' (absolute name, as our site names are).
 * Examples: {mx1.a.com, mx2.a.com} -> "(mx1|mx2).a.com.";
 * {gmail-smtp-in.l.google.com, alt1...alt4.gmail-smtp-in.l.google.com} ->
 * "(alt1|alt2|alt3|alt4)?.gmail-smtp-in.l.google.com.".
 * Names that do not normalise are left out. Returns the length written, or -ENOSPC when out
 * was too small (out then holds a NUL-terminated truncation), "" for no names. */
int dns_site_name(const char *const *names, size_t n, char *out, size_t outlen);

#endif
