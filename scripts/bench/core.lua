-- Core engine benchmark: the per-step cost of dispatch against bare Lua, and
-- the cost of suspended steps. Prints figures; asserts nothing about time.
--   lua5.4 scripts/bench/core.lua   (LUA_PATH/LUA_CPATH as in the README)
local sl = require "sluice"

local function wall()
  -- Monotonic wall time in seconds, from the engine's clock.
  return sl.now()
end

local N = tonumber(os.getenv("BENCH_STEPS")) or 1000
local REPS = tonumber(os.getenv("BENCH_REPS")) or 200

-- 1. A pipeline of N trivial steps against bare Lua calling the same N functions.
local fns, steps = {}, {}
for i = 1, N do
  fns[i] = function(x) return x + 1 end
  steps[i] = sl.step{ name = "s" .. i, run = fns[i] }
end
local p = sl.pipeline{ name = "trivial", table.unpack(steps) }

local function bare(x)
  for i = 1, N do x = fns[i](x) end
  return x
end

for _ = 1, 10 do bare(0); sl.run(p, 0) end   -- warm up pools and caches
collectgarbage()
local t0 = wall()
local x
for _ = 1, REPS * 50 do x = bare(0) end
local bare_ns = (wall() - t0) / (REPS * 50 * N) * 1e9
assert(x == N)

collectgarbage()
t0 = wall()
local r
for _ = 1, REPS do r = sl.run(p, 0) end
local eng_ns = (wall() - t0) / (REPS * (N + 1)) * 1e9
assert(r.status == "completed" and r.output == N, r.error and tostring(r.error))

print(("pipeline of %d trivial steps, %d runs"):format(N, REPS))
print(("  bare Lua call        %8.1f ns/step"):format(bare_ns))
print(("  engine               %8.1f ns/step  (%.1fx bare Lua; target < 1000 ns, < 30x)"):format(eng_ns, eng_ns / bare_ns))

-- 2. 10,000 steps in sequence, each doing ctx:sleep(0).
local M = 10000
local sleepy = sl.step{ name = "nap", run = function(x, ctx) ctx:sleep(0); return x + 1 end }
local seq = {}
for i = 1, M do seq[i] = sleepy end
local ps = sl.pipeline{ name = "naps", table.unpack(seq) }
collectgarbage()
t0 = wall()
r = sl.run(ps, 0)
local seq_s = wall() - t0
assert(r.output == M)
print(("%d sequential steps each ctx:sleep(0)"):format(M))
print(("  wall                 %8.1f ms  (%.2f us/step)"):format(seq_s * 1e3, seq_s / M * 1e6))

-- 3. A kind that spawns 10,000 children at once, each sleeping 10 ms.
local child = sl.step{ name = "child", run = function(x, ctx) ctx:sleep(0.010); return x end }
local peak_kb, live
sl.kind("fanout", function(step, input, ctx)
  local before = collectgarbage("count")
  local tasks = {}
  for i = 1, M do tasks[i] = ctx:spawn(step.child, i) end
  peak_kb = collectgarbage("count") - before
  live = require("sluice.core").default_engine():stats().live_tasks
  local outs = ctx:await(tasks)
  return #outs
end)
local fan = sl.step{ kind = "fanout", name = "fan", child = child }
-- The first run starts cold: every suspended step's coroutine is new, so the
-- heap growth it measures is the whole cost of a suspended step.
collectgarbage()
collectgarbage("stop")
t0 = wall()
r = sl.run(fan, 0)
local cold_s = wall() - t0
collectgarbage("restart")
assert(r.output == M, r.error and tostring(r.error))
local per_step = (peak_kb * 1024) / M
collectgarbage()
t0 = wall()
r = sl.run(fan, 0)
local fan_s = wall() - t0
local stats = require("sluice.core").default_engine():stats()
print(("%d concurrent children each sleeping 10 ms"):format(M))
print(("  wall                 %8.1f ms  (target < 50 ms; %.1f ms cold, making the pool)"):format(fan_s * 1e3, cold_s * 1e3))
print(("  Lua heap per suspended step %6.0f bytes, plus %d bytes of C task record (target < 4096)"):format(per_step, stats.task_bytes))
print(("  live tasks at peak   %8d"):format(live))
