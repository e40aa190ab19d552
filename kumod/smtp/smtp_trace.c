/* SPDX-License-Identifier: Apache-2.0 */
/* The live SMTP transcript hook (see smtp_trace.h): a short list of
 * subscribers and the union of their sides, so the protocol code never
 * depends on who listens (the admin API's websockets, the transcript ring). */
#include "smtp/smtp_trace.h"

#include <errno.h>
#include <stddef.h>

#include "base/xalloc.h"

unsigned smtp_trace_active;

static struct {
	smtp_trace_fn fn; /* NULL: free slot */
	void *arg;
	unsigned sides;
} subs[SMTP_TRACE_MAX_SUBS];

static void recompute(void)
{
	unsigned bits = 0;
	for (size_t i = 0; i < SMTP_TRACE_MAX_SUBS; i++)
		if (subs[i].fn)
			bits |= subs[i].sides;
	smtp_trace_active = bits;
}

void smtp_trace__emit(const struct smtp_trace_ev *ev)
{
	for (size_t i = 0; i < SMTP_TRACE_MAX_SUBS; i++)
		if (subs[i].fn && (subs[i].sides & (unsigned)ev->side))
			subs[i].fn(ev, subs[i].arg);
}

int smtp_trace_subscribe(unsigned sides, smtp_trace_fn fn, void *arg)
{
	if (!fn)
		panic("%s: no function", __func__);
	for (int i = 0; i < SMTP_TRACE_MAX_SUBS; i++) {
		if (subs[i].fn)
			continue;
		subs[i].fn = fn;
		subs[i].arg = arg;
		subs[i].sides = sides;
		recompute();
		return i;
	}
	return -ENOSPC;
}

void smtp_trace_set_sides(int handle, unsigned sides)
{
	if (handle < 0 || handle >= SMTP_TRACE_MAX_SUBS || !subs[handle].fn)
		panic("%s: bad handle %d", __func__, handle);
	subs[handle].sides = sides;
	recompute();
}

void smtp_trace_unsubscribe(int handle)
{
	if (handle < 0 || handle >= SMTP_TRACE_MAX_SUBS || !subs[handle].fn)
		panic("%s: bad handle %d", __func__, handle);
	subs[handle].fn = NULL;
	subs[handle].arg = NULL;
	subs[handle].sides = 0;
	recompute();
}
