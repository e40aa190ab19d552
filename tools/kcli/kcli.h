// SPDX-License-Identifier: Apache-2.0
/* kcli's commands that need no HTTP endpoint, shared with main.c. */
#ifndef KCLI_H
#define KCLI_H

/* `make run`'s log directory (policy/simple_policy.lua). */
#define KCLI_LOGS_DEFAULT "var/logs"

/* kcli logs [DIR|SEGMENT...]: every record, the open segment included;
 * argv holds the operands only. Returns the exit status. */
int kcli_logs(int argc, char **argv);

#endif
