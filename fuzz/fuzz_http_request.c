/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `http_request`: the HTTP API's request parsing
 * (proto/http_req). Input: byte 0 picks the body limit (bits 0-1), whether
 * the rest is one Authorization value instead of a request stream (bit 2)
 * and the chunking seed (bits 3-7); the rest is what a client sends, any
 * number of pipelined requests. Invariants: feeding the stream at once and
 * in chunks of 1-16 bytes (and larger) gives the same events and the same
 * requests; a complete request's body is within the limit, and still is
 * after http_req_decode_body() accepts it; header values hold no CR, LF or
 * NUL; every error (parse, body, JSON body) is a known status with a
 * non-empty text json_pack() accepts; a Basic header formatted from the
 * parsed user and password parses back equal, a Bearer token likewise;
 * query parameters decode within their buffer. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/buf.h"
#include "proto/http_req.h"
#include "fuzz_check.h"

#define MAX_REQUESTS 32

static void check_text(const char *s)
{
	CHECK(s[0] != 0);
	json_t *j = json_pack("{s:s}", "error", s);
	CHECK(j != NULL); /* valid UTF-8: the listener can answer it as JSON */
	json_decref(j);
}

static void check_value(const char *v)
{
	if (v)
		CHECK(strpbrk(v, "\r\n") == NULL); /* and no NUL: C string of the value */
}

static void check_auth(const char *value)
{
	struct http_req_auth a, b;
	if (http_req_auth_parse(value, &a) != 0) {
		http_req_auth_clear(&a);
		return;
	}
	struct buf out;
	buf_init(&out);
	if (a.scheme == HTTP_REQ_AUTH_BASIC) {
		CHECK(strchr(a.user, ':') == NULL);
		http_req_auth_format_basic(&out, a.user, a.password);
		CHECK(http_req_auth_parse(buf_cstr(&out), &b) == 0);
		CHECK(b.scheme == HTTP_REQ_AUTH_BASIC);
		CHECK(strcmp(a.user, b.user) == 0 && strcmp(a.password, b.password) == 0);
	} else {
		CHECK(a.scheme == HTTP_REQ_AUTH_BEARER && a.token[0] && !strchr(a.token, ' '));
		buf_printf(&out, "Bearer %s", a.token);
		CHECK(http_req_auth_parse(buf_cstr(&out), &b) == 0);
		CHECK(b.scheme == HTTP_REQ_AUTH_BEARER && strcmp(a.token, b.token) == 0);
	}
	http_req_auth_clear(&b);
	http_req_auth_clear(&a);
	buf_free(&out);
}

static void check_query(const struct http_req *r)
{
	static const char *const keys[] = {"queue_name", "a", ""};
	char out[16];
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		memset(out, 'x', sizeof(out));
		int rc = http_req_query_get(r, keys[i], out, sizeof(out));
		CHECK(rc >= -1 && rc <= 1);
		if (rc == 1)
			CHECK(memchr(out, 0, sizeof(out)) != NULL);
	}
}

/* Appends what identifies the completed request to the trace. */
static void record(struct buf *trace, const struct http_req *r)
{
	const char *const vals[] = {r->content_type, r->content_encoding, r->authorization,
				    r->host,	     r->expect,		  r->connection};
	buf_printf(trace, "DONE %d %s %d.%d ka=%d n=%zu cl=%d/%llu url=%zu:", r->method,
		   r->method_name, r->http_major, r->http_minor, r->keep_alive, r->nheaders,
		   r->has_content_length, (unsigned long long)r->content_length, r->url.len);
	buf_append(trace, r->url.data, r->url.len);
	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++)
		buf_printf(trace, "|%s", vals[i] ? vals[i] : "(none)");
	buf_printf(trace, " body=%zu:", r->body.len);
	buf_append(trace, r->body.data, r->body.len);
	buf_appendc(trace, '\n');
}

/* Checks a completed request; mutates it (decodes the body). */
static void check_request(struct http_req *r, size_t limit)
{
	CHECK(r->body.len <= limit);
	CHECK(r->path.len > 0 && r->method_name != NULL);
	check_value(r->content_type);
	check_value(r->content_encoding);
	check_value(r->authorization);
	check_value(r->host);
	check_value(r->expect);
	check_value(r->connection);
	check_query(r);
	if (r->authorization)
		check_auth(r->authorization);
	json_t *j = NULL;
	char err[512];
	int st =
	    http_req_json_body(r->content_type, r->body.data, r->body.len, &j, err, sizeof(err));
	CHECK(st == 0 || st == 400 || st == 415 || st == 422);
	CHECK(st == 0 ? j != NULL : j == NULL);
	if (st)
		check_text(err);
	json_decref(j);
	st = http_req_decode_body(r, limit);
	CHECK(st == 0 || st == 400 || st == 413 || st == 415);
	if (st == 0) {
		CHECK(r->body.len <= limit);
	} else {
		CHECK(r->status == st);
		check_text(r->error);
	}
}

/* Feeds the stream in chunks from the seed (0: all at once); returns the
 * trace of events. check: run the per-request checks too. */
static void run(const char *p, size_t len, size_t limit, unsigned seed, int check,
		struct buf *trace)
{
	struct http_req_parser *hp = http_req_parser_new(limit);
	size_t off = 0, end = 0, requests = 0;
	uint32_t x = seed * 2654435761u + 1;
	while (off < len && requests < MAX_REQUESTS) {
		if (end <= off) {
			x = x * 1103515245u + 12345u;
			size_t step = !seed ? len : (x >> 16) % 8 == 0 ? 200 : 1 + (x >> 16) % 16;
			end = off + step < len ? off + step : len;
		}
		size_t n = 0;
		enum http_req_event ev = http_req_feed(hp, p + off, end - off, &n);
		CHECK(n <= end - off);
		CHECK(ev != HTTP_REQ_MORE || n == end - off);
		off += n;
		struct http_req *r = http_req_current(hp);
		if (ev == HTTP_REQ_HEAD) {
			buf_printf(trace, "HEAD @%zu\n", off);
		} else if (ev == HTTP_REQ_DONE) {
			requests++;
			record(trace, r);
			if (check)
				check_request(r, limit);
		} else if (ev == HTTP_REQ_ERROR) {
			CHECK(r->status == 400 || r->status == 413 || r->status == 414 ||
			      r->status == 431 || r->status == 505);
			check_text(r->error);
			buf_printf(trace, "ERROR %d %s\n", r->status, r->error);
			CHECK(http_req_feed(hp, p + off, len - off, &n) == HTTP_REQ_ERROR &&
			      n == 0);
			break;
		}
	}
	http_req_parser_free(hp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t limits[] = {0, 16, 1024, 65536};
	if (size < 1)
		return 0;
	const char *p = (const char *)data + 1;
	size_t len = size - 1, limit = limits[data[0] & 3];
	if (data[0] & 4) {
		char *s = strndup(p, len);
		CHECK(s);
		check_auth(s);
		free(s);
		return 0;
	}
	struct buf once, chunked;
	buf_init(&once);
	buf_init(&chunked);
	run(p, len, limit, 0, 1, &once);
	run(p, len, limit, (data[0] >> 3) + 1u, 0, &chunked);
	if (once.len != chunked.len || (once.len && memcmp(once.data, chunked.data, once.len))) {
		fprintf(stderr, "one chunk:\n%.*s\nchunked:\n%.*s\n", (int)once.len, once.data,
			(int)chunked.len, chunked.data);
		CHECK(!"one-shot and chunked feeding differ");
	}
	buf_free(&once);
	buf_free(&chunked);
	return 0;
}
