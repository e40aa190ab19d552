#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Postfix smtp-source against our sink (build/kumod --policy sink/sink.lua) and
# against Postfix's smtp-sink, in one run, on loopback. Postfix's master is
# never started: smtp-source and smtp-sink are standalone test programs
# (Debian package postfix).
#
#   bench/sink-vs-smtp-sink.sh [REUSE_1K] [REUSE_100K] [PERCONN_1K] [PERCONN_100K]
#
# Four scenarios per server, each with 20 parallel sessions:
#   reuse    smtp-source -s 20 -m N -l SIZE -d   (sessions send message after message)
#   perconn  smtp-source -s 20 -m N -l SIZE      (one message per connection)
# with SIZE = 1 KiB and 100 KiB bodies, against three servers: the sink
# (sink/sink.lua) with busy poll BUSY_POLL (KUMO_SINK_BUSY_POLL,
# kumo.set_busy_poll: the loop polls without sleeping for that long after
# input; the sink's default is 50us), the same sink with busy poll off, and
# Postfix's smtp-sink. For each run:
# messages/s from the wall time of smtp-source, and the server's CPU seconds
# (utime+stime from /proc/<pid>/stat before/after, all threads). Prints a
# Markdown table and the ratios (each sink / smtp-sink). Every run is bounded:
# fixed message counts and a `timeout` of RUN_TIMEOUT seconds (default 300)
# per smtp-source invocation.
# Environment: KUMOD (default build/kumod), SESSIONS (20), RUN_TIMEOUT (300),
# ROUNDS (3: interleaved repetitions per scenario; medians are reported),
# PIN (1: smtp-source on CPU 0, the server under test on CPU 1; 0: unpinned),
# BUSY_POLL (50us, as sink.lua ships; 0 leaves that sink out).
set -euo pipefail

cd "$(dirname "$0")/.."
REUSE_1K=${1:-50000}
REUSE_100K=${2:-10000}
PERCONN_1K=${3:-5000}
PERCONN_100K=${4:-2000}
KUMOD=${KUMOD:-build/kumod}
SESSIONS=${SESSIONS:-20}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
ROUNDS=${ROUNDS:-3}
SMTP_SOURCE=${SMTP_SOURCE:-/usr/sbin/smtp-source}
SMTP_SINK=${SMTP_SINK:-/usr/sbin/smtp-sink}

for bin in "$KUMOD" "$SMTP_SOURCE" "$SMTP_SINK"; do
	[ -x "$bin" ] || { echo "missing $bin (make; apt-get install postfix)" >&2; exit 2; }
done

# free_port, wait_port, cpu_ticks, CLK_TCK, pin_cpus, start_kumod_sink, start_smtp_sink, median
# shellcheck source=bench/lib.sh
. bench/lib.sh

WORK=$(mktemp -d /tmp/sink-bench.XXXXXX)
cleanup() {
	# shellcheck disable=SC2086
	stop_pids $BENCH_PIDS
	rm -rf "$WORK"
}
trap cleanup EXIT

# --- CPU placement (see pin_cpus) ----------------------------------------------
pin_cpus

# --- servers ---------------------------------------------------------------
start_sink() { # name busy-poll -> sets PID_<name> PORT_<name>
	start_kumod_sink "$1" "$WORK/$1.log" KUMO_SINK_BUSY_POLL="$2"
}
BUSY_POLL=${BUSY_POLL:-50us}
SINKS=()
if [ "$BUSY_POLL" != 0 ]; then
	SINKS+=(sink_bp)
	start_sink sink_bp "$BUSY_POLL"
fi
SINKS+=(sink)
start_sink sink 0

start_smtp_sink "$WORK/smtp-sink.log"
SERVERS=("${SINKS[@]}" smtp_sink)

# --- runs --------------------------------------------------------------------
# Each scenario runs ROUNDS times per server, interleaved (the first server
# alternates per round); the tables report medians, and each round's
# messages/s ratio is listed so the spread is visible.
declare -A RATE CPU ELAPSED
run() { # server-name pid port mode size count round
	local name=$1 pid=$2 port=$3 mode=$4 size=$5 count=$6 round=$7 reuse=() t0 t1 c0 c1
	[ "$mode" = reuse ] && reuse=(-d)
	c0=$(cpu_ticks "$pid")
	t0=$(date +%s.%N)
	if ! timeout "$RUN_TIMEOUT" "${CLIENT_PIN[@]}" "$SMTP_SOURCE" -s "$SESSIONS" -m "$count" -l "$size" "${reuse[@]}" \
		-f sender@bench.test -t rcpt@bench.test -M bench.test 127.0.0.1:"$port" \
		>"$WORK/source.out" 2>&1; then
		echo "smtp-source against $name ($mode, $size bytes) failed:" >&2
		tail -5 "$WORK/source.out" >&2
		exit 1
	fi
	t1=$(date +%s.%N)
	c1=$(cpu_ticks "$pid")
	local k=$name/$mode/$size/$round
	RATE[$k]=$(awk -v n="$count" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", n/(b-a)}')
	CPU[$k]=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" 'BEGIN{printf "%.2f", (b-a)/t}')
	ELAPSED[$k]=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')
}
of() { # array-name server mode size -> the ROUNDS values
	local -n arr=$1
	local r
	for r in $(seq "$ROUNDS"); do echo "${arr[$2/$3/$4/$r]}"; done
}

SCENARIOS=("reuse 1024 $REUSE_1K" "reuse 102400 $REUSE_100K" "perconn 1024 $PERCONN_1K" "perconn 102400 $PERCONN_100K")
for sc in "${SCENARIOS[@]}"; do
	# shellcheck disable=SC2086
	set -- $sc
	for round in $(seq "$ROUNDS"); do
		# rotate the order per round, so no server always runs first
		n=${#SERVERS[@]}
		for i in $(seq 0 $((n - 1))); do
			srv=${SERVERS[$(((i + round) % n))]}
			pid_var=PID_$srv port_var=PORT_$srv
			run "$srv" "${!pid_var}" "${!port_var}" "$1" "$2" "$3" "$round"
		done
	done
done

# --- report --------------------------------------------------------------------
label() { [ "$1" = 1024 ] && echo "1 KiB" || echo "100 KiB"; }
mlabel() { [ "$1" = reuse ] && echo "reuse (-d)" || echo "1 msg/conn"; }
echo "Medians of $ROUNDS interleaved rounds; CPU pinning: ${SERVER_PIN[*]:-none} (server), ${CLIENT_PIN[*]:-none} (smtp-source)."
echo
echo "| scenario | body | messages | server | elapsed s | messages/s | server CPU s | CPU ms / 1000 msgs |"
echo "|---|---|---:|---|---:|---:|---:|---:|"
for sc in "${SCENARIOS[@]}"; do
	# shellcheck disable=SC2086
	set -- $sc
	for name in "${SERVERS[@]}"; do
		srv="kumod sink.lua, busy poll off"
		[ "$name" = sink_bp ] && srv="kumod sink.lua, busy poll $BUSY_POLL"
		[ "$name" = smtp_sink ] && srv="Postfix smtp-sink"
		# shellcheck disable=SC2046
		el=$(median $(of ELAPSED "$name" "$1" "$2"))
		# shellcheck disable=SC2046
		rate=$(median $(of RATE "$name" "$1" "$2"))
		# shellcheck disable=SC2046
		cpu=$(median $(of CPU "$name" "$1" "$2"))
		per=$(awk -v c="$cpu" -v n="$3" 'BEGIN{printf "%.1f", c*1000*1000/n}')
		echo "| $(mlabel "$1") | $(label "$2") | $3 | $srv | $el | $rate | $cpu | $per |"
	done
done
echo
echo "| scenario | body | sink | messages/s ratio (sink / smtp-sink), median | per round | CPU ratio (sink / smtp-sink), median |"
echo "|---|---|---|---:|---|---:|"
for sc in "${SCENARIOS[@]}"; do
	# shellcheck disable=SC2086
	set -- $sc
	for name in "${SINKS[@]}"; do
		rs=() cs=()
		for round in $(seq "$ROUNDS"); do
			a=$name/$1/$2/$round b=smtp_sink/$1/$2/$round
			rs+=("$(awk -v x="${RATE[$a]}" -v y="${RATE[$b]}" 'BEGIN{printf "%.2f", x/y}')")
			c=$(awk -v x="${CPU[$a]}" -v y="${CPU[$b]}" 'BEGIN{if (y > 0) printf "%.2f", x/y}')
			[ -n "$c" ] && cs+=("$c")
		done
		c="n/a"
		[ "${#cs[@]}" -gt 0 ] && c="$(median "${cs[@]}")x"
		sname="busy poll off"
		[ "$name" = sink_bp ] && sname="busy poll $BUSY_POLL"
		echo "| $(mlabel "$1") | $(label "$2") | $sname | $(median "${rs[@]}")x | ${rs[*]} | $c |"
	done
done
for name in "${SINKS[@]}"; do
	pid_var=PID_$name
	if ! kill -0 "${!pid_var}" 2>/dev/null; then
		echo "the sink ($name) died during the run:" >&2
		tail -20 "$WORK/$name.log" >&2
		exit 1
	fi
done
