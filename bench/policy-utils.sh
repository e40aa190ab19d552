#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Speed of the policy utility modules (issue 16 item 5):
#  - a kumo.memoize hit (goal: under 2 us), against a plain Lua call;
#  - kumo.toml_load of a 10,000-entry queues.toml and shaping.toml (goal: under 200 ms),
#    and the bare parser (build/kumo-toml --bench).
# Usage: bench/policy-utils.sh [BIN_DIR=build]. Prints one line per measurement.
set -euo pipefail
BIN=${1:-build}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

/usr/bin/python3 - "$dir" <<'PY'
import sys
d = sys.argv[1]
with open(f"{d}/queues.toml", "w") as f:
    f.write('tenant_header = "X-Tenant"\ncampaign_header = "X-Campaign"\n\n')
    for i in range(10000):
        f.write(f'[tenant."tenant-{i}"]\negress_pool = "pool-{i % 16}"\nmax_age = "{1 + i % 72} hours"\n\n')
with open(f"{d}/shaping.toml", "w") as f:
    f.write('["default"]\nconnection_limit = 10\nmax_message_rate = "100/s"\n\n')
    for i in range(10000):
        f.write(f'["domain-{i}.example.com"]\nconnection_limit = {1 + i % 50}\n'
                f'max_deliveries_per_connection = {100 + i % 7}\nenable_tls = "Opportunistic"\n'
                f'additional_message_rate_throttles = {{ "50/min" = "ok" }}\n\n')
PY

cat >"$dir/bench.lua" <<'EOF_LUA'
local N = 200000
local function per_call_us(f, arg)
  local t0 = os.clock()
  for _ = 1, N do f(arg) end
  return (os.clock() - t0) * 1e6 / N
end
local plain = function(d) return d end
local data = { pool = 'pool-1', list = { 1, 2, 3 } }
local memo_str = kumo.memoize(function(d) return d .. '!' end, { name = 'bench_str', ttl = '1h', capacity = 1024 })
local memo_tbl = kumo.memoize(function(d) return data end, { name = 'bench_tbl', ttl = '1h', capacity = 1024 })
local memo_args = kumo.memoize(function(a, b) return a end, { name = 'bench_args', ttl = '1h', capacity = 1024 })
memo_str('gmail.com'); memo_tbl('gmail.com'); memo_args('gmail.com', 'tenant-1')
print(string.format('plain Lua call:                %.3f us', per_call_us(plain, 'gmail.com')))
print(string.format('memoize hit (string result):   %.3f us', per_call_us(memo_str, 'gmail.com')))
print(string.format('memoize hit (table result):    %.3f us', per_call_us(memo_tbl, 'gmail.com')))
local t0 = os.clock()
for _ = 1, N do memo_args('gmail.com', 'tenant-1') end
print(string.format('memoize hit (two arguments):   %.3f us', (os.clock() - t0) * 1e6 / N))
for _, name in ipairs({ 'queues.toml', 'shaping.toml' }) do
  local best = math.huge
  for _ = 1, 5 do
    local t = os.clock()
    local v = kumo.toml_load(name)
    best = math.min(best, os.clock() - t)
    assert(v)
  end
  print(string.format('toml_load %-13s (10,000 entries): %.1f ms (best of 5)', name, best * 1e3))
end
EOF_LUA
(cd "$dir" && "$OLDPWD/$BIN/kumod" --validate --policy bench.lua | grep -v 'is valid')
"$BIN/kumo-toml" --bench 10 "$dir/queues.toml" "$dir/shaping.toml" | sed "s|$dir/||"
