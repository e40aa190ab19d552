/* SPDX-License-Identifier: Apache-2.0 */
/* IANA time zones: the TZif file format (RFC 8536) and the POSIX TZ rule of
 * its footer, for local time in scheduling windows. Pure: bytes in (the
 * caller reads /usr/share/zoneinfo/NAME), a zone out; the UTC offset, DST
 * flag and abbreviation in effect at an instant. Version 2+ files use their
 * 64-bit section; instants past the last transition follow the footer's
 * rule (as glibc's localtime does). */
#ifndef KUMOD_PROTO_TZIF_H
#define KUMOD_PROTO_TZIF_H

#include <stddef.h>
#include <stdint.h>

/* What local time is at one instant. */
struct tzif_local {
	int32_t utoff; /* seconds east of UTC */
	int isdst;
	char abbr[16];
};

/* A POSIX TZ rule: "std offset [dst [offset] [,start[/time],end[/time]]]". */
struct tzif_date {
	char kind; /* 'J' (1..365, no Feb 29), 'n' (0..365), 'M' (month.week.day) */
	int n, m, w, d;
	int32_t secs; /* local time of the change, -167h..167h */
};
struct tzif_rule {
	struct tzif_local std, dst;
	int has_dst;
	struct tzif_date start, end;
};

struct tzif_zone;

/* Parses a TZif file of len bytes: 0 and *out (free with tzif_free), or -1
 * with a reason in err. Counts are checked against len before anything is
 * allocated; transitions must ascend; type and abbreviation indices must be
 * in range; a footer rule, when present, must parse. */
int tzif_parse(const void *data, size_t len, struct tzif_zone **out, char *err, size_t errlen);
void tzif_free(struct tzif_zone *z);
/* The local time in effect at t (seconds since the epoch). */
void tzif_lookup(const struct tzif_zone *z, int64_t t, struct tzif_local *out);
/* 1 when the zone is UTC at every instant (offset 0, no DST). */
int tzif_is_utc(const struct tzif_zone *z);

/* A POSIX TZ string of len bytes (a TZif footer): 0, or -1 when it is not
 * one. An empty string is not a rule. */
int tzif_rule_parse(const char *s, size_t len, struct tzif_rule *out);
/* The local time at t under rule r. */
void tzif_rule_lookup(const struct tzif_rule *r, int64_t t, struct tzif_local *out);

/* A local wall-clock time (seconds since the epoch as if local time were
 * UTC) to the UTC instant it names: in a fold the earlier one, in a gap the
 * instant after it (the clock reads past the gap's end by as much). */
int64_t tzif_local_to_utc(const struct tzif_zone *z, int64_t local);

#endif
