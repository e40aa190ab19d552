/* SPDX-License-Identifier: Apache-2.0 */
/* File descriptors: the soft RLIMIT_NOFILE is raised to the hard limit at
 * start, and the descriptors are split so that a connection flood cannot
 * starve the rest of kumod: a reserve for the spool, logs, DNS, listeners
 * and the console; a cap for HTTP connections plus a few slots kept for
 * liveness and /metrics; the rest for SMTP sessions (inbound). Callers:
 * main.c (raise), kumod/smtp and kumod/ctl (budgets). */
#ifndef KUMOD_BASE_FDLIMIT_H
#define KUMOD_BASE_FDLIMIT_H

#include <stddef.h>

#define FDLIMIT_RESERVE 32	/* spool, logs, DNS, listeners, console, epoll */
#define FDLIMIT_HTTP_RESERVED 8 /* HTTP slots only liveness and metrics may use */

/* Raises the soft limit to the hard one (logs what it did); returns the
 * soft limit now in force. */
size_t fdlimit_raise(void);
/* The soft limit (read once, then cached by fdlimit_raise). */
size_t fdlimit_nofile(void);
/* HTTP connections for ordinary requests: min(1024, nofile / 8). */
size_t fdlimit_http_budget(void);
/* Inbound SMTP sessions across all listeners. */
size_t fdlimit_smtp_budget(void);

#endif
