/* SPDX-License-Identifier: Apache-2.0 */
/* Time zones by name, loaded once (see tzdb.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/xalloc.h"
#include "proto/tzif.h"
#include "queue/tzdb.h"

/* Loaded zones; a name that failed is not remembered (the file may appear). */
static struct {
	char *name;
	struct tzif_zone *zone;
} zones[TZDB_MAX];
static size_t nzones;

/* The bytes of path (at most cap), or -1 with errno. */
static long read_file(const char *path, unsigned char *buf, size_t cap)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, cap, f);
	int bad = ferror(f) || (n == cap && fgetc(f) != EOF);
	fclose(f);
	if (bad) {
		errno = EFBIG;
		return -1;
	}
	return (long)n;
}

const struct tzif_zone *tzdb_get(const char *name, char *err, size_t errlen)
{
	for (size_t i = 0; i < nzones; i++)
		if (strcmp(zones[i].name, name) == 0)
			return zones[i].zone;
	if (nzones == TZDB_MAX) {
		snprintf(err, errlen, "'%.60s': more than %d time zones in use", name, TZDB_MAX);
		return NULL;
	}
	const char *dir = getenv("TZDIR");
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir && dir[0] ? dir : "/usr/share/zoneinfo", name);
	/* zone files are a few kB; the largest in tzdata is under 4 kB */
	static unsigned char buf[1 << 16];
	long n = read_file(path, buf, sizeof(buf));
	if (n < 0) {
		snprintf(err, errlen, "'%.60s': unknown time zone (%s: %s)", name, path,
			 strerror(errno));
		return NULL;
	}
	struct tzif_zone *z;
	char why[160];
	if (tzif_parse(buf, (size_t)n, &z, why, sizeof(why)) != 0) {
		snprintf(err, errlen, "'%.60s': %s: %s", name, path, why);
		return NULL;
	}
	zones[nzones].name = xstrdup(name);
	zones[nzones++].zone = z;
	log_debug("kumod::queue", "time zone %s loaded from %s", name, path);
	return z;
}

int tzdb_sched_spec(json_t *obj, struct sched_spec *out, char *err, size_t errlen)
{
	if (sched_spec_from_json(obj, out, err, errlen) != 0)
		return -1;
	if (!sched_spec_needs_zone(out))
		return 0;
	char why[300];
	out->zone = tzdb_get(out->tz, why, sizeof(why));
	if (!out->zone) {
		snprintf(err, errlen, "tz: %s", why);
		return -1;
	}
	return 0;
}
