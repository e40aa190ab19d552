/* SPDX-License-Identifier: Apache-2.0 */
/* Metrics registry: exposition text, escaping, collectors, histograms, JSON. */
#include "base/metrics.h"
#include "test.h"

static const char *render(struct buf *b)
{
	buf_reset(b);
	metrics_render_text(b);
	return buf_cstr(b);
}

static void seed_collector(struct metrics_scrape *sc, void *ctx)
{
	metrics_emit(sc, "connection_count", METRICS_GAUGE, "service", "esmtp_listener", 1);
	metrics_emit(sc, "connection_count", METRICS_GAUGE, "service",
		     "smtp_client:(alt1|alt2|alt3|alt4)?.gmail-smtp-in.l.google.com.", 0);
	if (*(int *)ctx)
		metrics_emit(sc, "delayed_count", METRICS_GAUGE, "queue", "gmail.com", 1);
}

TEST_IMPL(metrics_seed_sample_literal)
{
	int with_queue = 1;
	struct buf b;
	buf_init(&b);
	metrics_register_collector(seed_collector, &with_queue);
	metrics_register_collector(seed_collector, &with_queue); /* no-op */
	ASSERT_STR_EQ(render(&b), "# HELP connection_count connection_count\n"
				  "# TYPE connection_count gauge\n"
				  "connection_count{service=\"esmtp_listener\"} 1\n"
				  "connection_count{service=\"smtp_client:(alt1|alt2|alt3|alt4)?."
				  "gmail-smtp-in.l.google.com.\"} 0\n"
				  "# HELP delayed_count delayed_count\n"
				  "# TYPE delayed_count gauge\n"
				  "delayed_count{queue=\"gmail.com\"} 1\n");
	/* the queue went away: its series is gone, and so is the family */
	with_queue = 0;
	ASSERT(strstr(render(&b), "delayed_count") == NULL);
	buf_free(&b);
	metrics_reset();
}

TEST_IMPL(metrics_label_escaping)
{
	struct buf b;
	buf_init(&b);
	metrics_counter_add("total_messages_received", "service", "a\\b\"c\nd", 2);
	ASSERT(strstr(render(&b), "total_messages_received{service=\"a\\\\b\\\"c\\nd\"} 2\n"));
	buf_reset(&b);
	metrics_render_json(&b);
	ASSERT(strstr(buf_cstr(&b), "\"a\\\\b\\\"c\\u000ad\":2"));
	buf_free(&b);
	metrics_reset();
}

TEST_IMPL(metrics_counters_and_pruning)
{
	struct buf b;
	buf_init(&b);
	struct metrics_family *f = metrics_family("ready_full", METRICS_COUNTER, "service");
	struct metrics_series *s = metrics_series(f, "x");
	metrics_add(s, 1);
	metrics_add(metrics_series(f, "x"), 2.5);
	ASSERT(metrics_value(s) == 3.5);
	metrics_series(f, "y");
	ASSERT(strstr(render(&b), "# TYPE ready_full counter\nready_full{service=\"x\"} "
				  "3.5\nready_full{service=\"y\"} 0\n"));
	metrics_series_remove(f, "x");
	metrics_series_remove(f, "nope");
	ASSERT(strstr(render(&b), "service=\"x\"") == NULL);
	metrics_series_remove(f, "y");
	ASSERT_STR_EQ(render(&b), "");
	/* the tail pointer survived removing the last series */
	metrics_add(metrics_series(f, "z"), 1);
	ASSERT(strstr(render(&b), "ready_full{service=\"z\"} 1\n"));
	buf_free(&b);
	metrics_reset();
}

TEST_IMPL(metrics_histogram_buckets)
{
	struct buf b;
	buf_init(&b);
	metrics_histogram_observe("message_save_latency", NULL, NULL, 0.005); /* le=0.005 */
	metrics_histogram_observe("message_save_latency", NULL, NULL, 0.2);
	metrics_histogram_observe("message_save_latency", NULL, NULL, 60);
	const char *t = render(&b);
	ASSERT(strstr(t, "# TYPE message_save_latency histogram\n"));
	ASSERT(strstr(t, "message_save_latency_bucket{le=\"0.005\"} 1\n"));
	ASSERT(strstr(t, "message_save_latency_bucket{le=\"0.1\"} 1\n"));
	ASSERT(strstr(t, "message_save_latency_bucket{le=\"0.25\"} 2\n"));
	ASSERT(strstr(t, "message_save_latency_bucket{le=\"10\"} 2\n"));
	ASSERT(strstr(t, "message_save_latency_bucket{le=\"+Inf\"} 3\n"));
	ASSERT(strstr(t, "message_save_latency_sum 60.204999999999998\n"));
	ASSERT(strstr(t, "message_save_latency_count 3\n"));
	metrics_histogram_observe("lua_event_latency", "event", "init", 0.001);
	ASSERT(strstr(render(&b), "lua_event_latency_bucket{event=\"init\",le=\"0.005\"} 1\n"));
	buf_reset(&b);
	metrics_render_json(&b);
	ASSERT(strstr(buf_cstr(&b),
		      "\"lua_event_latency\":{\"help\":\"lua_event_latency\","
		      "\"type\":\"histogram\",\"value\":{\"event\":{\"init\":{\"avg\":"));
	buf_free(&b);
	metrics_reset();
}

TEST_IMPL(metrics_json_shape)
{
	struct buf b;
	buf_init(&b);
	metrics_set(metrics_series(metrics_family("memory_usage", METRICS_GAUGE, NULL), NULL), 42);
	metrics_counter_add("total_connection_count", "service", "esmtp_listener", 3);
	metrics_render_json(&b);
	ASSERT_STR_EQ(
	    buf_cstr(&b),
	    "{\"memory_usage\":{\"help\":\"memory_usage\",\"type\":\"gauge\",\"value\":42},"
	    "\"total_connection_count\":{\"help\":\"total_connection_count\",\"type\":"
	    "\"counter\",\"value\":{\"service\":{\"esmtp_listener\":3}}}}\n");
	buf_free(&b);
	metrics_reset();
}

TEST_IMPL(metrics_names)
{
	static const struct {
		const char *name;
		int label, want;
	} cases[] = {
	    {"connection_count", 0, 1}, {"a:b", 0, 1}, {"a:b", 1, 0}, {"9x", 0, 0}, {"", 0, 0},
	    {"with space", 0, 0},	{"_x9", 1, 1},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ASSERT_EQ(metrics_name_valid(cases[i].name, cases[i].label), cases[i].want);
}

TEST_IMPL(metrics_declared_catalogue)
{
	static const struct metrics_decl d[] = {
	    {"b_total", METRICS_COUNTER, "service", "things | done"},
	    {"a_gauge", METRICS_GAUGE, NULL, "level"},
	};
	metrics_declare(d, 2);
	metrics_declare(d, 2); /* idempotent */
	struct buf b;
	buf_init(&b);
	metrics_list(&b, 1);
	ASSERT_STR_EQ(buf_cstr(&b), "| Name | Type | Labels | Meaning |\n|---|---|---|---|\n"
				    "| `a_gauge` | gauge | — | level |\n"
				    "| `b_total` | counter | `service` | things \\| done |\n");
	ASSERT(metrics_first_undeclared() == NULL);
	metrics_counter_add("c_undeclared", NULL, NULL, 1);
	ASSERT_STR_EQ(metrics_first_undeclared(), "c_undeclared");
	/* declared families render only once they have samples, HELP = name */
	ASSERT(strstr(render(&b), "a_gauge") == NULL);
	buf_free(&b);
	metrics_reset();
}
