#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Peak memory of reception with large bodies: SESSIONS concurrent sessions
# each sending one SIZE message (build/traffic-gen), kumod with
# data_spill_threshold = 0 (bodies in memory, the behaviour before streaming)
# against the default (1 MiB: bodies past it stream to the data spool's
# temporary storage). Prints kumod's peak RSS (VmHWM from /proc) and the wall
# time of each run, ROUNDS rounds interleaved. LocalDisk kind, flush on.
# With FIRST_ATTEMPT=later (the default) the policy schedules each message's
# first attempt an hour ahead, so the peak is reception and spooling only;
# with FIRST_ATTEMPT=now the first attempt runs at once against a closed port
# and the peak includes reading the bodies back for it.
#
# Usage: bench/streamed-body.sh [ROUNDS]   (default 3)
# Environment: KUMOD (build/kumod), TG (build/traffic-gen), SESSIONS (20),
#   SIZE (20mb, traffic-gen's syntax), RUN_TIMEOUT (120 s per run).
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh

ROUNDS=${1:-3}
KUMOD=${KUMOD:-build/kumod}
TG=${TG:-build/traffic-gen}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-20mb}
RUN_TIMEOUT=${RUN_TIMEOUT:-120}
FIRST_ATTEMPT=${FIRST_ATTEMPT:-later}
for bin in "$KUMOD" "$TG"; do
	[ -x "$bin" ] || { echo "missing $bin (make)" >&2; exit 2; }
done
WORK=$(mktemp -d "${TMPDIR:-/tmp}/streamed-body.XXXXXX")
KPID=""
cleanup() {
	if [ -n "$KPID" ]; then kill "$KPID" 2>/dev/null || true; wait "$KPID" 2>/dev/null || true; fi
	rm -rf "$WORK"
}
trap cleanup EXIT

policy() { # dir port dead threshold -> policy text
	local later=""
	if [ "$FIRST_ATTEMPT" = later ]; then
		later="kumo.on('smtp_server_message_received', function(msg)
  msg:set_scheduling{ first_attempt = '$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)' }
end)"
	fi
	cat <<EOF
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool{ name = 'data', path = '$1/data' }
  kumo.define_spool{ name = 'meta', path = '$1/meta' }
  kumo.start_esmtp_listener{ listen = '127.0.0.1:$2', relay_hosts = { '127.0.0.1' },
    max_message_size = 64 * 1024 * 1024, data_spill_threshold = $4 }
end)
kumo.on('get_queue_config', function()
  return kumo.make_queue_config{ retry_interval = '1h', max_retry_interval = '1h',
    protocol = { smtp = { mx_list = { '127.0.0.1:$3' } } } }
end)
kumo.on('get_egress_path_config', function()
  return kumo.make_egress_path{ enable_tls = 'Disabled', connect_timeout = '1s' }
end)
$later
EOF
}

run() { # tag threshold -> "peak_rss_MiB seconds"
	local dir="$WORK/$1"
	mkdir -p "$dir"
	PORT=$(free_port)
	policy "$dir" "$PORT" "$(free_port)" "$2" >"$dir/policy.lua"
	"$KUMOD" --policy "$dir/policy.lua" 2>"$dir/kumod.log" &
	KPID=$!
	wait_port "$PORT"
	local t0 t1 json
	t0=$(date +%s.%N)
	json=$(timeout "$RUN_TIMEOUT" "$TG" --target 127.0.0.1:"$PORT" --concurrency "$SESSIONS" \
		--message-count "$SESSIONS" --body-size "$SIZE" --domain example.com --domain-suffix '' \
		--timeout 60 --json 2>/dev/null)
	t1=$(date +%s.%N)
	local hwm
	hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$KPID/status")
	kill "$KPID"
	wait "$KPID" || true
	KPID=""
	/usr/bin/python3 -c 'import json, sys
r = json.loads(sys.argv[1])
assert r["failed"] == 0 and r["sent"] == int(sys.argv[2]), r
print("%.0f %.1f" % (int(sys.argv[3]) / 1024, float(sys.argv[5]) - float(sys.argv[4])))' \
		"$json" "$SESSIONS" "$hwm" "$t0" "$t1"
}

echo "streamed-body: $SESSIONS sessions x 1 message of $SIZE, $ROUNDS rounds, first attempt $FIRST_ATTEMPT"
echo "machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
	for mode in memory streamed; do
		thr=0
		[ "$mode" = streamed ] && thr=1048576
		read -r mib secs <<<"$(run "$mode-$r" "$thr")"
		echo "round $r $mode (data_spill_threshold=$thr): peak RSS ${mib} MiB, ${secs} s"
	done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
