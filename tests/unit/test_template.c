/* SPDX-License-Identifier: Apache-2.0 */
/* The Jinja subset of kumod/proto/template.c: rendering over a JSON context,
 * compile-time errors with positions, render-time type errors. */
#include "proto/template.h"
#include "test.h"

static const char *ctx_json =
    "{\"type\":\"Bounce\",\"id\":\"abc\",\"sender\":\"s@x.example\",\"timestamp\":1700000100,"
    "\"created\":1700000000,\"response\":{\"code\":550,\"content\":\"no <such> user\"},"
    "\"list\":[1,2,3],\"meta\":{\"tenant\":\"t1\",\"n\":null},\"ratio\":0.5,\"empty\":\"\"}";

/* Renders src over ctx_json into a static buffer; fails the test on error. */
static const char *render(const char *src)
{
	static struct buf out;
	struct tmpl_error err;
	struct tmpl *t = tmpl_compile(src, strlen(src), &err);
	if (!t)
		TEST_FAIL("compile %s: %d:%d %s", src, err.line, err.column, err.msg);
	json_t *ctx = json_loads(ctx_json, 0, NULL);
	buf_free(&out);
	buf_init(&out);
	if (tmpl_render(t, ctx, &out, &err) != 0)
		TEST_FAIL("render %s: %s", src, err.msg);
	json_decref(ctx);
	tmpl_free(t);
	return buf_cstr(&out);
}

static void compile_fails(const char *src, int line, int col, const char *msg)
{
	struct tmpl_error err;
	struct tmpl *t = tmpl_compile(src, strlen(src), &err);
	if (t)
		TEST_FAIL("compiled but should not: %s", src);
	ASSERT_EQ(err.line, line);
	ASSERT_EQ(err.column, col);
	ASSERT_STR_EQ(err.msg, msg);
}

static void render_fails(const char *src, const char *msg)
{
	struct tmpl_error err;
	struct tmpl *t = tmpl_compile(src, strlen(src), &err);
	ASSERT(t != NULL);
	json_t *ctx = json_loads(ctx_json, 0, NULL);
	struct buf out;
	buf_init(&out);
	ASSERT_EQ(tmpl_render(t, ctx, &out, &err), -1);
	ASSERT_STR_EQ(err.msg, msg);
	buf_free(&out);
	json_decref(ctx);
	tmpl_free(t);
}

TEST_IMPL(template_expressions)
{
	/* KumoMTA's documented example */
	ASSERT_STR_EQ(render("Bounce! id={{ id }}, from={{ sender }} code={{ response.code }} "
			     "age={{ timestamp - created }}"),
		      "Bounce! id=abc, from=s@x.example code=550 age=100");
	ASSERT_STR_EQ(render("{{ code }}|{{ nope.deeper }}|{{ response['code'] }}"), "||550");
	ASSERT_STR_EQ(render("{{ list[0] }}{{ list[-1] }}{{ list.1 }}{{ list[9] }}"), "132");
	ASSERT_STR_EQ(render("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 1 + 2 * 3 }}"),
		      "3 -4 2 3.5 7");
	ASSERT_STR_EQ(render("{{ ratio * 2 }} {{ 'a' ~ 1 ~ none }} {{ 'x' + 'y' }}"),
		      "1.0 a1none xy");
	ASSERT_STR_EQ(render("{{ 1 < 2 and 'b' > 'a' }} {{ not empty }} {{ 2 in list }} "
			     "{{ 'such' in response.content }} {{ 9 not in list }}"),
		      "true true true true true");
	ASSERT_STR_EQ(render("{{ empty or 'dflt' }} {{ id and 'yes' }}"), "dflt yes");
	ASSERT_STR_EQ(
	    render("{{ meta.n is none }} {{ meta.zz is defined }} {{ id is not defined }} "
		   "{{ 3 is odd }}"),
	    "true false false true");
	ASSERT_STR_EQ(render("{{ list }} {{ meta }}"),
		      "[1, 2, 3] {\"tenant\": \"t1\", \"n\": null}");
}

TEST_IMPL(template_filters)
{
	ASSERT_STR_EQ(render("{{ response | tojson }}"),
		      "{\"code\":550,\"content\":\"no \\u003csuch\\u003e user\"}");
	ASSERT_STR_EQ(render("{{ type | upper }} {{ type|lower }} {{ 'ab cd'|title }} "
			     "{{ 'hello'|capitalize }} [{{ '  x '|trim }}]"),
		      "BOUNCE bounce Ab Cd Hello [x]");
	ASSERT_STR_EQ(render("{{ list|length }} {{ nope|default('d') }} {{ empty|d('e', true) }} "
			     "{{ empty|d('e') }}|"),
		      "3 d e |");
	ASSERT_STR_EQ(render("{{ list|join(',') }} {{ list|first }} {{ list|last }} "
			     "{{ 'a-b-c'|replace('-', '+') }} {{ '42'|int + 1 }} {{ 2|float }}"),
		      "1,2,3 1 3 a+b+c 43 2.0");
	ASSERT_STR_EQ(render("{% for k, v in meta|items %}{{ k }}={{ v }};{% endfor %}"),
		      "tenant=t1;n=none;");
}

TEST_IMPL(template_statements)
{
	ASSERT_STR_EQ(render("{% if type == 'Delivery' %}D{% elif type == 'Bounce' %}B"
			     "{% else %}O{% endif %}"),
		      "B");
	ASSERT_STR_EQ(render("{% if nope %}x{% else %}y{% endif %}"), "y");
	ASSERT_STR_EQ(render("{% for x in list %}{{ loop.index }}:{{ x }}{% if not loop.last %},"
			     "{% endif %}{% endfor %}"),
		      "1:1,2:2,3:3");
	ASSERT_STR_EQ(render("{% for x in nope %}x{% else %}none{% endfor %}"), "none");
	ASSERT_STR_EQ(render("a  {{- ' b ' -}}  c {# note #}d\n"), "a b c d");
	ASSERT_STR_EQ(render("{%- if true -%}\n  yes\n{%- endif %}"), "yes");
}

TEST_IMPL(template_errors)
{
	compile_fails("x {{ id | nosuch }}", 1, 11, "unknown filter 'nosuch'");
	compile_fails("{{ id is weird }}", 1, 10, "unknown test 'weird'");
	compile_fails("a\n{% if x %}b", 2, 4, "'if' without a matching 'endif'");
	compile_fails("{% endfor %}", 1, 4, "'endfor' without an opening tag");
	compile_fails("{{ id ", 1, 7, "expected '}}', found end of template");
	compile_fails("{{ 'abc }}", 1, 4, "unterminated string");
	compile_fails("{% set x = 1 %}", 1, 4, "unknown or unsupported tag 'set'");
	compile_fails("{{ a if b else c }}", 1, 6, "inline 'if' expressions are not supported");
	compile_fails("{{ x|join(1, 2) }}", 1, 6, "filter 'join' takes at most 1 argument(s)");
	compile_fails("{# open", 1, 1, "unterminated comment");
	render_fails("{{ sender - 1 }}", "cannot apply '-' to string and integer");
	render_fails("{{ 1 // 0 }}", "division by zero");
	render_fails("{{ list < 'a' }}", "cannot compare sequence with string");
	/* deep nesting is refused, not a stack overflow */
	char deep[400];
	size_t n = 0;
	n += (size_t)snprintf(deep + n, sizeof(deep) - n, "{{ ");
	for (int i = 0; i < 100; i++)
		deep[n++] = '(';
	deep[n] = 0;
	struct tmpl_error err;
	ASSERT(tmpl_compile(deep, n, &err) == NULL);
	ASSERT_STR_EQ(err.msg, "expression nested deeper than 64");
}
