# SPDX-License-Identifier: Apache-2.0
"""Log hooks: KumoMTA's webhook recipe (policy-extras.log_hooks new_json)
delivering every log record to a Python HTTP receiver, at least once:
receiver down then up, 500s then success, kill -9 in the middle.

Mail goes to a custom_lua queue whose send succeeds at once, so each message
makes exactly two records (Reception, Delivery); the test counts distinct
(type, id) pairs the receiver got."""

import json
import os
import signal
import smtplib
import threading
import time

from conftest import free_port
from test_http_client import Receiver
from test_relay import records, wait_until

ROUTING = r"""
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config { protocol = { custom_lua = { constructor = 'make.sink' } } }
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path { connection_limit = 1 }
end)
"""

POLICY = r"""
local log_hooks = require 'policy-extras.log_hooks'
log_hooks:new_json {
  name = 'webhook',
  url = '{url}',
  log_parameters = { headers = { 'Subject' } },
  queue_config = { retry_interval = '1s', max_retry_interval = '1s' },
}
kumo.on('init', function()
  kumo.define_spool { name = 'data', path = '{var}/spool/data' }
  kumo.define_spool { name = 'meta', path = '{var}/spool/meta' }
  kumo.configure_local_logs { log_dir = '{var}/logs', max_segment_duration = '1s' }
  kumo.start_esmtp_listener { listen = '127.0.0.1:0', relay_hosts = { '127.0.0.1' } }
end)
{routing}kumo.on('make.sink', function()
  return { send = function(self, msg) return 'sunk' end }
end)
"""


def start(kumod, tmp_path, url):
    var = tmp_path / "var"
    text = POLICY.replace("{routing}", ROUTING).replace("{var}", str(var)).replace("{url}", url)
    return kumod(text), var


def send(port, n, tag):
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        for i in range(n):
            s.sendmail("a@example.com", [f"r{i}@mail.example"],
                       f"Subject: {tag} {i}\r\n\r\nbody\r\n")


def got_records(recv):
    out = []
    for q in recv.got():
        if q["path"] == "/log" and q["method"] == "POST":
            out.append(json.loads(q["body"]))
    return out


def distinct(recv):
    return {(r["type"], r["id"]) for r in got_records(recv)}


def mail_records(var):
    """(type, id) of the mail's own Reception and Delivery records."""
    return {(r["type"], r["id"]) for r in records(var / "logs")
            if r.get("reception_protocol") == "ESMTP" and r["type"] in ("Reception", "Delivery")}


def test_webhook_example_delivers_every_record(kumod, tmp_path):
    recv = Receiver()
    try:
        k, var = start(kumod, tmp_path, f"http://127.0.0.1:{recv.port}/log")
        send(k.smtp_port, 3, "hello")
        assert wait_until(lambda: len(distinct(recv)) >= 6, timeout=20), (got_records(recv),
                                                                          k.stderr())
        want = wait_until(lambda: len(mail_records(var)) == 6 and mail_records(var))
        assert distinct(recv) == want
        recs = got_records(recv)
        rec = next(r for r in recs if r["type"] == "Reception")
        assert rec["headers"]["Subject"].startswith("hello ")
        assert rec["reception_protocol"] == "ESMTP"
        q = next(q for q in recv.got() if q["path"] == "/log")
        assert q["headers"]["content-type"] == "application/json"
        # the hook's own deliveries are logged locally, never hooked again
        assert wait_until(lambda: len([r for r in records(var / "logs")
                                       if r.get("reception_protocol") == "LogRecord"
                                       and r["type"] == "Delivery"]) >= 6)
        hook_deliveries = [r for r in records(var / "logs")
                           if r.get("reception_protocol") == "LogRecord"
                           and r["type"] == "Delivery"]
        assert hook_deliveries[0]["queue"] == "webhook.log_hook"
        assert hook_deliveries[0]["response"]["content"].startswith("200 OK: ")
        assert all(r.get("reception_protocol") != "LogRecord" for r in recs)
    finally:
        recv.stop()


def test_receiver_down_then_up(kumod, tmp_path):
    port = free_port()
    k, var = start(kumod, tmp_path, f"http://127.0.0.1:{port}/log")
    send(k.smtp_port, 5, "down")
    # the hook queue fails while nobody listens
    assert wait_until(lambda: [r for r in records(var / "logs")
                               if r["type"] == "TransientFailure"
                               and r.get("queue") == "webhook.log_hook"], timeout=20), k.stderr()
    recv = Receiver(port=port)
    try:
        want = wait_until(lambda: len(mail_records(var)) == 10 and mail_records(var))
        assert want
        assert wait_until(lambda: distinct(recv) >= want, timeout=30), \
            (sorted(want - distinct(recv)), k.stderr())
    finally:
        recv.stop()


def test_500s_then_success(kumod, tmp_path):
    recv = Receiver()
    calls = {"n": 0}
    lock = threading.Lock()

    def handler(req):
        with lock:
            calls["n"] += 1
            n = calls["n"]
        return (500, {}, b"oops") if n <= 8 else (200, {}, b"thanks")

    recv.handler = handler  # /hook is answered by the handler
    try:
        k, var = start(kumod, tmp_path, f"http://127.0.0.1:{recv.port}/hook")
        send(k.smtp_port, 4, "five")
        want = wait_until(lambda: len(mail_records(var)) == 8 and mail_records(var))
        assert want

        def ok_records():
            return {(json.loads(q["body"])["type"], json.loads(q["body"])["id"])
                    for q in recv.got() if q["path"] == "/hook"}
        assert wait_until(lambda: ok_records() >= want and calls["n"] >= 16, timeout=40), \
            (calls, k.stderr())
        tf = [r for r in records(var / "logs") if r["type"] == "TransientFailure"
              and r.get("queue") == "webhook.log_hook"]
        assert len(tf) >= 8 and tf[0]["response"]["code"] == 451
        assert tf[0]["response"]["content"] == "500 Internal Server Error: oops"
        assert not [r for r in records(var / "logs") if r["type"] == "Bounce"]
    finally:
        recv.stop()


def test_kill_9_mid_stream_loses_none(kumod, tmp_path):
    recv = Receiver()
    recv.handler = lambda req: (time.sleep(0.25), (200, {}, b"ok"))[1]
    try:
        url = f"http://127.0.0.1:{recv.port}/slow-hook"
        k, var = start(kumod, tmp_path, url)
        send(k.smtp_port, 8, "kill")
        want = wait_until(lambda: len(mail_records(var)) == 16 and mail_records(var))
        assert want

        def spooled():
            d = var / "spool" / "meta"
            return sum(len(fs) for _, _, fs in os.walk(d))
        # every hook record is durable before the kill (one spool file each)
        assert wait_until(lambda: spooled() >= 16 - len(recv.got()), timeout=10)
        assert wait_until(lambda: len(recv.got()) >= 3, timeout=20)
        k.proc.send_signal(signal.SIGKILL)
        k.proc.wait(10)
        before = len(recv.got())
        assert before < 16, "everything arrived before the kill: the test proved nothing"

        def got():
            return {(json.loads(q["body"])["type"], json.loads(q["body"])["id"])
                    for q in recv.got() if q["path"] == "/slow-hook"}
        k2, _ = start(kumod, tmp_path, url)
        assert wait_until(lambda: got() >= want, timeout=40), sorted(want - got())
    finally:
        recv.stop()


TEMPLATE_POLICY = r"""
kumo.on('init', function()
  kumo.define_spool { name = 'data', path = '{var}/spool/data' }
  kumo.define_spool { name = 'meta', path = '{var}/spool/meta' }
  kumo.start_esmtp_listener { listen = '127.0.0.1:0', relay_hosts = { '127.0.0.1' } }
  kumo.configure_local_logs { log_dir = '{var}/logs', max_segment_duration = '1s' }
  kumo.start_http_listener { listen = '127.0.0.1:0', trusted_hosts = { '127.0.0.1' } }
  kumo.configure_log_hook {
    name = 'tpl', headers = { 'Subject' },
    per_record = {
      Reception = { template = 'R {{ sender }} [{{ headers.Subject }}] {{ log_record.type }}' },
      Any = { enable = false },
    },
  }
end)
kumo.on('should_enqueue_log_record', function(msg, hook)
  -- a witness: called synchronously when a record is emitted, for the
  -- types the hook takes
  local f = assert(io.open('{var}/enqueued.txt', 'a'))
  f:write(msg:get_meta('log_record').type, '\n')
  f:close()
  msg:set_meta('queue', 'hooked')
  return hook == 'tpl'
end)
{routing}kumo.on('make.sink', function()
  return { send = function(self, msg)
    if msg:get_meta('reception_protocol') == 'LogRecord' then
      local f = assert(io.open('{var}/bodies.txt', 'a'))
      f:write(msg:get_data(), '\n')
      f:close()
    end
    return 'sunk'
  end }
end)
"""


def test_per_record_template_and_any(kumod, tmp_path):
    """per_record: Reception's template makes the hook message's body; Any
    (enable = false) keeps every other type out."""
    var = tmp_path / "var"
    k = kumod(TEMPLATE_POLICY.replace("{routing}", ROUTING).replace("{var}", str(var)))
    send(k.smtp_port, 3, "tpl")
    bodies = var / "bodies.txt"

    def lines():
        return bodies.read_text().splitlines() if bodies.exists() else []
    assert wait_until(lambda: len(lines()) >= 3, timeout=20), k.stderr()
    # once the mail's Delivery records are written, the hook has decided on
    # them (synchronously, at emission): should_enqueue saw Receptions only
    assert wait_until(lambda: len([r for r in records(var / "logs")
                                   if r.get("reception_protocol") == "ESMTP"
                                   and r["type"] == "Delivery"]) == 3, timeout=20)
    assert (var / "enqueued.txt").read_text().split() == ["Reception"] * 3
    assert sorted(lines()) == ["R a@example.com [tpl %d] Reception" % i for i in range(3)]
    from test_limits import metrics
    m = metrics(k.listeners["http"][0][1])
    assert m["log_hook_records_total{outcome=queued}"] == 3, m
    assert m["log_hook_records_total{outcome=declined}"] == 0, m
    assert m["log_hook_records_total{outcome=dropped}"] == 0, m
    assert "log_hook_backlog_count" in m, m
    assert k.stop() == 0


def validate_hook(tmp_path, per_record):
    """kumod --validate of a policy configuring a hook with per_record."""
    from conftest import KUMOD_BIN, kumod_env
    import subprocess
    policy = tmp_path / "p.lua"
    policy.write_text("kumo.on('init', function()\n"
                      "  kumo.configure_log_hook { name = 'h', per_record = {\n"
                      "    %s } }\n"
                      "end)\n" % per_record)
    return subprocess.run([KUMOD_BIN, "--policy", str(policy), "--validate"],
                          env=kumod_env(), capture_output=True, text=True, timeout=20)


def test_per_record_template_errors_are_refused(tmp_path):
    out = validate_hook(tmp_path, "Bounce = { template = '{{ recipient' }")
    assert out.returncode == 1
    assert "kumo.configure_log_hook: hook 'h': per_record.Bounce.template: line 1 column" \
        in out.stderr, out.stderr
    out = validate_hook(tmp_path, "Bounced = { enable = false }")
    assert out.returncode == 1
    assert "per_record: unknown record type 'Bounced'" in out.stderr, out.stderr
    assert validate_hook(tmp_path, "Any = { template = '{{ type }}' }").returncode == 0


BATCH_POLICY = r"""
local log_hooks = require 'policy-extras.log_hooks'
log_hooks:new_json {
  name = 'webhook',
  url = '{url}',
  batch_size = {batch}, min_batch_size = {batch}, max_batch_latency = '{latency}',
  queue_config = { retry_interval = '1s', max_retry_interval = '1s' },
}
kumo.on('init', function()
  kumo.define_spool { name = 'data', path = '{var}/spool/data' }
  kumo.define_spool { name = 'meta', path = '{var}/spool/meta' }
  kumo.configure_local_logs { log_dir = '{var}/logs', max_segment_duration = '1s' }
  kumo.start_esmtp_listener { listen = '127.0.0.1:0', relay_hosts = { '127.0.0.1' } }
end)
{routing}kumo.on('make.sink', function()
  return { send = function(self, msg) return 'sunk' end }
end)
"""


def start_batched(kumod, tmp_path, url, batch, latency="15s"):
    var = tmp_path / "var"
    text = (BATCH_POLICY.replace("{routing}", ROUTING).replace("{var}", str(var))
            .replace("{url}", url).replace("{batch}", str(batch)).replace("{latency}", latency))
    return kumod(text), var


def batches(recv, path):
    """The JSON arrays POSTed to path, in arrival order."""
    return [json.loads(q["body"]) for q in recv.got() if q["path"] == path]


def test_batches_of_the_configured_size(kumod, tmp_path):
    """batch_size = min_batch_size = 5 (latency 15 s, longer than the test
    waits): 5 mails make 10 records, POSTed as exactly two JSON arrays of 5."""
    recv = Receiver()
    try:
        k, var = start_batched(kumod, tmp_path, f"http://127.0.0.1:{recv.port}/log", 5)
        send(k.smtp_port, 5, "batch")
        want = wait_until(lambda: len(mail_records(var)) == 10 and mail_records(var))
        assert want

        def got():
            return {(r["type"], r["id"]) for b in batches(recv, "/log") for r in b}
        assert wait_until(lambda: got() >= want, timeout=15), (batches(recv, "/log"),
                                                               k.stderr())
        assert [len(b) for b in batches(recv, "/log")] == [5, 5]
        # each hook message is delivered once, by its batch's answer
        dl = wait_until(lambda: len([r for r in records(var / "logs")
                                     if r.get("queue") == "webhook.log_hook"
                                     and r["type"] == "Delivery"]) == 10, timeout=10)
        assert dl
    finally:
        recv.stop()


def test_partial_batch_goes_after_max_batch_latency(kumod, tmp_path):
    """min_batch_size 10 is never reached by one mail's 2 records: they go
    together as one array once max_batch_latency (2 s) has passed, not
    before."""
    recv = Receiver()
    try:
        k, var = start_batched(kumod, tmp_path, f"http://127.0.0.1:{recv.port}/log", 10, "2s")
        t0 = time.monotonic()  # the batch cannot start before the mail's first record
        send(k.smtp_port, 1, "late")
        assert wait_until(lambda: batches(recv, "/log"), timeout=10), k.stderr()
        waited = time.monotonic() - t0
        want = wait_until(lambda: len(mail_records(var)) == 2 and mail_records(var))
        assert want
        assert [{(r["type"], r["id"]) for r in b} for b in batches(recv, "/log")] == [want]
        assert waited >= 1.9, waited  # held for the latency, not sent at once
    finally:
        recv.stop()


def test_failed_batch_is_retried_whole(kumod, tmp_path):
    """The receiver answers 500 twice: the batch's 4 records are requeued
    each time (4 TransientFailures per failed call) and the third POST
    carries all of them; none is lost or bounced."""
    recv = Receiver()
    calls = {"n": 0}
    lock = threading.Lock()

    def handler(req):
        with lock:
            calls["n"] += 1
            n = calls["n"]
        return (500, {}, b"busy") if n <= 2 else (200, {}, b"thanks")

    recv.handler = handler
    try:
        k, var = start_batched(kumod, tmp_path, f"http://127.0.0.1:{recv.port}/hook", 4)
        send(k.smtp_port, 2, "retry")
        want = wait_until(lambda: len(mail_records(var)) == 4 and mail_records(var))
        assert want
        assert wait_until(lambda: calls["n"] >= 3, timeout=15), (calls, k.stderr())
        sent = batches(recv, "/hook")
        assert [len(b) for b in sent[:3]] == [4, 4, 4], sent
        for b in sent[:3]:
            assert {(r["type"], r["id"]) for r in b} == want

        def hook_records(t):
            return [r for r in records(var / "logs")
                    if r.get("queue") == "webhook.log_hook" and r["type"] == t]
        assert wait_until(lambda: len(hook_records("Delivery")) == 4, timeout=10)
        tf = hook_records("TransientFailure")
        assert len(tf) == 8, tf
        assert {r["response"]["content"] for r in tf} == {"500 Internal Server Error: busy"}
        assert hook_records("Bounce") == []
    finally:
        recv.stop()


DISPOSITION_POLICY = r"""
local log_hooks = require 'policy-extras.log_hooks'
log_hooks:new_disposition_hook {
  name = 'disp',
  hook = function(msg, record)
    local f = assert(io.open('{var}/disp.txt', 'a'))
    f:write(record.type, ' ', record.id, ' ', msg:id(), ' ', #msg:get_data(), ' ',
            tostring(next(record.meta) == nil), '\n')
    f:close()
  end,
}
kumo.on('init', function()
  kumo.define_spool { name = 'data', path = '{var}/spool/data' }
  kumo.define_spool { name = 'meta', path = '{var}/spool/meta' }
  kumo.configure_local_logs { log_dir = '{var}/logs', max_segment_duration = '1s',
                              meta = { 'tenant' } }
  kumo.start_esmtp_listener { listen = '127.0.0.1:0', relay_hosts = { '127.0.0.1' } }
end)
kumo.on('smtp_server_message_received', function(msg) msg:set_meta('tenant', 't1') end)
{routing}kumo.on('make.sink', function()
  return { send = function(self, msg) return 'sunk' end }
end)
"""


def test_disposition_hook_sees_every_record_with_its_message(kumod, tmp_path):
    """new_disposition_hook: hook(msg, record) runs for each record as it is
    emitted, with the message still whole (its data readable at Delivery),
    and the record's meta empty (a disposition hook captures none)."""
    var = tmp_path / "var"
    k = kumod(DISPOSITION_POLICY.replace("{routing}", ROUTING).replace("{var}", str(var)))
    send(k.smtp_port, 3, "disp")
    want = wait_until(lambda: len(mail_records(var)) == 6 and mail_records(var))
    assert want
    out = var / "disp.txt"
    lines = [line.split() for line in out.read_text().splitlines()] if out.exists() else []
    assert {(t, rid) for t, rid, *_ in lines} == want
    assert len(lines) == 6
    for t, rid, mid, size, meta_empty in lines:
        assert mid == rid and int(size) > 0 and meta_empty == "true", (t, rid, mid, size)
    # the local logger still captures its own meta from the same record
    assert {r["meta"].get("tenant") for r in records(var / "logs")
            if r.get("reception_protocol") == "ESMTP"} == {"t1"}
    assert k.stop() == 0


def test_disposition_hook_refusals(tmp_path):
    from conftest import KUMOD_BIN, kumod_env
    import subprocess

    def validate(text):
        p = tmp_path / "p.lua"
        p.write_text(text)
        out = subprocess.run([KUMOD_BIN, "--policy", str(p), "--validate"], env=kumod_env(),
                             capture_output=True, text=True, timeout=20)
        return out.returncode, out.stdout + out.stderr
    rc, text = validate("local h = require 'policy-extras.log_hooks'\n"
                        "h:new_disposition_hook { name = 'a', hook = function() end }\n"
                        "h:new_disposition_hook { name = 'a', hook = function() end }\n")
    assert rc == 1 and "a log hook named 'a' is already configured" in text, text
    rc, text = validate("kumo.on('init', function() kumo.configure_log_disposition_hook {\n"
                        "  name = 'x', per_record = { Any = { template = '{{ id }}' } } }\n"
                        "end)\n")
    assert rc == 1 and "per_record.Any.template: a disposition hook renders no message" \
        in text, text
