/* SPDX-License-Identifier: Apache-2.0 */
/* traffic-gen SMTP driver: one generator client keeps one smtp_client
 * session and sends back to back; it reconnects (without counting a
 * failure) after 421, a per-connection limit (451 4.5.3), a timeout or a
 * lost connection, and stops on other failures unless --keep-going. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "base/buf.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "ktrace.h"
#include "smtp/client.h"
#include "tg.h"

/* Reconnects in a row without a delivered message before a client gives
 * up: bounds a server that accepts and drops every connection. */
#define TG_MAX_RETRIES 10
#define TG_RETRY_DELAY_MS 100

struct tg_smtp {
	struct tg_client base;
	struct smtp_client *sc;
	uv_timer_t wait; /* throttle and reconnect delays */
	struct task *task;
	char ehlo[256];
	char sender[320], rcpt[320];
	const char *rcpts[1];
	struct buf hdr;
	struct iovec iov[2];
	struct smtp_client_msg msg;
	int ready; /* session idle and usable */
	int in_txn;
	int waiting;   /* wait timer armed */
	int pending;   /* a claimed message waits for its throttle slot */
	int reconnect; /* open a new session once this one closed */
	int stopped;   /* no more sessions */
	int finished;  /* reported to the run */
	int closing;   /* tg_client_free: timer closing */
	unsigned retries;
};

static void smtp_next(struct tg_smtp *s);
static void smtp_send_one(struct tg_smtp *s);
static void smtp_connect(struct tg_smtp *s);

static void smtp_finish(struct tg_smtp *s, const char *why)
{
	if (s->finished)
		return;
	s->finished = 1;
	s->stopped = 1;
	KTRACE(tg_client_stop, s->base.idx, why);
	tg_client_finished(s->base.tg);
}

static int smtp_wants_reconnect(const struct smtp_client_result *r)
{
	if (r->status == SMTP_CLIENT_DISCONNECTED || r->status == SMTP_CLIENT_TIMEOUT)
		return 1;
	/* per-connection message limit */
	return r->code == 451 && r->enhanced && strcmp(r->enhanced, "4.5.3") == 0;
}

static void smtp_wait_cb(uv_timer_t *t)
{
	struct tg_smtp *s = t->data;
	struct task *prev = task_enter(s->task);
	s->waiting = 0;
	if (!s->sc) {
		smtp_connect(s);
	} else if (s->pending) {
		s->pending = 0;
		if (s->stopped || tg_stopping(s->base.tg)) {
			tg_unclaim(s->base.tg, 1);
			smtp_client_quit(s->sc);
		} else {
			smtp_send_one(s);
		}
	}
	task_exit(s->task, prev);
}

static void smtp_wait(struct tg_smtp *s, uint64_t ms)
{
	s->waiting = 1;
	task_set_phase(s->task, s->sc ? "Throttled" : "ReconnectDelay", "timer");
	uv_timer_start(&s->wait, smtp_wait_cb, ms ? ms : 1, 0);
}

static void smtp_send_one(struct tg_smtp *s)
{
	struct tg *tg = s->base.tg;
	tg_make_message(tg, s->sender, sizeof(s->sender), s->rcpt, sizeof(s->rcpt), &s->hdr);
	s->rcpts[0] = s->rcpt;
	s->iov[0] = (struct iovec){s->hdr.data, s->hdr.len};
	s->iov[1] = (struct iovec){tg->body_wire.data, tg->body_wire.len};
	s->msg = (struct smtp_client_msg){.sender = s->sender,
					  .recipients = s->rcpts,
					  .nrecipients = 1,
					  .content = s->iov,
					  .ncontent = 2,
					  .wire_form = 1};
	s->in_txn = 1;
	if (smtp_client_send(s->sc, &s->msg) < 0)
		panic("%s: session not idle", __func__);
}

/* The session is idle: send the next message, wait for the throttle, or quit. */
static void smtp_next(struct tg_smtp *s)
{
	struct tg *tg = s->base.tg;
	if (s->stopped || tg_stopping(tg) || !tg_claim(tg, 1)) {
		s->stopped = 1;
		smtp_client_quit(s->sc);
		return;
	}
	uint64_t delay = tg_throttle_delay(tg, 1);
	if (delay >= 1000000) {
		s->pending = 1; /* the claim and the slot are kept */
		smtp_wait(s, delay / 1000000);
		return;
	}
	smtp_send_one(s);
}

static void on_ready(struct smtp_client *c, void *ud)
{
	struct tg_smtp *s = ud;
	struct tg *tg = s->base.tg;
	s->ready = 1;
	tg->ever_connected = 1;
	tg->open_conns++;
	task_set_phase(s->task, "Sending", NULL);
	smtp_next(s);
}

static void on_done(struct smtp_client *c, const struct smtp_client_result *r, void *ud)
{
	struct tg_smtp *s = ud;
	struct tg *tg = s->base.tg;
	s->in_txn = 0;
	if (r->status == SMTP_CLIENT_OK || !smtp_wants_reconnect(r))
		tg_count_reply(tg, r->code, 1);
	if (r->status == SMTP_CLIENT_OK) {
		tg->sent++;
		hist_record(&tg->lat, r->latency_ns);
		s->retries = 0;
	} else if (smtp_wants_reconnect(r)) {
		tg_unclaim(tg, 1);
		s->reconnect = 1;
	} else {
		tg->failed++;
		if (!tg->o.keep_going) {
			char why[300];
			snprintf(why, sizeof(why), "message failed: %d %s %s", r->code,
				 r->enhanced ? r->enhanced : "", r->text ? r->text : "");
			tg_warn(tg, "client %u: %s", s->base.idx, why);
			smtp_finish(s, why);
		}
	}
	if (!r->session_usable)
		return; /* on_closed follows */
	if (s->reconnect) {
		smtp_client_quit(s->sc);
		return;
	}
	if (s->stopped) {
		smtp_client_quit(s->sc);
		return;
	}
	smtp_next(s);
}

/* Connection-level outcome without a message in flight. */
static void smtp_session_error(struct tg_smtp *s, const struct smtp_client_result *r)
{
	struct tg *tg = s->base.tg;
	if (r->status == SMTP_CLIENT_ERROR && r->state == SMTP_CLIENT_CONNECTING &&
	    !tg->ever_connected) {
		tg_fatal(tg, "cannot connect to %s: %s", tg->hostport,
			 r->err ? uv_strerror(r->err) : r->text);
		return;
	}
	if (r->status == SMTP_CLIENT_DISCONNECTED || r->status == SMTP_CLIENT_TIMEOUT ||
	    (r->status == SMTP_CLIENT_ERROR && r->state == SMTP_CLIENT_CONNECTING)) {
		s->reconnect = 1;
		return;
	}
	/* garbage, TLS failure, greeting refused: a connection error */
	tg->conn_errors++;
	tg_warn(tg, "client %u: session failed in %s: %s", s->base.idx,
		smtp_client_state_name(r->state), r->text ? r->text : "");
	if (tg->o.keep_going && !tg_stopping(tg))
		s->reconnect = 1;
	else
		smtp_finish(s, r->text ? r->text : "session failed");
}

static void on_closed(struct smtp_client *c, const struct smtp_client_result *r, void *ud)
{
	struct tg_smtp *s = ud;
	struct tg *tg = s->base.tg;
	if (s->ready)
		tg->open_conns--;
	s->ready = 0;
	smtp_client_free(c);
	s->sc = NULL;
	if (!s->reconnect && r->status != SMTP_CLIENT_OK)
		smtp_session_error(s, r);
	if (s->finished)
		return;
	if (!s->reconnect || s->stopped || tg_stopping(tg)) {
		smtp_finish(s, "done");
		return;
	}
	s->reconnect = 0;
	tg->reconnects++;
	if (++s->retries > TG_MAX_RETRIES) {
		tg->conn_errors++;
		tg_warn(tg,
			"client %u: giving up after %u reconnects without a delivered message "
			"(last: %s)",
			s->base.idx, TG_MAX_RETRIES, r->text ? r->text : "");
		smtp_finish(s, "too many reconnects");
		return;
	}
	KTRACE(tg_reconnect, s->base.idx, r->text ? r->text : "");
	if (s->retries > 1)
		smtp_wait(s, TG_RETRY_DELAY_MS);
	else
		smtp_connect(s);
}

static const struct smtp_client_ops tg_smtp_ops = {
    .on_ready = on_ready,
    .on_done = on_done,
    .on_closed = on_closed,
};

static void smtp_connect(struct tg_smtp *s)
{
	struct tg *tg = s->base.tg;
	snprintf(s->ehlo, sizeof(s->ehlo), "%s", tg_pick_domain(tg));
	struct smtp_client_opts o = {
	    .ehlo_name = s->ehlo,
	    .tls = tg->o.starttls ? SMTP_CLIENT_TLS_OPPORTUNISTIC_INSECURE : SMTP_CLIENT_TLS_OFF,
	    .parent_task = s->task->id,
	    .task_name = tg->hostport,
	    .connect_timeout_ms = tg->o.timeout_ms < 10000 ? tg->o.timeout_ms : 10000,
	    .banner_timeout_ms = tg->o.timeout_ms,
	    .reply_timeout_ms = tg->o.timeout_ms,
	    .dot_timeout_ms = tg->o.timeout_ms,
	};
	task_set_phase(s->task, "Connecting", NULL);
	s->sc = smtp_client_new(tg->loop, &o, &tg_smtp_ops, s);
	int rc = smtp_client_connect(s->sc, (const struct sockaddr *)&tg->addr);
	if (rc < 0) {
		smtp_client_free(s->sc);
		s->sc = NULL;
		tg_fatal(tg, "cannot connect to %s: %s", tg->hostport, uv_strerror(rc));
	}
}

static void smtp_start(struct tg_client *cl)
{
	smtp_connect((struct tg_smtp *)cl);
}

static void smtp_stop(struct tg_client *cl)
{
	struct tg_smtp *s = (struct tg_smtp *)cl;
	s->stopped = 1;
	if (s->waiting) {
		uv_timer_stop(&s->wait);
		s->waiting = 0;
		if (s->pending)
			tg_unclaim(cl->tg, 1);
		s->pending = 0;
		if (s->sc)
			smtp_client_quit(s->sc);
		else
			smtp_finish(s, "stopped");
	} else if (s->sc && !s->ready && !s->in_txn && tg_stopping(cl->tg) &&
		   cl->tg->stop == TG_STOP_FATAL) {
		smtp_client_free(s->sc); /* fatal: abort sessions still greeting */
		s->sc = NULL;
		smtp_finish(s, "stopped");
	}
}

static void smtp_timer_closed(uv_handle_t *h)
{
	struct tg_smtp *s = h->data;
	buf_free(&s->hdr);
	task_close(s->task);
	free(s);
}

static void smtp_free(struct tg_client *cl)
{
	struct tg_smtp *s = (struct tg_smtp *)cl;
	if (s->sc)
		smtp_client_free(s->sc);
	s->sc = NULL;
	uv_close((uv_handle_t *)&s->wait, smtp_timer_closed);
}

static int smtp_done(const struct tg_client *cl)
{
	return ((const struct tg_smtp *)cl)->finished;
}

static const struct tg_client_ops smtp_client_ops_tbl = {
    .start = smtp_start,
    .stop = smtp_stop,
    .free = smtp_free,
    .done = smtp_done,
};

struct tg_client *tg_smtp_client_new(struct tg *tg, unsigned idx)
{
	struct tg_smtp *s = xcalloc(1, sizeof(*s));
	s->base.ops = &smtp_client_ops_tbl;
	s->base.tg = tg;
	s->base.idx = idx;
	char name[32];
	snprintf(name, sizeof(name), "client-%u", idx);
	s->task = task_spawn("traffic_gen_client", name, tg->task ? tg->task->id : 0);
	buf_init(&s->hdr);
	uv_timer_init(tg->loop, &s->wait);
	s->wait.data = s;
	return &s->base;
}
