/* SPDX-License-Identifier: Apache-2.0 */
/* Allocation helpers that abort on out-of-memory, after giving up the
 * emergency reserve once (xalloc_set_reserve). */
#include "xalloc.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void panic(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("kumod: panic: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();
}

static _Atomic(void *) reserve;
static size_t reserve_size;
static void (*reserve_used)(void);

void xalloc_set_reserve(size_t n, void (*on_used)(void))
{
	reserve_size = n;
	reserve_used = on_used;
	xalloc_rearm();
}

int xalloc_rearm(void)
{
	if (!reserve_size || atomic_load(&reserve))
		return 0;
	void *r = malloc(reserve_size); /* never touched: address space only */
	if (!r)
		return -1;
	void *none = NULL;
	if (!atomic_compare_exchange_strong(&reserve, &none, r))
		free(r);
	return 0;
}

/* An allocation failed: frees the reserve (once, from any thread) and
 * tells memlimit; 1 when the caller should retry. */
static int reserve_release(void)
{
	void *r = atomic_exchange(&reserve, NULL);
	if (!r)
		return 0;
	free(r);
	if (reserve_used)
		reserve_used();
	return 1;
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p && reserve_release())
		p = malloc(n ? n : 1);
	if (!p)
		panic("%s: out of memory (%zu bytes)", __func__, n);
	return p;
}

void *xcalloc(size_t nmemb, size_t n)
{
	void *p = calloc(nmemb ? nmemb : 1, n ? n : 1);
	if (!p && reserve_release())
		p = calloc(nmemb ? nmemb : 1, n ? n : 1);
	if (!p)
		panic("%s: out of memory", __func__);
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q && reserve_release())
		q = realloc(p, n ? n : 1);
	if (!q)
		panic("%s: out of memory (%zu bytes)", __func__, n);
	return q;
}

char *xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = 0;
	return p;
}

char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		panic("%s: out of memory", __func__);
	va_end(ap);
	return s;
}
