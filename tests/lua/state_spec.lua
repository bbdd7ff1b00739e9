-- The run's state (ctx.state) and the values passed between steps: every
-- execution sees an input and a state no other execution can change, a
-- step pays for the keys it touches, and a cache hit leaves the run as a
-- run of the step would.
local sl = require "sluice"

local function pipe(name, ...) return sl.pipeline{ name = name, ... } end
local function step(name, fn) return sl.step{ name = name, run = fn } end

describe("ctx.state", function()
  it("shows a step the whole state, filling itself as the step reads it", function()
    local raw, all, n
    local r = sl.run(pipe("p",
      step("init", function(_, ctx) for i = 1, 100 do ctx.state["k" .. i] = i end end),
      step("look", function(_, ctx)
        local st = ctx.state
        n = st.k7
        raw = {}
        for k in next, st do raw[#raw + 1] = k end
        all = 0
        for _ in pairs(st) do all = all + 1 end
      end)))
    assert.equal("completed", r.status)
    assert.equal(7, n)
    assert.same({ "k7" }, raw)      -- only what it read, before pairs
    assert.equal(100, all)
  end)

  it("carries removals and whole replacements to later steps", function()
    local seen
    sl.run(pipe("p",
      step("init", function(_, ctx) ctx.state.a = 1; ctx.state.b = 2 end),
      step("drop", function(_, ctx) ctx.state.a = nil end),
      step("look", function(_, ctx) seen = sl.copy(ctx.state) end)))
    assert.same({ b = 2 }, seen)
    sl.run(pipe("p",
      step("init", function(_, ctx) ctx.state.a = 1; ctx.state.b = 2 end),
      step("swap", function(_, ctx) ctx.state = { c = 3 } end),
      step("look", function(_, ctx) seen = sl.copy(ctx.state) end)))
    assert.same({ c = 3 }, seen)
  end)

  it("keeps a nested table a step changes its own until the step succeeds", function()
    local during, after
    sl.kind("state_try", function(s, input, ctx)
      pcall(ctx.run, ctx, s.child, input)
      return ctx:run(s.after, input)
    end)
    sl.run(pipe("p",
      step("init", function(_, ctx) ctx.state.cfg = { depth = 1 } end),
      sl.step{ kind = "state_try", name = "try",
        child = step("bad", function(_, ctx) ctx.state.cfg.depth = 99; error("no") end),
        after = step("read", function(_, ctx) after = ctx.state.cfg.depth end) },
      step("ok", function(_, ctx) ctx.state.cfg.depth = 2; during = ctx.state.cfg.depth end),
      step("check", function(_, ctx) after = { after, ctx.state.cfg.depth } end)))
    assert.equal(2, during)
    assert.same({ 1, 2 }, after)
  end)

  it("encodes as the whole state", function()
    local text
    sl.run(pipe("p",
      step("init", function(_, ctx) ctx.state.b = 2; ctx.state.a = { 1, 2 } end),
      step("look", function(_, ctx) text = sl.encode(ctx.state) end)))
    assert.equal('{"a":[1,2],"b":2}', text)
  end)
end)

describe("inputs", function()
  it("are an execution's own: a branch changing its input changes no other branch's", function()
    local seen = {}
    local function touch(name)
      return step(name, function(input, ctx)
        input.by = name
        ctx:sleep(0.002)
        seen[name] = input.by
        return input.by
      end)
    end
    local shared = { by = "nobody" }
    local r = sl.run(sl.parallel{ name = "p", branches = { a = touch("a"), b = touch("b") } }, shared)
    assert.equal("completed", r.status)
    assert.same({ a = "a", b = "b" }, seen)
    assert.equal("nobody", shared.by)
  end)

  it("do not alias a value a step also put in ctx.state", function()
    local kept
    sl.run(pipe("p",
      step("make", function(_, ctx) local t = { n = 1 }; ctx.state.t = t; return t end),
      step("change", function(input) input.n = 99; return input end),
      step("look", function(_, ctx) kept = ctx.state.t.n end)))
    assert.equal(1, kept)
  end)

  it("do not let the next step change a table a step returns again and again", function()
    local constant = { n = 1 }
    local p = pipe("p",
      step("give", function() return constant end),
      step("change", function(input) input.n = input.n + 1; return input.n end))
    assert.equal(2, sl.run(p).output)
    assert.equal(2, sl.run(p).output)
    assert.equal(1, constant.n)
  end)
end)

describe("a cached step", function()
  it("leaves the run in the same state on a hit as on a miss", function()
    local calls, seen = 0, {}
    local counter = sl.step{ name = "counter", cache = true, run = function(x, ctx)
      calls = calls + 1
      ctx.state.count = (ctx.state.count or 0) + x
      ctx.state.gone = nil
      return x * 2
    end }
    local p = pipe("p",
      step("init", function(x, ctx) ctx.state.gone = true; return x end),
      counter,
      step("look", function(x, ctx) seen[#seen + 1] = sl.copy(ctx.state); return x end))
    local a, b = sl.run(p, 5), sl.run(p, 5)
    assert.same({ 10, 10 }, { a.output, b.output })
    assert.equal(1, calls)
    assert.is_true(b.steps[3].cached)
    assert.same({ count = 5 }, seen[1])
    assert.same(seen[1], seen[2])
  end)

  it("is served only where the state holds what the step read", function()
    local calls = 0
    local greet = sl.step{ name = "greet", cache = true, run = function(x, ctx)
      calls = calls + 1
      return x .. ", " .. ctx.state.user
    end }
    local function run_as(user)
      return sl.run(pipe("p", step("who", function(x, ctx) ctx.state.user = user; return x end), greet),
        "hello").output
    end
    assert.equal("hello, ada", run_as("ada"))
    assert.equal("hello, ada", run_as("ada"))
    assert.equal(1, calls)
    assert.equal("hello, bo", run_as("bo"))
    assert.equal(2, calls)
  end)
end)
