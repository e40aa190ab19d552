# SPDX-License-Identifier: Apache-2.0
"""Recovery progress is visible (issue 19 item 3): after a restart the
`spool_recovery` task in the console carries the phase and the counts, the
spool_recovery_* metrics the same counts, and the flusher task leaves its
"Recovering" phase once the recovery is done. Counts only, no timing."""
import re
import smtplib
import urllib.request

import pytest

from test_console import Client, console_env
from test_relay import RELAY_POLICY
from test_spool_rocks import free_port

COUNT = 600  # more than two recovery chunks of 256 messages

POLICY = RELAY_POLICY.replace(
    "  kumo.start_esmtp_listener{{",
    "  kumo.start_http_listener{{ listen = '127.0.0.1:0' }}\n  kumo.start_esmtp_listener{{")
assert POLICY != RELAY_POLICY


def start(kumod, var, dead_port, kind, name, console=False):
    text = POLICY.format(var=var, mx_list="'127.0.0.1:%d'" % dead_port, retry="1h",
                         max_age="2h", flush="false")
    text = text.replace("flush = false }", "flush = false, kind = '%s' }" % kind)
    assert text.count("kind = '%s'" % kind) == 2
    if console:
        return kumod(text, policy_name=name, env=console_env(), args=["--tokio-console"])
    return kumod(text, policy_name=name)


def recovery_metrics(k):
    port = k.listeners["http"][0][1]
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(spool_recovery_\w+) (\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


@pytest.mark.parametrize("kind", ["LocalDisk", "RocksDB"])
def test_recovery_task_and_metrics_carry_the_counts(kumod, tmp_path, kind):
    var, dead = tmp_path / "var", free_port()  # nothing listens there: mail stays queued
    k1 = start(kumod, var, dead, kind, "relay1.lua")
    with smtplib.SMTP("127.0.0.1", k1.smtp_port, timeout=15) as c:
        c.ehlo("recovery.test")
        for n in range(COUNT):
            c.sendmail("s@example.com", ["r%d@example.com" % n],
                       "Subject: m-%d\r\n\r\nbody %d\r\n" % (n, n))
    assert k1.stop() == 0

    k2 = start(kumod, var, dead, kind, "relay2.lua", console=True)
    k2.wait_for("spool recovery complete: %d messages queued, 0 quarantined" % COUNT)
    k2.wait_for("console listener on")
    assert recovery_metrics(k2) == {"spool_recovery_active": 0.0,
                                    "spool_recovery_loaded": float(COUNT),
                                    "spool_recovery_quarantined": 0.0}
    c = Client(k2.listeners["console"][0][1])
    _, tasks, _ = c.snapshot()
    c.close()
    rec = [t for t in tasks.values() if t["kind"] == "spool_recovery"]
    assert len(rec) == 1, tasks
    assert rec[0]["stats"]["phase"] == "Done", rec[0]
    assert rec[0]["stats"]["state"] == "done", rec[0]
    assert rec[0]["stats"]["fields"]["loaded"] == str(COUNT)
    assert rec[0]["stats"]["fields"]["quarantined"] == "0"
    flusher = [t for t in tasks.values() if t["kind"] == "spool_flusher"]
    assert len(flusher) == 1 and rec[0]["parent"] == flusher[0]["id"], (rec, flusher)
    assert flusher[0]["stats"]["phase"] != "Recovering", flusher[0]
    assert k2.stop() == 0
