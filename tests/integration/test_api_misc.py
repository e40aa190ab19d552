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


# --- kumo.crypto: AES blocks and AWS SigV4 -----------------------------------------

CRYPTO_POLICY = r"""
local kumo = require 'kumo'
local out = {}
local hex, unhex = kumo.encode.hex_encode, kumo.encode.hex_decode
local function err(f, ...)
  local ok, e = pcall(f, ...)
  return ok and 'no error' or tostring(e)
end
local k128 = { key = { key_data = unhex(os.getenv 'K128') } }
local k256 = { key = { key_data = unhex(os.getenv 'K256') } }
local pt = unhex(os.getenv 'PT')
local c = kumo.crypto
out.ecb128 = hex(c.aes_encrypt_block('Ecb', pt, k128))
out.ecb256 = hex(c.aes_encrypt_block('Ecb', pt, k256))
out.cbc128 = hex(c.aes_encrypt_block('Cbc', pt, k128))
out.cbc256 = hex(c.aes_encrypt_block('Cbc', pt, k256))
out.cbc128_again = hex(c.aes_encrypt_block('Cbc', pt, k128))
out.cbc_file = hex(c.aes_encrypt_block('Cbc', pt, { key = os.getenv 'KEYFILE' }))
local d = c.aes_decrypt_block('Cbc', unhex(os.getenv 'NIST_CBC'), k128)
out.dec_cbc = { hex = d.hex, bytes_hex = hex(d.bytes), tostring = tostring(d) }
out.dec_ecb = c.aes_decrypt_block('Ecb', unhex(os.getenv 'NIST_ECB'), k256).hex
out.roundtrip = {}
for _, n in ipairs { 0, 1, 15, 16, 17, 100 } do
  local s = string.rep('\0\255x', n):sub(1, n)
  for _, algo in ipairs { 'Cbc', 'Ecb' } do
    for kn, k in pairs { k128 = k128, k256 = k256 } do
      local e = c.aes_encrypt_block(algo, s, k)
      table.insert(out.roundtrip, {
        n = n, algo = algo, k = kn, len = #e,
        ok = c.aes_decrypt_block(algo, e, k).bytes == s,
      })
    end
  end
end
out.bad_algo = err(c.aes_encrypt_block, 'Gcm', 'x', k128)
out.bad_key_len = err(c.aes_encrypt_block, 'Ecb', 'x', { key = { key_data = 'short' } })
out.no_key = err(c.aes_encrypt_block, 'Ecb', 'x', {})
out.extra_key = err(c.aes_encrypt_block, 'Ecb', 'x', { key = { key_data = '1234567890abcdef' }, iv = 'x' })
out.vault = err(c.aes_encrypt_block, 'Ecb', 'x', { key = { vault_mount = 'm', vault_path = 'p' } })
out.short_cbc = err(c.aes_decrypt_block, 'Cbc', 'short', k128)
out.ragged = err(c.aes_decrypt_block, 'Ecb', string.rep('x', 20), k128)

-- SigV4: AWS's published example (IAM ListUsers) and more shapes
local function sign(p) return c.aws_sign_v4(p) end
local iam = {
  access_key = { key_data = 'AKIDEXAMPLE' },
  secret_key = { key_data = 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' },
  region = 'us-east-1', service = 'iam', method = 'GET', uri = '/',
  query_params = { Action = 'ListUsers', Version = '2010-05-08' },
  headers = { Host = 'iam.amazonaws.com',
              ['Content-Type'] = 'application/x-www-form-urlencoded; charset=utf-8' },
  timestamp = '2015-08-30T12:36:00Z',
}
out.iam = sign(iam)
iam.timestamp = kumo.time.from_unix_timestamp(1440938160)
out.iam_time = sign(iam)
out.s3 = sign {
  access_key = { key_data = 'AKIAIOSFODNN7EXAMPLE' },
  secret_key = { key_data = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' },
  region = 'eu-west-1', service = 's3', method = 'PUT',
  uri = '/my bucket/caf\u{e9}/a+b=c~d.txt',
  query_params = { ['x y'] = 'a/b', tag = 'v&w', empty = '' },
  headers = { host = 'bucket.s3.amazonaws.com', ['X-Custom'] = '  two   spaces\there  ',
              ['x-quoted'] = 'a  "b   c"  d' },
  payload = 'hello world',
  session_token = 'TOKEN/with+chars',
  timestamp = '2024-02-29T23:59:59Z',
}
out.empty_uri = sign {
  access_key = { key_data = 'A' }, secret_key = { key_data = 'S' },
  region = 'r', service = 'sns', method = 'POST', uri = '',
  headers = { host = 'h' }, timestamp = '2020-01-01T00:00:00Z',
}
out.now = sign {
  access_key = { key_data = 'A' }, secret_key = { key_data = 'S' },
  region = 'r', service = 'sns', method = 'POST', uri = '/', headers = { host = 'h' },
}.timestamp
out.no_host = err(sign, { access_key = { key_data = 'A' }, secret_key = { key_data = 'S' },
  region = 'r', service = 's', method = 'GET', uri = '/' })
out.no_region = err(sign, { access_key = { key_data = 'A' }, secret_key = { key_data = 'S' },
  service = 's', method = 'GET', uri = '/', headers = { host = 'h' } })
out.unknown_field = err(sign, { access_key = { key_data = 'A' }, secret_key = { key_data = 'S' },
  region = 'r', service = 's', method = 'GET', uri = '/', headers = { host = 'h' }, body = 'x' })
out.bad_time = err(sign, { access_key = { key_data = 'A' }, secret_key = { key_data = 'S' },
  region = 'r', service = 's', method = 'GET', uri = '/', headers = { host = 'h' },
  timestamp = 'yesterday' })

local o = assert(io.open(os.getenv 'OUT', 'w'))
o:write(kumo.json_encode(out))
o:close()
kumo.on('init', function()
  kumo.start_esmtp_listener { listen = '127.0.0.1:0' }
end)
"""

# NIST SP 800-38A, F.1.1/F.1.5 (ECB) and F.2.1 (CBC): keys, plaintext, ciphertexts
K128 = "2b7e151628aed2a6abf7158809cf4f3c"
K256 = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4"
PT = ("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
      "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710")
NIST_ECB128 = ("3ad77bb40d7a3660a89ecaf32466ef97f5d3d58503b9699de785895a96fdbaaf"
               "43b1cd7f598ece23881b00e3ed0306887b0c785e27e8ad3f8223207104725dd4")
NIST_ECB256 = ("f3eed1bdb5d2a03c064b5a7e3db181f8591ccb10d410ed26dc5ba74a31362870"
               "b6ed21b99ca6f4f9f153e7b1beafed1d23304b7a39f9f3ff067d8d8f9e24ecc7")
NIST_IV = "000102030405060708090a0b0c0d0e0f"
NIST_CBC128 = ("7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2"
               "73bed6b8e3c1743b7116e69e222295163ff1caa1681fac09120eca307586e1a7")


def aes(mode, key, data, iv=None, decrypt=False):
    """Python's reference (the cryptography package): AES with PKCS#7 padding."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    m = modes.CBC(iv) if mode == "Cbc" else modes.ECB()
    c = Cipher(algorithms.AES(key), m)
    if decrypt:
        d = c.decryptor()
        raw = d.update(data) + d.finalize()
        u = padding.PKCS7(128).unpadder()
        return u.update(raw) + u.finalize()
    p = padding.PKCS7(128).padder()
    e = c.encryptor()
    return e.update(p.update(data) + p.finalize()) + e.finalize()


@pytest.fixture(scope="module")
def crypto_cache():
    return {}


@pytest.fixture
def cr(kumod, tmp_path, crypto_cache):
    if "r" not in crypto_cache:
        keyfile = tmp_path / "key.bin"
        keyfile.write_bytes(bytes.fromhex(K256))
        nist_cbc = bytes.fromhex(NIST_IV) + aes("Cbc", bytes.fromhex(K128), bytes.fromhex(PT),
                                                bytes.fromhex(NIST_IV))
        nist_ecb = aes("Ecb", bytes.fromhex(K256), bytes.fromhex(PT))
        out = tmp_path / "out.json"
        k = kumod(CRYPTO_POLICY, env={"K128": K128, "K256": K256, "PT": PT, "OUT": str(out),
                                      "KEYFILE": str(keyfile), "NIST_CBC": nist_cbc.hex(),
                                      "NIST_ECB": nist_ecb.hex()})
        k.stop()
        crypto_cache["r"] = json.loads(out.read_text())
    return crypto_cache["r"]


def test_aes_reference_matches_nist():
    # the Python reference reproduces the published vectors (its first 4 blocks)
    assert aes("Ecb", bytes.fromhex(K128), bytes.fromhex(PT))[:64].hex() == NIST_ECB128
    assert aes("Ecb", bytes.fromhex(K256), bytes.fromhex(PT))[:64].hex() == NIST_ECB256
    assert aes("Cbc", bytes.fromhex(K128), bytes.fromhex(PT),
               bytes.fromhex(NIST_IV))[:64].hex() == NIST_CBC128


def test_aes_ecb_is_nist_plus_padding(cr):
    ecb128 = bytes.fromhex(cr["ecb128"])
    assert len(ecb128) == 80  # 64 bytes of data + a whole block of PKCS#7 padding
    assert ecb128[:64].hex() == NIST_ECB128
    assert ecb128 == aes("Ecb", bytes.fromhex(K128), bytes.fromhex(PT))
    assert bytes.fromhex(cr["ecb256"])[:64].hex() == NIST_ECB256
    assert bytes.fromhex(cr["ecb256"]) == aes("Ecb", bytes.fromhex(K256), bytes.fromhex(PT))


def test_aes_cbc_is_iv_then_ciphertext(cr):
    for name, key in (("cbc128", K128), ("cbc256", K256), ("cbc_file", K256)):
        raw = bytes.fromhex(cr[name])
        assert len(raw) == 16 + 80, name
        iv, ct = raw[:16], raw[16:]
        assert ct == aes("Cbc", bytes.fromhex(key), bytes.fromhex(PT), iv), name
        assert aes("Cbc", bytes.fromhex(key), ct, iv, decrypt=True).hex() == PT
    # a fresh random IV each time
    assert cr["cbc128"][:32] != cr["cbc128_again"][:32]


def test_aes_decrypt_gives_a_binary_result(cr):
    assert cr["dec_cbc"] == {"hex": PT, "bytes_hex": PT, "tostring": PT}
    assert cr["dec_ecb"] == PT
    for r in cr["roundtrip"]:
        assert r["ok"] is True, r
        pad = (r["n"] // 16 + 1) * 16
        assert r["len"] == pad + (16 if r["algo"] == "Cbc" else 0), r
    assert len(cr["roundtrip"]) == 24


def test_aes_refusals(cr):
    enc, dec = "kumo.crypto.aes_encrypt_block: ", "kumo.crypto.aes_decrypt_block: "
    assert cr["bad_algo"].endswith(enc + "unknown algorithm 'Gcm' (Cbc or Ecb)")
    assert cr["bad_key_len"].endswith(enc + "key length must be 16 or 32 bytes, got 5")
    assert cr["no_key"].endswith(enc + "the key config needs key (a KeySource)")
    assert cr["extra_key"].endswith(enc + "unknown key 'iv' in the key config (key)")
    assert "secrets.load: HashiCorp Vault key sources" in cr["vault"]
    assert cr["short_cbc"].endswith(dec + "ciphertext must be prefixed by iv with len at "
                                    "least 16")
    assert cr["ragged"].endswith(dec + "decryption failed (wrong key or algorithm, or the "
                                 "data is not a whole number of padded blocks)")


def sigv4(access, secret, region, service, method, uri, query, headers, payload, when,
          token=None):
    """A reference SigV4 from AWS's description (with KumoMTA's encoding set and header
    rules), over Python's hmac and hashlib."""
    import hashlib
    import hmac
    import re
    keep = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
               b"<>\\^`{|}")

    def enc(s):
        return "".join(chr(b) if b in keep else "%%%02X" % b for b in s.encode())

    def trimall(v):
        parts = re.split(r'("[^"]*"?)', v)
        out = ""
        for i, p in enumerate(parts):
            out += p if i % 2 else re.sub(r"[ \t]+", " ", p)
        return out.strip(" ")

    amz = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
    date = amz[:8]
    ph = hashlib.sha256(payload.encode()).hexdigest()
    h = {k.lower(): v for k, v in headers.items()}
    h["x-amz-date"] = amz
    if token:
        h["x-amz-security-token"] = token
    if service == "s3":
        h["x-amz-content-sha256"] = ph
    curi = "/".join(enc(seg) for seg in uri.split("/")) if uri else "/"
    cq = "&".join("%s=%s" % kv for kv in sorted((enc(k), enc(v)) for k, v in query.items()))
    ch = "".join("%s:%s\n" % (k, trimall(h[k])) for k in sorted(h))
    sh = ";".join(sorted(h))
    creq = "\n".join([method, curi, cq, ch, sh, ph])
    scope = "%s/%s/%s/aws4_request" % (date, region, service)
    sts = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(creq.encode()).hexdigest()])
    k = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    auth = "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (
        access, scope, sh, sig)
    return {"authorization": auth, "timestamp": amz, "signature": sig,
            "canonical_request": creq, "string_to_sign": sts}


def test_sigv4_aws_published_example(cr):
    want = sigv4("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1", "iam",
                 "GET", "/", {"Action": "ListUsers", "Version": "2010-05-08"},
                 {"Host": "iam.amazonaws.com",
                  "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
                 "", 1440938160)
    # the signature AWS publishes for this request (its SigV4 signing example)
    assert want["signature"] == \
        "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
    assert cr["iam"] == want
    assert cr["iam_time"] == want  # a kumo.time Time as the timestamp


def test_sigv4_s3_encoding_token_and_headers(cr):
    want = sigv4("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                 "eu-west-1", "s3", "PUT", "/my bucket/caf\u00e9/a+b=c~d.txt",
                 {"x y": "a/b", "tag": "v&w", "empty": ""},
                 {"host": "bucket.s3.amazonaws.com", "X-Custom": "  two   spaces\there  ",
                  "x-quoted": 'a  "b   c"  d'},
                 "hello world", 1709251199, token="TOKEN/with+chars")
    assert cr["s3"] == want
    lines = cr["s3"]["canonical_request"].split("\n")
    assert lines[1] == "/my%20bucket/caf%C3%A9/a%2Bb%3Dc~d.txt"
    assert lines[2] == "empty=&tag=v%26w&x%20y=a%2Fb"
    assert "x-custom:two spaces here" in lines
    assert 'x-quoted:a "b   c" d' in lines
    empty = sigv4("A", "S", "r", "sns", "POST", "", {}, {"host": "h"}, "", 1577836800)
    assert cr["empty_uri"] == empty
    assert cr["empty_uri"]["canonical_request"].split("\n")[1] == "/"
    now = time.strftime("%Y%m%dT", time.gmtime())
    assert cr["now"].startswith(now[:8]) and len(cr["now"]) == 16


def test_sigv4_refusals(cr):
    fn = "kumo.crypto.aws_sign_v4: "
    assert cr["no_host"].endswith(fn + "headers must include 'host'")
    assert cr["no_region"].endswith(fn + "missing field region (a string)")
    assert cr["unknown_field"].endswith(fn + "unknown field 'body'")
    assert "not an RFC 3339 date-time" in cr["bad_time"]


# --- kumo.http.build_url ------------------------------------------------------------

URL_POLICY = r"""
local kumo = require 'kumo'
local out = {}
local function err(f, ...)
  local ok, e = pcall(f, ...)
  return ok and 'no error' or tostring(e)
end
local b = kumo.http.build_url
out.doc = b('https://example.com/?existing=value', { a = 1, b = 2 })
out.encoded = b('https://example.com/api', { [os.getenv 'K'] = os.getenv 'V', n = 1.5 })
out.normalised = b('HTTPS://Example.COM:443', { x = 'y' })
out.port_kept = b('http://u:P@Host:8080/p?q#frag', { k = 'v' })
out.empty = b('https://example.com', {})
out.v6 = b('http://[::1]:80/x', { a = 'b' })
out.relative = err(b, '/relative', {})
out.no_host = err(b, 'http:///path', {})
out.bad_port = err(b, 'http://h:8x/', {})
out.bad_value = err(b, 'http://h/', { t = {} })
local o = assert(io.open(os.getenv 'OUT', 'w'))
o:write(kumo.json_encode(out))
o:close()
kumo.on('init', function()
  kumo.start_esmtp_listener { listen = '127.0.0.1:0' }
end)
"""


def form_urlencode(s):
    """application/x-www-form-urlencoded as the WHATWG URL standard defines it."""
    keep = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789*-._"
    return "".join(chr(c) if c in keep else "+" if c == 32 else "%%%02X" % c
                   for c in s.encode())


def test_build_url(kumod, tmp_path):
    key, val = "sp ace&=", "x/y&z=\u00e9~+%"
    out = tmp_path / "out.json"
    k = kumod(URL_POLICY, env={"OUT": str(out), "K": key, "V": val})
    k.stop()
    r = json.loads(out.read_text())
    assert r["doc"] == "https://example.com/?existing=value&a=1&b=2"  # KumoMTA's example
    assert r["encoded"] == "https://example.com/api?n=1.5&%s=%s" % (form_urlencode(key),
                                                                   form_urlencode(val))
    assert r["encoded"].endswith("sp+ace%26%3D=x%2Fy%26z%3D%C3%A9%7E%2B%25")
    assert r["normalised"] == "https://example.com/?x=y"
    assert r["port_kept"] == "http://u:P@host:8080/p?q&k=v#frag"
    assert r["empty"] == "https://example.com/?"
    assert r["v6"] == "http://[::1]/x?a=b"
    fn = "kumo.http.build_url: "
    assert r["relative"].endswith(fn + "'/relative' is not an absolute URL")
    assert r["no_host"].endswith(fn + "'http:///path' is not an absolute URL")
    assert r["bad_port"].endswith(fn + "'http://h:8x/' is not an absolute URL")
    assert r["bad_value"].endswith(fn + "parameter 't' must be a string or a number, got table")


# --- kumo.fs.open ---------------------------------------------------------------------

FS_POLICY = r"""
local kumo = require 'kumo'
local d = os.getenv 'FS_DIR'
local function err(f, ...)
  local ok, e = pcall(f, ...)
  return ok and 'no error' or tostring(e)
end
local function exercise(path)
  local r = {}
  local f = kumo.fs.open(path, 'w+')
  f:write 'hello there'
  f:write ''
  r.set = f:seek 'set'
  r.all = f:read()
  r.at6 = f:seek('set', 6)
  r.three = f:read(3)
  r.rest = f:read(100)
  r.eof = f:read(5)
  r.size = f:seek 'end'
  r.back = f:seek('cur', -5)
  r.tail = f:read()
  f:flush()
  f:close()
  f:close()
  r.closed = err(f.read, f)
  local a = kumo.fs.open(path, 'ab')
  a:write '!'
  a:close()
  r.appended = kumo.fs.open(path):read()
  r.ro_write = err(function() local g = kumo.fs.open(path, 'r'); g:write 'x' end)
  local big = kumo.fs.open(d .. '/big.bin', 'rb')
  local data = big:read()
  big:close()
  r.big_len = #data
  r.big_sum = kumo.digest.sha256(data).hex
  return r
end
local out = exercise(d .. '/sync.txt')
out.missing = err(kumo.fs.open, d .. '/no/such')
out.bad_mode = err(kumo.fs.open, d .. '/x', 'rw')
out.r_plus_creates = err(function() kumo.fs.open(d .. '/created', 'r+'):close() end)
out.bad_seek = err(function() kumo.fs.open(d .. '/sync.txt'):seek('middle') end)
out.bad_size = err(function() kumo.fs.open(d .. '/sync.txt'):read(0) end)
local o = assert(io.open(os.getenv 'OUT', 'w'))
o:write(kumo.json_encode(out))
o:close()
kumo.on('init', function()
  kumo.start_esmtp_listener { listen = '127.0.0.1:0' }
end)
kumo.on('smtp_server_message_received', function(msg)
  local ok, res = pcall(exercise, d .. '/async.txt')
  if ok then
    kumo.reject(550, 'RESULT ' .. kumo.json_encode(res))
  end
  kumo.reject(550, 'ERROR ' .. tostring(res))
end)
"""


def test_fs_open(kumod, tmp_path):
    import hashlib
    import os
    import re
    d = tmp_path / "fs"
    d.mkdir()
    big = os.urandom(3 * 1024 * 1024 + 17)
    (d / "big.bin").write_bytes(big)
    out = tmp_path / "out.json"
    k = kumod(FS_POLICY, env={"FS_DIR": str(d), "OUT": str(out),
                              "KUMOD_LOG": "kumod=info,kumod::lua=debug,lua=info,"
                                           "kumo_server_common=info"})
    want = {"set": 0, "all": "hello there", "at6": 6, "three": "the", "rest": "re",
            "eof": "", "size": 11, "back": 6, "tail": "there",
            "closed": "file:read: the file is closed", "appended": "hello there!",
            "big_len": len(big), "big_sum": hashlib.sha256(big).hexdigest()}
    r = json.loads(out.read_text())
    assert r["ro_write"].endswith("file:write: Bad file descriptor")
    assert {k_: r[k_] for k_ in want} == want  # in place, at load time
    fn = "kumo.fs.open: "
    assert r["missing"].endswith(fn + str(d / "no/such") + ": No such file or directory")
    assert r["bad_mode"].endswith(fn + "unknown mode 'rw' (r, w, a, r+, w+, a+, each with an "
                                  "optional b)")
    assert r["r_plus_creates"] == "no error" and (d / "created").exists()
    assert "bad argument #1 to 'seek' (invalid option 'middle')" in r["bad_seek"]
    assert r["bad_size"].endswith("file:read: size must be between 1 and 1073741824")
    kind, res = scenario(k.smtp_port, "fs")  # on the thread pool, the handler waiting
    assert kind == "RESULT", res
    assert res["ro_write"].endswith("file:write: Bad file descriptor")
    assert {k_: res[k_] for k_ in want} == want
    assert (d / "async.txt").read_bytes() == b"hello there!"
    # each open/read/write/seek suspended the handler once (trace lua_wait, then resumes)
    resumes = re.findall(r"event smtp_server_message_received call=\d+ resumes", k.stderr())
    assert len(resumes) >= 19, k.stderr()[-2000:]


# --- kumo.counter_series ------------------------------------------------------------

SERIES_POLICY = r"""
local kumo = require 'kumo'
local out = {}
local function err(f, ...)
  local ok, e = pcall(f, ...)
  return ok and 'no error' or tostring(e)
end
local cs = kumo.counter_series
local a = cs.define { name = 'deliveries.ok', num_buckets = 5, bucket_size = '1m',
                      initial_value = 10 }
a:increment(3)
-- the same name and shape: the same series (initial_value ignored)
local b = cs.define { name = 'deliveries.ok', num_buckets = 5, bucket_size = 60,
                      initial_value = 99 }
b:increment(2)
out.same = { a = a:sum(), b = b:sum() }
-- another shape replaces it; the old handle keeps the old series
local c = cs.define { name = 'deliveries.ok', num_buckets = 2, bucket_size = '1m' }
c:increment(1)
a:increment(100)
out.replaced = { old = a:sum(), new = c:sum(),
                 again = cs.define { name = 'deliveries.ok', num_buckets = 2,
                                     bucket_size = '60s' }:sum() }
local g = cs.define { name = 'inflight', num_buckets = 1, bucket_size = '500ms' }
g:delta(2)
g:delta(-5)
out.delta_floor = g:sum()
g:delta(7)
g:observe(4)
out.observed = g:sum()
out.sum_over = { g:sum_over(0), g:sum_over('30s'), g:sum_over(3600) }
local m = cs.define { name = 'max', num_buckets = 3, bucket_size = 1,
                      initial_value = math.maxinteger }
m:increment(math.maxinteger)
out.big = m:sum()
out.no_name = err(cs.define, { num_buckets = 1, bucket_size = 1 })
out.zero_buckets = err(cs.define, { name = 'z', num_buckets = 0, bucket_size = 1 })
out.many_buckets = err(cs.define, { name = 'z', num_buckets = 256, bucket_size = 1 })
out.zero_size = err(cs.define, { name = 'z', num_buckets = 1, bucket_size = 0 })
out.bad_size = err(cs.define, { name = 'z', num_buckets = 1, bucket_size = 'soon' })
out.unknown = err(cs.define, { name = 'z', num_buckets = 1, bucket_size = 1, ttl = 2 })
out.negative = err(g.increment, g, -1)
out.float = err(g.observe, g, 1.5)
local o = assert(io.open(os.getenv 'OUT', 'w'))
o:write(kumo.json_encode(out))
o:close()
kumo.on('init', function()
  kumo.start_esmtp_listener { listen = '127.0.0.1:0' }
end)
"""


def test_counter_series(kumod, tmp_path):
    out = tmp_path / "out.json"
    kumod(SERIES_POLICY, env={"OUT": str(out)}).stop()
    r = json.loads(out.read_text())
    assert r["same"] == {"a": 15, "b": 15}
    assert r["replaced"] == {"old": 115, "new": 1, "again": 1}
    assert r["delta_floor"] == 0
    assert r["observed"] == 4
    assert r["sum_over"] == [4, 4, 4]
    assert r["big"] == float(2 ** 64 - 1)  # saturated; beyond a Lua integer: a float
    fn = "kumo.counter_series.define: "
    assert r["no_name"].endswith(fn + "name (a string) is required")
    assert r["zero_buckets"].endswith(fn + "num_buckets must be >= 1")
    assert r["many_buckets"].endswith(fn + "num_buckets must be an integer from 1 to 255")
    assert r["zero_size"].endswith(fn + "bucket_size must be >= 1 second")
    assert r["bad_size"].endswith(fn + "invalid duration 'soon'")
    assert r["unknown"].endswith(fn + "unknown field 'ttl'")
    assert r["negative"].endswith("counter_series:increment: expected an integer >= 0, got a "
                                  "negative number")
    assert r["float"].endswith("counter_series:observe: expected an integer >= 0, got number")


# --- tuning knobs kumod has no machinery for --------------------------------------------

KNOBS_POLICY = r"""
local kumo = require 'kumo'
local out = {}
local function err(f, ...)
  local ok, e = pcall(f, ...)
  return ok and 'no error' or tostring(e)
end
kumo.on('pre_init', function()
  kumo.set_max_lua_context_age(300)
  kumo.set_max_lua_context_use_count(1024)
  kumo.set_max_spare_lua_contexts(8)
  kumo.set_lruttl_cache_capacity('dns_resolver_mx', 128000)
  kumo.set_ready_qmaint_threads(4)
  out.negative = err(kumo.set_max_lua_context_age, -1)
  out.no_name = err(kumo.set_lruttl_cache_capacity, 5)
  out.epoch = err(function() return kumo.bump_config_epoch end)
  out.monitor = err(function() return kumo.set_config_monitor_globs end)
  out.inject_rate = err(function() return kumo.set_httpinject_recipient_rate_limit end)
  local o = assert(io.open(os.getenv 'OUT', 'w'))
  o:write(kumo.json_encode(out))
  o:close()
end)
kumo.on('init', function()
  kumo.start_esmtp_listener { listen = '127.0.0.1:0' }
end)
"""


def test_no_effect_knobs_log_once(kumod, tmp_path):
    import re
    out = tmp_path / "out.json"
    k = kumod(KNOBS_POLICY, env={"OUT": str(out)})
    k.stop()
    r = json.loads(out.read_text())
    lines = re.findall(r" INFO .*kumod::lua: kumo\.(\w+)\((.*?)\) has no effect: (.*)$",
                       k.stderr(), re.M)
    assert sorted(lines) == sorted([
        ("set_max_lua_context_age", "300", "kumod runs one Lua state, not a pool of contexts"),
        ("set_max_lua_context_use_count", "1024",
         "kumod runs one Lua state, not a pool of contexts"),
        ("set_max_spare_lua_contexts", "8", "kumod runs one Lua state, not a pool of contexts"),
        ("set_lruttl_cache_capacity", "'dns_resolver_mx', 128000",
         "kumod has no KumoMTA-named LRU caches; its caches are bounded by their own rules"),
        ("set_ready_qmaint_threads", "4", "kumod runs ready queues on its one loop thread"),
    ])
    assert r["negative"].endswith("kumo.set_max_lua_context_age: the value must not be negative")
    assert r["no_name"].endswith("bad argument #2 to 'kumo.set_lruttl_cache_capacity' (number "
                                 "expected, got no value)")
    # these would change what happens (reloads, injection rate): still refused by name
    for key, name in (("epoch", "bump_config_epoch"), ("monitor", "set_config_monitor_globs"),
                      ("inject_rate", "set_httpinject_recipient_rate_limit")):
        assert r[key].endswith("kumo.%s is a KumoMTA API that kumod does not implement yet"
                               % name), r[key]


# --- kumo.jsonl.new_writer -------------------------------------------------------------

JSONL_POLICY = r"""
local kumo = require 'kumo'
local out = {}
local d = os.getenv 'JDIR'
local function err(f, ...)
  local ok, e = pcall(f, ...)
  return ok and 'no error' or tostring(e)
end
local w = kumo.jsonl.new_writer { log_dir = d .. '/a', suffix = '.zst' }
w:write_record { event = 'Delivery', id = 'abc123', n = 1 }
w:write_line '{"event":"Bounce","id":"def456"}\n'
w:write_line 'not json at all'
w:close()
w:close()
out.after_close = err(w.write_line, w, 'x')
-- rolls on size: every segment ends after the record that reached 60 bytes
local s = kumo.jsonl.new_writer { log_dir = d .. '/b', max_file_size = 60, compression_level = 19 }
for i = 1, 10 do
  s:write_record { i = i, pad = string.rep('x', 20) }
end
s:close()
do
  local t <close> = kumo.jsonl.new_writer { log_dir = d .. '/c', tz = 'America/New_York',
                                            compression_level = 0 }
  t:write_line 'zoned'
end
out.unknown = err(kumo.jsonl.new_writer, { log_dir = d, rotate = true })
out.no_dir = err(kumo.jsonl.new_writer, {})
out.bad_level = err(kumo.jsonl.new_writer, { log_dir = d, compression_level = 22 })
out.bad_tz = err(kumo.jsonl.new_writer, { log_dir = d, tz = 'Mars/Olympus' })
out.bad_duration = err(kumo.jsonl.new_writer, { log_dir = d, max_segment_duration = 'later' })
out.bad_suffix = err(kumo.jsonl.new_writer, { log_dir = d, suffix = '/x' })
out.tailer = err(function() return kumo.jsonl.new_tailer end)
local o = assert(io.open(os.getenv 'OUT', 'w'))
o:write(kumo.json_encode(out))
o:close()
kumo.on('init', function()
  kumo.start_esmtp_listener { listen = '127.0.0.1:0' }
end)
"""


def test_jsonl_writer(kumod, tmp_path):
    import datetime
    import os
    import re
    import stat
    import subprocess
    import zoneinfo
    d = tmp_path / "j"
    out = tmp_path / "out.json"
    kumod(JSONL_POLICY, env={"JDIR": str(d), "OUT": str(out)}).stop()
    r = json.loads(out.read_text())

    def segments(sub):
        files = sorted(os.listdir(d / sub))
        for f in files:
            st = os.stat(d / sub / f)
            assert st.st_mode & 0o222 == 0, (f, oct(st.st_mode))  # done: read-only
        return files

    def lines(sub, f):
        p = subprocess.run(["zstd", "-dcq", str(d / sub / f)], capture_output=True, check=True)
        return p.stdout.decode().splitlines(keepends=True)

    a = segments("a")
    assert len(a) == 1 and re.fullmatch(r"\d{8}-\d{6}\.\d{9}\.zst", a[0]), a
    assert lines("a", a[0]) == ['{"event":"Delivery","id":"abc123","n":1}\n',
                                '{"event":"Bounce","id":"def456"}\n', "not json at all\n"]
    assert r["after_close"].endswith("writer:write_line: writer has been closed")
    b = segments("b")
    recs = [json.loads(x) for f in b for x in lines("b", f)]
    assert [x["i"] for x in recs] == list(range(1, 11))
    per = [len(lines("b", f)) for f in b]
    line_len = len('{"i":1,"pad":"xxxxxxxxxxxxxxxxxxxx"}\n')  # 37 bytes (38 for i=10)
    assert line_len == 37
    assert per == [2, 2, 2, 2, 2], per  # 74 >= 60 after the second record of each
    c = segments("c")
    assert len(c) == 1 and lines("c", c[0]) == ["zoned\n"]
    stamp = datetime.datetime.strptime(c[0][:15], "%Y%m%d-%H%M%S")
    ny = datetime.datetime.now(zoneinfo.ZoneInfo("America/New_York")).replace(tzinfo=None)
    assert abs((ny - stamp).total_seconds()) < 120, (c[0], ny)
    fn = "kumo.jsonl.new_writer: "
    assert r["unknown"].endswith(fn + "unknown field 'rotate'")
    assert r["no_dir"].endswith(fn + "log_dir (a string) is required")
    assert r["bad_level"].endswith(fn + "compression_level must be 0 (zstd's default) or 1 to 21")
    assert (fn + "tz: ") in r["bad_tz"] and "Mars/Olympus" in r["bad_tz"], r["bad_tz"]
    assert r["bad_duration"].endswith(fn + "invalid max_segment_duration 'later'")
    assert r["bad_suffix"].endswith(fn + "suffix must be a string without '/'")
    assert r["tailer"].endswith(
        "kumo.jsonl.new_tailer is a KumoMTA API that kumod does not implement yet")
