-- Fills a store for scripts/bench/ui.js: n runs of a two-step pipeline
-- (every tenth fails), then one run of a map over `steps` items. Prints the
-- ids of a small run and the large one as JSON.
--   lua5.4 scripts/bench/ui_fill.lua STORE N STEPS
local sl = require "sluice"
local path, n, steps = arg[1], tonumber(arg[2]), tonumber(arg[3])
local eng = sl.engine{ store = path }
local two = sl.pipeline{ name = "two",
  sl.step{ name = "fetch", run = function(x) return { n = x, text = "item " .. x } end },
  sl.step{ name = "check", run = function(x)
    if x.n % 10 == 0 then error("item " .. x.n .. " has no title") end
    return x
  end },
}
local small
for i = 1, n do
  local r = eng:run(two, i)
  small = small or r.run_id
end
local wide = sl.pipeline{ name = "wide",
  sl.map{ name = "each", limit = 64, over = function(x)
    local t = {}
    for i = 1, x do t[i] = i end
    return t
  end, body = sl.step{ name = "item", run = function(x) return x * 2 end } },
}
local r = eng:run(wide, steps)
assert(r.status == "completed", r.error and r.error.message)
local few = eng:run(wide, 10)
io.write(sl.encode({ small = small, big = r.run_id, few = few.run_id }), "\n")
