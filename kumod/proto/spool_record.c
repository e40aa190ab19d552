/* SPDX-License-Identifier: Apache-2.0 */
/* Spool record codec: the self-validating envelope of every spool file. The
 * CRC-32 is computed here rather than with zlib so that the pure layer (and
 * its fuzz targets, which link libc only) stays self-contained (slicing-by-8
 * tables derived at start-up from the constant byte table); the result
 * is bit-for-bit zlib's crc32(), so `python3 -c 'zlib.crc32(...)'` checks a
 * file by hand. */
#include "proto/spool_record.h"

#include <errno.h>
#include <string.h>

#include "base/xalloc.h"

static const unsigned char rec_magic[4] = {'K', 'S', 'P', 'L'};
static const unsigned char rec_end[4] = {'K', 'E', 'N', 'D'};

/* --- CRC-32 (reflected, polynomial 0xEDB88320) ----------------------------- */

/* The byte table as constant expressions, so there is no run-time init and
 * no mutable state: eight shift-and-conditional-xor steps per entry. */
#define CRC_STEP(c) (((c) >> 1) ^ (0xEDB88320u & (0u - ((c)&1u))))
#define CRC_ENTRY(n) \
	CRC_STEP(    \
	    CRC_STEP(CRC_STEP(CRC_STEP(CRC_STEP(CRC_STEP(CRC_STEP(CRC_STEP((uint32_t)(n)))))))))
#define CRC_R4(n) CRC_ENTRY(n), CRC_ENTRY((n) + 1), CRC_ENTRY((n) + 2), CRC_ENTRY((n) + 3)
#define CRC_R16(n) CRC_R4(n), CRC_R4((n) + 4), CRC_R4((n) + 8), CRC_R4((n) + 12)
#define CRC_R64(n) CRC_R16(n), CRC_R16((n) + 16), CRC_R16((n) + 32), CRC_R16((n) + 48)

static const uint32_t crc_table[256] = {CRC_R64(0), CRC_R64(64), CRC_R64(128), CRC_R64(192)};

/* Slicing-by-8 (eight bytes per step; recovery checks every record of the
 * spool): crc_slice[k][n] is the CRC state of byte n followed by k zero
 * bytes. Derived from crc_table once, before main (nothing writes them
 * after), because as constant expressions they would not fit a macro. */
static uint32_t crc_slice[8][256];

__attribute__((constructor)) static void crc_slice_init(void)
{
	for (int n = 0; n < 256; n++) {
		uint32_t c = crc_table[n];
		crc_slice[0][n] = c;
		for (int k = 1; k < 8; k++) {
			c = crc_table[c & 0xffu] ^ (c >> 8);
			crc_slice[k][n] = c;
		}
	}
}

uint32_t spool_record_crc32(uint32_t crc, const void *p, size_t n)
{
	const unsigned char *s = p;
	crc = ~crc;
	if (!crc_slice[1][1]) /* a constructor that did not run: bytewise */
		goto tail;
	while (n >= 8) {
		uint32_t lo = crc ^ ((uint32_t)s[0] | (uint32_t)s[1] << 8 | (uint32_t)s[2] << 16 |
				     (uint32_t)s[3] << 24);
		crc = crc_slice[7][lo & 0xffu] ^ crc_slice[6][(lo >> 8) & 0xffu] ^
		      crc_slice[5][(lo >> 16) & 0xffu] ^ crc_slice[4][lo >> 24] ^
		      crc_slice[3][s[4]] ^ crc_slice[2][s[5]] ^ crc_slice[1][s[6]] ^
		      crc_slice[0][s[7]];
		s += 8;
		n -= 8;
	}
tail:
	while (n--)
		crc = crc_table[(crc ^ *s++) & 0xffu] ^ (crc >> 8);
	return ~crc;
}

/* --- helpers ----------------------------------------------------------------- */

static void put_le32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put_le64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_le32(const unsigned char *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t get_le64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static int id_valid_n(const char *id, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = id[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return 0;
	}
	return 1;
}

int spool_record_id_valid(const char *id)
{
	return id && strnlen(id, SPOOL_RECORD_ID_LEN + 1) == SPOOL_RECORD_ID_LEN &&
	       id_valid_n(id, SPOOL_RECORD_ID_LEN);
}

const char *spool_record_kind_name(enum spool_record_kind kind)
{
	switch (kind) {
	case SPOOL_RECORD_DATA:
		return "data";
	case SPOOL_RECORD_META:
		return "meta";
	default:
		return "unknown";
	}
}

/* --- encoding ---------------------------------------------------------------- */

void spool_record_header(unsigned char hdr[SPOOL_RECORD_HEADER_LEN], enum spool_record_kind kind,
			 const char *id, uint64_t len)
{
	if (!spool_record_id_valid(id))
		panic("%s: invalid message id", __func__);
	if (kind != SPOOL_RECORD_DATA && kind != SPOOL_RECORD_META)
		panic("%s: invalid record kind %d", __func__, (int)kind);
	memcpy(hdr, rec_magic, 4);
	hdr[4] = SPOOL_RECORD_VERSION;
	hdr[5] = (unsigned char)kind;
	hdr[6] = hdr[7] = 0;
	memcpy(hdr + 8, id, SPOOL_RECORD_ID_LEN);
	put_le64(hdr + 40, len);
}

void spool_record_trailer(unsigned char tr[SPOOL_RECORD_TRAILER_LEN],
			  const unsigned char hdr[SPOOL_RECORD_HEADER_LEN], const void *payload,
			  size_t len)
{
	uint32_t crc = spool_record_crc32(0, hdr, SPOOL_RECORD_HEADER_LEN);
	crc = spool_record_crc32(crc, payload, len);
	put_le32(tr, crc);
	memcpy(tr + 4, rec_end, 4);
}

void spool_record_trailer_crc(unsigned char tr[SPOOL_RECORD_TRAILER_LEN], uint32_t crc)
{
	put_le32(tr, crc);
	memcpy(tr + 4, rec_end, 4);
}

size_t spool_record_encode(struct buf *out, enum spool_record_kind kind, const char *id,
			   const void *payload, size_t len)
{
	unsigned char hdr[SPOOL_RECORD_HEADER_LEN], tr[SPOOL_RECORD_TRAILER_LEN];
	spool_record_header(hdr, kind, id, len);
	spool_record_trailer(tr, hdr, payload, len);
	buf_reserve(out, SPOOL_RECORD_OVERHEAD + len);
	buf_append(out, hdr, sizeof(hdr));
	if (len)
		buf_append(out, payload, len);
	buf_append(out, tr, sizeof(tr));
	return SPOOL_RECORD_OVERHEAD + len;
}

/* --- decoding ---------------------------------------------------------------- */

static int fail(struct spool_record *rec, const char *why)
{
	rec->error = why;
	return -EBADMSG;
}

/* Header fields; the length checks and checksum come after. */
static int decode_header(const unsigned char *p, size_t len, enum spool_record_kind want,
			 struct spool_record *rec)
{
	if (len >= 4 && memcmp(p, rec_magic, 4) != 0)
		return fail(rec, "bad magic (not a spool record)");
	if (len < SPOOL_RECORD_HEADER_LEN)
		return fail(rec, "truncated header");
	rec->version = p[4];
	if (p[4] != SPOOL_RECORD_VERSION)
		return fail(rec, "unsupported record version");
	if (p[5] != SPOOL_RECORD_DATA && p[5] != SPOOL_RECORD_META)
		return fail(rec, "unknown record kind");
	rec->kind = (enum spool_record_kind)p[5];
	if (want != SPOOL_RECORD_ANY && rec->kind != want)
		return fail(rec, want == SPOOL_RECORD_META ? "wrong kind: data record, want meta"
							   : "wrong kind: meta record, want data");
	if (p[6] || p[7])
		return fail(rec, "reserved header bytes not zero");
	if (!id_valid_n((const char *)p + 8, SPOOL_RECORD_ID_LEN))
		return fail(rec, "bad message id in header");
	memcpy(rec->id, p + 8, SPOOL_RECORD_ID_LEN);
	rec->id[SPOOL_RECORD_ID_LEN] = 0;
	return 0;
}

int spool_record_decode(const void *in, size_t len, enum spool_record_kind want,
			struct spool_record *rec)
{
	const unsigned char *p = in;
	memset(rec, 0, sizeof(*rec));
	int rc = decode_header(p, len, want, rec);
	if (rc < 0)
		return rc;
	uint64_t plen = get_le64(p + 40);
	size_t room = len - SPOOL_RECORD_HEADER_LEN;
	if (room < SPOOL_RECORD_TRAILER_LEN || plen > room - SPOOL_RECORD_TRAILER_LEN)
		return fail(rec, "truncated: payload or trailer missing");
	if (plen < room - SPOOL_RECORD_TRAILER_LEN)
		return fail(rec, "trailing bytes after the end marker");
	const unsigned char *tr = p + SPOOL_RECORD_HEADER_LEN + plen;
	if (memcmp(tr + 4, rec_end, 4) != 0)
		return fail(rec, "missing end marker");
	uint32_t crc = spool_record_crc32(0, p, SPOOL_RECORD_HEADER_LEN + (size_t)plen);
	if (crc != get_le32(tr))
		return fail(rec, "checksum mismatch");
	rec->payload = p + SPOOL_RECORD_HEADER_LEN;
	rec->len = (size_t)plen;
	rec->crc = crc;
	return 0;
}
