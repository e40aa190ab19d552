# SPDX-License-Identifier: Apache-2.0
"""The console's drill-down views (docs/console-protocol.md, "Views"): a live
SMTP session's envelope and latest transcript lines (AUTH secrets replaced),
a scheduled queue's messages paged with a cursor (next due, attempts, last
error), one message's metadata and timeline; spoken by a Python client
(frames parsed as JSON) and driven through kumo-console in tmux."""

import base64
import os
import smtplib
import socket
import threading
import time

import pytest

from test_console import CONSOLE, Client, Tmux, needs_tmux, smtp_open
from test_relay import wait_until

POLICY = """
kumo.on('init', function()
  kumo.define_spool{ name = 'data', path = '%(var)s/spool/data' }
  kumo.define_spool{ name = 'meta', path = '%(var)s/spool/meta' }
  kumo.start_esmtp_listener{ listen = '127.0.0.1:0', relay_hosts = { '127.0.0.1' },
                             hostname = 'mx.views.test' }
end)
kumo.on('get_queue_config', function()
  return kumo.make_queue_config{ retry_interval = '1h',
                                 protocol = { smtp = { mx_list = { '127.0.0.1:%(mx)d' } } } }
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path{ prohibited_hosts = {}, enable_tls = 'Disabled' }
end)
"""

QUEUE = "dest.example"
DEFER = "451 4.7.1 greylisted, try again later"


class AlwaysDeferMx:
    """A loopback SMTP peer whose every RCPT gets 451."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop_flag = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop_flag:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._session, args=(c,), daemon=True).start()

    def _session(self, c):
        c.settimeout(10)
        f = c.makefile("rb")
        try:
            c.sendall(b"220 mx.test ESMTP\r\n")
            while True:
                line = f.readline()
                if not line:
                    return
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    c.sendall(b"250-mx.test\r\n250 8BITMIME\r\n")
                elif verb == b"RCPT":
                    c.sendall(DEFER.encode() + b"\r\n")
                elif verb == b"QUIT":
                    c.sendall(b"221 2.0.0 bye\r\n")
                    return
                else:
                    c.sendall(b"250 2.0.0 ok\r\n")
        except OSError:
            return
        finally:
            c.close()

    def stop(self):
        self.stop_flag = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def mx():
    m = AlwaysDeferMx()
    yield m
    m.stop()


def start(kumod, tmp_path, mx):
    policy = POLICY % {"var": str(tmp_path), "mx": mx.port}
    env = {"TOKIO_CONSOLE_BIND": "127.0.0.1:0", "TOKIO_CONSOLE_PUBLISH_INTERVAL": "100ms"}
    k = kumod(policy, env=env, args=["--tokio-console"])
    k.wait_for("console listener on")
    k.console_port = k.listeners["console"][0][1]
    return k


def inject(port, n):
    """n messages, one per transaction: their ids in arrival order."""
    ids = []
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as s:
        s.ehlo("client.views.test")
        for i in range(n):
            s.mail("sender%d@example.com" % i)
            s.rcpt("user%d@%s" % (i, QUEUE))
            code, text = s.data(b"Subject: views %d\r\n\r\nbody\r\n" % i)
            assert code == 250, text
            ids.append(text.decode().split("ids=")[1].strip())
    return ids


def ask(c, cmd, want_type):
    """Sends a command and returns its reply frame (ticks in between are skipped)."""
    c.send(cmd)
    return c.until(lambda f: f["type"] in (want_type, "error"), want_type)


def all_deferred(c, ids):
    f = ask(c, {"cmd": "queue_messages", "queue": QUEUE, "limit": 500}, "queue_messages")
    if f["type"] != "queue_messages":
        return None
    got = {m["id"]: m for m in f["messages"]}
    ok = set(got) == set(ids) and all(m["attempts"] == 1 and m["state"] == "scheduled"
                                      for m in got.values())
    return f if ok else None


def test_queue_pages_with_a_cursor_and_a_message_with_its_timeline(kumod, tmp_path, mx):
    k = start(kumod, tmp_path, mx)
    ids = inject(k.smtp_port, 7)
    c = Client(k.console_port)
    c.snapshot()
    full = wait_until(lambda: all_deferred(c, ids), timeout=30, step=0.2)
    assert full, "the 7 messages never all showed one failed attempt"
    assert full["count"] == 7 and full["more"] is False and full["next_after"] is None
    assert [m["id"] for m in full["messages"]] == ids  # arrival order
    now_ms = full["now"] // 1000000
    for i, m in enumerate(full["messages"]):
        assert m["last_error"] == DEFER
        assert m["sender"] == "sender%d@example.com" % i
        assert m["recipient"] == "user%d@%s" % (i, QUEUE) and m["rcpt_count"] == 1
        # retry_interval 1h (jitter aside): due well in the future
        assert now_ms + 30 * 60 * 1000 < m["due_ms"] < now_ms + 2 * 3600 * 1000
        assert m["size"] > 0
    # pages of three: 3 + 3 + 1, each continuing after the last id given
    seen, after, pages = [], None, 0
    while True:
        cmd = {"cmd": "queue_messages", "queue": QUEUE, "limit": 3}
        if after:
            cmd["after"] = after
        f = ask(c, cmd, "queue_messages")
        assert f["type"] == "queue_messages", f
        assert f["restarted"] is False and f["limit"] == 3
        pages += 1
        seen += [m["id"] for m in f["messages"]]
        if not f["more"]:
            assert f["next_after"] is None
            break
        assert len(f["messages"]) == 3 and f["next_after"] == f["messages"][-1]["id"]
        after = f["next_after"]
    assert pages == 3 and seen == ids
    # a cursor no longer in the queue: the walk starts again, and says so
    f = ask(c, {"cmd": "queue_messages", "queue": QUEUE, "after": "0" * 32, "limit": 2},
            "queue_messages")
    assert f["restarted"] is True and [m["id"] for m in f["messages"]] == ids[:2]
    # the message view: metadata and the story so far
    f = ask(c, {"cmd": "message", "message_id": ids[4].upper()}, "message")
    assert f["type"] == "message" and f["message_id"] == ids[4]
    msg = f["message"]
    assert msg["sender"] == "sender4@example.com"
    assert msg["recipients"] == ["user4@%s" % QUEUE] and msg["queue"] == QUEUE
    assert msg["attempts"] == 1 and msg["last_error"] == DEFER and msg["state"] == "scheduled"
    assert msg["meta"]["received_from"].startswith("127.0.0.1:")
    events = [e["event"] for e in f["timeline"]]
    assert events[:3] == ["Policy", "Reception", "Spool"], events
    assert "Attempt" in events and "TransientFailure" in events
    tf = [e for e in f["timeline"] if e["event"] == "TransientFailure"][0]
    assert tf["detail"] == DEFER
    assert f["timeline_finished"] is False and f["timeline_on"] is True
    c.close()


def test_view_commands_refuse_what_they_cannot_answer(kumod, tmp_path, mx):
    k = start(kumod, tmp_path, mx)
    c = Client(k.console_port)
    c.snapshot()
    for cmd, want in [
        ({"cmd": "queue_messages"}, 'missing member "queue"'),
        ({"cmd": "queue_messages", "queue": "nowhere.example"},
         "no scheduled queue named 'nowhere.example'"),
        ({"cmd": "queue_messages", "queue": QUEUE, "limit": 0}, '"limit" must be'),
        ({"cmd": "queue_messages", "queue": QUEUE, "limit": 501}, '"limit" must be'),
        ({"cmd": "message"}, 'missing member "message_id"'),
        ({"cmd": "message", "message_id": "xyz"}, "'xyz' is not a message id"),
        ({"cmd": "message", "message_id": "ab" * 16},
         "no queued message with id " + "ab" * 16 + ", and no timeline kept for it"),
        ({"cmd": "session", "id": 1}, "no live smtp_server session runs as task 1"),
    ]:
        c.send(cmd)
        f = c.until(lambda f: f["type"] == "error", "an error frame")
        assert f["error"].startswith(want), (cmd, f)
    # the connection is kept: a good command still works
    c.send({"cmd": "pause"})
    assert c.until(lambda f: f["type"] == "state", "the state frame")["state"] == "paused"
    c.close()


def find_session_task(c, local_port):
    """The smtp_server task whose peer is our socket."""
    def scan():
        c.send({"cmd": "snapshot"})
        tasks = {}
        while True:
            f = c.until(lambda f: f["type"] == "snapshot", "a snapshot")
            for t in f["tasks"]:
                tasks[t["id"]] = t
            if f["last"]:
                break
        for t in tasks.values():
            if (t["kind"] == "smtp_server" and
                    t["fields"].get("peer") == "127.0.0.1:%d" % local_port):
                return t["id"]
        return None
    return wait_until(scan, timeout=10, step=0.2)


def test_session_view_shows_envelope_and_transcript_without_secrets(kumod, tmp_path, mx):
    k = start(kumod, tmp_path, mx)
    secret = base64.b64encode(b"\0user\0hunter2-secret").decode()
    # AUTH is not offered here (no credentials handler): its reply is an
    # error, so the session is driven by hand rather than with smtp_open
    sock = socket.create_connection(("127.0.0.1", k.smtp_port))
    sock.settimeout(10)
    f = sock.makefile("rb")

    def reply():
        while True:
            line = f.readline()
            if line[3:4] != b"-":
                return line

    assert reply().startswith(b"220")
    for cmd in ["EHLO views.client", "AUTH PLAIN " + secret, "MAIL FROM:<alice@example.com>",
                "RCPT TO:<bob@dest.example>", "RCPT TO:<carol@dest.example>"]:
        sock.sendall(cmd.encode() + b"\r\n")
        reply()
    c = Client(k.console_port)
    c.snapshot()
    tid = find_session_task(c, sock.getsockname()[1])
    assert tid, "no smtp_server task for our connection"
    fr = ask(c, {"cmd": "session", "id": tid}, "session")
    assert fr["type"] == "session" and fr["id"] == tid, fr
    ss = fr["session"]
    assert ss["task"] == tid and ss["peer"] == "127.0.0.1:%d" % sock.getsockname()[1]
    assert ss["helo"] == "views.client" and ss["state"] == "Rcpt" and ss["messages"] == 0
    assert ss["envelope"] == {"sender": "alice@example.com",
                              "recipients": ["bob@dest.example", "carol@dest.example"],
                              "rcpt_count": 2}
    assert ss["transcript_on"] is True
    lines = [(l["dir"], l["line"]) for l in ss["transcript"]]
    assert lines[0][0] == "S" and lines[0][1].startswith("220 ")
    client = [l for d, l in lines if d == "C"]
    assert client == ["EHLO views.client", "AUTH PLAIN (initial response not shown)",
                      "MAIL FROM:<alice@example.com>", "RCPT TO:<bob@dest.example>",
                      "RCPT TO:<carol@dest.example>"]
    # every command got its reply line, in order
    dirs = [d for d, _ in lines]
    assert dirs == ["S"] + ["C", "S"] * 5, lines
    assert all(l["ms"] >= 0 for l in ss["transcript"])
    # watching the task: its task_details frames carry the same session
    c.send({"cmd": "watch_task", "id": tid})
    det = c.until(lambda f: f["type"] == "task_details" and f["id"] == tid, "task details")
    assert det["session"]["envelope"]["rcpt_count"] == 2
    # the secret never leaves kumod, in any frame
    for frame in (fr, det):
        assert secret not in str(frame) and "hunter2" not in str(frame)
    sock.close()
    c.close()


@needs_tmux
def test_tui_session_queue_and_message_views(kumod, tmp_path, mx):
    k = start(kumod, tmp_path, mx)
    ids = inject(k.smtp_port, 3)
    probe = Client(k.console_port)
    probe.snapshot()
    assert wait_until(lambda: all_deferred(probe, ids), timeout=30, step=0.2)
    probe.close()
    s = smtp_open(k.smtp_port, ["EHLO tui.views", "MAIL FROM:<a@tui.views>"])
    t = Tmux("kc-test-views", [CONSOLE, "--ascii-only", f"127.0.0.1:{k.console_port}"])
    try:
        t.wait(lambda x: "CONNECTED" in x and "smtp_server" in x, "the tasks view")
        t.keys("/")
        t.keys("-l", "kind:smtp_server")
        t.keys("Enter")
        t.wait(lambda x: "Tasks (1)" in x, "the filtered tasks")
        t.keys("Enter")
        scr = t.wait(lambda x: "Transcript (latest" in x and "C> MAIL FROM:<a@tui.views>" in x,
                     "the session view")
        assert "<S 220 " in scr and "C> EHLO tui.views" in scr
        # a multi-line reply stays on one screen line
        assert "<S 250 mx.views.test Aloha tui.views | PIPELINING | " in scr
        assert "Envelope: MAIL FROM <a@tui.views>" in scr and "HELO tui.views" in scr
        t.keys("Escape")
        t.wait(lambda x: "Tasks (1)" in x, "back to the tasks")
        t.keys("Q")
        # queues sorted by count, largest first: the scheduled queue leads
        t.wait(lambda x: "Queues (" in x and QUEUE in x, "the queues view")
        t.keys("Enter")
        scr = t.wait(lambda x: "Queue %s: 3 messages" % QUEUE in x and ids[0] in x,
                     "the queue's messages")
        for i in ids:
            assert i in scr
        row = [l for l in scr.splitlines() if ids[0] in l][0]
        assert "scheduled" in row and DEFER in row and "sender0@example.com" in row
        t.keys("j", "Enter")
        scr = t.wait(lambda x: "Message %s" % ids[1] in x and "TransientFailure" in x,
                     "the message view")
        assert "From <sender1@example.com>" in scr and "Last error: " + DEFER in scr
        assert "Timeline (" in scr and "Reception" in scr
        t.keys("Escape")
        t.wait(lambda x: "Queue %s: 3 messages" % QUEUE in x, "back to the messages")
        t.keys("Escape")
        t.wait(lambda x: "Queues (" in x, "back to the queues")
        t.keys("q")
        time.sleep(0.5)
    finally:
        t.close()
        s.close()
