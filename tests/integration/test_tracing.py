# SPDX-License-Identifier: Apache-2.0
"""Tracepoints: USDT notes, an LTTng recording, the log backend, the generator."""

import glob
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import IS_ROOT, KUMOD_BIN, REPO, needs_lttng, require_kumod

GEN = os.path.join(REPO, "scripts", "gen_traces.py")
IDLE_POLICY = "kumo.on('init', function() end)\n"


def declared_events():
    """Event names from traces/*.tp, parsed independently of the generator."""
    names = []
    for path in sorted(glob.glob(os.path.join(REPO, "traces", "*.tp"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    names.append(line.split()[0])
    assert names, "no events declared in traces/*.tp"
    assert len(names) == len(set(names)), f"duplicate event names: {names}"
    return set(names)


def usdt_probes(binary):
    out = subprocess.run(["readelf", "-n", binary], capture_output=True, text=True, check=True)
    probes, provider = [], None
    for line in out.stdout.splitlines():
        line = line.strip()
        if line.startswith("Provider:"):
            provider = line.split(":", 1)[1].strip()
        elif line.startswith("Name:") and provider is not None:
            probes.append((provider, line.split(":", 1)[1].strip()))
            provider = None
    return probes


def built_with(flag):
    """The value of -D<flag>= in the build's flag stamp, or None."""
    d = os.path.dirname(KUMOD_BIN)
    # build/flags.txt, or build/flags-address.txt for build/address/kumod
    for stamp in (os.path.join(d, "flags.txt"),
                  os.path.join(os.path.dirname(d), f"flags-{os.path.basename(d)}.txt")):
        try:
            m = re.search(rf"-D{flag}=(\d)", open(stamp).read())
        except OSError:
            continue
        return m.group(1) if m else None
    return None


# --- (a) USDT notes ---------------------------------------------------------


def test_readelf_lists_exactly_the_declared_probes():
    require_kumod()
    if not shutil.which("readelf"):
        pytest.skip("readelf (binutils) not installed")
    probes = usdt_probes(KUMOD_BIN)
    if not probes and built_with("USE_USDT") == "0":
        pytest.skip("kumod was built with USE_USDT=0")
    kumod_probes = {name for prov, name in probes if prov == "kumod"}
    declared = declared_events()
    assert kumod_probes == declared, (
        f"missing from the binary: {sorted(declared - kumod_probes)}; "
        f"not declared: {sorted(kumod_probes - declared)}")
    # One site per probe: the generator fires each one out of line.
    names = [name for prov, name in probes if prov == "kumod"]
    assert len(names) == len(set(names)), "a probe has several sites"


@pytest.mark.skipif(not IS_ROOT, reason="attaching a USDT probe needs root/CAP_BPF")
@pytest.mark.skipif(not shutil.which("bpftrace"), reason="bpftrace not installed")
def test_bpftrace_sees_usdt_probe_fire(kumod):
    if built_with("USE_USDT") == "0":
        pytest.skip("kumod was built with USE_USDT=0")
    # Attached by binary path (the kernel maintains the semaphore in every
    # process mapping it); output is filtered by our pid afterwards.
    prog = ('BEGIN { printf("READY\\n"); } '
            f'usdt:{KUMOD_BIN}:kumod:shutdown_begin {{ printf("FIRED %d %s\\n", pid, str(arg0)); }}')
    bt = subprocess.Popen(["bpftrace", "-e", prog], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    try:
        out = []
        while True:
            line = bt.stdout.readline()
            if not line:
                break
            out.append(line)
            if line.startswith("READY"):
                break
        if not out or not out[-1].startswith("READY"):
            bt.wait(10)
            text = "".join(out)
            if re.search(r"permitted|Permission denied|not supported", text):
                pytest.skip(f"bpftrace cannot attach here: {text.strip()[:300]}")
            pytest.fail(f"bpftrace did not attach: {text}")
        k = kumod(IDLE_POLICY)
        assert k.stop() == 0
        # Read until our probe line shows up: bpftrace's own teardown after
        # SIGINT can take long on a loaded machine and is not under test.
        want = f"FIRED {k.pid} Terminated"
        rest = ""
        deadline = time.monotonic() + 30
        while want not in rest and time.monotonic() < deadline:
            ready, _, _ = select.select([bt.stdout], [], [], 0.5)
            if ready:
                line = bt.stdout.readline()
                if not line:
                    break
                rest += line
        assert want in rest, f"bpftrace output: {''.join(out)}{rest}"
    finally:
        if bt.poll() is None:
            bt.kill()
            bt.wait()


# --- (b) LTTng recording ----------------------------------------------------


def _lttng(args, env, check=True):
    r = subprocess.run(["lttng", *args], env=env, capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        pytest.fail(f"lttng {' '.join(args)} failed ({r.returncode}): {r.stdout}{r.stderr}")
    return r


def _pid_alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return not re.search(r"^State:\s+Z", f.read(), re.M)
    except OSError:
        return False


class SessionDaemon:
    """Uses the lttng-sessiond that runs, or starts a private one (and only
    then stops it, by pid)."""

    def __init__(self, home):
        self.home = str(home)
        os.makedirs(self.home, exist_ok=True)
        self.env = dict(os.environ, LTTNG_HOME=self.home)
        self.pid = None

    def pidfile(self):
        # Root's session daemon is the global one; others live under LTTNG_HOME.
        if IS_ROOT:
            return "/var/run/lttng/lttng-sessiond.pid"
        return os.path.join(self.home, ".lttng", "lttng-sessiond.pid")

    def running(self):
        r = subprocess.run(["lttng", "list"], env=self.env, capture_output=True, text=True,
                           timeout=30)
        return r.returncode == 0

    def ensure(self):
        if self.running():
            return
        r = subprocess.run(["lttng-sessiond", "--no-kernel", "--daemonize"], env=self.env,
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            pytest.skip(f"LTTng cannot run: lttng-sessiond failed ({r.returncode}): "
                        f"{(r.stdout + r.stderr).strip()[:400]}")
        try:
            self.pid = int(open(self.pidfile()).read().strip())
        except (OSError, ValueError) as e:
            pytest.fail(f"lttng-sessiond started but its pid file is unreadable: {e}")
        if not self.running():
            self.stop()
            pytest.skip("LTTng cannot run: lttng-sessiond started but does not answer")

    def stop(self):
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            return
        if b"lttng-sessiond" not in cmd:
            return  # the pid was reused: not ours any more
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


@needs_lttng
def test_lttng_records_kumod_events(kumod, tmp_path):
    if built_with("USE_LTTNG") == "0":
        pytest.skip("kumod was built with USE_LTTNG=0")
    sd = SessionDaemon(tmp_path / "lttng-home")
    session = f"kumod-test-{os.getpid()}-{int(time.time() * 1000) % 100000}"
    out = tmp_path / "trace"
    created = False
    try:
        sd.ensure()
        _lttng(["create", session, f"--output={out}"], sd.env)
        created = True
        _lttng(["enable-event", "-u", "kumod:*", "-s", session], sd.env)
        _lttng(["add-context", "-u", "-t", "vtid", "-t", "procname", "-s", session], sd.env)
        _lttng(["start", session], sd.env)
        # The start-up events are wanted: let kumod wait for the session
        # daemon's registration (the harness default is 0, never wait).
        k = kumod(IDLE_POLICY, env={"LTTNG_HOME": sd.home, "LTTNG_UST_REGISTER_TIMEOUT": "5000"})
        assert k.stop() == 0, k.stderr()
        _lttng(["stop", session], sd.env)
        _lttng(["destroy", session], sd.env)
        created = False
        bt = subprocess.run(["babeltrace2", str(out)], capture_output=True, text=True, timeout=60)
        assert bt.returncode == 0, bt.stderr
        for ev in ("kumod:kumod_start", "kumod:init_complete", "kumod:task_spawn",
                   "kumod:shutdown_begin"):
            assert ev in bt.stdout, f"{ev} not recorded; babeltrace2 output:\n{bt.stdout[:4000]}"
        assert 'procname = "kumod"' in bt.stdout
    finally:
        if created:
            _lttng(["destroy", session], sd.env, check=False)
        sd.stop()


# --- (c) the log backend ----------------------------------------------------


def test_kumod_log_trace_prints_tracepoints(kumod):
    k = kumod(IDLE_POLICY, env={"KUMOD_LOG": "kumod=trace,runtime=trace,kumo_server_common=info"})
    assert k.stop() == 0
    lines = k.lines()
    spawn = [l for l in lines if "runtime::task" in l and "spawn id=" in l]
    assert spawn, "no task_spawn line:\n" + k.stderr()
    assert re.search(r'kind="main"', "\n".join(spawn)), spawn
    assert any("shutdown requested by Terminated" in l for l in lines), k.stderr()
    assert any("shutdown complete" in l for l in lines), k.stderr()


def test_kumod_log_empty_prints_nothing(kumod, tmp_path):
    mark = tmp_path / "init-ran"
    policy = ("kumo.on('init', function()\n"
              "  local f = assert(io.open(os.getenv('KT_MARK'), 'w'))\n"
              "  f:write('x')\n  f:close()\nend)\n")
    k = kumod(policy, env={"KUMOD_LOG": "", "KT_MARK": str(mark)}, wait=None)
    deadline = time.monotonic() + 15
    while not mark.exists():
        assert k.running(), f"kumod exited ({k.proc.returncode}): {k.stderr()}"
        assert time.monotonic() < deadline, "init never ran"
        time.sleep(0.05)
    time.sleep(0.5)  # let start-up finish and emit whatever it would
    assert k.stop() == 0
    assert k.stderr() == ""


# --- (d) the generator rejects bad declarations ------------------------------

GOOD = '# A doc.\nok_event kumod::x INFO (u64 id) "id={id}"\n'
BAD_CASES = [
    # (name, text, line, message fragment)
    ("unknown type", '# Doc.\nev kumod INFO (float x) "{x}"\n', 2, "unknown type"),
    ("unknown placeholder", '# Doc.\nev kumod INFO (u64 id) "{idd}"\n', 2, "names no argument"),
    ("too many args", '# Doc.\nev kumod INFO (u64 a, u64 b, u64 c, u64 d, u64 e, u64 f, u64 g)'
     ' "{a}"\n', 2, "at most 6"),
    ("bad level", '# Doc.\nev kumod VERBOSE (u64 id) "{id}"\n', 2, "bad level"),
    ("duplicate", GOOD + '\n# Again.\nok_event kumod INFO () "x"\n', 5, "duplicate event"),
    ("no doc", 'ev kumod INFO () "x"\n', 1, "no doc comment"),
    ("garbage", '# Doc.\nthis is not a declaration\n', 2, "cannot parse"),
    ("unterminated placeholder", '# Doc.\nev kumod INFO (u64 id) "{id"\n', 2, "unterminated"),
    ("keyword arg", '# Doc.\nev kumod INFO (u64 int) "{int}"\n', 2, "bad argument name"),
    ("bad target", '# Doc.\nev kumod:: INFO () "x"\n', 2, "bad target"),
]


@pytest.mark.parametrize("name,text,line,fragment", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_generator_rejects_malformed_tp(tmp_path, name, text, line, fragment):
    tp = tmp_path / "bad.tp"
    tp.write_text(text)
    r = subprocess.run([sys.executable, GEN, "--out-dir", str(tmp_path / "gen"), "--doc",
                        str(tmp_path / "doc.md"), str(tp)], capture_output=True, text=True)
    assert r.returncode == 1, r
    assert f"{tp}:{line}:" in r.stderr, r.stderr
    assert fragment in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "gen").exists(), "nothing may be written on error"


def test_generator_accepts_good_tp_and_is_stable(tmp_path):
    tp = tmp_path / "good.tp"
    tp.write_text(GOOD + '\n# Raw and quoted strings, braces.\n'
                  'other kumod INFO (str a, i32 b) "{{x}} {=a} {a} {b}"\n')
    args = [sys.executable, GEN, "--out-dir", str(tmp_path / "gen"), "--doc",
            str(tmp_path / "doc.md"), str(tp)]
    subprocess.run(args, check=True)
    h = tmp_path / "gen" / "ktrace.h"
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "gen").iterdir()}
    time.sleep(0.05)
    subprocess.run(args, check=True)
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "gen").iterdir()}
    assert before == after, "unchanged outputs must not be rewritten"
    text = h.read_text()
    for sym in ("kt_ok_event(", "kt_ok_event_enabled(", "#define KTRACE(name, ...)",
                "#define KTRACE_ENABLED(name)", "kumod_other_semaphore"):
        assert sym in text, sym


# --- (e) the checked-in catalogue is current ---------------------------------


def test_tracepoints_md_is_generated_from_traces(tmp_path):
    tps = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "traces", "*.tp")))
    doc = tmp_path / "tracepoints.md"
    r = subprocess.run([sys.executable, GEN, "--doc", str(doc), *tps], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    current = open(os.path.join(REPO, "docs", "tracepoints.md"), encoding="utf-8").read()
    assert current == doc.read_text(), "docs/tracepoints.md is stale: run make"
