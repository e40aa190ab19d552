/* SPDX-License-Identifier: Apache-2.0 */
/* ESMTP listeners: bind, accept, enforce max_connections, graceful stop. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/fdlimit.h"
#include "base/log.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "io/loop.h"
#include "io/tls.h"
#include "ktrace.h"
#include "smtp/server_int.h"

void smtp_session__accept(struct smtp_listener *l, int fd);
void smtp_session__count_accept_error(void);
void smtp_session__fd_pressure(void);
void smtp_session__shutdown_all(void);
size_t smtp_session__count(void);

static struct smtp_listener *listeners;

static void listener_resume(uv_timer_t *t);

void smtp_listener_config_init(struct smtp_listener_config *cfg)
{
	char host[256] = "localhost";
	memset(cfg, 0, sizeof(*cfg));
	gethostname(host, sizeof(host) - 1);
	cfg->listen = xstrdup("127.0.0.1:2025");
	cfg->hostname = xstrdup(host);
	cfg->banner = xstrdup("KumoMTA");
	cidr_list_add(&cfg->relay_hosts, "127.0.0.1");
	cidr_list_add(&cfg->relay_hosts, "::1");
	cfg->max_connections = 32768;
	cfg->client_timeout_ms = 60000;
	cfg->data_processing_timeout_ms = 300000;
	cfg->max_message_size = 20u << 20;
	cfg->max_recipients_per_message = 1024;
	cfg->max_messages_per_connection = 10000;
	cfg->line_length_hard_limit = 998;
	cfg->invalid_line_endings = SMTP_EOL_DENY;
	cfg->received_header = 1;
	cfg->supplemental_header = 1;
	cfg->trace_header_name = xstrdup("X-KumoRef");
	cfg->max_connections_per_client = 50;
	cfg->max_received_headers = 50;
	cfg->data_spill_threshold = 1u << 20;
}

void smtp_listener_config_free(struct smtp_listener_config *cfg)
{
	free(cfg->listen);
	free(cfg->hostname);
	free(cfg->banner);
	free(cfg->tls_certificate);
	free(cfg->tls_private_key);
	free(cfg->trace_header_name);
	for (size_t i = 0; i < cfg->ntrace_meta_names; i++)
		free(cfg->trace_meta_names[i]);
	free(cfg->trace_meta_names);
	cidr_list_free(&cfg->relay_hosts);
	memset(cfg, 0, sizeof(*cfg));
}

/* Backoff after accept() failed for lack of descriptors: the listener stops
 * polling for LISTENER_BACKOFF_MIN_MS, doubling on each failure in a row up
 * to LISTENER_BACKOFF_MAX_MS; pending clients wait in the kernel's backlog
 * instead of being reset. */
#define LISTENER_BACKOFF_MIN_MS 10
#define LISTENER_BACKOFF_MAX_MS 1000
#define LISTENER_ACCEPTS_PER_POLL 128

/* accept() failed (EMFILE, ENFILE, ...): counted, logged at most once a
 * second with the number of failures since the last line, and for a
 * descriptor shortage the listener backs off and the sessions give some
 * descriptors back (smtp_session__fd_pressure) so that the HTTP listener,
 * the spool and deliveries keep working. */
static void listener_accept_failed(struct smtp_listener *l, int err)
{
	static uint64_t logged_ns, suppressed;
	smtp_session__count_accept_error();
	KTRACE(listener_accept_error, l->addr, strerror(err));
	int shortage = err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
	if (shortage) {
		l->backoff_ms = l->backoff_ms ? l->backoff_ms * 2 : LISTENER_BACKOFF_MIN_MS;
		if (l->backoff_ms > LISTENER_BACKOFF_MAX_MS)
			l->backoff_ms = LISTENER_BACKOFF_MAX_MS;
		uv_poll_stop(&l->poll);
		uv_timer_start(&l->backoff, listener_resume, l->backoff_ms, 0);
		smtp_session__fd_pressure();
	}
	uint64_t now = clock_mono_ns();
	if (logged_ns && now - logged_ns < 1000000000ull) {
		suppressed++;
		return;
	}
	log_warn("kumod::smtp_server",
		 "accept on %s failed: %s (open files limit %zu, %zu sessions); %s%" PRIu64
		 " ms (%" PRIu64 " more failures since the last report)",
		 l->addr, strerror(err), fdlimit_nofile(), smtp_session__count(),
		 shortage ? "accepting paused for " : "no pause", shortage ? l->backoff_ms : 0,
		 suppressed);
	logged_ns = now;
	suppressed = 0;
}

static void listener_on_readable(uv_poll_t *h, int status, int events)
{
	(void)events;
	struct smtp_listener *l = h->data;
	struct task *prev = task_enter(l->task);
	for (int i = 0; !l->closed && status == 0 && i < LISTENER_ACCEPTS_PER_POLL; i++) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				listener_accept_failed(l, errno);
			break;
		}
		l->backoff_ms = 0;
		smtp_session__accept(l, fd);
	}
	task_exit(l->task, prev);
}

static void listener_resume(uv_timer_t *t)
{
	struct smtp_listener *l = t->data;
	if (!l->closed)
		uv_poll_start(&l->poll, UV_READABLE, listener_on_readable);
}

/* A non-blocking listening socket on ss (SO_REUSEADDR, as libuv binds):
 * the fd, or -errno. */
static int listener_socket(const struct sockaddr_storage *ss, int backlog)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	socklen_t len =
	    ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(fd, (const struct sockaddr *)ss, len) != 0 || listen(fd, backlog) != 0) {
		int err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

int smtp_listener_start(uv_loop_t *loop, struct smtp_listener_config *cfg, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (conn_parse_listen_addr(cfg->listen, &ss) != 0) {
		snprintf(err, errlen, "start_esmtp_listener: invalid listen address '%s'",
			 cfg->listen);
		return -EINVAL;
	}
	struct smtp_listener *l = xcalloc(1, sizeof(*l));
	l->tls_ctx = tls_server_ctx_new(cfg->tls_certificate, cfg->tls_private_key, cfg->hostname,
					err, errlen);
	if (!l->tls_ctx) {
		free(l);
		return -EINVAL;
	}
	l->fd = listener_socket(&ss, 1024);
	if (l->fd < 0) {
		snprintf(err, errlen, "start_esmtp_listener: cannot listen on %s: %s", cfg->listen,
			 strerror(-l->fd));
		SSL_CTX_free(l->tls_ctx);
		int rc = l->fd;
		free(l);
		return rc;
	}
	struct sockaddr_storage got;
	socklen_t glen = sizeof(got);
	if (getsockname(l->fd, (struct sockaddr *)&got, &glen) == 0)
		conn_format_addr((struct sockaddr *)&got, l->addr, sizeof(l->addr), NULL, 0, NULL,
				 NULL);
	l->loop = loop;
	uv_poll_init_socket(loop, &l->poll, l->fd);
	l->poll.data = l;
	uv_timer_init(loop, &l->backoff);
	l->backoff.data = l;
	uv_poll_start(&l->poll, UV_READABLE, listener_on_readable);
	l->cfg = *cfg;
	memset(cfg, 0, sizeof(*cfg));
	size_t budget = fdlimit_smtp_budget();
	if (l->cfg.max_connections > budget) {
		log_warn("kumod::smtp_server",
			 "%s: max_connections %zu exceeds what %zu open files allow; sessions are "
			 "limited to %zu (the rest is kept for the spool, logs, DNS and HTTP)",
			 l->addr, l->cfg.max_connections, fdlimit_nofile(), budget);
		l->cfg.max_connections = budget;
	}
	char name[80];
	snprintf(name, sizeof(name), "esmtp %s", l->addr);
	l->task = task_spawn("listener", name, 0);
	task_set_field(l->task, "addr", l->addr);
	task_set_phase(l->task, "Accepting", "accept");
	l->next = listeners;
	listeners = l;
	KTRACE(listener_start, "smtp", l->addr);
	return 0;
}

/* A listener is freed once its handle closed and its last session ended:
 * sessions read its configuration until then. */
void smtp_listener__maybe_free(struct smtp_listener *l)
{
	if (l->closed != 2 || l->nconn)
		return;
	SSL_CTX_free(l->tls_ctx);
	smtp_listener_config_free(&l->cfg);
	peertab_free(&l->clients);
	free(l);
}

static void listener_close_cb(uv_handle_t *h)
{
	struct smtp_listener *l = h->data;
	if (--l->open_handles)
		return;
	close(l->fd);
	task_close(l->task);
	l->task = NULL;
	l->closed = 2;
	smtp_listener__maybe_free(l);
}

void smtp_server_shutdown(void)
{
	for (struct smtp_listener *l = listeners; l; l = l->next) {
		if (!l->closed) {
			l->closed = 1;
			task_set_phase(l->task, "Closed", NULL);
			l->open_handles = 2;
			uv_close((uv_handle_t *)&l->poll, listener_close_cb);
			uv_close((uv_handle_t *)&l->backoff, listener_close_cb);
		}
	}
	listeners = NULL;
	smtp_session__shutdown_all();
}

size_t smtp_server_session_count(void)
{
	return smtp_session__count();
}

void smtp_server_close_all(void)
{
	smtp_server_shutdown();
}
