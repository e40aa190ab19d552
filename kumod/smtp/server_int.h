/* SPDX-License-Identifier: Apache-2.0 */
/* Private layout shared by the smtp server files (listener.c, session.c). */
#ifndef KUMOD_SMTP_SERVER_INT_H
#define KUMOD_SMTP_SERVER_INT_H

#include <jansson.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "base/buf.h"
#include "base/peertab.h"
#include "io/conn.h"
#include "proto/smtp_cmd.h"
#include "proto/smtp_data.h"
#include "proto/smtp_line.h"
#include "smtp/server.h"
#include "smtp/transcript.h"

struct task;
struct message;
struct message_spill;
struct smtp_spill_write;

struct smtp_listener {
	uv_poll_t poll; /* readable listening socket: accepted by listener.c itself */
	uv_timer_t backoff;
	uv_loop_t *loop;
	int fd;
	int open_handles;
	uint64_t backoff_ms; /* current pause after EMFILE/ENFILE, 0 when accepting */
	struct smtp_listener_config cfg;
	struct task *task;
	SSL_CTX *tls_ctx;
	size_t nconn;
	struct peertab clients; /* per client address (max_connections_per_client) */
	char addr[64];
	int closed;
	struct smtp_listener *next;
};

enum smtp_state {
	SMTP_STATE_GREETING = 0, /* before our 220 */
	SMTP_STATE_HELO,	 /* greeted, waiting for EHLO/HELO */
	SMTP_STATE_READY,	 /* after EHLO, no transaction */
	SMTP_STATE_MAIL,	 /* MAIL accepted */
	SMTP_STATE_RCPT,	 /* at least one RCPT accepted */
	SMTP_STATE_DATA,	 /* reading content */
	SMTP_STATE_TLS,		 /* handshake in progress */
	SMTP_STATE_SPOOLING,	 /* end of data: the reply waits for the spool */
	SMTP_STATE_REJECTED,	 /* 554 greeting: only QUIT */
	SMTP_STATE_CLOSING,
	SMTP_STATE__COUNT,
};

struct smtp_session {
	struct conn conn;
	uv_timer_t timer;
	int open_handles;
	struct smtp_listener *l;
	struct task *task;
	uint64_t id;
	enum smtp_state state;
	struct smtp_line_reader lr;
	struct smtp_data_framer df;
	char line[1024];
	/* smtp_server_rewrite_response: a handler is defined (checked once per
	 * session), a call is running (no nesting), and the command being
	 * answered (s->line, "AUTH" without its credentials, "DATA" for the end
	 * of data, NULL before the first command) */
	int rewrite_response, rewriting;
	int data_event; /* an smtp_server_data handler is defined (checked once per session) */
	const char *reply_cmd;
	char *helo;
	int esmtp;
	int relay_peer;
	struct message *msg; /* open transaction */
	size_t messages;     /* transactions completed on this connection */
	unsigned errors, junk;
	int tarpit;	/* reply delayed: output held until the timer fires */
	int processing; /* inside process_input (re-entrancy guard) */
	json_t *meta;	/* connection metadata */
	uint64_t data_started_ns;
	uint64_t size_hint;	    /* SIZE= of the current MAIL FROM, 0 when none */
	uint64_t data_window_bytes; /* DATA bytes since the last client_timeout window */
	int txn_smtputf8;	    /* the open transaction's MAIL carried SMTPUTF8 */
	struct smtp_rx_txn *txn;    /* spooling transaction awaiting its reply */
	/* AUTH (RFC 4954): the exchange in progress, what it learnt so far */
	enum {
		AUTH_NONE,
		AUTH_PLAIN_WAIT,
		AUTH_LOGIN_USER,
		AUTH_LOGIN_PASS
	} auth_step;
	char *auth_login_user; /* AUTH LOGIN's user name until the password comes */
	int authenticated;
	unsigned auth_failures;
	struct peer_entry *client; /* per-client-address counters (listener limits) */
	size_t rx_accounted;	   /* DATA buffer bytes counted in the memory budget */
	const char *data_refused;  /* DATA being discarded: "memory", "allocation", "spool" */
	/* Streamed DATA (data_spill_threshold): msg->data keeps the header
	 * section; the body goes through spill_buf into the spill file, one
	 * write in flight at a time (input paused meanwhile). */
	struct message_spill *spill;
	struct buf spill_buf;
	struct smtp_spill_write *spill_wr; /* the write in flight, or NULL */
	int spill_skip;			   /* this DATA stays in memory */
	struct smtp_transcript ts;	   /* fed by smtp_trace: catcher, console (off: empty) */
	uint32_t hold_ms;		   /* kumo.delay_reply: the held reply's delay */
	int close_after_hold;		   /* kumo.disconnect with a held reply: close once sent */
	/* smtp_server_connection_accepted waiting (kumo.dns, kumo.http): the
	 * call to cancel if the client goes away, and the greeting's rate check */
	uint64_t greet_call;
	int greet_rate_hit;
	/* smtp_server_ehlo, _mail_from or _rcpt_to waiting: the call, and the
	 * command it answers (input is not processed until it returns) */
	uint64_t cmd_call;
	enum smtp_verb wait_verb; /* EHLO, HELO, MAIL or RCPT */
	char *wait_sender;	  /* its argument: domain, sender or recipient */
	json_t *wait_ext;	  /* EHLO: the extensions (the handler may replace them) */
	uint64_t wait_size_hint;
	int wait_smtputf8;
	struct smtp_session *next, *prev;
};

/* The live (not closing) session run by that task, or NULL: a walk over
 * the open sessions, for the console's session view. */
struct smtp_session *smtp_session__by_task(uint64_t task_id);
const char *smtp_session__state_name(const struct smtp_session *s);

#endif
