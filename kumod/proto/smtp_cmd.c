/* SPDX-License-Identifier: Apache-2.0 */
/* SMTP command-line parser: verbs, paths (RFC 5321 §4.1.2, RFC 6531), ESMTP parameters. */
#include "proto/smtp_cmd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

/* --- replies ------------------------------------------------------------- */

enum smtp_cmd_error {
	SMTP_CMD_E_EMPTY,
	SMTP_CMD_E_CTRL,
	SMTP_CMD_E_UNKNOWN,
	SMTP_CMD_E_VERB_UTF8,
	SMTP_CMD_E_UTF8,
	SMTP_CMD_E_NOARGS,
	SMTP_CMD_E_HELO,
	SMTP_CMD_E_EHLO,
	SMTP_CMD_E_LHLO,
	SMTP_CMD_E_VRFY,
	SMTP_CMD_E_EXPN,
	SMTP_CMD_E_AUTH,
	SMTP_CMD_E_BDAT,
	SMTP_CMD_E_XCLIENT,
	SMTP_CMD_E_MAIL,
	SMTP_CMD_E_RCPT,
	SMTP_CMD_E_SENDER,
	SMTP_CMD_E_RECIPIENT,
	SMTP_CMD_E_NULL_RCPT,
	SMTP_CMD_E_NON_ASCII,
	SMTP_CMD_E_PARAM,
	SMTP_CMD_E_TOO_MANY,
	SMTP_CMD_E_DUPLICATE,
	SMTP_CMD_E_SIZE,
	SMTP_CMD_E_BODY,
	SMTP_CMD_E_SMTPUTF8,
	SMTP_CMD_E_UNSUPPORTED,
};

static const struct smtp_reply_err smtp_cmd_errors[] = {
    [SMTP_CMD_E_EMPTY] = {500, "5.5.2", "Syntax error: empty command"},
    [SMTP_CMD_E_CTRL] = {500, "5.5.2", "Syntax error: control character in command"},
    [SMTP_CMD_E_UNKNOWN] = {500, "5.5.1", "Command unrecognized"},
    [SMTP_CMD_E_VERB_UTF8] = {500, "5.5.2", "Invalid UTF-8 in command"},
    [SMTP_CMD_E_UTF8] = {501, "5.5.2", "Invalid UTF-8 in command"},
    [SMTP_CMD_E_NOARGS] = {501, "5.5.4", "Syntax error: no arguments allowed"},
    [SMTP_CMD_E_HELO] = {501, "5.5.4", "Syntax: HELO hostname"},
    [SMTP_CMD_E_EHLO] = {501, "5.5.4", "Syntax: EHLO hostname"},
    [SMTP_CMD_E_LHLO] = {501, "5.5.4", "Syntax: LHLO hostname"},
    [SMTP_CMD_E_VRFY] = {501, "5.5.4", "Syntax: VRFY address"},
    [SMTP_CMD_E_EXPN] = {501, "5.5.4", "Syntax: EXPN mailing-list"},
    [SMTP_CMD_E_AUTH] = {501, "5.5.4", "Syntax: AUTH mechanism [initial-response]"},
    [SMTP_CMD_E_BDAT] = {501, "5.5.4", "Syntax: BDAT size [LAST]"},
    [SMTP_CMD_E_XCLIENT] = {501, "5.5.4", "Syntax: XCLIENT attribute=value ..."},
    [SMTP_CMD_E_MAIL] = {501, "5.5.4", "Syntax: MAIL FROM:<address>"},
    [SMTP_CMD_E_RCPT] = {501, "5.5.4", "Syntax: RCPT TO:<address>"},
    [SMTP_CMD_E_SENDER] = {501, "5.1.7", "Invalid sender address syntax"},
    [SMTP_CMD_E_RECIPIENT] = {501, "5.1.3", "Invalid recipient address syntax"},
    [SMTP_CMD_E_NULL_RCPT] = {501, "5.1.3", "Invalid recipient address syntax: <> not allowed"},
    [SMTP_CMD_E_NON_ASCII] = {553, "5.6.7", "Non-ASCII address requires SMTPUTF8"},
    [SMTP_CMD_E_PARAM] = {501, "5.5.4", "Invalid parameter syntax"},
    [SMTP_CMD_E_TOO_MANY] = {501, "5.5.4", "Too many parameters"},
    [SMTP_CMD_E_DUPLICATE] = {501, "5.5.4", "Duplicate parameter"},
    [SMTP_CMD_E_SIZE] = {501, "5.5.4", "Invalid SIZE parameter"},
    [SMTP_CMD_E_BODY] = {501, "5.5.4", "Invalid BODY parameter"},
    [SMTP_CMD_E_SMTPUTF8] = {501, "5.5.4", "SMTPUTF8 takes no value"},
    [SMTP_CMD_E_UNSUPPORTED] = {555, "5.5.4", "Unsupported parameter"},
};

static int smtp_cmd_fail(struct smtp_reply_err *err, enum smtp_cmd_error e)
{
	*err = smtp_cmd_errors[e];
	return -EINVAL;
}

/* --- characters ---------------------------------------------------------- */

static int smtp_cmd_is_ctrl(unsigned char c)
{
	return c < 32 || c == 127;
}

static int smtp_cmd_lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* ASCII case-insensitive equality of s[0..len) and the NUL-terminated lit. */
static int smtp_cmd_ieq(const char *s, size_t len, const char *lit)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (!lit[i] ||
		    smtp_cmd_lower((unsigned char)s[i]) != smtp_cmd_lower((unsigned char)lit[i]))
			return 0;
	return lit[i] == 0;
}

static int smtp_cmd_is_alnum(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* RFC 5322 atext. */
static int smtp_cmd_is_atext(unsigned char c)
{
	return smtp_cmd_is_alnum(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

/* Length of the strictly valid UTF-8 sequence at p (lead byte >= 0x80), or 0. */
static size_t smtp_cmd_utf8_seq(const unsigned char *p, size_t len)
{
	unsigned char c = p[0];
	size_t n;
	unsigned char lo = 0x80, hi = 0xbf;

	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0; /* ASCII, continuation, overlong lead C0/C1, F5..FF */
	if (c == 0xe0)
		lo = 0xa0; /* overlong 3-byte */
	else if (c == 0xed)
		hi = 0x9f; /* surrogates */
	else if (c == 0xf0)
		lo = 0x90; /* overlong 4-byte */
	else if (c == 0xf4)
		hi = 0x8f; /* > U+10FFFF */
	if (len < n || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return n;
}

int smtp_utf8_valid(const char *p, size_t len)
{
	const unsigned char *u = (const unsigned char *)p;
	size_t i = 0;

	while (i < len) {
		if (u[i] < 0x80) {
			i++;
			continue;
		}
		size_t n = smtp_cmd_utf8_seq(u + i, len - i);
		if (!n)
			return 0;
		i += n;
	}
	return 1;
}

/* --- domains and address literals --------------------------------------- */

enum smtp_dom_status {
	SMTP_DOM_OK = 0,
	SMTP_DOM_SYNTAX,
	SMTP_DOM_NON_ASCII, /* non-ASCII where UTF-8 is not allowed */
	SMTP_DOM_BAD_UTF8,
};

/* Snum "." Snum "." Snum "." Snum, each 1*3DIGIT <= 255. */
static int smtp_cmd_ipv4_valid(const char *p, size_t len)
{
	size_t i = 0;

	for (int part = 0; part < 4; part++) {
		unsigned v = 0;
		size_t digits = 0;
		if (part > 0) {
			if (i >= len || p[i] != '.')
				return 0;
			i++;
		}
		while (i < len && p[i] >= '0' && p[i] <= '9' && digits < 3) {
			v = v * 10 + (unsigned)(p[i] - '0');
			i++;
			digits++;
		}
		if (!digits || v > 255)
			return 0;
	}
	return i == len;
}

/* "[...]": an IPv4 literal or "IPv6:" + an address inet_pton() accepts. General
 * (tagged) literals are refused: nothing could deliver to them. */
static int smtp_cmd_literal_valid(const char *p, size_t len)
{
	char tmp[64];

	if (len < 3 || p[0] != '[' || p[len - 1] != ']')
		return 0;
	p++;
	len -= 2;
	if (len > 5 && smtp_cmd_ieq(p, 5, "IPv6:")) {
		unsigned char addr[16];
		if (len - 5 >= sizeof(tmp))
			return 0;
		memcpy(tmp, p + 5, len - 5);
		tmp[len - 5] = 0;
		if (memchr(tmp, 0, len - 5))
			return 0;
		return inet_pton(AF_INET6, tmp, addr) == 1;
	}
	return smtp_cmd_ipv4_valid(p, len);
}

/* Domain: labels of let-dig [ldh-str] (U-label bytes too when allow_utf8). */
static enum smtp_dom_status smtp_cmd_domain_check(const char *p, size_t len, int allow_utf8)
{
	const unsigned char *u = (const unsigned char *)p;
	size_t i = 0, label = 0;

	if (len == 0 || len > 255)
		return SMTP_DOM_SYNTAX;
	while (i < len) {
		if (u[i] == '.') {
			if (label == 0 || u[i - 1] == '-')
				return SMTP_DOM_SYNTAX;
			label = 0;
			i++;
			continue;
		}
		if (u[i] >= 0x80) {
			size_t n;
			if (!allow_utf8)
				return SMTP_DOM_NON_ASCII;
			n = smtp_cmd_utf8_seq(u + i, len - i);
			if (!n)
				return SMTP_DOM_BAD_UTF8;
			i += n;
			label += n;
		} else if (smtp_cmd_is_alnum(u[i]) || (u[i] == '-' && label > 0)) {
			i++;
			label++;
		} else {
			return SMTP_DOM_SYNTAX;
		}
		if (label > 63)
			return SMTP_DOM_SYNTAX;
	}
	if (label == 0 || u[len - 1] == '-')
		return SMTP_DOM_SYNTAX;
	return SMTP_DOM_OK;
}

int smtp_domain_valid(const char *p, size_t len)
{
	if (len && p[0] == '[')
		return smtp_cmd_literal_valid(p, len);
	return smtp_cmd_domain_check(p, len, 0) == SMTP_DOM_OK;
}

int smtp_domain_valid_utf8(const char *p, size_t len)
{
	if (len && p[0] == '[')
		return smtp_cmd_literal_valid(p, len);
	return smtp_cmd_domain_check(p, len, 1) == SMTP_DOM_OK;
}

/* --- paths --------------------------------------------------------------- */

/* Path parser state: s[0..len), cursor i. */
struct smtp_path_ctx {
	const unsigned char *s;
	size_t len, i;
	int is_sender, smtputf8, bracketed;
	struct smtp_mailbox *mb;
	struct smtp_reply_err *err;
};

static int smtp_path_syntax(struct smtp_path_ctx *pc)
{
	return smtp_cmd_fail(pc->err, pc->is_sender ? SMTP_CMD_E_SENDER : SMTP_CMD_E_RECIPIENT);
}

static int smtp_path_dom_fail(struct smtp_path_ctx *pc, enum smtp_dom_status st)
{
	if (st == SMTP_DOM_NON_ASCII)
		return smtp_cmd_fail(pc->err, SMTP_CMD_E_NON_ASCII);
	if (st == SMTP_DOM_BAD_UTF8)
		return smtp_cmd_fail(pc->err, SMTP_CMD_E_UTF8);
	return smtp_path_syntax(pc);
}

/* One non-ASCII character at the cursor: allowed only under SMTPUTF8, and then strictly. */
static int smtp_path_utf8(struct smtp_path_ctx *pc)
{
	size_t n;

	if (!pc->smtputf8)
		return smtp_cmd_fail(pc->err, SMTP_CMD_E_NON_ASCII);
	n = smtp_cmd_utf8_seq(pc->s + pc->i, pc->len - pc->i);
	if (!n)
		return smtp_cmd_fail(pc->err, SMTP_CMD_E_UTF8);
	pc->i += n;
	pc->mb->utf8 = 1;
	return 0;
}

/* Is the cursor at the end of the path: '>' when bracketed, space or end when bare. */
static int smtp_path_at_end(const struct smtp_path_ctx *pc)
{
	if (pc->bracketed)
		return pc->i < pc->len && pc->s[pc->i] == '>';
	return pc->i == pc->len || pc->s[pc->i] == ' ';
}

/* Bytes from the cursor up to (not including) a byte of `stops`, or to the end. */
static size_t smtp_path_span(const struct smtp_path_ctx *pc, const char *stops)
{
	size_t j = pc->i;

	while (j < pc->len && !(pc->s[j] && strchr(stops, pc->s[j])))
		j++;
	return j - pc->i;
}

/* A-d-l ":" (RFC 5321 source route): validated, then ignored. */
static int smtp_path_route(struct smtp_path_ctx *pc)
{
	for (;;) {
		size_t n;
		enum smtp_dom_status st;
		pc->i++; /* '@' */
		n = smtp_path_span(pc, ",:>");
		st = smtp_cmd_domain_check((const char *)pc->s + pc->i, n, pc->smtputf8);
		if (st != SMTP_DOM_OK)
			return smtp_path_dom_fail(pc, st);
		pc->i += n;
		if (pc->i >= pc->len)
			return smtp_path_syntax(pc);
		if (pc->s[pc->i] == ':') {
			pc->i++;
			return 0;
		}
		if (pc->s[pc->i] != ',' || pc->i + 1 >= pc->len || pc->s[pc->i + 1] != '@')
			return smtp_path_syntax(pc);
		pc->i++;
	}
}

/* Quoted-string: DQUOTE *(qtextSMTP / quoted-pairSMTP) DQUOTE, UTF-8 qtext under SMTPUTF8. */
static int smtp_path_quoted(struct smtp_path_ctx *pc)
{
	pc->i++;
	while (pc->i < pc->len) {
		unsigned char c = pc->s[pc->i];
		if (c == '"') {
			pc->i++;
			pc->mb->quoted = 1;
			return 0;
		}
		if (c == '\\') {
			if (pc->i + 1 >= pc->len)
				break;
			c = pc->s[pc->i + 1];
			if (c < 32 || c > 126)
				return smtp_path_syntax(pc);
			pc->i += 2;
		} else if (c >= 0x80) {
			if (smtp_path_utf8(pc))
				return -EINVAL;
		} else if (c < 32 || c > 126) {
			return smtp_path_syntax(pc);
		} else {
			pc->i++;
		}
	}
	return smtp_path_syntax(pc);
}

/* Dot-string: Atom *("." Atom), UTF-8 atext under SMTPUTF8. */
static int smtp_path_dot_string(struct smtp_path_ctx *pc)
{
	size_t atom = 0;

	while (pc->i < pc->len) {
		unsigned char c = pc->s[pc->i];
		if (c == '.') {
			if (atom == 0)
				return smtp_path_syntax(pc);
			atom = 0;
			pc->i++;
		} else if (c >= 0x80) {
			if (smtp_path_utf8(pc))
				return -EINVAL;
			atom++;
		} else if (smtp_cmd_is_atext(c)) {
			pc->i++;
			atom++;
		} else {
			break;
		}
	}
	if (atom == 0)
		return smtp_path_syntax(pc);
	return 0;
}

/* Domain or address literal after '@', up to the end of the path. */
static int smtp_path_domain(struct smtp_path_ctx *pc)
{
	size_t n = smtp_path_span(pc, pc->bracketed ? ">" : " ");
	const char *d = (const char *)pc->s + pc->i;
	struct smtp_mailbox *mb = pc->mb;

	if (n && d[0] == '[') {
		if (!smtp_cmd_literal_valid(d, n))
			return smtp_path_syntax(pc);
		mb->literal = 1;
	} else {
		enum smtp_dom_status st = smtp_cmd_domain_check(d, n, pc->smtputf8);
		if (st != SMTP_DOM_OK)
			return smtp_path_dom_fail(pc, st);
		for (size_t k = 0; k < n; k++)
			if ((unsigned char)d[k] >= 0x80)
				mb->utf8 = 1;
	}
	mb->domain.p = d;
	mb->domain.len = n;
	pc->i += n;
	return 0;
}

/* Mailbox = Local-part "@" ( Domain / address-literal ), or a recipient's bare Postmaster. */
static int smtp_path_mailbox(struct smtp_path_ctx *pc, int routed)
{
	struct smtp_mailbox *mb = pc->mb;
	size_t start = pc->i;
	int rc;

	if (pc->i >= pc->len)
		return smtp_path_syntax(pc);
	if (pc->s[pc->i] == '"')
		rc = smtp_path_quoted(pc);
	else
		rc = smtp_path_dot_string(pc);
	if (rc)
		return rc;
	mb->local.p = (const char *)pc->s + start;
	mb->local.len = pc->i - start;
	if (smtp_path_at_end(pc) && !pc->is_sender && !routed && !mb->quoted &&
	    smtp_cmd_ieq(mb->local.p, mb->local.len, "postmaster")) {
		mb->postmaster = 1;
		mb->domain.p = mb->local.p + mb->local.len;
		return 0;
	}
	if (pc->i >= pc->len || pc->s[pc->i] != '@')
		return smtp_path_syntax(pc);
	pc->i++;
	return smtp_path_domain(pc);
}

int smtp_path_parse(const char *s, size_t len, int is_sender, int smtputf8, struct smtp_mailbox *mb,
		    size_t *consumed, struct smtp_reply_err *err)
{
	struct smtp_path_ctx pc = {
	    (const unsigned char *)s, len, 0, is_sender, smtputf8, 0, mb, err};
	int routed = 0;

	memset(mb, 0, sizeof(*mb));
	mb->local.p = mb->domain.p = s;
	*consumed = 0;
	for (size_t k = 0; k < len; k++) {
		/* Only up to the path's end matters, but a control byte anywhere in what the caller
		 * hands us is never an address: refuse early rather than truncating. */
		if (smtp_cmd_is_ctrl((unsigned char)s[k]))
			return smtp_cmd_fail(err, SMTP_CMD_E_CTRL);
	}
	if (len && s[0] == '<') {
		pc.bracketed = 1;
		pc.i = 1;
		if (len > 1 && s[1] == '>') {
			if (!is_sender)
				return smtp_cmd_fail(err, SMTP_CMD_E_NULL_RCPT);
			mb->null_path = 1;
			mb->local.p = mb->domain.p = s + 1;
			*consumed = 2;
			return 0;
		}
		if (len > 1 && s[1] == '@') {
			if (smtp_path_route(&pc))
				return -EINVAL;
			routed = 1;
		}
	}
	if (smtp_path_mailbox(&pc, routed))
		return -EINVAL;
	if (pc.bracketed) {
		if (pc.i >= len || s[pc.i] != '>')
			return smtp_path_syntax(&pc);
		pc.i++;
	} else if (!smtp_path_at_end(&pc)) {
		return smtp_path_syntax(&pc);
	}
	*consumed = pc.i;
	return 0;
}

/* --- formatting --------------------------------------------------------- */

/* snprintf-like writer: counts every byte, stores what fits, keeps room for the NUL. */
struct smtp_out {
	char *dst;
	size_t cap, n;
};

static void smtp_out_put(struct smtp_out *o, const char *p, size_t len)
{
	for (size_t j = 0; j < len; j++, o->n++)
		if (o->n + 1 < o->cap)
			o->dst[o->n] = p[j];
}

static void smtp_out_puts(struct smtp_out *o, const char *s)
{
	smtp_out_put(o, s, strlen(s));
}

static size_t smtp_out_end(struct smtp_out *o)
{
	if (o->cap)
		o->dst[o->n < o->cap ? o->n : o->cap - 1] = 0;
	return o->n;
}

static void smtp_out_mailbox(struct smtp_out *o, const struct smtp_mailbox *mb)
{
	if (mb->null_path)
		return;
	if (mb->postmaster) {
		smtp_out_puts(o, "Postmaster");
		return;
	}
	smtp_out_put(o, mb->local.p, mb->local.len);
	smtp_out_puts(o, "@");
	smtp_out_put(o, mb->domain.p, mb->domain.len);
}

size_t smtp_mailbox_format(const struct smtp_mailbox *mb, char *dst, size_t cap)
{
	struct smtp_out o = {dst, cap, 0};

	smtp_out_mailbox(&o, mb);
	return smtp_out_end(&o);
}

/* --- verbs --------------------------------------------------------------- */

/* How a verb takes its argument. */
enum smtp_verb_args {
	SMTP_ARGS_NONE,	    /* DATA RSET QUIT STARTTLS: nothing may follow */
	SMTP_ARGS_OPTIONAL, /* NOOP HELP */
	SMTP_ARGS_REQUIRED, /* VRFY EXPN AUTH BDAT XCLIENT */
	SMTP_ARGS_HOST,	    /* HELO EHLO LHLO: one token, no spaces */
	SMTP_ARGS_PATH,	    /* MAIL RCPT */
};

struct smtp_verb_def {
	const char *name;
	enum smtp_verb_args args;
	enum smtp_cmd_error syntax; /* reply for a missing or malformed argument */
};

static const struct smtp_verb_def smtp_verbs[SMTP_VERB__COUNT] = {
    [SMTP_VERB_UNKNOWN] = {"UNKNOWN", SMTP_ARGS_OPTIONAL, SMTP_CMD_E_UNKNOWN},
    [SMTP_VERB_HELO] = {"HELO", SMTP_ARGS_HOST, SMTP_CMD_E_HELO},
    [SMTP_VERB_EHLO] = {"EHLO", SMTP_ARGS_HOST, SMTP_CMD_E_EHLO},
    [SMTP_VERB_LHLO] = {"LHLO", SMTP_ARGS_HOST, SMTP_CMD_E_LHLO},
    [SMTP_VERB_MAIL] = {"MAIL", SMTP_ARGS_PATH, SMTP_CMD_E_MAIL},
    [SMTP_VERB_RCPT] = {"RCPT", SMTP_ARGS_PATH, SMTP_CMD_E_RCPT},
    [SMTP_VERB_DATA] = {"DATA", SMTP_ARGS_NONE, SMTP_CMD_E_NOARGS},
    [SMTP_VERB_RSET] = {"RSET", SMTP_ARGS_NONE, SMTP_CMD_E_NOARGS},
    [SMTP_VERB_NOOP] = {"NOOP", SMTP_ARGS_OPTIONAL, SMTP_CMD_E_NOARGS},
    [SMTP_VERB_QUIT] = {"QUIT", SMTP_ARGS_NONE, SMTP_CMD_E_NOARGS},
    [SMTP_VERB_VRFY] = {"VRFY", SMTP_ARGS_REQUIRED, SMTP_CMD_E_VRFY},
    [SMTP_VERB_EXPN] = {"EXPN", SMTP_ARGS_REQUIRED, SMTP_CMD_E_EXPN},
    [SMTP_VERB_HELP] = {"HELP", SMTP_ARGS_OPTIONAL, SMTP_CMD_E_NOARGS},
    [SMTP_VERB_STARTTLS] = {"STARTTLS", SMTP_ARGS_NONE, SMTP_CMD_E_NOARGS},
    [SMTP_VERB_AUTH] = {"AUTH", SMTP_ARGS_REQUIRED, SMTP_CMD_E_AUTH},
    [SMTP_VERB_BDAT] = {"BDAT", SMTP_ARGS_REQUIRED, SMTP_CMD_E_BDAT},
    [SMTP_VERB_XCLIENT] = {"XCLIENT", SMTP_ARGS_REQUIRED, SMTP_CMD_E_XCLIENT},
};

const char *smtp_verb_name(enum smtp_verb v)
{
	if ((unsigned)v >= SMTP_VERB__COUNT)
		v = SMTP_VERB_UNKNOWN;
	return smtp_verbs[v].name;
}

static enum smtp_verb smtp_verb_lookup(const char *p, size_t len)
{
	for (int v = SMTP_VERB_UNKNOWN + 1; v < SMTP_VERB__COUNT; v++)
		if (smtp_cmd_ieq(p, len, smtp_verbs[v].name))
			return (enum smtp_verb)v;
	return SMTP_VERB_UNKNOWN;
}

/* --- ESMTP parameters ---------------------------------------------------- */

/* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
static int smtp_param_keyword_valid(const char *p, size_t len)
{
	if (len == 0 || !smtp_cmd_is_alnum((unsigned char)p[0]))
		return 0;
	for (size_t i = 1; i < len; i++)
		if (!smtp_cmd_is_alnum((unsigned char)p[i]) && p[i] != '-')
			return 0;
	return 1;
}

/* esmtp-value = 1*(%d33-60 / %d62-126) */
static int smtp_param_value_valid(const char *p, size_t len)
{
	if (len == 0)
		return 0;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)p[i] < 33 || (unsigned char)p[i] > 126 || p[i] == '=')
			return 0;
	return 1;
}

/* Digits only, no overflow of uint64_t. */
static int smtp_param_size(const struct smtp_param *pm, uint64_t *out)
{
	uint64_t v = 0;

	if (!pm->has_value)
		return -EINVAL;
	for (size_t i = 0; i < pm->value.len; i++) {
		unsigned d = (unsigned char)pm->value.p[i] - '0';
		if (d > 9 || v > (UINT64_MAX - d) / 10)
			return -EINVAL;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

/* Applies one MAIL parameter; RCPT takes none (we offer no DSN). */
static int smtp_param_apply(struct smtp_cmd *cmd, const struct smtp_param *pm,
			    struct smtp_reply_err *err)
{
	if (cmd->verb != SMTP_VERB_MAIL)
		return smtp_cmd_fail(err, SMTP_CMD_E_UNSUPPORTED);
	if (smtp_cmd_ieq(pm->key.p, pm->key.len, "SIZE")) {
		if (smtp_param_size(pm, &cmd->size))
			return smtp_cmd_fail(err, SMTP_CMD_E_SIZE);
		cmd->has_size = 1;
	} else if (smtp_cmd_ieq(pm->key.p, pm->key.len, "BODY")) {
		if (pm->has_value && smtp_cmd_ieq(pm->value.p, pm->value.len, "7BIT"))
			cmd->body = SMTP_BODY_7BIT;
		else if (pm->has_value && smtp_cmd_ieq(pm->value.p, pm->value.len, "8BITMIME"))
			cmd->body = SMTP_BODY_8BITMIME;
		else
			return smtp_cmd_fail(err, SMTP_CMD_E_BODY);
	} else if (smtp_cmd_ieq(pm->key.p, pm->key.len, "SMTPUTF8")) {
		if (pm->has_value)
			return smtp_cmd_fail(err, SMTP_CMD_E_SMTPUTF8);
		cmd->smtputf8 = 1;
	} else {
		return smtp_cmd_fail(err, SMTP_CMD_E_UNSUPPORTED);
	}
	return 0;
}

static int smtp_param_key_eq(const struct smtp_param *a, const struct smtp_param *b)
{
	if (a->key.len != b->key.len)
		return 0;
	for (size_t i = 0; i < a->key.len; i++)
		if (smtp_cmd_lower((unsigned char)a->key.p[i]) !=
		    smtp_cmd_lower((unsigned char)b->key.p[i]))
			return 0;
	return 1;
}

/* Splits one "KEY[=VALUE]" token into *pm and checks its syntax. */
static int smtp_param_split(const char *p, size_t len, struct smtp_param *pm)
{
	const char *eq = memchr(p, '=', len);
	size_t klen = eq ? (size_t)(eq - p) : len;

	pm->key.p = p;
	pm->key.len = klen;
	pm->has_value = eq != NULL;
	pm->value.p = eq ? eq + 1 : p + len;
	pm->value.len = eq ? len - klen - 1 : 0;
	if (!smtp_param_keyword_valid(pm->key.p, pm->key.len))
		return -EINVAL;
	if (pm->has_value && !smtp_param_value_valid(pm->value.p, pm->value.len))
		return -EINVAL;
	return 0;
}

/* Space-separated parameters in p[0..len), left to right; the first problem is reported. */
static int smtp_params_parse(const char *p, size_t len, struct smtp_cmd *cmd,
			     struct smtp_reply_err *err)
{
	size_t i = 0, ntok = 0;

	/* Counted first, so an over-long list is refused as such whatever it holds. */
	for (size_t k = 0; k < len; k++)
		if (p[k] != ' ' && (k == 0 || p[k - 1] == ' '))
			ntok++;
	if (ntok > SMTP_MAX_PARAMS)
		return smtp_cmd_fail(err, SMTP_CMD_E_TOO_MANY);
	for (;;) {
		size_t start;
		struct smtp_param pm;
		while (i < len && p[i] == ' ')
			i++;
		if (i == len)
			return 0;
		start = i;
		while (i < len && p[i] != ' ')
			i++;
		if (smtp_param_split(p + start, i - start, &pm))
			return smtp_cmd_fail(err, SMTP_CMD_E_PARAM);
		if (cmd->nparams ==
		    SMTP_MAX_PARAMS) /* unreachable after the count; kept as a bound */
			return smtp_cmd_fail(err, SMTP_CMD_E_TOO_MANY);
		for (size_t k = 0; k < cmd->nparams; k++)
			if (smtp_param_key_eq(&cmd->params[k], &pm))
				return smtp_cmd_fail(err, SMTP_CMD_E_DUPLICATE);
		cmd->params[cmd->nparams++] = pm;
		if (smtp_param_apply(cmd, &pm, err))
			return -EINVAL;
	}
}

/* --- commands ------------------------------------------------------------ */

static struct smtp_slice smtp_cmd_trim(const char *p, size_t len)
{
	struct smtp_slice s;

	while (len && p[0] == ' ') {
		p++;
		len--;
	}
	while (len && p[len - 1] == ' ')
		len--;
	s.p = p;
	s.len = len;
	return s;
}

/* "FROM:" / "TO:" [spaces] path [SP params] after the verb. */
static int smtp_cmd_path(struct smtp_cmd *cmd, struct smtp_reply_err *err)
{
	int is_sender = cmd->verb == SMTP_VERB_MAIL;
	const char *kw = is_sender ? "FROM:" : "TO:";
	size_t kwlen = is_sender ? 5 : 3;
	const char *p = cmd->arg.p;
	size_t len = cmd->arg.len, i, used;

	if (len < kwlen || !smtp_cmd_ieq(p, kwlen, kw))
		return smtp_cmd_fail(err, smtp_verbs[cmd->verb].syntax);
	for (i = kwlen; i < len && p[i] == ' '; i++)
		;
	/* Parsed with UTF-8 allowed: MAIL's SMTPUTF8 comes after the path and is checked
	 * below; RCPT's depends on the transaction (smtp_cmd_check_utf8()). */
	if (smtp_path_parse(p + i, len - i, is_sender, 1, &cmd->path, &used, err))
		return -EINVAL;
	i += used;
	if (i < len && p[i] != ' ')
		return smtp_cmd_fail(err, SMTP_CMD_E_PARAM);
	if (smtp_params_parse(p + i, len - i, cmd, err))
		return -EINVAL;
	if (is_sender && cmd->path.utf8 && !cmd->smtputf8)
		return smtp_cmd_fail(err, SMTP_CMD_E_NON_ASCII);
	return 0;
}

/* Checks the argument against what the verb takes. */
static int smtp_cmd_args(struct smtp_cmd *cmd, struct smtp_reply_err *err)
{
	const struct smtp_verb_def *def = &smtp_verbs[cmd->verb];

	switch (def->args) {
	case SMTP_ARGS_NONE:
		if (cmd->arg.len)
			return smtp_cmd_fail(err, def->syntax);
		return 0;
	case SMTP_ARGS_OPTIONAL:
		return 0;
	case SMTP_ARGS_REQUIRED:
		if (!cmd->arg.len)
			return smtp_cmd_fail(err, def->syntax);
		return 0;
	case SMTP_ARGS_HOST:
		/* As Postfix: any single token; EHLO names are not worth refusing mail over. */
		if (!cmd->arg.len || memchr(cmd->arg.p, ' ', cmd->arg.len))
			return smtp_cmd_fail(err, def->syntax);
		return 0;
	case SMTP_ARGS_PATH:
		return smtp_cmd_path(cmd, err);
	}
	return 0;
}

int smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *cmd, struct smtp_reply_err *err)
{
	size_t vlen = 0;

	memset(cmd, 0, sizeof(*cmd));
	cmd->arg.p = line;
	cmd->path.local.p = cmd->path.domain.p = line;
	for (size_t i = 0; i < len; i++)
		if (smtp_cmd_is_ctrl((unsigned char)line[i]))
			return smtp_cmd_fail(err, SMTP_CMD_E_CTRL);
	while (vlen < len && line[vlen] != ' ')
		vlen++;
	if (vlen == 0)
		return smtp_cmd_fail(err, SMTP_CMD_E_EMPTY);
	cmd->verb = smtp_verb_lookup(line, vlen);
	if (cmd->verb == SMTP_VERB_UNKNOWN)
		return smtp_cmd_fail(err, smtp_utf8_valid(line, vlen) ? SMTP_CMD_E_UNKNOWN
								      : SMTP_CMD_E_VERB_UTF8);
	if (!smtp_utf8_valid(line, len))
		return smtp_cmd_fail(err, SMTP_CMD_E_UTF8);
	cmd->arg = smtp_cmd_trim(line + vlen, len - vlen);
	return smtp_cmd_args(cmd, err);
}

int smtp_cmd_check_utf8(const struct smtp_cmd *cmd, int txn_smtputf8, struct smtp_reply_err *err)
{
	if (cmd->path.utf8 && !txn_smtputf8)
		return smtp_cmd_fail(err, SMTP_CMD_E_NON_ASCII);
	return 0;
}

size_t smtp_cmd_format(const struct smtp_cmd *cmd, char *dst, size_t cap)
{
	struct smtp_out o = {dst, cap, 0};
	const struct smtp_mailbox *mb = &cmd->path;

	smtp_out_puts(&o, smtp_verb_name(cmd->verb));
	if (cmd->verb != SMTP_VERB_MAIL && cmd->verb != SMTP_VERB_RCPT) {
		if (cmd->arg.len) {
			smtp_out_puts(&o, " ");
			smtp_out_put(&o, cmd->arg.p, cmd->arg.len);
		}
		return smtp_out_end(&o);
	}
	smtp_out_puts(&o, cmd->verb == SMTP_VERB_MAIL ? " FROM:<" : " TO:<");
	if (mb->postmaster)
		smtp_out_put(&o, mb->local.p, mb->local.len); /* as written, not "Postmaster" */
	else
		smtp_out_mailbox(&o, mb);
	smtp_out_puts(&o, ">");
	for (size_t k = 0; k < cmd->nparams; k++) {
		const struct smtp_param *pm = &cmd->params[k];
		smtp_out_puts(&o, " ");
		smtp_out_put(&o, pm->key.p, pm->key.len);
		if (pm->has_value) {
			smtp_out_puts(&o, "=");
			smtp_out_put(&o, pm->value.p, pm->value.len);
		}
	}
	return smtp_out_end(&o);
}
