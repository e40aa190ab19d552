/* SPDX-License-Identifier: Apache-2.0 */
/* The daemon's event loop context: the one libuv loop kumod runs today.
 * main.c creates it; every module that starts handles asks for it here. */
#ifndef KUMOD_IO_LOOP_H
#define KUMOD_IO_LOOP_H

#include <uv.h>

uv_loop_t *kumod_loop(void);
/* 1 once graceful shutdown began (listeners stop accepting). */
int kumod_shutting_down(void);
void kumod_set_shutting_down(void);

#endif
