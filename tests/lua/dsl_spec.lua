-- The DSL checks every constructor's arguments where they are written.
local sl = require "sluice"

local here = debug.getinfo(1, "S").short_src

local function line() return debug.getinfo(2, "l").currentline end

-- Calls f, expecting an error; returns its message.
local function err_of(f)
  local ok, e = pcall(f)
  assert.is_false(ok, "expected an error")
  return tostring(e)
end

describe("sl.step", function()
  it("builds a step that remembers where it was defined", function()
    local s = sl.step{ name = "greet", run = function() end }; local l = line()
    assert.equal("step", s.kind)
    assert.equal("greet", s.name)
    assert.equal(here .. ":" .. l, s.where)
  end)

  it("rejects an unknown option, naming it, the closest valid one and the caller's line", function()
    local l
    local msg = err_of(function() l = line() + 1
      sl.step{ name = "greet", rnu = function() end }
    end)
    assert.equal(here .. ":" .. l .. ": step 'greet': unknown option 'rnu' (did you mean 'run'?)", msg)
  end)

  it("gives no suggestion when nothing is close", function()
    local msg = err_of(function() sl.step{ name = "g", run = print, zzzzzzzz = 1 } end)
    assert.matches("unknown option 'zzzzzzzz'$", msg)
  end)

  it("rejects a wrong type for an option", function()
    local msg = err_of(function() sl.step{ name = "g", run = 5 } end)
    assert.matches("step 'g': option 'run' must be a function, got number", msg, 1, true)
  end)

  it("requires a name", function()
    local msg = err_of(function() sl.step{ run = print } end)
    assert.matches("step needs a name", msg, 1, true)
  end)

  it("requires run or agent, not both", function()
    assert.matches("needs a run function or an agent", err_of(function() sl.step{ name = "g" } end), 1, true)
    assert.matches("not both", err_of(function() sl.step{ name = "g", run = print, agent = print } end), 1, true)
  end)

  it("rejects a non-table argument", function()
    assert.matches("sl.step expects a table of options, got string", err_of(function() sl.step("x") end), 1, true)
  end)

  it("accepts an agent: any callable", function()
    local agent = setmetatable({}, { __call = function(_, input) return input .. "!" end })
    local s = sl.step{ name = "a", agent = agent }
    assert.equal("hi!", sl.run(sl.pipeline{ name = "p", s }, "hi").output)
  end)
end)

describe("sl.pipeline", function()
  it("rejects an entry that is not a step, naming its position", function()
    local l
    local msg = err_of(function() l = line() + 1
      sl.pipeline{ name = "p", sl.step{ name = "a", run = print }, {} }
    end)
    assert.equal(here .. ":" .. l .. ": pipeline 'p': entry #2 must be a step, got a plain table", msg)
  end)

  it("rejects an empty pipeline", function()
    assert.matches("pipeline 'p' has no steps", err_of(function() sl.pipeline{ name = "p" } end), 1, true)
  end)

  it("rejects an unknown option", function()
    assert.matches("pipeline 'p': unknown option 'nmae' %(did you mean 'name'%?%)",
      err_of(function() sl.pipeline{ name = "p", nmae = "x", sl.step{ name = "a", run = print } } end))
  end)
end)

describe("sl.kind", function()
  it("checks its arguments", function()
    assert.matches("bad argument #1 to 'kind'", err_of(function() sl.kind(nil, print) end), 1, true)
    assert.matches("bad argument #2 to 'kind' (function expected, got number)", err_of(function() sl.kind("k", 1) end), 1, true)
  end)

  it("checks the options a kind declares", function()
    sl.kind("dsl_vote", function() end, { options = { "agents" } })
    sl.step{ kind = "dsl_vote", name = "v", agents = {} }
    assert.matches("dsl_vote 'v': unknown option 'agnets' %(did you mean 'agents'%?%)",
      err_of(function() sl.step{ kind = "dsl_vote", name = "v", agnets = {} } end))
  end)

  it("lets a kind that declares nothing take any option", function()
    sl.kind("dsl_free", function() end)
    local s = sl.step{ kind = "dsl_free", name = "f", anything = 1 }
    assert.equal(1, s.anything)
  end)
end)
