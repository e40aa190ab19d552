/* SPDX-License-Identifier: Apache-2.0 */
/* A message's scheduling (KumoMTA's msg:set_scheduling and the scheduling
 * header of msg:import_scheduling_header): first attempt, expiry and a
 * restriction window (days of week, start and end time of day, time zone).
 * Pure: JSON in, a spec out; the next permitted time from a spec. Written
 * from KumoMTA's documented behaviour (docs/message/set_scheduling.md). */
#ifndef KUMOD_PROTO_SCHED_SPEC_H
#define KUMOD_PROTO_SCHED_SPEC_H

/* The message meta key kumod keeps a scheduling spec under (its canonical
 * JSON), so the spool persists it with the rest of the meta. */
#define SCHED_SPEC_META_KEY "_scheduling"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct tzif_zone;

struct sched_spec {
	int has_first, has_expires, has_window;
	uint64_t first_ms, expires_ms; /* unix ms */
	unsigned dow;		       /* bit 0 Monday .. bit 6 Sunday */
	uint32_t start_s, end_s;       /* seconds since midnight, start <= end */
	char tz[64];		       /* as given: UTC, or an IANA zone name */
	/* the zone of a non-UTC tz (borrowed, set by the caller after parsing:
	 * queue/tzdb.h); NULL: the window is in UTC */
	const struct tzif_zone *zone;
};

/* Fields of obj: first_attempt, expires (RFC 3339), dow ("Mon,Wed" or full
 * day names, case-insensitive), tz, start and end ("HH:MM:SS" or "HH:MM");
 * the window fields all or none. 0, or -1 with a reason naming the field in
 * err (an unknown field, a bad value, a tz that is not a zone name). A tz
 * other than UTC is only checked as a name here (zone stays NULL): see
 * sched_spec_needs_zone. */
int sched_spec_from_json(json_t *obj, struct sched_spec *out, char *err, size_t errlen);
/* 1 when the spec's window is in a zone other than UTC, which the caller
 * must load and set in s->zone before sched_spec_adjust. */
int sched_spec_needs_zone(const struct sched_spec *s);
/* The same from JSON text (a scheduling header's value). */
int sched_spec_parse(const char *text, size_t len, struct sched_spec *out, char *err,
		     size_t errlen);
/* The canonical JSON object of a spec (RFC 3339 UTC times, "Mon,Tue" days,
 * "HH:MM:SS"); sched_spec_from_json reads it back to the same spec. */
json_t *sched_spec_to_json(const struct sched_spec *s);

/* The earliest time at or after t_ms that the spec permits: not before
 * first_attempt, and inside the window on one of its days (the window's
 * start on the next permitted day when t is past it). Days, start and end
 * are local times of s->zone (UTC when NULL): a start in a DST gap begins
 * the window as far past the gap as it was into it. */
uint64_t sched_spec_adjust(const struct sched_spec *s, uint64_t t_ms);
/* 1 when t_ms is permitted (adjust would return it unchanged). */
int sched_spec_permits(const struct sched_spec *s, uint64_t t_ms);

#endif
