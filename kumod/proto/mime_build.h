/* SPDX-License-Identifier: Apache-2.0 */
/* MIME rebuild for msg:check_fix_conformance (KumoMTA's conformance fixes
 * NON_CANONICAL_LINE_ENDINGS, LINE_TOO_LONG, NEEDS_TRANSFER_ENCODING and
 * NAME_ENDS_WITH_SPACE): the message is walked as the mail catcher's view
 * sees it (kumod/proto/mime_view.h); every entity that is not already clean
 * (7-bit, CRLF only, lines of at most 76 octets, header names without
 * trailing space) is rewritten: its header fields keep their order (names
 * trimmed, lines folded at white space, 8-bit unstructured values as
 * RFC 2047 UTF-8 words), and a leaf body that needs it is decoded and
 * re-encoded as KumoMTA's builder chooses (text: no encoding when the
 * quoted-printable form equals the text, else quoted-printable unless
 * base64 is shorter; anything else: base64). Clean entities are copied byte
 * for byte. Decoding a rebuilt leaf gives the original leaf's content (text
 * with its line breaks as CRLF; undeclared, invalid UTF-8 text as UTF-8 with
 * U+FFFD, as KumoMTA does).
 * Owner: pure; the caller owns in and out.
 * Callers: kumod/lua/lua_message.c, kumod/lua/lua_mime.c, tests/unit,
 * fuzz/fuzz_mime_build.c. */
#ifndef KUMOD_PROTO_MIME_BUILD_H
#define KUMOD_PROTO_MIME_BUILD_H

#include <stddef.h>

#include "base/buf.h"

/* Longest line (without CRLF) a clean entity or re-encoded body has; what
 * KumoMTA's LINE_TOO_LONG check allows (78 octets from LF to LF). */
#define MIME_BUILD_LINE 76

struct mime_build_result {
	size_t reencoded; /* leaf bodies decoded and re-encoded */
	size_t headers;	  /* header fields rewritten */
	size_t lossy;	  /* text leaves whose invalid UTF-8 became U+FFFD */
	size_t dropped;	  /* multipart preambles/epilogues dropped (not clean) */
	const char *why;  /* when the message cannot be rebuilt: a static reason */
};

/* Appends the rebuilt message in[0..len) to out. Returns 0, or -EINVAL
 * when it cannot be rebuilt without losing content (a header line without a
 * colon or with an invalid name, a header line that cannot be folded under
 * 998 octets, a multipart without a boundary or without any part, a
 * message part other than rfc822 or global that needs encoding, nesting deeper
 * than MIME_VIEW_MAX_DEPTH): then res->why says which and out holds partial
 * output the caller discards. Every line of a successful output ends with
 * CRLF (the last may have no line break) and has at most 998 octets. */
int mime_build_rebuild(const char *in, size_t len, struct buf *out, struct mime_build_result *res);

/* KumoMTA's INVALID_MIME_HEADERS: 1 when a Content-Type (type/subtype and
 * parameters), Content-Transfer-Encoding or Content-Disposition field of
 * any entity of the message (multipart parts included, as mime_view reads
 * the tree) does not parse as RFC 2045/2183 structured text. */
int mime_build_invalid_headers(const char *in, size_t len);

/* 1 when every line of p[0..n) ends with CRLF (the last may have none) and
 * holds no other CR, no 8-bit octet and at most MIME_BUILD_LINE octets: a
 * leaf body that is copied as it is. */
int mime_build_lines_clean(const char *p, size_t n);

/* 1 when p[0..n) needs no rebuild: no 8-bit octet, no CR or LF outside a
 * CRLF pair, no line over MIME_BUILD_LINE octets, no header field name
 * ending with white space. */
int mime_build_is_clean(const char *p, size_t n);

/* Appends text[0..n) as quoted-printable (RFC 2045 §6.7): each CRLF, lone
 * LF or lone CR is a hard line break (CRLF), lines at most MIME_BUILD_LINE
 * octets with soft breaks, "=", controls, 8-bit octets and white space
 * before a break encoded. */
void mime_build_qp(struct buf *out, const char *text, size_t n);

/* Appends p[0..n) transfer-encoded as a rebuilt leaf is and returns the
 * Content-Transfer-Encoding name: text (line breaks made CRLF) as "7bit"
 * when its quoted-printable form equals it, else "quoted-printable" unless
 * "base64" is shorter; anything else "base64". For kumo.mimepart too. */
const char *mime_build_encode(struct buf *out, const char *p, size_t n, int text);

/* Appends the base64 of p[0..n) in lines of 76 characters joined by CRLF
 * (no line break after the last). */
void mime_build_base64(struct buf *out, const void *p, size_t n);

#endif
