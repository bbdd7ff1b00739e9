-- Resilience benchmark: what one retry attempt (zero backoff) and one
-- validator call cost, against a plain step. Prints figures only.
local sl = require "sluice"
local now = sl.now

local N = tonumber(os.getenv("BENCH_STEPS")) or 1000
local REPS = tonumber(os.getenv("BENCH_REPS")) or 100

local function per_step(make)
  local steps = {}
  for i = 1, N do steps[i] = make(i) end
  local p = sl.pipeline{ name = "bench", table.unpack(steps) }
  for _ = 1, 5 do sl.run(p, 0) end
  collectgarbage()
  local t0 = now()
  local r
  for _ = 1, REPS do r = sl.run(p, 0) end
  assert(r.status == "completed", r.error and tostring(r.error))
  return (now() - t0) / (REPS * N) * 1e9
end

local plain = per_step(function(i)
  return sl.step{ name = "s" .. i, run = function(x) return x + 1 end }
end)
-- Every step fails its first attempt and succeeds on the second.
local retried = per_step(function(i)
  return sl.step{ name = "r" .. i, retries = 1, backoff = { base = 0 },
    run = function(x, ctx) if ctx.attempt == 1 then error("again") end return x + 1 end }
end)
local function ok() return true end
local validated = per_step(function(i)
  return sl.step{ name = "v" .. i, validate = ok, run = function(x) return x + 1 end }
end)
local with_opts = per_step(function(i)
  return sl.step{ name = "o" .. i, retries = 3, run = function(x) return x + 1 end }
end)

print(("%d-step pipeline, %d runs"):format(N, REPS))
print(("  plain step                  %8.1f ns/step"):format(plain))
print(("  step with retries, unused   %8.1f ns/step  (+%.1f ns)"):format(with_opts, with_opts - plain))
print(("  one validator call          %8.1f ns/step  (+%.1f ns per validator)"):format(validated, validated - plain))
print(("  one retry, zero backoff     %8.1f ns/step  (+%.1f ns per retry)"):format(retried, retried - plain))
