#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The sink's mail catcher: capture cost and the speed of its API on a large
# store. Postfix smtp-source sends 1 KiB messages (20 sessions, reused) to
# three servers started side by side on loopback, interleaved per round:
#   sink        build/kumod --policy sink/sink.lua, catcher off
#   catcher     the same with KUMO_SINK_HTTP set (every message captured;
#               no UI open, KUMO_SINK_MAX_MESSAGES=MAX_MESSAGES)
#   smtp_sink   Postfix's smtp-sink (accepts and discards)
# Each server's CPU per message is shown for the whole process and for its
# main thread (kumod's loop; the catcher builds summaries on its writer
# thread, so the difference is what moved off the loop).
# Then, on the catcher's store (ROUNDS x COUNT messages, capped at
# MAX_MESSAGES): the time of the first page (50), a page deep in the store,
# a search that matches nothing (so it scans every message) and a search
# by subject, each the median of 5 curl requests; then the catcher is
# restarted and the time until its API answers is the index replay.
#
#   bench/catcher.sh [COUNT]            (default 40000 messages per run)
#
# Environment: KUMOD (build/kumod), SESSIONS (20), ROUNDS (3), RUN_TIMEOUT
# (300 s per smtp-source run), MAX_MESSAGES (100000), PIN (1: smtp-source on
# CPU 0, the servers on CPU 1). Every run is bounded (fixed counts, timeouts).
set -euo pipefail

cd "$(dirname "$0")/.."
COUNT=${1:-40000}
KUMOD=${KUMOD:-build/kumod}
SESSIONS=${SESSIONS:-20}
ROUNDS=${ROUNDS:-3}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
MAX_MESSAGES=${MAX_MESSAGES:-100000}
SMTP_SOURCE=${SMTP_SOURCE:-/usr/sbin/smtp-source}
SMTP_SINK=${SMTP_SINK:-/usr/sbin/smtp-sink}
for bin in "$KUMOD" "$SMTP_SOURCE" "$SMTP_SINK" curl; do
	command -v "$bin" >/dev/null || { echo "missing $bin (make; apt-get install postfix curl)" >&2; exit 2; }
done

# free_port, wait_port, cpu_ticks, CLK_TCK, pin_cpus, start_kumod_sink, start_smtp_sink, median
# shellcheck source=bench/lib.sh
. bench/lib.sh

WORK=$(mktemp -d /tmp/catcher-bench.XXXXXX)
cleanup() {
	# shellcheck disable=SC2086
	stop_pids $BENCH_PIDS
	rm -rf "$WORK"
}
trap cleanup EXIT

pin_cpus
HTTP_PORT=$(free_port)
start_sink() { # name [http] -> sets PID_<name> PORT_<name>
	local env=()
	[ -n "${2:-}" ] && env=("KUMO_SINK_HTTP=127.0.0.1:$HTTP_PORT" "KUMO_SINK_STORE=$WORK/store"
		"KUMO_SINK_MAX_MESSAGES=$MAX_MESSAGES" KUMO_SINK_MAX_BYTES=0)
	start_kumod_sink "$1" "$WORK/$1.log" KUMO_SINK_BUSY_POLL=0 "${env[@]}"
}
PID_catcher= # set by start_sink
start_sink sink
start_sink catcher http
start_smtp_sink "$WORK/smtp-sink.log"
SERVERS=(sink catcher smtp_sink)

declare -A RATE CPU LOOP
loop_ticks() { # pid -> CPU ticks of its main (loop) thread
	local stat
	stat=$(cat "/proc/$1/task/$1/stat")
	stat=${stat##*) }
	# shellcheck disable=SC2086
	set -- $stat
	echo $((${12} + ${13}))
}
run() { # name round
	local pid_var=PID_$1 port_var=PORT_$1 t0 t1 c0 c1 l0 l1
	c0=$(cpu_ticks "${!pid_var}")
	l0=$(loop_ticks "${!pid_var}")
	t0=$(date +%s.%N)
	if ! timeout "$RUN_TIMEOUT" "${CLIENT_PIN[@]}" "$SMTP_SOURCE" -s "$SESSIONS" -m "$COUNT" -l 1024 -d \
		-S "bench $2" -f sender@bench.test -t rcpt@bench.test -M bench.test 127.0.0.1:"${!port_var}" \
		>"$WORK/source.out" 2>&1; then
		echo "smtp-source against $1 failed:" >&2
		tail -5 "$WORK/source.out" >&2
		exit 1
	fi
	t1=$(date +%s.%N)
	c1=$(cpu_ticks "${!pid_var}")
	l1=$(loop_ticks "${!pid_var}")
	RATE[$1/$2]=$(awk -v n="$COUNT" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", n/(b-a)}')
	CPU[$1/$2]=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" -v n="$COUNT" 'BEGIN{printf "%.1f", (b-a)/t*1e6/n}')
	LOOP[$1/$2]=$(awk -v a="$l0" -v b="$l1" -v t="$CLK_TCK" -v n="$COUNT" 'BEGIN{printf "%.1f", (b-a)/t*1e6/n}')
}
for round in $(seq "$ROUNDS"); do
	for i in 0 1 2; do
		run "${SERVERS[$(((i + round) % 3))]}" "$round"
	done
done

echo "1 KiB messages, $SESSIONS sessions reused, $COUNT per run, medians of $ROUNDS interleaved rounds;"
echo "CPU pinning: ${SERVER_PIN[*]:-none} (servers), ${CLIENT_PIN[*]:-none} (smtp-source)."
echo
echo "| server | messages/s (median) | per round | server CPU us / message | its main thread (kumod: the loop) |"
echo "|---|---:|---|---:|---:|"
for s in "${SERVERS[@]}"; do
	rs=() cs=() ls=()
	for r in $(seq "$ROUNDS"); do rs+=("${RATE[$s/$r]}"); cs+=("${CPU[$s/$r]}"); ls+=("${LOOP[$s/$r]}"); done
	label=$s
	[ "$s" = sink ] && label="sink.lua, catcher off"
	[ "$s" = catcher ] && label="sink.lua, catcher on (UI closed)"
	[ "$s" = smtp_sink ] && label="Postfix smtp-sink"
	echo "| $label | $(median "${rs[@]}") | ${rs[*]} | $(median "${cs[@]}") | $(median "${ls[@]}") |"
done
echo
ratios() { # a b -> per-round ratios
	for r in $(seq "$ROUNDS"); do awk -v x="${RATE[$1/$r]}" -v y="${RATE[$2/$r]}" 'BEGIN{printf "%.2f\n", x/y}'; done
}
# shellcheck disable=SC2046
echo "catcher on / catcher off: $(median $(ratios catcher sink))x (rounds: $(ratios catcher sink | tr '\n' ' '))"
# shellcheck disable=SC2046
echo "catcher on / smtp-sink:   $(median $(ratios catcher smtp_sink))x (rounds: $(ratios catcher smtp_sink | tr '\n' ' '))"

# --- the API on the store --------------------------------------------------
API=http://127.0.0.1:$HTTP_PORT/api/v1
total() { curl -sf "$API/messages?limit=1" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])'; }
# the writer finishes within a few ms of the last 250; wait (bounded) for a stable total
prev=-1
for _ in $(seq 100); do
	t=$(total)
	[ "$t" = "$prev" ] && break
	prev=$t
	sleep 0.2
done
STORED=$(total)
timed() { # url -> median of 5 request times in ms
	local ts=()
	for _ in 1 2 3 4 5; do
		ts+=("$(curl -sf -o /dev/null -w '%{time_total}' "$1" | awk '{printf "%.1f", $1*1000}')")
	done
	median "${ts[@]}"
}
echo
echo "Store: $STORED messages ($(du -sh "$WORK/store" | cut -f1) on disk); kumod RSS $(awk '/VmRSS/{print $2, $3}' "/proc/$PID_catcher/status")."
echo
echo "| request | ms (median of 5) |"
echo "|---|---:|"
echo "| first page (limit=50) | $(timed "$API/messages?limit=50") |"
echo "| page at start=$((STORED / 2)) | $(timed "$API/messages?limit=50&start=$((STORED / 2))") |"
echo "| search, no match (scans all $STORED) | $(timed "$API/search?query=nosuchword") |"
echo "| search subject:\"bench 1\" (first page of matches) | $(timed "$API/search?query=subject:%22bench%201%22") |"

# --- replay at start ------------------------------------------------------------
kill "$PID_catcher"
for _ in $(seq 100); do kill -0 "$PID_catcher" 2>/dev/null || break; sleep 0.1; done
t0=$(date +%s.%N)
start_sink catcher http
for _ in $(seq 1000); do curl -sf -o /dev/null "$API/messages?limit=1" && break; sleep 0.01; done
t1=$(date +%s.%N)
echo
echo "Restart with $(total) stored messages: API answering after $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s (kumod start-up included)."
