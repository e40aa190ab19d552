/* SPDX-License-Identifier: Apache-2.0 */
/* Egress pools (smooth weighted round robin) and throttles (GCRA). */
#include "queue/egress.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/log.h"
#include "base/xalloc.h"
#include "proto/dns_name.h"
#include "policy.h"

#define EGRESS_POOL_TTL_MS (60ull * 1000)

int egress_wrr_next(struct egress_wrr_entry *e, size_t n)
{
	int64_t total = 0;
	int best = -1;
	for (size_t i = 0; i < n; i++) {
		if (e[i].weight <= 0)
			continue;
		e[i].current += e[i].weight;
		total += e[i].weight;
		if (best < 0 || e[i].current > e[best].current)
			best = (int)i;
	}
	if (best >= 0)
		e[best].current -= total;
	return best;
}

uint64_t egress_gcra_take(struct egress_gcra *g, const struct rate_spec *r, uint64_t now_ms)
{
	struct rate_gcra d =
	    rate_gcra_take(&g->tat_us, r->limit, r->period_ms, r->limit, now_ms * 1000u);
	return d.throttled ? (d.retry_after_us + 999) / 1000 : 0;
}

/* --- pools -------------------------------------------------------------- */

struct egress_pool {
	char *name;
	char **sources;
	struct egress_wrr_entry *wrr;
	size_t n;
	uint64_t loaded_ms, ttl_ms;
	struct egress_pool *next;
};

static struct egress_pool *pools;

static void pool_clear(struct egress_pool *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->sources[i]);
	free(p->sources);
	free(p->wrr);
	p->sources = NULL;
	p->wrr = NULL;
	p->n = 0;
}

/* Same entries (names and weights, in order) as the pool holds now. */
static int pool_same(const struct egress_pool *p, json_t *entries)
{
	if (json_array_size(entries) != p->n)
		return 0;
	for (size_t i = 0; i < p->n; i++) {
		json_t *e = json_array_get(entries, i);
		const char *nm = json_string_value(json_object_get(e, "name"));
		json_t *w = json_object_get(e, "weight");
		int64_t weight = json_is_number(w) ? (int64_t)json_number_value(w) : 1;
		if (!nm || strcmp(nm, p->sources[i]) != 0 || weight != p->wrr[i].weight)
			return 0;
	}
	return 1;
}

static int pool_load(struct egress_pool *p, uint64_t now_ms, char *err, size_t errlen)
{
	json_t *o = NULL;
	struct policy_result r;
	policy_get_egress_pool(p->name, &o, &r);
	if (r.status != POLICY_OK || !o) {
		snprintf(err, errlen, "get_egress_pool('%s'): %s", p->name,
			 r.status != POLICY_OK ? r.text : "no pool");
		json_decref(o);
		return -ENOENT;
	}
	json_t *entries = json_object_get(o, "entries");
	json_t *ttl = json_object_get(o, "ttl_ms");
	p->ttl_ms = json_is_integer(ttl) ? (uint64_t)json_integer_value(ttl) : EGRESS_POOL_TTL_MS;
	p->loaded_ms = now_ms;
	if (!pool_same(p, entries)) {
		pool_clear(p);
		p->n = json_array_size(entries);
		p->sources = xcalloc(p->n ? p->n : 1, sizeof(*p->sources));
		p->wrr = xcalloc(p->n ? p->n : 1, sizeof(*p->wrr));
		for (size_t i = 0; i < p->n; i++) {
			json_t *e = json_array_get(entries, i);
			const char *nm = json_string_value(json_object_get(e, "name"));
			json_t *w = json_object_get(e, "weight");
			p->sources[i] = xstrdup(nm ? nm : "unspecified");
			p->wrr[i].weight = json_is_number(w) ? (int64_t)json_number_value(w) : 1;
		}
	}
	json_decref(o);
	return 0;
}

int egress_pool_select(const char *pool, uint64_t now_ms, char *out, size_t outlen, char *err,
		       size_t errlen)
{
	struct egress_pool *p = pools;
	while (p && strcmp(p->name, pool) != 0)
		p = p->next;
	if (!p) {
		p = xcalloc(1, sizeof(*p));
		p->name = xstrdup(pool);
		p->next = pools;
		pools = p;
	}
	if (!p->loaded_ms || now_ms - p->loaded_ms >= p->ttl_ms) {
		int rc = pool_load(p, now_ms, err, errlen);
		if (rc < 0) {
			p->loaded_ms = 0; /* ask again next time */
			return rc;
		}
	}
	int i = egress_wrr_next(p->wrr, p->n);
	if (i < 0) {
		snprintf(err, errlen, "egress pool '%s' has no entry with a weight above 0", pool);
		return -ENOENT;
	}
	snprintf(out, outlen, "%s", p->sources[i]);
	return 0;
}

/* --- sources ------------------------------------------------------------- */

int egress_source_load(const char *name, struct egress_source_cfg *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (strcmp(name, "unspecified") == 0)
		return 0;
	json_t *o = NULL;
	struct policy_result r;
	policy_get_egress_source(name, &o, &r);
	if (r.status != POLICY_OK || !o) {
		snprintf(err, errlen, "get_egress_source('%s'): %s", name,
			 r.status != POLICY_OK ? r.text : "no source");
		json_decref(o);
		return -ENOENT;
	}
	int rc = 0;
	const char *addr = json_string_value(json_object_get(o, "source_address"));
	const char *ehlo = json_string_value(json_object_get(o, "ehlo_domain"));
	json_t *port = json_object_get(o, "remote_port");
	if (ehlo)
		snprintf(out->ehlo_domain, sizeof(out->ehlo_domain), "%s", ehlo);
	if (json_is_integer(port) && json_integer_value(port) > 0 &&
	    json_integer_value(port) < 65536)
		out->remote_port = (int)json_integer_value(port);
	if (addr && dns_literal_parse(addr, &out->addr) == 1) { /* "[v6]" too */
		snprintf(out->address, sizeof(out->address), "%s", addr);
		out->has_addr = 1;
	} else if (addr) {
		snprintf(err, errlen,
			 "egress source '%s': source_address '%s' is not an IP address", name,
			 addr);
		rc = -EINVAL;
	}
	json_decref(o);
	return rc;
}

void egress_pools_free(void)
{
	while (pools) {
		struct egress_pool *p = pools;
		pools = p->next;
		pool_clear(p);
		free(p->name);
		free(p);
	}
}
