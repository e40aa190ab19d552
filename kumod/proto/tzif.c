/* SPDX-License-Identifier: Apache-2.0 */
/* TZif files and POSIX TZ rules (see tzif.h), written from RFC 8536 and
 * POSIX's TZ variable. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/xalloc.h"
#include "proto/tzif.h"

#define TZIF_HDR 44
#define DAY_S 86400

struct tzif_zone {
	size_t ntrans, ntypes;
	int64_t *trans;		  /* ascending */
	uint8_t *idx;		  /* type of each transition */
	struct tzif_local *types; /* abbreviations copied in */
	int has_rule;
	struct tzif_rule rule;
};

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const uint8_t *p)
{
	return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

/* --- POSIX TZ rules -------------------------------------------------------- */

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* The year of day (days since the epoch). */
static int64_t year_of_day(int64_t z)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	int m = (int)(mp < 10 ? mp + 3 : mp - 9);
	return yoe + era * 400 + (m <= 2);
}

static int leap(int64_t y)
{
	return y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
}

static int64_t floordiv(int64_t a, int64_t b)
{
	return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/* The day (since the epoch) a rule date falls on in year y. */
static int64_t rule_day(const struct tzif_date *d, int64_t y)
{
	int64_t jan1 = days_from_civil(y, 1, 1);
	if (d->kind == 'J')
		return jan1 + d->n - 1 + (leap(y) && d->n >= 60);
	if (d->kind == 'n')
		return jan1 + d->n;
	static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int64_t first = days_from_civil(y, d->m, 1);
	int wd1 = (int)((first % 7 + 11) % 7); /* 0 Sunday; 1970-01-01 was a Thursday */
	int day = 1 + (d->d - wd1 + 7) % 7 + (d->w - 1) * 7;
	int len = mdays[d->m - 1] + (d->m == 2 && leap(y));
	while (day > len)
		day -= 7;
	return first + day - 1;
}

/* A zone name: alphabetic (3+), or <...> of alphanumerics, '+' and '-'. */
static int parse_name(const char **p, const char *e, char *out, size_t cap)
{
	const char *s = *p, *b, *f;
	if (s < e && *s == '<') {
		b = ++s;
		while (s < e && *s != '>' &&
		       ((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
			(*s >= '0' && *s <= '9') || *s == '+' || *s == '-'))
			s++;
		if (s >= e || *s != '>')
			return -1;
		f = s++;
	} else {
		b = s;
		while (s < e && ((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z')))
			s++;
		f = s;
	}
	if (f - b < 3 || (size_t)(f - b) >= cap)
		return -1;
	memcpy(out, b, (size_t)(f - b));
	out[f - b] = 0;
	*p = s;
	return 0;
}

/* [+-]h[h[h]][:mm[:ss]] with hours up to maxh: seconds, sign applied. */
static int parse_hms(const char **p, const char *e, int maxh, int32_t *out)
{
	const char *s = *p;
	int sign = 1;
	if (s < e && (*s == '+' || *s == '-'))
		sign = *s++ == '-' ? -1 : 1;
	int32_t v[3] = {0, 0, 0};
	for (int part = 0; part < 3; part++) {
		if (part && (s >= e || *s != ':'))
			break;
		if (part)
			s++;
		int nd = 0;
		while (s < e && *s >= '0' && *s <= '9' && nd < 3) {
			v[part] = v[part] * 10 + (*s++ - '0');
			nd++;
		}
		if (!nd || (part && (nd != 2 || v[part] > 59)))
			return -1;
	}
	if (v[0] > maxh)
		return -1;
	*out = sign * (v[0] * 3600 + v[1] * 60 + v[2]);
	*p = s;
	return 0;
}

static int parse_num(const char **p, const char *e, int lo, int hi, int *out)
{
	const char *s = *p;
	int v = 0, nd = 0;
	while (s < e && *s >= '0' && *s <= '9' && nd < 4) {
		v = v * 10 + (*s++ - '0');
		nd++;
	}
	if (!nd || v < lo || v > hi)
		return -1;
	*out = v;
	*p = s;
	return 0;
}

static int parse_date(const char **p, const char *e, struct tzif_date *d)
{
	const char *s = *p;
	memset(d, 0, sizeof(*d));
	d->secs = 7200;
	if (s < e && *s == 'J') {
		s++;
		d->kind = 'J';
		if (parse_num(&s, e, 1, 365, &d->n))
			return -1;
	} else if (s < e && *s == 'M') {
		s++;
		d->kind = 'M';
		if (parse_num(&s, e, 1, 12, &d->m) || s >= e || *s++ != '.' ||
		    parse_num(&s, e, 1, 5, &d->w) || s >= e || *s++ != '.' ||
		    parse_num(&s, e, 0, 6, &d->d))
			return -1;
	} else {
		d->kind = 'n';
		if (parse_num(&s, e, 0, 365, &d->n))
			return -1;
	}
	if (s < e && *s == '/') {
		s++;
		if (parse_hms(&s, e, 167, &d->secs))
			return -1;
	}
	*p = s;
	return 0;
}

int tzif_rule_parse(const char *str, size_t len, struct tzif_rule *r)
{
	const char *s = str, *e = str + len;
	int32_t off;
	memset(r, 0, sizeof(*r));
	if (parse_name(&s, e, r->std.abbr, sizeof(r->std.abbr)) || parse_hms(&s, e, 24, &off))
		return -1;
	r->std.utoff = -off; /* POSIX offsets count west of Greenwich */
	if (s == e)
		return 0;
	if (parse_name(&s, e, r->dst.abbr, sizeof(r->dst.abbr)))
		return -1;
	r->has_dst = 1;
	r->dst.isdst = 1;
	r->dst.utoff = r->std.utoff + 3600;
	if (s < e && *s != ',') {
		if (parse_hms(&s, e, 24, &off))
			return -1;
		r->dst.utoff = -off;
	}
	if (s == e) { /* no rule: the US rules, as glibc assumes */
		r->start = (struct tzif_date){.kind = 'M', .m = 3, .w = 2, .d = 0, .secs = 7200};
		r->end = (struct tzif_date){.kind = 'M', .m = 11, .w = 1, .d = 0, .secs = 7200};
		return 0;
	}
	if (*s++ != ',' || parse_date(&s, e, &r->start) || s >= e || *s++ != ',' ||
	    parse_date(&s, e, &r->end) || s != e)
		return -1;
	return 0;
}

void tzif_rule_lookup(const struct tzif_rule *r, int64_t t, struct tzif_local *out)
{
	if (!r->has_dst) {
		*out = r->std;
		return;
	}
	int64_t y = year_of_day(floordiv(t + r->std.utoff, DAY_S));
	/* the changes of year y, as instants: start in standard time, end in DST */
	int64_t start = rule_day(&r->start, y) * DAY_S + r->start.secs - r->std.utoff;
	int64_t end = rule_day(&r->end, y) * DAY_S + r->end.secs - r->dst.utoff;
	int dst = start < end ? t >= start && t < end : !(t >= end && t < start);
	*out = dst ? r->dst : r->std;
}

/* --- TZif ------------------------------------------------------------------- */

struct tzif_counts {
	uint32_t isut, isstd, leap, time, type, chr;
};

static int read_header(const uint8_t *p, size_t len, struct tzif_counts *c, int *version)
{
	if (len < TZIF_HDR || memcmp(p, "TZif", 4) != 0)
		return -1;
	*version = p[4] ? p[4] - '0' : 1;
	c->isut = be32(p + 20);
	c->isstd = be32(p + 24);
	c->leap = be32(p + 28);
	c->time = be32(p + 32);
	c->type = be32(p + 36);
	c->chr = be32(p + 40);
	return 0;
}

/* The data block's size for time values of tsz bytes, or 0 when the counts
 * are out of range (any count past 2^20 is: real files are far smaller). */
static size_t block_size(const struct tzif_counts *c, size_t tsz)
{
	const uint32_t lim = 1u << 20;
	if (c->isut > lim || c->isstd > lim || c->leap > lim || c->time > lim || c->type > 256 ||
	    c->chr > lim)
		return 0;
	return (size_t)c->time * (tsz + 1) + (size_t)c->type * 6 + c->chr +
	       (size_t)c->leap * (tsz + 4) + c->isstd + c->isut;
}

void tzif_free(struct tzif_zone *z)
{
	if (!z)
		return;
	free(z->trans);
	free(z->idx);
	free(z->types);
	free(z);
}

int tzif_parse(const void *data, size_t len, struct tzif_zone **out, char *err, size_t errlen)
{
	const uint8_t *p = data;
	struct tzif_counts c;
	int version;
	*out = NULL;
	if (read_header(p, len, &c, &version) != 0) {
		snprintf(err, errlen, "not a TZif file");
		return -1;
	}
	size_t tsz = 4, off = TZIF_HDR, blk = block_size(&c, 4);
	if (!blk && (c.time || c.type || c.chr)) {
		snprintf(err, errlen, "TZif counts out of range");
		return -1;
	}
	if (version >= 2) { /* skip the 32-bit block: the 64-bit one follows */
		if (blk > len - off || read_header(p + off + blk, len - off - blk, &c, &version)) {
			snprintf(err, errlen, "TZif version 2+ header missing");
			return -1;
		}
		off += blk + TZIF_HDR;
		tsz = 8;
		blk = block_size(&c, 8);
	}
	if (c.type == 0 || c.chr == 0 || blk == 0 || blk > len - off ||
	    (c.isut && c.isut != c.type) || (c.isstd && c.isstd != c.type)) {
		snprintf(err, errlen, "TZif counts do not match the file (%zu bytes)", len);
		return -1;
	}
	const uint8_t *tp = p + off, *ip = tp + (size_t)c.time * tsz, *yp = ip + c.time,
		      *cp = yp + (size_t)c.type * 6;
	struct tzif_zone *z = xcalloc(1, sizeof(*z));
	z->ntrans = c.time;
	z->ntypes = c.type;
	z->trans = xcalloc(c.time ? c.time : 1, sizeof(*z->trans));
	z->idx = xcalloc(c.time ? c.time : 1, 1);
	z->types = xcalloc(c.type, sizeof(*z->types));
	for (size_t i = 0; i < c.time; i++) {
		z->trans[i] = tsz == 8 ? be64(tp + i * 8) : (int32_t)be32(tp + i * 4);
		z->idx[i] = ip[i];
		if (ip[i] >= c.type || (i && z->trans[i] <= z->trans[i - 1])) {
			snprintf(err, errlen, "TZif transition %zu is out of order or of no type",
				 i);
			goto fail;
		}
	}
	for (size_t i = 0; i < c.type; i++) {
		const uint8_t *y = yp + i * 6;
		int32_t utoff = (int32_t)be32(y);
		if (utoff < -89999 || utoff > 93599 || y[4] > 1 || y[5] >= c.chr) {
			snprintf(err, errlen, "TZif local time type %zu is invalid", i);
			goto fail;
		}
		z->types[i].utoff = utoff;
		z->types[i].isdst = y[4];
		size_t n = strnlen((const char *)cp + y[5], c.chr - y[5]);
		if (n >= sizeof(z->types[i].abbr))
			n = sizeof(z->types[i].abbr) - 1;
		memcpy(z->types[i].abbr, cp + y[5], n);
	}
	off += blk;
	if (version >= 2 && off < len) { /* footer: "\nTZ string\n" */
		const char *f = (const char *)p + off;
		const char *nl = len - off > 1 ? memchr(f + 1, '\n', len - off - 1) : NULL;
		if (f[0] != '\n' || !nl) {
			snprintf(err, errlen, "TZif footer is not a newline-enclosed TZ string");
			goto fail;
		}
		if (nl > f + 1) {
			if (tzif_rule_parse(f + 1, (size_t)(nl - f - 1), &z->rule) != 0) {
				snprintf(err, errlen, "TZif footer '%.*s' is not a POSIX TZ rule",
					 (int)(nl - f - 1 > 60 ? 60 : nl - f - 1), f + 1);
				goto fail;
			}
			z->has_rule = 1;
		}
	}
	*out = z;
	return 0;
fail:
	tzif_free(z);
	return -1;
}

void tzif_lookup(const struct tzif_zone *z, int64_t t, struct tzif_local *out)
{
	if (z->ntrans == 0 || t >= z->trans[z->ntrans - 1]) {
		if (z->has_rule) {
			tzif_rule_lookup(&z->rule, t, out);
			return;
		}
		*out = z->types[z->ntrans ? z->idx[z->ntrans - 1] : 0];
		return;
	}
	if (t < z->trans[0]) { /* RFC 8536 3.2: the first type */
		*out = z->types[0];
		return;
	}
	size_t lo = 0, hi = z->ntrans - 1; /* trans[lo] <= t < trans[hi] */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (z->trans[mid] <= t)
			lo = mid;
		else
			hi = mid;
	}
	*out = z->types[z->idx[lo]];
}

int tzif_is_utc(const struct tzif_zone *z)
{
	for (size_t i = 0; i < z->ntypes; i++)
		if (z->types[i].utoff || z->types[i].isdst)
			return 0;
	return !z->has_rule || (!z->rule.has_dst && z->rule.std.utoff == 0);
}

static int32_t offset_at(const struct tzif_zone *z, int64_t t)
{
	struct tzif_local l;
	tzif_lookup(z, t, &l);
	return l.utoff;
}

int64_t tzif_local_to_utc(const struct tzif_zone *z, int64_t local)
{
	/* the offsets on either side of any change near local (changes are
	 * days apart), each tried; both fit in a fold, neither in a gap */
	int32_t before = offset_at(z, local - DAY_S), after = offset_at(z, local + DAY_S);
	int64_t ub = local - before, ua = local - after;
	int okb = offset_at(z, ub) == before, oka = offset_at(z, ua) == after;
	if (okb && oka)
		return ub < ua ? ub : ua;
	if (oka)
		return ua;
	return ub;
}
