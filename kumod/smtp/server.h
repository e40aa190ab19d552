/* SPDX-License-Identifier: Apache-2.0 */
/* ESMTP listeners and server sessions. Listeners are created by the policy
 * (kumo.start_esmtp_listener) during init; sessions are owned by their
 * listener and run the table-driven RFC 5321 state machine. */
#ifndef KUMOD_SMTP_SERVER_H
#define KUMOD_SMTP_SERVER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/cidr.h"
#include "proto/smtp_data.h"

struct uv_loop_s;

struct smtp_listener_config {
	char *listen;				   /* "127.0.0.1:2025", "[::1]:2025", "0:2026" */
	char *hostname;				   /* default gethostname() */
	char *banner;				   /* default "KumoMTA" */
	struct cidr_list relay_hosts;		   /* default 127.0.0.1, ::1 */
	size_t max_connections;			   /* 32768 */
	uint64_t client_timeout_ms;		   /* 60 s */
	uint64_t data_processing_timeout_ms;	   /* 300 s */
	size_t max_message_size;		   /* 20 MiB */
	size_t max_recipients_per_message;	   /* 1024 */
	size_t max_messages_per_connection;	   /* 10000 */
	size_t line_length_hard_limit;		   /* 998 */
	enum smtp_eol_policy invalid_line_endings; /* Deny */
	char *tls_certificate;			   /* PEM path or NULL (self-signed) */
	char *tls_private_key;
	int received_header;	 /* trace_headers.received_header, default true */
	int supplemental_header; /* trace_headers.supplemental_header, default true */
	char *trace_header_name; /* "X-KumoRef" */
	char **trace_meta_names; /* trace_headers.include_meta_names */
	size_t ntrace_meta_names;
	int batch_by_domain;  /* batch_handling: 0 BifurcateAlways, 1 BatchByDomain */
	int deferred_spool;   /* 1: acknowledge without a spool write (spool_store_deferred) */
	int auth_without_tls; /* ours: offer AUTH before STARTTLS (loopback testing) */
	/* Abuse limits (docs/limits.md). Per client IP; relay_hosts are exempt
	 * unless smtp_server_connection_accepted sets the meta key
	 * max_connections_per_client for the connection. */
	size_t max_connections_per_client;	 /* 50; 0 = unlimited */
	uint64_t max_connection_rate_per_client; /* connections per period; 0 = unlimited */
	uint64_t connection_rate_period_ms;
	size_t max_received_headers; /* mail loop: 50; 0 = unchecked */
	/* DATA beyond this many bytes streams to the spool's temporary storage
	 * instead of memory (LocalDisk kind; docs/spool.md "Streamed bodies"):
	 * 1 MiB; 0 = always in memory. */
	size_t data_spill_threshold;
};

/* Fills the KumoMTA defaults (strings allocated). */
void smtp_listener_config_init(struct smtp_listener_config *cfg);
void smtp_listener_config_free(struct smtp_listener_config *cfg);

/* Binds and starts accepting. Takes ownership of cfg's contents (cfg is
 * reset to defaults-free state). Returns 0 or -errno with a message in err. */
int smtp_listener_start(struct uv_loop_s *loop, struct smtp_listener_config *cfg, char *err,
			size_t errlen);
/* Graceful shutdown: stop accepting; idle sessions get 421 4.3.2 and close;
 * sessions in a transaction finish it, then get 421. */
void smtp_server_shutdown(void);
/* Sessions still open. */
size_t smtp_server_session_count(void);
/* Abuse-limit counters for /metrics (docs/limits.md). */
struct smtp_limit_stats {
	uint64_t client_concurrency_denied, client_rate_denied, fd_budget_denied;
	uint64_t memory_denied; /* connections, DATA and transactions refused for memory */
	uint64_t idle_shed;	/* idle sessions closed to free memory */
	uint64_t mail_loops;	/* messages refused with 554 5.4.6 */
	uint64_t accept_errors; /* accept() failures (EMFILE, ENFILE, ...) */
	uint64_t fd_shed;	/* idle sessions closed to give descriptors back */
	uint64_t disk_denied;	/* connections and DATA refused: spool below min_free_* */
};
void smtp_server_limit_stats(struct smtp_limit_stats *out);
/* The live session run by task task_id, for kumo-console's session view
 * (smtp/session_info.c): {"session_id", "task", "peer", "local", "listener",
 * "state", "helo", "tls", "authn_id", "messages", "envelope" ({"sender",
 * "recipients" (the first 20), "rcpt_count"} or null outside a transaction),
 * "transcript" (the latest `lines` lines [{"ms", "dir", "line"}], AUTH
 * secrets replaced as in kcli trace-smtp-server), "transcript_dropped",
 * "transcript_on"}; NULL when no live session has that task. New reference. */
json_t *smtp_server_session_info(uint64_t task_id, size_t lines);

/* Close every listener handle (after shutdown). */
void smtp_server_close_all(void);

#endif
