/* SPDX-License-Identifier: Apache-2.0 */
/* KumoMTA durations as text: "5m", "20 minutes", "1 hour", "1h 30m",
 * "250ms"; one or more number+unit parts, units ms/s/m/h/d/w and their long
 * spellings, case-insensitive. Pure. Callers: kumod/lua (configuration
 * builders), kumod/ctl (admin API). */
#ifndef KUMOD_PROTO_DURATION_H
#define KUMOD_PROTO_DURATION_H

#include <stdint.h>

/* 0 and milliseconds in *out, or -1 when s is not a duration. */
int duration_parse_ms(const char *s, uint64_t *out);

#endif
