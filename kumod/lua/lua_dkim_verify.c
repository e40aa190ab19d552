/* SPDX-License-Identifier: Apache-2.0 */
/* msg:dkim_verify() (RFC 6376 verification, RSA-SHA256 and Ed25519-SHA256 of
 * RFC 8463) and msg:add_authentication_results() (RFC 8601), with KumoMTA's
 * result shape: a list of {method='dkim', result, reason, props={header.d,
 * header.i, header.s, header.a, header.b, ...}}, one per DKIM-Signature field
 * at the top of the message (at most 10).
 *
 * Canonicalization and header selection are kumod/proto/dkim.c (the signer's),
 * tag-lists kumod/proto/dkim_tags.c. The hashes are computed when the method
 * is called; only the key lookups (TXT at selector._domainkey.domain through
 * kumod/dns/resolver.c) are waited for, one after the other, with the
 * handler's coroutine suspended: nothing blocks the loop and nothing holds the
 * message while it waits. Results: pass; fail (the signature or the body hash
 * does not verify, the body is shorter than l=); permerror (a malformed
 * signature or key, no key, a revoked key, an algorithm other than these two,
 * an expired signature); temperror (the key lookup failed for now). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "base/base64.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/task.h"
#include "base/xalloc.h"
#include "dns/resolver.h"
#include "ktrace.h"
#include "lua/lua_int.h"
#include "proto/dkim.h"
#include "proto/dkim_tags.h"
#include "proto/dns_name.h"
#include "proto/rfc5322.h"
#include "spool/message.h"
#include "spool/timeline.h"

#define DKIM_VERIFY_MAX 10

struct vsig {
	const char *result; /* NULL: waiting for the key */
	char reason[200];
	/* props (KumoMTA's header.* names) */
	char d[256], s[128], a[24], c[32], i[300], t[24], x[24];
	char *b; /* the b= value without whitespace */
	int ed25519;
	int bh_ok;		/* the body hash verified (and l= was satisfiable) */
	unsigned char hash[32]; /* SHA-256 of the signed header data */
	struct buf sig;		/* the decoded signature */
	char key_name[400];
};

struct verify_op {
	uint64_t call;
	struct task *task; /* "dkim_verify": phase "key", the name looked up in a field */
	char msg_id[MESSAGE_ID_LEN + 1];
	size_t n, next;
	struct vsig v[DKIM_VERIFY_MAX];
};

static void op_free(struct verify_op *op)
{
	if (op->task) {
		task_set_phase(op->task, "Done", NULL);
		task_close(op->task);
	}
	for (size_t i = 0; i < op->n; i++) {
		free(op->v[i].b);
		buf_free(&op->v[i].sig);
	}
	free(op);
}

static void set_result(struct vsig *v, const char *result, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_result(struct vsig *v, const char *result, const char *fmt, ...)
{
	v->result = result;
	if (!fmt) {
		v->reason[0] = 0;
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(v->reason, sizeof(v->reason), fmt, ap);
	va_end(ap);
}

static void copy_tag(char *dst, size_t cap, const struct dkim_tag *t)
{
	if (t)
		snprintf(dst, cap, "%.*s", (int)t->vlen, t->val);
}

/* --- hashing ----------------------------------------------------------------------- */

struct body_hash {
	EVP_MD_CTX *md;
	uint64_t left; /* bytes still to hash (l=), UINT64_MAX: all */
	uint64_t total;
};

static void body_emit(void *ctx, const void *p, size_t n)
{
	struct body_hash *bh = ctx;
	bh->total += n;
	size_t k = n < bh->left ? n : (size_t)bh->left;
	if (k)
		EVP_DigestUpdate(bh->md, p, k);
	if (bh->left != UINT64_MAX)
		bh->left -= k;
}

/* Parses "simple", "relaxed", "simple/relaxed" ... */
static int parse_canon(const struct dkim_tag *t, enum dkim_canon *hc, enum dkim_canon *bc)
{
	*hc = *bc = DKIM_SIMPLE;
	if (!t)
		return 0;
	const char *slash = memchr(t->val, '/', t->vlen);
	size_t hn = slash ? (size_t)(slash - t->val) : t->vlen;
	const char *b = slash ? slash + 1 : NULL;
	size_t bn = slash ? t->vlen - hn - 1 : 0;
#define CANON(p, n, out)                                                              \
	((n) == 6 && strncasecmp(p, "simple", 6) == 0	 ? (*(out) = DKIM_SIMPLE, 0)  \
	 : (n) == 7 && strncasecmp(p, "relaxed", 7) == 0 ? (*(out) = DKIM_RELAXED, 0) \
							 : -1)
	if (CANON(t->val, hn, hc) != 0)
		return -1;
	if (b && CANON(b, bn, bc) != 0)
		return -1;
#undef CANON
	return 0;
}

/* The signature field without its b= value (RFC 6376 3.7), canonicalized,
 * after the h= fields: the SHA-256 into v->hash. */
static void header_hash(struct vsig *v, enum dkim_canon hc, const char *data, size_t hdr_end,
			const struct rfc5322_header *f, const struct dkim_tag *b, const char *h)
{
	struct buf in, field;
	buf_init(&in);
	buf_init(&field);
	dkim_canon_headers(hc, data, hdr_end, h, &in);
	const char *eq = memchr(b->name, '=', (size_t)(b->val - b->name) + 1);
	const char *cut = eq ? eq + 1 : b->val;
	const char *end = b->val + b->vlen;
	const char *fend = data + f->end;
	while (end < fend && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n') &&
	       end < f->raw_value + f->raw_len)
		end++;
	buf_append(&field, data + f->start, (size_t)(cut - (data + f->start)));
	buf_append(&field, end, (size_t)(fend - end));
	dkim_canon_header(hc, field.data, field.len, &in);
	in.len -= 2; /* hashed without its CRLF */
	unsigned int n = 32;
	EVP_Digest(in.data, in.len, v->hash, &n, EVP_sha256(), NULL);
	buf_free(&in);
	buf_free(&field);
}

/* Checks one DKIM-Signature field and computes what the key will verify; a
 * final result (permerror) when it cannot be verified at all. */
static void prepare(struct vsig *v, const char *data, size_t len, size_t hdr_end,
		    const struct rfc5322_header *f)
{
	struct dkim_tags tags;
	char err[160];
	buf_init(&v->sig);
	if (dkim_tags_parse(f->raw_value, f->raw_len, &tags, err, sizeof(err)) != 0) {
		set_result(v, "permerror", "signature syntax error: %s", err);
		return;
	}
	const struct dkim_tag *tv = dkim_tags_get(&tags, "v"), *ta = dkim_tags_get(&tags, "a"),
			      *tb = dkim_tags_get(&tags, "b"), *tbh = dkim_tags_get(&tags, "bh"),
			      *td = dkim_tags_get(&tags, "d"), *th = dkim_tags_get(&tags, "h"),
			      *ts = dkim_tags_get(&tags, "s"), *ti = dkim_tags_get(&tags, "i"),
			      *tl = dkim_tags_get(&tags, "l"), *tx = dkim_tags_get(&tags, "x"),
			      *tc = dkim_tags_get(&tags, "c"), *tt = dkim_tags_get(&tags, "t");
	copy_tag(v->d, sizeof(v->d), td);
	copy_tag(v->s, sizeof(v->s), ts);
	copy_tag(v->a, sizeof(v->a), ta);
	copy_tag(v->c, sizeof(v->c), tc);
	copy_tag(v->t, sizeof(v->t), tt);
	copy_tag(v->x, sizeof(v->x), tx);
	if (ti)
		copy_tag(v->i, sizeof(v->i), ti);
	else if (td)
		snprintf(v->i, sizeof(v->i), "@%s", v->d);
	if (tb) {
		struct buf b;
		buf_init(&b);
		dkim_tag_nows(tb->val, tb->vlen, &b);
		v->b = xstrdup(buf_cstr(&b));
		buf_free(&b);
	}
	const char *missing = !tv    ? "v"
			      : !ta  ? "a"
			      : !tb  ? "b"
			      : !tbh ? "bh"
			      : !td  ? "d"
			      : !th  ? "h"
			      : !ts  ? "s"
				     : NULL;
	if (missing) {
		set_result(v, "permerror", "signature missing required tag %s=", missing);
		return;
	}
	if (tv->vlen != 1 || tv->val[0] != '1') {
		set_result(v, "permerror", "incompatible signature version");
		return;
	}
	if (strcasecmp(v->a, "rsa-sha256") == 0)
		v->ed25519 = 0;
	else if (strcasecmp(v->a, "ed25519-sha256") == 0)
		v->ed25519 = 1;
	else {
		set_result(v, "permerror", "unsupported signature algorithm %s", v->a);
		return;
	}
	enum dkim_canon hc, bc;
	if (parse_canon(tc, &hc, &bc) != 0) {
		set_result(v, "permerror", "unsupported canonicalization %s", v->c);
		return;
	}
	struct buf hl;
	buf_init(&hl);
	dkim_tag_nows(th->val, th->vlen, &hl);
	int has_from = 0;
	char *names = xstrdup(buf_cstr(&hl));
	for (char *save = NULL, *p = strtok_r(names, ":", &save); p; p = strtok_r(NULL, ":", &save))
		has_from |= strcasecmp(p, "from") == 0;
	free(names);
	if (!has_from) {
		buf_free(&hl);
		set_result(v, "permerror", "From field not signed");
		return;
	}
	/* i= must be in d= or a subdomain of it (RFC 6376 6.1.1) */
	const char *at = strrchr(v->i, '@');
	size_t il = at ? strlen(at + 1) : 0, dl = strlen(v->d);
	if (!at || il < dl || strcasecmp(at + 1 + il - dl, v->d) != 0 ||
	    (il > dl && at[il - dl] != '.')) {
		buf_free(&hl);
		set_result(v, "permerror", "domain mismatch: i=%s is not in d=%s", v->i, v->d);
		return;
	}
	if (tx) {
		long long x = atoll(v->x);
		if (x > 0 && x < (long long)time(NULL)) {
			buf_free(&hl);
			set_result(v, "permerror", "signature expired");
			return;
		}
	}
	uint64_t l = UINT64_MAX;
	if (tl) {
		char lb[24];
		copy_tag(lb, sizeof(lb), tl);
		char *e = NULL;
		unsigned long long lv = strtoull(lb, &e, 10);
		if (!lb[0] || *e || lb[0] == '-') {
			buf_free(&hl);
			set_result(v, "permerror", "invalid l= tag");
			return;
		}
		l = lv;
	}
	/* the body hash */
	struct buf want;
	buf_init(&want);
	dkim_tag_nows(tbh->val, tbh->vlen, &want);
	unsigned char wbh[64], got[32];
	long wn = base64_decode(want.data ? want.data : "", want.len, wbh, sizeof(wbh));
	buf_free(&want);
	struct body_hash bh = {EVP_MD_CTX_new(), l, 0};
	unsigned int gn = 0;
	if (bh.md && EVP_DigestInit_ex(bh.md, EVP_sha256(), NULL) == 1) {
		dkim_canon_body(bc, data + hdr_end, len - hdr_end, body_emit, &bh);
		EVP_DigestFinal_ex(bh.md, got, &gn);
	}
	EVP_MD_CTX_free(bh.md);
	v->bh_ok =
	    wn == 32 && gn == 32 && memcmp(wbh, got, 32) == 0 && (l == UINT64_MAX || bh.total >= l);
	if (l != UINT64_MAX && bh.total < l)
		snprintf(v->reason, sizeof(v->reason), "body shorter than l=%llu",
			 (unsigned long long)l);
	header_hash(v, hc, data, hdr_end, f, tb, buf_cstr(&hl));
	buf_free(&hl);
	base64_decode_lenient(v->b, strlen(v->b), &v->sig);
	if (!v->sig.len) {
		set_result(v, "permerror", "signature b= is empty");
		return;
	}
	char name[300];
	if (dns_name_normalize(v->d, name, sizeof(name)) != 0 || !v->s[0] ||
	    snprintf(v->key_name, sizeof(v->key_name), "%s._domainkey.%s", v->s, name) >=
		(int)sizeof(v->key_name)) {
		set_result(v, "permerror", "invalid d= or s=");
		return;
	}
}

/* --- keys -------------------------------------------------------------------------- */

/* The key record's public key for v, or NULL with v's result set. */
static EVP_PKEY *key_of(struct vsig *v, const char *txt, size_t len)
{
	struct dkim_tags tags;
	char err[160];
	if (dkim_tags_parse(txt, len, &tags, err, sizeof(err)) != 0) {
		set_result(v, "permerror", "key syntax error: %s", err);
		return NULL;
	}
	const struct dkim_tag *tv = dkim_tags_get(&tags, "v"), *tk = dkim_tags_get(&tags, "k"),
			      *tp = dkim_tags_get(&tags, "p"), *th = dkim_tags_get(&tags, "h");
	if (tv &&
	    (tags.t[0].name != tv->name || tv->vlen != 5 || strncmp(tv->val, "DKIM1", 5) != 0)) {
		set_result(v, "permerror", "key record has an invalid v= tag");
		return NULL;
	}
	int k_ed = tk && tk->vlen == 7 && strncasecmp(tk->val, "ed25519", 7) == 0;
	int k_rsa = !tk || (tk->vlen == 3 && strncasecmp(tk->val, "rsa", 3) == 0);
	if ((v->ed25519 && !k_ed) || (!v->ed25519 && !k_rsa)) {
		set_result(v, "permerror", "key type does not match a=%s", v->a);
		return NULL;
	}
	if (th && !memmem(th->val, th->vlen, "sha256", 6)) {
		set_result(v, "permerror", "key does not allow sha256");
		return NULL;
	}
	if (!tp) {
		set_result(v, "permerror", "key record has no p= tag");
		return NULL;
	}
	struct buf p64, der;
	buf_init(&p64);
	buf_init(&der);
	dkim_tag_nows(tp->val, tp->vlen, &p64);
	if (!p64.len) {
		buf_free(&p64);
		set_result(v, "permerror", "key revoked");
		return NULL;
	}
	base64_decode_lenient(p64.data, p64.len, &der);
	buf_free(&p64);
	EVP_PKEY *pkey = NULL;
	const unsigned char *p = (const unsigned char *)der.data;
	if (v->ed25519) {
		if (der.len == 32)
			pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, p, 32);
	} else if (der.len) {
		pkey = d2i_PUBKEY(NULL, &p, (long)der.len);
		if (!pkey) {
			p = (const unsigned char *)der.data;
			pkey = d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, (long)der.len);
		}
		if (pkey && (!EVP_PKEY_is_a(pkey, "RSA") || EVP_PKEY_get_bits(pkey) < 1024)) {
			EVP_PKEY_free(pkey);
			pkey = NULL;
			set_result(v, "permerror", "key is not an RSA key of at least 1024 bits");
			buf_free(&der);
			ERR_clear_error();
			return NULL;
		}
	}
	buf_free(&der);
	ERR_clear_error();
	if (!pkey)
		set_result(v, "permerror", "key p= is not a valid public key");
	return pkey;
}

static int verify_sig(struct vsig *v, EVP_PKEY *pkey)
{
	int ok = 0;
	const unsigned char *sig = (const unsigned char *)v->sig.data;
	if (v->ed25519) {
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		ok = md && EVP_DigestVerifyInit(md, NULL, NULL, NULL, pkey) == 1 &&
		     EVP_DigestVerify(md, sig, v->sig.len, v->hash, 32) == 1;
		EVP_MD_CTX_free(md);
	} else {
		EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(pkey, NULL);
		ok = ctx && EVP_PKEY_verify_init(ctx) == 1 &&
		     EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1 &&
		     EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) == 1 &&
		     EVP_PKEY_verify(ctx, sig, v->sig.len, v->hash, 32) == 1;
		EVP_PKEY_CTX_free(ctx);
	}
	ERR_clear_error();
	return ok;
}

static void key_done(void *ctx, const struct dns_records_result *r);

/* --- results ------------------------------------------------------------------------- */

/* header.b: the first 8 characters of b=, longer while another signature of the
 * message shares them (RFC 6008). */
static void push_header_b(lua_State *L, const struct verify_op *op, size_t k)
{
	const char *b = op->v[k].b;
	size_t n = strlen(b), len = 8;
	for (size_t j = 0; len < n && j < op->n; j++) {
		const char *o = op->v[j].b;
		if (j == k || !o || strcmp(o, b) == 0)
			continue;
		if (strlen(o) >= len && strncmp(o, b, len) == 0) {
			len += 2;
			j = (size_t)-1; /* start over with the longer prefix */
		}
	}
	lua_pushlstring(L, b, len < n ? len : n);
}

static void prop(lua_State *L, const char *k, const char *v)
{
	if (!v || !v[0])
		return;
	lua_pushstring(L, v);
	lua_setfield(L, -2, k);
}

static void push_results(lua_State *L, const struct verify_op *op)
{
	lua_createtable(L, (int)op->n, 0);
	for (size_t i = 0; i < op->n; i++) {
		const struct vsig *v = &op->v[i];
		lua_createtable(L, 0, 4);
		prop(L, "method", "dkim");
		prop(L, "result", v->result);
		prop(L, "reason", v->reason);
		lua_createtable(L, 0, 8);
		prop(L, "header.d", v->d);
		prop(L, "header.i", v->i);
		prop(L, "header.s", v->s);
		prop(L, "header.a", v->a);
		prop(L, "header.c", v->c);
		prop(L, "header.t", v->t);
		prop(L, "header.x", v->x);
		if (v->b && v->b[0]) {
			push_header_b(L, op, i);
			lua_setfield(L, -2, "header.b");
		}
		lua_setfield(L, -2, "props");
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
}

static void trace_results(const struct verify_op *op)
{
	for (size_t i = 0; i < op->n; i++) {
		const struct vsig *v = &op->v[i];
		KTRACE(dkim_verify, op->msg_id, v->d, v->s, v->result, v->reason);
		MSG_TIMELINE(op->msg_id, "DKIM", "%s d=%s s=%s%s%s", v->result, v->d, v->s,
			     v->reason[0] ? ": " : "", v->reason);
	}
}

/* Looks up the next key, or delivers the results. Returns 1 when a lookup was
 * started (op now belongs to it). */
static int next_key(struct verify_op *op)
{
	while (op->next < op->n && op->v[op->next].result)
		op->next++;
	if (op->next >= op->n)
		return 0;
	if (!op->task)
		op->task = task_spawn("dkim_verify", op->msg_id, task_current_id());
	task_set_field(op->task, "key", op->v[op->next].key_name);
	task_set_phase(op->task, "key", "dns");
	dns_lookup_records(op->v[op->next].key_name, DNS_RR_TXT, key_done, op);
	return 1;
}

static void key_done(void *ctx, const struct dns_records_result *r)
{
	struct verify_op *op = ctx;
	lua_State *co = lua_engine__thread(op->call);
	if (!co) {
		op_free(op);
		return;
	}
	struct vsig *v = &op->v[op->next];
	if (r->status == DNS_TEMPFAIL) {
		set_result(v, "temperror", "key unavailable: failed to resolve %s: %s", v->key_name,
			   r->error);
	} else if (r->status != DNS_OK || !r->n) {
		set_result(v, "permerror", "no key for signature: %s has no TXT record",
			   v->key_name);
	} else {
		EVP_PKEY *pkey = key_of(v, r->records[0].text, r->records[0].len);
		if (pkey) {
			if (!v->bh_ok && v->reason[0]) /* body shorter than l= (set by prepare) */
				v->result = "fail";
			else if (!v->bh_ok)
				set_result(v, "fail", "body hash did not verify");
			else if (!verify_sig(v, pkey))
				set_result(v, "fail", "signature did not verify");
			else
				set_result(v, "pass", NULL);
			EVP_PKEY_free(pkey);
		}
	}
	if (next_key(op))
		return;
	trace_results(op);
	uint64_t call = op->call;
	lua_pushnil(co);
	push_results(co, op);
	op_free(op);
	lua_engine__wake(call, 2);
}

static int verify_k(lua_State *L, int status, lua_KContext ctx)
{
	(void)status;
	(void)ctx;
	if (!lua_isnil(L, -2)) {
		lua_pushvalue(L, -2);
		return lua_error(L);
	}
	return 1;
}

int lua_dkim__verify(lua_State *L, struct message *m)
{
	if (!lua_isnoneornil(L, 2))
		return luaL_error(L, "dkim_verify: named resolvers (kumo.dns.define_resolver) are "
				     "not implemented in kumod; omit the resolver name");
	const char *data = m->data.data ? m->data.data + m->data.off : "";
	size_t len = m->data.len - m->data.off;
	size_t hdr_end = rfc5322_header_end(data, len);
	size_t pos = 0, nsig = 0;
	struct rfc5322_header f;
	while (rfc5322_header_next(data, hdr_end, &pos, &f))
		nsig += f.name_len == 14 && strncasecmp(f.name, "DKIM-Signature", 14) == 0;
	if (!nsig) { /* no signature: an empty list, as KumoMTA returns */
		lua_newtable(L);
		return 1;
	}
	/* raises where the handler cannot wait, before anything is held */
	uint64_t call = lua_engine__wait_begin(L, "dkim_verify");
	struct verify_op *op = xcalloc(1, sizeof(*op));
	op->call = call;
	snprintf(op->msg_id, sizeof(op->msg_id), "%s", m->id);
	pos = 0;
	while (op->n < DKIM_VERIFY_MAX && rfc5322_header_next(data, hdr_end, &pos, &f))
		if (f.name_len == 14 && strncasecmp(f.name, "DKIM-Signature", 14) == 0)
			prepare(&op->v[op->n++], data, len, hdr_end, &f);
	int pending = 0;
	for (size_t i = 0; i < op->n; i++)
		pending |= op->v[i].result == NULL;
	if (!pending) { /* nothing to look up: answer now */
		trace_results(op);
		push_results(L, op);
		op_free(op);
		return 1;
	}
	next_key(op);
	return lua_engine__wait(L, 0, verify_k);
}

/* --- Authentication-Results (RFC 8601) --------------------------------------------- */

/* A value as a token when it is one (RFC 2045 token, '@', '/' and '.' allowed as
 * in RFC 8601 pvalue), else a quoted-string. */
static void emit_value(struct buf *out, const char *s, size_t n)
{
	int token = n > 0;
	for (size_t i = 0; token && i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		token = c > ' ' && c < 127 && !strchr("()<>,;:\\\"[]?=", c);
	}
	if (token) {
		buf_append(out, s, n);
		return;
	}
	buf_appendc(out, '"');
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '"' || s[i] == '\\')
			buf_appendc(out, '\\');
		buf_appendc(out, s[i] == '\r' || s[i] == '\n' ? ' ' : s[i]);
	}
	buf_appendc(out, '"');
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* One resinfo from the AuthenticationResult table at idx. */
static void emit_result(lua_State *L, int idx, struct buf *out)
{
	lua_getfield(L, idx, "method");
	lua_getfield(L, idx, "result");
	size_t ml, rl;
	const char *method = lua_tolstring(L, -2, &ml), *result = lua_tolstring(L, -1, &rl);
	buf_appends(out, ";\r\n\t");
	emit_value(out, method, ml);
	lua_getfield(L, idx, "method_version");
	if (lua_isinteger(L, -1))
		buf_printf(out, "/%lld", (long long)lua_tointeger(L, -1));
	buf_appendc(out, '=');
	emit_value(out, result, rl);
	lua_getfield(L, idx, "reason");
	if (lua_type(L, -1) == LUA_TSTRING) {
		size_t n2;
		const char *r = lua_tolstring(L, -1, &n2);
		buf_appends(out, " reason=");
		emit_value(out, r, n2);
	}
	lua_pop(L, 4);
	lua_getfield(L, idx, "props");
	if (lua_type(L, -1) == LUA_TTABLE) {
		int pt = lua_gettop(L);
		size_t np = 0;
		const char *keys[64];
		lua_pushnil(L);
		while (lua_next(L, pt)) { /* walked to the end: lua_next pops the last key */
			if (np < 64 && lua_type(L, -2) == LUA_TSTRING &&
			    lua_type(L, -1) == LUA_TSTRING)
				keys[np++] = lua_tostring(L, -2);
			lua_pop(L, 1);
		}
		qsort(keys, np, sizeof(keys[0]), str_cmp); /* KumoMTA's order: sorted */
		for (size_t i = 0; i < np; i++) {
			lua_getfield(L, pt, keys[i]);
			size_t vl;
			const char *v = lua_tolstring(L, -1, &vl);
			buf_printf(out, "\r\n\t%s=", keys[i]);
			emit_value(out, v, vl);
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
}

int lua_dkim__add_auth_results(lua_State *L, struct message *m)
{
	const char *fn = "add_authentication_results";
	size_t sl;
	const char *serv_id = luaL_checklstring(L, 2, &sl);
	luaL_checktype(L, 3, LUA_TTABLE);
	if (!sl || memchr(serv_id, '\r', sl) || memchr(serv_id, '\n', sl) || memchr(serv_id, 0, sl))
		return luaL_error(L, "%s: server_id must be a non-empty line of text", fn);
	lua_Integer n = (lua_Integer)lua_rawlen(L, 3);
	for (lua_Integer i = 1; i <= n; i++) { /* checked before anything is allocated */
		lua_rawgeti(L, 3, i);
		int ok = lua_type(L, -1) == LUA_TTABLE &&
			 lua_getfield(L, -1, "method") == LUA_TSTRING &&
			 lua_getfield(L, -2, "result") == LUA_TSTRING;
		lua_settop(L, 3);
		if (!ok)
			return luaL_error(L,
					  "%s: results[%d]: expected an AuthenticationResult table "
					  "with string method and result",
					  fn, (int)i);
	}
	struct buf out;
	buf_init(&out);
	buf_appends(&out, "Authentication-Results: ");
	emit_value(&out, serv_id, sl);
	if (n == 0)
		buf_appends(&out, "; none");
	for (lua_Integer i = 1; i <= n; i++) {
		lua_rawgeti(L, 3, i);
		emit_result(L, lua_gettop(L), &out);
		lua_pop(L, 1);
	}
	buf_appends(&out, "\r\n");
	buf_insert(&m->data, m->data.off, out.data, out.len);
	m->data_stored = 0; /* differs from the spool's copy: keep it resident */
	buf_free(&out);
	return 0;
}
