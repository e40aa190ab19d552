/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.spf: KumoMTA's check_host(domain, conn_meta, sender) and check_msg(msg)
 * (RFC 7208 check_host()). The evaluation is a state machine driven by
 * kumod/dns/resolver.c callbacks on the loop: the handler's coroutine waits
 * (lua_engine__wait) and nothing blocks. Records, macros and address matching
 * are kumod/proto/spf.c. Limits (RFC 7208 4.6.4): 10 mechanisms or modifiers
 * that query DNS (include, a, mx, ptr, exists, redirect), 2 void lookups, 10
 * MX or PTR names per mechanism. Named resolvers are refused, as in kumo.dns. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "dns/resolver.h"
#include "ktrace.h"
#include "lua/lua_int.h"
#include "proto/dns_name.h"
#include "proto/spf.h"
#include "spool/message.h"
#include "spool/timeline.h"

#define SPF_MAX_DNS_TERMS 10
#define SPF_MAX_VOID 2
#define SPF_MAX_NAMES 10 /* MX exchanges or PTR names looked at per mechanism */
#define SPF_MAX_DEPTH (SPF_MAX_DNS_TERMS + 2)

struct spf_frame {
	char domain[256];
	struct spf_record rec;
	size_t term;	/* the directive being evaluated */
	int redirected; /* reached by redirect=: "none" there is a permerror */
};

/* One check_host() run; owned by whichever DNS callback is pending. */
struct spf_eval {
	uint64_t call; /* the waiting handler (lua_engine) */
	char msg_id[MESSAGE_ID_LEN + 1];
	char *sender, *helo, *receiver;
	char *who; /* <sender> for the macros */
	char ip_text[INET6_ADDRSTRLEN];
	struct spf_macro_ctx mc;
	unsigned dns_terms, voids;
	size_t depth;
	struct spf_frame frames[SPF_MAX_DEPTH];
	/* the mechanism in progress (a, mx, ptr) */
	char target[256];
	char **names;
	size_t nnames, name_i;
	enum spf_result result;
	char reason[400];
	uint64_t t0;
	struct task *task; /* "spf_check": its phase names the lookup waited for */
};

static void eval_free(struct spf_eval *e)
{
	if (e->task) {
		task_set_phase(e->task, "Done", NULL);
		task_close(e->task);
	}
	for (size_t i = 0; i < SPF_MAX_DEPTH; i++)
		spf_record_free(&e->frames[i].rec);
	for (size_t i = 0; i < e->nnames; i++)
		free(e->names[i]);
	free(e->names);
	free(e->sender);
	free(e->who);
	free(e->helo);
	free(e->receiver);
	free(e);
}

static void names_clear(struct spf_eval *e)
{
	for (size_t i = 0; i < e->nnames; i++)
		free(e->names[i]);
	free(e->names);
	e->names = NULL;
	e->nnames = e->name_i = 0;
}

static struct spf_frame *top(struct spf_eval *e)
{
	return &e->frames[e->depth - 1];
}

static void step(struct spf_eval *e);
static void frame_done(struct spf_eval *e, enum spf_result r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void look_up_record(struct spf_eval *e);

/* --- completion ------------------------------------------------------------------- */

static void push_str_field(lua_State *L, const char *k, const char *v)
{
	lua_pushstring(L, v);
	lua_setfield(L, -2, k);
}

/* KumoMTA's CheckHostOutput: {disposition, result = AuthenticationResult}. */
static void push_output(lua_State *L, const struct spf_eval *e)
{
	const char *res = spf_result_name(e->result);
	lua_createtable(L, 0, 2);
	push_str_field(L, "disposition", res);
	lua_createtable(L, 0, 4);
	push_str_field(L, "method", "spf");
	push_str_field(L, "result", res);
	push_str_field(L, "reason", e->reason);
	lua_createtable(L, 0, 2);
	if (e->sender)
		push_str_field(L, "smtp.mailfrom", e->sender);
	if (e->helo)
		push_str_field(L, "smtp.helo", e->helo);
	lua_setfield(L, -2, "props");
	lua_setfield(L, -2, "result");
}

static void finish(struct spf_eval *e)
{
	uint64_t ns = clock_mono_ns() - e->t0;
	KTRACE(spf_check, e->msg_id, e->frames[0].domain, e->ip_text, spf_result_name(e->result),
	       (uint64_t)e->dns_terms, ns);
	if (e->msg_id[0])
		MSG_TIMELINE(e->msg_id, "SPF", "%s for %s from %s: %s", spf_result_name(e->result),
			     e->frames[0].domain, e->ip_text, e->reason);
	lua_State *co = lua_engine__thread(e->call);
	uint64_t call = e->call;
	if (co) {
		lua_pushnil(co);
		push_output(co, e);
	}
	eval_free(e);
	if (co)
		lua_engine__wake(call, 2);
}

/* The handler is gone (its call was dropped): stop without a result. */
static int abandoned(struct spf_eval *e)
{
	if (lua_engine__thread(e->call))
		return 0;
	eval_free(e);
	return 1;
}

/* The top frame's result is r: the check's when it is the first frame,
 * otherwise the include= that pushed it matches or not (RFC 7208 5.2). */
static void frame_done(struct spf_eval *e, enum spf_result r, const char *fmt, ...)
{
	char why[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	spf_record_free(&top(e)->rec);
	if (e->depth == 1) {
		e->result = r;
		snprintf(e->reason, sizeof(e->reason), "%s", why);
		finish(e);
		return;
	}
	char inc[256];
	snprintf(inc, sizeof(inc), "%s", top(e)->domain);
	e->depth--;
	struct spf_frame *f = top(e);
	const struct spf_term *t = &f->rec.terms[f->term];
	switch (r) {
	case SPF_PASS:
		frame_done(e, t->qual, "matched '%s' directive", t->text);
		return;
	case SPF_TEMPERROR:
		frame_done(e, SPF_TEMPERROR, "temperror while evaluating include:%s: %s", inc, why);
		return;
	case SPF_PERMERROR:
	case SPF_NONE:
		frame_done(e, SPF_PERMERROR, "%s while evaluating include:%s: %s",
			   spf_result_name(r), inc, why);
		return;
	default:
		f->term++;
		step(e);
	}
}

/* --- DNS steps ---------------------------------------------------------------------- */

/* Counts a DNS-querying term; 0, or -1 after ending the check with permerror. */
static int count_dns_term(struct spf_eval *e)
{
	if (++e->dns_terms <= SPF_MAX_DNS_TERMS)
		return 0;
	e->depth = 1;
	frame_done(e, SPF_PERMERROR, "DNS lookup limits exceeded");
	return -1;
}

/* A lookup found nothing: counts a void lookup; -1 after ending with permerror. */
static int count_void(struct spf_eval *e)
{
	if (++e->voids <= SPF_MAX_VOID)
		return 0;
	e->depth = 1;
	frame_done(e, SPF_PERMERROR, "void DNS lookup limit exceeded");
	return -1;
}

/* Expands domain_spec (NULL: the frame's domain) into e->target; -1 after
 * ending the frame with permerror. */
static int expand_target(struct spf_eval *e, const char *spec)
{
	struct spf_frame *f = top(e);
	if (!spec) {
		snprintf(e->target, sizeof(e->target), "%s", f->domain);
		return 0;
	}
	struct buf out;
	char err[160];
	buf_init(&out);
	e->mc.domain = f->domain;
	int rc = spf_macro_expand(spec, strlen(spec), &e->mc, 0, &out, err, sizeof(err));
	if (rc == 0)
		snprintf(e->target, sizeof(e->target), "%s", buf_cstr(&out));
	buf_free(&out);
	if (rc != 0) {
		frame_done(e, SPF_PERMERROR, "error evaluating domain spec: %s", err);
		return -1;
	}
	return 0;
}

static void no_match(struct spf_eval *e)
{
	top(e)->term++;
	step(e);
}

static void matched(struct spf_eval *e)
{
	const struct spf_term *t = &top(e)->rec.terms[top(e)->term];
	frame_done(e, t->qual, "matched '%s' directive", t->text);
}

/* The client address is among host's addresses (under the term's prefixes). */
static int host_matches(const struct spf_eval *e, const struct dns_host *h,
			const struct spf_term *t)
{
	for (size_t i = 0; i < h->naddrs; i++) {
		const struct sockaddr_storage *ss = &h->addrs[i];
		if (ss->ss_family == AF_INET &&
		    spf_ip_match(e->mc.v6, e->mc.ip, 0,
				 (const unsigned char *)&((const struct sockaddr_in *)ss)->sin_addr,
				 t->cidr4))
			return 1;
		if (ss->ss_family == AF_INET6 &&
		    spf_ip_match(
			e->mc.v6, e->mc.ip, 1,
			(const unsigned char *)&((const struct sockaddr_in6 *)ss)->sin6_addr,
			t->cidr6))
			return 1;
	}
	return 0;
}

static void a_done(void *ctx, const struct dns_mx_result *r)
{
	struct spf_eval *e = ctx;
	if (abandoned(e))
		return;
	const struct spf_term *t = &top(e)->rec.terms[top(e)->term];
	if (r->status == DNS_TEMPFAIL) {
		frame_done(e, SPF_TEMPERROR, "error looking up IP for %s: %s", e->target, r->error);
		return;
	}
	if (r->status != DNS_OK || !r->nhosts || !r->hosts[0].naddrs) {
		if (count_void(e) == 0)
			no_match(e);
		return;
	}
	if (host_matches(e, &r->hosts[0], t))
		matched(e);
	else
		no_match(e);
}

/* mx and ptr: the next name's addresses, or the end of the list (no match). */
static void names_next(struct spf_eval *e);

static void name_addr_done(void *ctx, const struct dns_mx_result *r)
{
	struct spf_eval *e = ctx;
	if (abandoned(e))
		return;
	const struct spf_term *t = &top(e)->rec.terms[top(e)->term];
	if (r->status == DNS_TEMPFAIL && t->mech == SPF_MX) {
		frame_done(e, SPF_TEMPERROR, "error looking up IP for %s: %s", e->names[e->name_i],
			   r->error);
		return;
	}
	int hit = 0;
	if (r->status == DNS_OK && r->nhosts) {
		if (t->mech == SPF_PTR) { /* the validated name must be the target or under it */
			struct spf_term any = *t;
			any.cidr4 = 32;
			any.cidr6 = 128;
			const char *n = e->names[e->name_i];
			size_t nl = strlen(n), tl = strlen(e->target);
			int sub = nl == tl  ? strcasecmp(n, e->target) == 0
				  : nl > tl ? n[nl - tl - 1] == '.' &&
						  strcasecmp(n + nl - tl, e->target) == 0
					    : 0;
			hit = sub && host_matches(e, &r->hosts[0], &any);
		} else {
			hit = host_matches(e, &r->hosts[0], t);
		}
	}
	if (hit) {
		names_clear(e);
		matched(e);
		return;
	}
	e->name_i++;
	names_next(e);
}

static void names_next(struct spf_eval *e)
{
	while (e->name_i < e->nnames && !e->names[e->name_i][0])
		e->name_i++; /* the root (null MX) has no address */
	if (e->name_i >= e->nnames) {
		names_clear(e);
		no_match(e);
		return;
	}
	dns_resolve_host(e->names[e->name_i], name_addr_done, e);
}

static void names_done(void *ctx, const struct dns_records_result *r)
{
	struct spf_eval *e = ctx;
	if (abandoned(e))
		return;
	const struct spf_term *t = &top(e)->rec.terms[top(e)->term];
	if (r->status == DNS_TEMPFAIL) {
		if (t->mech == SPF_PTR) /* RFC 7208 5.5: a PTR failure is no match */
			no_match(e);
		else
			frame_done(e, SPF_TEMPERROR, "error looking up MX for %s: %s", e->target,
				   r->error);
		return;
	}
	if (r->status != DNS_OK || !r->n) {
		if (count_void(e) == 0)
			no_match(e);
		return;
	}
	if (t->mech == SPF_MX && r->n > SPF_MAX_NAMES) {
		frame_done(e, SPF_PERMERROR, "too many MX records for %s", e->target);
		return;
	}
	size_t n = r->n > SPF_MAX_NAMES ? SPF_MAX_NAMES : r->n; /* PTR: the first 10 */
	names_clear(e);
	e->names = xcalloc(n, sizeof(*e->names));
	for (size_t i = 0; i < n; i++)
		e->names[i] = xstrdup(r->records[i].text);
	e->nnames = n;
	names_next(e);
}

static void exists_done(void *ctx, const struct dns_records_result *r)
{
	struct spf_eval *e = ctx;
	if (abandoned(e))
		return;
	if (r->status == DNS_TEMPFAIL) {
		frame_done(e, SPF_TEMPERROR, "error looking up %s: %s", e->target, r->error);
		return;
	}
	if (r->status != DNS_OK || !r->n) {
		if (count_void(e) == 0)
			no_match(e);
		return;
	}
	matched(e);
}

/* --- the record ------------------------------------------------------------------- */

static void txt_done(void *ctx, const struct dns_records_result *r)
{
	struct spf_eval *e = ctx;
	if (abandoned(e))
		return;
	struct spf_frame *f = top(e);
	if (r->status == DNS_TEMPFAIL) {
		frame_done(e, SPF_TEMPERROR, "error looking up TXT for %s: %s", f->domain,
			   r->error);
		return;
	}
	const struct dns_record *rec = NULL;
	size_t found = 0;
	for (size_t i = 0; r->status == DNS_OK && i < r->n; i++)
		if (spf_is_record(r->records[i].text, r->records[i].len))
			rec = &r->records[i], found++;
	enum spf_result none = f->redirected ? SPF_PERMERROR : SPF_NONE;
	if (r->status != DNS_OK || !r->n) {
		if (e->depth > 1 || f->redirected) /* an include/redirect target: void lookup */
			if (count_void(e) < 0)
				return;
		if (r->status == DNS_OK)
			frame_done(e, none, "no SPF records found for %s", f->domain);
		else
			frame_done(e, none, "domain %s not found", f->domain);
		return;
	}
	if (!found) {
		frame_done(e, none, "no SPF records found for %s", f->domain);
		return;
	}
	if (found > 1) {
		frame_done(e, SPF_PERMERROR, "multiple SPF records found for %s", f->domain);
		return;
	}
	char err[200];
	if (memchr(rec->text, 0, rec->len) ||
	    spf_record_parse(rec->text, rec->len, &f->rec, err, sizeof(err)) != 0) {
		frame_done(e, SPF_PERMERROR, "failed to parse spf record: %s",
			   memchr(rec->text, 0, rec->len) ? "NUL byte" : err);
		return;
	}
	f->term = 0;
	step(e);
}

static void look_up_record(struct spf_eval *e)
{
	struct spf_frame *f = top(e);
	char norm[256];
	if (!spf_domain_valid(f->domain) ||
	    dns_name_normalize(f->domain, norm, sizeof(norm)) != 0) {
		enum spf_result r = e->depth == 1 && !f->redirected ? SPF_NONE : SPF_PERMERROR;
		frame_done(e, r, "invalid domain name: %s", f->domain);
		return;
	}
	snprintf(f->domain, sizeof(f->domain), "%s", norm);
	task_set_phase(e->task, "record", "dns");
	dns_lookup_records(f->domain, DNS_RR_TXT, txt_done, e);
}

/* Starts the DNS work of term t (include, a, mx, ptr, exists). */
static void run_term(struct spf_eval *e, const struct spf_term *t)
{
	if (count_dns_term(e) < 0 || expand_target(e, t->domain_spec) < 0)
		return;
	KTRACE(spf_term, e->msg_id, top(e)->domain, spf_mech_name(t->mech), e->target,
	       (uint64_t)e->dns_terms);
	task_set_phase(e->task, spf_mech_name(t->mech), "dns");
	char norm[256];
	int valid =
	    spf_domain_valid(e->target) && dns_name_normalize(e->target, norm, sizeof(norm)) == 0;
	if (t->mech == SPF_INCLUDE) {
		if (e->depth >= SPF_MAX_DEPTH) {
			frame_done(e, SPF_PERMERROR, "DNS lookup limits exceeded");
			return;
		}
		struct spf_frame *c = &e->frames[e->depth++];
		memset(c, 0, sizeof(*c));
		snprintf(c->domain, sizeof(c->domain), "%s", e->target);
		look_up_record(e);
		return;
	}
	if (!valid) { /* a name no query can ask for: no match */
		no_match(e);
		return;
	}
	snprintf(e->target, sizeof(e->target), "%s", norm);
	char rev[DNS_REVERSE_MAX];
	switch (t->mech) {
	case SPF_A:
		dns_resolve_host(e->target, a_done, e);
		return;
	case SPF_MX:
		dns_lookup_records(e->target, DNS_RR_MX, names_done, e);
		return;
	case SPF_PTR:
		if (dns_reverse_ip(e->ip_text, 1, rev, sizeof(rev)) < 0) {
			no_match(e);
			return;
		}
		dns_lookup_records(rev, DNS_RR_PTR, names_done, e);
		return;
	case SPF_EXISTS:
		dns_lookup_records(e->target, DNS_RR_A, exists_done, e);
		return;
	default:
		no_match(e);
	}
}

/* Evaluates the top frame from its current term on. */
static void step(struct spf_eval *e)
{
	struct spf_frame *f = top(e);
	for (; f->term < f->rec.nterms; f->term++) { /* a loop: records may hold many ip4 */
		const struct spf_term *t = &f->rec.terms[f->term];
		if (t->mech == SPF_ALL) {
			matched(e);
			return;
		}
		if (t->mech != SPF_IP4 && t->mech != SPF_IP6) {
			run_term(e, t);
			return;
		}
		if (spf_ip_match(e->mc.v6, e->mc.ip, t->mech == SPF_IP6, t->net,
				 t->mech == SPF_IP6 ? t->cidr6 : t->cidr4)) {
			matched(e);
			return;
		}
	}
	if (!f->rec.redirect) {
		frame_done(e, SPF_NEUTRAL, "default result");
		return;
	}
	/* redirect=: the target's result replaces this record's (RFC 7208 6.1) */
	if (count_dns_term(e) < 0 || expand_target(e, f->rec.redirect) < 0)
		return;
	KTRACE(spf_term, e->msg_id, f->domain, "redirect", e->target, (uint64_t)e->dns_terms);
	spf_record_free(&f->rec);
	snprintf(f->domain, sizeof(f->domain), "%s", e->target);
	f->redirected = 1;
	f->term = 0;
	look_up_record(e);
}

/* --- Lua ---------------------------------------------------------------------------- */

static int check_k(lua_State *L, int status, lua_KContext ctx)
{
	(void)status;
	(void)ctx;
	if (!lua_isnil(L, -2)) {
		lua_pushvalue(L, -2);
		return lua_error(L);
	}
	return 1;
}

static void no_named_resolver(lua_State *L, const char *fn, int idx)
{
	if (!lua_isnoneornil(L, idx))
		luaL_error(L,
			   "%s: named resolvers (kumo.dns.define_resolver) are not implemented in "
			   "kumod; omit the resolver name",
			   fn);
}

/* obj:get_meta(key) as a string or NULL (left on the stack). */
static const char *meta_of(lua_State *L, int obj, const char *key)
{
	lua_getfield(L, obj, "get_meta");
	lua_pushvalue(L, obj);
	lua_pushstring(L, key);
	lua_call(L, 2, 1);
	return lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
}

static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

/* Starts the check of domain for the client at ip (text) and waits for it. */
static int start(lua_State *L, const char *fn, const char *domain, const char *ip,
		 const char *sender, const char *helo, const char *receiver, const char *msg_id)
{
	char bare[INET6_ADDRSTRLEN];
	unsigned char bytes[16];
	int v6 = 0;
	if (!ip || dns_ip_of_socket(ip, bare, sizeof(bare)) != 0)
		return luaL_error(L, "%s: %s", fn,
				  ip ? "received_from is not an IP address"
				     : "received_from missing from metadata");
	if (inet_pton(AF_INET, bare, bytes) != 1) {
		if (inet_pton(AF_INET6, bare, bytes) != 1)
			return luaL_error(L, "%s: '%s' is not an IP address", fn, bare);
		v6 = 1;
		if (IN6_IS_ADDR_V4MAPPED((struct in6_addr *)bytes)) { /* ::ffff:a.b.c.d */
			memmove(bytes, bytes + 12, 4);
			v6 = 0;
			inet_ntop(AF_INET, bytes, bare, sizeof(bare));
		}
	}
	if (!spf_domain_valid(domain) || strlen(domain) > 253) { /* RFC 7208 4.3, no DNS */
		struct spf_eval bad = {
		    .result = SPF_NONE, .sender = (char *)sender, .helo = (char *)helo};
		snprintf(bad.reason, sizeof(bad.reason), "invalid domain name: %s", domain);
		push_output(L, &bad);
		return 1;
	}
	uint64_t call = lua_engine__wait_begin(L, fn);
	struct spf_eval *e = xcalloc(1, sizeof(*e));
	e->call = call;
	e->t0 = clock_mono_ns();
	snprintf(e->msg_id, sizeof(e->msg_id), "%s", msg_id ? msg_id : "");
	snprintf(e->ip_text, sizeof(e->ip_text), "%s", bare);
	char tname[300];
	snprintf(tname, sizeof(tname), "%s %s", domain, bare);
	e->task = task_spawn("spf_check", tname, task_current_id());
	e->sender = dup_or_null(sender);
	e->helo = dup_or_null(helo);
	e->receiver = dup_or_null(receiver);
	e->mc.v6 = v6;
	memcpy(e->mc.ip, bytes, 16);
	/* <sender> with no local-part: "postmaster@domain" (RFC 7208 4.3) */
	if (sender && *sender && sender[0] != '@') {
		e->who = xstrdup(sender);
	} else {
		size_t n = strlen(domain) + 12;
		e->who = xmalloc(n);
		snprintf(e->who, n, "postmaster@%s", domain);
	}
	e->mc.sender = e->who;
	e->mc.helo = e->helo;
	e->mc.receiver = e->receiver;
	e->mc.now = (int64_t)time(NULL);
	e->depth = 1;
	if (strlen(domain) < sizeof(e->frames[0].domain))
		snprintf(e->frames[0].domain, sizeof(e->frames[0].domain), "%s", domain);
	look_up_record(e);
	return lua_engine__wait(L, 0, check_k);
}

static int l_check_host(lua_State *L)
{
	const char *fn = "kumo.spf.check_host";
	const char *domain = luaL_checkstring(L, 1);
	const char *sender = luaL_optstring(L, 3, NULL);
	no_named_resolver(L, fn, 4);
	const char *ip = NULL, *helo = NULL, *receiver = NULL;
	if (lua_type(L, 2) == LUA_TSTRING) { /* kumod: an IP address instead of conn_meta */
		ip = lua_tostring(L, 2);
		helo = sender ? NULL : domain;
	} else if (luaL_testudata(L, 2, LUA_KUMO_CONN_META_MT)) {
		ip = meta_of(L, 2, "received_from");
		helo = sender ? meta_of(L, 2, "ehlo_domain") : domain;
		receiver = meta_of(L, 2, "hostname");
	} else {
		return luaL_error(L, "%s: argument 2: expected conn_meta or an IP address, got %s",
				  fn, luaL_typename(L, 2));
	}
	return start(L, fn, domain, ip, sender, helo, receiver, NULL);
}

static int l_check_msg(lua_State *L)
{
	const char *fn = "kumo.spf.check_msg";
	struct message *m = lua_message__check(L, 1);
	no_named_resolver(L, fn, 2);
	const char *sender = m->sender ? m->sender : "";
	const char *at = strrchr(sender, '@');
	const char *domain = at ? at + 1 : message_get_meta_str(m, "ehlo_domain");
	if (!domain)
		return luaL_error(L, "%s: the message has a null sender and no ehlo_domain", fn);
	return start(L, fn, domain, message_get_meta_str(m, "received_from"), sender,
		     message_get_meta_str(m, "ehlo_domain"), message_get_meta_str(m, "hostname"),
		     m->id);
}

static const luaL_Reg spf_funcs[] = {
    {"check_host", l_check_host},
    {"check_msg", l_check_msg},
    {NULL, NULL},
};

void lua_spf__open(lua_State *L)
{
	luaL_newlib(L, spf_funcs);
	lua_setfield(L, -2, "spf");
}
