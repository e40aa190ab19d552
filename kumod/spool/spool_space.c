/* SPDX-License-Identifier: Apache-2.0 */
/* Free space of the spools' file systems (KumoMTA's define_spool
 * min_free_space / min_free_inodes): fstatvfs on each spool's root
 * directory, at most once a second, from the loop thread (a statvfs does no
 * I/O beyond the superblock the kernel holds). Callers refuse new messages
 * while spool_space_check() fails; the transitions are logged. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>

#include "base/clock.h"
#include "base/log.h"
#include "spool/spool.h"
#include "spool/spool_int.h"

#define SPACE_INTERVAL_NS 1000000000ull

static struct {
	struct spool_min_free min_space[2], min_inodes[2];
	struct spool_space usage[2];
	uint64_t checked_ns;
	int low; /* the last check failed */
	char reason[256];
} SP;

void spool__space_configure(const struct spool_config *cfg)
{
	memset(&SP, 0, sizeof(SP));
	SP.min_space[SPOOL_DATA] = cfg->data_min_free_space;
	SP.min_space[SPOOL_META] = cfg->meta_min_free_space;
	SP.min_inodes[SPOOL_DATA] = cfg->data_min_free_inodes;
	SP.min_inodes[SPOOL_META] = cfg->meta_min_free_inodes;
}

static unsigned pct(uint64_t part, uint64_t total)
{
	return total ? (unsigned)(part * 100 / total) : 100;
}

/* Appends why spool w is short to SP.reason; 1 when it is. */
static int below(int w, const struct spool_space *u)
{
	const struct spool_min_free *ms = &SP.min_space[w], *mi = &SP.min_inodes[w];
	char what[160] = "";
	if (ms->percent ? u->space_pct < ms->value : u->space_bytes < ms->value)
		snprintf(what, sizeof(what), "%" PRIu64 " bytes (%u%%) free, minimum %" PRIu64 "%s",
			 u->space_bytes, u->space_pct, ms->value, ms->percent ? "%" : " bytes");
	else if (mi->percent ? u->inodes_pct < mi->value : u->inodes < mi->value)
		snprintf(what, sizeof(what),
			 "%" PRIu64 " inodes (%u%%) free, minimum %" PRIu64 "%s", u->inodes,
			 u->inodes_pct, mi->value, mi->percent ? "%" : " inodes");
	else
		return 0;
	if (!SP.reason[0])
		snprintf(SP.reason, sizeof(SP.reason), "%s spool %s: %s", w ? "meta" : "data",
			 spool__path[w] ? spool__path[w] : "?", what);
	return 1;
}

int spool_space_check(char *reason, size_t len)
{
	if (!spool_is_open())
		return 0;
	uint64_t now = clock_mono_ns();
	if (!SP.checked_ns || now - SP.checked_ns >= SPACE_INTERVAL_NS) {
		SP.checked_ns = now;
		SP.reason[0] = 0;
		int low = 0;
		for (int w = 0; w < 2; w++) {
			struct statvfs v;
			struct spool_space *u = &SP.usage[w];
			if (spool__root[w] < 0 || fstatvfs(spool__root[w], &v) != 0) {
				u->valid = 0; /* unknown: not a reason to refuse */
				continue;
			}
			u->valid = 1;
			u->space_bytes = (uint64_t)v.f_bavail * v.f_frsize;
			u->space_pct = pct(v.f_bavail, v.f_blocks);
			u->inodes = v.f_favail;
			/* file systems without an inode count (btrfs) report 0 */
			u->inodes_pct = v.f_files ? pct(v.f_favail, v.f_files) : 100;
			if (!v.f_files)
				u->inodes = UINT64_MAX;
			low |= below(w, u);
		}
		if (low && !SP.low)
			log_error("kumod::spool", "%s: new messages are refused", SP.reason);
		else if (!low && SP.low)
			log_info("kumod::spool",
				 "spool free space recovered: messages are accepted");
		SP.low = low;
	}
	if (!SP.low)
		return 0;
	if (reason && len)
		snprintf(reason, len, "%s", SP.reason);
	return -ENOSPC;
}

int spool_space_get(int which, struct spool_space *out)
{
	if (which < 0 || which > 1 || !spool_is_open())
		return -ENOENT;
	spool_space_check(NULL, 0);
	*out = SP.usage[which];
	return out->valid ? 0 : -EIO;
}
