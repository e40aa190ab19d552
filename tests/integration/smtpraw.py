# SPDX-License-Identifier: Apache-2.0
"""Byte-exact SMTP client for integration tests, plus policy builders.

    c = SMTPRaw(port)              # connects; c.greeting is the 220 reply
    r = c.cmd("EHLO x")            # sends "EHLO x\\r\\n", reads one (multi-line) reply
    c.send(b"MAIL FROM:<a@b>\\r\\nRCPT TO:<c@d>\\r\\n")   # exactly these bytes, one write
    r1, r2 = c.replies(2)
    assert c.closed()              # peer closed the connection (EOF)

Replies are `Reply` objects: .code (int), .lines (texts after "NNN-"/"NNN "),
.text (lines joined with "\\n"), .enhanced ("5.5.1" or None), .raw (bytes).
"""

import os
import re
import socket
import ssl
import time

ENH_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")


class ReplyError(AssertionError):
    pass


class Reply:
    def __init__(self, code, lines, raw):
        self.code = code
        self.lines = lines
        self.raw = raw

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def msg(self):
        """The text without the enhanced status code at the start of each line."""
        return "\n".join(ENH_RE.sub("", l, count=1) if ENH_RE.match(l) else l for l in self.lines)

    @property
    def enhanced(self):
        m = ENH_RE.match(self.lines[-1]) if self.lines else None
        return "%s.%s.%s" % m.groups() if m else None

    def __repr__(self):
        return "Reply(%r)" % self.raw.decode("utf-8", "replace")

    def __str__(self):
        return self.raw.decode("utf-8", "replace").rstrip("\r\n")


class SMTPRaw:
    def __init__(self, port, host="127.0.0.1", timeout=10.0, greet=True):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.timeout = timeout
        self.buf = b""
        self.eof = False
        self.greeting = self.reply() if greet else None

    # --- low level -----------------------------------------------------------
    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out waiting for the server")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
        self.buf += chunk
        return chunk

    def _line(self, deadline):
        while b"\n" not in self.buf:
            if self.eof or not self._fill(deadline):
                return None
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"

    def reply(self, timeout=None):
        """Reads one complete (multi-line) reply; ReplyError on EOF or garbage."""
        deadline = time.monotonic() + (timeout or self.timeout)
        raw = b""
        lines = []
        code = None
        while True:
            line = self._line(deadline)
            if line is None:
                raise ReplyError("connection closed; partial reply %r, pending %r" % (raw, self.buf))
            raw += line
            s = line.rstrip(b"\r\n").decode("utf-8", "replace")
            if len(s) < 3 or not s[:3].isdigit() or (len(s) > 3 and s[3] not in " -"):
                raise ReplyError("malformed reply line %r (so far %r)" % (line, raw))
            if lines and int(s[:3]) != code:
                raise ReplyError("code changed inside a multi-line reply: %r" % raw)
            code = int(s[:3])
            lines.append(s[4:])
            if len(s) == 3 or s[3] == " ":
                return Reply(code, lines, raw)

    def replies(self, n, timeout=None):
        return [self.reply(timeout) for _ in range(n)]

    def cmd(self, line, timeout=None):
        """Sends line + CRLF (line may be str or bytes), returns the reply."""
        if isinstance(line, str):
            line = line.encode("utf-8", "surrogateescape")
        self.send(line + b"\r\n")
        return self.reply(timeout)

    def expect(self, line, code, enhanced=None, timeout=None, text=None):
        r = self.cmd(line, timeout)
        check(r, code, enhanced, text, what=line)
        return r

    def closed(self, timeout=3.0):
        """True when the server closes the connection (after any pending bytes
        are read and discarded into .leftover)."""
        deadline = time.monotonic() + timeout
        try:
            while not self.eof:
                self._fill(deadline)
        except (socket.timeout, TimeoutError):
            return False
        except OSError:
            return True
        self.leftover = self.buf
        return True

    def read_all(self, timeout=5.0):
        """Everything until EOF (or timeout): bytes."""
        self.closed(timeout)
        out, self.buf = self.buf, b""
        return out

    def pending(self, wait=0.3):
        """Bytes the server sent without being asked (within `wait` seconds)."""
        deadline = time.monotonic() + wait
        try:
            while True:
                if not self._fill(deadline):
                    break
        except (socket.timeout, TimeoutError):
            pass
        out, self.buf = self.buf, b""
        return out

    def starttls(self, context=None, server_hostname=None):
        """Wraps the socket in TLS (after the 220 to STARTTLS). Unread plaintext
        bytes are returned (they must be empty)."""
        leftover, self.buf = self.buf, b""
        if context is None:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)
        return leftover

    def ehlo(self, name="client.test"):
        return self.expect("EHLO " + name, 250)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def check(r, code, enhanced=None, text=None, what=""):
    """Asserts r.code == code (int, or tuple of allowed codes), the enhanced
    code (exact string, or compiled regex, or tuple of strings) and, optionally,
    a regex on the text without its enhanced code (Reply.msg)."""
    codes = code if isinstance(code, (tuple, list, set)) else (code,)
    assert r.code in codes, "%r: expected %s, got %s" % (what, code, r)
    if enhanced is not None:
        if isinstance(enhanced, re.Pattern):
            ok = r.enhanced is not None and enhanced.fullmatch(r.enhanced)
        elif isinstance(enhanced, (tuple, list, set)):
            ok = r.enhanced in enhanced
        else:
            ok = r.enhanced == enhanced
        assert ok, "%r: expected enhanced %s, got %s" % (what, getattr(enhanced, "pattern", enhanced), r)
    if text is not None:
        assert re.search(text, r.msg), "%r: expected text /%s/, got %s" % (what, text, r)


# --- policies ---------------------------------------------------------------


def lua_str(s):
    """A Lua long-bracket string literal holding s (no escapes needed)."""
    level = 0
    while ("]" + "=" * level + "]") in s:
        level += 1
    eq = "=" * level
    return "[%s[%s]%s]" % (eq, s, eq)


CAPTURE_LUA = r"""
local CAPTURE = %(dir)s
local function capture(msg, conn_meta)
  local id = msg:id()
  local f = assert(io.open(CAPTURE .. '/' .. id .. '.eml', 'wb'))
  f:write(msg:get_data())
  f:close()
  local s = msg:sender()
  local r = msg:recipient()
  local tv = conn_meta and conn_meta:get_meta('tls_protocol_version') or ''
  local tc = conn_meta and conn_meta:get_meta('tls_cipher') or ''
  local l = assert(io.open(CAPTURE .. '/index.log', 'ab'))
  l:write(id, '\t', s and s.email or '', '\t', r and r.email or '', '\t',
          tostring(tv), '\t', tostring(tc), '\n')
  l:close()
end
"""


def policy(listener="", listeners=None, capture_dir=None, hooks="", received="", prelude=""):
    """A policy text: listeners on 127.0.0.1:0 (hostname mx.test) with extra Lua
    table fields `listener`; `smtp_server_message_received` captures (when
    capture_dir) then runs `received` (Lua statements with msg, conn_meta) and
    discards to the null queue. `hooks` adds other kumo.on handlers."""
    if listeners is None:
        listeners = [listener]
    starts = "\n".join(
        "  kumo.start_esmtp_listener{ listen = '127.0.0.1:0', hostname = 'mx.test', %s }" % l
        if "listen" not in l else
        "  kumo.start_esmtp_listener{ hostname = 'mx.test', %s }" % l
        for l in listeners)
    if capture_dir:
        os.makedirs(str(capture_dir), exist_ok=True)
    cap = CAPTURE_LUA % {"dir": lua_str(str(capture_dir))} if capture_dir else ""
    return """local kumo = require('kumo')
%(prelude)s
%(cap)s
kumo.on('init', function()
%(starts)s
end)
kumo.on('smtp_server_message_received', function(msg, conn_meta)
%(received)s
  %(do_cap)s
  msg:set_meta('queue', 'null')
end)
%(hooks)s
""" % {"prelude": prelude, "cap": cap, "starts": starts, "received": received,
       "do_cap": "capture(msg, conn_meta)" if capture_dir else "", "hooks": hooks}


class Capture:
    """Messages stored by the capture policy in a directory."""

    def __init__(self, path):
        self.path = str(path)
        os.makedirs(self.path, exist_ok=True)

    def index(self):
        try:
            with open(os.path.join(self.path, "index.log"), "rb") as f:
                rows = [l.decode("utf-8", "replace").split("\t") for l in f.read().splitlines()]
        except FileNotFoundError:
            return []
        return [dict(zip(("id", "sender", "recipient", "tls_version", "tls_cipher"), r)) for r in rows]

    def count(self):
        return len(self.index())

    def senders(self):
        return [r["sender"] for r in self.index()]

    def data(self, msg_id):
        with open(os.path.join(self.path, msg_id + ".eml"), "rb") as f:
            return f.read()

    def messages(self):
        return [self.data(r["id"]) for r in self.index()]

    def clear(self):
        for n in os.listdir(self.path):
            os.unlink(os.path.join(self.path, n))


def wait_until(pred, timeout=5.0, step=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


def ids_of(reply):
    m = re.match(r"OK ids=((?:[0-9a-f]{32} ?)+)$", reply.text)
    assert m, "expected '250 OK ids=<32hex>', got %s" % reply
    return m.group(1).split()


def transaction(c, sender="sender@example.test", rcpts=("rcpt@example.test",), body=None,
                data_bytes=None):
    """MAIL/RCPT/DATA one command at a time; returns the final reply."""
    c.expect("MAIL FROM:<%s>" % sender, 250)
    for r in rcpts:
        c.expect("RCPT TO:<%s>" % r, 250)
    c.expect("DATA", 354)
    if data_bytes is None:
        data_bytes = (body or "Subject: test\r\n\r\nhello\r\n").encode() + b".\r\n"
    c.send(data_bytes)
    return c.reply()


# --- daemons shared by several tests of one module ----------------------------


def spawn_kumod(workdir, policy_text=None, env=None, args=None, wait="initialization complete",
                timeout=15, policy_path=None):
    """Starts kumod outside the function-scoped `kumod` fixture (for module
    fixtures); the caller stops it with stop_kumod()."""
    import subprocess
    import conftest
    conftest.require_kumod()
    workdir = str(workdir)
    os.makedirs(workdir, exist_ok=True)
    if policy_path is None:
        policy_path = os.path.join(workdir, "policy.lua")
        with open(policy_path, "w") as f:
            f.write(policy_text)
    proc = subprocess.Popen([conftest.KUMOD_BIN, "--policy", policy_path, *(args or [])],
                            env=conftest.kumod_env(env), cwd=workdir, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    k = conftest.Kumod(proc, policy_path)
    try:
        if wait:
            k.wait_for(wait, timeout)
    except BaseException:
        stop_kumod(k)
        raise
    return k


def stop_kumod(k, timeout=10):
    """SIGTERM, then SIGKILL after timeout; returns the exit status."""
    import signal
    import subprocess
    if k.proc.poll() is None:
        try:
            os.kill(k.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            k.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            k.kill()
    k.kill()
    if k.proc.stderr:
        try:
            k.proc.stderr.close()
        except OSError:
            pass
    return k.proc.returncode


class DaemonPool:
    """Named daemons started on first use, all stopped by stop_all()."""

    def __init__(self, tmp_path_factory):
        self.factory = tmp_path_factory
        self.daemons = {}

    def get(self, name, make_policy, env=None):
        """make_policy(workdir) -> policy text. Returns (Kumod, workdir)."""
        if name not in self.daemons:
            d = self.factory.mktemp(name)
            k = spawn_kumod(d, make_policy(d), env=env)
            self.daemons[name] = (k, d)
        k, d = self.daemons[name]
        assert k.running(), "kumod %s died; stderr:\n%s" % (name, k.stderr())
        return k, d

    def stop_all(self):
        for k, _ in self.daemons.values():
            stop_kumod(k)
        self.daemons.clear()
