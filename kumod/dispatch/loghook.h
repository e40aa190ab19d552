/* SPDX-License-Identifier: Apache-2.0 */
/* Log hooks (kumo.configure_log_hook): every log record becomes a message
 * (meta log_record, reception_protocol "LogRecord", body the JSON record)
 * that should_enqueue_log_record may accept; accepted ones are spooled and
 * queued like any message (delivered by a custom_lua queue, usually), so
 * webhooks get retries, backoff and durability. Records of LogRecord
 * messages are never hooked again. Owns the hook list; called by
 * kumod/lua (configuration) and, through logrec_set_hook, by the log
 * record emitter. */
#ifndef KUMOD_DISPATCH_LOGHOOK_H
#define KUMOD_DISPATCH_LOGHOOK_H

#include <stddef.h>
#include <stdint.h>

/* per_record of a hook: a record type (or "Any" for the types without an
 * entry of their own, which a type's entry replaces wholesale). */
struct loghook_record_cfg {
	const char *type;
	int enable;	  /* 0: records of this type are not hooked */
	const char *tmpl; /* message body template (proto/template.h), or NULL: JSON */
};

struct loghook_cfg {
	const char *name;
	const char *const *meta; /* meta keys to capture ("*" or "prefix*" too) */
	size_t nmeta;
	const char *const *headers; /* header names to capture */
	size_t nheaders;
	const struct loghook_record_cfg *per_record;
	size_t nper_record;
	size_t back_pressure; /* max records waiting for the spool; 0: 128000 */
	int deferred_spool;   /* 1: records kept in memory until they must stay
			       * (spool_store_deferred) */
};

/* Adds a hook (copied; templates compiled). -1 with err for a duplicate
 * name or a template that does not compile (named with its position). */
int loghook_add(const struct loghook_cfg *cfg, char *err, size_t errlen);
/* kumo.configure_log_disposition_hook: the event log_disposition_<name>
 * is called synchronously (policy_log_disposition) with the message and
 * each record as it is emitted (meta and headers empty, as KumoMTA), except
 * records of LogRecord messages and those per_record disables (only its
 * enable is used; meta, headers, templates and back_pressure are not).
 * -1 with err for a name any hook already has. */
int loghook_add_disposition(const struct loghook_cfg *cfg, char *err, size_t errlen);
/* Drops every hook (policy reload, shutdown). */
void loghook_free_all(void);

struct loghook_stats {
	uint64_t queued, declined, dropped, spool_errors;
	uint64_t dispositions;	     /* disposition hook calls */
	uint64_t disposition_errors; /* ... that raised */
	size_t pending;		     /* records waiting for the spool */
	size_t hooks;		     /* configured hooks */
};
void loghook_get_stats(struct loghook_stats *st);

#endif
