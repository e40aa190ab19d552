/* SPDX-License-Identifier: Apache-2.0 */
/* Traffic shaping automation in-process: what KumoMTA's TSA daemon does
 * with the delivery records published to it, done inside kumod. The rules
 * are matched by policy-extras.shaping (Lua, from its log disposition
 * hook); this module enacts a rule that fired: ready-queue suspensions
 * (Suspend), scheduled-queue suspensions (SuspendTenant, SuspendCampaign)
 * and admin bounces (Bounce*) through kumod's admin entries (so they show
 * in kcli's listings), and egress path config overrides (SetConfig,
 * SetDomainConfig) that get_egress_path_config merges while they live. It
 * counts Threshold triggers, traces every firing and expiry
 * (shaping_auto_fire, shaping_auto_expire) and keeps counts for /metrics.
 * Nothing is persisted: a restart forgets the effects (KumoMTA's TSA keeps
 * them in its database). */
#ifndef KUMOD_DISPATCH_SHAPING_AUTO_H
#define KUMOD_DISPATCH_SHAPING_AUTO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

enum shaping_auto_action {
	SA_SUSPEND,
	SA_SUSPEND_TENANT,
	SA_SUSPEND_CAMPAIGN,
	SA_BOUNCE,
	SA_BOUNCE_TENANT,
	SA_BOUNCE_CAMPAIGN,
	SA_SET_CONFIG,
	SA_SET_DOMAIN_CONFIG,
	SA__COUNT,
};

/* KumoMTA's action names ("Suspend", "SetConfig", ...). */
const char *shaping_auto_action_name(enum shaping_auto_action a);
/* The action named name, or -1. */
int shaping_auto_action_parse(const char *name);

struct shaping_auto_req {
	enum shaping_auto_action action;
	const char *rule;     /* its regex(es), for reasons and traces */
	uint64_t duration_ms; /* >= 1 */
	int rollup;	      /* the rule came from `default` or an MX-rollup block */
	/* from the record: */
	const char *ready_queue; /* record.site: "source->site@proto" */
	const char *source, *site, *domain, *tenant, *campaign; /* "" or NULL: none */
	const char *name;					/* SetConfig: the path key */
	json_t *value;						/* SetConfig: borrowed */
};

/* Enacts a fired rule. 1: an effect was created; 0: the same effect (action,
 * scope, rule, key) is still live, nothing stacked; -1 with err (a tenant
 * action for a record without a tenant, ...). */
int shaping_auto_fire(const struct shaping_auto_req *q, char *err, size_t errlen);

/* Counts one match of a Threshold rule for key (rule and scope) and returns
 * how many fall in the last period_ms, this one included. */
size_t shaping_auto_threshold(const char *key, size_t limit, uint64_t period_ms);

/* The live config overrides for a path (new reference, an object name ->
 * value): those of the site (source, site) first, then those of the domain
 * (source, domain), later ones winning. NULL when none; *left_ms then gets
 * the least time left of those returned. */
json_t *shaping_auto_overrides(const char *domain, const char *source, const char *site,
			       uint64_t *left_ms);

/* Live effects as a JSON array (new reference): action, scope, rule,
 * effect, expires (RFC 3339). */
json_t *shaping_auto_list(void);

struct shaping_auto_stats {
	uint64_t fired[SA__COUNT];
	uint64_t expired, live_repeats;
	size_t active;
};
void shaping_auto_get_stats(struct shaping_auto_stats *st);

/* Stops the expiry timer (shutdown) / frees everything (after the loop). */
void shaping_auto_shutdown(void);
void shaping_auto_free_all(void);

#endif
