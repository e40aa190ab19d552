/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `esmtp_params`: "MAIL FROM:<a@b> " + input (and the same after RCPT),
 * compared with a small reference implementation of the parameter rules: token count bound,
 * syntax, duplicates, SIZE digits with overflow, BODY values, SMTPUTF8 without value, unknown
 * keywords. Aborts when the parser and the reference disagree. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/smtp_cmd.h"
#include "fuzz_check.h"

struct ref_result {
	int code; /* 0 = accepted */
	size_t ntok;
	int has_size, smtputf8, body;
	uint64_t size;
};

static int ref_ieq(const char *p, size_t n, const char *lit)
{
	if (n != strlen(lit))
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if (c >= 'a' && c <= 'z')
			c -= 32;
		if (c != lit[i])
			return 0;
	}
	return 1;
}

static int ref_alnum(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* One token: 0 ok, else the reply code. */
static int ref_token(const char *t, size_t n, int is_mail, struct ref_result *r)
{
	const char *eq = memchr(t, '=', n);
	size_t kl = eq ? (size_t)(eq - t) : n;
	const char *v = eq ? eq + 1 : NULL;
	size_t vl = eq ? n - kl - 1 : 0;

	if (!kl || !ref_alnum(t[0]))
		return 501;
	for (size_t i = 0; i < kl; i++)
		if (!ref_alnum(t[i]) && t[i] != '-')
			return 501;
	if (eq && !vl)
		return 501;
	for (size_t i = 0; i < vl; i++)
		if ((unsigned char)v[i] < 33 || (unsigned char)v[i] > 126 || v[i] == '=')
			return 501;
	if (!is_mail)
		return 555;
	if (ref_ieq(t, kl, "SIZE")) {
		uint64_t x = 0;
		if (!eq)
			return 501;
		for (size_t i = 0; i < vl; i++) {
			if (v[i] < '0' || v[i] > '9')
				return 501;
			if (__builtin_mul_overflow(x, 10, &x) ||
			    __builtin_add_overflow(x, (uint64_t)(v[i] - '0'), &x))
				return 501;
		}
		r->has_size = 1;
		r->size = x;
		return 0;
	}
	if (ref_ieq(t, kl, "BODY")) {
		if (eq && ref_ieq(v, vl, "7BIT"))
			r->body = SMTP_BODY_7BIT;
		else if (eq && ref_ieq(v, vl, "8BITMIME"))
			r->body = SMTP_BODY_8BITMIME;
		else
			return 501;
		return 0;
	}
	if (ref_ieq(t, kl, "SMTPUTF8")) {
		if (eq)
			return 501;
		r->smtputf8 = 1;
		return 0;
	}
	return 555;
}

static int ref_dup(const char *in, size_t len, size_t start, size_t klen)
{
	/* Is the keyword in[start..start+klen) already present earlier? */
	size_t i = 0;
	while (i < start) {
		while (i < start && in[i] == ' ')
			i++;
		size_t s = i;
		while (i < len && in[i] != ' ')
			i++;
		if (s >= start)
			break;
		const char *eq = memchr(in + s, '=', i - s);
		size_t kl = eq ? (size_t)(eq - (in + s)) : i - s;
		if (kl == klen) {
			size_t k;
			for (k = 0; k < kl; k++) {
				char a = in[s + k], b = in[start + k];
				if (a >= 'a' && a <= 'z')
					a -= 32;
				if (b >= 'a' && b <= 'z')
					b -= 32;
				if (a != b)
					break;
			}
			if (k == kl)
				return 1;
		}
	}
	return 0;
}

static void ref_params(const char *in, size_t len, int is_mail, struct ref_result *r)
{
	size_t i = 0;

	memset(r, 0, sizeof(*r));
	for (size_t k = 0; k < len; k++)
		if ((unsigned char)in[k] < 32 || in[k] == 127) {
			r->code = 500;
			return;
		}
	if (!smtp_utf8_valid(in, len)) {
		r->code = 501;
		return;
	}
	for (size_t k = 0; k < len; k++)
		if (in[k] != ' ' && (k == 0 || in[k - 1] == ' '))
			r->ntok++;
	if (r->ntok > SMTP_MAX_PARAMS) {
		r->code = 501;
		return;
	}
	for (;;) {
		while (i < len && in[i] == ' ')
			i++;
		if (i == len)
			return;
		size_t s = i;
		while (i < len && in[i] != ' ')
			i++;
		const char *eq = memchr(in + s, '=', i - s);
		size_t kl = eq ? (size_t)(eq - (in + s)) : i - s;
		struct ref_result scratch = *r;
		int code = ref_token(in + s, i - s, is_mail, &scratch);
		/* Syntax first, then duplicates, then meaning. */
		int syntax_ok = kl > 0 && ref_alnum(in[s]);
		for (size_t k = 0; k < kl; k++)
			if (!ref_alnum(in[s + k]) && in[s + k] != '-')
				syntax_ok = 0;
		if (eq) {
			size_t vl = i - s - kl - 1;
			if (!vl)
				syntax_ok = 0;
			for (size_t k = 0; k < vl; k++)
				if ((unsigned char)eq[1 + k] < 33 ||
				    (unsigned char)eq[1 + k] > 126 || eq[1 + k] == '=')
					syntax_ok = 0;
		}
		if (!syntax_ok || ref_dup(in, len, s, kl)) {
			r->code = 501;
			return;
		}
		if (code) {
			r->code = code;
			return;
		}
		*r = scratch;
	}
}

static void fz_run(const char *prefix, const uint8_t *data, size_t size, int is_mail)
{
	size_t plen = strlen(prefix);
	char *line = malloc(plen + size + 1);
	struct smtp_cmd cmd;
	struct smtp_reply_err err = {0, NULL, NULL};
	struct ref_result ref;
	int rc;

	memcpy(line, prefix, plen);
	memcpy(line + plen, data, size);
	rc = smtp_cmd_parse(line, plen + size, &cmd, &err);
	ref_params((const char *)data, size, is_mail, &ref);
	CHECK(cmd.nparams <= SMTP_MAX_PARAMS);
	if (ref.code == 0) {
		if (rc != 0) {
			fprintf(stderr, "parser refused (%d %s) what the reference accepts\n",
				err.code, err.text);
			abort();
		}
		CHECK(cmd.nparams == ref.ntok);
		CHECK(cmd.has_size == ref.has_size && cmd.size == ref.size);
		CHECK(cmd.smtputf8 == ref.smtputf8 && (int)cmd.body == ref.body);
		CHECK(!is_mail ? cmd.nparams == 0 : 1);
	} else {
		if (rc != -EINVAL || err.code != ref.code) {
			fprintf(stderr, "parser: %d %d %s, reference: %d\n", rc, err.code,
				err.text ? err.text : "", ref.code);
			abort();
		}
		if (err.code == 501)
			CHECK(!strcmp(err.enhanced, "5.5.4") || !strcmp(err.enhanced, "5.5.2"));
		if (err.code == 555)
			CHECK(!strcmp(err.enhanced, "5.5.4"));
	}
	free(line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_run("MAIL FROM:<a@b> ", data, size, 1);
	fz_run("RCPT TO:<a@b> ", data, size, 0);
	return 0;
}
