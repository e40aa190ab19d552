/* SPDX-License-Identifier: Apache-2.0 */
/* The introspection server end to end on a private loop: queue sources in
 * the snapshot, queue deltas and removals in updates, configuration errors.
 * A blocking client runs on a second thread; the loop thread owns the server. */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/task.h"
#include "ctl/introspect.h"
#include "proto/console_proto.h"
#include "test.h"

static struct {
	const char *name;
	unsigned count;
	int present;
} tq[3] = {{"a.example", 1, 1}, {"b.example", 2, 1}, {"c.example", 3, 1}};

static void test_source(struct introspect_queues *qs, void *ctx)
{
	for (size_t i = 0; i < ARRAY_SIZE(tq); i++) {
		if (!tq[i].present)
			continue;
		struct buf *b = introspect_queue_begin(qs, "scheduled", tq[i].name);
		console_json_kv_u64(b, "count", tq[i].count);
		introspect_queue_end(qs);
	}
}

static atomic_int phase; /* 0 snapshot seen -> 1 change made -> 2 delta seen / failed */
static int port;
static char failure[256];

static json_t *read_frame(FILE *f)
{
	char line[CONSOLE_FRAME_MAX + 2];
	if (!fgets(line, sizeof(line), f))
		return NULL;
	return json_loads(line, 0, NULL);
}

static int queue_count(json_t *queues, const char *name)
{
	size_t i;
	json_t *q;
	json_array_foreach(
	    queues, i,
	    q) if (!strcmp(json_string_value(json_object_get(q, "name")),
			   name)) return (int)json_integer_value(json_object_get(q, "count"));
	return -1;
}

static void *client(void *arg)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		snprintf(failure, sizeof(failure), "connect: %s", strerror(errno));
		atomic_store(&phase, 2);
		return NULL;
	}
	FILE *f = fdopen(fd, "r");
	json_t *fr;
	int snap_ok = 0, delta_ok = 0;
	while (!delta_ok && (fr = read_frame(f))) {
		const char *type = json_string_value(json_object_get(fr, "type"));
		json_t *queues = json_object_get(fr, "queues");
		if (type && !strcmp(type, "snapshot") && json_array_size(queues) == 3 &&
		    queue_count(queues, "b.example") == 2) {
			snap_ok = 1;
			atomic_store(&phase, 1);
		} else if (snap_ok && type && !strcmp(type, "update") &&
			   queue_count(queues, "a.example") == 10) {
			json_t *rm = json_array_get(json_object_get(fr, "queues_removed"), 0);
			if (json_array_size(queues) != 1 || !rm ||
			    strcmp(json_string_value(json_object_get(rm, "name")), "c.example"))
				snprintf(failure, sizeof(failure), "bad delta");
			delta_ok = 1;
		}
		json_decref(fr);
	}
	if (!delta_ok && !failure[0])
		snprintf(failure, sizeof(failure), "no queue delta (snapshot seen: %d)", snap_ok);
	fclose(f);
	atomic_store(&phase, 2);
	return NULL;
}

static void watch_cb(uv_timer_t *t)
{
	static int changed;
	if (atomic_load(&phase) == 1 && !changed) {
		tq[0].count = 10;  /* changed */
		tq[2].present = 0; /* removed; b unchanged: not sent */
		changed = 1;
	}
	if (atomic_load(&phase) == 2) {
		introspect_stop();
		uv_close((uv_handle_t *)t, NULL);
	}
}

TEST_IMPL(introspect_queue_snapshot_and_deltas)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct introspect_config cfg;
	char err[256];
	setenv("TOKIO_CONSOLE_BIND", "127.0.0.1:0", 1);
	setenv("TOKIO_CONSOLE_PUBLISH_INTERVAL", "20ms", 1);
	ASSERT_EQ(introspect_config_from_env(&cfg, err, sizeof(err)), 0);
	introspect_register_queue_source(test_source, NULL);
	ASSERT_EQ(introspect_start(&loop, &cfg, err, sizeof(err)), 0);
	const char *addr = introspect_address();
	port = atoi(strrchr(addr, ':') + 1);
	ASSERT_GT(port, 0);
	pthread_t th;
	pthread_create(&th, NULL, client, NULL);
	uv_timer_t watch;
	uv_timer_init(&loop, &watch);
	uv_timer_start(&watch, watch_cb, 5, 5);
	uv_run(&loop, UV_RUN_DEFAULT);
	pthread_join(th, NULL);
	introspect_unregister_queue_source(test_source, NULL);
	ASSERT_EQ(uv_loop_close(&loop), 0);
	task_registry_clear();
	if (failure[0])
		TEST_FAIL("%s", failure);
}

TEST_IMPL(introspect_config_errors_name_the_variable)
{
	static const struct {
		const char *var, *value;
	} cases[] = {
	    {"TOKIO_CONSOLE_RETENTION", "soon"},
	    {"TOKIO_CONSOLE_PUBLISH_INTERVAL", "5"},
	    {"TOKIO_CONSOLE_PUBLISH_INTERVAL", "1ms"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct introspect_config cfg;
		char err[256] = "";
		unsetenv("TOKIO_CONSOLE_RETENTION");
		unsetenv("TOKIO_CONSOLE_PUBLISH_INTERVAL");
		setenv(cases[i].var, cases[i].value, 1);
		ASSERT_EQ(introspect_config_from_env(&cfg, err, sizeof(err)), -EINVAL);
		if (!strstr(err, cases[i].var))
			TEST_FAIL("%s=%s: '%s'", cases[i].var, cases[i].value, err);
	}
	unsetenv("TOKIO_CONSOLE_RETENTION");
	unsetenv("TOKIO_CONSOLE_PUBLISH_INTERVAL");
	unsetenv("TOKIO_CONSOLE_BIND");
	struct introspect_config cfg;
	char err[256];
	ASSERT_EQ(introspect_config_from_env(&cfg, err, sizeof(err)), 0);
	ASSERT_STR_EQ(cfg.bind, "127.0.0.1:6669");
	ASSERT_EQ(cfg.retention_ns, 3600ull * 1000000000ull);
	ASSERT_EQ(cfg.publish_ns, 1000000000ull);
	uv_loop_t loop;
	uv_loop_init(&loop);
	snprintf(cfg.bind, sizeof(cfg.bind), "256.1.1.1:99");
	ASSERT_EQ(introspect_start(&loop, &cfg, err, sizeof(err)), -EINVAL);
	ASSERT(strstr(err, "TOKIO_CONSOLE_BIND") != NULL);
	ASSERT(!introspect_running());
	uv_loop_close(&loop);
}
