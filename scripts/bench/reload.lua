-- Reload benchmark: latency from a file write to the new snapshot serving
-- runs (through engine:watch, debounce included), and the cost of a reload
-- of a 1,000-step pipeline. Prints figures only.
local sl = require "sluice"
local now = sl.now

local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir -p " .. dir)
local file = dir .. "/p.lua"

local function write(path, text)
  local f = assert(io.open(path, "w")); f:write(text); f:close()
end

local function version(n)
  return ([[
local sl = require "sluice"
return sl.pipeline{ name = "p", sl.step{ name = "v", run = function() return %d end } }
]]):format(n)
end

local DEBOUNCE = tonumber(os.getenv("BENCH_DEBOUNCE")) or 20
local eng = sl.engine()
write(file, version(0))
eng:load(file)
local reloaded = 0
eng:watch(function(ok) if ok then reloaded = reloaded + 1 end end, DEBOUNCE)
local lat = {}
for n = 1, 20 do
  local want = reloaded + 1
  local t0 = now()
  write(file, version(n))
  while true do
    eng:poll()
    if reloaded >= want and eng:run("p").output == n then break end
  end
  lat[#lat + 1] = (now() - t0) * 1e3
end
table.sort(lat)
print(("reload latency, file write to the new snapshot serving runs (debounce %d ms)"):format(DEBOUNCE))
print(("  median %6.1f ms   max %6.1f ms   (target under 50 ms)"):format(lat[#lat // 2 + 1], lat[#lat]))
eng:watch(false)

local parts = { 'local sl = require "sluice"', "local s = {}" }
for i = 1, 1000 do
  parts[#parts + 1] = ("s[%d] = sl.step{ name = 's%d', retries = 1, run = function(x) return x + %d end }"):format(i, i, i)
end
parts[#parts + 1] = 'return sl.pipeline{ name = "big", table.unpack(s) }'
write(file, table.concat(parts, "\n"))
eng:load(file)
local reps, t0 = 20, now()
for _ = 1, reps do eng:reload() end
local per = (now() - t0) / reps * 1e3
print(("reload of a 1,000-step pipeline file: %.2f ms (compile, run, check, swap)"):format(per))
os.execute("rm -rf " .. dir)
