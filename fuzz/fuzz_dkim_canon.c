/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `dkim_canon`: the DKIM canonicalization input (kumod/proto/dkim.c),
 * i.e. what msg:dkim_sign hashes of any message a client sends. Byte 0: bit 0 header
 * canonicalization relaxed, bit 1 body canonicalization relaxed, bit 2 over-signing; the rest
 * is the message (header section, blank line, body). The h= list is built from fixed names
 * plus the names of the message's first fields. Invariants:
 *  - the body output ends in CRLF and has no trailing empty line (simple: never empty, an empty
 *    body is one CRLF; relaxed: empty or ending in a non-empty line), every LF follows a CR;
 *    relaxed has no HTAB, no two SP in a row and no SP before a CRLF;
 *  - canonicalizing the canonical body again changes nothing (a fixed point);
 *  - relaxed header output is one line per selected field with a lower-case name, no SP after
 *    the ':' and none before the CRLF, no two SP in a row; no more fields than names in h=;
 *  - with over-signing each distinct name appears once more than the message has it;
 *  - the DKIM-Signature field built for them keeps every line within 77 octets, but for a
 *    line holding a single header name longer than that. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "proto/dkim.h"
#include "proto/rfc5322.h"
#include "fuzz_check.h"

static void emit(void *ctx, const void *p, size_t n)
{
	buf_append(ctx, p, n);
}

static void check_body(enum dkim_canon c, const char *body, size_t len)
{
	struct buf out, again;
	buf_init(&out);
	buf_init(&again);
	dkim_canon_body(c, body, len, emit, &out);
	const char *o = out.data ? out.data : "";
	size_t n = out.len;
	if (c == DKIM_SIMPLE)
		CHECK(n >= 2);
	if (n) {
		CHECK(n >= 2 && o[n - 2] == '\r' && o[n - 1] == '\n');
		/* no trailing empty line, except simple's lone CRLF */
		CHECK(n == 2 || !(n >= 4 && memcmp(o + n - 4, "\r\n\r\n", 4) == 0));
		if (c == DKIM_RELAXED)
			CHECK(n > 2);
	}
	for (size_t i = 0; i < n; i++) {
		if (o[i] == '\n')
			CHECK(i > 0 && o[i - 1] == '\r');
		if (c == DKIM_RELAXED) {
			CHECK(o[i] != '\t');
			if (o[i] == ' ')
				CHECK(i + 1 < n && o[i + 1] != ' ' &&
				      !(o[i + 1] == '\r' && i + 2 < n && o[i + 2] == '\n'));
		}
	}
	dkim_canon_body(c, o, n, emit, &again);
	CHECK(again.len == n && (n == 0 || memcmp(again.data, o, n) == 0));
	buf_free(&out);
	buf_free(&again);
}

static void check_relaxed_fields(const struct buf *out, size_t max_fields)
{
	const char *o = out->data ? out->data : "";
	size_t fields = 0, i = 0;
	while (i < out->len) {
		const char *nl = memchr(o + i, '\n', out->len - i);
		CHECK(nl && nl > o + i && nl[-1] == '\r');
		size_t end = (size_t)(nl - o) - 1; /* the CR */
		const char *colon = memchr(o + i, ':', end - i);
		CHECK(colon);
		for (const char *p = o + i; p < colon; p++)
			CHECK(!(*p >= 'A' && *p <= 'Z') && *p != ' ' && *p != '\t');
		for (size_t k = i; k < end; k++) {
			CHECK(o[k] != '\r' && o[k] != '\n' && o[k] != '\t');
			if (o[k] == ' ')
				CHECK(k + 1 < end && o[k + 1] != ' ' && o + k != colon + 1);
		}
		fields++;
		i = (size_t)(nl - o) + 1;
	}
	CHECK(fields <= max_fields);
}

static size_t count_names(const char *h)
{
	size_t n = *h ? 1 : 0;
	for (; *h; h++)
		n += *h == ':';
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 65536)
		return 0;
	enum dkim_canon hc = data[0] & 1 ? DKIM_RELAXED : DKIM_SIMPLE;
	enum dkim_canon bc = data[0] & 2 ? DKIM_RELAXED : DKIM_SIMPLE;
	int over = (data[0] & 4) != 0;
	const char *msg = (const char *)data + 1;
	size_t len = size - 1;
	size_t hdr_end = rfc5322_header_end(msg, len);
	check_body(bc, msg + hdr_end, len - hdr_end);

	/* names: fixed ones and the message's first three */
	struct buf names, h, out, field;
	buf_init(&names);
	buf_init(&h);
	buf_init(&out);
	buf_init(&field);
	buf_appends(&names, "From:Subject:To");
	size_t pos = 0;
	struct rfc5322_header f;
	for (int i = 0; i < 3 && rfc5322_header_next(msg, hdr_end, &pos, &f); i++) {
		buf_appendc(&names, ':');
		buf_append(&names, f.name, f.name_len);
	}
	dkim_h_list(msg, hdr_end, buf_cstr(&names), over, &h);
	size_t nh = count_names(buf_cstr(&h));
	if (over)
		CHECK(nh >= 3);
	else
		CHECK(nh == count_names(buf_cstr(&names)));
	dkim_canon_headers(hc, msg, hdr_end, buf_cstr(&h), &out);
	if (hc == DKIM_RELAXED)
		check_relaxed_fields(&out, nh);

	struct dkim_sig s = {"rsa-sha256",
			     "example.com",
			     "sel",
			     hc,
			     bc,
			     "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
			     buf_cstr(&h),
			     1700000000,
			     0};
	dkim_sig_format(&field, &s);
	dkim_sig_finish(&field, "c2lnbmF0dXJl", 12);
	/* a line passes 77 octets only to hold one header name too long for any line */
	for (size_t i = 0, start = 0; i <= field.len; i++) {
		if (i < field.len && field.data[i] != '\n')
			continue;
		if (i - start > 77) {
			/* "\t[h=]name:" or "\t[h=]name;" (+ CR): no other ':' */
			size_t e = i - (field.data[i - 1] == '\r');
			char last = field.data[e - 1];
			CHECK(last == ':' || last == ';');
			CHECK(!memchr(field.data + start, ':', e - 1 - start));
		}
		start = i + 1;
	}
	buf_free(&names);
	buf_free(&h);
	buf_free(&out);
	buf_free(&field);
	return 0;
}
