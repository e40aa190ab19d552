# SPDX-License-Identifier: Apache-2.0
"""The delivery client against a receiving server that behaves like Postfix
(issue 25): a scripted server keeps a transaction open after an end-of-data
rejection and answers a nested MAIL with 503 5.5.1, checks MAIL parameters
against what it advertised (SIZE, BODY=8BITMIME, SMTPUTF8, strict about
non-ASCII addresses) and logs every command. The relay kumod must RSET after a
failed transaction, never charge a reply about the session to a message,
declare MAIL parameters exactly when due, convert 8-bit content for a server
without 8BITMIME, and write records and a Received header that say what
happened. The last test repeats the core of it against a private Postfix
instance (`postfix -c DIR`, as bench/relay-vs-postfix.sh runs one) when Postfix
is installed and the test runs as root; Postfix 3.7 does answer a MAIL after an
end-of-data rejection with 503 nested MAIL unless the client sends RSET."""

import email
import email.policy
import grp
import os
import pwd
import re
import shutil
import smtplib
import socket
import socketserver
import ssl
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import free_port
from test_relay import records, wait_until

RELAY_POLICY = """
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool{ name = 'data', path = %(var)r .. '/spool/data' }
  kumo.define_spool{ name = 'meta', path = %(var)r .. '/spool/meta' }
  kumo.configure_local_logs{ log_dir = %(var)r .. '/logs', compression_level = 0 }
  kumo.start_esmtp_listener{ listen = '127.0.0.1:0', hostname = 'relay.test',
                             relay_hosts = { '127.0.0.1' } }
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config{
    retry_interval = '1s', max_retry_interval = '1s',
    protocol = { smtp = { mx_list = { %(mx)r } } },
  }
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path{ prohibited_hosts = {}, connect_timeout = '2s',
                                enable_tls = 'Disabled', connection_limit = 1,
                                idle_timeout = '30s', %(path)s }
end)
"""

ALL_CAPS = ["PIPELINING", "SIZE 10240000", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"]


class PostfixLike(socketserver.StreamRequestHandler):
    """One SMTP session with Postfix's transaction rules. server.caps: the
    EHLO keywords; server.reject_once: {Message-Id: reply} answered once at
    end of data, keeping the transaction open as Postfix does after an
    end-of-data restriction rejects; server.bogus_mail: replies for the first
    MAIL commands of the server's life, whatever the transaction (a 503 from a
    server whose idea of the session differs, a 530 STARTTLS required)."""

    def reply(self, line):
        self.wfile.write(line.encode() + b"\r\n")
        self.server.events.append((self.sid, "reply", line))

    def handle(self):
        srv = self.server
        with srv.lock:
            srv.sessions += 1
            self.sid = srv.sessions
        mail = None  # (address, params) of the open transaction
        rcpts = []
        self.reply("220 postfix.test ESMTP Postfix")
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            line = raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
            srv.events.append((self.sid, "cmd", line))
            verb = line.split(" ", 1)[0].split(":", 1)[0].upper()
            if verb == "EHLO":
                mail, rcpts = None, []
                caps = ["postfix.test"] + srv.caps
                for i, c in enumerate(caps):
                    self.reply("250%s%s" % ("-" if i + 1 < len(caps) else " ", c))
            elif verb == "RSET":
                mail, rcpts = None, []
                self.reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                self.reply("221 2.0.0 Bye")
                return
            elif verb == "MAIL":
                if mail is not None:
                    self.reply("503 5.5.1 Error: nested MAIL command")
                    continue
                if srv.bogus_mail:
                    self.reply(srv.bogus_mail.pop(0))
                    continue
                m = re.fullmatch(r"MAIL FROM:<([^>]*)>((?: \S+)*)", line, re.I)
                params = m.group(2).split()
                r = self.check_mail(m.group(1), params)
                if r:
                    self.reply(r)
                    continue
                mail = (m.group(1), params, line)
                self.reply("250 2.1.0 Ok")
            elif verb == "RCPT":
                if mail is None:
                    self.reply("503 5.5.1 Error: need MAIL command")
                    continue
                addr = re.fullmatch(r"RCPT TO:<([^>]*)>.*", line, re.I).group(1)
                if not addr.isascii() and "SMTPUTF8" not in [p.upper() for p in mail[1]]:
                    self.reply("553 5.6.7 Must declare SMTPUTF8 to send unicode address")
                elif addr.startswith("unknown"):
                    self.reply("550 5.1.1 <%s>: Recipient address rejected: User unknown"
                               % addr)
                else:
                    rcpts.append(addr)
                    self.reply("250 2.1.5 Ok")
            elif verb == "DATA":
                if not rcpts:
                    self.reply("554 5.5.1 Error: no valid recipients")
                    continue
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                data = bytearray()
                while True:
                    dl = self.rfile.readline()
                    if dl in (b".\r\n", b""):
                        break
                    data += dl[1:] if dl.startswith(b".") else dl
                msg = email.message_from_bytes(bytes(data), policy=email.policy.compat32)
                mid = msg.get("Message-Id", "")
                with srv.lock:
                    rej = srv.reject_once.pop(mid, None)
                if rej:
                    # Postfix: the transaction stays open after this
                    self.reply(rej)
                    continue
                srv.messages.append({"session": self.sid, "mail": mail[2],
                                     "params": mail[1], "rcpts": rcpts, "data": bytes(data),
                                     "message_id": mid})
                mail, rcpts = None, []
                self.reply("250 2.0.0 Ok: queued as %d" % len(srv.messages))
            elif verb == "NOOP":
                self.reply("250 2.0.0 Ok")
            else:
                self.reply("502 5.5.2 Error: command not recognized")

    def check_mail(self, addr, params):
        srv = self.server
        offered = {c.split()[0].upper() for c in srv.caps}
        keys = {p.split("=")[0].upper(): p for p in params}
        for k in keys:
            if k not in offered and not (k == "BODY" and "8BITMIME" in offered):
                return "555 5.5.4 Unsupported option: %s" % keys[k]
        if not addr.isascii() and "SMTPUTF8" not in keys:
            return "553 5.6.7 Must declare SMTPUTF8 to send unicode address"
        limit = [int(c.split()[1]) for c in srv.caps if c.upper().startswith("SIZE ")]
        if "SIZE" in keys and limit and int(keys["SIZE"].split("=")[1]) > limit[0]:
            return "552 5.3.4 Message size exceeds fixed limit"
        return None


@pytest.fixture
def postfix_like():
    servers = []

    def start(caps=ALL_CAPS, reject_once=None, bogus_mail=()):
        srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), PostfixLike)
        srv.daemon_threads = True
        srv.caps = list(caps)
        srv.reject_once = dict(reject_once or {})
        srv.bogus_mail = list(bogus_mail)
        srv.sessions = 0
        srv.events, srv.messages = [], []
        srv.lock = threading.Lock()
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def relay_start(kumod, var, srv, path=""):
    return kumod(RELAY_POLICY % {"var": str(var), "mx": "127.0.0.1:%d" % srv.server_address[1],
                                 "path": path}, policy_name="relay.lua")


def message(mid, body="hello\r\n", subject="interop", rcpt="rcpt@example.com", extra=""):
    return ("From: <sender@example.com>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-Id: %s\r\n%s\r\n"
            % (rcpt, subject, mid, extra)).encode() + (
                body.encode("utf-8") if isinstance(body, str) else body)


def submit(port, msgs, starttls=False, smtputf8=False):
    """msgs: [(recipient, bytes)], one session; returns the TLS (version, cipher)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as s:
        s.ehlo("client.test")
        facts = None
        if starttls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s.starttls(context=ctx)
            s.ehlo("client.test")
            facts = (s.sock.version(), s.sock.cipher()[0])
        for rcpt, data in msgs:
            opts = ["SMTPUTF8"] if smtputf8 else []
            assert s.sendmail("sender@example.com", [rcpt], data, mail_options=opts) == {}
    return facts


def by_type(var, t):
    return [r for r in records(var / "logs") if r["type"] == t]


def session_of(srv, mid):
    return [m["session"] for m in srv.messages if m["message_id"] == mid]


def commands(srv, session=None):
    return [e[2] for e in srv.events if e[1] == "cmd" and (session is None or e[0] == session)]


def replies(srv):
    return [e[2] for e in srv.events if e[1] == "reply"]


# --- 1. RSET after a failed transaction; session replies never bounce --------------


@pytest.mark.parametrize("pipelining", ["true", "false"])
@pytest.mark.parametrize("reject", ["550 5.7.1 Message content rejected",
                                    "451 4.7.1 Try again later"])
def test_rset_after_end_of_data_rejection_keeps_the_connection(kumod, tmp_path, postfix_like,
                                                                 reject, pipelining):
    srv = postfix_like(reject_once={"<first@t>": reject})
    var = tmp_path / "var"
    relay = relay_start(kumod, var, srv, path="enable_pipelining = %s" % pipelining)
    submit(relay.smtp_port, [("rcpt@example.com", message("<first@t>"))])
    assert wait_until(lambda: reject in replies(srv), timeout=15), relay.stderr()
    # the connection stays open (idle_timeout): the next messages use it
    submit(relay.smtp_port, [("rcpt@example.com", message("<second@t>")),
                             ("rcpt@example.com", message("<third@t>"))])
    want = {"<second@t>", "<third@t>"} | ({"<first@t>"} if reject[0] == "4" else set())
    assert wait_until(lambda: {m["message_id"] for m in srv.messages} >= want, timeout=20), \
        (relay.stderr(), srv.events)
    assert relay.stop() == 0
    # one connection; RSET before the MAIL that follows the rejected transaction
    assert srv.sessions == 1, srv.events
    assert not [r for r in replies(srv) if r.startswith("503")], srv.events
    rej_at = next(i for i, e in enumerate(srv.events) if e == (1, "reply", reject))
    nxt = [e[2] for e in srv.events[rej_at:] if e[1] == "cmd"]
    assert nxt[0] == "RSET" and nxt[1].startswith("MAIL FROM:"), nxt
    recs = records(var / "logs")
    delivered = [r for r in recs if r["type"] == "Delivery"]
    failed = [r for r in recs if r["type"] in ("Bounce", "TransientFailure")]
    assert len(failed) == 1, failed
    f = failed[0]
    code = int(reject[:3])
    assert f["type"] == ("Bounce" if code >= 500 else "TransientFailure")
    assert f["response"]["code"] == code
    assert f["response"]["command"] == "."
    assert f["response"]["content"] == reject[10:]
    assert f["response"]["enhanced_code"] == dict(zip(("class", "subject", "detail"),
                                                     map(int, reject[4:9].split("."))))
    assert len(delivered) == len(want), delivered
    for d in delivered:
        assert d["response"]["code"] == 250 and d["response"]["command"] == ".", d
        assert d["id"] != f["id"] or code < 500


@pytest.mark.parametrize("reply", ["503 5.5.1 Error: nested MAIL command",
                                   "530 5.7.0 Must issue a STARTTLS command first"])
def test_a_reply_about_the_session_is_transient_never_a_bounce(kumod, tmp_path, postfix_like,
                                                               reply):
    srv = postfix_like(bogus_mail=[reply])
    var = tmp_path / "var"
    relay = relay_start(kumod, var, srv)
    submit(relay.smtp_port, [("rcpt@example.com", message("<only@t>"))])
    assert wait_until(lambda: by_type(var, "Delivery"), timeout=20), (relay.stderr(), srv.events)
    assert relay.stop() == 0
    assert not by_type(var, "Bounce")
    t = by_type(var, "TransientFailure")
    assert len(t) == 1, t
    assert t[0]["response"]["code"] == int(reply[:3])
    assert t[0]["response"]["command"] == "MAIL FROM"
    assert t[0]["response"]["content"] == reply[10:]
    # the connection that answered was dropped; the retry used a new one
    assert srv.sessions == 2 and session_of(srv, "<only@t>") == [2], srv.events


# --- 2. MAIL FROM parameters ---------------------------------------------------------


def mail_params(srv, mid):
    (m,) = [m for m in srv.messages if m["message_id"] == mid]
    return {p.split("=")[0]: (p.split("=", 1) + [None])[1] for p in m["params"]}, m


def test_mail_from_parameters_exactly_when_due(kumod, tmp_path, postfix_like):
    srv = postfix_like()
    var = tmp_path / "var"
    relay = relay_start(kumod, var, srv)
    submit(relay.smtp_port, [
        ("ascii@example.com", message("<ascii@t>")),
        ("eight@example.com", message("<eight@t>", body="gr\u00fc\u00dfe\r\n")),
    ])
    submit(relay.smtp_port, [("j\u00fcrgen@example.com", message("<utf8@t>",
                                                                 rcpt="juergen@example.com"))],
           smtputf8=True)
    assert wait_until(lambda: len(srv.messages) == 3, timeout=20), (relay.stderr(), srv.events)
    assert relay.stop() == 0
    p, m = mail_params(srv, "<ascii@t>")
    assert p == {"SIZE": str(len(m["data"]))}, m["mail"]
    p, m = mail_params(srv, "<eight@t>")
    assert p == {"SIZE": str(len(m["data"])), "BODY": "8BITMIME"}, m["mail"]
    # the relay's Received header names the UTF-8 recipient: 8-bit content too
    p, m = mail_params(srv, "<utf8@t>")
    assert p == {"SIZE": str(len(m["data"])), "BODY": "8BITMIME", "SMTPUTF8": None}, m["mail"]
    assert m["rcpts"] == ["j\u00fcrgen@example.com"]


def test_no_parameters_for_a_server_without_extensions(kumod, tmp_path, postfix_like):
    srv = postfix_like(caps=["PIPELINING"])
    var = tmp_path / "var"
    relay = relay_start(kumod, var, srv)
    submit(relay.smtp_port, [("ascii@example.com", message("<plain@t>"))])
    assert wait_until(lambda: len(srv.messages) == 1, timeout=20), (relay.stderr(), srv.events)
    assert relay.stop() == 0
    assert srv.messages[0]["mail"] == "MAIL FROM:<sender@example.com>"


def test_size_over_the_limit_is_refused_at_mail(kumod, tmp_path, postfix_like):
    srv = postfix_like(caps=["PIPELINING", "SIZE 2000", "8BITMIME"])
    var = tmp_path / "var"
    relay = relay_start(kumod, var, srv)
    submit(relay.smtp_port, [("big@example.com", message("<big@t>", body=("y" * 70 + "\r\n") * 60))])
    assert wait_until(lambda: by_type(var, "Bounce"), timeout=20), (relay.stderr(), srv.events)
    assert relay.stop() == 0
    b = by_type(var, "Bounce")[0]
    assert (b["response"]["code"], b["response"]["command"]) == (552, "MAIL FROM"), b
    assert b["response"]["content"] == "Message size exceeds fixed limit"
    # refused before the transfer (DATA may be pipelined: it gets no 354)
    assert not [r for r in replies(srv) if r.startswith("354")], srv.events
    mail = [c for c in commands(srv) if c.startswith("MAIL")][0]
    assert re.fullmatch(r"MAIL FROM:<sender@example.com> SIZE=(\d+)", mail), mail
    assert int(mail.split("=")[1]) == b["size"]


def test_recipient_refused_records_rcpt_to(kumod, tmp_path, postfix_like):
    srv = postfix_like()
    var = tmp_path / "var"
    relay = relay_start(kumod, var, srv)
    submit(relay.smtp_port, [("unknown@example.com", message("<unk@t>"))])
    assert wait_until(lambda: by_type(var, "Bounce"), timeout=20), (relay.stderr(), srv.events)
    submit(relay.smtp_port, [("known@example.com", message("<known@t>"))])
    assert wait_until(lambda: by_type(var, "Delivery"), timeout=20), (relay.stderr(), srv.events)
    assert relay.stop() == 0
    b = by_type(var, "Bounce")[0]
    assert (b["response"]["code"], b["response"]["command"]) == (550, "RCPT TO"), b
    # a transaction refused at RCPT is followed by RSET on the same connection
    assert srv.sessions == 1
    cmds = commands(srv)
    i = cmds.index("RCPT TO:<unknown@example.com>")
    assert [c for c in cmds[i + 1:] if c != "DATA"][0] == "RSET", cmds


# --- 3. 8-bit content for a server without 8BITMIME ------------------------------------

NO_8BIT_CAPS = ["PIPELINING", "SIZE 10240000", "ENHANCEDSTATUSCODES"]

MULTIPART_HEAD = ("MIME-Version: 1.0\r\n"
                  "Content-Type: multipart/mixed; boundary=\"=b1\"\r\n")
MULTIPART = (
    "preamble\r\n"
    "--=b1\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Gr\u00fc\u00dfe aus K\u00f6ln = sch\u00f6n  \r\n"
    ".leading dot and a very long line " + "\u00e9" * 60 + "\r\n"
    "--=b1\r\n"
    "Content-Type: message/rfc822\r\n"
    "\r\n"
    "Subject: inner\r\n"
    "\r\n"
    "inner na\u00efve body\r\n"
    "--=b1\r\n"
    "Content-Type: application/octet-stream\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "AAECAw==\r\n"
    "--=b1--\r\n"
)


def leaf_payloads(msg):
    return [p.get_payload(decode=True) for p in msg.walk() if not p.is_multipart()
            and p.get_content_type() != "message/rfc822"]


def test_8bit_to_a_server_without_8bitmime_is_converted(kumod, tmp_path, postfix_like):
    srv = postfix_like(caps=NO_8BIT_CAPS)
    var = tmp_path / "var"
    relay = relay_start(kumod, var, srv)
    single = message("<single@t>", body="caf\u00e9 \u2615\r\nplain line\r\n",
                     extra="Content-Type: text/plain; charset=utf-8\r\n")
    multi = message("<multi@t>", body=MULTIPART, extra=MULTIPART_HEAD)
    submit(relay.smtp_port, [("a@example.com", single), ("b@example.com", multi)])
    assert wait_until(lambda: len(srv.messages) == 2, timeout=20), (relay.stderr(), srv.events)
    assert relay.stop() == 0
    for mid, orig in (("<single@t>", single), ("<multi@t>", multi)):
        p, m = mail_params(srv, mid)
        assert set(p) == {"SIZE"} and int(p["SIZE"]) == len(m["data"]), m["mail"]
        assert m["data"].isascii(), m["data"]
        assert max(len(line) for line in m["data"].split(b"\r\n")) <= 998
        got = email.message_from_bytes(m["data"], policy=email.policy.compat32)
        want = email.message_from_bytes(orig, policy=email.policy.compat32)
        assert leaf_payloads(got) == leaf_payloads(want), m["data"]
        for part in got.walk():
            if not part.is_multipart() and part.get_content_maintype() == "text":
                assert part["Content-Transfer-Encoding"] == "quoted-printable"
    # the structure is kept: same parts, the base64 one untouched
    got = email.message_from_bytes(mail_params(srv, "<multi@t>")[1]["data"])
    assert [p.get_content_type() for p in got.walk()] == [
        "multipart/mixed", "text/plain", "message/rfc822", "text/plain",
        "application/octet-stream"]
    assert b"\r\nAAECAw==\r\n--=b1--\r\n" in mail_params(srv, "<multi@t>")[1]["data"]
    assert got.preamble == "preamble"
    assert len(by_type(var, "Delivery")) == 2


def test_what_cannot_be_converted_bounces_clearly(kumod, tmp_path, postfix_like):
    srv = postfix_like(caps=NO_8BIT_CAPS)
    var = tmp_path / "var"
    relay = relay_start(kumod, var, srv)
    submit(relay.smtp_port,
           [("h@example.com", message("<hdr@t>", subject="gr\u00fc\u00dfe".encode().decode(),
                                      body="x\r\n"))])
    submit(relay.smtp_port, [("j\u00fcrgen@example.com",
                              message("<addr@t>", rcpt="juergen@example.com"))], smtputf8=True)
    submit(relay.smtp_port, [("ok@example.com", message("<ok@t>"))])
    assert wait_until(lambda: len(by_type(var, "Bounce")) == 2 and srv.messages, timeout=20), \
        (relay.stderr(), srv.events)
    assert relay.stop() == 0
    got = {(b["response"]["code"], b["response"]["content"], b["response"]["command"],
            b["recipient"]) for b in by_type(var, "Bounce")}
    assert got == {
        (554, "8-bit content cannot be converted for a server without 8BITMIME: "
              "8-bit octets in a header field", None, "h@example.com"),
        (553, "SMTPUTF8 is required, but was not offered by the server", None,
         "j\u00fcrgen@example.com"),
    }, got
    # neither reached the server; the session stayed usable for the next one
    assert [c for c in commands(srv) if c.startswith("MAIL")] == [
        "MAIL FROM:<sender@example.com> SIZE=%d" % len(srv.messages[0]["data"])]
    assert srv.sessions == 1


# --- 4. records and the Received header ---------------------------------------------

RECEIVED_RE = re.compile(
    r"Received: from client\.test \(\[127\.0\.0\.1\]\)(?: \(using (\S+) with cipher (\S+)\))?"
    r" by relay\.test \(KumoMTA\) with (\S+) id ([0-9a-f]{32})(?: for <[^>]*>)?; ")


def test_reception_tls_facts_and_received_header(kumod, tmp_path, postfix_like):
    srv = postfix_like()
    var = tmp_path / "var"
    relay = relay_start(kumod, var, srv)
    facts = submit(relay.smtp_port, [("tls@example.com", message("<tls@t>"))], starttls=True)
    submit(relay.smtp_port, [("j\u00fcrgen@example.com",
                              message("<u8tls@t>", rcpt="juergen@example.com"))],
           starttls=True, smtputf8=True)
    submit(relay.smtp_port, [("plain@example.com", message("<plain@t>"))])
    submit(relay.smtp_port, [("m\u00fcller@example.com",
                              message("<u8@t>", rcpt="mueller@example.com"))], smtputf8=True)
    assert wait_until(lambda: len(srv.messages) == 4, timeout=20), (relay.stderr(), srv.events)
    assert relay.stop() == 0
    recs = {r["id"]: r for r in by_type(var, "Reception")}
    want = {"<tls@t>": ("ESMTPS", True), "<u8tls@t>": ("UTF8SMTPS", True),
            "<plain@t>": ("ESMTP", False), "<u8@t>": ("UTF8SMTP", False)}
    for mid, (proto, tls) in want.items():
        (m,) = [m for m in srv.messages if m["message_id"] == mid]
        # the first header field, unfolded
        first = re.sub(r"\r\n[ \t]+", " ", re.match(rb"(?:[^\r]|\r\n[ \t])*", m["data"])
                       .group(0).decode())
        mt = RECEIVED_RE.match(first)
        assert mt, first
        version, cipher, with_, rid = mt.groups()
        assert with_ == proto, first
        assert (version, cipher) == (facts if tls else (None, None)), first
        rec = recs[rid]
        assert rec["response"]["command"] == "."
        if tls:
            assert (rec["tls_protocol_version"], rec["tls_cipher"]) == facts, rec
        else:
            assert "tls_cipher" not in rec and "tls_protocol_version" not in rec, rec
    for d in by_type(var, "Delivery"):
        assert d["response"]["command"] == ".", d


# --- the same against a private Postfix instance (when installed) --------------------

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"


def postfix_unavailable():
    if not (os.access(POSTFIX, os.X_OK) and os.access(POSTCONF, os.X_OK)):
        return "postfix is not installed"
    if os.geteuid() != 0:
        return "a private Postfix instance needs root"
    try:
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError:
        return "the postfix user or postdrop group is missing"
    return None


MASTER_CF = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "postfix-master.cf")


@pytest.fixture
def private_postfix():
    """Postfix in a private config and queue directory (as
    bench/relay-vs-postfix.sh runs it): smtpd on a free loopback port, mail
    discarded after it is queued, stopped by its own master's pid."""
    why = postfix_unavailable()
    if why:
        pytest.skip(why)
    work = tempfile.mkdtemp(prefix="kumod-postfix-")
    os.chmod(work, 0o755)  # the daemons run as user postfix inside it
    etc, queue, data = (os.path.join(work, d) for d in ("etc", "queue", "data"))
    for d in (etc, queue, data):
        os.makedirs(d)
    shutil.chown(data, "postfix")
    for f in ("postfix-files", "dynamicmaps.cf", "postfix-files.d", "dynamicmaps.cf.d"):
        src = os.path.join("/etc/postfix", f)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(etc, f))
        elif os.path.exists(src):
            shutil.copy(src, etc)
    open(os.path.join(etc, "main.cf"), "w").close()
    port = free_port()
    with open(os.path.join(etc, "master.cf"), "w") as f:
        f.write(open(MASTER_CF).read().replace("@SMTPD_PORT@", str(port)))
    maillog = os.path.join(work, "maillog")
    subprocess.run([POSTCONF, "-c", etc, "-e", "compatibility_level=3.6",
                    "config_directory=" + etc, "meta_directory=" + etc,
                    "queue_directory=" + queue, "data_directory=" + data,
                    "maillog_file=" + maillog, "maillog_file_prefixes=" + work,
                    "syslog_name=postfix-kumod-test", "myhostname=postfix.test",
                    "mydomain=postfix.test", "inet_interfaces=127.0.0.1",
                    "inet_protocols=ipv4", "mynetworks=127.0.0.0/8", "mydestination=",
                    "relay_domains=", "local_recipient_maps=", "alias_maps=",
                    "alias_database=", "default_transport=discard:interop test",
                    "smtpd_tls_security_level=none", "smtpd_peername_lookup=no",
                    "smtputf8_enable=yes", "strict_smtputf8=yes",
                    "message_size_limit=20000",
                    "smtpd_end_of_data_restrictions=check_sender_access "
                    "inline:{ { reject@example.com = REJECT content refused } }"],
                   check=True, capture_output=True)

    def pf(*args):
        # postfix wants a terminal for some messages (as the bench does)
        return subprocess.run(["script", "-qec", " ".join([POSTFIX, "-c", etc, *args]),
                               "/dev/null"], stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=60)

    r = pf("start")
    pidfile = os.path.join(queue, "pid", "master.pid")
    master = None
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and master is None:
            try:
                master = int(open(pidfile).read().strip())
            except (OSError, ValueError):
                time.sleep(0.1)
        assert master, (r.stdout, open(maillog).read() if os.path.exists(maillog) else "")
        assert wait_until(lambda: connectable(port), timeout=15)
        yield port, maillog
    finally:
        pf("stop")
        if master:
            for _ in range(100):
                try:
                    os.kill(master, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(master, 9)
        shutil.rmtree(work, ignore_errors=True)


def connectable(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_against_a_private_postfix(kumod, tmp_path, private_postfix):
    port, maillog = private_postfix
    var = tmp_path / "var"
    relay = kumod(RELAY_POLICY % {"var": str(var), "mx": "127.0.0.1:%d" % port, "path": ""},
                  policy_name="relay.lua")

    def sendas(sender, rcpt, data, smtputf8=False):
        with smtplib.SMTP("127.0.0.1", relay.smtp_port, timeout=15) as s:
            s.ehlo("client.test")
            s.sendmail(sender, [rcpt], data, mail_options=["SMTPUTF8"] if smtputf8 else [])

    # end-of-data rejection, then more mail on the same connection
    sendas("reject@example.com", "r1@example.com", message("<pf1@t>", rcpt="r1@example.com"))
    assert wait_until(lambda: by_type(var, "Bounce"), timeout=20), open(maillog).read()
    sendas("sender@example.com", "r2@example.com", message("<pf2@t>", rcpt="r2@example.com"))
    sendas("sender@example.com", "j\u00fcrgen@example.com",
           message("<pf3@t>", rcpt="juergen@example.com"), smtputf8=True)
    sendas("sender@example.com", "r4@example.com",
           message("<pf4@t>", rcpt="r4@example.com", body=("z" * 70 + "\r\n") * 400))
    assert wait_until(lambda: len(by_type(var, "Delivery")) == 2
                      and len(by_type(var, "Bounce")) == 2, timeout=30), \
        (relay.stderr(), open(maillog).read())
    assert relay.stop() == 0
    assert not by_type(var, "TransientFailure")
    bounces = {b["recipient"]: b["response"] for b in by_type(var, "Bounce")}
    eod = bounces["r1@example.com"]
    assert (eod["code"], eod["command"]) == (554, "."), eod
    assert eod["content"].endswith("Sender address rejected: content refused"), eod
    big = bounces["r4@example.com"]
    assert (big["code"], big["command"], big["content"]) == (
        552, "MAIL FROM", "Message size exceeds fixed limit"), big
    assert {d["recipient"] for d in by_type(var, "Delivery")} == {
        "r2@example.com", "j\u00fcrgen@example.com"}
    log = open(maillog).read()
    # one connection carried all four transactions (no 503 nested MAIL);
    # the other one is the fixture's probe of the port
    assert len(re.findall(r"smtpd\[\d+\]: connect from", log)) == 2, log
    assert "nested MAIL" not in log
