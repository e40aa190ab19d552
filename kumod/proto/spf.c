/* SPDX-License-Identifier: Apache-2.0 */
/* SPF record parsing, macro expansion and address matching (see spf.h). */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proto/spf.h"

#define SPF_DOMAIN_MAX 253

static const char *const result_names[] = {"none",     "neutral",   "pass",	"fail",
					   "softfail", "temperror", "permerror"};
static const char *const mech_names[] = {"all", "include", "a",	  "mx",
					 "ptr", "ip4",	   "ip6", "exists"};

const char *spf_result_name(enum spf_result r)
{
	return (unsigned)r < sizeof(result_names) / sizeof(result_names[0]) ? result_names[r]
									    : "permerror";
}

const char *spf_mech_name(enum spf_mech m)
{
	return (unsigned)m < sizeof(mech_names) / sizeof(mech_names[0]) ? mech_names[m] : "?";
}

static int is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int is_alnum(char c)
{
	return is_alpha(c) || is_digit(c);
}

int spf_is_record(const char *txt, size_t len)
{
	return len >= 6 && strncasecmp(txt, "v=spf1", 6) == 0 && (len == 6 || txt[6] == ' ');
}

/* --- macros (RFC 7208 7.1) --------------------------------------------------- */

static int is_delim(char c)
{
	return c && strchr(".-+,/_=", c) != NULL;
}

static void seterr(char *err, size_t errlen, const char *fmt, const char *what, size_t n)
{
	snprintf(err, errlen, fmt, (int)(n > 60 ? 60 : n), what);
}

/* Parses "%{" letter *digit ["r"] *delim "}" at spec[i] (i at '%'); fills the
 * parts and returns the index after '}', or -1. */
struct macro {
	char letter;
	int upper;
	unsigned keep; /* 0: all labels */
	int reverse;
	char delims[8];
};

static long parse_macro(const char *spec, size_t len, size_t i, struct macro *m)
{
	memset(m, 0, sizeof(*m));
	if (i + 3 >= len + 0 || spec[i + 1] != '{')
		return -1;
	size_t p = i + 2;
	if (p >= len || !is_alpha(spec[p]))
		return -1;
	char l = spec[p++];
	m->upper = l >= 'A' && l <= 'Z';
	m->letter = m->upper ? (char)(l - 'A' + 'a') : l;
	if (!strchr("slodiphcrtv", m->letter))
		return -1;
	size_t d0 = p;
	while (p < len && is_digit(spec[p])) {
		if (p - d0 >= 3)
			return -1;
		m->keep = m->keep * 10 + (unsigned)(spec[p] - '0');
		p++;
	}
	if (p > d0 && m->keep == 0)
		return -1; /* "%{d0}" : RFC 7208 7.1, zero is not allowed */
	if (p < len && (spec[p] == 'r' || spec[p] == 'R'))
		m->reverse = 1, p++;
	size_t nd = 0;
	while (p < len && is_delim(spec[p])) {
		if (nd + 1 < sizeof(m->delims) && !strchr(m->delims, spec[p]))
			m->delims[nd++] = spec[p];
		p++;
	}
	if (p >= len || spec[p] != '}')
		return -1;
	return (long)p + 1;
}

/* The raw value of a macro letter into v. */
static int macro_value(const struct macro *m, const struct spf_macro_ctx *c, int exp, struct buf *v)
{
	const char *s = c->sender ? c->sender : "";
	const char *at = strrchr(s, '@');
	char tmp[80];
	switch (m->letter) {
	case 's':
		buf_appends(v, s);
		return 0;
	case 'l':
		if (at && at > s)
			buf_append(v, s, (size_t)(at - s));
		else
			buf_appends(v, "postmaster");
		return 0;
	case 'o':
		buf_appends(v, at ? at + 1 : s);
		return 0;
	case 'd':
		buf_appends(v, c->domain ? c->domain : "");
		return 0;
	case 'i':
		if (!c->v6) {
			inet_ntop(AF_INET, c->ip, tmp, sizeof(tmp));
			buf_appends(v, tmp);
		} else {
			for (int i = 0; i < 16; i++)
				buf_printf(v, "%s%x.%x", i ? "." : "", c->ip[i] >> 4,
					   c->ip[i] & 15);
		}
		return 0;
	case 'c':
		if (!exp)
			return -1;
		inet_ntop(c->v6 ? AF_INET6 : AF_INET, c->ip, tmp, sizeof(tmp));
		buf_appends(v, tmp);
		return 0;
	case 'p':
		buf_appends(v, c->validated ? c->validated : "unknown");
		return 0;
	case 'h':
		buf_appends(v, c->helo ? c->helo : "unknown");
		return 0;
	case 'r':
		if (!exp)
			return -1;
		buf_appends(v, c->receiver ? c->receiver : "unknown");
		return 0;
	case 't':
		if (!exp)
			return -1;
		buf_printf(v, "%lld", (long long)c->now);
		return 0;
	case 'v':
		buf_appends(v, c->v6 ? "ip6" : "in-addr");
		return 0;
	}
	return -1;
}

struct part {
	const char *p;
	size_t n;
};

/* Splits v on the macro's delimiters, applies reverse and keep, joins with '.'
 * into out, URL-escaping when the letter was upper case. */
static void macro_transform(const struct macro *m, const struct buf *v, struct buf *out)
{
	const char *delims = m->delims[0] ? m->delims : ".";
	const char *s = v->data ? v->data + v->off : "";
	size_t n = v->len - v->off, cap = 1;
	for (size_t i = 0; i < n; i++)
		cap += strchr(delims, s[i]) != NULL;
	struct part *parts = calloc(cap, sizeof(*parts));
	if (!parts)
		return;
	size_t np = 0, start = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i == n || strchr(delims, s[i])) {
			parts[np++] = (struct part){s + start, i - start};
			start = i + 1;
		}
	}
	if (m->reverse)
		for (size_t i = 0; i < np / 2; i++) {
			struct part t = parts[i];
			parts[i] = parts[np - 1 - i];
			parts[np - 1 - i] = t;
		}
	size_t first = m->keep && m->keep < np ? np - m->keep : 0;
	for (size_t i = first; i < np; i++) {
		if (i > first)
			buf_appendc(out, '.');
		for (size_t k = 0; k < parts[i].n; k++) {
			unsigned char ch = (unsigned char)parts[i].p[k];
			if (m->upper && !(is_alnum((char)ch) || strchr("-._~", ch)))
				buf_printf(out, "%%%02X", ch);
			else
				buf_appendc(out, (char)ch);
		}
	}
	free(parts);
}

/* Drops labels from the left of out[from..] until it fits 253 octets. */
static void truncate_left(struct buf *out, size_t from)
{
	while (out->len - from > SPF_DOMAIN_MAX) {
		char *s = out->data + from;
		char *dot = memchr(s, '.', out->len - from);
		if (!dot) {
			out->len = from;
			break;
		}
		size_t drop = (size_t)(dot - s) + 1;
		memmove(s, s + drop, out->len - from - drop);
		out->len -= drop;
	}
}

int spf_macro_expand(const char *spec, size_t len, const struct spf_macro_ctx *c, int exp,
		     struct buf *out, char *err, size_t errlen)
{
	size_t from = out->len;
	struct buf v;
	buf_init(&v);
	for (size_t i = 0; i < len;) {
		char ch = spec[i];
		if (ch != '%') {
			if ((unsigned char)ch < 0x21 && !(exp && ch == ' ')) {
				seterr(err, errlen, "invalid character in '%.*s'", spec, len);
				goto fail;
			}
			buf_appendc(out, ch);
			i++;
			continue;
		}
		if (i + 1 >= len) {
			seterr(err, errlen, "'%%' at the end of '%.*s'", spec, len);
			goto fail;
		}
		char nx = spec[i + 1];
		if (nx == '%' || nx == '_' || nx == '-') {
			buf_appends(out, nx == '%' ? "%" : nx == '_' ? " " : "%20");
			i += 2;
			continue;
		}
		struct macro m;
		long end = parse_macro(spec, len, i, &m);
		buf_reset(&v);
		if (end < 0 || macro_value(&m, c, exp, &v) != 0) {
			seterr(err, errlen, "invalid macro in '%.*s'", spec, len);
			goto fail;
		}
		macro_transform(&m, &v, out);
		i = (size_t)end;
	}
	buf_free(&v);
	if (!exp)
		truncate_left(out, from);
	return 0;
fail:
	buf_free(&v);
	out->len = from;
	return -1;
}

/* --- record parsing ------------------------------------------------------------ */

/* "0" / %x31-39 0*2DIGIT, at most max. */
static int parse_cidr(const char *s, size_t n, int max)
{
	if (n == 0 || n > 3 || (n > 1 && s[0] == '0'))
		return -1;
	int v = 0;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(s[i]))
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v <= max ? v : -1;
}

/* Takes a trailing dual-cidr-length off s[0..*n): "/24", "//64", "/24//64".
 * Fills cidr4/cidr6 (defaults 32/128); -1 when malformed. ip6only: only "/N"
 * for an ip6 network. */
static int take_cidr(const char *s, size_t *n, int *cidr4, int *cidr6, int kind)
{
	*cidr4 = 32;
	*cidr6 = 128;
	size_t e = *n, d = e;
	while (d > 0 && is_digit(s[d - 1]))
		d--;
	if (d == e || d == 0 || s[d - 1] != '/')
		return 0; /* no length at the end */
	if (kind == SPF_IP4 || kind == SPF_IP6) {
		int v = parse_cidr(s + d, e - d, kind == SPF_IP4 ? 32 : 128);
		if (v < 0 || (d >= 2 && s[d - 2] == '/'))
			return -1;
		*(kind == SPF_IP4 ? cidr4 : cidr6) = v;
		*n = d - 1;
		return 0;
	}
	if (d >= 2 && s[d - 2] == '/') { /* "//N" */
		if ((*cidr6 = parse_cidr(s + d, e - d, 128)) < 0)
			return -1;
		e = d - 2;
		d = e;
		while (d > 0 && is_digit(s[d - 1]))
			d--;
		if (d == e || d == 0 || s[d - 1] != '/') {
			*n = e;
			return 0;
		}
	}
	if ((*cidr4 = parse_cidr(s + d, e - d, 32)) < 0)
		return -1;
	*n = d - 1;
	return 0;
}

/* toplabel = ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" ) alphanum ) */
static int toplabel_ok(const char *s, size_t n)
{
	if (n == 0 || !is_alnum(s[0]) || !is_alnum(s[n - 1]))
		return 0;
	int alpha = 0, dash = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '-')
			dash = 1;
		else if (!is_alnum(s[i]))
			return 0;
		alpha |= is_alpha(s[i]);
	}
	return alpha || dash;
}

/* domain-spec = macro-string domain-end; domain-end = ( "." toplabel [ "." ] ) / macro-expand */
static int domain_spec_ok(const char *s, size_t n)
{
	struct spf_macro_ctx c = {.sender = "a@b.c", .domain = "b.c"};
	struct buf tmp;
	char e[8];
	buf_init(&tmp);
	int ok = n > 0 && spf_macro_expand(s, n, &c, 0, &tmp, e, sizeof(e)) == 0;
	buf_free(&tmp);
	if (!ok)
		return 0;
	if (s[n - 1] == '}') /* a macro-expand: parse_macro checked it */
		return 1;
	if (s[n - 1] == '.')
		n--;
	size_t dot = n;
	while (dot > 0 && s[dot - 1] != '.')
		dot--;
	return dot > 0 && toplabel_ok(s + dot, n - dot);
}

static char *dup_n(const char *s, size_t n)
{
	char *d = malloc(n + 1);
	if (d) {
		memcpy(d, s, n);
		d[n] = 0;
	}
	return d;
}

static const struct {
	const char *name;
	enum spf_mech mech;
} mechs[] = {
    {"all", SPF_ALL}, {"include", SPF_INCLUDE}, {"a", SPF_A},	  {"mx", SPF_MX},
    {"ptr", SPF_PTR}, {"ip4", SPF_IP4},		{"ip6", SPF_IP6}, {"exists", SPF_EXISTS},
};

/* One directive s[0..n) into t; -1 with err. */
static int parse_directive(const char *s, size_t n, struct spf_term *t, char *err, size_t errlen)
{
	const char *w = s;
	size_t wn = n;
	memset(t, 0, sizeof(*t));
	t->qual = SPF_PASS;
	if (wn && strchr("+-~?", *w)) {
		t->qual = *w == '+'   ? SPF_PASS
			  : *w == '-' ? SPF_FAIL
			  : *w == '~' ? SPF_SOFTFAIL
				      : SPF_NEUTRAL;
		w++, wn--;
	}
	size_t nl = 0;
	while (nl < wn && is_alnum(w[nl]))
		nl++;
	size_t mi = 0;
	for (; mi < sizeof(mechs) / sizeof(mechs[0]); mi++)
		if (strlen(mechs[mi].name) == nl && strncasecmp(w, mechs[mi].name, nl) == 0)
			break;
	if (mi == sizeof(mechs) / sizeof(mechs[0]) || (nl < wn && w[nl] != ':' && w[nl] != '/')) {
		seterr(err, errlen, "unknown mechanism '%.*s'", s, n);
		return -1;
	}
	t->mech = mechs[mi].mech;
	const char *arg = w + nl;
	size_t an = wn - nl;
	if (t->mech == SPF_ALL) {
		if (an) {
			seterr(err, errlen, "invalid 'all' mechanism '%.*s'", s, n);
			return -1;
		}
		goto done;
	}
	if (t->mech != SPF_PTR && t->mech != SPF_INCLUDE && t->mech != SPF_EXISTS &&
	    take_cidr(arg, &an, &t->cidr4, &t->cidr6, (int)t->mech) < 0) {
		seterr(err, errlen, "invalid CIDR length in '%.*s'", s, n);
		return -1;
	}
	int has_colon = an > 0 && arg[0] == ':';
	if (an && !has_colon) {
		seterr(err, errlen, "invalid mechanism '%.*s'", s, n);
		return -1;
	}
	if (has_colon)
		arg++, an--;
	if (t->mech == SPF_IP4 || t->mech == SPF_IP6) {
		char ip[64];
		if (!has_colon || an == 0 || an >= sizeof(ip)) {
			seterr(err, errlen, "invalid address in '%.*s'", s, n);
			return -1;
		}
		memcpy(ip, arg, an);
		ip[an] = 0;
		if (inet_pton(t->mech == SPF_IP4 ? AF_INET : AF_INET6, ip, t->net) != 1) {
			seterr(err, errlen, "invalid address in '%.*s'", s, n);
			return -1;
		}
		goto done;
	}
	int required = t->mech == SPF_INCLUDE || t->mech == SPF_EXISTS;
	if ((required && !has_colon) || (has_colon && !domain_spec_ok(arg, an))) {
		seterr(err, errlen, "invalid domain-spec in '%.*s'", s, n);
		return -1;
	}
	if (has_colon)
		t->domain_spec = dup_n(arg, an);
done:
	t->text = dup_n(s, n);
	return 0;
}

/* name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ) */
static int modifier_name_ok(const char *s, size_t n)
{
	if (n == 0 || !is_alpha(s[0]))
		return 0;
	for (size_t i = 1; i < n; i++)
		if (!is_alnum(s[i]) && !strchr("-_.", s[i]))
			return 0;
	return 1;
}

static int parse_modifier(const char *s, size_t n, size_t eq, struct spf_record *r, char *err,
			  size_t errlen)
{
	const char *v = s + eq + 1;
	size_t vn = n - eq - 1;
	if (!modifier_name_ok(s, eq)) {
		seterr(err, errlen, "invalid modifier '%.*s'", s, n);
		return -1;
	}
	int redirect = eq == 8 && strncasecmp(s, "redirect", 8) == 0;
	int exp = eq == 3 && strncasecmp(s, "exp", 3) == 0;
	if (!redirect && !exp) { /* unknown-modifier: its macro-string must be valid */
		struct spf_macro_ctx c = {.sender = "a@b.c", .domain = "b.c"};
		struct buf tmp;
		char e[8];
		buf_init(&tmp);
		int ok = spf_macro_expand(v, vn, &c, 0, &tmp, e, sizeof(e)) == 0;
		buf_free(&tmp);
		if (!ok)
			seterr(err, errlen, "invalid modifier value in '%.*s'", s, n);
		return ok ? 0 : -1;
	}
	char **slot = redirect ? &r->redirect : &r->exp;
	if (*slot) {
		seterr(err, errlen, "modifier given twice: '%.*s'", s, n);
		return -1;
	}
	if (!domain_spec_ok(v, vn)) {
		seterr(err, errlen, "invalid domain-spec in '%.*s'", s, n);
		return -1;
	}
	*slot = dup_n(v, vn);
	return 0;
}

int spf_record_parse(const char *txt, size_t len, struct spf_record *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (!spf_is_record(txt, len)) {
		snprintf(err, errlen, "not an SPF record (no 'v=spf1')");
		return -1;
	}
	size_t cap = 0;
	for (size_t i = 6; i < len; i++)
		cap += txt[i] == ' ';
	out->terms = calloc(cap ? cap : 1, sizeof(*out->terms));
	if (!out->terms) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 6; i < len;) {
		while (i < len && txt[i] == ' ')
			i++;
		size_t s = i;
		while (i < len && txt[i] != ' ')
			i++;
		if (i == s)
			break;
		const char *t = txt + s;
		size_t n = i - s, stop = 0;
		while (stop < n && t[stop] != ':' && t[stop] != '/' && t[stop] != '=')
			stop++;
		int rc = stop < n && t[stop] == '='
			     ? parse_modifier(t, n, stop, out, err, errlen)
			     : parse_directive(t, n, &out->terms[out->nterms], err, errlen);
		if (rc < 0) {
			if (!(stop < n && t[stop] == '='))
				out->nterms++; /* its strings, if any, are freed below */
			spf_record_free(out);
			return -1;
		}
		if (!(stop < n && t[stop] == '='))
			out->nterms++;
	}
	return 0;
}

void spf_record_free(struct spf_record *r)
{
	for (size_t i = 0; r->terms && i < r->nterms; i++) {
		free(r->terms[i].domain_spec);
		free(r->terms[i].text);
	}
	free(r->terms);
	free(r->redirect);
	free(r->exp);
	memset(r, 0, sizeof(*r));
}

/* --- addresses and names -------------------------------------------------------- */

int spf_ip_match(int v6, const unsigned char *ip, int net_v6, const unsigned char *net, int cidr)
{
	if (v6 != net_v6 || cidr < 0 || cidr > (v6 ? 128 : 32))
		return 0;
	int full = cidr / 8, rest = cidr % 8;
	if (memcmp(ip, net, (size_t)full) != 0)
		return 0;
	if (!rest)
		return 1;
	unsigned char mask = (unsigned char)(0xff << (8 - rest));
	return (ip[full] & mask) == (net[full] & mask);
}

int spf_domain_valid(const char *d)
{
	size_t n = strlen(d);
	if (n && d[n - 1] == '.')
		n--;
	if (n == 0 || n > SPF_DOMAIN_MAX)
		return 0;
	size_t labels = 0, run = 0;
	int digits_only = 1; /* of the current label */
	for (size_t i = 0; i <= n; i++) {
		if (i == n || d[i] == '.') {
			if (run == 0 || run > 63)
				return 0;
			labels++;
			if (i == n && digits_only)
				return 0; /* "192.0.2.1": an address, not a name (no toplabel) */
			run = 0;
			digits_only = 1;
			continue;
		}
		if ((unsigned char)d[i] <= ' ' || (unsigned char)d[i] >= 127)
			return 0;
		digits_only &= is_digit(d[i]);
		run++;
	}
	return labels >= 2;
}
