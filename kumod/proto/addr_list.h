/* SPDX-License-Identifier: Apache-2.0 */
/* RFC 5322 address lists (From, To, Cc, Reply-To...) for msg:from_header(),
 * msg:to_header() and msg:get_address_header(): mailboxes and groups with
 * display names (quoted strings, RFC 2047 encoded words in UTF-8, US-ASCII or
 * ISO-8859-1 decoded), comments skipped, quoted local parts decoded. Pure:
 * an unfolded header value in, entries out. Written from RFC 5322 §3.4 and
 * RFC 2047. */
#ifndef KUMOD_PROTO_ADDR_LIST_H
#define KUMOD_PROTO_ADDR_LIST_H

#include <stddef.h>

struct addr_entry {
	char *name;   /* display name (decoded), or NULL */
	char *local;  /* local part, unquoted; NULL for an empty group */
	char *domain; /* domain (domain literals keep their brackets) */
	char *group;  /* the group's display name, or NULL outside a group */
};

struct addr_list {
	struct addr_entry *v;
	size_t n;
	int groups; /* how many groups the value had */
};

/* Parses s[0..len). 0, or -1 with a reason (and its 0-based offset) in err
 * when the value is not an address list. At most 1000 entries. */
int addr_list_parse(const char *s, size_t len, struct addr_list *out, char *err, size_t errlen);
void addr_list_free(struct addr_list *l);

#endif
