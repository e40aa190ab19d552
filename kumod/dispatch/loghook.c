/* SPDX-License-Identifier: Apache-2.0 */
/* Log hooks: log records turned into spooled, queued messages. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/xalloc.h"
#include "dispatch/loghook.h"
#include "ktrace.h"
#include "policy.h"
#include "proto/template.h"
#include "queue/queue.h"
#include "spool/logrec.h"
#include "spool/message.h"
#include "spool/spool.h"

#define LOGHOOK_DEFAULT_BACK_PRESSURE 128000

struct hook_rt {
	char *type; /* a record type or "Any" */
	int enable;
	struct tmpl *tmpl; /* NULL: the JSON record */
};

struct loghook {
	char *name;
	char **meta, **headers;
	size_t nmeta, nheaders;
	struct hook_rt *rt;
	size_t nrt;
	size_t back_pressure;
	int deferred_spool;
	struct loghook *next;
};

/* A disposition hook: its event is called at once with every record. */
struct disphook {
	char *name, *event; /* event: log_disposition_<name> */
	struct hook_rt *rt; /* per_record enable (no templates) */
	size_t nrt;
	struct disphook *next;
};

static struct {
	struct loghook *head, *tail;
	struct disphook *disp;
	struct loghook_stats st;
} H;

static char **copy_strs(const char *const *v, size_t n)
{
	char **out = xcalloc(n ? n : 1, sizeof(*out));
	for (size_t i = 0; i < n; i++)
		out[i] = xstrdup(v[i]);
	return out;
}

static void free_strs(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* meta as the hook captures it: the listed keys ("prefix*" matches). */
static json_t *hook_meta(const struct loghook *h, json_t *meta, const struct message *m)
{
	json_t *out = json_object();
	if (!json_is_object(meta))
		return out;
	for (size_t i = 0; i < h->nmeta; i++) {
		const char *name = h->meta[i];
		size_t n = strlen(name);
		if (m) /* a value built on first read (the catcher's smtp_session) */
			message_meta_build_for(m, name);
		const char *key;
		json_t *v;
		json_object_foreach(meta, key, v)
		{
			int match = n && name[n - 1] == '*' ? strncmp(key, name, n - 1) == 0
							    : strcmp(key, name) == 0;
			if (match && !json_is_null(v))
				json_object_set(out, key, v);
		}
	}
	return out;
}

/* headers as the hook captures them: the first value of each listed name. */
static json_t *hook_headers(const struct loghook *h, const struct message *m)
{
	json_t *out = json_object();
	struct buf val;
	buf_init(&val);
	for (size_t i = 0; m && i < h->nheaders; i++) {
		buf_reset(&val);
		if (message_get_first_named_header_value(m, h->headers[i], &val) > 0)
			json_object_set_new(out, h->headers[i],
					    json_stringn(val.data ? val.data : "", val.len));
	}
	buf_free(&val);
	return out;
}

/* The per_record entry for type: its own, else Any's, else NULL (hooked,
 * as JSON). */
static const struct hook_rt *rt_resolve(const struct hook_rt *rt, size_t nrt, const char *type)
{
	const struct hook_rt *any = NULL;
	for (size_t i = 0; i < nrt; i++) {
		if (strcmp(rt[i].type, type) == 0)
			return &rt[i];
		if (strcmp(rt[i].type, "Any") == 0)
			any = &rt[i];
	}
	return any;
}

static const struct hook_rt *hook_resolve(const struct loghook *h, const char *type)
{
	return rt_resolve(h->rt, h->nrt, type);
}

static void stored_cb(void *ctx, int err)
{
	struct message *m = ctx;
	H.st.pending--;
	if (err) {
		H.st.spool_errors++;
		log_error("kumod::loghook", "id=%s log hook record lost: spool error %s", m->id,
			  strerror(-err));
	} else {
		queue_insert(m, "Received");
	}
	message_unref(m);
}

/* The message of one record for hook h. */
static struct message *record_message(const struct loghook *h, const struct hook_rt *rt,
				      const struct logrec_event *ev, json_t *record)
{
	struct message *m = message_new();
	const char *sender = json_string_value(json_object_get(record, "sender"));
	message_set_sender(m, sender ? sender : "");
	json_t *rc = json_object_get(record, "recipient");
	if (json_is_array(rc)) {
		size_t i;
		json_t *v;
		json_array_foreach(rc, i, v) message_add_recipient(m, json_string_value(v));
	} else {
		message_add_recipient(m, json_string_value(rc) ? json_string_value(rc) : "");
	}
	json_t *rec = json_deep_copy(record);
	json_object_set_new(rec, "meta", hook_meta(h, ev->m ? ev->m->meta : ev->meta, ev->m));
	json_object_set_new(rec, "headers", hook_headers(h, ev->m));
	int body = 0;
	if (rt && rt->tmpl) {
		/* the template sees the record's fields, and log_record: the whole */
		json_t *ctx = json_copy(rec);
		json_object_set(ctx, "log_record", rec);
		struct buf out;
		buf_init(&out);
		struct tmpl_error terr;
		if (tmpl_render(rt->tmpl, ctx, &out, &terr) == 0) {
			message_set_data(m, out.data ? out.data : "", out.len);
			body = 1;
		} else {
			KTRACE(loghook_record, h->name, ev->type, ev->m ? ev->m->id : "",
			       "template_error");
			log_warn("kumod::loghook",
				 "hook '%s': per_record template for %s: %s; the record is sent "
				 "as JSON",
				 h->name, ev->type, terr.msg);
		}
		buf_free(&out);
		json_decref(ctx);
	}
	if (!body) {
		char *line = json_dumps(rec, JSON_COMPACT);
		if (!line)
			panic("%s: json_dumps failed", __func__);
		message_set_data(m, line, strlen(line));
		free(line);
	}
	message_set_meta(m, "log_record", rec); /* takes the reference */
	message_set_meta(m, "reception_protocol", json_string("LogRecord"));
	return m;
}

static void hook_one(struct loghook *h, const struct logrec_event *ev, json_t *record)
{
	const char *type = ev->type;
	const char *id = ev->m ? ev->m->id : "";
	const struct hook_rt *rt = hook_resolve(h, type);
	if (rt && !rt->enable)
		return;
	if (H.st.pending >= h->back_pressure) {
		H.st.dropped++;
		log_error("kumod::loghook",
			  "id=%s %s record not hooked by '%s': %zu records wait for the spool "
			  "(back_pressure)",
			  id, type, h->name, H.st.pending);
		KTRACE(loghook_record, h->name, type, id, "dropped");
		return;
	}
	struct message *m = record_message(h, rt, ev, record);
	int enqueue = 0;
	struct policy_result r;
	policy_should_enqueue_log_record(m, h->name, &enqueue, &r);
	if (r.status != POLICY_OK || !enqueue) {
		if (r.status != POLICY_OK)
			log_error("kumod::loghook", "id=%s should_enqueue_log_record('%s'): %s", id,
				  h->name, r.text);
		H.st.declined++;
		KTRACE(loghook_record, h->name, type, id,
		       r.status != POLICY_OK ? "error" : "declined");
		message_unref(m);
		return;
	}
	if (!spool_is_open()) {
		H.st.dropped++;
		log_error("kumod::loghook", "id=%s %s record for '%s' lost: no spool is defined",
			  id, type, h->name);
		message_unref(m);
		return;
	}
	H.st.queued++;
	H.st.pending++;
	KTRACE(loghook_record, h->name, type, m->id, "queued");
	if (h->deferred_spool)
		spool_store_deferred(m, stored_cb, m);
	else
		spool_store(m, stored_cb, m);
}

/* A disposition hook sees the record as emitted, with the message (still
 * in the spool); records without a message (none exists) are skipped. */
static void disp_one(struct disphook *h, const struct logrec_event *ev, json_t *record)
{
	const struct hook_rt *rt = rt_resolve(h->rt, h->nrt, ev->type);
	if ((rt && !rt->enable) || !ev->m)
		return;
	struct policy_result r;
	H.st.dispositions++;
	policy_log_disposition(h->event, (struct message *)ev->m, record, &r);
	if (r.status != POLICY_OK) {
		H.st.disposition_errors++;
		log_error("kumod::loghook", "id=%s %s('%s' record): %s", ev->m->id, h->event,
			  ev->type, r.text);
	}
	KTRACE(loghook_record, h->name, ev->type, ev->m->id,
	       r.status != POLICY_OK ? "error" : "disposition");
}

/* logrec's hook: records about LogRecord messages are not hooked again. */
static void on_record(const struct logrec_event *ev, json_t *record)
{
	const char *rp = json_string_value(json_object_get(record, "reception_protocol"));
	if (rp && strcmp(rp, "LogRecord") == 0)
		return;
	for (struct disphook *d = H.disp; d; d = d->next)
		disp_one(d, ev, record);
	for (struct loghook *h = H.head; h; h = h->next)
		hook_one(h, ev, record);
}

static void hook_free(struct loghook *h)
{
	free(h->name);
	free_strs(h->meta, h->nmeta);
	free_strs(h->headers, h->nheaders);
	for (size_t i = 0; i < h->nrt; i++) {
		free(h->rt[i].type);
		tmpl_free(h->rt[i].tmpl);
	}
	free(h->rt);
	free(h);
}

/* 1 when a hook (log or disposition) has this name. */
static int name_taken(const char *name)
{
	for (struct loghook *h = H.head; h; h = h->next)
		if (strcmp(h->name, name) == 0)
			return 1;
	for (struct disphook *d = H.disp; d; d = d->next)
		if (strcmp(d->name, name) == 0)
			return 1;
	return 0;
}

int loghook_add(const struct loghook_cfg *cfg, char *err, size_t errlen)
{
	if (name_taken(cfg->name)) {
		snprintf(err, errlen, "a log hook named '%s' is already configured", cfg->name);
		return -1;
	}
	struct loghook *h = xcalloc(1, sizeof(*h));
	h->name = xstrdup(cfg->name);
	h->meta = copy_strs(cfg->meta, cfg->nmeta);
	h->nmeta = cfg->nmeta;
	h->headers = copy_strs(cfg->headers, cfg->nheaders);
	h->nheaders = cfg->nheaders;
	h->rt = xcalloc(cfg->nper_record ? cfg->nper_record : 1, sizeof(*h->rt));
	for (size_t i = 0; i < cfg->nper_record; i++) {
		const struct loghook_record_cfg *pr = &cfg->per_record[i];
		struct hook_rt *rt = &h->rt[h->nrt++];
		rt->type = xstrdup(pr->type);
		rt->enable = pr->enable;
		if (!pr->tmpl)
			continue;
		struct tmpl_error te;
		rt->tmpl = tmpl_compile(pr->tmpl, strlen(pr->tmpl), &te);
		if (!rt->tmpl) {
			snprintf(err, errlen,
				 "hook '%s': per_record.%s.template: line %d column %d: %s",
				 cfg->name, pr->type, te.line, te.column, te.msg);
			hook_free(h);
			return -1;
		}
	}
	h->back_pressure = cfg->back_pressure ? cfg->back_pressure : LOGHOOK_DEFAULT_BACK_PRESSURE;
	h->deferred_spool = cfg->deferred_spool;
	if (H.tail)
		H.tail->next = h;
	else
		H.head = h;
	H.tail = h;
	logrec_set_hook(on_record);
	return 0;
}

int loghook_add_disposition(const struct loghook_cfg *cfg, char *err, size_t errlen)
{
	if (name_taken(cfg->name)) {
		snprintf(err, errlen, "a log hook named '%s' is already configured", cfg->name);
		return -1;
	}
	struct disphook *d = xcalloc(1, sizeof(*d));
	d->name = xstrdup(cfg->name);
	size_t n = strlen("log_disposition_") + strlen(cfg->name) + 1;
	d->event = xmalloc(n);
	snprintf(d->event, n, "log_disposition_%s", cfg->name);
	d->rt = xcalloc(cfg->nper_record ? cfg->nper_record : 1, sizeof(*d->rt));
	for (size_t i = 0; i < cfg->nper_record; i++) {
		d->rt[i].type = xstrdup(cfg->per_record[i].type);
		d->rt[i].enable = cfg->per_record[i].enable;
	}
	d->nrt = cfg->nper_record;
	struct disphook **tail = &H.disp; /* in configuration order */
	while (*tail)
		tail = &(*tail)->next;
	*tail = d;
	logrec_set_hook(on_record);
	return 0;
}

void loghook_free_all(void)
{
	struct loghook *h = H.head, *next;
	for (; h; h = next) {
		next = h->next;
		hook_free(h);
	}
	H.head = H.tail = NULL;
	struct disphook *d = H.disp, *dnext;
	for (; d; d = dnext) {
		dnext = d->next;
		for (size_t i = 0; i < d->nrt; i++)
			free(d->rt[i].type);
		free(d->rt);
		free(d->name);
		free(d->event);
		free(d);
	}
	H.disp = NULL;
	logrec_set_hook(NULL);
}

void loghook_get_stats(struct loghook_stats *st)
{
	*st = H.st;
	st->hooks = 0;
	for (struct loghook *h = H.head; h; h = h->next)
		st->hooks++;
	for (struct disphook *d = H.disp; d; d = d->next)
		st->hooks++;
}
