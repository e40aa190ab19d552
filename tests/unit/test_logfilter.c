/* SPDX-License-Identifier: Apache-2.0 */
/* KUMOD_LOG parser parity: every vector and example of docs kumod-log.md sections 4 and 5. */
#include <errno.h>

#include "base/logfilter.h"
#include "test.h"

struct lf_check {
	const char *target; /* NULL ends the list */
	enum log_level level;
	int want;
};

struct lf_case {
	const char *input;
	int ok;
	int count; /* directives kept; -1: not checked */
	struct lf_check checks[8];
};

#define E LOG_LEVEL_ERROR
#define W LOG_LEVEL_WARN
#define I LOG_LEVEL_INFO
#define D LOG_LEVEL_DEBUG
#define T LOG_LEVEL_TRACE

/* Section 5: parity vectors. */
static const struct lf_case parity[] = {
    {"kumod=debug,", 1, 1, {{"kumod", D, 1}, {"kumod", T, 0}, {"lua", E, 0}}},
    {",kumod=debug", 1, 1, {{"kumod::spool", D, 1}, {"kumod", T, 0}}},
    {",,", 1, 0, {{"kumod", E, 0}, {"", E, 0}}},
    {"KUMOD=INFO", 1, 1, {{"KUMOD", I, 1}, {"KUMOD", D, 0}, {"kumod", E, 0}}},
    {"kumod=debug,kumod=info", 1, 1, {{"kumod", I, 1}, {"kumod", D, 0}}},
    {"kumod=info,kumod=debug", 1, 1, {{"kumod", D, 1}, {"kumod", T, 0}}},
    {"kumod::smtp=trace", 1, 1, {{"kumod::smtp_server", T, 1}, {"kumod::spool", E, 0}}},
    {"0", 1, 1, {{"kumod", E, 0}, {"lua", E, 0}}},
    {"off", 1, 1, {{"kumod", E, 0}, {"lua", E, 0}}},
    {"6", 1, 1, {{"6", T, 1}, {"60", T, 1}, {"kumod", E, 0}}},
    {"kumod=0", 1, 1, {{"kumod", E, 0}}},
    {"kumod=", 1, 1, {{"kumod", T, 1}, {"lua", E, 0}}},
    {"=debug", 0, -1, {{NULL, 0, 0}}},
    {"kumod=6", 0, -1, {{NULL, 0, 0}}},
    {"kumod= debug", 0, -1, {{NULL, 0, 0}}},
    {"kumod=debug ", 0, -1, {{NULL, 0, 0}}},
    {"info, kumod=debug", 0, -1, {{NULL, 0, 0}}},
    {" ", 0, -1, {{NULL, 0, 0}}},
    {"[span]", 1, 1, {{"kumod", E, 0}, {"span", E, 0}}},
    {"kumod[{a,b}]", 0, -1, {{NULL, 0, 0}}},
    {LOG_DEFAULT_FILTER,
     1,
     9,
     {{"kumod::ready_queue", D, 0},
      {"kumod::ready_queue", I, 1},
      {"tokio", I, 0},
      {"lua", I, 1},
      {"config", W, 1},
      {"kumo_server_common::start", I, 1}}},
};

/* Section 4: example directives (the span examples are checked statically here
 * and dynamically in logfilter_dynamic_*). */
static const struct lf_case examples[] = {
    {"kumod=trace",
     1,
     1,
     {{"kumod::smtp_server", T, 1},
      {"kumod_x", T, 1},
      {"lua", E, 0},
      {"spool", E, 0},
      {"config", E, 0}}},
    {"kumod", 1, 1, {{"kumod::smtp_server", T, 1}, {"lua", E, 0}, {"spool", E, 0}}},
    {"info", 1, 1, {{"kumod", I, 1}, {"lua", W, 1}, {"tokio", D, 0}}},
    {"warn,kumod=debug",
     1,
     2,
     {{"lua", W, 1}, {"lua", I, 0}, {"kumod::spool", D, 1}, {"kumod", T, 0}}},
    {"kumod=info,kumod::smtp_server=trace",
     1,
     2,
     {{"kumod::smtp_server", T, 1}, {"kumod::spool", I, 1}, {"kumod::spool", D, 0}, {"lua", E, 0}}},
    {"kumod::smtp_server=trace,kumod=info",
     1,
     2,
     {{"kumod::smtp_server", T, 1}, {"kumod::spool", I, 1}, {"kumod::spool", D, 0}}},
    {"error,lua=info", 1, 2, {{"kumod", E, 1}, {"kumod", W, 0}, {"lua", I, 1}, {"lua", D, 0}}},
    {"kumod=4", 1, 1, {{"kumod", D, 1}, {"kumod", T, 0}}},
    {"KUMOD=debug", 1, 1, {{"kumod", E, 0}, {"kumod::smtp_server", E, 0}}},
    {"info,kumod::spool=off",
     1,
     2,
     {{"kumod::spool", E, 0}, {"kumod::smtp_server", I, 1}, {"spool", I, 1}}},
    {"[smtp_session]=debug", 1, 1, {{"kumod", E, 0}, {"smtp_session", E, 0}}},
    {"kumod[deliver{queue=gmail.com}]=trace", 1, 1, {{"kumod", E, 0}}},
    {"", 1, 0, {{"kumod", E, 0}, {"lua", E, 0}}},
    {"kumod=verbose", 0, -1, {{NULL, 0, 0}}},
};

/* Edge cases of the grammar beyond the sheet. */
static const struct lf_case edges[] = {
    {" info", 1, 1, {{"kumod", I, 0}, {" info", T, 1}}},
    {"kumod=DeBuG", 1, 1, {{"kumod", D, 1}, {"kumod", T, 0}}},
    {"kumod=+3", 1, 1, {{"kumod", I, 1}, {"kumod", D, 0}}},
    {"005", 1, 1, {{"anything", T, 1}}},
    {"a,b,,c", 1, 3, {{"a", T, 1}, {"b", T, 1}, {"c", T, 1}, {"d", E, 0}}},
    {"-x,:y,_z", 1, 3, {{"-x", T, 1}, {":y", T, 1}, {"_z", T, 1}}},
    {"kumod]", 1, 1, {{"kumod]", T, 1}, {"kumod", T, 0}}},
    {"kumod=debug=x", 0, -1, {{NULL, 0, 0}}},
    {"kumod[span]x", 0, -1, {{NULL, 0, 0}}},
    {"kumod[", 0, -1, {{NULL, 0, 0}}},
    {"kumod[{a}", 0, -1, {{NULL, 0, 0}}},
    {"kumod[{}]", 0, -1, {{NULL, 0, 0}}},
    {"kumod[{a=(}]", 0, -1, {{NULL, 0, 0}}},
    {"kumod=-1", 0, -1, {{NULL, 0, 0}}},
    {"\t", 0, -1, {{NULL, 0, 0}}},
    {"\xc3\xa9t\xc3\xa9=info", 1, 1, {{"\xc3\xa9t\xc3\xa9::x", I, 1}}},
    {"\xe2\x82\xac=info", 0, -1, {{NULL, 0, 0}}},
    {"kumod\xff", 0, -1, {{NULL, 0, 0}}},
    /* A field name is a static constraint on the event's fields: ours only
     * carry `message`. */
    {"kumod[{a}]=debug", 1, 1, {{"kumod", D, 0}}},
    {"kumod[{message}]=debug,kumod=off", 1, 2, {{"kumod", D, 1}, {"kumod", T, 0}}},
    {"kumod[{message}]=debug,kumod[{message}]=warn", 1, 1, {{"kumod", W, 1}, {"kumod", I, 0}}},
    {"kumod[s]=trace,kumod=info", 1, 2, {{"kumod", I, 1}, {"kumod", D, 0}}},
    /* Regex values glibc could not afford (found by fuzz/fuzz_log_filter.c). */
    {"[s{tls=true++++++++++++++++++++++++++++++++++++}]=warn", 0, -1, {{NULL, 0, 0}}},
    {"[s{a=((((((((((((((((a+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+}]", 0, -1, {{NULL, 0, 0}}},
    {"[s{a=(x)\\1}]", 0, -1, {{NULL, 0, 0}}},
    {"[s{a=x+?}]", 1, 1, {{"kumod", E, 0}}},
    {"[s{a=x*??}]", 0, -1, {{NULL, 0, 0}}},
    {"[s{a=[[:alpha:]+*]+}]", 1, 1, {{"kumod", E, 0}}},
    {"[s{a=((a+)+)+}]", 1, 1, {{"kumod", E, 0}}},
    {"[s{a=(((()+)+)+)+}]", 0, -1, {{NULL, 0, 0}}},
    {"[s{a=((((()+)+)+)x)+}]", 0, -1, {{NULL, 0, 0}}},
    {"[s{a=(((((((()+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+}]", 0, -1, {{NULL, 0, 0}}},
    /* Epsilon loops and anchors glibc takes seconds to minutes to compile (found by
     * fuzz/fuzz_log_filter.c: fuzz/corpus/log_filter/crash-slow-regex-*). */
    {"[s{a=((()+)+)+}]", 0, -1, {{NULL, 0, 0}}},
    {"[s{a=(a|)+}]", 0, -1, {{NULL, 0, 0}}},
    {"[s{a=(.*)*}]", 0, -1, {{NULL, 0, 0}}},
    {"[s{a=((a|b)*c?)+}]", 0, -1, {{NULL, 0, 0}}},
    {"[s{a=((^a)?b)+}]", 0, -1, {{NULL, 0, 0}}},
    {"[s{a=^^^^^^^^^}]", 0, -1, {{NULL, 0, 0}}},
    {"[s{a=\\bx}]", 0, -1, {{NULL, 0, 0}}},
    {"[s{a=x\\>}]", 0, -1, {{NULL, 0, 0}}},
    {"[s{a=(((||||||||||||||||||||||||||||||||||||||||)+)+)+}]", 0, -1, {{NULL, 0, 0}}},
    {"[s{a=((|||)+)+((|||)+)+((|||)+)+((|||)+)+((|||)+)+((|||)+)+}]", 0, -1, {{NULL, 0, 0}}},
    {"[s{a=((^|)+)+((^|)+)+}]", 0, -1, {{NULL, 0, 0}}},
    /* ... while their useful neighbours still compile. */
    {"[s{a=(a|b)*c}]", 1, 1, {{"kumod", E, 0}}},
    {"[s{a=(a?b)+}]", 1, 1, {{"kumod", E, 0}}},
    {"[s{a=(()?a)+}]", 1, 1, {{"kumod", E, 0}}},
    {"[s{a=(|)?x}]", 1, 1, {{"kumod", E, 0}}},
    {"[s{a=^(gmail|yahoo)\\.com$}]", 1, 1, {{"kumod", E, 0}}},
    {"[s{a=(^|$)?(^|$)?(^|$)?(^|$)?x}]", 1, 1, {{"kumod", E, 0}}},
    {"[s{a=\\w+\\.example}]", 1, 1, {{"kumod", E, 0}}},
};

static void lf_run_case(const struct lf_case *c)
{
	struct logfilter *f = (struct logfilter *)1;
	char err[256] = "";
	int rc = logfilter_parse(c->input, &f, err, sizeof(err));
	if (!c->ok) {
		if (rc != -EINVAL)
			TEST_FAIL("'%s' should not parse", c->input);
		ASSERT(f == NULL);
		ASSERT(strstr(err, "invalid filter directive '") == err ||
		       strstr(err, "not valid UTF-8") != NULL);
		return;
	}
	if (rc != 0)
		TEST_FAIL("'%s' should parse: %s", c->input, err);
	if (c->count >= 0 && logfilter_count(f) != (size_t)c->count)
		TEST_FAIL("'%s': %zu directives, want %d", c->input, logfilter_count(f), c->count);
	for (const struct lf_check *k = c->checks; k->target; k++) {
		int got = logfilter_enabled(f, k->target, k->level);
		if (got != k->want)
			TEST_FAIL("'%s': target '%s' level %d: got %d want %d", c->input, k->target,
				  k->level, got, k->want);
	}
	logfilter_free(f);
}

TEST_IMPL(logfilter_parity_vectors)
{
	for (size_t i = 0; i < ARRAY_SIZE(parity); i++)
		lf_run_case(&parity[i]);
}

TEST_IMPL(logfilter_examples)
{
	for (size_t i = 0; i < ARRAY_SIZE(examples); i++)
		lf_run_case(&examples[i]);
}

TEST_IMPL(logfilter_edges)
{
	for (size_t i = 0; i < ARRAY_SIZE(edges); i++)
		lf_run_case(&edges[i]);
}

static void lf_expect_error(const char *input, const char *want)
{
	struct logfilter *f;
	char err[256] = "";
	ASSERT_EQ(logfilter_parse(input, &f, err, sizeof(err)), -EINVAL);
	if (want)
		ASSERT_STR_EQ(err, want);
}

TEST_IMPL(logfilter_error_text)
{
	lf_expect_error("kumod=verbose", "invalid filter directive 'kumod=verbose': invalid level");
	lf_expect_error("info, kumod=debug",
			"invalid filter directive ' kumod=debug': invalid level");
	lf_expect_error("lua=info,=debug",
			"invalid filter directive '=debug': a directive must start with a letter, "
			"digit, '-', ':', '_' or '['");
	lf_expect_error(" ", "invalid filter directive ' ': empty directive");
	lf_expect_error("kumod[{a,b}]",
			"invalid filter directive 'kumod[{a': unterminated span or field list");

	/* A tiny buffer truncates but stays terminated. */
	struct logfilter *f;
	char small[8];
	ASSERT_EQ(logfilter_parse("kumod=6", &f, small, sizeof(small)), -EINVAL);
	ASSERT_STR_EQ(small, "invalid");
}

TEST_IMPL(logfilter_regex_length_cap)
{
	char text[400], *p = text;
	p += sprintf(p, "[s{a=");
	for (int i = 0; i < 257; i++)
		*p++ = 'x';
	sprintf(p, "}]");
	lf_expect_error(text, NULL);
	text[strlen(text) - 3] = 0; /* 256 bytes */
	strcat(text, "}]");
	struct logfilter *f;
	ASSERT_EQ(logfilter_parse(text, &f, NULL, 0), 0);
	logfilter_free(f);
}

TEST_IMPL(logfilter_levels)
{
	static const struct {
		const char *s;
		int rc;
		enum log_level want;
	} cases[] = {
	    {"off", 0, LOG_LEVEL_OFF},
	    {"ERROR", 0, LOG_LEVEL_ERROR},
	    {"Warn", 0, LOG_LEVEL_WARN},
	    {"info", 0, LOG_LEVEL_INFO},
	    {"DEBUG", 0, LOG_LEVEL_DEBUG},
	    {"trace", 0, LOG_LEVEL_TRACE},
	    {"0", 0, LOG_LEVEL_OFF},
	    {"5", 0, LOG_LEVEL_TRACE},
	    {"+4", 0, LOG_LEVEL_DEBUG},
	    {"0003", 0, LOG_LEVEL_INFO},
	    {"6", -EINVAL, 0},
	    {"-1", -EINVAL, 0},
	    {"", -EINVAL, 0},
	    {"verbose", -EINVAL, 0},
	    {"info ", -EINVAL, 0},
	    {"+", -EINVAL, 0},
	    {"99999999999999999999999", -EINVAL, 0},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		enum log_level lvl = LOG_LEVEL_OFF;
		int rc = logfilter_parse_level(cases[i].s, strlen(cases[i].s), &lvl);
		if (rc != cases[i].rc || (rc == 0 && lvl != cases[i].want))
			TEST_FAIL("level '%s': rc %d level %d", cases[i].s, rc, lvl);
	}
}

static struct logfilter *lf_must(const char *text)
{
	struct logfilter *f = NULL;
	char err[256] = "";
	if (logfilter_parse(text, &f, err, sizeof(err)) != 0)
		TEST_FAIL("'%s' should parse: %s", text, err);
	return f;
}

struct lf_span_case {
	const char *span, *target, *field, *value; /* field NULL: no fields */
	enum log_level want;
};

static void lf_run_spans(const char *filter, const struct lf_span_case *cases, size_t n)
{
	struct logfilter *f = lf_must(filter);
	ASSERT_EQ(logfilter_has_dynamic(f), 1);
	for (size_t i = 0; i < n; i++) {
		const struct lf_span_case *c = &cases[i];
		struct logfilter_field fields[2] = {{"name", "task"}, {c->field, c->value}};
		enum log_level got =
		    logfilter_span_level(f, c->span, c->target, fields, c->field ? 2 : 1);
		if (got != c->want)
			TEST_FAIL("'%s': span %s (%s) %s=%s: got %d want %d", filter, c->span,
				  c->target, c->field ? c->field : "-", c->value ? c->value : "-",
				  got, c->want);
	}
	logfilter_free(f);
}

TEST_IMPL(logfilter_dynamic_span_name)
{
	static const struct lf_span_case cases[] = {
	    {"smtp_session", "kumod::smtp_session", NULL, NULL, LOG_LEVEL_DEBUG},
	    {"smtp_session", "lua", "peer", "x", LOG_LEVEL_DEBUG},
	    {"smtp_server", "kumod::smtp_server", NULL, NULL, LOG_LEVEL_OFF},
	    {"SMTP_SESSION", "kumod::smtp_session", NULL, NULL, LOG_LEVEL_OFF},
	};
	lf_run_spans("[smtp_session]=debug", cases, ARRAY_SIZE(cases));
	static const struct lf_span_case bare[] = {
	    {"span", "kumod::span", NULL, NULL, LOG_LEVEL_TRACE},
	    {"other", "kumod::other", NULL, NULL, LOG_LEVEL_OFF},
	};
	lf_run_spans("[span]", bare, ARRAY_SIZE(bare));
}

TEST_IMPL(logfilter_dynamic_field_regex)
{
	static const struct lf_span_case cases[] = {
	    {"deliver", "kumod::deliver", "queue", "gmail.com", LOG_LEVEL_TRACE},
	    {"deliver", "kumod::deliver", "queue", "x.gmail.com", LOG_LEVEL_TRACE},
	    {"deliver", "kumod::deliver", "queue", "gmailXcom", LOG_LEVEL_TRACE},
	    {"deliver", "kumod::deliver", "queue", "gmail.com.au", LOG_LEVEL_OFF},
	    {"deliver", "kumod::deliver", "queue", "yahoo.com", LOG_LEVEL_OFF},
	    {"deliver", "kumod::deliver", "domain", "gmail.com", LOG_LEVEL_OFF},
	    {"deliver", "kumod::deliver", NULL, NULL, LOG_LEVEL_OFF},
	    {"deliver", "lua", "queue", "gmail.com", LOG_LEVEL_OFF},
	    {"deliverx", "kumod::deliverx", "queue", "gmail.com", LOG_LEVEL_OFF},
	};
	lf_run_spans("kumod[deliver{queue=gmail.com}]=trace", cases, ARRAY_SIZE(cases));
}

TEST_IMPL(logfilter_dynamic_literals_and_max)
{
	static const struct lf_span_case lit[] = {
	    {"s", "kumod::s", "n", "5", LOG_LEVEL_INFO},
	    {"s", "kumod::s", "n", "+5", LOG_LEVEL_INFO},
	    {"s", "kumod::s", "n", "6", LOG_LEVEL_OFF},
	    {"s", "kumod::s", "n", "5x", LOG_LEVEL_OFF},
	};
	lf_run_spans("[s{n=5}]=info", lit, ARRAY_SIZE(lit));
	static const struct lf_span_case bools[] = {
	    {"s", "kumod::s", "tls", "true", LOG_LEVEL_WARN},
	    {"s", "kumod::s", "tls", "false", LOG_LEVEL_OFF},
	    {"s", "kumod::s", "tls", "truex", LOG_LEVEL_OFF},
	};
	lf_run_spans("[s{tls=true}]=warn", bools, ARRAY_SIZE(bools));
	static const struct lf_span_case fl[] = {
	    {"s", "kumod::s", "r", "1.50", LOG_LEVEL_ERROR},
	    {"s", "kumod::s", "r", "1.6", LOG_LEVEL_OFF},
	};
	lf_run_spans("[s{r=1.5}]=error", fl, ARRAY_SIZE(fl));
	static const struct lf_span_case best[] = {
	    {"s", "kumod::s", "a", "x", LOG_LEVEL_TRACE},
	    {"s", "kumod::s", "a", "y", LOG_LEVEL_INFO},
	    {"s", "kumod::s", NULL, NULL, LOG_LEVEL_INFO},
	    {"t", "kumod::t", "a", "x", LOG_LEVEL_OFF},
	};
	lf_run_spans("[s]=info,[s{a=x}]=trace", best, ARRAY_SIZE(best));
	/* The task name is a span field too; a field name alone only needs presence. */
	static const struct lf_span_case named[] = {
	    {"any", "kumod::any", NULL, NULL, LOG_LEVEL_DEBUG},
	};
	lf_run_spans("[{name=task}]=debug", named, ARRAY_SIZE(named));
	lf_run_spans("kumod[{name}]=debug", named, ARRAY_SIZE(named));
}

TEST_IMPL(logfilter_static_has_no_dynamic)
{
	struct logfilter *f = lf_must("kumod=info,lua=debug");
	ASSERT_EQ(logfilter_has_dynamic(f), 0);
	ASSERT_EQ(logfilter_span_level(f, "kumod", "kumod::x", NULL, 0), LOG_LEVEL_OFF);
	logfilter_free(f);
	logfilter_free(NULL);
	ASSERT_EQ(logfilter_enabled(NULL, "kumod", LOG_LEVEL_ERROR), 0);
	ASSERT_EQ(logfilter_count(NULL), 0);
}
