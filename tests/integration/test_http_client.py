# SPDX-License-Identifier: Apache-2.0
"""kumo.http against a real HTTP receiver (Python http.server, threaded).

The policy's smtp_server_message_received handler runs one scenario chosen by
the message's Subject and reports what it saw in the 550 reply text as
`RESULT <json>` (or `ERROR <message>`), which the test parses. The receiver
records every request it got. The latency test checks the loop never blocks:
a handler waiting 3 s on a slow server must not delay another session.
"""

import json
import os
import smtplib
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class Receiver:
    """A threaded HTTP(S) server on loopback that records requests.

    Paths: /status/N answers N; /slow/S sleeps S seconds then 200; /hang
    never answers (until stop); /echo answers 200 with the request as JSON;
    anything else uses .handler(req) -> (status, headers, body) if set."""

    def __init__(self, tls_ctx=None, port=0):
        self.requests = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.handler = None
        recv = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                req = {"method": self.command, "path": self.path,
                       "headers": {k.lower(): v for k, v in self.headers.items()},
                       "body": body.decode("utf-8", "replace"),
                       "peer_port": self.client_address[1]}
                with recv.lock:
                    recv.requests.append(req)
                status, headers, out = 200, {}, b"ok"
                parts = self.path.split("/")
                if self.path.startswith("/status/"):
                    status, out = int(parts[2]), f"status {parts[2]}".encode()
                elif self.path.startswith("/slow/"):
                    time.sleep(float(parts[2]))
                    out = b"slow done"
                elif self.path == "/hang":
                    recv.stopping.wait(30)
                    return
                elif self.path == "/echo":
                    out = json.dumps(req).encode()
                    headers = {"Content-Type": "application/json", "X-Multi": "a"}
                elif recv.handler:
                    status, headers, out = recv.handler(req)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if self.path == "/echo":
                    self.send_header("X-Multi", "b")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_any

        self.server = ThreadingHTTPServer(("127.0.0.1", port), H)
        self.server.daemon_threads = True
        if tls_ctx:
            self.server.socket = tls_ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def got(self):
        with self.lock:
            return list(self.requests)


@pytest.fixture
def receiver():
    started = []

    def start(tls_ctx=None):
        r = Receiver(tls_ctx)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


POLICY = r"""
kumo.on('init', function()
  kumo.start_esmtp_listener { listen = '127.0.0.1:0' }
end)
local BASE = os.getenv 'RECV'
local client = kumo.http.build_client { user_agent = 'kumod-test/1', timeout = '10s' }
local function report(resp)
  return {
    status = resp:status_code(),
    reason = resp:status_reason(),
    success = resp:status_is_success(),
    client_error = resp:status_is_client_error(),
    server_error = resp:status_is_server_error(),
    ctype = resp:headers()['Content-Type'],
    multi = resp:headers()['x-multi'],
    length = resp:content_length(),
    text = resp:text(),
  }
end
local SCEN = {
  get = function()
    return report(client:get(BASE .. '/echo'):header('X-One', '1'):send())
  end,
  post_json = function()
    local req = client:post(BASE .. '/echo')
    req:headers { ['Content-Type'] = 'application/json', ['X-Two'] = '2' }
    req:bearer_auth 'sekrit'
    req:body(kumo.json_encode { hello = 'world' })
    return report(req:send())
  end,
  put_basic = function()
    return report(client:put(BASE .. '/echo'):basic_auth('user', 'pa:ss'):body('x'):send())
  end,
  form = function()
    return report(client:post(BASE .. '/echo'):form_url_encoded({ a = 'b c&d' }):send())
  end,
  not_found = function()
    return report(client:get(BASE .. '/status/404'):send())
  end,
  server_error = function()
    return report(client:get(BASE .. '/status/500'):send())
  end,
  timeout = function()
    return report(client:get(BASE .. '/hang'):timeout('1s'):send())
  end,
  slow = function()
    return report(client:get(BASE .. '/slow/3'):send())
  end,
  refused = function()
    return report(client:get('http://127.0.0.1:1/'):send())
  end,
  twice = function()
    local a = report(client:get(BASE .. '/echo'):send())
    local b = report(client:get(BASE .. '/echo'):send())
    return { a = a.text, b = b.text }
  end,
  insecure = function()
    local c = kumo.http.build_client { accept_invalid_certs = true }
    return report(c:get(BASE .. '/echo'):send())
  end,
}
kumo.on('smtp_server_message_received', function(msg)
  local what = msg:get_first_named_header_value 'Subject'
  if what == 'fast' then
    msg:set_meta('queue', 'null')
    return
  end
  local ok, res = pcall(SCEN[what])
  if ok then
    kumo.reject(550, 'RESULT ' .. kumo.json_encode(res))
  end
  kumo.reject(550, 'ERROR ' .. tostring(res))
end)
"""


def scenario(port, name, timeout=20):
    """Sends one message with Subject name; returns ('RESULT', dict) or ('ERROR', text)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as s:
        s.ehlo("test")
        try:
            s.sendmail("a@example.com", ["b@example.com"],
                       f"Subject: {name}\r\n\r\nbody\r\n")
        except smtplib.SMTPDataError as e:
            assert e.smtp_code == 550, e
            text = e.smtp_error.decode()
            kind, _, rest = text.partition(" ")
            return (kind, json.loads(rest) if kind == "RESULT" else rest)
    return ("ACCEPTED", None)


def start_kumod(kumod, base, env=None):
    e = {"RECV": base}
    e.update(env or {})
    return kumod(POLICY, env=e)


def test_get_post_put_headers_and_auth(kumod, receiver):
    r = receiver()
    k = start_kumod(kumod, f"http://127.0.0.1:{r.port}")
    kind, res = scenario(k.smtp_port, "get")
    assert kind == "RESULT", res
    assert res["status"] == 200 and res["reason"] == "OK" and res["success"] is True
    assert res["ctype"] == "application/json"
    assert res["multi"] == "a, b"  # repeated headers joined, case-insensitive lookup
    echo = json.loads(res["text"])
    assert res["length"] == len(res["text"].encode())
    assert echo["method"] == "GET" and echo["path"] == "/echo"
    assert echo["headers"]["x-one"] == "1"
    assert echo["headers"]["user-agent"] == "kumod-test/1"

    kind, res = scenario(k.smtp_port, "post_json")
    echo = json.loads(res["text"])
    assert echo["method"] == "POST"
    assert echo["headers"]["content-type"] == "application/json"
    assert echo["headers"]["x-two"] == "2"
    assert echo["headers"]["authorization"] == "Bearer sekrit"
    assert json.loads(echo["body"]) == {"hello": "world"}

    kind, res = scenario(k.smtp_port, "put_basic")
    echo = json.loads(res["text"])
    assert echo["method"] == "PUT" and echo["body"] == "x"
    import base64
    assert echo["headers"]["authorization"] == "Basic " + base64.b64encode(b"user:pa:ss").decode()

    kind, res = scenario(k.smtp_port, "form")
    echo = json.loads(res["text"])
    assert echo["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert echo["body"] == "a=b+c%26d"


def test_error_statuses_are_responses(kumod, receiver):
    r = receiver()
    k = start_kumod(kumod, f"http://127.0.0.1:{r.port}")
    kind, res = scenario(k.smtp_port, "not_found")
    assert kind == "RESULT"
    assert (res["status"], res["reason"], res["success"], res["client_error"]) == \
        (404, "Not Found", False, True)
    assert res["text"] == "status 404"
    kind, res = scenario(k.smtp_port, "server_error")
    assert (res["status"], res["server_error"], res["success"]) == (500, True, False)


def test_timeout_and_refused_raise(kumod, receiver):
    r = receiver()
    k = start_kumod(kumod, f"http://127.0.0.1:{r.port}")
    t0 = time.monotonic()
    kind, res = scenario(k.smtp_port, "timeout")
    took = time.monotonic() - t0
    assert kind == "ERROR" and "kumo.http: request failed" in res and "timed out" in res.lower()
    assert 0.9 <= took < 5, took
    kind, res = scenario(k.smtp_port, "refused")
    assert kind == "ERROR" and "kumo.http: request failed" in res
    assert "connect" in res.lower()


def test_connection_reused(kumod, receiver):
    r = receiver()
    k = start_kumod(kumod, f"http://127.0.0.1:{r.port}")
    kind, res = scenario(k.smtp_port, "twice")
    assert kind == "RESULT"
    a, b = json.loads(res["a"]), json.loads(res["b"])
    assert a["peer_port"] == b["peer_port"], "second request should reuse the connection"


def test_slow_server_does_not_delay_other_sessions(kumod, receiver):
    r = receiver()
    k = start_kumod(kumod, f"http://127.0.0.1:{r.port}")
    out = {}

    def session_a():
        t0 = time.monotonic()
        out["a"] = scenario(k.smtp_port, "slow")
        out["a_took"] = time.monotonic() - t0

    ta = threading.Thread(target=session_a)
    ta.start()
    # wait until the slow request reached the receiver: session A now waits
    deadline = time.monotonic() + 10
    while not any(q["path"] == "/slow/3" for q in r.got()):
        assert time.monotonic() < deadline, "slow request never arrived"
        time.sleep(0.02)
    lat = []
    with smtplib.SMTP("127.0.0.1", k.smtp_port, timeout=10) as s:
        for _ in range(5):
            t0 = time.monotonic()
            code, _ = s.noop()
            lat.append(time.monotonic() - t0)
            assert code == 250
        t0 = time.monotonic()
        s.sendmail("a@example.com", ["b@example.com"], "Subject: fast\r\n\r\nx\r\n")
        lat.append(time.monotonic() - t0)
    b_done = time.monotonic()
    ta.join(20)
    assert out["a"][0] == "RESULT" and out["a"][1]["text"] == "slow done", out
    assert out["a_took"] >= 2.9
    # session B finished while A still waited, each reply well under the delay
    assert max(lat) < 0.5, lat
    assert not ta.is_alive() and b_done < time.monotonic()


def make_ca(tmp_path):
    """A test CA and a server certificate for 127.0.0.1 / localhost signed by it,
    plus an unrelated self-signed certificate."""
    def run(*args):
        subprocess.run(["openssl", *args], check=True, cwd=tmp_path, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=kumod test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr",
        "-subj", "/CN=localhost")
    (tmp_path / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "self.key", "-out",
        "self.pem", "-days", "2", "-subj", "/CN=localhost", "-addext",
        "subjectAltName=IP:127.0.0.1")


def tls_ctx(tmp_path, cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(tmp_path / cert), str(tmp_path / key))
    return ctx


def test_tls_verified_with_test_ca(kumod, receiver, tmp_path):
    make_ca(tmp_path)
    r = receiver(tls_ctx(tmp_path, "srv.pem", "srv.key"))
    k = start_kumod(kumod, f"https://127.0.0.1:{r.port}",
                    env={"SSL_CERT_FILE": str(tmp_path / "ca.pem")})
    kind, res = scenario(k.smtp_port, "get")
    assert kind == "RESULT" and res["status"] == 200, res


def test_tls_self_signed_fails_clearly(kumod, receiver, tmp_path):
    make_ca(tmp_path)
    r = receiver(tls_ctx(tmp_path, "self.pem", "self.key"))
    k = start_kumod(kumod, f"https://127.0.0.1:{r.port}",
                    env={"SSL_CERT_FILE": str(tmp_path / "ca.pem")})
    kind, res = scenario(k.smtp_port, "get")
    assert kind == "ERROR" and "kumo.http: request failed" in res
    assert "certificate" in res.lower(), res
    assert not any(q["path"] == "/echo" for q in r.got())
    # accept_invalid_certs = true is KumoMTA's explicit opt-out
    kind, res = scenario(k.smtp_port, "insecure")
    assert kind == "RESULT" and res["status"] == 200, res


def test_waiting_where_the_event_cannot_wait_is_refused(kumod, receiver, tmp_path):
    r = receiver()
    policy = f"""
kumo.on('init', function()
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0' }}
end)
local client = kumo.http.build_client {{}}
kumo.on('smtp_server_data_command', function(conn_meta)
  local ok, err = pcall(function() return client:get('http://127.0.0.1:{r.port}/echo'):send() end)
  kumo.reject(550, 'ERROR ' .. tostring(err))
end)
"""
    k = kumod(policy)
    with smtplib.SMTP("127.0.0.1", k.smtp_port, timeout=10) as s:
        s.ehlo("test")
        assert s.mail("a@example.com")[0] == 250
        assert s.rcpt("b@example.com")[0] == 250
        code, msg = s.docmd("DATA")
    assert code == 550
    text = msg.decode()
    assert "request:send: cannot wait for I/O in event 'smtp_server_data_command'" in text, text
    assert r.got() == []


def test_unknown_client_option_refused(kumod, tmp_path):
    from conftest import run_kumod
    p = tmp_path / "p.lua"
    p.write_text("kumo.http.build_client { read_timout = '1s' }\n")
    out = run_kumod(["--validate", "--policy", str(p)], cwd=str(tmp_path))
    assert out.returncode != 0
    assert "kumo.http.build_client: unknown key 'read_timout'" in out.stdout + out.stderr
