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
	char *name;		 /* MX exchange or the domain for an implicit MX */
	unsigned preference;
	size_t naddrs;
	struct sockaddr_storage addrs[DNS_MAX_ADDRS]; /* port 0; AAAA then A order as found */
};

struct dns_mx_result {
	enum dns_status status;
	char error[160];	 /* human reason when status != DNS_OK */
	int implicit;		 /* no MX record: the domain itself (RFC 5321 §5.1) */
	size_t nhosts;
	struct dns_host *hosts;	 /* sorted by preference (ties shuffled) */
	uint32_t ttl;		 /* smallest TTL seen */
	char site_name[256];	 /* KumoMTA-style site: sorted MX names joined, e.g.
				    "(alt1|alt2).aspmx.l.google.com"-like rollup, or the
				    host list joined with ',' */
};

/* Sets up c-ares on the loop. servers: NULL for /etc/resolv.conf, else a
 * comma list of "ip" or "ip:port" ("[v6]:port"). Returns 0 or -1 with err. */
int dns_init(uv_loop_t *loop, const char *servers, char *err, size_t errlen);
/* Replaces the name servers (kumo.dns.configure_resolver); clears the cache. */
int dns_set_servers(const char *servers, char *err, size_t errlen);
void dns_shutdown(void);

typedef void (*dns_mx_cb)(void *ctx, const struct dns_mx_result *r);
/* Resolves domain's MX set and the addresses of each host. r is valid only
 * during the callback. A domain literal "[1.2.3.4]" resolves without DNS. */
void dns_resolve_mx(const char *domain, dns_mx_cb cb, void *ctx);

/* Resolves one host name (or IP literal) to addresses: used for mx_list
 * entries. The result has one host with preference 0. */
void dns_resolve_host(const char *host, dns_mx_cb cb, void *ctx);

void dns_cache_clear(void);

#endif
