-- The step lifecycle's figures (issue 12), each a ratio against a baseline
-- measured in the same process: the cost of a step against a bare Lua call,
-- of a cache hit and of an estimate against a plain step, of a durable
-- step, of a wide map, of a large state, of many sleepers, and how deep
-- steps nest. Prints figures; asserts nothing about time (only that runs
-- completed). Each figure is the median of BENCH_REPS repetitions.
--   lua5.4 scripts/bench/lifecycle.lua   (LUA_PATH/LUA_CPATH as in the README)
--   BENCH_HUGE=1 adds the 1,000,000-sleeper row (several seconds).
local sl = require "sluice"
local core = require "sluice.core"

local now = sl.now
local REPS = tonumber(os.getenv("BENCH_REPS")) or 7
local N = 1000

local function check(r)
  assert(r.status == "completed", r.error and tostring(r.error))
  return r
end

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

-- The median over REPS of the seconds f takes.
local function time(f)
  local t = {}
  for i = 1, REPS do
    collectgarbage()
    local t0 = now()
    f()
    t[i] = now() - t0
  end
  return median(t)
end

local function row(name, value, unit, ratio, base, target)
  print(("  %-52s %9.2f %-5s %7.2fx %-22s target %s"):format(name, value, unit, ratio,
    base, target))
end

local function chain(make)
  local steps = {}
  for i = 1, N do steps[i] = make(i) end
  return sl.pipeline{ name = "chain", table.unpack(steps) }
end

print(("step lifecycle, medians of %d"):format(REPS))

-- The medians of several measurements taken in turns, round after round,
-- so that a noisy stretch of the machine falls on all of them alike.
local function interleaved(fs, rounds)
  local samples = {}
  for k = 1, #fs do samples[k] = {} end
  for r = 1, rounds do
    for k = 1, #fs do
      collectgarbage()
      local t0 = now()
      fs[k]()
      samples[k][r] = now() - t0
    end
  end
  local out = {}
  for k = 1, #fs do out[k] = median(samples[k]) end
  return table.unpack(out)
end

-- 1.-3. A plain step in a 1,000-step chain against a bare Lua call; a
-- cache-hit step and a step with an estimate against a plain step.
local fns = {}
for i = 1, N do fns[i] = function(x) return x + 1 end end
local function bare(x)
  for i = 1, N do x = fns[i](x) end
  return x
end
local plain = chain(function(i) return sl.step{ name = "s" .. i, run = fns[i] } end)
local cached = chain(function(i)
  return sl.step{ name = "c" .. i, cache = true, run = fns[i] }
end)
local estimated = chain(function(i)
  return sl.step{ name = "e" .. i, estimate = { tokens = 1 }, run = fns[i] }
end)
local budget = { budget = { tokens = 1e12 } }
for _ = 1, 20 do
  bare(0)
  check(sl.run(plain, 0))
  check(sl.run(cached, 0))
  check(sl.run(estimated, 0, budget))
end
local RUNS = 20
local t_bare, t_plain, t_hit, t_est = interleaved({
  function() for _ = 1, RUNS * 20 do bare(0) end end,
  function() for _ = 1, RUNS do sl.run(plain, 0) end end,
  function() for _ = 1, RUNS do sl.run(cached, 0) end end,
  function() for _ = 1, RUNS do sl.run(estimated, 0, budget) end end,
}, REPS * 3)
local bare_ns = t_bare / (RUNS * 20 * N) * 1e9
local plain_ns = t_plain / (RUNS * (N + 1)) * 1e9
local hit_ns = t_hit / (RUNS * (N + 1)) * 1e9
local est_ns = t_est / (RUNS * (N + 1)) * 1e9
row("plain step in a 1,000-step chain", plain_ns, "ns", plain_ns / bare_ns,
  ("(bare call %.0f ns)"):format(bare_ns), "<= 10x")
row("cache-hit step", hit_ns, "ns", hit_ns / plain_ns, "(plain step)", "<= 1.3x")
row("step with an estimate", est_ns, "ns", est_ns / plain_ns, "(plain step)", "<= 1.3x")

-- 4. A durable step, recorded in a SQLite file.
local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir -p " .. dir)
local durable = sl.engine{ store = dir .. "/bench.db" }
for _ = 1, 3 do check(durable:run(plain, 0)) end
local dur_us = time(function() for _ = 1, 10 do durable:run(plain, 0) end end)
  / (10 * (N + 1)) * 1e6
row("durable step (SQLite file)", dur_us, "us", dur_us * 1e3 / plain_ns, "(plain step)",
  "<= 2 us")

-- 5. A map over 20,000 waiting items: per item at limit 1,000 against 10.
local napper = sl.step{ name = "nap", run = function(x, ctx) ctx:sleep(0); return x end }
local items = {}
for i = 1, 20000 do items[i] = i end
local function map_us(limit)
  local m = sl.map{ name = "m", body = napper, limit = limit }
  check(sl.run(m, { 1 }))
  return time(function() check(sl.run(m, items)) end) / #items * 1e6
end
local at10 = map_us(10)
local at1000 = map_us(1000)
row("map of 20,000 waiting items, limit 1,000", at1000, "us", at1000 / at10,
  ("(limit 10: %.2f us)"):format(at10), "<= 2x")

-- 6. A step touching one key of a 10,000-key state against a 10-key one.
local function state_us(keys)
  local init = sl.step{ name = "init", run = function(x, ctx)
    for i = 1, keys do ctx.state["k" .. i] = i end
    return x
  end }
  local touch = sl.step{ name = "touch", run = function(x, ctx)
    ctx.state.k1 = ctx.state.k1 + 1
    return x
  end }
  -- Enough touching steps that the init step's own cost, taken out with
  -- the same pipeline without them, is small beside theirs (with 1,000,
  -- noise in filling 10,000 keys could exceed the difference).
  local TOUCHES = 10000
  local steps = { init }
  for i = 2, TOUCHES + 1 do steps[i] = touch end
  local p = sl.pipeline{ name = "state", table.unpack(steps) }
  check(sl.run(p, 0))
  local only = sl.pipeline{ name = "init_only", init }
  local with = time(function() check(sl.run(p, 0)) end)
  local without = time(function() check(sl.run(only, 0)) end)
  return math.max(with - without, 1e-9) / TOUCHES * 1e6
end
local small = state_us(10)
local large = state_us(10000)
row("step touching 1 key of a 10,000-key state", large, "us", large / small,
  ("(10 keys: %.2f us)"):format(small), "<= 3x")

-- 7. Many branches each sleeping 10 ms, wall against 10 ms.
local sleeper = sl.step{ name = "z", run = function(x, ctx) ctx:sleep(0.01); return x end }
local function sleepers(n, reps)
  local list = {}
  for i = 1, n do list[i] = i end
  local m = sl.map{ name = "sleepers", body = sleeper }
  local t = {}
  for i = 1, reps do
    collectgarbage()
    local t0 = now()
    check(sl.run(m, list))
    t[i] = now() - t0
  end
  return median(t)
end
sleepers(10000, 1)
local s10k = sleepers(10000, REPS)
row("10,000 branches each sleeping 10 ms, wall", s10k * 1e3, "ms", s10k / 0.01, "(10 ms)",
  "<= 2x")

-- 8. 100,000 (and 1,000,000) sleeping branches: linear in the count, and
-- the task pool gives its memory back after the burst.
local eng = core.default_engine()
local s100k = sleepers(100000, 3)
local per100k = s100k / 100000 * 1e6
row("100,000 sleeping branches, per branch", per100k, "us", per100k / (s10k / 10000 * 1e6),
  "(per branch of 10,000)", "linear (~1x)")
if os.getenv("BENCH_HUGE") == "1" then
  local s1m = sleepers(1000000, 1)
  local per1m = s1m / 1000000 * 1e6
  row("1,000,000 sleeping branches, per branch", per1m, "us", per1m / per100k,
    "(per branch of 100,000)", "linear (~1x)")
end
local after = eng:stats()
collectgarbage()
collectgarbage()
local kb_after = collectgarbage("count")
print(("  after the burst: %d tasks kept in the pool, Lua heap %.1f MB"):format(
  after.pooled_tasks or -1, kb_after / 1024))

-- 9. Nesting: a pipeline nested 1,000 deep.
local deep = sl.step{ name = "leaf", run = function(x) return x + 1 end }
for i = 1, 1000 do deep = sl.pipeline{ name = "p" .. i, deep } end
local r = sl.run(deep, 0)
print(("  1,000 nested pipelines: %s (output %s)"):format(r.status, tostring(r.output)))

os.execute("rm -rf " .. dir)
