/* SPDX-License-Identifier: Apache-2.0 */
/* Spool record codec: round trip, every truncation point, every single-bit
 * flip, wrong kind and version, and the CRC against zlib. */
#include <errno.h>
#include <zlib.h>

#include "base/buf.h"
#include "proto/spool_record.h"
#include "test.h"

static const char *const ID = "0190a1b2c3d40001aabbccddeeff0011";

static void encode(struct buf *b, enum spool_record_kind kind, const char *payload, size_t len)
{
	buf_init(b);
	size_t n = spool_record_encode(b, kind, ID, payload, len);
	ASSERT_EQ(n, len + SPOOL_RECORD_OVERHEAD);
	ASSERT_EQ(b->len, n);
}

TEST_IMPL(spool_record_crc32_matches_zlib)
{
	unsigned char data[4096];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (unsigned char)(i * 131 + (i >> 3));
	size_t sizes[] = {0, 1, 3, 7, 8, 63, 1000, sizeof(data)};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint32_t want = (uint32_t)crc32(0, data, (uInt)sizes[i]);
		ASSERT_EQ(spool_record_crc32(0, data, sizes[i]), want);
	}
	/* incremental equals one shot */
	uint32_t c = spool_record_crc32(0, data, 100);
	c = spool_record_crc32(c, data + 100, 900);
	ASSERT_EQ(c, (uint32_t)crc32(0, data, 1000));
	ASSERT_EQ(spool_record_crc32(0, "123456789", 9), 0xCBF43926u);
}

TEST_IMPL(spool_record_round_trip)
{
	static const struct {
		enum spool_record_kind kind;
		const char *payload;
		size_t len;
	} cases[] = {
	    {SPOOL_RECORD_DATA, "", 0},
	    {SPOOL_RECORD_DATA, "Subject: x\r\n\r\nbody\r\n.\r\n", 24},
	    {SPOOL_RECORD_DATA, "\0\xff\r\n\0", 5},
	    {SPOOL_RECORD_META, "{\"id\":\"x\"}", 10},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf b;
		struct spool_record rec;
		encode(&b, cases[i].kind, cases[i].payload, cases[i].len);
		ASSERT_EQ(spool_record_decode(b.data, b.len, cases[i].kind, &rec), 0);
		ASSERT(rec.error == NULL);
		ASSERT_EQ(rec.kind, cases[i].kind);
		ASSERT_EQ(rec.version, SPOOL_RECORD_VERSION);
		ASSERT_STR_EQ(rec.id, ID);
		ASSERT_EQ(rec.len, cases[i].len);
		ASSERT(memcmp(rec.payload, cases[i].payload, cases[i].len) == 0);
		ASSERT(rec.payload == (const unsigned char *)b.data + SPOOL_RECORD_HEADER_LEN);
		ASSERT_EQ(spool_record_decode(b.data, b.len, SPOOL_RECORD_ANY, &rec), 0);
		buf_free(&b);
	}
}

TEST_IMPL(spool_record_every_truncation_fails)
{
	struct buf b;
	struct spool_record rec;
	const char *payload = "From: a@example.com\r\n\r\nhello\r\n";
	encode(&b, SPOOL_RECORD_DATA, payload, strlen(payload));
	for (size_t n = 0; n < b.len; n++) {
		/* an exact-size copy, so ASan would catch a read past the end */
		char *p = malloc(n ? n : 1);
		memcpy(p, b.data, n);
		int rc = spool_record_decode(p, n, SPOOL_RECORD_DATA, &rec);
		if (rc != -EBADMSG || !rec.error)
			TEST_FAIL("prefix of %zu of %zu bytes decoded (rc=%d)", n, b.len, rc);
		free(p);
	}
	/* and one byte too many */
	buf_appendc(&b, 'x');
	ASSERT_EQ(spool_record_decode(b.data, b.len, SPOOL_RECORD_DATA, &rec), -EBADMSG);
	ASSERT_STR_EQ(rec.error, "trailing bytes after the end marker");
	buf_free(&b);
}

TEST_IMPL(spool_record_truncation_reasons)
{
	struct buf b;
	struct spool_record rec;
	encode(&b, SPOOL_RECORD_META, "{}", 2);
	ASSERT_EQ(spool_record_decode(b.data, 10, SPOOL_RECORD_META, &rec), -EBADMSG);
	ASSERT_STR_EQ(rec.error, "truncated header");
	ASSERT_EQ(spool_record_decode(b.data, b.len - 1, SPOOL_RECORD_META, &rec), -EBADMSG);
	ASSERT_STR_EQ(rec.error, "truncated: payload or trailer missing");
	ASSERT_EQ(spool_record_decode("", 0, SPOOL_RECORD_META, &rec), -EBADMSG);
	ASSERT_STR_EQ(rec.error, "truncated header");
	buf_free(&b);
}

TEST_IMPL(spool_record_every_bit_flip_fails)
{
	struct buf b;
	struct spool_record rec;
	const char *payload = "{\"sender\":\"a@b\",\"recipient\":\"c@d\"}";
	encode(&b, SPOOL_RECORD_META, payload, strlen(payload));
	for (size_t i = 0; i < b.len * 8; i++) {
		b.data[i / 8] ^= (char)(1u << (i % 8));
		int rc = spool_record_decode(b.data, b.len, SPOOL_RECORD_META, &rec);
		if (rc != -EBADMSG || !rec.error)
			TEST_FAIL("flip of bit %zu (byte %zu) decoded", i % 8, i / 8);
		b.data[i / 8] ^= (char)(1u << (i % 8));
	}
	ASSERT_EQ(spool_record_decode(b.data, b.len, SPOOL_RECORD_META, &rec), 0);
	buf_free(&b);
}

/* Rewrites the CRC so that only the field under test is wrong. */
static void refresh_crc(struct buf *b)
{
	size_t n = b->len - SPOOL_RECORD_TRAILER_LEN;
	uint32_t c = spool_record_crc32(0, b->data, n);
	for (int i = 0; i < 4; i++)
		b->data[n + (size_t)i] = (char)(c >> (8 * i));
}

TEST_IMPL(spool_record_header_errors)
{
	static const struct {
		size_t off;
		char value;
		enum spool_record_kind want;
		const char *error;
	} cases[] = {
	    {0, 'X', SPOOL_RECORD_ANY, "bad magic (not a spool record)"},
	    {4, 2, SPOOL_RECORD_ANY, "unsupported record version"},
	    {5, 'Q', SPOOL_RECORD_ANY, "unknown record kind"},
	    {5, 'D', SPOOL_RECORD_META, "wrong kind: data record, want meta"},
	    {6, 1, SPOOL_RECORD_ANY, "reserved header bytes not zero"},
	    {8, 'G', SPOOL_RECORD_ANY, "bad message id in header"},
	    {39, 'A', SPOOL_RECORD_ANY, "bad message id in header"},
	    {40, 3, SPOOL_RECORD_ANY, "truncated: payload or trailer missing"},
	    {40, 1, SPOOL_RECORD_ANY, "trailing bytes after the end marker"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf b;
		struct spool_record rec;
		encode(&b, SPOOL_RECORD_META, "{}", 2);
		b.data[cases[i].off] = cases[i].value;
		refresh_crc(&b);
		ASSERT_EQ(spool_record_decode(b.data, b.len, cases[i].want, &rec), -EBADMSG);
		ASSERT_STR_EQ(rec.error, cases[i].error);
		buf_free(&b);
	}
	struct buf b;
	struct spool_record rec;
	encode(&b, SPOOL_RECORD_META, "{}", 2);
	ASSERT_EQ(spool_record_decode(b.data, b.len, SPOOL_RECORD_DATA, &rec), -EBADMSG);
	ASSERT_STR_EQ(rec.error, "wrong kind: meta record, want data");
	b.data[b.len - 1] = '!';
	ASSERT_EQ(spool_record_decode(b.data, b.len, SPOOL_RECORD_META, &rec), -EBADMSG);
	ASSERT_STR_EQ(rec.error, "missing end marker");
	b.data[b.len - 1] = 'D';
	b.data[SPOOL_RECORD_HEADER_LEN] = '[';
	ASSERT_EQ(spool_record_decode(b.data, b.len, SPOOL_RECORD_META, &rec), -EBADMSG);
	ASSERT_STR_EQ(rec.error, "checksum mismatch");
	buf_free(&b);
}

TEST_IMPL(spool_record_huge_length_field)
{
	struct buf b;
	struct spool_record rec;
	encode(&b, SPOOL_RECORD_DATA, "abc", 3);
	memset(b.data + 40, 0xff, 8); /* length 2^64-1: no overflow, no over-read */
	refresh_crc(&b);
	ASSERT_EQ(spool_record_decode(b.data, b.len, SPOOL_RECORD_DATA, &rec), -EBADMSG);
	ASSERT_STR_EQ(rec.error, "truncated: payload or trailer missing");
	buf_free(&b);
	ASSERT(spool_record_id_valid(ID));
	ASSERT(!spool_record_id_valid("0190A1B2C3D40001AABBCCDDEEFF0011"));
	ASSERT(!spool_record_id_valid("0190a1b2"));
	ASSERT(!spool_record_id_valid(NULL));
	ASSERT_STR_EQ(spool_record_kind_name(SPOOL_RECORD_DATA), "data");
	ASSERT_STR_EQ(spool_record_kind_name(SPOOL_RECORD_META), "meta");
}
