/* SPDX-License-Identifier: Apache-2.0 */
/* Introspection protocol: framing, command decoding, durations, JSON writers. */
#include "proto/console_proto.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* --- framing --------------------------------------------------------------- */

int console_line_next(const char *p, size_t len, size_t max, size_t *linelen)
{
	size_t scan = len < max + 1 ? len : max + 1;
	const char *nl = memchr(p, '\n', scan);
	if (!nl)
		return len > max ? -E2BIG : 0;
	size_t n = (size_t)(nl - p);
	*linelen = n > 0 && p[n - 1] == '\r' ? n - 1 : n;
	return (int)(n + 1);
}

/* --- JSON reader ----------------------------------------------------------- */

struct cj {
	const char *p;
	size_t len, i;
	int depth;
	const char *err;
	size_t errpos;
};

static int cj_fail(struct cj *c, const char *why)
{
	if (!c->err) {
		c->err = why;
		c->errpos = c->i;
	}
	return -EINVAL;
}

static void cj_ws(struct cj *c)
{
	while (c->i < c->len && (c->p[c->i] == ' ' || c->p[c->i] == '\t' || c->p[c->i] == '\n' ||
				 c->p[c->i] == '\r'))
		c->i++;
}

static int cj_hex(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid. */
static size_t cj_utf8_len(const unsigned char *s, size_t n)
{
	if (s[0] < 0x80)
		return 1;
	size_t need;
	uint32_t cp;
	if (s[0] >= 0xC2 && s[0] <= 0xDF) {
		need = 2;
		cp = s[0] & 0x1F;
	} else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
		need = 3;
		cp = s[0] & 0x0F;
	} else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
		need = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (n < need)
		return 0;
	for (size_t k = 1; k < need; k++) {
		if ((s[k] & 0xC0) != 0x80)
			return 0;
		cp = cp << 6 | (s[k] & 0x3F);
	}
	if ((need == 3 && cp < 0x800) || (need == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
	    (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return need;
}

/* A string at c->i (which holds '"'). Decoded ASCII-safe copy into out
 * (truncated at cap-1, *trunc set) when out is not NULL. */
static int cj_string(struct cj *c, char *out, size_t cap, int *trunc)
{
	size_t o = 0;
	c->i++;
	while (c->i < c->len) {
		unsigned char ch = (unsigned char)c->p[c->i];
		char put = 0;
		if (ch == '"') {
			c->i++;
			if (out)
				out[o] = '\0';
			return 0;
		}
		if (ch < 0x20)
			return cj_fail(c, "control character in string");
		if (ch == '\\') {
			if (c->i + 1 >= c->len)
				return cj_fail(c, "unterminated string");
			char e = c->p[c->i + 1];
			static const char esc_in[] = "\"\\/bfnrt", esc_out[] = "\"\\/\b\f\n\r\t";
			const char *k = e ? strchr(esc_in, e) : NULL;
			if (k) {
				put = esc_out[k - esc_in];
				c->i += 2;
			} else if (e == 'u') {
				if (c->i + 6 > c->len)
					return cj_fail(c, "short \\u escape");
				for (int h = 2; h < 6; h++)
					if (cj_hex(c->p[c->i + h]) < 0)
						return cj_fail(c, "bad \\u escape");
				put = '?'; /* command values are ASCII words */
				c->i += 6;
			} else {
				return cj_fail(c, "bad escape in string");
			}
		} else if (ch < 0x80) {
			put = (char)ch;
			c->i++;
		} else {
			size_t n = cj_utf8_len((const unsigned char *)c->p + c->i, c->len - c->i);
			if (!n)
				return cj_fail(c, "invalid UTF-8 in string");
			put = '?';
			c->i += n;
		}
		if (out) {
			if (o + 1 < cap)
				out[o++] = put;
			else
				*trunc = 1;
		}
	}
	return cj_fail(c, "unterminated string");
}

/* A number; *is_uint and *u describe it when it is a plain unsigned integer
 * that fits 64 bits. */
static int cj_number(struct cj *c, int *is_uint, uint64_t *u)
{
	size_t start = c->i;
	int plain = 1, overflow = 0;
	uint64_t v = 0;
	if (c->p[c->i] == '-') {
		plain = 0;
		c->i++;
	}
	if (c->i >= c->len || c->p[c->i] < '0' || c->p[c->i] > '9')
		return cj_fail(c, "bad number");
	if (c->p[c->i] == '0') {
		c->i++;
	} else {
		while (c->i < c->len && c->p[c->i] >= '0' && c->p[c->i] <= '9') {
			unsigned d = (unsigned)(c->p[c->i] - '0');
			if (v > (UINT64_MAX - d) / 10)
				overflow = 1;
			v = v * 10 + d;
			c->i++;
		}
	}
	if (c->i < c->len && c->p[c->i] == '.') {
		plain = 0;
		c->i++;
		if (c->i >= c->len || c->p[c->i] < '0' || c->p[c->i] > '9')
			return cj_fail(c, "bad number");
		while (c->i < c->len && c->p[c->i] >= '0' && c->p[c->i] <= '9')
			c->i++;
	}
	if (c->i < c->len && (c->p[c->i] == 'e' || c->p[c->i] == 'E')) {
		plain = 0;
		c->i++;
		if (c->i < c->len && (c->p[c->i] == '+' || c->p[c->i] == '-'))
			c->i++;
		if (c->i >= c->len || c->p[c->i] < '0' || c->p[c->i] > '9')
			return cj_fail(c, "bad number");
		while (c->i < c->len && c->p[c->i] >= '0' && c->p[c->i] <= '9')
			c->i++;
	}
	(void)start;
	if (is_uint)
		*is_uint = plain && !overflow;
	if (u)
		*u = v;
	return 0;
}

static int cj_value(struct cj *c);

static int cj_literal(struct cj *c, const char *word)
{
	size_t n = strlen(word);
	if (c->len - c->i < n || memcmp(c->p + c->i, word, n) != 0)
		return cj_fail(c, "unexpected character");
	c->i += n;
	return 0;
}

/* Members or elements of a container at c->i (which holds '{' or '['). */
static int cj_container(struct cj *c, char open)
{
	char close = open == '{' ? '}' : ']';
	if (++c->depth > CONSOLE_JSON_DEPTH)
		return cj_fail(c, "nested too deep");
	c->i++;
	cj_ws(c);
	if (c->i < c->len && c->p[c->i] == close) {
		c->i++;
		c->depth--;
		return 0;
	}
	for (;;) {
		if (open == '{') {
			if (c->i >= c->len || c->p[c->i] != '"')
				return cj_fail(c, "expected a member name");
			if (cj_string(c, NULL, 0, NULL) < 0)
				return -EINVAL;
			cj_ws(c);
			if (c->i >= c->len || c->p[c->i] != ':')
				return cj_fail(c, "expected ':'");
			c->i++;
		}
		if (cj_value(c) < 0)
			return -EINVAL;
		cj_ws(c);
		if (c->i < c->len && c->p[c->i] == ',') {
			c->i++;
			cj_ws(c);
			continue;
		}
		if (c->i < c->len && c->p[c->i] == close) {
			c->i++;
			c->depth--;
			return 0;
		}
		return cj_fail(c, open == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
	}
}

static int cj_value(struct cj *c)
{
	cj_ws(c);
	if (c->i >= c->len)
		return cj_fail(c, "unexpected end of input");
	switch (c->p[c->i]) {
	case '{':
	case '[':
		return cj_container(c, c->p[c->i]);
	case '"':
		return cj_string(c, NULL, 0, NULL);
	case 't':
		return cj_literal(c, "true");
	case 'f':
		return cj_literal(c, "false");
	case 'n':
		return cj_literal(c, "null");
	default:
		return cj_number(c, NULL, NULL);
	}
}

int console_json_validate(const char *p, size_t len, size_t *errpos)
{
	struct cj c = {.p = p, .len = len};
	if (cj_value(&c) == 0) {
		cj_ws(&c);
		if (c.i == c.len)
			return 0;
		cj_fail(&c, "trailing characters");
	}
	if (errpos)
		*errpos = c.errpos;
	return -EINVAL;
}

/* --- commands -------------------------------------------------------------- */

enum {
	NEEDS_ID = 1,
	NEEDS_QUEUE = 2,
	NEEDS_MESSAGE = 4,
};

static const struct {
	const char *name;
	enum console_cmd_kind kind;
	int needs;
} console_cmds[] = {
    {"pause", CONSOLE_CMD_PAUSE, 0},
    {"resume", CONSOLE_CMD_RESUME, 0},
    {"watch_task", CONSOLE_CMD_WATCH_TASK, NEEDS_ID},
    {"details", CONSOLE_CMD_WATCH_TASK, NEEDS_ID},
    {"unwatch_task", CONSOLE_CMD_UNWATCH_TASK, 0},
    {"snapshot", CONSOLE_CMD_SNAPSHOT, 0},
    {"session", CONSOLE_CMD_SESSION, NEEDS_ID},
    {"queue_messages", CONSOLE_CMD_QUEUE_MESSAGES, NEEDS_QUEUE},
    {"message", CONSOLE_CMD_MESSAGE, NEEDS_MESSAGE},
};

const char *console_cmd_name(enum console_cmd_kind k)
{
	for (size_t i = 0; i < sizeof(console_cmds) / sizeof(console_cmds[0]); i++)
		if (console_cmds[i].kind == k)
			return console_cmds[i].name;
	return "?";
}

/* A string member of a command: where it is seen and copied to. */
struct cj_str_member {
	int have, trunc;
	size_t pos;
};

enum {
	STR_QUEUE,
	STR_AFTER,
	STR_MESSAGE,
	STR__COUNT
};
static const char *const str_member_names[STR__COUNT] = {"queue", "after", "message_id"};

struct cj_cmd_members {
	char cmd[32];
	int have_cmd, cmd_trunc;
	size_t cmd_pos;
	int have_id, id_ok;
	uint64_t id;
	size_t id_pos;
	int have_limit, limit_ok;
	uint64_t limit;
	size_t limit_pos;
	struct cj_str_member str[STR__COUNT];
	char *str_out[STR__COUNT];
	size_t str_cap[STR__COUNT];
};

/* "queue", "after", "message_id": a string copied into the command. */
static int cj_str_member(struct cj *c, struct cj_cmd_members *m, int k, size_t at)
{
	struct cj_str_member *sm = &m->str[k];
	if (sm->have) {
		c->i = at;
		return cj_fail(c, "duplicate member");
	}
	if (c->i >= c->len || c->p[c->i] != '"')
		return cj_fail(c, "expected a string");
	sm->have = 1;
	sm->pos = at;
	return cj_string(c, m->str_out[k], m->str_cap[k], &sm->trunc);
}

/* "limit": an unsigned integer. */
static int cj_limit_member(struct cj *c, struct cj_cmd_members *m, size_t at)
{
	if (m->have_limit) {
		c->i = at;
		return cj_fail(c, "duplicate member \"limit\"");
	}
	m->have_limit = 1;
	m->limit_pos = at;
	if (c->i < c->len && (c->p[c->i] == '-' || (c->p[c->i] >= '0' && c->p[c->i] <= '9')))
		return cj_number(c, &m->limit_ok, &m->limit);
	m->limit_ok = 0;
	return cj_value(c);
}

/* One member of the top-level object: remembers "cmd", "id" and the
 * members of the newer commands. */
static int cj_cmd_member(struct cj *c, struct cj_cmd_members *m)
{
	char key[16];
	int trunc = 0;
	if (c->i >= c->len || c->p[c->i] != '"')
		return cj_fail(c, "expected a member name");
	if (cj_string(c, key, sizeof(key), &trunc) < 0)
		return -EINVAL;
	cj_ws(c);
	if (c->i >= c->len || c->p[c->i] != ':')
		return cj_fail(c, "expected ':'");
	c->i++;
	cj_ws(c);
	size_t at = c->i;
	for (int k = 0; k < STR__COUNT && !trunc; k++)
		if (strcmp(key, str_member_names[k]) == 0)
			return cj_str_member(c, m, k, at);
	if (!trunc && strcmp(key, "limit") == 0)
		return cj_limit_member(c, m, at);
	int is_cmd = !trunc && strcmp(key, "cmd") == 0, is_id = !trunc && strcmp(key, "id") == 0;
	if ((is_cmd && m->have_cmd) || (is_id && m->have_id)) {
		c->i = at;
		return cj_fail(c, is_cmd ? "duplicate member \"cmd\"" : "duplicate member \"id\"");
	}
	if (is_cmd) {
		if (c->i >= c->len || c->p[c->i] != '"')
			return cj_fail(c, "\"cmd\" must be a string");
		m->have_cmd = 1;
		m->cmd_pos = at;
		return cj_string(c, m->cmd, sizeof(m->cmd), &m->cmd_trunc);
	}
	if (is_id && c->i < c->len &&
	    (c->p[c->i] == '-' || (c->p[c->i] >= '0' && c->p[c->i] <= '9'))) {
		m->have_id = 1;
		m->id_pos = at;
		return cj_number(c, &m->id_ok, &m->id);
	}
	if (is_id) {
		m->have_id = 1;
		m->id_pos = at;
		m->id_ok = 0;
	}
	return cj_value(c);
}

static int cj_cmd_object(struct cj *c, struct cj_cmd_members *m)
{
	cj_ws(c);
	if (c->i >= c->len || c->p[c->i] != '{')
		return cj_fail(c, "a command is a JSON object");
	c->i++;
	c->depth = 1;
	cj_ws(c);
	if (c->i < c->len && c->p[c->i] == '}') {
		c->i++;
	} else {
		for (;;) {
			if (cj_cmd_member(c, m) < 0)
				return -EINVAL;
			cj_ws(c);
			if (c->i < c->len && c->p[c->i] == ',') {
				c->i++;
				cj_ws(c);
				continue;
			}
			if (c->i < c->len && c->p[c->i] == '}') {
				c->i++;
				break;
			}
			return cj_fail(c, "expected ',' or '}'");
		}
	}
	cj_ws(c);
	if (c->i != c->len)
		return cj_fail(c, "trailing characters after the object");
	return 0;
}

static int cmd_error(char *err, size_t errlen, size_t *errpos, size_t pos, const char *msg)
{
	if (err && errlen)
		snprintf(err, errlen, "%s", msg);
	if (errpos)
		*errpos = pos;
	return -EINVAL;
}

/* The members a command needs, checked once its name is known. */
static int cmd_check(const struct cj_cmd_members *m, int needs, struct console_cmd *cmd, char *err,
		     size_t errlen, size_t *errpos)
{
	if (needs & NEEDS_ID) {
		if (!m->have_id)
			return cmd_error(err, errlen, errpos, 0, "missing member \"id\"");
		if (!m->id_ok || m->id == 0)
			return cmd_error(err, errlen, errpos, m->id_pos,
					 "\"id\" must be a task id (a positive integer)");
		cmd->id = m->id;
	}
	if (needs & NEEDS_QUEUE) {
		const struct cj_str_member *q = &m->str[STR_QUEUE], *a = &m->str[STR_AFTER];
		if (!q->have || !cmd->queue[0])
			return cmd_error(err, errlen, errpos, q->pos,
					 "missing member \"queue\" (a queue name)");
		if (q->trunc)
			return cmd_error(err, errlen, errpos, q->pos, "\"queue\" is too long");
		if (a->trunc)
			return cmd_error(err, errlen, errpos, a->pos,
					 "\"after\" is too long for a message id");
		cmd->limit = CONSOLE_LIMIT_DEFAULT;
		if (m->have_limit) {
			if (!m->limit_ok || m->limit == 0 || m->limit > CONSOLE_LIMIT_MAX)
				return cmd_error(err, errlen, errpos, m->limit_pos,
						 "\"limit\" must be an integer from 1 to 500");
			cmd->limit = m->limit;
		}
	}
	if (needs & NEEDS_MESSAGE) {
		const struct cj_str_member *i = &m->str[STR_MESSAGE];
		if (!i->have || !cmd->message_id[0])
			return cmd_error(err, errlen, errpos, i->pos,
					 "missing member \"message_id\"");
		if (i->trunc)
			return cmd_error(err, errlen, errpos, i->pos,
					 "\"message_id\" is too long for a message id");
	}
	return 0;
}

int console_cmd_decode(const char *p, size_t len, struct console_cmd *cmd, char *err, size_t errlen,
		       size_t *errpos)
{
	struct cj c = {.p = p, .len = len};
	struct cj_cmd_members m = {
	    .str_out = {cmd->queue, cmd->after, cmd->message_id},
	    .str_cap = {sizeof(cmd->queue), sizeof(cmd->after), sizeof(cmd->message_id)},
	};
	memset(cmd, 0, sizeof(*cmd));
	if (cj_cmd_object(&c, &m) < 0)
		return cmd_error(err, errlen, errpos, c.errpos, c.err);
	if (!m.have_cmd)
		return cmd_error(err, errlen, errpos, 0, "missing member \"cmd\"");
	for (size_t i = 0; i < sizeof(console_cmds) / sizeof(console_cmds[0]); i++) {
		if (m.cmd_trunc || strcmp(m.cmd, console_cmds[i].name) != 0)
			continue;
		cmd->kind = console_cmds[i].kind;
		return cmd_check(&m, console_cmds[i].needs, cmd, err, errlen, errpos);
	}
	return cmd_error(err, errlen, errpos, m.cmd_pos,
			 "unknown command (pause, resume, watch_task, unwatch_task, snapshot, "
			 "session, queue_messages, message)");
}

/* --- durations ------------------------------------------------------------- */

static const struct {
	const char *unit;
	uint64_t ns;
} console_units[] = {
    {"ns", 1},
    {"us", 1000ull},
    {"ms", 1000000ull},
    {"s", 1000000000ull},
    {"sec", 1000000000ull},
    {"secs", 1000000000ull},
    {"second", 1000000000ull},
    {"seconds", 1000000000ull},
    {"m", 60000000000ull},
    {"min", 60000000000ull},
    {"mins", 60000000000ull},
    {"minute", 60000000000ull},
    {"minutes", 60000000000ull},
    {"h", 3600000000000ull},
    {"hr", 3600000000000ull},
    {"hrs", 3600000000000ull},
    {"hour", 3600000000000ull},
    {"hours", 3600000000000ull},
    {"d", 86400000000000ull},
    {"day", 86400000000000ull},
    {"days", 86400000000000ull},
};

static int console_unit_ns(const char *u, size_t n, uint64_t *ns)
{
	for (size_t i = 0; i < sizeof(console_units) / sizeof(console_units[0]); i++) {
		if (strlen(console_units[i].unit) == n &&
		    memcmp(console_units[i].unit, u, n) == 0) {
			*ns = console_units[i].ns;
			return 0;
		}
	}
	return -EINVAL;
}

int console_parse_duration(const char *s, uint64_t *ns)
{
	uint64_t total = 0;
	int groups = 0;
	size_t i = 0;
	for (;;) {
		while (s[i] == ' ')
			i++;
		if (!s[i])
			break;
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		uint64_t v = 0;
		while (s[i] >= '0' && s[i] <= '9') {
			unsigned d = (unsigned)(s[i++] - '0');
			if (v > (UINT64_MAX - d) / 10)
				return -EINVAL;
			v = v * 10 + d;
		}
		while (s[i] == ' ')
			i++;
		size_t u = i;
		while ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z'))
			i++;
		uint64_t unit;
		if (i == u || console_unit_ns(s + u, i - u, &unit) < 0)
			return -EINVAL; /* a bare number is ambiguous: a unit is required */
		if (v && unit > UINT64_MAX / v)
			return -EINVAL;
		if (total > UINT64_MAX - v * unit)
			return -EINVAL;
		total += v * unit;
		groups++;
	}
	if (!groups)
		return -EINVAL;
	*ns = total;
	return 0;
}

/* --- JSON writers ---------------------------------------------------------- */

void console_json_sep(struct buf *b)
{
	if (!b->len)
		return;
	char last = b->data[b->len - 1];
	if (last != '{' && last != '[' && last != ':' && last != ',')
		buf_appendc(b, ',');
}

void console_json_strn(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF"; /* as jansson writes them */
	buf_reserve(b, n + 2);
	buf_appendc(b, '"');
	size_t i = 0;
	while (i < n) {
		unsigned char ch = (unsigned char)s[i];
		size_t run = i;
		while (run < n && (unsigned char)s[run] >= 0x20 && (unsigned char)s[run] < 0x80 &&
		       s[run] != '"' && s[run] != '\\')
			run++;
		if (run > i) {
			buf_append(b, s + i, run - i);
			i = run;
			continue;
		}
		if (ch == '"' || ch == '\\') {
			char e[2] = {'\\', (char)ch};
			buf_append(b, e, 2);
			i++;
		} else if (ch < 0x20) { /* jansson's escapes: the short forms where JSON has one */
			const char *sh = ch == '\n'   ? "\\n"
					 : ch == '\r' ? "\\r"
					 : ch == '\t' ? "\\t"
					 : ch == '\b' ? "\\b"
					 : ch == '\f' ? "\\f"
						      : NULL;
			if (sh) {
				buf_append(b, sh, 2);
			} else {
				char e[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
				buf_append(b, e, 6);
			}
			i++;
		} else {
			size_t k = cj_utf8_len((const unsigned char *)s + i, n - i);
			if (k) {
				buf_append(b, s + i, k);
				i += k;
			} else {
				buf_append(b, "\xEF\xBF\xBD", 3); /* U+FFFD */
				i++;
			}
		}
	}
	buf_appendc(b, '"');
}

void console_json_str(struct buf *b, const char *s)
{
	if (!s)
		s = "";
	console_json_strn(b, s, strlen(s));
}

void console_json_key(struct buf *b, const char *key)
{
	console_json_sep(b);
	console_json_str(b, key);
	buf_appendc(b, ':');
}

void console_json_u64(struct buf *b, uint64_t v)
{
	char tmp[24];
	size_t n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	buf_reserve(b, n);
	while (n)
		b->data[b->len++] = tmp[--n];
}

void console_json_kv_str(struct buf *b, const char *key, const char *v)
{
	console_json_key(b, key);
	console_json_str(b, v);
}

void console_json_kv_u64(struct buf *b, const char *key, uint64_t v)
{
	console_json_key(b, key);
	console_json_u64(b, v);
}

void console_json_kv_i64(struct buf *b, const char *key, int64_t v)
{
	console_json_key(b, key);
	if (v < 0) {
		buf_appendc(b, '-');
		console_json_u64(b, (uint64_t)0 - (uint64_t)v);
	} else {
		console_json_u64(b, (uint64_t)v);
	}
}

void console_json_kv_bool(struct buf *b, const char *key, int v)
{
	console_json_key(b, key);
	buf_appends(b, v ? "true" : "false");
}

void console_error_frame(struct buf *b, const char *msg, size_t pos)
{
	buf_appends(b, "{\"type\":\"error\"");
	console_json_kv_str(b, "error", msg);
	console_json_kv_u64(b, "at", pos);
	buf_appends(b, "}\n");
}
