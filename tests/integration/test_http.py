# SPDX-License-Identifier: Apache-2.0
"""The HTTP listener: /metrics (checked with prometheus_client's parser and
for the seed's exact lines), liveness, admin endpoints, injection, access
control, limits and bad input, and kcli end to end. Clients: http.client,
raw sockets, curl and kcli."""

import base64
import glob
import gzip
import http.client
import json
import os
import signal
import smtplib
import socket
import subprocess
import time
import zlib

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import KUMOD_BIN, REPO, free_port, run_kumod

TOOLS_BIN = os.environ.get("TOOLS_BIN") or os.path.dirname(KUMOD_BIN)
KCLI = os.path.join(TOOLS_BIN, "kcli")
SINK_LUA = os.path.join(REPO, "sink", "sink.lua")

HAVE_SPOOL = os.path.exists(os.path.join(REPO, "kumod", "spool", "spool.c"))
HAVE_DNS = os.path.exists(os.path.join(REPO, "kumod", "dns", "resolver.c"))
needs_spool = pytest.mark.skipif(not HAVE_SPOOL, reason="kumod/spool/spool.c not landed yet")
needs_delivery = pytest.mark.skipif(not (HAVE_SPOOL and HAVE_DNS),
                                    reason="spool.c and dns/resolver.c not landed yet")

BASIC = """
local kumo = require 'kumo'
kumo.on('init', function()
  {spool}
  {init}
  kumo.start_esmtp_listener{{ listen = '127.0.0.1:0', relay_hosts = {{ '127.0.0.1' }} }}
  kumo.start_http_listener{{ listen = '127.0.0.1:0' {http} }}
end)
{extra}
"""


def spool_lua(var):
    return ("kumo.define_spool{ name = 'data', path = '%s/data' }\n"
            "  kumo.define_spool{ name = 'meta', path = '%s/meta' }" % (var, var))


def start(kumod, http="", extra="", var=None, env=None, init=""):
    text = BASIC.format(spool=spool_lua(var) if var else "", http=http, extra=extra, init=init)
    k = kumod(text, env=env)
    k.http_port = k.listeners["http"][0][1]
    return k


class Resp:
    def __init__(self, r):
        self.status = r.status
        self.headers = {k.lower(): v for k, v in r.getheaders()}
        self.body = r.read()

    def json(self):
        return json.loads(self.body)


def req(port, method, path, body=None, headers=None, conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    h = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
        h.setdefault("Content-Type", "application/json")
    c.request(method, path, body=body, headers=h)
    r = Resp(c.getresponse())
    if conn is None:
        c.close()
    return r


def raw(port, data, read_until_close=True, timeout=5):
    """Sends raw bytes; returns everything the server sent until it closed."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
            if not read_until_close and b"\r\n\r\n" in out:
                break
    finally:
        s.close()
    return out


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def wait_until(fn, timeout=20, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(step)
    return fn()


# --- listener -----------------------------------------------------------------------


def test_listener_line_and_defaults(kumod):
    k = start(kumod)
    assert "http listener on 127.0.0.1:%d" % k.http_port in k.stderr()
    r = req(k.http_port, "GET", "/api/check-liveness/v1")
    assert (r.status, r.body) == (200, b"OK\n")
    assert k.stop() == 0


@pytest.mark.parametrize("cfg,why", [
    ("bogus = 1", "start_http_listener: unknown key 'bogus'"),
    ("listen = 'nowhere'", "invalid listen address 'nowhere'"),
    ("trusted_hosts = { 'not-a-cidr' }", "invalid CIDR 'not-a-cidr'"),
    ("request_body_limit = -1", "request_body_limit: must not be negative"),
    ("use_tls = 'yes'", "use_tls: expected a boolean"),
])
def test_bad_listener_config_fails_to_start(tmp_path, cfg, why):
    p = tmp_path / "p.lua"
    p.write_text("local kumo = require 'kumo'\nkumo.on('init', function() "
                 "kumo.start_http_listener{ %s } end)\n" % cfg)
    r = run_kumod(["--policy", str(p)])
    assert r.returncode == 1, r
    assert why in r.stderr, r.stderr


def test_port_in_use_fails(kumod, tmp_path):
    k = start(kumod)
    p = tmp_path / "p2.lua"
    p.write_text("local kumo = require 'kumo'\nkumo.on('init', function() "
                 "kumo.start_http_listener{ listen = '127.0.0.1:%d' } end)\n" % k.http_port)
    r = run_kumod(["--policy", str(p)])
    assert r.returncode == 1
    assert "start_http_listener: cannot listen on 127.0.0.1:%d" % k.http_port in r.stderr


def test_tls_listener(kumod):
    k = kumod(BASIC.format(spool="", http=", use_tls = true", extra="", init=""))
    port = k.listeners["https"][0][1]
    out = subprocess.run(["curl", "-sk", "https://127.0.0.1:%d/metrics" % port],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert "# TYPE connection_count gauge" in out.stdout
    # plaintext on the TLS port gets nowhere and does not hurt the listener
    raw(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert k.running()
    assert k.stop() == 0


# --- /metrics -------------------------------------------------------------------------


def test_metrics_exposition_parses(kumod):
    k = start(kumod)
    with smtplib.SMTP("127.0.0.1", k.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        r = req(k.http_port, "GET", "/metrics")
        assert r.status == 200
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = r.body.decode()
        fams = families(text)
        assert fams["connection_count"].type == "gauge"
        got = {tuple(sorted(x.labels.items())): x.value for x in fams["connection_count"].samples}
        assert got[(("service", "esmtp_listener"),)] == 1
        # the seed's exact shape, HELP text = the name
        assert ("# HELP connection_count connection_count\n"
                "# TYPE connection_count gauge\n"
                'connection_count{service="esmtp_listener"} 1\n') in text
        for line in text.splitlines():
            if line.startswith("# HELP "):
                _, _, name, help_ = line.split(" ", 3)
                assert help_ == name, line
        assert fams["total_connection_count"].type == "counter"
        assert fams["memory_usage"].samples[0].value > 1e6
    assert k.stop() == 0


def test_metrics_json_shape(kumod):
    k = start(kumod)
    r = req(k.http_port, "GET", "/metrics.json")
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    j = r.json()
    cc = j["connection_count"]
    assert cc["help"] == "connection_count" and cc["type"] == "gauge"
    assert cc["value"]["service"]["esmtp_listener"] == 0
    assert isinstance(j["memory_usage"]["value"], (int, float))
    assert j["total_connection_count"]["value"]["service"]["http_listener"] >= 1
    assert k.stop() == 0


QUEUE_POLICY = """
kumo.on('get_queue_config', function(domain)
  return kumo.make_queue_config{{ retry_interval = '1h',
    protocol = {{ smtp = {{ mx_list = {{ '127.0.0.1:{port}' }} }} }} }}
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path{{ prohibited_hosts = {{}}, enable_tls = 'Disabled',
                                 connect_timeout = '2s' }}
end)
"""


def closed_port():
    return free_port()


def inject(port, rcpt, metadata=None):
    """Queues one message through /api/inject/v1 (the SMTP DATA path is
    exercised by the relay tests)."""
    r = {"email": rcpt}
    if metadata:
        r["metadata"] = metadata
    got = req(port, "POST", "/api/inject/v1",
              {"envelope_sender": "a@example.com", "content": "Subject: t\r\n\r\nbody\r\n",
               "recipients": [r]})
    assert got.status == 200 and got.json()["success_count"] == 1, got.body


@needs_spool
def test_metrics_seed_sample_after_traffic(kumod, tmp_path):
    """A message for gmail.com whose route is down waits in its scheduled
    queue; with one SMTP client connected (EHLO, real session) the seed's
    sample comes out literally (site form smtp_client:<site>)."""
    dead = closed_port()
    k = start(kumod, var=tmp_path / "spool", extra=QUEUE_POLICY.format(port=dead))
    inject(k.http_port, "someone@gmail.com")
    site = "mx_list:127.0.0.1:%d" % dead

    def settled():
        text = req(k.http_port, "GET", "/metrics").body.decode()
        ok = 'delayed_count{queue="gmail.com"} 1\n' in text
        if HAVE_DNS:  # the route resolves: a ready queue with no connection exists
            ok = ok and 'connection_count{service="smtp_client:%s"} 0' % site in text
        return ok and text

    assert wait_until(settled), req(k.http_port, "GET", "/metrics").body.decode()
    with smtplib.SMTP("127.0.0.1", k.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        text = req(k.http_port, "GET", "/metrics").body.decode()
    client = ('connection_count{service="smtp_client:%s"} 0\n' % site) if HAVE_DNS else ""
    seed = ("# HELP connection_count connection_count\n"
            "# TYPE connection_count gauge\n"
            'connection_count{service="esmtp_listener"} 1\n'
            + client +
            "# HELP delayed_count delayed_count\n"
            "# TYPE delayed_count gauge\n"
            'delayed_count{queue="gmail.com"} 1\n')
    assert seed in text, text
    fams = families(text)
    assert [s.value for s in fams["scheduled_count"].samples] == [1]
    assert fams["scheduled_count_total"].samples[0].value == 1
    if HAVE_DNS:
        tf = {s.labels["service"]: s.value for s in fams["total_messages_transfail"].samples}
        assert tf["smtp_client:" + site] >= 1
    assert k.stop() == 0


@needs_spool
def test_metrics_label_values_escaped(kumod, tmp_path):
    k = start(kumod, var=tmp_path / "spool", extra=QUEUE_POLICY.format(port=closed_port()))
    weird = 'we"ird\\queue'
    inject(k.http_port, "x@example.com", {"queue": weird})
    text = wait_until(lambda: (lambda t: 'we\\"ird\\\\queue' in t and t)(
        req(k.http_port, "GET", "/metrics").body.decode()))
    assert 'delayed_count{queue="we\\"ird\\\\queue"} 1' in text, text
    labels = [s.labels["queue"] for s in families(text)["delayed_count"].samples]
    assert weird in labels
    assert k.stop() == 0


# --- liveness and shutdown ----------------------------------------------------------------


def test_liveness_503_while_shutting_down(kumod):
    k = start(kumod)
    c = http.client.HTTPConnection("127.0.0.1", k.http_port, timeout=10)
    assert req(k.http_port, "GET", "/api/check-liveness/v1", conn=c).status == 200
    s = smtplib.SMTP("127.0.0.1", k.smtp_port, timeout=10)
    s.ehlo("client.test")
    s.mail("a@example.com")
    s.rcpt("b@example.com")
    assert s.docmd("DATA")[0] == 354
    s.send(b"Subject: x\r\n\r\npartial")  # a DATA in progress keeps shutdown waiting
    os.kill(k.pid, signal.SIGTERM)
    k.wait_for("shutdown requested")
    r = req(k.http_port, "GET", "/api/check-liveness/v1", conn=c)
    assert r.status == 503 and r.json() == {"error": "shutting down"}
    assert r.headers.get("connection") == "close"
    r = req(k.http_port, "POST", "/api/inject/v1",
            {"envelope_sender": "a@b.example", "content": "x",
             "recipients": [{"email": "b@b.example"}]})
    assert r.status == 503
    s.close()
    assert k.stop() == 0


# --- admin endpoints --------------------------------------------------------------------------


def test_set_log_filter(kumod):
    k = start(kumod)
    p = "/api/admin/set_diagnostic_log_filter/v1"
    r = req(k.http_port, "POST", p, {"filter": "kumod=debug"})
    assert r.status == 200 and r.json() == {"filter": "kumod=debug"}
    # now debug lines of kumod::http appear
    req(k.http_port, "GET", "/metrics")
    k.wait_for('request GET "/metrics"')
    k.wait_for("response status=200 duration_us=")
    k.wait_for('admin set_diagnostic_log_filter by "trusted 127.0.0.1"')
    r = req(k.http_port, "POST", p, {"filter": "kumod=loud"})
    assert r.status == 400 and "kumod=loud" in r.json()["error"]
    assert req(k.http_port, "POST", p, {"filter": 5}).status == 422
    r = req(k.http_port, "POST", p, {"filter": "info", "extra": 1})
    assert r.status == 422 and "'extra'" in r.json()["error"]
    r = req(k.http_port, "POST", p, "{not json", {"Content-Type": "application/json"})
    assert r.status == 400 and "invalid JSON" in r.json()["error"]
    r = req(k.http_port, "POST", p, "[1]", {"Content-Type": "application/json"})
    assert r.status == 422
    r = req(k.http_port, "POST", p, '{"filter":"info"}', {"Content-Type": "text/plain"})
    assert r.status == 415
    r = req(k.http_port, "GET", p)
    assert r.status == 405 and r.headers["allow"] == "POST"
    assert k.stop() == 0


def test_queue_inspection_endpoints(kumod):
    k = start(kumod)
    r = req(k.http_port, "GET", "/api/admin/ready-q-states/v1")
    assert r.status == 200 and r.json()["states_by_ready_queue"] == {}
    r = req(k.http_port, "GET", "/api/admin/inspect-sched-q/v1?queue_name=nope.example")
    assert r.status == 404 and "nope.example" in r.json()["error"]
    r = req(k.http_port, "GET", "/api/admin/inspect-sched-q/v1?queue_name=%zz")
    assert r.status == 400
    r = req(k.http_port, "GET", "/api/admin/inspect-sched-q/v1")
    assert r.status == 200 and r.json()["scheduled_queues"] == {}
    assert req(k.http_port, "POST", "/api/admin/ready-q-states/v1", {}).status == 405
    assert req(k.http_port, "GET", "/api/nothing/v1").status == 404
    assert req(k.http_port, "GET", "/../../etc/passwd").status in (400, 404)
    assert k.stop() == 0


# --- HTTP framing and limits -----------------------------------------------------------------


def test_keep_alive_and_pipelining(kumod):
    k = start(kumod)
    c = http.client.HTTPConnection("127.0.0.1", k.http_port, timeout=10)
    for _ in range(3):
        assert req(k.http_port, "GET", "/api/check-liveness/v1", conn=c).status == 200
    sock = c.sock
    assert req(k.http_port, "GET", "/metrics", conn=c).status == 200
    assert c.sock is sock  # the same connection served every request
    c.close()
    two = (b"GET /api/check-liveness/v1 HTTP/1.1\r\nHost: localhost\r\n\r\n"
           b"GET /nope HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    out = raw(k.http_port, two)
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert out.count(b"HTTP/1.1 ") == 2 and b"HTTP/1.1 404 Not Found" in out
    # HTTP/1.0 without Host: answered, then closed
    out = raw(k.http_port, b"GET /api/check-liveness/v1 HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in out
    assert k.stop() == 0


@pytest.mark.parametrize("data,status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\nHost localhost\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\n\r\n", 400),  # 1.1 without Host
    (b"GET /metrics HTTP/1.1\r\nHost: evil.example\r\n\r\n", 403),
    (b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", 431),
    (b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414),
    (b"POST /api/inject/v1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 99999999\r\n\r\n", 413),
    (b"POST /api/inject/v1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: -1\r\n\r\n", 400),
])
def test_malformed_requests_get_4xx_and_listener_survives(kumod, data, status):
    k = start(kumod)
    out = raw(k.http_port, data)
    assert out.startswith(b"HTTP/1.1 %d " % status), out[:200]
    head, _, body = out.partition(b"\r\n\r\n")
    assert "error" in json.loads(body), body
    assert req(k.http_port, "GET", "/api/check-liveness/v1").status == 200
    assert k.stop() == 0


def test_request_body_limits_and_compression(kumod):
    k = start(kumod, http=", request_body_limit = 1024")
    p = "/api/admin/set_diagnostic_log_filter/v1"
    good = json.dumps({"filter": "kumod=info"}).encode()
    big = json.dumps({"filter": "kumod=info", "pad": "x" * 2000}).encode()
    r = req(k.http_port, "POST", p, big, {"Content-Type": "application/json"})
    assert r.status == 413 and "request_body_limit" in r.json()["error"]
    # chunked and over the limit
    data = (b"POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" % p.encode())
    data += b"".join(b"%x\r\n%s\r\n" % (len(big[i:i + 500]), big[i:i + 500])
                     for i in range(0, len(big), 500)) + b"0\r\n\r\n"
    assert raw(k.http_port, data).startswith(b"HTTP/1.1 413 ")
    # gzip and deflate bodies are decompressed
    for enc, body in (("gzip", gzip.compress(good)), ("deflate", zlib.compress(good)),
                      ("deflate", zlib.compress(good)[2:-4])):
        r = req(k.http_port, "POST", p, body,
                {"Content-Type": "application/json", "Content-Encoding": enc})
        assert r.status == 200, (enc, r.body)
    # small when compressed, over the limit once decompressed: 413
    bomb = gzip.compress(json.dumps({"filter": "info", "pad": " " * 100000}).encode())
    assert len(bomb) < 1024
    r = req(k.http_port, "POST", p, bomb,
            {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status == 413 and "decompressed" in r.json()["error"]
    r = req(k.http_port, "POST", p, b"not gzip",
            {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status == 400
    r = req(k.http_port, "POST", p, good,
            {"Content-Type": "application/json", "Content-Encoding": "br"})
    assert r.status == 415 and "br" in r.json()["error"]
    assert k.stop() == 0


def test_curl_expect_continue(kumod):
    k = start(kumod)
    body = json.dumps({"filter": "kumod=info", "x": "y" * 3000})
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
                          "-H", "Content-Type: application/json", "--data-binary", body,
                          "http://127.0.0.1:%d/api/admin/set_diagnostic_log_filter/v1"
                          % k.http_port], capture_output=True, text=True, timeout=20)
    code, took = out.stdout.split()
    assert code == "422"  # unknown field 'x', after 100-continue without curl's 1 s wait
    assert float(took) < 0.9
    assert k.stop() == 0


# --- access control ---------------------------------------------------------------------


AUTH_POLICY = """
kumo.on('http_server_validate_auth_basic', function(user, password)
  if user == 'boom' then error('validator exploded') end
  return user == 'admin' and password == 's3cr:et'
end)
"""


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(
        ("%s:%s" % (user, password)).encode()).decode()}


def test_untrusted_peer_needs_basic_auth(kumod):
    k = start(kumod, http=", trusted_hosts = {}", extra=AUTH_POLICY)
    r = req(k.http_port, "GET", "/metrics")
    assert r.status == 401 and r.headers["www-authenticate"].startswith("Basic")
    assert req(k.http_port, "GET", "/metrics", headers=basic("admin", "nope")).status == 401
    r = req(k.http_port, "GET", "/metrics", headers=basic("admin", "s3cr:et"))
    assert r.status == 200 and b"connection_count" in r.body
    r = req(k.http_port, "GET", "/metrics", headers=basic("boom", "x"))
    assert r.status == 500 and r.json() == {"error": "try again later"}
    # Bearer is a supported scheme now (test_untrusted_peer_bearer_auth); a
    # malformed Bearer token or another scheme is still 400
    for bad in ("Basic !!!!", "Bearer a b", "Digest abc",
                "Basic " + base64.b64encode(b"nocolon").decode()):
        r = req(k.http_port, "GET", "/metrics", headers={"Authorization": bad})
        assert r.status == 400, bad
        assert r.json()["error"] == "Malformed or unsupported Authorization header"
    # X-Forwarded-For does not make a peer trusted
    r = req(k.http_port, "GET", "/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
    assert r.status == 401
    # liveness stays open
    assert req(k.http_port, "GET", "/api/check-liveness/v1").status == 200
    # kcli passes credentials from the endpoint URL
    out = subprocess.run([KCLI, "--endpoint", "http://admin:s3cr%%3Aet@127.0.0.1:%d" % k.http_port,
                          "set-log-filter", "kumod=info"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    k.wait_for('denied status=401')
    assert k.stop() == 0


def test_no_validator_means_untrusted_is_refused(kumod):
    k = start(kumod, http=", trusted_hosts = { '10.0.0.0/8' }")
    assert req(k.http_port, "GET", "/metrics", headers=basic("a", "b")).status == 401
    assert k.stop() == 0


BEARER_POLICY = """
kumo.on('http_server_validate_auth_bearer', function(token)
  if token == 'explode' then error('bearer validator exploded') end
  return token == 'tok-3n.x_~+/=='
end)
"""


def bearer(token):
    return {"Authorization": "Bearer " + token}


def test_untrusted_peer_bearer_auth(kumod):
    k = start(kumod, http=", trusted_hosts = { '10.0.0.0/8' }", extra=BEARER_POLICY,
              env={"KUMOD_LOG": "info,kumod::http=debug"})
    p = "/api/admin/set_diagnostic_log_filter/v1"
    r = req(k.http_port, "POST", p, {"filter": "kumod::http=debug"},
            headers=bearer("tok-3n.x_~+/=="))
    assert r.status == 200, r.body
    k.wait_for("auth method=bearer result=ok")
    k.wait_for('admin set_diagnostic_log_filter by "bearer token"')
    r = req(k.http_port, "GET", "/metrics", headers=bearer("wrong"))
    assert r.status == 401 and r.json() == {"error": "invalid credentials"}
    assert "Bearer" in r.headers["www-authenticate"]
    k.wait_for("auth method=bearer result=denied")
    # the scheme name is case-insensitive
    assert req(k.http_port, "GET", "/metrics", headers={
        "Authorization": "bearer tok-3n.x_~+/=="}).status == 200
    # an error in the validator: 500 as for Basic, and the listener keeps serving
    r = req(k.http_port, "GET", "/metrics", headers=bearer("explode"))
    assert r.status == 500 and r.json() == {"error": "try again later"}
    k.wait_for("auth method=bearer result=error")
    # Basic credentials without a Basic validator are refused
    assert req(k.http_port, "GET", "/metrics", headers=basic("a", "b")).status == 401
    assert req(k.http_port, "GET", "/metrics", headers=bearer("tok-3n.x_~+/==")).status == 200
    assert k.stop() == 0


def test_bearer_without_validator_is_refused(kumod):
    k = start(kumod, http=", trusted_hosts = { '10.0.0.0/8' }", extra=AUTH_POLICY)
    r = req(k.http_port, "GET", "/metrics", headers=bearer("anything"))
    assert r.status == 401 and r.json() == {"error": "invalid credentials"}
    assert r.headers["www-authenticate"] == 'Basic realm="kumod", Bearer realm="kumod"'
    assert req(k.http_port, "GET", "/metrics", headers=basic("admin", "s3cr:et")).status == 200
    assert k.stop() == 0


def test_error_texts_with_client_bytes_are_json(kumod):
    # a path or header value that is not UTF-8 still gives a JSON error body
    k = start(kumod)
    out = raw(k.http_port, b"GET /\xff\xfe HTTP/1.1\r\nHost: localhost\r\n"
              b"Connection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 404 "), out[:100]
    assert json.loads(out.partition(b"\r\n\r\n")[2])["error"].startswith("no such endpoint")
    r = req(k.http_port, "POST", "/api/admin/set_diagnostic_log_filter/v1", b"{}",
            {"Content-Type": "application/json", "Content-Encoding": "br\xe9"})
    assert r.status == 415 and "br\\xe9" in r.json()["error"], r.body
    assert k.stop() == 0


# --- injection ----------------------------------------------------------------------------


INJECT_POLICY = """
kumo.on('http_message_generated', function(msg)
  local user = msg:recipient().user
  if user == 'reject' then kumo.reject(550, '5.7.1 not this one') end
  if user == 'oops' then error('handler bug') end
  if msg:recipient().domain == 'null.example' then msg:set_meta('queue', 'null') end
end)
"""


def inject_body(**kw):
    b = {"envelope_sender": "sender@example.com",
         "content": "Subject: hello {{ name }}\r\n\r\nHi {{name}}, from {{ org }}.\r\n",
         "recipients": [{"email": "a@example.com", "substitutions": {"name": "Alice"}}],
         "substitutions": {"org": "Kumo"}}
    b.update(kw)
    return b


@pytest.mark.parametrize("body,status,needle", [
    ({"envelope_sender": "a@b.example"}, 422, "content"),
    (inject_body(bogus=1), 422, "unknown field 'bogus'"),
    (inject_body(envelope_sender="not an address"), 422, "envelope_sender"),
    (inject_body(recipients=[]), 422, "recipients"),
    (inject_body(recipients=[{"email": "ok@example.com"}, {"email": "bad@@x"}]), 422,
     "recipients[1].email"),
    (inject_body(recipients=[{"email": "ok@example.com", "extra": 1}]), 422, "'extra'"),
    (inject_body(content="Subject: {{ broken\r\n\r\nx"), 422, "template"),
    (inject_body(content="{{ name | upper }}"), 422, "unsupported template expression"),
    (inject_body(content={"subject": "s"}), 422, "text_body"),
    (inject_body(content={"text_body": "x", "attachments": []}), 422, "attachments"),
    (inject_body(content={"text_body": "x", "headers": {"Bad Name": "v"}}), 422,
     "invalid header name"),
    (inject_body(deferred_generation=True), 422, "deferred_generation"),
    (inject_body(template_dialect="Handlebars"), 422, "template_dialect"),
])
def test_inject_rejects_bad_requests(kumod, tmp_path, body, status, needle):
    k = start(kumod, var=tmp_path / "spool" if HAVE_SPOOL else None)
    r = req(k.http_port, "POST", "/api/inject/v1", body)
    assert r.status == status, r.body
    assert needle in r.json()["error"], r.body
    assert k.stop() == 0


def test_inject_without_spool_is_refused(kumod):
    k = start(kumod)
    r = req(k.http_port, "POST", "/api/inject/v1", inject_body())
    assert r.status == 503 and "no spool" in r.json()["error"]
    assert k.stop() == 0


@needs_spool
def test_inject_outcomes_per_recipient(kumod, tmp_path):
    k = start(kumod, var=tmp_path / "spool",
              extra=INJECT_POLICY + QUEUE_POLICY.format(port=closed_port()))
    rcpts = [{"email": "a@example.com", "substitutions": {"name": "A"}},
             {"email": "reject@example.com"}, {"email": "oops@example.com"},
             {"email": "n@null.example"}]
    r = req(k.http_port, "POST", "/api/inject/v1", inject_body(recipients=rcpts))
    assert r.status == 200, r.body
    j = r.json()
    assert j["success_count"] == 2 and j["fail_count"] == 2, j
    assert j["failed_recipients"] == ["reject@example.com", "oops@example.com"]
    assert j["errors"][0] == "reject@example.com: 550 5.7.1 not this one"
    assert j["errors"][1].startswith("oops@example.com: policy error")
    # exactly the one real message is queued (the null queue discards)
    fams = families(req(k.http_port, "GET", "/metrics").body.decode())
    assert {s.labels["queue"]: s.value for s in fams["delayed_count"].samples} == \
        {"example.com": 1}
    rx = {s.labels["service"]: s.value for s in fams["total_messages_received"].samples}
    assert rx["http_listener"] == 2
    r = req(k.http_port, "GET", "/api/admin/inspect-sched-q/v1?queue_name=example.com")
    assert r.status == 200 and r.json()["num_scheduled"] == 1
    assert k.stop() == 0


@needs_spool
def test_inject_many_recipients_across_store_windows(kumod, tmp_path):
    """A request larger than the window of stores in flight (256, see
    kumod/ctl/http_inject.c): every recipient gets its outcome, in request
    order for the failures, and exactly the accepted ones are queued."""
    k = start(kumod, var=tmp_path / "spool",
              extra=INJECT_POLICY + QUEUE_POLICY.format(port=closed_port()),
              http=", request_body_limit = 8000000")
    n = 1000
    rcpts = [{"email": "reject@example.com" if i % 7 == 3 else "u%d@example.com" % i}
             for i in range(n)]
    rejected = sum(1 for r in rcpts if r["email"] == "reject@example.com")
    r = req(k.http_port, "POST", "/api/inject/v1", inject_body(recipients=rcpts))
    assert r.status == 200, r.body
    j = r.json()
    assert (j["success_count"], j["fail_count"]) == (n - rejected, rejected), \
        (j["success_count"], j["fail_count"], j["errors"][:3])
    assert j["failed_recipients"] == ["reject@example.com"] * rejected
    assert j["errors"] == ["reject@example.com: 550 5.7.1 not this one"] * rejected
    fams = families(req(k.http_port, "GET", "/metrics").body.decode())
    rx = {s.labels["service"]: s.value for s in fams["total_messages_received"].samples}
    assert rx["http_listener"] == n - rejected
    assert k.stop() == 0


AUTH_INFO_POLICY = """
kumo.on('http_message_generated', function(msg, auth_info)
  local f = assert(io.open('%s', 'a'))
  f:write(kumo.json_encode{ auth_info = auth_info, http_auth = msg:get_meta('http_auth') } .. '\\n')
  f:close()
  msg:set_meta('queue', 'null')
end)
"""


@needs_spool
def test_inject_passes_auth_info(kumod, tmp_path):
    # KumoMTA's AuthInfo as the second argument, and meta http_auth preset
    out = tmp_path / "auth.jsonl"
    k = start(kumod, var=tmp_path / "spool", http=", trusted_hosts = { '10.0.0.0/8' }",
              extra=AUTH_POLICY + AUTH_INFO_POLICY % out)
    r = req(k.http_port, "POST", "/api/inject/v1", inject_body(),
            headers=basic("admin", "s3cr:et"))
    assert r.status == 200 and r.json()["success_count"] == 1, r.body
    assert k.stop() == 0
    k = start(kumod, var=tmp_path / "spool", extra=AUTH_INFO_POLICY % out)  # trusted 127.0.0.1
    r = req(k.http_port, "POST", "/api/inject/v1", inject_body())
    assert r.status == 200 and r.json()["success_count"] == 1, r.body
    assert k.stop() == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    for g in got:  # an empty Lua table encodes as {}
        for key in ("groups", "identities"):
            g["auth_info"][key] = g["auth_info"][key] or []
    assert got == [
        {"http_auth": "admin",
         "auth_info": {"peer_address": "127.0.0.1", "groups": [],
                       "identities": [{"identity": "admin", "context": "HttpBasicAuth"}]}},
        {"http_auth": "127.0.0.1",
         "auth_info": {"peer_address": "127.0.0.1", "identities": [],
                       "groups": ["kumomta:http-listener-trusted-ip"]}},
    ], got


def log_records(log_dir):
    from test_relay import records
    return records(log_dir)


def sink_start(kumod, capture):
    return kumod(open(SINK_LUA).read(), policy_name="sink.lua",
                 env={"KUMO_SINK_LISTEN": "127.0.0.1:0", "KUMO_SINK_CAPTURE_DIR": str(capture)})


@needs_delivery
def test_inject_is_delivered_to_the_sink(kumod, tmp_path):
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    extra = QUEUE_POLICY.format(port=sink.smtp_port).replace(
        "retry_interval = '1h'", "retry_interval = '1s'")
    k = start(kumod, var=tmp_path / "spool", extra=extra,
              init="kumo.configure_local_logs{ log_dir = '%s' }" % (tmp_path / "logs"))
    body = inject_body(recipients=[{"email": "a@example.com", "name": "Ann",
                                    "substitutions": {"name": "Ann"}},
                                   {"email": "b@example.com"}])
    r = req(k.http_port, "POST", "/api/inject/v1", body)
    assert r.json() == {"success_count": 2, "fail_count": 0, "failed_recipients": [],
                        "errors": []}
    built = {"envelope_sender": "sender@example.com",
             "content": {"subject": "Built {{ name }}", "text_body": "caf\u00e9 {{ name }}",
                         "html_body": "<p>{{ name }}</p>",
                         "from": {"email": "sender@example.com", "name": "S\u00e9nder"},
                         "headers": {"X-Campaign": "c-{{ name }}"}},
             "recipients": [{"email": "c@example.com", "substitutions": {"name": "Cy"}}]}
    assert req(k.http_port, "POST", "/api/inject/v1", built).json()["success_count"] == 1
    files = wait_until(lambda: len(glob.glob(str(capture / "new" / "*"))) >= 3 and
                       glob.glob(str(capture / "new" / "*")), timeout=30)
    assert files and len(files) == 3, k.stderr()
    texts = [open(f, "rb").read().decode("utf-8", "replace") for f in files]
    assert any("Hi Ann, from Kumo." in t for t in texts)
    assert any("Subject: hello \r\n" in t or "Subject: hello\r\n" in t for t in texts)
    cy = [t for t in texts if "X-Campaign: c-Cy" in t]
    assert cy and "Subject: Built Cy" in cy[0] and "multipart/alternative" in cy[0]
    assert "caf=C3=A9 Cy" in cy[0] and "=?utf-8?B?" in cy[0]
    fams = families(req(k.http_port, "GET", "/metrics").body.decode())
    delivered = {s.labels["service"]: s.value for s in fams["total_messages_delivered"].samples}
    assert delivered["smtp_client:mx_list:127.0.0.1:%d" % sink.smtp_port] == 3
    assert k.stop() == 0
    rx = [r for r in log_records(tmp_path / "logs") if r.get("type") == "Reception"]
    assert len(rx) == 3 and all(r["reception_protocol"] == "HTTP" for r in rx), rx


# --- kcli ---------------------------------------------------------------------------------


def kcli(*args, env=None):
    e = dict(os.environ)
    e.pop("KUMO_KCLI_ENDPOINT", None)
    e.update(env or {})
    return subprocess.run([KCLI, *args], capture_output=True, text=True, env=e, timeout=30)


def test_kcli_help():
    r = kcli("--help")
    assert r.returncode == 0
    for cmd in ("set-log-filter", "queue-summary", "inspect-sched-q", "ready-q-states", "inject"):
        assert cmd in r.stdout
        h = kcli(cmd, "--help")
        assert h.returncode == 0 and ("kcli [--endpoint URL] %s" % cmd) in h.stdout, h
    r = kcli("frobnicate")
    assert r.returncode == 1 and r.stderr.strip() == \
        "kcli: unknown command 'frobnicate' (see kcli --help)"


def test_kcli_errors_are_one_line(kumod):
    r = kcli("--endpoint", "http://127.0.0.1:%d" % closed_port(), "queue-summary")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("kcli: GET ")
    k = start(kumod)
    r = kcli("set-log-filter", "kumod=nonsense",
             env={"KUMO_KCLI_ENDPOINT": "http://127.0.0.1:%d" % k.http_port})
    assert r.returncode == 1
    line = r.stderr.strip()
    assert "\n" not in line and "HTTP 400" in line and "kumod=nonsense" in line
    assert kcli("set-log-filter").returncode == 1
    assert k.stop() == 0


@needs_spool
def test_kcli_end_to_end(kumod, tmp_path):
    dead = closed_port()
    k = start(kumod, var=tmp_path / "spool", extra=QUEUE_POLICY.format(port=dead))
    ep = ["--endpoint", "http://127.0.0.1:%d" % k.http_port]
    r = kcli(*ep, "set-log-filter", "kumod=debug")
    assert r.returncode == 0 and r.stdout == "log filter set to 'kumod=debug'\n", r
    k.wait_for("admin set_diagnostic_log_filter")
    r = kcli(*ep, "inject", "--from", "s@example.com", "--to", "x@gmail.com", "--to",
             "y@gmail.com", "--subject", "hi", "--text", "hello")
    assert r.returncode == 0 and "injected: 2 ok, 0 failed" in r.stdout, r
    msg = tmp_path / "m.eml"
    msg.write_text("Subject: raw\r\n\r\nraw body\r\n")
    r = kcli(*ep, "inject", "--from", "s@example.com", "--to", "z@example.org", "--file",
             str(msg), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["success_count"] == 1
    wait_until(lambda: "gmail.com" in kcli(*ep, "inspect-sched-q").stdout)
    r = kcli(*ep, "queue-summary")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["SITE", "D", "T", "C", "Q"]
    sched = lines[lines.index(next(l for l in lines if l.startswith("SCHEDULED QUEUE"))) + 1:]
    got = {l.split()[0]: l.split()[1] for l in sched}
    assert got.get("gmail.com") == "2" and got.get("example.org") == "1", r.stdout
    j = json.loads(kcli(*ep, "queue-summary", "--json", "--by-volume").stdout)
    assert j["scheduled"][0] == {"queue": "gmail.com", "count": 2}
    assert len(json.loads(kcli(*ep, "queue-summary", "--json", "--limit", "1").stdout)
               ["scheduled"]) == 1
    r = kcli(*ep, "inspect-sched-q", "gmail.com")
    assert r.returncode == 0 and r.stdout.startswith("queue gmail.com: 2 scheduled")
    r = kcli(*ep, "inspect-sched-q", "nope.example")
    assert r.returncode == 1 and "HTTP 404" in r.stderr
    r = kcli(*ep, "ready-q-states", "--json")
    assert r.returncode == 0 and "states_by_ready_queue" in json.loads(r.stdout)
    assert kcli(*ep, "ready-q-states").stdout.startswith("READY QUEUE")
    assert k.stop() == 0


def test_curl_metrics_readme_command(kumod):
    """The README's literal command against a listener on the default port,
    when that port is free on this machine."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 8000))
    except OSError:
        pytest.skip("127.0.0.1:8000 is in use here")
    finally:
        s.close()
    k = kumod("local kumo = require 'kumo'\nkumo.on('init', function()\n"
              "  kumo.start_esmtp_listener{ listen = '127.0.0.1:0' }\n"
              "  kumo.start_http_listener{}\nend)\n")
    assert "http listener on 127.0.0.1:8000" in k.stderr()
    out = subprocess.run(["curl", "-s", "http://127.0.0.1:8000/metrics"], capture_output=True,
                         text=True, timeout=20)
    assert out.stdout.startswith("# HELP connection_count connection_count\n"
                                 "# TYPE connection_count gauge\n"
                                 'connection_count{service="esmtp_listener"} 0\n'), out.stdout
    assert k.stop() == 0
