/* SPDX-License-Identifier: Apache-2.0 */
/* The Lua policy engine through policy.h: loading errors, kumo.on rules,
 * typed rejections, the call budget, JSON, log filter, listener keys and
 * the objects handed to SMTP event handlers. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "policy.h"
#include "spool/message.h"
#include "test.h"

static char policy_path[64];

/* Writes src to a fresh temporary .lua file (path in policy_path). */
static const char *write_policy(const char *src)
{
	strcpy(policy_path, "/tmp/kumod-test-XXXXXX.lua");
	int fd = mkstemps(policy_path, 4);
	ASSERT(fd >= 0);
	size_t n = strlen(src);
	ASSERT_EQ(write(fd, src, n), (ssize_t)n);
	close(fd);
	return policy_path;
}

/* Loads src; returns policy_load's status with the message in err. */
static int load(const char *src, char *err, size_t errlen)
{
	err[0] = 0;
	int rc = policy_load(write_policy(src), 0, err, errlen);
	unlink(policy_path);
	return rc;
}

static void load_ok(const char *src)
{
	char err[1024];
	if (load(src, err, sizeof(err)) != 0)
		TEST_FAIL("policy_load failed: %s", err);
}

static void assert_contains(const char *hay, const char *needle)
{
	if (!strstr(hay, needle))
		TEST_FAIL("\"%s\" does not contain \"%s\"", hay, needle);
}

TEST_IMPL(lua_load_missing_file)
{
	char err[512];
	ASSERT_EQ(policy_load("/nonexistent/kumod/policy.lua", 0, err, sizeof(err)), -1);
	ASSERT_STR_EQ(err,
		      "policy file '/nonexistent/kumod/policy.lua': No such file or directory");
}

TEST_IMPL(lua_load_syntax_error)
{
	char err[512], want[256];
	ASSERT_EQ(load("local kumo = require 'kumo'\nlocal x = = 1\n", err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s:2: ", policy_path);
	if (strncmp(err, want, strlen(want)) != 0)
		TEST_FAIL("err \"%s\" does not start with \"%s\"", err, want);
}

TEST_IMPL(lua_load_binary_chunk_refused)
{
	char err[512];
	ASSERT_EQ(load("\x1bLua", err, sizeof(err)), -1);
	assert_contains(err, "binary");
}

TEST_IMPL(lua_init_runtime_error)
{
	char err[512], want[256];
	ASSERT_EQ(load("local kumo = require 'kumo'\n"
		       "kumo.on('init', function()\n"
		       "  error('boom')\n"
		       "end)\n",
		       err, sizeof(err)),
		  -1);
	snprintf(want, sizeof(want), "%s:3: boom", policy_path);
	ASSERT_STR_EQ(err, want);
	/* a top-level error is reported the same way */
	ASSERT_EQ(load("local t = nil\nprint(t.x)\n", err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s:2: attempt to index", policy_path);
	assert_contains(err, want);
}

TEST_IMPL(lua_on_rules)
{
	char err[512], want[256];
	ASSERT_EQ(load("kumo.on('init', function() end)\n"
		       "kumo.on('init', function() end)\n",
		       err, sizeof(err)),
		  -1);
	snprintf(want, sizeof(want), "%s:2: init event already has a handler defined at %s:1",
		 policy_path, policy_path);
	ASSERT_STR_EQ(err, want);
	/* multi events: every pre_init runs, in order, before init */
	load_ok("local kumo = require 'kumo'\n"
		"order = ''\n"
		"kumo.on('pre_init', function() order = order .. 'a' end)\n"
		"kumo.on('pre_init', function() order = order .. 'b' end)\n"
		"kumo.on('init', function() assert(order == 'ab', order) end)\n");
	ASSERT(policy_has_handler("init"));
	/* a custom event (custom_lua constructor) is kept; a near miss of a
	 * KumoMTA event is refused as a typo */
	load_ok("kumo.on('make.webhook', function() end)\n");
	ASSERT(policy_has_handler("make.webhook"));
	ASSERT_EQ(
	    load("kumo.on('smtp_server_mesage_received', function() end)\n", err, sizeof(err)), -1);
	assert_contains(err, "not an event kumod calls (did you mean");
	ASSERT_EQ(load("kumo.on('tsa_init', function() end)\n", err, sizeof(err)), -1);
	assert_contains(err, "a KumoMTA event that kumod does not implement yet");
	ASSERT(!policy_has_handler("smtp_server_ehlo"));
	/* kumo.on from inside a handler is refused */
	ASSERT_EQ(load("kumo.on('init', function()\n"
		       "  kumo.on('smtp_server_ehlo', function() end)\n"
		       "end)\n",
		       err, sizeof(err)),
		  -1);
	assert_contains(err, ":2: kumo.on('smtp_server_ehlo'): handlers can only be registered");
	policy_close();
}

TEST_IMPL(lua_missing_handler_is_ok)
{
	load_ok("kumo.on('init', function() end)\n");
	json_t *meta = json_object();
	struct policy_result r;
	r.status = POLICY_ERROR;
	policy_smtp_rcpt_to("a@b.example", meta, &r);
	ASSERT_EQ(r.status, POLICY_OK);
	struct policy_listener_domain ld;
	policy_get_listener_domain("b.example", "127.0.0.1:25", meta, &ld, &r);
	ASSERT_EQ(r.status, POLICY_OK);
	ASSERT_EQ(ld.found, 0);
	policy_close();
	json_decref(meta);
}

TEST_IMPL(lua_reject_and_disconnect)
{
	load_ok("kumo.on('smtp_server_rcpt_to', function(rcpt)\n"
		"  if rcpt.user == 'full' then kumo.reject(452, '4.1.1 mailbox is full') end\n"
		"  if rcpt.user == 'bye' then kumo.disconnect(421, 'go away') end\n"
		"  if rcpt.user == 'caught' then\n"
		"    local ok, e = pcall(kumo.reject, 550, 'x')\n"
		"    assert(not ok and tostring(e) == 'kumo.reject: 550 x', tostring(e))\n"
		"    error(e)\n"
		"  end\n"
		"  if rcpt.user == 'ctl' then kumo.reject(550, 'a\\r\\nb\\0c') end\n"
		"end)\n");
	json_t *meta = json_object();
	struct policy_result r;
	policy_smtp_rcpt_to("full@example.com", meta, &r);
	ASSERT_EQ(r.status, POLICY_REJECT);
	ASSERT_EQ(r.code, 452);
	ASSERT_STR_EQ(r.text, "4.1.1 mailbox is full");
	ASSERT_EQ(r.disconnect, 0);
	policy_smtp_rcpt_to("bye@example.com", meta, &r);
	ASSERT_EQ(r.status, POLICY_REJECT);
	ASSERT_EQ(r.code, 421);
	ASSERT_STR_EQ(r.text, "go away");
	ASSERT_EQ(r.disconnect, 1);
	/* a caught and re-raised rejection is still a rejection */
	policy_smtp_rcpt_to("caught@example.com", meta, &r);
	ASSERT_EQ(r.status, POLICY_REJECT);
	ASSERT_EQ(r.code, 550);
	/* reply text never carries CR or NUL */
	policy_smtp_rcpt_to("ctl@example.com", meta, &r);
	ASSERT_EQ(r.status, POLICY_REJECT);
	ASSERT_STR_EQ(r.text, "a\nb?c");
	policy_smtp_rcpt_to("fine@example.com", meta, &r);
	ASSERT_EQ(r.status, POLICY_OK);
	policy_close();
	json_decref(meta);
}

TEST_IMPL(lua_reject_bad_code)
{
	static const char *const cases[] = {"200", "600", "450.5", "'550'", "nil"};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char src[256];
		snprintf(src, sizeof(src),
			 "kumo.on('smtp_server_mail_from', function() kumo.reject(%s, 'no') end)\n",
			 cases[i]);
		load_ok(src);
		json_t *meta = json_object();
		struct policy_result r;
		policy_smtp_mail_from("a@b.example", meta, &r);
		if (r.status != POLICY_ERROR)
			TEST_FAIL("kumo.reject(%s): status %d, want POLICY_ERROR", cases[i],
				  (int)r.status);
		assert_contains(r.text, "code must be an integer in 400..599");
		policy_close();
		json_decref(meta);
	}
}

TEST_IMPL(lua_budget_infinite_loop)
{
	load_ok("kumo.on('smtp_server_rcpt_to', function() while true do end end)\n"
		"kumo.on('smtp_server_ehlo', function()\n"
		"  while true do pcall(function() while true do end end) end\n"
		"end)\n"
		"kumo.on('smtp_server_mail_from', function(s) return s.email end)\n"
		"kumo.on('smtp_server_connection_accepted', function()\n"
		"  coroutine.wrap(function() while true do end end)()\n"
		"end)\n");
	json_t *meta = json_object();
	struct policy_result r;
	uint64_t t0 = clock_mono_ns();
	policy_smtp_rcpt_to("a@b.example", meta, &r);
	uint64_t took = clock_mono_ns() - t0;
	ASSERT_EQ(r.status, POLICY_ERROR);
	assert_contains(r.text, "policy call exceeded its budget");
	ASSERT_LT(took, 2500000000ull);
	/* a pcall loop cannot swallow the budget error */
	t0 = clock_mono_ns();
	policy_smtp_ehlo("client.example", meta, NULL, NULL, &r);
	took = clock_mono_ns() - t0;
	ASSERT_EQ(r.status, POLICY_ERROR);
	assert_contains(r.text, "policy call exceeded its budget");
	ASSERT_LT(took, 2500000000ull);
	/* so does a coroutine the handler creates */
	policy_smtp_connection_accepted(meta, &r);
	ASSERT_EQ(r.status, POLICY_ERROR);
	assert_contains(r.text, "policy call exceeded its budget");
	/* the state still works */
	policy_smtp_mail_from("a@b.example", meta, &r);
	ASSERT_EQ(r.status, POLICY_OK);
	policy_close();
	json_decref(meta);
}

TEST_IMPL(lua_runtime_error_and_yield)
{
	load_ok("kumo.on('smtp_server_mail_from', function(s)\n"
		"  local t = nil\n"
		"  return t.field\n"
		"end)\n"
		"kumo.on('smtp_server_rcpt_to', function() coroutine.yield(1) end)\n"
		"kumo.on('smtp_server_ehlo', function() error({}) end)\n");
	json_t *meta = json_object();
	struct policy_result r;
	policy_smtp_mail_from("a@b.example", meta, &r);
	ASSERT_EQ(r.status, POLICY_ERROR);
	char want[128];
	snprintf(want, sizeof(want), ":3: attempt to index a nil value");
	assert_contains(r.text, want);
	policy_smtp_rcpt_to("a@b.example", meta, &r);
	ASSERT_EQ(r.status, POLICY_ERROR);
	assert_contains(r.text, "yielded");
	policy_smtp_ehlo("x", meta, NULL, NULL, &r);
	ASSERT_EQ(r.status, POLICY_ERROR);
	ASSERT_STR_EQ(r.text, "(error object is a table value)");
	policy_close();
	json_decref(meta);
}

/* policy_smtp_ehlo_async completing without a wait: a returned list
 * replaces the caller's array in place, nil keeps it, an error leaves it
 * alone, and HELO (no array) ignores what the handler returns. */
TEST_IMPL(lua_ehlo_extensions_in_place)
{
	load_ok("kumo.on('smtp_server_ehlo', function(domain, meta, ext)\n"
		"  if domain == 'edit' then table.insert(ext, 'X-ONE'); return ext end\n"
		"  if domain == 'bad' then return {'A\\r\\nB'} end\n"
		"  if domain == 'helo' then return {'X-IGNORED'} end\n"
		"end)\n");
	json_t *meta = json_object();
	struct policy_result r;
	uint64_t id = 0;
	json_t *ext = json_pack("[s, s]", "PIPELINING", "SIZE 10");
	ASSERT_EQ(policy_smtp_ehlo_async("keep", meta, ext, &r, NULL, NULL, &id), 0);
	ASSERT_EQ(r.status, POLICY_OK);
	ASSERT_EQ(json_array_size(ext), 2);
	ASSERT_EQ(policy_smtp_ehlo_async("edit", meta, ext, &r, NULL, NULL, &id), 0);
	ASSERT_EQ(r.status, POLICY_OK);
	ASSERT_EQ(json_array_size(ext), 3);
	ASSERT_STR_EQ(json_string_value(json_array_get(ext, 2)), "X-ONE");
	ASSERT_EQ(policy_smtp_ehlo_async("bad", meta, ext, &r, NULL, NULL, &id), 0);
	ASSERT_EQ(r.status, POLICY_ERROR);
	assert_contains(r.text, "printable ASCII");
	ASSERT_EQ(json_array_size(ext), 3);
	ASSERT_EQ(policy_smtp_ehlo_async("helo", meta, NULL, &r, NULL, NULL, &id), 0);
	ASSERT_EQ(r.status, POLICY_OK);
	ASSERT_EQ(id, 0);
	json_decref(ext);
	policy_close();
	json_decref(meta);
}

TEST_IMPL(lua_json_round_trip)
{
	load_ok(
	    "local kumo = require 'kumo'\n"
	    "kumo.on('init', function()\n"
	    "  local v = {a = 1, b = {1, 2, 3}, c = 'x\\0y', d = 0.1, e = true, f = {}}\n"
	    "  local s = kumo.json_encode(v)\n"
	    "  assert(s == '{\"a\":1,\"b\":[1,2,3],\"c\":\"x\\\\u0000y\",\"d\":0.1,\"e\":true,"
	    "\"f\":{}}', s)\n"
	    "  local t = kumo.json_parse(s)\n"
	    "  assert(t.a == 1 and math.type(t.a) == 'integer' and #t.b == 3 and t.b[3] == 3)\n"
	    "  assert(t.c == 'x\\0y' and t.d == 0.1 and t.e == true and next(t.f) == nil)\n"
	    "  assert(kumo.json_parse('null') == nil)\n"
	    "  assert(kumo.json_encode(nil) == 'null')\n"
	    "  assert(kumo.json_parse(kumo.json_encode(1/3)) == 1/3)\n"
	    "  assert(kumo.json_encode_pretty({k = {1}}) == '{\\n  \"k\": [\\n    1\\n  ]\\n}')\n"
	    "  local ok, e = pcall(kumo.json_parse, '{bad')\n"
	    "  assert(not ok and e:find('json_parse:'), e)\n"
	    "  local cyc = {} cyc.self = cyc\n"
	    "  ok, e = pcall(kumo.json_encode, cyc)\n"
	    "  assert(not ok and e:find('nesting too deep'), e)\n"
	    "  ok, e = pcall(kumo.json_encode, {print})\n"
	    "  assert(not ok and e:find('cannot encode a function'), e)\n"
	    "  ok, e = pcall(kumo.json_encode, '\\xff')\n"
	    "  assert(not ok and e:find('UTF%-8'), e)\n"
	    "  ok, e = pcall(kumo.json_encode, 0/0)\n"
	    "  assert(not ok, e)\n"
	    "  local p = os.tmpname()\n"
	    "  local f = io.open(p, 'w') f:write('{\"x\": [null, 2]}') f:close()\n"
	    "  local j = kumo.json_load(p)\n"
	    "  os.remove(p)\n"
	    "  assert(j.x[1] == nil and j.x[2] == 2)\n"
	    "end)\n");
	policy_close();
}

TEST_IMPL(lua_log_filter_change)
{
	char err[256];
	ASSERT_EQ(log_set_filter("lua=info", err, sizeof(err)), 0);
	load_ok("kumo.on('init', function()\n"
		"  kumo.set_diagnostic_log_filter('lua=debug,kumod=warn')\n"
		"  local ok, e = pcall(kumo.set_diagnostic_log_filter, 'lua=bogus_level')\n"
		"  assert(not ok and e:find('bogus_level'), e)\n"
		"  kumo.log_debug('visible', 1, nil, true, '\\xff')\n"
		"end)\n");
	ASSERT_STR_EQ(log_filter_text(), "lua=debug,kumod=warn");
	policy_close();
}

TEST_IMPL(lua_start_esmtp_listener_keys)
{
	static const struct {
		const char *args;
		const char *want;
	} cases[] = {
	    {"{bogus = 1}", "start_esmtp_listener: unknown key 'bogus'"},
	    {"{deferred_queue = true}", "start_esmtp_listener: 'deferred_queue' is a KumoMTA "
					"option that kumod does not implement yet"},
	    {"{max_conections = 1}", "start_esmtp_listener: unknown key 'max_conections' (did you "
				     "mean 'max_connections'?)"},
	    {"{max_connections = 'many'}", "start_esmtp_listener: max_connections: expected an "
					   "integer, got string"},
	    {"{listen = 25}", "start_esmtp_listener: listen: expected a string"},
	    {"{client_timeout = '5 fortnights'}",
	     "start_esmtp_listener: client_timeout: invalid duration '5 fortnights'"},
	    {"{invalid_line_endings = 'Maybe'}",
	     "invalid_line_endings: expected 'Deny', 'Allow' or 'Fix'"},
	    {"{relay_hosts = {'10.0.0.0/33'}}", "relay_hosts: invalid CIDR '10.0.0.0/33'"},
	    {"{trace_headers = {colour = 'blue'}}",
	     "start_esmtp_listener.trace_headers: unknown key 'colour'"},
	    {"{trace_headers = {received_header = 1}}",
	     "trace_headers.received_header: expected a boolean"},
	    {"{batch_handling = 'ByMood'}",
	     "batch_handling: expected 'BifurcateAlways' or 'BatchByDomain', got 'ByMood'"},
	    {"{trace_headers = {header_name = 'X Ref'}}",
	     "trace_headers.header_name: 'X Ref' is not a valid header field name"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char src[512], err[512];
		snprintf(src, sizeof(src),
			 "kumo.on('init', function()\n  kumo.start_esmtp_listener(%s)\nend)\n",
			 cases[i].args);
		ASSERT_EQ(load(src, err, sizeof(err)), -1);
		assert_contains(err, cases[i].want);
		assert_contains(err, ":2: ");
	}
	/* every known key with a valid value passes validation (--validate
	 * mode checks the table but starts nothing) */
	const char *src =
	    "kumo.on('init', function()\n"
	    "  kumo.start_esmtp_listener{listen = '127.0.0.1:0', hostname = 'h', banner = 'b',\n"
	    "    relay_hosts = {'127.0.0.1', '::1', '10.0.0.0/8'}, max_connections = 10,\n"
	    "    client_timeout = '5m', data_processing_timeout = 30,\n"
	    "    max_message_size = 1000, max_recipients_per_message = 5,\n"
	    "    max_messages_per_connection = 3, line_length_hard_limit = 998,\n"
	    "    invalid_line_endings = 'Fix', data_buffer_size = 4096,\n"
	    "    batch_handling = 'BifurcateAlways', tls_certificate = '/x.pem',\n"
	    "    tls_private_key = '/x.key', trace_headers = {received_header = false,\n"
	    "    supplemental_header = true, header_name = 'X-Ref', include_meta_names = {}}}\n"
	    "  kumo.define_spool{name = 'data', path = '/tmp/x', kind = 'LocalDisk', flush = "
	    "false}\n"
	    "  local ok, e = pcall(kumo.define_spool, {name = 'data'})\n"
	    "  assert(not ok and e:find(\"missing key 'path'\"), e)\n"
	    "  ok, e = pcall(kumo.define_spool, {name = 'data', path = '/p', rocks_params = {}})\n"
	    "  assert(not ok and e:find(\"rocks_params: only for kind = 'RocksDB'\", 1, true), e)\n"
	    "  ok, e = pcall(kumo.define_spool, {name = 'data', path = '/p', kind = 'RocksDB',\n"
	    "    rocks_params = {bogus = 1}})\n"
	    "  assert(not ok and e:find(\"rocks_params: unknown key 'bogus'\", 1, true), e)\n"
	    "  kumo.configure_accounting_db_path(os.tmpname())\n"
	    "  kumo.set_spoolin_threads(2)\n"
	    "  assert(kumo.available_parallelism() >= 1)\n"
	    "end)\n";
	char err[512];
	int rc = policy_load(write_policy(src), 1, err, sizeof(err));
	unlink(policy_path);
	if (rc != 0)
		TEST_FAIL("validate-mode load failed: %s", err);
	policy_close();
}

TEST_IMPL(lua_durations)
{
	setenv("KUMO_AVAILABLE_PARALLELISM", "7", 1);
	/* durations are checked through the listener's timeout keys */
	static const char *const good[] = {"'5m'",    "'20 minutes'", "'1 hour'", "'1s'",
					   "'250ms'", "'1h 30m'",     "90",	  "0.5"};
	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		char src[256], err[512];
		snprintf(src, sizeof(src),
			 "kumo.on('init', function()\n"
			 "  assert(kumo.available_parallelism() == 7)\n"
			 "  kumo.start_esmtp_listener{client_timeout = %s}\nend)\n",
			 good[i]);
		int rc = policy_load(write_policy(src), 1, err, sizeof(err));
		unlink(policy_path);
		if (rc != 0)
			TEST_FAIL("duration %s: %s", good[i], err);
	}
	policy_close();
}

TEST_IMPL(lua_addresses_and_conn_meta)
{
	load_ok(
	    "kumo.on('smtp_server_mail_from', function(s, meta)\n"
	    "  if meta:get_meta('case') == 'null' then\n"
	    "    assert(s.user == '' and s.domain == '' and s.email == '' and tostring(s) == '')\n"
	    "  else\n"
	    "    assert(s.user == 'Jo.Doe' and s.domain == 'example.com', s.user)\n"
	    "    assert(s.email == 'Jo.Doe@example.com' and tostring(s) == s.email)\n"
	    "  end\n"
	    "  assert(meta:get_meta('missing') == nil)\n"
	    "  meta:set_meta('seen', {n = 1, list = {'a'}})\n"
	    "  meta:set_meta('case', nil)\n"
	    "end)\n"
	    "kumo.on('get_listener_domain', function(domain, listener, meta)\n"
	    "  if domain == 'relay.example' then\n"
	    "    return kumo.make_listener_domain{relay_to = true, relay_from = {'10.0.0.0/8'}}\n"
	    "  elseif domain == 'bad.example' then\n"
	    "    return 42\n"
	    "  end\n"
	    "end)\n");
	json_t *meta = json_object();
	struct policy_result r;
	policy_smtp_mail_from("Jo.Doe@example.com", meta, &r);
	if (r.status != POLICY_OK)
		TEST_FAIL("mail_from: %s", r.text);
	ASSERT_EQ(json_integer_value(json_object_get(json_object_get(meta, "seen"), "n")), 1);
	json_object_set_new(meta, "case", json_string("null"));
	policy_smtp_mail_from("", meta, &r);
	if (r.status != POLICY_OK)
		TEST_FAIL("mail_from <>: %s", r.text);
	ASSERT(json_object_get(meta, "case") == NULL);

	struct policy_listener_domain ld;
	policy_get_listener_domain("relay.example", "127.0.0.1:2025", meta, &ld, &r);
	ASSERT_EQ(r.status, POLICY_OK);
	ASSERT_EQ(ld.found, 1);
	ASSERT_EQ(ld.relay_to, 1);
	ASSERT_EQ(json_array_size(ld.relay_from), 1);
	ASSERT_STR_EQ(json_string_value(json_array_get(ld.relay_from, 0)), "10.0.0.0/8");
	ASSERT_EQ(json_array_size(ld.relay_from_authz), 0);
	json_decref(ld.relay_from);
	json_decref(ld.relay_from_authz);
	policy_get_listener_domain("other.example", "127.0.0.1:2025", meta, &ld, &r);
	ASSERT_EQ(r.status, POLICY_OK);
	ASSERT_EQ(ld.found, 0);
	policy_get_listener_domain("bad.example", "127.0.0.1:2025", meta, &ld, &r);
	ASSERT_EQ(r.status, POLICY_ERROR);
	assert_contains(r.text, "make_listener_domain");
	policy_close();
	json_decref(meta);
}

TEST_IMPL(lua_message_object)
{
	load_ok(
	    "kumo.on('smtp_server_message_received', function(msg, meta)\n"
	    "  assert(#msg:id() == 32)\n"
	    "  assert(msg:sender().email == 'from@example.com')\n"
	    "  assert(msg:recipient().domain == 'to.example')\n"
	    "  local l = msg:recipient_list()\n"
	    "  assert(#l == 2 and l[2].user == 'two')\n"
	    "  msg:set_meta('queue', 'null')\n"
	    "  msg:set_meta('obj', {a = {1, 2}})\n"
	    "  assert(msg:get_meta('obj').a[2] == 2 and msg:get_meta('nope') == nil)\n"
	    "  assert(msg:get_first_named_header_value('subject') == 'hello')\n"
	    "  assert(msg:get_first_named_header_value('X-Missing') == nil)\n"
	    "  local all = msg:get_all_named_header_values('X-Tag')\n"
	    "  assert(#all == 2 and all[1] == 'a' and all[2] == 'b', #all)\n"
	    "  msg:remove_all_named_headers('X-Tag')\n"
	    "  assert(#msg:get_all_named_header_values('X-Tag') == 0)\n"
	    "  msg:prepend_header('X-First', 'one')\n"
	    "  msg:append_header('X-Last', 'two')\n"
	    "  for _, bad in ipairs({{'X-A', 'v\\r\\nBcc: x'}, {'X-A', 'v\\nx'}, {'X-A', 'v\\0'},\n"
	    "                        {'Bad Name', 'v'}, {'X:A', 'v'}, {'', 'v'}, {'X\\0', 'v'}}) "
	    "do\n"
	    "    local ok, e = pcall(msg.prepend_header, msg, bad[1], bad[2])\n"
	    "    assert(not ok, 'accepted ' .. bad[1])\n"
	    "    ok = pcall(msg.append_header, msg, bad[1], bad[2])\n"
	    "    assert(not ok, 'accepted ' .. bad[1])\n"
	    "  end\n"
	    "  msg:import_x_headers()\n"
	    "  assert(msg:get_meta('x_first') == 'one' and msg:get_meta('x_last') == 'two')\n"
	    "  assert(msg:get_data():find('^X%-First: one\\r\\n'))\n"
	    "  keep = msg\n"
	    "end)\n");
	struct message *m = message_new();
	message_set_sender(m, "from@example.com");
	message_add_recipient(m, "one@to.example");
	message_add_recipient(m, "two@to.example");
	const char *data = "Subject: hello\r\nX-Tag: a\r\nX-Tag: b\r\n\r\nbody\r\n";
	message_set_data(m, data, strlen(data));
	json_t *meta = json_object();
	struct policy_result r;
	policy_smtp_message_received(m, meta, &r);
	if (r.status != POLICY_OK)
		TEST_FAIL("message_received: %s", r.text);
	ASSERT_STR_EQ(message_get_meta_str(m, "queue"), "null");
	ASSERT_EQ(m->refs, 2); /* the global `keep` still holds one */
	struct buf v;
	buf_init(&v);
	ASSERT_EQ(message_get_first_named_header_value(m, "X-Last", &v), 1);
	ASSERT_STR_EQ(buf_cstr(&v), "two");
	buf_free(&v);
	policy_close(); /* lua_close collects `keep` */
	ASSERT_EQ(m->refs, 1);
	message_unref(m);
	json_decref(meta);
}
