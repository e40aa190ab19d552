/* SPDX-License-Identifier: Apache-2.0 */
/* Deferred spooling (KumoMTA's deferred_spool): messages acknowledged
 * without a spool write, written only when they must stay. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/xalloc.h"
#include "ktrace.h"
#include "spool/message.h"
#include "spool/spool.h"
#include "spool/spool_int.h"
#include "spool/timeline.h"

/* An acknowledgement waiting for the next loop iteration. */
struct defer_ack {
	spool_cb cb;
	void *ctx;
	struct defer_ack *next;
};

/* A save in flight. */
struct defer_save {
	struct message *m; /* one reference */
	char why[48];
	uint64_t start_ns;
	void (*done)(struct message *m, int err);
};

static struct {
	uv_timer_t timer;
	int timer_state; /* 0 none, 1 initialized, 2 closing (spool__defer_close) */
	struct defer_ack *head, *tail;
} D;

static void ack_cb(uv_timer_t *t)
{
	(void)t;
	struct defer_ack *a = D.head;
	D.head = D.tail = NULL;
	while (a) {
		struct defer_ack *next = a->next;
		a->cb(a->ctx, 0);
		free(a);
		a = next;
	}
}

/* 0 when the timer can run acknowledgements (not closed by shutdown). */
static int ack_timer_ready(void)
{
	if (D.timer_state == 0) {
		if (uv_timer_init(spool__loop(), &D.timer) != 0)
			return -1;
		D.timer_state = 1;
	}
	return D.timer_state == 1 && !uv_is_closing((uv_handle_t *)&D.timer) ? 0 : -1;
}

static void timer_closed(uv_handle_t *h)
{
	(void)h;
	D.timer_state = 0;
}

void spool__defer_close(void)
{
	if (D.timer_state != 1)
		return;
	if (!uv_is_closing((uv_handle_t *)&D.timer))
		uv_close((uv_handle_t *)&D.timer, timer_closed);
	else
		D.timer_state = 0; /* closed by the owner of the loop (kumod's shutdown walk) */
	if (D.timer_state == 1)
		D.timer_state = 2;
	/* acknowledgements never given: their messages were not acknowledged
	 * either (the peer saw no 250), so dropping them loses nothing promised */
	while (D.head) {
		struct defer_ack *a = D.head;
		D.head = a->next;
		free(a);
	}
	D.tail = NULL;
}

void spool_store_deferred(struct message *m, spool_cb cb, void *ctx)
{
	const char *why = NULL;
	size_t len = 0;
	char *meta = NULL;
	if (!spool_is_open() || ack_timer_ready() != 0) {
		spool_store(m, cb, ctx); /* shutting down: the durable path decides */
		return;
	}
	if (!message_id_valid(m->id) || !(meta = spool__meta_encode(m, &len, &why))) {
		spool_store(m, cb, ctx); /* fails it with the spool's reason */
		return;
	}
	free(meta);
	m->spool_deferred = 1;
	KTRACE(spool_deferred, m->id, "accepted");
	MSG_TIMELINE(m->id, "Spool", "deferred spool: kept in memory, not written");
	struct defer_ack *a = xcalloc(1, sizeof(*a));
	a->cb = cb;
	a->ctx = ctx;
	if (D.tail)
		D.tail->next = a;
	else
		D.head = a;
	D.tail = a;
	if (D.head == a)
		uv_timer_start(&D.timer, ack_cb, 0, 0);
}

static void saved_cb(void *ctx, int err)
{
	struct defer_save *s = ctx;
	struct message *m = s->m;
	uint64_t us = (clock_mono_ns() - s->start_ns) / 1000u;
	m->spool_saving = 0;
	KTRACE(spool_deferred_save, m->id, s->why, err, us);
	if (err) {
		log_error("kumod::spool",
			  "id=%s deferred message not written on %s: %s; it stays in memory only "
			  "(lost if kumod stops) and is tried again",
			  m->id, s->why, strerror(-err));
		MSG_TIMELINE(m->id, "Spool", "deferred spool: write on %s failed: %s", s->why,
			     strerror(-err));
	} else {
		m->spool_deferred = 0;
		MSG_TIMELINE(m->id, "Spool", "deferred spool: spooled on %s", s->why);
		if (m->spool_gone) /* its outcome came while the save was in flight */
			spool_remove(m->id, NULL, NULL);
	}
	if (s->done)
		s->done(m, err);
	message_unref(m);
	free(s);
}

int spool_save_deferred(struct message *m, const char *why,
			void (*done)(struct message *m, int err))
{
	if (!m->spool_deferred || m->spool_saving || m->spool_gone)
		return 0;
	if (!spool_is_open()) {
		log_error("kumod::spool",
			  "id=%s deferred message cannot be written on %s: the spool is closed; it "
			  "is lost when kumod stops",
			  m->id, why);
		return -ENOENT;
	}
	struct defer_save *s = xcalloc(1, sizeof(*s));
	s->m = message_ref(m);
	snprintf(s->why, sizeof(s->why), "%s", why);
	s->start_ns = clock_mono_ns();
	s->done = done;
	m->spool_saving = 1;
	spool_store(m, saved_cb, s);
	return 1;
}

void spool_discard(struct message *m)
{
	m->spool_gone = 1;
	if (m->spool_saving)
		return; /* saved_cb removes it */
	if (m->spool_deferred) {
		KTRACE(spool_deferred, m->id, "discarded");
		return;
	}
	spool_remove(m->id, NULL, NULL);
}
