# SPDX-License-Identifier: Apache-2.0
"""KumoMTA names added for issue 16 (misc batch): kumo.dns.define_resolver (named resolvers
used by the lookup functions), load_resolv_conf, set_mx_concurrency_limit,
set_mta_sts_enabled, configure_unbound_resolver's refusal; kumo.crypto.aes_encrypt_block /
aes_decrypt_block / aws_sign_v4; kumo.http.build_url. Each runs in a real kumod; results
come back as JSON written by the policy or in an SMTP reply and are compared field by
field, crypto against Python's own hmac/hashlib and the published test vectors."""

import json
import threading
import time

import pytest
from dnslib import QTYPE, RR, TXT, DNSRecord

import test_dns
from test_dns import DnsServer, a, mx
from test_policy_more import scenario

test_dns.ZONE.update({
    "named.test": [RR("named.test", QTYPE.TXT, rdata=TXT("from the zone"), ttl=300)],
    "host.named.test": [a("host.named.test", "127.0.0.77")],
    "5.0.0.127.rbl.named.test": [a("5.0.0.127.rbl.named.test", "127.0.0.2")],
    "slow1.test": [mx("slow1.test", 10, "mx.slowgone.test")],
    "slow2.test": [mx("slow2.test", 10, "mx.slowgone.test")],
})


class SlowDns(DnsServer):
    """test_dns's server, answering the names in `delay` after that many seconds (each in
    its own timer, so one slow answer holds no other); records when each query arrived."""

    def __init__(self, delay=None):
        self.delay = delay or {}
        self.arrivals = []
        super().__init__()

    def _udp_loop(self):
        while not self.stopping:
            try:
                data, peer = self.udp.recvfrom(4096)
            except (OSError, TimeoutError):
                continue
            name = str(DNSRecord.parse(data).q.qname).rstrip(".").lower()
            with self.lock:
                self.arrivals.append((name, time.monotonic()))

            def reply(data=data, peer=peer):
                out = self.answer(data, "udp")
                if out is not None and not self.stopping:
                    self.udp.sendto(out, peer)

            d = self.delay.get(name)
            if d:
                threading.Timer(d, reply).start()
            else:
                reply()

    def first_arrival(self, name):
        with self.lock:
            return next((t for n, t in self.arrivals if n == name), None)


@pytest.fixture(scope="module")
def dns():
    srv = SlowDns()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def dns2():
    srv = SlowDns()
    yield srv
    srv.stop()


# --- DNS: named resolvers, resolv.conf, MTA-STS, unbound ------------------------------

DNS_POLICY = r"""
local kumo = require 'kumo'
local out = {}
local function err(f, ...)
  local ok, e = pcall(f, ...)
  return ok and 'no error' or tostring(e)
end
kumo.on('init', function()
  kumo.dns.configure_resolver { name_servers = { os.getenv 'DNS' } }
  kumo.dns.define_resolver('rbl', { Hickory = { name_servers = { os.getenv 'DNS2' } } })
  kumo.dns.define_resolver('tbl', { Hickory = { name_servers = {
    { socket_addr = os.getenv 'DNS2', protocol = 'udp' } } } })
  out.system = err(kumo.dns.define_resolver, 'sys', 'HickorySystemConfig')
  out.unbound = err(kumo.dns.define_resolver, 'u', { Unbound = { name_servers = { '10.0.0.1' } } })
  out.test_zone = err(kumo.dns.define_resolver, 't', { Test = { zones = {} } })
  out.bad_kind = err(kumo.dns.define_resolver, 't', { Hikory = {} })
  out.two_kinds = err(kumo.dns.define_resolver, 't', { Hickory = {}, Unbound = {} })
  out.no_servers = err(kumo.dns.define_resolver, 't', { Hickory = { name_servers = {} } })
  out.hickory_opt = err(kumo.dns.define_resolver, 't', {
    Hickory = { name_servers = { '127.0.0.1:53' }, options = { cache_size = 10 } } })
  out.tcp = err(kumo.dns.define_resolver, 't', {
    Hickory = { name_servers = { { socket_addr = '127.0.0.1:53', protocol = 'tcp' } } } })
  out.bad_server = err(kumo.dns.define_resolver, 't', { Hickory = { name_servers = { 'nope' } } })
  out.bad_string = err(kumo.dns.define_resolver, 't', 'SystemConfig')
  -- resolv.conf, as KumoMTA loads it; the result is accepted by define_resolver
  out.rc = kumo.dns.load_resolv_conf(os.getenv 'RESOLV')
  out.rc_defaults = kumo.dns.load_resolv_conf(os.getenv 'RESOLV_EMPTY')
  out.rc_define = err(kumo.dns.define_resolver, 'rc', { Hickory = out.rc })
  out.rc_missing = err(kumo.dns.load_resolv_conf, os.getenv 'RESOLV' .. '.missing')
  out.rc_bad = err(kumo.dns.load_resolv_conf, os.getenv 'RESOLV_BAD')
  out.sts_off = err(kumo.dns.set_mta_sts_enabled, false)
  out.sts_on = err(kumo.dns.set_mta_sts_enabled, true)
  out.sts_type = err(kumo.dns.set_mta_sts_enabled, 'no')
  out.unbound_cfg = err(function() return kumo.dns.configure_unbound_resolver {} end)
  out.limit_ok = err(kumo.dns.set_mx_concurrency_limit, 4)
  out.limit_bad = err(kumo.dns.set_mx_concurrency_limit, -1)
  local o = assert(io.open(os.getenv 'OUT', 'w'))
  o:write(kumo.json_encode(out))
  o:close()
  kumo.start_esmtp_listener { listen = '127.0.0.1:0' }
end)
local SCEN = {
  txt_named = function() return kumo.dns.lookup_txt('named.test', 'rbl') end,
  txt_named2 = function() return kumo.dns.lookup_txt('named.test', 'tbl') end,
  txt_default = function() return kumo.dns.lookup_txt 'named.test' end,
  addr_named = function() return kumo.dns.lookup_addr('host.named.test', 'rbl') end,
  mx_named = function() return kumo.dns.lookup_mx('slow1.test', 'rbl').hosts end,
  rbl_named = function()
    local ip, why = kumo.dns.rbl_lookup('127.0.0.5', 'rbl.named.test', 'rbl')
    return { ip = ip, why = why or 'nil' }
  end,
  unknown = function() return kumo.dns.lookup_txt('named.test', 'nope') end,
}
kumo.on('smtp_server_message_received', function(msg)
  local what = msg:get_first_named_header_value 'Subject'
  local ok, res = pcall(SCEN[what], msg)
  if ok then
    kumo.reject(550, 'RESULT ' .. kumo.json_encode(res))
  end
  kumo.reject(550, 'ERROR ' .. tostring(res))
end)
"""

RESOLV_CONF = """\
# a comment
domain corp.example
nameserver 192.0.2.1
nameserver 2001:db8::53
search example.com sub.example.com ; trailing comment
options ndots:3 timeout:7 attempts:4 edns0 rotate
nameserver 198.51.100.53
"""


@pytest.fixture
def dk(kumod, dns, dns2, tmp_path):
    rc = tmp_path / "resolv.conf"
    rc.write_text(RESOLV_CONF)
    empty = tmp_path / "empty.conf"
    empty.write_text("")
    bad = tmp_path / "bad.conf"
    bad.write_text("nameserver not-an-ip\n")
    out = tmp_path / "out.json"
    k = kumod(DNS_POLICY, env={"DNS": dns.server, "DNS2": dns2.server, "OUT": str(out),
                               "RESOLV": str(rc), "RESOLV_EMPTY": str(empty),
                               "RESOLV_BAD": str(bad)})
    k.out = json.loads(out.read_text())
    return k


def test_named_resolver_queries_its_own_servers(dk, dns, dns2):
    m1, m2 = dns.mark(), dns2.mark()
    kind, res = scenario(dk.smtp_port, "txt_named")
    assert (kind, res) == ("RESULT", ["from the zone"])
    assert dns2.count(m2, "named.test", "TXT") == 1
    assert dns.count(m1, "named.test") == 0
    # the same name on the default resolver is its own cache entry, asked of its server
    assert scenario(dk.smtp_port, "txt_default") == ("RESULT", ["from the zone"])
    assert dns.count(m1, "named.test", "TXT") == 1
    # the named resolver's answer was cached (per resolver)
    assert scenario(dk.smtp_port, "txt_named") == ("RESULT", ["from the zone"])
    assert dns2.count(m2, "named.test", "TXT") == 1
    # a second resolver (socket_addr table form) on the same server has its own cache
    assert scenario(dk.smtp_port, "txt_named2") == ("RESULT", ["from the zone"])
    assert dns2.count(m2, "named.test", "TXT") == 2


def test_named_resolver_other_lookups(dk, dns, dns2):
    m1 = dns.mark()
    assert scenario(dk.smtp_port, "addr_named") == ("RESULT", ["127.0.0.77"])
    assert scenario(dk.smtp_port, "mx_named") == ("RESULT", ["mx.slowgone.test."])
    assert scenario(dk.smtp_port, "rbl_named") == ("RESULT", {"ip": "127.0.0.2",
                                                              "why": "nil"})
    assert dns.since(m1) == []
    kind, why = scenario(dk.smtp_port, "unknown")
    assert kind == "ERROR"
    assert why.endswith("kumo.dns.lookup_txt: no resolver named 'nope' (define it with "
                        "kumo.dns.define_resolver)")


def test_define_resolver_refusals(dk):
    r = dk.out
    fn = "kumo.dns.define_resolver: "
    assert r["system"] == "no error"
    assert r["unbound"].endswith(fn + "the Unbound resolver is not implemented in kumod "
                                 "(use { Hickory = { name_servers = ... } })")
    assert r["test_zone"].endswith(fn + "the Test resolver is not implemented in kumod "
                                   "(use { Hickory = { name_servers = ... } })")
    assert r["bad_kind"].endswith(fn + "unknown resolver kind 'Hikory' (Hickory, or "
                                  "'HickorySystemConfig')")
    assert r["two_kinds"].endswith(fn + "the config has exactly one kind (Hickory = {...})")
    assert r["no_servers"].endswith(fn + "name_servers is required")
    assert r["hickory_opt"].endswith(fn + "options.cache_size is a KumoMTA resolver option "
                                     "that kumod does not implement")
    assert r["tcp"].endswith(fn + "name server protocol 'tcp' is not supported (udp only)")
    assert r["bad_server"].endswith(
        fn + "bad name server 'nope' in 'nope' (ip, ip:port or [ipv6]:port)")
    assert r["bad_string"].endswith(fn + "unknown resolver config 'SystemConfig' "
                                    "(HickorySystemConfig or { Hickory = { name_servers = ... "
                                    "} })")


def test_load_resolv_conf(dk, tmp_path):
    r = dk.out
    assert r["rc"] == {
        "name_servers": ["192.0.2.1:53", "[2001:db8::53]:53", "198.51.100.53:53"],
        "domain": "corp.example",
        "search": ["example.com", "sub.example.com"],
        "options": {"ndots": 3, "timeout": "7s", "attempts": 4, "edns0": True},
    }
    d = r["rc_defaults"]  # an empty Lua table is encoded as {}
    assert d["name_servers"] in ([], {}) and d["search"] in ([], {}) and "domain" not in d
    assert d["options"] == {"ndots": 1, "timeout": "5s", "attempts": 2, "edns0": False}
    assert r["rc_define"] == "no error"
    assert "kumo.dns.load_resolv_conf: " in r["rc_missing"]
    assert r["rc_missing"].endswith("resolv.conf.missing: No such file or directory")
    assert r["rc_bad"].endswith("bad.conf: bad nameserver 'not-an-ip'")


def test_mta_sts_unbound_and_limit_knobs(dk):
    r = dk.out
    assert r["sts_off"] == "no error"
    assert r["sts_on"].endswith("kumo.dns.set_mta_sts_enabled(true): kumod does not implement "
                                "MTA-STS (RFC 8461); only false is accepted")
    assert "boolean expected" in r["sts_type"]
    assert r["unbound_cfg"].endswith(
        "kumo.dns.configure_unbound_resolver: kumod has no unbound resolver; use "
        "kumo.dns.configure_resolver { name_servers = {...} }")
    assert r["limit_ok"] == "no error"
    assert r["limit_bad"].endswith("limit must be between 1 and 1000000, got -1")


# --- set_mx_concurrency_limit: delivery MX resolutions wait for a slot --------------

LIMIT_POLICY = """
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.dns.configure_resolver{{ name_servers = {{ '{dns}' }} }}
  {limit}
  kumo.define_spool{{ name = 'data', path = '{var}/spool/data' }}
  kumo.define_spool{{ name = 'meta', path = '{var}/spool/meta' }}
  kumo.configure_local_logs{{ log_dir = '{var}/logs' }}
  kumo.start_esmtp_listener{{ listen = '127.0.0.1:0', relay_hosts = {{ '127.0.0.1' }} }}
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config{{ retry_interval = '1h' }}
end)
"""


def mx_arrivals(kumod, tmp_path, limit):
    """Queues mail for slow1.test and slow2.test (MX answers delayed 1.2 s each); returns
    when each MX query reached the DNS server (seconds, monotonic)."""
    from test_relay import send, wait_until

    srv = SlowDns(delay={"slow1.test": 1.2, "slow2.test": 1.2})
    try:
        var = tmp_path / ("var%s" % limit)
        lim = "kumo.dns.set_mx_concurrency_limit(%d)" % limit if limit else ""
        k = kumod(LIMIT_POLICY.format(dns=srv.server, var=var, limit=lim),
                  policy_name="limit%s.lua" % limit)
        _, refused = send(k.smtp_port, ["a@slow1.test", "b@slow2.test"], "hello\r\n")
        assert refused == {}
        got = wait_until(lambda: srv.first_arrival("slow1.test") and
                         srv.first_arrival("slow2.test") and
                         (srv.first_arrival("slow1.test"), srv.first_arrival("slow2.test")),
                         timeout=15)
        assert got, k.stderr()
        assert k.stop() == 0
        return got
    finally:
        srv.stop()


def test_mx_concurrency_limit_queues_resolutions(kumod, tmp_path):
    t1, t2 = mx_arrivals(kumod, tmp_path, 1)
    # one slot: the second domain's MX query waits until the first resolution ended
    assert abs(t2 - t1) >= 1.1, (t1, t2)
    u1, u2 = mx_arrivals(kumod, tmp_path, 0)  # KumoMTA's default, 128
    assert abs(u2 - u1) < 1.0, (u1, u2)
