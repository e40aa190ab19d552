/* SPDX-License-Identifier: Apache-2.0 */
/* Pure KUMOD_LOG directive parser and matcher, with the exact semantics of
 * tracing-subscriber's EnvFilter as described in docs/kumod-log.md.
 * No I/O and no globals: log.c owns the filter in force. */
#ifndef KUMOD_BASE_LOGFILTER_H
#define KUMOD_BASE_LOGFILTER_H

#include <stddef.h>

#include "base/log.h"

struct logfilter;

/* Parses `text` strictly. Returns 0 and a new filter in *out, or -EINVAL
 * with a one-line reason in err (naming the offending directive). */
int logfilter_parse(const char *text, struct logfilter **out, char *err, size_t errlen);
void logfilter_free(struct logfilter *f);

/* Number of directives kept after duplicate replacement. */
size_t logfilter_count(const struct logfilter *f);
/* Static verdict: 1 when an event of `target` at `level` is enabled. */
int logfilter_enabled(const struct logfilter *f, const char *target, enum log_level level);
/* 1 when the filter has directives with a span name or field values. */
int logfilter_has_dynamic(const struct logfilter *f);

struct logfilter_field {
	const char *name;
	const char *value; /* textual value; numbers and bools as printed */
};

/* Dynamic directives: the most verbose level any of them grants to events
 * emitted inside a span `span_name` created at `span_target` with `fields`;
 * LOG_LEVEL_OFF when none matches. */
enum log_level logfilter_span_level(const struct logfilter *f, const char *span_name,
				    const char *span_target, const struct logfilter_field *fields,
				    size_t nfields);

/* Parses a level word (`off`..`trace`, case-insensitive, or 0-5). */
int logfilter_parse_level(const char *s, size_t len, enum log_level *out);

#endif
