/* SPDX-License-Identifier: Apache-2.0 */
/* Growable byte buffer with a read offset: the unit of I/O and formatting.
 * Owner: whoever embeds it; buf_free() releases the storage. */
#ifndef KUMOD_BASE_BUF_H
#define KUMOD_BASE_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
	char *data;
	size_t len; /* bytes in data (from 0) */
	size_t off; /* consumed prefix (readers) */
	size_t cap;
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);
void buf_reset(struct buf *b);
/* Ensure room for `more` bytes after len; always keeps one spare byte so
 * data can be NUL-terminated. */
void buf_reserve(struct buf *b, size_t more);
/* As buf_reserve, but a failed allocation leaves b as it was and returns
 * -1 (paths a client controls answer 4xx instead of aborting). */
int buf_try_reserve(struct buf *b, size_t more);
/* Gives back capacity beyond len + spare (kept messages hold what they use). */
void buf_shrink(struct buf *b, size_t spare);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_appends(struct buf *b, const char *s);
void buf_appendc(struct buf *b, char c);
/* Appends s with every byte that is not part of valid UTF-8 replaced by
 * U+FFFD (as Rust's from_utf8_lossy): for JSON strings of raw mail data. */
void buf_append_utf8_lossy(struct buf *b, const char *s, size_t n);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Insert n bytes at position pos (pos <= len). */
void buf_insert(struct buf *b, size_t pos, const void *p, size_t n);
/* Remove n bytes at position pos. */
void buf_remove(struct buf *b, size_t pos, size_t n);
/* Unread bytes: data + off .. len */
static inline const char *buf_rptr(const struct buf *b)
{
	return b->data + b->off;
}
static inline size_t buf_avail(const struct buf *b)
{
	return b->len - b->off;
}
/* Mark n unread bytes consumed; compacts when everything was read. */
void buf_consume(struct buf *b, size_t n);
/* Move the unread bytes to the front. */
void buf_compact(struct buf *b);
/* NUL-terminated view (does not change len). */
const char *buf_cstr(struct buf *b);

#endif
