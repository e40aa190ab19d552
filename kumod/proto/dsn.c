/* SPDX-License-Identifier: Apache-2.0 */
/* RFC 3464 delivery status notifications into KumoMTA's Report JSON shape. */
#include "proto/dsn.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "proto/report.h"

enum dsn_kind {
	DSN_STRING,
	DSN_MTA,       /* "type; name" */
	DSN_DATE,      /* RFC 5322 date -> RFC 3339 */
	DSN_RECIPIENT, /* "type; address" */
	DSN_DIAG,      /* "type; text" */
	DSN_ACTION,
	DSN_STATUS,
};

/* One field of a per-message or per-recipient block. */
struct dsn_field {
	const char *name, *key;
	enum dsn_kind kind;
	int required;
};

static const struct dsn_field per_message[] = {
    {"reporting-mta", "reporting_mta", DSN_MTA, 1},
    {"original-envelope-id", "original_envelope_id", DSN_STRING, 0},
    {"dsn-gateway", "dsn_gateway", DSN_MTA, 0},
    {"received-from-mta", "received_from_mta", DSN_MTA, 0},
    {"arrival-date", "arrival_date", DSN_DATE, 0},
};

static const struct dsn_field per_recipient[] = {
    {"original-recipient", "original_recipient", DSN_RECIPIENT, 0},
    {"final-recipient", "final_recipient", DSN_RECIPIENT, 1},
    {"remote-mta", "remote_mta", DSN_MTA, 0},
    {"last-attempt-date", "last_attempt_date", DSN_DATE, 0},
    {"will-retry-until", "will_retry_until", DSN_DATE, 0},
    {"final-log-id", "final_log_id", DSN_STRING, 0},
    {"action", "action", DSN_ACTION, 1},
    {"status", "status", DSN_STATUS, 1},
    {"diagnostic-code", "diagnostic_code", DSN_DIAG, 0},
};

/* "type; value" with both sides trimmed into {tkey, vkey}. */
static json_t *typed_pair(const char *v, const char *tkey, const char *vkey, char *err,
			  size_t errlen)
{
	json_t *m = report_remote_mta(v, err, errlen);
	if (!m) {
		snprintf(err, errlen, "expected '%s; %s', got %.200s", tkey, vkey, v);
		return NULL;
	}
	json_t *o = json_pack("{s:O,s:O}", tkey, json_object_get(m, "mta_type"), vkey,
			      json_object_get(m, "name"));
	json_decref(m);
	return o;
}

static json_t *recipient(const char *v, char *err, size_t errlen)
{
	json_t *r = typed_pair(v, "recipient_type", "recipient", err, errlen);
	if (!r || strcasecmp(json_string_value(json_object_get(r, "recipient_type")), "rfc822"))
		return r;
	struct buf a;
	buf_init(&a);
	if (report_envelope_address(json_string_value(json_object_get(r, "recipient")), &a, err,
				    errlen) != 0) {
		json_decref(r);
		buf_free(&a);
		return NULL;
	}
	json_object_set_new(r, "recipient", json_stringn(buf_cstr(&a), a.len));
	buf_free(&a);
	return r;
}

static json_t *action(const char *v, char *err, size_t errlen)
{
	static const char *const actions[] = {"failed", "delayed", "delivered", "relayed",
					      "expanded"};
	char lc[16];
	size_t n = strlen(v);
	if (n < sizeof(lc)) {
		for (size_t i = 0; i <= n; i++)
			lc[i] = (char)tolower((unsigned char)v[i]);
		for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++)
			if (strcmp(lc, actions[i]) == 0)
				return json_string(actions[i]);
	}
	snprintf(err, errlen, "invalid action type %.200s", v);
	return NULL;
}

/* One decimal number of at most max at *p, up to a '.' or the end of the code. */
static int status_num(const char **p, long max, long *out)
{
	char *end;
	if (!isdigit((unsigned char)**p))
		return -1;
	long n = strtol(*p, &end, 10);
	if (n > max || end - *p > 5)
		return -1;
	*out = n;
	*p = end;
	return 0;
}

/* "c.s.d [comment]": class, subject, detail and the rest as comment (or null). */
static json_t *status(const char *v, char *err, size_t errlen)
{
	const char *p = v;
	long c, s, d;
	if (status_num(&p, 255, &c) || *p++ != '.' || status_num(&p, 65535, &s) || *p++ != '.' ||
	    status_num(&p, 65535, &d) || (*p && *p != ' ' && *p != '.')) {
		snprintf(err, errlen, "invalid Status: %.200s", v);
		return NULL;
	}
	while (*p && *p != ' ')
		p++; /* KumoMTA ignores anything after the third number */
	while (*p == ' ')
		p++;
	return json_pack("{s:I,s:I,s:I,s:o}", "class", (json_int_t)c, "subject", (json_int_t)s,
			 "detail", (json_int_t)d, "comment", *p ? json_string(p) : json_null());
}

static json_t *convert(const struct dsn_field *f, const char *v, char *err, size_t errlen)
{
	char date[21];
	switch (f->kind) {
	case DSN_STRING:
		return json_string(v);
	case DSN_MTA:
		return report_remote_mta(v, err, errlen);
	case DSN_DATE:
		if (report_parse_date(v, date) == 0)
			return json_string(date);
		snprintf(err, errlen, "failed to convert %s '%.200s': not an RFC 5322 date",
			 f->name, v);
		return NULL;
	case DSN_RECIPIENT:
		return recipient(v, err, errlen);
	case DSN_DIAG:
		return typed_pair(v, "diagnostic_type", "diagnostic", err, errlen);
	case DSN_ACTION:
		return action(v, err, errlen);
	case DSN_STATUS:
		return status(v, err, errlen);
	}
	return NULL;
}

/* One block of fields: the table's keys (null when absent), then extensions. */
static json_t *parse_block(const char *p, size_t n, const struct dsn_field *tab, size_t ntab,
			   char *err, size_t errlen)
{
	json_t *fields = report_fields(p, n), *o = json_object();
	for (size_t i = 0; i < ntab; i++) {
		json_t *hold;
		const char *v;
		int rc = report_take_single(fields, tab[i].name, &hold, &v, err, errlen);
		json_t *val = NULL;
		if (rc == 0 && tab[i].required)
			snprintf(err, errlen, "required header %s is not present", tab[i].name);
		else if (rc == 0)
			val = json_null();
		else if (rc > 0)
			val = convert(&tab[i], v, err, errlen);
		json_decref(hold);
		if (!val) {
			json_decref(fields);
			json_decref(o);
			return NULL;
		}
		json_object_set_new(o, tab[i].key, val);
	}
	json_object_set_new(o, "extensions", fields);
	return o;
}

/* The next block of the status body: lines up to an empty (or white) line. */
static int next_block(const char *b, size_t n, size_t *pos, size_t *start, size_t *end)
{
	size_t i = *pos;
	for (;;) { /* skip empty lines */
		if (i >= n)
			return 0;
		size_t j = i;
		while (j < n && (b[j] == ' ' || b[j] == '\t' || b[j] == '\r'))
			j++;
		if (j < n && b[j] != '\n')
			break;
		i = j < n ? j + 1 : n;
	}
	*start = i;
	for (;;) {
		const char *lf = memchr(b + i, '\n', n - i);
		size_t le = lf ? (size_t)(lf - b) + 1 : n, j = i;
		while (j < le && (b[j] == ' ' || b[j] == '\t' || b[j] == '\r' || b[j] == '\n'))
			j++;
		if (j == le && i != *start) { /* an empty line ends the block */
			*end = i;
			*pos = le;
			return 1;
		}
		i = le;
		if (i >= n) {
			*end = n;
			*pos = n;
			return 1;
		}
	}
}

static json_t *parse_status(const struct report_part *part, char *err, size_t errlen)
{
	struct buf body;
	buf_init(&body);
	report_decode_body(part, &body);
	const char *b = body.data ? body.data : "";
	size_t pos = 0, s, e;
	json_t *report = NULL, *msg = NULL, *rcpts = json_array();
	if (!next_block(b, body.len, &pos, &s, &e)) {
		snprintf(err, errlen, "missing per-message section");
		goto fail;
	}
	msg = parse_block(b + s, e - s, per_message, sizeof(per_message) / sizeof(per_message[0]),
			  err, errlen);
	if (!msg)
		goto fail;
	while (next_block(b, body.len, &pos, &s, &e)) {
		json_t *r =
		    parse_block(b + s, e - s, per_recipient,
				sizeof(per_recipient) / sizeof(per_recipient[0]), err, errlen);
		if (!r)
			goto fail;
		json_array_append_new(rcpts, r);
	}
	report = json_pack("{s:o,s:o}", "per_message", msg, "per_recipient", rcpts);
	buf_free(&body);
	return report;
fail:
	json_decref(msg);
	json_decref(rcpts);
	buf_free(&body);
	return NULL;
}

int dsn_parse(const char *msg, size_t len, json_t **out, char *err, size_t errlen)
{
	struct report_part top, child;
	*out = NULL;
	if (errlen)
		err[0] = '\0';
	report_part_parse(msg, len, &top);
	if (strcmp(top.type, "multipart/report") != 0)
		return 0;
	if (!top.boundary[0]) {
		snprintf(err, errlen, "multipart/report without a boundary parameter");
		return -1;
	}
	json_t *original = NULL;
	size_t pos = 0;
	while (report_next_child(&top, &pos, &child)) {
		if (strcmp(child.type, "message/rfc822") == 0 ||
		    strcmp(child.type, "text/rfc822-headers") == 0) {
			json_decref(original);
			original = report_lf_string(child.body, child.body_len);
		}
	}
	pos = 0;
	while (report_next_child(&top, &pos, &child)) {
		if (strcmp(child.type, "message/delivery-status") != 0 &&
		    strcmp(child.type, "message/global-delivery-status") != 0)
			continue;
		json_t *r = parse_status(&child, err, errlen);
		if (!r)
			break;
		json_object_set_new(r, "original_message", original ? original : json_null());
		*out = r;
		return 1;
	}
	if (!err[0])
		snprintf(err, errlen, "delivery-status part missing");
	json_decref(original);
	return -1;
}
