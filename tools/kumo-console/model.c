/* SPDX-License-Identifier: Apache-2.0 */
/* kumo-console state model: frames in, tasks/queues/loop out, derived times,
 * lints, filtering, sorting and the --once output. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/hist.h"
#include "base/xalloc.h"
#include "console.h"

const char *const kc_col_names[KC_COL__COUNT] = {
    "Warn",  "ID",   "State", "Name", "Kind",  "Phase",	 "InPhase",
    "Total", "Busy", "Sched", "Idle", "Polls", "Fields",
};

static const struct {
	const char *name, *text;
} kc_lints[KC_LINT__COUNT] = {
    [KC_LINT_LONG_CALLBACK] = {"long-callback", "a callback blocked the loop"},
    [KC_LINT_LOST_WAKE] = {"lost-wake", "idle with nothing pending that could wake it"},
    [KC_LINT_WATCHDOG] = {"watchdog", "stuck in one phase past the watchdog"},
    [KC_LINT_SELF_WAKES] = {"self-wakes", "more than half of its wakes are self-wakes"},
};

const char *kc_lint_name(enum kc_lint l)
{
	return kc_lints[l].name;
}

const char *kc_lint_text(enum kc_lint l)
{
	return kc_lints[l].text;
}

int kc_lint_parse(const char *name)
{
	for (int i = 0; i < KC_LINT__COUNT; i++)
		if (strcmp(name, kc_lints[i].name) == 0)
			return i;
	return -1;
}

void kc_model_init(struct kc_model *m)
{
	memset(m, 0, sizeof(*m));
	m->retain_ns = 6000000000ull;
	m->lints_on = (1u << KC_LINT__COUNT) - 1;
	m->long_callback_ns = 50000000ull;
	m->watchdog_ns = 300000000000ull;
}

static void task_free(struct kc_task *t)
{
	free(t->kind);
	free(t->name);
	free(t->location);
	json_decref(t->fields);
	free(t);
}

void kc_model_reset(struct kc_model *m)
{
	for (size_t i = 0; i < m->ntasks; i++)
		task_free(m->tasks[i]);
	m->ntasks = 0;
	for (size_t i = 0; i < m->nqueues; i++) {
		free(m->queues[i].kind);
		free(m->queues[i].name);
		json_decref(m->queues[i].obj);
	}
	m->nqueues = 0;
	json_decref(m->details);
	m->details = NULL;
	m->snapshot_complete = 0;
}

void kc_model_free(struct kc_model *m)
{
	kc_model_reset(m);
	json_decref(m->qpage);
	m->qpage = NULL;
	json_decref(m->message);
	m->message = NULL;
	json_decref(m->session);
	m->session = NULL;
	free(m->tasks);
	free(m->queues);
	json_decref(m->hello);
	json_decref(m->loop);
	memset(m, 0, sizeof(*m));
}

/* --- tasks ------------------------------------------------------------------ */

static size_t task_pos(const struct kc_model *m, uint64_t id)
{
	size_t lo = 0, hi = m->ntasks;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (m->tasks[mid]->id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

struct kc_task *kc_model_task(const struct kc_model *m, uint64_t id)
{
	size_t p = task_pos(m, id);
	return p < m->ntasks && m->tasks[p]->id == id ? m->tasks[p] : NULL;
}

static struct kc_task *task_upsert(struct kc_model *m, uint64_t id)
{
	size_t p = task_pos(m, id);
	if (p < m->ntasks && m->tasks[p]->id == id)
		return m->tasks[p];
	if (m->ntasks == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 256;
		m->tasks = xrealloc(m->tasks, m->cap * sizeof(*m->tasks));
	}
	memmove(&m->tasks[p + 1], &m->tasks[p], (m->ntasks - p) * sizeof(*m->tasks));
	struct kc_task *t = xcalloc(1, sizeof(*t));
	t->id = id;
	t->kind = xstrdup("");
	t->name = xstrdup("");
	t->location = xstrdup("");
	t->fields = json_object();
	m->tasks[p] = t;
	m->ntasks++;
	return t;
}

static uint64_t ju64(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	return json_is_integer(v) ? (uint64_t)json_integer_value(v) : 0;
}

static const char *jstr(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));
	return s ? s : "";
}

static void set_str(char **dst, const char *s)
{
	free(*dst);
	*dst = xstrdup(s);
}

static void apply_stats(struct kc_task *t, json_t *s)
{
	if (!json_is_object(s))
		return;
	if (json_object_get(s, "name"))
		set_str(&t->name, jstr(s, "name"));
	snprintf(t->state, sizeof(t->state), "%s", jstr(s, "state"));
	snprintf(t->phase, sizeof(t->phase), "%s", jstr(s, "phase"));
	snprintf(t->wait, sizeof(t->wait), "%s", jstr(s, "wait"));
	t->phase_since = ju64(s, "phase_since");
	t->created_at = ju64(s, "created_at");
	t->dropped_at = ju64(s, "dropped_at");
	t->polls = ju64(s, "polls");
	t->wakes = ju64(s, "wakes");
	t->self_wakes = ju64(s, "self_wakes");
	t->last_wake = ju64(s, "last_wake");
	t->first_poll = ju64(s, "first_poll");
	t->last_poll_started = ju64(s, "last_poll_started");
	t->last_poll_ended = ju64(s, "last_poll_ended");
	t->busy_ns = ju64(s, "busy_ns");
	t->scheduled_ns = ju64(s, "scheduled_ns");
	t->longest_poll_ns = ju64(s, "longest_poll_ns");
	json_t *f = json_object_get(s, "fields");
	if (json_is_object(f)) {
		json_decref(t->fields);
		t->fields = json_incref(f);
	}
}

static void apply_task(struct kc_model *m, json_t *o)
{
	if (!json_is_object(o) || !json_is_integer(json_object_get(o, "id")))
		return;
	struct kc_task *t = task_upsert(m, ju64(o, "id"));
	t->parent = ju64(o, "parent");
	set_str(&t->kind, jstr(o, "kind"));
	set_str(&t->name, jstr(o, "name"));
	set_str(&t->location, jstr(o, "location"));
	json_t *f = json_object_get(o, "fields");
	if (json_is_object(f)) {
		json_decref(t->fields);
		t->fields = json_incref(f);
	}
	apply_stats(t, json_object_get(o, "stats"));
}

/* --- queues ----------------------------------------------------------------- */

static struct kc_queue *queue_find(struct kc_model *m, const char *kind, const char *name)
{
	for (size_t i = 0; i < m->nqueues; i++)
		if (!strcmp(m->queues[i].kind, kind) && !strcmp(m->queues[i].name, name))
			return &m->queues[i];
	return NULL;
}

static void apply_queue(struct kc_model *m, json_t *o)
{
	if (!json_is_object(o))
		return;
	const char *kind = jstr(o, "kind"), *name = jstr(o, "name");
	struct kc_queue *q = queue_find(m, kind, name);
	if (!q) {
		if (m->nqueues == m->qcap) {
			m->qcap = m->qcap ? m->qcap * 2 : 32;
			m->queues = xrealloc(m->queues, m->qcap * sizeof(*m->queues));
		}
		q = &m->queues[m->nqueues++];
		q->kind = xstrdup(kind);
		q->name = xstrdup(name);
		q->obj = NULL;
	}
	json_decref(q->obj);
	q->obj = json_incref(o);
}

static void remove_queue(struct kc_model *m, json_t *o)
{
	struct kc_queue *q = queue_find(m, jstr(o, "kind"), jstr(o, "name"));
	if (!q)
		return;
	free(q->kind);
	free(q->name);
	json_decref(q->obj);
	*q = m->queues[--m->nqueues];
}

/* --- frames ----------------------------------------------------------------- */

static void apply_update(struct kc_model *m, json_t *f)
{
	size_t i;
	json_t *v;
	const char *key;
	json_array_foreach(json_object_get(f, "new_tasks"), i, v) apply_task(m, v);
	json_object_foreach(json_object_get(f, "stats_update"), key, v)
	{
		struct kc_task *t = kc_model_task(m, strtoull(key, NULL, 10));
		if (t)
			apply_stats(t, v);
	}
	if (json_is_true(json_object_get(f, "queues_full"))) {
		while (m->nqueues)
			remove_queue(m, m->queues[0].obj);
	}
	json_array_foreach(json_object_get(f, "queues"), i, v) apply_queue(m, v);
	json_array_foreach(json_object_get(f, "queues_removed"), i, v) remove_queue(m, v);
}

static void apply_loop(struct kc_model *m, json_t *f)
{
	json_t *loop = json_object_get(f, "loop");
	if (!json_is_object(loop))
		return;
	json_decref(m->loop);
	m->loop = json_incref(loop);
}

static int apply_frame(struct kc_model *m, json_t *f, const char *type)
{
	size_t i;
	json_t *v;
	if (!strcmp(type, "hello")) {
		json_decref(m->hello);
		m->hello = json_incref(f);
	} else if (!strcmp(type, "recording")) {
		/* the recording's header line */
	} else if (!strcmp(type, "snapshot")) {
		if (ju64(f, "chunk") == 0)
			kc_model_reset(m);
		json_array_foreach(json_object_get(f, "tasks"), i, v) apply_task(m, v);
		json_array_foreach(json_object_get(f, "queues"), i, v) apply_queue(m, v);
		if (json_is_true(json_object_get(f, "last")))
			m->snapshot_complete = 1;
		apply_loop(m, f);
	} else if (!strcmp(type, "update")) {
		apply_update(m, f);
		apply_loop(m, f);
	} else if (!strcmp(type, "task_details")) {
		json_decref(m->details);
		m->details = json_incref(f);
		m->dropped_events = ju64(f, "dropped_events");
	} else if (!strcmp(type, "queue_messages")) {
		json_decref(m->qpage);
		m->qpage = json_incref(f);
	} else if (!strcmp(type, "message")) {
		json_decref(m->message);
		m->message = json_incref(f);
	} else if (!strcmp(type, "session")) {
		json_decref(m->session);
		m->session = json_incref(f);
	} else if (!strcmp(type, "dropped")) {
		m->dropped_events = ju64(f, "dropped_events");
	} else if (!strcmp(type, "state")) {
		m->paused = !strcmp(jstr(f, "state"), "paused");
	} else if (!strcmp(type, "error")) {
		snprintf(m->last_error, sizeof(m->last_error), "%s", jstr(f, "error"));
	} else {
		return -1;
	}
	return 0;
}

int kc_model_apply(struct kc_model *m, const char *line, size_t len, char *err, size_t errlen)
{
	json_error_t je;
	json_t *f = json_loadb(line, len, 0, &je);
	if (!f) {
		snprintf(err, errlen, "not JSON: %s (column %d)", je.text, je.column);
		return -1;
	}
	const char *type = json_string_value(json_object_get(f, "type"));
	if (!json_is_object(f) || !type) {
		if (json_is_object(f) && json_is_integer(json_object_get(f, "v"))) {
			json_decref(f); /* a bare {"v":1} header */
			return 0;
		}
		snprintf(err, errlen, "not a frame (an object with a \"type\")");
		json_decref(f);
		return -1;
	}
	uint64_t now = ju64(f, "now");
	if (now > m->now)
		m->now = now;
	int rc = apply_frame(m, f, type);
	if (rc < 0)
		snprintf(err, errlen, "unknown frame type \"%.40s\"", type);
	else
		m->frames++;
	json_decref(f);
	return rc;
}

/* --- derived ---------------------------------------------------------------- */

void kc_task_times(const struct kc_model *m, const struct kc_task *t, struct kc_times *o)
{
	uint64_t now = m->now;
	uint64_t end = t->dropped_at ? t->dropped_at : now;
	memset(o, 0, sizeof(*o));
	o->total = end > t->created_at ? end - t->created_at : 0;
	o->busy = t->busy_ns;
	o->sched = t->scheduled_ns;
	if (!t->dropped_at && t->last_poll_started > t->last_poll_ended &&
	    now > t->last_poll_started)
		o->busy += now - t->last_poll_started; /* inside a poll right now */
	if (!t->dropped_at && !strcmp(t->state, "scheduled") &&
	    t->last_wake > t->last_poll_started && now > t->last_wake)
		o->sched += now - t->last_wake;
	o->idle = o->total > o->busy + o->sched ? o->total - o->busy - o->sched : 0;
	o->in_phase = end > t->phase_since && t->phase_since ? end - t->phase_since : 0;
}

static int is_done(const struct kc_task *t)
{
	return !strcmp(t->state, "done");
}

const char *kc_state_label(const struct kc_task *t, int ascii)
{
	if (!strcmp(t->state, "running"))
		return ascii ? "RUNNING" : "\u25B6 RUNNING";
	if (!strcmp(t->state, "scheduled"))
		return ascii ? "SCHED" : "\u23EB SCHED";
	if (is_done(t))
		return ascii ? "DONE" : "\u23F9 DONE";
	return ascii ? "IDLE" : "\u23F8 IDLE";
}

static unsigned task_lints(const struct kc_model *m, const struct kc_task *t)
{
	struct kc_times tm;
	kc_task_times(m, t, &tm);
	unsigned w = 0;
	if (t->longest_poll_ns > m->long_callback_ns)
		w |= 1u << KC_LINT_LONG_CALLBACK;
	if (t->wakes >= 10 && t->self_wakes * 2 > t->wakes)
		w |= 1u << KC_LINT_SELF_WAKES;
	if (is_done(t))
		return w & m->lints_on;
	uint64_t last = t->last_poll_ended > t->last_wake ? t->last_poll_ended : t->last_wake;
	if (t->created_at > last)
		last = t->created_at;
	/* Heuristic: idle for a minute without naming anything it waits for.
	 * The main task waits for signals, which it does not name. */
	if (!strcmp(t->state, "idle") && !t->wait[0] && strcmp(t->kind, "main") != 0 &&
	    m->now > last + 60000000000ull)
		w |= 1u << KC_LINT_LOST_WAKE;
	if (t->wait[0] && strcmp(t->wait, "accept") != 0 && tm.in_phase > m->watchdog_ns)
		w |= 1u << KC_LINT_WATCHDOG;
	return w & m->lints_on;
}

void kc_model_refresh(struct kc_model *m)
{
	size_t j = 0;
	for (size_t i = 0; i < m->ntasks; i++) {
		struct kc_task *t = m->tasks[i];
		if (m->retain_ns && is_done(t) && t->dropped_at &&
		    m->now > t->dropped_at + m->retain_ns) {
			task_free(t);
			continue;
		}
		t->warnings = task_lints(m, t);
		m->tasks[j++] = t;
	}
	m->ntasks = j;
}

void kc_task_fields(const struct kc_task *t, char *out, size_t outlen)
{
	const char *k;
	json_t *v;
	size_t n = 0;
	out[0] = '\0';
	json_object_foreach(t->fields, k, v)
	{
		if (n >= outlen)
			break;
		int w = snprintf(out + n, outlen - n, "%s%s=%s", n ? " " : "", k,
				 json_string_value(v) ? json_string_value(v) : "");
		if (w < 0)
			break;
		n += (size_t)w;
	}
}

static int term_matches(const struct kc_task *t, const char *term, int ascii)
{
	char fields[512];
	const char *colon = strchr(term, ':');
	if (colon && colon > term) {
		size_t kl = (size_t)(colon - term);
		const char *v = colon + 1;
		if (!strncmp(term, "kind", kl) && kl == 4)
			return strcasestr(t->kind, v) != NULL;
		if (!strncmp(term, "phase", kl) && kl == 5)
			return strcasestr(t->phase, v) != NULL;
		if (!strncmp(term, "state", kl) && kl == 5)
			return strcasestr(t->state, v) != NULL ||
			       strcasestr(kc_state_label(t, 1), v) != NULL;
		if (!strncmp(term, "name", kl) && kl == 4)
			return strcasestr(t->name, v) != NULL;
		if (!strncmp(term, "wait", kl) && kl == 4)
			return strcasestr(t->wait, v) != NULL;
		if (!strncmp(term, "id", kl) && kl == 2)
			return t->id == strtoull(v, NULL, 10);
	}
	kc_task_fields(t, fields, sizeof(fields));
	return strcasestr(t->name, term) || strcasestr(t->kind, term) ||
	       strcasestr(t->phase, term) || strcasestr(fields, term) ||
	       strcasestr(kc_state_label(t, ascii), term);
}

int kc_task_matches(const struct kc_task *t, const char *filter, int ascii)
{
	if (!filter || !*filter)
		return 1;
	char *copy = xstrdup(filter), *save = NULL;
	int ok = 1;
	for (char *term = strtok_r(copy, " ", &save); term && ok; term = strtok_r(NULL, " ", &save))
		ok = term_matches(t, term, ascii);
	free(copy);
	return ok;
}

/* --- sorting ---------------------------------------------------------------- */

static const struct kc_model *sort_model;
static enum kc_col sort_col;
static int sort_invert;

static int cmp_u64(uint64_t a, uint64_t b)
{
	return a < b ? -1 : a > b;
}

static uint64_t col_time(const struct kc_task *t, enum kc_col c)
{
	struct kc_times tm;
	kc_task_times(sort_model, t, &tm);
	switch (c) {
	case KC_COL_TOTAL:
		return tm.total;
	case KC_COL_BUSY:
		return tm.busy;
	case KC_COL_SCHED:
		return tm.sched;
	case KC_COL_IDLE:
		return tm.idle;
	default:
		return tm.in_phase;
	}
}

static int cmp_rows(const void *pa, const void *pb)
{
	const struct kc_task *a = *(struct kc_task *const *)pa, *b = *(struct kc_task *const *)pb;
	int r = 0;
	switch (sort_col) {
	case KC_COL_WARN:
		r = cmp_u64(__builtin_popcount(a->warnings), __builtin_popcount(b->warnings));
		break;
	case KC_COL_STATE:
		r = strcmp(a->state, b->state);
		break;
	case KC_COL_NAME:
		r = strcmp(a->name, b->name);
		break;
	case KC_COL_KIND:
		r = strcmp(a->kind, b->kind);
		break;
	case KC_COL_PHASE:
		r = strcmp(a->phase, b->phase);
		break;
	case KC_COL_POLLS:
		r = cmp_u64(a->polls, b->polls);
		break;
	case KC_COL_INPHASE:
	case KC_COL_TOTAL:
	case KC_COL_BUSY:
	case KC_COL_SCHED:
	case KC_COL_IDLE:
		r = cmp_u64(col_time(a, sort_col), col_time(b, sort_col));
		break;
	default:
		break;
	}
	if (!r)
		r = cmp_u64(a->id, b->id);
	return sort_invert ? -r : r;
}

size_t kc_model_rows(const struct kc_model *m, const char *filter, enum kc_col sort, int invert,
		     int ascii, struct kc_task ***rows)
{
	struct kc_task **r = xmalloc((m->ntasks + 1) * sizeof(*r));
	size_t n = 0;
	for (size_t i = 0; i < m->ntasks; i++)
		if (kc_task_matches(m->tasks[i], filter, ascii))
			r[n++] = m->tasks[i];
	sort_model = m;
	sort_col = sort;
	sort_invert = invert;
	qsort(r, n, sizeof(*r), cmp_rows);
	*rows = r;
	return n;
}

static int qsort_col, qsort_invert;

static int cmp_queues(const void *pa, const void *pb)
{
	const struct kc_queue *a = *(struct kc_queue *const *)pa,
			      *b = *(struct kc_queue *const *)pb;
	int r;
	if (qsort_col == 0)
		r = strcmp(a->kind, b->kind);
	else if (qsort_col == 1)
		r = strcmp(a->name, b->name);
	else
		r = cmp_u64(ju64(a->obj, "count"), ju64(b->obj, "count"));
	if (!r)
		r = strcmp(a->name, b->name);
	return qsort_invert ? -r : r;
}

size_t kc_model_queue_rows(const struct kc_model *m, int sort, int invert, struct kc_queue ***rows)
{
	struct kc_queue **r = xmalloc((m->nqueues + 1) * sizeof(*r));
	for (size_t i = 0; i < m->nqueues; i++)
		r[i] = &m->queues[i];
	qsort_col = sort;
	qsort_invert = invert;
	qsort(r, m->nqueues, sizeof(*r), cmp_queues);
	*rows = r;
	return m->nqueues;
}

/* --- output ----------------------------------------------------------------- */

void kc_fmt_dur(uint64_t ns, char *out, size_t cap)
{
	if (ns >= 3600000000000ull)
		snprintf(out, cap, "%.1fh", (double)ns / 3.6e12);
	else if (ns >= 60000000000ull)
		snprintf(out, cap, "%.1fm", (double)ns / 6e10);
	else if (ns >= 1000000000ull)
		snprintf(out, cap, "%.2fs", (double)ns / 1e9);
	else if (ns >= 1000000ull)
		snprintf(out, cap, "%.2fms", (double)ns / 1e6);
	else if (ns >= 1000ull)
		snprintf(out, cap, "%.2fus", (double)ns / 1e3);
	else
		snprintf(out, cap, "%" PRIu64 "ns", ns);
}

static json_t *task_json(const struct kc_model *m, const struct kc_task *t)
{
	struct kc_times tm;
	kc_task_times(m, t, &tm);
	json_t *w = json_array();
	for (int l = 0; l < KC_LINT__COUNT; l++)
		if (t->warnings & (1u << l))
			json_array_append_new(w, json_string(kc_lint_name((enum kc_lint)l)));
	return json_pack(
	    "{sI sI ss ss ss sO ss ss ss sI sI sI sI sI sI sI sI sI sI sI so}", "id",
	    (json_int_t)t->id, "parent", (json_int_t)t->parent, "kind", t->kind, "name", t->name,
	    "location", t->location, "fields", t->fields, "state", t->state, "phase", t->phase,
	    "wait", t->wait, "time_in_phase_ns", (json_int_t)tm.in_phase, "total_ns",
	    (json_int_t)tm.total, "busy_ns", (json_int_t)tm.busy, "scheduled_ns",
	    (json_int_t)tm.sched, "idle_ns", (json_int_t)tm.idle, "polls", (json_int_t)t->polls,
	    "wakes", (json_int_t)t->wakes, "self_wakes", (json_int_t)t->self_wakes,
	    "longest_poll_ns", (json_int_t)t->longest_poll_ns, "created_at",
	    (json_int_t)t->created_at, "dropped_at", (json_int_t)t->dropped_at, "warnings", w);
}

void kc_print_json(const struct kc_model *m, FILE *out)
{
	json_t *root = json_object();
	json_t *tasks = json_array(), *queues = json_array();
	for (size_t i = 0; i < m->ntasks; i++)
		json_array_append_new(tasks, task_json(m, m->tasks[i]));
	for (size_t i = 0; i < m->nqueues; i++)
		json_array_append(queues, m->queues[i].obj);
	json_object_set(root, "server", m->hello ? m->hello : json_null());
	json_object_set_new(root, "now", json_integer((json_int_t)m->now));
	json_object_set_new(root, "tasks", tasks);
	json_object_set_new(root, "queues", queues);
	json_object_set(root, "loop", m->loop ? m->loop : json_null());
	json_object_set_new(root, "dropped_events", json_integer((json_int_t)m->dropped_events));
	json_dumpf(root, out, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
	fputc('\n', out);
	json_decref(root);
}

static int text_width(int w, const char *s, int cap)
{
	int n = (int)strlen(s);
	if (cap && n > cap)
		n = cap;
	return n > w ? n : w;
}

void kc_text_col_widths(struct kc_task *const *rows, size_t n, int cap, int *name, int *kind,
			int *phase)
{
	*name = (int)strlen(kc_col_names[KC_COL_NAME]);
	*kind = (int)strlen(kc_col_names[KC_COL_KIND]);
	*phase = (int)strlen(kc_col_names[KC_COL_PHASE]);
	for (size_t i = 0; i < n; i++) {
		*name = text_width(*name, rows[i]->name, cap);
		*kind = text_width(*kind, rows[i]->kind, cap);
		*phase = text_width(*phase, rows[i]->phase, cap);
	}
}

void kc_print_table(const struct kc_model *m, FILE *out, int ascii)
{
	int wn, wk, wp;
	kc_text_col_widths(m->tasks, m->ntasks, 0, &wn, &wk, &wp);
	fprintf(out, "%-5s %-6s %-7s %-*s %-*s %-*s %9s %9s %9s %9s %7s  %s\n", "Warn", "ID",
		"State", wn, "Name", wk, "Kind", wp, "Phase", "Total", "Busy", "Sched", "Idle",
		"Polls", "Fields");
	for (size_t i = 0; i < m->ntasks; i++) {
		const struct kc_task *t = m->tasks[i];
		struct kc_times tm;
		char tot[16], busy[16], sch[16], idle[16], fields[256];
		kc_task_times(m, t, &tm);
		kc_fmt_dur(tm.total, tot, sizeof(tot));
		kc_fmt_dur(tm.busy, busy, sizeof(busy));
		kc_fmt_dur(tm.sched, sch, sizeof(sch));
		kc_fmt_dur(tm.idle, idle, sizeof(idle));
		kc_task_fields(t, fields, sizeof(fields));
		fprintf(out,
			"%-5s %-6" PRIu64 " %-7s %-*s %-*s %-*s %9s %9s %9s %9s %7" PRIu64 "  %s\n",
			t->warnings ? "!" : "", t->id, kc_state_label(t, 1), wn, t->name, wk,
			t->kind, wp, t->phase, tot, busy, sch, idle, t->polls, fields);
	}
	int wq = 40;
	for (size_t i = 0; i < m->nqueues; i++)
		wq = text_width(wq, m->queues[i].name, 0);
	for (size_t i = 0; i < m->nqueues; i++) {
		if (i == 0)
			fprintf(out, "\n%-10s %-*s %8s\n", "Queue", wq, "Name", "Count");
		fprintf(out, "%-10s %-*s %8" PRIu64 "\n", m->queues[i].kind, wq, m->queues[i].name,
			ju64(m->queues[i].obj, "count"));
	}
	(void)ascii;
}
