/* SPDX-License-Identifier: Apache-2.0 */
/* Engine-neutral policy interface: what the daemon asks of its policy
 * (Lua today, implemented in kumod/lua/). Callers in L3 and above use only
 * this header; only kumod/lua/ includes Lua headers.
 * Calls are synchronous on the loop thread and bounded (instruction budget
 * and wall-clock deadline); an error in a handler never escapes as a crash. */
#ifndef KUMOD_POLICY_H
#define KUMOD_POLICY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct message;

enum policy_status {
	POLICY_OK = 0, /* handler ran (or none defined) */
	POLICY_REJECT, /* kumo.reject(code, text): send code + text */
	POLICY_ERROR,  /* Lua error, bad return, budget exceeded: caller answers 451 4.3.0 */
};

struct policy_result {
	enum policy_status status;
	int code;	 /* for POLICY_REJECT: 400..599 */
	char text[1536]; /* reply text (may start with an enhanced code) or error message */
	int disconnect;	 /* kumo.disconnect(): close after the reply */
	/* kumo.delay_reply() (kumod extension): hold the reply this long;
	 * POLICY_HANG: never answer (the session closes at client_timeout) */
	uint32_t delay_ms;
	uint64_t handle; /* policy_lua_conn_open: the connection object's id */
	int handlers;	 /* Lua handlers that ran for the event (0: none defined) */
};
#define POLICY_HANG UINT32_MAX

/* Loads the policy file, runs pre_init and init. validate: --validate mode
 * (also runs validate_config handlers when defined). On failure returns -1
 * with "file:line: message" in err. */
int policy_load(const char *path, int validate, char *err, size_t errlen);
void policy_close(void);
/* --validate: runs each registered handler once with sample arguments for
 * domain (see kumod/lua/lua_validate.c); prints every error to out, one
 * line each, and a summary. Returns the number of errors. */
int policy_validate_handlers(const char *domain, FILE *out);
/* kumod --list-api: every KumoMTA Lua API name (functions, message methods,
 * events, modules) and whether kumod implements it; a Markdown table when
 * markdown, else tab-separated lines. */
void policy_list_api(FILE *out, int markdown);
int policy_has_handler(const char *event);
/* kumo.validation_failed() was called since the policy loaded (--validate
 * then exits "Validation failed"). */
int policy_validation_failed(void);

/* SMTP server events (KumoMTA signatures). conn_meta is the connection
 * metadata object (JSON object, borrowed; handlers may set keys). */
void policy_smtp_connection_accepted(json_t *conn_meta, struct policy_result *r);
/* smtp_server_ehlo(domain, conn_meta[, extensions]): for EHLO, extensions
 * is the JSON array of the extension lines kumod will advertise (passed as
 * a Lua list); when the handler returns a list, *out_ext gets it (a new
 * reference: each entry a printable ASCII line) and it replaces them. HELO
 * passes NULL for both. (The session uses policy_smtp_ehlo_async; this
 * one stays for --validate.) */
void policy_smtp_ehlo(const char *domain, json_t *conn_meta, json_t *extensions, json_t **out_ext,
		      struct policy_result *r);
void policy_smtp_mail_from(const char *sender, json_t *conn_meta, struct policy_result *r);
void policy_smtp_rcpt_to(const char *recipient, json_t *conn_meta, struct policy_result *r);
/* smtp_server_data_command(conn_meta): kumod extension, at the DATA
 * command before its 354 (a rejection answers DATA instead). */
void policy_smtp_data_command(json_t *conn_meta, struct policy_result *r);
void policy_smtp_message_received(struct message *msg, json_t *conn_meta, struct policy_result *r);
/* smtp_server_data(msg, conn_meta): once per transaction after the data
 * arrived, before any split and before smtp_server_message_received; msg is
 * the whole transaction (every recipient, no trace header yet). Handlers
 * run synchronously (a wait raises). */
void policy_smtp_data(struct message *msg, json_t *conn_meta, struct policy_result *r);
/* smtp_server_rewrite_response(status, response, command, conn_meta) before
 * a reply is sent: *code the new status (0: keep), and when *has_text the
 * new text in text (textlen bytes, printable, LF separating lines).
 * command may be NULL. */
void policy_smtp_rewrite_response(int status, const char *response, const char *command,
				  json_t *conn_meta, int *code, char *text, size_t textlen,
				  int *has_text, struct policy_result *r);

/* Events whose handlers may wait for I/O (kumo.http): the call returns 0
 * when it completed (r filled; done is never called), or 1 when a handler
 * waits: the loop runs on and done(arg, r) is called exactly once later,
 * unless policy_cancel(*id) drops the call first. The call holds its own
 * references on the message and conn_meta. */
typedef void (*policy_done_fn)(void *arg, const struct policy_result *r);
int policy_smtp_message_received_async(struct message *msg, json_t *conn_meta,
				       struct policy_result *r, policy_done_fn done, void *arg,
				       uint64_t *id);
/* smtp_server_connection_accepted, for a session whose greeting may wait;
 * same contract. (policy_smtp_connection_accepted stays for --validate.) */
int policy_smtp_connection_accepted_async(json_t *conn_meta, struct policy_result *r,
					  policy_done_fn done, void *arg, uint64_t *id);
/* smtp_server_mail_from and smtp_server_rcpt_to, same contract; the address
 * must live until done (or policy_cancel): a later handler gets it too. */
int policy_smtp_mail_from_async(const char *sender, json_t *conn_meta, struct policy_result *r,
				policy_done_fn done, void *arg, uint64_t *id);
int policy_smtp_rcpt_to_async(const char *recipient, json_t *conn_meta, struct policy_result *r,
			      policy_done_fn done, void *arg, uint64_t *id);
/* smtp_server_ehlo, same contract: domain must live until done (or
 * policy_cancel). extensions (EHLO: the array kumod will advertise; HELO:
 * NULL) is held by the call; when a handler returns a list, the array's
 * entries are replaced by it (printable ASCII lines) before the call
 * completes with POLICY_OK, so the caller reads the reply's list there. */
int policy_smtp_ehlo_async(const char *domain, json_t *conn_meta, json_t *extensions,
			   struct policy_result *r, policy_done_fn done, void *arg, uint64_t *id);
void policy_cancel(uint64_t id);

/* should_enqueue_log_record(msg, hook_name) for a log hook's record
 * message: *enqueue = 1 when a handler returned true (handlers run in order
 * until one returns true or false). Synchronous: a handler may not wait. */
void policy_should_enqueue_log_record(struct message *msg, const char *hook, int *enqueue,
				      struct policy_result *r);
/* A disposition hook's event (log_disposition_<name>) with the message and
 * its log record (as a table); every handler runs, their results are
 * ignored. Synchronous: a handler may not wait. */
void policy_log_disposition(const char *event, struct message *msg, json_t *record,
			    struct policy_result *r);

/* spool_message_enumerated(msg) for each message spool recovery loads,
 * before it is queued (the handler may change its queue meta). */
void policy_spool_message_enumerated(struct message *msg, struct policy_result *r);

/* requeue_message(msg, smtp_response, insert_context, increment_attempts,
 * delay) before a message goes back to a scheduled queue: every handler
 * runs in order; the caller compares the queue name before and after.
 * insert_context is {reason}; delay is nil. */
void policy_requeue_message(struct message *msg, const char *response, const char *reason,
			    int increment, struct policy_result *r);

/* smtp_client_rewrite_delivery_status(response, domain, tenant, campaign,
 * routing_domain) for a non-2xx reply of a delivery attempt (response is
 * "code enhanced text" on one line; tenant and campaign may be NULL): *code
 * is the handler's replacement code, or 0 to keep the reply's (no handler,
 * nil, or an error: r says which). */
void policy_smtp_client_rewrite_delivery_status(const char *response, const char *domain,
						const char *tenant, const char *campaign,
						const char *routing_domain, int *code,
						struct policy_result *r);

/* custom_lua delivery (kumod/dispatch/ready.c). policy_lua_conn_open fires
 * the constructor event (domain, tenant, campaign); on POLICY_OK r->handle
 * names the connection object it returned (a table with a send or
 * send_batch method),
 * kept until policy_lua_conn_close. policy_lua_conn_send calls
 * conn:send(msg): POLICY_OK with the returned text in r->text,
 * POLICY_REJECT for kumo.reject(code, text), POLICY_ERROR for any other
 * error. Both may wait (same contract as the _async events above).
 * policy_lua_conn_close calls conn:close() when defined (it may not wait;
 * an error is logged by the engine) and drops the object. */
int policy_lua_conn_open(const char *constructor, const char *domain, const char *tenant,
			 const char *campaign, struct policy_result *r, policy_done_fn done,
			 void *arg, uint64_t *id);
int policy_lua_conn_send(uint64_t conn, struct message *msg, struct policy_result *r,
			 policy_done_fn done, void *arg, uint64_t *id);
/* conn:send_batch(msgs) for a batched queue (custom_lua batch_size > 1):
 * the n messages as one Lua array; same results as policy_lua_conn_send,
 * for the whole batch. The call holds its own references on the messages. */
int policy_lua_conn_send_batch(uint64_t conn, struct message *const *msgs, size_t n,
			       struct policy_result *r, policy_done_fn done, void *arg,
			       uint64_t *id);
void policy_lua_conn_close(uint64_t conn);

/* smtp_server_auth_plain(authz, authc, password, conn_meta): *ok = 1 when
 * the handler returned true (or a KumoMTA AuthInfo table); 0 without a
 * handler, for false/nil, and on error (r says which). The password never
 * leaves this call: it is not logged or traced. */
void policy_smtp_auth_plain(const char *authz, const char *authc, const char *password,
			    json_t *conn_meta, int *ok, struct policy_result *r);

/* get_listener_domain(domain, listener, conn_meta): *found = 1 when the
 * handler returned a listener domain; then relay_to and relay_from (a JSON
 * array of CIDR strings, new reference, may be NULL) are filled. */
/* log_arf / log_oob: what to do with a report (KumoMTA's LogReportDisposition). */
enum {
	POLICY_LOG_REPORT_IGNORE = 0, /* not looked at */
	POLICY_LOG_REPORT_RELAY = 1,  /* LogThenRelay: logged, then queued as usual */
	POLICY_LOG_REPORT_DROP = 2,   /* LogThenDrop: logged, accepted, not queued */
};
struct policy_listener_domain {
	int found;
	int relay_to;
	json_t *relay_from;
	json_t *relay_from_authz; /* AUTH identities that may relay (new reference or NULL) */
	int log_arf, log_oob;	  /* POLICY_LOG_REPORT_* */
};
void policy_get_listener_domain(const char *domain, const char *listener, json_t *conn_meta,
				struct policy_listener_domain *out, struct policy_result *r);

/* get_queue_config(domain, tenant, campaign, routing_domain): handlers run in
 * order, the first kumo.make_queue_config{} result wins. *out is a new JSON
 * object with the normalised keys (durations in milliseconds as
 * "<key>_ms", protocol.smtp.mx_list as an array of strings), or NULL when no
 * handler returned one (KumoMTA defaults apply). */
void policy_get_queue_config(const char *domain, const char *tenant, const char *campaign,
			     const char *routing_domain, json_t **out, struct policy_result *r);

/* get_egress_path_config(routing_domain, egress_source, site_name): *out is a
 * new JSON object of the kumo.make_egress_path{} result (durations as
 * "<key>_ms"), or NULL (defaults). */
void policy_get_egress_path_config(const char *routing_domain, const char *egress_source,
				   const char *site_name, json_t **out, struct policy_result *r);

/* get_egress_pool(name) / get_egress_source(name): the made object as JSON or NULL. */
void policy_get_egress_pool(const char *name, json_t **out, struct policy_result *r);
void policy_get_egress_source(const char *name, json_t **out, struct policy_result *r);

/* throttle_insert_ready_queue(msg): when a due message is about to go to its ready queue.
 * Handlers run in order until one delays the message (throttle:delay_message_if_throttled
 * throttled it): *delay_ms is then how long (0: not delayed). An error leaves r's status
 * POLICY_ERROR (the caller holds the message). */
void policy_throttle_insert_ready_queue(struct message *msg, uint64_t *delay_ms,
					struct policy_result *r);

/* http_message_generated(msg, auth_info): once per message built by
 * /api/inject/v1, with KumoMTA's AuthInfo of the request (a table:
 * peer_address, identities, groups); kumo.reject() or an error makes that
 * recipient fail. */
void policy_http_message_generated(struct message *msg, json_t *auth_info, struct policy_result *r);
/* http_server_validate_auth_basic(user, password): *ok = 1 when the
 * handler returned true (0 without a handler). POLICY_ERROR: the caller
 * answers 500. */
void policy_http_validate_auth_basic(const char *user, const char *password, int *ok,
				     struct policy_result *r);
/* http_server_validate_auth_bearer(token): the same for an
 * "Authorization: Bearer <token>" header. */
void policy_http_validate_auth_bearer(const char *token, int *ok, struct policy_result *r);

#endif
