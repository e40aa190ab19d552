/* SPDX-License-Identifier: Apache-2.0 */
/* The loop context (one per loop thread; one thread today), and the opt-in
 * bounded busy poll (kumo.set_busy_poll). */
#include "io/loop.h"

#include <stdlib.h>

#include "base/xalloc.h"
#include "ktrace.h"

static struct {
	uv_loop_t loop;
	int initialised;
	int shutting_down;
	/* Busy poll: while `spinning`, an idle handle keeps libuv's poll timeout
	 * at zero, so the loop does not sleep in epoll_wait. It stops when no
	 * I/O was noted for busy_ns. */
	uv_idle_t idle;
	uint64_t busy_ns;
	uint64_t window_start_ns;
	uint64_t last_io_ns;
	uint64_t io_seq, seen_seq, window_io;
	int spinning;
	struct kumod_busy_poll_stats stats;
} ctx;

struct loop_after {
	uv_timer_t timer; /* freed in its close callback */
	void (*fn)(uint64_t id);
	uint64_t id;
};

static void loop_after_closed(uv_handle_t *h)
{
	free(h->data);
}

static void loop_after_fire(uv_timer_t *t)
{
	struct loop_after *a = t->data;
	void (*fn)(uint64_t) = a->fn;
	uint64_t id = a->id;
	uv_close((uv_handle_t *)t, loop_after_closed);
	fn(id);
}

void kumod_loop_after(uv_loop_t *loop, uint64_t ms, void (*fn)(uint64_t id), uint64_t id)
{
	struct loop_after *a = xcalloc(1, sizeof(*a));
	a->fn = fn;
	a->id = id;
	uv_timer_init(loop, &a->timer);
	a->timer.data = a;
	uv_timer_start(&a->timer, loop_after_fire, ms, 0);
	uv_unref((uv_handle_t *)&a->timer);
}

uv_loop_t *kumod_loop(void)
{
	if (!ctx.initialised) {
		uv_loop_init(&ctx.loop);
		uv_idle_init(&ctx.loop, &ctx.idle);
		/* Never keeps the loop alive by itself (shutdown ends uv_run). */
		uv_unref((uv_handle_t *)&ctx.idle);
		ctx.initialised = 1;
	}
	return &ctx.loop;
}

static void close_any(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

int kumod_loop_close(void)
{
	if (!ctx.initialised)
		return 0;
	uv_walk(&ctx.loop, close_any, NULL);
	uv_run(&ctx.loop, UV_RUN_DEFAULT);
	int rc = uv_loop_close(&ctx.loop);
	if (rc == 0)
		ctx.initialised = 0;
	return rc;
}

int kumod_shutting_down(void)
{
	return ctx.shutting_down;
}

static void busy_poll_stop(uint64_t now)
{
	uv_idle_stop(&ctx.idle);
	ctx.spinning = 0;
	uint64_t tail = now > ctx.last_io_ns ? now - ctx.last_io_ns : 0;
	ctx.stats.windows++;
	ctx.stats.tail_ns += tail;
	KTRACE(loop_busy_poll_end, (now - ctx.window_start_ns) / 1000, ctx.window_io, tail / 1000);
}

void kumod_set_shutting_down(void)
{
	ctx.shutting_down = 1;
	if (ctx.spinning)
		busy_poll_stop(uv_hrtime());
	ctx.busy_ns = 0;
}

static void idle_cb(uv_idle_t *h)
{
	(void)h;
	uint64_t now = uv_hrtime();
	if (ctx.io_seq != ctx.seen_seq) {
		ctx.window_io += ctx.io_seq - ctx.seen_seq;
		ctx.seen_seq = ctx.io_seq;
		ctx.last_io_ns = now;
		return;
	}
	if (now - ctx.last_io_ns >= ctx.busy_ns)
		busy_poll_stop(now);
}

static void busy_poll_begin(void)
{
	uint64_t now = uv_hrtime();
	ctx.spinning = 1;
	ctx.window_start_ns = ctx.last_io_ns = now;
	ctx.seen_seq = ctx.io_seq;
	ctx.window_io = 1;
	uv_idle_start(&ctx.idle, idle_cb);
	KTRACE(loop_busy_poll_begin, ctx.busy_ns / 1000);
}

void kumod_loop_set_busy_poll(uint64_t usec)
{
	kumod_loop();
	if (ctx.spinning && !usec)
		busy_poll_stop(uv_hrtime());
	ctx.busy_ns = ctx.shutting_down ? 0 : usec * 1000;
}

uint64_t kumod_loop_busy_poll_us(void)
{
	return ctx.busy_ns / 1000;
}

struct kumod_busy_poll_stats kumod_loop_busy_poll_stats(void)
{
	return ctx.stats;
}

void kumod_loop_note_io(void)
{
	ctx.io_seq++;
	if (ctx.busy_ns && !ctx.spinning)
		busy_poll_begin();
}
