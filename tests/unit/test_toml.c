/* SPDX-License-Identifier: Apache-2.0 */
/* TOML 1.0 parser and encoder (kumod/proto/toml.c). The wide agreement check
 * is the differential test against tomllib (tests/integration/test_toml_diff.py). */
#include <math.h>

#include "proto/toml.h"
#include "test.h"

static struct toml_value *parse_ok(const char *s)
{
	struct toml_error err;
	struct toml_value *v = toml_parse(s, strlen(s), &err);
	if (!v)
		TEST_FAIL("parse failed at %d:%d: %s", err.line, err.column, err.msg);
	return v;
}

static const struct toml_value *at(const struct toml_value *t, const char *k)
{
	const struct toml_value *v = toml_table_get(t, k, strlen(k));
	if (!v)
		TEST_FAIL("no key %s", k);
	return v;
}

TEST_IMPL(toml_values)
{
	struct toml_value *r;
	r = parse_ok("j = 1_000\no = 0o17\nb = 0b101\nh = 0xDEAD_beef\nf = 6.5e-1\nn = -nan\n"
		     "s = \"a\\tb\\u00e9\"\nl = 'C:\\x'\nm = \"\"\"\n  x \\\n   y\"\"\"\n"
		     "d = 1979-05-27 07:32:00z\nt = true\n");
	ASSERT_EQ(at(r, "j")->u.i, 1000);
	ASSERT_EQ(at(r, "o")->u.i, 15);
	ASSERT_EQ(at(r, "b")->u.i, 5);
	ASSERT_EQ(at(r, "h")->u.i, 0xDEADBEEF);
	ASSERT(at(r, "f")->u.f == 0.65);
	ASSERT(isnan(at(r, "n")->u.f));
	ASSERT_STR_EQ(at(r, "s")->u.str.ptr, "a\tb\xc3\xa9");
	ASSERT_STR_EQ(at(r, "l")->u.str.ptr, "C:\\x");
	ASSERT_STR_EQ(at(r, "m")->u.str.ptr, "  x y");
	ASSERT_EQ(at(r, "d")->type, TOML_DATETIME);
	ASSERT_STR_EQ(at(r, "d")->u.str.ptr, "1979-05-27T07:32:00Z");
	ASSERT_EQ(at(r, "t")->u.b, 1);
	toml_free(r);
}

TEST_IMPL(toml_tables)
{
	struct toml_value *r = parse_ok("[a.b]\nx = 1\n[[c]]\ny = 2\n[[c]]\n[c.d]\nz = 3\n"
					"[e]\nf.g = { h = [1, 2] }\n");
	ASSERT_EQ(at(at(at(r, "a"), "b"), "x")->u.i, 1);
	const struct toml_value *c = at(r, "c");
	ASSERT_EQ(c->type, TOML_ARRAY);
	ASSERT_EQ(c->u.arr.n, 2);
	ASSERT_EQ(at(c->u.arr.items[0], "y")->u.i, 2);
	ASSERT_EQ(at(at(c->u.arr.items[1], "d"), "z")->u.i, 3);
	ASSERT_EQ(at(at(at(at(r, "e"), "f"), "g"), "h")->u.arr.n, 2);
	toml_free(r);
}

TEST_IMPL(toml_errors_name_line_and_column)
{
	static const struct {
		const char *doc;
		int line, column;
		const char *msg;
	} cases[] = {
	    {"a = 1\na = 2\n", 2, 1, "duplicate key 'a'"},
	    {"[t]\nx = [1, 2, @]\n", 2, 12, "invalid value starting with '@'"},
	    {"a = \"x\\q\"\n", 1, 7, "invalid escape sequence '\\q'"},
	    {"[a]\n[a]\n", 2, 1, "table [a] is defined twice"},
	    {"x = 2023-02-29\n", 1, 5, "date out of range"},
	    {"é = 1\n", 1, 1, "invalid character '?' in a key (quote the key)"},
	    {"k = \"\xc3\xa9\xff\"\n", 1, 7, "invalid UTF-8 byte 0xFF"},
	    {"a = 99999999999999999999\n", 1, 5, "integer out of range (64-bit signed)"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct toml_error err;
		struct toml_value *v = toml_parse(cases[i].doc, strlen(cases[i].doc), &err);
		if (v)
			TEST_FAIL("case %zu accepted", i);
		ASSERT_STR_EQ(err.msg, cases[i].msg);
		ASSERT_EQ(err.line, cases[i].line);
		ASSERT_EQ(err.column, cases[i].column);
	}
}

TEST_IMPL(toml_encode_round_trip)
{
	const char *doc =
	    "top = \"v\\\"q\"\nf = 1.0\nneg = -0.0\ni = inf\n"
	    "arr = [1, [2, 3], { k = \"x\" }]\n\"odd key\" = 1\n"
	    "[t]\nwhen = 1979-05-27\n[t.u]\nx = 1\n[[aot]]\nn = 1\n[[aot]]\n[aot.sub]\nm = 2\n";
	struct toml_value *r = parse_ok(doc);
	for (int pretty = 0; pretty <= 1; pretty++) {
		struct buf out;
		char err[100];
		buf_init(&out);
		ASSERT_EQ(toml_encode(r, pretty, &out, err, sizeof(err)), 0);
		struct toml_value *back = parse_ok(buf_cstr(&out));
		ASSERT_STR_EQ(at(back, "top")->u.str.ptr, "v\"q");
		ASSERT_EQ(at(back, "f")->type, TOML_FLOAT);
		ASSERT(signbit(at(back, "neg")->u.f));
		ASSERT(isinf(at(back, "i")->u.f));
		ASSERT_EQ(at(back, "arr")->u.arr.n, 3);
		ASSERT_EQ(at(back, "odd key")->u.i, 1);
		ASSERT_EQ(at(at(back, "t"), "when")->type, TOML_DATE_LOCAL);
		ASSERT_EQ(at(at(at(back, "t"), "u"), "x")->u.i, 1);
		const struct toml_value *aot = at(back, "aot");
		ASSERT_EQ(aot->u.arr.n, 2);
		ASSERT_EQ(at(at(aot->u.arr.items[1], "sub"), "m")->u.i, 2);
		toml_free(back);
		buf_free(&out);
	}
	struct toml_value *s = toml_new_string("x", 1);
	struct buf out;
	char err[100];
	buf_init(&out);
	ASSERT_EQ(toml_encode(s, 0, &out, err, sizeof(err)), -1);
	ASSERT_STR_EQ(err, "the top level of a TOML document must be a table");
	toml_free(s);
	toml_free(r);
	buf_free(&out);
}

TEST_IMPL(toml_large_table_lookup)
{
	struct buf doc;
	buf_init(&doc);
	buf_appends(&doc, "[domain]\n");
	for (int i = 0; i < 10000; i++)
		buf_printf(&doc, "\"d%d.example.com\" = { max_age = \"%dh\" }\n", i, i % 24);
	struct toml_value *r = parse_ok(buf_cstr(&doc));
	const struct toml_value *d = at(r, "domain");
	ASSERT_EQ(d->u.tab.n, 10000);
	ASSERT_STR_EQ(at(at(d, "d9999.example.com"), "max_age")->u.str.ptr, "15h");
	ASSERT_STR_EQ(d->u.tab.kv[4321].key, "d4321.example.com");
	ASSERT(toml_table_get(d, "d10000.example.com", 18) == NULL);
	toml_free(r);
	buf_free(&doc);
}

TEST_IMPL(toml_datetime_kind)
{
	ASSERT_EQ(toml_datetime_kind("1979-05-27", 10), TOML_DATE_LOCAL);
	ASSERT_EQ(toml_datetime_kind("07:32:00", 8), TOML_TIME_LOCAL);
	ASSERT_EQ(toml_datetime_kind("1979-05-27T07:32:00", 19), TOML_DATETIME_LOCAL);
	ASSERT_EQ(toml_datetime_kind("1979-05-27T07:32:00+01:00", 25), TOML_DATETIME);
	ASSERT_EQ(toml_datetime_kind("1979-05-27x", 11), -1);
	ASSERT_EQ(toml_datetime_kind("hello", 5), -1);
}
