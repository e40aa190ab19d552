/* SPDX-License-Identifier: Apache-2.0 */
/* A read-only view of a MIME message for the mail catcher: the leaf parts
 * (RFC 2045/2046: multipart recursion, content type, charset, transfer
 * encoding, disposition and file name), their decoding (base64 and
 * quoted-printable, leniently, as mail readers do), RFC 2047 encoded words
 * in header values, and the extraction helpers a test suite wants (links
 * and one-time codes in a text).
 * Owner: pure; the caller owns the message bytes, the view and every
 * output buffer. Callers: kumod/ctl/catcher.c, kumod/proto/mime_build.c, tests/unit,
 * fuzz/fuzz_mime_view.c and fuzz/fuzz_mime_build.c. */
#ifndef KUMOD_PROTO_MIME_VIEW_H
#define KUMOD_PROTO_MIME_VIEW_H

#include <stddef.h>

#include "base/buf.h"

#define MIME_VIEW_MAX_PARTS 64
#define MIME_VIEW_MAX_DEPTH 8

enum mime_view_cte {
	MIME_VIEW_CTE_IDENTITY = 0, /* 7bit, 8bit, binary or unknown */
	MIME_VIEW_CTE_BASE64,
	MIME_VIEW_CTE_QP,
};

struct mime_view_part {
	char type[96];	    /* lowercase "type/subtype"; "text/plain" by default */
	char charset[40];   /* lowercase, "" when absent */
	char filename[200]; /* disposition filename= or type name=, raw header text */
	char content_id[200];
	int attachment; /* disposition attachment, or named and not inline text */
	enum mime_view_cte cte;
	size_t off, len; /* the encoded body within the message */
};

struct mime_view {
	size_t nparts;
	int truncated;	   /* more than MIME_VIEW_MAX_PARTS leaves or deeper nesting */
	size_t header_len; /* the top-level header section incl. its blank line */
	struct mime_view_part parts[MIME_VIEW_MAX_PARTS];
};

/* The MIME fields of one entity's header section p[0..hlen), as
 * mime_view_parse reads them (also for kumod/proto/mime_build.c, which must
 * see the same structure): type lowercase ("text/plain" when the value has
 * no "/"; default_type when there is no Content-Type), charset lowercase,
 * boundary, file name, Content-ID, disposition and transfer encoding; a
 * later field wins. */
struct mime_view_entity {
	char type[96], charset[40], boundary[160], filename[200], content_id[200], disp[32];
	enum mime_view_cte cte;
};
void mime_view_read_entity(const char *p, size_t hlen, const char *default_type,
			   struct mime_view_entity *eh);

/* The start of the line after the one at p (after its LF), or end. */
const char *mime_view_next_line(const char *p, const char *end);
/* The end of the content of the line that ends just before `line` (its CRLF
 * or LF dropped), never before start. */
const char *mime_view_strip_line_end(const char *start, const char *line);

/* Whether the line starting at p (within [p, end)) is a delimiter of
 * boundary b[0..bl): 1 delimiter, 2 close delimiter, 0 not one. */
int mime_view_delimiter(const char *p, const char *end, const char *b, size_t bl);

/* Fills v with the leaf parts of msg[0..len) in document order. Never
 * fails: anything unparseable is a text/plain leaf (a missing closing
 * boundary ends the multipart at the end of its parent). */
void mime_view_parse(const char *msg, size_t len, struct mime_view *v);

/* Appends the decoded body p[0..n) to out (invalid base64 characters and
 * malformed quoted-printable escapes are skipped or kept as they are). */
void mime_view_decode(const char *p, size_t n, enum mime_view_cte cte, struct buf *out);

/* Appends p[0..n) as valid UTF-8: charset utf-8/us-ascii/"" as is (invalid
 * bytes become U+FFFD), iso-8859-1/latin1/windows-1252 mapped byte by
 * byte to code points, other charsets lossily as UTF-8. */
void mime_view_to_utf8(const char *p, size_t n, const char *charset, struct buf *out);

/* Appends the header value v[0..n) with RFC 2047 encoded words decoded
 * (B and Q, whitespace between adjacent encoded words dropped), as valid
 * UTF-8. */
void mime_view_decode_header(const char *v, size_t n, struct buf *out);

/* Calls cb with each mailbox of the address-list header value v[0..n)
 * (unfolded): display name (quotes removed, still RFC 2047-encoded; may be
 * empty) and address (without angle brackets); group names and comments
 * are skipped. Returns how many. */
size_t mime_view_addresses(const char *v, size_t n,
			   void (*cb)(const char *name, size_t nlen, const char *addr, size_t alen,
				      void *ctx),
			   void *ctx);

/* Calls cb with every http:// or https:// link in text[0..n) (ended by
 * whitespace, quotes, '<' or '>'; trailing '.', ',', ')' and ';' dropped),
 * each once, in order of first appearance; returns how many. */
size_t mime_view_links(const char *text, size_t n, void (*cb)(const char *s, size_t len, void *ctx),
		       void *ctx);

/* Calls cb with every run of 4 to 8 ASCII digits in text[0..n) that is not
 * part of a longer alphanumeric word (one-time codes), each once, in
 * order; returns how many. */
size_t mime_view_codes(const char *text, size_t n, void (*cb)(const char *s, size_t len, void *ctx),
		       void *ctx);

#endif
