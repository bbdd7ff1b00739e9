-- The smallest pipeline: one step that greets its input.
local sl = require "sluice"

local greet = sl.step{ name = "greet", run = function(input, ctx)
  return "Hello, " .. input.name
end }

return sl.pipeline{ name = "hello", greet }
