#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# What tracing costs kumod per message on the sink benchmark, every variant in
# one run, interleaved:
#
#   bench/tracing-cost.sh [MESSAGES] [ROUNDS]       (defaults 20000 and 3)
#
# Variants (a fresh kumod --policy sink/sink.lua each time, busy poll off so
# CPU is work, not spinning):
#   compiled-out  kumod built with USE_LTTNG=0 USE_USDT=0 (KUMOD_NOTRACE,
#                 default build/notrace/kumod; built here when missing)
#   off           the normal build, nothing listening
#   lttng         an LTTng session recording every `kumod:*` event of this
#                 kumod (lttng create/enable-event -u 'kumod:*'/track/start,
#                 then stop/destroy), into the temp dir
#   usdt          bpftrace attached to every kumod:* USDT probe of this kumod
#                 (counting events); left out without bpftrace or probes
#   log-trace     KUMOD_LOG=kumod=trace, stderr to a file
# Per run: build/traffic-gen --concurrency CONC --message-count MESSAGES
# (1 KiB bodies) against the sink; kumod's utime+stime (all threads) from
# /proc/PID/stat before and after the traffic, divided by MESSAGES. Prints a
# Markdown table of medians (µs of kumod CPU per message), each round's value
# and the ratio to `off`. Every run is bounded (count, and RUN_TIMEOUT s).
# Needs root for lttng (system session daemon; one is started with
# --no-kernel when none runs, and stopped by its pid) and bpftrace.
# Environment: KUMOD (build/kumod), KUMOD_NOTRACE, TRAFFIC_GEN
# (build/traffic-gen), CONC (10), RUN_TIMEOUT (120), PIN (1: traffic-gen on
# CPU 0, kumod on CPU 1), VARIANTS (all five, space-separated), KEEP_WORK
# (set: keep the temp dir with logs and bpftrace output).
set -euo pipefail

cd "$(dirname "$0")/.."
MESSAGES=${1:-20000}
ROUNDS=${2:-3}
KUMOD=${KUMOD:-build/kumod}
KUMOD_NOTRACE=${KUMOD_NOTRACE:-build/notrace/kumod}
TRAFFIC_GEN=${TRAFFIC_GEN:-build/traffic-gen}
CONC=${CONC:-10}
RUN_TIMEOUT=${RUN_TIMEOUT:-120}
VARIANTS=${VARIANTS:-compiled-out off lttng usdt log-trace}

for bin in "$KUMOD" "$TRAFFIC_GEN"; do
	[ -x "$bin" ] || { echo "missing $bin (make)" >&2; exit 2; }
done
if [[ " $VARIANTS " == *" compiled-out "* ]] && [ ! -x "$KUMOD_NOTRACE" ]; then
	if [ "$KUMOD_NOTRACE" != build/notrace/kumod ]; then
		echo "missing $KUMOD_NOTRACE" >&2
		exit 2
	fi
	echo "building build/notrace/kumod (USE_LTTNG=0 USE_USDT=0)" >&2
	make -s BUILD=build/notrace USE_LTTNG=0 USE_USDT=0 build/notrace/kumod >&2
fi

WORK=$(mktemp -d /tmp/tracing-cost.XXXXXX)
KPID='' BTPID='' SESSIOND_PID='' LT_SESSION=''
stop_pid() { # pid -> killed and reaped (TERM, then KILL after 5 s)
	[ -n "$1" ] || return 0
	kill "$1" 2>/dev/null || true
	for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
	kill -9 "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}
cleanup() {
	if [ -n "$LT_SESSION" ]; then lttng destroy "$LT_SESSION" >/dev/null 2>&1 || true; fi
	stop_pid "$BTPID"
	stop_pid "$KPID"
	stop_pid "$SESSIOND_PID"
	[ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

# free_port, wait_port, cpu_ticks, CLK_TCK
# shellcheck source=bench/lib.sh
. bench/lib.sh

SERVER_PIN=() CLIENT_PIN=()
if [ "${PIN:-1}" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
	SERVER_PIN=(taskset -c 1)
	CLIENT_PIN=(taskset -c 0)
fi

# --- LTTng: a session daemon (ours when none runs) ----------------------------
if [[ " $VARIANTS " == *" lttng "* ]]; then
	command -v lttng >/dev/null || { echo "lttng missing (apt-get install lttng-tools)" >&2; exit 2; }
	if ! lttng list >/dev/null 2>&1; then
		lttng-sessiond --no-kernel --daemonize --pidfile="$WORK/sessiond.pid"
		for _ in $(seq 50); do lttng list >/dev/null 2>&1 && break; sleep 0.1; done
		SESSIOND_PID=$(cat "$WORK/sessiond.pid")
	fi
fi

# --- USDT: does bpftrace attach here? -----------------------------------------
BPF_SCRIPT='BEGIN { printf("attached\n"); } usdt:'$(readlink -f "$KUMOD")':kumod:* { @events = count(); }'
if [[ " $VARIANTS " == *" usdt "* ]]; then
	if ! command -v bpftrace >/dev/null || [ "$(readelf -n "$KUMOD" | grep -c 'Provider: kumod')" = 0 ]; then
		echo "usdt: left out (no bpftrace, or $KUMOD has no probes)" >&2
		VARIANTS=${VARIANTS/usdt/}
	fi
fi

start_kumod() { # binary extra-env... -> KPID, PORT
	local bin=$1 log=$WORK/kumod.log
	shift
	PORT=$(free_port)
	env KUMO_SINK_PORT="$PORT" KUMO_SINK_BUSY_POLL=0 LTTNG_UST_REGISTER_TIMEOUT=0 \
		KUMOD_LOG=kumod=warn,kumo_server_common=info "$@" \
		"${SERVER_PIN[@]}" "$bin" --policy sink/sink.lua >"$log" 2>&1 &
	KPID=$!
	for _ in $(seq 100); do grep -q "initialization complete" "$log" && break; sleep 0.1; done
	grep -q "initialization complete" "$log" || { tail -20 "$log" >&2; exit 1; }
	wait_port "$PORT"
}

declare -A US EVENTS
run() { # variant round
	local v=$1 r=$2 c0 c1 bin=$KUMOD env=()
	case $v in
	compiled-out) bin=$KUMOD_NOTRACE ;;
	log-trace) env=('KUMOD_LOG=kumod=trace,kumo_server_common=info') ;;
	esac
	start_kumod "$bin" "${env[@]}"
	case $v in
	lttng)
		LT_SESSION=tcost$$
		lttng create "$LT_SESSION" --output="$WORK/lttng" >/dev/null
		lttng enable-event -u 'kumod:*' -s "$LT_SESSION" >/dev/null
		lttng track -u --vpid="$KPID" -s "$LT_SESSION" >/dev/null
		lttng start "$LT_SESSION" >/dev/null
		;;
	usdt)
		bpftrace -p "$KPID" -e "$BPF_SCRIPT" >"$WORK/bpftrace.out" 2>&1 &
		BTPID=$!
		# BEGIN runs once every probe is attached
		for _ in $(seq 600); do grep -q '^attached' "$WORK/bpftrace.out" && break; sleep 0.1; done
		if ! grep -q '^attached' "$WORK/bpftrace.out"; then
			echo "bpftrace did not attach within 60 s:" >&2
			tail -5 "$WORK/bpftrace.out" >&2
			exit 1
		fi
		;;
	esac
	c0=$(cpu_ticks "$KPID")
	if ! timeout "$RUN_TIMEOUT" "${CLIENT_PIN[@]}" "$TRAFFIC_GEN" --target 127.0.0.1:"$PORT" \
		--concurrency "$CONC" --message-count "$MESSAGES" --domain-suffix '' --json \
		>"$WORK/tg.json" 2>"$WORK/tg.err"; then
		echo "traffic-gen against $v failed:" >&2
		tail -5 "$WORK/tg.err" >&2
		exit 1
	fi
	c1=$(cpu_ticks "$KPID")
	US[$v/$r]=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" -v n="$MESSAGES" 'BEGIN{printf "%.2f", (b-a)/t/n*1e6}')
	case $v in
	lttng)
		lttng stop "$LT_SESSION" >/dev/null
		lttng destroy "$LT_SESSION" >/dev/null
		LT_SESSION=
		if [ "$r" = 1 ] && command -v babeltrace2 >/dev/null; then
			EVENTS[$v/$r]=$(babeltrace2 "$WORK/lttng" 2>/dev/null | wc -l)
		fi
		rm -rf "$WORK/lttng"
		;;
	usdt)
		# bpftrace prints its map on SIGINT, after detaching every probe
		# (which can hang here: bounded to 30 s, then the count is lost)
		kill -INT "$BTPID"
		for _ in $(seq 300); do kill -0 "$BTPID" 2>/dev/null || break; sleep 0.1; done
		stop_pid "$BTPID"
		BTPID=
		EVENTS[$v/$r]=$(awk '/^@events:/{print $2}' "$WORK/bpftrace.out")
		;;
	log-trace) EVENTS[$v/$r]=$(wc -l <"$WORK/kumod.log") ;;
	esac
	stop_pid "$KPID"
	KPID=
}

read -r -a VLIST <<<"$VARIANTS"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for r in $(seq "$ROUNDS"); do
	# rotate the order per round
	n=${#VLIST[@]}
	for i in $(seq 0 $((n - 1))); do
		v=${VLIST[$(((i + r - 1) % n))]}
		echo "round $r: $v" >&2
		run "$v" "$r"
	done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

declare -A MED
for v in "${VLIST[@]}"; do
	vals=()
	for r in $(seq "$ROUNDS"); do vals+=("${US[$v/$r]}"); done
	MED[$v]=$(median "${vals[@]}")
done
echo "| variant | kumod CPU µs / message (median) | rounds | vs off | events recorded per message |"
echo "|---|---:|---|---:|---:|"
for v in "${VLIST[@]}"; do
	vals=() ev=
	for r in $(seq "$ROUNDS"); do vals+=("${US[$v/$r]}"); done
	if [ -n "${EVENTS[$v/1]:-}" ]; then
		ev=$(awk -v e="${EVENTS[$v/1]}" -v n="$MESSAGES" 'BEGIN{printf "%.1f", e/n}')
	fi
	ratio=-
	[ -n "${MED[off]:-}" ] && ratio=$(awk -v a="${MED[$v]}" -v b="${MED[off]}" 'BEGIN{printf "%+.1f %%", (a/b-1)*100}')
	echo "| $v | ${MED[$v]} | ${vals[*]} | $ratio | ${ev:--} |"
done
echo
echo "$MESSAGES messages per run, $ROUNDS rounds, concurrency $CONC, $(nproc) CPUs, pinned: ${PIN:-1}"
