# SPDX-License-Identifier: Apache-2.0
"""Fail closed: a get_queue_config that fails never lets mail leave under
defaults the policy did not choose.

Every message goes to `someone@[127.0.0.1]`: a domain literal, so the
default route (no mx_list) would connect to 127.0.0.1 on the egress path's
smtp_port, which the policy points at a real receiving sink. Were kumod to
fall back to defaults, the sink would receive the message: each test checks
that it received nothing."""

import json
import os
import smtplib
import subprocess
import time

import pytest

from conftest import free_port
from test_relay import captured, records, sink_start, wait_until

BROKEN = {
    # a handler that raises (a database that is down)
    "raises": ("error('queue database is down')", "queue database is down"),
    # an mx_list entry kumod refuses (addr must be an IP address)
    "mx_entry": ("return kumo.make_queue_config{ protocol = { smtp = { mx_list = "
                 "{ { name = 'mx.test', addr = 'mx.test' } } } } }", "mx_list"),
    # a protocol kumod does not support
    "protocol": ("return kumo.make_queue_config{ protocol = { maildir_path = '/tmp/md' } }",
                 "maildir_path"),
    # a misspelt key
    "typo": ("return kumo.make_queue_config{ retry_intervall = '1m' }", "retry_intervall"),
}

POLICY = """
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool{{ name = 'data', path = '{var}/spool/data' }}
  kumo.define_spool{{ name = 'meta', path = '{var}/spool/meta' }}
  kumo.configure_local_logs{{ log_dir = '{var}/logs', max_segment_duration = '1s' }}
  kumo.start_esmtp_listener{{ listen = '127.0.0.1:0', relay_hosts = {{ '127.0.0.1' }} }}
  kumo.start_http_listener{{ listen = '127.0.0.1:0' }}
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  {queue_config}
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path{{ prohibited_hosts = {{}}, smtp_port = {sink_port},
                                 enable_tls = 'Disabled', connect_timeout = '2s' }}
end)
"""

RCPT = "someone@[127.0.0.1]"


def start(kumod, var, sink_port, queue_config, name="policy.lua"):
    text = POLICY.format(var=var, sink_port=sink_port, queue_config=queue_config)
    return kumod(text, policy_name=name)


def spooled(var):
    """Message files left in the data spool."""
    out = []
    for root, _dirs, files in os.walk(str(var / "spool" / "data")):
        out += [f for f in files if len(f) == 32]
    return out


def by_type(var, t):
    return [r for r in records(var / "logs") if r["type"] == t]


def smtp_send(port):
    msg = "From: <a@example.com>\r\nTo: <%s>\r\nSubject: fail closed\r\n\r\nbody\r\n" % RCPT
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as s:
        s.ehlo("client.test")
        s.mail("a@example.com")
        code, _ = s.rcpt(RCPT)
        assert code == 250
        return s.data(msg.encode())


def http_port(k):
    return k.listeners["http"][0][1]


def inject(port):
    body = json.dumps({"envelope_sender": "a@example.com",
                       "content": "Subject: t\r\n\r\nbody\r\n",
                       "recipients": [{"email": RCPT}]})
    r = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-H",
                        "Content-Type: application/json", "--data-binary", body,
                        "http://127.0.0.1:%d/api/inject/v1" % port],
                       capture_output=True, text=True, timeout=15)
    text, _, status = r.stdout.rpartition("\n")
    return int(status), json.loads(text)


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_reception_refuses_with_4xx(kumod, tmp_path, case):
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    var = tmp_path / "var"
    lua, why = BROKEN[case]
    k = start(kumod, var, sink.smtp_port, lua)

    code, text = smtp_send(k.smtp_port)
    text = text.decode()
    assert code == 451, text
    assert text.startswith("4.3.0 "), text
    assert why in text, text

    status, j = inject(http_port(k))
    assert status == 503, j
    assert j["success_count"] == 0 and j["fail_count"] == 1, j
    assert j["failed_recipients"] == [RCPT], j
    assert why in j["error"], j

    time.sleep(1.5)  # anything routed by defaults would reach the sink by now
    assert k.stop() == 0
    assert captured(capture) == []
    assert spooled(var) == []
    bounces = by_type(var, "Bounce")
    assert [b["reception_protocol"] for b in bounces] == ["ESMTP", "HTTP"], bounces
    for b in bounces:
        assert b["response"]["code"] == 500
        content = b["response"]["content"]
        assert content.startswith("KumoMTA internal: QueueManager::insert failed during "
                                  "reception: "), content
        assert why in content, content
        assert b["recipient"] == RCPT
    assert by_type(var, "Reception") == []
    assert by_type(var, "Delivery") == []


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_queued_message_is_kept_after_restart(kumod, tmp_path, case):
    """A message queued under a good policy; kumod restarts with a broken
    get_queue_config: it is kept, a TransientFailure says why, and nothing
    is sent."""
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    var = tmp_path / "var"
    # first life: routed to a port nobody listens on, retried only in an hour
    dead = free_port()
    good = ("return kumo.make_queue_config{ retry_interval = '1h', "
            "protocol = { smtp = { mx_list = { '127.0.0.1:%d' } } } }" % dead)
    k = start(kumod, var, sink.smtp_port, good, name="good.lua")
    code, _ = smtp_send(k.smtp_port)
    assert code == 250
    assert wait_until(lambda: by_type(var, "TransientFailure"), timeout=15), k.stderr()
    assert k.stop() == 0
    assert len(spooled(var)) == 1
    first = len(by_type(var, "TransientFailure"))

    lua, why = BROKEN[case]
    k2 = start(kumod, var, sink.smtp_port, lua, name="broken.lua")
    k2.wait_for("spool recovery complete: 1 messages queued")

    def held():
        tf = by_type(var, "TransientFailure")[first:]
        return [r for r in tf if "failed to obtain queue config" in r["response"]["content"]]

    recs = wait_until(held, timeout=15)
    assert recs, k2.stderr()
    r = recs[0]
    assert r["response"]["code"] == 451
    assert r["response"]["enhanced_code"]["class"] == 4
    assert why in r["response"]["content"]
    time.sleep(1.5)
    assert k2.stop() == 0
    assert captured(capture) == []
    assert len(spooled(var)) == 1  # kept for when the policy is fixed
    assert by_type(var, "Delivery") == []
    assert by_type(var, "Bounce") == []


def test_fixed_policy_delivers_the_held_message(kumod, tmp_path):
    """The same spool under a fixed policy: the held message goes out by the
    route the policy now gives."""
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    var = tmp_path / "var"
    k = start(kumod, var, sink.smtp_port, BROKEN["raises"][0], name="broken.lua")
    # reception refuses; the client keeps it
    code, _ = smtp_send(k.smtp_port)
    assert code == 451
    assert k.stop() == 0
    fixed = ("return kumo.make_queue_config{ protocol = { smtp = { mx_list = "
             "{ '127.0.0.1:%d' } } } }" % sink.smtp_port)
    k2 = start(kumod, var, sink.smtp_port, fixed, name="fixed.lua")
    code, _ = smtp_send(k2.smtp_port)
    assert code == 250
    assert wait_until(lambda: len(captured(capture)) == 1, timeout=15), k2.stderr()
    assert k2.stop() == 0
