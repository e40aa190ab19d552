/* SPDX-License-Identifier: Apache-2.0 */
/* POST /api/inject/v1: KumoMTA's injection request (envelope_sender,
 * content as a raw message or a builder object, recipients with their own
 * substitutions and metadata). One message per recipient goes through
 * http_message_generated, then the spool; the answer waits until every
 * message is durable (or failed), exactly like the 250 after SMTP DATA. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "ctl/http_int.h"
#include "io/loop.h"
#include "ktrace.h"
#include "policy.h"
#include "proto/rfc5322.h"
#include "proto/smtp_cmd.h"
#include "queue/queue.h"
#include "spool/logrec.h"
#include "spool/message.h"
#include "spool/spool.h"

#define INJECT_MAX_RECIPIENTS 100000

/* A validated request: borrowed from the parsed JSON body. */
struct inject_req {
	const char *sender;
	json_t *content; /* string or builder object */
	json_t *recipients;
	json_t *subst; /* object or NULL */
	int dialect_static;
};

/* Messages being made durable; outlives the connection if the client goes. */
struct inject_txn {
	uint64_t conn_id;
	struct message **msgs;
	int *errs;
	size_t n, pending;
	size_t success, fail;
	json_t *failed, *errors;
	char peer_ip[48];
	struct inject_slot {
		struct inject_txn *t;
		size_t i;
	} * slots;
};

/* --- validation --------------------------------------------------------------- */

static int address_valid(const char *s, int is_sender)
{
	size_t len = strlen(s), used = 0;
	if (is_sender && len == 0)
		return 1; /* the null sender */
	if (len == 0 || len > 320 || s[0] == '<')
		return 0;
	struct smtp_mailbox mb;
	struct smtp_reply_err err;
	return smtp_path_parse(s, len, is_sender, 1, &mb, &used, &err) == 0 && used == len;
}

/* Answers 422 naming the problem; returns -1. */
static int bad(struct http_conn *hc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(struct http_conn *hc, const char *fmt, ...)
{
	char text[800];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	http__error(hc, 422, "%s", text);
	return -1;
}

static int check_object_keys(struct http_conn *hc, json_t *o, const char *what,
			     const char *const *keys)
{
	if (!json_is_object(o))
		return bad(hc, "%s must be an object", what);
	const char *unknown = http__json_unknown_key(o, keys);
	if (unknown)
		return bad(hc, "%s: unknown field '%s'", what, unknown);
	return 0;
}

static int check_string_map(struct http_conn *hc, json_t *o, const char *what)
{
	if (!json_is_object(o))
		return bad(hc, "%s must be an object", what);
	const char *k;
	json_t *v;
	json_object_foreach(o, k, v)
	{
		if (!json_is_string(v))
			return bad(hc, "%s.%s must be a string", what, k);
		if (!rfc5322_name_valid(k, strlen(k)))
			return bad(hc, "%s: invalid header name '%s'", what, k);
	}
	return 0;
}

static int check_mailbox_obj(struct http_conn *hc, json_t *o, const char *what)
{
	static const char *const keys[] = {"email", "name", NULL};
	if (check_object_keys(hc, o, what, keys))
		return -1;
	json_t *e = json_object_get(o, "email"), *n = json_object_get(o, "name");
	if (!json_is_string(e) || !address_valid(json_string_value(e), 0))
		return bad(hc, "%s.email: missing or invalid address", what);
	if (n && !json_is_string(n) && !json_is_null(n))
		return bad(hc, "%s.name must be a string", what);
	return 0;
}

static int check_builder(struct http_conn *hc, json_t *c)
{
	static const char *const keys[] = {"text_body", "html_body",   "amp_html_body",
					   "headers",	"from",	       "subject",
					   "reply_to",	"attachments", NULL};
	if (check_object_keys(hc, c, "content", keys))
		return -1;
	static const char *const strs[] = {"text_body", "html_body", "subject"};
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		json_t *v = json_object_get(c, strs[i]);
		if (v && !json_is_string(v))
			return bad(hc, "content.%s must be a string", strs[i]);
	}
	if (json_object_get(c, "amp_html_body") || json_object_get(c, "attachments"))
		return bad(hc, "content: amp_html_body and attachments are not supported");
	if (!json_object_get(c, "text_body") && !json_object_get(c, "html_body"))
		return bad(hc, "content: one of text_body or html_body is required");
	json_t *h = json_object_get(c, "headers");
	if (h && check_string_map(hc, h, "content.headers"))
		return -1;
	if (json_object_get(c, "from") &&
	    check_mailbox_obj(hc, json_object_get(c, "from"), "content.from"))
		return -1;
	if (json_object_get(c, "reply_to") &&
	    check_mailbox_obj(hc, json_object_get(c, "reply_to"), "content.reply_to"))
		return -1;
	return 0;
}

static int check_recipient(struct http_conn *hc, json_t *r, size_t i)
{
	static const char *const keys[] = {"email", "name", "substitutions", "metadata", NULL};
	char what[48];
	snprintf(what, sizeof(what), "recipients[%zu]", i);
	if (check_object_keys(hc, r, what, keys))
		return -1;
	json_t *e = json_object_get(r, "email"), *n = json_object_get(r, "name");
	if (!json_is_string(e))
		return bad(hc, "%s.email: missing (a string is required)", what);
	if (!address_valid(json_string_value(e), 0))
		return bad(hc, "%s.email: invalid address '%s'", what, json_string_value(e));
	if (n && !json_is_string(n) && !json_is_null(n))
		return bad(hc, "%s.name must be a string", what);
	json_t *s = json_object_get(r, "substitutions"), *m = json_object_get(r, "metadata");
	if (s && !json_is_object(s))
		return bad(hc, "%s.substitutions must be an object", what);
	if (m && !json_is_object(m))
		return bad(hc, "%s.metadata must be an object", what);
	return 0;
}

static int inject_validate(struct http_conn *hc, json_t *j, struct inject_req *q)
{
	static const char *const keys[] = {
	    "envelope_sender",	   "content",	       "recipients",
	    "substitutions",	   "template_dialect", "deferred_spool",
	    "deferred_generation", "trace_headers",    NULL};
	const char *unknown = http__json_unknown_key(j, keys);
	if (unknown)
		return bad(hc, "unknown field '%s'", unknown);
	json_t *s = json_object_get(j, "envelope_sender");
	if (!json_is_string(s))
		return bad(hc, "envelope_sender: missing (a string is required)");
	if (!address_valid(json_string_value(s), 1))
		return bad(hc, "envelope_sender: invalid address '%s'", json_string_value(s));
	q->sender = json_string_value(s);
	q->content = json_object_get(j, "content");
	if (!q->content)
		return bad(hc, "content: missing");
	if (!json_is_string(q->content) && check_builder(hc, q->content))
		return -1;
	q->recipients = json_object_get(j, "recipients");
	if (!json_is_array(q->recipients) || json_array_size(q->recipients) == 0)
		return bad(hc, "recipients: a non-empty array is required");
	if (json_array_size(q->recipients) > INJECT_MAX_RECIPIENTS)
		return bad(hc, "recipients: more than %d", INJECT_MAX_RECIPIENTS);
	for (size_t i = 0; i < json_array_size(q->recipients); i++)
		if (check_recipient(hc, json_array_get(q->recipients, i), i))
			return -1;
	q->subst = json_object_get(j, "substitutions");
	if (q->subst && !json_is_object(q->subst))
		return bad(hc, "substitutions must be an object");
	json_t *d = json_object_get(j, "template_dialect");
	if (d && (!json_is_string(d) || (strcmp(json_string_value(d), "Jinja") != 0 &&
					 strcmp(json_string_value(d), "Static") != 0)))
		return bad(hc, "template_dialect: 'Jinja' (simple {{ name }} substitution) or "
			       "'Static' expected");
	q->dialect_static = d && strcmp(json_string_value(d), "Static") == 0;
	json_t *g = json_object_get(j, "deferred_generation");
	if (g && !json_is_false(g))
		return bad(hc, "deferred_generation: only false is supported");
	json_t *ds = json_object_get(j, "deferred_spool");
	if (ds && !json_is_boolean(ds))
		return bad(hc, "deferred_spool must be a boolean");
	json_t *th = json_object_get(j, "trace_headers");
	if (th && !json_is_object(th))
		return bad(hc, "trace_headers must be an object");
	return 0;
}

static const char *builder_str(json_t *c, const char *key);

/* --- templates -------------------------------------------------------------------- */

static void append_json_scalar(struct buf *out, json_t *v)
{
	if (json_is_string(v)) {
		buf_append(out, json_string_value(v), json_string_length(v));
	} else if (json_is_integer(v)) {
		buf_printf(out, "%lld", (long long)json_integer_value(v));
	} else if (json_is_real(v)) {
		buf_printf(out, "%g", json_real_value(v));
	} else if (json_is_boolean(v)) {
		buf_appends(out, json_is_true(v) ? "true" : "false");
	} else if (v && !json_is_null(v)) {
		char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		buf_appends(out, s);
		free(s);
	}
}

/* Replaces each {{ name }} with the recipient's, else the request's,
 * substitution (absent: empty, as Jinja renders an undefined variable).
 * Returns 0, or -1 with a message for an unterminated or unsupported
 * expression. */
static int render(const char *tpl, json_t *local, json_t *global, struct buf *out, char *err,
		  size_t errlen)
{
	const char *p = tpl;
	for (;;) {
		const char *open = strstr(p, "{{");
		if (!open) {
			buf_appends(out, p);
			return 0;
		}
		buf_append(out, p, (size_t)(open - p));
		const char *close = strstr(open + 2, "}}");
		if (!close) {
			snprintf(err, errlen, "unterminated '{{' at offset %zu",
				 (size_t)(open - tpl));
			return -1;
		}
		const char *b = open + 2, *e = close;
		while (b < e && (*b == ' ' || *b == '\t'))
			b++;
		while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		char name[128];
		size_t n = (size_t)(e - b);
		int ok = n > 0 && n < sizeof(name);
		for (size_t i = 0; ok && i < n; i++)
			ok = b[i] == '_' || (b[i] >= 'a' && b[i] <= 'z') ||
			     (b[i] >= 'A' && b[i] <= 'Z') || (i && b[i] >= '0' && b[i] <= '9');
		if (!ok) {
			snprintf(err, errlen,
				 "unsupported template expression '{{%.*s}}' (only {{ name }})",
				 (int)((size_t)(close - open - 2) > 60 ? 60 : close - open - 2),
				 open + 2);
			return -1;
		}
		memcpy(name, b, n);
		name[n] = 0;
		json_t *v = local ? json_object_get(local, name) : NULL;
		if (!v && global)
			v = json_object_get(global, name);
		append_json_scalar(out, v);
		p = close + 2;
	}
}

/* Renders a template into a NUL-terminated malloc'd string (NULL on error). */
static char *render_str(const struct inject_req *q, const char *tpl, json_t *local, char *err,
			size_t errlen)
{
	struct buf b;
	buf_init(&b);
	if (q->dialect_static) {
		buf_appends(&b, tpl);
	} else if (render(tpl, local, q->subst, &b, err, errlen) != 0) {
		buf_free(&b);
		return NULL;
	}
	char *s = xstrdup(buf_cstr(&b));
	buf_free(&b);
	return s;
}

/* Parses a template without substituting; 422 naming `what` on error. */
static int check_template(struct http_conn *hc, const char *what, const char *tpl)
{
	char err[256];
	struct buf b;
	buf_init(&b);
	int rc = render(tpl, NULL, NULL, &b, err, sizeof(err));
	buf_free(&b);
	return rc ? bad(hc, "%s: template error: %s", what, err) : 0;
}

/* Every templated string must parse: found once for the whole request
 * (422) rather than once per recipient. */
static int check_templates(struct http_conn *hc, const struct inject_req *q)
{
	if (q->dialect_static)
		return 0;
	if (json_is_string(q->content))
		return check_template(hc, "content", json_string_value(q->content));
	static const char *const keys[] = {"subject", "text_body", "html_body"};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const char *s = builder_str(q->content, keys[i]);
		if (s && check_template(hc, keys[i], s))
			return -1;
	}
	const char *k;
	json_t *v;
	char what[300];
	json_object_foreach(json_object_get(q->content, "headers"), k, v)
	{
		snprintf(what, sizeof(what), "content.headers.%s", k);
		if (check_template(hc, what, json_string_value(v)))
			return -1;
	}
	return 0;
}

/* --- building messages -------------------------------------------------------------- */

/* Appends s with every line ending made CRLF. */
static void append_crlf(struct buf *out, const char *s)
{
	for (; *s; s++) {
		if (*s == '\r' && s[1] == '\n') {
			buf_appends(out, "\r\n");
			s++;
		} else if (*s == '\r' || *s == '\n') {
			buf_appends(out, "\r\n");
		} else {
			buf_appendc(out, *s);
		}
	}
}

/* Quoted-printable (RFC 2045) with CRLF line breaks kept as hard breaks. */
static void append_qp(struct buf *out, const char *s)
{
	size_t col = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		int eol = *p == '\n' || (*p == '\r' && p[1] == '\n');
		if (eol) {
			if (*p == '\r')
				p++;
			buf_appends(out, "\r\n");
			col = 0;
			continue;
		}
		int next_eol = !p[1] || p[1] == '\n' || p[1] == '\r';
		int literal = (*p >= 33 && *p <= 126 && *p != '=') ||
			      ((*p == ' ' || *p == '\t') && !next_eol);
		size_t w = literal ? 1 : 3;
		if (col + w > 75) {
			buf_appends(out, "=\r\n");
			col = 0;
		}
		if (literal)
			buf_appendc(out, (char)*p);
		else
			buf_printf(out, "=%02X", *p);
		col += w;
	}
	if (col)
		buf_appends(out, "\r\n");
}

static int is_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return 0;
	return 1;
}

/* Header text: as is when ASCII, else one RFC 2047 encoded word. */
static char *header_text(const char *s)
{
	if (is_ascii(s))
		return xstrdup(s);
	size_t n = strlen(s);
	char *b64 = xmalloc(4 * ((n + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)s, (int)n);
	char *out = xasprintf("=?utf-8?B?%s?=", b64);
	free(b64);
	return out;
}

/* "Display Name" <email>, or <email>. */
static char *mailbox_text(const char *name, const char *email)
{
	if (!name || !*name)
		return xasprintf("<%s>", email);
	if (!is_ascii(name)) {
		char *enc = header_text(name);
		char *out = xasprintf("%s <%s>", enc, email);
		free(enc);
		return out;
	}
	struct buf b;
	buf_init(&b);
	buf_appendc(&b, '"');
	for (const char *p = name; *p; p++) {
		if (*p == '"' || *p == '\\')
			buf_appendc(&b, '\\');
		buf_appendc(&b, *p);
	}
	buf_printf(&b, "\" <%s>", email);
	char *out = xstrdup(buf_cstr(&b));
	buf_free(&b);
	return out;
}

/* Adds one header after substitution; -1 with err when the value carries
 * CR, LF or NUL (a substitution must not forge headers). */
static int add_header(struct buf *hdrs, const char *name, const char *value, char *err,
		      size_t errlen)
{
	if (!rfc5322_value_valid(value, strlen(value))) {
		snprintf(err, errlen, "header %s contains a line break after substitution", name);
		return -1;
	}
	char *v = header_text(value);
	rfc5322_format_header(hdrs, name, v);
	free(v);
	return 0;
}

static const char *builder_str(json_t *c, const char *key)
{
	json_t *v = json_object_get(c, key);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

static int custom_has(json_t *headers, const char *name)
{
	const char *k;
	json_t *v;
	json_object_foreach(headers, k, v)
	{
		if (strcasecmp(k, name) == 0)
			return 1;
	}
	return 0;
}

/* Standard headers the builder writes unless content.headers has them. */
static int builder_std_headers(const struct inject_req *q, struct message *m, json_t *rcpt,
			       json_t *local, struct buf *h, char *err, size_t errlen)
{
	json_t *c = q->content, *custom = json_object_get(q->content, "headers");
	char date[64], *v;
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	const struct {
		const char *name;
		json_t *mb;
	} boxes[] = {{"From", json_object_get(c, "from")},
		     {"Reply-To", json_object_get(c, "reply_to")},
		     {"To", rcpt}};
	for (size_t i = 0; i < sizeof(boxes) / sizeof(boxes[0]); i++) {
		if (!boxes[i].mb || (custom && custom_has(custom, boxes[i].name)))
			continue;
		v = mailbox_text(builder_str(boxes[i].mb, "name"),
				 builder_str(boxes[i].mb, "email"));
		rfc5322_format_header(h, boxes[i].name, v);
		free(v);
	}
	const char *subject = builder_str(c, "subject");
	if (subject && !(custom && custom_has(custom, "Subject"))) {
		char *s = render_str(q, subject, local, err, errlen);
		int rc = s ? add_header(h, "Subject", s, err, errlen) : -1;
		free(s);
		if (rc)
			return -1;
	}
	if (!(custom && custom_has(custom, "Date")))
		rfc5322_format_header(h, "Date", date);
	if (!(custom && custom_has(custom, "Message-ID"))) {
		v = xasprintf("<%s@%s>", m->id, "kumod.http");
		rfc5322_format_header(h, "Message-ID", v);
		free(v);
	}
	rfc5322_format_header(h, "MIME-Version", "1.0");
	return 0;
}

static int builder_custom_headers(const struct inject_req *q, json_t *local, struct buf *h,
				  char *err, size_t errlen)
{
	json_t *custom = json_object_get(q->content, "headers");
	const char *k;
	json_t *v;
	json_object_foreach(custom, k, v)
	{
		char *s = render_str(q, json_string_value(v), local, err, errlen);
		int rc = s ? add_header(h, k, s, err, errlen) : -1;
		free(s);
		if (rc)
			return -1;
	}
	return 0;
}

static int builder_part(const struct inject_req *q, const char *key, const char *ctype,
			json_t *local, struct buf *out, char *err, size_t errlen)
{
	char *body = render_str(q, builder_str(q->content, key), local, err, errlen);
	if (!body)
		return -1;
	buf_printf(out,
		   "Content-Type: %s; charset=\"utf-8\"\r\n"
		   "Content-Transfer-Encoding: quoted-printable\r\n\r\n",
		   ctype);
	append_qp(out, body);
	free(body);
	return 0;
}

static int build_from_builder(const struct inject_req *q, struct message *m, json_t *rcpt,
			      json_t *local, struct buf *out, char *err, size_t errlen)
{
	if (builder_std_headers(q, m, rcpt, local, out, err, errlen) ||
	    builder_custom_headers(q, local, out, err, errlen))
		return -1;
	int text = builder_str(q->content, "text_body") != NULL;
	int html = builder_str(q->content, "html_body") != NULL;
	if (!(text && html)) {
		return builder_part(q, text ? "text_body" : "html_body",
				    text ? "text/plain" : "text/html", local, out, err, errlen);
	}
	char boundary[64];
	snprintf(boundary, sizeof(boundary), "=_kumod_%s", m->id);
	buf_printf(out, "Content-Type: multipart/alternative; boundary=\"%s\"\r\n\r\n--%s\r\n",
		   boundary, boundary);
	if (builder_part(q, "text_body", "text/plain", local, out, err, errlen))
		return -1;
	buf_printf(out, "--%s\r\n", boundary);
	if (builder_part(q, "html_body", "text/html", local, out, err, errlen))
		return -1;
	buf_printf(out, "--%s--\r\n", boundary);
	return 0;
}

/* Builds the message for one recipient; NULL with err on a template error. */
static struct message *build_message(const struct inject_req *q, json_t *rcpt, char *err,
				     size_t errlen)
{
	json_t *local = json_object_get(rcpt, "substitutions");
	struct message *m = message_new();
	message_set_sender(m, q->sender);
	message_add_recipient(m, json_string_value(json_object_get(rcpt, "email")));
	struct buf data;
	buf_init(&data);
	int rc = 0;
	if (json_is_string(q->content)) {
		char *s = render_str(q, json_string_value(q->content), local, err, errlen);
		if (s) {
			append_crlf(&data, s);
			if (data.len < 2 || memcmp(data.data + data.len - 2, "\r\n", 2) != 0)
				buf_appends(&data, "\r\n");
		}
		rc = s ? 0 : -1;
		free(s);
	} else {
		rc = build_from_builder(q, m, rcpt, local, &data, err, errlen);
	}
	if (rc == 0)
		message_set_data(m, data.data, data.len);
	buf_free(&data);
	if (rc != 0) {
		message_unref(m);
		return NULL;
	}
	json_t *meta = json_object_get(rcpt, "metadata");
	const char *k;
	json_t *v;
	json_object_foreach(meta, k, v)
	{
		message_set_meta(m, k, json_incref(v));
	}
	return m;
}

/* --- spooling and the answer -------------------------------------------------------- */

static void txn_fail(struct inject_txn *t, const char *email, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void txn_fail(struct inject_txn *t, const char *email, const char *fmt, ...)
{
	char text[700];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	t->fail++;
	json_array_append_new(t->failed, json_string(email));
	json_array_append_new(t->errors, json_sprintf("%s: %s", email, text));
}

static void txn_free(struct inject_txn *t)
{
	for (size_t i = 0; i < t->n; i++)
		message_unref(t->msgs[i]);
	free(t->msgs);
	free(t->errs);
	free(t->slots);
	json_decref(t->failed);
	json_decref(t->errors);
	free(t);
}

static void txn_answer(struct inject_txn *t)
{
	struct http_conn *hc = http__conn_lookup(t->conn_id);
	if (!hc)
		return; /* the client left; what was spooled is delivered all the same */
	/* answered later (from a spool completion) or at once (inside the request) */
	int enter = task_current() != hc->task;
	struct task *t_hc = hc->task, *prev = enter ? task_enter(t_hc) : NULL;
	json_t *j =
	    json_pack("{s:I, s:I, s:O, s:O}", "success_count", (json_int_t)t->success, "fail_count",
		      (json_int_t)t->fail, "failed_recipients", t->failed, "errors", t->errors);
	http__respond_json(hc, 200, j);
	if (enter)
		task_exit(t_hc, prev);
}

static void txn_complete(struct inject_txn *t)
{
	for (size_t i = 0; i < t->n; i++) {
		struct message *m = t->msgs[i];
		const char *rcpt = m->recipients[0];
		if (t->errs[i]) {
			spool_remove(m->id, NULL, NULL);
			KTRACE(http_inject, t->conn_id, m->id, rcpt, "spool_error",
			       strerror(-t->errs[i]));
			txn_fail(t, rcpt, "spool error: %s", strerror(-t->errs[i]));
			continue;
		}
		struct logrec_response resp = {.code = 250, .content = "OK"};
		struct logrec_peer peer = {.addr = t->peer_ip};
		logrec_log("Reception", m, NULL, &resp, &peer, NULL, NULL, NULL, NULL, "HTTP");
		queue_insert(m, "Received");
		KTRACE(http_inject, t->conn_id, m->id, rcpt, "ok", "");
		metrics_counter_add("total_messages_received", "service", "http_listener", 1);
		t->success++;
	}
	txn_answer(t);
	txn_free(t);
}

static void stored_cb(void *ctx, int err)
{
	struct inject_slot *s = ctx;
	struct inject_txn *t = s->t;
	t->errs[s->i] = err;
	if (--t->pending == 0)
		txn_complete(t);
}

/* Runs http_message_generated; returns the message to spool, or NULL when
 * it failed (recorded in t) or went to the null queue (counted a success). */
static struct message *generate_one(struct inject_txn *t, const struct inject_req *q, json_t *rcpt)
{
	const char *email = json_string_value(json_object_get(rcpt, "email"));
	char err[512];
	struct message *m = build_message(q, rcpt, err, sizeof(err));
	if (!m) {
		KTRACE(http_inject, t->conn_id, "", email, "error", err);
		txn_fail(t, email, "%s", err);
		return NULL;
	}
	struct policy_result r;
	policy_http_message_generated(m, &r);
	if (r.status != POLICY_OK) {
		KTRACE(http_inject, t->conn_id, m->id, email,
		       r.status == POLICY_REJECT ? "rejected" : "error", r.text);
		if (r.status == POLICY_REJECT)
			txn_fail(t, email, "%d %s", r.code, r.text);
		else
			txn_fail(t, email, "policy error: %s", r.text);
		message_unref(m);
		return NULL;
	}
	const char *queue = message_get_meta_str(m, "queue");
	if (queue && strcmp(queue, "null") == 0) {
		KTRACE(http_inject, t->conn_id, m->id, email, "ok", "null queue");
		metrics_counter_add("total_messages_received", "service", "http_listener", 1);
		t->success++;
		message_unref(m);
		return NULL;
	}
	return m;
}

void http_inject__handle(struct http_conn *hc, struct http_request *req)
{
	json_t *j = http__json_body(hc, req);
	if (!j)
		return;
	struct inject_req q = {0};
	if (inject_validate(hc, j, &q) != 0 || check_templates(hc, &q) != 0) {
		json_decref(j);
		return;
	}
	if (kumod_shutting_down() || !spool_is_open()) {
		http__error(hc, 503, "%s",
			    kumod_shutting_down()
				? "shutting down"
				: "no spool is defined (kumo.define_spool); message not accepted");
		json_decref(j);
		return;
	}
	size_t nr = json_array_size(q.recipients);
	struct inject_txn *t = xcalloc(1, sizeof(*t));
	t->conn_id = hc->id;
	t->msgs = xcalloc(nr, sizeof(*t->msgs));
	t->errs = xcalloc(nr, sizeof(*t->errs));
	t->slots = xcalloc(nr, sizeof(*t->slots));
	t->failed = json_array();
	t->errors = json_array();
	snprintf(t->peer_ip, sizeof(t->peer_ip), "%s", hc->conn.peer_ip);
	for (size_t i = 0; i < nr; i++) {
		struct message *m = generate_one(t, &q, json_array_get(q.recipients, i));
		if (m)
			t->msgs[t->n++] = m;
	}
	json_decref(j);
	if (!t->n) {
		txn_answer(t);
		txn_free(t);
		return;
	}
	hc->busy = 1;
	task_set_phase(hc->task, "Spooling", "spool");
	uv_timer_stop(&hc->timer);
	t->pending = t->n + 1; /* held until every store is issued */
	for (size_t i = 0; i < t->n; i++) {
		t->slots[i] = (struct inject_slot){t, i};
		spool_store(t->msgs[i], stored_cb, &t->slots[i]);
	}
	if (--t->pending == 0)
		txn_complete(t);
}
