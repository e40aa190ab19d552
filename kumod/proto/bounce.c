/* SPDX-License-Identifier: Apache-2.0 */
/* Bounce classification: ordered PCRE2 rules and two result caches. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "proto/bounce.h"

#include <jansson.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/xalloc.h"
#include "proto/jsonc.h"
#include "proto/toml.h"

#define BOUNCE_SUBJECT_MAX 1024

struct bounce_rule {
	const char *label; /* interned: points into labels */
	pcre2_code *re;
};

struct bounce_cache_entry {
	char *subject; /* NULL = empty slot */
	const char *label;
};

struct bounce_classifier {
	struct bounce_rule *rules;
	size_t n, cap;
	char **labels; /* distinct labels, owned */
	size_t nlabels;
	pcre2_match_data *md;
	pcre2_match_context *mctx;	       /* bounds a pathological rule's work per response */
	struct bounce_cache_entry *hit, *miss; /* classified / uncategorized */
	size_t nhit, nmiss;
};

struct bounce_classifier *bounce_classifier_new(size_t cache_size, size_t uncategorized_cache_size)
{
	struct bounce_classifier *bc = xcalloc(1, sizeof(*bc));
	bc->nhit = cache_size ? cache_size : 1024;
	bc->nmiss = uncategorized_cache_size ? uncategorized_cache_size : 1024;
	bc->hit = xcalloc(bc->nhit, sizeof(*bc->hit));
	bc->miss = xcalloc(bc->nmiss, sizeof(*bc->miss));
	bc->md = pcre2_match_data_create(1, NULL);
	bc->mctx = pcre2_match_context_create(NULL);
	if (!bc->md || !bc->mctx)
		panic("%s: out of memory", __func__);
	/* a rule that backtracks without end fails to match instead of stalling
	 * the loop: responses are at most 1 KiB here */
	pcre2_set_match_limit(bc->mctx, 200000);
	pcre2_set_depth_limit(bc->mctx, 10000);
	return bc;
}

static void cache_free(struct bounce_cache_entry *c, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(c[i].subject);
	free(c);
}

void bounce_classifier_free(struct bounce_classifier *bc)
{
	if (!bc)
		return;
	for (size_t i = 0; i < bc->n; i++)
		pcre2_code_free(bc->rules[i].re);
	free(bc->rules);
	for (size_t i = 0; i < bc->nlabels; i++)
		free(bc->labels[i]);
	free(bc->labels);
	cache_free(bc->hit, bc->nhit);
	cache_free(bc->miss, bc->nmiss);
	pcre2_match_data_free(bc->md);
	pcre2_match_context_free(bc->mctx);
	free(bc);
}

static const char *intern(struct bounce_classifier *bc, const char *label)
{
	for (size_t i = 0; i < bc->nlabels; i++)
		if (strcmp(bc->labels[i], label) == 0)
			return bc->labels[i];
	bc->labels = xrealloc(bc->labels, (bc->nlabels + 1) * sizeof(*bc->labels));
	return bc->labels[bc->nlabels++] = xstrdup(label);
}

int bounce_classifier_add(struct bounce_classifier *bc, const char *label, const char *pattern,
			  size_t patlen, char *err, size_t errlen)
{
	int ec;
	PCRE2_SIZE off;
	/* responses are not always valid UTF-8: match what is valid */
	pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, patlen,
				       PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &ec, &off, NULL);
	if (!re) {
		PCRE2_UCHAR msg[200];
		pcre2_get_error_message(ec, msg, sizeof(msg));
		snprintf(err, errlen, "invalid regular expression '%.*s' at offset %zu: %s",
			 (int)(patlen < 200 ? patlen : 200), pattern, (size_t)off, (char *)msg);
		return -1;
	}
	pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* an interpreter fallback is fine */
	if (bc->n == bc->cap) {
		bc->cap = bc->cap ? bc->cap * 2 : 32;
		bc->rules = xrealloc(bc->rules, bc->cap * sizeof(*bc->rules));
	}
	bc->rules[bc->n].label = intern(bc, label);
	bc->rules[bc->n++].re = re;
	return 0;
}

size_t bounce_classifier_rules(const struct bounce_classifier *bc)
{
	return bc->n;
}

size_t bounce_subject(char *out, size_t outlen, int code, const char *enhanced, const char *text)
{
	if (!outlen)
		return 0;
	int n = enhanced && *enhanced ? snprintf(out, outlen, "%d %s ", code, enhanced)
				      : snprintf(out, outlen, "%d ", code);
	size_t o = n < 0 ? 0 : (size_t)n >= outlen ? outlen - 1 : (size_t)n;
	for (const char *p = text ? text : ""; *p && o + 1 < outlen; p++) {
		if (*p == '\r' || *p == '\n') {
			if (*p == '\r' && p[1] == '\n')
				p++; /* CRLF is one space */
			out[o++] = ' ';
		} else {
			out[o++] = *p;
		}
	}
	out[o] = 0;
	return o;
}

static uint64_t hash_bytes(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
	return h;
}

const char *bounce_classify(struct bounce_classifier *bc, int code, const char *enhanced,
			    const char *text)
{
	char subject[BOUNCE_SUBJECT_MAX];
	size_t len = bounce_subject(subject, sizeof(subject), code, enhanced, text);
	uint64_t h = hash_bytes(subject, len);
	struct bounce_cache_entry *hit = &bc->hit[h % bc->nhit], *miss = &bc->miss[h % bc->nmiss];
	if (hit->subject && strcmp(hit->subject, subject) == 0)
		return hit->label;
	if (miss->subject && strcmp(miss->subject, subject) == 0)
		return BOUNCE_UNCATEGORIZED;
	const char *label = NULL;
	for (size_t i = 0; i < bc->n && !label; i++)
		if (pcre2_match(bc->rules[i].re, (PCRE2_SPTR)subject, len, 0, 0, bc->md,
				bc->mctx) >= 0)
			label = bc->rules[i].label;
	struct bounce_cache_entry *slot = label ? hit : miss;
	free(slot->subject);
	slot->subject = xstrdup(subject);
	slot->label = label;
	return label ? label : BOUNCE_UNCATEGORIZED;
}

/* --- rules files ------------------------------------------------------------ */

/* The loaders add rules and return 0, or -1 with why in err. */
static int add_rule(struct bounce_classifier *bc, const char *path, const char *label, size_t i,
		    const char *pat, size_t len, char *err, size_t errlen)
{
	char why[400];
	if (bounce_classifier_add(bc, label, pat, len, why, sizeof(why)) == 0)
		return 0;
	snprintf(err, errlen, "%s: rules.%s[%zu]: %s", path, label, i + 1, why);
	return -1;
}

static int load_toml(struct bounce_classifier *bc, const char *path, const char *s, size_t len,
		     char *err, size_t errlen)
{
	struct toml_error terr;
	struct toml_value *root = toml_parse(s, len, &terr);
	if (!root) {
		snprintf(err, errlen, "%s:%d:%d: %s", path, terr.line, terr.column, terr.msg);
		return -1;
	}
	const struct toml_value *rules = toml_table_get(root, "rules", 5);
	int rc = 0;
	for (size_t i = 0; rules && rules->type == TOML_TABLE && !rc && i < rules->u.tab.n; i++) {
		const struct toml_kv *kv = &rules->u.tab.kv[i];
		if (kv->val->type != TOML_ARRAY) {
			snprintf(err, errlen, "%s: rules.%s must be a list of regular expressions",
				 path, kv->key);
			rc = -1;
		}
		for (size_t j = 0; !rc && j < kv->val->u.arr.n; j++) {
			const struct toml_value *p = kv->val->u.arr.items[j];
			if (p->type != TOML_STRING) {
				snprintf(err, errlen, "%s: rules.%s[%zu] is not a string", path,
					 kv->key, j + 1);
				rc = -1;
			} else {
				rc = add_rule(bc, path, kv->key, j, p->u.str.ptr, p->u.str.len, err,
					      errlen);
			}
		}
	}
	toml_free(root);
	return rc;
}

static int load_json(struct bounce_classifier *bc, const char *path, const char *s, size_t len,
		     char *err, size_t errlen)
{
	char *copy = xmalloc(len + 1);
	memcpy(copy, s, len);
	copy[len] = 0;
	jsonc_strip(copy, len); /* KumoMTA's JSON files may carry comments */
	json_error_t jerr;
	json_t *root = json_loadb(copy, len, 0, &jerr);
	free(copy);
	if (!root) {
		snprintf(err, errlen, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
		return -1;
	}
	int rc = 0;
	const char *label;
	json_t *list;
	json_object_foreach(json_object_get(root, "rules"), label, list)
	{
		if (rc)
			break;
		if (!json_is_array(list)) {
			snprintf(err, errlen, "%s: rules.%s must be a list of regular expressions",
				 path, label);
			rc = -1;
		}
		for (size_t i = 0; !rc && i < json_array_size(list); i++) {
			json_t *p = json_array_get(list, i);
			if (!json_is_string(p)) {
				snprintf(err, errlen, "%s: rules.%s[%zu] is not a string", path,
					 label, i + 1);
				rc = -1;
			} else {
				rc = add_rule(bc, path, label, i, json_string_value(p),
					      json_string_length(p), err, errlen);
			}
		}
	}
	json_decref(root);
	return rc;
}

int bounce_classifier_load(struct bounce_classifier *bc, const char *name, const char *text,
			   size_t len, char *err, size_t errlen)
{
	size_t nl = strlen(name);
	if (nl > 5 && strcmp(name + nl - 5, ".toml") == 0)
		return load_toml(bc, name, text, len, err, errlen);
	return load_json(bc, name, text, len, err, errlen);
}
