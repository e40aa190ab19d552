/* SPDX-License-Identifier: Apache-2.0 */
/* Templates: a documented subset of Jinja2 / minijinja (KumoMTA's template
 * engine) compiled once and rendered over a JSON context. Pure: text in, a
 * tree out; rendering reads a jansson value and appends to a buf. The subset
 * (docs/log-records.md, "Templates"):
 *   {{ expr }}, {% if %}/{% elif %}/{% else %}/{% endif %},
 *   {% for x in expr %} / {% for k, v in expr %} ... {% else %} {% endfor %}
 *   (loop.index, loop.index0, loop.first, loop.last, loop.length),
 *   {# comments #}, whitespace control with '-' on any tag;
 *   expressions: literals (strings, integers, floats, true/false/none),
 *   names, a.b and a[expr] access, + - * / // % ~, comparisons
 *   (== != < <= > >= in, not in), and/or/not, filters (| name(args)) and
 *   tests (is [not] name).
 * Unknown filters and tests and every syntax error are compile errors.
 * A missing name or key is undefined (renders as ""; attribute access on it
 * stays undefined); type errors (text minus a number) are render errors. */
#ifndef KUMOD_PROTO_TEMPLATE_H
#define KUMOD_PROTO_TEMPLATE_H

#include <jansson.h>
#include <stddef.h>

#include "base/buf.h"

struct tmpl;

struct tmpl_error {
	int line, column; /* 1-based position in the source (compile errors) */
	char msg[200];
};

/* Compiles src[0..len). NULL with err filled on a syntax error, an unknown
 * filter or test, or nesting deeper than 64. */
struct tmpl *tmpl_compile(const char *src, size_t len, struct tmpl_error *err);

/* Appends the rendering of t over ctx (names are looked up as keys of ctx
 * when it is an object) to out. 0, or -1 with err filled (a type error, or
 * output beyond 4 MiB); out may then hold a partial rendering. */
int tmpl_render(const struct tmpl *t, json_t *ctx, struct buf *out, struct tmpl_error *err);

/* Automatic escaping of {{ }} output, as minijinja picks it from a template
 * name: .html/.htm/.xml escape HTML (& < > " ' /), .json/.json5/.js/.yaml/.yml
 * write each value as JSON. An expression whose last filter is safe or
 * tojson is written as it is. */
enum tmpl_escape {
	TMPL_ESCAPE_NONE,
	TMPL_ESCAPE_HTML,
	TMPL_ESCAPE_JSON,
};
/* The escape mode minijinja would use for a template of this file name. */
enum tmpl_escape tmpl_escape_for_name(const char *name);
int tmpl_render_escaped(const struct tmpl *t, json_t *ctx, enum tmpl_escape esc, struct buf *out,
			struct tmpl_error *err);

void tmpl_free(struct tmpl *t);

/* Names of the supported filters and tests, NULL-terminated (docs, tests). */
extern const char *const tmpl_filters[];
extern const char *const tmpl_tests[];

#endif
