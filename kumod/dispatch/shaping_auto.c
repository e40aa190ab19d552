/* SPDX-License-Identifier: Apache-2.0 */
/* Traffic shaping automation effects (see shaping_auto.h). */
#include "dispatch/shaping_auto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/clock.h"
#include "base/xalloc.h"
#include "dispatch/ready.h"
#include "io/loop.h"
#include "ktrace.h"
#include "proto/duration.h"
#include "queue/auto_window.h"
#include "queue/queue.h"

static uint64_t now_ms(void)
{
	return clock_wall_ns() / 1000000u;
}

static const char *const action_names[SA__COUNT] = {
    "Suspend",	    "SuspendTenant",  "SuspendCampaign", "Bounce",
    "BounceTenant", "BounceCampaign", "SetConfig",	 "SetDomainConfig",
};

struct effect {
	enum shaping_auto_action action;
	char *key;   /* action|scope|rule|name: identifies a live effect */
	char *scope; /* "ready_queue=...", "domain=... tenant=...", "source=... site=..." */
	char *rule;
	char *effect;	/* suspension id, bounce id or "name=value" */
	char *admin_id; /* the admin entry it created (suspension UUID, bounce id) */
	/* config overrides: where they apply */
	char *source, *site, *domain, *name;
	json_t *value;
	uint64_t expires_ms;
	struct effect *next;
};

static struct {
	struct effect *head;
	size_t count;
	struct auto_window_set *windows;
	uint64_t windows_pruned_ms;
	uv_timer_t timer;
	int timer_init, closed;
	struct shaping_auto_stats st;
} SA;

const char *shaping_auto_action_name(enum shaping_auto_action a)
{
	return a < SA__COUNT ? action_names[a] : "?";
}

int shaping_auto_action_parse(const char *name)
{
	for (int i = 0; i < SA__COUNT; i++)
		if (strcmp(action_names[i], name) == 0)
			return i;
	return -1;
}

static int blank(const char *s)
{
	return !s || !*s;
}

static void effect_free(struct effect *e)
{
	free(e->key);
	free(e->scope);
	free(e->rule);
	free(e->effect);
	free(e->admin_id);
	free(e->source);
	free(e->site);
	free(e->domain);
	free(e->name);
	json_decref(e->value);
	free(e);
}

static void arm(void);

/* A config override that starts or ends: the paths it touches load their
 * configuration again when next used. */
static void refresh_paths(const struct effect *e)
{
	ready_path_refresh(e->source, e->site);
}

static void expire_due(void)
{
	uint64_t now = now_ms();
	struct effect **pp = &SA.head;
	while (*pp) {
		struct effect *e = *pp;
		if (e->expires_ms > now) {
			pp = &e->next;
			continue;
		}
		*pp = e->next;
		SA.count--;
		SA.st.expired++;
		KTRACE(shaping_auto_expire, shaping_auto_action_name(e->action), e->scope,
		       e->effect);
		if (e->name)
			refresh_paths(e);
		effect_free(e);
	}
}

static void timer_cb(uv_timer_t *t)
{
	(void)t;
	expire_due();
	arm();
}

static void arm(void)
{
	if (SA.closed)
		return;
	if (!SA.timer_init) {
		uv_timer_init(kumod_loop(), &SA.timer);
		SA.timer_init = 1;
	}
	uint64_t next = 0, now = now_ms();
	for (const struct effect *e = SA.head; e; e = e->next)
		if (!next || e->expires_ms < next)
			next = e->expires_ms;
	if (!next)
		uv_timer_stop(&SA.timer);
	else
		uv_timer_start(&SA.timer, timer_cb, next > now ? next - now : 0, 0);
}

static struct effect *live(const char *key)
{
	uint64_t now = now_ms();
	for (struct effect *e = SA.head; e; e = e->next)
		if (e->expires_ms > now && strcmp(e->key, key) == 0)
			return e;
	return NULL;
}

/* 1 while the admin entry an effect created is still listed (an operator
 * may have cancelled it: kcli suspend-ready-q-cancel, ...). */
static int admin_entry_listed(const struct effect *e)
{
	json_t *l;
	switch (e->action) {
	case SA_SUSPEND:
		l = ready_admin_suspend_list();
		break;
	case SA_SUSPEND_TENANT:
	case SA_SUSPEND_CAMPAIGN:
		l = queue_admin_suspend_list();
		break;
	case SA_BOUNCE:
	case SA_BOUNCE_TENANT:
	case SA_BOUNCE_CAMPAIGN:
		l = queue_admin_bounce_list();
		break;
	default:
		return 1; /* a path override: ours alone */
	}
	int found = 0;
	size_t i;
	json_t *x;
	json_array_foreach(l, i, x)
	{
		json_t *id = json_object_get(x, "id");
		char num[32];
		const char *s = json_string_value(id);
		if (!s && json_is_integer(id)) {
			snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(id));
			s = num;
		}
		if (s && e->admin_id && strcasecmp(s, e->admin_id) == 0)
			found = 1;
	}
	json_decref(l);
	return found;
}

/* Drops an effect whose admin entry was cancelled: the rule may fire again. */
static void forget_cancelled(struct effect *gone)
{
	for (struct effect **pp = &SA.head; *pp; pp = &(*pp)->next)
		if (*pp == gone) {
			*pp = gone->next;
			SA.count--;
			SA.st.expired++;
			KTRACE(shaping_auto_expire, shaping_auto_action_name(gone->action),
			       gone->scope, "cancelled by an operator");
			effect_free(gone);
			return;
		}
}

int shaping_auto_fire(const struct shaping_auto_req *q, char *err, size_t errlen)
{
	const char *an = shaping_auto_action_name(q->action);
	const char *domain = blank(q->domain) ? "" : q->domain;
	const char *tenant = blank(q->tenant) ? NULL : q->tenant;
	const char *campaign = blank(q->campaign) ? NULL : q->campaign;
	char scope[1200];
	switch (q->action) {
	case SA_SUSPEND:
		if (blank(q->ready_queue)) {
			snprintf(err, errlen, "Suspend: the record names no ready queue (site)");
			return -1;
		}
		snprintf(scope, sizeof(scope), "ready_queue=%s", q->ready_queue);
		break;
	case SA_SUSPEND_TENANT:
	case SA_SUSPEND_CAMPAIGN:
	case SA_BOUNCE_TENANT:
	case SA_BOUNCE_CAMPAIGN:
		if (!tenant) {
			snprintf(err, errlen, "%s: the record's queue has no tenant", an);
			return -1;
		}
		/* fall through */
	case SA_BOUNCE:
		if (q->action == SA_SUSPEND_TENANT || q->action == SA_BOUNCE_TENANT ||
		    q->action == SA_BOUNCE)
			campaign = NULL;
		if (q->action == SA_BOUNCE)
			tenant = NULL;
		snprintf(scope, sizeof(scope), "domain=%s%s%s%s%s", domain,
			 tenant ? " tenant=" : "", tenant ? tenant : "",
			 campaign ? " campaign=" : "", campaign ? campaign : "");
		break;
	case SA_SET_CONFIG:
	case SA_SET_DOMAIN_CONFIG:
		if (blank(q->name) || !q->value) {
			snprintf(err, errlen, "%s: needs a name and a value", an);
			return -1;
		}
		if (q->action == SA_SET_CONFIG && q->rollup)
			snprintf(scope, sizeof(scope), "source=%s site=%s",
				 q->source ? q->source : "", q->site ? q->site : "");
		else
			snprintf(scope, sizeof(scope), "source=%s domain=%s",
				 q->source ? q->source : "", domain);
		break;
	default:
		snprintf(err, errlen, "unknown action");
		return -1;
	}
	const char *rule = q->rule ? q->rule : "";
	size_t klen =
	    strlen(an) + strlen(scope) + strlen(rule) + (q->name ? strlen(q->name) : 0) + 4;
	char *key = xmalloc(klen);
	snprintf(key, klen, "%s|%s|%s|%s", an, scope, rule, q->name ? q->name : "");
	struct effect *same = live(key);
	if (same && !admin_entry_listed(same)) {
		forget_cancelled(same);
		same = NULL;
	}
	if (same) {
		SA.st.live_repeats++;
		KTRACE(shaping_auto_live, an, scope, rule);
		free(key);
		return 0;
	}
	uint64_t now = now_ms();
	uint64_t expires = now + (q->duration_ms ? q->duration_ms : 1);
	char reason[1400];
	snprintf(reason, sizeof(reason), "automation rule: %s", rule);
	struct effect *e = xcalloc(1, sizeof(*e));
	e->action = q->action;
	e->key = key;
	e->scope = xstrdup(scope);
	e->rule = xstrdup(rule);
	e->expires_ms = expires;
	char text[1400];
	switch (q->action) {
	case SA_SUSPEND:
		e->admin_id = xstrdup(ready_admin_suspend(q->ready_queue, reason, expires));
		snprintf(text, sizeof(text), "ready-queue suspension %s", e->admin_id);
		break;
	case SA_SUSPEND_TENANT:
	case SA_SUSPEND_CAMPAIGN:
		e->admin_id =
		    xstrdup(queue_admin_suspend(domain, tenant, campaign, reason, expires));
		snprintf(text, sizeof(text), "suspension %s", e->admin_id);
		break;
	case SA_BOUNCE:
	case SA_BOUNCE_TENANT:
	case SA_BOUNCE_CAMPAIGN: {
		struct queue_bounce_match mt = {
		    .domain = domain, .tenant = tenant, .campaign = campaign};
		size_t bounced = 0;
		uint64_t id = queue_admin_bounce(&mt, reason, q->duration_ms, &bounced);
		snprintf(text, sizeof(text), "%llu", (unsigned long long)id);
		e->admin_id = xstrdup(text);
		snprintf(text, sizeof(text), "bounce %llu (%zu bounced now)",
			 (unsigned long long)id, bounced);
		break;
	}
	default: {
		char *v = json_dumps(q->value, JSON_ENCODE_ANY | JSON_COMPACT);
		snprintf(text, sizeof(text), "%s=%s", q->name, v ? v : "?");
		free(v);
		e->name = xstrdup(q->name);
		e->value = json_deep_copy(q->value);
		e->source = xstrdup(q->source ? q->source : "");
		e->site = xstrdup(q->site ? q->site : "");
		if (q->action == SA_SET_DOMAIN_CONFIG || !q->rollup)
			e->domain = xstrdup(domain);
		break;
	}
	}
	e->effect = xstrdup(text);
	e->next = SA.head;
	SA.head = e;
	SA.count++;
	SA.st.fired[q->action]++;
	KTRACE(shaping_auto_fire, an, scope, rule, e->effect, expires - now);
	if (e->name)
		refresh_paths(e);
	arm();
	return 1;
}

size_t shaping_auto_threshold(const char *key, size_t limit, uint64_t period_ms)
{
	if (!SA.windows)
		SA.windows = auto_window_new();
	uint64_t now = now_ms();
	if (now - SA.windows_pruned_ms > 60000) { /* forget quiet keys now and then */
		auto_window_prune(SA.windows, now);
		SA.windows_pruned_ms = now;
	}
	return auto_window_hit(SA.windows, key, limit, period_ms, now);
}

/* Applies the overrides of one kind (site: domain NULL) to out. */
static void overrides_of(json_t **out, const char *domain, const char *source, const char *site,
			 int by_domain, uint64_t now, uint64_t *left_ms)
{
	/* newest first in the list: applied oldest first, so that a newer
	 * override of the same key wins */
	size_t n = 0;
	for (struct effect *e = SA.head; e; e = e->next)
		n++;
	struct effect **v = xcalloc(n ? n : 1, sizeof(*v));
	n = 0;
	for (struct effect *e = SA.head; e; e = e->next)
		if (e->name && e->expires_ms > now && strcmp(e->source, source) == 0 &&
		    (by_domain ? e->domain && strcasecmp(e->domain, domain) == 0
			       : !e->domain && strcmp(e->site, site) == 0))
			v[n++] = e;
	while (n--) {
		if (!*out)
			*out = json_object();
		json_object_set(*out, v[n]->name, v[n]->value);
		uint64_t left = v[n]->expires_ms - now;
		if (!*left_ms || left < *left_ms)
			*left_ms = left;
	}
	free(v);
}

json_t *shaping_auto_overrides(const char *domain, const char *source, const char *site,
			       uint64_t *left_ms)
{
	json_t *out = NULL;
	uint64_t now = now_ms();
	*left_ms = 0;
	if (!SA.head)
		return NULL;
	overrides_of(&out, domain ? domain : "", source ? source : "", site ? site : "", 0, now,
		     left_ms);
	overrides_of(&out, domain ? domain : "", source ? source : "", site ? site : "", 1, now,
		     left_ms);
	return out;
}

json_t *shaping_auto_list(void)
{
	json_t *a = json_array();
	uint64_t now = now_ms();
	for (const struct effect *e = SA.head; e; e = e->next) {
		if (e->expires_ms <= now || !admin_entry_listed(e))
			continue; /* ended, or its suspension or bounce was cancelled */
		char expires[40];
		rfc3339_format_ms(e->expires_ms, expires, sizeof(expires));
		json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:s, s:s}", "action",
						   shaping_auto_action_name(e->action), "scope",
						   e->scope, "rule", e->rule, "effect", e->effect,
						   "expires", expires));
	}
	return a;
}

void shaping_auto_get_stats(struct shaping_auto_stats *st)
{
	*st = SA.st;
	st->active = SA.count;
}

void shaping_auto_shutdown(void)
{
	if (SA.timer_init && !SA.closed)
		uv_close((uv_handle_t *)&SA.timer, NULL);
	SA.closed = 1;
}

void shaping_auto_free_all(void)
{
	while (SA.head) {
		struct effect *e = SA.head;
		SA.head = e->next;
		effect_free(e);
	}
	SA.count = 0;
	auto_window_free(SA.windows);
	SA.windows = NULL;
}
