# SPDX-License-Identifier: Apache-2.0
"""kumod process behaviour: flags, bad input, signals, diagnostic output."""

import json
import os
import re
import signal
import socket
import time

import pytest

from conftest import IS_ROOT, KUMOD_BIN, free_port, kumod_env, run_kumod, run_on_pty

IDLE_POLICY = "kumo.on('init', function() end)\n"
FLAGS = ["--policy", "--validate", "--user", "--pid-file", "--diag-format", "--diag-log-dir",
         "--tokio-console", "--list-metrics", "--help", "--version"]


def write(tmp_path, text, name="policy.lua"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def one_line(text):
    lines = [l for l in text.splitlines() if l.strip()]
    assert len(lines) == 1, f"want one line, got:\n{text}"
    return lines[0]


# --- flags ------------------------------------------------------------------


def test_help_lists_flags():
    r = run_kumod(["--help"])
    assert r.returncode == 0, r.stderr
    for flag in FLAGS:
        assert flag in r.stdout, f"{flag} missing from --help:\n{r.stdout}"


def test_list_metrics_markdown_is_the_doc_table():
    r = run_kumod(["--list-metrics=markdown"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("| Name | Type | Labels | Meaning |\n"), r.stdout
    doc = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "metrics.md")).read()
    assert r.stdout in doc, "docs/metrics.md is stale: run make metrics-doc"
    r = run_kumod(["--list-metrics"])
    assert r.returncode == 0 and "\nready_count gauge service " in "\n" + r.stdout, r.stdout
    r = run_kumod(["--list-metrics=yaml"])
    assert r.returncode == 2 and "yaml" in one_line(r.stderr), r


def test_version():
    r = run_kumod(["--version"])
    assert r.returncode == 0, r.stderr
    assert re.match(r"kumod \d+\.\d+\.\d+", r.stdout), r.stdout


@pytest.mark.parametrize("flag", ["--bogus", "--policyy=x", "-Z"])
def test_unknown_flag_is_a_usage_error(flag):
    r = run_kumod([flag])
    assert r.returncode == 2, r
    line = one_line(r.stderr)
    assert flag.split("=")[0] in line, line


def test_missing_flag_value_is_a_usage_error():
    r = run_kumod(["--policy"])
    assert r.returncode == 2, r
    assert "--policy" in one_line(r.stderr)


# --- bad input ----------------------------------------------------------------


def test_missing_policy_file(tmp_path):
    path = str(tmp_path / "nope.lua")
    r = run_kumod(["--policy", path])
    assert r.returncode == 1, r
    assert path in one_line(r.stderr)


@pytest.mark.skipif(IS_ROOT, reason="root can read a mode-000 file")
def test_unreadable_policy_file(tmp_path):
    path = write(tmp_path, IDLE_POLICY)
    os.chmod(path, 0)
    r = run_kumod(["--policy", path])
    assert r.returncode == 1, r
    assert path in one_line(r.stderr)


def test_lua_syntax_error(tmp_path):
    path = write(tmp_path, "kumo.on('init', function()\n  local x = = 1\nend)\n")
    r = run_kumod(["--policy", path])
    assert r.returncode == 1, r
    assert re.search(r"policy\.lua:2:", r.stderr), r.stderr
    assert "Segmentation" not in r.stderr and "AddressSanitizer" not in r.stderr


def test_lua_runtime_error_in_init(tmp_path):
    path = write(tmp_path, "kumo.on('init', function()\n  error('boom in init')\nend)\n")
    r = run_kumod(["--policy", path])
    assert r.returncode == 1, r
    assert re.search(r"policy\.lua:2: boom in init", r.stderr), r.stderr


# --- start-up errors: one line each ---------------------------------------------


def test_startup_errors_are_one_line(tmp_path):
    """A port in use, an unwritable spool and an error raised in init are each reported
    by one stderr line ("kumod: policy error: ..."), not a log line and then that line."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    afile = tmp_path / "afile"
    afile.write_text("")
    cases = {
        "port": "kumo.start_esmtp_listener{ listen = '127.0.0.1:%d' }"
                % taken.getsockname()[1],
        "spool": "kumo.define_spool{ name = 'data', path = '%s/data' }\n"
                 "  kumo.define_spool{ name = 'meta', path = '%s/meta' }" % (afile, afile),
        "error": "error('boom in init')",
    }
    try:
        for name, body in cases.items():
            path = write(tmp_path, "local kumo = require 'kumo'\n"
                         "kumo.on('init', function()\n  %s\nend)\n" % body, name + ".lua")
            r = run_kumod(["--policy", path])
            assert r.returncode == 1, (name, r)
            lines = r.stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith("kumod: policy error: "), (name, lines)
    finally:
        taken.close()


def test_unknown_user_refused_before_the_policy_runs(tmp_path):
    marker = tmp_path / "ran"
    port = free_port()
    path = write(tmp_path, "local kumo = require 'kumo'\nkumo.on('init', function()\n"
                 "  io.open('%s', 'w'):close()\n"
                 "  kumo.start_esmtp_listener{ listen = '127.0.0.1:%d' }\nend)\n"
                 % (marker, port))
    r = run_kumod(["--policy", path, "--user", "nosuchuser-kumod"])
    assert r.returncode == 1, r
    assert r.stderr.splitlines() == ["kumod: --user 'nosuchuser-kumod': no such user"], r.stderr
    assert not marker.exists(), "init ran before --user was checked"


def test_validate_good_policy(tmp_path):
    path = write(tmp_path, IDLE_POLICY)
    r = run_kumod(["--validate", "--policy", path])
    assert r.returncode == 0, r


def test_validate_failing_init(tmp_path):
    path = write(tmp_path, "kumo.on('init', function()\n  error('nope')\nend)\n")
    r = run_kumod(["--validate", "--policy", path])
    assert r.returncode == 1, r
    assert "nope" in r.stderr, r.stderr


def test_invalid_kumod_log_aborts_before_anything_starts(tmp_path):
    mark = tmp_path / "init-ran"
    path = write(tmp_path, "kumo.on('init', function()\n"
                 f"  io.open({str(mark)!r}, 'w'):close()\nend)\n")
    r = run_kumod(["--policy", path], env={"KUMOD_LOG": "kumod=verbose"})
    assert r.returncode == 1, r
    assert "kumod=verbose" in one_line(r.stderr), r.stderr
    assert not mark.exists(), "init ran although KUMOD_LOG was invalid"


def test_non_utf8_kumod_log_counts_as_unset(tmp_path):
    # As upstream: not valid UTF-8 -> the default filter, not a parse error.
    # The same text in valid UTF-8 is an invalid level and aborts.
    path = write(tmp_path, IDLE_POLICY)
    bad = run_kumod(["--policy", path, "--validate"], env={"KUMOD_LOG": "kumod=verbose"})
    assert bad.returncode == 1, bad
    r = run_kumod(["--policy", path, "--validate"],
                  env={"KUMOD_LOG": "kumod=verbose\udcff"})
    assert r.returncode == 0, r.stderr


def test_unwritable_diag_log_dir(tmp_path):
    # A path under a regular file can never be a directory, even for root.
    blocker = tmp_path / "file"
    blocker.write_text("")
    bad = str(blocker / "logs")
    r = run_kumod(["--policy", write(tmp_path, IDLE_POLICY), "--diag-log-dir", bad])
    assert r.returncode == 1, r
    assert bad in one_line(r.stderr)


# --- running ----------------------------------------------------------------


def test_pid_file_names_this_process(kumod, tmp_path):
    """--pid-file picks one kumod among several (make run) for bpftrace -p / lttng."""
    pid_file = tmp_path / "run" / "kumod.pid"
    pid_file.parent.mkdir()
    k = kumod(IDLE_POLICY, args=["--pid-file", str(pid_file)])
    assert pid_file.read_text() == "%d\n" % k.pid
    assert k.stop() == 0
    assert not pid_file.exists(), "the pid file outlived the process"
    bad = tmp_path / "file"
    bad.write_text("")
    r = run_kumod(["--policy", write(tmp_path, IDLE_POLICY), "--pid-file", str(bad / "x.pid")])
    assert r.returncode == 1 and str(bad / "x.pid") in one_line(r.stderr), r


def test_diag_log_dir_receives_lines(kumod, tmp_path):
    logdir = tmp_path / "logs"
    logdir.mkdir()
    policy = "kumo.on('init', function()\n  kumo.log_info('hello from policy')\nend)\n"
    k = kumod(policy, args=["--diag-log-dir", str(logdir)], wait=None)
    deadline = time.monotonic() + 15
    text = ""
    while "initialization complete" not in text:
        assert k.running(), f"kumod exited ({k.proc.returncode}): {k.stderr()}"
        assert time.monotonic() < deadline, f"no 'initialization complete' in {logdir}: {text}"
        time.sleep(0.1)
        text = "".join(p.read_text(errors="replace") for p in logdir.iterdir())
    assert k.stop() == 0
    files = sorted(p.name for p in logdir.iterdir())
    assert files and all(re.fullmatch(r"log\.\d{4}-\d{2}-\d{2}-\d{2}", f) for f in files), files
    text = "".join(p.read_text(errors="replace") for p in logdir.iterdir())
    assert "hello from policy" in text, text
    assert "initialization complete" not in k.stderr(), "diagnostics went to stderr too"


def _validate_stderr(tmp_path, env, tty=False):
    """stderr of `kumod --validate` at debug level, read from a pipe (or a pty)."""
    args = ["--validate", "--policy", write(tmp_path, IDLE_POLICY)]
    env = dict({"KUMOD_LOG": "debug", "NO_COLOR": None, "KUMOD_LOG_COLOR": None}, **env)
    if not tty:
        r = run_kumod(args, env=env)
        assert r.returncode == 0, r
        return r.stderr
    rc, out = run_on_pty([KUMOD_BIN, *args], env=kumod_env(env))
    assert rc == 0, out
    return out.decode(errors="replace")


def test_log_colour_only_on_a_terminal(tmp_path):
    # a pipe (2>file, | tee): plain text, even with NO_COLOR unset
    plain = _validate_stderr(tmp_path, {})
    assert "starting pid=" in plain and "\x1b[" not in plain, plain
    # a terminal: coloured, unless NO_COLOR is set or KUMOD_LOG_COLOR=never
    assert "\x1b[" in _validate_stderr(tmp_path, {}, tty=True)
    assert "\x1b[" not in _validate_stderr(tmp_path, {"NO_COLOR": "1"}, tty=True)
    assert "\x1b[" not in _validate_stderr(tmp_path, {"KUMOD_LOG_COLOR": "never"}, tty=True)
    # KUMOD_LOG_COLOR=always colours a pipe (and wins over NO_COLOR)
    forced = _validate_stderr(tmp_path, {"KUMOD_LOG_COLOR": "always", "NO_COLOR": "1"})
    assert "\x1b[" in forced, forced
    r = run_kumod(["--validate", "--policy", write(tmp_path, IDLE_POLICY)],
                  env={"KUMOD_LOG_COLOR": "sometimes"})
    assert r.returncode == 1 and "KUMOD_LOG_COLOR" in one_line(r.stderr), r


def test_diag_format_json(kumod):
    k = kumod(IDLE_POLICY, args=["--diag-format", "json"])
    assert k.stop() == 0
    records = []
    for line in k.lines():
        if not line.strip():
            continue
        rec = json.loads(line)  # every line is one JSON object
        records.append(rec)
        for key in ("timestamp", "level", "fields", "target"):
            assert key in rec, f"{key} missing: {line}"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", rec["timestamp"]), line
        assert rec["level"] in ("ERROR", "WARN", "INFO", "DEBUG", "TRACE"), line
    init = [r for r in records if r["fields"].get("message") == "initialization complete"]
    assert init and init[0]["target"] == "kumo_server_common::start", records


def test_full_format_line_shape(kumod):
    k = kumod(IDLE_POLICY)
    line = k.wait_for("initialization complete")
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z  INFO \S+ "
                    r"kumo_server_common::start: initialization complete$", line), line
    assert "\x1b[" not in k.stderr(), "NO_COLOR=1 must disable colour"


@pytest.mark.nosan
def test_sigterm_exits_zero_quickly(kumod):
    k = kumod(IDLE_POLICY)  # waits for 'initialization complete'
    t0 = time.monotonic()
    status = k.stop(signal.SIGTERM, timeout=5)
    assert status == 0, k.stderr()
    assert time.monotonic() - t0 < 5
    lines = k.lines()
    init = next(i for i, l in enumerate(lines) if "initialization complete" in l)
    assert init >= 0


def test_sigint_exits_zero(kumod):
    k = kumod(IDLE_POLICY)
    assert k.stop(signal.SIGINT, timeout=5) == 0, k.stderr()


def test_sighup_does_not_kill(kumod):
    k = kumod(IDLE_POLICY)
    os.kill(k.pid, signal.SIGHUP)
    time.sleep(0.5)
    assert k.running(), f"SIGHUP killed kumod: {k.stderr()}"
    assert k.stop() == 0


def test_log_info_from_policy(kumod):
    policy = ("local kumo = require('kumo')\n"
              "kumo.on('init', function()\n"
              "  kumo.log_info('x', 1, true)\n"
              "end)\n")
    k = kumod(policy)
    line = k.wait_for("x 1 true")
    assert re.search(r" lua: .*policy\.lua:3: x 1 true$", line), line
    assert k.stop() == 0


def test_listener_line_gives_real_port(kumod):
    policy = ("kumo.on('init', function()\n"
              "  kumo.start_esmtp_listener({ listen = '127.0.0.1:0' })\n"
              "end)\n")
    k = kumod(policy)
    assert k.listeners["smtp"][0][0] == "127.0.0.1"
    port = k.smtp_port
    assert 0 < port < 65536
    assert f"smtp listener on 127.0.0.1:{port}" in k.stderr()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(5)
        assert s.recv(512).startswith(b"220"), "no 220 greeting"
    assert k.stop() == 0
