# SPDX-License-Identifier: Apache-2.0
"""configure_local_logs as KumoMTA has it: several loggers side by side,
per_record (suffix, log_dir, enable, template, segment_header, Any), and
filter_event. A relay delivers to a sink; the segment files (zstd or plain)
are read back and their records compared field by field."""

import glob
import json
import os
import subprocess

from test_relay import SINK_LUA, captured, send, wait_until

POLICY = """
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool{ name = 'data', path = '%(var)s/spool/data' }
  kumo.define_spool{ name = 'meta', path = '%(var)s/spool/meta' }
%(logs)s
  kumo.start_esmtp_listener{ listen = '127.0.0.1:0', hostname = 'relay.test',
                             relay_hosts = { '127.0.0.1' } }
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config{
    retry_interval = '1s', max_retry_interval = '1s', max_age = '1h',
    protocol = { smtp = { mx_list = { '127.0.0.1:%(port)d' } } },
  }
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path{ connection_limit = 4, enable_tls = 'Disabled', prohibited_hosts = {},
                                connect_timeout = '2s' }
end)
%(extra)s
"""


def start(kumod, tmp_path, logs, extra=""):
    sink = kumod(open(SINK_LUA).read(), policy_name="sink.lua",
                 env={"KUMO_SINK_LISTEN": "127.0.0.1:0",
                      "KUMO_SINK_CAPTURE_DIR": str(tmp_path / "capture")})
    text = POLICY % {"var": tmp_path / "var", "logs": logs, "port": sink.smtp_port,
                     "extra": extra}
    return kumod(text, policy_name="relay.lua"), sink


def segments(pattern):
    return sorted(f for f in glob.glob(pattern) if os.path.isfile(f))


def lines_of(path, complete=True):
    """The text of a segment: zstd-decompressed when it is a zstd frame. An
    open segment (complete=False) may end in a partial frame."""
    raw = open(path, "rb").read()
    if raw[:4] == b"\x28\xb5\x2f\xfd":
        raw = subprocess.run(["zstd", "-dcq", path], capture_output=True,
                             check=complete).stdout
    return raw.decode("utf-8", "replace").splitlines()


def json_records(pattern, complete=True):
    """Every record of the segments; while kumod runs (complete=False) a
    record cut by an unfinished block is left out."""
    out = []
    for f in segments(pattern):
        for line in lines_of(f, complete):
            try:
                rec = json.loads(line)
            except ValueError:
                if complete:
                    raise
                continue
            if isinstance(rec, dict) or complete:  # a cut line can parse as a number
                out.append(rec)
    return out


def test_two_loggers_per_record_templates_suffix_and_log_dir(kumod, tmp_path):
    var = tmp_path / "var"
    logs = """
  kumo.configure_local_logs{
    log_dir = '%(var)s/a', compression_level = 'none',
    meta = { 'tenant' },
    per_record = {
      Reception = { suffix = '_recv',
                    template = [[R {{ id }} {{ sender }} {{ recipient }} {{ meta.tenant | default('-') }}]] },
      Delivery = { log_dir = '%(var)s/a_deliveries', segment_header = '# deliveries\\n',
                   template = [[{{ log_record | tojson }}]] },
      Any = { suffix = '_any', template = [[ANY {{ type }} code={{ response.code }}{%% if response.code >= 500 %%} permanent{%% endif %%}]] },
    },
  }
  kumo.configure_local_logs{ log_dir = '%(var)s/b', headers = { 'Subject' } }
""" % {"var": var}
    relay, sink = start(kumod, tmp_path, logs)
    send(relay.smtp_port, ["ok@example.com"], "fine\r\n", subject="one")
    send(relay.smtp_port, ["permfail@example.com"], "bounce me\r\n", subject="two")
    assert wait_until(lambda: len(captured(tmp_path / "capture")) == 1)

    def settled():
        types = [r["type"] for r in json_records(str(var / "b" / "*"), complete=False)]
        return "Delivery" in types and "Bounce" in types
    assert wait_until(settled), relay.stderr()
    assert relay.stop() == 0

    # logger b: plain JSON of every record, zstd-compressed (the default)
    b = json_records(str(var / "b" / "*"))
    by = {}
    for r in b:
        by.setdefault(r["type"], []).append(r)
    assert sorted(by) == ["Bounce", "Delivery", "Reception"], b
    assert len(by["Reception"]) == 2
    assert {r["headers"]["Subject"] for r in by["Reception"]} == {"one", "two"}
    assert all(open(f, "rb").read(4) == b"\x28\xb5\x2f\xfd" for f in segments(str(var / "b" / "*")))
    delivery, bounce = by["Delivery"][0], by["Bounce"][0]

    # logger a, Reception: its template, in segments named ..._recv, plain text
    recv_files = segments(str(var / "a" / "*_recv"))
    assert recv_files, os.listdir(var / "a")
    recv = [line.split(" ") for f in recv_files for line in lines_of(f)]
    assert sorted(recv) == sorted(
        ["R", r["id"], r["sender"], r["recipient"], "-"] for r in by["Reception"]), recv

    # Delivery: its own directory, the segment header, then log_record | tojson
    dfiles = segments(str(var / "a_deliveries" / "*"))
    assert len(dfiles) == 1, dfiles
    dl = lines_of(dfiles[0])
    assert dl[0] == "# deliveries"
    rec = json.loads(dl[1])
    assert len(dl) == 2
    for k in ("type", "id", "sender", "recipient", "queue", "site", "response", "peer_address",
              "timestamp", "created", "num_attempts", "nodeid"):
        assert rec[k] == delivery[k], k
    assert rec["headers"] == {}  # logger a captures no headers; b does
    assert rec["meta"] == {}

    # Bounce has no entry: Any's template and suffix
    any_lines = [line for f in segments(str(var / "a" / "*_any")) for line in lines_of(f)]
    assert any_lines == ["ANY Bounce code=%d permanent" % bounce["response"]["code"]], any_lines
    # nothing of a's lands elsewhere (no unsuffixed JSON segments)
    others = [f for f in segments(str(var / "a" / "*"))
              if not f.endswith("_recv") and not f.endswith("_any")]
    assert others == [], others


def test_filter_event_and_enable(kumod, tmp_path):
    var = tmp_path / "var"
    logs = """
  kumo.configure_local_logs{ log_dir = '%(var)s/f', compression_level = 'none',
                             filter_event = 'pick_records' }
  kumo.configure_local_logs{ log_dir = '%(var)s/g', compression_level = 'none',
                             per_record = { Any = { enable = false }, Reception = {} } }
  kumo.configure_local_logs{ log_dir = '%(var)s/all', compression_level = 'none' }
""" % {"var": var}
    extra = """
kumo.on('pick_records', function(msg)
  local r = msg:recipient().user
  if r == 'keep' then return true end
  if r == 'boom' then error('filter exploded') end
  if r == 'text' then return 'yes' end
  return false
end)
"""
    relay, sink = start(kumod, tmp_path, logs, extra)
    rcpts = ["keep", "drop", "boom", "text"]
    for u in rcpts:
        send(relay.smtp_port, ["%s@example.com" % u], "x\r\n")
    assert wait_until(lambda: len(captured(tmp_path / "capture")) == len(rcpts))

    def settled():
        return sum(r["type"] == "Delivery"
                   for r in json_records(str(var / "all" / "*"), complete=False)) == len(rcpts)
    assert wait_until(settled), relay.stderr()
    assert relay.stop() == 0
    every = json_records(str(var / "all" / "*"))
    assert sorted(r["type"] for r in every) == ["Delivery"] * 4 + ["Reception"] * 4

    # filter_event: only true logs; false, a non-boolean and an error leave it out
    f = json_records(str(var / "f" / "*"))
    assert sorted((r["type"], r["recipient"]) for r in f) == [
        ("Delivery", "keep@example.com"), ("Reception", "keep@example.com")], f
    keep_ids = {r["id"] for r in every if r["recipient"] == "keep@example.com"}
    assert {r["id"] for r in f} == keep_ids

    # per_record: Any disabled, Reception's own (empty) entry replaces it: JSON, enabled
    g = json_records(str(var / "g" / "*"))
    assert sorted(r["recipient"] for r in g) == sorted("%s@example.com" % u for u in rcpts)
    assert {r["type"] for r in g} == {"Reception"}


def test_filter_event_custom_name_and_typo(kumod, tmp_path):
    """A custom event name is a filter_event (or a custom_lua constructor);
    a name one edit away from a KumoMTA event is refused as a typo."""
    from conftest import KUMOD_BIN, kumod_env
    policy = tmp_path / "p.lua"
    policy.write_text("local kumo = require 'kumo'\n"
                      "kumo.on('smtp_server_mesage_received', function(msg) end)\n")
    out = subprocess.run([KUMOD_BIN, "--policy", str(policy), "--validate"],
                         env=kumod_env(), capture_output=True, text=True, timeout=20)
    assert out.returncode == 1
    assert ("p.lua:2: kumo.on('smtp_server_mesage_received'): not an event kumod calls "
            "(did you mean 'smtp_server_message_received'?)") in out.stderr, out.stderr
    policy.write_text("local kumo = require 'kumo'\n"
                      "kumo.on('pick_records', function(msg) return true end)\n"
                      "kumo.on('init', function()\n"
                      "  kumo.configure_local_logs{ log_dir = '%s/logs', "
                      "filter_event = 'pick_records' }\n"
                      "end)\n" % tmp_path)
    out = subprocess.run([KUMOD_BIN, "--policy", str(policy), "--validate"],
                         env=kumod_env(), capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stdout + out.stderr
