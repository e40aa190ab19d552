/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.dns resolver configuration beyond configure_resolver (KumoMTA's mod-dns-resolver):
 * define_resolver (named resolvers over kumod/dns/resolver.c, used by the lookup_* functions
 * given their name), load_resolv_conf, set_mx_concurrency_limit and set_mta_sts_enabled. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "base/xalloc.h"
#include "dns/resolver.h"
#include "lua/lua_int.h"

/* KumoMTA resolver options (docs/reference/kumo.dns/resolver_options) that kumod's
 * resolver does not have: refused by name. */
static const char *const hickory_options[] = {
    "cache_size",	   "case_randomization",
    "negative_max_ttl",	   "negative_min_ttl",
    "num_concurrent_reqs", "positive_max_ttl",
    "positive_min_ttl",	   "preserve_intermediates",
    "recursion_desired",   "server_ordering_strategy",
    "trust_anchor_file",   "try_tcp_on_error",
    "use_hosts_file",	   "validate",
    "ip_strategy",
};

/* Options load_resolv_conf returns: accepted, without effect (names are looked up as
 * absolute names; timeouts and tries are kumod's, kumo.dns.configure_resolver's). */
static const char *const resolv_conf_options[] = {"ndots", "timeout", "attempts", "edns0"};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static int in(const char *const *list, size_t n, const char *k)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(list[i], k))
			return 1;
	return 0;
}

/* Appends the name server at the top of the stack ("ip", "ip:port", "[v6]:port", or
 * KumoMTA's { socket_addr = ..., protocol = 'udp' }) to out; raises naming fn. */
static void add_server(lua_State *L, const char *fn, struct buf *out)
{
	const char *sv;
	if (lua_type(L, -1) == LUA_TTABLE) {
		lua_getfield(L, -1, "protocol");
		const char *proto = lua_tostring(L, -1);
		if (proto && strcasecmp(proto, "udp") != 0)
			luaL_error(L, "%s: name server protocol '%s' is not supported (udp only)",
				   fn, proto);
		lua_pop(L, 1);
		lua_getfield(L, -1, "socket_addr");
		sv = lua_tostring(L, -1);
		lua_pop(L, 1); /* the string stays referenced by the table */
		if (!sv)
			luaL_error(L, "%s: a name server table needs socket_addr", fn);
	} else if (lua_type(L, -1) == LUA_TSTRING) {
		sv = lua_tostring(L, -1);
	} else {
		luaL_error(L, "%s: a name server is a string or { socket_addr = ... }, got %s", fn,
			   luaL_typename(L, -1));
		return;
	}
	buf_printf(out, "%s%s", out->len ? "," : "", sv);
}

/* The Hickory config at idx: { name_servers, options, domain, search } as configure_resolver
 * takes it. Returns the server list in out (never empty). */
static void hickory_config(lua_State *L, int idx, const char *fn, struct buf *out)
{
	idx = lua_absindex(L, idx);
	luaL_checktype(L, idx, LUA_TTABLE);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
		if (!strcmp(k, "name_servers")) {
			luaL_checktype(L, -1, LUA_TTABLE);
			for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, -1); i++) {
				lua_rawgeti(L, -1, i);
				add_server(L, fn, out);
				lua_pop(L, 1);
			}
		} else if (!strcmp(k, "options")) {
			luaL_checktype(L, -1, LUA_TTABLE);
			lua_pushnil(L);
			while (lua_next(L, -2)) {
				const char *o =
				    lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
				if (in(hickory_options, NELEM(hickory_options), o))
					luaL_error(
					    L,
					    "%s: options.%s is a KumoMTA resolver option that "
					    "kumod does not implement",
					    fn, o);
				if (!in(resolv_conf_options, NELEM(resolv_conf_options), o))
					luaL_error(L, "%s: unknown resolver option '%s'", fn, o);
				lua_pop(L, 1);
			}
		} else if (strcmp(k, "domain") != 0 && strcmp(k, "search") != 0) {
			luaL_error(L,
				   "%s: unknown key '%s' (name_servers, options, domain, search)",
				   fn, k);
		}
		lua_pop(L, 1);
	}
	if (!out->len)
		luaL_error(L, "%s: name_servers is required", fn);
}

/* define_resolver(name, config): config is 'HickorySystemConfig' (/etc/resolv.conf's name
 * servers) or { Hickory = { name_servers = {...}, ... } }. */
static int l_define_resolver(lua_State *L)
{
	static const char fn[] = "kumo.dns.define_resolver";
	const char *name = luaL_checkstring(L, 1);
	if (!name[0])
		return luaL_error(L, "%s: the resolver name is empty", fn);
	struct buf servers;
	buf_init(&servers);
	int system = 0;
	if (lua_type(L, 2) == LUA_TSTRING) {
		const char *s = lua_tostring(L, 2);
		if (strcmp(s, "HickorySystemConfig") != 0)
			return luaL_error(L,
					  "%s: unknown resolver config '%s' (HickorySystemConfig "
					  "or { Hickory = { name_servers = ... } })",
					  fn, s);
		system = 1;
	} else {
		luaL_checktype(L, 2, LUA_TTABLE);
		int n = 0;
		for (lua_pushnil(L); lua_next(L, 2); lua_pop(L, 1))
			n++;
		if (n != 1)
			return luaL_error(
			    L, "%s: the config has exactly one kind (Hickory = {...})", fn);
		lua_pushnil(L);
		while (lua_next(L, 2)) {
			const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
			if (!strcmp(k, "Hickory")) {
				hickory_config(L, -1, fn, &servers);
			} else if (!strcmp(k, "Unbound") || !strcmp(k, "Test") ||
				   !strcmp(k, "Aggregate")) {
				buf_free(&servers);
				return luaL_error(L,
						  "%s: the %s resolver is not implemented in kumod "
						  "(use { Hickory = { name_servers = ... } })",
						  fn, k);
			} else {
				buf_free(&servers);
				return luaL_error(L,
						  "%s: unknown resolver kind '%s' (Hickory, or "
						  "'HickorySystemConfig')",
						  fn, k);
			}
			lua_pop(L, 1);
		}
	}
	if (lua_engine__validating()) {
		buf_free(&servers);
		return 0;
	}
	char err[256] = "";
	char *list = system ? NULL : xstrndup(servers.data, servers.len);
	buf_free(&servers);
	int rc = dns_define_resolver(name, list, err, sizeof(err));
	free(list);
	if (rc < 0)
		return luaL_error(L, "%s: %s", fn, err);
	return 0;
}

/* --- load_resolv_conf ------------------------------------------------------------- */

/* An unsigned option value "name:N" (resolv.conf(5)), capped as glibc does. */
static void option_int(lua_State *L, const char *v, int cap, const char *field)
{
	char *end;
	long n = strtol(v, &end, 10);
	if (end == v || *end || n < 0)
		return; /* glibc ignores a bad value */
	lua_pushinteger(L, n > cap ? cap : n);
	lua_setfield(L, -2, field);
}

/* load_resolv_conf([path]): { name_servers = { 'ip:53', '[v6]:53' }, domain = ...,
 * search = {...}, options = { ndots, timeout = 'Ns', attempts, edns0 } }, the shape
 * configure_resolver and define_resolver's Hickory take. The defaults are resolv.conf's
 * (ndots 1, timeout 5s, attempts 2, edns0 false); search is the last search or domain line. */
static int l_load_resolv_conf(lua_State *L)
{
	static const char fn[] = "kumo.dns.load_resolv_conf";
	const char *path = luaL_optstring(L, 1, "/etc/resolv.conf");
	lua_util__push_file(L, fn, path);
	size_t len;
	const char *text = lua_tolstring(L, -1, &len);
	int top = lua_gettop(L);
	lua_newtable(L); /* result */
	lua_newtable(L); /* name_servers */
	lua_newtable(L); /* search */
	lua_newtable(L); /* options */
	int res = top + 1, ns = top + 2, search = top + 3, opts = top + 4;
	lua_pushinteger(L, 1);
	lua_setfield(L, opts, "ndots");
	lua_pushliteral(L, "5s");
	lua_setfield(L, opts, "timeout");
	lua_pushinteger(L, 2);
	lua_setfield(L, opts, "attempts");
	lua_pushboolean(L, 0);
	lua_setfield(L, opts, "edns0");
	lua_Integer nns = 0;
	for (const char *p = text, *end = text + len; p < end;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);
		char line[1024];
		snprintf(line, sizeof(line), "%.*s",
			 (int)(ll < sizeof(line) ? ll : sizeof(line) - 1), p);
		p += ll + (nl ? 1 : 0);
		line[strcspn(line, "#;")] = 0;
		char *save = NULL, *kw = strtok_r(line, " \t\r", &save);
		if (!kw)
			continue;
		if (!strcmp(kw, "nameserver")) {
			char *a = strtok_r(NULL, " \t\r", &save);
			unsigned char ip[16];
			if (!a)
				continue;
			char *pct = strchr(a, '%'); /* a v6 zone: c-ares has no use for it */
			if (pct)
				*pct = 0;
			if (inet_pton(AF_INET, a, ip) == 1)
				lua_pushfstring(L, "%s:53", a);
			else if (inet_pton(AF_INET6, a, ip) == 1)
				lua_pushfstring(L, "[%s]:53", a);
			else
				return luaL_error(L, "%s: %s: bad nameserver '%s'", fn, path, a);
			lua_rawseti(L, ns, ++nns);
		} else if (!strcmp(kw, "domain") || !strcmp(kw, "search")) {
			lua_newtable(L);
			lua_Integer n = 0;
			for (char *d; (d = strtok_r(NULL, " \t\r", &save));) {
				lua_pushstring(L, d);
				lua_rawseti(L, -2, ++n);
			}
			if (n && !strcmp(kw, "domain")) {
				lua_rawgeti(L, -1, 1);
				lua_setfield(L, res, "domain");
			}
			lua_replace(L, search); /* the last search or domain line wins */
		} else if (!strcmp(kw, "options")) {
			for (char *o; (o = strtok_r(NULL, " \t\r", &save));) {
				lua_pushvalue(L, opts);
				if (!strncmp(o, "ndots:", 6))
					option_int(L, o + 6, 15, "ndots");
				else if (!strncmp(o, "attempts:", 9))
					option_int(L, o + 9, 5, "attempts");
				else if (!strcmp(o, "edns0")) {
					lua_pushboolean(L, 1);
					lua_setfield(L, -2, "edns0");
				} else if (!strncmp(o, "timeout:", 8)) {
					char *e;
					long t = strtol(o + 8, &e, 10);
					if (e != o + 8 && !*e && t >= 0) {
						lua_pushfstring(L, "%ds", (int)(t > 30 ? 30 : t));
						lua_setfield(L, -2, "timeout");
					}
				}
				lua_pop(L, 1);
			}
		}
	}
	lua_pushvalue(L, ns);
	lua_setfield(L, res, "name_servers");
	lua_pushvalue(L, search);
	lua_setfield(L, res, "search");
	lua_pushvalue(L, opts);
	lua_setfield(L, res, "options");
	lua_settop(L, res);
	return 1;
}

/* --- MX resolution knobs ------------------------------------------------------------ */

static int l_set_mx_concurrency_limit(lua_State *L)
{
	lua_Integer n = luaL_checkinteger(L, 1);
	if (n < 1 || n > 1000000)
		return luaL_error(L,
				  "kumo.dns.set_mx_concurrency_limit: limit must be between 1 "
				  "and 1000000, got %I",
				  n);
	dns_set_mx_concurrency_limit((unsigned)n);
	return 0;
}

/* kumod does not consult MTA-STS: false says so and is accepted; true is refused. */
static int l_set_mta_sts_enabled(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TBOOLEAN);
	if (lua_toboolean(L, 1))
		return luaL_error(L, "kumo.dns.set_mta_sts_enabled(true): kumod does not implement "
				     "MTA-STS (RFC 8461); only false is accepted");
	return 0;
}

static const luaL_Reg funcs[] = {
    {"define_resolver", l_define_resolver},
    {"load_resolv_conf", l_load_resolv_conf},
    {"set_mx_concurrency_limit", l_set_mx_concurrency_limit},
    {"set_mta_sts_enabled", l_set_mta_sts_enabled},
    {NULL, NULL},
};

void lua_dns_config__register(lua_State *L)
{
	luaL_setfuncs(L, funcs, 0);
}
