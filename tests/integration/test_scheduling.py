# SPDX-License-Identifier: Apache-2.0
"""Per-message scheduling (msg:set_scheduling, msg:import_scheduling_header)
honoured by the scheduler: the first attempt waits for first_attempt and for
the restriction window, and a scheduled expiry replaces max_age. A relay
delivers to a sink; times are read from the log records."""

import datetime
import email.utils
import glob
import json
import os
import smtplib
import subprocess
import time

import pytest

from test_relay import SINK_LUA, captured, wait_until

POLICY = """
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool{ name = 'data', path = '%(var)s/spool/data' }
  kumo.define_spool{ name = 'meta', path = '%(var)s/spool/meta' }
  kumo.configure_local_logs{ log_dir = '%(var)s/logs', compression_level = 'none',
                             meta = { 'sched_echo' } }
  kumo.start_esmtp_listener{ listen = '127.0.0.1:0', hostname = 'relay.test',
                             relay_hosts = { '127.0.0.1' } }
end)
kumo.on('smtp_server_message_received', function(msg)
  local how = msg:get_first_named_header_value('X-How')
  if how == 'table' then
    local t = msg:set_scheduling(kumo.json_parse(msg:get_first_named_header_value('X-Spec')))
    msg:set_meta('sched_echo', kumo.json_encode(t))
  elseif how == 'header' then
    local t = msg:import_scheduling_header('X-Schedule', true)
    msg:set_meta('sched_echo', t and kumo.json_encode(t) or 'absent')
  elseif how == 'cleared' then
    msg:set_scheduling{ first_attempt = '2099-01-01T00:00:00Z' }
    msg:set_scheduling(nil)
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
    return kumod(POLICY % {"var": tmp_path / "var", "port": sink.smtp_port},
                 policy_name="relay.lua")


def send(port, rcpt, headers):
    extra = "".join("%s: %s\r\n" % kv for kv in headers)
    msg = ("From: <s@example.com>\r\nTo: <%s>\r\nSubject: sched\r\nDate: %s\r\n%s\r\nbody\r\n"
           % (rcpt, email.utils.formatdate(), extra))
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as s:
        s.ehlo("client.test")
        return s.sendmail("s@example.com", [rcpt], msg.encode())


def records(var):
    out = []
    for f in sorted(glob.glob(str(var / "logs" / "*"))):
        for line in open(f, encoding="utf-8").read().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line still being written
            if isinstance(rec, dict):  # a cut line can parse as a number
                out.append(rec)
    return out


def ts(rec):
    return datetime.datetime.fromisoformat(rec["event_time"].replace("Z", "+00:00")[:26])


def iso(dt):
    return dt.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def by_type(recs, t):
    return [r for r in recs if r["type"] == t]


def test_first_attempt_from_table_and_header(relay, tmp_path):
    var = tmp_path / "var"
    first = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + \
        datetime.timedelta(seconds=3)
    spec = json.dumps({"first_attempt": iso(first), "dow": "Mon,Tue,Wed,Thu,Fri,Sat,Sun",
                       "tz": "UTC", "start": "00:00:00", "end": "23:59:59"})
    send(relay.smtp_port, "table@example.com", [("X-How", "table"), ("X-Spec", spec)])
    send(relay.smtp_port, "header@example.com",
         [("X-How", "header"), ("X-Schedule", json.dumps({"first_attempt": iso(first)}))])
    send(relay.smtp_port, "none@example.com", [("X-How", "header")])
    send(relay.smtp_port, "cleared@example.com", [("X-How", "cleared")])
    assert wait_until(lambda: len(by_type(records(var), "Delivery")) == 4, timeout=20), \
        relay.stderr()
    recs = records(var)
    deliv = {r["recipient"]: r for r in by_type(recs, "Delivery")}
    recv = {r["recipient"]: r for r in by_type(recs, "Reception")}
    for who in ("table@example.com", "header@example.com"):
        assert ts(deliv[who]) >= first.replace(tzinfo=None), (who, deliv[who]["event_time"])
    # without a scheduling (absent header, cleared) mail goes at once, before first_attempt
    for who in ("none@example.com", "cleared@example.com"):
        assert ts(deliv[who]) < first.replace(tzinfo=None), (who, deliv[who]["event_time"])
    # the returned table is the canonical form
    echo = json.loads(recv["table@example.com"]["meta"]["sched_echo"])
    assert echo == {"first_attempt": iso(first).replace("Z", ".000Z"),
                    "dow": "Mon,Tue,Wed,Thu,Fri,Sat,Sun", "tz": "UTC",
                    "start": "00:00:00", "end": "23:59:59"}
    assert recv["none@example.com"]["meta"]["sched_echo"] == "absent"
    # remove=true: the scheduling header is not relayed
    bodies = [open(f, "rb").read() for f in captured(tmp_path / "capture")]
    hdr = [b for b in bodies if b"header@example.com" in b]
    assert len(hdr) == 1 and b"X-Schedule" not in hdr[0] and b"X-How: header" in hdr[0]


def test_restriction_window_delays_the_first_attempt(relay, tmp_path):
    var = tmp_path / "var"
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    start = now + datetime.timedelta(seconds=3)
    if start.date() != now.date() or start.hour == 23 and start.minute == 59:
        pytest.skip("too close to midnight UTC for a same-day window")
    day = start.strftime("%a")
    spec = json.dumps({"dow": day, "tz": "UTC", "start": start.strftime("%H:%M:%S"),
                       "end": "23:59:59"})
    send(relay.smtp_port, "window@example.com", [("X-How", "table"), ("X-Spec", spec)])
    assert wait_until(lambda: by_type(records(var), "Delivery"), timeout=20), relay.stderr()
    d = by_type(records(var), "Delivery")[0]
    assert ts(d) >= start.replace(tzinfo=None), d["event_time"]


def test_restriction_window_in_a_time_zone(relay, tmp_path):
    """The window's day and hours are Asia/Kolkata's (+05:30): a start 3 s from now in India
    lets the message go in seconds, where the same hours read as UTC would hold it 5.5 h."""
    var = tmp_path / "var"
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    local = now + datetime.timedelta(hours=5, minutes=30)
    start = local + datetime.timedelta(seconds=3)
    if start.date() != local.date() or (start.hour, start.minute) == (23, 59):
        pytest.skip("too close to midnight in India for a same-day window")
    spec = json.dumps({"dow": start.strftime("%a"), "tz": "Asia/Kolkata",
                       "start": start.strftime("%H:%M:%S"), "end": "23:59:59"})
    send(relay.smtp_port, "window@example.com", [("X-How", "table"), ("X-Spec", spec)])
    assert wait_until(lambda: by_type(records(var), "Delivery"), timeout=20), relay.stderr()
    d = by_type(records(var), "Delivery")[0]
    assert ts(d) >= (start - datetime.timedelta(hours=5, minutes=30)).replace(tzinfo=None), \
        d["event_time"]


def test_scheduled_expiry_replaces_max_age(relay, tmp_path):
    var = tmp_path / "var"
    expires = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + \
        datetime.timedelta(seconds=3)
    send(relay.smtp_port, "tempfail@example.com",
         [("X-How", "header"), ("X-Schedule", json.dumps({"expires": iso(expires)}))])
    assert wait_until(lambda: by_type(records(var), "Expiration"), timeout=20), relay.stderr()
    recs = records(var)
    ex = by_type(recs, "Expiration")
    assert len(ex) == 1
    assert ex[0]["response"]["code"] == 551
    assert ex[0]["response"]["content"].startswith("Next delivery time ")
    assert ex[0]["response"]["content"].endswith(
        "would be at or after the scheduled expiration %s" % iso(expires).replace("Z", ".000Z"))
    assert len(by_type(recs, "TransientFailure")) >= 1  # tried before it expired


@pytest.mark.parametrize("header,want", [
    ("{not json", "import_scheduling_header: X-Schedule: invalid JSON"),
    ('{"dow":"Mon"}', "import_scheduling_header: X-Schedule: scheduling restrictions requires "
     "all restriction fields to be present. tz, start, end are missing"),
    ('{"expires":"soon"}', "import_scheduling_header: X-Schedule: expires: 'soon' is not an "
     "RFC 3339 date-time"),
    ('{"dow":"Mon","tz":"Mars/Olympus_Mons","start":"09:00","end":"10:00"}',
     "import_scheduling_header: X-Schedule: tz: 'Mars/Olympus_Mons': unknown time zone"),
    ('{"dow":"Mon","tz":"../zoneinfo/UTC","start":"09:00","end":"10:00"}',
     "import_scheduling_header: X-Schedule: tz: '../zoneinfo/UTC' is not a time zone name"),
])
def test_bad_scheduling_header_is_refused(relay, tmp_path, header, want):
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(relay.smtp_port, "bad@example.com", [("X-How", "header"), ("X-Schedule", header)])
    assert 400 <= e.value.smtp_code < 500
    assert want in relay.wait_for(want, timeout=10)
