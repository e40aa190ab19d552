/* SPDX-License-Identifier: Apache-2.0 */
/* The loop context (one per loop thread; one thread today). */
#include "io/loop.h"

static struct {
	uv_loop_t loop;
	int initialised;
	int shutting_down;
} ctx;

uv_loop_t *kumod_loop(void)
{
	if (!ctx.initialised) {
		uv_loop_init(&ctx.loop);
		ctx.initialised = 1;
	}
	return &ctx.loop;
}

int kumod_shutting_down(void)
{
	return ctx.shutting_down;
}

void kumod_set_shutting_down(void)
{
	ctx.shutting_down = 1;
}
