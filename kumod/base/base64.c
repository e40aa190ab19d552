/* SPDX-License-Identifier: Apache-2.0 */
/* Base64 encoder, strict decoder and lenient decoder (RFC 4648 section 4). */
#include "base/base64.h"

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void base64_encode(struct buf *out, const void *p, size_t n)
{
	const unsigned char *s = p;
	size_t i = 0;
	buf_reserve(out, (n + 2) / 3 * 4);
	for (; i + 3 <= n; i += 3) {
		unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8 | s[i + 2];
		char q[4] = {b64_alphabet[v >> 18], b64_alphabet[(v >> 12) & 63],
			     b64_alphabet[(v >> 6) & 63], b64_alphabet[v & 63]};
		buf_append(out, q, 4);
	}
	if (i == n)
		return;
	unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0);
	char q[4] = {b64_alphabet[v >> 18], b64_alphabet[(v >> 12) & 63],
		     i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=', '='};
	buf_append(out, q, 4);
}

static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

long base64_decode(const char *s, size_t n, unsigned char *out, size_t outlen)
{
	if (n == 0 || n % 4 != 0)
		return -1;
	size_t pad = (s[n - 1] == '=') + (s[n - 1] == '=' && s[n - 2] == '=');
	size_t len = n / 4 * 3 - pad;
	if (len > outlen)
		return -1;
	size_t o = 0;
	for (size_t i = 0; i < n; i += 4) {
		unsigned v = 0;
		for (size_t k = 0; k < 4; k++) {
			int d = i + k >= n - pad ? 0 : b64_value(s[i + k]);
			if (d < 0)
				return -1;
			v = v << 6 | (unsigned)d;
		}
		unsigned char b[3] = {(unsigned char)(v >> 16), (unsigned char)(v >> 8),
				      (unsigned char)v};
		for (size_t k = 0; k < 3 && o < len; k++)
			out[o++] = b[k];
		/* canonical: the bits dropped by the padding are zero */
		if (i + 4 == n && ((pad == 1 && (v & 0xff)) || (pad == 2 && (v & 0xffff))))
			return -1;
	}
	return (long)len;
}

/* url_too: '-' and '_' count as '+' and '/' (RFC 4648 section 5). */
static void decode_lenient(const char *s, size_t n, int url_too, struct buf *out)
{
	unsigned acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n && s[i] != '='; i++) {
		int v = url_too && s[i] == '-' ? 62 : url_too && s[i] == '_' ? 63 : b64_value(s[i]);
		if (v < 0)
			continue;
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			buf_appendc(out, (char)((acc >> bits) & 0xff));
		}
	}
}

void base64_decode_lenient(const char *s, size_t n, struct buf *out)
{
	decode_lenient(s, n, 0, out);
}

void base64_decode_lenient_any(const char *s, size_t n, struct buf *out)
{
	decode_lenient(s, n, 1, out);
}

int hex_digit_value(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}
