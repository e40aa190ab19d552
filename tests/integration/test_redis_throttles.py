# SPDX-License-Identifier: Apache-2.0
"""kumo.configure_redis_throttles: several kumod nodes share rate throttles
and connection limits through one redis-server (Debian's, started here on a
free loopback port without persistence, stopped by pid). The nodes relay to
one receiving server written here that records when each message arrived
and how many connections were open at once; the assertions use what it
measured and what Redis holds (KumoMTA's key names)."""

import os
import shutil
import signal
import smtplib
import socket
import socketserver
import subprocess
import threading
import time

import pytest

from conftest import free_port
from test_relay import records, wait_until

REDIS = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server not installed")


class Redis:
    def __init__(self, tmp_path):
        self.port = free_port()
        self.dir = tmp_path / "redis"
        self.dir.mkdir(exist_ok=True)
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_until(self.ping, timeout=10), "redis-server did not answer"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)

    def cmd(self, *args):
        """One command over RESP; returns the decoded reply (ints, strs, lists)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            out = b"*%d\r\n" % len(args)
            for a in args:
                a = str(a).encode()
                out += b"$%d\r\n%s\r\n" % (len(a), a)
            s.sendall(out)
            f = s.makefile("rb")
            return self._read(f)

    def _read(self, f):
        line = f.readline().rstrip(b"\r\n")
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = f.read(n + 2)[:-2]
            return data.decode()
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read(f) for _ in range(n)]
        raise RuntimeError("bad reply %r" % line)

    def ping(self):
        try:
            return self.cmd("PING") == "PONG"
        except OSError:
            return False


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path)
    r.start()
    yield r
    r.stop()


class Receiver(socketserver.ThreadingTCPServer):
    """A minimal SMTP server: records (time, connection id) per message and
    the highest number of connections open at once."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, delay=0.0):
        self.lock = threading.Lock()
        self.arrivals = []
        self.open = 0
        self.max_open = 0
        self.delay = delay
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self):
        return self.server_address[1]

    def count(self):
        with self.lock:
            return len(self.arrivals)

    def ids(self):
        with self.lock:
            return [a[2] for a in self.arrivals]


class ReceiverHandler(socketserver.StreamRequestHandler):
    def handle(self):
        srv = self.server
        with srv.lock:
            srv.open += 1
            srv.max_open = max(srv.max_open, srv.open)
        self.counted = True
        try:
            self.dialogue(srv)
        except OSError:
            pass
        finally:
            self.uncount()

    def uncount(self):
        # at QUIT, before its reply: the client cannot have seen the 221
        # (and opened another connection) before this
        if self.counted:
            self.counted = False
            with self.server.lock:
                self.server.open -= 1

    def dialogue(self, srv):
        w = self.wfile
        w.write(b"220 receiver.test ESMTP\r\n")
        while True:
            line = self.rfile.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"EHLO" or verb == b"HELO":
                w.write(b"250 receiver.test\r\n")
            elif verb == b"DATA":
                w.write(b"354 go\r\n")
                msgid = None
                while True:
                    d = self.rfile.readline()
                    if not d or d == b".\r\n":
                        break
                    if d.lower().startswith(b"subject: "):
                        msgid = d[9:].strip().decode()
                if srv.delay:
                    time.sleep(srv.delay)
                with srv.lock:
                    srv.arrivals.append((time.monotonic(), id(self), msgid))
                w.write(b"250 ok\r\n")
            elif verb == b"QUIT":
                self.uncount()
                w.write(b"221 bye\r\n")
                return
            else:
                w.write(b"250 ok\r\n")


NODE_POLICY = """
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool{ name = 'data', path = %(var)r .. '/spool/data' }
  kumo.define_spool{ name = 'meta', path = %(var)r .. '/spool/meta' }
  kumo.configure_local_logs{ log_dir = %(var)r .. '/logs' }
  kumo.start_esmtp_listener{ listen = '127.0.0.1:0', hostname = %(name)r,
                             relay_hosts = { '127.0.0.1' } }
  %(redis)s
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config{
    retry_interval = '1s', max_retry_interval = '1s',
    protocol = { smtp = { mx_list = { %(mx)r } } },
  }
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path{ prohibited_hosts = {}, enable_tls = 'Disabled',
    connect_timeout = '500ms', banner_timeout = '500ms', ehlo_timeout = '500ms',
    auth_timeout = '500ms', mail_from_timeout = '500ms', rcpt_to_timeout = '500ms',
    data_timeout = '500ms', data_dot_timeout = '1s', starttls_timeout = '500ms',
    idle_timeout = '500ms', %(path)s }
end)
"""

# The lease lives for the sum of the client timeouts above: 5.5 s.
LEASE_S = 5.5


def node_start(kumod, tmp_path, name, rx, redis, path):
    var = tmp_path / name
    cfg = ("kumo.configure_redis_throttles{ node = 'redis://127.0.0.1:%d/' }" % redis.port
           if redis else "")
    text = NODE_POLICY % {"var": str(var), "name": name + ".test",
                          "mx": "127.0.0.1:%d" % rx.port, "path": path, "redis": cfg}
    k = kumod(text, policy_name=name + ".lua")
    k.var = var
    return k


def inject(port, tag, n):
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
        s.ehlo("client.test")
        for i in range(n):
            s.sendmail("sender@example.com", ["r@example.com"],
                       "Subject: %s-%d\r\n\r\nbody\r\n" % (tag, i))


def inject_until_killed(port, tag, n):
    try:
        inject(port, tag, n)
    except (OSError, smtplib.SMTPException):
        pass  # its node was killed


def of_type(node, t):
    return [r for r in records(node.var / "logs") if r.get("type") == t]


def test_configure_refuses_unsupported_keys(kumod, tmp_path, redis):
    for params, msg in [
        ("node = 'redis://127.0.0.1:%d/', colour = 1" % redis.port,
         "unknown parameter 'colour'"),
        ("node = { 'redis://127.0.0.1:1/', 'redis://127.0.0.1:2/' }",
         "a list of 2 nodes is a Redis cluster, which kumod does not implement"),
        ("node = 'redis://127.0.0.1:%d/', cluster = true" % redis.port,
         "a Redis cluster is not implemented in kumod"),
        ("node = 'redis://127.0.0.1:%d/', password = 'x'" % redis.port,
         "password applies to a Redis cluster only"),
        ("node = 'http://127.0.0.1/'", "invalid node URL 'http://127.0.0.1/'"),
        ("node = 'redis://127.0.0.1:%d/'" % free_port(), "cannot connect to redis://127.0.0.1:"),
    ]:
        k = kumod("kumo.on('init', function() kumo.configure_redis_throttles{ %s } end)" % params,
                  wait=None)
        k.proc.wait(15)
        assert k.stop() != 0  # exited; stop() also reads its stderr to the end
        assert msg in k.stderr(), (params, k.stderr())


def rate_run(kumod, tmp_path, redis, window):
    """Two nodes, max_message_rate = '50/s' each, 250 messages each: the
    receiver's rate while both nodes had mail (at least `window` seconds of
    it), and the receiver."""
    rx = Receiver()
    nodes = [node_start(kumod, tmp_path, "n%d" % i, rx, redis,
                        "max_message_rate = '50/s', connection_limit = 3") for i in range(2)]
    threads = [threading.Thread(target=inject, args=(n.smtp_port, "m%d" % i, 250))
               for i, n in enumerate(nodes)]
    for t in threads:
        t.start()
    keys = None
    if redis:  # mid-run (a cell expires once it is empty again)
        assert wait_until(lambda: rx.count() >= 100, timeout=20), rx.count()
        keys = redis.cmd("KEYS", "kumomta.max_message_rate.*")
    for t in threads:
        t.join(60)
    assert wait_until(lambda: rx.count() >= 500, timeout=25), rx.count()
    times = sorted(a[0] for a in rx.arrivals)
    # the steady part: from 1 s after the first arrival (past the first
    # burst) until the first node has sent its last message, i.e. while both
    # nodes had mail to send (a shared limiter need not split the tokens
    # evenly: whichever node asks first after a refusal gets them, so one
    # may finish well before the other)
    start = times[0] + 1.0
    last = {t: max(a[0] for a in rx.arrivals if a[2].startswith(t + "-")) for t in ("m0", "m1")}
    end = min(last.values())
    assert end - start >= window, ({t: round(v - times[0], 2) for t, v in last.items()}, window)
    rate = len([t for t in times if start <= t < end]) / (end - start)
    print("rate over %.1f s: %.1f/s; all 500 in %.1f s" % (end - start, rate,
                                                          times[-1] - times[0]))
    assert len(set(rx.ids())) == 500
    for n in nodes:
        assert n.stop() == 0
        assert of_type(n, "Bounce") == [] and of_type(n, "TransientFailure") == []
    rx.shutdown()
    return rate, rx, keys


@pytest.mark.nosan
def test_message_rate_is_shared_across_nodes(kumod, tmp_path, redis):
    rate, rx, keys = rate_run(kumod, tmp_path, redis, 2.5)
    # shared: 50/s (GCRA in whole seconds of Redis's clock: a window may hold
    # one second's grant more or less); separate: 100/s (next test)
    assert 37.5 <= rate <= 62.5, rate
    # KumoMTA's key: kumomta.max_message_rate.<ready queue>:<limit>:<burst>:<period>
    assert keys == ["kumomta.max_message_rate.unspecified->mx_list:127.0.0.1:%d@smtp:50:50:1"
                    % rx.port], keys


@pytest.mark.nosan
def test_message_rate_without_redis_is_per_node(kumod, tmp_path):
    rate, _, _ = rate_run(kumod, tmp_path, None, 2.0)
    assert rate >= 80.0, rate  # each node its own 50/s


@pytest.mark.nosan
def test_connection_limit_is_shared_and_leases_expire(kumod, tmp_path, redis):
    rx = Receiver(delay=0.05)
    path = "connection_limit = 3, max_deliveries_per_connection = 5"
    a = node_start(kumod, tmp_path, "a", rx, redis, path)
    b = node_start(kumod, tmp_path, "b", rx, redis, path)
    threads = [threading.Thread(target=inject, args=(n.smtp_port, t, 60))
               for n, t in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert wait_until(lambda: rx.count() >= 120, timeout=30), rx.count()
    assert rx.max_open <= 3, rx.max_open  # 6 if each node had its own limit
    assert rx.max_open >= 2, rx.max_open
    assert len(set(rx.ids())) == 120
    key = "kumomta.connection_limit.unspecified->mx_list:127.0.0.1:%d@smtp" % rx.port
    # closed connections released their leases
    assert wait_until(lambda: redis.cmd("ZCARD", key) == 0, timeout=5), redis.cmd(
        "ZRANGE", key, 0, -1, "WITHSCORES")

    # node a holds all three leases (a slow receiver), then dies without releasing
    rx.delay = 0.3
    threading.Thread(target=inject_until_killed, args=(a.smtp_port, "a2", 30),
                     daemon=True).start()
    assert wait_until(lambda: redis.cmd("ZCARD", key) == 3, timeout=10)
    leases = redis.cmd("ZRANGE", key, 0, -1, "WITHSCORES")
    a.kill()
    killed, killed_mono = time.time(), time.monotonic()
    expiries = [float(x) for x in leases[1::2]]
    assert all(killed < e <= killed + LEASE_S + 1 for e in expiries), (killed, expiries)
    rx.delay = 0.0
    before = rx.count()
    inject(b.smtp_port, "b2", 5)
    # b waits for the dead node's leases to expire, then delivers
    assert wait_until(lambda: rx.count() >= before + 5, timeout=LEASE_S + 8), rx.count()
    first_b2 = min(t for t, _, m in rx.arrivals if m and m.startswith("b2-"))
    waited = first_b2 - killed_mono
    assert waited >= min(expiries) - killed - 1.0, (waited, min(expiries) - killed)
    assert b.stop() == 0
    rx.shutdown()


@pytest.mark.nosan
def test_redis_outage_loses_nothing(kumod, tmp_path, redis):
    rx = Receiver()
    n = node_start(kumod, tmp_path, "o", rx, redis, "max_message_rate = '50/s'")
    injected = []

    def inject_and_count():
        try:
            inject(n.smtp_port, "o", 150)
            injected.append("all 150 accepted")
        except (OSError, smtplib.SMTPException) as e:
            injected.append("inject failed: %r" % e)

    threading.Thread(target=inject_and_count, daemon=True).start()
    assert wait_until(lambda: rx.count() >= 30, timeout=15), rx.count()
    redis.stop()
    n.wait_for("is unavailable", timeout=10)
    time.sleep(2.0)  # the outage lasts a while: nothing may be lost meanwhile
    during = rx.count()
    t_restart = time.monotonic()
    redis.start()
    n.wait_for("is reachable again", timeout=10)
    # on failure: what the injector saw, kumod's log, the last records
    assert wait_until(lambda: len(set(rx.ids())) >= 150, timeout=30), (
        during, rx.count(), injected, n.stderr()[-4000:],
        [(r.get("type"), (r.get("response") or {}).get("content"))
         for r in records(n.var / "logs")][-30:])
    print("outage: %d delivered before, %d during; all 150 %.1f s after the restart"
          % (during, rx.count() - during, time.monotonic() - t_restart))
    assert sorted(set(rx.ids())) == sorted("o-%d" % i for i in range(150))
    assert n.stop() == 0
    assert of_type(n, "Bounce") == []
    # logged once for the outage, not per message
    assert n.stderr().count("is unavailable") == 1, n.stderr()[-3000:]
    deliveries = {r["id"] for r in of_type(n, "Delivery")}
    assert len(deliveries) == 150
    rx.shutdown()


@pytest.mark.nosan
def test_a_queue_whose_leases_are_lost_dispatches_again(kumod, tmp_path, redis):
    """Every dispatcher of a queue loses its lease at once (the lease set is
    deleted, as when Redis loses its data): each session ends at its next
    extension, and the queue gets a new dispatcher after the lease backoff
    instead of waiting forever with its messages (seen in CI after a Redis
    outage: nothing delivered once Redis was back)."""
    rx = Receiver()
    n = node_start(kumod, tmp_path, "l", rx, redis,
                   "max_message_rate = '2/s', connection_limit = 1")
    inject(n.smtp_port, "l", 6)
    key = "kumomta.connection_limit.unspecified->mx_list:127.0.0.1:%d@smtp" % rx.port
    assert wait_until(lambda: rx.count() >= 1, timeout=15), rx.count()
    # for 3 s every extension fails: the dispatcher must extend before its
    # next message within that time (at most 1 s apart at 2/s)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        redis.cmd("DEL", key)
        time.sleep(0.05)
    assert wait_until(lambda: len(set(rx.ids())) == 6, timeout=30), (
        rx.count(), n.stderr()[-3000:])
    assert n.stop() == 0
    assert of_type(n, "Bounce") == []


LUA_THROTTLE_POLICY = """
kumo.on('init', function()
  kumo.start_esmtp_listener{ listen = '127.0.0.1:0', relay_hosts = { '127.0.0.1' } }
  kumo.configure_redis_throttles{ node = 'redis://127.0.0.1:%d/' }
end)
kumo.on('smtp_server_message_received', function(msg)
  local r = kumo.make_throttle('lt', '3/hour'):throttle()
  if r.throttled then
    kumo.reject(451, '4.4.5 throttled limit=' .. r.limit .. ' retry=' .. r.retry_after.secs)
  end
  msg:set_meta('queue', 'null')
end)
kumo.on('smtp_server_mail_from', function(sender)
  if sender.email == 'wait@example.com' then
    -- MAIL FROM may wait: the reply follows Redis's answer
    local r = kumo.make_throttle('lt', '3/hour'):throttle()
    if r.throttled then
      kumo.reject(451, '4.4.5 mail throttled')
    end
  end
end)
kumo.on('smtp_server_ehlo', function(domain)
  if domain == 'wait.test' then
    -- EHLO may wait too: its reply follows Redis's answer
    if kumo.make_throttle('lt', '3/hour'):throttle().throttled then
      kumo.reject(451, '4.4.5 ehlo throttled')
    end
  end
end)
"""


def test_lua_throttle_is_shared_across_nodes(kumod, redis):
    a = kumod(LUA_THROTTLE_POLICY % redis.port, policy_name="a.lua")
    b = kumod(LUA_THROTTLE_POLICY % redis.port, policy_name="b.lua")

    def send(node):
        with smtplib.SMTP("127.0.0.1", node.smtp_port, timeout=10) as s:
            s.ehlo("client.test")
            s.mail("s@example.com")
            s.rcpt("r@example.com")
            return s.data("Subject: x\r\n\r\nbody\r\n")

    replies = [send(a), send(a), send(b), send(b), send(a)]
    assert [c for c, _ in replies] == [250, 250, 250, 451, 451], replies
    # KumoMTA's script path reports limit = max_burst + 1
    assert replies[3][1].decode().startswith("4.4.5 throttled limit=4 retry="), replies[3]
    assert redis.cmd("EXISTS", "lua-user-throttle-lt:3:3:3600") == 1
    # an event that may wait (MAIL FROM) sees the shared state too
    with smtplib.SMTP("127.0.0.1", b.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        assert s.mail("wait@example.com") == (451, b"4.4.5 mail throttled")
    # and so does EHLO, on the other node
    with smtplib.SMTP("127.0.0.1", a.smtp_port, timeout=10) as s:
        assert s.ehlo("wait.test") == (451, b"4.4.5 ehlo throttled")
        code, _ = s.ehlo("client.test")  # the handler passes other names: 250
        assert code == 250
    assert "cannot wait for I/O" not in a.stderr()
    assert a.stop() == 0 and b.stop() == 0


def test_shutdown_while_redis_is_down(kumod, tmp_path, redis):
    rx = Receiver()
    n = node_start(kumod, tmp_path, "d", rx, redis, "connection_limit = 2")
    inject(n.smtp_port, "d", 3)
    assert wait_until(lambda: rx.count() >= 3, timeout=10), rx.count()
    redis.stop()
    n.wait_for("is unavailable", timeout=10)
    inject(n.smtp_port, "d2", 2)  # accepted and kept: no lease can be had
    t0 = time.monotonic()
    assert n.stop() == 0
    assert time.monotonic() - t0 < 5
    # a connection whose lease was just extended may still carry a d2 message
    # before the outage is noticed; the others stay spooled, none bounces
    assert rx.count() >= 3
    assert of_type(n, "Bounce") == []
    rx.shutdown()
