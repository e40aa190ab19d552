/* SPDX-License-Identifier: Apache-2.0 */
/* WebSocket frame codec (RFC 6455 §5.2): strict header parsing, masking
 * and header encoding; see ws.h. */
#include "proto/ws.h"

#include <string.h>

#include "base/base64.h"

static int opcode_known(unsigned op)
{
	return op == WS_OP_CONT || op == WS_OP_TEXT || op == WS_OP_BINARY || op == WS_OP_CLOSE ||
	       op == WS_OP_PING || op == WS_OP_PONG;
}

/* The payload length field at p (after the first two bytes): its value in
 * *len and the bytes it took in *extra; 0 need more, <0 refused. */
static int parse_length(const uint8_t *p, size_t n, unsigned short7, uint64_t *len, size_t *extra)
{
	if (short7 < 126) {
		*len = short7;
		*extra = 0;
		return 1;
	}
	size_t k = short7 == 126 ? 2 : 8;
	if (n < 2 + k)
		return 0;
	uint64_t v = 0;
	for (size_t i = 0; i < k; i++)
		v = (v << 8) | p[2 + i];
	if (k == 2 && v < 126)
		return WS_E_LENGTH; /* §5.2: the minimal number of bytes MUST be used */
	if (k == 8 && (v >> 63 || v <= 0xffff))
		return WS_E_LENGTH;
	*len = v;
	*extra = k;
	return 1;
}

long ws_frame_parse(const uint8_t *p, size_t n, int require_mask, uint64_t max_payload,
		    struct ws_frame *f)
{
	memset(f, 0, sizeof(*f));
	if (n < 2)
		return 0;
	if (p[0] & 0x70)
		return WS_E_RSV;
	unsigned op = p[0] & 0x0f;
	if (!opcode_known(op))
		return WS_E_OPCODE;
	f->fin = (p[0] & 0x80) != 0;
	f->opcode = (enum ws_opcode)op;
	f->masked = (p[1] & 0x80) != 0;
	if (f->masked != (require_mask != 0))
		return WS_E_MASK;
	size_t extra = 0;
	int rc = parse_length(p, n, p[1] & 0x7f, &f->payload_len, &extra);
	if (rc <= 0)
		return rc;
	if ((op & 0x8) && (!f->fin || f->payload_len > 125))
		return WS_E_CONTROL;
	if (f->payload_len > max_payload)
		return WS_E_TOO_BIG;
	f->header_len = 2 + extra + (f->masked ? 4 : 0);
	if (n < f->header_len)
		return 0;
	if (f->masked)
		memcpy(f->mask, p + 2 + extra, 4);
	if (n - f->header_len < f->payload_len)
		return 0;
	return (long)(f->header_len + f->payload_len);
}

void ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4])
{
	for (size_t i = 0; i < n; i++)
		p[i] ^= mask[i & 3];
}

size_t ws_frame_header(uint8_t out[WS_MAX_HEADER], enum ws_opcode op, uint64_t payload_len,
		       const uint8_t *mask)
{
	size_t k = 2;
	out[0] = (uint8_t)(0x80 | (op & 0x0f));
	uint8_t m = mask ? 0x80 : 0;
	if (payload_len < 126) {
		out[1] = (uint8_t)(m | payload_len);
	} else if (payload_len <= 0xffff) {
		out[1] = (uint8_t)(m | 126);
		out[2] = (uint8_t)(payload_len >> 8);
		out[3] = (uint8_t)payload_len;
		k = 4;
	} else {
		out[1] = (uint8_t)(m | 127);
		for (int i = 0; i < 8; i++)
			out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
		k = 10;
	}
	if (mask) {
		memcpy(out + k, mask, 4);
		k += 4;
	}
	return k;
}

int ws_key_valid(const char *key)
{
	unsigned char raw[18];
	size_t n = strlen(key);
	return n == 24 && base64_decode(key, n, raw, sizeof(raw)) == 16;
}

int ws_close_code(const uint8_t *p, size_t n)
{
	if (n == 0)
		return 1005;
	if (n == 1)
		return -1;
	int code = (p[0] << 8) | p[1];
	if (code < 1000 || code >= 5000 || code == 1004 || code == 1005 || code == 1006 ||
	    (code >= 1016 && code < 3000))
		return -1;
	return code;
}
