/* SPDX-License-Identifier: Apache-2.0 */
/* kumo.string (kumo-policy-surface.md §1.8): Rust's str methods as KumoMTA
 * exposes them. Separators are literal text, never Lua patterns; an empty
 * separator splits between characters (Rust's behaviour: "abc" -> "", "a",
 * "b", "c", ""). Whitespace means Unicode White_Space for split_whitespace
 * and trim*, ASCII whitespace (not vertical tab) for split_ascii_whitespace
 * and wrap. eval_template renders proto/template.h's Jinja subset;
 * psl_domain and psl_suffix use libpsl's built-in list.
 * normalize_smtp_response runs proto/smtp_normalize.h with the word list
 * /usr/share/dict/words (Debian's wamerican; $KUMOD_WORDS_FILE overrides),
 * read once per process on first use. */
#include <errno.h>
#include <libpsl.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "base/buf.h"
#include "base/fsutil.h"
#include "base/xalloc.h"
#include "lua/lua_int.h"
#include "proto/smtp_normalize.h"
#include "proto/template.h"

/* Length of the UTF-8 character at s (1 for a stray byte). */
static size_t char_len(const char *s, size_t n)
{
	unsigned char c = (unsigned char)s[0];
	size_t k = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
	return k <= n ? k : 1;
}

/* Unicode White_Space at s: its length, else 0. */
static size_t uspace(const char *s, size_t n)
{
	unsigned char c = (unsigned char)s[0];
	if (c == ' ' || (c >= 0x09 && c <= 0x0D))
		return 1;
	if (n >= 2 && c == 0xC2 && ((unsigned char)s[1] == 0x85 || (unsigned char)s[1] == 0xA0))
		return 2;
	if (n >= 3 && c == 0xE1 && (unsigned char)s[1] == 0x9A && (unsigned char)s[2] == 0x80)
		return 3; /* U+1680 */
	if (n >= 3 && c == 0xE2 && (unsigned char)s[1] == 0x80) {
		unsigned char d = (unsigned char)s[2];
		if (d <= 0x8A || d == 0xA8 || d == 0xA9 || d == 0xAF)
			return 3; /* U+2000..200A, 2028, 2029, 202F */
	}
	if (n >= 3 && c == 0xE2 && (unsigned char)s[1] == 0x81 && (unsigned char)s[2] == 0x9F)
		return 3; /* U+205F */
	if (n >= 3 && c == 0xE3 && (unsigned char)s[1] == 0x80 && (unsigned char)s[2] == 0x80)
		return 3; /* U+3000 */
	return 0;
}

static size_t aspace(const char *s, size_t n)
{
	(void)n;
	unsigned char c = (unsigned char)s[0];
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

static const char *rfind(const char *h, size_t hn, const char *nd, size_t nn)
{
	if (nn > hn)
		return NULL;
	for (size_t i = hn - nn + 1; i-- > 0;)
		if (memcmp(h + i, nd, nn) == 0)
			return h + i;
	return NULL;
}

static void replace_impl(lua_State *L, lua_Integer limit)
{
	size_t sn, an, bn;
	const char *s = luaL_checklstring(L, 1, &sn);
	const char *a = luaL_checklstring(L, 2, &an);
	const char *b = luaL_checklstring(L, 3, &bn);
	luaL_Buffer out;
	luaL_buffinit(L, &out);
	size_t i = 0;
	lua_Integer done = 0;
	if (an == 0) { /* Rust: `to` before every character and at the end */
		while (done < limit && i <= sn) {
			luaL_addlstring(&out, b, bn);
			done++;
			if (i == sn) {
				i++;
				break;
			}
			size_t k = char_len(s + i, sn - i);
			luaL_addlstring(&out, s + i, k);
			i += k;
		}
		if (i <= sn)
			luaL_addlstring(&out, s + i, sn - i);
		luaL_pushresult(&out);
		return;
	}
	while (done < limit) {
		const char *p = memmem(s + i, sn - i, a, an);
		if (!p)
			break;
		luaL_addlstring(&out, s + i, (size_t)(p - s) - i);
		luaL_addlstring(&out, b, bn);
		i = (size_t)(p - s) + an;
		done++;
	}
	luaL_addlstring(&out, s + i, sn - i);
	luaL_pushresult(&out);
}

static int l_replace(lua_State *L)
{
	replace_impl(L, LUA_MAXINTEGER);
	return 1;
}

static int l_replacen(lua_State *L)
{
	lua_Integer n = luaL_checkinteger(L, 4);
	replace_impl(L, n < 0 ? 0 : n);
	return 1;
}

/* The start of every match of sep in s, in search order (from the end when
 * reverse; non-overlapping). An empty sep matches at every character
 * boundary, both ends included. The caller frees the array. */
static size_t *matches(const char *s, size_t sn, const char *sep, size_t pn, int reverse,
		       size_t *count)
{
	size_t cap = 16, n = 0;
	size_t *m = xmalloc(cap * sizeof(*m));
#define PUSH(v)                                                   \
	do {                                                      \
		if (n == cap)                                     \
			m = xrealloc(m, (cap *= 2) * sizeof(*m)); \
		m[n++] = (v);                                     \
	} while (0)
	if (pn == 0) {
		for (size_t i = 0; i < sn; i += char_len(s + i, sn - i))
			PUSH(i);
		PUSH(sn);
		if (reverse)
			for (size_t a = 0, b = n - 1; a < b; a++, b--) {
				size_t t = m[a];
				m[a] = m[b];
				m[b] = t;
			}
	} else if (!reverse) {
		for (const char *p = s; (p = memmem(p, sn - (size_t)(p - s), sep, pn)) != NULL;
		     p += pn)
			PUSH((size_t)(p - s));
	} else {
		size_t end = sn;
		const char *p;
		while ((p = rfind(s, end, sep, pn)) != NULL) {
			PUSH((size_t)(p - s));
			end = (size_t)(p - s);
		}
	}
#undef PUSH
	*count = n;
	return m;
}

/* The parts of s between matches of sep, at most limit (the last part is
 * the rest of the string); reverse: from the end, as rsplit/rsplitn. */
static int split_impl(lua_State *L, const char *s, size_t sn, const char *sep, size_t pn,
		      lua_Integer limit, int reverse)
{
	lua_newtable(L);
	if (limit <= 0)
		return 1;
	size_t n;
	size_t *m = matches(s, sn, sep, pn, reverse, &n);
	lua_Integer k = 0;
	size_t edge = reverse ? sn : 0; /* forward: start of the next part; reverse: its end */
	for (size_t i = 0; i < n && k + 1 < limit; i++) {
		if (!reverse) {
			lua_pushlstring(L, s + edge, m[i] - edge);
			edge = m[i] + pn;
		} else {
			lua_pushlstring(L, s + m[i] + pn, edge - m[i] - pn);
			edge = m[i];
		}
		lua_rawseti(L, -2, ++k);
	}
	free(m);
	if (!reverse)
		lua_pushlstring(L, s + edge, sn - edge);
	else
		lua_pushlstring(L, s, edge);
	lua_rawseti(L, -2, ++k);
	return 1;
}

/* split/rsplit(s, sep) and splitn/rsplitn(s, n, sep); upvalues: reverse,
 * has_n. */
static int l_split_any(lua_State *L)
{
	int reverse = lua_toboolean(L, lua_upvalueindex(1)),
	    has_n = lua_toboolean(L, lua_upvalueindex(2));
	size_t sn, pn;
	const char *s = luaL_checklstring(L, 1, &sn);
	lua_Integer n = has_n ? luaL_checkinteger(L, 2) : LUA_MAXINTEGER;
	const char *sep = luaL_checklstring(L, has_n ? 3 : 2, &pn);
	return split_impl(L, s, sn, sep, pn, n, reverse);
}

static int split_ws(lua_State *L, size_t (*space)(const char *, size_t))
{
	size_t sn;
	const char *s = luaL_checklstring(L, 1, &sn);
	lua_newtable(L);
	lua_Integer k = 0;
	size_t i = 0;
	while (i < sn) {
		size_t w;
		while (i < sn && (w = space(s + i, sn - i)) > 0)
			i += w;
		if (i >= sn)
			break;
		size_t b = i;
		while (i < sn && space(s + i, sn - i) == 0)
			i += char_len(s + i, sn - i);
		lua_pushlstring(L, s + b, i - b);
		lua_rawseti(L, -2, ++k);
	}
	return 1;
}

static int l_split_whitespace(lua_State *L)
{
	return split_ws(L, uspace);
}

static int l_split_ascii_whitespace(lua_State *L)
{
	return split_ws(L, aspace);
}

/* The start of the trailing whitespace of s. */
static size_t trailing_ws(const char *s, size_t sn)
{
	size_t end = sn;
	while (end > 0) {
		size_t b = end - 1;
		while (b > 0 && ((unsigned char)s[b] & 0xC0) == 0x80 && end - b < 4)
			b--;
		if (uspace(s + b, end - b) != end - b)
			break;
		end = b;
	}
	return end;
}

static int trim_impl(lua_State *L, int start, int end)
{
	size_t sn;
	const char *s = luaL_checklstring(L, 1, &sn);
	size_t b = 0, e = sn, w;
	if (start)
		while (b < sn && (w = uspace(s + b, sn - b)) > 0)
			b += w;
	if (end)
		e = trailing_ws(s, sn);
	if (e < b)
		e = b;
	lua_pushlstring(L, s + b, e - b);
	return 1;
}

static int l_trim(lua_State *L)
{
	return trim_impl(L, 1, 1);
}

static int l_trim_start(lua_State *L)
{
	return trim_impl(L, 1, 0);
}

static int l_trim_end(lua_State *L)
{
	return trim_impl(L, 0, 1);
}

static int l_starts_with(lua_State *L)
{
	size_t sn, pn;
	const char *s = luaL_checklstring(L, 1, &sn);
	const char *p = luaL_checklstring(L, 2, &pn);
	lua_pushboolean(L, pn <= sn && memcmp(s, p, pn) == 0);
	return 1;
}

static int l_ends_with(lua_State *L)
{
	size_t sn, pn;
	const char *s = luaL_checklstring(L, 1, &sn);
	const char *p = luaL_checklstring(L, 2, &pn);
	lua_pushboolean(L, pn <= sn && memcmp(s + sn - pn, p, pn) == 0);
	return 1;
}

/* Header folding: words (split on ASCII whitespace) fill lines shorter than
 * soft; a longer word starts its own line and is cut every hard bytes;
 * continuation lines start with a TAB; lines end in CRLF; the result's
 * trailing whitespace is trimmed. */
static int l_wrap(lua_State *L)
{
	size_t sn;
	const char *s = luaL_checklstring(L, 1, &sn);
	lua_Integer soft = luaL_optinteger(L, 2, 75), hard = luaL_optinteger(L, 3, 900);
	if (soft < 1 || hard < 1)
		return luaL_error(L, "wrap: widths must be positive");
	struct buf res, line;
	buf_init(&res);
	buf_init(&line);
	size_t i = 0;
	while (i < sn) {
		while (i < sn && aspace(s + i, sn - i))
			i++;
		if (i >= sn)
			break;
		size_t b = i;
		while (i < sn && !aspace(s + i, sn - i))
			i++;
		size_t wl = i - b;
		if (line.len + wl < (size_t)soft) {
			if (line.len)
				buf_appendc(&line, ' ');
			buf_append(&line, s + b, wl);
			continue;
		}
		if (line.len) {
			if (res.len)
				buf_appendc(&res, '\t');
			buf_append(&res, line.data, line.len);
			buf_appends(&res, "\r\n");
			buf_reset(&line);
		}
		if (wl <= (size_t)hard) {
			buf_append(&line, s + b, wl);
			continue;
		}
		for (size_t j = b; j < i; j++) {
			buf_appendc(&line, s[j]);
			if (line.len >= (size_t)hard) {
				if (res.len)
					buf_appendc(&res, '\t');
				buf_append(&res, line.data, line.len);
				buf_appends(&res, "\r\n");
				buf_reset(&line);
			}
		}
	}
	if (line.len) {
		if (res.len)
			buf_appendc(&res, '\t');
		buf_append(&res, line.data, line.len);
	}
	size_t end = res.len;
	while (end > 0 && aspace(res.data + end - 1, 1))
		end--;
	lua_pushlstring(L, res.data ? res.data : "", end);
	buf_free(&res);
	buf_free(&line);
	return 1;
}

/* kumo.string.eval_template(name, source, context[, dialect]): the template
 * subset of proto/template.h over context; the name picks the escaping
 * (.json writes values as JSON, .html escapes HTML), as minijinja does. */
static int l_eval_template(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	size_t len;
	const char *src = luaL_checklstring(L, 2, &len);
	const char *dialect = luaL_optstring(L, 4, "Jinja");
	if (strcmp(dialect, "Static") == 0) {
		lua_pushvalue(L, 2);
		return 1;
	}
	if (strcmp(dialect, "Jinja") != 0)
		return luaL_error(L,
				  "kumo.string.eval_template: dialect '%s' is not implemented "
				  "(Jinja and Static are)",
				  dialect);
	json_t *ctx = NULL;
	char err[200];
	if (!lua_isnoneornil(L, 3) && !(ctx = lua_json__to_json(L, 3, err, sizeof(err))))
		return luaL_error(L, "kumo.string.eval_template: context: %s", err);
	struct tmpl_error te;
	struct tmpl *t = tmpl_compile(src, len, &te);
	if (!t) {
		json_decref(ctx);
		return luaL_error(L, "kumo.string.eval_template: %s: line %d column %d: %s", name,
				  te.line, te.column, te.msg);
	}
	struct buf out;
	buf_init(&out);
	int rc = tmpl_render_escaped(t, ctx, tmpl_escape_for_name(name), &out, &te);
	tmpl_free(t);
	json_decref(ctx);
	if (rc != 0) {
		buf_free(&out);
		return luaL_error(L, "kumo.string.eval_template: %s: %s", name, te.msg);
	}
	lua_pushlstring(L, out.data ? out.data : "", out.len);
	buf_free(&out);
	return 1;
}

/* psl_domain / psl_suffix: Mozilla's Public Suffix List as libpsl builds it
 * in (with its private section, as KumoMTA's psl crate). The name is
 * lower-cased and a trailing dot dropped first; nil when there is none
 * (psl_domain of a bare suffix). */
static int psl_common(lua_State *L, int want_domain)
{
	size_t len;
	const char *s = luaL_checklstring(L, 1, &len);
	char name[256];
	if (len >= sizeof(name) || memchr(s, 0, len)) {
		lua_pushnil(L);
		return 1;
	}
	for (size_t i = 0; i < len; i++)
		name[i] = s[i] >= 'A' && s[i] <= 'Z' ? (char)(s[i] + 32) : s[i];
	if (len && name[len - 1] == '.')
		len--;
	name[len] = 0;
	const psl_ctx_t *psl = psl_builtin();
	const char *r = !psl || !len  ? NULL
			: want_domain ? psl_registrable_domain(psl, name)
				      : psl_unregistrable_domain(psl, name);
	if (r && !want_domain) {
		/* the longest public suffix: psl_unregistrable_domain gives the
		 * shortest; walk labels until the rest is a public suffix */
		const char *p = name;
		while (p && !psl_is_public_suffix(psl, p)) {
			p = strchr(p, '.');
			if (p)
				p++;
		}
		r = p;
	}
	if (r)
		lua_pushstring(L, r);
	else
		lua_pushnil(L);
	return 1;
}

static int l_psl_domain(lua_State *L)
{
	return psl_common(L, 1);
}

static int l_psl_suffix(lua_State *L)
{
	return psl_common(L, 0);
}

#define WORDS_FILE "/usr/share/dict/words"
#define WORDS_MAX (64 << 20)	      /* a decompressed word list */
#define NORMALIZE_MAX_INPUT (1 << 20) /* an SMTP response is a few hundred bytes */

/* The dictionary of normalize_smtp_response: built once, kept for the process. */
static struct smtp_norm_dict *norm_dict;

static int l_normalize_smtp_response(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	if (n > NORMALIZE_MAX_INPUT)
		return luaL_error(
		    L,
		    "kumo.string.normalize_smtp_response: text of %zu bytes is over the "
		    "limit of %d",
		    n, NORMALIZE_MAX_INPUT);
	if (!norm_dict) {
		const char *path = getenv("KUMOD_WORDS_FILE");
		if (!path || !*path)
			path = WORDS_FILE;
		struct buf words;
		buf_init(&words);
		int rc = fs_read_file(path, &words);
		if (rc < 0) {
			buf_free(&words);
			return luaL_error(
			    L,
			    "kumo.string.normalize_smtp_response: needs the word list "
			    "%s (Debian package wamerican, or $KUMOD_WORDS_FILE): %s",
			    path, strerror(-rc));
		}
		size_t plen = strlen(path);
		if (plen > 4 && strcmp(path + plen - 4, ".zst") == 0) {
			/* the container image ships the list compressed (zstd) */
			unsigned long long size = ZSTD_getFrameContentSize(words.data, words.len);
			char *plain = NULL;
			size_t got = 0;
			if (size != ZSTD_CONTENTSIZE_ERROR && size != ZSTD_CONTENTSIZE_UNKNOWN &&
			    size <= WORDS_MAX) {
				plain = xmalloc(size ? size : 1);
				got = ZSTD_decompress(plain, size, words.data, words.len);
			}
			buf_free(&words);
			if (!plain || ZSTD_isError(got) || got != size) {
				free(plain);
				return luaL_error(L,
						  "kumo.string.normalize_smtp_response: the word "
						  "list %s is not a zstd frame of at most %d bytes",
						  path, WORDS_MAX);
			}
			norm_dict = smtp_norm_dict_new(plain, got);
			free(plain);
		} else {
			norm_dict = smtp_norm_dict_new(words.data, words.len);
			buf_free(&words);
		}
	}
	char *out = xmalloc(smtp_normalize_max(n));
	size_t len = smtp_normalize(s, n, norm_dict, out);
	lua_pushlstring(L, out, len);
	free(out);
	return 1;
}

static const luaL_Reg string_funcs[] = {
    {"normalize_smtp_response", l_normalize_smtp_response},
    {"psl_domain", l_psl_domain},
    {"psl_suffix", l_psl_suffix},
    {"eval_template", l_eval_template},
    {"replace", l_replace},
    {"replacen", l_replacen},
    {"split_whitespace", l_split_whitespace},
    {"split_ascii_whitespace", l_split_ascii_whitespace},
    {"trim", l_trim},
    {"trim_start", l_trim_start},
    {"trim_end", l_trim_end},
    {"starts_with", l_starts_with},
    {"ends_with", l_ends_with},
    {"wrap", l_wrap},
    {NULL, NULL},
};

void lua_string__register(lua_State *L)
{
	luaL_newlib(L, string_funcs);
	static const struct {
		const char *name;
		int reverse, has_n;
	} splits[] = {{"split", 0, 0}, {"splitn", 0, 1}, {"rsplit", 1, 0}, {"rsplitn", 1, 1}};
	for (size_t i = 0; i < sizeof(splits) / sizeof(splits[0]); i++) {
		lua_pushboolean(L, splits[i].reverse);
		lua_pushboolean(L, splits[i].has_n);
		lua_pushcclosure(L, l_split_any, 2);
		lua_setfield(L, -2, splits[i].name);
	}
	lua_setfield(L, -2, "string");
}
