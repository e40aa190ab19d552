# SPDX-License-Identifier: Apache-2.0
"""traffic-gen against real peers: the kumod sink (exact counts on the sink
side, smart-sink failures), Postfix's smtp-sink (a foreign server, throttle),
small Python stub servers (421 every Nth message, STARTTLS, garbage, HTTP
inject), and bad options."""

import json
import os
import re
import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import REPO, free_port, run_on_pty

TOOLS_BIN = os.environ.get("TOOLS_BIN") or os.path.join(REPO, "build")
TG = os.path.join(TOOLS_BIN, "traffic-gen")
SMTP_SINK = "/usr/sbin/smtp-sink"


def require_tg():
    if not os.access(TG, os.X_OK):
        pytest.fail(f"{TG} is missing: run `make build/traffic-gen` first")


def run_tg(*args, timeout=60, env=None):
    require_tg()
    e = dict(os.environ)
    e.pop("KUMOD_LOG", None)
    e.pop("TRAFFIC_GEN_LOG", None)
    e.update(env or {})
    return subprocess.run([TG, *args], capture_output=True, text=True, timeout=timeout, env=e,
                          stdin=subprocess.DEVNULL)


def run_json(*args, **kw):
    p = run_tg(*args, "--json", **kw)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    assert lines, f"no JSON report; rc={p.returncode} stdout={p.stdout!r} stderr={p.stderr!r}"
    return p, json.loads(lines[-1])


# --- peers ---------------------------------------------------------------------


@pytest.fixture
def smtp_sink():
    """Postfix smtp-sink on a free port (pipelining on; no TLS)."""
    if not os.access(SMTP_SINK, os.X_OK):
        pytest.skip("Postfix smtp-sink not installed")
    started = []

    def start(*extra):
        port = free_port()
        args = [SMTP_SINK]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        proc = subprocess.Popen([*args, *extra, f"127.0.0.1:{port}", "1000"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started.append(proc)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return port
            except OSError:
                time.sleep(0.05)
        pytest.fail("smtp-sink did not start")

    yield start
    for p in started:
        p.terminate()
        p.wait(5)


class StubSMTP(socketserver.ThreadingTCPServer):
    """A tiny ESMTP server: counts accepted messages, optionally answers 421
    to every Nth MAIL, offers STARTTLS with a given context, or sends garbage."""
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, fail_every=0, tls_ctx=None, garbage=False):
        super().__init__(("127.0.0.1", 0), StubHandler)
        self.fail_every = fail_every
        self.tls_ctx = tls_ctx
        self.garbage = garbage
        self.lock = threading.Lock()
        self.mails = 0
        self.accepted = 0
        self.tls_messages = 0
        self.connections = 0
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self):
        self.shutdown()
        self.server_close()


class StubHandler(socketserver.StreamRequestHandler):
    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tls = False

    def send(self, line):
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self):
        srv = self.server
        with srv.lock:
            srv.connections += 1
        if srv.garbage:
            self.send("this is not smtp")
            time.sleep(0.5)
            return
        self.send("220 stub ESMTP")
        while True:
            line = self.rfile.readline()
            if not line:
                return
            cmd = line.decode("latin-1").strip().upper()
            if cmd.startswith("EHLO"):
                caps = ["250-stub", "250-PIPELINING"]
                if srv.tls_ctx and not self.tls:
                    caps.append("250-STARTTLS")
                caps.append("250 8BITMIME")
                self.wfile.write(("\r\n".join(caps) + "\r\n").encode())
                self.wfile.flush()
            elif cmd == "STARTTLS" and srv.tls_ctx and not self.tls:
                self.send("220 go ahead")
                tls = srv.tls_ctx.wrap_socket(self.connection, server_side=True)
                self.connection = tls
                self.rfile = tls.makefile("rb")
                self.wfile = tls.makefile("wb")
                self.tls = True
            elif cmd.startswith("MAIL"):
                with srv.lock:
                    srv.mails += 1
                    n = srv.mails
                if srv.fail_every and n % srv.fail_every == 0:
                    self.send("421 4.3.2 stub says go away")
                    return
                self.send("250 ok")
            elif cmd.startswith("RCPT"):
                self.send("250 ok")
            elif cmd == "DATA":
                self.send("354 go")
                while True:
                    l = self.rfile.readline()
                    if not l or l == b".\r\n":
                        break
                if not l:
                    return
                with srv.lock:
                    srv.accepted += 1
                    if self.tls:
                        srv.tls_messages += 1
                self.send("250 2.0.0 queued")
            elif cmd == "RSET":
                self.send("250 ok")
            elif cmd == "QUIT":
                self.send("221 bye")
                return
            else:
                self.send("500 what")


@pytest.fixture
def stub():
    servers = []

    def start(**kw):
        s = StubSMTP(**kw)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def sink_policy():
    with open(os.path.join(REPO, "sink", "sink.lua")) as f:
        return f.read()


@pytest.fixture
def sink(kumod, tmp_path):
    """The kumod sink capturing accepted messages into tmp_path/capture/new."""
    capture = tmp_path / "capture"
    k = kumod(sink_policy(), env={"KUMO_SINK_PORT": "0", "KUMO_SINK_CAPTURE_DIR": str(capture)},
              policy_name="sink.lua")
    k.capture = capture
    return k


def captured(capture):
    d = capture / "new"
    return sorted(d.iterdir()) if d.exists() else []


# --- bad input -------------------------------------------------------------------


@pytest.mark.parametrize("args,needle", [
    (["--concurrency", "abc"], "--concurrency"),
    (["--concurrency", "0"], "--concurrency"),
    (["--duration", "-5"], "--duration"),
    (["--message-count", "1x"], "--message-count"),
    (["--body-size", "12parsecs"], "--body-size"),
    (["--throttle", "fast"], "--throttle"),
    (["--throttle", "10/fortnight"], "--throttle"),
    (["--domain", "bad domain"], "--domain"),
    (["--domain", "a.com:x"], "--domain"),
    (["--header", "NoColon"], "--header"),
    (["--http-batch-size", "0"], "--http-batch-size"),
    (["--bogus"], "--bogus"),
    (["--target"], "--target"),
    (["--target", "nohostport:"], "--target"),
    (["stray"], "stray"),
    (["--body-size", "1kb", "--body-file", "/etc/hostname"], "mutually exclusive"),
])
def test_bad_options_exit_2_with_one_line(args, needle):
    p = run_tg(*args, timeout=10)
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert needle in lines[0], lines[0]
    assert p.stdout == ""


def test_missing_body_file_is_usage_error(tmp_path):
    p = run_tg("--body-file", str(tmp_path / "nope"), "--target", "127.0.0.1:1", timeout=10)
    assert p.returncode == 2
    assert "--body-file" in p.stderr


def test_help():
    p = run_tg("--help", timeout=10)
    assert p.returncode == 0
    for opt in ("--target", "--concurrency", "--duration", "--message-count", "--throttle",
                "--body-size", "--body-file", "--domain", "--domain-suffix", "--header",
                "--starttls", "--keep-going", "--http", "--http-batch-size", "--json"):
        assert opt in p.stdout


def test_unreachable_target_fails_fast():
    port = free_port()
    t0 = time.monotonic()
    p = run_tg("--target", f"127.0.0.1:{port}", "--message-count", "10", timeout=20)
    assert time.monotonic() - t0 < 10
    assert p.returncode == 1
    assert f"cannot connect to 127.0.0.1:{port}" in p.stderr
    assert "refused" in p.stderr.lower()


def test_garbage_server_fails_without_hang(stub):
    s = stub(garbage=True)
    p = run_tg("--target", f"127.0.0.1:{s.port}", "--message-count", "5", "--concurrency", "1",
               "--timeout", "5", timeout=30)
    assert p.returncode == 1
    assert "garbage" in p.stderr or "failed" in p.stderr, p.stderr


def test_silent_server_times_out(tmp_path):
    """A server that accepts but never greets: the banner wait is bounded."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    try:
        t0 = time.monotonic()
        p = run_tg("--target", f"127.0.0.1:{ls.getsockname()[1]}", "--message-count", "1",
                   "--concurrency", "1", "--timeout", "1", timeout=60)
        assert p.returncode == 1
        assert time.monotonic() - t0 < 30
    finally:
        ls.close()


# --- counts against the kumod sink -------------------------------------------------


def test_exact_count_against_kumod_sink(sink):
    p = run_tg("--target", f"127.0.0.1:{sink.smtp_port}", "--message-count", "1000",
               "--concurrency", "20", timeout=120)
    assert p.returncode == 0, p.stderr + p.stdout
    lines = p.stdout.splitlines()
    i = lines.index("All clients finished")
    assert re.fullmatch(r"sent 1000 messages, failed 0 over \S+\.", lines[i + 1]), lines
    assert lines[i + 2] == "replies: 250=1000", lines
    deadline = time.monotonic() + 10
    while len(captured(sink.capture)) < 1000 and time.monotonic() < deadline:
        time.sleep(0.1)
    files = captured(sink.capture)
    assert len(files) == 1000
    msg = files[0].read_bytes()
    assert b"X-Mailer: KumoMta traffic-gen" in msg
    assert re.search(rb"To: <user-\d+@(aol|gmail|hotmail|yahoo)\.com\.mx-sink\.wezfurlong\.org>",
                     msg)
    assert b"From: <noreply@" in msg
    assert re.search(rb"Message-Id: <[0-9a-f]{32}@", msg)


def test_smart_sink_failures_are_counted(sink):
    target = f"127.0.0.1:{sink.smtp_port}"
    # without --keep-going each connection stops at its first failure
    p, r = run_json("--target", target, "--message-count", "20", "--concurrency", "2",
                    "--recipient-local", "permfail")
    assert p.returncode == 1
    assert r["sent"] == 0 and r["failed"] == 2 and r["replies"] == {"550": 2}, r
    # the same as text, piped: one stderr line per failure (no blank lines), and the summary
    # breaks the replies down by code
    p = run_tg("--target", target, "--message-count", "20", "--concurrency", "2",
               "--recipient-local", "permfail")
    assert p.returncode == 1
    err = [l for l in p.stderr.splitlines() if not l.startswith("Generated body of size")]
    assert len(err) == 2 and all(re.fullmatch(
        r"traffic-gen: client \d+: message failed: 550 5\.7\.1 permfail requested", l)
        for l in err), p.stderr
    assert "replies: 550=2" in p.stdout.splitlines(), p.stdout
    # with --keep-going every message is attempted and the exit status is 0
    p, r = run_json("--target", target, "--message-count", "20", "--concurrency", "2",
                    "--recipient-local", "tempfail", "--keep-going")
    assert p.returncode == 0, p.stderr
    assert r["sent"] == 0 and r["failed"] == 20 and r["replies"] == {"451": 20}, r
    assert captured(sink.capture) == []


def test_domains_weights_suffix_and_headers(sink):
    p = run_tg("--target", f"127.0.0.1:{sink.smtp_port}", "--message-count", "30",
               "--domain", "example.net:3", "--domain", "example.org:0", "--domain-suffix", "",
               "--header", "X-Test: yes", "--body-size", "2kb", timeout=60)
    assert p.returncode == 0, p.stderr
    assert "Generated body of size 2048" in p.stderr
    deadline = time.monotonic() + 10
    while len(captured(sink.capture)) < 30 and time.monotonic() < deadline:
        time.sleep(0.1)
    files = captured(sink.capture)
    assert len(files) == 30
    for f in files:
        m = f.read_bytes()
        assert b"@example.net>" in m and b"example.org" not in m
        assert b"X-Test: yes\r\n" in m


# --- foreign server, throttle, reconnect, TLS ------------------------------------------


def test_against_postfix_smtp_sink(smtp_sink):
    port = smtp_sink()
    p = run_tg("--target", f"127.0.0.1:{port}", "--message-count", "2000", "--concurrency", "10",
               "--body-size", "10kb", timeout=120)
    assert p.returncode == 0, p.stderr
    assert "sent 2000 messages, failed 0" in p.stdout
    assert re.search(r"transaction latency: avg=\S+ min=\S+ max=\S+ p50=\S+ p75=\S+ p90=\S+ "
                     r"p95=\S+ p99=\S+ p99\.9=\S+", p.stdout)
    assert re.search(r"overall rate: [\d,]+ msgs/s, [\d,]+ msgs/minute, [\d,]+ msgs/hour",
                     p.stdout)


def test_duration_live_lines_when_piped(smtp_sink):
    port = smtp_sink()
    p = run_tg("--target", f"127.0.0.1:{port}", "--duration", "3", "--concurrency", "4",
               timeout=60)
    assert p.returncode == 0, p.stderr
    live = [l for l in p.stdout.splitlines() if l.startswith("current rate: ")]
    assert 2 <= len(live) <= 4, p.stdout
    assert "\x1b[K" not in p.stdout and "\r" not in p.stdout
    assert re.match(r"current rate: [\d,]+ msgs/s, [\d,]+ msgs/minute, [\d,]+ msgs/hour "
                    r"\(sent=[\d,]+, failed=[\d,]+, clients=\d+\)", live[0])
    assert "Deadline reached, stopping" in p.stdout


def test_summary_on_its_own_line_on_a_terminal(smtp_sink):
    """On a terminal the progress line is redrawn in place; the summary starts a new line."""
    port = smtp_sink()
    rc, out = run_on_pty([TG, "--target", f"127.0.0.1:{port}", "--duration", "3",
                          "--concurrency", "2"])
    assert rc == 0, out
    # the screen's lines: each \r starts the line over
    screen = [l.rsplit("\r", 1)[-1].replace("\x1b[K", "")
              for l in out.decode().replace("\r\n", "\n").split("\n")]
    sent = [l for l in screen if " messages, failed " in l]
    assert len(sent) == 1 and sent[0].startswith("sent "), screen
    assert "Deadline reached, stopping" in screen, screen


def test_throttle_holds_rate(smtp_sink):
    port = smtp_sink()
    p, r = run_json("--target", f"127.0.0.1:{port}", "--duration", "4", "--throttle", "50/s",
                    "--concurrency", "5")
    assert p.returncode == 0, p.stderr
    # 50/s for 4 s: 200 (+1 for the slot at t=0); allow 10 %
    assert 180 <= r["sent"] <= 221, r


def test_reconnect_on_421_without_counting_failures(stub):
    s = stub(fail_every=7)
    p, r = run_json("--target", f"127.0.0.1:{s.port}", "--message-count", "100",
                    "--concurrency", "3")
    assert p.returncode == 0, p.stderr
    assert r["sent"] == 100 and r["failed"] == 0
    assert r["reconnects"] >= 10
    assert s.accepted == 100
    assert s.connections >= 11


def test_starttls(stub, tmp_path):
    key, crt = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(crt), "-days", "1", "-subj", "/CN=stub"],
                   check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(crt), str(key))
    s = stub(tls_ctx=ctx)
    p = run_tg("--target", f"127.0.0.1:{s.port}", "--message-count", "50", "--concurrency", "2",
               "--starttls", timeout=60, env={"TRAFFIC_GEN_LOG": "kumod::smtp_client=debug"})
    assert p.returncode == 0, p.stderr
    assert s.accepted == 50 and s.tls_messages == 50
    assert "STARTTLS ok=1" in p.stderr
    # without --starttls the same server gets plaintext
    p = run_tg("--target", f"127.0.0.1:{s.port}", "--message-count", "5", timeout=60)
    assert p.returncode == 0
    assert s.accepted == 55 and s.tls_messages == 50


def test_starttls_not_offered_continues_in_plaintext(smtp_sink):
    port = smtp_sink()
    p = run_tg("--target", f"127.0.0.1:{port}", "--message-count", "10", "--starttls",
               timeout=60)
    assert p.returncode == 0, p.stderr
    assert "sent 10 messages" in p.stdout


# --- HTTP inject -----------------------------------------------------------------------


class InjectStub(ThreadingHTTPServer):
    daemon_threads = True


def test_http_inject_counts_recipients():
    """kumod's HTTP listener does not exist yet: a stub of /api/inject/v1."""
    state = {"requests": 0, "recipients": 0, "paths": set(), "bad": 0}
    lock = threading.Lock()

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            req = json.loads(body)
            n = len(req["recipients"])
            ok = (self.headers.get("Content-Type") == "application/json"
                  and req["envelope_sender"].startswith("noreply@")
                  and "X-Mailer: KumoMta traffic-gen\r\n" in req["content"])
            with lock:
                state["requests"] += 1
                state["recipients"] += n
                state["paths"].add(self.path)
                state["bad"] += 0 if ok else 1
            out = json.dumps({"success_count": n, "fail_count": 0, "failed_recipients": [],
                              "errors": []}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    srv = InjectStub(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        p, r = run_json("--http", "--target", f"http://127.0.0.1:{srv.server_address[1]}",
                        "--message-count", "95", "--http-batch-size", "10", "--concurrency", "3")
        assert p.returncode == 0, p.stderr
        assert r["mode"] == "http"
        assert r["sent"] == 95 and r["failed"] == 0
        assert state["recipients"] == 95
        assert state["requests"] == 10
        assert state["paths"] == {"/api/inject/v1"}
        assert state["bad"] == 0
    finally:
        srv.shutdown()
        srv.server_close()


def test_http_unreachable():
    p = run_tg("--http", "--target", f"http://127.0.0.1:{free_port()}", "--message-count", "3",
               timeout=20)
    assert p.returncode == 1
    assert "cannot connect" in p.stderr


def test_tracepoints_filter_env(smtp_sink):
    port = smtp_sink()
    p = run_tg("--target", f"127.0.0.1:{port}", "--message-count", "3", "--concurrency", "1",
               timeout=30, env={"TRAFFIC_GEN_LOG": "kumod::smtp_client=trace,traffic_gen=debug"})
    assert p.returncode == 0
    assert "state Mail -> Rcpt" in p.stderr or "Mail -> " in p.stderr, p.stderr
    assert "transaction ok" in p.stderr
