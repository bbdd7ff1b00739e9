-- engine:fd(), engine:timeout() and engine:poll(): a Lua host with a loop
-- of its own sleeps until the engine next needs a turn instead of spinning.
local sl = require "sluice"
local system = require "system"

describe("a host loop on engine:fd() and engine:timeout()", function()
  it("has nothing pending on an idle engine", function()
    local e = sl.engine{}
    assert.is_true(math.type(e:fd()) == "integer" and e:fd() >= 0)
    assert.equal(-1, e:timeout())
    assert.equal(0, e:poll())
  end)

  it("completes a sleeping run after a few turns, sleeping the timeout between", function()
    local e = sl.engine{}
    local nap = sl.pipeline{ name = "nap",
      sl.step{ name = "nap", run = function(_, ctx) ctx:sleep(0.2); return "rested" end } }
    local run = e:start(nap)
    local turns, timed = 0, 0
    while e:poll() > 0 do
      local t = e:timeout()
      assert.is_true(t >= 0 and t <= 1000, "timeout " .. t .. " ms for a 0.2 s sleep")
      if t > 0 then timed = timed + 1 end
      system.sleep(t / 1000)
      turns = turns + 1
    end
    assert.equal("completed", run:result().status)
    assert.equal("rested", run:result().output)
    assert.is_true(timed >= 1)
    assert.is_true(turns < 50, turns .. " turns")
    assert.equal(-1, e:timeout())
  end)

  it("raises with the caller's position when called on something else", function()
    local e = sl.engine{}
    assert.has_error(function() e.fd({}) end)
    assert.has_error(function() e.timeout(nil) end)
  end)
end)
