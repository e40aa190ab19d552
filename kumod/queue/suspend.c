/* SPDX-License-Identifier: Apache-2.0 */
/* Admin suspension entries: creation, matching, expiry. */
#include "queue/suspend.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/xalloc.h"

static char *opt_dup(const char *s)
{
	return s && *s ? xstrdup(s) : NULL;
}

struct suspend_entry *suspend_add(struct suspend_list *l, const char *domain, const char *tenant,
				  const char *campaign, const char *name, const char *reason,
				  uint64_t expires_ms)
{
	struct suspend_entry *e = xcalloc(1, sizeof(*e));
	uuid_random(e->id);
	e->domain = opt_dup(domain);
	e->tenant = opt_dup(tenant);
	e->campaign = opt_dup(campaign);
	e->name = opt_dup(name);
	e->reason = xstrdup(reason ? reason : "");
	e->expires_ms = expires_ms;
	/* appended: listings come out in creation order */
	struct suspend_entry **pp = &l->head;
	while (*pp)
		pp = &(*pp)->next;
	*pp = e;
	l->count++;
	return e;
}

void suspend_entry_free(struct suspend_entry *e)
{
	if (!e)
		return;
	free(e->domain);
	free(e->tenant);
	free(e->campaign);
	free(e->name);
	free(e->reason);
	free(e);
}

struct suspend_entry *suspend_take(struct suspend_list *l, const char *id)
{
	for (struct suspend_entry **pp = &l->head; *pp; pp = &(*pp)->next) {
		struct suspend_entry *e = *pp;
		if (strcasecmp(e->id, id) == 0) {
			*pp = e->next;
			e->next = NULL;
			l->count--;
			return e;
		}
	}
	return NULL;
}

size_t suspend_prune(struct suspend_list *l, uint64_t now,
		     void (*fn)(const struct suspend_entry *e, void *ctx), void *ctx)
{
	size_t n = 0;
	struct suspend_entry **pp = &l->head;
	while (*pp) {
		struct suspend_entry *e = *pp;
		if (e->expires_ms > now) {
			pp = &e->next;
			continue;
		}
		*pp = e->next;
		l->count--;
		n++;
		if (fn)
			fn(e, ctx);
		suspend_entry_free(e);
	}
	return n;
}

static int field_matches(const char *want, const char *have)
{
	return !want || strcasecmp(want, have ? have : "") == 0;
}

const struct suspend_entry *suspend_match_sched(const struct suspend_list *l, const char *domain,
						const char *tenant, const char *campaign,
						uint64_t now)
{
	for (const struct suspend_entry *e = l->head; e; e = e->next)
		if (e->expires_ms > now && !e->name && field_matches(e->domain, domain) &&
		    field_matches(e->tenant, tenant) && field_matches(e->campaign, campaign))
			return e;
	return NULL;
}

const struct suspend_entry *suspend_match_name(const struct suspend_list *l, const char *name,
					       uint64_t now)
{
	for (const struct suspend_entry *e = l->head; e; e = e->next)
		if (e->expires_ms > now && e->name && strcmp(e->name, name) == 0)
			return e;
	return NULL;
}

uint64_t suspend_next_expiry(const struct suspend_list *l)
{
	uint64_t best = 0;
	for (const struct suspend_entry *e = l->head; e; e = e->next)
		if (!best || e->expires_ms < best)
			best = e->expires_ms;
	return best;
}

void suspend_clear(struct suspend_list *l)
{
	while (l->head) {
		struct suspend_entry *e = l->head;
		l->head = e->next;
		suspend_entry_free(e);
	}
	l->count = 0;
}
