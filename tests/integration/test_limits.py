# SPDX-License-Identifier: Apache-2.0
"""Holding the line under abuse (issue 20, docs/limits.md): each attack at
small scale against a real kumod, asserting its replies, that it stays up,
that memory stays under the budget, that /metrics and deliveries keep
working, and that nothing acknowledged is lost."""

import concurrent.futures
import http.client
import json
import os
import re
import resource
import socket
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from test_relay import captured, sink_start, wait_until

MIB = 1 << 20

POLICY = """
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool{{ name = 'data', path = '{var}/spool/data', flush = false {spool} }}
  kumo.define_spool{{ name = 'meta', path = '{var}/spool/meta', flush = false }}
  {init}
  -- trusted clients (relay_hosts) are exempt from the per-client limits
  kumo.start_esmtp_listener{{ listen = '127.0.0.1:0', hostname = 'relay.test',
                              relay_hosts = {{ '127.0.0.1' }} {smtp} }}
  -- the same clients, untrusted: the per-client limits apply
  kumo.start_esmtp_listener{{ listen = '127.0.0.1:0', hostname = 'public.test',
                              relay_hosts = {{}} {public} }}
  kumo.start_http_listener{{ listen = '127.0.0.1:0' {http} }}
end)
kumo.on('get_listener_domain', function(domain, listener, conn_meta)
  return kumo.make_listener_domain{{ relay_from = {{ '127.0.0.1' }} }}
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config{{
    retry_interval = '{retry}', max_retry_interval = '{retry}',
    protocol = {{ smtp = {{ mx_list = {{ '127.0.0.1:{mx_port}' }} }} }},
  }}
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path{{ connection_limit = 4, prohibited_hosts = {{}},
                                 enable_tls = 'Disabled', connect_timeout = '2s' }}
end)
{extra}
"""


@pytest.fixture
def kumod(kumod):
    """The conftest factory, and every kumod this module starts must stop
    cleanly (status 0, no sanitizer report) after its abuse."""
    started = []

    def start(*args, **kwargs):
        k = kumod(*args, **kwargs)
        started.append(k)
        return k

    yield start
    for k in started:
        rc = k.stop(timeout=20)
        assert rc == 0, "kumod exited with %s:\n%s" % (rc, k.stderr()[-3000:])
        assert "Sanitizer" not in k.stderr(), k.stderr()[-3000:]


def start(kumod, tmp_path, mx_port, init="", smtp="", public="", http="", extra="", env=None,
          preexec=None, name="relay.lua", spool="", retry="1s"):
    var = tmp_path / "var"
    text = POLICY.format(var=var, init=init, smtp=smtp, public=public, http=http,
                         extra=extra, mx_port=mx_port, spool=spool, retry=retry)
    k = kumod(text, env=env, preexec=preexec, policy_name=name)
    smtp_ports = [p for _, p in k.listeners["smtp"]]
    k.relay_port, k.public_port = smtp_ports[0], smtp_ports[1]
    k.http_port = k.listeners["http"][0][1]
    return k


def proc_status(pid, field):
    """A /proc/<pid>/status field in bytes (VmRSS, VmHWM, VmSize)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no %s in /proc/%d/status" % (field, pid))


def metrics(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    c.request("GET", "/metrics")
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    assert r.status == 200, body
    out = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            key = s.name if not s.labels else "%s{%s}" % (
                s.name, ",".join("%s=%s" % kv for kv in sorted(s.labels.items())))
            out[key] = s.value
    return out


class Smtp:
    """A raw SMTP client that reads complete replies (code, enhanced, text)."""

    def __init__(self, port, timeout=15):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def reply(self):
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.s.recv(65536)
                if not chunk:
                    return (0, "", "connection closed" if not lines else " ".join(lines))
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            line = line.decode("utf-8", "replace")
            lines.append(line[4:])
            if len(line) < 4 or line[3] != "-":
                code = int(line[:3])
                words = lines[-1].split(" ", 1)
                enh = words[0] if words and words[0][:1] in "245" and "." in words[0] else ""
                return (code, enh, lines[-1])

    def cmd(self, line):
        self.s.sendall(line.encode() + b"\r\n")
        return self.reply()

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def message(size, tag, received=0):
    head = "".join("Received: from hop%d.test by hop%d.test; Mon, 7 Dec 2026 10:00:00 +0000\r\n"
                   % (i, i) for i in range(received))
    head += "From: <a@example.com>\r\nTo: <b@example.com>\r\nSubject: %s\r\n\r\n" % tag
    line = ("x" * 76 + "\r\n").encode()
    body = head.encode() + line * max(1, (size - len(head)) // len(line))
    return body


def transaction(port, data, rcpt="b@example.com", chunk=None, pause=0.0):
    """One message; returns the reply to DATA's end (or to DATA, if refused)."""
    c = Smtp(port)
    try:
        r = c.reply()
        for line, want in (("EHLO client.test", 250), ("MAIL FROM:<a@example.com>", 250),
                           ("RCPT TO:<%s>" % rcpt, 250)):
            if r[0] not in (220, 250):
                return r  # refused (421 load shedding, ...)
            r = c.cmd(line)
        if r[0] != 250:
            return r
        r = c.cmd("DATA")
        if r[0] != 354:
            return r
        chunk = chunk or len(data)
        for i in range(0, len(data), chunk):
            c.s.sendall(data[i:i + chunk])
            if pause:
                time.sleep(pause)
        c.s.sendall(b".\r\n")
        r = c.reply()
        c.cmd("QUIT")
        return r
    finally:
        c.close()


# --- memory budget ----------------------------------------------------------------


def test_memory_budget_holds_under_a_data_flood(kumod, tmp_path):
    """50 sessions x 4 MiB of DATA at once with a 64 MiB soft limit: replies
    are 250 or 451 4.3.1, peak RSS stays near the budget (it reached 200+ MiB
    before), /metrics answers during the flood, every 250 is delivered and a
    message after the flood is accepted."""
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    sink_port = sink.smtp_port
    soft = 64 * MIB
    # bodies in memory (data_spill_threshold = 0): the budget is what holds
    # here; streamed bodies are test_streamed_body.py's
    k = start(kumod, tmp_path, sink_port, init="kumo.set_memory_soft_limit(%d)" % soft,
              smtp=", data_spill_threshold = 0")
    base = proc_status(k.pid, "VmRSS")
    assert base < soft / 2, "kumod starts at %d bytes RSS" % base
    body = message(4 * MIB, "flood")
    scrapes = []

    def scrape_during():
        time.sleep(0.3)
        scrapes.append(metrics(k.http_port))

    with concurrent.futures.ThreadPoolExecutor(max_workers=51) as ex:
        futs = [ex.submit(transaction, k.relay_port, body, chunk=256 * 1024, pause=0.01)
                for _ in range(50)]
        scraper = ex.submit(scrape_during)
        replies = [f.result(timeout=60) for f in futs]
        scraper.result(timeout=60)
    assert k.running()
    codes = sorted({(r[0], r[1]) for r in replies})
    # accepted, refused for memory, or shed as idle / at connect (load shedding)
    assert set(codes) <= {(250, ""), (451, "4.3.1"), (421, "4.3.2")}, replies
    refused = sum(1 for r in replies if r[0] == 451)
    accepted = sum(1 for r in replies if r[0] == 250)
    assert refused >= 1, "the budget never refused anything: %s" % codes
    peak = proc_status(k.pid, "VmHWM")
    # budget + the messages being moved to the spool + allocator slack
    assert peak < soft + 48 * MIB, "peak RSS %d MiB with a %d MiB soft limit" % (
        peak // MIB, soft // MIB)
    assert scrapes and scrapes[0]["memory_limit"] == soft
    # after the flood: memory comes back and mail is accepted again
    small = message(2000, "after")
    assert wait_until(lambda: transaction(k.relay_port, small)[0] == 250, timeout=30)
    m = metrics(k.http_port)
    assert m["memory_over_limit_count_total"] >= 1 or m.get("memory_over_limit_count", 0) >= 1
    assert m["memory_refused_total"] >= refused
    # nothing acknowledged is lost: every 250 reaches the sink
    assert wait_until(lambda: len(captured(capture)) >= accepted + 1, timeout=40), (
        accepted, len(captured(capture)))


# RSS under ASan is its quarantine and shadow memory, not kumod's
test_memory_budget_holds_under_a_data_flood = pytest.mark.nosan(
    test_memory_budget_holds_under_a_data_flood)


def test_data_crossing_the_limit_is_discarded_and_refused(kumod, tmp_path):
    """One DATA that would take memory past the soft limit is discarded as it
    arrives and refused with 451 4.3.1 at the dot; smaller mail before it is
    accepted (runs under ASan too: the limit is relative to the start; the
    recovery afterwards is the flood test's, as ASan keeps freed memory)."""
    probe = start(kumod, tmp_path, 9, name="probe.lua")
    base = proc_status(probe.pid, "VmRSS")
    probe.stop()
    soft = base + 28 * MIB
    k = start(kumod, tmp_path, 9, init="kumo.set_memory_soft_limit(%d)" % soft,
              smtp=", data_spill_threshold = 0")  # bodies in memory
    assert transaction(k.relay_port, message(6 * MIB, "fits"))[0] == 250
    r = transaction(k.relay_port, message(18 * MIB, "too-much"), chunk=MIB)
    assert (r[0], r[1]) == (451, "4.3.1"), r
    assert k.running()
    k.wait_for("refused: over the memory soft limit")  # the reader thread may lag
    m = metrics(k.http_port)
    assert m["memory_buffered_bytes"] == 0
    assert m['smtp_limit_denied_total{limit=memory}'] == 1


def test_size_claims_are_not_reserved_under_an_address_space_limit(kumod, tmp_path):
    """SIZE=1000000 on 300 small messages held 1 MiB each (kumod aborted with
    `xrealloc: out of memory` under RLIMIT_AS); now each keeps its bytes."""
    probe = start(kumod, tmp_path, 9, name="probe.lua")
    vsz = proc_status(probe.pid, "VmSize")
    probe.stop()
    limit = vsz + 160 * MIB

    def as_limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    # mx port 9 (discard, closed): every message stays queued in memory
    k = start(kumod, tmp_path, 9, env={"MALLOC_ARENA_MAX": "1"}, preexec=as_limit)
    data = message(1500, "size-claim")
    c = Smtp(k.relay_port)
    assert c.reply()[0] == 220
    assert c.cmd("EHLO client.test")[0] == 250
    for i in range(300):
        assert c.cmd("MAIL FROM:<a@example.com> SIZE=1000000")[0] == 250
        assert c.cmd("RCPT TO:<b%d@example.com>" % i)[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.s.sendall(data + b".\r\n")
        r = c.reply()
        assert r[0] == 250, (i, r)
    c.cmd("QUIT")
    c.close()
    assert k.running()


test_size_claims_are_not_reserved_under_an_address_space_limit = pytest.mark.nosan(
    test_size_claims_are_not_reserved_under_an_address_space_limit)


def test_allocation_failure_under_an_address_space_limit(kumod, tmp_path):
    """RLIMIT_AS 96 MiB above the start and no memory limit configured:
    concurrent injects of 1 MiB messages to 30 recipients each (30 MiB of
    built messages per request) run out of address space. kumod aborted
    (`panic: xrealloc: out of memory`); now the failed allocation uses the
    emergency reserve, the rest is refused (503 / 451 4.3.1 per recipient),
    kumod stays up, every acknowledged message is delivered, and once memory
    is back new mail is accepted."""
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    probe = start(kumod, tmp_path, 9, name="probe.lua")
    vsz = proc_status(probe.pid, "VmSize")
    probe.stop()
    limit = vsz + 96 * MIB

    def as_limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    k = start(kumod, tmp_path, sink.smtp_port, env={"MALLOC_ARENA_MAX": "1"}, preexec=as_limit,
              http=", request_body_limit = 4000000")
    content = message(MIB, "big").decode()

    def one(i):
        try:
            return inject(k.http_port, {"envelope_sender": "a@example.com", "content": content,
                                        "recipients": [{"email": "r%d-%d@example.com" % (i, j)}
                                                       for j in range(30)]})
        except (OSError, http.client.HTTPException) as e:
            return (0, {}, {"error": str(e)})

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as ex:
        results = list(ex.map(one, range(12)))
    assert k.running(), k.stderr()[-2000:]
    # 0: refused from the head (503 and close) while the client still sent
    # its body, so it saw the connection closed
    statuses = sorted({r[0] for r in results})
    assert set(statuses) <= {0, 200, 503}, [(r[0], r[2]) for r in results
                                            if r[0] not in (0, 200, 503)]
    k.wait_for("emergency reserve was given up")
    accepted = sum(r[2].get("success_count", 0) for r in results)
    refused = sum(1 for r in results for e in r[2].get("errors", []) if "451 4.3.1" in e)
    refused += sum(30 for r in results if r[0] in (0, 503) and "success_count" not in r[2])
    assert refused > 0 and accepted + refused <= 12 * 30, (accepted, refused)
    # nothing acknowledged is lost; memory comes back, and mail with it
    assert wait_until(lambda: len(captured(capture)) >= accepted, timeout=60), (
        accepted, len(captured(capture)))
    small = message(2000, "after").decode()
    assert wait_until(lambda: inject(k.http_port, {
        "envelope_sender": "a@example.com", "content": small,
        "recipients": [{"email": "b@example.com"}]})[0] == 200, timeout=30)
    k.wait_for("emergency memory reserve taken back")


test_allocation_failure_under_an_address_space_limit = pytest.mark.nosan(
    test_allocation_failure_under_an_address_space_limit)


# --- mail loops ---------------------------------------------------------------------


def test_mail_loop_refused_at_end_of_data(kumod, tmp_path):
    k = start(kumod, tmp_path, 9, public=", max_received_headers = 5")
    assert transaction(k.relay_port, message(500, "ok", received=50))[0] == 250
    r = transaction(k.relay_port, message(500, "loop", received=51))
    assert (r[0], r[1]) == (554, "5.4.6"), r
    assert transaction(k.public_port, message(500, "ok", received=5),
                       rcpt="postmaster@example.com")[0] == 250
    r = transaction(k.public_port, message(500, "loop", received=6),
                    rcpt="postmaster@example.com")
    assert (r[0], r[1]) == (554, "5.4.6"), r
    k.wait_for("mail loop: 51 Received headers, limit 50")
    m = metrics(k.http_port)
    assert m['smtp_limit_denied_total{limit=max_received_headers}'] == 2


def inject(port, body, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    c.request("POST", "/api/inject/v1", body=json.dumps(body), headers=h)
    r = c.getresponse()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(r.read() or b"{}"))
    c.close()
    return out


def test_inject_mail_loop_and_recipient_cap(kumod, tmp_path):
    k = start(kumod, tmp_path, 9, http=", max_recipients_per_inject = 3")
    loop = message(300, "loop", received=51).decode()
    st, _, j = inject(k.http_port, {"envelope_sender": "a@example.com", "content": loop,
                                    "recipients": [{"email": "b@example.com"}]})
    assert st == 200 and j["success_count"] == 0 and j["fail_count"] == 1, j
    assert "554 5.4.6" in j["errors"][0], j
    ok = message(300, "ok", received=2).decode()
    st, _, j = inject(k.http_port, {"envelope_sender": "a@example.com", "content": ok,
                                    "recipients": [{"email": "b%d@example.com" % i}
                                                   for i in range(3)]})
    assert st == 200 and j["success_count"] == 3, j
    st, _, j = inject(k.http_port, {"envelope_sender": "a@example.com", "content": ok,
                                    "recipients": [{"email": "b%d@example.com" % i}
                                                   for i in range(4)]})
    assert st == 413, (st, j)
    assert "max_recipients_per_inject is 3" in j["error"], j


def inject_rss_per_recipient(kumod, tmp_path, n, env=None):
    """RSS growth per recipient once one inject of n recipients is queued,
    routed once and deferred (the MX is closed, the retry an hour away),
    every body back in the spool only; and the mean address length."""
    k = start(kumod, tmp_path, 9, http=", max_recipients_per_inject = 0, "
              "request_body_limit = 8000000", env=env, retry="1h")
    content = message(300, "many").decode()
    rcpts = [{"email": "user%d@example%d.com" % (i, i % 50)} for i in range(n)]
    before = proc_status(k.pid, "VmRSS")
    st, _, j = inject(k.http_port, {"envelope_sender": "a@example.com", "content": content,
                                    "recipients": rcpts})
    assert st == 200 and j["success_count"] == n, (st, j.get("errors", [])[:3])

    def transfail():
        return sum(v for key, v in metrics(k.http_port).items()
                   if key.startswith("total_messages_transfail_total{service="))
    assert wait_until(lambda: transfail() >= n, timeout=60), transfail()
    m = metrics(k.http_port)
    assert m.get("message_count") == n and m.get("message_data_resident_count") == 0, \
        (m.get("message_count"), m.get("message_data_resident_count"))
    grown = proc_status(k.pid, "VmRSS") - before
    addr = sum(len(r["email"]) for r in rcpts) / n
    return grown / n, addr


def test_inject_per_recipient_memory(kumod, tmp_path):
    """10,000 recipients in one inject (docs/limits.md, "HTTP"): beyond the
    address, a queued recipient costs at most 1 KiB of RSS (about 900 bytes
    measured; it was 2.3 KiB: every body, spool record and request object
    was held until the whole request was stored) and, with the default
    message timeline (32 entries, 512 bytes), at most 1.75 KiB (about
    1,510 bytes measured: the story of one attempt, about 400 packed bytes,
    fits the default byte budget whole; a 128-byte budget still costs about
    1,200 bytes, so the timeline cannot meet 1 KiB)."""
    n = 10000
    per, addr = inject_rss_per_recipient(kumod, tmp_path / "off", n,
                                         env={"KUMOD_MESSAGE_TIMELINE": "0"})
    print("inject, no timeline: %.0f bytes of RSS per recipient (address %.0f)" % (per, addr))
    assert per - addr <= 1024, "%.0f bytes per recipient beyond the address" % (per - addr)
    per, addr = inject_rss_per_recipient(kumod, tmp_path / "tl", n)
    print("inject, default timeline: %.0f bytes of RSS per recipient" % per)
    assert per - addr <= 1792, "%.0f bytes per recipient beyond the address" % (per - addr)


test_inject_per_recipient_memory = pytest.mark.nosan(test_inject_per_recipient_memory)


# --- per-client limits ----------------------------------------------------------------


def test_per_client_connection_limit(kumod, tmp_path):
    k = start(kumod, tmp_path, 9, public=", max_connections_per_client = 4")
    held = []
    try:
        for _ in range(4):
            c = Smtp(k.public_port)
            assert c.reply()[0] == 220
            held.append(c)
        c = Smtp(k.public_port)
        r = c.reply()
        c.close()
        assert (r[0], r[1]) == (421, "4.7.0"), r
        # the relay listener trusts 127.0.0.1: no per-client limit there
        for _ in range(6):
            c = Smtp(k.relay_port)
            assert c.reply()[0] == 220
            held.append(c)
        # one closes: the client may connect again
        held.pop(0).cmd("QUIT")
        assert wait_until(lambda: _greeting(k.public_port) == 220, timeout=10)
        m = metrics(k.http_port)
        assert m['smtp_limit_denied_total{limit=max_connections_per_client}'] >= 1
        k.wait_for("denied: max_connections_per_client")  # the reader thread may lag
    finally:
        for c in held:
            c.close()


def test_per_client_limit_set_from_lua(kumod, tmp_path):
    """smtp_server_connection_accepted sets it per connection, for trusted
    clients too."""
    extra = """
kumo.on('smtp_server_connection_accepted', function(conn_meta)
  conn_meta:set_meta('max_connections_per_client', 2)
end)
"""
    k = start(kumod, tmp_path, 9, extra=extra)
    for port in (k.relay_port, k.public_port):
        held = []
        try:
            for _ in range(2):
                c = Smtp(port)
                assert c.reply()[0] == 220
                held.append(c)
            c = Smtp(port)
            r = c.reply()
            c.close()
            assert (r[0], r[1]) == (421, "4.7.0"), r
        finally:
            for c in held:
                c.close()
        wait_until(lambda: _greeting(port) == 220, timeout=10)


def _greeting(port):
    c = Smtp(port)
    try:
        return c.reply()[0]
    finally:
        c.close()


def test_per_client_connection_rate(kumod, tmp_path):
    k = start(kumod, tmp_path, 9, public=", max_connection_rate_per_client = '3/min'")
    assert [_greeting(k.public_port) for _ in range(3)] == [220, 220, 220]
    c = Smtp(k.public_port)
    r = c.reply()
    c.close()
    assert (r[0], r[1]) == (421, "4.7.0"), r
    assert _greeting(k.relay_port) == 220  # trusted: exempt
    m = metrics(k.http_port)
    assert m['smtp_limit_denied_total{limit=max_connection_rate_per_client}'] == 1


def test_over_the_soft_limit_new_work_is_refused(kumod, tmp_path):
    """A soft limit below what kumod already uses: connections get 421 4.3.2,
    injects 503 with Retry-After, liveness 503; /metrics still answers."""
    k = start(kumod, tmp_path, 9, init="kumo.set_memory_soft_limit(%d)" % MIB)
    c = Smtp(k.relay_port)
    r = c.reply()
    c.close()
    assert (r[0], r[1]) == (421, "4.3.2") and "load shedding" in r[2], r
    st, headers, j = inject(k.http_port, {"envelope_sender": "a@example.com",
                                          "content": message(300, "x").decode(),
                                          "recipients": [{"email": "b@example.com"}]})
    assert st == 503 and headers.get("retry-after") == "5", (st, headers, j)
    assert "memory" in j["error"], j
    c = http.client.HTTPConnection("127.0.0.1", k.http_port, timeout=15)
    c.request("GET", "/api/check-liveness/v1")
    assert c.getresponse().status == 503
    c.close()
    m = metrics(k.http_port)
    assert m["memory_limit"] == MIB
    assert m["memory_refused_total"] >= 2
    assert k.running()


# --- file descriptors ---------------------------------------------------------------


def nofile(n):
    def f():
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return f


def read_greeting(s):
    """The first reply line of a connected socket, or b'' when it closed
    without one."""
    out = b""
    while b"\r\n" not in out:
        try:
            chunk = s.recv(4096)
        except OSError:
            return b""
        if not chunk:
            return out
        out += chunk
    return out.split(b"\r\n", 1)[0]


def test_connection_flood_at_rlimit_nofile_256(kumod, tmp_path):
    """300 connections with 256 descriptors: each gets 220 or 421 (before,
    connections past the limit were reset without a reply); /metrics,
    injection and delivery keep working meanwhile."""
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    k = start(kumod, tmp_path, sink.smtp_port, public=", max_connections_per_client = 0",
              http=", max_connections_per_client = 0", preexec=nofile(256))
    warn = k.wait_for("exceeds what 256 open files allow")
    budget = int(warn.split("sessions are limited to ")[1].split()[0])
    assert 100 < budget < 256, warn
    socks, greetings = [], []
    try:
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", k.public_port), timeout=10)
            socks.append(s)
        for s in socks:
            greetings.append(read_greeting(s))
        codes = [g[:9] for g in greetings]
        assert all(c in (b"220 publi", b"421 4.3.2") for c in codes), sorted(set(codes))
        ok = sum(1 for c in codes if c.startswith(b"220"))
        assert 0 < ok <= budget, (ok, budget)
        # while the sessions are held: metrics, liveness, injection, delivery
        m = metrics(k.http_port)
        assert m['smtp_limit_denied_total{limit=file_descriptors}'] >= 300 - budget - 5
        st, _, j = inject(k.http_port, {"envelope_sender": "a@example.com",
                                        "content": message(300, "during").decode(),
                                        "recipients": [{"email": "b@example.com"}]})
        assert st == 200 and j["success_count"] == 1, (st, j)
        assert wait_until(lambda: len(captured(capture)) >= 1, timeout=20)
        assert k.running()
    finally:
        for s in socks:
            s.close()
    assert "accept on" not in k.stderr()  # refused with 421, never reset by EMFILE


def cpu_seconds(pid):
    """utime + stime of a process from /proc/<pid>/stat, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


ACCEPT_FAILED = re.compile(
    r"accept on (?P<addr>\S+) failed: (?P<err>[^(]+) \(open files limit (?P<limit>\d+), "
    r"(?P<sessions>\d+) sessions\); accepting paused for (?P<pause>\d+) ms")


def test_accept_out_of_descriptors_backs_off(kumod, tmp_path):
    """Something else holds descriptors (the policy keeps 100 files open), so
    accept() itself fails with EMFILE before the session budget refuses:
    logged once a second at most naming the listener and the limit, counted,
    the listener pauses instead of spinning, idle sessions give descriptors
    back, and /metrics, injection and delivery keep working."""
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    hold = "HOLD = {} for i = 1, 100 do HOLD[i] = assert(io.open('/dev/null')) end"
    k = start(kumod, tmp_path, sink.smtp_port, init=hold,
              public=", max_connections_per_client = 0",
              http=", max_connections_per_client = 0", preexec=nofile(256))
    socks = []
    try:
        for _ in range(250):
            socks.append(socket.create_connection(("127.0.0.1", k.public_port), timeout=10))
        line = k.wait_for("accept on 127.0.0.1:%d failed" % k.public_port)
        m = ACCEPT_FAILED.search(line)
        assert m, line
        assert m["addr"] == "127.0.0.1:%d" % k.public_port
        assert m["err"] == "Too many open files" and int(m["limit"]) == 256, line
        # every connection is answered (220, or 421 once the budget shrank),
        # none is reset
        codes = [read_greeting(s)[:9] for s in socks]
        assert all(c in (b"220 publi", b"421 4.3.2") for c in codes), sorted(set(codes))
        assert b"421 4.3.2" in codes
        # not spinning while the flood is held (the loop was hot before)
        t0 = cpu_seconds(k.pid)
        time.sleep(2)
        assert cpu_seconds(k.pid) - t0 < 0.5
        got = metrics(k.http_port)
        assert got["listener_accept_errors_total{service=esmtp_listener}"] > 0
        assert got["smtp_limit_denied_total{limit=fd_shed_idle}"] > 0
        st, _, j = inject(k.http_port, {"envelope_sender": "a@example.com",
                                        "content": message(300, "during").decode(),
                                        "recipients": [{"email": "b@example.com"}]})
        assert st == 200 and j["success_count"] == 1, (st, j)
        assert wait_until(lambda: len(captured(capture)) >= 1, timeout=20)
        assert k.running()
    finally:
        for s in socks:
            s.close()
    # at most one report a second
    reports = [ln for ln in k.lines() if ACCEPT_FAILED.search(ln)]
    assert 1 <= len(reports) <= 5, reports


def test_http_reserved_slot_answers_liveness_and_metrics(kumod, tmp_path):
    """With every ordinary HTTP slot held by idle connections, liveness and
    /metrics are still answered (a reserved slot); other requests get 503."""
    k = start(kumod, tmp_path, 9, http=", max_connections_per_client = 0",
              preexec=nofile(256))
    idle = []
    try:
        for _ in range(40):  # 256 descriptors: 32 ordinary slots + 8 reserved
            idle.append(socket.create_connection(("127.0.0.1", k.http_port), timeout=10))
        time.sleep(1.5)  # reserved slots are not held idle (1 s)

        def get(path):
            c = http.client.HTTPConnection("127.0.0.1", k.http_port, timeout=10)
            c.request("GET", path)
            r = c.getresponse()
            out = (r.status, r.read())
            c.close()
            return out

        assert get("/api/check-liveness/v1")[0] == 200
        assert get("/metrics")[0] == 200
        st, body = get("/api/admin/ready-q-states/v1")
        assert st == 503 and b"too many connections" in body, (st, body)
    finally:
        for s in idle:
            s.close()


# --- spool free space -----------------------------------------------------------------


def http_get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path)
    r = c.getresponse()
    out = (r.status, r.read())
    c.close()
    return out


def test_spool_min_free_space_refuses_new_mail(kumod, tmp_path):
    """define_spool{ min_free_space } beyond the file system: connections get
    421 4.3.2 (as KumoMTA), injects 503 + Retry-After, liveness 503; the free
    space is in /metrics under KumoMTA's names."""
    k = start(kumod, tmp_path, 9, spool=", min_free_space = %d" % (1 << 60))
    line = k.wait_for("new messages are refused")
    assert "data spool %s: " % (tmp_path / "var/spool/data") in line, line
    c = Smtp(k.relay_port)
    r = c.reply()
    c.close()
    assert (r[0], r[1]) == (421, "4.3.2") and r[2].endswith("disk is too full. Try later"), r
    st, headers, j = inject(k.http_port, {"envelope_sender": "a@example.com",
                                          "content": message(300, "x").decode(),
                                          "recipients": [{"email": "b@example.com"}]})
    assert st == 503 and headers.get("retry-after") == "5", (st, headers, j)
    assert j["error"] == "disk is too full", j
    st, body = http_get(k.http_port, "/api/check-liveness/v1")
    assert st == 503 and b"storage is too full" in body, (st, body)
    m = metrics(k.http_port)
    vfs = os.statvfs(tmp_path)
    free = vfs.f_bavail * vfs.f_frsize
    got = m["disk_free_bytes{name=data spool}"]
    assert abs(got - free) < 256 * MIB, (got, free)
    assert 0 <= m["disk_free_percent{name=meta spool}"] <= 100
    assert m["smtp_limit_denied_total{limit=min_free_space}"] == 1


def test_spool_min_free_space_crossed_at_run_time(kumod, tmp_path):
    """The minimum is set 256 MiB below today's free space; a 768 MiB file
    (fallocate) crosses it: DATA on an open session gets 452 4.3.1 within a
    second or so; once the file is gone the same session's mail is accepted."""
    vfs = os.statvfs(tmp_path)
    free = vfs.f_bavail * vfs.f_frsize
    if free < 2048 * MIB:
        pytest.skip("needs 2 GiB free on the test file system")
    k = start(kumod, tmp_path, 9, spool=", min_free_space = '%d'" % (free - 256 * MIB))
    c = Smtp(k.relay_port)
    filler = tmp_path / "filler"
    try:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd("MAIL FROM:<a@example.com>")[0] == 250
        assert c.cmd("RCPT TO:<b@example.com>")[0] == 250
        fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            os.posix_fallocate(fd, 0, 768 * MIB)
        finally:
            os.close(fd)
        assert wait_until(lambda: _greeting(k.relay_port) == 421, timeout=10)
        r = c.cmd("DATA")
        assert (r[0], r[1]) == (452, "4.3.1"), r
        os.unlink(filler)
        assert wait_until(lambda: _greeting(k.relay_port) == 220, timeout=10)
        assert c.cmd("DATA")[0] == 354
        c.s.sendall(message(500, "after") + b".\r\n")
        assert c.reply()[0] == 250
        k.wait_for("spool free space recovered")
    finally:
        c.close()
        if filler.exists():
            filler.unlink()


# --- HTTP -----------------------------------------------------------------------------

AUTH = """
kumo.on('http_server_validate_auth_basic', function(user, password)
  return user == 'u' and password == 'p'
end)
"""


def raw_http(port, head, timeout=5):
    """Sends a request head (no body); returns (status line, closed) read
    within timeout."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(head)
        out = b""
        closed = False
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                closed = True
                break
            out += chunk
        return out.split(b"\r\n", 1)[0], closed
    finally:
        s.close()


def test_http_auth_is_checked_before_the_body(kumod, tmp_path):
    k = start(kumod, tmp_path, 9, http=", trusted_hosts = {}", extra=AUTH)
    head = (b"POST /api/inject/v1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2000000\r\n%s\r\n")
    line, closed = raw_http(k.http_port, head % b"")
    assert line.startswith(b"HTTP/1.1 401") and closed, (line, closed)
    bad = b"Authorization: Basic dTp4\r\n"  # u:x
    line, closed = raw_http(k.http_port, head % bad)
    assert line.startswith(b"HTTP/1.1 401") and closed, (line, closed)
    # valid credentials: the body is awaited (no answer within the timeout)
    good = b"Authorization: Basic dTpw\r\n"  # u:p
    line, closed = raw_http(k.http_port, head % good, timeout=1.5)
    assert line == b"" and not closed, line
    st, _, _ = inject(k.http_port, {"envelope_sender": "a@example.com",
                                    "content": message(300, "x").decode(),
                                    "recipients": [{"email": "b@example.com"}]},
                      headers={"Authorization": "Basic dTpw"})
    assert st == 200


def test_http_per_client_connection_cap(kumod, tmp_path):
    k = start(kumod, tmp_path, 9, http=", max_connections_per_client = 4")
    held = [socket.create_connection(("127.0.0.1", k.http_port), timeout=10)
            for _ in range(4)]
    try:
        line, closed = raw_http(k.http_port, b"")
        assert line.startswith(b"HTTP/1.1 503") and closed, line
    finally:
        for s in held:
            s.close()

    def scrape():
        try:
            return metrics(k.http_port)
        except AssertionError:
            return None  # the held connections are still closing
    m = wait_until(scrape, timeout=10)
    assert m['total_connections_denied_total{service=http_listener}'] >= 1


def test_idle_sessions_are_shed_oldest_first(kumod, tmp_path):
    """Over the soft limit, DATA is refused and idle sessions are closed
    oldest first with 421 4.3.2 (the policy lowers the limit at run time)."""
    extra = """
kumo.on('smtp_server_mail_from', function(sender, conn_meta)
  if tostring(sender) == 'trigger@example.com' then
    kumo.set_memory_soft_limit(1048576)
  end
end)
"""
    k = start(kumod, tmp_path, 9, extra=extra)
    idle = []
    for _ in range(3):
        c = Smtp(k.relay_port)
        assert c.reply()[0] == 220
        assert c.cmd("EHLO idle.test")[0] == 250
        idle.append(c)
        time.sleep(0.05)  # distinct ages
    t = Smtp(k.relay_port)
    try:
        assert t.reply()[0] == 220
        assert t.cmd("EHLO trigger.test")[0] == 250
        assert t.cmd("MAIL FROM:<trigger@example.com>")[0] == 250
        assert t.cmd("RCPT TO:<b@example.com>")[0] == 250
        r = t.cmd("DATA")
        assert (r[0], r[1]) == (451, "4.3.1"), r
        # the oldest idle session was told and closed; the others were not
        r = idle[0].reply()
        assert (r[0], r[1]) == (421, "4.3.2") and "load shedding" in r[2], r
        for c in idle[1:]:
            assert c.cmd("NOOP")[0] == 250
        time.sleep(0.15)  # one shedding round per 100 ms
        r = t.cmd("DATA")
        assert (r[0], r[1]) == (451, "4.3.1"), r
        r = idle[1].reply()
        assert (r[0], r[1]) == (421, "4.3.2"), r
        assert idle[2].cmd("NOOP")[0] == 250
        m = metrics(k.http_port)
        assert m['smtp_limit_denied_total{limit=memory_shed_idle}'] == 2
    finally:
        t.close()
        for c in idle:
            c.close()
