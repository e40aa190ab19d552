/* SPDX-License-Identifier: Apache-2.0 */
/* KumoMTA's normalize_smtp_response: an SMTP response with its per-user, per-transaction
 * words replaced by tokens ({timestamp}, {uuid}, {hash}, {ipaddr}, {base64}, {email},
 * {duration}) so that similar responses group together in logs. Dictionary words are kept;
 * the dictionary is a word set built here from a word list the caller supplies (kumod reads
 * /usr/share/dict/words).
 * Pure: no I/O, no globals. Callers: kumod/lua (kumo.string.normalize_smtp_response),
 * tests/unit/test_smtp_normalize.c, fuzz/fuzz_smtp_normalize.c.
 * Contract: smtp_normalize() never fails; it writes NUL-terminated text of at most
 * smtp_normalize_max(len) bytes. */
#ifndef KUMOD_PROTO_SMTP_NORMALIZE_H
#define KUMOD_PROTO_SMTP_NORMALIZE_H

#include <stddef.h>

struct smtp_norm_dict;

/* A word set from text (one word a line; blank lines ignored): each word as written and
 * with its first letter upper-cased, plus KumoMTA's additions (SMTP verbs, a few acronyms in
 * both cases). Never NULL. */
struct smtp_norm_dict *smtp_norm_dict_new(const char *text, size_t len);
void smtp_norm_dict_free(struct smtp_norm_dict *d);
size_t smtp_norm_dict_size(const struct smtp_norm_dict *d);
int smtp_norm_dict_has(const struct smtp_norm_dict *d, const char *word, size_t len);

/* Output buffer size that always suffices for an input of len bytes. */
size_t smtp_normalize_max(size_t len);

/* Normalises in[0..len) into out (smtp_normalize_max(len) bytes); returns the length.
 * d may be NULL (no dictionary: every word is classified). */
size_t smtp_normalize(const char *in, size_t len, const struct smtp_norm_dict *d, char *out);

#endif
