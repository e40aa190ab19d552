/* SPDX-License-Identifier: Apache-2.0 */
/* Small file-system helpers shared by the spool and the log writer. */
#ifndef KUMOD_BASE_FSUTIL_H
#define KUMOD_BASE_FSUTIL_H

#include <sys/types.h>

#include "base/buf.h"

/* mkdir -p: creates path and its missing parents with mode; 0 or -errno. */
int fs_mkdir_p(const char *path, mode_t mode);
/* Appends the whole file at path ("-": standard input) to out. 0, or
 * -errno (out may hold a part of the file). */
int fs_read_file(const char *path, struct buf *out);

#endif
