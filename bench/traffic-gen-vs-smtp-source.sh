#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# traffic-gen vs Postfix smtp-source: both send the same number of 1 KiB and
# 100 KiB messages over 20 connections to the same Postfix smtp-sink, in one
# run. Prints a Markdown table: messages/s and the generator's own CPU
# seconds (user+sys of the child, from /usr/bin/time) per 1000 messages.
#
# Usage: bench/traffic-gen-vs-smtp-source.sh [MESSAGES_1K] [MESSAGES_100K]
#   env TG=build/traffic-gen  SESSIONS=20  PORT=(free)  ROUNDS=1
set -euo pipefail

N1=${1:-50000}
N100=${2:-10000}
SESSIONS=${SESSIONS:-20}
ROUNDS=${ROUNDS:-1}
TG=${TG:-build/traffic-gen}
SINK=/usr/sbin/smtp-sink
SOURCE=/usr/sbin/smtp-source
TIME=/usr/bin/time

for b in "$TG" "$SINK" "$SOURCE" "$TIME"; do
	[ -x "$b" ] || { echo "bench: $b not found (make build/traffic-gen; apt-get install postfix time)" >&2; exit 1; }
done

PORT=${PORT:-$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
TMP=$(mktemp -d)
SINK_PID=
cleanup() {
	[ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null && wait "$SINK_PID" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT

USER_ARGS=()
[ "$(id -u)" = 0 ] && USER_ARGS=(-u nobody)
# smtp-sink: PIPELINING on, backlog 1000, no per-message output
"$SINK" "${USER_ARGS[@]}" "127.0.0.1:$PORT" 1000 >/dev/null 2>&1 &
SINK_PID=$!
for _ in $(seq 50); do
	(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
	sleep 0.1
done

# run NAME SIZE COUNT CMD... -> "elapsed cpu" (seconds)
measure() {
	local out="$TMP/time.$$"
	"$TIME" -f '%e %U %S' -o "$out" "$@" >/dev/null 2>"$TMP/err" || {
		echo "bench: command failed: $*" >&2
		cat "$TMP/err" >&2
		exit 1
	}
	awk '{ printf "%s %.3f\n", $1, $2 + $3 }' "$out"
}

row() { # tool size count elapsed cpu
	awk -v tool="$1" -v size="$2" -v n="$3" -v e="$4" -v c="$5" 'BEGIN {
		printf "| %s | %s | %d | %.2f | %d | %.3f | %d |\n", tool, size, n, e, n / e, c * 1000 / n, (c > 0 ? n / c : 0)
	}'
}

echo "| generator | message body | messages | elapsed s | messages/s | CPU s per 1000 messages | messages per CPU-second |"
echo "|---|---|---:|---:|---:|---:|---:|"
for round in $(seq "$ROUNDS"); do
	for spec in "1KiB 1024 $N1" "100KiB 102400 $N100"; do
		set -- $spec
		label=$1 bytes=$2 n=$3
		read -r e c < <(measure "$TG" --target "127.0.0.1:$PORT" --concurrency "$SESSIONS" \
			--message-count "$n" --body-size "$bytes")
		row traffic-gen "$label" "$n" "$e" "$c"
		read -r e c < <(measure "$SOURCE" -s "$SESSIONS" -m "$n" -l "$bytes" "127.0.0.1:$PORT")
		row smtp-source "$label" "$n" "$e" "$c"
	done
done
