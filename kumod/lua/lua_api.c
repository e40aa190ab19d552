/* SPDX-License-Identifier: Apache-2.0 */
/* KumoMTA's Lua API by name, and what kumod makes of a name it lacks.
 *
 * The lists below are the names of KumoMTA's documented Lua API (its
 * reference pages: kumo functions and modules, message methods, events),
 * sorted for binary search. With them, reaching for something kumod does
 * not have fails with one clear line instead of "attempt to call a nil
 * value": the `kumo` table and its module tables, the message, conn_meta
 * and address objects raise on a missing member, naming it as a KumoMTA API
 * kumod does not implement yet or as an unknown name (with the nearest
 * known one); kumo.on refuses events kumod never calls; require of a
 * KumoMTA module says so after Lua's search path. `kumod --list-api`
 * prints every name with its status here, computed from a live Lua state,
 * so docs/policy-api.md cannot drift. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua/lua_int.h"

/* Generated once from KumoMTA's docs/reference tree (file names only). */
static const char *const kumo_functions[] = {
    "kumo.aaa.auth_info",
    "kumo.aaa.configure_acct_log",
    "kumo.aaa.load_acl_map",
    "kumo.aaa.make_access_control_list",
    "kumo.aaa.make_http_url_resource",
    "kumo.aaa.query_resource_access",
    "kumo.aaa.set_acl_cache_ttl",
    "kumo.aaa.set_check_cache_ttl",
    "kumo.aaa.set_fall_back_to_acl_map",
    "kumo.amqp.basic_publish",
    "kumo.amqp.build_client",
    "kumo.api.inject.inject_v1",
    "kumo.apply_supplemental_trace_header",
    "kumo.available_parallelism",
    "kumo.bump_config_epoch",
    "kumo.cidr.make_map",
    "kumo.compute_egress_path_config_constraints",
    "kumo.compute_queue_config_constraints",
    "kumo.configure_accounting_db_path",
    "kumo.configure_bounce_classifier",
    "kumo.configure_local_logs",
    "kumo.configure_log_hook",
    "kumo.configure_redis_throttles",
    "kumo.counter_series.define",
    "kumo.counter_series.delta",
    "kumo.counter_series.increment",
    "kumo.counter_series.observe",
    "kumo.counter_series.sum",
    "kumo.counter_series.sum_over",
    "kumo.crypto.aes_decrypt_block",
    "kumo.crypto.aes_encrypt_block",
    "kumo.crypto.aws_sign_v4",
    "kumo.define_spool",
    "kumo.digest.crc32",
    "kumo.digest.hmac_sha1",
    "kumo.digest.hmac_sha224",
    "kumo.digest.hmac_sha256",
    "kumo.digest.hmac_sha384",
    "kumo.digest.hmac_sha512",
    "kumo.digest.sha1",
    "kumo.digest.sha224",
    "kumo.digest.sha256",
    "kumo.digest.sha384",
    "kumo.digest.sha3_256",
    "kumo.digest.sha3_384",
    "kumo.digest.sha3_512",
    "kumo.digest.sha512",
    "kumo.digest.sha512_256",
    "kumo.disconnect",
    "kumo.dkim.ed25519_signer",
    "kumo.dkim.rsa_sha256_signer",
    "kumo.dkim.set_signing_threads",
    "kumo.dns.configure_resolver",
    "kumo.dns.configure_unbound_resolver",
    "kumo.dns.define_resolver",
    "kumo.dns.load_resolv_conf",
    "kumo.dns.lookup_addr",
    "kumo.dns.lookup_mx",
    "kumo.dns.lookup_ptr",
    "kumo.dns.lookup_txt",
    "kumo.dns.ptr_host",
    "kumo.dns.rbl_lookup",
    "kumo.dns.reverse_ip",
    "kumo.dns.set_mta_sts_enabled",
    "kumo.dns.set_mx_concurrency_limit",
    "kumo.dns.set_mx_negative_cache_ttl",
    "kumo.dns.set_mx_timeout",
    "kumo.domain_map.new",
    "kumo.encode.base32_decode",
    "kumo.encode.base32_encode",
    "kumo.encode.base32_nopad_decode",
    "kumo.encode.base32_nopad_encode",
    "kumo.encode.base32hex_decode",
    "kumo.encode.base32hex_encode",
    "kumo.encode.base32hex_nopad_decode",
    "kumo.encode.base32hex_nopad_encode",
    "kumo.encode.base64_decode",
    "kumo.encode.base64_encode",
    "kumo.encode.base64_nopad_decode",
    "kumo.encode.base64_nopad_encode",
    "kumo.encode.base64url_decode",
    "kumo.encode.base64url_encode",
    "kumo.encode.base64url_nopad_decode",
    "kumo.encode.base64url_nopad_encode",
    "kumo.encode.charset_decode",
    "kumo.encode.charset_encode",
    "kumo.encode.hex_decode",
    "kumo.encode.hex_encode",
    "kumo.eval_config_monitor_globs",
    "kumo.file_type.from_bytes",
    "kumo.file_type.from_extension",
    "kumo.file_type.from_media_type",
    "kumo.format_egress_path_config_constraints",
    "kumo.format_egress_path_config_toml",
    "kumo.format_queue_config_toml",
    "kumo.fs.glob",
    "kumo.fs.metadata_for_path",
    "kumo.fs.open",
    "kumo.fs.read_dir",
    "kumo.fs.symlink_metadata_for_path",
    "kumo.fs.uncached_glob",
    "kumo.generate_rfc3464_message",
    "kumo.get_memory_hard_limit",
    "kumo.get_memory_low_thresh",
    "kumo.get_memory_soft_limit",
    "kumo.glob",
    "kumo.http.build_client",
    "kumo.http.build_url",
    "kumo.http.connect_websocket",
    "kumo.inject_message",
    "kumo.invoke_get_egress_path_config",
    "kumo.invoke_get_egress_pool",
    "kumo.invoke_get_egress_source",
    "kumo.invoke_get_queue_config",
    "kumo.json_encode",
    "kumo.json_encode_pretty",
    "kumo.json_load",
    "kumo.json_parse",
    "kumo.jsonl.new_multi_tailer",
    "kumo.jsonl.new_tailer",
    "kumo.jsonl.new_writer",
    "kumo.kafka.build_producer",
    "kumo.log_debug",
    "kumo.log_error",
    "kumo.log_info",
    "kumo.log_warn",
    "kumo.make_egress_path",
    "kumo.make_egress_pool",
    "kumo.make_egress_source",
    "kumo.make_listener_domain",
    "kumo.make_message",
    "kumo.make_queue_config",
    "kumo.make_throttle",
    "kumo.memoize",
    "kumo.mimepart.builder",
    "kumo.mimepart.new_binary",
    "kumo.mimepart.new_html",
    "kumo.mimepart.new_multipart",
    "kumo.mimepart.new_text",
    "kumo.mimepart.new_text_plain",
    "kumo.mimepart.parse",
    "kumo.mpsc.define",
    "kumo.nats.close",
    "kumo.nats.connect",
    "kumo.nats.publish",
    "kumo.on",
    "kumo.read_dir",
    "kumo.regex.compile",
    "kumo.regex.escape",
    "kumo.regex_set_map.new",
    "kumo.reject",
    "kumo.secrets.load",
    "kumo.serde.json_encode",
    "kumo.serde.json_encode_pretty",
    "kumo.serde.json_load",
    "kumo.serde.json_parse",
    "kumo.serde.toml_encode",
    "kumo.serde.toml_encode_pretty",
    "kumo.serde.toml_encode_pretty_compact",
    "kumo.serde.toml_load",
    "kumo.serde.toml_parse",
    "kumo.serde.yaml_encode",
    "kumo.serde.yaml_load",
    "kumo.serde.yaml_parse",
    "kumo.set_config_monitor_globs",
    "kumo.set_diagnostic_log_filter",
    "kumo.set_httpinject_recipient_rate_limit",
    "kumo.set_httpinject_threads",
    "kumo.set_logging_threads",
    "kumo.set_lruttl_cache_capacity",
    "kumo.set_max_lua_context_age",
    "kumo.set_max_lua_context_use_count",
    "kumo.set_max_spare_lua_contexts",
    "kumo.set_memory_hard_limit",
    "kumo.set_memory_low_thresh",
    "kumo.set_memory_soft_limit",
    "kumo.set_qmaint_threads",
    "kumo.set_ready_qmaint_threads",
    "kumo.set_readyq_threads",
    "kumo.set_smtpsrv_threads",
    "kumo.set_spoolin_threads",
    "kumo.shaping.load",
    "kumo.sleep",
    "kumo.spawn_task",
    "kumo.spf.check_host",
    "kumo.spf.check_msg",
    "kumo.start_esmtp_listener",
    "kumo.start_http_listener",
    "kumo.string.ends_with",
    "kumo.string.eval_template",
    "kumo.string.normalize_smtp_response",
    "kumo.string.psl_domain",
    "kumo.string.psl_suffix",
    "kumo.string.replace",
    "kumo.string.replacen",
    "kumo.string.rsplit",
    "kumo.string.rsplitn",
    "kumo.string.split",
    "kumo.string.split_ascii_whitespace",
    "kumo.string.split_whitespace",
    "kumo.string.splitn",
    "kumo.string.starts_with",
    "kumo.string.trim",
    "kumo.string.trim_end",
    "kumo.string.trim_start",
    "kumo.string.wrap",
    "kumo.suspend_delivery_when_spool_unhealthy",
    "kumo.time.from_unix_timestamp",
    "kumo.time.now",
    "kumo.time.parse_duration",
    "kumo.time.parse_rfc2822",
    "kumo.time.parse_rfc3339",
    "kumo.time.sleep",
    "kumo.time.start_timer",
    "kumo.time.with_ymd_hms",
    "kumo.toml_encode",
    "kumo.toml_encode_pretty",
    "kumo.toml_load",
    "kumo.toml_parse",
    "kumo.uncached_glob",
    "kumo.uuid.new_v1",
    "kumo.uuid.new_v4",
    "kumo.uuid.new_v6",
    "kumo.uuid.new_v7",
    "kumo.uuid.parse",
    "kumo.version",
    "kumo.xfer.cancel_xfer",
    "kumo.xfer.get_xfer_target",
    "kumo.xfer.xfer",
    "kumo.xfer.xfer_in_requeue",
};
static const char *const kumo_message_methods[] = {
    "add_authentication_results",
    "append_header",
    "append_text_html",
    "append_text_plain",
    "arc_seal",
    "arc_verify",
    "check_fix_conformance",
    "dkim_sign",
    "dkim_verify",
    "from_header",
    "get_address_header",
    "get_all_headers",
    "get_all_named_header_values",
    "get_data",
    "get_first_named_header_value",
    "get_meta",
    "id",
    "import_headers",
    "import_scheduling_header",
    "import_x_headers",
    "increment_num_attempts",
    "num_attempts",
    "parse_mime",
    "parse_rfc3464",
    "parse_rfc5965",
    "prepend_header",
    "queue_name",
    "recipient",
    "recipient_list",
    "remove_all_named_headers",
    "remove_x_headers",
    "save",
    "sender",
    "set_data",
    "set_due",
    "set_force_sync",
    "set_meta",
    "set_recipient",
    "set_scheduling",
    "set_sender",
    "shrink",
    "shrink_data",
    "to_header",
};
/* Events: KumoMTA's, and whether kumod calls it (lua_engine.c dispatches
 * exactly the ones marked 1). */
static const struct api_event {
	const char *name;
	int kumod;
} kumo_events[] = {
    {"get_acl_definition", 0},
    {"get_egress_path_config", 1},
    {"get_egress_pool", 1},
    {"get_egress_source", 1},
    {"get_listener_domain", 1},
    {"get_queue_config", 1},
    {"http_message_generated", 1},
    {"http_server_validate_auth_basic", 1},
    {"http_server_validate_auth_bearer", 1},
    {"init", 1},
    {"main", 0},
    {"pre_init", 1},
    {"proxy_init", 0},
    {"proxy_server_auth_rfc1929", 0},
    {"rebind_message", 0},
    {"requeue_message", 1},
    {"should_enqueue_log_record", 1},
    {"shutdown_logging", 0},
    {"smtp_client_rewrite_delivery_status", 1},
    {"smtp_server_auth_plain", 1},
    {"smtp_server_connection_accepted", 1},
    {"smtp_server_data", 1},
    {"smtp_server_ehlo", 1},
    {"smtp_server_get_dynamic_parameters", 0},
    {"smtp_server_mail_from", 1},
    {"smtp_server_message_deferred_inject", 0},
    {"smtp_server_message_received", 1},
    {"smtp_server_rcpt_to", 1},
    {"smtp_server_rewrite_response", 1},
    {"smtp_server_split_transaction", 0},
    {"spool_message_enumerated", 1},
    {"throttle_insert_ready_queue", 1},
    {"tsa_init", 0},
    {"tsa_load_shaping_data", 0},
    {"validate_config", 1},
    {"xfer_message_received", 0},
};

/* The documented keys of KumoMTA's builders, "builder.key". */
static const char *const kumo_builder_keys[] = {
    "configure_local_logs.back_pressure",
    "configure_local_logs.compression_level",
    "configure_local_logs.filter_event",
    "configure_local_logs.headers",
    "configure_local_logs.log_dir",
    "configure_local_logs.max_file_size",
    "configure_local_logs.max_segment_duration",
    "configure_local_logs.meta",
    "configure_local_logs.min_free_inodes",
    "configure_local_logs.min_free_space",
    "configure_local_logs.per_record",
    "define_spool.flush",
    "define_spool.kind",
    "define_spool.min_free_inodes",
    "define_spool.min_free_space",
    "define_spool.name",
    "define_spool.path",
    "define_spool.rocks_params",
    "make_egress_path.additional_connection_limits",
    "make_egress_path.additional_message_rate_throttles",
    "make_egress_path.additional_source_selection_rates",
    "make_egress_path.allow_smtp_auth_plain_without_tls",
    "make_egress_path.allow_smtp_auth_plain_without_valid_certificate",
    "make_egress_path.banner_timeout",
    "make_egress_path.connect_timeout",
    "make_egress_path.connection_limit",
    "make_egress_path.consecutive_connection_failures_before_delay",
    "make_egress_path.data_dot_timeout",
    "make_egress_path.data_timeout",
    "make_egress_path.dispatcher_progress_watchdog_timeout",
    "make_egress_path.dispatcher_wakeup_strategy",
    "make_egress_path.ehlo_domain",
    "make_egress_path.ehlo_timeout",
    "make_egress_path.enable_dane",
    "make_egress_path.enable_mta_sts",
    "make_egress_path.enable_pipelining",
    "make_egress_path.enable_rset",
    "make_egress_path.enable_tls",
    "make_egress_path.idle_timeout",
    "make_egress_path.ignore_8bit_checks",
    "make_egress_path.ip_lookup_strategy",
    "make_egress_path.low_memory_reduction_policy",
    "make_egress_path.mail_from_timeout",
    "make_egress_path.maintainer_wakeup_strategy",
    "make_egress_path.max_connection_rate",
    "make_egress_path.max_deliveries_per_connection",
    "make_egress_path.max_message_rate",
    "make_egress_path.max_ready",
    "make_egress_path.max_recipients_per_batch",
    "make_egress_path.no_memory_reduction_policy",
    "make_egress_path.openssl_cipher_list",
    "make_egress_path.openssl_cipher_suites",
    "make_egress_path.openssl_options",
    "make_egress_path.opportunistic_tls_reconnect_on_failed_handshake",
    "make_egress_path.prohibited_hosts",
    "make_egress_path.rcpt_to_timeout",
    "make_egress_path.reconnect_strategy",
    "make_egress_path.refresh_interval",
    "make_egress_path.refresh_strategy",
    "make_egress_path.remember_broken_tls",
    "make_egress_path.rset_timeout",
    "make_egress_path.rustls_cipher_suites",
    "make_egress_path.skip_hosts",
    "make_egress_path.smtp_auth_plain_password",
    "make_egress_path.smtp_auth_plain_username",
    "make_egress_path.smtp_port",
    "make_egress_path.source_selection_rate",
    "make_egress_path.starttls_timeout",
    "make_egress_path.system_shutdown_timeout",
    "make_egress_path.tls_certificate",
    "make_egress_path.tls_prefer_openssl",
    "make_egress_path.tls_private_key",
    "make_egress_path.try_next_host_on_transport_error",
    "make_egress_path.use_lmtp",
    "make_egress_pool.entries",
    "make_egress_pool.name",
    "make_egress_pool.ttl",
    "make_egress_source.ehlo_domain",
    "make_egress_source.ha_proxy_server",
    "make_egress_source.ha_proxy_source_address",
    "make_egress_source.name",
    "make_egress_source.remote_port",
    "make_egress_source.socks5_proxy_server",
    "make_egress_source.socks5_proxy_source_address",
    "make_egress_source.source_address",
    "make_egress_source.suspend_when_proxy_unhealthy",
    "make_egress_source.suspend_when_unplumbed",
    "make_egress_source.ttl",
    "make_listener_domain.log_arf",
    "make_listener_domain.log_oob",
    "make_listener_domain.relay_from",
    "make_listener_domain.relay_to",
    "make_queue_config.egress_pool",
    "make_queue_config.max_age",
    "make_queue_config.max_message_rate",
    "make_queue_config.max_retry_interval",
    "make_queue_config.protocol",
    "make_queue_config.reap_interval",
    "make_queue_config.refresh_interval",
    "make_queue_config.refresh_strategy",
    "make_queue_config.retry_interval",
    "make_queue_config.shrink_policy",
    "make_queue_config.strategy",
    "make_queue_config.timerwheel_tick_interval",
    "start_esmtp_listener.allow_xclient",
    "start_esmtp_listener.banner",
    "start_esmtp_listener.batch_handling",
    "start_esmtp_listener.client_timeout",
    "start_esmtp_listener.data_buffer_size",
    "start_esmtp_listener.data_processing_timeout",
    "start_esmtp_listener.deferred_queue",
    "start_esmtp_listener.deferred_spool",
    "start_esmtp_listener.hostname",
    "start_esmtp_listener.invalid_line_endings",
    "start_esmtp_listener.line_length_hard_limit",
    "start_esmtp_listener.listen",
    "start_esmtp_listener.max_connections",
    "start_esmtp_listener.max_message_size",
    "start_esmtp_listener.max_messages_per_connection",
    "start_esmtp_listener.max_recipients_per_message",
    "start_esmtp_listener.meta",
    "start_esmtp_listener.peer",
    "start_esmtp_listener.relay_hosts",
    "start_esmtp_listener.require_proxy_protocol",
    "start_esmtp_listener.tls_certificate",
    "start_esmtp_listener.tls_private_key",
    "start_esmtp_listener.tls_required_client_ca",
    "start_esmtp_listener.trace_headers",
    "start_esmtp_listener.trace_headers.header_name",
    "start_esmtp_listener.trace_headers.include_meta_names",
    "start_esmtp_listener.trace_headers.received_header",
    "start_esmtp_listener.trace_headers.supplemental_header",
    "start_esmtp_listener.via",
    "start_http_listener.hostname",
    "start_http_listener.listen",
    "start_http_listener.request_body_limit",
    "start_http_listener.tls_certificate",
    "start_http_listener.tls_private_key",
    "start_http_listener.trusted_hosts",
    "start_http_listener.use_tls",
};

/* KumoMTA modules loaded with require (not fields of `kumo`). */
static const char *const kumo_require_modules[] = {
    "kumo.regex",
    "kumo.string",
    "policy-extras.dkim_sign",
    "policy-extras.listener_domains",
    "policy-extras.log_hooks",
    "policy-extras.mail_auth",
    "policy-extras.policy_utils",
    "policy-extras.queue",
    "policy-extras.shaping",
    "policy-extras.sources",
    "redis",
    "sqlite",
};

/* Accepted for compatibility with no effect here (kumod runs one loop
 * thread and one Lua state; it keeps no accounting database; lua_knobs.c). */
static const char *const no_effect[] = {
    "kumo.configure_accounting_db_path",
    "kumo.dkim.set_signing_threads",
    "kumo.set_httpinject_threads",
    "kumo.set_logging_threads",
    "kumo.set_lruttl_cache_capacity",
    "kumo.set_max_lua_context_age",
    "kumo.set_max_lua_context_use_count",
    "kumo.set_max_spare_lua_contexts",
    "kumo.set_qmaint_threads",
    "kumo.set_ready_qmaint_threads",
    "kumo.set_readyq_threads",
    "kumo.set_smtpsrv_threads",
    "kumo.set_spoolin_threads",
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* KumoMTA functions kumod refuses for good, with what to use instead. */
static const struct {
	const char *name, *instead;
} refused[] = {
    {"kumo.dns.configure_unbound_resolver",
     "kumod has no unbound resolver; use kumo.dns.configure_resolver { name_servers = {...} }"},
};

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int in_list(const char *const *list, size_t n, const char *name)
{
	return bsearch(&name, list, n, sizeof(*list), cmp_str) != NULL;
}

/* Levenshtein distance, capped: strings longer than 63 bytes are "far". */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la > 63 || lb > 63)
		return 99;
	size_t row[64];
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* Keeps the closest candidate within a third of the name's length. */
struct nearest {
	const char *name;
	char best[64];
	size_t dist;
};

static void nearest_try(struct nearest *n, const char *cand)
{
	size_t d = edit_distance(n->name, cand);
	size_t limit = strlen(n->name) / 3 + 1;
	if (d <= limit && d < n->dist && d > 0) {
		n->dist = d;
		snprintf(n->best, sizeof(n->best), "%s", cand);
	}
}

/* Candidates one level below prefix ("kumo.", "kumo.dns.") in the list. */
static void nearest_level(struct nearest *n, const char *const *list, size_t cnt,
			  const char *prefix)
{
	size_t pl = strlen(prefix);
	for (size_t i = 0; i < cnt; i++) {
		if (strncmp(list[i], prefix, pl) != 0)
			continue;
		char part[64];
		snprintf(part, sizeof(part), "%.*s", (int)strcspn(list[i] + pl, "."), list[i] + pl);
		nearest_try(n, part);
	}
}

/* Candidates among the string keys of the table at idx. */
static void nearest_keys(lua_State *L, int idx, struct nearest *n)
{
	idx = lua_absindex(L, idx);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		if (lua_type(L, -2) == LUA_TSTRING)
			nearest_try(n, lua_tostring(L, -2));
		lua_pop(L, 1);
	}
}

static int is_module_prefix(const char *path)
{
	size_t pl = strlen(path);
	for (size_t i = 0; i < NELEM(kumo_functions); i++)
		if (strncmp(kumo_functions[i], path, pl) == 0 && kumo_functions[i][pl] == '.')
			return 1;
	return 0;
}

/* Raises "<where>: <text>" with the position of the Lua code that asked. */
static int raise_at_caller(lua_State *L, const char *text)
{
	luaL_where(L, 1); /* level 0 is this C function, 1 the Lua code */
	lua_pushstring(L, text);
	lua_concat(L, 2);
	return lua_error(L);
}

/* Raises "<full>: unknown name (...)", with "did you mean <prefix><best>?"
 * when a near name was found. */
static int raise_unknown(lua_State *L, const char *full, const char *prefix,
			 const struct nearest *n)
{
	char msg[400];
	if (n->best[0])
		snprintf(msg, sizeof(msg),
			 "%s: unknown name (not a KumoMTA or kumod API); did you mean %s%s?", full,
			 prefix, n->best);
	else
		snprintf(msg, sizeof(msg), "%s: unknown name (not a KumoMTA or kumod API)", full);
	return raise_at_caller(L, msg);
}

/* __index of `kumo` and its module tables: upvalue 1 is the table's path. */
static int guard_index(lua_State *L)
{
	if (lua_type(L, 2) != LUA_TSTRING)
		return 0;
	const char *path = lua_tostring(L, lua_upvalueindex(1));
	const char *k = lua_tostring(L, 2);
	char full[200], msg[400];
	snprintf(full, sizeof(full), "%s.%s", path, k);
	for (size_t i = 0; i < NELEM(refused); i++)
		if (!strcmp(refused[i].name, full)) {
			snprintf(msg, sizeof(msg), "%s: %s", full, refused[i].instead);
			return raise_at_caller(L, msg);
		}
	if (in_list(kumo_functions, NELEM(kumo_functions), full)) {
		snprintf(msg, sizeof(msg), "%s is a KumoMTA API that kumod does not implement yet",
			 full);
		return raise_at_caller(L, msg);
	}
	if (is_module_prefix(full)) {
		snprintf(msg, sizeof(msg),
			 "%s is a KumoMTA module that kumod does not implement yet", full);
		return raise_at_caller(L, msg);
	}
	struct nearest n = {.name = k, .dist = 99};
	nearest_keys(L, 1, &n);
	char prefix[200];
	snprintf(prefix, sizeof(prefix), "%s.", path);
	nearest_level(&n, kumo_functions, NELEM(kumo_functions), prefix);
	return raise_unknown(L, full, prefix, &n);
}

void lua_api__guard_table(lua_State *L, int idx, const char *path)
{
	idx = lua_absindex(L, idx);
	if (lua_getmetatable(L, idx)) {
		lua_pop(L, 1);
		return; /* a module with its own metatable keeps it */
	}
	lua_createtable(L, 0, 1);
	lua_pushstring(L, path);
	lua_pushcclosure(L, guard_index, 1);
	lua_setfield(L, -2, "__index");
	lua_setmetatable(L, idx);
}

void lua_api__guard_kumo(lua_State *L, int idx)
{
	idx = lua_absindex(L, idx);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TTABLE) {
			char path[128];
			snprintf(path, sizeof(path), "kumo.%s", lua_tostring(L, -2));
			lua_api__guard_table(L, -1, path);
		}
		lua_pop(L, 1);
	}
	lua_api__guard_table(L, idx, "kumo");
}

/* __index of an object class: upvalue 1 the methods table, 2 the name
 * used in messages ("msg", "conn_meta"). */
static int object_index(lua_State *L)
{
	lua_pushvalue(L, 2);
	if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
		return 1;
	lua_pop(L, 1);
	if (lua_type(L, 2) != LUA_TSTRING)
		return 0;
	return lua_api__missing_member(L, lua_tostring(L, lua_upvalueindex(2)), lua_tostring(L, 2),
				       lua_upvalueindex(1));
}

int lua_api__missing_member(lua_State *L, const char *what, const char *k, int keys_idx)
{
	char msg[400];
	int is_msg = strcmp(what, "msg") == 0;
	if (is_msg && in_list(kumo_message_methods, NELEM(kumo_message_methods), k)) {
		snprintf(msg, sizeof(msg),
			 "msg:%s() is a KumoMTA message method that kumod does not implement yet",
			 k);
		return raise_at_caller(L, msg);
	}
	struct nearest n = {.name = k, .dist = 99};
	if (keys_idx)
		nearest_keys(L, keys_idx, &n);
	if (is_msg)
		for (size_t i = 0; i < NELEM(kumo_message_methods); i++)
			nearest_try(&n, kumo_message_methods[i]);
	char full[200];
	snprintf(full, sizeof(full), "%s.%s", what, k);
	return raise_unknown(L, full, "", &n);
}

void lua_api__guard_class(lua_State *L, const char *mt, const char *what)
{
	luaL_getmetatable(L, mt);
	lua_getfield(L, -1, "__index");
	if (lua_type(L, -1) != LUA_TTABLE) {
		lua_pop(L, 2);
		return;
	}
	lua_pushstring(L, what);
	lua_pushcclosure(L, object_index, 2);
	lua_setfield(L, -2, "__index");
	lua_pop(L, 1);
}

int lua_api__unknown_key(lua_State *L, const char *builder, const char *key,
			 const char *const *ours, size_t nours)
{
	char full[200], msg[400];
	snprintf(full, sizeof(full), "%s.%s", builder, key);
	if (in_list(kumo_builder_keys, NELEM(kumo_builder_keys), full))
		return luaL_error(L,
				  "%s: '%s' is a KumoMTA option that kumod does not implement yet",
				  builder, key);
	struct nearest n = {.name = key, .dist = 99};
	char prefix[160];
	snprintf(prefix, sizeof(prefix), "%s.", builder);
	nearest_level(&n, kumo_builder_keys, NELEM(kumo_builder_keys), prefix);
	for (size_t i = 0; i < nours; i++)
		nearest_try(&n, ours[i]);
	if (n.best[0])
		snprintf(msg, sizeof(msg), "%s: unknown key '%s' (did you mean '%s'?)", builder,
			 key, n.best);
	else
		snprintf(msg, sizeof(msg), "%s: unknown key '%s'", builder, key);
	return luaL_error(L, "%s", msg);
}

/* 1 kumod calls it, 0 a KumoMTA event kumod does not, -1 neither. */
/* Events of kumod's own (not KumoMTA's): accepted, not in the API table. */
static const char *const kumod_events[] = {
    "smtp_server_data_command", /* the DATA command, before its 354 */
};

static int event_status(const char *name)
{
	for (size_t i = 0; i < NELEM(kumod_events); i++)
		if (strcmp(kumod_events[i], name) == 0)
			return 1;
	for (size_t i = 0; i < NELEM(kumo_events); i++)
		if (strcmp(kumo_events[i].name, name) == 0)
			return kumo_events[i].kumod;
	return -1;
}

int lua_api__event_check(const char *name, char *err, size_t errlen)
{
	int st = event_status(name);
	if (st == 1 || strncmp(name, "log_disposition_", 16) == 0)
		return 0; /* ... or a disposition hook's (configure_log_disposition_hook) */
	if (st == 0) {
		snprintf(err, errlen,
			 "kumo.on('%s'): a KumoMTA event that kumod does not implement yet "
			 "(the handler would never be called)",
			 name);
		return -1;
	}
	struct nearest n = {.name = name, .dist = 99};
	for (size_t i = 0; i < NELEM(kumo_events); i++)
		nearest_try(&n, kumo_events[i].name);
	if (!n.best[0])
		return 0; /* a custom event (a custom_lua constructor, ...) */
	snprintf(err, errlen,
		 "kumo.on('%s'): not an event kumod calls (did you mean '%s'?); a custom event "
		 "name (a filter_event, a custom_lua constructor) must not look like a KumoMTA "
		 "event",
		 name, n.best);
	return -1;
}

/* package.searchers entry, after Lua's own: names a KumoMTA module. */
static int kumo_module_searcher(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	if (in_list(kumo_require_modules, NELEM(kumo_require_modules), name) ||
	    strncmp(name, "policy-extras.", 14) == 0)
		lua_pushfstring(L, "\n\t'%s' is a KumoMTA module that kumod does not provide yet",
				name);
	else
		lua_pushfstring(L, "\n\t'%s' is not a KumoMTA module", name);
	return 1;
}

/* First, so its line leads require's error; it never finds anything, so a
 * module on the user's path still loads. */
void lua_api__install_searcher(lua_State *L)
{
	lua_getglobal(L, "package");
	lua_getfield(L, -1, "searchers");
	for (lua_Integer i = (lua_Integer)lua_rawlen(L, -1); i >= 1; i--) {
		lua_rawgeti(L, -1, i);
		lua_rawseti(L, -2, i + 1);
	}
	lua_pushcfunction(L, kumo_module_searcher);
	lua_rawseti(L, -2, 1);
	lua_pop(L, 2);
}

/* --- kumod --list-api --------------------------------------------------------- */

/* The value at path ("kumo.dns.lookup_mx") in the state, without metamethods. */
static int has_path(lua_State *L, const char *path)
{
	char buf[200];
	snprintf(buf, sizeof(buf), "%s", path);
	lua_pushglobaltable(L);
	int found = 1;
	for (char *save = NULL, *p = strtok_r(buf, ".", &save); p; p = strtok_r(NULL, ".", &save)) {
		if (lua_type(L, -1) != LUA_TTABLE) {
			found = 0;
			break;
		}
		lua_pushstring(L, p);
		lua_rawget(L, -2);
		lua_remove(L, -2);
	}
	found = found && !lua_isnil(L, -1);
	lua_pop(L, 1);
	return found;
}

static int has_method(lua_State *L, const char *mt, const char *name)
{
	luaL_getmetatable(L, mt);
	lua_getfield(L, -1, "__index");
	int found = 0;
	if (lua_type(L, -1) == LUA_TFUNCTION && lua_getupvalue(L, -1, 1)) {
		lua_getfield(L, -1, name); /* the methods table has no metatable */
		found = !lua_isnil(L, -1);
		lua_pop(L, 2);
	}
	lua_pop(L, 2);
	return found;
}

/* A searcher other than ours (the first) finds a loader for the module
 * (nothing is run: searchers only locate). */
static int has_module(lua_State *L, const char *name)
{
	lua_getglobal(L, "package");
	lua_getfield(L, -1, "searchers");
	int found = 0;
	for (lua_Integer i = 2; !found && i <= (lua_Integer)lua_rawlen(L, -1); i++) {
		lua_rawgeti(L, -1, i);
		lua_pushstring(L, name);
		/* a Lua chunk; a C loader that only raises "not yet" does not count */
		if (lua_pcall(L, 1, 1, 0) == LUA_OK)
			found = lua_isfunction(L, -1) && !lua_iscfunction(L, -1);
		lua_pop(L, 1);
	}
	lua_pop(L, 2);
	return found;
}

static void row(FILE *out, int markdown, const char *kind, const char *name, int ok)
{
	static const char *const md[] = {"not implemented", "implemented", "accepted, no effect"};
	static const char *const tsv[] = {"missing", "implemented", "no-effect"};
	if (markdown)
		fprintf(out, "| `%s` | %s | %s |\n", name, kind, md[ok]);
	else
		fprintf(out, "%s\t%s\t%s\n", kind, name, tsv[ok]);
}

void lua_api__list(lua_State *L, FILE *out, int markdown)
{
	size_t total = 0, ok = 0;
	if (markdown)
		fprintf(out, "| KumoMTA name | kind | kumod |\n|---|---|---|\n");
	for (size_t i = 0; i < NELEM(kumo_functions); i++) {
		int h = has_path(L, kumo_functions[i]);
		if (h && in_list(no_effect, NELEM(no_effect), kumo_functions[i]))
			h = 2;
		row(out, markdown, "function", kumo_functions[i], h);
		total++, ok += h == 1;
	}
	for (size_t i = 0; i < NELEM(kumo_message_methods); i++) {
		char name[96];
		snprintf(name, sizeof(name), "msg:%s()", kumo_message_methods[i]);
		int h = has_method(L, LUA_KUMO_MESSAGE_MT, kumo_message_methods[i]);
		row(out, markdown, "message method", name, h);
		total++, ok += h;
	}
	for (size_t i = 0; i < NELEM(kumo_events); i++) {
		int h = kumo_events[i].kumod;
		row(out, markdown, "event", kumo_events[i].name, h);
		total++, ok += h;
	}
	for (size_t i = 0; i < NELEM(kumo_require_modules); i++) {
		char name[96];
		snprintf(name, sizeof(name), "require '%s'", kumo_require_modules[i]);
		int h = has_module(L, kumo_require_modules[i]);
		row(out, markdown, "module", name, h);
		total++, ok += h;
	}
	if (markdown)
		fprintf(out, "\n%zu of %zu KumoMTA names are implemented.\n", ok, total);
}
