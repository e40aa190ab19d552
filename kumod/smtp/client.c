/* SPDX-License-Identifier: Apache-2.0 */
/* SMTP client session: entering a state sends that state's command, the
 * reply handler switches on the state; with PIPELINING the transaction's
 * commands go out in one write and a receive cursor matches the replies. */
#include "smtp/client.h"
#include "smtp/smtp_trace.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "base/base64.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "io/conn.h"
#include "io/tls.h"
#include "ktrace.h"
#include "proto/mime8.h"
#include "proto/smtp_data.h"
#include "proto/smtp_reply.h"

#define CLIENT_DEFAULT_CONNECT_MS 10000
#define CLIENT_DEFAULT_BANNER_MS 60000
#define CLIENT_DEFAULT_REPLY_MS 60000
#define CLIENT_DEFAULT_DOT_MS 600000

enum {
	CLIENT_CAP_PIPELINING = 1u << 0,
	CLIENT_CAP_STARTTLS = 1u << 1,
	CLIENT_CAP_SIZE = 1u << 2,	 /* RFC 1870 */
	CLIENT_CAP_8BITMIME = 1u << 3,	 /* RFC 6152 */
	CLIENT_CAP_SMTPUTF8 = 1u << 4,	 /* RFC 6531 */
	CLIENT_CAP_AUTH_PLAIN = 1u << 5, /* RFC 4954 with the PLAIN mechanism */
};

struct smtp_client {
	struct conn conn;
	uv_timer_t timer;
	uv_loop_t *loop;
	struct task *task;
	uint64_t id;
	const struct smtp_client_ops *ops;
	void *ud;
	char *ehlo_name, *sni, *verify_name;
	char *auth_user, *auth_password; /* NULL: no AUTH */
	int auth_without_tls;
	struct sockaddr_storage source;
	int has_source;
	enum smtp_client_tls_mode tls_mode;
	SSL_CTX *tls_ctx;
	int no_pipelining;
	uint64_t state_ms[SMTP_CLIENT_STATE__COUNT]; /* reply timeout per waiting state */

	enum smtp_client_state state;
	int handles;   /* libuv handles not yet closed */
	int conn_init; /* conn's TCP handle was initialised */
	int freed;     /* owner called smtp_client_free() */
	int ending;    /* the session end was decided */
	int in_closed_cb;
	unsigned caps;
	int tls_active;
	struct smtp_reply rep; /* the reply being dispatched (owns its text) */

	/* Current transaction: commands [RSET] MAIL RCPT... DATA, numbered
	 * from 0; tx_next are sent, rx_next have their reply. */
	const struct smtp_client_msg *msg;
	size_t ncmds, tx_next, rx_next;
	int with_rset, need_rset;
	int mail_ok, abort_dot;
	struct buf mail_line; /* "MAIL FROM:<...> [SIZE=n] [BODY=8BITMIME] [SMTPUTF8]" */
	const char *body;     /* raw content to stuff: the message's, scratch or conv */
	size_t body_len;
	struct buf conv;	/* 8-bit content converted for a server without 8BITMIME */
	const char *local_fail; /* refused before sending anything: reported from the timer */
	char local_why_buf[160];
	int local_code;
	const char *local_enh;
	int *rcpt_codes;
	struct smtp_client_rcpt_reply *rcpt_replies;
	size_t rcpt_cap, accepted;
	int fail_code;
	enum smtp_client_state fail_state;
	char fail_enh[16];
	struct buf fail_text;
	uint64_t txn_start_ns;
	uint64_t messages;
	struct buf scratch;

	/* Why the session ended, for on_closed. */
	struct smtp_client_result end;
	char end_enh[16];
	char end_text[256];
};

static const char *const state_names[SMTP_CLIENT_STATE__COUNT] = {
    [SMTP_CLIENT_CONNECTING] = "Connecting",
    [SMTP_CLIENT_BANNER] = "Banner",
    [SMTP_CLIENT_EHLO] = "Ehlo",
    [SMTP_CLIENT_HELO] = "Helo",
    [SMTP_CLIENT_STARTTLS] = "StartTls",
    [SMTP_CLIENT_TLS] = "TlsHandshake",
    [SMTP_CLIENT_AUTH] = "Auth",
    [SMTP_CLIENT_IDLE] = "Idle",
    [SMTP_CLIENT_RSET] = "Rset",
    [SMTP_CLIENT_MAIL] = "Mail",
    [SMTP_CLIENT_RCPT] = "Rcpt",
    [SMTP_CLIENT_DATA] = "Data",
    [SMTP_CLIENT_DOT] = "Dot",
    [SMTP_CLIENT_QUIT] = "Quit",
    [SMTP_CLIENT_CLOSED] = "Closed",
};

static const char *const status_names[] = {
    [SMTP_CLIENT_OK] = "ok",
    [SMTP_CLIENT_TEMPFAIL] = "tempfail",
    [SMTP_CLIENT_PERMFAIL] = "permfail",
    [SMTP_CLIENT_DISCONNECTED] = "disconnected",
    [SMTP_CLIENT_TIMEOUT] = "timeout",
    [SMTP_CLIENT_ERROR] = "error",
};

const char *smtp_client_state_command(enum smtp_client_state s)
{
	static const char *const cmds[SMTP_CLIENT_STATE__COUNT] = {
	    [SMTP_CLIENT_EHLO] = "EHLO",	 [SMTP_CLIENT_HELO] = "HELO",
	    [SMTP_CLIENT_STARTTLS] = "STARTTLS", [SMTP_CLIENT_RSET] = "RSET",
	    [SMTP_CLIENT_MAIL] = "MAIL FROM",	 [SMTP_CLIENT_RCPT] = "RCPT TO",
	    [SMTP_CLIENT_DATA] = "DATA",	 [SMTP_CLIENT_DOT] = ".",
	    [SMTP_CLIENT_QUIT] = "QUIT",
	};
	return s < SMTP_CLIENT_STATE__COUNT ? cmds[s] : NULL;
}

const char *smtp_client_state_name(enum smtp_client_state s)
{
	return s < SMTP_CLIENT_STATE__COUNT ? state_names[s] : "?";
}

const char *smtp_client_status_name(enum smtp_client_status s)
{
	return s <= SMTP_CLIENT_ERROR ? status_names[s] : "?";
}

static void client_read(struct smtp_client *c);
static void client_end(struct smtp_client *c, enum smtp_client_status st, int code, const char *enh,
		       const char *text, int err);

/* --- TLS context ---------------------------------------------------------- */

static int client_tls_verifies(enum smtp_client_tls_mode m)
{
	return m == SMTP_CLIENT_TLS_OPPORTUNISTIC || m == SMTP_CLIENT_TLS_REQUIRED;
}

static int client_tls_required(enum smtp_client_tls_mode m)
{
	return m == SMTP_CLIENT_TLS_REQUIRED || m == SMTP_CLIENT_TLS_REQUIRED_INSECURE;
}

/* The context for a session without its own: the shared ones of io/tls.h
 * (insecure, or verifying against the system trust store). */
static SSL_CTX *client_default_ctx(enum smtp_client_tls_mode m)
{
	char err[256];
	SSL_CTX *ctx = tls_client_ctx(client_tls_verifies(m), NULL, err, sizeof(err));
	if (!ctx)
		panic("%s: %s", __func__, err);
	return ctx;
}

/* --- timers and states ---------------------------------------------------- */

static void client_txn_report(struct smtp_client *c, enum smtp_client_status st, int code,
			      const char *enh, const char *text, int err, int usable);
static enum smtp_client_status client_code_status(int code);

static void client_timer_cb(uv_timer_t *t)
{
	struct smtp_client *c = t->data;
	struct task *prev = task_enter(c->task);
	if (c->local_fail && c->msg) {
		const char *why = c->local_fail;
		c->local_fail = NULL;
		client_txn_report(c, client_code_status(c->local_code), c->local_code, c->local_enh,
				  why, 0, 1);
		task_exit(c->task, prev);
		return;
	}
	KTRACE(smtp_client_timeout, c->id, c->conn.peer, state_names[c->state]);
	char why[96];
	snprintf(why, sizeof(why), "timed out waiting in state %s", state_names[c->state]);
	client_end(c, SMTP_CLIENT_TIMEOUT, 0, "", why, -ETIMEDOUT);
	task_exit(c->task, prev);
}

static void client_arm(struct smtp_client *c, uint64_t ms)
{
	uv_timer_start(&c->timer, client_timer_cb, ms, 0);
}

/* Every transition is traced and becomes the task's phase. Waiting states
 * arm the timer for their reply. */
static void client_enter(struct smtp_client *c, enum smtp_client_state s)
{
	if (c->state != s) {
		KTRACE(smtp_client_state, c->id, state_names[c->state], state_names[s]);
		c->state = s;
		task_set_phase(c->task, state_names[s], s == SMTP_CLIENT_IDLE ? NULL : "peer_read");
	}
	if (s == SMTP_CLIENT_IDLE || s == SMTP_CLIENT_CLOSED)
		uv_timer_stop(&c->timer);
	else
		client_arm(c, c->state_ms[s]);
}

/* Queues one command line; the caller flushes once per batch. */
static void client_cmd(struct smtp_client *c, const char *fmt, const char *arg)
{
	size_t start = c->conn.out.len;
	buf_printf(&c->conn.out, fmt, arg);
	KTRACE(smtp_client_cmd, c->id, state_names[c->state],
	       buf_cstr(&c->conn.out) + start); /* includes the CRLF; escaped by the log */
	SMTP_TRACE_CLI(c, .kind = SMTP_TRACE_WRITE, .text = c->conn.out.data + start,
		       .len = c->conn.out.len - start);
}

/* --- session start ---------------------------------------------------------- */

static void client_send_ehlo(struct smtp_client *c, enum smtp_client_state s)
{
	c->caps = 0;
	client_enter(c, s);
	client_cmd(c, s == SMTP_CLIENT_HELO ? "HELO %s\r\n" : "EHLO %s\r\n", c->ehlo_name);
	conn_flush(&c->conn);
}

static void client_ready(struct smtp_client *c)
{
	client_enter(c, SMTP_CLIENT_IDLE);
	if (!c->freed && c->ops->on_ready)
		c->ops->on_ready(c, c->ud);
}

static void client_start_tls(struct smtp_client *c)
{
	client_enter(c, SMTP_CLIENT_TLS);
	SSL_CTX *ctx = c->tls_ctx ? c->tls_ctx : client_default_ctx(c->tls_mode);
	size_t dropped = conn_starttls_client(
	    &c->conn, ctx, c->sni, client_tls_verifies(c->tls_mode) ? c->verify_name : NULL);
	if (dropped)
		log_warn("kumod::smtp_client",
			 "session=%" PRIu64 " peer=%s discarded %zu plaintext bytes sent after 220 "
			 "to STARTTLS",
			 c->id, c->conn.peer, dropped);
	c->end.err = (int)dropped; /* reported by the tls tracepoint */
}

/* AUTH PLAIN when the path asks for it (RFC 4954 after the last EHLO),
 * else ready. Never the credentials over plaintext unless allowed. */
static void client_auth_or_ready(struct smtp_client *c)
{
	if (!c->auth_user) {
		client_ready(c);
		return;
	}
	if (!c->tls_active && !c->auth_without_tls) {
		client_end(c, SMTP_CLIENT_ERROR, 0, "",
			   "smtp_auth_plain_username is set but the connection is not using TLS "
			   "(allow_smtp_auth_plain_without_tls = false): credentials not sent",
			   0);
		return;
	}
	if (!(c->caps & CLIENT_CAP_AUTH_PLAIN)) {
		client_end(
		    c, SMTP_CLIENT_ERROR, 0, "",
		    "smtp_auth_plain_username is set but the server does not offer AUTH PLAIN", 0);
		return;
	}
	struct buf raw, b64;
	buf_init(&raw);
	buf_init(&b64);
	buf_appendc(&raw, '\0'); /* no authorization identity */
	buf_append(&raw, c->auth_user, strlen(c->auth_user));
	buf_appendc(&raw, '\0');
	buf_append(&raw, c->auth_password, strlen(c->auth_password));
	base64_encode(&b64, raw.data, raw.len);
	client_enter(c, SMTP_CLIENT_AUTH);
	KTRACE(smtp_client_cmd, c->id, state_names[c->state],
	       "AUTH PLAIN (credentials not shown)\r\n");
	SMTP_TRACE_CLI(c, .kind = SMTP_TRACE_WRITE,
		       .text = "AUTH PLAIN (credentials not shown)\r\n");
	buf_printf(&c->conn.out, "AUTH PLAIN %s\r\n", buf_cstr(&b64));
	explicit_bzero(raw.data, raw.len);
	explicit_bzero(b64.data, b64.len);
	buf_free(&raw);
	buf_free(&b64);
	conn_flush(&c->conn);
}

static void client_after_ehlo(struct smtp_client *c)
{
	int want_tls = c->tls_mode != SMTP_CLIENT_TLS_OFF && !c->tls_active;
	if (want_tls && (c->caps & CLIENT_CAP_STARTTLS)) {
		client_enter(c, SMTP_CLIENT_STARTTLS);
		client_cmd(c, "%s\r\n", "STARTTLS");
		conn_flush(&c->conn);
		return;
	}
	if (want_tls && client_tls_required(c->tls_mode)) {
		client_end(c, SMTP_CLIENT_ERROR, 0, "", "STARTTLS required but not offered", 0);
		return;
	}
	client_auth_or_ready(c);
}

/* word (upper case) is one of the space-separated words of l[0..n). */
static int client_has_word(const char *l, size_t n, const char *word)
{
	size_t wl = strlen(word);
	for (size_t i = 0; i < n;) {
		size_t j = i;
		while (j < n && l[j] != ' ')
			j++;
		if (j - i == wl && strncasecmp(l + i, word, wl) == 0)
			return 1;
		i = j + 1;
	}
	return 0;
}

/* Capabilities from the EHLO reply lines (keyword = first word). */
static void client_parse_caps(struct smtp_client *c, const struct smtp_reply *r)
{
	for (size_t i = 1; i < r->nlines; i++) {
		size_t n = 0;
		const char *l = smtp_reply_line(r, i, &n);
		if (!l)
			break;
		size_t w = 0;
		while (w < n && l[w] != ' ')
			w++;
		if (w == 10 && strncasecmp(l, "PIPELINING", 10) == 0)
			c->caps |= CLIENT_CAP_PIPELINING;
		else if (w == 8 && strncasecmp(l, "STARTTLS", 8) == 0)
			c->caps |= CLIENT_CAP_STARTTLS;
		else if (w == 8 && strncasecmp(l, "8BITMIME", 8) == 0)
			c->caps |= CLIENT_CAP_8BITMIME;
		else if (w == 8 && strncasecmp(l, "SMTPUTF8", 8) == 0)
			c->caps |= CLIENT_CAP_SMTPUTF8;
		else if (w == 4 && strncasecmp(l, "SIZE", 4) == 0)
			c->caps |= CLIENT_CAP_SIZE; /* the server checks our SIZE= at MAIL */
		else if (n > 5 &&
			 (strncasecmp(l, "AUTH ", 5) == 0 || strncasecmp(l, "AUTH=", 5) == 0) &&
			 client_has_word(l + 5, n - 5, "PLAIN"))
			c->caps |= CLIENT_CAP_AUTH_PLAIN;
	}
}

/* --- transactions ------------------------------------------------------------ */

/* Which command index i of the transaction is (and its recipient). */
static enum smtp_client_state client_cmd_kind(const struct smtp_client *c, size_t i, size_t *rcpt)
{
	if (c->with_rset) {
		if (i == 0)
			return SMTP_CLIENT_RSET;
		i--;
	}
	if (i == 0)
		return SMTP_CLIENT_MAIL;
	if (i - 1 < c->msg->nrecipients) {
		*rcpt = i - 1;
		return SMTP_CLIENT_RCPT;
	}
	return SMTP_CLIENT_DATA;
}

static void client_queue_cmd(struct smtp_client *c, size_t i)
{
	size_t r = 0;
	switch (client_cmd_kind(c, i, &r)) {
	case SMTP_CLIENT_RSET:
		client_cmd(c, "%s\r\n", "RSET");
		break;
	case SMTP_CLIENT_MAIL:
		client_cmd(c, "%s\r\n", buf_cstr(&c->mail_line));
		break;
	case SMTP_CLIENT_RCPT:
		client_cmd(c, "RCPT TO:<%s>\r\n", c->msg->recipients[r]);
		break;
	default:
		client_cmd(c, "%s\r\n", "DATA");
		break;
	}
}

/* Send cursor: pipelined, every command at once; otherwise the next one
 * after each reply. One flush per batch. */
static void client_send_next(struct smtp_client *c)
{
	size_t limit = smtp_client_pipelining(c) ? c->ncmds : c->rx_next + 1;
	while (c->tx_next < limit && c->tx_next < c->ncmds)
		client_queue_cmd(c, c->tx_next++);
	conn_flush(&c->conn);
}

static int client_addrs_8bit(const struct smtp_client_msg *m)
{
	int any = mime8_has_8bit(m->sender, strlen(m->sender));
	for (size_t i = 0; i < m->nrecipients && !any; i++)
		any = mime8_has_8bit(m->recipients[i], strlen(m->recipients[i]));
	return any;
}

/* Refuses the transaction before any command is sent; reported from the
 * timer (never from inside smtp_client_send). */
static void client_local_fail(struct smtp_client *c, int code, const char *enh, const char *why)
{
	c->local_fail = why;
	c->local_code = code;
	c->local_enh = enh;
	KTRACE(smtp_client_local_fail, c->id, code, why);
	client_arm(c, 0); /* still Idle: the result names no command */
}

/* What the message needs from the server and what MAIL FROM declares
 * (RFC 1870 SIZE, RFC 6152 BODY=8BITMIME, RFC 6531 SMTPUTF8), and the
 * conversion of 8-bit content for a server without 8BITMIME. Returns 0, or
 * -1 after client_local_fail(). */
static int client_prepare(struct smtp_client *c, const struct smtp_client_msg *m)
{
	const char *src = NULL;
	size_t len = 0;
	int body8 = 0, head8 = 0;
	c->body = NULL;
	if (m->ncontent == 1 || !m->wire_form) {
		if (m->ncontent == 1) {
			src = m->content[0].iov_base;
			len = m->content[0].iov_len;
		} else {
			buf_reset(&c->scratch);
			for (size_t i = 0; i < m->ncontent; i++)
				buf_append(&c->scratch, m->content[i].iov_base,
					   m->content[i].iov_len);
			src = c->scratch.data;
			len = c->scratch.len;
		}
		if (!m->wire_form)
			c->body = src, c->body_len = len;
		body8 = mime8_has_8bit(src, len);
		head8 = body8 && mime8_has_8bit(src, mime8_header_len(src, len));
	} else {
		for (size_t i = 0; i < m->ncontent; i++) {
			len += m->content[i].iov_len;
			body8 =
			    body8 || mime8_has_8bit(m->content[i].iov_base, m->content[i].iov_len);
		}
	}
	int addr8 = client_addrs_8bit(m);
	if (addr8 && !(c->caps & CLIENT_CAP_SMTPUTF8)) {
		client_local_fail(c, 553, "5.6.7",
				  "SMTPUTF8 is required, but was not offered by the server");
		return -1;
	}
	if (body8 && !(c->caps & CLIENT_CAP_8BITMIME)) {
		struct mime8_result res = {0};
		if (m->wire_form) {
			client_local_fail(c, 554, "5.6.3",
					  "8-bit content in wire form cannot be converted for a "
					  "server without 8BITMIME");
			return -1;
		}
		buf_reset(&c->conv);
		if (mime8_to_7bit(src, len, &c->conv, &res) < 0) {
			buf_reset(&c->conv);
			snprintf(
			    c->local_why_buf, sizeof(c->local_why_buf),
			    "8-bit content cannot be converted for a server without 8BITMIME: %s",
			    res.why);
			client_local_fail(c, 554, "5.6.3", c->local_why_buf);
			return -1;
		}
		KTRACE(smtp_client_8bit_converted, c->id, (uint64_t)res.converted, (uint64_t)len,
		       (uint64_t)c->conv.len);
		c->body = c->conv.data;
		c->body_len = len = c->conv.len;
		body8 = 0;
	}
	buf_reset(&c->mail_line);
	buf_printf(&c->mail_line, "MAIL FROM:<%s>", m->sender);
	if (c->caps & CLIENT_CAP_SIZE)
		buf_printf(&c->mail_line, " SIZE=%zu", len);
	if (body8) /* 8BITMIME offered: otherwise converted above */
		buf_appends(&c->mail_line, " BODY=8BITMIME");
	if ((addr8 || head8) && (c->caps & CLIENT_CAP_SMTPUTF8))
		buf_appends(&c->mail_line, " SMTPUTF8");
	return 0;
}

int smtp_client_send(struct smtp_client *c, const struct smtp_client_msg *msg)
{
	if (c->state != SMTP_CLIENT_IDLE || c->ending || !msg->nrecipients)
		return -EBUSY;
	c->msg = msg;
	c->local_fail = NULL;
	c->with_rset = c->need_rset;
	c->need_rset = 0;
	c->ncmds = (size_t)c->with_rset + 2 + msg->nrecipients;
	c->tx_next = c->rx_next = 0;
	c->mail_ok = c->abort_dot = 0;
	c->accepted = 0;
	c->fail_code = 0;
	c->fail_enh[0] = '\0';
	buf_reset(&c->fail_text);
	if (c->rcpt_cap < msg->nrecipients) {
		c->rcpt_cap = msg->nrecipients;
		c->rcpt_codes = xrealloc(c->rcpt_codes, c->rcpt_cap * sizeof(int));
		c->rcpt_replies = xrealloc(c->rcpt_replies, c->rcpt_cap * sizeof(*c->rcpt_replies));
	}
	memset(c->rcpt_codes, 0, msg->nrecipients * sizeof(int));
	memset(c->rcpt_replies, 0, msg->nrecipients * sizeof(*c->rcpt_replies));
	c->txn_start_ns = clock_mono_ns();
	SMTP_TRACE_CLI(c, .kind = SMTP_TRACE_MESSAGE, .text = msg->sender, .rcpts = msg->recipients,
		       .nrcpts = msg->nrecipients);
	if (client_prepare(c, msg) < 0)
		return 0;
	size_t r;
	client_enter(c, client_cmd_kind(c, 0, &r));
	client_send_next(c);
	return 0;
}

static enum smtp_client_status client_code_status(int code)
{
	if (code >= 200 && code < 300)
		return SMTP_CLIENT_OK;
	if (code == 421)
		return SMTP_CLIENT_DISCONNECTED;
	if (code >= 400 && code < 500)
		return SMTP_CLIENT_TEMPFAIL;
	return SMTP_CLIENT_PERMFAIL;
}

/* Remembers the first failure of the transaction: it decides the outcome. */
static void client_fail(struct smtp_client *c, const struct smtp_reply *r)
{
	if (c->fail_code)
		return;
	c->fail_code = r->code;
	c->fail_state = c->state;
	snprintf(c->fail_enh, sizeof(c->fail_enh), "%s", r->enhanced);
	buf_reset(&c->fail_text);
	buf_append(&c->fail_text, r->text.data, r->text.len);
}

/* Reports the finished transaction. `usable`: the session stays open. */
static void client_txn_report(struct smtp_client *c, enum smtp_client_status st, int code,
			      const char *enh, const char *text, int err, int usable)
{
	const struct smtp_client_msg *msg = c->msg;
	if (!msg)
		return;
	c->msg = NULL;
	enum smtp_client_state state = c->fail_code ? c->fail_state : c->state;
	struct smtp_client_result res = {
	    .status = st,
	    .state = state,
	    .command = smtp_client_state_command(state),
	    .code = code,
	    .enhanced = enh,
	    .text = text,
	    .rcpt_codes = c->rcpt_codes,
	    .rcpt_replies = c->rcpt_replies,
	    .nrcpt = msg->nrecipients,
	    .rcpt_accepted = st == SMTP_CLIENT_OK ? c->accepted : 0,
	    .latency_ns = clock_mono_ns() - c->txn_start_ns,
	    .err = err,
	    .session_usable = usable,
	};
	if (st == SMTP_CLIENT_OK)
		c->messages++;
	KTRACE(smtp_client_txn_done, c->id, status_names[st], code, enh,
	       (uint64_t)res.rcpt_accepted, res.latency_ns / 1000);
	if (usable)
		client_enter(c, SMTP_CLIENT_IDLE);
	if (!c->freed && c->ops->on_done)
		c->ops->on_done(c, &res, c->ud);
}

/* After any failed transaction the next one starts with RSET (RFC 5321
 * 4.1.1.5), as Postfix and Exim do: a server may keep the failed
 * transaction open (Postfix after an end-of-data rejection) and would
 * answer the next MAIL with 503 "nested MAIL command". */
static void client_want_rset(struct smtp_client *c, int code)
{
	if (!c->need_rset)
		KTRACE(smtp_client_rset_due, c->id, state_names[c->state], code);
	c->need_rset = 1;
}

/* The transaction ended on a recorded failure (session still usable). */
static void client_txn_failed(struct smtp_client *c)
{
	client_want_rset(c, c->fail_code);
	client_txn_report(c, client_code_status(c->fail_code), c->fail_code, c->fail_enh,
			  buf_cstr(&c->fail_text), 0, 1);
}

/* A reply about the session rather than this message, to a command the
 * transaction so far does not explain (MAIL, or RCPT or DATA after an
 * accepted MAIL with no refusal before): 503, bad sequence of commands (the
 * server's idea of the session differs from ours), or 530, STARTTLS or
 * authentication required first (RFC 3207 §4, RFC 4954 §6: a property of the
 * session). The message is a transient failure (never a bounce) and the
 * connection is dropped at once, so that nothing pipelined behind it (a DATA
 * the server might take into a transaction of its own) can deliver. */
static int client_session_reply(struct smtp_client *c, enum smtp_client_state kind,
				const struct smtp_reply *r)
{
	if ((r->code != 503 && r->code != 530) || c->fail_code)
		return 0;
	if (kind != SMTP_CLIENT_MAIL && !c->mail_ok)
		return 0; /* the consequence of a refused MAIL (pipelined) */
	char text[300];
	snprintf(text, sizeof(text), "%.*s", (int)r->text.len, r->text.data ? r->text.data : "");
	KTRACE(smtp_client_session_reply, c->id, state_names[kind], r->code, text);
	client_end(c, SMTP_CLIENT_TEMPFAIL, r->code, r->enhanced, text, 0);
	return 1;
}

static void client_send_content(struct smtp_client *c)
{
	const struct smtp_client_msg *m = c->msg;
	client_enter(c, SMTP_CLIENT_DOT);
	size_t start = c->conn.out.len; /* what is written below, for the live trace */
	if (c->abort_dot) {
		/* 354 although nothing may be delivered: end with an empty body */
		conn_write(&c->conn, ".\r\n", 3);
	} else if (m->wire_form) {
		for (size_t i = 0; i < m->ncontent; i++)
			conn_write(&c->conn, m->content[i].iov_base, m->content[i].iov_len);
	} else {
		/* the content, the copy of its pieces or its 7-bit form */
		smtp_data_stuff(&c->conn.out, c->body, c->body_len);
	}
	SMTP_TRACE_CLI(c, .kind = SMTP_TRACE_DATA, .text = c->conn.out.data + start,
		       .len = c->conn.out.len - start);
	conn_flush(&c->conn);
}

/* Reply for command rx_next of the transaction (state says which). */
static void client_txn_reply(struct smtp_client *c, const struct smtp_reply *r)
{
	size_t ri = 0;
	int ok = r->code >= 200 && r->code < 300;
	enum smtp_client_state kind = client_cmd_kind(c, c->rx_next++, &ri);
	if (client_session_reply(c, kind, r))
		return;
	switch (kind) {
	case SMTP_CLIENT_RSET:
		if (!ok) {
			client_end(c, SMTP_CLIENT_ERROR, r->code, r->enhanced, "RSET refused", 0);
			return;
		}
		break;
	case SMTP_CLIENT_MAIL:
		c->mail_ok = ok;
		if (!ok) {
			client_fail(c, r);
			if (!smtp_client_pipelining(c)) {
				client_txn_failed(c);
				return;
			}
		}
		break;
	case SMTP_CLIENT_RCPT:
		c->rcpt_codes[ri] = r->code;
		if (!ok) {
			struct smtp_client_rcpt_reply *rr = &c->rcpt_replies[ri];
			rr->code = r->code;
			snprintf(rr->enhanced, sizeof(rr->enhanced), "%s", r->enhanced);
			snprintf(rr->text, sizeof(rr->text), "%.*s", (int)r->text.len,
				 r->text.data ? r->text.data : "");
		}
		if (ok && c->mail_ok)
			c->accepted++;
		else if (c->mail_ok && !c->fail_code && ri + 1 == c->msg->nrecipients &&
			 !c->accepted)
			client_fail(c, r); /* the last one refused and none accepted */
		if (!smtp_client_pipelining(c) && ri + 1 == c->msg->nrecipients && !c->accepted) {
			if (!c->fail_code)
				client_fail(c, r);
			client_txn_failed(c);
			return;
		}
		break;
	default: /* DATA */
		if (r->code == 354) {
			c->abort_dot = !c->mail_ok || !c->accepted;
			client_send_content(c);
			return;
		}
		if (!c->fail_code)
			client_fail(c, r);
		client_txn_failed(c);
		return;
	}
	client_enter(c, client_cmd_kind(c, c->rx_next, &ri));
	client_send_next(c);
}

/* Reply to the end of data: the transaction's outcome. */
static void client_dot_reply(struct smtp_client *c, const struct smtp_reply *r)
{
	if (c->abort_dot) {
		client_txn_failed(c);
		return;
	}
	for (size_t i = 0; i < c->msg->nrecipients; i++)
		if (c->rcpt_codes[i] >= 200 && c->rcpt_codes[i] < 300)
			c->rcpt_codes[i] = r->code;
	if (r->code < 200 || r->code >= 300) {
		c->accepted = 0;
		client_want_rset(c, r->code);
	}
	char text[512];
	snprintf(text, sizeof(text), "%.*s", (int)r->text.len, r->text.data ? r->text.data : "");
	client_txn_report(c, client_code_status(r->code), r->code, r->enhanced, text, 0, 1);
}

/* --- reply dispatch ---------------------------------------------------------- */

static void client_on_reply(struct smtp_client *c, const struct smtp_reply *r)
{
	char text[256];
	snprintf(text, sizeof(text), "%.*s", (int)r->text.len, r->text.data ? r->text.data : "");
	KTRACE(smtp_client_reply, c->id, state_names[c->state], r->code, text);
	SMTP_TRACE_CLI(c, .kind = SMTP_TRACE_READ, .code = r->code, .enhanced = r->enhanced,
		       .text = r->text.data, .len = r->text.len);
	if (r->code == 421) {
		client_end(c, SMTP_CLIENT_DISCONNECTED, r->code, r->enhanced, text, 0);
		return;
	}
	int ok = r->code >= 200 && r->code < 300;
	switch (c->state) {
	case SMTP_CLIENT_BANNER:
		if (ok)
			client_send_ehlo(c, SMTP_CLIENT_EHLO);
		else
			client_end(c, client_code_status(r->code), r->code, r->enhanced, text, 0);
		break;
	case SMTP_CLIENT_EHLO:
		if (ok) {
			client_parse_caps(c, r);
			client_after_ehlo(c);
		} else if (r->code >= 500 && !c->tls_active) {
			client_send_ehlo(c, SMTP_CLIENT_HELO);
		} else {
			client_end(c, client_code_status(r->code), r->code, r->enhanced, text, 0);
		}
		break;
	case SMTP_CLIENT_HELO:
		if (ok)
			client_after_ehlo(c);
		else
			client_end(c, client_code_status(r->code), r->code, r->enhanced, text, 0);
		break;
	case SMTP_CLIENT_STARTTLS:
		if (r->code == 220)
			client_start_tls(c);
		else if (!client_tls_required(c->tls_mode))
			client_auth_or_ready(c); /* refused: opportunistic continues in plaintext */
		else
			client_end(c, client_code_status(r->code), r->code, r->enhanced, text, 0);
		break;
	case SMTP_CLIENT_AUTH:
		KTRACE(smtp_client_auth, c->id, c->auth_user, r->code);
		if (r->code == 235) {
			client_ready(c);
		} else {
			char why[400];
			snprintf(why, sizeof(why), "AUTH PLAIN as %s refused: %d %s%s%s",
				 c->auth_user, r->code, r->enhanced, r->enhanced[0] ? " " : "",
				 text);
			client_end(c, client_code_status(r->code), r->code, r->enhanced, why, 0);
		}
		break;
	case SMTP_CLIENT_RSET:
	case SMTP_CLIENT_MAIL:
	case SMTP_CLIENT_RCPT:
	case SMTP_CLIENT_DATA:
		client_txn_reply(c, r);
		break;
	case SMTP_CLIENT_DOT:
		client_dot_reply(c, r);
		break;
	case SMTP_CLIENT_QUIT:
		client_end(c, SMTP_CLIENT_OK, r->code, r->enhanced, text, 0);
		break;
	default: /* a reply nobody asked for */
		client_end(c, SMTP_CLIENT_ERROR, r->code, r->enhanced, "unexpected reply", 0);
		break;
	}
}

/* States in which a reply is awaited. */
static int client_expects_reply(const struct smtp_client *c)
{
	switch (c->state) {
	case SMTP_CLIENT_CONNECTING:
	case SMTP_CLIENT_TLS:
	case SMTP_CLIENT_CLOSED:
		return 0;
	default:
		return 1;
	}
}

static void client_read(struct smtp_client *c)
{
	struct buf *in = &c->conn.in;
	while (!c->ending && buf_avail(in) && client_expects_reply(c)) {
		struct smtp_reply *r = &c->rep;
		/* The parser is stateless and bounded (SMTP_REPLY_PARSE_TOTAL_MAX): it
		 * reports an over-long or malformed reply itself; 0 means "wait". */
		int n = smtp_reply_parse(buf_rptr(in), buf_avail(in), r);
		if (n == 0)
			return;
		if (n < 0) {
			char why[160];
			snprintf(why, sizeof(why), "garbage from server: %s",
				 r->error ? r->error : "bad reply");
			client_end(c, SMTP_CLIENT_ERROR, 0, "", why, -EPROTO);
			return;
		}
		/* Consumed before dispatch so that STARTTLS discards exactly the
		 * bytes after its 220; r owns a copy of the text. */
		buf_consume(in, (size_t)n);
		client_on_reply(c, r);
	}
}

/* --- connection callbacks -------------------------------------------------- */

static void client_on_connect(struct conn *cn, int status)
{
	struct smtp_client *c = cn->owner;
	if (c->ending)
		return;
	if (status < 0) {
		char why[128];
		snprintf(why, sizeof(why), "connect to %s failed: %s", cn->peer,
			 uv_strerror(status));
		KTRACE(smtp_client_connect_fail, c->id, cn->peer, uv_strerror(status));
		client_end(c, SMTP_CLIENT_ERROR, 0, "", why, status);
		return;
	}
	task_set_field(c->task, "local", cn->local);
	SMTP_TRACE_CLI(c, .kind = SMTP_TRACE_CONNECTED);
	int rc = conn_start_read(cn);
	if (rc < 0) {
		client_end(c, SMTP_CLIENT_ERROR, 0, "", uv_strerror(rc), rc);
		return;
	}
	client_enter(c, SMTP_CLIENT_BANNER);
}

static void client_on_data(struct conn *cn)
{
	struct smtp_client *c = cn->owner;
	if (c->ending) {
		buf_reset(&cn->in);
		return;
	}
	if (c->state == SMTP_CLIENT_IDLE || client_expects_reply(c))
		client_read(c);
}

static void client_on_eof(struct conn *cn, int err)
{
	struct smtp_client *c = cn->owner;
	if (c->ending)
		return;
	if (c->state == SMTP_CLIENT_QUIT) {
		client_end(c, SMTP_CLIENT_OK, 0, "", "closed after QUIT", 0);
		return;
	}
	char why[128];
	snprintf(why, sizeof(why), "connection %s in state %s",
		 err ? uv_strerror(err) : "closed by peer", state_names[c->state]);
	client_end(c, SMTP_CLIENT_DISCONNECTED, 0, "", why, err ? err : -ECONNRESET);
}

/* The verification verdict of a verifying handshake, traced. */
static void client_trace_verify(struct smtp_client *c, int ok)
{
	long v = conn_tls_verify_result(&c->conn);
	KTRACE(smtp_client_tls_verify, c->id, c->verify_name ? c->verify_name : "",
	       ok && v == X509_V_OK, v == X509_V_OK ? "ok" : X509_verify_cert_error_string(v));
}

/* Ends the session after a failed handshake with the clearest reason:
 * the certificate verification error when there is one. */
static void client_tls_failed(struct smtp_client *c)
{
	char why[320];
	long v = conn_tls_verify_result(&c->conn);
	if (client_tls_verifies(c->tls_mode) && v != X509_V_OK)
		snprintf(why, sizeof(why), "TLS certificate verification failed for %s: %s",
			 c->verify_name && *c->verify_name ? c->verify_name : c->conn.peer,
			 X509_verify_cert_error_string(v));
	else
		snprintf(why, sizeof(why), "TLS handshake failed%s%s",
			 c->conn.tls_error[0] ? ": " : "", c->conn.tls_error);
	client_end(c, SMTP_CLIENT_ERROR, 0, "", why, -EPROTO);
}

static void client_on_tls(struct conn *cn, int ok)
{
	struct smtp_client *c = cn->owner;
	uint64_t dropped = (uint64_t)c->end.err;
	c->end.err = 0;
	KTRACE(smtp_client_tls, c->id, ok, conn_tls_version(cn), dropped);
	SMTP_TRACE_CLI(c, .kind = SMTP_TRACE_TLS, .ok = ok, .text = ok ? conn_tls_version(cn) : "",
		       .text2 = ok ? conn_tls_cipher(cn) : cn->tls_error);
	if (c->ending)
		return;
	if (client_tls_verifies(c->tls_mode))
		client_trace_verify(c, ok);
	if (!ok) {
		client_tls_failed(c);
		return;
	}
	c->tls_active = 1;
	task_set_field(c->task, "tls", conn_tls_version(cn));
	/* RFC 3207: forget everything learned before TLS and greet again */
	client_send_ehlo(c, SMTP_CLIENT_EHLO);
}

static void client_maybe_release(struct smtp_client *c)
{
	if (c->handles > 0)
		return;
	if (c->in_closed_cb)
		return; /* smtp_client_free() inside on_closed: released below */
	if (!c->freed) {
		/* the owner may free inside the callback: it gets a copy */
		char enh[sizeof(c->end_enh)], text[sizeof(c->end_text)];
		memcpy(enh, c->end_enh, sizeof(enh));
		memcpy(text, c->end_text, sizeof(text));
		struct smtp_client_result end = c->end;
		end.enhanced = enh;
		end.text = text;
		c->in_closed_cb = 1;
		if (c->ops->on_closed)
			c->ops->on_closed(c, &end, c->ud);
		c->in_closed_cb = 0;
		if (!c->freed)
			return;
	}
	task_close(c->task);
	c->task = NULL;
	buf_free(&c->fail_text);
	smtp_reply_free(&c->rep);
	buf_free(&c->scratch);
	buf_free(&c->mail_line);
	buf_free(&c->conv);
	free(c->rcpt_codes);
	free(c->rcpt_replies);
	free(c->ehlo_name);
	free(c->auth_user);
	if (c->auth_password) {
		explicit_bzero(c->auth_password, strlen(c->auth_password));
		free(c->auth_password);
	}
	free(c->sni);
	free(c->verify_name);
	free(c);
}

static void client_on_closed(struct conn *cn)
{
	struct smtp_client *c = cn->owner;
	c->handles--;
	client_maybe_release(c);
}

static void client_timer_closed(uv_handle_t *h)
{
	struct smtp_client *c = h->data;
	struct task *t = c->task;
	struct task *prev = task_enter(t);
	c->handles--;
	client_maybe_release(c); /* may free c and close t */
	task_exit(t, prev);
}

static const struct conn_handler client_conn_handler = {
    .on_data = client_on_data,
    .on_eof = client_on_eof,
    .on_tls = client_on_tls,
    .on_closed = client_on_closed,
    .on_connect = client_on_connect,
};

/* Decides the end of the session once: reports an open transaction, then
 * closes the connection and the timer; on_closed follows. */
static void client_end(struct smtp_client *c, enum smtp_client_status st, int code, const char *enh,
		       const char *text, int err)
{
	if (c->ending)
		return;
	c->ending = 1;
	c->end = (struct smtp_client_result){.status = st,
					     .state = c->state,
					     .command = smtp_client_state_command(c->state),
					     .code = code,
					     .err = err,
					     .session_usable = 0};
	snprintf(c->end_enh, sizeof(c->end_enh), "%s", enh ? enh : "");
	snprintf(c->end_text, sizeof(c->end_text), "%s", text ? text : "");
	if (c->msg) {
		/* a 421 or failure in the middle: unless the server already refused */
		if (st == SMTP_CLIENT_DISCONNECTED || st == SMTP_CLIENT_TIMEOUT || !c->fail_code)
			client_txn_report(c, st, code, c->end_enh, c->end_text, err, 0);
		else
			client_txn_report(c, client_code_status(c->fail_code), c->fail_code,
					  c->fail_enh, buf_cstr(&c->fail_text), 0, 0);
	}
	KTRACE(smtp_client_close, c->id, c->conn.peer, c->end_text, c->messages);
	SMTP_TRACE_CLI(c, .kind = SMTP_TRACE_CLOSED, .text = c->end_text);
	client_enter(c, SMTP_CLIENT_CLOSED);
	if (c->conn_init) {
		if (st == SMTP_CLIENT_OK || st == SMTP_CLIENT_DISCONNECTED)
			conn_close(&c->conn);
		else
			conn_abort(&c->conn);
	}
	if (!uv_is_closing((uv_handle_t *)&c->timer))
		uv_close((uv_handle_t *)&c->timer, client_timer_closed);
}

/* --- public API ------------------------------------------------------------- */

struct smtp_client *smtp_client_new(uv_loop_t *loop, const struct smtp_client_opts *opts,
				    const struct smtp_client_ops *ops, void *ud)
{
	struct smtp_client *c = xcalloc(1, sizeof(*c));
	c->loop = loop;
	c->ops = ops;
	c->ud = ud;
	c->ehlo_name = xstrdup(opts->ehlo_name ? opts->ehlo_name : "localhost");
	c->sni = opts->sni ? xstrdup(opts->sni) : NULL;
	if (opts->auth_user && *opts->auth_user) {
		c->auth_user = xstrdup(opts->auth_user);
		c->auth_password = xstrdup(opts->auth_password ? opts->auth_password : "");
		c->auth_without_tls = opts->auth_without_tls;
	}
	c->verify_name = opts->verify_name ? xstrdup(opts->verify_name) : NULL;
	if (opts->source) {
		size_t len = opts->source->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
								 : sizeof(struct sockaddr_in);
		memcpy(&c->source, opts->source, len);
		c->has_source = 1;
	}
	c->tls_mode = opts->tls;
	c->tls_ctx = opts->tls_ctx;
	c->no_pipelining = opts->no_pipelining;
	uint64_t reply_ms =
	    opts->reply_timeout_ms ? opts->reply_timeout_ms : CLIENT_DEFAULT_REPLY_MS;
	for (int i = 0; i < SMTP_CLIENT_STATE__COUNT; i++)
		c->state_ms[i] = reply_ms;
	c->state_ms[SMTP_CLIENT_CONNECTING] =
	    opts->connect_timeout_ms ? opts->connect_timeout_ms : CLIENT_DEFAULT_CONNECT_MS;
	c->state_ms[SMTP_CLIENT_BANNER] =
	    opts->banner_timeout_ms ? opts->banner_timeout_ms : CLIENT_DEFAULT_BANNER_MS;
	c->state_ms[SMTP_CLIENT_DOT] =
	    opts->dot_timeout_ms ? opts->dot_timeout_ms : CLIENT_DEFAULT_DOT_MS;
	for (int i = 0; i < SMTP_CLIENT_STATE__COUNT; i++)
		if (opts->state_timeout_ms[i])
			c->state_ms[i] = opts->state_timeout_ms[i];
	c->task = task_spawn("smtp_client", opts->task_name ? opts->task_name : "smtp_client",
			     opts->parent_task);
	c->id = c->task->id;
	c->state = SMTP_CLIENT_CONNECTING;
	task_set_phase(c->task, state_names[c->state], NULL);
	buf_init(&c->fail_text);
	buf_init(&c->scratch);
	buf_init(&c->mail_line);
	buf_init(&c->conv);
	smtp_reply_init(&c->rep);
	uv_timer_init(loop, &c->timer);
	c->timer.data = c;
	c->handles = 1;
	return c;
}

int smtp_client_connect(struct smtp_client *c, const struct sockaddr *addr)
{
	if (c->conn_init || c->ending)
		return -EINVAL;
	int rc = conn_connect_from(&c->conn, c->loop, addr,
				   c->has_source ? (const struct sockaddr *)&c->source : NULL,
				   &client_conn_handler, c, c->task);
	/* uv_tcp_init ran when the handle has its loop: it must be closed */
	if (c->conn.tcp.loop) {
		c->conn_init = 1;
		c->handles++;
	}
	task_set_field(c->task, "peer", c->conn.peer);
	if (rc < 0)
		return rc;
	KTRACE(smtp_client_connect, c->id, c->conn.peer);
	SMTP_TRACE_CLI(c, .kind = SMTP_TRACE_BEGIN);
	client_enter(c, SMTP_CLIENT_CONNECTING);
	return 0;
}

void smtp_client_quit(struct smtp_client *c)
{
	if (c->ending)
		return;
	if (c->state != SMTP_CLIENT_IDLE) {
		client_end(c, SMTP_CLIENT_OK, 0, "", "closed before the session was ready", 0);
		return;
	}
	client_enter(c, SMTP_CLIENT_QUIT);
	client_cmd(c, "%s\r\n", "QUIT");
	conn_flush(&c->conn);
}

void smtp_client_free(struct smtp_client *c)
{
	if (!c)
		return;
	if (c->freed)
		panic("%s: double free of session %" PRIu64, __func__, c->id);
	c->freed = 1;
	if (!c->ending)
		client_end(c, SMTP_CLIENT_ERROR, 0, "", "aborted by owner", -ECANCELED);
	client_maybe_release(c);
}

enum smtp_client_state smtp_client_state(const struct smtp_client *c)
{
	return c->state;
}

uint64_t smtp_client_id(const struct smtp_client *c)
{
	return c->id;
}

int smtp_client_tls_active(const struct smtp_client *c)
{
	return c->tls_active;
}

int smtp_client_pipelining(const struct smtp_client *c)
{
	return !c->no_pipelining && (c->caps & CLIENT_CAP_PIPELINING);
}

uint64_t smtp_client_messages(const struct smtp_client *c)
{
	return c->messages;
}

const char *smtp_client_local_addr(const struct smtp_client *c)
{
	return c->conn.local;
}

const char *smtp_client_tls_version(const struct smtp_client *c)
{
	return c->tls_active ? conn_tls_version(&c->conn) : "";
}

const char *smtp_client_tls_cipher(const struct smtp_client *c)
{
	return c->tls_active ? conn_tls_cipher(&c->conn) : "";
}
