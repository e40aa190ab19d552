/* SPDX-License-Identifier: Apache-2.0 */
/* Domain maps with wildcards, with the semantics of KumoMTA's
 * kumo.domain_map (kumo-policy-surface.md §1.3): names are compared label
 * by label from the right, exactly and case-sensitively (a trailing dot is
 * an empty last label). Looking a name up walks its labels from the right;
 * at the first label with no exact entry below the labels walked so far,
 * the "*" entry at that level answers (else nothing); when every label
 * matched, the name's own entry answers. So "*.ex.com" covers "a.ex.com"
 * and "a.b.ex.com" but not "ex.com"; an explicit entry wins; an entry
 * "x.y.ex.com" makes "y.ex.com" and other names under it miss; a bare "*"
 * covers only names whose last label has no entries. Values are opaque
 * 64-bit numbers (the Lua layer stores references). Pure: no I/O. */
#ifndef KUMOD_PROTO_DOMAIN_MAP_H
#define KUMOD_PROTO_DOMAIN_MAP_H

#include <stddef.h>
#include <stdint.h>

struct domain_map;

struct domain_map *domain_map_new(void);
void domain_map_free(struct domain_map *m);
/* Sets name's value; returns 1 and the replaced value in *old when there was
 * one, else 0. */
int domain_map_set(struct domain_map *m, const char *name, size_t len, int64_t value, int64_t *old);
/* Removes name's value (its place in the tree stays); 1 and *old if it had one. */
int domain_map_unset(struct domain_map *m, const char *name, size_t len, int64_t *old);
/* 1 and *value when name is covered, else 0. */
int domain_map_get(const struct domain_map *m, const char *name, size_t len, int64_t *value);
/* Calls fn for every value (teardown of the references). */
void domain_map_each(const struct domain_map *m, void (*fn)(int64_t value, void *ctx), void *ctx);
size_t domain_map_count(const struct domain_map *m);

#endif
