# SPDX-License-Identifier: Apache-2.0
"""The sink: build/kumod --policy sink/sink.lua (sink/README.md)."""

import os
import re
import time
import smtplib
import socket

import pytest

from conftest import REPO, free_port
from smtpraw import SMTPRaw, check, ids_of, spawn_kumod, stop_kumod, transaction

SINK = os.path.join(REPO, "sink", "sink.lua")


@pytest.fixture
def sink(tmp_path):
    """Factory: start(env) -> (Kumod, port); every sink is stopped at teardown."""
    started = []

    def start(env=None, listen_host="127.0.0.1"):
        port = free_port(listen_host)
        e = {"KUMO_SINK_PORT": str(port)}
        if listen_host != "127.0.0.1":
            e["KUMO_SINK_LISTEN"] = "[%s]:%d" % (listen_host, port)
        e.update(env or {})
        k = spawn_kumod(tmp_path / ("sink%d" % len(started)), env=e, policy_path=SINK)
        started.append(k)
        assert ("%s" % listen_host, port) in k.listeners.get("smtp", []), k.stderr()
        return k, port

    yield start
    for k in started:
        stop_kumod(k)


def connect(port, host="127.0.0.1"):
    c = SMTPRaw(port, host=host)
    check(c.greeting, 220)
    c.ehlo()
    return c


def test_sink_accepts_and_discards(sink):
    k, port = sink()
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10) as s:
        for i in range(3):
            s.ehlo_or_helo_if_needed()
            assert s.mail("sender%d@anywhere.test" % i)[0] == 250
            assert s.rcpt("user%d@foreign-%d.example" % (i, i))[0] == 250  # relays for anyone
            code, text = s.data(b"Subject: sink %d\r\n\r\nbody\r\n" % i)
            assert code == 250 and re.fullmatch(rb"OK ids=[0-9a-f]{32}", text), text
    assert k.running()


def test_sink_says_its_settings_and_each_message(sink, tmp_path):
    """At lua=info the sink prints its effective settings once and one line per accepted
    message; KUMOD_LOG_ROLE=sink puts [sink] in every line."""
    cap = tmp_path / "cap"
    k, port = sink({"KUMOD_LOG": "kumod=info,kumo_server_common=info,lua=info", "KUMOD_LOG_ROLE": "sink",
                    "KUMO_SINK_DEFER_PERCENT": "0", "KUMO_SINK_BOUNCE_PERCENT": "0",
                    "KUMO_SINK_CAPTURE_DIR": str(cap), "KUMO_SINK_BUSY_POLL": "0"})
    settings = k.wait_for("sink settings: ")
    kv = dict(re.findall(r"(\w+)=(\S+)", settings.split("sink settings: ", 1)[1]))
    assert kv == {"listen": "127.0.0.1:%d" % port, "defer_percent": "0", "bounce_percent": "0",
                  "capture_dir": str(cap), "busy_poll": "0", "ui": "-", "catcher": "-", "store": "-",
                  "max_messages": "10000", "max_bytes": "1073741824", "faults": "-"}, settings
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10) as s:
        assert s.sendmail("a@from.test", ["b@to.test", "c@to.test"], b"Subject: x\r\n\r\nx\r\n") == {}
    k.wait_for("sink message id=")
    got = set()
    deadline = time.monotonic() + 10
    while len(got) < 2 and time.monotonic() < deadline:  # one message per recipient
        got = {re.search(r"sink message id=([0-9a-f]{32}) from=<(\S*)> to=<(\S*)> size=(\d+) "
                         r"outcome=accepted$", l).groups()[:3]
               for l in k.lines() if "sink message id=" in l}
        time.sleep(0.05)
    assert sorted((f, t) for _, f, t in got) == [("a@from.test", "b@to.test"),
                                                 ("a@from.test", "c@to.test")], got
    lines = [l for l in k.lines() if l.strip()]
    assert lines and all(re.match(r"\S+ +[A-Z]+ \[sink\] ", l) for l in lines), lines


# (local part of the RCPT, code, enhanced, text after the enhanced code)
MAGIC_RCPT = [
    ("tempfail", 451, "4.7.1", "tempfail requested"),
    ("x-tempfail-y", 451, "4.7.1", "tempfail requested"),
    ("permfail", 550, "5.7.1", "permfail requested"),
    ("full", 452, None, "mailbox is full"),
    ("full-enh", 452, "4.1.1", "mailbox is full"),
    ("box-full-enh", 452, "4.1.1", "mailbox is full"),
    ("permfail-tempfail", 451, "4.7.1", "tempfail requested"),  # first match wins
    ("450-busy", 450, None, "you said 450-busy"),
    ("550-nope", 550, None, "you said 550-nope"),
    ("599-edge", 599, None, "you said 599-edge"),
    ("400-edge", 400, None, "you said 400-edge"),
    ("600-x", 250, None, "OK"),
    ("399-x", 250, None, "OK"),
    ("250-ok", 250, None, "OK"),
    ("plain", 250, None, "OK"),
]


def test_sink_magic_local_parts(sink):
    k, port = sink()
    with connect(port) as c:
        c.expect("MAIL FROM:<sender@example.test>", 250)
        for user, code, enh, text in MAGIC_RCPT:
            r = c.cmd("RCPT TO:<%s@example.test>" % user)
            check(r, code, enh, text="^%s$" % re.escape(text), what=user)
            assert code != 250 or r.enhanced is None or r.enhanced.startswith("2"), r
        c.expect("DATA", 354)
        c.send(b"Subject: magic\r\n\r\nx\r\n.\r\n")
        r = c.reply()
        check(r, 250)
        assert len(ids_of(r)) == 4  # 600-x, 399-x, 250-ok, plain
    assert k.running()


@pytest.mark.parametrize("user,code,enh,text", [
    ("tempfail", 451, "4.7.1", "tempfail requested"),
    ("permfail", 550, "5.7.1", "permfail requested"),
    ("full-enh", 452, "4.1.1", "mailbox is full"),
    ("450-sender", 450, None, "you said 450-sender"),
])
def test_sink_magic_sender(sink, user, code, enh, text):
    k, port = sink()
    with connect(port) as c:
        check(c.cmd("MAIL FROM:<%s@example.test>" % user), code, enh, text="^%s$" % text)
        c.expect("RCPT TO:<r@example.test>", 503)  # no transaction
        c.expect("MAIL FROM:<ok@example.test>", 250)


def test_sink_421_prefix_disconnects(sink):
    k, port = sink()
    with connect(port) as c:
        c.expect("MAIL FROM:<sender@example.test>", 250)
        r = c.cmd("RCPT TO:<421-bye@example.test>")
        check(r, 421, None, text="^you said 421-bye$")  # sink/README.md: NNN you said <user>
        assert c.closed()
    with connect(port) as c:  # still serving
        check(transaction(c), 250)


def test_sink_disconnect_in_data(sink, tmp_path):
    cap = tmp_path / "cap"
    k, port = sink({"KUMO_SINK_CAPTURE_DIR": str(cap)})
    with connect(port) as c:
        r = transaction(c, sender="disconnect-in-data@example.test")
        check(r, 451, None, text="^disconnecting disconnect-in-data$")
        assert c.closed()
    assert os.listdir(cap / "new") == []
    with connect(port) as c:
        check(transaction(c, sender="disconnect-in-data-no-421@example.test"), 451)
        assert c.closed()


def test_sink_capture_dir(sink, tmp_path):
    cap = tmp_path / "cap"
    k, port = sink({"KUMO_SINK_CAPTURE_DIR": str(cap)})
    ids = []
    bodies = {}
    with connect(port) as c:
        for i in range(3):
            body = b"Subject: capture %d\r\n\r\nline one %d\r\n..dotted\r\n" % (i, i)
            r = transaction(c, sender="s%d@example.test" % i, data_bytes=body + b".\r\n")
            check(r, 250)
            for id_ in ids_of(r):
                bodies[id_] = body.replace(b"\r\n..", b"\r\n.")
            ids += ids_of(r)
        # two recipients: two messages (one per recipient); one refused recipient: none
        c.expect("MAIL FROM:<multi@example.test>", 250)
        c.expect("RCPT TO:<a@example.test>", 250)
        c.expect("RCPT TO:<permfail@example.test>", 550)
        c.expect("RCPT TO:<b@example.test>", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: multi\r\n\r\nm\r\n.\r\n")
        r = c.reply()
        check(r, 250)
        assert len(ids_of(r)) == 2
        for id_ in ids_of(r):
            bodies[id_] = b"Subject: multi\r\n\r\nm\r\n"
        ids += ids_of(r)
        # refused transactions leave nothing
        c.expect("MAIL FROM:<permfail@example.test>", 550)
        c.expect("MAIL FROM:<x@example.test>", 250)
        c.expect("RCPT TO:<tempfail@example.test>", 451)
        c.expect("DATA", 503)
        c.expect("RSET", 250)
        c.expect("MAIL FROM:<x@example.test>", 250)
        c.expect("RCPT TO:<y@example.test>", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: bare\nLF\r\n.\r\n")  # 552 5.6.0, not captured
        check(c.reply(), 552, "5.6.0")
    files = sorted(os.listdir(cap / "new"))
    assert files == sorted(i + ".eml" for i in ids), files
    assert os.listdir(cap / "tmp") == []
    for id_ in ids:
        data = (cap / "new" / (id_ + ".eml")).read_bytes()
        head, _, _ = data.partition(b"\r\n\r\n")
        assert re.search(rb"(^|\r\n)Received: from client\.test ", head), data[:300]
        assert id_.encode() in head, head  # Received: ... id <id>
        assert data.endswith(bodies[id_]), data


def test_sink_defer_percent_100(sink):
    k, port = sink({"KUMO_SINK_DEFER_PERCENT": "100"})
    with connect(port) as c:
        c.expect("MAIL FROM:<s@example.test>", 250)
        for i in range(5):
            check(c.cmd("RCPT TO:<r%d@example.test>" % i), 451, "4.7.1", text="^later!$")
        c.expect("DATA", 503)


def test_sink_bounce_percent_100(sink):
    k, port = sink({"KUMO_SINK_BOUNCE_PERCENT": "100"})
    with connect(port) as c:
        c.expect("MAIL FROM:<s@example.test>", 250)
        for i in range(5):
            check(c.cmd("RCPT TO:<r%d@example.test>" % i), 550, "5.7.1", text="^boing!$")


def test_sink_ipv6_listen(sink):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    k, port = sink(listen_host="::1")
    with connect(port, host="::1") as c:
        check(transaction(c), 250)


def test_sink_trace_header_json(sink, tmp_path):
    """X-KumoRef is base64 of the compact JSON KumoMTA writes, for plain and
    escaped recipients alike (the plain case is built without jansson)."""
    import base64
    import json

    cap = tmp_path / "cap"
    k, port = sink({"KUMO_SINK_CAPTURE_DIR": str(cap)})
    rcpts = {
        "plain.user+tag@example.test": None,
        '"quoted \\"local\\" part"@example.test': None,
        '"back\\\\slash"@example.test': None,
    }
    with connect(port) as c:
        for rcpt in rcpts:
            r = transaction(c, sender="s@example.test", rcpts=[rcpt],
                            data_bytes=b"Subject: ref\r\n\r\nx\r\n.\r\n")
            check(r, 250)
            rcpts[rcpt] = ids_of(r)[0]
    for rcpt, id_ in rcpts.items():
        data = (cap / "new" / (id_ + ".eml")).read_bytes()
        m = re.search(rb"(?:^|\r\n)X-KumoRef: ([A-Za-z0-9+/=]+)\r\n", data)
        assert m, data[:400]
        raw = base64.b64decode(m.group(1))
        want = {"_@_": "\\_/", "recipient": rcpt}
        assert json.loads(raw) == want, raw
        # byte-identical to a compact JSON writer with keys in this order
        assert raw == json.dumps(want, separators=(",", ":")).encode(), raw


@pytest.mark.parametrize("setting,budget", [(None, 50), ("200us", 200), ("0", None)])
def test_sink_busy_poll_setting(sink, setting, budget):
    """KUMO_SINK_BUSY_POLL: 50us unless set; "0" turns it off (sink/README.md)."""
    env = {"KUMOD_LOG": "runtime::loop=trace,kumod=info,kumo_server_common=info"}
    if setting is not None:
        env["KUMO_SINK_BUSY_POLL"] = setting
    k, port = sink(env)
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10) as s:
        s.sendmail("a@client.test", ["b@dest.test"], b"Subject: bp\r\n\r\nbody\r\n")
    if budget is None:
        assert "busy poll" not in k.stderr()
    else:
        k.wait_for("busy poll begins, budget_us=%d" % budget)
        k.wait_for("busy poll ends after")
