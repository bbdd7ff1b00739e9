-- A stock lua5.4 host on luv's loop: a luv timer of the host ticks while a
-- sluice run sleeps and completes, both driven by one uv.run(); nothing
-- polls. Prints the run's output and how many times each made progress.
--   lua5.4 scripts/examples/luv_host.lua   (LUA_PATH/LUA_CPATH as in the README)
local uv = require "luv"
local sl = require "sluice"

local e = sl.engine{}
local nap = sl.pipeline{ name = "nap",
  sl.step{ name = "nap", run = function(x, ctx) ctx:sleep(0.3); return x .. " rested" end } }

local ticks, result = 0, nil
local tick = uv.new_timer()
tick:start(50, 50, function() ticks = ticks + 1 end)

local run = e:start(nap, "the host")
local attached
attached = require("sluice.luv").attach(e, uv, function()
  result = run:result()
  attached.close()
  tick:stop()
  tick:close()
end)
attached.kick()
uv.run()
print(("%s; the host ticked %d times meanwhile"):format(result.output, ticks))
