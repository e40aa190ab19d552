# SPDX-License-Identifier: Apache-2.0
"""kumod as a relay: two processes, a relay (spool, queues, dispatchers, log
records) and a sink (sink/sink.lua capturing what it receives), as KumoMTA's
own integration tests do."""

import email.utils
import glob
import json
import os
import re
import shutil
import smtplib
import subprocess
import time

import pytest

from conftest import IS_ROOT, REPO, free_port, send_until_full, tmpfs_spool

SINK_LUA = os.path.join(REPO, "sink", "sink.lua")

RELAY_POLICY = """
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool{{ name = 'data', path = '{var}/spool/data', flush = {flush} }}
  kumo.define_spool{{ name = 'meta', path = '{var}/spool/meta', flush = {flush} }}
  kumo.configure_local_logs{{ log_dir = '{var}/logs', headers = {{ 'Subject' }} }}
  kumo.start_esmtp_listener{{ listen = '127.0.0.1:0', hostname = 'relay.test',
                              relay_hosts = {{ '127.0.0.1' }} }}
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config{{
    retry_interval = '{retry}', max_retry_interval = '{retry}', max_age = '{max_age}',
    protocol = {{ smtp = {{ mx_list = {{ {mx_list} }} }} }},
  }}
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path{{ connection_limit = 4, prohibited_hosts = {{}},
                                 enable_tls = 'Disabled', connect_timeout = '2s' }}
end)
"""


def sink_start(kumod, capture, env=None):
    e = {"KUMO_SINK_LISTEN": "127.0.0.1:0", "KUMO_SINK_CAPTURE_DIR": str(capture)}
    e.update(env or {})
    return kumod(open(SINK_LUA).read(), env=e, policy_name="sink.lua")


def relay_start(kumod, var, mx_list, retry="1s", max_age="1h", flush="true", name="relay.lua",
                extra=""):
    mx = ", ".join("'%s'" % m for m in mx_list)
    text = RELAY_POLICY.format(var=var, mx_list=mx, retry=retry, max_age=max_age,
                               flush=flush) + extra
    return kumod(text, policy_name=name)


def captured(capture):
    return sorted(glob.glob(os.path.join(str(capture), "new", "*.eml")))


def wait_until(fn, timeout=20, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(step)
    return fn()


def records(log_dir):
    """Every complete JSON record in the zstd segments (an open segment may
    end in a partial frame: what decodes is used)."""
    out = []
    for f in sorted(glob.glob(os.path.join(str(log_dir), "*"))):
        if os.path.isdir(f):
            continue
        r = subprocess.run(["zstd", "-dcq", f], capture_output=True)
        data = r.stdout if r.stdout else open(f, "rb").read()
        for line in data.decode("utf-8", "replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            # a record cut short can still parse ("12" of a longer line)
            if isinstance(rec, dict) and "type" in rec:
                out.append(rec)
    return out


def send(port, rcpts, body, sender="sender@example.com", subject="relay test"):
    msg = ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nDate: %s\r\nMessage-Id: <%s@t>\r\n\r\n%s"
           % (sender, rcpts[0], subject, email.utils.formatdate(), time.monotonic_ns(), body))
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as s:
        s.ehlo("client.test")
        refused = s.sendmail(sender, rcpts, msg.encode("utf-8"))
    return msg.encode("utf-8"), refused


def test_end_to_end_bodies_are_byte_identical(kumod, tmp_path):
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    relay = relay_start(kumod, tmp_path / "var", ["127.0.0.1:%d" % sink.smtp_port])
    bodies = [
        "plain line\r\n",
        ".leading dot\r\n..two dots\r\n.\r\nnot the end\r\n",
        "8-bit: caf\u00e9 \u00fcber \u65e5\u672c\r\n",
        "long " + "x" * 900 + "\r\n",
    ]
    sent = []
    for i, b in enumerate(bodies):
        raw, refused = send(relay.smtp_port, ["user%d@example.com" % i], b)
        assert refused == {}
        sent.append(raw)
    files = wait_until(lambda: len(captured(capture)) >= len(bodies) and captured(capture))
    assert len(files) == len(bodies), relay.stderr()
    got = [open(f, "rb").read() for f in files]
    for raw in sent:
        # the relay and the sink prepend trace headers; the rest is untouched
        assert any(g.endswith(raw) for g in got), "body not delivered byte-identical: %r" % raw
    assert relay.stop() == 0
    recs = records(tmp_path / "var" / "logs")
    types = [r["type"] for r in recs]
    assert types.count("Reception") == len(bodies), types
    assert types.count("Delivery") == len(bodies), types
    d = next(r for r in recs if r["type"] == "Delivery")
    assert d["response"]["code"] == 250
    assert d["site"] == "unspecified->mx_list:127.0.0.1:%d@smtp" % sink.smtp_port, d["site"]
    # delivered messages leave the spool
    left = [f for f in glob.glob(str(tmp_path / "var" / "spool" / "*" / "**"), recursive=True)
            if os.path.isfile(f) and re.fullmatch(r"[0-9a-f]{32}", os.path.basename(f))]
    assert left == [], left


def test_tempfail_and_permfail_records(kumod, tmp_path):
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    relay = relay_start(kumod, tmp_path / "var", ["127.0.0.1:%d" % sink.smtp_port],
                        retry="1s", max_age="4s")
    send(relay.smtp_port, ["ok@example.com"], "fine\r\n")
    send(relay.smtp_port, ["permfail@example.com"], "bounce me\r\n")
    send(relay.smtp_port, ["tempfail@example.com"], "retry me\r\n")
    # the tempfail recipient is retried (1s, 2s cap 1s...) until max_age expires it
    def expired():
        return any(r["type"] == "Expiration" for r in records(tmp_path / "var" / "logs"))
    time.sleep(6)
    assert relay.stop() == 0
    recs = records(tmp_path / "var" / "logs")
    by = {}
    for r in recs:
        by.setdefault(r["type"], []).append(r)
    assert len(by.get("Delivery", [])) == 1, recs
    assert len(by.get("Bounce", [])) == 1, recs
    assert by["Bounce"][0]["response"]["code"] == 550
    assert by["Bounce"][0]["recipient"] == "permfail@example.com"
    tf = by.get("TransientFailure", [])
    assert len(tf) >= 2, "tempfail should be retried with the short interval: %r" % recs
    assert all(r["recipient"] == "tempfail@example.com" for r in tf)
    assert all(r["response"]["code"] == 451 for r in tf)
    ex = by.get("Expiration", [])
    assert len(ex) == 1 and ex[0]["response"]["code"] == 551, recs
    assert len(captured(capture)) == 1


def test_mx_fallback_to_second_host(kumod, tmp_path):
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    dead = free_port()  # nothing listens there: connection refused
    relay = relay_start(kumod, tmp_path / "var",
                        ["127.0.0.1:%d" % dead, "127.0.0.1:%d" % sink.smtp_port])
    send(relay.smtp_port, ["someone@example.com"], "via the second host\r\n")
    assert wait_until(lambda: len(captured(capture)) == 1), relay.stderr()


def test_restart_delivers_queued_mail(kumod, tmp_path):
    capture = tmp_path / "capture"
    port = free_port()
    var = tmp_path / "var"
    relay = relay_start(kumod, var, ["127.0.0.1:%d" % port], retry="1s")
    for i in range(5):
        send(relay.smtp_port, ["queued%d@example.com" % i], "held %d\r\n" % i)
    time.sleep(1)
    assert relay.stop() == 0
    assert captured(capture) == []
    # the sink comes up on the port the mail is routed to; the relay restarts
    sink = sink_start(kumod, capture, env={"KUMO_SINK_LISTEN": "127.0.0.1:%d" % port})
    assert sink.smtp_port == port
    relay2 = relay_start(kumod, var, ["127.0.0.1:%d" % port], retry="1s", name="relay2.lua")
    assert wait_until(lambda: len(captured(capture)) == 5, timeout=30), relay2.stderr()
    relay2.wait_for("spool recovery complete: 5 messages queued")


def test_kill_9_under_load_loses_nothing_acknowledged(kumod, tmp_path):
    capture = tmp_path / "capture"
    port = free_port()
    var = tmp_path / "var"
    sink = sink_start(kumod, capture, env={"KUMO_SINK_LISTEN": "127.0.0.1:%d" % port})
    relay = relay_start(kumod, var, ["127.0.0.1:%d" % port], retry="1s")
    acked = set()
    deadline = time.monotonic() + 20
    n = 0
    try:
        with smtplib.SMTP("127.0.0.1", relay.smtp_port, timeout=10) as c:
            c.ehlo("load.test")
            while time.monotonic() < deadline and n < 400:
                n += 1
                tag = "msg-%04d" % n
                body = "Subject: %s\r\n\r\n%s\r\n" % (tag, tag)
                c.sendmail("s@example.com", ["r%d@example.com" % n], body)
                acked.add(tag)
                if n == 150:
                    os.kill(relay.pid, 9)
    except (smtplib.SMTPException, OSError):
        pass  # the kill cut the session: that message was not acknowledged
    relay.kill()
    assert len(acked) >= 100
    relay2 = relay_start(kumod, var, ["127.0.0.1:%d" % port], retry="1s", name="relay2.lua")

    def tags():
        out = []
        for f in captured(capture):
            data = open(f, "rb").read().decode("utf-8", "replace")
            for line in data.splitlines():
                if line.startswith("Subject: msg-"):
                    out.append(line.split(": ", 1)[1])
        return out
    assert wait_until(lambda: acked <= set(tags()), timeout=40), (
        "acknowledged but never delivered: %r" % sorted(acked - set(tags()))[:10])
    got = tags()
    dups = len(got) - len(set(got))
    # a message whose delivery was in flight at the kill may be sent twice; nothing more
    assert dups <= 4, "%d duplicates" % dups
    relay2.stop()


@pytest.mark.skipif(not IS_ROOT, reason="mounting a tmpfs needs root")
def test_full_spool_answers_452_and_loses_nothing(kumod, tmp_path):
    var = tmp_path / "var"
    with tmpfs_spool(var, "300k"):
        capture = tmp_path / "capture"
        port = free_port()
        relay = relay_start(kumod, var, ["127.0.0.1:%d" % port], retry="1s")
        body = "Subject: big\r\n\r\n" + ("y" * 76 + "\r\n") * 400  # ~31 KiB
        acked = send_until_full(relay.smtp_port, 30, lambda i: (i, body),
                                "a 300 KiB spool and 30 x 31 KiB")
        # everything acknowledged is delivered once a sink appears
        sink_start(kumod, capture, env={"KUMO_SINK_LISTEN": "127.0.0.1:%d" % port})
        assert wait_until(lambda: len(captured(capture)) >= len(acked), timeout=30), \
            relay.stderr()
        relay.stop()


def test_admin_bounce_over_http(kumod, tmp_path):
    import http.client
    dead = free_port()  # nothing listens there: connection refused
    var = tmp_path / "var"
    text = RELAY_POLICY.format(var=var, mx_list="'127.0.0.1:%d'" % dead, retry="1h",
                               max_age="1d", flush="true")
    text = text.replace("relay_hosts = { '127.0.0.1' } }",
                        "relay_hosts = { '127.0.0.1' } }\n"
                        "  kumo.start_http_listener{ listen = '127.0.0.1:0' }")
    relay = kumod(text, policy_name="relay_http.lua")
    http_port = relay.listeners["http"][0][1]
    for i in range(3):
        send(relay.smtp_port, ["held%d@bounce.test" % i], "held\r\n")
    send(relay.smtp_port, ["other@keep.test"], "kept\r\n")

    def call(method, body=None):
        c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        c.request(method, "/api/admin/bounce/v1",
                  body=json.dumps(body) if body is not None else None, headers=hdrs)
        r = c.getresponse()
        data = json.loads(r.read() or b"null")
        c.close()
        return r.status, data

    # wait until the first attempt failed and the messages are back in their queues
    def scheduled():
        c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
        c.request("GET", "/api/admin/inspect-sched-q/v1")
        d = json.loads(c.getresponse().read())
        c.close()
        return d["scheduled_queues"].get("bounce.test") == 3
    assert wait_until(scheduled, timeout=15), relay.stderr()
    st, d = call("POST", {"domain": "bounce.test", "reason": "testing", "duration": "1m"})
    assert st == 200 and d["total_bounced"] == 3, d
    st, lst = call("GET")
    assert st == 200 and len(lst) == 1 and lst[0]["domain"] == "bounce.test", lst
    # kcli speaks the same API
    TOOLS_BIN = os.environ.get("TOOLS_BIN") or os.path.join(REPO, "build")
    kcli = [os.path.join(TOOLS_BIN, "kcli"), "--endpoint", "http://127.0.0.1:%d" % http_port]
    out = subprocess.run(kcli + ["bounce-list"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and "domain=bounce.test" in out.stdout and "testing" in out.stdout, out
    out = subprocess.run(kcli + ["bounce", "--reason", "x"], capture_output=True, text=True,
                         timeout=10)
    assert out.returncode != 0 and "refusing to bounce everything" in out.stderr, out
    # later arrivals for the domain are bounced while the entry lives
    send(relay.smtp_port, ["late@bounce.test"], "late\r\n")
    time.sleep(1.5)
    out = subprocess.run(kcli + ["bounce-cancel", str(lst[0]["id"])], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 0, out
    st, d = call("DELETE", {"id": lst[0]["id"]})
    assert st == 404
    st, d = call("POST", {"domain": "x.test"})
    assert st == 422 and "reason" in d["error"]
    assert relay.stop() == 0
    recs = records(var / "logs")
    ab = [r for r in recs if r["type"] == "AdminBounce"]
    assert sorted(r["recipient"] for r in ab) == sorted(
        ["held0@bounce.test", "held1@bounce.test", "held2@bounce.test", "late@bounce.test"]), ab
    assert all(r["response"]["code"] == 551 and "testing" in r["response"]["content"] for r in ab)
    # the kept message is still spooled; the bounced ones are gone
    ids = [os.path.basename(f) for f in glob.glob(str(var / "spool" / "meta" / "**"),
                                                   recursive=True)
           if re.fullmatch(r"[0-9a-f]{32}", os.path.basename(f))]
    assert len(ids) == 1, ids


def test_mx_list_name_addr_entries(kumod, tmp_path):
    """mx_list = { { name = ..., addr = 'IP:port' } }: connect to addr, name the
    MX by name (site and the Delivery record's peer)."""
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    var = tmp_path / "var"
    text = RELAY_POLICY.format(var=var, mx_list="{ name = 'mx.sink.test', addr = '127.0.0.1:%d' }"
                               % sink.smtp_port, retry="1s", max_age="1h", flush="true")
    relay = kumod(text, policy_name="relay-named.lua")
    send(relay.smtp_port, ["named@example.com"], "named mx\r\n")
    assert wait_until(lambda: len(captured(capture)) == 1), relay.stderr()
    assert relay.stop() == 0
    recs = [r for r in records(var / "logs") if r["type"] == "Delivery"]
    assert len(recs) == 1
    assert recs[0]["peer_address"]["name"] == "mx.sink.test"
    assert recs[0]["site"].endswith("mx_list:mx.sink.test@smtp"), recs[0]["site"]
