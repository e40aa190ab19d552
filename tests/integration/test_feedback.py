# SPDX-License-Identifier: Apache-2.0
"""Feedback (RFC 5965 ARF) and out-of-band bounce (RFC 3464 DSN) reports
received for listener domains with log_arf / log_oob: Feedback and OOB log
records with KumoMTA's fields, LogThenDrop versus LogThenRelay, a non-report
for a log-only domain, malformed reports, and msg:parse_rfc3464() /
msg:parse_rfc5965() from Lua. The reports are written here from the RFCs'
examples; one embeds a message kumod relayed earlier, whose X-KumoRef trace
header comes back as the report's supplemental_trace."""

import base64
import json
import os
import smtplib

from test_relay import captured, records, sink_start, wait_until

POLICY = """
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool{ name = 'data', path = '%(var)s/spool/data' }
  kumo.define_spool{ name = 'meta', path = '%(var)s/spool/meta' }
  kumo.configure_local_logs{ log_dir = '%(var)s/logs', compression_level = 0,
                             meta = { 'tenant' }, headers = { 'Subject' } }
  kumo.start_esmtp_listener{ listen = '127.0.0.1:0', hostname = 'mx.test', relay_hosts = {},
    trace_headers = { include_meta_names = { 'tenant' } } }
end)
kumo.on('get_listener_domain', function(domain, listener, conn_meta)
  if domain == 'fbl.example.com' then
    return kumo.make_listener_domain{ log_arf = 'LogThenDrop' }
  elseif domain == 'bounce.example.com' then
    return kumo.make_listener_domain{ log_oob = 'LogThenDrop', log_arf = false }
  elseif domain == 'keep.example.com' then
    return kumo.make_listener_domain{ log_oob = true, log_arf = 'LogThenRelay' }
  elseif domain == 'out.example.com' then
    return kumo.make_listener_domain{ relay_to = true }
  end
end)
kumo.on('smtp_server_message_received', function(msg)
  msg:set_meta('tenant', 'acme')
  local ok3464, dsn = pcall(msg.parse_rfc3464, msg)
  local ok5965, arf = pcall(msg.parse_rfc5965, msg)
  local f = assert(io.open('%(var)s/parsed.jsonl', 'a'))
  f:write(kumo.json_encode{
    subject = msg:get_first_named_header_value('Subject'),
    ok3464 = ok3464, dsn = ok3464 and (dsn or 'nil') or tostring(dsn),
    ok5965 = ok5965, arf = ok5965 and (arf or 'nil') or tostring(arf),
  } .. '\\n')
  f:close()
end)
kumo.on('get_queue_config', function(domain)
  local mx = domain == 'out.example.com' and '127.0.0.1:%(sink)d' or '127.0.0.1:9'
  return kumo.make_queue_config{ retry_interval = '1h', protocol = { smtp = { mx_list = { mx } } } }
end)
kumo.on('get_egress_path_config', function()
  return kumo.make_egress_path{ prohibited_hosts = {}, enable_tls = 'Disabled',
                                connect_timeout = '2s' }
end)
"""


ARF_SAMPLE = os.path.join(os.path.dirname(__file__), "..", "data", "arf_rfc5965_b2.eml")


def arf(original, subject="FW: Earn money", extra=""):
    """RFC 5965 appendix B.2, the original message embedded (tests/data, shared with
    tests/unit/test_report.c)."""
    with open(ARF_SAMPLE, newline="") as f:
        text = f.read().replace("\n", "\r\n")
    return (text.replace("{to}", "fbl@fbl.example.com").replace("{subject}", subject)
            .replace("{extra}", extra).replace("{original}", original))


def dsn(subject="Returned mail: see transcript", original="[original message goes here]\r\n",
        status_part=None, cte=None):
    """RFC 3464 appendix A.3 (two recipients: one failed, one delayed)."""
    status = status_part or (
        "Reporting-MTA: dns; cs.utk.edu\r\n"
        "Arrival-Date: Thu, 7 Jul 1994 10:18:12 -0400\r\n"
        "\r\n"
        "Original-Recipient: rfc822;arathib@vnet.ibm.com\r\n"
        "Final-Recipient: rfc822;arathib@vnet.ibm.com\r\n"
        "Action: failed\r\n"
        "Status: 5.0.0 (permanent failure)\r\n"
        "Diagnostic-Code: smtp;\r\n"
        "  550 'arathib@vnet.IBM.COM' is not a registered gateway user\r\n"
        "Remote-MTA: dns; vnet.ibm.com\r\n"
        "Last-Attempt-Date: Thu, 7 Jul 1994 17:15:49 -0400\r\n"
        "\r\n"
        "Final-Recipient: rfc822;johnh@hpnjld.njd.hp.com\r\n"
        "Action: delayed\r\n"
        "Status: 4.0.0 (hpnjld.njd.jp.com: host name lookup failure)\r\n")
    headers = "Content-Type: message/delivery-status\r\n"
    if cte == "base64":
        headers += "Content-Transfer-Encoding: base64\r\n"
        status = base64.encodebytes(status.encode()).decode().replace("\n", "\r\n")
    return ("Date: Thu, 7 Jul 1994 17:16:05 -0400\r\n"
            "From: Mail Delivery Subsystem <MAILER-DAEMON@CS.UTK.EDU>\r\n"
            "Subject: %s\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: multipart/report; report-type=delivery-status;\r\n"
            "    boundary=\"JAA13167.773673707/CS.UTK.EDU\"\r\n"
            "\r\n"
            "--JAA13167.773673707/CS.UTK.EDU\r\n"
            "content-type: text/plain; charset=us-ascii\r\n"
            "\r\n"
            "   ----- The following addresses had delivery problems -----\r\n"
            "\r\n"
            "--JAA13167.773673707/CS.UTK.EDU\r\n"
            "%s"
            "\r\n"
            "%s"
            "\r\n"
            "--JAA13167.773673707/CS.UTK.EDU\r\n"
            "content-type: message/rfc822\r\n"
            "\r\n"
            "%s"
            "--JAA13167.773673707/CS.UTK.EDU--\r\n" % (subject, headers, status, original))


def send(port, rcpt, data, sender=""):
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as s:
        s.ehlo("reporter.test")
        code, _ = s.mail(sender)
        assert code == 250
        code, text = s.rcpt(rcpt)
        if code != 250:
            return code, text
        return s.data(data.encode())


def parsed(var):
    path = os.path.join(str(var), "parsed.jsonl")
    if not os.path.exists(path):
        return {}
    return {r["subject"]: r for r in map(json.loads, open(path))}


def spooled(var):
    """Ids of the messages in the data spool."""
    out, top = set(), str(var / "spool" / "data")
    for root, _dirs, files in os.walk(top):
        if root != top and os.path.basename(root) not in ("new", "quarantine"):
            out.update(files)
    return out


def drop_first_header(msg, name):
    """msg without the first `name` field (with its continuation lines)."""
    lines = msg.split("\r\n")
    i = next(i for i, line in enumerate(lines) if line.lower().startswith(name.lower() + ":"))
    j = i + 1
    while lines[j][:1] in (" ", "\t"):
        j += 1
    return "\r\n".join(lines[:i] + lines[j:])


def start(kumod, tmp_path):
    sink = sink_start(kumod, tmp_path / "capture")
    var = tmp_path / "var"
    k = kumod(POLICY % {"var": var, "sink": sink.smtp_port})
    return k, var


def test_arf_with_kumoref_of_a_relayed_message(kumod, tmp_path):
    k, var = start(kumod, tmp_path)
    # 1. a message kumod relays: the sink captures it with kumod's X-KumoRef
    code, _ = send(k.smtp_port, "user@out.example.com",
                   "From: <news@example.org>\r\nSubject: original\r\n\r\nhello\r\n",
                   sender="news@example.org")
    assert code == 250
    files = wait_until(lambda: captured(tmp_path / "capture"), timeout=20)
    assert len(files) == 1, k.stderr()
    original = drop_first_header(open(files[0], "rb").read().decode(), "X-KumoRef")
    assert "X-KumoRef:" in original  # the relay's; the sink's own came first
    # 2. the complaint about it, to the LogThenDrop ARF domain
    code, text = send(k.smtp_port, "fbl@fbl.example.com", arf(original, extra="Incidents: 2\r\n"))
    assert code == 250, text
    recs = wait_until(lambda: [r for r in records(var / "logs") if r["type"] == "Feedback"])
    assert len(recs) == 1, records(var / "logs")
    rec = recs[0]
    assert rec["recipient"] == "fbl@fbl.example.com"
    assert rec["sender"] == ""
    assert rec["headers"] == {"Subject": "FW: Earn money"}
    fb = rec["feedback_report"]
    assert fb["feedback_type"] == "abuse"
    assert fb["user_agent"] == "SomeGenerator/1.0"
    assert fb["version"] == "1"
    assert fb["incidents"] == 2
    assert fb["arrival_date"] == "2005-03-08T18:00:00Z"
    assert fb["original_mail_from"] == "somespammer@example.net"
    assert fb["original_rcpto_to"] == ["user@example.com"]
    assert fb["reporting_mta"] == {"mta_type": "dns", "name": "mail.example.com"}
    assert fb["source_ip"] == "192.0.2.1"
    assert fb["authentication_results"] == [
        "mail.example.com;               spf=fail smtp.mail=somespammer@example.com"]
    assert fb["reported_domain"] == ["example.net"]
    assert fb["reported_uri"] == ["http://example.net/earn_money.html",
                                  "mailto:user@example.com"]
    assert fb["extensions"] == {"removal-recipient": ["user@example.com"]}
    assert fb["original_envelope_id"] is None
    # the relayed message's trace header, decoded: its recipient and meta
    assert fb["supplemental_trace"] == {"recipient": "user@out.example.com", "tenant": "acme"}
    assert fb["original_message"] == original.replace("\r\n", "\n")
    # LogThenDrop: no Reception record for the report, nothing queued for it
    types = [(r["type"], r["recipient"]) for r in records(var / "logs")]
    assert ("Reception", "fbl@fbl.example.com") not in types
    # msg:parse_rfc5965() saw the same report; parse_rfc3464 refuses it
    p = parsed(var)["FW: Earn money"]
    assert p["ok5965"] and p["arf"]["supplemental_trace"] == fb["supplemental_trace"]
    assert p["arf"]["feedback_type"] == "abuse"
    assert "original_envelope_id" not in p["arf"]  # nil in Lua, absent in JSON
    assert not p["ok3464"] and "delivery-status part missing" in p["dsn"]
    assert k.stop() == 0


def test_oob_drop_and_relay(kumod, tmp_path):
    k, var = start(kumod, tmp_path)
    code, text = send(k.smtp_port, "bounces@bounce.example.com", dsn(subject="dropped dsn"))
    assert code == 250, text
    code, text = send(k.smtp_port, "bounces@keep.example.com",
                      dsn(subject="kept dsn", cte="base64"))
    assert code == 250, text
    recs = wait_until(lambda: [r for r in records(var / "logs") if r["type"] == "OOB"]
                      if len([r for r in records(var / "logs") if r["type"] == "OOB"]) >= 2
                      else None)
    assert recs and len(recs) == 2, records(var / "logs")
    by_sender = {r["sender"]: r for r in recs}
    for who in ("bounces@bounce.example.com", "bounces@keep.example.com"):
        oob = by_sender[who]
        # only the failed recipient; the delayed one makes no record
        assert oob["recipient"] == "arathib@vnet.ibm.com"
        assert oob["response"] == {
            "code": 550, "enhanced_code": {"class": 5, "subject": 0, "detail": 0},
            "content": "'arathib@vnet.IBM.COM' is not a registered gateway user",
            "command": None}
        assert oob["peer_address"]["name"] == "cs.utk.edu"
        assert oob["timestamp"] == 773615749  # Last-Attempt-Date
        assert oob["size"] == 0 and oob["num_attempts"] == 0
        assert oob["feedback_report"] is None
    # OOB keeps its Reception record; LogThenDrop queues nothing, log_oob=true does
    all_recs = records(var / "logs")
    rx = {r["recipient"] for r in all_recs if r["type"] == "Reception"}
    assert {"bounces@bounce.example.com", "bounces@keep.example.com"} <= rx
    ids = {r["recipient"]: r["id"] for r in all_recs if r["type"] == "Reception"}
    assert ids["bounces@keep.example.com"] in spooled(var)
    assert ids["bounces@bounce.example.com"] not in spooled(var)
    p = parsed(var)["kept dsn"]
    # an ARF report for a LogThenRelay domain: Feedback instead of Reception, and queued
    code, text = send(k.smtp_port, "fbl@keep.example.com",
                      arf("Subject: spam\r\n\r\nx\r\n", subject="kept arf"))
    assert code == 250, text
    fb = wait_until(lambda: [r for r in records(var / "logs") if r["type"] == "Feedback"])
    assert len(fb) == 1 and fb[0]["recipient"] == "fbl@keep.example.com", fb
    assert fb[0]["feedback_report"]["original_message"] == "Subject: spam\n\nx\n"
    assert fb[0]["feedback_report"]["supplemental_trace"] is None
    assert fb[0]["id"] in spooled(var)
    assert "fbl@keep.example.com" not in {
        r["recipient"] for r in records(var / "logs") if r["type"] == "Reception"}
    assert p["ok3464"], p
    d = p["dsn"]
    assert d["per_message"]["reporting_mta"] == {"mta_type": "dns", "name": "cs.utk.edu"}
    assert d["per_message"]["arrival_date"] == "1994-07-07T14:18:12Z"
    assert [r["action"] for r in d["per_recipient"]] == ["failed", "delayed"]
    assert d["per_recipient"][0]["status"] == {
        "class": 5, "subject": 0, "detail": 0, "comment": "(permanent failure)"}
    assert d["per_recipient"][0]["diagnostic_code"] == {
        "diagnostic_type": "smtp",
        "diagnostic": "550 'arathib@vnet.IBM.COM' is not a registered gateway user"}
    assert d["per_recipient"][0]["last_attempt_date"] == "1994-07-07T21:15:49Z"
    assert d["original_message"] == "[original message goes here]\n"
    assert p["ok5965"] and p["arf"] == "nil"  # a DSN is not a feedback report
    assert k.stop() == 0


def test_non_reports_and_malformed(kumod, tmp_path):
    k, var = start(kumod, tmp_path)
    # a log-only domain accepts a plain message (250, Reception) and drops it
    code, text = send(k.smtp_port, "x@bounce.example.com",
                      "Subject: not a report\r\n\r\nhello\r\n")
    assert code == 250, text
    line = k.wait_for("for bounce.example.com is not a delivery-status report and the "
                      "domain does not relay: accepted and dropped")
    assert " INFO " in line, line
    # malformed reports are not reports: same treatment, no OOB/Feedback record
    bad_dsn = dsn(subject="bad dsn", status_part=(
        "Reporting-MTA: dns; cs.utk.edu\r\n\r\n"
        "Final-Recipient: rfc822;a@b.example\r\nAction: exploded\r\nStatus: 5.0.0\r\n"))
    code, text = send(k.smtp_port, "y@bounce.example.com", bad_dsn)
    assert code == 250, text
    no_version = arf("From: a@b\r\n\r\nx\r\n", subject="bad arf").replace("Version: 1\r\n", "")
    code, text = send(k.smtp_port, "z@fbl.example.com", no_version)
    assert code == 250, text
    # a domain with no listener-domain entry is still refused (no relay_hosts)
    code, _ = send(k.smtp_port, "nobody@elsewhere.example", "Subject: x\r\n\r\nx\r\n")
    assert code == 550
    p = wait_until(lambda: parsed(var) if len(parsed(var)) >= 3 else None)
    assert p, parsed(var)
    assert p["not a report"]["dsn"] == "nil" and p["not a report"]["arf"] == "nil"
    assert not p["bad dsn"]["ok3464"]
    assert "invalid action type exploded" in p["bad dsn"]["dsn"]
    assert not p["bad arf"]["ok5965"]
    assert "required header version is not present" in p["bad arf"]["arf"]
    recs = wait_until(lambda: [r for r in records(var / "logs") if r["type"] == "Reception"]
                      if len([r for r in records(var / "logs")
                              if r["type"] == "Reception"]) >= 3 else None)
    assert recs, records(var / "logs")
    assert {r["recipient"] for r in recs} == {
        "x@bounce.example.com", "y@bounce.example.com", "z@fbl.example.com"}
    assert not [r for r in records(var / "logs") if r["type"] in ("OOB", "Feedback")]
    # none was queued
    assert spooled(var) == set()
    assert k.stop() == 0


def test_make_listener_domain_refuses_bad_values(kumod, tmp_path):
    policy = """
kumo.on('init', function()
  kumo.start_esmtp_listener{ listen = '127.0.0.1:0' }
  kumo.make_listener_domain{ log_oob = 'LogThenRelay', log_arf = 'LogThenDrop' }
  kumo.make_listener_domain{ log_oob = 'Sometimes' }
end)
"""
    k = kumod(policy, wait=None)
    assert k.proc.wait(timeout=15) != 0
    k.stop()
    assert ("make_listener_domain: log_oob: expected a boolean value or one of 'Ignore', "
            "'LogThenDrop' or 'LogThenRelay', but got Sometimes") in k.stderr()
