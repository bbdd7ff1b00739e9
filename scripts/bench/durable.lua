-- Durability benchmark: the cost per step of recording checkpoints in the
-- store against running without one, and `sluice runs` with 10,000 runs
-- stored. Prints figures only.
--   lua5.4 scripts/bench/durable.lua   (LUA_PATH/LUA_CPATH as in the README;
--   SLUICE_BIN names the CLI, default build/sluice; BENCH_PG a PostgreSQL
--   URL to measure too, e.g. tests/pg_env.sh lua5.4 scripts/bench/durable.lua)
local sl = require "sluice"
local now = sl.now

local N = tonumber(os.getenv("BENCH_STEPS")) or 1000
local REPS = tonumber(os.getenv("BENCH_REPS")) or 50
local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir -p " .. dir)

local steps = {}
for i = 1, N do steps[i] = sl.step{ name = "s" .. i, run = function(x) return x + 1 end } end
local p = sl.pipeline{ name = "trivial", table.unpack(steps) }

local function per_step(eng)
  for _ = 1, 3 do eng:run(p, 0) end
  collectgarbage()
  local t0 = now()
  for _ = 1, REPS do assert(eng:run(p, 0).output == N) end
  return (now() - t0) / (REPS * (N + 1)) * 1e6
end

local off = per_step(sl.engine())
local on = per_step(sl.engine{ store = dir .. "/bench.db" })
print(("pipeline of %d trivial steps, %d runs"):format(N, REPS))
print(("  durability off   %7.2f us/step"):format(off))
print(("  durability on    %7.2f us/step  (%.1fx; target under 10 us/step)"):format(on, on / off))
-- With BENCH_PG (a postgresql:// URL; tests/pg_env.sh sets SLUICE_TEST_PG),
-- the same on PostgreSQL, against SQLite measured just above.
local pg = os.getenv("BENCH_PG") or os.getenv("SLUICE_TEST_PG")
if pg then
  local on_pg = per_step(sl.engine{ store = pg })
  print(("  on PostgreSQL    %7.2f us/step  (%.1fx SQLite; target within 3x)"):format(on_pg, on_pg / on))
end

-- 10,000 runs stored, then the CLI lists them.
local eng = sl.engine{ store = dir .. "/runs.db" }
local one = sl.pipeline{ name = "one", sl.step{ name = "s", run = function() return 1 end } }
local t0 = now()
for _ = 1, 10000 do eng:run(one, 0) end
local fill = now() - t0
eng = nil
collectgarbage()
local bin = os.getenv("SLUICE_BIN") or "build/sluice"
local cmd = ("%s runs --store %s > /dev/null"):format(bin, dir .. "/runs.db")
os.execute(cmd)  -- warm the file cache
local best = math.huge
for _ = 1, 5 do
  t0 = now()
  assert(os.execute(cmd))
  best = math.min(best, now() - t0)
end
local json = math.huge
for _ = 1, 5 do
  t0 = now()
  assert(os.execute(("%s runs --json --store %s > /dev/null"):format(bin, dir .. "/runs.db")))
  json = math.min(json, now() - t0)
end
print(("10,000 runs stored (%.1f s to record them)"):format(fill))
print(("  sluice runs          %7.1f ms, whole process (target under 100 ms)"):format(best * 1e3))
print(("  sluice runs --json   %7.1f ms"):format(json * 1e3))
os.execute("rm -rf " .. dir)
