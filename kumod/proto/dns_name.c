/* SPDX-License-Identifier: Apache-2.0 */
/* Routing names: normalisation, address literals, preference order, site-name rollup. */
#include "proto/dns_name.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/xalloc.h"

#define DNS_NAME_TEXT_MAX 253
#define DNS_LABEL_MAX 63

/* Bytes that never belong in a routable host name here: they would also make site names
 * ("(a|b)?.x.") and queue names ambiguous. */
static int name_byte_ok(unsigned char c)
{
	if (c <= 0x20 || c == 0x7f)
		return 0;
	return !strchr("[]\\:@\"(),;<>|", c);
}

int dns_name_normalize(const char *name, char *out, size_t outlen)
{
	size_t len = strlen(name);
	if (len && name[len - 1] == '.')
		len--;
	if (!len || len > DNS_NAME_TEXT_MAX || len >= outlen)
		return -EINVAL;
	size_t label = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c == '.') {
			if (!label)
				return -EINVAL;
			label = 0;
		} else if (!name_byte_ok(c) || ++label > DNS_LABEL_MAX) {
			return -EINVAL;
		}
		out[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
	}
	if (!label)
		return -EINVAL;
	out[len] = 0;
	return 0;
}

static int parse_ip(const char *s, int v6_only, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	if (!v6_only && inet_pton(AF_INET, s, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		return 1;
	}
	if (inet_pton(AF_INET6, s, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		return 1;
	}
	return 0;
}

int dns_reverse_ip(const char *ip, int ptr, char *out, size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char a[16];
	char tmp[DNS_REVERSE_MAX];
	size_t w = 0;
	if (inet_pton(AF_INET, ip, a) == 1) {
		for (int i = 3; i >= 0; i--)
			w += (size_t)snprintf(tmp + w, sizeof(tmp) - w, "%s%u", i < 3 ? "." : "",
					      a[i]);
		if (ptr)
			w += (size_t)snprintf(tmp + w, sizeof(tmp) - w, ".in-addr.arpa");
	} else if (inet_pton(AF_INET6, ip, a) == 1) {
		for (int i = 15; i >= 0; i--) {
			tmp[w++] = hex[a[i] & 15];
			tmp[w++] = '.';
			tmp[w++] = hex[a[i] >> 4];
			if (i)
				tmp[w++] = '.';
		}
		tmp[w] = 0;
		if (ptr)
			w += (size_t)snprintf(tmp + w, sizeof(tmp) - w, ".ip6.arpa");
	} else {
		return -EINVAL;
	}
	if (w >= outlen)
		return -ENOSPC;
	memcpy(out, tmp, w + 1);
	return (int)w;
}

static int port_digits(const char *p)
{
	size_t n = strspn(p, "0123456789");
	return n >= 1 && n <= 5 && !p[n];
}

int dns_ip_of_socket(const char *s, char *out, size_t outlen)
{
	unsigned char a[16];
	char ip[64];
	size_t n = strlen(s);
	if (n >= sizeof(ip))
		return -EINVAL;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || (close[1] && (close[1] != ':' || !port_digits(close + 2))))
			return -EINVAL;
		n = (size_t)(close - s - 1);
		memcpy(ip, s + 1, n);
		ip[n] = 0;
		if (inet_pton(AF_INET6, ip, a) != 1)
			return -EINVAL;
	} else if (inet_pton(AF_INET6, s, a) == 1) {
		memcpy(ip, s, n + 1);
	} else {
		const char *colon = strchr(s, ':');
		if (colon && !port_digits(colon + 1))
			return -EINVAL;
		n = colon ? (size_t)(colon - s) : n;
		memcpy(ip, s, n);
		ip[n] = 0;
		if (inet_pton(AF_INET, ip, a) != 1)
			return -EINVAL;
	}
	if (strlen(ip) >= outlen)
		return -EINVAL;
	memcpy(out, ip, strlen(ip) + 1);
	return 0;
}

int dns_literal_parse(const char *s, struct sockaddr_storage *ss)
{
	size_t len = strlen(s);
	if (s[0] != '[')
		return parse_ip(s, 0, ss);
	if (len < 3 || s[len - 1] != ']' || len > 64)
		return -EINVAL;
	char inner[64];
	memcpy(inner, s + 1, len - 2);
	inner[len - 2] = 0;
	if (!strncasecmp(inner, "IPv6:", 5))
		return parse_ip(inner + 5, 1, ss) ? 1 : -EINVAL;
	return parse_ip(inner, 0, ss) ? 1 : -EINVAL;
}

uint64_t dns_rand(uint64_t *rng)
{
	uint64_t x = *rng ? *rng : 0x9E3779B97F4A7C15ull;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*rng = x;
	return x * 0x2545F4914F6CDD1Dull;
}

void dns_shuffle(void *items, size_t n, size_t size, void *tmp, uint64_t *rng)
{
	char *base = items;
	for (size_t i = n; i > 1; i--) {
		size_t j = (size_t)(dns_rand(rng) % i);
		if (j == i - 1)
			continue;
		memcpy(tmp, base + (i - 1) * size, size);
		memcpy(base + (i - 1) * size, base + j * size, size);
		memcpy(base + j * size, tmp, size);
	}
}

void dns_pref_order(const unsigned *prefs, size_t n, size_t *order, uint64_t *rng)
{
	for (size_t i = 0; i < n; i++) {
		size_t k = i;
		while (k > 0 && prefs[order[k - 1]] > prefs[i]) {
			order[k] = order[k - 1];
			k--;
		}
		order[k] = i;
	}
	if (!rng)
		return;
	size_t tmp;
	for (size_t a = 0; a < n;) {
		size_t b = a + 1;
		while (b < n && prefs[order[b]] == prefs[order[a]])
			b++;
		dns_shuffle(order + a, b - a, sizeof(*order), &tmp, rng);
		a = b;
	}
}

/* --- site name -------------------------------------------------------------- */

struct site_name {
	char text[DNS_NAME_TEXT_MAX + 1];
	const char *labels[DNS_NAME_TEXT_MAX / 2 + 1]; /* from the root */
	size_t nlabels;
};

static void site_split(struct site_name *s)
{
	char *p = s->text;
	s->nlabels = 0;
	for (char *dot; (dot = strchr(p, '.')); p = dot + 1) {
		*dot = 0;
		s->labels[s->nlabels++] = p;
	}
	s->labels[s->nlabels++] = p;
	for (size_t i = 0; i < s->nlabels / 2; i++) {
		const char *t = s->labels[i];
		s->labels[i] = s->labels[s->nlabels - 1 - i];
		s->labels[s->nlabels - 1 - i] = t;
	}
}

static int site_cmp(const void *pa, const void *pb)
{
	const struct site_name *a = *(const struct site_name *const *)pa;
	const struct site_name *b = *(const struct site_name *const *)pb;
	for (size_t i = 0; i < a->nlabels && i < b->nlabels; i++) {
		int c = strcmp(a->labels[i], b->labels[i]);
		if (c)
			return c;
	}
	return (a->nlabels > b->nlabels) - (a->nlabels < b->nlabels);
}

struct out {
	char *p;
	size_t len, cap;
	int full;
};

static void out_put(struct out *o, const char *s)
{
	size_t n = strlen(s);
	if (o->len + n >= o->cap) {
		n = o->cap - 1 - o->len;
		o->full = 1;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
	o->p[o->len] = 0;
}

/* One label position: "x", "(x|y)", with "?" when some name has no label there. */
static void site_position(struct site_name **v, size_t n, size_t pos, const char **seen,
			  struct out *o)
{
	size_t nseen = 0;
	int missing = 0;
	for (size_t i = 0; i < n; i++) {
		if (pos >= v[i]->nlabels) {
			missing = 1;
			continue;
		}
		size_t k = 0;
		while (k < nseen && strcmp(seen[k], v[i]->labels[pos]))
			k++;
		if (k == nseen)
			seen[nseen++] = v[i]->labels[pos];
	}
	if (nseen > 1)
		out_put(o, "(");
	for (size_t k = 0; k < nseen; k++) {
		if (k)
			out_put(o, "|");
		out_put(o, seen[k]);
	}
	if (nseen > 1)
		out_put(o, ")");
	if (missing)
		out_put(o, "?");
}

int dns_site_name(const char *const *names, size_t n, char *out, size_t outlen)
{
	struct site_name *all = xcalloc(n ? n : 1, sizeof(*all));
	struct site_name **v = xcalloc(n ? n : 1, sizeof(*v));
	const char **seen = xcalloc(n ? n : 1, sizeof(*seen));
	size_t nv = 0, maxlabels = 0;
	struct out o = {out, 0, outlen, 0};

	if (!outlen) {
		free(all);
		free(v);
		free(seen);
		return -ENOSPC;
	}
	out[0] = 0;
	for (size_t i = 0; i < n; i++) {
		if (dns_name_normalize(names[i], all[i].text, sizeof(all[i].text)) < 0)
			continue;
		site_split(&all[i]);
		v[nv++] = &all[i];
	}
	qsort(v, nv, sizeof(*v), site_cmp);
	size_t nu = 0;
	for (size_t i = 0; i < nv; i++) {
		if (nu && !site_cmp(&v[nu - 1], &v[i]))
			continue;
		v[nu++] = v[i];
		if (v[i]->nlabels > maxlabels)
			maxlabels = v[i]->nlabels;
	}
	for (size_t pos = maxlabels; pos-- > 0;) {
		site_position(v, nu, pos, seen, &o);
		out_put(&o, ".");
	}
	free(all);
	free(v);
	free(seen);
	return o.full ? -ENOSPC : (int)o.len;
}
