-- require("sluice.luv").attach: an engine driven by luv's loop beside the
-- host's own handles, in stock lua5.4, with no polling.
local sl = require "sluice"
local uv = require "luv"
local attach = require("sluice.luv").attach

describe("an engine on luv's loop", function()
  it("completes a sleeping run while the host's timer ticks, in a few turns", function()
    local e = sl.engine{}
    local turns = 0
    local poll = e.poll
    -- Count the engine's turns through a proxy with the engine's methods.
    local counted = setmetatable({}, { __index = function(_, k)
      if k == "poll" then return function() turns = turns + 1; return poll(e) end end
      local v = e[k]
      return type(v) == "function" and function(_, ...) return v(e, ...) end or v
    end })
    local nap = sl.pipeline{ name = "nap",
      sl.step{ name = "a", run = function(x, ctx) ctx:sleep(0.15); return x + 1 end },
      sl.step{ name = "b", run = function(x, ctx) ctx:sleep(0.15); return x * 10 end } }
    local ticks = 0
    local tick = uv.new_timer()
    tick:start(20, 20, function() ticks = ticks + 1 end)
    local run = e:start(nap, 1)
    local h
    h = attach(counted, uv, function() h.close(); tick:stop(); tick:close() end)
    h.kick()
    uv.run()
    assert.equal("completed", run:result().status)
    assert.equal(20, run:result().output)
    assert.is_true(ticks >= 5, ticks .. " host ticks")
    assert.is_true(turns < 30, turns .. " engine turns for two sleeps")
  end)

  it("detaches, leaving the loop with nothing of the engine's", function()
    local e = sl.engine{}
    local h = attach(e, uv)
    h.close()
    h.close()
    assert.is_false(uv.run("nowait"))
  end)
end)
