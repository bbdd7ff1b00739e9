-- Retries, timeouts, validators, fallbacks, abort and limits.
local sl = require "sluice"

local function pipe(name, ...) return sl.pipeline{ name = name, ... } end
local function live_tasks() return require("sluice.core").default_engine():stats().live_tasks end

-- A step that fails its first n attempts.
local function flaky(n, opts)
  local spec = { name = "flaky", run = function(_, ctx)
    if ctx.attempt <= n then error("attempt " .. ctx.attempt .. " failed") end
    return "ok on " .. ctx.attempt
  end }
  for k, v in pairs(opts or {}) do spec[k] = v end
  return sl.step(spec)
end

describe("retries", function()
  it("runs extra attempts after failures, counting ctx.attempt from 1", function()
    local r = sl.run(pipe("p", flaky(2, { retries = 2, backoff = { base = 0 } })))
    assert.equal("completed", r.status)
    assert.equal("ok on 3", r.output)
    assert.equal(3, r.steps[2].attempts)
  end)

  it("fails with the last error once attempts are spent", function()
    local r = sl.run(pipe("p", flaky(5, { retries = 1, backoff = { base = 0 } })))
    assert.equal("failed", r.status)
    assert.equal("attempt 2 failed", r.error.message)
    assert.equal(2, r.steps[2].attempts)
  end)

  it("waits out the backoff on a timer while other steps run", function()
    local order = {}
    local slow = flaky(1, { retries = 1, backoff = { base = 0.03 } })
    local probe = sl.step{ name = "probe", run = function(_, ctx) ctx:sleep(0.005); order[#order + 1] = "probe" end }
    sl.kind("res_both", function(s, input, ctx)
      local a = ctx:spawn(s.a, input)
      local b = ctx:spawn(s.b, input)
      local out = ctx:await(a)
      order[#order + 1] = "flaky"
      ctx:await(b)
      return out
    end)
    local r = sl.run(sl.step{ kind = "res_both", name = "both", a = slow, b = probe })
    assert.equal("ok on 2", r.output)
    assert.same({ "probe", "flaky" }, order)
  end)

  it("gives each attempt a fresh copy of the state, discarding a failed attempt's writes", function()
    local seen = {}
    local s = sl.step{ name = "s", retries = 2, backoff = { base = 0 }, run = function(_, ctx)
      seen[#seen + 1] = ctx.state.n
      ctx.state.n = (ctx.state.n or 0) + 100
      if ctx.attempt < 3 then error("again") end
      return ctx.state.n
    end }
    local r = sl.run(pipe("p", sl.step{ name = "init", run = function(_, ctx) ctx.state.n = 1 end }, s))
    assert.same({ 1, 1, 1 }, seen)
    assert.equal(101, r.output)
  end)

  it("does not retry errors of kind quota, cancelled or limit", function()
    for _, kind in ipairs{ "quota", "cancelled", "limit" } do
      local attempts = 0
      local s = sl.step{ name = "s", retries = 3, backoff = { base = 0 }, run = function()
        attempts = attempts + 1
        error(sl.error(kind, "no"))
      end }
      local r = sl.run(pipe("p", s))
      assert.equal(1, attempts, kind)
      assert.equal(kind, r.error.kind)
    end
  end)
end)

describe("timers", function()
  local function busy(seconds)
    local t0 = sl.now()
    while sl.now() - t0 < seconds do end
  end

  it("measure a sleep from when it starts, even after the step computed for a while", function()
    local slept
    sl.run(pipe("p", sl.step{ name = "busy", run = function(_, ctx)
      busy(0.2)
      local t0 = sl.now()
      ctx:sleep(0.1)
      slept = sl.now() - t0
    end }))
    assert.is_true(slept >= 0.1, "slept " .. slept .. " s")
  end)

  it("start a timeout with its attempt, not with the loop's last look at the clock", function()
    local r = sl.run(pipe("p",
      sl.step{ name = "busy", run = function() busy(0.5) end },
      sl.step{ name = "timed", timeout = 0.4, run = function(_, ctx)
        ctx:sleep(0)
        ctx:sleep(0.15)
        return "in time"
      end }))
    assert.equal("completed", r.status)
    assert.equal("in time", r.output)
  end)

  it("wait out a whole backoff after an attempt that computed", function()
    local starts = {}
    sl.run(pipe("p", sl.step{ name = "s", retries = 1, backoff = { base = 0.1, jitter = 0 },
      run = function(_, ctx)
        starts[ctx.attempt] = sl.now()
        if ctx.attempt == 1 then busy(0.2); error("again") end
      end }))
    assert.is_true(starts[2] - starts[1] >= 0.3, "the retry came after " .. (starts[2] - starts[1]) .. " s")
  end)
end)

describe("timeouts", function()
  it("end an attempt that waits, cleaning up its timer", function()
    local r = sl.run(pipe("p", sl.step{ name = "sleepy", timeout = 0.02, run = function(_, ctx)
      ctx:sleep(5)
      return "woke"
    end }))
    assert.equal("failed", r.status)
    assert.equal("timeout", r.error.kind)
    assert.equal("sleepy", r.error.step)
    assert.matches("timed out after 0.02 s", r.error.message, 1, true)
    assert.equal(0, live_tasks())
  end)

  it("end an attempt that burns CPU, even inside pcall", function()
    local after = false
    local r = sl.run(pipe("p", sl.step{ name = "spin", timeout = 0.05, run = function()
      pcall(function() while true do end end)
      after = true
    end }))
    assert.equal("timeout", r.error.kind)
    assert.is_false(after)
  end)

  it("end a busy loop inside a coroutine the step made", function()
    local r = sl.run(pipe("p", sl.step{ name = "spin", timeout = 0.05, run = function()
      local co = coroutine.wrap(function() while true do end end)
      pcall(co)
      while true do end
    end }))
    assert.equal("timeout", r.error.kind)
  end)

  it("are retried like other failures", function()
    local s = sl.step{ name = "s", timeout = 0.02, retries = 1, backoff = { base = 0 }, run = function(_, ctx)
      if ctx.attempt == 1 then ctx:sleep(5) end
      return ctx.attempt
    end }
    local r = sl.run(pipe("p", s))
    assert.equal(2, r.output)
  end)

  it("bound the children a step waits on, cancelling them", function()
    local closed = false
    local child = sl.step{ name = "child", run = function(_, ctx)
      local g <close> = setmetatable({}, { __close = function() closed = true end })
      ctx:sleep(5)
    end }
    local r = sl.run(pipe("outer", sl.pipeline{ name = "inner", timeout = 0.02, child }))
    assert.equal("timeout", r.error.kind)
    assert.equal("inner", r.error.step)
    assert.is_true(closed)
    assert.equal(0, live_tasks())
  end)

  it("hold for a child burning CPU under a step with a timeout", function()
    local child = sl.step{ name = "child", run = function() while true do end end }
    local r = sl.run(pipe("outer", sl.pipeline{ name = "inner", timeout = 0.05, child }))
    assert.equal("timeout", r.error.kind)
    assert.equal("inner", r.error.step)
  end)
end)

describe("validators", function()
  it("refine: a failed check retries with ctx.feedback set, succeeding on attempt 3", function()
    local feedbacks = {}
    local s = sl.step{ name = "writer", retries = 3, backoff = { base = 0 },
      run = function(_, ctx)
        feedbacks[ctx.attempt] = ctx.feedback or false
        return ctx.attempt
      end,
      validate = function(out)
        if out < 3 then return false, "too small: " .. out end
        return true
      end }
    local r = sl.run(pipe("p", s))
    assert.equal(3, r.output)
    assert.same({ false, "too small: 1", "too small: 2" }, feedbacks)
  end)

  it("fail the step with kind validation and the feedback when attempts are spent", function()
    local s = sl.step{ name = "s", run = function() return 1 end,
      validate = { function() return true end, function(out) return out > 5, "needs more than 5" end } }
    local r = sl.run(pipe("p", s))
    assert.equal("validation", r.error.kind)
    assert.equal("needs more than 5", r.error.message)
    assert.equal("s", r.error.step)
  end)

  it("report a validator that raises as the error it is, not as a failed check", function()
    local feedback = {}
    local s = sl.step{ name = "s", retries = 1, backoff = { base = 0 },
      run = function(_, ctx) feedback[#feedback + 1] = ctx.feedback or "none"; return 1 end,
      validate = function() error("checker broke") end }
    local r = sl.run(pipe("p", s))
    assert.equal("error", r.error.kind)
    assert.equal("checker broke", r.error.message)
    assert.matches("resilience_spec.lua:%d+$", r.error.where)
    assert.same({ "none", "none" }, feedback)   -- retried as an error, with no feedback
  end)
end)

describe("fallbacks", function()
  local boom = sl.step{ name = "boom", run = function() error("primary broke") end }
  local function const(name, v) return sl.step{ name = name, run = function() return v end } end

  it("run a fallback step on the same input and record why", function()
    local s = sl.step{ name = "s", run = function() error("no") end,
      fallback = sl.step{ name = "backup", run = function(x) return "backup got " .. x end } }
    local r = sl.run(pipe("p", s), "in")
    assert.equal("backup got in", r.output)
    local rec = r.steps[2]
    assert.equal("s", rec.name)
    assert.equal("error: no", rec.fallback)
    assert.equal("backup", r.steps[3].name)
    assert.equal(rec.id, r.steps[3].parent)
    assert.equal("fallback", r.steps[3].key)
  end)

  it("try a list in order until one succeeds", function()
    local tried = {}
    local function failing(name) return sl.step{ name = name, run = function() tried[#tried + 1] = name; error(name) end } end
    local s = sl.step{ name = "s", run = function() error("no") end,
      fallback = { failing("a"), failing("b"), const("c", "from c"), failing("d") } }
    local r = sl.run(pipe("p", s))
    assert.equal("from c", r.output)
    assert.same({ "a", "b" }, tried)
  end)

  it("let a policy function choose a step, a value, or nil to fail", function()
    local seen
    local function with(policy)
      return sl.run(pipe("p", sl.step{ name = "s", run = function() error(sl.error("timeout", "slow")) end, fallback = policy }))
    end
    local r = with(function(err, input, ctx) seen = err.kind; return const("cheap", "cheap answer") end)
    assert.equal("timeout", seen)
    assert.equal("cheap answer", r.output)
    assert.equal("default", with(function() return "default" end).output)
    r = with(function() return nil end)
    assert.equal("failed", r.status)
    assert.equal("slow", r.error.message)
  end)

  it("refuse a policy that returns something else, at the moment it does", function()
    local r = sl.run(pipe("p", sl.step{ name = "s", run = function() error("x") end, fallback = function() return print end }))
    assert.equal("failed", r.status)
    assert.matches("fallback policy returned a function", r.error.message, 1, true)
    assert.matches("resilience_spec.lua:%d+", r.error.where)
  end)

  it("ship ready policies", function()
    local by = sl.fallbacks.by_kind{ validation = const("fix", "fixed"), default = "plain default" }
    local bad = sl.step{ name = "v", run = function() return 1 end, validate = function() return false end, fallback = by }
    assert.equal("fixed", sl.run(pipe("p", bad)).output)
    assert.equal("plain default", sl.run(pipe("p", sl.step{ name = "e", run = function() error("x") end, fallback = by })).output)
    assert.equal(7, sl.run(pipe("p", sl.step{ name = "e", run = function() error("x") end, fallback = sl.fallbacks.value(7) })).output)
  end)

  it("let a policy supply nil as the output, with sl.fallbacks.value(nil) or use(nil)", function()
    for _, policy in ipairs{ sl.fallbacks.value(nil), function() return sl.fallbacks.use(nil) end } do
      local r = sl.run(pipe("p", sl.step{ name = "e", run = function() error("x") end, fallback = policy },
        sl.step{ name = "after", run = function(x) return x == nil end }))
      assert.equal("completed", r.status)
      assert.is_true(r.output)
    end
  end)

  it("keep the primary's error and each fallback's when all of them fail", function()
    local function failing(name, msg) return sl.step{ name = name, run = function() error(msg, 0) end } end
    local r = sl.run(pipe("p", sl.step{ name = "s", run = function() error(sl.error("timeout", "too slow")) end,
      fallback = { failing("a", "a broke"), failing("b", "b broke") } }))
    assert.equal("failed", r.status)
    assert.equal("timeout", r.error.kind)
    assert.equal("s", r.error.step)
    assert.equal("too slow; its fallback 'a' failed too: a broke; its fallback 'b' failed too: b broke",
      r.error.message)
    assert.same({ "too slow", "a broke", "b broke" },
      { r.error.causes[1].message, r.error.causes[2].message, r.error.causes[3].message })
    local one = sl.run(pipe("p", sl.step{ name = "s", run = function() error("primary", 0) end,
      fallback = failing("only", "only broke") }))
    assert.equal("primary; its fallback 'only' failed too: only broke", one.error.message)
    assert.equal(2, #one.error.causes)
    local rec = one.steps[2]
    assert.equal("primary; its fallback 'only' failed too: only broke", rec.error.message)
  end)

  it("are refused at definition time when they form a cycle", function()
    local a = sl.step{ name = "a", run = print }
    local b = sl.step{ name = "b", run = print, fallback = a }
    a.fallback = b
    local ok, e = pcall(sl.step, { name = "c", run = print, fallback = b })
    assert.is_false(ok)
    assert.matches("fallback cycle", e, 1, true)
  end)

  it("are refused at run time when a policy falls back into itself", function()
    local s
    s = sl.step{ name = "loop", run = function() error("x") end, fallback = function() return s end }
    local r = sl.run(pipe("p", s))
    assert.equal("failed", r.status)
    assert.matches("fallback cycle", r.error.message, 1, true)
  end)
end)

describe("sl.abort", function()
  it("ends the whole run at once as cancelled, past pcall, retries and fallbacks", function()
    local after, fell_back, attempts = false, false, 0
    local s = sl.step{ name = "s", retries = 3, backoff = { base = 0 },
      fallback = sl.step{ name = "fb", run = function() fell_back = true end },
      run = function()
        attempts = attempts + 1
        pcall(sl.abort, "stop everything")
        after = true
      end }
    local r = sl.run(pipe("p", s, sl.step{ name = "next", run = function() after = true end }))
    assert.equal("cancelled", r.status)
    assert.equal("cancelled", r.error.kind)
    assert.equal("stop everything", r.error.message)
    assert.is_false(after)
    assert.is_false(fell_back)
    assert.equal(1, attempts)
    assert.equal(0, live_tasks())
  end)

  it("ends concurrent branches too", function()
    local finished = false
    local sleeper = sl.step{ name = "sleeper", run = function(_, ctx) ctx:sleep(5); finished = true end }
    local aborter = sl.step{ name = "aborter", run = function(_, ctx) ctx:sleep(0.005); sl.abort("enough") end }
    sl.kind("res_pair", function(s, input, ctx)
      return ctx:await{ ctx:spawn(s.a, input), ctx:spawn(s.b, input) }
    end)
    local r = sl.run(sl.step{ kind = "res_pair", name = "pair", a = sleeper, b = aborter })
    assert.equal("cancelled", r.status)
    assert.equal("enough", r.error.message)
    assert.is_false(finished)
    assert.equal(0, live_tasks())
  end)

  it("refuses to be called outside a step", function()
    assert.has_error(function() sl.abort("x") end, "sl.abort called outside a step")
  end)
end)

describe("limits", function()
  it("stop a runaway loop with kind limit, not retried, even inside pcall", function()
    local attempts = 0
    local s = sl.step{ name = "runaway", retries = 2, limits = { instructions = 100000 }, run = function()
      attempts = attempts + 1
      pcall(function() while true do end end)
    end }
    local r = sl.run(pipe("p", s))
    assert.equal("limit", r.error.kind)
    assert.matches("limit of 100000 Lua instructions", r.error.message, 1, true)
    assert.equal(1, attempts)
  end)

  it("let a step within its limit finish", function()
    local s = sl.step{ name = "ok", limits = { instructions = 1000000 }, run = function()
      local n = 0
      for i = 1, 1000 do n = n + i end
      return n
    end }
    assert.equal(500500, sl.run(pipe("p", s)).output)
  end)

  it("cap memory: a step building an endless table fails with kind limit and the engine runs on", function()
    local eng = sl.engine{ memory_limit = "64MB" }
    local hog = sl.step{ name = "hog", run = function()
      local t = {}
      local i = 0
      while true do i = i + 1; t[i] = ("x"):rep(64) .. i end
    end }
    local r = eng:run(pipe("p", hog))
    assert.equal("failed", r.status)
    assert.equal("limit", r.error.kind)
    assert.equal("hog", r.error.step)
    collectgarbage()
    local ok = eng:run(pipe("q", sl.step{ name = "small", run = function() return #("y"):rep(1000) end }))
    assert.equal(1000, ok.output)
  end)
end)

describe("the memory cap", function()
  it("stops a step that catches the memory error and carries on, as a timeout does", function()
    local eng = sl.engine{ memory_limit = 48 * 1024 * 1024 }
    local after
    local hog = sl.step{ name = "hog", run = function()
      local t = {}
      local ok = pcall(function()
        local i = 0
        while true do i = i + 1; t[i] = ("x"):rep(64) .. i end
      end)
      t = nil
      after = "carried on"
      return ok and "impossible" or "caught it"
    end }
    local r = eng:run(pipe("p", hog))
    assert.equal("failed", r.status)
    assert.equal("limit", r.error.kind)
    assert.matches("memory limit of 48.0 MB", r.error.message, 1, true)
    assert.is_nil(after)
  end)

  it("is in bytes, as in the C API, or a size with a unit; a value no one can mean is refused", function()
    local function msg(v)
      local ok, err = pcall(sl.engine, { memory_limit = v })
      assert.is_false(ok)
      return err
    end
    assert.matches("a memory limit of 64 bytes cannot be meant: limits are in bytes and at least 4 MB "
      .. '(for 64 MB write 64 * 1024 * 1024 or "64MB")', msg(64), 1, true)
    assert.matches("unknown unit 'parsecs'", msg("64 parsecs"), 1, true)
    assert.matches("whole number of bytes", msg(1.5), 1, true)
    assert.is_truthy(sl.engine{ memory_limit = "1GB" })
  end)
end)

describe("bad options", function()
  local function err(spec)
    spec.name = spec.name or "s"
    spec.run = spec.run or print
    local ok, e = pcall(function() local s = sl.step(spec); return s end)
    assert.is_false(ok)
    return e
  end
  it("are refused at definition time with the step and file:line", function()
    assert.matches("resilience_spec.lua:%d+: step 's': option 'retries' must be a non%-negative integer, got number", err{ retries = -1 })
    assert.matches("option 'retries' must be a non%-negative integer, got number", err{ retries = 1.5 })
    assert.matches("option 'timeout' must be a positive number of seconds, got number", err{ timeout = 0 })
    assert.matches("option 'validate' must be a function or a list of functions, got a list whose item #2 is a number", err{ validate = { print, 3 } })
    assert.matches("option 'fallback' must be a step, a list of steps or a function, got string", err{ fallback = "x" })
    assert.matches("option 'backoff' must be a table {base=, max=, jitter=}, got a table with an unknown field 'bse' (did you mean 'base'?)", err{ backoff = { bse = 1 } }, 1, true)
    assert.matches("unknown option 'retires' (did you mean 'retries'?)", err{ retires = 1 }, 1, true)
  end)
end)
