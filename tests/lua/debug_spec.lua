-- Going back and trying again: breakpoints (sl.step{ pause = }, sluice run
-- --break) that pause a run at a step with its input or output editable on
-- resume, and forks that start a new run from one step of a stored one.

local sl = require "sluice"
local h = require "helpers"

-- A pipeline whose steps log their name as they run, so a test can see
-- which ran again.
local function pipeline(dir, extra)
  return h.script(([[
local sl = require "sluice"
local log = %q
local function mark(name)
  local f = assert(io.open(log, "a")); f:write(name, "\n"); f:close()
end
return sl.pipeline{ name = "calc",
  sl.step{ name = "double", run = function(x, ctx) mark("double"); ctx.state.trail = "d"; return x * 2 end },
  sl.step{ name = "inc", run = function(x, ctx) mark("inc"); ctx.state.trail = ctx.state.trail .. "i"; return x + 1 end },
  sl.step{ name = "square", %s run = function(x, ctx) mark("square"); return x * x end },
  sl.step{ name = "report", run = function(x, ctx)
    mark("report")
    return { value = x, trail = ctx.state.trail, bonus = ctx.state.bonus }
  end },
}
]]):format(dir .. "/log", extra or ""), dir, "calc.lua")
end

local function ran(dir)
  local list = {}
  for line in (h.peek(dir .. "/log") or ""):gmatch("[^\n]+") do list[#list + 1] = line end
  os.remove(dir .. "/log")
  return table.concat(list, " ")
end

local function paused_id(code, out, err)
  assert.equal(3, code, err)
  return (assert(out:match("^(%w+)\n$"), "the run id on stdout"))
end

describe("breakpoints", function()
  it("pause before a step named by --break, and go on with its input replaced", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local file = pipeline(dir)
    local code, out, err = h.cli({ "run", file, "--input", "3", "--break", "inc" }, { env = env })
    local id = paused_id(code, out, err)
    assert.matches("at 1/2@before: paused before step 'inc' %(a breakpoint%)", err)
    assert.matches("resume with: sluice resume " .. id .. " %[%-%-input JSON%]", err)
    assert.equal("double", ran(dir))
    code, out, err = h.cli({ "resume", id, "--input", "10" }, { env = env })
    assert.equal(0, code, err)
    -- inc ran on 10 rather than 6; double was not run again.
    assert.same({ value = 121, trail = "di" }, sl.decode(out))
    assert.equal("inc square report", ran(dir))
    h.rm(dir)
  end)

  it("pause after a step (pause = \"after\") and go on with its output replaced, or as it was", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local file = pipeline(dir, 'pause = "after",')
    local code, out, err = h.cli({ "run", file, "--input", "3" }, { env = env })
    local id = paused_id(code, out, err)
    assert.matches("at 1/3@after: paused after step 'square'", err)
    assert.equal("double inc square", ran(dir))
    code, out, err = h.cli({ "resume", id, "--input", "5" }, { env = env })
    assert.equal(0, code, err)
    assert.same({ value = 5, trail = "di" }, sl.decode(out))
    -- square completed before the pause: it is not run again.
    assert.equal("report", ran(dir))
    -- Without --input it goes on with the output the step returned.
    code, out, err = h.cli({ "run", file, "--input", "3" }, { env = env })
    id = paused_id(code, out, err)
    code, out, err = h.cli({ "resume", id }, { env = env })
    assert.equal(0, code, err)
    assert.same({ value = 49, trail = "di" }, sl.decode(out))
    h.rm(dir)
  end)

  it("keep a run's breakpoints when it is resumed, so each execution of the step pauses", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local file = h.script([[
local sl = require "sluice"
return sl.pipeline{ name = "loop",
  sl.loop{ name = "turns", max = 3, body = sl.step{ name = "turn", run = function(x) return x + 1 end } },
}
]], dir, "loop.lua")
    local code, out, err = h.cli({ "run", file, "--input", "0", "--break", "turn:after" }, { env = env })
    local id = paused_id(code, out, err)
    for _ = 1, 2 do
      code, out, err = h.cli({ "resume", id }, { env = env })
      assert.equal(3, code, err)
      assert.matches("paused after step 'turn'", err)
    end
    code, out, err = h.cli({ "resume", id, "--input", "100" }, { env = env })
    assert.equal(0, code, err)
    assert.equal("100\n", out)
    h.rm(dir)
  end)

  it("ignore a breakpoint after the pipeline itself, which has nothing after it", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local code, out, err = h.cli({ "run", pipeline(dir), "--input", "3", "--break", "calc:after",
      "--json" }, { env = env })
    assert.equal(0, code, err)
    local res = sl.decode(out)
    assert.same({ value = 49, trail = "di" }, res.output)
    -- No wait is left open behind the completed run.
    local _, _, waits = sl.engine{ store = env.SLUICE_STORE }:show(res.run_id)
    assert.equal(0, #waits)
    h.rm(dir)
  end)

  it("refuse a breakpoint naming no step before the run starts", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local file = pipeline(dir)
    local code, _, err = h.cli({ "run", file, "--input", "3", "--break", "squre" }, { env = env })
    assert.equal(2, code)
    assert.matches("%-%-break 'squre' names no step of pipeline 'calc' %(did you mean 'square'%?%)", err)
    assert.equal("", ran(dir))
    local _, listed = h.cli({ "runs" }, { env = env })
    assert.equal("no runs\n", listed)
    h.rm(dir)
  end)

  it("refuse a bad pause option, naming the file and line", function()
    local dir = h.tmpdir()
    local file = pipeline(dir, 'pause = "later",')
    local code, _, err = h.cli({ "run", file, "--input", "3" })
    assert.equal(2, code)
    assert.matches("calc%.lua:%d+: .*'pause' must be \"before\" or \"after\"", err)
    h.rm(dir)
  end)

  it("fail the step, saying why, when the run is not durable", function()
    local dir = h.tmpdir()
    local file = pipeline(dir)
    local code, _, err = h.cli({ "run", file, "--input", "3", "--break", "inc", "--store", ":memory:" })
    assert.equal(1, code)
    assert.matches("step 'inc' has a breakpoint, which pauses its run and needs a durable run", err)
    h.rm(dir)
  end)
end)

describe("sluice fork", function()
  local function completed(file, env)
    local code, out, err = h.cli({ "run", file, "--input", "3", "--json" }, { env = env })
    assert.equal(0, code, err)
    return sl.decode(out)
  end

  it("start a new run from a step with edited input and state, leaving the old run as it was", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local file = pipeline(dir)
    local old = completed(file, env)
    assert.same({ value = 49, trail = "di" }, old.output)
    ran(dir)
    local code, out, err = h.cli({ "fork", old.run_id, "--from", "1/2", "--input", "4",
      "--state", '{"bonus": 7}' }, { env = env })
    assert.equal(0, code, err)
    -- double is restored (with its change to the state), inc and after run.
    assert.same({ value = 25, trail = "di", bonus = 7 }, sl.decode(out))
    assert.equal("inc square report", ran(dir))
    local new = assert(err:match("run (%w+) forked from " .. old.run_id .. " at 1/2"), err)
    local _, shown = h.cli({ "show", new }, { env = env })
    assert.matches("forked%s+from " .. old.run_id .. " at 1/2", shown)
    -- The old run is unchanged.
    local _, js = h.cli({ "show", "--json", old.run_id }, { env = env })
    assert.same({ value = 49, trail = "di" }, sl.decode(js).output)
    -- Without edits, the rest of the run comes out the same.
    code, out, err = h.cli({ "fork", old.run_id, "--from", "1/3" }, { env = env })
    assert.equal(0, code, err)
    assert.same({ value = 49, trail = "di" }, sl.decode(out))
    assert.equal("square report", ran(dir))
    h.rm(dir)
  end)

  it("give a step that runs again the answers its questions had, so the fork does not ask", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local file = h.script([[
local sl = require "sluice"
local greet = sl.step{ name = "greet", run = function(name) return "Hello, " .. name end }
return sl.pipeline{ name = "ask",
  sl.step{ name = "outer", run = function(x, ctx)
    local name = ctx:human("Whom to greet?")
    return ctx:run(greet, name)
  end } }
]], dir, "ask.lua")
    local code, out, err = h.cli({ "run", file }, { env = env })
    local id = paused_id(code, out, err)
    code, out, err = h.cli({ "resume", id, "--input", '"Ada"' }, { env = env })
    assert.equal(0, code, err)
    assert.equal('"Hello, Ada"\n', out)
    -- outer runs again in the fork; its question was answered already.
    code, out, err = h.cli({ "fork", id, "--from", "1/1/1", "--input", '"Bob"' }, { env = env })
    assert.equal(0, code, err)
    assert.equal('"Hello, Bob"\n', out)
    h.rm(dir)
  end)

  it("name the nearest paths for a path the run has no execution at", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local old = completed(pipeline(dir), env)
    local code, _, err = h.cli({ "fork", old.run_id, "--from", "1/7" }, { env = env })
    assert.equal(2, code)
    assert.matches("has no step execution at path '1/7' %(did you mean '1/%d'%? its paths: 1/1, 1/2", err)
    code, _, err = h.cli({ "fork", old.run_id }, { env = env })
    assert.equal(2, code)
    assert.matches("%-%-from STEP_PATH is needed", err)
    code, _, err = h.cli({ "fork", old.run_id, "--from", "1/2", "--state", "[1]" }, { env = env })
    assert.equal(2, code)
    assert.matches("%-%-state must be a JSON object", err)
    h.rm(dir)
  end)

  it("fork from Lua with engine:fork", function()
    local dir = h.tmpdir()
    local store = dir .. "/s.db"
    local file = pipeline(dir)
    local old = completed(file, { SLUICE_STORE = store })
    local eng = sl.engine{ store = store }
    local run = eng:fork(old.run_id, "1/4", { state = { trail = "edited" } })
    local res = run:wait()
    assert.equal("completed", res.status)
    assert.same({ value = 49, trail = "edited" }, res.output)
    assert.has_error(function() eng:fork(old.run_id, "1/4", { colour = 1 }) end,
      "bad fork option 'colour' (known: input, state, force)")
    h.rm(dir)
  end)
end)
