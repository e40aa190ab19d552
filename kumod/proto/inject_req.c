/* SPDX-License-Identifier: Apache-2.0 */
/* /api/inject/v1: request validation, {{ name }} templates and the message
 * builder (raw content or subject/text/html/from/reply_to/headers). */
#include "proto/inject_req.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/base64.h"
#include "base/xalloc.h"
#include "proto/http_req.h"
#include "proto/rfc5322.h"
#include "proto/smtp_cmd.h"

/* --- errors -------------------------------------------------------------------- */

/* The longest prefix of s[0..n) that does not end inside a UTF-8 sequence. */
static size_t utf8_prefix(const char *s, size_t n)
{
	size_t i = n;
	while (i > 0 && ((unsigned char)s[i - 1] & 0xc0) == 0x80)
		i--; /* continuation bytes */
	if (i == 0)
		return n;
	unsigned char lead = (unsigned char)s[i - 1];
	size_t want = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
	return n - (i - 1) >= want ? n : i - 1;
}

/* Formats the error into err, cut at a character boundary; returns -1. */
static int bad(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n >= errlen)
		err[utf8_prefix(err, errlen - 1)] = 0;
	return -1;
}

/* --- validation ------------------------------------------------------------------ */

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

static int check_object_keys(json_t *o, const char *what, const char *const *keys, char *err,
			     size_t errlen)
{
	if (!json_is_object(o))
		return bad(err, errlen, "%s must be an object", what);
	const char *unknown = http_req_json_unknown_key(o, keys);
	if (unknown)
		return bad(err, errlen, "%s: unknown field '%s'", what, unknown);
	return 0;
}

static int check_string_map(json_t *o, const char *what, char *err, size_t errlen)
{
	if (!json_is_object(o))
		return bad(err, errlen, "%s must be an object", what);
	const char *k;
	json_t *v;
	json_object_foreach(o, k, v)
	{
		if (!json_is_string(v))
			return bad(err, errlen, "%s.%s must be a string", what, k);
		if (!rfc5322_name_valid(k, strlen(k)))
			return bad(err, errlen, "%s: invalid header name '%s'", what, k);
	}
	return 0;
}

/* A display name goes into a header as is (quoted when ASCII): a line
 * break in it would end the header and start another. */
static int check_name(json_t *n, const char *what, char *err, size_t errlen)
{
	if (n && !json_is_string(n) && !json_is_null(n))
		return bad(err, errlen, "%s.name must be a string", what);
	if (json_is_string(n) && strpbrk(json_string_value(n), "\r\n"))
		return bad(err, errlen, "%s.name: line breaks (CR, LF) are not allowed", what);
	return 0;
}

static int check_mailbox_obj(json_t *o, const char *what, char *err, size_t errlen)
{
	static const char *const keys[] = {"email", "name", NULL};
	if (check_object_keys(o, what, keys, err, errlen))
		return -1;
	json_t *e = json_object_get(o, "email");
	if (!json_is_string(e) || !address_valid(json_string_value(e), 0))
		return bad(err, errlen, "%s.email: missing or invalid address", what);
	return check_name(json_object_get(o, "name"), what, err, errlen);
}

static int check_builder(json_t *c, char *err, size_t errlen)
{
	static const char *const keys[] = {"text_body", "html_body",   "amp_html_body",
					   "headers",	"from",	       "subject",
					   "reply_to",	"attachments", NULL};
	if (check_object_keys(c, "content", keys, err, errlen))
		return -1;
	static const char *const strs[] = {"text_body", "html_body", "subject"};
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		json_t *v = json_object_get(c, strs[i]);
		if (v && !json_is_string(v))
			return bad(err, errlen, "content.%s must be a string", strs[i]);
	}
	if (json_object_get(c, "amp_html_body") || json_object_get(c, "attachments"))
		return bad(err, errlen, "content: amp_html_body and attachments are not supported");
	if (!json_object_get(c, "text_body") && !json_object_get(c, "html_body"))
		return bad(err, errlen, "content: one of text_body or html_body is required");
	json_t *h = json_object_get(c, "headers");
	if (h && check_string_map(h, "content.headers", err, errlen))
		return -1;
	static const char *const boxes[] = {"from", "reply_to"};
	for (size_t i = 0; i < sizeof(boxes) / sizeof(boxes[0]); i++) {
		char what[32];
		snprintf(what, sizeof(what), "content.%s", boxes[i]);
		json_t *mb = json_object_get(c, boxes[i]);
		if (mb && check_mailbox_obj(mb, what, err, errlen))
			return -1;
	}
	return 0;
}

static int check_recipient(json_t *r, size_t i, char *err, size_t errlen)
{
	static const char *const keys[] = {"email", "name", "substitutions", "metadata", NULL};
	char what[48];
	snprintf(what, sizeof(what), "recipients[%zu]", i);
	if (check_object_keys(r, what, keys, err, errlen))
		return -1;
	json_t *e = json_object_get(r, "email");
	if (!json_is_string(e))
		return bad(err, errlen, "%s.email: missing (a string is required)", what);
	if (!address_valid(json_string_value(e), 0))
		return bad(err, errlen, "%s.email: invalid address '%s'", what,
			   json_string_value(e));
	if (check_name(json_object_get(r, "name"), what, err, errlen))
		return -1;
	json_t *s = json_object_get(r, "substitutions"), *m = json_object_get(r, "metadata");
	if (s && !json_is_object(s))
		return bad(err, errlen, "%s.substitutions must be an object", what);
	if (m && !json_is_object(m))
		return bad(err, errlen, "%s.metadata must be an object", what);
	return 0;
}

static int check_recipients(json_t *rs, char *err, size_t errlen)
{
	if (!json_is_array(rs) || json_array_size(rs) == 0)
		return bad(err, errlen, "recipients: a non-empty array is required");
	if (json_array_size(rs) > INJECT_REQ_MAX_RECIPIENTS)
		return bad(err, errlen, "recipients: more than %d", INJECT_REQ_MAX_RECIPIENTS);
	for (size_t i = 0; i < json_array_size(rs); i++)
		if (check_recipient(json_array_get(rs, i), i, err, errlen))
			return -1;
	return 0;
}

/* The optional top-level keys. */
static int check_options(json_t *j, struct inject_req *q, char *err, size_t errlen)
{
	q->subst = json_object_get(j, "substitutions");
	if (q->subst && !json_is_object(q->subst))
		return bad(err, errlen, "substitutions must be an object");
	json_t *d = json_object_get(j, "template_dialect");
	if (d && (!json_is_string(d) || (strcmp(json_string_value(d), "Jinja") != 0 &&
					 strcmp(json_string_value(d), "Static") != 0)))
		return bad(err, errlen,
			   "template_dialect: 'Jinja' (simple {{ name }} substitution) or "
			   "'Static' expected");
	q->dialect_static = d && strcmp(json_string_value(d), "Static") == 0;
	json_t *g = json_object_get(j, "deferred_generation");
	if (g && !json_is_false(g))
		return bad(err, errlen, "deferred_generation: only false is supported");
	json_t *ds = json_object_get(j, "deferred_spool");
	if (ds && !json_is_boolean(ds))
		return bad(err, errlen, "deferred_spool must be a boolean");
	q->deferred_spool = ds && json_is_true(ds);
	json_t *th = json_object_get(j, "trace_headers");
	if (th && !json_is_object(th))
		return bad(err, errlen, "trace_headers must be an object");
	return 0;
}

static int inject_validate(json_t *j, struct inject_req *q, char *err, size_t errlen)
{
	static const char *const keys[] = {
	    "envelope_sender",	   "content",	       "recipients",
	    "substitutions",	   "template_dialect", "deferred_spool",
	    "deferred_generation", "trace_headers",    NULL};
	if (!json_is_object(j))
		return bad(err, errlen, "expected a JSON object");
	const char *unknown = http_req_json_unknown_key(j, keys);
	if (unknown)
		return bad(err, errlen, "unknown field '%s'", unknown);
	json_t *s = json_object_get(j, "envelope_sender");
	if (!json_is_string(s))
		return bad(err, errlen, "envelope_sender: missing (a string is required)");
	if (!address_valid(json_string_value(s), 1))
		return bad(err, errlen, "envelope_sender: invalid address '%s'",
			   json_string_value(s));
	q->sender = json_string_value(s);
	q->content = json_object_get(j, "content");
	if (!q->content)
		return bad(err, errlen, "content: missing");
	if (!json_is_string(q->content) && check_builder(q->content, err, errlen))
		return -1;
	q->recipients = json_object_get(j, "recipients");
	if (check_recipients(q->recipients, err, errlen))
		return -1;
	return check_options(j, q, err, errlen);
}

/* --- templates ---------------------------------------------------------------------- */

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

/* The name inside {{ ... }} (blanks trimmed) into name; -1 unless it is an
 * identifier. */
static int template_name(const char *b, const char *e, char *name, size_t namelen)
{
	while (b < e && (*b == ' ' || *b == '\t'))
		b++;
	while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	size_t n = (size_t)(e - b);
	int ok = n > 0 && n < namelen;
	for (size_t i = 0; ok && i < n; i++)
		ok = b[i] == '_' || (b[i] >= 'a' && b[i] <= 'z') || (b[i] >= 'A' && b[i] <= 'Z') ||
		     (i && b[i] >= '0' && b[i] <= '9');
	if (!ok)
		return -1;
	memcpy(name, b, n);
	name[n] = 0;
	return 0;
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
		if (!close)
			return bad(err, errlen, "unterminated '{{' at offset %zu",
				   (size_t)(open - tpl));
		char name[128];
		if (template_name(open + 2, close, name, sizeof(name)) != 0) {
			size_t shown = (size_t)(close - open - 2);
			shown = utf8_prefix(open + 2, shown > 60 ? 60 : shown);
			return bad(err, errlen,
				   "unsupported template expression '{{%.*s}}' (only {{ name }})",
				   (int)shown, open + 2);
		}
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

/* Parses a template without substituting; the error names `what`. */
static int check_template(const char *what, const char *tpl, char *err, size_t errlen)
{
	char why[256];
	struct buf b;
	buf_init(&b);
	int rc = render(tpl, NULL, NULL, &b, why, sizeof(why));
	buf_free(&b);
	return rc ? bad(err, errlen, "%s: template error: %s", what, why) : 0;
}

static const char *builder_str(json_t *c, const char *key)
{
	json_t *v = json_object_get(c, key);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Every templated string must parse: found once for the whole request
 * rather than once per recipient. */
static int check_templates(const struct inject_req *q, char *err, size_t errlen)
{
	if (q->dialect_static)
		return 0;
	if (json_is_string(q->content))
		return check_template("content", json_string_value(q->content), err, errlen);
	static const char *const keys[] = {"subject", "text_body", "html_body"};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const char *s = builder_str(q->content, keys[i]);
		if (s && check_template(keys[i], s, err, errlen))
			return -1;
	}
	const char *k;
	json_t *v;
	char what[300];
	json_object_foreach(json_object_get(q->content, "headers"), k, v)
	{
		snprintf(what, sizeof(what), "content.headers.%s", k);
		what[utf8_prefix(what, strlen(what))] = 0;
		if (check_template(what, json_string_value(v), err, errlen))
			return -1;
	}
	return 0;
}

int inject_req_parse(json_t *j, struct inject_req *q, char *err, size_t errlen)
{
	memset(q, 0, sizeof(*q));
	if (inject_validate(j, q, err, errlen) != 0 || check_templates(q, err, errlen) != 0) {
		memset(q, 0, sizeof(*q));
		return 422;
	}
	q->root = json_incref(j);
	return 0;
}

void inject_req_free(struct inject_req *q)
{
	json_decref(q->root);
	memset(q, 0, sizeof(*q));
}

size_t inject_req_count(const struct inject_req *q)
{
	return json_array_size(q->recipients);
}

const char *inject_req_rcpt_email(const struct inject_req *q, size_t i)
{
	return json_string_value(json_object_get(json_array_get(q->recipients, i), "email"));
}

json_t *inject_req_rcpt_metadata(const struct inject_req *q, size_t i)
{
	return json_object_get(json_array_get(q->recipients, i), "metadata");
}

void inject_req_release_rcpt(struct inject_req *q, size_t i)
{
	if (i < json_array_size(q->recipients))
		json_array_set_new(q->recipients, i, json_null());
}

/* --- building messages ---------------------------------------------------------------- */

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

/* Quoted-printable (RFC 2045) with line breaks kept as hard CRLF breaks. */
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
	struct buf b;
	buf_init(&b);
	buf_appends(&b, "=?utf-8?B?");
	base64_encode(&b, s, strlen(s));
	buf_appends(&b, "?=");
	char *out = xstrdup(buf_cstr(&b));
	buf_free(&b);
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
	if (!rfc5322_value_valid(value, strlen(value)))
		return bad(err, errlen, "header %s contains a line break after substitution", name);
	char *v = header_text(value);
	rfc5322_format_header(hdrs, name, v);
	free(v);
	return 0;
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
static int builder_std_headers(const struct inject_req *q, json_t *rcpt, json_t *local,
			       const char *id, const char *date, struct buf *h, char *err,
			       size_t errlen)
{
	json_t *c = q->content, *custom = json_object_get(q->content, "headers");
	const struct {
		const char *name;
		json_t *mb;
	} boxes[] = {{"From", json_object_get(c, "from")},
		     {"Reply-To", json_object_get(c, "reply_to")},
		     {"To", rcpt}};
	for (size_t i = 0; i < sizeof(boxes) / sizeof(boxes[0]); i++) {
		if (!boxes[i].mb || (custom && custom_has(custom, boxes[i].name)))
			continue;
		char *v = mailbox_text(builder_str(boxes[i].mb, "name"),
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
		char *v = xasprintf("<%s@%s>", id, "kumod.http");
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

static int build_from_builder(const struct inject_req *q, json_t *rcpt, json_t *local,
			      const char *id, const char *date, struct buf *out, char *err,
			      size_t errlen)
{
	if (builder_std_headers(q, rcpt, local, id, date, out, err, errlen) ||
	    builder_custom_headers(q, local, out, err, errlen))
		return -1;
	int text = builder_str(q->content, "text_body") != NULL;
	int html = builder_str(q->content, "html_body") != NULL;
	if (!(text && html)) {
		return builder_part(q, text ? "text_body" : "html_body",
				    text ? "text/plain" : "text/html", local, out, err, errlen);
	}
	char boundary[128];
	snprintf(boundary, sizeof(boundary), "=_kumod_%s", id);
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

int inject_req_build(const struct inject_req *q, size_t i, const char *id, const char *date,
		     struct buf *out, char *err, size_t errlen)
{
	json_t *rcpt = json_array_get(q->recipients, i);
	json_t *local = json_object_get(rcpt, "substitutions");
	if (!json_is_string(q->content))
		return build_from_builder(q, rcpt, local, id, date, out, err, errlen) ? -EINVAL : 0;
	char *s = render_str(q, json_string_value(q->content), local, err, errlen);
	if (!s)
		return -EINVAL;
	size_t start = out->len;
	append_crlf(out, s);
	free(s);
	if (out->len - start < 2 || memcmp(out->data + out->len - 2, "\r\n", 2) != 0)
		buf_appends(out, "\r\n");
	return 0;
}
