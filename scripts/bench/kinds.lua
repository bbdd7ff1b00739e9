-- Control-flow kinds benchmark: the cost of a parallel branch and of a map
-- item, the memory a bounded map holds, and many concurrent sleepers.
-- Prints figures; asserts nothing about time (only that runs completed).
--   lua5.4 scripts/bench/kinds.lua   (LUA_PATH/LUA_CPATH as in the README)
local sl = require "sluice"

local wall = sl.now
local BRANCHES = tonumber(os.getenv("BENCH_BRANCHES")) or 10000
local ITEMS = tonumber(os.getenv("BENCH_ITEMS")) or 100000
local SLEEPERS = tonumber(os.getenv("BENCH_SLEEPERS")) or 10000
local REPS = tonumber(os.getenv("BENCH_REPS")) or 5

local function check(r)
  assert(r.status == "completed", r.error and tostring(r.error))
  return r
end

-- Best of REPS runs, in seconds.
local function best(p, input)
  local t = math.huge
  for _ = 1, REPS do
    collectgarbage()
    local t0 = wall()
    check(sl.run(p, input))
    t = math.min(t, wall() - t0)
  end
  return t
end

-- 1. A parallel of BRANCHES trivial branches.
local trivial = sl.step{ name = "t", run = function(x) return x end }
local branches = {}
for i = 1, BRANCHES do branches[("b%05d"):format(i)] = trivial end
local par = sl.parallel{ name = "wide", branches = branches }
check(sl.run(par, 1))                       -- warm up pools and the plan
local t = best(par, 1)
print(("parallel of %d trivial branches"):format(BRANCHES))
print(("  wall                 %8.1f ms  (%.2f us/branch)"):format(t * 1e3, t / BRANCHES * 1e6))

-- 2. A map over ITEMS items, limit 100, sampling memory inside the body.
local peak_kb = 0
local sampled = sl.step{ name = "item", run = function(x)
  local kb = collectgarbage("count")
  if kb > peak_kb then peak_kb = kb end
  return x + 1
end }
local items = {}
for i = 1, ITEMS do items[i] = i end
local map = sl.map{ name = "many", body = sampled, limit = 100 }
check(sl.run(map, { 1, 2, 3 }))
collectgarbage()
local base_kb = collectgarbage("count")
peak_kb = 0
t = best(map, items)
print(("map over %d items, limit 100"):format(ITEMS))
print(("  wall                 %8.1f ms  (%.2f us/item)"):format(t * 1e3, t / ITEMS * 1e6))
print(("  Lua heap             %8.1f MB before, %.1f MB peak inside the body"):format(
  base_kb / 1024, peak_kb / 1024))

-- The same map with a body that waits, so that the limit is what paces it.
local napper = sl.step{ name = "nap", run = function(x, ctx) ctx:sleep(0); return x end }
local paced = sl.map{ name = "paced", body = napper, limit = 100 }
local few = {}
for i = 1, ITEMS // 10 do few[i] = i end
t = best(paced, few)
print(("map over %d items each ctx:sleep(0), limit 100"):format(#few))
print(("  wall                 %8.1f ms  (%.2f us/item)"):format(t * 1e3, t / #few * 1e6))

-- 3. A parallel of SLEEPERS branches each sleeping 10 ms.
local sleeper = sl.step{ name = "z", run = function(x, ctx) ctx:sleep(0.01); return x end }
local sleepers = {}
for i = 1, SLEEPERS do sleepers[("s%05d"):format(i)] = sleeper end
local wide_sleep = sl.parallel{ name = "sleepers", branches = sleepers }
check(sl.run(wide_sleep, 1))
t = best(wide_sleep, 1)
print(("parallel of %d branches each sleeping 10 ms"):format(SLEEPERS))
print(("  wall                 %8.1f ms  (target < 50 ms)"):format(t * 1e3))
