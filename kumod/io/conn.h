/* SPDX-License-Identifier: Apache-2.0 */
/* A TCP connection on libuv with optional TLS through OpenSSL memory BIOs.
 * The owner embeds struct conn, receives plaintext in conn->in, queues
 * output with conn_write() and sends it with one conn_flush() per batch.
 * Every libuv callback enters the owner's task for accounting. The owner
 * frees its memory only from on_closed. */
#ifndef KUMOD_IO_CONN_H
#define KUMOD_IO_CONN_H

#include <openssl/ssl.h>
#include <stdint.h>
#include <uv.h>

#include "base/buf.h"

struct conn;
struct task;

struct conn_handler {
	void (*on_data)(struct conn *c);		/* new plaintext appended to c->in */
	void (*on_eof)(struct conn *c, int err);	/* peer closed (0) or error (<0) */
	void (*on_tls)(struct conn *c, int ok);		/* STARTTLS handshake finished */
	void (*on_drain)(struct conn *c);		/* optional: every queued byte written */
	void (*on_closed)(struct conn *c);		/* handle closed: owner may free */
	void (*on_connect)(struct conn *c, int status); /* client side: 0 or -errno */
};

enum conn_tls_state {
	CONN_TLS_NONE = 0,
	CONN_TLS_HANDSHAKE,
	CONN_TLS_ACTIVE,
};

struct conn {
	uv_tcp_t tcp;
	const struct conn_handler *h;
	void *owner;
	struct task *task;
	struct buf in;	/* plaintext received, not yet consumed by the owner */
	struct buf out; /* plaintext queued by conn_write, sent by conn_flush */
	SSL *ssl;
	BIO *net_in, *net_out;
	enum conn_tls_state tls;
	int closing;
	int reading;
	int read_paused;
	/* Set by the owner while bulk input (a message body) is expected: such
	 * reads do not extend busy polling, so the loop may sleep and read the
	 * body in larger pieces (kumod_loop_note_io). */
	int bulk_input;
	size_t inflight; /* bytes handed to uv_write and not yet completed */
	char peer[64];	 /* "ip:port" or "[v6]:port" */
	char peer_ip[48];
	int peer_family; /* 4 or 6 */
	uint8_t peer_addr[16];
	char local[64];
	char tls_error[256]; /* why the handshake failed (OpenSSL's text), or "" */
	uv_connect_t connect_req;
};

/* Accepts a pending connection from server into c. 0 or -errno. */
int conn_accept(struct conn *c, uv_stream_t *server, const struct conn_handler *h, void *owner,
		struct task *task);
/* The same for a socket the caller accepted itself (fd is owned by c from
 * now on, closed on failure too). */
int conn_accept_fd(struct conn *c, uv_loop_t *loop, int fd, const struct conn_handler *h,
		   void *owner, struct task *task);
/* Client side: starts connecting to addr; on_connect follows exactly once
 * (never from inside this call). On a synchronous failure returns -errno
 * and on_connect is not called; the handle must still be closed with
 * conn_abort(). */
int conn_connect(struct conn *c, uv_loop_t *loop, const struct sockaddr *addr,
		 const struct conn_handler *h, void *owner, struct task *task);
/* As conn_connect, bound first to the local address `source` (port 0 picks
 * one at connect time, IP_BIND_ADDRESS_NO_PORT) when it is not NULL.
 * -EAFNOSUPPORT when source and addr are of different families; a bind
 * failure (-EADDRNOTAVAIL: not an address of this host) is returned
 * synchronously too. Same rules as conn_connect otherwise. */
int conn_connect_from(struct conn *c, uv_loop_t *loop, const struct sockaddr *addr,
		      const struct sockaddr *source, const struct conn_handler *h, void *owner,
		      struct task *task);
/* Client side STARTTLS: unread plaintext is discarded (response injection);
 * on_tls follows. sni may be NULL. verify_name (may be NULL): the host
 * name or IP address literal the peer certificate must match when ctx
 * verifies (SSL_VERIFY_PEER); a mismatch fails the handshake. Returns bytes
 * dropped. */
size_t conn_starttls_client(struct conn *c, SSL_CTX *ctx, const char *sni, const char *verify_name);
int conn_start_read(struct conn *c);
void conn_pause_read(struct conn *c);
void conn_resume_read(struct conn *c);
void conn_write(struct conn *c, const void *p, size_t n);
/* Hands queued output to the kernel (through TLS when active). */
void conn_flush(struct conn *c);
/* Starts a server-side TLS handshake. Queued output is flushed first (in
 * plaintext); unread plaintext input is discarded: returns how many bytes
 * were dropped so the caller can log them. */
size_t conn_starttls_server(struct conn *c, SSL_CTX *ctx);
/* TLS facts after the handshake (static strings or "" ). */
const char *conn_tls_version(const struct conn *c);
const char *conn_tls_cipher(const struct conn *c);
/* Certificate verification result of the last handshake: X509_V_OK (0) or
 * an X509_V_ERR_* code; X509_V_OK when no TLS was started. */
long conn_tls_verify_result(const struct conn *c);
/* Flushes pending output then closes; on_closed follows exactly once. */
/* Bytes the peer has sent that we have not processed: our input buffer plus what
 * the kernel holds (peeked, not read). Used for the pre-greeting sync check. */
size_t conn_input_pending(struct conn *c);
/* Listener address "127.0.0.1:2025", "[::1]:25", "0:2026" (all IPv4
 * addresses); IPv6 needs brackets. 0 or -EINVAL. */
int conn_parse_listen_addr(const char *s, struct sockaddr_storage *ss);
/* Initialises tcp on loop, binds it to ss and listens with backlog and cb;
 * addr gets the bound address as conn_format_addr writes it (the real port
 * when ss asked for port 0). 0, or a libuv error code: tcp is initialised
 * either way and the caller closes it on failure. */
int conn_listen(uv_loop_t *loop, uv_tcp_t *tcp, const struct sockaddr_storage *ss, int backlog,
		uv_connection_cb cb, char *addr, size_t addrlen);
void conn_close(struct conn *c);
/* Closes at once, dropping pending output. */
void conn_abort(struct conn *c);

/* Formats a sockaddr as "ip:port" / "[ip]:port"; fills ip text too. */
void conn_format_addr(const struct sockaddr *sa, char *out, size_t outlen, char *ip, size_t iplen,
		      int *family, uint8_t *raw);

#endif
