-- The engine through the Lua module: runs, the ctx, the scheduler, the
-- policy table, and failures that must not hurt the engine.
local sl = require "sluice"

local function step(name, run) return sl.step{ name = name, run = run } end
local function pipe(name, ...) return sl.pipeline{ name = name, ... } end

describe("sl.run", function()
  it("feeds each step's output to the next and returns the result table", function()
    local r = sl.run(pipe("p", step("a", function(x) return x + 1 end), step("b", function(x) return x * 10 end)), 1)
    assert.equal("completed", r.status)
    assert.equal(20, r.output)
    assert.equal("p", r.pipeline)
    assert.is_string(r.run_id)
    assert.is_nil(r.error)
  end)

  it("records one history entry per step execution, children pointing at their parent", function()
    local inner = pipe("inner", step("x", function(v) return v end))
    local r = sl.run(pipe("outer", step("a", function(v) return v end), inner), 0)
    local names = {}
    for i, s in ipairs(r.steps) do
      names[i] = s.name .. ":" .. s.kind .. ":" .. tostring(s.parent)
      assert.equal("completed", s.status)
      assert.equal(1, s.attempts)
      assert.is_false(s.cached)
      assert.is_true(s.ms >= 0)
    end
    assert.same({ "outer:pipeline:nil", "a:step:1", "inner:pipeline:1", "x:step:3" }, names)
  end)

  it("gives every run its own id", function()
    local p = pipe("p", step("a", function() end))
    assert.not_equal(sl.run(p).run_id, sl.run(p).run_id)
  end)

  it("fails the run with an error table naming the step and where it raised", function()
    local r = sl.run(pipe("p", step("boom", function() error("kaboom") end)))
    assert.equal("failed", r.status)
    assert.equal("error", r.error.kind)
    assert.equal("kaboom", r.error.message)
    assert.equal("boom", r.error.step)
    assert.matches("core_spec.lua:%d+$", r.error.where)
    assert.matches("step 'boom' failed: kaboom", tostring(r.error), 1, true)
  end)

  it("places an error made with sl.error at the line that made it", function()
    local r = sl.run(pipe("p", step("typed", function() error(sl.error("validation", "bad")) end)))
    assert.equal("validation", r.error.kind)
    assert.matches("core_spec.lua:%d+$", r.error.where)
  end)

  it("keeps a table a step raises as its error fields", function()
    local r = sl.run(pipe("p", step("t", function() error({ kind = "validation", message = "bad" }) end)))
    assert.same({ "validation", "bad", "t" }, { r.error.kind, r.error.message, r.error.step })
  end)

  it("keeps every field of a plain table a step raises", function()
    local r = sl.run(pipe("p", step("t", function() error({ code = 42, detail = { "x" } }) end)))
    assert.equal("error", r.error.kind)
    assert.equal(42, r.error.code)
    assert.same({ "x" }, r.error.detail)
    assert.equal('error raised with a table: {"code":42,"detail":["x"]}', r.error.message)
    assert.equal("t", r.error.step)
  end)

  it("returns any Lua value as output through the Lua API, functions included", function()
    local r = sl.run(pipe("p", step("f", function() return print end)))
    assert.equal(print, r.output)
  end)

  it("keeps working after runs fail", function()
    local bad = pipe("bad", step("b", function() error("x") end))
    for _ = 1, 20 do assert.equal("failed", sl.run(bad).status) end
    assert.equal(3, sl.run(pipe("ok", step("a", function() return 3 end))).output)
  end)

  it("refuses a value that is not a step", function()
    assert.has_error(function() sl.run({}, 1) end)
    local ok, e = pcall(sl.run, 42)
    assert.is_false(ok)
    assert.matches("pipeline or pipeline name expected", e, 1, true)
  end)

  it("refuses to block from inside a step", function()
    local r = sl.run(pipe("p", step("nested", function() return sl.run(pipe("q", step("x", function() end))) end)))
    assert.equal("failed", r.status)
    assert.matches("cannot block on a run from inside the engine's loop", r.error.message, 1, true)
  end)

  it("runs deep nesting and long pipelines", function()
    local s = step("leaf", function(x) return x + 1 end)
    for i = 1, 30 do s = pipe("level" .. i, s) end
    assert.equal(1, sl.run(s, 0).output)
    local many = {}
    for i = 1, 5000 do many[i] = step("s" .. i, function(x) return x + 1 end) end
    assert.equal(5000, sl.run(pipe("long", table.unpack(many)), 0).output)
  end)
end)

describe("the ctx", function()
  it("carries the run id, the step name and the attempt", function()
    local seen
    local r = sl.run(pipe("p", step("look", function(_, ctx) seen = { ctx.run_id, ctx.step, ctx.attempt } end)))
    assert.same({ r.run_id, "look", 1 }, seen)
  end)

  it("shares ctx.state along a pipeline and discards the writes of a failed step", function()
    local p = pipe("p",
      step("a", function(_, ctx) ctx.state.n = 1 end),
      step("b", function(_, ctx) ctx.state.n = ctx.state.n + 1 end))
    local got
    local r = sl.run(pipe("outer", p, step("c", function(_, ctx) got = ctx.state.n end)))
    assert.equal("completed", r.status)
    assert.equal(2, got)

    local after
    sl.kind("core_try", function(s, input, ctx)
      pcall(ctx.run, ctx, s.child, input)
      return ctx:run(s.after, input)
    end)
    local failing = step("f", function(_, ctx) ctx.state.n = 99; error("no") end)
    sl.run(pipe("q",
      step("init", function(_, ctx) ctx.state.n = 1 end),
      sl.step{ kind = "core_try", name = "try", child = failing, after = step("read", function(_, ctx) after = ctx.state.n end) }))
    assert.equal(1, after)
  end)

  it("raises a clear error when used after its step ended", function()
    local kept
    sl.run(pipe("p", step("keep", function(_, ctx) kept = ctx end)))
    local ok, e = pcall(kept.sleep, kept, 0)
    assert.is_false(ok)
    assert.matches("belongs to a step execution that has ended", e, 1, true)
  end)

  it("lets step code use coroutines of its own", function()
    local r = sl.run(pipe("p", step("gen", function(_, ctx)
      local co = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end)
      ctx:sleep(0)
      return co() + co() + co()
    end)))
    assert.equal(6, r.output)
  end)

  it("fails a step that yields its own coroutine, with a message saying so", function()
    local r = sl.run(pipe("p", step("y", function() coroutine.yield(1) end)))
    assert.equal("failed", r.status)
    assert.matches("yielded outside of an engine wait", r.error.message, 1, true)
  end)

  it("refuses to wait inside a coroutine the step created", function()
    local r = sl.run(pipe("p", step("w", function(_, ctx)
      local co = coroutine.wrap(function() ctx:sleep(0) end)
      co()
    end)))
    assert.equal("failed", r.status)
    assert.matches("cannot wait inside a coroutine the step created", r.error.message, 1, true)
  end)
end)

describe("the scheduler", function()
  it("suspends only the sleeping step: a shorter sleep started later finishes first", function()
    local order = {}
    local slow = step("slow", function(_, ctx) ctx:sleep(0.05); order[#order + 1] = "slow" end)
    local fast = step("fast", function(_, ctx) ctx:sleep(0.01); order[#order + 1] = "fast" end)
    sl.kind("core_both", function(s, input, ctx)
      return ctx:await{ ctx:spawn(s.a, input), ctx:spawn(s.b, input) }
    end)
    local r = sl.run(sl.step{ kind = "core_both", name = "both", a = slow, b = fast })
    assert.equal("completed", r.status)
    assert.same({ "fast", "slow" }, order)
  end)

  it("returns awaited outputs in spawn order, whatever order they finish in", function()
    local delay = step("d", function(x, ctx) ctx:sleep(x / 1000); return x end)
    sl.kind("core_fan", function(s, input, ctx)
      local ts = {}
      for i, v in ipairs(input) do ts[i] = ctx:spawn(s.child, v) end
      return ctx:await(ts)
    end)
    local r = sl.run(sl.step{ kind = "core_fan", name = "fan", child = delay }, { 30, 10, 20, 0 })
    assert.same({ 30, 10, 20, 0 }, r.output)
  end)

  it("raises a spawned task's failure in the awaiting step", function()
    local bad = step("bad", function(_, ctx) ctx:sleep(0.001); error("child broke") end)
    local caught
    sl.kind("core_catch", function(s, input, ctx)
      local t = ctx:spawn(s.child, input)
      local ok, e = pcall(ctx.await, ctx, t)
      caught = e
      return ok
    end)
    local r = sl.run(sl.step{ kind = "core_catch", name = "c", child = bad })
    assert.equal("completed", r.status)
    assert.equal("child broke", caught.message)
    assert.equal("bad", caught.step)
  end)

  it("settles every task with ctx:settle", function()
    local ok_s = step("ok", function() return 1 end)
    local bad = step("bad", function() error("no") end)
    sl.kind("core_settle", function(s, input, ctx)
      return ctx:settle{ ctx:spawn(s.a, input), ctx:spawn(s.b, input) }
    end)
    local r = sl.run(sl.step{ kind = "core_settle", name = "s", a = ok_s, b = bad })
    assert.equal(true, r.output[1].ok)
    assert.equal(1, r.output[1].output)
    assert.equal(false, r.output[2].ok)
    assert.equal("no", r.output[2].error.message)
  end)

  it("wakes ctx:await_any at the first task to end, without raising its failure", function()
    local delay = step("d", function(x, ctx) ctx:sleep(x / 1000); if x == 10 then error("ten") end; return x end)
    local seen = {}
    sl.kind("core_any", function(s, input, ctx)
      local ts = {}
      for i, v in ipairs(input) do ts[i] = ctx:spawn(s.child, v) end
      local first = ctx:await_any(ts)
      seen[#seen + 1] = first
      local r = ctx:settle(ts)
      return r[first].ok
    end)
    local r = sl.run(sl.step{ kind = "core_any", name = "any", child = delay }, { 30, 10, 20 })
    assert.same({ 2 }, seen)
    assert.is_false(r.output)
  end)

  it("cancels a spawned task, running its to-be-closed variables, and leaves nothing running", function()
    local closed, finished = false, false
    local sleeper = step("sleeper", function(_, ctx)
      local guard <close> = setmetatable({}, { __close = function() closed = true end })
      ctx:sleep(10)
      finished = true
    end)
    sl.kind("core_cancel", function(s, input, ctx)
      local t = ctx:spawn(s.child, input)
      ctx:sleep(0.001)
      ctx:cancel(t)
      local ok, e = pcall(ctx.await, ctx, t)
      return e.kind
    end)
    local r = sl.run(sl.step{ kind = "core_cancel", name = "c", child = sleeper })
    assert.equal("cancelled", r.output)
    assert.is_true(closed)
    assert.is_false(finished)
    assert.equal(0, sl.poll())
    local stats = require("sluice.core").default_engine():stats()
    assert.equal(0, stats.live_tasks)
  end)

  it("cancels the tasks a step leaves running when it ends", function()
    local closed = 0
    local sleeper = step("sleeper", function(_, ctx)
      local guard <close> = setmetatable({}, { __close = function() closed = closed + 1 end })
      ctx:sleep(10)
    end)
    sl.kind("core_leave", function(s, input, ctx)
      ctx:spawn(s.child, input); ctx:spawn(s.child, input)
      return "left"
    end)
    local r = sl.run(sl.step{ kind = "core_leave", name = "l", child = sleeper })
    assert.equal("left", r.output)
    assert.equal(2, closed)
    local cancelled = 0
    for _, s in ipairs(r.steps) do if s.status == "cancelled" then cancelled = cancelled + 1 end end
    assert.equal(2, cancelled)
  end)
end)

describe("the policy table", function()
  it("lets sl.kind add a kind and an engine replace a built-in one", function()
    local eng = sl.engine()
    eng:kind("step", function(s, input) return "replaced:" .. s.name end)
    local p = pipe("p", step("a", function() return "original" end))
    assert.equal("replaced:a", eng:run(p).output)
    assert.equal("original", sl.run(p).output)
  end)

  it("keeps the policy table a run started with until it ends", function()
    local eng = sl.engine()
    local slow = pipe("p", step("wait", function(_, ctx) ctx:sleep(0.01); return "x" end), step("tag", function(v) return v end))
    local run = eng:start(slow)
    eng:kind("step", function(s, input) return "new" end)
    local r = run:wait()
    assert.equal("x", r.output)
    assert.equal("new", eng:run(slow).output)
  end)

  it("fails a step whose kind is not registered, naming it", function()
    local ok, e = pcall(sl.run, sl.step{ kind = "core_missing", name = "m" })
    assert.is_false(ok)
    assert.matches("step 'm' defined at .-core_spec.lua:%d+ has kind 'core_missing', which is not registered", e)
  end)

  it("fails a handler that raises, naming the step", function()
    sl.kind("core_raise", function() error("handler broke") end)
    local r = sl.run(sl.step{ kind = "core_raise", name = "h" })
    assert.equal("failed", r.status)
    assert.same({ "h", "handler broke" }, { r.error.step, r.error.message })
  end)
end)

describe("sl.start and sl.poll", function()
  it("let a host drive runs from its own loop", function()
    local p = pipe("p", step("nap", function(_, ctx) ctx:sleep(0.005); return "done" end))
    local run = sl.start(p)
    assert.is_string(run.id)
    assert.equal("running", run:status())
    assert.is_nil(run:result())
    while sl.poll() > 0 do end
    assert.equal("completed", run:status())
    assert.equal("done", run:result().output)
    assert.equal(run.id, run:result().run_id)
  end)

  it("runs several runs at once on one engine", function()
    local p = pipe("p", step("nap", function(x, ctx) ctx:sleep(0.002); return x end))
    local runs = {}
    for i = 1, 50 do runs[i] = sl.start(p, i) end
    while sl.poll() > 0 do end
    for i = 1, 50 do assert.equal(i, runs[i]:result().output) end
  end)

  it("count no run whose start failed", function()
    local dir = os.tmpname()
    os.remove(dir)
    local eng = sl.engine{ store = dir .. ".db" }
    eng:load(require("helpers").script([[
      local sl = require "sluice"
      return sl.pipeline{ name = "p", sl.step{ name = "s", run = function(x) return x end } }
    ]]))
    local ok, err = pcall(eng.start, eng, "p", { f = print })
    assert.is_false(ok)
    assert.matches("the run's input cannot be stored", err, 1, true)
    assert.equal(0, eng:active())
    assert.equal(0, eng:poll())
    os.remove(dir .. ".db")
  end)

  it("cancels a run from the host", function()
    local run = sl.start(pipe("p", step("long", function(_, ctx) ctx:sleep(10) end)))
    run:cancel("stop")
    assert.equal("cancelled", run:status())
    assert.equal("stop", run:result().error.message)
  end)
end)

describe("the lifecycle's records", function()
  it("keep a run's step names after the steps themselves are collected", function()
    local r
    do
      local steps = {}
      for i = 1, 50 do steps[i] = sl.step{ name = "gone" .. i, run = function(x) return x + 1 end } end
      r = sl.run(sl.pipeline{ name = "transient", table.unpack(steps) }, 0)
    end
    for _ = 1, 3 do collectgarbage() end
    -- The history is turned into tables only now, from the records.
    assert.equal(51, #r.steps)
    assert.equal("transient", r.steps[1].name)
    assert.equal("gone50", r.steps[51].name)
    assert.equal("step", r.steps[51].kind)
  end)

  it("time a child from when it starts, not from when its sibling ended", function()
    sl.kind("busy_between", function(s, input, ctx)
      ctx:run(s.a, input)
      local t0 = sl.now()
      while sl.now() - t0 < 0.05 do end   -- the kind's own work
      return ctx:run(s.b, input)
    end)
    local quick = sl.step{ name = "quick", run = function(x) return x end }
    local r = sl.run(sl.step{ kind = "busy_between", name = "k", a = quick, b = quick }, 1)
    assert.equal("completed", r.status)
    assert.is_true(r.steps[1].ms >= 50)
    assert.is_true(r.steps[3].ms < 25, "the second child took " .. r.steps[3].ms .. " ms")
  end)

  it("gives the task pool's memory back once a burst is over", function()
    local wait = sl.step{ name = "w", run = function(x, ctx) ctx:sleep(0.001); return x end }
    local items = {}
    for i = 1, 6000 do items[i] = i end
    local r = sl.run(sl.map{ name = "burst", body = wait }, items)
    assert.equal("completed", r.status)
    local stats = require("sluice.core").default_engine():stats()
    assert.equal(0, stats.live_tasks)
    -- It keeps a few thousand for the next ordinary run, not the burst.
    assert.is_true(stats.pooled_tasks < 5000, stats.pooled_tasks .. " tasks kept")
  end)
end)

describe("loading", function()
  it("does not load libcurl until a step makes a request", function()
    local out = io.popen([[lua5.4 -e '
      local sl = require "sluice"
      sl.run(sl.pipeline{ name = "p", sl.step{ name = "s", run = function(x) return x end } }, 1)
      local maps = io.open("/proc/self/maps"):read("a")
      io.write(maps:find("libcurl", 1, true) and "loaded" or "not loaded")' 2>&1]]):read("a")
    assert.equal("not loaded", out)
  end)

  it("builds a step of a kind whose module is not loaded yet", function()
    local code = [[
      local sl = require "sluice"
      assert(rawget(sl, "map") == nil, "the kinds module was loaded up front")
      local double = sl.step{ name = "d", run = function(x) return x * 2 end }
      local m = sl.step{ kind = "map", name = "m", body = double }
      local r = sl.run(m, { 1, 2, 3 })
      io.write(r.status, " ", table.concat(r.output, ","))]]
    local out = io.popen("lua5.4 -e " .. require("helpers").quote(code) .. " 2>&1"):read("a")
    assert.equal("completed 2,4,6", out)
  end)
end)

describe("run ids", function()
  it("grow strictly in the order runs start, even within a millisecond", function()
    local p = sl.pipeline{ name = "p", sl.step{ name = "s", run = function(x) return x end } }
    local last = ""
    for i = 1, 500 do
      local id = sl.run(p, i).run_id
      assert.is_true(id > last, id .. " after " .. last)
      assert.equal(26, #id)
      last = id
    end
  end)
end)
