-- Start-up figures of the CLI (issue 12), each a ratio against a baseline
-- measured in the same run: `sluice run hello.lua` as a whole process
-- against `lua5.4 -e ''`; the same with a store holding 10,000 runs against
-- a fresh store; `sluice runs` on a store of 100,000 runs. Medians of
-- BENCH_REPS processes. Prints figures only.
--   lua5.4 scripts/bench/startup.lua   (LUA_PATH/LUA_CPATH as in the README;
--   SLUICE_BIN names the CLI, default build/sluice; BENCH_RUNS the size of
--   the large store, default 100000)
local sl = require "sluice"
local now = sl.now

local BIN = os.getenv("SLUICE_BIN") or "build/sluice"
local REPS = tonumber(os.getenv("BENCH_REPS")) or 31
local BIG = tonumber(os.getenv("BENCH_RUNS")) or 100000
local HELLO = "scripts/examples/hello.lua"

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir))

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

-- The median wall time of a shell command, in milliseconds.
local function ms(cmd)
  local t = {}
  os.execute(cmd)   -- warm the page cache
  for i = 1, REPS do
    local t0 = now()
    assert(os.execute(cmd), cmd)
    t[i] = (now() - t0) * 1e3
  end
  return median(t)
end

-- A store holding n runs of a one-step pipeline, filled in-process.
local function fill(path, n)
  local eng = sl.engine{ store = path }
  local one = sl.pipeline{ name = "one", sl.step{ name = "s", run = function(x) return x end } }
  for i = 1, n do eng:run(one, i) end
end

local quiet = " > /dev/null 2>&1"
local run = BIN .. " run " .. HELLO .. " --input '{\"name\":\"Ada\"}' --store "

-- os.execute itself costs a shell; it is in both sides of every ratio.
local bare = ms("lua5.4 -e ''" .. quiet)
local fresh_path = dir .. "/fresh.db"
local fresh = ms(run .. fresh_path .. quiet)
print(("start-up, medians of %d processes"):format(REPS))
print(("  %-44s %8.2f ms"):format("lua5.4 -e ''", bare))
print(("  %-44s %8.2f ms  %5.2fx  target <= 4x"):format("sluice run hello.lua", fresh, fresh / bare))

local t0 = now()
fill(dir .. "/10k.db", 10000)
local fill10k = now() - t0
local with10k = ms(run .. dir .. "/10k.db" .. quiet)
print(("  %-44s %8.2f ms  %5.2fx  target <= 1.5x (of the fresh store)"):format(
  "the same with a store of 10,000 runs", with10k, with10k / fresh))

t0 = now()
fill(dir .. "/big.db", BIG)
local fillbig = now() - t0
local list = ms(BIN .. " runs --store " .. dir .. "/big.db" .. quiet)
local list_json = ms(BIN .. " runs --json --store " .. dir .. "/big.db" .. quiet)
print(("  %-44s %8.2f ms           target <= 100 ms"):format(
  ("sluice runs, %d runs stored"):format(BIG), list))
print(("  %-44s %8.2f ms"):format("sluice runs --json", list_json))
print(("  (filling: 10,000 runs in %.1f s, %d in %.1f s)"):format(fill10k, BIG, fillbig))

os.execute("rm -rf " .. dir)
