#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Detects the Debian 12 packages (and the npm StyLua binary) the build and the
# tests need, and installs exactly what is missing. As root it runs apt-get
# itself and prints what it does; otherwise it prints the one command to run.
# Usage: scripts/deps.sh [--check] [--mk FILE]
#   --check  only report; exit 1 when something is missing
#   --mk F   also write make variables (detected USE_* defaults) into F
set -u
check_only=0
mk=""
while [ $# -gt 0 ]; do
	case "$1" in
	--check) check_only=1 ;;
	--mk) shift; mk="$1" ;;
	*) echo "deps.sh: unknown option '$1'" >&2; exit 2 ;;
	esac
	shift
done

missing=""
need() { # package, test command...
	pkg="$1"; shift
	if ! "$@" >/dev/null 2>&1; then
		case " $missing " in *" $pkg "*) ;; *) missing="$missing $pkg" ;; esac
	fi
}
pc() { pkg-config --exists "$1"; }
hdr() { [ -e "/usr/include/$1" ] || [ -e "/usr/include/x86_64-linux-gnu/$1" ]; }
cmd() { command -v "$1"; }
pyimp() { /usr/bin/python3 -c "import $1"; }

need pkg-config cmd pkg-config
need make cmd make
need gcc cmd gcc
need binutils cmd readelf
need libuv1-dev pc libuv
need liblua5.4-dev pc lua5.4
need libssl-dev pc openssl
need openssl cmd openssl
need liblttng-ust-dev pc lttng-ust
need systemtap-sdt-dev hdr sys/sdt.h
need libjansson-dev pc jansson
need libc-ares-dev pc libcares
need libpcre2-dev pc libpcre2-8
need libzstd-dev pc libzstd
need zlib1g-dev pc zlib
need libncurses-dev pc ncursesw
need zstd cmd zstd
need curl cmd curl
need libhttp-parser-dev hdr http_parser.h
need libcurl4-openssl-dev pc libcurl
need tmux cmd tmux
need jq cmd jq
need python3-dnslib pyimp dnslib
need python3-prometheus-client pyimp prometheus_client
need clang cmd clang
need libclang-rt-14-dev hdr ../lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a
need clang-format cmd clang-format
need lttng-tools cmd lttng-sessiond
need babeltrace2 cmd babeltrace2
need swaks cmd swaks
need libnet-ssleay-perl perl -MNet::SSLeay -e1
need libio-socket-ssl-perl perl -MIO::Socket::SSL -e1
need python3 test -x /usr/bin/python3
need python3-pytest pyimp pytest
need postfix test -x /usr/sbin/smtp-sink
need time test -x /usr/bin/time
need bpftrace cmd bpftrace
need nodejs cmd node
need npm cmd npm

stylua_ok=0
[ -x node_modules/.bin/stylua ] && stylua_ok=1

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
