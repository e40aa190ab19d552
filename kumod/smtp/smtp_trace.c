/* SPDX-License-Identifier: Apache-2.0 */
/* The live SMTP transcript hook (see smtp_trace.h): a subscriber bit set
 * and one sink function, so the protocol code never depends on the admin
 * API that serves the transcripts. */
#include "smtp/smtp_trace.h"

#include <stddef.h>

unsigned smtp_trace_active;
static void (*sink)(const struct smtp_trace_ev *ev);

void smtp_trace__emit(const struct smtp_trace_ev *ev)
{
	if (sink)
		sink(ev);
}

void smtp_trace_set_sink(void (*fn)(const struct smtp_trace_ev *ev))
{
	sink = fn;
}
