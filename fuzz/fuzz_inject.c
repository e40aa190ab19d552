/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `inject`: the /api/inject/v1 body → messages path
 * (http_req_json_body, proto/inject_req). Input: the JSON body. Invariants:
 * a refused body is 400 (syntax, and the text names a line and column) or
 * 422 (the text names a field, or says the body is not an object); every
 * error text and every per-recipient failure is valid UTF-8 for JSON; each
 * recipient of an accepted request ends in exactly one outcome (built or
 * failed: success + fail == count); a built message is non-empty, ends with
 * CRLF, has CRLF line endings only (no bare CR or LF) and no NUL; a builder
 * message has a header section of "Name: value" lines and continuation
 * lines ending in an empty line, and its To header (unless content.headers
 * sets one) holds the recipient's <email>. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "base/buf.h"
#include "proto/http_req.h"
#include "proto/inject_req.h"
#include "proto/rfc5322.h"
#include "fuzz_check.h"

#define MAX_BUILT 64

static void check_text(const char *s)
{
	CHECK(s[0] != 0);
	json_t *j = json_string(s); /* NULL unless valid UTF-8 */
	CHECK(j != NULL);
	json_decref(j);
}

/* A 422 names the field it refuses (or the whole body's shape). */
static void check_field_error(const char *err)
{
	static const char *const fields[] = {"envelope_sender",	    "content",
					     "recipients",	    "substitutions",
					     "template_dialect",    "deferred_spool",
					     "trace_headers",	    "unknown field '",
					     "deferred_generation", "expected a JSON object",
					     "subject: ",	    "text_body: ",
					     "html_body: "};
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		if (strncmp(err, fields[i], strlen(fields[i])) == 0)
			return;
	fprintf(stderr, "error names no field: %s\n", err);
	CHECK(!"422 without a field name");
}

static void check_crlf(const char *m, size_t len)
{
	CHECK(len >= 2 && m[len - 2] == '\r' && m[len - 1] == '\n');
	CHECK(memchr(m, 0, len) == NULL);
	for (size_t i = 0; i < len; i++) {
		if (m[i] == '\r')
			CHECK(i + 1 < len && m[i + 1] == '\n');
		if (m[i] == '\n')
			CHECK(i > 0 && m[i - 1] == '\r');
	}
}

static void check_builder_headers(const struct inject_req *q, size_t i, const char *m, size_t len)
{
	size_t hdr_end = rfc5322_header_end(m, len);
	CHECK(hdr_end > 0 && hdr_end <= len);
	for (size_t pos = 0; pos < hdr_end;) {
		const char *eol = memchr(m + pos, '\n', len - pos);
		CHECK(eol != NULL);
		size_t n = (size_t)(eol - (m + pos)) + 1;
		if (n == 2)
			break; /* the empty line */
		if (m[pos] != ' ' && m[pos] != '\t') {
			const char *colon = memchr(m + pos, ':', n);
			CHECK(colon != NULL &&
			      rfc5322_name_valid(m + pos, (size_t)(colon - (m + pos))));
		}
		pos += n;
	}
	json_t *custom = json_object_get(q->content, "headers");
	const char *k;
	json_t *v;
	json_object_foreach(custom, k, v)
	{
		if (strcasecmp(k, "To") == 0)
			return;
	}
	struct buf to, want;
	buf_init(&to);
	buf_init(&want);
	CHECK(rfc5322_get_first(m, len, "To", &to) == 1);
	buf_printf(&want, "<%s>", inject_req_rcpt_email(q, i));
	CHECK(strstr(buf_cstr(&to), buf_cstr(&want)) != NULL);
	buf_free(&to);
	buf_free(&want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *j = NULL;
	char err[INJECT_REQ_MAX_ERROR];
	int st = http_req_json_body("application/json; charset=utf-8", (const char *)data, size, &j,
				    err, sizeof(err));
	if (st) {
		CHECK(st == 400 || st == 422);
		check_text(err);
		if (st == 400)
			CHECK(strstr(err, " line ") && strstr(err, " column "));
		return 0;
	}
	struct inject_req q;
	st = inject_req_parse(j, &q, err, sizeof(err));
	json_decref(j);
	if (st) {
		CHECK(st == 422);
		check_text(err);
		check_field_error(err);
		return 0;
	}
	size_t n = inject_req_count(&q), ok = 0, fail = 0;
	CHECK(n > 0);
	for (size_t i = 0; i < n && i < MAX_BUILT; i++) {
		struct buf m;
		buf_init(&m);
		if (inject_req_build(&q, i, "0123456789abcdef0123456789abcdef",
				     "Sun, 29 Nov 2026 09:00:00 +0000", &m, err,
				     sizeof(err)) != 0) {
			check_text(err);
			fail++;
		} else {
			check_crlf(m.data, m.len);
			if (!json_is_string(q.content))
				check_builder_headers(&q, i, m.data, m.len);
			ok++;
		}
		buf_free(&m);
	}
	CHECK(ok + fail == (n < MAX_BUILT ? n : MAX_BUILT));
	inject_req_free(&q);
	return 0;
}
