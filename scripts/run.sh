#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# `make run`: the sink on 127.0.0.1:2026 and kumod with
# policy/simple_policy.lua on 127.0.0.1:2025, in one command. Ctrl-C (or
# SIGTERM) stops both. Usage: scripts/run.sh BIN_DIR
set -u
bin=${1:-build}
export LTTNG_UST_REGISTER_TIMEOUT=${LTTNG_UST_REGISTER_TIMEOUT:-0}
# liblttng-ust's constructor would realpath and open every loaded library
# (~60) for its base-address statedump: ~14 ms of each start (docs/tracing.md)
export LTTNG_UST_WITHOUT_BADDR_STATEDUMP=${LTTNG_UST_WITHOUT_BADDR_STATEDUMP-1}
mkdir -p var/run
# var/run/{sink,kumod}.pid pick one of the two for a tracer:
#   bpftrace -p $(cat var/run/kumod.pid) ...   (pidof kumod returns both)
# Both log to this terminal: KUMOD_LOG_ROLE prefixes each line with [sink] or
# [relay]; the sink's own lines (settings, one per message) are lua=info.
KUMOD_LOG=${SINK_LOG:-kumod=warn,lua=info} KUMOD_LOG_ROLE=sink "$bin/kumod" --policy sink/sink.lua --pid-file var/run/sink.pid &
sink=$!
KUMOD_LOG_ROLE=${KUMOD_LOG_ROLE:-relay} "$bin/kumod" --policy "${KUMO_POLICY:-policy/simple_policy.lua}" \
	--pid-file var/run/kumod.pid &
relay=$!
stop() {
	kill -TERM "$relay" "$sink" 2>/dev/null
	wait "$relay" 2>/dev/null
	wait "$sink" 2>/dev/null
	exit 0
}
trap stop INT TERM
echo "run: sink pid $sink on 127.0.0.1:2026, kumod pid $relay on 127.0.0.1:2025 (Ctrl-C stops both)"
echo "run: try: swaks --server 127.0.0.1:2025 --to someone@example.com"
echo "run: pid files var/run/sink.pid, var/run/kumod.pid (for bpftrace -p; see docs/tracing.md)"
# Whichever exits first ends the pair.
while kill -0 "$relay" 2>/dev/null && kill -0 "$sink" 2>/dev/null; do
	sleep 1
done
stop
