/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the C side of the Lua header methods: random message plus a script of
 * prepend/append/remove/get calls. Checks: validation matches the rules (no CR/LF/NUL can be
 * injected), the body is never touched, headers still parse with the expected count, an added
 * value reads back, removal is complete. Aborts on violation.
 * Input: message, then 0xFF-separated operations: op byte, name, 0xFE, value. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "proto/rfc5322.h"
#include "fuzz_check.h"

static size_t fz_count(const struct buf *m, const char *name)
{
	const char *p = m->data ? m->data : "";
	size_t end = rfc5322_header_end(p, m->len), pos = 0, n = 0, last = 0;
	struct rfc5322_header h;

	CHECK(end <= m->len);
	while (rfc5322_header_next(p, end, &pos, &h)) {
		CHECK(h.start >= last && h.start < h.end && h.end <= end && h.end == pos);
		CHECK(h.name_len > 0 &&
		      rfc5322_name_valid(h.name, h.name_len < 996 ? h.name_len : 1));
		CHECK(h.raw_value + h.raw_len <= p + h.end);
		last = h.end;
		if (!name || (h.name_len == strlen(name) && !strncasecmp(h.name, name, h.name_len)))
			n++;
	}
	return n;
}

/* The body: everything after the blank line, or NULL when there is none. */
static const char *fz_body(const struct buf *m, size_t *n)
{
	const char *p = m->data ? m->data : "";
	size_t end = rfc5322_header_end(p, m->len);
	int blank = end > 0 && p[end - 1] == '\n' &&
		    (end == 1 || p[end - 2] == '\n' ||
		     (p[end - 2] == '\r' && (end == 2 || p[end - 3] == '\n')));
	*n = m->len - end;
	return blank ? p + end : NULL;
}

static int fz_valid(const char *name, const char *value)
{
	size_t n = strlen(name);
	if (n == 0 || n > 996)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)name[i] < 33 || (unsigned char)name[i] > 126 || name[i] == ':')
			return 0;
	return !strpbrk(value, "\r\n");
}

/* The expected read-back when no fold can change it, else NULL; `squeeze` compares values
 * with all whitespace removed (folding only ever adds or collapses whitespace). */
static void fz_squeeze(const char *p, size_t n, struct buf *out)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != ' ' && p[i] != '\t')
			buf_appendc(out, p[i]);
}

static void fz_check_value(const struct buf *m, const char *name, const char *value, int first)
{
	struct buf got, a, b;
	size_t vlen = strlen(value), s = 0, e = vlen, run = 0, maxrun = 0;

	buf_init(&got);
	buf_init(&a);
	buf_init(&b);
	if (first) {
		CHECK(rfc5322_get_first(m->data, m->len, name, &got) == 1);
	} else {
		/* the appended field is the last of its name */
		size_t n = fz_count(m, name);
		const char *p = m->data;
		size_t end = rfc5322_header_end(p, m->len), pos = 0, k = 0;
		struct rfc5322_header h;
		while (rfc5322_header_next(p, end, &pos, &h))
			if (h.name_len == strlen(name) && !strncasecmp(h.name, name, h.name_len) &&
			    ++k == n)
				rfc5322_unfold(h.raw_value, h.raw_len, &got);
		CHECK(k == n && n > 0);
	}
	while (s < e && (value[s] == ' ' || value[s] == '\t'))
		s++;
	while (e > s && (value[e - 1] == ' ' || value[e - 1] == '\t'))
		e--;
	for (size_t i = s; i < e; i++) {
		run = value[i] == ' ' || value[i] == '\t' ? run + 1 : 0;
		maxrun = run > maxrun ? run : maxrun;
	}
	if (strlen(name) + 2 + (e - s) < 998 && maxrun <= 499) {
		CHECK(got.len == e - s && (!got.len || !memcmp(got.data, value + s, got.len)));
	} else {
		fz_squeeze(got.data ? got.data : "", got.len, &a);
		fz_squeeze(value, vlen, &b);
		CHECK(a.len == b.len && (!a.len || !memcmp(a.data, b.data, a.len)));
	}
	buf_free(&got);
	buf_free(&a);
	buf_free(&b);
}

static void fz_collect(const char *v, size_t n, void *ctx)
{
	size_t *count = ctx;
	CHECK(!memchr(v, '\n', n));
	(*count)++;
}

static void fz_op(struct buf *m, uint8_t op, const char *name, const char *value)
{
	size_t blen0, blen1, before = fz_count(m, NULL), named = fz_count(m, name), got;
	const char *b0 = fz_body(m, &blen0);
	struct buf body0, v;
	int rc;

	buf_init(&body0);
	buf_init(&v);
	if (b0)
		buf_append(&body0, b0, blen0);
	switch (op % 5) {
	case 0:
	case 1:
		rc = op % 5 ? rfc5322_append_header(m, name, value)
			    : rfc5322_prepend_header(m, name, value);
		CHECK((rc == 0) == fz_valid(name, value));
		CHECK(rc == 0 || rc == -EINVAL);
		if (rc == 0) {
			CHECK(fz_count(m, NULL) == before + 1);
			CHECK(fz_count(m, name) == named + 1);
			fz_check_value(m, name, value, op % 5 == 0);
		}
		break;
	case 2:
		CHECK(rfc5322_remove_all_named(m, name) == named);
		CHECK(fz_count(m, name) == 0);
		CHECK(fz_count(m, NULL) == before - named);
		break;
	case 3:
		CHECK(rfc5322_get_first(m->data, m->len, name, &v) == (named > 0));
		CHECK(!memchr(v.data ? v.data : "", '\n', v.len));
		break;
	default:
		got = 0;
		CHECK(rfc5322_get_all(m->data, m->len, name, fz_collect, &got) == named);
		CHECK(got == named);
		break;
	}
	const char *b1 = fz_body(m, &blen1);
	CHECK(!b0 == !b1);
	if (b0)
		CHECK(blen0 == blen1 && !memcmp(body0.data ? body0.data : "", b1, blen0));
	buf_free(&body0);
	buf_free(&v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data, *end = data + size;
	const uint8_t *sep = memchr(p, 0xff, size);
	struct buf m;
	size_t nops = 0;

	buf_init(&m);
	buf_append(&m, p, sep ? (size_t)(sep - p) : size);
	p = sep ? sep + 1 : end;
	while (p < end && nops++ < 16) {
		const uint8_t *next = memchr(p, 0xff, (size_t)(end - p));
		const uint8_t *stop = next ? next : end;
		const uint8_t *mid = memchr(p, 0xfe, (size_t)(stop - p));
		uint8_t op = *p;
		const uint8_t *ns = p + 1, *ne = mid ? mid : stop;
		const uint8_t *vs = mid ? mid + 1 : stop;
		if (ns > ne)
			ns = ne;
		char *name = strndup((const char *)ns, (size_t)(ne - ns));
		char *value = strndup((const char *)vs, (size_t)(stop - vs));
		fz_op(&m, op, name, value);
		free(name);
		free(value);
		p = next ? next + 1 : end;
	}
	buf_free(&m);
	return 0;
}
