/* SPDX-License-Identifier: Apache-2.0 */
/* The resolver: c-ares on the libuv loop; MX and host lookups as cached, coalesced entries
 * whose results are delivered on the next loop turn. */
#include "dns/resolver.h"

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "io/loop.h"
#include "ktrace.h"
#include "proto/dns_name.h"
#include "proto/dns_wire.h"

#define DNS_CLASS_IN 1
#define DNS_ID_BUCKETS 256
#define DNS_CACHE_MIN_BUCKETS 1024
#define DNS_HOSTS_FILE_TTL 60	/* seconds an /etc/hosts answer is kept */
#define DNS_FAMILY_MAX_ADDRS 16 /* addresses kept per family and host */
#define NS_PER_S 1000000000ull

enum entry_kind {
	KIND_MX,
	KIND_HOST,
	KIND_RR_MX, /* dns_lookup_records(): the records of one type, as they are */
	KIND_RR_TXT,
	KIND_RR_PTR,
	KIND_RR_A,
};

static const char *const kind_names[] = {"mx", "host", "mx_records", "txt", "ptr", "a"};
static const int rr_qtype[] = {0, 0, DNS_WIRE_T_MX, DNS_WIRE_T_TXT, DNS_WIRE_T_PTR, DNS_WIRE_T_A};

static int kind_is_rr(enum entry_kind k)
{
	return k >= KIND_RR_MX;
}

/* An address without the sockaddr padding: what the cache keeps. */
struct dns_addr {
	uint8_t family;
	uint8_t ip[16];
};

struct dns_hostrec {
	char *name; /* record entries: the record's text (namelen bytes, NUL-terminated) */
	size_t namelen;
	unsigned preference;
	enum dns_status status; /* of the host's address lookup */
	char *error;		/* why it has no address, or NULL */
	size_t naddrs;
	struct dns_addr *addrs; /* AAAA first, then A */
};

/* The outcome of one DNS query, as the entry logic sees it. */
enum qkind {
	Q_OK,
	Q_NODATA,
	Q_NXDOMAIN,
	Q_TEMPFAIL,
};

/* Progress of a host entry: both families' outcomes until both are in. */
struct host_progress {
	enum qkind kind[2]; /* [0] AAAA, [1] A */
	uint32_t ttl[2];
	char why[2][96];
	size_t n[2];
	struct dns_addr addrs[2][DNS_FAMILY_MAX_ADDRS];
};

/* One lookup (an MX set or one host's addresses): pending, then done and (usually)
 * cached. Referenced by the cache, by the lookup in progress and by each waiter. */
struct dns_entry {
	uint64_t id;
	enum entry_kind kind;
	char *name;
	unsigned refs;
	int in_cache, done;
	uint64_t expires_ns; /* when done and in the cache */
	struct dns_entry *next_name, *next_id;
	struct task *task; /* while pending, for network lookups */
	struct dns_waiter *waiters, **waiters_tail;
	unsigned pending; /* queries (host) or host lookups (MX) outstanding */
	struct host_progress *hp;
	/* the result */
	enum dns_status status;
	char error[160];
	int implicit;
	uint32_t ttl;
	char site_name[256];
	size_t nhosts;
	struct dns_hostrec *hosts;
	unsigned rsv; /* 0: the default resolver, else a named one (dns_define_resolver) */
	int mx_slot, mx_queued; /* MX: holds a set_mx_concurrency_limit slot / waits for one */
};

/* Someone waiting for an entry: a caller (cb set) or an MX entry waiting for one of its
 * hosts (cb NULL; found again by id). */
struct dns_waiter {
	dns_mx_cb cb;
	dns_records_cb rcb; /* record lookups: this instead of cb */
	void *ctx;
	uint64_t caller; /* task that asked (by id): the callback runs as it */
	uint64_t owner;
	size_t index;
	struct dns_entry *entry; /* holds a reference */
	struct dns_waiter *next;
};

/* One ares_query in flight; c-ares gets its id, not a pointer. */
struct dns_query {
	uint64_t id, owner;
	int type;
	int fam; /* host queries: 0 AAAA, 1 A */
	unsigned rsv;
	char *name;
	uint64_t start_ns;
	struct dns_query *next;
};

struct dns_chan {
	ares_channel ch;
};

/* A c-ares socket watched by the loop; freed in its close callback. */
struct dns_sock {
	uv_poll_t poll;
	int fd;
	struct dns_chan *chan;
	struct dns_sock *next;
};

/* A lookup started after dns_shutdown(): fails on a zero timer. */
struct dns_late {
	uv_timer_t timer;
	dns_mx_cb cb;
	dns_records_cb rcb;
	void *ctx;
};

/* A resolver defined by name (kumo.dns.define_resolver): its own c-ares channel. */
struct dns_named {
	char *name;
	char *servers; /* NULL: resolv.conf */
	struct dns_chan *chan;
};

/* The resolver of this loop. */
static struct {
	uv_loop_t *loop;
	int initialised, shutting_down, moving, opt_set;
	struct dns_options opt;
	char *servers;
	struct dns_chan *chan;
	struct dns_sock *socks;
	uv_timer_t timer;
	uv_idle_t idle;
	struct task *task;
	uint64_t next_id;
	uint64_t rng;
	struct dns_query *queries[DNS_ID_BUCKETS];
	struct dns_entry *pending[DNS_ID_BUCKETS];
	struct dns_entry **cache;
	size_t cache_buckets, sweep_at;
	struct dns_waiter *ready, **ready_tail;
	struct dns_stats st;
	struct dns_named named[DNS_MAX_NAMED];
	size_t nnamed;
	unsigned mx_limit; /* MX resolutions at once [DNS_MX_CONCURRENCY_DEFAULT] */
	uint64_t *mxq;	   /* ids of MX entries waiting for a slot, FIFO from mxq_head */
	size_t mxq_head, mxq_len, mxq_cap;
} D = {.mx_limit = DNS_MX_CONCURRENCY_DEFAULT};

static void timer_update(void);
static void idle_cb(uv_idle_t *h);
static void mx_on_host(uint64_t owner, size_t index, const struct dns_entry *he);
static void mx_next(void);

const char *dns_status_name(enum dns_status s)
{
	switch (s) {
	case DNS_OK:
		return "OK";
	case DNS_NULL_MX:
		return "NULL_MX";
	case DNS_NO_HOST:
		return "NO_HOST";
	case DNS_TEMPFAIL:
		return "TEMPFAIL";
	}
	return "?";
}

void dns_options_default(struct dns_options *o)
{
	o->timeout_ms = 2000;
	o->tries = 3;
	o->max_ttl = 3600;
	o->negative_ttl = 300;
	o->tempfail_ttl = 0;
	o->use_hosts_file = 1;
	o->mx_timeout_ms = 0;
}

void dns_get_stats(struct dns_stats *st)
{
	*st = D.st;
}

static uint32_t min_u32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

/* --- ids: queries and pending entries ------------------------------------------ */

static size_t id_bucket(uint64_t id)
{
	return (size_t)(id * 0x9E3779B97F4A7C15ull >> 56) & (DNS_ID_BUCKETS - 1);
}

static void query_put(struct dns_query *q)
{
	size_t b = id_bucket(q->id);
	q->next = D.queries[b];
	D.queries[b] = q;
}

static struct dns_query *query_take(uint64_t id)
{
	for (struct dns_query **pp = &D.queries[id_bucket(id)]; *pp; pp = &(*pp)->next) {
		if ((*pp)->id == id) {
			struct dns_query *q = *pp;
			*pp = q->next;
			return q;
		}
	}
	return NULL;
}

static void pending_put(struct dns_entry *e)
{
	size_t b = id_bucket(e->id);
	e->next_id = D.pending[b];
	D.pending[b] = e;
}

static struct dns_entry *pending_find(uint64_t id)
{
	for (struct dns_entry *e = D.pending[id_bucket(id)]; e; e = e->next_id)
		if (e->id == id)
			return e;
	return NULL;
}

static void pending_remove(struct dns_entry *e)
{
	for (struct dns_entry **pp = &D.pending[id_bucket(e->id)]; *pp; pp = &(*pp)->next_id) {
		if (*pp == e) {
			*pp = e->next_id;
			return;
		}
	}
}

/* --- entries and the cache -------------------------------------------------------- */

static size_t name_hash(enum entry_kind kind, unsigned rsv, const char *name)
{
	uint64_t h = 1469598103934665603ull ^ (uint64_t)kind ^ ((uint64_t)rsv << 8);
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 1099511628211ull;
	return (size_t)h;
}

static void entry_free(struct dns_entry *e)
{
	if (e->refs || e->in_cache || e->task || e->waiters)
		panic("%s: entry %s still in use", __func__, e->name);
	for (size_t i = 0; i < e->nhosts; i++) {
		free(e->hosts[i].name);
		free(e->hosts[i].error);
		free(e->hosts[i].addrs);
	}
	free(e->hosts);
	free(e->hp);
	free(e->name);
	free(e);
}

static void entry_unref(struct dns_entry *e)
{
	if (!e->refs)
		panic("%s: entry %s has no reference", __func__, e->name);
	if (--e->refs == 0)
		entry_free(e);
}

static struct dns_entry *cache_find(enum entry_kind kind, unsigned rsv, const char *name)
{
	if (!D.cache_buckets)
		return NULL;
	size_t b = name_hash(kind, rsv, name) & (D.cache_buckets - 1);
	for (struct dns_entry *e = D.cache[b]; e; e = e->next_name)
		if (e->kind == kind && e->rsv == rsv && !strcmp(e->name, name))
			return e;
	return NULL;
}

static void cache_unlink(struct dns_entry *e)
{
	size_t b = name_hash(e->kind, e->rsv, e->name) & (D.cache_buckets - 1);
	for (struct dns_entry **pp = &D.cache[b]; *pp; pp = &(*pp)->next_name) {
		if (*pp == e) {
			*pp = e->next_name;
			break;
		}
	}
	e->in_cache = 0;
	D.st.cached--;
	entry_unref(e);
}

static void cache_grow(void)
{
	size_t nb = D.cache_buckets ? D.cache_buckets * 2 : DNS_CACHE_MIN_BUCKETS;
	struct dns_entry **nc = xcalloc(nb, sizeof(*nc));
	for (size_t i = 0; i < D.cache_buckets; i++) {
		while (D.cache[i]) {
			struct dns_entry *e = D.cache[i];
			D.cache[i] = e->next_name;
			size_t b = name_hash(e->kind, e->rsv, e->name) & (nb - 1);
			e->next_name = nc[b];
			nc[b] = e;
		}
	}
	free(D.cache);
	D.cache = nc;
	D.cache_buckets = nb;
}

/* Drops done entries that expired (all done ones when all is set). */
static void cache_sweep(int all)
{
	uint64_t now = clock_mono_ns();
	for (size_t i = 0; i < D.cache_buckets; i++) {
		struct dns_entry *e = D.cache[i];
		while (e) {
			struct dns_entry *next = e->next_name;
			if (e->done && (all || now >= e->expires_ns))
				cache_unlink(e);
			e = next;
		}
	}
}

static void cache_insert(struct dns_entry *e)
{
	if (D.st.cached >= D.sweep_at) {
		cache_sweep(0);
		D.sweep_at = D.st.cached * 2 > 1024 ? D.st.cached * 2 : 1024;
	}
	if (D.st.cached >= D.cache_buckets * 2)
		cache_grow();
	size_t b = name_hash(e->kind, e->rsv, e->name) & (D.cache_buckets - 1);
	e->next_name = D.cache[b];
	D.cache[b] = e;
	e->in_cache = 1;
	e->refs++;
	D.st.cached++;
}

/* A new pending entry; cached ones are found by later identical lookups. */
static struct dns_entry *entry_new(enum entry_kind kind, unsigned rsv, const char *name, int cache)
{
	struct dns_entry *e = xcalloc(1, sizeof(*e));
	e->id = ++D.next_id;
	e->kind = kind;
	e->rsv = rsv;
	e->name = xstrdup(name);
	e->refs = 1; /* the lookup in progress */
	e->waiters_tail = &e->waiters;
	pending_put(e);
	if (cache)
		cache_insert(e);
	return e;
}

static void entry_task(struct dns_entry *e, const char *phase)
{
	if (!e->task) {
		char tname[300];
		snprintf(tname, sizeof(tname), "%s %s", kind_names[e->kind], e->name);
		e->task = task_spawn("dns", tname, D.task ? D.task->id : 0);
		task_set_field(e->task, "kind", kind_names[e->kind]);
	}
	task_set_phase(e->task, phase, "dns");
}

static void set_error(struct dns_entry *e, enum dns_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_error(struct dns_entry *e, enum dns_status st, const char *fmt, ...)
{
	va_list ap;
	e->status = st;
	va_start(ap, fmt);
	vsnprintf(e->error, sizeof(e->error), fmt, ap);
	va_end(ap);
}

static uint32_t ttl_left(const struct dns_entry *e, uint64_t now)
{
	if (!e->in_cache || now >= e->expires_ns)
		return 0;
	return (uint32_t)((e->expires_ns - now + NS_PER_S - 1) / NS_PER_S);
}

/* --- delivery ------------------------------------------------------------------------- */

static void ready_push(struct dns_waiter *w)
{
	w->next = NULL;
	if (!D.ready)
		D.ready_tail = &D.ready;
	*D.ready_tail = w;
	D.ready_tail = &w->next;
	if (D.initialised && !D.shutting_down)
		uv_idle_start(&D.idle, idle_cb);
}

static void waiter_attach(struct dns_entry *e, struct dns_waiter *w)
{
	w->entry = e;
	e->refs++;
	if (e->done) {
		ready_push(w);
		return;
	}
	w->next = NULL;
	*e->waiters_tail = w;
	e->waiters_tail = &w->next;
}

static void addr_to_ss(const struct dns_addr *a, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (a->family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		s6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, a->ip, 16);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
		s4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, a->ip, 4);
	}
}

/* Up to DNS_MAX_ADDRS: AAAA then A; with more of both, at least half of each family. */
static void host_materialize(const struct dns_hostrec *h, struct dns_host *out)
{
	size_t n6 = 0, n4;
	while (n6 < h->naddrs && h->addrs[n6].family == AF_INET6)
		n6++;
	n4 = h->naddrs - n6;
	size_t take6 = n6, take4 = n4;
	if (n6 + n4 > DNS_MAX_ADDRS) {
		take6 = n6 < DNS_MAX_ADDRS / 2 ? n6 : DNS_MAX_ADDRS / 2;
		if (n4 < DNS_MAX_ADDRS - take6)
			take6 = DNS_MAX_ADDRS - n4 < n6 ? DNS_MAX_ADDRS - n4 : n6;
		take4 = DNS_MAX_ADDRS - take6 < n4 ? DNS_MAX_ADDRS - take6 : n4;
	}
	out->name = h->name;
	out->preference = h->preference;
	out->naddrs = 0;
	for (size_t i = 0; i < take6; i++)
		addr_to_ss(&h->addrs[i], &out->addrs[out->naddrs++]);
	for (size_t i = 0; i < take4; i++)
		addr_to_ss(&h->addrs[n6 + i], &out->addrs[out->naddrs++]);
}

/* Hosts of equal preference in a random order for each delivery (RFC 5321 §5.1). */
static void shuffle_ties(struct dns_host *h, size_t n)
{
	struct dns_host tmp;
	for (size_t a = 0; a < n;) {
		size_t b = a + 1;
		while (b < n && h[b].preference == h[a].preference)
			b++;
		dns_shuffle(h + a, b - a, sizeof(*h), &tmp, &D.rng);
		a = b;
	}
}

static void deliver_records(const struct dns_waiter *w)
{
	const struct dns_entry *e = w->entry;
	struct dns_records_result r;
	memset(&r, 0, sizeof(r));
	r.status = e->status;
	snprintf(r.error, sizeof(r.error), "%s", e->error);
	r.ttl = e->in_cache ? ttl_left(e, clock_mono_ns()) : e->ttl;
	r.n = e->status == DNS_OK ? e->nhosts : 0;
	struct dns_record *recs = xcalloc(r.n ? r.n : 1, sizeof(*recs));
	for (size_t i = 0; i < r.n; i++)
		recs[i] = (struct dns_record){.preference = e->hosts[i].preference,
					      .text = e->hosts[i].name,
					      .len = e->hosts[i].namelen};
	r.records = recs;
	w->rcb(w->ctx, &r);
	free(recs);
}

static void deliver_mx(const struct dns_waiter *w)
{
	const struct dns_entry *e = w->entry;
	struct dns_mx_result r;

	memset(&r, 0, sizeof(r));
	r.status = e->status;
	snprintf(r.error, sizeof(r.error), "%s", e->error);
	r.implicit = e->implicit;
	r.ttl = e->in_cache ? ttl_left(e, clock_mono_ns()) : e->ttl;
	snprintf(r.site_name, sizeof(r.site_name), "%s", e->site_name);
	r.nhosts = e->status == DNS_OK ? e->nhosts : 0; /* a failed host lookup keeps its
							    record for MX bookkeeping only */
	r.hosts = xcalloc(r.nhosts ? r.nhosts : 1, sizeof(*r.hosts));
	for (size_t i = 0; i < r.nhosts; i++)
		host_materialize(&e->hosts[i], &r.hosts[i]);
	if (e->kind == KIND_MX && !e->implicit)
		shuffle_ties(r.hosts, r.nhosts);
	w->cb(w->ctx, &r);
	free(r.hosts);
}

static void deliver(struct dns_waiter *w)
{
	/* the caller's work (routing, connecting) is its task's, not the
	 * resolver's: its events carry the caller's span */
	struct task *caller = w->caller ? task_lookup(w->caller) : NULL;
	if (caller && caller->state == TASK_DONE)
		caller = NULL;
	struct task *prev = caller ? task_enter(caller) : NULL;
	if (w->rcb)
		deliver_records(w);
	else
		deliver_mx(w);
	if (caller)
		task_exit(caller, prev);
}

/* Delivers the waiters queued so far; those queued meanwhile wait for the next turn. */
static void deliver_ready(void)
{
	struct dns_waiter *w = D.ready;
	D.ready = NULL;
	D.ready_tail = &D.ready;
	while (w) {
		struct dns_waiter *next = w->next;
		struct dns_entry *e = w->entry;
		if (w->cb || w->rcb)
			deliver(w);
		else
			mx_on_host(w->owner, w->index, e);
		entry_unref(e);
		free(w);
		w = next;
	}
}

static void idle_cb(uv_idle_t *h)
{
	struct task *t = D.task; /* a callback may shut the resolver down */
	struct task *prev = task_enter(t);
	deliver_ready();
	if (!D.ready)
		uv_idle_stop(&D.idle);
	timer_update();
	task_exit(t, prev);
}

/* The lookup is complete: cache lifetime, trace, waiters to the ready list. */
static void entry_finish(struct dns_entry *e)
{
	uint32_t life = 0;
	switch (e->status) {
	case DNS_OK:
	case DNS_NULL_MX:
		life = min_u32(e->ttl, D.opt.max_ttl);
		break;
	case DNS_NO_HOST:
		life = min_u32(e->ttl, D.opt.negative_ttl);
		break;
	case DNS_TEMPFAIL:
		life = D.opt.tempfail_ttl;
		break;
	}
	if (D.shutting_down)
		life = 0;
	e->done = 1;
	pending_remove(e);
	int freed_slot = e->mx_slot;
	if (e->mx_slot) {
		e->mx_slot = 0;
		D.st.mx_active--;
	}
	if (e->mx_queued) {
		e->mx_queued = 0;
		D.st.mx_waiting--;
	}
	if (e->in_cache && !life)
		cache_unlink(e);
	else if (e->in_cache)
		e->expires_ns = clock_mono_ns() + (uint64_t)life * NS_PER_S;
	KTRACE(dns_resolved, e->name, kind_names[e->kind], dns_status_name(e->status),
	       (uint32_t)e->nhosts, life, e->status == DNS_OK ? e->site_name : e->error);
	if (e->task) {
		task_set_phase(e->task, "Done", NULL);
		task_close(e->task);
		e->task = NULL;
	}
	free(e->hp);
	e->hp = NULL;
	while (e->waiters) {
		struct dns_waiter *w = e->waiters;
		e->waiters = w->next;
		ready_push(w);
	}
	e->waiters_tail = &e->waiters;
	entry_unref(e);
	if (freed_slot)
		mx_next();
}

/* --- c-ares plumbing ------------------------------------------------------------------ */

static void resolver_phase(void)
{
	if (D.task)
		task_set_phase(D.task, D.st.inflight ? "Querying" : "Idle",
			       D.st.inflight ? "dns server" : NULL);
}

static void sock_closed(uv_handle_t *h)
{
	free(h->data);
}

static void sock_poll_cb(uv_poll_t *h, int status, int events)
{
	struct dns_sock *s = h->data;
	struct task *prev = task_enter(D.task);
	int rd = status < 0 || (events & (UV_READABLE | UV_DISCONNECT));
	int wr = status < 0 || (events & UV_WRITABLE);
	ares_process_fd(s->chan->ch, rd ? s->fd : ARES_SOCKET_BAD, wr ? s->fd : ARES_SOCKET_BAD);
	timer_update();
	task_exit(D.task, prev);
}

/* c-ares opens, re-arms and closes its sockets through this. */
static void sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns_chan *chan = data;
	struct dns_sock **pp = &D.socks, *s;
	while ((s = *pp) && !(s->fd == fd && s->chan == chan))
		pp = &s->next;
	if (!readable && !writable) {
		if (s) {
			*pp = s->next;
			uv_close((uv_handle_t *)&s->poll, sock_closed);
		}
		return;
	}
	if (!s) {
		s = xcalloc(1, sizeof(*s));
		s->fd = fd;
		s->chan = chan;
		int rc = uv_poll_init(D.loop, &s->poll, fd);
		if (rc < 0) {
			/* c-ares times the query out; nothing else to do */
			log_error("kumod::dns", "cannot watch c-ares socket %d: %s", fd,
				  uv_strerror(rc));
			free(s);
			return;
		}
		s->poll.data = s;
		s->next = D.socks;
		D.socks = s;
	}
	uv_poll_start(&s->poll, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0),
		      sock_poll_cb);
}

static void timer_cb(uv_timer_t *t)
{
	struct task *prev = task_enter(D.task);
	if (D.chan)
		ares_process_fd(D.chan->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	for (size_t i = 0; i < D.nnamed; i++)
		ares_process_fd(D.named[i].chan->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	timer_update();
	task_exit(D.task, prev);
}

/* The timer follows c-ares' next timeout (rounded up so it never fires early). */
static void timer_update(void)
{
	if (!D.initialised || !D.chan)
		return;
	struct timeval tv, *tvp = ares_timeout(D.chan->ch, NULL, &tv);
	for (size_t i = 0; i < D.nnamed; i++) {
		struct timeval ntv, *n = ares_timeout(D.named[i].chan->ch, tvp, &ntv);
		if (n) {
			tv = *n;
			tvp = &tv;
		}
	}
	if (!tvp) {
		uv_timer_stop(&D.timer);
		return;
	}
	uint64_t ms = (uint64_t)tvp->tv_sec * 1000 + ((uint64_t)tvp->tv_usec + 999) / 1000;
	uv_timer_start(&D.timer, timer_cb, ms, 0);
}

static int port_ok(const char *p)
{
	char *end;
	if (*p < '0' || *p > '9' || strlen(p) > 5)
		return 0;
	unsigned long v = strtoul(p, &end, 10);
	return !*end && v >= 1 && v <= 65535;
}

/* Checks one "ip", "ip:port", "v6", "[v6]" or "[v6]:port" entry (c-ares takes bad ports
 * and refuses "[v6]") and appends it to out in a form c-ares accepts. */
static int server_add(const char *s, size_t len, struct buf *out)
{
	char e[80], *host = e, *port = NULL;
	unsigned char ip[16];
	if (!len || len >= sizeof(e))
		return 0;
	memcpy(e, s, len);
	e[len] = 0;
	if (e[0] == '[') {
		char *close = strchr(e, ']');
		if (!close || (close[1] && close[1] != ':'))
			return 0;
		*close = 0;
		host = e + 1;
		port = close[1] ? close + 2 : NULL;
		if (inet_pton(AF_INET6, host, ip) != 1)
			return 0;
	} else if (inet_pton(AF_INET6, e, ip) != 1) {
		port = strchr(e, ':');
		if (port)
			*port++ = 0;
		if (inet_pton(AF_INET, host, ip) != 1)
			return 0;
	}
	if (port && !port_ok(port))
		return 0;
	int v6 = strchr(host, ':') != NULL;
	buf_printf(out, "%s%s%s%s:%s", out->len ? "," : "", v6 ? "[" : "", host, v6 ? "]" : "",
		   port ? port : "53");
	return 1;
}

/* The server list as c-ares wants it, or NULL with err. */
static char *servers_csv(const char *servers, char *err, size_t errlen)
{
	struct buf out;
	buf_init(&out);
	const char *p = servers;
	do {
		size_t n = strcspn(p, ",");
		if (!server_add(p, n, &out)) {
			snprintf(err, errlen,
				 "bad name server '%.*s' in '%s' (ip, ip:port or [ipv6]:port)",
				 (int)(n < 64 ? n : 64), p, servers);
			buf_free(&out);
			return NULL;
		}
		p += n;
	} while (*p++);
	char *csv = xstrndup(out.data, out.len);
	buf_free(&out);
	return csv;
}

static struct dns_chan *chan_new(const char *servers, char *err, size_t errlen)
{
	char *csv = NULL;
	if (servers && !(csv = servers_csv(servers, err, errlen)))
		return NULL;

	struct dns_chan *c = xcalloc(1, sizeof(*c));
	struct ares_options o;
	memset(&o, 0, sizeof(o));
	o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
	o.timeout = (int)D.opt.timeout_ms;
	o.tries = (int)D.opt.tries;
	o.sock_state_cb = sock_state_cb;
	o.sock_state_cb_data = c;
	int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB;
	int rc = ares_init_options(&c->ch, &o, mask);
	if (rc != ARES_SUCCESS) {
		snprintf(err, errlen, "c-ares init: %s", ares_strerror(rc));
		goto fail;
	}
	if (csv && (rc = ares_set_servers_ports_csv(c->ch, csv)) != ARES_SUCCESS) {
		snprintf(err, errlen, "bad name server list '%s': %s", servers, ares_strerror(rc));
		ares_destroy(c->ch);
		goto fail;
	}
	free(csv);
	return c;
fail:
	free(csv);
	free(c);
	return NULL;
}

/* Swaps in a new channel at *slot (D.chan or a named resolver's); queries in flight on the
 * old one are re-sent (q_done sees ARES_EDESTRUCTION with D.moving set). */
static int chan_replace(struct dns_chan **slot, const char *servers, char *err, size_t errlen)
{
	struct dns_chan *nc = chan_new(servers, err, errlen);
	if (!nc)
		return -1;
	struct dns_chan *old = *slot;
	*slot = nc;
	if (old) {
		D.moving = 1;
		ares_destroy(old->ch);
		D.moving = 0;
		free(old);
	}
	timer_update();
	return 0;
}

/* --- queries -------------------------------------------------------------------------- */

struct qres {
	const unsigned char *msg; /* the answer as received (TXT data is read from it) */
	enum qkind kind;
	uint32_t ttl; /* records' TTL, or the negative TTL */
	const char *status;
	char why[96];
	struct dns_wire_answer *wa; /* parsed answer when Q_OK */
};

static void q_done(void *arg, int status, int timeouts, unsigned char *abuf, int alen);

/* The channel of resolver rsv (0: the default). */
static struct dns_chan *chan_of(unsigned rsv)
{
	return rsv ? D.named[rsv - 1].chan : D.chan;
}

static void q_send(struct dns_query *q)
{
	char tb[12];
	KTRACE(dns_query, q->name, dns_wire_type_name((unsigned)q->type, tb));
	D.st.queries++;
	ares_query(chan_of(q->rsv)->ch, q->name, DNS_CLASS_IN, q->type, q_done,
		   (void *)(uintptr_t)q->id);
}

static void q_start(struct dns_entry *e, int type, int fam)
{
	struct dns_query *q = xcalloc(1, sizeof(*q));
	q->id = ++D.next_id;
	q->owner = e->id;
	q->type = type;
	q->fam = fam;
	q->rsv = e->rsv;
	q->name = xstrdup(e->name);
	q->start_ns = clock_mono_ns();
	query_put(q);
	D.st.inflight++;
	resolver_phase();
	q_send(q);
}

static uint32_t negative_ttl(const struct dns_wire_answer *wa)
{
	if (wa && wa->has_soa)
		return min_u32(wa->neg_ttl, D.opt.negative_ttl);
	return D.opt.negative_ttl;
}

static void classify_answer(const unsigned char *abuf, int alen, struct qres *r)
{
	if (dns_wire_parse(abuf, (size_t)alen, r->wa) < 0) {
		r->kind = Q_TEMPFAIL;
		r->status = "BADRESP";
		snprintf(r->why, sizeof(r->why), "malformed answer: %s at byte %zu", r->wa->error,
			 r->wa->error_pos);
	} else if (r->wa->rcode == DNS_WIRE_NXDOMAIN) {
		r->kind = Q_NXDOMAIN;
		r->status = "NXDOMAIN";
		r->ttl = negative_ttl(r->wa);
	} else if (r->wa->rcode != DNS_WIRE_NOERROR) {
		r->kind = Q_TEMPFAIL;
		r->status = "RCODE";
		snprintf(r->why, sizeof(r->why), "rcode %u", r->wa->rcode);
	} else if (!r->wa->nrr) {
		r->kind = Q_NODATA;
		r->status = "NODATA";
		r->ttl = negative_ttl(r->wa);
	} else {
		r->kind = Q_OK;
		r->status = "NOERROR";
		r->ttl = r->wa->ttl;
	}
}

static void classify(int status, const unsigned char *abuf, int alen, struct qres *r)
{
	r->kind = Q_TEMPFAIL;
	r->ttl = 0;
	r->why[0] = 0;
	switch (status) {
	case ARES_SUCCESS:
	case ARES_ENODATA:
	case ARES_ENOTFOUND:
		if (abuf && alen > 0) {
			classify_answer(abuf, alen, r);
			return;
		}
		r->kind = status == ARES_ENOTFOUND ? Q_NXDOMAIN : Q_NODATA;
		r->status = status == ARES_ENOTFOUND ? "NXDOMAIN" : "NODATA";
		r->ttl = negative_ttl(NULL);
		return;
	case ARES_ESERVFAIL:
		r->status = "SERVFAIL";
		break;
	case ARES_EREFUSED:
		r->status = "REFUSED";
		break;
	case ARES_ETIMEOUT:
		r->status = "TIMEOUT";
		break;
	case ARES_ECONNREFUSED:
		r->status = "CONNREFUSED";
		break;
	case ARES_EDESTRUCTION:
		r->status = "SHUTDOWN";
		break;
	default:
		r->status = "ERROR";
		break;
	}
	snprintf(r->why, sizeof(r->why), "%s", ares_strerror(status));
}

static void mx_answer(struct dns_entry *e, const struct qres *r);
static void host_answer(struct dns_entry *e, int fam, const struct qres *r);
static void rr_answer(struct dns_entry *e, const struct qres *r);

static void q_done(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_query *q = query_take((uint64_t)(uintptr_t)arg);
	if (!q)
		return;
	if (status == ARES_EDESTRUCTION && D.moving) {
		query_put(q);
		q_send(q);
		return;
	}
	D.st.inflight--;
	D.st.answers++;
	struct qres r;
	r.wa = xmalloc(sizeof(*r.wa));
	r.wa->nrr = 0;
	r.msg = abuf;
	classify(status, abuf, alen, &r);
	char tb[12];
	struct dns_entry *e = pending_find(q->owner);
	struct task *t = e ? e->task : NULL;
	struct task *prev = t ? task_enter(t) : NULL;
	KTRACE(dns_answer, q->name, dns_wire_type_name((unsigned)q->type, tb), r.status,
	       r.kind == Q_OK ? (uint32_t)r.wa->nrr : 0, r.ttl,
	       (clock_mono_ns() - q->start_ns) / 1000);
	if (e && e->kind == KIND_MX)
		mx_answer(e, &r);
	else if (e && kind_is_rr(e->kind))
		rr_answer(e, &r);
	else if (e)
		host_answer(e, q->fam, &r);
	if (t)
		task_exit(t, prev);
	free(r.wa);
	free(q->name);
	free(q);
	resolver_phase();
}

/* --- host lookups --------------------------------------------------------------------- */

static void host_set_addrs(struct dns_hostrec *h, const struct dns_addr *a, size_t n)
{
	free(h->addrs);
	h->addrs = n ? xmalloc(n * sizeof(*a)) : NULL;
	if (n)
		memcpy(h->addrs, a, n * sizeof(*a));
	h->naddrs = n;
}

/* Both families are in: addresses AAAA first, then A. */
static void host_finish(struct dns_entry *e)
{
	struct host_progress *hp = e->hp;
	struct dns_hostrec *h = &e->hosts[0];
	struct dns_addr all[2 * DNS_FAMILY_MAX_ADDRS];
	size_t n = 0;
	for (int f = 0; f < 2; f++)
		for (size_t i = 0; i < hp->n[f]; i++)
			all[n++] = hp->addrs[f][i];
	host_set_addrs(h, all, n);
	int temp = hp->kind[0] == Q_TEMPFAIL || hp->kind[1] == Q_TEMPFAIL;
	int tf = hp->kind[0] == Q_TEMPFAIL ? 0 : 1;
	if (n) {
		e->status = DNS_OK;
		e->ttl = UINT32_MAX;
		for (int f = 0; f < 2; f++)
			if (hp->kind[f] == Q_OK)
				e->ttl = min_u32(e->ttl, hp->ttl[f]);
		if (temp) /* a family is missing: keep the partial answer only briefly */
			e->ttl = min_u32(e->ttl, D.opt.negative_ttl);
	} else if (temp) {
		set_error(e, DNS_TEMPFAIL, "address lookup for %s failed: %s", e->name,
			  hp->why[tf]);
	} else {
		e->ttl = min_u32(hp->ttl[0], hp->ttl[1]);
		if (hp->kind[0] == Q_NXDOMAIN || hp->kind[1] == Q_NXDOMAIN)
			set_error(e, DNS_NO_HOST, "%s: no such host (NXDOMAIN)", e->name);
		else
			set_error(e, DNS_NO_HOST, "%s has no A or AAAA record", e->name);
	}
	h->status = e->status;
	if (e->status != DNS_OK)
		h->error = xstrdup(e->error);
	entry_finish(e);
}

static void host_answer(struct dns_entry *e, int fam, const struct qres *r)
{
	struct host_progress *hp = e->hp;
	hp->kind[fam] = r->kind;
	hp->ttl[fam] = r->ttl;
	snprintf(hp->why[fam], sizeof(hp->why[fam]), "%s", r->why);
	if (r->kind == Q_OK) {
		size_t alen = fam == 0 ? 16 : 4;
		for (size_t i = 0; i < r->wa->nrr && hp->n[fam] < DNS_FAMILY_MAX_ADDRS; i++) {
			struct dns_addr *a = &hp->addrs[fam][hp->n[fam]++];
			a->family = fam == 0 ? AF_INET6 : AF_INET;
			memcpy(a->ip, r->wa->rr[i].addr, alen);
		}
	}
	if (--e->pending == 0)
		host_finish(e);
}

/* /etc/hosts (CARES_HOSTS): 1 when the name is there. */
static int host_from_file(struct dns_entry *e)
{
	struct dns_addr a[2 * DNS_FAMILY_MAX_ADDRS];
	size_t n = 0;
	static const int fams[2] = {AF_INET6, AF_INET};
	for (int f = 0; f < 2; f++) {
		struct hostent *he = NULL;
		if (ares_gethostbyname_file(D.chan->ch, e->name, fams[f], &he) != ARES_SUCCESS)
			continue;
		for (char **p = he->h_addr_list; *p && n < 2 * DNS_FAMILY_MAX_ADDRS; p++) {
			if (he->h_addrtype != fams[f])
				continue;
			a[n].family = (uint8_t)fams[f];
			memcpy(a[n].ip, *p, fams[f] == AF_INET6 ? 16 : 4);
			n++;
		}
		ares_free_hostent(he);
	}
	if (!n)
		return 0;
	host_set_addrs(&e->hosts[0], a, n);
	e->hosts[0].status = DNS_OK;
	e->status = DNS_OK;
	e->ttl = DNS_HOSTS_FILE_TTL;
	return 1;
}

static void host_start(struct dns_entry *e)
{
	e->nhosts = 1;
	e->hosts = xcalloc(1, sizeof(*e->hosts));
	e->hosts[0].name = xstrdup(e->name);
	snprintf(e->site_name, sizeof(e->site_name), "%s", e->name);
	if (D.opt.use_hosts_file && host_from_file(e)) {
		entry_finish(e);
		return;
	}
	e->hp = xcalloc(1, sizeof(*e->hp));
	e->pending = 2;
	entry_task(e, "QueryingAddresses");
	struct task *prev = task_enter(e->task);
	struct task *t = e->task;
	q_start(e, DNS_WIRE_T_AAAA, 0);
	q_start(e, DNS_WIRE_T_A, 1);
	task_exit(t, prev);
}

/* --- MX lookups ----------------------------------------------------------------------- */

/* All host lookups are in: hosts without addresses are dropped. */
static void mx_finish(struct dns_entry *e)
{
	size_t keep = 0, nohost = 0, n = e->nhosts;
	char why[128] = "";
	for (size_t i = 0; i < n; i++) {
		struct dns_hostrec *h = &e->hosts[i];
		if (h->naddrs) {
			e->hosts[keep++] = *h; /* moved: slot i is not freed */
			continue;
		}
		nohost += h->status == DNS_NO_HOST;
		if (!why[0] && h->error)
			snprintf(why, sizeof(why), "%s", h->error);
		free(h->name);
		free(h->error);
		free(h->addrs);
	}
	e->nhosts = keep;
	if (keep)
		e->status = DNS_OK;
	else
		set_error(e, nohost == n ? DNS_NO_HOST : DNS_TEMPFAIL,
			  "no MX host of %s has an address (%s)", e->name, why[0] ? why : "none");
	entry_finish(e);
}

static void host_lookup_internal(struct dns_entry *mx, size_t index);

/* Address literals among the exchanges are used as they are; names are looked up (through
 * the host cache) in parallel. */
static void mx_start_hosts(struct dns_entry *e)
{
	const char **names = xcalloc(e->nhosts, sizeof(*names));
	for (size_t i = 0; i < e->nhosts; i++)
		names[i] = e->hosts[i].name;
	if (dns_site_name(names, e->nhosts, e->site_name, sizeof(e->site_name)) < 0)
		log_warn("kumod::dns", "site name of %s truncated: %s", e->name, e->site_name);
	free(names);
	entry_task(e, "ResolvingHosts");
	e->pending = (unsigned)e->nhosts + 1; /* +1: nothing completes before the loop ends */
	for (size_t i = 0; i < e->nhosts; i++) {
		struct sockaddr_storage ss;
		struct dns_hostrec *h = &e->hosts[i];
		if (dns_literal_parse(h->name, &ss) == 1) {
			struct dns_addr a = {.family = (uint8_t)ss.ss_family};
			if (ss.ss_family == AF_INET6)
				memcpy(a.ip, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
			else
				memcpy(a.ip, &((struct sockaddr_in *)&ss)->sin_addr, 4);
			host_set_addrs(h, &a, 1);
			h->status = DNS_OK;
			e->pending--;
			continue;
		}
		host_lookup_internal(e, i);
	}
	if (--e->pending == 0)
		mx_finish(e);
}

/* The MX records, in preference order (ties keep message order here: they are shuffled
 * per delivery), without duplicates and root exchanges, at most DNS_MX_MAX_HOSTS. */
static void mx_take_records(struct dns_entry *e, const struct dns_wire_answer *wa)
{
	unsigned prefs[DNS_WIRE_MAX_RECORDS];
	size_t order[DNS_WIRE_MAX_RECORDS];
	for (size_t i = 0; i < wa->nrr; i++)
		prefs[i] = wa->rr[i].preference;
	dns_pref_order(prefs, wa->nrr, order, NULL);
	e->hosts = xcalloc(DNS_MX_MAX_HOSTS, sizeof(*e->hosts));
	for (size_t k = 0; k < wa->nrr && e->nhosts < DNS_MX_MAX_HOSTS; k++) {
		const struct dns_wire_rr *rr = &wa->rr[order[k]];
		char name[256];
		if (!rr->name[0] || dns_name_normalize(rr->name, name, sizeof(name)) < 0)
			continue;
		size_t j = 0;
		while (j < e->nhosts && strcmp(e->hosts[j].name, name))
			j++;
		if (j < e->nhosts)
			continue;
		e->hosts[e->nhosts].name = xstrdup(name);
		e->hosts[e->nhosts].preference = rr->preference;
		e->nhosts++;
	}
}

static void mx_answer(struct dns_entry *e, const struct qres *r)
{
	switch (r->kind) {
	case Q_TEMPFAIL:
		set_error(e, DNS_TEMPFAIL, "MX lookup for %s failed: %s", e->name, r->why);
		entry_finish(e);
		return;
	case Q_NXDOMAIN:
		e->ttl = r->ttl;
		set_error(e, DNS_NO_HOST, "%s: no such domain (NXDOMAIN)", e->name);
		entry_finish(e);
		return;
	case Q_NODATA: /* RFC 5321 §5.1: the domain itself is the implicit MX */
		e->implicit = 1;
		e->ttl = r->ttl;
		e->nhosts = 1;
		e->hosts = xcalloc(1, sizeof(*e->hosts));
		e->hosts[0].name = xstrdup(e->name);
		break;
	case Q_OK:
		e->ttl = r->ttl;
		if (dns_wire_is_null_mx(r->wa)) {
			set_error(e, DNS_NULL_MX, "%s does not accept mail (null MX, RFC 7505)",
				  e->name);
			entry_finish(e);
			return;
		}
		mx_take_records(e, r->wa);
		if (!e->nhosts) {
			set_error(e, DNS_NO_HOST, "%s has no usable MX host", e->name);
			entry_finish(e);
			return;
		}
		break;
	}
	mx_start_hosts(e);
}

/* kumo.dns.set_mx_timeout: a timer per MX entry, finding it by id when it fires (an
 * entry finished meanwhile is not found, or has its MX records: nothing to do). */
static void mx_deadline_fire(uint64_t id)
{
	struct dns_entry *e = pending_find(id);
	if (!e || e->kind != KIND_MX || e->done || e->nhosts)
		return; /* answered; the hosts' addresses are not under this limit */
	struct task *tk = e->task;
	struct task *prev = tk ? task_enter(tk) : NULL;
	set_error(e, DNS_TEMPFAIL, "MX lookup for %s timed out after %ums (set_mx_timeout)",
		  e->name, D.opt.mx_timeout_ms);
	entry_finish(e); /* the query's late answer finds no pending entry */
	if (tk)
		task_exit(tk, prev);
}

static void mx_deadline_start(struct dns_entry *e)
{
	kumod_loop_after(D.loop, D.opt.mx_timeout_ms, mx_deadline_fire, e->id);
}

/* The MX query of e, holding one of the set_mx_concurrency_limit slots until e finishes. */
static void mx_begin(struct dns_entry *e)
{
	e->mx_slot = 1;
	D.st.mx_active++;
	entry_task(e, "QueryingMX");
	struct task *prev = task_enter(e->task);
	struct task *t = e->task;
	q_start(e, DNS_WIRE_T_MX, 0);
	task_exit(t, prev);
}

/* Starts waiting MX entries (oldest first) while slots are free. */
static void mx_next(void)
{
	while (!D.shutting_down && D.mxq_len && D.st.mx_active < D.mx_limit) {
		uint64_t id = D.mxq[D.mxq_head];
		D.mxq_head = (D.mxq_head + 1) % D.mxq_cap;
		D.mxq_len--;
		struct dns_entry *e = pending_find(id);
		if (!e || !e->mx_queued)
			continue; /* finished while it waited (set_mx_timeout) */
		e->mx_queued = 0;
		D.st.mx_waiting--;
		mx_begin(e);
	}
}

static void mx_start(struct dns_entry *e)
{
	if (D.opt.mx_timeout_ms)
		mx_deadline_start(e); /* the wait for a slot counts too */
	if (D.st.mx_active < D.mx_limit) {
		mx_begin(e);
		return;
	}
	if (D.mxq_len == D.mxq_cap) {
		size_t nc = D.mxq_cap ? D.mxq_cap * 2 : 64;
		uint64_t *q = xcalloc(nc, sizeof(*q));
		for (size_t i = 0; i < D.mxq_len; i++)
			q[i] = D.mxq[(D.mxq_head + i) % D.mxq_cap];
		free(D.mxq);
		D.mxq = q;
		D.mxq_cap = nc;
		D.mxq_head = 0;
	}
	D.mxq[(D.mxq_head + D.mxq_len++) % D.mxq_cap] = e->id;
	e->mx_queued = 1;
	D.st.mx_waiting++;
	entry_task(e, "WaitingForMxSlot");
	KTRACE(dns_mx_wait, e->name, (uint32_t)D.st.mx_active, (uint32_t)D.st.mx_waiting);
}

void dns_set_mx_concurrency_limit(unsigned n)
{
	D.mx_limit = n ? n : 1;
	if (D.initialised)
		mx_next();
}

/* One MX host's address lookup finished (delivered through the ready list). */
static void mx_on_host(uint64_t owner, size_t index, const struct dns_entry *he)
{
	struct dns_entry *e = pending_find(owner);
	if (!e || index >= e->nhosts)
		return;
	struct task *prev = task_enter(e->task);
	struct task *t = e->task;
	struct dns_hostrec *h = &e->hosts[index];
	h->status = he->status;
	if (he->nhosts)
		host_set_addrs(h, he->hosts[0].addrs, he->hosts[0].naddrs);
	if (he->status != DNS_OK)
		h->error = xstrdup(he->error);
	uint32_t left = he->in_cache ? ttl_left(he, clock_mono_ns()) : he->ttl;
	if (he->status != DNS_TEMPFAIL)
		e->ttl = min_u32(e->ttl, left);
	if (--e->pending == 0)
		mx_finish(e);
	task_exit(t, prev);
}

/* --- record lookups ------------------------------------------------------------------- */

/* One kept record as text: MX/PTR names as the parser wrote them, TXT joined, A as text. */
static void rr_take(struct dns_hostrec *h, enum entry_kind kind, const unsigned char *msg,
		    const struct dns_wire_rr *rr)
{
	char ip[INET_ADDRSTRLEN];
	h->preference = rr->preference;
	switch (kind) {
	case KIND_RR_TXT:
		h->name = xmalloc((size_t)rr->rdlen + 1);
		h->namelen = dns_wire_txt_join(msg, rr, h->name);
		h->name[h->namelen] = 0;
		return;
	case KIND_RR_A:
		inet_ntop(AF_INET, rr->addr, ip, sizeof(ip));
		h->name = xstrdup(ip);
		break;
	default:
		h->name = xstrdup(rr->name);
		break;
	}
	h->namelen = strlen(h->name);
}

static void rr_answer(struct dns_entry *e, const struct qres *r)
{
	char tb[12];
	const char *type = dns_wire_type_name((unsigned)rr_qtype[e->kind], tb);
	switch (r->kind) {
	case Q_TEMPFAIL:
		set_error(e, DNS_TEMPFAIL, "%s lookup for %s failed: %s", type, e->name, r->why);
		break;
	case Q_NXDOMAIN:
		e->ttl = r->ttl;
		set_error(e, DNS_NO_HOST, "%s: no such domain (NXDOMAIN)", e->name);
		break;
	case Q_NODATA:
		e->ttl = r->ttl;
		e->status = DNS_OK;
		break;
	case Q_OK:
		e->ttl = r->ttl;
		e->status = DNS_OK;
		e->hosts = xcalloc(r->wa->nrr, sizeof(*e->hosts));
		for (size_t i = 0; i < r->wa->nrr; i++)
			rr_take(&e->hosts[e->nhosts++], e->kind, r->msg, &r->wa->rr[i]);
		break;
	}
	entry_finish(e);
}

static void rr_start(struct dns_entry *e)
{
	entry_task(e, "Querying");
	struct task *prev = task_enter(e->task);
	struct task *t = e->task;
	q_start(e, rr_qtype[e->kind], 0);
	task_exit(t, prev);
}

/* --- lookups -------------------------------------------------------------------------- */

static void late_closed(uv_handle_t *h)
{
	free(h);
}

static void late_fire(uv_timer_t *t)
{
	struct dns_late *l = (struct dns_late *)t;
	if (l->rcb) {
		struct dns_records_result r;
		memset(&r, 0, sizeof(r));
		r.status = DNS_TEMPFAIL;
		snprintf(r.error, sizeof(r.error), "resolver shut down");
		l->rcb(l->ctx, &r);
	} else {
		struct dns_mx_result r;
		memset(&r, 0, sizeof(r));
		r.status = DNS_TEMPFAIL;
		snprintf(r.error, sizeof(r.error), "resolver shut down");
		l->cb(l->ctx, &r);
	}
	uv_close((uv_handle_t *)t, late_closed);
}

/* Takes w (a caller's waiter). */
static void late_fail(struct dns_waiter *w)
{
	if (!D.loop)
		panic("%s: dns_init() was not called", __func__);
	struct dns_late *l = xcalloc(1, sizeof(*l));
	l->cb = w->cb;
	l->rcb = w->rcb;
	l->ctx = w->ctx;
	free(w);
	uv_timer_init(D.loop, &l->timer);
	uv_timer_start(&l->timer, late_fire, 0, 0);
}

/* An entry answered without DNS (literal, invalid name, shutting down). */
static struct dns_entry *entry_local(enum entry_kind kind, const char *name, struct dns_waiter *w)
{
	struct dns_entry *e = entry_new(kind, 0, name, 0);
	waiter_attach(e, w);
	return e;
}

static void literal_result(struct dns_entry *e, const char *text, const struct sockaddr_storage *ss)
{
	struct dns_addr a = {.family = (uint8_t)ss->ss_family};
	if (ss->ss_family == AF_INET6)
		memcpy(a.ip, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
	else
		memcpy(a.ip, &((const struct sockaddr_in *)ss)->sin_addr, 4);
	e->nhosts = 1;
	e->hosts = xcalloc(1, sizeof(*e->hosts));
	e->hosts[0].name = xstrdup(text);
	host_set_addrs(&e->hosts[0], &a, 1);
	e->status = DNS_OK;
	e->ttl = D.opt.max_ttl;
	snprintf(e->site_name, sizeof(e->site_name), "%s", text);
}

/* Takes w, a caller's waiter (cb or rcb and ctx set). */
static void lookup(enum entry_kind kind, unsigned rsv, const char *input, struct dns_waiter *w)
{
	if (!D.initialised) {
		late_fail(w);
		return;
	}
	w->caller = task_current_id();
	D.st.lookups++;
	struct sockaddr_storage ss;
	char name[256];
	int lit = dns_literal_parse(input, &ss);
	int bad = lit < 0 || (lit == 0 && dns_name_normalize(input, name, sizeof(name)) < 0);
	if (lit == 1 && kind_is_rr(kind))
		bad = 1; /* records are looked up for names only */
	if (lit == 1 || bad || D.shutting_down) {
		struct dns_entry *e = entry_local(kind, input, w);
		if (bad && kind_is_rr(kind))
			set_error(e, DNS_NO_HOST, "invalid domain name '%s'", input);
		else if (lit == 1)
			literal_result(e, input, &ss);
		else if (bad)
			set_error(e, DNS_NO_HOST, "invalid %s '%s'",
				  kind == KIND_MX ? "domain" : "host name", input);
		else
			set_error(e, DNS_TEMPFAIL, "resolver shut down");
		entry_finish(e);
		return;
	}
	struct dns_entry *e = cache_find(kind, rsv, name);
	uint64_t now = clock_mono_ns();
	if (e && e->done && now >= e->expires_ns) {
		cache_unlink(e);
		e = NULL;
	}
	if (e) {
		if (e->done)
			D.st.cache_hits++;
		else
			D.st.coalesced++;
		KTRACE(dns_cache_hit, name, kind_names[kind], e->done ? ttl_left(e, now) : 0,
		       !e->done);
		waiter_attach(e, w);
		return;
	}
	e = entry_new(kind, rsv, name, 1);
	waiter_attach(e, w);
	if (kind == KIND_MX)
		mx_start(e);
	else if (kind_is_rr(kind))
		rr_start(e);
	else
		host_start(e);
	timer_update();
}

static void host_lookup_internal(struct dns_entry *mx, size_t index)
{
	struct dns_waiter *w = xcalloc(1, sizeof(*w));
	w->owner = mx->id;
	w->index = index;
	const char *name = mx->hosts[index].name;
	struct dns_entry *e = cache_find(KIND_HOST, mx->rsv, name);
	uint64_t now = clock_mono_ns();
	if (e && e->done && now >= e->expires_ns) {
		cache_unlink(e);
		e = NULL;
	}
	if (e) {
		KTRACE(dns_cache_hit, name, kind_names[KIND_HOST], e->done ? ttl_left(e, now) : 0,
		       !e->done);
		waiter_attach(e, w);
		return;
	}
	e = entry_new(KIND_HOST, mx->rsv, name, 1);
	waiter_attach(e, w);
	host_start(e);
}

static struct dns_waiter *waiter_new(dns_mx_cb cb, dns_records_cb rcb, void *ctx)
{
	struct dns_waiter *w = xcalloc(1, sizeof(*w));
	w->cb = cb;
	w->rcb = rcb;
	w->ctx = ctx;
	return w;
}

void dns_resolve_mx(const char *domain, dns_mx_cb cb, void *ctx)
{
	lookup(KIND_MX, 0, domain, waiter_new(cb, NULL, ctx));
}

void dns_resolve_host(const char *host, dns_mx_cb cb, void *ctx)
{
	dns_resolve_host_via(0, host, cb, ctx);
}

void dns_resolve_host_via(unsigned rsv, const char *host, dns_mx_cb cb, void *ctx)
{
	if (rsv > D.nnamed)
		panic("%s: resolver %u", __func__, rsv);
	lookup(KIND_HOST, rsv, host, waiter_new(cb, NULL, ctx));
}

void dns_lookup_records(const char *name, enum dns_rr_type type, dns_records_cb cb, void *ctx)
{
	dns_lookup_records_via(0, name, type, cb, ctx);
}

void dns_lookup_records_via(unsigned rsv, const char *name, enum dns_rr_type type,
			    dns_records_cb cb, void *ctx)
{
	static const enum entry_kind kinds[] = {
	    [DNS_RR_MX] = KIND_RR_MX,
	    [DNS_RR_TXT] = KIND_RR_TXT,
	    [DNS_RR_PTR] = KIND_RR_PTR,
	    [DNS_RR_A] = KIND_RR_A,
	};
	if ((unsigned)type >= sizeof(kinds) / sizeof(kinds[0]))
		panic("%s: record type %d", __func__, (int)type);
	if (rsv > D.nnamed)
		panic("%s: resolver %u", __func__, rsv);
	lookup(kinds[type], rsv, name, waiter_new(NULL, cb, ctx));
}

void dns_cache_clear(void)
{
	cache_sweep(1);
}

/* --- set-up and shutdown ---------------------------------------------------------------- */

int dns_init(uv_loop_t *loop, const char *servers, char *err, size_t errlen)
{
	if (D.initialised) {
		snprintf(err, errlen, "resolver already initialised");
		return -1;
	}
	int rc = ares_library_init(ARES_LIB_INIT_ALL);
	if (rc != ARES_SUCCESS) {
		snprintf(err, errlen, "c-ares library init: %s", ares_strerror(rc));
		return -1;
	}
	if (!D.opt_set)
		dns_options_default(&D.opt);
	D.loop = loop;
	D.chan = chan_new(servers, err, errlen);
	if (!D.chan) {
		ares_library_cleanup();
		return -1;
	}
	D.servers = servers ? xstrdup(servers) : NULL;
	D.ready = NULL;
	D.ready_tail = &D.ready;
	D.rng = clock_wall_ns() ^ ((uint64_t)getpid() << 32);
	uv_timer_init(loop, &D.timer);
	uv_idle_init(loop, &D.idle);
	D.task = task_spawn("dns_resolver", servers ? servers : "resolv.conf", 0);
	task_set_phase(D.task, "Idle", NULL);
	D.initialised = 1;
	D.shutting_down = 0;
	return 0;
}

int dns_set_options(const struct dns_options *o, char *err, size_t errlen)
{
	if (!o->tries || !o->timeout_ms) {
		snprintf(err, errlen, "timeout and tries must be positive");
		return -1;
	}
	struct dns_options old = D.opt;
	D.opt = *o;
	D.opt_set = 1;
	if (D.initialised && !D.shutting_down &&
	    chan_replace(&D.chan, D.servers, err, errlen) < 0) {
		D.opt = old;
		return -1;
	}
	return 0;
}

void dns_set_negative_ttl(uint32_t secs)
{
	if (!D.opt_set) {
		dns_options_default(&D.opt);
		D.opt_set = 1;
	}
	D.opt.negative_ttl = secs;
}

void dns_set_mx_timeout(unsigned ms)
{
	if (!D.opt_set) {
		dns_options_default(&D.opt);
		D.opt_set = 1;
	}
	D.opt.mx_timeout_ms = ms;
}

int dns_set_servers(const char *servers, char *err, size_t errlen)
{
	if (!D.initialised || D.shutting_down) {
		snprintf(err, errlen, "resolver not running");
		return -1;
	}
	if (!servers) {
		snprintf(err, errlen, "no name servers given");
		return -1;
	}
	if (chan_replace(&D.chan, servers, err, errlen) < 0)
		return -1;
	free(D.servers);
	D.servers = xstrdup(servers);
	task_set_field(D.task, "servers", servers);
	dns_cache_clear();
	return 0;
}

int dns_define_resolver(const char *name, const char *servers, char *err, size_t errlen)
{
	if (!D.initialised || D.shutting_down) {
		snprintf(err, errlen, "resolver not running");
		return -1;
	}
	size_t i = 0;
	while (i < D.nnamed && strcmp(D.named[i].name, name))
		i++;
	if (i == D.nnamed && D.nnamed == DNS_MAX_NAMED) {
		snprintf(err, errlen, "too many named resolvers (at most %d)", DNS_MAX_NAMED);
		return -1;
	}
	struct dns_named *n = &D.named[i];
	if (i < D.nnamed) { /* defined again (a new configuration epoch): new servers */
		if (chan_replace(&n->chan, servers, err, errlen) < 0)
			return -1;
		free(n->servers);
		dns_cache_clear();
	} else {
		if (!(n->chan = chan_new(servers, err, errlen)))
			return -1;
		n->name = xstrdup(name);
		D.nnamed++;
	}
	n->servers = servers ? xstrdup(servers) : NULL;
	return 0;
}

int dns_resolver_find(const char *name)
{
	for (size_t i = 0; i < D.nnamed; i++)
		if (!strcmp(D.named[i].name, name))
			return (int)i + 1;
	return -1;
}

void dns_shutdown(void)
{
	if (!D.initialised || D.shutting_down)
		return;
	D.shutting_down = 1;
	struct task *prev = task_enter(D.task);
	/* MX lookups waiting for a slot have no query: they fail here. */
	while (D.mxq_len) {
		struct dns_entry *e = pending_find(D.mxq[D.mxq_head]);
		D.mxq_head = (D.mxq_head + 1) % D.mxq_cap;
		D.mxq_len--;
		if (e && e->mx_queued) {
			set_error(e, DNS_TEMPFAIL, "resolver shut down");
			entry_finish(e);
		}
	}
	xfree(D.mxq);
	D.mxq_cap = D.mxq_head = 0;
	/* Queries in flight end with ARES_EDESTRUCTION: every pending entry completes. */
	ares_destroy(D.chan->ch);
	xfree(D.chan);
	for (size_t i = 0; i < D.nnamed; i++) {
		ares_destroy(D.named[i].chan->ch);
		xfree(D.named[i].chan);
		xfree(D.named[i].name);
		xfree(D.named[i].servers);
	}
	D.nnamed = 0;
	for (int rounds = 0; D.ready; rounds++) {
		if (rounds > 1000)
			panic("%s: lookups keep starting during shutdown", __func__);
		deliver_ready();
	}
	for (size_t b = 0; b < DNS_ID_BUCKETS; b++)
		if (D.pending[b] || D.queries[b])
			panic("%s: a lookup is still pending", __func__);
	cache_sweep(1);
	xfree(D.cache);
	D.cache_buckets = 0;
	D.sweep_at = 0;
	uv_timer_stop(&D.timer);
	uv_idle_stop(&D.idle);
	uv_close((uv_handle_t *)&D.timer, NULL);
	uv_close((uv_handle_t *)&D.idle, NULL);
	task_set_phase(D.task, "Done", NULL);
	task_exit(D.task, prev);
	task_close(D.task);
	D.task = NULL;
	xfree(D.servers);
	ares_library_cleanup();
	D.initialised = 0;
	D.shutting_down = 0;
}
