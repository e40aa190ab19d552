/* SPDX-License-Identifier: Apache-2.0 */
/* File-descriptor limit and budgets. */
#include "base/fdlimit.h"

#include <errno.h>
#include <string.h>
#include <sys/resource.h>

#include "base/log.h"

static size_t nofile;

size_t fdlimit_nofile(void)
{
	if (!nofile) {
		struct rlimit rl;
		nofile = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
			     ? (size_t)rl.rlim_cur
			     : 1024;
	}
	return nofile;
}

size_t fdlimit_raise(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return fdlimit_nofile();
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t was = rl.rlim_cur;
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
			log_warn("kumod", "cannot raise the open files limit from %llu to %llu: %s",
				 (unsigned long long)was, (unsigned long long)rl.rlim_max,
				 strerror(errno));
			rl.rlim_cur = was;
		} else {
			log_info("kumod", "open files limit raised from %llu to %llu",
				 (unsigned long long)was, (unsigned long long)rl.rlim_cur);
		}
	}
	nofile = rl.rlim_cur == RLIM_INFINITY ? (size_t)1 << 20 : (size_t)rl.rlim_cur;
	return nofile;
}

size_t fdlimit_http_budget(void)
{
	size_t n = fdlimit_nofile() / 8;
	return n > 1024 ? 1024 : n ? n : 1;
}

size_t fdlimit_smtp_budget(void)
{
	size_t used = FDLIMIT_RESERVE + FDLIMIT_HTTP_RESERVED + fdlimit_http_budget();
	size_t n = fdlimit_nofile();
	return n > used + 1 ? n - used : 1;
}
