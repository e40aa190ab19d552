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
