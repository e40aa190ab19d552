/* SPDX-License-Identifier: Apache-2.0 */
/* TOML 1.0 documents: a strict parser into a value tree, and an encoder
 * from such a tree. Pure: bytes in, values out; no I/O. Written from the
 * TOML 1.0.0 specification; behaviour cross-checked against Python's
 * tomllib (tests/integration/test_toml_diff.py). Debian packages no C TOML
 * library, hence this module (docs/policy-utils.md). */
#ifndef KUMOD_PROTO_TOML_H
#define KUMOD_PROTO_TOML_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

enum toml_type {
	TOML_BOOL, /* first: a fresh node owns nothing */
	TOML_INTEGER,
	TOML_FLOAT,
	TOML_STRING,
	TOML_DATETIME,	     /* offset date-time, text in str (RFC 3339, 'T', 'Z') */
	TOML_DATETIME_LOCAL, /* local date-time */
	TOML_DATE_LOCAL,     /* local date */
	TOML_TIME_LOCAL,     /* local time */
	TOML_ARRAY,
	TOML_TABLE,
};

struct toml_value;

struct toml_kv {
	char *key; /* NUL-terminated copy; may contain NUL bytes (keylen) */
	size_t keylen;
	struct toml_value *val;
};

struct toml_value {
	enum toml_type type;
	unsigned flags; /* parser bookkeeping (defined, inline, ...) */
	union {
		int b;
		int64_t i;
		double f;
		struct {
			char *ptr; /* NUL-terminated; len excludes the NUL */
			size_t len;
		} str;
		struct {
			struct toml_value **items;
			size_t n, cap;
		} arr;
		struct {
			struct toml_kv *kv; /* insertion order */
			size_t n, cap;
			uint32_t *index; /* open addressing, kv index + 1; NULL while small */
			size_t index_cap;
		} tab;
	} u;
};

struct toml_error {
	int line, column; /* 1-based; column counts characters */
	char msg[200];
};

/* Parses a whole document. Returns the root table, or NULL with err filled
 * (message without the position; callers print "line:column: msg"). */
struct toml_value *toml_parse(const char *s, size_t len, struct toml_error *err);
void toml_free(struct toml_value *v);

/* Builders (the encoder's callers). toml_table_set takes ownership of v and
 * returns -1 (v not taken) when the key exists. */
struct toml_value *toml_new(enum toml_type type);
struct toml_value *toml_new_string(const char *s, size_t len);
int toml_table_set(struct toml_value *t, const char *key, size_t keylen, struct toml_value *v);
void toml_array_push(struct toml_value *a, struct toml_value *v);
struct toml_value *toml_table_get(const struct toml_value *t, const char *key, size_t keylen);

/* The date/time kind of text (TOML_DATETIME .. TOML_TIME_LOCAL) or
 * -1 when it is not a TOML date-time. */
int toml_datetime_kind(const char *s, size_t len);

/* Appends the document for the table root to out (pretty: arrays one
 * element per line). 0, or -1 with a message in err (root not a table, a
 * key or string that is not UTF-8). */
int toml_encode(const struct toml_value *root, int pretty, struct buf *out, char *err,
		size_t errlen);

const char *toml_type_name(enum toml_type t);

#endif
