/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `ws`: kumod/proto/ws.c (WebSocket frames as a server reads
 * them; the first byte picks server or client rules). Invariants: a complete
 * frame's length is its header plus payload and lies within the input; the
 * header re-encoded from the parsed fields (opcode, length, mask) gives back
 * the same bytes when FIN was set; a control frame is final and at most 125
 * bytes; unmasking twice restores the payload; ws_close_code stays in range. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "proto/ws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	int server = data[0] & 1;
	data++;
	size--;
	while (size) {
		struct ws_frame f;
		long rc = ws_frame_parse(data, size, server, 1 << 20, &f);
		if (rc <= 0)
			break;
		CHECK((size_t)rc == f.header_len + f.payload_len && (size_t)rc <= size);
		CHECK(f.masked == server);
		if (f.opcode & 0x8)
			CHECK(f.fin && f.payload_len <= 125);
		if (f.fin) {
			uint8_t h[WS_MAX_HEADER];
			size_t k =
			    ws_frame_header(h, f.opcode, f.payload_len, f.masked ? f.mask : NULL);
			CHECK(k == f.header_len && memcmp(h, data, k) == 0);
		}
		uint8_t *p = malloc(f.payload_len + 1);
		CHECK(p != NULL);
		memcpy(p, data + f.header_len, f.payload_len);
		ws_unmask(p, f.payload_len, f.mask);
		if (f.opcode == WS_OP_CLOSE) {
			int code = ws_close_code(p, f.payload_len);
			CHECK(code == -1 || (code >= 1000 && code < 5000));
		}
		ws_unmask(p, f.payload_len, f.mask);
		CHECK(memcmp(p, data + f.header_len, f.payload_len) == 0);
		free(p);
		data += rc;
		size -= (size_t)rc;
	}
	return 0;
}
