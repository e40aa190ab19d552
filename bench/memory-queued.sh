#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# RSS per queued 1 KiB message (docs/spool.md, "Resident bodies"): runs
# tests/integration/test_memory_queued.py with COUNT messages per entry path
# (SMTP, then HTTP inject, then a restart recovering both), for the LocalDisk
# and RocksDB kinds, and prints kumod's VmRSS growth per message at each
# step. With COUNT >= 20000 each figure is also held to the test's BUDGET
# (3 KiB); `make test` runs the same test at 2,000 for its behaviour only.
#
# Usage: bench/memory-queued.sh [COUNT]   (default 20000)
# Environment: KUMOD_BIN (build/kumod), TOOLS_BIN (build), PYTHON (/usr/bin/python3).
set -eu
cd "$(dirname "$0")/.."
COUNT=${1:-20000}
export KUMOD_MEMTEST_N=$COUNT
export KUMOD_BIN=${KUMOD_BIN:-$PWD/build/kumod}
export TOOLS_BIN=${TOOLS_BIN:-$PWD/build}
echo "# $COUNT messages per entry path; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
"${PYTHON:-/usr/bin/python3}" -m pytest -q -s -p no:cacheprovider \
	tests/integration/test_memory_queued.py -k bodies_leave_memory 2>&1 |
	grep -E '^(\.)?(SMTP|after recovery)|passed|failed|Error'
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
