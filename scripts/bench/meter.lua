-- Quota and cache benchmark: the per-step cost of quota accounting (on
-- against off), a cache hit against executing a trivial step, and hashing
-- throughput for a 1 MB input. Prints figures only.
local sl = require "sluice"
local now = sl.now

local N = tonumber(os.getenv("BENCH_STEPS")) or 1000
local REPS = tonumber(os.getenv("BENCH_REPS")) or 100

local function per_step(p, input, reps)
  for _ = 1, 3 do sl.run(p, input) end
  collectgarbage()
  local t0 = now()
  for _ = 1, reps do assert(sl.run(p, input).status == "completed") end
  return (now() - t0) / (reps * (#p)) * 1e9
end

local function pipeline(make, opts)
  local steps = {}
  for i = 1, N do steps[i] = make(i) end
  local spec = { name = "bench", table.unpack(steps) }
  for k, v in pairs(opts or {}) do spec[k] = v end
  return sl.pipeline(spec)
end

local plain = per_step(pipeline(function(i)
  return sl.step{ name = "s" .. i, run = function(x) return x end } end), 1, REPS)
local metered = per_step(pipeline(function(i)
  return sl.step{ name = "m" .. i, estimate = { tokens = 1 }, run = function(x) return x, { tokens = 1 } end }
end, { budget = { tokens = 1000000000 } }), 1, REPS)
-- The same cached step N times on one input: every execution after the
-- first in the process is a hit.
local cached_step = sl.step{ name = "c", cache = true, run = function(x) return x end }
local hits = per_step(pipeline(function() return cached_step end), { name = "Ada", n = 1 }, REPS)
local uncached_opts = per_step(pipeline(function(i)
  return sl.step{ name = "r" .. i, retries = 0, run = function(x) return x end } end), { name = "Ada", n = 1 }, REPS)

print(("%d-step pipelines, %d runs"):format(N, REPS))
print(("  trivial step                  %7.1f ns/step"):format(plain))
print(("  with an estimate and usage    %7.1f ns/step  (+%.1f ns for quota accounting)"):format(metered, metered - plain))
print(("  cache hit, small input        %7.1f ns/step  (target under 1000 ns; a step with options that runs: %.1f ns)"):format(hits, uncached_opts))

-- Hashing: a key over a 1 MB input (table of records and one string).
local rows = {}
local size = 0
while size < 1024 * 1024 do
  local r = { id = #rows + 1, name = "record " .. #rows, tags = { "a", "b", "c" }, score = #rows * 0.5 }
  rows[#rows + 1] = r
  size = size + #sl.encode(r) + 1
end
local big = sl.step{ name = "big", cache = true, run = function() return 1 end }
local pb = sl.pipeline{ name = "hash", big }
local reps = 20
local t0 = now()
for i = 1, reps do rows[1].id = -i; sl.run(pb, rows) end   -- a new input each time: a miss, hashed
local per = (now() - t0) / reps
local str = ("x"):rep(1024 * 1024)
t0 = now()
for i = 1, reps do sl.run(pb, str .. i) end
local per_s = (now() - t0) / reps
print(("hashing a 1 MB input (a run that misses the cache)"))
print(("  table of %d records   %7.1f MB/s"):format(#rows, size / per / 1e6))
print(("  1 MB string           %7.1f MB/s"):format(#str / per_s / 1e6))
