/* SPDX-License-Identifier: Apache-2.0 */
/* TOML 1.0 parser and encoder (see toml.h). The parser is a recursive
 * descent over the bytes with one error exit (longjmp): every node is
 * attached to the tree before it is filled, so the error path only frees
 * the root. Table-definition rules follow the specification as tomllib
 * reads it: a [header] defines a table once; dotted keys may not reach
 * into a header-defined table or array of tables; inline tables and static
 * arrays are closed. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base64.h"
#include "base/xalloc.h"
#include "proto/toml.h"

#define TOML_MAX_DEPTH 100
/* Whatever the parser accepts encodes: tables + arrays + inline tables. */
#define TOML_ENC_MAX_DEPTH (2 * TOML_MAX_DEPTH + 2)

enum {
	TF_DEFINED = 1,	 /* by a [header] (or an [[array]] element) */
	TF_IMPLICIT = 2, /* created as the parent of a header */
	TF_DOTTED = 4,	 /* created by a dotted key */
	TF_INLINE = 8,	 /* inline table or static array: closed */
	TF_AOT = 16,	 /* array of tables */
};

const char *toml_type_name(enum toml_type t)
{
	switch (t) {
	case TOML_BOOL:
		return "boolean";
	case TOML_INTEGER:
		return "integer";
	case TOML_FLOAT:
		return "float";
	case TOML_STRING:
		return "string";
	case TOML_DATETIME:
		return "offset date-time";
	case TOML_DATETIME_LOCAL:
		return "local date-time";
	case TOML_DATE_LOCAL:
		return "local date";
	case TOML_TIME_LOCAL:
		return "local time";
	case TOML_ARRAY:
		return "array";
	case TOML_TABLE:
		return "table";
	}
	return "value";
}

/* --- tree -------------------------------------------------------------------- */

struct toml_value *toml_new(enum toml_type type)
{
	struct toml_value *v = xcalloc(1, sizeof(*v));
	v->type = type;
	return v;
}

struct toml_value *toml_new_string(const char *s, size_t len)
{
	struct toml_value *v = toml_new(TOML_BOOL);
	v->u.str.ptr = xmalloc(len + 1);
	memcpy(v->u.str.ptr, s, len);
	v->u.str.ptr[len] = 0;
	v->u.str.len = len;
	v->type = TOML_STRING;
	return v;
}

void toml_free(struct toml_value *v)
{
	if (!v)
		return;
	switch (v->type) {
	case TOML_STRING:
	case TOML_DATETIME:
	case TOML_DATETIME_LOCAL:
	case TOML_DATE_LOCAL:
	case TOML_TIME_LOCAL:
		free(v->u.str.ptr);
		break;
	case TOML_ARRAY:
		for (size_t i = 0; i < v->u.arr.n; i++)
			toml_free(v->u.arr.items[i]);
		free(v->u.arr.items);
		break;
	case TOML_TABLE:
		for (size_t i = 0; i < v->u.tab.n; i++) {
			free(v->u.tab.kv[i].key);
			toml_free(v->u.tab.kv[i].val);
		}
		free(v->u.tab.kv);
		free(v->u.tab.index);
		break;
	default:
		break;
	}
	free(v);
}

static uint32_t key_hash(const char *k, size_t n)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)k[i]) * 16777619u;
	return h;
}

static void index_put(struct toml_value *t, size_t i)
{
	size_t mask = t->u.tab.index_cap - 1;
	size_t pos = key_hash(t->u.tab.kv[i].key, t->u.tab.kv[i].keylen) & mask;
	while (t->u.tab.index[pos])
		pos = (pos + 1) & mask;
	t->u.tab.index[pos] = (uint32_t)i + 1;
}

static void index_rebuild(struct toml_value *t)
{
	free(t->u.tab.index);
	t->u.tab.index_cap = 16;
	while (t->u.tab.index_cap < t->u.tab.cap * 2)
		t->u.tab.index_cap *= 2;
	t->u.tab.index = xcalloc(t->u.tab.index_cap, sizeof(uint32_t));
	for (size_t i = 0; i < t->u.tab.n; i++)
		index_put(t, i);
}

struct toml_value *toml_table_get(const struct toml_value *t, const char *key, size_t keylen)
{
	if (!t || t->type != TOML_TABLE)
		return NULL;
	if (!t->u.tab.index) {
		for (size_t i = 0; i < t->u.tab.n; i++)
			if (t->u.tab.kv[i].keylen == keylen &&
			    memcmp(t->u.tab.kv[i].key, key, keylen) == 0)
				return t->u.tab.kv[i].val;
		return NULL;
	}
	size_t mask = t->u.tab.index_cap - 1;
	for (size_t pos = key_hash(key, keylen) & mask; t->u.tab.index[pos];
	     pos = (pos + 1) & mask) {
		const struct toml_kv *kv = &t->u.tab.kv[t->u.tab.index[pos] - 1];
		if (kv->keylen == keylen && memcmp(kv->key, key, keylen) == 0)
			return kv->val;
	}
	return NULL;
}

int toml_table_set(struct toml_value *t, const char *key, size_t keylen, struct toml_value *v)
{
	if (toml_table_get(t, key, keylen))
		return -1;
	if (t->u.tab.n == t->u.tab.cap) {
		t->u.tab.cap = t->u.tab.cap ? t->u.tab.cap * 2 : 4;
		t->u.tab.kv = xrealloc(t->u.tab.kv, t->u.tab.cap * sizeof(*t->u.tab.kv));
		if (t->u.tab.cap >= 16)
			index_rebuild(t); /* before the new entry: it is put below */
	}
	struct toml_kv *kv = &t->u.tab.kv[t->u.tab.n];
	kv->key = xmalloc(keylen + 1);
	memcpy(kv->key, key, keylen);
	kv->key[keylen] = 0;
	kv->keylen = keylen;
	kv->val = v;
	t->u.tab.n++;
	if (t->u.tab.index)
		index_put(t, t->u.tab.n - 1);
	return 0;
}

void toml_array_push(struct toml_value *a, struct toml_value *v)
{
	if (a->u.arr.n == a->u.arr.cap) {
		a->u.arr.cap = a->u.arr.cap ? a->u.arr.cap * 2 : 4;
		a->u.arr.items = xrealloc(a->u.arr.items, a->u.arr.cap * sizeof(*a->u.arr.items));
	}
	a->u.arr.items[a->u.arr.n++] = v;
}

/* --- parser ------------------------------------------------------------------ */

struct key_part {
	size_t off, len; /* in keybuf */
};

struct parser {
	const char *start, *p, *end;
	struct toml_error *err;
	jmp_buf jb;
	struct toml_value *root;
	struct buf keybuf; /* the bytes of the key being parsed */
	struct key_part *parts;
	size_t nparts, capparts;
	struct buf sbuf;     /* string scratch */
	int depth;	     /* arrays and inline tables open */
	size_t header_depth; /* key parts of the current [header] */
};

static void set_pos(struct toml_error *err, const char *start, const char *at)
{
	int line = 1, col = 1;
	for (const char *q = start; q < at; q++) {
		if (*q == '\n') {
			line++;
			col = 1;
		} else if (((unsigned char)*q & 0xC0) != 0x80) {
			col++;
		}
	}
	err->line = line;
	err->column = col;
}

__attribute__((noreturn, format(printf, 3, 4))) static void
fail_at(struct parser *ps, const char *at, const char *fmt, ...)
{
	va_list ap;
	set_pos(ps->err, ps->start, at);
	va_start(ap, fmt);
	vsnprintf(ps->err->msg, sizeof(ps->err->msg), fmt, ap);
	va_end(ap);
	longjmp(ps->jb, 1);
}

#define fail(ps, ...) fail_at((ps), (ps)->p, __VA_ARGS__)

static int at_eof(const struct parser *ps)
{
	return ps->p >= ps->end;
}

static int peek(const struct parser *ps, size_t k)
{
	return ps->p + k < ps->end ? (unsigned char)ps->p[k] : -1;
}

static int starts(const struct parser *ps, const char *lit)
{
	size_t n = strlen(lit);
	return (size_t)(ps->end - ps->p) >= n && memcmp(ps->p, lit, n) == 0;
}

static void skip_ws(struct parser *ps)
{
	while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t'))
		ps->p++;
}

/* Length of the UTF-8 sequence at p (1..4), or 0 when it is not valid
 * (overlong, surrogate, beyond U+10FFFF, truncated). */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
	unsigned c = p[0];
	size_t n;
	unsigned cp;
	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF) {
		n = 2;
		cp = c & 0x1F;
	} else if (c >= 0xE0 && c <= 0xEF) {
		n = 3;
		cp = c & 0x0F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		n = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if ((size_t)(end - p) < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3F);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
	    (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return n;
}

static int is_ctrl(int c)
{
	return (c >= 0 && c < 0x20 && c != '\t') || c == 0x7F;
}

/* A comment from '#' to the end of the line (not included). */
static void skip_comment(struct parser *ps)
{
	ps->p++;
	while (ps->p < ps->end && *ps->p != '\n') {
		int c = (unsigned char)*ps->p;
		if (c == '\r' && peek(ps, 1) == '\n')
			return;
		if (is_ctrl(c))
			fail(ps, "control character U+%04X in a comment", c);
		ps->p++;
	}
}

/* Consumes a newline (LF or CRLF); 1 if there was one. */
static int eat_newline(struct parser *ps)
{
	if (peek(ps, 0) == '\n') {
		ps->p++;
		return 1;
	}
	if (peek(ps, 0) == '\r' && peek(ps, 1) == '\n') {
		ps->p += 2;
		return 1;
	}
	return 0;
}

static void expect_eol(struct parser *ps, const char *what)
{
	skip_ws(ps);
	if (peek(ps, 0) == '#')
		skip_comment(ps);
	if (at_eof(ps) || eat_newline(ps))
		return;
	if (peek(ps, 0) == '\r')
		fail(ps, "carriage return not followed by a line feed");
	fail(ps, "expected the end of the line after %s, found '%c'", what, *ps->p);
}

/* Whitespace, newlines and comments (inside arrays). */
static void skip_ws_nl(struct parser *ps)
{
	for (;;) {
		skip_ws(ps);
		if (peek(ps, 0) == '#')
			skip_comment(ps);
		if (!eat_newline(ps))
			return;
	}
}

static void put_utf8(struct buf *b, unsigned cp)
{
	char o[4];
	size_t n;
	if (cp < 0x80) {
		o[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		o[0] = (char)(0xC0 | (cp >> 6));
		o[1] = (char)(0x80 | (cp & 0x3F));
		n = 2;
	} else if (cp < 0x10000) {
		o[0] = (char)(0xE0 | (cp >> 12));
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		o[2] = (char)(0x80 | (cp & 0x3F));
		n = 3;
	} else {
		o[0] = (char)(0xF0 | (cp >> 18));
		o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
		o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
		o[3] = (char)(0x80 | (cp & 0x3F));
		n = 4;
	}
	buf_append(b, o, n);
}

/* At the backslash of an escape in a basic string. */
static void parse_escape(struct parser *ps, struct buf *out)
{
	const char *at = ps->p;
	int c = peek(ps, 1);
	if (c < 0)
		fail_at(ps, at, "unterminated string");
	ps->p += 2;
	switch (c) {
	case 'b':
		buf_appendc(out, '\b');
		return;
	case 't':
		buf_appendc(out, '\t');
		return;
	case 'n':
		buf_appendc(out, '\n');
		return;
	case 'f':
		buf_appendc(out, '\f');
		return;
	case 'r':
		buf_appendc(out, '\r');
		return;
	case '"':
		buf_appendc(out, '"');
		return;
	case '\\':
		buf_appendc(out, '\\');
		return;
	case 'u':
	case 'U': {
		int n = c == 'u' ? 4 : 8;
		unsigned cp = 0;
		for (int i = 0; i < n; i++) {
			int h = hex_digit_value(peek(ps, 0));
			if (h < 0)
				fail_at(ps, at, "\\%c escape needs %d hexadecimal digits", c, n);
			cp = (cp << 4) | (unsigned)h;
			ps->p++;
		}
		if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			fail_at(ps, at, "\\%c escape is not a Unicode scalar value", c);
		put_utf8(out, cp);
		return;
	}
	default:
		if (c < 0)
			fail_at(ps, at, "unterminated string");
		fail_at(ps, at, "invalid escape sequence '\\%c'", c >= 0x20 && c < 0x7F ? c : '?');
	}
}

/* At the opening quote(s); the content goes to ps->sbuf (reset first). */
static void parse_string(struct parser *ps, int allow_multi)
{
	const char *open = ps->p;
	int quote = *ps->p;
	int multi = allow_multi && (quote == '"' ? starts(ps, "\"\"\"") : starts(ps, "'''"));
	buf_reset(&ps->sbuf);
	ps->p += multi ? 3 : 1;
	if (multi)
		eat_newline(ps);
	for (;;) {
		if (at_eof(ps))
			fail_at(ps, open, "unterminated string");
		int c = (unsigned char)*ps->p;
		if (c == quote) {
			if (!multi) {
				ps->p++;
				return;
			}
			size_t q = 0;
			while (peek(ps, q) == quote)
				q++;
			if (q >= 3) {
				if (q > 5)
					fail(ps,
					     "too many quotes at the end of a multi-line string");
				buf_append(&ps->sbuf, ps->p, q - 3);
				ps->p += q;
				return;
			}
			buf_append(&ps->sbuf, ps->p, q);
			ps->p += q;
			continue;
		}
		if (c == '\\' && quote == '"') {
			if (multi) {
				/* line-ending backslash: ws* newline, then all ws/newlines */
				const char *q = ps->p + 1;
				while (q < ps->end && (*q == ' ' || *q == '\t'))
					q++;
				if (q < ps->end && (*q == '\n' || (*q == '\r' && q + 1 < ps->end &&
								   q[1] == '\n'))) {
					ps->p = q;
					for (;;) {
						if (peek(ps, 0) == ' ' || peek(ps, 0) == '\t')
							ps->p++;
						else if (!eat_newline(ps))
							break;
					}
					continue;
				}
			}
			parse_escape(ps, &ps->sbuf);
			continue;
		}
		if (c == '\n' || (c == '\r' && peek(ps, 1) == '\n')) {
			if (!multi)
				fail(ps, "newline in a single-line string");
			eat_newline(ps);
			buf_appendc(&ps->sbuf, '\n');
			continue;
		}
		if (is_ctrl(c))
			fail(ps, "control character U+%04X in a string", c);
		buf_appendc(&ps->sbuf, (char)c);
		ps->p++;
	}
}

static int is_bare(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-';
}

/* A (dotted) key into ps->parts. */
static void parse_key(struct parser *ps)
{
	buf_reset(&ps->keybuf);
	ps->nparts = 0;
	for (;;) {
		skip_ws(ps);
		struct key_part part = {.off = ps->keybuf.len};
		int c = peek(ps, 0);
		if (c == '"' || c == '\'') {
			if ((c == '"' && starts(ps, "\"\"\"")) || (c == '\'' && starts(ps, "'''")))
				fail(ps, "a key cannot be a multi-line string");
			parse_string(ps, 0);
			buf_append(&ps->keybuf, ps->sbuf.data, ps->sbuf.len);
		} else if (is_bare(c)) {
			const char *s = ps->p;
			while (is_bare(peek(ps, 0)))
				ps->p++;
			buf_append(&ps->keybuf, s, (size_t)(ps->p - s));
		} else if (c < 0 || c == '\n' || c == '\r') {
			fail(ps, "expected a key");
		} else {
			fail(ps, "invalid character '%c' in a key (quote the key)",
			     c >= 0x20 && c < 0x7F ? c : '?');
		}
		part.len = ps->keybuf.len - part.off;
		if (ps->nparts == ps->capparts) {
			ps->capparts = ps->capparts ? ps->capparts * 2 : 8;
			ps->parts = xrealloc(ps->parts, ps->capparts * sizeof(*ps->parts));
		}
		ps->parts[ps->nparts++] = part;
		skip_ws(ps);
		if (peek(ps, 0) != '.')
			return;
		ps->p++;
	}
}

static const char *part_ptr(struct parser *ps, size_t i)
{
	return ps->keybuf.data + ps->parts[i].off;
}

/* The key text for messages (truncated, non-printables as '?'). */
static const char *key_show(struct parser *ps, size_t upto, char *o, size_t olen)
{
	size_t w = 0;
	for (size_t i = 0; i <= upto && w + 1 < olen; i++) {
		if (i && w + 1 < olen)
			o[w++] = '.';
		for (size_t j = 0; j < ps->parts[i].len && w + 1 < olen; j++) {
			unsigned char c = (unsigned char)part_ptr(ps, i)[j];
			o[w++] = c >= 0x20 && c != 0x7F ? (char)c : '?';
		}
	}
	o[w] = 0;
	return o;
}

static struct toml_value *child_table(struct parser *ps, struct toml_value *t, size_t i,
				      unsigned flags)
{
	struct toml_value *v = toml_new(TOML_TABLE);
	v->flags = flags;
	toml_table_set(t, part_ptr(ps, i), ps->parts[i].len, v);
	return v;
}

static void parse_value(struct parser *ps, struct toml_value *v);

/* key = value into table t. */
static void parse_keyval(struct parser *ps, struct toml_value *t)
{
	char show[128];
	const char *at = ps->p;
	parse_key(ps);
	if (ps->header_depth + (size_t)ps->depth + ps->nparts > TOML_MAX_DEPTH)
		fail_at(ps, at, "tables nested more than %d deep", TOML_MAX_DEPTH);
	for (size_t i = 0; i + 1 < ps->nparts; i++) {
		struct toml_value *v = toml_table_get(t, part_ptr(ps, i), ps->parts[i].len);
		if (!v) {
			v = child_table(ps, t, i, TF_DOTTED);
		} else if (v->type != TOML_TABLE) {
			fail_at(ps, at, "key '%s' is already defined as %s",
				key_show(ps, i, show, sizeof(show)), toml_type_name(v->type));
		} else if (v->flags & TF_INLINE) {
			fail_at(ps, at, "cannot add keys to the inline table '%s'",
				key_show(ps, i, show, sizeof(show)));
		} else if (v->flags & TF_DEFINED) {
			fail_at(ps, at,
				"cannot add keys to table '%s' with dotted keys: it is defined by "
				"a [header]",
				key_show(ps, i, show, sizeof(show)));
		}
		v->flags |= TF_DOTTED; /* a later [header] may not define it */
		t = v;
	}
	size_t last = ps->nparts - 1;
	if (toml_table_get(t, part_ptr(ps, last), ps->parts[last].len))
		fail_at(ps, at, "duplicate key '%s'", key_show(ps, last, show, sizeof(show)));
	if (peek(ps, 0) != '=')
		fail(ps, "expected '=' after the key '%s'", key_show(ps, last, show, sizeof(show)));
	ps->p++;
	skip_ws(ps);
	struct toml_value *v = toml_new(TOML_BOOL);
	toml_table_set(t, part_ptr(ps, last), ps->parts[last].len, v);
	parse_value(ps, v);
}

static void set_text(struct toml_value *v, enum toml_type type, const char *s, size_t n)
{
	v->u.str.ptr = xmalloc(n + 1);
	memcpy(v->u.str.ptr, s, n);
	v->u.str.ptr[n] = 0;
	v->u.str.len = n;
	v->type = type;
}

static int digits_at(const char *s, const char *end, size_t n)
{
	if ((size_t)(end - s) < n)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return 0;
	return 1;
}

static int num2(const char *s)
{
	return (s[0] - '0') * 10 + (s[1] - '0');
}

/* HH:MM:SS[.frac] at s; its length, 0 if absent, -1 if out of range. */
static long scan_time(const char *s, const char *end)
{
	if (!digits_at(s, end, 2) || end - s < 8 || s[2] != ':' || !digits_at(s + 3, end, 2) ||
	    s[5] != ':' || !digits_at(s + 6, end, 2))
		return 0;
	if (num2(s) > 23 || num2(s + 3) > 59 || num2(s + 6) > 59)
		return -1;
	const char *q = s + 8;
	if (q < end && *q == '.') {
		q++;
		if (q >= end || *q < '0' || *q > '9')
			return 0;
		while (q < end && *q >= '0' && *q <= '9')
			q++;
	}
	return q - s;
}

static int days_in(int y, int m)
{
	static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
		return 29;
	return d[m - 1];
}

/* Scans a date-time at s. Returns the kind and sets *len, -1 when it is
 * not one (*why set when it looked like one but is invalid). */
static int scan_datetime(const char *s, const char *end, size_t *len, const char **why)
{
	*why = NULL;
	if (digits_at(s, end, 2) && end - s > 2 && s[2] == ':') {
		long n = scan_time(s, end);
		if (n <= 0) {
			*why = n < 0 ? "time out of range" : "invalid time (expected HH:MM:SS)";
			return -1;
		}
		*len = (size_t)n;
		return TOML_TIME_LOCAL;
	}
	if (!digits_at(s, end, 4) || end - s < 10 || s[4] != '-' || !digits_at(s + 5, end, 2) ||
	    s[7] != '-' || !digits_at(s + 8, end, 2)) {
		*why = "invalid date (expected YYYY-MM-DD)";
		return -1;
	}
	int y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + num2(s + 2);
	int mo = num2(s + 5), d = num2(s + 8);
	if (mo < 1 || mo > 12 || d < 1 || d > days_in(y, mo)) {
		*why = "date out of range";
		return -1;
	}
	const char *q = s + 10;
	if (q >= end || !(*q == 'T' || *q == 't' || *q == ' ') || !digits_at(q + 1, end, 2)) {
		*len = 10;
		return TOML_DATE_LOCAL;
	}
	long n = scan_time(q + 1, end);
	if (n <= 0) {
		if (*q == ' ' && n == 0) { /* a date then something else */
			*len = 10;
			return TOML_DATE_LOCAL;
		}
		*why = n < 0 ? "time out of range" : "invalid time (expected HH:MM:SS)";
		return -1;
	}
	q += 1 + n;
	if (q < end && (*q == 'Z' || *q == 'z')) {
		*len = (size_t)(q + 1 - s);
		return TOML_DATETIME;
	}
	if (q < end && (*q == '+' || *q == '-')) {
		if (!digits_at(q + 1, end, 2) || end - q < 6 || q[3] != ':' ||
		    !digits_at(q + 4, end, 2)) {
			*why = "invalid time offset (expected +HH:MM)";
			return -1;
		}
		if (num2(q + 1) > 23 || num2(q + 4) > 59) {
			*why = "time offset out of range";
			return -1;
		}
		*len = (size_t)(q + 6 - s);
		return TOML_DATETIME;
	}
	*len = (size_t)(q - s);
	return TOML_DATETIME_LOCAL;
}

int toml_datetime_kind(const char *s, size_t len)
{
	size_t n;
	const char *why;
	int k = scan_datetime(s, s + len, &n, &why);
	return k >= 0 && n == len ? k : -1;
}

/* Digits of one base with single underscores between them; returns the end. */
static const char *scan_digits(const char *s, const char *end, int base)
{
	const char *q = s;
	int prev_digit = 0;
	while (q < end) {
		int c = (unsigned char)*q, dv = hex_digit_value(c);
		if (c == '_') {
			if (!prev_digit || q + 1 >= end ||
			    hex_digit_value((unsigned char)q[1]) < 0 ||
			    hex_digit_value((unsigned char)q[1]) >= base)
				return NULL;
			prev_digit = 0;
		} else if (dv >= 0 && dv < base) {
			prev_digit = 1;
		} else {
			break;
		}
		q++;
	}
	return q == s ? NULL : q;
}

static void strip_underscores(char *o, size_t olen, const char *s, const char *e)
{
	size_t w = 0;
	for (; s < e && w + 1 < olen; s++)
		if (*s != '_')
			o[w++] = *s;
	o[w] = 0;
}

static void parse_number(struct parser *ps, struct toml_value *v)
{
	const char *s = ps->p, *end = ps->end;
	char tmp[128];
	if (s + 1 < end && s[0] == '0' && (s[1] == 'x' || s[1] == 'o' || s[1] == 'b')) {
		int base = s[1] == 'x' ? 16 : s[1] == 'o' ? 8 : 2;
		const char *q = scan_digits(s + 2, end, base);
		if (!q)
			fail(ps, "invalid %s integer",
			     base == 16	 ? "hexadecimal"
			     : base == 8 ? "octal"
					 : "binary");
		if ((size_t)(q - s) >= sizeof(tmp))
			fail(ps, "integer out of range");
		strip_underscores(tmp, sizeof(tmp), s + 2, q);
		errno = 0;
		unsigned long long u = strtoull(tmp, NULL, base);
		if (errno == ERANGE || u > INT64_MAX)
			fail(ps, "integer out of range (64-bit signed)");
		v->u.i = (int64_t)u;
		v->type = TOML_INTEGER;
		ps->p = q;
		return;
	}
	const char *q = s;
	if (q < end && (*q == '+' || *q == '-'))
		q++;
	const char *ip = q;
	const char *ie = scan_digits(ip, end, 10);
	if (!ie)
		fail(ps, "invalid value (expected a number)");
	if (*ip == '0' && ie - ip > 1)
		fail(ps, "leading zeros are not allowed in a decimal number");
	q = ie;
	int is_float = 0;
	if (q < end && *q == '.') {
		const char *fe = scan_digits(q + 1, end, 10);
		if (!fe || q[1] == '_')
			fail_at(ps, q, "a decimal point must be followed by digits");
		q = fe;
		is_float = 1;
	}
	if (q < end && (*q == 'e' || *q == 'E')) {
		const char *es = q + 1;
		if (es < end && (*es == '+' || *es == '-'))
			es++;
		const char *ee = scan_digits(es, end, 10);
		if (!ee || *es == '_')
			fail_at(ps, q, "an exponent must be followed by digits");
		q = ee;
		is_float = 1;
	}
	if (q < end && (is_bare((unsigned char)*q) || *q == '.'))
		fail_at(ps, q, "invalid character '%c' in a number", *q);
	if ((size_t)(q - s) >= sizeof(tmp))
		fail(ps, "number too long");
	strip_underscores(tmp, sizeof(tmp), s, q);
	if (is_float) {
		v->u.f = strtod(tmp, NULL);
		v->type = TOML_FLOAT;
	} else {
		errno = 0;
		long long n = strtoll(tmp, NULL, 10);
		if (errno == ERANGE)
			fail(ps, "integer out of range (64-bit signed)");
		v->u.i = n;
		v->type = TOML_INTEGER;
	}
	ps->p = q;
}

static void enter(struct parser *ps)
{
	if (++ps->depth > TOML_MAX_DEPTH)
		fail(ps, "arrays and inline tables nested more than %d deep", TOML_MAX_DEPTH);
}

static void parse_array(struct parser *ps, struct toml_value *v)
{
	const char *open = ps->p;
	v->type = TOML_ARRAY;
	v->flags = TF_INLINE;
	enter(ps);
	ps->p++;
	for (;;) {
		skip_ws_nl(ps);
		if (peek(ps, 0) == ']')
			break;
		if (at_eof(ps))
			fail_at(ps, open, "unterminated array");
		struct toml_value *e = toml_new(TOML_BOOL);
		toml_array_push(v, e);
		parse_value(ps, e);
		skip_ws_nl(ps);
		if (peek(ps, 0) == ',') {
			ps->p++;
			continue;
		}
		if (peek(ps, 0) == ']')
			break;
		if (at_eof(ps))
			fail_at(ps, open, "unterminated array");
		fail(ps, "expected ',' or ']' in an array");
	}
	ps->p++;
	ps->depth--;
}

static void parse_inline_table(struct parser *ps, struct toml_value *v)
{
	v->type = TOML_TABLE;
	v->flags = TF_INLINE;
	enter(ps);
	ps->p++;
	skip_ws(ps);
	if (peek(ps, 0) == '}') {
		ps->p++;
		ps->depth--;
		return;
	}
	for (;;) {
		skip_ws(ps);
		if (peek(ps, 0) == '\n' || peek(ps, 0) == '\r')
			fail(ps, "newline in an inline table");
		if (peek(ps, 0) == '}')
			fail(ps, "trailing comma in an inline table");
		parse_keyval(ps, v);
		skip_ws(ps);
		if (peek(ps, 0) == ',') {
			ps->p++;
			continue;
		}
		if (peek(ps, 0) == '}')
			break;
		if (at_eof(ps))
			fail(ps, "unterminated inline table");
		if (peek(ps, 0) == '\n' || peek(ps, 0) == '\r')
			fail(ps, "newline in an inline table");
		fail(ps, "expected ',' or '}' in an inline table");
	}
	ps->p++;
	ps->depth--;
}

static void parse_value(struct parser *ps, struct toml_value *v)
{
	int c = peek(ps, 0);
	switch (c) {
	case '"':
	case '\'':
		parse_string(ps, 1);
		set_text(v, TOML_STRING, ps->sbuf.data ? ps->sbuf.data : "", ps->sbuf.len);
		return;
	case '[':
		parse_array(ps, v);
		return;
	case '{':
		parse_inline_table(ps, v);
		return;
	case 't':
	case 'f': {
		const char *w = c == 't' ? "true" : "false";
		if (!starts(ps, w) || is_bare(peek(ps, strlen(w))))
			fail(ps, "invalid value (expected true or false)");
		ps->p += strlen(w);
		v->u.b = c == 't';
		v->type = TOML_BOOL;
		return;
	}
	case -1:
	case '\n':
	case '\r':
	case '#':
		fail(ps, "expected a value");
	default:
		break;
	}
	const char *s = ps->p;
	if (c == '+' || c == '-')
		s++;
	if ((size_t)(ps->end - s) >= 3 && (!memcmp(s, "inf", 3) || !memcmp(s, "nan", 3))) {
		if (s + 3 < ps->end && is_bare((unsigned char)s[3]))
			fail(ps, "invalid value");
		v->u.f = s[0] == 'i' ? (c == '-' ? -INFINITY : INFINITY) : (c == '-' ? -NAN : NAN);
		v->type = TOML_FLOAT;
		ps->p = s + 3;
		return;
	}
	if (c >= '0' && c <= '9' &&
	    (digits_at(ps->p, ps->end, 4) && ps->end - ps->p > 4 && ps->p[4] == '-'
		 ? 1
		 : (digits_at(ps->p, ps->end, 2) && ps->end - ps->p > 2 && ps->p[2] == ':'))) {
		size_t n;
		const char *why;
		int k = scan_datetime(ps->p, ps->end, &n, &why);
		if (k < 0)
			fail(ps, "%s", why);
		set_text(v, (enum toml_type)k, ps->p, n);
		char *text = v->u.str.ptr;
		if (k != TOML_TIME_LOCAL && n > 10 && (text[10] == ' ' || text[10] == 't'))
			text[10] = 'T';
		if (text[n - 1] == 'z')
			text[n - 1] = 'Z';
		ps->p += n;
		return;
	}
	if ((c >= '0' && c <= '9') || c == '+' || c == '-') {
		parse_number(ps, v);
		return;
	}
	fail(ps, "invalid value starting with '%c'", c >= 0x20 && c < 0x7F ? c : '?');
}

/* [a.b] or [[a.b]] */
static struct toml_value *parse_header(struct parser *ps)
{
	char show[128];
	const char *at = ps->p;
	int aot = peek(ps, 1) == '[';
	ps->p += aot ? 2 : 1;
	parse_key(ps);
	if (peek(ps, 0) != ']' || (aot && peek(ps, 1) != ']'))
		fail(ps, "expected '%s' to close the table header", aot ? "]]" : "]");
	ps->p += aot ? 2 : 1;
	expect_eol(ps, "a table header");
	if (ps->nparts > TOML_MAX_DEPTH)
		fail_at(ps, at, "tables nested more than %d deep", TOML_MAX_DEPTH);
	ps->header_depth = ps->nparts;
	struct toml_value *t = ps->root;
	for (size_t i = 0; i + 1 < ps->nparts; i++) {
		struct toml_value *v = toml_table_get(t, part_ptr(ps, i), ps->parts[i].len);
		if (!v) {
			v = child_table(ps, t, i, TF_IMPLICIT);
		} else if (v->type == TOML_ARRAY && (v->flags & TF_AOT)) {
			v = v->u.arr.items[v->u.arr.n - 1];
		} else if (v->type != TOML_TABLE) {
			fail_at(ps, at, "key '%s' is already defined as %s",
				key_show(ps, i, show, sizeof(show)), toml_type_name(v->type));
		} else if (v->flags & TF_INLINE) {
			fail_at(ps, at, "cannot extend the inline table '%s'",
				key_show(ps, i, show, sizeof(show)));
		}
		t = v;
	}
	size_t last = ps->nparts - 1;
	struct toml_value *v = toml_table_get(t, part_ptr(ps, last), ps->parts[last].len);
	key_show(ps, last, show, sizeof(show));
	if (aot) {
		if (!v) {
			v = toml_new(TOML_ARRAY);
			v->flags = TF_AOT;
			toml_table_set(t, part_ptr(ps, last), ps->parts[last].len, v);
		} else if (v->type != TOML_ARRAY || !(v->flags & TF_AOT)) {
			fail_at(ps, at, "cannot define [[%s]]: the key is already defined as %s",
				show,
				v->type == TOML_ARRAY ? "a static array" : toml_type_name(v->type));
		}
		struct toml_value *e = toml_new(TOML_TABLE);
		e->flags = TF_DEFINED;
		toml_array_push(v, e);
		return e;
	}
	if (!v) {
		v = child_table(ps, t, last, TF_DEFINED);
		return v;
	}
	if (v->type != TOML_TABLE)
		fail_at(ps, at, "cannot define table [%s]: the key is already defined as %s", show,
			v->type == TOML_ARRAY && (v->flags & TF_AOT) ? "an array of tables"
								     : toml_type_name(v->type));
	if (v->flags & (TF_DEFINED | TF_DOTTED | TF_INLINE))
		fail_at(ps, at, "table [%s] is defined twice", show);
	v->flags = TF_DEFINED;
	return v;
}

static void check_utf8(struct parser *ps)
{
	const unsigned char *p = (const unsigned char *)ps->start,
			    *e = (const unsigned char *)ps->end;
	while (p < e) {
		if (*p < 0x80) {
			p++;
			continue;
		}
		size_t n = utf8_len(p, e);
		if (!n)
			fail_at(ps, (const char *)p, "invalid UTF-8 byte 0x%02X", *p);
		p += n;
	}
}

struct toml_value *toml_parse(const char *s, size_t len, struct toml_error *err)
{
	if (!s)
		s = "";
	struct parser ps = {.start = s, .p = s, .end = s + len, .err = err};
	memset(err, 0, sizeof(*err));
	buf_init(&ps.keybuf);
	buf_init(&ps.sbuf);
	ps.root = toml_new(TOML_TABLE);
	if (setjmp(ps.jb)) {
		toml_free(ps.root);
		buf_free(&ps.keybuf);
		buf_free(&ps.sbuf);
		free(ps.parts);
		return NULL;
	}
	check_utf8(&ps);
	struct toml_value *cur = ps.root;
	while (!at_eof(&ps)) {
		skip_ws(&ps);
		int c = peek(&ps, 0);
		if (c == '#') {
			skip_comment(&ps);
			expect_eol(&ps, "a comment");
		} else if (c == '\n' || c == '\r') {
			if (!eat_newline(&ps))
				fail(&ps, "carriage return not followed by a line feed");
		} else if (c == '[') {
			cur = parse_header(&ps);
		} else if (c >= 0) {
			parse_keyval(&ps, cur);
			expect_eol(&ps, "a value");
		}
	}
	buf_free(&ps.keybuf);
	buf_free(&ps.sbuf);
	free(ps.parts);
	return ps.root;
}

/* --- encoder ----------------------------------------------------------------- */

struct enc {
	struct buf *out;
	int pretty;
	char *err;
	size_t errlen;
	int depth;
};

static int enc_fail(struct enc *e, const char *msg)
{
	if (!e->err[0])
		snprintf(e->err, e->errlen, "%s", msg);
	return -1;
}

static int valid_utf8(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + n;
	while (p < end) {
		size_t k = utf8_len(p, end);
		if (!k)
			return 0;
		p += k;
	}
	return 1;
}

static int put_string(struct enc *e, const char *s, size_t n)
{
	if (!valid_utf8(s, n))
		return enc_fail(e, "string is not valid UTF-8 (TOML strings are Unicode)");
	buf_appendc(e->out, '"');
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		switch (c) {
		case '"':
			buf_appends(e->out, "\\\"");
			break;
		case '\\':
			buf_appends(e->out, "\\\\");
			break;
		case '\n':
			buf_appends(e->out, "\\n");
			break;
		case '\t':
			buf_appends(e->out, "\\t");
			break;
		case '\r':
			buf_appends(e->out, "\\r");
			break;
		case '\b':
			buf_appends(e->out, "\\b");
			break;
		case '\f':
			buf_appends(e->out, "\\f");
			break;
		default:
			if (c < 0x20 || c == 0x7F)
				buf_printf(e->out, "\\u%04X", c);
			else
				buf_appendc(e->out, (char)c);
		}
	}
	buf_appendc(e->out, '"');
	return 0;
}

static int put_key(struct enc *e, const char *k, size_t n)
{
	size_t i = 0;
	while (i < n && is_bare((unsigned char)k[i]))
		i++;
	if (n > 0 && i == n) {
		buf_append(e->out, k, n);
		return 0;
	}
	return put_string(e, k, n);
}

static void put_float(struct buf *b, double d)
{
	if (isnan(d)) {
		buf_appends(b, "nan");
		return;
	}
	if (isinf(d)) {
		buf_appends(b, d < 0 ? "-inf" : "inf");
		return;
	}
	char tmp[40];
	for (int p = 1; p <= 17; p++) {
		snprintf(tmp, sizeof(tmp), "%.*g", p, d);
		if (strtod(tmp, NULL) == d)
			break;
	}
	buf_appends(b, tmp);
	if (!strpbrk(tmp, ".eEn"))
		buf_appends(b, ".0");
}

static int put_inline(struct enc *e, const struct toml_value *v, int indent);

static int is_aot(const struct toml_value *v)
{
	if (v->type != TOML_ARRAY || v->u.arr.n == 0)
		return 0;
	for (size_t i = 0; i < v->u.arr.n; i++)
		if (v->u.arr.items[i]->type != TOML_TABLE)
			return 0;
	return 1;
}

static int put_inline(struct enc *e, const struct toml_value *v, int indent)
{
	if (e->depth > TOML_ENC_MAX_DEPTH)
		return enc_fail(e, "value nested too deeply");
	switch (v->type) {
	case TOML_BOOL:
		buf_appends(e->out, v->u.b ? "true" : "false");
		return 0;
	case TOML_INTEGER:
		buf_printf(e->out, "%lld", (long long)v->u.i);
		return 0;
	case TOML_FLOAT:
		put_float(e->out, v->u.f);
		return 0;
	case TOML_STRING:
		return put_string(e, v->u.str.ptr, v->u.str.len);
	case TOML_DATETIME:
	case TOML_DATETIME_LOCAL:
	case TOML_DATE_LOCAL:
	case TOML_TIME_LOCAL:
		buf_append(e->out, v->u.str.ptr, v->u.str.len);
		return 0;
	case TOML_ARRAY: {
		int multi = e->pretty && v->u.arr.n > 0 && indent == 0;
		buf_appendc(e->out, '[');
		e->depth++;
		for (size_t i = 0; i < v->u.arr.n; i++) {
			if (multi)
				buf_appends(e->out, "\n    ");
			else if (i)
				buf_appends(e->out, ", ");
			if (put_inline(e, v->u.arr.items[i], indent + 1) < 0)
				return -1;
			if (multi)
				buf_appendc(e->out, ',');
		}
		e->depth--;
		if (multi)
			buf_appendc(e->out, '\n');
		buf_appendc(e->out, ']');
		return 0;
	}
	case TOML_TABLE:
		buf_appendc(e->out, '{');
		e->depth++;
		for (size_t i = 0; i < v->u.tab.n; i++) {
			buf_appends(e->out, i ? ", " : " ");
			if (put_key(e, v->u.tab.kv[i].key, v->u.tab.kv[i].keylen) < 0)
				return -1;
			buf_appends(e->out, " = ");
			if (put_inline(e, v->u.tab.kv[i].val, indent + 1) < 0)
				return -1;
		}
		e->depth--;
		buf_appends(e->out, v->u.tab.n ? " }" : "}");
		return 0;
	}
	return enc_fail(e, "unknown value type");
}

/* The header path of a table: dotted keys, each bare or quoted. */
static int put_path(struct enc *e, const struct buf *path)
{
	buf_append(e->out, path->data, path->len);
	return 0;
}

static int put_table(struct enc *e, const struct toml_value *t, struct buf *path, int header,
		     int aot);

static int put_children(struct enc *e, const struct toml_value *t, struct buf *path)
{
	for (size_t i = 0; i < t->u.tab.n; i++) {
		const struct toml_kv *kv = &t->u.tab.kv[i];
		if (kv->val->type != TOML_TABLE && !is_aot(kv->val))
			continue;
		size_t mark = path->len;
		if (path->len)
			buf_appendc(path, '.');
		struct buf *saved = e->out;
		struct buf kb;
		buf_init(&kb);
		e->out = &kb;
		int rc = put_key(e, kv->key, kv->keylen);
		e->out = saved;
		if (rc == 0)
			buf_append(path, kb.data, kb.len);
		buf_free(&kb);
		if (rc < 0)
			return -1;
		if (kv->val->type == TOML_TABLE) {
			if (put_table(e, kv->val, path, 1, 0) < 0)
				return -1;
		} else {
			for (size_t j = 0; j < kv->val->u.arr.n; j++)
				if (put_table(e, kv->val->u.arr.items[j], path, 1, 1) < 0)
					return -1;
		}
		path->len = mark;
	}
	return 0;
}

static int put_table(struct enc *e, const struct toml_value *t, struct buf *path, int header,
		     int aot)
{
	if (++e->depth > TOML_ENC_MAX_DEPTH)
		return enc_fail(e, "tables nested too deeply");
	size_t scalars = 0, subs = 0;
	for (size_t i = 0; i < t->u.tab.n; i++) {
		const struct toml_value *v = t->u.tab.kv[i].val;
		if (v->type == TOML_TABLE || is_aot(v))
			subs++;
		else
			scalars++;
	}
	if (header && (scalars || !subs || aot)) {
		if (e->out->len)
			buf_appendc(e->out, '\n');
		buf_appends(e->out, aot ? "[[" : "[");
		put_path(e, path);
		buf_appends(e->out, aot ? "]]\n" : "]\n");
	}
	for (size_t i = 0; i < t->u.tab.n; i++) {
		const struct toml_kv *kv = &t->u.tab.kv[i];
		if (kv->val->type == TOML_TABLE || is_aot(kv->val))
			continue;
		if (put_key(e, kv->key, kv->keylen) < 0)
			return -1;
		buf_appends(e->out, " = ");
		if (put_inline(e, kv->val, 0) < 0)
			return -1;
		buf_appendc(e->out, '\n');
	}
	int rc = put_children(e, t, path);
	e->depth--;
	return rc;
}

int toml_encode(const struct toml_value *root, int pretty, struct buf *out, char *err,
		size_t errlen)
{
	struct enc e = {.out = out, .pretty = pretty, .err = err, .errlen = errlen};
	err[0] = 0;
	if (!root || root->type != TOML_TABLE)
		return enc_fail(&e, "the top level of a TOML document must be a table");
	struct buf path;
	buf_init(&path);
	int rc = put_table(&e, root, &path, 0, 0);
	buf_free(&path);
	return rc;
}
