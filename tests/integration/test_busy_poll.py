# SPDX-License-Identifier: Apache-2.0
"""kumo.set_busy_poll: after input the loop polls without sleeping for a
bounded time, then sleeps again (docs/performance.md, docs/policy.md)."""

import os
import re
import smtplib
import time
import urllib.request

import pytest

from conftest import run_kumod

POLICY = """local kumo = require 'kumo'
kumo.on('init', function()
  kumo.set_busy_poll(%s)
  kumo.start_esmtp_listener{ listen = '127.0.0.1:0', relay_hosts = { '127.0.0.1' } }
  kumo.start_http_listener{ listen = '127.0.0.1:0' }
end)
kumo.on('smtp_server_message_received', function(msg)
  msg:set_meta('queue', 'null')
end)
"""

# The busy-poll events, plus the lines the harness waits for.
TRACE_ENV = {"KUMOD_LOG": "runtime::loop=trace,kumod=info,kumo_server_common=info"}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime+stime of every thread of pid, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def metrics(k):
    port = k.listeners["http"][0][1]
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(busy_poll_\w+) (\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def send(port, n, body=None):
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10) as s:
        for i in range(n):
            s.sendmail("a@client.test", ["b@dest.test"],
                       body or b"Subject: %d\r\n\r\nbody\r\n" % i)


def test_busy_poll_windows_end_and_the_loop_sleeps(kumod):
    k = kumod(POLICY % "'200us'", env=TRACE_ENV)
    send(k.smtp_port, 20)
    # Each burst of input opens a window that ends 200us after the last read.
    k.wait_for("busy poll begins, budget_us=200")
    end = k.wait_for("busy poll ends after")
    tail = int(re.search(r"tail_us=(\d+)", end).group(1))
    assert tail >= 200, end
    m = metrics(k)
    assert m["busy_poll_windows_total"] >= 1, m
    assert m["busy_poll_tail_seconds_total"] >= 0.0002, m
    # Idle again: the loop sleeps in epoll_wait. A loop that kept spinning
    # would burn about a whole CPU second per second.
    time.sleep(0.2)
    before = cpu_seconds(k.pid)
    time.sleep(1.0)
    assert cpu_seconds(k.pid) - before < 0.3
    # Shutdown is not held up by a poll window.
    send(k.smtp_port, 1)
    assert k.stop() == 0, k.stderr()


def test_message_body_reads_do_not_extend_busy_poll(kumod):
    """A body is bulk input: its reads neither open nor extend a window, so
    the loop may sleep and read it in large pieces."""
    k = kumod(POLICY % "'200us'", env=TRACE_ENV)
    body = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 1050  # 1 MB
    send(k.smtp_port, 1, body)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = k.stderr()
        if text.count("busy poll begins") == text.count("busy poll ends") > 0:
            break
        time.sleep(0.05)
    reads = [int(r) for r in re.findall(r"busy poll ends after \d+us reads=(\d+)", k.stderr())]
    # The commands and the connection are a handful of reads; 1 MiB through
    # a 64 KiB read buffer alone would be at least 16.
    assert reads and sum(reads) < 16, k.stderr()
    assert k.stop() == 0


def test_busy_poll_off_by_default_has_no_metrics(kumod):
    k = kumod(POLICY % "0", env=TRACE_ENV)
    send(k.smtp_port, 3)
    assert "busy_poll_windows_total" not in metrics(k)
    assert "busy poll" not in k.stderr()
    assert k.stop() == 0


@pytest.mark.parametrize("arg,want", [
    ("'2s'", "set_busy_poll: duration must be between 0 and 1s"),
    ("-1", "set_busy_poll: duration must be between 0 and 1s"),
    ("'fifty'", "set_busy_poll: invalid duration 'fifty'"),
    ("true", "set_busy_poll: expected a duration"),
])
def test_bad_busy_poll_is_a_policy_error(tmp_path, arg, want):
    p = tmp_path / "bad.lua"
    p.write_text("local kumo = require 'kumo'\nkumo.on('init', function()\n"
                 "  kumo.set_busy_poll(%s)\nend)\n" % arg)
    r = run_kumod(["--validate", "--policy", str(p)])
    assert r.returncode == 1 and want in r.stderr, r.stderr
