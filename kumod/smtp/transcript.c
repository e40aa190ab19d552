/* SPDX-License-Identifier: Apache-2.0 */
/* The SMTP conversation of a server session, fed by the smtp_trace hook
 * (see transcript.h). */
#include "smtp/transcript.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/xalloc.h"
#include "smtp/smtp_trace.h"

static unsigned users;
static int handle = -1;

static void transcript_on_event(const struct smtp_trace_ev *ev, void *arg)
{
	(void)arg;
	if (!ev->transcript)
		return;
	if (ev->kind == SMTP_TRACE_READ)
		smtp_transcript_add(ev->transcript, 'C', ev->text ? ev->text : "",
				    ev->len || !ev->text ? ev->len : strlen(ev->text));
	else if (ev->kind == SMTP_TRACE_WRITE)
		smtp_transcript_reply(ev->transcript, ev->code, ev->enhanced,
				      ev->text ? ev->text : "");
}

int smtp_transcript_enable(enum smtp_transcript_user who)
{
	if (handle < 0) {
		handle = smtp_trace_subscribe(SMTP_TRACE_SERVER, transcript_on_event, NULL);
		if (handle < 0)
			return handle;
	}
	users |= (unsigned)who;
	return 0;
}

unsigned smtp_transcript_users(void)
{
	return users;
}

static void transcript_alloc(struct smtp_transcript *t, uint64_t now)
{
	int catcher = (users & SMTP_TRANSCRIPT_CATCHER) != 0;
	t->cap = catcher ? SMTP_TRANSCRIPT_LINES : SMTP_TRANSCRIPT_CONSOLE_LINES;
	t->head = catcher ? SMTP_TRANSCRIPT_HEAD : 0;
	t->txn_reset = (uint8_t)catcher;
	t->lines = xcalloc(t->cap, sizeof(*t->lines));
	if (!t->start_ns)
		t->start_ns = now;
}

void smtp_transcript_add(struct smtp_transcript *t, char dir, const char *text, size_t len)
{
	if (!users)
		return;
	uint64_t now = clock_mono_ns();
	if (!t->lines)
		transcript_alloc(t, now);
	if (t->txn_reset && dir == 'C' && len >= 4 && strncasecmp(text, "MAIL", 4) == 0) {
		if (!t->head_n)
			t->head_n = t->n + 1;
		else
			t->n = t->head_n - 1; /* a new transaction: the last one's lines go */
	}
	if (t->n == t->cap) { /* keep the head, slide the rest */
		memmove(&t->lines[t->head], &t->lines[t->head + 1],
			(size_t)(t->cap - t->head - 1) * sizeof(*t->lines));
		t->n--;
		t->dropped++;
	}
	struct smtp_transcript_line *l = &t->lines[t->n++];
	l->ms = (uint32_t)((now - t->start_ns) / 1000000);
	l->dir = dir;
	while (len && (text[len - 1] == '\n' || text[len - 1] == '\r'))
		len--;
	if (len >= sizeof(l->text))
		len = sizeof(l->text) - 1;
	memcpy(l->text, text, len);
	l->text[len] = 0;
}

void smtp_transcript_reply(struct smtp_transcript *t, int code, const char *enhanced,
			   const char *text)
{
	if (!users)
		return;
	char l[SMTP_TRANSCRIPT_LINE_MAX];
	int n = snprintf(l, sizeof(l), "%d %s%s%s", code, enhanced ? enhanced : "",
			 enhanced ? " " : "", text);
	smtp_transcript_add(t, 'S', l,
			    n < 0		    ? 0
			    : (size_t)n < sizeof(l) ? (size_t)n
						    : sizeof(l) - 1);
}

/* A line as a JSON string: valid UTF-8 (invalid bytes become U+FFFD), so
 * jansson's check is skipped. */
static json_t *line_text(struct buf *b, const char *text)
{
	size_t n = 0;
	unsigned char high = 0;
	for (; text[n]; n++)
		high |= (unsigned char)text[n];
	if (!(high & 0x80)) /* ASCII: as it is */
		return json_stringn_nocheck(text, n);
	buf_reset(b);
	buf_append_utf8_lossy(b, text, n);
	return json_stringn_nocheck(b->data ? b->data : "", b->len);
}

/* {ms, dir, line} under the given key names: built with the constructors
 * (json_pack parses its format per call: it was most of a captured
 * message's transcript cost). */
static json_t *line_json(const char *const k[3], uint32_t ms, const char *dir, const char *text,
			 struct buf *b)
{
	json_t *o = json_object();
	json_object_set_new_nocheck(o, k[0], json_integer((json_int_t)ms));
	json_object_set_new_nocheck(o, k[1], json_stringn_nocheck(dir, 1));
	json_object_set_new_nocheck(o, k[2], line_text(b, text));
	return o;
}

/* Packed: the header, then n line records, then the texts (NUL-ended). */
struct smtp_transcript_snap {
	size_t size; /* of the whole allocation */
	uint64_t dropped;
	uint32_t n, ehlo, tls; /* offsets of the texts from text[] */
	struct snap_line {
		uint32_t ms, off;
		char dir;
	} line[];
};

static const char *snap_text(const struct smtp_transcript_snap *s, uint32_t off)
{
	return (const char *)&s->line[s->n] + off;
}

struct smtp_transcript_snap *smtp_transcript_snap(const struct smtp_transcript *t, const char *ehlo,
						  const char *tls)
{
	if (!(users & SMTP_TRANSCRIPT_CATCHER))
		return NULL;
	ehlo = ehlo ? ehlo : "";
	tls = tls ? tls : "";
	size_t le = strlen(ehlo) + 1, lt = strlen(tls) + 1, texts = le + lt;
	for (size_t i = 0; i < t->n; i++)
		texts += strlen(t->lines[i].text) + 1;
	size_t size = sizeof(struct smtp_transcript_snap) + t->n * sizeof(struct snap_line) + texts;
	struct smtp_transcript_snap *s = xmalloc(size);
	s->size = size;
	s->dropped = t->dropped;
	s->n = (uint32_t)t->n;
	char *base = (char *)&s->line[s->n], *p = base;
	memcpy(p, ehlo, le);
	s->ehlo = 0;
	p += le;
	memcpy(p, tls, lt);
	s->tls = (uint32_t)le;
	p += lt;
	for (size_t i = 0; i < t->n; i++) {
		size_t n = strlen(t->lines[i].text) + 1;
		s->line[i].ms = t->lines[i].ms;
		s->line[i].dir = t->lines[i].dir;
		s->line[i].off = (uint32_t)(p - base);
		memcpy(p, t->lines[i].text, n);
		p += n;
	}
	return s;
}

struct smtp_transcript_snap *smtp_transcript_snap_dup(const struct smtp_transcript_snap *s)
{
	struct smtp_transcript_snap *d = xmalloc(s->size);
	memcpy(d, s, s->size);
	return d;
}

void smtp_transcript_snap_free(struct smtp_transcript_snap *s)
{
	free(s);
}

json_t *smtp_transcript_snap_json(const struct smtp_transcript_snap *s)
{
	json_t *o = json_object();
	json_object_set_new_nocheck(o, "Ehlo", json_string(snap_text(s, s->ehlo)));
	json_object_set_new_nocheck(o, "Tls", json_string(snap_text(s, s->tls)));
	static const char *const keys[3] = {"Ms", "Dir", "Line"};
	json_t *lines = json_array();
	struct buf b;
	buf_init(&b);
	for (uint32_t i = 0; i < s->n; i++)
		json_array_append_new(lines, line_json(keys, s->line[i].ms, &s->line[i].dir,
						       snap_text(s, s->line[i].off), &b));
	buf_free(&b);
	json_object_set_new_nocheck(o, "Lines", lines);
	json_object_set_new_nocheck(o, "Dropped", json_integer((json_int_t)s->dropped));
	return o;
}

json_t *smtp_transcript_tail_json(const struct smtp_transcript *t, size_t last)
{
	static const char *const keys[3] = {"ms", "dir", "line"};
	json_t *lines = json_array();
	struct buf b;
	buf_init(&b);
	for (size_t i = t->n > last ? t->n - last : 0; i < t->n; i++)
		json_array_append_new(
		    lines, line_json(keys, t->lines[i].ms, &t->lines[i].dir, t->lines[i].text, &b));
	buf_free(&b);
	return lines;
}

void smtp_transcript_free(struct smtp_transcript *t)
{
	free(t->lines);
	t->lines = NULL;
	t->n = 0;
}
