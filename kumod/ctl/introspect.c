/* SPDX-License-Identifier: Apache-2.0 */
/* Introspection server: task registry, loop and queue state as NDJSON.
 *
 * There is no event pipeline to fall behind: the task registry already keeps
 * every task's accumulators and the registry sequence of its last change, so
 * each publish tick walks the registry and sends every viewer the tasks that
 * changed after the sequence that viewer has seen. Closed tasks are held back
 * from reaping until every connected viewer has seen them close
 * (task_registry_hold), so no viewer is left with a ghost task. The cost with
 * the flag off is nothing: none of this runs. */
#include "ctl/introspect.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/hist.h"
#include "base/log.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "io/conn.h"
#include "io/loop.h"
#include "ctl/introspect_int.h"
#include "ktrace.h"
#include "proto/console_proto.h"
#include "smtp/transcript.h"

/* A viewer with more unsent bytes than this gets no update this tick (the
 * next one covers both: nothing is lost) and no task-details frame (that
 * one is dropped and counted). */
#define ICL_SOFT_PENDING (1u << 20)
/* Past this many unsent bytes, or with output stuck for ICL_STALL_MIN_NS (or
 * five publish intervals, whichever is longer), the viewer is disconnected. */
#define ICL_HARD_PENDING (16u << 20)
#define ICL_STALL_MIN_NS (5ull * 1000000000ull)
/* Snapshot chunks are cut at this size; one task object is far smaller than
 * the headroom left to CONSOLE_FRAME_MAX. */
#define ICL_CHUNK_TARGET (192u * 1024)
/* Snapshot generation runs ahead of the socket by at most this much. */
#define ICL_SNAPSHOT_AHEAD (512u * 1024)
/* Strings from tasks are cut to this many bytes in frames. */
#define ICL_STR_MAX 512
#define ICL_MAX_SOURCES 16
/* Retained closed tasks are also capped by count (about 35 MiB), so a high
 * connection rate cannot grow memory for a whole TOKIO_CONSOLE_RETENTION. */
#define ICL_RETAINED_MAX 100000
#define REC_MAX_PENDING (64u << 20)

enum icl_state {
	ICL_SNAPSHOT = 0,
	ICL_LIVE,
	ICL_PAUSED,
	ICL_CLOSING,
};

static const char *const icl_state_names[] = {"snapshot", "live", "paused", "closing"};

/* The recording file: frames queued in `pending`, one uv_fs_write at a time. */
struct irec {
	uv_fs_t req;
	int fd;
	int writing, stopping;
	struct buf pending, inflight;
	char path[1024];
};

/* A viewer: a socket, or the recording file (rec != NULL, conn unused). */
struct iclient {
	struct conn conn;
	struct irec *rec;
	struct task *task;
	uint64_t cid;
	enum icl_state state;
	uint64_t seq, max_id;		  /* registry state this viewer has */
	uint64_t snap_seq, snap_max_id;	  /* registry state when its snapshot began */
	uint64_t snap_cursor, snap_chunk; /* last task id sent, chunks sent */
	uint64_t snap_tasks;
	uint64_t queues_tick;	   /* tick whose queue list it has */
	uint64_t watch_id;	   /* task whose details it watches */
	uint64_t dropped;	   /* frames shed for it */
	uint64_t sent;		   /* bytes handed to the socket or file */
	size_t pending_after_send; /* unsent bytes after the last tick */
	uint64_t progress_ns;	   /* last time its output drained */
	int slow_noted;		   /* a console_client_slow was logged */
	struct iclient *next, *prev;
};

/* Queue objects of one tick: JSON text plus an index by identity. */
struct qent {
	uint64_t key, hash; /* hash of kind+name, hash of the object text */
	size_t off, len;    /* object in objs */
	size_t name_off;    /* "kind\0name\0" in names */
};

struct introspect_queues {
	struct buf objs, names;
	struct qent *ents;
	size_t n, cap;
	size_t open_off; /* start of the object being built */
	int open;
};

static struct {
	uv_loop_t *loop;
	struct introspect_config cfg;
	int running, open_handles;
	uv_tcp_t tcp;
	uv_timer_t tick;
	uv_check_t check;
	struct task *task;
	char addr[80];
	struct iclient *clients;
	size_t nclients;
	uint64_t next_cid;
	uint64_t tick_no;
	uint64_t stall_ns;
	uint64_t dropped_events;
	/* loop statistics */
	uint64_t iterations, last_iterations;
	uint64_t last_tick_ns, last_idle_ns, last_polls;
	struct hist poll_hist;
	struct buf loop_json; /* the loop object of the current tick */
	/* queues: this tick and the previous one */
	struct introspect_queues qs[2];
	int qcur;
	struct {
		introspect_queue_fn fn;
		void *ctx;
	} sources[ICL_MAX_SOURCES];
	size_t nsources;
} srv;

static void icl_close(struct iclient *cl, const char *reason, int abort_output);
static void icl_snapshot_step(struct iclient *cl);

/* --- configuration --------------------------------------------------------- */

static int env_duration(const char *var, uint64_t def, uint64_t min, uint64_t *out, char *err,
			size_t errlen)
{
	const char *v = getenv(var);
	if (!v) {
		*out = def;
		return 0;
	}
	uint64_t ns;
	if (console_parse_duration(v, &ns) < 0) {
		snprintf(err, errlen,
			 "%s='%s': not a duration (examples: 250ms, 30s, 5m, 1h; a unit is "
			 "required)",
			 var, v);
		return -EINVAL;
	}
	if (ns < min) {
		snprintf(err, errlen, "%s='%s': must be at least %" PRIu64 "ms", var, v,
			 min / 1000000);
		return -EINVAL;
	}
	*out = ns;
	return 0;
}

int introspect_config_from_env(struct introspect_config *cfg, char *err, size_t errlen)
{
	memset(cfg, 0, sizeof(*cfg));
	const char *bind = getenv("TOKIO_CONSOLE_BIND");
	if (!bind)
		bind = INTROSPECT_DEFAULT_BIND;
	if (strlen(bind) >= sizeof(cfg->bind)) {
		snprintf(err, errlen, "TOKIO_CONSOLE_BIND: value too long");
		return -EINVAL;
	}
	snprintf(cfg->bind, sizeof(cfg->bind), "%s", bind);
	int rc = env_duration("TOKIO_CONSOLE_RETENTION", INTROSPECT_DEFAULT_RETENTION_NS, 0,
			      &cfg->retention_ns, err, errlen);
	if (rc == 0)
		rc = env_duration("TOKIO_CONSOLE_PUBLISH_INTERVAL", INTROSPECT_DEFAULT_PUBLISH_NS,
				  10000000ull, &cfg->publish_ns, err, errlen);
	if (rc)
		return rc;
	const char *rec = getenv("TOKIO_CONSOLE_RECORD_PATH");
	if (rec && *rec) {
		if (strlen(rec) >= sizeof(cfg->record_path)) {
			snprintf(err, errlen, "TOKIO_CONSOLE_RECORD_PATH: path too long");
			return -EINVAL;
		}
		snprintf(cfg->record_path, sizeof(cfg->record_path), "%s", rec);
	}
	return 0;
}

/* HOST:PORT with HOST an IPv4 literal, [IPv6] or localhost. */
static int parse_bind(const char *bind, struct sockaddr_storage *ss)
{
	const char *colon = strrchr(bind, ':');
	if (!colon || !colon[1])
		return -EINVAL;
	char *end;
	errno = 0;
	unsigned long port = strtoul(colon + 1, &end, 10);
	if (*end || errno || port > 65535 || colon[1] < '0' || colon[1] > '9')
		return -EINVAL;
	char host[128];
	size_t hl = (size_t)(colon - bind);
	if (hl >= sizeof(host) || hl == 0)
		return -EINVAL;
	memcpy(host, bind, hl);
	host[hl] = '\0';
	if (host[0] == '[') {
		if (hl < 3 || host[hl - 1] != ']')
			return -EINVAL;
		host[hl - 1] = '\0';
		return uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)ss) ? -EINVAL : 0;
	}
	if (strcmp(host, "localhost") == 0)
		snprintf(host, sizeof(host), "127.0.0.1");
	return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) ? -EINVAL : 0;
}

static int addr_is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const uint8_t *a = (const uint8_t *)&((const struct sockaddr_in *)ss)->sin_addr;
		return a[0] == 127;
	}
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
	static const uint8_t lo6[16] = {[15] = 1};
	return memcmp(&s6->sin6_addr, lo6, 16) == 0;
}

/* --- JSON of tasks and histograms ------------------------------------------ */

static void put_str(struct buf *b, const char *key, const char *s)
{
	console_json_key(b, key);
	size_t n = s ? strlen(s) : 0;
	console_json_strn(b, s ? s : "", n > ICL_STR_MAX ? ICL_STR_MAX : n);
}

static void put_fields(struct buf *b, const struct task *t)
{
	console_json_key(b, "fields");
	buf_appendc(b, '{');
	for (size_t i = 0; i < t->nfields; i++)
		put_str(b, t->fields[i].key, t->fields[i].value);
	buf_appendc(b, '}');
}

/* The members that change: stats in tokio's names plus the MTA phase. */
static void put_stats(struct buf *b, const struct task *t)
{
	buf_appendc(b, '{');
	put_str(b, "name", t->name);
	put_str(b, "state", task_state_name(t->state));
	put_str(b, "phase", t->phase);
	console_json_kv_u64(b, "phase_since", t->phase_since_ns);
	put_str(b, "wait", t->wait ? t->wait : "");
	console_json_kv_u64(b, "created_at", t->created_ns);
	console_json_kv_u64(b, "dropped_at", t->dropped_ns);
	console_json_kv_u64(b, "polls", t->polls);
	console_json_kv_u64(b, "wakes", t->wakes);
	console_json_kv_u64(b, "self_wakes", t->self_wakes);
	console_json_kv_u64(b, "last_wake", t->last_wake_ns);
	console_json_kv_u64(b, "first_poll", t->first_poll_ns);
	console_json_kv_u64(b, "last_poll_started", t->last_poll_started_ns);
	console_json_kv_u64(b, "last_poll_ended", t->last_poll_ended_ns);
	console_json_kv_u64(b, "busy_ns", t->busy_ns);
	console_json_kv_u64(b, "scheduled_ns", t->scheduled_ns);
	console_json_kv_u64(b, "longest_poll_ns", t->longest_poll_ns);
	put_fields(b, t);
	buf_appendc(b, '}');
}

/* A whole task: identity, static metadata and stats. */
static void put_task(struct buf *b, const struct task *t)
{
	console_json_sep(b);
	buf_appendc(b, '{');
	console_json_kv_u64(b, "id", t->id);
	put_str(b, "kind", t->kind);
	put_str(b, "name", t->name);
	console_json_kv_u64(b, "parent", t->parent);
	put_str(b, "location", t->location);
	put_fields(b, t);
	console_json_key(b, "stats");
	put_stats(b, t);
	buf_appendc(b, '}');
}

static void put_hist(struct buf *b, const char *key, const struct hist *h)
{
	static const struct {
		const char *name;
		double p;
	} pcts[] = {{"p10", 10}, {"p25", 25}, {"p50", 50}, {"p75", 75},
		    {"p90", 90}, {"p95", 95}, {"p99", 99}};
	console_json_key(b, key);
	buf_appendc(b, '{');
	console_json_kv_u64(b, "count", h->count);
	console_json_kv_u64(b, "min_ns", h->count ? h->min_ns : 0);
	console_json_kv_u64(b, "max_ns", h->max_ns);
	console_json_kv_u64(b, "mean_ns", hist_mean(h));
	console_json_kv_u64(b, "high_outliers", h->high_outliers);
	for (size_t i = 0; i < sizeof(pcts) / sizeof(pcts[0]); i++)
		console_json_kv_u64(b, pcts[i].name, hist_percentile(h, pcts[i].p));
	/* Counts per power of two: [<1us, 1-2us, 2-4us, ..., >60s]. */
	console_json_key(b, "octaves");
	buf_appendc(b, '[');
	console_json_u64(b, h->buckets[0]);
	for (size_t o = 0; o < HIST_OCTAVES; o++) {
		uint64_t sum = 0;
		for (size_t s = 0; s < HIST_SUB_BUCKETS; s++)
			sum += h->buckets[1 + o * HIST_SUB_BUCKETS + s];
		buf_appendc(b, ',');
		console_json_u64(b, sum);
	}
	buf_appendc(b, ',');
	console_json_u64(b, h->buckets[HIST_NBUCKETS - 1]);
	buf_appends(b, "]}");
}

/* --- sending --------------------------------------------------------------- */

static size_t icl_pending(const struct iclient *cl)
{
	if (cl->rec)
		return cl->rec->pending.len + cl->rec->inflight.len;
	return cl->conn.inflight + cl->conn.out.len;
}

static void rec_kick(struct iclient *cl);

/* Hands bytes to the viewer (one socket write or file append per call). */
static void icl_send(struct iclient *cl, const char *p, size_t n)
{
	if (!n || cl->state == ICL_CLOSING)
		return;
	cl->sent += n;
	if (cl->rec) {
		if (cl->rec->pending.len + n > REC_MAX_PENDING) {
			KTRACE(console_record_stop, cl->rec->path, "the disk is too slow");
			icl_close(cl, "recording: the disk is too slow", 1);
			return;
		}
		buf_append(&cl->rec->pending, p, n);
		rec_kick(cl);
		return;
	}
	conn_write(&cl->conn, p, n);
	conn_flush(&cl->conn);
	if (icl_pending(cl) > ICL_HARD_PENDING) {
		KTRACE(console_client_slow, cl->cid, cl->conn.peer, (uint64_t)icl_pending(cl),
		       "client disconnected");
		icl_close(cl, "not reading: output buffer full", 1);
	}
}

static void icl_sendb(struct iclient *cl, const struct buf *b)
{
	icl_send(cl, b->data, b->len);
}

static void icl_set_state(struct iclient *cl, enum icl_state st)
{
	if (cl->state == st)
		return;
	KTRACE(console_client_state, cl->cid, icl_state_names[cl->state], icl_state_names[st]);
	cl->state = st;
	if (cl->task)
		task_set_phase(cl->task,
			       st == ICL_SNAPSHOT ? "Snapshot"
			       : st == ICL_LIVE	  ? "Live"
			       : st == ICL_PAUSED ? "Paused"
						  : "Closing",
			       st == ICL_CLOSING ? NULL : "peer_write");
}

/* Keeps closed tasks until every viewer has seen them close. */
static void srv_update_hold(void)
{
	uint64_t hold = UINT64_MAX;
	for (struct iclient *cl = srv.clients; cl; cl = cl->next) {
		if (cl->state == ICL_LIVE && cl->seq < hold)
			hold = cl->seq;
		else if (cl->state == ICL_SNAPSHOT && cl->snap_seq < hold)
			hold = cl->snap_seq;
	}
	task_registry_hold(hold);
}

static void put_frame_state(struct buf *b, const char *state)
{
	buf_appends(b, "{\"type\":\"state\"");
	console_json_kv_str(b, "state", state);
	console_json_kv_u64(b, "now", clock_wall_ns());
	buf_appends(b, "}\n");
}

static void icl_hello(struct iclient *cl)
{
	struct buf b;
	buf_init(&b);
	buf_appends(&b, "{\"type\":\"hello\"");
	console_json_kv_u64(&b, "v", CONSOLE_PROTO_VERSION);
	console_json_kv_str(&b, "server", "kumod");
	console_json_kv_str(&b, "version", KUMOD_VERSION);
	console_json_kv_u64(&b, "pid", (uint64_t)getpid());
	console_json_kv_u64(&b, "publish_interval_ms", srv.cfg.publish_ns / 1000000);
	console_json_kv_u64(&b, "retention_s", srv.cfg.retention_ns / 1000000000);
	console_json_kv_u64(&b, "frame_max", CONSOLE_FRAME_MAX);
	console_json_kv_u64(&b, "client_id", cl->cid);
	console_json_kv_u64(&b, "now", clock_wall_ns());
	buf_appends(&b, "}\n");
	icl_sendb(cl, &b);
	buf_free(&b);
}

/* --- snapshots ------------------------------------------------------------- */

static void icl_snapshot_begin(struct iclient *cl)
{
	icl_set_state(cl, ICL_SNAPSHOT);
	cl->snap_seq = task_registry_seq();
	cl->snap_max_id = task_registry_last_id();
	cl->snap_cursor = 0;
	cl->snap_chunk = 0;
	cl->snap_tasks = 0;
	srv_update_hold();
	icl_snapshot_step(cl);
}

struct chunk_ctx {
	struct buf *b;
	uint64_t last_id;
	size_t n;
};

static int chunk_add_task(struct task *t, void *arg)
{
	struct chunk_ctx *c = arg;
	if (c->b->len >= ICL_CHUNK_TARGET)
		return 1;
	put_task(c->b, t);
	c->last_id = t->id;
	c->n++;
	return 0;
}

static void snapshot_head(struct buf *b, const struct iclient *cl, uint64_t now)
{
	buf_appends(b, "{\"type\":\"snapshot\"");
	console_json_kv_u64(b, "seq", cl->snap_seq);
	console_json_kv_u64(b, "now", now);
	console_json_kv_u64(b, "chunk", cl->snap_chunk);
}

/* Queue objects of the current tick, cut into frames after the tasks. */
static void snapshot_queues(struct iclient *cl, struct buf *b, uint64_t now)
{
	const struct introspect_queues *qs = &srv.qs[srv.qcur];
	size_t i = 0;
	do {
		snapshot_head(b, cl, now);
		console_json_key(b, "tasks");
		buf_appends(b, "[]");
		console_json_key(b, "queues");
		buf_appendc(b, '[');
		size_t start = b->len;
		for (; i < qs->n && b->len - start < ICL_CHUNK_TARGET; i++) {
			console_json_sep(b);
			buf_append(b, qs->objs.data + qs->ents[i].off, qs->ents[i].len);
		}
		buf_appendc(b, ']');
		console_json_kv_bool(b, "last", i == qs->n);
		if (i == qs->n) {
			console_json_key(b, "loop");
			buf_append(b, srv.loop_json.data, srv.loop_json.len);
		}
		buf_appends(b, "}\n");
		cl->snap_chunk++;
	} while (i < qs->n);
}

static void icl_snapshot_done(struct iclient *cl)
{
	KTRACE(console_snapshot_done, cl->cid, cl->snap_chunk, cl->snap_tasks,
	       (uint64_t)srv.qs[srv.qcur].n);
	cl->seq = cl->snap_seq;
	cl->max_id = cl->snap_max_id;
	cl->queues_tick = srv.tick_no;
	icl_set_state(cl, ICL_LIVE);
	srv_update_hold();
}

/* Sends chunks while the viewer's output is short; on_drain calls again. */
static void icl_snapshot_step(struct iclient *cl)
{
	struct buf b;
	buf_init(&b);
	while (cl->state == ICL_SNAPSHOT && icl_pending(cl) < ICL_SNAPSHOT_AHEAD) {
		uint64_t now = clock_wall_ns();
		buf_reset(&b);
		snapshot_head(&b, cl, now);
		console_json_key(&b, "tasks");
		buf_appendc(&b, '[');
		struct chunk_ctx c = {&b, cl->snap_cursor, 0};
		int more = task_foreach_after(cl->snap_cursor, chunk_add_task, &c);
		buf_appendc(&b, ']');
		cl->snap_cursor = c.last_id;
		cl->snap_tasks += c.n;
		if (more) {
			buf_appends(&b, ",\"queues\":[],\"last\":false}\n");
			cl->snap_chunk++;
			icl_sendb(cl, &b);
			continue;
		}
		/* Tasks done: this frame ends the task part; queues follow. */
		buf_appends(&b, ",\"queues\":[],\"last\":false}\n");
		cl->snap_chunk++;
		snapshot_queues(cl, &b, now);
		icl_sendb(cl, &b);
		if (cl->state == ICL_SNAPSHOT)
			icl_snapshot_done(cl);
	}
	buf_free(&b);
}

/* --- updates --------------------------------------------------------------- */

/* One update, cut into frames ("part") of bounded size. */
struct upd {
	struct buf *out;
	uint64_t seq, max_id, now, part;
	int queues_full; /* the queue list is complete: replace, not merge */
	struct buf news, stats, closed, queues, removed;
};

static size_t upd_size(const struct upd *u)
{
	return u->news.len + u->stats.len + u->closed.len + u->queues.len + u->removed.len;
}

static void upd_list(struct buf *out, const char *key, const struct buf *items, char open,
		     char close)
{
	console_json_key(out, key);
	buf_appendc(out, open);
	buf_append(out, items->data, items->len);
	buf_appendc(out, close);
}

static void upd_flush(struct upd *u, int last)
{
	struct buf *o = u->out;
	buf_appends(o, "{\"type\":\"update\"");
	console_json_kv_u64(o, "seq", task_registry_seq()); /* the state it brings the client to */
	console_json_kv_u64(o, "now", u->now);
	console_json_kv_u64(o, "part", u->part++);
	console_json_kv_bool(o, "last", last);
	if (u->part == 1 && u->queues_full)
		console_json_kv_bool(o, "queues_full", 1);
	upd_list(o, "new_tasks", &u->news, '[', ']');
	upd_list(o, "stats_update", &u->stats, '{', '}');
	upd_list(o, "closed", &u->closed, '[', ']');
	upd_list(o, "queues", &u->queues, '[', ']');
	upd_list(o, "queues_removed", &u->removed, '[', ']');
	if (last) {
		console_json_key(o, "loop");
		buf_append(o, srv.loop_json.data, srv.loop_json.len);
	}
	buf_appends(o, "}\n");
	buf_reset(&u->news);
	buf_reset(&u->stats);
	buf_reset(&u->closed);
	buf_reset(&u->queues);
	buf_reset(&u->removed);
}

static int upd_add_task(struct task *t, void *arg)
{
	struct upd *u = arg;
	if (t->change_seq <= u->seq)
		return 0;
	if (t->id > u->max_id) {
		put_task(&u->news, t);
	} else {
		console_json_sep(&u->stats);
		char id[24];
		snprintf(id, sizeof(id), "%" PRIu64, t->id);
		console_json_str(&u->stats, id);
		buf_appendc(&u->stats, ':');
		put_stats(&u->stats, t);
	}
	if (t->state == TASK_DONE) {
		console_json_sep(&u->closed);
		console_json_u64(&u->closed, t->id);
	}
	if (upd_size(u) >= ICL_CHUNK_TARGET)
		upd_flush(u, 0);
	return 0;
}

static int qent_cmp(const void *a, const void *b)
{
	const struct qent *x = a, *y = b;
	return x->key < y->key ? -1 : x->key > y->key;
}

static const struct qent *qs_find(const struct introspect_queues *qs, uint64_t key)
{
	struct qent probe = {.key = key};
	return qs->n ? bsearch(&probe, qs->ents, qs->n, sizeof(*qs->ents), qent_cmp) : NULL;
}

static void upd_add_queue(struct upd *u, const struct introspect_queues *qs, size_t i)
{
	console_json_sep(&u->queues);
	buf_append(&u->queues, qs->objs.data + qs->ents[i].off, qs->ents[i].len);
	if (upd_size(u) >= ICL_CHUNK_TARGET)
		upd_flush(u, 0);
}

/* Queues changed since the previous tick, or all of them (full=1) for a
 * viewer that skipped ticks; removed ones as {"kind","name"}. */
static void upd_queues(struct upd *u, int full)
{
	const struct introspect_queues *cur = &srv.qs[srv.qcur], *prev = &srv.qs[!srv.qcur];
	for (size_t i = 0; i < cur->n; i++) {
		const struct qent *p = full ? NULL : qs_find(prev, cur->ents[i].key);
		if (!p || p->hash != cur->ents[i].hash)
			upd_add_queue(u, cur, i);
	}
	if (full)
		return;
	for (size_t i = 0; i < prev->n; i++) {
		if (qs_find(cur, prev->ents[i].key))
			continue;
		const char *kind = prev->names.data + prev->ents[i].name_off;
		console_json_sep(&u->removed);
		buf_appendc(&u->removed, '{');
		console_json_kv_str(&u->removed, "kind", kind);
		console_json_kv_str(&u->removed, "name", kind + strlen(kind) + 1);
		buf_appendc(&u->removed, '}');
	}
}

/* Builds the update frames for a viewer that has seen the registry up to
 * seq (and the queues of tick queues_tick) into out. */
static void build_update(struct buf *out, uint64_t seq, uint64_t max_id, int queues_full,
			 uint64_t now)
{
	struct upd u = {
	    .out = out, .seq = seq, .max_id = max_id, .now = now, .queues_full = queues_full};
	buf_init(&u.news);
	buf_init(&u.stats);
	buf_init(&u.closed);
	buf_init(&u.queues);
	buf_init(&u.removed);
	task_foreach_after(0, upd_add_task, &u);
	upd_queues(&u, queues_full);
	upd_flush(&u, 1);
	buf_free(&u.news);
	buf_free(&u.stats);
	buf_free(&u.closed);
	buf_free(&u.queues);
	buf_free(&u.removed);
}

/* Appends the "dropped_events" of this viewer into its last frame: the
 * frames are built once for every viewer with the same seq, so the
 * per-viewer count travels in a small frame of its own when non-zero. */
static void icl_send_dropped(struct iclient *cl)
{
	struct buf b;
	buf_init(&b);
	buf_appends(&b, "{\"type\":\"dropped\"");
	console_json_kv_u64(&b, "dropped_events", cl->dropped);
	console_json_kv_u64(&b, "now", clock_wall_ns());
	buf_appends(&b, "}\n");
	icl_sendb(cl, &b);
	buf_free(&b);
}

static void icl_send_details(struct iclient *cl, uint64_t now)
{
	struct task *t = task_lookup(cl->watch_id);
	if (!t || !t->hists)
		return;
	if (icl_pending(cl) > ICL_SOFT_PENDING) {
		cl->dropped++;
		srv.dropped_events++;
		if (!cl->slow_noted && !cl->rec)
			KTRACE(console_client_slow, cl->cid, cl->conn.peer,
			       (uint64_t)icl_pending(cl), "task details dropped");
		cl->slow_noted = 1;
		icl_send_dropped(cl);
		return;
	}
	struct buf b;
	buf_init(&b);
	buf_appends(&b, "{\"type\":\"task_details\"");
	console_json_kv_u64(&b, "id", t->id);
	console_json_kv_u64(&b, "now", now);
	console_json_kv_u64(&b, "dropped_events", cl->dropped);
	put_hist(&b, "poll_hist", &t->hists->poll);
	put_hist(&b, "sched_hist", &t->hists->sched);
	introspect__session_member(&b, t->id); /* an SMTP session: envelope, transcript */
	buf_appends(&b, "}\n");
	icl_sendb(cl, &b);
	buf_free(&b);
}

/* Disconnects a viewer whose output has not moved for the stall time. */
static int icl_check_stall(struct iclient *cl, uint64_t now)
{
	size_t pending = icl_pending(cl);
	if (pending == 0 || pending < cl->pending_after_send) {
		cl->progress_ns = now;
		cl->slow_noted = 0;
		return 0;
	}
	if (cl->rec || now - cl->progress_ns < srv.stall_ns)
		return 0;
	KTRACE(console_client_slow, cl->cid, cl->conn.peer, (uint64_t)pending,
	       "client disconnected");
	icl_close(cl, "not reading: output stalled", 1);
	return 1;
}

/* --- the tick -------------------------------------------------------------- */

static void collect_queues(void)
{
	srv.qcur = !srv.qcur;
	struct introspect_queues *qs = &srv.qs[srv.qcur];
	buf_reset(&qs->objs);
	buf_reset(&qs->names);
	qs->n = 0;
	for (size_t i = 0; i < srv.nsources; i++) {
		srv.sources[i].fn(qs, srv.sources[i].ctx);
		if (qs->open)
			panic("%s: queue source %zu did not end its object", __func__, i);
	}
	if (qs->n)
		qsort(qs->ents, qs->n, sizeof(*qs->ents), qent_cmp);
}

struct mem_ctx {
	size_t done;
	size_t bytes;
};

static void count_task(struct task *t, void *arg)
{
	struct mem_ctx *m = arg;
	m->bytes += sizeof(*t) + strlen(t->name) + 1 + (t->hists ? sizeof(*t->hists) : 0);
	for (size_t i = 0; i < t->nfields; i++)
		m->bytes += strlen(t->fields[i].key) + strlen(t->fields[i].value) + 2;
	if (t->state == TASK_DONE)
		m->done++;
}

/* The loop object shared by every frame of this tick. */
static void build_loop(uint64_t now)
{
	struct task_loop_stats ls;
	task_registry_loop_stats(&ls);
	uint64_t idle = uv_metrics_idle_time(srv.loop);
	uint64_t interval = now > srv.last_tick_ns ? now - srv.last_tick_ns : 0;
	uint64_t idle_d = idle - srv.last_idle_ns;
	struct mem_ctx m = {0};
	task_foreach(count_task, &m);
	size_t live, total = task_count(&live);
	struct buf *b = &srv.loop_json;
	buf_reset(b);
	buf_appendc(b, '{');
	console_json_kv_u64(b, "iterations", srv.iterations);
	console_json_kv_u64(b, "iterations_delta", srv.iterations - srv.last_iterations);
	console_json_kv_u64(b, "interval_ns", interval);
	console_json_kv_u64(b, "busy_ns", interval > idle_d ? interval - idle_d : 0);
	console_json_kv_u64(b, "idle_ns", idle_d < interval ? idle_d : interval);
	console_json_kv_u64(b, "polls", ls.polls);
	console_json_kv_u64(b, "polls_delta", ls.polls - srv.last_polls);
	console_json_kv_u64(b, "longest_poll_ns", ls.longest_poll_ns);
	console_json_kv_u64(b, "longest_poll_task", ls.longest_poll_task);
	put_hist(b, "poll_hist", &srv.poll_hist);
	console_json_kv_u64(b, "tasks", total);
	console_json_kv_u64(b, "tasks_live", live);
	console_json_kv_u64(b, "tasks_retained", m.done);
	console_json_kv_u64(b, "task_bytes", m.bytes);
	console_json_kv_u64(b, "retention_s", srv.cfg.retention_ns / 1000000000);
	console_json_kv_u64(b, "retained_max", ICL_RETAINED_MAX);
	console_json_kv_u64(b, "clients", srv.nclients);
	console_json_kv_u64(b, "dropped_events", srv.dropped_events);
	struct kumod_busy_poll_stats bp = kumod_loop_busy_poll_stats();
	console_json_kv_u64(b, "busy_poll_us", kumod_loop_busy_poll_us());
	console_json_kv_u64(b, "busy_poll_windows", bp.windows);
	console_json_kv_u64(b, "busy_poll_tail_ns", bp.tail_ns);
	buf_appendc(b, '}');
	srv.last_iterations = srv.iterations;
	srv.last_idle_ns = idle;
	srv.last_tick_ns = now;
	srv.last_polls = ls.polls;
}

/* Sends this tick's update to every live viewer; viewers at the same seq
 * share one build. */
static void publish(uint64_t now)
{
	struct buf frames;
	buf_init(&frames);
	uint64_t built_seq = UINT64_MAX, built_qtick = UINT64_MAX;
	struct iclient *cl, *next;
	for (cl = srv.clients; cl; cl = next) {
		next = cl->next;
		if (icl_check_stall(cl, now) || cl->state != ICL_LIVE)
			continue;
		if (icl_pending(cl) > ICL_SOFT_PENDING)
			continue; /* coalesced into the next tick */
		int full = cl->queues_tick + 1 != srv.tick_no;
		if (built_seq != cl->seq || built_qtick != (uint64_t)full) {
			buf_reset(&frames);
			build_update(&frames, cl->seq, cl->max_id, full, now);
			built_seq = cl->seq;
			built_qtick = (uint64_t)full;
		}
		icl_sendb(cl, &frames);
		if (cl->state != ICL_LIVE)
			continue;
		cl->seq = task_registry_seq();
		cl->max_id = task_registry_last_id();
		cl->queues_tick = srv.tick_no;
		if (cl->watch_id)
			icl_send_details(cl, now);
		cl->pending_after_send = icl_pending(cl);
	}
	buf_free(&frames);
	for (cl = srv.clients; cl; cl = cl->next)
		if (cl->state != ICL_LIVE)
			cl->pending_after_send = icl_pending(cl);
	srv_update_hold();
}

static void tick_cb(uv_timer_t *h)
{
	struct task *prev = task_enter(srv.task);
	uint64_t now = clock_wall_ns();
	srv.tick_no++;
	collect_queues();
	build_loop(now);
	publish(now);
	task_exit(srv.task, prev);
}

static void check_cb(uv_check_t *h)
{
	/* Loop accounting only: not a task's work, so no task_enter. */
	srv.iterations++;
}

/* --- viewer input ---------------------------------------------------------- */

static void icl_error(struct iclient *cl, const char *msg, size_t pos)
{
	struct buf b;
	buf_init(&b);
	console_error_frame(&b, msg, pos);
	icl_sendb(cl, &b);
	buf_free(&b);
	KTRACE(console_cmd_error, cl->cid, msg, (uint64_t)pos);
}

static void icl_unwatch(struct iclient *cl)
{
	if (!cl->watch_id)
		return;
	struct task *t = task_lookup(cl->watch_id);
	if (t && t->hists)
		task_watch(t, 0);
	cl->watch_id = 0;
}

static void icl_watch(struct iclient *cl, uint64_t id)
{
	struct task *t = task_lookup(id);
	if (!t) {
		icl_error(cl, "no such task", 0);
		return;
	}
	icl_unwatch(cl);
	task_watch(t, 1);
	cl->watch_id = id;
	if (cl->state == ICL_LIVE)
		icl_send_details(cl, clock_wall_ns());
}

/* The drill-down views: one reply frame each, or an error frame. */
static void icl_view(struct iclient *cl, const struct console_cmd *cmd, struct buf *b)
{
	char err[300] = "";
	uint64_t now = clock_wall_ns();
	int rc = cmd->kind == CONSOLE_CMD_SESSION
		     ? introspect__session_frame(b, cmd->id, now, err, sizeof(err))
		 : cmd->kind == CONSOLE_CMD_QUEUE_MESSAGES
		     ? introspect__queue_messages_frame(b, cmd, now, err, sizeof(err))
		     : introspect__message_frame(b, cmd->message_id, now, err, sizeof(err));
	if (rc < 0)
		icl_error(cl, err, 0);
	else
		icl_sendb(cl, b);
}

static void icl_command(struct iclient *cl, const struct console_cmd *cmd)
{
	struct buf b;
	KTRACE(console_cmd, cl->cid, console_cmd_name(cmd->kind), cmd->id);
	buf_init(&b);
	switch (cmd->kind) {
	case CONSOLE_CMD_PAUSE:
		if (cl->state != ICL_PAUSED)
			icl_set_state(cl, ICL_PAUSED);
		srv_update_hold();
		put_frame_state(&b, "paused");
		icl_sendb(cl, &b);
		break;
	case CONSOLE_CMD_RESUME:
		put_frame_state(&b, "live");
		icl_sendb(cl, &b);
		if (cl->state == ICL_PAUSED)
			icl_snapshot_begin(cl); /* state moved on: send it again */
		break;
	case CONSOLE_CMD_SNAPSHOT:
		icl_snapshot_begin(cl);
		break;
	case CONSOLE_CMD_WATCH_TASK:
		icl_watch(cl, cmd->id);
		break;
	case CONSOLE_CMD_UNWATCH_TASK:
		icl_unwatch(cl);
		break;
	case CONSOLE_CMD_SESSION:
	case CONSOLE_CMD_QUEUE_MESSAGES:
	case CONSOLE_CMD_MESSAGE:
		icl_view(cl, cmd, &b);
		break;
	}
	buf_free(&b);
}

static void icl_on_data(struct conn *c)
{
	struct iclient *cl = c->owner;
	while (cl->state != ICL_CLOSING && buf_avail(&c->in)) {
		size_t linelen = 0;
		int n = console_line_next(buf_rptr(&c->in), buf_avail(&c->in), CONSOLE_CMD_MAX,
					  &linelen);
		if (n == 0)
			break;
		if (n < 0) {
			icl_error(cl, "command line too long (limit 4096 bytes); closing", 0);
			icl_close(cl, "oversized command", 0);
			return;
		}
		struct console_cmd cmd;
		char err[128];
		size_t pos = 0;
		const char *line = buf_rptr(&c->in);
		int blank = linelen == 0;
		if (!blank && console_cmd_decode(line, linelen, &cmd, err, sizeof(err), &pos) < 0)
			icl_error(cl, err, pos);
		else if (!blank)
			icl_command(cl, &cmd);
		buf_consume(&c->in, (size_t)n);
	}
}

static void icl_on_eof(struct conn *c, int err)
{
	icl_close(c->owner, err ? "read error" : "peer closed", 1);
}

static void icl_on_drain(struct conn *c)
{
	struct iclient *cl = c->owner;
	cl->progress_ns = clock_wall_ns();
	if (cl->state == ICL_SNAPSHOT)
		icl_snapshot_step(cl);
}

static void icl_free(struct iclient *cl)
{
	if (cl->prev)
		cl->prev->next = cl->next;
	else
		srv.clients = cl->next;
	if (cl->next)
		cl->next->prev = cl->prev;
	srv.nclients--;
	task_close(cl->task);
	if (cl->rec) {
		buf_free(&cl->rec->pending);
		buf_free(&cl->rec->inflight);
		free(cl->rec);
	}
	free(cl);
	srv_update_hold();
}

static void icl_on_closed(struct conn *c)
{
	icl_free(c->owner);
}

static const struct conn_handler icl_handler = {
    .on_data = icl_on_data,
    .on_eof = icl_on_eof,
    .on_drain = icl_on_drain,
    .on_closed = icl_on_closed,
};

static void rec_stop(struct iclient *cl, int discard);

static void icl_close(struct iclient *cl, const char *reason, int abort_output)
{
	if (cl->state == ICL_CLOSING)
		return;
	icl_unwatch(cl);
	KTRACE(console_client_close, cl->cid, cl->rec ? cl->rec->path : cl->conn.peer, reason,
	       cl->sent);
	icl_set_state(cl, ICL_CLOSING);
	srv_update_hold();
	if (cl->rec) {
		rec_stop(cl, abort_output);
	} else if (abort_output) {
		conn_abort(&cl->conn);
	} else {
		conn_close(&cl->conn);
	}
}

static struct iclient *icl_new(const char *name)
{
	struct iclient *cl = xcalloc(1, sizeof(*cl));
	cl->cid = ++srv.next_cid;
	cl->task = task_spawn("console_client", name, srv.task->id);
	cl->progress_ns = clock_wall_ns();
	cl->next = srv.clients;
	if (srv.clients)
		srv.clients->prev = cl;
	srv.clients = cl;
	srv.nclients++;
	return cl;
}

static void on_connection(uv_stream_t *server, int status)
{
	struct task *prev = task_enter(srv.task);
	if (status < 0 || !srv.running)
		goto out;
	struct iclient *cl = icl_new("");
	if (conn_accept(&cl->conn, server, &icl_handler, cl, cl->task) < 0) {
		icl_set_state(cl, ICL_CLOSING);
		conn_abort(&cl->conn);
		goto out;
	}
	free(cl->task->name);
	cl->task->name = xstrdup(cl->conn.peer);
	task_set_field(cl->task, "peer", cl->conn.peer);
	KTRACE(console_client_open, cl->cid, cl->conn.peer);
	conn_start_read(&cl->conn);
	icl_hello(cl);
	icl_snapshot_begin(cl);
out:
	task_exit(srv.task, prev);
}

/* --- the recording --------------------------------------------------------- */

static void rec_write_cb(uv_fs_t *req);

static void rec_kick(struct iclient *cl)
{
	struct irec *r = cl->rec;
	if (r->writing || !r->pending.len)
		return;
	struct buf tmp = r->inflight;
	r->inflight = r->pending;
	r->pending = tmp;
	buf_reset(&r->pending);
	uv_buf_t ub = uv_buf_init(r->inflight.data, (unsigned)r->inflight.len);
	r->req.data = cl;
	int rc = uv_fs_write(srv.loop, &r->req, r->fd, &ub, 1, -1, rec_write_cb);
	if (rc < 0) {
		log_warn("kumod::console", "recording %s: write: %s; frames lost", r->path,
			 uv_strerror(rc));
		buf_reset(&r->inflight);
		return;
	}
	r->writing = 1;
}

static void srv_release(void);

static void rec_close_cb(uv_fs_t *req)
{
	struct iclient *cl = req->data;
	struct task *prev = task_enter(srv.task);
	uv_fs_req_cleanup(req);
	icl_free(cl);
	task_exit(srv.task, prev);
	srv_release(); /* the recording held the server task open */
}

/* Closes the file once nothing is in flight; frees the viewer after. */
static void rec_close(struct iclient *cl)
{
	struct irec *r = cl->rec;
	r->req.data = cl;
	r->writing = 1;
	if (uv_fs_close(srv.loop, &r->req, r->fd, rec_close_cb) < 0)
		panic("%s: uv_fs_close failed", __func__);
}

/* Stops recording: what is queued is still written unless discard. Always
 * finishes asynchronously, so the caller may keep using cl until then. */
static void rec_stop(struct iclient *cl, int discard)
{
	struct irec *r = cl->rec;
	r->stopping = 1;
	if (discard)
		buf_reset(&r->pending);
	if (r->writing)
		return;
	if (r->pending.len)
		rec_kick(cl);
	else
		rec_close(cl);
}

static void rec_write_cb(uv_fs_t *req)
{
	struct iclient *cl = req->data;
	struct irec *r = cl->rec;
	struct task *prev = task_enter(srv.task);
	ssize_t res = req->result;
	uv_fs_req_cleanup(req);
	r->writing = 0;
	if (res < 0) {
		KTRACE(console_record_stop, r->path, uv_strerror((int)res));
		buf_reset(&r->inflight);
		buf_reset(&r->pending);
		if (!r->stopping)
			icl_close(cl, "recording: write failed", 1);
		else
			rec_close(cl);
		task_exit(srv.task, prev);
		return;
	}
	if ((size_t)res < r->inflight.len) /* short write: the rest goes first */
		buf_insert(&r->pending, 0, r->inflight.data + res, r->inflight.len - (size_t)res);
	buf_reset(&r->inflight);
	if (r->pending.len)
		rec_kick(cl);
	else if (r->stopping)
		rec_close(cl);
	else if (cl->state == ICL_SNAPSHOT)
		icl_snapshot_step(cl);
	task_exit(srv.task, prev);
}

static int rec_open(const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0) {
		snprintf(err, errlen, "TOKIO_CONSOLE_RECORD_PATH='%s': %s", path, strerror(errno));
		return -errno;
	}
	return fd;
}

static void rec_start(int fd)
{
	struct iclient *cl = icl_new("recording");
	srv.open_handles++; /* released by rec_close_cb */
	cl->rec = xcalloc(1, sizeof(*cl->rec));
	cl->rec->fd = fd;
	snprintf(cl->rec->path, sizeof(cl->rec->path), "%s", srv.cfg.record_path);
	task_set_field(cl->task, "path", srv.cfg.record_path);
	struct buf b;
	buf_init(&b);
	buf_appends(&b, "{\"v\":1");
	console_json_kv_str(&b, "type", "recording");
	console_json_kv_str(&b, "server", "kumod");
	console_json_kv_str(&b, "version", KUMOD_VERSION);
	console_json_kv_u64(&b, "pid", (uint64_t)getpid());
	console_json_kv_u64(&b, "started", clock_wall_ns());
	console_json_kv_u64(&b, "publish_interval_ms", srv.cfg.publish_ns / 1000000);
	buf_appends(&b, "}\n");
	icl_sendb(cl, &b);
	buf_free(&b);
	KTRACE(console_record_start, srv.cfg.record_path);
	icl_hello(cl);
	icl_snapshot_begin(cl);
}

/* --- queue sources --------------------------------------------------------- */

void introspect_register_queue_source(introspect_queue_fn fn, void *ctx)
{
	if (srv.nsources == ICL_MAX_SOURCES)
		panic("%s: more than %d queue sources", __func__, ICL_MAX_SOURCES);
	srv.sources[srv.nsources].fn = fn;
	srv.sources[srv.nsources].ctx = ctx;
	srv.nsources++;
}

void introspect_unregister_queue_source(introspect_queue_fn fn, void *ctx)
{
	for (size_t i = 0; i < srv.nsources; i++) {
		if (srv.sources[i].fn == fn && srv.sources[i].ctx == ctx) {
			memmove(&srv.sources[i], &srv.sources[i + 1],
				(srv.nsources - i - 1) * sizeof(srv.sources[0]));
			srv.nsources--;
			return;
		}
	}
}

static uint64_t fnv1a(const char *p, size_t n, uint64_t h)
{
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

struct buf *introspect_queue_begin(struct introspect_queues *qs, const char *kind, const char *name)
{
	if (qs->open)
		panic("%s: previous queue object not ended", __func__);
	if (qs->n == qs->cap) {
		qs->cap = qs->cap ? qs->cap * 2 : 64;
		qs->ents = xrealloc(qs->ents, qs->cap * sizeof(*qs->ents));
	}
	struct qent *e = &qs->ents[qs->n];
	e->name_off = qs->names.len;
	buf_append(&qs->names, kind, strlen(kind) + 1);
	buf_append(&qs->names, name, strlen(name) + 1);
	e->key =
	    fnv1a(qs->names.data + e->name_off, qs->names.len - e->name_off, 0xcbf29ce484222325ull);
	qs->open_off = qs->objs.len;
	qs->open = 1;
	buf_appendc(&qs->objs, '{');
	console_json_kv_str(&qs->objs, "kind", kind);
	put_str(&qs->objs, "name", name);
	return &qs->objs;
}

void introspect_queue_end(struct introspect_queues *qs)
{
	if (!qs->open)
		panic("%s: no queue object open", __func__);
	buf_appendc(&qs->objs, '}');
	qs->open = 0;
	struct qent *e = &qs->ents[qs->n];
	e->off = qs->open_off;
	e->len = qs->objs.len - qs->open_off;
	if (e->len > ICL_CHUNK_TARGET / 4) {
		/* an oversized object would break the frame bound: leave it out */
		qs->objs.len = qs->open_off;
		srv.dropped_events++;
		return;
	}
	e->hash = fnv1a(qs->objs.data + e->off, e->len, 0xcbf29ce484222325ull);
	qs->n++;
}

/* --- start and stop -------------------------------------------------------- */

/* The server task and its buffers go when the last of its handles and the
 * recording are closed. */
static void srv_release(void)
{
	if (--srv.open_handles > 0)
		return;
	struct task *t = srv.task;
	srv.task = NULL;
	task_close(t);
	for (int i = 0; i < 2; i++) {
		buf_free(&srv.qs[i].objs);
		buf_free(&srv.qs[i].names);
		xfree(srv.qs[i].ents);
		srv.qs[i].n = srv.qs[i].cap = 0;
	}
	buf_free(&srv.loop_json);
	task_registry_set_poll_hist(NULL);
}

static void srv_handle_closed(uv_handle_t *h)
{
	srv_release();
}

static int srv_listen(const struct sockaddr_storage *ss, char *err, size_t errlen)
{
	int rc =
	    conn_listen(srv.loop, &srv.tcp, ss, 128, on_connection, srv.addr, sizeof(srv.addr));
	srv.open_handles++;
	if (rc < 0)
		snprintf(err, errlen, "TOKIO_CONSOLE_BIND='%s': cannot listen: %s", srv.cfg.bind,
			 uv_strerror(rc));
	return rc;
}

int introspect_start(uv_loop_t *loop, const struct introspect_config *cfg, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (srv.running) {
		snprintf(err, errlen, "introspection server already running");
		return -EALREADY;
	}
	if (parse_bind(cfg->bind, &ss) < 0) {
		snprintf(err, errlen,
			 "TOKIO_CONSOLE_BIND='%s': want HOST:PORT (127.0.0.1:6669, [::1]:6669)",
			 cfg->bind);
		return -EINVAL;
	}
	int fd = -1;
	if (cfg->record_path[0] && (fd = rec_open(cfg->record_path, err, errlen)) < 0)
		return fd;
	srv.loop = loop;
	srv.cfg = *cfg;
	srv.task = task_spawn("console_server", "", 0);
	int rc = srv_listen(&ss, err, errlen);
	if (rc < 0) {
		if (fd >= 0)
			close(fd);
		uv_close((uv_handle_t *)&srv.tcp, srv_handle_closed);
		return rc;
	}
	free(srv.task->name);
	srv.task->name = xstrdup(srv.addr);
	task_set_field(srv.task, "addr", srv.addr);
	task_set_phase(srv.task, "Serving", "accept");
	srv.running = 1;
	/* the session view's transcript lines: one smtp_trace subscriber */
	if (smtp_transcript_enable(SMTP_TRANSCRIPT_CONSOLE) != 0)
		log_warn("kumod::console", "SMTP session transcripts are off: the smtp_trace "
					   "subscriber list is full");
	srv.stall_ns =
	    5 * cfg->publish_ns > ICL_STALL_MIN_NS ? 5 * cfg->publish_ns : ICL_STALL_MIN_NS;
	task_registry_set_retention(cfg->retention_ns);
	task_registry_set_retained_max(ICL_RETAINED_MAX);
	hist_init(&srv.poll_hist);
	task_registry_set_poll_hist(&srv.poll_hist);
	uv_loop_configure(loop, UV_METRICS_IDLE_TIME);
	srv.last_tick_ns = clock_wall_ns();
	srv.last_idle_ns = uv_metrics_idle_time(loop);
	uv_timer_init(loop, &srv.tick);
	uv_check_init(loop, &srv.check);
	srv.open_handles += 2;
	uint64_t ms = cfg->publish_ns / 1000000;
	uv_timer_start(&srv.tick, tick_cb, ms, ms);
	uv_check_start(&srv.check, check_cb);
	uv_unref((uv_handle_t *)&srv.check);
	collect_queues();
	build_loop(srv.last_tick_ns);
	KTRACE(console_start, srv.addr, ms, cfg->retention_ns / 1000000000,
	       cfg->record_path[0] ? cfg->record_path : "none");
	if (!addr_is_loopback(&ss))
		log_warn("kumod::console",
			 "console listener on %s is reachable from outside this host: anyone "
			 "who can connect sees every task and queue",
			 srv.addr);
	if (fd >= 0)
		rec_start(fd);
	return 0;
}

void introspect_stop(void)
{
	if (!srv.running)
		return;
	srv.running = 0;
	KTRACE(console_stop, (uint64_t)srv.nclients);
	struct iclient *cl, *next;
	for (cl = srv.clients; cl; cl = next) {
		next = cl->next;
		if (cl->rec) {
			KTRACE(console_record_stop, cl->rec->path, "shutdown");
			icl_close(cl, "server stopping", 0);
		} else {
			icl_close(cl, "server stopping", 1);
		}
	}
	task_registry_hold(UINT64_MAX);
	uv_close((uv_handle_t *)&srv.tcp, srv_handle_closed);
	uv_close((uv_handle_t *)&srv.tick, srv_handle_closed);
	uv_close((uv_handle_t *)&srv.check, srv_handle_closed);
}

int introspect_running(void)
{
	return srv.running;
}

const char *introspect_address(void)
{
	return srv.running ? srv.addr : "";
}
