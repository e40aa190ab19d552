/* SPDX-License-Identifier: Apache-2.0 */
/* Live SMTP transcripts over the admin API's websockets, KumoMTA's
 * /api/admin/trace-smtp-server/v1 and /api/admin/trace-smtp-client/v1:
 * owns the subscribers (one per upgraded HTTP connection), turns the
 * smtp_trace hook's events into KumoMTA's TraceSmtpV1Event JSON and
 * filters them per subscriber. Callers: kumod/ctl/http*.c only. */
#ifndef KUMOD_CTL_TRACE_SMTP_H
#define KUMOD_CTL_TRACE_SMTP_H

#include "smtp/smtp_trace.h"

struct http_conn;
struct http_request;

/* Answers the upgrade request (400/426 when it is not a valid websocket
 * handshake) and makes the connection a subscriber for side. */
void trace_smtp__upgrade(struct http_conn *hc, struct http_request *req, enum smtp_trace_side side);
/* Frames arrived on an upgraded connection. */
void trace_smtp__on_data(struct http_conn *hc);
/* The connection is closing: the subscriber ends. */
void trace_smtp__detach(struct http_conn *hc, const char *reason);

/* Sec-WebSocket-Accept for a key (SHA-1 + base64, RFC 6455 §4.2.2). */
void trace_smtp_accept_key(const char *key, char out[32]);

#endif
