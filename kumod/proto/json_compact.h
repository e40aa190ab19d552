/* SPDX-License-Identifier: Apache-2.0 */
/* One compact JSON writer for jansson values: the bytes json_dumps(v,
 * JSON_COMPACT | JSON_ENCODE_ANY) writes (objects in insertion order, reals
 * as jansson prints them), appended to a buf without jansson's per-byte
 * callbacks. Used where a record is serialized per message: the log
 * records (spool/logrec.c) and the catcher's summaries (ctl/catcher.c).
 * Strings go through console_json_strn, the project's one JSON string
 * escaper. */
#ifndef KUMOD_PROTO_JSON_COMPACT_H
#define KUMOD_PROTO_JSON_COMPACT_H

#include <jansson.h>

#include "base/buf.h"

void json_compact(struct buf *b, const json_t *v);

#endif
