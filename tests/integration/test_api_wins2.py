# SPDX-License-Identifier: Apache-2.0
"""KumoMTA names added for issue 16 (second batch): kumo.serde.yaml_parse / yaml_load /
yaml_encode (libyaml), kumo.encode.charset_decode / charset_encode (iconv) and
kumo.invoke_get_queue_config. Each runs in a real kumod with a policy; results come back
as JSON written by the policy or in an SMTP reply, and are compared field by field
(YAML and byte results also against Python's own codecs)."""

import codecs
import json

import pytest

from test_policy_more import scenario

# --- YAML and charsets, evaluated as the policy loads -------------------------------

LOAD_POLICY = r"""
local kumo = require 'kumo'
local out = {}
local d = os.getenv 'DATA_DIR'
local function err(f, ...)
  local ok, e = pcall(f, ...)
  return ok and 'no error' or tostring(e)
end
local hex = kumo.encode.hex_encode

out.doc = kumo.serde.yaml_parse(io.open(d .. '/doc.yaml'):read 'a')
out.loaded = kumo.serde.yaml_load(d .. '/doc.yaml')
-- types of plain and quoted scalars
local t = kumo.serde.yaml_parse [[
i: 42
neg: -7
hex: 0x1F
oct: 0o17
f: 2.5
e: 1e3
t: True
n: ~
s_quoted_int: '42'
s_quoted_bool: "true"
s_tag: !!str 12
yes_is_string: yes
]]
out.types = {}
for k, v in pairs(t) do
  out.types[k] = { math.type(v) or type(v), v }
end
out.null_present = t.n == nil
out.inf = kumo.serde.yaml_parse('.inf') == math.huge
out.nan = (function(x) return x ~= x end)(kumo.serde.yaml_parse '.nan')
out.empty_is_nil = kumo.serde.yaml_parse '' == nil
out.int_key = kumo.serde.yaml_parse('1: one')['1']
out.alias = kumo.serde.yaml_parse [[
base: &b { pool: p1, limit: 3 }
other: *b
]]
out.bad_syntax = err(kumo.serde.yaml_parse, 'a: [1, 2\nb: 3\n')
out.bad_indent = err(kumo.serde.yaml_parse, 'a:\n  b: 1\n c: 2\n')
out.two_docs = err(kumo.serde.yaml_parse, 'a: 1\n---\nb: 2\n')
out.complex_key = err(kumo.serde.yaml_parse, '? [1, 2]\n: x\n')
out.missing = err(kumo.serde.yaml_load, d .. '/missing.yaml')
out.data_dir = d

local value = {
  name = 'kumod', count = 3, ratio = 0.25, whole = 2.0, on = true,
  list = { 'a', 'true', '7', '', 'null', 'two words', 'x: y' },
  nested = { empty = {}, deep = { k = 'v' } },
}
out.encoded = kumo.serde.yaml_encode(value)
out.roundtrip = kumo.serde.yaml_parse(out.encoded)
out.encode_scalar = kumo.serde.yaml_encode 'plain'
out.encode_misc = {
  kumo.serde.yaml_encode { ml = 'two\nlines\n', u = 'caf\u{e9} \u{65e5}', lead = ' sp' },
  kumo.serde.yaml_encode(math.huge), kumo.serde.yaml_encode(nil), kumo.serde.yaml_encode {},
}
out.misc_back = kumo.serde.yaml_parse(out.encode_misc[1])
out.encode_fn = err(kumo.serde.yaml_encode, { f = print })

-- charsets
local latin1 = kumo.encode.charset_encode('ISO-8859-1', 'caf\u{e9} na\u{ef}ve')
out.latin1_hex = hex(latin1)
out.latin1_back = kumo.encode.charset_decode('latin1', latin1)
out.sjis_hex = hex(kumo.encode.charset_encode('Shift_JIS', '\u{65e5}\u{672c}\u{8a9e}'))
out.sjis_back = kumo.encode.charset_decode('Shift_JIS', '\x93\xfa\x96\x7b\x8c\xea')
-- WHATWG labels, as KumoMTA: latin1 and ISO-8859-1 mean windows-1252
out.latin1_80 = kumo.encode.charset_decode('ISO-8859-1', '\x80\xe9')
out.ascii_80 = kumo.encode.charset_decode('us-ascii', '\x80')
out.euro_hex = hex(kumo.encode.charset_encode('latin1', '\u{20ac}'))
out.koi8_back = kumo.encode.charset_decode('KOI8-R', '\xf0\xd2\xc9\xd7\xc5\xd4')
out.partial_hex = hex(kumo.encode.charset_encode('ISO-8859-1', 'a\u{65e5}b'))
out.partial_default_hex = hex(kumo.encode.charset_encode('ISO-8859-1', 'a\u{65e5}b', true))
out.strict = err(kumo.encode.charset_encode, 'ISO-8859-1', 'a\u{65e5}b', false)
out.unknown_decode = err(kumo.encode.charset_decode, 'no-such-charset', 'x')
out.unknown_encode = err(kumo.encode.charset_encode, 'no-such-charset', 'x')
out.bad_bytes = err(kumo.encode.charset_decode, 'UTF-8', 'ok\xff')
out.truncated = err(kumo.encode.charset_decode, 'Shift_JIS', '\x93')
out.not_utf8 = err(kumo.encode.charset_encode, 'latin1', 'caf\xe9')

local o = assert(io.open(os.getenv 'OUT', 'w'))
o:write(kumo.json_encode(out))
o:close()
kumo.on('init', function()
  kumo.start_esmtp_listener { listen = '127.0.0.1:0' }
end)
"""

DOC_YAML = """\
# a KumoMTA-style data file
listeners:
  - listen: 0.0.0.0:25
    hostname: mx.example.com
  - listen: "[::]:587"
pools:
  default:
    sources: [ip-1, ip-2]
    weights: {ip-1: 2, ip-2: 1}
note: |
  two
  lines
folded: >
  one
  line
"""


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    # a module-scoped kumod: the conftest fixture is function-scoped, so run it per test
    # cheaply through this cache instead
    return {}


@pytest.fixture
def r(kumod, tmp_path, loaded):
    if "r" not in loaded:
        d = tmp_path / "data"
        d.mkdir()
        (d / "doc.yaml").write_text(DOC_YAML)
        out = tmp_path / "out.json"
        k = kumod(LOAD_POLICY, env={"DATA_DIR": str(d), "OUT": str(out)})
        k.stop()
        loaded["r"] = json.loads(out.read_text())
        loaded["d"] = d
    return loaded["r"]


def test_yaml_parse_document(r):
    want = {
        "listeners": [{"listen": "0.0.0.0:25", "hostname": "mx.example.com"},
                      {"listen": "[::]:587"}],
        "pools": {"default": {"sources": ["ip-1", "ip-2"], "weights": {"ip-1": 2, "ip-2": 1}}},
        "note": "two\nlines\n",
        "folded": "one line\n",
    }
    assert r["doc"] == want
    assert r["loaded"] == want


def test_yaml_scalar_types(r):
    t = r["types"]
    assert t["i"] == ["integer", 42] and t["neg"] == ["integer", -7]
    assert t["hex"] == ["integer", 31] and t["oct"] == ["integer", 15]
    assert t["f"] == ["float", 2.5] and t["e"] == ["float", 1000.0]
    assert t["t"] == ["boolean", True]
    assert "n" not in t and r["null_present"] is True
    assert t["s_quoted_int"] == ["string", "42"]
    assert t["s_quoted_bool"] == ["string", "true"]
    assert t["s_tag"] == ["string", "12"]
    assert t["yes_is_string"] == ["string", "yes"]  # YAML 1.2: yes is not a boolean
    assert r["inf"] is True and r["nan"] is True
    assert r["empty_is_nil"] is True
    assert r["int_key"] == "one"


def test_yaml_alias(r):
    assert r["alias"] == {"base": {"pool": "p1", "limit": 3}, "other": {"pool": "p1", "limit": 3}}


def test_yaml_errors_name_line_and_column(r):
    assert r["bad_syntax"].endswith(
        "yaml_parse: did not find expected ',' or ']' while parsing a flow sequence "
        "at line 2 column 2")
    assert r["bad_indent"].endswith(
        "yaml_parse: did not find expected key while parsing a block mapping at line 3 column 2")
    assert r["two_docs"].endswith(
        "yaml_parse: more than one YAML document is not supported at line 2 column 1")
    assert r["complex_key"].endswith(
        "yaml_parse: a mapping key must be a string, not a collection at line 1 column 3")
    assert r["missing"].endswith("yaml_load: %s: No such file or directory"
                                 % (r["data_dir"] + "/missing.yaml"))


def test_yaml_encode(r):
    enc = r["encoded"]
    # block style, sorted keys, strings that would read back as other types are quoted
    assert enc.splitlines() == [
        "count: 3",
        "list:",
        "- a",
        "- 'true'",
        "- '7'",
        "- ''",
        "- 'null'",
        "- two words",
        "- 'x: y'",
        "name: kumod",
        "nested:",
        "  deep:",
        "    k: v",
        "  empty: {}",
        "on: true",
        "ratio: 0.25",
        "whole: 2.0",
    ]
    assert r["roundtrip"] == {
        "name": "kumod", "count": 3, "ratio": 0.25, "whole": 2.0, "on": True,
        "list": ["a", "true", "7", "", "null", "two words", "x: y"],
        "nested": {"empty": {}, "deep": {"k": "v"}},
    }
    assert r["encode_scalar"] == "plain\n"
    # several lines as a literal block, UTF-8 kept as it is, a leading space quoted
    assert r["encode_misc"] == [
        "lead: ' sp'\nml: |\n  two\n  lines\nu: caf\u00e9 \u65e5\n", ".inf\n", "null\n", "{}\n"]
    assert r["misc_back"] == {"ml": "two\nlines\n", "u": "caf\u00e9 \u65e5", "lead": " sp"}
    assert r["encode_fn"].endswith("yaml_encode: cannot encode a function value")


def test_charset_round_trips_match_python(r):
    assert bytes.fromhex(r["latin1_hex"]) == "caf\u00e9 na\u00efve".encode("latin-1")
    assert r["latin1_back"] == "caf\u00e9 na\u00efve"
    assert bytes.fromhex(r["sjis_hex"]) == "\u65e5\u672c\u8a9e".encode("shift_jis")
    assert r["sjis_back"] == codecs.decode(b"\x93\xfa\x96\x7b\x8c\xea", "shift_jis")
    assert r["latin1_80"] == b"\x80\xe9".decode("cp1252") == "\u20ac\u00e9"
    assert r["ascii_80"] == "\u20ac"
    assert bytes.fromhex(r["euro_hex"]) == b"\x80"
    assert r["koi8_back"] == codecs.decode(b"\xf0\xd2\xc9\xd7\xc5\xd4", "koi8_r")


def test_charset_errors(r):
    # ignore_errors omitted or true: the unrepresentable character is left out
    assert bytes.fromhex(r["partial_hex"]) == b"ab"
    assert bytes.fromhex(r["partial_default_hex"]) == b"ab"
    assert r["strict"].endswith(
        "input string did not encode into ISO-8859-1 bytes: a character the charset cannot "
        "represent at byte 1")
    assert r["unknown_decode"].endswith("unknown charset no-such-charset")
    assert r["unknown_encode"].endswith("unknown charset no-such-charset")
    assert r["bad_bytes"].endswith(
        "input string did not decode from UTF-8 bytes: invalid sequence at byte 2")
    assert r["truncated"].endswith(
        "input string did not decode from Shift_JIS bytes: incomplete sequence at byte 0")
    assert r["not_utf8"].endswith("charset_encode: input is not UTF-8 (byte 3)")


# --- kumo.invoke_get_queue_config ---------------------------------------------------

INVOKE_POLICY = r"""
local kumo = require 'kumo'
local seen = {}
local SCEN = {
  by_name = function()
    local cfg = kumo.invoke_get_queue_config 'camp:tenant1@Example.COM!Relay.Test'
    kumo.make_queue_config(cfg) -- accepted again as it is
    return { cfg = cfg, args = seen[#seen] }
  end,
  plain = function()
    return { cfg = kumo.invoke_get_queue_config 'plain.test', args = seen[#seen] }
  end,
  parts = function()
    local cfg = kumo.invoke_get_queue_config('parts.test', 't2', 'c2', 'r.test')
    return { cfg = cfg, args = seen[#seen] }
  end,
  none = function()
    return { cfg = kumo.invoke_get_queue_config 'none.test', n = #seen }
  end,
  fail = function()
    return kumo.invoke_get_queue_config 'fail.test'
  end,
  loop = function()
    local ok, e = pcall(kumo.invoke_get_queue_config, 'loop.test')
    return { ok = ok, deep = tostring(e):find('nested 8 deep', 1, true) ~= nil }
  end,
  no_domain = function()
    return kumo.invoke_get_queue_config 'tenant@'
  end,
}
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  table.insert(seen, { domain, tenant, campaign, routing_domain })
  if domain == 'none.test' then
    return nil
  end
  if domain == 'fail.test' then
    error 'no queue config for fail.test'
  end
  if domain == 'loop.test' then
    return kumo.invoke_get_queue_config 'loop.test'
  end
  return kumo.make_queue_config {
    retry_interval = '20m',
    max_retry_interval = '1500ms',
    max_age = '2 days',
    egress_pool = 'pool-' .. domain,
  }
end)
kumo.on('smtp_server_message_received', function(msg)
  local what = msg:get_first_named_header_value 'Subject'
  local ok, res = pcall(SCEN[what], msg)
  if ok then
    kumo.reject(550, 'RESULT ' .. kumo.json_encode(res))
  end
  kumo.reject(550, 'ERROR ' .. tostring(res))
end)
kumo.on('init', function()
  kumo.start_esmtp_listener { listen = '127.0.0.1:0' }
end)
"""


@pytest.fixture
def ik(kumod):
    return kumod(INVOKE_POLICY)


def test_invoke_get_queue_config(ik):
    def res(name):
        kind, v = scenario(ik.smtp_port, name)
        assert kind == "RESULT", (name, v)
        return v

    def err(name):
        kind, v = scenario(ik.smtp_port, name)
        assert kind == "ERROR", (name, v)
        return v

    r = res("by_name")
    # the queue name is split as the scheduler splits it, domains lower-cased
    assert r["args"] == ["example.com", "tenant1", "camp", "relay.test"]
    assert r["cfg"]["egress_pool"] == "pool-example.com"
    assert r["cfg"]["retry_interval"] == "1200s"
    assert r["cfg"]["max_retry_interval"] == "1500ms"
    assert r["cfg"]["max_age"] == "172800s"
    r = res("plain")
    assert r["args"] == ["plain.test", "", "", ""]
    assert r["cfg"]["egress_pool"] == "pool-plain.test"
    r = res("parts")
    assert r["args"] == ["parts.test", "t2", "c2", "r.test"]
    assert res("none") == {"cfg": {}, "n": 4}
    assert err("fail").endswith("no queue config for fail.test")
    assert "kumo.invoke_get_queue_config:" in err("fail")
    assert res("loop") == {"ok": False, "deep": True}
    assert err("no_domain").endswith("kumo.invoke_get_queue_config: the queue name has no domain")
