# SPDX-License-Identifier: Apache-2.0
"""A message's whole story: `kcli inspect-message ID --timeline` for a
message deferred once (the peer answers 451 to RCPT) and then delivered
shows both attempts, in order, with times; with KUMOD_MESSAGE_TIMELINE_LOG=1
the Delivery record carries the same timeline. Under the default byte budget
(KUMOD_MESSAGE_TIMELINE_BYTES=512) the same story keeps its start and its end,
with a "Dropped" entry counting the middle ones."""

import json
import os
import smtplib
import subprocess

from conftest import REPO
from test_relay import records, wait_until
from test_trace_smtp import DeferOnceMx

TOOLS_BIN = os.environ.get("TOOLS_BIN") or os.path.join(REPO, "build")

POLICY = """
kumo.on('init', function()
  kumo.define_spool{ name = 'data', path = '%(var)s/spool/data' }
  kumo.define_spool{ name = 'meta', path = '%(var)s/spool/meta' }
  kumo.configure_local_logs{ log_dir = '%(var)s/logs', max_segment_duration = '1s' }
  kumo.start_esmtp_listener{ listen = '127.0.0.1:0', relay_hosts = { '127.0.0.1' } }
  kumo.start_http_listener{ listen = '127.0.0.1:0' }
end)
kumo.on('get_queue_config', function()
  return kumo.make_queue_config{ retry_interval = '1s', max_retry_interval = '1s',
                                 protocol = { smtp = { mx_list = { '127.0.0.1:%(mx)d' } } } }
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path{ prohibited_hosts = {}, enable_tls = 'Disabled' }
end)
"""


def kcli(k, *args):
    port = k.listeners["http"][0][1]
    return subprocess.run([os.path.join(TOOLS_BIN, "kcli"), "--endpoint",
                           "http://127.0.0.1:%d" % port, *args],
                          capture_output=True, text=True, timeout=20)


def send(port):
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as s:
        s.ehlo("client.test")
        s.mail("sender@example.com")
        s.rcpt("user@dest.example")
        code, text = s.data(b"Subject: timeline\r\n\r\nretry me\r\n")
    assert code == 250, text
    return text.decode().split("ids=")[1].strip()


def check_story(tl):
    events = [(e["event"], e["detail"]) for e in tl]
    names = [e for e, _ in events]
    # reception first: policy, the reception itself, then the durable write
    assert names[:3] == ["Policy", "Reception", "Spool"], events
    assert events[0][1] == "smtp_server_message_received: ok"
    assert events[2][1].startswith("store ")
    attempts = [i for i, n in enumerate(names) if n == "Attempt"]
    assert len(attempts) == 2, events
    first, second = attempts
    assert events[first][1].startswith("attempt 1 via ")
    assert events[second][1].startswith("attempt 2 via ")
    # attempt 1 ends with the peer's 451, attempt 2 with its 250
    tf = names.index("TransientFailure")
    assert first < tf < second
    assert events[tf][1] == "451 4.7.1 greylisted, try again later"
    dl = names.index("Delivery")
    assert dl > second
    assert events[dl][1].startswith("250 2.0.0 queued as 42")
    # between the attempts: rescheduled with one attempt counted, due, ready
    between = names[tf + 1:second]
    for n in ("Scheduled", "Due", "Ready"):
        assert n in between, events
    sched = [d for n, d in events[tf + 1:second] if n == "Scheduled"]
    assert sched and sched[0].endswith("attempts 1"), sched
    # times: ordered, deltas add up, the retry waited about retry_interval
    el = [e["elapsed_us"] for e in tl]
    assert el == sorted(el)
    assert all(e["delta_us"] >= 0 for e in tl)
    assert all(abs(tl[i]["elapsed_us"] - tl[i - 1]["elapsed_us"] - tl[i]["delta_us"]) <= 1
               for i in range(1, len(tl)))  # each is truncated to whole µs
    assert tl[second]["elapsed_us"] - tl[tf]["elapsed_us"] >= 500000, events
    assert tl[dl]["elapsed_us"] > tl[second]["elapsed_us"]
    ats = [e["at"] for e in tl]
    assert ats == sorted(ats)
    return names


def test_timeline_deferred_once_then_delivered(kumod, tmp_path):
    mx = DeferOnceMx()
    try:
        k = kumod(POLICY % {"var": tmp_path / "var", "mx": mx.port},
                  env={"KUMOD_MESSAGE_TIMELINE_LOG": "1",
                       "KUMOD_MESSAGE_TIMELINE_BYTES": "4096"})  # the whole story
        mid = send(k.smtp_port)
        assert len(mid) == 32

        def finished():
            r = kcli(k, "inspect-message", mid, "--timeline", "--json")
            if r.returncode != 0:
                return None
            j = json.loads(r.stdout)
            names = [e["event"] for e in j["timeline"]]
            if not (j["timeline_finished"] and "Delivery" in names):
                return None
            after = j["timeline"][names.index("Delivery"):]
            # the story ends with the spool removal, which may complete after the
            # message object is gone: wait for it, so the views below compare
            # the same, final story
            return j if any(e["event"] == "Logged" for e in after) and any(
                e["event"] == "Spool" and e["detail"].startswith("removed") for e in after) \
                else None
        j = wait_until(finished, timeout=30)
        assert j, kcli(k, "inspect-message", mid, "--timeline", "--json").stdout
        assert j["message"] is None and j["id"] == mid
        names = check_story(j["timeline"])
        assert "Logged" in names
        # the human view: one line per event with elapsed and delta
        r = kcli(k, "inspect-message", mid, "--timeline")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert "state:    finished (no longer queued)" in lines
        rows = [line.split(None, 4) for line in lines if line.startswith("  20")]
        assert [row[3] for row in rows] == [e["event"] for e in j["timeline"]]
        # the Delivery record carries the timeline (KUMOD_MESSAGE_TIMELINE_LOG=1)
        recs = wait_until(lambda: [r for r in records(tmp_path / "var" / "logs")
                                   if r["type"] == "Delivery" and r["id"] == mid], timeout=10)
        assert len(recs) == 1
        check_story(recs[0]["timeline"])
        tfs = [r for r in records(tmp_path / "var" / "logs") if r["type"] == "TransientFailure"]
        assert tfs and all("timeline" not in r for r in tfs)  # only the final record
        assert k.stop() == 0
    finally:
        mx.close()


def test_timeline_over_the_default_budget(kumod, tmp_path):
    mx = DeferOnceMx()
    try:
        k = kumod(POLICY % {"var": tmp_path / "var", "mx": mx.port})
        mid = send(k.smtp_port)

        def finished():
            r = kcli(k, "inspect-message", mid, "--timeline", "--json")
            j = json.loads(r.stdout) if r.returncode == 0 else None
            return j if j and j["timeline_finished"] and \
                j["timeline"][-1]["detail"].startswith("removed") else None
        j = wait_until(finished, timeout=30)
        assert j, kcli(k, "inspect-message", mid, "--timeline", "--json").stdout
        tl = j["timeline"]
        events = [(e["event"], e["detail"]) for e in tl]
        names = [e for e, _ in events]
        # the start (4 entries), then what was dropped, then the newest whole
        assert names[:3] == ["Policy", "Reception", "Spool"], events
        assert names[4] == "Dropped" and names.count("Dropped") == 1, events
        assert j["timeline_dropped"] >= 1
        assert events[4][1] == "\u2026 %d earlier events dropped" % j["timeline_dropped"]
        assert "Delivery" in names[5:], events
        dl = names.index("Delivery")
        assert events[dl][1].startswith("250 2.0.0 queued as 42")
        el = [e["elapsed_us"] for e in tl]
        assert el == sorted(el)
        assert tl[dl]["elapsed_us"] >= 500000  # the retry's wait is still counted
        # packed bytes (time, event, length, detail) within the budget
        assert sum(3 + len(d.encode()) for n, d in events if n != "Dropped") <= 512, events
        r = kcli(k, "inspect-message", mid, "--timeline")
        rows = [line.split(None, 4) for line in r.stdout.splitlines() if line.startswith("  20")]
        assert [row[3] for row in rows] == names
        assert rows[4][4] == events[4][1]
        assert k.stop() == 0
    finally:
        mx.close()


def test_timeline_unknown_and_off(kumod, tmp_path):
    mx = DeferOnceMx()
    try:
        k = kumod(POLICY % {"var": tmp_path / "var", "mx": mx.port},
                  env={"KUMOD_MESSAGE_TIMELINE": "0"})
        r = kcli(k, "inspect-message", "0" * 32, "--timeline")
        assert r.returncode == 1
        assert "no timeline kept" in r.stderr
        mid = send(k.smtp_port)
        wait_until(lambda: mx.delivered >= 1, timeout=20)
        r = kcli(k, "inspect-message", mid, "--timeline", "--json")
        # off: a finished message has no story to tell
        assert r.returncode == 1 and "no timeline kept" in r.stderr, r.stdout
        assert k.stop() == 0
    finally:
        mx.close()
