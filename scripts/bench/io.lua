-- I/O benchmark: ctx:http against the local mock server (1,000 requests in
-- flight at once, and one after another on a kept-alive connection) and
-- ctx:exec round trips. Prints figures; asserts nothing about time.
--   lua5.4 scripts/bench/io.lua   (LUA_PATH/LUA_CPATH as in the README;
--   SLUICE_MOCK_SERVER names the server binary, build/mock_server if unset)
local sl = require "sluice"

local MOCK = os.getenv("SLUICE_MOCK_SERVER") or "build/mock_server"
local N = tonumber(os.getenv("BENCH_REQUESTS")) or 1000
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS")) or 5
local EXECS = tonumber(os.getenv("BENCH_EXECS")) or 500

local function rss_kb()
  local f = assert(io.open("/proc/self/statm"))
  local pages = tonumber(f:read("a"):match("^%d+%s+(%d+)"))
  f:close()
  return pages * 4   -- 4 KiB pages
end

local server = assert(io.popen("exec sh -c 'echo $$; exec " .. MOCK .. " 0'"))
local server_pid = server:read("l")
local port = assert((server:read("l") or ""):match("^listening on (%d+)$"), "the mock server did not start")
local base = "http://127.0.0.1:" .. port

local function check(r)
  assert(r.status == "completed", r.error and tostring(r.error))
  return r.output
end

-- 1. N requests in flight at once, ROUNDS times.
local peak_heap_kb, peak_rss_kb, base_heap_kb, base_rss_kb
local get = sl.step{ name = "get", run = function(_, ctx)
  return ctx:http(base .. "/status/200").status
end }
sl.kind("bench_fan", function(s, input, ctx)
  local tasks = {}
  for i = 1, N do tasks[i] = ctx:spawn(s.child, i) end
  peak_heap_kb = math.max(peak_heap_kb or 0, collectgarbage("count"))
  peak_rss_kb = math.max(peak_rss_kb or 0, rss_kb())
  local outs = ctx:await(tasks)
  for i = 1, N do assert(outs[i] == 200) end
  return #outs
end)
local fan = sl.step{ kind = "bench_fan", name = "fan", child = get }
check(sl.run(fan))            -- warm up: task pool, connections, curl
collectgarbage()
base_heap_kb, base_rss_kb = collectgarbage("count"), rss_kb()
peak_heap_kb, peak_rss_kb = nil, nil
local t0 = sl.now()
for _ = 1, ROUNDS do check(sl.run(fan)) end
local fan_s = sl.now() - t0
print(("%d concurrent HTTP requests to the mock server, %d rounds"):format(N, ROUNDS))
print(("  throughput           %8.0f requests/s  (%.1f ms per round)"):format(N * ROUNDS / fan_s, fan_s / ROUNDS * 1e3))
print(("  Lua heap at peak     %8.0f KiB  (+%.0f KiB, %.0f bytes per request in flight)"):format(
  peak_heap_kb, peak_heap_kb - base_heap_kb, (peak_heap_kb - base_heap_kb) * 1024 / N))
print(("  RSS at peak          %8.0f KiB  (+%.0f KiB over the idle engine)"):format(peak_rss_kb, peak_rss_kb - base_rss_kb))

-- 2. N requests one after another from one step (connection kept alive).
local seq = sl.step{ name = "seq", run = function(_, ctx)
  for _ = 1, N do assert(ctx:http(base .. "/status/200").status == 200) end
end }
check(sl.run(seq))
t0 = sl.now()
check(sl.run(seq))
local seq_s = sl.now() - t0
print(("%d sequential HTTP requests from one step"):format(N))
print(("  throughput           %8.0f requests/s  (%.1f us per request)"):format(N / seq_s, seq_s / N * 1e6))

-- 3. ctx:exec round trips, one after another and 50 at a time.
local trues = sl.step{ name = "true", run = function(_, ctx)
  for _ = 1, EXECS do assert(ctx:exec{ "true" }.code == 0) end
end }
check(sl.run(trues))
t0 = sl.now()
check(sl.run(trues))
local true_s = sl.now() - t0
print(("%d sequential ctx:exec{'true'}"):format(EXECS))
print(("  round trips          %8.0f /s  (%.0f us each)"):format(EXECS / true_s, true_s / EXECS * 1e6))

local cat = sl.step{ name = "cat", run = function(i, ctx)
  return ctx:exec({ "cat" }, { stdin = "line " .. i }).stdout
end }
sl.kind("bench_cats", function(s, input, ctx)
  local done = 0
  while done < EXECS do
    local tasks = {}
    for i = 1, math.min(50, EXECS - done) do tasks[i] = ctx:spawn(s.child, done + i) end
    local outs = ctx:await(tasks)
    for i = 1, #outs do assert(outs[i] == "line " .. (done + i)) end
    done = done + #outs
  end
  return done
end)
local cats = sl.step{ kind = "bench_cats", name = "cats", child = cat }
t0 = sl.now()
check(sl.run(cats))
local cat_s = sl.now() - t0
print(("%d ctx:exec{'cat'} with stdin, 50 at a time"):format(EXECS))
print(("  round trips          %8.0f /s  (%.0f us each)"):format(EXECS / cat_s, cat_s / EXECS * 1e6))

os.execute("kill -TERM " .. server_pid)
server:close()
