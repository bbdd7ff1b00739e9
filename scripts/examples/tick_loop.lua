-- A Lua host with a main loop of its own (a game, a GUI, a server): it
-- starts runs without blocking and advances the engine once per frame.
--   lua5.4 scripts/examples/tick_loop.lua
local sl = require "sluice"

local fetch = sl.step{ name = "fetch", run = function(n, ctx)
  ctx:sleep(0.002 * n)         -- waiting suspends only this step
  return n * n
end }
local p = sl.pipeline{ name = "per_frame", fetch }

local runs = {}
for i = 1, 5 do runs[i] = sl.start(p, i) end

local frames = 0
while sl.poll() > 0 do         -- one engine tick per frame, never blocking
  frames = frames + 1
  -- ... the host's own frame work goes here ...
  local t = sl.now()
  while sl.now() - t < 0.001 do end
end

for i, run in ipairs(runs) do
  local r = run:result()
  print(("run %d: %s %s"):format(i, r.status, r.output))
  assert(r.output == i * i)
end
print(("%d frames"):format(frames))
