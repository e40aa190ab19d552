/* SPDX-License-Identifier: Apache-2.0 */
/* KumoMTA durations as text: "5m", "20 minutes", "1 hour", "1h 30m",
 * "250ms"; one or more number+unit parts, units us/ms/s/m/h/d/w and their long
 * spellings, case-insensitive; and RFC 3339 timestamps. Pure. Callers: kumod/lua (configuration
 * builders), kumod/ctl (admin API). */
#ifndef KUMOD_PROTO_DURATION_H
#define KUMOD_PROTO_DURATION_H

#include <stddef.h>
#include <stdint.h>

/* 0 and milliseconds in *out, or -1 when s is not a duration. */
int duration_parse_ms(const char *s, uint64_t *out);
/* The same in microseconds ("50us", "0.5ms"). */
int duration_parse_us(const char *s, uint64_t *out);
/* ms as KumoMTA (humantime) writes a duration: "1h 4m 5s", "250ms", "0s";
 * parsed back by duration_parse_ms. Truncated to fit outlen. */
void duration_format_ms(uint64_t ms, char *out, size_t outlen);

/* RFC 3339 date-time ("2026-11-29T10:00:00Z", "...T10:00:00.5+01:00") to
 * unix milliseconds: 0, or -1 when s is not one (or is before 1970). */
int rfc3339_parse_ms(const char *s, uint64_t *out);
/* Unix ms as RFC 3339 UTC with milliseconds ("2026-11-29T10:00:00.000Z"). */
void rfc3339_format_ms(uint64_t ms, char *out, size_t outlen);

#endif
