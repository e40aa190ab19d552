/* SPDX-License-Identifier: Apache-2.0 */
/* RFC 5965 Abuse Reporting Format: a feedback report (multipart/report;
 * report-type=feedback-report with a message/feedback-report part) read
 * into KumoMTA's ARFReport shape, the `feedback_report` of a Feedback log
 * record and what msg:parse_rfc5965() returns: feedback_type, user_agent,
 * version (required), arrival_date (RFC 3339; Received-Date as fallback;
 * null when unparsable), incidents, original_envelope_id,
 * original_mail_from, reporting_mta {mta_type, name}, source_ip,
 * authentication_results[], original_rcpto_to[] (KumoMTA's spelling),
 * reported_domain[], reported_uri[], extensions {lower-case name: [values]},
 * original_message (the message/rfc822 or text/rfc822-headers part, LF line
 * ends) and supplemental_trace (the object of kumod's X-KumoRef trace header
 * found in that part, without its "_@_" marker).
 * Owner: pure; the caller owns the returned JSON. Callers: kumod/lua
 * (msg:parse_rfc5965), kumod/smtp (log_arf listener domains), tests, fuzz. */
#ifndef KUMOD_PROTO_ARF_H
#define KUMOD_PROTO_ARF_H

#include <jansson.h>
#include <stddef.h>

/* 1 and *out (new object) for a feedback report; 0 when msg[0..len) is not
 * one (no multipart/report; report-type=feedback-report at the top); -1
 * with a reason in err when it is one but malformed (no feedback-report
 * part, a required field missing, a field that does not convert). */
int arf_parse(const char *msg, size_t len, json_t **out, char *err, size_t errlen);

#endif
