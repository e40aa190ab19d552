/* SPDX-License-Identifier: Apache-2.0 */
/* normalize_smtp_response: durations folded first, bracket punctuation turned into spaces,
 * then each whitespace-separated word run through KumoMTA's classifiers in its order
 * (dictionary, duration, RFC 3339 timestamp, UUID, hash, IP address, base64, email, then
 * `lhs=rhs` with the right-hand side classified again). Written from KumoMTA's documented
 * behaviour and test cases; its regular expressions are hand-written matchers here. */
#include "proto/smtp_normalize.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/xalloc.h"

/* --- the word set ---------------------------------------------------------------- */

struct smtp_norm_dict {
	char *arena; /* words, each NUL-terminated */
	size_t arena_len, arena_cap;
	uint32_t *slots; /* arena offset + 1; 0 = empty */
	size_t nslots, count;
};

static uint64_t word_hash(const char *w, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)w[i]) * 1099511628211ull;
	return h;
}

static size_t *probe(const struct smtp_norm_dict *d, const char *w, size_t n, size_t *slot)
{
	size_t mask = d->nslots - 1;
	for (size_t i = word_hash(w, n) & mask;; i = (i + 1) & mask) {
		uint32_t v = d->slots[i];
		if (!v) {
			*slot = i;
			return NULL;
		}
		const char *s = d->arena + v - 1;
		if (!strncmp(s, w, n) && !s[n]) {
			*slot = i;
			return slot;
		}
	}
}

static void dict_add(struct smtp_norm_dict *d, const char *w, size_t n)
{
	size_t slot;
	if (!n || n > 200 || probe(d, w, n, &slot))
		return;
	if (d->arena_len + n + 1 > d->arena_cap) {
		d->arena_cap = (d->arena_len + n + 1) * 2;
		d->arena = xrealloc(d->arena, d->arena_cap);
	}
	memcpy(d->arena + d->arena_len, w, n);
	d->arena[d->arena_len + n] = 0;
	d->slots[slot] = (uint32_t)d->arena_len + 1;
	d->arena_len += n + 1;
	d->count++;
}

/* The word and, when it starts with a lower-case ASCII letter, its title-case form. */
static void dict_add_word(struct smtp_norm_dict *d, const char *w, size_t n)
{
	dict_add(d, w, n);
	if (n && w[0] >= 'a' && w[0] <= 'z' && n <= 200) {
		char t[201];
		memcpy(t, w, n);
		t[0] = (char)(t[0] - 'a' + 'A');
		dict_add(d, t, n);
	}
}

struct smtp_norm_dict *smtp_norm_dict_new(const char *text, size_t len)
{
	/* KumoMTA adds these: SMTP verbs that look like base64, acronyms in both cases */
	static const char *const extra[] = {"SpamCop", "ehlo", "helo", "rcpt", "smtp", "vrfy"};
	static const char *const acronyms[] = {"arc", "bimi",  "dkim", "dmarc", "dns", "rbl",
					       "spf", "surbl", "uuid", "esmtp", "lmtp"};
	struct smtp_norm_dict *d = xcalloc(1, sizeof(*d));
	size_t lines = 64;
	for (size_t i = 0; i < len; i++)
		lines += text[i] == '\n';
	d->nslots = 1024;
	while (d->nslots < lines * 4)
		d->nslots *= 2;
	d->slots = xcalloc(d->nslots, sizeof(*d->slots));
	for (size_t p = 0; p < len;) {
		size_t e = p;
		while (e < len && text[e] != '\n')
			e++;
		size_t n = e - p;
		if (n && text[p + n - 1] == '\r')
			n--;
		dict_add_word(d, text + p, n);
		p = e + 1;
	}
	for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++)
		dict_add_word(d, extra[i], strlen(extra[i]));
	for (size_t i = 0; i < sizeof(acronyms) / sizeof(acronyms[0]); i++) {
		char up[16];
		size_t n = strlen(acronyms[i]);
		for (size_t k = 0; k <= n; k++)
			up[k] = (char)(acronyms[i][k] >= 'a' && acronyms[i][k] <= 'z'
					   ? acronyms[i][k] - 'a' + 'A'
					   : acronyms[i][k]);
		dict_add(d, acronyms[i], n);
		dict_add(d, up, n);
	}
	return d;
}

void smtp_norm_dict_free(struct smtp_norm_dict *d)
{
	if (!d)
		return;
	free(d->arena);
	free(d->slots);
	free(d);
}

size_t smtp_norm_dict_size(const struct smtp_norm_dict *d)
{
	return d->count;
}

int smtp_norm_dict_has(const struct smtp_norm_dict *d, const char *word, size_t len)
{
	size_t slot;
	return d && len && probe(d, word, len, &slot) != NULL;
}

/* --- character classes ---------------------------------------------------------- */

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_hex(char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int is_ascii_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r';
}

/* Rust's \w for our purposes: ASCII alphanumerics, '_' and any non-ASCII byte. */
static int is_word_char(char c)
{
	return is_alpha(c) || is_digit(c) || c == '_' || (unsigned char)c >= 0x80;
}

static int is_ascii_punct(char c)
{
	return (c >= 0x21 && c <= 0x2f) || (c >= 0x3a && c <= 0x40) || (c >= 0x5b && c <= 0x60) ||
	       (c >= 0x7b && c <= 0x7e);
}

/* Digits in w[*p..n): how many (at most max, 0 = unbounded) were read. */
static size_t digits(const char *w, size_t n, size_t *p, size_t max)
{
	size_t s = *p;
	while (*p < n && is_digit(w[*p]) && (!max || *p - s < max))
		(*p)++;
	return *p - s;
}

static unsigned num(const char *w, size_t n)
{
	unsigned v = 0;
	for (size_t i = 0; i < n; i++)
		v = v * 10 + (unsigned)(w[i] - '0');
	return v;
}

/* --- classifiers ------------------------------------------------------------------ */

/* ISO 8601 duration: P[nY][nM][nW][nD][T[nH][nM][nS]], n = digits[.digits]. */
static int iso_group(const char *w, size_t n, size_t *p, char designator)
{
	size_t q = *p;
	if (!digits(w, n, &q, 0))
		return 0;
	if (q < n && w[q] == '.') {
		q++;
		if (!digits(w, n, &q, 0))
			return 0;
	}
	if (q >= n || w[q] != designator)
		return 0;
	*p = q + 1;
	return 1;
}

static int is_iso_duration(const char *w, size_t n)
{
	if (!n || w[0] != 'P')
		return 0;
	size_t p = 1;
	for (const char *g = "YMWD"; *g; g++)
		iso_group(w, n, &p, *g);
	if (p < n && w[p] == 'T') {
		p++;
		for (const char *g = "HMS"; *g; g++)
			iso_group(w, n, &p, *g);
	}
	return p == n;
}

static int fixed_num(const char *w, size_t n, size_t *p, size_t width, unsigned *v)
{
	size_t s = *p;
	if (digits(w, n, p, width) != width)
		return 0;
	*v = num(w + s, width);
	return 1;
}

static int lit(const char *w, size_t n, size_t *p, char c)
{
	if (*p < n && w[*p] == c) {
		(*p)++;
		return 1;
	}
	return 0;
}

static unsigned days_in(unsigned y, unsigned m)
{
	static const unsigned dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	return m == 2 && leap ? 29 : dm[m - 1];
}

/* RFC 3339: YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM), a real date. */
static int is_timestamp(const char *w, size_t n)
{
	size_t p = 0;
	unsigned y, mo, d, h, mi, s, oh, om;
	if (!fixed_num(w, n, &p, 4, &y) || !lit(w, n, &p, '-') || !fixed_num(w, n, &p, 2, &mo) ||
	    !lit(w, n, &p, '-') || !fixed_num(w, n, &p, 2, &d))
		return 0;
	if (!lit(w, n, &p, 'T') && !lit(w, n, &p, 't'))
		return 0;
	if (!fixed_num(w, n, &p, 2, &h) || !lit(w, n, &p, ':') || !fixed_num(w, n, &p, 2, &mi) ||
	    !lit(w, n, &p, ':') || !fixed_num(w, n, &p, 2, &s))
		return 0;
	if (lit(w, n, &p, '.') && !digits(w, n, &p, 0))
		return 0;
	if (!lit(w, n, &p, 'Z') && !lit(w, n, &p, 'z')) {
		if (!lit(w, n, &p, '+') && !lit(w, n, &p, '-'))
			return 0;
		if (!fixed_num(w, n, &p, 2, &oh) || !lit(w, n, &p, ':') ||
		    !fixed_num(w, n, &p, 2, &om) || oh > 23 || om > 59)
			return 0;
	}
	return p == n && mo >= 1 && mo <= 12 && d >= 1 && d <= days_in(y, mo) && h <= 23 &&
	       mi <= 59 && s <= 60;
}

/* 8-4-4-4-12 hex with hyphens at w[0..36). */
static int hyphenated_uuid(const char *w)
{
	for (size_t i = 0; i < 36; i++) {
		int dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? w[i] != '-' : !is_hex(w[i]))
			return 0;
	}
	return 1;
}

/* The forms the uuid crate parses: simple, hyphenated, braced, urn. */
static int is_uuid(const char *w, size_t n)
{
	if (n == 32) {
		for (size_t i = 0; i < 32; i++)
			if (!is_hex(w[i]))
				return 0;
		return 1;
	}
	if (n == 36)
		return hyphenated_uuid(w);
	if (n == 38)
		return w[0] == '{' && w[37] == '}' && hyphenated_uuid(w + 1);
	if (n == 45)
		return !strncmp(w, "urn:uuid:", 9) && hyphenated_uuid(w + 9);
	return 0;
}

/* At least 8 characters of [A-Za-z0-9._-], more than 2 letters and more than 2 digits. */
static int is_hash(const char *w, size_t n)
{
	size_t alpha = 0, digit = 0;
	if (n < 8)
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (is_alpha(w[i]))
			alpha++;
		else if (is_digit(w[i]))
			digit++;
		else if (w[i] != '-' && w[i] != '.' && w[i] != '_')
			return 0;
	}
	return alpha > 2 && digit > 2;
}

static int is_v6(const char *w, size_t n)
{
	char buf[64];
	unsigned char a[16];
	if (n >= sizeof(buf))
		return 0;
	memcpy(buf, w, n);
	buf[n] = 0;
	char *pct = strchr(buf, '%');
	if (pct) { /* fe80::1%eth0 */
		if (strncmp(buf, "fe80:", 5) != 0 || !pct[1])
			return 0;
		for (char *z = pct + 1; *z; z++)
			if (!is_alpha(*z) && !is_digit(*z))
				return 0;
		*pct = 0;
	}
	return inet_pton(AF_INET6, buf, a) == 1;
}

static int is_v4_dotted(const char *w, size_t n)
{
	size_t p = 0;
	for (int i = 0; i < 4; i++) {
		if (i && !lit(w, n, &p, '.'))
			return 0;
		size_t k = digits(w, n, &p, 0);
		if (k < 1 || k > 3)
			return 0;
	}
	return p == n;
}

static int is_ip_only(const char *w, size_t n)
{
	return is_v4_dotted(w, n) || is_v6(w, n);
}

/* An IPv4 or IPv6 address, optionally followed by ":port" (or "::port"). */
static int is_ip(const char *w, size_t n)
{
	if (is_ip_only(w, n))
		return 1;
	size_t e = n;
	while (e > 0 && is_digit(w[e - 1]))
		e--;
	if (e == n || n - e > 5 || e == 0 || w[e - 1] != ':')
		return 0;
	e--;
	if (is_ip_only(w, e))
		return 1;
	return e > 0 && w[e - 1] == ':' && is_ip_only(w, e - 1);
}

static int b64_char(char c)
{
	return is_alpha(c) || is_digit(c) || c == '+' || c == '/' || c == '_' || c == '-';
}

/* One or more groups of 4 base64/base64url characters, then optionally "xx==" or "xxx=". */
static int is_base64(const char *w, size_t n)
{
	size_t body = n;
	if (n >= 2 && w[n - 1] == '=' && w[n - 2] == '=')
		body = n - 2;
	else if (n >= 1 && w[n - 1] == '=')
		body = n - 1;
	for (size_t i = 0; i < body; i++)
		if (!b64_char(w[i]))
			return 0;
	if (body == n)
		return n >= 4 && n % 4 == 0;
	/* the padded group: 2 chars + "==" or 3 chars + "=", after at least one full group */
	size_t pad = n - body;
	return body % 4 == 4 - pad && body >= 4 + (4 - pad);
}

static int atext(char c)
{
	return (c >= 'a' && c <= 'z') || is_digit(c) || (c && strchr("!#$%&'*+/=?^_`{|}~-", c));
}

/* Lower-case dot-atom or quoted local part, '@', lower-case host name of two or more labels
 * or an IPv4 literal: the cases of KumoMTA's email expression. */
static int is_email(const char *w, size_t n)
{
	size_t p = 0;
	if (n && w[0] == '"') {
		for (p = 1; p < n && w[p] != '"'; p++) {
			unsigned char c = (unsigned char)w[p];
			if (c == '\\') {
				p++;
				if (p >= n || !w[p] || w[p] == '\n' || w[p] == '\r' ||
				    (unsigned char)w[p] > 0x7f)
					return 0;
			} else if (!c || c == '\t' || c == '\n' || c == '\r' || c == ' ' ||
				   c > 0x7f) {
				return 0;
			}
		}
		if (p >= n)
			return 0;
		p++;
	} else {
		size_t start = 0;
		for (; p < n && w[p] != '@'; p++) {
			if (w[p] == '.') {
				if (p == start || p + 1 >= n || w[p + 1] == '.' || w[p + 1] == '@')
					return 0;
				start = p + 1;
			} else if (!atext(w[p])) {
				return 0;
			}
		}
		if (p == 0)
			return 0;
	}
	if (!lit(w, n, &p, '@'))
		return 0;
	if (p < n && w[p] == '[') { /* [d.d.d.d], each 0-255 */
		p++;
		for (int i = 0; i < 4; i++) {
			if (i && !lit(w, n, &p, '.'))
				return 0;
			size_t s = p, k = digits(w, n, &p, 3);
			if (!k || (k > 1 && w[s] == '0') || num(w + s, k) > 255)
				return 0;
		}
		return lit(w, n, &p, ']') && p == n;
	}
	size_t labels = 0;
	while (p < n) {
		size_t s = p;
		while (p < n && ((w[p] >= 'a' && w[p] <= 'z') || is_digit(w[p]) || w[p] == '-'))
			p++;
		if (p == s || w[s] == '-' || w[p - 1] == '-')
			return 0;
		labels++;
		if (p < n && !lit(w, n, &p, '.'))
			return 0;
		if (p == n && w[n - 1] == '.')
			return 0;
	}
	return labels >= 2;
}

/* --- words -------------------------------------------------------------------------- */

static const char DURATION_MARK[] = "__DURATION__";

/* The token for w, or NULL; *keep set when w stays as it is (a dictionary word). */
static const char *classify(const struct smtp_norm_dict *d, const char *w, size_t n, int *keep)
{
	*keep = 0;
	if (smtp_norm_dict_has(d, w, n)) {
		*keep = 1;
		return NULL;
	}
	if ((n == sizeof(DURATION_MARK) - 1 && !memcmp(w, DURATION_MARK, n)) ||
	    is_iso_duration(w, n))
		return "{duration}";
	if (is_timestamp(w, n))
		return "{timestamp}";
	if (is_uuid(w, n))
		return "{uuid}";
	if (is_hash(w, n))
		return "{hash}";
	if (is_ip(w, n))
		return "{ipaddr}";
	if (is_base64(w, n))
		return "{base64}";
	if (is_email(w, n))
		return "{email}";
	return NULL;
}

/* Appends the normalised word: classified, or split at '=' and its right-hand side tried
 * again (iteratively: KumoMTA recurses), else as it is. */
static size_t put_word(const struct smtp_norm_dict *d, const char *w, size_t n, char *out)
{
	size_t off = 0;
	for (;;) {
		int keep;
		const char *tok = classify(d, w + off, n - off, &keep);
		if (tok || keep) {
			memcpy(out, w, off);
			if (keep) {
				memcpy(out + off, w + off, n - off);
				return n;
			}
			size_t tl = strlen(tok);
			memcpy(out + off, tok, tl);
			return off + tl;
		}
		const char *eq = memchr(w + off, '=', n - off);
		if (!eq)
			break;
		off = (size_t)(eq - w) + 1;
	}
	memcpy(out, w, n);
	return n;
}

/* --- passes over the text ----------------------------------------------------------- */

/* One "<digits><unit>" at s[*p] followed by a non-word character or the end. */
static int duration_elem(const char *s, size_t n, size_t *p)
{
	static const char *const units[] = {"ns", "us",	 "ms",	  "s",	 "m",
					    "h",  "day", "month", "year"};
	size_t q = *p;
	if (!digits(s, n, &q, 0))
		return 0;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		size_t ul = strlen(units[i]);
		if (q + ul <= n && !memcmp(s + q, units[i], ul) &&
		    (q + ul == n || !is_word_char(s[q + ul]))) {
			*p = q + ul;
			return 1;
		}
	}
	return 0;
}

/* Runs like "11s 999ms 990us" starting at a word boundary become DURATION_MARK. */
static size_t fold_durations(const char *s, size_t n, char *out)
{
	size_t w = 0;
	for (size_t i = 0; i < n;) {
		size_t end = i;
		if (is_digit(s[i]) && (i == 0 || !is_word_char(s[i - 1])) &&
		    duration_elem(s, n, &end)) {
			for (;;) {
				size_t q = end;
				while (q < n && is_ascii_ws(s[q]))
					q++;
				if (q == end || !duration_elem(s, n, &q))
					break;
				end = q;
			}
			memcpy(out + w, DURATION_MARK, sizeof(DURATION_MARK) - 1);
			w += sizeof(DURATION_MARK) - 1;
			i = end;
			continue;
		}
		out[w++] = s[i++];
	}
	return w;
}

/* KumoMTA's bracket pass (only when an opening bracket is present): whitespace (or the very
 * first character) before an opening bracket, and a closing bracket with the punctuation or
 * space after it, each become one space. */
static size_t strip_brackets(const char *s, size_t n, char *out)
{
	size_t w = 0;
	if (!memchr(s, '[', n) && !memchr(s, '(', n) && !memchr(s, '{', n)) {
		memcpy(out, s, n);
		return n;
	}
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		int next_open =
		    i + 1 < n && (s[i + 1] == '[' || s[i + 1] == '(' || s[i + 1] == '{');
		if ((is_ascii_ws(c) || w == 0) && next_open) {
			i++;
			out[w++] = ' ';
			continue;
		}
		if ((c == ']' || c == ')' || c == '}') &&
		    (i + 1 >= n || is_ascii_ws(s[i + 1]) || is_ascii_punct(s[i + 1]))) {
			i++;
			out[w++] = ' ';
			continue;
		}
		out[w++] = c;
	}
	return w;
}

size_t smtp_normalize_max(size_t len)
{
	/* a one-byte word ("P") can become an 11-byte token; the passes before never grow
	 * the text by more (a 2-byte duration becomes the 12-byte mark, then 10 bytes) */
	return len * 12 + 16;
}

size_t smtp_normalize(const char *in, size_t len, const struct smtp_norm_dict *d, char *out)
{
	char *a = xmalloc(len * 6 + 16), *b = xmalloc(len * 6 + 16);
	size_t n = fold_durations(in, len, a);
	n = strip_brackets(a, n, b);
	size_t w = 0;
	for (size_t i = 0; i < n;) {
		while (i < n && is_ascii_ws(b[i]))
			i++;
		size_t s = i;
		while (i < n && !is_ascii_ws(b[i]))
			i++;
		if (i == s)
			break;
		if (w)
			out[w++] = ' ';
		w += put_word(d, b + s, i - s, out + w);
	}
	out[w] = 0;
	free(a);
	free(b);
	return w;
}
