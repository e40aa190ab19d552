# SPDX-License-Identifier: Apache-2.0
"""What a KumoMTA policy reaching for something kumod lacks gets: one clear
line naming it, at load time or from `--validate`, never a silent no-op or
"attempt to call a nil value"."""

import os
import re
import smtplib

import pytest

from conftest import REPO, run_kumod
from test_relay import captured, records, sink_start, wait_until

VALIDATE_LINE = re.compile(r"^validate: (?P<event>\w+)\((?P<args>.*?)\): error: (?P<text>.*)$")


def write(tmp_path, text, name="policy.lua"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def validate(tmp_path, text, *extra):
    """--validate on the policy text, run from tmp_path so that Lua names
    the file `policy.lua` (it shortens long paths)."""
    write(tmp_path, text)
    return run_kumod(["--validate", "--policy", "policy.lua", *extra], cwd=str(tmp_path))


def validate_errors(out):
    """[(event, text)] from --validate's error lines."""
    errs = []
    for line in out.stdout.splitlines():
        m = VALIDATE_LINE.match(line)
        if m:
            errs.append((m.group("event"), m.group("text")))
    return errs


def validate_clean(tmp_path, text, done_marker):
    """Runs --validate on text with lua=info logging; asserts no handler
    error and that a log line ending with done_marker was written (the
    handler ran to its end). Returns that line."""
    (tmp_path / "policy.lua").write_text(text)
    out = run_kumod(["--validate", "--policy", "policy.lua"], cwd=str(tmp_path),
                    env={"KUMOD_LOG": "lua=info"})
    assert validate_errors(out) == [], out.stdout
    assert out.returncode == 0, out.stdout + out.stderr
    done = [l for l in out.stderr.splitlines() if done_marker in l]
    assert len(done) == 1, out.stderr
    return done[0]


def policy_error(out):
    """The one `kumod: policy error:` line of a failed load."""
    lines = [l for l in out.stderr.splitlines() if l.startswith("kumod: policy error: ")]
    assert len(lines) == 1, out.stderr
    return lines[0][len("kumod: policy error: "):]


@pytest.mark.parametrize("policy", ["policy/init.lua", "policy/simple_policy.lua",
                                    "sink/sink.lua"])
def test_shipped_policies_validate(policy):
    out = run_kumod(["--validate", "--policy", os.path.join(REPO, policy)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert validate_errors(out) == []
    assert out.stdout.splitlines()[-1].endswith(" is valid")


MISSING = [
    # (handler body, event it runs in, expected text)
    ("kumo.spawn_task('x')",
     "smtp_server_message_received",
     "kumo.spawn_task is a KumoMTA API that kumod does not implement yet"),
    ("kumo.amqp.basic_publish{}", "smtp_server_message_received",
     "kumo.amqp is a KumoMTA module that kumod does not implement yet"),
    ("kumo.log_infoo('x')", "smtp_server_message_received",
     "kumo.log_infoo: unknown name (not a KumoMTA or kumod API); did you mean kumo.log_info?"),
    ("msg:arc_verify()", "smtp_server_message_received",
     "msg:arc_verify() is a KumoMTA message method that kumod does not implement yet"),
    ("msg:get_metta('x')", "smtp_server_message_received",
     "msg.get_metta: unknown name (not a KumoMTA or kumod API); did you mean get_meta?"),
    ("conn_meta:get_mta('x')", "smtp_server_message_received",
     "conn_meta.get_mta: unknown name (not a KumoMTA or kumod API); did you mean get_meta?"),
    ("local d = msg:sender().domian", "smtp_server_message_received",
     "address.domian: unknown name (not a KumoMTA or kumod API); did you mean domain?"),
]


@pytest.mark.parametrize("body,event,want", MISSING)
def test_validate_names_the_missing_member(tmp_path, body, event, want):
    text = ("kumo.on('init', function() end)\n"
            "kumo.on('%s', function(msg, conn_meta)\n  %s\nend)\n" % (event, body))
    out = validate(tmp_path, text)
    assert out.returncode == 1, out.stdout + out.stderr
    errs = validate_errors(out)
    assert len(errs) == 1, out.stdout
    got_event, got = errs[0]
    assert got_event == event
    # file:line of the handler's statement, then the message
    assert got == "policy.lua:3: %s" % want, got


def test_validate_runs_config_handlers_with_the_chosen_domain(tmp_path):
    text = """
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == 'broken.example' then
    return kumo.make_queue_config{ retry_intervall = '1m' }
  end
  return kumo.make_queue_config{ egress_pool = 'pool' }
end)
kumo.on('get_egress_pool', function(name)
  return kumo.make_egress_pool{ name = name, entries = { { name = 'src' } } }
end)
kumo.on('get_egress_source', function(name)
  return kumo.make_egress_source{ name = name, ehlo_domian = 'x' }
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path{ connection_limit = 1 }
end)
"""
    out = validate(tmp_path, text)
    assert out.returncode == 1
    errs = validate_errors(out)
    assert [e for e, _ in errs] == ["get_egress_source"], out.stdout
    assert errs[0][1].endswith("make_egress_source: unknown key 'ehlo_domian' "
                               "(did you mean 'ehlo_domain'?)"), errs
    out = validate(tmp_path, text, "--validate-domain", "broken.example")
    errs = validate_errors(out)
    # without a queue config there is no pool to follow
    assert [e for e, _ in errs] == ["get_queue_config"], out.stdout
    assert errs[0][1].endswith("make_queue_config: unknown key 'retry_intervall' "
                               "(did you mean 'retry_interval'?)"), errs
    summary = out.stdout.splitlines()[-2]
    assert re.fullmatch(r"validate: ran 1 handler call with sample arguments "
                        r"\(domain broken\.example\): 1 error", summary), out.stdout


def test_validate_reject_is_not_an_error(tmp_path):
    out = validate(tmp_path, "kumo.on('smtp_server_mail_from', function() "
                             "kumo.reject(550, '5.7.1 no') end)\n")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "validate: smtp_server_mail_from(sender@example.net, conn_meta): " \
           "kumo.reject(550, '5.7.1 no')" in out.stdout.splitlines()


IGNORED_BEFORE = [
    ("kumo.on('init', function() kumo.configure_local_logs{ log_dir = '/tmp/x', "
     "per_record = { Reception = { sufix = '_r' } } } end)",
     "configure_local_logs: per_record.Reception: unknown key 'sufix' (suffix, log_dir, "
     "enable, template, segment_header)"),
    ("kumo.on('init', function() kumo.configure_local_logs{ log_dir = '/tmp/x', "
     "per_record = { Bounce = { template = '{{ id | nosuch }}' } } } end)",
     "configure_local_logs: per_record.Bounce.template: line 1 column 9: unknown filter "
     "'nosuch'"),
    ("kumo.on('init', function() kumo.configure_local_logs{ log_dir = '/tmp/x', "
     "per_record = { Bouncy = {} } } end)",
     "configure_local_logs: per_record: unknown record type 'Bouncy' (Reception, Delivery, "
     "Bounce, TransientFailure, Expiration, AdminBounce, OOB, Feedback, Rejection, "
     "AdminRebind, DeferredInjectionRebind, Delayed, XferOut, XferIn or Any)"),
    ("kumo.on('init', function() kumo.start_esmtp_listener{ listen = '127.0.0.1:0', "
     "trace_headers = { include_meta_names = { 1 } } } end)",
     "start_esmtp_listener: trace_headers.include_meta_names: expected a string, got number"),
    ("kumo.on('tsa_init', function() end)",
     "kumo.on('tsa_init'): a KumoMTA event that kumod does not implement yet "
     "(the handler would never be called)"),
    ("kumo.on('smtp_server_mesage_received', function() end)",
     "kumo.on('smtp_server_mesage_received'): not an event kumod calls (did you mean "
     "'smtp_server_message_received'?); a custom event name (a filter_event, a custom_lua "
     "constructor) must not look like a KumoMTA event"),
    ("kumo.on('init', function() kumo.start_esmtp_listener{ listen = '127.0.0.1:0', "
     "deferred_queue = true } end)",
     "start_esmtp_listener: 'deferred_queue' is a KumoMTA option that kumod does not "
     "implement yet"),
    ("kumo.on('init', function() kumo.make_listener_domain{ log_oob = 'Sometimes' } end)",
     "make_listener_domain: log_oob: expected a boolean value or one of 'Ignore', "
     "'LogThenDrop' or 'LogThenRelay', but got Sometimes"),
]


@pytest.mark.parametrize("text,want", IGNORED_BEFORE)
def test_formerly_ignored_options_are_policy_errors(tmp_path, text, want):
    out = validate(tmp_path, text)
    assert out.returncode == 1
    got = policy_error(out)
    assert re.fullmatch(r"policy\.lua:\d+: " + re.escape(want), got), got


def test_require_of_a_kumomta_module_lists_the_search_path(tmp_path):
    out = validate(tmp_path, "local r = require 'redis'\n")
    assert out.returncode == 1
    got = policy_error(out)
    assert got.startswith("policy.lua:1: module 'redis' not found: "
                          "'redis' is a KumoMTA module that kumod does not "
                          "provide yet; "), got
    # every place Lua looked, on the same line
    assert "no file './redis.lua'" in got
    assert "no field package.preload['redis']" in got


def test_user_module_on_the_path_still_loads(tmp_path):
    d = tmp_path / "policy-extras"
    d.mkdir()
    (d / "queue.lua").write_text("return { answer = 42 }\n")
    out = validate(tmp_path, "local q = require 'policy-extras.queue'\n"
                             "assert(q.answer == 42)\n")
    assert out.returncode == 0, out.stdout + out.stderr


def test_missing_api_at_reception_is_4xx_and_logged(kumod, tmp_path):
    var = tmp_path / "var"
    k = kumod("""
kumo.on('init', function()
  kumo.define_spool{ name = 'data', path = '%s/spool/data' }
  kumo.define_spool{ name = 'meta', path = '%s/spool/meta' }
  kumo.start_esmtp_listener{ listen = '127.0.0.1:0', relay_hosts = { '127.0.0.1' } }
end)
kumo.on('smtp_server_message_received', function(msg)
  kumo.amqp.basic_publish{ routing_key = 'x', payload = 'y' }
end)
""" % (var, var))
    with smtplib.SMTP("127.0.0.1", k.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        s.mail("a@example.com")
        s.rcpt("b@example.com")
        code, text = s.data(b"Subject: x\r\n\r\nbody\r\n")
    assert code == 451 and text.decode().startswith("4.3.0"), text
    line = k.wait_for("event smtp_server_message_received failed")
    assert line.endswith("policy.lua:8: kumo.amqp is a KumoMTA module that kumod does not "
                         "implement yet"), line
    assert k.stop() == 0


EHLO_POLICY = """
kumo.on('init', function()
  kumo.start_esmtp_listener{ listen = '127.0.0.1:0' }
end)
kumo.on('smtp_server_ehlo', function(domain, conn_meta, extensions)
  if extensions == nil then return end  -- HELO
  local out = {}
  for _, e in ipairs(extensions) do
    if e ~= 'SMTPUTF8' then table.insert(out, e) end
  end
  table.insert(out, 'X-SEEN ' .. #extensions)
  return out
end)
"""


def test_ehlo_handler_gets_and_replaces_the_extensions(kumod):
    k = kumod(EHLO_POLICY)
    with smtplib.SMTP("127.0.0.1", k.smtp_port, timeout=10) as s:
        code, _ = s.ehlo("client.test")
        assert code == 250
        feats = dict(s.esmtp_features)
        assert "smtputf8" not in feats
        assert "pipelining" in feats and "8bitmime" in feats and "size" in feats
        # the handler saw kumod's list: what is advertised now, SMTPUTF8 dropped
        # and X-SEEN added
        assert int(feats["x-seen"]) == len(feats)
        assert "starttls" in feats
        code, text = s.helo("client.test")
        assert code == 250
    assert k.stop() == 0


def test_ehlo_handler_bad_list_is_a_policy_error(kumod):
    k = kumod("""
kumo.on('init', function() kumo.start_esmtp_listener{ listen = '127.0.0.1:0' } end)
kumo.on('smtp_server_ehlo', function(domain, conn_meta, extensions)
  return { 'GOOD', 'BAD\\r\\nINJECTED' }
end)
""")
    with smtplib.SMTP("127.0.0.1", k.smtp_port, timeout=10) as s:
        code, text = s.ehlo("client.test")
    assert code == 451, text
    k.wait_for("expected extensions of printable ASCII")
    assert k.stop() == 0


def test_uppercase_recipient_domain_relays(kumod, tmp_path):
    """RCPT TO:<user@LOCAL.TEST> from a peer that may not relay: the policy
    compares with 'local.test' and routes the queue for the lower-case
    domain to a sink."""
    capture = tmp_path / "capture"
    sink = sink_start(kumod, capture)
    var = tmp_path / "var"
    k = kumod("""
kumo.on('init', function()
  kumo.define_spool{ name = 'data', path = '%(var)s/spool/data' }
  kumo.define_spool{ name = 'meta', path = '%(var)s/spool/meta' }
  kumo.configure_local_logs{ log_dir = '%(var)s/logs', max_segment_duration = '1s' }
  kumo.start_esmtp_listener{ listen = '127.0.0.1:0', relay_hosts = {} }
end)
kumo.on('get_listener_domain', function(domain, listener, conn_meta)
  if domain == 'local.test' then return kumo.make_listener_domain{ relay_to = true } end
end)
kumo.on('smtp_server_rcpt_to', function(rcpt)
  assert(rcpt.domain == 'local.test', rcpt.domain)
  assert(rcpt.user == 'User', rcpt.user)
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  assert(domain == 'local.test', domain)
  return kumo.make_queue_config{ protocol = { smtp = { mx_list = { '127.0.0.1:%(port)d' } } } }
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path{ prohibited_hosts = {}, enable_tls = 'Disabled' }
end)
""" % {"var": var, "port": sink.smtp_port})
    with smtplib.SMTP("127.0.0.1", k.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        s.mail("a@example.com")
        code, text = s.rcpt("User@LOCAL.TEST")
        assert code == 250, text
        code, text = s.data(b"Subject: case\r\n\r\nbody\r\n")
        assert code == 250, text
    assert wait_until(lambda: len(captured(capture)) == 1, timeout=15), k.stderr()
    assert k.stop() == 0
    recs = [r for r in records(var / "logs") if r["type"] == "Delivery"]
    assert [r["queue"] for r in recs] == ["local.test"]
    assert [r["recipient"] for r in recs] == ["User@LOCAL.TEST"]  # as received
