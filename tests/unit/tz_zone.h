/* SPDX-License-Identifier: Apache-2.0 */
/* A zone from /usr/share/zoneinfo parsed by proto/tzif, for the unit tests
 * that need one (test_tzif.c, test_sched_spec.c); fails the test when the
 * file is missing or does not parse. Defined in test_tzif.c. */
#ifndef KUMOD_TESTS_TZ_ZONE_H
#define KUMOD_TESTS_TZ_ZONE_H

#include "proto/tzif.h"

struct tzif_zone *test_tz_zone(const char *name);

#endif
