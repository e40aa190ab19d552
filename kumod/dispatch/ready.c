/* SPDX-License-Identifier: Apache-2.0 */
/* Ready queues, routing and SMTP dispatchers. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/fsutil.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "dispatch/rewrite.h"
#include "dispatch/ready.h"
#include "dispatch/shaping_auto.h"
#include "dns/resolver.h"
#include "io/conn.h"
#include "io/redis.h"
#include "ktrace.h"
#include "policy.h"
#include "io/tls.h"
#include "proto/cidr.h"
#include "proto/dns_name.h"
#include "proto/duration.h"
#include "proto/rate_spec.h"
#include "queue/egress.h"
#include "queue/queue.h"
#include "queue/shared_throttle.h"
#include "queue/suspend.h"
#include "smtp/client.h"
#include "spool/logrec.h"
#include "spool/message.h"
#include "spool/spool.h"
#include "spool/timeline.h"

#define READY_MAX_HOSTS 32
#define READY_REFRESH_MS (60ull * 1000)

struct ready_addr {
	struct sockaddr_storage ss;
	char host[256];
	char addr[64]; /* ip:port text */
};

struct egress_path {
	size_t connection_limit, max_ready, max_deliveries_per_connection;
	enum smtp_client_tls_mode tls;
	int port;
	struct cidr_list prohibited;
	struct cidr_list skip; /* skip_hosts: such MX addresses are left out */
	char ehlo_domain[256];
	char tls_ca_file[512];		      /* "" = system trust store */
	struct rate_spec msg_rate, conn_rate; /* limit 0 = unlimited */
	int msg_rate_local, conn_rate_local;  /* "local:": never shared through Redis */
	uint64_t connect_timeout_ms, banner_timeout_ms;
	uint64_t state_timeout_ms[SMTP_CLIENT_STATE__COUNT]; /* reply timeouts per client state */
	int no_pipelining;				     /* enable_pipelining = false */
	uint64_t idle_ms;				     /* idle_timeout */
	uint64_t refresh_ms;				     /* refresh_interval */
	char *auth_user, *auth_password;		     /* smtp_auth_plain_*: NULL = no AUTH */
	int auth_without_tls;				     /* allow_smtp_auth_plain_without_tls */
};

enum ready_throttle {
	READY_THROTTLE_NONE = 0,
	READY_THROTTLE_MESSAGE,	   /* max_message_rate: waits before the next message */
	READY_THROTTLE_CONNECTION, /* max_connection_rate: waits before connecting */
};

struct ready_queue {
	char *name, *site, *source, *pool;
	struct egress_path path;
	struct egress_source_cfg src;
	char src_error[512]; /* path or source unusable: every attempt fails with this */
	uint64_t path_loaded_ms;
	int path_stale; /* ready_path_refresh: load again when next used */
	struct egress_gcra msg_gcra, conn_gcra;
	uv_timer_t *throttle_timer; /* wakes throttled dispatchers; freed in its close cb */
	uint64_t throttle_due_ms;
	uv_timer_t *lease_timer; /* shared connection limit full: retry new dispatchers */
	int lease_wait;		 /* no new dispatcher until lease_timer fires */
	struct ready_addr addrs[READY_MAX_HOSTS];
	size_t naddrs;
	struct qmsg *head, *tail;
	size_t count;
	size_t ndispatchers;
	struct dispatcher *dispatchers; /* live ones */
	uint64_t delivered, transfail, failed;
	uint64_t next_dispatcher_id;
	struct task *task;
	/* custom_lua: the constructor event and its (domain, tenant, campaign),
	 * taken from the first scheduled queue routed here (as KumoMTA) */
	char *lua_ctor;
	char *lua_args[3];
	/* custom_lua batching: the routed queue's batch_size, min_batch_size and
	 * max_batch_latency (batch_size 1: send, one message per call) */
	size_t lua_batch, lua_min_batch;
	uint64_t lua_latency_ms;
	struct ready_queue *next;
};

struct dispatcher {
	struct ready_queue *rq;
	struct smtp_client *client;
	struct task *task;
	size_t addr_idx;
	size_t delivered_here;
	struct qmsg *current;
	struct iovec iov;
	struct smtp_client_msg msg; /* must outlive the transaction (client keeps a pointer) */
	int ready;
	int idle;		/* connected, ready queue empty: waits idle_timeout */
	uv_timer_t *idle_timer; /* freed in its close callback */
	enum ready_throttle throttled;
	uint64_t throttled_since_ms;
	char last_error[512];
	uint64_t lua_conn;    /* custom_lua: the connection object (0: none) */
	uint64_t lua_call;    /* custom_lua: the policy call it waits for (0: none) */
	uint64_t lua_sent_ns; /* when the current send started */
	struct qmsg **batch;  /* custom_lua send_batch: taken messages (rq->lua_batch slots) */
	size_t nbatch;
	uint64_t batch_started_ms; /* the first one was taken (0: no partial batch) */
	/* Redis-shared throttles (kumo.configure_redis_throttles) */
	struct redis_op *shared_op;    /* a pending rate check or lease acquisition */
	enum ready_throttle shared_ok; /* that rate check allowed one (taken once) */
	char lease[37];		       /* the connection-limit lease held ("" none) */
	struct redis_op *extend_op;    /* a pending lease extension */
	int lease_lost;		       /* extension failed: the session ends */
	int lease_fresh;	       /* extended for the next message */
	struct dispatcher *next, *prev;
};

static struct {
	uv_loop_t *loop;
	struct ready_queue *all;
	char hostname[256];
	int shutting_down;
} R;

static uint64_t now_ms(void)
{
	return clock_wall_ns() / 1000000u;
}

static int rq_suspended(const struct ready_queue *rq);

static uint64_t mono_ms(void)
{
	return clock_mono_ns() / 1000000u;
}

/* --- egress path configuration ------------------------------------------- */

static size_t json_size(json_t *o, const char *k, size_t dflt)
{
	json_t *v = json_object_get(o, k);
	return json_is_number(v) && json_number_value(v) >= 0 ? (size_t)json_number_value(v) : dflt;
}

/* KumoMTA's enable_tls names; the default is Opportunistic. */
static enum smtp_client_tls_mode path_tls_mode(const char *tls)
{
	if (!tls || !strcmp(tls, "Opportunistic"))
		return SMTP_CLIENT_TLS_OPPORTUNISTIC;
	if (!strcmp(tls, "OpportunisticInsecure"))
		return SMTP_CLIENT_TLS_OPPORTUNISTIC_INSECURE;
	if (!strcmp(tls, "Required"))
		return SMTP_CLIENT_TLS_REQUIRED;
	if (!strcmp(tls, "RequiredInsecure"))
		return SMTP_CLIENT_TLS_REQUIRED_INSECURE;
	return SMTP_CLIENT_TLS_OFF;
}

/* A throttle spec (validated by make_egress_path); limit 0 when unset. */
static void path_rate(json_t *o, const char *key, struct rate_spec *out, const char *rq_name)
{
	const char *spec = json_string_value(json_object_get(o, key));
	memset(out, 0, sizeof(*out));
	if (spec && rate_spec_parse(spec, out) != 0)
		log_warn("kumod::smtp_dispatcher", "ready_queue=%s %s '%s' is not a rate; ignored",
			 rq_name, key, spec);
}

static int path_rate_local(json_t *o, const char *key)
{
	const char *spec = json_string_value(json_object_get(o, key));
	return spec && strncmp(spec, "local:", 6) == 0;
}

/* A CIDR list key (validated by make_egress_path) into out: 1 when the key
 * was given (an empty Lua table arrives as an empty JSON object), else 0. */
static int path_cidrs(json_t *v, struct cidr_list *out)
{
	size_t i;
	json_t *e;
	json_array_foreach(v, i, e)
	{
		if (json_is_string(e))
			cidr_list_add(out, json_string_value(e));
	}
	return json_is_array(v) || json_is_object(v);
}

static void path_auth_free(struct egress_path *p)
{
	free(p->auth_user);
	if (p->auth_password) {
		explicit_bzero(p->auth_password, strlen(p->auth_password));
		free(p->auth_password);
	}
	p->auth_user = p->auth_password = NULL;
}

/* smtp_auth_plain_password's keysource (checked by make_egress_path): a
 * file path, read now (one trailing line break dropped), or {key_data}.
 * NULL and why in err when it cannot be read. */
static char *path_secret(json_t *v, char *err, size_t errlen)
{
	const char *inline_data = json_string_value(json_object_get(v, "key_data"));
	if (inline_data)
		return xstrdup(inline_data);
	const char *path = json_string_value(v);
	if (!path) {
		snprintf(err, errlen, "smtp_auth_plain_password is missing");
		return NULL;
	}
	struct buf b;
	buf_init(&b);
	int rc = fs_read_file(path, &b);
	char *s = NULL;
	if (rc < 0 || b.len > 4096) {
		snprintf(err, errlen, "smtp_auth_plain_password file '%s': %s", path,
			 rc < 0 ? strerror(-rc) : "over 4 KiB");
	} else {
		size_t n = b.len;
		while (n && (b.data[n - 1] == '\n' || b.data[n - 1] == '\r'))
			n--;
		s = xmalloc(n + 1);
		memcpy(s, b.data ? b.data : "", n);
		s[n] = 0;
	}
	if (b.data)
		explicit_bzero(b.data, b.len);
	buf_free(&b);
	return s;
}

static void path_load(struct ready_queue *rq, const char *routing_domain)
{
	struct egress_path *p = &rq->path;
	json_t *o = NULL;
	struct policy_result r;
	policy_get_egress_path_config(routing_domain, rq->source, rq->site, &o, &r);
	if (r.status != POLICY_OK)
		log_warn("kumod::smtp_dispatcher", "ready_queue=%s get_egress_path_config: %s",
			 rq->name, r.text);
	cidr_list_free(&p->prohibited);
	cidr_list_free(&p->skip);
	path_auth_free(p);
	memset(p, 0, sizeof(*p));
	p->connection_limit = json_size(o, "connection_limit", 32);
	p->max_ready = json_size(o, "max_ready", 1024);
	p->max_deliveries_per_connection = json_size(o, "max_deliveries_per_connection", 1024);
	p->port = (int)json_size(o, "smtp_port", 25);
	if (p->connection_limit == 0)
		p->connection_limit = 1;
	p->tls = path_tls_mode(json_string_value(json_object_get(o, "enable_tls")));
	path_rate(o, "max_message_rate", &p->msg_rate, rq->name);
	path_rate(o, "max_connection_rate", &p->conn_rate, rq->name);
	p->msg_rate_local = path_rate_local(o, "max_message_rate");
	p->conn_rate_local = path_rate_local(o, "max_connection_rate");
	const char *ca = json_string_value(json_object_get(o, "tls_ca_file"));
	snprintf(p->tls_ca_file, sizeof(p->tls_ca_file), "%s", ca ? ca : "");
	/* given: its entries ({} from Lua is an empty JSON object); absent: defaults */
	if (!path_cidrs(json_object_get(o, "prohibited_hosts"), &p->prohibited)) {
		static const char *const dflt[] = {"127.0.0.0/8", "::1", "0.0.0.0", "::"};
		for (size_t i = 0; i < 4; i++)
			cidr_list_add(&p->prohibited, dflt[i]);
	}
	path_cidrs(json_object_get(o, "skip_hosts"), &p->skip);
	const char *ehlo = json_string_value(json_object_get(o, "ehlo_domain"));
	snprintf(p->ehlo_domain, sizeof(p->ehlo_domain), "%s", ehlo ? ehlo : "");
	p->connect_timeout_ms = json_size(o, "connect_timeout_ms", 60000);
	p->banner_timeout_ms = json_size(o, "banner_timeout_ms", 60000);
	/* KumoMTA's per-command reply timeouts and their defaults */
	static const struct {
		enum smtp_client_state state;
		const char *key;
		uint64_t dflt;
	} timeouts[] = {
	    {SMTP_CLIENT_EHLO, "ehlo_timeout_ms", 300000},
	    {SMTP_CLIENT_HELO, "ehlo_timeout_ms", 300000},
	    {SMTP_CLIENT_STARTTLS, "starttls_timeout_ms", 5000},
	    {SMTP_CLIENT_TLS, "starttls_timeout_ms", 5000},
	    {SMTP_CLIENT_AUTH, "auth_timeout_ms", 60000},
	    {SMTP_CLIENT_RSET, "rset_timeout_ms", 5000},
	    {SMTP_CLIENT_MAIL, "mail_from_timeout_ms", 300000},
	    {SMTP_CLIENT_RCPT, "rcpt_to_timeout_ms", 300000},
	    {SMTP_CLIENT_DATA, "data_timeout_ms", 300000},
	    {SMTP_CLIENT_DOT, "data_dot_timeout_ms", 300000},
	};
	for (size_t i = 0; i < sizeof(timeouts) / sizeof(timeouts[0]); i++)
		p->state_timeout_ms[timeouts[i].state] =
		    json_size(o, timeouts[i].key, timeouts[i].dflt);
	json_t *pl = json_object_get(o, "enable_pipelining");
	p->no_pipelining = json_is_false(pl);
	p->refresh_ms = json_size(o, "refresh_interval_ms", READY_REFRESH_MS);
	/* Epoch: kumod's configuration epoch never changes while it runs */
	const char *strategy = json_string_value(json_object_get(o, "refresh_strategy"));
	if (strategy && strcmp(strategy, "Epoch") == 0)
		p->refresh_ms = UINT64_MAX;
	p->idle_ms = json_size(o, "idle_timeout_ms", 5000);
	rq->path_loaded_ms = now_ms();
	rq->path_stale = 0;
	char auth_err[600] = "";
	const char *user = json_string_value(json_object_get(o, "smtp_auth_plain_username"));
	if (user && *user) {
		p->auth_password = path_secret(json_object_get(o, "smtp_auth_plain_password"),
					       auth_err, sizeof(auth_err));
		if (p->auth_password)
			p->auth_user = xstrdup(user);
		p->auth_without_tls =
		    json_is_true(json_object_get(o, "allow_smtp_auth_plain_without_tls"));
	}
	json_decref(o);
	rq->src_error[0] = '\0';
	if (egress_source_load(rq->source, &rq->src, rq->src_error, sizeof(rq->src_error)) < 0)
		log_warn("kumod::smtp_dispatcher", "ready_queue=%s %s", rq->name, rq->src_error);
	if (auth_err[0]) /* the credentials it asks for cannot be read: never without them */
		snprintf(rq->src_error, sizeof(rq->src_error), "%.500s", auth_err);
	/* Never deliver under a path the policy did not give (an unimplemented
	 * option, a Lua error): attempts fail transiently with the reason. */
	if (r.status != POLICY_OK)
		snprintf(rq->src_error, sizeof(rq->src_error), "get_egress_path_config: %.480s",
			 r.text);
}

/* --- ready queues ---------------------------------------------------------- */

/* proto: "smtp", or "lua:<constructor>" for custom_lua (KumoMTA's names). */
static struct ready_queue *ready_get(const char *source, const char *site, const char *pool,
				     const char *routing_domain, const char *proto)
{
	char name[1200];
	snprintf(name, sizeof(name), "%s->%s@%s", source, site, proto);
	for (struct ready_queue *rq = R.all; rq; rq = rq->next)
		if (strcmp(rq->name, name) == 0) {
			if (rq->path_stale || now_ms() - rq->path_loaded_ms > rq->path.refresh_ms)
				path_load(rq, routing_domain);
			return rq;
		}
	struct ready_queue *rq = xcalloc(1, sizeof(*rq));
	rq->name = xstrdup(name);
	rq->site = xstrdup(site);
	rq->source = xstrdup(source);
	rq->pool = xstrdup(pool);
	rq->task = task_spawn("ready_queue", name, 0);
	task_set_field(rq->task, "queue", name);
	task_set_phase(rq->task, "Idle", NULL);
	path_load(rq, routing_domain);
	rq->next = R.all;
	R.all = rq;
	return rq;
}

static void rq_phase(struct ready_queue *rq)
{
	char phase[48];
	snprintf(phase, sizeof(phase), "%s%zu ready, %zu conn",
		 rq_suspended(rq) ? "Suspended, " : "", rq->count, rq->ndispatchers);
	task_set_phase(rq->task, rq->count || rq->ndispatchers ? phase : "Idle", NULL);
}

static struct qmsg *rq_pop(struct ready_queue *rq)
{
	struct qmsg *qm = rq->head;
	if (!qm)
		return NULL;
	rq->head = qm->next;
	if (!rq->head)
		rq->tail = NULL;
	qm->next = NULL;
	rq->count--;
	rq_phase(rq);
	return qm;
}

/* --- outcomes -------------------------------------------------------------- */

/* The reply a record shows: the server's, or ours for a local failure
 * (command NULL: none was sent). */
struct outcome_reply {
	int code;
	const char *enh, *text, *command;
};
#define LOCAL_REPLY(code, enh, text) (&(struct outcome_reply){(code), (enh), (text), NULL})

/* recipient: NULL for the whole message (an array for a batch), or the one
 * recipient this record is about. c: the session of the attempt (our address
 * and its TLS facts) or NULL. */
static void log_outcome_rcpt(const char *type, struct qmsg *qm, const char *recipient,
			     struct ready_queue *rq, const struct outcome_reply *rep,
			     const char *addr, const char *host, const struct smtp_client *c)
{
	struct logrec_response resp = {.code = rep->code,
				       .enhanced = rep->enh && *rep->enh ? rep->enh : NULL,
				       .content = rep->text ? rep->text : "",
				       .command = rep->command};
	struct logrec_peer peer = {.name = host, .addr = addr};
	const char *local = c ? smtp_client_local_addr(c) : "";
	struct logrec_tls tls = {
	    .cipher = c ? smtp_client_tls_cipher(c) : "",
	    .protocol_version = c ? smtp_client_tls_version(c) : "",
	};
	struct logrec_event ev = {
	    .type = type,
	    .m = qm->m,
	    .recipient = recipient,
	    .resp = &resp,
	    .peer = addr ? &peer : NULL,
	    .queue = queue_name(qm->q),
	    .site = rq ? rq->name : NULL,
	    .delivery_protocol = rq && rq->lua_ctor ? "Lua" : NULL,
	    .egress_pool = rq ? rq->pool : NULL,
	    .egress_source = rq ? rq->source : NULL,
	    .tls = *tls.protocol_version ? &tls : NULL,
	    .source_address = *local ? local : NULL,
	};
	logrec_log_event(&ev);
}

static void log_outcome(const char *type, struct qmsg *qm, struct ready_queue *rq,
			const struct outcome_reply *rep, const char *addr, const char *host,
			const struct smtp_client *c)
{
	log_outcome_rcpt(type, qm, NULL, rq, rep, addr, host, c);
}

/* The outcome in the message's timeline (spool/timeline.h): the peer's
 * reply as sent, with the transaction time when known. */
static void timeline_outcome(const struct qmsg *qm, const char *type,
			     const struct outcome_reply *rep, uint64_t latency_ns)
{
	const char *enh = rep->enh ? rep->enh : "";
	if (latency_ns)
		MSG_TIMELINE(qm->m->id, type, "%d%s%s %s (transaction %" PRIu64 "us)", rep->code,
			     *enh ? " " : "", enh, rep->text, latency_ns / 1000u);
	else
		MSG_TIMELINE(qm->m->id, type, "%d%s%s %s", rep->code, *enh ? " " : "", enh,
			     rep->text);
}

static void outcome_delivered(struct qmsg *qm, struct ready_queue *rq,
			      const struct outcome_reply *rep, const char *addr, const char *host,
			      uint64_t latency_ns, const struct smtp_client *c)
{
	KTRACE(delivery_outcome, qm->m->id, rq->name, "Delivery", rep->code, rep->text,
	       latency_ns / 1000u);
	timeline_outcome(qm, "Delivery", rep, latency_ns);
	metrics_histogram_observe("deliver_message_latency_rollup", "service", "smtp_client",
				  (double)latency_ns / 1e9);
	log_outcome("Delivery", qm, rq, rep, addr, host, c);
	rq->delivered++;
	spool_discard(qm->m);
	queue_done(qm);
}

static void outcome_bounce(struct qmsg *qm, struct ready_queue *rq, const struct outcome_reply *rep,
			   const char *addr, const char *host, const struct smtp_client *c)
{
	KTRACE(delivery_outcome, qm->m->id, rq ? rq->name : "", "Bounce", rep->code, rep->text, 0);
	timeline_outcome(qm, "Bounce", rep, 0);
	log_outcome("Bounce", qm, rq, rep, addr, host, c);
	if (rq)
		rq->failed++;
	spool_discard(qm->m);
	queue_done(qm);
}

static void outcome_transient(struct qmsg *qm, struct ready_queue *rq,
			      const struct outcome_reply *rep, const char *addr, const char *host,
			      const char *reason, const struct smtp_client *c)
{
	KTRACE(delivery_outcome, qm->m->id, rq ? rq->name : "", "TransientFailure", rep->code,
	       rep->text, 0);
	timeline_outcome(qm, "TransientFailure", rep, 0);
	log_outcome("TransientFailure", qm, rq, rep, addr, host, c);
	if (rq)
		rq->transfail++;
	char code[32]; /* the queue keeps "code enhanced text" as the last error */
	snprintf(code, sizeof(code), "%d%s%s", rep->code, rep->enh && *rep->enh ? " " : "",
		 rep->enh ? rep->enh : "");
	queue_requeue(qm, reason, 1, code, rep->text);
}

/* --- per-recipient outcomes of a batch ---------------------------------------- */

enum rcpt_outcome {
	RCPT_DELIVERED,
	RCPT_BOUNCE,
	RCPT_TRANSIENT
};

/* The outcome of the whole transaction, as for a single recipient. */
static enum rcpt_outcome txn_outcome(const struct smtp_client_result *r, int code)
{
	if (r->status == SMTP_CLIENT_OK && code >= 200 && code < 300)
		return RCPT_DELIVERED;
	if (r->status == SMTP_CLIENT_PERMFAIL || (r->status == SMTP_CLIENT_OK && code >= 500))
		return RCPT_BOUNCE;
	return RCPT_TRANSIENT;
}

/* Recipient i: a refused RCPT decides; an accepted one shares the
 * transaction's fate (its code is the final reply's once DATA ended); without
 * an RCPT reply (MAIL refused, connection lost) the transaction decides. */
static enum rcpt_outcome rcpt_outcome(const struct smtp_client_result *r, size_t i)
{
	int c = r->rcpt_replies[i].code ? r->rcpt_replies[i].code : r->rcpt_codes[i];
	if (c >= 500 && c < 600)
		return RCPT_BOUNCE;
	if (c >= 400 && c < 500)
		return RCPT_TRANSIENT;
	return txn_outcome(r, r->code);
}

static void batch_meta_saved(void *ctx, int err)
{
	char *id = ctx;
	if (err && err != -ENOENT)
		log_warn("kumod::smtp_dispatcher",
			 "message %s: narrowing the recipient list in the spool failed (%s); "
			 "delivered recipients may be sent again after a restart",
			 id, strerror(-err));
	free(id);
}

/* The reply that decided recipient i: its refused RCPT's, else the
 * transaction's. */
static struct outcome_reply rcpt_reply(const struct smtp_client_result *r, size_t i)
{
	const struct smtp_client_rcpt_reply *rr = &r->rcpt_replies[i];
	if (rr->code)
		return (struct outcome_reply){rr->code, rr->enhanced, rr->text, "RCPT TO"};
	return (struct outcome_reply){r->code, r->enhanced ? r->enhanced : "",
				      r->text ? r->text : "", r->command};
}

/* A batch whose recipients fared differently (some refused at RCPT): one
 * record per recipient; delivered and bounced recipients leave the message,
 * whose narrowed recipient list is written to the spool before the rest is
 * requeued. Returns 0 when every recipient shares one outcome (the caller
 * handles the message as a whole, with one record for the batch). */
static int outcome_batch(struct qmsg *qm, struct ready_queue *rq,
			 const struct smtp_client_result *r, const char *addr, const char *host,
			 const struct smtp_client *c)
{
	struct message *m = qm->m;
	size_t n = m->nrecipients;
	if (n < 2 || r->nrcpt != n || !r->rcpt_codes || !r->rcpt_replies)
		return 0;
	unsigned char *oc = xmalloc(n), *keep = xmalloc(n);
	size_t same = 0, nkeep = 0, kept_first = n;
	for (size_t i = 0; i < n; i++) {
		oc[i] = (unsigned char)rcpt_outcome(r, i);
		same += oc[i] == oc[0];
		keep[i] = oc[i] == RCPT_TRANSIENT;
		if (keep[i] && !nkeep++)
			kept_first = i;
	}
	if (same == n) {
		free(oc);
		free(keep);
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		struct outcome_reply rep = rcpt_reply(r, i);
		if (oc[i] == RCPT_DELIVERED) {
			KTRACE(delivery_outcome, m->id, rq->name, "Delivery", rep.code, rep.text,
			       r->latency_ns / 1000u);
			log_outcome_rcpt("Delivery", qm, m->recipients[i], rq, &rep, addr, host, c);
			rq->delivered++;
		} else if (oc[i] == RCPT_BOUNCE) {
			KTRACE(delivery_outcome, m->id, rq->name, "Bounce", rep.code, rep.text, 0);
			log_outcome_rcpt("Bounce", qm, m->recipients[i], rq, &rep, addr, host, c);
			rq->failed++;
		}
	}
	free(oc);
	if (!nkeep) {
		free(keep);
		spool_discard(m);
		queue_done(qm);
		return 1;
	}
	KTRACE(batch_split, m->id, rq->name, (uint64_t)n, (uint64_t)(n - nkeep), (uint64_t)nkeep);
	message_retain_recipients(m, keep);
	free(keep);
	if (!m->spool_deferred || m->spool_saving) /* else written with the requeue */
		spool_update_meta(m, batch_meta_saved, xstrdup(m->id));
	/* r (the client's result) stays valid until on_done returns */
	struct outcome_reply rep = rcpt_reply(r, kept_first);
	if (!rep.code)
		rep.code = 451;
	outcome_transient(qm, rq, &rep, addr, host, "LoggedTransientFailure", c);
	return 1;
}

/* --- dispatchers ------------------------------------------------------------ */

static void dispatcher_next(struct dispatcher *d);
static void dispatcher_quit(struct dispatcher *d);
static void lua_open(struct dispatcher *d);
static void lua_send(struct dispatcher *d);
static void dispatcher_idle(struct dispatcher *d);
static void dispatcher_connect_next(struct dispatcher *d);
static void dispatcher_start_client(struct dispatcher *d, struct ready_addr *a);

static void dispatcher_phase(struct dispatcher *d, const char *phase)
{
	KTRACE(dispatcher_phase, d->task->id, d->rq->name, phase);
	task_set_phase(d->task, phase, NULL);
}

/* Close callback of the heap-allocated timers (throttle, idle). */
static void timer_free_cb(uv_handle_t *h)
{
	free(h);
}

static void dispatcher_free(struct dispatcher *d)
{
	struct ready_queue *rq = d->rq;
	if (d->lua_call)
		policy_cancel(d->lua_call);
	policy_lua_conn_close(d->lua_conn);
	/* a batch taken but not sent (or its send cancelled): back to its queue */
	for (size_t i = 0; i < d->nbatch; i++)
		queue_requeue(d->batch[i], "ReadyQueueWasReaped", 0, NULL, NULL);
	free(d->batch);
	if (d->idle_timer)
		uv_close((uv_handle_t *)d->idle_timer, timer_free_cb);
	shared_op_cancel(d->shared_op);
	shared_op_cancel(d->extend_op);
	if (d->lease[0]) { /* released on close (KumoMTA: when the dispatcher ends) */
		char key[1300];
		snprintf(key, sizeof(key), "kumomta.connection_limit.%s", rq->name);
		shared_lease_release(key, d->lease);
	}
	rq->ndispatchers--;
	if (d->prev)
		d->prev->next = d->next;
	else
		rq->dispatchers = d->next;
	if (d->next)
		d->next->prev = d->prev;
	rq_phase(rq);
	task_close(d->task);
	free(d);
}

/* --- throttles ------------------------------------------------------------- */

static void rq_throttle_close(struct ready_queue *rq)
{
	if (rq->throttle_timer)
		uv_close((uv_handle_t *)rq->throttle_timer, timer_free_cb);
	rq->throttle_timer = NULL;
	if (rq->lease_timer)
		uv_close((uv_handle_t *)rq->lease_timer, timer_free_cb);
	rq->lease_timer = NULL;
}

static void dispatcher_unthrottle(struct dispatcher *d);

/* Wakes every throttled dispatcher; each asks its rate again (the first
 * ones get the tokens, the others wait again: no busy loop). */
static void rq_throttle_cb(uv_timer_t *t)
{
	struct ready_queue *rq = t->data;
	struct dispatcher *d = rq->dispatchers, *next;
	for (; d; d = next) {
		next = d->next;
		if (d->throttled == READY_THROTTLE_NONE)
			continue;
		struct task *dt = d->task; /* d may be freed before task_exit */
		struct task *prev = task_enter(dt);
		dispatcher_unthrottle(d);
		task_exit(dt, prev);
	}
}

static void rq_throttle_arm(struct ready_queue *rq, uint64_t wait_ms)
{
	uint64_t due = mono_ms() + wait_ms;
	if (!rq->throttle_timer) {
		rq->throttle_timer = xcalloc(1, sizeof(*rq->throttle_timer));
		uv_timer_init(R.loop, rq->throttle_timer);
		rq->throttle_timer->data = rq;
	} else if (uv_is_active((uv_handle_t *)rq->throttle_timer) && rq->throttle_due_ms <= due) {
		return; /* an earlier wake-up is armed: it re-arms for the rest */
	}
	rq->throttle_due_ms = due;
	uv_timer_start(rq->throttle_timer, rq_throttle_cb, wait_ms, 0);
}

static const char *throttle_phase(enum ready_throttle k)
{
	return k == READY_THROTTLE_MESSAGE ? "MessageRateThrottled" : "ConnectionRateThrottled";
}

static void dispatcher_wait_throttled(struct dispatcher *d, enum ready_throttle kind, uint64_t wait)
{
	struct ready_queue *rq = d->rq;
	if (d->throttled != kind)
		d->throttled_since_ms = mono_ms();
	d->throttled = kind;
	dispatcher_phase(d, throttle_phase(kind));
	KTRACE(throttle_enter, d->task->id, rq->name, throttle_phase(kind), wait);
	rq_throttle_arm(rq, wait);
}

/* A shared rate could not be decided (Redis down or failing). KumoMTA's
 * behaviour: the message in hand gets a TransientFailure ("KumoMTA
 * internal: error in deliver_message: ...", requeued by its retry
 * schedule, never bounced) and the session ends; a connection attempt
 * ends the dispatcher. The queue's other messages wait in the ready queue
 * until a lease can be had again (RETRY_LEASE_MS). */
static void rq_lease_backoff(struct ready_queue *rq);

static void dispatcher_shared_error(struct dispatcher *d, enum ready_throttle kind, const char *err)
{
	struct ready_queue *rq = d->rq;
	snprintf(d->last_error, sizeof(d->last_error), "%s", err);
	rq_lease_backoff(rq);
	if (kind == READY_THROTTLE_MESSAGE && rq->head) {
		char text[600];
		snprintf(text, sizeof(text), "KumoMTA internal: error in deliver_message: %.500s",
			 err);
		outcome_transient(rq_pop(rq), rq, LOCAL_REPLY(451, "4.4.3", text), NULL, NULL,
				  "LoggedTransientFailure", NULL);
	}
	if (kind == READY_THROTTLE_MESSAGE && d->ready) {
		dispatcher_phase(d, "Closing");
		d->ready = 0; /* the close does not reconnect: the dispatcher ends */
		dispatcher_quit(d);
		return;
	}
	dispatcher_phase(d, "Closing");
	dispatcher_free(d);
}

static void dispatcher_shared_rate_cb(void *ud, const struct shared_rate_result *r, const char *err)
{
	struct dispatcher *d = ud;
	struct task *t = d->task, *prev = task_enter(t);
	enum ready_throttle kind = d->shared_ok; /* the kind asked, until answered */
	d->shared_op = NULL;
	d->shared_ok = READY_THROTTLE_NONE;
	if (err) {
		dispatcher_shared_error(d, kind, err);
	} else if (r->throttled) {
		dispatcher_wait_throttled(d, kind, r->retry_after_s * 1000u);
	} else {
		d->shared_ok = kind;
		if (kind == READY_THROTTLE_MESSAGE)
			dispatcher_next(d);
		else
			dispatcher_connect_next(d);
	}
	task_exit(t, prev);
}

/* The rate in Redis (KumoMTA's names: kumomta.max_message_rate.<queue>,
 * <queue>-connection-rate): 1 while the answer is pending or refused. */
static int dispatcher_shared_throttle(struct dispatcher *d, enum ready_throttle kind,
				      const struct rate_spec *r)
{
	struct ready_queue *rq = d->rq;
	if (d->shared_op)
		return 1;
	if (d->shared_ok == kind) {
		d->shared_ok = READY_THROTTLE_NONE;
		return 0;
	}
	char name[1300];
	if (kind == READY_THROTTLE_MESSAGE)
		snprintf(name, sizeof(name), "kumomta.max_message_rate.%s", rq->name);
	else
		snprintf(name, sizeof(name), "%s-connection-rate", rq->name);
	uint64_t period_s = r->period_ms / 1000u ? r->period_ms / 1000u : 1;
	d->shared_ok = kind; /* remembered for the callback */
	d->shared_op =
	    shared_rate_take(name, r->limit, period_s, r->limit, dispatcher_shared_rate_cb, d);
	if (!d->shared_op) {
		d->shared_ok = READY_THROTTLE_NONE;
		dispatcher_shared_error(d, kind, redis_last_error());
		return 1;
	}
	dispatcher_phase(d, kind == READY_THROTTLE_MESSAGE ? "MessageRateCheck"
							   : "ConnectionRateCheck");
	return 1;
}

/* Takes one token of the ready queue's message or connection rate; when
 * none is left the dispatcher waits (phase *RateThrottled) and 1 is
 * returned: its messages stay in the ready queue. With Redis throttles the
 * decision is asynchronous: 1 while it is pending (phase *RateCheck). */
static int dispatcher_throttle(struct dispatcher *d, enum ready_throttle kind)
{
	struct ready_queue *rq = d->rq;
	int msg = kind == READY_THROTTLE_MESSAGE;
	const struct rate_spec *r = msg ? &rq->path.msg_rate : &rq->path.conn_rate;
	if (!r->limit)
		return 0;
	if (shared_throttle_enabled() &&
	    !(msg ? rq->path.msg_rate_local : rq->path.conn_rate_local))
		return dispatcher_shared_throttle(d, kind, r);
	uint64_t wait = egress_gcra_take(msg ? &rq->msg_gcra : &rq->conn_gcra, r, mono_ms());
	if (!wait)
		return 0;
	dispatcher_wait_throttled(d, kind, wait);
	return 1;
}

static void dispatcher_unthrottle(struct dispatcher *d)
{
	enum ready_throttle kind = d->throttled;
	d->throttled = READY_THROTTLE_NONE;
	KTRACE(throttle_leave, d->task->id, d->rq->name, throttle_phase(kind),
	       mono_ms() - d->throttled_since_ms);
	if (kind == READY_THROTTLE_MESSAGE)
		dispatcher_next(d);
	else
		dispatcher_connect_next(d);
}

/* The last dispatcher could not reach any host: every ready message gets
 * a transient failure (KumoMTA: connection failures fail the queue). */
static void dispatcher_fail_queue(struct dispatcher *d)
{
	struct ready_queue *rq = d->rq;
	if (rq->ndispatchers > 1)
		return;
	struct qmsg *qm;
	while ((qm = rq_pop(rq)))
		outcome_transient(qm, rq, LOCAL_REPLY(451, "4.4.1", d->last_error), NULL, NULL,
				  "LoggedTransientFailure", NULL);
}

static void d_on_ready(struct smtp_client *c, void *ud)
{
	struct dispatcher *d = ud;
	struct task *t = d->task; /* d may be freed before task_exit */
	struct task *prev = task_enter(t);
	d->ready = 1;
	if (d->rq->src.has_addr)
		KTRACE(egress_source_bind, t->id, d->rq->source, d->rq->src.address,
		       d->rq->addrs[d->addr_idx < d->rq->naddrs ? d->addr_idx : 0].addr, 0,
		       smtp_client_local_addr(c));
	dispatcher_next(d);
	task_exit(t, prev);
}

static void d_on_done(struct smtp_client *c, const struct smtp_client_result *r, void *ud)
{
	struct dispatcher *d = ud;
	struct task *t = d->task; /* d may be freed before task_exit */
	struct task *prev = task_enter(t);
	struct qmsg *qm = d->current;
	d->current = NULL;
	const struct smtp_client_result *r0 = r;
	struct rewrite_result rw;
	if (qm) /* smtp_client_rewrite_delivery_status may change the codes */
		r = rewrite_delivery_status(r, qm->m, queue_domain(qm->q),
					    queue_routing_domain(qm->q), &rw);
	struct ready_addr *a = &d->rq->addrs[d->addr_idx < d->rq->naddrs ? d->addr_idx : 0];
	if (qm && outcome_batch(qm, d->rq, r, a->addr, a->host, c)) {
		/* a batch with mixed outcomes: handled per recipient */
	} else if (qm) {
		int code = r->rcpt_codes && r->nrcpt ? r->rcpt_codes[0] : r->code;
		struct outcome_reply rep = {r->code ? r->code : code, r->enhanced, r->text,
					    r->command};
		if (r->status == SMTP_CLIENT_OK && code >= 200 && code < 300) {
			rep.code = code;
			outcome_delivered(qm, d->rq, &rep, a->addr, a->host, r->latency_ns, c);
		} else if (r->status == SMTP_CLIENT_PERMFAIL ||
			   (r->status == SMTP_CLIENT_OK && code >= 500)) {
			outcome_bounce(qm, d->rq, &rep, a->addr, a->host, c);
		} else {
			if (!r->code)
				rep = (struct outcome_reply){451, "4.4.2", r->text, r->command};
			outcome_transient(qm, d->rq, &rep, a->addr, a->host,
					  "LoggedTransientFailure", c);
		}
	}
	d->delivered_here++;
	if (r != r0)
		rewrite_result_free(&rw);
	if (r0->session_usable)
		dispatcher_next(d);
	task_exit(t, prev);
}

static void d_on_closed(struct smtp_client *c, const struct smtp_client_result *r, void *ud)
{
	struct dispatcher *d = ud;
	struct task *t = d->task; /* d may be freed before task_exit */
	struct task *prev = task_enter(t);
	smtp_client_free(d->client);
	d->client = NULL;
	d->throttled = READY_THROTTLE_NONE; /* an idle session closed while waiting */
	shared_op_cancel(d->shared_op);	    /* ... or while Redis decided */
	d->shared_op = NULL;
	d->shared_ok = READY_THROTTLE_NONE;
	shared_op_cancel(d->extend_op);
	d->extend_op = NULL;
	d->lease_fresh = 0;
	if (d->idle) {
		/* the server closed the idle connection first */
		d->idle = 0;
		uv_timer_stop(d->idle_timer);
	}
	if (d->current) {
		/* closed with a message in flight and no on_done: transient */
		struct qmsg *qm = d->current;
		d->current = NULL;
		outcome_transient(
		    qm, d->rq,
		    LOCAL_REPLY(451, "4.4.2", r && r->text ? r->text : "connection lost"), NULL,
		    NULL, "LoggedTransientFailure", NULL);
	}
	if (!d->ready && !R.shutting_down) {
		/* never greeted: this host failed, try the next one */
		snprintf(d->last_error, sizeof(d->last_error), "%s: %s",
			 d->addr_idx < d->rq->naddrs ? d->rq->addrs[d->addr_idx].addr : "?",
			 r && r->text ? r->text : "connection failed");
		KTRACE(dispatcher_connect_fail, d->task->id,
		       d->addr_idx < d->rq->naddrs ? d->rq->addrs[d->addr_idx].addr : "?",
		       r && r->text ? r->text : "connection failed");
		d->addr_idx++;
		dispatcher_connect_next(d);
		task_exit(t, prev);
		return;
	}
	if (d->rq->count && !R.shutting_down && d->ready && !rq_suspended(d->rq) &&
	    !d->rq->lease_wait && !d->lease_lost) {
		/* more work and the session ended (limit, 421): reconnect */
		d->ready = 0;
		d->delivered_here = 0;
		d->addr_idx = 0;
		dispatcher_connect_next(d);
		task_exit(t, prev);
		return;
	}
	dispatcher_phase(d, "Closing");
	task_exit(t, prev);
	dispatcher_free(d);
}

static const struct smtp_client_ops dispatcher_ops = {
    .on_ready = d_on_ready,
    .on_done = d_on_done,
    .on_closed = d_on_closed,
};

/* --- custom_lua dispatchers ------------------------------------------------------ */

/* The constructor event stands for connecting, conn:send(msg) for a
 * transaction and conn:close() for QUIT; limits, rates, idle timeout,
 * phases and outcomes are those of an SMTP dispatcher. */

static void lua_closed(struct dispatcher *d)
{
	policy_lua_conn_close(d->lua_conn);
	d->lua_conn = 0;
	if (d->rq->count && !R.shutting_down && d->ready && !rq_suspended(d->rq) &&
	    !d->rq->lease_wait && !d->lease_lost) {
		/* more work and the connection ended (limit, 421, error): reconnect */
		d->ready = 0;
		d->delivered_here = 0;
		dispatcher_connect_next(d);
		return;
	}
	dispatcher_phase(d, "Closing");
	dispatcher_free(d);
}

static void dispatcher_quit(struct dispatcher *d)
{
	if (d->rq->lua_ctor)
		lua_closed(d);
	else
		smtp_client_quit(d->client);
}

static void lua_open_result(struct dispatcher *d, const struct policy_result *r)
{
	struct ready_queue *rq = d->rq;
	if (r->status != POLICY_OK) {
		snprintf(d->last_error, sizeof(d->last_error),
			 "custom_lua constructor '%.80s': %s%.350s", rq->lua_ctor,
			 r->status == POLICY_REJECT ? "kumo.reject: " : "", r->text);
		KTRACE(dispatcher_connect_fail, d->task->id, rq->name, d->last_error);
		dispatcher_fail_queue(d);
		dispatcher_phase(d, "Closing");
		dispatcher_free(d);
		return;
	}
	d->lua_conn = r->handle;
	d->ready = 1;
	dispatcher_next(d);
}

static void lua_opened(void *arg, const struct policy_result *r)
{
	struct dispatcher *d = arg;
	struct task *t = d->task, *prev = task_enter(t);
	d->lua_call = 0;
	lua_open_result(d, r);
	task_exit(t, prev);
}

static void lua_open(struct dispatcher *d)
{
	struct ready_queue *rq = d->rq;
	if (dispatcher_throttle(d, READY_THROTTLE_CONNECTION))
		return;
	dispatcher_phase(d, "AttemptingConnection");
	KTRACE(dispatcher_connect, d->task->id, rq->name, rq->lua_ctor, rq->site);
	struct policy_result r;
	if (policy_lua_conn_open(rq->lua_ctor, rq->lua_args[0], rq->lua_args[1], rq->lua_args[2],
				 &r, lua_opened, d, &d->lua_call))
		return;
	lua_open_result(d, &r);
}

/* send's outcome for qm: its string is the 200 response; kumo.reject 5xx
 * bounces, 4xx retries (421 also closes), any other error retries and
 * closes. Returns 1 when the connection stays usable. */
static int lua_outcome(struct dispatcher *d, struct qmsg *qm, const struct policy_result *r)
{
	struct ready_queue *rq = d->rq;
	if (r->status == POLICY_OK) {
		struct outcome_reply rep = {200, NULL, r->text, NULL};
		outcome_delivered(qm, rq, &rep, NULL, NULL, clock_mono_ns() - d->lua_sent_ns, NULL);
		return 1;
	}
	if (r->status == POLICY_REJECT && r->code >= 500) {
		outcome_bounce(qm, rq, &(struct outcome_reply){r->code, NULL, r->text, NULL}, NULL,
			       NULL, NULL);
		return 1;
	}
	int code = r->status == POLICY_REJECT ? r->code : 400;
	char text[sizeof(r->text) + 64];
	/* KumoMTA's wording for an error that is not a rejection */
	snprintf(text, sizeof(text), "%s%s",
		 r->status == POLICY_REJECT ? "" : "KumoMTA internal: error in deliver_message: ",
		 r->text);
	outcome_transient(qm, rq, &(struct outcome_reply){code, NULL, text, NULL}, NULL, NULL,
			  "LoggedTransientFailure", NULL);
	return r->status == POLICY_REJECT && code != 421;
}

static void lua_send_result(struct dispatcher *d, const struct policy_result *r)
{
	struct qmsg *qm = d->current;
	d->current = NULL;
	int usable = lua_outcome(d, qm, r);
	d->delivered_here++;
	if (usable)
		dispatcher_next(d);
	else
		lua_closed(d);
}

static void lua_sent(void *arg, const struct policy_result *r)
{
	struct dispatcher *d = arg;
	struct task *t = d->task, *prev = task_enter(t);
	d->lua_call = 0;
	lua_send_result(d, r);
	task_exit(t, prev);
}

static void lua_send(struct dispatcher *d)
{
	struct policy_result r;
	d->lua_sent_ns = clock_mono_ns();
	if (policy_lua_conn_send(d->lua_conn, d->current->m, &r, lua_sent, d, &d->lua_call))
		return;
	lua_send_result(d, &r);
}

/* --- custom_lua batches ---------------------------------------------------------- */

/* send_batch's outcome is every message's (KumoMTA: one answer for the
 * batch; a retried batch is requeued message by message, none lost). */
static void lua_batch_result(struct dispatcher *d, const struct policy_result *r)
{
	size_t n = d->nbatch;
	int usable = 1;
	d->nbatch = 0;
	KTRACE(lua_batch_done, d->task->id, d->rq->name, (uint64_t)n,
	       r->status == POLICY_OK	    ? 200
	       : r->status == POLICY_REJECT ? r->code
					    : 400);
	for (size_t i = 0; i < n; i++)
		usable &= lua_outcome(d, d->batch[i], r);
	d->delivered_here += n;
	if (usable)
		dispatcher_next(d);
	else
		lua_closed(d);
}

static void lua_batch_sent(void *arg, const struct policy_result *r)
{
	struct dispatcher *d = arg;
	struct task *t = d->task, *prev = task_enter(t);
	d->lua_call = 0;
	lua_batch_result(d, r);
	task_exit(t, prev);
}

static void lua_send_batch(struct dispatcher *d, const char *why)
{
	struct ready_queue *rq = d->rq;
	struct message **msgs = xcalloc(d->nbatch, sizeof(*msgs));
	for (size_t i = 0; i < d->nbatch; i++) {
		msgs[i] = d->batch[i]->m;
		MSG_TIMELINE(msgs[i]->id, "Attempt",
			     "attempt %d via %s (custom_lua send_batch of %zu)",
			     (int)msgs[i]->attempts + 1, rq->name, d->nbatch);
	}
	d->batch_started_ms = 0;
	d->lua_sent_ns = clock_mono_ns();
	dispatcher_phase(d, "DeliveringMessage");
	task_set_field(d->task, "message_id", msgs[0]->id);
	KTRACE(lua_batch_send, d->task->id, rq->name, (uint64_t)d->nbatch, why);
	struct policy_result r;
	int waits = policy_lua_conn_send_batch(d->lua_conn, msgs, d->nbatch, &r, lua_batch_sent, d,
					       &d->lua_call);
	free(msgs); /* the call holds its own references */
	if (!waits)
		lua_batch_result(d, &r);
}

/* The latency timer (or idle_timeout) ran out: whatever was gathered goes. */
static void lua_batch_timer_cb(uv_timer_t *t)
{
	struct dispatcher *d = t->data;
	struct task *dt = d->task, *prev = task_enter(dt);
	d->idle = 0;
	lua_send_batch(d, "max_batch_latency");
	task_exit(dt, prev);
}

/* Takes ready messages into the batch, up to batch_size. */
static void lua_batch_fill(struct dispatcher *d)
{
	struct ready_queue *rq = d->rq;
	if (!d->batch)
		d->batch = xcalloc(rq->lua_batch, sizeof(*d->batch));
	while (d->nbatch < rq->lua_batch && rq->head) {
		struct qmsg *qm = rq_pop(rq);
		if (!message_data_resident(qm->m)) { /* the queue reads it back when due */
			outcome_transient(
			    qm, rq,
			    LOCAL_REPLY(451, "4.3.0", "message data not loaded from the spool"),
			    NULL, NULL, "DispatcherDrop", NULL);
			continue;
		}
		d->batch[d->nbatch++] = qm;
	}
}

/* dispatcher_next for a batched custom_lua queue (KumoMTA's rule): a batch
 * goes once min_batch_size messages are gathered, or max_batch_latency
 * after its first one (bounded by idle_timeout), or at once when the
 * connection reached max_deliveries_per_connection; meanwhile the
 * dispatcher waits in phase AccumulatingBatch and arriving messages wake
 * it. A suspension or shutdown requeues what was gathered. */
static void lua_batch_next(struct dispatcher *d, int may_continue)
{
	struct ready_queue *rq = d->rq;
	if (may_continue && !d->nbatch && rq->head &&
	    dispatcher_throttle(d, READY_THROTTLE_MESSAGE))
		return; /* one token per batch; the timer resumes here */
	if (may_continue)
		lua_batch_fill(d);
	if (d->nbatch && (R.shutting_down || rq_suspended(rq))) {
		/* not sent now: back to the scheduled queue, not an attempt */
		for (size_t i = 0; i < d->nbatch; i++)
			queue_requeue(d->batch[i],
				      R.shutting_down ? "ReadyQueueWasReaped"
						      : "ReadyQueueWasSuspended",
				      0, NULL, NULL);
		d->nbatch = 0;
		d->batch_started_ms = 0;
	}
	if (!d->nbatch) {
		if (may_continue && rq->path.idle_ms) {
			dispatcher_idle(d);
			return;
		}
		dispatcher_phase(d, "Closing");
		dispatcher_quit(d);
		return;
	}
	uint64_t now = mono_ms();
	if (!d->batch_started_ms)
		d->batch_started_ms = now;
	uint64_t due = d->batch_started_ms + rq->lua_latency_ms;
	if (!may_continue || d->nbatch >= rq->lua_min_batch || now >= due) {
		lua_send_batch(d, !may_continue			   ? "closing"
				  : d->nbatch >= rq->lua_min_batch ? "min_batch_size"
								   : "max_batch_latency");
		return;
	}
	uint64_t wait = due - now;
	if (rq->path.idle_ms && rq->path.idle_ms < wait)
		wait = rq->path.idle_ms;
	if (!d->idle_timer) {
		d->idle_timer = xcalloc(1, sizeof(*d->idle_timer));
		uv_timer_init(R.loop, d->idle_timer);
		d->idle_timer->data = d;
	}
	d->idle = 1; /* rq_wake_idle brings more messages */
	char have[48];
	snprintf(have, sizeof(have), "%zu of %zu", d->nbatch, rq->lua_min_batch);
	dispatcher_phase(d, "AccumulatingBatch");
	task_set_field(d->task, "batch", have);
	uv_timer_start(d->idle_timer, lua_batch_timer_cb, wait, 0);
}

/* The egress source cannot reach address a (its source_address is of the
 * other family, or the source is unusable): the reason, else NULL. */
static const char *dispatcher_source_problem(struct dispatcher *d, const struct ready_addr *a)
{
	struct ready_queue *rq = d->rq;
	if (rq->src_error[0])
		return rq->src_error;
	if (!rq->src.has_addr || rq->src.addr.ss_family == a->ss.ss_family)
		return NULL;
	snprintf(d->last_error, sizeof(d->last_error),
		 "%s: skipped: egress source '%s' has source_address %s (IPv%d) and cannot "
		 "reach an IPv%d host",
		 a->addr, rq->source, rq->src.address, rq->src.addr.ss_family == AF_INET6 ? 6 : 4,
		 a->ss.ss_family == AF_INET6 ? 6 : 4);
	KTRACE(egress_source_bind, d->task->id, rq->source, rq->src.address, a->addr, -EAFNOSUPPORT,
	       "address family mismatch");
	return d->last_error;
}

static void dispatcher_connect_next(struct dispatcher *d)
{
	struct ready_queue *rq = d->rq;
	if (rq_suspended(rq) && !R.shutting_down) {
		/* suspended meanwhile: no new connection, and no queue failure */
		dispatcher_phase(d, "Closing");
		dispatcher_free(d);
		return;
	}
	if (rq->lua_ctor && !R.shutting_down) {
		lua_open(d);
		return;
	}
	if (d->addr_idx >= rq->naddrs || R.shutting_down) {
		if (!R.shutting_down)
			dispatcher_fail_queue(d);
		dispatcher_phase(d, "Closing");
		dispatcher_free(d);
		return;
	}
	struct ready_addr *a = &rq->addrs[d->addr_idx];
	const char *problem = dispatcher_source_problem(d, a);
	if (problem) {
		if (problem != d->last_error)
			snprintf(d->last_error, sizeof(d->last_error), "%s", problem);
		KTRACE(dispatcher_connect_fail, d->task->id, a->addr, d->last_error);
		d->addr_idx++;
		dispatcher_connect_next(d);
		return;
	}
	if (dispatcher_throttle(d, READY_THROTTLE_CONNECTION))
		return;
	dispatcher_start_client(d, a);
}

/* Connects to a, bound to the egress source's address when it has one. */
static void dispatcher_start_client(struct dispatcher *d, struct ready_addr *a)
{
	struct ready_queue *rq = d->rq;
	char name[256];
	snprintf(name, sizeof(name), "%s", a->host);
	size_t n = strlen(name);
	if (n && name[n - 1] == '.')
		name[n - 1] = '\0';  /* certificates name hosts without the root dot */
	struct sockaddr_storage lit; /* SNI carries names only, never address literals */
	SSL_CTX *ctx = NULL;
	if (rq->path.tls == SMTP_CLIENT_TLS_REQUIRED ||
	    rq->path.tls == SMTP_CLIENT_TLS_OPPORTUNISTIC) {
		ctx = tls_client_ctx(1, rq->path.tls_ca_file, d->last_error, sizeof(d->last_error));
		if (!ctx) {
			d->addr_idx = rq->naddrs; /* no host can be verified: fail the queue */
			dispatcher_connect_next(d);
			return;
		}
	}
	/* KumoMTA's order: the path's ehlo_domain, the source's, the host name
	 * (so shaping can override a source's EHLO name per destination). */
	const char *ehlo = rq->path.ehlo_domain[0]  ? rq->path.ehlo_domain
			   : rq->src.ehlo_domain[0] ? rq->src.ehlo_domain
						    : R.hostname;
	struct smtp_client_opts o = {
	    .ehlo_name = ehlo,
	    .tls = rq->path.tls,
	    .tls_ctx = ctx,
	    .sni = name[0] && dns_literal_parse(name, &lit) != 1 ? name : NULL, /* RFC 6066 */
	    .verify_name = name[0] ? name : NULL,
	    .source = rq->src.has_addr ? (const struct sockaddr *)&rq->src.addr : NULL,
	    .parent_task = d->task->id,
	    .task_name = a->addr,
	    .connect_timeout_ms = rq->path.connect_timeout_ms,
	    .banner_timeout_ms = rq->path.banner_timeout_ms,
	    .no_pipelining = rq->path.no_pipelining,
	    .auth_user = rq->path.auth_user,
	    .auth_password = rq->path.auth_password,
	    .auth_without_tls = rq->path.auth_without_tls,
	};
	memcpy(o.state_timeout_ms, rq->path.state_timeout_ms, sizeof(o.state_timeout_ms));
	dispatcher_phase(d, "AttemptingConnection");
	KTRACE(dispatcher_connect, d->task->id, rq->name, a->host, a->addr);
	task_set_field(d->task, "peer", a->addr);
	d->client = smtp_client_new(R.loop, &o, &dispatcher_ops, d);
	int rc = smtp_client_connect(d->client, (struct sockaddr *)&a->ss);
	if (rc < 0) {
		if (rq->src.has_addr) {
			snprintf(d->last_error, sizeof(d->last_error),
				 "%s: cannot bind egress source '%s' source_address %s: %s",
				 a->addr, rq->source, rq->src.address, uv_strerror(rc));
			KTRACE(egress_source_bind, d->task->id, rq->source, rq->src.address,
			       a->addr, rc, uv_strerror(rc));
		} else {
			snprintf(d->last_error, sizeof(d->last_error), "%s: %s", a->addr,
				 uv_strerror(rc));
		}
		KTRACE(dispatcher_connect_fail, d->task->id, a->addr, uv_strerror(rc));
		smtp_client_free(d->client);
		d->client = NULL;
		d->addr_idx++;
		dispatcher_connect_next(d);
	}
}

/* idle_timeout ran out with nothing to send: the connection closes. */
static void dispatcher_idle_cb(uv_timer_t *t)
{
	struct dispatcher *d = t->data;
	struct task *dt = d->task, *prev = task_enter(dt);
	d->idle = 0;
	dispatcher_phase(d, "Closing");
	dispatcher_quit(d);
	task_exit(dt, prev);
}

/* The ready queue is empty: keep the connection for idle_timeout, so a
 * message arriving meanwhile goes out without a new connection. */
static void dispatcher_idle(struct dispatcher *d)
{
	if (!d->idle_timer) {
		d->idle_timer = xcalloc(1, sizeof(*d->idle_timer));
		uv_timer_init(R.loop, d->idle_timer);
		d->idle_timer->data = d;
	}
	d->idle = 1;
	dispatcher_phase(d, "Idle");
	uv_timer_start(d->idle_timer, dispatcher_idle_cb, d->rq->path.idle_ms, 0);
}

/* Messages arrived: idle dispatchers take them before new ones connect. */
static void rq_wake_idle(struct ready_queue *rq)
{
	struct dispatcher *d = rq->dispatchers, *next;
	for (; d && rq->head; d = next) {
		next = d->next;
		if (!d->idle)
			continue;
		d->idle = 0;
		uv_timer_stop(d->idle_timer);
		struct task *dt = d->task, *prev = task_enter(dt);
		dispatcher_next(d);
		task_exit(dt, prev);
	}
}

/* --- shared connection limits (leases in Redis) ------------------------------ */

#define RETRY_LEASE_MS 3000u /* KumoMTA's wait between lease attempts */

/* KumoMTA's lease duration: the sum of the client timeouts. */
static uint64_t lease_duration_ms(const struct egress_path *p)
{
	static const enum smtp_client_state st[] = {
	    SMTP_CLIENT_EHLO, SMTP_CLIENT_AUTH, SMTP_CLIENT_MAIL,     SMTP_CLIENT_RCPT,
	    SMTP_CLIENT_DATA, SMTP_CLIENT_DOT,	SMTP_CLIENT_STARTTLS,
	};
	uint64_t ms = p->connect_timeout_ms + p->banner_timeout_ms + p->idle_ms;
	for (size_t i = 0; i < sizeof(st) / sizeof(st[0]); i++)
		ms += p->state_timeout_ms[st[i]];
	return ms ? ms : 1000;
}

static void lease_key(const struct ready_queue *rq, char *key, size_t len)
{
	snprintf(key, len, "kumomta.connection_limit.%s", rq->name);
}

static void ready_maybe_dispatch(struct ready_queue *rq);

static void rq_lease_timer_cb(uv_timer_t *t)
{
	struct ready_queue *rq = t->data;
	rq->lease_wait = 0;
	struct task *prev = task_enter(rq->task);
	ready_maybe_dispatch(rq);
	task_exit(rq->task, prev);
}

/* The shared limit is full or Redis failed: no new dispatcher for a while. */
static void rq_lease_backoff(struct ready_queue *rq)
{
	if (rq->lease_wait || R.shutting_down)
		return;
	rq->lease_wait = 1;
	if (!rq->lease_timer) {
		rq->lease_timer = xcalloc(1, sizeof(*rq->lease_timer));
		uv_timer_init(R.loop, rq->lease_timer);
		rq->lease_timer->data = rq;
	}
	uv_timer_start(rq->lease_timer, rq_lease_timer_cb, RETRY_LEASE_MS, 0);
}

static void dispatcher_lease_cb(void *ud, int ok, const char *err)
{
	struct dispatcher *d = ud;
	struct task *t = d->task, *prev = task_enter(t);
	d->shared_op = NULL;
	if (ok) {
		dispatcher_connect_next(d);
	} else {
		d->lease[0] = '\0';
		if (err)
			snprintf(d->last_error, sizeof(d->last_error), "%s", err);
		rq_lease_backoff(d->rq);
		dispatcher_phase(d, "Closing");
		dispatcher_free(d);
	}
	task_exit(t, prev);
}

/* A new dispatcher: with Redis throttles it first takes a lease of the
 * shared connection limit (phase AcquiringLease), then connects. */
static void dispatcher_start(struct dispatcher *d)
{
	struct ready_queue *rq = d->rq;
	if (!shared_throttle_enabled()) {
		dispatcher_connect_next(d);
		return;
	}
	char key[1300];
	lease_key(rq, key, sizeof(key));
	dispatcher_phase(d, "AcquiringLease");
	d->shared_op =
	    shared_lease_acquire(key, rq->path.connection_limit, lease_duration_ms(&rq->path),
				 d->lease, dispatcher_lease_cb, d);
	if (!d->shared_op) {
		d->lease[0] = '\0';
		rq_lease_backoff(rq);
		dispatcher_phase(d, "Closing");
		dispatcher_free(d);
	}
}

static void dispatcher_lease_extended(void *ud, int ok, const char *err)
{
	struct dispatcher *d = ud;
	struct task *t = d->task, *prev = task_enter(t);
	d->extend_op = NULL;
	if (ok) {
		d->lease_fresh = 1;
	} else {
		/* the session ends; the queue's other messages get a new
		 * dispatcher after the backoff (without it a queue whose every
		 * dispatcher lost its lease at once would wait forever) */
		d->lease_lost = 1;
		rq_lease_backoff(d->rq);
	}
	dispatcher_next(d);
	task_exit(t, prev);
}

/* KumoMTA extends the lease before each message (phase ExtendingLease);
 * a lease that cannot be extended (expired, Redis failing) ends the
 * session. 1 while the extension is pending or the session ends. */
static int dispatcher_lease_extend(struct dispatcher *d)
{
	if (!d->lease[0])
		return 0;
	if (d->extend_op)
		return 1;
	if (d->lease_fresh) {
		d->lease_fresh = 0;
		return 0;
	}
	char key[1300];
	lease_key(d->rq, key, sizeof(key));
	d->extend_op = shared_lease_extend(key, d->lease, lease_duration_ms(&d->rq->path),
					   dispatcher_lease_extended, d);
	if (!d->extend_op) {
		d->lease_lost = 1;
		rq_lease_backoff(d->rq); /* as above: the queue dispatches again */
		dispatcher_phase(d, "Closing");
		dispatcher_quit(d);
		return 1;
	}
	dispatcher_phase(d, "ExtendingLease");
	return 1;
}

static void dispatcher_next(struct dispatcher *d)
{
	struct ready_queue *rq = d->rq;
	int may_continue = !R.shutting_down && !rq_suspended(rq) &&
			   d->delivered_here < rq->path.max_deliveries_per_connection;
	if (rq->lua_ctor && rq->lua_batch > 1) {
		lua_batch_next(d, may_continue);
		return;
	}
	if (may_continue && !rq->head && rq->path.idle_ms) {
		dispatcher_idle(d);
		return;
	}
	if (!may_continue || !rq->head) {
		dispatcher_phase(d, "Closing");
		dispatcher_quit(d);
		return;
	}
	if (d->lease_lost) { /* the shared lease expired or Redis failed: end */
		dispatcher_phase(d, "Closing");
		dispatcher_quit(d);
		return;
	}
	/* the lease first: a rate token taken is then always used */
	if (dispatcher_lease_extend(d))
		return; /* resumes here once extended */
	if (dispatcher_throttle(d, READY_THROTTLE_MESSAGE))
		return; /* the session stays open and idle; the timer resumes here */
	struct qmsg *qm = rq_pop(rq);
	if (!message_data_resident(qm->m)) { /* the queue reads it back when due */
		outcome_transient(
		    qm, rq, LOCAL_REPLY(451, "4.3.0", "message data not loaded from the spool"),
		    NULL, NULL, "DispatcherDrop", NULL);
		dispatcher_next(d);
		return;
	}
	d->current = qm;
	d->iov.iov_base = qm->m->data.data;
	d->iov.iov_len = qm->m->data.len;
	d->msg = (struct smtp_client_msg){
	    .sender = qm->m->sender,
	    .recipients = (const char *const *)qm->m->recipients,
	    .nrecipients = qm->m->nrecipients,
	    .content = &d->iov,
	    .ncontent = 1,
	};
	dispatcher_phase(d, "DeliveringMessage");
	task_set_field(d->task, "message_id", qm->m->id);
	if (rq->lua_ctor) {
		MSG_TIMELINE(qm->m->id, "Attempt", "attempt %d via %s (custom_lua)",
			     (int)qm->m->attempts + 1, rq->name);
		lua_send(d);
		return;
	}
	MSG_TIMELINE(qm->m->id, "Attempt", "attempt %d via %s (session %" PRIu64 ")",
		     (int)qm->m->attempts + 1, rq->name, smtp_client_id(d->client));
	if (smtp_client_send(d->client, &d->msg) != 0) {
		d->current = NULL;
		outcome_transient(qm, rq, LOCAL_REPLY(451, "4.4.2", "dispatcher not ready"), NULL,
				  NULL, "DispatcherDrop", NULL);
		smtp_client_quit(d->client);
	}
}

static void ready_maybe_dispatch(struct ready_queue *rq)
{
	rq_wake_idle(rq);
	while (!R.shutting_down && rq->ndispatchers < rq->path.connection_limit &&
	       rq->ndispatchers < rq->count && !rq_suspended(rq) && !rq->lease_wait) {
		struct dispatcher *d = xcalloc(1, sizeof(*d));
		d->rq = rq;
		d->task = task_spawn(rq->lua_ctor ? "lua_dispatcher" : "smtp_dispatcher", rq->name,
				     rq->task->id);
		task_set_field(d->task, "queue", rq->name);
		rq->ndispatchers++;
		d->next = rq->dispatchers;
		if (d->next)
			d->next->prev = d;
		rq->dispatchers = d;
		dispatcher_phase(d, "Starting");
		dispatcher_start(d);
	}
	rq_phase(rq);
}

/* --- routing ------------------------------------------------------------------ */

/* One message being routed. Every due message has one while its lookups
 * are in flight (thousands at once after a large inject): kept small, the
 * addresses allocated as they arrive (was 15 KiB of fixed arrays). */
struct route {
	struct qmsg *qm;
	size_t pending;
	int permanent, any_ok;
	char *error; /* NULL until a lookup failed */
	char *site;  /* NULL until known */
	struct route_addr {
		struct ready_addr a;
		int port_override;
	} * addrs;
	size_t naddrs, capaddrs;
};

static void route_set_error(struct route *rt, const char *fmt, const char *text)
{
	char buf[300];
	snprintf(buf, sizeof(buf), fmt, text);
	free(rt->error);
	rt->error = xstrdup(buf);
}

static void route_free(struct route *rt)
{
	free(rt->addrs);
	free(rt->error);
	free(rt->site);
	free(rt);
}

static void route_add_result(struct route *rt, const struct dns_mx_result *r, int port)
{
	for (size_t h = 0; h < r->nhosts; h++) {
		const struct dns_host *dh = &r->hosts[h];
		for (size_t i = 0; i < dh->naddrs && rt->naddrs < READY_MAX_HOSTS; i++) {
			if (rt->naddrs == rt->capaddrs) {
				rt->capaddrs = rt->capaddrs ? rt->capaddrs * 2 : 2;
				rt->addrs = xrealloc(rt->addrs, rt->capaddrs * sizeof(*rt->addrs));
			}
			struct route_addr *ra = &rt->addrs[rt->naddrs];
			memset(ra, 0, sizeof(*ra));
			memcpy(&ra->a.ss, &dh->addrs[i], sizeof(ra->a.ss));
			snprintf(ra->a.host, sizeof(ra->a.host), "%s", dh->name ? dh->name : "");
			ra->port_override = port;
			rt->naddrs++;
		}
	}
}

static void rq_append(struct ready_queue *rq, struct qmsg *qm);

/* The egress source for qm from its queue's egress_pool ("unspecified"
 * without one); -1 after a transient outcome when the pool cannot give one. */
static int route_source(struct qmsg *qm, char *source, size_t len)
{
	const struct queue_config *cfg = queue_config_of(qm->q);
	snprintf(source, len, "unspecified");
	if (!cfg->egress_pool[0])
		return 0;
	char err[300];
	if (egress_pool_select(cfg->egress_pool, mono_ms(), source, len, err, sizeof(err)) >= 0)
		return 0;
	KTRACE(route_fail, qm->m->id, queue_name(qm->q), err, 0);
	outcome_transient(qm, NULL, LOCAL_REPLY(451, "4.4.4", err), NULL, NULL,
			  "FailedToInsertIntoReadyQueue", NULL);
	return -1;
}

/* custom_lua: no DNS; the ready queue is <source>-><routing domain>@lua:<constructor>. */
static void route_lua(struct qmsg *qm, const struct queue_config *cfg)
{
	if (R.shutting_down) {
		queue_requeue(qm, "ReadyQueueWasReaped", 0, NULL, NULL);
		return;
	}
	char source[128], proto[300];
	if (route_source(qm, source, sizeof(source)) != 0)
		return;
	snprintf(proto, sizeof(proto), "lua:%s", cfg->custom_lua);
	const char *rdom = queue_routing_domain(qm->q);
	struct ready_queue *rq = ready_get(
	    source, rdom, cfg->egress_pool[0] ? cfg->egress_pool : "unspecified", rdom, proto);
	if (rq->src_error[0]) {
		KTRACE(route_fail, qm->m->id, queue_name(qm->q), rq->src_error, 0);
		outcome_transient(qm, rq, LOCAL_REPLY(451, "4.4.4", rq->src_error), NULL, NULL,
				  "FailedToInsertIntoReadyQueue", NULL);
		return;
	}
	if (!rq->lua_ctor) {
		const char *tenant = message_get_meta_str(qm->m, "tenant");
		const char *campaign = message_get_meta_str(qm->m, "campaign");
		rq->lua_ctor = xstrdup(cfg->custom_lua);
		rq->lua_args[0] = xstrdup(queue_domain(qm->q));
		rq->lua_args[1] = xstrdup(tenant ? tenant : "");
		rq->lua_args[2] = xstrdup(campaign ? campaign : "");
	}
	if (!rq->ndispatchers) { /* a dispatcher's batch array is sized by it */
		rq->lua_batch = cfg->lua_batch_size;
		rq->lua_min_batch = cfg->lua_min_batch_size;
		rq->lua_latency_ms = cfg->lua_max_batch_latency_ms;
	}
	rq_append(rq, qm);
}

static void route_finish(struct route *rt)
{
	struct qmsg *qm = rt->qm;
	const char *rdom = queue_routing_domain(qm->q);
	if (R.shutting_down) {
		queue_requeue(qm, "ReadyQueueWasReaped", 0, NULL, NULL);
		route_free(rt);
		return;
	}
	if (!rt->naddrs) {
		const char *error = rt->error ? rt->error : "";
		KTRACE(route_fail, qm->m->id, queue_name(qm->q), error, rt->permanent);
		if (rt->permanent)
			outcome_bounce(qm, NULL, LOCAL_REPLY(550, "5.1.2", error), NULL, NULL,
				       NULL);
		else
			outcome_transient(qm, NULL, LOCAL_REPLY(451, "4.4.4", error), NULL, NULL,
					  "MxResolvedToZeroHosts", NULL);
		route_free(rt);
		return;
	}
	const struct queue_config *cfg = queue_config_of(qm->q);
	const char *pool = cfg->egress_pool[0] ? cfg->egress_pool : "unspecified";
	char source[128] = "unspecified";
	if (cfg->egress_pool[0]) {
		char err[300];
		if (egress_pool_select(cfg->egress_pool, mono_ms(), source, sizeof(source), err,
				       sizeof(err)) < 0) {
			KTRACE(route_fail, qm->m->id, queue_name(qm->q), err, 0);
			outcome_transient(qm, NULL, LOCAL_REPLY(451, "4.4.4", err), NULL, NULL,
					  "FailedToInsertIntoReadyQueue", NULL);
			route_free(rt);
			return;
		}
	}
	const char *site = rt->site ? rt->site : "";
	struct ready_queue *rq = ready_get(source, site, pool, rdom, "smtp");
	if (rq->src_error[0]) {
		/* the path or the source cannot be used: say why, not what its
		 * defaults would make of the addresses */
		KTRACE(route_fail, qm->m->id, queue_name(qm->q), rq->src_error, 0);
		outcome_transient(qm, rq, LOCAL_REPLY(451, "4.4.4", rq->src_error), NULL, NULL,
				  "FailedToInsertIntoReadyQueue", NULL);
		route_free(rt);
		return;
	}
	/* the latest routing wins: addresses refreshed from this answer */
	rq->naddrs = 0;
	size_t prohibited = 0, skipped = 0;
	for (size_t i = 0; i < rt->naddrs; i++) {
		struct ready_addr *a = &rt->addrs[i].a;
		int port = rt->addrs[i].port_override ? rt->addrs[i].port_override
			   : rq->src.remote_port      ? rq->src.remote_port
						      : rq->path.port;
		char ip[INET6_ADDRSTRLEN] = "";
		const uint8_t *raw;
		int fam = a->ss.ss_family;
		if (fam == AF_INET) {
			struct sockaddr_in *s4 = (struct sockaddr_in *)&a->ss;
			s4->sin_port = htons((uint16_t)port);
			raw = (const uint8_t *)&s4->sin_addr;
			inet_ntop(AF_INET, raw, ip, sizeof(ip));
			snprintf(a->addr, sizeof(a->addr), "%s:%d", ip, port);
		} else {
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a->ss;
			s6->sin6_port = htons((uint16_t)port);
			raw = (const uint8_t *)&s6->sin6_addr;
			inet_ntop(AF_INET6, raw, ip, sizeof(ip));
			snprintf(a->addr, sizeof(a->addr), "[%s]:%d", ip, port);
		}
		int cfam = fam == AF_INET ? 4 : 6; /* proto/cidr's family numbers */
		if (cidr_list_match(&rq->path.prohibited, cfam, raw)) {
			prohibited++;
			continue;
		}
		if (cidr_list_match(&rq->path.skip, cfam, raw)) {
			KTRACE(route_skip, qm->m->id, rq->name, a->addr);
			skipped++;
			continue;
		}
		rq->addrs[rq->naddrs++] = *a;
	}
	if (!rq->naddrs) {
		char why[700];
		if (skipped)
			snprintf(
			    why, sizeof(why),
			    "all %zu addresses for %s are prohibited_hosts (%zu) or skip_hosts "
			    "(%zu)",
			    prohibited + skipped, site, prohibited, skipped);
		else
			snprintf(why, sizeof(why), "all %zu addresses for %s are prohibited_hosts",
				 prohibited, site);
		KTRACE(route_fail, qm->m->id, queue_name(qm->q), why, 0);
		outcome_transient(qm, rq, LOCAL_REPLY(451, "4.4.4", why), NULL, NULL,
				  prohibited ? "MxWasProhibited" : "MxWasSkipped", NULL);
		route_free(rt);
		return;
	}
	route_free(rt);
	rq_append(rq, qm);
}

/* Appends a routed message to its ready queue and starts dispatchers. */
static void rq_append(struct ready_queue *rq, struct qmsg *qm)
{
	if (rq->count >= rq->path.max_ready) {
		KTRACE(ready_full, qm->m->id, rq->name, (uint64_t)rq->path.max_ready);
		queue_requeue(qm, "ReadyQueueWasFull", 0, NULL, NULL);
		return;
	}
	qm->next = NULL;
	if (rq->tail)
		rq->tail->next = qm;
	else
		rq->head = qm;
	rq->tail = qm;
	rq->count++;
	KTRACE(ready_insert, qm->m->id, rq->name, (uint64_t)rq->count);
	MSG_TIMELINE(qm->m->id, "Ready", "ready queue %s (%zu ready)", rq->name, rq->count);
	ready_maybe_dispatch(rq);
}

static void route_dns_cb(void *ctx, const struct dns_mx_result *r)
{
	struct route *rt = ctx;
	if (r->status == DNS_OK) {
		route_add_result(rt, r, 0);
		rt->any_ok = 1;
		if (!rt->site)
			rt->site = xstrdup(r->site_name);
	} else {
		route_set_error(rt, "%s", r->error);
		rt->permanent = r->status == DNS_NULL_MX || r->status == DNS_NO_HOST;
	}
	if (--rt->pending == 0)
		route_finish(rt);
}

/* mx_list: each entry resolved as a host; ports kept per entry. */
struct mx_lookup {
	struct route *rt;
	int port;
	char *name; /* { name, addr } entry: the MX name for the address (owned) */
};

static void route_mxlist_cb(void *ctx, const struct dns_mx_result *r)
{
	struct mx_lookup *ml = ctx;
	struct route *rt = ml->rt;
	if (r->status == DNS_OK) {
		size_t first = rt->naddrs;
		route_add_result(rt, r, ml->port);
		for (size_t i = first; ml->name && i < rt->naddrs; i++)
			snprintf(rt->addrs[i].a.host, sizeof(rt->addrs[i].a.host), "%s", ml->name);
		rt->any_ok = 1;
	} else if (!rt->error) {
		route_set_error(rt, "mx_list: %s", r->error);
	}
	free(ml->name);
	free(ml);
	if (--rt->pending == 0) {
		if (!rt->naddrs)
			rt->permanent = 0; /* a configured route failing is never a bounce */
		route_finish(rt);
	}
}

/* Splits "host:port", "[v6]:port", "v4", "v6" into host and port (0 = default). */
static void split_host_port(const char *s, char *host, size_t hostlen, int *port)
{
	*port = 0;
	if (s[0] == '[') {
		const char *end = strchr(s, ']');
		size_t n = end ? (size_t)(end - s - 1) : strlen(s + 1);
		snprintf(host, hostlen, "%.*s", (int)n, s + 1);
		if (end && end[1] == ':')
			*port = atoi(end + 2);
		return;
	}
	const char *colon = strrchr(s, ':');
	if (colon && strchr(s, ':') == colon) {
		snprintf(host, hostlen, "%.*s", (int)(colon - s), s);
		*port = atoi(colon + 1);
	} else {
		snprintf(host, hostlen, "%s", s);
	}
}

static void ready_route(struct qmsg *qm)
{
	struct route *rt = xcalloc(1, sizeof(*rt));
	rt->qm = qm;
	const struct queue_config *cfg = queue_config_of(qm->q);
	if (cfg->custom_lua) {
		free(rt);
		route_lua(qm, cfg);
		return;
	}
	if (cfg->nmx) {
		char site[512];
		size_t off = (size_t)snprintf(site, sizeof(site), "mx_list:");
		for (size_t i = 0; i < cfg->nmx && off < sizeof(site); i++)
			off +=
			    (size_t)snprintf(site + off, sizeof(site) - off, "%s%s", i ? "," : "",
					     cfg->mx_names[i] ? cfg->mx_names[i] : cfg->mx_list[i]);
		rt->site = xstrdup(site);
		rt->pending = cfg->nmx;
		for (size_t i = 0; i < cfg->nmx; i++) {
			struct mx_lookup *ml = xcalloc(1, sizeof(*ml));
			ml->rt = rt;
			ml->name = cfg->mx_names[i] ? xstrdup(cfg->mx_names[i]) : NULL;
			char host[256];
			split_host_port(cfg->mx_list[i], host, sizeof(host), &ml->port);
			dns_resolve_host(host, route_mxlist_cb, ml);
		}
		return;
	}
	rt->pending = 1;
	dns_resolve_mx(queue_routing_domain(qm->q), route_dns_cb, rt);
}

/* --- API ----------------------------------------------------------------------- */

int ready_init(uv_loop_t *loop)
{
	R.loop = loop;
	gethostname(R.hostname, sizeof(R.hostname) - 1);
	queue_set_router(ready_route);
	return 0;
}

static void ready_suspend_shutdown(void);

void ready_drain(void)
{
	R.shutting_down = 1;
}

size_t ready_inflight(void)
{
	size_t n = 0;
	for (struct ready_queue *rq = R.all; rq; rq = rq->next)
		for (struct dispatcher *d = rq->dispatchers; d; d = d->next)
			n += (d->current != NULL) + d->nbatch;
	return n;
}

void ready_shutdown(void)
{
	R.shutting_down = 1;
	ready_suspend_shutdown();
	shaping_auto_shutdown();
	queue_set_router(NULL);
	for (struct ready_queue *rq = R.all; rq; rq = rq->next) {
		struct qmsg *qm;
		rq_throttle_close(rq);
		while ((qm = rq_pop(rq)))
			queue_done(qm); /* stays in the spool: delivered after restart */
		while (rq->dispatchers) {
			struct dispatcher *d = rq->dispatchers;
			smtp_client_free(d->client); /* aborts: no callback follows */
			d->client = NULL;
			if (d->current)
				queue_done(d->current); /* in flight: retried after restart */
			d->current = NULL;
			for (size_t i = 0; i < d->nbatch; i++)
				queue_done(d->batch[i]); /* likewise */
			d->nbatch = 0;
			dispatcher_free(d);
		}
	}
	redis_shutdown(); /* after the lease releases dispatcher_free sent */
}

void ready_free_all(void)
{
	struct ready_queue *rq = R.all, *next;
	for (; rq; rq = next) {
		next = rq->next;
		rq_throttle_close(rq); /* --validate or an early exit: closed by the next run */
		cidr_list_free(&rq->path.prohibited);
		cidr_list_free(&rq->path.skip);
		path_auth_free(&rq->path);
		task_close(rq->task);
		free(rq->name);
		free(rq->site);
		free(rq->source);
		free(rq->pool);
		free(rq->lua_ctor);
		for (int i = 0; i < 3; i++)
			free(rq->lua_args[i]);
		free(rq);
	}
	R.all = NULL;
	egress_pools_free();
	shaping_auto_free_all();
}

void ready_path_refresh(const char *source, const char *site)
{
	for (struct ready_queue *rq = R.all; rq; rq = rq->next)
		if ((!source || strcmp(rq->source, source) == 0) &&
		    (!site || strcmp(rq->site, site) == 0))
			rq->path_stale = 1;
}

void ready_foreach(void (*fn)(const struct ready_info *ri, void *ctx), void *ctx)
{
	for (struct ready_queue *rq = R.all; rq; rq = rq->next) {
		struct ready_info ri = {
		    .name = rq->name,
		    .count = rq->count,
		    .connections = rq->ndispatchers,
		    .connection_limit = rq->path.connection_limit,
		    .max_ready = rq->path.max_ready,
		    .delivered = rq->delivered,
		    .transfail = rq->transfail,
		    .failed = rq->failed,
		    .suspended = rq_suspended(rq),
		};
		fn(&ri, ctx);
	}
}

/* --- admin suspensions (suspend-ready-q) ------------------------------------------
 * A suspended ready queue starts no connection and no transaction; one in
 * flight finishes and its session closes. Its messages stay in the ready
 * queue (spooled, in order, counted by ready_count): moving them back to the
 * scheduled queue would only churn them through routing again, and keeping
 * them lets delivery resume the moment the suspension ends. Arrivals still
 * queue up to max_ready; beyond that the usual ReadyQueueWasFull delay
 * applies. */

static struct {
	struct suspend_list l;
	uv_timer_t timer; /* earliest expiry */
	int timer_init;
} RS;

static int rq_suspended(const struct ready_queue *rq)
{
	return RS.l.head && suspend_match_name(&RS.l, rq->name, now_ms()) != NULL;
}

static struct ready_queue *ready_find(const char *name)
{
	for (struct ready_queue *rq = R.all; rq; rq = rq->next)
		if (strcmp(rq->name, name) == 0)
			return rq;
	return NULL;
}

/* Starts dispatchers again for a ready queue no entry covers any more. */
static void ready_resume(const char *name)
{
	struct ready_queue *rq = ready_find(name);
	if (rq && !rq_suspended(rq))
		ready_maybe_dispatch(rq);
}

static void ready_suspend_arm(void);

static void suspend_expired_cb(const struct suspend_entry *e, void *ctx)
{
	struct ready_queue *rq = ready_find(e->name);
	KTRACE(ready_suspend, e->id, "expired", e->name, e->reason, rq ? (uint64_t)rq->count : 0);
}

static void ready_suspend_timer_cb(uv_timer_t *t)
{
	suspend_prune(&RS.l, now_ms(), suspend_expired_cb, NULL);
	for (struct ready_queue *rq = R.all; rq; rq = rq->next)
		if (!rq_suspended(rq))
			ready_maybe_dispatch(rq);
	ready_suspend_arm();
}

static void ready_suspend_arm(void)
{
	if (!RS.timer_init || R.shutting_down)
		return;
	uint64_t next = suspend_next_expiry(&RS.l), now = now_ms();
	if (!next)
		uv_timer_stop(&RS.timer);
	else
		uv_timer_start(&RS.timer, ready_suspend_timer_cb, next > now ? next - now : 0, 0);
}

const char *ready_admin_suspend(const char *name, const char *reason, uint64_t expires_ms)
{
	if (!RS.timer_init) {
		uv_timer_init(R.loop, &RS.timer);
		RS.timer_init = 1;
	}
	struct suspend_entry *e = suspend_add(&RS.l, NULL, NULL, NULL, name, reason, expires_ms);
	struct ready_queue *rq = ready_find(name);
	KTRACE(ready_suspend, e->id, "created", name, reason, rq ? (uint64_t)rq->count : 0);
	if (rq)
		rq_phase(rq);
	ready_suspend_arm();
	return e->id;
}

int ready_admin_suspend_cancel(const char *id)
{
	struct suspend_entry *e = suspend_take(&RS.l, id);
	if (!e)
		return -ENOENT;
	struct ready_queue *rq = ready_find(e->name);
	KTRACE(ready_suspend, e->id, "cancelled", e->name, e->reason, rq ? (uint64_t)rq->count : 0);
	ready_resume(e->name);
	if (rq)
		rq_phase(rq);
	suspend_entry_free(e);
	ready_suspend_arm();
	return 0;
}

json_t *ready_admin_suspend_list(void)
{
	json_t *a = json_array();
	uint64_t now = now_ms();
	for (const struct suspend_entry *e = RS.l.head; e; e = e->next) {
		if (e->expires_ms <= now)
			continue;
		char left[64], expires[40];
		duration_format_ms(e->expires_ms - now, left, sizeof(left));
		rfc3339_format_ms(e->expires_ms, expires, sizeof(expires));
		json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", e->id, "name",
						   e->name, "reason", e->reason, "duration", left,
						   "expires", expires));
	}
	return a;
}

size_t ready_admin_suspend_count(void)
{
	size_t n = 0;
	uint64_t now = now_ms();
	for (const struct suspend_entry *e = RS.l.head; e; e = e->next)
		n += e->expires_ms > now;
	return n;
}

static void ready_suspend_shutdown(void)
{
	suspend_clear(&RS.l);
	if (RS.timer_init) {
		uv_timer_stop(&RS.timer);
		uv_close((uv_handle_t *)&RS.timer, NULL);
		RS.timer_init = 0;
	}
}

/* --- inspection (GET /api/admin/inspect-ready-q/v1) ------------------------------ */

static const char *tls_mode_name(enum smtp_client_tls_mode m)
{
	switch (m) {
	case SMTP_CLIENT_TLS_OFF:
		return "Disabled";
	case SMTP_CLIENT_TLS_OPPORTUNISTIC_INSECURE:
		return "OpportunisticInsecure";
	case SMTP_CLIENT_TLS_REQUIRED_INSECURE:
		return "RequiredInsecure";
	case SMTP_CLIENT_TLS_OPPORTUNISTIC:
		return "Opportunistic";
	case SMTP_CLIENT_TLS_REQUIRED:
		return "Required";
	}
	return "?";
}

static json_t *rate_json(const struct rate_spec *r)
{
	if (!r->limit)
		return json_null();
	return json_pack("{s:I, s:I}", "limit", (json_int_t)r->limit, "period_ms",
			 (json_int_t)r->period_ms);
}

static double secs(uint64_t ns)
{
	return (double)ns / 1e9;
}

static void name_once(json_t *seen, json_t *list, const char *name)
{
	if (json_object_get(seen, name))
		return;
	json_object_set_new(seen, name, json_true());
	json_array_append_new(list, json_string(name));
}

json_t *ready_inspect(const char *name)
{
	struct ready_queue *rq = ready_find(name);
	if (!rq)
		return NULL;
	uint64_t now_ns = clock_wall_ns();
	json_t *mx = json_array();
	for (size_t i = 0; i < rq->naddrs; i++)
		json_array_append_new(mx, json_pack("{s:s, s:s}", "host", rq->addrs[i].host, "addr",
						    rq->addrs[i].addr));
	int conn_throttled = 0, msg_throttled = 0;
	json_t *ds = json_array();
	for (struct dispatcher *d = rq->dispatchers; d; d = d->next) {
		conn_throttled |= d->throttled == READY_THROTTLE_CONNECTION;
		msg_throttled |= d->throttled == READY_THROTTLE_MESSAGE;
		const struct task *t = d->task;
		const char *detail = d->last_error[0] ? d->last_error : t->wait ? t->wait : "";
		char when[40];
		rfc3339_format_ms(t->created_ns / 1000000u, when, sizeof(when));
		json_array_append_new(
		    ds, json_pack("{s:I, s:s, s:f, s:s, s:s, s:f, s:I, s:o}", "session_id",
				  (json_int_t)t->id, "started_at", when, "age",
				  secs(now_ns - t->created_ns), "phase", t->phase, "detail", detail,
				  "time_in_current_phase", secs(now_ns - t->phase_since_ns),
				  "delivered_this_connection", (json_int_t)d->delivered_here,
				  "message_id",
				  d->current ? json_string(d->current->m->id) : json_null()));
	}
	/* the scheduled queues whose messages are here (ready or being sent) */
	json_t *seen = json_object(), *sched = json_array();
	for (struct qmsg *qm = rq->head; qm; qm = qm->next)
		name_once(seen, sched, queue_name(qm->q));
	for (struct dispatcher *d = rq->dispatchers; d; d = d->next)
		if (d->current)
			name_once(seen, sched, queue_name(d->current->q));
	json_decref(seen);
	json_t *path = json_pack(
	    "{s:I, s:I, s:I, s:s, s:i, s:s, s:o, s:o, s:b}", "connection_limit",
	    (json_int_t)rq->path.connection_limit, "max_ready", (json_int_t)rq->path.max_ready,
	    "max_deliveries_per_connection", (json_int_t)rq->path.max_deliveries_per_connection,
	    "enable_tls", tls_mode_name(rq->path.tls), "smtp_port", rq->path.port, "ehlo_domain",
	    rq->path.ehlo_domain, "max_message_rate", rate_json(&rq->path.msg_rate),
	    "max_connection_rate", rate_json(&rq->path.conn_rate), "enable_pipelining",
	    !rq->path.no_pipelining);
	json_t *state = json_pack(
	    "{s:I, s:I, s:b, s:b, s:b, s:b}", "ready_count", (json_int_t)rq->count,
	    "connection_count", (json_int_t)rq->ndispatchers, "connection_limited",
	    rq->ndispatchers >= rq->path.connection_limit, "connection_rate_throttled",
	    conn_throttled, "message_rate_throttled", msg_throttled, "suspended", rq_suspended(rq));
	return json_pack(
	    "{s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:{s:I, s:I, s:I}, s:o, s:o, s:f}",
	    "queue_name", rq->name, "site_name", rq->site, "egress_source", rq->source,
	    "egress_pool", rq->pool, "protocol", rq->lua_ctor ? "lua" : "smtp", "mx", mx, "state",
	    state, "path_config", path, "counters", "delivered", (json_int_t)rq->delivered,
	    "transfail", (json_int_t)rq->transfail, "failed", (json_int_t)rq->failed, "dispatchers",
	    ds, "scheduled_queue_names", sched, "now", (double)now_ns / 1e9);
}
