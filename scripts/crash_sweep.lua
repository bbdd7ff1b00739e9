-- Crash-point sweep: kills `sluice run` with SIGKILL at random moments,
-- resumes what it left, and checks what a durable engine promises: the
-- output is the one an uninterrupted run gives, no step whose completion
-- the store had recorded runs again, every run that began is on record,
-- and the store is never damaged. Prints the figures per pipeline shape.
--   lua5.4 scripts/crash_sweep.lua [TRIALS_PER_SHAPE]   (default 75)
--   (LUA_PATH/LUA_CPATH as in the README; SLUICE_BIN names the CLI,
--   default build/sluice; SWEEP_SEED fixes the random moments)
local sl = require "sluice"

local TRIALS = tonumber(arg[1]) or 75
local bin = os.getenv("SLUICE_BIN") or "build/sluice"
math.randomseed(tonumber(os.getenv("SWEEP_SEED")) or os.time())

local root = os.tmpname()
os.remove(root)
os.execute("mkdir -p " .. root)

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok and 0 or code
end

-- Every leaf step appends its identity to the log once it has computed.
local prelude = [[
local sl = require "sluice"
local LOG = os.getenv("SWEEP_LOG")
local function mark(id)
  local f = assert(io.open(LOG, "a")); f:write(id, "\n"); f:close()
end
local function work(n) local x = 0; for i = 1, n do x = x + i % 7 end; return x end
local function leaf(name, add, wait)
  return sl.step{ name = name, run = function(x, ctx)
    if wait then ctx:sleep(wait) else work(20000) end
    mark(name)
    return x + add
  end }
end
]]

local shapes = {
  { name = "sequence of 50 (waits and compute)", src = prelude .. [[
local steps = {}
for i = 1, 50 do steps[i] = leaf("s" .. i, i, i % 3 == 0 and 0.002 or nil) end
return sl.pipeline{ name = "seq", table.unpack(steps) }
]] },
  { name = "sequence of 50 (compute only)", src = prelude .. [[
local steps = {}
for i = 1, 50 do steps[i] = leaf("s" .. i, i) end
return sl.pipeline{ name = "seq", table.unpack(steps) }
]] },
  { name = "parallel of 10 branches of 5", src = prelude .. [[
local branches = {}
for b = 1, 10 do
  local steps = {}
  for j = 1, 5 do steps[j] = leaf(("b%d_%d"):format(b, j), j, j % 2 == 0 and 0.003 or nil) end
  branches["b" .. b] = sl.pipeline{ name = "branch" .. b, table.unpack(steps) }
end
return sl.pipeline{ name = "par",
  sl.parallel{ name = "fan", branches = branches, limit = 4 },
  sl.step{ name = "sum", run = function(t) local s = 0; for _, v in pairs(t) do s = s + v end; return s end } }
]] },
  { name = "map over 30 items, limit 4", src = prelude .. [[
return sl.pipeline{ name = "map",
  sl.map{ name = "each", limit = 4, over = function() local t = {}; for i = 1, 30 do t[i] = i end; return t end,
    body = sl.step{ name = "item", run = function(v, ctx)
      if v % 2 == 0 then ctx:sleep(0.003) else work(20000) end
      mark("item:" .. v)
      return v * v end } },
  sl.step{ name = "sum", run = function(t) local s = 0; for _, v in ipairs(t) do s = s + v end; return s end } }
]] },
  { name = "loop of 40 iterations", src = prelude .. [[
return sl.pipeline{ name = "loop",
  sl.loop{ name = "count", max = 100, stop_when = function(out) return out >= 40 end,
    body = sl.step{ name = "iter", run = function(x, ctx)
      if x % 2 == 0 then ctx:sleep(0.002) else work(20000) end
      mark("iter:" .. x)
      return x + 1 end } } }
]] },
}

local function lines(path)
  local n, f = {}, io.open(path)
  if not f then return n end
  for l in f:lines() do n[l] = (n[l] or 0) + 1 end
  f:close()
  return n
end

-- The identities of the leaf steps the store holds as completed.
local function recorded(show)
  local set, iters = {}, 0
  for _, s in ipairs(show.steps or {}) do
    if s.kind == "step" and s.status == "completed" then
      if s.name == "item" then set["item:" .. tostring(s.key)] = true
      elseif s.name == "iter" then iters = iters + 1
      else set[s.name] = true end
    end
  end
  for i = 0, iters - 1 do set["iter:" .. i] = true end
  return set
end

local function env(dir)
  return ("SLUICE_STORE=%s SWEEP_LOG=%s "):format(q(dir .. "/s.db"), q(dir .. "/log"))
end

local function reference(file, dir)
  local t0 = sl.now()
  local out, code = sh(env(dir) .. q(bin) .. " run " .. q(file) .. " --input 0 2>&1")
  assert(code == 0, "the reference run failed: " .. out)
  return out, sl.now() - t0
end

local totals = { trials = 0, wrong = 0, rerun = 0, damaged = 0, lost = 0 }
print(("%-36s %7s %7s %7s %7s %7s %7s %9s"):format("shape", "trials", "killed", "wrong",
  "re-run", "lost", "damaged", "in-flight"))
for si, shape in ipairs(shapes) do
  local sdir = ("%s/shape%d"):format(root, si)
  os.execute("mkdir -p " .. sdir)
  local file = sdir .. "/p.lua"
  write(file, shape.src)
  local want, span = reference(file, sdir)
  os.execute("rm -f " .. sdir .. "/s.db* " .. sdir .. "/log")
  local st = { trials = 0, killed = 0, wrong = 0, rerun = 0, lost = 0, damaged = 0, inflight = 0 }
  for t = 1, TRIALS do
    local dir = ("%s/t%d"):format(sdir, t)
    os.execute("mkdir -p " .. dir)
    local delay = math.random() * span * 1.1
    local pid = sh(env(dir) .. q(bin) .. " run " .. q(file) .. " --input 0 >" .. q(dir .. "/out")
      .. " 2>&1 & echo $!"):match("%d+")
    os.execute(("sleep %.4f; kill -9 %s 2>/dev/null"):format(delay, pid))
    -- Gone, or a zombie nobody reaps yet: either way it runs no more.
    os.execute(("while grep -qv '^[0-9]* ([^)]*) Z' /proc/%s/stat 2>/dev/null; do sleep 0.002; done")
      :format(pid))
    st.trials = st.trials + 1
    local _, bad = sh(q(bin) .. " store check --store " .. q(dir .. "/s.db") .. " >/dev/null 2>&1")
    local log = lines(dir .. "/log")
    local rows = sl.decode((sh(env(dir) .. q(bin) .. " runs --json 2>/dev/null"))) or {}
    local row = rows[1]
    if bad ~= 0 and row ~= nil then st.damaged = st.damaged + 1 end
    local output
    if row == nil then
      -- Killed before the run was on record: then no step may have run.
      if next(log) ~= nil then st.lost = st.lost + 1 end
      st.killed = st.killed + 1
      output = want
    elseif row.status == "completed" then
      -- Ended before the kill; perhaps killed before it printed: the
      -- store's output is the one to check.
      local show = sl.decode((sh(env(dir) .. q(bin) .. " show --json " .. row.run_id))) or {}
      output = sl.encode(show.output) .. "\n"
    else
      st.killed = st.killed + 1
      local show = sl.decode((sh(env(dir) .. q(bin) .. " show --json " .. row.run_id))) or {}
      local done = recorded(show)
      output = sh(env(dir) .. q(bin) .. " resume " .. row.run_id .. " 2>&1")
      local after = lines(dir .. "/log")
      for id in pairs(done) do
        if (after[id] or 0) > 1 then st.rerun = st.rerun + 1 end
      end
      for id, n in pairs(after) do
        if n > 1 and not done[id] then st.inflight = st.inflight + 1 end
      end
      local _, bad2 = sh(q(bin) .. " store check --store " .. q(dir .. "/s.db") .. " >/dev/null 2>&1")
      if bad2 ~= 0 then st.damaged = st.damaged + 1 end
    end
    if output ~= want then
      st.wrong = st.wrong + 1
      io.stderr:write(("  trial %d of %s: got %q, want %q\n"):format(t, shape.name, output, want))
    end
    os.execute("rm -rf " .. q(dir))
  end
  print(("%-36s %7d %7d %7d %7d %7d %7d %9d"):format(shape.name, st.trials, st.killed, st.wrong,
    st.rerun, st.lost, st.damaged, st.inflight))
  for k in pairs(totals) do totals[k] = totals[k] + st[k] end
end
print(("all: %d trials, %d wrong outputs, %d recorded steps run again, %d runs lost, "
  .. "%d damaged stores (in-flight steps run again are allowed: at most what was running)")
  :format(totals.trials, totals.wrong, totals.rerun, totals.lost, totals.damaged))
os.execute("rm -rf " .. q(root))
os.exit(totals.wrong + totals.rerun + totals.lost + totals.damaged == 0 and 0 or 1)
