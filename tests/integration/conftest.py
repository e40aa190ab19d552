# SPDX-License-Identifier: Apache-2.0
"""pytest harness: start the real kumod with an inline policy and stop it.

    def test_x(kumod):
        k = kumod("kumo.on('init', function() kumo.start_esmtp_listener{listen='127.0.0.1:0'} end)")
        smtplib.SMTP('127.0.0.1', k.smtp_port) ...

Policies bind port 0; the daemon prints `<proto> listener on <addr>` with the
real port and the harness reads it from there. Everything a fixture starts is
stopped at teardown, by pid.
"""

import contextlib
import os
import pty
import re
import select
import shutil
import signal
import smtplib
import socket
import subprocess
import threading
import time

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
KUMOD_BIN = os.environ.get("KUMOD_BIN") or os.path.join(REPO, "build", "kumod")

LISTENER_RE = re.compile(r"\b(\w+) listener on (\[[0-9A-Fa-f:.%\w]+\]|[^\s:\"]+):(\d+)")

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (bpftrace/USDT attach or --user)")


def lttng_unavailable():
    """Why LTTng cannot run here, or None."""
    for tool in ("lttng", "lttng-sessiond", "babeltrace2"):
        if not shutil.which(tool):
            return f"{tool} not installed (Debian packages lttng-tools, babeltrace2)"
    if not os.path.isdir("/dev/shm") or not os.access("/dev/shm", os.W_OK):
        return "/dev/shm is not writable: LTTng-UST ring buffers live there"
    return None


needs_lttng = pytest.mark.skipif(lttng_unavailable() is not None,
                                 reason=f"LTTng cannot run: {lttng_unavailable()}")


def require_kumod():
    if not os.access(KUMOD_BIN, os.X_OK):
        pytest.fail(f"{KUMOD_BIN} is missing: run `make` first (or set KUMOD_BIN)")


# Under pytest-xdist (`make test` runs the ASan pass with two workers) each
# worker only takes ports of its own class (port / 2 modulo the workers: the
# kernel hands out odd ports for bind(0)), so two workers can never
# pick the same port between free_port() and the bind that follows.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
_WORKER_NO = int(_WORKER[2:]) if _WORKER.startswith("gw") and _WORKER[2:].isdigit() else 0


def free_port(host="127.0.0.1", kind=socket.SOCK_STREAM):
    """A port that was free a moment ago (prefer binding port 0 in policies)."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if _WORKERS <= 1 or (port >> 1) % _WORKERS == _WORKER_NO:
            return port
    raise RuntimeError("free_port: no free port of this worker's class in 1000 tries")


def kumod_env(env=None):
    e = dict(os.environ)
    e["NO_COLOR"] = "1"
    e.pop("KUMOD_LOG", None)
    # Never wait for an LTTng session daemon at start-up (a test that records
    # the first events overrides this).
    e["LTTNG_UST_REGISTER_TIMEOUT"] = "0"
    if env:
        for k, v in env.items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
    return e


def run_on_pty(cmd, env=None, timeout=30):
    """Runs cmd with stdout and stderr on a pseudo-terminal (what a user's terminal
    shows); returns (exit status, bytes written). Bounded: fails after `timeout`
    seconds without output; the pty reports EIO once cmd exits."""
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(cmd, env=env, stdout=slave, stderr=slave,
                             stdin=subprocess.DEVNULL)
        os.close(slave)
        out = b""
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                p.kill()
                pytest.fail(f"{cmd[0]} wrote nothing on the pty for {timeout}s")
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        return p.wait(timeout=timeout), out
    finally:
        os.close(master)


def run_kumod(args, env=None, timeout=10, cwd=None):
    """One-shot invocation (--help, --validate, bad input); CompletedProcess."""
    require_kumod()
    return subprocess.run([KUMOD_BIN, *args], env=kumod_env(env), cwd=cwd, timeout=timeout,
                          capture_output=True, text=True, errors="replace")


@contextlib.contextmanager
def tmpfs_spool(var, size):
    """A tmpfs of `size` (mount's size=, e.g. "300k") mounted at var/spool, unmounted when
    the block ends; skips the test where it cannot be mounted (needs root)."""
    spool = var / "spool"
    spool.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", str(spool)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("cannot mount tmpfs here: " + r.stderr.strip())
    try:
        yield spool
    finally:
        subprocess.run(["umount", "-l", str(spool)])


def send_until_full(smtp_port, count, message, what, timeout=10):
    """Sends message(i) -> (tag, text) to r<i>@example.com, i < count, on one connection
    until the full spool refuses one: asserts the refusal is 452 4.3.1 (`what` describes the
    load, for the message when none was refused) and that something fitted first. Returns
    the tags of the acknowledged messages."""
    acked, full = [], None
    with smtplib.SMTP("127.0.0.1", port=smtp_port, timeout=timeout) as c:
        c.ehlo("full.test")
        for i in range(count):
            tag, text = message(i)
            try:
                c.sendmail("s@example.com", ["r%d@example.com" % i], text)
                acked.append(tag)
            except smtplib.SMTPDataError as e:
                full = e
                break
    assert full is not None, "%s: never refused" % what
    assert full.smtp_code == 452, full
    assert b"4.3.1" in full.smtp_error
    assert acked, "nothing fitted at all"
    return acked


def parse_listeners(lines):
    out = {}
    for line in lines:
        m = LISTENER_RE.search(line)
        if m:
            host = m.group(2)
            if host.startswith("["):
                host = host[1:-1]
            out.setdefault(m.group(1), []).append((host, int(m.group(3))))
    return out


class Kumod:
    """A running kumod: .proc .pid .listeners .smtp_port .stderr() .wait_for() .stop()."""

    def __init__(self, proc, policy_path):
        self.proc = proc
        self.pid = proc.pid
        self.policy_path = policy_path
        self._lines = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self._lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def lines(self):
        with self._cond:
            return list(self._lines)

    def stderr(self):
        return "\n".join(self.lines())

    def wait_for(self, substring, timeout=10, start=0):
        """Waits until a stderr line (from index `start`) contains substring;
        returns that line. Fails with the collected stderr otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self._lines[start:]:
                    if substring in line:
                        return line
                if self._eof:
                    self.proc.wait()
                    pytest.fail(f"kumod exited (status {self.proc.returncode}) before "
                                f"{substring!r}; stderr:\n{self.stderr_unlocked()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"no {substring!r} from kumod within {timeout}s; "
                                f"stderr:\n{self.stderr_unlocked()}")
                self._cond.wait(min(left, 0.2))

    def stderr_unlocked(self):
        return "\n".join(self._lines)

    @property
    def listeners(self):
        """proto -> [(host, port)] from the `<proto> listener on <addr>` lines so far."""
        return parse_listeners(self.lines())

    @property
    def smtp_port(self):
        smtp = self.listeners.get("smtp")
        if not smtp:
            pytest.fail(f"kumod printed no 'smtp listener on' line; stderr:\n{self.stderr()}")
        return smtp[0][1]

    def running(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Sends sig and waits; returns the exit status (negative = signal).
        On timeout kills with SIGKILL and fails the test."""
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"kumod did not exit within {timeout}s of {signal.Signals(sig).name}; "
                            f"stderr:\n{self.stderr()}")
        self._reader.join(5)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        self._reader.join(5)


@pytest.fixture
def kumod(tmp_path):
    """Factory: start(policy_text, env=None, args=None, wait=..., timeout=15) -> Kumod."""
    require_kumod()
    started = []

    def start(policy_text, env=None, args=None, wait="initialization complete", timeout=15,
              policy_name="policy.lua", preexec=None):
        policy = tmp_path / policy_name
        policy.write_text(policy_text)
        proc = subprocess.Popen([KUMOD_BIN, "--policy", str(policy), *(args or [])],
                                env=kumod_env(env), cwd=str(tmp_path), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                preexec_fn=preexec)
        k = Kumod(proc, str(policy))
        started.append(k)
        if wait:
            k.wait_for(wait, timeout)
        return k

    yield start
    for k in started:
        if k.proc.poll() is None:
            try:
                k.stop(timeout=10)
            except pytest.fail.Exception:
                pass  # already killed; the test itself reports
        k.kill()
        if k.proc.stderr:
            k.proc.stderr.close()
