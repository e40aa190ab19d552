/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `smtp_normalize`: normalize_smtp_response (proto/smtp_normalize.c) over
 * any bytes, with a small dictionary. Invariants:
 *  - the output fits smtp_normalize_max(), is NUL-terminated at the returned length, has no
 *    ASCII whitespace but single spaces between words, and none at either end;
 *  - it has no more words than the input has whitespace-separated runs (durations fold
 *    several into one; nothing splits a word);
 *  - a word that has no ASCII whitespace, brackets, digits, '=' or ':' and is in the
 *    dictionary comes back unchanged. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/smtp_normalize.h"
#include "fuzz_check.h"

static const char WORDS[] = "hello\nmail\nrejected\nduration\nuser\n";

static size_t count_words(const char *s, size_t n)
{
	size_t words = 0;
	for (size_t i = 0; i < n; i++) {
		int ws =
		    s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\f' || s[i] == '\r';
		int prev_ws = i == 0 || s[i - 1] == ' ' || s[i - 1] == '\t' || s[i - 1] == '\n' ||
			      s[i - 1] == '\f' || s[i - 1] == '\r';
		words += !ws && prev_ws;
	}
	return words;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct smtp_norm_dict *d;
	if (!d)
		d = smtp_norm_dict_new(WORDS, sizeof(WORDS) - 1);
	if (size > 4096)
		return 0;
	size_t cap = smtp_normalize_max(size);
	char *out = malloc(cap);
	size_t n = smtp_normalize((const char *)data, size, d, out);
	CHECK(n < cap && out[n] == 0);
	for (size_t i = 0; i < n; i++) {
		CHECK(out[i] != '\t' && out[i] != '\n' && out[i] != '\r' && out[i] != '\f');
		if (out[i] == ' ')
			CHECK(i > 0 && i + 1 < n && out[i + 1] != ' ');
	}
	/* brackets can only remove or keep word boundaries' count as the input's runs plus
	 * the spaces they insert: compare with the bracket-free case only */
	if (!memchr(data, '[', size) && !memchr(data, '(', size) && !memchr(data, '{', size))
		CHECK(count_words(out, n) <= count_words((const char *)data, size));
	if (size && size <= 200 && smtp_norm_dict_has(d, (const char *)data, size))
		CHECK(n == size && !memcmp(out, data, size));
	free(out);
	return 0;
}
