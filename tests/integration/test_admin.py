# SPDX-License-Identifier: Apache-2.0
"""Admin API over a relay and a sink: suspend (scheduled queues),
suspend-ready-q, inspect-message, over HTTP and with kcli."""

import email.utils
import http.client
import json
import os
import re
import smtplib
import subprocess
import time
import urllib.parse

from conftest import REPO
from test_relay import RELAY_POLICY, captured, records, sink_start, wait_until

TOOLS_BIN = os.environ.get("TOOLS_BIN") or os.path.join(REPO, "build")
SUSPENDED_TEXT = "KumoMTA internal: scheduled queue is suspended: "


def relay_http(kumod, var, mx, retry="1h"):
    text = RELAY_POLICY.format(var=var, mx_list="'%s'" % mx, retry=retry, max_age="1d",
                               flush="true")
    text = text.replace("relay_hosts = { '127.0.0.1' } }",
                        "relay_hosts = { '127.0.0.1' } }\n"
                        "  kumo.start_http_listener{ listen = '127.0.0.1:0' }")
    relay = kumod(text, policy_name="relay_admin.lua")
    return relay, relay.listeners["http"][0][1]


def call(port, method, path, body=None, raw=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    hdrs = {"Content-Type": "application/json"} if body is not None or raw is not None else {}
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    c.request(method, path, body=data, headers=hdrs)
    r = c.getresponse()
    payload = r.read()
    c.close()
    try:
        return r.status, json.loads(payload or b"null")
    except ValueError:
        return r.status, payload


def send_one(port, rcpt, body="hello\r\n"):
    """Sends one message; returns its spool id from the 250 reply."""
    msg = ("From: <s@example.com>\r\nTo: <%s>\r\nSubject: admin\r\nDate: %s\r\n"
           "Message-Id: <%d@t>\r\n\r\n%s" % (rcpt, email.utils.formatdate(),
                                            time.monotonic_ns(), body))
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as s:
        s.ehlo("client.test")
        s.mail("s@example.com")
        s.rcpt(rcpt)
        code, text = s.data(msg.encode())
    assert code == 250, (code, text)
    return text.decode().split("ids=")[1].strip()


def kcli(port, *args):
    return subprocess.run([os.path.join(TOOLS_BIN, "kcli"), "--endpoint",
                           "http://127.0.0.1:%d" % port, *args],
                          capture_output=True, text=True, timeout=15)


def sched_count(port, queue):
    st, d = call(port, "GET", "/api/admin/inspect-sched-q/v1?queue_name=" + queue)
    return d if st == 200 else None


def test_suspend_holds_then_cancel_delivers_once(kumod, tmp_path):
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    var = tmp_path / "var"
    relay, port = relay_http(kumod, var, "127.0.0.1:%d" % sink.smtp_port)
    st, d = call(port, "POST", "/api/admin/suspend/v1",
                 {"domain": "susp.test", "reason": "maintenance", "duration": "10m"})
    assert st == 200 and len(d["id"]) == 36, d
    sid = d["id"]
    for i in range(3):
        send_one(relay.smtp_port, "u%d@susp.test" % i)
    send_one(relay.smtp_port, "free@other.test")
    assert wait_until(lambda: len(captured(capture)) >= 1, timeout=15), relay.stderr()
    time.sleep(1.5)
    assert len(captured(capture)) == 1, "a suspended message was delivered"
    q = sched_count(port, "susp.test")
    assert q and q["num_scheduled"] == 3 and q["suspended"] is True, q
    st, lst = call(port, "GET", "/api/admin/suspend/v1")
    assert st == 200 and [e["id"] for e in lst] == [sid], lst
    e = lst[0]
    assert e["domain"] == "susp.test" and e["tenant"] is None and e["campaign"] is None, e
    assert e["reason"] == "maintenance" and e["expires"].endswith("Z"), e
    assert e["duration"].startswith("9m"), e
    # kcli shows the same entry
    out = kcli(port, "suspend-list")
    assert out.returncode == 0 and sid in out.stdout and "domain=susp.test" in out.stdout, out
    st, text = call(port, "GET", "/metrics")
    text = text.decode() if isinstance(text, bytes) else text
    assert 'suspension_count{kind="scheduled"} 1' in text, text
    assert "suspend_held_total 3" in text, text
    # a later arrival is held too
    send_one(relay.smtp_port, "late@susp.test")
    time.sleep(1)
    assert len(captured(capture)) == 1
    st, d = call(port, "DELETE", "/api/admin/suspend/v1", {"id": sid})
    assert st == 200 and d["released"] == 4, d
    assert wait_until(lambda: len(captured(capture)) >= 5, timeout=15), relay.stderr()
    time.sleep(1)
    assert len(captured(capture)) == 5
    st, lst = call(port, "GET", "/api/admin/suspend/v1")
    assert lst == []
    st, d = call(port, "DELETE", "/api/admin/suspend/v1", {"id": sid})
    assert st == 404 and sid in d["error"], d
    assert relay.stop() == 0
    recs = records(var / "logs")
    tf = [r for r in recs if r["type"] == "TransientFailure"]
    assert sorted(r["recipient"] for r in tf) == [
        "late@susp.test", "u0@susp.test", "u1@susp.test", "u2@susp.test"], tf
    for r in tf:
        assert r["response"]["code"] == 451, r
        assert r["response"]["content"] == SUSPENDED_TEXT + "maintenance", r
    delivered = [r["recipient"] for r in recs if r["type"] == "Delivery"]
    assert sorted(delivered) == sorted(["free@other.test", "late@susp.test", "u0@susp.test",
                                        "u1@susp.test", "u2@susp.test"]), delivered


def test_suspend_expiry_releases(kumod, tmp_path):
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    relay, port = relay_http(kumod, tmp_path / "var", "127.0.0.1:%d" % sink.smtp_port)
    out = kcli(port, "suspend", "--tenant", "acme", "--reason", "short", "--duration", "2s")
    assert out.returncode == 0 and out.stdout.startswith("suspension "), out
    # (that one matches no queue here: it covers kcli --tenant; both expire)
    out = kcli(port, "suspend", "--domain", "exp.test", "--reason", "short", "--duration",
               "2s", "--json")
    assert out.returncode == 0 and len(json.loads(out.stdout)["id"]) == 36, out
    t0 = time.monotonic()
    for i in range(2):
        send_one(relay.smtp_port, "e%d@exp.test" % i)
    time.sleep(0.5)
    assert captured(capture) == []
    assert wait_until(lambda: len(captured(capture)) >= 2, timeout=15), relay.stderr()
    assert time.monotonic() - t0 >= 1.0
    st, lst = call(port, "GET", "/api/admin/suspend/v1")
    assert lst == [], lst
    relay.stop()


def ready_name(sink_port):
    return "unspecified->mx_list:127.0.0.1:%d@smtp" % sink_port


def test_suspend_ready_q(kumod, tmp_path):
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    relay, port = relay_http(kumod, tmp_path / "var", "127.0.0.1:%d" % sink.smtp_port)
    name = ready_name(sink.smtp_port)
    out = kcli(port, "suspend-ready-q", "--name", name, "--reason", "peer maintenance")
    assert out.returncode == 0, out
    sid = out.stdout.split()[1]
    for i in range(3):
        send_one(relay.smtp_port, "r%d@ready.test" % i)

    def states():
        st, d = call(port, "GET", "/api/admin/ready-q-states/v1")
        return d["states_by_ready_queue"].get(name)
    assert wait_until(lambda: (states() or {}).get("ready_count") == 3, timeout=15), states()
    s = states()
    assert s["suspended"] is True and s["connection_count"] == 0, s
    time.sleep(1)
    assert captured(capture) == []
    out = kcli(port, "ready-q-states")
    rows = {l.split()[0]: l.split()[1:] for l in out.stdout.splitlines()[1:]}
    assert out.returncode == 0 and rows[name][-1] == "suspended", out
    out = kcli(port, "suspend-ready-q-list", "--json")
    lst = json.loads(out.stdout)
    assert [e["name"] for e in lst] == [name] and lst[0]["reason"] == "peer maintenance", lst
    out = kcli(port, "suspend-ready-q-cancel", "--id", sid)
    assert out.returncode == 0, out
    assert wait_until(lambda: len(captured(capture)) >= 3, timeout=15), relay.stderr()
    assert states()["suspended"] is False
    # expiry: a short suspension over HTTP
    st, d = call(port, "POST", "/api/admin/suspend-ready-q/v1",
                 {"name": name, "reason": "brief", "duration": "2s"})
    assert st == 200, d
    send_one(relay.smtp_port, "late@ready.test")
    time.sleep(0.7)
    assert len(captured(capture)) == 3
    assert wait_until(lambda: len(captured(capture)) >= 4, timeout=15), relay.stderr()
    time.sleep(0.5)
    assert len(captured(capture)) == 4
    out = kcli(port, "suspend-ready-q-cancel", "--id", d["id"])
    assert out.returncode == 1 and re.fullmatch(r"kcli: DELETE \S+: HTTP 404: .*\n", out.stderr), out
    relay.stop()


def test_inspect_message(kumod, tmp_path):
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    relay, port = relay_http(kumod, tmp_path / "var", "127.0.0.1:%d" % sink.smtp_port)
    st, d = call(port, "POST", "/api/admin/suspend/v1",
                 {"domain": "insp.test", "reason": "hold"})
    assert st == 200
    mid = send_one(relay.smtp_port, "who@insp.test", body="caf\u00e9 body\r\n")
    assert wait_until(lambda: (sched_count(port, "insp.test") or {}).get("num_scheduled"))
    path = "/api/admin/inspect-message/v1?id=%s&want_body=" % mid
    st, d = call(port, "GET", path + "false")
    assert st == 200 and d["id"] == mid, d
    m = d["message"]
    assert m["sender"] == "s@example.com" and m["recipient"] == ["who@insp.test"], m
    assert "data" not in m and isinstance(m["meta"], dict) and m["num_attempts"] == 0, m
    assert wait_until(lambda: call(port, "GET", path + "false")[1]["message"].get("due"))
    st, d = call(port, "GET", path + "true")
    assert st == 200 and "caf\u00e9 body" in d["message"]["data"], d
    assert "Subject: admin" in d["message"]["data"]
    st, d = call(port, "GET", "/api/admin/inspect-message/v1?id=" + "0" * 32)
    assert st == 404 and "0" * 32 in d["error"], d
    for bad in ["xyz", "0" * 31, "g" * 32]:
        st, d = call(port, "GET", "/api/admin/inspect-message/v1?id=" + bad)
        assert st == 400 and "message id" in d["error"], (bad, d)
    st, d = call(port, "GET", "/api/admin/inspect-message/v1")
    assert st == 400 and "'id'" in d["error"], d
    st, d = call(port, "GET", path + "maybe")
    assert st == 400 and "want_body" in d["error"], d
    out = kcli(port, "inspect-message", mid)
    assert out.returncode == 0, out
    # without --want-body: the "key: value" header block only, no blank line and body after it
    # (parsed: the random id may contain any short string)
    lines = out.stdout.splitlines()
    assert all(re.match(r"^[a-z]+: +", l) for l in lines), lines
    fields = [tuple(re.split(r": +", l, maxsplit=1)) for l in lines]
    assert dict(fields)["id"] == mid and ("to", "who@insp.test") in fields, fields
    out = kcli(port, "inspect-message", mid, "--want-body")
    assert out.returncode == 0 and "caf\u00e9 body" in out.stdout, out
    out = kcli(port, "inspect-message", mid, "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["id"] == mid, out
    out = kcli(port, "inspect-message", "0" * 32)
    assert out.returncode == 1 and re.fullmatch(r"kcli: GET \S+: HTTP 404: .*\n", out.stderr), out
    relay.stop()


def test_admin_bad_input(kumod, tmp_path):
    relay, port = relay_http(kumod, tmp_path / "var", "127.0.0.1:9")
    cases = [
        ("/api/admin/suspend/v1", {"domain": "x.test"}, 422, "reason"),
        ("/api/admin/suspend/v1", {"domain": "x.test", "reason": "r", "bogus": 1}, 422,
         "bogus"),
        ("/api/admin/suspend/v1", {"reason": "r", "duration": "5 parsecs"}, 422, "duration"),
        ("/api/admin/suspend/v1", {"reason": "r", "duration": "0s"}, 422, "duration"),
        ("/api/admin/suspend/v1", {"reason": "r", "expires": "tomorrow"}, 422, "expires"),
        ("/api/admin/suspend/v1", {"reason": "r", "expires": "2001-01-01T00:00:00Z"}, 422,
         "past"),
        ("/api/admin/suspend/v1", {"reason": "r", "duration": "5m",
                                   "expires": "2099-01-01T00:00:00Z"}, 422, "not both"),
        ("/api/admin/suspend/v1", {"reason": "r", "domain": 5}, 422, "domain"),
        ("/api/admin/suspend-ready-q/v1", {"reason": "r"}, 422, "name"),
        ("/api/admin/suspend-ready-q/v1", {"name": "q"}, 422, "reason"),
        ("/api/admin/suspend-ready-q/v1", {"name": "q", "reason": "r", "domain": "d"}, 422,
         "domain"),
        ("/api/admin/suspend-ready-q/v1", {"name": "q", "reason": "r", "duration": "soon"},
         422, "duration"),
    ]
    for path, body, status, word in cases:
        st, d = call(port, "POST", path, body)
        assert st == status and word in d["error"], (body, st, d)
    st, d = call(port, "POST", "/api/admin/suspend/v1", raw="{not json")
    assert st == 400, d
    st, d = call(port, "DELETE", "/api/admin/suspend/v1", {"id": 5})
    assert st == 422 and "id" in d["error"], d
    st, d = call(port, "DELETE", "/api/admin/suspend-ready-q/v1", {"id": "nope"})
    assert st == 404 and "nope" in d["error"], d
    # expires in RFC 3339 with an offset is accepted
    st, d = call(port, "POST", "/api/admin/suspend/v1",
                 {"reason": "r", "domain": "later.test", "expires": "2099-01-01T01:00:00+01:00"})
    assert st == 200, d
    st, lst = call(port, "GET", "/api/admin/suspend/v1")
    assert lst[0]["expires"] == "2099-01-01T00:00:00.000Z", lst
    # kcli: one-line errors naming the problem
    for args, word in [(["suspend", "--domain", "x"], "--reason"),
                       (["suspend", "--reason", "r"], "refusing"),
                       (["suspend", "--domain", "x", "--reason", "r", "--duration", "bad"],
                        "duration"),
                       (["suspend-ready-q", "--reason", "r"], "--name"),
                       (["suspend-cancel"], "id"),
                       (["suspend-ready-q-cancel", "--id", "nope"], "404"),
                       (["inspect-message"], "message ID"),
                       (["inspect-message", "zz"], "400"),
                       (["suspend", "--bogus"], "--bogus")]:
        out = kcli(port, *args)
        assert out.returncode == 1, (args, out)
        assert len(out.stderr.strip().splitlines()) == 1 and word in out.stderr, (args, out)
    for cmd in ["suspend", "suspend-list", "suspend-cancel", "suspend-ready-q",
                "suspend-ready-q-list", "suspend-ready-q-cancel", "inspect-message"]:
        out = kcli(port, cmd, "--help")
        assert out.returncode == 0 and ("kcli [--endpoint URL] " + cmd) in out.stdout, out
    relay.stop()


def test_inspect_ready_q_shows_state_and_dispatchers(kumod, tmp_path):
    """A destination that accepts TCP but never greets keeps a dispatcher
    waiting for the banner: inspect-ready-q shows it with its phase."""
    import socket

    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(16)
    try:
        mport = mute.getsockname()[1]
        relay, port = relay_http(kumod, tmp_path / "var", "127.0.0.1:%d" % mport)
        send_one(relay.smtp_port, "a@stall.test")
        send_one(relay.smtp_port, "b@stall.test")
        name = "unspecified->mx_list:127.0.0.1:%d@smtp" % mport

        def inspected():
            st, d = call(port, "GET", "/api/admin/inspect-ready-q/v1?queue_name="
                         + urllib.parse.quote(name, safe=""))
            return d if st == 200 and d["state"]["connection_count"] >= 1 else None
        d = wait_until(inspected, timeout=10)
        assert d, relay.stderr()
        assert d["queue_name"] == name and d["egress_source"] == "unspecified"
        assert d["mx"] == [{"host": "127.0.0.1", "addr": "127.0.0.1:%d" % mport}], d["mx"]
        assert d["state"]["ready_count"] + d["state"]["connection_count"] >= 2, d["state"]
        assert d["state"]["suspended"] is False
        assert d["path_config"]["connection_limit"] == 4
        assert d["path_config"]["enable_tls"] == "Disabled"
        assert d["path_config"]["enable_pipelining"] is True
        ds = d["dispatchers"]
        assert ds and all(x["phase"] and x["age"] >= 0 for x in ds), ds
        assert all(x["started_at"].endswith("Z") for x in ds), ds

        st, e = call(port, "GET", "/api/admin/inspect-ready-q/v1?queue_name=nope")
        assert st == 404 and "nope" in e["error"], e
        st, e = call(port, "GET", "/api/admin/inspect-ready-q/v1")
        assert st == 400 and "queue_name" in e["error"], e

        r = kcli(port, "inspect-ready-q", name)
        assert r.returncode == 0, r.stderr
        assert "ready queue %s" % name in r.stdout and "mx 127.0.0.1" in r.stdout, r.stdout
        assert "session " not in r.stdout  # only with --connections
        r = kcli(port, "inspect-ready-q", name, "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["queue_name"] == name
        assert d["scheduled_queue_names"] == ["stall.test"], d
        r = kcli(port, "inspect-ready-q", name, "--sched-q", "--config", "--connections")
        assert r.returncode == 0, r.stderr
        assert "scheduled queues feeding it:\n  stall.test" in r.stdout, r.stdout
        assert "connection_limit = 4" in r.stdout and "connections:\n  session " in r.stdout
        r = kcli(port, "inspect-ready-q", "nope")
        assert r.returncode == 1 and "nope" in r.stderr, r.stderr
        # queue-summary --domain keeps the ready queue holding that domain's mail
        site = "mx_list:127.0.0.1:%d" % mport
        r = kcli(port, "queue-summary", "--domain", "STALL.test")
        assert r.returncode == 0 and site in r.stdout, (r.stdout, r.stderr)
        r = kcli(port, "queue-summary", "--domain", "other.test")
        assert r.returncode == 0 and site not in r.stdout, r.stdout
        relay.stop()
    finally:
        mute.close()


def test_next_due_of_a_delayed_message(kumod, tmp_path):
    """A message that failed once waits for its retry: the scheduled queue's next due time
    is that retry time in kcli's JSON, kcli's line and kumo-console --once --json."""
    var = tmp_path / "var"
    text = RELAY_POLICY.format(var=var, mx_list="'127.0.0.1:9'", retry="1h", max_age="1d",
                               flush="true")
    text = text.replace("relay_hosts = { '127.0.0.1' } }",
                        "relay_hosts = { '127.0.0.1' } }\n"
                        "  kumo.start_http_listener{ listen = '127.0.0.1:0' }")
    relay = kumod(text, policy_name="relay_due.lua", args=["--tokio-console"],
                  env={"TOKIO_CONSOLE_BIND": "127.0.0.1:0",
                       "TOKIO_CONSOLE_PUBLISH_INTERVAL": "100ms"})
    port = relay.listeners["http"][0][1]
    console_port = relay.listeners["console"][0][1]
    before = time.time()
    mid = send_one(relay.smtp_port, "late@due.test")

    def msg_due():
        st, d = call(port, "GET", "/api/admin/inspect-message/v1?id=%s&want_body=false" % mid)
        return st == 200 and d["message"]["num_attempts"] == 1 and d["message"].get("due")
    assert wait_until(msg_due, timeout=20), relay.stderr()
    out = kcli(port, "inspect-sched-q", "due.test", "--json")
    d = json.loads(out.stdout)
    assert d["num_scheduled"] == 1, d
    # retry_interval 1h (jitter aside): due an hour after the failed attempt
    assert isinstance(d["next_due"], float) and d["next_due"] > before + 1800, d
    out = kcli(port, "inspect-sched-q", "due.test")
    m = re.fullmatch(r"queue due\.test: 1 scheduled, next due in (\d+)s\n", out.stdout)
    assert m and int(m.group(1)) > 1800, out.stdout
    # without a queue: a table like queue-summary's, not raw JSON
    out = kcli(port, "inspect-sched-q")
    rows = [l.split() for l in out.stdout.splitlines()]
    assert rows == [["SCHEDULED", "QUEUE", "COUNT"], ["due.test", "1"]], out.stdout
    def console_queues():
        # a snapshot holds the queues of the last publish tick (100 ms here):
        # one taken right after the retry was scheduled may predate it
        r = subprocess.run([os.path.join(TOOLS_BIN, "kumo-console"), "--once", "--json",
                            "127.0.0.1:%d" % console_port], capture_output=True, text=True,
                           timeout=20)
        assert r.returncode == 0, r.stderr
        q = {(x["kind"], x["name"]): x for x in json.loads(r.stdout)["queues"]}
        return q if ("scheduled", "due.test") in q else None
    q = wait_until(console_queues, timeout=10)
    assert q, "the console never listed the scheduled queue due.test"
    nd = q[("scheduled", "due.test")]["next_due_ms"]
    assert abs(nd / 1000.0 - d["next_due"]) < 1.0, (nd, d)
    relay.stop()
