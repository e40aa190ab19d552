# SPDX-License-Identifier: Apache-2.0
"""make_egress_path / make_queue_config / make_egress_source: KumoMTA keys
kumod does not implement are policy errors (never silently ignored), and the
per-command timeouts, enable_pipelining and refresh_interval take effect
(docs/relay.md)."""

import time

import pytest

from conftest import run_kumod
from test_egress import (RELAY_POLICY, PlainSMTP, by_type, plain_server, relay_start, send_many,
                         spooled_ids)
from test_relay import wait_until

REJECTED = [
    ("make_egress_path", "enable_mta_sts = true", "enable_mta_sts: MTA-STS is not implemented "
     "(accepted: false)"),
    ("make_egress_path", "enable_dane = true", "enable_dane: DANE is not implemented"),
    ("make_egress_path", "enable_rset = false", "enable_rset: closing instead of RSET is not "
     "implemented (accepted: true)"),
    ("make_egress_path", "skip_hosts = { 'not-a-cidr' }", "skip_hosts"),
    ("make_egress_path", "max_recipients_per_batch = 50", "max_recipients_per_batch: splitting"),
    ("make_egress_path", "consecutive_connection_failures_before_delay = 10",
     "delaying a site after connection failures is not implemented"),
    ("make_egress_path", "reconnect_strategy = 'TerminateSession'",
     "(accepted: ConnectNextHost)"),
    ("make_egress_path", "source_selection_rate = '10/s'", "source selection rates are not "
     "implemented"),
    ("make_egress_path", "dispatcher_progress_watchdog_timeout = '1m'",
     "the dispatcher watchdog is not implemented"),
    ("make_queue_config", "max_message_rate = '10/s'", "make_queue_config: max_message_rate: a "
     "scheduled-queue message rate is not implemented"),
    ("make_queue_config", "refresh_strategy = 'Sometimes'",
     "refresh_strategy: not a KumoMTA refresh strategy (accepted: Ttl|Epoch)"),
    ("make_egress_path", "refresh_strategy = 'Hourly'",
     "refresh_strategy: not a KumoMTA refresh strategy (accepted: Ttl|Epoch)"),
    ("make_queue_config", "strategy = 'Heap'", "strategy: not a KumoMTA queue strategy"),
    ("make_queue_config", "provider_name = 'big'", "provider grouping is not implemented"),
    ("make_egress_source", "name = 's', socks5_proxy_server = '127.0.0.1:1080'",
     "SOCKS5 egress is not implemented"),
    ("make_egress_source", "name = 's', ha_proxy_server = '127.0.0.1:1080'",
     "HAProxy egress is not implemented"),
    ("make_egress_source", "name = 's', suspend_when_unplumbed = true", "(accepted: false)"),
]


def validate(tmp_path, body):
    p = tmp_path / "p.lua"
    p.write_text("local kumo = require 'kumo'\nkumo.on('init', function()\n  %s\nend)\n" % body)
    return run_kumod(["--validate", "--policy", str(p)])


@pytest.mark.parametrize("fn,arg,want", REJECTED, ids=[r[1].split(" =")[0].split(", ")[-1]
                                                       for r in REJECTED])
def test_unimplemented_values_are_policy_errors(tmp_path, fn, arg, want):
    r = validate(tmp_path, "kumo.%s{ %s }" % (fn, arg))
    assert r.returncode == 1 and want in r.stderr, r.stderr


def test_values_kumod_implements_are_accepted(tmp_path):
    r = validate(tmp_path, """
  kumo.make_egress_path{ enable_mta_sts = false, enable_dane = false, enable_rset = true,
    skip_hosts = {}, reconnect_strategy = 'ConnectNextHost', idle_timeout = '0s',
    enable_pipelining = false, auth_timeout = '10s', ehlo_timeout = '1m',
    mail_from_timeout = '1m', rcpt_to_timeout = '1m', rset_timeout = '5s',
    starttls_timeout = '5s', refresh_interval = '30s' }
  kumo.make_queue_config{ strategy = 'TimerWheel', refresh_strategy = 'Ttl',
    timerwheel_tick_interval = '1s', shrink_policy = {}, refresh_interval = '30s',
    reap_interval = '10m' }
  kumo.make_egress_source{ name = 's', suspend_when_unplumbed = false, ttl = '1m' }""")
    assert r.returncode == 0, r.stderr


def test_a_path_config_error_fails_attempts_and_keeps_the_message(kumod, tmp_path):
    """An unimplemented option in get_egress_path_config is not replaced by
    defaults: nothing is sent, the message stays with the reason."""
    srv, port = plain_server(PlainSMTP)
    try:
        var = tmp_path / "var"
        relay = relay_start(kumod, var, "127.0.0.1:%d" % port,
                            path="enable_tls = 'Disabled', enable_mta_sts = true")
        send_many(relay.smtp_port, ["sts@example.com"])
        assert wait_until(lambda: by_type(var, "TransientFailure"), timeout=15), relay.stderr()
        text = by_type(var, "TransientFailure")[0]["response"]["content"]
        assert "get_egress_path_config" in text and "MTA-STS is not implemented" in text, text
        assert srv.sessions == 0  # never connected
        assert relay.stop() == 0
        assert len(spooled_ids(var)) == 1
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("verb,key,state", [
    (b"EHLO", "ehlo_timeout", "Ehlo"),
    (b"MAIL", "mail_from_timeout", "Mail"),
    (b"RCPT", "rcpt_to_timeout", "Rcpt"),
])
def test_per_command_timeouts(kumod, tmp_path, verb, key, state):
    srv, port = plain_server(PlainSMTP, stall=verb)
    try:
        var = tmp_path / "var"
        # the other command timeouts stay at their 5-minute defaults
        relay = relay_start(kumod, var, "127.0.0.1:%d" % port,
                            path="enable_tls = 'Disabled', enable_pipelining = false, "
                                 "%s = '1s'" % key)
        t0 = time.monotonic()
        send_many(relay.smtp_port, ["slow@example.com"])
        assert wait_until(lambda: by_type(var, "TransientFailure"), timeout=15), relay.stderr()
        assert time.monotonic() - t0 < 10
        text = by_type(var, "TransientFailure")[0]["response"]["content"]
        assert "timed out waiting in state %s" % state in text, text
        assert relay.stop() == 0
        assert srv.messages == 0 and len(spooled_ids(var)) == 1
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("pipelining", [True, False])
def test_enable_pipelining(kumod, tmp_path, pipelining):
    srv, port = plain_server(PlainSMTP)
    try:
        var = tmp_path / "var"
        relay = relay_start(kumod, var, "127.0.0.1:%d" % port,
                            path="enable_tls = 'Disabled', enable_pipelining = %s"
                                 % str(pipelining).lower())
        send_many(relay.smtp_port, ["p@example.com"])
        assert wait_until(lambda: by_type(var, "Delivery"), timeout=15), relay.stderr()
        assert relay.stop() == 0
        mail = [batched for v, batched in srv.lines if v == b"MAIL"]
        # pipelined: RCPT (and DATA) follow MAIL in the same write
        assert mail == [pipelining], srv.lines
    finally:
        srv.shutdown()
        srv.server_close()


def test_an_empty_queue_is_reaped_after_reap_interval(kumod, tmp_path):
    srv, port = plain_server(PlainSMTP)
    try:
        var = tmp_path / "var"
        relay = relay_start(kumod, var, "127.0.0.1:%d" % port, pool="reap_interval = '1s',",
                            env={"KUMOD_LOG": "kumod::queue=debug,kumod=info,"
                                              "kumo_server_common=info"})
        send_many(relay.smtp_port, ["reap@example.com"])
        line = relay.wait_for("queue=example.com reaped after", timeout=15)
        assert int(line.split("reaped after ")[1].split("ms")[0]) >= 1000, line
        assert by_type(var, "Delivery")
        # the next message recreates the queue and is delivered as usual
        send_many(relay.smtp_port, ["reap2@example.com"])
        assert wait_until(lambda: len(by_type(var, "Delivery")) == 2, timeout=15)
        assert relay.stderr().count("queue=example.com created") == 2, relay.stderr()
        assert relay.stop() == 0
        assert srv.messages == 2
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("idle", ["2s", "0s"])
def test_idle_timeout_keeps_the_connection_for_the_next_message(kumod, tmp_path, idle):
    srv, port = plain_server(PlainSMTP)
    try:
        var = tmp_path / "var"
        relay = relay_start(kumod, var, "127.0.0.1:%d" % port,
                            path="enable_tls = 'Disabled', idle_timeout = %r" % idle,
                            env={"KUMOD_LOG": "kumod::smtp_dispatcher=trace,kumod=info,"
                                              "kumo_server_common=info"})
        send_many(relay.smtp_port, ["one@example.com"])
        assert wait_until(lambda: len(by_type(var, "Delivery")) == 1, timeout=15)
        time.sleep(0.3)
        send_many(relay.smtp_port, ["two@example.com"])
        assert wait_until(lambda: len(by_type(var, "Delivery")) == 2, timeout=15)
        # idle: the second message used the first connection; 0s: a new one
        assert srv.sessions == (1 if idle == "2s" else 2), relay.stderr()
        if idle == "2s":
            relay.wait_for("phase=Idle")
            # after the idle timeout the connection is closed (QUIT) and the
            # next message connects again
            assert wait_until(lambda: srv.lines and srv.lines[-1][0] == b"QUIT", timeout=10)
            send_many(relay.smtp_port, ["three@example.com"])
            assert wait_until(lambda: len(by_type(var, "Delivery")) == 3, timeout=15)
            assert srv.sessions == 2
        assert relay.stop() == 0
    finally:
        srv.shutdown()
        srv.server_close()


def counted(path, value):
    """A Lua expression that appends a line to path each time it is evaluated
    (each call of the handler building the table) and yields value."""
    return ("(function() local f = assert(io.open(%r, 'a')) f:write('x\\n') f:close() "
            "return %s end)()" % (str(path), value))


@pytest.mark.parametrize("strategy", ["Ttl", "Epoch"])
def test_refresh_strategy(kumod, tmp_path, strategy):
    """refresh_interval = '1s': with 'Ttl' a message 1.5 s later asks
    get_queue_config and get_egress_path_config again; with 'Epoch' (kumod's
    configuration epoch never changes while it runs) once per process."""
    srv, port = plain_server(PlainSMTP)
    try:
        var = tmp_path / "var"
        qcalls, pcalls = tmp_path / "queue-calls", tmp_path / "path-calls"
        relay = relay_start(
            kumod, var, "127.0.0.1:%d" % port,
            pool="refresh_interval = '1s', refresh_strategy = %r, max_age = %s,"
                 % (strategy, counted(qcalls, "'1d'")),
            path="enable_tls = 'Disabled', refresh_interval = '1s', refresh_strategy = %r, "
                 "connection_limit = %s" % (strategy, counted(pcalls, "4")))
        send_many(relay.smtp_port, ["one@example.com"])
        assert wait_until(lambda: len(by_type(var, "Delivery")) == 1, timeout=15)
        time.sleep(1.5)
        send_many(relay.smtp_port, ["two@example.com"])
        assert wait_until(lambda: len(by_type(var, "Delivery")) == 2, timeout=15)
        assert relay.stop() == 0
        calls = (len(qcalls.read_text().split()), len(pcalls.read_text().split()))
        if strategy == "Epoch":
            assert calls == (1, 1), calls
        else:
            assert calls[0] >= 2 and calls[1] >= 2, calls
    finally:
        srv.shutdown()
        srv.server_close()


class LuaList(str):
    """Text spliced into the relay policy's mx_list as is (several entries)."""

    def __repr__(self):
        return str(self)


def test_skip_hosts_leaves_addresses_out(kumod, tmp_path):
    srv, port = plain_server(PlainSMTP)
    try:
        var = tmp_path / "var"
        mx = LuaList("'127.0.0.2:%d', '127.0.0.1:%d'" % (port, port))
        relay = relay_start(kumod, var, mx,
                            path="enable_tls = 'Disabled', skip_hosts = { '127.0.0.2/32' }",
                            env={"KUMOD_LOG": "kumod::smtp_dispatcher=debug,kumod=info,"
                                              "kumo_server_common=info"})
        send_many(relay.smtp_port, ["skip@example.com"])
        assert wait_until(lambda: by_type(var, "Delivery"), timeout=15), relay.stderr()
        log = relay.stderr()
        assert "skipping 127.0.0.2:%d: skip_hosts" % port in log, log
        assert 'connecting to "127.0.0.1"' in log and 'connecting to "127.0.0.2"' not in log
        assert relay.stop() == 0
        # every address skipped: kept, with the reason
        var2 = tmp_path / "var2"
        relay2 = relay_start(kumod, var2, "127.0.0.1:%d" % port, name="relay2.lua",
                             path="enable_tls = 'Disabled', skip_hosts = { '127.0.0.0/8' }")
        send_many(relay2.smtp_port, ["skip2@example.com"])
        assert wait_until(lambda: by_type(var2, "TransientFailure"), timeout=15)
        text = by_type(var2, "TransientFailure")[0]["response"]["content"]
        assert "are prohibited_hosts (0) or skip_hosts (1)" in text, text
        assert relay2.stop() == 0
        assert len(spooled_ids(var2)) == 1 and srv.messages == 1
    finally:
        srv.shutdown()
        srv.server_close()


def test_prohibited_hosts_default_refuses_loopback(kumod, tmp_path):
    """KumoMTA's default prohibited_hosts (127.0.0.0/8, ::1, 0.0.0.0, ::):
    a policy that does not clear it never connects to a loopback MX."""
    srv, port = plain_server(PlainSMTP)
    try:
        var = tmp_path / "var"
        policy = RELAY_POLICY.replace("prohibited_hosts = {}, ", "") % {
            "var": str(var), "mx": "127.0.0.1:%d" % port, "path": "enable_tls = 'Disabled'",
            "pool": "", "extra": ""}
        assert "prohibited_hosts =" not in policy
        relay = kumod(policy, policy_name="relay.lua")
        send_many(relay.smtp_port, ["loop@example.com"])
        assert wait_until(lambda: by_type(var, "TransientFailure"), timeout=15), relay.stderr()
        text = by_type(var, "TransientFailure")[0]["response"]["content"]
        assert "all 1 addresses for mx_list:127.0.0.1:%d are prohibited_hosts" % port in text, text
        assert relay.stop() == 0
        assert srv.sessions == 0 and len(spooled_ids(var)) == 1
    finally:
        srv.shutdown()
        srv.server_close()
