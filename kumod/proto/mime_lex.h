/* SPDX-License-Identifier: Apache-2.0 */
/* Lexer for MIME structured header field values (RFC 2045 §5.1 tokens and
 * parameters, RFC 5322 comments and white space): the pieces a
 * Content-Type or Content-Transfer-Encoding value is made of.
 * Pure, no state; indexes are offsets into the caller's v[0..n).
 * Callers: kumod/proto/report.c, kumod/proto/mime8.c. */
#ifndef KUMOD_PROTO_MIME_LEX_H
#define KUMOD_PROTO_MIME_LEX_H

#include <stddef.h>

/* Longest parameter value kept (RFC 2046 allows boundaries of 70; be
 * lenient); longer values are truncated. */
#define MIME_LEX_VALUE_MAX 200

/* 1 for space, tab, CR and LF (folding included). */
/* End of the line starting at p[i]: after its LF, or n. */
size_t mime_lex_line_end(const char *p, size_t n, size_t i);
/* Where the content of the line [i, e) ends: before its CRLF or LF (a
 * last line without LF loses a trailing CR too). */
size_t mime_lex_content_end(const char *p, size_t i, size_t e);

/* A body line l (n bytes, without its line end) against boundary bd (bl
 * bytes): 1 for "--bd", 2 for the close delimiter "--bd--", each with
 * optional trailing white space (transport padding), 0 otherwise. */
int mime_lex_delimiter(const char *l, size_t n, const char *bd, size_t bl);
int mime_lex_is_ws(char c);

/* The first offset at or after i that is neither white space nor inside a
 * (nested, backslash-escaping) comment; n at the end. */
size_t mime_lex_skip_cfws(const char *v, size_t n, size_t i);

/* The end of the RFC 2045 token starting at i (i when there is none). */
size_t mime_lex_token_end(const char *v, size_t n, size_t i);

/* The first token of v, after CFWS, lower-cased into dst (truncated to
 * cap - 1 bytes): a Content-Transfer-Encoding value. */
void mime_lex_first_token(const char *v, size_t n, char *dst, size_t cap);

/* Reads the parameter value (token or quoted string, escapes and folding
 * inside the quotes removed) at i into val, truncated to cap - 1 bytes and
 * NUL-terminated; returns the offset after it. */
size_t mime_lex_param_value(const char *v, size_t n, size_t i, char *val, size_t cap);

/* Content-Type: type "/" subtype *(";" attribute "=" value). type and
 * subtype are stored lower-cased, truncated to cap - 1 (type "" when
 * absent; subtype left as it was without a "/");
 * param, when not NULL, is called for each parameter in order with its
 * name (as written) and value (at most MIME_LEX_VALUE_MAX bytes). The walk
 * stops at the first parameter that is not attribute "=" value. */
void mime_lex_content_type(
    const char *v, size_t n, char *type, size_t type_cap, char *subtype, size_t subtype_cap,
    void (*param)(void *ctx, const char *name, size_t name_len, const char *value), void *ctx);

#endif
