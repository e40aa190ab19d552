# SPDX-License-Identifier: Apache-2.0
"""The RocksDB spool kind (define_spool kind = 'RocksDB') end to end: a relay
kumod spooling into RocksDB and a sink kumod receiving, counted by unique
tags; restart and kill -9 recovery; a corrupt value quarantined and a crash
leftover removed; kind switches and unsupported rocks_params refused by name.
Also the LocalDisk crash-leftover rule (a data file without meta file)."""

import os
import re
import shutil
import smtplib
import subprocess
import time

import pytest

from conftest import free_port, run_kumod, send_until_full, tmpfs_spool
from test_console import Client, console_env
from test_relay import RELAY_POLICY, captured, send, sink_start, wait_until

LDB = shutil.which("ldb")
ROCKS_POLICY = RELAY_POLICY.replace("flush = {flush} }}", "flush = {flush}, kind = 'RocksDB' }}")
assert ROCKS_POLICY.count("kind = 'RocksDB'") == 2




def relay_start(kumod, var, port, name="relay.lua", kind="RocksDB", env=None, args=None):
    policy = ROCKS_POLICY if kind == "RocksDB" else RELAY_POLICY
    text = policy.format(var=var, mx_list="'127.0.0.1:%d'" % port, retry="1s", max_age="1h",
                         flush="true")
    return kumod(text, policy_name=name, env=env, args=args)


def tags(capture):
    out = []
    for f in captured(capture):
        for line in open(f, "rb").read().decode("utf-8", "replace").splitlines():
            if line.startswith("Subject: tag-"):
                out.append(line.split(": ", 1)[1])
    return out


def send_tagged(port, first, count):
    acked = []
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as c:
        c.ehlo("rocks.test")
        for n in range(first, first + count):
            tag = "tag-%05d" % n
            c.sendmail("s@example.com", ["r%d@example.com" % n],
                       "Subject: %s\r\n\r\n%s\r\n" % (tag, tag))
            acked.append(tag)
    return acked


def ldb_keys(db):
    """Every key of a RocksDB spool database (kumod must not hold it)."""
    r = subprocess.run([LDB, "--db=%s" % db, "scan", "--key_hex"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    keys = []
    for line in r.stdout.splitlines():
        k = line.split(" : ", 1)[0]
        assert k.startswith("0x"), line
        keys.append(bytes.fromhex(k[2:]).decode())
    return keys


def test_rocks_relay_delivers_each_message_once(kumod, tmp_path):
    capture, var = tmp_path / "capture", tmp_path / "var"
    port = free_port()
    sink_start(kumod, capture, env={"KUMO_SINK_LISTEN": "127.0.0.1:%d" % port})
    relay = relay_start(kumod, var, port)
    relay.wait_for("spool open kind=RocksDB")
    acked = send_tagged(relay.smtp_port, 0, 60)
    assert wait_until(lambda: len(tags(capture)) >= 60, timeout=30), relay.stderr()
    got = tags(capture)
    assert sorted(got) == sorted(acked)  # each exactly once
    # delivered messages are removed: only LocalDisk-free RocksDB files on disk
    assert relay.stop() == 0
    assert os.path.exists(var / "spool" / "meta" / "CURRENT")
    assert not os.path.exists(var / "spool" / "meta" / "new")
    if LDB:
        assert ldb_keys(var / "spool" / "meta") == []
        assert ldb_keys(var / "spool" / "data") == []


def test_rocks_restart_delivers_queued_mail(kumod, tmp_path):
    capture, var = tmp_path / "capture", tmp_path / "var"
    port = free_port()  # nothing listens yet: the destination is down
    relay = relay_start(kumod, var, port)
    acked = send_tagged(relay.smtp_port, 0, 25)
    assert relay.stop() == 0
    assert captured(capture) == []
    # a clean close wrote the memtables out: the next start replays no write-ahead log
    for which in ("data", "meta"):
        db = var / "spool" / which
        assert list(db.glob("*.sst")), sorted(p.name for p in db.iterdir())
        assert sum(p.stat().st_size for p in db.glob("*.log")) == 0, \
            [(p.name, p.stat().st_size) for p in db.glob("*.log")]
    if LDB:
        assert len(ldb_keys(var / "spool" / "meta")) == 25
    sink_start(kumod, capture, env={"KUMO_SINK_LISTEN": "127.0.0.1:%d" % port})
    relay2 = relay_start(kumod, var, port, name="relay2.lua")
    relay2.wait_for("spool recovery complete: 25 messages queued, 0 quarantined")
    assert wait_until(lambda: len(tags(capture)) >= 25, timeout=30), relay2.stderr()
    time.sleep(0.5)  # a duplicate would arrive right behind
    assert sorted(tags(capture)) == sorted(acked)


def test_rocks_kill_9_under_load_loses_nothing_acknowledged(kumod, tmp_path):
    capture, var = tmp_path / "capture", tmp_path / "var"
    port = free_port()
    sink_start(kumod, capture, env={"KUMO_SINK_LISTEN": "127.0.0.1:%d" % port})
    relay = relay_start(kumod, var, port)
    acked = set()
    deadline = time.monotonic() + 20
    n = 0
    try:
        with smtplib.SMTP("127.0.0.1", relay.smtp_port, timeout=10) as c:
            c.ehlo("load.test")
            while time.monotonic() < deadline and n < 400:
                n += 1
                tag = "tag-%05d" % n
                c.sendmail("s@example.com", ["r%d@example.com" % n],
                           "Subject: %s\r\n\r\n%s\r\n" % (tag, tag))
                acked.add(tag)
                if n == 150:
                    os.kill(relay.pid, 9)
    except (smtplib.SMTPException, OSError):
        pass  # the kill cut the session: that message was not acknowledged
    relay.kill()
    assert len(acked) >= 100
    relay2 = relay_start(kumod, var, port, name="relay2.lua")
    assert wait_until(lambda: acked <= set(tags(capture)), timeout=40), (
        "acknowledged but never delivered: %r" % sorted(acked - set(tags(capture)))[:10])
    got = tags(capture)
    # a delivery in flight at the kill may be repeated; nothing more
    assert len(got) - len(set(got)) <= 4
    relay2.stop()


@pytest.mark.skipif(LDB is None, reason="needs ldb (Debian rocksdb-tools)")
def test_rocks_corrupt_value_quarantined_and_leftover_removed(kumod, tmp_path):
    var = tmp_path / "var"
    port = free_port()
    relay = relay_start(kumod, var, port)
    acked = send_tagged(relay.smtp_port, 0, 3)
    assert relay.stop() == 0
    meta, data = var / "spool" / "meta", var / "spool" / "data"
    good = sorted(ldb_keys(meta))
    assert len(good) == 3
    bad = good[0][:20] + "000000000000"  # a valid id, garbage value
    leftover = good[0][:20] + "111111111111"  # data without meta
    for db, key, val in ((meta, bad, "0x4b53504c00"), (data, bad, "0x00"),
                         (data, leftover, "0x4b53504c")):
        r = subprocess.run([LDB, "--db=%s" % db, "--value_hex", "put", key, val],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
    relay2 = relay_start(kumod, var, port, name="relay2.lua",
                         env={"KUMOD_LOG": "info,kumod::spool=debug"})
    relay2.wait_for("spool recovery complete: 3 messages queued, 1 quarantined")
    lines = relay2.lines()
    q = [ln for ln in lines if " WARN " in ln and "quarantined" in ln]
    assert len(q) == 2, q  # the meta value and its data value
    assert any(bad in ln and "meta file: truncated header" in ln for ln in q), q
    assert not any(leftover in ln for ln in q)
    assert any(" DEBUG " in ln and "id=%s removed crash leftover" % leftover in ln
               for ln in lines), "\n".join(lines)
    assert relay2.stop() == 0
    # the corrupt values moved under quarantine/, byte for byte; the leftover is gone
    assert sorted(ldb_keys(meta)) == sorted(good + ["quarantine/" + bad])
    assert sorted(ldb_keys(data)) == sorted(good + ["quarantine/" + bad])
    raw = subprocess.run([LDB, "--db=%s" % meta, "--value_hex", "get", "quarantine/" + bad],
                         capture_output=True, text=True)
    assert raw.stdout.strip().lower() == "0x4b53504c00", raw
    assert len(acked) == 3


def test_kind_switch_is_refused_naming_the_path(kumod, tmp_path):
    var = tmp_path / "var"
    port = free_port()
    relay = relay_start(kumod, var, port, kind="LocalDisk")
    assert relay.stop() == 0
    policy = tmp_path / "rocks.lua"
    policy.write_text(ROCKS_POLICY.format(var=var, mx_list="'127.0.0.1:%d'" % port, retry="1s",
                                          max_age="1h", flush="true"))
    r = run_kumod(["--policy", str(policy)], timeout=20)
    assert r.returncode != 0
    want = ("%s holds a LocalDisk spool; refusing to open it as kind 'RocksDB'"
            % (var / "spool" / "data"))
    assert want in r.stderr, r.stderr
    # and the other way round
    var2 = tmp_path / "var2"
    relay = relay_start(kumod, var2, port, name="r2.lua")
    assert relay.stop() == 0
    policy.write_text(RELAY_POLICY.format(var=var2, mx_list="'127.0.0.1:%d'" % port,
                                          retry="1s", max_age="1h", flush="true"))
    r = run_kumod(["--policy", str(policy)], timeout=20)
    assert r.returncode != 0
    want = ("%s holds a RocksDB spool; refusing to open it as kind 'LocalDisk'"
            % (var2 / "spool" / "data"))
    assert want in r.stderr, r.stderr


POLICY_ERROR = re.compile(r"^kumod: policy error: policy\.lua:\d+: (?P<text>.*)$")


def validate_errors(tmp_path, spool_args):
    (tmp_path / "policy.lua").write_text(
        "local kumo = require 'kumo'\nkumo.on('init', function()\n"
        "  kumo.define_spool{ name = 'data', path = '/nonexistent/d', %s }\nend)\n" % spool_args)
    r = run_kumod(["--validate", "--policy", "policy.lua"], cwd=str(tmp_path))
    out = [POLICY_ERROR.match(ln) for ln in (r.stdout + r.stderr).splitlines()]
    return r.returncode, [m.group("text") for m in out if m]


@pytest.mark.parametrize("args,want", [
    ("kind = 'RocksDB', rocks_params = { bogus = 1 }",
     "define_spool: rocks_params: unknown key 'bogus'"),
    ("kind = 'RocksDB', rocks_params = { limit_concurrent_stores = 4 }",
     "define_spool: rocks_params.limit_concurrent_stores: not supported by kumod"),
    ("kind = 'RocksDB', rocks_params = { store_deadline = '5s' }",
     "define_spool: rocks_params.store_deadline: not supported by kumod"),
    ("kind = 'RocksDB', rocks_params = { compression_type = 'Brotli' }",
     "define_spool: rocks_params.compression_type: expected 'None', 'Snappy', 'Zlib', 'Bz2', "
     "'Lz4', 'Lz4hc' or 'Zstd', got 'Brotli'"),
    ("kind = 'RocksDB', rocks_params = { optimize_level_style_compaction = 1,"
     " optimize_universal_style_compaction = 1 }",
     "define_spool: rocks_params: optimize_level_style_compaction and "
     "optimize_universal_style_compaction are exclusive"),
    ("kind = 'LocalDisk', rocks_params = { paranoid_checks = true }",
     "define_spool: rocks_params: only for kind = 'RocksDB'"),
    ("kind = 'Memory'", "define_spool: kind: expected 'LocalDisk' or 'RocksDB', got 'Memory'"),
])
def test_bad_rocks_params_refused_by_name(tmp_path, args, want):
    rc, errors = validate_errors(tmp_path, args)
    assert rc != 0
    assert any(e.startswith(want) for e in errors), errors


def test_every_applied_rocks_param_validates(tmp_path):
    rc, errors = validate_errors(tmp_path, (
        "kind = 'RocksDB', rocks_params = { increase_parallelism = 2, "
        "optimize_level_style_compaction = 67108864, paranoid_checks = true, "
        "compression_type = 'Lz4', compaction_readahead_size = 2097152, "
        "level_compaction_dynamic_level_bytes = true, max_open_files = 256, "
        "write_buffer_size = 8388608, level0_stop_writes_trigger = 36, log_level = 'Warn', "
        "memtable_huge_page_size = 0, log_file_time_to_roll = '1d', "
        "obsolete_files_period = '6h' }"))
    assert errors == [] and rc == 0


def test_localdisk_leftover_data_file_removed_not_quarantined(kumod, tmp_path):
    var = tmp_path / "var"
    port = free_port()
    relay = relay_start(kumod, var, port, kind="LocalDisk")
    send(relay.smtp_port, ["a@example.com"], "kept\r\n")
    assert relay.stop() == 0
    data = var / "spool" / "data"
    buckets = [d for d in os.listdir(data) if re.fullmatch(r"[0-9a-f]{8}", d)]
    assert len(buckets) == 1
    kept = os.listdir(data / buckets[0])
    assert len(kept) == 1
    leftover = kept[0][:20] + "222222222222"
    (data / buckets[0] / leftover).write_bytes(b"KSPL half written")
    relay2 = relay_start(kumod, var, port, name="relay2.lua", kind="LocalDisk",
                         env={"KUMOD_LOG": "info,kumod::spool=debug"})
    relay2.wait_for("spool recovery complete: 1 messages queued, 0 quarantined")
    lines = relay2.lines()
    assert not any(" WARN " in ln and "quarantined" in ln for ln in lines), lines
    assert any(" DEBUG " in ln and "id=%s removed crash leftover" % leftover in ln
               for ln in lines), "\n".join(lines)
    assert relay2.stop() == 0
    assert sorted(os.listdir(data / buckets[0])) == kept
    assert os.listdir(data / "quarantine") == []


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_rocks_full_disk_answers_452_and_loses_nothing(kumod, tmp_path):
    var = tmp_path / "var"
    with tmpfs_spool(var, "3m"):
        capture = tmp_path / "capture"
        port = free_port()
        relay = relay_start(kumod, var, port)
        body = "\r\n" + ("y" * 76 + "\r\n") * 1600  # ~125 KiB
        acked = send_until_full(
            relay.smtp_port, 60, lambda i: ("tag-%05d" % i, "Subject: tag-%05d%s" % (i, body)),
            "a 3 MiB spool and 60 x 125 KiB", timeout=20)
        # every acknowledged message is delivered once a sink appears
        sink_start(kumod, capture, env={"KUMO_SINK_LISTEN": "127.0.0.1:%d" % port})
        assert wait_until(lambda: set(acked) <= set(tags(capture)), timeout=30), \
            relay.stderr()
        relay.stop()


def test_rocks_flusher_task_in_the_console(kumod, tmp_path):
    var = tmp_path / "var"
    relay = relay_start(kumod, var, free_port(), env=console_env(), args=["--tokio-console"])
    relay.wait_for("console listener on")
    c = Client(relay.listeners["console"][0][1])
    _, tasks, _ = c.snapshot()
    flushers = [t for t in tasks.values() if t["kind"] == "spool_flusher"]
    assert len(flushers) == 1, tasks
    assert flushers[0]["fields"]["kind"] == "RocksDB"
    assert flushers[0]["fields"]["flush"] == "true"
    c.close()
