-- Queue benchmark: workers sharing one store. Prints figures only.
--   - throughput: RUNS runs (default 1000) of a 10-step trivial pipeline and
--     of a 1-step one, drained by 1, 2 and 4 worker processes
--     (--concurrency 50 each): runs/s and steps/s, with the same runs in
--     one process (engine:run) as the baseline;
--   - claim latency: submit to the first step starting, with one idle
--     worker (median of 20);
--   - takeover: a worker on another (pretended) host is killed with
--     kill -9 mid-run; the time until a second worker starts the run's next
--     step, against the lease (SLUICE_LEASE_MS=1000).
--   lua5.4 scripts/bench/queue.lua   (LUA_PATH/LUA_CPATH as in the README;
--   SLUICE_BIN names the CLI, default build/sluice; BENCH_PG a PostgreSQL
--   URL to measure on instead of SQLite files:
--   tests/pg_env.sh sh -c 'BENCH_PG=$SLUICE_TEST_PG lua5.4 scripts/bench/queue.lua')
local sl = require "sluice"
local now = sl.now

local BIN = os.getenv("SLUICE_BIN") or "build/sluice"
local RUNS = tonumber(os.getenv("BENCH_RUNS")) or 1000
local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir -p " .. dir)

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function pipeline_file(name, nsteps)
  local path = dir .. "/" .. name .. ".lua"
  write(path, ([[
local sl = require "sluice"
local steps = {}
for i = 1, %d do steps[i] = sl.step{ name = "s" .. i, run = function(x) return x + 1 end } end
return sl.pipeline{ name = %q, table.unpack(steps) }
]]):format(nsteps, name))
  return path
end

-- A new store per measurement: an SQLite file, or with BENCH_PG (a
-- postgresql:// URL, e.g. SLUICE_TEST_PG under tests/pg_env.sh) a new
-- database on that server.
local store_n = 0
local PG = os.getenv("BENCH_PG")
local function new_store()
  store_n = store_n + 1
  if not PG then return dir .. "/s" .. store_n .. ".db" end
  local name = ("bench_%d_%d"):format(os.time() % 100000, store_n)
  assert(os.execute(("psql -q %s -c 'CREATE DATABASE %s' >/dev/null"):format(q(PG), name)))
  return (PG:gsub("/([%w_]+)%?", "/" .. name .. "?", 1))
end

-- Starts n workers on store with extra env; returns their pids.
local function start_workers(store, n, args, env)
  local pids = {}
  for i = 1, n do
    local cmd = ("%s SLUICE_STORE=%s %s worker %s </dev/null >/dev/null 2>>%s & echo $!"):format(
      env or "", q(store), q(BIN), args, q(dir .. "/workers.log"))
    pids[i] = io.popen(cmd):read("l")
  end
  return pids
end

local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local s = f:read("a")
  f:close()
  return s:match("^%d+ %b() (%a)") ~= "Z"
end

local function wait_all(pids)
  for _, pid in ipairs(pids) do
    while alive(pid) do os.execute("sleep 0.01") end
  end
end

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

-- Throughput.
local function throughput(nsteps)
  local file = pipeline_file("t" .. nsteps, nsteps)
  local base_eng = sl.engine()
  local p = base_eng:load(file)
  p = p["t" .. nsteps]
  local t0 = now()
  for i = 1, RUNS do base_eng:run(p, i) end
  local base = RUNS / (now() - t0)
  print(("%d runs of %d trivial steps"):format(RUNS, nsteps))
  print(("  one process, no store       %9.0f runs/s"):format(base))
  for _, workers in ipairs({ 1, 2, 4 }) do
    local store = new_store()
    local eng = sl.engine{ store = store }
    local ts = now()
    for i = 1, RUNS do eng:submit(file, i) end
    local submit = RUNS / (now() - ts)
    eng = nil
    collectgarbage()
    local tw = now()
    wait_all(start_workers(store, workers, "--concurrency 50 --until-idle --poll 0.002"))
    local secs = now() - tw
    local check = sl.engine{ store = store }
    local done = #check:runs{ status = "completed", limit = 0 }
    print(("  %d worker%s                   %9.0f runs/s  %9.0f steps/s  (%d/%d completed; submit %0.f runs/s)")
      :format(workers, workers == 1 and " " or "s", RUNS / secs, RUNS * (nsteps + 1) / secs,
        done, RUNS, submit))
  end
end

throughput(10)
throughput(1)

-- Claim latency: the first step writes the time it started.
do
  local store = new_store()
  local file = dir .. "/lat.lua"
  write(file, ([[
local sl = require "sluice"
return sl.pipeline{ name = "lat",
  sl.step{ name = "mark", run = function(x, ctx)
    local f = assert(io.open(%q .. "/" .. ctx.run_id, "w"))
    f:write(string.format("%%.6f", sl.now()))
    f:close()
    return x end } }
]]):format(dir))
  local pids = start_workers(store, 1, "--poll 0.2")
  os.execute("sleep 0.3")
  local eng = sl.engine{ store = store }
  local lat = {}
  for i = 1, 20 do
    local t = now()
    local id = eng:submit(file, i)
    local mark = dir .. "/" .. id
    local started
    while not started do
      local f = io.open(mark)
      if f then started = tonumber(f:read("a")); f:close() end
      if not started then os.execute("sleep 0.001") end
    end
    lat[i] = (started - t) * 1000
    os.execute("sleep 0.05")
  end
  os.execute("kill -TERM " .. pids[1])
  wait_all(pids)
  print(("claim latency, submit to first step (an idle worker, poll 0.2 s): median %.1f ms, max %.1f ms")
    :format(median(lat), math.max(table.unpack(lat))))
end

-- Takeover after kill -9 of a worker on another host.
do
  local store = new_store()
  local file = dir .. "/slow.lua"
  write(file, ([[
local sl = require "sluice"
return sl.pipeline{ name = "slow",
  sl.step{ name = "first", run = function(x, ctx)
    if not io.open(%q .. "/first-" .. ctx.run_id) then
      assert(io.open(%q .. "/first-" .. ctx.run_id, "w")):close()
      ctx:sleep(60)
    end
    return x end },
  sl.step{ name = "next", run = function(x, ctx)
    local f = assert(io.open(%q .. "/next-" .. ctx.run_id, "w"))
    f:write(string.format("%%.6f", sl.now()))
    f:close()
    return x end } }
]]):format(dir, dir, dir))
  local eng = sl.engine{ store = store }
  local id = eng:submit(file, 1)
  local a = start_workers(store, 1, "--poll 0.01", "SLUICE_HOST=elsewhere SLUICE_LEASE_MS=1000")
  while not io.open(dir .. "/first-" .. id) do os.execute("sleep 0.005") end
  local b = start_workers(store, 1, "--poll 0.01", "SLUICE_LEASE_MS=1000")
  os.execute("sleep 0.2")
  local killed = now()
  os.execute("kill -9 " .. a[1])
  local started
  while not started do
    local f = io.open(dir .. "/next-" .. id)
    if f then started = tonumber(f:read("a")); f:close() end
    if not started then os.execute("sleep 0.005") end
  end
  print(("takeover after kill -9 (lease 1.0 s, the dead worker on another host): %.2f s")
    :format(started - killed))
  os.execute("kill -TERM " .. b[1] .. " 2>/dev/null")
  wait_all(b)
end

os.execute("rm -rf " .. q(dir))
