/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `mime_build`: the MIME rebuild of msg:check_fix_conformance.
 * Invariants of a rebuilt message: only CRLF line breaks, every line at most 998 octets, no
 * 8-bit octet in any leaf body but a message one (whose structured header fields keep theirs); it
 * re-parses (mime_view) into the same leaves, of the same types, each decoding to the input leaf's
 * content (text compared with its line breaks normalised, and undeclared invalid UTF-8 of a
 * re-encoded leaf as U+FFFD, as the rebuild documents; message leaves are rebuilt inside and not
 * compared); a clean input is copied unchanged; rebuilding the output again succeeds. A refusal
 * always says why. Input: the message. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "base/buf.h"
#include "proto/mime_build.h"
#include "proto/mime_view.h"
#include "fuzz_check.h"

/* Line breaks (CRLF, lone CR, lone LF) as LF. */
static void norm_eol(const char *p, size_t n, struct buf *out)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r') {
			buf_appendc(out, '\n');
			if (i + 1 < n && p[i + 1] == '\n')
				i++;
		} else {
			buf_appendc(out, p[i]);
		}
	}
}

static int has_8bit(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] & 0x80)
			return 1;
	return 0;
}

/* The content a leaf should decode to, comparable across the rebuild. */
static void leaf_content(const char *msg, const struct mime_view_part *pt, int input,
			 struct buf *out)
{
	struct buf raw;
	buf_init(&raw);
	mime_view_decode(msg + pt->off, pt->len, pt->cte, &raw);
	const char *d = raw.data ? raw.data : "";
	if (strncmp(pt->type, "text/", 5) != 0) {
		buf_append(out, d, raw.len);
	} else {
		struct buf u;
		buf_init(&u);
		if (input && !pt->charset[0] && has_8bit(d, raw.len) &&
		    !mime_build_lines_clean(msg + pt->off, pt->len))
			buf_append_utf8_lossy(&u, d, raw.len);
		else
			buf_append(&u, d, raw.len);
		norm_eol(u.data ? u.data : "", u.len, out);
		buf_free(&u);
	}
	buf_free(&raw);
}

static struct mime_view vin, vout;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	struct buf out;
	struct mime_build_result res;
	buf_init(&out);
	(void)mime_build_invalid_headers(in, size); /* memory safety only */
	int rc = mime_build_rebuild(in, size, &out, &res);
	if (rc != 0) {
		CHECK(rc == -EINVAL && res.why && *res.why);
		buf_free(&out);
		return 0;
	}
	const char *o = out.data ? out.data : "";
	if (mime_build_is_clean(in, size))
		CHECK(out.len == size && (!size || !memcmp(o, in, size)));
	/* CRLF only, lines of at most 998 octets */
	size_t line = 0;
	for (size_t i = 0; i < out.len; i++) {
		if (o[i] == '\r') {
			CHECK(i + 1 < out.len && o[i + 1] == '\n');
			i++;
			line = 0;
		} else {
			CHECK(o[i] != '\n');
			CHECK(++line <= 998);
		}
	}
	mime_view_parse(in, size, &vin);
	mime_view_parse(o, out.len, &vout);
	if (!vin.truncated && !vout.truncated) {
		CHECK(vin.nparts == vout.nparts);
		struct buf a, b;
		buf_init(&a);
		buf_init(&b);
		for (size_t k = 0; k < vin.nparts; k++) {
			CHECK(strcmp(vin.parts[k].type, vout.parts[k].type) == 0);
			if (strncmp(vin.parts[k].type, "message/", 8) == 0)
				continue;
			CHECK(!has_8bit(o + vout.parts[k].off, vout.parts[k].len));
			buf_reset(&a);
			buf_reset(&b);
			leaf_content(in, &vin.parts[k], 1, &a);
			leaf_content(o, &vout.parts[k], 0, &b);
			CHECK(a.len == b.len && (!a.len || !memcmp(a.data, b.data, a.len)));
		}
		buf_free(&a);
		buf_free(&b);
	}
	struct buf again;
	buf_init(&again);
	CHECK(mime_build_rebuild(o, out.len, &again, &res) == 0);
	buf_free(&again);
	buf_free(&out);
	return 0;
}
