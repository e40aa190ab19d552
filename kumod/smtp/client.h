/* SPDX-License-Identifier: Apache-2.0 */
/* SMTP client session engine: one outbound SMTP connection that greets,
 * optionally upgrades with STARTTLS, sends mail transactions (pipelined
 * when the server offers PIPELINING) and quits. Used by traffic-gen and,
 * later, by the delivery dispatcher.
 *
 * Ownership: the creator owns the object. Each session is one task (kind
 * "smtp_client", phase = the client state). The engine reports through
 * callbacks, never from inside the call that started the work:
 *   on_ready   the session is greeted (and TLS is up when asked for) and
 *              idle: the owner may call smtp_client_send() or _quit().
 *   on_done    one transaction finished (exactly once per accepted
 *              smtp_client_send()); the session is idle again when
 *              result->session_usable, otherwise on_closed follows.
 *   on_closed  the connection ended (after QUIT, 421, disconnect, timeout,
 *              protocol error or connect failure) and every handle is
 *              closed; `why` describes the end. The owner must then call
 *              smtp_client_free() (it may do so inside on_closed).
 * smtp_client_free() may be called at any time: the connection is aborted,
 * no callback fires after it, and the memory is released once the libuv
 * handles have closed.
 *
 * Transactions: MAIL FROM declares SIZE= (RFC 1870), BODY=8BITMIME (RFC
 * 6152, 8-bit content) and SMTPUTF8 (RFC 6531, a non-ASCII address or
 * header) when the server offers them and the message needs them. 8-bit
 * content for a server without 8BITMIME is converted to quoted-printable
 * (proto/mime8.h); when that is impossible, or a non-ASCII address meets a
 * server without SMTPUTF8, the transaction fails (5xx) without a command
 * sent. After any failed transaction the next one starts with RSET. A 503
 * or 530 that the transaction does not explain (to MAIL, or after an
 * accepted MAIL) is about the session: TEMPFAIL and the connection is
 * dropped. */
#ifndef KUMOD_SMTP_CLIENT_H
#define KUMOD_SMTP_CLIENT_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <uv.h>

struct smtp_client;

/* States; also the task phase names (smtp_client_state_name). */
enum smtp_client_state {
	SMTP_CLIENT_CONNECTING = 0,
	SMTP_CLIENT_BANNER,
	SMTP_CLIENT_EHLO,
	SMTP_CLIENT_HELO, /* EHLO refused with 5xx */
	SMTP_CLIENT_STARTTLS,
	SMTP_CLIENT_TLS,  /* handshake in progress */
	SMTP_CLIENT_AUTH, /* AUTH PLAIN sent, waiting for 235 */
	SMTP_CLIENT_IDLE,
	SMTP_CLIENT_RSET,
	SMTP_CLIENT_MAIL,
	SMTP_CLIENT_RCPT,
	SMTP_CLIENT_DATA,
	SMTP_CLIENT_DOT,
	SMTP_CLIENT_QUIT,
	SMTP_CLIENT_CLOSED,
	SMTP_CLIENT_STATE__COUNT,
};

enum smtp_client_tls_mode {
	SMTP_CLIENT_TLS_OFF = 0,
	/* STARTTLS when offered, no certificate verification; plaintext when
	 * not offered. A failed handshake ends the connection (never plaintext
	 * on the same connection). */
	SMTP_CLIENT_TLS_OPPORTUNISTIC_INSECURE,
	/* As above but a server without STARTTLS ends the session. */
	SMTP_CLIENT_TLS_REQUIRED_INSECURE,
	/* As OPPORTUNISTIC_INSECURE, but when STARTTLS is used the certificate
	 * chain and verify_name are verified; a failure ends the session
	 * (KumoMTA: no fallback to plaintext once STARTTLS was offered). */
	SMTP_CLIENT_TLS_OPPORTUNISTIC,
	/* STARTTLS required and the certificate verified. */
	SMTP_CLIENT_TLS_REQUIRED,
};

struct smtp_client_opts {
	const char *ehlo_name; /* required; copied */
	enum smtp_client_tls_mode tls;
	SSL_CTX *tls_ctx; /* optional client context (not owned); NULL = the shared
			     io/tls.h one for the mode (system trust store) */
	const char *sni;  /* optional; copied */
	/* Verifying modes: the name (or IP literal) the certificate must match;
	 * NULL = the chain only. Copied. */
	const char *verify_name;
	/* Optional local address to bind before connecting (port 0); copied. */
	const struct sockaddr *source;
	int no_pipelining; /* 1 = never pipeline even when offered */
	/* SMTP AUTH PLAIN after EHLO (and STARTTLS) when auth_user is set;
	 * refused without TLS unless auth_without_tls. Copied (the password is
	 * wiped when the client is freed and never traced). */
	const char *auth_user, *auth_password;
	int auth_without_tls;
	uint64_t parent_task;  /* parent task id for the registry */
	const char *task_name; /* task name; default = peer address */
	/* Timeouts in milliseconds; 0 selects the default in brackets. */
	uint64_t connect_timeout_ms; /* [10000] TCP connect */
	uint64_t banner_timeout_ms;  /* [60000] 220 greeting */
	uint64_t reply_timeout_ms; /* [60000] EHLO, STARTTLS, TLS handshake, MAIL, RCPT, DATA, RSET,
				      QUIT */
	uint64_t dot_timeout_ms;   /* [600000] reply to the end of data */
	/* Per waiting state (KumoMTA's ehlo_timeout, mail_from_timeout, ...):
	 * a non-zero entry wins over the fields above for that state. */
	uint64_t state_timeout_ms[SMTP_CLIENT_STATE__COUNT];
};

struct smtp_client_msg {
	const char *sender; /* reverse-path without brackets ("" = null sender) */
	const char *const *recipients;
	size_t nrecipients; /* >= 1 */
	/* Content as pieces, concatenated in order. */
	const struct iovec *content;
	size_t ncontent;
	/* 0: content is raw RFC 5322 text; it is CRLF-normalised and
	 * dot-stuffed with smtp_data_stuff() and terminated.
	 * 1: content is already in wire form: CRLF line ends, dot-stuffed and
	 * ending with the CRLF "." CRLF terminator (smtp_data_stuff() output);
	 * sent as is. Lets a generator stuff a shared body once. */
	int wire_form;
};

enum smtp_client_status {
	SMTP_CLIENT_OK = 0,	  /* final 2xx for at least one recipient */
	SMTP_CLIENT_TEMPFAIL,	  /* 4xx (other than 421) */
	SMTP_CLIENT_PERMFAIL,	  /* 5xx */
	SMTP_CLIENT_DISCONNECTED, /* 421 or the connection was lost */
	SMTP_CLIENT_TIMEOUT,	  /* a wait timed out */
	SMTP_CLIENT_ERROR,	  /* connect failure, TLS failure, garbage reply */
};

/* A refused RCPT's reply, per recipient (code 0: the RCPT was accepted). */
struct smtp_client_rcpt_reply {
	int code;
	char enhanced[16];
	char text[256];
};

struct smtp_client_result {
	enum smtp_client_status status;
	enum smtp_client_state state; /* state whose reply (or failure) decided */
	/* its command for log records ("MAIL FROM", "RCPT TO", "." for the end
	 * of data...); NULL when none was sent (refused before MAIL) */
	const char *command;
	int code;	       /* reply code deciding the outcome; 0 when none */
	const char *enhanced;  /* "4.5.3" or "" */
	const char *text;      /* reply text (last line, after code/enhanced) or error */
	const int *rcpt_codes; /* per recipient: RCPT reply, or final reply when accepted */
	/* per recipient: the RCPT reply's texts when it was refused, empty when
	 * accepted (the final reply, code/enhanced/text above, applies) */
	const struct smtp_client_rcpt_reply *rcpt_replies;
	size_t nrcpt;
	size_t rcpt_accepted; /* recipients the server took the message for */
	uint64_t latency_ns;  /* from the first command of the transaction to its last reply */
	int err;	      /* -errno for connect/I/O errors, else 0 */
	int session_usable;   /* 1 = session idle and reusable */
};

struct smtp_client_ops {
	void (*on_ready)(struct smtp_client *c, void *ud);
	void (*on_done)(struct smtp_client *c, const struct smtp_client_result *r, void *ud);
	/* r describes why the session ended (status OK after a clean QUIT). */
	void (*on_closed)(struct smtp_client *c, const struct smtp_client_result *r, void *ud);
};

struct smtp_client *smtp_client_new(uv_loop_t *loop, const struct smtp_client_opts *opts,
				    const struct smtp_client_ops *ops, void *ud);
/* Starts connecting; 0, or -errno when it failed synchronously (then no
 * callback fires and the caller frees the object). */
int smtp_client_connect(struct smtp_client *c, const struct sockaddr *addr);
/* Starts a transaction; only when idle (after on_ready or a usable
 * on_done). The message and its buffers must stay valid until on_done.
 * 0 or -EBUSY when not idle. */
int smtp_client_send(struct smtp_client *c, const struct smtp_client_msg *msg);
/* Sends QUIT when idle (or closes when not yet greeted); on_closed follows. */
void smtp_client_quit(struct smtp_client *c);
/* NULL-safe; see the ownership rules above. */
void smtp_client_free(struct smtp_client *c);

enum smtp_client_state smtp_client_state(const struct smtp_client *c);
const char *smtp_client_state_name(enum smtp_client_state s);
/* The command a state waits on the reply of ("MAIL FROM", "."), or NULL. */
const char *smtp_client_state_command(enum smtp_client_state s);
const char *smtp_client_status_name(enum smtp_client_status s);
uint64_t smtp_client_id(const struct smtp_client *c); /* task id */
int smtp_client_tls_active(const struct smtp_client *c);
int smtp_client_pipelining(const struct smtp_client *c);    /* offered and in use */
uint64_t smtp_client_messages(const struct smtp_client *c); /* transactions completed */
/* Our end of the connection ("ip:port", "" before connect) and, with TLS
 * active, the protocol version and cipher ("" otherwise). */
const char *smtp_client_local_addr(const struct smtp_client *c);
const char *smtp_client_tls_version(const struct smtp_client *c);
const char *smtp_client_tls_cipher(const struct smtp_client *c);

#endif
