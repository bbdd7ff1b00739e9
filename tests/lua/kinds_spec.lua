-- The control-flow kinds: parallel, map, loop, branch, router, dag and
-- import; how the state of concurrent branches is merged back; the errors
-- each reports, at definition time and at run time; and a custom kind.
local sl = require "sluice"
local core = require "sluice.core"
local h = require "helpers"

local here = debug.getinfo(1, "S").short_src

local function line() return debug.getinfo(2, "l").currentline end

local function step(name, run) return sl.step{ name = name, run = run } end

local function live_tasks() return core.default_engine():stats().live_tasks end

-- Calls f, expecting an error; returns its message.
local function err_of(f)
  local ok, e = pcall(f)
  assert.is_false(ok, "expected an error")
  return tostring(e)
end

-- A step that counts how many of its executions run at once: it enters,
-- sleeps, and leaves, returning its input.
local function tracker(seconds)
  local t = { now = 0, peak = 0, runs = 0 }
  t.step = step("work", function(x, ctx)
    t.now = t.now + 1
    t.runs = t.runs + 1
    if t.now > t.peak then t.peak = t.now end
    ctx:sleep(seconds or 0.002)
    t.now = t.now - 1
    return x
  end)
  return t
end

-- A step that would sleep for ten seconds, recording whether it was
-- closed (cancelled) or finished.
local function sleeper(name)
  local s = { closed = false, finished = false }
  s.step = step(name, function(_, ctx)
    local guard <close> = setmetatable({}, { __close = function() s.closed = true end })
    ctx:sleep(10)
    s.finished = true
  end)
  return s
end

-- The history entries of a result with a given name.
local function entries(r, name)
  local list = {}
  for _, s in ipairs(r.steps) do if s.name == name then list[#list + 1] = s end end
  return list
end

describe("sl.parallel", function()
  it("runs every branch on the same input and returns their outputs keyed by branch", function()
    local r = sl.run(sl.parallel{ name = "p", branches = {
      double = step("double", function(x) return x * 2 end),
      square = step("square", function(x) return x * x end),
      same = step("same", function(x) return x end),
    } }, 5)
    assert.equal("completed", r.status)
    assert.same({ double = 10, square = 25, same = 5 }, r.output)
  end)

  it("runs its branches at the same time", function()
    local t = tracker()
    local r = sl.run(sl.parallel{ name = "p", branches = { a = t.step, b = t.step, c = t.step } }, 1)
    assert.equal("completed", r.status)
    assert.equal(3, t.peak)
  end)

  it("never runs more than limit branches at once, and runs them all", function()
    local t = tracker()
    local branches = {}
    for i = 1, 7 do branches["b" .. i] = t.step end
    local r = sl.run(sl.parallel{ name = "p", branches = branches, limit = 3 }, 0)
    assert.equal("completed", r.status)
    assert.equal(3, t.peak)
    assert.equal(7, t.runs)
  end)

  it("records each branch under the parallel step, keyed by its name", function()
    local r = sl.run(sl.parallel{ name = "p", branches = {
      b = step("sb", function() end), a = step("sa", function() end) } })
    local root = entries(r, "p")[1]
    local a, b = entries(r, "sa")[1], entries(r, "sb")[1]
    assert.same({ root.id, "a", 1 }, { a.parent, a.key, a.index })
    assert.same({ root.id, "b", 2 }, { b.parent, b.key, b.index })
  end)

  it("on the first failure cancels the running branches, runs their to-be-closed variables and leaves no task", function()
    local slow = sleeper("slow")
    local bad = step("bad", function(_, ctx) ctx:sleep(0.001); error(sl.error("validation", "not good")) end)
    -- The slow branch sorts first: the failure must end the wait all the same.
    local r = sl.run(sl.parallel{ name = "p", branches = { b_bad = bad, a_slow = slow.step } })
    assert.equal("failed", r.status)
    assert.equal("validation", r.error.kind)
    assert.equal("parallel 'p': branch 'b_bad' failed: not good", r.error.message)
    assert.equal("bad", r.error.step)
    assert.is_true(slow.closed)
    assert.is_false(slow.finished)
    local cancelled = entries(r, "slow")[1]
    assert.equal("cancelled", cancelled.status)
    assert.equal("cancelled because branch 'b_bad' failed", cancelled.error.message)
    assert.equal(0, live_tasks())
  end)

  it("starts no more branches once one failed under a limit", function()
    local started = {}
    local function rec(name, fail)
      return step(name, function(_, ctx)
        started[#started + 1] = name
        ctx:sleep(0.001)
        if fail then error("broke") end
      end)
    end
    local r = sl.run(sl.parallel{ name = "p", limit = 1, branches = {
      a = rec("a", true), b = rec("b"), c = rec("c") } })
    assert.equal("failed", r.status)
    assert.same({ "a" }, started)
    assert.equal(0, live_tasks())
  end)

  it("with on_failure = \"all_settled\" waits for every branch and lists every failure", function()
    local done = false
    local r = sl.run(sl.parallel{ name = "p", on_failure = "all_settled", branches = {
      a = step("a", function() error("first", 0) end),
      b = step("b", function(_, ctx) ctx:sleep(0.005); done = true; return 1 end),
      c = step("c", function(_, ctx) ctx:sleep(0.001); error("second", 0) end),
    } })
    assert.equal("failed", r.status)
    assert.is_true(done)
    assert.equal("parallel 'p': 2 of 3 branches failed: branch 'a': first; branch 'c': second",
      r.error.message)
    -- Nothing that succeeded is lost: the error carries it, for a fallback.
    assert.same({ b = 1 }, r.error.partial)
    assert.same({ "first", "second" }, { r.error.errors.a.message, r.error.errors.c.message })
  end)

  it("with on_failure = \"all_settled\" hands what succeeded to sl.fallbacks.partial()", function()
    local r = sl.run(sl.parallel{ name = "p", on_failure = "all_settled", fallback = sl.fallbacks.partial(),
      branches = { a = step("a", function() error("no", 0) end), b = step("b", function() return 2 end) } })
    assert.equal("completed", r.status)
    assert.same({ b = 2 }, r.output)
    r = sl.run(sl.map{ name = "m", on_failure = "all_settled", fallback = sl.fallbacks.partial(),
      body = step("half", function(x) if x % 2 == 0 then error("even", 0) end; return x * 10 end) },
      { 1, 2, 3 })
    assert.equal("completed", r.status)
    assert.same({ 10, sl.null, 30 }, r.output)
  end)

  it("refuses a parallel with no branches, naming it and the line", function()
    local l
    local msg = err_of(function() l = line() + 1
      sl.parallel{ name = "p", branches = {} }
    end)
    assert.equal(here .. ":" .. l .. ": parallel 'p' has no branches", msg)
    assert.matches(": parallel 'q' needs branches", err_of(function() sl.parallel{ name = "q" } end), 1, true)
  end)

  it("refuses a branch that is not a step, and branches not keyed by name", function()
    local l
    local msg = err_of(function() l = line() + 1
      sl.parallel{ name = "p", branches = { a = {} } }
    end)
    assert.equal(here .. ":" .. l .. ": parallel 'p': branch 'a' must be a step, got a plain table", msg)
    assert.matches("parallel 'p': branches must be keyed by name, got key 1",
      err_of(function() sl.parallel{ name = "p", branches = { step("x", print) } } end), 1, true)
  end)

  it("refuses bad limit, on_failure and merge options", function()
    local b = { a = step("a", print) }
    assert.matches("parallel 'p': option 'limit' must be a non-negative integer (0 for no limit), got number",
      err_of(function() sl.parallel{ name = "p", branches = b, limit = 1.5 } end), 1, true)
    assert.matches([[parallel 'p': option 'on_failure' must be "fail_fast" or "all_settled", got "fast"]],
      err_of(function() sl.parallel{ name = "p", branches = b, on_failure = "fast" } end), 1, true)
    assert.matches([[parallel 'p': option 'merge' must be "error_on_conflict", "last_wins" or a function]],
      err_of(function() sl.parallel{ name = "p", branches = b, merge = "first_wins" } end), 1, true)
  end)
end)

describe("merging the state of concurrent branches", function()
  -- Runs construct after a step that sets ctx.state to init, and returns
  -- the result and the state the next step saw.
  local function run_with_state(construct, init, input)
    local seen
    local p = sl.pipeline{ name = "outer",
      step("init", function(x, ctx) for k, v in pairs(init) do ctx.state[k] = v end; return x end),
      construct,
      step("after", function(_, ctx) seen = ctx.state end) }
    local r = sl.run(p, input)
    return r, seen
  end

  local function setter(name, key, value)
    return step(name, function(_, ctx) ctx.state[key] = value end)
  end

  it("brings back what each branch changed", function()
    local r, st = run_with_state(sl.parallel{ name = "p", branches = {
      a = setter("a", "x", 1), b = setter("b", "y", 2) } }, { keep = true })
    assert.equal("completed", r.status)
    assert.same({ keep = true, x = 1, y = 2 }, st)
  end)

  it("gives every branch its own copy, taken from the state before the parallel", function()
    local seen = {}
    local function look(name)
      return step(name, function(_, ctx)
        seen[name] = ctx.state.n
        ctx.state.n = name
        ctx:sleep(0.001)
        seen[name .. "_after"] = ctx.state.n
      end)
    end
    local r = run_with_state(sl.parallel{ name = "p", merge = "last_wins",
      branches = { a = look("a"), b = look("b") } }, { n = 0 })
    assert.equal("completed", r.status)
    assert.same({ a = 0, b = 0, a_after = "a", b_after = "b" }, seen)
  end)

  it("fails on two branches setting one key to different values, naming both and the key", function()
    local r = run_with_state(sl.parallel{ name = "p", branches = {
      a = setter("a", "x", 1), b = setter("b", "x", 2) } }, {})
    assert.equal("failed", r.status)
    assert.matches("parallel 'p' %(defined at .-kinds_spec.lua:%d+%): branches 'a' and 'b' "
      .. "both changed state key 'x' to different values", r.error.message)
  end)

  it("does not call equal values a conflict, comparing tables by content", function()
    local function set_t(name)
      return step(name, function(_, ctx) ctx.state.cfg = { depth = 2, tags = { "x" } } end)
    end
    local r, st = run_with_state(sl.parallel{ name = "p", branches = { a = set_t("a"), b = set_t("b") } }, {})
    assert.equal("completed", r.status)
    assert.same({ cfg = { depth = 2, tags = { "x" } } }, st)
  end)

  it("sees a change deep inside a table and a removed key", function()
    local r, st = run_with_state(sl.parallel{ name = "p", branches = {
      a = step("a", function(_, ctx) ctx.state.cfg.depth = 3 end),
      b = step("b", function(_, ctx) ctx.state.gone = nil end),
      c = step("c", function(_, ctx) local _ = ctx.state.cfg end) } },
      { cfg = { depth = 1 }, gone = "x" })
    assert.equal("completed", r.status)
    assert.same({ cfg = { depth = 3 } }, st)
  end)

  it("with merge = \"last_wins\" lets the branch that finished last win a key", function()
    local function late(name, key, value, nap)
      return step(name, function(_, ctx) ctx:sleep(nap); ctx.state[key] = value end)
    end
    local r, st = run_with_state(sl.parallel{ name = "p", merge = "last_wins", branches = {
      a = late("a", "x", "from a", 0.02), b = late("b", "x", "from b", 0), c = setter("c", "y", 1) } }, {})
    assert.equal("completed", r.status)
    assert.same({ x = "from a", y = 1 }, st)
    r, st = run_with_state(sl.parallel{ name = "p", merge = "last_wins", branches = {
      a = late("a", "x", "from a", 0), b = late("b", "x", "from b", 0.02) } }, {})
    assert.same({ x = "from b" }, st)
  end)

  it("with a merge function passes the state and the states of the branches that touched it", function()
    local got
    local r, st = run_with_state(sl.parallel{ name = "p", branches = {
        a = setter("a", "n", 1), b = setter("b", "n", 2), quiet = step("quiet", function() end) },
      merge = function(state, branch_states)
        got = {}
        for k in pairs(branch_states) do got[#got + 1] = k end
        table.sort(got)
        return { n = state.n + branch_states.a.n + branch_states.b.n }
      end }, { n = 10 })
    assert.equal("completed", r.status)
    assert.same({ "a", "b" }, got)
    assert.same({ n = 13 }, st)
  end)

  it("never merges the changes of a failed branch", function()
    local after
    sl.kind("kinds_try", function(s, input, ctx)
      local _ = ctx.state
      pcall(ctx.run, ctx, s.child, input)
      return ctx:run(s.after, input)
    end)
    local p = sl.parallel{ name = "p", on_failure = "all_settled", branches = {
      ok = setter("ok", "x", 1),
      bad = step("bad", function(_, ctx) ctx.state.y = 1; error("no") end) } }
    local r = sl.run(sl.step{ kind = "kinds_try", name = "try", child = p,
      after = step("read", function(_, ctx) after = ctx.state end) })
    assert.equal("completed", r.status)
    assert.same({}, after)
  end)

  it("merges map items and router routes too, naming items by position", function()
    local r, st = run_with_state(sl.map{ name = "m",
      body = step("put", function(x, ctx) ctx.state["k" .. x] = x end) }, {}, { 1, 2, 3 })
    assert.equal("completed", r.status)
    assert.same({ k1 = 1, k2 = 2, k3 = 3 }, st)

    r = run_with_state(sl.map{ name = "m",
      body = step("put", function(x, ctx) ctx.state.k = x end) }, {}, { 1, 2 })
    assert.equal("failed", r.status)
    assert.matches("map 'm' (defined at " .. here, r.error.message, 1, true)
    assert.matches("items 1 and 2 both changed state key 'k'", r.error.message, 1, true)

    r, st = run_with_state(sl.router{ name = "r", choose = function() return { "a", "b" } end,
      routes = { a = setter("a", "x", 1), b = setter("b", "y", 2) } }, {})
    assert.equal("completed", r.status)
    assert.same({ x = 1, y = 2 }, st)
  end)
end)

describe("sl.map", function()
  it("returns the body's outputs in item order, whatever order they finish in", function()
    local body = step("wait", function(x, ctx) ctx:sleep(x / 1000); return x * 10 end)
    local r = sl.run(sl.map{ name = "m", over = function(input) return input.items end, body = body },
      { items = { 8, 1, 5, 0, 3 } })
    assert.equal("completed", r.status)
    assert.same({ 80, 10, 50, 0, 30 }, r.output)
  end)

  it("passes over the input and the ctx, and maps the input itself when it has no over", function()
    local seen
    local m = sl.map{ name = "m", body = step("id", function(x) return x end),
      over = function(input, ctx) seen = ctx.step; return { input, input } end }
    assert.same({ "a", "a" }, sl.run(m, "a").output)
    assert.equal("m", seen)
    assert.same({ 1, 2 }, sl.run(sl.map{ name = "m2", body = step("id", function(x) return x end) }, { 1, 2 }).output)
  end)

  it("keeps one entry per item, null for an item with no output", function()
    local r = sl.run(sl.map{ name = "m", body = step("odd", function(x) if x % 2 == 1 then return x end end) },
      { 1, 2, 3, 4 })
    assert.equal("completed", r.status)
    assert.equal(4, #r.output)
    assert.equal(sl.null, r.output[4])
    assert.equal("[1,null,3,null]", sl.encode(r.output))
  end)

  it("gives an empty list for no items, encoded as []", function()
    local r = sl.run(sl.map{ name = "m", body = step("x", function() end) }, {})
    assert.equal("completed", r.status)
    assert.equal("[]", sl.encode(r.output))
  end)

  it("never runs more than limit items at once, and runs them all", function()
    local t = tracker()
    local items = {}
    for i = 1, 20 do items[i] = i end
    local r = sl.run(sl.map{ name = "m", body = t.step, limit = 4 }, items)
    assert.equal("completed", r.status)
    assert.same(items, r.output)
    assert.equal(4, t.peak)
    assert.equal(20, t.runs)
  end)

  it("runs every item at once with limit = 0, as with no limit", function()
    local t = tracker()
    local r = sl.run(sl.map{ name = "m", body = t.step, limit = 0 }, { 1, 2, 3, 4, 5 })
    assert.equal("completed", r.status)
    assert.equal(5, t.peak)
  end)

  it("records each item under the map, keyed by its position", function()
    local r = sl.run(sl.map{ name = "m", body = step("item", function(x) return x end) }, { "x", "y", "z" })
    local root = entries(r, "m")[1]
    local items = entries(r, "item")
    assert.equal(3, #items)
    for i, s in ipairs(items) do
      assert.same({ root.id, tostring(i), i }, { s.parent, s.key, s.index })
    end
  end)

  it("fails naming the item that failed, and cancels the others", function()
    local slow = sleeper("slow")
    local body = sl.branch{ name = "which", on = function(x) return x end,
      cases = { slow = slow.step, bad = step("bad", function() error("item broke") end) } }
    local r = sl.run(sl.map{ name = "m", body = body }, { "slow", "bad", "slow" })
    assert.equal("failed", r.status)
    assert.equal("map 'm': item 2 failed: item broke", r.error.message)
    assert.equal("bad", r.error.step)
    assert.matches("kinds_spec.lua:%d+$", r.error.where)
    local items = entries(r, "which")
    assert.equal(2, #items)             -- item 3 never started
    assert.same({ "1", "cancelled", "cancelled because item 2 failed" },
      { items[1].key, items[1].status, items[1].error.message })
    assert.is_true(slow.closed)
    assert.is_false(slow.finished)
    assert.equal(0, live_tasks())
  end)

  it("fails when over returns something that is not a list, naming the map and its line", function()
    local l
    local m = sl.map{ name = "m", over = function() return { a = 1 } end, body = step("x", print) }; l = line()
    local r = sl.run(m)
    assert.equal("failed", r.status)
    assert.equal("error", r.error.kind)
    assert.equal("m", r.error.step)
    assert.equal(("map 'm' (defined at %s:%d): over must return a list (a table with keys 1..n), "
      .. "got a table with key 'a', which is not a list index"):format(here, l), r.error.message)
    r = sl.run(sl.map{ name = "m", over = function() return "abc" end, body = step("x", print) })
    assert.matches("over must return a list (a table with keys 1..n), got a string", r.error.message, 1, true)
    r = sl.run(sl.map{ name = "m", over = function() return { 1, nil, 3 } end, body = step("x", print) })
    assert.matches("got a list with holes", r.error.message, 1, true)
  end)

  it("reports an error raised by over, naming the map and where it was raised", function()
    local l
    local r = sl.run(sl.map{ name = "m", body = step("x", print), over = function()
      l = line(); error("no items")
    end })
    assert.equal("failed", r.status)
    assert.matches("^map 'm' %(defined at .-kinds_spec.lua:%d+%): over raised: no items$", r.error.message)
    assert.equal(here .. ":" .. l, r.error.where)
  end)

  it("refuses a map without a body, or with a body that is not a step", function()
    local l
    local msg = err_of(function() l = line() + 1
      sl.map{ name = "m", over = print }
    end)
    assert.equal(here .. ":" .. l .. ": map 'm' needs a body (body = step)", msg)
    assert.matches("map 'm': option 'body' must be a step", err_of(function()
      sl.map{ name = "m", body = print } end), 1, true)
  end)
end)

describe("sl.loop", function()
  it("feeds the body's output back in until stop_when is true, counting from 1", function()
    local calls = {}
    local r = sl.run(sl.loop{ name = "l", body = step("inc", function(x) return x + 1 end),
      stop_when = function(out, ctx, i) calls[#calls + 1] = { out, ctx.step, i }; return out >= 3 end }, 0)
    assert.equal("completed", r.status)
    assert.equal(3, r.output)
    assert.same({ { 1, "l", 1 }, { 2, "l", 2 }, { 3, "l", 3 } }, calls)
    local its = entries(r, "inc")
    assert.same({ "1", "2", "3" }, { its[1].key, its[2].key, its[3].key })
  end)

  it("fails when max is reached without stop_when saying so", function()
    local r = sl.run(sl.loop{ name = "l", max = 4, body = step("inc", function(x) return x + 1 end),
      stop_when = function() return false end }, 0)
    assert.equal("failed", r.status)
    assert.equal("error", r.error.kind)
    assert.matches("^loop 'l' %(defined at .-kinds_spec.lua:%d+%): reached max = 4 iterations "
      .. "without stop_when returning true", r.error.message)
    assert.equal(4, #entries(r, "inc"))
  end)

  it("stops after 10 iterations by default", function()
    local r = sl.run(sl.loop{ name = "l", body = step("inc", function(x) return x + 1 end),
      stop_when = function() return false end }, 0)
    assert.equal("failed", r.status)
    assert.equal(10, #entries(r, "inc"))
  end)

  it("returns the last output at max with on_max = \"return\", and runs max times without stop_when", function()
    local inc = step("inc", function(x) return x + 1 end)
    assert.equal(5, sl.run(sl.loop{ name = "l", max = 5, on_max = "return", body = inc,
      stop_when = function() return false end }, 0).output)
    assert.equal(7, sl.run(sl.loop{ name = "l", max = 7, body = inc }, 0).output)
  end)

  it("refuses a loop with neither stop_when nor max", function()
    local l
    local msg = err_of(function() l = line() + 1
      sl.loop{ name = "forever", body = step("x", print) }
    end)
    assert.equal(here .. ":" .. l .. ": loop 'forever' needs stop_when or max (it would never stop)", msg)
  end)
end)

describe("sl.branch", function()
  local cases = { a = step("a", function(x) return "a:" .. x end), b = step("b", function(x) return "b:" .. x end) }

  it("runs the case on chooses, on the same input", function()
    local r = sl.run(sl.branch{ name = "br", on = function(x) return x:sub(1, 1) end, cases = cases }, "bee")
    assert.equal("b:bee", r.output)
    assert.equal("b", entries(r, "b")[1].key)
  end)

  it("runs the default for an unknown key", function()
    local r = sl.run(sl.branch{ name = "br", on = function() return "zz" end, cases = cases,
      default = step("d", function(x) return "default:" .. x end) }, "x")
    assert.equal("default:x", r.output)
  end)

  it("without a default fails on an unknown key, listing the valid ones", function()
    local r = sl.run(sl.branch{ name = "br", on = function() return "zz" end, cases = cases }, "x")
    assert.equal("failed", r.status)
    assert.matches("^branch 'br' %(defined at .-kinds_spec.lua:%d+%): on returned 'zz', which is not "
      .. "one of its cases %(a, b%) and it has no default$", r.error.message)
  end)

  it("refuses an on that is not a function, and a case that is not a step", function()
    local l
    local msg = err_of(function() l = line() + 1
      sl.branch{ name = "br", on = "a", cases = cases }
    end)
    assert.equal(here .. ":" .. l .. ": branch 'br': option 'on' must be a function, got string", msg)
    msg = err_of(function() l = line() + 1
      sl.branch{ name = "br", on = print, cases = { a = "step a" } }
    end)
    assert.equal(here .. ":" .. l .. ": branch 'br': case 'a' must be a step, got string", msg)
    assert.matches("branch 'br' needs an on function", err_of(function() sl.branch{ name = "br", cases = cases } end), 1, true)
  end)
end)

describe("sl.router", function()
  local routes = {
    search = step("search", function(q, ctx) ctx:sleep(0.002); return "found " .. q end),
    math = step("math", function(q) return #q end),
    chat = step("chat", function() return "hi" end),
  }

  it("runs the chosen routes concurrently, returning their outputs keyed by route", function()
    local t = tracker()
    local r = sl.run(sl.router{ name = "r", choose = function() return { "search", "math" } end,
      routes = routes }, "cats")
    assert.equal("completed", r.status)
    assert.same({ search = "found cats", math = 4 }, r.output)

    r = sl.run(sl.router{ name = "r", choose = function() return { "x", "y" } end,
      routes = { x = t.step, y = t.step } })
    assert.equal(2, t.peak)
  end)

  it("gives {} when no route is chosen", function()
    local r = sl.run(sl.router{ name = "r", choose = function() return {} end, routes = routes })
    assert.equal("completed", r.status)
    assert.equal("{}", sl.encode(r.output))
  end)

  it("fails on an unknown route instead of dropping it", function()
    local r = sl.run(sl.router{ name = "r", choose = function() return { "math", "weather" } end, routes = routes }, "q")
    assert.equal("failed", r.status)
    assert.matches("^router 'r' %(defined at .-kinds_spec.lua:%d+%): choose returned 'weather', "
      .. "which is not one of its routes %(chat, math, search%)$", r.error.message)
  end)

  it("reports an error raised by choose, naming the router", function()
    local r = sl.run(sl.router{ name = "r", routes = routes, choose = function() error({ kind = "quota", message = "no budget" }) end })
    assert.equal("failed", r.status)
    assert.equal("quota", r.error.kind)
    assert.matches("router 'r' (defined at " .. here, r.error.message, 1, true)
    assert.matches("choose raised: no budget", r.error.message, 1, true)
  end)

  it("refuses a route that is not a step", function()
    local l
    local msg = err_of(function() l = line() + 1
      sl.router{ name = "r", choose = print, routes = { a = print } }
    end)
    assert.equal(here .. ":" .. l .. ": router 'r': route 'a' must be a step, got function", msg)
  end)
end)

describe("sl.dag", function()
  it("runs each node after its dependencies, feeding it their outputs by name", function()
    local order = {}
    local function node(name, f)
      return step(name, function(x, ctx) ctx:sleep(0.001); order[#order + 1] = name; return f(x) end)
    end
    local r = sl.run(sl.dag{ name = "d",
      nodes = {
        fetch = node("fetch", function(x) return x * 2 end),
        left = node("left", function(x) return x.fetch + 1 end),
        right = node("right", function(x) return x.fetch + 2 end),
        join = node("join", function(x) return x.left * x.right end),
      },
      after = { left = { "fetch" }, right = "fetch", join = { "left", "right" } } }, 3)
    assert.equal("completed", r.status)
    assert.same({ fetch = 6, left = 7, right = 8, join = 56 }, r.output)
    assert.equal("fetch", order[1])
    assert.equal("join", order[4])
    assert.equal("join", entries(r, "join")[1].key)
  end)

  it("never runs more than limit nodes at once", function()
    local t = tracker()
    local nodes = {}
    for i = 1, 6 do nodes["n" .. i] = t.step end
    local r = sl.run(sl.dag{ name = "d", nodes = nodes, limit = 2 }, 1)
    assert.equal("completed", r.status)
    assert.equal(2, t.peak)
    assert.equal(6, t.runs)
  end)

  it("on a failing node cancels the running ones and starts nothing after it", function()
    local slow = sleeper("slow")
    local later = false
    local r = sl.run(sl.dag{ name = "d",
      nodes = { slow = slow.step,
        bad = step("bad", function(_, ctx) ctx:sleep(0.001); error("node broke", 0) end),
        next = step("next", function() later = true end) },
      after = { next = { "bad" } } })
    assert.equal("failed", r.status)
    assert.equal("dag 'd': node 'bad' failed: node broke", r.error.message)
    assert.equal("cancelled because node 'bad' failed", entries(r, "slow")[1].error.message)
    assert.is_true(slow.closed)
    assert.is_false(later)
    assert.equal(0, live_tasks())
  end)

  it("refuses a dependency cycle, naming the nodes in it", function()
    local l
    local msg = err_of(function() l = line() + 1
      sl.dag{ name = "d", nodes = { a = step("a", print), b = step("b", print), c = step("c", print), z = step("z", print) },
        after = { b = { "a" }, c = { "b" }, a = { "c" }, z = { "a" } } }
    end)
    assert.equal(here .. ":" .. l .. ": dag 'd' has a dependency cycle: a -> b -> c -> a "
      .. "(each node comes after the one before it)", msg)
  end)

  it("refuses an unknown dependency", function()
    local msg = err_of(function()
      sl.dag{ name = "d", nodes = { a = step("a", print) }, after = { a = { "ghost" } } }
    end)
    assert.matches("dag 'd': node 'a' comes after 'ghost', which is not one of its nodes (a)", msg, 1, true)
    msg = err_of(function()
      sl.dag{ name = "d", nodes = { a = step("a", print) }, after = { b = { "a" } } }
    end)
    assert.matches("dag 'd': after names 'b', which is not one of its nodes (a)", msg, 1, true)
  end)
end)

describe("nesting", function()
  it("runs a map inside a parallel inside a loop, and records the tree", function()
    local inner = sl.parallel{ name = "both", branches = {
      sq = sl.map{ name = "sq", limit = 2, body = step("square", function(x, ctx) ctx:sleep(0.001); return x * x end) },
      sum = step("sum", function(xs) local s = 0; for _, x in ipairs(xs) do s = s + x end; return s end),
    } }
    local loop = sl.loop{ name = "again", max = 2,
      body = sl.pipeline{ name = "round", inner, step("next", function(o)
        local list = {}
        for i, x in ipairs(o.sq) do list[i] = x + o.sum end
        return list
      end) } }
    local r = sl.run(loop, { 1, 2 })
    assert.equal("completed", r.status)
    -- Round 1: squares {1, 4}, sum 3 -> {4, 7}; round 2: {16, 49}, sum 11 -> {27, 60}.
    assert.same({ 27, 60 }, r.output)
    local by_id = {}
    for _, s in ipairs(r.steps) do by_id[s.id] = s end
    local squares = entries(r, "square")
    assert.equal(4, #squares)
    local path = {}
    local s = squares[4]
    while s do
      path[#path + 1] = s.name .. (s.key and ("[" .. s.key .. "]") or "")
      s = s.parent and by_id[s.parent]
    end
    assert.same({ "square[2]", "sq[sq]", "both", "round[2]", "again" }, path)
  end)
end)

describe("sl.import", function()
  local dir

  before_each(function() dir = h.tmpdir() end)
  after_each(function() h.rm(dir) end)

  local lib = [[
local sl = require "sluice"
local function times(n)
  return sl.pipeline{ name = "times" .. n, sl.step{ name = "mul", run = function(x) return x * n end } }
end
return { double = times(2), triple = times(3) }
]]

  it("runs a pipeline from another file, found relative to the importing one", function()
    h.script(lib, dir, "lib.lua")
    assert(os.execute("mkdir -p " .. h.quote(dir .. "/sub")))
    local main = h.script([[
local sl = require "sluice"
return sl.pipeline{ name = "main",
  sl.import{ name = "dbl", file = "../lib.lua", pipeline = "double" },
  sl.import{ name = "tpl", file = "../lib.lua", pipeline = "triple" } }
]], dir .. "/sub", "main.lua")
    local code, out, err = h.cli{ "run", main, "--input", "5" }
    assert.equal("", err)
    assert.equal("30\n", out)
    assert.equal(0, code)
    local r = sl.run(dofile(main), 1)
    assert.equal(6, r.output)
    local imp = entries(r, "dbl")[1]
    assert.equal("import", imp.kind)
    assert.equal(imp.id, entries(r, "times2")[1].parent)
  end)

  it("tells an engine loading the importing file that it depends on the imported one", function()
    local libpath = h.script(lib, dir, "lib.lua")
    local main = h.script([[
local sl = require "sluice"
return sl.pipeline{ name = "main", sl.import{ name = "dbl", file = "lib.lua", pipeline = "double" } }
]], dir, "main.lua")
    local eng = sl.engine()
    eng:load(main)
    local files = {}
    for _, f in ipairs(eng:files()) do files[f] = true end
    assert.is_true(files[main])
    assert.is_true(files[libpath])
  end)

  it("reports a missing file at load time, naming the path and the importing line", function()
    local main = h.script([[
local sl = require "sluice"
return sl.pipeline{ name = "main",
  sl.import{ name = "lib", file = "nope.lua" } }
]], dir, "main.lua")
    local code, out, err = h.cli{ "run", main }
    assert.equal(2, code)
    assert.equal("", out)
    assert.matches(main .. ":3: import 'lib': cannot open '" .. dir .. "/nope.lua': No such file or directory",
      err, 1, true)
  end)

  it("reports a file without the pipeline asked for, listing what it has", function()
    h.script(lib, dir, "lib.lua")
    local main = h.script([[
local sl = require "sluice"
return sl.pipeline{ name = "main",
  sl.import{ name = "q", file = "lib.lua", pipeline = "quadruple" } }
]], dir, "main.lua")
    local code, _, err = h.cli{ "check", main }
    assert.equal(2, code)
    assert.matches(main .. ":3: import 'q': '" .. dir .. "/lib.lua' has no pipeline named 'quadruple' "
      .. "(it has: double, triple)", err, 1, true)
    main = h.script([[
local sl = require "sluice"
return sl.pipeline{ name = "main", sl.import{ name = "q", file = "lib.lua" } }
]], dir, "main2.lua")
    code, _, err = h.cli{ "check", main }
    assert.equal(2, code)
    assert.matches("holds several pipelines (double, triple): choose one with pipeline = \"NAME\"", err, 1, true)
  end)

  it("lets two files import the same one without calling it a cycle", function()
    h.script(lib, dir, "lib.lua")
    for _, name in ipairs({ "left", "right" }) do
      h.script(([[
local sl = require "sluice"
return sl.pipeline{ name = "%s", sl.import{ name = "x", file = "lib.lua", pipeline = "double" } }
]]):format(name), dir, name .. ".lua")
    end
    local top = h.script([[
local sl = require "sluice"
return sl.pipeline{ name = "top", sl.import{ name = "l", file = "left.lua" },
  sl.import{ name = "r", file = "right.lua" } }
]], dir, "top.lua")
    local code, out = h.cli{ "run", top, "--input", "3" }
    assert.equal(0, code)
    assert.equal("12\n", out)
  end)

  it("reports an import cycle with the chain of files", function()
    local a = dir .. "/a.lua"
    h.script([[
local sl = require "sluice"
return sl.pipeline{ name = "a", sl.import{ name = "to_b", file = "b.lua" } }
]], dir, "a.lua")
    h.script([[
local sl = require "sluice"
return sl.pipeline{ name = "b", sl.import{ name = "to_a", file = "a.lua" } }
]], dir, "b.lua")
    local code, _, err = h.cli{ "run", a }
    assert.equal(2, code)
    assert.matches(("import 'to_a': import cycle: %s/a.lua -> %s/b.lua -> %s/a.lua"):format(dir, dir, dir),
      err, 1, true)
    local ok, e = pcall(dofile, a)
    assert.is_false(ok)
    assert.matches("import cycle: " .. a .. " -> ", e, 1, true)
    -- Nothing is left marked as being imported after a failure.
    h.script(lib, dir, "lib.lua")
    local fine = h.script([[
local sl = require "sluice"
return sl.pipeline{ name = "m", sl.import{ name = "x", file = "lib.lua", pipeline = "double" } }
]], dir, "fine.lua")
    assert.equal(8, sl.run(dofile(fine), 4).output)
  end)
end)

describe("a custom kind", function()
  it("vote (scripts/examples/vote.lua) returns the majority answer of its agents", function()
    local code, out = h.cli{ "run", "scripts/examples/vote.lua", "--input", '{"text":"I love it, great work!"}' }
    assert.equal(0, code)
    assert.equal('"positive"\n', out)
    local err
    code, out, err = h.cli{ "run", "scripts/examples/vote.lua", "--input", '{"text":"I love it but it is bad, awful"}' }
    assert.equal(1, code)
    assert.matches("vote 'sentiment': no majority among 3 agents", err, 1, true)
  end)
end)
