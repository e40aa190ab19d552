# SPDX-License-Identifier: Apache-2.0
"""smtp_server_ehlo handlers that wait (kumo.dns) before the EHLO/HELO reply.

Uses test_wait_events.py's loopback DNS server whose answers for held.test and held2.test
are kept until the test releases them, so "the handler is waiting" is a state the test
controls. The EHLO domain chooses what the handler does. (A Redis throttle in EHLO:
test_redis_throttles.py.)"""

import smtplib
import socket
import threading

import pytest

from test_console import console_env
from test_wait_events import HELD, HeldDns, connect, reply, session_task, silent, task_closed, until


@pytest.fixture
def dns():
    srv = HeldDns()
    yield srv
    srv.stop()


POLICY = r"""
kumo.on('init', function()
  kumo.dns.configure_resolver { name_servers = { os.getenv 'DNS' } }
  kumo.start_esmtp_listener { listen = '127.0.0.1:0', client_timeout = os.getenv 'CT' or '60s' }
end)
kumo.on('smtp_server_ehlo', function(domain, conn_meta, extensions)
  if domain == 'wait.test' then
    local txt = kumo.dns.lookup_txt 'held.test'
    conn_meta:set_meta('ehlo_txt', txt[1])
    if extensions then
      table.insert(extensions, 'X-WAITED ' .. txt[1])
      return extensions
    end
  elseif domain == 'reject.test' then
    kumo.reject(550, '5.7.1 waited for ' .. kumo.dns.lookup_txt('held.test')[1])
  elseif domain == 'bye.test' then
    kumo.dns.lookup_txt 'held.test'
    kumo.reject(421, '4.7.0 waited, closing')
  elseif domain == 'boom.test' then
    kumo.dns.lookup_txt 'held.test'
    error 'boom in ehlo after the wait'
  elseif domain == 'forever.test' then
    kumo.dns.lookup_txt 'held2.test'
  elseif domain == 'edit.test' then
    -- no wait: the list is edited and returned synchronously
    local out = {}
    for _, e in ipairs(extensions) do
      if e ~= 'SMTPUTF8' then
        table.insert(out, e)
      end
    end
    table.insert(out, 'X-SOMETHING')
    return out
  elseif domain == 'bad.test' then
    kumo.dns.lookup_txt 'held.test'
    return { 'BAD\r\nINJECTED' }
  end
end)
kumo.on('smtp_server_mail_from', function(sender, conn_meta)
  -- what the waiting EHLO handler stored is seen by the next event
  local txt = conn_meta:get_meta 'ehlo_txt'
  if txt and tostring(sender):match '^(.-)@' == 'check' then
    kumo.reject(550, '5.7.1 ehlo saw ' .. txt)
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
    yield k
    # under ASan (KUMOD_BIN=build/address/kumod) every test ends with a clean exit
    assert k.stop() == 0
    assert_no_sanitizer_report(k)


def assert_no_sanitizer_report(k):
    err = k.stderr()
    assert "AddressSanitizer" not in err and "LeakSanitizer" not in err, err


def greeted(port):
    c = connect(port, "127.0.0.1")
    assert reply(c)[0] == 220
    return c


def test_waiting_ehlo_delays_reply_then_session_proceeds(k, dns):
    """The 250 waits for the lookup (the task names the event, another session is served
    meanwhile), carries the extension the handler added from the answer, and the session
    goes on: a pipelined transaction is accepted."""
    m = dns.mark()
    with greeted(k.smtp_port) as c:
        c.sendall(b"EHLO wait.test\r\n")
        until(lambda: dns.count(m, HELD, "TXT"), "the held query")
        t = until(lambda: session_task(k, c), "the task")
        assert (t["phase"], t["wait"]) == ("smtp_server_ehlo", "policy"), t
        with greeted(k.smtp_port) as b:
            b.sendall(b"EHLO other.test\r\n")
            code, lines = reply(b)
            assert code == 250 and not any(x.startswith("X-WAITED") for x in lines), lines
            b.sendall(b"QUIT\r\n")
            assert reply(b)[0] == 221
        assert silent(c)
        dns.release()
        code, lines = reply(c)
        assert code == 250, (code, lines)
        assert lines[0].endswith(" Aloha wait.test"), lines
        # kumod's list (STARTTLS too: the listener has a certificate), then the added line
        assert lines[1:5] == ["PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8"], lines
        assert lines[5].startswith("SIZE ") and lines[6:] == ["STARTTLS", "X-WAITED held answer"], lines
        c.sendall(b"MAIL FROM:<a@a.test>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        assert reply(c) == (250, ["OK"])
        assert reply(c) == (250, ["OK"])
        assert reply(c)[0] == 354
        c.sendall(b"Subject: x\r\n\r\nbody\r\n.\r\nMAIL FROM:<check@a.test>\r\nQUIT\r\n")
        code, text = reply(c)
        assert code == 250 and text[0].startswith("OK ids="), (code, text)
        # the handler's conn_meta change, made after the wait, is kept
        assert reply(c) == (550, ["5.7.1 ehlo saw held answer"])
        assert reply(c)[0] == 221


def test_commands_sent_while_ehlo_waits_are_answered_after_it(k, dns):
    """MAIL and RCPT sent while EHLO waits stay unanswered and are answered after its 250,
    in order (the input is read no further meanwhile)."""
    with greeted(k.smtp_port) as c:
        c.sendall(b"EHLO wait.test\r\n")
        until(lambda: dns.count(0, HELD, "TXT"), "the held query")
        c.sendall(b"MAIL FROM:<a@a.test>\r\nRCPT TO:<b@example.com>\r\n")
        assert silent(c)
        dns.release()
        code, lines = reply(c)
        assert code == 250 and lines[-1] == "X-WAITED held answer", lines
        assert reply(c) == (250, ["OK"])
        assert reply(c) == (250, ["OK"])
        c.sendall(b"QUIT\r\n")
        assert reply(c)[0] == 221


def test_idle_timeout_does_not_end_a_waiting_ehlo(kumod, dns):
    """The client waits: with a 1 s client_timeout an idle session is closed, while one
    whose EHLO handler waits longer than that gets its 250."""
    k = kumod(POLICY, env=console_env(DNS=dns.server, CT="1s"))
    with greeted(k.smtp_port) as c:
        c.sendall(b"EHLO wait.test\r\n")
        until(lambda: dns.count(0, HELD, "TXT"), "the held query")
        # idle's timer starts after c's EHLO: had c's run, its 421 would come first
        with greeted(k.smtp_port) as idle:
            code, text = reply(idle)  # blocks until kumod's idle timer fires
            assert (code, text[0].endswith("idle too long")) == (421, True), (code, text)
        assert silent(c)
        dns.release()
        code, lines = reply(c)
        assert code == 250 and lines[-1] == "X-WAITED held answer", lines
    assert k.stop() == 0
    assert_no_sanitizer_report(k)


def test_half_closed_client_gets_its_replies(k, dns):
    """A client that sends QUIT while EHLO waits and then shuts its side down is still
    answered, in order: reading stopped at its QUIT, so the end of its input is seen only
    after the handler returned."""
    with greeted(k.smtp_port) as c:
        c.sendall(b"EHLO wait.test\r\n")
        until(lambda: dns.count(0, HELD, "TXT"), "the held query")
        c.sendall(b"QUIT\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        assert silent(c)
        dns.release()
        code, lines = reply(c)
        assert code == 250 and lines[-1] == "X-WAITED held answer", lines
        assert reply(c)[0] == 221


def test_helo_waits_too(k, dns):
    with greeted(k.smtp_port) as c:
        c.sendall(b"HELO wait.test\r\n")
        until(lambda: dns.count(0, HELD, "TXT"), "the held query")
        assert silent(c)
        dns.release()
        assert reply(c) == (250, ["Hello wait.test!"])
        c.sendall(b"MAIL FROM:<a@a.test>\r\n")
        assert reply(c) == (250, ["OK"])


def test_reject_after_wait_gives_the_chosen_reply(k, dns):
    """kumo.reject after the wait answers EHLO with its code and text; the session stays
    before EHLO (MAIL is refused) and may try again."""
    with greeted(k.smtp_port) as c:
        c.sendall(b"EHLO reject.test\r\n")
        until(lambda: dns.count(0, HELD, "TXT"), "the held query")
        dns.release()
        assert reply(c) == (550, ["5.7.1 waited for held answer"])
        c.sendall(b"MAIL FROM:<a@a.test>\r\n")
        assert reply(c)[0] == 503
        c.sendall(b"EHLO fine.test\r\n")
        assert reply(c)[0] == 250


def test_reject_421_after_wait_closes(k, dns):
    with greeted(k.smtp_port) as c:
        c.sendall(b"EHLO bye.test\r\n")
        until(lambda: dns.count(0, HELD, "TXT"), "the held query")
        dns.release()
        assert reply(c) == (421, ["4.7.0 waited, closing"])
        assert c.f.readline() == b""  # closed by kumod


def test_errors_after_wait_fail_closed(k, dns):
    """A Lua error, and a bad extension list, after the wait: 451 4.3.0, named in the log."""
    with greeted(k.smtp_port) as c:
        c.sendall(b"EHLO boom.test\r\n")
        until(lambda: dns.count(0, HELD, "TXT"), "the held query")
        dns.release()
        assert reply(c) == (451, ["4.3.0 policy error; try again later"])
        c.sendall(b"EHLO bad.test\r\n")  # cached answer: no new wait
        assert reply(c) == (451, ["4.3.0 policy error; try again later"])
    k.wait_for("boom in ehlo after the wait")
    k.wait_for("extensions of printable ASCII, one line each")


def test_extensions_edited_appear_in_esmtp_features(k, dns):
    """The handler's list is what smtplib sees, whether the handler waited or not."""
    with smtplib.SMTP("127.0.0.1", k.smtp_port, timeout=20) as s:
        code, _ = s.ehlo("edit.test")
        assert code == 250
        assert "x-something" in s.esmtp_features and "smtputf8" not in s.esmtp_features, \
            s.esmtp_features
        assert "pipelining" in s.esmtp_features and "size" in s.esmtp_features
    releaser = threading.Thread(
        target=lambda: (until(lambda: dns.count(0, HELD, "TXT"), "the held query"),
                        dns.release()))
    releaser.start()
    try:
        with smtplib.SMTP("127.0.0.1", k.smtp_port, timeout=20) as s:
            code, _ = s.ehlo("wait.test")
            assert code == 250
            assert s.esmtp_features.get("x-waited") == "held answer", s.esmtp_features
            assert s.sendmail("a@a.test", ["b@example.com"], "Subject: x\r\n\r\nbody\r\n") == {}
    finally:
        releaser.join()


def test_client_disconnect_while_ehlo_waits(k, dns):
    """The client goes while EHLO waits: the session closes at once (its call cancelled),
    the late answer finds nothing, kumod serves on; a call still waiting at shutdown is
    dropped. Run under ASan too (KUMOD_BIN=build/address/kumod): no use-after-free, no
    leak, clean exit."""
    m = dns.mark()
    c = greeted(k.smtp_port)
    c.sendall(b"EHLO wait.test\r\n")
    until(lambda: dns.count(m, HELD, "TXT"), "the held query")
    until(lambda: session_task(k, c), "the waiting task")
    peer = "%s:%d" % c.getsockname()
    c.close()
    until(lambda: task_closed(k, peer), "the session to close")
    dns.release()
    with greeted(k.smtp_port) as c2:
        c2.sendall(b"EHLO wait.test\r\n")  # the abandoned lookup's answer is cached
        code, lines = reply(c2)
        assert code == 250 and lines[-1] == "X-WAITED held answer", lines
    with greeted(k.smtp_port) as c3:  # waits for held2.test until shutdown
        c3.sendall(b"EHLO forever.test\r\n")
        until(lambda: dns.count(m, "held2.test", "TXT"), "the second held query")
        assert k.stop() == 0
        assert c3.f.readline().startswith(b"421 ")
    assert_no_sanitizer_report(k)
