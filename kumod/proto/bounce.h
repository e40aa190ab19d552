/* SPDX-License-Identifier: Apache-2.0 */
/* Bounce classification (KumoMTA's kumo.configure_bounce_classifier):
 * ordered rules, each a label ("InvalidRecipient", or any label of the
 * user's) and a PCRE2 pattern, matched against the one-line response
 * "<code> <c>.<s>.<d> <text>" (the enhanced code only when present; CR and
 * LF become spaces); the first rule that matches wins, else
 * "Uncategorized". Results are cached per response text (two direct-mapped
 * caches, classified and uncategorized apart, so a flood of unknown texts
 * does not evict the known ones). Pure: PCRE2 only, no I/O; one thread. */
#ifndef KUMOD_PROTO_BOUNCE_H
#define KUMOD_PROTO_BOUNCE_H

#include <stddef.h>
#include <stdint.h>

#define BOUNCE_UNCATEGORIZED "Uncategorized"

struct bounce_classifier;

/* New, empty classifier; cache sizes 0 = KumoMTA's 1024. */
struct bounce_classifier *bounce_classifier_new(size_t cache_size, size_t uncategorized_cache_size);
void bounce_classifier_free(struct bounce_classifier *bc);
/* Appends one rule. 0, or -1 with "invalid regular expression '...' at
 * offset N: reason" in err. */
int bounce_classifier_add(struct bounce_classifier *bc, const char *label, const char *pattern,
			  size_t patlen, char *err, size_t errlen);
size_t bounce_classifier_rules(const struct bounce_classifier *bc);
/* Adds the rules of one file's text: name ending in ".toml" is TOML, else
 * JSON (comments allowed); [rules] maps labels to lists of patterns,
 * taken in the file's order. 0, or -1 with "<name>:line:col: ..." or
 * "<name>: rules.<label>[i]: ..." in err (rules added so far stay). */
int bounce_classifier_load(struct bounce_classifier *bc, const char *name, const char *text,
			   size_t len, char *err, size_t errlen);
/* The label for a response (never NULL; borrowed, valid while bc lives).
 * enhanced may be NULL or "" (none). */
const char *bounce_classify(struct bounce_classifier *bc, int code, const char *enhanced,
			    const char *text);
/* The subject the rules see, into out (truncated to outlen - 1); returns
 * its length. */
size_t bounce_subject(char *out, size_t outlen, int code, const char *enhanced, const char *text);

#endif
