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
#include "base/xalloc.h"
#include "base/memlimit.h"
#include "ctl/http.h"
#include "io/loop.h"
#include "lua/lua_int.h"
#include "policy.h"
#include "proto/cidr.h"
#include "proto/dns_name.h"
#include "proto/duration.h"
#include "proto/rate_spec.h"
#include "proto/rfc5322.h"
#include "proto/template.h"
#include "smtp/server.h"
#include "dns/resolver.h"
#include "spool/logrec.h"
#include "spool/spool.h"

/* --- kumo.on ------------------------------------------------------------- */

#define REGISTRARS_KEY "kumod.event_registrars"

/* KumoMTA's kumo.on bookkeeping for kumo.get_event_registrars: per event, one list per
 * registration of the "short_src:line" frames that called kumo.on, innermost first. */
static void record_registrar(lua_State *L, const char *name)
{
	if (lua_getfield(L, LUA_REGISTRYINDEX, REGISTRARS_KEY) != LUA_TTABLE) {
		lua_pop(L, 1);
		lua_newtable(L);
		lua_pushvalue(L, -1);
		lua_setfield(L, LUA_REGISTRYINDEX, REGISTRARS_KEY);
	}
	if (lua_getfield(L, -1, name) != LUA_TTABLE) {
		lua_pop(L, 1);
		lua_newtable(L);
		lua_pushvalue(L, -1);
		lua_setfield(L, -3, name);
	}
	lua_newtable(L);
	lua_Debug ar;
	for (int level = 1; level < 200 && lua_getstack(L, level, &ar); level++) {
		lua_getinfo(L, "Sl", &ar);
		lua_pushfstring(L, "%s:%d", ar.short_src, ar.currentline > 0 ? ar.currentline : 0);
		lua_rawseti(L, -2, level);
	}
	lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
	lua_pop(L, 2);
}

/* kumo.eval_config_monitor_globs(): the files the configuration monitor watches. kumod has
 * no configuration monitor (kumo.set_config_monitor_globs is not implemented, a policy is
 * loaded once), so it watches none: an empty list, which is what KumoMTA's helpers check. */
static int l_eval_config_monitor_globs(lua_State *L)
{
	lua_newtable(L);
	return 1;
}

/* kumo.get_event_registrars(name): those lists, or nil when nothing registered. */
static int l_get_event_registrars(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	if (lua_getfield(L, LUA_REGISTRYINDEX, REGISTRARS_KEY) != LUA_TTABLE)
		return 0;
	lua_getfield(L, -1, name);
	return 1;
}

static int l_on(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	luaL_checktype(L, 2, LUA_TFUNCTION);
	char why[512];
	int st = lua_api__event_check(name, why, sizeof(why));
	if (st != 0)
		return luaL_error(L, "%s", why);
	if (lua_engine__register(L, name, 2) != 0)
		return luaL_error(L, "%s", lua_tostring(L, -1));
	record_registrar(L, name);
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

/* set_busy_poll(duration): ours. After socket input the loop polls without
 * sleeping until no input came for this long ("50us", "0.2ms", seconds as a
 * number; 0 turns it off). Bounded to 1 s. */
/* --- memory budget (KumoMTA's names) ------------------------------------- */

static uint64_t check_bytes(lua_State *L, const char *what)
{
	lua_Integer n = luaL_checkinteger(L, 1);
	if (n < 0)
		luaL_error(L, "%s: expected a number of bytes >= 0, got %I", what, n);
	return (uint64_t)n;
}

static int l_set_memory_soft_limit(lua_State *L)
{
	memlimit_set_soft(check_bytes(L, "set_memory_soft_limit"));
	return 0;
}

static int l_set_memory_hard_limit(lua_State *L)
{
	memlimit_set_hard(check_bytes(L, "set_memory_hard_limit"));
	return 0;
}

static int l_set_memory_low_thresh(lua_State *L)
{
	memlimit_set_low_thresh(check_bytes(L, "set_memory_low_thresh"));
	return 0;
}

static int l_get_memory_soft_limit(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)memlimit_soft());
	return 1;
}

static int l_get_memory_hard_limit(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)memlimit_hard());
	return 1;
}

static int l_get_memory_low_thresh(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)memlimit_low_thresh());
	return 1;
}

static int l_set_busy_poll(lua_State *L)
{
	uint64_t us = 0;
	if (lua_type(L, 1) == LUA_TNUMBER) {
		double v = lua_tonumber(L, 1);
		if (!(v >= 0 && v <= 1))
			return luaL_error(L, "set_busy_poll: duration must be between 0 and 1s");
		us = (uint64_t)(v * 1e6 + 0.5);
	} else if (lua_type(L, 1) == LUA_TSTRING) {
		if (duration_parse_us(lua_tostring(L, 1), &us) != 0)
			return luaL_error(L, "set_busy_poll: invalid duration '%s'",
					  lua_tostring(L, 1));
		if (us > 1000000)
			return luaL_error(L, "set_busy_poll: duration must be between 0 and 1s");
	} else {
		return luaL_error(
		    L, "set_busy_poll: expected a duration (\"50us\" or seconds), got %s",
		    luaL_typename(L, 1));
	}
	kumod_loop_set_busy_poll(us);
	return 0;
}

/* --- configuration tables -------------------------------------------------- */

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
	if (duration_parse_ms(lua_tostring(L, idx), &ms) != 0)
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
		const char *name = check_str(L, -1, what);
		if (!rfc5322_name_valid(name, strlen(name)))
			luaL_error(L, "%s: '%s' is not a valid header field name", what, name);
		set_str(&cfg->trace_header_name, name);
	} else if (strcmp(k, "include_meta_names") == 0) {
		check_table(L, -1, what);
		for (size_t i = 0; i < cfg->ntrace_meta_names; i++)
			free(cfg->trace_meta_names[i]);
		size_t n = lua_rawlen(L, -1);
		cfg->trace_meta_names =
		    xrealloc(cfg->trace_meta_names, (n ? n : 1) * sizeof(char *));
		cfg->ntrace_meta_names = 0;
		for (size_t i = 1; i <= n; i++) {
			lua_rawgeti(L, -1, (lua_Integer)i);
			const char *name = check_str(L, -1, what);
			cfg->trace_meta_names[cfg->ntrace_meta_names++] = xstrdup(name);
			lua_pop(L, 1);
		}
	} else {
		lua_api__unknown_key(L, "start_esmtp_listener.trace_headers", k, NULL, 0);
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
	} else if (strcmp(k, "deferred_spool") == 0) {
		cfg->deferred_spool = check_bool(L, -1, what);
	} else if (strcmp(k, "auth_without_tls") == 0) {
		cfg->auth_without_tls = check_bool(L, -1, what);
	} else if (strcmp(k, "max_connections_per_client") == 0) {
		cfg->max_connections_per_client = check_size(L, -1, what);
	} else if (strcmp(k, "max_connection_rate_per_client") == 0) {
		struct rate_spec rs;
		const char *v = check_str(L, -1, what);
		if (rate_spec_parse(v, &rs) != 0)
			luaL_error(L, "%s: invalid rate '%s' (expected e.g. '60/min')", what, v);
		cfg->max_connection_rate_per_client = rs.limit;
		cfg->connection_rate_period_ms = rs.period_ms;
	} else if (strcmp(k, "max_received_headers") == 0) {
		cfg->max_received_headers = check_size(L, -1, what);
	} else if (strcmp(k, "data_spill_threshold") == 0) {
		cfg->data_spill_threshold = check_size(L, -1, what);
	} else if (strcmp(k, "batch_handling") == 0) {
		const char *s = check_str(L, -1, what);
		if (strcmp(s, "BifurcateAlways") == 0)
			cfg->batch_by_domain = 0;
		else if (strcmp(s, "BatchByDomain") == 0)
			cfg->batch_by_domain = 1;
		else
			luaL_error(L, "%s: expected 'BifurcateAlways' or 'BatchByDomain', got '%s'",
				   what, s);
	} else {
		lua_api__unknown_key(L, "start_esmtp_listener", k, NULL, 0);
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
	int sync_fs; /* -1 unset, 0 fsync, 1 syncfs */
	int has_rocks;
	struct spool_rocks_params rocks;
	struct spool_min_free min_space, min_inodes;
};

/* A non-negative integer rocks_params value that fits an int64. */
static int64_t rocks_int(lua_State *L, const char *what)
{
	size_t v = check_size(L, -1, what);
	if (v > (size_t)INT64_MAX)
		luaL_error(L, "%s: value too large", what);
	return (int64_t)v;
}

/* KumoMTA's rocks_params: the keys RocksDB's C API can apply are applied;
 * the others are refused by name (never silently ignored). */
static void rocks_key(lua_State *L, const char *k, void *ctx)
{
	struct spool_rocks_params *p = ctx;
	char what[96];
	snprintf(what, sizeof(what), "define_spool: rocks_params.%s", k);
	const char *refused = spool_rocks_refused_key(k);
	if (refused) {
		luaL_error(L, "%s: not supported by kumod: %s", what, refused);
	} else if (strcmp(k, "increase_parallelism") == 0) {
		p->increase_parallelism = rocks_int(L, what);
	} else if (strcmp(k, "optimize_level_style_compaction") == 0) {
		p->optimize_level_style_compaction = rocks_int(L, what);
	} else if (strcmp(k, "optimize_universal_style_compaction") == 0) {
		p->optimize_universal_style_compaction = rocks_int(L, what);
	} else if (strcmp(k, "paranoid_checks") == 0) {
		p->paranoid_checks = check_bool(L, -1, what);
	} else if (strcmp(k, "compression_type") == 0) {
		const char *v = check_str(L, -1, what);
		if ((p->compression = spool_rocks_compression(v)) < 0)
			luaL_error(
			    L,
			    "%s: expected 'None', 'Snappy', 'Zlib', 'Bz2', 'Lz4', 'Lz4hc' or "
			    "'Zstd', got '%s'",
			    what, v);
	} else if (strcmp(k, "compaction_readahead_size") == 0) {
		p->compaction_readahead_size = rocks_int(L, what);
	} else if (strcmp(k, "level_compaction_dynamic_level_bytes") == 0) {
		p->level_compaction_dynamic_level_bytes = check_bool(L, -1, what);
	} else if (strcmp(k, "max_open_files") == 0) {
		p->max_open_files = rocks_int(L, what);
	} else if (strcmp(k, "write_buffer_size") == 0) {
		p->write_buffer_size = rocks_int(L, what);
	} else if (strcmp(k, "level0_stop_writes_trigger") == 0) {
		p->level0_stop_writes_trigger = rocks_int(L, what);
	} else if (strcmp(k, "log_level") == 0) {
		const char *v = check_str(L, -1, what);
		if ((p->log_level = spool_rocks_log_level(v)) < 0)
			luaL_error(L,
				   "%s: expected 'Debug', 'Info', 'Warn', 'Error', 'Fatal' or "
				   "'Header', got '%s'",
				   what, v);
	} else if (strcmp(k, "memtable_huge_page_size") == 0) {
		p->memtable_huge_page_size = rocks_int(L, what);
	} else if (strcmp(k, "log_file_time_to_roll") == 0) {
		p->log_file_time_to_roll_s = check_duration(L, -1, what) / 1000;
	} else if (strcmp(k, "obsolete_files_period") == 0) {
		p->obsolete_files_period_us = check_duration(L, -1, what) * 1000;
	} else {
		luaL_error(L, "define_spool: rocks_params: unknown key '%s'", k);
	}
}

/* KumoMTA's MinFree: an integer count, a string of digits, or "N%". */
static struct spool_min_free check_min_free(lua_State *L, int idx, const char *what)
{
	struct spool_min_free mf = {0, 0};
	if (lua_type(L, idx) != LUA_TSTRING) {
		mf.value = check_size(L, idx, what);
		return mf;
	}
	const char *v = lua_tostring(L, idx);
	char *end = NULL;
	errno = 0;
	unsigned long long n = *v >= '0' && *v <= '9' ? strtoull(v, &end, 10) : 0;
	if (end && *end == '%' && !end[1] && n <= 100) {
		mf.value = n;
		mf.percent = 1;
	} else if (end && !*end && !errno) {
		mf.value = n;
	} else {
		luaL_error(L, "%s: expected an integer or a percentage such as '10%%', got '%s'",
			   what, v);
	}
	return mf;
}

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
		if (strcmp(d->kind, "LocalDisk") != 0 && strcmp(d->kind, "RocksDB") != 0)
			luaL_error(L, "%s: expected 'LocalDisk' or 'RocksDB', got '%s'", what,
				   d->kind);
	} else if (strcmp(k, "rocks_params") == 0) {
		check_table(L, -1, what);
		d->has_rocks = 1;
		each_key(L, lua_gettop(L), "define_spool: rocks_params", rocks_key, &d->rocks);
		if (d->rocks.optimize_level_style_compaction >= 0 &&
		    d->rocks.optimize_universal_style_compaction >= 0)
			luaL_error(L,
				   "%s: optimize_level_style_compaction and "
				   "optimize_universal_style_compaction are exclusive",
				   what);
	} else if (strcmp(k, "flush") == 0) {
		d->flush = check_bool(L, -1, what);
	} else if (strcmp(k, "sync_mode") == 0) {
		const char *m = check_str(L, -1, what);
		if (strcmp(m, "fsync") == 0)
			d->sync_fs = 0;
		else if (strcmp(m, "syncfs") == 0)
			d->sync_fs = 1;
		else
			luaL_error(L, "%s: expected 'fsync' or 'syncfs', got '%s'", what, m);
	} else if (strcmp(k, "min_free_space") == 0) {
		d->min_space = check_min_free(L, -1, what);
	} else if (strcmp(k, "min_free_inodes") == 0) {
		d->min_inodes = check_min_free(L, -1, what);
	} else {
		static const char *const ours[] = {"sync_mode"};
		lua_api__unknown_key(L, "define_spool", k, ours, 1);
	}
}

static int l_define_spool(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	struct spool_def d = {.kind = "LocalDisk",
			      .flush = 1,
			      .sync_fs = -1,
			      .min_space = {10, 1}, /* KumoMTA's defaults: 10% */
			      .min_inodes = {10, 1}};
	spool_rocks_params_init(&d.rocks);
	each_key(L, 1, "define_spool", spool_key, &d);
	if (!d.name)
		return luaL_error(L, "define_spool: missing key 'name'");
	if (!d.path)
		return luaL_error(L, "define_spool: missing key 'path'");
	if (strcmp(d.name, "data") != 0 && strcmp(d.name, "meta") != 0)
		return luaL_error(L, "define_spool: name must be 'data' or 'meta', got '%s'",
				  d.name);
	log_debug("kumod::spool", "define_spool name=%s path=%s kind=%s flush=%d sync_mode=%s",
		  d.name, d.path, d.kind, d.flush, d.sync_fs == 1 ? "syncfs" : "fsync");
	static char *paths[2];
	static int flush = 1, sync_fs = -1;
	static struct spool_min_free min_space[2], min_inodes[2];
	int i = strcmp(d.name, "data") == 0 ? 0 : 1;
	/* kind and rocks_params, per spool; both spools must share the kind */
	static int kinds[2] = {-1, -1};
	static struct spool_rocks_params rocks[2];
	static int has_rocks[2];
	int kind = strcmp(d.kind, "RocksDB") == 0 ? SPOOL_KIND_ROCKSDB : SPOOL_KIND_LOCALDISK;
	if (d.has_rocks && kind != SPOOL_KIND_ROCKSDB)
		return luaL_error(L, "define_spool: rocks_params: only for kind = 'RocksDB'");
	if (kinds[!i] >= 0 && kinds[!i] != kind)
		return luaL_error(L,
				  "define_spool: kind: 'data' and 'meta' must use the same kind "
				  "(got '%s' for '%s' and the other kind for '%s')",
				  d.kind, d.name, i ? "data" : "meta");
	kinds[i] = kind;
	rocks[i] = d.rocks;
	has_rocks[i] = d.has_rocks;
	free(paths[i]);
	paths[i] = strdup(d.path);
	min_space[i] = d.min_space;
	min_inodes[i] = d.min_inodes;
	if (!d.flush)
		flush = 0;
	/* one flusher serves both spools: they must agree */
	if (d.sync_fs >= 0 && sync_fs >= 0 && d.sync_fs != sync_fs)
		return luaL_error(L, "define_spool: sync_mode: 'data' and 'meta' must use the same "
				     "sync_mode");
	if (d.sync_fs >= 0)
		sync_fs = d.sync_fs;
	if (!paths[0] || !paths[1] || lua_engine__validating() || spool_is_open())
		return 0;
	struct spool_config sc = {
	    .data_path = paths[0],
	    .meta_path = paths[1],
	    .flush = flush,
	    .sync_fs = sync_fs == 1,
	    .kind = (enum spool_kind)kind,
	    .rocks = {has_rocks[0] ? &rocks[0] : NULL, has_rocks[1] ? &rocks[1] : NULL},
	    .data_min_free_space = min_space[0],
	    .data_min_free_inodes = min_inodes[0],
	    .meta_min_free_space = min_space[1],
	    .meta_min_free_inodes = min_inodes[1]};
	char err[512] = "";
	int rc = spool_open(kumod_loop(), &sc, err, sizeof(err));
	free(paths[0]);
	free(paths[1]);
	paths[0] = paths[1] = NULL;
	sync_fs = -1;
	kinds[0] = kinds[1] = -1;
	if (rc != 0)
		return luaL_error(L, "define_spool: %s", err[0] ? err : "cannot open the spool");
	return 0;
}

/* --- make_listener_domain ---------------------------------------------------- */

/* A list of strings at idx (raises naming what otherwise). */
static void check_str_list(lua_State *L, int idx, const char *what)
{
	check_table(L, idx, what);
	for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, idx); i++) {
		lua_rawgeti(L, idx, i);
		check_str(L, -1, what);
		lua_pop(L, 1);
	}
}

/* The strings of the list in field key of the table at idx, as a JSON array. */
static json_t *str_list_json(lua_State *L, int idx, const char *key)
{
	json_t *a = json_array();
	lua_pushstring(L, key);
	lua_rawget(L, idx);
	if (lua_type(L, -1) == LUA_TTABLE) {
		size_t n = lua_rawlen(L, -1);
		for (size_t i = 1; i <= n; i++) {
			lua_rawgeti(L, -1, (lua_Integer)i);
			if (lua_type(L, -1) == LUA_TSTRING)
				json_array_append_new(a, json_string(lua_tostring(L, -1)));
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
	return a;
}

/* log_arf / log_oob: KumoMTA's LogReportDisposition (false = "Ignore",
 * true = "LogThenRelay", or one of the three names); raises otherwise. */
static int log_report_value(lua_State *L, int idx, const char *what)
{
	static const char *const names[] = {"Ignore", "LogThenRelay", "LogThenDrop"};
	if (lua_type(L, idx) == LUA_TBOOLEAN)
		return lua_toboolean(L, idx) ? POLICY_LOG_REPORT_RELAY : POLICY_LOG_REPORT_IGNORE;
	if (lua_type(L, idx) == LUA_TSTRING)
		for (int i = 0; i < 3; i++)
			if (strcmp(lua_tostring(L, idx), names[i]) == 0)
				return i;
	return luaL_error(
	    L,
	    "%s: expected a boolean value or one of 'Ignore', 'LogThenDrop' or "
	    "'LogThenRelay', but got %s",
	    what, lua_type(L, idx) == LUA_TSTRING ? lua_tostring(L, idx) : luaL_typename(L, idx));
}

static void listener_domain_key(lua_State *L, const char *k, void *ctx)
{
	char what[64];
	snprintf(what, sizeof(what), "make_listener_domain: %s", k);
	if (strcmp(k, "relay_to") == 0)
		check_bool(L, -1, what);
	else if (strcmp(k, "relay_from") == 0)
		check_cidrs(L, lua_gettop(L), what, NULL);
	else if (strcmp(k, "relay_from_authz") == 0)
		check_str_list(L, lua_gettop(L), what);
	else if (strcmp(k, "log_arf") == 0 || strcmp(k, "log_oob") == 0)
		(void)log_report_value(L, -1, what);
	else
		lua_api__unknown_key(L, "make_listener_domain", k, NULL, 0);
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
	lua_getfield(L, 1, "relay_from_authz");
	lua_setfield(L, -2, "relay_from_authz");
	static const char *const logs[] = {"log_arf", "log_oob"};
	for (int i = 0; i < 2; i++) { /* kept as 0 Ignore, 1 LogThenRelay, 2 LogThenDrop */
		lua_getfield(L, 1, logs[i]);
		int v =
		    lua_isnil(L, -1) ? POLICY_LOG_REPORT_IGNORE : log_report_value(L, -1, logs[i]);
		lua_pop(L, 1);
		lua_pushinteger(L, v);
		lua_setfield(L, -2, logs[i]);
	}
	luaL_setmetatable(L, LUA_KUMO_LISTENER_DOMAIN_MT);
	return 1;
}

void lua_kumo__listener_domain_logs(lua_State *L, int idx, int *log_arf, int *log_oob)
{
	idx = lua_absindex(L, idx);
	lua_pushliteral(L, "log_arf");
	lua_rawget(L, idx);
	*log_arf = (int)lua_tointeger(L, -1);
	lua_pushliteral(L, "log_oob");
	lua_rawget(L, idx);
	*log_oob = (int)lua_tointeger(L, -1);
	lua_pop(L, 2);
}

int lua_kumo__listener_domain(lua_State *L, int idx, int *relay_to, json_t **relay_from,
			      json_t **relay_from_authz)
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
	*relay_from = str_list_json(L, idx, "relay_from");
	*relay_from_authz = str_list_json(L, idx, "relay_from_authz");
	return 1;
}

/* --- tagged configuration builders ------------------------------------------ */

enum cfg_type {
	CT_DUR,
	CT_STR,
	CT_INT,
	CT_BOOL,
	CT_STRLIST,
	CT_ANY,
	CT_TLS,
	CT_CIDRS,
	CT_PROTO,
	CT_RATE,   /* throttle spec "N/period" (proto/rate_spec.h) */
	CT_IP,	   /* an IPv4 or IPv6 address literal ("[v6]" too) */
	CT_SECRET, /* a KumoMTA keysource: a file path, or { key_data = '...' } */
};

struct cfg_key {
	const char *key;
	enum cfg_type type;
	/* A KumoMTA key whose other values kumod does not implement: why says
	 * so, only lists the accepted values ("false", "Ttl|Epoch", "{}" for an
	 * empty table, "0" for a zero duration; NULL: none). Anything else is a
	 * policy error, never silently ignored. */
	const char *why;
	const char *only;
};

/* protocol = { custom_lua = { constructor = 'event.name', batch_size,
 * min_batch_size, max_batch_latency } }: KumoMTA's keys. batch_size > 1
 * calls the connection's send_batch(msgs) instead of send(msg). */
static void check_custom_lua(lua_State *L, int idx, const char *what)
{
	size_t batch = 1, min_batch = 1;
	check_table(L, idx, what);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
		char kwhat[160];
		snprintf(kwhat, sizeof(kwhat), "%s: custom_lua.%s", what, k);
		if (strcmp(k, "constructor") == 0) {
			if (lua_type(L, -1) != LUA_TSTRING || !lua_rawlen(L, -1))
				luaL_error(L, "%s: custom_lua.constructor must be an event name",
					   what);
		} else if (strcmp(k, "batch_size") == 0 || strcmp(k, "min_batch_size") == 0) {
			size_t n = check_size(L, -1, kwhat);
			if (n < 1 || n > 100000)
				luaL_error(L, "%s: must be 1 to 100000", kwhat);
			*(k[0] == 'b' ? &batch : &min_batch) = n;
		} else if (strcmp(k, "max_batch_latency") == 0) {
			(void)check_duration(L, -1, kwhat);
		} else {
			luaL_error(L,
				   "%s: unknown custom_lua key '%s' (expected constructor, "
				   "batch_size, min_batch_size or max_batch_latency)",
				   what, k);
		}
		lua_pop(L, 1);
	}
	if (min_batch > batch)
		luaL_error(L,
			   "%s: custom_lua.min_batch_size %d is larger than batch_size %d (the "
			   "most a batch holds)",
			   what, (int)min_batch, (int)batch);
	lua_getfield(L, idx, "constructor");
	if (lua_isnil(L, -1))
		luaL_error(L, "%s: custom_lua needs a constructor (the event to call)", what);
	lua_pop(L, 1);
}

static void check_mx_entry(lua_State *L, int idx, const char *what, int i);

/* protocol = { smtp = { mx_list = {...} } } or { custom_lua = {...} }. */
static void check_smtp_proto(lua_State *L, int idx, const char *what)
{
	check_table(L, idx, what);
	lua_getfield(L, idx, "mx_list");
	if (!lua_isnil(L, -1)) {
		check_table(L, -1, what);
		size_t n = lua_rawlen(L, -1);
		if (n == 0)
			luaL_error(L, "%s: smtp.mx_list is empty", what);
		for (size_t i = 1; i <= n; i++) {
			lua_rawgeti(L, -1, (lua_Integer)i);
			if (lua_type(L, -1) == LUA_TTABLE)
				check_mx_entry(L, lua_gettop(L), what, (int)i);
			else
				check_str(L, -1, what);
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
}

static void check_protocol(lua_State *L, int idx, const char *what)
{
	check_table(L, idx, what);
	int n = 0;
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		const char *pk = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
		if (strcmp(pk, "smtp") == 0)
			check_smtp_proto(L, lua_gettop(L), what);
		else if (strcmp(pk, "custom_lua") == 0)
			check_custom_lua(L, lua_gettop(L), what);
		else
			luaL_error(L,
				   "%s: only the 'smtp' and 'custom_lua' protocols are supported, "
				   "got '%s'",
				   what, pk);
		n++;
		lua_pop(L, 1);
	}
	if (n > 1)
		luaL_error(L, "%s: give one protocol, 'smtp' or 'custom_lua'", what);
}

/* The value at idx is one of the '|'-separated texts in only (see cfg_key). */
static int cfg_value_allowed(lua_State *L, int idx, const struct cfg_key *c)
{
	if (!c->only)
		return 0;
	char val[128];
	switch (lua_type(L, idx)) {
	case LUA_TBOOLEAN:
		snprintf(val, sizeof(val), "%s", lua_toboolean(L, idx) ? "true" : "false");
		break;
	case LUA_TTABLE:
		lua_pushnil(L);
		if (lua_next(L, idx)) {
			lua_pop(L, 2);
			snprintf(val, sizeof(val), "non-empty table");
		} else {
			snprintf(val, sizeof(val), "{}");
		}
		break;
	case LUA_TSTRING:
	case LUA_TNUMBER:
		if (c->type == CT_DUR) {
			uint64_t ms = check_duration(L, idx, c->key);
			snprintf(val, sizeof(val), "%llu", (unsigned long long)ms);
		} else {
			snprintf(val, sizeof(val), "%s", lua_tostring(L, idx));
		}
		break;
	default:
		return 0;
	}
	size_t n = strlen(val);
	for (const char *p = c->only; *p;) {
		const char *e = strchr(p, '|');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		if (len == n && memcmp(p, val, n) == 0)
			return 1;
		p += len + (e ? 1 : 0);
	}
	return 0;
}

/* Validates every key of the table at 1 against spec and returns a new
 * table with normalised values (durations as "<key>_ms" milliseconds)
 * tagged with metatable mt. Unknown keys are an error naming the key. */
/* An mx_list entry { name = 'mx.example', addr = 'IP' or 'IP:port' } (KumoMTA):
 * connect to addr, use name as the MX host name (TLS name, logs). */
static void check_mx_entry(lua_State *L, int idx, const char *what, int i)
{
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
		if (strcmp(k, "name") != 0 && strcmp(k, "addr") != 0)
			luaL_error(L, "%s: smtp.mx_list entry %d: unknown key '%s' (name, addr)",
				   what, i, k);
		lua_pop(L, 1);
	}
	lua_getfield(L, idx, "name");
	lua_getfield(L, idx, "addr");
	if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
		luaL_error(L, "%s: smtp.mx_list entry %d: needs name and addr strings", what, i);
	char host[128];
	const char *addr = lua_tostring(L, -1);
	struct sockaddr_storage ss;
	const char *colon = strrchr(addr, ':');
	/* "IP", "[v6]", "IP:port", "[v6]:port"; a bare v6 has several colons */
	size_t n = colon && (addr[0] == '[' || strchr(addr, ':') == colon) ? (size_t)(colon - addr)
									   : strlen(addr);
	if (n && addr[n - 1] != ']' && addr[0] == '[')
		n = strlen(addr);
	snprintf(host, sizeof(host), "%.*s", (int)n, addr);
	if (dns_literal_parse(host, &ss) != 1 ||
	    (n < strlen(addr) && (atoi(addr + n + 1) < 1 || atoi(addr + n + 1) > 65535)))
		luaL_error(L, "%s: smtp.mx_list entry %d: addr '%s' is not an IP address[:port]",
			   what, i, addr);
	lua_pop(L, 2);
}

static int make_tagged(lua_State *L, const char *fname, const struct cfg_key *spec, const char *mt)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_newtable(L);
	int out = lua_gettop(L);
	lua_pushnil(L);
	while (lua_next(L, 1)) {
		if (lua_type(L, -2) != LUA_TSTRING)
			return luaL_error(L, "%s: keys must be strings, got %s", fname,
					  luaL_typename(L, -2));
		const char *k = lua_tostring(L, -2);
		const struct cfg_key *c = spec;
		while (c->key && strcmp(c->key, k) != 0)
			c++;
		if (!c->key) {
			const char *ours[64];
			size_t n = 0;
			for (c = spec; c->key && n < 64; c++)
				ours[n++] = c->key;
			return lua_api__unknown_key(L, fname, k, ours, n);
		}
		char what[128];
		snprintf(what, sizeof(what), "%s: %s", fname, k);
		int v = lua_gettop(L);
		if (c->why && !cfg_value_allowed(L, v, c)) {
			if (c->only)
				return luaL_error(L, "%s: %s (accepted: %s)", what, c->why,
						  c->only);
			return luaL_error(L, "%s: %s", what, c->why);
		}
		switch (c->type) {
		case CT_DUR: {
			uint64_t ms = check_duration(L, v, what);
			char key[96];
			snprintf(key, sizeof(key), "%s_ms", k);
			lua_pushinteger(L, (lua_Integer)ms);
			lua_setfield(L, out, key);
			break;
		}
		case CT_STR:
			check_str(L, v, what);
			break;
		case CT_INT:
			check_size(L, v, what);
			break;
		case CT_BOOL:
			check_bool(L, v, what);
			break;
		case CT_CIDRS:
			check_cidrs(L, v, what, NULL);
			break;
		case CT_STRLIST: {
			check_table(L, v, what);
			size_t n = lua_rawlen(L, v);
			for (size_t i = 1; i <= n; i++) {
				lua_rawgeti(L, v, (lua_Integer)i);
				check_str(L, -1, what);
				lua_pop(L, 1);
			}
			break;
		}
		case CT_TLS: {
			static const char *const modes[] = {"Opportunistic",
							    "OpportunisticInsecure", "Required",
							    "RequiredInsecure", "Disabled"};
			const char *m = check_str(L, v, what);
			size_t i = 0;
			while (i < 5 && strcmp(modes[i], m) != 0)
				i++;
			if (i == 5)
				return luaL_error(
				    L,
				    "%s: expected Opportunistic, OpportunisticInsecure, "
				    "Required, RequiredInsecure or Disabled, got '%s'",
				    what, m);
			break;
		}
		case CT_PROTO:
			check_protocol(L, v, what);
			break;
		case CT_RATE: {
			struct rate_spec rs;
			const char *text = check_str(L, v, what);
			if (rate_spec_parse(text, &rs) != 0)
				return luaL_error(L,
						  "%s: expected a rate such as '100/s', '1,000/hr' "
						  "or '10/m', got '%s'",
						  what, text);
			break;
		}
		case CT_SECRET: {
			const char *path, *data;
			size_t dlen;
			lua_util__keysource(L, v, what, &path, &data, &dlen);
			break;
		}
		case CT_IP: {
			const char *ip = check_str(L, v, what);
			struct sockaddr_storage ss;
			if (dns_literal_parse(ip, &ss) != 1)
				return luaL_error(
				    L, "%s: expected an IPv4 or IPv6 address, got '%s'", what, ip);
			break;
		}
		case CT_ANY:
			break;
		}
		if (c->type != CT_DUR) {
			lua_pushvalue(L, v);
			lua_setfield(L, out, k);
		}
		lua_settop(L, v - 1); /* keep the key for lua_next */
	}
	luaL_setmetatable(L, mt);
	return 1;
}

static const struct cfg_key queue_config_keys[] = {
    {"retry_interval", CT_DUR, NULL, NULL},
    {"max_retry_interval", CT_DUR, NULL, NULL},
    {"max_age", CT_DUR, NULL, NULL},
    {"egress_pool", CT_STR, NULL, NULL},
    {"protocol", CT_PROTO, NULL, NULL},
    {"max_message_rate", CT_STR,
     "a scheduled-queue message rate is not implemented; "
     "make_egress_path{ max_message_rate } throttles the ready queue",
     NULL},
    {"reap_interval", CT_DUR, NULL, NULL},
    {"refresh_interval", CT_DUR, NULL, NULL},
    /* Epoch: asked again when the configuration epoch changes; kumod's never
     * changes while it runs (no config monitor), so once per process */
    {"refresh_strategy", CT_STR, "not a KumoMTA refresh strategy", "Ttl|Epoch"},
    /* KumoMTA's choice of internal timer structure: kumod has one heap for all */
    {"strategy", CT_STR, "not a KumoMTA queue strategy",
     "SingletonTimerWheel|SingletonTimerWheelV2|TimerWheel|SkipList"},
    /* tuning knobs of that structure: no effect here */
    {"timerwheel_tick_interval", CT_DUR, NULL, NULL},
    {"shrink_policy", CT_ANY, NULL, NULL},
    {"provider_name", CT_STR, "provider grouping is not implemented", NULL},
    {NULL, CT_ANY, NULL, NULL},
};

static int l_make_queue_config(lua_State *L)
{
	return make_tagged(L, "make_queue_config", queue_config_keys, LUA_KUMO_QUEUE_CONFIG_MT);
}

static const struct cfg_key egress_path_keys[] = {
    {"connection_limit", CT_INT, NULL, NULL},
    {"max_ready", CT_INT, NULL, NULL},
    {"max_deliveries_per_connection", CT_INT, NULL, NULL},
    {"max_recipients_per_batch", CT_INT,
     "splitting a message's recipients over several transactions is not implemented; "
     "a batch holds at most the listener's max_recipients_per_message",
     NULL},
    {"max_message_rate", CT_RATE, NULL, NULL},
    {"max_connection_rate", CT_RATE, NULL, NULL},
    {"enable_tls", CT_TLS, NULL, NULL},
    {"tls_ca_file", CT_STR, NULL, NULL}, /* ours: PEM trust anchors for Required/Opportunistic */
    {"enable_pipelining", CT_BOOL, NULL, NULL},
    {"enable_rset", CT_BOOL, "closing instead of RSET is not implemented", "true"},
    {"enable_mta_sts", CT_BOOL, "MTA-STS is not implemented", "false"},
    {"enable_dane", CT_BOOL, "DANE is not implemented", "false"},
    {"smtp_port", CT_INT, NULL, NULL},
    {"prohibited_hosts", CT_CIDRS, NULL, NULL},
    {"skip_hosts", CT_CIDRS, NULL, NULL},
    {"ehlo_domain", CT_STR, NULL, NULL},
    {"consecutive_connection_failures_before_delay", CT_INT,
     "delaying a site after connection failures is not implemented", NULL},
    {"reconnect_strategy", CT_STR, "only trying the next host is implemented", "ConnectNextHost"},
    {"connect_timeout", CT_DUR, NULL, NULL},
    {"banner_timeout", CT_DUR, NULL, NULL},
    {"auth_timeout", CT_DUR, NULL, NULL},
    {"smtp_auth_plain_username", CT_STR, NULL, NULL},
    {"smtp_auth_plain_password", CT_SECRET, NULL, NULL},
    {"allow_smtp_auth_plain_without_tls", CT_BOOL, NULL, NULL},
    {"ehlo_timeout", CT_DUR, NULL, NULL},
    {"mail_from_timeout", CT_DUR, NULL, NULL},
    {"rcpt_to_timeout", CT_DUR, NULL, NULL},
    {"data_timeout", CT_DUR, NULL, NULL},
    {"data_dot_timeout", CT_DUR, NULL, NULL},
    {"rset_timeout", CT_DUR, NULL, NULL},
    {"idle_timeout", CT_DUR, NULL, NULL},
    {"starttls_timeout", CT_DUR, NULL, NULL},
    {"refresh_interval", CT_DUR, NULL, NULL},
    {"refresh_strategy", CT_STR, "not a KumoMTA refresh strategy", "Ttl|Epoch"},
    {"source_selection_rate", CT_STR, "source selection rates are not implemented", NULL},
    {"dispatcher_progress_watchdog_timeout", CT_DUR, "the dispatcher watchdog is not implemented",
     NULL},
    {NULL, CT_ANY, NULL, NULL},
};

static int l_make_egress_path(lua_State *L)
{
	return make_tagged(L, "make_egress_path", egress_path_keys, LUA_KUMO_EGRESS_PATH_MT);
}

static const struct cfg_key egress_source_keys[] = {
    {"name", CT_STR, NULL, NULL},
    {"source_address", CT_IP, NULL, NULL},
    {"ehlo_domain", CT_STR, NULL, NULL},
    {"remote_port", CT_INT, NULL, NULL},
    {"ttl", CT_DUR, NULL, NULL},
    {"ha_proxy_server", CT_STR, "HAProxy egress is not implemented", NULL},
    {"ha_proxy_source_address", CT_STR, "HAProxy egress is not implemented", NULL},
    {"socks5_proxy_server", CT_STR, "SOCKS5 egress is not implemented", NULL},
    {"socks5_proxy_source_address", CT_STR, "SOCKS5 egress is not implemented", NULL},
    {"suspend_when_unplumbed", CT_BOOL,
     "suspending instead of failing an unplumbed source_address is not implemented", "false"},
    {NULL, CT_ANY, NULL, NULL},
};

static int l_make_egress_source(lua_State *L)
{
	make_tagged(L, "make_egress_source", egress_source_keys, LUA_KUMO_EGRESS_SOURCE_MT);
	lua_getfield(L, -1, "name");
	if (lua_isnil(L, -1))
		return luaL_error(L, "make_egress_source: missing key 'name'");
	lua_pop(L, 1);
	return 1;
}

static const struct cfg_key egress_pool_keys[] = {
    {"name", CT_STR, NULL, NULL},
    {"entries", CT_ANY, NULL, NULL},
    {"ttl", CT_DUR, NULL, NULL},
    {NULL, CT_ANY, NULL, NULL},
};

static int l_make_egress_pool(lua_State *L)
{
	make_tagged(L, "make_egress_pool", egress_pool_keys, LUA_KUMO_EGRESS_POOL_MT);
	lua_getfield(L, -1, "name");
	if (lua_isnil(L, -1))
		return luaL_error(L, "make_egress_pool: missing key 'name'");
	lua_pop(L, 1);
	lua_getfield(L, -1, "entries");
	if (lua_type(L, -1) != LUA_TTABLE)
		return luaL_error(L,
				  "make_egress_pool: 'entries' must be a list of {name=, weight=}");
	size_t n = lua_rawlen(L, -1);
	for (size_t i = 1; i <= n; i++) {
		lua_rawgeti(L, -1, (lua_Integer)i);
		if (lua_type(L, -1) != LUA_TTABLE)
			return luaL_error(L, "make_egress_pool: entries[%d] must be a table",
					  (int)i);
		lua_getfield(L, -1, "name");
		if (lua_type(L, -1) != LUA_TSTRING)
			return luaL_error(L, "make_egress_pool: entries[%d].name must be a string",
					  (int)i);
		lua_getfield(L, -2, "weight");
		if (!lua_isnil(L, -1) && (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0 ||
					  lua_tointeger(L, -1) > 1000000))
			return luaL_error(L,
					  "make_egress_pool: entries[%d].weight must be an integer "
					  "from 0 to 1000000",
					  (int)i);
		lua_pop(L, 3);
	}
	lua_pop(L, 1);
	return 1;
}

/* --- configure_local_logs ---------------------------------------------------- */

static const struct cfg_key local_logs_keys[] = {
    {"log_dir", CT_STR, NULL, NULL},
    {"max_file_size", CT_INT, NULL, NULL},
    {"max_segment_duration", CT_DUR, NULL, NULL},
    {"compression_level", CT_ANY, NULL, NULL},
    {"back_pressure", CT_INT, NULL, NULL},
    {"meta", CT_STRLIST, NULL, NULL},
    {"headers", CT_STRLIST, NULL, NULL},
    {"per_record", CT_ANY, NULL, NULL},
    {"filter_event", CT_STR, NULL, NULL},
    {NULL, CT_ANY, NULL, NULL},
};

static size_t collect_strs(lua_State *L, int t, const char *key, const char **out, size_t max)
{
	lua_getfield(L, t, key);
	size_t n = 0;
	if (lua_type(L, -1) == LUA_TTABLE) {
		size_t len = lua_rawlen(L, -1);
		for (size_t i = 1; i <= len && n < max; i++) {
			lua_rawgeti(L, -1, (lua_Integer)i);
			out[n++] = lua_tostring(L, -1);
			lua_pop(L, 1); /* the string stays alive in the table */
		}
	}
	lua_pop(L, 1);
	return n;
}

#define MAX_PER_RECORD 16

/* per_record = { <Type>|Any = { suffix, log_dir, enable, template, segment_header } }
 * into pr (strings borrowed from the config table, which stays on the
 * stack); returns how many. Raises on an unknown type or key. */
static size_t collect_per_record(lua_State *L, int t, struct logrec_per_record *pr)
{
	static const char *const keys[] = {"suffix", "log_dir", "enable", "template",
					   "segment_header"};
	size_t n = 0;
	lua_getfield(L, t, "per_record");
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		return 0;
	}
	if (!lua_istable(L, -1))
		luaL_error(L, "configure_local_logs: per_record must be a table of record types");
	int tab = lua_gettop(L);
	lua_pushnil(L);
	while (lua_next(L, tab)) {
		if (lua_type(L, -2) != LUA_TSTRING)
			luaL_error(L,
				   "configure_local_logs: per_record keys are record type names");
		const char *type = lua_tostring(L, -2);
		int ti = logrec_record_type_index(type);
		if (ti < 0)
			luaL_error(L,
				   "configure_local_logs: per_record: unknown record type '%s' "
				   "(Reception, Delivery, Bounce, TransientFailure, Expiration, "
				   "AdminBounce, OOB, Feedback, Rejection, AdminRebind, "
				   "DeferredInjectionRebind, Delayed, XferOut, XferIn or Any)",
				   type);
		if (!lua_istable(L, -1))
			luaL_error(L, "configure_local_logs: per_record.%s must be a table", type);
		if (n == MAX_PER_RECORD)
			luaL_error(L, "configure_local_logs: per_record: too many entries");
		struct logrec_per_record *p = &pr[n++];
		*p = (struct logrec_per_record){.type = type, .enable = 1};
		lua_pushnil(L);
		while (lua_next(L, -2)) {
			const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
			size_t ki = 0;
			while (ki < sizeof(keys) / sizeof(keys[0]) && strcmp(keys[ki], k) != 0)
				ki++;
			if (ki == sizeof(keys) / sizeof(keys[0]))
				luaL_error(L,
					   "configure_local_logs: per_record.%s: unknown key '%s' "
					   "(suffix, log_dir, enable, template, segment_header)",
					   type, k);
			if (ki == 2) {
				if (!lua_isboolean(L, -1))
					luaL_error(
					    L,
					    "configure_local_logs: per_record.%s.enable must "
					    "be a boolean",
					    type);
				p->enable = lua_toboolean(L, -1);
			} else {
				if (lua_type(L, -1) != LUA_TSTRING)
					luaL_error(
					    L,
					    "configure_local_logs: per_record.%s.%s must be a "
					    "string",
					    type, k);
				const char *v = lua_tostring(L, -1); /* kept alive by the table */
				if (ki == 0)
					p->suffix = v;
				else if (ki == 1)
					p->log_dir = v;
				else if (ki == 3)
					p->tmpl = v;
				else
					p->segment_header = v;
			}
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	return n;
}

static int l_configure_local_logs(lua_State *L)
{
	make_tagged(L, "configure_local_logs", local_logs_keys, LUA_KUMO_LOGS_MT);
	int t = lua_gettop(L);
	lua_getfield(L, t, "log_dir");
	const char *dir = lua_tostring(L, -1);
	lua_pop(L, 1);
	if (!dir)
		return luaL_error(L, "configure_local_logs: missing key 'log_dir'");
	struct logrec_config c = {.log_dir = dir};
	lua_getfield(L, t, "max_file_size");
	c.max_file_size = (uint64_t)lua_tointeger(L, -1);
	lua_getfield(L, t, "max_segment_duration_ms");
	c.max_segment_duration_ms = (uint64_t)lua_tointeger(L, -1);
	lua_getfield(L, t, "compression_level");
	/* KumoMTA: 0 (the default) means zstd's default level 3; ours adds
	 * "none" for plain-text segments. */
	if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "none") == 0)
		c.compression_level = 0;
	else if (lua_isnil(L, -1) || (lua_isinteger(L, -1) && lua_tointeger(L, -1) == 0))
		c.compression_level = 3;
	else if (lua_isinteger(L, -1) && lua_tointeger(L, -1) > 0 && lua_tointeger(L, -1) <= 22)
		c.compression_level = (int)lua_tointeger(L, -1);
	else
		return luaL_error(L, "configure_local_logs: compression_level must be 0..22 or "
				     "\"none\"");
	lua_getfield(L, t, "back_pressure");
	c.back_pressure = (size_t)lua_tointeger(L, -1);
	lua_pop(L, 4);
	const char *headers[64], *meta[64];
	c.headers = headers;
	c.nheaders = collect_strs(L, t, "headers", headers, 64);
	c.meta = meta;
	c.nmeta = collect_strs(L, t, "meta", meta, 64);
	struct logrec_per_record pr[MAX_PER_RECORD];
	c.per_record = pr;
	c.nper_record = collect_per_record(L, t, pr);
	lua_getfield(L, t, "filter_event");
	c.filter_event = lua_tostring(L, -1); /* kept alive by the table */
	lua_pop(L, 1);
	if (lua_engine__validating()) {
		/* templates are checked when validating too */
		for (size_t i = 0; i < c.nper_record; i++) {
			struct tmpl_error te;
			struct tmpl *tp =
			    pr[i].tmpl ? tmpl_compile(pr[i].tmpl, strlen(pr[i].tmpl), &te) : NULL;
			if (pr[i].tmpl && !tp)
				return luaL_error(L,
						  "configure_local_logs: per_record.%s.template: "
						  "line %d column %d: %s",
						  pr[i].type, te.line, te.column, te.msg);
			tmpl_free(tp);
		}
		return 0;
	}
	char err[512] = "";
	if (logrec_configure(&c, err, sizeof(err)) != 0)
		return luaL_error(L, "configure_local_logs: %s", err[0] ? err : "failed");
	return 0;
}

/* --- kumo.dns ------------------------------------------------------------------ */

static int l_dns_configure_resolver(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	char servers[1024] = "";
	size_t off = 0;
	lua_pushnil(L);
	while (lua_next(L, 1)) {
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
		if (strcmp(k, "name_servers") == 0) {
			check_table(L, -1, "dns.configure_resolver: name_servers");
			size_t n = lua_rawlen(L, -1);
			for (size_t i = 1; i <= n; i++) {
				lua_rawgeti(L, -1, (lua_Integer)i);
				const char *sv =
				    check_str(L, -1, "dns.configure_resolver: name_servers");
				int w = snprintf(servers + off, sizeof(servers) - off, "%s%s",
						 off ? "," : "", sv);
				if (w < 0 || (size_t)w >= sizeof(servers) - off)
					return luaL_error(
					    L, "dns.configure_resolver: too many servers");
				off += (size_t)w;
				lua_pop(L, 1);
			}
		} else if (strcmp(k, "options") != 0 && strcmp(k, "domain") != 0 &&
			   strcmp(k, "search") != 0) {
			return luaL_error(L, "dns.configure_resolver: unknown key '%s'", k);
		}
		lua_pop(L, 1);
	}
	if (!off)
		return luaL_error(L, "dns.configure_resolver: name_servers is required");
	if (lua_engine__validating())
		return 0;
	char err[256] = "";
	if (dns_set_servers(servers, err, sizeof(err)) != 0)
		return luaL_error(L, "dns.configure_resolver: %s", err);
	return 0;
}

static const luaL_Reg dns_funcs[] = {
    {"configure_resolver", l_dns_configure_resolver},
    {NULL, NULL},
};

/* --- kumo.shaping ------------------------------------------------------------ */

/* kumo.shaping.load(files, validation_options): the shaping data, loaded and
 * merged by kumod's own Lua module (share/policy-extras/kumod_shaping.lua,
 * which kumod's policy-extras.shaping uses too). */
static int l_shaping_load(lua_State *L)
{
	int n = lua_gettop(L);
	lua_getglobal(L, "require");
	lua_pushliteral(L, "policy-extras.kumod_shaping");
	lua_call(L, 1, 1);
	lua_getfield(L, -1, "load");
	lua_remove(L, -2);
	lua_insert(L, 1);
	lua_call(L, n, 1);
	return 1;
}

static const luaL_Reg shaping_funcs[] = {
    {"load", l_shaping_load},
    {NULL, NULL},
};

/* --- start_http_listener ---------------------------------------------------- */

#define HTTP_CFG_MT "kumod.http_listener_config"

static int http_cfg_gc(lua_State *L)
{
	http_listener_config_free(luaL_checkudata(L, 1, HTTP_CFG_MT));
	return 0;
}

static void http_listener_key(lua_State *L, const char *k, void *ctx)
{
	struct http_listener_config *cfg = ctx;
	char what[96];
	snprintf(what, sizeof(what), "start_http_listener: %s", k);
	if (strcmp(k, "listen") == 0) {
		set_str(&cfg->listen, check_str(L, -1, what));
	} else if (strcmp(k, "hostname") == 0) {
		set_str(&cfg->hostname, check_str(L, -1, what));
	} else if (strcmp(k, "use_tls") == 0) {
		cfg->use_tls = check_bool(L, -1, what);
	} else if (strcmp(k, "tls_certificate") == 0) {
		set_str(&cfg->tls_certificate, check_str(L, -1, what));
	} else if (strcmp(k, "tls_private_key") == 0) {
		set_str(&cfg->tls_private_key, check_str(L, -1, what));
	} else if (strcmp(k, "trusted_hosts") == 0) {
		cidr_list_free(&cfg->trusted_hosts);
		memset(&cfg->trusted_hosts, 0, sizeof(cfg->trusted_hosts));
		check_cidrs(L, lua_gettop(L), what, &cfg->trusted_hosts);
	} else if (strcmp(k, "request_body_limit") == 0) {
		cfg->request_body_limit = check_size(L, -1, what);
	} else if (strcmp(k, "max_connections_per_client") == 0) {
		cfg->max_connections_per_client = check_size(L, -1, what);
	} else if (strcmp(k, "max_recipients_per_inject") == 0) {
		cfg->max_recipients_per_inject = check_size(L, -1, what);
	} else if (strcmp(k, "max_received_headers") == 0) {
		cfg->max_received_headers = check_size(L, -1, what);
	} else {
		lua_api__unknown_key(L, "start_http_listener", k, NULL, 0);
	}
}

static int l_start_http_listener(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	struct http_listener_config *cfg = lua_newuserdatauv(L, sizeof(*cfg), 0);
	memset(cfg, 0, sizeof(*cfg)); /* safe empty state before anything can fail */
	if (luaL_newmetatable(L, HTTP_CFG_MT)) {
		lua_pushcfunction(L, http_cfg_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_setmetatable(L, -2);
	http_listener_config_init(cfg);
	each_key(L, 1, "start_http_listener", http_listener_key, cfg);
	if (lua_engine__validating()) {
		log_debug("lua", "start_http_listener %s: not started in --validate mode",
			  cfg->listen);
		return 0;
	}
	char err[512] = "";
	if (http_listener_start(kumod_loop(), cfg, err, sizeof(err)) != 0)
		return luaL_error(L, "%s", err[0] ? err : "start_http_listener: failed");
	return 0;
}

/* --- module ------------------------------------------------------------------ */

static const luaL_Reg kumo_funcs[] = {
    {"on", l_on},
    {"get_event_registrars", l_get_event_registrars},
    {"eval_config_monitor_globs", l_eval_config_monitor_globs},
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
    {"set_busy_poll", l_set_busy_poll},
    {"set_memory_soft_limit", l_set_memory_soft_limit},
    {"set_memory_hard_limit", l_set_memory_hard_limit},
    {"set_memory_low_thresh", l_set_memory_low_thresh},
    {"get_memory_soft_limit", l_get_memory_soft_limit},
    {"get_memory_hard_limit", l_get_memory_hard_limit},
    {"get_memory_low_thresh", l_get_memory_low_thresh},
    {"start_esmtp_listener", l_start_esmtp_listener},
    {"start_http_listener", l_start_http_listener},
    {"define_spool", l_define_spool},
    {"make_listener_domain", l_make_listener_domain},
    {"make_queue_config", l_make_queue_config},
    {"make_egress_path", l_make_egress_path},
    {"make_egress_source", l_make_egress_source},
    {"make_egress_pool", l_make_egress_pool},
    {"configure_local_logs", l_configure_local_logs},
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
	static const char *const tagged[] = {LUA_KUMO_QUEUE_CONFIG_MT, LUA_KUMO_EGRESS_PATH_MT,
					     LUA_KUMO_EGRESS_POOL_MT, LUA_KUMO_EGRESS_SOURCE_MT,
					     LUA_KUMO_LOGS_MT};
	for (size_t i = 0; i < sizeof(tagged) / sizeof(tagged[0]); i++) {
		luaL_newmetatable(L, tagged[i]);
		lua_pushstring(L, tagged[i]);
		lua_setfield(L, -2, "__name");
		lua_pop(L, 1);
	}
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
	lua_throttle__register(L);
	lua_bounce__register(L);
	lua_util__register(L);
	luaL_newlib(L, dns_funcs);
	lua_dns__register(L);
	lua_dns_config__register(L);
	lua_setfield(L, -2, "dns");
	luaL_newlib(L, shaping_funcs);
	lua_shaping__register(L);
	lua_setfield(L, -2, "shaping");
	lua_dkim__open(L);
	lua_spf__open(L);
	lua_catcher__register(L);
	lua_http__register(L);
	lua_loghook__register(L);
	lua_invoke__register(L);
	lua_inject__register(L);
	lua_trace_header__register(L);
	lua_rfc3464__register(L);
	return 1;
}
