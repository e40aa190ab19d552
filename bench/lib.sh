# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# Helpers shared by the bench/ scripts (sourced from the repository root).

free_port() { # -> a loopback port that was free a moment ago
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # port -> 0 once something accepts on 127.0.0.1:port (10 s at most)
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "nothing listens on 127.0.0.1:$1" >&2
	return 1
}

# shellcheck disable=SC2034 # the callers' cpu_ticks divisor
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # pid -> utime+stime in ticks (fields 14 and 15, after the "(comm)")
	local stat
	stat=$(cat "/proc/$1/stat")
	stat=${stat##*) }
	# shellcheck disable=SC2086
	set -- $stat
	echo $((${12} + ${13}))
}

# An smtp-sink started with -c writing to "$WORK/sink.count" (the benches'
# final destination): how many messages it has counted, and waiting for a
# total within $DRAIN_TIMEOUT seconds.
sink_count() { # -> messages the sink received so far (its -c counter line)
	tail -c 200 "$WORK/sink.count" | tr '\r' '\n' | sed -n 's/.*mesg=\([0-9][0-9]*\).*/\1/p' | tail -1 | grep . || echo 0
}
wait_sink() { # target-count -> 0 when reached within DRAIN_TIMEOUT
	local deadline=$(($(date +%s) + DRAIN_TIMEOUT))
	while [ "$(sink_count)" -lt "$1" ]; do
		if [ "$(date +%s)" -ge "$deadline" ]; then
			echo "the sink has $(sink_count) of $1 messages after ${DRAIN_TIMEOUT}s" >&2
			return 1
		fi
		sleep 0.02
	done
}

# --- servers under test and the client ----------------------------------------
# Processes a bench starts go into BENCH_PIDS; its EXIT trap calls
# stop_pids $BENCH_PIDS.
BENCH_PIDS=

stop_pids() { # pids... -> TERM each, wait up to 5 s for each, then KILL
	local pid
	for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
	for pid in "$@"; do
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$pid" 2>/dev/null || true
	done
}

# smtp-source keeps one core busy by itself. Unpinned, the scheduler
# sometimes puts it on the server's core and run times swing by up to 2x;
# pinned (PIN=1, the default, with 2+ CPUs), the client owns CPU 0 and the
# servers under test CPU 1.
# shellcheck disable=SC2034 # the caller's arrays
pin_cpus() { # -> sets the arrays SERVER_PIN and CLIENT_PIN (empty when unpinned)
	SERVER_PIN=() CLIENT_PIN=()
	if [ "${PIN:-1}" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
		SERVER_PIN=(taskset -c 1)
		CLIENT_PIN=(taskset -c 0)
	fi
}

start_kumod_sink() { # name log [VAR=value...] -> $KUMOD --policy sink/sink.lua on a free
	# port with the given environment, pinned by SERVER_PIN; sets PID_<name> and
	# PORT_<name>, returns once it accepts (30 s at most)
	local name=$1 log=$2 port
	shift 2
	port=$(free_port)
	env KUMO_SINK_PORT="$port" KUMOD_LOG=kumod=warn,kumo_server_common=info \
		LTTNG_UST_REGISTER_TIMEOUT=0 "$@" "${SERVER_PIN[@]}" "$KUMOD" --policy sink/sink.lua \
		>"$log" 2>&1 &
	BENCH_PIDS="$BENCH_PIDS $!"
	printf -v "PID_$name" %s $!
	printf -v "PORT_$name" %s "$port"
	for _ in $(seq 600); do grep -q "initialization complete" "$log" && break; sleep 0.05; done
	grep -q "initialization complete" "$log" || { cat "$log" >&2; exit 1; }
	wait_port "$port"
}

start_smtp_sink() { # log -> Postfix's $SMTP_SINK (as nobody when root) on a free port,
	# pinned by SERVER_PIN; sets PID_smtp_sink and PORT_smtp_sink
	local port user=()
	port=$(free_port)
	[ "$(id -u)" = 0 ] && user=(-u nobody)
	"${SERVER_PIN[@]}" "$SMTP_SINK" "${user[@]}" 127.0.0.1:"$port" 1024 >"$1" 2>&1 &
	BENCH_PIDS="$BENCH_PIDS $!"
	# shellcheck disable=SC2034 # the caller reads them through ${!pid_var} / ${!port_var}
	PID_smtp_sink=$! PORT_smtp_sink=$port
	wait_port "$port"
}

median() { # numbers... -> median (mean of the middle two for an even count)
	printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END{if (NR % 2) print v[(NR+1)/2]; else printf "%.2f\n", (v[NR/2]+v[NR/2+1])/2}'
}
