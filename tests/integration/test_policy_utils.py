# SPDX-License-Identifier: Apache-2.0
"""The utility modules of docs/policy-utils.md, run in the real kumod.

Most tests run a policy under `kumod --validate`: the policy checks with
assert() and prints one JSON line per fact (`OUT <json>`), which the test
parses. The memoize metrics test runs a daemon and reads /metrics.
"""

import json
import os
import re
import textwrap
import tomllib
import urllib.request

import pytest

from conftest import run_kumod


def run_policy(tmp_path, body, files=None, expect_ok=True):
    for name, data in (files or {}).items():
        p = tmp_path / name
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
    prelude = textwrap.dedent("""\
        local function out(v) print('OUT ' .. kumo.json_encode(v)) end
        local function raises(f, ...)
          local ok, err = pcall(f, ...)
          assert(not ok, 'expected an error')
          return tostring(err)
        end
    """)
    policy = tmp_path / "policy.lua"
    policy.write_text(prelude + textwrap.dedent(body))
    p = run_kumod(["--validate", "--policy", str(policy)], cwd=str(tmp_path))
    if expect_ok:
        assert p.returncode == 0, p.stdout + p.stderr
    outs = [json.loads(line[4:]) for line in p.stdout.splitlines() if line.startswith("OUT ")]
    return outs, p


# --- TOML ----------------------------------------------------------------------

QUEUES = open(os.path.join(os.path.dirname(__file__), "toml", "valid", "queues.toml")).read()


def test_toml_load_matches_reference(tmp_path):
    outs, _ = run_policy(tmp_path, """
        local t = kumo.toml_load('queues.toml')
        out(t)
        out(kumo.serde.toml_load('queues.toml'))
    """, files={"queues.toml": QUEUES})
    ref = tomllib.loads(QUEUES)
    assert outs[0] == ref
    assert outs[1] == ref


def test_toml_parse_values_and_datetimes(tmp_path):
    outs, _ = run_policy(tmp_path, """
        local t = kumo.toml_parse([==[
        i = 0x10
        f = 1e3
        inf_ = -inf
        s = 'lit\\x'
        when = 1979-05-27T07:32:00z
        day = 1979-05-27
        [[a]]
        b = 1
        ]==])
        assert(math.type(t.i) == 'integer' and t.i == 16)
        assert(math.type(t.f) == 'float' and t.f == 1000)
        assert(t.inf_ == -math.huge)
        out({s = t.s, when = t.when, day = t.day, a = t.a})
    """)
    assert outs[0] == {
        "s": "lit\\x",
        "when": {"$__toml_private_datetime": "1979-05-27T07:32:00Z"},
        "day": {"$__toml_private_datetime": "1979-05-27"},
        "a": [{"b": 1}],
    }


def test_toml_errors_name_line_and_column(tmp_path):
    outs, _ = run_policy(tmp_path, """
        out(raises(kumo.toml_parse, 'a = 1\\n[t]\\nb = [1, @]\\n'))
        out(raises(kumo.toml_load, 'bad.toml'))
        out(raises(kumo.toml_load, 'missing.toml'))
        out(raises(kumo.toml_encode, 'a string'))
        out(raises(kumo.toml_encode, {f = print}))
    """, files={"bad.toml": "[a]\nx = 1\n[a]\n"})
    assert outs[0].endswith("toml_parse: line 3, column 9: invalid value starting with '@'")
    assert outs[1].endswith("toml_load: bad.toml:3:1: table [a] is defined twice")
    assert outs[2].endswith("toml_load: missing.toml: No such file or directory")
    assert outs[3].endswith("toml_encode: the top level of a TOML document must be a table")
    assert outs[4].endswith("toml_encode: cannot encode a function value as TOML")


def test_toml_encode_round_trips_through_reference(tmp_path):
    outs, _ = run_policy(tmp_path, """
        local v = {
          name = 'x', n = 3, f = 0.5, yes = true, list = {1, 2, 3}, empty = {},
          nested = { deeper = { k = 'v' } }, aot = { { a = 1 }, { a = 2 } },
          ['odd key'] = 'quoted', when = { ['$__toml_private_datetime'] = '1979-05-27T07:32:00Z' },
        }
        out(kumo.toml_encode(v))
        out(kumo.toml_encode_pretty(v))
        out(kumo.toml_parse(kumo.toml_encode(v)).nested.deeper.k)
    """)
    for text in outs[:2]:
        doc = tomllib.loads(text)
        assert doc["name"] == "x" and doc["n"] == 3 and doc["f"] == 0.5 and doc["yes"] is True
        assert doc["list"] == [1, 2, 3] and doc["empty"] == {}
        assert doc["nested"] == {"deeper": {"k": "v"}}
        assert doc["aot"] == [{"a": 1}, {"a": 2}]
        assert doc["odd key"] == "quoted"
        assert doc["when"].isoformat() == "1979-05-27T07:32:00+00:00"
    assert outs[2] == "v"


# --- memoize ----------------------------------------------------------------------

def test_memoize_caches_by_arguments(tmp_path):
    outs, _ = run_policy(tmp_path, """
        local calls = 0
        local f = kumo.memoize(function(a, b)
          calls = calls + 1
          return { a = a, b = b, list = { 1, 2 } }, 'second'
        end, { name = 'args', ttl = '5 minutes', capacity = 10 })
        local r1 = f('x', 1)
        local r2 = f({ 'x', 1 })   -- same key as f('x', 1)
        local r3 = f('y', 1)
        out({ calls = calls, first = r1[1].a, second = r1[2], n = #r1, same = r2[1].a,
              other = r3[1].a, list = r1[1].list[2], len = #r1[1].list })
        -- a copy of the top level: a write stays with the caller, the cache is unchanged
        r1[2] = 'changed'
        r1.extra = true
        local again = f('x', 1)
        out({ mine = r1[2], next = again[2], extra = again.extra or false, calls = calls,
              plain = getmetatable(again) == nil and next(again) ~= nil })
        local keys = {}
        for k in pairs(f('x', 1)[1]) do keys[#keys + 1] = k end
        table.sort(keys)
        out(keys)
        out(kumo.json_encode(f('x', 1)))
        -- no results -> nil
        local g = kumo.memoize(function() calls = calls + 1 end, { name = 'nil', ttl = 60, capacity = 1 })
        assert(g() == nil and g() == nil)
        out({ calls = calls })
    """)
    assert outs[0] == {"calls": 2, "first": "x", "second": "second", "n": 2, "same": "x",
                       "other": "y", "list": 2, "len": 2}
    assert outs[1] == {"mine": "changed", "next": "second", "extra": False, "calls": 2,
                       "plain": True}
    assert outs[2] == ["a", "b", "list"]
    assert json.loads(outs[3]) == [{"a": "x", "b": 1, "list": [1, 2]}, "second"]
    assert outs[4] == {"calls": 3}


def test_memoize_capacity_ttl_and_errors(tmp_path):
    outs, _ = run_policy(tmp_path, """
        local calls = 0
        local f = kumo.memoize(function(k) calls = calls + 1; return k end,
                               { name = 'cap', ttl = '1h', capacity = 2 })
        f(1); f(2); f(1); f(3)      -- 2 is least recently used: evicted
        local before = calls
        f(1); f(3)                  -- hits
        local hits_ok = calls == before
        f(2)                        -- miss again
        out({ calls = calls, hits_ok = hits_ok })
        -- ttl 0: every call is a miss
        local z = kumo.memoize(function() calls = calls + 1; return 1 end,
                               { name = 'zero', ttl = 0, capacity = 5 })
        local c0 = calls; z(); z()
        out({ zero_ttl_calls = calls - c0 })
        -- a failure is cached (60 s) whatever the ttl
        local fails = 0
        local e = kumo.memoize(function() fails = fails + 1; error('boom ' .. fails) end,
                               { name = 'err', ttl = 0, capacity = 5 })
        local m1, m2 = raises(e), raises(e)
        out({ fails = fails, same = m1 == m2, msg = m1:match('boom %d') })
        -- same name and params: the same cache (a policy re-run keeps entries)
        local again = kumo.memoize(function(k) return 'other' end,
                                   { name = 'cap', ttl = '1h', capacity = 2 })
        out({ reused = again(3) })  -- cached {2, 3}: 1 was evicted by f(2)
        local changed = kumo.memoize(function(k) return 'fresh' end,
                                     { name = 'cap', ttl = '2h', capacity = 2 })
        out({ changed = changed(1) })
    """)
    assert outs[0] == {"calls": 4, "hits_ok": True}
    assert outs[1] == {"zero_ttl_calls": 2}
    assert outs[2] == {"fails": 1, "same": True, "msg": "boom 1"}
    assert outs[3] == {"reused": 3}
    assert outs[4] == {"changed": "fresh"}


@pytest.mark.parametrize("params,message", [
    ("{ ttl = 1, capacity = 1 }", "memoize: missing name"),
    ("{ name = 'x', capacity = 1 }", "memoize: missing ttl"),
    ("{ name = 'x', ttl = 1 }", "memoize: missing capacity"),
    ("{ name = 'x', ttl = 'soon', capacity = 1 }",
     "memoize: ttl must be a duration ('5 minutes', '30s' or seconds), not soon"),
    ("{ name = 'x', ttl = 1, capacity = 0 }", "memoize: capacity must be a positive integer"),
    ("{ name = 'x', ttl = 1, capacity = 1, colour = 'red' }", "memoize: unknown parameter 'colour'"),
])
def test_memoize_bad_params(tmp_path, params, message):
    outs, _ = run_policy(tmp_path, f"""
        out(raises(kumo.memoize, function() end, {params}))
    """)
    assert message in outs[0]


def test_memoize_refuses_function_keys(tmp_path):
    outs, _ = run_policy(tmp_path, """
        local f = kumo.memoize(function(x) return 1 end, { name = 'k', ttl = 1, capacity = 1 })
        out(raises(f, print))
        out(raises(f, { a = { print } }))
    """)
    assert outs[0].endswith("memoize k: cannot use a function as (part of) a memoize key")
    assert outs[1].endswith("memoize k: cannot use a function as (part of) a memoize key")


def test_memoize_copy_keeps_metatable(tmp_path):
    outs, _ = run_policy(tmp_path, """
        local mt = { __index = { hello = function(self) return 'hi ' .. self.n end } }
        local calls = 0
        local f = kumo.memoize(function(n) calls = calls + 1; return setmetatable({ n = n }, mt) end,
                               { name = 'mt', ttl = 60, capacity = 2 })
        local a, b = f('x'), f('x')
        out({ a:hello(), b:hello(), calls, rawequal(a, b), getmetatable(b) == mt })
    """)
    # the second call is a cached, top-level copy that still has its methods
    assert outs == [["hi x", "hi x", 1, False, True]]


def metric(text, name, cache):
    m = re.search(r'^%s\{cache_name="%s"\} (\S+)$' % (name, cache), text, re.M)
    return float(m.group(1)) if m else None


def test_memoize_metrics_in_daemon(kumod):
    k = kumod("""
        local lookups = kumo.memoize(function(d) return d .. '!' end,
                                     { name = 'domains', ttl = '10m', capacity = 100 })
        kumo.on('init', function()
          kumo.start_http_listener { listen = '127.0.0.1:0' }
          lookups('a'); lookups('a'); lookups('a'); lookups('b')
        end)
    """)
    port = k.listeners["http"][0][1]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert metric(text, "memoize_cache_lookup_count", "domains") == 4
    assert metric(text, "memoize_cache_hit_count", "domains") == 2
    assert metric(text, "memoize_cache_miss_count", "domains") == 2
    assert metric(text, "memoize_cache_populated_count", "domains") == 2
    assert metric(text, "lruttl_cache_size", "domains") == 2


# --- domain_map, cidr map, regex_set_map ----------------------------------------------

def test_domain_map_wildcards(tmp_path):
    outs, _ = run_policy(tmp_path, """
        local m = kumo.domain_map.new { ['*.ex.com'] = 'wild', ['x.y.ex.com'] = 'deep',
                                        ['ex.org'] = 'org', ['*'] = 'any' }
        local names = { 'a.ex.com', 'a.b.ex.com', 'ex.com', 'x.y.ex.com', 'y.ex.com',
                        'z.y.ex.com', 'ex.org', 'foo.net', 'foo.org', 'A.EX.COM', 'ex.org.' }
        local got = {}
        for _, n in ipairs(names) do got[n] = m[n] or false end
        out(got)
        m['ex.com'] = 'explicit'
        m['b.ex.com'] = { t = 1 }
        -- an explicit b.ex.com shadows the wildcard for the names under it
        out({ m['ex.com'], m['a.b.ex.com'] or false, m['b.ex.com'].t })
        m['ex.com'] = nil
        out({ m['ex.com'] or false })
        out(raises(function() m[1] = 2 end))
        local empty = kumo.domain_map.new()
        out({ empty['x.com'] or false })
    """)
    assert outs[0] == {"a.ex.com": "wild", "a.b.ex.com": "wild", "ex.com": False,
                       "x.y.ex.com": "deep", "y.ex.com": False, "z.y.ex.com": False,
                       "ex.org": "org", "foo.net": "any", "foo.org": False,
                       "A.EX.COM": "any", "ex.org.": "any"}
    assert outs[1] == ["explicit", False, 1]
    assert outs[2] == [False]
    assert outs[3].endswith("domain_map: keys must be domain name strings, not number")
    assert outs[4] == [False]


def test_cidr_map(tmp_path):
    outs, _ = run_policy(tmp_path, """
        local m = kumo.cidr.make_map { ['10.0.0.0/8'] = 'ten', ['::1'] = 'v6-loopback',
                                       ['2001:db8::/32'] = 'doc' }
        m['10.1.0.0/16'] = 'ten-one'   -- narrower after broader: longest prefix wins
        local got = {}
        for _, a in ipairs { '10.1.2.3', '10.2.3.4', '10.1.2.3:25', '[10.1.2.3]:25', '[::1]',
                             '[::1]:2525', '::1', '2001:db8::5', '::ffff:10.1.0.1', '11.0.0.1' } do
          got[a] = m[a] or false
        end
        out(got)
        m['10.0.0.0/8'] = 'broad'      -- a broader insert replaces the covered entries
        out({ m['10.1.2.3'] })
        out(raises(function() return m['not-an-ip'] end))
        out(raises(function() m['10.0.0.1/24'] = 1 end))
        out(raises(function() m['example.com'] = 1 end))
    """)
    assert outs[0] == {"10.1.2.3": "ten-one", "10.2.3.4": "ten", "10.1.2.3:25": "ten-one",
                       "[10.1.2.3]:25": "ten-one", "[::1]": "v6-loopback",
                       "[::1]:2525": "v6-loopback", "::1": "v6-loopback",
                       "2001:db8::5": "doc", "::ffff:10.1.0.1": "ten-one", "11.0.0.1": False}
    assert outs[1] == ["broad"]
    assert outs[2].endswith("cidr map: 'not-an-ip' is not an IP address")
    assert outs[3].endswith("cidr map: '10.0.0.1/24' has host bits set: did you mean 10.0.0.0/24?")
    assert outs[4].endswith("cidr map: 'example.com' is not an IP address or CIDR block")


def test_regex_set_map(tmp_path):
    outs, _ = run_policy(tmp_path, """
        local m = kumo.regex_set_map.new { ['^4\\\\.7\\\\.\\\\d+'] = 'policy', ['mailbox full'] = 'quota' }
        out({ m['4.7.1 blocked'] or false, m['552 mailbox full'] or false, m['250 ok'] or false })
        out(raises(kumo.regex_set_map.new, { ['(unclosed'] = 1 }))
        out(raises(function() m['x'] = 1 end))
        -- memoizable: the same object comes back
        local get = kumo.memoize(function() return kumo.regex_set_map.new { a = 1 } end,
                                 { name = 'rsm', ttl = 60, capacity = 1 })
        out({ same = get() == get(), v = get()['cat'] })
    """)
    assert outs[0] == ["policy", "quota", False]
    assert "regex_set_map: invalid regular expression '(unclosed' at offset 9: missing closing parenthesis" in outs[1]
    assert outs[2].endswith("regex_set_map is immutable: build a new one with kumo.regex_set_map.new")
    assert outs[3] == {"same": True, "v": 1}


# --- secrets, validation_failed ----------------------------------------------------------

def test_secrets_load(tmp_path):
    outs, _ = run_policy(tmp_path, """
        out({ kumo.secrets.load { key_data = 'inline-secret' }, kumo.secrets.load('key.pem') })
        out(raises(kumo.secrets.load, 'missing.pem'))
        out(raises(kumo.secrets.load, { vault_mount = 'secret', vault_path = 'dkim/example.com' }))
        out(raises(kumo.secrets.load, { event_name = 'get_key' }))
        out(raises(kumo.secrets.load, 42))
    """, files={"key.pem": b"-----BEGIN KEY-----\nabc\n"})
    assert outs[0] == ["inline-secret", "-----BEGIN KEY-----\nabc\n"]
    assert outs[1].endswith("secrets.load: missing.pem: No such file or directory")
    assert re.search(r"secrets\.load: HashiCorp Vault key sources \(vault_(mount|path)\) are a "
                     r"KumoMTA feature kumod does not implement yet", outs[2])
    assert "secrets.load: event key sources (event_name) are a KumoMTA feature kumod does " \
        "not implement yet" in outs[3]
    assert "secrets.load: a key source is a file path or a table { key_data = ... }, " \
        "not number" in outs[4]


def test_validation_failed(tmp_path):
    _, p = run_policy(tmp_path, """
        kumo.on('validate_config', function() kumo.validation_failed() end)
        kumo.on('validate_config', function() print('OUT "second handler ran"') end)
    """, expect_ok=False)
    assert p.returncode == 1
    assert "kumod: Validation failed" in p.stderr
    assert 'OUT "second handler ran"' in p.stdout  # the other checks still run
    assert "is valid" not in p.stdout


# --- kumo.string ---------------------------------------------------------------------------

def test_string_helpers(tmp_path):
    outs, _ = run_policy(tmp_path, """
        local S = kumo.string
        out({ S.split('a,b,,c', ','), S.split('abc', ''), S.rsplit('a.b.c', '.'),
              S.splitn('a,b,c', 2, ','), S.rsplitn('a,b,c', 2, ','), S.split('a.b', '%.') })
        out({ S.replace('a.b.c', '.', '-'), S.replacen('a.b.c', '.', '-', 1), S.replace('abc', '', '|') })
        out({ S.split_whitespace(' a \\t b\\u{3000}c '), S.split_ascii_whitespace(' a\\u{3000}b c ') })
        out({ S.trim(' \\u{a0} x y \\n'), S.trim_start('  x '), S.trim_end('  x ') })
        out({ S.starts_with('hello', 'he'), S.ends_with('hello', 'lo'), S.ends_with('lo', 'hello') })
        out({ S.wrap(string.rep('word ', 30)), S.wrap('short'), S.wrap(string.rep('x', 12), 5, 10) })
    """)
    assert outs[0] == [["a", "b", "", "c"], ["", "a", "b", "c", ""], ["c", "b", "a"],
                       ["a", "b,c"], ["c", "a,b"], ["a.b"]]
    assert outs[1] == ["a-b-c", "a-b.c", "|a|b|c|"]
    assert outs[2] == [["a", "b", "c"], ["a\u3000b", "c"]]
    assert outs[3] == ["x y", "x ", "  x"]
    assert outs[4] == [True, True, False]
    line = " ".join(["word"] * 15)
    assert outs[5] == [line + "\r\n\t" + line, "short", "xxxxxxxxxx\r\n\txx"]


# --- kumo.time --------------------------------------------------------------------------------

def test_time_helpers(tmp_path):
    outs, _ = run_policy(tmp_path, """
        local T = kumo.time
        local t = T.with_ymd_hms(2024, 2, 29, 12, 30, 45)
        out({ tostring(t), t.year, t.month, t.day, t.hour, t.minute, t.second, t.unix_timestamp,
              t.unix_timestamp_millis, t.rfc3339, t.rfc2822, t:format('%Y/%m/%d %H') })
        local p = T.parse_rfc3339('2024-02-29T13:30:45.25+01:00')
        out({ p.rfc3339, p.unix_timestamp_millis, T.parse_rfc2822('Thu, 29 Feb 2024 12:30:45 +0000') == t })
        local d = T.parse_duration('1h 30m')
        out({ d.seconds, d.milliseconds, d.human, tostring(t + d), (t + d - t).seconds,
              T.parse_duration(90).human, t < t + d, T.from_unix_timestamp(0).rfc3339 })
        out(raises(T.with_ymd_hms, 2023, 2, 29, 0, 0, 0))
        out(raises(T.parse_rfc3339, 'yesterday'))
        out(raises(T.parse_duration, 'soon'))
        local timer = T.start_timer('bench')
        out({ type(timer:done()) })
    """)
    assert outs[0] == ["2024-02-29 12:30:45 UTC", 2024, 2, 29, 12, 30, 45, 1709209845,
                       1709209845000, "2024-02-29T12:30:45+00:00",
                       "Thu, 29 Feb 2024 12:30:45 +0000", "2024/02/29 12"]
    assert outs[1] == ["2024-02-29T12:30:45.250+00:00", 1709209845250, True]
    assert outs[2] == [5400.0, 5400000, "1h 30m", "2024-02-29 14:00:45 UTC", 5400.0, "1m 30s",
                       True, "1970-01-01T00:00:00+00:00"]
    assert outs[3].endswith("with_ymd_hms: 2023-02-29 is not a date")
    assert outs[4].endswith("parse_rfc3339: 'yesterday' is not an RFC 3339 date-time")
    assert outs[5].endswith("parse_duration: 'soon' is not a duration")
    assert outs[6] == ["number"]


# --- kumo.digest, kumo.encode, kumo.uuid --------------------------------------------------------

def test_digest_encode_uuid(tmp_path):
    import base64
    import hashlib
    import hmac
    import uuid
    import zlib
    outs, _ = run_policy(tmp_path, """
        local D, E, U = kumo.digest, kumo.encode, kumo.uuid
        local r = {}
        for _, alg in ipairs { 'sha1', 'sha224', 'sha256', 'sha384', 'sha512', 'sha512_256',
                               'sha3_256', 'sha3_384', 'sha3_512', 'crc32' } do
          r[alg] = D[alg]('hello ', 'world').hex
        end
        local d = D.sha256('abc')
        out({ r, tostring(d), d.base64, d.base64url_nopad, d.base32, d.base32hex_nopad,
              D.sha256({ a = 1 }).hex, D.hmac_sha256({ key_data = 'key' }, 'msg').hex })
        out({ E.base64_encode('hi?>'), E.base64url_nopad_encode('hi?>'), E.base32_encode('hello'),
              E.base32hex_nopad_encode('hello'), E.hex_encode('\\0\\255'),
              E.base64_decode('aGk/Pg=='), E.base32_decode('NBSWY3DP'), E.hex_decode('00ff') == '\\0\\255' })
        out({ raises(E.base64_decode, 'aGk/Pg'), raises(E.base64_nopad_decode, 'aGk/Pg=='),
              raises(E.hex_decode, 'zz') })
        local u = U.new_v4()
        local v7 = U.new_v7()
        out({ u.hyphenated, u.simple, u.braced, u.urn, #u.bytes, U.parse(u.urn) == u,
              U.parse(u.simple) == u, v7.hyphenated, U.new_v1().hyphenated, U.new_v6().hyphenated })
        out(raises(U.parse, 'not-a-uuid'))
    """)
    data = b"hello world"
    r = outs[0][0]
    for alg in ("sha1", "sha224", "sha256", "sha384", "sha512", "sha3_256", "sha3_384", "sha3_512"):
        assert r[alg] == hashlib.new(alg, data).hexdigest(), alg
    assert r["sha512_256"] == hashlib.new("sha512_256", data).hexdigest()
    assert r["crc32"] == "%08x" % zlib.crc32(data)
    dg = hashlib.sha256(b"abc").digest()
    assert outs[0][1] == dg.hex()
    assert outs[0][2] == base64.b64encode(dg).decode()
    assert outs[0][3] == base64.urlsafe_b64encode(dg).decode().rstrip("=")
    assert outs[0][4] == base64.b32encode(dg).decode()
    assert outs[0][5] == base64.b32hexencode(dg).decode().rstrip("=")
    assert outs[0][6] == hashlib.sha256(b'{"a":1}').hexdigest()
    assert outs[0][7] == hmac.new(b"key", b"msg", hashlib.sha256).hexdigest()
    assert outs[1] == ["aGk/Pg==", "aGk_Pg", "NBSWY3DP", "D1IMOR3F", "00ff", "hi?>", "hello", True]
    assert outs[2][0].endswith("base64_decode: the input is not valid base64")
    assert outs[2][1].endswith("base64_nopad_decode: the input is not valid base64_nopad")
    assert outs[2][2].endswith("hex_decode: invalid hex digit at offset 0")
    hy, simple, braced, urn, nbytes, p1, p2, v7, v1, v6 = outs[3]
    u = uuid.UUID(hy)
    assert u.version == 4 and u.variant == uuid.RFC_4122
    assert simple == u.hex and braced == "{%s}" % hy and urn == u.urn and nbytes == 16
    assert p1 and p2
    assert uuid.UUID(v7).version == 7 and uuid.UUID(v1).version == 1 and uuid.UUID(v6).version == 6
    assert outs[4].endswith("uuid.parse: 'not-a-uuid' is not a UUID")


# --- JSON with comments ---------------------------------------------------------------------

def test_json_parse_and_load_allow_comments(tmp_path):
    doc = ('{\n  // line comment\n  "a": 1, # shell comment\n  /* block\n comment */\n'
           '  "b": "not // a comment, nor # this",\n  "c": [1, null, 3]\n}\n')
    outs, _ = run_policy(tmp_path, """
        local v = kumo.json_load('conf.json')
        out({ v.a, v.b, #v.c, v.c[3] })
        out(kumo.serde.json_parse('[1, /* two */ 2] // end'))
        out(raises(kumo.json_parse, '{"a": 1 /* open'))
        out(raises(kumo.json_load, 'bad.json'))
    """, files={"conf.json": doc, "bad.json": '{\n  "a": 1,\n  "b": ]\n}\n'})
    assert outs[0] == [1, "not // a comment, nor # this", 3, 3]
    assert outs[1] == [1, 2]
    assert outs[2].endswith("json_parse: a /* comment is not closed")
    assert "json_load: bad.json: " in outs[3] and outs[3].endswith("(line 3 column 8)")


# --- kumo.regex, kumo.traceback --------------------------------------------------------------

def test_regex_module(tmp_path):
    outs, _ = run_policy(tmp_path, """
        local re = kumo.regex.compile('(?<user>[a-z]+)@(\\\\w+)\\\\.com')
        local c = re:captures('mail alice@example.com now')
        out({ c[0], c[1], c[2], c.user, re:is_match('nothing'), re:find('to b@c.com') })
        out({ re:captures('none') == nil, re:find('none') == nil })
        out(re:find_all('a@b.com c@d.com'))
        out({ re:replace('a@b.com c@d.com', '$2:${user}$$'), re:replace_all('a@b.com c@d.com', '[$1]'),
              re:replacen('a@b.com c@d.com x@y.com', 2, '*'), re:replace('a@b.com', '$9$nosuch') })
        out({ kumo.regex.compile(',\\\\s*'):split('a, b,c'), kumo.regex.compile('x*'):find_all('axxb') })
        out({ kumo.regex.escape('a.b*c(d)') })
        out(raises(kumo.regex.compile, '(unclosed'))
    """)
    assert outs[0] == ["alice@example.com", "alice", "example", "alice", False, "b@c.com"]
    assert outs[1] == [True, True]
    assert outs[2] == ["a@b.com", "c@d.com"]
    assert outs[3] == ["b:a$ c@d.com", "[a] [c]", "* * x@y.com", ""]
    assert outs[4] == [["a", "b", "c"], ["", "xx", ""]]
    assert outs[5] == ["a\\.b\\*c\\(d\\)"]
    assert "regex.compile: invalid regular expression '(unclosed' at offset 9" in outs[6]


def test_traceback(tmp_path):
    outs, _ = run_policy(tmp_path, """
        local function inner()
          local t = kumo.traceback(1)
          return t
        end
        local function outer()
          local t = inner()
          return t
        end
        local t = outer()
        out({ t[1].name, t[1].what, t[1].curr_line, t[1].short_src:match('policy.lua') ~= nil,
              t[1].line_defined, t[2].name, t[2].curr_line, #t >= 3 })
    """)
    # the prelude is 6 lines: inner starts on line 8 and calls traceback on line 9;
    # outer calls inner on line 13
    assert outs[0] == ["inner", "Lua", 9, True, 8, "outer", 13, True]


# --- policy-extras: kumod's share directory ---------------------------------------------------

def test_policy_extras_policy_utils(tmp_path):
    outs, _ = run_policy(tmp_path, """
        local u = require 'policy-extras.policy_utils'
        local d = { a = 1, t = { 1, 2, x = 'y' } }
        u.recursive_merge_into({ t = { 9, nil, z = 1 }, b = 2 }, d)
        local shallow = { t = { 1 } }
        u.merge_into({ t = { 5 }, c = 3 }, shallow)
        local ip, port = u.split_ip_port('[::1]:25')
        local ip4, port4 = u.split_ip_port('10.0.0.1:2525')
        local keys = u.table_keys({ x = 1, y = 2 })
        table.sort(keys)
        out({ d = d, shallow = shallow, split = { ip, port, ip4, port4 }, keys = keys,
              contains = { u.table_contains({ 'a', 'b' }, 'b'), u.table_contains({ 'a' }, 'z') },
              empty = { u.table_is_empty({}), u.table_is_empty({ 1 }) },
              sw = { u.starts_with('hello', 'he'), u.ends_with('hello', 'lo'), u.ends_with('lo', 'hello') },
              eq = { u.equals({ 1, { 2 } }, { 1, { 2 } }), u.equals({ 1 }, { 1, 2 }) },
              toml = u.load_json_or_toml_file('d.toml'), json = u.load_json_or_toml_file('d.json') })
        out(u.dumps({ b = { 1, 'two' }, a = true }))
        out(raises(u.assert_eq, { 1 }, { 2 }, 'mismatch'))
        out(raises(u.assert_matches, 'abc', '^x'))
        u.assert_ne(1, 2)
        u.assert_matches('4.7.1 blocked', '^4\\\\.7')
    """, files={"d.toml": "k = 1\n", "d.json": '{"k": 2} // comment\n'})
    o = outs[0]
    assert o["d"] == {"a": 1, "b": 2, "t": {"1": 9, "2": 2, "x": "y", "z": 1}}
    assert o["shallow"] == {"t": [5], "c": 3}
    assert o["split"] == ["::1", "25", "10.0.0.1", "2525"]
    assert o["keys"] == ["x", "y"]
    assert o["contains"] == [True, False] and o["empty"] == [True, False]
    assert o["sw"] == [True, True, False] and o["eq"] == [True, False]
    assert o["toml"] == {"k": 1} and o["json"] == {"k": 2}
    assert outs[1] == '{\n  a = true,\n  b = {\n    [1] = 1,\n    [2] = "two",\n  },\n}'
    assert "mismatch. expected\n {\n  [1] = 1,\n}\n to equal\n {\n  [1] = 2,\n}" in outs[2]
    assert 'expected\n "abc"\n to match\n "^x"' in outs[3]


def test_policy_extras_refused_and_user_path_first(tmp_path):
    (tmp_path / "policy-extras").mkdir()
    (tmp_path / "policy-extras" / "policy_utils.lua").write_text("return { mine = true }\n")
    outs, _ = run_policy(tmp_path, """
        out({ mine = require('policy-extras.policy_utils').mine == true })
        out(raises(require, 'policy-extras.typing'))
    """)
    assert outs[0] == {"mine": True}  # the policy's own directory (package.path) wins
    assert ("'policy-extras.typing' is a KumoMTA module that kumod does not provide yet"
            in outs[1]), outs[1]


def test_policy_extras_sources_deliver_through_pool(kumod, tmp_path):
    """sources.toml drives real deliveries: a relay kumod with the sources helper
    delivers to a receiving kumod through pool 'p' (3:1 between two loopback
    source addresses with their own EHLO names)."""
    from test_egress import by_type, received, receiver_start, relay_start, send_many
    from test_relay import wait_until
    (tmp_path / "sources.toml").write_text(textwrap.dedent("""\
        [source."a"]
        source_address = "127.0.0.2"
        ehlo_domain = "a.sources.test"

        [source."b"]
        source_address = "127.0.0.3"
        ehlo_domain = "b.sources.test"

        [pool."p"."a"]
        weight = 3

        [pool."p"."b"]
    """))
    out = tmp_path / "received"
    rx = receiver_start(kumod, out)
    var = tmp_path / "var"
    extra = ("local sources = require 'policy-extras.sources'\n"
             "sources:setup { %r }\n" % str(tmp_path / "sources.toml"))
    relay = relay_start(kumod, var, "127.0.0.1:%d" % rx.smtp_port, pool="egress_pool = 'p',",
                        extra=extra)
    send_many(relay.smtp_port, ["u%d@example.com" % i for i in range(20)])
    assert wait_until(lambda: len(received(out)) >= 20, timeout=30), relay.stderr()
    peers = {}
    for g in received(out):
        peers.setdefault(g["received_from"].rsplit(":", 1)[0], set()).add(g["ehlo_domain"])
    assert peers == {"127.0.0.2": {"a.sources.test"}, "127.0.0.3": {"b.sources.test"}}
    assert wait_until(lambda: len(by_type(var, "Delivery")) >= 20, timeout=10)
    count = {}
    for d in by_type(var, "Delivery"):
        assert d["egress_pool"] == "p"
        count[d["egress_source"]] = count.get(d["egress_source"], 0) + 1
    assert count == {"a": 15, "b": 5}  # smooth weighted round robin, 3:1


def test_policy_extras_sources_validation(tmp_path):
    outs, _ = run_policy(tmp_path, """
        local sources = require 'policy-extras.sources'
        sources:setup { 'good.toml' }
        out(raises(function() sources:setup { 'good.toml' } end))
    """, files={"good.toml": '[source."a"]\nsource_address = "127.0.0.2"\n[pool."p"."a"]\n'})
    assert "sources module has already been configured" in outs[0]
    # kumod's helper reads its files at setup: a bad one fails the policy load
    _, p = run_policy(tmp_path, """
        require('policy-extras.sources'):setup { 'bad.toml' }
    """, files={"bad.toml": '[source."a"]\nsource_address = "not-an-ip"\n'}, expect_ok=False)
    assert p.returncode == 1
    assert "sources helper: bad.toml: [source.'a']: make_egress_source" in p.stderr, p.stderr
    _, p = run_policy(tmp_path, """
        require('policy-extras.sources'):setup { 'bad.toml' }
    """, files={"bad.toml": '[pool."p"."missing"]\n'}, expect_ok=False)
    assert p.returncode == 1
    assert "pool 'p' references source 'missing' which is not defined" in p.stderr, p.stderr


LISTENER_DOMAINS = """\
["local.test"]
relay_to = true

["*.wild.test"]
relay_to = true

["trusted-sender.test"]
relay_from = ["127.0.0.0/8"]

[listener."127.0.0.1:1"."only-elsewhere.test"]
relay_to = true
"""


def test_policy_extras_listener_domains_control_relaying(kumod, tmp_path):
    (tmp_path / "listener_domains.toml").write_text(LISTENER_DOMAINS)
    k = kumod("""
        kumo.on('init', function()
          kumo.start_esmtp_listener { listen = '127.0.0.1:0', relay_hosts = { '192.0.2.0/24' } }
        end)
        kumo.on('get_listener_domain',
                require('policy-extras.listener_domains'):setup { %r })
    """ % str(tmp_path / "listener_domains.toml"))
    import smtplib
    cases = [("a@example.test", "user@local.test", 250),
             ("a@example.test", "user@x.wild.test", 250),
             ("a@example.test", "user@wild.test", 550),        # *.wild.test excludes wild.test
             ("a@trusted-sender.test", "victim@foreign.test", 250),
             ("a@example.test", "victim@foreign.test", 550),
             ("a@example.test", "user@only-elsewhere.test", 550)]  # another listener's entry
    got = []
    for sender, rcpt, _ in cases:
        with smtplib.SMTP("127.0.0.1", k.smtp_port, timeout=10) as s:
            s.ehlo("client.test")
            s.mail(sender)
            got.append(s.rcpt(rcpt)[0])
    assert got == [c[2] for c in cases]
