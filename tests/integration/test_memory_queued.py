# SPDX-License-Identifier: Apache-2.0
"""Lean queued messages (docs/spool.md, "Resident bodies"): a durable message
waiting in a scheduled queue keeps only its metadata in memory; its body is
read back from the spool when it is due: N queued 1 KiB messages from SMTP,
N more from HTTP inject, a restart (recovery), then every message is
delivered byte-identical once the destination comes up.

The memory budget is a benchmark, not a test assertion: `make test` runs
N = 2,000 and checks the behaviour (every body released, every message
delivered exactly once, byte-identical) and prints the RSS figures;
bench/memory-queued.sh runs N = 20,000 (KUMOD_MEMTEST_N) where the RSS
per message is also held to BUDGET (below that size the daemon's fixed
memory, e.g. RocksDB's memtables, does not amortise and the figure means
nothing)."""

import concurrent.futures
import glob
import hashlib
import http.client
import json
import os
import re
import smtplib
import time

import pytest

from conftest import free_port
from test_limits import metrics, proc_status
from test_relay import captured, sink_start, wait_until

N = int(os.environ.get("KUMOD_MEMTEST_N", "2000"))
MEASURE = N >= 20000  # RSS per message held to BUDGET (bench/memory-queued.sh)
BUDGET = 3 * 1024  # bytes of RSS per queued 1 KiB message (target 1.5 KiB)

POLICY = """
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool{{ name = 'data', path = '{var}/spool/data', flush = false {kind} }}
  kumo.define_spool{{ name = 'meta', path = '{var}/spool/meta', flush = false {kind} }}
  kumo.start_esmtp_listener{{ listen = '127.0.0.1:0', hostname = 'relay.test',
                              relay_hosts = {{ '127.0.0.1' }} }}
  kumo.start_http_listener{{ listen = '127.0.0.1:0', request_body_limit = 8000000 }}
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config{{
    retry_interval = '{retry}', max_retry_interval = '{retry}', max_age = '1d',
    protocol = {{ smtp = {{ mx_list = {{ '127.0.0.1:{port}' }} }} }},
  }}
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path{{ connection_limit = 8, prohibited_hosts = {{}},
                                 enable_tls = 'Disabled', connect_timeout = '2s' }}
end)
"""


def closed_port():
    return free_port()


def relay(kumod, var, port, retry, kind="", name="relay.lua"):
    k = kumod(POLICY.format(var=var, port=port, retry=retry, kind=kind), policy_name=name)
    k.http_port = k.listeners["http"][0][1]
    return k


def body(tag):
    """About 1 KiB, unique per message (the tag)."""
    head = ("From: <s@example.com>\r\nTo: <r@example.com>\r\nSubject: lean %s\r\n"
            "Message-Id: <%s@t>\r\n\r\n" % (tag, tag))
    line = ("%s " % tag + "x" * 70)[:72] + "\r\n"
    return (head + line * ((1024 - len(head)) // len(line) + 1)).encode()


def smtp_send(port, tags):
    sent = []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.test")
        for t in tags:
            raw = body(t)
            assert s.sendmail("s@example.com", ["r@example.com"], raw) == {}
            sent.append(raw)
    return sent


def inject(port, tags):
    """One inject per tag list: each recipient becomes its own message with
    its own content (the tag), so one request per message in a batch."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    sent = []
    for t in tags:
        raw = body(t)
        req = {"envelope_sender": "s@example.com", "content": raw.decode(),
               "recipients": [{"email": "r@example.com"}]}
        c.request("POST", "/api/inject/v1", json.dumps(req),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        j = json.loads(r.read())
        assert r.status == 200 and j["success_count"] == 1, (r.status, j)
        sent.append(raw)
    c.close()
    return sent


def parallel(fn, port, tags, workers=8):
    chunks = [tags[i::workers] for i in range(workers)]
    out = []
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        for r in ex.map(lambda ch: fn(port, ch), chunks):
            out.extend(r)
    return out


def settled(k, queued):
    """Every queued message has been attempted (the MX is closed) and its
    body released: the resident count is 0."""
    m = metrics(k.http_port)
    return (m.get("message_count") == queued and m.get("message_data_resident_count") == 0)


def rss_per_message(k, base, n, kind):
    """RSS growth per message; for RocksDB less the engine's own fixed
    memory (two databases' memtables, 2 x 2 x 4 MiB, and its 8 MiB block
    cache), which does not grow with the queue."""
    engine = 32 << 20 if "RocksDB" in kind else 0
    return (proc_status(k.pid, "VmRSS") - base - engine) / n


@pytest.mark.nosan
# RocksDB keeps recent values in its memtable (64 MiB by default: about 1 KiB
# per message here): a 4 MiB write buffer keeps that out of the budget
@pytest.mark.parametrize("kind", ["", ", kind = 'RocksDB', rocks_params = { write_buffer_size = 4194304 }"],
                         ids=["LocalDisk", "RocksDB"])
def test_queued_bodies_leave_memory_and_come_back(kumod, tmp_path, kind):
    var = tmp_path / "var"
    port = closed_port()
    k = relay(kumod, var, port, "1h", kind)
    base = proc_status(k.pid, "VmRSS")

    # SMTP: N messages queued, attempted once (refused), bodies released
    sent = parallel(smtp_send, k.smtp_port, ["smtp%06d" % i for i in range(N)])
    assert wait_until(lambda: settled(k, N), timeout=120), \
        [(a, b) for a, b in metrics(k.http_port).items() if a.startswith("message_")]
    per = rss_per_message(k, base, N, kind)
    print("SMTP: RSS %.0f bytes per queued message" % per)
    assert per < BUDGET or not MEASURE, "SMTP: %.0f bytes of RSS per queued message" % per

    # HTTP inject: N more
    sent += parallel(inject, k.http_port, ["http%06d" % i for i in range(N)])
    assert wait_until(lambda: settled(k, 2 * N), timeout=120), metrics(k.http_port)
    per = rss_per_message(k, base, 2 * N, kind)
    print("SMTP + inject: RSS %.0f bytes per queued message" % per)
    assert per < BUDGET or not MEASURE, "SMTP + inject: %.0f bytes of RSS per queued message" % per

    k.stop()

    # recovery: every message re-queued from the spool, attempted once more
    # (still refused), bodies released again; the next retry is 40 s away
    k2 = relay(kumod, var, port, "40s", kind, name="relay2.lua")
    assert wait_until(lambda: settled(k2, 2 * N), timeout=180), metrics(k2.http_port)
    per = rss_per_message(k2, base, 2 * N, kind)
    print("after recovery: RSS %.0f bytes per queued message" % per)
    assert per < BUDGET or not MEASURE, "after recovery: %.0f bytes of RSS per queued message" % per

    # the destination comes up: at the retry every body is read back from
    # the spool and delivered byte-identical, each exactly once
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture, env={"KUMO_SINK_LISTEN": "127.0.0.1:%d" % port})
    assert sink.smtp_port == port
    assert wait_until(lambda: len(captured(capture)) >= 2 * N, timeout=300, step=1), \
        (len(captured(capture)), metrics(k2.http_port))
    assert wait_until(lambda: metrics(k2.http_port).get("message_count") == 0, timeout=60)
    files = captured(capture)
    assert len(files) == 2 * N
    want = {hashlib.sha256(raw).hexdigest() for raw in sent}
    got = set()
    for f in files:
        data = open(f, "rb").read()
        # the relay and the sink prepend trace headers: the sent bytes follow
        i = data.find(b"From: <s@example.com>\r\n")
        assert i >= 0, f
        got.add(hashlib.sha256(data[i:]).hexdigest())
    assert len(want) == 2 * N
    assert got == want



def inspect(port, mid, want_body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    c.request("GET", "/api/admin/inspect-message/v1?id=%s&want_body=%s"
              % (mid, "true" if want_body else "false"))
    r = c.getresponse()
    j = json.loads(r.read())
    c.close()
    assert r.status == 200, j
    return j["message"]


def test_released_body_inspect_and_corrupt_reload(kumod, tmp_path):
    """inspect-message reads a released body back (and says it was not
    resident); a data record corrupted while its body is released is
    quarantined at the reload, the attempt is a TransientFailure naming the
    reason, and the other messages are untouched."""
    var = tmp_path / "var"
    port = closed_port()
    k = relay(kumod, var, port, "2s")
    sent = smtp_send(k.smtp_port, ["keep1", "keep2", "spoil"])
    assert wait_until(lambda: settled(k, 3), timeout=30), metrics(k.http_port)
    ids = sorted(n for n in (os.path.basename(f) for f in
                             glob.glob(str(var / "spool" / "meta" / "*" / "*")))
                 if re.fullmatch(r"[0-9a-f]{32}", n))
    assert len(ids) == 3
    bodies = {}
    for mid in ids:
        head = inspect(k.http_port, mid, False)
        assert head["size"] > 1000
        got = inspect(k.http_port, mid, True)
        assert got["size"] == head["size"]
        tag = next(t for t in ("keep1", "keep2", "spoil") if "<%s@t>" % t in got["data"])
        raw = next(r for r in sent if b"<%s@t>" % tag.encode() in r)
        assert got["data"].encode().endswith(raw)
        bodies[tag] = mid
    # flip one payload byte of the "spoil" message's data record
    mid = bodies["spoil"]
    path = var / "spool" / "data" / mid[:8] / mid
    b = bytearray(open(path, "rb").read())
    b[100] ^= 0x20
    open(path, "wb").write(bytes(b))
    assert wait_until(lambda: metrics(k.http_port).get("message_count") == 2, timeout=30)
    assert wait_until(lambda: "failed to load message data from the spool: data file: "
                      "checksum mismatch (message quarantined)" in k.stderr(), timeout=10), \
        k.stderr()[-3000:]
    moved = glob.glob(str(var / "spool" / "*" / "quarantine" / "*"))
    assert len([f for f in moved if mid in os.path.basename(f)]) == 2, moved
    for tag in ("keep1", "keep2"):
        assert inspect(k.http_port, bodies[tag], False)["num_attempts"] >= 1
