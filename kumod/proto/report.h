/* SPDX-License-Identifier: Apache-2.0 */
/* The MIME and field reading shared by the RFC 5965 (ARF, proto/arf.h) and
 * RFC 3464 (DSN, proto/dsn.h) report parsers: one MIME entity's header and
 * body, the direct children of a multipart, transfer decoding (base64,
 * quoted-printable), a header block as a JSON object of lower-case names to
 * arrays of unfolded values, and the typed field conversions both reports
 * use (RFC 5322 dates, "type; name" pairs, envelope addresses).
 * Owner: pure functions over caller-owned bytes; pointers in struct
 * report_part point into them. Callers: proto/arf.c, proto/dsn.c, tests. */
#ifndef KUMOD_PROTO_REPORT_H
#define KUMOD_PROTO_REPORT_H

#include <jansson.h>
#include <stddef.h>

#include "base/buf.h"

#define REPORT_BOUNDARY_MAX 200 /* RFC 2046 allows 70; be lenient */

/* One MIME entity. type is "type/subtype" in lower case ("" without a
 * Content-Type), report_type and boundary the parameters of that name
 * (report_type lower case), cte the Content-Transfer-Encoding (lower case). */
struct report_part {
	const char *hdr; /* header section, without the blank line */
	size_t hdr_len;
	const char *body;
	size_t body_len;
	char type[96];
	char report_type[64];
	char boundary[REPORT_BOUNDARY_MAX + 1];
	char cte[32];
};

/* Splits p[0..n) into header section and body and reads Content-Type and
 * Content-Transfer-Encoding (a missing blank line: all header, no body). */
void report_part_parse(const char *p, size_t n, struct report_part *out);

/* Iterates the direct children of the multipart parent: *pos starts at 0.
 * Returns 1 and fills child, 0 when there are no more. Text before the
 * first delimiter (preamble) and after the close delimiter (epilogue) is
 * skipped; a part's body keeps the line break before the next delimiter
 * (as KumoMTA's parser does); a missing close delimiter ends the last part at the end of the
 * body (a truncated report still yields its parts). */
int report_next_child(const struct report_part *parent, size_t *pos, struct report_part *child);

/* Appends the body of part decoded by its transfer encoding (base64 and
 * quoted-printable decoded leniently; anything else copied). */
void report_decode_body(const struct report_part *part, struct buf *out);

/* The fields of the header block p[0..n) (up to its first blank line) as a
 * new JSON object: lower-case name -> array of unfolded values, in order.
 * Values that are not UTF-8 are converted lossily (U+FFFD). */
json_t *report_fields(const char *p, size_t n);

/* Removes field `name` from fields. Returns 1 and *value (borrowed from
 * the string, valid while the caller holds *hold, a new reference the
 * caller releases) when it occurred once, 0 when absent, -1 with
 * "header <name> should have only a single value" in err when repeated. */
int report_take_single(json_t *fields, const char *name, json_t **hold, const char **value,
		       char *err, size_t errlen);
/* Removes field `name` and returns its array of values (new reference; an
 * empty array when absent). */
json_t *report_take_all(json_t *fields, const char *name);

/* Parses an RFC 5322 date-time (the obsolete forms too: two-digit years,
 * alphabetic zones such as UT, GMT, UTC, EST) into "YYYY-MM-DDTHH:MM:SSZ"
 * (out holds 21 bytes). 0, or -1 when it is not a date. */
int report_parse_date(const char *s, char out[21]);

/* "name-type; name" as {"mta_type": ..., "name": ...} (both trimmed); NULL
 * with "expected 'name-type; name', got ..." in err. */
json_t *report_remote_mta(const char *s, char *err, size_t errlen);

/* An envelope address ("<a@b>", "a@b", "<>", "postmaster") without its
 * angle brackets into out; -1 with a reason in err when it is not one. */
int report_envelope_address(const char *s, struct buf *out, char *err, size_t errlen);

/* CRLF -> LF copy of p[0..n) as a JSON string (lossy for non-UTF-8). */
json_t *report_lf_string(const char *p, size_t n);

#endif
