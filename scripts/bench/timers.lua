-- Durable time benchmark. Prints figures only.
--   - the cost of one ctx:sleep(0) in a durable run (its due time recorded
--     with the run) against the same sleep in a run without a store, and
--     against a bare Lua call;
--   - how many due timers per second one worker fires: RUNS runs (default
--     2000) each parked in a 1 s sleep (--park-after 0), then claimed by
--     the worker as they fall due, with --concurrency 50; the figure is
--     the runs completed per second from when the first one was due.
--   lua5.4 scripts/bench/timers.lua   (LUA_PATH/LUA_CPATH as in the README;
--   SLUICE_BIN names the CLI, default build/sluice; BENCH_PG a PostgreSQL
--   URL to measure the worker on instead of an SQLite file)
local sl = require "sluice"
local now = sl.now

local BIN = os.getenv("SLUICE_BIN") or "build/sluice"
local RUNS = tonumber(os.getenv("BENCH_RUNS")) or 2000
local SLEEPS = tonumber(os.getenv("BENCH_SLEEPS")) or 20000
local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir -p " .. dir)

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

-- Per sleep, in microseconds: one step sleeping SLEEPS times.
local napper = sl.pipeline{ name = "napper", sl.step{ name = "nap", run = function(n, ctx)
  for _ = 1, n do ctx:sleep(0) end
  return n
end } }

local function per_sleep(eng)
  eng:run(napper, 100)
  collectgarbage()
  local t0 = now()
  assert(eng:run(napper, SLEEPS).output == SLEEPS)
  return (now() - t0) / SLEEPS * 1e6
end

local function bare()
  local f = function(x) return x + 1 end
  local n, x = 10000000, 0
  local t0 = now()
  for _ = 1, n do x = f(x) end
  return (now() - t0) / n * 1e9
end

local mem, dur, call = {}, {}, {}
local plain = sl.engine()
local durable = sl.engine{ store = dir .. "/sleep.db" }
for _ = 1, 5 do
  mem[#mem + 1] = per_sleep(plain)
  dur[#dur + 1] = per_sleep(durable)
  call[#call + 1] = bare()
end
local m, d, c = median(mem), median(dur), median(call)
print(("ctx:sleep(0), %d in one step, median of 5"):format(SLEEPS))
print(("  bare Lua call        %8.1f ns"):format(c))
print(("  in memory            %8.2f us/sleep  (%.0fx a bare call)"):format(m, m * 1000 / c))
print(("  durable (recorded)   %8.2f us/sleep  (%.1fx in memory)"):format(d, d / m))

-- Due timers fired by one worker.
local file = dir .. "/due.lua"
local f = assert(io.open(file, "w"))
f:write([[
local sl = require "sluice"
return sl.pipeline{ name = "due", sl.step{ name = "wait", run = function(x, ctx)
  ctx:sleep(1)
  return x
end } }
]])
f:close()
local store = os.getenv("BENCH_PG") or (dir .. "/due.db")
local eng = sl.engine{ store = store }
for i = 1, RUNS do eng:submit(file, i) end
local function count(status)
  return #eng:runs{ status = status, limit = 0 }
end
-- First every run is parked: a worker takes each, records its due time
-- and frees the slot. Once all are due, a fresh worker fires them: the
-- figure is due runs taken up and completed per second.
local function worker()
  local cmd = ("SLUICE_STORE=%s %s worker --concurrency 50 --park-after 0 --poll 0.01 "
    .. "</dev/null >/dev/null 2>>%s & echo $!"):format(q(store), q(BIN), q(dir .. "/worker.log"))
  return io.popen(cmd):read("l")
end
local t0 = now()
local pid = worker()
while count("waiting") < RUNS and now() - t0 < 120 do os.execute("sleep 0.02") end
local parked = count("waiting")
local park_secs = now() - t0
os.execute("kill " .. pid .. "; sleep 0.3")
os.execute("sleep 1.2")   -- every due time has passed
t0 = now()
pid = worker()
while count("completed") < RUNS and now() - t0 < 120 do os.execute("sleep 0.01") end
local secs = now() - t0
os.execute("kill " .. pid)
local done = count("completed")
print(("due timers, one worker (--concurrency 50), %d runs each parked in a 1 s sleep"):format(RUNS))
print(("  parking     %d/%d parked in %.2f s  (%.0f runs/s)"):format(parked, RUNS, park_secs,
  parked / park_secs))
print(("  firing      %d/%d due runs completed in %.2f s  (%.0f due timers/s)"):format(done, RUNS,
  secs, done / secs))
os.execute("rm -rf " .. q(dir))
