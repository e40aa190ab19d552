/* SPDX-License-Identifier: Apache-2.0 */
/* Allocation helpers that abort on out-of-memory, and panic() for broken
 * invariants. Everyone may call them. */
#ifndef KUMOD_BASE_XALLOC_H
#define KUMOD_BASE_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Emergency reserve: n bytes of address space held from the start; the
 * first allocation that fails frees it, calls on_used (any thread) and is
 * retried, so that a client-driven allocation failure becomes load
 * shedding (base/memlimit) instead of a panic. xalloc_rearm() takes it
 * again: 0 once held, -1 while memory is still short. */
void xalloc_set_reserve(size_t n, void (*on_used)(void));
int xalloc_rearm(void);
void panic(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* Free and clear, so no reachable pointer dangles. */
#define xfree(p)            \
	do {                \
		free(p);    \
		(p) = NULL; \
	} while (0)

#endif
