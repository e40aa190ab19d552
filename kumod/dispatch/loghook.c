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
#include "queue/queue.h"
#include "spool/logrec.h"
#include "spool/message.h"
#include "spool/spool.h"

#define LOGHOOK_DEFAULT_BACK_PRESSURE 128000

struct loghook {
	char *name;
	char **meta, **headers, **disabled;
	size_t nmeta, nheaders, ndisabled;
	size_t back_pressure;
	struct loghook *next;
};

static struct {
	struct loghook *head, *tail;
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
static json_t *hook_meta(const struct loghook *h, json_t *meta)
{
	json_t *out = json_object();
	if (!json_is_object(meta))
		return out;
	for (size_t i = 0; i < h->nmeta; i++) {
		const char *name = h->meta[i];
		size_t n = strlen(name);
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

static int type_disabled(const struct loghook *h, const char *type)
{
	for (size_t i = 0; i < h->ndisabled; i++)
		if (strcmp(h->disabled[i], type) == 0)
			return 1;
	return 0;
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
static struct message *record_message(const struct loghook *h, const struct logrec_event *ev,
				      json_t *record)
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
	json_object_set_new(rec, "meta", hook_meta(h, ev->m ? ev->m->meta : ev->meta));
	json_object_set_new(rec, "headers", hook_headers(h, ev->m));
	char *line = json_dumps(rec, JSON_COMPACT);
	if (!line)
		panic("%s: json_dumps failed", __func__);
	message_set_data(m, line, strlen(line));
	free(line);
	message_set_meta(m, "log_record", rec); /* takes the reference */
	message_set_meta(m, "reception_protocol", json_string("LogRecord"));
	return m;
}

static void hook_one(struct loghook *h, const struct logrec_event *ev, json_t *record)
{
	const char *type = ev->type;
	const char *id = ev->m ? ev->m->id : "";
	if (type_disabled(h, type))
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
	struct message *m = record_message(h, ev, record);
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
	spool_store(m, stored_cb, m);
}

/* logrec's hook: records about LogRecord messages are not hooked again. */
static void on_record(const struct logrec_event *ev, json_t *record)
{
	const char *rp = json_string_value(json_object_get(record, "reception_protocol"));
	if (rp && strcmp(rp, "LogRecord") == 0)
		return;
	for (struct loghook *h = H.head; h; h = h->next)
		hook_one(h, ev, record);
}

int loghook_add(const struct loghook_cfg *cfg, char *err, size_t errlen)
{
	for (struct loghook *h = H.head; h; h = h->next)
		if (strcmp(h->name, cfg->name) == 0) {
			snprintf(err, errlen, "a log hook named '%s' is already configured",
				 cfg->name);
			return -1;
		}
	struct loghook *h = xcalloc(1, sizeof(*h));
	h->name = xstrdup(cfg->name);
	h->meta = copy_strs(cfg->meta, cfg->nmeta);
	h->nmeta = cfg->nmeta;
	h->headers = copy_strs(cfg->headers, cfg->nheaders);
	h->nheaders = cfg->nheaders;
	h->disabled = copy_strs(cfg->disabled, cfg->ndisabled);
	h->ndisabled = cfg->ndisabled;
	h->back_pressure = cfg->back_pressure ? cfg->back_pressure : LOGHOOK_DEFAULT_BACK_PRESSURE;
	if (H.tail)
		H.tail->next = h;
	else
		H.head = h;
	H.tail = h;
	logrec_set_hook(on_record);
	return 0;
}

void loghook_free_all(void)
{
	struct loghook *h = H.head, *next;
	for (; h; h = next) {
		next = h->next;
		free(h->name);
		free_strs(h->meta, h->nmeta);
		free_strs(h->headers, h->nheaders);
		free_strs(h->disabled, h->ndisabled);
		free(h);
	}
	H.head = H.tail = NULL;
	logrec_set_hook(NULL);
}

void loghook_get_stats(struct loghook_stats *st)
{
	*st = H.st;
}
