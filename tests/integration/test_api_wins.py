# SPDX-License-Identifier: Apache-2.0
"""KumoMTA names added for issue 16: require 'kumo.string' / 'kumo.regex', kumo.version,
kumo.fs.* (glob, uncached_glob, read_dir, metadata_for_path, symlink_metadata_for_path)
and the deprecated kumo.glob/uncached_glob/read_dir, kumo.dns.set_mx_negative_cache_ttl,
msg:set_due, kumo.sleep / kumo.time.sleep. Each runs in a real kumod with a policy; results
come back as JSON written by the policy, SMTP replies, DNS queries counted by a loopback
server, or log records."""

import datetime
import email.utils
import json
import os
import smtplib
import socket
import subprocess
import threading
import time

import pytest

from conftest import KUMOD_BIN
from test_dns import DnsServer
from test_relay import SINK_LUA, wait_until
from test_scheduling import by_type, iso, records, ts

# --- modules, version, file system ------------------------------------------------------

FS_POLICY = r"""
local kumo = require 'kumo'
local out = {}
local d = os.getenv 'FS_DIR'
local function err(f, ...)
  local ok, e = pcall(f, ...)
  return ok and 'no error' or tostring(e)
end
out.string_same = rawequal(require 'kumo.string', kumo.string)
out.regex_same = rawequal(require 'kumo.regex', kumo.regex)
out.split = require('kumo.string').split('a,b,c', ',')
out.regex_match = require('kumo.regex').compile('^b+$'):is_match('bbb')
out.version = kumo.version

out.glob_abs = kumo.fs.glob(d .. '/*.conf')
out.glob_rel = kumo.glob('*.conf', d)
out.glob_brace = kumo.fs.uncached_glob('{a,c}.*', d)
out.glob_missing = kumo.fs.glob('/nonexistent-kumod-dir/*')
out.glob_recursive = err(kumo.fs.glob, '**/*.conf', d)
-- cached for the default 60 s: a new file is not seen by glob, it is by uncached_glob
out.cached_before = kumo.fs.glob('*.conf', d)
local f = assert(io.open(d .. '/new.conf', 'w'))
f:write 'x'
f:close()
out.cached_after = kumo.fs.glob('*.conf', d)
out.uncached_after = kumo.uncached_glob('*.conf', d)
-- ttl_seconds = 0: not kept
out.ttl0_first = kumo.fs.glob('*.txt', d, 0)
f = assert(io.open(d .. '/z.txt', 'w'))
f:close()
out.ttl0_second = kumo.fs.glob('*.txt', d, 0)

out.read_dir = kumo.fs.read_dir(d)
out.read_dir_old = kumo.read_dir(d .. '/sub/')
out.read_dir_missing = err(kumo.fs.read_dir, d .. '/missing')

local function meta(m)
  return {
    path = m.path, is_file = m.is_file, is_dir = m.is_dir, is_symlink = m.is_symlink,
    len = m.len, size = m.size, readonly = m.readonly, mode = m.mode, ino = m.ino,
    nlink = m.nlink, uid = m.uid, mtime = m.mtime.unix_timestamp,
    mtime_type = tostring(m.mtime):match ' UTC$' ~= nil,
  }
end
out.meta_file = meta(kumo.fs.metadata_for_path(d .. '/a.conf'))
out.meta_link = meta(kumo.fs.metadata_for_path(d .. '/link'))
out.lmeta_link = meta(kumo.fs.symlink_metadata_for_path(d .. '/link'))
out.meta_dir = meta(kumo.fs.metadata_for_path(d .. '/sub'))
out.meta_missing = err(kumo.fs.metadata_for_path, d .. '/missing')
out.fs_open = err(function() return kumo.fs.open end)

out.neg_bad = err(kumo.dns.set_mx_negative_cache_ttl, 'soon')
out.neg_type = err(kumo.dns.set_mx_negative_cache_ttl, {})
out.neg_ok = err(kumo.dns.set_mx_negative_cache_ttl, '10m')
out.mx_timeout_bad = err(kumo.dns.set_mx_timeout, -1)
out.mx_timeout_ok = err(kumo.dns.set_mx_timeout, '5s')
out.mx_concurrency = err(kumo.dns.set_mx_concurrency_limit, 0)
out.sleep_main = err(kumo.sleep, 0.01)
out.time_sleep_main = err(kumo.time.sleep, 0.01)
out.sleep_bad = err(kumo.sleep, -1)

local o = assert(io.open(os.getenv 'OUT', 'w'))
o:write(kumo.json_encode(out))
o:close()
kumo.on('init', function()
  kumo.start_esmtp_listener { listen = '127.0.0.1:0' }
end)
"""


@pytest.fixture
def fs_result(kumod, tmp_path):
    d = tmp_path / "fs"
    (d / "sub").mkdir(parents=True)
    (d / "a.conf").write_text("hello world")
    (d / "b.conf").write_text("b")
    (d / "c.txt").write_text("c")
    (d / "sub" / "x.conf").write_text("x")
    os.symlink(d / "a.conf", d / "link")
    out = tmp_path / "out.json"
    k = kumod(FS_POLICY, env={"FS_DIR": str(d), "OUT": str(out)})
    k.stop()
    return d, json.loads(out.read_text())


def test_require_kumo_string_and_regex(fs_result):
    _, r = fs_result
    assert r["string_same"] is True and r["regex_same"] is True
    assert r["split"] == ["a", "b", "c"]
    assert r["regex_match"] is True


def test_version_is_kumods(fs_result):
    _, r = fs_result
    out = subprocess.run([KUMOD_BIN, "--version"], capture_output=True, text=True, timeout=10)
    assert out.stdout.split() == ["kumod", r["version"]]


def test_glob_shapes(fs_result):
    d, r = fs_result
    assert r["glob_abs"] == [str(d / "a.conf"), str(d / "b.conf")]
    assert r["glob_rel"] == ["a.conf", "b.conf"]
    assert r["glob_brace"] == ["a.conf", "c.txt"]
    assert r["glob_missing"] == {}  # an empty table (JSON has no empty-array form here)
    assert r["glob_recursive"].endswith(
        "kumo.fs.glob: '**/*.conf': the recursive '**' of KumoMTA's glob is not "
        "implemented in kumod")


def test_glob_cache(fs_result):
    _, r = fs_result
    assert r["cached_before"] == ["a.conf", "b.conf"]
    assert r["cached_after"] == ["a.conf", "b.conf"]  # within the TTL: the cached list
    assert r["uncached_after"] == ["a.conf", "b.conf", "new.conf"]
    assert r["ttl0_first"] == ["c.txt"]
    assert r["ttl0_second"] == ["c.txt", "z.txt"]


def test_read_dir(fs_result):
    d, r = fs_result
    assert r["read_dir"] == sorted(str(d / n) for n in
                                   ("a.conf", "b.conf", "c.txt", "link", "sub", "new.conf",
                                    "z.txt"))
    assert r["read_dir_old"] == [str(d / "sub" / "x.conf")]
    assert r["read_dir_missing"].endswith(
        "kumo.fs.read_dir: %s: No such file or directory" % (d / "missing"))


def test_metadata(fs_result):
    d, r = fs_result
    st = os.stat(d / "a.conf")
    m = r["meta_file"]
    assert m["path"] == str(d / "a.conf")
    assert (m["is_file"], m["is_dir"], m["is_symlink"]) == (True, False, False)
    assert m["len"] == m["size"] == 11
    assert m["mode"] == st.st_mode and m["ino"] == st.st_ino and m["nlink"] == st.st_nlink
    assert m["uid"] == st.st_uid and m["readonly"] is False
    assert m["mtime"] == int(st.st_mtime) and m["mtime_type"] is True
    # metadata_for_path follows the link; symlink_metadata_for_path does not
    assert (r["meta_link"]["is_file"], r["meta_link"]["is_symlink"]) == (True, False)
    assert r["meta_link"]["ino"] == st.st_ino
    lst = os.lstat(d / "link")
    assert (r["lmeta_link"]["is_file"], r["lmeta_link"]["is_symlink"]) == (False, True)
    assert r["lmeta_link"]["ino"] == lst.st_ino and r["lmeta_link"]["len"] == lst.st_size
    assert r["meta_dir"]["is_dir"] is True and r["meta_dir"]["is_file"] is False
    assert r["meta_missing"].endswith(
        "kumo.fs.metadata_for_path: %s: No such file or directory" % (d / "missing"))
    assert r["fs_open"] == "no error"  # implemented: test_api_misc.py


def test_dns_knob_arguments_and_refusals(fs_result):
    _, r = fs_result
    assert r["neg_ok"] == "no error"
    assert r["neg_bad"].endswith("kumo.dns.set_mx_negative_cache_ttl: invalid duration 'soon'")
    assert r["neg_type"].endswith(
        "kumo.dns.set_mx_negative_cache_ttl: expected a duration (seconds or text like "
        "\"5m\"), got table")
    assert r["mx_timeout_ok"] == "no error"
    assert r["mx_timeout_bad"].endswith(
        "kumo.dns.set_mx_timeout: duration must be between 0 and 4e9 seconds")
    assert r["mx_concurrency"].endswith(  # implemented: test_api_misc.py
        "kumo.dns.set_mx_concurrency_limit: limit must be between 1 and 1000000, got 0")


def test_sleep_refused_where_it_cannot_wait(fs_result):
    _, r = fs_result
    assert "kumo.sleep: cannot wait for I/O in event 'policy'" in r["sleep_main"]
    assert "kumo.time.sleep: cannot wait for I/O in event 'policy'" in \
        r["time_sleep_main"]
    assert r["sleep_bad"].endswith("kumo.sleep: seconds must be between 0 and one year")


# --- kumo.dns.set_mx_negative_cache_ttl: its effect on the resolver's cache --------------

DNS_POLICY = r"""
kumo.on('init', function()
  kumo.dns.configure_resolver { name_servers = { os.getenv 'DNS' } }
  local ttl = os.getenv 'NEG_TTL'
  if ttl ~= '' then
    kumo.dns.set_mx_negative_cache_ttl(ttl)
  end
  kumo.start_esmtp_listener { listen = '127.0.0.1:0' }
end)
kumo.on('smtp_server_mail_from', function(sender)
  for _ = 1, 2 do
    local ok, e = pcall(kumo.dns.lookup_mx, 'nx.test')
    assert(not ok and e:match 'nx.test', tostring(e))
  end
  kumo.reject(550, '5.7.1 looked up twice')
end)
"""


@pytest.fixture
def dns():
    srv = DnsServer()
    yield srv
    srv.stop()


@pytest.mark.parametrize("neg_ttl,queries", [("", 1), ("0s", 2), ("1500ms", 1)])
def test_negative_cache_ttl_controls_caching(kumod, dns, neg_ttl, queries):
    k = kumod(DNS_POLICY, env={"DNS": dns.server, "NEG_TTL": neg_ttl})
    m = dns.mark()
    with smtplib.SMTP("127.0.0.1", k.smtp_port, timeout=15) as s:
        s.ehlo("client.test")
        code, text = s.mail("someone@example.com")
    assert (code, text) == (550, b"5.7.1 looked up twice")
    # NXDOMAIN (SOA minimum 45 s): cached unless the negative TTL is 0
    assert dns.count(m, "nx.test", "MX") == queries


MX_TIMEOUT_POLICY = """
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.dns.configure_resolver { name_servers = { os.getenv 'DNS' } }
  kumo.dns.set_mx_timeout '1s'
  kumo.define_spool{ name = 'data', path = '%(var)s/spool/data' }
  kumo.define_spool{ name = 'meta', path = '%(var)s/spool/meta' }
  kumo.configure_local_logs{ log_dir = '%(var)s/logs', compression_level = 'none' }
  kumo.start_esmtp_listener{ listen = '127.0.0.1:0', relay_hosts = { '127.0.0.1' } }
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config{ retry_interval = '1h', max_age = '2h' }
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path{ enable_tls = 'Disabled' }
end)
"""


def test_mx_timeout_limits_the_mx_query(kumod, dns, tmp_path):
    # blackhole.test is never answered: c-ares alone would retry for ~14 s (2 + 4 + 8)
    var = tmp_path / "var"
    k = kumod(MX_TIMEOUT_POLICY % {"var": var}, env={"DNS": dns.server})
    t0 = time.monotonic()
    with smtplib.SMTP("127.0.0.1", k.smtp_port, timeout=15) as s:
        s.sendmail("s@example.com", ["u@blackhole.test"], b"Subject: t\r\n\r\nbody\r\n")
    assert wait_until(lambda: by_type(records(var), "TransientFailure"), timeout=20), k.stderr()
    assert time.monotonic() - t0 >= 1.0
    rec = by_type(records(var), "TransientFailure")[0]
    assert "MX lookup for blackhole.test timed out after 1000ms (set_mx_timeout)" in \
        rec["response"]["content"], rec["response"]


# --- kumo.sleep / kumo.time.sleep in an event that may wait -------------------------------

SLEEP_POLICY = r"""
kumo.on('init', function()
  local ok, e = pcall(kumo.sleep, 0.1)
  kumo.log_error('init sleep: ' .. tostring(e))
  kumo.start_esmtp_listener { listen = '127.0.0.1:0' }
end)
kumo.on('smtp_server_mail_from', function(sender)
  local user = tostring(sender):match '^(.-)@'
  if user == 'sleep' then
    kumo.sleep(2)
    kumo.reject(550, '5.7.1 slept')
  elseif user == 'tsleep' then
    kumo.time.sleep(0.5)
    kumo.time.sleep(0.5)
    kumo.reject(550, '5.7.1 slept twice')
  end
  kumo.reject(550, '5.7.1 awake')
end)
"""


def mail(port, sender, helo="client.test"):
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as s:
        s.ehlo(helo)
        return s.mail(sender)


def test_sleep_waits_without_blocking_others(kumod):
    k = kumod(SLEEP_POLICY)
    done = {}

    def sleeper():
        t0 = time.monotonic()
        done["reply"] = mail(k.smtp_port, "sleep@example.com")
        done["elapsed"] = time.monotonic() - t0

    th = threading.Thread(target=sleeper)
    th.start()
    # another session is served while the first handler sleeps
    assert mail(k.smtp_port, "other@example.com") == (550, b"5.7.1 awake")
    assert "reply" not in done
    th.join(20)
    assert done["reply"] == (550, b"5.7.1 slept")
    assert done["elapsed"] >= 2.0


def test_time_sleep_fractional(kumod):
    k = kumod(SLEEP_POLICY)
    t0 = time.monotonic()
    assert mail(k.smtp_port, "tsleep@example.com") == (550, b"5.7.1 slept twice")
    assert time.monotonic() - t0 >= 1.0


def test_sleep_refused_in_synchronous_event(kumod):
    k = kumod(SLEEP_POLICY)
    line = k.wait_for("init sleep: ")
    assert "init sleep: kumo.sleep: cannot wait for I/O in event 'init': kumod runs it " \
        "synchronously" in line, line


# --- msg:set_due ---------------------------------------------------------------------------

DUE_POLICY = """
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool{ name = 'data', path = '%(var)s/spool/data' }
  kumo.define_spool{ name = 'meta', path = '%(var)s/spool/meta' }
  kumo.configure_local_logs{ log_dir = '%(var)s/logs', compression_level = 'none',
                             meta = { 'due_err' } }
  kumo.start_esmtp_listener{ listen = '127.0.0.1:0', hostname = 'relay.test',
                             relay_hosts = { '127.0.0.1' } }
end)
kumo.on('smtp_server_message_received', function(msg)
  local due = msg:get_first_named_header_value('X-Due')
  if due == 'bad' then
    local ok, e = pcall(msg.set_due, msg, 'tomorrow')
    msg:set_meta('due_err', tostring(e))
  elseif due == 'now' then
    msg:set_due(nil)
  elseif due then
    msg:set_due(due)
  end
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config{
    retry_interval = '1s', max_retry_interval = '1s', max_age = '1h',
    protocol = { smtp = { mx_list = { '127.0.0.1:%(port)d' } } },
  }
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path{ connection_limit = 4, enable_tls = 'Disabled',
                                prohibited_hosts = {}, connect_timeout = '2s' }
end)
"""


@pytest.fixture
def relay(kumod, tmp_path):
    sink = kumod(open(SINK_LUA).read(), policy_name="sink.lua",
                 env={"KUMO_SINK_LISTEN": "127.0.0.1:0",
                      "KUMO_SINK_CAPTURE_DIR": str(tmp_path / "capture")})
    return kumod(DUE_POLICY % {"var": tmp_path / "var", "port": sink.smtp_port},
                 policy_name="relay.lua")


def send(port, rcpt, due):
    msg = ("From: <s@example.com>\r\nTo: <%s>\r\nSubject: due\r\nDate: %s\r\nX-Due: %s\r\n"
           "\r\nbody\r\n" % (rcpt, email.utils.formatdate(), due))
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as s:
        s.ehlo("client.test")
        return s.sendmail("s@example.com", [rcpt], msg.encode())


def test_set_due_delays_first_attempt(relay, tmp_path):
    var = tmp_path / "var"
    due = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + \
        datetime.timedelta(seconds=3)
    send(relay.smtp_port, "later@example.com", iso(due))
    send(relay.smtp_port, "now@example.com", "now")
    send(relay.smtp_port, "bad@example.com", "bad")
    assert wait_until(lambda: len(by_type(records(var), "Delivery")) == 3, timeout=20), \
        relay.stderr()
    recs = records(var)
    deliv = {r["recipient"]: r for r in by_type(recs, "Delivery")}
    recv = {r["recipient"]: r for r in by_type(recs, "Reception")}
    # a lower bound only: not delivered before the due time set at reception
    assert ts(deliv["later@example.com"]) >= due.replace(tzinfo=None), \
        deliv["later@example.com"]["event_time"]
    assert ts(recv["later@example.com"]) < ts(deliv["later@example.com"])
    assert recv["bad@example.com"]["meta"]["due_err"].endswith(
        "msg:set_due: expected nil or an RFC 3339 time, got tomorrow")
