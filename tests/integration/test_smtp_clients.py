# SPDX-License-Identifier: Apache-2.0
"""Real SMTP clients against the ESMTP listener: Python smtplib, swaks,
openssl s_client; STARTTLS injection and a configured certificate."""

import os
import queue
import re
import shutil
import smtplib
import ssl
import subprocess
import threading
import time

import pytest

from conftest import free_port
from smtpraw import Capture, SMTPRaw, check, policy

MSG = (b"From: a@example.test\r\nTo: b@example.test\r\nSubject: hello\r\n\r\n"
       b"Hello from a real client.\r\n.leading dot\r\n")


def unverified():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.fixture
def server(kumod, tmp_path):
    """(Kumod, Capture) with the default listener (self-signed certificate)."""
    cap = tmp_path / "cap"
    k = kumod(policy(capture_dir=str(cap)))
    return k, Capture(cap)


# --- smtplib ---------------------------------------------------------------------------


def test_smtplib_ehlo_features(server):
    k, _ = server
    with smtplib.SMTP("127.0.0.1", k.smtp_port, local_hostname="client.test", timeout=10) as s:
        code, text = s.ehlo()
        assert code == 250
        assert text.split(b"\n")[0] == b"mx.test Aloha client.test", text
        for ext in ("pipelining", "enhancedstatuscodes", "8bitmime", "smtputf8", "size", "starttls"):
            assert s.has_extn(ext), (ext, text)
        assert s.esmtp_features["size"] == str(20 << 20), s.esmtp_features
        code, text = s.helo("client.test")
        assert (code, text) == (250, b"Hello client.test!")
        assert s.noop() == (250, b"the goggles do nothing")
        assert s.rset() == (250, b"Reset state")


def test_smtplib_several_messages_per_connection(server):
    k, cap = server
    with smtplib.SMTP("127.0.0.1", k.smtp_port, local_hostname="client.test", timeout=10) as s:
        for i in range(5):
            assert s.sendmail("s%d@example.test" % i, ["r%d@example.test" % i], MSG) == {}
        code, text = s.mail("x@example.test")
        assert code == 250
        s.rcpt("y@example.test")
        s.rcpt("z@example.test")
        code, text = s.data(MSG)
        assert code == 250 and len(ids_of_text(text)) == 2, text
    assert cap.count() == 7
    assert cap.senders()[:5] == ["s%d@example.test" % i for i in range(5)]
    body = cap.messages()[0]
    assert body.endswith(b"\r\n\r\nHello from a real client.\r\n.leading dot\r\n"), body
    assert re.search(rb"(^|\r\n)Received: from client\.test ", body.split(b"\r\n\r\n")[0]), body


def ids_of_text(text):
    m = re.fullmatch(rb"OK ids=((?:[0-9a-f]{32} ?)+)", text)
    assert m, text
    return m.group(1).split()


def test_smtplib_starttls_then_mail(server):
    k, cap = server
    with smtplib.SMTP("127.0.0.1", k.smtp_port, local_hostname="client.test", timeout=10) as s:
        s.ehlo()
        code, text = s.starttls(context=unverified())
        assert (code, text) == (220, b"2.0.0 Ready to Start TLS")
        s.ehlo()
        assert not s.has_extn("starttls"), s.esmtp_features
        assert s.has_extn("pipelining")
        for i in range(3):
            assert s.sendmail("tls%d@example.test" % i, ["r@example.test"], MSG) == {}
        version = s.sock.version()
        cipher = s.sock.cipher()[0]
    rows = cap.index()
    assert len(rows) == 3
    for r in rows:
        assert r["tls_version"] == version, r
        assert r["tls_cipher"] == cipher, r
    assert b"with ESMTPS" in cap.messages()[0], cap.messages()[0][:400]


def test_smtplib_smtputf8(server):
    k, cap = server
    with smtplib.SMTP("127.0.0.1", k.smtp_port, local_hostname="client.test", timeout=10) as s:
        s.ehlo()
        assert s.sendmail("jürgen@bücher.test", ["zoë@exämple.test"], MSG,
                          mail_options=["SMTPUTF8"]) == {}
        with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
            s.sendmail("a@example.test", ["zoë@exämple.test"], MSG)
        code, text = e.value.recipients["zoë@exämple.test"]
        assert code == 553 and text.startswith(b"5.6.7"), (code, text)
    assert cap.index()[0]["sender"] == "jürgen@bücher.test"


# --- swaks ------------------------------------------------------------------------------

needs_swaks = pytest.mark.skipif(not shutil.which("swaks"), reason="swaks not installed")


def swaks(port, *args, timeout=30):
    cmd = ["swaks", "--server", "127.0.0.1:%d" % port, "--helo", "client.test",
           "--from", "sender@example.test", "--to", "rcpt@example.test", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout)
    return r.returncode, r.stdout + r.stderr


@needs_swaks
def test_swaks_plain(server):
    k, cap = server
    rc, out = swaks(k.smtp_port)
    assert rc == 0, out
    assert re.search(r"<-  250 OK ids=[0-9a-f]{32}\n", out), out
    assert "<-  221 So long, and thanks for all the fish!" in out, out
    assert cap.count() == 1


@needs_swaks
def test_swaks_pipeline(server):
    k, cap = server
    rc, out = swaks(k.smtp_port, "--pipeline", "--to", "r1@example.test,r2@example.test")
    assert rc == 0, out
    assert "PIPELINING" in out
    assert re.search(r"<-  250 OK ids=[0-9a-f]{32} [0-9a-f]{32}\n", out), out
    assert cap.count() == 2


@needs_swaks
def test_swaks_tls(server):
    k, cap = server
    rc, out = swaks(k.smtp_port, "-tls")
    assert rc == 0, out
    assert "<-  220 2.0.0 Ready to Start TLS" in out, out
    m = re.search(r"=== TLS started with cipher (TLSv[\d.]+):(\S+)", out)
    assert m, out
    assert re.search(r"<~  250 OK ids=[0-9a-f]{32}\n", out), out
    assert "STARTTLS" not in out.split("=== TLS started", 1)[1].split("~> MAIL", 1)[0], out
    rows = cap.index()
    assert len(rows) == 1 and rows[0]["tls_version"] == m.group(1), (rows, m.group(0))


@needs_swaks
def test_swaks_quit_after_rcpt(server):
    k, cap = server
    rc, out = swaks(k.smtp_port, "--quit-after", "RCPT")
    assert rc == 0, out
    assert "<-  250 OK" in out and "<-  221 " in out, out
    assert "<-  354" not in out and "-> DATA" not in out, out
    time.sleep(0.2)
    assert cap.count() == 0


@needs_swaks
def test_swaks_relay_denied(kumod, tmp_path):
    k = kumod(policy(listener="relay_hosts = { '192.0.2.0/24' }"))
    rc, out = swaks(k.smtp_port, "--to", "victim@foreign.test")
    assert rc != 0, out
    assert "<** 550 5.7.1 relaying not permitted for 127.0.0.1" in out, out


# --- openssl s_client ---------------------------------------------------------------------


class Proc:
    """A child process whose combined output is read line by line in a thread."""

    def __init__(self, cmd):
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT)
        self.q = queue.Queue()
        self.out = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            self.q.put(line.decode("utf-8", "replace").rstrip("\r\n"))
        self.q.put(None)

    def write(self, s):
        self.p.stdin.write(s.encode())
        self.p.stdin.flush()

    def until(self, pattern, timeout=10):
        """Lines up to and including the first one matching pattern."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no /%s/ within %ss; output:\n%s" % (pattern, timeout,
                                     "\n".join(self.out)))
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError("process ended before /%s/; output:\n%s" % (pattern,
                                     "\n".join(self.out)))
            self.out.append(line)
            got.append(line)
            if re.search(pattern, line):
                return got

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(5)
        self.t.join(5)


def test_openssl_s_client_starttls(server):
    k, cap = server
    p = Proc(["openssl", "s_client", "-starttls", "smtp", "-crlf", "-ign_eof",
              "-connect", "127.0.0.1:%d" % k.smtp_port])
    try:
        p.until(r"Verify return code", timeout=10)
        p.write("EHLO after.tls\n")
        # (s_client may echo the tail of the pre-TLS EHLO reply first: skip it)
        p.until(r"^250-mx\.test Aloha after\.tls$", timeout=10)
        ehlo = [l for l in p.until(r"^250 ", timeout=10) if l.startswith("250")]
        assert not any("STARTTLS" in l for l in ehlo), ehlo
        p.write("MAIL FROM:<tls@example.test>\n")
        p.until(r"^250 OK$")
        p.write("RCPT TO:<r@example.test>\n")
        p.until(r"^250 OK$")
        p.write("DATA\n")
        p.until(r"^354 ")
        p.write("Subject: s_client\n\nhi\n.\n")
        p.until(r"^250 OK ids=[0-9a-f]{32}$")
        p.write("QUIT\n")
        p.until(r"^221 ")
    finally:
        p.stop()
    text = "\n".join(p.out)
    m = re.search(r"New, (TLSv[\d.]+), Cipher is (\S+)", text) or \
        re.search(r"Protocol\s*:\s*(TLSv[\d.]+)", text)
    assert m, text
    rows = cap.index()
    assert len(rows) == 1, rows
    assert rows[0]["tls_version"] == m.group(1), (rows, m.group(0))
    assert rows[0]["tls_version"] in ("TLSv1.2", "TLSv1.3")


def test_tls_1_1_refused(server):
    k, _ = server
    r = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-tls1_1", "-connect",
                        "127.0.0.1:%d" % k.smtp_port], input=b"", capture_output=True, timeout=15)
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    if "no protocols available" in out or "unsupported protocol" in out:
        pytest.skip("this OpenSSL cannot offer TLS 1.1")
    assert "New, (NONE), Cipher is (NONE)" in out or "alert protocol version" in out, out
    assert not re.search(r"New, TLSv1\.1, Cipher is (?!\(NONE\))", out), out


# --- STARTTLS injection (CVE-2011-0411 class) --------------------------------------------


def test_starttls_injection_is_discarded(kumod, tmp_path):
    port = free_port()
    k = kumod(policy(listener="listen = '127.0.0.1:%d'" % port, capture_dir=str(tmp_path / "cap")),
              env={"KUMOD_LOG": "kumod::smtp_server=warn,kumo_server_common=info"})
    with SMTPRaw(port) as c:
        check(c.greeting, 220)
        c.ehlo()
        c.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
        r = c.reply()
        check(r, 220, "2.0.0", text="^Ready to Start TLS$", what="STARTTLS with injected MAIL")
        leftover = c.starttls(unverified())
        assert leftover == b"", "plaintext reply after 220: %r" % leftover
        # Inside TLS: a fresh session, the injected MAIL never ran.
        check(c.cmd("RCPT TO:<r@example.test>"), 503, "5.5.1", what="RCPT in fresh TLS session")
        check(c.cmd("MAIL FROM:<a@example.test>"), 503, "5.5.1", what="MAIL before EHLO in TLS")
        r = c.ehlo("inside.test")
        assert "STARTTLS" not in r.lines, r
        check(c.cmd("STARTTLS"), (501, 503), what="STARTTLS inside TLS")
        c.expect("MAIL FROM:<a@example.test>", 250)
        c.expect("RCPT TO:<r@example.test>", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: tls\r\n\r\nx\r\n.\r\n")
        check(c.reply(), 250)
    assert Capture(tmp_path / "cap").senders() == ["a@example.test"]
    line = k.wait_for("after STARTTLS", timeout=3)
    assert re.search(r"WARN.*sent \d+ bytes after STARTTLS.*discarded", line), line
    assert "injected@evil.test" not in k.stderr()


def test_starttls_twice_refused_and_state_reset(server):
    k, _ = server
    with SMTPRaw(k.smtp_port) as c:
        c.ehlo()
        c.expect("MAIL FROM:<a@example.test>", 250)
        c.expect("RSET", 250)
        c.expect("STARTTLS", 220, "2.0.0")
        c.starttls(unverified())
        c.ehlo()
        r = c.cmd("STARTTLS")
        check(r, 501, "5.5.1", text="Cannot STARTTLS as TLS is already active")
        c.expect("NOOP", 250)


def test_failed_handshake_closes(server):
    k, _ = server
    with SMTPRaw(k.smtp_port) as c:
        c.ehlo()
        c.expect("STARTTLS", 220)
        c.send(b"EHLO this is not a TLS ClientHello\r\n")
        out = c.read_all(timeout=5)
        assert c.eof, "connection still open after a failed handshake"
        # never continues in plaintext: no reply line at all
        assert not any(l[:3] == b"250" for l in out.split(b"\n")), out


# --- configured certificate -----------------------------------------------------------------


def make_cert(d):
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=mx.test",
                    "-addext", "subjectAltName=DNS:mx.test,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def test_configured_certificate(kumod, tmp_path):
    cert, key = make_cert(str(tmp_path))
    k = kumod(policy(listener="tls_certificate = '%s', tls_private_key = '%s'" % (cert, key)))
    ctx = ssl.create_default_context(cafile=cert)  # verifies chain and 127.0.0.1
    with smtplib.SMTP("127.0.0.1", k.smtp_port, local_hostname="client.test", timeout=10) as s:
        s.ehlo()
        code, _ = s.starttls(context=ctx)
        assert code == 220
        der = s.sock.getpeercert(binary_form=True)
        s.ehlo()
        assert s.sendmail("a@example.test", ["b@example.test"], MSG) == {}
    with open(cert) as f:
        assert der == ssl.PEM_cert_to_DER_cert(f.read())


def test_missing_certificate_file_is_fatal(kumod, tmp_path):
    k = kumod(policy(listener="tls_certificate = '%s', tls_private_key = '%s'"
                     % (tmp_path / "nope.pem", tmp_path / "nope.key")), wait=None)
    try:
        k.proc.wait(10)
    except subprocess.TimeoutExpired:
        pytest.fail("kumod started with a missing certificate")
    k._reader.join(5)
    assert k.proc.returncode != 0
    assert "nope.pem" in k.stderr(), k.stderr()
