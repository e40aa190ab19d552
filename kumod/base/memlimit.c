/* SPDX-License-Identifier: Apache-2.0 */
/* The memory budget: limits, accounting and state transitions. */
#include "base/memlimit.h"

#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/xalloc.h"
#include "ktrace.h"

#define RSS_SAMPLE_NS 100000000ull
#define TRIM_NS 1000000000ull
#define RESERVE_BYTES (16u << 20)

/* Set (from any thread) when an allocation failed and the emergency
 * reserve was given up: over the limit until the reserve can be taken
 * again. */
static atomic_int emergency;
static uint64_t emergency_ns; /* last attempt to take the reserve back */

static void reserve_used(void)
{
	atomic_store(&emergency, 1);
}

void memlimit_init_reserve(void)
{
	xalloc_set_reserve(RESERVE_BYTES, reserve_used);
}

/* 1 while the reserve is spent: logged once, retried once a second. */
static int memlimit_emergency(void)
{
	if (!atomic_load(&emergency))
		return 0;
	uint64_t now = clock_mono_ns();
	if (!emergency_ns) {
		log_warn("kumod::memory",
			 "an allocation failed: the %u MiB emergency reserve was given up; new "
			 "work is refused as over the memory limit until it can be taken back",
			 RESERVE_BYTES >> 20);
	} else if (now - emergency_ns >= TRIM_NS) {
		malloc_trim(0);
		if (xalloc_rearm() == 0) {
			atomic_store(&emergency, 0);
			emergency_ns = 0;
			log_info("kumod::memory", "emergency memory reserve taken back");
			return 0;
		}
	} else {
		return 1;
	}
	emergency_ns = now;
	return 1;
}

static struct {
	uint64_t soft, hard, low;
	int64_t accounted;
	uint64_t rss;	      /* last sample */
	int64_t accounted_at; /* accounting when sampled */
	uint64_t sampled_ns;
	enum mem_state state;
	uint64_t over_count, low_count, refusals;
	uint64_t trimmed_ns; /* last malloc_trim */
} mem;

/* With a budget, buffers of 1 MiB and more are always mapped on their own
 * (glibc otherwise raises its threshold after the first free), so a freed
 * message body goes back to the system and usage falls with it. */
static void fix_mmap_threshold(void)
{
	static int done;
	if (!done)
		mallopt(M_MMAP_THRESHOLD, 1 << 20);
	done = 1;
}

void memlimit_set_soft(uint64_t bytes)
{
	mem.soft = bytes;
	fix_mmap_threshold();
}

void memlimit_set_hard(uint64_t bytes)
{
	mem.hard = bytes;
	fix_mmap_threshold();
}

void memlimit_set_low_thresh(uint64_t bytes)
{
	mem.low = bytes;
}

uint64_t memlimit_soft(void)
{
	return mem.soft ? mem.soft : mem.hard / 4 * 3;
}

uint64_t memlimit_hard(void)
{
	return mem.hard;
}

uint64_t memlimit_low_thresh(void)
{
	return mem.low ? mem.low : memlimit_soft() / 10 * 8;
}

static int env_bytes(const char *name, uint64_t *out, char *err, size_t errlen)
{
	const char *v = getenv(name);
	if (!v || !*v)
		return 0;
	char *end;
	errno = 0;
	unsigned long long n = strtoull(v, &end, 10);
	if (errno || *end || *v == '-') {
		snprintf(err, errlen, "%s='%s' is not a number of bytes", name, v);
		return -1;
	}
	*out = n;
	return 0;
}

int memlimit_from_env(char *err, size_t errlen)
{
	if (env_bytes("KUMOD_MEMORY_SOFT_LIMIT", &mem.soft, err, errlen) != 0 ||
	    env_bytes("KUMOD_MEMORY_HARD_LIMIT", &mem.hard, err, errlen) != 0)
		return -1;
	if (mem.soft || mem.hard)
		fix_mmap_threshold();
	return 0;
}

void memlimit_account(int64_t delta)
{
	mem.accounted += delta;
	if (mem.accounted < 0)
		mem.accounted = 0;
}

uint64_t memlimit_accounted(void)
{
	return (uint64_t)mem.accounted;
}

static uint64_t read_rss(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size = 0, resident = 0;
	int ok = f && fscanf(f, "%lu %lu", &size, &resident) == 2;
	if (f)
		fclose(f);
	return ok ? (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
}

uint64_t memlimit_usage(void)
{
	uint64_t now = clock_mono_ns();
	if (!mem.sampled_ns || now - mem.sampled_ns >= RSS_SAMPLE_NS) {
		mem.rss = read_rss();
		mem.accounted_at = mem.accounted;
		mem.sampled_ns = now;
	}
	int64_t grown = mem.accounted - mem.accounted_at;
	return grown > 0 ? mem.rss + (uint64_t)grown : mem.rss;
}

const char *memlimit_state_name(enum mem_state st)
{
	return st == MEM_OK ? "ok" : st == MEM_LOW ? "low" : "over_limit";
}

enum mem_state memlimit_check(size_t more)
{
	if (memlimit_emergency())
		return MEM_OVER;
	uint64_t soft = memlimit_soft();
	if (!soft)
		return MEM_OK;
	uint64_t usage = memlimit_usage() + more;
	enum mem_state st = usage >= soft		    ? MEM_OVER
			    : usage > memlimit_low_thresh() ? MEM_LOW
							    : MEM_OK;
	if (st == MEM_OVER && mem.state == MEM_OVER &&
	    clock_mono_ns() - mem.trimmed_ns >= TRIM_NS) {
		/* still over: give freed memory back, then measure again */
		malloc_trim(0);
		mem.trimmed_ns = clock_mono_ns();
		mem.sampled_ns = 0;
	}
	if (st == mem.state)
		return st;
	KTRACE(memory_state, memlimit_state_name(mem.state), memlimit_state_name(st), usage, soft,
	       memlimit_accounted());
	if (st == MEM_OVER)
		mem.over_count++;
	else if (st == MEM_LOW && mem.state == MEM_OK)
		mem.low_count++;
	if (st > MEM_OK) {
		malloc_trim(0); /* give freed arenas back before refusing work */
		mem.trimmed_ns = clock_mono_ns();
	}
	mem.state = st;
	mem.sampled_ns = 0; /* the next check samples afresh */
	return st;
}

uint64_t memlimit_over_count(void)
{
	return mem.over_count;
}

uint64_t memlimit_low_count(void)
{
	return mem.low_count;
}

void memlimit_count_refusal(void)
{
	mem.refusals++;
}

uint64_t memlimit_refusals(void)
{
	return mem.refusals;
}
