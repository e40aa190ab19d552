# SPDX-License-Identifier: Apache-2.0
"""The `make run` pair (scripts/run.sh): policy/simple_policy.lua relaying to
sink/sink.lua, with the policy's environment overrides instead of the fixed
ports 2025/2026. Checks the README's quick start: swaks -> relay (spooled) ->
sink over STARTTLS, logged as Reception then Delivery."""

import glob
import json
import os
import re
import shutil
import smtplib
import subprocess

import pytest

from conftest import REPO
from test_relay import captured, records, sink_start, wait_until

SIMPLE = os.path.join(REPO, "policy", "simple_policy.lua")
TOOLS_BIN = os.environ.get("TOOLS_BIN") or os.path.join(REPO, "build")


def simple_relay(kumod, var, sink, log=None, segment=None):
    """kumod with policy/simple_policy.lua under var/, relaying to sink; segment
    replaces its max_segment_duration."""
    env = {"KUMO_VAR": str(var), "KUMO_LISTEN": "127.0.0.1:0",
           "KUMO_SINK": "127.0.0.1:%d" % sink.smtp_port}
    if log:
        env["KUMOD_LOG"] = log
    text = open(SIMPLE).read()
    if segment:
        old = 'max_segment_duration = "10s"'
        assert old in text
        text = text.replace(old, 'max_segment_duration = "%s"' % segment)
    return kumod(text, policy_name="simple_policy_%s.lua" % var.name, env=env)


@pytest.mark.skipif(not shutil.which("swaks"), reason="swaks not installed")
def test_simple_policy_relays_to_the_sink_over_tls(kumod, tmp_path):
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    var = tmp_path / "var"
    relay = simple_relay(kumod, var, sink)
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % relay.smtp_port,
                        "--to", "someone@example.com", "--from", "dev@example.com",
                        "--header", "Subject: quick start"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert wait_until(lambda: captured(capture)), relay.stderr()
    assert relay.stop() == 0
    recs = records(var / "logs")
    types = [x["type"] for x in recs]
    assert types.index("Reception") < types.index("Delivery"), types
    d = next(x for x in recs if x["type"] == "Delivery")
    assert d["recipient"] == "someone@example.com"
    assert d["response"]["code"] == 250
    # the sink offers STARTTLS with a self-signed certificate: the policy uses
    # it without verification (OpportunisticInsecure)
    assert d.get("tls_protocol_version", "").startswith("TLS"), d
    assert b"Subject: quick start" in open(captured(capture)[0], "rb").read()


def test_deps_groups_are_split(tmp_path):
    """`make run` checks only the run group: a machine without the test peers, the
    formatters or clang still passes it; each other group names what it misses."""
    hidden = {"tmux": "test", "clang-format": "fmt", "clang": "fuzz"}
    path = tmp_path / "bin"
    path.mkdir()
    for d in ("/usr/local/bin", "/usr/bin", "/usr/sbin", "/bin", "/sbin"):
        for name in os.listdir(d):
            if name not in hidden and not (path / name).exists():
                (path / name).symlink_to(os.path.join(d, name))
    env = dict(os.environ, PATH=str(path))

    def check(group):
        return subprocess.run([os.path.join(REPO, "scripts", "deps.sh"), "--check", "--for",
                               group], capture_output=True, text=True, env=env, cwd=REPO,
                              timeout=60)
    r = check("run")
    if r.returncode != 0:
        pytest.skip("this machine lacks a run dependency itself: " + r.stdout)
    for name, group in hidden.items():
        r = check(group)
        assert r.returncode == 1 and r.stdout.split() == ["deps:", "missing:", name], r.stdout


def test_kcli_logs_reads_the_open_segment(kumod, tmp_path):
    """The README's log command: `kcli logs DIR` prints the records of the segment kumod
    is still writing and exits 0, where zstdcat stops with an unfinished-frame error."""
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    var = tmp_path / "var"
    relay = simple_relay(kumod, var, sink, segment="1h")  # open until kumod stops
    with smtplib.SMTP("127.0.0.1", relay.smtp_port, timeout=10) as s:
        s.sendmail("dev@example.com", ["someone@example.com"], "Subject: x\r\n\r\nx\r\n")
    kcli = os.path.join(TOOLS_BIN, "kcli")

    def types():
        r = subprocess.run([kcli, "logs", str(var / "logs")], capture_output=True, text=True,
                           timeout=10)
        assert r.returncode == 0 and r.stderr == "", r
        return [json.loads(l)["type"] for l in r.stdout.splitlines()]
    assert wait_until(lambda: "Delivery" in types(), timeout=20), relay.stderr()
    segs = glob.glob(str(var / "logs" / "*"))
    assert len(segs) == 1 and os.stat(segs[0]).st_mode & 0o222, "the segment is still open"
    assert types()[:2] == ["Reception", "Delivery"]
    assert relay.stop() == 0
    # closed now (write bits cleared): still read, still exit 0
    assert not os.stat(segs[0]).st_mode & 0o222
    assert types()[:2] == ["Reception", "Delivery"]


MESSAGE_EVENT = re.compile(r"kumod::message: (\w+) id=([0-9a-f]{32}) from=\"([^\"]*)\" "
                           r"to=\"([^\"]*)\" queue=\"([^\"]*)\" code=(\d+)$")


def test_trace_output_for_a_relayed_message(kumod, tmp_path):
    """At the default level: one kumod::message line when the message is received and one
    per delivery outcome; routing and delivery events carry their own task's span, not the
    resolver's; the outbound TLS handshake is a kumod::smtp_client event; the server's
    per-message debug line names the queue the message goes to."""
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    relay = simple_relay(kumod, tmp_path / "var", sink,
                         log="kumod=info,kumo_server_common=info,"
                             "kumod::smtp_client=debug,kumod::smtp_server=debug")
    with smtplib.SMTP("127.0.0.1", relay.smtp_port, timeout=10) as s:
        s.sendmail("dev@example.com", ["someone@example.com"], "Subject: x\r\n\r\nx\r\n")
    relay.wait_for("kumod::message: Delivery ", timeout=20)
    assert relay.stop() == 0
    lines = relay.lines()
    events = [MESSAGE_EVENT.search(l).groups() for l in lines if "kumod::message: " in l]
    assert [e[0] for e in events] == ["Reception", "Delivery"], events
    for e in events:
        assert e[2:5] == ("dev@example.com", "someone@example.com", "example.com"), e
    assert events[0][1] == events[1][1] and events[0][5] == "250" and events[1][5] == "250"
    # no dispatcher or message event under the resolver's span
    assert not [l for l in lines if "dns_resolver{" in l], lines
    tls = [l for l in lines if "TLS established" in l]
    assert len(tls) == 1 and " kumod::smtp_client: conn=" in tls[0], tls
    msg = [l for l in lines if " message id=%s " % events[0][1] in l]
    assert len(msg) == 1 and " queue=\"example.com\" " in msg[0], msg
    # off with a filter
    relay2 = simple_relay(kumod, tmp_path / "var2", sink,
                          log="kumod=info,kumo_server_common=info,kumod::message=off")
    with smtplib.SMTP("127.0.0.1", relay2.smtp_port, timeout=10) as s:
        s.sendmail("dev@example.com", ["someone@example.com"], "Subject: x\r\n\r\nx\r\n")
    assert wait_until(lambda: len(captured(capture)) >= 2, timeout=20)
    assert relay2.stop() == 0
    assert not [l for l in relay2.lines() if "kumod::message" in l]
