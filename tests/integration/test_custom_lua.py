# SPDX-License-Identifier: Apache-2.0
"""The custom_lua delivery protocol: a queue whose make_queue_config names a
constructor event is delivered by the connection object that event returns
(conn:send(msg) posting to a mail-API style HTTP receiver with kumo.http).
Outcomes are checked in the JSON log records: the API's 2xx is a Delivery
carrying send's text, 5xx a TransientFailure retried with the queue's
backoff, and a kumo.reject(5xx) from send a Bounce."""

import json
import smtplib
import threading

from test_http_client import Receiver
from test_relay import records, wait_until

POLICY = r"""
kumo.on('init', function()
  kumo.define_spool { name = 'data', path = '{var}/spool/data' }
  kumo.define_spool { name = 'meta', path = '{var}/spool/meta' }
  kumo.configure_local_logs { log_dir = '{var}/logs', max_segment_duration = '1s' }
  kumo.start_esmtp_listener { listen = '127.0.0.1:0', relay_hosts = { '127.0.0.1' } }
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {
    retry_interval = '1s',
    max_retry_interval = '1s',
    protocol = { custom_lua = { constructor = 'make.mailapi' } },
  }
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path { connection_limit = 2 }
end)
local client = kumo.http.build_client {}
local opened = 0
kumo.on('make.mailapi', function(domain, tenant, campaign)
  opened = opened + 1
  local conn = { n = opened }
  function conn:send(msg)
    local resp = client
      :post('{base}/send/' .. msg:recipient().user)
      :header('Content-Type', 'application/json')
      :bearer_auth 'api-key'
      :body(kumo.json_encode {
        from = tostring(msg:sender()),
        to = tostring(msg:recipient()),
        conn = self.n,
        domain = domain,
        data = msg:get_data(),
      })
      :send()
    local text = resp:text()
    if resp:status_is_success() then
      return 'api accepted: ' .. text
    end
    if resp:status_is_client_error() then
      kumo.reject(550, 'api refused: ' .. text)
    end
    kumo.reject(451, 'api unavailable: ' .. text)
  end
  return conn
end)
"""


def send(port, rcpt):
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.sendmail("sender@example.com", [rcpt], f"Subject: t\r\nTo: <{rcpt}>\r\n\r\nhello\r\n")


def start(kumod, tmp_path, recv):
    var = tmp_path / "var"
    text = POLICY.replace("{var}", str(var)).replace("{base}", f"http://127.0.0.1:{recv.port}")
    return kumod(text), var / "logs"


def ts(rfc3339):
    """Seconds since the epoch of a record's time field."""
    from datetime import datetime
    return datetime.fromisoformat(rfc3339[:26].rstrip("Z") + "+00:00").timestamp()


def by_type(logs, t, rcpt=None):
    return [r for r in records(logs) if r.get("type") == t and
            (rcpt is None or r.get("recipient") == rcpt)]


def test_2xx_delivers_with_send_text(kumod, tmp_path):
    recv = Receiver()
    recv.handler = lambda req: (202, {}, b'{"id":"abc"}')
    try:
        k, logs = start(kumod, tmp_path, recv)
        send(k.smtp_port, "ok@api.example")
        d = wait_until(lambda: by_type(logs, "Delivery"), timeout=15)
        assert d, k.stderr()
        assert d[0]["response"]["code"] == 200
        assert d[0]["response"]["content"] == 'api accepted: {"id":"abc"}'
        assert d[0]["site"] == "unspecified->api.example@lua:make.mailapi", d[0]
        assert d[0]["delivery_protocol"] == "Lua"
        posts = [q for q in recv.got() if q["path"] == "/send/ok"]
        assert len(posts) == 1
        body = json.loads(posts[0]["body"])
        assert body["to"] == "ok@api.example" and body["domain"] == "api.example"
        assert "hello" in body["data"]
        assert posts[0]["headers"]["authorization"] == "Bearer api-key"
    finally:
        recv.stop()


def test_4xx_from_api_bounces(kumod, tmp_path):
    recv = Receiver()
    recv.handler = lambda req: (400, {}, b"no such mailbox")
    try:
        k, logs = start(kumod, tmp_path, recv)
        send(k.smtp_port, "bad@api.example")
        b = wait_until(lambda: by_type(logs, "Bounce"), timeout=15)
        assert b, k.stderr()
        assert b[0]["response"]["code"] == 550
        assert b[0]["response"]["content"] == "api refused: no such mailbox"
        assert by_type(logs, "Delivery") == []
        assert len([q for q in recv.got() if q["path"] == "/send/bad"]) == 1
    finally:
        recv.stop()


def test_5xx_retries_with_backoff_then_delivers(kumod, tmp_path):
    recv = Receiver()
    calls = {"n": 0}
    lock = threading.Lock()

    def handler(req):
        with lock:
            calls["n"] += 1
            n = calls["n"]
        return (503, {}, b"busy") if n <= 2 else (200, {}, b"queued")

    recv.handler = handler
    try:
        k, logs = start(kumod, tmp_path, recv)
        send(k.smtp_port, "retry@api.example")
        d = wait_until(lambda: by_type(logs, "Delivery"), timeout=20)
        assert d, k.stderr()
        tf = by_type(logs, "TransientFailure")
        assert len(tf) == 2, tf
        assert tf[0]["response"]["code"] == 451
        assert tf[0]["response"]["content"] == "api unavailable: busy"
        assert d[0]["response"]["content"] == "api accepted: queued"
        assert len([q for q in recv.got() if q["path"] == "/send/retry"]) == 3
        # the retry waited for the queue's backoff (retry_interval 1s, counted
        # from the message's creation as in KumoMTA; jitter at most 25 ms)
        created = ts(tf[0]["created_time"])
        assert ts(tf[1]["event_time"]) - created >= 0.97, tf
    finally:
        recv.stop()


def test_lua_error_in_send_is_transient(kumod, tmp_path):
    recv = Receiver()
    try:
        var = tmp_path / "var"
        text = POLICY.replace("{var}", str(var)).replace(
            "{base}", f"http://127.0.0.1:{recv.port}").replace(
            "local text = resp:text()", "error('broken send')")
        k = kumod(text)
        send(k.smtp_port, "err@api.example")
        tf = wait_until(lambda: by_type(var / "logs", "TransientFailure"), timeout=15)
        assert tf, k.stderr()
        assert tf[0]["response"]["code"] == 400
        assert tf[0]["response"]["content"].startswith(
            "KumoMTA internal: error in deliver_message: ")
        assert "broken send" in tf[0]["response"]["content"]
        assert by_type(var / "logs", "Bounce") == []
    finally:
        recv.stop()


def test_custom_lua_keys_are_checked(kumod, tmp_path):
    from conftest import run_kumod
    p = tmp_path / "p.lua"

    def validate(proto):
        p.write_text("kumo.make_queue_config { protocol = { custom_lua = { %s } } }\n" % proto)
        out = run_kumod(["--validate", "--policy", str(p)], cwd=str(tmp_path))
        return out.returncode, out.stdout + out.stderr
    rc, text = validate("batch_size = 10, min_batch_size = 5, max_batch_latency = '2s', "
                        "constructor = 'x'")
    assert rc == 0, text
    rc, text = validate("batch_size = 10")
    assert rc != 0 and "custom_lua needs a constructor" in text, text
    rc, text = validate("batch_size = 2, min_batch_size = 3, constructor = 'x'")
    assert rc != 0 and "custom_lua.min_batch_size 3 is larger than batch_size 2" in text, text
    rc, text = validate("batch_size = 0, constructor = 'x'")
    assert rc != 0 and "custom_lua.batch_size: must be 1 to 100000" in text, text
    rc, text = validate("max_batch_latency = 'soon', constructor = 'x'")
    assert rc != 0 and "custom_lua.max_batch_latency: invalid duration 'soon'" in text, text
    rc, text = validate("batches = 2, constructor = 'x'")
    assert rc != 0 and "unknown custom_lua key 'batches'" in text, text
