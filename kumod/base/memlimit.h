/* SPDX-License-Identifier: Apache-2.0 */
/* The memory budget: KumoMTA's soft/hard limits and low-memory threshold
 * (kumo.set_memory_soft_limit & co, KUMOD_MEMORY_SOFT_LIMIT/HARD_LIMIT),
 * and kumod's own accounting of the bytes it buffers for clients (DATA
 * being received, HTTP request bodies). Usage is the resident set size,
 * sampled from /proc/self/statm at most every 100 ms, plus what the
 * accounting grew since that sample, so a burst is seen before the kernel
 * reports it. Loop thread only. Callers: kumod/smtp, kumod/ctl, kumod/lua. */
#ifndef KUMOD_BASE_MEMLIMIT_H
#define KUMOD_BASE_MEMLIMIT_H

#include <stddef.h>
#include <stdint.h>

enum mem_state {
	MEM_OK = 0,
	MEM_LOW,  /* over the low threshold: caches shrink */
	MEM_OVER, /* over the soft limit: new DATA/injects refused, idle sessions shed */
};

/* 0 = none. The soft limit defaults to 3/4 of the hard limit when only that
 * is set; the low threshold to 8/10 of the soft limit. */
void memlimit_set_soft(uint64_t bytes);
void memlimit_set_hard(uint64_t bytes);
void memlimit_set_low_thresh(uint64_t bytes);
uint64_t memlimit_soft(void);
uint64_t memlimit_hard(void);
uint64_t memlimit_low_thresh(void);
/* Reads KUMOD_MEMORY_SOFT_LIMIT / KUMOD_MEMORY_HARD_LIMIT (bytes); -1 with
 * a message in err when one is not a number. */
int memlimit_from_env(char *err, size_t errlen);

/* Buffered bytes held for clients: + when a buffer grows, - when freed. */
void memlimit_account(int64_t delta);
uint64_t memlimit_accounted(void);
/* Usage estimate in bytes (see above). */
uint64_t memlimit_usage(void);
/* The state for usage + more bytes; a change of state is logged, traced
 * (memory_state) and counted (memory_low_count, memory_over_limit_count). */
enum mem_state memlimit_check(size_t more);
const char *memlimit_state_name(enum mem_state st);
/* Counters since start. */
uint64_t memlimit_over_count(void);
uint64_t memlimit_low_count(void);
/* Refusals because of the budget (SMTP DATA, injects). */
void memlimit_count_refusal(void);
/* Holds the emergency reserve (base/xalloc): once an allocation failed,
 * memlimit_check() answers MEM_OVER until the reserve is back. */
void memlimit_init_reserve(void);
uint64_t memlimit_refusals(void);

#endif
