/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `reply_parser`: the outbound client's multi-line reply parser and the
 * server's reply formatter. Parser invariants: consumed <= len, the text never holds CR,
 * feeding the bytes one at a time (or in chunks) gives the same result as all at once, a
 * reply ends at its final line's CRLF, and a parsed reply re-formatted with
 * smtp_reply_format() parses back to the same reply (where the formatter can represent it).
 * Formatter invariants: every line <= 512 octets, CRLF only at line ends, one code, and the output
 * parses back as exactly one reply with that code. Input: the reply stream; byte 0 also picks the
 * formatter's code and enhanced code. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "proto/smtp_reply.h"
#include "fuzz_check.h"

static void fz_same(const struct smtp_reply *a, const struct smtp_reply *b)
{
	CHECK(a->code == b->code && !strcmp(a->enhanced, b->enhanced));
	CHECK(a->nlines == b->nlines && a->text.len == b->text.len);
	CHECK(!a->text.len || !memcmp(a->text.data, b->text.data, a->text.len));
}

static void fz_check_ok(const char *in, int rc, const struct smtp_reply *r)
{
	size_t n = (size_t)rc;

	CHECK(n >= 5 && in[n - 2] == '\r' && in[n - 1] == '\n');
	CHECK(r->code >= 200 && r->code <= 599 && r->nlines >= 1);
	CHECK(!memchr(r->text.data, '\r', r->text.len));
	CHECK(r->text.len <= n);
	CHECK(n <= SMTP_REPLY_PARSE_TOTAL_MAX);
	/* Exactly nlines CRLFs, the last at the end, every line starting with the code. */
	size_t lines = 0;
	for (size_t i = 0; i < n; i++) {
		if (i == 0 || in[i - 1] == '\n') {
			CHECK((in[i] - '0') * 100 + (in[i + 1] - '0') * 10 + (in[i + 2] - '0') ==
			      r->code);
			lines++;
		}
		if (in[i] == '\n')
			CHECK(in[i - 1] == '\r');
	}
	CHECK(lines == r->nlines);
	if (r->enhanced[0])
		CHECK(r->enhanced[0] - '0' == r->code / 100);
}

/* Parsed -> smtp_reply_format() -> parsed again keeps code, enhanced code, line count and text,
 * where the formatter can represent the reply unchanged: printable text, lines short enough
 * not to be split, no line that still starts with an enhanced code of the reply's class (the
 * formatter would take it for the line's own), and no empty last line after others (a
 * trailing LF is dropped by design). */
static int fz_formattable(const struct smtp_reply *r)
{
	const char *t = r->text.data ? r->text.data : "";
	size_t len;

	for (size_t i = 0; i < r->text.len; i++) {
		unsigned char c = (unsigned char)t[i];
		if (c != '\n' && c != '\t' && (c < 32 || c > 126))
			return 0;
	}
	for (size_t i = 0; i < r->nlines; i++) {
		const char *l = smtp_reply_line(r, i, &len);
		int cls;
		if (len > SMTP_REPLY_LINE_MAX - 32)
			return 0;
		if (smtp_enhanced_parse(l, len, &cls, NULL, NULL, NULL) && cls == r->code / 100)
			return 0;
		if (i + 1 == r->nlines && i > 0 && len == 0)
			return 0;
	}
	return 1;
}

static void fz_reformat(const struct smtp_reply *r)
{
	struct buf out;
	struct smtp_reply r2;
	char *text;

	if (!fz_formattable(r))
		return;
	text = malloc(r->text.len + 1);
	memcpy(text, r->text.data ? r->text.data : "", r->text.len);
	text[r->text.len] = 0;
	buf_init(&out);
	smtp_reply_init(&r2);
	smtp_reply_format(&out, r->code, r->enhanced[0] ? r->enhanced : NULL, text);
	CHECK(smtp_reply_parse(out.data, out.len, &r2) == (int)out.len);
	fz_same(r, &r2);
	smtp_reply_free(&r2);
	buf_free(&out);
	free(text);
}

/* Parses in[0..len) as a client would: the prefix grows by `step` bytes (step 1 = byte by
 * byte) until the parser stops asking for more. */
static int fz_incremental(const char *in, size_t len, size_t step, struct smtp_reply *r)
{
	for (size_t k = 0;;) {
		k = k + step < len ? k + step : len;
		int rc = smtp_reply_parse(in, k, r);
		CHECK(rc <= (int)k);
		if (rc != 0 || k == len)
			return rc;
	}
}

static void fz_parser(const char *in, size_t len)
{
	struct smtp_reply all, inc;
	int rc, rc2;

	smtp_reply_init(&all);
	smtp_reply_init(&inc);
	rc = smtp_reply_parse(in, len, &all);
	CHECK(rc == 0 || rc == -EPROTO || (rc > 0 && (size_t)rc <= len));
	if (rc > 0) {
		fz_check_ok(in, rc, &all);
		fz_reformat(&all);
	}
	if (rc < 0)
		CHECK(all.error != NULL);
	rc2 = fz_incremental(in, len, len <= 512 ? 1 : 97, &inc);
	CHECK(rc2 == rc);
	if (rc > 0)
		fz_same(&all, &inc);
	rc2 = fz_incremental(in, len, 7, &inc);
	CHECK(rc2 == rc);
	if (rc > 0)
		fz_same(&all, &inc);
	smtp_reply_free(&all);
	smtp_reply_free(&inc);
}

static const char *const fz_enh[] = {NULL, "2.0.0", "4.3.0", "5.7.1", "5.999.999", "x.y.z"};
static const int fz_codes[] = {250, 220, 354, 421, 451, 550, 599, 200, 99, 600};

static void fz_formatter(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	struct buf out;
	struct smtp_reply r;
	int code = fz_codes[data[0] % 10];
	const char *enh = fz_enh[(data[0] / 10) % 6];

	memcpy(text, data + 1, size - 1);
	text[size - 1] = 0; /* the formatter takes a C string: stops at the first NUL */
	buf_init(&out);
	smtp_reply_format(&out, code, enh, text);
	if (code < 200 || code > 599)
		code = 451;
	size_t pos = 0;
	while (pos < out.len) {
		const char *lf = memchr(out.data + pos, '\n', out.len - pos);
		CHECK(lf);
		size_t ll = (size_t)(lf - (out.data + pos)) + 1;
		CHECK(ll <= SMTP_REPLY_LINE_MAX && ll >= 5 && out.data[pos + ll - 2] == '\r');
		CHECK(!memchr(out.data + pos, '\r', ll - 2));
		for (size_t k = 0; k < ll - 2; k++) {
			unsigned char c = (unsigned char)out.data[pos + k];
			CHECK(c == '\t' || (c >= 32 && c <= 126));
		}
		CHECK(out.data[pos + 3] == (pos + ll == out.len ? (ll == 5 ? '\r' : ' ') : '-'));
		pos += ll;
	}
	smtp_reply_init(&r);
	if (out.len <= SMTP_REPLY_PARSE_TOTAL_MAX) {
		CHECK(smtp_reply_parse(out.data, out.len, &r) == (int)out.len);
		CHECK(r.code == code);
		/* A valid enhanced code of the right class is kept (and read back), unless the
		 * text's first line brings its own. */
		int cls, own;
		size_t fl = strcspn(text, "\r\n");
		own = smtp_enhanced_parse(text, fl, &cls, NULL, NULL, NULL) && cls == code / 100;
		if (enh && !own && code == fz_codes[data[0] % 10] &&
		    smtp_enhanced_parse(enh, strlen(enh), &cls, NULL, NULL, NULL) &&
		    cls == code / 100)
			CHECK(!strcmp(r.enhanced, enh));
	}
	smtp_reply_free(&r);
	buf_free(&out);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_parser((const char *)data, size);
	if (size >= 1)
		fz_formatter(data, size);
	return 0;
}
