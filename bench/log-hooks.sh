#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Log hooks while relaying, in one run, on loopback:
#
#   smtp-source ──▶ kumod relay ──▶ Postfix smtp-sink
#                      └─ log hook (policy-extras.log_hooks new_json) ──▶ HTTP receiver
#
# Five kumod relays with the same policy (spools in a temp dir with the
# default flush = false, local logs, mx_list to the sink, TLS off): "none"
# has no hook; "single" has log_hooks:new_json posting one record per
# request; "batched" the same with batch_size = $BATCH, min_batch_size =
# $BATCH, max_batch_latency = '200ms' (one JSON array per request);
# "single_deferred" and "batched_deferred" are those two with
# log_parameters = { deferred_spool = true } (hook records kept in memory,
# written to the spool only if they must stay; docs/spool.md section 12);
# "all_deferred_none", "all_deferred_single" and "all_deferred_batched"
# also set deferred_spool = true on the ESMTP listener (the mail itself is
# kept in memory until its first attempt fails: no spool write at all on
# the happy path).
# Each mail makes two hooked records (Reception, Delivery). Rounds alternate
# the relays in $RELAYS order ($ROUNDS each), each smtp-source -s $SESSIONS -m $N
# -l $SIZE; mail msg/s = N / time until the sink counted them all; records/s
# = 2N / time until the receiver counted them all (both from the first
# SMTP connection). The receiver is Python's ThreadingHTTPServer (HTTP/1.1
# keep-alive) counting records per path (one per "nodeid" key); its CPU
# time is shown, as it shares the 2 cores with kumod.
# Then, per hooked relay, the hook's ceiling apart from the mail rate: the
# scheduled queue bench.log_hook is suspended (/api/admin/suspend/v1),
# $DRAIN_N mails from drain@example.com are relayed, and once their
# 2 x $DRAIN_N records wait in that queue, another smtp-source of $DRAIN_N
# mails starts (relaying goes on meanwhile) and the suspension is deleted
# (the backlog is due at once): drain records/s = 2 x DRAIN_N / time until
# the receiver has every drain@ record (counted apart by their sender).
#
#   bench/log-hooks.sh [N] [SIZE]          (defaults 5000 mails, 1024 bytes)
#
# Environment: KUMOD (build/kumod), RELAYS ("none single batched
# single_deferred batched_deferred all_deferred_none all_deferred_single
# all_deferred_batched"; none is always started), DRAIN_RELAYS
# ("single batched"; empty: no drain), SESSIONS (10), CONNECTIONS (10: SMTP
# out), HOOK_CONNECTIONS (32: concurrent hook requests), BATCH (100),
# ROUNDS (2), DRAIN_N (N), DRAIN_TIMEOUT (120), TMPDIR (/tmp). Bounded: each smtp-source
# under timeout, every wait under DRAIN_TIMEOUT.
set -euo pipefail

cd "$(dirname "$0")/.."
N=${1:-5000}
SIZE=${2:-1024}
KUMOD=${KUMOD:-build/kumod}
SESSIONS=${SESSIONS:-10}
CONNECTIONS=${CONNECTIONS:-10}
HOOK_CONNECTIONS=${HOOK_CONNECTIONS:-32}
BATCH=${BATCH:-100}
ROUNDS=${ROUNDS:-2}
DRAIN_N=${DRAIN_N:-$N}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-120}
RELAYS=${RELAYS:-none single batched single_deferred batched_deferred all_deferred_none all_deferred_single all_deferred_batched}
DRAIN_RELAYS=${DRAIN_RELAYS-single batched}
SMTP_SOURCE=${SMTP_SOURCE:-/usr/sbin/smtp-source}
SMTP_SINK=${SMTP_SINK:-/usr/sbin/smtp-sink}
for bin in "$KUMOD" "$SMTP_SOURCE" "$SMTP_SINK" /usr/bin/python3 /usr/bin/curl; do
	[ -x "$bin" ] || { echo "missing $bin (make; apt-get install postfix curl)" >&2; exit 2; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/loghook-bench.XXXXXX")
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_port, wait_port, cpu_ticks, CLK_TCK, sink_count, wait_sink
# shellcheck source=bench/lib.sh
. bench/lib.sh
now() { date +%s.%N; }

SINK_PORT=$(free_port)
"$SMTP_SINK" -u nobody -c 127.0.0.1:"$SINK_PORT" 1024 >"$WORK/sink.count" 2>"$WORK/sink.err" &
PIDS+=($!)
wait_port "$SINK_PORT"

# The receiver: POST /<path> counts the records of the body; GET /count/<path>
# answers the count so far.
RECV_PORT=$(free_port)
/usr/bin/python3 - "$RECV_PORT" >"$WORK/recv.log" 2>&1 <<'EOF' &
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
counts, lock = {}, threading.Lock()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def reply(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        n = body.count(b'"nodeid":')
        d = body.count(b'"sender":"drain@example.com"')
        with lock:
            counts[self.path] = counts.get(self.path, 0) + n
            counts["/drain" + self.path] = counts.get("/drain" + self.path, 0) + d
        self.reply(b"ok")
    def do_GET(self):
        with lock:
            n = counts.get(self.path[len("/count"):], 0)
        self.reply(str(n).encode())
s = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
s.daemon_threads = True
s.serve_forever()
EOF
RECV_PID=$!
PIDS+=("$RECV_PID")
wait_port "$RECV_PORT"
recv_count() { curl -s "http://127.0.0.1:$RECV_PORT/count/$1"; }
wait_recv() { # path target -> 0 when the receiver counted target records in time
	local deadline=$(($(date +%s) + DRAIN_TIMEOUT))
	while [ "$(recv_count "$1")" -lt "$2" ]; do
		if [ "$(date +%s)" -ge "$deadline" ]; then
			echo "the receiver has $(recv_count "$1") of $2 records on /$1 after ${DRAIN_TIMEOUT}s" >&2
			return 1
		fi
		sleep 0.02
	done
}

relay_batch() { # name -> the hook's batch size (0: no hook)
	case $1 in
	none | all_deferred_none) echo 0 ;;
	single | single_deferred | all_deferred_single) echo 1 ;;
	batched | batched_deferred | all_deferred_batched) echo "$BATCH" ;;
	*) echo "unknown relay '$1' (RELAYS)" >&2; exit 2 ;;
	esac
}

start_relay() { # name -> sets PORT_<name>, HTTP_<name>, PID_<name>
	local name=$1 batch port http dir=$WORK/$1 hook="" params="" listener=""
	batch=$(relay_batch "$name")
	port=$(free_port)
	http=$(free_port)
	mkdir -p "$dir"
	case $name in *_deferred | all_deferred_*) params="log_parameters = { deferred_spool = true }," ;; esac
	case $name in all_deferred_*) listener="deferred_spool = true," ;; esac
	if [ "$batch" -gt 1 ]; then
		hook="require('policy-extras.log_hooks'):new_json({ name = 'bench', $params
	url = 'http://127.0.0.1:$RECV_PORT/$name', batch_size = $batch, min_batch_size = $batch,
	max_batch_latency = '200ms' })"
	elif [ "$batch" = 1 ]; then
		hook="require('policy-extras.log_hooks'):new_json({ name = 'bench', $params
	url = 'http://127.0.0.1:$RECV_PORT/$name' })"
	fi
	cat >"$dir/policy.lua" <<EOF
-- generated by bench/log-hooks.sh ($name)
local kumo = require('kumo')
$hook
kumo.on('init', function()
	kumo.define_spool({ name = 'data', path = '$dir/spool/data' })
	kumo.define_spool({ name = 'meta', path = '$dir/spool/meta' })
	kumo.configure_local_logs({ log_dir = '$dir/logs' })
	kumo.start_esmtp_listener({ listen = '127.0.0.1:$port', hostname = 'localhost',
		relay_hosts = { '127.0.0.1' }, $listener })
	kumo.start_http_listener({ listen = '127.0.0.1:$http', trusted_hosts = { '127.0.0.1' } })
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
	return kumo.make_queue_config({ retry_interval = '5s', max_age = '1h',
		protocol = { smtp = { mx_list = { '127.0.0.1:$SINK_PORT' } } } })
end)
kumo.on('get_egress_path_config', function(routing_domain, egress_source, site_name)
	local hook = routing_domain == 'bench.log_hook'
	return kumo.make_egress_path({ connection_limit = hook and $HOOK_CONNECTIONS or $CONNECTIONS,
		enable_tls = 'Disabled', prohibited_hosts = {} })
end)
EOF
	KUMOD_LOG=kumod=warn,kumo_server_common=info LTTNG_UST_REGISTER_TIMEOUT=0 \
		"$KUMOD" --policy "$dir/policy.lua" >"$dir/kumod.log" 2>&1 &
	local pid=$!
	PIDS+=("$pid")
	for _ in $(seq 100); do grep -q "initialization complete" "$dir/kumod.log" && break; sleep 0.1; done
	grep -q "initialization complete" "$dir/kumod.log" || { cat "$dir/kumod.log" >&2; exit 1; }
	wait_port "$port"
	printf -v "PORT_$name" %s "$port"
	printf -v "HTTP_$name" %s "$http"
	printf -v "PID_$name" %s "$pid"
}

list=none
for name in $RELAYS; do [ "$name" = none ] || list="$list $name"; done
RELAYS=$list
declare -A RECS
for name in $RELAYS; do
	start_relay "$name"
	RECS[$name]=0
done
TOTAL=0
run() { # name count -> "mail_msgs/s records/s kumod_cpu_us_per_mail receiver_cpu_s"
	local name=$1 n=$2 port pid t0 t1 t2 c0 c1 r0 r1
	port=PORT_$name
	pid=PID_$name
	c0=$(cpu_ticks "${!pid}")
	r0=$(cpu_ticks "$RECV_PID")
	t0=$(now)
	timeout 300 "$SMTP_SOURCE" -s "$SESSIONS" -m "$n" -l "$SIZE" -d -f bench@example.com \
		-t rcpt@example.net 127.0.0.1:"${!port}" >/dev/null
	TOTAL=$((TOTAL + n))
	wait_sink "$TOTAL"
	t1=$(now)
	t2=$t1
	if [ "$(relay_batch "$name")" != 0 ]; then
		RECS[$name]=$((RECS[$name] + 2 * n))
		wait_recv "$name" "${RECS[$name]}"
		t2=$(now)
	fi
	c1=$(cpu_ticks "${!pid}")
	r1=$(cpu_ticks "$RECV_PID")
	awk -v n="$n" -v t0="$t0" -v t1="$t1" -v t2="$t2" -v c="$((c1 - c0))" -v r="$((r1 - r0))" \
		-v hz="$CLK_TCK" -v hooked="$([ "$(relay_batch "$name")" = 0 ] && echo 0 || echo 1)" \
		'BEGIN { printf "%.0f %s %.0f %.1f\n", n / (t1 - t0), hooked ? sprintf("%.0f", 2 * n / (t2 - t0)) : "-",
			c / hz / n * 1e6, r / hz }'
}

# warm-up (unmeasured): connections, spool files, the hook queues
for name in $RELAYS; do
	run "$name" $((SESSIONS * 20)) >/dev/null
done

echo "## Log hooks while relaying: $N mails of $SIZE bytes per round (2 records each), $SESSIONS sessions"
echo
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores, shared with other jobs)"
echo
echo "| round | relay | mail msg/s | hook records/s | kumod CPU µs/mail | receiver CPU s |"
echo "|---|---|---|---|---|---|"
for r in $(seq "$ROUNDS"); do
	for name in $RELAYS; do
		read -r m rec cpu rcpu < <(run "$name" "$N")
		label=$name
		case $name in *batched*) label="$name ($BATCH)" ;; esac
		echo "| $r | $label | $m | $rec | $cpu | $rcpu |"
	done
done
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"


# --- drain: the hook's ceiling ------------------------------------------------
held() { # http-port -> records waiting in the scheduled queue bench.log_hook
	curl -s "http://127.0.0.1:$1/api/admin/inspect-sched-q/v1?queue_name=bench.log_hook" |
		/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin).get("num_scheduled", 0))'
}
drain() { # name -> "records/s mail_msgs/s_meanwhile"
	local name=$1 http port id t0 t1 t2 deadline bg
	http=HTTP_$name
	port=PORT_$name
	id=$(curl -s -X POST -H 'Content-Type: application/json' \
		-d '{"domain": "bench.log_hook", "reason": "bench drain", "duration": "10m"}' \
		"http://127.0.0.1:${!http}/api/admin/suspend/v1" |
		/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
	timeout 300 "$SMTP_SOURCE" -s "$SESSIONS" -m "$DRAIN_N" -l "$SIZE" -d -f drain@example.com \
		-t rcpt@example.net 127.0.0.1:"${!port}" >/dev/null
	TOTAL=$((TOTAL + DRAIN_N))
	wait_sink "$TOTAL"
	deadline=$(($(date +%s) + DRAIN_TIMEOUT))
	while [ "$(held "${!http}")" -lt $((2 * DRAIN_N)) ]; do
		if [ "$(date +%s)" -ge "$deadline" ]; then
			echo "only $(held "${!http}") of $((2 * DRAIN_N)) records held after ${DRAIN_TIMEOUT}s" >&2
			return 1
		fi
		sleep 0.1
	done
	timeout 300 "$SMTP_SOURCE" -s "$SESSIONS" -m "$DRAIN_N" -l "$SIZE" -d -f bench@example.com \
		-t rcpt@example.net 127.0.0.1:"${!port}" >/dev/null &
	bg=$!
	t0=$(now)
	curl -s -X DELETE -H 'Content-Type: application/json' -d "{\"id\": \"$id\"}" \
		"http://127.0.0.1:${!http}/api/admin/suspend/v1" >/dev/null
	wait_recv "drain/$name" "$((2 * DRAIN_N))"
	t1=$(now)
	wait "$bg"
	TOTAL=$((TOTAL + DRAIN_N))
	wait_sink "$TOTAL"
	t2=$(now)
	RECS[$name]=$((RECS[$name] + 4 * DRAIN_N))
	wait_recv "$name" "${RECS[$name]}"
	awk -v n="$DRAIN_N" -v t0="$t0" -v t1="$t1" -v t2="$t2" \
		'BEGIN { printf "%.0f %.0f\n", 2 * n / (t1 - t0), n / (t2 - t0) }'
}

echo
echo "## Draining a backlog of $((2 * DRAIN_N)) hook records while relaying $DRAIN_N more mails"
echo
echo "| relay | drain records/s | mail msg/s meanwhile |"
echo "|---|---|---|"
for name in $DRAIN_RELAYS; do
	label=$name
	case $name in batched*) label="$name ($BATCH)" ;; esac
	read -r d m < <(drain "$name")
	echo "| $label | $d | $m |"
done
