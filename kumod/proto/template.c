/* SPDX-License-Identifier: Apache-2.0 */
/* A Jinja2 subset (see template.h): a scanner that splits the source into
 * text and tags, a recursive-descent parser for tags and expressions into a
 * tree, and a tree-walking renderer over jansson values. Written from the
 * Jinja2 and minijinja syntax documentation. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/xalloc.h"
#include "proto/template.h"

#define MAX_DEPTH 64
#define MAX_OUTPUT (4u << 20)
#define MAX_LOCALS (2 * MAX_DEPTH + 2)

/* --- tree ------------------------------------------------------------------- */

enum ekind {
	E_LIT,	  /* lit */
	E_NAME,	  /* name */
	E_ATTR,	  /* a.name */
	E_INDEX,  /* a[b] */
	E_FILTER, /* a | name(args) */
	E_TEST,	  /* a is [not] name */
	E_NEG,	  /* -a */
	E_NOT,	  /* not a */
	E_AND,
	E_OR,
	E_BIN, /* a op b */
	E_LIST /* [args] */
};

enum binop {
	OP_ADD,
	OP_SUB,
	OP_MUL,
	OP_DIV,
	OP_FLOORDIV,
	OP_MOD,
	OP_CONCAT,
	OP_EQ,
	OP_NE,
	OP_LT,
	OP_LE,
	OP_GT,
	OP_GE,
	OP_IN,
	OP_NOTIN
};

struct expr {
	enum ekind k;
	int op;	 /* binop; E_FILTER/E_TEST: function index */
	int neg; /* E_TEST: "is not" */
	json_t *lit;
	char *name;
	struct expr *a, *b;
	struct expr **args;
	size_t nargs;
};

enum nkind {
	N_TEXT,
	N_OUT,
	N_IF,
	N_FOR
};

struct node {
	enum nkind k;
	struct node *next;
	char *text; /* N_TEXT */
	size_t len;
	struct expr *e;	    /* N_OUT value, N_IF condition, N_FOR iterable */
	struct node *body;  /* N_IF then, N_FOR body */
	struct node *other; /* N_IF else (an elif is an N_IF here), N_FOR else */
	char *var, *var2;   /* N_FOR: loop names (var2: second of "k, v") */
};

struct tmpl {
	struct node *root;
};

/* --- filters and tests (names; bodies are in the renderer) ------------------- */

enum {
	F_TOJSON,
	F_UPPER,
	F_LOWER,
	F_TITLE,
	F_CAPITALIZE,
	F_TRIM,
	F_LENGTH,
	F_COUNT,
	F_DEFAULT,
	F_D,
	F_STRING,
	F_INT,
	F_FLOAT,
	F_ABS,
	F_FIRST,
	F_LAST,
	F_JOIN,
	F_REPLACE,
	F_SAFE,
	F_ITEMS,
	F_LIST,
	NFILTERS
};
const char *const tmpl_filters[] = {"tojson", "upper", "lower",	  "title", "capitalize", "trim",
				    "length", "count", "default", "d",	   "string",	 "int",
				    "float",  "abs",   "first",	  "last",  "join",	 "replace",
				    "safe",   "items", "list",	  NULL};

enum {
	T_DEFINED,
	T_UNDEFINED,
	T_NONE,
	T_NUMBER,
	T_STRING,
	T_MAPPING,
	T_SEQUENCE,
	T_TRUE,
	T_FALSE,
	T_ODD,
	T_EVEN,
	NTESTS
};
const char *const tmpl_tests[] = {"defined",  "undefined", "none",  "number", "string", "mapping",
				  "sequence", "true",	   "false", "odd",    "even",	NULL};

/* How many arguments each filter takes at most. */
static const unsigned char filter_max_args[NFILTERS] = {
    [F_TOJSON] = 1,  [F_DEFAULT] = 2, [F_D] = 2,    [F_JOIN] = 1,
    [F_REPLACE] = 2, [F_INT] = 1,     [F_FLOAT] = 1};

static int lookup_name(const char *const *names, const char *s)
{
	for (int i = 0; names[i]; i++)
		if (strcmp(names[i], s) == 0)
			return i;
	return -1;
}

static void expr_free(struct expr *e)
{
	if (!e)
		return;
	json_decref(e->lit);
	free(e->name);
	expr_free(e->a);
	expr_free(e->b);
	for (size_t i = 0; i < e->nargs; i++)
		expr_free(e->args[i]);
	free(e->args);
	free(e);
}

static void nodes_free(struct node *n)
{
	while (n) {
		struct node *next = n->next;
		free(n->text);
		expr_free(n->e);
		nodes_free(n->body);
		nodes_free(n->other);
		free(n->var);
		free(n->var2);
		free(n);
		n = next;
	}
}

void tmpl_free(struct tmpl *t)
{
	if (!t)
		return;
	nodes_free(t->root);
	free(t);
}

/* --- scanner and lexer --------------------------------------------------------- */

enum tok {
	TK_EOF, /* end of input inside a tag */
	TK_NAME,
	TK_INT,
	TK_FLOAT,
	TK_STR,
	TK_OP,
	TK_END_VAR,  /* }} */
	TK_END_BLOCK /* %} */
};

struct parser {
	const char *s;
	size_t n, pos;
	struct tmpl_error *err;
	int failed;
	int trim_next; /* the last tag ended with '-': strip the next text's lead */
	int depth;
	/* the current token */
	enum tok tk;
	size_t ts, tl; /* its text */
	json_t *tv;    /* TK_INT, TK_FLOAT, TK_STR: its value (owned) */
};

static void fail_at(struct parser *p, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail_at(struct parser *p, size_t at, const char *fmt, ...)
{
	if (p->failed)
		return;
	p->failed = 1;
	int line = 1, col = 1;
	for (size_t i = 0; i < at && i < p->n; i++) {
		if (p->s[i] == '\n')
			line++, col = 1;
		else
			col++;
	}
	p->err->line = line;
	p->err->column = col;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p->err->msg, sizeof(p->err->msg), fmt, ap);
	va_end(ap);
}

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int is_ident(char c, int first)
{
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (!first && c >= '0' && c <= '9');
}

/* A quoted string literal at p->pos (the quote); escapes as Python's. */
static void lex_string(struct parser *p)
{
	char q = p->s[p->pos];
	size_t start = p->pos++;
	struct buf b;
	buf_init(&b);
	while (p->pos < p->n && p->s[p->pos] != q) {
		char c = p->s[p->pos++];
		if (c == '\\' && p->pos < p->n) {
			char e = p->s[p->pos++];
			switch (e) {
			case 'n':
				c = '\n';
				break;
			case 't':
				c = '\t';
				break;
			case 'r':
				c = '\r';
				break;
			case '\\':
			case '"':
			case '\'':
				c = e;
				break;
			default:
				buf_free(&b);
				fail_at(p, p->pos - 2, "unknown escape \\%c in a string", e);
				return;
			}
		}
		buf_appendc(&b, c);
	}
	if (p->pos >= p->n) {
		buf_free(&b);
		fail_at(p, start, "unterminated string");
		return;
	}
	p->pos++;
	p->tv = json_stringn(b.data ? b.data : "", b.len);
	buf_free(&b);
	if (!p->tv)
		fail_at(p, start, "string literal is not valid UTF-8");
	p->tk = TK_STR;
}

static void lex_number(struct parser *p)
{
	size_t start = p->pos;
	int is_float = 0;
	while (p->pos < p->n &&
	       ((p->s[p->pos] >= '0' && p->s[p->pos] <= '9') || p->s[p->pos] == '_'))
		p->pos++;
	if (p->pos + 1 < p->n && p->s[p->pos] == '.' && p->s[p->pos + 1] >= '0' &&
	    p->s[p->pos + 1] <= '9') {
		is_float = 1;
		p->pos++;
		while (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
			p->pos++;
	}
	char text[64];
	size_t k = 0;
	for (size_t i = start; i < p->pos; i++)
		if (p->s[i] != '_') {
			if (k + 1 >= sizeof(text)) {
				fail_at(p, start, "number too long");
				return;
			}
			text[k++] = p->s[i];
		}
	text[k] = 0;
	errno = 0;
	if (is_float) {
		p->tv = json_real(strtod(text, NULL));
		p->tk = TK_FLOAT;
	} else {
		long long v = strtoll(text, NULL, 10);
		if (errno == ERANGE) {
			fail_at(p, start, "integer %s out of range", text);
			return;
		}
		p->tv = json_integer(v);
		p->tk = TK_INT;
	}
}

static void lex(struct parser *p)
{
	json_decref(p->tv);
	p->tv = NULL;
	while (p->pos < p->n && is_space(p->s[p->pos]))
		p->pos++;
	p->ts = p->pos;
	p->tl = 0;
	if (p->pos >= p->n) {
		p->tk = TK_EOF;
		return;
	}
	const char *c = p->s + p->pos;
	size_t left = p->n - p->pos;
	int dash = c[0] == '-';
	size_t o = dash ? 1 : 0;
	if (left >= o + 2 && (c[o] == '}' || c[o] == '%') && c[o + 1] == '}') {
		if (c[o] == '%' || c[o] == '}') {
			p->tk = c[o] == '}' ? TK_END_VAR : TK_END_BLOCK;
			p->trim_next = dash;
			p->pos += o + 2;
			p->tl = o + 2;
			return;
		}
	}
	if (is_ident(c[0], 1)) {
		while (p->pos < p->n && is_ident(p->s[p->pos], 0))
			p->pos++;
		p->tk = TK_NAME;
		p->tl = p->pos - p->ts;
		return;
	}
	if (c[0] >= '0' && c[0] <= '9') {
		lex_number(p);
		p->tl = p->pos - p->ts;
		return;
	}
	if (c[0] == '"' || c[0] == '\'') {
		lex_string(p);
		p->tl = p->pos - p->ts;
		return;
	}
	static const char *const two[] = {"==", "!=", "<=", ">=", "//", NULL};
	for (int i = 0; two[i]; i++)
		if (left >= 2 && c[0] == two[i][0] && c[1] == two[i][1]) {
			p->tk = TK_OP;
			p->tl = 2;
			p->pos += 2;
			return;
		}
	if (strchr("+-*/%~<>()[].,|:", c[0])) {
		p->tk = TK_OP;
		p->tl = 1;
		p->pos++;
		return;
	}
	fail_at(p, p->pos, "unexpected character '%c'", c[0]);
	p->tk = TK_EOF;
}

static int tok_is(struct parser *p, enum tok k, const char *text)
{
	if (p->tk != k)
		return 0;
	return !text || (strlen(text) == p->tl && memcmp(p->s + p->ts, text, p->tl) == 0);
}

static int accept(struct parser *p, enum tok k, const char *text)
{
	if (p->failed || !tok_is(p, k, text))
		return 0;
	if (k == TK_END_VAR || k == TK_END_BLOCK)
		p->tk = TK_EOF; /* text follows: not lexed */
	else
		lex(p);
	return 1;
}

static const char *tok_desc(struct parser *p, char *out, size_t len)
{
	if (p->tk == TK_EOF)
		return "end of template";
	snprintf(out, len, "'%.*s'", (int)(p->tl > 40 ? 40 : p->tl), p->s + p->ts);
	return out;
}

static void expect(struct parser *p, enum tok k, const char *text, const char *what)
{
	if (accept(p, k, text))
		return;
	char d[64];
	fail_at(p, p->ts, "expected %s, found %s", what, tok_desc(p, d, sizeof(d)));
}

static char *take_name(struct parser *p, const char *what)
{
	if (p->failed)
		return NULL;
	if (p->tk != TK_NAME) {
		char d[64];
		fail_at(p, p->ts, "expected %s, found %s", what, tok_desc(p, d, sizeof(d)));
		return NULL;
	}
	char *s = xstrndup(p->s + p->ts, p->tl);
	lex(p);
	return s;
}

/* --- expressions ---------------------------------------------------------------- */

static struct expr *enew(enum ekind k)
{
	struct expr *e = xcalloc(1, sizeof(*e));
	e->k = k;
	return e;
}

static struct expr *ebin(enum ekind k, int op, struct expr *a, struct expr *b)
{
	struct expr *e = enew(k);
	e->op = op;
	e->a = a;
	e->b = b;
	return e;
}

static struct expr *parse_expr(struct parser *p);

static void add_arg(struct expr *e, struct expr *a)
{
	e->args = xrealloc(e->args, (e->nargs + 1) * sizeof(*e->args));
	e->args[e->nargs++] = a;
}

/* "(a, b, ...)" after a filter name, or "[a, b]" for a list. */
static void parse_args(struct parser *p, struct expr *e, const char *close)
{
	while (!p->failed && !tok_is(p, TK_OP, close)) {
		add_arg(e, parse_expr(p));
		if (!accept(p, TK_OP, ","))
			break;
	}
	expect(p, TK_OP, close, close[0] == ')' ? "')'" : "']'");
}

static struct expr *parse_primary(struct parser *p)
{
	if (p->failed)
		return NULL;
	struct expr *e = NULL;
	if (p->tk == TK_INT || p->tk == TK_FLOAT || p->tk == TK_STR) {
		e = enew(E_LIT);
		e->lit = p->tv;
		p->tv = NULL;
		lex(p);
	} else if (p->tk == TK_NAME) {
		char *name = take_name(p, "a name");
		e = enew(E_LIT);
		if (!strcmp(name, "true") || !strcmp(name, "True"))
			e->lit = json_true();
		else if (!strcmp(name, "false") || !strcmp(name, "False"))
			e->lit = json_false();
		else if (!strcmp(name, "none") || !strcmp(name, "None"))
			e->lit = json_null();
		else {
			e->k = E_NAME;
			e->name = name;
			name = NULL;
		}
		free(name);
	} else if (accept(p, TK_OP, "(")) {
		e = parse_expr(p);
		expect(p, TK_OP, ")", "')'");
	} else if (accept(p, TK_OP, "[")) {
		e = enew(E_LIST);
		parse_args(p, e, "]");
	} else {
		char d[64];
		fail_at(p, p->ts, "expected an expression, found %s", tok_desc(p, d, sizeof(d)));
		return NULL;
	}
	/* postfix: .name, [expr] */
	for (;;) {
		if (p->failed)
			break;
		if (accept(p, TK_OP, ".")) {
			struct expr *a = enew(E_ATTR);
			a->a = e;
			e = a;
			if (p->tk == TK_INT) { /* a.0 */
				e->k = E_INDEX;
				e->b = enew(E_LIT);
				e->b->lit = p->tv;
				p->tv = NULL;
				lex(p);
			} else
				e->name = take_name(p, "an attribute name");
		} else if (accept(p, TK_OP, "[")) {
			e = ebin(E_INDEX, 0, e, parse_expr(p));
			expect(p, TK_OP, "]", "']'");
		} else
			break;
	}
	return e;
}

/* unary minus, then filters and tests */
static struct expr *parse_unary(struct parser *p)
{
	if (++p->depth > MAX_DEPTH) {
		fail_at(p, p->ts, "expression nested deeper than %d", MAX_DEPTH);
		return NULL;
	}
	struct expr *e;
	if (accept(p, TK_OP, "-"))
		e = ebin(E_NEG, 0, parse_unary(p), NULL);
	else if (accept(p, TK_OP, "+"))
		e = parse_unary(p);
	else
		e = parse_primary(p);
	for (;;) {
		if (p->failed)
			break;
		if (accept(p, TK_OP, "|")) {
			size_t at = p->ts;
			char *name = take_name(p, "a filter name");
			if (!name)
				break;
			int f = lookup_name(tmpl_filters, name);
			if (f < 0)
				fail_at(p, at, "unknown filter '%s'", name);
			struct expr *fe = enew(E_FILTER);
			fe->op = f;
			fe->name = name;
			fe->a = e;
			e = fe;
			if (!p->failed && accept(p, TK_OP, "("))
				parse_args(p, e, ")");
			if (!p->failed && e->nargs > filter_max_args[f])
				fail_at(p, at, "filter '%s' takes at most %u argument(s)", name,
					filter_max_args[f]);
		} else if (tok_is(p, TK_NAME, "is")) {
			lex(p);
			int neg = accept(p, TK_NAME, "not");
			size_t at = p->ts;
			char *name = NULL;
			if (tok_is(p, TK_NAME, "none") || tok_is(p, TK_NAME, "true") ||
			    tok_is(p, TK_NAME, "false"))
				name = xstrndup(p->s + p->ts, p->tl), lex(p);
			else
				name = take_name(p, "a test name");
			if (!name)
				break;
			int t = lookup_name(tmpl_tests, name);
			if (t < 0)
				fail_at(p, at, "unknown test '%s'", name);
			struct expr *te = enew(E_TEST);
			te->op = t;
			te->neg = neg;
			te->name = name;
			te->a = e;
			e = te;
		} else
			break;
	}
	p->depth--;
	return e;
}

static struct expr *parse_math2(struct parser *p)
{
	struct expr *e = parse_unary(p);
	for (;;) {
		int op = tok_is(p, TK_OP, "*")	  ? OP_MUL
			 : tok_is(p, TK_OP, "//") ? OP_FLOORDIV
			 : tok_is(p, TK_OP, "/")  ? OP_DIV
			 : tok_is(p, TK_OP, "%")  ? OP_MOD
						  : -1;
		if (op < 0 || p->failed)
			return e;
		lex(p);
		e = ebin(E_BIN, op, e, parse_unary(p));
	}
}

static struct expr *parse_concat(struct parser *p)
{
	struct expr *e = parse_math2(p);
	while (accept(p, TK_OP, "~"))
		e = ebin(E_BIN, OP_CONCAT, e, parse_math2(p));
	return e;
}

static struct expr *parse_math1(struct parser *p)
{
	struct expr *e = parse_concat(p);
	for (;;) {
		int op = tok_is(p, TK_OP, "+") ? OP_ADD : tok_is(p, TK_OP, "-") ? OP_SUB : -1;
		if (op < 0 || p->failed)
			return e;
		lex(p);
		e = ebin(E_BIN, op, e, parse_concat(p));
	}
}

static struct expr *parse_compare(struct parser *p)
{
	struct expr *e = parse_math1(p);
	for (;;) {
		static const char *const ops[] = {"==", "!=", "<", "<=", ">", ">="};
		static const int codes[] = {OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE};
		int op = -1;
		for (int i = 0; i < 6; i++)
			if (tok_is(p, TK_OP, ops[i]))
				op = codes[i];
		if (op >= 0)
			lex(p);
		else if (accept(p, TK_NAME, "in"))
			op = OP_IN;
		else if (tok_is(p, TK_NAME, "not")) {
			/* "not in" only: a lone "not" here is a syntax error */
			size_t save = p->pos, ts = p->ts, tl = p->tl;
			lex(p);
			if (!accept(p, TK_NAME, "in")) {
				p->pos = save, p->ts = ts, p->tl = tl, p->tk = TK_NAME;
				json_decref(p->tv);
				p->tv = NULL;
				return e;
			}
			op = OP_NOTIN;
		}
		if (op < 0 || p->failed)
			return e;
		e = ebin(E_BIN, op, e, parse_math1(p));
	}
}

static struct expr *parse_not(struct parser *p)
{
	if (tok_is(p, TK_NAME, "not")) {
		if (++p->depth > MAX_DEPTH) {
			fail_at(p, p->ts, "expression nested deeper than %d", MAX_DEPTH);
			return NULL;
		}
		lex(p);
		struct expr *e = ebin(E_NOT, 0, parse_not(p), NULL);
		p->depth--;
		return e;
	}
	return parse_compare(p);
}

static struct expr *parse_and(struct parser *p)
{
	struct expr *e = parse_not(p);
	while (accept(p, TK_NAME, "and"))
		e = ebin(E_AND, 0, e, parse_not(p));
	return e;
}

static struct expr *parse_expr(struct parser *p)
{
	if (++p->depth > MAX_DEPTH) {
		fail_at(p, p->ts, "expression nested deeper than %d", MAX_DEPTH);
		return NULL;
	}
	struct expr *e = parse_and(p);
	while (accept(p, TK_NAME, "or"))
		e = ebin(E_OR, 0, e, parse_and(p));
	/* inline if ("a if c else b") is not in the subset */
	if (!p->failed && tok_is(p, TK_NAME, "if"))
		fail_at(p, p->ts, "inline 'if' expressions are not supported");
	p->depth--;
	return e;
}

/* --- statements ------------------------------------------------------------------- */

/* Where the tag scanner stopped: the keyword of a closing tag. */
enum stop {
	STOP_EOF,
	STOP_ELIF,
	STOP_ELSE,
	STOP_ENDIF,
	STOP_ENDFOR
};

static struct node *nnew(enum nkind k)
{
	struct node *n = xcalloc(1, sizeof(*n));
	n->k = k;
	return n;
}

static struct node *parse_body(struct parser *p, enum stop *stop, size_t *stop_at);

/* After "{% if": condition, body, elif/else chain; consumes "endif". */
static struct node *parse_if(struct parser *p, size_t at)
{
	struct node *n = nnew(N_IF);
	n->e = parse_expr(p);
	expect(p, TK_END_BLOCK, NULL, "'%}'");
	if (p->failed)
		return n;
	enum stop st;
	size_t st_at;
	n->body = parse_body(p, &st, &st_at);
	if (p->failed)
		return n;
	if (st == STOP_ELIF) {
		n->other = parse_if(p, st_at);
		return n;
	}
	if (st == STOP_ELSE) {
		expect(p, TK_END_BLOCK, NULL, "'%}'");
		if (p->failed)
			return n;
		n->other = parse_body(p, &st, &st_at);
		if (p->failed)
			return n;
	}
	if (st != STOP_ENDIF) {
		fail_at(p, st == STOP_EOF ? at : st_at, "'if' without a matching 'endif'");
		return n;
	}
	expect(p, TK_END_BLOCK, NULL, "'%}'");
	return n;
}

static struct node *parse_for(struct parser *p, size_t at)
{
	struct node *n = nnew(N_FOR);
	n->var = take_name(p, "a loop variable");
	if (accept(p, TK_OP, ","))
		n->var2 = take_name(p, "a second loop variable");
	if (!p->failed && n->var && strcmp(n->var, "loop") == 0)
		fail_at(p, at, "'loop' cannot be a loop variable");
	expect(p, TK_NAME, "in", "'in'");
	if (p->failed)
		return n;
	n->e = parse_expr(p);
	expect(p, TK_END_BLOCK, NULL, "'%}'");
	if (p->failed)
		return n;
	enum stop st;
	size_t st_at;
	n->body = parse_body(p, &st, &st_at);
	if (!p->failed && st == STOP_ELSE) {
		expect(p, TK_END_BLOCK, NULL, "'%}'");
		if (!p->failed)
			n->other = parse_body(p, &st, &st_at);
	}
	if (!p->failed && st != STOP_ENDFOR)
		fail_at(p, st == STOP_EOF ? at : st_at, "'for' without a matching 'endfor'");
	if (!p->failed)
		expect(p, TK_END_BLOCK, NULL, "'%}'");
	return n;
}

static void append_text(struct node ***tail, const char *s, size_t len)
{
	if (!len)
		return;
	struct node *n = nnew(N_TEXT);
	n->text = xstrndup(s, len);
	n->len = len;
	**tail = n;
	*tail = &n->next;
}

/* Text and tags up to a closing keyword (elif, else, endif, endfor: left as
 * the current token's successor, the keyword consumed) or the end. */
static struct node *parse_body(struct parser *p, enum stop *stop, size_t *stop_at)
{
	struct node *head = NULL, **tail = &head;
	*stop = STOP_EOF;
	*stop_at = p->pos;
	if (++p->depth > MAX_DEPTH) {
		fail_at(p, p->pos, "blocks nested deeper than %d", MAX_DEPTH);
		return NULL;
	}
	while (!p->failed && p->pos < p->n) {
		/* the next tag opener */
		size_t i = p->pos, tag = p->n;
		for (; i + 1 < p->n; i++)
			if (p->s[i] == '{' &&
			    (p->s[i + 1] == '{' || p->s[i + 1] == '%' || p->s[i + 1] == '#')) {
				tag = i;
				break;
			}
		size_t ts = p->pos, te = tag;
		if (p->trim_next)
			while (ts < te && is_space(p->s[ts]))
				ts++;
		p->trim_next = 0;
		int lstrip = tag + 2 < p->n && p->s[tag + 2] == '-';
		if (lstrip)
			while (te > ts && is_space(p->s[te - 1]))
				te--;
		append_text(&tail, p->s + ts, te - ts);
		if (tag >= p->n) {
			p->pos = p->n;
			break;
		}
		char kind = p->s[tag + 1];
		p->pos = tag + 2 + (size_t)lstrip;
		if (kind == '#') {
			const char *end = NULL;
			for (size_t k = p->pos; k + 1 < p->n; k++)
				if (p->s[k] == '#' && p->s[k + 1] == '}') {
					end = p->s + k;
					break;
				}
			if (!end) {
				fail_at(p, tag, "unterminated comment");
				break;
			}
			p->trim_next = end > p->s + p->pos && end[-1] == '-';
			p->pos = (size_t)(end - p->s) + 2;
			continue;
		}
		lex(p);
		if (kind == '{') {
			struct node *n = nnew(N_OUT);
			*tail = n;
			tail = &n->next;
			n->e = parse_expr(p);
			expect(p, TK_END_VAR, NULL, "'}}'");
			continue;
		}
		size_t kw_at = p->ts;
		if (accept(p, TK_NAME, "if")) {
			struct node *n = parse_if(p, kw_at);
			*tail = n;
			tail = &n->next;
		} else if (accept(p, TK_NAME, "for")) {
			struct node *n = parse_for(p, kw_at);
			*tail = n;
			tail = &n->next;
		} else if (tok_is(p, TK_NAME, "elif") || tok_is(p, TK_NAME, "else") ||
			   tok_is(p, TK_NAME, "endif") || tok_is(p, TK_NAME, "endfor")) {
			*stop = tok_is(p, TK_NAME, "elif")    ? STOP_ELIF
				: tok_is(p, TK_NAME, "else")  ? STOP_ELSE
				: tok_is(p, TK_NAME, "endif") ? STOP_ENDIF
							      : STOP_ENDFOR;
			*stop_at = kw_at;
			lex(p);
			break;
		} else {
			char d[64];
			fail_at(p, kw_at, "unknown or unsupported tag %s",
				tok_desc(p, d, sizeof(d)));
		}
	}
	p->depth--;
	return head;
}

struct tmpl *tmpl_compile(const char *src, size_t len, struct tmpl_error *err)
{
	struct tmpl_error dummy;
	if (!err)
		err = &dummy;
	memset(err, 0, sizeof(*err));
	/* as Jinja's default keep_trailing_newline=false */
	if (len && src[len - 1] == '\n')
		len--;
	struct parser p = {.s = src ? src : "", .n = len, .err = err};
	enum stop st;
	size_t st_at;
	struct node *root = parse_body(&p, &st, &st_at);
	json_decref(p.tv);
	if (!p.failed && st != STOP_EOF) {
		static const char *const names[] = {"", "elif", "else", "endif", "endfor"};
		fail_at(&p, st_at, "'%s' without an opening tag", names[st]);
	}
	if (p.failed) {
		nodes_free(root);
		return NULL;
	}
	struct tmpl *t = xcalloc(1, sizeof(*t));
	t->root = root;
	return t;
}

/* --- rendering ---------------------------------------------------------------------- */

struct local {
	const char *name;
	json_t *v;
};

struct render {
	json_t *ctx;
	enum tmpl_escape esc;
	struct buf *out;
	size_t out_start;
	struct tmpl_error *err;
	int failed;
	struct local locals[MAX_LOCALS];
	size_t nlocals;
};

static json_t *rfail(struct render *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static json_t *rfail(struct render *r, const char *fmt, ...)
{
	if (!r->failed) {
		r->failed = 1;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(r->err->msg, sizeof(r->err->msg), fmt, ap);
		va_end(ap);
	}
	return NULL;
}

static const char *type_name(json_t *v)
{
	if (!v)
		return "undefined";
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "map";
	case JSON_ARRAY:
		return "sequence";
	case JSON_STRING:
		return "string";
	case JSON_INTEGER:
		return "integer";
	case JSON_REAL:
		return "float";
	case JSON_TRUE:
	case JSON_FALSE:
		return "bool";
	default:
		return "none";
	}
}

static int truthy(json_t *v)
{
	if (!v)
		return 0;
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return json_object_size(v) > 0;
	case JSON_ARRAY:
		return json_array_size(v) > 0;
	case JSON_STRING:
		return json_string_length(v) > 0;
	case JSON_INTEGER:
		return json_integer_value(v) != 0;
	case JSON_REAL:
		return json_real_value(v) != 0;
	case JSON_TRUE:
		return 1;
	default:
		return 0;
	}
}

/* Shortest text that reads back as d; always with a '.' or exponent. */
static void emit_real(struct buf *b, double d)
{
	if (isnan(d)) {
		buf_appends(b, "NaN");
		return;
	}
	if (isinf(d)) {
		buf_appends(b, d < 0 ? "-inf" : "inf");
		return;
	}
	char text[40];
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(text, sizeof(text), "%.*g", prec, d);
		if (strtod(text, NULL) == d)
			break;
	}
	buf_appends(b, text);
	if (!strpbrk(text, ".e"))
		buf_appends(b, ".0");
}

static int dump_cb(const char *s, size_t n, void *ctx)
{
	buf_append(ctx, s, n);
	return 0;
}

/* The text form of a value, as {{ v }} shows it. */
static void emit(struct buf *b, json_t *v)
{
	if (!v)
		return;
	switch (json_typeof(v)) {
	case JSON_STRING:
		buf_append(b, json_string_value(v), json_string_length(v));
		break;
	case JSON_INTEGER:
		buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		break;
	case JSON_REAL:
		emit_real(b, json_real_value(v));
		break;
	case JSON_TRUE:
		buf_appends(b, "true");
		break;
	case JSON_FALSE:
		buf_appends(b, "false");
		break;
	case JSON_NULL:
		buf_appends(b, "none");
		break;
	default:
		json_dump_callback(v, dump_cb, b, JSON_ENCODE_ANY | JSON_INDENT(0));
		break;
	}
}

static json_t *to_string(json_t *v)
{
	struct buf b;
	buf_init(&b);
	emit(&b, v);
	json_t *s = json_stringn(b.data ? b.data : "", b.len);
	buf_free(&b);
	return s ? s : json_string("");
}

static int is_num(json_t *v)
{
	return v && (json_is_integer(v) || json_is_real(v));
}

static double num(json_t *v)
{
	return json_is_integer(v) ? (double)json_integer_value(v) : json_real_value(v);
}

static int num_cmp(json_t *a, json_t *b)
{
	if (json_is_integer(a) && json_is_integer(b)) {
		json_int_t x = json_integer_value(a), y = json_integer_value(b);
		return x < y ? -1 : x > y;
	}
	double x = num(a), y = num(b);
	return x < y ? -1 : x > y;
}

static int equal(json_t *a, json_t *b)
{
	if (!a || !b)
		return !a && !b;
	if (is_num(a) && is_num(b))
		return num_cmp(a, b) == 0;
	return json_equal(a, b);
}

static json_t *arith(struct render *r, int op, json_t *a, json_t *b)
{
	if (op == OP_ADD && json_is_string(a) && json_is_string(b)) {
		struct buf s;
		buf_init(&s);
		emit(&s, a);
		emit(&s, b);
		json_t *res = json_stringn(s.data ? s.data : "", s.len);
		buf_free(&s);
		return res;
	}
	if (op == OP_ADD && json_is_array(a) && json_is_array(b)) {
		json_t *res = json_copy(a);
		json_array_extend(res, b);
		return res;
	}
	static const char *const sym[] = {"+", "-", "*", "/", "//", "%"};
	if (!is_num(a) || !is_num(b))
		return rfail(r, "cannot apply '%s' to %s and %s", sym[op], type_name(a),
			     type_name(b));
	if (json_is_integer(a) && json_is_integer(b) && op != OP_DIV) {
		json_int_t x = json_integer_value(a), y = json_integer_value(b), z;
		int ovf = 0;
		switch (op) {
		case OP_ADD:
			ovf = __builtin_add_overflow(x, y, &z);
			break;
		case OP_SUB:
			ovf = __builtin_sub_overflow(x, y, &z);
			break;
		case OP_MUL:
			ovf = __builtin_mul_overflow(x, y, &z);
			break;
		default: /* floor division and modulo, Python's signs */
			if (y == 0)
				return rfail(r, "division by zero");
			if (x == INT64_MIN && y == -1)
				return rfail(r, "integer overflow");
			z = op == OP_FLOORDIV ? x / y : x % y;
			if (op == OP_FLOORDIV && (x % y != 0) && ((x < 0) != (y < 0)))
				z--;
			if (op == OP_MOD && z != 0 && ((z < 0) != (y < 0)))
				z += y;
			break;
		}
		if (ovf)
			return rfail(r, "integer overflow");
		return json_integer(z);
	}
	double x = num(a), y = num(b), z;
	switch (op) {
	case OP_ADD:
		z = x + y;
		break;
	case OP_SUB:
		z = x - y;
		break;
	case OP_MUL:
		z = x * y;
		break;
	default:
		if (y == 0)
			return rfail(r, "division by zero");
		z = op == OP_DIV ? x / y : op == OP_FLOORDIV ? floor(x / y) : x - y * floor(x / y);
		break;
	}
	if (!isfinite(z))
		return rfail(r, "float result out of range");
	return json_real(z);
}

static json_t *eval(struct render *r, const struct expr *e);

static json_t *lookup(struct render *r, const char *name)
{
	for (size_t i = r->nlocals; i-- > 0;)
		if (strcmp(r->locals[i].name, name) == 0)
			return json_incref(r->locals[i].v);
	return json_is_object(r->ctx) ? json_incref(json_object_get(r->ctx, name)) : NULL;
}

static json_t *index_value(struct render *r, json_t *v, json_t *key)
{
	if (json_is_object(v) && json_is_string(key))
		return json_incref(json_object_get(v, json_string_value(key)));
	if (json_is_array(v) && json_is_integer(key)) {
		json_int_t i = json_integer_value(key);
		size_t n = json_array_size(v);
		if (i < 0)
			i += (json_int_t)n;
		return i >= 0 && (size_t)i < n ? json_incref(json_array_get(v, (size_t)i)) : NULL;
	}
	return NULL; /* undefined */
}

static int in_value(json_t *needle, json_t *hay)
{
	if (json_is_string(hay) && json_is_string(needle))
		return memmem(json_string_value(hay), json_string_length(hay),
			      json_string_value(needle), json_string_length(needle)) != NULL;
	if (json_is_array(hay)) {
		size_t i;
		json_t *it;
		json_array_foreach(hay, i, it) if (equal(it, needle)) return 1;
		return 0;
	}
	if (json_is_object(hay) && json_is_string(needle))
		return json_object_get(hay, json_string_value(needle)) != NULL;
	return 0;
}

static json_t *compare(struct render *r, int op, json_t *a, json_t *b)
{
	switch (op) {
	case OP_EQ:
		return json_boolean(equal(a, b));
	case OP_NE:
		return json_boolean(!equal(a, b));
	case OP_IN:
	case OP_NOTIN:
		if (!json_is_string(b) && !json_is_array(b) && !json_is_object(b))
			return rfail(r, "'in' needs a string, sequence or map, not %s",
				     type_name(b));
		return json_boolean(in_value(a, b) == (op == OP_IN));
	}
	int c;
	if (is_num(a) && is_num(b))
		c = num_cmp(a, b);
	else if (json_is_string(a) && json_is_string(b))
		c = strcmp(json_string_value(a), json_string_value(b));
	else
		return rfail(r, "cannot compare %s with %s", type_name(a), type_name(b));
	return json_boolean(op == OP_LT	  ? c < 0
			    : op == OP_LE ? c <= 0
			    : op == OP_GT ? c > 0
					  : c >= 0);
}

/* tojson: compact JSON with <, >, &, ' escaped, as minijinja's filter. */
static json_t *f_tojson(struct render *r, json_t *v, json_t *indent)
{
	struct buf b, o;
	buf_init(&b);
	buf_init(&o);
	size_t flags = JSON_ENCODE_ANY | JSON_COMPACT;
	if (json_is_integer(indent) && json_integer_value(indent) > 0)
		flags = JSON_ENCODE_ANY | JSON_INDENT(json_integer_value(indent) > 31
							  ? 31
							  : (int)json_integer_value(indent));
	if (!v)
		buf_appends(&b, "null");
	else if (json_dump_callback(v, dump_cb, &b, flags) != 0) {
		buf_free(&b);
		return rfail(r, "tojson: value cannot be encoded");
	}
	for (size_t i = 0; i < b.len; i++) {
		char c = b.data[i];
		if (c == '<' || c == '>' || c == '&' || c == '\'')
			buf_printf(&o, "\\u%04x", (unsigned)c);
		else
			buf_appendc(&o, c);
	}
	json_t *s = json_stringn(o.data ? o.data : "", o.len);
	buf_free(&b);
	buf_free(&o);
	return s;
}

/* upper, lower, title, capitalize (ASCII letters; other bytes kept). */
static json_t *f_case(json_t *s, int f)
{
	const char *p = json_string_value(s);
	size_t n = json_string_length(s);
	char *o = xmalloc(n + 1);
	int word_start = 1;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		int up =
		    f == F_UPPER || (f == F_TITLE && word_start) || (f == F_CAPITALIZE && i == 0);
		if (up && c >= 'a' && c <= 'z')
			c = (char)(c - 32);
		else if (!up && f != F_UPPER && c >= 'A' && c <= 'Z')
			c = (char)(c + 32);
		o[i] = c;
		word_start =
		    !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'));
	}
	json_t *res = json_stringn(o, n);
	free(o);
	return res;
}

static json_t *f_replace(json_t *s, json_t *from, json_t *to)
{
	const char *p = json_string_value(s), *f = json_string_value(from);
	size_t n = json_string_length(s), fl = json_string_length(from);
	struct buf b;
	buf_init(&b);
	for (size_t i = 0; i < n;) {
		if (fl && i + fl <= n && memcmp(p + i, f, fl) == 0) {
			buf_append(&b, json_string_value(to), json_string_length(to));
			i += fl;
		} else
			buf_appendc(&b, p[i++]);
	}
	json_t *res = json_stringn(b.data ? b.data : "", b.len);
	buf_free(&b);
	return res;
}

static json_t *filter(struct render *r, const struct expr *e, json_t *v, json_t **args)
{
	json_t *a0 = e->nargs > 0 ? args[0] : NULL, *a1 = e->nargs > 1 ? args[1] : NULL;
	switch (e->op) {
	case F_TOJSON:
		return f_tojson(r, v, a0);
	case F_SAFE:
		return json_incref(v);
	case F_DEFAULT:
	case F_D:
		if (!v || (truthy(a1) && !truthy(v)))
			return a0 ? json_incref(a0) : json_string("");
		return json_incref(v);
	case F_STRING:
		return to_string(v);
	case F_LENGTH:
	case F_COUNT:
		if (json_is_string(v)) {
			/* characters, not bytes */
			size_t n = 0, len = json_string_length(v);
			const unsigned char *s = (const unsigned char *)json_string_value(v);
			for (size_t i = 0; i < len; i++)
				n += (s[i] & 0xC0) != 0x80;
			return json_integer((json_int_t)n);
		}
		if (json_is_array(v))
			return json_integer((json_int_t)json_array_size(v));
		if (json_is_object(v))
			return json_integer((json_int_t)json_object_size(v));
		return rfail(r, "length of %s", type_name(v));
	case F_UPPER:
	case F_LOWER:
	case F_TITLE:
	case F_CAPITALIZE:
	case F_TRIM: {
		json_t *s = to_string(v);
		if (e->op != F_TRIM) {
			json_t *res = f_case(s, e->op);
			json_decref(s);
			return res;
		}
		const char *p = json_string_value(s);
		size_t b = 0, n = json_string_length(s);
		while (b < n && is_space(p[b]))
			b++;
		while (n > b && is_space(p[n - 1]))
			n--;
		json_t *res = json_stringn(p + b, n - b);
		json_decref(s);
		return res;
	}
	case F_INT:
		if (json_is_integer(v))
			return json_incref(v);
		if (json_is_real(v)) {
			double d = json_real_value(v);
			if (!(d > -9.2e18 && d < 9.2e18))
				return rfail(r, "int: %g out of range", d);
			return json_integer((json_int_t)d);
		}
		if (json_is_string(v)) {
			char *end;
			errno = 0;
			long long x = strtoll(json_string_value(v), &end, 10);
			if (!errno && end != json_string_value(v) && !*end)
				return json_integer(x);
		}
		return a0 ? json_incref(a0) : json_integer(0);
	case F_FLOAT:
		if (is_num(v))
			return json_real(num(v));
		if (json_is_string(v)) {
			char *end;
			double d = strtod(json_string_value(v), &end);
			if (end != json_string_value(v) && !*end)
				return json_real(d);
		}
		return a0 ? json_incref(a0) : json_real(0);
	case F_ABS:
		if (json_is_integer(v)) {
			json_int_t x = json_integer_value(v);
			if (x == INT64_MIN)
				return rfail(r, "integer overflow");
			return json_integer(x < 0 ? -x : x);
		}
		if (json_is_real(v))
			return json_real(fabs(json_real_value(v)));
		return rfail(r, "abs of %s", type_name(v));
	case F_FIRST:
	case F_LAST:
		if (json_is_array(v)) {
			size_t n = json_array_size(v);
			return n ? json_incref(json_array_get(v, e->op == F_FIRST ? 0 : n - 1))
				 : NULL;
		}
		if (json_is_string(v) && json_string_length(v)) {
			const char *s = json_string_value(v);
			size_t n = json_string_length(v), b = 0, len = 1;
			if (e->op == F_LAST) {
				b = n - 1;
				while (b > 0 && ((unsigned char)s[b] & 0xC0) == 0x80)
					b--;
				len = n - b;
			} else
				while (len < n && ((unsigned char)s[len] & 0xC0) == 0x80)
					len++;
			return json_stringn(s + b, len);
		}
		return NULL;
	case F_JOIN: {
		if (!json_is_array(v))
			return rfail(r, "join of %s", type_name(v));
		struct buf b;
		buf_init(&b);
		size_t i;
		json_t *it;
		json_array_foreach(v, i, it)
		{
			if (i && a0)
				emit(&b, a0);
			emit(&b, it);
		}
		json_t *res = json_stringn(b.data ? b.data : "", b.len);
		buf_free(&b);
		return res ? res : json_string("");
	}
	case F_REPLACE:
		if (!json_is_string(v) || !json_is_string(a0) || !json_is_string(a1))
			return rfail(r, "replace needs a string and two string arguments");
		return f_replace(v, a0, a1);
	case F_ITEMS: {
		if (!json_is_object(v))
			return rfail(r, "items of %s", type_name(v));
		json_t *res = json_array();
		const char *k;
		json_t *it;
		json_object_foreach(v, k, it) json_array_append_new(res, json_pack("[sO]", k, it));
		return res;
	}
	case F_LIST: {
		if (json_is_array(v))
			return json_incref(v);
		json_t *res = json_array();
		if (json_is_object(v)) {
			const char *k;
			json_t *it;
			json_object_foreach(v, k, it) json_array_append_new(res, json_string(k));
		} else if (v) {
			json_decref(res);
			return rfail(r, "list of %s", type_name(v));
		}
		return res;
	}
	}
	return rfail(r, "unknown filter %s", e->name);
}

static int test(const struct expr *e, json_t *v)
{
	switch (e->op) {
	case T_DEFINED:
		return v != NULL;
	case T_UNDEFINED:
		return v == NULL;
	case T_NONE:
		return json_is_null(v);
	case T_NUMBER:
		return is_num(v);
	case T_STRING:
		return json_is_string(v);
	case T_MAPPING:
		return json_is_object(v);
	case T_SEQUENCE:
		return json_is_array(v) || json_is_string(v);
	case T_TRUE:
		return json_is_true(v);
	case T_FALSE:
		return json_is_false(v);
	case T_ODD:
	case T_EVEN:
		return json_is_integer(v) && (json_integer_value(v) & 1) == (e->op == T_ODD);
	}
	return 0;
}

static json_t *eval(struct render *r, const struct expr *e)
{
	if (r->failed || !e)
		return NULL;
	json_t *a, *b, *res = NULL;
	switch (e->k) {
	case E_LIT:
		return json_incref(e->lit);
	case E_NAME:
		return lookup(r, e->name);
	case E_ATTR:
		a = eval(r, e->a);
		res = json_is_object(a) ? json_incref(json_object_get(a, e->name)) : NULL;
		json_decref(a);
		return res;
	case E_INDEX:
		a = eval(r, e->a);
		b = eval(r, e->b);
		res = r->failed ? NULL : index_value(r, a, b);
		json_decref(a);
		json_decref(b);
		return res;
	case E_LIST:
		res = json_array();
		for (size_t i = 0; i < e->nargs && !r->failed; i++) {
			a = eval(r, e->args[i]);
			json_array_append_new(res, a ? a : json_null());
		}
		return res;
	case E_FILTER: {
		json_t *args[8] = {0};
		a = eval(r, e->a);
		for (size_t i = 0; i < e->nargs && i < 8; i++)
			args[i] = eval(r, e->args[i]);
		if (!r->failed)
			res = filter(r, e, a, args);
		for (size_t i = 0; i < 8; i++)
			json_decref(args[i]);
		json_decref(a);
		return res;
	}
	case E_TEST:
		a = eval(r, e->a);
		res = json_boolean(test(e, a) != e->neg);
		json_decref(a);
		return res;
	case E_NEG:
		a = eval(r, e->a);
		if (json_is_integer(a) && json_integer_value(a) != INT64_MIN)
			res = json_integer(-json_integer_value(a));
		else if (json_is_real(a))
			res = json_real(-json_real_value(a));
		else if (!r->failed)
			rfail(r, "cannot negate %s", type_name(a));
		json_decref(a);
		return res;
	case E_NOT:
		a = eval(r, e->a);
		res = json_boolean(!truthy(a));
		json_decref(a);
		return res;
	case E_AND:
	case E_OR:
		/* Jinja returns the deciding operand */
		a = eval(r, e->a);
		if (truthy(a) == (e->k == E_OR))
			return a;
		json_decref(a);
		return eval(r, e->b);
	case E_BIN:
		a = eval(r, e->a);
		b = eval(r, e->b);
		if (!r->failed) {
			if (e->op == OP_CONCAT) {
				struct buf s;
				buf_init(&s);
				emit(&s, a);
				emit(&s, b);
				res = json_stringn(s.data ? s.data : "", s.len);
				buf_free(&s);
			} else if (e->op >= OP_EQ)
				res = compare(r, e->op, a, b);
			else
				res = arith(r, e->op, a, b);
		}
		json_decref(a);
		json_decref(b);
		return res;
	}
	return NULL;
}

static void render_nodes(struct render *r, const struct node *n);

static void emit_escaped(struct render *r, json_t *v, enum tmpl_escape esc)
{
	if (esc == TMPL_ESCAPE_JSON) {
		if (!v)
			buf_appends(r->out, "null");
		else
			json_dump_callback(v, dump_cb, r->out, JSON_ENCODE_ANY | JSON_COMPACT);
		return;
	}
	if (esc == TMPL_ESCAPE_NONE) {
		emit(r->out, v);
		return;
	}
	struct buf t;
	buf_init(&t);
	emit(&t, v);
	for (size_t i = 0; i < t.len; i++) {
		switch (t.data[i]) {
		case '&':
			buf_appends(r->out, "&amp;");
			break;
		case '<':
			buf_appends(r->out, "&lt;");
			break;
		case '>':
			buf_appends(r->out, "&gt;");
			break;
		case '"':
			buf_appends(r->out, "&quot;");
			break;
		case '\'':
			buf_appends(r->out, "&#x27;");
			break;
		case '/':
			buf_appends(r->out, "&#x2f;");
			break;
		default:
			buf_appendc(r->out, t.data[i]);
		}
	}
	buf_free(&t);
}

static void push_local(struct render *r, const char *name, json_t *v)
{
	r->locals[r->nlocals].name = name;
	r->locals[r->nlocals].v = v;
	r->nlocals++;
}

static void render_for(struct render *r, const struct node *n)
{
	json_t *it = eval(r, n->e);
	json_t *items = NULL;
	if (json_is_array(it))
		items = json_incref(it);
	else if (json_is_object(it)) {
		items = json_array();
		const char *k;
		json_t *v;
		json_object_foreach(it, k, v) json_array_append_new(items, json_string(k));
	} else if (it && !json_is_null(it) && !r->failed)
		rfail(r, "cannot iterate over %s", type_name(it));
	json_decref(it);
	size_t len = json_array_size(items);
	if (!len && !r->failed)
		render_nodes(r, n->other);
	for (size_t i = 0; i < len && !r->failed; i++) {
		json_t *v = json_array_get(items, i);
		json_t *loop = json_pack("{s:I,s:I,s:b,s:b,s:I}", "index", (json_int_t)i + 1,
					 "index0", (json_int_t)i, "first", i == 0, "last",
					 i + 1 == len, "length", (json_int_t)len);
		size_t mark = r->nlocals;
		push_local(r, "loop", loop);
		if (n->var2) {
			if (!json_is_array(v) || json_array_size(v) != 2) {
				rfail(r, "cannot unpack %s into %s, %s", type_name(v), n->var,
				      n->var2);
				r->nlocals = mark;
				json_decref(loop);
				break;
			}
			push_local(r, n->var, json_array_get(v, 0));
			push_local(r, n->var2, json_array_get(v, 1));
		} else
			push_local(r, n->var, v);
		render_nodes(r, n->body);
		r->nlocals = mark;
		json_decref(loop);
	}
	json_decref(items);
}

static void render_nodes(struct render *r, const struct node *n)
{
	for (; n && !r->failed; n = n->next) {
		switch (n->k) {
		case N_TEXT:
			buf_append(r->out, n->text, n->len);
			break;
		case N_OUT: {
			json_t *v = eval(r, n->e);
			int safe =
			    n->e->k == E_FILTER && (n->e->op == F_SAFE || n->e->op == F_TOJSON);
			if (!r->failed)
				emit_escaped(r, v, safe ? TMPL_ESCAPE_NONE : r->esc);
			json_decref(v);
			break;
		}
		case N_IF: {
			json_t *v = eval(r, n->e);
			int t = truthy(v);
			json_decref(v);
			if (!r->failed)
				render_nodes(r, t ? n->body : n->other);
			break;
		}
		case N_FOR:
			render_for(r, n);
			break;
		}
		if (r->out->len - r->out_start > MAX_OUTPUT)
			rfail(r, "template output exceeds %u bytes", MAX_OUTPUT);
	}
}

int tmpl_render_escaped(const struct tmpl *t, json_t *ctx, enum tmpl_escape esc, struct buf *out,
			struct tmpl_error *err)
{
	struct tmpl_error dummy;
	if (!err)
		err = &dummy;
	memset(err, 0, sizeof(*err));
	struct render r = {.ctx = ctx, .esc = esc, .out = out, .out_start = out->len, .err = err};
	render_nodes(&r, t->root);
	return r.failed ? -1 : 0;
}

int tmpl_render(const struct tmpl *t, json_t *ctx, struct buf *out, struct tmpl_error *err)
{
	return tmpl_render_escaped(t, ctx, TMPL_ESCAPE_NONE, out, err);
}

enum tmpl_escape tmpl_escape_for_name(const char *name)
{
	const char *dot = name ? strrchr(name, '.') : NULL;
	if (!dot)
		return TMPL_ESCAPE_NONE;
	static const char *const html[] = {".html", ".htm", ".xml"};
	static const char *const json[] = {".json", ".json5", ".js", ".yaml", ".yml"};
	for (size_t i = 0; i < 3; i++)
		if (strcmp(dot, html[i]) == 0)
			return TMPL_ESCAPE_HTML;
	for (size_t i = 0; i < 5; i++)
		if (strcmp(dot, json[i]) == 0)
			return TMPL_ESCAPE_JSON;
	return TMPL_ESCAPE_NONE;
}
