/* SPDX-License-Identifier: Apache-2.0 */
/* KumoMTA's smtp_client_rewrite_delivery_status for the dispatcher: the
 * non-2xx replies of one delivery attempt (the transaction's and each
 * refused RCPT's) go through the policy event, which may replace their
 * codes, so the outcome (Delivery, TransientFailure, Bounce) follows the
 * new code. Caller: kumod/dispatch/ready.c, on the loop thread. */
#ifndef KUMOD_DISPATCH_REWRITE_H
#define KUMOD_DISPATCH_REWRITE_H

#include "smtp/client.h"

struct message;

/* A rewritten copy of a result: the arrays and texts it points to. */
struct rewrite_result {
	struct smtp_client_result r;
	int *codes;
	struct smtp_client_rcpt_reply *replies;
	char text[700];
};

/* Returns r when no handler is defined or nothing changed; else out, filled
 * (free it with rewrite_result_free). domain and routing_domain name m's
 * queue (routing_domain NULL: domain). A handler error keeps the message:
 * a 5xx reply is then treated as 451 (logged at ERROR by the engine). */
const struct smtp_client_result *
rewrite_delivery_status(const struct smtp_client_result *r, const struct message *m,
			const char *domain, const char *routing_domain, struct rewrite_result *out);
void rewrite_result_free(struct rewrite_result *out);

#endif
