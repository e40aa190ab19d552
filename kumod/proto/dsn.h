/* SPDX-License-Identifier: Apache-2.0 */
/* RFC 3464 delivery status notifications: a multipart/report with a
 * message/delivery-status (or RFC 6533 message/global-delivery-status) part
 * read into KumoMTA's Report shape, what msg:parse_rfc3464() returns and
 * what OOB log records are made of:
 *   per_message {original_envelope_id, reporting_mta {mta_type, name}
 *     (required), dsn_gateway, received_from_mta, arrival_date, extensions}
 *   per_recipient [{final_recipient {recipient_type, recipient} (required),
 *     action ("failed", "delayed", "delivered", "relayed", "expanded";
 *     required), status {class, subject, detail, comment} (required),
 *     original_recipient, remote_mta, diagnostic_code {diagnostic_type,
 *     diagnostic}, last_attempt_date, final_log_id, will_retry_until,
 *     extensions}]
 *   original_message (message/rfc822 or text/rfc822-headers, LF line ends)
 * Absent optional values are JSON null; dates are RFC 3339 UTC.
 * Owner: pure; the caller owns the returned JSON. Callers: kumod/lua
 * (msg:parse_rfc3464), kumod/smtp (log_oob listener domains), tests, fuzz. */
#ifndef KUMOD_PROTO_DSN_H
#define KUMOD_PROTO_DSN_H

#include <jansson.h>
#include <stddef.h>

/* 1 and *out (new object) for a delivery report; 0 when msg[0..len) is not
 * a multipart/report; -1 with a reason in err when it is one without a
 * delivery-status part or with a malformed one. */
int dsn_parse(const char *msg, size_t len, json_t **out, char *err, size_t errlen);

#endif
