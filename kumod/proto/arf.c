/* SPDX-License-Identifier: Apache-2.0 */
/* RFC 5965 feedback reports into KumoMTA's ARFReport JSON shape. */
#include "proto/arf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/base64.h"
#include "base/buf.h"
#include "proto/report.h"
#include "proto/rfc5322.h"

/* The object of kumod's (and KumoMTA's) supplemental trace header, when
 * the X- field value (folding removed) is base64 of JSON whose "_@_" is
 * the marker "\_/"; the marker is left out. NULL otherwise. */
static json_t *trace_object(const char *raw, size_t n)
{
	char *b64 = malloc(n + 1);
	size_t bl = 0;
	json_t *obj = NULL;
	if (!b64)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (raw[i] != ' ' && raw[i] != '\t' && raw[i] != '\r' && raw[i] != '\n')
			b64[bl++] = raw[i];
	unsigned char *dec = malloc(bl + 1);
	long dl = dec && bl ? base64_decode(b64, bl, dec, bl) : -1;
	if (dl > 0) {
		obj = json_loadb((const char *)dec, (size_t)dl, 0, NULL);
		json_t *marker = json_object_get(obj, "_@_");
		if (json_is_object(obj) && json_is_string(marker) &&
		    strcmp(json_string_value(marker), "\\_/") == 0) {
			json_object_del(obj, "_@_");
		} else {
			json_decref(obj);
			obj = NULL;
		}
	}
	free(dec);
	free(b64);
	return obj;
}

/* The first X- header of the embedded message that is a trace header. */
static json_t *find_trace(const struct report_part *part)
{
	size_t hend = rfc5322_header_end(part->body, part->body_len), pos = 0;
	struct rfc5322_header h;
	while (rfc5322_header_next(part->body, hend, &pos, &h)) {
		if (h.name_len < 2 || strncasecmp(h.name, "X-", 2) != 0)
			continue;
		json_t *t = trace_object(h.raw_value, h.raw_len);
		if (t)
			return t;
	}
	return NULL;
}

static int is_original(const struct report_part *p)
{
	return strcmp(p->type, "message/rfc822") == 0 ||
	       strcmp(p->type, "text/rfc822-headers") == 0;
}

/* A single-valued string field into key: required ones fail when absent. */
static int take_string(json_t *out, json_t *fields, const char *name, const char *key, int required,
		       char *err, size_t errlen)
{
	json_t *hold;
	const char *v;
	int rc = report_take_single(fields, name, &hold, &v, err, errlen);
	if (rc < 0)
		return -1;
	if (rc == 0) {
		if (required) {
			snprintf(err, errlen, "required header %s is not present", name);
			return -1;
		}
		json_object_set_new(out, key, json_null());
		return 0;
	}
	json_object_set_new(out, key, hold);
	return 0;
}

/* Arrival-Date, else Received-Date; null when absent, repeated or not a date
 * (KumoMTA does not fail a report over it). */
static void take_arrival(json_t *out, json_t *fields)
{
	static const char *const names[] = {"arrival-date", "received-date"};
	char err[160];
	for (size_t i = 0; i < 2; i++) {
		json_t *hold;
		const char *v;
		int rc = report_take_single(fields, names[i], &hold, &v, err, sizeof(err));
		if (rc < 0)
			break;
		if (rc == 0)
			continue;
		char date[21];
		int ok = report_parse_date(v, date) == 0;
		json_decref(hold);
		if (ok) {
			json_object_set_new(out, "arrival_date", json_string(date));
			return;
		}
		break;
	}
	json_object_set_new(out, "arrival_date", json_null());
}

static int take_incidents(json_t *out, json_t *fields, char *err, size_t errlen)
{
	json_t *hold;
	const char *v;
	int rc = report_take_single(fields, "incidents", &hold, &v, err, errlen);
	if (rc <= 0) {
		json_object_set_new(out, "incidents", json_null());
		return rc;
	}
	char *end;
	unsigned long long n = strtoull(v, &end, 10);
	int bad = !*v || *v == '-' || *v == '+' || *end || n > 0xffffffffull;
	if (bad)
		snprintf(err, errlen, "failed to convert '%.200s': not a 32-bit count", v);
	else
		json_object_set_new(out, "incidents", json_integer((json_int_t)n));
	json_decref(hold);
	return bad ? -1 : 0;
}

static int take_mail_from(json_t *out, json_t *fields, char *err, size_t errlen)
{
	json_t *hold;
	const char *v;
	int rc = report_take_single(fields, "original-mail-from", &hold, &v, err, errlen);
	if (rc <= 0) {
		json_object_set_new(out, "original_mail_from", json_null());
		return rc;
	}
	struct buf a;
	buf_init(&a);
	rc = report_envelope_address(v, &a, err, errlen);
	if (rc == 0)
		json_object_set_new(out, "original_mail_from", json_stringn(buf_cstr(&a), a.len));
	buf_free(&a);
	json_decref(hold);
	return rc;
}

static int take_reporting_mta(json_t *out, json_t *fields, char *err, size_t errlen)
{
	json_t *hold;
	const char *v;
	int rc = report_take_single(fields, "reporting-mta", &hold, &v, err, errlen);
	if (rc <= 0) {
		json_object_set_new(out, "reporting_mta", json_null());
		return rc;
	}
	json_t *mta = report_remote_mta(v, err, errlen);
	json_decref(hold);
	if (!mta)
		return -1;
	json_object_set_new(out, "reporting_mta", mta);
	return 0;
}

/* Original-Rcpt-To values as envelope addresses. */
static int take_rcpt_to(json_t *out, json_t *fields, char *err, size_t errlen)
{
	json_t *all = report_take_all(fields, "original-rcpt-to"), *res = json_array(), *v;
	size_t i;
	struct buf a;
	buf_init(&a);
	json_array_foreach(all, i, v)
	{
		buf_reset(&a);
		if (report_envelope_address(json_string_value(v), &a, err, errlen) != 0) {
			buf_free(&a);
			json_decref(all);
			json_decref(res);
			return -1;
		}
		json_array_append_new(res, json_stringn(buf_cstr(&a), a.len));
	}
	buf_free(&a);
	json_decref(all);
	json_object_set_new(out, "original_rcpto_to", res);
	return 0;
}

/* The machine-readable part's fields in KumoMTA's order. */
static int parse_feedback(const struct report_part *part, json_t *out, char *err, size_t errlen)
{
	struct buf body;
	buf_init(&body);
	report_decode_body(part, &body);
	json_t *f = report_fields(body.data ? body.data : "", body.len);
	buf_free(&body);
	int rc = -1;
	if (take_string(out, f, "feedback-type", "feedback_type", 1, err, errlen) ||
	    take_string(out, f, "user-agent", "user_agent", 1, err, errlen) ||
	    take_string(out, f, "version", "version", 1, err, errlen))
		goto out;
	take_arrival(out, f);
	if (take_incidents(out, f, err, errlen) < 0 ||
	    take_string(out, f, "original-envelope-id", "original_envelope_id", 0, err, errlen) ||
	    take_mail_from(out, f, err, errlen) < 0 ||
	    take_reporting_mta(out, f, err, errlen) < 0 ||
	    take_string(out, f, "source-ip", "source_ip", 0, err, errlen))
		goto out;
	json_object_set_new(out, "authentication_results",
			    report_take_all(f, "authentication-results"));
	if (take_rcpt_to(out, f, err, errlen) < 0)
		goto out;
	json_object_set_new(out, "reported_domain", report_take_all(f, "reported-domain"));
	json_object_set_new(out, "reported_uri", report_take_all(f, "reported-uri"));
	json_object_set_new(out, "extensions", json_incref(f));
	rc = 0;
out:
	json_decref(f);
	return rc;
}

int arf_parse(const char *msg, size_t len, json_t **out, char *err, size_t errlen)
{
	struct report_part top, child;
	*out = NULL;
	if (errlen)
		err[0] = '\0';
	report_part_parse(msg, len, &top);
	if (strcmp(top.type, "multipart/report") != 0 ||
	    strcmp(top.report_type, "feedback-report") != 0)
		return 0;
	if (!top.boundary[0]) {
		snprintf(err, errlen, "multipart/report without a boundary parameter");
		return -1;
	}
	json_t *original = NULL, *trace = NULL;
	size_t pos = 0;
	while (report_next_child(&top, &pos, &child)) {
		if (!is_original(&child))
			continue;
		json_t *t = find_trace(&child);
		if (t) {
			json_decref(trace);
			trace = t;
		}
		json_decref(original);
		original = report_lf_string(child.body, child.body_len);
	}
	pos = 0;
	int found = 0;
	while (!found && report_next_child(&top, &pos, &child)) {
		if (strcmp(child.type, "message/feedback-report") != 0)
			continue;
		found = 1;
		json_t *o = json_object();
		if (parse_feedback(&child, o, err, errlen) != 0) {
			json_decref(o);
			break;
		}
		json_object_set_new(o, "original_message", original ? original : json_null());
		json_object_set_new(o, "supplemental_trace", trace ? trace : json_null());
		*out = o;
		return 1;
	}
	if (!found)
		snprintf(err, errlen, "feedback-report part missing");
	json_decref(original);
	json_decref(trace);
	return -1;
}
