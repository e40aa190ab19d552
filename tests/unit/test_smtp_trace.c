/* SPDX-License-Identifier: Apache-2.0 */
/* The smtp_trace hook's subscriber list: each subscriber gets the events of
 * its sides, in subscription order; smtp_trace_active is their union. */
#include <errno.h>

#include "smtp/smtp_trace.h"
#include "test.h"

struct seen {
	char log[64];
	size_t n;
};

static void rec(const struct smtp_trace_ev *ev, void *arg)
{
	struct seen *s = arg;
	if (s->n + 2 < sizeof(s->log)) {
		s->log[s->n++] = ev->side == SMTP_TRACE_SERVER ? 'S' : 'C';
		s->log[s->n++] = ev->text ? ev->text[0] : '?';
		s->log[s->n] = '\0';
	}
}

static void mark(struct seen *s, char c)
{
	if (s->n + 1 < sizeof(s->log)) {
		s->log[s->n++] = c;
		s->log[s->n] = '\0';
	}
}

static void first(const struct smtp_trace_ev *ev, void *arg)
{
	(void)ev;
	mark(arg, 'a');
}

static void second(const struct smtp_trace_ev *ev, void *arg)
{
	(void)ev;
	mark(arg, 'b');
}

static void filler(const struct smtp_trace_ev *ev, void *arg)
{
	(void)ev;
	mark(arg, 'x');
}

TEST_IMPL(smtp_trace_subscribers_get_their_sides)
{
	struct seen srv = {0}, cli = {0}, both = {0};
	ASSERT_EQ(smtp_trace_active, 0);
	int hs = smtp_trace_subscribe(SMTP_TRACE_SERVER, rec, &srv);
	int hc = smtp_trace_subscribe(SMTP_TRACE_CLIENT, rec, &cli);
	int hb = smtp_trace_subscribe(SMTP_TRACE_SERVER | SMTP_TRACE_CLIENT, rec, &both);
	ASSERT(hs >= 0 && hc >= 0 && hb >= 0 && hs != hc && hc != hb);
	ASSERT_EQ(smtp_trace_active, SMTP_TRACE_SERVER | SMTP_TRACE_CLIENT);
	SMTP_TRACE(SMTP_TRACE_SERVER, .kind = SMTP_TRACE_READ, .text = "x");
	SMTP_TRACE(SMTP_TRACE_CLIENT, .kind = SMTP_TRACE_WRITE, .text = "y");
	ASSERT_STR_EQ(srv.log, "Sx");
	ASSERT_STR_EQ(cli.log, "Cy");
	ASSERT_STR_EQ(both.log, "SxCy");
	/* quiet: subscribed with no sides, so the hook's branch is not taken */
	smtp_trace_set_sides(hc, 0);
	smtp_trace_set_sides(hb, SMTP_TRACE_SERVER);
	ASSERT_EQ(smtp_trace_active, SMTP_TRACE_SERVER);
	SMTP_TRACE(SMTP_TRACE_CLIENT, .kind = SMTP_TRACE_WRITE, .text = "z");
	ASSERT_STR_EQ(cli.log, "Cy");
	ASSERT_STR_EQ(both.log, "SxCy");
	smtp_trace_unsubscribe(hs);
	smtp_trace_unsubscribe(hb);
	ASSERT_EQ(smtp_trace_active, 0);
	SMTP_TRACE(SMTP_TRACE_SERVER, .kind = SMTP_TRACE_READ, .text = "w");
	ASSERT_STR_EQ(srv.log, "Sx");
	smtp_trace_unsubscribe(hc);
}

TEST_IMPL(smtp_trace_list_is_bounded_and_slots_are_reused)
{
	struct seen s = {0};
	int h[SMTP_TRACE_MAX_SUBS];
	for (int i = 0; i < SMTP_TRACE_MAX_SUBS; i++) {
		h[i] = smtp_trace_subscribe(SMTP_TRACE_SERVER,
					    i == 0   ? first
					    : i == 1 ? second
						     : filler,
					    &s);
		ASSERT_GE(h[i], 0);
	}
	ASSERT_EQ(smtp_trace_subscribe(SMTP_TRACE_SERVER, filler, &s), -ENOSPC);
	for (int i = 2; i < SMTP_TRACE_MAX_SUBS; i++)
		smtp_trace_unsubscribe(h[i]);
	/* two left: both run, in subscription order, once each */
	SMTP_TRACE(SMTP_TRACE_SERVER, .kind = SMTP_TRACE_READ, .text = "x");
	ASSERT_STR_EQ(s.log, "ab");
	int again = smtp_trace_subscribe(SMTP_TRACE_CLIENT, filler, &s);
	ASSERT_GE(again, 0);
	ASSERT_EQ(smtp_trace_active, SMTP_TRACE_SERVER | SMTP_TRACE_CLIENT);
}
