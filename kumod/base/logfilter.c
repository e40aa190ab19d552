/* SPDX-License-Identifier: Apache-2.0 */
/* KUMOD_LOG directive parser and matcher with tracing-subscriber EnvFilter (0.3.23) semantics. */
#include "base/logfilter.h"

#include <errno.h>
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/xalloc.h"

/* Kinds of a field value literal, in the order upstream tries them. */
enum lf_vkind {
	LF_V_BOOL,
	LF_V_U64,
	LF_V_I64,
	LF_V_F64,
	LF_V_NAN,
	LF_V_PAT, /* anything else: a regular expression */
};

struct lf_value {
	enum lf_vkind kind;
	union {
		int b;
		uint64_t u;
		int64_t i;
		double f;
	} v;
};

struct lf_field {
	char *name;
	char *value; /* NULL: the field only has to be present */
	struct lf_value lit;
	regex_t *re; /* LF_V_PAT only */
};

struct lf_directive {
	char *target; /* NULL: every target */
	char *span;   /* NULL: no span name (may be "" after `[]`) */
	struct lf_field *fields;
	size_t nfields;
	enum log_level level;
};

struct logfilter {
	struct lf_directive *dirs; /* most specific first */
	size_t ndirs, cap;
	int has_dynamic;
};

/* Parse context of one directive: the untrimmed piece and where to report. */
struct lf_ctx {
	const char *from;
	size_t flen;
	char *err;
	size_t errlen;
};

/* --- small lexical helpers ------------------------------------------------ */

/* Decodes one UTF-8 sequence at s[0..n); returns its length, 0 when invalid. */
static size_t lf_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
	static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
	size_t len = 0;
	if (s[0] < 0x80)
		len = 1;
	else if (s[0] >= 0xc2 && s[0] < 0xe0)
		len = 2;
	else if (s[0] >= 0xe0 && s[0] < 0xf0)
		len = 3;
	else if (s[0] >= 0xf0 && s[0] < 0xf5)
		len = 4;
	if (len == 0 || len > n)
		return 0;
	uint32_t c = len == 1 ? s[0] : s[0] & (0x7f >> len);
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (s[i] & 0x3f);
	}
	if (c < min[len] || c > 0x10ffff || (c >= 0xd800 && c < 0xe000))
		return 0;
	*cp = c;
	return len;
}

static int lf_utf8_valid(const char *s, size_t n)
{
	uint32_t cp;
	for (size_t i = 0; i < n;) {
		size_t l = lf_utf8_decode((const unsigned char *)s + i, n - i, &cp);
		if (!l)
			return 0;
		i += l;
	}
	return 1;
}

/* Unicode White_Space, what Rust's str::trim() removes. */
static int lf_is_space(uint32_t c)
{
	return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
	       (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
	       c == 0x205f || c == 0x3000;
}

/* char::is_alphanumeric(). Exact for ASCII; for other code points a table of the
 * letter and number blocks of the common scripts (every real target is ASCII, so
 * only the error/no-match distinction of exotic first characters can differ). */
static int lf_is_alnum(uint32_t c)
{
	static const uint32_t ranges[][2] = {
	    {0xaa, 0xaa},	{0xb2, 0xb3},	    {0xb5, 0xb5},	{0xb9, 0xba},
	    {0xbc, 0xbe},	{0xc0, 0xd6},	    {0xd8, 0xf6},	{0xf8, 0x2c1},
	    {0x2c6, 0x2d1},	{0x2e0, 0x2e4},	    {0x370, 0x374},	{0x376, 0x37d},
	    {0x386, 0x386},	{0x388, 0x3f5},	    {0x3f7, 0x481},	{0x48a, 0x52f},
	    {0x531, 0x556},	{0x560, 0x588},	    {0x5d0, 0x5ea},	{0x620, 0x64a},
	    {0x660, 0x669},	{0x904, 0x939},	    {0x966, 0x96f},	{0xe01, 0xe30},
	    {0x10a0, 0x10ff},	{0x1100, 0x11ff},   {0x1e00, 0x1fbc},	{0x2070, 0x2079},
	    {0x2160, 0x2188},	{0x2460, 0x249b},   {0x3041, 0x3096},	{0x30a1, 0x30fa},
	    {0x3400, 0x4dbf},	{0x4e00, 0x9fff},   {0xac00, 0xd7a3},	{0xf900, 0xfaff},
	    {0xff10, 0xff19},	{0xff21, 0xff3a},   {0xff41, 0xff5a},	{0xff66, 0xffdc},
	    {0x10400, 0x1044f}, {0x1d400, 0x1d7ff}, {0x20000, 0x3134f},
	};
	if (c < 0x80)
		return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
	for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++)
		if (c >= ranges[i][0] && c <= ranges[i][1])
			return 1;
	return 0;
}

static int lf_eq_nocase(const char *s, size_t len, const char *word)
{
	size_t n = strlen(word);
	if (len != n)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((s[i] >= 'A' && s[i] <= 'Z' ? s[i] | 0x20 : s[i]) != word[i])
			return 0;
	return 1;
}

/* Rust's unsigned integer FromStr: optional '+', then one or more digits. */
static int lf_parse_u64(const char *s, size_t len, uint64_t *out)
{
	size_t i = len && s[0] == '+';
	uint64_t v = 0;
	if (i == len)
		return -EINVAL;
	for (; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		unsigned d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

static int lf_parse_i64(const char *s, size_t len, int64_t *out)
{
	int neg = len && s[0] == '-';
	uint64_t u;
	if (neg && len > 1 && s[1] == '+')
		return -EINVAL;
	if (lf_parse_u64(s + neg, len - neg, &u) != 0)
		return -EINVAL;
	if (neg ? u > (uint64_t)INT64_MAX + 1 : u > (uint64_t)INT64_MAX)
		return -ERANGE;
	*out = neg ? (int64_t)(0 - u) : (int64_t)u;
	return 0;
}

static size_t lf_digits(const char *s, size_t len, size_t i)
{
	size_t j = i;
	while (j < len && s[j] >= '0' && s[j] <= '9')
		j++;
	return j - i;
}

/* Rust's f64 FromStr grammar: sign? (inf | infinity | nan | decimal exponent?). */
static int lf_is_f64(const char *s, size_t len)
{
	size_t i = len && (s[0] == '+' || s[0] == '-');
	if (lf_eq_nocase(s + i, len - i, "inf") || lf_eq_nocase(s + i, len - i, "infinity") ||
	    lf_eq_nocase(s + i, len - i, "nan"))
		return 1;
	size_t intd = lf_digits(s, len, i), fracd = 0;
	i += intd;
	if (i < len && s[i] == '.') {
		fracd = lf_digits(s, len, i + 1);
		i += 1 + fracd;
	}
	if (intd + fracd == 0)
		return 0;
	if (i < len && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		i += i < len && (s[i] == '+' || s[i] == '-');
		size_t expd = lf_digits(s, len, i);
		if (expd == 0)
			return 0;
		i += expd;
	}
	return i == len;
}

/* Classifies a literal the way upstream tries bool, u64, i64 then f64;
 * -EINVAL when it is none of them (a pattern). */
static int lf_classify(const char *s, struct lf_value *out)
{
	size_t len = strlen(s);
	if (strcmp(s, "true") == 0 || strcmp(s, "false") == 0) {
		out->kind = LF_V_BOOL;
		out->v.b = s[0] == 't';
	} else if (lf_parse_u64(s, len, &out->v.u) == 0) {
		out->kind = LF_V_U64;
	} else if (lf_parse_i64(s, len, &out->v.i) == 0) {
		out->kind = LF_V_I64;
	} else if (lf_is_f64(s, len)) {
		out->v.f = strtod(s, NULL);
		out->kind = out->v.f != out->v.f ? LF_V_NAN : LF_V_F64;
	} else {
		return -EINVAL;
	}
	return 0;
}

static int lf_value_eq(const struct lf_value *a, const struct lf_value *b)
{
	if (a->kind != b->kind)
		return 0;
	switch (a->kind) {
	case LF_V_BOOL:
		return a->v.b == b->v.b;
	case LF_V_U64:
		return a->v.u == b->v.u;
	case LF_V_I64:
		return a->v.i == b->v.i;
	case LF_V_F64:
		return a->v.f == b->v.f;
	default:
		return 1;
	}
}

/* --- errors ---------------------------------------------------------------- */

static int lf_fail(struct lf_ctx *c, const char *reason)
{
	if (c->err && c->errlen)
		snprintf(c->err, c->errlen, "invalid filter directive '%.*s': %s", (int)c->flen,
			 c->from, reason);
	return -EINVAL;
}

/* --- directives ------------------------------------------------------------ */

static void lf_field_free(struct lf_field *f)
{
	xfree(f->name);
	xfree(f->value);
	if (f->re) {
		regfree(f->re);
		xfree(f->re);
	}
}

static void lf_directive_free(struct lf_directive *d)
{
	xfree(d->target);
	xfree(d->span);
	for (size_t i = 0; i < d->nfields; i++)
		lf_field_free(&d->fields[i]);
	xfree(d->fields);
	d->nfields = 0;
}

static int lf_is_dynamic(const struct lf_directive *d)
{
	return d->span != NULL || d->nfields > 0;
}

/* Static directives: no span name and no field values (field names allowed). */
static int lf_is_static(const struct lf_directive *d)
{
	if (d->span)
		return 0;
	for (size_t i = 0; i < d->nfields; i++)
		if (d->fields[i].value)
			return 0;
	return 1;
}

/* Slices the untrimmed text with indices taken from the trimmed one, as
 * upstream does (the whitespace quirk). Upstream panics when a slice cuts a
 * UTF-8 sequence; that is an error here. */
static int lf_slice(struct lf_ctx *c, size_t a, size_t b, char **out)
{
	const unsigned char *u = (const unsigned char *)c->from;
	if (a > b || b > c->flen || (a < c->flen && (u[a] & 0xc0) == 0x80) ||
	    (b < c->flen && (u[b] & 0xc0) == 0x80))
		return lf_fail(c, "slice splits a UTF-8 character");
	*out = xstrndup(c->from + a, b - a);
	return 0;
}

/* --- regex guard ------------------------------------------------------------ */

/* glibc's regcomp copies what `+` repeats and computes epsilon closures that
 * grow several-fold with every nested repetition of a group ("a+++..." or
 * "((a+)+)+..." take seconds and gigabytes). Upstream's regex crate rejects
 * stacked repetitions and has a compiled-size limit; here patterns are capped
 * in length, in expanded size and in repetition nesting, all far beyond what a
 * log filter needs. Backreferences (a GNU extension with exponential matching)
 * do not exist upstream either. Intervals cannot occur: `}` ends the field.
 *
 * Two more shapes cost glibc seconds to minutes within those caps (found by
 * fuzz/fuzz_log_filter.c). A `*` or `+` over something that can match the
 * empty string ("(|||)+", "(a|b?)*") is an epsilon cycle, and glibc
 * recomputes the closures on a cycle for every path into it, so nested or
 * consecutive ones multiply: "(((|||...)+)+)+" with 40 empty alternatives
 * takes 3.6 s, "((|||)+)+" twelve times over 20 s. Such a repetition adds
 * nothing ("(a|)+" is "a*"), so it is refused. And anchors: glibc copies the
 * closure behind each for its constraint ("\b" 64 times: minutes). `^` and
 * `$` are capped at 8 and kept out of repetitions; GNU's \b \B \< \> \` \'
 * are refused (the first two exist upstream; no log filter needs them). */
#define LF_RE_MAX_LEN 256
#define LF_RE_MAX_NODES 4096
#define LF_RE_MAX_DEPTH 32
#define LF_RE_MAX_NEST 3
#define LF_RE_MAX_ANCHORS 8

struct lf_re_frame {
	size_t size;  /* nodes of this group so far */
	size_t last;  /* nodes of the last atom, what a repetition applies to */
	int nest;     /* deepest repetition nesting inside this group */
	int lastnest; /* the same for the last atom */
	/* Can match the empty string: a finished alternative of this group, the
	 * current one, the current one before its last atom, the last atom. */
	int alt_null, branch_null, before_null, last_null;
	int anchored, last_anchored; /* holds `^` or `$`: this group / its last atom */
};

static void lf_re_frame_init(struct lf_re_frame *f)
{
	memset(f, 0, sizeof(*f));
	f->branch_null = f->before_null = 1;
}

/* Skips a bracket expression starting at p[0] == '['; returns the index after it. */
static size_t lf_re_bracket(const char *p)
{
	size_t i = 1;
	if (p[i] == '^')
		i++;
	if (p[i] == ']')
		i++;
	for (; p[i] && p[i] != ']'; i++) {
		if (p[i] == '[' && (p[i + 1] == ':' || p[i + 1] == '.' || p[i + 1] == '=')) {
			const char *end = strchr(p + i + 2, p[i + 1]);
			if (!end || end[1] != ']')
				return strlen(p);
			i = (size_t)(end - p) + 1;
		}
	}
	return p[i] ? i + 1 : i;
}

/* One `?` may follow a repetition (upstream's lazy form); other stacking is an
 * error upstream. `+` doubles the atom (glibc copies it). `*` and `?` make the
 * atom, and so maybe its alternative, able to match the empty string. */
static const char *lf_re_repeat(struct lf_re_frame *f, char op, int *stacked)
{
	if (*stacked == 1 && op == '?') {
		*stacked = 2;
		return NULL;
	}
	if (*stacked)
		return "repetition operator applied to a repetition";
	*stacked = 1;
	if (++f->lastnest > LF_RE_MAX_NEST)
		return "repetitions nest too deeply";
	if (f->lastnest > f->nest)
		f->nest = f->lastnest;
	if (op != '?' && f->last_null)
		return "repetition of something that can match the empty string";
	if (op != '?' && f->last_anchored)
		return "anchor inside a repetition";
	if (op != '+') {
		f->last_null = 1;
		f->branch_null = f->before_null;
	}
	if (op == '+') {
		f->size += f->last;
		f->last *= 2;
	}
	return f->size > LF_RE_MAX_NODES ? "regex too large" : NULL;
}

/* Adds an atom of `size` nodes whose own repetitions nest `nest` deep; `nullable`: it can
 * match the empty string; `anchored`: it holds `^` or `$`. */
static const char *lf_re_atom(struct lf_re_frame *f, size_t size, int nest, int nullable,
			      int anchored, int *stacked)
{
	f->size += size;
	f->last = size;
	f->lastnest = nest;
	if (nest > f->nest)
		f->nest = nest;
	f->before_null = f->branch_null;
	f->branch_null = f->branch_null && nullable;
	f->last_null = nullable;
	f->last_anchored = anchored;
	f->anchored |= anchored;
	*stacked = 0;
	return f->size > LF_RE_MAX_NODES ? "regex too large" : NULL;
}

static void lf_re_alternative(struct lf_re_frame *f, int *stacked)
{
	f->alt_null |= f->branch_null;
	f->branch_null = f->before_null = 1;
	f->last = 0;
	f->lastnest = 0;
	f->last_null = 0;
	f->last_anchored = 0;
	*stacked = 0;
}

/* NULL when the pattern is affordable, else why not. */
static const char *lf_re_check(const char *p)
{
	struct lf_re_frame st[LF_RE_MAX_DEPTH + 1];
	size_t depth = 0, i = 0, anchors = 0;
	int stacked = 0;
	const char *why = NULL;

	if (strlen(p) > LF_RE_MAX_LEN)
		return "regex longer than 256 bytes";
	lf_re_frame_init(&st[0]);
	while (p[i] && !why) {
		struct lf_re_frame *f = &st[depth];
		switch (p[i]) {
		case '\\':
			if (p[i + 1] >= '1' && p[i + 1] <= '9')
				return "backreferences are not supported";
			if (p[i + 1] && strchr("bB<>`'", p[i + 1]))
				return "word-boundary and buffer anchors are not supported";
			why = lf_re_atom(f, 1, 0, 0, 0, &stacked);
			i += p[i + 1] ? 2 : 1;
			break;
		case '[':
			why = lf_re_atom(f, 1, 0, 0, 0, &stacked);
			i += lf_re_bracket(p + i);
			break;
		case '(':
			if (depth == LF_RE_MAX_DEPTH)
				return "regex nests too deeply";
			lf_re_frame_init(&st[++depth]);
			stacked = 0;
			i++;
			break;
		case ')':
			if (depth > 0) {
				depth--;
				why = lf_re_atom(&st[depth], f->size + 1, f->nest,
						 f->alt_null || f->branch_null, f->anchored,
						 &stacked);
			} else {
				why = lf_re_atom(f, 1, 0, 0, 0, &stacked); /* a literal in ERE */
			}
			i++;
			break;
		case '|':
			lf_re_alternative(f, &stacked);
			i++;
			break;
		case '*':
		case '+':
		case '?':
			why = lf_re_repeat(f, p[i], &stacked);
			i++;
			break;
		case '^':
		case '$':
			if (++anchors > LF_RE_MAX_ANCHORS)
				return "more than 8 anchors";
			why = lf_re_atom(f, 1, 0, 1, 1, &stacked);
			i++;
			break;
		default:
			why = lf_re_atom(f, 1, 0, 0, 0, &stacked);
			i++;
			break;
		}
	}
	return why;
}

/* A value that is no literal is a regular expression (POSIX ERE here). */
static int lf_compile(struct lf_ctx *c, struct lf_field *f)
{
	char why[128], msg[192];
	const char *guard = lf_re_check(f->value);

	f->lit.kind = LF_V_PAT;
	if (guard) {
		snprintf(msg, sizeof(msg), "invalid field filter: %s", guard);
		return lf_fail(c, msg);
	}
	f->re = xmalloc(sizeof(*f->re));
	int rc = regcomp(f->re, f->value, REG_EXTENDED);
	if (rc != 0) {
		regerror(rc, f->re, why, sizeof(why));
		xfree(f->re);
		snprintf(msg, sizeof(msg), "invalid field filter: %s", why);
		return lf_fail(c, msg);
	}
	return 0;
}

/* `name[=value[=ignored...]]`, as field::Match::parse. */
static int lf_parse_field(struct lf_ctx *c, char *text, struct lf_field *f)
{
	char *eq = strchr(text, '=');
	memset(f, 0, sizeof(*f));
	if (!eq) {
		f->name = text;
		return 0;
	}
	char *end = strchr(eq + 1, '=');
	f->name = xstrndup(text, (size_t)(eq - text));
	f->value = xstrndup(eq + 1, end ? (size_t)(end - eq - 1) : strlen(eq + 1));
	free(text);
	if (lf_classify(f->value, &f->lit) == 0)
		return 0;
	return lf_compile(c, f);
}

static int lf_add_field(struct lf_ctx *c, struct lf_directive *d, size_t a, size_t b)
{
	char *text;
	if (a == b)
		return lf_fail(c, "empty field name");
	if (lf_slice(c, a, b, &text) != 0)
		return -EINVAL;
	d->fields = xrealloc(d->fields, (d->nfields + 1) * sizeof(*d->fields));
	struct lf_field *f = &d->fields[d->nfields];
	int rc = lf_parse_field(c, text, f);
	if (rc == 0)
		d->nfields++;
	else
		lf_field_free(f);
	return rc;
}

/* A bare word: a level makes a default directive, anything else a target at TRACE. */
static int lf_level_or_target(struct lf_ctx *c, struct lf_directive *d, size_t start)
{
	char *word;
	if (lf_slice(c, start, c->flen, &word) != 0)
		return -EINVAL;
	d->level = LOG_LEVEL_TRACE;
	if (logfilter_parse_level(word, strlen(word), &d->level) == 0)
		free(word);
	else
		d->target = word;
	return 0;
}

static int lf_level(struct lf_ctx *c, struct lf_directive *d, size_t a, size_t b)
{
	if (a == b) {
		d->level = LOG_LEVEL_TRACE;
		return 0;
	}
	if (b > c->flen || logfilter_parse_level(c->from + a, b - a, &d->level) != 0)
		return lf_fail(c, "invalid level");
	return 0;
}

enum lf_state {
	LF_START,
	LF_LEVEL_OR_TARGET,
	LF_SPAN,
	LF_FIELD,
	LF_FIELDS,
	LF_TARGET,
	LF_LEVEL,
	LF_COMPLETE,
};

struct lf_scan {
	enum lf_state st;
	size_t start;
};

/* One transition of upstream's Directive::parse state machine; `i` is the
 * index of `ch` in the trimmed text. Returns 0 or -EINVAL. */
static int lf_step(struct lf_ctx *c, struct lf_directive *d, struct lf_scan *s, size_t i,
		   uint32_t ch)
{
	switch (s->st) {
	case LF_START:
		if (ch == '[') {
			*s = (struct lf_scan){LF_SPAN, i + 1};
			return 0;
		}
		if (ch != '-' && ch != ':' && ch != '_' && !lf_is_alnum(ch))
			return lf_fail(c, "a directive must start with a letter, digit, '-', ':', "
					  "'_' or '['");
		*s = (struct lf_scan){LF_LEVEL_OR_TARGET, i};
		return 0;
	case LF_LEVEL_OR_TARGET:
		if (ch == ',') {
			s->st = LF_COMPLETE;
			return lf_level_or_target(c, d, s->start);
		}
		if (ch != '=' && ch != '[')
			return 0;
		if (lf_slice(c, s->start, i, &d->target) != 0)
			return -EINVAL;
		*s = (struct lf_scan){ch == '=' ? LF_LEVEL : LF_SPAN, i + 1};
		return 0;
	case LF_TARGET:
		if (ch != '=')
			return lf_fail(c, "expected '=' after ']'");
		*s = (struct lf_scan){LF_LEVEL, i + 1};
		return 0;
	case LF_SPAN:
		if (ch != ']' && ch != '{')
			return 0;
		if ((ch == ']' || i > s->start) && lf_slice(c, s->start, i, &d->span) != 0)
			return -EINVAL;
		*s = (struct lf_scan){ch == ']' ? LF_TARGET : LF_FIELD, i + 1};
		return 0;
	case LF_FIELD:
		if (ch != '}' && ch != ',')
			return 0;
		if (lf_add_field(c, d, s->start, i) != 0)
			return -EINVAL;
		*s = (struct lf_scan){ch == '}' ? LF_FIELDS : LF_FIELD, i + 1};
		return 0;
	case LF_FIELDS:
		if (ch != ']')
			return lf_fail(c, "expected ']' after '}'");
		s->st = LF_TARGET;
		return 0;
	case LF_LEVEL:
		if (ch != ',')
			return 0;
		s->st = LF_COMPLETE;
		return lf_level(c, d, s->start, i);
	default:
		return lf_fail(c, "unexpected character after the directive");
	}
}

static int lf_finish(struct lf_ctx *c, struct lf_directive *d, const struct lf_scan *s)
{
	switch (s->st) {
	case LF_LEVEL_OR_TARGET:
		return lf_level_or_target(c, d, s->start);
	case LF_LEVEL:
		return lf_level(c, d, s->start, c->flen);
	case LF_TARGET:
	case LF_COMPLETE:
		return 0;
	case LF_START:
		return lf_fail(c, "empty directive");
	default:
		return lf_fail(c, "unterminated span or field list");
	}
}

/* Walks the trimmed piece one character at a time, slicing the untrimmed one. */
static int lf_parse_directive(struct lf_ctx *c, struct lf_directive *d)
{
	const unsigned char *u = (const unsigned char *)c->from;
	size_t lo = 0, hi = c->flen, l;
	uint32_t ch;
	struct lf_scan s = {LF_START, 0};

	while (lo < hi && (l = lf_utf8_decode(u + lo, hi - lo, &ch)) && lf_is_space(ch))
		lo += l;
	while (hi > lo) {
		size_t b = hi - 1;
		while (b > lo && (u[b] & 0xc0) == 0x80)
			b--;
		if (!lf_utf8_decode(u + b, hi - b, &ch) || !lf_is_space(ch))
			break;
		hi = b;
	}
	memset(d, 0, sizeof(*d));
	d->level = LOG_LEVEL_TRACE;
	for (size_t i = lo; i < hi; i += l) {
		l = lf_utf8_decode(u + i, hi - i, &ch);
		if (lf_step(c, d, &s, i - lo, ch) != 0)
			goto fail;
	}
	if (lf_finish(c, d, &s) == 0)
		return 0;
fail:
	lf_directive_free(d);
	return -EINVAL;
}

/* --- the set: ordering and duplicate replacement --------------------------- */

static int lf_strcmp_opt(const char *a, const char *b)
{
	if (!a || !b)
		return (a != NULL) - (b != NULL);
	return strcmp(a, b);
}

static int lf_field_eq(const struct lf_field *a, const struct lf_field *b)
{
	if (strcmp(a->name, b->name) != 0 || (a->value == NULL) != (b->value == NULL))
		return 0;
	if (!a->value)
		return 1;
	if (a->lit.kind == LF_V_PAT || b->lit.kind == LF_V_PAT)
		return a->lit.kind == b->lit.kind && strcmp(a->value, b->value) == 0;
	return lf_value_eq(&a->lit, &b->lit);
}

/* Upstream's Ord equality: same target, span and field matches. */
static int lf_directive_eq(const struct lf_directive *a, const struct lf_directive *b)
{
	if (lf_strcmp_opt(a->target, b->target) != 0 || lf_strcmp_opt(a->span, b->span) != 0 ||
	    a->nfields != b->nfields)
		return 0;
	for (size_t i = 0; i < a->nfields; i++)
		if (!lf_field_eq(&a->fields[i], &b->fields[i]))
			return 0;
	return 1;
}

static int lf_cmp_size(size_t a, size_t b)
{
	return (a > b) - (a < b);
}

/* Most specific first: longer target (none last), span name, more fields;
 * ties broken lexicographically (reversed, as upstream) for a total order. */
static int lf_directive_cmp(const void *pa, const void *pb)
{
	const struct lf_directive *a = pa, *b = pb;
	int r = lf_cmp_size(a->target ? strlen(a->target) + 1 : 0,
			    b->target ? strlen(b->target) + 1 : 0);
	if (!r)
		r = (a->span != NULL) - (b->span != NULL);
	if (!r)
		r = lf_cmp_size(a->nfields, b->nfields);
	if (!r)
		r = lf_strcmp_opt(a->target, b->target);
	if (!r)
		r = lf_strcmp_opt(a->span, b->span);
	for (size_t i = 0; !r && i < a->nfields; i++) {
		r = (a->fields[i].value != NULL) - (b->fields[i].value != NULL);
		if (!r)
			r = strcmp(a->fields[i].name, b->fields[i].name);
		if (!r)
			r = lf_strcmp_opt(a->fields[i].value, b->fields[i].value);
	}
	return -r;
}

/* A later duplicate replaces the earlier directive. */
static void lf_add(struct logfilter *f, struct lf_directive *d)
{
	for (size_t i = 0; i < f->ndirs; i++) {
		if (lf_directive_eq(&f->dirs[i], d)) {
			lf_directive_free(&f->dirs[i]);
			f->dirs[i] = *d;
			return;
		}
	}
	if (f->ndirs == f->cap) {
		f->cap = f->cap ? f->cap * 2 : 8;
		f->dirs = xrealloc(f->dirs, f->cap * sizeof(*f->dirs));
	}
	f->dirs[f->ndirs++] = *d;
	f->has_dynamic |= lf_is_dynamic(d);
}

int logfilter_parse(const char *text, struct logfilter **out, char *err, size_t errlen)
{
	struct logfilter *f = xcalloc(1, sizeof(*f));
	const char *p = text ? text : "";

	*out = NULL;
	if (!lf_utf8_valid(p, strlen(p))) {
		if (err && errlen)
			snprintf(err, errlen, "filter is not valid UTF-8");
		logfilter_free(f);
		return -EINVAL;
	}
	for (;;) {
		size_t n = strcspn(p, ",");
		if (n > 0) {
			struct lf_ctx c = {p, n, err, errlen};
			struct lf_directive d;
			if (lf_parse_directive(&c, &d) != 0) {
				logfilter_free(f);
				return -EINVAL;
			}
			lf_add(f, &d);
		}
		if (!p[n])
			break;
		p += n + 1;
	}
	if (f->ndirs > 1)
		qsort(f->dirs, f->ndirs, sizeof(*f->dirs), lf_directive_cmp);
	*out = f;
	return 0;
}

void logfilter_free(struct logfilter *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->ndirs; i++)
		lf_directive_free(&f->dirs[i]);
	free(f->dirs);
	free(f);
}

size_t logfilter_count(const struct logfilter *f)
{
	return f ? f->ndirs : 0;
}

int logfilter_has_dynamic(const struct logfilter *f)
{
	return f && f->has_dynamic;
}

/* --- matching -------------------------------------------------------------- */

static int lf_prefix(const char *target, const char *of)
{
	return !target || strncmp(of ? of : "", target, strlen(target)) == 0;
}

/* Our events carry one field, `message`: a static directive naming other
 * fields never matches an event (upstream checks the event's field set). */
static int lf_event_fields_ok(const struct lf_directive *d)
{
	for (size_t i = 0; i < d->nfields; i++)
		if (strcmp(d->fields[i].name, "message") != 0)
			return 0;
	return 1;
}

int logfilter_enabled(const struct logfilter *f, const char *target, enum log_level level)
{
	if (!f || level <= LOG_LEVEL_OFF || level > LOG_LEVEL_TRACE)
		return 0;
	for (size_t i = 0; i < f->ndirs; i++) {
		const struct lf_directive *d = &f->dirs[i];
		if (!lf_is_static(d) || !lf_prefix(d->target, target) || !lf_event_fields_ok(d))
			continue;
		return level <= d->level;
	}
	return 0;
}

static int lf_value_matches(const struct lf_field *m, const char *value)
{
	if (m->lit.kind == LF_V_PAT) {
		regmatch_t rm;
		return regexec(m->re, value, 1, &rm, 0) == 0 && (size_t)rm.rm_eo == strlen(value);
	}
	struct lf_value v;
	return lf_classify(value, &v) == 0 && lf_value_eq(&m->lit, &v);
}

static int lf_span_fields_match(const struct lf_directive *d, const struct logfilter_field *fields,
				size_t nfields)
{
	for (size_t i = 0; i < d->nfields; i++) {
		const struct logfilter_field *sf = NULL;
		for (size_t j = 0; j < nfields && !sf; j++)
			if (fields[j].name && strcmp(fields[j].name, d->fields[i].name) == 0)
				sf = &fields[j];
		if (!sf)
			return 0;
		if (d->fields[i].value &&
		    !lf_value_matches(&d->fields[i], sf->value ? sf->value : ""))
			return 0;
	}
	return 1;
}

enum log_level logfilter_span_level(const struct logfilter *f, const char *span_name,
				    const char *span_target, const struct logfilter_field *fields,
				    size_t nfields)
{
	enum log_level best = LOG_LEVEL_OFF;
	for (size_t i = 0; f && i < f->ndirs; i++) {
		const struct lf_directive *d = &f->dirs[i];
		if (!lf_is_dynamic(d) || d->level <= best || !lf_prefix(d->target, span_target))
			continue;
		if (d->span && strcmp(d->span, span_name ? span_name : "") != 0)
			continue;
		if (lf_span_fields_match(d, fields, nfields))
			best = d->level;
	}
	return best;
}

int logfilter_parse_level(const char *s, size_t len, enum log_level *out)
{
	static const char *const names[] = {"off", "error", "warn", "info", "debug", "trace"};
	uint64_t n;
	int rc = lf_parse_u64(s, len, &n);
	if (rc == 0 && n <= LOG_LEVEL_TRACE) {
		*out = (enum log_level)n;
		return 0;
	}
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (lf_eq_nocase(s, len, names[i])) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}
