/* SPDX-License-Identifier: Apache-2.0 */
/* Diagnostic log: verdict caching and invalidation, strict filter swap, line formats, escaping. */
#include <errno.h>
#include <regex.h>
#include <stddef.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/task.h"
#include "test.h"

#define TS_RE "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z"

static void tl_filter(const char *f)
{
	char err[512] = "";
	if (log_set_filter(f, err, sizeof(err)) != 0)
		TEST_FAIL("filter '%s': %s", f, err);
}

/* A fresh --diag-log-dir; NO_COLOR is set unless colour is wanted. */
static char *tl_dir(int color)
{
	static char dir[64];
	if (color)
		unsetenv("NO_COLOR");
	else
		setenv("NO_COLOR", "1", 1);
	snprintf(dir, sizeof(dir), "/tmp/kumod-logtest-XXXXXX");
	ASSERT(mkdtemp(dir) != NULL);
	ASSERT_EQ(log_set_dir(dir), 0);
	return dir;
}

/* Reads the only log file of dir (and checks its hourly name), then removes both. */
static char *tl_slurp(const char *dir)
{
	char want[64], path[256];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(want, sizeof(want), "log.%Y-%m-%d-%H", &tm);
	snprintf(path, sizeof(path), "%s/%s", dir, want);
	FILE *fp = fopen(path, "rb");
	if (!fp)
		TEST_FAIL("no %s", path);
	char *data = calloc(1, 1 << 20);
	size_t n = fread(data, 1, (1 << 20) - 1, fp);
	data[n] = 0;
	fclose(fp);
	unlink(path);
	log_set_dir(NULL);
	rmdir(dir);
	return data;
}

static void tl_match(const char *text, const char *pattern)
{
	regex_t re;
	ASSERT_EQ(regcomp(&re, pattern, REG_EXTENDED | REG_NEWLINE), 0);
	if (regexec(&re, text, 0, NULL, 0) != 0)
		TEST_FAIL("\"%s\" does not match /%s/", text, pattern);
	regfree(&re);
}

TEST_IMPL(log_site_verdict_cached_and_invalidated)
{
	struct log_site s = {"kumod::smtp_server", LOG_LEVEL_DEBUG, ~0u, 0};
	tl_filter("kumod=info");
	ASSERT_EQ(log_site_enabled(&s), 0);
	ASSERT_EQ(s.gen, log__generation);
	ASSERT_EQ(s.verdict, 0);
	/* While the generation holds, the cached verdict is all that is read. */
	s.verdict = 1;
	ASSERT_EQ(log_site_enabled(&s), 1);
	s.verdict = 0;

	unsigned gen = log__generation;
	tl_filter("kumod=debug");
	ASSERT_NE(log__generation, gen);
	ASSERT_EQ(log_site_enabled(&s), 1);
	ASSERT_EQ(s.verdict, 1);
	ASSERT_STR_EQ(log_filter_text(), "kumod=debug");

	tl_filter("");
	ASSERT_EQ(log_site_enabled(&s), 0);
	ASSERT_STR_EQ(log_filter_text(), "");
}

TEST_IMPL(log_bad_filter_keeps_old)
{
	char err[512] = "";
	struct log_site s = {"kumod", LOG_LEVEL_INFO, ~0u, 0};
	tl_filter("kumod=info");
	ASSERT_EQ(log_site_enabled(&s), 1);
	unsigned gen = log__generation;
	ASSERT_EQ(log_set_filter("kumod=verbose", err, sizeof(err)), -EINVAL);
	ASSERT_STR_EQ(err, "parsing log filter 'kumod=verbose': invalid filter directive "
			   "'kumod=verbose': invalid level");
	ASSERT_EQ(log__generation, gen);
	ASSERT_STR_EQ(log_filter_text(), "kumod=info");
	ASSERT_EQ(log_site_enabled(&s), 1);
	ASSERT_EQ(log_set_filter("info, kumod=debug", NULL, 0), -EINVAL);
}

TEST_IMPL(log_default_filter)
{
	struct log_site rq_debug = {"kumod::ready_queue", LOG_LEVEL_DEBUG, ~0u, 0};
	struct log_site rq_info = {"kumod::ready_queue", LOG_LEVEL_INFO, ~0u, 0};
	struct log_site tokio = {"tokio", LOG_LEVEL_INFO, ~0u, 0};
	/* Nothing is enabled before a filter is installed. */
	ASSERT_EQ(log_site_enabled(&rq_info), 0);
	tl_filter(LOG_DEFAULT_FILTER);
	ASSERT_EQ(log_site_enabled(&rq_debug), 0);
	ASSERT_EQ(log_site_enabled(&rq_info), 1);
	ASSERT_EQ(log_site_enabled(&tokio), 0);
}

TEST_IMPL(log_dynamic_span_verdict)
{
	struct log_site s = {"kumod::ready_queue", LOG_LEVEL_DEBUG, ~0u, 0};
	struct log_site tr = {"lua", LOG_LEVEL_TRACE, ~0u, 0};
	tl_filter("info,[smtp_server]=debug,kumod[deliver{queue=gmail.com}]=trace");
	ASSERT_EQ(log_site_enabled(&s), 0);
	ASSERT_EQ(s.verdict, 2);

	struct task *t = task_spawn("smtp_server", "127.0.0.1:2025", 0);
	struct task *prev = task_enter(t);
	ASSERT_EQ(log_site_enabled(&s), 1);
	ASSERT_EQ(log_site_enabled(&tr), 0);
	task_exit(t, prev);
	ASSERT_EQ(log_site_enabled(&s), 0);

	struct task *d = task_spawn("deliver", "q", 0);
	task_set_field(d, "queue", "x.gmail.com");
	prev = task_enter(d);
	ASSERT_EQ(log_site_enabled(&tr), 1);
	task_set_field(d, "queue", "gmail.com.au");
	ASSERT_EQ(log_site_enabled(&tr), 0);
	task_exit(d, prev);
	task_close(d);
	task_close(t);
	task_registry_clear();
}

TEST_IMPL(log_format_full)
{
	char *dir = tl_dir(0);
	tl_filter("info");
	log_info("kumod::smtp_server", "smtp listener on %s", "127.0.0.1:2025");
	log_debug("kumod::smtp_server", "not shown");
	log_error("lua", "./init.lua:3: x 1 true");
	log_set_thread_name("localset-2");
	log_warn("kumod::spool", "w");
	char *out = tl_slurp(dir);
	tl_match(out,
		 "^" TS_RE "  INFO main kumod::smtp_server: smtp listener on 127.0.0.1:2025\n" TS_RE
		 " ERROR main lua: \\./init\\.lua:3: x 1 true\n" TS_RE
		 "  WARN localset-2 kumod::spool: w\n$");
	free(out);
}

TEST_IMPL(log_format_full_in_span)
{
	char *dir = tl_dir(0);
	tl_filter("info");
	struct task *t = task_spawn("smtp_server", "127.0.0.1:2025", 0);
	task_set_field(t, "peer", "10.0.0.1:3333");
	task_set_field(t, "n", "42");
	task_set_field(t, "listener", "127.0.0.1:2025"); /* = name: not repeated */
	struct task *prev = task_enter(t);
	log_info("kumod::smtp_server", "hello");
	log_info("kumod::smtp_server", "from 10.0.0.1:3333 on 127.0.0.1:2025"); /* says both */
	task_exit(t, prev);
	struct task *bare = task_spawn("timer", "", 0);
	prev = task_enter(bare);
	log_info("kumod::x", "tick");
	task_exit(bare, prev);
	char *out = tl_slurp(dir);
	tl_match(out,
		 "^" TS_RE "  INFO main smtp_server\\{name=\"127\\.0\\.0\\.1:2025\" "
		 "peer=\"10\\.0\\.0\\.1:3333\" n=42\\}: kumod::smtp_server: hello\n" TS_RE
		 "  INFO main smtp_server\\{n=42\\}: kumod::smtp_server: from 10\\.0\\.0\\.1:3333 "
		 "on 127\\.0\\.0\\.1:2025\n" TS_RE "  INFO main timer: kumod::x: tick\n$");
	free(out);
	task_registry_clear();
}

TEST_IMPL(log_format_compact)
{
	char *dir = tl_dir(0);
	tl_filter("debug");
	log_set_format(LOG_FORMAT_COMPACT);
	log_debug("config", "plain");
	struct task *t = task_spawn("smtp_server", "s1", 0);
	task_set_field(t, "peer", "a\"b");
	struct task *prev = task_enter(t);
	log_info("kumod::smtp_server", "in span");
	task_exit(t, prev);
	char *out = tl_slurp(dir);
	tl_match(out, "^" TS_RE " DEBUG main config: plain\n" TS_RE
		      "  INFO main smtp_server: kumod::smtp_server: in span name=\"s1\" "
		      "peer=\"a\\\\\"b\"\n$");
	free(out);
	task_registry_clear();
}

TEST_IMPL(log_format_json)
{
	char *dir = tl_dir(1); /* json never has colour */
	tl_filter("info");
	log_set_format(LOG_FORMAT_JSON);
	log_info("kumo_server_common::start", "initialization complete");
	struct task *t = task_spawn("deliver", "q", 0);
	task_set_field(t, "queue", "gmail.com");
	task_set_field(t, "n", "7");
	struct task *prev = task_enter(t);
	log_warn("kumod::ready_queue", "say \"hi\"\n\x01\xff");
	task_exit(t, prev);
	char *out = tl_slurp(dir);
	tl_match(out,
		 "^\\{\"timestamp\":\"" TS_RE "\",\"level\":\"INFO\",\"fields\":\\{\"message\":"
		 "\"initialization complete\"\\},\"target\":\"kumo_server_common::start\","
		 "\"threadName\":\"main\"\\}\n");
	ASSERT(strstr(out, "\"level\":\"WARN\",\"fields\":{\"message\":\"say \\\"hi\\\"\\u000a"
			   "\\u0001\\ufffd\"},\"target\":\"kumod::ready_queue\","
			   "\"span\":{\"queue\":\"gmail.com\",\"n\":7,\"name\":\"deliver\"},"
			   "\"spans\":[{\"queue\":\"gmail.com\",\"n\":7,\"name\":\"deliver\"}],"
			   "\"threadName\":\"main\"}\n") != NULL);
	free(out);
	task_registry_clear();
}

/* auto (the default): a file is not a terminal, so plain text even with
 * NO_COLOR unset; "always" colours it; an unknown mode is refused. */
TEST_IMPL(log_color_only_when_wanted)
{
	char *dir = tl_dir(1);
	tl_filter("info");
	log_info("kumod", "c");
	char *out = tl_slurp(dir);
	tl_match(out, "^" TS_RE "  INFO main kumod: c\n$");
	free(out);
	ASSERT_EQ(log_set_color("sometimes"), -EINVAL);
	ASSERT_EQ(log_set_color("always"), 0);
	dir = tl_dir(0);
	log_info("kumod", "c");
	out = tl_slurp(dir);
	tl_match(out, "^\x1b\\[2m" TS_RE "\x1b\\[0m \x1b\\[32m INFO\x1b\\[0m main "
		      "\x1b\\[2mkumod:\x1b\\[0m c\n$");
	free(out);
	ASSERT_EQ(log_set_color("auto"), 0);
}

TEST_IMPL(log_huge_message_truncated)
{
	size_t big = 200 * 1024;
	char *msg = malloc(big + 1);
	memset(msg, 'a', big);
	msg[big] = 0;
	for (int fmt = LOG_FORMAT_FULL; fmt <= LOG_FORMAT_JSON; fmt++) {
		char *dir = tl_dir(0);
		tl_filter("info");
		log_set_format((enum log_format)fmt);
		log_info("kumod", "%s", msg);
		char *out = tl_slurp(dir);
		size_t n = strlen(out);
		ASSERT_LE(n, 65536);
		ASSERT_GT(n, 32768);
		ASSERT_EQ(out[n - 1], '\n');
		ASSERT(memchr(out, '\n', n) == out + n - 1);
		if (fmt == LOG_FORMAT_JSON)
			ASSERT(strstr(out, "aaa...[truncated]\"},\"target\":\"kumod\","
					   "\"threadName\":\"main\"}\n") != NULL);
		else
			ASSERT(strstr(out, "aaa...[truncated]\n") != NULL);
		free(out);
	}
	free(msg);
}

TEST_IMPL(log_dir_errors_and_reopen)
{
	ASSERT_EQ(log_set_dir("/nonexistent-kumod-dir/x"), -ENOENT);
	ASSERT_EQ(log_set_dir("/etc/passwd"), -ENOTDIR);
	char *dir = tl_dir(0);
	tl_filter("info");
	log_info("kumod", "one");
	/* SIGHUP after the file was moved away: the next line goes to a new file. */
	char path[256], moved[300];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	size_t n = (size_t)snprintf(path, sizeof(path), "%s/", dir);
	strftime(path + n, sizeof(path) - n, "log.%Y-%m-%d-%H", &tm);
	snprintf(moved, sizeof(moved), "%s.old", path);
	ASSERT_EQ(rename(path, moved), 0);
	log_reopen();
	log_info("kumod", "two");
	unlink(moved);
	char *out = tl_slurp(dir);
	tl_match(out, "^" TS_RE "  INFO main kumod: two\n$");
	free(out);
}

TEST_IMPL(log_escape_rules)
{
	char out[64];
	const char in[] = "a\"b\\c\n\x01\x7f\xff \xc3\xa9\xe2\x82";
	size_t n = log_escape(out, sizeof(out), in, sizeof(in) - 1);
	ASSERT_STR_EQ(out, "a\\\"b\\\\c\\x0a\\x01\\x7f\\xff \xc3\xa9\\xe2\\x82");
	ASSERT_EQ(n, strlen(out));

	/* Embedded NUL is escaped too: the length, not the terminator, counts. */
	n = log_escape(out, sizeof(out), "a\0b", 3);
	ASSERT_STR_EQ(out, "a\\x00b");

	/* Truncation never splits an escape or a UTF-8 sequence. */
	n = log_escape(out, 4, "ab\ncd", 5);
	ASSERT_STR_EQ(out, "ab");
	ASSERT_EQ(n, 2);
	n = log_escape(out, 3, "a\xc3\xa9", 3);
	ASSERT_STR_EQ(out, "a");
	n = log_escape(out, 1, "abc", 3);
	ASSERT_STR_EQ(out, "");
	ASSERT_EQ(log_escape(out, 0, "abc", 3), 0);
}
