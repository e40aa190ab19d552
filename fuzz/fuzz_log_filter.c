/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the KUMOD_LOG parser: parse never crashes, errors name the directive,
 * verdicts are deterministic and monotonic in the level, re-parsing gives the same verdicts,
 * and appending `,off` never enables more. Aborts on violation.
 * Input: the filter text (inputs containing NUL are skipped). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/logfilter.h"
#include "fuzz_check.h"

#define FZ_NTARGETS 10

static const char *const fz_fixed[] = {
    "kumod", "kumod::smtp_server", "kumod_x", "lua", "spool", "", "6", "KUMOD"};

/* Fixed targets plus two taken from the input: its text up to the first '=' or
 * '[', and the same without its last byte (a prefix that may or may not match). */
static void fz_targets(const char *text, const char **t, char *own, size_t ownlen)
{
	size_t n = strcspn(text, "=[,");
	if (n >= ownlen / 2)
		n = ownlen / 2 - 1;
	memcpy(own, text, n);
	own[n] = 0;
	memcpy(own + ownlen / 2, text, n ? n - 1 : 0);
	own[ownlen / 2 + (n ? n - 1 : 0)] = 0;
	for (size_t i = 0; i < 8; i++)
		t[i] = fz_fixed[i];
	t[8] = own;
	t[9] = own + ownlen / 2;
}

/* verdict[target][level-1] */
static void fz_verdicts(const struct logfilter *f, const char **t, int v[FZ_NTARGETS][5])
{
	for (size_t i = 0; i < FZ_NTARGETS; i++) {
		for (int lvl = LOG_LEVEL_ERROR; lvl <= LOG_LEVEL_TRACE; lvl++) {
			v[i][lvl - 1] = logfilter_enabled(f, t[i], (enum log_level)lvl);
			CHECK(v[i][lvl - 1] == 0 || v[i][lvl - 1] == 1);
			CHECK(v[i][lvl - 1] == logfilter_enabled(f, t[i], (enum log_level)lvl));
			/* Enabled at a level means enabled at every less verbose one. */
			if (lvl > LOG_LEVEL_ERROR)
				CHECK(!v[i][lvl - 1] || v[i][lvl - 2]);
		}
		CHECK(logfilter_enabled(f, t[i], LOG_LEVEL_OFF) == 0);
	}
}

static void fz_spans(const struct logfilter *f, const char **t, enum log_level out[FZ_NTARGETS])
{
	struct logfilter_field fields[] = {{"name", "gmail.com"}, {"queue", t[8]}, {"n", "5"}};
	for (size_t i = 0; i < FZ_NTARGETS; i++) {
		char target[128];
		snprintf(target, sizeof(target), "kumod::%s", t[i]);
		out[i] = logfilter_span_level(f, t[i], target, fields, 3);
		CHECK(out[i] >= LOG_LEVEL_OFF && out[i] <= LOG_LEVEL_TRACE);
		CHECK(out[i] == logfilter_span_level(f, t[i], target, fields, 3));
		if (!logfilter_has_dynamic(f))
			CHECK(out[i] == LOG_LEVEL_OFF);
	}
}

static struct logfilter *fz_parse_ok(const char *text)
{
	struct logfilter *f = NULL;
	char err[256];
	CHECK(logfilter_parse(text, &f, err, sizeof(err)) == 0);
	CHECK(f != NULL);
	return f;
}

static void fz_check(const char *text, const struct logfilter *f)
{
	const char *t[FZ_NTARGETS];
	char own[256];
	int v[FZ_NTARGETS][5], v2[FZ_NTARGETS][5], voff[FZ_NTARGETS][5];
	enum log_level s[FZ_NTARGETS], s2[FZ_NTARGETS];
	size_t pieces = 1;

	for (const char *p = text; *p; p++)
		pieces += *p == ',';
	CHECK(logfilter_count(f) <= pieces);
	fz_targets(text, t, own, sizeof(own));
	fz_verdicts(f, t, v);
	fz_spans(f, t, s);

	/* The same text again: the same verdicts. */
	struct logfilter *again = fz_parse_ok(text);
	CHECK(logfilter_count(again) == logfilter_count(f));
	CHECK(logfilter_has_dynamic(again) == logfilter_has_dynamic(f));
	fz_verdicts(again, t, v2);
	fz_spans(again, t, s2);
	CHECK(memcmp(v, v2, sizeof(v)) == 0);
	CHECK(memcmp(s, s2, sizeof(s)) == 0);
	logfilter_free(again);

	/* A trailing `off` default only ever disables; span levels are untouched. */
	size_t len = strlen(text);
	char *offed = malloc(len + 5);
	memcpy(offed, text, len);
	memcpy(offed + len, ",off", 5);
	struct logfilter *o = fz_parse_ok(offed);
	fz_verdicts(o, t, voff);
	fz_spans(o, t, s2);
	for (size_t i = 0; i < FZ_NTARGETS; i++)
		for (size_t l = 0; l < 5; l++)
			CHECK(voff[i][l] <= v[i][l]);
	CHECK(memcmp(s, s2, sizeof(s)) == 0);
	CHECK(logfilter_has_dynamic(o) == logfilter_has_dynamic(f));
	logfilter_free(o);
	free(offed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 4096 || memchr(data, 0, size))
		return 0;
	char *text = malloc(size + 1);
	memcpy(text, data, size);
	text[size] = 0;

	struct logfilter *f = (struct logfilter *)&f;
	char err[256] = "";
	int rc = logfilter_parse(text, &f, err, sizeof(err));
	if (rc == 0) {
		CHECK(f != NULL);
		fz_check(text, f);
		logfilter_free(f);
	} else {
		CHECK(rc == -EINVAL);
		CHECK(f == NULL);
		CHECK(strncmp(err, "invalid filter directive '", 26) == 0 ||
		      strcmp(err, "filter is not valid UTF-8") == 0);
	}
	free(text);
	return 0;
}
