-- Run ownership and a store that cannot lie: leases, takeovers, exactly
-- once, writes that never block another process, values stored once,
-- retention, private files. These drive the real sluice command.
local sl = require "sluice"
local h = require "helpers"

local function count(path, word)
  local n = 0
  local f = io.open(path)
  if not f then return 0 end
  for line in f:lines() do if line == word then n = n + 1 end end
  f:close()
  return n
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

local function mode(path)
  local p = io.popen("stat -c %a " .. h.quote(path) .. " 2>/dev/null")
  local m = p:read("l")
  p:close()
  return m
end

local function alive(pid)
  return h.alive(pid)
end

-- A pipeline whose steps log their names; "hold" waits until the file
-- named by `gate` exists, so a test can keep a run in progress.
local function gated(dir)
  return h.script(([[
local sl = require "sluice"
local log, gate = %q, %q
local function mark(name)
  local f = assert(io.open(log, "a")); f:write(name, "\n"); f:close()
end
local function step(name) return sl.step{ name = name, run = function(x) mark(name); return x + 1 end } end
return sl.pipeline{ name = "gated",
  step("a"),
  sl.step{ name = "hold", run = function(x, ctx)
    mark("hold")
    while not io.open(gate) do ctx:sleep(0.02) end
    return x + 1
  end },
  step("z") }
]]):format(dir .. "/log", dir .. "/gate"), dir, "g.lua")
end

-- Waits until the gated pipeline is in "hold" and the store holds "a" as
-- completed: what a takeover must not run again is what was recorded, and
-- "a" is recorded a few milliseconds after "hold" begins.
local function held(dir, store)
  return h.wait_for(function()
    if count(dir .. "/log", "hold") ~= 1 then return false end
    local _, rows = h.cli({ "runs", "--json" }, { env = { SLUICE_STORE = store } })
    local first = (sl.decode(rows) or {})[1]
    if not first then return false end
    local _, j = h.cli({ "show", "--json", first.run_id }, { env = { SLUICE_STORE = store } })
    for _, st in ipairs((j ~= "" and sl.decode(j) or {}).steps or {}) do
      if st.name == "a" and st.status == "completed" then return true end
    end
    return false
  end)
end

local function interrupted_id(env)
  local _, json = h.cli({ "runs", "--json", "--status", "interrupted" }, { env = env })
  local rows = sl.decode(json)
  return rows[1] and rows[1].run_id, #rows
end

describe("ownership", function()
  it("refuses to resume a run its owner is still executing, naming the owner", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local file = gated(dir)
    local pid = h.cli({ "run", file, "--input", "0" }, { env = env, background = true })
    assert.is_true(h.wait_for(function() return count(dir .. "/log", "hold") == 1 end))
    local _, json = h.cli({ "runs", "--json", "--status", "running" }, { env = env })
    local rows = sl.decode(json)
    assert.equal(1, #rows)
    local code, _, err = h.cli({ "resume", rows[1].run_id }, { env = env })
    assert.equal(2, code)
    assert.matches("is being executed by", err, 1, true)
    assert.matches(":" .. pid .. ":", err, 1, true)
    assert.matches("its lease runs until", err, 1, true)
    -- The owner goes on, and no step ran twice.
    h.write(dir .. "/gate", "")
    assert.is_true(h.wait_for(function() return not alive(pid) end))
    assert.equal(1, count(dir .. "/log", "a"))
    assert.equal(1, count(dir .. "/log", "z"))
    local _, done = h.cli({ "runs", "--json" }, { env = env })
    assert.equal("completed", sl.decode(done)[1].status)
    h.rm(dir)
  end)

  it("takes a run over at once when its owner on this host is dead (kill -9)", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local file = gated(dir)
    local pid = h.cli({ "run", file, "--input", "0" }, { env = env, background = true })
    assert.is_true(held(dir, dir .. "/s.db"))
    os.execute("kill -9 " .. pid)
    assert.is_true(h.wait_for(function() return not alive(pid) end))
    local id, n = interrupted_id(env)
    assert.equal(1, n)
    h.write(dir .. "/gate", "")
    local code, out = h.cli({ "resume", id }, { env = env })
    assert.equal(0, code)
    assert.equal("3\n", out)
    assert.equal(1, count(dir .. "/log", "a"))   -- completed before the kill: not again
    h.rm(dir)
  end)

  it("has a run on record before its first step begins, so a kill at once leaves it to resume", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    -- The first step computes without waiting: nothing else makes the
    -- engine commit before the kill.
    local file = h.script(([[
local sl = require "sluice"
local log, gate = %q, %q
return sl.pipeline{ name = "eager",
  sl.step{ name = "spin", run = function(x)
    local f = assert(io.open(log, "a")); f:write("spin\n"); f:close()
    while not io.open(gate) do for _ = 1, 1e5 do end end
    return x + 1
  end } }
]]):format(dir .. "/log", dir .. "/gate"), dir, "e.lua")
    local pid = h.cli({ "run", file, "--input", "0" }, { env = env, background = true })
    assert.is_true(h.wait_for(function() return count(dir .. "/log", "spin") == 1 end))
    os.execute("kill -9 " .. pid)
    assert.is_true(h.wait_for(function() return not alive(pid) end))
    local id, n = interrupted_id(env)
    assert.equal(1, n)
    h.write(dir .. "/gate", "")
    local code, out = h.cli({ "resume", id }, { env = env })
    assert.equal(0, code)
    assert.equal("1\n", out)
    h.rm(dir)
  end)

  it("takes a run over from an owner killed but not yet reaped (a zombie)", function()
    local dir = h.tmpdir()
    local store = dir .. "/s.db"
    local file = gated(dir)
    -- The owner's parent is a shell that execs sleep: it never reaps the
    -- owner, which stays a zombie after kill -9 for as long as sleep runs.
    local pidfile = dir .. "/owner.pid"
    local asan = os.getenv("SLUICE_CHILD_ASAN_OPTIONS")
    local cmd = ("%sSLUICE_STORE=%s sh -c %s >/dev/null 2>&1 </dev/null & echo $!"):format(
      asan and ("ASAN_OPTIONS=" .. h.quote(asan) .. " ") or "", h.quote(store),
      h.quote(("%s run %s --input 0 >/dev/null 2>&1 & echo $! > %s; exec sleep 30")
        :format(h.quote(h.bin), h.quote(file), h.quote(pidfile))))
    local p = io.popen(cmd)
    local parent = tonumber(p:read("l"))
    p:close()
    assert.is_true(h.wait_for(function() return h.peek(pidfile):match("%d+\n") ~= nil end))
    local owner = tonumber(h.peek(pidfile):match("%d+"))
    assert.is_true(held(dir, dir .. "/s.db"))
    os.execute("kill -9 " .. owner)
    assert.is_true(h.wait_for(function() return not h.alive(owner) end))
    local zombie = io.open("/proc/" .. owner .. "/stat")
    local env = { SLUICE_STORE = store }
    local id, n = interrupted_id(env)
    assert.equal(1, n)
    h.write(dir .. "/gate", "")
    local code, out, err = h.cli({ "resume", id }, { env = env })
    assert.equal(0, code, err)
    assert.equal("3\n", out)
    assert.equal(1, count(dir .. "/log", "a"))
    if zombie then zombie:close() end
    os.execute("kill " .. tostring(parent) .. " 2>/dev/null")
    h.rm(dir)
  end)

  it("takes over a run of another host only once its lease has run out", function()
    local dir = h.tmpdir()
    local store = dir .. "/s.db"
    local file = gated(dir)
    -- The owner plays another machine: its death cannot be seen from here.
    local other = { SLUICE_STORE = store, SLUICE_HOST = "elsewhere", SLUICE_LEASE_MS = "3000" }
    local pid = h.cli({ "run", file, "--input", "0" }, { env = other, background = true })
    assert.is_true(held(dir, dir .. "/s.db"))
    os.execute("kill -9 " .. pid)
    assert.is_true(h.wait_for(function() return not alive(pid) end))
    local env = { SLUICE_STORE = store }
    local _, json = h.cli({ "runs", "--json" }, { env = env })
    local row = sl.decode(json)[1]
    local id = row.run_id
    assert.matches("^elsewhere:", row.owner)
    if row.status == "running" then
      -- Within the lease: refused, and nothing runs.
      local code, _, err = h.cli({ "resume", id }, { env = env })
      assert.equal(2, code)
      assert.matches("elsewhere:", err, 1, true)
      assert.matches("its lease runs until", err, 1, true)
    end
    assert.is_true(h.wait_for(function()
      local _, j = h.cli({ "runs", "--json" }, { env = env })
      return sl.decode(j)[1].status == "interrupted"
    end))
    h.write(dir .. "/gate", "")
    local code, out = h.cli({ "resume", id }, { env = env })
    assert.equal(0, code)
    assert.equal("3\n", out)
    assert.equal(1, count(dir .. "/log", "a"))
    h.rm(dir)
  end)

  it("lets exactly one of two racing resumes take a run over", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local file = gated(dir)
    local pid = h.cli({ "run", file, "--input", "0" }, { env = env, background = true })
    assert.is_true(held(dir, dir .. "/s.db"))
    os.execute("kill -9 " .. pid)
    assert.is_true(h.wait_for(function() return not alive(pid) end))
    local id = interrupted_id(env)
    h.write(dir .. "/gate", "")
    local p1, out1, err1 = h.cli({ "resume", id }, { env = env, background = true })
    local p2, out2, err2 = h.cli({ "resume", id }, { env = env, background = true })
    assert.is_true(h.wait_for(function() return not alive(p1) and not alive(p2) end))
    local outs = h.peek(out1) .. h.peek(out2)
    local errs = h.peek(err1) .. h.peek(err2)
    -- One printed the output; the other was refused (a live owner, or a
    -- takeover it lost) and ran nothing.
    local _, wins = outs:gsub("3\n", "")
    assert.equal(1, wins, "outputs: " .. outs .. " errors: " .. errs)
    assert.is_truthy(errs:find("being executed by", 1, true) or errs:find("taken over", 1, true)
      or errs:find("has completed", 1, true), errs)
    assert.equal(1, count(dir .. "/log", "a"))
    assert.equal(1, count(dir .. "/log", "z"))
    h.rm(dir)
  end)
end)

describe("the store's writes", function()
  it("do not make a run in another process wait while a long step computes", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    -- A step that computes (no waits, so the loop does not turn) until the
    -- gate appears, after steps that wrote to the store.
    local busy = h.script(([[
local sl = require "sluice"
local gate = %q
local steps = {}
for i = 1, 20 do steps[i] = sl.step{ name = "w" .. i, run = function(x) return x + 1 end } end
steps[21] = sl.step{ name = "compute", run = function(x)
  local f = assert(io.open(%q, "w")); f:write("started"); f:close()
  local n = 0
  while not io.open(gate) do for _ = 1, 1e5 do n = n + 1 end end
  return x
end }
return sl.pipeline{ name = "busy", table.unpack(steps) }
]]):format(dir .. "/gate", dir .. "/started"), dir, "busy.lua")
    local pid = h.cli({ "run", busy, "--input", "0" }, { env = env, background = true })
    assert.is_true(h.wait_for(function() return exists(dir .. "/started") end))
    -- While it computes, another process records a whole run.
    local code, out, err = h.cli({ "run", "scripts/examples/hello.lua", "--input", '{"name":"B"}' },
      { env = env })
    assert.equal(0, code, err)
    assert.equal('"Hello, B"\n', out)
    assert.is_true(alive(pid), "the long step should still be computing")
    h.write(dir .. "/gate", "")
    assert.is_true(h.wait_for(function() return not alive(pid) end))
    local _, json = h.cli({ "runs", "--json" }, { env = env })
    local rows = sl.decode(json)
    assert.equal(2, #rows)
    for _, r in ipairs(rows) do assert.equal("completed", r.status) end
    h.rm(dir)
  end)

  it("store a large value once however many steps pass it on, and bring it back on resume", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local file = h.script(([[
local sl = require "sluice"
local gate = %q
local steps = { sl.step{ name = "make", run = function(n)
  return string.rep("x", n) end } }
for i = 2, 20 do steps[i] = sl.step{ name = "pass" .. i, run = function(v) return v end } end
steps[21] = sl.step{ name = "hold", run = function(v, ctx)
  while not io.open(gate) do ctx:sleep(0.02) end
  return #v end }
return sl.pipeline{ name = "big", table.unpack(steps) }
]]):format(dir .. "/gate"), dir, "big.lua")
    local size = 4 * 1024 * 1024
    local pid = h.cli({ "run", file, "--input", tostring(size) }, { env = env, background = true })
    assert.is_true(h.wait_for(function()
      local _, rows = h.cli({ "runs", "--json" }, { env = env })
      local first = (sl.decode(rows) or {})[1]
      if not first then return false end
      local _, j = h.cli({ "show", "--json", first.run_id }, { env = env })
      local run = j ~= "" and sl.decode(j)
      if not run or not run.steps then return false end
      local n = 0
      for _, s in ipairs(run.steps) do if s.status == "completed" then n = n + 1 end end
      return n >= 20
    end))
    os.execute("kill -9 " .. pid)
    assert.is_true(h.wait_for(function() return not alive(pid) end))
    local _, stats = h.cli({ "store", "stats", "--json" }, { env = env })
    local st = sl.decode(stats)
    -- Twenty outputs of 4 MB, stored once.
    assert.is_true(st.value_bytes < 2 * size, "stored " .. st.value_bytes .. " bytes of values")
    assert.is_true(st.file_bytes < 4 * size, "the file holds " .. st.file_bytes .. " bytes")
    h.write(dir .. "/gate", "")
    local id = interrupted_id(env)
    local code, out = h.cli({ "resume", id }, { env = env })
    assert.equal(0, code)
    assert.equal(tostring(size) .. "\n", out)
    h.rm(dir)
  end)
end)

describe("after a crash", function()
  it("checks the whole store once before writing to it again, and names what is damaged", function()
    local dir = h.tmpdir()
    local store = dir .. "/s.db"
    -- Enough values that most pages have left the log for the file.
    local eng = sl.engine{ store = store }
    local fill = sl.pipeline{ name = "fill", sl.step{ name = "s", run = function(i)
      return string.rep(string.char(65 + i % 26), 20000) .. i end } }
    for i = 1, 300 do eng:run(fill, i) end
    eng = nil
    collectgarbage()
    local env = { SLUICE_STORE = store }
    local file = gated(dir)
    local pid = h.cli({ "run", file, "--input", "0" }, { env = env, background = true })
    assert.is_true(h.wait_for(function() return count(dir .. "/log", "hold") == 1 end))
    os.execute("kill -9 " .. pid)
    assert.is_true(h.wait_for(function() return not h.alive(pid) end))
    -- A page in the middle of the file is damaged (as a torn write would).
    local f = assert(io.open(store, "r+b"))
    local pages = f:seek("end") // 4096
    f:seek("set", (pages // 3) * 4096)
    f:write(string.rep("\255", 4096))
    f:close()
    local code, _, err = h.cli({ "run", file, "--input", "5" }, { env = env })
    assert.equal(2, code)
    assert.matches("s.db: is damaged", err, 1, true)
    assert.matches("sluice store check", err, 1, true)
    h.rm(dir)
  end)

  it("goes on once the check has passed, leaving the interrupted run to resume", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local file = gated(dir)
    local pid = h.cli({ "run", file, "--input", "0" }, { env = env, background = true })
    assert.is_true(h.wait_for(function() return count(dir .. "/log", "hold") == 1 end))
    os.execute("kill -9 " .. pid)
    assert.is_true(h.wait_for(function() return not h.alive(pid) end))
    h.write(dir .. "/gate", "")
    local one = h.script([[
local sl = require "sluice"
return sl.pipeline{ name = "one", sl.step{ name = "s", run = function(x) return x end } }
]], dir, "one.lua")
    -- The first writer checks; the interrupted run stays for a resume.
    assert.equal(0, (h.cli({ "run", one, "--input", "1" }, { env = env })))
    local _, json = h.cli({ "runs", "--json", "--status", "interrupted" }, { env = env })
    assert.equal(1, #sl.decode(json))
    assert.equal(0, (h.cli({ "run", one, "--input", "2" }, { env = env })))
    h.rm(dir)
  end)
end)

describe("retention", function()
  it("prunes old runs with what only they refer to, and vacuum gives the space back", function()
    local dir = h.tmpdir()
    local store = dir .. "/s.db"
    local eng = sl.engine{ store = store }
    local big = sl.pipeline{ name = "big", sl.step{ name = "s", run = function(n)
      return string.rep("y", 100000) .. n end } }
    for i = 1, 6 do assert.equal("completed", eng:run(big, i).status) end
    eng = nil
    collectgarbage()
    local env = { SLUICE_STORE = store }
    local _, before = h.cli({ "store", "stats", "--json" }, { env = env })
    before = sl.decode(before)
    assert.equal(6, before.runs)
    assert.equal(6, before.values)
    local code, out = h.cli({ "runs", "prune", "--keep", "2" }, { env = env })
    assert.equal(0, code)
    assert.equal("removed 4 runs\n", out)
    local _, after = h.cli({ "store", "stats", "--json" }, { env = env })
    after = sl.decode(after)
    assert.equal(2, after.runs)
    assert.equal(2, after.values)
    code = h.cli({ "store", "vacuum" }, { env = env })
    assert.equal(0, code)
    local _, vac = h.cli({ "store", "stats", "--json" }, { env = env })
    assert.is_true(sl.decode(vac).file_bytes < before.file_bytes)
    assert.equal(0, (h.cli({ "store", "check" }, { env = env })))
    -- Nothing older than a week: nothing goes.
    code, out = h.cli({ "runs", "prune", "--older-than", "7d" }, { env = env })
    assert.equal("removed 0 runs\n", out)
    local bad, _, err = h.cli({ "runs", "prune", "--older-than", "soon" }, { env = env })
    assert.equal(2, bad)
    assert.matches("7d, 12h, 30m or 90s", err, 1, true)
    h.rm(dir)
  end)

  it("keeps the newest runs whatever their age when given both an age and a count", function()
    local dir = h.tmpdir()
    local store = dir .. "/s.db"
    local eng = sl.engine{ store = store }
    local p = sl.pipeline{ name = "p", sl.step{ name = "s", run = function(x) return x end } }
    for i = 1, 5 do eng:run(p, i) end
    eng = nil
    collectgarbage()
    os.execute("sleep 0.05")
    local env = { SLUICE_STORE = store }
    -- All five ended more than 10 ms ago; the 3 newest stay.
    local _, out = h.cli({ "runs", "prune", "--older-than", "0.01s", "--keep", "3" }, { env = env })
    assert.equal("removed 2 runs\n", out)
    h.rm(dir)
  end)

  it("applies a pipeline's retain policy as its runs end, never to a run that can resume", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local file = h.script([[
local sl = require "sluice"
return sl.pipeline{ name = "kept", retain = { keep = 2 },
  sl.step{ name = "s", run = function(x, ctx)
    if x == "wait" then return ctx:sleep(60) end
    return x end } }
]], dir, "kept.lua")
    -- A run left interrupted (killed) is not one the policy may delete.
    local pid = h.cli({ "run", file, "--input", '"wait"' }, { env = env, background = true })
    assert.is_true(h.wait_for(function()
      local _, j = h.cli({ "runs", "--json" }, { env = env })
      return #(sl.decode(j) or {}) == 1
    end))
    os.execute("kill -9 " .. pid)
    assert.is_true(h.wait_for(function() return not alive(pid) end))
    for i = 1, 4 do assert.equal(0, (h.cli({ "run", file, "--input", tostring(i) }, { env = env }))) end
    local _, json = h.cli({ "runs", "--json" }, { env = env })
    local rows = sl.decode(json)
    local seen = {}
    for _, r in ipairs(rows) do seen[#seen + 1] = r.status end
    table.sort(seen)
    assert.same({ "completed", "completed", "interrupted" }, seen)
    h.rm(dir)
  end)

  it("applies an engine's retain policy to every pipeline it records", function()
    local dir = h.tmpdir()
    local store = dir .. "/s.db"
    local p = sl.pipeline{ name = "p", sl.step{ name = "s", run = function(x) return x end } }
    local q = sl.pipeline{ name = "q", sl.step{ name = "s", run = function(x) return x end } }
    local eng = sl.engine{ store = store }
    for i = 1, 3 do eng:run(p, i); eng:run(q, i) end
    eng = sl.engine{ store = store, retain = { keep = 1 } }
    eng:run(q, 9)
    eng = nil
    collectgarbage()
    local _, json = h.cli({ "runs", "--json" }, { env = { SLUICE_STORE = store } })
    local rows = sl.decode(json)
    assert.equal(1, #rows)
    assert.equal("q", rows[1].pipeline)
    h.rm(dir)
  end)

  it("refuses a retain policy it cannot follow, naming the file and line", function()
    local ok, err = pcall(function()
      return sl.pipeline{ name = "p", retain = { dayz = 3 },
        sl.step{ name = "s", run = function(x) return x end } }
    end)
    assert.is_false(ok)
    assert.matches("ownership_spec.lua:%d+:", err)
    assert.matches("unknown field 'dayz'", err, 1, true)
    assert.matches("did you mean 'days'", err, 1, true)
    ok, err = pcall(sl.engine, { retain = { keep = 0 } })
    assert.is_false(ok)
    assert.matches("keep", err, 1, true)
    ok, err = pcall(sl.pipeline, { name = "p", retain = {},
      sl.step{ name = "s", run = function(x) return x end } })
    assert.is_false(ok)
    assert.matches("neither days nor keep", err, 1, true)
    -- The usual last line of a pipeline file is a tail call, which leaves
    -- no frame for the file: the error still names it, and a line of the
    -- definition.
    local dir = h.tmpdir()
    local file = h.script([[
local sl = require "sluice"
return sl.pipeline{ name = "p", retain = { days = -1 },
  sl.step{ name = "s", run = function(x) return x end } }
]], dir, "tail.lua")
    local code, _, cerr = h.cli({ "check", file })
    assert.equal(2, code)
    assert.matches("tail.lua:[23]: pipeline 'p': option 'retain'", cerr)
    h.rm(dir)
  end)
end)

describe("private files", function()
  it("makes the store, its log and its directory private, and the trace file", function()
    local dir = h.tmpdir()
    local store = dir .. "/deep/er/s.db"
    local trace = dir .. "/spans.jsonl"
    local code = h.cli({ "run", "scripts/examples/hello.lua", "--input", '{"name":"A"}',
      "--trace", trace }, { env = { SLUICE_STORE = store } })
    assert.equal(0, code)
    assert.equal("600", mode(store))
    assert.equal("700", mode(dir .. "/deep"))
    assert.equal("700", mode(dir .. "/deep/er"))
    assert.equal("600", mode(trace))
    if exists(store .. "-wal") then assert.equal("600", mode(store .. "-wal")) end
    if exists(store .. "-shm") then assert.equal("600", mode(store .. "-shm")) end
    h.rm(dir)
  end)

  it("never creates a store or its directories for a command that only reads", function()
    local dir = h.tmpdir()
    local store = dir .. "/not/yet/s.db"
    local env = { SLUICE_STORE = store }
    local code, out = h.cli({ "runs" }, { env = env })
    assert.equal(0, code)
    assert.equal("no runs\n", out)
    code, out = h.cli({ "runs", "--json" }, { env = env })
    assert.equal("[]\n", out)
    code = h.cli({ "cache", "stats" }, { env = env })
    assert.equal(0, code)
    local err
    code, _, err = h.cli({ "show", "01ABC" }, { env = env })
    assert.equal(2, code)
    assert.matches("there is no store at", err, 1, true)
    assert.is_false(exists(dir .. "/not"))
    -- A store another process has just made, with nothing in it yet.
    h.write(dir .. "/empty.db", "")
    code, out = h.cli({ "runs", "--json" }, { env = { SLUICE_STORE = dir .. "/empty.db" } })
    assert.equal(0, code)
    assert.equal("[]\n", out)
    h.rm(dir)
  end)

  it("reads a store on a read-only medium, and says so to a command that writes", function()
    local dir = h.tmpdir()
    local store = dir .. "/s.db"
    local env = { SLUICE_STORE = store }
    assert.equal(0, (h.cli({ "run", "scripts/examples/hello.lua", "--input", '{"name":"A"}' },
      { env = env })))
    os.execute("chmod 0500 " .. h.quote(dir) .. " && chmod 0400 " .. h.quote(store) .. "*")
    if os.getenv("USER") == "root" or io.popen("id -u"):read("l") == "0" then
      -- root writes where it likes; the medium cannot be made read-only here.
      os.execute("chmod -R u+w " .. h.quote(dir))
      h.rm(dir)
      return
    end
    local code, out = h.cli({ "runs", "--json" }, { env = env })
    assert.equal(0, code)
    assert.equal(1, #sl.decode(out))
    local err
    code, _, err = h.cli({ "run", "scripts/examples/hello.lua", "--input", '{"name":"B"}' },
      { env = env })
    assert.equal(2, code)
    assert.matches("read-only", err, 1, true)
    os.execute("chmod -R u+w " .. h.quote(dir))
    h.rm(dir)
  end)
end)
