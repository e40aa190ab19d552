/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target `spool_record`: the spool file codec (kumod/proto/spool_record.c).
 * Decoder: arbitrary bytes never make it read outside the input; it either fails with an error
 * string or yields a record whose re-encoding is byte-for-byte the input (the format has no
 * slack) and decodes to the same record. Encoder: decode(encode(kind, id, payload)) gives back
 * kind, id and payload, and every strict prefix of the encoding fails to decode.
 * Input: the bytes to decode; byte 0 also picks the kind and id for the round trip, the rest is
 * the payload. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "proto/spool_record.h"
#include "fuzz_check.h"

static void fz_same(const struct spool_record *a, const struct spool_record *b)
{
	CHECK(a->kind == b->kind && a->version == b->version && a->crc == b->crc);
	CHECK(strcmp(a->id, b->id) == 0 && a->len == b->len);
	CHECK(!a->len || memcmp(a->payload, b->payload, a->len) == 0);
}

static void fz_decode(const uint8_t *data, size_t size)
{
	static const enum spool_record_kind wants[] = {SPOOL_RECORD_ANY, SPOOL_RECORD_DATA,
						       SPOOL_RECORD_META};
	struct spool_record rec, again;
	for (size_t i = 0; i < 3; i++) {
		int rc = spool_record_decode(data, size, wants[i], &rec);
		CHECK(rc == 0 || rc == -EBADMSG);
		CHECK((rc == 0) == (rec.error == NULL));
		if (rc != 0)
			continue;
		CHECK(wants[i] == SPOOL_RECORD_ANY || rec.kind == wants[i]);
		CHECK(spool_record_id_valid(rec.id));
		CHECK(rec.len + SPOOL_RECORD_OVERHEAD == size);
		CHECK(rec.payload == data + SPOOL_RECORD_HEADER_LEN);
		struct buf out;
		buf_init(&out);
		spool_record_encode(&out, rec.kind, rec.id, rec.payload, rec.len);
		CHECK(out.len == size && memcmp(out.data, data, size) == 0);
		CHECK(spool_record_decode(out.data, out.len, wants[i], &again) == 0);
		fz_same(&rec, &again);
		buf_free(&out);
	}
}

static void fz_round_trip(const uint8_t *data, size_t size)
{
	static const char hex[] = "0123456789abcdef";
	char id[SPOOL_RECORD_ID_LEN + 1];
	enum spool_record_kind kind = data[0] & 1 ? SPOOL_RECORD_META : SPOOL_RECORD_DATA;
	for (int i = 0; i < SPOOL_RECORD_ID_LEN; i++)
		id[i] = hex[(data[0] + i * 7) & 15];
	id[SPOOL_RECORD_ID_LEN] = 0;
	struct buf out;
	struct spool_record rec;
	buf_init(&out);
	size_t n = spool_record_encode(&out, kind, id, data + 1, size - 1);
	CHECK(n == out.len && n == size - 1 + SPOOL_RECORD_OVERHEAD);
	CHECK(spool_record_decode(out.data, out.len, kind, &rec) == 0);
	CHECK(rec.kind == kind && strcmp(rec.id, id) == 0 && rec.len == size - 1);
	CHECK(!rec.len || memcmp(rec.payload, data + 1, rec.len) == 0);
	/* a few truncation points: each one fails (exact-size copies for ASan) */
	size_t cuts[] = {0, 1, SPOOL_RECORD_HEADER_LEN - 1, SPOOL_RECORD_HEADER_LEN, n / 2, n - 1};
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		if (cuts[i] >= n)
			continue;
		uint8_t *p = malloc(cuts[i] ? cuts[i] : 1);
		memcpy(p, out.data, cuts[i]);
		CHECK(spool_record_decode(p, cuts[i], kind, &rec) == -EBADMSG && rec.error);
		free(p);
	}
	buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_decode(data, size);
	if (size >= 1)
		fz_round_trip(data, size);
	return 0;
}
