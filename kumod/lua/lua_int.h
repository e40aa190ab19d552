/* SPDX-License-Identifier: Apache-2.0 */
/* Private interface shared by the files of the Lua policy engine
 * (lua_engine.c, lua_kumo.c, lua_message.c, lua_json.c). Never included
 * from outside kumod/lua/. */
#ifndef KUMOD_LUA_LUA_INT_H
#define KUMOD_LUA_LUA_INT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <lauxlib.h>
#include <lua.h>

struct message;

/* Metatable names (registry keys). */
#define LUA_KUMO_REJECT_MT "kumod.reject"
#define LUA_KUMO_MESSAGE_MT "kumod.message"
#define LUA_KUMO_ADDRESS_MT "kumod.address"
#define LUA_KUMO_CONN_META_MT "kumod.conn_meta"
#define LUA_KUMO_LISTENER_DOMAIN_MT "kumod.listener_domain"
#define LUA_KUMO_QUEUE_CONFIG_MT "kumod.queue_config"
#define LUA_KUMO_EGRESS_PATH_MT "kumod.egress_path"
#define LUA_KUMO_EGRESS_POOL_MT "kumod.egress_pool"
#define LUA_KUMO_EGRESS_SOURCE_MT "kumod.egress_source"
#define LUA_KUMO_LOGS_MT "kumod.local_logs"
#define LUA_KUMO_DKIM_SIGNER_MT "kumod.dkim_signer"

/* lua_engine.c: the event registry, used by kumo.on. Returns 0, or -1 with
 * a message pushed on L (the caller raises it). */
int lua_engine__register(lua_State *L, const char *event, int fn_index);
/* 1 in --validate mode: builders check their arguments but start nothing. */
int lua_engine__validating(void);
/* Asynchronous builtins (kumo.http). A C function that will wait first
 * calls lua_engine__wait_begin (raises, naming `what` and the event, when
 * the running handler cannot wait: a synchronous event, a coroutine the
 * handler made, a metamethod), starts its operation with the returned id,
 * then returns lua_engine__wait(L, ctx, k): the handler's coroutine yields
 * and the loop runs on. On completion the operation pushes its results on
 * lua_engine__thread(id) (NULL: the call was dropped, push nothing) and
 * calls lua_engine__wake(id, nres): they become k's results on the stack. */
uint64_t lua_engine__wait_begin(lua_State *L, const char *what);
int lua_engine__wait(lua_State *L, lua_KContext ctx, lua_KFunction k);
/* 1 when lua_engine__wait_begin would succeed on L (an asynchronous event's
 * handler itself), 0 where it would raise. */
int lua_engine__can_wait(lua_State *L);
lua_State *lua_engine__thread(uint64_t id);
void lua_engine__wake(uint64_t id, int nres);
/* The event whose handler runs on L, or NULL (the policy's main chunk). */
const char *lua_engine__event(lua_State *L);

/* lua_kumo.c: opens the `kumo` module (pushes the table). */
int lua_kumo__open(lua_State *L);
/* Typed reject / disconnect error object at index idx? Fills code, text
 * (NUL-terminated, sanitised) and disconnect; returns 1 when it is one. */
int lua_kumo__is_reject(lua_State *L, int idx, int *code, char *text, size_t textlen,
			int *disconnect);
/* Reads back a kumo.make_listener_domain{} value at idx; 1 when it is one.
 * relay_from is a new reference (JSON array of CIDR strings). */
int lua_kumo__listener_domain(lua_State *L, int idx, int *relay_to, json_t **relay_from,
			      json_t **relay_from_authz);
/* Its log_arf and log_oob (POLICY_LOG_REPORT_*); idx must be one. */
void lua_kumo__listener_domain_logs(lua_State *L, int idx, int *log_arf, int *log_oob);

/* lua_dkim.c: sets kumo.dkim in the table on top of the stack; signs m
 * with the signer at idx, prepending DKIM-Signature (raises on error). */
void lua_dkim__open(lua_State *L);
int lua_dkim__sign(lua_State *L, struct message *m, int idx);

/* lua_spf.c: sets kumo.spf in the table on top of the stack. */
void lua_spf__open(lua_State *L);
/* lua_dkim_verify.c: msg:dkim_verify() and msg:add_authentication_results()
 * for the message at index 1 (methods of the Message class). */
int lua_dkim__verify(lua_State *L, struct message *m);
int lua_dkim__add_auth_results(lua_State *L, struct message *m);

/* lua_message.c: classes. Registering creates the metatables. */
void lua_message__register(lua_State *L);
/* Pushes a new Message userdata holding a reference to m. */
void lua_message__push(lua_State *L, struct message *m);
/* The message of the Message userdata at idx (raises when it is not one
 * or is closed). */
struct message *lua_message__check(lua_State *L, int idx);
/* As lua_message__check, a streamed body read back first (method names the
 * caller in the error). */
struct message *lua_message__body(lua_State *L, int idx, const char *method);
/* lua_engine.c: kumo.delay_reply for the event call running on L; -1
 * outside an event handler. */
int lua_engine__delay_reply(lua_State *L, uint32_t ms);
/* lua_engine.c: throttle:delay_message_if_throttled in a throttle_insert_ready_queue
 * handler: the message goes back to its scheduled queue for ms (the longest asked wins);
 * -1 in any other event or outside one. */
int lua_engine__delay_message(lua_State *L, uint64_t ms);
/* lua_catcher.c: kumo.start_mail_catcher and kumo.mail_catcher_capture
 * (kumod extensions) into the table on top of the stack. */
void lua_catcher__register(lua_State *L);
/* Pushes an address object for "user@domain" ("" for the null sender). */
void lua_address__push(lua_State *L, const char *email);
/* Pushes a conn_meta userdata holding a reference to meta (an object). */
void lua_conn_meta__push(lua_State *L, json_t *meta);

/* lua_json.c: conversions. lua_json__to_json returns a new reference or
 * NULL with a message in err (no Lua error raised: safe outside a call). */
json_t *lua_json__to_json(lua_State *L, int idx, char *err, size_t errlen);
/* Pushes the Lua value for v (NULL and JSON null push nil). */
void lua_json__push(lua_State *L, const json_t *v);
/* Encodes the Lua value at idx; raises on error. Returns a malloc'd string. */
char *lua_json__encode(lua_State *L, int idx, int pretty);
/* Registers json_encode, json_encode_pretty, json_parse, json_load into
 * the table on top of the stack. */
void lua_json__register(lua_State *L);

/* lua_invoke.c: kumo.invoke_get_egress_path_config into the kumo table on top. */
void lua_invoke__register(lua_State *L);
/* lua_dns.c: kumo.dns lookups into the kumo.dns table on top of the stack. */
void lua_dns__register(lua_State *L);
/* lua_shaping.c: kumod's own members of the kumo.shaping table at -1. */
void lua_shaping__register(lua_State *L);
/* lua_dns_config.c: define_resolver, load_resolv_conf, set_mx_concurrency_limit,
 * set_mta_sts_enabled into the kumo.dns table on top. */
void lua_dns_config__register(lua_State *L);
/* lua_http.c: kumo.http into the kumo table on top of the stack. */
void lua_http__register(lua_State *L);
/* lua_http_url.c: kumo.http.build_url into the table on top. */
void lua_http_url__register(lua_State *L);
/* lua_loghook.c: kumo.configure_log_hook into the kumo table on top. */
void lua_loghook__register(lua_State *L);

/* lua_inject.c: kumo.make_message, kumo.inject_message and
 * kumo.api.inject.inject_v1 into the kumo table on top of the stack. */
void lua_inject__register(lua_State *L);
/* lua_trace_header.c: kumo.apply_supplemental_trace_header into the kumo table on top. */
void lua_trace_header__register(lua_State *L);
/* lua_rfc3464.c: kumo.generate_rfc3464_message into the kumo table on top. */
void lua_rfc3464__register(lua_State *L);

/* lua_bounce.c: kumo.configure_bounce_classifier into the table on top. */
void lua_bounce__register(lua_State *L);

/* lua_throttle.c: kumo.make_throttle into the table on top of the stack;
 * free_all drops every throttle cell (at policy_close). */
void lua_throttle__register(lua_State *L);
void lua_throttle__free_all(void);

/* Utility modules (docs/policy-utils.md). lua_util__register fills the
 * kumo table on top of the stack with all of them. */
void lua_util__register(lua_State *L);
/* Creates metatable mt: __index = a table of methods, and one metamethod
 * (event "__gc", "__close", ...) = fn. */
void lua_util__class(lua_State *L, const char *mt, const luaL_Reg *methods, const char *event,
		     lua_CFunction fn);
/* Pushes the contents of the file at path, or raises "what: path: reason". */
void lua_util__push_file(lua_State *L, const char *what, const char *path);
/* A text format's parser: pushes the value of s (len bytes) or raises
 * "what: where: ..." (where: the file, "" for text). */
typedef int (*lua_text_parser)(lua_State *L, const char *what, const char *where, const char *s,
			       size_t len);
/* kumo.X_parse(text) and kumo.X_load(path) on top of one parser. */
int lua_util__parse_text(lua_State *L, const char *what, lua_text_parser parse);
int lua_util__parse_file(lua_State *L, const char *what, lua_text_parser parse);
/* Checks the KumoMTA KeySource at idx: sets *path (a file path; not read here)
 * or data and dlen ({ key_data = ... }); raises "what: ..." naming anything
 * else (vault and event sources are refused by name). */
void lua_util__keysource(lua_State *L, int idx, const char *what, const char **path,
			 const char **data, size_t *dlen);
/* lua_toml.c: toml_* functions and kumo.serde. */
void lua_toml__register(lua_State *L);
/* lua_yaml.c: yaml_parse, yaml_load, yaml_encode into the kumo.serde table on top. */
void lua_yaml__register(lua_State *L);
/* lua_mime.c: kumo.mimepart into the kumo table on top; msg:parse_mime,
 * append_text_plain and append_text_html into the message methods table at
 * index methods. */
void lua_mime__register(lua_State *L);
void lua_mime__register_msg(lua_State *L, int methods);
/* lua_memoize.c: kumo.memoize. */
void lua_memoize__register(lua_State *L);
/* lua_maps.c: kumo.domain_map, kumo.cidr, kumo.regex_set_map. */
void lua_maps__register(lua_State *L);
/* lua_regex.c: kumo.regex. */
void lua_regex__register(lua_State *L);
/* Compiles a PCRE2 pattern (UTF, Unicode properties, JIT when available);
 * raises "what: invalid regular expression '...' at offset N: reason".
 * Returns a pcre2_code * (void here: lua_int.h does not include pcre2.h). */
void *lua_regex__compile(lua_State *L, const char *what, const char *pat, size_t plen);
/* lua_string.c, lua_time.c, lua_crypto.c: kumo.string, kumo.time and
 * kumo.uuid/digest/encode. */
void lua_string__register(lua_State *L);
void lua_time__register(lua_State *L);
void lua_crypto__register(lua_State *L);
/* lua_crypto.c: pushes KumoMTA's BinaryResult (the kumo.digest result object) for n bytes. */
void lua_crypto__push_binary(lua_State *L, const void *p, size_t n);
/* lua_crypto_aws.c: kumo.crypto (aes_encrypt_block, aes_decrypt_block, aws_sign_v4). */
void lua_crypto_aws__register(lua_State *L);
/* lua_counter_series.c: kumo.counter_series into the kumo table on top. */
void lua_counter_series__register(lua_State *L);
/* lua_knobs.c: KumoMTA tuning calls accepted without effect, into the kumo table on top. */
void lua_knobs__register(lua_State *L);
/* lua_jsonl.c: kumo.jsonl (new_writer) into the kumo table on top. */
void lua_jsonl__register(lua_State *L);
/* lua_charset.c: charset_decode and charset_encode into the kumo.encode table on top. */
void lua_charset__register(lua_State *L);
/* lua_time.c: pushes a kumo.time Time for ns since the Unix epoch (UTC). */
void lua_time__push(lua_State *L, int64_t ns);
/* lua_fs.c: kumo.fs, kumo.glob/read_dir, kumo.version, kumo.sleep and
 * kumo.time.sleep, and require 'kumo.string' / 'kumo.regex' (after
 * lua_string/lua_regex/lua_time__register). */
void lua_fs__register(lua_State *L);
/* lua_fs_file.c: kumo.fs.open (the async-file object) into the kumo.fs table on top. */
void lua_fs_file__register(lua_State *L);

/* lua_api.c: KumoMTA's API by name (see the file's header). */
/* Sets a metatable on the table at idx whose __index raises for a missing
 * member, naming it (path is the table's name, "kumo.dns"). */
void lua_api__guard_table(lua_State *L, int idx, const char *path);
/* Guards `kumo` at idx and each of its module tables. */
void lua_api__guard_kumo(lua_State *L, int idx);
/* Replaces the methods table of class mt with a guarded __index; what names
 * the object in messages ("msg", "conn_meta"). */
void lua_api__guard_class(lua_State *L, const char *mt, const char *what);
/* Raises the missing-member error for what.k (keys_idx: a table of the
 * object's names for the nearest-name hint, or 0). */
int lua_api__missing_member(lua_State *L, const char *what, const char *k, int keys_idx);
/* Raises the error for a key a builder does not take: a KumoMTA option
 * kumod lacks, or an unknown key with the nearest KumoMTA key or one of
 * ours (kumod's own keys, may be NULL). */
int lua_api__unknown_key(lua_State *L, const char *builder, const char *key,
			 const char *const *ours, size_t nours);
/* 0 when kumod calls the event or it is a custom name (a filter_event, a
 * custom_lua constructor: known only when configuration calls it), else -1
 * and why in err: a KumoMTA event kumod does not call, or a name one edit
 * away from a KumoMTA event (a typo, never silently a custom event). */
int lua_api__event_check(const char *name, char *err, size_t errlen);
/* Appends the searcher that names KumoMTA modules to package.searchers. */
void lua_api__install_searcher(lua_State *L);
/* kumod --list-api: every KumoMTA name and whether kumod has it. */
void lua_api__list(lua_State *L, FILE *out, int markdown);

#endif
