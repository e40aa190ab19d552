# SPDX-License-Identifier: Apache-2.0
"""The sink's fault plans at the connect, DATA command and end-of-data stages: a reply
code, a delay, a hang and a disconnect, from a plan (API and KUMO_SINK_FAULTS) and from
magic senders; smtplib times the replies (sink/README.md "Fault plans")."""

import json
import smtplib
import socket
import time

import pytest
import requests

from smtpraw import stop_kumod
from test_catcher import catcher, smtp_try  # noqa: F401 (a fixture)

MSG = b"Subject: f\r\n\r\nx\r\n"


def put_plan(c, *rules):
    r = requests.put(c.base + "/api/v1/faults", json={"rules": list(rules)}, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def timed(fn, *args):
    t0 = time.monotonic()
    res = fn(*args)
    return res, time.monotonic() - t0


def connect(c, timeout=10):
    return smtplib.SMTP("127.0.0.1", c.smtp_port, local_hostname="client.test", timeout=timeout)


def to_data_command(s, sender="a@example.com", rcpt="x@example.com"):
    assert s.ehlo()[0] == 250
    assert s.mail(sender)[0] == 250
    assert s.rcpt(rcpt)[0] == 250


def assert_closed(s):
    """The server closed the connection: the next command finds it gone."""
    with pytest.raises(smtplib.SMTPServerDisconnected):
        s.noop()


def subjects(c):
    return [m["Subject"] for m in c.get("/api/v1/messages").json()["messages"]]


def test_connect_stage_delay_hang_disconnect(catcher):
    c = catcher()
    put_plan(c, {"stage": "connect", "delay": 1000})
    s, dt = timed(connect, c)  # smtplib reads the greeting in the constructor
    with s:
        assert 0.9 <= dt < 5, dt
        assert s.noop()[0] == 250  # the session goes on as usual
    # a delayed refusal: the reply after the delay, then the connection is closed
    put_plan(c, {"stage": "connect", "delay": 1000, "preset": "service-unavailable"})
    with pytest.raises(smtplib.SMTPConnectError) as e:
        timed(connect, c)
    assert e.value.smtp_code == 421
    t0 = time.monotonic()
    assert smtp_try(c.smtp_port, "a@example.com", ["x@example.com"])[0] == 421
    assert 0.9 <= time.monotonic() - t0 < 5
    with socket.create_connection(("127.0.0.1", c.smtp_port), timeout=5) as sk:
        f = sk.makefile("rb")
        line = f.readline()
        assert line.startswith(b"421 4.3.2 "), line
        assert f.readline() == b""  # closed after the reply
    # a bare disconnect: 421 and closed at once
    put_plan(c, {"stage": "connect", "disconnect": True})
    assert smtp_try(c.smtp_port, "a@example.com", ["x@example.com"]) == \
        (421, "4.3.2 closing connection (fault injected by the sink)")
    # a hang: no greeting ever
    put_plan(c, {"stage": "connect", "hang": True})
    t0 = time.monotonic()
    with pytest.raises((socket.timeout, TimeoutError, smtplib.SMTPServerDisconnected)):
        connect(c, timeout=1.5)
    assert time.monotonic() - t0 >= 1.4
    requests.delete(c.base + "/api/v1/faults", timeout=5)
    s, dt = timed(connect, c)
    with s:
        assert dt < 0.9, dt


def test_data_command_stage(catcher):
    c = catcher()
    put_plan(c,
             {"stage": "data_command", "match": {"sender": "slow@example.com"}, "delay": 1000},
             {"stage": "data_command", "match": {"rcpt": "quota@box.test"}, "preset": "over-quota"},
             {"stage": "data_command", "match": {"domain": "stuck.test"}, "hang": True},
             {"stage": "data_command", "match": {"sender": "cut@example.com"},
              "disconnect": True})
    with connect(c) as s:
        to_data_command(s, sender="slow@example.com")
        (code, _), dt = timed(s.docmd, "DATA")
        assert code == 354 and 0.9 <= dt < 5, (code, dt)
        s.send(b"Subject: slow\r\n\r\nx\r\n.\r\n")
        assert s.getreply()[0] == 250
        # the next transaction on the same connection, other sender: no delay
        to_data_command(s, sender="quick@example.com")
        (code, _), dt = timed(s.docmd, "DATA")
        assert code == 354 and dt < 0.9, (code, dt)
        s.send(b"Subject: quick\r\n\r\nx\r\n.\r\n")
        assert s.getreply()[0] == 250
    with connect(c) as s:
        to_data_command(s, rcpt="quota@box.test")
        assert s.docmd("DATA") == (452, b"4.2.2 The account you tried to reach is over quota")
        assert s.rset()[0] == 250  # the session goes on
    with connect(c) as s:
        to_data_command(s, sender="cut@example.com")
        assert s.docmd("DATA")[0] == 421
        assert_closed(s)
    with connect(c, timeout=1.5) as s:
        to_data_command(s, rcpt="u@stuck.test")
        t0 = time.monotonic()
        with pytest.raises((socket.timeout, TimeoutError, smtplib.SMTPServerDisconnected)):
            s.docmd("DATA")  # never answered
        assert time.monotonic() - t0 >= 1.4
    c.wait_total(2)
    assert sorted(subjects(c)) == ["quick", "slow"]


def test_end_of_data_stage(catcher):
    c = catcher({"KUMO_SINK_FAULTS": json.dumps({"rules": [
        {"stage": "data", "match": {"sender": "slow@example.com"}, "delay": 1000},
        {"stage": "data", "match": {"sender": "late@example.com"}, "delay": 1000,
         "code": 451, "text": "4.7.0 later"},
        {"stage": "data", "match": {"rcpt": "stuck@example.com"}, "hang": True},
        {"stage": "data", "match": {"sender": "cut@example.com"}, "disconnect": True,
         "code": 421, "text": "4.4.2 bye"}]})})
    with connect(c) as s:
        to_data_command(s, sender="slow@example.com")
        assert s.docmd("DATA")[0] == 354
        s.send(b"Subject: slow\r\n\r\nx\r\n.\r\n")
        (code, _), dt = timed(s.getreply)
        assert code == 250 and 0.9 <= dt < 5, (code, dt)
        to_data_command(s, sender="late@example.com")
        assert s.docmd("DATA")[0] == 354
        s.send(b"Subject: late\r\n\r\nx\r\n.\r\n")
        reply, dt = timed(s.getreply)
        assert reply == (451, b"4.7.0 later") and 0.9 <= dt < 5, (reply, dt)
        assert s.noop()[0] == 250
    with connect(c) as s:
        to_data_command(s, sender="cut@example.com")
        assert s.docmd("DATA")[0] == 354
        s.send(b"Subject: cut\r\n\r\nx\r\n.\r\n")
        assert s.getreply() == (421, b"4.4.2 bye")
        assert_closed(s)
    with connect(c, timeout=1.5) as s:
        to_data_command(s, rcpt="stuck@example.com")
        assert s.docmd("DATA")[0] == 354
        s.send(b"Subject: stuck\r\n\r\nx\r\n.\r\n")
        t0 = time.monotonic()
        with pytest.raises((socket.timeout, TimeoutError, smtplib.SMTPServerDisconnected)):
            s.getreply()  # never answered
        assert time.monotonic() - t0 >= 1.4
    # only the message answered 250 was kept (the hung one was never acknowledged)
    assert smtp_try(c.smtp_port, "a@example.com", ["x@example.com"],
                    data=b"Subject: after\r\n\r\nx\r\n")[0] == 250
    c.wait_total(2)
    assert sorted(subjects(c)) == ["after", "slow"]
    assert "outcome=hang" in c.k.wait_for("outcome=hang")


def test_magic_senders_data_stages(catcher):
    c = catcher()
    with connect(c) as s:
        to_data_command(s, sender="delay-in-data-command-1000@example.com")
        (code, _), dt = timed(s.docmd, "DATA")
        assert code == 354 and 0.9 <= dt < 5, (code, dt)
        s.send(b"Subject: m1\r\n\r\nx\r\n.\r\n")
        assert s.getreply()[0] == 250
        to_data_command(s, sender="reject-in-data-command-452@example.com")
        assert s.docmd("DATA") == (452, b"you said reject-in-data-command-452")
        assert s.rset()[0] == 250
        # the magic belongs to its transaction: the next one is not delayed
        to_data_command(s, sender="plain@example.com")
        (code, _), dt = timed(s.docmd, "DATA")
        assert code == 354 and dt < 0.9, (code, dt)
        s.send(b"Subject: m2\r\n\r\nx\r\n.\r\n")
        assert s.getreply()[0] == 250
        to_data_command(s, sender="delay-in-data-1000@example.com")
        assert s.docmd("DATA")[0] == 354
        s.send(b"Subject: m3\r\n\r\nx\r\n.\r\n")
        (code, _), dt = timed(s.getreply)
        assert code == 250 and 0.9 <= dt < 5, (code, dt)
    with connect(c) as s:
        to_data_command(s, sender="disconnect-in-data-command@example.com")
        assert s.docmd("DATA") == (451, b"disconnecting disconnect-in-data-command")
        assert_closed(s)
    with connect(c) as s:
        to_data_command(s, sender="disconnect-in-data@example.com")
        assert s.docmd("DATA")[0] == 354
        s.send(b"Subject: d\r\n\r\nx\r\n.\r\n")
        assert s.getreply() == (451, b"disconnecting disconnect-in-data")
        assert_closed(s)
    with connect(c, timeout=1.5) as s:
        to_data_command(s, sender="hang-in-data-command@example.com")
        with pytest.raises((socket.timeout, TimeoutError, smtplib.SMTPServerDisconnected)):
            s.docmd("DATA")
    with connect(c, timeout=1.5) as s:
        to_data_command(s, sender="hang-in-data@example.com")
        assert s.docmd("DATA")[0] == 354
        s.send(b"Subject: hung\r\n\r\nx\r\n.\r\n")
        with pytest.raises((socket.timeout, TimeoutError, smtplib.SMTPServerDisconnected)):
            s.getreply()
    c.wait_total(3)
    assert sorted(subjects(c)) == ["m1", "m2", "m3"]


def test_shutdown_closes_a_hung_session_without_a_reply(catcher):
    """A session held by a hang never gets a reply: a shutdown closes it at
    once (as its client_timeout would) instead of waiting for it, and kumod
    exits cleanly (stop_kumod SIGKILLs after 10 s and returns -9)."""
    c = catcher()
    put_plan(c, {"stage": "data_command", "match": {"domain": "stuck.test"}, "hang": True})
    s = connect(c)
    try:
        to_data_command(s, rcpt="u@stuck.test")
        s.sock.sendall(b"DATA\r\n")
        s.sock.settimeout(2)
        with pytest.raises((socket.timeout, TimeoutError)):
            s.sock.recv(100)  # no reply: the session hangs
        assert stop_kumod(c.k) == 0
        s.sock.settimeout(5)
        assert s.sock.recv(100) == b""  # closed, with no reply
    finally:
        s.sock.close()
