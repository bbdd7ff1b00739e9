-- A pipeline for the embedding tests: it waits on a timer, so its host must
-- wait on the engine's descriptor and timeout; it uses LPeg (linked into
-- the self-contained library) and tries a C module from disk (refused
-- there: it was built for the process's Lua).
local sl = require "sluice"

local nap = sl.step{ name = "nap", run = function(input, ctx)
  ctx:sleep(0.05)
  local lpeg = require "lpeg"
  local ok, err = pcall(require, "lfs")
  return { greeting = lpeg.match(lpeg.C(lpeg.P"Hello"), "Hello, world") .. ", " .. input.name,
           lua = _VERSION, disk_module = ok and "loaded" or tostring(err):match("[^\n]*$") }
end }

return sl.pipeline{ name = "nap", nap }
