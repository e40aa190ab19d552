/* SPDX-License-Identifier: Apache-2.0 */
/* WebSocket framing (RFC 6455 §5) without I/O: parses one frame header
 * from received bytes, unmasks payloads, encodes frame headers, and checks
 * the handshake's Sec-WebSocket-Key. Only what the admin API's live
 * tracers need: text, close, ping and pong frames, no extensions, no
 * fragmentation on send (continuation frames are parsed and left to the
 * caller). The Sec-WebSocket-Accept digest (SHA-1) is computed by the
 * caller, which may use OpenSSL; this layer is libc only.
 * Callers: kumod/ctl/trace_smtp.c, tools/kcli, the fuzz driver, unit tests. */
#ifndef KUMOD_PROTO_WS_H
#define KUMOD_PROTO_WS_H

#include <stddef.h>
#include <stdint.h>

enum ws_opcode {
	WS_OP_CONT = 0x0,
	WS_OP_TEXT = 0x1,
	WS_OP_BINARY = 0x2,
	WS_OP_CLOSE = 0x8,
	WS_OP_PING = 0x9,
	WS_OP_PONG = 0xA,
};

/* Refusals (negative returns of ws_frame_parse), each a protocol error
 * that ends the connection with close code 1002 (1009 for WS_E_TOO_BIG). */
enum ws_error {
	WS_E_RSV = -1,	   /* RSV1-3 set: no extension was negotiated */
	WS_E_OPCODE = -2,  /* reserved opcode */
	WS_E_CONTROL = -3, /* control frame fragmented or over 125 bytes */
	WS_E_MASK = -4,	   /* masked when it must not be, or the reverse */
	WS_E_LENGTH = -5,  /* not the minimal length encoding, or the MSB set */
	WS_E_TOO_BIG = -6, /* payload over the caller's limit */
};

#define WS_MAX_HEADER 14 /* 2 + 8 (length) + 4 (mask) */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

struct ws_frame {
	int fin;
	enum ws_opcode opcode;
	int masked;
	uint8_t mask[4];
	size_t header_len; /* bytes before the payload */
	uint64_t payload_len;
};

/* Parses the frame starting at p[0..n). require_mask: 1 on a server (every
 * client frame is masked), 0 on a client (server frames are not).
 * Returns the whole frame's length (header + payload, > 0) when all of it
 * is in p, 0 when more bytes are needed, or a negative enum ws_error.
 * The payload is p + f->header_len, still masked. */
long ws_frame_parse(const uint8_t *p, size_t n, int require_mask, uint64_t max_payload,
		    struct ws_frame *f);

/* XORs p[0..n) with the mask (in place). */
void ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4]);

/* Writes a frame header (FIN set) into out and returns its length. mask
 * NULL: unmasked (server); else the 4 mask bytes are written and the
 * caller masks the payload with ws_unmask(). */
size_t ws_frame_header(uint8_t out[WS_MAX_HEADER], enum ws_opcode op, uint64_t payload_len,
		       const uint8_t *mask);

/* 1 when key is a valid Sec-WebSocket-Key: base64 of exactly 16 bytes. */
int ws_key_valid(const char *key);

/* The close code in a close frame's (unmasked) payload: 1005 when empty,
 * -1 when malformed (one byte, or a code RFC 6455 §7.4 forbids on the wire). */
int ws_close_code(const uint8_t *p, size_t n);

#endif
