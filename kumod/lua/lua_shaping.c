/* SPDX-License-Identifier: Apache-2.0 */
/* kumod's own members of kumo.shaping (not KumoMTA API), for kumod's
 * policy-extras.shaping (share/policy-extras/shaping.lua and
 * kumod_shaping.lua):
 *   kumo.shaping.kumod_mx(domain) -> site_name, hosts | nil, "pending" | nil, error
 *     the MX site of a domain as delivery computes it (dns_resolve_mx), for MX
 *     rollup and MXSuffix/HostName provider rules. It never waits (the
 *     shaping data is used from get_egress_path_config, which cannot): an
 *     unknown domain starts a lookup and answers "pending"; answers are kept
 *     for their TTL (at least a minute) and refreshed in the background; a
 *     transient failure ("TEMPFAIL: ...") is asked again after 5 s.
 *   kumo.shaping.kumod_threshold(key, "N/period") -> count, limit
 *   kumo.shaping.kumod_fire{action, rule, duration, rollup, ready_queue,
 *     source, site, domain, tenant, campaign, name, value} -> true | false
 *   kumo.shaping.kumod_overrides(domain, source, site) -> table, seconds_left | nil
 *   kumo.shaping.kumod_automation_list() -> the live effects
 * The last four drive kumod/dispatch/shaping_auto.c (traffic shaping
 * automation in-process). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/clock.h"
#include "base/xalloc.h"
#include "dispatch/shaping_auto.h"
#include "dns/resolver.h"
#include "lua/lua_int.h"
#include "proto/duration.h"
#include "proto/rate_spec.h"

static uint64_t now_ms(void)
{
	return clock_wall_ns() / 1000000u;
}

/* --- kumod_mx -------------------------------------------------------------------- */

#define MX_BUCKETS 4096
#define MX_MIN_KEEP_MS 60000u
#define MX_TEMPFAIL_RETRY_MS 5000u

struct mx_entry {
	char *domain;
	int state; /* 0 pending (first lookup), 1 answered */
	int inflight;
	enum dns_status status;
	char error[160];
	char site[256];
	char **hosts;
	size_t nhosts;
	uint64_t fresh_until_ms;
	struct mx_entry *next;
};

static struct mx_entry *mx_cache[MX_BUCKETS];

static size_t mx_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return (size_t)(h % MX_BUCKETS);
}

static void mx_done(void *ctx, const struct dns_mx_result *r)
{
	struct mx_entry *e = ctx;
	e->inflight = 0;
	if (r->status == DNS_TEMPFAIL && e->state == 1 && e->status == DNS_OK) {
		/* keep the last good answer through a transient failure */
		e->fresh_until_ms = now_ms() + MX_MIN_KEEP_MS;
		return;
	}
	for (size_t i = 0; i < e->nhosts; i++)
		free(e->hosts[i]);
	free(e->hosts);
	e->hosts = NULL;
	e->nhosts = 0;
	e->state = 1;
	e->status = r->status;
	snprintf(e->error, sizeof(e->error), "%s", r->error);
	snprintf(e->site, sizeof(e->site), "%s", r->status == DNS_OK ? r->site_name : "");
	if (r->status == DNS_OK && r->nhosts) {
		e->hosts = xcalloc(r->nhosts, sizeof(*e->hosts));
		for (size_t i = 0; i < r->nhosts; i++)
			e->hosts[i] = xstrdup(r->hosts[i].name ? r->hosts[i].name : "");
		e->nhosts = r->nhosts;
	}
	uint64_t keep = (uint64_t)r->ttl * 1000u;
	if (r->status == DNS_TEMPFAIL)
		keep = MX_TEMPFAIL_RETRY_MS; /* asked again soon */
	else if (keep < MX_MIN_KEEP_MS)
		keep = MX_MIN_KEEP_MS;
	e->fresh_until_ms = now_ms() + keep;
}

static int l_kumod_mx(lua_State *L)
{
	const char *in = luaL_checkstring(L, 1);
	char domain[256];
	size_t n = strlen(in);
	if (n == 0 || n >= sizeof(domain))
		return luaL_error(L, "kumo.shaping.kumod_mx: invalid domain '%s'", in);
	for (size_t i = 0; i <= n; i++)
		domain[i] = (char)((in[i] >= 'A' && in[i] <= 'Z') ? in[i] + 32 : in[i]);
	if (n > 1 && domain[n - 1] == '.')
		domain[n - 1] = 0;
	size_t b = mx_hash(domain);
	struct mx_entry *e = mx_cache[b];
	while (e && strcmp(e->domain, domain) != 0)
		e = e->next;
	if (!e) {
		e = xcalloc(1, sizeof(*e));
		e->domain = xstrdup(domain);
		e->next = mx_cache[b];
		mx_cache[b] = e;
	}
	if (!e->inflight && (e->state == 0 || now_ms() >= e->fresh_until_ms) &&
	    !lua_engine__validating()) {
		e->inflight = 1;
		dns_resolve_mx(e->domain, mx_done, e);
	}
	if (e->state == 0) {
		lua_pushnil(L);
		lua_pushliteral(L, "pending");
		return 2;
	}
	if (e->status != DNS_OK) {
		lua_pushnil(L);
		lua_pushfstring(L, "%s: %s", dns_status_name(e->status), e->error);
		return 2;
	}
	lua_pushstring(L, e->site);
	lua_createtable(L, (int)e->nhosts, 0);
	for (size_t i = 0; i < e->nhosts; i++) {
		lua_pushstring(L, e->hosts[i]);
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
	return 2;
}

/* --- automation ------------------------------------------------------------------ */

static int l_kumod_threshold(lua_State *L)
{
	const char *key = luaL_checkstring(L, 1);
	const char *spec = luaL_checkstring(L, 2);
	struct rate_spec rs;
	if (rate_spec_parse(spec, &rs) != 0)
		return luaL_error(L, "kumo.shaping.kumod_threshold: invalid Threshold '%s'", spec);
	if (rs.limit > 100000)
		return luaL_error(L,
				  "kumo.shaping.kumod_threshold: Threshold '%s': at most 100000 "
				  "events per period",
				  spec);
	size_t count = shaping_auto_threshold(key, (size_t)rs.limit, rs.period_ms);
	lua_pushinteger(L, (lua_Integer)count);
	lua_pushinteger(L, (lua_Integer)rs.limit);
	return 2;
}

static const char *opt_field(lua_State *L, const char *k)
{
	lua_getfield(L, 1, k);
	const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
	lua_pop(L, 1); /* the table keeps the string alive */
	return s;
}

static int l_kumod_fire(lua_State *L)
{
	static const char fn[] = "kumo.shaping.kumod_fire";
	static const char *const keys[] = {"action",	  "rule",     "duration", "rollup",
					   "ready_queue", "source",   "site",	  "domain",
					   "tenant",	  "campaign", "name",	  "value"};
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_pushnil(L);
	while (lua_next(L, 1)) {
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
		size_t i = 0;
		while (i < sizeof(keys) / sizeof(keys[0]) && strcmp(keys[i], k) != 0)
			i++;
		if (i == sizeof(keys) / sizeof(keys[0]))
			return lua_api__unknown_key(L, fn, k, keys, sizeof(keys) / sizeof(keys[0]));
		lua_pop(L, 1);
	}
	struct shaping_auto_req q = {0};
	const char *an = opt_field(L, "action");
	int a = an ? shaping_auto_action_parse(an) : -1;
	if (a < 0)
		return luaL_error(L, "%s: unknown action '%s'", fn, an ? an : "(none)");
	q.action = (enum shaping_auto_action)a;
	q.rule = opt_field(L, "rule");
	lua_getfield(L, 1, "duration");
	lua_Number secs = lua_tonumber(L, -1);
	lua_pop(L, 1);
	if (!(secs > 0) || secs > 10.0 * 365 * 86400)
		return luaL_error(L, "%s: duration must be a positive number of seconds", fn);
	q.duration_ms = (uint64_t)(secs * 1000.0 + 0.5);
	lua_getfield(L, 1, "rollup");
	q.rollup = lua_toboolean(L, -1);
	lua_pop(L, 1);
	q.ready_queue = opt_field(L, "ready_queue");
	q.source = opt_field(L, "source");
	q.site = opt_field(L, "site");
	q.domain = opt_field(L, "domain");
	q.tenant = opt_field(L, "tenant");
	q.campaign = opt_field(L, "campaign");
	q.name = opt_field(L, "name");
	json_t *value = NULL;
	lua_getfield(L, 1, "value");
	if (!lua_isnil(L, -1)) {
		char err[256];
		value = lua_json__to_json(L, lua_gettop(L), err, sizeof(err));
		if (!value)
			return luaL_error(L, "%s: value: %s", fn, err);
	}
	lua_pop(L, 1);
	q.value = value;
	char err[256];
	int rc = shaping_auto_fire(&q, err, sizeof(err));
	json_decref(value);
	if (rc < 0)
		return luaL_error(L, "%s: %s", fn, err);
	lua_pushboolean(L, rc == 1);
	return 1;
}

static int l_kumod_overrides(lua_State *L)
{
	const char *domain = luaL_checkstring(L, 1);
	const char *source = luaL_checkstring(L, 2);
	const char *site = luaL_optstring(L, 3, "");
	uint64_t left = 0;
	json_t *o = shaping_auto_overrides(domain, source, site, &left);
	if (!o) {
		lua_pushnil(L);
		return 1;
	}
	lua_json__push(L, o);
	json_decref(o);
	lua_pushnumber(L, (lua_Number)left / 1000.0);
	return 2;
}

static int l_kumod_automation_list(lua_State *L)
{
	json_t *a = shaping_auto_list();
	lua_json__push(L, a);
	json_decref(a);
	return 1;
}

static const luaL_Reg funcs[] = {
    {"kumod_mx", l_kumod_mx},
    {"kumod_threshold", l_kumod_threshold},
    {"kumod_fire", l_kumod_fire},
    {"kumod_overrides", l_kumod_overrides},
    {"kumod_automation_list", l_kumod_automation_list},
    {NULL, NULL},
};

void lua_shaping__register(lua_State *L)
{
	luaL_setfuncs(L, funcs, 0);
}
