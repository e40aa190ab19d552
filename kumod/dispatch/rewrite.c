/* SPDX-License-Identifier: Apache-2.0 */
/* smtp_client_rewrite_delivery_status (see rewrite.h). Each distinct reply
 * line is offered to the handler once per attempt; a changed code gets
 * KumoMTA's note "(kumomta: status was rewritten from A -> B)" on its text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/xalloc.h"
#include "dispatch/rewrite.h"
#include "ktrace.h"
#include "policy.h"
#include "spool/message.h"
#include "spool/timeline.h"

#define REWRITE_MAX_LINES 8 /* distinct reply lines asked about per attempt */

struct rewrite_ctx {
	const struct message *m;
	const char *domain, *routing_domain;
	struct {
		int code;
		const char *enh, *text;
		int to;
	} seen[REWRITE_MAX_LINES];
	size_t nseen;
	int changed;
};

/* The code for the reply (code, enh, text): the handler's, or code. */
static int ask(struct rewrite_ctx *x, int code, const char *enh, const char *text)
{
	for (size_t i = 0; i < x->nseen; i++)
		if (x->seen[i].code == code && !strcmp(x->seen[i].enh, enh) &&
		    !strcmp(x->seen[i].text, text))
			return x->seen[i].to;
	char line[700];
	snprintf(line, sizeof(line), "%d%s%s %s", code, *enh ? " " : "", enh, text);
	int to = 0;
	struct policy_result pr;
	policy_smtp_client_rewrite_delivery_status(
	    line, x->domain, message_get_meta_str(x->m, "tenant"),
	    message_get_meta_str(x->m, "campaign"),
	    x->routing_domain ? x->routing_domain : x->domain, &to, &pr);
	if (pr.status != POLICY_OK)
		to = code >= 500 ? 451 : code; /* fail closed: the message stays queued */
	else if (!to)
		to = code;
	KTRACE(delivery_status_rewrite, x->m->id, code, to,
	       pr.status == POLICY_OK ? "ok" : "error");
	if (to != code)
		MSG_TIMELINE(x->m->id, "Rewrite", "smtp_client_rewrite_delivery_status %d -> %d%s",
			     code, to, pr.status == POLICY_OK ? "" : " (handler failed)");
	if (x->nseen < REWRITE_MAX_LINES)
		x->seen[x->nseen++] = (typeof(x->seen[0])){code, enh, text, to};
	x->changed |= to != code;
	return to;
}

static void note(char *dst, size_t len, const char *text, int from, int to)
{
	/* a text at its limit loses its end, not the note's start */
	if (snprintf(dst, len, "%s (kumomta: status was rewritten from %d -> %d)", text, from,
		     to) >= (int)len)
		dst[len - 1] = '\0';
}

static enum smtp_client_status status_of(int code, enum smtp_client_status st)
{
	if (code >= 500)
		return SMTP_CLIENT_PERMFAIL;
	if (code >= 400)
		return st == SMTP_CLIENT_DISCONNECTED ? st : SMTP_CLIENT_TEMPFAIL;
	return SMTP_CLIENT_OK;
}

const struct smtp_client_result *
rewrite_delivery_status(const struct smtp_client_result *r, const struct message *m,
			const char *domain, const char *routing_domain, struct rewrite_result *out)
{
	if (!policy_has_handler("smtp_client_rewrite_delivery_status"))
		return r;
	struct rewrite_ctx x = {.m = m, .domain = domain, .routing_domain = routing_domain};
	const char *enh = r->enhanced ? r->enhanced : "", *text = r->text ? r->text : "";
	int txn = r->code && (r->code < 200 || r->code >= 300) ? ask(&x, r->code, enh, text) : 0;
	size_t n = r->rcpt_replies && r->rcpt_codes ? r->nrcpt : 0;
	int *to = n ? xcalloc(n, sizeof(*to)) : NULL;
	for (size_t i = 0; i < n; i++) {
		const struct smtp_client_rcpt_reply *rr = &r->rcpt_replies[i];
		if (rr->code && (rr->code < 200 || rr->code >= 300))
			to[i] = ask(&x, rr->code, rr->enhanced, rr->text);
	}
	if (!x.changed) {
		free(to);
		return r;
	}
	*out = (struct rewrite_result){.r = *r};
	if (txn && txn != r->code) {
		note(out->text, sizeof(out->text), text, r->code, txn);
		out->r.text = out->text;
		out->r.code = txn;
		if (r->status == SMTP_CLIENT_TEMPFAIL || r->status == SMTP_CLIENT_PERMFAIL ||
		    r->status == SMTP_CLIENT_DISCONNECTED)
			out->r.status = status_of(txn, r->status);
	}
	if (n) {
		out->codes = xmalloc(n * sizeof(*out->codes));
		out->replies = xmalloc(n * sizeof(*out->replies));
		memcpy(out->codes, r->rcpt_codes, n * sizeof(*out->codes));
		memcpy(out->replies, r->rcpt_replies, n * sizeof(*out->replies));
		for (size_t i = 0; i < n; i++) {
			struct smtp_client_rcpt_reply *rr = &out->replies[i];
			if (to[i] && to[i] != rr->code) {
				char t[sizeof(rr->text)];
				note(t, sizeof(t), rr->text, rr->code, to[i]);
				memcpy(rr->text, t, sizeof(t));
				rr->code = out->codes[i] = to[i];
			} else if (!rr->code && txn && out->codes[i] == r->code) {
				out->codes[i] = txn; /* accepted: shares the final reply */
			}
		}
		out->r.rcpt_codes = out->codes;
		out->r.rcpt_replies = out->replies;
	}
	free(to);
	return &out->r;
}

void rewrite_result_free(struct rewrite_result *out)
{
	free(out->codes);
	free(out->replies);
	out->codes = NULL;
	out->replies = NULL;
}
