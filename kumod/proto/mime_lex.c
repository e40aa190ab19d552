/* SPDX-License-Identifier: Apache-2.0 */
/* Lexer for MIME structured header field values (tokens, comments, quoted
 * strings, Content-Type parameters). */
#include "proto/mime_lex.h"

#include <string.h>

#include "base/ascii.h"

int mime_lex_is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* RFC 2045 token characters (no tspecials, no space or controls). */
static int is_token(char c)
{
	return c > ' ' && c < 127 && !strchr("()<>@,;:\\\"/[]?=", c);
}

size_t mime_lex_skip_cfws(const char *v, size_t n, size_t i)
{
	int depth = 0;
	for (; i < n; i++) {
		if (v[i] == '(')
			depth++;
		else if (v[i] == ')' && depth)
			depth--;
		else if (v[i] == '\\' && depth && i + 1 < n)
			i++;
		else if (!depth && !mime_lex_is_ws(v[i]))
			break;
	}
	return i;
}

size_t mime_lex_token_end(const char *v, size_t n, size_t i)
{
	while (i < n && is_token(v[i]))
		i++;
	return i;
}

void mime_lex_first_token(const char *v, size_t n, char *dst, size_t cap)
{
	size_t a = mime_lex_skip_cfws(v, n, 0), t = mime_lex_token_end(v, n, a);
	ascii_lower_copy(dst, cap, v + a, t - a);
}

size_t mime_lex_param_value(const char *v, size_t n, size_t i, char *val, size_t cap)
{
	size_t vl = 0;
	if (i < n && v[i] == '"') {
		for (i++; i < n && v[i] != '"'; i++) {
			if (v[i] == '\\' && i + 1 < n)
				i++;
			if (v[i] == '\r' || v[i] == '\n')
				continue; /* folding inside the quotes */
			if (vl + 1 < cap)
				val[vl++] = v[i];
		}
		i += i < n;
	} else {
		size_t te = mime_lex_token_end(v, n, i);
		for (; i < te; i++)
			if (vl + 1 < cap)
				val[vl++] = v[i];
	}
	val[vl] = '\0';
	return i;
}

void mime_lex_content_type(
    const char *v, size_t n, char *type, size_t type_cap, char *subtype, size_t subtype_cap,
    void (*param)(void *ctx, const char *name, size_t name_len, const char *value), void *ctx)
{
	size_t i = mime_lex_skip_cfws(v, n, 0), t = mime_lex_token_end(v, n, i);
	ascii_lower_copy(type, type_cap, v + i, t - i);
	i = mime_lex_skip_cfws(v, n, t);
	if (i < n && v[i] == '/') {
		i = mime_lex_skip_cfws(v, n, i + 1);
		t = mime_lex_token_end(v, n, i);
		ascii_lower_copy(subtype, subtype_cap, v + i, t - i);
		i = t;
	}
	for (;;) {
		i = mime_lex_skip_cfws(v, n, i);
		if (i >= n || v[i] != ';')
			return;
		i = mime_lex_skip_cfws(v, n, i + 1);
		size_t a = i, ae = mime_lex_token_end(v, n, i);
		i = mime_lex_skip_cfws(v, n, ae);
		if (i >= n || v[i] != '=')
			return;
		i = mime_lex_skip_cfws(v, n, i + 1);
		char val[MIME_LEX_VALUE_MAX + 1];
		i = mime_lex_param_value(v, n, i, val, sizeof(val));
		if (param)
			param(ctx, v + a, ae - a, val);
	}
}

int mime_lex_delimiter(const char *l, size_t n, const char *bd, size_t bl)
{
	if (n < bl + 2 || l[0] != '-' || l[1] != '-' || memcmp(l + 2, bd, bl) != 0)
		return 0;
	size_t i = bl + 2;
	int close = 0;
	if (n - i >= 2 && l[i] == '-' && l[i + 1] == '-') {
		close = 1;
		i += 2;
	}
	for (; i < n; i++)
		if (l[i] != ' ' && l[i] != '\t')
			return 0;
	return close ? 2 : 1;
}

size_t mime_lex_line_end(const char *p, size_t n, size_t i)
{
	const char *lf = memchr(p + i, '\n', n - i);
	return lf ? (size_t)(lf - p) + 1 : n;
}

size_t mime_lex_content_end(const char *p, size_t i, size_t e)
{
	if (e > i && p[e - 1] == '\n')
		e--;
	if (e > i && p[e - 1] == '\r')
		e--;
	return e;
}
