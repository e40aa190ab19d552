/* SPDX-License-Identifier: Apache-2.0 */
/* Pull collectors for the metrics registry: at each scrape they read the
 * state other modules already keep (sessions, ready and scheduled queues,
 * spool and log-record statistics, process memory, admin suspensions), so
 * those modules need no metric bookkeeping; and the declarations (name,
 * type, label, meaning) of every family the ctl layer serves, from which
 * docs/metrics.md is generated (kumod --list-metrics=markdown). Registered
 * by the HTTP listener when it starts. */
#ifndef KUMOD_CTL_METRICS_COLLECT_H
#define KUMOD_CTL_METRICS_COLLECT_H

#include <stddef.h>

/* Declares every family the ctl layer serves (its meaning included) and
 * registers every collector (idempotent). */
void metrics_collect_register(void);

/* The `smtp_client:<site>` service label of a ready queue named
 * `<source>-><site>@smtp` (site only, summed over egress sources, as in
 * the seed sample). Writes into out; returns 0, or -1 when the name has
 * another shape (then out holds `smtp_client:<name>`). */
int metrics_collect_service_label(const char *ready_queue, char *out, size_t outlen);

#endif
