#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Enforces the layering of docs/architecture.md: a module includes project
# headers from its own folder, its layer's peers and lower layers only; Lua
# headers only under kumod/lua/; no I/O or event library (libuv, OpenSSL,
# c-ares, curl, ncurses, LTTng) in base or proto. The pure libraries proto
# builds on (jansson, zlib, libhttp-parser: bytes in, values out, no I/O and
# no process-wide state) are allowed there; their fuzz targets link them
# (fuzz/fuzz.mk, FUZZ_LIBS_<target>).
set -u
rank() {
	case "$1" in
	base) echo 0 ;;
	proto) echo 1 ;;
	io | dns | spool) echo 2 ;;
	smtp | queue | policy.h) echo 3 ;;
	dispatch | ctl) echo 4 ;;
	lua) echo 5 ;;
	main.c) echo 6 ;;
	*) echo 99 ;;
	esac
}
fail=0
seen=""
for f in $(git ls-files 'kumod/*.c' 'kumod/*.h' 2>/dev/null; ls kumod/*/*.[ch] kumod/*.[ch] 2>/dev/null) ; do
	case " $seen " in *" $f "*) continue ;; esac
	seen="${seen:-} $f"
	rel=${f#kumod/}
	case "$rel" in */*) own=${rel%%/*} ;; *) own=$rel ;; esac
	own_rank=$(rank "$own")
	grep -n '^[[:space:]]*#[[:space:]]*include' "$f" | while IFS= read -r line; do
		inc=$(printf '%s' "$line" | sed -n 's/.*#[[:space:]]*include[[:space:]]*[<"]\([^>"]*\)[>"].*/\1/p')
		n=${line%%:*}
		case "$inc" in
		lua.h | lauxlib.h | lualib.h | luaconf.h)
			[ "$own" = lua ] || { echo "$f:$n: Lua header <$inc> outside kumod/lua/"; echo x >>"${TMPDIR:-/tmp}/kumod-layers.$$"; } ;;
		uv.h | openssl/* | ares.h | curl/* | ncurses.h | ncursesw/* | lttng/*)
			if [ "$own_rank" -le 1 ]; then echo "$f:$n: <$inc> in layer $own (pure layers use libc only)"; echo x >>"${TMPDIR:-/tmp}/kumod-layers.$$"; fi ;;
		esac
		case "$inc" in
		*/*.h) dir=${inc%%/*} ;;
		policy.h) dir=policy.h ;;
		*) continue ;;
		esac
		[ -d "kumod/$dir" ] || [ "$dir" = policy.h ] || continue
		[ "$dir" = "$own" ] && continue
		inc_rank=$(rank "$dir")
		if [ "$inc_rank" -gt "$own_rank" ] || { [ "$inc_rank" -eq "$own_rank" ] && [ "$own_rank" -le 1 ]; }; then
			echo "$f:$n: layer $own (L$own_rank) may not include $inc (L$inc_rank)"
			echo x >>"${TMPDIR:-/tmp}/kumod-layers.$$"
		fi
	done
done
if [ -s "${TMPDIR:-/tmp}/kumod-layers.$$" ]; then
	rm -f "${TMPDIR:-/tmp}/kumod-layers.$$"
	echo "check-layers: FAILED"
	exit 1
fi
rm -f "${TMPDIR:-/tmp}/kumod-layers.$$"
echo "  LAYERS-OK"
