-- Store benchmark: what a durable run writes when most of what it carries
-- does not change. Each case runs a pipeline that records its big value
-- once (the baseline) and the same pipeline with many more steps that
-- pass the value on or change one entry of it; it prints the bytes the
-- store holds for the run and the run's time, as ratios to the baseline.
-- Target: within 3x of storing the state or value once. Prints figures only.
--   lua5.4 scripts/bench/store.lua   (LUA_PATH/LUA_CPATH as in the README;
--   SLUICE_BIN names the CLI, default build/sluice)
local sl = require "sluice"
local now = sl.now

local REPS = tonumber(os.getenv("BENCH_REPS")) or 5
local bin = os.getenv("SLUICE_BIN") or "build/sluice"
local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir -p " .. dir)

local function stats(path)
  local p = io.popen(("%s store stats --json --store %s"):format(bin, path))
  local st = sl.decode(p:read("a"))
  p:close()
  return st
end

local function median(xs)
  table.sort(xs)
  return xs[(#xs + 1) // 2]
end

-- Runs p once per fresh store, REPS times; returns the median seconds and
-- the bytes of checkpoints and values the store then holds.
local function measure(name, p, input)
  local times, bytes, file = {}, nil, nil
  for i = 1, REPS do
    local path = ("%s/%s-%d.db"):format(dir, name, i)
    local eng = sl.engine{ store = path }
    local t0 = now()
    local r = eng:run(p, input)
    times[#times + 1] = now() - t0
    assert(r.status == "completed", r.error and r.error.message)
    eng = nil
    collectgarbage()
    local st = stats(path)
    bytes = st.checkpoint_bytes + st.value_bytes + st.run_bytes
    file = st.file_bytes
    os.remove(path)
  end
  return median(times), bytes, file
end

local function report(title, once, many, raw)
  print(title)
  print(("  stored once   %9.1f ms  %12d bytes recorded  (%d B file)"):format(
    once[1] * 1e3, once[2], once[3]))
  print(("  the whole run %9.1f ms  %12d bytes recorded  (%d B file)"):format(
    many[1] * 1e3, many[2], many[3]))
  print(("  ratio         %9.2fx time %11.2fx bytes  (the value itself: %d B; target 3x)"):format(
    many[1] / once[1], many[2] / once[2], raw))
end

-- 1. A 20,000-entry state, then 50 steps that each bump one counter in it.
local ENTRIES = 20000
local fill = sl.step{ name = "fill", run = function(_, ctx)
  for i = 1, ENTRIES do ctx.state["k" .. i] = ("v%08d"):format(i) end
  ctx.state.counter = 0
  return 0
end }
local bumps = { fill }
for i = 1, 50 do
  bumps[#bumps + 1] = sl.step{ name = "bump" .. i, run = function(x, ctx)
    ctx.state.counter = ctx.state.counter + 1
    ctx:sleep(0)
    return x + 1
  end }
end
local state_raw = 0
for i = 1, ENTRIES do state_raw = state_raw + #("k" .. i) + 9 end
report(("a %d-entry state, then 50 steps that each change one entry"):format(ENTRIES),
  { measure("state1", sl.pipeline{ name = "state", fill }, 0) },
  { measure("state50", sl.pipeline{ name = "state", table.unpack(bumps) }, 0) }, state_raw)

-- 2. A 4 MB value made by one step and passed on by 19 more.
local SIZE = 4 * 1024 * 1024
local make = sl.step{ name = "make", run = function(n) return string.rep("x", n) end }
local passes = { make }
for i = 2, 20 do
  passes[i] = sl.step{ name = "pass" .. i, run = function(v, ctx) ctx:sleep(0); return v end }
end
report("a 4 MB value passed through 20 steps",
  { measure("value1", sl.pipeline{ name = "value", make }, SIZE) },
  { measure("value20", sl.pipeline{ name = "value", table.unpack(passes) }, SIZE) }, SIZE)

os.execute("rm -rf " .. dir)
