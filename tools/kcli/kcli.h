// SPDX-License-Identifier: Apache-2.0
/* kcli's commands that live outside main.c. */
#ifndef KCLI_H
#define KCLI_H

/* `make run`'s log directory (policy/simple_policy.lua). */
#define KCLI_LOGS_DEFAULT "var/logs"

/* kcli logs [DIR|SEGMENT...]: every record, the open segment included;
 * argv holds the operands only. Returns the exit status. */
int kcli_logs(int argc, char **argv);

/* kcli trace-smtp-server / trace-smtp-client (client = 1): argv holds the
 * command name and its options; help prints the command's usage. Returns
 * the exit status (errors end the program). */
int kcli_trace_smtp(int argc, char **argv, const char *endpoint, int client, void (*help)(void));

#endif
