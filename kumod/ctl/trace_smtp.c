/* SPDX-License-Identifier: Apache-2.0 */
/* Live SMTP transcript subscribers (see trace_smtp.h). The websocket
 * framing is proto/ws.c's: a small codec of our own rather than
 * libwebsockets, which brings its own event loop and socket handling where
 * kumod needs frames on a connection its libuv HTTP server already owns.
 * It is one subscriber of the smtp_trace hook, whose sides are those of
 * its configured websockets: with none, it asks for no events. */
#include "ctl/trace_smtp.h"

#include <jansson.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "base/base64.h"
#include "base/buf.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "ctl/http_int.h"
#include "ktrace.h"
#include "proto/cidr.h"
#include "proto/smtp_reply.h"
#include "proto/ws.h"

#define TRACE_MAX_FRAME 65536		 /* a request or control frame from kcli */
#define TRACE_MAX_BACKLOG (8u << 20)	 /* queued output before events are dropped */
#define TRACE_SNIPPET 80		 /* first bytes of a summarised DATA */
#define TRACE_MAX_CLIENT_SESSIONS 100000 /* conn_meta kept for client sessions */

/* Client conn_meta keys a filter may name, with the request field. */
static const char *const client_filters[][2] = {
    {"domain", "domain"},     {"ready_queue", "ready_queue"},	  {"sender", "mail_from"},
    {"recipient", "rcpt_to"}, {"egress_source", "egress_source"},
};
/* KumoMTA request fields kumod's client conn_meta does not hold yet: a
 * filter on them would match everything, so it is refused. */
static const char *const client_unsupported[] = {"campaign",	"tenant",  "routing_domain",
						 "egress_pool", "mx_host", NULL};

struct trace_sub {
	struct http_conn *hc;
	enum smtp_trace_side side;
	int configured; /* the request frame arrived */
	int terse, data_full;
	struct cidr_list source_addr, mx_addr;
	json_t *filters; /* client: meta key -> array of allowed strings */
	uint64_t missed, missed_reported;
	struct trace_sub *next;
};

/* conn_meta of a client session, built from the hook's events. */
struct client_meta {
	uint64_t id;
	json_t *meta;
	struct client_meta *next;
};

static struct {
	int handle; /* smtp_trace subscription, -1 before the first websocket */
	struct trace_sub *subs;
	struct client_meta *clients;
	size_t nclients;
} T = {.handle = -1};

/* --- handshake ------------------------------------------------------------ */

void trace_smtp_accept_key(const char *key, char out[32])
{
	char in[128];
	unsigned char md[SHA_DIGEST_LENGTH];
	int n = snprintf(in, sizeof(in), "%s%s", key, WS_GUID);
	SHA1((const unsigned char *)in, (size_t)n, md);
	struct buf b;
	buf_init(&b);
	base64_encode(&b, md, sizeof(md));
	snprintf(out, 32, "%s", buf_cstr(&b));
	buf_free(&b);
}

static int header_has_token(const char *v, const char *token)
{
	size_t tl = strlen(token);
	for (const char *p = v; p && *p;) {
		p += strspn(p, " \t,");
		size_t n = strcspn(p, ",");
		size_t m = n;
		while (m && (p[m - 1] == ' ' || p[m - 1] == '\t'))
			m--;
		if (m == tl && strncasecmp(p, token, tl) == 0)
			return 1;
		p += n;
	}
	return 0;
}

static void trace_smtp_sink(const struct smtp_trace_ev *ev, void *arg);

static void recompute_active(void)
{
	unsigned bits = 0;
	for (struct trace_sub *t = T.subs; t; t = t->next)
		if (t->configured)
			bits |= (unsigned)t->side;
	if (T.handle < 0 && bits) {
		T.handle = smtp_trace_subscribe(bits, trace_smtp_sink, NULL);
		if (T.handle < 0)
			panic("%s: smtp_trace subscriber list full", __func__);
	} else if (T.handle >= 0) {
		smtp_trace_set_sides(T.handle, bits);
	}
	if (!(bits & SMTP_TRACE_CLIENT)) {
		while (T.clients) {
			struct client_meta *c = T.clients;
			T.clients = c->next;
			json_decref(c->meta);
			free(c);
		}
		T.nclients = 0;
	}
}

void trace_smtp__upgrade(struct http_conn *hc, struct http_request *req, enum smtp_trace_side side)
{
	const struct http_req *r = req->r;
	if (!r->upgrade || !header_has_token(r->upgrade, "websocket") || !r->connection ||
	    !header_has_token(r->connection, "upgrade")) {
		http__error_extra(hc, 426, "Upgrade: websocket\r\n",
				  "this endpoint is a websocket: send Upgrade: websocket and "
				  "Connection: Upgrade (kcli trace-smtp-server does)");
		return;
	}
	if (!r->ws_version || strcmp(r->ws_version, "13") != 0) {
		http__error_extra(hc, 426, "Sec-WebSocket-Version: 13\r\n",
				  "Sec-WebSocket-Version must be 13");
		return;
	}
	if (!r->ws_key || !ws_key_valid(r->ws_key)) {
		http__error(hc, 400, "Sec-WebSocket-Key must be base64 of 16 bytes");
		return;
	}
	char accept[32], extra[80];
	trace_smtp_accept_key(r->ws_key, accept);
	snprintf(extra, sizeof(extra), "Sec-WebSocket-Accept: %s\r\n", accept);
	struct trace_sub *t = xcalloc(1, sizeof(*t));
	t->hc = hc;
	t->side = side;
	t->next = T.subs;
	T.subs = t;
	http__upgrade(hc, extra, t);
}

void trace_smtp__detach(struct http_conn *hc, const char *reason)
{
	for (struct trace_sub **pp = &T.subs; *pp; pp = &(*pp)->next) {
		struct trace_sub *t = *pp;
		if (t->hc != hc)
			continue;
		*pp = t->next;
		KTRACE(http_trace_unsubscribe, hc->id, reason, t->missed);
		cidr_list_free(&t->source_addr);
		cidr_list_free(&t->mx_addr);
		json_decref(t->filters);
		free(t);
		break;
	}
	hc->ws = NULL;
	recompute_active();
}

/* --- sending -------------------------------------------------------------- */

static void ws_send(struct trace_sub *t, enum ws_opcode op, const void *p, size_t n)
{
	uint8_t h[WS_MAX_HEADER];
	size_t k = ws_frame_header(h, op, n, NULL);
	conn_write(&t->hc->conn, h, k);
	conn_write(&t->hc->conn, p, n);
	conn_flush(&t->hc->conn);
}

static void ws_close(struct trace_sub *t, int code, const char *why)
{
	uint8_t p[125];
	size_t n = strnlen(why, sizeof(p) - 2);
	p[0] = (uint8_t)(code >> 8);
	p[1] = (uint8_t)code;
	memcpy(p + 2, why, n);
	ws_send(t, WS_OP_CLOSE, p, n + 2);
	http__close(t->hc, why);
}

static json_t *when_now(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	struct tm tm;
	gmtime_r(&tv.tv_sec, &tm);
	char s[40];
	size_t n = strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(s + n, sizeof(s) - n, ".%06ldZ", (long)tv.tv_usec);
	return json_string(s);
}

/* Sends {"conn_meta", "payload", "when"} (payload stolen); past the
 * backlog limit the event is dropped and counted, and a Diagnostic says
 * how many were missed once the subscriber caught up. */
static void send_event(struct trace_sub *t, json_t *meta, json_t *payload)
{
	struct conn *c = &t->hc->conn;
	if (c->inflight + c->out.len > TRACE_MAX_BACKLOG) {
		t->missed++;
		json_decref(payload);
		return;
	}
	if (t->missed != t->missed_reported) {
		char msg[120];
		snprintf(msg, sizeof(msg), "Tracer lagged behind and missed %llu events",
			 (unsigned long long)(t->missed - t->missed_reported));
		t->missed_reported = t->missed;
		send_event(
		    t, json_null(),
		    json_pack("{s:{s:s, s:s}}", "Diagnostic", "level", "ERROR", "message", msg));
	}
	json_t *ev = json_pack("{s:O, s:o, s:o}", "conn_meta", meta ? meta : json_null(), "payload",
			       payload, "when", when_now());
	char *s = json_dumps(ev, JSON_COMPACT | JSON_ENSURE_ASCII);
	json_decref(ev);
	if (s)
		ws_send(t, WS_OP_TEXT, s, strlen(s));
	free(s);
}

/* --- payloads -------------------------------------------------------------- */

static json_t *lossy(const char *p, size_t n)
{
	struct buf b;
	buf_init(&b);
	buf_append_utf8_lossy(&b, p ? p : "", n);
	json_t *s = json_stringn(b.data ? b.data : "", b.len);
	buf_free(&b);
	return s;
}

static json_t *diag(const char *level, const char *fmt, const char *a, const char *b)
{
	char msg[600];
	snprintf(msg, sizeof(msg), fmt, a ? a : "", b ? b : "");
	json_t *m = lossy(msg, strlen(msg));
	return json_pack("{s:{s:s, s:o}}", "Diagnostic", "level", level, "message", m);
}

static size_t ev_len(const struct smtp_trace_ev *ev)
{
	return ev->len || !ev->text ? ev->len : strlen(ev->text);
}

/* DATA: a snippet (up to the first line end, at most TRACE_SNIPPET bytes)
 * and the size, or everything with data_full. */
static json_t *data_payload(const struct trace_sub *t, const struct smtp_trace_ev *ev,
			    const char *full_key, const char *abbr_key)
{
	size_t n = ev_len(ev), total = ev->code > 0 ? (size_t)ev->code : n;
	if (t->data_full && n == total)
		return json_pack("{s:o}", full_key, lossy(ev->text, n));
	size_t k = 0;
	while (k < n && k < TRACE_SNIPPET && ev->text[k] != '\r' && ev->text[k] != '\n')
		k++;
	return json_pack("{s:{s:o, s:I}}", abbr_key, "snippet", lossy(ev->text, k), "len",
			 (json_int_t)total);
}

static json_t *reply_text(const struct smtp_trace_ev *ev)
{
	struct buf b;
	buf_init(&b);
	size_t n = ev_len(ev);
	const char *p = ev->text ? ev->text : "", *end = p + n;
	do { /* multi-line replies arrive joined with \n */
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *e = nl ? nl : end;
		buf_printf(&b, "%d%c", ev->code, nl ? '-' : ' ');
		if (p == ev->text && ev->enhanced && *ev->enhanced)
			buf_printf(&b, "%s ", ev->enhanced);
		buf_append(&b, p, (size_t)(e - p));
		buf_append(&b, "\r\n", 2);
		p = nl ? nl + 1 : end;
	} while (p < end);
	json_t *s = lossy(b.data, b.len);
	buf_free(&b);
	return s;
}

static json_t *server_payload(const struct trace_sub *t, const struct smtp_trace_ev *ev)
{
	struct buf b;
	switch (ev->kind) {
	case SMTP_TRACE_CONNECTED:
		return json_string("Connected");
	case SMTP_TRACE_READ: {
		buf_init(&b);
		buf_append(&b, ev->text, ev_len(ev));
		buf_append(&b, "\r\n", 2);
		json_t *s = lossy(b.data, b.len);
		buf_free(&b);
		return json_pack("{s:o}", "Read", s);
	}
	case SMTP_TRACE_WRITE: {
		buf_init(&b);
		smtp_reply_format(&b, ev->code, ev->enhanced, ev->text ? ev->text : "");
		json_t *s = lossy(b.data, b.len);
		buf_free(&b);
		return json_pack("{s:o}", "Write", s);
	}
	case SMTP_TRACE_DATA:
		return data_payload(t, ev, "Read", "AbbreviatedRead");
	case SMTP_TRACE_POLICY:
		return json_pack("{s:{s:s, s:n, s:o}}", "Callback", "name", ev->name, "result",
				 "error",
				 strcmp(ev->text, "ok") == 0 ? json_null()
				 : strcmp(ev->text, "reject") == 0
				     ? json_sprintf("rejected with %d", ev->code)
				     : json_string("policy error (see the diagnostic log)"));
	case SMTP_TRACE_MESSAGE: {
		json_t *rc = json_array();
		for (size_t i = 0; i < ev->nrcpts; i++)
			json_array_append_new(rc, lossy(ev->rcpts[i], strlen(ev->rcpts[i])));
		int enq = strcmp(ev->text2, "null") != 0;
		return json_pack("{s:{s:b, s:s, s:s, s:o, s:{}, s:o, s:o, s:s, s:b, s:b}}",
				 "MessageDisposition", "relay", enq, "log_arf", "Ignore", "log_oob",
				 "Ignore", "queue", lossy(ev->text2, strlen(ev->text2)), "meta",
				 "sender", lossy(ev->text, strlen(ev->text)), "recipient", rc, "id",
				 ev->name, "was_arf_or_oob", 0, "will_enqueue", enq);
	}
	default:
		return NULL;
	}
}

/* Payloads both sides share (TLS, AUTH, close). */
static json_t *common_payload(const struct smtp_trace_ev *ev)
{
	char who[300];
	switch (ev->kind) {
	case SMTP_TRACE_TLS:
		return ev->ok ? diag("INFO", "TLS handshake ok: protocol=%s cipher=%s", ev->text,
				     ev->text2)
			      : diag("ERROR", "TLS handshake failed%s: %s", "", ev->text2);
	case SMTP_TRACE_AUTH:
		/* the identity and outcome only: the secret never reaches the hook */
		snprintf(who, sizeof(who), "%s", ev->name ? ev->name : "");
		return diag("INFO", "AUTH %s authn_id=%s", ev->text, who);
	default:
		return NULL;
	}
}

/* --- client conn_meta ----------------------------------------------------------- */

static void strip_port(const char *hostport, char *out, size_t outlen)
{
	const char *s = hostport ? hostport : "";
	size_t n;
	if (*s == '[') {
		s++;
		n = strcspn(s, "]");
	} else {
		const char *colon = strrchr(s, ':');
		n = colon ? (size_t)(colon - s) : strlen(s);
	}
	snprintf(out, outlen, "%.*s", (int)n, s);
}

static json_t *client_meta_get(const struct smtp_trace_ev *ev)
{
	for (struct client_meta *c = T.clients; c; c = c->next)
		if (c->id == ev->session)
			return c->meta;
	if (T.nclients >= TRACE_MAX_CLIENT_SESSIONS)
		return NULL;
	struct client_meta *c = xcalloc(1, sizeof(*c));
	char id[32], rq[512] = "";
	snprintf(id, sizeof(id), "%llu", (unsigned long long)ev->session);
	c->id = ev->session;
	c->meta = json_pack("{s:s}", "id", id);
	struct task *parent = ev->parent_task ? task_lookup(ev->parent_task) : NULL;
	if (parent && parent->name && strcmp(parent->kind, "smtp_dispatcher") == 0) {
		/* the dispatcher task is named after its ready queue */
		snprintf(rq, sizeof(rq), "%s", parent->name);
		json_object_set_new(c->meta, "ready_queue", lossy(rq, strlen(rq)));
		const char *arrow = strstr(rq, "->");
		if (arrow)
			json_object_set_new(c->meta, "egress_source",
					    lossy(rq, (size_t)(arrow - rq)));
	}
	c->next = T.clients;
	T.clients = c;
	T.nclients++;
	return c->meta;
}

static void client_meta_drop(uint64_t id)
{
	for (struct client_meta **pp = &T.clients; *pp; pp = &(*pp)->next) {
		if ((*pp)->id == id) {
			struct client_meta *c = *pp;
			*pp = c->next;
			json_decref(c->meta);
			free(c);
			T.nclients--;
			return;
		}
	}
}

static void client_meta_update(json_t *meta, const struct smtp_trace_ev *ev)
{
	char ip[64];
	if (ev->kind == SMTP_TRACE_CONNECTED || ev->kind == SMTP_TRACE_BEGIN) {
		strip_port(ev->peer, ip, sizeof(ip));
		json_object_set_new(meta, "mx_address", json_string(ip));
	}
	if (ev->kind == SMTP_TRACE_CONNECTED && ev->local && *ev->local) {
		strip_port(ev->local, ip, sizeof(ip));
		json_object_set_new(meta, "source_address", json_string(ip));
	}
	if (ev->kind == SMTP_TRACE_MESSAGE) {
		json_object_set_new(meta, "sender", lossy(ev->text, strlen(ev->text)));
		const char *r = ev->nrcpts ? ev->rcpts[0] : "";
		const char *at = strrchr(r, '@');
		json_object_set_new(meta, "recipient", lossy(r, strlen(r)));
		json_object_set_new(meta, "domain",
				    lossy(at ? at + 1 : "", at ? strlen(at + 1) : 0));
	}
}

static json_t *client_payload(const struct trace_sub *t, const struct smtp_trace_ev *ev)
{
	switch (ev->kind) {
	case SMTP_TRACE_BEGIN:
		return json_string("BeginSession");
	case SMTP_TRACE_CONNECTED:
		return json_string("Connected");
	case SMTP_TRACE_MESSAGE:
		return json_string("MessageObtained");
	case SMTP_TRACE_READ:
		return json_pack("{s:o}", "Read", reply_text(ev));
	case SMTP_TRACE_WRITE:
		if (t->terse && ev_len(ev) > TRACE_SNIPPET)
			return data_payload(t, ev, "Write", "AbbreviatedWrite");
		return json_pack("{s:o}", "Write", lossy(ev->text, ev_len(ev)));
	case SMTP_TRACE_DATA:
		return data_payload(t, ev, "Write", "AbbreviatedWrite");
	default:
		return NULL;
	}
}

/* --- filtering ------------------------------------------------------------------- */

static int meta_addr_in(json_t *meta, const char *key, const struct cidr_list *l)
{
	if (!l->n)
		return 1;
	const char *v = json_string_value(json_object_get(meta, key));
	if (!v)
		return 1; /* not known yet: KumoMTA lets it through */
	char ip[64];
	strip_port(v, ip, sizeof(ip));
	return cidr_list_match_str(l, ip);
}

static int client_wanted(const struct trace_sub *t, json_t *meta)
{
	if (!meta_addr_in(meta, "source_address", &t->source_addr) ||
	    !meta_addr_in(meta, "mx_address", &t->mx_addr))
		return 0;
	const char *key;
	json_t *allowed;
	json_object_foreach(t->filters, key, allowed)
	{
		const char *v = json_string_value(json_object_get(meta, key));
		if (!v)
			continue; /* not known yet */
		size_t i;
		json_t *a;
		int hit = 0;
		json_array_foreach(allowed, i, a)
		{
			if (strcasecmp(json_string_value(a), v) == 0)
				hit = 1;
		}
		if (!hit)
			return 0;
	}
	return 1;
}

static void trace_smtp_sink(const struct smtp_trace_ev *ev, void *arg)
{
	(void)arg;
	json_t *meta = NULL;
	if (ev->side == SMTP_TRACE_CLIENT) {
		meta = client_meta_get(ev);
		if (!meta)
			return;
		client_meta_update(meta, ev);
	} else {
		meta = (json_t *)ev->meta;
	}
	for (struct trace_sub *t = T.subs; t; t = t->next) {
		if (!t->configured || t->side != ev->side)
			continue;
		if (ev->side == SMTP_TRACE_SERVER
			? !meta_addr_in(meta, "received_from", &t->source_addr)
			: !client_wanted(t, meta))
			continue;
		if (ev->kind == SMTP_TRACE_CLOSED) {
			send_event(t, meta, diag("INFO", "closed: %s", ev->text, NULL));
			send_event(t, meta, json_string("Closed"));
			continue;
		}
		json_t *p = common_payload(ev);
		if (!p)
			p = ev->side == SMTP_TRACE_SERVER ? server_payload(t, ev)
							  : client_payload(t, ev);
		if (p)
			send_event(t, meta, p);
	}
	if (ev->side == SMTP_TRACE_CLIENT && ev->kind == SMTP_TRACE_CLOSED)
		client_meta_drop(ev->session);
}

/* --- the request frame -------------------------------------------------------------- */

static int cidrs_from(json_t *v, struct cidr_list *l, char *err, size_t errlen, const char *key)
{
	if (!v || json_is_null(v))
		return 0;
	size_t i;
	json_t *a;
	if (!json_is_array(v))
		goto bad;
	json_array_foreach(v, i, a)
	{
		if (!json_is_string(a) || cidr_list_add(l, json_string_value(a)) != 0)
			goto bad;
	}
	return 0;
bad:
	snprintf(err, errlen, "'%s' must be a list of CIDR strings", key);
	return -1;
}

static int strings_from(json_t *v)
{
	size_t i;
	json_t *a;
	if (!json_is_array(v))
		return 0;
	json_array_foreach(v, i, a)
	{
		if (!json_is_string(a))
			return 0;
	}
	return 1;
}

/* The TraceSmtpV1Request / TraceSmtpClientV1Request; 0 or -1 with err. */
static int configure(struct trace_sub *t, json_t *j, char *err, size_t errlen)
{
	static const char *const server_keys[] = {"source_addr", "terse", "data", NULL};
	static const char *const client_keys[] = {
	    "source_addr", "terse",	     "data",	    "mx_addr",	     "domain",
	    "mail_from",   "rcpt_to",	     "ready_queue", "egress_source", "campaign",
	    "tenant",	   "routing_domain", "egress_pool", "mx_host",	     NULL};
	if (!json_is_object(j)) {
		snprintf(err, errlen, "the first frame must be a JSON object (the trace request)");
		return -1;
	}
	const char *unknown =
	    http_req_json_unknown_key(j, t->side == SMTP_TRACE_SERVER ? server_keys : client_keys);
	if (unknown) {
		snprintf(err, errlen, "unknown field '%s' in the trace request", unknown);
		return -1;
	}
	t->terse = json_is_true(json_object_get(j, "terse"));
	t->data_full = json_is_true(json_object_get(j, "data"));
	if (cidrs_from(json_object_get(j, "source_addr"), &t->source_addr, err, errlen,
		       "source_addr") != 0 ||
	    cidrs_from(json_object_get(j, "mx_addr"), &t->mx_addr, err, errlen, "mx_addr") != 0)
		return -1;
	if (t->side == SMTP_TRACE_SERVER)
		return 0;
	for (size_t i = 0; client_unsupported[i]; i++) {
		json_t *v = json_object_get(j, client_unsupported[i]);
		if (v && json_is_array(v) && json_array_size(v)) {
			snprintf(err, errlen,
				 "filter '%s' is not supported by kumod yet (its client sessions "
				 "do not carry it)",
				 client_unsupported[i]);
			return -1;
		}
	}
	t->filters = json_object();
	for (size_t i = 0; i < sizeof(client_filters) / sizeof(client_filters[0]); i++) {
		json_t *v = json_object_get(j, client_filters[i][1]);
		if (!v || json_is_null(v))
			continue;
		if (!strings_from(v)) {
			snprintf(err, errlen, "'%s' must be a list of strings",
				 client_filters[i][1]);
			return -1;
		}
		if (json_array_size(v))
			json_object_set(t->filters, client_filters[i][0], v);
	}
	return 0;
}

static void on_text(struct trace_sub *t, const uint8_t *p, size_t n)
{
	if (t->configured) { /* KumoMTA: anything after the request ends the session */
		ws_close(t, 1008, "unexpected message after the trace request");
		return;
	}
	json_error_t jerr;
	json_t *j = json_loadb((const char *)p, n, 0, &jerr);
	char err[200];
	if (!j) {
		snprintf(err, sizeof(err), "trace request is not JSON: %s", jerr.text);
	} else if (configure(t, j, err, sizeof(err)) == 0) {
		char *f = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
		KTRACE(http_trace_subscribe, t->hc->id,
		       t->side == SMTP_TRACE_SERVER ? "server" : "client", f ? f : "");
		free(f);
		json_decref(j);
		t->configured = 1;
		recompute_active();
		/* lets a client know from when on events are captured */
		send_event(t, NULL, diag("INFO", "tracing started", NULL, NULL));
		return;
	}
	json_decref(j);
	send_event(t, NULL, diag("ERROR", "%s", err, NULL));
	ws_close(t, 1008, "bad trace request");
}

void trace_smtp__on_data(struct http_conn *hc)
{
	struct buf *in = &hc->conn.in;
	while (hc->ws && !hc->gone && buf_avail(in)) {
		struct trace_sub *t = hc->ws;
		struct ws_frame f;
		uint8_t *p = (uint8_t *)buf_rptr(in);
		long rc = ws_frame_parse(p, buf_avail(in), 1, TRACE_MAX_FRAME, &f);
		if (rc == 0)
			return;
		if (rc < 0) {
			ws_close(t, rc == WS_E_TOO_BIG ? 1009 : 1002, "websocket protocol error");
			return;
		}
		uint8_t *pl = p + f.header_len;
		ws_unmask(pl, (size_t)f.payload_len, f.mask);
		size_t n = (size_t)f.payload_len;
		if (!f.fin || f.opcode == WS_OP_CONT || f.opcode == WS_OP_BINARY)
			ws_close(t, 1003, "only unfragmented text frames are accepted");
		else if (f.opcode == WS_OP_TEXT)
			on_text(t, pl, n);
		else if (f.opcode == WS_OP_PING)
			ws_send(t, WS_OP_PONG, pl, n);
		else if (f.opcode == WS_OP_CLOSE)
			ws_close(t, 1000, "closed by the subscriber");
		buf_consume(in, (size_t)rc);
	}
}
