/* SPDX-License-Identifier: Apache-2.0 */
/* kumo-dig: resolves mail routing with kumod's own resolver (kumod/dns: c-ares on libuv,
 * MX rules, cache) and prints what a delivery would use. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "dns/resolver.h"
#include "io/loop.h"

enum {
	DIG_EXIT_OK = 0,
	DIG_EXIT_PERMFAIL = 1,
	DIG_EXIT_TEMPFAIL = 2,
	DIG_EXIT_USAGE = 2,
};

static const char usage[] =
    "Usage: kumo-dig [OPTIONS] QUERY...\n"
    "Resolves mail routing the way kumod does: same resolver, same MX rules, same cache.\n"
    "QUERY is `mx DOMAIN` (MX set, then the addresses of every host) or `host NAME`\n"
    "(addresses, as for mx_list entries). Several queries run one after the other in one\n"
    "process, so a repeated query is answered from the cache. `servers IP[:PORT][,...]`\n"
    "between queries switches name servers and clears the cache, as\n"
    "kumo.dns.configure_resolver does (with --parallel, lookups in flight are re-sent).\n"
    "\n"
    "  --server IP[:PORT][,...]  name servers (default: /etc/resolv.conf); IPv6 as [v6]:port\n"
    "  --timeout-ms N            c-ares timeout of a first try, ms (default 2000; later\n"
    "                            tries double it)\n"
    "  --tries N                 tries per server (default 3)\n"
    "  --max-ttl S               cache cap for answers, seconds (default 3600)\n"
    "  --negative-ttl S          cache cap for NXDOMAIN / no address, seconds (default 300)\n"
    "  --no-hosts-file           do not look host names up in /etc/hosts first\n"
    "  --parallel                start every query at once (identical ones share a lookup)\n"
    "  --json                    one JSON object per query on stdout\n"
    "  --stats                   print the resolver's counters at the end\n"
    "  --help                    this text\n"
    "\n"
    "Environment: KUMOD_LOG sets the diagnostic log filter, e.g. KUMOD_LOG=kumod::dns=trace\n"
    "shows every query, answer and cache hit.\n"
    "Exit status: 0 every query resolved, 1 a permanent failure (null MX, no such domain or\n"
    "host), 2 a temporary failure (SERVFAIL, timeout, ...) or a usage error.\n";

struct dig_query {
	const char *kind; /* "mx" or "host" */
	const char *name;
	uint64_t start_ns;
	struct dns_stats before;
};

static struct {
	struct dig_query *q;
	size_t n, next, done;
	int json, parallel, stats;
	int exit_code;
	uv_timer_t stop;
} dig;

static void dig_start(struct dig_query *q);

static void addr_text(const struct sockaddr_storage *ss, char *out, size_t len)
{
	if (ss->ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, out,
			  (socklen_t)len);
	else
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, out,
			  (socklen_t)len);
}

static void print_json(const struct dig_query *q, const struct dns_mx_result *r,
		       const struct dns_stats *st)
{
	json_t *o = json_object(), *hosts = json_array();
	char ip[INET6_ADDRSTRLEN];
	json_object_set_new(o, "query", json_string(q->kind));
	json_object_set_new(o, "name", json_string(q->name));
	json_object_set_new(o, "status", json_string(dns_status_name(r->status)));
	json_object_set_new(o, "error", r->status == DNS_OK ? json_null() : json_string(r->error));
	json_object_set_new(o, "implicit", json_boolean(r->implicit));
	json_object_set_new(o, "site_name", json_string(r->site_name));
	json_object_set_new(o, "ttl", json_integer(r->ttl));
	for (size_t i = 0; i < r->nhosts; i++) {
		json_t *h = json_object(), *addrs = json_array();
		json_object_set_new(h, "name", json_string(r->hosts[i].name));
		json_object_set_new(h, "preference", json_integer(r->hosts[i].preference));
		for (size_t k = 0; k < r->hosts[i].naddrs; k++) {
			addr_text(&r->hosts[i].addrs[k], ip, sizeof(ip));
			json_array_append_new(addrs, json_string(ip));
		}
		json_object_set_new(h, "addresses", addrs);
		json_array_append_new(hosts, h);
	}
	json_object_set_new(o, "hosts", hosts);
	json_object_set_new(o, "elapsed_us",
			    json_integer((json_int_t)((clock_mono_ns() - q->start_ns) / 1000)));
	json_object_set_new(o, "queries_sent",
			    json_integer((json_int_t)(st->queries - q->before.queries)));
	json_object_set_new(o, "cache_hits",
			    json_integer((json_int_t)(st->cache_hits - q->before.cache_hits)));
	char *text = json_dumps(o, JSON_COMPACT);
	printf("%s\n", text);
	free(text);
	json_decref(o);
}

static void print_text(const struct dig_query *q, const struct dns_mx_result *r)
{
	char ip[INET6_ADDRSTRLEN];
	printf("%s %s: %s\n", q->kind, q->name, dns_status_name(r->status));
	if (r->status != DNS_OK)
		printf("  error: %s\n", r->error);
	if (r->site_name[0])
		printf("  site_name: %s\n", r->site_name);
	printf("  implicit: %s\n", r->implicit ? "yes" : "no");
	printf("  ttl: %" PRIu32 "\n", r->ttl);
	for (size_t i = 0; i < r->nhosts; i++) {
		printf("  host: %u %s", r->hosts[i].preference, r->hosts[i].name);
		for (size_t k = 0; k < r->hosts[i].naddrs; k++) {
			addr_text(&r->hosts[i].addrs[k], ip, sizeof(ip));
			printf(" %s", ip);
		}
		printf("\n");
	}
}

static void print_stats(void)
{
	struct dns_stats st;
	dns_get_stats(&st);
	if (dig.json) {
		printf("{\"stats\":{\"lookups\":%" PRIu64 ",\"cache_hits\":%" PRIu64
		       ",\"coalesced\":%" PRIu64 ",\"queries\":%" PRIu64 ",\"answers\":%" PRIu64
		       ",\"cached\":%zu}}\n",
		       st.lookups, st.cache_hits, st.coalesced, st.queries, st.answers, st.cached);
		return;
	}
	printf("stats: lookups=%" PRIu64 " cache_hits=%" PRIu64 " coalesced=%" PRIu64
	       " queries=%" PRIu64 " answers=%" PRIu64 " cached=%zu\n",
	       st.lookups, st.cache_hits, st.coalesced, st.queries, st.answers, st.cached);
}

static void stop_closed(uv_handle_t *h)
{
}

/* Outside any resolver callback: shut the resolver down so the loop can end. */
static void stop_cb(uv_timer_t *t)
{
	if (dig.stats)
		print_stats();
	dns_shutdown();
	uv_close((uv_handle_t *)t, stop_closed);
}

/* One query is finished: the next one starts (one at a time) or the end is near. */
static void dig_done(int code)
{
	if (code > dig.exit_code)
		dig.exit_code = code;
	if (++dig.done == dig.n) {
		uv_timer_start(&dig.stop, stop_cb, 0, 0);
		return;
	}
	if (!dig.parallel)
		dig_start(&dig.q[dig.next++]);
}

static void on_result(void *ctx, const struct dns_mx_result *r)
{
	struct dig_query *q = ctx;
	struct dns_stats st;
	dns_get_stats(&st);
	if (dig.json)
		print_json(q, r, &st);
	else
		print_text(q, r);
	fflush(stdout);
	if (r->status == DNS_OK)
		dig_done(DIG_EXIT_OK);
	else
		dig_done(r->status == DNS_TEMPFAIL ? DIG_EXIT_TEMPFAIL : DIG_EXIT_PERMFAIL);
}

/* `servers LIST`: done at once (lookups in flight are re-sent to the new servers). */
static void dig_servers(struct dig_query *q)
{
	char err[512] = "";
	int rc = dns_set_servers(q->name, err, sizeof(err));
	if (dig.json) {
		json_t *o = json_pack("{s:s, s:s, s:s, s:s?}", "query", q->kind, "name", q->name,
				      "status", rc ? "ERROR" : "OK", "error", rc ? err : NULL);
		char *text = json_dumps(o, JSON_COMPACT);
		printf("%s\n", text);
		free(text);
		json_decref(o);
	} else {
		printf("servers %s: %s%s%s\n", q->name, rc ? "ERROR" : "OK", rc ? ": " : "",
		       rc ? err : "");
	}
	fflush(stdout);
	dig_done(rc ? DIG_EXIT_USAGE : DIG_EXIT_OK);
}

static void dig_start(struct dig_query *q)
{
	dns_get_stats(&q->before);
	q->start_ns = clock_mono_ns();
	if (!strcmp(q->kind, "servers"))
		dig_servers(q);
	else if (!strcmp(q->kind, "mx"))
		dns_resolve_mx(q->name, on_result, q);
	else
		dns_resolve_host(q->name, on_result, q);
}

static int parse_uint(const char *opt, const char *s, unsigned long max, unsigned long *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v > max) {
		fprintf(stderr, "kumo-dig: %s: invalid value '%s'\n", opt, s);
		return -1;
	}
	*out = v;
	return 0;
}

enum {
	OPT_SERVER = 256,
	OPT_TIMEOUT,
	OPT_TRIES,
	OPT_MAX_TTL,
	OPT_NEG_TTL,
	OPT_NO_HOSTS,
	OPT_PARALLEL,
	OPT_JSON,
	OPT_STATS,
	OPT_HELP,
};

static const struct option long_opts[] = {
    {"server", required_argument, NULL, OPT_SERVER},
    {"timeout-ms", required_argument, NULL, OPT_TIMEOUT},
    {"tries", required_argument, NULL, OPT_TRIES},
    {"max-ttl", required_argument, NULL, OPT_MAX_TTL},
    {"negative-ttl", required_argument, NULL, OPT_NEG_TTL},
    {"no-hosts-file", no_argument, NULL, OPT_NO_HOSTS},
    {"parallel", no_argument, NULL, OPT_PARALLEL},
    {"json", no_argument, NULL, OPT_JSON},
    {"stats", no_argument, NULL, OPT_STATS},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

/* Options into o and *servers; returns optind, -1 on a usage error, 0 for --help. */
static int parse_opts(int argc, char **argv, struct dns_options *o, const char **servers)
{
	unsigned long v;
	int c;
	while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
		const char *name = long_opts[c >= OPT_SERVER ? c - OPT_SERVER : 0].name;
		switch (c) {
		case OPT_SERVER:
			*servers = optarg;
			break;
		case OPT_TIMEOUT:
		case OPT_TRIES:
		case OPT_MAX_TTL:
		case OPT_NEG_TTL:
			if (parse_uint(name, optarg, c == OPT_TRIES ? 100 : 86400000, &v) < 0)
				return -1;
			if (c == OPT_TIMEOUT)
				o->timeout_ms = (unsigned)v;
			else if (c == OPT_TRIES)
				o->tries = (unsigned)v;
			else if (c == OPT_MAX_TTL)
				o->max_ttl = (uint32_t)v;
			else
				o->negative_ttl = (uint32_t)v;
			break;
		case OPT_NO_HOSTS:
			o->use_hosts_file = 0;
			break;
		case OPT_PARALLEL:
			dig.parallel = 1;
			break;
		case OPT_JSON:
			dig.json = 1;
			break;
		case OPT_STATS:
			dig.stats = 1;
			break;
		case OPT_HELP:
			return 0;
		default:
			return -1;
		}
	}
	return optind;
}

static int parse_queries(int argc, char **argv, int first)
{
	if (first >= argc || (argc - first) % 2) {
		fprintf(stderr, "kumo-dig: expected one or more `mx DOMAIN` or `host NAME`\n");
		return -1;
	}
	dig.n = (size_t)(argc - first) / 2;
	dig.q = xcalloc(dig.n, sizeof(*dig.q));
	for (size_t i = 0; i < dig.n; i++) {
		const char *kind = argv[first + 2 * i];
		if (strcmp(kind, "mx") && strcmp(kind, "host") && strcmp(kind, "servers")) {
			fprintf(stderr, "kumo-dig: unknown query '%s' (mx, host or servers)\n",
				kind);
			return -1;
		}
		dig.q[i].kind = kind;
		dig.q[i].name = argv[first + 2 * i + 1];
	}
	return 0;
}

static int setup_log(void)
{
	const char *f = getenv("KUMOD_LOG");
	char err[256];
	if (log_set_filter(f && *f ? f : "kumod=warn", err, sizeof(err)) < 0) {
		fprintf(stderr, "kumo-dig: %s\n", err);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct dns_options o;
	const char *servers = NULL;
	char err[512] = "";

	dns_options_default(&o);
	int first = parse_opts(argc, argv, &o, &servers);
	if (first == 0) {
		fputs(usage, stdout);
		return DIG_EXIT_OK;
	}
	if (first < 0 || parse_queries(argc, argv, first) < 0) {
		fprintf(stderr, "Try 'kumo-dig --help'.\n");
		free(dig.q);
		return DIG_EXIT_USAGE;
	}
	if (setup_log() < 0 || dns_set_options(&o, err, sizeof(err)) < 0) {
		if (err[0])
			fprintf(stderr, "kumo-dig: %s\n", err);
		free(dig.q);
		return DIG_EXIT_USAGE;
	}
	uv_loop_t *loop = kumod_loop();
	err[0] = 0;
	if (dns_init(loop, servers, err, sizeof(err)) < 0) {
		fprintf(stderr, "kumo-dig: %s\n", err);
		free(dig.q);
		uv_loop_close(loop);
		return DIG_EXIT_USAGE;
	}
	uv_timer_init(loop, &dig.stop);
	if (dig.parallel)
		for (dig.next = 0; dig.next < dig.n; dig.next++)
			dig_start(&dig.q[dig.next]);
	else
		dig_start(&dig.q[dig.next++]);
	uv_run(loop, UV_RUN_DEFAULT);
	int rc = kumod_loop_close();
	if (rc < 0)
		fprintf(stderr, "kumo-dig: loop not closed cleanly: %s\n", uv_strerror(rc));
	task_registry_clear();
	free(dig.q);
	return dig.exit_code;
}
