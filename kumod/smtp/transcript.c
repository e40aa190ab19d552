/* SPDX-License-Identifier: Apache-2.0 */
/* The SMTP conversation of a server session for the mail catcher (see
 * transcript.h). */
#include "smtp/transcript.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/xalloc.h"

static int enabled;

void smtp_transcript_enable(void)
{
	enabled = 1;
}

int smtp_transcript_enabled(void)
{
	return enabled;
}

void smtp_transcript_add(struct smtp_transcript *t, char dir, const char *text, size_t len)
{
	if (!enabled)
		return;
	uint64_t now = clock_mono_ns();
	if (!t->lines) {
		t->lines = xcalloc(SMTP_TRANSCRIPT_LINES, sizeof(*t->lines));
		if (!t->start_ns)
			t->start_ns = now;
	}
	if (dir == 'C' && len >= 4 && strncasecmp(text, "MAIL", 4) == 0) {
		if (!t->head_n)
			t->head_n = t->n + 1;
		else
			t->n = t->head_n - 1; /* a new transaction: the last one's lines go */
	}
	if (t->n == SMTP_TRANSCRIPT_LINES) { /* keep the head, slide the rest */
		memmove(&t->lines[SMTP_TRANSCRIPT_HEAD], &t->lines[SMTP_TRANSCRIPT_HEAD + 1],
			(SMTP_TRANSCRIPT_LINES - SMTP_TRANSCRIPT_HEAD - 1) * sizeof(*t->lines));
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
	if (!enabled)
		return;
	char l[SMTP_TRANSCRIPT_LINE_MAX];
	int n = snprintf(l, sizeof(l), "%d %s%s%s", code, enhanced ? enhanced : "",
			 enhanced ? " " : "", text);
	smtp_transcript_add(t, 'S', l,
			    n < 0		    ? 0
			    : (size_t)n < sizeof(l) ? (size_t)n
						    : sizeof(l) - 1);
}

json_t *smtp_transcript_json(const struct smtp_transcript *t, const char *ehlo, const char *tls)
{
	if (!enabled)
		return NULL;
	json_t *lines = json_array();
	struct buf b;
	buf_init(&b);
	for (size_t i = 0; i < t->n; i++) {
		buf_reset(&b);
		buf_append_utf8_lossy(&b, t->lines[i].text, strlen(t->lines[i].text));
		char dir[2] = {t->lines[i].dir, 0};
		json_array_append_new(lines, json_pack("{s:I, s:s, s:s#}", "Ms",
						       (json_int_t)t->lines[i].ms, "Dir", dir,
						       "Line", b.data ? b.data : "", b.len));
	}
	buf_free(&b);
	return json_pack("{s:s, s:s, s:o, s:I}", "Ehlo", ehlo ? ehlo : "", "Tls", tls ? tls : "",
			 "Lines", lines, "Dropped", (json_int_t)t->dropped);
}

void smtp_transcript_free(struct smtp_transcript *t)
{
	free(t->lines);
	t->lines = NULL;
	t->n = 0;
}
