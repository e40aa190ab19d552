/* SPDX-License-Identifier: Apache-2.0 */
/* proto/inject_req: field errors (which field, why), templates, and the
 * messages built per recipient (CRLF, headers, substitution failures). */
#include <errno.h>

#include "base/buf.h"
#include "proto/inject_req.h"
#include "test.h"

#define ID "0123456789abcdef"
#define DATE "Sun, 29 Nov 2026 09:00:00 +0000"

static int parse(const char *text, struct inject_req *q, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *j = json_loads(text, 0, &jerr);
	if (!j)
		TEST_FAIL("bad test JSON %s: %s", text, jerr.text);
	int st = inject_req_parse(j, q, err, errlen);
	json_decref(j);
	return st;
}

#define BASE "\"envelope_sender\":\"s@example.com\",\"recipients\":[{\"email\":\"a@example.com\"}]"

TEST_IMPL(inject_req_field_errors)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
	    {"{\"envelope_sender\":\"a@b.example\"}", "content: missing"},
	    {"{" BASE ",\"content\":\"x\",\"bogus\":1}", "unknown field 'bogus'"},
	    {"{\"envelope_sender\":\"not an address\",\"content\":\"x\",\"recipients\":[]}",
	     "envelope_sender: invalid address 'not an address'"},
	    {"{\"envelope_sender\":1}", "envelope_sender: missing (a string is required)"},
	    {"{\"envelope_sender\":\"\",\"content\":\"x\",\"recipients\":[]}",
	     "recipients: a non-empty array is required"},
	    {"{\"envelope_sender\":\"\",\"content\":\"x\",\"recipients\":[{\"email\":\"ok@example."
	     "com\"},"
	     "{\"email\":\"bad@@x\"}]}",
	     "recipients[1].email: invalid address 'bad@@x'"},
	    {"{\"envelope_sender\":\"\",\"content\":\"x\",\"recipients\":[{\"email\":\"a@example."
	     "com\","
	     "\"extra\":1}]}",
	     "recipients[0]: unknown field 'extra'"},
	    {"{\"envelope_sender\":\"\",\"content\":\"x\",\"recipients\":[{\"email\":\"a@example."
	     "com\","
	     "\"name\":\"x\\r\\nBcc: e@example.com\"}]}",
	     "recipients[0].name: line breaks (CR, LF) are not allowed"},
	    {"{\"envelope_sender\":\"\",\"content\":\"x\",\"recipients\":[{\"email\":\"a@example."
	     "com\","
	     "\"metadata\":[]}]}",
	     "recipients[0].metadata must be an object"},
	    {"{" BASE ",\"content\":\"Subject: {{ broken\"}",
	     "content: template error: unterminated"},
	    {"{" BASE ",\"content\":\"{{ name | upper }}\"}",
	     "content: template error: unsupported template expression '{{ name | upper }}'"},
	    {"{" BASE ",\"content\":{\"subject\":\"s\"}}",
	     "content: one of text_body or html_body is required"},
	    {"{" BASE ",\"content\":{\"text_body\":\"x\",\"attachments\":[]}}",
	     "content: amp_html_body and attachments are not supported"},
	    {"{" BASE ",\"content\":{\"text_body\":\"x\",\"headers\":{\"Bad Name\":\"v\"}}}",
	     "content.headers: invalid header name 'Bad Name'"},
	    {"{" BASE ",\"content\":{\"text_body\":\"x\",\"headers\":{\"X\":\"{{\"}}}",
	     "content.headers.X: template error"},
	    {"{" BASE ",\"content\":{\"text_body\":\"x\",\"from\":{\"email\":\"f@example.com\","
	     "\"name\":\"a\\rb\"}}}",
	     "content.from.name: line breaks"},
	    {"{" BASE ",\"content\":{\"text_body\":\"x\",\"reply_to\":{}}}",
	     "content.reply_to.email: missing or invalid address"},
	    {"{" BASE ",\"content\":\"x\",\"deferred_generation\":true}",
	     "deferred_generation: only false is supported"},
	    {"{" BASE ",\"content\":\"x\",\"template_dialect\":\"Handlebars\"}",
	     "template_dialect"},
	    {"{" BASE ",\"content\":\"x\",\"substitutions\":[]}",
	     "substitutions must be an object"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct inject_req q;
		char err[INJECT_REQ_MAX_ERROR];
		int st = parse(cases[i].in, &q, err, sizeof(err));
		if (st != 422 || strncmp(err, cases[i].want, strlen(cases[i].want)) != 0)
			TEST_FAIL("%s: %d '%s', want '%s'", cases[i].in, st, st ? err : "",
				  cases[i].want);
		ASSERT(q.root == NULL);
	}
}

/* An error cut to fit its buffer stays valid UTF-8 (it becomes JSON). */
TEST_IMPL(inject_req_error_utf8_cut)
{
	struct buf in;
	buf_init(&in);
	buf_appends(&in, "{\"envelope_sender\":\"");
	for (int i = 0; i < 400; i++)
		buf_appends(&in, "\xc3\xa9");
	buf_appends(&in, "\"}");
	struct inject_req q;
	char err[101];
	ASSERT_EQ(parse(buf_cstr(&in), &q, err, sizeof(err)), 422);
	json_t *s = json_string(err);
	ASSERT(s != NULL);
	json_decref(s);
	buf_reset(&in);
	buf_appends(&in, "{" BASE ",\"content\":\"{{");
	for (int i = 0; i < 40; i++)
		buf_appends(&in, "\xe2\x82\xac"); /* 3-byte characters across the 60-byte excerpt */
	buf_appends(&in, "}}\"}");
	char err2[INJECT_REQ_MAX_ERROR];
	ASSERT_EQ(parse(buf_cstr(&in), &q, err2, sizeof(err2)), 422);
	s = json_string(err2);
	ASSERT(s != NULL);
	json_decref(s);
	buf_free(&in);
}

TEST_IMPL(inject_req_raw_content)
{
	struct inject_req q;
	char err[INJECT_REQ_MAX_ERROR];
	ASSERT_EQ(
	    parse("{\"envelope_sender\":\"\",\"content\":\"Subject: hi {{ name }}\\n\\r\\nHi "
		  "{{name}}, {{ org }} {{ n }}{{ b }}\\rbye\",\"recipients\":[{\"email\":"
		  "\"a@example.com\",\"substitutions\":{\"name\":\"Alice\"},\"metadata\":{\"k\":"
		  "1}},{\"email\":\"b@example.com\"}],\"substitutions\":{\"name\":\"friend\","
		  "\"org\":\"Kumo\",\"n\":2,\"b\":true}}",
		  &q, err, sizeof(err)),
	    0);
	ASSERT_EQ(inject_req_count(&q), 2);
	ASSERT_STR_EQ(inject_req_rcpt_email(&q, 1), "b@example.com");
	ASSERT(json_is_object(inject_req_rcpt_metadata(&q, 0)));
	ASSERT(inject_req_rcpt_metadata(&q, 1) == NULL);
	static const char *const want[] = {
	    "Subject: hi Alice\r\n\r\nHi Alice, Kumo 2true\r\nbye\r\n",
	    "Subject: hi friend\r\n\r\nHi friend, Kumo 2true\r\nbye\r\n"};
	for (size_t i = 0; i < 2; i++) {
		struct buf m;
		buf_init(&m);
		ASSERT_EQ(inject_req_build(&q, i, ID, DATE, &m, err, sizeof(err)), 0);
		ASSERT_STR_EQ(buf_cstr(&m), want[i]);
		buf_free(&m);
	}
	inject_req_free(&q);
}

TEST_IMPL(inject_req_builder)
{
	struct inject_req q;
	char err[INJECT_REQ_MAX_ERROR];
	ASSERT_EQ(
	    parse("{\"envelope_sender\":\"s@example.com\",\"content\":{\"subject\":\"Hi {{ name "
		  "}}\",\"text_body\":\"caf\\u00e9 = ok\\n\",\"html_body\":\"<p>{{name}}</p>\","
		  "\"from\":{\"email\":\"f@example.com\",\"name\":\"F \\\"Q\\\"\"},\"headers\":{"
		  "\"X-Tag\":\"{{ name }}\"}},\"recipients\":[{\"email\":\"a@example.com\","
		  "\"name\":\"J\\u00fcrgen\",\"substitutions\":{\"name\":\"A\"}},{\"email\":"
		  "\"b@example.com\",\"substitutions\":{\"name\":\"x\\r\\nBcc: e@example.com\"}}]}",
		  &q, err, sizeof(err)),
	    0);
	struct buf m;
	buf_init(&m);
	ASSERT_EQ(inject_req_build(&q, 0, ID, DATE, &m, err, sizeof(err)), 0);
	static const char want[] =
	    "From: \"F \\\"Q\\\"\" <f@example.com>\r\n"
	    "To: =?utf-8?B?SsO8cmdlbg==?= <a@example.com>\r\n"
	    "Subject: Hi A\r\n"
	    "Date: " DATE "\r\n"
	    "Message-ID: <" ID "@kumod.http>\r\n"
	    "MIME-Version: 1.0\r\n"
	    "X-Tag: A\r\n"
	    "Content-Type: multipart/alternative; boundary=\"=_kumod_" ID "\"\r\n\r\n"
	    "--=_kumod_" ID "\r\n"
	    "Content-Type: text/plain; charset=\"utf-8\"\r\n"
	    "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
	    "caf=C3=A9 =3D ok\r\n"
	    "--=_kumod_" ID "\r\n"
	    "Content-Type: text/html; charset=\"utf-8\"\r\n"
	    "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
	    "<p>A</p>\r\n"
	    "--=_kumod_" ID "--\r\n";
	ASSERT_STR_EQ(buf_cstr(&m), want);
	buf_reset(&m);
	/* a substitution that would add a header fails that recipient only */
	ASSERT_EQ(inject_req_build(&q, 1, ID, DATE, &m, err, sizeof(err)), -EINVAL);
	ASSERT_STR_EQ(err, "header Subject contains a line break after substitution");
	buf_free(&m);
	inject_req_free(&q);
}

/* deferred_spool: false unless the request says true. */
TEST_IMPL(inject_req_deferred_spool)
{
	static const struct {
		const char *in;
		int want;
	} cases[] = {
	    {"{" BASE ",\"content\":\"x\"}", 0},
	    {"{" BASE ",\"content\":\"x\",\"deferred_spool\":false}", 0},
	    {"{" BASE ",\"content\":\"x\",\"deferred_spool\":true}", 1},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct inject_req q;
		char err[INJECT_REQ_MAX_ERROR];
		ASSERT_EQ(parse(cases[i].in, &q, err, sizeof(err)), 0);
		ASSERT_EQ(q.deferred_spool, cases[i].want);
		inject_req_free(&q);
	}
}
