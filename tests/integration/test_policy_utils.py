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
        -- views: a write lands in the view, the cache is unchanged
        r1[2] = 'changed'
        out({ mine = r1[2], next = f('x', 1)[2], calls = calls })
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
    assert outs[1] == {"mine": "changed", "next": "second", "calls": 2}
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
