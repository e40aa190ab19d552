/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `parser`: one SMTP command line -> struct smtp_cmd. Invariants: slices stay
 * inside the line, errors carry a known reply, and a successful parse re-encoded with
 * smtp_cmd_format() parses to the same command (verb, path, flags, parameters). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/smtp_cmd.h"
#include "fuzz_check.h"

static int fz_slice_in(struct smtp_slice s, const char *base, size_t len)
{
	return s.p >= base && s.p <= base + len && s.len <= (size_t)(base + len - s.p);
}

static int fz_slice_eq(struct smtp_slice a, struct smtp_slice b)
{
	return a.len == b.len && (!a.len || !memcmp(a.p, b.p, a.len));
}

static void fz_check_err(int rc, const struct smtp_reply_err *err)
{
	CHECK(rc == -EINVAL);
	CHECK(err->code == 500 || err->code == 501 || err->code == 553 || err->code == 555);
	CHECK(err->enhanced && err->text && strlen(err->enhanced) == 5);
	CHECK(err->enhanced[0] == '5' && !strchr(err->text, '\r') && !strchr(err->text, '\n'));
}

static void fz_check_cmd(const struct smtp_cmd *c, const char *line, size_t len)
{
	const struct smtp_mailbox *mb = &c->path;

	CHECK(c->verb > SMTP_VERB_UNKNOWN && c->verb < SMTP_VERB__COUNT);
	CHECK(c->nparams <= SMTP_MAX_PARAMS);
	CHECK(fz_slice_in(c->arg, line, len));
	CHECK(fz_slice_in(mb->local, line, len) && fz_slice_in(mb->domain, line, len));
	for (size_t i = 0; i < c->nparams; i++)
		CHECK(fz_slice_in(c->params[i].key, line, len) &&
		      fz_slice_in(c->params[i].value, line, len) && c->params[i].key.len > 0);
	for (size_t i = 0; i < len; i++)
		CHECK((unsigned char)line[i] >= 32 && line[i] != 127);
	CHECK(smtp_utf8_valid(line, len));
	if (c->verb != SMTP_VERB_MAIL && c->verb != SMTP_VERB_RCPT) {
		CHECK(c->nparams == 0 && !mb->local.len && !mb->domain.len);
		return;
	}
	CHECK(!(mb->null_path && mb->postmaster));
	if (mb->null_path || mb->postmaster)
		CHECK(mb->domain.len == 0);
	if (mb->null_path)
		CHECK(c->verb == SMTP_VERB_MAIL && mb->local.len == 0);
	if (mb->postmaster)
		CHECK(c->verb == SMTP_VERB_RCPT && mb->local.len == 10);
	if (!mb->null_path && !mb->postmaster) {
		CHECK(mb->local.len > 0 && mb->domain.len > 0);
		CHECK(mb->literal ? smtp_domain_valid(mb->domain.p, mb->domain.len)
				  : smtp_domain_valid_utf8(mb->domain.p, mb->domain.len));
		CHECK(mb->quoted == (mb->local.p[0] == '"'));
	}
	if (c->verb == SMTP_VERB_MAIL && mb->utf8)
		CHECK(c->smtputf8);
	if (c->verb == SMTP_VERB_RCPT)
		CHECK(c->nparams == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *line = (const char *)data;
	struct smtp_cmd a, b;
	struct smtp_reply_err err;
	size_t cap = 2 * size + 64, n, n2;
	char *out, *out2;
	int rc;

	rc = smtp_cmd_parse(line, size, &a, &err);
	if (rc) {
		fz_check_err(rc, &err);
		return 0;
	}
	fz_check_cmd(&a, line, size);
	out = malloc(cap);
	out2 = malloc(cap);
	n = smtp_cmd_format(&a, out, cap);
	CHECK(n < cap && strlen(out) == n);
	CHECK(smtp_cmd_format(&a, NULL, 0) == n);
	rc = smtp_cmd_parse(out, n, &b, &err);
	if (rc) {
		fprintf(stderr, "re-encoded \"%s\" failed: %d %s\n", out, err.code, err.text);
		abort();
	}
	fz_check_cmd(&b, out, n);
	CHECK(a.verb == b.verb);
	CHECK(fz_slice_eq(a.path.local, b.path.local) && fz_slice_eq(a.path.domain, b.path.domain));
	CHECK(a.path.null_path == b.path.null_path && a.path.postmaster == b.path.postmaster);
	CHECK(a.path.quoted == b.path.quoted && a.path.literal == b.path.literal);
	CHECK(a.path.utf8 == b.path.utf8);
	CHECK(a.nparams == b.nparams && a.has_size == b.has_size && a.size == b.size);
	CHECK(a.body == b.body && a.smtputf8 == b.smtputf8);
	for (size_t i = 0; i < a.nparams; i++) {
		CHECK(fz_slice_eq(a.params[i].key, b.params[i].key));
		CHECK(fz_slice_eq(a.params[i].value, b.params[i].value));
		CHECK(a.params[i].has_value == b.params[i].has_value);
	}
	if (a.verb != SMTP_VERB_MAIL && a.verb != SMTP_VERB_RCPT)
		CHECK(fz_slice_eq(a.arg, b.arg));
	/* Canonical form is a fixed point. */
	n2 = smtp_cmd_format(&b, out2, cap);
	CHECK(n2 == n && !memcmp(out, out2, n));
	free(out);
	free(out2);
	return 0;
}
