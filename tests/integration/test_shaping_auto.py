# SPDX-License-Identifier: Apache-2.0
"""Traffic shaping automation in-process (policy-extras.shaping automation rules, kumod's
stand-in for KumoMTA's TSA daemon) and MX rollup: a relay using the shaping helper delivers
to the sink, whose fault plan answers `421 4.7.28 ... rate limited`; a rule matching that
reply suspends the path (seen over kcli and HTTP) or lowers its settings (seen in
inspect-ready-q), and the effect ends by itself. MX rollup against a DNS server on
loopback (dnslib): two domains sharing an MX site share one shaping block."""

import datetime
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


def start(kumod, tmp_path, shaping_toml, faults=RATE_LIMIT_ONCE, extra=""):
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture, env={"KUMO_SINK_FAULTS": faults})
    etc, var = tmp_path / "etc", tmp_path / "var"
    etc.mkdir()
    (etc / "shaping.toml").write_text(BASE_TOML + shaping_toml)
    relay = kumod(POLICY.format(etc=etc, var=var, port=sink.smtp_port) + extra,
                  policy_name="relay.lua")
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


def live_for(entry):
    """Seconds left of a listed suspension (its RFC 3339 expires)."""
    exp = datetime.datetime.fromisoformat(entry["expires"].replace("Z", "+00:00"))
    return exp.timestamp() - time.time()


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
    while (lst := json.loads(kcli(port, "suspend-ready-q-list", "--json"))) and \
            live_for(lst[0]) > 0.5:  # (well before its end: no race with the expiry)
        st = get(port, "/api/admin/ready-q-states/v1")["states_by_ready_queue"].get(rq) or {}
        assert captured(capture) == [], "delivered during the suspension"
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


def test_a_cancelled_suspension_lets_the_rule_fire_again(kumod, tmp_path):
    faults = json.dumps({"rules": [{"stage": "rcpt", "match": {"domain": "auto.test"},
                                    "first": 1, "preset": "rate-limit"}]})
    relay, port, rq, capture, var = start(kumod, tmp_path, """
[["default".automation]]
regex = "4\\\\.7\\\\.28"
action = "Suspend"
duration = "1h"
""", faults=faults)
    send(relay, "r1@auto.test")
    first = wait_until(lambda: json.loads(kcli(port, "suspend-ready-q-list", "--json")),
                       timeout=15)
    assert [e["name"] for e in first] == [rq], first
    kcli(port, "suspend-ready-q-cancel", "--id", first[0]["id"])
    assert wait_until(lambda: len(captured(capture)) == 1, timeout=15), relay.stderr()
    assert get(port, "/api/admin/shaping-automation/v1") == []
    # the next rate-limited reply suspends again (the cancelled one does not count as live)
    send(relay, "r2@auto.test")
    again = wait_until(lambda: json.loads(kcli(port, "suspend-ready-q-list", "--json")),
                       timeout=15)
    assert [e["name"] for e in again] == [rq] and again[0]["id"] != first[0]["id"], again
    assert metric(port, 'shaping_automation_fired_total{action="Suspend"}') == 2
    assert metric(port, "shaping_automation_repeat_total") == 0
    time.sleep(1.5)  # r2's retry stays held
    assert len(captured(capture)) == 1


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
    effects = get(port, "/api/admin/shaping-automation/v1")
    site = rq.split("->")[1].split("@")[0]
    assert sorted((e["action"], e["scope"], e["effect"]) for e in effects) == [
        ("SetConfig", "source=unspecified site=" + site, "connection_limit=1"),
        ("SetConfig", "source=unspecified site=" + site, 'max_message_rate="30/min"')], effects
    assert json.loads(kcli(port, "shaping-automation", "--json")) == effects
    rows = kcli(port, "shaping-automation").splitlines()
    assert rows[0].split() == ["ACTION", "SCOPE", "EXPIRES", "EFFECT", "RULE"]
    assert sorted(r.split()[0] for r in rows[1:]) == ["SetConfig", "SetConfig"], rows
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


def test_suspend_tenant_holds_the_tenant_scheduled_queue(kumod, tmp_path):
    relay, port, rq, capture, var = start(kumod, tmp_path, """
[["default".automation]]
regex = "4\\\\.7\\\\.28"
action = "SuspendTenant"
duration = "3s"
""", extra="""
kumo.on('smtp_server_message_received', function(msg) msg:set_meta('tenant', 'acme') end)
""")
    send(relay, "a@auto.test")
    lst = wait_until(lambda: json.loads(kcli(port, "suspend-list", "--json")), timeout=15)
    assert [(e["domain"], e["tenant"], e["campaign"]) for e in lst] == \
        [("auto.test", "acme", None)], lst
    assert lst[0]["reason"] == "automation rule: 4\\.7\\.28", lst
    while (lst := json.loads(kcli(port, "suspend-list", "--json"))) and live_for(lst[0]) > 0.5:
        assert captured(capture) == [], "delivered during the suspension"
        time.sleep(0.2)
    assert wait_until(lambda: len(captured(capture)) == 1, timeout=15), relay.stderr()
    # the suspension's own TransientFailure ("KumoMTA internal: ...") is not matched
    # (match_internal = false): one firing only
    tf = [r for r in records(var / "logs") if r["type"] == "TransientFailure"]
    assert any(r["response"]["content"].startswith("KumoMTA internal: scheduled queue is "
                                                   "suspended") for r in tf), tf
    assert metric(port, 'shaping_automation_fired_total{action="SuspendTenant"}') == 1
    assert metric(port, "shaping_automation_repeat_total") == 0


def test_bounce_rule_bounces_the_domain_for_its_duration(kumod, tmp_path):
    relay, port, rq, capture, var = start(kumod, tmp_path, """
["auto.test"]
mx_rollup = false
[["auto.test".automation]]
regex = "4\\\\.7\\\\.28"
action = "Bounce"
duration = "1h"
""")
    send(relay, "a@auto.test")
    # the failed message is bounced when it comes back for its retry
    assert wait_until(lambda: [r for r in records(var / "logs") if r["type"] == "AdminBounce"],
                      timeout=15), relay.stderr()
    lst = get(port, "/api/admin/bounce/v1")
    assert [(b["domain"], b["reason"]) for b in lst] == [("auto.test", "automation rule: 4\\.7\\.28")], lst
    # and so is a new message for the domain while the entry lives; other domains are not
    send(relay, "b@auto.test")
    send(relay, "c@other.test")
    assert wait_until(lambda: len([r for r in records(var / "logs")
                                   if r["type"] == "AdminBounce"]) == 2, timeout=15)
    assert wait_until(lambda: len(captured(capture)) == 1, timeout=15), relay.stderr()
    assert metric(port, 'shaping_automation_fired_total{action="Bounce"}') == 1


SHAPING_RULES = r"""
local r = kumo.shaping.load({ 'rules.toml' })
local function rec(rcpt, site, text)
  return { type = 'TransientFailure', recipient = rcpt, egress_source = 'src',
           site = 'src->' .. site .. '@smtp', queue = 'auto.test',
           response = { code = 421, enhanced_code = { class = 4, subject = 7, detail = 28 },
                        content = text } }
end
local out = {}
for name, rc in pairs {
  plain = rec('x@auto.test', 'mx.auto.test.', 'rate limited'),
  internal = rec('x@auto.test', 'mx.auto.test.', 'KumoMTA internal: rate limited'),
  provider = rec('x@p.big.test', 'mx.big.test.', 'rate limited'),
  other = rec('x@else.test', 'mx.else.test.', 'all fine'),
} do
  out[name] = r:match_rules(rc)
end
print(kumo.json_encode(out))
"""

RULES_TOML = """
[["default".automation]]
regex = "^421 4\\\\.7\\\\.28 rate"
action = "Suspend"
duration = "1h"

["auto.test"]
mx_rollup = false
[["auto.test".automation]]
regex = ["nomatch", "rate limited"]
action = [{SetConfig = {name = "connection_limit", value = 2}}, "SuspendTenant"]
trigger = {Threshold = "10/hr"}
duration = "90m"
match_internal = true

[provider."big"]
match = [{DomainSuffix = ".big.test"}]
[[provider."big".automation]]
regex = "rate"
action = "Bounce"
duration = "10m"
"""


def test_match_rules_order_and_fields(tmp_path):
    """shaping:match_rules (kumo.shaping.load): KumoMTA's order (default, providers,
    site, domain), was_rollup, match_internal, the rule's fields as written."""
    (tmp_path / "rules.toml").write_text(RULES_TOML)
    (tmp_path / "check.lua").write_text("local kumo = require 'kumo'\n" + SHAPING_RULES)
    r = subprocess.run([os.environ.get("KUMOD_BIN") or os.path.join(REPO, "build", "kumod"),
                        "--policy", "check.lua", "--validate"], cwd=str(tmp_path),
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    doc = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][0])
    plain = doc["plain"]
    assert [(m["regex"], m["was_rollup"]) for m in plain] == [
        (["^421 4\\.7\\.28 rate"], True), (["nomatch", "rate limited"], False)], plain
    assert plain[1]["action"] == [{"SetConfig": {"name": "connection_limit", "value": 2}},
                                  "SuspendTenant"]
    assert plain[1]["trigger"] == {"Threshold": "10/hr"} and plain[1]["duration"] == 5400
    assert plain[0]["trigger"] == "Immediate" and plain[0]["match_internal"] is False
    # an internal response: only the rule with match_internal = true
    assert [m["regex"] for m in doc["internal"]] == [["nomatch", "rate limited"]]
    assert [(m["action"], m["was_rollup"]) for m in doc["provider"]] == [
        (["Suspend"], True), (["Bounce"], False)]
    assert doc["other"] == {} or doc["other"] == []


# --- MX rollup and MX-based provider rules -------------------------------------------

import test_dns  # noqa: E402
from test_dns import DnsServer, a, mx  # noqa: E402

test_dns.ZONE.update({
    # a and b: the same MX hosts (one site); c and d: another site
    "a.roll.test": [mx("a.roll.test", 10, "mx1.shared.test"), mx("a.roll.test", 20, "mx2.shared.test")],
    "b.roll.test": [mx("b.roll.test", 5, "mx1.shared.test"), mx("b.roll.test", 9, "mx2.shared.test")],
    "c.roll.test": [mx("c.roll.test", 10, "mx.other.test")],
    "d.roll.test": [mx("d.roll.test", 10, "mx.other.test")],
    # y: every MX host under .yahoodns.test; mixed: one is not
    "y.roll.test": [mx("y.roll.test", 1, "mta5.am0.yahoodns.test"),
                    mx("y.roll.test", 1, "mta6.am0.yahoodns.test")],
    "mixed.roll.test": [mx("mixed.roll.test", 1, "mta7.am0.yahoodns.test"),
                        mx("mixed.roll.test", 2, "mx.other.test")],
    "mx1.shared.test": [a("mx1.shared.test", "127.0.0.1")],
    "mx2.shared.test": [a("mx2.shared.test", "127.0.0.1")],
    "mx.other.test": [a("mx.other.test", "127.0.0.1")],
    "mta5.am0.yahoodns.test": [a("mta5.am0.yahoodns.test", "127.0.0.1")],
    "mta6.am0.yahoodns.test": [a("mta6.am0.yahoodns.test", "127.0.0.1")],
    "mta7.am0.yahoodns.test": [a("mta7.am0.yahoodns.test", "127.0.0.1")],
})

ROLLUP_POLICY = r"""
local kumo = require 'kumo'
local shaper = require('policy-extras.shaping'):setup_with_automation {
  no_default_files = true, extra_files = { 'shaping.toml' } }
kumo.on('init', function()
  kumo.dns.configure_resolver { name_servers = { os.getenv 'DNS' } }
  kumo.start_esmtp_listener { listen = '127.0.0.1:0' }
end)
-- answers, for RCPT TO:<x@domain>, the shaping of domain at its MX site
kumo.on('smtp_server_rcpt_to', function(rcpt)
  local domain = tostring(rcpt):match('@(.+)$')
  local site = kumo.shaping.kumod_mx(domain) or ''
  local p = shaper.get_egress_path_config(domain, 'src', site, true)
  kumo.reject(550, kumo.json_encode {
    site = site, limit = p.connection_limit or 0, ehlo = p.ehlo_domain or '',
    mdpc = p.max_deliveries_per_connection or 0 })
end)
"""

ROLLUP_TOML = """
["default"]
connection_limit = 10

["a.roll.test"]
connection_limit = 4
ehlo_domain = "rolled.a.test"

["c.roll.test"]
mx_rollup = false
connection_limit = 6

[provider."yahoo"]
match = [{MXSuffix = ".yahoodns.test"}]
max_deliveries_per_connection = 7
"""


@pytest.fixture(scope="module")
def dns():
    srv = DnsServer()
    yield srv
    srv.stop()


def test_mx_rollup_and_mx_provider_rules(kumod, tmp_path, dns):
    (tmp_path / "shaping.toml").write_text(ROLLUP_TOML)
    k = kumod(ROLLUP_POLICY, env={"DNS": dns.server})

    def shaping_of(domain):
        with smtplib.SMTP("127.0.0.1", k.smtp_port, timeout=15) as s:
            s.ehlo("client.test")
            s.mail("s@sender.test")
            code, text = s.rcpt("x@" + domain)
        assert code == 550, (code, text)
        return json.loads(text.decode())

    # the MX answers come in the background: poll until b.roll.test shows a's block
    assert wait_until(lambda: shaping_of("b.roll.test")["limit"] == 4, timeout=20), k.stderr()
    # a domain's own MX (provider rules) likewise: known once its lookup answered
    for d in ["c.roll.test", "d.roll.test", "y.roll.test", "mixed.roll.test"]:
        assert wait_until(lambda: shaping_of(d)["site"] != "", timeout=20), d
    got = {d: shaping_of(d) for d in ["a.roll.test", "b.roll.test", "c.roll.test",
                                      "d.roll.test", "y.roll.test", "mixed.roll.test"]}
    assert got["a.roll.test"]["site"] == got["b.roll.test"]["site"] != ""
    assert got["c.roll.test"]["site"] == got["d.roll.test"]["site"] != got["a.roll.test"]["site"]
    # b shares a's site: a's block (rolled up) applies to it
    assert (got["b.roll.test"]["limit"], got["b.roll.test"]["ehlo"]) == (4, "rolled.a.test")
    assert (got["a.roll.test"]["limit"], got["a.roll.test"]["ehlo"]) == (4, "rolled.a.test")
    # c's block does not roll up: d, on the same site, keeps the default
    assert got["c.roll.test"]["limit"] == 6 and got["d.roll.test"]["limit"] == 10
    # MXSuffix: every MX host must match; one foreign host and the provider is out
    assert got["y.roll.test"]["mdpc"] == 7 and got["mixed.roll.test"]["mdpc"] == 0
    assert got["y.roll.test"]["limit"] == 10
