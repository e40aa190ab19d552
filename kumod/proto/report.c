/* SPDX-License-Identifier: Apache-2.0 */
/* MIME entities, header fields and typed field values of delivery and feedback reports. */
#include "proto/report.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "base/ascii.h"
#include "base/base64.h"
#include "proto/mime_lex.h"
#include "proto/rfc5322.h"

/* --- MIME entity ----------------------------------------------------------------- */

_Static_assert(REPORT_BOUNDARY_MAX == MIME_LEX_VALUE_MAX, "a boundary is a whole parameter value");

/* Keeps the parameters a report reader needs. */
static void content_type_param(void *ctx, const char *name, size_t len, const char *val)
{
	struct report_part *p = ctx;
	if (len == 8 && strncasecmp(name, "boundary", 8) == 0)
		snprintf(p->boundary, sizeof(p->boundary), "%s", val);
	else if (len == 11 && strncasecmp(name, "report-type", 11) == 0)
		ascii_lower_copy(p->report_type, sizeof(p->report_type), val, strlen(val));
}

static void parse_content_type(struct report_part *p, const char *v, size_t n)
{
	char type[48] = "", sub[48] = "";
	mime_lex_content_type(v, n, type, sizeof(type), sub, sizeof(sub), content_type_param, p);
	if (type[0] && sub[0])
		snprintf(p->type, sizeof(p->type), "%s/%s", type, sub);
}

void report_part_parse(const char *p, size_t n, struct report_part *out)
{
	memset(out, 0, sizeof(*out));
	size_t hend = rfc5322_header_end(p, n), pos = 0;
	out->hdr = p;
	out->hdr_len = hend;
	out->body = p + hend;
	out->body_len = n - hend;
	struct rfc5322_header h;
	int seen_ct = 0;
	while (rfc5322_header_next(p, hend, &pos, &h)) {
		if (h.name_len == 12 && strncasecmp(h.name, "Content-Type", 12) == 0 && !seen_ct) {
			seen_ct = 1;
			parse_content_type(out, h.raw_value, h.raw_len);
		} else if (h.name_len == 25 &&
			   strncasecmp(h.name, "Content-Transfer-Encoding", 25) == 0) {
			mime_lex_first_token(h.raw_value, h.raw_len, out->cte, sizeof(out->cte));
		}
	}
	/* the header section ends before its blank line */
	if (hend && hend < n + 1) {
		size_t e = hend;
		if (e && p[e - 1] == '\n')
			e--;
		if (e && p[e - 1] == '\r')
			e--;
		out->hdr_len = e < hend ? e : hend;
	}
}

/* --- multipart children -------------------------------------------------------------- */

/* End of the line at i (after its LF, or n) and, in *ce, where its content ends. */
static size_t line_end(const char *p, size_t n, size_t i, size_t *ce)
{
	size_t e = mime_lex_line_end(p, n, i);
	*ce = mime_lex_content_end(p, i, e);
	return e;
}

int report_next_child(const struct report_part *parent, size_t *pos, struct report_part *child)
{
	const char *b = parent->body;
	size_t n = parent->body_len, bl = strlen(parent->boundary), i = *pos, ce;
	if (!bl || i >= n)
		return 0;
	/* find the delimiter that opens the next part */
	for (;;) {
		if (i >= n)
			return 0;
		size_t e = line_end(b, n, i, &ce);
		int d = mime_lex_delimiter(b + i, ce - i, parent->boundary, bl);
		i = e;
		if (d == 2) {
			*pos = n;
			return 0;
		}
		if (d == 1)
			break;
	}
	size_t start = i;
	for (;;) {
		if (i >= n) { /* truncated: the part runs to the end */
			report_part_parse(b + start, n - start, child);
			*pos = n;
			return 1;
		}
		size_t e = line_end(b, n, i, &ce);
		if (mime_lex_delimiter(b + i, ce - i, parent->boundary, bl)) {
			/* RFC 2046 gives the line break before a delimiter to the
			 * delimiter; KumoMTA keeps it in the part, and so do we
			 * (original_message ends with it, as in its records) */
			report_part_parse(b + start, i - start, child);
			*pos = i;
			return 1;
		}
		i = e;
	}
}

/* --- transfer decoding ------------------------------------------------------------ */

/* Soft line breaks removed, =XX decoded; a malformed escape is kept as is. */
static void qp_decode(const char *p, size_t n, struct buf *out)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] != '=') {
			buf_appendc(out, p[i]);
			continue;
		}
		size_t j = i + 1;
		while (j < n && (p[j] == ' ' || p[j] == '\t'))
			j++;
		if (j < n && p[j] == '\n') {
			i = j;
			continue;
		}
		if (j + 1 < n && p[j] == '\r' && p[j + 1] == '\n') {
			i = j + 1;
			continue;
		}
		int hi = i + 1 < n ? hex_digit_value((unsigned char)p[i + 1]) : -1;
		int lo = i + 2 < n ? hex_digit_value((unsigned char)p[i + 2]) : -1;
		if (hi < 0 || lo < 0) {
			buf_appendc(out, '=');
			continue;
		}
		buf_appendc(out, (char)(hi * 16 + lo));
		i += 2;
	}
}

void report_decode_body(const struct report_part *part, struct buf *out)
{
	if (strcmp(part->cte, "base64") == 0)
		base64_decode_lenient(part->body, part->body_len, out);
	else if (strcmp(part->cte, "quoted-printable") == 0)
		qp_decode(part->body, part->body_len, out);
	else
		buf_append(out, part->body, part->body_len);
}

/* --- fields --------------------------------------------------------------------- */

static json_t *lossy_string(const char *p, size_t n)
{
	json_t *s = json_stringn(p, n);
	if (s)
		return s;
	struct buf b;
	buf_init(&b);
	buf_append_utf8_lossy(&b, p, n);
	s = json_stringn(b.data ? b.data : "", b.len);
	buf_free(&b);
	return s ? s : json_string("");
}

json_t *report_fields(const char *p, size_t n)
{
	json_t *o = json_object();
	size_t hend = rfc5322_header_end(p, n), pos = 0;
	struct rfc5322_header h;
	struct buf v;
	buf_init(&v);
	while (rfc5322_header_next(p, hend, &pos, &h)) {
		char name[128];
		ascii_lower_copy(name, sizeof(name), h.name, h.name_len);
		buf_reset(&v);
		rfc5322_unfold(h.raw_value, h.raw_len, &v);
		json_t *a = json_object_get(o, name);
		if (!a) {
			a = json_array();
			json_object_set_new(o, name, a);
		}
		json_array_append_new(a, lossy_string(v.data ? v.data : "", v.len));
	}
	buf_free(&v);
	return o;
}

int report_take_single(json_t *fields, const char *name, json_t **hold, const char **value,
		       char *err, size_t errlen)
{
	json_t *a = json_object_get(fields, name);
	*hold = NULL;
	*value = NULL;
	if (!a)
		return 0;
	if (json_array_size(a) != 1) {
		snprintf(err, errlen, "header %s should have only a single value", name);
		return -1;
	}
	*hold = json_incref(json_array_get(a, 0));
	*value = json_string_value(*hold);
	json_object_del(fields, name);
	return 1;
}

json_t *report_take_all(json_t *fields, const char *name)
{
	json_t *a = json_object_get(fields, name);
	if (!a)
		return json_array();
	json_incref(a);
	json_object_del(fields, name);
	return a;
}

/* --- typed values ----------------------------------------------------------------- */

static const char *skip_ws(const char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	return s;
}

/* Skips white space and comments. */
static const char *skip_cfws_str(const char *s)
{
	size_t n = strlen(s);
	return s + mime_lex_skip_cfws(s, n, 0);
}

static int read_num(const char **s, int min_digits, int max_digits, int *out)
{
	int v = 0, d = 0;
	while (isdigit((unsigned char)**s) && d < max_digits) {
		v = v * 10 + (**s - '0');
		(*s)++;
		d++;
	}
	if (d < min_digits)
		return -1;
	*out = v;
	return 0;
}

/* Zone offset in seconds east of UTC; -1 when unknown. */
static int zone_offset(const char *z, size_t n, long *off)
{
	static const struct {
		const char *name;
		int hours;
	} zones[] = {{"UT", 0},	  {"UTC", 0},  {"GMT", 0},  {"Z", 0},	 {"EST", -5}, {"EDT", -4},
		     {"CST", -6}, {"CDT", -5}, {"MST", -7}, {"MDT", -6}, {"PST", -8}, {"PDT", -7}};
	if (n == 5 && (z[0] == '+' || z[0] == '-')) {
		for (size_t i = 1; i < 5; i++)
			if (!isdigit((unsigned char)z[i]))
				return -1;
		int hh = (z[1] - '0') * 10 + (z[2] - '0'), mm = (z[3] - '0') * 10 + (z[4] - '0');
		if (mm > 59)
			return -1;
		*off = (z[0] == '-' ? -1 : 1) * (long)(hh * 3600 + mm * 60);
		return 0;
	}
	for (size_t i = 0; i < sizeof(zones) / sizeof(zones[0]); i++)
		if (strlen(zones[i].name) == n && strncasecmp(z, zones[i].name, n) == 0) {
			*off = zones[i].hours * 3600L;
			return 0;
		}
	return -1;
}

int report_parse_date(const char *s, char out[21])
{
	static const char months[] = "janfebmaraprmayjunjulaugsepoctnovdec";
	struct tm tm = {0};
	int day, year, hh, mm, ss = 0;
	s = skip_cfws_str(s);
	if (isalpha((unsigned char)*s)) { /* day-of-week "," */
		while (isalpha((unsigned char)*s))
			s++;
		s = skip_cfws_str(s);
		if (*s != ',')
			return -1;
		s = skip_cfws_str(s + 1);
	}
	if (read_num(&s, 1, 2, &day) != 0)
		return -1;
	s = skip_cfws_str(s);
	int mon = -1;
	for (int i = 0; i < 12; i++)
		if (strncasecmp(s, months + 3 * i, 3) == 0)
			mon = i;
	if (mon < 0)
		return -1;
	s = skip_cfws_str(s + 3);
	const char *ys = s;
	if (read_num(&s, 2, 4, &year) != 0)
		return -1;
	if (s - ys == 2)
		year += year < 50 ? 2000 : 1900;
	else if (s - ys == 3)
		year += 1900;
	s = skip_cfws_str(s);
	if (read_num(&s, 1, 2, &hh) != 0 || *s != ':')
		return -1;
	s++;
	if (read_num(&s, 2, 2, &mm) != 0)
		return -1;
	if (*s == ':') {
		s++;
		if (read_num(&s, 2, 2, &ss) != 0)
			return -1;
	}
	s = skip_ws(s);
	size_t zl = 0;
	while (s[zl] && !mime_lex_is_ws(s[zl]) && s[zl] != '(')
		zl++;
	long off = 0;
	if (zone_offset(s, zl, &off) != 0)
		return -1;
	if (*skip_cfws_str(s + zl))
		return -1;
	if (day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60 || year < 1900 || year > 9999)
		return -1;
	tm.tm_year = year - 1900;
	tm.tm_mon = mon;
	tm.tm_mday = day;
	tm.tm_hour = hh;
	tm.tm_min = mm;
	tm.tm_sec = ss > 59 ? 59 : ss;
	time_t t = timegm(&tm) - off;
	struct tm u;
	if (!gmtime_r(&t, &u))
		return -1;
	if (strftime(out, 21, "%Y-%m-%dT%H:%M:%SZ", &u) != 20)
		return -1;
	return 0;
}

static json_t *trimmed(const char *s, size_t n)
{
	while (n && mime_lex_is_ws(*s)) {
		s++;
		n--;
	}
	while (n && mime_lex_is_ws(s[n - 1]))
		n--;
	return lossy_string(s, n);
}

json_t *report_remote_mta(const char *s, char *err, size_t errlen)
{
	const char *semi = strchr(s, ';');
	if (!semi) {
		snprintf(err, errlen, "expected 'name-type; name', got %.200s", s);
		return NULL;
	}
	return json_pack("{s:o,s:o}", "mta_type", trimmed(s, (size_t)(semi - s)), "name",
			 trimmed(semi + 1, strlen(semi + 1)));
}

int report_envelope_address(const char *s, struct buf *out, char *err, size_t errlen)
{
	size_t n = strlen(s);
	while (n && mime_lex_is_ws(*s)) {
		s++;
		n--;
	}
	while (n && mime_lex_is_ws(s[n - 1]))
		n--;
	if (n >= 2 && s[0] == '<' && s[n - 1] == '>') {
		s++;
		n -= 2;
	}
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= ' ' || s[i] == '<' || s[i] == '>' || s[i] == 127) {
			snprintf(err, errlen, "invalid envelope address '%.200s'", s);
			return -1;
		}
	const char *at = memchr(s, '@', n);
	int postmaster = n == 10 && strncasecmp(s, "postmaster", 10) == 0;
	if (n && !postmaster && (!at || at == s || at == s + n - 1)) {
		snprintf(err, errlen, "invalid envelope address '%.*s'", (int)(n > 200 ? 200 : n),
			 s);
		return -1;
	}
	buf_append(out, s, n);
	return 0;
}

json_t *report_lf_string(const char *p, size_t n)
{
	struct buf b;
	buf_init(&b);
	for (size_t i = 0; i < n; i++)
		if (!(p[i] == '\r' && i + 1 < n && p[i + 1] == '\n'))
			buf_appendc(&b, p[i]);
	json_t *s = lossy_string(b.data ? b.data : "", b.len);
	buf_free(&b);
	return s;
}
