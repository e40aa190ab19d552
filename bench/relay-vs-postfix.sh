#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# kumod as a relay against Postfix as a relay, in one run, on loopback:
#
#   smtp-source -s 20 ──▶ relay under test ──▶ Postfix smtp-sink (final destination)
#
# (a) build/kumod with a policy like policy/simple_policy.lua: spools in a
#     temp dir with flush=true (250 only after fsync), local logs, every
#     message routed by mx_list to the smtp-sink port, prohibited_hosts={},
#     enable_tls='Disabled', connection_limit=$CONNECTIONS.
# (b) Postfix's own master, started by this script from a private config
#     directory under the temp dir (`postfix -c DIR start`): its own
#     queue_directory, data_directory and maillog_file in the temp dir,
#     smtpd on a free loopback port, relayhost=[127.0.0.1]:<sink port>,
#     mynetworks=127.0.0.0/8, no local delivery, no chroot,
#     default_destination_concurrency_limit=$CONNECTIONS. Stopped with
#     `postfix -c DIR stop`. /etc/postfix and any system Postfix are never
#     touched (meta_directory points to a copy in the temp dir).
#
#   bench/relay-vs-postfix.sh [N_1K] [N_100K] [LAT_1K] [LAT_100K]
#
# For 1 KiB and 100 KiB bodies and each relay:
#   throughput  smtp-source -s $SESSIONS -m N -l SIZE -d (sessions reused);
#               messages/s = N / (time until smtp-sink has counted all N
#               more messages, from its -c counter); also the acceptance
#               rate (N / smtp-source's own wall time).
#   CPU         relay CPU seconds over the throughput phase (start until the
#               sink has all N): kumod utime+stime from /proc/<pid>/stat (all
#               threads); Postfix: master's utime+stime+cutime+cstime (exited
#               children are reaped by master) plus utime+stime of every live
#               child of master (smtpd, cleanup, qmgr, smtp, trivial-rewrite,
#               postlogd, ...), before and after.
#   latency     build/traffic-gen --concurrency $SESSIONS --message-count LAT
#               --body-size SIZE --json against the relay: p50/p99 of the
#               per-transaction latency (MAIL FROM sent to the 250 after the
#               end of data, so it includes the spool fsync); then waits
#               until the sink has those LAT messages too.
# Before measuring, each relay gets an unmeasured warm-up of 5 messages per
# session; at the end the sink's total is compared with what was sent.
# Postfix keeps its defaults otherwise (in_flow_delay=1s, slow start with
# initial_destination_concurrency=5, one fsync per queue file).
# Prints Markdown tables and the kumod/Postfix ratios. Bounded: each
# smtp-source/traffic-gen run under `timeout $RUN_TIMEOUT` (default 60 s) and
# each wait for the sink at most $DRAIN_TIMEOUT (default 60 s).
# Environment: KUMOD (build/kumod), TG (build/traffic-gen), SESSIONS (20),
# CONNECTIONS (20), RUN_TIMEOUT (60), DRAIN_TIMEOUT (60), TMPDIR (/tmp: where
# both relays keep their spool/queue; /dev/shm takes the disk out),
# SPOOL_SYNC_MODE (fsync: kumod's define_spool sync_mode, fsync or syncfs;
# syncfs waits for every dirty file of the TMPDIR file system, Postfix's too).
set -euo pipefail

cd "$(dirname "$0")/.."
N_1K=${1:-5000}
N_100K=${2:-1000}
LAT_1K=${3:-1000}
LAT_100K=${4:-500}
KUMOD=${KUMOD:-build/kumod}
TG=${TG:-build/traffic-gen}
SESSIONS=${SESSIONS:-20}
CONNECTIONS=${CONNECTIONS:-20}
RUN_TIMEOUT=${RUN_TIMEOUT:-60}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-60}
SPOOL_SYNC_MODE=${SPOOL_SYNC_MODE:-fsync}
SMTP_SOURCE=${SMTP_SOURCE:-/usr/sbin/smtp-source}
SMTP_SINK=${SMTP_SINK:-/usr/sbin/smtp-sink}
POSTFIX=/usr/sbin/postfix
POSTCONF=/usr/sbin/postconf

for bin in "$KUMOD" "$TG" "$SMTP_SOURCE" "$SMTP_SINK" "$POSTFIX" "$POSTCONF" /usr/bin/python3 /usr/bin/script; do
	[ -x "$bin" ] || { echo "missing $bin (make; make build/traffic-gen; apt-get install postfix)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "Postfix's master must be started as root" >&2; exit 2; }
if ! getent passwd postfix >/dev/null || ! getent group postdrop >/dev/null; then
	echo "the postfix user and postdrop group are missing (Debian package postfix)" >&2
	exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/relay-bench.XXXXXX") # spools, queue, logs: on disk by default
chmod 755 "$WORK" # Postfix daemons run as user postfix inside it
PFDIR=$WORK/postfix
SINK_PID=
KUMO_PID=
PF_STARTED=
PF_MASTER=
# Postfix's commands log only to syslog/maillog unless stderr is a terminal:
# run them under script(1) so their errors show up here.
pf() { script -qec "$*" /dev/null </dev/null; }
cleanup() {
	set +e
	if [ -n "$PF_STARTED" ]; then
		[ -n "$PF_MASTER" ] || PF_MASTER=$(tr -d ' \n' <"$PFDIR/queue/pid/master.pid" 2>/dev/null)
		pf "$POSTFIX -c $PFDIR/etc stop" >/dev/null 2>&1
		for _ in $(seq 100); do kill -0 "$PF_MASTER" 2>/dev/null || break; sleep 0.1; done
		if [ -n "$PF_MASTER" ] && kill -0 "$PF_MASTER" 2>/dev/null; then
			pf "$POSTFIX -c $PFDIR/etc abort" >/dev/null 2>&1
			sleep 1
			kill -9 "$PF_MASTER" 2>/dev/null
		fi
	fi
	for pid in $KUMO_PID $SINK_PID; do kill "$pid" 2>/dev/null; done
	for pid in $KUMO_PID $SINK_PID; do
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$pid" 2>/dev/null
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# private copies: a rebuild of build/ during the run must not change or break it
mkdir "$WORK/bin"
cp "$KUMOD" "$WORK/bin/kumod"
cp "$TG" "$WORK/bin/traffic-gen"
KUMOD=$WORK/bin/kumod
TG=$WORK/bin/traffic-gen

# free_port, wait_port, cpu_ticks, CLK_TCK, sink_count, wait_sink
# shellcheck source=bench/lib.sh
. bench/lib.sh
now() { date +%s.%N; }

stat_fields() { # pid -> fields 14.. of /proc/<pid>/stat (utime stime cutime cstime ...)
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	echo "${stat##*) }" | cut -d' ' -f12-15
}
kumod_ticks() { cpu_ticks "$KUMO_PID"; }
postfix_ticks() { # master (with reaped children) + its live children
	local total u s cu cs pid
	read -r u s cu cs < <(stat_fields "$PF_MASTER")
	total=$((u + s + cu + cs))
	for pid in $(ps -o pid= --ppid "$PF_MASTER"); do
		if read -r u s cu cs < <(stat_fields "$pid"); then
			total=$((total + u + s + cu + cs))
		fi
	done
	echo "$total"
}

# --- the final destination: one Postfix smtp-sink for both relays -------------
SINK_PORT=$(free_port)
"$SMTP_SINK" -u nobody -c 127.0.0.1:"$SINK_PORT" 1024 >"$WORK/sink.count" 2>"$WORK/sink.err" &
SINK_PID=$!
wait_port "$SINK_PORT"

# --- (a) kumod --------------------------------------------------------------------
KUMO_PORT=$(free_port)
mkdir -p "$WORK/kumo"
cat >"$WORK/kumo/policy.lua" <<EOF
-- generated by bench/relay-vs-postfix.sh: policy/simple_policy.lua with
-- the temp dir, the bench ports, TLS off and connection_limit=$CONNECTIONS.
local kumo = require("kumo")
local var = "$WORK/kumo"
kumo.on("init", function()
	kumo.define_spool({ name = "data", path = var .. "/spool/data", flush = true, sync_mode = "$SPOOL_SYNC_MODE" })
	kumo.define_spool({ name = "meta", path = var .. "/spool/meta", flush = true, sync_mode = "$SPOOL_SYNC_MODE" })
	kumo.configure_local_logs({
		log_dir = var .. "/logs",
		max_segment_duration = "10s",
		headers = { "Subject", "Message-Id" },
	})
	kumo.start_esmtp_listener({
		listen = "127.0.0.1:$KUMO_PORT",
		hostname = "localhost",
		relay_hosts = { "127.0.0.1", "::1" },
	})
end)
kumo.on("smtp_server_message_received", function(msg)
	local tenant = msg:get_first_named_header_value("X-Tenant")
	if tenant then
		msg:set_meta("tenant", tenant)
		msg:remove_all_named_headers("X-Tenant")
	end
end)
kumo.on("get_queue_config", function(domain, tenant, campaign, routing_domain)
	return kumo.make_queue_config({
		retry_interval = "5s",
		max_retry_interval = "10s",
		max_age = "1h",
		protocol = { smtp = { mx_list = { "127.0.0.1:$SINK_PORT" } } },
	})
end)
kumo.on("get_egress_path_config", function(routing_domain, egress_source, site_name)
	return kumo.make_egress_path({
		connection_limit = $CONNECTIONS,
		enable_tls = "Disabled",
		prohibited_hosts = {},
	})
end)
EOF
KUMOD_LOG=kumod=warn,kumo_server_common=info LTTNG_UST_REGISTER_TIMEOUT=0 \
	"$KUMOD" --policy "$WORK/kumo/policy.lua" >"$WORK/kumod.log" 2>&1 &
KUMO_PID=$!
for _ in $(seq 100); do grep -q "initialization complete" "$WORK/kumod.log" && break; sleep 0.1; done
grep -q "initialization complete" "$WORK/kumod.log" || { cat "$WORK/kumod.log" >&2; exit 1; }
wait_port "$KUMO_PORT"

# --- (b) Postfix in a private config directory ----------------------------------------
PF_PORT=$(free_port)
mkdir -p "$PFDIR/etc" "$PFDIR/queue" "$PFDIR/data"
chown postfix "$PFDIR/data"
# meta_directory files (postfix-files, dynamicmaps.cf) copied, so that
# `postfix check`/post-install only ever read or create files under $PFDIR.
cp -r /etc/postfix/postfix-files /etc/postfix/dynamicmaps.cf "$PFDIR/etc/"
[ -d /etc/postfix/postfix-files.d ] && cp -r /etc/postfix/postfix-files.d "$PFDIR/etc/"
[ -d /etc/postfix/dynamicmaps.cf.d ] && cp -r /etc/postfix/dynamicmaps.cf.d "$PFDIR/etc/"
touch "$PFDIR/etc/main.cf"
# Debian's master.cf minus local delivery, pipes and chroot, smtpd on our port.
sed "s/@SMTPD_PORT@/$PF_PORT/" bench/postfix-master.cf >"$PFDIR/etc/master.cf"
"$POSTCONF" -c "$PFDIR/etc" -e \
	"compatibility_level=3.6" \
	"config_directory=$PFDIR/etc" \
	"meta_directory=$PFDIR/etc" \
	"queue_directory=$PFDIR/queue" \
	"data_directory=$PFDIR/data" \
	"maillog_file=$PFDIR/maillog" \
	"maillog_file_prefixes=$PFDIR" \
	"syslog_name=postfix-relay-bench" \
	"myhostname=relay.bench.test" \
	"mydomain=bench.test" \
	"myorigin=bench.test" \
	"inet_interfaces=127.0.0.1" \
	"inet_protocols=ipv4" \
	"mynetworks=127.0.0.0/8" \
	"mydestination=" \
	"relay_domains=" \
	"local_recipient_maps=" \
	"local_transport=error:local delivery is disabled" \
	"alias_maps=" \
	"alias_database=" \
	"biff=no" \
	"relayhost=[127.0.0.1]:$SINK_PORT" \
	"default_destination_concurrency_limit=$CONNECTIONS" \
	"smtp_tls_security_level=none" \
	"smtpd_tls_security_level=none" \
	"smtpd_peername_lookup=no"
PF_STARTED=1 # from here on, cleanup runs `postfix -c DIR stop`
pf "$POSTFIX -c $PFDIR/etc start" >"$WORK/postfix-start.out" 2>&1 || {
	echo "postfix -c $PFDIR/etc start failed:" >&2
	cat "$WORK/postfix-start.out" "$PFDIR/maillog" >&2 2>/dev/null
	exit 1
}
for _ in $(seq 100); do [ -s "$PFDIR/queue/pid/master.pid" ] && break; sleep 0.1; done
PF_MASTER=$(tr -d ' \n' <"$PFDIR/queue/pid/master.pid")
kill -0 "$PF_MASTER" || { echo "Postfix master is not running" >&2; exit 1; }
wait_port "$PF_PORT"

# --- runs -------------------------------------------------------------------------
declare -A RATE ACCEPT CPU ELAPSED P50 P99
run() { # relay port size count lat-count
	local relay=$1 port=$2 size=$3 count=$4 lat=$5 base t0 t1 t2 c0 c1 k=$1/$3 json
	base=$(sink_count)
	c0=$("${relay}_ticks")
	t0=$(now)
	if ! timeout "$RUN_TIMEOUT" "$SMTP_SOURCE" -s "$SESSIONS" -m "$count" -l "$size" -d \
		-f sender@bench.test -t rcpt@bench.test -M bench.test 127.0.0.1:"$port" \
		>"$WORK/source.out" 2>&1; then
		echo "smtp-source against $relay ($size bytes) failed:" >&2
		tail -5 "$WORK/source.out" >&2
		exit 1
	fi
	t1=$(now)
	wait_sink $((base + count)) || exit 1
	t2=$(now)
	c1=$("${relay}_ticks")
	ELAPSED[$k]=$(awk -v a="$t0" -v b="$t2" 'BEGIN{printf "%.2f", b-a}')
	RATE[$k]=$(awk -v n="$count" -v a="$t0" -v b="$t2" 'BEGIN{printf "%.0f", n/(b-a)}')
	ACCEPT[$k]=$(awk -v n="$count" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", n/(b-a)}')
	CPU[$k]=$(awk -v a="$c0" -v b="$c1" -v t="$CLK_TCK" 'BEGIN{printf "%.2f", (b-a)/t}')

	# latency: same client (traffic-gen) for both relays
	base=$(sink_count)
	if ! json=$(timeout "$RUN_TIMEOUT" "$TG" --target 127.0.0.1:"$port" --concurrency "$SESSIONS" \
		--message-count "$lat" --body-size "$size" --domain bench.test --domain-suffix '' \
		--timeout 30 --json 2>"$WORK/tg.err"); then
		echo "traffic-gen against $relay ($size bytes) failed:" >&2
		echo "$json" >&2
		tail -5 "$WORK/tg.err" >&2
		exit 1
	fi
	read -r "P50[$k]" "P99[$k]" < <(/usr/bin/python3 -c '
import json, sys
l = json.loads(sys.argv[1])["latency_ns"]
print("%.1f %.1f" % (l["p50"] / 1e6, l["p99"] / 1e6))' "$json")
	wait_sink $((base + lat)) || exit 1
}

# warm-up, not measured: both relays start their processes/connections
warm() { # port
	local base
	base=$(sink_count)
	timeout "$RUN_TIMEOUT" "$SMTP_SOURCE" -s "$SESSIONS" -m $((SESSIONS * 5)) -l 1024 -d \
		-f sender@bench.test -t rcpt@bench.test -M bench.test 127.0.0.1:"$1" >"$WORK/source.out" 2>&1 ||
		{ echo "warm-up against port $1 failed:" >&2; tail -5 "$WORK/source.out" >&2; exit 1; }
	wait_sink $((base + SESSIONS * 5)) || exit 1
}
warm "$KUMO_PORT"
warm "$PF_PORT"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

SIZES=("1024 $N_1K $LAT_1K" "102400 $N_100K $LAT_100K")
# alternate the order so neither relay always runs first
# shellcheck disable=SC2086
set -- ${SIZES[0]}
run kumod "$KUMO_PORT" "$1" "$2" "$3"
run postfix "$PF_PORT" "$1" "$2" "$3"
# shellcheck disable=SC2086
set -- ${SIZES[1]}
run postfix "$PF_PORT" "$1" "$2" "$3"
run kumod "$KUMO_PORT" "$1" "$2" "$3"

EXPECTED=$((2 * SESSIONS * 5 + 2 * (N_1K + LAT_1K + N_100K + LAT_100K)))
sleep 1 # a late duplicate would show up here
RECEIVED=$(sink_count)
kill -0 "$KUMO_PID" 2>/dev/null || { echo "kumod died during the run:" >&2; tail -20 "$WORK/kumod.log" >&2; exit 1; }
kill -0 "$PF_MASTER" 2>/dev/null || { echo "Postfix died during the run:" >&2; tail -20 "$PFDIR/maillog" >&2; exit 1; }

# --- report ---------------------------------------------------------------------------
echo "$(nproc) cores, load average $LOAD0 before / $(cut -d' ' -f1-3 /proc/loadavg) after; $SESSIONS smtp-source sessions, connection limit $CONNECTIONS, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "the sink received $RECEIVED messages in all, expected $EXPECTED (warm-up included)"
echo
label() { [ "$1" = 1024 ] && echo "1 KiB" || echo "100 KiB"; }
echo "| body | messages | relay | elapsed s (until sink has all) | messages/s end-to-end | acceptance messages/s | relay CPU s | CPU ms / message | latency messages | p50 ms | p99 ms |"
echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for sz in "${SIZES[@]}"; do
	# shellcheck disable=SC2086
	set -- $sz
	for relay in kumod postfix; do
		k=$relay/$1
		name="kumod (flush=true)"
		[ "$relay" = postfix ] && name="Postfix $("$POSTCONF" -dh mail_version)"
		per=$(awk -v c="${CPU[$k]}" -v n="$2" 'BEGIN{printf "%.3f", c*1000/n}')
		echo "| $(label "$1") | $2 | $name | ${ELAPSED[$k]} | ${RATE[$k]} | ${ACCEPT[$k]} | ${CPU[$k]} | $per | $3 | ${P50[$k]} | ${P99[$k]} |"
	done
done
echo
echo "| body | throughput ratio (kumod / Postfix) | CPU ratio (kumod / Postfix) | p50 ratio | p99 ratio |"
echo "|---|---:|---:|---:|---:|"
for sz in "${SIZES[@]}"; do
	# shellcheck disable=SC2086
	set -- $sz
	a=kumod/$1 b=postfix/$1
	r=$(awk -v x="${RATE[$a]}" -v y="${RATE[$b]}" 'BEGIN{printf "%.2f", x/y}')
	c=$(awk -v x="${CPU[$a]}" -v y="${CPU[$b]}" 'BEGIN{if (y > 0) printf "%.2f", x/y; else print "n/a"}')
	l50=$(awk -v x="${P50[$a]}" -v y="${P50[$b]}" 'BEGIN{if (y > 0) printf "%.2f", x/y; else print "n/a"}')
	l99=$(awk -v x="${P99[$a]}" -v y="${P99[$b]}" 'BEGIN{if (y > 0) printf "%.2f", x/y; else print "n/a"}')
	echo "| $(label "$1") | ${r}x | ${c}x | ${l50}x | ${l99}x |"
done
