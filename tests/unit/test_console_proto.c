/* SPDX-License-Identifier: Apache-2.0 */
/* Introspection protocol: framing, command decoding, durations, JSON writers;
 * task registry additions used by the server (hold, watch, loop stats). */
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/task.h"
#include "proto/console_proto.h"
#include "proto/json_compact.h"
#include "test.h"

TEST_IMPL(console_line_framing)
{
	static const struct {
		const char *name, *in;
		size_t max;
		int want;
		size_t want_len;
	} cases[] = {
	    {"complete", "{\"cmd\":\"pause\"}\n", 100, 16, 15},
	    {"crlf", "{}\r\nrest", 100, 4, 2},
	    {"need more", "{\"cmd\"", 100, 0, 0},
	    {"empty line", "\n", 100, 1, 0},
	    {"at limit", "abcd\n", 4, 5, 4},
	    {"over limit", "abcdef", 4, -E2BIG, 0},
	    {"newline past limit", "abcdef\n", 4, -E2BIG, 0},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		size_t len = 0;
		int rc = console_line_next(cases[i].in, strlen(cases[i].in), cases[i].max, &len);
		if (rc != cases[i].want)
			TEST_FAIL("%s: rc %d, want %d", cases[i].name, rc, cases[i].want);
		if (rc > 0)
			ASSERT_EQ(len, cases[i].want_len);
	}
}

TEST_IMPL(console_cmd_decode_table)
{
	static const struct {
		const char *in;
		int ok;
		enum console_cmd_kind kind;
		uint64_t id;
		const char *err; /* substring of the error */
	} cases[] = {
	    {"{\"cmd\":\"pause\"}", 1, CONSOLE_CMD_PAUSE, 0, NULL},
	    {" { \"cmd\" : \"resume\" , \"extra\" : [1, {\"a\": null}] } ", 1, CONSOLE_CMD_RESUME,
	     0, NULL},
	    {"{\"cmd\":\"watch_task\",\"id\":17}", 1, CONSOLE_CMD_WATCH_TASK, 17, NULL},
	    {"{\"id\":18,\"cmd\":\"details\"}", 1, CONSOLE_CMD_WATCH_TASK, 18, NULL},
	    {"{\"cmd\":\"unwatch_task\"}", 1, CONSOLE_CMD_UNWATCH_TASK, 0, NULL},
	    {"{\"cmd\":\"snapshot\"}", 1, CONSOLE_CMD_SNAPSHOT, 0, NULL},
	    {"{\"cmd\":\"reboot\"}", 0, 0, 0, "unknown command"},
	    {"{\"cmd\":\"pausefoo_with_a_very_long_name_indeed\"}", 0, 0, 0, "unknown command"},
	    {"{\"cmd\":\"watch_task\"}", 0, 0, 0, "missing member \"id\""},
	    {"{\"cmd\":\"watch_task\",\"id\":-1}", 0, 0, 0, "positive integer"},
	    {"{\"cmd\":\"watch_task\",\"id\":1.5}", 0, 0, 0, "positive integer"},
	    {"{\"cmd\":\"watch_task\",\"id\":\"7\"}", 0, 0, 0, "positive integer"},
	    {"{\"cmd\":\"watch_task\",\"id\":99999999999999999999}", 0, 0, 0, "positive integer"},
	    {"{\"cmd\":\"pause\",\"cmd\":\"resume\"}", 0, 0, 0, "duplicate"},
	    {"{\"cmd\":7}", 0, 0, 0, "must be a string"},
	    {"{}", 0, 0, 0, "missing member \"cmd\""},
	    {"[]", 0, 0, 0, "JSON object"},
	    {"pause", 0, 0, 0, "JSON object"},
	    {"{\"cmd\":\"pause\"} x", 0, 0, 0, "trailing"},
	    {"{\"cmd\":\"pause\"", 0, 0, 0, "expected"},
	    {"{\"cmd\":\"pa\\u0075se\"}", 0, 0, 0, "unknown command"},
	    {"{\"cmd\":\"pause\",\"x\":\"\xff\"}", 0, 0, 0, "UTF-8"},
	    {"{\"cmd\":\"pause\",\"x\":\"a\tb\"}", 0, 0, 0, "control character"},
	    {"{\"cmd\":\"pause\",\"x\":[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}", 0, 0, 0,
	     "too deep"},
	    {"{\"cmd\":\"pause\",\"x\":tru}", 0, 0, 0, "unexpected"},
	    {"{\"cmd\":\"pause\",\"x\":01}", 0, 0, 0, "expected"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct console_cmd cmd;
		char err[128] = "";
		size_t pos = 0;
		int rc = console_cmd_decode(cases[i].in, strlen(cases[i].in), &cmd, err,
					    sizeof(err), &pos);
		if (cases[i].ok) {
			if (rc != 0)
				TEST_FAIL("'%s': error %s", cases[i].in, err);
			ASSERT_EQ(cmd.kind, cases[i].kind);
			ASSERT_EQ(cmd.id, cases[i].id);
		} else {
			if (rc != -EINVAL)
				TEST_FAIL("'%s': accepted", cases[i].in);
			if (!strstr(err, cases[i].err))
				TEST_FAIL("'%s': error '%s', want '%s'", cases[i].in, err,
					  cases[i].err);
			ASSERT_LE(pos, strlen(cases[i].in));
		}
	}
}

/* The drill-down views' commands: their string and limit members. */
TEST_IMPL(console_cmd_decode_views)
{
	static const struct {
		const char *in;
		int ok;
		enum console_cmd_kind kind;
		const char *queue, *after, *message_id;
		uint64_t id, limit;
		const char *err; /* substring of the error */
	} cases[] = {
	    {"{\"cmd\":\"session\",\"id\":9}", 1, CONSOLE_CMD_SESSION, "", "", "", 9, 0, NULL},
	    {"{\"cmd\":\"queue_messages\",\"queue\":\"example.com\"}", 1,
	     CONSOLE_CMD_QUEUE_MESSAGES, "example.com", "", "", 0, CONSOLE_LIMIT_DEFAULT, NULL},
	    {"{\"limit\":500,\"after\":\"0123abcd\",\"cmd\":\"queue_messages\",\"queue\":\"a@b."
	     "c\"}",
	     1, CONSOLE_CMD_QUEUE_MESSAGES, "a@b.c", "0123abcd", "", 0, 500, NULL},
	    {"{\"cmd\":\"message\",\"message_id\":\"00ff\"}", 1, CONSOLE_CMD_MESSAGE, "", "",
	     "00ff", 0, 0, NULL},
	    {"{\"cmd\":\"session\"}", 0, 0, NULL, NULL, NULL, 0, 0, "missing member \"id\""},
	    {"{\"cmd\":\"queue_messages\"}", 0, 0, NULL, NULL, NULL, 0, 0,
	     "missing member \"queue\""},
	    {"{\"cmd\":\"queue_messages\",\"queue\":\"\"}", 0, 0, NULL, NULL, NULL, 0, 0,
	     "missing member \"queue\""},
	    {"{\"cmd\":\"queue_messages\",\"queue\":7}", 0, 0, NULL, NULL, NULL, 0, 0,
	     "expected a string"},
	    {"{\"cmd\":\"queue_messages\",\"queue\":\"q\",\"limit\":0}", 0, 0, NULL, NULL, NULL, 0,
	     0, "\"limit\" must be"},
	    {"{\"cmd\":\"queue_messages\",\"queue\":\"q\",\"limit\":501}", 0, 0, NULL, NULL, NULL,
	     0, 0, "\"limit\" must be"},
	    {"{\"cmd\":\"queue_messages\",\"queue\":\"q\",\"limit\":\"5\"}", 0, 0, NULL, NULL, NULL,
	     0, 0, "\"limit\" must be"},
	    {"{\"cmd\":\"queue_messages\",\"queue\":\"q\",\"queue\":\"r\"}", 0, 0, NULL, NULL, NULL,
	     0, 0, "duplicate"},
	    {"{\"cmd\":\"queue_messages\",\"queue\":\"q\",\"after\":"
	     "\"0123456789012345678901234567890123456789012345678901234567890123456789\"}",
	     0, 0, NULL, NULL, NULL, 0, 0, "\"after\" is too long"},
	    {"{\"cmd\":\"message\"}", 0, 0, NULL, NULL, NULL, 0, 0,
	     "missing member \"message_id\""},
	    {"{\"cmd\":\"message\",\"message_id\":[]}", 0, 0, NULL, NULL, NULL, 0, 0,
	     "expected a string"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct console_cmd cmd;
		char err[128] = "";
		size_t pos = 0;
		int rc = console_cmd_decode(cases[i].in, strlen(cases[i].in), &cmd, err,
					    sizeof(err), &pos);
		if (!cases[i].ok) {
			if (rc != -EINVAL)
				TEST_FAIL("'%s': accepted", cases[i].in);
			if (!strstr(err, cases[i].err))
				TEST_FAIL("'%s': error '%s', want '%s'", cases[i].in, err,
					  cases[i].err);
			ASSERT_LE(pos, strlen(cases[i].in));
			continue;
		}
		if (rc != 0)
			TEST_FAIL("'%s': error %s", cases[i].in, err);
		ASSERT_EQ(cmd.kind, cases[i].kind);
		ASSERT_EQ(cmd.id, cases[i].id);
		ASSERT_STR_EQ(cmd.queue, cases[i].queue);
		ASSERT_STR_EQ(cmd.after, cases[i].after);
		ASSERT_STR_EQ(cmd.message_id, cases[i].message_id);
		if (cases[i].kind == CONSOLE_CMD_QUEUE_MESSAGES)
			ASSERT_EQ(cmd.limit, cases[i].limit);
	}
}

TEST_IMPL(console_json_validate_values)
{
	static const char *const good[] = {
	    "1",  "-0.5e+3",	       "\"\\ud83d\\ude00\"",	 "[]",
	    "{}", "[true,false,null]", " {\"a\":{\"b\":[1,2]}} "};
	static const char *const bad[] = {"", "01", "[1,]", "{\"a\"}", "\"\\x\"", "1 2", "nul"};
	for (size_t i = 0; i < ARRAY_SIZE(good); i++)
		if (console_json_validate(good[i], strlen(good[i]), NULL) != 0)
			TEST_FAIL("rejected %s", good[i]);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		if (console_json_validate(bad[i], strlen(bad[i]), NULL) == 0)
			TEST_FAIL("accepted %s", bad[i]);
}

TEST_IMPL(console_durations)
{
	static const struct {
		const char *in;
		int ok;
		uint64_t ns;
	} cases[] = {
	    {"30s", 1, 30000000000ull},
	    {"5m", 1, 300000000000ull},
	    {"1h", 1, 3600000000000ull},
	    {"250ms", 1, 250000000ull},
	    {"1500us", 1, 1500000ull},
	    {"1h30m", 1, 5400000000000ull},
	    {"1h 30m", 1, 5400000000000ull},
	    {"2 days", 1, 172800000000000ull},
	    {"0s", 1, 0},
	    {"1000", 0, 0},
	    {"", 0, 0},
	    {"s", 0, 0},
	    {"10parsecs", 0, 0},
	    {"-1s", 0, 0},
	    {"1.5s", 0, 0},
	    {"99999999999999999999s", 0, 0},
	    {"9999999999999d", 0, 0},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		uint64_t ns = 0;
		int rc = console_parse_duration(cases[i].in, &ns);
		if ((rc == 0) != cases[i].ok)
			TEST_FAIL("'%s': rc %d", cases[i].in, rc);
		if (rc == 0)
			ASSERT_EQ(ns, cases[i].ns);
	}
}

TEST_IMPL(console_json_writers)
{
	struct buf b;
	buf_init(&b);
	buf_appendc(&b, '{');
	console_json_kv_str(&b, "s", "a\"b\\c\n\x01\xff\xc3\xa9");
	console_json_kv_u64(&b, "u", UINT64_MAX);
	console_json_kv_i64(&b, "i", INT64_MIN);
	console_json_kv_bool(&b, "t", 1);
	console_json_key(&b, "a");
	buf_appendc(&b, '[');
	console_json_sep(&b);
	console_json_u64(&b, 0);
	console_json_sep(&b);
	console_json_u64(&b, 42);
	buf_appends(&b, "]}");
	ASSERT_STR_EQ(buf_cstr(&b), "{\"s\":\"a\\\"b\\\\c\\n\\u0001\xEF\xBF\xBD\xc3\xa9\","
				    "\"u\":18446744073709551615,\"i\":-9223372036854775808,"
				    "\"t\":true,\"a\":[0,42]}");
	ASSERT_EQ(console_json_validate(b.data, b.len, NULL), 0);
	buf_reset(&b);
	console_error_frame(&b, "bad \"thing\"", 7);
	ASSERT_STR_EQ(buf_cstr(&b),
		      "{\"type\":\"error\",\"error\":\"bad \\\"thing\\\"\",\"at\":7}\n");
	buf_free(&b);
}

static int count_one(struct task *t, void *arg)
{
	(*(int *)arg)++;
	return 0;
}

static int stop_at_two(struct task *t, void *arg)
{
	return ++(*(int *)arg) == 2 ? 2 : 0;
}

/* The registry keeps closed tasks a viewer has not seen (hold), keeps
 * histograms only while watched and reports the longest poll. */
TEST_IMPL(console_registry_hold_watch_loop_stats)
{
	task_registry_set_retention(0);
	struct task *a = task_spawn("test", "a", 0);
	struct task *b = task_spawn("test", "b", 0);
	uint64_t seen = task_registry_seq();
	task_registry_hold(seen);
	uint64_t ida = a->id, idb = b->id;
	task_close(a);
	task_registry_reap(clock_wall_ns() + 1000);
	ASSERT(task_lookup(ida) != NULL); /* closed after the viewer's seq: held */
	task_registry_hold(task_registry_seq());
	task_registry_reap(clock_wall_ns() + 1000);
	ASSERT(task_lookup(ida) == NULL);
	ASSERT(task_registry_last_id() == idb);

	task_watch(b, 1);
	task_watch(b, 1);
	ASSERT(b->hists != NULL);
	task_wake(b);
	struct task *prev = task_enter(b);
	task_exit(b, prev);
	ASSERT_EQ(b->hists->poll.count, 1);
	ASSERT_EQ(b->hists->sched.count, 1);
	task_watch(b, 0);
	ASSERT(b->hists != NULL);
	task_watch(b, 0);
	ASSERT(b->hists == NULL);

	struct task_loop_stats ls;
	task_registry_loop_stats(&ls);
	ASSERT_GE(ls.polls, 1);
	ASSERT_EQ(ls.longest_poll_task, idb);
	task_registry_loop_stats(&ls);
	ASSERT_EQ(ls.longest_poll_ns, 0); /* reset by the previous call */

	struct task *c = task_spawn("test", "c", 0);
	int n = 0;
	ASSERT_EQ(task_foreach_after(idb, count_one, &n), 0);
	ASSERT_EQ(n, 1); /* only c comes after b */
	n = 0;
	ASSERT_EQ(task_foreach_after(0, stop_at_two, &n), 2);
	(void)c;
	task_registry_hold(UINT64_MAX);
	task_registry_clear();
}

/* Closed tasks are capped by count, oldest first, whatever the retention. */
TEST_IMPL(console_registry_retained_max)
{
	task_registry_set_retention(3600ull * 1000000000ull);
	task_registry_set_retained_max(2);
	uint64_t ids[4];
	for (int i = 0; i < 4; i++) {
		struct task *t = task_spawn("test", "t", 0);
		ids[i] = t->id;
		task_close(t);
	}
	task_registry_reap(clock_wall_ns());
	ASSERT(task_lookup(ids[0]) == NULL);
	ASSERT(task_lookup(ids[1]) == NULL);
	ASSERT(task_lookup(ids[2]) != NULL);
	ASSERT(task_lookup(ids[3]) != NULL);
	ASSERT_EQ(task_count(NULL), 2);
	task_registry_clear();
}

/* json_compact writes what json_dumps(JSON_COMPACT | JSON_ENCODE_ANY) does,
 * byte for byte, over random trees (strings with every escape, UTF-8,
 * integers at the limits, reals of every shape) and fixed cases. */
static unsigned long long jc_seed = 88172645463325252ull;

static unsigned jc_rand(unsigned n)
{
	jc_seed ^= jc_seed << 13;
	jc_seed ^= jc_seed >> 7;
	jc_seed ^= jc_seed << 17;
	return (unsigned)(jc_seed % n);
}

static json_t *jc_string(void)
{
	static const char *const parts[] = {
	    "a",    "\"", "\\",	      "\n",	      "\r",
	    "\t",   "\b", "\f",	      "\x01",	      "\x1f",
	    "\x7f", "/",  "\xc3\xa9", "\xe2\x80\xa8", "\xf0\x9f\x98\x80",
	    " ",    "key"};
	char s[128] = "";
	unsigned n = jc_rand(8);
	for (unsigned i = 0; i < n; i++)
		strcat(s, parts[jc_rand(ARRAY_SIZE(parts))]);
	return json_string(s);
}

static json_t *jc_value(int depth)
{
	static const double reals[] = {0.0,  -0.0,    1.0,	  -2.5,	       0.1,	  1e20,
				       1e-7, 1.5e300, -3.25e-300, 123456789.0, 2.0 / 3.0, 1e16};
	static const json_int_t ints[] = {0, 1, -1, 42, INT64_MAX, INT64_MIN, 1000000007};
	switch (jc_rand(depth > 3 ? 6 : 8)) {
	case 0:
		return json_null();
	case 1:
		return json_boolean(jc_rand(2));
	case 2:
		return json_integer(ints[jc_rand(ARRAY_SIZE(ints))]);
	case 3:
		return json_real(reals[jc_rand(ARRAY_SIZE(reals))]);
	case 4:
	case 5:
		return jc_string();
	case 6: {
		json_t *a = json_array();
		for (unsigned i = jc_rand(5); i; i--)
			json_array_append_new(a, jc_value(depth + 1));
		return a;
	}
	default: {
		json_t *o = json_object();
		for (unsigned i = jc_rand(5); i; i--) {
			json_t *k = jc_string();
			json_object_set_new(o, json_string_value(k), jc_value(depth + 1));
			json_decref(k);
		}
		return o;
	}
	}
}

TEST_IMPL(json_compact_matches_jansson)
{
	struct buf b;
	buf_init(&b);
	for (int i = 0; i < 3000; i++) {
		json_t *v = jc_value(0);
		char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		buf_reset(&b);
		json_compact(&b, v);
		if (strcmp(buf_cstr(&b), want) != 0)
			TEST_FAIL("tree %d: json_compact wrote %s, jansson %s", i, buf_cstr(&b),
				  want);
		free(want);
		json_decref(v);
	}
	buf_free(&b);
}
