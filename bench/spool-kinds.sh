#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Ingest with the destination down (messages only spooled): kumod with
# kind = 'LocalDisk' against kind = 'RocksDB', same policy otherwise, driven
# by build/traffic-gen (SESSIONS sessions, COUNT messages of SIZE bytes per
# run). Rounds are interleaved (LocalDisk, RocksDB, LocalDisk, ...) so that
# both kinds see the same machine load; each run starts on an empty spool in
# a fresh directory under $TMPDIR. Prints per-round msg/s, the medians, the
# ratio and the load average before and after.
#
# With STRACE=1 one more bounded run per kind under `strace -f -c` prints the
# system calls per message (the whole kumod process: sessions included).
#
# Usage: bench/spool-kinds.sh [COUNT] [ROUNDS]   (defaults 20000 3)
# Environment: KUMOD (build/kumod), TG (build/traffic-gen), SESSIONS (50),
#   SIZE (1024), RUN_TIMEOUT (120 s per traffic-gen run), STRACE (0),
#   STRACE_COUNT (2000).
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh

COUNT=${1:-20000}
ROUNDS=${2:-3}
KUMOD=${KUMOD:-build/kumod}
TG=${TG:-build/traffic-gen}
SESSIONS=${SESSIONS:-50}
SIZE=${SIZE:-1024}
RUN_TIMEOUT=${RUN_TIMEOUT:-120}
STRACE=${STRACE:-0}
STRACE_COUNT=${STRACE_COUNT:-2000}
for bin in "$KUMOD" "$TG"; do
	[ -x "$bin" ] || { echo "missing $bin (make)" >&2; exit 2; }
done
WORK=$(mktemp -d "${TMPDIR:-/tmp}/spool-kinds.XXXXXX")
KPID=""
cleanup() {
	if [ -n "$KPID" ]; then kill "$KPID" 2>/dev/null || true; wait "$KPID" 2>/dev/null || true; fi
	rm -rf "$WORK"
}
trap cleanup EXIT

policy() { # kind dir port -> policy text: spool only (the one MX never answers)
	local kind=$1 dir=$2 port=$3 dead=$4
	cat <<EOF
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool{ name = 'data', path = '$dir/data', kind = '$kind' }
  kumo.define_spool{ name = 'meta', path = '$dir/meta', kind = '$kind' }
  kumo.start_esmtp_listener{ listen = '127.0.0.1:$port', relay_hosts = { '127.0.0.1' } }
end)
kumo.on('get_queue_config', function()
  return kumo.make_queue_config{ retry_interval = '1h', max_retry_interval = '1h',
    protocol = { smtp = { mx_list = { '127.0.0.1:$dead' } } } }
end)
kumo.on('get_egress_path_config', function()
  return kumo.make_egress_path{ enable_tls = 'Disabled', connect_timeout = '1s' }
end)
EOF
}

start_kumod() { # kind tag [wrapper...] -> KPID, PORT
	local kind=$1 tag=$2
	shift 2
	local dir="$WORK/$tag"
	mkdir -p "$dir"
	PORT=$(free_port)
	policy "$kind" "$dir" "$PORT" "$(free_port)" >"$dir/policy.lua"
	"$@" "$KUMOD" --policy "$dir/policy.lua" 2>"$dir/kumod.log" &
	KPID=$!
	wait_port "$PORT"
}

stop_kumod() {
	kill "$KPID"
	wait "$KPID" || true
	KPID=""
}

run_tg() { # count -> msg/s (traffic-gen's exact rate); fails on any failed message
	local json
	json=$(timeout "$RUN_TIMEOUT" "$TG" --target 127.0.0.1:"$PORT" --concurrency "$SESSIONS" \
		--message-count "$1" --body-size "$SIZE" --domain example.com --domain-suffix '' \
		--timeout 30 --json 2>/dev/null)
	/usr/bin/python3 -c 'import json, sys
r = json.loads(sys.argv[1])
assert r["failed"] == 0 and r["sent"] == int(sys.argv[2]), r
print("%.0f" % r["rate"]["per_second_exact"])' "$json" "$1"
}

echo "spool-kinds: $COUNT messages x $SIZE bytes, $SESSIONS sessions, $ROUNDS rounds, destination down"
echo "machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A rates=([LocalDisk]="" [RocksDB]="")
for r in $(seq "$ROUNDS"); do
	for kind in LocalDisk RocksDB; do
		start_kumod "$kind" "$kind-$r"
		rate=$(run_tg "$COUNT")
		stop_kumod
		rates[$kind]="${rates[$kind]} $rate"
		printf '  round %d %-9s %6s msg/s\n' "$r" "$kind" "$rate"
		rm -rf "$WORK/$kind-$r"
	done
done
# shellcheck disable=SC2086 # one number per word
ld=$(median ${rates[LocalDisk]})
# shellcheck disable=SC2086
rk=$(median ${rates[RocksDB]})
echo "median: LocalDisk $ld msg/s, RocksDB $rk msg/s, RocksDB/LocalDisk $(awk -v a="$rk" -v b="$ld" 'BEGIN{printf "%.2f", a/b}')"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "$STRACE" = 1 ]; then
	command -v strace >/dev/null || { echo "STRACE=1 needs strace" >&2; exit 2; }
	for kind in LocalDisk RocksDB; do
		start_kumod "$kind" "strace-$kind" strace -f -c -o "$WORK/strace-$kind.txt"
		run_tg "$STRACE_COUNT" >/dev/null
		kill "$(pgrep -P "$KPID")"
		wait "$KPID" || true
		KPID=""
		awk -v k="$kind" -v n="$STRACE_COUNT" '/^------/{s++; next}
			s==1 && NF>=5 {c+=$4; if ($NF ~ /^(fsync|fdatasync|mkdirat|openat|renameat)$/) d[$NF]=$4}
			END {printf "  %-9s %.1f syscalls/msg (fsync %.2f fdatasync %.2f mkdirat %.2f openat %.2f renameat %.2f)\n",
				k, c/n, d["fsync"]/n, d["fdatasync"]/n, d["mkdirat"]/n, d["openat"]/n, d["renameat"]/n}' \
			"$WORK/strace-$kind.txt"
	done
fi
