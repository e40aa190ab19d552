# SPDX-License-Identifier: Apache-2.0
"""Inbound mail authentication: kumo.spf.check_host / check_msg (RFC 7208),
msg:dkim_verify (RFC 6376) and msg:add_authentication_results (RFC 8601), with
a fake DNS server on loopback serving the SPF TXT, A, MX and DKIM key records.
A relay runs the checks in smtp_server_message_received, writes each result as
JSON into a header and adds the Authentication-Results field; a sink captures
what the relay delivers and the tests parse those fields."""

import base64
import json
import os
import re
import smtplib
import subprocess
import time

import pytest
from dnslib import MX, PTR, QTYPE, RCODE, RR, TXT, A, DNSRecord

from conftest import KUMOD_BIN, Kumod, kumod_env, require_kumod
from test_dns import DnsServer, soa
from test_relay import SINK_LUA, captured, records, sink_start, wait_until

dkim = pytest.importorskip("dkim")


def txt(name, *texts):
    """One TXT record; a text over 255 octets becomes several strings."""
    out = []
    for t in texts:
        b = t.encode()
        out.append([b[i:i + 255] for i in range(0, len(b), 255)] or [b""])
    return [RR(name, QTYPE.TXT, rdata=TXT(s), ttl=60) for s in out]


def a(name, ip):
    return RR(name, QTYPE.A, rdata=A(ip), ttl=60)


def mx(name, host):
    return RR(name, QTYPE.MX, rdata=MX(host, 10), ttl=60)


ZONE = {
    "pass.test": txt("pass.test", "v=spf1 ip4:192.0.2.0/24 -all", "unrelated text"),
    "soft.test": txt("soft.test", "v=spf1 ip4:192.0.2.0/24 ~all"),
    "neutral.test": txt("neutral.test", "v=spf1 ?all"),
    "inc.test": txt("inc.test", "v=spf1 include:pass.test -all"),
    "redir.test": txt("redir.test", "v=spf1 redirect=pass.test"),
    "amx.test": txt("amx.test", "v=spf1 a mx/30 -all") + [a("amx.test", "203.0.113.10"),
                                                       mx("amx.test", "mx.amx.test")],
    "mx.amx.test": [a("mx.amx.test", "203.0.113.20")],
    "loop.test": txt("loop.test", "v=spf1 include:loop.test -all"),
    "void.test": txt("void.test", "v=spf1 a:nx1.void.test a:nx2.void.test "
                                  "a:nx3.void.test +all"),
    "macro.test": txt("macro.test", "v=spf1 exists:%{i}.%{l}.ok.macro.test -all"),
    "192.0.2.9.alice.ok.macro.test": [a("192.0.2.9.alice.ok.macro.test", "127.0.0.2")],
    "nospf.test": txt("nospf.test", "hello world"),
    "twice.test": txt("twice.test", "v=spf1 -all", "v=spf1 +all"),
    "bad.test": txt("bad.test", "v=spf1 ip4:300.1.1.1 -all"),
    "tempinc.test": txt("tempinc.test", "v=spf1 include:servfail.test -all"),
    "local.test": txt("local.test", "v=spf1 ip4:127.0.0.0/8 -all"),
    "1.0.0.127.in-addr.arpa": [RR("1.0.0.127.in-addr.arpa", QTYPE.PTR,
                                  rdata=PTR("client.auth.test"), ttl=60)],
    "client.auth.test": [a("client.auth.test", "127.0.0.1")],
    "auth.test": txt("auth.test", "v=spf1 ptr -all"),
    "other.test": txt("other.test", "v=spf1 ptr -all"),
    "v6.test": txt("v6.test", "v=spf1 ip6:2001:db8::/32 exists:%{ir}.%{v}.v6ok.test -all"),
    ("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.3.ip6.v6ok.test"):
        [a("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.3.ip6.v6ok.test",
           "127.0.0.2")],
}
SERVFAIL = {"servfail.test", "sf._domainkey.sign.test"}


class AuthDns(DnsServer):
    """test_dns's server (UDP and TCP, query log) over this file's zone."""

    def answer(self, data, proto):
        req = DNSRecord.parse(data)
        name = str(req.q.qname).rstrip(".").lower()
        with self.lock:
            self.queries.append((name, QTYPE[req.q.qtype], proto))
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
            if rr.rtype == req.q.qtype:
                reply.add_answer(rr)
        if not reply.rr:
            reply.add_auth(soa())
        packed = reply.pack()
        if proto == "udp" and len(packed) > 512:
            short = req.reply()
            short.header.tc = 1
            return short.pack()
        return packed


@pytest.fixture(scope="module")
def dns():
    srv = AuthDns()
    yield srv
    srv.stop()


def keys(tmp_path):
    rsa = tmp_path / "rsa.pem"
    ed = tmp_path / "ed.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", str(rsa)], check=True, capture_output=True)
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(ed)],
                   check=True, capture_output=True)

    def der(path):
        return subprocess.run(["openssl", "pkey", "-in", str(path), "-pubout", "-outform",
                               "DER"], check=True, capture_output=True).stdout

    ZONE["rsa._domainkey.sign.test"] = txt(
        "rsa._domainkey.sign.test", "v=DKIM1; k=rsa; p=" + base64.b64encode(der(rsa)).decode())
    ZONE["ed._domainkey.sign.test"] = txt(
        "ed._domainkey.sign.test",
        "v=DKIM1; k=ed25519; p=" + base64.b64encode(der(ed)[-32:]).decode())
    ZONE["revoked._domainkey.sign.test"] = txt("revoked._domainkey.sign.test", "v=DKIM1; p=")
    return rsa, ed


POLICY = """
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.dns.configure_resolver{{ name_servers = {{ '{dns}' }} }}
  kumo.define_spool{{ name = 'data', path = '{var}/spool/data' }}
  kumo.define_spool{{ name = 'meta', path = '{var}/spool/meta' }}
  kumo.configure_local_logs{{ log_dir = '{var}/logs' }}
  kumo.start_esmtp_listener{{ listen = '127.0.0.1:0', hostname = 'mx.relay.test',
                              relay_hosts = {{ '127.0.0.1' }} }}
end)
kumo.on('get_queue_config', function()
  return kumo.make_queue_config{{ retry_interval = '1s', max_retry_interval = '1s',
    protocol = {{ smtp = {{ mx_list = {{ '127.0.0.1' }} }} }} }}
end)
kumo.on('get_egress_path_config', function()
  return kumo.make_egress_path{{ prohibited_hosts = {{}}, enable_tls = 'Disabled',
                                 smtp_port = {sink_port}, connect_timeout = '2s' }}
end)
kumo.on('smtp_server_ehlo', function(domain, conn_meta)
  if domain:match('^spf%-') then
    -- KumoMTA's example: the HELO identity checked with the connection's address
    local r = kumo.spf.check_host(domain:sub(5), conn_meta)
    if r.disposition ~= 'pass' then
      kumo.reject(550, 'spf ' .. r.disposition .. ': ' .. r.result.reason)
    end
  end
end)
kumo.on('smtp_server_message_received', function(msg, conn_meta)
  if msg:get_first_named_header_value('X-Mail-Auth') then
    local mail_auth = require 'policy-extras.mail_auth'
    local ok, err = pcall(mail_auth.check, msg)
    msg:append_header('X-Default-Error', tostring(ok) .. ' ' .. tostring(err))
    local r = mail_auth.check(msg, {{ dmarc = false, arc = false, server_id = 'auth.example' }})
    msg:append_header('X-Check-Json', kumo.json_encode(r))
    return
  end
  local results = {{}}
  local self_sign = msg:get_first_named_header_value('X-Self-Sign')
  if self_sign == 'rsa' then
    msg:dkim_sign(kumo.dkim.rsa_sha256_signer{{ domain = 'sign.test', selector = 'rsa',
      headers = {{ 'From', 'Subject' }}, key = '{rsa}' }})
  elseif self_sign == 'ed' then
    msg:dkim_sign(kumo.dkim.ed25519_signer{{ domain = 'sign.test', selector = 'ed',
      headers = {{ 'From', 'Subject' }}, key = '{ed}',
      header_canonicalization = 'Simple', body_canonicalization = 'Simple' }})
  end
  local dk = msg:dkim_verify()
  msg:append_header('X-Dkim-Json', kumo.json_encode(dk))
  for _, r in ipairs(dk) do table.insert(results, r) end
  local dom = msg:get_first_named_header_value('X-Spf-Domain')
  if dom then
    local ip = msg:get_first_named_header_value('X-Spf-Ip')
    local sender = msg:get_first_named_header_value('X-Spf-Sender')
    local r = kumo.spf.check_host(dom, ip, sender)
    msg:append_header('X-Spf-Json', kumo.json_encode(r))
    table.insert(results, r.result)
  else
    local r = kumo.spf.check_msg(msg)
    msg:append_header('X-Spf-Json', kumo.json_encode(r))
    table.insert(results, r.result)
  end
  msg:add_authentication_results(msg:get_meta('hostname') or 'mx.relay.test', results)
end)
"""


@pytest.fixture(scope="module")
def relay(dns, tmp_path_factory):
    """A relay and a sink shared by this file's tests (started once: key generation and
    two daemons per test would dominate the run)."""
    require_kumod()
    tmp = tmp_path_factory.mktemp("mail_auth")
    rsa, ed = keys(tmp)
    started = []

    def start(text, name, env=None):
        policy = tmp / name
        policy.write_text(text)
        proc = subprocess.Popen([KUMOD_BIN, "--policy", str(policy)], env=kumod_env(env),
                                cwd=str(tmp), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        k = Kumod(proc, str(policy))
        started.append(k)
        k.wait_for("initialization complete", 15)
        return k

    capture = tmp / "capture"
    sink = start(open(SINK_LUA).read(), "sink.lua",
                 {"KUMO_SINK_LISTEN": "127.0.0.1:0", "KUMO_SINK_CAPTURE_DIR": str(capture)})
    relay = start(POLICY.format(dns=dns.server, var=tmp / "var", sink_port=sink.smtp_port,
                                rsa=rsa, ed=ed), "relay.lua",
                  {"KUMOD_LOG": "kumod=info,kumod::spf=debug,kumod::dkim=debug,lua=info,"
                                "kumo_server_common=info,runtime::task=debug", "KUMOD_MESSAGE_TIMELINE_LOG": "1"})
    yield {"relay": relay, "capture": capture, "rsa": rsa, "ed": ed, "tmp": tmp}
    status = {}
    for k in started:
        try:
            status[k] = k.stop(timeout=10)
        except pytest.fail.Exception:
            pass
        k.kill()
    # a clean exit: under SANITIZER=address a leak or memory error makes it non-zero
    assert status.get(relay) == 0, relay.stderr()[-4000:]


def deliver(relay, headers, body="hello\r\n", sign=None, tamper=None, sender="alice@pass.test"):
    """Sends one message (signed by dkimpy when sign = (selector, kwargs)); returns the
    captured copy's header fields as {lower-name: [unfolded values]}."""
    token = "%d" % time.monotonic_ns()
    msg = ("From: <%s>\r\nTo: <bob@example.com>\r\nSubject: auth %s\r\n" % (sender, token)
           + "".join("%s: %s\r\n" % kv for kv in headers.items())
           + "\r\n" + body).encode()
    if sign:
        sel, kw = sign
        key = open(relay["ed" if sel == "ed" else "rsa"], "rb").read()
        if sel == "ed":
            key = base64.b64encode(_ed_raw(relay["ed"]))
        sig = dkim.sign(msg, sel.encode(), b"sign.test", key,
                        include_headers=[b"from", b"subject", b"to"], **kw)
        msg = sig + msg
    if tamper:
        msg = tamper(msg)
    before = set(captured(relay["capture"]))
    with smtplib.SMTP("127.0.0.1", relay["relay"].smtp_port, timeout=20) as s:
        s.ehlo("client.test")
        assert s.sendmail(sender, ["bob@example.com"], msg) == {}

    def arrived():
        for f in set(captured(relay["capture"])) - before:
            data = open(f, "rb").read()
            if token.encode() in data:
                return data
        return None

    data = wait_until(arrived, timeout=30)
    assert data, relay["relay"].stderr()[-3000:]
    return parse_fields(data)


def _ed_raw(path):
    der = subprocess.run(["openssl", "pkey", "-in", str(path), "-outform", "DER"],
                         check=True, capture_output=True).stdout
    return der[-32:]


def parse_fields(data):
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    fields = {}
    name = None
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t") and name:
            fields[name][-1] += " " + line.strip()
        else:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            fields.setdefault(name, []).append(value.strip())
    return fields


TOKEN = re.compile(r'([^\s=;]+)=("(?:[^"\\]|\\.)*"|[^\s;]+)|(;)|(\S+)')


def auth_results(fields):
    """The Authentication-Results field (RFC 8601): (authserv-id, [(method, result,
    {reason and props})]); quoted values unquoted."""
    (value,) = fields["authentication-results"]
    serv, out = None, []
    for k, v, semi, word in TOKEN.findall(value):
        if semi:
            continue
        if word and serv is None:
            serv = word
            continue
        assert not word, (word, value)
        if v.startswith('"'):
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        if k in ("reason",) or "." in k:
            out[-1][2][k] = v
        else:
            out.append((k, v, {}))
    return serv.rstrip(";"), out


def spf_of(fields):
    return json.loads(fields["x-spf-json"][0])


def dkim_of(fields):
    return json.loads(fields["x-dkim-json"][0])


SPF_CASES = [
    ("pass.test", "192.0.2.7", "pass", "matched 'ip4:192.0.2.0/24' directive"),
    ("pass.test", "198.51.100.1", "fail", "matched '-all' directive"),
    ("soft.test", "198.51.100.1", "softfail", "matched '~all' directive"),
    ("neutral.test", "198.51.100.1", "neutral", "matched '?all' directive"),
    ("inc.test", "192.0.2.7", "pass", "matched 'include:pass.test' directive"),
    ("inc.test", "198.51.100.1", "fail", "matched '-all' directive"),
    ("redir.test", "192.0.2.7", "pass", "matched 'ip4:192.0.2.0/24' directive"),
    ("redir.test", "198.51.100.1", "fail", "matched '-all' directive"),
    ("amx.test", "203.0.113.10", "pass", "matched 'a' directive"),
    ("amx.test", "203.0.113.22", "pass", "matched 'mx/30' directive"),
    ("amx.test", "203.0.113.99", "fail", "matched '-all' directive"),
    ("loop.test", "192.0.2.7", "permerror", "DNS lookup limits exceeded"),
    ("void.test", "192.0.2.7", "permerror", "void DNS lookup limit exceeded"),
    ("macro.test", "192.0.2.9", "pass", None),
    ("macro.test", "192.0.2.10", "fail", None),
    ("nospf.test", "192.0.2.7", "none", "no SPF records found for nospf.test"),
    ("nx.test", "192.0.2.7", "none", "domain nx.test not found"),
    ("twice.test", "192.0.2.7", "permerror", None),
    ("bad.test", "192.0.2.7", "permerror", None),
    ("servfail.test", "192.0.2.7", "temperror", None),
    ("auth.test", "127.0.0.1", "pass", "matched 'ptr' directive"),
    ("other.test", "127.0.0.1", "fail", "matched '-all' directive"),
    ("v6.test", "2001:db8::5", "pass", "matched 'ip6:2001:db8::/32' directive"),
    ("v6.test", "3001:db8::1", "pass", "matched 'exists:%{ir}.%{v}.v6ok.test' directive"),
    ("v6.test", "3001:db8::2", "fail", "matched '-all' directive"),
    ("v6.test", "192.0.2.7", "fail", "matched '-all' directive"),
    ("tempinc.test", "192.0.2.7", "temperror", None),
]


@pytest.mark.parametrize("domain,ip,want,reason", SPF_CASES,
                         ids=["%s-%s" % (c[0], c[2]) for c in SPF_CASES])
def test_spf_check_host(relay, domain, ip, want, reason):
    f = deliver(relay, {"X-Spf-Domain": domain, "X-Spf-Ip": ip,
                        "X-Spf-Sender": "alice@%s" % domain})
    r = spf_of(f)
    assert r["disposition"] == want, r
    assert r["result"]["method"] == "spf"
    assert r["result"]["result"] == want
    assert r["result"]["props"]["smtp.mailfrom"] == "alice@%s" % domain
    if reason:
        assert r["result"]["reason"] == reason
    serv, res = auth_results(f)
    assert serv == "mx.relay.test"
    assert [m for m, _, _ in res] == ["spf"]
    assert res[0][1] == want


def test_spf_check_msg_uses_the_envelope(relay):
    """check_msg: the MAIL FROM domain, the client address (127.0.0.1) and the EHLO name."""
    f = deliver(relay, {}, sender="carol@local.test")
    r = spf_of(f)
    assert r["disposition"] == "pass", r
    assert r["result"]["props"] == {"smtp.mailfrom": "carol@local.test",
                                    "smtp.helo": "client.test"}
    f = deliver(relay, {}, sender="carol@pass.test")
    assert spf_of(f)["disposition"] == "fail"
    _, res = auth_results(f)
    assert res == [("spf", "fail", {"reason": "matched '-all' directive",
                                    "smtp.helo": "client.test",
                                    "smtp.mailfrom": "carol@pass.test"})]


def test_dkim_pass_dkimpy_rsa(relay):
    f = deliver(relay, {}, sign=("rsa", {"canonicalize": (b"relaxed", b"relaxed")}))
    (d,) = dkim_of(f)
    assert d["result"] == "pass", d
    assert d["props"]["header.d"] == "sign.test"
    assert d["props"]["header.s"] == "rsa"
    assert d["props"]["header.a"] == "rsa-sha256"
    assert len(d["props"]["header.b"]) == 8
    _, res = auth_results(f)
    assert res[0][0] == "dkim" and res[0][1] == "pass"
    assert res[0][2]["header.d"] == "sign.test"
    assert res[0][2]["header.b"] == d["props"]["header.b"]


def test_dkim_pass_dkimpy_ed25519_simple(relay):
    f = deliver(relay, {}, sign=("ed", {"canonicalize": (b"simple", b"simple"),
                                       "signature_algorithm": b"ed25519-sha256"}))
    (d,) = dkim_of(f)
    assert d["result"] == "pass", d
    assert d["props"]["header.a"] == "ed25519-sha256"


@pytest.mark.parametrize("alg", ["rsa", "ed"])
def test_dkim_pass_kumod_signer(relay, alg):
    f = deliver(relay, {"X-Self-Sign": alg}, body="line one  \r\n\r\n\r\n")
    (d,) = dkim_of(f)
    assert d["result"] == "pass", d
    assert d["props"]["header.s"] == alg


def test_dkim_body_tampered_fails(relay):
    f = deliver(relay, {}, sign=("rsa", {}),
                tamper=lambda m: m.replace(b"hello\r\n", b"hellO\r\n"))
    (d,) = dkim_of(f)
    assert d["result"] == "fail", d
    assert d["reason"] == "body hash did not verify"
    _, res = auth_results(f)
    assert res[0][:2] == ("dkim", "fail")


def test_dkim_header_tampered_fails(relay):
    f = deliver(relay, {}, sign=("rsa", {}),
                tamper=lambda m: m.replace(b"Subject: auth", b"Subject: AUTH"))
    (d,) = dkim_of(f)
    assert d["result"] == "fail", d
    assert d["reason"] == "signature did not verify"


def test_dkim_length_tag_honoured(relay):
    """l=: text appended after signing is outside the signed body."""
    f = deliver(relay, {}, sign=("rsa", {"length": True}),
                tamper=lambda m: m + b"appended by a list\r\n")
    (d,) = dkim_of(f)
    assert d["result"] == "pass", d
    # a body cut below l= fails
    f = deliver(relay, {}, body="hello\r\nsecond line\r\n", sign=("rsa", {"length": True}),
                tamper=lambda m: m.replace(b"second line\r\n", b""))
    (d,) = dkim_of(f)
    assert d["result"] == "fail", d
    assert d["reason"].startswith("body shorter than l="), d


def test_dkim_key_missing_revoked_and_temperror(relay):
    for sel, want, reason in (("missing", "permerror", "no key for signature"),
                              ("revoked", "permerror", "key revoked"),
                              ("sf", "temperror", "key unavailable")):
        f = deliver(relay, {}, sign=("rsa", {}),
                    tamper=lambda m, s=sel: m.replace(b"s=rsa;", b"s=%s;" % s.encode(), 1))
        (d,) = dkim_of(f)
        assert d["result"] == want, (sel, d)
        assert d["reason"].startswith(reason), (sel, d)
        assert d["props"]["header.s"] == sel


def test_no_signature_is_an_empty_list(relay):
    f = deliver(relay, {"X-Spf-Domain": "pass.test", "X-Spf-Ip": "192.0.2.1"})
    assert len(dkim_of(f)) == 0  # an empty Lua table: kumo.json_encode writes {}
    _, res = auth_results(f)
    assert [m for m, _, _ in res] == ["spf"]


def test_spf_server_down_is_temperror(kumod, tmp_path):
    """A name server that does not answer (a closed loopback port): temperror, not none."""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    dead = "127.0.0.1:%d" % s.getsockname()[1]
    s.close()
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    rsa, ed = keys(tmp_path)
    relay = kumod(POLICY.format(dns=dead, var=tmp_path / "var", sink_port=sink.smtp_port,
                                rsa=rsa, ed=ed), policy_name="relay.lua")
    f = deliver({"relay": relay, "capture": capture, "rsa": rsa, "ed": ed},
                {"X-Spf-Domain": "pass.test", "X-Spf-Ip": "192.0.2.7"})
    r = spf_of(f)
    assert r["disposition"] == "temperror", r
    assert r["result"]["reason"].startswith("error looking up TXT for pass.test")


def test_policy_extras_mail_auth(relay):
    """require 'policy-extras.mail_auth' with no LUA_PATH: check() refuses to run with
    DMARC and ARC on (not implemented here), runs DKIM, SPF, iprev and auth with them off
    and adds the Authentication-Results field under server_id."""
    f = deliver(relay, {"X-Mail-Auth": "1"}, sign=("rsa", {}), sender="carol@local.test")
    err = f["x-default-error"][0]
    assert err.startswith("false ") and "DMARC check is not implemented in kumod" in err
    r = json.loads(f["x-check-json"][0])
    assert [d["result"] for d in r["dkim"]] == ["pass"]
    assert r["spf"]["result"] == "pass"
    assert r["iprev"]["result"] == "pass", r["iprev"]
    assert r["iprev"]["props"]["smtp.remote-ip"] == "127.0.0.1"
    assert r["smtp_auth"]["result"] == "none"
    assert "dmarc" not in r and "arc" not in r
    serv, res = auth_results(f)
    assert serv == "auth.example"
    assert [(m, v) for m, v, _ in res] == [("dkim", "pass"), ("spf", "pass"),
                                          ("iprev", "pass"), ("auth", "none")]


def test_checks_are_traced_and_on_the_timeline(relay):
    """check_msg and dkim_verify are state transitions: a DEBUG trace line each
    (kumod::spf spf_check, kumod::dkim dkim_verify) and an entry on the message's
    timeline, which the Delivery record carries (KUMOD_MESSAGE_TIMELINE_LOG=1)."""
    sender = "tl%d@local.test" % time.monotonic_ns()
    deliver(relay, {}, sign=("rsa", {}), sender=sender)

    def delivered():
        recs = [r for r in records(relay["tmp"] / "var" / "logs")
                if r["type"] == "Delivery" and r["sender"] == sender]
        return recs or None

    recs = wait_until(delivered, timeout=20)
    assert recs, "no Delivery record for " + sender
    tl = [(e["event"], e["detail"]) for e in recs[0]["timeline"]]
    assert ("DKIM", "pass d=sign.test s=rsa") in tl, tl
    spf = [d for ev, d in tl if ev == "SPF"]
    assert spf == ["pass for local.test from 127.0.0.1: matched 'ip4:127.0.0.0/8' directive"]
    lines = relay["relay"].stderr()
    assert "checked id=%s domain=local.test ip=127.0.0.1 result=pass" % recs[0]["id"] in lines
    assert "verified id=%s d=sign.test s=rsa result=pass" % recs[0]["id"] in lines
    # each evaluation is a task whose phase names the lookup it waits for
    assert re.search(r'phase id=\d+ kind="spf_check" phase="record" wait="dns"', lines)
    assert re.search(r'phase id=\d+ kind="spf_check" phase="Done" wait=""', lines)
    assert re.search(r'phase id=\d+ kind="dkim_verify" phase="key" wait="dns"', lines)


def test_spf_check_host_with_conn_meta_at_ehlo(relay):
    """kumo.spf.check_host(domain, conn_meta) in smtp_server_ehlo, as KumoMTA's reference
    shows it: the client (127.0.0.1) passes for local.test and fails for pass.test."""
    port = relay["relay"].smtp_port
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
        code, text = s.ehlo("spf-local.test")
        assert code == 250, text
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
        code, text = s.ehlo("spf-pass.test")
        assert code == 550
        assert text.decode() == "spf fail: matched '-all' directive"
