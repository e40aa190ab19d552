/* SPDX-License-Identifier: Apache-2.0 */
/* TCP connections on libuv with TLS through memory BIOs. */
#include "io/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "base/task.h"
#include "base/xalloc.h"
#include "io/loop.h"
#include "ktrace.h"

#define CONN_READ_SIZE 65536
#define CONN_MAX_IN (4u << 20)

struct conn_wreq {
	uv_write_t req;
	struct conn *c;
	size_t len;
	char data[];
};

/* libuv reads complete synchronously inside the read callback, so one
 * buffer per loop is enough. */
static char conn_read_buf[CONN_READ_SIZE];

void conn_format_addr(const struct sockaddr *sa, char *out, size_t outlen, char *ip, size_t iplen,
		      int *family, uint8_t *raw)
{
	char tmp[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, tmp, sizeof(tmp));
		port = ntohs(s4->sin_port);
		snprintf(out, outlen, "%s:%d", tmp, port);
		if (family)
			*family = 4;
		if (raw)
			memcpy(raw, &s4->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, tmp, sizeof(tmp));
		port = ntohs(s6->sin6_port);
		snprintf(out, outlen, "[%s]:%d", tmp, port);
		if (family)
			*family = 6;
		if (raw)
			memcpy(raw, &s6->sin6_addr, 16);
	} else {
		snprintf(out, outlen, "?");
	}
	if (ip)
		snprintf(ip, iplen, "%s", tmp);
}

static void conn_close_cb(uv_handle_t *h)
{
	struct conn *c = h->data;
	struct task *prev = task_enter(c->task);
	buf_free(&c->in);
	buf_free(&c->out);
	if (c->ssl)
		SSL_free(c->ssl); /* frees the BIOs too */
	c->ssl = NULL;
	struct task *t = c->task;
	c->h->on_closed(c); /* may free c */
	task_exit(t, prev);
}

static void conn_do_close(struct conn *c)
{
	if (uv_is_closing((uv_handle_t *)&c->tcp))
		return;
	uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

static void conn_write_cb(uv_write_t *req, int status)
{
	struct conn_wreq *w = (struct conn_wreq *)req;
	struct conn *c = w->c;
	struct task *prev = task_enter(c->task);
	c->inflight -= w->len;
	free(w);
	if (status < 0 && !c->closing) {
		c->closing = 1;
		c->h->on_eof(c, status);
	} else if (c->inflight == 0) {
		if (c->closing)
			conn_do_close(c);
		else if (c->h->on_drain)
			c->h->on_drain(c);
	}
	task_exit(c->task, prev);
}

static void conn_send_raw(struct conn *c, const char *p, size_t n)
{
	if (!n || uv_is_closing((uv_handle_t *)&c->tcp))
		return;
	/* With nothing queued, try the socket first: a reply that fits the send
	 * buffer then needs no request, no copy and no write callback (libuv
	 * re-arms epoll after every completed uv_write, one extra system call per
	 * reply). Connections that pace themselves on drain callbacks keep the
	 * queued path, so on_drain still follows every write. Errors other than
	 * EAGAIN fall through to uv_write, which reports them to on_eof. */
	if (c->inflight == 0 && !c->h->on_drain) {
		uv_buf_t b0 = uv_buf_init((char *)p, (unsigned)n);
		int done = uv_try_write((uv_stream_t *)&c->tcp, &b0, 1);
		if (done > 0 && (size_t)done == n)
			return;
		if (done > 0) {
			p += done;
			n -= (size_t)done;
		}
	}
	struct conn_wreq *w = xmalloc(sizeof(*w) + n);
	memcpy(w->data, p, n);
	w->c = c;
	w->len = n;
	uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
	c->inflight += n;
	int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, conn_write_cb);
	if (rc < 0) {
		c->inflight -= n;
		free(w);
	}
}

/* Moves TLS records produced by OpenSSL to the socket. */
static void conn_flush_tls_out(struct conn *c)
{
	char tmp[16384];
	int n;
	while ((n = BIO_read(c->net_out, tmp, sizeof(tmp))) > 0)
		conn_send_raw(c, tmp, (size_t)n);
}

void conn_write(struct conn *c, const void *p, size_t n)
{
	buf_append(&c->out, p, n);
}

void conn_flush(struct conn *c)
{
	if (!c->out.len || uv_is_closing((uv_handle_t *)&c->tcp))
		return;
	if (c->tls == CONN_TLS_HANDSHAKE)
		return; /* never leak plaintext into a handshake; sent once active */
	if (c->tls == CONN_TLS_ACTIVE) {
		int n = SSL_write(c->ssl, c->out.data, (int)c->out.len);
		(void)n; /* memory BIOs never block a write */
		conn_flush_tls_out(c);
	} else {
		conn_send_raw(c, c->out.data, c->out.len);
	}
	buf_reset(&c->out);
}

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	b->base = conn_read_buf;
	b->len = sizeof(conn_read_buf);
}

static void conn_tls_read(struct conn *c)
{
	if (c->tls == CONN_TLS_HANDSHAKE) {
		int rc = SSL_do_handshake(c->ssl);
		conn_flush_tls_out(c);
		if (rc == 1) {
			c->tls = CONN_TLS_ACTIVE;
			uint64_t tid = c->task ? c->task->id : 0;
			if (SSL_is_server(c->ssl))
				KTRACE(tls_handshake, tid, conn_tls_version(c), conn_tls_cipher(c));
			else
				KTRACE(tls_client_handshake, tid, conn_tls_version(c),
				       conn_tls_cipher(c));
			c->h->on_tls(c, 1);
			if (c->closing)
				return;
		} else {
			int e = SSL_get_error(c->ssl, rc);
			if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
				return;
			char why[256];
			ERR_error_string_n(ERR_get_error(), why, sizeof(why));
			snprintf(c->tls_error, sizeof(c->tls_error), "%s", why);
			if (SSL_is_server(c->ssl))
				KTRACE(tls_fail, c->task ? c->task->id : 0, why);
			else
				KTRACE(tls_client_fail, c->task ? c->task->id : 0, why);
			ERR_clear_error();
			c->h->on_tls(c, 0);
			return;
		}
	}
	size_t before = c->in.len;
	for (;;) {
		buf_reserve(&c->in, 16384);
		int n = SSL_read(c->ssl, c->in.data + c->in.len, 16384);
		if (n <= 0) {
			int e = SSL_get_error(c->ssl, n);
			conn_flush_tls_out(c);
			if (e == SSL_ERROR_WANT_READ)
				break;
			ERR_clear_error();
			if (c->in.len > before)
				c->h->on_data(c);
			if (!c->closing)
				c->h->on_eof(c, e == SSL_ERROR_ZERO_RETURN ? 0 : -EPROTO);
			return;
		}
		c->in.len += (size_t)n;
	}
	if (c->in.len > before)
		c->h->on_data(c);
}

static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct conn *c = s->data;
	if (nread == 0)
		return;
	if (!c->bulk_input)
		kumod_loop_note_io();
	struct task *prev = task_enter(c->task);
	if (nread < 0) {
		uv_read_stop(s);
		c->reading = 0;
		if (!c->closing)
			c->h->on_eof(c, nread == UV_EOF ? 0 : (int)nread);
	} else if (c->closing) {
		/* discard input after we decided to close */
	} else if (c->tls != CONN_TLS_NONE) {
		BIO_write(c->net_in, b->base, (int)nread);
		conn_tls_read(c);
	} else {
		buf_append(&c->in, b->base, (size_t)nread);
		c->h->on_data(c);
	}
	task_exit(c->task, prev);
}

static int conn_accepted(struct conn *c, uv_loop_t *loop, uv_stream_t *server, int fd,
			 const struct conn_handler *h, void *owner, struct task *task)
{
	memset(c, 0, sizeof(*c));
	c->h = h;
	c->owner = owner;
	c->task = task;
	kumod_loop_note_io();
	int rc = uv_tcp_init(loop, &c->tcp);
	if (rc < 0) {
		if (fd >= 0)
			close(fd);
		return rc;
	}
	c->tcp.data = c;
	rc = server ? uv_accept(server, (uv_stream_t *)&c->tcp) : uv_tcp_open(&c->tcp, fd);
	if (rc < 0) {
		if (!server)
			close(fd);
		return rc;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
		conn_format_addr((struct sockaddr *)&ss, c->peer, sizeof(c->peer), c->peer_ip,
				 sizeof(c->peer_ip), &c->peer_family, c->peer_addr);
	len = sizeof(ss);
	if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
		conn_format_addr((struct sockaddr *)&ss, c->local, sizeof(c->local), NULL, 0, NULL,
				 NULL);
	return 0;
}

int conn_accept(struct conn *c, uv_stream_t *server, const struct conn_handler *h, void *owner,
		struct task *task)
{
	return conn_accepted(c, server->loop, server, -1, h, owner, task);
}

int conn_accept_fd(struct conn *c, uv_loop_t *loop, int fd, const struct conn_handler *h,
		   void *owner, struct task *task)
{
	return conn_accepted(c, loop, NULL, fd, h, owner, task);
}

static void conn_connect_cb(uv_connect_t *req, int status)
{
	struct conn *c = req->data;
	struct task *prev = task_enter(c->task);
	if (status == 0) {
		struct sockaddr_storage ss;
		int len = sizeof(ss);
		if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
			conn_format_addr((struct sockaddr *)&ss, c->local, sizeof(c->local), NULL,
					 0, NULL, NULL);
		uv_tcp_nodelay(&c->tcp, 1);
	}
	c->h->on_connect(c, status);
	task_exit(c->task, prev);
}

int conn_connect(struct conn *c, uv_loop_t *loop, const struct sockaddr *addr,
		 const struct conn_handler *h, void *owner, struct task *task)
{
	return conn_connect_from(c, loop, addr, NULL, h, owner, task);
}

/* Binds the not yet connected handle to source (port 0 left to connect). */
static int conn_bind_source(struct conn *c, const struct sockaddr *source)
{
	int rc = uv_tcp_bind(&c->tcp, source, 0);
	if (rc < 0)
		return rc;
#ifdef IP_BIND_ADDRESS_NO_PORT
	/* the port is chosen at connect time: many sessions per source address
	 * do not exhaust the ephemeral range on bind() */
	uv_os_fd_t fd;
	int one = 1;
	if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
#endif
	return 0;
}

int conn_connect_from(struct conn *c, uv_loop_t *loop, const struct sockaddr *addr,
		      const struct sockaddr *source, const struct conn_handler *h, void *owner,
		      struct task *task)
{
	memset(c, 0, sizeof(*c));
	c->h = h;
	c->owner = owner;
	c->task = task;
	conn_format_addr(addr, c->peer, sizeof(c->peer), c->peer_ip, sizeof(c->peer_ip),
			 &c->peer_family, c->peer_addr);
	if (source && source->sa_family != addr->sa_family)
		return -EAFNOSUPPORT; /* before uv_tcp_init: nothing to close */
	int rc = uv_tcp_init_ex(loop, &c->tcp, source ? source->sa_family : AF_UNSPEC);
	if (rc < 0)
		return rc;
	c->tcp.data = c;
	c->connect_req.data = c;
	if (source) {
		rc = conn_bind_source(c, source);
		if (rc < 0)
			return rc;
	}
	return uv_tcp_connect(&c->connect_req, &c->tcp, addr, conn_connect_cb);
}

size_t conn_starttls_client(struct conn *c, SSL_CTX *ctx, const char *sni, const char *verify_name)
{
	size_t dropped = conn_starttls_server(c, ctx);
	SSL_set_connect_state(c->ssl);
	if (sni)
		SSL_set_tlsext_host_name(c->ssl, sni);
	if (verify_name && *verify_name) {
		/* an address literal matches IP SANs only, a name DNS SANs / CN */
		X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
		if (X509_VERIFY_PARAM_set1_ip_asc(vp, verify_name) != 1) {
			ERR_clear_error();
			SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
			SSL_set1_host(c->ssl, verify_name);
		}
	}
	SSL_do_handshake(c->ssl); /* produces the ClientHello */
	conn_flush_tls_out(c);
	return dropped;
}

int conn_start_read(struct conn *c)
{
	int rc = uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb);
	if (rc == 0)
		c->reading = 1;
	return rc;
}

void conn_pause_read(struct conn *c)
{
	if (c->reading && !uv_is_closing((uv_handle_t *)&c->tcp))
		uv_read_stop((uv_stream_t *)&c->tcp);
	c->reading = 0;
}

void conn_resume_read(struct conn *c)
{
	if (!c->reading && !c->closing)
		conn_start_read(c);
}

size_t conn_input_pending(struct conn *c)
{
	size_t n = buf_avail(&c->in);
	uv_os_fd_t fd;
	if (!c->closing && uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) {
		char peek[64];
		ssize_t r = recv(fd, peek, sizeof(peek), MSG_PEEK | MSG_DONTWAIT);
		if (r > 0)
			n += (size_t)r;
	}
	return n;
}

size_t conn_starttls_server(struct conn *c, SSL_CTX *ctx)
{
	conn_flush(c);
	size_t dropped = buf_avail(&c->in);
	buf_reset(&c->in);
	c->ssl = SSL_new(ctx);
	c->net_in = BIO_new(BIO_s_mem());
	c->net_out = BIO_new(BIO_s_mem());
	BIO_set_mem_eof_return(c->net_in, -1);
	SSL_set_bio(c->ssl, c->net_in, c->net_out);
	SSL_set_accept_state(c->ssl);
	c->tls = CONN_TLS_HANDSHAKE;
	return dropped;
}

const char *conn_tls_version(const struct conn *c)
{
	return c->ssl && c->tls == CONN_TLS_ACTIVE ? SSL_get_version(c->ssl) : "";
}

const char *conn_tls_cipher(const struct conn *c)
{
	return c->ssl && c->tls == CONN_TLS_ACTIVE ? SSL_get_cipher_name(c->ssl) : "";
}

long conn_tls_verify_result(const struct conn *c)
{
	return c->ssl ? SSL_get_verify_result(c->ssl) : X509_V_OK;
}

void conn_close(struct conn *c)
{
	if (c->closing && uv_is_closing((uv_handle_t *)&c->tcp))
		return;
	conn_flush(c);
	c->closing = 1;
	conn_pause_read(c);
	if (c->inflight == 0)
		conn_do_close(c);
}

void conn_abort(struct conn *c)
{
	c->closing = 1;
	buf_reset(&c->out);
	conn_do_close(c);
}

/* "127.0.0.1:2025", "[::1]:25", "0:2026" (all IPv4), "::1:25" is ambiguous
 * and rejected: IPv6 needs brackets. */
int conn_parse_listen_addr(const char *s, struct sockaddr_storage *ss)
{
	char host[128];
	const char *colon;
	if (s[0] == '[') {
		const char *end = strchr(s, ']');
		if (!end || end[1] != ':' || (size_t)(end - s - 1) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, (size_t)(end - s - 1));
		host[end - s - 1] = 0;
		colon = end + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || (size_t)(colon - s) >= sizeof(host) || strchr(s, ':') != colon)
			return -EINVAL;
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = 0;
	}
	char *endp;
	long port = strtol(colon + 1, &endp, 10);
	if (!colon[1] || *endp || port < 0 || port > 65535)
		return -EINVAL;
	if (strcmp(host, "0") == 0 || host[0] == 0)
		strcpy(host, "0.0.0.0");
	if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) == 0)
		return 0;
	if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) == 0)
		return 0;
	return -EINVAL;
}

int conn_listen(uv_loop_t *loop, uv_tcp_t *tcp, const struct sockaddr_storage *ss, int backlog,
		uv_connection_cb cb, char *addr, size_t addrlen)
{
	uv_tcp_init(loop, tcp);
	int rc = uv_tcp_bind(tcp, (const struct sockaddr *)ss, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)tcp, backlog, cb);
	if (rc < 0)
		return rc;
	struct sockaddr_storage got;
	int len = sizeof(got);
	uv_tcp_getsockname(tcp, (struct sockaddr *)&got, &len);
	conn_format_addr((struct sockaddr *)&got, addr, addrlen, NULL, 0, NULL, NULL);
	return 0;
}
