-- Quota, cache and background steps: the managers the dispatcher calls for
-- every step.
local sl = require "sluice"
local h = require "helpers"

local function pipe(name, ...) return sl.pipeline{ name = name, ... } end
local function live_tasks() return require("sluice.core").default_engine():stats().live_tasks end

describe("quota", function()
  it("fails a step whose estimate does not fit with kind quota, before it runs", function()
    local ran = false
    local s = sl.step{ name = "big", estimate = { tokens = 500 }, run = function() ran = true end }
    local r = sl.run(sl.pipeline{ name = "p", budget = { tokens = 100 }, s })
    assert.equal("failed", r.status)
    assert.equal("quota", r.error.kind)
    assert.equal("big", r.error.step)
    assert.matches("tokens budget exceeded", r.error.message, 1, true)
    assert.is_false(ran)
  end)

  it("lets a fallback policy choose a cheaper step when the estimate does not fit", function()
    local cheap = sl.step{ name = "cheap", estimate = { tokens = 10 }, run = function() return "cheap", { tokens = 8 } end }
    local s = sl.step{ name = "big", estimate = { tokens = 500 }, run = function() return "big" end,
      fallback = function(err) if err.kind == "quota" then return cheap end end }
    local r = sl.run(sl.pipeline{ name = "p", budget = { tokens = 100 }, s })
    assert.equal("cheap", r.output)
    assert.equal(8, r.usage.tokens)
  end)

  it("records usage returned and charged, per step and in total, exactly", function()
    local a = sl.step{ name = "a", run = function(_, ctx)
      ctx:charge{ cost = 0.1, tokens = 5 }
      ctx:charge{ cost = 0.2 }
      return "a", { requests = 1 }
    end }
    local b = sl.step{ name = "b", run = function() return "b", { cost = 0.3, tokens = 1 } end }
    local r = sl.run(pipe("p", a, b))
    assert.equal("completed", r.status)
    assert.equal(0.6, r.usage.cost)
    assert.equal(6, r.usage.tokens)
    assert.equal(1, r.usage.requests)
    assert.same({ cost = 0.3, tokens = 5, requests = 1 }, r.steps[2].usage)
    assert.same({ cost = 0.3, tokens = 1, requests = 0 }, r.steps[3].usage)
  end)

  it("charges the usage of attempts a validator rejected", function()
    local s = sl.step{ name = "v", retries = 2, backoff = { base = 0 },
      run = function(_, ctx) return ctx.attempt, { tokens = 10 } end,
      validate = function(out) return out >= 2, "too early" end }
    local r = sl.run(pipe("p", s))
    assert.equal(2, r.output)
    assert.equal(20, r.usage.tokens)
  end)

  it("fails the run after a step whose usage overruns the budget, with the figures", function()
    local next_ran = false
    local s = sl.step{ name = "greedy", estimate = { tokens = 10 }, run = function() return "x", { tokens = 150 } end }
    local r = sl.run(sl.pipeline{ name = "p", budget = { tokens = 100 }, s,
      sl.step{ name = "next", run = function() next_ran = true end } })
    assert.equal("failed", r.status)
    assert.equal("quota", r.error.kind)
    assert.matches("step 'greedy' overran the budget: tokens budget overrun", r.error.message, 1, true)
    assert.matches("150", r.error.message, 1, true)
    assert.is_false(next_ran)
    assert.equal(150, r.usage.tokens)
  end)

  it("shares one budget among a thousand concurrent branches, never spending past it", function()
    math.randomseed(7)
    local branches, reported = {}, {}
    for i = 1, 1000 do
      local est = math.random(1, 30)
      local actual = math.random(0, est)
      reported[i] = actual
      branches["b" .. i] = sl.step{ name = "b" .. i, estimate = { tokens = est },
        run = function(_, ctx) ctx:sleep(math.random() * 0.002); return i, { tokens = actual } end }
    end
    local r = sl.run(sl.parallel{ name = "fan", budget = { tokens = 8000 }, branches = branches,
      on_failure = "all_settled" })
    local sum, done = 0, 0
    for _, s in ipairs(r.steps) do
      if s.kind == "step" and s.status == "completed" then
        done = done + 1
        sum = sum + reported[tonumber(s.name:sub(2))]
      elseif s.kind == "step" then
        assert.equal("quota", s.error.kind)
      end
    end
    assert.is_true(done > 0 and done < 1000)
    assert.equal(sum, r.usage.tokens)
    assert.is_true(r.usage.tokens <= 8000)
  end)

  it("takes --budget from the command line, refusing a bad one", function()
    local p = h.script([[
      local sl = require "sluice"
      return sl.pipeline{ name = "p", sl.step{ name = "s", estimate = { cost = 0.3 }, run = function() return 1, { cost = 0.3 } end } }
    ]])
    local code, out = h.cli{ "run", p, "--budget", "cost=0.5", "--json" }
    assert.equal(0, code)
    assert.equal(0.3, sl.decode(out).usage.cost)
    local err
    code, out, err = h.cli{ "run", p, "--budget", "cost=0.2" }
    assert.equal(1, code)
    assert.matches("cost budget exceeded", err, 1, true)
    code, out, err = h.cli{ "run", p, "--budget", "cots=1" }
    assert.equal(2, code)
    assert.matches("unknown budget dimension 'cots' (did you mean 'cost'?)", err, 1, true)
    code, out, err = h.cli{ "run", p, "--budget", "tokens=-1" }
    assert.equal(2, code)
  end)

  it("refuses bad estimates and usage, naming the step", function()
    local ok, e = pcall(function() local s = sl.step{ name = "s", run = print, estimate = { tokns = 1 } }; return s end)
    assert.is_false(ok)
    assert.matches("meter_spec.lua:%d+: step 's': option 'estimate' must be a table {cost=, tokens=, requests=}, got a table with an unknown field 'tokns' %(did you mean 'tokens'%?%)", e)
    ok, e = pcall(function() local s = sl.pipeline{ name = "p", budget = { cost = -1 }, sl.step{ name = "s", run = print } }; return s end)
    assert.is_false(ok)
    assert.matches("option 'budget' must be", e, 1, true)
    local r = sl.run(pipe("p", sl.step{ name = "s", run = function() return 1, { tokens = -3 } end }))
    assert.equal("failed", r.status)
    assert.matches("the usage it returned is malformed", r.error.message, 1, true)
    r = sl.run(pipe("p", sl.step{ name = "s", run = function(_, ctx) ctx:charge{ coins = 1 } end }))
    assert.matches("bad usage for ctx:charge in step 's': unknown usage field 'coins'", r.error.message, 1, true)
  end)
end)

describe("cache", function()
  it("serves a repeated input from the cache, marking the history", function()
    local calls = 0
    local s = sl.step{ name = "slow", cache = true, run = function(x) calls = calls + 1; return x.n * 2 end }
    local p = pipe("p", s)
    assert.equal(4, sl.run(p, { n = 2, tag = "a" }).output)
    local r = sl.run(p, { tag = "a", n = 2 })
    assert.equal(4, r.output)
    assert.equal(1, calls)
    assert.is_true(r.steps[2].cached)
    sl.run(p, { n = 3, tag = "a" })
    assert.equal(2, calls)
  end)

  it("stores only successful outputs", function()
    local calls = 0
    local s = sl.step{ name = "flaky", cache = true, run = function() calls = calls + 1; error("no") end }
    sl.run(pipe("p", s), 1)
    sl.run(pipe("p", s), 1)
    assert.equal(2, calls)
  end)

  it("never caches a fallback's value as the step's answer", function()
    local calls, healthy = 0, false
    local s = sl.step{ name = "svc", cache = true,
      run = function(x) calls = calls + 1; if not healthy then error("down") end; return "real " .. x end,
      fallback = sl.fallbacks.value("degraded") }
    assert.equal("degraded", sl.run(pipe("p", s), 1).output)
    healthy = true
    local r = sl.run(pipe("p", s), 1)
    assert.equal("real 1", r.output)
    assert.is_false(r.steps[2].cached)
    assert.equal(2, calls)
    assert.equal("real 1", sl.run(pipe("p", s), 1).output)
    assert.equal(2, calls)
  end)

  it("honours ttl", function()
    local calls = 0
    local s = sl.step{ name = "t", cache = { ttl = 0.05 }, run = function() calls = calls + 1; return calls end }
    local p = pipe("p", s)
    sl.run(p, 1)
    sl.run(p, 1)
    assert.equal(1, calls)
    local w = sl.now()
    while sl.now() - w < 0.08 do end
    sl.run(p, 1)
    assert.equal(2, calls)
  end)

  it("uses what a key function returns as the key", function()
    local calls = 0
    local s = sl.step{ name = "k", cache = { key = function(input) return input.id end },
      run = function(x) calls = calls + 1; return x.id end }
    local p = pipe("p", s)
    sl.run(p, { id = 1, noise = 1 })
    sl.run(p, { id = 1, noise = 2 })
    assert.equal(1, calls)
  end)

  it("keys on the step's code: an edited step misses", function()
    local p1 = pipe("p", sl.step{ name = "same", cache = true, run = function(x) return x + 1 end })
    local p2 = pipe("p", sl.step{ name = "same", cache = true, run = function(x) return x + 2 end })
    assert.equal(2, sl.run(p1, 1).output)
    assert.equal(3, sl.run(p2, 1).output)
  end)

  it("runs concurrent identical executions once", function()
    local calls = 0
    local s = sl.step{ name = "shared", cache = true, run = function(x, ctx) calls = calls + 1; ctx:sleep(0.01); return x * 10 end }
    sl.kind("meter_dup", function(step, input, ctx)
      local ts = {}
      for i = 1, 5 do ts[i] = ctx:spawn(step.child, input) end
      return ctx:await(ts)
    end)
    local r = sl.run(sl.step{ kind = "meter_dup", name = "dup", child = s }, 7)
    assert.same({ 70, 70, 70, 70, 70 }, r.output)
    assert.equal(1, calls)
    local hits = 0
    for _, st in ipairs(r.steps) do if st.cached then hits = hits + 1 end end
    assert.equal(4, hits)
  end)

  it("refuses an input it cannot hash and a key function that fails, naming the step", function()
    local s = sl.step{ name = "h", cache = true, run = function() return 1 end }
    local ok, e = pcall(sl.run, pipe("p", s), { f = print })
    local r = ok and e or nil
    local msg = r and r.error and r.error.message or tostring(e)
    assert.matches("step 'h': cannot make its cache key: the input cannot be hashed: cannot encode a function at $.f", msg, 1, true)
    local k = sl.step{ name = "kf", cache = { key = function() error("broken key") end }, run = print }
    r = sl.run(pipe("p", k), 1)
    assert.matches("step 'kf': cannot make its cache key: its key function raised", r.error.message, 1, true)
    k = sl.step{ name = "kf2", cache = { key = function() return print end }, run = print }
    r = sl.run(pipe("p", k), 1)
    assert.matches("its key function returned a function", r.error.message, 1, true)
    ok, e = pcall(function() local x = sl.step{ name = "t", run = print, cache = { ttl = 0 } }; return x end)
    assert.matches("option 'cache' must be true or a table {ttl=, key=}, got a table whose field 'ttl' is not a positive number", e, 1, true)
  end)
end)

describe("the persistent cache tier", function()
  it("serves a step across processes through the store; cache stats and clear manage it", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local file = h.script(([[
local sl = require "sluice"
return sl.pipeline{ name = "p", sl.step{ name = "costly", cache = true, run = function(x)
  local f = assert(io.open(%q, "a")); f:write("ran\n"); f:close()
  return x * 2
end } }
]]):format(dir .. "/log"), dir, "c.lua")
    local code, out = h.cli({ "run", file, "--input", "21" }, { env = env })
    assert.equal(0, code)
    assert.equal("42\n", out)
    code, out = h.cli({ "run", file, "--input", "21", "--json" }, { env = env })
    assert.equal(0, code)
    local r = sl.decode(out)
    assert.equal(42, r.output)
    assert.is_true(r.steps[2].cached)
    assert.equal(1, h.lines(dir .. "/log"))
    local _, stats = h.cli({ "cache", "stats", "--json" }, { env = env })
    local st = sl.decode(stats)
    assert.equal(1, st.entries)
    assert.equal("costly", st.steps[1].step)
    assert.equal(1, st.steps[1].hits)
    local _, cleared = h.cli({ "cache", "clear", "--step", "costly" }, { env = env })
    assert.matches("cleared 1 cached output of step 'costly'", cleared, 1, true)
    h.cli({ "run", file, "--input", "21" }, { env = env })
    assert.equal(2, h.lines(dir .. "/log"))
    local c2, _, err = h.cli({ "cache", "purge" }, { env = env })
    assert.equal(2, c2)
    assert.matches("unknown action 'purge'", err, 1, true)
    h.rm(dir)
  end)
end)

describe("background steps", function()
  it("let the pipeline go on at once with the input; the run ends after them", function()
    local order = {}
    local bg = sl.step{ name = "bg", background = true, run = function(x, ctx)
      ctx:sleep(0.02); order[#order + 1] = "bg"; return "ignored"
    end }
    local after = sl.step{ name = "after", run = function(x) order[#order + 1] = "after"; return x .. "!" end }
    local r = sl.run(pipe("p", bg, after), "in")
    assert.equal("completed", r.status)
    assert.equal("in!", r.output)
    assert.same({ "after", "bg" }, order)
    assert.equal("completed", r.steps[2].status)
  end)

  it("record a failure without failing the run, unless required", function()
    local bad = function(req) return sl.step{ name = "bg", background = req, run = function(_, ctx) ctx:sleep(0.005); error("bg broke") end } end
    local r = sl.run(pipe("p", bad(true), sl.step{ name = "n", run = function() return 1 end }))
    assert.equal("completed", r.status)
    assert.equal("failed", r.steps[2].status)
    r = sl.run(pipe("p", bad("required"), sl.step{ name = "n", run = function() return 1 end }))
    assert.equal("failed", r.status)
    assert.equal("bg broke", r.error.message)
  end)

  it("are cancelled with their run, leaving nothing running", function()
    local finished = false
    local bg = sl.step{ name = "bg", background = true, run = function(_, ctx) ctx:sleep(5); finished = true end }
    local r = sl.run(pipe("p", bg, sl.step{ name = "stop", run = function() sl.abort("done here") end }))
    assert.equal("cancelled", r.status)
    assert.is_false(finished)
    assert.equal(0, live_tasks())
  end)
end)
