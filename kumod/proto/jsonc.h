/* SPDX-License-Identifier: Apache-2.0 */
/* Comments in JSON documents, as KumoMTA's json_load/json_parse accept
 * them: `// line`, `# line` and block comments outside strings.
 * Pure: no I/O. */
#ifndef KUMOD_PROTO_JSONC_H
#define KUMOD_PROTO_JSONC_H

#include <stddef.h>

/* Replaces every comment in s[0..n) by spaces, in place (newlines stay, so
 * a JSON parser's line and column numbers still point into the original).
 * Returns 0, or -1 when a block comment is not closed (it is blanked to
 * the end). */
int jsonc_strip(char *s, size_t n);

#endif
