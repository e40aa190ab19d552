/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.dns lookups (KumoMTA's mod-dns-resolver): lookup_mx, lookup_addr, lookup_txt,
 * lookup_ptr and rbl_lookup wait for kumod/dns/resolver.c on the loop (the handler's
 * coroutine is suspended through lua_engine__wait, like kumo.http's request:send, so they
 * work where an event may wait); ptr_host and reverse_ip are string functions. The optional
 * resolver name selects a resolver of kumo.dns.define_resolver (lua_dns_config.c). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/xalloc.h"
#include "dns/resolver.h"
#include "lua/lua_int.h"
#include "proto/dns_name.h"
#include "proto/duration.h"

enum dns_op {
	OP_MX,
	OP_ADDR,
	OP_TXT,
	OP_PTR,
	OP_RBL,
};

/* KumoMTA's IpLookupStrategy names (make_egress_path.ip_lookup_strategy). */
enum ip_strategy {
	IP_V4_AND_V6,
	IP_V4_ONLY,
	IP_V6_ONLY,
	IP_V6_THEN_V4,
	IP_V4_THEN_V6,
};

static const char *const strategy_names[] = {"Ipv4AndIpv6",  "Ipv4Only",     "Ipv6Only",
					     "Ipv6ThenIpv4", "Ipv4ThenIpv6", NULL};

/* One lookup a handler waits for; the completion finds the handler by call id. */
struct dns_wait {
	uint64_t call;
	enum dns_op op;
	enum ip_strategy strategy;
	char fn[32];	/* "kumo.dns.lookup_mx", for messages */
	char name[300]; /* what was asked (normalised domain, PTR or RBL name) */
	char rbl_ip[INET_ADDRSTRLEN];
	unsigned rsv; /* resolver: 0 the default, else a named one */
};

/* The resolver named at idx (none or nil: the default, 0); raises for an unknown name. */
static unsigned named_resolver(lua_State *L, const char *fn, int idx)
{
	if (lua_isnoneornil(L, idx))
		return 0;
	const char *name = luaL_checkstring(L, idx);
	int id = dns_resolver_find(name);
	if (id < 0)
		luaL_error(L,
			   "%s: no resolver named '%s' (define it with kumo.dns.define_resolver)",
			   fn, name);
	return (unsigned)id;
}

/* Continuation: the completion pushed (error or nil, values...); ctx is how many values. */
static int wait_k(lua_State *L, int status, lua_KContext nvals)
{
	(void)status;
	int first = lua_gettop(L) - (int)nvals;
	if (!lua_isnil(L, first)) {
		lua_pushvalue(L, first);
		return lua_error(L);
	}
	return (int)nvals;
}

static int wait_start(lua_State *L, const char *fn, enum dns_op op, const char *name,
		      enum dns_rr_type t, int nvals, unsigned rsv);

/* The handler's thread for w, or NULL (then w is freed: the call was dropped). */
static lua_State *wait_thread(struct dns_wait *w)
{
	lua_State *co = lua_engine__thread(w->call);
	if (!co)
		free(w);
	return co;
}

static void wake(struct dns_wait *w, int nres)
{
	uint64_t call = w->call;
	free(w);
	lua_engine__wake(call, nres);
}

/* Pushes a raised error (error slot) and nvals nils. */
static void push_error(lua_State *co, int nvals, const char *fn, const char *why)
{
	lua_pushfstring(co, "%s: %s", fn, why);
	for (int i = 0; i < nvals; i++)
		lua_pushnil(co);
}

/* --- lookup_mx ----------------------------------------------------------------- */

static int cmp_rec(const void *a, const void *b)
{
	const struct dns_record *x = a, *y = b;
	if (x->preference != y->preference)
		return x->preference < y->preference ? -1 : 1;
	return strcmp(x->text, y->text);
}

/* "name." ("." for the root), as KumoMTA writes names. */
static void push_fqdn(lua_State *L, const char *name)
{
	lua_pushfstring(L, "%s.", name);
}

/* KumoMTA's MailExchanger table for hosts (sorted) of the given preferences. */
static void push_mx_table(lua_State *L, const char *domain_name, const struct dns_record *recs,
			  size_t n, int is_mx, int literal)
{
	lua_createtable(L, 0, 8);
	lua_pushstring(L, domain_name);
	lua_setfield(L, -2, "domain_name");
	lua_createtable(L, (int)n, 0); /* hosts */
	lua_newtable(L);	       /* by_pref */
	const char **names = xcalloc(n ? n : 1, sizeof(*names));
	for (size_t i = 0; i < n; i++) {
		if (literal)
			lua_pushstring(L, recs[i].text);
		else
			push_fqdn(L, recs[i].text);
		names[i] = lua_tostring(L, -1);
		lua_pushvalue(L, -1);
		lua_rawseti(L, -4, (lua_Integer)i + 1);
		if (lua_rawgeti(L, -2, recs[i].preference) == LUA_TNIL) {
			lua_pop(L, 1);
			lua_newtable(L);
			lua_pushvalue(L, -1);
			lua_rawseti(L, -4, recs[i].preference);
		}
		lua_insert(L, -2);
		lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
		lua_pop(L, 1);
	}
	char site[256] = "";
	if (literal && n)
		snprintf(site, sizeof(site), "%s", recs[0].text);
	else
		dns_site_name(names, n, site, sizeof(site)); /* truncated: still a key */
	free(names);
	lua_setfield(L, -3, "by_pref");
	lua_setfield(L, -2, "hosts");
	lua_pushstring(L, site);
	lua_setfield(L, -2, "site_name");
	lua_pushboolean(L, literal);
	lua_setfield(L, -2, "is_domain_literal");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "is_secure");
	lua_pushboolean(L, is_mx);
	lua_setfield(L, -2, "is_mx");
	lua_pushstring(L, "None");
	lua_setfield(L, -2, "mta_sts");
}

static void mx_done(void *ctx, const struct dns_records_result *r)
{
	struct dns_wait *w = ctx;
	lua_State *co = wait_thread(w);
	if (!co)
		return;
	char fq[sizeof(w->name) + 2];
	snprintf(fq, sizeof(fq), "%s.", w->name);
	if (r->status != DNS_OK) {
		push_error(co, 1, w->fn, r->error);
	} else if (!r->n) { /* no MX: the domain itself (RFC 5321 §5.1), as KumoMTA reports */
		struct dns_record self = {.preference = 1, .text = w->name, .len = strlen(w->name)};
		lua_pushnil(co);
		push_mx_table(co, fq, &self, 1, 0, 0);
	} else {
		struct dns_record *recs = xmalloc(r->n * sizeof(*recs));
		memcpy(recs, r->records, r->n * sizeof(*recs));
		qsort(recs, r->n, sizeof(*recs), cmp_rec);
		lua_pushnil(co);
		push_mx_table(co, fq, recs, r->n, 1, 0);
		free(recs);
	}
	wake(w, 2);
}

static int l_lookup_mx(lua_State *L)
{
	const char *domain = luaL_checkstring(L, 1);
	unsigned rsv = named_resolver(L, "kumo.dns.lookup_mx", 2);
	if (domain[0] == '[') { /* an address literal: no DNS, as in KumoMTA */
		struct sockaddr_storage ss;
		char ip[INET6_ADDRSTRLEN];
		if (dns_literal_parse(domain, &ss) != 1)
			return luaL_error(L, "kumo.dns.lookup_mx: invalid address literal '%s'",
					  domain);
		if (ss.ss_family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip,
				  sizeof(ip));
		else
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof(ip));
		struct dns_record rec = {.preference = 1, .text = ip, .len = strlen(ip)};
		push_mx_table(L, domain, &rec, 1, 0, 1);
		return 1;
	}
	return wait_start(L, "kumo.dns.lookup_mx", OP_MX, domain, DNS_RR_MX, 1, rsv);
}

/* --- lookup_txt, lookup_ptr, rbl_lookup ---------------------------------------- */

static void push_txt_join(lua_State *L, const struct dns_records_result *r)
{
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	for (size_t i = 0; i < r->n; i++)
		luaL_addlstring(&b, r->records[i].text, r->records[i].len);
	luaL_pushresult(&b);
}

static void list_done(void *ctx, const struct dns_records_result *r)
{
	struct dns_wait *w = ctx;
	lua_State *co = wait_thread(w);
	if (!co)
		return;
	if (r->status == DNS_TEMPFAIL) {
		push_error(co, 1, w->fn, r->error);
	} else { /* NXDOMAIN and no records: an empty list, as KumoMTA's resolver returns */
		lua_pushnil(co);
		lua_createtable(co, (int)r->n, 0);
		for (size_t i = 0; i < r->n; i++) {
			if (w->op == OP_PTR)
				push_fqdn(co, r->records[i].text);
			else
				lua_pushlstring(co, r->records[i].text, r->records[i].len);
			lua_rawseti(co, -2, (lua_Integer)i + 1);
		}
	}
	wake(w, 2);
}

static void rbl_txt_done(void *ctx, const struct dns_records_result *r)
{
	struct dns_wait *w = ctx;
	lua_State *co = wait_thread(w);
	if (!co)
		return;
	lua_pushnil(co);
	lua_pushstring(co, w->rbl_ip);
	if (r->status == DNS_OK && r->n)
		push_txt_join(co, r);
	else
		lua_pushnil(co); /* the reason is optional: a failed TXT lookup is no error */
	wake(w, 3);
}

static void rbl_a_done(void *ctx, const struct dns_records_result *r)
{
	struct dns_wait *w = ctx;
	lua_State *co = wait_thread(w);
	if (!co)
		return;
	if (r->status == DNS_TEMPFAIL) {
		push_error(co, 2, w->fn, r->error);
		wake(w, 3);
		return;
	}
	if (r->status != DNS_OK || !r->n) { /* not listed */
		lua_pushnil(co);
		lua_pushnil(co);
		lua_pushnil(co);
		wake(w, 3);
		return;
	}
	snprintf(w->rbl_ip, sizeof(w->rbl_ip), "%s", r->records[0].text);
	dns_lookup_records_via(w->rsv, w->name, DNS_RR_TXT, rbl_txt_done, w);
}

static int l_lookup_txt(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	unsigned rsv = named_resolver(L, "kumo.dns.lookup_txt", 2);
	return wait_start(L, "kumo.dns.lookup_txt", OP_TXT, name, DNS_RR_TXT, 1, rsv);
}

static int l_lookup_ptr(lua_State *L)
{
	const char *ip = luaL_checkstring(L, 1);
	unsigned rsv = named_resolver(L, "kumo.dns.lookup_ptr", 2);
	char name[DNS_REVERSE_MAX];
	if (dns_reverse_ip(ip, 1, name, sizeof(name)) < 0)
		return luaL_error(L, "kumo.dns.lookup_ptr: '%s' is not an IP address", ip);
	return wait_start(L, "kumo.dns.lookup_ptr", OP_PTR, name, DNS_RR_PTR, 1, rsv);
}

static int l_rbl_lookup(lua_State *L)
{
	const char *s = luaL_checkstring(L, 1);
	const char *base = luaL_checkstring(L, 2);
	unsigned rsv = named_resolver(L, "kumo.dns.rbl_lookup", 3);
	char ip[INET6_ADDRSTRLEN], rev[DNS_REVERSE_MAX], name[600];
	if (dns_ip_of_socket(s, ip, sizeof(ip)) < 0 || dns_reverse_ip(ip, 0, rev, sizeof(rev)) < 0)
		return luaL_error(L, "kumo.dns.rbl_lookup: %s is not a valid IpAddr or SocketAddr",
				  s);
	size_t bl = strlen(base);
	snprintf(name, sizeof(name), "%s.%.*s", rev, (int)(bl && base[bl - 1] == '.' ? bl - 1 : bl),
		 base);
	return wait_start(L, "kumo.dns.rbl_lookup", OP_RBL, name, DNS_RR_A, 2, rsv);
}

/* --- lookup_addr --------------------------------------------------------------- */

static void push_addrs(lua_State *L, const struct dns_host *h, int fam, lua_Integer *n)
{
	char ip[INET6_ADDRSTRLEN];
	for (size_t i = 0; i < h->naddrs; i++) {
		const struct sockaddr_storage *ss = &h->addrs[i];
		if (ss->ss_family != fam)
			continue;
		if (fam == AF_INET6)
			inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, ip,
				  sizeof(ip));
		else
			inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, ip,
				  sizeof(ip));
		lua_pushstring(L, ip);
		lua_rawseti(L, -2, ++*n);
	}
}

static void addr_done(void *ctx, const struct dns_mx_result *r)
{
	struct dns_wait *w = ctx;
	lua_State *co = wait_thread(w);
	if (!co)
		return;
	if (r->status != DNS_OK || !r->nhosts) {
		push_error(co, 1, w->fn, r->error[0] ? r->error : "no address");
		wake(w, 2);
		return;
	}
	const struct dns_host *h = &r->hosts[0];
	lua_pushnil(co);
	lua_newtable(co);
	lua_Integer n = 0;
	switch (w->strategy) {
	case IP_V4_AND_V6:
		push_addrs(co, h, AF_INET, &n);
		push_addrs(co, h, AF_INET6, &n);
		break;
	case IP_V4_ONLY:
		push_addrs(co, h, AF_INET, &n);
		break;
	case IP_V6_ONLY:
		push_addrs(co, h, AF_INET6, &n);
		break;
	case IP_V6_THEN_V4:
		push_addrs(co, h, AF_INET6, &n);
		if (!n)
			push_addrs(co, h, AF_INET, &n);
		break;
	case IP_V4_THEN_V6:
		push_addrs(co, h, AF_INET, &n);
		if (!n)
			push_addrs(co, h, AF_INET6, &n);
		break;
	}
	if (!n) {
		lua_pop(co, 2);
		char why[400];
		snprintf(why, sizeof(why), "%s has no address for strategy %s", w->name,
			 strategy_names[w->strategy]);
		push_error(co, 1, w->fn, why);
	}
	wake(w, 2);
}

static int l_lookup_addr(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	unsigned rsv = named_resolver(L, "kumo.dns.lookup_addr", 2);
	int strategy = IP_V4_AND_V6;
	if (!lua_isnoneornil(L, 3)) {
		const char *s = luaL_checkstring(L, 3);
		for (strategy = 0; strategy_names[strategy]; strategy++)
			if (!strcmp(strategy_names[strategy], s))
				break;
		if (!strategy_names[strategy])
			return luaL_error(L,
					  "kumo.dns.lookup_addr: unknown ip lookup strategy '%s' "
					  "(Ipv4AndIpv6, Ipv4Only, Ipv6Only, Ipv6ThenIpv4, "
					  "Ipv4ThenIpv6)",
					  s);
	}
	uint64_t call = lua_engine__wait_begin(L, "kumo.dns.lookup_addr");
	struct dns_wait *w = xcalloc(1, sizeof(*w));
	snprintf(w->fn, sizeof(w->fn), "kumo.dns.lookup_addr");
	snprintf(w->name, sizeof(w->name), "%s", name);
	w->op = OP_ADDR;
	w->strategy = (enum ip_strategy)strategy;
	w->call = call;
	dns_resolve_host_via(rsv, name, addr_done, w);
	return lua_engine__wait(L, 1, wait_k);
}

/* --- common -------------------------------------------------------------------- */

/* Checks name, then suspends the handler until the lookup of its records completes. */
static int wait_start(lua_State *L, const char *fn, enum dns_op op, const char *name,
		      enum dns_rr_type t, int nvals, unsigned rsv)
{
	char norm[256];
	if (dns_name_normalize(name, norm, sizeof(norm)) < 0)
		return luaL_error(L, "%s: invalid domain name '%s'", fn, name);
	/* raises, naming the event, where the handler cannot wait: before anything is held */
	uint64_t call = lua_engine__wait_begin(L, fn);
	struct dns_wait *w = xcalloc(1, sizeof(*w));
	snprintf(w->fn, sizeof(w->fn), "%s", fn);
	snprintf(w->name, sizeof(w->name), "%s", norm);
	w->op = op;
	w->call = call;
	w->rsv = rsv;
	dns_records_cb cb = op == OP_MX ? mx_done : op == OP_RBL ? rbl_a_done : list_done;
	dns_lookup_records_via(rsv, w->name, t, cb, w);
	return lua_engine__wait(L, nvals, wait_k);
}

/* --- pure functions ------------------------------------------------------------ */

static int reverse(lua_State *L, int ptr, const char *fn)
{
	const char *ip = luaL_checkstring(L, 1);
	char out[DNS_REVERSE_MAX];
	if (dns_reverse_ip(ip, ptr, out, sizeof(out)) < 0)
		return luaL_error(L, "%s: '%s' is not an IP address", fn, ip);
	lua_pushstring(L, out);
	return 1;
}

static int l_ptr_host(lua_State *L)
{
	return reverse(L, 1, "kumo.dns.ptr_host");
}

static int l_reverse_ip(lua_State *L)
{
	return reverse(L, 0, "kumo.dns.reverse_ip");
}

/* --- MX resolution knobs ---------------------------------------------------------- */

/* A KumoMTA duration at index 1 (seconds, fractional allowed, or text like "5m") in
 * milliseconds; raises naming fn. */
static uint64_t check_duration_ms(lua_State *L, const char *fn)
{
	uint64_t ms = 0;
	if (lua_type(L, 1) == LUA_TNUMBER) {
		lua_Number s = lua_tonumber(L, 1);
		if (!(s >= 0 && s < 4e9))
			luaL_error(L, "%s: duration must be between 0 and 4e9 seconds", fn);
		ms = (uint64_t)(s * 1000.0);
	} else if (lua_type(L, 1) == LUA_TSTRING) {
		if (duration_parse_ms(lua_tostring(L, 1), &ms) != 0)
			luaL_error(L, "%s: invalid duration '%s'", fn, lua_tostring(L, 1));
	} else {
		luaL_error(L, "%s: expected a duration (seconds or text like \"5m\"), got %s", fn,
			   luaL_typename(L, 1));
	}
	if (ms / 1000 > UINT32_MAX)
		luaL_error(L, "%s: duration is too large", fn);
	return ms;
}

/* set_mx_negative_cache_ttl(duration): how long a negative MX resolution
 * (NXDOMAIN, no address: DNS_NO_HOST) stays cached, at most; a zone's SOA
 * negative TTL still caps it, and TEMPFAIL is never cached here (whole
 * seconds: "1500ms" is 1 s). */
static int l_set_mx_negative_cache_ttl(lua_State *L)
{
	uint64_t ms = check_duration_ms(L, "kumo.dns.set_mx_negative_cache_ttl");
	dns_set_negative_ttl((uint32_t)(ms / 1000));
	return 0;
}

/* set_mx_timeout(duration): the limit on a delivery MX record query, as KumoMTA's
 * (the hosts' address lookups are not under it); 0 removes it. kumod's default is
 * no limit beyond the resolver's own per-query timeouts (KumoMTA's is 5 s).
 */
static int l_set_mx_timeout(lua_State *L)
{
	uint64_t ms = check_duration_ms(L, "kumo.dns.set_mx_timeout");
	if (ms > UINT32_MAX)
		return luaL_error(L, "kumo.dns.set_mx_timeout: duration is too large");
	dns_set_mx_timeout((unsigned)ms);
	return 0;
}

static const luaL_Reg dns_lookup_funcs[] = {
    {"set_mx_negative_cache_ttl", l_set_mx_negative_cache_ttl},
    {"set_mx_timeout", l_set_mx_timeout},
    {"lookup_mx", l_lookup_mx},
    {"lookup_addr", l_lookup_addr},
    {"lookup_txt", l_lookup_txt},
    {"lookup_ptr", l_lookup_ptr},
    {"rbl_lookup", l_rbl_lookup},
    {"ptr_host", l_ptr_host},
    {"reverse_ip", l_reverse_ip},
    {NULL, NULL},
};

void lua_dns__register(lua_State *L)
{
	luaL_setfuncs(L, dns_lookup_funcs, 0);
}
