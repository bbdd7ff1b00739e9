-- The pipeline the Neovim example runs (Lua 5.4, inside sluice): reads a
-- buffer through the host's "buffer" kind, waits a moment as a slow step
-- would, and counts its words.
local sl = require "sluice"
return sl.pipeline{ name = "wordcount",
  sl.step{ name = "read", kind = "buffer", timeout = 5 },
  sl.step{ name = "settle", run = function(b, ctx) ctx:sleep(0.2); return b end },
  sl.step{ name = "count", run = function(b)
    local n = 0
    for _, line in ipairs(b.lines) do for _ in line:gmatch("%S+") do n = n + 1 end end
    return { lines = #b.lines, words = n, lua = _VERSION }
  end },
}
