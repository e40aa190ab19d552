# SPDX-License-Identifier: Apache-2.0
"""smtp_server_connection_accepted handlers that wait (kumo.dns) before the greeting.

The DNS server is test_dns.py's loopback server, its zone extended with an RBL entry for
127.0.0.2 under bl.test and one name (held.test) whose answers the test holds back until it
releases them, so "the handler is waiting" is a state the test controls, not a timing guess.
Clients bind their source address on 127.0.0.0/8 to choose what the handler does."""

import json
import socket
import time

import pytest
from dnslib import QTYPE, RR, TXT, DNSRecord

import test_dns
from test_console import console_env, run_console
from test_dns import DnsServer, a

test_dns.ZONE.update({
    "2.0.0.127.bl.test": [a("2.0.0.127.bl.test", "127.0.0.2"),
                          RR("2.0.0.127.bl.test", QTYPE.TXT,
                             rdata=TXT("Blocked - see https://bl.test/?127.0.0.2"), ttl=300)],
    "held.test": [RR("held.test", QTYPE.TXT, rdata=TXT("held answer"), ttl=300)],
    "held2.test": [RR("held2.test", QTYPE.TXT, rdata=TXT("never released"), ttl=300)],
})
HELD = "held.test"


class HeldDns(DnsServer):
    """Answers for held.test and held2.test (over UDP) are kept until release(name)."""

    def __init__(self):
        self.held, self.released = [], set()
        super().__init__()

    def _udp_loop(self):
        while not self.stopping:
            try:
                data, peer = self.udp.recvfrom(4096)
            except (socket.timeout, OSError):
                continue
            out = self.answer(data, "udp")
            name = str(DNSRecord.parse(data).q.qname).rstrip(".").lower()
            with self.lock:
                if name in ("held.test", "held2.test") and name not in self.released:
                    self.held.append((name, out, peer))
                    continue
            if out is not None:
                self.udp.sendto(out, peer)

    def release(self, name=HELD):
        with self.lock:
            self.released.add(name)
            held = [(o, p) for n, o, p in self.held if n == name]
            self.held = [h for h in self.held if h[0] != name]
        for out, peer in held:
            self.udp.sendto(out, peer)


@pytest.fixture
def dns():
    srv = HeldDns()
    yield srv
    srv.stop()


POLICY = r"""
kumo.on('init', function()
  kumo.dns.configure_resolver { name_servers = { os.getenv 'DNS' } }
  kumo.start_esmtp_listener { listen = '127.0.0.1:0' }
end)
kumo.on('smtp_server_connection_accepted', function(conn_meta)
  local ip = conn_meta:get_meta('received_from'):match '^(.*):%d+$'
  if ip == '127.0.0.9' then
    local txt = kumo.dns.lookup_txt 'held.test'
    kumo.reject(550, '5.7.1 waited for ' .. txt[1])
  elseif ip == '127.0.0.8' then
    kumo.dns.lookup_txt 'held.test'
    error 'boom after the wait'
  elseif ip == '127.0.0.7' then
    kumo.dns.lookup_txt 'held2.test'
  end
  local listed, why = kumo.dns.rbl_lookup(conn_meta:get_meta 'received_from', 'bl.test')
  if listed then
    kumo.reject(550, '5.7.1 listed: ' .. why)
  end
end)
kumo.on('smtp_server_mail_from', function(sender)
  local user = tostring(sender):match '^(.-)@'
  if user == 'wait' then
    kumo.dns.lookup_txt 'held.test'
  elseif user == 'boom' then
    kumo.dns.lookup_txt 'held.test'
    error 'boom in mail_from after the wait'
  elseif user == 'rejected' then
    kumo.reject(550, '5.7.1 waited for ' .. kumo.dns.lookup_txt('held.test')[1])
  end
end)
kumo.on('smtp_server_rcpt_to', function(recipient)
  if tostring(recipient):match '^(.-)@' == 'listed' then
    kumo.reject(550, '5.1.1 waited for ' .. kumo.dns.lookup_txt('held.test')[1])
  end
end)
kumo.on('smtp_server_message_received', function(msg)
  msg:set_meta('queue', 'null')
end)
"""


@pytest.fixture
def k(kumod, dns):
    k = kumod(POLICY, env=console_env(DNS=dns.server), args=["--tokio-console"])
    k.wait_for("console listener on")
    k.console_port = k.listeners["console"][0][1]
    return k


class Client:
    """An SMTP client socket from a chosen source address, with a line reader."""

    def __init__(self, port, source):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20,
                                             source_address=(source, 0))
        self.f = self.sock.makefile("rb")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.f.close()
        self.sock.close()

    def sendall(self, data):
        self.sock.sendall(data)

    def getsockname(self):
        return self.sock.getsockname()


connect = Client


def reply(c):
    """One SMTP reply: (code, [text lines])."""
    lines = []
    while True:
        line = c.f.readline().decode()
        assert line.endswith("\r\n"), lines + [line]
        lines.append(line[4:-2])
        if line[3] == " ":
            return int(line[:3]), lines


def silent(c):
    """Nothing to read from c right now (no reply, no close)."""
    c.sock.setblocking(False)
    try:
        c.sock.recv(1, socket.MSG_PEEK)
        return False
    except BlockingIOError:
        return True
    finally:
        c.sock.settimeout(20)


def until(pred, what, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def session_task(k, c):
    """The smtp_server task of client socket c (kumo-console snapshot), or None."""
    r = run_console("--once", "--json", f"127.0.0.1:{k.console_port}")
    assert r.returncode == 0, r.stderr
    peer = "%s:%d" % c.getsockname()
    for t in json.loads(r.stdout)["tasks"]:
        if t["kind"] == "smtp_server" and t["fields"].get("peer") == peer:
            return t
    return None


def test_rbl_listed_client_rejected_at_greeting(k, dns):
    m = dns.mark()
    with connect(k.smtp_port, "127.0.0.2") as c:
        code, text = reply(c)
        assert (code, text) == (550, ["5.7.1 listed: Blocked - see https://bl.test/?127.0.0.2"]), k.stderr()
    assert dns.count(m, "2.0.0.127.bl.test", "A") == 1
    with connect(k.smtp_port, "127.0.0.1") as c:
        code, _ = reply(c)
        assert code == 220
        c.sendall(b"QUIT\r\n")
        assert reply(c)[0] == 221
    assert dns.count(m, "1.0.0.127.bl.test", "A") == 1  # NXDOMAIN: not listed


def test_waiting_greeting_does_not_hold_other_sessions(k, dns):
    """A's handler waits (its answer is held); B is served meanwhile; A's task names the
    event; A's greeting comes when the answer is released."""
    with connect(k.smtp_port, "127.0.0.9") as a:
        until(lambda: dns.count(0, HELD, "TXT"), "the held query")
        t = until(lambda: session_task(k, a), "A's task")
        assert (t["phase"], t["wait"]) == ("smtp_server_connection_accepted", "policy"), t
        with connect(k.smtp_port, "127.0.0.1") as b:
            assert reply(b)[0] == 220
            b.sendall(b"EHLO b.test\r\n")
            assert reply(b)[0] == 250
            b.sendall(b"QUIT\r\n")
            assert reply(b)[0] == 221
        assert silent(a)
        dns.release()
        assert reply(a) == (550, ["5.7.1 waited for held answer"])


def test_handler_error_after_wait_fails_closed(k, dns):
    with connect(k.smtp_port, "127.0.0.8") as c:
        until(lambda: dns.count(0, HELD, "TXT"), "the held query")
        dns.release()
        assert reply(c) == (451, ["4.3.0 policy error; try again later"])
    k.wait_for("boom after the wait")


def test_client_talking_while_handler_waits_is_a_sync_violation(k, dns):
    with connect(k.smtp_port, "127.0.0.9") as c:
        until(lambda: dns.count(0, HELD, "TXT"), "the held query")
        c.sendall(b"EHLO early.test\r\nMAIL FROM:<a@b.test>\r\n")
        time.sleep(0.2)  # not synchronisation: the input must simply stay unanswered
        assert silent(c)
        dns.release()
        # the policy's rejection wins, as without waiting (the sync check is for 220 only)
        assert reply(c) == (550, ["5.7.1 waited for held answer"])


def test_client_disconnect_during_wait(k, dns):
    """The waiting call is abandoned when the client goes; the late answer finds nothing;
    a call still waiting at shutdown is dropped. Run under ASan too (KUMOD_BIN=
    build/address/kumod): no use-after-free, no leak, clean exit."""
    m = dns.mark()
    c = connect(k.smtp_port, "127.0.0.9")
    until(lambda: dns.count(m, HELD, "TXT"), "the held query")
    until(lambda: session_task(k, c), "the waiting task")
    peer = "%s:%d" % c.getsockname()
    c.close()
    until(lambda: task_closed(k, peer), "the session to close")
    n = dns.count(m, HELD, "TXT")
    dns.release()
    # the abandoned lookup completed and cached its answer: the next waiter gets it from
    # the cache, without a query
    with connect(k.smtp_port, "127.0.0.9") as c2:
        assert reply(c2) == (550, ["5.7.1 waited for held answer"])
    assert dns.count(m, HELD, "TXT") == n
    with connect(k.smtp_port, "127.0.0.7") as c3:  # waits for held2.test until shutdown
        until(lambda: dns.count(m, "held2.test", "TXT"), "the second held query")
        assert k.stop() == 0
        assert c3.f.readline().startswith(b"421 ")
    err = k.stderr()
    assert "AddressSanitizer" not in err and "LeakSanitizer" not in err, err


def task_closed(k, peer):
    r = run_console("--once", "--json", f"127.0.0.1:{k.console_port}")
    assert r.returncode == 0, r.stderr
    for t in json.loads(r.stdout)["tasks"]:
        if t["kind"] == "smtp_server" and t["fields"].get("peer") == peer:
            return t["state"] == "done" or t["phase"] == "Closing"
    return True


def ehlo(port, source="127.0.0.1"):
    c = connect(port, source)
    assert reply(c)[0] == 220
    c.sendall(b"EHLO test\r\n")
    assert reply(c)[0] == 250
    return c


def test_pipelined_commands_wait_behind_mail_from(k, dns):
    """MAIL's handler waits: RCPT and DATA sent with it stay unanswered (another session
    is served meanwhile), then all three are answered in order."""
    with ehlo(k.smtp_port) as c:
        c.sendall(b"MAIL FROM:<wait@a.test>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        until(lambda: dns.count(0, HELD, "TXT"), "the held query")
        t = until(lambda: session_task(k, c), "the task")
        assert (t["phase"], t["wait"]) == ("smtp_server_mail_from", "policy"), t
        with ehlo(k.smtp_port) as b:
            b.sendall(b"MAIL FROM:<other@a.test>\r\n")
            assert reply(b) == (250, ["OK"])
            b.sendall(b"QUIT\r\n")
            assert reply(b)[0] == 221
        assert silent(c)
        dns.release()
        assert reply(c) == (250, ["OK"])
        assert reply(c)[0] == 250
        assert reply(c)[0] == 354
        c.sendall(b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        code, text = reply(c)
        assert code == 250 and text[0].startswith("OK ids="), (code, text)
        assert reply(c)[0] == 221


def test_mail_from_error_or_rejection_after_wait(k, dns):
    with ehlo(k.smtp_port) as c:
        c.sendall(b"MAIL FROM:<boom@a.test>\r\nMAIL FROM:<rejected@a.test>\r\n")
        until(lambda: dns.count(0, HELD, "TXT"), "the held query")
        dns.release()
        assert reply(c) == (451, ["4.3.0 policy error; try again later"])
        assert reply(c) == (550, ["5.7.1 waited for held answer"])
    k.wait_for("boom in mail_from after the wait")


def test_client_disconnect_during_mail_from_wait(k, dns):
    """Input is paused while MAIL waits: the handler finishes, its reply finds the
    connection gone; nothing is used after free (ASan) and kumod serves on."""
    m = dns.mark()
    c = ehlo(k.smtp_port)
    c.sendall(b"MAIL FROM:<wait@a.test>\r\n")
    until(lambda: dns.count(m, HELD, "TXT"), "the held query")
    peer = "%s:%d" % c.getsockname()
    c.close()
    dns.release()
    until(lambda: task_closed(k, peer), "the session to close")
    with ehlo(k.smtp_port) as c2:
        c2.sendall(b"MAIL FROM:<wait@a.test>\r\n")  # cached now
        assert reply(c2) == (250, ["OK"])
        c2.sendall(b"MAIL FROM:<wait@a.test>\r\n")
        assert reply(c2)[0] == 503  # nested MAIL: the first one was taken
    assert k.stop() == 0
    err = k.stderr()
    assert "AddressSanitizer" not in err and "LeakSanitizer" not in err, err


def test_half_closed_pipelining_client_gets_its_replies(k, dns):
    """MAIL waits with QUIT buffered behind it and the client's side already shut: the end
    of input is not read before the handler returned, so both replies come, in order."""
    with ehlo(k.smtp_port) as c:
        c.sendall(b"MAIL FROM:<wait@a.test>\r\nQUIT\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        until(lambda: dns.count(0, HELD, "TXT"), "the held query")
        assert silent(c)
        dns.release()
        assert reply(c) == (250, ["OK"])
        assert reply(c)[0] == 221


def test_pipelined_rcpt_to_waits_in_order(k, dns):
    """RCPT's handler waits: the following RCPT and DATA are answered after it, in
    order."""
    with ehlo(k.smtp_port) as c:
        c.sendall(b"MAIL FROM:<a@a.test>\r\nRCPT TO:<listed@example.com>\r\n"
                  b"RCPT TO:<ok@example.com>\r\nDATA\r\n")
        assert reply(c) == (250, ["OK"])
        until(lambda: dns.count(0, HELD, "TXT"), "the held query")
        t = until(lambda: session_task(k, c), "the task")
        assert (t["phase"], t["wait"]) == ("smtp_server_rcpt_to", "policy"), t
        assert silent(c)
        dns.release()
        assert reply(c) == (550, ["5.1.1 waited for held answer"])
        assert reply(c) == (250, ["OK"])
        assert reply(c)[0] == 354
        c.sendall(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        code, text = reply(c)
        assert code == 250 and text[0].startswith("OK ids="), (code, text)
