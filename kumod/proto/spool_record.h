/* SPDX-License-Identifier: Apache-2.0 */
/* Self-validating spool file format: one record per file, a fixed header
 * (magic, version, kind, message id, payload length), the payload, a CRC-32
 * of header and payload and an end marker. A torn, truncated, bit-flipped or
 * misfiled record never decodes. Pure: bytes in, views out, no I/O, no
 * allocation (except spool_record_encode's output buffer).
 * Callers: kumod/spool (writer and recovery), fuzz/fuzz_spool_record.c.
 *
 * Layout (integers little-endian, docs/spool.md):
 *   0  4  magic "KSPL"
 *   4  1  version (1)
 *   5  1  kind: 'D' data (RFC 5322 bytes) or 'M' meta (JSON)
 *   6  2  reserved, zero
 *   8 32  message id, 32 lowercase hex characters
 *  40  8  payload length N
 *  48  N  payload
 * 48+N 4  CRC-32 (zlib polynomial) of bytes 0 .. 48+N-1
 * 52+N 4  end marker "KEND"
 */
#ifndef KUMOD_PROTO_SPOOL_RECORD_H
#define KUMOD_PROTO_SPOOL_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

#define SPOOL_RECORD_VERSION 1
#define SPOOL_RECORD_ID_LEN 32
#define SPOOL_RECORD_HEADER_LEN 48
#define SPOOL_RECORD_TRAILER_LEN 8
#define SPOOL_RECORD_OVERHEAD (SPOOL_RECORD_HEADER_LEN + SPOOL_RECORD_TRAILER_LEN)

enum spool_record_kind {
	SPOOL_RECORD_ANY = 0, /* decode: accept either kind */
	SPOOL_RECORD_DATA = 'D',
	SPOOL_RECORD_META = 'M',
};

/* A decoded record: views into the decoded input, valid while it is. */
struct spool_record {
	enum spool_record_kind kind;
	unsigned version;
	char id[SPOOL_RECORD_ID_LEN + 1];
	const unsigned char *payload;
	size_t len;
	uint32_t crc;
	const char *error; /* static reason after a failed decode, else NULL */
};

/* CRC-32 as zlib's crc32() (start with crc = 0). */
uint32_t spool_record_crc32(uint32_t crc, const void *p, size_t n);

/* 1 when id is exactly SPOOL_RECORD_ID_LEN lowercase hex characters. */
int spool_record_id_valid(const char *id);

/* Scatter-write helpers (no payload copy): the header, then the trailer
 * computed over header and payload. id must be valid (panics otherwise). */
void spool_record_header(unsigned char hdr[SPOOL_RECORD_HEADER_LEN], enum spool_record_kind kind,
			 const char *id, uint64_t len);
void spool_record_trailer(unsigned char tr[SPOOL_RECORD_TRAILER_LEN],
			  const unsigned char hdr[SPOOL_RECORD_HEADER_LEN], const void *payload,
			  size_t len);

/* The trailer from a CRC already computed over header and payload (a
 * payload written in pieces). */
void spool_record_trailer_crc(unsigned char tr[SPOOL_RECORD_TRAILER_LEN], uint32_t crc);

/* Appends a whole record to out; returns its size. */
size_t spool_record_encode(struct buf *out, enum spool_record_kind kind, const char *id,
			   const void *payload, size_t len);

/* Decodes exactly one record filling in[0..len). want: the expected kind or
 * SPOOL_RECORD_ANY. Returns 0 and fills *rec, or -EBADMSG with rec->error set
 * (truncated, bad magic, unsupported version, wrong kind, bad id, length
 * mismatch, missing end marker, checksum mismatch). Never reads outside in. */
int spool_record_decode(const void *in, size_t len, enum spool_record_kind want,
			struct spool_record *rec);

/* "data", "meta" or "unknown". */
const char *spool_record_kind_name(enum spool_record_kind kind);

#endif
