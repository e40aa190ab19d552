/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `mime_view`: the mail catcher's MIME view, decoders and extractors.
 * Invariants: every leaf lies inside the message and in document order; decoded header
 * values and converted bodies are valid UTF-8; links start with http(s):// and codes are
 * 4-8 digits. Input: the message. */
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "proto/mime_view.h"
#include "fuzz_check.h"

static int valid_utf8(const char *s, size_t n)
{
	struct buf b;
	buf_init(&b);
	buf_append_utf8_lossy(&b, s, n);
	int same = b.len == n && (!n || memcmp(b.data, s, n) == 0);
	buf_free(&b);
	return same;
}

static void on_link(const char *s, size_t n, void *ctx)
{
	CHECK((n > 7 && strncasecmp(s, "http://", 7) == 0) ||
	      (n > 8 && strncasecmp(s, "https://", 8) == 0));
}

static void on_code(const char *s, size_t n, void *ctx)
{
	CHECK(n >= 4 && n <= 8);
	for (size_t i = 0; i < n; i++)
		CHECK(s[i] >= '0' && s[i] <= '9');
}

static void on_addr(const char *name, size_t nlen, const char *addr, size_t alen, void *ctx)
{
	size_t size = *(size_t *)ctx;
	CHECK(alen > 0 && alen <= size && nlen <= size);
}

static struct mime_view v;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	mime_view_parse(in, size, &v);
	CHECK(v.nparts <= MIME_VIEW_MAX_PARTS && v.header_len <= size);
	size_t prev = 0;
	struct buf dec, txt;
	buf_init(&dec);
	buf_init(&txt);
	for (size_t i = 0; i < v.nparts; i++) {
		const struct mime_view_part *p = &v.parts[i];
		CHECK(p->off <= size && p->len <= size - p->off && p->off >= prev);
		prev = p->off;
		buf_reset(&dec);
		buf_reset(&txt);
		mime_view_decode(in + p->off, p->len, p->cte, &dec);
		mime_view_to_utf8(dec.data ? dec.data : "", dec.len, p->charset, &txt);
		CHECK(valid_utf8(txt.data ? txt.data : "", txt.len));
		mime_view_links(txt.data ? txt.data : "", txt.len, on_link, NULL);
		mime_view_codes(txt.data ? txt.data : "", txt.len, on_code, NULL);
	}
	mime_view_addresses(in, size, on_addr, &size);
	buf_reset(&txt);
	mime_view_decode_header(in, size, &txt);
	CHECK(valid_utf8(txt.data ? txt.data : "", txt.len));
	buf_free(&dec);
	buf_free(&txt);
	return 0;
}
