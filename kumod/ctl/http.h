/* SPDX-License-Identifier: Apache-2.0 */
/* The HTTP listener (kumo.start_http_listener): HTTP/1.1 with keep-alive,
 * optional TLS, Prometheus /metrics, the liveness check, message injection
 * and the admin API. Owns its listeners and connections; each connection
 * is a task. Access: peers in trusted_hosts pass, others need HTTP Basic
 * credentials accepted by the http_server_validate_auth_basic event or a
 * Bearer token accepted by http_server_validate_auth_bearer.
 * Callers: kumod/lua (start), kumod/main.c (shutdown). */
#ifndef KUMOD_CTL_HTTP_H
#define KUMOD_CTL_HTTP_H

#include <stddef.h>

#include "proto/cidr.h"

struct uv_loop_s;

struct http_listener_config {
	char *listen;			/* "127.0.0.1:8000", "[::1]:8000", "0:8000" */
	char *hostname;			/* default gethostname(); also an allowed Host */
	int use_tls;			/* https */
	char *tls_certificate;		/* PEM paths or NULL (self-signed) */
	char *tls_private_key;		/* */
	struct cidr_list trusted_hosts; /* default 127.0.0.1, ::1 */
	size_t request_body_limit;	/* after decompression; default 2 MiB */
	/* Abuse limits (docs/limits.md) */
	size_t max_connections_per_client; /* 64; 0 = unlimited */
	size_t max_recipients_per_inject;  /* 10000; 0 = unlimited */
	size_t max_received_headers;	   /* mail loop on inject: 50; 0 = unchecked */
};

/* Fills the KumoMTA defaults (strings allocated). */
void http_listener_config_init(struct http_listener_config *cfg);
void http_listener_config_free(struct http_listener_config *cfg);

/* Binds and starts accepting; prints `http listener on <addr>` (`https`
 * with TLS). Takes ownership of cfg's contents (cfg is left empty).
 * Returns 0 or -errno with a message in err. */
int http_listener_start(struct uv_loop_s *loop, struct http_listener_config *cfg, char *err,
			size_t errlen);

/* Stops accepting and closes every connection (responses in progress are
 * dropped; injected messages already spooled are still delivered). Call
 * before the loop's handles are walked at shutdown. Idempotent. */
void http_server_shutdown(void);
/* Open HTTP connections (the connection_count{service="http_listener"}). */
size_t http_server_connection_count(void);

#endif
