# SPDX-License-Identifier: Apache-2.0
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
