/* SPDX-License-Identifier: Apache-2.0 */
/* Log records, loop side: configuration, the KumoMTA record shape (field
 * names and types of kumo-log-types' JsonLogRecord), the producer end of the
 * bounded queue with back-pressure, and reporting what the writer thread
 * (logrec_writer.c) did: traces, errors and the task phase. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/fsutil.h"
#include "base/log.h"
#include "base/task.h"
#include "base/uuid.h"
#include "base/xalloc.h"
#include "ktrace.h"
#include "proto/bounce.h"
#include "proto/json_compact.h"
#include "proto/rfc5322.h"
#include "proto/template.h"
#include "spool/logrec.h"
#include "spool/logrec_int.h"
#include "spool/message.h"
#include "spool/timeline.h"

#define DEFAULT_MAX_FILE_SIZE 1000000000ull
#define DEFAULT_BACK_PRESSURE 128000u
#define NODEID_LEN 36

static const char *const phase_names[] = {"Idle", "Writing", "Rolling"};

#define MAX_LOGGERS 8

const char *const logrec_record_types[] = {"Reception",
					   "Delivery",
					   "Bounce",
					   "TransientFailure",
					   "Expiration",
					   "AdminBounce",
					   "OOB",
					   "Feedback",
					   "Rejection",
					   "AdminRebind",
					   "DeferredInjectionRebind",
					   "Delayed",
					   "XferOut",
					   "XferIn",
					   "Any",
					   NULL};

int logrec_record_type_index(const char *type)
{
	for (int i = 0; logrec_record_types[i]; i++)
		if (strcmp(logrec_record_types[i], type) == 0)
			return i;
	return -1;
}
#define NTYPES (sizeof(logrec_record_types) / sizeof(logrec_record_types[0]) - 1)
#define TYPE_ANY (NTYPES - 1)

/* A record type's per_record settings, resolved at configure time. */
struct rtype {
	int set; /* listed in per_record */
	int enable;
	unsigned file; /* index in w.files */
	struct tmpl *tmpl;
};

/* One configure_local_logs call. */
struct logger {
	struct logrec_writer w;
	char **headers, **meta; /* what to capture */
	size_t nheaders, nmeta;
	struct rtype rt[NTYPES];
	char *filter_event;
	struct task *task;
	int shown_phase;
	uint64_t notes_dropped_seen;
	uint64_t waits, wait_ns;
};

static struct {
	struct logger *loggers[MAX_LOGGERS];
	size_t n;
	struct buf line, tmp; /* scratch: the record line, a header value */
	logrec_filter_fn filter;
} lr;

static char nodeid[NODEID_LEN + 1];

/* --- node id ----------------------------------------------------------------- */

static int uuid_valid(const char *s)
{
	if (strlen(s) != NODEID_LEN)
		return 0;
	for (int i = 0; i < NODEID_LEN; i++) {
		int dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? s[i] != '-' : !strchr("0123456789abcdefABCDEF", s[i]))
			return 0;
	}
	return 1;
}

static void uuid_lower(char *s)
{
	for (; *s; s++)
		if (*s >= 'A' && *s <= 'F')
			*s = (char)(*s - 'A' + 'a');
}

/* The id stored in path, or a new one written there. */
static void nodeid_from_file(const char *path, char out[NODEID_LEN + 1])
{
	char text[64] = "";
	FILE *f = fopen(path, "r");
	if (f) {
		size_t n = fread(text, 1, sizeof(text) - 1, f);
		fclose(f);
		text[n] = 0;
		text[strcspn(text, " \t\r\n")] = 0;
		if (uuid_valid(text)) {
			memcpy(out, text, NODEID_LEN + 1);
			return;
		}
		log_warn("kumod::logging", "node id file %s holds no UUID; writing a new one",
			 path);
	}
	uuid_random(out);
	f = fopen(path, "w");
	int ok = f && fprintf(f, "%s\n", out) > 0;
	if (f && fclose(f) != 0)
		ok = 0;
	if (!ok)
		log_warn("kumod::logging", "cannot store node id in %s: %s", path, strerror(errno));
}

const char *logrec_nodeid(void)
{
	if (nodeid[0])
		return nodeid;
	const char *env = getenv("KUMO_NODE_ID");
	const char *path = getenv("KUMO_NODE_ID_PATH");
	if (env && uuid_valid(env))
		memcpy(nodeid, env, NODEID_LEN + 1);
	else if (path && *path)
		nodeid_from_file(path, nodeid);
	else
		uuid_random(nodeid);
	if (env && !uuid_valid(env))
		log_warn("kumod::logging", "KUMO_NODE_ID=%s is not a UUID; using %s", env, nodeid);
	uuid_lower(nodeid);
	return nodeid;
}

/* --- JSON values -------------------------------------------------------------- */

/* A JSON string; invalid UTF-8 bytes become U+FFFD (as Rust's
 * from_utf8_lossy), so a record is always valid JSON. */
static json_t *jstrn(const char *s, size_t n)
{
	json_t *j = json_stringn(s, n);
	if (j)
		return j;
	struct buf b;
	buf_init(&b);
	buf_append_utf8_lossy(&b, s, n);
	j = json_stringn(b.data ? b.data : "", b.len);
	buf_free(&b);
	if (!j)
		panic("%s: json_stringn failed", __func__);
	return j;
}

static json_t *jstr(const char *s)
{
	return jstrn(s ? s : "", s ? strlen(s) : 0);
}

static json_t *jstr_or_null(const char *s)
{
	return s ? jstr(s) : json_null();
}

/* "YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ" */
static json_t *jtime(uint64_t ns)
{
	time_t s = (time_t)(ns / 1000000000u);
	struct tm tm;
	char text[48];
	gmtime_r(&s, &tm);
	size_t n = strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(text + n, sizeof(text) - n, ".%09uZ", (unsigned)(ns % 1000000000u));
	return json_string(text);
}

static void set(json_t *o, const char *key, json_t *v)
{
	if (json_object_set_new(o, key, v) != 0)
		panic("%s: json_object_set_new(%s) failed", __func__, key);
}

/* --- response ------------------------------------------------------------------ */

/* Parses "c.s.d" (class 2, 4 or 5; subject and detail 1-3 digits) at s;
 * returns the length or 0. */
static size_t parse_enhanced(const char *s, int v[3])
{
	const char *p = s;
	if (*p != '2' && *p != '4' && *p != '5')
		return 0;
	v[0] = *p++ - '0';
	for (int i = 1; i < 3; i++) {
		if (*p++ != '.')
			return 0;
		int digits = 0, n = 0;
		while (*p >= '0' && *p <= '9' && digits < 4)
			n = n * 10 + (*p++ - '0'), digits++;
		if (digits < 1 || digits > 3)
			return 0;
		v[i] = n;
	}
	return (size_t)(p - s);
}

static json_t *jenhanced(const int v[3])
{
	return json_pack("{s:i,s:i,s:i}", "class", v[0], "subject", v[1], "detail", v[2]);
}

/* {code, enhanced_code, content, command} as rfc5321::Response. */
static json_t *jresponse(const struct logrec_response *r)
{
	static const struct logrec_response none = {0, NULL, "", NULL};
	int v[3];
	json_t *enh = json_null();
	if (!r)
		r = &none;
	const char *content = r->content ? r->content : "";
	if (r->enhanced) {
		size_t n = parse_enhanced(r->enhanced, v);
		if (n && !r->enhanced[n])
			enh = jenhanced(v);
	} else {
		/* a reply whose text leads with its enhanced code */
		size_t n = parse_enhanced(content, v);
		if (n && v[0] == r->code / 100 && (content[n] == ' ' || !content[n])) {
			enh = jenhanced(v);
			content += n + (content[n] == ' ');
		}
	}
	json_t *o = json_object();
	set(o, "code", json_integer(r->code));
	set(o, "enhanced_code", enh);
	set(o, "content", jstr(content));
	set(o, "command", jstr_or_null(r->command));
	return o;
}

/* --- message-derived fields --------------------------------------------------- */

static json_t *jrecipient(const struct logrec_event *ev)
{
	const struct message *m = ev->m;
	if (ev->recipient || !m)
		return jstr(ev->recipient ? ev->recipient : "");
	if (m->nrecipients <= 1)
		return jstr(m->nrecipients ? m->recipients[0] : "");
	json_t *a = json_array();
	for (size_t i = 0; i < m->nrecipients; i++)
		json_array_append_new(a, jstr(m->recipients[i]));
	return a;
}

/* The scheduled queue name: meta "queue", else campaign:tenant@domain!routing
 * (the rule of kumod/queue/queue.c, which this layer cannot include). */
static json_t *jqueue(const struct logrec_event *ev)
{
	const struct message *m = ev->m;
	if (ev->queue || !m)
		return jstr(ev->queue ? ev->queue : "");
	const char *explicit = message_get_meta_str(m, "queue");
	if (explicit && *explicit)
		return jstr(explicit);
	const char *rcpt = m->nrecipients ? m->recipients[0] : "";
	const char *at = strrchr(rcpt, '@');
	const char *c = message_get_meta_str(m, "campaign");
	const char *t = message_get_meta_str(m, "tenant");
	const char *r = message_get_meta_str(m, "routing_domain");
	int has_c = c && *c, has_t = t && *t, has_r = r && *r;
	struct buf *b = &lr.tmp;
	buf_reset(b);
	if (has_c)
		buf_printf(b, "%s:", c);
	if (has_t)
		buf_appends(b, t);
	if (has_c || has_t)
		buf_appendc(b, '@');
	for (const char *p = at ? at + 1 : rcpt; *p; p++)
		buf_appendc(b, *p >= 'A' && *p <= 'Z' ? (char)(*p - 'A' + 'a') : *p);
	if (has_r)
		buf_printf(b, "!%s", r);
	return jstrn(b->data ? b->data : "", b->len);
}

static int num_attempts(const struct message *m)
{
	json_t *v = m ? message_get_meta(m, "num_attempts") : NULL;
	if (json_is_integer(v))
		return (int)json_integer_value(v);
	return m ? (int)m->attempts : 0;
}

/* Reception time: the message's, else the time in its id (48-bit ms). */
static uint64_t created_ns(const struct message *m, uint64_t now)
{
	if (!m)
		return now;
	if (m->created_ns)
		return m->created_ns;
	uint64_t ms = 0;
	for (int i = 0; i < 12 && m->id[i]; i++) {
		char c = m->id[i];
		ms = ms << 4 | (uint64_t)(c <= '9' ? c - '0' : c - 'a' + 10);
	}
	return ms ? ms * 1000000u : now;
}

/* The meta keys listed in the config ("name", "prefix*", "*"); null values
 * are left out, as KumoMTA does. */
static json_t *jmeta(const struct logger *lg, json_t *meta, const struct message *m)
{
	json_t *out = json_object();
	if (!lg || !json_is_object(meta))
		return out; /* a log hook's record: the hook captures its own */
	for (size_t i = 0; i < lg->nmeta; i++) {
		const char *name = lg->meta[i];
		size_t n = strlen(name);
		if (m) /* a value built on first read (the catcher's smtp_session) */
			message_meta_build_for(m, name);
		if (n && name[n - 1] == '*') {
			const char *key;
			json_t *v;
			json_object_foreach(meta, key, v)
			{
				if (strncmp(key, name, n - 1) == 0)
					set(out, key, json_incref(v));
			}
		} else {
			json_t *v = json_object_get(meta, name);
			if (v && !json_is_null(v))
				set(out, name, json_incref(v));
		}
	}
	return out;
}

/* Captures every field named (ASCII case-insensitively) name[0..nlen) under
 * the spelling of its first occurrence: a string, or an array when the
 * message has several. */
static void capture_header(json_t *out, const char *msg, size_t hend, const char *name, size_t nlen)
{
	const char *key;
	json_t *v;
	json_object_foreach(out, key, v)
	{
		if (strlen(key) == nlen && strncasecmp(key, name, nlen) == 0)
			return;
	}
	json_t *values = json_array();
	char *orig = NULL;
	size_t pos = 0;
	struct rfc5322_header h;
	while (rfc5322_header_next(msg, hend, &pos, &h)) {
		if (h.name_len != nlen || strncasecmp(h.name, name, nlen) != 0)
			continue;
		if (!orig)
			orig = xstrndup(h.name, h.name_len);
		buf_reset(&lr.tmp);
		rfc5322_unfold(h.raw_value, h.raw_len, &lr.tmp);
		json_array_append_new(values, jstrn(lr.tmp.data ? lr.tmp.data : "", lr.tmp.len));
	}
	if (orig && json_array_size(values) == 1)
		set(out, orig, json_incref(json_array_get(values, 0)));
	else if (orig)
		set(out, orig, json_incref(values));
	json_decref(values);
	free(orig);
}

/* The headers listed in the config ("Subject", "X-*"), with their unfolded
 * values, as KumoMTA's Logger::extract_fields. */
static json_t *jheaders(const struct logger *lg, const struct message *m)
{
	json_t *out = json_object();
	if (!lg || !m || !lg->nheaders || !m->data.len)
		return out;
	const char *msg = m->data.data;
	size_t hend = rfc5322_header_end(msg, m->data.len);
	for (size_t i = 0; i < lg->nheaders; i++) {
		const char *name = lg->headers[i];
		size_t n = strlen(name);
		if (!n || name[n - 1] != '*') {
			capture_header(out, msg, hend, name, n);
			continue;
		}
		size_t pos = 0;
		struct rfc5322_header h;
		while (rfc5322_header_next(msg, hend, &pos, &h))
			if (h.name_len >= n - 1 && strncasecmp(h.name, name, n - 1) == 0)
				capture_header(out, msg, hend, h.name, h.name_len);
	}
	return out;
}

static int reception_side(const char *type)
{
	return strcmp(type, "Reception") == 0 || strcmp(type, "Rejection") == 0;
}

/* tls_cipher, tls_protocol_version, tls_peer_subject_name when known. */
static void set_tls(json_t *o, const struct logrec_event *ev, json_t *meta)
{
	const struct logrec_tls *t = ev->tls;
	if (t) {
		if (t->cipher)
			set(o, "tls_cipher", jstr(t->cipher));
		if (t->protocol_version)
			set(o, "tls_protocol_version", jstr(t->protocol_version));
		if (t->npeer_subject_name) {
			json_t *a = json_array();
			for (size_t i = 0; i < t->npeer_subject_name; i++)
				json_array_append_new(a, jstr(t->peer_subject_name[i]));
			set(o, "tls_peer_subject_name", a);
		}
		return;
	}
	if (!reception_side(ev->type) || !json_is_object(meta))
		return;
	json_t *c = json_object_get(meta, "tls_cipher");
	json_t *v = json_object_get(meta, "tls_protocol_version");
	json_t *s = json_object_get(meta, "tls_peer_subject_name");
	if (json_is_string(c))
		set(o, "tls_cipher", json_incref(c));
	if (json_is_string(v))
		set(o, "tls_protocol_version", json_incref(v));
	if (json_is_string(s))
		set(o, "tls_peer_subject_name", json_pack("[O]", s));
	else if (json_is_array(s))
		set(o, "tls_peer_subject_name", json_incref(s));
}

/* --- the record ---------------------------------------------------------------- */

static json_t *jpeer(const struct logrec_peer *p)
{
	if (!p)
		return json_null();
	json_t *o = json_object();
	if (p->name)
		set(o, "name", jstr(p->name));
	if (p->addr)
		set(o, "addr", jstr(p->addr));
	return o;
}

/* kumo.configure_bounce_classifier: owned; NULL = everything Uncategorized. */
static struct bounce_classifier *classifier;

void logrec_set_classifier(struct bounce_classifier *bc)
{
	bounce_classifier_free(classifier);
	classifier = bc;
}

/* KumoMTA classifies these record types (the others stay Uncategorized). */
static const char *classify(const struct logrec_event *ev)
{
	static const char *const types[] = {
	    "Bounce", "TransientFailure", "Expiration", "AdminBounce",
	    "OOB",    "Feedback",	  "Rejection"};
	if (!classifier || !ev->resp)
		return BOUNCE_UNCATEGORIZED;
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (strcmp(ev->type, types[i]) == 0) {
			const char *label = bounce_classify(classifier, ev->resp->code,
							    ev->resp->enhanced, ev->resp->content);
			KTRACE(bounce_classified, ev->m ? ev->m->id : "", ev->resp->code, label);
			return label;
		}
	return BOUNCE_UNCATEGORIZED;
}

/* Field order follows kumo-log-types' JsonLogRecord. */
static json_t *build_record(const struct logger *lg, const struct logrec_event *ev, uint64_t now,
			    const char *classification)
{
	const struct message *m = ev->m;
	json_t *meta = m ? m->meta : ev->meta;
	uint64_t created = created_ns(m, now);
	const char *rp = ev->reception_protocol;
	if (!rp && json_is_object(meta))
		rp = json_string_value(json_object_get(meta, "reception_protocol"));
	const char *dp = ev->delivery_protocol;
	if (!dp && ev->site && *ev->site)
		dp = "ESMTP";

	json_t *o = json_object();
	set(o, "type", jstr(ev->type));
	set(o, "id", jstr(m ? m->id : ""));
	set(o, "sender", jstr(m ? m->sender : ev->sender));
	set(o, "recipient", jrecipient(ev));
	set(o, "queue", jqueue(ev));
	set(o, "site", jstr(ev->site));
	set(o, "size", json_integer(m ? (json_int_t)message_data_len(m) : 0));
	set(o, "response", jresponse(ev->resp));
	set(o, "peer_address", jpeer(ev->peer));
	set(o, "timestamp", json_integer((json_int_t)(now / 1000000000u)));
	set(o, "created", json_integer((json_int_t)(created / 1000000000u)));
	set(o, "event_time", jtime(now));
	set(o, "created_time", jtime(created));
	set(o, "num_attempts", json_integer(num_attempts(m)));
	set(o, "bounce_classification", json_string(classification));
	set(o, "egress_pool", jstr_or_null(ev->egress_pool));
	set(o, "egress_source", jstr_or_null(ev->egress_source));
	set(o, "source_address",
	    ev->source_address ? json_pack("{s:o,s:n,s:n}", "address", jstr(ev->source_address),
					   "protocol", "server")
			       : json_null());
	set(o, "feedback_report", json_null());
	set(o, "meta", jmeta(lg, meta, m));
	set(o, "headers", jheaders(lg, m));
	set(o, "delivery_protocol", jstr_or_null(dp));
	set(o, "reception_protocol", jstr_or_null(rp));
	set(o, "nodeid", json_string(logrec_nodeid()));
	set_tls(o, ev, meta);
	if (ev->provider_name)
		set(o, "provider_name", jstr(ev->provider_name));
	if (ev->session_id)
		set(o, "session_id", jstr(ev->session_id));
	return o;
}

/* --- reporting ------------------------------------------------------------------ */

/* Fires the traces for the writer's notes (segment open/close, errors). */
static void report_notes(struct logrec_note *n)
{
	while (n) {
		struct logrec_note *next = n->next;
		switch (n->kind) {
		case LOGREC_NOTE_OPEN:
			KTRACE(logrec_segment_open, n->path);
			break;
		case LOGREC_NOTE_CLOSE:
			KTRACE(logrec_segment_close, n->path, n->what, n->records, n->bytes_in,
			       n->bytes_out);
			break;
		case LOGREC_NOTE_ERROR:
			KTRACE(logrec_write_error, n->path, n->what, n->err, n->lost);
			break;
		}
		free(n);
		n = next;
	}
}

/* With w->mu held: takes the unreported notes. */
static struct logrec_note *take_notes(struct logger *lg, uint64_t *dropped)
{
	struct logrec_note *n = lg->w.notes;
	lg->w.notes = lg->w.notes_tail = NULL;
	lg->w.nnotes = 0;
	*dropped = lg->w.notes_dropped;
	return n;
}

static void report(struct logger *lg, struct logrec_note *notes, uint64_t dropped)
{
	report_notes(notes);
	if (dropped != lg->notes_dropped_seen) {
		log_warn("kumod::logging",
			 "%llu log writer reports were dropped (too many at once)",
			 (unsigned long long)(dropped - lg->notes_dropped_seen));
		lg->notes_dropped_seen = dropped;
	}
	int p = __atomic_load_n(&lg->w.phase, __ATOMIC_RELAXED);
	if (p != lg->shown_phase && p >= 0 && p <= LOGREC_PHASE_ROLLING) {
		lg->shown_phase = p;
		task_set_phase(lg->task, phase_names[p],
			       p == LOGREC_PHASE_IDLE ? "log records" : NULL);
	}
}

void logrec_poll(void)
{
	for (size_t i = 0; i < lr.n; i++) {
		struct logger *lg = lr.loggers[i];
		uint64_t dropped;
		pthread_mutex_lock(&lg->w.mu);
		struct logrec_note *notes = take_notes(lg, &dropped);
		pthread_mutex_unlock(&lg->w.mu);
		report(lg, notes, dropped);
	}
}

/* --- submission ----------------------------------------------------------------- */

/* Queues it, waiting while back_pressure records are pending. */
static void enqueue(struct logger *lg, struct logrec_item *it, const char *type, const char *id)
{
	struct logrec_writer *w = &lg->w;
	uint64_t waited = 0, dropped;
	size_t full_at = 0;
	pthread_mutex_lock(&w->mu);
	if (w->pending >= w->back_pressure) {
		uint64_t t0 = clock_mono_ns();
		full_at = w->pending;
		while (w->pending >= w->back_pressure)
			pthread_cond_wait(&w->room, &w->mu);
		waited = clock_mono_ns() - t0;
	}
	if (w->tail)
		w->tail->next = it;
	else
		w->head = it;
	w->tail = it;
	size_t pending = ++w->pending, len = it->len; /* the writer owns it now */
	if (w->head == it)
		pthread_cond_signal(&w->wake);
	dropped = w->notes_dropped;
	struct logrec_note *notes = w->notes ? take_notes(lg, &dropped) : NULL;
	pthread_mutex_unlock(&w->mu);

	if (full_at) {
		lg->waits++;
		lg->wait_ns += waited;
		KTRACE(logrec_backpressure, full_at, waited / 1000u);
	}
	KTRACE(logrec_record, type, id, len, pending);
	report(lg, notes, dropped);
}

/* Final records (the message's last): where KUMOD_MESSAGE_TIMELINE_LOG
 * puts the message's timeline. */
static int logrec_type_is_final(const char *type)
{
	static const char *const final[] = {"Delivery", "Bounce", "Expiration", "AdminBounce",
					    NULL};
	for (size_t i = 0; final[i]; i++)
		if (strcmp(type, final[i]) == 0)
			return 1;
	return 0;
}

/* The message_event line: the record's gist, with or without local logs.
 * A batch shows its first recipient and how many there are. */
static void trace_event(const struct logrec_event *ev)
{
	if (!KTRACE_ENABLED(message_event))
		return;
	const struct message *m = ev->m;
	char rcpt[600];
	if (ev->recipient || !m || m->nrecipients <= 1)
		snprintf(rcpt, sizeof(rcpt), "%s",
			 ev->recipient	       ? ev->recipient
			 : m && m->nrecipients ? m->recipients[0]
					       : "");
	else
		snprintf(rcpt, sizeof(rcpt), "%s (+%zu)", m->recipients[0], m->nrecipients - 1);
	const char *sender = m ? m->sender : ev->sender;
	json_t *q = jqueue(ev);
	KTRACE(message_event, ev->type, m ? m->id : "", sender ? sender : "", rcpt,
	       json_string_value(q), ev->resp ? ev->resp->code : 0);
	json_decref(q);
}

void logrec_set_filter(logrec_filter_fn fn)
{
	lr.filter = fn;
}

/* The settings for a record type: its own entry, else Any's, else the
 * defaults (enabled, log_dir, JSON). */
static const struct rtype *resolve(const struct logger *lg, const char *type)
{
	static const struct rtype defaults = {.enable = 1};
	for (size_t i = 0; i < TYPE_ANY; i++)
		if (strcmp(type, logrec_record_types[i]) == 0 && lg->rt[i].set)
			return &lg->rt[i];
	return lg->rt[TYPE_ANY].set ? &lg->rt[TYPE_ANY] : &defaults;
}

/* The record as the logger writes it, into lr.line, ending in '\n': the
 * template's rendering (names are the record's fields, and log_record is
 * the whole record), or compact JSON. */
static void format_record(struct logger *lg, const struct rtype *rt, json_t *rec,
			  const struct logrec_event *ev)
{
	buf_reset(&lr.line);
	if (rt->tmpl) {
		json_t *ctx = json_copy(rec); /* shallow: log_record refers to rec */
		set(ctx, "log_record", json_incref(rec));
		struct tmpl_error terr;
		int rc = tmpl_render(rt->tmpl, ctx, &lr.line, &terr);
		json_decref(ctx);
		if (rc == 0) {
			if (!lr.line.len || lr.line.data[lr.line.len - 1] != '\n')
				buf_appendc(&lr.line, '\n');
			return;
		}
		KTRACE(logrec_template_error, lg->w.log_dir, ev->type, ev->m ? ev->m->id : "",
		       terr.msg);
		buf_reset(&lr.line);
	}
	json_compact(&lr.line, rec);
	buf_appendc(&lr.line, '\n');
}

/* 1 when the logger's filter_event lets the record through. */
static int filtered_in(struct logger *lg, const struct logrec_event *ev)
{
	if (!lg->filter_event || !ev->m)
		return 1;
	const char *why = "no handler";
	if (lr.filter && lr.filter(lg->filter_event, ev->m, &why))
		return 1;
	KTRACE(logrec_skipped, lg->w.log_dir, ev->type, ev->m->id, why);
	return 0;
}

/* A logger-independent change to a record after build_record (the report
 * records' own fields). */
typedef void (*record_edit_fn)(json_t *rec, void *ctx);

static logrec_hook_fn log_hook;

void logrec_set_hook(logrec_hook_fn fn)
{
	log_hook = fn;
}

/* 1 when some logger writes ev (per_record enable, filter_event); the
 * skips are traced. */
static int logger_takes(struct logger *lg, const struct logrec_event *ev, const struct rtype **rt)
{
	*rt = resolve(lg, ev->type);
	if (!(*rt)->enable) {
		KTRACE(logrec_skipped, lg->w.log_dir, ev->type, ev->m ? ev->m->id : "",
		       "disabled by per_record");
		return 0;
	}
	return filtered_in(lg, ev);
}

/* Builds ev's record once (the logger-independent fields, edited), then
 * per logger that takes it sets its own meta and headers (and the
 * timeline), formats it (template or JSON) and queues it; the log hooks
 * get it with empty meta and headers (they capture their own). Setting a
 * key keeps its place in the object, so every line is as if built alone. */
static void log_to_loggers(const struct logrec_event *ev, uint64_t when, record_edit_fn edit,
			   void *ctx)
{
	const struct rtype *rts[MAX_LOGGERS];
	int any = 0;
	for (size_t i = 0; i < lr.n; i++) {
		if (!logger_takes(lr.loggers[i], ev, &rts[i]))
			rts[i] = NULL;
		else
			any = 1;
	}
	if (!any && !log_hook)
		return;
	json_t *rec = build_record(NULL, ev, when, classify(ev));
	if (edit)
		edit(rec, ctx);
	json_t *timeline = NULL;
	json_t *meta = ev->m ? ev->m->meta : ev->meta;
	for (size_t i = 0; i < lr.n; i++) {
		struct logger *lg = lr.loggers[i];
		if (!rts[i])
			continue;
		set(rec, "meta", jmeta(lg, meta, ev->m));
		set(rec, "headers", jheaders(lg, ev->m));
		if (ev->m && msg_timeline_in_log() && logrec_type_is_final(ev->type)) {
			if (!timeline)
				timeline = msg_timeline_json(ev->m->id, NULL, NULL);
			set(rec, "timeline", json_incref(timeline));
		}
		format_record(lg, rts[i], rec, ev);
		json_object_del(rec, "timeline");
		struct logrec_item *it = xmalloc(sizeof(*it) + lr.line.len);
		it->next = NULL;
		it->file = rts[i]->file;
		it->len = lr.line.len;
		memcpy(it->line, lr.line.data, lr.line.len);
		enqueue(lg, it, ev->type, ev->m ? ev->m->id : "");
	}
	if (log_hook) {
		set(rec, "meta", json_object());
		set(rec, "headers", json_object());
		log_hook(ev, rec);
	}
	json_decref(timeline);
	json_decref(rec);
}

void logrec_log_event(const struct logrec_event *ev)
{
	if (!ev || !ev->type)
		return;
	trace_event(ev);
	if (ev->m)
		MSG_TIMELINE(ev->m->id, "Logged", "%s record", ev->type);
	log_to_loggers(ev, clock_wall_ns(), NULL, NULL);
}

/* --- report records (log_arf, log_oob) ----------------------------------------------- */

static const char *jget_str(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

/* Wall time of an RFC 3339 "YYYY-MM-DDTHH:MM:SSZ" (proto/report.h's form), or now. */
static uint64_t report_time_ns(const char *s)
{
	struct tm tm = {0};
	if (s && strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm)) {
		time_t t = timegm(&tm);
		if (t >= 0)
			return (uint64_t)t * 1000000000u;
	}
	return clock_wall_ns();
}

/* One OOB record for a "failed" per-recipient entry r of the report. */
struct oob_edit {
	const struct message *m;
	json_t *status;
};

/* The OOB record's own fields (KumoMTA's shape). */
static void oob_edit(json_t *rec, void *ctx)
{
	const struct oob_edit *ed = ctx;
	const struct message *m = ed->m;
	json_t *st = ed->status;
	/* the report is addressed to the original message's envelope sender */
	set(rec, "sender", jstr(m && m->nrecipients ? m->recipients[0] : ""));
	set(rec, "size", json_integer(0));
	set(rec, "num_attempts", json_integer(0));
	/* any class the report states, not only 2, 4 and 5 */
	set(json_object_get(rec, "response"), "enhanced_code",
	    json_pack("{s:O,s:O,s:O}", "class", json_object_get(st, "class"), "subject",
		      json_object_get(st, "subject"), "detail", json_object_get(st, "detail")));
	json_object_del(rec, "tls_cipher");
	json_object_del(rec, "tls_protocol_version");
	json_object_del(rec, "tls_peer_subject_name");
}

static void log_oob_one(const struct logrec_event *ev, json_t *dsn, json_t *r)
{
	const struct message *m = ev->m;
	json_t *st = json_object_get(r, "status"), *diag = json_object_get(r, "diagnostic_code");
	json_t *rcpt = json_object_get(r, "original_recipient");
	if (!json_is_object(rcpt))
		rcpt = json_object_get(r, "final_recipient");
	/* the code and text of an smtp diagnostic "550 text", else 550 and "" */
	int code = 550;
	const char *content = "";
	const char *dt = jget_str(diag, "diagnostic_type"), *dv = jget_str(diag, "diagnostic");
	if (dt && dv && strcmp(dt, "smtp") == 0) {
		const char *sp = strchr(dv, ' ');
		char *end;
		long c = sp ? strtol(dv, &end, 10) : -1;
		content = dv;
		if (sp && end == sp && c >= 0 && c <= 65535) {
			code = (int)c;
			content = sp + 1;
		}
	}
	char enh[40];
	snprintf(enh, sizeof(enh),
		 "%" JSON_INTEGER_FORMAT ".%" JSON_INTEGER_FORMAT ".%" JSON_INTEGER_FORMAT,
		 json_integer_value(json_object_get(st, "class")),
		 json_integer_value(json_object_get(st, "subject")),
		 json_integer_value(json_object_get(st, "detail")));
	struct logrec_response resp = {.code = code, .enhanced = enh, .content = content};
	struct logrec_peer peer = {
	    .name = jget_str(json_object_get(json_object_get(dsn, "per_message"), "reporting_mta"),
			     "name"),
	    .addr = ev->peer && ev->peer->addr ? ev->peer->addr : "0.0.0.0"};
	struct logrec_event oob = *ev;
	oob.type = "OOB";
	oob.recipient = jget_str(rcpt, "recipient");
	oob.resp = &resp;
	oob.peer = &peer;
	oob.tls = NULL;
	oob.site = NULL;
	oob.delivery_protocol = NULL;
	oob.source_address = NULL;
	trace_event(&oob);
	struct oob_edit ed = {m, st};
	log_to_loggers(&oob, report_time_ns(jget_str(r, "last_attempt_date")), oob_edit, &ed);
}

static void feedback_edit(json_t *rec, void *ctx)
{
	set(rec, "feedback_report", json_incref(ctx));
}

void logrec_log_report(const struct logrec_event *ev, json_t *arf, json_t *dsn)
{
	if (arf) {
		struct logrec_event fb = *ev;
		fb.type = "Feedback";
		trace_event(&fb);
		log_to_loggers(&fb, clock_wall_ns(), feedback_edit, arf);
		return;
	}
	logrec_log_event(ev);
	size_t i;
	json_t *r;
	json_array_foreach(json_object_get(dsn, "per_recipient"), i, r)
	{
		if (json_is_string(json_object_get(r, "action")) &&
		    strcmp(jget_str(r, "action"), "failed") == 0)
			log_oob_one(ev, dsn, r);
	}
}

void logrec_log(const char *type, const struct message *m, const char *recipient,
		const struct logrec_response *resp, const struct logrec_peer *peer,
		const char *queue, const char *site, const char *egress_pool,
		const char *egress_source, const char *reception_protocol)
{
	struct logrec_event ev = {
	    .type = type,
	    .m = m,
	    .recipient = recipient,
	    .resp = resp,
	    .peer = peer,
	    .queue = queue,
	    .site = site,
	    .egress_pool = egress_pool,
	    .egress_source = egress_source,
	    .reception_protocol = reception_protocol,
	};
	logrec_log_event(&ev);
}

/* --- configuration ------------------------------------------------------------------ */

static char **copy_strs(const char *const *v, size_t n)
{
	char **out = n ? xcalloc(n, sizeof(*out)) : NULL;
	for (size_t i = 0; i < n; i++)
		out[i] = xstrdup(v[i] ? v[i] : "");
	return out;
}

static void free_strs(char ***v, size_t *n)
{
	for (size_t i = 0; i < *n; i++)
		free((*v)[i]);
	xfree(*v);
	*n = 0;
}

/* mkdir -p dir and checks it is a writable directory. */
static int prepare_dir(const char *dir, char *err, size_t errlen)
{
	int rc = fs_mkdir_p(dir, 0755);
	struct stat st;
	if (rc == 0 && stat(dir, &st) != 0)
		rc = -errno;
	if (rc == 0 && !S_ISDIR(st.st_mode))
		rc = -ENOTDIR;
	if (rc == 0 && access(dir, W_OK | X_OK) != 0)
		rc = -errno;
	if (rc < 0)
		snprintf(err, errlen, "log directory %s: %s", dir, strerror(-rc));
	return rc;
}

/* A directory another logger writes to (its segments would be marked done
 * at our start, and the names could collide). */
static const char *dir_in_use(const char *dir)
{
	for (size_t i = 0; i < lr.n; i++)
		for (size_t j = 0; j < lr.loggers[i]->w.nfiles; j++)
			if (strcmp(lr.loggers[i]->w.files[j].dir, dir) == 0)
				return lr.loggers[i]->w.log_dir;
	return NULL;
}

static int check_config(const struct logrec_config *cfg, char *err, size_t errlen)
{
	if (lr.n == MAX_LOGGERS) {
		snprintf(err, errlen, "at most %d local loggers (configure_local_logs calls)",
			 MAX_LOGGERS);
		return -ENOSPC;
	}
	if (!cfg->log_dir || !*cfg->log_dir) {
		snprintf(err, errlen, "log_dir is required");
		return -EINVAL;
	}
	int lvl = cfg->compression_level;
	if (lvl && (lvl < ZSTD_minCLevel() || lvl > ZSTD_maxCLevel())) {
		snprintf(err, errlen, "compression_level %d is outside %d..%d (0: plain text)", lvl,
			 ZSTD_minCLevel(), ZSTD_maxCLevel());
		return -EINVAL;
	}
	return prepare_dir(cfg->log_dir, err, errlen);
}

static void logger_free(struct logger *lg)
{
	for (size_t i = 0; i < lg->w.nfiles; i++) {
		free(lg->w.files[i].dir);
		free(lg->w.files[i].suffix);
		free(lg->w.files[i].header);
	}
	xfree(lg->w.files);
	xfree(lg->w.log_dir);
	for (size_t i = 0; i < NTYPES; i++)
		tmpl_free(lg->rt[i].tmpl);
	free_strs(&lg->headers, &lg->nheaders);
	free_strs(&lg->meta, &lg->nmeta);
	free(lg->filter_event);
	free(lg);
}

/* The index of the file (dir, suffix), added when new. */
static unsigned file_index(struct logrec_writer *w, const char *dir, const char *suffix,
			   const char *header)
{
	for (size_t i = 0; i < w->nfiles; i++)
		if (strcmp(w->files[i].dir, dir) == 0 &&
		    strcmp(w->files[i].suffix ? w->files[i].suffix : "", suffix ? suffix : "") == 0)
			return (unsigned)i;
	w->files = xrealloc(w->files, (w->nfiles + 1) * sizeof(*w->files));
	w->files[w->nfiles] = (struct logrec_file){
	    .dir = xstrdup(dir),
	    .suffix = suffix && *suffix ? xstrdup(suffix) : NULL,
	    .header = header && *header ? xstrdup(header) : NULL,
	};
	return (unsigned)w->nfiles++;
}

static int type_index(const char *type)
{
	for (size_t i = 0; i < NTYPES; i++)
		if (strcmp(type, logrec_record_types[i]) == 0)
			return (int)i;
	return -1;
}

/* per_record into lg->rt and lg->w.files; templates compiled here. */
static int setup_per_record(struct logger *lg, const struct logrec_config *cfg, char *err,
			    size_t errlen)
{
	file_index(&lg->w, cfg->log_dir, NULL, NULL);
	for (size_t i = 0; i < cfg->nper_record; i++) {
		const struct logrec_per_record *pr = &cfg->per_record[i];
		int t = type_index(pr->type ? pr->type : "");
		if (t < 0) {
			snprintf(err, errlen, "per_record: unknown record type '%s'",
				 pr->type ? pr->type : "");
			return -EINVAL;
		}
		struct rtype *rt = &lg->rt[t];
		if (rt->set) {
			snprintf(err, errlen, "per_record: %s listed twice", pr->type);
			return -EINVAL;
		}
		rt->set = 1;
		rt->enable = pr->enable;
		const char *dir = pr->log_dir && *pr->log_dir ? pr->log_dir : cfg->log_dir;
		if (dir != cfg->log_dir) {
			int rc = prepare_dir(dir, err, errlen);
			if (rc < 0)
				return rc;
		}
		rt->file = file_index(&lg->w, dir, pr->suffix, pr->segment_header);
		if (pr->tmpl) {
			struct tmpl_error te;
			rt->tmpl = tmpl_compile(pr->tmpl, strlen(pr->tmpl), &te);
			if (!rt->tmpl) {
				snprintf(err, errlen,
					 "per_record.%s.template: line %d column %d: %s", pr->type,
					 te.line, te.column, te.msg);
				return -EINVAL;
			}
		}
	}
	for (size_t i = 0; i < lg->w.nfiles; i++) {
		const char *user = dir_in_use(lg->w.files[i].dir);
		if (user) {
			snprintf(err, errlen,
				 "log directory %s is already written by the logger of %s",
				 lg->w.files[i].dir, user);
			return -EEXIST;
		}
	}
	return 0;
}

int logrec_configure(const struct logrec_config *cfg, char *err, size_t errlen)
{
	char dummy[1];
	if (!err || !errlen)
		err = dummy, errlen = sizeof(dummy);
	int rc = check_config(cfg, err, errlen);
	if (rc < 0)
		return rc;
	struct logger *lg = xcalloc(1, sizeof(*lg));
	struct logrec_writer *w = &lg->w;
	w->log_dir = xstrdup(cfg->log_dir);
	w->max_file_size = cfg->max_file_size ? cfg->max_file_size : DEFAULT_MAX_FILE_SIZE;
	w->max_segment_ns = cfg->max_segment_duration_ms * 1000000u;
	w->level = cfg->compression_level;
	w->back_pressure = cfg->back_pressure ? cfg->back_pressure : DEFAULT_BACK_PRESSURE;
	rc = setup_per_record(lg, cfg, err, errlen);
	if (rc == 0)
		rc = logrec__writer_start(w, err, errlen);
	if (rc < 0) {
		logger_free(lg);
		return rc;
	}
	lg->headers = copy_strs(cfg->headers, cfg->nheaders);
	lg->nheaders = cfg->nheaders;
	lg->meta = copy_strs(cfg->meta, cfg->nmeta);
	lg->nmeta = cfg->nmeta;
	lg->filter_event = cfg->filter_event ? xstrdup(cfg->filter_event) : NULL;
	if (!lr.n) {
		buf_init(&lr.line);
		buf_init(&lr.tmp);
	}
	(void)logrec_nodeid(); /* read KUMO_NODE_ID_PATH now, not at the first record */
	lg->task = task_spawn("log_writer", w->log_dir, 0);
	char comp[32];
	snprintf(comp, sizeof(comp), w->level ? "zstd:%d" : "none", w->level);
	task_set_field(lg->task, "compression", comp);
	lg->shown_phase = LOGREC_PHASE_IDLE;
	task_set_phase(lg->task, phase_names[LOGREC_PHASE_IDLE], "log records");
	lr.loggers[lr.n++] = lg;
	KTRACE(logrec_configure, w->log_dir, w->level, w->max_file_size,
	       cfg->max_segment_duration_ms, w->back_pressure);
	return 0;
}

int logrec_enabled(void)
{
	return lr.n > 0;
}

void logrec_get_stats(struct logrec_stats *st)
{
	*st = (struct logrec_stats){0};
	logrec_poll();
	for (size_t i = 0; i < lr.n; i++) {
		struct logger *lg = lr.loggers[i];
		pthread_mutex_lock(&lg->w.mu);
		st->written += lg->w.total.written;
		st->segments += lg->w.total.segments;
		st->errors += lg->w.total.errors;
		st->lost += lg->w.total.lost;
		st->bytes_in += lg->w.total.bytes_in;
		st->bytes_out += lg->w.total.bytes_out;
		st->queued += lg->w.pending;
		pthread_mutex_unlock(&lg->w.mu);
		st->waits += lg->waits;
		st->wait_ns += lg->wait_ns;
	}
}

void logrec_shutdown(void)
{
	logrec_set_classifier(NULL);
	if (!lr.n)
		return;
	for (size_t i = 0; i < lr.n; i++)
		logrec__writer_stop(&lr.loggers[i]->w);
	struct logrec_stats st;
	logrec_get_stats(&st);
	KTRACE(logrec_shutdown, st.written, st.segments, st.errors, st.lost);
	for (size_t i = 0; i < lr.n; i++) {
		struct logger *lg = lr.loggers[i];
		task_close(lg->task);
		logrec__writer_destroy(&lg->w);
		logger_free(lg);
		lr.loggers[i] = NULL;
	}
	lr.n = 0;
	buf_free(&lr.line);
	buf_free(&lr.tmp);
}
