/* SPDX-License-Identifier: Apache-2.0 */
/* The /api/inject/v1 request without I/O: validates the JSON body
 * (envelope_sender, content as a message or a builder object, recipients
 * with their substitutions and metadata, templates) and builds each
 * recipient's message as RFC 5322 bytes with CRLF line endings. Errors name
 * the field and why, in valid UTF-8 for {"error": ...}. Owns a reference to
 * the JSON it validated. Callers: kumod/ctl/http_inject.c, the fuzz driver,
 * unit tests. */
#ifndef KUMOD_PROTO_INJECT_REQ_H
#define KUMOD_PROTO_INJECT_REQ_H

#include <stddef.h>

#include <jansson.h>

#include "base/buf.h"

#define INJECT_REQ_MAX_RECIPIENTS 100000
#define INJECT_REQ_MAX_ERROR 800 /* error text, NUL included */

/* A validated request; the pointers borrow from root. */
struct inject_req {
	json_t *root;
	const char *sender; /* "" is the null sender */
	json_t *content;    /* string or builder object */
	json_t *recipients; /* non-empty array of objects with a valid "email" */
	json_t *subst;	    /* object or NULL */
	int dialect_static; /* template_dialect "Static": no substitution */
	int deferred_spool; /* deferred_spool: true (kept in memory until it must stay) */
};

/* Validates the request object j (takes a new reference on success). 0,
 * or 422 with "<field>: <why>" in err (errlen >= 1). */
int inject_req_parse(json_t *j, struct inject_req *q, char *err, size_t errlen);
void inject_req_free(struct inject_req *q);

size_t inject_req_count(const struct inject_req *q);
const char *inject_req_rcpt_email(const struct inject_req *q, size_t i);
/* Recipient i's metadata object (borrowed) or NULL. */
json_t *inject_req_rcpt_metadata(const struct inject_req *q, size_t i);

/* Frees recipient i's part of the request (its object; a metadata object
 * another holder took a reference on lives on) once its message is built:
 * the memory is reused by the next recipients' messages instead of being
 * held until the whole request is done. Recipient i must not be read
 * afterwards (inject_req_rcpt_email returns NULL). */
void inject_req_release_rcpt(struct inject_req *q, size_t i);

/* Appends recipient i's message to out: substitutions applied, line
 * endings CRLF, header values free of CR/LF/NUL. id names the message
 * (Message-ID <id@kumod.http>, MIME boundary) and date is the Date value.
 * 0, or -EINVAL with the reason in err when the recipient fails (a
 * substitution that would break a header); out is then unspecified. */
int inject_req_build(const struct inject_req *q, size_t i, const char *id, const char *date,
		     struct buf *out, char *err, size_t errlen);

#endif
