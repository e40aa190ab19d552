# SPDX-License-Identifier: Apache-2.0
"""SMTP AUTH inbound (RFC 4954, RFC 4616): PLAIN and LOGIN after STARTTLS,
decided by smtp_server_auth_plain, identities in conn_meta, message meta
and records, relay_from_authz, failures counted, the password never logged
or traced."""

import base64
import os
import re
import smtplib
import socket
import ssl

from conftest import free_port, run_kumod
from test_relay import records, wait_until

PASSWORD = "Tiger-Pa55word-7f3e1c9a-never-logged"

POLICY = """
kumo.on('init', function()
  kumo.define_spool{ name = 'data', path = '%(var)s/spool/data' }
  kumo.define_spool{ name = 'meta', path = '%(var)s/spool/meta' }
  kumo.configure_local_logs{ log_dir = '%(var)s/logs', max_segment_duration = '1s',
                             meta = { 'authn_id', 'authz_id' } }
  kumo.start_esmtp_listener{ listen = '127.0.0.1:0', relay_hosts = {}, %(listener)s }
end)
kumo.on('smtp_server_auth_plain', function(authz, authc, password, conn_meta)
  if authc == 'broken' then error('user database is down') end
  return authc == 'daniel' and password == '%(password)s' and (authz == '' or authz == 'daniel')
end)
kumo.on('smtp_server_mail_from', function(sender, conn_meta)
  conn_meta:set_meta('seen_authn', conn_meta:get_meta('authn_id') or 'none')
end)
kumo.on('get_listener_domain', function(domain, listener, conn_meta)
  if domain == 'customer.example' then
    return kumo.make_listener_domain{ relay_from_authz = { 'daniel' } }
  end
end)
kumo.on('smtp_server_message_received', function(msg, conn_meta)
  msg:set_meta('queue', 'held-for-test')
end)
kumo.on('get_queue_config', function()
  return kumo.make_queue_config{ retry_interval = '1h',
                                 protocol = { smtp = { mx_list = { '127.0.0.1:%(dead)d' } } } }
end)
"""


def start(kumod, tmp_path, listener=""):
    var = tmp_path / "var"
    k = kumod(POLICY % {"var": var, "listener": listener, "password": PASSWORD,
                        "dead": free_port()},
              env={"KUMOD_LOG": "kumod=trace,lua=trace,kumo_server_common=info"})
    return k, var


def spooled_data(var):
    """Paths of the message files in the data spool."""
    return [os.path.join(root, f) for root, _d, files in os.walk(str(var / "spool" / "data"))
            for f in files if len(f) == 32]


def tls_client(port):
    s = smtplib.SMTP("127.0.0.1", port, timeout=10)
    s.ehlo("client.test")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s.starttls(context=ctx)
    s.ehlo("client.test")
    return s


def expect(s, line, code, text=None):
    """Sends one command line; asserts the reply code (and text when given)."""
    verb, _, arg = line.partition(" ")
    got_code, got_text = s.docmd(verb, arg)
    assert got_code == code, (line, got_code, got_text)
    if text is not None:
        assert got_text.decode() == text, got_text


def plain(authz, authc, password):
    return base64.b64encode(("%s\0%s\0%s" % (authz, authc, password)).encode()).decode()


def test_auth_offered_only_after_starttls(kumod, tmp_path):
    k, _ = start(kumod, tmp_path)
    with smtplib.SMTP("127.0.0.1", k.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        assert "auth" not in s.esmtp_features
        code, text = s.docmd("AUTH", "PLAIN " + plain("", "daniel", PASSWORD))
        assert (code, text.decode()) == (538, "5.7.11 Encryption required for requested "
                                               "authentication mechanism")
    with tls_client(k.smtp_port) as s:
        assert s.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
    assert k.stop() == 0


def test_auth_plain_then_relay_from_authz(kumod, tmp_path):
    k, var = start(kumod, tmp_path)
    with tls_client(k.smtp_port) as s:
        # not authenticated: customer.example may not relay from this peer
        s.mail("someone@customer.example")
        code, text = s.rcpt("rcpt@elsewhere.example")
        assert code == 550, text
        s.rset()
        code, text = s.docmd("AUTH", "PLAIN " + plain("", "daniel", PASSWORD))
        assert (code, text.decode()) == (235, "2.7.0 Authentication successful")
        code, text = s.docmd("AUTH", "PLAIN " + plain("", "daniel", PASSWORD))
        assert code == 503, text
        s.mail("someone@customer.example")
        code, text = s.rcpt("rcpt@elsewhere.example")
        assert code == 250, text
        code, text = s.data(b"Subject: authenticated\r\n\r\nbody\r\n")
        assert code == 250, text
    recs = wait_until(lambda: [r for r in records(var / "logs") if r["type"] == "Reception"],
                      timeout=10)
    assert len(recs) == 1, k.stderr()
    assert recs[0]["meta"] == {"authn_id": "daniel", "authz_id": "daniel"}
    # RFC 3848: authenticated over TLS
    # (the spool file frames the message: find the header inside it)
    data = open(spooled_data(var)[0], "rb").read().decode("utf-8", "replace")
    received = re.search(r"Received: (.*?)\r\n(?![ \t])", data, re.S).group(1)
    assert re.search(r"\swith ESMTPSA\s", received), received
    assert k.stop() == 0
    assert_password_never_shown(k, var)


def test_auth_login_and_smtplib_login(kumod, tmp_path):
    k, var = start(kumod, tmp_path)
    with tls_client(k.smtp_port) as s:
        expect(s, "AUTH LOGIN", 334, "VXNlcm5hbWU6")
        expect(s, base64.b64encode(b"daniel").decode(), 334, "UGFzc3dvcmQ6")
        expect(s, base64.b64encode(PASSWORD.encode()).decode(), 235)
    with tls_client(k.smtp_port) as s:
        s.login("daniel", PASSWORD)  # smtplib picks a mechanism itself
    assert k.stop() == 0
    assert_password_never_shown(k, var)


def test_auth_failures_and_syntax(kumod, tmp_path):
    k, var = start(kumod, tmp_path)
    with tls_client(k.smtp_port) as s:
        expect(s, "AUTH CRAM-MD5", 504, "5.5.4 AUTH CRAM-MD5 not supported")
        expect(s, "AUTH PLAIN", 334, "")
        expect(s, "*", 501, "5.0.0 Authentication cancelled")
        expect(s, "AUTH PLAIN not-base64!", 501)
        expect(s, "AUTH PLAIN " + base64.b64encode(b"no-nul-here").decode(), 501,
               "5.5.2 Malformed AUTH PLAIN response")
        expect(s, "AUTH PLAIN " + plain("", "broken", PASSWORD), 454,
               "4.7.0 Temporary authentication failure")
        s.mail("a@example.com")
        expect(s, "AUTH PLAIN " + plain("", "daniel", PASSWORD), 503)  # not in a transaction
        s.rset()
        expect(s, "AUTH PLAIN " + plain("", "daniel", "wrong"), 535,
               "5.7.8 Authentication credentials invalid")
        # the third failure (454 above, 535, now) ends the session
        s.putcmd("AUTH", "PLAIN " + plain("", "eve", "guess"))
        code, text = s.getreply()
        assert code == 535, text
        code, text = s.getreply()
        assert code == 421, text
    assert k.stop() == 0
    assert_password_never_shown(k, var)


def test_auth_without_tls_listener_option(kumod, tmp_path):
    k, _ = start(kumod, tmp_path, listener="auth_without_tls = true")
    with smtplib.SMTP("127.0.0.1", k.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        assert "auth" in s.esmtp_features
        s.login("daniel", PASSWORD)
    assert k.stop() == 0


def test_no_handler_no_auth(kumod, tmp_path):
    k = kumod("kumo.on('init', function() kumo.start_esmtp_listener{ listen = '127.0.0.1:0', "
              "auth_without_tls = true } end)")
    with smtplib.SMTP("127.0.0.1", k.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        assert "auth" not in s.esmtp_features
        code, text = s.docmd("AUTH", "PLAIN " + plain("", "daniel", PASSWORD))
        assert code == 502, text
    assert k.stop() == 0


def assert_password_never_shown(k, var):
    """Neither the password nor a base64 form of it appears in the trace-level
    diagnostics or the log records."""
    forms = [PASSWORD, base64.b64encode(PASSWORD.encode()).decode(),
             plain("", "daniel", PASSWORD)]
    text = k.stderr()
    assert "AUTH PLAIN (initial response not shown)" in text  # the trace ran
    recs = "\n".join(str(r) for r in records(var / "logs"))
    for f in forms:
        assert f not in text
        assert f not in recs


# --- outbound: kumod relaying with AUTH to a receiving kumod that requires it

RECEIVER = """
kumo.on('init', function()
  kumo.start_esmtp_listener{ listen = '127.0.0.1:0', relay_hosts = { '127.0.0.1' },
                             hostname = 'receiver.test', %(listener)s }
end)
kumo.on('smtp_server_auth_plain', function(authz, authc, password, conn_meta)
  return authc == 'relay-user' and password == '%(password)s'
end)
kumo.on('smtp_server_mail_from', function(sender, conn_meta)
  if not conn_meta:get_meta('authn_id') then
    kumo.reject(530, '5.7.0 Authentication required')
  end
end)
kumo.on('smtp_server_message_received', function(msg, conn_meta)
  kumo.log_info('RECEIVED-AS ' .. msg:get_meta('authn_id'))
  msg:set_meta('queue', 'null')
end)
"""

SENDER = """
kumo.on('init', function()
  kumo.define_spool{ name = 'data', path = '%(var)s/spool/data' }
  kumo.define_spool{ name = 'meta', path = '%(var)s/spool/meta' }
  kumo.configure_local_logs{ log_dir = '%(var)s/logs', max_segment_duration = '1s' }
  kumo.start_esmtp_listener{ listen = '127.0.0.1:0', relay_hosts = { '127.0.0.1' } }
end)
kumo.on('get_queue_config', function()
  return kumo.make_queue_config{ retry_interval = '1h',
                                 protocol = { smtp = { mx_list = { '127.0.0.1:%(port)d' } } } }
end)
kumo.on('get_egress_path_config', function()
  return kumo.make_egress_path{ prohibited_hosts = {}, enable_tls = '%(tls)s',
    smtp_auth_plain_username = 'relay-user', smtp_auth_plain_password = %(secret)s,
    %(extra)s }
end)
"""


def relay_with_auth(kumod, tmp_path, tls="RequiredInsecure", secret=None, extra="",
                    receiver_listener=""):
    rx = kumod(RECEIVER % {"password": PASSWORD, "listener": receiver_listener},
               env={"KUMOD_LOG": "kumod=trace,lua=info,kumo_server_common=info"},
               policy_name="receiver.lua")
    var = tmp_path / "var"
    tx = kumod(SENDER % {"var": var, "port": rx.smtp_port, "tls": tls,
                         "secret": secret or "{ key_data = '%s' }" % PASSWORD, "extra": extra},
               env={"KUMOD_LOG": "kumod=trace,kumo_server_common=info"}, policy_name="sender.lua")
    with smtplib.SMTP("127.0.0.1", tx.smtp_port, timeout=10) as s:
        s.sendmail("a@example.com", ["b@example.net"], b"Subject: relayed\r\n\r\nbody\r\n")
    outcome = wait_until(lambda: [r for r in records(var / "logs")
                                  if r["type"] in ("Delivery", "TransientFailure", "Bounce")],
                         timeout=15)
    assert outcome, tx.stderr()
    return rx, tx, var, outcome[0]


def test_outbound_auth_over_tls(kumod, tmp_path):
    rx, tx, var, rec = relay_with_auth(kumod, tmp_path)
    assert rec["type"] == "Delivery", rec
    rx.wait_for("RECEIVED-AS relay-user")
    assert tx.stop() == 0 and rx.stop() == 0
    for text in (tx.stderr(), rx.stderr(), "\n".join(str(r) for r in records(var / "logs"))):
        assert PASSWORD not in text
        assert plain("", "relay-user", PASSWORD) not in text


def test_outbound_auth_password_from_a_file(kumod, tmp_path):
    secret = tmp_path / "smtp-password"
    secret.write_text(PASSWORD + "\n")  # one trailing line break is dropped
    _, _, _, rec = relay_with_auth(kumod, tmp_path, secret="'%s'" % secret)
    assert rec["type"] == "Delivery", rec


def test_outbound_auth_refused_is_transient(kumod, tmp_path):
    wrong = "Wrong-Pa55word-e41b7d20"
    _, tx, var, rec = relay_with_auth(kumod, tmp_path, secret="{ key_data = '%s' }" % wrong)
    assert rec["type"] == "TransientFailure", rec
    assert "AUTH PLAIN as relay-user refused: 535 5.7.8" in rec["response"]["content"], rec
    assert wrong not in tx.stderr()


def test_outbound_auth_never_in_plaintext(kumod, tmp_path):
    _, _, _, rec = relay_with_auth(kumod, tmp_path, tls="Disabled",
                                   receiver_listener="auth_without_tls = true")
    assert rec["type"] == "TransientFailure", rec
    assert "the connection is not using TLS" in rec["response"]["content"], rec


def test_outbound_auth_plaintext_when_allowed(kumod, tmp_path):
    _, _, _, rec = relay_with_auth(kumod, tmp_path, tls="Disabled",
                                   extra="allow_smtp_auth_plain_without_tls = true",
                                   receiver_listener="auth_without_tls = true")
    assert rec["type"] == "Delivery", rec


def test_outbound_auth_keysource_vault_refused(tmp_path):
    (tmp_path / "policy.lua").write_text(
        "kumo.on('get_egress_path_config', function() return kumo.make_egress_path{ "
        "smtp_auth_plain_username = 'u', smtp_auth_plain_password = "
        "{ vault_mount = 'secret', vault_path = 'x' } } end)\n")
    out = run_kumod(["--validate", "--policy", "policy.lua"], cwd=str(tmp_path))
    assert out.returncode == 1
    assert "make_egress_path: smtp_auth_plain_password: HashiCorp Vault key sources (vault_" \
        in out.stdout
