/* SPDX-License-Identifier: Apache-2.0 */
/* /api/inject/v1 without an HTTP connection: kumo.api.inject.inject_v1
 * runs a request through exactly the code path of the HTTP endpoint
 * (validation, one message per recipient, http_message_generated, queue
 * configuration, spool, Reception record), as if it came from 127.0.0.1
 * with KumoMTA's local-system AuthInfo. Caller: kumod/lua/lua_inject.c. */
#ifndef KUMOD_CTL_HTTP_INJECT_H
#define KUMOD_CTL_HTTP_INJECT_H

#include <stddef.h>

#include <jansson.h>

/* The answer, as the HTTP body would be: {success_count, fail_count,
 * failed_recipients, errors} (borrowed for the call). */
typedef void (*http_inject_local_fn)(void *arg, json_t *result);

/* Starts the request (request is borrowed; a reference is taken when it
 * validates). Returns -EINVAL (the request is malformed: err says which
 * field), -EAGAIN (shutting down or no spool) or -ENOSPC (spool short of
 * space) without calling done; otherwise done runs exactly once: 0 when it
 * already ran inside this call (nothing to wait for), 1 when it runs later
 * from a spool completion. max_received: the mail-loop check (0: none). */
int http_inject_local(json_t *request, size_t max_received, http_inject_local_fn done, void *arg,
		      char *err, size_t errlen);

#endif
