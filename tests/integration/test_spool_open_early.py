# SPDX-License-Identifier: Apache-2.0
"""The RocksDB spool opens after the listeners (issue 19 item 3): the SMTP
listener greets while the databases are still opening and before recovery has
run; a message received meanwhile is acknowledged only once it is durable
(kill -9 after its 250: delivered after the restart); a database that does not
open ends kumod with the define_spool error and answers the waiting
transaction 451.

The open is held deterministically with the test hook
KUMOD_TEST_SPOOL_OPEN_GATE (docs/spool.md, "Start-up order"): the open waits
while the named file exists. No timing thresholds: states are read from the
console tasks, the metrics and parsed log lines."""
import os
import re
import smtplib
import threading
import urllib.request

from test_console import Client, console_env
from test_relay import RELAY_POLICY, captured, sink_start, wait_until
from test_spool_rocks import free_port

COUNT = 3000  # a few thousand queued messages (12 recovery chunks)

POLICY = RELAY_POLICY.replace(
    "  kumo.start_esmtp_listener{{",
    "  kumo.start_http_listener{{ listen = '127.0.0.1:0' }}\n  kumo.start_esmtp_listener{{")
assert POLICY != RELAY_POLICY
RECOVERED_RE = re.compile(r"spool recovery complete: (\d+) messages queued, (\d+) quarantined")


def start(kumod, var, mx_port, name, flush="true", gate=None, wait="initialization complete"):
    text = POLICY.format(var=var, mx_list="'127.0.0.1:%d'" % mx_port, retry="1h",
                         max_age="2h", flush=flush)
    text = text.replace("flush = %s }" % flush, "flush = %s, kind = 'RocksDB' }" % flush)
    assert text.count("kind = 'RocksDB'") == 2
    env = console_env()
    if gate:
        env["KUMOD_TEST_SPOOL_OPEN_GATE"] = str(gate)
    return kumod(text, policy_name=name, env=env, args=["--tokio-console"], wait=wait)


def fill(kumod, var, dead, count):
    k = start(kumod, var, dead, "fill.lua", flush="false")
    with smtplib.SMTP("127.0.0.1", k.smtp_port, timeout=30) as c:
        c.ehlo("fill.test")
        for n in range(count):
            c.sendmail("s@example.com", ["r%d@example.com" % n],
                       "Subject: fill-%05d\r\n\r\nbody %d\r\n" % (n, n))
    assert k.stop() == 0


def tasks_by_kind(k):
    k.wait_for("console listener on")
    c = Client(k.listeners["console"][0][1])
    _, tasks, _ = c.snapshot()
    c.close()
    out = {}
    for t in tasks.values():
        out.setdefault(t["kind"], []).append(t)
    return out


def metric(k, name):
    port = k.listeners["http"][0][1]
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        for line in r.read().decode().splitlines():
            m = re.match(r"^(\w+) (\S+)$", line)
            if m and m.group(1) == name:
                return float(m.group(2))
    return None


def recovered(k):
    """(loaded, quarantined) of the recovery-complete line, None before it."""
    for line in k.lines():
        m = RECOVERED_RE.search(line)
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


class Sender(threading.Thread):
    """One message in its own session; .code is the final reply code."""

    def __init__(self, port, subject):
        super().__init__(daemon=True)
        self.port, self.subject = port, subject
        self.code, self.error = None, None

    def run(self):
        try:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as c:
                c.ehlo("early.test")
                c.sendmail("s@example.com", ["early@example.com"],
                           "Subject: %s\r\n\r\n%s\r\n" % (self.subject, self.subject))
                self.code = 250
        except smtplib.SMTPDataError as e:
            self.code = e.smtp_code
        except Exception as e:  # reported by the test
            self.error = e


def test_rocks_greets_while_opening_and_acks_only_durable(kumod, tmp_path):
    var, dead = tmp_path / "var", free_port()  # nothing listens there: mail stays queued
    fill(kumod, var, dead, COUNT)

    gate = tmp_path / "gate"
    gate.write_text("hold")
    k = start(kumod, var, dead, "early.lua", gate=gate)
    # the listener greets while the databases are held closed
    with smtplib.SMTP("127.0.0.1", k.smtp_port, timeout=15) as c:
        code, _ = c.ehlo("early.test")
        assert code == 250
    t = tasks_by_kind(k)
    assert [f["stats"]["phase"] for f in t["spool_flusher"]] == ["Opening"], t["spool_flusher"]
    rec = t["spool_recovery"]
    assert len(rec) == 1 and rec[0]["stats"]["phase"] == "Waiting for the spool to open", rec
    assert rec[0]["stats"]["fields"]["loaded"] == "0"
    assert recovered(k) is None

    # a message received while the spool opens waits for its durable write
    s = Sender(k.smtp_port, "early-tag")
    s.start()
    assert wait_until(lambda: metric(k, "spool_pending") == 1.0, timeout=20), k.stderr()
    assert s.is_alive() and s.code is None  # no reply while its store cannot run
    gate.unlink()
    s.join(60)
    assert s.error is None and s.code == 250, (s.error, s.code)
    k.wait_for("spool recovery complete", timeout=120)
    # the early message was stored by this process: recovery skips it
    assert recovered(k) == (COUNT, 0)
    assert [f["stats"]["phase"] for f in tasks_by_kind(k)["spool_flusher"]] != ["Opening"]
    k.kill()  # kill -9 right after the 250

    # after the restart the acknowledged message is delivered
    capture = tmp_path / "capture"
    port = free_port()
    sink_start(kumod, capture, env={"KUMO_SINK_LISTEN": "127.0.0.1:%d" % port})
    k2 = start(kumod, var, port, "after.lua")
    k2.wait_for("spool recovery complete", timeout=120)
    assert recovered(k2) == (COUNT + 1, 0)

    def delivered():
        for f in captured(capture):
            if b"Subject: early-tag\r\n" in open(f, "rb").read():
                return True
        return False
    assert wait_until(delivered, timeout=120), k2.stderr()
    assert k2.stop() == 0


def test_rocks_open_failure_exits_and_answers_451(kumod, tmp_path):
    var, dead = tmp_path / "var", free_port()
    fill(kumod, var, dead, 1)
    # a damaged CURRENT file: the directory still looks like a RocksDB spool,
    # the database itself does not open
    current = var / "spool" / "data" / "CURRENT"
    current.write_text("garbage")
    gate = tmp_path / "gate"
    gate.write_text("hold")
    k = start(kumod, var, dead, "broken.lua", gate=gate)
    s = Sender(k.smtp_port, "never-acked")
    s.start()
    assert wait_until(lambda: metric(k, "spool_pending") == 1.0, timeout=20), k.stderr()
    gate.unlink()
    s.join(60)
    assert s.error is None and s.code == 451, (s.error, s.code)
    k.proc.wait(30)
    assert k.proc.returncode == 1
    errs = [line for line in k.lines() if line.startswith("kumod: policy error: ")]
    assert len(errs) == 1, k.stderr()
    assert errs[0].startswith("kumod: policy error: define_spool: data spool: cannot open "
                              "RocksDB at %s: " % (var / "spool" / "data")), errs
    assert os.path.exists(current)
