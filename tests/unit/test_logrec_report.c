/* SPDX-License-Identifier: Apache-2.0 */
/* logrec_log_report(): the Feedback record of an ARF report and the OOB
 * records of a DSN (KumoMTA's derivation of code, text, recipient, sender,
 * peer and time), read back from a plain-text segment. */
#include <dirent.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/log.h"
#include "proto/arf.h"
#include "proto/dsn.h"
#include "spool/logrec.h"
#include "spool/message.h"
#include "test.h"

static char rdir[64];

/* Every record of the (plain text) segments in rdir, in order. */
static json_t *read_records(void)
{
	json_t *all = json_array();
	DIR *d = opendir(rdir);
	struct dirent *e;
	ASSERT(d != NULL);
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char path[400];
		snprintf(path, sizeof(path), "%s/%s", rdir, e->d_name);
		FILE *f = fopen(path, "r");
		char line[65536];
		while (f && fgets(line, sizeof(line), f)) {
			json_t *r = json_loads(line, 0, NULL);
			if (r)
				json_array_append_new(all, r);
		}
		if (f)
			fclose(f);
	}
	closedir(d);
	return all;
}

static json_t *log_report(const char *report, int is_arf)
{
	char err[256];
	snprintf(rdir, sizeof(rdir), "/tmp/kumod-logrec-report.XXXXXX");
	ASSERT(mkdtemp(rdir) != NULL);
	ASSERT_EQ(log_set_filter("kumod::logging=off", err, sizeof(err)), 0);
	struct logrec_config cfg = {.log_dir = rdir, .compression_level = 0};
	ASSERT_EQ(logrec_configure(&cfg, err, sizeof(err)), 0);
	struct message *m = message_new();
	message_set_sender(m, "");
	message_add_recipient(m, "bounces@bounce.example.com");
	message_set_data(m, report, strlen(report));
	json_t *parsed = NULL;
	int rc = is_arf ? arf_parse(report, strlen(report), &parsed, err, sizeof(err))
			: dsn_parse(report, strlen(report), &parsed, err, sizeof(err));
	if (rc != 1)
		TEST_FAIL("parse: %d %s", rc, err);
	struct logrec_response ok = {250, NULL, "OK", "."};
	struct logrec_peer peer = {"reporter.example", "192.0.2.9"};
	logrec_log_report(&(struct logrec_event){.type = "Reception",
						 .m = m,
						 .resp = &ok,
						 .peer = &peer,
						 .reception_protocol = "ESMTP"},
			  is_arf ? parsed : NULL, is_arf ? NULL : parsed);
	logrec_shutdown();
	json_decref(parsed);
	message_unref(m);
	json_t *recs = read_records();
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", rdir);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup of %s failed\n", rdir);
	return recs;
}

static const char *str(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	return json_is_string(v) ? json_string_value(v) : "(not a string)";
}

TEST_IMPL(logrec_report_oob_records)
{
	const char *report =
	    "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
	    "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
	    "Reporting-MTA: dns; mx.remote.example\r\n\r\n"
	    "Final-Recipient: rfc822; final@remote.example\r\n"
	    "Original-Recipient: rfc822; orig@remote.example\r\n"
	    "Action: failed\r\nStatus: 5.1.1\r\n"
	    "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"
	    "Last-Attempt-Date: Thu, 7 Jul 1994 17:15:49 -0400\r\n\r\n"
	    "Final-Recipient: rfc822; later@remote.example\r\nAction: delayed\r\nStatus: "
	    "4.4.7\r\n\r\n"
	    "Final-Recipient: rfc822; x400@remote.example\r\nAction: FAILED\r\nStatus: 5.0.0\r\n"
	    "Diagnostic-Code: X-400; 12 gone\r\n\r\n"
	    "Final-Recipient: rfc822; odd@remote.example\r\nAction: failed\r\nStatus: 5.7.1\r\n"
	    "Diagnostic-Code: smtp; blocked by policy\r\n"
	    "--b--\r\n";
	json_t *recs = log_report(report, 0);
	ASSERT_EQ(json_array_size(recs), 4); /* Reception + 3 failed */
	json_t *rx = json_array_get(recs, 0);
	ASSERT_STR_EQ(str(rx, "type"), "Reception");
	json_t *a = json_array_get(recs, 1), *b = json_array_get(recs, 2),
	       *c = json_array_get(recs, 3);
	ASSERT_STR_EQ(str(a, "type"), "OOB");
	ASSERT_STR_EQ(str(a, "sender"), "bounces@bounce.example.com");
	ASSERT_STR_EQ(str(a, "recipient"), "orig@remote.example");
	ASSERT_STR_EQ(str(a, "id"), str(rx, "id"));
	json_t *resp = json_object_get(a, "response");
	ASSERT_EQ(json_integer_value(json_object_get(resp, "code")), 550);
	ASSERT_STR_EQ(str(resp, "content"), "5.1.1 no such user");
	ASSERT_EQ(
	    json_integer_value(json_object_get(json_object_get(resp, "enhanced_code"), "subject")),
	    1);
	ASSERT_STR_EQ(str(json_object_get(a, "peer_address"), "name"), "mx.remote.example");
	ASSERT_STR_EQ(str(json_object_get(a, "peer_address"), "addr"), "192.0.2.9");
	ASSERT_EQ(json_integer_value(json_object_get(a, "timestamp")), 773615749);
	ASSERT_EQ(json_integer_value(json_object_get(a, "size")), 0);
	ASSERT_EQ(json_integer_value(json_object_get(a, "num_attempts")), 0);
	/* not an smtp diagnostic: 550 and no text; the final recipient */
	ASSERT_STR_EQ(str(b, "recipient"), "x400@remote.example");
	ASSERT_EQ(json_integer_value(json_object_get(json_object_get(b, "response"), "code")), 550);
	ASSERT_STR_EQ(str(json_object_get(b, "response"), "content"), "");
	/* an smtp diagnostic without a code: 550 and the whole text */
	ASSERT_STR_EQ(str(json_object_get(c, "response"), "content"), "blocked by policy");
	json_decref(recs);
}

TEST_IMPL(logrec_report_feedback_replaces_reception)
{
	const char *report =
	    "Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\r\n"
	    "--b\r\nContent-Type: message/feedback-report\r\n\r\n"
	    "Feedback-Type: abuse\r\nUser-Agent: t/1\r\nVersion: 1\r\n--b--\r\n";
	json_t *recs = log_report(report, 1);
	ASSERT_EQ(json_array_size(recs), 1);
	json_t *r = json_array_get(recs, 0);
	ASSERT_STR_EQ(str(r, "type"), "Feedback");
	ASSERT_STR_EQ(str(r, "recipient"), "bounces@bounce.example.com");
	ASSERT_STR_EQ(str(json_object_get(r, "feedback_report"), "feedback_type"), "abuse");
	ASSERT_EQ(json_integer_value(json_object_get(json_object_get(r, "response"), "code")), 250);
	json_decref(recs);
}
