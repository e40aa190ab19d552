/* SPDX-License-Identifier: Apache-2.0 */
/* Admin suspensions (KumoMTA /api/admin/suspend/v1 and suspend-ready-q/v1):
 * a list of entries, each with a UUID, criteria, a reason and an expiry.
 * A scheduled-queue entry matches on domain, tenant and campaign (NULL =
 * any, case-insensitive); a ready-queue entry matches one ready queue by
 * its exact name. Pure bookkeeping (time is passed in): the queue layer
 * (scheduled entries) and kumod/dispatch (ready entries) own one list each
 * and decide what a match means. Suspensions are not persisted: a restart
 * forgets them, as in KumoMTA. */
#ifndef KUMOD_QUEUE_SUSPEND_H
#define KUMOD_QUEUE_SUSPEND_H

#include <stddef.h>
#include <stdint.h>

#include "base/uuid.h"

struct suspend_entry {
	char id[UUID_TEXT_LEN + 1];
	char *domain, *tenant, *campaign; /* scheduled entries; NULL = any */
	char *name;			  /* ready-queue entries: the ready queue */
	char *reason;
	uint64_t expires_ms; /* unix ms */
	struct suspend_entry *next;
};

struct suspend_list {
	struct suspend_entry *head;
	size_t count;
};

/* Adds an entry with a fresh UUID (strings copied; "" counts as NULL) and
 * returns it (owned by the list). */
struct suspend_entry *suspend_add(struct suspend_list *l, const char *domain, const char *tenant,
				  const char *campaign, const char *name, const char *reason,
				  uint64_t expires_ms);
/* Unlinks the entry with that id (case-insensitive) and returns it for the
 * caller to inspect and free with suspend_entry_free(); NULL when none. */
struct suspend_entry *suspend_take(struct suspend_list *l, const char *id);
void suspend_entry_free(struct suspend_entry *e);
/* Unlinks and frees entries with expires_ms <= now; returns how many. Each
 * one is passed to fn (may be NULL) before it is freed. */
size_t suspend_prune(struct suspend_list *l, uint64_t now,
		     void (*fn)(const struct suspend_entry *e, void *ctx), void *ctx);
/* The first live entry (expires_ms > now) matching a scheduled queue's parts
 * (domain, tenant, campaign: "" for none), or NULL. */
const struct suspend_entry *suspend_match_sched(const struct suspend_list *l, const char *domain,
						const char *tenant, const char *campaign,
						uint64_t now);
/* The first live entry for the ready queue named name, or NULL. */
const struct suspend_entry *suspend_match_name(const struct suspend_list *l, const char *name,
					       uint64_t now);
/* The earliest expiry among the entries, or 0 when the list is empty. */
uint64_t suspend_next_expiry(const struct suspend_list *l);
void suspend_clear(struct suspend_list *l);

#endif
