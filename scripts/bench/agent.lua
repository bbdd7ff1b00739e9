-- Agent benchmark: what the engine adds to a model turn and to a tool call,
-- against the mock server's own time for the same request, and what the
-- rate limiter costs per acquire. Prints figures; asserts nothing about time.
--   lua5.4 scripts/bench/agent.lua   (LUA_PATH/LUA_CPATH as in the README;
--   SLUICE_MOCK_SERVER: the mock server, default build/mock_server)
local sl = require "sluice"
local limits = require "sluice.limits"

local MOCK = os.getenv("SLUICE_MOCK_SERVER") or "build/mock_server"
local REPS = tonumber(os.getenv("BENCH_REPS")) or 300
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS")) or 5

local server = assert(io.popen("exec sh -c 'echo $$; exec " .. MOCK .. " 0'"))
local pid = server:read("l")
local port = assert((server:read("l") or ""):match("^listening on (%d+)$"), "the mock server did not start")
local v1 = "http://127.0.0.1:" .. port .. "/v1"

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

-- Seconds per run of each pipeline, wall and this process's CPU, the
-- medians of ROUNDS rounds of REPS runs, the pipelines taking turns within
-- each round so that the machine's noise falls on all alike.
local function per_run(list)
  for _, c in ipairs(list) do for _ = 1, 20 do sl.run(c.p, c.input) end end
  local walls, cpus = {}, {}
  for _, c in ipairs(list) do walls[c], cpus[c] = {}, {} end
  for _ = 1, ROUNDS do
    for _, c in ipairs(list) do
      collectgarbage()
      local t0, c0 = sl.now(), os.clock()
      for _ = 1, REPS do
        local r = sl.run(c.p, c.input)
        assert(r.status == "completed", r.error and r.error.message)
      end
      table.insert(walls[c], (sl.now() - t0) / REPS)
      table.insert(cpus[c], (os.clock() - c0) / REPS)
    end
  end
  for _, c in ipairs(list) do c.wall, c.cpu = median(walls[c]), median(cpus[c]) end
end

local schema = { type = "object", properties = { city = { type = "string" } }, required = { "city" } }
local lookup = sl.step{ name = "lookup", description = "Looks a city up.", input_schema = schema,
  run = function(x) return { city = x.city, population = 1000 } end }

-- The baseline: the request a model turn makes, sent with ctx:http alone.
local function body(content, tools)
  return sl.encode{ model = "m", messages = { { role = "user", content = content } },
    tools = tools and { { type = "function", ["function"] = { name = "lookup",
      description = "Looks a city up.", parameters = schema } } } or nil }
end
local raw_body = body("hello there")
local raw = sl.pipeline{ name = "raw", sl.step{ name = "http", run = function(_, ctx)
  local res = ctx:http{ url = v1 .. "/chat/completions", method = "POST",
    headers = { ["Content-Type"] = "application/json" }, body = raw_body }
  return sl.decode(res.body).choices[1].message.content
end } }

local plain = sl.pipeline{ name = "plain", sl.step{ name = "ask",
  agent = sl.agent.chat{ base_url = v1, model = "m", prompt = "hello there" } } }

local one_call = sl.pipeline{ name = "tools1", sl.step{ name = "ask",
  agent = sl.agent.chat{ base_url = v1, model = "m", tools = { lookup },
    prompt = [=[[[tool lookup {"city": "Oslo"}]]]=] } } }

local four_calls = sl.pipeline{ name = "tools4", sl.step{ name = "ask",
  agent = sl.agent.chat{ base_url = v1, model = "m", tools = { lookup },
    prompt = [=[[[tool lookup {"city": "Oslo"}]] [[tool lookup {"city": "Rome"}]] ]=]
      .. [=[[[tool lookup {"city": "Lima"}]] [[tool lookup {"city": "Kyiv"}]]]=] } } }

local R, A, T1, T4 = { p = raw }, { p = plain }, { p = one_call }, { p = four_calls }
per_run{ R, A, T1, T4 }

print(("chat turns against the mock server (127.0.0.1), median of %d rounds of %d runs; "
  .. "wall time, and in brackets the CPU time of this process (the engine and libcurl; the "
  .. "mock's own time is in its process)"):format(ROUNDS, REPS))
local function us(c) return ("%8.1f us [cpu %6.1f us]"):format(c.wall * 1e6, c.cpu * 1e6) end
print(("  one request, ctx:http alone     %s  (the mock and the transport)"):format(us(R)))
print(("  one model turn, sl.agent.chat   %s  (engine adds %.1f us cpu a turn, %.2fx the request's cpu)"):format(
  us(A), (A.cpu - R.cpu) * 1e6, A.cpu / R.cpu))
print(("  2 turns + 1 tool call (steps)   %s  (engine adds %.1f us cpu over 2 requests)"):format(
  us(T1), (T1.cpu - 2 * R.cpu) * 1e6))
print(("  2 turns + 4 tool calls          %s  (%.1f us cpu for each tool call past the first)"):format(
  us(T4), (T4.cpu - T1.cpu) / 3 * 1e6))

-- The limiter: acquire and release with capacity to spare, in one step.
local N = 200000
local function bare(x) return x + 1 end
local acq = sl.pipeline{ name = "acquire", sl.step{ name = "loop", run = function(_, ctx)
  local keys = { "bench-model", "http://bench" }
  local t0 = sl.now()
  for _ = 1, N do
    local p = limits.acquire(ctx, keys, 10)
    p:release(10)
  end
  local lim = (sl.now() - t0) / N
  t0 = sl.now()
  local x = 0
  for _ = 1, N do x = bare(x) end
  return { lim = lim, bare = (sl.now() - t0) / N }
end } }
local lims, bares = {}, {}
for i = 1, ROUNDS do
  sl.limits{ ["bench-model"] = { concurrency = 64, requests_per_minute = 1e12,
    tokens_per_minute = 1e15 }, ["http://bench"] = { concurrency = 64 } }
  local r = sl.run(acq)
  lims[i], bares[i] = r.output.lim, r.output.bare
end
local lim_ns, bare_ns = median(lims) * 1e9, median(bares) * 1e9
print(("rate limiter, %d acquire+release pairs with room to spare, two keys"):format(N))
print(("  bare Lua call        %8.1f ns"):format(bare_ns))
print(("  acquire + release    %8.1f ns  (%.1fx a bare call)"):format(lim_ns, lim_ns / bare_ns))
local keys = { "unlimited-model", "http://unlimited" }
local t0 = sl.now()
for _ = 1, N do limits.acquire(nil, keys, 10) end
print(("  no key limited       %8.1f ns  (what an agent without sl.limits pays)"):format(
  (sl.now() - t0) / N * 1e9))

os.execute("kill -TERM " .. pid)
server:close()
