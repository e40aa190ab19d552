/* SPDX-License-Identifier: Apache-2.0 */
/* The sink's fault plan (see catcher.h and sink/README.md "Fault plans"):
 * validation with provider-style presets, the current plan and its
 * version, and /api/v1/faults. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "base/clock.h"
#include "base/log.h"
#include "ctl/catcher.h"
#include "ctl/catcher_int.h"
#include "ctl/http_int.h"

/* --- fault plans ----------------------------------------------------------- */

static json_t *fault_plan;
static uint64_t fault_version, fault_set_ns;

/* Provider-style replies a rule may name instead of code and text. */
static const struct {
	const char *name;
	int code;
	const char *text;
	int disconnect;
} fault_presets[] = {
    {"greylist", 451, "4.7.1 Greylisted, please try again later", 0},
    {"rate-limit", 421,
     "4.7.28 Unusual rate of mail from your IP address; it has been temporarily rate limited", 1},
    {"over-quota", 452, "4.2.2 The account you tried to reach is over quota", 0},
    {"mailbox-unknown", 550, "5.1.1 The account you tried to reach does not exist", 0},
    {"server-busy", 451, "4.7.500 Server busy, please try again later", 0},
    {"deferred-volume", 421, "4.7.0 Messages from your IP temporarily deferred due to volume", 1},
    {"policy-block", 554, "5.7.1 Message rejected due to local policy", 0},
    {"service-unavailable", 421, "4.3.2 Service not available, closing transmission channel", 1},
};

static int fault_rule_check(json_t *r, size_t i, char *err, size_t errlen)
{
	static const char *const keys[] = {"stage",  "match",	   "code",  "text",
					   "preset", "disconnect", "first", "rate",
					   "window", "delay",	   "hang",  NULL};
	static const char *const stages[] = {"connect",	     "ehlo", "mail", "rcpt",
					     "data_command", "data", NULL};
	static const char *const mkeys[] = {"rcpt", "domain", "sender", "client", NULL};
	if (!json_is_object(r)) {
		snprintf(err, errlen, "rules[%zu]: expected an object", i);
		return -1;
	}
	const char *unknown = http_req_json_unknown_key(r, keys);
	if (unknown) {
		snprintf(err, errlen, "rules[%zu]: unknown key '%s'", i, unknown);
		return -1;
	}
	const char *stage = json_string_value(json_object_get(r, "stage"));
	int ok = 0;
	for (size_t k = 0; stage && stages[k]; k++)
		ok |= strcmp(stage, stages[k]) == 0;
	if (!ok) {
		snprintf(err, errlen,
			 "rules[%zu]: 'stage' must be connect, ehlo, mail, rcpt, data_command (the "
			 "DATA command) or data (end of data)",
			 i);
		return -1;
	}
	json_t *m = json_object_get(r, "match");
	if (m) {
		const char *mu = json_is_object(m) ? http_req_json_unknown_key(m, mkeys) : "match";
		const char *k;
		json_t *v;
		json_object_foreach(m, k, v) if (!json_is_string(v)) mu = k;
		if (mu) {
			snprintf(
			    err, errlen,
			    "rules[%zu]: 'match' takes strings rcpt, domain, sender, client (bad "
			    "'%s')",
			    i, mu);
			return -1;
		}
	}
	json_t *code = json_object_get(r, "code"), *preset = json_object_get(r, "preset");
	if (preset) {
		const char *pn = json_string_value(preset);
		size_t k = 0;
		while (pn && k < sizeof(fault_presets) / sizeof(fault_presets[0]) &&
		       strcmp(fault_presets[k].name, pn) != 0)
			k++;
		if (!pn || k == sizeof(fault_presets) / sizeof(fault_presets[0]) || code) {
			snprintf(err, errlen,
				 "rules[%zu]: unknown 'preset' (or given with 'code'); see "
				 "sink/README.md",
				 i);
			return -1;
		}
		/* expand, so the sink needs no table of its own */
		json_object_set_new(r, "code", json_integer(fault_presets[k].code));
		json_object_set_new(r, "text", json_string(fault_presets[k].text));
		if (fault_presets[k].disconnect && !json_object_get(r, "disconnect"))
			json_object_set_new(r, "disconnect", json_true());
		code = json_object_get(r, "code");
	}
	json_t *delay = json_object_get(r, "delay"), *hang = json_object_get(r, "hang");
	if ((delay && (!json_is_integer(delay) || json_integer_value(delay) < 0 ||
		       json_integer_value(delay) > 600000)) ||
	    (hang && !json_is_true(hang))) {
		snprintf(err, errlen, "rules[%zu]: 'delay' is milliseconds 0..600000, 'hang' true",
			 i);
		return -1;
	}
	if (code && (!json_is_integer(code) || json_integer_value(code) < 400 ||
		     json_integer_value(code) > 599)) {
		snprintf(err, errlen, "rules[%zu]: 'code' must be 400-599", i);
		return -1;
	}
	json_t *text = json_object_get(r, "text"), *disc = json_object_get(r, "disconnect");
	if (!code && json_is_true(disc)) { /* a bare disconnect: 421, then close */
		json_object_set_new(r, "code", json_integer(421));
		if (!text)
			json_object_set_new(
			    r, "text",
			    json_string("4.3.2 closing connection (fault injected by the sink)"));
		text = json_object_get(r, "text");
		code = json_object_get(r, "code");
	}
	if (!code && !delay && !hang) {
		snprintf(
		    err, errlen,
		    "rules[%zu]: 'code' (400-599), 'preset', 'disconnect', 'delay' or 'hang' is "
		    "required",
		    i);
		return -1;
	}
	json_t *first = json_object_get(r, "first"), *rate = json_object_get(r, "rate");
	json_t *win = json_object_get(r, "window");
	if ((text && !json_is_string(text)) || (disc && !json_is_boolean(disc)) ||
	    (first && (!json_is_integer(first) || json_integer_value(first) < 1)) ||
	    (rate && !json_is_string(rate)) ||
	    (win && (!json_is_array(win) || json_array_size(win) != 2 ||
		     !json_is_number(json_array_get(win, 0)) ||
		     !json_is_number(json_array_get(win, 1))))) {
		snprintf(
		    err, errlen,
		    "rules[%zu]: 'text' a string, 'disconnect' a boolean, 'first' an integer >= "
		    "1, 'rate' a string like \"10/min\", 'window' [from_s, to_s]",
		    i);
		return -1;
	}
	if (!text && code)
		json_object_set_new(r, "text", json_string("fault injected by the sink"));
	return 0;
}

int catcher_faults_set(json_t *plan, char *err, size_t errlen)
{
	static const char *const keys[] = {"rules", NULL};
	if (plan) {
		json_t *rules = json_object_get(plan, "rules");
		const char *unknown = json_is_object(plan) ? http_req_json_unknown_key(plan, keys)
							   : "(not an object)";
		if (unknown || !json_is_array(rules) || json_array_size(rules) > 100) {
			snprintf(
			    err, errlen,
			    "fault plan: expected {\"rules\": [...]} with at most 100 rules%s%s",
			    unknown ? "; unknown key " : "", unknown ? unknown : "");
			return -EINVAL;
		}
		size_t i;
		json_t *r;
		json_array_foreach(rules, i,
				   r) if (fault_rule_check(r, i, err, errlen)) return -EINVAL;
	}
	json_decref(fault_plan);
	fault_plan = plan;
	fault_version++;
	fault_set_ns = clock_mono_ns();
	return 0;
}

json_t *catcher_faults_get(uint64_t *version, double *age_s)
{
	*version = fault_version;
	*age_s = (double)(clock_mono_ns() - fault_set_ns) / 1e9;
	return fault_plan;
}

void catcher_faults__http(struct http_conn *hc, struct http_request *req)
{
	int m = req->r->method;
	char err[300];
	if (m == HTTP_PUT) {
		json_t *j = http__json_body(hc, req);
		if (!j)
			return;
		if (catcher_faults_set(j, err, sizeof(err))) {
			json_decref(j);
			http__error(hc, 422, "%s", err);
			return;
		}
		log_info("kumod::catcher", "fault plan %" PRIu64 " set through the API (%zu rules)",
			 fault_version, json_array_size(json_object_get(j, "rules")));
	} else if (m == HTTP_DELETE) {
		catcher_faults_set(NULL, err, sizeof(err));
		log_info("kumod::catcher", "fault plan cleared through the API");
	} else if (m != HTTP_GET && m != HTTP_HEAD) {
		http__error_extra(hc, 405, "Allow: GET, PUT, DELETE\r\n",
				  "method not allowed here");
		return;
	}
	http__respond_json(hc, 200,
			   json_pack("{s:I, s:O}", "version", (json_int_t)fault_version, "plan",
				     fault_plan ? fault_plan : json_null()));
}
