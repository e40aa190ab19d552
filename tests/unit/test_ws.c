/* SPDX-License-Identifier: Apache-2.0 */
/* WebSocket framing (proto/ws.c). */
#include "ctl/trace_smtp.h"
#include "proto/ws.h"
#include "test.h"

/* RFC 6455 §5.7 examples. */
TEST_IMPL(ws_rfc_examples)
{
	static const uint8_t unmasked_hello[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
	static const uint8_t masked_hello[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
					       0x7f, 0x9f, 0x4d, 0x51, 0x58};
	struct ws_frame f;
	ASSERT_EQ(ws_frame_parse(unmasked_hello, sizeof(unmasked_hello), 0, 1000, &f), 7);
	ASSERT_EQ(f.opcode, WS_OP_TEXT);
	ASSERT(f.fin && !f.masked);
	ASSERT_MEM_EQ(unmasked_hello + f.header_len, f.payload_len, "Hello", 5);
	ASSERT_EQ(ws_frame_parse(unmasked_hello, sizeof(unmasked_hello), 1, 1000, &f), WS_E_MASK);
	ASSERT_EQ(ws_frame_parse(masked_hello, sizeof(masked_hello), 1, 1000, &f), 11);
	uint8_t pl[5];
	memcpy(pl, masked_hello + f.header_len, 5);
	ws_unmask(pl, 5, f.mask);
	ASSERT_MEM_EQ(pl, 5, "Hello", 5);
	/* every prefix needs more */
	for (size_t i = 0; i < sizeof(masked_hello); i++)
		ASSERT_EQ(ws_frame_parse(masked_hello, i, 1, 1000, &f), 0);
}

TEST_IMPL(ws_refusals)
{
	static const struct {
		const char *name;
		uint8_t in[12];
		size_t n;
		long want;
	} cases[] = {
	    {"rsv1", {0xc1, 0x80, 0, 0, 0, 0}, 6, WS_E_RSV},
	    {"opcode 3", {0x83, 0x80, 0, 0, 0, 0}, 6, WS_E_OPCODE},
	    {"fragmented ping", {0x09, 0x80, 0, 0, 0, 0}, 6, WS_E_CONTROL},
	    {"long close", {0x88, 0xfe, 0x00, 0x80}, 4, WS_E_CONTROL},
	    {"non-minimal 16", {0x81, 0xfe, 0x00, 0x05}, 4, WS_E_LENGTH},
	    {"non-minimal 64", {0x81, 0xff, 0, 0, 0, 0, 0, 0, 0x01, 0x00}, 10, WS_E_LENGTH},
	    {"msb 64", {0x81, 0xff, 0x80, 0, 0, 0, 0, 1, 0, 0}, 10, WS_E_LENGTH},
	    {"over limit", {0x81, 0xfe, 0x10, 0x00}, 4, WS_E_TOO_BIG},
	    {"ok empty pong", {0x8a, 0x80, 1, 2, 3, 4}, 6, 6},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct ws_frame f;
		long rc = ws_frame_parse(cases[i].in, cases[i].n, 1, 1024, &f);
		if (rc != cases[i].want)
			TEST_FAIL("%s: got %ld want %ld", cases[i].name, rc, cases[i].want);
	}
}

TEST_IMPL(ws_header_roundtrip)
{
	static const uint64_t lens[] = {0, 1, 125, 126, 65535, 65536, 1u << 20};
	static const uint8_t mask[4] = {1, 2, 3, 4};
	for (size_t i = 0; i < ARRAY_SIZE(lens); i++) {
		for (int m = 0; m < 2; m++) {
			uint8_t h[WS_MAX_HEADER];
			size_t k = ws_frame_header(h, WS_OP_TEXT, lens[i], m ? mask : NULL);
			struct ws_frame f;
			/* header only: the parser asks for the payload unless it is empty */
			long rc = ws_frame_parse(h, k, m, UINT64_MAX, &f);
			ASSERT_EQ(rc, lens[i] ? 0 : (long)k);
			ASSERT_EQ(f.payload_len, lens[i]);
			ASSERT_EQ(f.header_len, k);
			ASSERT_EQ(f.masked, m);
		}
	}
}

TEST_IMPL(ws_key_and_close)
{
	ASSERT(ws_key_valid("dGhlIHNhbXBsZSBub25jZQ=="));
	ASSERT(!ws_key_valid("dGhlIHNhbXBsZSBub25jZQ="));
	ASSERT(!ws_key_valid("aGVsbG8="));
	ASSERT(!ws_key_valid(""));
	static const uint8_t normal[] = {0x03, 0xe8, 'b', 'y', 'e'};
	static const uint8_t bad[] = {0x03, 0xed};
	ASSERT_EQ(ws_close_code(normal, sizeof(normal)), 1000);
	ASSERT_EQ(ws_close_code(normal, 0), 1005);
	ASSERT_EQ(ws_close_code(normal, 1), -1);
	ASSERT_EQ(ws_close_code(bad, 2), -1);
}

/* RFC 6455 §1.3: the handshake's worked example. */
TEST_IMPL(ws_accept_key_rfc)
{
	char out[32];
	trace_smtp_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out);
	ASSERT_STR_EQ(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}
