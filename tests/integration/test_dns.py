# SPDX-License-Identifier: Apache-2.0
"""The resolver (kumod/dns) through kumo-dig, against a DNS server this test runs on
loopback (UDP and TCP on one free port, Python dnslib): MX rules, null MX, implicit MX,
NXDOMAIN/SERVFAIL/timeout, AAAA, CNAME, TCP fallback, TTL cache and coalescing. Query
counts are taken server-side, so "answered from the cache" means "never reached the
server"."""

import json
import os
import socket
import struct
import subprocess
import threading
import time

import pytest
from dnslib import AAAA, CNAME, MX, QTYPE, RCODE, RR, SOA, A, DNSRecord

from conftest import REPO, free_port

TOOLS_BIN = os.environ.get("TOOLS_BIN") or os.path.join(REPO, "build")
KUMO_DIG = os.path.join(TOOLS_BIN, "kumo-dig")

NEG_TTL = 45  # SOA MINIMUM of the test zone


def soa():
    return RR("test", QTYPE.SOA, ttl=3600,
              rdata=SOA("ns.test", "hostmaster.test", (1, 3600, 600, 86400, NEG_TTL)))


def mx(name, pref, host, ttl=300):
    return RR(name, QTYPE.MX, rdata=MX(host, pref), ttl=ttl)


def a(name, ip, ttl=600):
    return RR(name, QTYPE.A, rdata=A(ip), ttl=ttl)


def aaaa(name, ip, ttl=600):
    return RR(name, QTYPE.AAAA, rdata=AAAA(ip), ttl=ttl)


GMAIL = ["gmail-smtp-in.l.google.test"] + ["alt%d.gmail-smtp-in.l.google.test" % i
                                           for i in range(1, 5)]

# name -> list of records (every type); names not here are NXDOMAIN.
ZONE = {
    "two.test": [mx("two.test", 20, "mx2.two.test"), mx("two.test", 10, "mx1.two.test")],
    "mx1.two.test": [a("mx1.two.test", "127.0.0.11"), aaaa("mx1.two.test", "::1")],
    "mx2.two.test": [a("mx2.two.test", "127.0.0.12", ttl=120)],
    "nullmx.test": [mx("nullmx.test", 0, ".")],
    "implicit.test": [a("implicit.test", "127.0.0.5", ttl=200)],
    "v6only.test": [aaaa("v6only.test", "2001:db8::6", ttl=100)],
    "partial.test": [mx("partial.test", 10, "gone.partial.test"),
                     mx("partial.test", 20, "ok.partial.test")],
    "ok.partial.test": [a("ok.partial.test", "127.0.0.20")],
    "allgone.test": [mx("allgone.test", 10, "gone1.allgone.test"),
                     mx("allgone.test", 20, "gone2.allgone.test")],
    "mixfail.test": [mx("mixfail.test", 10, "gone.mixfail.test"),
                     mx("mixfail.test", 20, "servfail.test")],
    "ties.test": [mx("ties.test", 10, h + ".ties.test") for h in "abc"]
    + [mx("ties.test", 20, "z.ties.test")],
    "a.ties.test": [a("a.ties.test", "127.0.1.1")],
    "b.ties.test": [a("b.ties.test", "127.0.1.2")],
    "c.ties.test": [a("c.ties.test", "127.0.1.3")],
    "z.ties.test": [a("z.ties.test", "127.0.1.26")],
    "alias.test": [RR("alias.test", QTYPE.CNAME, rdata=CNAME("target.alias.test"), ttl=50)],
    "target.alias.test": [a("target.alias.test", "127.0.0.30")],
    "ttl0.test": [mx("ttl0.test", 10, "mx.ttl0.test", ttl=0)],
    "mx.ttl0.test": [a("mx.ttl0.test", "127.0.0.40", ttl=0)],
    "big.test": [a("big.test", "127.0.2.%d" % i) for i in range(1, 41)],
    "gmail.test": [mx("gmail.test", 5 + 5 * i, h) for i, h in enumerate(GMAIL)],
    "mxtimeout.test": [mx("mxtimeout.test", 10, "blackhole.test")],
    "upper.test": [mx("upper.test", 10, "MX.Upper.TEST")],
    "e2e.test": [mx("e2e.test", 10, "mx.e2e.test")],
    "mx.e2e.test": [a("mx.e2e.test", "127.0.0.1")],
    "mx.upper.test": [a("mx.upper.test", "127.0.0.50")],
}
for h in GMAIL:
    ZONE[h] = [a(h, "127.0.3.%d" % (len(h) % 250))]
SERVFAIL = {"servfail.test"}
DROP = {"blackhole.test"}


class DnsServer:
    """Authoritative-ish server for ZONE on 127.0.0.1, UDP and TCP on one port. Counts
    every query it receives as (name, type, proto)."""

    def __init__(self):
        self.queries = []
        self.lock = threading.Lock()
        self.stopping = False
        for _ in range(50):
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.bind(("127.0.0.1", 0))
            self.port = u.getsockname()[1]
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                t.bind(("127.0.0.1", self.port))
            except OSError:
                u.close()
                t.close()
                continue
            t.listen(16)
            self.udp, self.tcp = u, t
            break
        else:
            raise RuntimeError("no port free for both UDP and TCP")
        self.udp.settimeout(0.2)
        self.tcp.settimeout(0.2)
        self.threads = [threading.Thread(target=self._udp_loop, daemon=True),
                        threading.Thread(target=self._tcp_loop, daemon=True)]
        for th in self.threads:
            th.start()

    @property
    def server(self):
        return "127.0.0.1:%d" % self.port

    def mark(self):
        with self.lock:
            return len(self.queries)

    def since(self, mark):
        with self.lock:
            return list(self.queries[mark:])

    def count(self, mark, name, qtype=None):
        return sum(1 for n, t, _ in self.since(mark) if n == name and qtype in (None, t))

    def answer(self, data, proto):
        req = DNSRecord.parse(data)
        name = str(req.q.qname).rstrip(".").lower()
        qtype = QTYPE[req.q.qtype]
        with self.lock:
            self.queries.append((name, qtype, proto))
        if name in DROP:
            return None
        reply = req.reply()
        if name in SERVFAIL:
            reply.header.rcode = RCODE.SERVFAIL
            return reply.pack()
        records = ZONE.get(name)
        if records is None:
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(soa())
            return reply.pack()
        for rr in records:
            if rr.rtype == req.q.qtype or rr.rtype == QTYPE.CNAME:
                reply.add_answer(rr)
                if rr.rtype == QTYPE.CNAME:  # the target's records too, as resolvers do
                    target = str(rr.rdata.label).rstrip(".").lower()
                    for t in ZONE.get(target, []):
                        if t.rtype == req.q.qtype:
                            reply.add_answer(t)
        if not reply.rr:
            reply.add_auth(soa())
        packed = reply.pack()
        limit = 512
        for opt in req.ar:
            if opt.rtype == QTYPE.OPT:
                limit = max(512, opt.rclass)
        if proto == "udp" and len(packed) > limit:
            short = req.reply()
            short.header.tc = 1
            return short.pack()
        return packed

    def _udp_loop(self):
        while not self.stopping:
            try:
                data, peer = self.udp.recvfrom(4096)
            except (socket.timeout, OSError):
                continue
            out = self.answer(data, "udp")
            if out is not None:
                self.udp.sendto(out, peer)

    def _tcp_conn(self, c):
        c.settimeout(5)
        try:
            while not self.stopping:
                hdr = c.recv(2)
                if len(hdr) < 2:
                    return
                (n,) = struct.unpack("!H", hdr)
                data = b""
                while len(data) < n:
                    chunk = c.recv(n - len(data))
                    if not chunk:
                        return
                    data += chunk
                out = self.answer(data, "tcp")
                if out is not None:
                    c.sendall(struct.pack("!H", len(out)) + out)
        except OSError:
            pass
        finally:
            c.close()

    def _tcp_loop(self):
        while not self.stopping:
            try:
                c, _ = self.tcp.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._tcp_conn, args=(c,), daemon=True).start()

    def stop(self):
        self.stopping = True
        for th in self.threads:
            th.join(2)
        self.udp.close()
        self.tcp.close()


@pytest.fixture(scope="module")
def dns():
    srv = DnsServer()
    yield srv
    srv.stop()


def dig(dns, *args, timeout=20, env=None, server=True, extra=()):
    """Runs kumo-dig --json; returns (exit status, [result objects], stderr)."""
    if not os.access(KUMO_DIG, os.X_OK):
        pytest.fail(f"{KUMO_DIG} is missing: run `make` first (or set TOOLS_BIN)")
    cmd = [KUMO_DIG, "--json", "--no-hosts-file", *extra]
    if server:
        cmd += ["--server", dns.server]
    e = dict(os.environ)
    e.pop("KUMOD_LOG", None)
    e.update(env or {})
    p = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout, env=e)
    results = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    return p.returncode, results, p.stderr


def test_mx_two_preferences(dns):
    m = dns.mark()
    rc, [r], err = dig(dns, "mx", "two.test")
    assert rc == 0 and err == "", err  # nothing on stderr (no "loop not closed cleanly")
    assert r["status"] == "OK" and r["error"] is None and not r["implicit"]
    assert [(h["preference"], h["name"]) for h in r["hosts"]] == [(10, "mx1.two.test"),
                                                                  (20, "mx2.two.test")]
    # AAAA first, then A
    assert r["hosts"][0]["addresses"] == ["::1", "127.0.0.11"]
    assert r["hosts"][1]["addresses"] == ["127.0.0.12"]
    assert r["site_name"] == "(mx1|mx2).two.test."
    assert r["ttl"] == 120  # the smallest: mx2's A record
    assert dns.count(m, "two.test", "MX") == 1
    assert dns.count(m, "mx1.two.test") == 2  # A and AAAA, in parallel
    assert dns.count(m, "mx2.two.test") == 2


def test_null_mx_is_permanent(dns):
    rc, [r], err = dig(dns, "mx", "nullmx.test")
    assert rc == 1, err
    assert r["status"] == "NULL_MX" and "null MX" in r["error"] and r["hosts"] == []


def test_no_mx_uses_implicit_mx(dns):
    rc, [r], err = dig(dns, "mx", "implicit.test")
    assert rc == 0, err
    assert r["implicit"] is True
    assert r["hosts"] == [{"name": "implicit.test", "preference": 0,
                           "addresses": ["127.0.0.5"]}]
    assert r["site_name"] == "implicit.test."
    assert r["ttl"] <= NEG_TTL  # the "no MX" answer is negative caching


def test_nxdomain_is_permanent_and_cached(dns):
    m = dns.mark()
    rc, res, err = dig(dns, "mx", "nx.test", "mx", "nx.test")
    assert rc == 1, err
    assert [r["status"] for r in res] == ["NO_HOST", "NO_HOST"]
    assert "NXDOMAIN" in res[0]["error"]
    assert res[0]["ttl"] == NEG_TTL and res[1]["ttl"] <= NEG_TTL
    assert dns.count(m, "nx.test", "MX") == 1
    assert res[1]["queries_sent"] == 0 and res[1]["cache_hits"] == 1


def test_servfail_is_temporary_and_not_cached(dns):
    m = dns.mark()
    rc, res, err = dig(dns, "--tries", "1", "mx", "servfail.test", "mx", "servfail.test")
    assert rc == 2, err
    assert [r["status"] for r in res] == ["TEMPFAIL", "TEMPFAIL"]
    assert "MX lookup for servfail.test failed" in res[0]["error"]
    assert dns.count(m, "servfail.test", "MX") == 2


def test_timeout_is_temporary_and_bounded(dns):
    m = dns.mark()
    t0 = time.monotonic()
    rc, [r], err = dig(dns, "--timeout-ms", "200", "--tries", "2", "mx", "blackhole.test")
    elapsed = time.monotonic() - t0
    assert rc == 2, err
    assert r["status"] == "TEMPFAIL" and "imeout" in r["error"]
    assert elapsed < 5
    assert dns.count(m, "blackhole.test", "MX") == 2  # one per try


def test_mx_host_timeout_is_temporary(dns):
    rc, [r], err = dig(dns, "--timeout-ms", "200", "--tries", "1", "mx", "mxtimeout.test")
    assert rc == 2, err
    assert r["status"] == "TEMPFAIL" and "no MX host of mxtimeout.test" in r["error"]


def test_host_without_address_is_skipped(dns):
    rc, [r], err = dig(dns, "mx", "partial.test")
    assert rc == 0, err
    assert [h["name"] for h in r["hosts"]] == ["ok.partial.test"]
    assert r["site_name"] == "(gone|ok).partial.test."  # every MX name counts


def test_all_hosts_nxdomain_is_permanent(dns):
    rc, [r], err = dig(dns, "mx", "allgone.test")
    assert rc == 1, err
    assert r["status"] == "NO_HOST" and "no MX host of allgone.test" in r["error"]


def test_hosts_failing_mixed_is_temporary(dns):
    rc, [r], err = dig(dns, "--tries", "1", "mx", "mixfail.test")
    assert rc == 2, err
    assert r["status"] == "TEMPFAIL"


def test_aaaa_only_host(dns):
    rc, [r], err = dig(dns, "host", "v6only.test")
    assert rc == 0, err
    assert r["hosts"] == [{"name": "v6only.test", "preference": 0,
                           "addresses": ["2001:db8::6"]}]
    assert r["ttl"] == 100


def test_cname_is_followed(dns):
    rc, [r], err = dig(dns, "host", "alias.test")
    assert rc == 0, err
    assert r["hosts"][0]["addresses"] == ["127.0.0.30"]
    assert r["ttl"] == 50  # the CNAME's TTL is the smallest


def test_truncated_udp_answer_retried_over_tcp(dns):
    m = dns.mark()
    rc, [r], err = dig(dns, "host", "big.test")
    assert rc == 0, err
    assert len(r["hosts"][0]["addresses"]) == 16  # DNS_MAX_ADDRS
    assert ("big.test", "A", "tcp") in dns.since(m)


def test_mx_cache_and_shared_host_cache(dns):
    m = dns.mark()
    rc, res, err = dig(dns, "mx", "two.test", "mx", "two.test", "host", "mx1.two.test",
                       "mx", "TWO.test.")
    assert rc == 0, err
    assert [r["queries_sent"] for r in res] == [5, 0, 0, 0]
    assert [r["cache_hits"] for r in res] == [0, 1, 1, 1]
    assert dns.count(m, "two.test", "MX") == 1
    assert dns.count(m, "mx1.two.test", "A") == 1
    assert res[1]["ttl"] <= res[0]["ttl"]
    assert res[3]["hosts"] == res[0]["hosts"]


def test_identical_lookups_in_flight_are_joined(dns):
    m = dns.mark()
    rc, res, err = dig(dns, "--parallel", "--stats", "mx", "gmail.test", "mx", "gmail.test",
                       "mx", "gmail.test")
    assert rc == 0, err
    stats = res.pop()["stats"]
    assert len(res) == 3 and stats["coalesced"] == 2
    assert dns.count(m, "gmail.test", "MX") == 1


def test_gmail_style_site_name(dns):
    rc, [r], err = dig(dns, "mx", "gmail.test")
    assert rc == 0, err
    assert r["site_name"] == "(alt1|alt2|alt3|alt4)?.gmail-smtp-in.l.google.test."
    assert [h["preference"] for h in r["hosts"]] == [5, 10, 15, 20, 25]


def test_names_are_case_insensitive(dns):
    rc, [r], err = dig(dns, "mx", "UPPER.test")
    assert rc == 0, err
    assert r["hosts"][0]["name"] == "mx.upper.test"
    assert r["site_name"] == "mx.upper.test."


def test_ttl_zero_is_not_cached(dns):
    m = dns.mark()
    rc, res, err = dig(dns, "mx", "ttl0.test", "mx", "ttl0.test")
    assert rc == 0, err
    assert dns.count(m, "ttl0.test", "MX") == 2
    assert dns.count(m, "mx.ttl0.test", "A") == 2


def test_equal_preferences_are_shuffled(dns):
    m = dns.mark()
    rc, res, err = dig(dns, *(["mx", "ties.test"] * 30))
    assert rc == 0, err
    orders = set()
    for r in res:
        names = [h["name"] for h in r["hosts"]]
        assert sorted(names[:3]) == ["a.ties.test", "b.ties.test", "c.ties.test"]
        assert names[3] == "z.ties.test"
        orders.add(tuple(names[:3]))
    assert len(orders) > 1
    assert dns.count(m, "ties.test", "MX") == 1


def test_literals_need_no_dns(dns):
    m = dns.mark()
    rc, res, err = dig(dns, "mx", "[127.0.0.1]", "mx", "[IPv6:::1]", "host", "192.0.2.1",
                       "host", "2001:db8::1")
    assert rc == 0, err
    assert [r["hosts"][0]["addresses"] for r in res] == [["127.0.0.1"], ["::1"],
                                                         ["192.0.2.1"], ["2001:db8::1"]]
    assert res[0]["site_name"] == "[127.0.0.1]"
    assert dns.since(m) == []


def test_bad_names_are_permanent_without_dns(dns):
    m = dns.mark()
    rc, res, err = dig(dns, "mx", "[300.1.1.1]", "mx", "a..b", "host", "bad name")
    assert rc == 1, err
    assert [r["status"] for r in res] == ["NO_HOST"] * 3
    assert dns.since(m) == []


def test_exit_status_is_the_worst_outcome(dns):
    rc, _, _ = dig(dns, "mx", "two.test", "mx", "nx.test")
    assert rc == 1
    rc, _, _ = dig(dns, "--tries", "1", "mx", "nx.test", "mx", "servfail.test",
                   "mx", "two.test")
    assert rc == 2


def test_switching_servers_clears_the_cache(dns):
    m = dns.mark()
    rc, res, err = dig(dns, "mx", "two.test", "servers", dns.server, "mx", "two.test",
                       "servers", "bogus", "mx", "two.test")
    assert rc == 2, err  # the bogus list
    assert [r["status"] for r in res] == ["OK", "OK", "OK", "ERROR", "OK"]
    assert "bad name server 'bogus'" in res[3]["error"]
    assert dns.count(m, "two.test", "MX") == 2  # the bad list kept servers and cache
    assert res[4]["cache_hits"] == 1


def test_lookups_in_flight_move_to_new_servers(dns):
    """Started against a dead server, then kumo.dns.configure_resolver-style switch: the
    queries in flight are re-sent to the new server and succeed."""
    dead = "127.0.0.1:%d" % free_port(kind=socket.SOCK_DGRAM)
    m = dns.mark()
    rc, res, err = dig(dns, "--parallel", "mx", "two.test", "host", "mx2.two.test",
                       "servers", dns.server, server=False, extra=["--server", dead])
    assert rc == 0, err
    assert sorted(r["status"] for r in res) == ["OK", "OK", "OK"]
    assert dns.count(m, "two.test", "MX") == 1


def test_trace_events(dns):
    rc, _, err = dig(dns, "mx", "two.test", "mx", "two.test",
                     env={"KUMOD_LOG": "kumod::dns=trace"})
    assert rc == 0, err
    assert 'query "two.test" MX' in err
    assert 'answer "two.test" MX NOERROR count=2 ttl=300' in err
    assert 'resolved mx "two.test" OK hosts=2 ttl=120 "(mx1|mx2).two.test."' in err
    assert 'cache hit mx "two.test"' in err


def test_text_output(dns):
    p = subprocess.run([KUMO_DIG, "--server", dns.server, "mx", "two.test"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [
        "mx two.test: OK",
        "  site_name: (mx1|mx2).two.test.",
        "  implicit: no",
        "  ttl: 120",
        "  host: 10 mx1.two.test ::1 127.0.0.11",
        "  host: 20 mx2.two.test 127.0.0.12",
    ]


@pytest.mark.parametrize("args", [[], ["mx"], ["txt", "x"], ["--bogus", "mx", "x"],
                                  ["servers", "x", "mx"],
                                  ["--server", "not-an-ip", "mx", "x"],
                                  ["--server", "127.0.0.1:70000", "mx", "x"],
                                  ["--tries", "0", "mx", "x"]])
def test_usage_errors(args):
    p = subprocess.run([KUMO_DIG, *args], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2
    assert p.stderr and not p.stdout


def test_help():
    p = subprocess.run([KUMO_DIG, "--help"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0 and "Usage: kumo-dig" in p.stdout and "--timeout-ms" in p.stdout


# --- kumod: MX routing through the resolver --------------------------------------------

RELAY_POLICY = """
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.dns.configure_resolver{{ name_servers = {{ '{dns}' }} }}
  kumo.define_spool{{ name = 'data', path = '{var}/spool/data' }}
  kumo.define_spool{{ name = 'meta', path = '{var}/spool/meta' }}
  kumo.configure_local_logs{{ log_dir = '{var}/logs' }}
  kumo.start_esmtp_listener{{ listen = '127.0.0.1:0', hostname = 'relay.test',
                              relay_hosts = {{ '127.0.0.1' }} }}
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config{{ retry_interval = '1s', max_retry_interval = '1s' }}
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path{{ prohibited_hosts = {{}}, enable_tls = 'Disabled',
                                 smtp_port = {sink_port}, connect_timeout = '2s' }}
end)
"""


def test_kumod_routes_by_mx(kumod, dns, tmp_path):
    """kumod resolves MX through kumo.dns.configure_resolver's server: a domain whose MX
    is the sink is delivered to site mx.e2e.test.; null MX and NXDOMAIN bounce."""
    from test_relay import captured, records, send, sink_start, wait_until

    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    var = tmp_path / "var"
    relay = kumod(RELAY_POLICY.format(dns=dns.server, var=var, sink_port=sink.smtp_port),
                  policy_name="relay.lua",
                  env={"KUMOD_LOG": "kumod=info,kumod::dns=debug,lua=info,"
                                     "kumo_server_common=info"})
    m = dns.mark()
    for rcpt in ("user@e2e.test", "user@nullmx.test", "user@nx.test"):
        _, refused = send(relay.smtp_port, [rcpt], "hello\r\n")
        assert refused == {}
    assert wait_until(lambda: len(captured(capture)) >= 1), relay.stderr()
    assert dns.count(m, "e2e.test", "MX") >= 1
    assert dns.count(m, "mx.e2e.test", "A") >= 1

    def outcomes():
        recs = [r for r in records(var / "logs") if r["type"] in ("Delivery", "Bounce")]
        return recs if len(recs) >= 3 else None

    recs = wait_until(outcomes, timeout=20) or []
    assert relay.stop() == 0
    by_rcpt = {r["recipient"]: r for r in records(var / "logs")
               if r["type"] in ("Delivery", "Bounce", "TransientFailure")}
    assert len(recs) >= 3, by_rcpt
    d = by_rcpt["user@e2e.test"]
    assert d["type"] == "Delivery"
    # kumo-compat: site is the ready queue name "unspecified->mx.e2e.test.@smtp"
    assert "mx.e2e.test." in d["site"]
    assert by_rcpt["user@nullmx.test"]["type"] == "Bounce"
    assert "null MX" in json.dumps(by_rcpt["user@nullmx.test"]["response"])
    assert by_rcpt["user@nx.test"]["type"] == "Bounce"
    assert "resolved mx" in relay.stderr()
