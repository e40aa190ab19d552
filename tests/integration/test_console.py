# SPDX-License-Identifier: Apache-2.0
"""kumod --tokio-console and kumo-console: the introspection protocol spoken by
a Python client (snapshot chunks, ticks, pause/resume, task details, bad
commands, thousands of tasks, a client that never reads), kumo-console --once
against live SMTP sessions, the TUI driven in tmux, recordings and replay,
configuration errors and the runtime/tokio log targets."""

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import REPO, free_port, run_kumod

TOOLS_BIN = os.environ.get("TOOLS_BIN") or os.path.join(REPO, "build")
CONSOLE = os.path.join(TOOLS_BIN, "kumo-console")
FRAME_MAX = 256 * 1024

POLICY = """local kumo = require('kumo')
kumo.on('init', function()
  kumo.start_esmtp_listener{ listen = '127.0.0.1:0', hostname = 'mx.test' }
end)
kumo.on('smtp_server_message_received', function(msg)
  msg:set_meta('queue', 'null')
end)
"""


def console_env(**extra):
    env = {"TOKIO_CONSOLE_BIND": "127.0.0.1:0", "TOKIO_CONSOLE_PUBLISH_INTERVAL": "100ms"}
    env.update(extra)
    return env


def start(kumod, **extra):
    k = kumod(POLICY, env=console_env(**extra), args=["--tokio-console"])
    k.wait_for("console listener on")
    k.console_port = k.listeners["console"][0][1]
    return k


class Client:
    """A protocol client: frames as dicts, commands as dicts."""

    def __init__(self, port, rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(10)
        self.f = self.sock.makefile("rb")
        self.max_line = 0

    def frame(self):
        line = self.f.readline()
        if not line:
            raise EOFError("server closed the connection")
        self.max_line = max(self.max_line, len(line))
        assert line.endswith(b"\n")
        return json.loads(line)

    def send(self, obj):
        self.sock.sendall((json.dumps(obj) + "\n").encode())

    def until(self, pred, what, timeout=10):
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            f = self.frame()
            seen.append(f.get("type"))
            if pred(f):
                return f
        pytest.fail(f"no {what} within {timeout}s; frame types seen: {seen[-20:]}")

    def snapshot(self):
        """hello + snapshot chunks: returns (hello, {id: task}, chunks)."""
        hello = self.frame()
        assert hello["type"] == "hello" and hello["v"] == 1 and hello["server"] == "kumod"
        tasks, chunks = {}, 0
        while True:
            f = self.frame()
            assert f["type"] == "snapshot", f
            assert f["chunk"] == chunks
            chunks += 1
            for t in f["tasks"]:
                tasks[t["id"]] = t
            if f["last"]:
                assert "loop" in f
                return hello, tasks, chunks

    def close(self):
        self.f.close()
        self.sock.close()


class Session:
    def __init__(self, sock, f):
        self.sock, self.f = sock, f

    def close(self):
        self.f.close()
        self.sock.close()


def smtp_open(port, steps):
    """An SMTP session left open after sending steps one by one."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    f = s.makefile("rb")
    assert f.readline().startswith(b"220")
    for line in steps:
        s.sendall(line.encode() + b"\r\n")
        while True:
            r = f.readline()
            assert r[:1] in (b"2", b"3"), r
            if r[3:4] == b" ":
                break
    return Session(s, f)


def run_console(*args, timeout=20):
    if not os.access(CONSOLE, os.X_OK):
        pytest.fail(f"{CONSOLE} is missing: run `make` first (or set TOOLS_BIN)")
    env = dict(os.environ, NO_COLOR="1")
    return subprocess.run([CONSOLE, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


# --- configuration ---------------------------------------------------------------


@pytest.mark.parametrize("var,value", [
    ("TOKIO_CONSOLE_RETENTION", "forever"),
    ("TOKIO_CONSOLE_PUBLISH_INTERVAL", "1000"),
    ("TOKIO_CONSOLE_PUBLISH_INTERVAL", "1ms"),
    ("TOKIO_CONSOLE_BIND", "nohost"),
    ("TOKIO_CONSOLE_RECORD_PATH", "/nonexistent/dir/rec.ndjson"),
])
def test_bad_console_variable_is_a_startup_error(tmp_path, var, value):
    policy = tmp_path / "p.lua"
    policy.write_text(POLICY)
    r = run_kumod(["--policy", str(policy), "--tokio-console"],
                  env={"TOKIO_CONSOLE_BIND": "127.0.0.1:0", var: value})
    assert r.returncode == 1
    assert var in r.stderr, r.stderr


def test_durations_people_type_are_accepted(kumod):
    k = start(kumod, TOKIO_CONSOLE_RETENTION="1h30m", TOKIO_CONSOLE_PUBLISH_INTERVAL="250ms")
    c = Client(k.console_port)
    hello, _, _ = c.snapshot()
    assert hello["publish_interval_ms"] == 250
    assert hello["retention_s"] == 5400
    c.close()


def test_without_the_flag_nothing_listens(kumod):
    k = kumod(POLICY, env=console_env())
    assert "console listener" not in k.stderr()


# --- protocol --------------------------------------------------------------------


def test_snapshot_then_ticks_with_new_changed_and_closed_tasks(kumod):
    k = start(kumod)
    c = Client(k.console_port)
    hello, tasks, _ = c.snapshot()
    kinds = {t["kind"] for t in tasks.values()}
    assert {"main", "listener", "console_server", "console_client"} <= kinds
    server = next(t for t in tasks.values() if t["kind"] == "console_server")
    assert server["location"].startswith("kumod/ctl/introspect.c:")
    u1 = c.until(lambda f: f["type"] == "update" and f["last"], "an update")
    u2 = c.until(lambda f: f["type"] == "update" and f["last"], "a second update")
    assert u2["now"] > u1["now"]
    assert u1["loop"]["iterations"] > 0 and "busy_ns" in u1["loop"] and "idle_ns" in u1["loop"]
    assert str(server["id"]) in u2["stats_update"]  # the server task polled: it changed
    s = smtp_open(k.smtp_port, ["EHLO client.test"])
    upd = c.until(lambda f: f["type"] == "update" and any(
        t["kind"] == "smtp_server" for t in f["new_tasks"]), "the SMTP session as a new task")
    sess = next(t for t in upd["new_tasks"] if t["kind"] == "smtp_server")
    assert sess["fields"]["peer"].startswith("127.0.0.1:")
    s.close()
    c.until(lambda f: f["type"] == "update" and sess["id"] in f["closed"], "the session close")
    c.close()


def test_pause_resume_and_task_details(kumod):
    k = start(kumod)
    c = Client(k.console_port)
    _, tasks, _ = c.snapshot()
    server = next(t for t in tasks.values() if t["kind"] == "console_server")
    c.send({"cmd": "pause"})
    c.until(lambda f: f["type"] == "state" and f["state"] == "paused", "the paused state")
    time.sleep(0.6)  # six ticks
    c.send({"cmd": "resume"})
    between = []
    c.until(lambda f: between.append(f["type"]) or f["type"] == "state", "the live state")
    assert between == ["state"], between  # no updates while paused
    c.until(lambda f: f["type"] == "snapshot" and f["chunk"] == 0, "a fresh snapshot")
    c.send({"cmd": "watch_task", "id": server["id"]})
    d = c.until(lambda f: f["type"] == "task_details" and f["poll_hist"]["count"] > 0,
                "task details with polls")
    assert d["id"] == server["id"]
    for h in ("poll_hist", "sched_hist"):
        assert len(d[h]["octaves"]) == 28 and "p99" in d[h]
    c.send({"cmd": "unwatch_task"})
    c.send({"cmd": "snapshot"})
    c.until(lambda f: f["type"] == "snapshot" and f["last"], "a requested snapshot")
    c.send({"cmd": "watch_task", "id": server["id"]})
    c.until(lambda f: f["type"] == "task_details", "details again")
    assert k.stop() == 0  # clean shutdown (and no leak under ASan) with a watcher connected
    c.close()


def test_bad_commands_get_error_frames(kumod):
    k = start(kumod)
    c = Client(k.console_port)
    c.snapshot()
    for bad, want in [(b"not json", "JSON object"), (b'{"cmd":"reboot"}', "unknown command"),
                      (b'{"cmd":"watch_task"}', "id"), (b'{"cmd":"watch_task","id":-3}', "id"),
                      (b'{"cmd":"watch_task","id":999999}', "no such task"),
                      (b'{"cmd":"pause"', "expected")]:
        c.sock.sendall(bad + b"\n")
        e = c.until(lambda f: f["type"] == "error", f"an error frame for {bad!r}")
        assert want in e["error"], (bad, e)
    c.send({"cmd": "pause"})  # the connection was kept
    c.until(lambda f: f["type"] == "state", "the paused state")
    c.sock.sendall(b"x" * 5000)  # no newline within the limit
    e = c.until(lambda f: f["type"] == "error", "an error for the oversized line")
    assert "too long" in e["error"]
    with pytest.raises(EOFError):
        while True:
            c.frame()
    k.wait_for("oversized command")
    assert k.running()


def open_close_sessions(port, n):
    for i in range(0, n, 200):
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(min(200, n - i))]
        for s in socks:
            s.close()


def test_thousands_of_tasks_arrive_in_bounded_chunks(kumod):
    k = start(kumod)
    open_close_sessions(k.smtp_port, 3000)  # closed sessions are retained (1h)
    deadline = time.monotonic() + 20
    while True:
        c = Client(k.console_port)
        _, tasks, chunks = c.snapshot()
        c.close()
        sess = [t for t in tasks.values() if t["kind"] == "smtp_server"]
        done = sum(1 for t in sess if t["stats"]["state"] == "done")
        if done >= 3000 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(sess) >= 3000 and done >= 3000
    assert chunks >= 3
    assert c.max_line <= FRAME_MAX


def test_a_client_that_never_reads_is_dropped_and_others_keep_updating(kumod):
    k = start(kumod)
    open_close_sessions(k.smtp_port, 3000)
    reader = Client(k.console_port)
    reader.snapshot()
    sloth = Client(k.console_port, rcvbuf=4096)
    deadline = time.monotonic() + 30
    dropped = False
    last_now = 0
    while time.monotonic() < deadline and not dropped:
        try:
            sloth.send({"cmd": "snapshot"})  # more output it will never read
        except OSError:
            pass
        u = reader.until(lambda f: f["type"] == "update" and f["last"], "an update")
        assert u["now"] > last_now
        last_now = u["now"]
        dropped = any("is not reading" in l and "client disconnected" in l for l in k.lines())
    assert dropped, k.stderr()[-3000:]
    assert k.running()
    reader.until(lambda f: f["type"] == "update" and f["last"], "an update after the drop")
    assert k.stop() == 0
    reader.close()
    sloth.close()


# --- kumo-console --once ---------------------------------------------------------


def test_once_json_shows_live_smtp_sessions_in_their_phase(kumod):
    k = start(kumod)
    a = smtp_open(k.smtp_port, [])
    b = smtp_open(k.smtp_port, ["EHLO b.test", "MAIL FROM:<a@b.test>"])
    c = smtp_open(k.smtp_port, ["EHLO c.test", "MAIL FROM:<a@c.test>", "RCPT TO:<x@mx.test>"])
    r = run_console("--once", "--json", f"127.0.0.1:{k.console_port}")
    assert r.returncode == 0, r.stderr
    state = json.loads(r.stdout)
    assert state["server"]["server"] == "kumod"
    sessions = {t["fields"]["peer"]: t for t in state["tasks"] if t["kind"] == "smtp_server"}
    # after the greeting the session waits for EHLO: phase Helo
    for sess, phase in [(a, "Helo"), (b, "Mail"), (c, "Rcpt")]:
        peer = "%s:%d" % sess.sock.getsockname()
        assert peer in sessions, (peer, list(sessions))
        t = sessions[peer]
        assert t["phase"] == phase, t
        assert t["state"] == "idle" and t["wait"] == "peer_read"
        assert t["total_ns"] >= t["busy_ns"] + t["idle_ns"] - 1000
    table = run_console("--once", f"127.0.0.1:{k.console_port}")
    assert table.returncode == 0
    # columns sized to content: every Name/Kind/Phase cell whole, located by the header
    lines = table.stdout.split("\n\n")[0].splitlines()
    head = lines[0]
    cols = ["ID", "State", "Name", "Kind", "Phase"]
    at = {col: head.index(" %s " % col) + 1 for col in cols}
    at["end"] = head.index(" Total ") + 1 - len("    ")  # Total is right-aligned in 9
    cols.append("end")
    cells = [{col: l[at[col]:at[cols[i + 1]]].strip() for i, col in enumerate(cols[:-1])}
             for l in lines[1:]]
    by_id = {int(cell["ID"]): cell for cell in cells}
    for t in sessions.values():  # still in the same phase in this second snapshot
        if t["id"] in by_id:
            cell = by_id[t["id"]]
            assert (cell["Name"], cell["Kind"], cell["Phase"]) == \
                (t["name"], t["kind"], t["phase"]), cell
    rcpt = sessions["%s:%d" % c.sock.getsockname()]
    assert by_id[rcpt["id"]]["Phase"] == "Rcpt" and by_id[rcpt["id"]]["State"] == "IDLE"
    for sess in (a, b, c):
        sess.close()


def test_once_against_nothing_fails_cleanly():
    port = free_port()
    t0 = time.monotonic()
    r = run_console("--once", f"127.0.0.1:{port}")  # default --timeout 10s
    assert r.returncode == 1
    assert time.monotonic() - t0 < 5, "a refused connection must fail at once"
    assert r.stderr == f"kumo-console: cannot connect to 127.0.0.1:{port}: connection refused\n"


def test_once_against_a_silent_server_times_out():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = run_console("--once", "--timeout", "1500ms", f"127.0.0.1:{s.getsockname()[1]}")
    assert r.returncode == 1
    assert r.stderr.startswith("kumo-console: no state from"), r.stderr


# --- recordings and replay -------------------------------------------------------


def record(kumod, tmp_path):
    rec = tmp_path / "rec.ndjson"
    k = start(kumod, TOKIO_CONSOLE_RECORD_PATH=str(rec))
    s = smtp_open(k.smtp_port, ["EHLO rec.test", "MAIL FROM:<a@rec.test>"])
    time.sleep(0.5)
    s.close()
    time.sleep(0.3)
    assert k.stop() == 0
    # the start and stop lines end with what they say: no stray empty string
    msgs = [l.split("kumod::console: ", 1)[1] for l in k.lines() if "console recording" in l]
    assert msgs == ['console recording "%s" started' % rec,
                    'console recording "%s" stopped: shutdown' % rec], msgs
    return rec


def test_recording_replays_to_the_recorded_state(kumod, tmp_path):
    rec = record(kumod, tmp_path)
    lines = rec.read_text().splitlines()
    assert json.loads(lines[0])["v"] == 1
    assert json.loads(lines[1])["type"] == "hello"
    assert sum(1 for l in lines if '"type":"update"' in l) >= 3
    r = run_console("--replay", str(rec), "--once", "--json", "--retain-for", "none")
    assert r.returncode == 0, r.stderr
    state = json.loads(r.stdout)
    sess = [t for t in state["tasks"] if t["kind"] == "smtp_server"]
    assert len(sess) == 1 and sess[0]["state"] == "done" and sess[0]["polls"] >= 2


def test_corrupt_recording_stops_naming_the_line(kumod, tmp_path):
    rec = record(kumod, tmp_path)
    lines = rec.read_text().splitlines(keepends=True)
    bad = tmp_path / "bad.ndjson"
    bad.write_text("".join(lines[:4]) + lines[4][: len(lines[4]) // 2] + "\n" + "".join(lines[5:]))
    r = run_console("--replay", str(bad), "--once")
    assert r.returncode == 1 and "line 5" in r.stderr, r.stderr
    cut = tmp_path / "cut.ndjson"
    cut.write_text("".join(lines[:6]) + lines[6][:10])
    r = run_console("--replay", str(cut), "--once")
    assert r.returncode == 1 and "line 7" in r.stderr and "truncated" in r.stderr, r.stderr
    r = run_console("--replay", str(tmp_path / "missing.ndjson"), "--once")
    assert r.returncode == 1


QUEUE_RECORDING = [
    {"v": 1, "type": "recording", "server": "kumod"},
    {"type": "hello", "v": 1, "server": "kumod", "version": "test", "pid": 1, "now": 1000},
    {"type": "snapshot", "seq": 1, "now": 1000, "chunk": 0, "last": True, "tasks": [
        {"id": 1, "kind": "main", "name": "kumod", "parent": 0, "location": "main.c:1",
         "fields": {}, "stats": {"state": "idle", "phase": "Running", "created_at": 500}}],
     "queues": [{"kind": "scheduled", "name": "example.com", "count": 7, "next_due_ms": 5},
                {"kind": "ready", "name": "unspecified->mx.example.com@smtp", "count": 3,
                 "connections": 1, "connection_limit": 32, "delivered": 10, "transfail": 2,
                 "failed": 1}],
     "loop": {"iterations": 1}},
    {"type": "update", "seq": 2, "now": 2000, "part": 0, "last": True, "new_tasks": [],
     "stats_update": {}, "closed": [], "queues": [
         {"kind": "scheduled", "name": "example.com", "count": 9}],
     "queues_removed": [{"kind": "ready", "name": "unspecified->mx.example.com@smtp"}],
     "loop": {"iterations": 2}},
]


def test_once_table_sizes_columns_to_content(tmp_path):
    """Long names, kinds, phases and queue names are printed whole, not cut; a task in
    a callback is RUNNING, the TUI's word (not BUSY)."""
    name, kind, phase = "n" * 50 + "-end", "k" * 30 + "-end", "Suspended, holding 12345 (end)"
    qname = "campaign:tenant@" + "d" * 60 + ".example"
    frames = json.loads(json.dumps(QUEUE_RECORDING[:3]))
    frames[2]["tasks"].append({"id": 2, "kind": kind, "name": name, "parent": 1,
                               "location": "x.c:1", "fields": {},
                               "stats": {"state": "running", "phase": phase,
                                         "created_at": 600}})
    frames[2]["queues"][0]["name"] = qname
    rec = tmp_path / "long.ndjson"
    rec.write_text("".join(json.dumps(f) + "\n" for f in frames))
    r = run_console("--replay", str(rec), "--once", "--retain-for", "none")
    assert r.returncode == 0, r.stderr
    tasks, queues = r.stdout.split("\n\n")
    lines = tasks.splitlines()
    cols = ["Name", "Kind", "Phase"]
    at = {col: lines[0].index(" %s " % col) + 1 for col in cols}
    row = next(l for l in lines[1:] if l.split()[0] == "2")  # ID column first (no Warn)
    assert row.split()[1] == "RUNNING", row
    assert row[at["Name"]:at["Kind"]].strip() == name, row
    assert row[at["Kind"]:at["Phase"]].strip() == kind, row
    assert row[at["Phase"]:].startswith(phase + " "), row
    assert [l.split()[:2] for l in queues.splitlines()[1:]] == [
        ["scheduled", qname], ["ready", "unspecified->mx.example.com@smtp"]], queues


def test_queues_from_a_recording(tmp_path):
    rec = tmp_path / "q.ndjson"
    rec.write_text("".join(json.dumps(f) + "\n" for f in QUEUE_RECORDING[:3]))
    state = json.loads(run_console("--replay", str(rec), "--once", "--json").stdout)
    assert {q["name"]: q["count"] for q in state["queues"]} == {
        "example.com": 7, "unspecified->mx.example.com@smtp": 3}
    rec.write_text("".join(json.dumps(f) + "\n" for f in QUEUE_RECORDING))
    state = json.loads(run_console("--replay", str(rec), "--once", "--json").stdout)
    assert {q["name"]: q["count"] for q in state["queues"]} == {"example.com": 9}


# --- the TUI in tmux -------------------------------------------------------------

needs_tmux = pytest.mark.skipif(not shutil.which("tmux"), reason="tmux not installed")


class Tmux:
    def __init__(self, name, cmd):
        self.name = name
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)
        subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "160", "-y", "48",
                        "env", "NO_COLOR=1", "TERM=xterm-256color", *cmd], check=True)

    def screen(self):
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name],
                              capture_output=True, text=True).stdout

    def keys(self, *keys):
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def wait(self, pred, what, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.screen()
            if pred(s):
                return s
            time.sleep(0.2)
        pytest.fail(f"screen never showed {what}:\n{self.screen()}")

    def close(self):
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


@needs_tmux
def test_tui_tasks_sort_filter_details_queues_help(kumod):
    k = start(kumod)
    s = smtp_open(k.smtp_port, ["EHLO tui.test", "MAIL FROM:<a@tui.test>"])
    t = Tmux("kc-test-tui", [CONSOLE, "--ascii-only", f"127.0.0.1:{k.console_port}"])
    try:
        scr = t.wait(lambda x: "CONNECTED" in x and "smtp_server" in x, "the tasks view")
        assert "Tasks (" in scr and "ID^" in scr
        for col in ("Warn", "State", "Name", "Kind", "Phase", "Total", "Busy", "Sched", "Idle",
                    "Polls", "Fields"):
            assert col in scr
        t.keys("l")
        t.wait(lambda x: "State^" in x, "sorting by State")
        t.keys("i")
        t.wait(lambda x: "Statev" in x, "inverted sort")
        t.keys("/")
        t.keys("-l", "kind:smtp_server")
        t.keys("Enter")
        scr = t.wait(lambda x: "filter: kind:smtp_server" in x and "Tasks (1)" in x,
                     "the filter")
        assert "console_server" not in scr and "Mail" in scr
        t.keys("Enter")
        scr = t.wait(lambda x: "Poll times" in x and "Scheduled times" in x, "task details")
        assert "smtp_server" in scr and "Phase: Mail" in scr and "peer=" in scr
        t.keys("Escape")
        t.wait(lambda x: "Tasks (1)" in x, "back to the tasks")
        t.keys("Q")
        t.wait(lambda x: "Queues (" in x, "the queues view")
        t.keys("L")
        t.wait(lambda x: "Iterations/s" in x and "Busy" in x, "the loop view")
        t.keys("?")
        t.wait(lambda x: "Columns:" in x, "the help")
        t.keys("t", " ")
        t.wait(lambda x: "PAUSED" in x, "the paused header")
        t.keys(" ")
        t.wait(lambda x: "PAUSED" not in x, "resumed")
        t.keys("q")
        time.sleep(0.5)
    finally:
        t.close()
        s.close()


@needs_tmux
def test_tui_reconnects_with_backoff(kumod):
    port = free_port()
    t = Tmux("kc-test-reconnect", [CONSOLE, f"127.0.0.1:{port}"])
    try:
        t.wait(lambda x: "RECONNECTING IN" in x, "the reconnecting header")
    finally:
        t.close()


@needs_tmux
def test_tui_replays_a_recording(kumod, tmp_path):
    rec = record(kumod, tmp_path)
    t = Tmux("kc-test-replay", [CONSOLE, "--ascii-only", "--retain-for", "none", "--replay",
                                str(rec)])
    try:
        t.keys(" ")  # pause at once, then step
        scr = t.wait(lambda x: "REPLAY" in x and "PAUSED" in x, "a paused replay")
        t.keys(".")
        t.wait(lambda x: "REPLAY" in x and x != scr, "a step")
        t.keys(" ", "+", "+", "+")
        scr = t.wait(lambda x: "END" in x and "smtp_server" in x, "the end of the recording", 30)
        # the header bar: REPLAY once, and the last frame is frame N of N (the recording's
        # first line is its header, not a frame)
        head = scr.splitlines()[0]
        assert head.count("REPLAY") == 1, head
        frames = sum(1 for l in open(rec)) - 1
        m = re.search(r" frame (\d+)/(\d+) END", head)
        assert m and (int(m.group(1)), int(m.group(2))) == (frames, frames), (head, frames)
    finally:
        t.close()


# --- log targets -----------------------------------------------------------------


def test_runtime_and_tokio_log_targets(kumod):
    k = kumod(POLICY, env={"KUMOD_LOG": "runtime=trace,info"})
    smtp_open(k.smtp_port, ["EHLO log.test"]).close()
    k.wait_for("runtime::task: close id=")
    assert any("runtime::task: spawn id=" in l for l in k.lines())
    # an SMTP session's wakes are self-wakes (input read inside its poll): counted
    # in each poll line, not traced on their own
    polls = [l for l in k.lines() if "runtime::task: poll id=" in l]
    assert polls and max(int(re.search(r" wakes=(\d+) ", l).group(1)) for l in polls) >= 1, polls
    k2 = kumod(POLICY, env={"KUMOD_LOG": "tokio=trace,info"})
    smtp_open(k2.smtp_port, ["EHLO log.test"]).close()
    k2.wait_for("tokio::task: close id=")
    assert not any("runtime::task" in l for l in k2.lines())
    k3 = kumod(POLICY, env={"KUMOD_LOG": "tokio=trace,runtime=trace,info"})
    smtp_open(k3.smtp_port, ["EHLO log.test"]).close()
    k3.wait_for("runtime::task: close id=")
    assert not any("tokio::task" in l for l in k3.lines())  # one line per event


@needs_tmux
def test_tui_queues_view_sorts(tmp_path):
    rec = tmp_path / "q.ndjson"
    rec.write_text("".join(json.dumps(f) + "\n" for f in QUEUE_RECORDING[:3]))
    t = Tmux("kc-test-queues", [CONSOLE, "--ascii-only", "--replay", str(rec)])
    try:
        t.keys("Q")
        scr = t.wait(lambda x: "Queues (2)" in x and "example.com" in x, "the queues view")
        lines = [l for l in scr.splitlines() if "example.com" in l]
        assert lines[0].split()[0] == "scheduled"  # count 7 first (count, inverted)
        assert "1/32" in lines[1] and "10" in lines[1]
        # the name column is as wide as the longest name, one space to Count
        longest = "unspecified->mx.example.com@smtp"
        head = next(l for l in scr.splitlines() if l.lstrip().startswith("Kind"))
        assert head.index("Count") + len("Count") == 1 + 9 + 1 + len(longest) + 1 + 8
        assert lines[1][11:11 + len(longest)] == longest
        assert lines[1][11 + len(longest):].split()[0] == "3"
        t.keys("i")
        scr = t.wait(lambda x: "sort: count\n" in x or "sort: count " in x and
                     "(inverted)" not in x, "the inverted queue sort")
        lines = [l for l in scr.splitlines() if "example.com" in l]
        assert lines[0].split()[0] == "ready"
    finally:
        t.close()


@needs_tmux
def test_loop_reports_busy_poll(kumod):
    """kumo.set_busy_poll shows in the LOOP object and the loop view, so a
    loop that polls instead of sleeping explains its busy fraction."""
    k = kumod(POLICY.replace("kumo.on('init', function()",
                             "kumo.on('init', function()\n  kumo.set_busy_poll('200us')"),
              env=console_env(), args=["--tokio-console"])
    k.wait_for("console listener on")
    port = k.listeners["console"][0][1]
    smtp_open(k.smtp_port, ["EHLO bp.test", "NOOP"]).close()
    c = Client(port)
    c.snapshot()
    u = c.until(lambda f: f["type"] == "update" and f["last"]
                and f["loop"]["busy_poll_windows"] > 0, "a LOOP with busy-poll windows")
    assert u["loop"]["busy_poll_us"] == 200
    # every window spins its whole budget after its last input
    assert u["loop"]["busy_poll_tail_ns"] >= 200000 * u["loop"]["busy_poll_windows"]
    c.close()
    t = Tmux("kc-test-bp", [CONSOLE, "--ascii-only", f"127.0.0.1:{port}"])
    try:
        t.wait(lambda x: "CONNECTED" in x, "the tasks view")
        t.keys("L")
        scr = t.wait(lambda x: "Busy poll 200us" in x, "the busy-poll line")
        assert "windows" in scr and "Busy includes polling" in scr
    finally:
        t.close()


def test_loop_without_busy_poll_says_off(kumod):
    k = start(kumod)
    c = Client(k.console_port)
    c.snapshot()
    u = c.until(lambda f: f["type"] == "update" and f["last"], "an update")
    assert (u["loop"]["busy_poll_us"], u["loop"]["busy_poll_windows"]) == (0, 0)
    c.close()


def test_once_prints_one_document_when_frames_follow_the_snapshot_in_one_read(kumod):
    """--once stops at the end of the snapshot even when later frames came in
    the same read (it used to print the state once per such frame)."""
    k = start(kumod)
    c = Client(k.console_port)
    frames = []
    while True:
        f = c.frame()
        frames.append(f)
        if f["type"] == "snapshot" and f.get("last"):
            break
    frames.append(c.until(lambda f: f["type"] == "update", "an update"))
    c.close()
    blob = b"".join(json.dumps(f).encode() + b"\n" for f in frames)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)

        def serve():
            conn, _ = srv.accept()
            with conn:
                conn.sendall(blob)  # every frame in one write
                time.sleep(2)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        r = run_console("--once", "--json", "127.0.0.1:%d" % srv.getsockname()[1])
        t.join(5)
    assert r.returncode == 0, r.stderr
    state = json.loads(r.stdout)  # exactly one document
    assert state["server"]["server"] == "kumod"
