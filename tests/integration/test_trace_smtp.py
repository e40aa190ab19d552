# SPDX-License-Identifier: Apache-2.0
"""Live SMTP transcripts: `kcli trace-smtp-server` while swaks talks to kumod
through STARTTLS and AUTH (every line, TLS result, policy callbacks, the
message disposition; never the AUTH secret), and `kcli trace-smtp-client`
while kumod delivers to a peer that answers 451 first and 250 on retry."""

import base64
import json
import os
import socket
import subprocess
import threading
import time

import pytest

from conftest import REPO, free_port

TOOLS_BIN = os.environ.get("TOOLS_BIN") or os.path.join(REPO, "build")

PASSWORD = "Zebra-Secret-51c0ffee-never-traced"

SERVER_POLICY = """
kumo.on('init', function()
  kumo.define_spool{ name = 'data', path = '%(var)s/spool/data' }
  kumo.define_spool{ name = 'meta', path = '%(var)s/spool/meta' }
  kumo.start_esmtp_listener{ listen = '127.0.0.1:0', relay_hosts = {} }
  kumo.start_http_listener{ listen = '127.0.0.1:0' }
end)
kumo.on('smtp_server_auth_plain', function(authz, authc, password, conn_meta)
  return authc == 'daniel' and password == '%(password)s'
end)
kumo.on('get_listener_domain', function(domain, listener, conn_meta)
  return kumo.make_listener_domain{ relay_from_authz = { 'daniel' } }
end)
kumo.on('smtp_server_message_received', function(msg, conn_meta)
  msg:set_meta('queue', 'held-for-test')
end)
kumo.on('get_queue_config', function()
  return kumo.make_queue_config{ retry_interval = '1h',
                                 protocol = { smtp = { mx_list = { '127.0.0.1:%(dead)d' } } } }
end)
"""

RELAY_POLICY = """
kumo.on('init', function()
  kumo.define_spool{ name = 'data', path = '%(var)s/spool/data' }
  kumo.define_spool{ name = 'meta', path = '%(var)s/spool/meta' }
  kumo.start_esmtp_listener{ listen = '127.0.0.1:0', relay_hosts = { '127.0.0.1' } }
  kumo.start_http_listener{ listen = '127.0.0.1:0' }
end)
kumo.on('get_queue_config', function()
  return kumo.make_queue_config{ retry_interval = '1s', max_retry_interval = '1s',
                                 protocol = { smtp = { mx_list = { '127.0.0.1:%(mx)d' } } } }
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path{ prohibited_hosts = {}, enable_tls = 'Disabled' }
end)
"""


class Tracer:
    """A `kcli trace-smtp-*` subprocess; its stdout lines are collected."""

    def __init__(self, http_port, command, *args):
        self.proc = subprocess.Popen(
            [os.path.join(TOOLS_BIN, "kcli"), "--endpoint", "http://127.0.0.1:%d" % http_port,
             command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            with self.cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.cond.notify_all()

    def wait(self, pred, timeout=15):
        """Polls the collected lines until pred(lines) is truthy (bounded)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                v = pred(list(self.lines))
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    pytest.fail("tracer: condition not met; output:\n%s\nstderr: %s"
                                % ("\n".join(self.lines), self.stderr_text()))
                self.cond.wait(min(left, 0.2))

    def stderr_text(self):
        if self.proc.poll() is None:
            return "(running)"
        return self.proc.stderr.read().decode("utf-8", "replace")

    def events(self):
        return [json.loads(line) for line in list(self.lines)]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.reader.join(5)
        self.proc.stdout.close()
        self.proc.stderr.close()


def started(lines):
    for line in lines:
        ev = json.loads(line)
        d = ev["payload"].get("Diagnostic") if isinstance(ev["payload"], dict) else None
        if d and d["message"] == "tracing started":
            return True
    return False


def http_port(k):
    return k.listeners["http"][0][1]


def payload_kind(ev):
    p = ev["payload"]
    return p if isinstance(p, str) else next(iter(p))


def session_events(events, key="received_from"):
    """Events grouped by session (conn_meta key), in arrival order."""
    out = {}
    for ev in events:
        meta = ev["conn_meta"]
        if isinstance(meta, dict) and key in meta:
            out.setdefault(meta[key], []).append(ev)
    return out


def closed_sessions(lines, key="received_from"):
    evs = [json.loads(line) for line in lines]
    return [s for s, e in session_events(evs, key).items() if payload_kind(e[-1]) == "Closed"]


def swaks(port, *extra):
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % port, "--ehlo", "client.test",
                        "--from", "sender@example.com", "--to", "rcpt@customer.example",
                        "--tls", "--auth-user", "daniel", "--auth-password", PASSWORD,
                        "--body", "Hello trace\nsecond line\n", "--timeout", "10", *extra],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def secrets():
    plain = base64.b64encode(b"\0daniel\0" + PASSWORD.encode()).decode()
    return [PASSWORD, plain, base64.b64encode(PASSWORD.encode()).decode()]


def test_trace_smtp_server_starttls_auth_plain(kumod, tmp_path):
    k = kumod(SERVER_POLICY % {"var": tmp_path / "var", "password": PASSWORD,
                               "dead": free_port()})
    t = Tracer(http_port(k), "trace-smtp-server", "--json", "--source", "127.0.0.0/8")
    try:
        t.wait(started)
        swaks(k.smtp_port, "--auth", "PLAIN")
        t.wait(lambda lines: closed_sessions(lines))
        sessions = session_events(t.events())
        assert len(sessions) == 1, sessions
        evs = next(iter(sessions.values()))
        seq = []
        for ev in evs:
            kind = payload_kind(ev)
            p = ev["payload"]
            if kind in ("Read", "Write"):
                seq.append((kind, p[kind].split("\r\n")[0]))
            elif kind == "Diagnostic":
                seq.append((kind, p[kind]["message"]))
            elif kind == "Callback":
                seq.append((kind, p[kind]["name"], p[kind]["error"]))
            elif kind == "AbbreviatedRead":
                seq.append((kind, p[kind]["snippet"], p[kind]["len"]))
            elif kind == "MessageDisposition":
                seq.append((kind, p[kind]["queue"], p[kind]["sender"],
                            tuple(p[kind]["recipient"])))
            else:
                seq.append((kind,))
        assert seq[0] == ("Connected",)
        assert ("Callback", "smtp_server_connection_accepted", None) in seq

        def reply_to(line):
            """The first Write after the Read of line (callbacks may come between)."""
            i = seq.index(("Read", line))
            return next(s for s in seq[i + 1:] if s[0] == "Write")
        assert reply_to("EHLO client.test")[1].startswith("250-")
        assert reply_to("STARTTLS") == ("Write", "220 2.0.0 Ready to Start TLS")
        tls = [s for s in seq if s[0] == "Diagnostic" and s[1].startswith("TLS handshake ok")]
        assert len(tls) == 1 and "protocol=TLSv1." in tls[0][1], seq
        i = seq.index(("Read", "AUTH PLAIN (initial response not shown)"))
        assert ("Callback", "smtp_server_auth_plain", None) in seq[i:]
        assert ("Diagnostic", "AUTH PLAIN authn_id=daniel") in seq[i:]
        assert ("Write", "235 2.7.0 Authentication successful") in seq[i:]
        assert ("Read", "MAIL FROM:<sender@example.com>") in seq
        assert ("Read", "RCPT TO:<rcpt@customer.example>") in seq
        data = [s for s in seq if s[0] == "AbbreviatedRead"]
        assert len(data) == 1 and data[0][2] > 20, seq
        assert ("MessageDisposition", "held-for-test", "sender@example.com",
                ("rcpt@customer.example",)) in seq
        assert seq[-2] == ("Diagnostic", "closed: peer closed") or \
            seq[-2][1].startswith("closed:"), seq
        assert seq[-1] == ("Closed",)
        # conn_meta carries the TLS result once the handshake is done
        last_meta = evs[-1]["conn_meta"]
        assert last_meta["tls_protocol_version"].startswith("TLSv1.")
        assert last_meta["tls_cipher"]
        assert last_meta["authn_id"] == "daniel"
        # timestamps are ordered
        whens = [ev["when"] for ev in evs]
        assert whens == sorted(whens)
        out = "\n".join(t.lines)
        for s in secrets():
            assert s not in out
    finally:
        t.stop()
    assert k.stop() == 0


def test_trace_smtp_server_auth_login_and_full_data_text_output(kumod, tmp_path):
    """AUTH LOGIN's continuation lines are redacted; --data sends the body;
    the default (non-JSON) output shows KumoMTA's arrows."""
    k = kumod(SERVER_POLICY % {"var": tmp_path / "var", "password": PASSWORD,
                               "dead": free_port()})
    tj = Tracer(http_port(k), "trace-smtp-server", "--json", "--data")
    tt = Tracer(http_port(k), "trace-smtp-server", "--color", "no")
    try:
        tj.wait(started)
        tt.wait(lambda lines: any("tracing started" in line for line in lines))
        swaks(k.smtp_port, "--auth", "LOGIN")
        tj.wait(lambda lines: closed_sessions(lines))
        tt.wait(lambda lines: any(line.endswith("=== Closed") for line in lines))
        evs = tj.events()
        reads = [ev["payload"]["Read"] for ev in evs
                 if payload_kind(ev) == "Read"]
        assert "AUTH LOGIN (initial response not shown)\r\n" in reads
        assert reads.count("(AUTH response, not shown)\r\n") == 2, reads
        body = [r for r in reads if "Hello trace" in r]
        assert len(body) == 1 and "second line" in body[0]
        text = "\n".join(tt.lines)
        assert any(line.endswith(" -> EHLO client.test") for line in tt.lines), text
        assert any(line.endswith("<-  235 2.7.0 Authentication successful")
                   for line in tt.lines), text
        assert any("=== bytes read=" in line for line in tt.lines), text
        for out in ("\n".join(tj.lines), text):
            for s in secrets() + [base64.b64encode(b"daniel").decode()]:
                if s == base64.b64encode(b"daniel").decode():
                    continue  # the user name is not a secret
                assert s not in out
    finally:
        tj.stop()
        tt.stop()
    assert k.stop() == 0


def test_trace_endpoint_refuses_plain_http_and_bad_requests(kumod, tmp_path):
    k = kumod(SERVER_POLICY % {"var": tmp_path / "var", "password": PASSWORD,
                               "dead": free_port()})
    import urllib.error
    import urllib.request
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen("http://127.0.0.1:%d/api/admin/trace-smtp-server/v1"
                               % http_port(k), timeout=10)
    assert e.value.code == 426
    assert "websocket" in json.loads(e.value.read())["error"]
    # an unknown filter is refused by name (kcli reports it and exits)
    r = subprocess.run([os.path.join(TOOLS_BIN, "kcli"), "--endpoint",
                        "http://127.0.0.1:%d" % http_port(k), "trace-smtp-client", "--json",
                        "--tenant", "t1"], capture_output=True, text=True, timeout=15)
    evs = [json.loads(line) for line in r.stdout.splitlines()]
    msgs = [ev["payload"]["Diagnostic"]["message"] for ev in evs]
    assert any("filter 'tenant' is not supported" in m for m in msgs), r.stdout + r.stderr
    assert k.stop() == 0


class DeferOnceMx:
    """A loopback SMTP peer: the first transaction's RCPT gets 451, later
    ones are accepted (250). Counts sessions."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.rcpts = 0
        self.delivered = 0
        self.stop_flag = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self.stop_flag:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._session, args=(c,), daemon=True).start()

    def _session(self, c):
        c.settimeout(10)
        f = c.makefile("rb")
        c.sendall(b"220 mx.test ESMTP\r\n")
        try:
            while True:
                line = f.readline()
                if not line:
                    return
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    c.sendall(b"250-mx.test\r\n250 8BITMIME\r\n")
                elif verb == b"MAIL":
                    c.sendall(b"250 2.1.0 ok\r\n")
                elif verb == b"RCPT":
                    self.rcpts += 1
                    if self.rcpts == 1:
                        c.sendall(b"451 4.7.1 greylisted, try again later\r\n")
                    else:
                        c.sendall(b"250 2.1.5 ok\r\n")
                elif verb == b"DATA":
                    c.sendall(b"354 go ahead\r\n")
                    while f.readline() not in (b".\r\n", b""):
                        pass
                    self.delivered += 1
                    c.sendall(b"250 2.0.0 queued as 42\r\n")
                elif verb == b"RSET":
                    c.sendall(b"250 2.0.0 ok\r\n")
                elif verb == b"QUIT":
                    c.sendall(b"221 2.0.0 bye\r\n")
                    return
                else:
                    c.sendall(b"502 5.5.2 what\r\n")
        except OSError:
            return
        finally:
            c.close()

    def close(self):
        self.stop_flag = True
        self.sock.close()
        self.thread.join(5)


def inject(port, rcpt):
    import smtplib
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as s:
        s.ehlo("client.test")
        s.sendmail("sender@example.com", [rcpt],
                   b"Subject: client trace\r\n\r\nretry me\r\n")


def test_trace_smtp_client_451_then_250(kumod, tmp_path):
    mx = DeferOnceMx()
    k = kumod(RELAY_POLICY % {"var": tmp_path / "var", "mx": mx.port})
    t = Tracer(http_port(k), "trace-smtp-client", "--json", "--mx-addr", "127.0.0.1/32")
    none = Tracer(http_port(k), "trace-smtp-client", "--json", "--domain", "other.example")
    try:
        t.wait(started)
        none.wait(started)
        inject(k.smtp_port, "user@dest.example")

        def closed_and_delivered(lines):
            return closed_sessions(lines, "id") and mx.delivered >= 1
        t.wait(closed_and_delivered, timeout=30)
        sessions = session_events(t.events(), "id")
        done = [evs for evs in sessions.values() if payload_kind(evs[-1]) == "Closed"]
        assert len(done) == 1, sessions
        evs = done[0]
        seq = [(payload_kind(ev), ev["payload"][payload_kind(ev)]
                if isinstance(ev["payload"], dict) else None) for ev in evs]
        assert seq[0] == ("BeginSession", None)
        assert seq[1] == ("Connected", None)
        assert ("Read", "220 mx.test ESMTP\r\n") in seq
        assert ("Read", "250-mx.test\r\n250 8BITMIME\r\n") in seq
        # the first attempt: 451 to RCPT, then (same connection, retried) 250
        i451 = seq.index(("Read", "451 4.7.1 greylisted, try again later\r\n"))
        assert seq[i451 - 1] == ("Write", "RCPT TO:<user@dest.example>\r\n")
        later = seq[i451 + 1:]
        assert later[0] == ("MessageObtained", None)
        assert ("Write", "RSET\r\n") in later
        assert ("Write", "MAIL FROM:<sender@example.com>\r\n") in later
        assert ("Read", "250 2.1.5 ok\r\n") in later
        data = [v for kind, v in later if kind == "AbbreviatedWrite"]
        assert len(data) == 1 and data[0]["len"] > 20, seq
        assert data[0]["snippet"].startswith("Received: ")
        assert ("Read", "250 2.0.0 queued as 42\r\n") in later
        assert seq[-1] == ("Closed", None)
        meta = evs[-1]["conn_meta"]
        assert meta["mx_address"] == "127.0.0.1"
        assert meta["source_address"] == "127.0.0.1"
        assert meta["domain"] == "dest.example"
        assert meta["recipient"] == "user@dest.example"
        assert meta["ready_queue"] == "unspecified->mx_list:127.0.0.1:%d@smtp" % mx.port
        # the retry came about a second later (retry_interval 1s)
        whens = [ev["when"] for ev in evs]
        assert whens == sorted(whens)
        # --domain other.example: nothing once the message (dest.example) is known
        evs = none.events()
        assert not [ev for ev in evs if payload_kind(ev) in ("Write", "AbbreviatedWrite")
                    and isinstance(ev["conn_meta"], dict) and "domain" in ev["conn_meta"]]
        assert not [ev for ev in evs if payload_kind(ev) == "Write" and
                    ev["payload"]["Write"].startswith("MAIL FROM")]
    finally:
        t.stop()
        none.stop()
        mx.close()
    assert k.stop() == 0


def test_trace_only_one_follows_first_session_and_exits(kumod, tmp_path):
    k = kumod(SERVER_POLICY % {"var": tmp_path / "var", "password": PASSWORD,
                               "dead": free_port()})
    t = Tracer(http_port(k), "trace-smtp-server", "--json", "--only-one")
    try:
        t.wait(started)
        swaks(k.smtp_port, "--auth", "PLAIN")
        t.proc.wait(15)  # exits by itself once that session closed
        assert t.proc.returncode == 0
        t.reader.join(5)
        sessions = session_events(t.events())
        assert len(sessions) == 1, sessions
        evs = next(iter(sessions.values()))
        assert payload_kind(evs[0]) == "Connected" and payload_kind(evs[-1]) == "Closed"
    finally:
        t.stop()
    assert k.stop() == 0
