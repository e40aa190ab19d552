/* SPDX-License-Identifier: Apache-2.0 */
/* The introspection server behind `kumod --tokio-console`: serves the task
 * registry, loop statistics and queue snapshots as newline-delimited JSON
 * (docs/console-protocol.md) to kumo-console and scripts, and optionally
 * records the same frames to a file. It reads daemon state and never
 * changes it; a slow viewer is shed, never waited for.
 * Owns: its listener, timer, viewer connections and the recording file; it
 * is itself a task (kind console_server) and so is each viewer.
 * Callers: kumod/main.c (config, start, stop); queue modules register
 * snapshot sources. Loop thread only. */
#ifndef KUMOD_CTL_INTROSPECT_H
#define KUMOD_CTL_INTROSPECT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/buf.h"

#define INTROSPECT_DEFAULT_BIND "127.0.0.1:6669"
#define INTROSPECT_DEFAULT_RETENTION_NS (3600ull * 1000000000ull)
#define INTROSPECT_DEFAULT_PUBLISH_NS (1000ull * 1000000ull)

struct introspect_config {
	char bind[256];		/* TOKIO_CONSOLE_BIND, HOST:PORT or [V6]:PORT */
	uint64_t retention_ns;	/* TOKIO_CONSOLE_RETENTION */
	uint64_t publish_ns;	/* TOKIO_CONSOLE_PUBLISH_INTERVAL */
	char record_path[1024]; /* TOKIO_CONSOLE_RECORD_PATH; "" = no recording */
};

/* Reads the TOKIO_CONSOLE_* variables (defaults for unset ones). A bad value
 * returns -EINVAL with a message naming the variable in err. */
int introspect_config_from_env(struct introspect_config *cfg, char *err, size_t errlen);

/* Binds, opens the recording and starts publishing. 0, or -errno with a
 * message naming the variable at fault in err (nothing is left running). */
int introspect_start(uv_loop_t *loop, const struct introspect_config *cfg, char *err,
		     size_t errlen);
/* Disconnects viewers, flushes and closes the recording, closes the
 * handles (their close callbacks finish the job inside uv_run). */
void introspect_stop(void);
int introspect_running(void);
/* The bound address ("127.0.0.1:6669"), "" when not running. */
const char *introspect_address(void);

/* --- queue snapshots -------------------------------------------------------
 * A queue module registers a source; every publish tick (and for each new
 * viewer) the server calls it, and it describes each of its queues:
 *
 *	static void q_source(struct introspect_queues *qs, void *ctx)
 *	{
 *		for (each queue q) {
 *			struct buf *b = introspect_queue_begin(qs, "scheduled", q->name);
 *			console_json_kv_u64(b, "count", q->count);	// proto/console_proto.h
 *			console_json_kv_u64(b, "next_due_ms", q->next_due_ms);
 *			introspect_queue_end(qs);
 *		}
 *	}
 *	introspect_register_queue_source(q_source, NULL);
 *
 * begin() opens the JSON object {"kind":..,"name":.. ; the source appends
 * members with the console_json_kv_* writers; end() closes it. Kinds the
 * viewer knows: "scheduled" (count, next_due_ms, suspended) and "ready"
 * (count, connections, connection_limit, max_ready, suspended, throttled,
 * delivered, transfail, failed, dispatchers[]); other members are shown
 * as they are. Only queues whose object changed since the previous tick
 * are sent to viewers. A source may be registered before the server
 * starts, and whether or not it ever does. */
struct introspect_queues;
typedef void (*introspect_queue_fn)(struct introspect_queues *qs, void *ctx);
void introspect_register_queue_source(introspect_queue_fn fn, void *ctx);
void introspect_unregister_queue_source(introspect_queue_fn fn, void *ctx);
struct buf *introspect_queue_begin(struct introspect_queues *qs, const char *kind,
				   const char *name);
void introspect_queue_end(struct introspect_queues *qs);

#endif
