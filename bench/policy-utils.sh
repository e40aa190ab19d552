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
local N = 100000
local function per_call_us(f, arg)
  local t0 = os.clock()
  for _ = 1, N do f(arg) end
  return (os.clock() - t0) * 1e6 / N
end
local plain = function(d) return d end
local data = { pool = 'pool-1', list = { 1, 2, 3 } }
local memo_str = kumo.memoize(function(d) return d .. '!' end, { name = 'bench_str', ttl = '1h', capacity = 1024 })
local memo_tbl = kumo.memoize(function(d) return data end, { name = 'bench_tbl', ttl = '1h', capacity = 1024 })
local wide = {}
for i = 1, 100 do wide['key' .. i] = i end
local memo_wide = kumo.memoize(function(d) return wide end, { name = 'bench_wide', ttl = '1h', capacity = 1024 })
local memo_args = kumo.memoize(function(a, b) return a end, { name = 'bench_args', ttl = '1h', capacity = 1024 })
memo_str('gmail.com'); memo_tbl('gmail.com'); memo_wide('gmail.com'); memo_args('gmail.com', 'tenant-1')
-- one handler per measurement: each call has its own 2 s policy budget
local function bench(label, f, arg)
  kumo.on('pre_init', function()
    print(string.format('%-30s %.3f us', label .. ':', per_call_us(f, arg)))
  end)
end
bench('plain Lua call', plain, 'gmail.com')
bench('memoize hit (string result)', memo_str, 'gmail.com')
bench('memoize hit (2-key table)', memo_tbl, 'gmail.com')
bench('memoize hit (100-key table)', memo_wide, 'gmail.com')
bench('memoize hit (two arguments)', function(d) return memo_args(d, 'tenant-1') end, 'gmail.com')
for _, name in ipairs({ 'queues.toml', 'shaping.toml' }) do kumo.on('pre_init', function()
  local best = math.huge
  for _ = 1, 5 do
    local t = os.clock()
    local v = kumo.toml_load(name)
    best = math.min(best, os.clock() - t)
    assert(v)
  end
  print(string.format('toml_load %-13s (10,000 entries): %.1f ms (best of 5)', name, best * 1e3))
end) end
EOF_LUA
(cd "$dir" && "$OLDPWD/$BIN/kumod" --validate --policy bench.lua | grep -v 'is valid')
"$BIN/kumo-toml" --bench 10 "$dir/queues.toml" "$dir/shaping.toml" | sed "s|$dir/||"
