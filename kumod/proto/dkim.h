/* SPDX-License-Identifier: Apache-2.0 */
/* DKIM (RFC 6376) without the cryptography: body and header
 * canonicalization (simple and relaxed), the selection of the signed header
 * fields for an h= list (over-signing included) and the formatting of the
 * DKIM-Signature field. Pure: bytes in, bytes out; the hashing and signing
 * (OpenSSL) are the caller's (kumod/lua/lua_dkim.c). Callers: lua_dkim.c,
 * tests/unit/test_dkim.c, fuzz/fuzz_dkim_canon.c. */
#ifndef KUMOD_PROTO_DKIM_H
#define KUMOD_PROTO_DKIM_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

enum dkim_canon {
	DKIM_SIMPLE = 0,
	DKIM_RELAXED = 1,
};

/* "simple" / "relaxed". */
const char *dkim_canon_name(enum dkim_canon c);

/* Receives canonical bytes (to hash them without a copy). */
typedef void (*dkim_emit_fn)(void *ctx, const void *p, size_t n);

/* Canonicalizes a body (the bytes after the header section's blank line)
 * per RFC 6376 3.4.3/3.4.4: lines end at LF (a CR before it is part of the
 * line ending); trailing empty lines are dropped; a last line without a line
 * ending gets CRLF; simple makes an empty body one CRLF, relaxed leaves it
 * empty and also reduces each run of SP/HTAB to one SP and drops it at the
 * end of a line. */
void dkim_canon_body(enum dkim_canon c, const char *body, size_t len, dkim_emit_fn emit, void *ctx);

/* Appends one header field canonicalized, with its CRLF. field[0..len) is the
 * whole field as in the message (name, ':', value with its folding, the final
 * line ending optional). Simple: the bytes as they are (a missing or bare-LF
 * final line ending becomes CRLF); relaxed: name lower-cased and stripped,
 * value unfolded, SP/HTAB runs reduced to one SP, stripped at both ends. */
void dkim_canon_header(enum dkim_canon c, const char *field, size_t len, struct buf *out);

/* The h= list to sign (lower-case names joined by ':') for `names`, a
 * ':'-separated list of header names. Without over_sign the names as given,
 * lower-cased; with it each distinct name (sorted) listed once more than the
 * message's header section msg[0..hdr_end) has fields of that name, so no
 * field of these names can be added without breaking the signature. */
void dkim_h_list(const char *msg, size_t hdr_end, const char *names, int over_sign,
		 struct buf *out);

/* Appends the canonical form of the fields an h= list selects from the
 * header section msg[0..hdr_end): for each name in order the last field of
 * that name not selected yet (RFC 6376 5.4.2); a name with no field left
 * selects nothing. */
void dkim_canon_headers(enum dkim_canon c, const char *msg, size_t hdr_end, const char *h,
			struct buf *out);

/* The tags of a DKIM-Signature field. */
struct dkim_sig {
	const char *algo; /* "rsa-sha256" or "ed25519-sha256" */
	const char *domain, *selector;
	enum dkim_canon hc, bc;
	const char *bh; /* base64 body hash */
	const char *h;	/* h= list */
	int64_t t;	/* signature time */
	int64_t x;	/* expiration, or 0 for none */
};

/* Appends "DKIM-Signature: v=1; a=...; ...; b=;" folded at 76 columns with
 * CRLF HTAB (no CRLF at the end): the field as signed, b= still empty
 * (RFC 6376 3.7: a verifier deletes the b= value, keeping the ';'). */
void dkim_sig_format(struct buf *out, const struct dkim_sig *s);
/* Completes a field from dkim_sig_format: the base64 signature b64[0..n)
 * folded into the b= value, then ";" CRLF. */
void dkim_sig_finish(struct buf *out, const char *b64, size_t n);

#endif
