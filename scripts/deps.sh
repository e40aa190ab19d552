#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Detects the Debian 12 packages (and the npm StyLua binary) a make goal needs,
# and installs exactly what is missing. As root it runs apt-get itself and
# prints what it does; otherwise it prints the one command to run.
# Usage: scripts/deps.sh [--for GROUP]... [--check] [--mk FILE]
#   --for G  run: build and run kumod and the tools, and the README's commands
#                 (`make`, `make run`; the default include of every goal)
#            test: the integration tests' peers and tracers (`make test`)
#            fmt: clang-format and StyLua (`make fmt`, `make fmt-check`)
#            fuzz: clang and libFuzzer (`make fuzz`, `fuzz-run`, `fuzz-smoke`)
#            image: podman, runc and mmdebstrap (`make image`, `make image-test`;
#                   not part of all)
#            all: every group but image (`make deps`); without --for: run
#   --check  only report; exit 1 when something is missing
#   --mk F   also write make variables (detected USE_* defaults) into F
set -u
check_only=0
mk=""
groups=""
while [ $# -gt 0 ]; do
	case "$1" in
	--check) check_only=1 ;;
	--mk) shift; mk="$1" ;;
	--for)
		shift
		case "$1" in
		run | test | fmt | fuzz | image) groups="$groups $1" ;;
		all) groups="$groups run test fmt fuzz" ;;
		*) echo "deps.sh: unknown group '$1' (run, test, fmt, fuzz, image, all)" >&2; exit 2 ;;
		esac ;;
	*) echo "deps.sh: unknown option '$1'" >&2; exit 2 ;;
	esac
	shift
done
[ -n "$groups" ] || groups=" run"
wants() { case " $groups " in *" $1 "*) return 0 ;; esac; return 1; }

missing=""
need() { # group, package, test command...
	wants "$1" || return 0
	pkg="$2"; shift 2
	if ! "$@" >/dev/null 2>&1; then
		case " $missing " in *" $pkg "*) ;; *) missing="$missing $pkg" ;; esac
	fi
}
pc() { pkg-config --exists "$1"; }
hdr() { [ -e "/usr/include/$1" ] || [ -e "/usr/include/x86_64-linux-gnu/$1" ]; }
cmd() { command -v "$1"; }
pyimp() { /usr/bin/python3 -c "import $1"; }

# run: the build (the trace generator runs under /usr/bin/python3) and the
# README's quick start (swaks to send, zstdcat and jq to read the logs)
need run pkg-config cmd pkg-config
need run make cmd make
need run gcc cmd gcc
need run binutils cmd readelf
need run python3 test -x /usr/bin/python3
need run libuv1-dev pc libuv
need run liblua5.4-dev pc lua5.4
need run libssl-dev pc openssl
need run openssl cmd openssl
need run liblttng-ust-dev pc lttng-ust
need run systemtap-sdt-dev hdr sys/sdt.h
need run libjansson-dev pc jansson
need run libc-ares-dev pc libcares
need run libpcre2-dev pc libpcre2-8
need run libzstd-dev pc libzstd
need run libpsl-dev pc libpsl
need run zlib1g-dev pc zlib
need run libncurses-dev pc ncursesw
need run zstd cmd zstd
need run curl cmd curl
need run libhttp-parser-dev hdr http_parser.h
need run libcurl4-openssl-dev pc libcurl
need run librocksdb-dev pc rocksdb
need run jq cmd jq
need run swaks cmd swaks
# kumo.string.normalize_smtp_response: its dictionary words (/usr/share/dict/words)
need run wamerican test -e /usr/share/dict/words
need run libhiredis-dev pc hiredis
# kumo.serde.yaml_* (kumod/lua/lua_yaml.c)
need run libyaml-dev pc yaml-0.1
# IANA time zones of scheduling windows (msg:set_scheduling's tz; unit tests compare them)
need run tzdata test -e /usr/share/zoneinfo/America/New_York
# test: peers, tracers and Python modules of tests/integration
need test tmux cmd tmux
need test python3-dnslib pyimp dnslib
need test python3-prometheus-client pyimp prometheus_client
need test lttng-tools cmd lttng-sessiond
need test babeltrace2 cmd babeltrace2
need test libnet-ssleay-perl perl -MNet::SSLeay -e1
need test libio-socket-ssl-perl perl -MIO::Socket::SSL -e1
need test python3-pytest pyimp pytest
need test python3-pytest-xdist pyimp xdist
need test python3-dkim pyimp dkim
need test python3-nacl pyimp nacl
need test opendkim test -x /usr/sbin/opendkim
need test postfix test -x /usr/sbin/smtp-sink
need test time test -x /usr/bin/time
need test chromium cmd chromium
need test chromium-driver cmd chromedriver
need test python3-selenium pyimp selenium
need test bpftrace cmd bpftrace
need test rocksdb-tools cmd ldb
need test redis-server cmd redis-server
# fmt: C and Lua formatters
need fmt clang-format cmd clang-format
need fmt nodejs cmd node
need fmt npm cmd npm
# fuzz: libFuzzer targets (the corpus replay in `make test` builds with gcc)
need fuzz clang cmd clang
need fuzz libclang-rt-14-dev hdr ../lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a
# image: the container image (docker/kumod/build-docker-image.sh); docker
# works too when present, but Debian 12's podman is what is installed here
need image podman cmd podman
need image runc cmd runc
need image mmdebstrap cmd mmdebstrap

stylua_ok=1
wants fmt && [ ! -x node_modules/.bin/stylua ] && stylua_ok=0

if [ -n "$missing" ]; then
	line="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends$missing"
	if [ "$check_only" = 1 ]; then
		echo "deps: missing:$missing"
		exit 1
	fi
	if [ "$(id -u)" = 0 ]; then
		echo "deps: installing:$missing"
		case " $missing " in *" postfix "*)
			# smtp-sink/smtp-source only: no configuration, master never started
			echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections ;;
		esac
		apt-get update -qq || { echo "deps: apt-get update failed" >&2; exit 1; }
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing \
			|| { echo "deps: apt-get install failed" >&2; exit 1; }
	else
		echo "deps: missing packages; run as root:" >&2
		echo "  $line" >&2
		exit 1
	fi
fi

if [ "$stylua_ok" = 0 ]; then
	if [ "$check_only" = 1 ]; then
		echo "deps: missing: stylua (npm @johnnymorganz/stylua-bin)"
		exit 1
	fi
	echo "deps: installing stylua into node_modules/ (npm @johnnymorganz/stylua-bin)"
	npm install --no-package-lock --no-audit --no-fund --silent >/dev/null \
		|| { echo "deps: npm install @johnnymorganz/stylua-bin failed" >&2; exit 1; }
fi

if [ -n "$mk" ]; then
	mkdir -p "$(dirname "$mk")"
	{
		echo "# written by scripts/deps.sh"
		if pkg-config --exists lttng-ust; then echo "DETECTED_LTTNG := 1"; else echo "DETECTED_LTTNG := 0"; fi
		if hdr sys/sdt.h; then echo "DETECTED_USDT := 1"; else echo "DETECTED_USDT := 0"; fi
	} >"$mk"
fi
exit 0
