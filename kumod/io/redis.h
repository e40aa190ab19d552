/* SPDX-License-Identifier: Apache-2.0 */
/* The one Redis connection of kumo.configure_redis_throttles: hiredis's
 * asynchronous client on the kumod loop (own libuv glue: see redis.c),
 * never blocking. One task ("redis_throttles") shows its phase: Connecting,
 * Ready or Down. Lost or unreachable, it reconnects every second; the
 * outage and the recovery are logged once each (not per command). A reply
 * slower than response_timeout drops the connection (every pending command
 * fails) so a stalled server never holds a check forever. Metrics:
 * redis_operation_latency{operation}, redis_errors{kind}.
 * Callers: kumod/queue/shared_throttle.c, kumod/lua (configure). */
#ifndef KUMOD_IO_REDIS_H
#define KUMOD_IO_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

struct redis_config {
	const char *url;	      /* redis://[user][:password@]host[:port][/db] */
	uint64_t connect_timeout_ms;  /* the check at configure time; 0 = 30 s */
	uint64_t response_timeout_ms; /* 0 = 10 s */
};

/* Parses the URL, connects once (blocking, bounded by connect_timeout: it
 * runs in the init event, before any traffic), checks PING and whether
 * redis-cell's CL.THROTTLE exists, then starts the asynchronous
 * connection. 0, or -1 with the reason in err. Once per process. */
int redis_configure(const struct redis_config *cfg, char *err, size_t errlen);
/* Declares the metric families (at start-up, so the catalogue lists them). */
void redis_declare_metrics(void);
int redis_enabled(void);
int redis_has_cell(void);
const char *redis_url(void);

/* reply NULL: the command failed (err says why: connection lost, timed
 * out); otherwise the reply (may be an error reply). */
typedef void (*redis_reply_fn)(void *ud, const redisReply *reply, const char *err);
struct redis_op;
/* Sends one command; fn runs exactly once unless cancelled. NULL when
 * the connection is down (fn never runs; redis_last_error() says why).
 * operation labels the latency metric ("script", "query"). */
struct redis_op *redis_command(const char *operation, int argc, const char **argv,
			       const size_t *lens, redis_reply_fn fn, void *ud);
/* fn will not run (its owner went away); the command still completes. */
void redis_op_cancel(struct redis_op *op);
/* The ud given to redis_command (callers that cancel at their own level). */
void *redis_op_ud(const struct redis_op *op);
const char *redis_last_error(void);
/* Closes the connection after the pending commands (shutdown). */
void redis_shutdown(void);

#endif
