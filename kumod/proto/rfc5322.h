/* SPDX-License-Identifier: Apache-2.0 */
/* RFC 5322 header-section scanner and editor behind the Lua Message header methods.
 * Owner: operates on caller-owned message bytes (a struct buf for the editing calls, whose
 * unread part data[off..len) is the message); keeps no state. Callers: kumod/spool (message
 * header methods), tests, fuzz/fuzz_header_api.c. Reading tolerates LF-only line endings;
 * writing always uses CRLF and folds (soft at 78, hard at 998 octets per physical line), so a
 * value that passed rfc5322_value_valid() can never start a new header or end the section. */
#ifndef KUMOD_PROTO_RFC5322_H
#define KUMOD_PROTO_RFC5322_H

#include <stddef.h>
#include <time.h>

#include "base/buf.h"

#define RFC5322_SOFT_LIMIT 78
#define RFC5322_HARD_LIMIT 998

/* One header field as found in the message (pointers into it). */
struct rfc5322_header {
	const char *name; /* without the colon or trailing whitespace */
	size_t name_len;
	const char *raw_value; /* after ':', incl. folding, excl. the final line ending */
	size_t raw_len;
	size_t start, end; /* byte offsets of the whole field incl. its final line ending */
};

/* Length of the header section including the blank line that ends it (CRLF or LF), or len
 * if there is no blank line. */
size_t rfc5322_header_end(const char *msg, size_t len);

/* Iterates the fields of msg[0..hdr_end): *pos starts at 0. Returns 1 and fills h, or 0 at
 * the blank line or hdr_end. Lines without a colon, with an invalid name, or continuation
 * lines without a field are skipped. */
int rfc5322_header_next(const char *msg, size_t hdr_end, size_t *pos, struct rfc5322_header *h);

/* Appends raw with its line breaks removed and leading/trailing SP/HT trimmed. */
void rfc5322_unfold(const char *raw, size_t len, struct buf *out);

/* 1 if name is 1..RFC5322_HARD_LIMIT-2 octets, each printable US-ASCII 33-126 but ':'. */
int rfc5322_name_valid(const char *name, size_t len);
/* 1 if v holds no CR, LF or NUL. */
int rfc5322_value_valid(const char *v, size_t len);

/* Appends "Name: value" + CRLF, value trimmed and folded (before whitespace so no line passes
 * 78 octets when possible; a longer unbreakable run gets CRLF SP inserted at 998). A
 * whitespace run too long for one line is shortened to one SP. Names and values must have
 * been validated by the caller. */
void rfc5322_format_header(struct buf *out, const char *name, const char *value);

/* The RFC 5322 date-time of t in UTC ("Sun, 29 Nov 2026 10:00:00 +0000") into
 * out (64 bytes are plenty). */
void rfc5322_format_date(time_t t, char *out, size_t outlen);

/* Editing a whole message. Both adders return 0, or -EINVAL (message unchanged) when the
 * name or value is invalid. prepend puts the field first (after any stray continuation lines
 * at the very start, which would otherwise become part of it); append puts it last, before
 * the blank line, or at the end of a message without one. */
int rfc5322_prepend_header(struct buf *msg, const char *name, const char *value);
int rfc5322_append_header(struct buf *msg, const char *name, const char *value);
/* Inserts n fields, in this order, where rfc5322_prepend_header puts one; all
 * are validated first (-EINVAL, nothing inserted, if any is invalid). */
int rfc5322_prepend_headers(struct buf *msg, size_t n, const char *const *names,
			    const char *const *values);
/* Removes every field named `name` (ASCII case-insensitive); returns how many. */
size_t rfc5322_remove_all_named(struct buf *msg, const char *name);
/* 1 and the unfolded value of the first field named `name` appended to value_out, or 0. */
int rfc5322_get_first(const char *msg, size_t len, const char *name, struct buf *value_out);
/* How many fields are named `name` (ASCII case-insensitive): the Received
 * count of the mail-loop check. */
size_t rfc5322_count_named(const char *msg, size_t len, const char *name);
/* Calls cb with each unfolded value named `name`, in order; returns how many. */
size_t rfc5322_get_all(const char *msg, size_t len, const char *name,
		       void (*cb)(const char *v, size_t n, void *ctx), void *ctx);

#endif
