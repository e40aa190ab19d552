/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `address`: smtp_path_parse() under both SMTPUTF8 settings. Invariants:
 * consumed <= len, slices inside the consumed span, consistent null/postmaster flags, ASCII-only
 * results without SMTPUTF8 (and then identical results with it), valid UTF-8 with it, formatted
 * mailboxes free of CR/LF/NUL, and "<" mailbox ">" re-parses to the same mailbox.
 * Input: byte 0 bit 0 picks sender (1) or recipient (0); the rest is the path. */
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

static int fz_ieq(struct smtp_slice s, const char *lit)
{
	if (s.len != strlen(lit))
		return 0;
	for (size_t i = 0; i < s.len; i++) {
		char c = s.p[i];
		if (c >= 'A' && c <= 'Z')
			c += 32;
		if (c != lit[i])
			return 0;
	}
	return 1;
}

/* Reference grammar for the plain ASCII subset, written independently of the parser. */
static int ref_alnum(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* LDH domain: labels 1..63, no leading or trailing hyphen, <= 255 octets. */
static int ref_domain(const char *p, size_t n)
{
	size_t start = 0;

	if (n == 0 || n > 255)
		return 0;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && p[i] != '.') {
			if (!ref_alnum(p[i]) && p[i] != '-')
				return 0;
			continue;
		}
		size_t l = i - start;
		if (l == 0 || l > 63 || p[start] == '-' || p[i - 1] == '-')
			return 0;
		start = i + 1;
	}
	return 1;
}

/* Dot-string of RFC 5322 atext. */
static int ref_dot_string(const char *p, size_t n)
{
	if (n == 0 || p[0] == '.' || p[n - 1] == '.')
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '.') {
			if (p[i + 1] == '.')
				return 0;
		} else if (!ref_alnum(p[i]) && !strchr("!#$%&'*+-/=?^_`{|}~", p[i])) {
			return 0;
		}
	}
	return 1;
}

/* Both directions on "<local@domain>" with an unquoted local part and a non-literal ASCII
 * domain: the parser accepts exactly when the reference does, with the same slices. */
static void ref_compare(const char *s, size_t len, int is_sender, int rc,
			const struct smtp_mailbox *mb, size_t used)
{
	const char *at;

	if (len < 4 || s[0] != '<' || s[len - 1] != '>' || s[1] == '"' || s[1] == '@')
		return;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 33 || (unsigned char)s[i] > 126)
			return;
	if (memchr(s, '>', len - 1))
		return; /* the path ends at the first '>'; the caller judges what follows */
	at = memchr(s + 1, '@', len - 2);
	if (!at || at[1] == '[')
		return;
	size_t ll = (size_t)(at - (s + 1)), dl = len - 2 - ll - 1;
	int want = ref_dot_string(s + 1, ll) && ref_domain(at + 1, dl);
	if (want != (rc == 0)) {
		fprintf(stderr, "reference %s \"%.*s\"\n", want ? "accepts" : "refuses", (int)len,
			s);
		abort();
	}
	if (want) {
		CHECK(used == len && mb->local.p == s + 1 && mb->local.len == ll);
		CHECK(mb->domain.p == at + 1 && mb->domain.len == dl);
	}
	(void)is_sender;
}

/* One parse; returns rc and checks everything that holds on its own. */
static int fz_parse(const char *s, size_t len, int is_sender, int utf8, struct smtp_mailbox *mb,
		    size_t *used)
{
	struct smtp_reply_err err = {0, NULL, NULL};
	char fmt[1200];
	int rc = smtp_path_parse(s, len, is_sender, utf8, mb, used, &err);

	CHECK(*used <= len);
	if (rc) {
		CHECK(rc == -EINVAL && *used == 0);
		CHECK(err.code == 500 || err.code == 501 || err.code == 553);
		CHECK(err.enhanced && err.text);
		if (err.code == 553)
			CHECK(!utf8);
		return rc;
	}
	CHECK(*used > 0);
	CHECK(fz_slice_in(mb->local, s, *used) && fz_slice_in(mb->domain, s, *used));
	CHECK(!(mb->null_path && mb->postmaster));
	if (s[0] == '<')
		CHECK(s[*used - 1] == '>');
	else
		CHECK(*used == len || s[*used] == ' ');
	if (mb->null_path)
		CHECK(is_sender && *used == 2 && !mb->local.len && !mb->domain.len);
	if (mb->postmaster)
		CHECK(!is_sender && !mb->domain.len && fz_ieq(mb->local, "postmaster"));
	if (!mb->null_path && !mb->postmaster) {
		CHECK(mb->local.len && mb->domain.len);
		if (!mb->utf8 && !mb->quoted)
			CHECK(ref_dot_string(mb->local.p, mb->local.len));
		if (!mb->utf8 && !mb->literal)
			CHECK(ref_domain(mb->domain.p, mb->domain.len));
	}
	for (size_t i = 0; i < *used; i++) {
		unsigned char c = (unsigned char)s[i];
		CHECK(c >= 32 && c != 127);
		if (!utf8)
			CHECK(c < 0x80);
	}
	if (!utf8)
		CHECK(!mb->utf8);
	CHECK(smtp_utf8_valid(s, *used));
	size_t n = smtp_mailbox_format(mb, fmt, sizeof(fmt));
	CHECK(smtp_mailbox_format(mb, NULL, 0) == n);
	if (n < sizeof(fmt)) {
		CHECK(strlen(fmt) == n);
		CHECK(!memchr(fmt, '\r', n) && !memchr(fmt, '\n', n));
	}
	return 0;
}

/* "<" mailbox ">" parses again to the same mailbox. */
static void fz_reparse(const struct smtp_mailbox *mb, int is_sender, int utf8)
{
	char buf[1200];
	struct smtp_mailbox mb2;
	struct smtp_reply_err err;
	size_t n, used;

	if (mb->postmaster) {
		n = (size_t)snprintf(buf, sizeof(buf), "<%.*s>", (int)mb->local.len, mb->local.p);
	} else {
		buf[0] = '<';
		n = 1 + smtp_mailbox_format(mb, buf + 1, sizeof(buf) - 2);
		if (n + 1 >= sizeof(buf))
			return;
		buf[n++] = '>';
	}
	if (smtp_path_parse(buf, n, is_sender, utf8, &mb2, &used, &err)) {
		fprintf(stderr, "reparse of \"%.*s\" failed: %d %s\n", (int)n, buf, err.code,
			err.text);
		abort();
	}
	CHECK(used == n);
	CHECK(fz_slice_eq(mb->local, mb2.local) && fz_slice_eq(mb->domain, mb2.domain));
	CHECK(mb->null_path == mb2.null_path && mb->postmaster == mb2.postmaster);
	CHECK(mb->quoted == mb2.quoted && mb->literal == mb2.literal && mb->utf8 == mb2.utf8);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_mailbox m0, m1;
	size_t u0, u1;
	int r0, r1, is_sender;

	if (size < 1)
		return 0;
	is_sender = data[0] & 1;
	const char *s = (const char *)data + 1;
	size_t len = size - 1;

	r0 = fz_parse(s, len, is_sender, 0, &m0, &u0);
	r1 = fz_parse(s, len, is_sender, 1, &m1, &u1);
	ref_compare(s, len, is_sender, r0, &m0, u0);
	/* Allowing UTF-8 never changes an ASCII-only result. */
	if (r0 == 0) {
		CHECK(r1 == 0 && u0 == u1);
		CHECK(fz_slice_eq(m0.local, m1.local) && fz_slice_eq(m0.domain, m1.domain));
		CHECK(m0.null_path == m1.null_path && m0.postmaster == m1.postmaster);
		CHECK(m0.quoted == m1.quoted && m0.literal == m1.literal && !m1.utf8);
		fz_reparse(&m0, is_sender, 0);
	}
	if (r1 == 0)
		fz_reparse(&m1, is_sender, 1);
	return 0;
}
