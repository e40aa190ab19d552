/* SPDX-License-Identifier: Apache-2.0 */
/* Scheduling specs (see sched_spec.h). */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "proto/duration.h"
#include "proto/sched_spec.h"
#include "proto/tzif.h"

#define DAY_MS 86400000ull

static const char *const day_names[] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
					"Friday", "Saturday", "Sunday"};

/* "Mon,Tue,Thursday": a bit mask, or -1. */
static int parse_dow(const char *s, char *bad, size_t badlen)
{
	unsigned mask = 0;
	for (;;) {
		const char *comma = strchr(s, ',');
		size_t n = comma ? (size_t)(comma - s) : strlen(s);
		int found = -1;
		for (int d = 0; d < 7; d++)
			if ((n == 3 || n == strlen(day_names[d])) &&
			    strncasecmp(s, day_names[d], n) == 0)
				found = d;
		if (found < 0) {
			snprintf(bad, badlen, "%.*s", (int)(n > 40 ? 40 : n), s);
			return -1;
		}
		mask |= 1u << found;
		if (!comma)
			return (int)mask;
		s = comma + 1;
	}
}

/* "HH:MM:SS" or "HH:MM" to seconds, or -1. */
static long parse_tod(const char *s)
{
	int h, m, sec = 0, n = 0;
	size_t len = strlen(s);
	if (len == 8 && sscanf(s, "%2d:%2d:%2d%n", &h, &m, &sec, &n) == 3 && n == 8) {
	} else if (len == 5 && sscanf(s, "%2d:%2d%n", &h, &m, &n) == 2 && n == 5) {
	} else
		return -1;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || s[i] == ':'))
			return -1;
	if (h > 23 || m > 59 || sec > 59)
		return -1;
	return h * 3600L + m * 60L + sec;
}

static int utc_zone(const char *tz)
{
	static const char *const utc[] = {"UTC",  "Etc/UTC",  "GMT",	   "Etc/GMT",	   "Z",
					  "Zulu", "Etc/Zulu", "Universal", "Etc/Universal"};
	for (size_t i = 0; i < sizeof(utc) / sizeof(utc[0]); i++)
		if (strcmp(tz, utc[i]) == 0)
			return 1;
	return 0;
}

/* An IANA zone name as a relative path under the zoneinfo directory:
 * letters, digits, '/', '_', '-', '+' and '.', no empty, "." or ".."
 * component. */
static int zone_name_ok(const char *tz)
{
	size_t n = strlen(tz);
	if (!n || n >= 64 || tz[0] == '/' || tz[n - 1] == '/')
		return 0;
	for (const char *p = tz; *p; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		      (*p >= '0' && *p <= '9') || strchr("/_-+.", *p)))
			return 0;
	for (const char *c = tz; c; c = strchr(c, '/') ? strchr(c, '/') + 1 : NULL) {
		size_t len = strcspn(c, "/");
		if (!len || (c[0] == '.' && (len == 1 || (len == 2 && c[1] == '.'))))
			return 0;
	}
	return 1;
}

int sched_spec_needs_zone(const struct sched_spec *s)
{
	return s->has_window && !utc_zone(s->tz);
}

int sched_spec_from_json(json_t *obj, struct sched_spec *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (!json_is_object(obj)) {
		snprintf(err, errlen, "scheduling must be an object");
		return -1;
	}
	const char *k;
	json_t *v;
	int have_dow = 0, have_tz = 0, have_start = 0, have_end = 0;
	json_object_foreach(obj, k, v)
	{
		const char *s = json_string_value(v);
		if (strcmp(k, "first_attempt") && strcmp(k, "expires") && strcmp(k, "dow") &&
		    strcmp(k, "tz") && strcmp(k, "start") && strcmp(k, "end")) {
			snprintf(err, errlen, "invalid field name %.60s", k);
			return -1;
		}
		if (!s) {
			snprintf(err, errlen, "%s: expected a string", k);
			return -1;
		}
		if (!strcmp(k, "first_attempt") || !strcmp(k, "expires")) {
			uint64_t ms;
			if (rfc3339_parse_ms(s, &ms) != 0) {
				snprintf(err, errlen, "%s: '%.60s' is not an RFC 3339 date-time", k,
					 s);
				return -1;
			}
			if (k[0] == 'f')
				out->has_first = 1, out->first_ms = ms;
			else
				out->has_expires = 1, out->expires_ms = ms;
		} else if (!strcmp(k, "dow")) {
			char bad[48];
			int mask = parse_dow(s, bad, sizeof(bad));
			if (mask < 0) {
				snprintf(err, errlen, "dow: invalid day '%s'", bad);
				return -1;
			}
			out->dow = (unsigned)mask;
			have_dow = 1;
		} else if (!strcmp(k, "tz")) {
			if (!utc_zone(s) && !zone_name_ok(s)) {
				snprintf(err, errlen, "tz: '%.60s' is not a time zone name", s);
				return -1;
			}
			snprintf(out->tz, sizeof(out->tz), "%s", s);
			have_tz = 1;
		} else {
			long t = parse_tod(s);
			if (t < 0) {
				snprintf(err, errlen, "%s: '%.60s' is not a time of day (HH:MM:SS)",
					 k, s);
				return -1;
			}
			if (k[0] == 's')
				out->start_s = (uint32_t)t, have_start = 1;
			else
				out->end_s = (uint32_t)t, have_end = 1;
		}
	}
	int nwin = have_dow + have_tz + have_start + have_end;
	if (nwin && nwin < 4) {
		const char *names[] = {"dow", "tz", "start", "end"};
		int have[] = {have_dow, have_tz, have_start, have_end};
		char missing[40] = "";
		for (int i = 0; i < 4; i++)
			if (!have[i])
				snprintf(missing + strlen(missing),
					 sizeof(missing) - strlen(missing), "%s%s",
					 missing[0] ? ", " : "", names[i]);
		snprintf(err, errlen,
			 "scheduling restrictions requires all restriction fields to be present. "
			 "%s %s missing",
			 missing, nwin == 3 ? "is" : "are");
		return -1;
	}
	if (nwin) {
		if (out->start_s > out->end_s) {
			snprintf(err, errlen,
				 "'start' must be before 'end' and define a time window within a "
				 "given day");
			return -1;
		}
		out->has_window = 1;
	}
	return 0;
}

int sched_spec_parse(const char *text, size_t len, struct sched_spec *out, char *err, size_t errlen)
{
	json_error_t je;
	json_t *obj = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
	if (!obj) {
		snprintf(err, errlen, "invalid JSON: %s", je.text);
		return -1;
	}
	int rc = sched_spec_from_json(obj, out, err, errlen);
	json_decref(obj);
	return rc;
}

json_t *sched_spec_to_json(const struct sched_spec *s)
{
	json_t *o = json_object();
	char t[40];
	if (s->has_first) {
		rfc3339_format_ms(s->first_ms, t, sizeof(t));
		json_object_set_new(o, "first_attempt", json_string(t));
	}
	if (s->has_expires) {
		rfc3339_format_ms(s->expires_ms, t, sizeof(t));
		json_object_set_new(o, "expires", json_string(t));
	}
	if (s->has_window) {
		char days[40] = "";
		for (int d = 0; d < 7; d++)
			if (s->dow & (1u << d))
				snprintf(days + strlen(days), sizeof(days) - strlen(days), "%s%.3s",
					 days[0] ? "," : "", day_names[d]);
		json_object_set_new(o, "dow", json_string(days));
		json_object_set_new(o, "tz", json_string(s->tz));
		snprintf(t, sizeof(t), "%02u:%02u:%02u", s->start_s / 3600, s->start_s / 60 % 60,
			 s->start_s % 60);
		json_object_set_new(o, "start", json_string(t));
		snprintf(t, sizeof(t), "%02u:%02u:%02u", s->end_s / 3600, s->end_s / 60 % 60,
			 s->end_s % 60);
		json_object_set_new(o, "end", json_string(t));
	}
	return o;
}

/* 0 Monday .. 6 Sunday for the day containing ms since the epoch (1970-01-01 was a
 * Thursday). */
static unsigned weekday(int64_t ms)
{
	int64_t d = ms / (int64_t)DAY_MS - (ms % (int64_t)DAY_MS < 0);
	return (unsigned)(((d + 3) % 7 + 7) % 7);
}

/* Local wall-clock ms of zone (NULL: UTC) to the instant, and back. */
static int64_t to_utc(const struct tzif_zone *z, int64_t local)
{
	if (!z)
		return local;
	int64_t s = local / 1000 - (local % 1000 < 0), ms = local - s * 1000;
	return tzif_local_to_utc(z, s) * 1000 + ms;
}

static int64_t to_local(const struct tzif_zone *z, int64_t t)
{
	if (!z)
		return t;
	struct tzif_local l;
	tzif_lookup(z, t / 1000 - (t % 1000 < 0), &l);
	return t + l.utoff * 1000LL;
}

uint64_t sched_spec_adjust(const struct sched_spec *s, uint64_t t)
{
	if (s->has_first && t < s->first_ms)
		t = s->first_ms;
	if (!s->has_window || !s->dow || t > (uint64_t)INT64_MAX / 2)
		return t;
	/* as KumoMTA: at most 8 days ahead */
	for (int i = 0; i < 8; i++) {
		int64_t lt = to_local(s->zone, (int64_t)t);
		int64_t day = lt - (lt % (int64_t)DAY_MS + (int64_t)DAY_MS) % (int64_t)DAY_MS;
		int64_t start = to_utc(s->zone, day + s->start_s * 1000LL);
		int64_t end = to_utc(s->zone, day + s->end_s * 1000LL);
		if (s->dow & (1u << weekday(day))) {
			if ((int64_t)t < start)
				return (uint64_t)start;
			if ((int64_t)t < end)
				return t;
		}
		int64_t next = to_utc(s->zone, day + (int64_t)DAY_MS + s->start_s * 1000LL);
		t = next > (int64_t)t ? (uint64_t)next : t + 1;
	}
	return t;
}

int sched_spec_permits(const struct sched_spec *s, uint64_t t)
{
	return sched_spec_adjust(s, t) == t;
}
