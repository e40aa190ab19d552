#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Runs in the builder stage of docker/kumod/Dockerfile (assemble-rootfs.sh
# ROOT TOOL...): installs the built kumod, the given tools (stripped) and share/ into ROOT, then copies exactly the shared
# libraries ldd lists for them (and the dynamic loader), the CA bundle, the
# sink and the container's default policy, and a passwd/group with the
# non-root kumod user. The runtime stage is FROM scratch + this tree.
set -eu
root="$1"
shift # the tools to install (built in build/)
# what `make install` lays out, from the binaries already built (make install
# would rebuild them with its own flags and the unit tests)
share="$root/usr/local/share/kumod"
install -d "$root/usr/local/bin" "$share/policy-extras" "$share/bounce_classifier" "$share/catcher"
for t in "$@"; do
	install -m 755 "build/$t" "$root/usr/local/bin/"
done
install -m 755 build/kumod build/kumod-health "$root/usr/local/bin/"
install -m 644 share/policy-extras/* "$share/policy-extras/"
install -m 644 share/bounce_classifier/* "$share/bounce_classifier/"
install -m 644 share/catcher/* "$share/catcher/"
strip --strip-unneeded "$root"/usr/local/bin/*
install -d "$root/usr/local/share/kumod/sink" "$root/config"
install -m 644 sink/sink.lua "$root/usr/local/share/kumod/sink/"
install -m 644 docker/kumod/policy.lua "$root/config/policy.lua"
for bin in "$root"/usr/local/bin/*; do
	ldd "$bin" | awk '/=> \//{print $3} /^\t\//{print $1}'
done | sort -u | while read -r lib; do
	install -D -m 644 "$(readlink -f "$lib")" "$root$lib"
done
# the loader is executable; /lib64 is where the ELF interpreter path points
chmod 755 "$root"/lib64/ld-linux-x86-64.so.2
install -D -m 644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
# the word list of kumo.string.normalize_smtp_response (Debian wamerican)
install -d "$root/usr/share/dict"
zstd -q -19 -c "$(readlink -f /usr/share/dict/words)" >"$root/usr/share/dict/words.zst"
install -d -m 1777 "$root/tmp"
install -d -m 755 "$root/etc"
printf 'root:x:0:0:root:/root:/sbin/nologin\nkumod:x:999:999:kumod:/var/spool/kumod:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nkumod:x:999:\nnogroup:x:65534:\n' >"$root/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
install -d -m 755 -o 999 -g 999 "$root/var/spool/kumod" "$root/var/log/kumod"
