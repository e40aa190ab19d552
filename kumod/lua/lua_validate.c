/* SPDX-License-Identifier: Apache-2.0 */
/* kumod --validate, second half: after the policy loaded, each event
 * handler it registered runs once with sample arguments, in the order mail
 * meets them (connection, EHLO, MAIL, RCPT, listener domains, message
 * received, HTTP injection, queue config, egress pool, sources, path), so a
 * handler that reaches for an API kumod lacks, misspells a builder key or
 * raises fails validation instead of the first message. A kumo.reject is
 * a policy decision, not an error. Builders start nothing in this mode. */
#include <stdio.h>
#include <string.h>

#include "policy.h"
#include "spool/message.h"

struct vctx {
	FILE *out;
	int errors, ran;
};

/* One handler call's outcome; returns 1 when it ran without error. */
static int report(struct vctx *v, const char *event, const char *args,
		  const struct policy_result *r)
{
	if (!policy_has_handler(event))
		return 1;
	v->ran++;
	if (r->status == POLICY_ERROR) {
		v->errors++;
		fprintf(v->out, "validate: %s(%s): error: %s\n", event, args, r->text);
		return 0;
	}
	if (r->status == POLICY_REJECT)
		fprintf(v->out, "validate: %s(%s): kumo.reject(%d, '%s')\n", event, args, r->code,
			r->text);
	return 1;
}

static struct message *sample_message(const char *sender, const char *rcpt)
{
	struct message *m = message_new();
	message_set_sender(m, sender);
	message_add_recipient(m, rcpt);
	char data[512];
	int n = snprintf(data, sizeof(data),
			 "From: <%s>\r\nTo: <%s>\r\nSubject: kumod --validate sample\r\n"
			 "Message-ID: <validate@kumod>\r\n\r\nA sample message.\r\n",
			 sender, rcpt);
	message_set_data(m, data, (size_t)n);
	message_set_meta(m, "reception_protocol", json_string("ESMTP"));
	message_set_meta(m, "received_from", json_string("127.0.0.1:49152"));
	message_set_meta(m, "received_via", json_string("127.0.0.1:25"));
	return m;
}

static const char *meta_or(const struct message *m, const char *key, const char *dflt)
{
	const char *v = message_get_meta_str(m, key);
	return v ? v : dflt;
}

/* get_egress_pool, then get_egress_source for each entry (or the pool
 * name "unspecified"), then get_egress_path_config for each source. */
static void validate_egress(struct vctx *v, const char *pool, const char *routing_domain)
{
	struct policy_result r;
	json_t *o = NULL;
	json_t *sources = json_array();
	if (strcmp(pool, "unspecified") == 0) {
		json_array_append_new(sources, json_string("unspecified"));
	} else {
		policy_get_egress_pool(pool, &o, &r);
		if (report(v, "get_egress_pool", pool, &r) && o) {
			size_t i;
			json_t *e;
			json_array_foreach(json_object_get(o, "entries"), i, e)
			{
				const char *nm = json_string_value(json_object_get(e, "name"));
				if (nm)
					json_array_append_new(sources, json_string(nm));
			}
		}
		json_decref(o);
	}
	size_t i;
	json_t *s;
	json_array_foreach(sources, i, s)
	{
		const char *src = json_string_value(s);
		char args[600];
		if (strcmp(src, "unspecified") != 0) {
			o = NULL;
			policy_get_egress_source(src, &o, &r);
			report(v, "get_egress_source", src, &r);
			json_decref(o);
		}
		o = NULL;
		snprintf(args, sizeof(args), "%s, %s, %s", routing_domain, src, "validate-site");
		policy_get_egress_path_config(routing_domain, src, "validate-site", &o, &r);
		report(v, "get_egress_path_config", args, &r);
		json_decref(o);
	}
	json_decref(sources);
}

/* The message's queue, as reception would place it. */
static void validate_queue(struct vctx *v, const struct message *m, const char *domain)
{
	const char *queue = message_get_meta_str(m, "queue");
	if (queue && strcmp(queue, "null") == 0)
		return;
	const char *tenant = meta_or(m, "tenant", ""), *campaign = meta_or(m, "campaign", "");
	const char *routing = meta_or(m, "routing_domain", "");
	char args[600];
	snprintf(args, sizeof(args), "%s, %s, %s, %s", domain, tenant, campaign, routing);
	json_t *o = NULL;
	struct policy_result r;
	policy_get_queue_config(domain, tenant, campaign, routing, &o, &r);
	if (report(v, "get_queue_config", args, &r)) {
		const char *pool = json_string_value(json_object_get(o, "egress_pool"));
		validate_egress(v, pool && *pool ? pool : "unspecified",
				*routing ? routing : domain);
	}
	json_decref(o);
}

int policy_validate_handlers(const char *domain, FILE *out)
{
	struct vctx v = {.out = out};
	struct policy_result r;
	char rcpt[300], args[400];
	const char *sender = "sender@example.net";
	snprintf(rcpt, sizeof(rcpt), "postmaster@%s", domain);
	json_t *meta = json_pack("{s:s, s:s, s:s, s:s}", "reception_protocol", "ESMTP",
				 "received_from", "127.0.0.1:49152", "received_via", "127.0.0.1:25",
				 "hostname", "kumod-validate");
	policy_smtp_connection_accepted(meta, &r);
	report(&v, "smtp_server_connection_accepted", "conn_meta", &r);
	policy_smtp_ehlo("client.example.net", meta, NULL, NULL, &r);
	report(&v, "smtp_server_ehlo", "client.example.net, conn_meta", &r);
	json_object_set_new(meta, "ehlo_domain", json_string("client.example.net"));
	snprintf(args, sizeof(args), "%s, conn_meta", sender);
	policy_smtp_mail_from(sender, meta, &r);
	report(&v, "smtp_server_mail_from", args, &r);
	struct policy_listener_domain ld;
	const char *doms[2] = {domain, "example.net"};
	for (size_t i = 0; i < 2; i++) {
		snprintf(args, sizeof(args), "%s, 127.0.0.1:25, conn_meta", doms[i]);
		policy_get_listener_domain(doms[i], "127.0.0.1:25", meta, &ld, &r);
		report(&v, "get_listener_domain", args, &r);
		json_decref(ld.relay_from);
		json_decref(ld.relay_from_authz);
	}
	int auth_ok;
	policy_smtp_auth_plain("", "validate", "validate", meta, &auth_ok, &r);
	report(&v, "smtp_server_auth_plain", "'', validate, <password>, conn_meta", &r);
	snprintf(args, sizeof(args), "%s, conn_meta", rcpt);
	policy_smtp_rcpt_to(rcpt, meta, &r);
	report(&v, "smtp_server_rcpt_to", args, &r);
	policy_smtp_data_command(meta, &r);
	report(&v, "smtp_server_data_command", "conn_meta", &r);
	struct message *m = sample_message(sender, rcpt);
	policy_smtp_data(m, meta, &r);
	report(&v, "smtp_server_data", "msg, conn_meta", &r);
	policy_smtp_message_received(m, meta, &r);
	report(&v, "smtp_server_message_received", "msg, conn_meta", &r);
	validate_queue(&v, m, domain); /* with what meta the handler set, even if it failed */
	message_unref(m);
	int new_code;
	policy_smtp_client_rewrite_delivery_status("550 5.1.1 validate", domain, NULL, NULL, domain,
						   &new_code, &r);
	snprintf(args, sizeof(args), "'550 5.1.1 validate', %s, nil, nil, %s", domain, domain);
	report(&v, "smtp_client_rewrite_delivery_status", args, &r);
	m = sample_message(sender, rcpt);
	message_set_meta(m, "reception_protocol", json_string("HTTP"));
	json_t *auth_info = json_pack("{s:s,s:[],s:[s]}", "peer_address", "127.0.0.1", "identities",
				      "groups", "kumomta:http-listener-trusted-ip");
	policy_http_message_generated(m, auth_info, &r);
	json_decref(auth_info);
	report(&v, "http_message_generated", "msg, auth_info", &r);
	message_unref(m);
	int ok;
	policy_http_validate_auth_basic("validate", "validate", &ok, &r);
	report(&v, "http_server_validate_auth_basic", "user, password", &r);
	policy_http_validate_auth_bearer("validate", &ok, &r);
	report(&v, "http_server_validate_auth_bearer", "token", &r);
	json_decref(meta);
	fprintf(out,
		"validate: ran %d handler call%s with sample arguments (domain %s): %d error%s\n",
		v.ran, v.ran == 1 ? "" : "s", domain, v.errors, v.errors == 1 ? "" : "s");
	return v.errors;
}
