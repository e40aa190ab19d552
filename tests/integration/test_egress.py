# SPDX-License-Identifier: Apache-2.0
"""Egress shaping end to end: a relay kumod delivering to a receiving kumod (or a
small Python SMTP server) on loopback. Egress sources bound to 127.0.0.2 / 127.0.0.3
(Linux routes all of 127/8 on lo) with their own EHLO names, pool weights (smooth
weighted round robin), max_message_rate / max_connection_rate, enable_tls modes
with certificate verification against a CA made here with the openssl CLI, and
define_spool's sync_mode."""

import glob
import json
import os
import re
import select
import smtplib
import socketserver
import subprocess
import threading
import time
from datetime import datetime, timezone

import pytest

from conftest import run_kumod
from test_relay import records, wait_until
from test_smtp_conformance import ipv6_loopback

# The receiving side: every message is recorded with what the connection
# looked like from there (peer address, EHLO name, TLS cipher), then dropped.
RECEIVER_POLICY = """
local kumo = require 'kumo'
local out = %(out)r
kumo.on('init', function()
  os.execute("mkdir -p '" .. out .. "'")
  kumo.start_esmtp_listener{ listen = %(listen)r, hostname = 'receiver.test',
                             relay_hosts = { '0.0.0.0/0', '::/0' }%(tls)s }
end)
kumo.on('smtp_server_message_received', function(msg, conn_meta)
  local f = assert(io.open(out .. '/' .. msg:id() .. '.json', 'w'))
  f:write(kumo.json_encode{
    received_from = msg:get_meta('received_from'),
    ehlo_domain = conn_meta:get_meta('ehlo_domain'),
    tls_cipher = conn_meta:get_meta('tls_cipher'),
    recipient = msg:recipient().email,
  })
  f:close()
  msg:set_meta('queue', 'null')
end)
"""

RELAY_POLICY = """
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool{ name = 'data', path = %(var)r .. '/spool/data' }
  kumo.define_spool{ name = 'meta', path = %(var)r .. '/spool/meta' }
  kumo.configure_local_logs{ log_dir = %(var)r .. '/logs' }
  kumo.start_esmtp_listener{ listen = '127.0.0.1:0', hostname = 'relay.test',
                             relay_hosts = { '127.0.0.1' } }
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config{
    retry_interval = '1s', max_retry_interval = '1s', %(pool)s
    protocol = { smtp = { mx_list = { %(mx)r } } },
  }
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path{ prohibited_hosts = {}, connect_timeout = '2s', %(path)s }
end)
%(extra)s
"""

SOURCES = """
local sources = {
  a = { name = 'a', source_address = '127.0.0.2', ehlo_domain = 'a.egress.test' },
  b = { name = 'b', source_address = '127.0.0.3', ehlo_domain = 'b.egress.test' },
  c = { name = 'c', source_address = '127.0.0.4', ehlo_domain = 'c.egress.test' },
  v6 = { name = 'v6', source_address = '::1' },
  gone = { name = 'gone', source_address = '192.0.2.1' },
}
kumo.on('get_egress_source', function(name)
  return kumo.make_egress_source(sources[name])
end)
kumo.on('get_egress_pool', function(name)
  if name == 'v6pool' or name == 'gonepool' then
    local src = name == 'v6pool' and 'v6' or 'gone'
    return kumo.make_egress_pool{ name = name, entries = { { name = src } } }
  end
  return kumo.make_egress_pool{ name = name, entries = {
    { name = 'a', weight = 3 }, { name = 'b', weight = 1 }, { name = 'c', weight = 0 } } }
end)
"""


def receiver_start(kumod, out, cert=None, key=None, listen="127.0.0.1:0"):
    tls = ""
    if cert:
        tls = ",\n    tls_certificate = %r, tls_private_key = %r" % (str(cert), str(key))
    return kumod(RECEIVER_POLICY % {"out": str(out), "tls": tls, "listen": listen},
                 policy_name="receiver.lua")


def relay_start(kumod, var, mx, path="enable_tls = 'Disabled'", pool="", extra="", env=None,
                name="relay.lua"):
    text = RELAY_POLICY % {"var": str(var), "mx": mx, "path": path, "pool": pool,
                           "extra": extra}
    return kumod(text, policy_name=name, env=env)


def received(out):
    got = []
    for f in sorted(glob.glob(os.path.join(str(out), "*.json"))):
        try:
            got.append(json.load(open(f)))
        except ValueError:
            pass  # being written
    return got


def send_many(port, rcpts):
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as s:
        s.ehlo("client.test")
        for r in rcpts:
            body = "From: <s@example.com>\r\nTo: <%s>\r\nSubject: egress\r\n\r\nhi\r\n" % r
            assert s.sendmail("s@example.com", [r], body) == {}


def by_type(var, t):
    return [r for r in records(var / "logs") if r["type"] == t]


def spooled_ids(var):
    return [os.path.basename(f) for f in glob.glob(str(var / "spool" / "meta" / "**"),
                                                   recursive=True)
            if re.fullmatch(r"[0-9a-f]{32}", os.path.basename(f))]


def event_seconds(rec):
    """event_time "2026-01-02T03:04:05.123456789Z" as float seconds."""
    whole, frac = rec["event_time"].rstrip("Z").split(".")
    t = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return t.timestamp() + float("0." + frac)


# --- egress sources and pools ----------------------------------------------------


def test_pool_weights_source_address_and_ehlo(kumod, tmp_path):
    out = tmp_path / "received"
    rx = receiver_start(kumod, out)
    var = tmp_path / "var"
    relay = relay_start(kumod, var, "127.0.0.1:%d" % rx.smtp_port, pool="egress_pool = 'p',",
                        extra=SOURCES)
    send_many(relay.smtp_port, ["u%d@example.com" % i for i in range(40)])
    assert wait_until(lambda: len(received(out)) >= 40, timeout=30), relay.stderr()
    got = received(out)
    assert len(got) == 40
    # smooth WRR 3:1 (weight 0 never) over 40 messages is exactly 30/10
    peers = {}
    for g in got:
        ip = g["received_from"].rsplit(":", 1)[0]
        peers.setdefault(ip, []).append(g["ehlo_domain"])
    assert sorted((ip, len(v)) for ip, v in peers.items()) == [("127.0.0.2", 30),
                                                               ("127.0.0.3", 10)], peers
    assert set(peers["127.0.0.2"]) == {"a.egress.test"}
    assert set(peers["127.0.0.3"]) == {"b.egress.test"}
    assert wait_until(lambda: len(by_type(var, "Delivery")) >= 40, timeout=10)
    assert relay.stop() == 0
    dl = by_type(var, "Delivery")
    assert len(dl) == 40
    count = {}
    for d in dl:
        src = d["egress_source"]
        count[src] = count.get(src, 0) + 1
        assert d["egress_pool"] == "p"
        assert d["site"].startswith(src + "->mx_list:")
        want = {"a": "127.0.0.2:", "b": "127.0.0.3:"}[src]
        sa = d["source_address"]
        assert sa["address"].startswith(want) and sa["protocol"] is None, sa
    assert count == {"a": 30, "b": 10}, count


@pytest.mark.parametrize("pool,source,why", [
    ("v6pool", "v6", "skipped: egress source 'v6' has source_address ::1 (IPv6) and cannot "
                     "reach an IPv4 host"),
    ("gonepool", "gone", "cannot bind egress source 'gone' source_address 192.0.2.1: "
                         "address not available"),
], ids=["family-mismatch", "not-our-address"])
def test_unusable_source_address_is_a_transient_failure(kumod, tmp_path, pool, source, why):
    out = tmp_path / "received"
    rx = receiver_start(kumod, out)
    var = tmp_path / "var"
    relay = relay_start(kumod, var, "127.0.0.1:%d" % rx.smtp_port,
                        pool="egress_pool = %r," % pool, extra=SOURCES)
    send_many(relay.smtp_port, ["unusable@example.com"])
    assert wait_until(lambda: by_type(var, "TransientFailure"), timeout=15), relay.stderr()
    assert relay.stop() == 0  # no crash, clean exit
    tf = by_type(var, "TransientFailure")[0]
    text = tf["response"]["content"]
    assert why in text, text
    assert tf["egress_source"] == source and tf["response"]["code"] == 451
    assert received(out) == []
    assert len(spooled_ids(var)) == 1  # kept for the next attempt


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv6_source_address(kumod, tmp_path):
    out = tmp_path / "received"
    rx = receiver_start(kumod, out, listen="[::1]:0")
    var = tmp_path / "var"
    relay = relay_start(kumod, var, "[::1]:%d" % rx.smtp_port, pool="egress_pool = 'v6pool',",
                        extra=SOURCES)
    send_many(relay.smtp_port, ["six@example.com"])
    assert wait_until(lambda: by_type(var, "Delivery"), timeout=15), relay.stderr()
    assert relay.stop() == 0
    assert received(out)[0]["received_from"].startswith("[::1]:")
    d = by_type(var, "Delivery")[0]
    assert d["egress_source"] == "v6" and d["source_address"]["address"].startswith("[::1]:"), d


def test_invalid_egress_source_and_pool_are_policy_errors(tmp_path):
    for body, want in [
        ("kumo.make_egress_source{ name = 'x', source_address = 'not-an-ip' }",
         "make_egress_source: source_address: expected an IPv4 or IPv6 address"),
        ("kumo.make_egress_pool{ name = 'p', entries = { { name = 'a', weight = -1 } } }",
         "entries[1].weight must be an integer"),
        ("kumo.make_egress_path{ max_message_rate = '5 per second' }",
         "make_egress_path: max_message_rate: expected a rate"),
        ("kumo.make_egress_path{ max_connection_rate = '0/s' }",
         "make_egress_path: max_connection_rate: expected a rate"),
    ]:
        p = tmp_path / "bad.lua"
        p.write_text("local kumo = require 'kumo'\nkumo.on('init', function()\n  %s\nend)\n"
                     % body)
        r = run_kumod(["--validate", "--policy", str(p)])
        assert r.returncode == 1 and want in r.stderr, (body, r.stderr)
    p = tmp_path / "good.lua"
    p.write_text("local kumo = require 'kumo'\nkumo.on('init', function()\n"
                 "  kumo.make_egress_source{ name = 'x', source_address = '[::1]' }\n"
                 "  kumo.make_egress_path{ max_message_rate = '1,000/hr',\n"
                 "                         max_connection_rate = 'local:10/m' }\nend)\n")
    r = run_kumod(["--validate", "--policy", str(p)])
    assert r.returncode == 0, r.stderr


# --- rates -----------------------------------------------------------------------


def assert_paced(times, per_second, burst):
    times = sorted(times)
    for i, t in enumerate(times):
        in_window = sum(1 for u in times[i:] if u < t + 1.0)
        assert in_window <= per_second + burst, (in_window, times)


TRACE_DISPATCH = {"KUMOD_LOG": "kumod=info,kumo_server_common=info,kumod::smtp_dispatcher=trace"}


def relay_n(kumod, tmp_path, path, n):
    """Relays n messages under egress path settings `path`; returns the
    relay's diagnostic log and the Delivery event times, all n delivered."""
    out = tmp_path / "received"
    rx = receiver_start(kumod, out)
    var = tmp_path / "var"
    relay = relay_start(kumod, var, "127.0.0.1:%d" % rx.smtp_port,
                        path="enable_tls = 'Disabled', " + path, env=TRACE_DISPATCH)
    send_many(relay.smtp_port, ["r%d@example.com" % i for i in range(n)])
    assert wait_until(lambda: len(by_type(var, "Delivery")) >= n, timeout=30), relay.stderr()
    assert relay.stop() == 0
    times = [event_seconds(d) for d in by_type(var, "Delivery")]
    assert len(times) == n and len(received(out)) == n
    assert by_type(var, "TransientFailure") == []
    return relay.stderr(), times, received(out)


def test_max_message_rate_paces_deliveries(kumod, tmp_path):
    log, times, _ = relay_n(kumod, tmp_path, "max_message_rate = '5/s', connection_limit = 3", 15)
    # burst of 5, then one per 200 ms: the last one >= 2 s after the first
    assert max(times) - min(times) >= 1.8, sorted(times)
    assert_paced(times, 5, 5)
    assert "phase=MessageRateThrottled" in log, log[-3000:]
    assert "MessageRateThrottled for" in log  # throttle_enter
    assert "MessageRateThrottled over after" in log  # throttle_leave


def test_max_connection_rate_paces_connections(kumod, tmp_path):
    log, times, got = relay_n(kumod, tmp_path, "max_connection_rate = '2/s', "
                              "max_deliveries_per_connection = 1, connection_limit = 4", 6)
    # one message per connection: 2 at once, then one connection per 500 ms
    assert max(times) - min(times) >= 1.6, sorted(times)
    assert_paced(times, 2, 2)
    assert "phase=ConnectionRateThrottled" in log, log[-3000:]
    # each delivery came over its own connection from a distinct source port
    assert len({g["received_from"] for g in got}) == 6


# --- TLS -----------------------------------------------------------------------


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=str(cwd), check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for IP 127.0.0.1 / localhost and one for another
    name, all signed by the CA (made once for the module's TLS cases)."""
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=kumod test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, san in (("good", "IP:127.0.0.1,DNS:localhost"), ("wrong", "DNS:mx.wrong.test")):
        (d / (name + ".ext")).write_text("subjectAltName=%s\nbasicConstraints=CA:FALSE\n"
                                         "extendedKeyUsage=serverAuth\n" % san)
        openssl("req", *ec, "-keyout", name + ".key", "-out", name + ".csr",
                "-subj", "/CN=" + name, cwd=d)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", name + ".pem", "-days", "2",
                "-extfile", name + ".ext", cwd=d)
    return d


TLS_CASES = [
    # (enable_tls, CA file?, server certificate, delivered?, expected failure text)
    ("Required", True, "good", True, None),
    ("Required", False, "good", False, "unable to get local issuer certificate"),
    ("Required", True, "wrong", False, "IP address mismatch"),
    ("RequiredInsecure", False, "wrong", True, None),
    ("Opportunistic", True, "good", True, None),
    ("Opportunistic", False, "wrong", False, "TLS certificate verification failed"),
    ("OpportunisticInsecure", False, "wrong", True, None),
]


@pytest.mark.parametrize("mode,ca,cert,ok,why", TLS_CASES,
                         ids=["%s-%s-%s" % (c[0], "ca" if c[1] else "noca", c[2])
                              for c in TLS_CASES])
def test_enable_tls_modes_verify_certificates(kumod, tmp_path, pki, mode, ca, cert, ok, why):
    out = tmp_path / "received"
    rx = receiver_start(kumod, out, pki / (cert + ".pem"), pki / (cert + ".key"))
    var = tmp_path / "var"
    path = "enable_tls = %r" % mode
    if ca:
        path += ", tls_ca_file = %r" % str(pki / "ca.pem")
    relay = relay_start(kumod, var, "127.0.0.1:%d" % rx.smtp_port, path=path)
    send_many(relay.smtp_port, ["tls@example.com"])
    want = "Delivery" if ok else "TransientFailure"
    assert wait_until(lambda: by_type(var, want), timeout=15), relay.stderr()
    assert relay.stop() == 0
    rec = by_type(var, want)[0]
    if ok:
        assert rec["tls_protocol_version"] in ("TLSv1.2", "TLSv1.3"), rec
        assert rec["tls_cipher"], rec
        assert received(out)[0]["tls_cipher"], received(out)
        assert spooled_ids(var) == []
    else:
        text = rec["response"]["content"]
        assert why in text and "TLS certificate verification failed for 127.0.0.1" in text, text
        assert rec["response"]["code"] == 451
        assert received(out) == []
        assert len(spooled_ids(var)) == 1  # the message is kept


class PlainSMTP(socketserver.StreamRequestHandler):
    """A minimal SMTP server offering PIPELINING and no STARTTLS (for
    Opportunistic's fallback). Never replies to the verb in server.stall (if
    any: timeouts); records each command (server.lines) and, for MAIL,
    whether the next one was already waiting (pipelining)."""

    rbufsize = 0  # unbuffered: what the client sent and we did not read stays in the socket

    def more_waiting(self):
        """The next command is already here before we answered this one
        (the client pipelined)."""
        return bool(select.select([self.connection], [], [], 0.3)[0])

    def handle(self):
        self.server.sessions += 1
        w = self.wfile.write
        w(b"220 stall.test ESMTP\r\n")
        while True:
            line = self.rfile.readline()
            if not line:
                return
            verb = line[:4].upper()
            self.server.lines.append((verb, self.more_waiting() if verb == b"MAIL" else None))
            if verb == self.server.stall:
                time.sleep(30)
                return
            if verb == b"EHLO":
                w(b"250-stall.test\r\n250 PIPELINING\r\n")
            elif verb == b"DATA":
                w(b"354 go\r\n")
                while self.rfile.readline() not in (b".\r\n", b""):
                    pass
                self.server.messages += 1
                if getattr(self.server, "data_delay", None) is not None:
                    self.server.data_seen.set()  # the message is here, the 250 is not
                    time.sleep(self.server.data_delay)
                w(b"250 OK stored\r\n")
            elif verb == b"QUIT":
                w(b"221 bye\r\n")
                return
            else:
                w(b"250 OK\r\n")


def plain_server(handler, stall=None):
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    srv.sessions = srv.messages = 0
    srv.lines = []
    srv.stall = stall
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


def test_opportunistic_without_starttls_delivers_in_plaintext(kumod, tmp_path):
    srv, _ = plain_server(PlainSMTP)
    try:
        var = tmp_path / "var"
        relay = relay_start(kumod, var, "127.0.0.1:%d" % srv.server_address[1],
                            path="enable_tls = 'Opportunistic'")
        send_many(relay.smtp_port, ["plain@example.com"])
        assert wait_until(lambda: by_type(var, "Delivery"), timeout=15), relay.stderr()
        assert relay.stop() == 0
        d = by_type(var, "Delivery")[0]
        assert d.get("tls_protocol_version") is None, d
        assert srv.messages == 1
        # Required refuses the same server
        var2 = tmp_path / "var2"
        relay2 = relay_start(kumod, var2, "127.0.0.1:%d" % srv.server_address[1],
                             path="enable_tls = 'Required'", name="relay2.lua")
        send_many(relay2.smtp_port, ["plain2@example.com"])
        assert wait_until(lambda: by_type(var2, "TransientFailure"), timeout=15)
        assert relay2.stop() == 0
        text = by_type(var2, "TransientFailure")[0]["response"]["content"]
        assert "STARTTLS required but not offered" in text, text
        assert srv.messages == 1
    finally:
        srv.shutdown()
        srv.server_close()


# --- spool sync_mode --------------------------------------------------------------


def spool_policy(var, data_mode, meta_mode):
    def opt(m):
        return ", sync_mode = %r" % m if m else ""
    return ("local kumo = require 'kumo'\nkumo.on('init', function()\n"
            "  kumo.define_spool{ name = 'data', path = %r%s }\n"
            "  kumo.define_spool{ name = 'meta', path = %r%s }\n"
            "  kumo.start_esmtp_listener{ listen = '127.0.0.1:0' }\nend)\n"
            % (str(var / "data"), opt(data_mode), str(var / "meta"), opt(meta_mode)))


def test_spool_sync_mode_option(kumod, tmp_path):
    for i, (data, meta, err) in enumerate([
        ("fsync", "fsync", None),
        ("syncfs", "syncfs", None),
        ("syncfs", None, None),
        (None, None, None),
        ("fdatasync", "fsync", "define_spool: sync_mode: expected 'fsync' or 'syncfs', "
                               "got 'fdatasync'"),
        ("syncfs", "fsync", "'data' and 'meta' must use the same sync_mode"),
    ]):
        p = tmp_path / ("spool%d.lua" % i)
        p.write_text(spool_policy(tmp_path / ("v%d" % i), data, meta))
        r = run_kumod(["--validate", "--policy", str(p)])
        if err:
            assert r.returncode == 1 and err in r.stderr, r.stderr
        else:
            assert r.returncode == 0, r.stderr
    # the running daemon opens its spool in syncfs mode and says so
    k = kumod(spool_policy(tmp_path / "live", "syncfs", "syncfs"),
              env={"KUMOD_LOG": "kumod=info,kumo_server_common=info,kumod::spool=debug"}, policy_name="live.lua")
    with smtplib.SMTP("127.0.0.1", k.smtp_port, timeout=10) as s:
        s.ehlo("x.test")
        s.sendmail("a@example.com", ["b@example.com"], "Subject: x\r\n\r\nx\r\n")
    assert "flush=syncfs" in k.wait_for("spool open", timeout=5)
    # the stored message's batch was made durable by syncfs, not by per-file fsyncs
    batch = k.wait_for("batch count=", timeout=5)
    kv = dict(re.findall(r"(\w+)=(\S+)", batch))
    assert (kv["file_syncs"], kv["dir_syncs"]) == ("0", "0") and kv["fs_syncs"] != "0", batch
    assert k.stop() == 0


@pytest.mark.parametrize("delay,delivered", [(1.0, True), (30, False)])
def test_shutdown_lets_a_delivery_in_flight_finish(kumod, tmp_path, delay, delivered):
    """SIGTERM while the peer has the message but kumod waits for its reply:
    kumod waits (at most 2 s) for the reply. A reply in time: Delivery
    logged and the message leaves the spool (no duplicate after a restart).
    No reply in time: a WARN, and the message stays spooled for the retry."""
    srv, port = plain_server(PlainSMTP)
    srv.data_delay = delay
    srv.data_seen = threading.Event()
    try:
        var = tmp_path / "var"
        relay = relay_start(kumod, var, "127.0.0.1:%d" % port,
                            path="enable_tls = 'Disabled', data_dot_timeout = '60s'")
        send_many(relay.smtp_port, ["inflight@example.com"])
        assert srv.data_seen.wait(15), relay.stderr()
        t0 = time.monotonic()
        assert relay.stop() == 0
        took = time.monotonic() - t0
        relay.wait_for("shutdown: waiting up to 2000 ms for 1 deliveries in flight")
        types = [r["type"] for r in records(var / "logs")]
        if delivered:
            assert types.count("Delivery") == 1, types
            assert spooled_ids(var) == []
        else:
            assert "Delivery" not in types, types
            assert len(spooled_ids(var)) == 1
            relay.wait_for("deliveries still in flight after 2000 ms")
            assert took < 8, took
    finally:
        srv.shutdown()
