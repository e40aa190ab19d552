# SPDX-License-Identifier: Apache-2.0
"""Traffic shaping automation in-process (policy-extras.shaping automation rules, kumod's
stand-in for KumoMTA's TSA daemon) and MX rollup: a relay using the shaping helper delivers
to the sink, whose fault plan answers `421 4.7.28 ... rate limited`; a rule matching that
reply suspends the path (seen over kcli and HTTP) or lowers its settings (seen in
inspect-ready-q), and the effect ends by itself. MX rollup against a DNS server on
loopback (dnslib): two domains sharing an MX site share one shaping block."""

import json
import os
import smtplib
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import REPO
from test_relay import captured, records, sink_start, wait_until

TOOLS_BIN = os.environ.get("TOOLS_BIN") or os.path.join(REPO, "build")

# the sink's rate-limit preset, for the first attempt of a@auto.test only
RATE_LIMIT_ONCE = json.dumps({"rules": [
    {"stage": "rcpt", "match": {"rcpt": "a@auto.test"}, "first": 1, "preset": "rate-limit"}]})

POLICY = """
local kumo = require 'kumo'
local shaping = require 'policy-extras.shaping'

-- KumoMTA's example call: publish/subscribe name the default TSA address,
-- which kumod serves in-process
local shaper = shaping:setup_with_automation {{
  publish = {{ 'http://127.0.0.1:8008' }},
  subscribe = {{ 'http://127.0.0.1:8008' }},
  no_default_files = true,
  extra_files = {{ '{etc}/shaping.toml' }},
}}

kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{var}/spool/data' }}
  kumo.define_spool {{ name = 'meta', path = '{var}/spool/meta' }}
  shaper.setup_publish()
  kumo.configure_local_logs {{ log_dir = '{var}/logs', max_segment_duration = '1s' }}
  kumo.start_http_listener {{ listen = '127.0.0.1:0' }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0', hostname = 'relay.test',
                               relay_hosts = {{ '127.0.0.1' }} }}
end)

kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {{
    retry_interval = '1s', max_retry_interval = '1s', max_age = '1h',
    protocol = {{ smtp = {{ mx_list = {{ '127.0.0.1:{port}' }} }} }},
  }}
end)

kumo.on('get_egress_path_config', shaper.get_egress_path_config)
"""

BASE_TOML = """
["default"]
connection_limit = 3
enable_tls = "Disabled"
prohibited_hosts = []
connect_timeout = "2s"
"""


def start(kumod, tmp_path, shaping_toml, faults=RATE_LIMIT_ONCE):
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture, env={"KUMO_SINK_FAULTS": faults})
    etc, var = tmp_path / "etc", tmp_path / "var"
    etc.mkdir()
    (etc / "shaping.toml").write_text(BASE_TOML + shaping_toml)
    relay = kumod(POLICY.format(etc=etc, var=var, port=sink.smtp_port), policy_name="relay.lua")
    port = relay.listeners["http"][0][1]
    rq = "unspecified->mx_list:127.0.0.1:%d@smtp" % sink.smtp_port
    return relay, port, rq, capture, var


def send(relay, rcpt):
    with smtplib.SMTP("127.0.0.1", relay.smtp_port, timeout=15) as s:
        s.sendmail("s@sender.test", [rcpt], "Subject: auto\r\n\r\nhello\r\n")


def get(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
        body = r.read().decode()
    return json.loads(body) if path != "/metrics" else body


def kcli(port, *args):
    r = subprocess.run([os.path.join(TOOLS_BIN, "kcli"), "--endpoint",
                        "http://127.0.0.1:%d" % port, *args],
                       capture_output=True, text=True, timeout=15)
    assert r.returncode == 0, r
    return r.stdout


def metric(port, line_prefix):
    for line in get(port, "/metrics").splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.split()[-1])
    return None


def test_suspend_rule_holds_the_path_then_delivers(kumod, tmp_path):
    relay, port, rq, capture, var = start(kumod, tmp_path, """
[["default".automation]]
regex = '''4\\.7\\.28 .*rate limit'''
action = "Suspend"
duration = "4s"
""")
    send(relay, "a@auto.test")
    # the 421 4.7.28 of the first attempt fires the rule: the ready queue is suspended
    lst = wait_until(lambda: json.loads(kcli(port, "suspend-ready-q-list", "--json")), timeout=15)
    assert [e["name"] for e in lst] == [rq], lst
    assert lst[0]["reason"] == "automation rule: 4\\.7\\.28 .*rate limit", lst
    line = relay.wait_for("automation Suspend")
    assert "ready_queue=%s" % rq in line, line
    # a message queued meanwhile is not attempted while the suspension lives
    send(relay, "b@auto.test")
    held = 0
    while json.loads(kcli(port, "suspend-ready-q-list", "--json")):
        assert captured(capture) == [], "delivered during the suspension"
        st = get(port, "/api/admin/ready-q-states/v1")["states_by_ready_queue"].get(rq) or {}
        held += bool(st.get("suspended"))
        time.sleep(0.2)
    assert held > 0
    # then both are delivered, without a new firing (b passes at once)
    assert wait_until(lambda: len(captured(capture)) == 2, timeout=15), relay.stderr()
    relay.wait_for("automation Suspend ready_queue=%s expired" % rq)
    assert metric(port, 'shaping_automation_fired_total{action="Suspend"}') == 1
    assert metric(port, "shaping_automation_expired_total") == 1
    assert metric(port, "shaping_automation_active_count") == 0
    tf = [r for r in records(var / "logs") if r["type"] == "TransientFailure"]
    assert [r["response"]["code"] for r in tf] == [421], tf


def test_set_config_lowers_the_path_until_it_expires(kumod, tmp_path):
    relay, port, rq, capture, var = start(kumod, tmp_path, """
[["default".automation]]
regex = "4\\\\.7\\\\.28"
action = [
  { SetConfig = { name = "connection_limit", value = 1 } },
  { SetConfig = { name = "max_message_rate", value = "30/min" } },
]
duration = "4s"
""")

    def path():
        r = get(port, "/api/admin/inspect-ready-q/v1?queue_name=" + rq.replace(">", "%3E"))
        return r["path_config"]
    send(relay, "a@auto.test")
    assert wait_until(lambda: len(captured(capture)) == 1, timeout=15), relay.stderr()
    # the retry (1 s later) loaded the path with the overrides
    p = path()
    assert p["connection_limit"] == 1, p
    assert p["max_message_rate"] == {"limit": 30, "period_ms": 60000}, p
    assert metric(port, 'shaping_automation_fired_total{action="SetConfig"}') == 2
    relay.wait_for("automation SetConfig source=unspecified site=mx_list:127.0.0.1:")
    # expiry: both overrides end; the path loads its file settings again on next use
    relay.wait_for('expired: "max_message_rate=\\"30/min\\""', timeout=10)
    relay.wait_for('expired: "connection_limit=1"', timeout=10)
    send(relay, "c@auto.test")
    assert wait_until(lambda: len(captured(capture)) == 2, timeout=15), relay.stderr()
    p = path()
    assert p["connection_limit"] == 3 and p["max_message_rate"] is None, p
    assert metric(port, "shaping_automation_active_count") == 0


def test_threshold_trigger_counts_before_firing(kumod, tmp_path):
    # every recipient of auto.test is rate limited on its first attempt; the rule
    # needs 3 such replies within the hour
    faults = json.dumps({"rules": [{"stage": "rcpt", "match": {"domain": "auto.test"},
                                    "first": 1, "preset": "rate-limit"}]})
    relay, port, rq, capture, var = start(kumod, tmp_path, """
[["default".automation]]
regex = "4\\\\.7\\\\.28"
action = "Suspend"
duration = "1h"
trigger = { Threshold = "3/hour" }
""", faults=faults)
    for i, rcpt in enumerate(["r1@auto.test", "r2@auto.test"]):
        send(relay, rcpt)
        assert wait_until(lambda: len(captured(capture)) == i + 1, timeout=15), relay.stderr()
    assert json.loads(kcli(port, "suspend-ready-q-list", "--json")) == []
    assert metric(port, 'shaping_automation_fired_total{action="Suspend"}') is None
    send(relay, "r3@auto.test")  # the third: the rule fires
    lst = wait_until(lambda: json.loads(kcli(port, "suspend-ready-q-list", "--json")), timeout=15)
    assert [e["name"] for e in lst] == [rq], lst
    assert metric(port, 'shaping_automation_fired_total{action="Suspend"}') == 1
    time.sleep(1.5)  # its retry is held: r3 is not delivered
    assert len(captured(capture)) == 2
