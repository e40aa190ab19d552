#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# `make image-test` (after `make image`): checks the image end to end with
# loopback-only ports and containers it names itself (kumod-it-*-PID):
#  1. the seed's sink invocation: -p 127.0.0.1:PORT:25, the repo at /config,
#     KUMO_POLICY=/config/sink/sink.lua; swaks gets 250 and the sink logs
#     the message as accepted;
#  2. a relay container (default policy, spool on a named volume, host
#     network on loopback) queues 3 messages while the sink is down; it is
#     stopped (SIGTERM, graceful) with the 3 messages on the volume, started
#     again with a new sink up, and delivers all 3;
#  3. kumod is PID 1 and runs as kumod (non-root); the HEALTHCHECK probe
#     passes; the image is at most MAX_IMAGE_MB (default 40) MB.
set -eu
cd "$(dirname "$0")/../.."
top=$(pwd)
. docker/kumod/engine.sh
IMAGE=${IMAGE:-kumod-toolkit/kumod:latest}
MAX_IMAGE_MB=${MAX_IMAGE_MB:-40}
PS=${IT_SINK_PORT:-12925}  # sink SMTP (mapped)
PR=${IT_RELAY_PORT:-12926} # relay SMTP (host network, 127.0.0.1)
PH=${IT_RELAY_HTTP:-12927} # relay HTTP (liveness)
sfx=$$
sink=kumod-it-sink-$sfx
relay=kumod-it-relay-$sfx
vol=kumod-it-spool-$sfx
fails=0

eng() { $ENGINE "$@" 2>&1 | grep -v 'level=error msg=".*systemd' || true; }
cleanup() {
	for c in "$sink" "$relay"; do
		$ENGINE rm -f -v -t 10 "$c" >/dev/null 2>&1 || true
	done
	$ENGINE volume rm -f "$vol" >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM
ok() { echo "ok   $*"; }
bad() {
	echo "FAIL $*"
	fails=$((fails + 1))
}
# poll CMD until it prints WANT (bounded: 60 tries, 0.5 s apart)
wait_for() {
	want="$1"
	shift
	i=0
	while [ $i -lt 60 ]; do
		[ "$("$@" 2>/dev/null)" = "$want" ] && return 0
		sleep 0.5
		i=$((i + 1))
	done
	return 1
}
smtp_code() { # port: the final reply code swaks saw after DATA
	swaks --server "127.0.0.1:$1" --from it@example.com --to "rcpt@example.org" \
		--header "Subject: image-test $sfx" --timeout 20 2>&1 |
		awk '/^<-  [0-9][0-9][0-9] / {code=$2} /^ -> \./ {getline; if ($1 == "<-") dot=$2} END {print dot ? dot : code}'
}
# messages the sink accepted: its per-message log line (outcome field)
sink_count() { $ENGINE logs "$sink" 2>&1 | grep -c 'lua: .*sink message id=[0-9a-f]* .* outcome=accepted$' || true; }
sink_ready() { $ENGINE logs "$sink" 2>&1 | grep -c 'initialization complete' || true; }
# queued messages on the relay's volume: meta/<8 hex>/<32 hex id> files
spool_count() { find "$mnt/meta" -mindepth 2 -maxdepth 2 -type f -name '????????????????????????????????' 2>/dev/null | wc -l | tr -d ' '; }
start_sink() {
	$ENGINE rm -f -v "$sink" >/dev/null 2>&1 || true
	eng run -d --name "$sink" -p "127.0.0.1:$PS:25" -v "$top:/config:ro" \
		--env KUMO_POLICY=/config/sink/sink.lua "$IMAGE" >/dev/null
	wait_for 1 sink_ready || bad "sink container did not come up"
}

# 1. the sink
start_sink
code=$(smtp_code "$PS")
[ "$code" = 250 ] && ok "sink container: swaks via -p 127.0.0.1:$PS:25 got 250" || bad "sink container: swaks got '$code', want 250"
wait_for 1 sink_count && ok "sink logged 1 accepted message" || bad "sink logged $(sink_count) accepted, want 1"
user=$($ENGINE top "$sink" user pid 2>/dev/null | awk 'NR==2 {print $1 "/" $2}')
[ "$user" = "kumod/1" ] && ok "sink: kumod is PID 1 as user kumod" || bad "sink: PID 1 user '$user', want kumod/1"
$ENGINE healthcheck run "$sink" >/dev/null 2>&1 && ok "sink: healthcheck (SMTP 220 fallback) passes" || bad "sink: healthcheck fails"
eng stop -t 30 "$sink" >/dev/null

# 2. the relay, sink down: 3 messages queue on the volume
eng volume create "$vol" >/dev/null
mnt=$($ENGINE volume inspect --format '{{.Mountpoint}}' "$vol")
eng run -d --name "$relay" --network host -v "$vol:/var/spool/kumod" \
	--env KUMO_LISTEN="127.0.0.1:$PR" --env KUMO_HTTP_LISTEN="127.0.0.1:$PH" \
	--env KUMO_HEALTH_HTTP="127.0.0.1:$PH" --env KUMO_SMART_HOST="127.0.0.1:$PS" \
	--env KUMO_RETRY_INTERVAL=2s "$IMAGE" >/dev/null
wait_for 200 curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PH/api/check-liveness/v1" ||
	bad "relay liveness never 200"
$ENGINE healthcheck run "$relay" >/dev/null 2>&1 && ok "relay: healthcheck (liveness 200) passes" || bad "relay: healthcheck fails"
user=$($ENGINE top "$relay" user pid 2>/dev/null | awk 'NR==2 {print $1 "/" $2}')
[ "$user" = "kumod/1" ] && ok "relay: kumod is PID 1 as user kumod" || bad "relay: PID 1 user '$user', want kumod/1"
n=0
for i in 1 2 3; do
	code=$(smtp_code "$PR")
	[ "$code" = 250 ] && n=$((n + 1))
done
[ $n = 3 ] && ok "relay accepted 3 messages (250)" || bad "relay accepted $n of 3"
wait_for 3 spool_count && ok "relay spool volume holds 3 messages" || bad "relay spool holds $(spool_count), want 3"
eng stop -t 30 "$relay" >/dev/null
st=$($ENGINE inspect --format '{{.State.ExitCode}}' "$relay")
[ "$st" = 0 ] && ok "relay stopped by SIGTERM, exit code 0" || bad "relay exit code '$st' after stop"
$ENGINE logs "$relay" 2>&1 | grep -q 'shutdown complete' && ok "relay logged a graceful shutdown" ||
	bad "relay log has no 'shutdown complete'"
[ "$(spool_count)" = 3 ] && ok "3 messages still on the volume while stopped" || bad "volume holds $(spool_count) after stop, want 3"

# 3. sink up again, relay started again: the queued mail is delivered
start_sink
eng start "$relay" >/dev/null
wait_for 3 sink_count && ok "after restart the relay delivered the 3 queued messages" ||
	bad "sink accepted $(sink_count) after relay restart, want 3"
wait_for 0 spool_count && ok "relay spool empty after delivery" || bad "relay spool holds $(spool_count) after delivery"

size=$($ENGINE image inspect --format '{{.Size}}' "$IMAGE")
mb=$(((size + 999999) / 1000000))
[ "$mb" -le "$MAX_IMAGE_MB" ] && ok "image size ${mb} MB <= ${MAX_IMAGE_MB} MB" || bad "image size ${mb} MB > ${MAX_IMAGE_MB} MB"
cfg_user=$($ENGINE image inspect --format '{{.Config.User}}' "$IMAGE")
[ "$cfg_user" = kumod ] && ok "image USER is kumod" || bad "image USER '$cfg_user'"

if [ $fails -gt 0 ]; then
	echo "image-test: $fails check(s) failed"
	$ENGINE logs "$relay" 2>&1 | tail -20
	exit 1
fi
echo "image-test: all checks passed"
