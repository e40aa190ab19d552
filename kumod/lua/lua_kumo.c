/* SPDX-License-Identifier: Apache-2.0 */
/* The `kumo` module: event registration, logging, typed rejections and the
 * configuration builders (start_esmtp_listener, define_spool,
 * make_listener_domain) with KumoMTA's names, defaults and strict keys. */
#include <ctype.h>
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/log.h"
#include "io/loop.h"
#include "lua/lua_int.h"
#include "proto/cidr.h"
#include "smtp/server.h"

/* --- kumo.on ------------------------------------------------------------- */

static int l_on(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	luaL_checktype(L, 2, LUA_TFUNCTION);
	if (lua_engine__register(L, name, 2) != 0)
		return luaL_error(L, "%s", lua_tostring(L, -1));
	return 0;
}

/* --- logging ------------------------------------------------------------- */

static struct log_site lua_log_sites[] = {
    {"lua", LOG_LEVEL_ERROR, ~0u, 0},
    {"lua", LOG_LEVEL_WARN, ~0u, 0},
    {"lua", LOG_LEVEL_INFO, ~0u, 0},
    {"lua", LOG_LEVEL_DEBUG, ~0u, 0},
};

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 when invalid
 * (overlong forms, surrogates and code points past U+10FFFF included). */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	size_t len;
	unsigned min;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2, min = 0x80;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3, min = 0x800;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4, min = 0x10000;
	else
		return 0;
	if (len > n)
		return 0;
	unsigned cp = c & (0x3f >> (len - 1));
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* Appends s, showing each byte that is not part of valid UTF-8 as \xNN. */
static void add_utf8_escaped(luaL_Buffer *b, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;
	while (i < n) {
		size_t len = utf8_seq_len(p + i, n - i);
		if (len) {
			luaL_addlstring(b, s + i, len);
			i += len;
		} else {
			char hex[8];
			snprintf(hex, sizeof(hex), "\\x%02X", p[i]);
			luaL_addstring(b, hex);
			i++;
		}
	}
}

/* "<short_src>:<line>: arg1 arg2 ...", formatted only when the level is on. */
static int log_common(lua_State *L, struct log_site *site)
{
	if (!log_site_enabled(site))
		return 0;
	int n = lua_gettop(L);
	for (int i = 1; i <= n; i++) {
		luaL_tolstring(L, i, NULL); /* honours __tostring, like tostring() */
		lua_replace(L, i);
	}
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	lua_Debug ar;
	if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar)) {
		char where[LUA_IDSIZE + 32];
		snprintf(where, sizeof(where), "%s:%d: ", ar.short_src, ar.currentline);
		luaL_addstring(&b, where);
	}
	for (int i = 1; i <= n; i++) {
		size_t len;
		const char *s = lua_tolstring(L, i, &len);
		if (i > 1)
			luaL_addchar(&b, ' ');
		add_utf8_escaped(&b, s, len);
	}
	luaL_pushresult(&b);
	log_emit(site, lua_tostring(L, -1));
	return 0;
}

static int l_log_error(lua_State *L)
{
	return log_common(L, &lua_log_sites[0]);
}

static int l_log_warn(lua_State *L)
{
	return log_common(L, &lua_log_sites[1]);
}

static int l_log_info(lua_State *L)
{
	return log_common(L, &lua_log_sites[2]);
}

static int l_log_debug(lua_State *L)
{
	return log_common(L, &lua_log_sites[3]);
}

static int l_set_diagnostic_log_filter(lua_State *L)
{
	const char *f = luaL_checkstring(L, 1);
	char err[512];
	if (log_set_filter(f, err, sizeof(err)) != 0)
		return luaL_error(L, "%s", err);
	return 0;
}

/* --- reject / disconnect --------------------------------------------------- */

static int reject_common(lua_State *L, int disconnect)
{
	int isint = 0;
	lua_Integer code = lua_type(L, 1) == LUA_TNUMBER ? lua_tointegerx(L, 1, &isint) : 0;
	if (!isint || code < 400 || code > 599)
		return luaL_error(L, "kumo.%s: code must be an integer in 400..599, got %s",
				  disconnect ? "disconnect" : "reject", luaL_tolstring(L, 1, NULL));
	size_t textlen;
	const char *text = luaL_optlstring(L, 2, "", &textlen);
	if (disconnect) {
		const char *mode = luaL_optstring(L, 3, "ForceDisconnect");
		if (strcmp(mode, "ForceDisconnect") != 0)
			return luaL_error(L, "kumo.disconnect: unsupported mode '%s'", mode);
	}
	lua_createtable(L, 0, 3);
	lua_pushinteger(L, code);
	lua_setfield(L, -2, "code");
	lua_pushlstring(L, text, textlen);
	lua_setfield(L, -2, "text");
	lua_pushboolean(L, disconnect);
	lua_setfield(L, -2, "disconnect");
	luaL_setmetatable(L, LUA_KUMO_REJECT_MT);
	return lua_error(L);
}

static int l_reject(lua_State *L)
{
	return reject_common(L, 0);
}

static int l_disconnect(lua_State *L)
{
	return reject_common(L, 1);
}

static int reject_tostring(lua_State *L)
{
	lua_getfield(L, 1, "code");
	lua_getfield(L, 1, "text");
	lua_pushfstring(L, "kumo.reject: %s %s", luaL_tolstring(L, 2, NULL),
			luaL_tolstring(L, 3, NULL));
	return 1;
}

/* Reply text may hold HT, LF (a multi-line reply) and printable ASCII only
 * (smtp-conformance.md §10); CR is dropped and anything else becomes '?'. */
static void copy_reply_text(char *dst, size_t dstlen, const char *s, size_t n)
{
	size_t j = 0;
	for (size_t i = 0; i < n && j + 1 < dstlen; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\r')
			continue;
		dst[j++] = (c == '\t' || c == '\n' || (c >= 32 && c <= 126)) ? (char)c : '?';
	}
	dst[j] = 0;
}

int lua_kumo__is_reject(lua_State *L, int idx, int *code, char *text, size_t textlen,
			int *disconnect)
{
	idx = lua_absindex(L, idx);
	if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx))
		return 0;
	luaL_getmetatable(L, LUA_KUMO_REJECT_MT);
	int is = lua_rawequal(L, -1, -2);
	lua_pop(L, 2);
	if (!is)
		return 0;
	lua_pushliteral(L, "code");
	lua_rawget(L, idx);
	int isint = 0;
	lua_Integer c = lua_tointegerx(L, -1, &isint);
	lua_pop(L, 1);
	if (!isint || c < 400 || c > 599) {
		snprintf(text, textlen, "kumo.reject: code must be an integer in 400..599");
		return -1;
	}
	lua_pushliteral(L, "text");
	lua_rawget(L, idx);
	size_t n = 0;
	const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : "";
	copy_reply_text(text, textlen, s, n);
	lua_pop(L, 1);
	lua_pushliteral(L, "disconnect");
	lua_rawget(L, idx);
	*disconnect = lua_toboolean(L, -1);
	lua_pop(L, 1);
	*code = (int)c;
	return 1;
}

/* --- small builtins -------------------------------------------------------- */

static int l_available_parallelism(lua_State *L)
{
	const char *env = getenv("KUMO_AVAILABLE_PARALLELISM");
	long n = 0;
	if (env && *env) {
		char *end;
		n = strtol(env, &end, 10);
		if (*end || n <= 0)
			return luaL_error(L, "KUMO_AVAILABLE_PARALLELISM: invalid value '%s'", env);
	} else {
		cpu_set_t set;
		if (sched_getaffinity(0, sizeof(set), &set) == 0)
			n = CPU_COUNT(&set);
		if (n <= 0)
			n = sysconf(_SC_NPROCESSORS_ONLN);
		if (n <= 0)
			n = 1;
	}
	lua_pushinteger(L, n);
	return 1;
}

static int l_configure_accounting_db_path(lua_State *L)
{
	const char *p = luaL_checkstring(L, 1);
	log_debug("lua",
		  "configure_accounting_db_path('%s'): accounting is not implemented; "
		  "ignored",
		  p);
	return 0;
}

/* set_*_threads(n): KumoMTA thread-pool sizing; one loop thread here. */
static int l_set_threads(lua_State *L)
{
	lua_Integer n = luaL_checkinteger(L, 1);
	luaL_argcheck(L, n >= 0, 1, "thread count must not be negative");
	return 0;
}

/* --- configuration tables -------------------------------------------------- */

/* KumoMTA durations: seconds as a number, or text such as "5m", "20 minutes",
 * "1 hour", "1h 30m", "250ms". Returns 0 and milliseconds, or -1. */
static int parse_duration_ms(const char *s, uint64_t *out)
{
	static const struct {
		const char *unit;
		double ms;
	} units[] = {
	    {"ms", 1},		{"msec", 1},	   {"millis", 1},    {"milliseconds", 1},
	    {"millisecond", 1}, {"s", 1e3},	   {"sec", 1e3},     {"secs", 1e3},
	    {"second", 1e3},	{"seconds", 1e3},  {"m", 6e4},	     {"min", 6e4},
	    {"mins", 6e4},	{"minute", 6e4},   {"minutes", 6e4}, {"h", 36e5},
	    {"hr", 36e5},	{"hrs", 36e5},	   {"hour", 36e5},   {"hours", 36e5},
	    {"d", 864e5},	{"day", 864e5},	   {"days", 864e5},  {"w", 6048e5},
	    {"week", 6048e5},	{"weeks", 6048e5},
	};
	double total = 0;
	int parts = 0;
	while (*s) {
		while (isspace((unsigned char)*s))
			s++;
		if (!*s)
			break;
		char *end;
		if (!isdigit((unsigned char)*s))
			return -1;
		double v = strtod(s, &end);
		s = end;
		while (isspace((unsigned char)*s))
			s++;
		const char *u = s;
		while (isalpha((unsigned char)*s))
			s++;
		size_t ulen = (size_t)(s - u);
		double mul = -1;
		for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
			if (strlen(units[i].unit) == ulen &&
			    strncasecmp(units[i].unit, u, ulen) == 0)
				mul = units[i].ms;
		if (mul < 0)
			return -1;
		total += v * mul;
		parts++;
	}
	if (!parts || total > 1e15)
		return -1;
	*out = (uint64_t)(total + 0.5);
	return 0;
}

/* Reads a duration value at idx (number of seconds or text); raises naming
 * `what` on a bad value. */
static uint64_t check_duration(lua_State *L, int idx, const char *what)
{
	uint64_t ms = 0;
	if (lua_type(L, idx) == LUA_TNUMBER) {
		double v = lua_tonumber(L, idx);
		if (!(v >= 0 && v <= 1e12))
			luaL_error(L, "%s: duration must not be negative", what);
		return (uint64_t)(v * 1000 + 0.5);
	}
	if (lua_type(L, idx) != LUA_TSTRING)
		luaL_error(L, "%s: expected a duration (seconds or text like \"5m\"), got %s", what,
			   luaL_typename(L, idx));
	if (parse_duration_ms(lua_tostring(L, idx), &ms) != 0)
		luaL_error(L, "%s: invalid duration '%s'", what, lua_tostring(L, idx));
	return ms;
}

static const char *check_str(lua_State *L, int idx, const char *what)
{
	if (lua_type(L, idx) != LUA_TSTRING)
		luaL_error(L, "%s: expected a string, got %s", what, luaL_typename(L, idx));
	return lua_tostring(L, idx);
}

static int check_bool(lua_State *L, int idx, const char *what)
{
	if (lua_type(L, idx) != LUA_TBOOLEAN)
		luaL_error(L, "%s: expected a boolean, got %s", what, luaL_typename(L, idx));
	return lua_toboolean(L, idx);
}

static size_t check_size(lua_State *L, int idx, const char *what)
{
	int isint = 0;
	lua_Integer v = lua_type(L, idx) == LUA_TNUMBER ? lua_tointegerx(L, idx, &isint) : 0;
	if (!isint)
		luaL_error(L, "%s: expected an integer, got %s", what, luaL_typename(L, idx));
	if (v < 0)
		luaL_error(L, "%s: must not be negative", what);
	return (size_t)v;
}

static void check_table(lua_State *L, int idx, const char *what)
{
	if (lua_type(L, idx) != LUA_TTABLE)
		luaL_error(L, "%s: expected a table, got %s", what, luaL_typename(L, idx));
}

/* Iterates the string keys of the table at idx, calling fn with the value
 * on top of the stack; non-string keys are an error. */
static void each_key(lua_State *L, int idx, const char *what,
		     void (*fn)(lua_State *L, const char *key, void *ctx), void *ctx)
{
	idx = lua_absindex(L, idx);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		if (lua_type(L, -2) != LUA_TSTRING)
			luaL_error(L, "%s: keys must be strings, got %s", what,
				   luaL_typename(L, -2));
		fn(L, lua_tostring(L, -2), ctx);
		lua_pop(L, 1);
	}
}

/* Checks a sequence of CIDR strings at idx (the top); optionally adds them. */
static void check_cidrs(lua_State *L, int idx, const char *what, struct cidr_list *add)
{
	check_table(L, idx, what);
	size_t n = lua_rawlen(L, idx);
	for (size_t i = 1; i <= n; i++) {
		lua_rawgeti(L, idx, (lua_Integer)i);
		const char *s = check_str(L, -1, what);
		struct cidr c;
		if ((add ? cidr_list_add(add, s) : cidr_parse(s, &c)) != 0)
			luaL_error(L, "%s: invalid CIDR '%s'", what, s);
		lua_pop(L, 1);
	}
}

/* --- start_esmtp_listener -------------------------------------------------- */

#define LISTENER_CFG_MT "kumod.listener_config"

/* The config under construction lives in a userdata so a Lua error in the
 * middle of parsing frees it (__gc) instead of leaking. */
static int listener_cfg_gc(lua_State *L)
{
	struct smtp_listener_config *cfg = luaL_checkudata(L, 1, LISTENER_CFG_MT);
	smtp_listener_config_free(cfg);
	return 0;
}

static void set_str(char **dst, const char *s)
{
	char *n = strdup(s);
	if (!n)
		abort();
	free(*dst);
	*dst = n;
}

static void trace_headers_key(lua_State *L, const char *k, void *ctx)
{
	struct smtp_listener_config *cfg = ctx;
	char what[96];
	snprintf(what, sizeof(what), "start_esmtp_listener: trace_headers.%s", k);
	if (strcmp(k, "received_header") == 0) {
		cfg->received_header = check_bool(L, -1, what);
	} else if (strcmp(k, "supplemental_header") == 0) {
		cfg->supplemental_header = check_bool(L, -1, what);
	} else if (strcmp(k, "header_name") == 0) {
		set_str(&cfg->trace_header_name, check_str(L, -1, what));
	} else if (strcmp(k, "include_meta_names") == 0) {
		check_table(L, -1, what);
		size_t n = lua_rawlen(L, -1);
		for (size_t i = 1; i <= n; i++) {
			lua_rawgeti(L, -1, (lua_Integer)i);
			check_str(L, -1, what);
			lua_pop(L, 1);
		}
	} else {
		luaL_error(L, "start_esmtp_listener: unknown key 'trace_headers.%s'", k);
	}
}

static enum smtp_eol_policy check_eol(lua_State *L, const char *what)
{
	const char *s = check_str(L, -1, what);
	if (strcmp(s, "Deny") == 0)
		return SMTP_EOL_DENY;
	if (strcmp(s, "Allow") == 0)
		return SMTP_EOL_ALLOW;
	if (strcmp(s, "Fix") == 0)
		return SMTP_EOL_FIX;
	luaL_error(L, "%s: expected 'Deny', 'Allow' or 'Fix', got '%s'", what, s);
	return SMTP_EOL_DENY;
}

static void listener_key(lua_State *L, const char *k, void *ctx)
{
	struct smtp_listener_config *cfg = ctx;
	char what[96];
	snprintf(what, sizeof(what), "start_esmtp_listener: %s", k);
	if (strcmp(k, "listen") == 0) {
		set_str(&cfg->listen, check_str(L, -1, what));
	} else if (strcmp(k, "hostname") == 0) {
		set_str(&cfg->hostname, check_str(L, -1, what));
	} else if (strcmp(k, "banner") == 0) {
		set_str(&cfg->banner, check_str(L, -1, what));
	} else if (strcmp(k, "relay_hosts") == 0) {
		cidr_list_free(&cfg->relay_hosts);
		memset(&cfg->relay_hosts, 0, sizeof(cfg->relay_hosts));
		check_cidrs(L, lua_gettop(L), what, &cfg->relay_hosts);
	} else if (strcmp(k, "max_connections") == 0) {
		cfg->max_connections = check_size(L, -1, what);
	} else if (strcmp(k, "client_timeout") == 0) {
		cfg->client_timeout_ms = check_duration(L, -1, what);
	} else if (strcmp(k, "data_processing_timeout") == 0) {
		cfg->data_processing_timeout_ms = check_duration(L, -1, what);
	} else if (strcmp(k, "max_message_size") == 0) {
		cfg->max_message_size = check_size(L, -1, what);
	} else if (strcmp(k, "max_recipients_per_message") == 0) {
		cfg->max_recipients_per_message = check_size(L, -1, what);
	} else if (strcmp(k, "max_messages_per_connection") == 0) {
		cfg->max_messages_per_connection = check_size(L, -1, what);
	} else if (strcmp(k, "line_length_hard_limit") == 0) {
		cfg->line_length_hard_limit = check_size(L, -1, what);
	} else if (strcmp(k, "invalid_line_endings") == 0) {
		cfg->invalid_line_endings = check_eol(L, what);
	} else if (strcmp(k, "tls_certificate") == 0) {
		set_str(&cfg->tls_certificate, check_str(L, -1, what));
	} else if (strcmp(k, "tls_private_key") == 0) {
		set_str(&cfg->tls_private_key, check_str(L, -1, what));
	} else if (strcmp(k, "trace_headers") == 0) {
		check_table(L, -1, what);
		each_key(L, -1, what, trace_headers_key, cfg);
	} else if (strcmp(k, "data_buffer_size") == 0) {
		check_size(L, -1, what); /* accepted; reads are sized by the io layer */
	} else if (strcmp(k, "batch_handling") == 0) {
		const char *s = check_str(L, -1, what);
		if (strcmp(s, "BifurcateAlways") != 0)
			luaL_error(L, "%s: only 'BifurcateAlways' is supported, got '%s'", what, s);
	} else {
		luaL_error(L, "start_esmtp_listener: unknown key '%s'", k);
	}
}

static int l_start_esmtp_listener(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	struct smtp_listener_config *cfg = lua_newuserdatauv(L, sizeof(*cfg), 0);
	memset(cfg, 0, sizeof(*cfg)); /* safe empty state before anything can fail */
	luaL_setmetatable(L, LISTENER_CFG_MT);
	smtp_listener_config_init(cfg);
	each_key(L, 1, "start_esmtp_listener", listener_key, cfg);
	if (lua_engine__validating()) {
		log_debug("lua", "start_esmtp_listener %s: not started in --validate mode",
			  cfg->listen);
		return 0;
	}
	char err[512] = "";
	if (smtp_listener_start(kumod_loop(), cfg, err, sizeof(err)) != 0)
		return luaL_error(L, "%s", err[0] ? err : "start_esmtp_listener: failed");
	return 0;
}

/* --- define_spool ------------------------------------------------------------ */

struct spool_def {
	const char *name, *path, *kind;
	int flush;
};

static void spool_key(lua_State *L, const char *k, void *ctx)
{
	struct spool_def *d = ctx;
	char what[64];
	snprintf(what, sizeof(what), "define_spool: %s", k);
	if (strcmp(k, "name") == 0) {
		d->name = check_str(L, -1, what);
	} else if (strcmp(k, "path") == 0) {
		d->path = check_str(L, -1, what);
	} else if (strcmp(k, "kind") == 0) {
		d->kind = check_str(L, -1, what);
		if (strcmp(d->kind, "LocalDisk") != 0)
			luaL_error(L, "%s: only 'LocalDisk' is supported, got '%s'", what, d->kind);
	} else if (strcmp(k, "flush") == 0) {
		d->flush = check_bool(L, -1, what);
	} else if (strcmp(k, "min_free_space") == 0 || strcmp(k, "min_free_inodes") == 0) {
		/* bytes, or a percentage string such as "10%" */
		if (lua_type(L, -1) != LUA_TSTRING)
			check_size(L, -1, what);
	} else {
		luaL_error(L, "define_spool: unknown key '%s'", k);
	}
}

static int l_define_spool(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	struct spool_def d = {.kind = "LocalDisk", .flush = 1};
	each_key(L, 1, "define_spool", spool_key, &d);
	if (!d.name)
		return luaL_error(L, "define_spool: missing key 'name'");
	if (!d.path)
		return luaL_error(L, "define_spool: missing key 'path'");
	log_debug("lua", "define_spool name=%s path=%s kind=%s flush=%d", d.name, d.path, d.kind,
		  d.flush);
	return 0;
}

/* --- make_listener_domain ---------------------------------------------------- */

static void listener_domain_key(lua_State *L, const char *k, void *ctx)
{
	char what[64];
	snprintf(what, sizeof(what), "make_listener_domain: %s", k);
	if (strcmp(k, "relay_to") == 0)
		check_bool(L, -1, what);
	else if (strcmp(k, "relay_from") == 0)
		check_cidrs(L, lua_gettop(L), what, NULL);
	else
		luaL_error(L, "make_listener_domain: unknown key '%s'", k);
}

/* Returns a table {relay_to=bool, relay_from={cidr...}} tagged with a
 * private metatable so get_listener_domain can tell it from any table. */
static int l_make_listener_domain(lua_State *L)
{
	if (lua_isnoneornil(L, 1)) {
		lua_settop(L, 0);
		lua_newtable(L);
	}
	luaL_checktype(L, 1, LUA_TTABLE);
	each_key(L, 1, "make_listener_domain", listener_domain_key, NULL);
	lua_createtable(L, 0, 2);
	lua_getfield(L, 1, "relay_to");
	lua_pushboolean(L, lua_toboolean(L, -1));
	lua_setfield(L, -3, "relay_to");
	lua_pop(L, 1);
	lua_newtable(L);
	lua_getfield(L, 1, "relay_from");
	size_t n = lua_istable(L, -1) ? lua_rawlen(L, -1) : 0;
	for (size_t i = 1; i <= n; i++) {
		lua_rawgeti(L, -1, (lua_Integer)i);
		lua_rawseti(L, -3, (lua_Integer)i);
	}
	lua_pop(L, 1);
	lua_setfield(L, -2, "relay_from");
	luaL_setmetatable(L, LUA_KUMO_LISTENER_DOMAIN_MT);
	return 1;
}

int lua_kumo__listener_domain(lua_State *L, int idx, int *relay_to, json_t **relay_from)
{
	idx = lua_absindex(L, idx);
	if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx))
		return 0;
	luaL_getmetatable(L, LUA_KUMO_LISTENER_DOMAIN_MT);
	int is = lua_rawequal(L, -1, -2);
	lua_pop(L, 2);
	if (!is)
		return 0;
	lua_pushliteral(L, "relay_to");
	lua_rawget(L, idx);
	*relay_to = lua_toboolean(L, -1);
	lua_pop(L, 1);
	*relay_from = json_array();
	lua_pushliteral(L, "relay_from");
	lua_rawget(L, idx);
	if (lua_type(L, -1) == LUA_TTABLE) {
		size_t n = lua_rawlen(L, -1);
		for (size_t i = 1; i <= n; i++) {
			lua_rawgeti(L, -1, (lua_Integer)i);
			if (lua_type(L, -1) == LUA_TSTRING)
				json_array_append_new(*relay_from,
						      json_string(lua_tostring(L, -1)));
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
	return 1;
}

/* --- module ------------------------------------------------------------------ */

static const luaL_Reg kumo_funcs[] = {
    {"on", l_on},
    {"log_error", l_log_error},
    {"log_warn", l_log_warn},
    {"log_info", l_log_info},
    {"log_debug", l_log_debug},
    {"set_diagnostic_log_filter", l_set_diagnostic_log_filter},
    {"reject", l_reject},
    {"disconnect", l_disconnect},
    {"available_parallelism", l_available_parallelism},
    {"configure_accounting_db_path", l_configure_accounting_db_path},
    {"set_httpinject_threads", l_set_threads},
    {"set_smtpsrv_threads", l_set_threads},
    {"set_qmaint_threads", l_set_threads},
    {"set_readyq_threads", l_set_threads},
    {"set_spoolin_threads", l_set_threads},
    {"set_logging_threads", l_set_threads},
    {"start_esmtp_listener", l_start_esmtp_listener},
    {"define_spool", l_define_spool},
    {"make_listener_domain", l_make_listener_domain},
    {NULL, NULL},
};

static void create_metatables(lua_State *L)
{
	luaL_newmetatable(L, LUA_KUMO_REJECT_MT);
	lua_pushcfunction(L, reject_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pushboolean(L, 0); /* private: getmetatable() cannot reach it */
	lua_setfield(L, -2, "__metatable");
	lua_pop(L, 1);
	luaL_newmetatable(L, LUA_KUMO_LISTENER_DOMAIN_MT);
	lua_pushliteral(L, "kumo.listener_domain");
	lua_setfield(L, -2, "__name");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_pop(L, 1);
	luaL_newmetatable(L, LISTENER_CFG_MT);
	lua_pushcfunction(L, listener_cfg_gc);
	lua_setfield(L, -2, "__gc");
	lua_pop(L, 1);
}

int lua_kumo__open(lua_State *L)
{
	create_metatables(L);
	luaL_newlib(L, kumo_funcs);
	lua_json__register(L);
	return 1;
}
