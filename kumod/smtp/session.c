/* SPDX-License-Identifier: Apache-2.0 */
/* ESMTP server session: the table-driven RFC 5321 state machine. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/ascii.h"
#include "base/base64.h"
#include "base/clock.h"
#include "base/fdlimit.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/memlimit.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "io/loop.h"
#include "ktrace.h"
#include "policy.h"
#include "proto/arf.h"
#include "proto/dsn.h"
#include "proto/rfc5322.h"
#include "proto/sasl.h"
#include "proto/smtp_reply.h"
#include "smtp/server_int.h"
#include "smtp/smtp_trace.h"
#include "queue/queue.h"
#include "spool/logrec.h"
#include "spool/message.h"
#include "spool/spool.h"
#include "spool/timeline.h"

#define SMTP_SOFT_ERRORS 10
#define SMTP_HARD_ERRORS 20
#define SMTP_JUNK_LIMIT 100
#define SMTP_AUTH_MAX_FAILURES 3 /* failed AUTH attempts before 421 and close */
#define SMTP_TARPIT_MS 1000
#define SMTP_DATA_MIN_RATE 500		  /* bytes per second, averaged per client_timeout window */
#define SMTP_DATA_RESERVE_MAX (64u << 10) /* most a SIZE= claim reserves up front */
#define SMTP_DATA_MEM_FLOOR (64u << 10)	  /* DATA below this is never cut for memory */
#define SMTP_SPILL_CHUNK (256u << 10)	  /* streamed DATA is written in pieces of this */
#define SMTP_SHED_INTERVAL_NS 100000000ull
/* Sessions closed (and kept from reopening) when accept() runs out of
 * descriptors, so that the rest of kumod gets some back. */
#define SMTP_FD_GIVEBACK 16

void smtp_listener__maybe_free(struct smtp_listener *l);

static struct smtp_session *sessions;
static size_t nsessions;
static struct smtp_limit_stats limits;
static struct buf discard; /* DATA refused for memory is framed into it */
static uint64_t shed_at_ns;
static size_t fd_cap; /* sessions allowed after accept() ran out of descriptors; 0 = none */

static const char *const state_names[SMTP_STATE__COUNT] = {
    [SMTP_STATE_GREETING] = "Greeting", [SMTP_STATE_HELO] = "Helo",
    [SMTP_STATE_READY] = "Ready",	[SMTP_STATE_MAIL] = "Mail",
    [SMTP_STATE_RCPT] = "Rcpt",		[SMTP_STATE_DATA] = "Data",
    [SMTP_STATE_TLS] = "Tls",		[SMTP_STATE_REJECTED] = "Rejected",
    [SMTP_STATE_SPOOLING] = "Spooling", [SMTP_STATE_CLOSING] = "Closing",
};

static void session_process(struct smtp_session *s);
static void session_restart_idle(struct smtp_session *s);
static void session_close(struct smtp_session *s, const char *reason);
static int session_auth_offered(const struct smtp_session *s);
static void session_auth_forget(struct smtp_session *s);

/* --- replies and state --------------------------------------------------- */

static void session_enter_state(struct smtp_session *s, enum smtp_state st)
{
	if (s->state == st)
		return;
	KTRACE(smtp_state, s->id, state_names[s->state], state_names[st]);
	s->state = st;
	task_set_phase(s->task, state_names[st], st == SMTP_STATE_TLS ? "tls" : "peer_read");
}

static int reply_is_error(int code)
{
	return code == 500 || code == 501 || code == 502 || code == 503 || code == 504 ||
	       code == 555;
}

/* smtp_server_rewrite_response: the handler may replace the code and the
 * text (enhanced code included; LF separates lines). An error or
 * kumo.reject keeps the reply (logged by the engine), as does a change to
 * or from 421, whose connection close kumod does not make on a rewrite. */
static void session_rewrite_response(struct smtp_session *s, int *code, const char **enhanced,
				     char *text, size_t textlen)
{
	char full[700], out[600];
	snprintf(full, sizeof(full), "%s%s%s", *enhanced ? *enhanced : "", *enhanced ? " " : "",
		 text);
	int new_code = 0, new_text = 0;
	struct policy_result r;
	s->rewriting = 1;
	policy_smtp_rewrite_response(*code, full, s->reply_cmd, s->meta, &new_code, out,
				     sizeof(out), &new_text, &r);
	s->rewriting = 0;
	if (r.status != POLICY_OK || (new_code && (new_code == 421) != (*code == 421))) {
		if (r.status == POLICY_OK)
			log_warn("kumod::smtp_server",
				 "session=%" PRIu64
				 " smtp_server_rewrite_response: changing a reply "
				 "to or from 421 is not supported; %d kept",
				 s->id, *code);
		return;
	}
	KTRACE(smtp_reply_rewrite, s->id, *code, new_code ? new_code : *code);
	if (new_code)
		*code = new_code;
	if (new_text) {
		snprintf(text, textlen, "%s", out);
		*enhanced = NULL; /* the new text carries its own, if any */
	}
}

/* Queues one reply. Protocol errors count towards the error limits; past
 * the soft limit the reply is held back (tarpit). */
static void session_reply(struct smtp_session *s, int code, const char *enhanced, const char *fmt,
			  ...) __attribute__((format(printf, 4, 5)));
static void session_reply(struct smtp_session *s, int code, const char *enhanced, const char *fmt,
			  ...)
{
	char text[600];
	va_list ap;
	va_start(ap, fmt);
	if (!strchr(fmt, '%')) { /* most replies are fixed texts */
		size_t n = strnlen(fmt, sizeof(text) - 1);
		memcpy(text, fmt, n);
		text[n] = '\0';
	} else {
		vsnprintf(text, sizeof(text), fmt, ap);
	}
	va_end(ap);
	if (s->rewrite_response && !s->rewriting)
		session_rewrite_response(s, &code, &enhanced, text, sizeof(text));
	KTRACE(smtp_reply, s->id, code, text);
	SMTP_TRACE_SRV(s, .kind = SMTP_TRACE_WRITE, .code = code, .enhanced = enhanced,
		       .text = text);
	smtp_reply_format(&s->conn.out, code, enhanced, text);
	if (reply_is_error(code)) {
		s->errors++;
		if (s->errors > SMTP_SOFT_ERRORS)
			s->tarpit = 1;
	}
}

/* A command line as received (AUTH secrets already replaced): the
 * tracepoint and the smtp_trace hook, whose subscribers are the live
 * transcript (kcli trace-smtp-server) and the session's transcript ring
 * (mail catcher, console). */
static void session_note_cmd(struct smtp_session *s, const char *text, size_t len)
{
	KTRACE(smtp_cmd, s->id, state_names[s->state], text);
	SMTP_TRACE_SRV(s, .kind = SMTP_TRACE_READ, .text = text, .len = len);
}

/* A policy rejection or error: one reply; kumo.reject(421, ...) or a
 * disconnect request also closes the session after it. */
static void session_reply_policy(struct smtp_session *s, const struct policy_result *r)
{
	if (r->status == POLICY_REJECT)
		session_reply(s, r->code, NULL, "%s", r->text);
	else
		session_reply(s, 451, "4.3.0", "policy error; try again later");
	if (r->status == POLICY_REJECT && (r->disconnect || r->code == 421)) {
		if (s->tarpit && s->hold_ms)
			s->close_after_hold = 1; /* kumo.delay_reply: reply late, then close */
		else
			session_close(s, "policy disconnect");
	}
}

static const char *policy_status_name(enum policy_status st)
{
	return st == POLICY_OK ? "ok" : st == POLICY_REJECT ? "reject" : "error";
}

static void session_trace_policy(struct smtp_session *s, const char *event,
				 const struct policy_result *r)
{
	/* a POLICY_ERROR was already logged once by the engine (lua_error); an
	 * event without a handler that let the session go on decided nothing
	 * (the transcript still shows the step) */
	if (r->handlers || r->status != POLICY_OK)
		KTRACE(smtp_policy, s->id, event, policy_status_name(r->status), r->code);
	SMTP_TRACE_SRV(s, .kind = SMTP_TRACE_POLICY, .name = event,
		       .text = policy_status_name(r->status), .code = r->code);
	/* kumo.delay_reply: held like a tarpit, for replies only; the greeting
	 * (session_greet) and the end of data (whose reply may come after the
	 * policy waited: session_process holds it then) need no input loop */
	if (r->delay_ms && strncmp(event, "smtp_server_", 12) == 0 &&
	    ((s->processing &&
	      (!strcmp(event + 12, "ehlo") || !strcmp(event + 12, "mail_from") ||
	       !strcmp(event + 12, "rcpt_to") || !strcmp(event + 12, "data_command"))) ||
	     !strcmp(event + 12, "connection_accepted") || !strcmp(event + 12, "data") ||
	     !strcmp(event + 12, "message_received"))) {
		s->tarpit = 1;
		s->hold_ms = r->delay_ms;
	}
}

/* The DATA buffer in the memory budget: synced after it grew, released
 * when the transaction ends. */
static void session_account_sync(struct smtp_session *s)
{
	size_t cap = (s->msg ? s->msg->data.cap : 0) + s->spill_buf.cap;
	memlimit_account((int64_t)cap - (int64_t)s->rx_accounted);
	s->rx_accounted = cap;
}

static void session_account_release(struct smtp_session *s)
{
	memlimit_account(-(int64_t)s->rx_accounted);
	s->rx_accounted = 0;
}

/* Over the soft memory limit: idle sessions (greeted, no transaction) are
 * closed oldest first, a tenth of the sessions at most per 100 ms. */
static void session_shed_idle(void)
{
	uint64_t now = clock_mono_ns();
	if (now - shed_at_ns < SMTP_SHED_INTERVAL_NS || !sessions)
		return;
	shed_at_ns = now;
	struct smtp_session *s = sessions;
	while (s->next)
		s = s->next; /* sessions are prepended: the tail is the oldest */
	size_t quota = nsessions / 10 + 1;
	for (; s && quota; s = s->prev) {
		if (s->state != SMTP_STATE_HELO && s->state != SMTP_STATE_READY &&
		    s->state != SMTP_STATE_REJECTED)
			continue;
		struct task *prev = task_enter(s->task);
		KTRACE(smtp_limit, s->id, s->conn.peer, "memory_shed_idle");
		session_reply(s, 421, "4.3.2", "%s load shedding; try again later",
			      s->l->cfg.hostname);
		session_close(s, "memory load shedding");
		task_exit(s->task, prev);
		limits.idle_shed++;
		quota--;
	}
}

/* 1 when over the soft memory limit: counted, traced, idle sessions shed. */
static int session_memory_over(struct smtp_session *s, size_t more, const char *what)
{
	if (memlimit_check(more) != MEM_OVER)
		return 0;
	memlimit_count_refusal();
	limits.memory_denied++;
	KTRACE(smtp_limit, s->id, s->conn.peer, what);
	session_shed_idle();
	return 1;
}

static void session_reset_transaction(struct smtp_session *s)
{
	session_account_release(s);
	if (s->msg) {
		message_unref(s->msg);
		s->msg = NULL;
	}
	if (s->state == SMTP_STATE_MAIL || s->state == SMTP_STATE_RCPT ||
	    s->state == SMTP_STATE_DATA)
		session_enter_state(s, SMTP_STATE_READY);
}

/* --- relay decision ------------------------------------------------------ */

/* The domain of addr, ASCII lower-cased into buf: domain names compare
 * case-insensitively (RFC 5321 2.4), so policy events see one spelling. */
static const char *domain_of(const char *addr, char *buf, size_t len)
{
	const char *at = strrchr(addr, '@');
	snprintf(buf, len, "%s", at ? at + 1 : "");
	ascii_lower(buf);
	return buf;
}

static int session_peer_in(struct smtp_session *s, json_t *cidrs)
{
	struct cidr_list l = {0};
	size_t i;
	json_t *v;
	int match = 0;
	json_array_foreach(cidrs, i, v)
	{
		if (json_is_string(v))
			cidr_list_add(&l, json_string_value(v));
	}
	match = cidr_list_match(&l, s->conn.peer_family, s->conn.peer_addr);
	cidr_list_free(&l);
	return match;
}

/* The AUTH identity (authz_id) is one of the listed ones. */
static int session_authz_in(struct smtp_session *s, json_t *ids)
{
	const char *authz = json_string_value(json_object_get(s->meta, "authz_id"));
	size_t i;
	json_t *v;
	if (!s->authenticated || !authz)
		return 0;
	json_array_foreach(ids, i, v)
	{
		if (json_is_string(v) && strcmp(json_string_value(v), authz) == 0)
			return 1;
	}
	return 0;
}

static void listener_domain_free(struct policy_listener_domain *ld)
{
	json_decref(ld->relay_from);
	json_decref(ld->relay_from_authz);
	memset(ld, 0, sizeof(*ld));
}

/* The sender domain's relay_from holds the peer or its relay_from_authz the
 * AUTH identity: 1 yes, 0 no, -1 policy failure (r says why). */
static int session_sender_may_relay(struct smtp_session *s, const char *sender,
				    struct policy_result *r)
{
	struct policy_listener_domain ld = {0};
	char dom[300];
	if (!sender[0])
		return 0;
	policy_get_listener_domain(domain_of(sender, dom, sizeof(dom)), s->l->addr, s->meta, &ld,
				   r);
	session_trace_policy(s, "get_listener_domain", r);
	int ok = r->status == POLICY_OK && ld.found &&
		 ((ld.relay_from && session_peer_in(s, ld.relay_from)) ||
		  (ld.relay_from_authz && session_authz_in(s, ld.relay_from_authz)));
	listener_domain_free(&ld);
	return r->status == POLICY_OK ? ok : -1;
}

/* 1 relay allowed, 0 denied (reply sent), -1 policy failure (reply sent).
 * Allowed for a relay_hosts peer, a recipient domain with relay_to, or a
 * sender domain whose relay_from holds the peer or whose relay_from_authz
 * holds the AUTH identity (KumoMTA's rules); a recipient domain that logs
 * reports (log_arf, log_oob) accepts too, its messages are sorted at the
 * end of data (session_report_disposition). */
static int session_relay_check(struct smtp_session *s, const char *rcpt, int postmaster,
			       const char *local, size_t local_len)
{
	if (s->relay_peer || postmaster)
		return 1;
	/* Routing tricks never grant anything to an untrusted peer. */
	if (memchr(local, '%', local_len) || memchr(local, '!', local_len) ||
	    memchr(local, '@', local_len)) {
		session_reply(s, 550, "5.7.1", "relaying not permitted for %s", s->conn.peer_ip);
		return 0;
	}
	struct policy_listener_domain ld = {0};
	struct policy_result r = {0};
	char dom[300];
	policy_get_listener_domain(domain_of(rcpt, dom, sizeof(dom)), s->l->addr, s->meta, &ld, &r);
	session_trace_policy(s, "get_listener_domain", &r);
	int ok = r.status == POLICY_OK && ld.found && (ld.relay_to || ld.log_arf || ld.log_oob);
	listener_domain_free(&ld);
	if (r.status == POLICY_OK && !ok)
		ok = session_sender_may_relay(s, s->msg->sender, &r) == 1;
	if (r.status != POLICY_OK) {
		session_reply_policy(s, &r);
		return -1;
	}
	if (!ok)
		session_reply(s, 550, "5.7.1", "relaying not permitted for %s", s->conn.peer_ip);
	return ok;
}

/* --- commands ------------------------------------------------------------ */

/* EHLO's or HELO's reply once smtp_server_ehlo answered r; ext is the
 * extension list to advertise (EHLO), consumed. */
static void helo_reply(struct smtp_session *s, const struct policy_result *r, const char *domain,
		       json_t *ext)
{
	int esmtp = ext != NULL;
	session_trace_policy(s, "smtp_server_ehlo", r);
	if (r->status != POLICY_OK) {
		json_decref(ext);
		session_reply_policy(s, r);
		return;
	}
	session_reset_transaction(s);
	free(s->helo);
	s->helo = xstrdup(domain);
	json_object_set_new(s->meta, "ehlo_domain", json_string(domain));
	s->esmtp = esmtp;
	session_enter_state(s, SMTP_STATE_READY);
	if (!s->esmtp) {
		session_reply(s, 250, NULL, "Hello %s!", domain);
		return;
	}
	struct buf text;
	buf_init(&text);
	buf_printf(&text, "%s Aloha %s", s->l->cfg.hostname, domain);
	size_t i;
	json_t *e;
	json_array_foreach(ext, i, e)
	{
		buf_printf(&text, "\n%s", json_string_value(e));
	}
	json_decref(ext);
	session_reply(s, 250, NULL, "%s", buf_cstr(&text));
	buf_free(&text);
}

static void cmd_policy_done(void *arg, const struct policy_result *r);

/* A command's handler waits. Input already buffered behind the command
 * stops reading (it is answered after it, even if the client then
 * half-closed); with none, reading goes on, so that a client closing
 * meanwhile abandons the call (session_on_data stops at the first bytes). */
static void session_wait_command(struct smtp_session *s, const char *event)
{
	if (buf_avail(&s->conn.in))
		conn_pause_read(&s->conn);
	task_set_phase(s->task, event, "policy");
}

/* smtp_server_ehlo; its handler may wait (kumo.dns, kumo.http, a Redis
 * throttle): the reply is sent when it returns, as for MAIL and RCPT. */
static void cmd_helo(struct smtp_session *s, struct smtp_cmd *cmd)
{
	char domain[300];
	snprintf(domain, sizeof(domain), "%.*s", (int)cmd->arg.len, cmd->arg.p);
	/* the extensions, as KumoMTA passes them to smtp_server_ehlo */
	json_t *ext = NULL;
	if (cmd->verb == SMTP_VERB_EHLO) {
		char size[40];
		snprintf(size, sizeof(size), "SIZE %zu", s->l->cfg.max_message_size);
		ext = json_pack("[s, s, s, s, s]", "PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME",
				"SMTPUTF8", size);
		if (s->conn.tls == CONN_TLS_NONE && s->l->tls_ctx)
			json_array_append_new(ext, json_string("STARTTLS"));
		if (session_auth_offered(s))
			json_array_append_new(ext, json_string("AUTH PLAIN LOGIN"));
	}
	struct policy_result r = {0};
	char *wait_domain = xstrdup(domain); /* the call may keep it */
	if (policy_smtp_ehlo_async(wait_domain, s->meta, ext, &r, cmd_policy_done,
				   (void *)(uintptr_t)s->id, &s->cmd_call)) {
		s->wait_verb = cmd->verb;
		s->wait_sender = wait_domain;
		s->wait_ext = ext;
		session_wait_command(s, "smtp_server_ehlo");
		return;
	}
	free(wait_domain);
	helo_reply(s, &r, domain, ext);
}

/* MAIL's reply once smtp_server_mail_from answered r. */
static void mail_reply(struct smtp_session *s, const struct policy_result *r, const char *sender,
		       uint64_t size_hint, int smtputf8)
{
	session_trace_policy(s, "smtp_server_mail_from", r);
	if (r->status != POLICY_OK) {
		session_reply_policy(s, r);
		return;
	}
	s->msg = message_new();
	message_set_sender(s->msg, sender);
	s->size_hint = size_hint;
	s->txn_smtputf8 = smtputf8;
	session_enter_state(s, SMTP_STATE_MAIL);
	session_reply(s, 250, NULL, "OK");
}

static void rcpt_reply(struct smtp_session *s, const struct policy_result *r, const char *rcpt);

/* A waiting smtp_server_ehlo, _mail_from or _rcpt_to handler finished: the
 * reply, then the input that waited behind it (pipelined commands), in
 * order. */
static void cmd_policy_done(void *arg, const struct policy_result *r)
{
	uint64_t id = (uint64_t)(uintptr_t)arg;
	struct smtp_session *s = sessions;
	while (s && s->id != id)
		s = s->next;
	if (!s || !s->cmd_call || s->processing)
		panic("%s: session %" PRIu64 " is not waiting for a command", __func__, id);
	struct task *prev = task_enter(s->task);
	task_wake(s->task);
	s->cmd_call = 0;
	task_set_phase(s->task, state_names[s->state], "peer_read");
	s->processing = 1; /* as inside the input loop (kumo.delay_reply holds the reply) */
	if (s->wait_verb == SMTP_VERB_EHLO || s->wait_verb == SMTP_VERB_HELO) {
		json_t *ext = s->wait_ext;
		s->wait_ext = NULL;
		helo_reply(s, r, s->wait_sender, ext);
	} else if (s->wait_verb == SMTP_VERB_RCPT) {
		rcpt_reply(s, r, s->wait_sender);
	} else {
		mail_reply(s, r, s->wait_sender, s->wait_size_hint, s->wait_smtputf8);
	}
	s->processing = 0;
	free(s->wait_sender);
	s->wait_sender = NULL;
	conn_resume_read(&s->conn);
	session_restart_idle(s);
	session_process(s);
	task_exit(s->task, prev);
}

static void cmd_mail(struct smtp_session *s, struct smtp_cmd *cmd)
{
	if (s->messages >= s->l->cfg.max_messages_per_connection) {
		KTRACE(smtp_limit, s->id, s->conn.peer, "max_messages_per_connection");
		session_reply(s, 451, "4.5.3", "too many messages on this connection");
		return;
	}
	if (cmd->has_size && cmd->size > s->l->cfg.max_message_size) {
		session_reply(s, 552, "5.3.4", "message too big");
		return;
	}
	char sender[1100];
	smtp_mailbox_format(&cmd->path, sender, sizeof(sender));
	struct policy_result r = {0};
	char *wait_sender = xstrdup(sender); /* the call may keep it */
	if (policy_smtp_mail_from_async(wait_sender, s->meta, &r, cmd_policy_done,
					(void *)(uintptr_t)s->id, &s->cmd_call)) {
		s->wait_verb = SMTP_VERB_MAIL;
		s->wait_sender = wait_sender;
		s->wait_size_hint = cmd->has_size ? cmd->size : 0;
		s->wait_smtputf8 = cmd->smtputf8;
		session_wait_command(s, "smtp_server_mail_from");
		return;
	}
	free(wait_sender);
	mail_reply(s, &r, sender, cmd->has_size ? cmd->size : 0, cmd->smtputf8);
}

static void cmd_rcpt(struct smtp_session *s, struct smtp_cmd *cmd)
{
	if (s->msg->nrecipients >= s->l->cfg.max_recipients_per_message) {
		KTRACE(smtp_limit, s->id, s->conn.peer, "max_recipients_per_message");
		session_reply(s, 452, "4.5.3", "too many recipients");
		return;
	}
	struct smtp_reply_err err = {0};
	if (smtp_cmd_check_utf8(cmd, s->txn_smtputf8, &err) != 0) {
		session_reply(s, err.code, err.enhanced, "%s", err.text);
		return;
	}
	char rcpt[1100];
	smtp_mailbox_format(&cmd->path, rcpt, sizeof(rcpt));
	if (session_relay_check(s, rcpt, cmd->path.postmaster, cmd->path.local.p,
				cmd->path.local.len) != 1)
		return;
	struct policy_result r = {0};
	char *wait_rcpt = xstrdup(rcpt); /* the call may keep it */
	if (policy_smtp_rcpt_to_async(wait_rcpt, s->meta, &r, cmd_policy_done,
				      (void *)(uintptr_t)s->id, &s->cmd_call)) {
		s->wait_verb = SMTP_VERB_RCPT;
		s->wait_sender = wait_rcpt;
		session_wait_command(s, "smtp_server_rcpt_to");
		return;
	}
	free(wait_rcpt);
	rcpt_reply(s, &r, rcpt);
}

/* RCPT's reply once smtp_server_rcpt_to answered r. */
static void rcpt_reply(struct smtp_session *s, const struct policy_result *r, const char *rcpt)
{
	session_trace_policy(s, "smtp_server_rcpt_to", r);
	if (r->status != POLICY_OK) {
		session_reply_policy(s, r);
		return;
	}
	message_add_recipient(s->msg, rcpt);
	session_enter_state(s, SMTP_STATE_RCPT);
	session_reply(s, 250, NULL, "OK");
}

static void cmd_data(struct smtp_session *s, struct smtp_cmd *cmd)
{
	const struct smtp_listener_config *cfg = &s->l->cfg;
	/* Over the memory budget nothing new is taken in (docs/limits.md). */
	if (session_memory_over(s, 0, "memory_soft_limit")) {
		session_reply(s, 451, "4.3.1", "insufficient system memory; try again later");
		return;
	}
	/* The spool's file system is below define_spool's min_free_space or
	 * min_free_inodes (checked at most once a second). */
	if (spool_space_check(NULL, 0) < 0) {
		limits.disk_denied++;
		KTRACE(smtp_limit, s->id, s->conn.peer, "min_free_space");
		session_reply(s, 452, "4.3.1", "insufficient system storage; try again later");
		return;
	}
	struct policy_result r = {0};
	policy_smtp_data_command(s->meta, &r);
	session_trace_policy(s, "smtp_server_data_command", &r);
	if (r.status != POLICY_OK) {
		session_reply_policy(s, &r);
		return;
	}
	smtp_data_framer_init(&s->df, cfg->invalid_line_endings, cfg->max_message_size,
			      cfg->line_length_hard_limit);
	buf_reset(&s->msg->data);
	s->data_refused = NULL;
	s->spill_skip = 0;
	/* One allocation for most messages instead of doubling from 256 bytes:
	 * the declared SIZE plus room for our trace headers, else 8 KiB; at most
	 * 64 KiB up front, so a SIZE claim alone cannot make sessions hold much. */
	uint64_t hint = s->size_hint ? s->size_hint + 2048 : 8192;
	if (buf_try_reserve(
		&s->msg->data,
		(size_t)(hint < SMTP_DATA_RESERVE_MAX ? hint : SMTP_DATA_RESERVE_MAX)) != 0) {
		KTRACE(smtp_limit, s->id, s->conn.peer, "allocation_failed");
		session_reply(s, 451, "4.3.1", "insufficient system memory; try again later");
		return;
	}
	session_account_sync(s);
	s->data_started_ns = clock_mono_ns();
	s->data_window_bytes = 0;
	session_enter_state(s, SMTP_STATE_DATA);
	s->conn.bulk_input = 1; /* body reads do not extend busy polling */
	session_reply(s, 354, NULL, "Send body; end with CRLF.CRLF");
}

static void cmd_rset(struct smtp_session *s, struct smtp_cmd *cmd)
{
	session_reset_transaction(s);
	session_reply(s, 250, NULL, "Reset state");
}

static void cmd_noop(struct smtp_session *s, struct smtp_cmd *cmd)
{
	session_reply(s, 250, NULL, "the goggles do nothing");
}

static void cmd_quit(struct smtp_session *s, struct smtp_cmd *cmd)
{
	session_reply(s, 221, NULL, "So long, and thanks for all the fish!");
	session_close(s, "quit");
}

static void cmd_vrfy(struct smtp_session *s, struct smtp_cmd *cmd)
{
	session_reply(s, 252, "2.1.5",
		      "Cannot VRFY user, but will accept message and attempt delivery");
}

static void cmd_help(struct smtp_session *s, struct smtp_cmd *cmd)
{
	session_reply(s, 214, "2.0.0",
		      "Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS");
}

static void cmd_unimplemented(struct smtp_session *s, struct smtp_cmd *cmd)
{
	session_reply(s, 502, "5.5.1", "Command unimplemented");
}

static void cmd_starttls(struct smtp_session *s, struct smtp_cmd *cmd)
{
	if (s->conn.tls != CONN_TLS_NONE) {
		session_reply(s, 501, "5.5.1", "Cannot STARTTLS as TLS is already active");
		return;
	}
	if (!s->l->tls_ctx) {
		session_reply(s, 454, "4.7.0", "TLS not available");
		return;
	}
	session_reply(s, 220, "2.0.0", "Ready to Start TLS");
	/* Everything the client knew is forgotten: it must EHLO again. */
	session_reset_transaction(s);
	xfree(s->helo);
	s->esmtp = 0;
	session_auth_forget(s);
	s->authenticated = 0;
	session_enter_state(s, SMTP_STATE_TLS);
	size_t dropped = conn_starttls_server(&s->conn, s->l->tls_ctx);
	KTRACE(smtp_starttls, s->id, dropped);
	if (dropped) {
		KTRACE(smtp_tls_injection, s->id, s->conn.peer, dropped);
		log_warn("kumod::smtp_server",
			 "session=%" PRIu64
			 " peer=%s discarded %zu plaintext bytes sent after STARTTLS",
			 s->id, s->conn.peer, dropped);
	}
}

/* --- AUTH (RFC 4954) ----------------------------------------------------- */

/* AUTH is offered over TLS (or, with the listener's auth_without_tls, in
 * plaintext) when the policy can decide: an smtp_server_auth_plain handler. */
static int session_auth_offered(const struct smtp_session *s)
{
	return (s->conn.tls == CONN_TLS_ACTIVE || s->l->cfg.auth_without_tls) &&
	       policy_has_handler("smtp_server_auth_plain");
}

static void session_auth_forget(struct smtp_session *s)
{
	if (s->auth_login_user) {
		explicit_bzero(s->auth_login_user, strlen(s->auth_login_user));
		free(s->auth_login_user);
		s->auth_login_user = NULL;
	}
	s->auth_step = AUTH_NONE;
}

/* Asks the policy: 235 and the identities in conn_meta, or 535 / 454 / the
 * policy's rejection. Each failure counts an error; the third closes. */
static void session_auth_decide(struct smtp_session *s, const char *mech, const char *authz,
				const char *authc, const char *password)
{
	int ok = 0;
	struct policy_result r = {0};
	policy_smtp_auth_plain(authz, authc, password, s->meta, &ok, &r);
	session_trace_policy(s, "smtp_server_auth_plain", &r);
	const char *result = r.status == POLICY_ERROR ? "error" : ok ? "ok" : "denied";
	KTRACE(smtp_auth, s->id, mech, authc, authz, result);
	SMTP_TRACE_SRV(s, .kind = SMTP_TRACE_AUTH, .text = mech, .text2 = result, .name = authc);
	metrics_counter_add("smtp_server_auth_total", "result", result, 1);
	if (r.status == POLICY_OK && ok) {
		s->authenticated = 1;
		json_object_set_new(s->meta, "authn_id", json_string(authc));
		json_object_set_new(s->meta, "authz_id", json_string(*authz ? authz : authc));
		session_reply(s, 235, "2.7.0", "Authentication successful");
		return;
	}
	s->auth_failures++;
	s->errors++; /* past the soft error limit replies are tarpitted */
	if (r.status == POLICY_REJECT)
		session_reply_policy(s, &r);
	else if (r.status == POLICY_ERROR)
		session_reply(s, 454, "4.7.0", "Temporary authentication failure");
	else
		session_reply(s, 535, "5.7.8", "Authentication credentials invalid");
	if (s->auth_failures >= SMTP_AUTH_MAX_FAILURES && s->state != SMTP_STATE_CLOSING) {
		KTRACE(smtp_limit, s->id, s->conn.peer, "authentication failures");
		session_reply(s, 421, "4.7.0", "%s too many authentication failures",
			      s->l->cfg.hostname);
		session_close(s, "too many authentication failures");
	}
}

/* authzid NUL authcid NUL passwd (RFC 4616). */
static void session_auth_plain(struct smtp_session *s, const char *b64, size_t n)
{
	char buf[1024];
	const char *authz, *authc, *pass;
	enum sasl_plain_status st =
	    sasl_plain_decode(b64, n, buf, sizeof(buf), &authz, &authc, &pass);
	if (st == SASL_PLAIN_BAD_BASE64)
		session_reply(s, 501, "5.5.2", "Invalid base64 in AUTH response");
	else if (st == SASL_PLAIN_MALFORMED)
		session_reply(s, 501, "5.5.2", "Malformed AUTH PLAIN response");
	else
		session_auth_decide(s, "PLAIN", authz, authc, pass);
	explicit_bzero(buf, sizeof(buf));
}

static void session_auth_login_user(struct smtp_session *s, const char *b64, size_t n)
{
	char user[600];
	long len = sasl_response_decode(b64, n, user, sizeof(user));
	if (len <= 0 || memchr(user, 0, (size_t)len) || !sasl_identity_ok(user, (size_t)len)) {
		session_reply(s, 501, "5.5.2", "Invalid AUTH LOGIN user name");
		return;
	}
	s->auth_login_user = xstrdup(user);
	s->auth_step = AUTH_LOGIN_PASS;
	session_reply(s, 334, NULL, "UGFzc3dvcmQ6"); /* "Password:" */
}

/* The client's line after a 334: never a command, never traced. */
static void session_auth_continue(struct smtp_session *s, const char *line, size_t n)
{
	int step = s->auth_step;
	s->auth_step = AUTH_NONE;
	if (n == 1 && line[0] == '*') {
		session_auth_forget(s);
		session_reply(s, 501, "5.0.0", "Authentication cancelled");
		return;
	}
	if (step == AUTH_PLAIN_WAIT) {
		session_auth_plain(s, line, n);
	} else if (step == AUTH_LOGIN_USER) {
		session_auth_login_user(s, line, n);
	} else {
		char pass[600];
		long len = sasl_response_decode(line, n, pass, sizeof(pass));
		if (len < 0 || memchr(pass, 0, (size_t)len))
			session_reply(s, 501, "5.5.2", "Invalid base64 in AUTH response");
		else
			session_auth_decide(s, "LOGIN", "", s->auth_login_user, pass);
		explicit_bzero(pass, sizeof(pass));
		session_auth_forget(s);
	}
}

static void cmd_auth(struct smtp_session *s, struct smtp_cmd *cmd)
{
	if (s->authenticated) {
		session_reply(s, 503, "5.5.1", "Already authenticated");
		return;
	}
	if (!policy_has_handler("smtp_server_auth_plain")) {
		session_reply(s, 502, "5.5.1", "AUTH not available");
		return;
	}
	if (s->conn.tls != CONN_TLS_ACTIVE && !s->l->cfg.auth_without_tls) {
		session_reply(s, 538, "5.7.11",
			      "Encryption required for requested authentication mechanism");
		return;
	}
	const char *arg = cmd->arg.p;
	size_t len = cmd->arg.len, ml = 0;
	while (ml < len && arg[ml] != ' ')
		ml++;
	const char *resp = ml < len ? arg + ml + 1 : NULL;
	size_t rlen = resp ? len - ml - 1 : 0;
	if (ml == 5 && strncasecmp(arg, "PLAIN", 5) == 0) {
		if (resp) {
			session_auth_plain(s, resp, rlen);
		} else {
			s->auth_step = AUTH_PLAIN_WAIT;
			session_reply(s, 334, NULL, " ");
		}
	} else if (ml == 5 && strncasecmp(arg, "LOGIN", 5) == 0) {
		if (resp) {
			session_auth_login_user(s, resp, rlen);
		} else {
			s->auth_step = AUTH_LOGIN_USER;
			session_reply(s, 334, NULL, "VXNlcm5hbWU6"); /* "Username:" */
		}
	} else {
		session_reply(s, 504, "5.5.4", "AUTH %.*s not supported", (int)(ml < 40 ? ml : 40),
			      arg);
	}
}

/* Command table: allowed states, flags and handler. */
enum {
	CMD_GROUP_END = 1, /* ends a pipelining group: nothing may follow it in the batch */
	CMD_JUNK = 2,	   /* no progress: counted against the junk limit */
};
#define ST(x) (1u << SMTP_STATE_##x)
#define ST_ANY (ST(HELO) | ST(READY) | ST(MAIL) | ST(RCPT))

struct smtp_command {
	unsigned states;
	unsigned flags;
	const char *bad_seq; /* 503 text when the state does not allow it */
	void (*proceed)(struct smtp_session *s, struct smtp_cmd *cmd);
};

static const struct smtp_command commands[SMTP_VERB__COUNT] = {
    [SMTP_VERB_HELO] = {ST_ANY, CMD_GROUP_END, NULL, cmd_helo},
    [SMTP_VERB_EHLO] = {ST_ANY, CMD_GROUP_END, NULL, cmd_helo},
    [SMTP_VERB_MAIL] = {ST(READY), 0, "MAIL FROM already issued; you must RSET first", cmd_mail},
    [SMTP_VERB_RCPT] = {ST(MAIL) | ST(RCPT), 0, "need MAIL first", cmd_rcpt},
    [SMTP_VERB_DATA] = {ST(RCPT), CMD_GROUP_END, "need RCPT first", cmd_data},
    [SMTP_VERB_RSET] = {ST_ANY, CMD_JUNK, NULL, cmd_rset},
    [SMTP_VERB_NOOP] = {ST_ANY, CMD_GROUP_END | CMD_JUNK, NULL, cmd_noop},
    [SMTP_VERB_QUIT] = {ST_ANY | ST(REJECTED), 0, NULL, cmd_quit},
    [SMTP_VERB_VRFY] = {ST_ANY, CMD_GROUP_END | CMD_JUNK, NULL, cmd_vrfy},
    [SMTP_VERB_EXPN] = {ST_ANY, CMD_GROUP_END | CMD_JUNK, NULL, cmd_unimplemented},
    [SMTP_VERB_HELP] = {ST_ANY, CMD_GROUP_END | CMD_JUNK, NULL, cmd_help},
    [SMTP_VERB_STARTTLS] = {ST(READY), CMD_GROUP_END, "STARTTLS not allowed here", cmd_starttls},
    [SMTP_VERB_AUTH] = {ST(READY), CMD_GROUP_END, "AUTH not allowed here", cmd_auth},
    [SMTP_VERB_BDAT] = {ST_ANY, CMD_GROUP_END, NULL, cmd_unimplemented},
    [SMTP_VERB_XCLIENT] = {ST_ANY, CMD_GROUP_END, NULL, cmd_unimplemented},
    [SMTP_VERB_LHLO] = {ST_ANY, CMD_GROUP_END, NULL, cmd_unimplemented},
};

static const char *bad_sequence_text(struct smtp_session *s, enum smtp_verb verb)
{
	if (s->state == SMTP_STATE_REJECTED)
		return "service refused; only QUIT is accepted";
	if (s->state == SMTP_STATE_HELO && verb != SMTP_VERB_QUIT)
		return "send EHLO or HELO first";
	if (verb == SMTP_VERB_MAIL && s->state != SMTP_STATE_READY)
		return "MAIL FROM already issued; you must RSET first";
	if (verb == SMTP_VERB_DATA && s->state == SMTP_STATE_MAIL)
		return "no valid recipients";
	return commands[verb].bad_seq ? commands[verb].bad_seq : "bad sequence of commands";
}

/* A group-ending command with input already buffered behind it breaks the
 * pipelining synchronisation point (RFC 2920 §3.1): 554 and close, before any
 * state check, so content pipelined after a refused DATA never runs as
 * commands. STARTTLS that will proceed is exempt: cmd_starttls discards the
 * buffered plaintext (response injection) instead. */
static int session_sync_violation(struct smtp_session *s, const struct smtp_command *c,
				  enum smtp_verb verb)
{
	if (!c || !(c->flags & CMD_GROUP_END) || verb == SMTP_VERB_QUIT || !buf_avail(&s->conn.in))
		return 0;
	if (verb == SMTP_VERB_STARTTLS && (c->states & (1u << s->state)))
		return 0;
	KTRACE(smtp_sync_violation, s->id, s->conn.peer, smtp_verb_name(verb),
	       (uint64_t)buf_avail(&s->conn.in));
	log_warn("kumod::smtp_server",
		 "session=%" PRIu64
		 " peer=%s pipelining sync violation after %s: %zu bytes buffered",
		 s->id, s->conn.peer, smtp_verb_name(verb), buf_avail(&s->conn.in));
	session_reply(s, 554, "5.5.0", "Error: SMTP protocol synchronization");
	session_close(s, "pipelining sync violation");
	return 1;
}

static void session_command(struct smtp_session *s, const char *line, size_t len)
{
	struct smtp_cmd cmd;
	struct smtp_reply_err err = {0};
	memset(&cmd, 0, sizeof(cmd));
	int rc = smtp_cmd_parse(line, len, &cmd, &err);
	const struct smtp_command *c = cmd.verb ? &commands[cmd.verb] : NULL;
	s->reply_cmd = cmd.verb == SMTP_VERB_AUTH ? "AUTH" : s->line;
	if (session_sync_violation(s, c, cmd.verb))
		return;
	if (c && c->proceed && !(c->states & (1u << s->state))) {
		session_reply(s, 503, s->state == SMTP_STATE_MAIL ? "5.5.0" : "5.5.1", "%s",
			      bad_sequence_text(s, cmd.verb));
		return;
	}
	if (rc != 0) {
		session_reply(s, err.code, err.enhanced, "%s", err.text);
		return;
	}
	if (!c || !c->proceed) {
		session_reply(s, 500, "5.5.1", "Command unrecognized");
		return;
	}
	/* Commands that make no progress: past the junk limit each one is an
	 * error, and errors past the soft limit are tarpitted. */
	if ((c->flags & CMD_JUNK) && ++s->junk > SMTP_JUNK_LIMIT) {
		s->errors++;
		if (s->errors > SMTP_SOFT_ERRORS)
			s->tarpit = 1;
	}
	c->proceed(s, &cmd);
}

/* --- end of data --------------------------------------------------------- */

static void neuter(char *dst, size_t cap, const char *src)
{
	size_t j = 0;
	for (; *src && j + 1 < cap; src++) {
		unsigned char ch = (unsigned char)*src;
		dst[j++] =
		    (ch < 33 || ch > 126 || ch == '(' || ch == ')' || ch == ';') ? '_' : (char)ch;
	}
	dst[j] = 0;
}

/* The X-KumoRef JSON, as json_dumps(JSON_COMPACT) writes it ("recipient"
 * is an array for a batch); a single address that needs no escaping (the
 * usual case) skips building a JSON object. */
static char *trace_header_json(const struct message *m, const struct smtp_listener_config *cfg)
{
	/* KumoMTA's marker: its feedback-report parser looks for it */
	static const char head[] = "{\"_@_\":\"\\\\_/\",\"recipient\":\"";
	const char *rcpt = m->recipients[0];
	const char *p = rcpt;
	while (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\')
		p++;
	if (*p || m->nrecipients > 1 || cfg->ntrace_meta_names) {
		json_t *r;
		if (m->nrecipients > 1) {
			r = json_array();
			for (size_t i = 0; i < m->nrecipients; i++)
				json_array_append_new(r, json_string(m->recipients[i]));
		} else {
			r = json_string(rcpt);
		}
		json_t *j = json_pack("{s:s, s:o*}", "_@_", "\\_/", "recipient", r);
		/* include_meta_names: the listed meta values the message has */
		for (size_t i = 0; j && i < cfg->ntrace_meta_names; i++) {
			json_t *v = message_get_meta(m, cfg->trace_meta_names[i]);
			if (v)
				json_object_set(j, cfg->trace_meta_names[i], v);
		}
		char *js = j ? json_dumps(j, JSON_COMPACT) : NULL;
		json_decref(j);
		if (js)
			return js;
		rcpt = ""; /* not UTF-8: cannot happen for an accepted RCPT */
	}
	size_t hl = sizeof(head) - 1, rl = strlen(rcpt);
	char *js = xmalloc(hl + rl + 3);
	memcpy(js, head, hl);
	memcpy(js + hl, rcpt, rl);
	memcpy(js + hl + rl, "\"}", 3);
	return js;
}

/* RFC 5322 date for the Received header, formatted once per second. */
static const char *received_date(void)
{
	static time_t cached_at = (time_t)-1;
	static char cached[64];
	time_t now = time(NULL);
	if (now != cached_at) {
		rfc5322_format_date(now, cached, sizeof(cached));
		cached_at = now;
	}
	return cached;
}

/* The "with" protocol (RFC 3848, RFC 6531 4.3). */
static const char *received_with(int esmtp, int smtputf8, int tls, int auth)
{
	/* RFC 3848 and RFC 6531 4.3: S for TLS, A for an authenticated client */
	static const char *const with[2][2][2] = {
	    {{"ESMTP", "ESMTPA"}, {"ESMTPS", "ESMTPSA"}},
	    {{"UTF8SMTP", "UTF8SMTPA"}, {"UTF8SMTPS", "UTF8SMTPSA"}},
	};
	if (!esmtp)
		return "SMTP";
	return with[!!smtputf8][!!tls][!!auth];
}

static void session_add_trace_headers(struct smtp_session *s, struct message *m)
{
	const struct smtp_listener_config *cfg = &s->l->cfg;
	const char *names[2], *values[2];
	size_t n = 0;
	char *js = NULL;
	struct buf b64;
	char value[1024];
	buf_init(&b64);
	/* Received goes above X-KumoRef, as when each is prepended in turn. */
	if (cfg->received_header) {
		char helo[256];
		neuter(helo, sizeof(helo), s->helo ? s->helo : "unknown");
		/* RFC 5321 4.4: the "for" clause names a single recipient only */
		char forc[600] = "";
		if (m->nrecipients == 1)
			snprintf(forc, sizeof(forc), " for <%s>", m->recipients[0]);
		/* RFC 5321 4.4 TCP-info is an address literal; the TLS facts
		 * go in a comment as Postfix writes them */
		int tls = s->conn.tls == CONN_TLS_ACTIVE;
		char tlsc[200] = "";
		if (tls)
			snprintf(tlsc, sizeof(tlsc), " (using %s with cipher %s)",
				 conn_tls_version(&s->conn), conn_tls_cipher(&s->conn));
		snprintf(
		    value, sizeof(value), "from %s ([%s%s])%s by %s (KumoMTA) with %s id %s%s; %s",
		    helo, strchr(s->conn.peer_ip, ':') ? "IPv6:" : "", s->conn.peer_ip, tlsc,
		    cfg->hostname, received_with(s->esmtp, s->txn_smtputf8, tls, s->authenticated),
		    m->id, forc, received_date());
		names[n] = "Received";
		values[n++] = value;
	}
	if (cfg->supplemental_header && cfg->trace_header_name && !cfg->ntrace_meta_names) {
		js = trace_header_json(m, cfg);
		base64_encode(&b64, js, strlen(js));
		names[n] = cfg->trace_header_name;
		values[n++] = buf_cstr(&b64);
	}
	if (n)
		message_prepend_headers(m, n, names, values); /* one move of the body */
	buf_free(&b64);
	free(js);
}

/* With include_meta_names the supplemental header carries meta values the
 * policy sets, so it is added after smtp_server_message_received (as
 * KumoMTA does; without names it goes in with Received: one body move). */
static void session_add_supplemental_header(struct smtp_session *s, struct message *m)
{
	const struct smtp_listener_config *cfg = &s->l->cfg;
	if (!cfg->supplemental_header || !cfg->trace_header_name || !cfg->ntrace_meta_names)
		return;
	char *js = trace_header_json(m, cfg);
	struct buf b64;
	buf_init(&b64);
	base64_encode(&b64, js, strlen(js));
	message_prepend_header(m, cfg->trace_header_name, buf_cstr(&b64));
	buf_free(&b64);
	free(js);
}

/* A transaction whose messages are being made durable: the reply waits for
 * the spool (R1: 250 only after data and meta are durable). Outlives the
 * session if the client goes away meanwhile: what was stored is delivered. */
struct smtp_rx_report {
	json_t *arf, *dsn; /* the parsed report a log_arf/log_oob domain logs, or NULL */
};
struct smtp_rx_txn {
	struct smtp_session *s; /* NULL once the session closed */
	struct message **msgs;
	struct smtp_rx_report *rep; /* per message in msgs */
	struct message **dropped;   /* accepted, logged, not queued (LogThenDrop) */
	struct smtp_rx_report *drep;
	size_t n, pending, ndropped;
	int err; /* first spool error (-errno) */
	struct buf ids;
	char peer_ip[64], helo[256];
	char tls_version[32], tls_cipher[128]; /* "" without TLS */
	uint64_t started_ns;
	/* smtp_server_message_received, group by group (it may wait) */
	struct message *tx;	   /* the transaction as received */
	size_t *group;		   /* recipient -> first recipient of its message */
	size_t next;		   /* next recipient to look at */
	struct message *cur;	   /* the message whose handler waits */
	uint64_t policy_call;	   /* the waiting call (policy_cancel) */
	int code;		   /* 250, or the failing reply code */
	struct policy_result fail; /* why the transaction failed */
};

static void session_after_reply(struct smtp_session *s);

static void rx_txn_free(struct smtp_rx_txn *t)
{
	for (size_t i = 0; i < t->n; i++) {
		message_unref(t->msgs[i]);
		json_decref(t->rep[i].arf);
		json_decref(t->rep[i].dsn);
	}
	for (size_t i = 0; i < t->ndropped; i++) {
		message_unref(t->dropped[i]);
		json_decref(t->drep[i].arf);
		json_decref(t->drep[i].dsn);
	}
	if (t->tx)
		message_unref(t->tx);
	free(t->group);
	free(t->msgs);
	free(t->rep);
	free(t->dropped);
	free(t->drep);
	buf_free(&t->ids);
	free(t);
}

/* The Reception record of m, or what a log_arf/log_oob domain logs instead
 * (logrec_log_report: Feedback, or Reception and OOB records). */
static void rx_log_reception(struct smtp_rx_txn *t, struct message *m,
			     const struct smtp_rx_report *rep)
{
	struct logrec_response resp = {.code = 250, .content = "OK", .command = "."};
	struct logrec_peer peer = {.name = t->helo, .addr = t->peer_ip};
	struct logrec_tls tls = {.cipher = t->tls_cipher, .protocol_version = t->tls_version};
	logrec_log_report(
	    &(struct logrec_event){
		.type = "Reception",
		.m = m,
		.resp = &resp,
		.peer = &peer,
		.reception_protocol = "ESMTP",
		.tls = t->tls_version[0] ? &tls : NULL,
	    },
	    rep->arf, rep->dsn);
}

static void rx_stored_cb(void *ctx, int err)
{
	struct smtp_rx_txn *t = ctx;
	if (err && !t->err)
		t->err = err;
	if (--t->pending)
		return;
	struct smtp_session *s = t->s;
	struct task *prev = s ? task_enter(s->task) : NULL;
	if (!t->err) {
		for (size_t i = 0; i < t->n; i++) {
			rx_log_reception(t, t->msgs[i], &t->rep[i]);
			queue_insert(t->msgs[i], "Received");
		}
		metrics_counter_add("total_messages_received", "service", "esmtp_listener", t->n);
	} else {
		/* nothing is acknowledged: remove whatever did reach the disk */
		for (size_t i = 0; i < t->n; i++)
			spool_remove(t->msgs[i]->id, NULL, NULL);
		log_error("kumod::smtp_server", "spool error: %s; transaction refused with 4xx",
			  strerror(-t->err));
	}
	if (s) {
		s->txn = NULL;
		session_enter_state(s, SMTP_STATE_READY);
		if (!t->err)
			session_reply(s, 250, NULL, "OK ids=%s", buf_cstr(&t->ids));
		else if (t->err == -ENOSPC || t->err == -EDQUOT)
			session_reply(s, 452, "4.3.1", "insufficient system storage");
		else
			session_reply(s, 451, "4.3.0", "spool error; try again later");
		session_after_reply(s);
		conn_resume_read(&s->conn);
		session_restart_idle(s);
		session_process(s);
		task_exit(s->task, prev);
	}
	rx_txn_free(t);
}

static const char *rcpt_domain(const char *rcpt)
{
	const char *at = strrchr(rcpt, '@');
	return at ? at + 1 : "";
}

/* Which message of the transaction recipient i goes into: BifurcateAlways
 * gives every recipient its own; BatchByDomain groups the recipients of one
 * domain (ASCII case-insensitive) into the message of the first of them. */
static size_t batch_group(const struct smtp_session *s, const struct message *tx, size_t i)
{
	if (!s->l->cfg.batch_by_domain)
		return i;
	for (size_t j = 0; j < i; j++)
		if (strcasecmp(rcpt_domain(tx->recipients[j]), rcpt_domain(tx->recipients[i])) == 0)
			return j;
	return i;
}

/* What the first recipient's listener domain makes of m when it logs
 * reports (KumoMTA's order: ARF, then OOB): 1 queue it, 0 accept and drop
 * it (LogThenDrop, or a non-report the domain does not relay), -1 policy
 * failure (r says why). rep gets the parsed report to log, if any. */
static int session_report_disposition(struct smtp_session *s, struct message *m,
				      struct smtp_rx_report *rep, struct policy_result *r)
{
	struct policy_listener_domain ld = {0};
	char dom[300], err[300];
	const char *report = "none", *disp;
	int keep;
	policy_get_listener_domain(domain_of(m->recipients[0], dom, sizeof(dom)), s->l->addr,
				   s->meta, &ld, r);
	session_trace_policy(s, "get_listener_domain", r);
	int relay_to = ld.found && ld.relay_to, log_arf = ld.log_arf, log_oob = ld.log_oob;
	listener_domain_free(&ld);
	if (r->status != POLICY_OK)
		return -1;
	if (!log_arf && !log_oob)
		return 1; /* RCPT decided relaying */
	/* a streamed report is parsed whole */
	int rc = message_load_spill(m);
	if (rc < 0) {
		r->status = POLICY_REJECT;
		r->code = 451;
		snprintf(r->text, sizeof(r->text), "4.3.0 reading the streamed body failed: %s",
			 strerror(-rc));
		return -1;
	}
	const char *d = m->data.data ? m->data.data : "";
	if (log_arf && arf_parse(d, m->data.len, &rep->arf, err, sizeof(err)) == 1) {
		report = "Feedback";
		keep = log_arf == POLICY_LOG_REPORT_RELAY;
	} else if (log_oob && dsn_parse(d, m->data.len, &rep->dsn, err, sizeof(err)) == 1) {
		report = "OOB";
		keep = log_oob == POLICY_LOG_REPORT_RELAY;
	} else {
		keep = s->relay_peer || relay_to ? 1 : session_sender_may_relay(s, m->sender, r);
		if (keep < 0)
			return -1;
	}
	if (strcmp(report, "none") != 0)
		disp = keep ? "LogThenRelay" : "LogThenDrop";
	else
		disp = keep ? "Relay" : "Drop";
	KTRACE(smtp_report, s->id, m->id, report, disp);
	if (strcmp(disp, "Drop") == 0) /* accepted, as KumoMTA, but never silently */
		log_info("kumod::smtp_server",
			 "message %s for %s is not a %s report and the domain does not relay: "
			 "accepted and dropped (listener domain with log_arf/log_oob only)",
			 m->id, dom,
			 log_arf && log_oob ? "feedback or delivery-status"
			 : log_arf	    ? "feedback"
					    : "delivery-status");
	return keep;
}

static json_t *transcript_snap_build(const void *obj)
{
	return smtp_transcript_snap_json(obj);
}

static void transcript_snap_release(void *obj)
{
	smtp_transcript_snap_free(obj);
}

/* The message for the recipient group that starts at i, with the metadata
 * KumoMTA sets before smtp_server_message_received. */
static struct message *rx_group_message(struct smtp_session *s, struct smtp_rx_txn *t, size_t i)
{
	struct message *tx = t->tx;
	struct message *m = i == 0 && tx->nrecipients == 1 ? message_ref(tx) : message_new();
	if (m != tx) {
		message_set_sender(m, tx->sender);
		for (size_t j = i; j < tx->nrecipients; j++)
			if (t->group[j] == i)
				message_add_recipient(m, tx->recipients[j]);
		message_copy_data(m, tx);	/* a streamed body is shared, not copied */
		if (json_object_size(tx->meta)) /* set by smtp_server_data */
			json_object_update_new(m->meta, json_deep_copy(tx->meta));
	}
	session_add_trace_headers(s, m);
	/* KumoMTA copies these into the message meta (log records use them) */
	message_set_meta(m, "reception_protocol", json_string("ESMTP"));
	message_set_meta(m, "received_from", json_string(s->conn.peer));
	message_set_meta(m, "received_via", json_string(s->l->addr));
	/* KumoMTA's message meta starts as a copy of the conn meta, listener hostname and
	 * EHLO name included: kumo.spf.check_msg and Authentication-Results read them */
	message_set_meta(m, "hostname", json_string(s->l->cfg.hostname));
	json_t *ehlo = json_object_get(s->meta, "ehlo_domain");
	if (ehlo)
		message_set_meta(m, "ehlo_domain", json_incref(ehlo));
	/* the mail catcher's per-message SMTP conversation: a copy of the
	 * lines, made JSON only when read (the catcher's writer thread builds
	 * its own from a copy; a policy's msg:get_meta builds it on the loop) */
	struct smtp_transcript_snap *ts =
	    smtp_transcript_snap(&s->ts, s->helo, conn_tls_version(&s->conn));
	if (ts)
		message_set_meta_lazy(m, "smtp_session", ts, transcript_snap_build,
				      transcript_snap_release);
	if (s->authenticated) { /* KumoMTA copies the AUTH identities too */
		message_set_meta(m, "authn_id", json_incref(json_object_get(s->meta, "authn_id")));
		message_set_meta(m, "authz_id", json_incref(json_object_get(s->meta, "authz_id")));
	}
	return m;
}

/* After the policy of the group at i ran: checks the queue config and keeps
 * m for the spool, or records why the transaction fails. Consumes m. */
static void rx_group_done(struct smtp_session *s, struct smtp_rx_txn *t, size_t i,
			  struct message *m, const struct policy_result *r)
{
	session_trace_policy(s, "smtp_server_message_received", r);
	MSG_TIMELINE(m->id, "Policy", "smtp_server_message_received: %s",
		     r->status == POLICY_OK	  ? "ok"
		     : r->status == POLICY_REJECT ? "rejected"
						  : "error");
	const char *queue = message_get_meta_str(m, "queue");
	if (r->status != POLICY_OK) {
		t->fail = *r;
		t->code = r->status == POLICY_REJECT ? r->code : 451;
		message_unref(m);
		return;
	}
	session_add_supplemental_header(s, m);
	char qerr[600];
	if (!(queue && strcmp(queue, "null") == 0) &&
	    queue_check_config(m, "ESMTP", s->conn.peer_ip, qerr, sizeof(qerr)) != 0) {
		/* nothing is acknowledged that is not queued under the policy's config */
		t->code = 451;
		t->fail.status = POLICY_REJECT;
		t->fail.code = 451;
		snprintf(t->fail.text, sizeof(t->fail.text), "4.3.0 %.500s", qerr);
		message_unref(m);
		return;
	}
	struct smtp_rx_report rp = {0};
	struct policy_result lr = {0};
	int keep = session_report_disposition(s, m, &rp, &lr);
	if (keep < 0) {
		t->fail = lr;
		t->code = lr.status == POLICY_REJECT ? lr.code : 451;
		message_unref(m);
		return;
	}
	/* a batch shows its first recipient (the Reception record lists all);
	 * the queue as queue_insert() will name it, not an unset meta */
	char qname[512];
	queue_message_name(m, qname, sizeof(qname));
	KTRACE(smtp_message, s->id, m->id, m->sender, t->tx->recipients[i], qname,
	       (uint64_t)message_data_len(m));
	MSG_TIMELINE(m->id, "Reception", "ESMTP from %s via %s, %zu bytes, queue %s", s->conn.peer,
		     s->l->addr, message_data_len(m), qname);
	SMTP_TRACE_SRV(s, .kind = SMTP_TRACE_MESSAGE, .name = m->id, .text = m->sender,
		       .text2 = qname, .rcpts = (const char *const *)m->recipients,
		       .nrcpts = m->nrecipients);
	buf_printf(&t->ids, "%s%s", t->ids.len ? " " : "", m->id);
	if (queue && strcmp(queue, "null") == 0) {
		message_unref(m); /* accepted and discarded (KumoMTA null queue) */
		json_decref(rp.arf);
		json_decref(rp.dsn);
	} else if (!keep) {
		t->drep[t->ndropped] = rp;
		t->dropped[t->ndropped++] = m;
	} else {
		t->rep[t->n] = rp;
		t->msgs[t->n++] = m;
	}
}

static void rx_policy_done(void *arg, const struct policy_result *r);

/* Runs smtp_server_message_received for the groups from t->next on. A
 * handler may wait (kumo.http): then the session stays paused in Spooling
 * and rx_policy_done continues. Returns 1 while waiting, 0 when every
 * group is done. */
static int rx_policy_step(struct smtp_session *s, struct smtp_rx_txn *t)
{
	struct message *tx = t->tx;
	for (size_t i = t->next; i < tx->nrecipients && t->code == 250; i++) {
		if (t->group[i] != i)
			continue; /* in the message of an earlier recipient */
		struct message *m = rx_group_message(s, t, i);
		struct policy_result r = {0};
		if (policy_smtp_message_received_async(m, s->meta, &r, rx_policy_done, t,
						       &t->policy_call)) {
			t->cur = m;
			t->next = i;
			return 1;
		}
		rx_group_done(s, t, i, m, &r);
	}
	t->next = tx->nrecipients;
	return 0;
}

/* Every group went through the policy: 1 when the transaction ends with a
 * reply (rx_reply), 0 when what was kept goes to the spool (rx_spool). */
static int rx_finish(struct smtp_session *s, struct smtp_rx_txn *t)
{
	if (t->code == 250 && t->n && !spool_is_open()) {
		t->code = 451;
		t->fail.status = POLICY_REJECT;
		t->fail.code = 451;
		snprintf(t->fail.text, sizeof(t->fail.text),
			 "4.3.0 no spool is defined (kumo.define_spool); message not accepted");
	}
	if (t->code != 250)
		return 1;
	snprintf(t->peer_ip, sizeof(t->peer_ip), "%s", s->conn.peer_ip);
	snprintf(t->helo, sizeof(t->helo), "%s", s->helo ? s->helo : "");
	if (s->conn.tls == CONN_TLS_ACTIVE) {
		snprintf(t->tls_version, sizeof(t->tls_version), "%s", conn_tls_version(&s->conn));
		snprintf(t->tls_cipher, sizeof(t->tls_cipher), "%s", conn_tls_cipher(&s->conn));
	}
	for (size_t i = 0; i < t->ndropped; i++) /* accepted without a spool write */
		rx_log_reception(t, t->dropped[i], &t->drep[i]);
	return t->n ? 0 : 1;
}

static void rx_reply(struct smtp_session *s, struct smtp_rx_txn *t)
{
	if (t->code != 250)
		session_reply_policy(s, &t->fail);
	else
		session_reply(s, 250, NULL, "OK ids=%s", buf_cstr(&t->ids));
}

static void rx_spool(struct smtp_session *s, struct smtp_rx_txn *t)
{
	t->pending = t->n;
	t->started_ns = clock_mono_ns();
	task_set_phase(s->task, "Spooling", "spool");
	for (size_t i = 0; i < t->n; i++) {
		if (s->l->cfg.deferred_spool) /* the policy's choice: kept in memory */
			spool_store_deferred(t->msgs[i], rx_stored_cb, t);
		else
			spool_store(t->msgs[i], rx_stored_cb, t);
	}
}

/* The transaction stays attached to the session while it waits for the
 * policy or the spool: reads paused, no idle timer. */
static void rx_suspend(struct smtp_session *s, struct smtp_rx_txn *t, const char *phase,
		       const char *wait)
{
	t->s = s;
	s->txn = t;
	session_enter_state(s, SMTP_STATE_SPOOLING);
	task_set_phase(s->task, phase, wait);
	conn_pause_read(&s->conn);
	uv_timer_stop(&s->timer);
}

/* A waiting smtp_server_message_received handler finished. */
static void rx_policy_done(void *arg, const struct policy_result *r)
{
	struct smtp_rx_txn *t = arg;
	struct smtp_session *s = t->s;
	struct message *m = t->cur;
	t->cur = NULL;
	t->policy_call = 0;
	if (!s) { /* the client went away: nothing was acknowledged */
		message_unref(m);
		rx_txn_free(t);
		return;
	}
	struct task *prev = task_enter(s->task);
	rx_group_done(s, t, t->next, m, r);
	t->next++;
	if (rx_policy_step(s, t)) {
		task_exit(s->task, prev);
		return;
	}
	if (rx_finish(s, t) == 0) {
		rx_spool(s, t);
		task_exit(s->task, prev);
		return;
	}
	s->txn = NULL;
	session_enter_state(s, SMTP_STATE_READY);
	rx_reply(s, t);
	session_after_reply(s);
	conn_resume_read(&s->conn);
	session_restart_idle(s);
	session_process(s);
	task_exit(s->task, prev);
	rx_txn_free(t);
}

/* One message per recipient (BifurcateAlways) or per recipient domain
 * (BatchByDomain), each through smtp_server_message_received. One reply for
 * the whole transaction. */
static void session_message_received(struct smtp_session *s)
{
	struct message *tx = s->msg;
	/* smtp_server_data: the whole transaction, before it is split; the
	 * handler may change recipients and content, or refuse it all */
	struct policy_result r = {0};
	if (s->data_event) {
		policy_smtp_data(tx, s->meta, &r);
		session_trace_policy(s, "smtp_server_data", &r);
	}
	if (r.status != POLICY_OK || !tx->nrecipients) {
		MSG_TIMELINE(tx->id, "Policy", "smtp_server_data: %s",
			     r.status == POLICY_REJECT ? "rejected" : "error");
		session_reply_policy(s, &r);
		return;
	}
	struct smtp_rx_txn *t = xcalloc(1, sizeof(*t));
	buf_init(&t->ids);
	t->msgs = xcalloc(tx->nrecipients, sizeof(*t->msgs));
	t->rep = xcalloc(tx->nrecipients, sizeof(*t->rep));
	t->dropped = xcalloc(tx->nrecipients, sizeof(*t->dropped));
	t->drep = xcalloc(tx->nrecipients, sizeof(*t->drep));
	t->tx = message_ref(tx);
	t->code = 250;
	t->group = xmalloc(tx->nrecipients * sizeof(*t->group));
	for (size_t i = 0; i < tx->nrecipients; i++)
		t->group[i] = batch_group(s, tx, i);
	if (rx_policy_step(s, t)) {
		rx_suspend(s, t, "Policy", "policy");
		return;
	}
	if (rx_finish(s, t)) {
		rx_reply(s, t);
		rx_txn_free(t);
		return;
	}
	rx_suspend(s, t, "Spooling", "spool");
	rx_spool(s, t);
}

static void session_end_of_data(struct smtp_session *s)
{
	struct smtp_data_framer *df = &s->df;
	s->reply_cmd = "DATA"; /* every reply from here answers the data */
	SMTP_TRACE_SRV(s, .kind = SMTP_TRACE_DATA, .text = s->msg ? s->msg->data.data : NULL,
		       .len = s->msg ? s->msg->data.len : 0, .code = (int)df->size);
	KTRACE(smtp_data_end, s->id, (uint64_t)df->size, df->bare_eol, df->line_too_long,
	       df->too_big);
	s->conn.bulk_input = 0;
	session_enter_state(s, SMTP_STATE_READY);
	s->messages++;
	s->junk = 0;
	struct message_spill *spill = s->spill; /* the streamed body, if any */
	s->spill = NULL;
	buf_free(&s->spill_buf);
	size_t received = 0;
	const size_t max_received = s->l->cfg.max_received_headers;
	if (s->data_refused) {
		int spool_err = strcmp(s->data_refused, "spool") == 0;
		log_info("kumod::smtp_server",
			 "session=%" PRIu64 " peer=%s message of %zu bytes refused: %s", s->id,
			 s->conn.peer, df->size,
			 spool_err ? "writing the streamed body failed"
			 : strcmp(s->data_refused, "memory") == 0 ? "over the memory soft limit"
								  : "allocation failed");
		if (spool_err)
			session_reply(s, 451, "4.3.0", "spool error; try again later");
		else
			session_reply(s, 451, "4.3.1",
				      "insufficient system memory; try again later");
		s->data_refused = NULL;
	} else if (df->too_big)
		session_reply(s, 552, "5.3.4", "message too big");
	else if (df->line_too_long)
		session_reply(s, 500, "5.2.3", "line too long");
	else if (df->bare_eol && df->policy == SMTP_EOL_DENY)
		session_reply(s, 552, "5.6.0", "message data must use CRLF for line endings");
	else if (max_received &&
		 (received = rfc5322_count_named(s->msg->data.data, s->msg->data.len, "Received")) >
		     max_received) {
		limits.mail_loops++;
		KTRACE(smtp_mail_loop, s->id, s->conn.peer, (uint64_t)received,
		       (uint64_t)max_received);
		session_reply(s, 554, "5.4.6",
			      "too many Received headers (%zu, limit %zu): mail loop", received,
			      max_received);
	} else {
		/* a queued message keeps only its bytes, whatever SIZE= claimed */
		buf_shrink(&s->msg->data, 2048);
		s->msg->spill = spill; /* data is the header section, the body follows */
		spill = NULL;
		session_message_received(s);
	}
	message_spill_unref(spill);
	session_account_release(s);
	message_unref(s->msg);
	s->msg = NULL;
	if (s->state != SMTP_STATE_SPOOLING)
		session_after_reply(s);
}

/* After the final reply of a transaction: a shutdown closes the session. */
static void session_after_reply(struct smtp_session *s)
{
	if (kumod_shutting_down() && s->state != SMTP_STATE_CLOSING) {
		session_reply(s, 421, "4.3.2", "%s shutting down", s->l->cfg.hostname);
		session_close(s, "shutdown");
	}
}

/* --- input loop ---------------------------------------------------------- */

static void session_restart_idle(struct smtp_session *s);
static void session_timer_cb(uv_timer_t *t);
static void session_hold(struct smtp_session *s);

static int session_handle_line(struct smtp_session *s)
{
	size_t line_len = 0, consumed = 0;
	struct buf *in = &s->conn.in;
	enum smtp_line_status st =
	    smtp_line_next(&s->lr, buf_rptr(in), buf_avail(in), &line_len, &consumed);
	if (st != SMTP_LINE_OK) {
		buf_consume(in, consumed);
		if (st == SMTP_LINE_TOO_LONG) {
			session_reply(s, 500, "5.2.3", "line too long");
		} else if (st == SMTP_LINE_BAD_ENDING) {
			session_reply(s, 500, "5.5.2", "command line must end with CRLF");
		}
		return st != SMTP_LINE_NEED_MORE;
	}
	size_t n = line_len < sizeof(s->line) - 1 ? line_len : sizeof(s->line) - 1;
	memcpy(s->line, buf_rptr(in), n);
	s->line[n] = 0;
	buf_consume(in, consumed);
	if (s->auth_step != AUTH_NONE) {
		session_note_cmd(s, "(AUTH response, not shown)", 26);
		session_auth_continue(s, s->line, n);
		explicit_bzero(s->line, n);
		session_restart_idle(s);
		return 1;
	}
	if (n > 5 && strncasecmp(s->line, "AUTH ", 5) == 0) {
		/* the mechanism only: an initial response carries the password */
		char shown[64];
		snprintf(shown, sizeof(shown), "AUTH %.*s (initial response not shown)",
			 (int)strcspn(s->line + 5, " "), s->line + 5);
		session_note_cmd(s, shown, strlen(shown));
	} else {
		session_note_cmd(s, s->line, n);
	}
	session_command(s, s->line, n);
	explicit_bzero(s->line, n);
	session_restart_idle(s);
	return 1;
}

/* Where the next avail bytes of DATA go: the message, or (once refused
 * for memory or a failed allocation) a scratch buffer, so the framer still
 * finds the end of data and the client gets 451 4.3.1 there. Growth past
 * SMTP_DATA_MEM_FLOOR is checked against the soft limit before it happens. */
static struct buf *session_data_sink(struct smtp_session *s, size_t avail)
{
	struct buf *d = s->spill ? &s->spill_buf : &s->msg->data;
	size_t want = avail * 2; /* invalid_line_endings=Fix may double a chunk */
	if (!s->data_refused && d->len + want + 1 > d->cap) {
		if (d->len >= SMTP_DATA_MEM_FLOOR &&
		    session_memory_over(s, d->cap ? d->cap : want, "memory_soft_limit"))
			s->data_refused = "memory";
		else if (buf_try_reserve(d, want) != 0)
			s->data_refused = "allocation";
		if (s->data_refused) {
			if (strcmp(s->data_refused, "allocation") == 0) {
				KTRACE(smtp_limit, s->id, s->conn.peer, "allocation_failed");
				limits.memory_denied++;
			}
			buf_free(d);
			session_account_release(s);
		}
	}
	return s->data_refused ? &discard : d;
}

/* --- streamed DATA (data_spill_threshold) -------------------------------- */

/* One write of spill_buf to the spill file. Outlives the session if the
 * client goes away meanwhile (s is NULLed by session_free). */
struct smtp_spill_write {
	uv_fs_t req;
	struct smtp_session *s;
	struct message_spill *sp;
	struct buf b;
};

static void session_spill_written(uv_fs_t *req)
{
	struct smtp_spill_write *w = req->data;
	struct smtp_session *s = w->s;
	ssize_t r = req->result;
	uv_fs_req_cleanup(req);
	/* a short write to a regular file means the file system is full */
	int err = r < 0 ? (int)r : (size_t)r != w->b.len ? -ENOSPC : 0;
	if (!err)
		w->sp->len += (uint64_t)r;
	message_spill_unref(w->sp);
	buf_free(&w->b);
	free(w);
	if (!s)
		return;
	s->spill_wr = NULL;
	if (s->state == SMTP_STATE_CLOSING)
		return; /* the session is going away: nothing to carry on */
	struct task *prev = task_enter(s->task);
	if (err && s->spill) {
		KTRACE(smtp_limit, s->id, s->conn.peer, "spill_write_failed");
		log_error("kumod::smtp_server",
			  "session=%" PRIu64 " peer=%s writing the streamed body failed: %s", s->id,
			  s->conn.peer, strerror(-err));
		s->data_refused = "spool"; /* the rest is framed into discard: 451 4.3.0 */
		message_spill_unref(s->spill);
		s->spill = NULL;
		buf_free(&s->spill_buf);
		session_account_sync(s);
	}
	task_set_phase(s->task, state_names[s->state], "peer_read");
	conn_resume_read(&s->conn);
	if (s->state == SMTP_STATE_DATA && s->df.done)
		session_end_of_data(s);
	session_process(s);
	task_exit(s->task, prev);
}

/* After DATA bytes were framed: past the threshold the body moves to a
 * spill file, in SMTP_SPILL_CHUNK writes. Returns 1 when a write went out
 * (input waits for it; its completion carries on), 0 otherwise. A body
 * that cannot stream (RocksDB kind, no file, a header section longer than
 * the threshold) stays in memory under the memory budget as before. */
static int session_spill(struct smtp_session *s)
{
	size_t threshold = s->l->cfg.data_spill_threshold;
	if (!threshold || s->spill_skip || s->data_refused)
		return 0;
	if (!s->spill) {
		struct buf *d = &s->msg->data;
		if (d->len < threshold || s->df.done || s->df.too_big)
			return 0;
		s->spill_skip = 1; /* decided once per DATA */
		size_t hend = rfc5322_header_end(d->data, d->len);
		if (hend >= d->len)
			return 0; /* no body start within the first threshold bytes */
		int fd = spool_spill_open();
		if (fd < 0) {
			if (fd != -ENOTSUP && fd != -ENOENT)
				log_warn("kumod::smtp_server",
					 "session=%" PRIu64
					 " peer=%s cannot stream the body to the "
					 "spool (%s): kept in memory",
					 s->id, s->conn.peer, strerror(-fd));
			return 0;
		}
		s->spill_skip = 0;
		s->spill = message_spill_new(fd);
		buf_append(&s->spill_buf, d->data + hend, d->len - hend);
		d->len = hend;
		buf_shrink(d, 2048); /* room for the trace headers */
		session_account_sync(s);
		KTRACE(smtp_data_spill, s->id, (uint64_t)hend, (uint64_t)threshold);
	}
	if (s->df.too_big) /* 552 at the end: nothing more is worth writing */
		buf_reset(&s->spill_buf);
	if (!s->spill_buf.len || (s->spill_buf.len < SMTP_SPILL_CHUNK && !s->df.done))
		return 0;
	struct smtp_spill_write *w = xcalloc(1, sizeof(*w));
	w->req.data = w;
	w->s = s;
	w->sp = message_spill_ref(s->spill);
	w->b = s->spill_buf;
	buf_init(&s->spill_buf);
	session_account_sync(s);
	uv_buf_t ub = uv_buf_init(w->b.data, (unsigned)w->b.len);
	int rc = uv_fs_write(s->l->loop, &w->req, w->sp->fd, &ub, 1, (int64_t)w->sp->len,
			     session_spill_written);
	if (rc < 0) { /* never queued: the data ends in 451 4.3.0 as for a failed write */
		log_error("kumod::smtp_server",
			  "session=%" PRIu64 " peer=%s writing the streamed body failed: %s", s->id,
			  s->conn.peer, uv_strerror(rc));
		message_spill_unref(w->sp);
		buf_free(&w->b);
		free(w);
		s->data_refused = "spool";
		message_spill_unref(s->spill);
		s->spill = NULL;
		return 0;
	}
	s->spill_wr = w;
	conn_pause_read(&s->conn);
	task_set_phase(s->task, state_names[s->state], "spill_write");
	return 1;
}

static void session_process(struct smtp_session *s)
{
	if (s->processing)
		return;
	s->processing = 1;
	struct buf *in = &s->conn.in;
	while (s->state != SMTP_STATE_CLOSING && s->state != SMTP_STATE_TLS &&
	       s->state != SMTP_STATE_SPOOLING && !s->tarpit && !s->cmd_call) {
		if (s->errors >= SMTP_HARD_ERRORS) {
			KTRACE(smtp_limit, s->id, s->conn.peer, "hard error limit");
			session_reply(s, 421, "4.7.0", "%s too many errors", s->l->cfg.hostname);
			session_close(s, "too many errors");
			break;
		}
		if (!buf_avail(in))
			break;
		if (s->state == SMTP_STATE_DATA) {
			if (s->spill_wr)
				break; /* its completion carries on */
			struct buf *out = session_data_sink(s, buf_avail(in));
			size_t n = smtp_data_feed(&s->df, buf_rptr(in), buf_avail(in), out);
			if (out == &discard)
				buf_reset(&discard);
			else
				session_account_sync(s);
			buf_consume(in, n);
			s->data_window_bytes += n;
			if (out != &discard && session_spill(s))
				continue; /* the write completion ends the data if done */
			if (s->df.done)
				session_end_of_data(s);
			continue;
		}
		if (!session_handle_line(s))
			break;
	}
	/* While spooling, the reply is not written yet: held when it is. */
	if (s->tarpit && s->state != SMTP_STATE_CLOSING && s->state != SMTP_STATE_SPOOLING)
		session_hold(s);
	else
		conn_flush(&s->conn);
	s->processing = 0;
}

/* Holds the output: the timer flushes it and resumes input. */
static void session_hold(struct smtp_session *s)
{
	conn_pause_read(&s->conn);
	task_set_phase(s->task, state_names[s->state], "tarpit");
	uv_timer_start(&s->timer, session_timer_cb,
		       !s->hold_ms		   ? SMTP_TARPIT_MS
		       : s->hold_ms == POLICY_HANG ? s->l->cfg.client_timeout_ms
						   : s->hold_ms,
		       0);
}

static void session_timer_cb(uv_timer_t *t)
{
	struct smtp_session *s = t->data;
	struct task *prev = task_enter(s->task);
	task_wake(s->task);
	if (s->tarpit && s->hold_ms == POLICY_HANG) { /* kumo.delay_reply("hang") */
		buf_reset(&s->conn.out);
		KTRACE(smtp_limit, s->id, s->conn.peer, "client_timeout");
		session_close(s, "hang (kumo.delay_reply)");
	} else if (s->tarpit && s->close_after_hold) {
		s->tarpit = 0;
		s->hold_ms = 0;
		session_close(s, "policy disconnect");
	} else if (s->tarpit) {
		s->tarpit = 0;
		s->hold_ms = 0;
		conn_flush(&s->conn);
		task_set_phase(s->task, state_names[s->state], "peer_read");
		session_restart_idle(s);
		conn_resume_read(&s->conn);
		session_process(s);
	} else if (s->state == SMTP_STATE_DATA &&
		   s->data_window_bytes >=
		       SMTP_DATA_MIN_RATE * s->l->cfg.client_timeout_ms / 1000) {
		/* DATA made enough progress in this client_timeout window. */
		s->data_window_bytes = 0;
		session_restart_idle(s);
	} else if (s->state != SMTP_STATE_CLOSING) {
		if (s->state == SMTP_STATE_DATA) {
			KTRACE(smtp_limit, s->id, s->conn.peer, "data_min_rate");
			log_info("kumod::smtp_server",
				 "session=%" PRIu64 " peer=%s DATA below %d B/s: %" PRIu64
				 " bytes in %" PRIu64 " ms; message not accepted",
				 s->id, s->conn.peer, SMTP_DATA_MIN_RATE, s->data_window_bytes,
				 (uint64_t)s->l->cfg.client_timeout_ms);
			session_reply(s, 421, "4.4.2", "%s data too slow; closing",
				      s->l->cfg.hostname);
		} else {
			KTRACE(smtp_limit, s->id, s->conn.peer, "client_timeout");
			session_reply(s, 421, "4.3.2", "%s idle too long", s->l->cfg.hostname);
		}
		session_close(s, "timeout");
	}
	task_exit(s->task, prev);
}

static void session_restart_idle(struct smtp_session *s)
{
	if (s->state == SMTP_STATE_CLOSING || s->tarpit)
		return;
	if (s->cmd_call) { /* a waiting handler: its lookup bounds the wait */
		uv_timer_stop(&s->timer);
		return;
	}
	uv_timer_start(&s->timer, session_timer_cb, s->l->cfg.client_timeout_ms, 0);
}

/* --- connection callbacks ------------------------------------------------ */

static void session_on_data(struct conn *c)
{
	struct smtp_session *s = c->owner;
	task_wake(s->task);
	/* A waiting handler: reading goes on until the first bytes (a client that
	 * closes meanwhile abandons the call); they, and what follows, are kept
	 * and processed once the handler returns. */
	if (s->greet_call || s->cmd_call) {
		conn_pause_read(&s->conn);
		return;
	}
	/* No timer restart here: inside DATA the timer checks the minimum rate
	 * per client_timeout window (a trickle cannot hold a session forever). */
	session_process(s);
}

static void session_on_eof(struct conn *c, int err)
{
	struct smtp_session *s = c->owner;
	session_close(s, err ? "read error" : "peer closed");
}

static void session_on_tls(struct conn *c, int ok)
{
	struct smtp_session *s = c->owner;
	SMTP_TRACE_SRV(s, .kind = SMTP_TRACE_TLS, .ok = ok, .text = ok ? conn_tls_version(c) : "",
		       .text2 = ok ? conn_tls_cipher(c) : c->tls_error);
	if (!ok) {
		session_close(s, "tls handshake failed");
		return;
	}
	json_object_set_new(s->meta, "tls_protocol_version", json_string(conn_tls_version(c)));
	json_object_set_new(s->meta, "tls_cipher", json_string(conn_tls_cipher(c)));
	session_enter_state(s, SMTP_STATE_HELO);
	session_restart_idle(s);
	session_process(s);
}

static void session_free(struct smtp_session *s)
{
	struct smtp_listener *l = s->l;
	if (s->prev)
		s->prev->next = s->next;
	else
		sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	nsessions--;
	l->nconn--;
	if (s->client)
		s->client->conns--;
	session_account_release(s);
	if (s->txn)
		s->txn->s = NULL; /* the spool completes it; what was stored is delivered */
	if (s->spill_wr)
		s->spill_wr->s = NULL; /* the write completes on its own */
	message_spill_unref(s->spill);
	buf_free(&s->spill_buf);
	if (s->msg)
		message_unref(s->msg);
	json_decref(s->meta);
	smtp_transcript_free(&s->ts);
	free(s->helo);
	free(s->wait_sender);
	json_decref(s->wait_ext);
	session_auth_forget(s);
	task_close(s->task);
	free(s);
	smtp_listener__maybe_free(l);
}

struct smtp_session *smtp_session__by_task(uint64_t task_id)
{
	for (struct smtp_session *s = sessions; s; s = s->next)
		if (s->task && s->task->id == task_id && s->state != SMTP_STATE_CLOSING)
			return s;
	return NULL;
}

const char *smtp_session__state_name(const struct smtp_session *s)
{
	return state_names[s->state];
}

static void session_handle_closed(struct smtp_session *s)
{
	if (--s->open_handles == 0)
		session_free(s);
}

static void session_on_closed(struct conn *c)
{
	session_handle_closed(c->owner);
}

static void session_timer_closed(uv_handle_t *h)
{
	session_handle_closed(h->data);
}

static const struct conn_handler session_conn_handler = {
    .on_data = session_on_data,
    .on_eof = session_on_eof,
    .on_tls = session_on_tls,
    .on_closed = session_on_closed,
};

static void session_close(struct smtp_session *s, const char *reason)
{
	if (s->state == SMTP_STATE_CLOSING)
		return;
	KTRACE(smtp_conn_close, s->id, s->conn.peer, reason, (uint64_t)s->messages);
	SMTP_TRACE_SRV(s, .kind = SMTP_TRACE_CLOSED, .text = reason);
	session_enter_state(s, SMTP_STATE_CLOSING);
	task_set_phase(s->task, "Closing", NULL);
	if (s->greet_call) { /* the waiting handler is abandoned; its lookup ends alone */
		policy_cancel(s->greet_call);
		s->greet_call = 0;
	}
	if (s->cmd_call) {
		policy_cancel(s->cmd_call);
		s->cmd_call = 0;
	}
	uv_timer_stop(&s->timer);
	uv_close((uv_handle_t *)&s->timer, session_timer_closed);
	conn_close(&s->conn);
}

/* Per-client limits, after smtp_server_connection_accepted (which may set
 * the meta key max_connections_per_client for this client): 1 when refused
 * with 421 4.7.0 (closed). relay_hosts are exempt unless the policy set it. */
static int session_client_limited(struct smtp_session *s, int rate_hit)
{
	const struct smtp_listener_config *cfg = &s->l->cfg;
	json_t *o = json_object_get(s->meta, "max_connections_per_client");
	size_t limit = s->relay_peer ? 0 : cfg->max_connections_per_client;
	if (json_is_integer(o) && json_integer_value(o) >= 0)
		limit = (size_t)json_integer_value(o);
	const char *why = NULL;
	if (limit && s->client->conns > limit) {
		why = "max_connections_per_client";
		limits.client_concurrency_denied++;
	} else if (rate_hit && !s->relay_peer) {
		why = "max_connection_rate_per_client";
		limits.client_rate_denied++;
	}
	if (!why)
		return 0;
	KTRACE(smtp_conn_denied, s->l->addr, s->conn.peer, why);
	session_reply(s, 421, "4.7.0", "%s too many connections from %s; try later", cfg->hostname,
		      s->conn.peer_ip);
	session_close(s, why);
	return 1;
}

/* The greeting, once smtp_server_connection_accepted answered r: 220, the
 * policy's rejection, or a refusal at accept time (one reply, then close). */
static void session_greet_reply(struct smtp_session *s, int rate_hit,
				const struct policy_result *pr)
{
	struct policy_result r = *pr;
	session_trace_policy(s, "smtp_server_connection_accepted", &r);
	if (r.status == POLICY_OK && session_client_limited(s, rate_hit))
		return;
	size_t early = r.status == POLICY_OK ? conn_input_pending(&s->conn) : 0;
	if (early) {
		/* The client spoke before our greeting: the first sync point. */
		KTRACE(smtp_sync_violation, s->id, s->conn.peer, "greeting", (uint64_t)early);
		log_warn("kumod::smtp_server",
			 "session=%" PRIu64 " peer=%s sent %zu bytes before the greeting", s->id,
			 s->conn.peer, early);
		session_reply(s, 554, "5.5.0", "Error: SMTP protocol synchronization");
		session_close(s, "talked before greeting");
		return;
	}
	if (r.status == POLICY_OK) {
		session_enter_state(s, SMTP_STATE_HELO);
		session_reply(s, 220, NULL, "%s %s", s->l->cfg.hostname, s->l->cfg.banner);
	} else if (r.status == POLICY_REJECT && r.code >= 500 && !r.disconnect) {
		session_enter_state(s, SMTP_STATE_REJECTED);
		session_reply(s, r.code, NULL, "%s", r.text);
	} else {
		session_reply_policy(s, &r);
		if (!s->close_after_hold) {
			session_close(s, "refused by policy");
			return;
		}
	}
	if (s->tarpit) { /* kumo.delay_reply in smtp_server_connection_accepted */
		session_hold(s);
		return;
	}
	conn_flush(&s->conn);
	session_restart_idle(s);
	conn_resume_read(&s->conn); /* paused if the client spoke while the handler waited */
}

/* A waiting smtp_server_connection_accepted handler finished. arg carries
 * the session id (a closing session cancelled the call: never called then). */
static void session_greet_done(void *arg, const struct policy_result *r)
{
	uint64_t id = (uint64_t)(uintptr_t)arg;
	struct smtp_session *s = sessions;
	while (s && s->id != id)
		s = s->next;
	if (!s || s->state != SMTP_STATE_GREETING)
		panic("%s: session %" PRIu64 " is not waiting for its greeting", __func__, id);
	struct task *prev = task_enter(s->task);
	task_wake(s->task);
	s->greet_call = 0;
	task_set_phase(s->task, "Greeting", NULL);
	session_greet_reply(s, s->greet_rate_hit, r);
	task_exit(s->task, prev);
}

/* smtp_server_connection_accepted; its handler may wait (kumo.dns,
 * kumo.http): the greeting is sent when it returns. Meanwhile no idle timer
 * runs (the lookup bounds the wait) and input is not processed: a first
 * read pauses reading (session_on_data), and it counts as talking before
 * the greeting. */
static void session_greet(struct smtp_session *s, int rate_hit)
{
	struct policy_result r = {0};
	if (policy_smtp_connection_accepted_async(s->meta, &r, session_greet_done,
						  (void *)(uintptr_t)s->id, &s->greet_call)) {
		s->greet_rate_hit = rate_hit;
		task_set_phase(s->task, "smtp_server_connection_accepted", "policy");
		return;
	}
	session_greet_reply(s, rate_hit, &r);
}

void smtp_session__accept(struct smtp_listener *l, int fd)
{
	struct smtp_session *s = xcalloc(1, sizeof(*s));
	s->l = l;
	s->task = task_spawn("smtp_server", "", l->task ? l->task->id : 0);
	s->id = s->task->id;
	int rc = conn_accept_fd(&s->conn, l->loop, fd, &session_conn_handler, s, s->task);
	l->nconn++;
	nsessions++;
	s->next = sessions;
	if (sessions)
		sessions->prev = s;
	sessions = s;
	uv_timer_init(l->loop, &s->timer);
	s->timer.data = s;
	s->open_handles = 2;
	s->meta = json_object();
	s->rewrite_response = policy_has_handler("smtp_server_rewrite_response");
	s->data_event = policy_has_handler("smtp_server_data");
	free(s->task->name);
	s->task->name = xstrdup(s->conn.peer);
	task_set_field(s->task, "peer", s->conn.peer);
	task_set_field(s->task, "listener", l->addr);
	smtp_line_reader_init(&s->lr, l->cfg.line_length_hard_limit);
	s->state = SMTP_STATE_GREETING;
	task_set_phase(s->task, "Greeting", NULL);
	if (rc < 0) {
		session_close(s, "accept failed");
		return;
	}
	json_object_set_new(s->meta, "received_from", json_string(s->conn.peer));
	json_object_set_new(s->meta, "received_via", json_string(l->addr));
	json_object_set_new(s->meta, "reception_protocol", json_string("ESMTP"));
	KTRACE(smtp_conn_open, s->id, s->conn.peer, l->addr);
	metrics_counter_add("total_connection_count", "service", "esmtp_listener", 1);
	SMTP_TRACE_SRV(s, .kind = SMTP_TRACE_CONNECTED);
	s->relay_peer =
	    cidr_list_match(&l->cfg.relay_hosts, s->conn.peer_family, s->conn.peer_addr);
	uint64_t now_ms = clock_mono_ns() / 1000000;
	s->client = peertab_get(&l->clients, s->conn.peer_family, s->conn.peer_addr, now_ms,
				l->cfg.connection_rate_period_ms);
	s->client->conns++;
	int rate_hit = peertab_rate_hit(s->client, now_ms, l->cfg.max_connection_rate_per_client,
					l->cfg.connection_rate_period_ms);
	if (fd_cap && nsessions <= fd_cap / 2)
		fd_cap = 0; /* the shortage that set it is over */
	const char *why = NULL;
	if (kumod_shutting_down())
		why = "shutting down";
	else if (nsessions > fdlimit_smtp_budget() || (fd_cap && nsessions > fd_cap))
		why = "file_descriptors"; /* the rest is kept for spool, logs, DNS, HTTP */
	else if (l->nconn > l->cfg.max_connections)
		why = "max_connections";
	if (why) {
		if (strcmp(why, "file_descriptors") == 0)
			limits.fd_budget_denied++;
		KTRACE(smtp_conn_denied, l->addr, s->conn.peer, why);
		session_reply(s, 421, "4.3.2", "%s too many concurrent sessions. Try later",
			      l->cfg.hostname);
		session_close(s, why);
		return;
	}
	if (session_memory_over(s, 0, "memory_soft_limit")) {
		KTRACE(smtp_conn_denied, l->addr, s->conn.peer, "memory_soft_limit");
		session_reply(s, 421, "4.3.2", "%s load shedding. Try later", l->cfg.hostname);
		session_close(s, "memory_soft_limit");
		return;
	}
	if (spool_space_check(NULL, 0) < 0) { /* as KumoMTA */
		limits.disk_denied++;
		KTRACE(smtp_conn_denied, l->addr, s->conn.peer, "min_free_space");
		session_reply(s, 421, "4.3.2", "%s disk is too full. Try later", l->cfg.hostname);
		session_close(s, "min_free_space");
		return;
	}
	conn_start_read(&s->conn);
	session_greet(s, rate_hit);
}

/* Idle sessions get 421 now; sessions inside a transaction finish it and
 * get 421 after its reply (session_end_of_data). A session held by a hang
 * (kumo.delay_reply("hang"), the catcher's hang faults) would never reply:
 * it is closed now without one, as its client_timeout would (nothing in it
 * was acknowledged), instead of holding the shutdown that long. */
void smtp_session__shutdown_all(void)
{
	struct smtp_session *s = sessions, *next;
	for (; s; s = next) {
		next = s->next;
		if (s->tarpit && s->hold_ms == POLICY_HANG && s->state != SMTP_STATE_CLOSING &&
		    s->state != SMTP_STATE_SPOOLING) {
			struct task *prev = task_enter(s->task);
			buf_reset(&s->conn.out);
			session_close(s, "shutdown (hang)");
			task_exit(s->task, prev);
			continue;
		}
		if (s->state == SMTP_STATE_CLOSING || s->state == SMTP_STATE_DATA ||
		    s->state == SMTP_STATE_SPOOLING)
			continue;
		struct task *prev = task_enter(s->task);
		if (s->msg)
			session_reset_transaction(s);
		session_reply(s, 421, "4.3.2", "%s shutting down", s->l->cfg.hostname);
		session_close(s, "shutdown");
		task_exit(s->task, prev);
	}
}

size_t smtp_session__count(void)
{
	return nsessions;
}

void smtp_session__count_accept_error(void)
{
	limits.accept_errors++;
}

/* accept() ran out of descriptors although the budget allowed another
 * session (something else holds descriptors): sessions are capped at the
 * current count less SMTP_FD_GIVEBACK until half of them ended, and the
 * newest idle sessions above the cap are closed with 421 4.3.2, so that the
 * spool, deliveries and the HTTP listener get descriptors back. */
void smtp_session__fd_pressure(void)
{
	size_t cap = nsessions > SMTP_FD_GIVEBACK ? nsessions - SMTP_FD_GIVEBACK : 1;
	if (fd_cap && fd_cap <= cap)
		return;
	fd_cap = cap;
	size_t excess = nsessions - cap;
	for (struct smtp_session *s = sessions; s && excess; s = s->next) {
		if (s->state != SMTP_STATE_GREETING && s->state != SMTP_STATE_HELO &&
		    s->state != SMTP_STATE_READY && s->state != SMTP_STATE_REJECTED)
			continue;
		struct task *prev = task_enter(s->task);
		KTRACE(smtp_limit, s->id, s->conn.peer, "fd_shed_idle");
		session_reply(s, 421, "4.3.2", "%s too many concurrent sessions. Try later",
			      s->l->cfg.hostname);
		session_close(s, "file descriptor shortage");
		task_exit(s->task, prev);
		limits.fd_shed++;
		excess--;
	}
}

void smtp_server_limit_stats(struct smtp_limit_stats *out)
{
	*out = limits;
}
