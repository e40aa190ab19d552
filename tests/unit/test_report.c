/* SPDX-License-Identifier: Apache-2.0 */
/* RFC 5965 (ARF) and RFC 3464 (DSN) report parsing: examples written from
 * the RFCs, KumoMTA's field names and shapes, and malformed inputs. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "proto/arf.h"
#include "proto/dsn.h"
#include "proto/report.h"
#include "test.h"

/* tests/data/arf_rfc5965_b2.eml (RFC 5965 appendix B.2, shared with
 * tests/integration/test_feedback.py) with LF made CRLF and its {to},
 * {subject}, {extra} and {original} filled in. The caller frees it. */
static char *arf_sample(const char *to, const char *subject, const char *extra,
			const char *original)
{
	const char *path = "tests/data/arf_rfc5965_b2.eml";
	FILE *f = fopen(path, "rb");
	if (!f)
		TEST_FAIL("%s: %s (run from the repository root)", path, strerror(errno));
	const struct {
		const char *name, *value;
	} fill[] = {
	    {"{to}", to}, {"{subject}", subject}, {"{extra}", extra}, {"{original}", original}};
	struct buf b;
	buf_init(&b);
	char line[1024];
	while (fgets(line, sizeof(line), f)) {
		size_t n = strcspn(line, "\n");
		for (size_t i = 0; i < n; i++) {
			size_t k = 0, nf = sizeof(fill) / sizeof(fill[0]);
			while (k < nf && strncmp(line + i, fill[k].name, strlen(fill[k].name)) != 0)
				k++;
			if (k == nf) {
				buf_appendc(&b, line[i]);
				continue;
			}
			buf_appends(&b, fill[k].value);
			i += strlen(fill[k].name) - 1;
		}
		if (line[n] == '\n')
			buf_appends(&b, "\r\n");
	}
	fclose(f);
	buf_appendc(&b, '\0'); /* a C string */
	return b.data;
}

/* The sample with folding and mixed case in the feedback part; the trace
 * header of the original carries {"recipient":"a@b.example"}. */
static char *arf_full(void)
{
	return arf_sample("abuse@example.net", "FW: Earn money", "INCIDENTS: 3\r\n",
			  "From: <somespammer@example.net>\r\n"
			  "X-KumoRef: eyJfQF8iOiJcXF8vIiwicmVjaXBpZW50Ijoi\r\n"
			  "\tYUBiLmV4YW1wbGUifQ==\r\n"
			  "Subject: Earn money\r\n"
			  "\r\n"
			  "Spam Spam Spam\r\n");
}

static json_t *arf_ok(const char *msg)
{
	json_t *r = NULL;
	char err[256] = "x";
	int rc = arf_parse(msg, strlen(msg), &r, err, sizeof(err));
	if (rc != 1)
		TEST_FAIL("arf_parse: %d %s", rc, err);
	return r;
}

static const char *s(json_t *o, const char *path)
{
	json_t *v = json_object_get(o, path);
	return json_is_string(v) ? json_string_value(v) : "(not a string)";
}

TEST_IMPL(arf_full_report)
{
	char *msg = arf_full();
	json_t *r = arf_ok(msg);
	free(msg);
	ASSERT_STR_EQ(s(r, "feedback_type"), "abuse");
	ASSERT_STR_EQ(s(r, "user_agent"), "SomeGenerator/1.0");
	ASSERT_STR_EQ(s(r, "version"), "1");
	ASSERT_STR_EQ(s(r, "original_mail_from"), "somespammer@example.net");
	ASSERT_STR_EQ(s(r, "arrival_date"), "2005-03-08T18:00:00Z");
	ASSERT_STR_EQ(s(r, "source_ip"), "192.0.2.1");
	ASSERT_EQ(json_integer_value(json_object_get(r, "incidents")), 3);
	ASSERT_STR_EQ(s(json_object_get(r, "reporting_mta"), "mta_type"), "dns");
	ASSERT_STR_EQ(s(json_object_get(r, "reporting_mta"), "name"), "mail.example.com");
	json_t *ar = json_object_get(r, "authentication_results");
	ASSERT_EQ(json_array_size(ar), 1);
	ASSERT_STR_EQ(json_string_value(json_array_get(ar, 0)),
		      "mail.example.com;               spf=fail smtp.mail=somespammer@example.com");
	ASSERT_STR_EQ(json_string_value(json_array_get(json_object_get(r, "original_rcpto_to"), 0)),
		      "user@example.com");
	ASSERT_EQ(json_array_size(json_object_get(r, "reported_uri")), 2);
	json_t *ext = json_object_get(r, "extensions");
	ASSERT_EQ(json_object_size(ext), 1);
	ASSERT_STR_EQ(
	    json_string_value(json_array_get(json_object_get(ext, "removal-recipient"), 0)),
	    "user@example.com");
	ASSERT(json_is_null(json_object_get(r, "original_envelope_id")));
	ASSERT_STR_EQ(s(json_object_get(r, "supplemental_trace"), "recipient"), "a@b.example");
	ASSERT(!json_object_get(json_object_get(r, "supplemental_trace"), "_@_"));
	const char *om = s(r, "original_message");
	ASSERT(strncmp(om, "From: <somespammer@example.net>\nX-KumoRef:", 42) == 0);
	ASSERT(!strchr(om, '\r'));
	json_decref(r);
}

struct report_case {
	const char *name, *msg;
	int rc;
	const char *err; /* expected reason when rc < 0 */
};

#define ARF_HEAD                                                                          \
	"Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\r\n" \
	"--b\r\nContent-Type: message/feedback-report\r\n\r\n"

static const struct report_case arf_cases[] = {
    {"plain text is not a report", "Subject: hi\r\n\r\nbody\r\n", 0, NULL},
    {"other report type",
     "Content-Type: multipart/report; report-type=delivery-status;"
     " boundary=b\r\n\r\n--b--\r\n",
     0, NULL},
    {"no boundary", "Content-Type: multipart/report; report-type=feedback-report\r\n\r\nx\r\n", -1,
     "multipart/report without a boundary parameter"},
    {"no feedback part",
     "Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\r\n"
     "--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n",
     -1, "feedback-report part missing"},
    {"missing Version", ARF_HEAD "Feedback-Type: abuse\r\nUser-Agent: x/1\r\n--b--\r\n", -1,
     "required header version is not present"},
    {"repeated Feedback-Type",
     ARF_HEAD "Feedback-Type: abuse\r\nFeedback-type: fraud\r\nUser-Agent: x\r\nVersion: 1\r\n", -1,
     "header feedback-type should have only a single value"},
    {"bad Incidents",
     ARF_HEAD "Feedback-Type: abuse\r\nUser-Agent: x\r\nVersion: 1\r\n"
	      "Incidents: many\r\n--b--\r\n",
     -1, "failed to convert 'many': not a 32-bit count"},
    {"bad Reporting-MTA",
     ARF_HEAD "Feedback-Type: abuse\r\nUser-Agent: x\r\nVersion: 1\r\n"
	      "Reporting-MTA: mail.example.com\r\n--b--\r\n",
     -1, "expected 'name-type; name', got mail.example.com"},
    {"truncated after the feedback part (no close delimiter)",
     ARF_HEAD "feedback-type: abuse\nuser-agent: x\nversion: 1\n", 1, NULL},
    {"unparsable Arrival-Date is null, not an error",
     ARF_HEAD "Feedback-Type: abuse\r\nUser-Agent: x\r\nVersion: 1\r\nArrival-Date: soon\r\n"
	      "--b--\r\n",
     1, NULL},
};

/* Each case through parse: its rc, its reason when it has one, and an
 * object exactly when rc is 1. */
static void run_cases(int (*parse)(const char *, size_t, json_t **, char *, size_t),
		      const struct report_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct report_case *c = &cases[i];
		json_t *r = NULL;
		char err[256] = "";
		int rc = parse(c->msg, strlen(c->msg), &r, err, sizeof(err));
		if (rc != c->rc)
			TEST_FAIL("%s: rc %d, want %d (%s)", c->name, rc, c->rc, err);
		if (c->err)
			ASSERT_STR_EQ(err, c->err);
		ASSERT(rc == 1 ? r != NULL : r == NULL);
		json_decref(r);
	}
}

TEST_IMPL(arf_table)
{
	run_cases(arf_parse, arf_cases, sizeof(arf_cases) / sizeof(arf_cases[0]));
}

/* RFC 3464 appendix A.2 (abridged), base64 transfer encoding of the status
 * part, with an LF-only original message part. */
static const char dsn_b64[] =
    "Content-Type: multipart/report; report-type=delivery-status;\r\n"
    "\tboundary=\"RAA14128.773615765/CS.UTK.EDU\"\r\n"
    "\r\n"
    "--RAA14128.773615765/CS.UTK.EDU\r\n"
    "\r\n"
    "   ----- The following addresses had delivery problems -----\r\n"
    "<arathib@vnet.ibm.com>  (unrecoverable error)\r\n"
    "\r\n"
    "--RAA14128.773615765/CS.UTK.EDU\r\n"
    "content-type: Message/Delivery-Status\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    /* Reporting-MTA: dns; cs.utk.edu\n\nOriginal-Recipient: rfc822;arathib@vnet.ibm.com\n
     * Final-Recipient: rfc822;arathib@vnet.ibm.com\nAction: failed\n
     * Status: 5.0.0 (permanent failure)\nDiagnostic-Code: smtp; 550 'arathib@vnet.IBM.COM'
     * \n is not a registered gateway user (folded)\nRemote-MTA: dns; vnet.ibm.com\n\n
     * Final-Recipient: rfc822;johnh@hpnjld.njd.hp.com\nAction: delayed\nStatus: 4.0.0\n
     * Last-Attempt-Date: Thu, 7 Jul 1994 17:15:49 -0400\n */
    "UmVwb3J0aW5nLU1UQTogZG5zOyBjcy51dGsuZWR1CgpPcmlnaW5hbC1SZWNpcGllbnQ6IHJmYzgy\r\n"
    "MjthcmF0aGliQHZuZXQuaWJtLmNvbQpGaW5hbC1SZWNpcGllbnQ6IHJmYzgyMjthcmF0aGliQHZu\r\n"
    "ZXQuaWJtLmNvbQpBY3Rpb246IGZhaWxlZApTdGF0dXM6IDUuMC4wIChwZXJtYW5lbnQgZmFpbHVy\r\n"
    "ZSkKRGlhZ25vc3RpYy1Db2RlOiBzbXRwOyA1NTAgJ2FyYXRoaWJAdm5ldC5JQk0uQ09NJwogaXMg\r\n"
    "bm90IGEgcmVnaXN0ZXJlZCBnYXRld2F5IHVzZXIKUmVtb3RlLU1UQTogZG5zOyB2bmV0LmlibS5j\r\n"
    "b20KCkZpbmFsLVJlY2lwaWVudDogcmZjODIyO2pvaG5oQGhwbmpsZC5uamQuaHAuY29tCkFjdGlv\r\n"
    "bjogZGVsYXllZApTdGF0dXM6IDQuMC4wCkxhc3QtQXR0ZW1wdC1EYXRlOiBUaHUsIDcgSnVsIDE5\r\n"
    "OTQgMTc6MTU6NDkgLTA0MDAK\r\n"
    "\r\n"
    "--RAA14128.773615765/CS.UTK.EDU\r\n"
    "Content-Type: text/rfc822-headers\r\n"
    "\r\n"
    "Subject: original\n"
    "\r\n"
    "--RAA14128.773615765/CS.UTK.EDU--\r\n";

TEST_IMPL(dsn_base64_rfc_example)
{
	json_t *r = NULL;
	char err[256];
	int rc = dsn_parse(dsn_b64, strlen(dsn_b64), &r, err, sizeof(err));
	if (rc != 1)
		TEST_FAIL("dsn_parse: %d %s", rc, err);
	json_t *pm = json_object_get(r, "per_message");
	ASSERT_STR_EQ(s(json_object_get(pm, "reporting_mta"), "name"), "cs.utk.edu");
	ASSERT(json_is_null(json_object_get(pm, "arrival_date")));
	json_t *pr = json_object_get(r, "per_recipient");
	ASSERT_EQ(json_array_size(pr), 2);
	json_t *r0 = json_array_get(pr, 0), *r1 = json_array_get(pr, 1);
	ASSERT_STR_EQ(s(r0, "action"), "failed");
	ASSERT_STR_EQ(s(json_object_get(r0, "final_recipient"), "recipient"),
		      "arathib@vnet.ibm.com");
	ASSERT_STR_EQ(s(json_object_get(r0, "final_recipient"), "recipient_type"), "rfc822");
	json_t *st = json_object_get(r0, "status");
	ASSERT_EQ(json_integer_value(json_object_get(st, "class")), 5);
	ASSERT_EQ(json_integer_value(json_object_get(st, "subject")), 0);
	ASSERT_STR_EQ(s(st, "comment"), "(permanent failure)");
	ASSERT_STR_EQ(s(json_object_get(r0, "diagnostic_code"), "diagnostic"),
		      "550 'arathib@vnet.IBM.COM' is not a registered gateway user");
	ASSERT_STR_EQ(s(json_object_get(r0, "remote_mta"), "name"), "vnet.ibm.com");
	ASSERT_STR_EQ(s(r1, "action"), "delayed");
	ASSERT(json_is_null(json_object_get(json_object_get(r1, "status"), "comment")));
	ASSERT_STR_EQ(s(r1, "last_attempt_date"), "1994-07-07T21:15:49Z");
	ASSERT(json_is_null(json_object_get(r1, "original_recipient")));
	ASSERT_STR_EQ(s(r, "original_message"), "Subject: original\n\n");
	json_decref(r);
}

#define DSN_HEAD                                                                          \
	"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n" \
	"--b\r\nContent-Type: message/delivery-status\r\n\r\n"

static const struct report_case dsn_cases[] = {
    {"not multipart/report", "Content-Type: text/plain\r\n\r\nx\r\n", 0, NULL},
    {"no boundary", "Content-Type: multipart/report\r\n\r\nx\r\n", -1,
     "multipart/report without a boundary parameter"},
    {"no status part",
     "Content-Type: multipart/report; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n", -1,
     "delivery-status part missing"},
    {"empty status part", DSN_HEAD "\r\n--b--\r\n", -1, "missing per-message section"},
    {"missing Reporting-MTA", DSN_HEAD "Arrival-Date: Thu, 7 Jul 1994 17:15:49 -0400\r\n--b--\r\n",
     -1, "required header reporting-mta is not present"},
    {"missing Action",
     DSN_HEAD "Reporting-MTA: dns; a\r\n\r\nFinal-Recipient: rfc822; x@y\r\nStatus: 5.1.1\r\n", -1,
     "required header action is not present"},
    {"bad Action",
     DSN_HEAD "Reporting-MTA: dns; a\r\n\r\nFinal-Recipient: rfc822; x@y\r\nAction: lost\r\n"
	      "Status: 5.1.1\r\n",
     -1, "invalid action type lost"},
    {"bad Status",
     DSN_HEAD "Reporting-MTA: dns; a\r\n\r\nFinal-Recipient: rfc822; x@y\r\nAction: failed\r\n"
	      "Status: 5.1\r\n",
     -1, "invalid Status: 5.1"},
    {"bad date", DSN_HEAD "Reporting-MTA: dns; a\r\nArrival-Date: yesterday\r\n", -1,
     "failed to convert arrival-date 'yesterday': not an RFC 5322 date"},
    {"bad rfc822 recipient",
     DSN_HEAD "Reporting-MTA: dns; a\r\n\r\nFinal-Recipient: rfc822; not an address\r\n"
	      "Action: failed\r\nStatus: 5.1.1\r\n",
     -1, "invalid envelope address 'not an address'"},
    {"global-delivery-status, LF only, no close delimiter",
     "Content-Type: multipart/report; boundary=b\n\n--b\n"
     "Content-Type: message/global-delivery-status\n\nReporting-MTA: dns; a\n\n"
     "Final-Recipient: unknown; nair_s\nAction: Failed\nStatus: 5.0.0\n",
     1, NULL},
};

TEST_IMPL(dsn_table)
{
	run_cases(dsn_parse, dsn_cases, sizeof(dsn_cases) / sizeof(dsn_cases[0]));
}

/* A huge field and many recipients: parsed whole, no truncation. */
TEST_IMPL(dsn_huge_fields)
{
	struct buf m;
	buf_init(&m);
	buf_appends(&m, DSN_HEAD "Reporting-MTA: dns; a\r\n");
	for (int i = 0; i < 500; i++)
		buf_printf(&m,
			   "\r\nFinal-Recipient: rfc822; u%d@example.com\r\nAction: failed\r\n"
			   "Status: 5.1.1\r\n",
			   i);
	buf_appends(&m, "\r\nFinal-Recipient: rfc822; big@example.com\r\nAction: failed\r\n"
			"Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 ");
	for (int i = 0; i < 100000; i++)
		buf_appendc(&m, 'x');
	buf_appends(&m, "\r\n--b--\r\n");
	json_t *r = NULL;
	char err[256];
	ASSERT_EQ(dsn_parse(m.data, m.len, &r, err, sizeof(err)), 1);
	json_t *pr = json_object_get(r, "per_recipient");
	ASSERT_EQ(json_array_size(pr), 501);
	ASSERT_EQ(
	    strlen(s(json_object_get(json_array_get(pr, 500), "diagnostic_code"), "diagnostic")),
	    4 + 100000);
	json_decref(r);
	buf_free(&m);
}

/* A report nested in a multipart/mixed is not a report at the top level;
 * a nested multipart child is skipped, not descended into. */
TEST_IMPL(report_nested_multipart)
{
	const char *mixed = "Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\n"
			    "Content-Type: multipart/report; report-type=delivery-status; "
			    "boundary=i\r\n\r\n--i--\r\n--o--\r\n";
	json_t *r = NULL;
	char err[128];
	ASSERT_EQ(dsn_parse(mixed, strlen(mixed), &r, err, sizeof(err)), 0);
	const char *inner =
	    "Content-Type: multipart/report; boundary=o\r\n\r\n--o\r\n"
	    "Content-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\n"
	    "Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; a\r\n--i--\r\n"
	    "--o--\r\n";
	ASSERT_EQ(dsn_parse(inner, strlen(inner), &r, err, sizeof(err)), -1);
	ASSERT_STR_EQ(err, "delivery-status part missing");
}

struct date_case {
	const char *in, *want; /* want NULL: refused */
};

TEST_IMPL(report_dates)
{
	static const struct date_case cases[] = {
	    {"Thu, 7 Jul 1994 17:15:49 -0400", "1994-07-07T21:15:49Z"},
	    {"Thu, 02 Jul 26 18:55:38 UTC", "2026-07-02T18:55:38Z"},
	    {"14 Dec 2023 16:16:15 +0000 (UTC)", "2023-12-14T16:16:15Z"},
	    {"Tue, 8 Mar 2005 14:00 EST", "2005-03-08T19:00:00Z"},
	    {"Mon, 31 Dec 2029 23:59:59 -1200", "2030-01-01T11:59:59Z"},
	    {"yesterday", NULL},
	    {"Thu, 7 Foo 1994 17:15:49 -0400", NULL},
	    {"Thu, 7 Jul 1994 25:15:49 -0400", NULL},
	    {"Thu, 7 Jul 1994 17:15:49 +04", NULL},
	    {"Thu, 7 Jul 1994 17:15:49 -0400 trailing", NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[21] = "";
		int rc = report_parse_date(cases[i].in, out);
		if (cases[i].want) {
			if (rc != 0)
				TEST_FAIL("%s: refused", cases[i].in);
			ASSERT_STR_EQ(out, cases[i].want);
		} else if (rc == 0) {
			TEST_FAIL("%s: accepted as %s", cases[i].in, out);
		}
	}
}

/* Quoted-printable feedback part and case-insensitive names. */
TEST_IMPL(arf_quoted_printable)
{
	const char *m = "content-type: Multipart/Report; Report-Type=\"Feedback-Report\";"
			" boundary=\"x y\"\r\n\r\n--x y\r\n"
			"Content-Type: message/feedback-report\r\n"
			"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
			"Feedback-Type: ab=\r\nuse\r\nUser-Agent: caf=C3=A9/1\r\nVersion: 1\r\n"
			"--x y--\r\n";
	json_t *r = arf_ok(m);
	ASSERT_STR_EQ(s(r, "feedback_type"), "abuse");
	ASSERT_STR_EQ(s(r, "user_agent"), "caf\xc3\xa9/1");
	ASSERT(json_is_null(json_object_get(r, "original_message")));
	ASSERT(json_is_null(json_object_get(r, "supplemental_trace")));
	json_decref(r);
}
