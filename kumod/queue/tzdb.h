/* SPDX-License-Identifier: Apache-2.0 */
/* IANA time zones by name for scheduling windows (msg:set_scheduling's tz):
 * each zone is read from the zoneinfo directory ($TZDIR, else
 * /usr/share/zoneinfo) the first time it is named, parsed by proto/tzif,
 * and kept for the life of the process (at most TZDB_MAX zones). Loop
 * thread only. Callers: kumod/queue (due times), kumod/lua (validation). */
#ifndef KUMOD_QUEUE_TZDB_H
#define KUMOD_QUEUE_TZDB_H

#include <jansson.h>
#include <stddef.h>

#include "proto/sched_spec.h"

#define TZDB_MAX 512

struct tzif_zone;

/* The zone named name, or NULL with a reason in err (no such file, not a
 * TZif file, too many zones). */
const struct tzif_zone *tzdb_get(const char *name, char *err, size_t errlen);
/* sched_spec_from_json and, for a window in a zone other than UTC, that
 * zone loaded into out->zone: 0, or -1 with a reason naming the field. */
int tzdb_sched_spec(json_t *obj, struct sched_spec *out, char *err, size_t errlen);

#endif
