/* SPDX-License-Identifier: Apache-2.0 */
/* Diagnostic log: the KUMOD_LOG filter in force, cached per-call-site verdicts
 * and the output sink (stderr or hourly files under --diag-log-dir).
 * Owns the process-wide filter of its loop context; any module may log. */
#ifndef KUMOD_BASE_LOG_H
#define KUMOD_BASE_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

enum log_level {
	LOG_LEVEL_OFF = 0,
	LOG_LEVEL_ERROR = 1,
	LOG_LEVEL_WARN = 2,
	LOG_LEVEL_INFO = 3,
	LOG_LEVEL_DEBUG = 4,
	LOG_LEVEL_TRACE = 5,
};

enum log_format {
	LOG_FORMAT_FULL = 0,
	LOG_FORMAT_COMPACT,
	LOG_FORMAT_JSON,
};

/* One per call site. `gen` caches the filter generation the verdict was
 * computed for; a filter swap bumps the generation and every site re-checks. */
struct log_site {
	const char *target;
	enum log_level level;
	unsigned gen;
	/* 0 = disabled, 1 = enabled, 2 = depends on the current span (dynamic
	 * directives present) */
	unsigned char verdict;
};

extern unsigned log__generation;
int log__site_check(struct log_site *site);

static inline int log_site_enabled(struct log_site *site)
{
	if (__builtin_expect(site->gen == log__generation, 1) && site->verdict != 2)
		return site->verdict;
	return log__site_check(site);
}

/* Default filter when KUMOD_LOG is unset. */
#define LOG_DEFAULT_FILTER                                                                     \
	"kumod=info,config=info,kumo_server_common=info,kumo_server_runtime=info,lruttl=info," \
	"mod_memoize=info,spool=info,lua=info,kumo_api_types=info"

/* Installs a filter from text (strict). On error returns -EINVAL, keeps the
 * old filter and writes "parsing log filter '<f>': <why>" into err. */
int log_set_filter(const char *text, char *err, size_t errlen);
/* The text of the filter in force ("" when empty). */
const char *log_filter_text(void);

void log_set_format(enum log_format fmt);
/* ANSI colour in the text formats: LOG_COLOR_AUTO (the default) colours only
 * a terminal with NO_COLOR unset or empty; "always" and "never" override.
 * mode is "auto", "always" or "never" (KUMOD_LOG_COLOR); -EINVAL otherwise. */
enum {
	LOG_COLOR_AUTO,
	LOG_COLOR_ALWAYS,
	LOG_COLOR_NEVER
};
int log_set_color(const char *mode);
/* A name for this process shown in every line ("[sink]" after the level;
 * "role" in JSON), so that several processes sharing a terminal (`make
 * run`) can be told apart; "" or NULL: none. Set before the first line. */
void log_set_role(const char *role);
/* Redirect output to DIR/log.YYYY-MM-DD-HH; 0 or -errno (dir unwritable). */
int log_set_dir(const char *dir);
/* SIGHUP: reopen the current output file. */
void log_reopen(void);
void log_set_thread_name(const char *name);

/* Emits one event for an enabled site. `msg` is already rendered. */
void log_emit(const struct log_site *site, const char *msg);
void log_emitf(const struct log_site *site, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define KLOG(lvl, tgt, ...)                                                 \
	do {                                                                \
		static struct log_site klog_site_ = {(tgt), (lvl), ~0u, 0}; \
		if (log_site_enabled(&klog_site_))                          \
			log_emitf(&klog_site_, __VA_ARGS__);                \
	} while (0)

#define log_error(tgt, ...) KLOG(LOG_LEVEL_ERROR, tgt, __VA_ARGS__)
#define log_warn(tgt, ...) KLOG(LOG_LEVEL_WARN, tgt, __VA_ARGS__)
#define log_info(tgt, ...) KLOG(LOG_LEVEL_INFO, tgt, __VA_ARGS__)
#define log_debug(tgt, ...) KLOG(LOG_LEVEL_DEBUG, tgt, __VA_ARGS__)
#define log_trace(tgt, ...) KLOG(LOG_LEVEL_TRACE, tgt, __VA_ARGS__)

/* Appends `s` escaped for a log line (controls and non-UTF-8 as \xNN, quotes
 * and backslashes escaped) into dst; always NUL-terminates; returns length. */
size_t log_escape(char *dst, size_t dstlen, const char *s, size_t len);

#endif
