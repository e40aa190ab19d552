/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `toml`: toml_parse() (kumo.toml_load/toml_parse, the policy-extras data
 * files) and toml_encode(). Input: any bytes, parsed as a document. Invariants:
 *  - the parser returns a table, or NULL with a 1-based line and column inside the input
 *    (line <= newlines + 1) and a non-empty message;
 *  - an accepted document encodes (plain and pretty) without error, and the encoding parses
 *    back to an equal tree (same keys, same types and values; NaN equals
 *    NaN; a float keeps its sign);
 *  - the encoding of that tree is byte-identical to the first encoding (a fixed point). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/toml.h"
#include "fuzz_check.h"

static int same(const struct toml_value *a, const struct toml_value *b)
{
	int at = a->type, bt = b->type;
	if (at != bt)
		return 0;
	switch (a->type) {
	case TOML_BOOL:
		return !a->u.b == !b->u.b;
	case TOML_INTEGER:
		return a->u.i == b->u.i;
	case TOML_FLOAT:
		if (isnan(a->u.f))
			return isnan(b->u.f);
		return a->u.f == b->u.f && signbit(a->u.f) == signbit(b->u.f);
	case TOML_ARRAY:
		if (a->u.arr.n != b->u.arr.n)
			return 0;
		for (size_t i = 0; i < a->u.arr.n; i++)
			if (!same(a->u.arr.items[i], b->u.arr.items[i]))
				return 0;
		return 1;
	case TOML_TABLE:
		if (a->u.tab.n != b->u.tab.n)
			return 0;
		for (size_t i = 0; i < a->u.tab.n; i++) {
			const struct toml_value *bv =
			    toml_table_get(b, a->u.tab.kv[i].key, a->u.tab.kv[i].keylen);
			if (!bv || !same(a->u.tab.kv[i].val, bv))
				return 0;
		}
		return 1;
	default:
		return a->u.str.len == b->u.str.len &&
		       memcmp(a->u.str.ptr, b->u.str.ptr, a->u.str.len) == 0;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct toml_error err;
	struct toml_value *root = toml_parse((const char *)data, size, &err);
	if (!root) {
		int lines = 1;
		for (size_t i = 0; i < size; i++)
			lines += data[i] == '\n';
		CHECK(err.line >= 1 && err.line <= lines);
		CHECK(err.column >= 1);
		CHECK(err.msg[0] != 0);
		return 0;
	}
	CHECK(root->type == TOML_TABLE);
	for (int pretty = 0; pretty <= 1; pretty++) {
		struct buf out, again;
		char e[200];
		buf_init(&out);
		buf_init(&again);
		CHECK(toml_encode(root, pretty, &out, e, sizeof(e)) == 0);
		struct toml_error err2;
		struct toml_value *back = toml_parse(out.data ? out.data : "", out.len, &err2);
		if (!back)
			fprintf(stderr, "re-parse failed at %d:%d: %s\n%.*s\n", err2.line,
				err2.column, err2.msg, (int)out.len, out.data);
		CHECK(back != NULL);
		CHECK(same(root, back));
		CHECK(toml_encode(back, pretty, &again, e, sizeof(e)) == 0);
		CHECK(again.len == out.len &&
		      memcmp(buf_cstr(&again), buf_cstr(&out), out.len) == 0);
		toml_free(back);
		buf_free(&out);
		buf_free(&again);
	}
	toml_free(root);
	return 0;
}
