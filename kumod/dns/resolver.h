/* SPDX-License-Identifier: Apache-2.0 */
/* Asynchronous DNS for delivery: c-ares driven by the libuv loop (uv_poll
 * per c-ares socket, one uv_timer for its timeouts), MX then A/AAAA with a
 * TTL cache. Every query is traced (dns_query/dns_answer) and every lookup
 * is a task with a phase.
 * Callbacks always run on the loop thread, never synchronously inside the
 * call that started the lookup (a cache hit is delivered on the next loop
 * turn).
 * Callers: kumod/queue (ready-queue routing), kumod/lua (configure), tools. */
#ifndef KUMOD_DNS_RESOLVER_H
#define KUMOD_DNS_RESOLVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

enum dns_status {
	DNS_OK = 0,
	DNS_NULL_MX,  /* RFC 7505 "0 ." : permanent failure, do not deliver */
	DNS_NO_HOST,  /* NXDOMAIN / no address at all: permanent failure */
	DNS_TEMPFAIL, /* SERVFAIL, timeout, refused, network: transient */
};

#define DNS_MAX_ADDRS 16

struct dns_host {
	char *name; /* MX exchange or the domain for an implicit MX */
	unsigned preference;
	size_t naddrs;
	struct sockaddr_storage addrs[DNS_MAX_ADDRS]; /* port 0; AAAA then A order as found */
};

struct dns_mx_result {
	enum dns_status status;
	char error[160]; /* human reason when status != DNS_OK */
	int implicit;	 /* no MX record: the domain itself (RFC 5321 §5.1) */
	size_t nhosts;
	struct dns_host *hosts; /* sorted by preference (ties shuffled) */
	uint32_t ttl;		/* smallest TTL seen (of a cached result: the time left) */
	char site_name[256];	/* KumoMTA's rollup of the MX host names with a trailing
				   dot, e.g. "(alt1|alt2|alt3|alt4)?.gmail-smtp-in.l.google.com."
				   (proto/dns_name.h dns_site_name()); an address literal as
				   written; truncated to fit */
};

/* More MX hosts than this are dropped (highest preferences first). */
#define DNS_MX_MAX_HOSTS 16

/* Resolver tuning; dns_options_default() gives the values in brackets. */
struct dns_options {
	unsigned timeout_ms;	/* c-ares timeout of a first try [2000]; later tries double */
	unsigned tries;		/* tries per name server [3] */
	uint32_t max_ttl;	/* cache cap for answers, seconds [3600] */
	uint32_t negative_ttl;	/* NXDOMAIN / no MX / no address: cap on the SOA's negative
				   TTL and the value without one, seconds [300] */
	uint32_t tempfail_ttl;	/* how long a TEMPFAIL is cached, seconds [0 = never] */
	int use_hosts_file;	/* host names are looked up in /etc/hosts (or CARES_HOSTS)
				   before DNS, as KumoMTA's resolver does [1] */
	unsigned mx_timeout_ms; /* overall limit on a delivery MX record query (not its hosts'
				   addresses): TEMPFAIL when it passes [0 = none] */
};

void dns_options_default(struct dns_options *o);
/* Applies options; before dns_init() they are kept for it. Lookups in flight are re-sent
 * on a new c-ares channel. Returns 0 or -1 with err. */
int dns_set_options(const struct dns_options *o, char *err, size_t errlen);

/* Only dns_options.negative_ttl (kumo.dns.set_mx_negative_cache_ttl): applies to results
 * cached from now on; no channel is replaced. */
void dns_set_negative_ttl(uint32_t secs);
/* Only dns_options.mx_timeout_ms (kumo.dns.set_mx_timeout): lookups started from now on. */
void dns_set_mx_timeout(unsigned ms);

/* "OK", "NULL_MX", "NO_HOST", "TEMPFAIL". */
const char *dns_status_name(enum dns_status s);

struct dns_stats {
	uint64_t lookups;    /* dns_resolve_mx/host calls */
	uint64_t cache_hits; /* answered from a cached result */
	uint64_t coalesced;  /* joined an identical lookup in flight */
	uint64_t queries;    /* DNS queries sent */
	uint64_t answers;    /* DNS queries finished, whatever the outcome */
	size_t cached;	     /* results in the cache */
	size_t inflight;     /* queries outstanding */
	size_t mx_active;    /* MX resolutions holding a concurrency slot */
	size_t mx_waiting;   /* MX resolutions waiting for one */
};
void dns_get_stats(struct dns_stats *st);

/* Sets up c-ares on the loop. servers: NULL for /etc/resolv.conf, else a
 * comma list of "ip" or "ip:port" ("[v6]:port"). Returns 0 or -1 with err. */
int dns_init(uv_loop_t *loop, const char *servers, char *err, size_t errlen);
/* Replaces the name servers (kumo.dns.configure_resolver); clears the cache. Lookups in
 * flight are re-sent to the new servers. */
int dns_set_servers(const char *servers, char *err, size_t errlen);
/* Lookups in flight complete with DNS_TEMPFAIL (callbacks run inside this call), c-ares
 * handles are closed (their close callbacks need one more loop run). Idempotent. A lookup
 * started afterwards completes with DNS_TEMPFAIL on a zero timer. */
void dns_shutdown(void);

typedef void (*dns_mx_cb)(void *ctx, const struct dns_mx_result *r);
/* Resolves domain's MX set and the addresses of each host. r is valid only
 * during the callback. A domain literal "[1.2.3.4]" resolves without DNS.
 * cb runs exactly once, never inside this call; identical lookups in flight are
 * joined and answers are cached (see docs/dns.md for the rules). */
void dns_resolve_mx(const char *domain, dns_mx_cb cb, void *ctx);

/* Resolves one host name (or IP literal) to addresses: used for mx_list
 * entries. The result has one host with preference 0. */
void dns_resolve_host(const char *host, dns_mx_cb cb, void *ctx);

/* Record lookups (kumo.dns.lookup_mx/lookup_txt/lookup_ptr/rbl_lookup): the records of one
 * type for a name, as they are: no address resolution, no null-MX or implicit-MX rules.
 * Cached and coalesced like the other lookups (under their own keys). */
enum dns_rr_type {
	DNS_RR_MX,
	DNS_RR_TXT,
	DNS_RR_PTR,
	DNS_RR_A,
};

struct dns_record {
	unsigned preference; /* MX */
	const char *text;    /* MX exchange or PTR target: lower case, no trailing dot, "" for
				the root; TXT: the strings joined; A: the address as text */
	size_t len;	     /* of text (TXT data may hold NUL bytes) */
};

struct dns_records_result {
	enum dns_status status; /* OK (n may be 0: the name has no record of the type), NO_HOST
				   (NXDOMAIN, or not a domain name), TEMPFAIL */
	char error[160];
	uint32_t ttl;
	size_t n;
	const struct dns_record *records; /* in answer order; valid during the callback */
};

typedef void (*dns_records_cb)(void *ctx, const struct dns_records_result *r);
/* cb runs exactly once, never inside this call. */
void dns_lookup_records(const char *name, enum dns_rr_type type, dns_records_cb cb, void *ctx);

/* Named resolvers (kumo.dns.define_resolver), for record and host lookups only (delivery
 * uses the default resolver): servers as for dns_init (NULL: /etc/resolv.conf); the
 * channel takes the options in force now. Defining a name again replaces its servers
 * (lookups in flight are re-sent; the cache is cleared). 0 or -1 with err. */
#define DNS_MAX_NAMED 16
int dns_define_resolver(const char *name, const char *servers, char *err, size_t errlen);
/* The resolver id for dns_*_via (1..), or -1 when no resolver has that name. */
int dns_resolver_find(const char *name);
/* As dns_lookup_records / dns_resolve_host, on resolver rsv (0: the default). Results are
 * cached per resolver. */
void dns_lookup_records_via(unsigned rsv, const char *name, enum dns_rr_type type,
			    dns_records_cb cb, void *ctx);
void dns_resolve_host_via(unsigned rsv, const char *host, dns_mx_cb cb, void *ctx);

/* kumo.dns.set_mx_concurrency_limit: at most n delivery MX resolutions (dns_resolve_mx,
 * from the MX query to the last host address) run at once; the rest wait in FIFO order
 * (task phase WaitingForMxSlot, trace dns_mx_wait, dns_stats.mx_waiting). 0 means 1. */
#define DNS_MX_CONCURRENCY_DEFAULT 128
void dns_set_mx_concurrency_limit(unsigned n);

/* Forgets every cached result (lookups in flight are kept). */
void dns_cache_clear(void);

#endif
