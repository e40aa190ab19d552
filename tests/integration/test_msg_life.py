# SPDX-License-Identifier: Apache-2.0
"""Messages made by policy (issues 16/18, KumoMTA's message lifecycle API):
kumo.make_message + kumo.inject_message and kumo.api.inject.inject_v1, driven by a real
relay kumod delivering to the sink. Asserts on the delivered messages, the relay's log
records (parsed) and the policy's own JSON results, including the refusals: an injection
that cannot be accepted raises, and a handler that lets it raise answers 4xx so the
client keeps its message."""

import base64
import email
import json
import os
import smtplib

import pytest

from conftest import free_port
from test_relay import captured, records, sink_start, wait_until

POLICY = r"""
local kumo = require 'kumo'
local OUT = '{out}'
local function write(name, value)
  local f = assert(io.open(OUT .. '/' .. name .. '.json', 'w'))
  f:write(kumo.json_encode(value))
  f:close()
end
local function err(f, ...)
  local ok, e = pcall(f, ...)
  return ok and 'no error' or tostring(e)
end

kumo.on('pre_init', function()
  kumo.configure_log_disposition_hook {{ name = 'receipt' }}
end)
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{var}/spool/data' }}
  kumo.define_spool {{ name = 'meta', path = '{var}/spool/meta' }}
  kumo.configure_local_logs {{ log_dir = '{var}/logs', headers = {{ 'Subject' }},
                               meta = {{ 'tenant', 'saw_data_header' }} }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0', hostname = 'relay.test',
                               relay_hosts = {{ '127.0.0.1' }} }}
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == 'broken.example' then
    error('no configuration for broken.example')
  end
  if domain == 'dead.example' and routing_domain ~= 'smart.example' then
    -- nothing listens there: every attempt fails transiently
    return kumo.make_queue_config {{
      retry_interval = '1s', max_age = '1h',
      protocol = {{ smtp = {{ mx_list = {{ '127.0.0.1:{dead_port}' }} }} }},
    }}
  end
  return kumo.make_queue_config {{
    retry_interval = '1s', max_age = '1h',
    protocol = {{ smtp = {{ mx_list = {{ '127.0.0.1:{sink_port}' }} }} }},
  }}
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path {{ prohibited_hosts = {{}}, enable_tls = 'Disabled' }}
end)

local function made(rcpt, subject)
  return kumo.make_message('notify@example.com', rcpt,
    'From: <notify@example.com>\r\nTo: <' .. rcpt .. '>\r\nSubject: ' .. subject
      .. '\r\n\r\nmade by policy\r\n')
end

kumo.on('smtp_server_message_received', function(msg)
  local subject = msg:get_first_named_header_value 'Subject'
  if subject == 'alias' then
    msg:set_meta('saw_data_header', msg:get_first_named_header_value 'X-Data-Seen')
  end
  if subject == 'make' then
    local m = made('copy@example.net', 'generated')
    m:set_meta('tenant', 'gen')
    local out = {{ id = m:id(), sender = m:sender().email,
                  recipient = m:recipient().email, tenant = m:get_meta 'tenant' }}
    kumo.apply_supplemental_trace_header(m, {{ include_meta_names = {{ 'tenant', 'absent' }} }})
    out.sup_bad_key = err(kumo.apply_supplemental_trace_header, m, {{ header_nam = 'X-A' }})
    out.sup_bad_name = err(kumo.apply_supplemental_trace_header, m, {{ header_name = 'a b' }})
    kumo.apply_supplemental_trace_header(m, {{ supplemental_header = false }}) -- adds nothing
    local params = {{ include_original_message = 'No', enable_bounce = true,
                     reporting_mta = {{ mta_type = 'dns', name = 'mta1.example.com' }} }}
    out.ndr_for_delivery = kumo.generate_rfc3464_message(params, nil,
      {{ type = 'Delivery', sender = 'a@example.com', recipient = 'b@example.com' }}) == nil
    out.ndr_null_sender = kumo.generate_rfc3464_message(params, nil,
      {{ type = 'Bounce', delivery_protocol = 'ESMTP', sender = '', recipient = 'b@example.com' }}) == nil
    out.ndr_bad_key = err(kumo.generate_rfc3464_message, {{ bogus = 1 }}, nil, {{}})
    out.ndr_no_orig = err(kumo.generate_rfc3464_message, {{ include_original_message = 'FullContent',
      enable_expiration = true, reporting_mta = params.reporting_mta }}, nil,
      {{ type = 'Expiration', sender = 'a@example.com', recipient = 'b@example.com' }})
    out.returned = kumo.inject_message(m)
    -- once injected the message belongs to kumod: a second injection is refused
    out.again = err(kumo.inject_message, m)
    out.bad_sender = err(kumo.make_message, 'not an address', 'a@example.com', 'x')
    out.bad_recipient = err(kumo.make_message, 'a@example.com', '', 'x')
    msg:set_meta('want_receipt', true)
    write('make', out)
  elseif subject == 'v1' then
    local r = kumo.api.inject.inject_v1 {{
      envelope_sender = msg:sender().email,
      content = msg:get_data(),
      recipients = {{ {{ email = 'archive@example.org' }}, {{ email = 'nobody@broken.example' }} }},
    }}
    r.malformed = err(kumo.api.inject.inject_v1, {{ envelope_sender = 'a@example.com' }})
    write('v1_bad', err(kumo.api.inject.inject_v1, {{ envelope_sender = 'a@example.com',
      content = 'x', recipients = {{ {{ email = 'bad address' }} }} }}))
    write('v1', r)
  elseif subject == 'self' then
    kumo.inject_message(msg) -- a received message: refused, the handler fails
  elseif subject == 'badq' then
    local m = made('x@broken.example', 'never')
    write('badq', {{ error = err(kumo.inject_message, m) }})
    kumo.inject_message(m) -- unhandled: the received message is refused too
  end
end)

kumo.on('smtp_server_data', function(msg, conn_meta)
  local subject = msg:get_first_named_header_value 'Subject'
  if subject == 'alias' then
    local seen = {{ recipients = {{}} }}
    for _, r in ipairs(msg:recipient_list()) do
      table.insert(seen.recipients, r.email)
    end
    -- exactly the data the client sent: no trace header yet
    seen.has_received = msg:get_first_named_header_value 'Received' ~= nil
    write('data', seen)
    msg:set_recipient {{ msg:recipient().email, 'legal@example.org' }}
    msg:prepend_header('X-Data-Seen', 'yes')
    msg:set_meta('tenant', 'aliased')
  elseif subject == 'data-reject' then
    kumo.reject(550, '5.7.1 content refused by data policy')
  elseif subject == 'data-error' then
    error('data handler failed')
  end
end)

kumo.on('smtp_client_rewrite_delivery_status',
  function(response, domain, tenant, campaign, routing_domain)
    local f = assert(io.open(OUT .. '/rewrite.jsonl', 'a'))
    f:write(kumo.json_encode {{ response = response, domain = domain, tenant = tenant,
                               campaign = campaign, routing_domain = routing_domain }} .. '\n')
    f:close()
    if response:find 'tempfail requested' then
      return 550 -- a 4xx made permanent: bounced
    elseif response:find 'permfail requested' then
      return 451 -- a 5xx made transient: kept
    elseif response:find 'you said 553' then
      error 'rewrite handler failed'
    end
  end)

kumo.on('requeue_message', function(msg, response, context, increment, delay)
  local rcpt = msg:recipient().email
  local f = assert(io.open(OUT .. '/requeue.jsonl', 'a'))
  f:write(kumo.json_encode {{ rcpt = rcpt, response = response, context = context,
    increment = increment, delay_is_nil = delay == nil, attempts = msg:num_attempts(),
    queue = msg:queue_name() }} .. '\n')
  f:close()
  if rcpt == 'smart@dead.example' then
    msg:set_meta('routing_domain', 'smart.example') -- via another queue
  elseif rcpt == 'bounceme@dead.example' then
    kumo.reject(550, 'requeue says no')
  elseif rcpt == 'err@dead.example' then
    error 'requeue handler failed'
  end
end)

if os.getenv 'REWRITE' then
  kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
    local f = assert(io.open(OUT .. '/replies.jsonl', 'a'))
    f:write(kumo.json_encode {{ status = status, response = response, command = command }} .. '\n')
    f:close()
    if command == 'DATA' and status == 250 then
      return 250, 'super fantastic!\n' .. response
    elseif command and command:upper() == 'NOOP' then
      error 'rewrite handler failed'
    elseif command == 'HELP' then
      return 421 -- refused: kumod does not close on a rewrite
    elseif command == 'VRFY x' then
      return 252, '2.1.5 cannot verify, will accept'
    end
  end)
end

local enum_mode = os.getenv 'ENUM_MODE'
if enum_mode then
  kumo.on('spool_message_enumerated', function(msg)
    if enum_mode == 'error' then
      error 'enumeration handler failed'
    end
    msg:set_meta('routing_domain', 'smart.example')
  end)
end

-- a synchronous event: the store completes after the call returns
kumo.on('log_disposition_receipt', function(msg, record)
  if record.type == 'Bounce' and record.recipient == '554-ndr@example.com' then
    local ndr = kumo.generate_rfc3464_message({{
      include_original_message = 'FullContent', enable_bounce = true,
      reporting_mta = {{ mta_type = 'dns', name = 'mta1.example.com' }},
    }}, msg, record)
    kumo.inject_message(ndr)
  end
  if record.type == 'Delivery' and msg:get_meta 'want_receipt' then
    kumo.inject_message(made('receipt@example.com', 'receipt'))
  end
end)
"""


def start(kumod, tmp_path, env=None):
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    out = tmp_path / "out"
    out.mkdir()
    var = tmp_path / "var"
    text = POLICY.format(out=out, var=var, sink_port=sink.smtp_port, dead_port=free_port())
    relay = kumod(text, policy_name="relay.lua", env=env)
    return relay, capture, out, var, text


def send(port, subject, rcpt="user@example.com"):
    msg = ("From: <sender@example.com>\r\nTo: <%s>\r\nSubject: %s\r\n\r\nbody\r\n"
           % (rcpt, subject))
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as s:
        s.ehlo("client.test")
        s.sendmail("sender@example.com", [rcpt], msg.encode())


def delivered_subjects(capture):
    return sorted(email.message_from_bytes(open(f, "rb").read())["Subject"]
                  for f in captured(capture))


def by_subject(recs, type_, subject):
    return [r for r in recs if r["type"] == type_
            and (r.get("headers") or {}).get("Subject") == subject]


def test_make_and_inject_message(kumod, tmp_path):
    relay, capture, out, var, _ = start(kumod, tmp_path)
    send(relay.smtp_port, "make")
    # the original, the generated copy and the receipt injected from the
    # synchronous disposition hook once the original was delivered
    want = ["generated", "make", "receipt"]
    got = wait_until(lambda: delivered_subjects(capture) == want and want)
    assert delivered_subjects(capture) == want, relay.stderr()
    res = json.loads((out / "make.json").read_text())
    gen = [email.message_from_bytes(open(f, "rb").read()) for f in captured(capture)]
    gen = [m for m in gen if m["Subject"] == "generated"][0]
    # the sink's listener prepends its own above ours
    refs = gen.get_all("X-KumoRef")
    assert len(refs) == 2, refs
    ref = json.loads(base64.b64decode("".join(refs[1].split())))
    assert ref == {"_@_": "\\_/", "recipient": "copy@example.net", "tenant": "gen"}, ref
    assert list(ref) == ["_@_", "recipient", "tenant"]
    assert "unknown key 'header_nam' (did you mean 'header_name'?)" in res["sup_bad_key"]
    assert res["sup_bad_name"].endswith(
        "kumo.apply_supplemental_trace_header: header_name: expected a header field name")
    assert res["sender"] == "notify@example.com"
    assert res["recipient"] == "copy@example.net"
    assert res["tenant"] == "gen"
    assert "returned" not in res  # inject_message returns nothing
    assert "already injected" in res["again"], res["again"]
    assert res["ndr_for_delivery"] is True and res["ndr_null_sender"] is True
    assert res["ndr_bad_key"].endswith("kumo.generate_rfc3464_message: params: unknown key 'bogus'")
    assert "pass the original message" in res["ndr_no_orig"]
    assert "'not an address' is not a valid envelope address" in res["bad_sender"]
    assert "recipient '' is not a valid envelope address" in res["bad_recipient"]
    assert relay.stop() == 0
    recs = records(var / "logs")
    rec = by_subject(recs, "Reception", "generated")
    assert len(rec) == 1, recs
    r = rec[0]
    assert r["id"] == res["id"]
    assert r["sender"] == "notify@example.com"
    assert r["recipient"] == "copy@example.net"
    assert r["reception_protocol"] == "Lua"
    assert r["meta"].get("tenant") == "gen"
    d = by_subject(recs, "Delivery", "generated")
    assert len(d) == 1 and d[0]["id"] == res["id"] and d[0]["response"]["code"] == 250
    assert d[0]["queue"] == "gen@example.net"
    rr = by_subject(recs, "Reception", "receipt")
    assert len(rr) == 1 and rr[0]["recipient"] == "receipt@example.com"
    assert len(by_subject(recs, "Delivery", "receipt")) == 1
    orig = by_subject(recs, "Reception", "make")
    assert len(orig) == 1 and orig[0]["reception_protocol"] == "ESMTP"


def test_inject_v1_from_policy(kumod, tmp_path):
    relay, capture, out, var, _ = start(kumod, tmp_path)
    send(relay.smtp_port, "v1")
    want = ["v1", "v1"]  # the original and its archive copy
    wait_until(lambda: delivered_subjects(capture) == want and want)
    assert delivered_subjects(capture) == want, relay.stderr()
    res = json.loads((out / "v1.json").read_text())
    assert res["success_count"] == 1
    assert res["fail_count"] == 1
    assert res["failed_recipients"] == ["nobody@broken.example"]
    assert len(res["errors"]) == 1, res
    assert res["errors"][0].startswith("nobody@broken.example: 451 4.3.0 failed to obtain queue "
                                       "config for broken.example: "), res
    assert res["errors"][0].endswith(": no configuration for broken.example"), res
    bad = json.loads((out / "v1_bad.json").read_text())
    assert bad.startswith("kumo.api.inject.inject_v1: recipients[0].email: "), bad
    assert res["malformed"].startswith("kumo.api.inject.inject_v1: "), res["malformed"]
    assert res["malformed"] == "kumo.api.inject.inject_v1: content: missing", res["malformed"]
    assert relay.stop() == 0
    recs = records(var / "logs")
    arch = [r for r in recs if r["type"] == "Reception" and r["recipient"] == "archive@example.org"]
    assert len(arch) == 1, recs
    assert arch[0]["reception_protocol"] == "HTTP"
    assert arch[0]["sender"] == "sender@example.com"
    dl = [r for r in recs if r["type"] == "Delivery" and r["recipient"] == "archive@example.org"]
    assert len(dl) == 1 and dl[0]["response"]["code"] == 250


@pytest.mark.parametrize("subject", ["self", "badq"])
def test_refused_injection_fails_closed(kumod, tmp_path, subject):
    relay, capture, out, var, _ = start(kumod, tmp_path)
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(relay.smtp_port, subject)
    assert 400 <= e.value.smtp_code < 500, e.value
    if subject == "self":
        relay.wait_for("not a message made by kumo.make_message")
    else:
        res = json.loads((out / "badq.json").read_text())
        assert res["error"].startswith("kumo.inject_message: message "), res
        assert "failed to obtain queue config for broken.example: " in res["error"]
        assert "no configuration for broken.example" in res["error"]
    assert relay.stop() == 0
    recs = records(var / "logs")
    # nothing was accepted: no Reception, nothing delivered
    assert [r for r in recs if r["type"] in ("Reception", "Delivery")] == [], recs
    assert captured(capture) == []
    if subject == "badq":
        # each refused attempt (the pcall'd one and the unhandled one) is
        # logged as reception logs a refused queue insertion
        b = [r for r in recs if r["type"] == "Bounce"]
        assert len(b) == 2 and b[0]["id"] == b[1]["id"], b
        assert all(r["recipient"] == "x@broken.example" for r in b)
        assert all(r["response"]["code"] == 500 for r in b)
    spooled = [f for f in (var / "spool").rglob("*") if f.is_file()
               and len(f.name) == 32]
    assert spooled == []


def test_smtp_server_data(kumod, tmp_path):
    relay, capture, out, var, _ = start(kumod, tmp_path)
    send(relay.smtp_port, "alias")
    # the handler added a recipient in another domain: two messages (BatchByDomain)
    files = wait_until(lambda: len(captured(capture)) == 2 and captured(capture))
    assert files and len(files) == 2, relay.stderr()
    for f in files:
        m = email.message_from_bytes(open(f, "rb").read())
        assert m["X-Data-Seen"] == "yes"
        # the header went in before kumod's Received header was added on top
        keys = [k.lower() for k in m.keys()]
        assert keys.index("received") < keys.index("x-data-seen"), keys
    seen = json.loads((out / "data.json").read_text())
    assert seen == {"recipients": ["user@example.com"], "has_received": False}
    for subject, code, text in (("data-reject", 550, b"5.7.1 content refused by data policy"),
                                ("data-error", 451, b"4.3.0 policy error; try again later")):
        with pytest.raises(smtplib.SMTPDataError) as e:
            send(relay.smtp_port, subject)
        assert (e.value.smtp_code, e.value.smtp_error) == (code, text)
    assert relay.stop() == 0
    recs = records(var / "logs")
    # smtp_server_message_received ran after smtp_server_data (it saw the header), once
    # per split message, with the meta set on the whole transaction; refused: no record
    rec = sorted((r["recipient"], r["meta"].get("tenant"), r["meta"].get("saw_data_header"))
                 for r in recs if r["type"] == "Reception")
    assert rec == [("legal@example.org", "aliased", "yes"),
                   ("user@example.com", "aliased", "yes")], recs
    assert sorted(r["recipient"] for r in recs if r["type"] == "Delivery") == [
        "legal@example.org", "user@example.com"]


def test_smtp_client_rewrite_delivery_status(kumod, tmp_path):
    relay, capture, out, var, _ = start(kumod, tmp_path)
    rcpts = ["tempfail@example.com", "permfail@example.com", "553-nope@example.com"]
    for r in rcpts:
        send(relay.smtp_port, "rewrite", rcpt=r)
    calls_file = out / "rewrite.jsonl"

    def calls():
        if not calls_file.exists():
            return []
        return [json.loads(line) for line in calls_file.read_text().splitlines()]
    # each reply is offered once per attempt (the kept ones are retried later)
    wait_until(lambda: {c["response"].split(" ")[0] for c in calls()} >= {"451", "550", "553"})
    got = calls()
    first = {}
    for c in got:
        first.setdefault(c["response"].split(" ")[0], c)
    assert first["451"] == {"response": "451 4.7.1 tempfail requested", "domain": "example.com",
                            "routing_domain": "example.com"}, got
    assert first["550"]["response"] == "550 5.7.1 permfail requested"
    assert first["553"]["response"] == "553 you said 553-nope"
    relay.wait_for("rewrite handler failed")
    assert relay.stop() == 0
    recs = records(var / "logs")

    def outcome(rcpt):
        return [(r["type"], r["response"]["code"], r["response"]["content"]) for r in recs
                if r["recipient"] == rcpt and r["type"] != "Reception"][0]
    assert outcome("tempfail@example.com") == (
        "Bounce", 550, "tempfail requested (kumomta: status was rewritten from 451 -> 550)")
    assert outcome("permfail@example.com") == (
        "TransientFailure", 451,
        "permfail requested (kumomta: status was rewritten from 550 -> 451)")
    # the handler failed on a 5xx: the message stays queued instead of bouncing
    assert outcome("553-nope@example.com") == (
        "TransientFailure", 451, "you said 553-nope (kumomta: status was rewritten from 553 -> 451)")
    assert not [r for r in recs if r["type"] == "Bounce" and r["recipient"] != rcpts[0]]


def test_requeue_message(kumod, tmp_path):
    relay, capture, out, var, _ = start(kumod, tmp_path)
    for r in ("smart@dead.example", "bounceme@dead.example", "err@dead.example"):
        send(relay.smtp_port, "requeue", rcpt=r)
    calls_file = out / "requeue.jsonl"

    def calls(rcpt):
        if not calls_file.exists():
            return []
        return [c for c in map(json.loads, calls_file.read_text().splitlines())
                if c["rcpt"] == rcpt]
    # rebound to the smart host's queue and delivered there
    assert wait_until(lambda: len(captured(capture)) == 1), relay.stderr()
    # the failing handler: the message stays in its queue and is retried
    assert wait_until(lambda: len(calls("err@dead.example")) >= 2), relay.stderr()
    relay.wait_for("requeue handler failed")
    assert relay.stop() == 0
    smart = calls("smart@dead.example")
    assert len(smart) == 1, smart
    c = smart[0]
    assert c["queue"] == "dead.example" and c["attempts"] == 0
    assert c["increment"] is True and c["delay_is_nil"] is True
    assert isinstance(c["context"], list) and len(c["context"]) == 1
    assert c["response"].split(" ")[0].isdigit(), c
    assert len(calls("bounceme@dead.example")) == 1
    recs = records(var / "logs")

    def of(rcpt, type_):
        return [r for r in recs if r["recipient"] == rcpt and r["type"] == type_]
    d = of("smart@dead.example", "Delivery")
    assert len(d) == 1 and d[0]["queue"] == "dead.example!smart.example", d
    assert d[0]["num_attempts"] == 1  # the failed attempt still counts
    b = of("bounceme@dead.example", "Bounce")
    assert len(b) == 1 and (b[0]["response"]["code"], b[0]["response"]["content"]) == (
        550, "requeue says no"), b
    assert of("err@dead.example", "Bounce") == [] and of("err@dead.example", "Delivery") == []
    assert len(of("err@dead.example", "TransientFailure")) >= 2


def test_spool_message_enumerated(kumod, tmp_path):
    relay, capture, out, var, text = start(kumod, tmp_path)
    send(relay.smtp_port, "enumerated", rcpt="stuck@dead.example")
    assert relay.stop() == 0  # spooled, undeliverable in its queue

    def spooled():
        return sorted(f.name for f in (var / "spool").rglob("*")
                      if f.is_file() and len(f.name) == 32)
    before = spooled()
    assert before, "the message is not in the spool"
    # a failing handler stops kumod; the message stays in the spool untouched
    failing = kumod(text, policy_name="relay.lua", env={"ENUM_MODE": "error"})
    assert failing.proc.wait(15) == 1
    failing.wait_for("spool_message_enumerated failed for message ")
    assert "enumeration handler failed" in failing.stderr()
    assert spooled() == before
    # a handler re-assigning the queue: delivered through the smart host's queue
    relay = kumod(text, policy_name="relay.lua", env={"ENUM_MODE": "rebind"})
    assert wait_until(lambda: len(captured(capture)) == 1), relay.stderr()
    assert relay.stop() == 0
    recs = records(var / "logs")
    d = [r for r in recs if r["type"] == "Delivery"]
    assert len(d) == 1 and d[0]["recipient"] == "stuck@dead.example", d
    assert d[0]["queue"] == "dead.example!smart.example"
    assert spooled() == []


def test_smtp_server_rewrite_response(kumod, tmp_path):
    relay, capture, out, var, _ = start(kumod, tmp_path, env={"REWRITE": "1"})
    with smtplib.SMTP("127.0.0.1", relay.smtp_port, timeout=15) as s:
        s.ehlo("client.test")
        noop = s.noop()
        vrfy = s.docmd("VRFY", "x")
        helpr = s.docmd("HELP")
        s.mail("sender@example.com")
        s.rcpt("user@example.com")
        data = s.data(b"Subject: rw\r\n\r\nbody\r\n")
    assert noop[0] == 250  # the handler failed: the reply is kept
    assert vrfy == (252, b"2.1.5 cannot verify, will accept")
    assert helpr[0] != 421
    lines = data[1].split(b"\n")
    assert data[0] == 250 and lines[0] == b"super fantastic!" and lines[1].startswith(b"OK ids=")
    relay.wait_for("rewrite handler failed")
    relay.wait_for("changing a reply to or from 421 is not supported")
    assert relay.stop() == 0
    calls = [json.loads(x) for x in (out / "replies.jsonl").read_text().splitlines()]
    assert calls[0]["status"] == 220 and "command" not in calls[0]  # the greeting
    by_cmd = {c.get("command"): c for c in calls}
    assert by_cmd["mail FROM:<sender@example.com>"]["status"] == 250
    assert by_cmd["rcpt TO:<user@example.com>"]["status"] == 250
    assert by_cmd["data"]["status"] == 354  # the DATA command itself, as sent
    d = by_cmd["DATA"]  # the reply after the data
    assert d["status"] == 250 and d["response"].startswith("OK ids=")
    assert len(captured(capture)) <= 1


def test_generate_rfc3464_message(kumod, tmp_path):
    relay, capture, out, var, _ = start(kumod, tmp_path)
    send(relay.smtp_port, "ndr", rcpt="554-ndr@example.com")

    def ndr():
        for f in captured(capture):
            m = email.message_from_bytes(open(f, "rb").read())
            if m["Subject"] == "Returned mail":
                return m
    m = wait_until(ndr)
    assert m is not None, relay.stderr()
    assert relay.stop() == 0
    assert m.get_content_type() == "multipart/report"
    assert m.get_param("report-type") == "delivery-status"
    assert m["To"] == "sender@example.com"
    assert m["From"] == "Mail Delivery Subsystem <mailer-daemon@mta1.example.com>"
    text, status, orig = m.get_payload()
    assert text.get_content_type() == "text/plain"
    assert "Response: 554 you said 554-ndr" in text.get_payload()
    assert status.get_content_type() == "message/delivery-status"
    fields = {}
    for block in status.get_payload():  # email parses the blocks as header sets
        for k, v in block.items():
            fields.setdefault(k, v)
    assert fields["Reporting-MTA"] == "dns; mta1.example.com"
    assert fields["Final-Recipient"] == "rfc822;554-ndr@example.com"
    assert fields["Action"] == "failed"
    assert fields["Status"] == "5.0.0 you said 554-ndr"
    assert fields["Diagnostic-Code"] == "smtp; 554 you said 554-ndr"
    assert fields["Remote-MTA"].startswith("dns; ")
    assert orig.get_content_type() == "message/rfc822"
    assert orig.get_payload()[0]["Subject"] == "ndr"
    recs = records(var / "logs")
    rec = [r for r in recs if r["type"] == "Reception" and r["sender"] == ""]
    assert len(rec) == 1 and rec[0]["recipient"] == "sender@example.com"
    assert rec[0]["reception_protocol"] == "Lua"
