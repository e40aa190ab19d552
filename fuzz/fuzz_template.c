/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `template`: tmpl_compile() and tmpl_render() (the Jinja subset of
 * configure_local_logs templates and kumo.string.eval_template). Input: any bytes, compiled
 * as a template and rendered over a fixed log-record-like context. Invariants:
 *  - compile returns a template, or NULL with a 1-based line and column inside the input and
 *    a non-empty message;
 *  - rendering returns 0, or -1 with a non-empty message; its output never exceeds the
 *    4 MiB cap by more than one node's output;
 *  - rendering twice gives the same bytes (no hidden state);
 *  - the HTML- and JSON-escaping renderings succeed exactly when the plain one does. */
#include <stdint.h>
#include <string.h>

#include "proto/template.h"
#include "fuzz_check.h"

static const char ctx_text[] =
    "{\"type\":\"Delivery\",\"id\":\"abc\",\"sender\":\"s@x\",\"recipient\":[\"a@b\",\"c@d\"],"
    "\"timestamp\":1700000100,\"created\":1700000000,\"size\":1047,\"ratio\":0.25,"
    "\"response\":{\"code\":250,\"enhanced_code\":{\"class\":2,\"subject\":0,\"detail\":0},"
    "\"content\":\"OK <id>\",\"command\":\".\"},\"meta\":{\"tenant\":\"t\",\"n\":null},"
    "\"headers\":{},\"flag\":true,\"list\":[1,2,3,\"x\",[4,5]]}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static json_t *ctx;
	if (!ctx)
		ctx = json_loads(ctx_text, 0, NULL);
	struct tmpl_error err;
	struct tmpl *t = tmpl_compile((const char *)data, size, &err);
	if (!t) {
		int lines = 1;
		for (size_t i = 0; i < size; i++)
			lines += data[i] == '\n';
		CHECK(err.line >= 1 && err.line <= lines);
		CHECK(err.column >= 1);
		CHECK(err.msg[0] != 0);
		return 0;
	}
	struct buf a, b;
	buf_init(&a);
	buf_init(&b);
	int ra = tmpl_render(t, ctx, &a, &err);
	if (ra != 0)
		CHECK(err.msg[0] != 0);
	CHECK(a.len <= (5u << 20));
	int rb = tmpl_render(t, ctx, &b, &err);
	CHECK(ra == rb);
	CHECK(a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0));
	for (int esc = TMPL_ESCAPE_HTML; esc <= TMPL_ESCAPE_JSON; esc++) {
		buf_reset(&b);
		CHECK(tmpl_render_escaped(t, ctx, (enum tmpl_escape)esc, &b, &err) == ra ||
		      b.len > (4u << 20));
	}
	buf_free(&a);
	buf_free(&b);
	tmpl_free(t);
	return 0;
}
