#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Spool recovery after a restart (issue 19 item 3), for kind = 'LocalDisk'
# and kind = 'RocksDB': kumod itself fills its spool with COUNT messages of
# SIZE bytes received over SMTP from build/traffic-gen (flush = false, the
# destination never answers, retry 1h: everything stays queued), is stopped
# (SIGTERM), then started again on the same spool and measured:
#   accept_ms   exec of kumod -> the SMTP listener accepts a connection
#               (probed with connect() every millisecond, while recovery runs)
#   greet_ms    exec -> the 220 greeting read on that first connection
#   recover_s   exec -> the "spool recovery complete" log line
#   rss_mib     VmRSS of kumod right after that line
#   rss_per_msg the same per recovered message
#   cpu_s       kumod's CPU time (user + system, all threads) at that line
# The same start on the still empty spool first gives the baseline accept_ms
# (policy load and listener start without any recovery).
# Each kind runs in a fresh directory under $TMPDIR; the load average is
# printed before and after.
#
# Before/after comparisons in one run: with BASE=<another kumod binary> each
# filled spool is recovered ROUNDS times (default 1) by KUMOD and by BASE,
# alternating (KUMOD first); with RESTORE=1 the filled spool is copied aside
# once and restored before every measurement, so each binary recovers the
# same bytes (otherwise each run starts from what the previous one left:
# first attempts counted, RocksDB's log of those updates).
#
# Usage: bench/recovery.sh [COUNT] [KINDS]   (defaults 1000000 "LocalDisk RocksDB")
# Environment: KUMOD (build/kumod), TG (build/traffic-gen), SESSIONS (50),
#   SIZE (1024), FILL_TIMEOUT (3600 s), RECOVER_TIMEOUT (600 s), BASE (none),
#   ROUNDS (1), RESTORE (0), LTTNG_UST_WITHOUT_BADDR_STATEDUMP (1 for the
#   measured starts, as make run and the container set it; empty: off).
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh

COUNT=${1:-1000000}
KINDS=${2:-"LocalDisk RocksDB"}
KUMOD=${KUMOD:-build/kumod}
TG=${TG:-build/traffic-gen}
SESSIONS=${SESSIONS:-50}
SIZE=${SIZE:-1024}
FILL_TIMEOUT=${FILL_TIMEOUT:-3600}
RECOVER_TIMEOUT=${RECOVER_TIMEOUT:-600}
BASE=${BASE:-}
ROUNDS=${ROUNDS:-1}
RESTORE=${RESTORE:-0}
for bin in "$KUMOD" "$TG" ${BASE:+"$BASE"}; do
	[ -x "$bin" ] || { echo "missing $bin (make)" >&2; exit 2; }
done
WORK=$(mktemp -d "${TMPDIR:-/tmp}/recovery.XXXXXX")
KPID=""
cleanup() {
	if [ -n "$KPID" ]; then kill "$KPID" 2>/dev/null || true; wait "$KPID" 2>/dev/null || true; fi
	rm -rf "$WORK"
}
trap cleanup EXIT

policy() { # kind dir port dead-port -> policy text: spool only
	cat <<EOF
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool{ name = 'data', path = '$2/data', kind = '$1', flush = false }
  kumo.define_spool{ name = 'meta', path = '$2/meta', kind = '$1', flush = false }
  kumo.start_esmtp_listener{ listen = '127.0.0.1:$3', relay_hosts = { '127.0.0.1' } }
end)
kumo.on('get_queue_config', function()
  return kumo.make_queue_config{ retry_interval = '1h', max_retry_interval = '1h',
    max_age = '1d', protocol = { smtp = { mx_list = { '127.0.0.1:$4' } } } }
end)
kumo.on('get_egress_path_config', function()
  return kumo.make_egress_path{ enable_tls = 'Disabled', connect_timeout = '1s' }
end)
EOF
}

fill() { # port count -> 0 when traffic-gen got every message acknowledged
	local json
	json=$(timeout "$FILL_TIMEOUT" "$TG" --target 127.0.0.1:"$1" --concurrency "$SESSIONS" \
		--message-count "$2" --body-size "$SIZE" --domain example.com --domain-suffix '' \
		--timeout 60 --json 2>/dev/null)
	/usr/bin/python3 -c 'import json, sys
r = json.loads(sys.argv[1])
assert r["failed"] == 0 and r["sent"] == int(sys.argv[2]), r
print("filled %d messages at %.0f msg/s" % (r["sent"], r["rate"]["per_second_exact"]))' "$json" "$2"
}

# Starts kumod (exec timed from this process), probes the port every ms,
# follows stderr to the recovery line, reads VmRSS, then stops kumod.
MEASURE='
import os, re, signal, socket, subprocess, sys, time
kumod, policy, port, count, log, timeout = sys.argv[1:7]
port, count, timeout = int(port), int(count), float(timeout)
err = open(log, "wb")
t0 = time.monotonic()
p = subprocess.Popen([kumod, "--policy", policy], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                     env=dict(os.environ, LTTNG_UST_WITHOUT_BADDR_STATEDUMP=os.environ.get(
                         "LTTNG_UST_WITHOUT_BADDR_STATEDUMP", "1")))
accept = greet = None
while accept is None and time.monotonic() - t0 < 10:
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
        accept = time.monotonic() - t0
        s.settimeout(10)
        if s.recv(512).startswith(b"220"):
            greet = time.monotonic() - t0
    except OSError:
        time.sleep(0.001)
    finally:
        s.close()
done = rss = None
want = re.compile(rb"spool recovery complete: (\d+) messages queued, (\d+) quarantined")
progress = 0
for line in p.stderr:
    err.write(line)
    if b"recovery in progress" in line:
        progress += 1
    m = want.search(line)
    if m:
        done = time.monotonic() - t0
        for l in open("/proc/%d/status" % p.pid):
            if l.startswith("VmRSS:"):
                rss = int(l.split()[1]) * 1024
        st = open("/proc/%d/stat" % p.pid).read().rsplit(")", 1)[1].split()
        cpu = (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")
        loaded, quarantined = int(m.group(1)), int(m.group(2))
        break
    if time.monotonic() - t0 > timeout:
        break
p.send_signal(signal.SIGTERM)
for line in p.stderr:
    err.write(line)
p.wait(timeout=120)
if accept is None or greet is None or done is None:
    sys.exit("no accept (%r), greeting (%r) or recovery line (%r); see %s"
             % (accept, greet, done, log))
assert loaded == count and quarantined == 0, (loaded, quarantined)
print("accept_ms=%.1f greet_ms=%.1f recover_s=%.2f cpu_s=%.2f loaded=%d rss_mib=%.0f "
      "rss_per_msg=%s progress_lines=%d load=%s"
      % (accept * 1000, greet * 1000, done, cpu, loaded, rss / 2**20,
         "%.0fB" % (rss / loaded) if loaded else "-", progress,
         open("/proc/loadavg").read().split()[0]))
'

echo "recovery: $COUNT messages x $SIZE bytes, kinds: $KINDS, $SESSIONS sessions to fill"
echo "machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for kind in $KINDS; do
	dir="$WORK/$kind"
	mkdir -p "$dir"
	port=$(free_port)
	policy "$kind" "$dir" "$port" "$(free_port)" >"$dir/policy.lua"
	for bin in "$KUMOD" ${BASE:+"$BASE"}; do
		printf '  %-9s empty spool %s: ' "$kind" "$bin"
		/usr/bin/python3 -c "$MEASURE" "$bin" "$dir/policy.lua" "$port" 0 "$dir/empty.log" \
			"$RECOVER_TIMEOUT"
	done
	"$KUMOD" --policy "$dir/policy.lua" 2>"$dir/fill.log" &
	KPID=$!
	wait_port "$port"
	printf '  %-9s ' "$kind"
	fill "$port" "$COUNT"
	kill "$KPID"
	wait "$KPID" || true
	KPID=""
	printf '  %-9s spool on disk: data %s, meta %s\n' "$kind" "$(du -sh "$dir/data" | cut -f1)" \
		"$(du -sh "$dir/meta" | cut -f1)"
	if [ "$RESTORE" = 1 ]; then
		mkdir -p "$dir.snap" && cp -a "$dir/data" "$dir/meta" "$dir.snap/"
	fi
	for round in $(seq "$ROUNDS"); do
		for bin in "$KUMOD" ${BASE:+"$BASE"}; do
			if [ "$RESTORE" = 1 ]; then
				rm -rf "$dir/data" "$dir/meta"
				cp -a "$dir.snap/data" "$dir.snap/meta" "$dir/"
			fi
			printf '  %-9s round %s %s: ' "$kind" "$round" "$bin"
			/usr/bin/python3 -c "$MEASURE" "$bin" "$dir/policy.lua" "$port" "$COUNT" \
				"$dir/recover.log" "$RECOVER_TIMEOUT"
		done
	done
	rm -rf "$dir" "$dir.snap"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
