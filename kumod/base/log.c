/* SPDX-License-Identifier: Apache-2.0 */
/* Diagnostic log: the KUMOD_LOG filter in force, call-site verdicts, line formats and the sink. */
/* log.h uses size_t without including <stddef.h> (reported to the lead). */
#include <stddef.h>

#include "base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/logfilter.h"
#include "base/task.h"
#include "base/xalloc.h"

/* A line never exceeds LOG_LINE_MAX bytes (newline included): the message
 * gets LOG_MSG_MAX of it, every other part (target, thread, span name, one
 * span field) at most LOG_PART_MAX, which leaves room for all of them. */
#define LOG_LINE_MAX 65536
#define LOG_MSG_MAX (LOG_LINE_MAX - 16384)
#define LOG_PART_MAX 512
#define LOG_TRUNCATED "...[truncated]"

#define LOG_DIM "\x1b[2m"
#define LOG_BOLD "\x1b[1m"
#define LOG_RESET "\x1b[0m"

unsigned log__generation;

/* The lock covers the filter (swap vs. evaluation on another thread) and the
 * sink (hourly roll, reopen, one write per line). */
static struct {
	pthread_mutex_t lock;
	struct logfilter *filter;
	char *text;
	enum log_format format;
	int color;	/* -1 until the first line after a sink change: decided then */
	int color_mode; /* LOG_COLOR_* */
	int fd;		/* -1: stderr */
	char *dir;
	long hour; /* hours since the epoch of the open file */
} lg = {PTHREAD_MUTEX_INITIALIZER, NULL, NULL, LOG_FORMAT_FULL, -1, LOG_COLOR_AUTO, -1, NULL, -1};

static __thread char log_thread[32];
static char log_role[32]; /* KUMOD_LOG_ROLE: tells processes apart in one terminal */

/* The last span verdict of this thread: valid while the task, its change
 * sequence and the filter generation are unchanged. */
static __thread struct {
	const struct task *task;
	uint64_t id, seq;
	unsigned gen;
	enum log_level level;
} log_span_cache;

/* --- filter ----------------------------------------------------------------- */

static void log__bump_generation(void)
{
	unsigned next = log__generation + 1;
	if (next == ~0u) /* ~0u marks a site that never checked */
		next = 0;
	__atomic_store_n(&log__generation, next, __ATOMIC_RELEASE);
}

int log_set_filter(const char *text, char *err, size_t errlen)
{
	struct logfilter *f, *old;
	char why[512], *oldtext;

	if (!text)
		text = "";
	if (logfilter_parse(text, &f, why, sizeof(why)) != 0) {
		if (err && errlen)
			snprintf(err, errlen, "parsing log filter '%s': %s", text, why);
		return -EINVAL;
	}
	char *copy = xstrdup(text);
	pthread_mutex_lock(&lg.lock);
	old = lg.filter;
	oldtext = lg.text;
	lg.filter = f;
	lg.text = copy;
	log__bump_generation();
	pthread_mutex_unlock(&lg.lock);
	logfilter_free(old);
	free(oldtext);
	return 0;
}

const char *log_filter_text(void)
{
	return lg.text ? lg.text : "";
}

/* The current task is the span: name = kind, target = "kumod::<kind>",
 * fields = the task's fields plus `name`. */
static enum log_level log__task_level(const struct task *t, unsigned gen)
{
	struct logfilter_field fields[TASK_MAX_FIELDS + 1];
	size_t n = 0;
	char target[128];

	fields[n++] = (struct logfilter_field){"name", t->name ? t->name : ""};
	for (size_t i = 0; i < t->nfields && i < TASK_MAX_FIELDS; i++)
		fields[n++] = (struct logfilter_field){t->fields[i].key, t->fields[i].value};
	snprintf(target, sizeof(target), "kumod::%s", t->kind ? t->kind : "");
	pthread_mutex_lock(&lg.lock);
	enum log_level lvl = log__generation == gen
				 ? logfilter_span_level(lg.filter, t->kind, target, fields, n)
				 : LOG_LEVEL_OFF;
	pthread_mutex_unlock(&lg.lock);
	return lvl;
}

static int log__span_allows(enum log_level level, unsigned gen)
{
	const struct task *t = task_current();
	if (!t)
		return 0;
	if (log_span_cache.task != t || log_span_cache.id != t->id ||
	    log_span_cache.seq != t->change_seq || log_span_cache.gen != gen) {
		log_span_cache.task = t;
		log_span_cache.id = t->id;
		log_span_cache.seq = t->change_seq;
		log_span_cache.gen = gen;
		log_span_cache.level = log__task_level(t, gen);
	}
	return level <= log_span_cache.level;
}

int log__site_check(struct log_site *site)
{
	unsigned gen = __atomic_load_n(&log__generation, __ATOMIC_ACQUIRE);
	if (site->gen != gen) {
		int v = 0;
		pthread_mutex_lock(&lg.lock);
		gen = log__generation;
		if (site->level > LOG_LEVEL_OFF && site->level <= LOG_LEVEL_TRACE) {
			v = logfilter_enabled(lg.filter, site->target, site->level);
			if (!v && logfilter_has_dynamic(lg.filter))
				v = 2;
		}
		pthread_mutex_unlock(&lg.lock);
		site->verdict = (unsigned char)v;
		__atomic_store_n(&site->gen, gen, __ATOMIC_RELEASE);
	}
	if (site->verdict != 2)
		return site->verdict;
	return log__span_allows(site->level, gen);
}

/* --- settings --------------------------------------------------------------- */

void log_set_format(enum log_format fmt)
{
	lg.format = fmt;
}

int log_set_color(const char *mode)
{
	static const char *const names[] = {
	    [LOG_COLOR_AUTO] = "auto", [LOG_COLOR_ALWAYS] = "always", [LOG_COLOR_NEVER] = "never"};
	for (int i = 0; i < (int)(sizeof(names) / sizeof(names[0])); i++) {
		if (mode && strcmp(mode, names[i]) == 0) {
			lg.color_mode = i;
			lg.color = -1;
			return 0;
		}
	}
	return -EINVAL;
}

void log_set_role(const char *role)
{
	snprintf(log_role, sizeof(log_role), "%s", role ? role : "");
}

void log_set_thread_name(const char *name)
{
	snprintf(log_thread, sizeof(log_thread), "%s", name ? name : "");
}

static void log__path(char *path, size_t len, const char *dir, long hour)
{
	time_t t = (time_t)hour * 3600;
	struct tm tm;
	gmtime_r(&t, &tm);
	snprintf(path, len, "%s/log.%04d-%02d-%02d-%02d", dir, tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour);
}

static int log__open(const char *dir, long hour)
{
	char path[4096];
	log__path(path, sizeof(path), dir, hour);
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	return fd < 0 ? -errno : fd;
}

/* Installs fd/dir/hour as the sink; closes what they replace. Lock held. */
static void log__set_sink(int fd, char *dir, long hour)
{
	if (lg.fd >= 0)
		close(lg.fd);
	if (dir != lg.dir)
		free(lg.dir);
	lg.fd = fd;
	lg.dir = dir;
	lg.hour = hour;
	lg.color = -1;
}

int log_set_dir(const char *dir)
{
	if (!dir || !*dir) {
		pthread_mutex_lock(&lg.lock);
		log__set_sink(-1, NULL, -1);
		pthread_mutex_unlock(&lg.lock);
		return 0;
	}
	long hour = (long)(time(NULL) / 3600);
	int fd = log__open(dir, hour);
	if (fd < 0)
		return fd;
	pthread_mutex_lock(&lg.lock);
	log__set_sink(fd, xstrdup(dir), hour);
	pthread_mutex_unlock(&lg.lock);
	return 0;
}

void log_reopen(void)
{
	pthread_mutex_lock(&lg.lock);
	if (lg.dir) {
		int fd = log__open(lg.dir, lg.hour);
		if (fd >= 0)
			log__set_sink(fd, lg.dir, lg.hour);
	}
	pthread_mutex_unlock(&lg.lock);
}

/* One write(2) per line; rolls to the next hourly file first when needed. */
static void log__write(const char *p, size_t n, long hour)
{
	pthread_mutex_lock(&lg.lock);
	if (lg.dir && hour != lg.hour) {
		int fd = log__open(lg.dir, hour);
		if (fd >= 0)
			log__set_sink(fd, lg.dir, hour);
	}
	int fd = lg.fd >= 0 ? lg.fd : STDERR_FILENO;
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		p += w;
		n -= (size_t)w;
	}
	pthread_mutex_unlock(&lg.lock);
}

/* --- escaping --------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 when invalid. */
static size_t log__utf8_len(const unsigned char *s, size_t n)
{
	size_t len;
	uint32_t c;
	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] < 0xe0)
		len = 2;
	else if (s[0] >= 0xe0 && s[0] < 0xf0)
		len = 3;
	else if (s[0] >= 0xf0 && s[0] < 0xf5)
		len = 4;
	else
		return 0;
	if (len > n)
		return 0;
	c = s[0] & (0x7f >> len);
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && (c < 0x800 || (c >= 0xd800 && c < 0xe000))) ||
	    (len == 4 && (c < 0x10000 || c > 0x10ffff)))
		return 0;
	return len;
}

size_t log_escape(char *dst, size_t dstlen, const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t o = 0;

	if (!dstlen)
		return 0;
	for (size_t i = 0; i < len;) {
		char tmp[8];
		size_t n = log__utf8_len(u + i, len - i), step = n ? n : 1;
		const char *out = s + i;
		if (n == 1 && (u[i] == '"' || u[i] == '\\')) {
			tmp[0] = '\\';
			tmp[1] = (char)u[i];
			out = tmp;
			n = 2;
		} else if (n == 0 || (n == 1 && (u[i] < 0x20 || u[i] == 0x7f))) {
			snprintf(tmp, sizeof(tmp), "\\x%02x", u[i]);
			out = tmp;
			n = 4;
		}
		if (o + n >= dstlen)
			break;
		memcpy(dst + o, out, n);
		o += n;
		i += step;
	}
	dst[o] = 0;
	return o;
}

/* --- line building ---------------------------------------------------------- */

struct log_line {
	char *p;
	size_t len; /* < LOG_LINE_MAX: one byte stays free for the newline */
	int color;
};

static void line_put(struct log_line *l, const char *s, size_t n)
{
	size_t room = LOG_LINE_MAX - 1 - l->len;
	if (n > room)
		n = room;
	memcpy(l->p + l->len, s, n);
	l->len += n;
}

static void line_puts(struct log_line *l, const char *s)
{
	line_put(l, s, strlen(s));
}

/* Copies at most `max` bytes of s without cutting a UTF-8 sequence;
 * returns 1 when s was cut. */
static int line_put_capped(struct log_line *l, const char *s, size_t max)
{
	size_t n = strlen(s);
	if (n <= max) {
		line_put(l, s, n);
		return 0;
	}
	while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80)
		max--;
	line_put(l, s, max);
	return 1;
}

static void line_paint(struct log_line *l, const char *ansi, const char *s, size_t max)
{
	if (l->color)
		line_puts(l, ansi);
	line_put_capped(l, s, max);
	if (l->color)
		line_puts(l, LOG_RESET);
}

static void line_escaped(struct log_line *l, const char *s)
{
	char tmp[LOG_PART_MAX];
	size_t n = log_escape(tmp, sizeof(tmp), s, strlen(s));
	line_put(l, tmp, n);
}

/* JSON string body (no quotes); invalid UTF-8 becomes U+FFFD. */
static void line_json(struct log_line *l, const char *s, size_t max)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t len = strlen(s), start = l->len;

	for (size_t i = 0; i < len;) {
		char tmp[8];
		size_t n = log__utf8_len(u + i, len - i), step = n ? n : 1;
		const char *out = s + i;
		if (n == 1 && (u[i] == '"' || u[i] == '\\')) {
			snprintf(tmp, sizeof(tmp), "\\%c", u[i]);
			out = tmp;
			n = 2;
		} else if (n == 1 && u[i] < 0x20) {
			snprintf(tmp, sizeof(tmp), "\\u%04x", u[i]);
			out = tmp;
			n = 6;
		} else if (n == 0) {
			out = "\\ufffd";
			n = 6;
		}
		if (l->len - start + n > max) {
			line_puts(l, LOG_TRUNCATED);
			return;
		}
		line_put(l, out, n);
		i += step;
	}
}

static void line_json_kv(struct log_line *l, const char *key, const char *val, size_t max)
{
	line_puts(l, "\"");
	line_json(l, key, LOG_PART_MAX);
	line_puts(l, "\":\"");
	line_json(l, val, max);
	line_puts(l, "\"");
}

static const char *log__level_name(enum log_level lvl, int padded)
{
	static const char *const names[] = {"OFF", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"};
	static const char *const pad[] = {"  OFF", "ERROR", " WARN", " INFO", "DEBUG", "TRACE"};
	if (lvl < LOG_LEVEL_OFF || lvl > LOG_LEVEL_TRACE)
		lvl = LOG_LEVEL_OFF;
	return padded ? pad[lvl] : names[lvl];
}

static const char *log__level_color(enum log_level lvl)
{
	static const char *const colors[] = {"",	 "\x1b[31m", "\x1b[33m",
					     "\x1b[32m", "\x1b[34m", "\x1b[35m"};
	return lvl >= LOG_LEVEL_OFF && lvl <= LOG_LEVEL_TRACE ? colors[lvl] : "";
}

/* Numbers and bools print bare, like upstream's typed fields. */
static int log__is_bare(const char *v)
{
	const char *p = v + (v[0] == '-');
	size_t n = strspn(p, "0123456789");
	if (strcmp(v, "true") == 0 || strcmp(v, "false") == 0)
		return 1;
	return n > 0 && n <= 19 && p[n] == 0 && (p[0] != '0' || n == 1);
}

/* ` name="x" k=v` (leading space before each) or `name="x" k=v` with sep "". */
/* Span fields in the text formats. A field is left out when its value
 * repeats the span's name, or when the message already says it (an id or
 * address of 8+ characters): the same 32-hex id three times on a line made
 * lines of 400 characters. JSON keeps every field. */
static void line_span_fields(struct log_line *l, const struct task *t, int lead, const char *msg)
{
	for (size_t i = 0; i <= t->nfields && i <= TASK_MAX_FIELDS; i++) {
		const char *k = i ? t->fields[i - 1].key : "name";
		const char *v = i ? t->fields[i - 1].value : t->name;
		if (!k || !v || (!i && !*v))
			continue;
		if (i && *t->name && strcmp(v, t->name) == 0)
			continue;
		if (strlen(v) >= 8 && strstr(msg, v))
			continue;
		if (lead || l->p[l->len - 1] != '{')
			line_puts(l, " ");
		line_put_capped(l, k, LOG_PART_MAX);
		line_puts(l, "=");
		if (log__is_bare(v)) {
			line_puts(l, v);
			continue;
		}
		line_puts(l, "\"");
		line_escaped(l, v);
		line_puts(l, "\"");
	}
}

struct log_event {
	const struct log_site *site;
	const char *msg;
	const struct task *span;
	char ts[40];
	long hour;
};

static void log__timestamp(struct log_event *ev)
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(ev->ts, sizeof(ev->ts) - 9, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(ev->ts + n, 9, ".%06uZ", (unsigned)(ts.tv_nsec / 1000) % 1000000u);
	ev->hour = (long)(ts.tv_sec / 3600);
}

/* `<ts> <LEVEL> [<role>] <thread> ` */
static void line_head(struct log_line *l, const struct log_event *ev)
{
	line_paint(l, LOG_DIM, ev->ts, sizeof(ev->ts));
	line_puts(l, " ");
	line_paint(l, log__level_color(ev->site->level), log__level_name(ev->site->level, 1), 8);
	line_puts(l, " ");
	if (log_role[0]) {
		line_puts(l, "[");
		line_put_capped(l, log_role, sizeof(log_role));
		line_puts(l, "] ");
	}
	line_put_capped(l, log_thread[0] ? log_thread : "main", sizeof(log_thread));
	line_puts(l, " ");
}

static void line_message(struct log_line *l, const char *msg)
{
	if (line_put_capped(l, msg, LOG_MSG_MAX))
		line_puts(l, LOG_TRUNCATED);
}

static void line_target(struct log_line *l, const struct log_event *ev)
{
	if (l->color)
		line_puts(l, LOG_DIM);
	line_put_capped(l, ev->site->target ? ev->site->target : "", LOG_PART_MAX);
	line_puts(l, ":");
	if (l->color)
		line_puts(l, LOG_RESET);
	line_puts(l, " ");
}

static void log__format_full(struct log_line *l, const struct log_event *ev)
{
	line_head(l, ev);
	if (ev->span) {
		line_paint(l, LOG_BOLD, ev->span->kind ? ev->span->kind : "", LOG_PART_MAX);
		size_t mark = l->len;
		line_puts(l, "{");
		line_span_fields(l, ev->span, 0, ev->msg);
		if (l->len == mark + 1)
			l->len = mark; /* no fields: no braces */
		else
			line_puts(l, "}");
		line_puts(l, ": ");
	}
	line_target(l, ev);
	line_message(l, ev->msg);
}

static void log__format_compact(struct log_line *l, const struct log_event *ev)
{
	line_head(l, ev);
	if (ev->span) {
		line_paint(l, LOG_BOLD, ev->span->kind ? ev->span->kind : "", LOG_PART_MAX);
		line_puts(l, ": ");
	}
	line_target(l, ev);
	line_message(l, ev->msg);
	if (ev->span)
		line_span_fields(l, ev->span, 1, ev->msg);
}

static void line_json_span(struct log_line *l, const struct task *t)
{
	line_puts(l, "{");
	for (size_t i = 0; i < t->nfields && i < TASK_MAX_FIELDS; i++) {
		const char *k = t->fields[i].key, *v = t->fields[i].value;
		/* `name` is the span name in this format; the task name is not repeated. */
		if (!k || !v || strcmp(k, "name") == 0)
			continue;
		if (log__is_bare(v)) {
			line_puts(l, "\"");
			line_json(l, k, LOG_PART_MAX);
			line_puts(l, "\":");
			line_puts(l, v);
		} else {
			line_json_kv(l, k, v, LOG_PART_MAX);
		}
		line_puts(l, ",");
	}
	line_json_kv(l, "name", t->kind ? t->kind : "", LOG_PART_MAX);
	line_puts(l, "}");
}

static void log__format_json(struct log_line *l, const struct log_event *ev)
{
	line_puts(l, "{");
	line_json_kv(l, "timestamp", ev->ts, sizeof(ev->ts));
	line_puts(l, ",");
	line_json_kv(l, "level", log__level_name(ev->site->level, 0), 8);
	line_puts(l, ",\"fields\":{");
	line_json_kv(l, "message", ev->msg, LOG_MSG_MAX);
	line_puts(l, "},");
	line_json_kv(l, "target", ev->site->target ? ev->site->target : "", LOG_PART_MAX);
	if (ev->span) {
		line_puts(l, ",\"span\":");
		line_json_span(l, ev->span);
		line_puts(l, ",\"spans\":[");
		line_json_span(l, ev->span);
		line_puts(l, "]");
	}
	line_puts(l, ",");
	if (log_role[0]) {
		line_json_kv(l, "role", log_role, sizeof(log_role));
		line_puts(l, ",");
	}
	line_json_kv(l, "threadName", log_thread[0] ? log_thread : "main", sizeof(log_thread));
	line_puts(l, "}");
}

/* auto: colour only on a terminal and while NO_COLOR is unset or empty
 * (files, pipes and `| tee` get plain text); always/never override both. */
static int log__color(void)
{
	if (lg.color < 0) {
		const char *nc = getenv("NO_COLOR");
		int fd = lg.fd >= 0 ? lg.fd : STDERR_FILENO;
		lg.color = lg.color_mode == LOG_COLOR_ALWAYS  ? 1
			   : lg.color_mode == LOG_COLOR_NEVER ? 0
							      : !(nc && *nc) && isatty(fd);
	}
	return lg.color;
}

void log_emit(const struct log_site *site, const char *msg)
{
	struct log_event ev = {site, msg ? msg : "", task_current(), "", 0};
	struct log_line l = {xmalloc(LOG_LINE_MAX), 0, 0};

	log__timestamp(&ev);
	switch (lg.format) {
	case LOG_FORMAT_COMPACT:
		l.color = log__color();
		log__format_compact(&l, &ev);
		break;
	case LOG_FORMAT_JSON:
		log__format_json(&l, &ev);
		break;
	default:
		l.color = log__color();
		log__format_full(&l, &ev);
		break;
	}
	l.p[l.len++] = '\n';
	log__write(l.p, l.len, ev.hour);
	free(l.p);
}

void log_emitf(const struct log_site *site, const char *fmt, ...)
{
	char small[1024];
	va_list ap, ap2;

	va_start(ap, fmt);
	va_copy(ap2, ap);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n < sizeof(small)) {
		va_end(ap2);
		log_emit(site, n < 0 ? fmt : small);
		return;
	}
	/* Longer than a line can hold: keep enough to show the truncation. */
	size_t cap = (size_t)n + 1 < LOG_MSG_MAX + 16 ? (size_t)n + 1 : LOG_MSG_MAX + 16;
	char *big = xmalloc(cap);
	vsnprintf(big, cap, fmt, ap2);
	va_end(ap2);
	log_emit(site, big);
	free(big);
}
