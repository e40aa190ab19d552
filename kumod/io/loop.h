/* SPDX-License-Identifier: Apache-2.0 */
/* The daemon's event loop context: the one libuv loop kumod runs today.
 * main.c creates it; every module that starts handles asks for it here.
 *
 * Busy poll (opt-in, kumo.set_busy_poll): after socket input, the loop keeps
 * polling without sleeping until no input arrived for the configured time,
 * then sleeps in epoll_wait as usual. Trades CPU during steady traffic for
 * not having peers pay the wake-up of a sleeping loop (docs/performance.md). */
#ifndef KUMOD_IO_LOOP_H
#define KUMOD_IO_LOOP_H

#include <stdint.h>
#include <uv.h>

uv_loop_t *kumod_loop(void);
/* 1 once graceful shutdown began (listeners stop accepting). */
int kumod_shutting_down(void);
/* For a tool whose work is done: closes every handle still on the loop
 * (the busy-poll idle handle included), runs their close callbacks and
 * closes the loop; 0 or uv_loop_close()'s error. */
int kumod_loop_close(void);
/* Also ends busy polling for good. */
void kumod_set_shutting_down(void);

/* A one-shot timer carrying an id: after ms, fn(id) runs once on loop and
 * the timer frees itself. It never keeps the loop running (a shutdown does
 * not wait for it): fn must look the id up and do nothing when what it
 * names is gone. */
void kumod_loop_after(uv_loop_t *loop, uint64_t ms, void (*fn)(uint64_t id), uint64_t id);

/* 0 disables (the default). */
void kumod_loop_set_busy_poll(uint64_t usec);
uint64_t kumod_loop_busy_poll_us(void);
/* Called by the connection layer for every accepted connection and every
 * read outside bulk input (conn.bulk_input): starts a busy-poll window when
 * one is configured and none is running, else extends the running one. */
void kumod_loop_note_io(void);

struct kumod_busy_poll_stats {
	uint64_t windows; /* busy-poll windows that ended */
	uint64_t tail_ns; /* time spun after the last input of each window */
};
struct kumod_busy_poll_stats kumod_loop_busy_poll_stats(void);

#endif
