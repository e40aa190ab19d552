/* SPDX-License-Identifier: Apache-2.0 */
/* Threshold triggers of traffic shaping automation rules (`trigger =
 * { Threshold = "N/period" }`): per key (rule and scope), the events within
 * a sliding window of the last period. Only the newest `limit` events of a
 * key are kept, so memory is bounded by the limits and counting is O(1)
 * amortised. Pure bookkeeping (time is passed in); owned by
 * kumod/dispatch/shaping_auto.c. */
#ifndef KUMOD_QUEUE_AUTO_WINDOW_H
#define KUMOD_QUEUE_AUTO_WINDOW_H

#include <stddef.h>
#include <stdint.h>

struct auto_window_set;

struct auto_window_set *auto_window_new(void);
void auto_window_free(struct auto_window_set *s);
/* Records one event of key at now_ms and returns how many of its events
 * lie in (now_ms - period_ms, now_ms], counting this one; at most limit.
 * A key seen again with another limit or period starts afresh. limit >= 1,
 * period_ms >= 1. */
size_t auto_window_hit(struct auto_window_set *s, const char *key, size_t limit, uint64_t period_ms,
		       uint64_t now_ms);
/* Drops the keys whose every event is older than their period; returns
 * how many keys remain. */
size_t auto_window_prune(struct auto_window_set *s, uint64_t now_ms);

#endif
