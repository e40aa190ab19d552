/* SPDX-License-Identifier: Apache-2.0 */
/* HTTP/1.1 request parsing for the HTTP API, without I/O: raw bytes (any
 * chunking) through libhttp-parser into a struct http_req with the head
 * fields the API reads, the limits (target, header count and sizes, body),
 * body decompression (gzip, zlib, raw deflate) under the body limit, query
 * parameters, Authorization (Basic and Bearer), the JSON body, and an error
 * for every refusal as an HTTP status plus a message for {"error": ...}.
 * Owns its parser state and the request it fills. Callers: kumod/ctl/http.c,
 * the fuzz driver, unit tests. */
#ifndef KUMOD_PROTO_HTTP_REQ_H
#define KUMOD_PROTO_HTTP_REQ_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "base/buf.h"

#define HTTP_REQ_MAX_URL 8192	     /* request target (414) */
#define HTTP_REQ_MAX_HEADERS 100     /* header fields (431) */
#define HTTP_REQ_MAX_NAME 256	     /* one field name (431) */
#define HTTP_REQ_MAX_VALUE 8192	     /* one field value (431) */
#define HTTP_REQ_MAX_ERROR 256	     /* error text, NUL included */
#define HTTP_REQ_MAX_CREDENTIALS 600 /* decoded Basic "user:password" or a Bearer token */

/* One request. Strings are NUL-terminated and NULL when the header is absent;
 * header values never hold CR, LF or NUL. */
struct http_req {
	int method;		 /* enum http_method */
	const char *method_name; /* static: "GET", "POST", ... */
	int http_major, http_minor;
	struct buf url;		/* the request target as sent */
	struct buf path, query; /* split from url when the request is complete */
	char *content_type, *content_encoding, *authorization, *host, *expect, *connection;
	char *upgrade, *ws_key, *ws_version; /* Upgrade, Sec-WebSocket-Key, -Version */
	int has_content_length;
	uint64_t content_length;
	size_t nheaders;
	struct buf body; /* as received; http_req_decode_body() inflates it */
	int keep_alive;	 /* the connection may carry another request */
	/* After HTTP_REQ_ERROR or a failed helper: the status to answer and
	 * why, printable ASCII (client bytes are escaped as \xNN). */
	int status;
	char error[HTTP_REQ_MAX_ERROR];
};

enum http_req_event {
	HTTP_REQ_MORE = 0, /* every byte consumed; the request is not complete */
	HTTP_REQ_HEAD,	   /* the head is complete (all fields above but body set) */
	HTTP_REQ_DONE,	   /* the request is complete: answer it, then feed the rest */
	HTTP_REQ_ERROR,	   /* refused: answer req->status and req->error, then close */
};

struct http_req_parser;

/* A parser for one connection; body_limit bounds the body as received and
 * after decompression (413). */
struct http_req_parser *http_req_parser_new(size_t body_limit);
void http_req_parser_free(struct http_req_parser *p);

/* Feeds data[0..len). Stops after an event; *consumed says how much was
 * used (all of it for HTTP_REQ_MORE), so the caller feeds the rest after
 * handling the event. After HTTP_REQ_ERROR every later call returns it
 * again and consumes nothing. */
enum http_req_event http_req_feed(struct http_req_parser *p, const char *data, size_t len,
				  size_t *consumed);
/* The request being read or just completed (valid until the next feed that
 * starts another request, or until the parser is freed). */
struct http_req *http_req_current(struct http_req_parser *p);
/* 1 when a request's first byte was read and it is not complete yet. */
int http_req_in_progress(const struct http_req_parser *p);

/* 1 when the client waits for "100 Continue" before sending the body. */
int http_req_wants_continue(const struct http_req *r);

/* Applies Content-Encoding (identity, gzip, x-gzip, deflate: zlib or raw)
 * to the body in place, keeping it within limit. 0, or the status (400
 * corrupt, 413 too large once inflated, 415 unknown encoding) with
 * r->status and r->error set. */
int http_req_decode_body(struct http_req *r, size_t limit);

/* The decoded query parameter key into out (NUL-terminated; '+' is a space).
 * 1 found, 0 absent, -1 badly encoded, holding NUL, or longer than outlen-1. */
int http_req_query_get(const struct http_req *r, const char *key, char *out, size_t outlen);

/* The body as a JSON object (new reference in *out). 0, or the status (415
 * without Content-Type: application/json, 400 syntax with its line and
 * column, 422 not an object) with a message in err. */
int http_req_json_body(const char *content_type, const char *body, size_t len, json_t **out,
		       char *err, size_t errlen);
/* The first key of obj not in the NULL-terminated allowed list, or NULL. */
const char *http_req_json_unknown_key(json_t *obj, const char *const *allowed);

/* --- Authorization ---------------------------------------------------------- */

enum http_req_auth_scheme {
	HTTP_REQ_AUTH_BASIC = 1,
	HTTP_REQ_AUTH_BEARER,
};

/* Parsed credentials; user/password/token point into buf. Clear with
 * http_req_auth_clear() once checked. */
struct http_req_auth {
	enum http_req_auth_scheme scheme;
	const char *user, *password; /* Basic: user has no ':'; neither has NUL */
	const char *token;	     /* Bearer: token68 (RFC 7235) */
	char buf[HTTP_REQ_MAX_CREDENTIALS + 1];
};

/* Parses an Authorization value: "Basic <base64 of user:password>" or
 * "Bearer <token68>", scheme case-insensitive. 0, or -EINVAL (another
 * scheme, bad base64, no ':', NUL, over HTTP_REQ_MAX_CREDENTIALS). */
int http_req_auth_parse(const char *value, struct http_req_auth *a);
/* Wipes the credentials. */
void http_req_auth_clear(struct http_req_auth *a);
/* Appends "Basic <base64(user:password)>" to out. */
void http_req_auth_format_basic(struct buf *out, const char *user, const char *password);

/* Copies s[0..n) into dst (NUL-terminated, at most dstlen-1 bytes) with
 * bytes outside printable ASCII, '\\' and '\'' escaped as \xNN: client text
 * safe to quote in an error. Returns the length written. */
size_t http_req_escape(char *dst, size_t dstlen, const char *s, size_t n);

#endif
