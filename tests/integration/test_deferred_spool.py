# SPDX-License-Identifier: Apache-2.0
"""Deferred spooling (KumoMTA's deferred_spool): a message accepted with it
lives in memory only and is written to the spool only when it must stay
(a transient failure, a clean shutdown with it still queued).

Mail goes to a custom_lua queue (send succeeds, or raises: a
TransientFailure), so no SMTP peer is needed. Spool writes are counted with
kumod's spool_stored_total / spool_removed_total metrics and the files left
in the spool directories; deliveries with the Delivery log records."""

import http.client
import json
import os
import re
import signal
import smtplib

import pytest

from test_http_client import Receiver
from test_limits import metrics
from test_log_hooks import distinct, mail_records
from test_policy_errors import policy_error, validate
from test_relay import records, wait_until
from test_timeline import kcli

POLICY = r"""
kumo.on('init', function()
  kumo.define_spool { name = 'data', path = '{var}/spool/data' }
  kumo.define_spool { name = 'meta', path = '{var}/spool/meta' }
  kumo.configure_local_logs { log_dir = '{var}/logs', max_segment_duration = '1s' }
  kumo.start_esmtp_listener { listen = '127.0.0.1:0', relay_hosts = { '127.0.0.1' },
                              deferred_spool = {deferred} }
  kumo.start_http_listener { listen = '127.0.0.1:0' }
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {
    retry_interval = '{retry}', max_retry_interval = '{retry}',
    protocol = { custom_lua = { constructor = 'make.sink' } },
  }
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path { connection_limit = 1{path} }
end)
kumo.on('make.sink', function()
  return { send = function(self, msg) {send} end }
end)
"""

SUCCEED = "return 'sunk'"
FAIL = "error('receiver down')"
ID_RE = re.compile(r"^[0-9a-f]{32}$")


def start(kumod, var, deferred=True, send=SUCCEED, retry="1s", path="", name="policy.lua",
          env=None):
    text = (POLICY.replace("{var}", str(var)).replace("{deferred}", "true" if deferred else "false")
            .replace("{send}", send).replace("{retry}", retry).replace("{path}", path))
    k = kumod(text, policy_name=name, env=env)
    k.http_port = k.listeners["http"][0][1]
    return k


def send_mail(port, n, tag):
    """n messages, one recipient each; returns the ids from the 250 replies."""
    ids = []
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo()
        for i in range(n):
            s.mail("a@example.com")
            code, _ = s.rcpt(f"r{i}@mail.example")
            assert code == 250
            code, text = s.data(f"Subject: {tag} {i}\r\n\r\nbody {i}\r\n".encode())
            assert code == 250, (code, text)
            m = re.match(r"OK ids=([0-9a-f]{32})$", text.decode())
            assert m, text
            ids.append(m.group(1))
    return ids


def delivered(var):
    return {r["id"] for r in records(var / "logs")
            if r["type"] == "Delivery" and r.get("reception_protocol") == "ESMTP"}


def transient(var):
    return {r["id"] for r in records(var / "logs")
            if r["type"] == "TransientFailure" and r.get("reception_protocol") == "ESMTP"}


def spool_ids(var):
    """Message ids with a file in the meta spool (<bucket>/<id>)."""
    out = set()
    for root, dirs, files in os.walk(var / "spool" / "meta"):
        if "quarantine" in root:
            continue
        out.update(f for f in files if ID_RE.match(f))
    return out


def stored(k):
    m = metrics(k.http_port)
    return m.get("spool_stored_total"), m.get("spool_removed_total")


def test_delivered_message_never_touches_the_spool(kumod, tmp_path):
    var = tmp_path / "var"
    k = start(kumod, var)
    ids = send_mail(k.smtp_port, 20, "fast")
    assert wait_until(lambda: delivered(var) == set(ids), timeout=30), k.stderr()
    # nothing was written, so nothing was removed either
    assert stored(k) == (0, 0)
    assert spool_ids(var) == set()


def test_without_deferred_spool_every_message_is_spooled(kumod, tmp_path):
    var = tmp_path / "var"
    k = start(kumod, var, deferred=False)
    ids = send_mail(k.smtp_port, 5, "durable")
    assert wait_until(lambda: delivered(var) == set(ids), timeout=30), k.stderr()
    assert wait_until(lambda: stored(k) == (5, 5)), stored(k)
    assert spool_ids(var) == set()


def test_transient_failure_spools_it_and_survives_kill9(kumod, tmp_path):
    var = tmp_path / "var"
    k = start(kumod, var, send=FAIL, retry="1h",
              env={"KUMOD_LOG": "info,kumod::spool=debug"})
    ids = send_mail(k.smtp_port, 4, "retry")
    assert wait_until(lambda: transient(var) >= set(ids), timeout=30), k.stderr()
    # written because of the transient failure, not at reception
    assert wait_until(lambda: stored(k)[0] == 4), (stored(k), k.stderr())
    assert spool_ids(var) == set(ids)
    saves = [ln for ln in k.lines() if "deferred message written on" in ln]
    got = {}
    for ln in saves:
        m = re.search(r"id=([0-9a-f]{32}) deferred message written on (\S+) err=(-?\d+)", ln)
        assert m, ln
        got[m.group(1)] = (m.group(2), int(m.group(3)))
    assert got == {i: ("TransientFailure", 0) for i in ids}, saves
    # the message's timeline tells the story, in order
    r = kcli(k, "inspect-message", ids[0], "--timeline", "--json")
    assert r.returncode == 0, r.stderr
    spool = [e["detail"] for e in json.loads(r.stdout)["timeline"] if e["event"] == "Spool"]
    assert spool[0] == "deferred spool: kept in memory, not written", spool
    assert "deferred spool: spooled on TransientFailure" in spool, spool
    k.kill()
    k2 = start(kumod, var, name="policy2.lua")
    assert wait_until(lambda: delivered(var) == set(ids), timeout=30), k2.stderr()
    assert wait_until(lambda: spool_ids(var) == set()), spool_ids(var)


def test_clean_shutdown_spools_queued_messages(kumod, tmp_path):
    var = tmp_path / "var"
    # one message a minute: the rest wait in the ready queue, in memory only
    k = start(kumod, var, path=", max_message_rate = '1/min'")
    ids = send_mail(k.smtp_port, 6, "queued")
    assert wait_until(lambda: len(delivered(var)) == 1, timeout=30), k.stderr()
    assert stored(k) == (0, 0)
    assert spool_ids(var) == set()
    assert k.stop() == 0, k.stderr()
    left = set(ids) - delivered(var)
    assert len(left) == 5
    assert spool_ids(var) == left
    k2 = start(kumod, var, name="policy2.lua")
    assert wait_until(lambda: delivered(var) == set(ids), timeout=30), k2.stderr()
    assert wait_until(lambda: spool_ids(var) == set()), spool_ids(var)


def test_http_inject_deferred_spool(kumod, tmp_path):
    var = tmp_path / "var"
    k = start(kumod, var, deferred=False)
    c = http.client.HTTPConnection("127.0.0.1", k.http_port, timeout=15)
    for deferred in (True, False):
        req = {"envelope_sender": "s@example.com", "deferred_spool": deferred,
               "content": "Subject: hi\r\n\r\nbody\r\n",
               "recipients": [{"email": "r1@example.com"}, {"email": "r2@example.com"}]}
        c.request("POST", "/api/inject/v1", json.dumps(req), {"Content-Type": "application/json"})
        r = c.getresponse()
        j = json.loads(r.read())
        assert r.status == 200 and j["success_count"] == 2, (r.status, j)
    c.close()

    def injected():
        return [r for r in records(var / "logs")
                if r["type"] == "Delivery"]
    assert wait_until(lambda: len(injected()) == 4, timeout=30), k.stderr()
    # only the two messages of the second request were written (and removed)
    assert wait_until(lambda: stored(k) == (2, 2)), stored(k)


HOOK_POLICY = r"""
local log_hooks = require 'policy-extras.log_hooks'
log_hooks:new_json {
  name = 'webhook',
  url = '{url}',
  log_parameters = { headers = { 'Subject' }, deferred_spool = true },
  queue_config = { retry_interval = '1s', max_retry_interval = '1s' },
}
kumo.on('init', function()
  kumo.define_spool { name = 'data', path = '{var}/spool/data' }
  kumo.define_spool { name = 'meta', path = '{var}/spool/meta' }
  kumo.configure_local_logs { log_dir = '{var}/logs', max_segment_duration = '1s' }
  kumo.start_esmtp_listener { listen = '127.0.0.1:0', relay_hosts = { '127.0.0.1' } }
  kumo.start_http_listener { listen = '127.0.0.1:0' }
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config { protocol = { custom_lua = { constructor = 'make.sink' } } }
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path { connection_limit = 1 }
end)
kumo.on('make.sink', function()
  return { send = function(self, msg) return 'sunk' end }
end)
"""


def test_log_hook_deferred_spool_delivers_every_record(kumod, tmp_path):
    recv = Receiver()
    try:
        var = tmp_path / "var"
        text = HOOK_POLICY.replace("{var}", str(var)).replace(
            "{url}", f"http://127.0.0.1:{recv.port}/log")
        k = kumod(text)
        k.http_port = k.listeners["http"][0][1]
        ids = send_mail(k.smtp_port, 10, "hooked")
        want = wait_until(lambda: len(mail_records(var)) == 20 and mail_records(var),
                          timeout=30)
        assert want and {i for _, i in want} == set(ids)
        assert wait_until(lambda: distinct(recv) >= want, timeout=30), \
            (sorted(want - distinct(recv)), k.stderr())
        # the ten mails were spooled; none of the twenty hook records was
        assert wait_until(lambda: stored(k) == (10, 10)), stored(k)
    finally:
        recv.stop()


@pytest.mark.parametrize("text,want", [
    ("kumo.on('pre_init', function() kumo.configure_log_hook { name = 'h', "
     "deferred_spool = 'yes' } end)\n",
     "kumo.configure_log_hook: deferred_spool must be a boolean"),
    ("kumo.on('init', function() kumo.start_esmtp_listener { listen = '127.0.0.1:0', "
     "deferred_spool = 1 } end)\n",
     "start_esmtp_listener: deferred_spool: expected a boolean"),
])
def test_deferred_spool_must_be_boolean(tmp_path, text, want):
    out = validate(tmp_path, text)
    assert out.returncode == 1
    got = policy_error(out)
    assert re.fullmatch(r"policy\.lua:\d+: " + re.escape(want) + ".*", got), got
