# SPDX-License-Identifier: Apache-2.0
"""More KumoMTA policy API: kumo.dns lookups (lookup_mx, lookup_addr, lookup_txt, lookup_ptr,
rbl_lookup, ptr_host, reverse_ip) against the loopback DNS server of test_dns.py (dnslib,
its zone extended here), and the refusals of names kumod does not implement.

The policy's smtp_server_message_received handler (an event that may wait) runs one
scenario named by the message's Subject and reports its result in the 550 reply text as
`RESULT <json>` or `ERROR <message>`, which the test parses. Query counts are taken at the
DNS server, so "cached" means "never reached the server"."""

import ipaddress
import os
import json
import re
import smtplib
import subprocess

import pytest
from dnslib import PTR, QTYPE, RR, TXT

import test_dns
from test_dns import DnsServer, a

# ::1 under bl.test, as rbl_lookup asks for it
V6_RBL = ipaddress.ip_address("::1").reverse_pointer.replace(".ip6.arpa", ".bl.test")

test_dns.ZONE.update({
    "txt.test": [RR("txt.test", QTYPE.TXT, rdata=TXT("v=spf1 -all"), ttl=300),
                 RR("txt.test", QTYPE.TXT, rdata=TXT(["part one, ", "part two"]), ttl=300)],
    "1.0.0.127.in-addr.arpa": [RR("1.0.0.127.in-addr.arpa", QTYPE.PTR,
                                  rdata=PTR("localhost.test"), ttl=300)],
    "2.0.0.127.bl.test": [a("2.0.0.127.bl.test", "127.0.0.2"),
                          RR("2.0.0.127.bl.test", QTYPE.TXT,
                             rdata=TXT("Blocked - see https://bl.test/?127.0.0.2"), ttl=300)],
    "4.0.0.127.bl.test": [a("4.0.0.127.bl.test", "127.0.0.4")],
    V6_RBL: [a(V6_RBL, "127.0.0.3")],
})


@pytest.fixture(scope="module")
def dns():
    srv = DnsServer()
    yield srv
    srv.stop()


POLICY = r"""
kumo.on('init', function()
  kumo.dns.configure_resolver { name_servers = { os.getenv 'DNS' } }
  kumo.start_esmtp_listener { listen = '127.0.0.1:0' }
end)
local function flat_mx(mx)
  -- by_pref has integer keys: report it as a sorted list of {pref, hosts}
  local prefs = {}
  for pref, hosts in pairs(mx.by_pref) do
    table.insert(prefs, { pref = pref, hosts = hosts })
  end
  table.sort(prefs, function(x, y) return x.pref < y.pref end)
  mx.by_pref = prefs
  return mx
end
local function rbl(...)
  local ip, reason = kumo.dns.rbl_lookup(...)
  return { ip = ip or 'nil', reason = reason or 'nil' }
end
local SCEN = {
  mx = function() return flat_mx(kumo.dns.lookup_mx 'two.test') end,
  mx_gmail = function()
    local mx = kumo.dns.lookup_mx 'GMAIL.test.'
    return { domain_name = mx.domain_name, hosts = mx.hosts, site_name = mx.site_name }
  end,
  mx_implicit = function() return flat_mx(kumo.dns.lookup_mx 'implicit.test') end,
  mx_null = function() return flat_mx(kumo.dns.lookup_mx 'nullmx.test') end,
  mx_literal = function() return flat_mx(kumo.dns.lookup_mx '[127.0.0.1]') end,
  mx_nx = function() return kumo.dns.lookup_mx 'nx.test' end,
  mx_servfail = function() return kumo.dns.lookup_mx 'servfail.test' end,
  mx_named = function() return kumo.dns.lookup_mx('two.test', 'my_resolver') end,
  mx_bad = function() return kumo.dns.lookup_mx 'bad..name' end,
  addr = function() return kumo.dns.lookup_addr 'mx1.two.test' end,
  addr_v6 = function() return kumo.dns.lookup_addr('mx1.two.test', nil, 'Ipv6Only') end,
  addr_v6_then_v4 = function()
    return kumo.dns.lookup_addr('mx2.two.test', nil, 'Ipv6ThenIpv4')
  end,
  addr_literal = function() return kumo.dns.lookup_addr '[IPv6:::1]' end,
  addr_bad_strategy = function() return kumo.dns.lookup_addr('mx1.two.test', nil, 'V4') end,
  addr_nx = function() return kumo.dns.lookup_addr 'nx.test' end,
  txt = function() return kumo.dns.lookup_txt 'txt.test' end,
  txt_twice = function()
    return { kumo.dns.lookup_txt 'txt.test', kumo.dns.lookup_txt 'txt.test' }
  end,
  txt_nx = function() return { n = #kumo.dns.lookup_txt 'nx.test' } end,
  txt_servfail = function() return kumo.dns.lookup_txt 'servfail.test' end,
  ptr = function() return kumo.dns.lookup_ptr '127.0.0.1' end,
  ptr_none = function() return { n = #kumo.dns.lookup_ptr '127.0.0.9' } end,
  ptr_bad = function() return kumo.dns.lookup_ptr 'localhost' end,
  rbl_listed = function() return rbl('127.0.0.2:25', 'bl.test') end,
  rbl_no_txt = function() return rbl('127.0.0.4', 'bl.test.') end,
  rbl_v6 = function() return rbl('[::1]:25', 'bl.test') end,
  rbl_unlisted = function() return rbl('127.0.0.3', 'bl.test') end,
  rbl_bad = function() return rbl('not-an-ip', 'bl.test') end,
  normalize = function()
    return {
      gmail = kumo.string.normalize_smtp_response(
        '550 5.1.1 The email account that you tried to reach does not exist. Please '
          .. 'try double-checking the recipient\'s email address for typos or unnecessary '
          .. 'spaces. For more information, go to  '
          .. 'https://support.google.com/mail/?p=NoSuchUser '
          .. '41be03b00d2f7-b93bf44f0c0si6882731a12.803 - gsmtp'
      ),
      mixed = kumo.string.normalize_smtp_response(
        '421 4.7.0 [10.0.0.1] rate limited for some.body@gmail.com until '
          .. '2025-11-06T17:11:34Z retry in 5h 30m id=10aa5da5-3f3b-4176-beb9-32875830f082'
      ),
    }
  end,
  delay_outside = function(msg)
    return kumo.make_throttle('outside', '1/h'):delay_message_if_throttled(msg)
  end,
  registrars = function()
    return {
      received = kumo.get_event_registrars 'smtp_server_message_received',
      none = kumo.get_event_registrars 'get_egress_pool' == nil,
      globs = #kumo.eval_config_monitor_globs(),
    }
  end,
  invoke = function()
    local cfg = kumo.invoke_get_egress_path_config('a.test', 'src1', 'mx.a.test.')
    kumo.make_egress_path(cfg) -- the result is accepted again as it is
    return cfg
  end,
  invoke_loop = function()
    local ok, e = pcall(kumo.invoke_get_egress_path_config, 'loop.test', 'src1', 'x')
    local _, levels = tostring(e):gsub('kumo.invoke_get_egress_path_config: ', '')
    return { ok = ok, deep = tostring(e):find('nested 8 deep', 1, true) ~= nil,
             levels = levels }
  end,
  invoke_fail = function()
    return kumo.invoke_get_egress_path_config('fail.test', 'src1', 'x')
  end,
  pure = function()
    return {
      ptr4 = kumo.dns.ptr_host '127.0.0.1',
      ptr6 = kumo.dns.ptr_host '::1',
      rev4 = kumo.dns.reverse_ip '192.0.2.10',
      rev6 = kumo.dns.reverse_ip '2001:db8::1',
    }
  end,
}
kumo.on('get_egress_path_config', function(domain, source, site)
  if domain == 'loop.test' then
    return kumo.invoke_get_egress_path_config(domain, source, site)
  end
  if domain == 'fail.test' then
    error 'no config for fail.test'
  end
  return kumo.make_egress_path {
    connection_limit = 4,
    connect_timeout = '2 minutes',
    data_timeout = '1500ms',
    enable_tls = 'Disabled',
    prohibited_hosts = { '127.0.0.0/8' },
    ehlo_domain = domain .. '.' .. source .. '.' .. site,
  }
end)
kumo.on('smtp_server_data_command', function(conn_meta)
  if conn_meta:get_meta 'ehlo_domain' == 'sync.test' then
    kumo.dns.lookup_txt 'txt.test'
  end
end)
kumo.on('smtp_server_message_received', function(msg)
  local what = msg:get_first_named_header_value 'Subject'
  local ok, res = pcall(SCEN[what], msg)
  if ok then
    kumo.reject(550, 'RESULT ' .. kumo.json_encode(res))
  end
  kumo.reject(550, 'ERROR ' .. tostring(res))
end)
"""


def scenario(port, name, timeout=20):
    """Sends one message with Subject name; returns ('RESULT', value) or ('ERROR', text)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as s:
        s.ehlo("test")
        try:
            s.sendmail("a@example.com", ["b@example.com"], f"Subject: {name}\r\n\r\nbody\r\n")
        except smtplib.SMTPDataError as e:
            assert e.smtp_code == 550, e
            text = e.smtp_error.decode().replace("\n", "")  # a long reply is wrapped
            kind, _, rest = text.partition(" ")
            return (kind, json.loads(rest) if kind == "RESULT" else rest)
    return ("ACCEPTED", None)


@pytest.fixture
def k(kumod, dns):
    return kumod(POLICY, env={"DNS": dns.server})


def result(port, name):
    kind, res = scenario(port, name)
    assert kind == "RESULT", (name, res)
    return res


def error(port, name):
    kind, res = scenario(port, name)
    assert kind == "ERROR", (name, res)
    return res


def test_lookup_mx(k, dns):
    m = dns.mark()
    mx = result(k.smtp_port, "mx")
    assert mx["domain_name"] == "two.test."
    assert mx["hosts"] == ["mx1.two.test.", "mx2.two.test."]
    assert mx["by_pref"] == [{"pref": 10, "hosts": ["mx1.two.test."]},
                             {"pref": 20, "hosts": ["mx2.two.test."]}]
    assert mx["site_name"] == "(mx1|mx2).two.test."
    assert mx["is_mx"] is True and mx["is_domain_literal"] is False
    assert mx["is_secure"] is False and mx["mta_sts"] == "None"
    # MX records only: KumoMTA's lookup_mx resolves no host addresses
    assert dns.count(m, "two.test", "MX") == 1
    assert dns.count(m, "mx1.two.test") == 0

    g = result(k.smtp_port, "mx_gmail")
    assert g["domain_name"] == "gmail.test."
    assert g["hosts"] == [h + "." for h in test_dns.GMAIL]
    assert g["site_name"] == "(alt1|alt2|alt3|alt4)?.gmail-smtp-in.l.google.test."


def test_lookup_mx_implicit_null_and_literal(k):
    imp = result(k.smtp_port, "mx_implicit")
    assert imp["is_mx"] is False
    assert imp["hosts"] == ["implicit.test."]
    assert imp["by_pref"] == [{"pref": 1, "hosts": ["implicit.test."]}]

    null = result(k.smtp_port, "mx_null")  # reported as it is, as KumoMTA does
    assert null["by_pref"] == [{"pref": 0, "hosts": ["."]}] and null["is_mx"] is True

    lit = result(k.smtp_port, "mx_literal")
    assert lit["domain_name"] == "[127.0.0.1]"
    assert lit["hosts"] == ["127.0.0.1"] and lit["site_name"] == "127.0.0.1"
    assert lit["is_domain_literal"] is True and lit["is_mx"] is False
    assert lit["by_pref"] == [{"pref": 1, "hosts": ["127.0.0.1"]}]


def test_lookup_mx_errors(k):
    assert "kumo.dns.lookup_mx: nx.test: no such domain (NXDOMAIN)" in error(k.smtp_port,
                                                                             "mx_nx")
    assert "kumo.dns.lookup_mx: MX lookup for servfail.test failed" in error(k.smtp_port,
                                                                            "mx_servfail")
    assert ("kumo.dns.lookup_mx: no resolver named 'my_resolver' (define it with "
            "kumo.dns.define_resolver)") in error(k.smtp_port, "mx_named")
    assert "kumo.dns.lookup_mx: invalid domain name 'bad..name'" in error(k.smtp_port,
                                                                          "mx_bad")


def test_lookup_addr(k):
    assert result(k.smtp_port, "addr") == ["127.0.0.11", "::1"]
    assert result(k.smtp_port, "addr_v6") == ["::1"]
    assert result(k.smtp_port, "addr_v6_then_v4") == ["127.0.0.12"]
    assert result(k.smtp_port, "addr_literal") == ["::1"]
    assert "unknown ip lookup strategy 'V4'" in error(k.smtp_port, "addr_bad_strategy")
    assert "kumo.dns.lookup_addr: nx.test: no such host (NXDOMAIN)" in error(k.smtp_port,
                                                                             "addr_nx")


def test_lookup_txt_and_cache(k, dns):
    m = dns.mark()
    assert result(k.smtp_port, "txt") == ["v=spf1 -all", "part one, part two"]
    assert result(k.smtp_port, "txt_twice") == [["v=spf1 -all", "part one, part two"]] * 2
    assert dns.count(m, "txt.test", "TXT") == 1  # the others came from the cache
    # NXDOMAIN: an empty list, as KumoMTA's resolver returns
    assert result(k.smtp_port, "txt_nx") == {"n": 0}
    assert "kumo.dns.lookup_txt: TXT lookup for servfail.test failed" in error(
        k.smtp_port, "txt_servfail")


def test_lookup_ptr(k):
    assert result(k.smtp_port, "ptr") == ["localhost.test."]
    assert result(k.smtp_port, "ptr_none") == {"n": 0}
    assert "kumo.dns.lookup_ptr: 'localhost' is not an IP address" in error(k.smtp_port,
                                                                            "ptr_bad")


def test_rbl_lookup(k, dns):
    m = dns.mark()
    listed = result(k.smtp_port, "rbl_listed")
    assert listed == {"ip": "127.0.0.2", "reason": "Blocked - see https://bl.test/?127.0.0.2"}
    assert dns.count(m, "2.0.0.127.bl.test", "A") == 1
    assert dns.count(m, "2.0.0.127.bl.test", "TXT") == 1
    assert result(k.smtp_port, "rbl_no_txt") == {"ip": "127.0.0.4", "reason": "nil"}
    assert result(k.smtp_port, "rbl_v6") == {"ip": "127.0.0.3", "reason": "nil"}
    assert result(k.smtp_port, "rbl_unlisted") == {"ip": "nil", "reason": "nil"}
    assert "kumo.dns.rbl_lookup: not-an-ip is not a valid IpAddr or SocketAddr" in error(
        k.smtp_port, "rbl_bad")


def test_get_event_registrars_and_config_monitor_globs(k):
    res = result(k.smtp_port, "registrars")
    line = next(i for i, text in enumerate(POLICY.split("\n"), 1)
                if text.startswith("kumo.on('smtp_server_message_received'"))
    assert len(res["received"]) == 1  # one registration, its call stack
    frame = res["received"][0][0]
    assert frame.endswith("policy.lua:%d" % line), frame
    assert res["none"] is True
    assert res["globs"] == 0  # kumod monitors no configuration file


def test_invoke_get_egress_path_config(k):
    cfg = result(k.smtp_port, "invoke")
    assert cfg == {"connection_limit": 4, "connect_timeout": "120s", "data_timeout": "1500ms",
                   "enable_tls": "Disabled", "prohibited_hosts": ["127.0.0.0/8"],
                   "ehlo_domain": "a.test.src1.mx.a.test."}
    # a handler invoking itself: refused at depth 8, each level's error wraps the next
    assert result(k.smtp_port, "invoke_loop") == {"ok": False, "deep": True, "levels": 9}
    err = error(k.smtp_port, "invoke_fail")
    assert "kumo.invoke_get_egress_path_config:" in err and "no config for fail.test" in err


def test_ptr_host_and_reverse_ip(k):
    res = result(k.smtp_port, "pure")
    assert res["ptr4"] == "1.0.0.127.in-addr.arpa"
    assert res["ptr6"] == ipaddress.ip_address("::1").reverse_pointer
    assert res["rev4"] == "10.2.0.192"
    assert res["rev6"] + ".ip6.arpa" == ipaddress.ip_address("2001:db8::1").reverse_pointer


def test_lookup_in_synchronous_event_is_refused(k):
    """smtp_server_data_command runs synchronously: a lookup there fails the command
    (451) with the reason naming the function and the event."""
    with smtplib.SMTP("127.0.0.1", k.smtp_port, timeout=10) as s:
        assert s.ehlo("sync.test")[0] == 250
        assert s.mail("a@example.com")[0] == 250
        assert s.rcpt("b@example.com")[0] == 250
        code, _ = s.docmd("DATA")
        assert code == 451
    k.wait_for("kumo.dns.lookup_txt: cannot wait for I/O in event 'smtp_server_data_command'")


def test_normalize_smtp_response(k):
    """With Debian's word list (wamerican): KumoMTA's documented example, and one of each
    token."""
    res = result(k.smtp_port, "normalize")
    assert res["gmail"] == (
        "550 5.1.1 The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address for typos or unnecessary spaces. For "
        "more information, go to https://support.google.com/mail/?p=NoSuchUser {hash} - gsmtp")
    assert res["mixed"] == ("421 4.7.0 {ipaddr} rate limited for {email} until {timestamp} "
                            "retry in {duration} id={uuid}")


def test_normalize_smtp_response_without_word_list(kumod, dns, tmp_path):
    missing = tmp_path / "no-words"
    k = kumod(POLICY, env={"DNS": dns.server, "KUMOD_WORDS_FILE": str(missing)})
    err = error(k.smtp_port, "normalize")
    assert ("kumo.string.normalize_smtp_response: needs the word list %s (Debian package "
            "wamerican, or $KUMOD_WORDS_FILE): No such file or directory" % missing) in err


def test_normalize_smtp_response_with_compressed_word_list(kumod, dns, tmp_path):
    """The container image ships the list zstd-compressed (KUMOD_WORDS_FILE=...zst): the
    same results; a .zst that is not a zstd frame is refused naming the file."""
    words = tmp_path / "words.zst"
    subprocess.run(["zstd", "-q", "-19", "-o", str(words), os.path.realpath("/usr/share/dict/words")],
                   check=True)
    k = kumod(POLICY, env={"DNS": dns.server, "KUMOD_WORDS_FILE": str(words)})
    res = result(k.smtp_port, "normalize")
    assert res["mixed"] == ("421 4.7.0 {ipaddr} rate limited for {email} until {timestamp} "
                            "retry in {duration} id={uuid}")
    assert res["gmail"].endswith("https://support.google.com/mail/?p=NoSuchUser {hash} - gsmtp")
    k.stop()
    bad = tmp_path / "bad.zst"
    bad.write_bytes(b"not a zstd frame\n")
    k = kumod(POLICY, env={"DNS": dns.server, "KUMOD_WORDS_FILE": str(bad)})
    err = error(k.smtp_port, "normalize")
    assert ("kumo.string.normalize_smtp_response: the word list %s is not a zstd frame of at "
            "most %d bytes" % (bad, 64 << 20)) in err


# --- throttle_insert_ready_queue ------------------------------------------------------

THROTTLE_LUA = r"""
kumo.on('throttle_insert_ready_queue', function(msg)
  if msg:get_first_named_header_value 'Subject' == 'boom' then
    error 'throttle check exploded'
  end
  local t = kumo.make_throttle('test-tenant-limit', '1/h')
  if t:delay_message_if_throttled(msg) then
    return
  end
end)
kumo.on('throttle_insert_ready_queue', function(msg)
  kumo.log_info('second handler saw ' .. msg:id())
end)
"""

DELAY_RE = re.compile(r"id=\"?([0-9a-f]+)\"? queue=\S+ delayed (\d+)ms by throttle_insert_ready_queue")


def test_throttle_insert_ready_queue(kumod, tmp_path):
    """A 1/h throttle in throttle_insert_ready_queue: the first message is delivered, the
    next two go back to their scheduled queue for about an hour (the second handler never
    sees them); a handler error holds the message instead of routing it."""
    from test_relay import RELAY_POLICY, captured, records, send, sink_start, wait_until

    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    var = tmp_path / "var"
    policy = RELAY_POLICY.format(var=var, mx_list="'127.0.0.1:%d'" % sink.smtp_port,
                                 retry="1s", max_age="2h", flush="true") + THROTTLE_LUA
    relay = kumod(policy, policy_name="relay.lua",
                  env={"KUMOD_LOG": "kumod=info,kumod::queue=debug,lua=info,"
                                     "kumo_server_common=info"})
    for i in range(3):
        _, refused = send(relay.smtp_port, ["user%d@example.com" % i], "hello %d\r\n" % i)
        assert refused == {}
    delays = wait_until(lambda: DELAY_RE.findall(relay.stderr()) if len(
        DELAY_RE.findall(relay.stderr())) >= 2 else None)
    assert delays and len(delays) == 2, relay.stderr()
    for _, ms in delays:
        assert 3_500_000 <= int(ms) <= 3_600_000  # the throttle's retry_after: about 1 h
    assert wait_until(lambda: len(captured(capture)) >= 1), relay.stderr()

    def delayed():
        recs = [r for r in records(var / "logs") if r["type"] == "Delayed"]
        return recs if len(recs) >= 2 else None

    recs = wait_until(delayed) or []
    assert sorted(r["id"] for r in recs) == sorted(i for i, _ in delays)
    for r in recs:
        assert r["response"]["code"] == 451
        assert r["response"]["enhanced_code"] == {"class": 4, "subject": 4, "detail": 4}
        assert "throttle_insert_ready_queue event throttled message rate" in \
            r["response"]["content"]
    seen = re.findall(r"second handler saw ([0-9a-f]+)", relay.stderr())
    assert len(seen) == 1 and seen[0] not in {i for i, _ in delays}

    _, refused = send(relay.smtp_port, ["boom@example.com"], "x\r\n", subject="boom")
    assert refused == {}
    relay.wait_for("throttle_insert_ready_queue failed")
    assert "throttle check exploded" in relay.stderr()
    assert len(captured(capture)) == 1  # neither the delayed ones nor the failed one


def test_delay_message_outside_throttle_event(k):
    assert ("throttle:delay_message_if_throttled(): kumod can delay a message only in a "
            "throttle_insert_ready_queue handler") in error(k.smtp_port, "delay_outside")
