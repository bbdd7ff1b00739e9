-- Durable runs: the store, resume after kill -9, human pauses, and the
-- errors around them. These drive the real sluice command.
local sl = require "sluice"
local h = require "helpers"

-- A pipeline whose steps each append their name to a side-effect file,
-- then sleep, so a test can kill the process between steps.
local function counted(dir)
  return h.script(([[
local sl = require "sluice"
local log = %q
local function mark(name)
  local f = assert(io.open(log, "a")); f:write(name, "\n"); f:close()
end
local function step(name, nap)
  return sl.step{ name = name, run = function(x, ctx)
    mark(name)
    ctx:sleep(nap or 0.05)
    return x + 1
  end }
end
local loop_body = sl.step{ name = "iter", run = function(x, ctx)
  mark("iter" .. x); ctx:sleep(0.05); return x + 1 end }
return sl.pipeline{ name = "counted",
  step("a"), step("b"),
  sl.parallel{ name = "fan", branches = { left = step("left", 0.08), right = step("right", 0.12) },
    merge = "last_wins" },
  sl.step{ name = "pick", run = function(x) return x.left end },
  sl.loop{ name = "loop", body = loop_body, stop_when = function(out, ctx, i) return i >= 4 end },
  step("z"),
}
]]):format(dir .. "/log"), dir, "counted.lua")
end

local function count(path, name)
  local n = 0
  local f = io.open(path)
  if not f then return 0 end
  for line in f:lines() do if line == name then n = n + 1 end end
  f:close()
  return n
end

describe("durable runs", function()
  it("survive kill -9: a resume runs no completed step twice, inside parallel and loop too", function()
    local dir = h.tmpdir()
    local file = counted(dir)
    local store = dir .. "/state.db"
    local env = { SLUICE_STORE = store }
    -- Uninterrupted, for the expected output.
    local code, out = h.cli({ "run", file, "--input", "0" }, { env = { SLUICE_STORE = dir .. "/ref.db" } })
    assert.equal(0, code)
    local expected = out
    os.remove(dir .. "/log")
    -- Each kill lands while the steps named in `at` are in progress; those
    -- in `done` had completed, and been recorded, well before.
    for _, case in ipairs{ { at = { "b" }, done = {} },
                           { at = { "left", "right" }, done = { "a" } },
                           { at = { "iter4" }, done = { "a", "b", "left", "right" } } } do
      local kill_after = table.concat(case.at, "+")
      local pid = h.cli({ "run", file, "--input", "0" }, { env = env, background = true })
      assert.is_true(h.wait_for(function()
        for _, name in ipairs(case.at) do if count(dir .. "/log", name) < 1 then return false end end
        return true
      end))
      os.execute("kill -9 " .. pid)
      assert.is_true(h.wait_for(function() return not h.alive(pid) end))
      -- Its process is gone: the run shows as interrupted, and resumes.
      local _, list = h.cli({ "runs", "--json", "--status", "interrupted" }, { env = env })
      local rows = sl.decode(list)
      assert.equal(1, #rows)
      -- What the store holds as completed must not run again; what was in
      -- flight (the steps in `at`, and on a loaded machine perhaps the next,
      -- or the last ones to finish before the kill) may.
      local _, shown = h.cli({ "show", "--json", rows[1].run_id }, { env = env })
      local done, iters = {}, 0
      for _, s in ipairs(sl.decode(shown).steps) do
        if s.kind == "step" and s.status == "completed" then
          if s.name == "iter" then iters = iters + 1 else done[s.name] = true end
        end
      end
      for i = 0, iters - 1 do done["iter" .. (3 + i)] = true end
      for _, name in ipairs(case.done) do
        assert.is_true(done[name], name .. " had completed well before a kill at " .. kill_after)
      end
      code, out = h.cli({ "resume", rows[1].run_id }, { env = env })
      assert.equal(0, code)
      assert.equal(expected, out)
      for _, name in ipairs{ "a", "b", "left", "right", "iter3", "iter4", "iter5", "iter6", "z" } do
        local n = count(dir .. "/log", name)
        if done[name] then
          assert.equal(1, n, name .. " after a kill at " .. kill_after)
        else
          assert.is_true(n == 1 or n == 2, name .. " after a kill at " .. kill_after)
        end
      end
      os.remove(dir .. "/log")
    end
    h.rm(dir)
  end)

  it("restore after kill -9 what completed steps changed in ctx.state", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/state.db" }
    local file = h.script(([[
      local sl = require "sluice"
      local mark = %q
      return sl.pipeline{ name = "st",
        sl.step{ name = "set", run = function(x, ctx)
          for i = 1, 50 do ctx.state["k" .. i] = i end
          ctx.state.nested = { deep = { "x" } }
          return x
        end },
        sl.step{ name = "drop", run = function(x, ctx) ctx.state.k1 = nil; ctx.state.k2 = "two"; return x end },
        sl.step{ name = "wait", run = function(x, ctx)
          ctx:sleep(0.02)   -- what completed is committed before the loop blocks
          local f = io.open(mark, "w"); f:write("waiting"); f:close()
          ctx:sleep(30)
          return x
        end },
        sl.step{ name = "read", run = function(_, ctx)
          return { k1 = ctx.state.k1, k2 = ctx.state.k2, k50 = ctx.state.k50, deep = ctx.state.nested.deep[1] }
        end },
      }
    ]]):format(dir .. "/mark"), dir, "st.lua")
    local pid = h.cli({ "run", file }, { env = env, background = true })
    assert.is_true(h.wait_for(function() return h.peek(dir .. "/mark") == "waiting" end))
    os.execute("kill -9 " .. pid)
    assert.is_true(h.wait_for(function() return not h.alive(pid) end))
    local rows = sl.decode(select(2, h.cli({ "runs", "--json" }, { env = env })))
    -- The sleep is what was in flight; it runs again, briefly this time.
    h.write(file, h.read(file):gsub("ctx:sleep%(30%)", "ctx:sleep(0)"))
    local code, out, err = h.cli({ "resume", rows[1].run_id, "--force" }, { env = env })
    assert.equal("", err)
    assert.equal(0, code)
    assert.same({ k2 = "two", k50 = 50, deep = "x" }, sl.decode(out))
    h.rm(dir)
  end)

  it("fail a step whose state or output the store cannot keep, naming where, rather than record it", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/state.db" }
    local file = h.script([[
      local sl = require "sluice"
      return sl.pipeline{ name = "nan", sl.step{ name = "bad", run = function(_, ctx)
        ctx.state.stats = { mean = 0/0 }
        return 1
      end } }
    ]], dir, "nan.lua")
    local code, _, err = h.cli({ "run", file }, { env = env })
    assert.equal(1, code)
    assert.matches("step 'bad' failed: the state it changed cannot be stored with the run, so it "
      .. "could not be restored on resume: cannot encode NaN at ctx.state.stats.mean", err, 1, true)
    local shown = sl.decode(select(2, h.cli({ "show", sl.decode(select(2, h.cli({ "runs", "--json" },
      { env = env })))[1].run_id, "--json" }, { env = env })))
    assert.equal("failed", shown.status)
    -- Input nested deeper than the store can keep is refused at the door.
    local deep = string.rep("[", 250) .. string.rep("]", 250)
    code, _, err = h.cli({ "run", file, "--input", deep }, { env = env })
    assert.equal(2, code)
    assert.matches("nesting deeper than 200", err, 1, true)
    h.rm(dir)
  end)

  it("record runs and steps for runs and show", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local code, out = h.cli({ "run", "scripts/examples/hello.lua", "--input", '{"name":"Ada"}', "--json" }, { env = env })
    assert.equal(0, code)
    local id = sl.decode(out).run_id
    local _, list = h.cli({ "runs", "--json" }, { env = env })
    local rows = sl.decode(list)
    assert.equal(id, rows[1].run_id)
    assert.equal("hello", rows[1].pipeline)
    assert.equal("completed", rows[1].status)
    local _, shown = h.cli({ "show", id, "--json" }, { env = env })
    local s = sl.decode(shown)
    assert.equal(id, s.run_id)
    h.rm(dir)
  end)
end)

describe("runs, show and traces", function()
  it("list runs newest first, show the step tree, and write OpenTelemetry spans", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local file = h.script([[
local sl = require "sluice"
return sl.pipeline{ name = "traced",
  sl.step{ name = "a", run = function(x) return x + 1, { tokens = 1200, cost = 0.01 } end },
  sl.map{ name = "each", over = function(x) return { x, x } end,
    body = sl.step{ name = "item", run = function(v) return v * 2 end } },
  sl.step{ name = "boom", run = function() error("late failure") end } }
]], dir, "t.lua")
    local trace = dir .. "/spans.jsonl"
    local code = h.cli({ "run", file, "--input", "1", "--trace", trace }, { env = env })
    assert.equal(1, code)
    local code2, out2 = h.cli({ "run", "scripts/examples/hello.lua", "--input", '{"name":"B"}' }, { env = env })
    assert.equal(0, code2)
    local _, list = h.cli({ "runs" }, { env = env })
    local first, second = list:find("hello", 1, true), list:find("traced", 1, true)
    assert.is_truthy(first and second and first < second)
    assert.matches("failed", list, 1, true)
    local _, json = h.cli({ "runs", "--json", "--pipeline", "traced" }, { env = env })
    local rows = sl.decode(json)
    assert.equal(1, #rows)
    local _, tree = h.cli({ "show", rows[1].run_id }, { env = env })
    assert.matches("traced (pipeline)", tree, 1, true)
    assert.matches("├─ a (step)", tree, 1, true)
    assert.matches("item[1] (step)", tree, 1, true)
    assert.matches("1,200 tok", tree, 1, true)
    assert.matches("late failure", tree, 1, true)
    local spans, ids = {}, {}
    for line in io.lines(trace) do
      -- One OTLP/JSON TracesData object per line, with one span.
      local doc = sl.decode(line)
      local rs = doc.resourceSpans[1]
      assert.equal("service.name", rs.resource.attributes[1].key)
      assert.equal("sluice", rs.scopeSpans[1].scope.name)
      local s = rs.scopeSpans[1].spans[1]
      assert.equal(1, s.kind)
      spans[#spans + 1] = s
      ids[s.spanId] = s
    end
    assert.equal(6, #spans)
    for _, s in ipairs(spans) do
      assert.matches("^%x+$", s.traceId)
      assert.equal(32, #s.traceId)
      assert.equal(16, #s.spanId)
      assert.is_string(s.startTimeUnixNano)
      assert.is_true(tonumber(s.endTimeUnixNano) >= tonumber(s.startTimeUnixNano))
      if s.name ~= "traced" then assert.is_table(ids[s.parentSpanId]) end
      local attrs = {}
      for _, a in ipairs(s.attributes) do attrs[a.key] = a.value end
      assert.is_table(attrs["sluice.kind"])
      if s.name == "boom" then
        assert.equal(2, s.status.code)   -- STATUS_CODE_ERROR
        assert.equal("late failure", attrs["sluice.error.message"].stringValue)
      end
    end
    local code3, _, err = h.cli({ "run", file, "--trace", "/nonexistent/dir/t.jsonl" }, { env = env })
    assert.equal(2, code3)
    assert.matches("--trace", err, 1, true)
    h.rm(dir)
  end)

  it("refuses a store that is not a database", function()
    local dir = h.tmpdir()
    local bad = h.write(dir .. "/bad.db", ("garbage"):rep(1000))
    local code, _, err = h.cli({ "run", "scripts/examples/hello.lua", "--input", '{"name":"A"}', "--store", bad })
    assert.equal(2, code)
    assert.matches("bad.db", err, 1, true)
    h.rm(dir)
  end)
end)

describe("resume", function()
  local dir, env
  before_each(function() dir = h.tmpdir(); env = { SLUICE_STORE = dir .. "/s.db" } end)
  after_each(function() h.rm(dir) end)

  it("refuses an unknown id, a completed run, and --input for a run that is not paused", function()
    local code, _, err = h.cli({ "resume", "NOPE" }, { env = env })
    assert.equal(2, code)
    assert.matches("no run with id 'NOPE'", err, 1, true)
    local _, out = h.cli({ "run", "scripts/examples/hello.lua", "--input", '{"name":"A"}', "--json" }, { env = env })
    local id = sl.decode(out).run_id
    code, _, err = h.cli({ "resume", id }, { env = env })
    assert.equal(2, code)
    assert.matches("run " .. id .. " has completed: only a paused or interrupted run can be resumed", err, 1, true)
  end)

  it("refuses a changed pipeline unless --force", function()
    local file = h.script([[
local sl = require "sluice"
return sl.pipeline{ name = "p",
  sl.step{ name = "ask", run = function(x, ctx) return ctx:human("go?") end },
  sl.step{ name = "v1", run = function(x) return "v1:" .. tostring(x) end } }
]], dir, "p.lua")
    local code, id = h.cli({ "run", file }, { env = env })
    assert.equal(3, code)
    id = id:match("%S+")
    h.write(file, (h.read(file):gsub("v1:", "v2:")))
    local err
    code, _, err = h.cli({ "resume", id, "--input", '"yes"' }, { env = env })
    assert.equal(2, code)
    assert.matches("changed since run " .. id .. " started", err, 1, true)
    local out
    code, out = h.cli({ "resume", id, "--input", '"yes"', "--force" }, { env = env })
    assert.equal(0, code)
    assert.equal('"v2:yes"\n', out)
  end)
end)

describe("resume keeps what the run started with", function()
  -- A pipeline that charges one request per step and waits in its second
  -- step (touching `mark` then) for a kill; `tail` runs after the wait.
  local function waiting(dir, tail)
    return h.script(([[
      local sl = require "sluice"
      local mark = %q
      local function charge(name)
        return sl.step{ name = name, run = function(x, ctx) ctx:charge{ requests = 1 }; return x end }
      end
      return sl.pipeline{ name = "w", charge("one"),
        sl.step{ name = "wait", run = function(x, ctx)
          ctx:charge{ requests = 1 }
          if not io.open(mark) then
            ctx:sleep(0.02)   -- what completed is committed before the loop blocks
            local f = io.open(mark, "w"); f:write("waiting"); f:close()
            ctx:sleep(30)
          end
          return x
        end },
        %s }
    ]]):format(dir .. "/mark", tail), dir, "w.lua")
  end

  local function kill_when_waiting(dir, args, env)
    local pid = h.cli(args, { env = env, background = true })
    assert.is_true(h.wait_for(function() return h.peek(dir .. "/mark") == "waiting" end))
    os.execute("kill -9 " .. pid)
    assert.is_true(h.wait_for(function() return not h.alive(pid) end))
    return sl.decode(select(2, h.cli({ "runs", "--json" }, { env = env })))[1].run_id
  end

  it("holds a resumed run to the --budget it was started with", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local file = waiting(dir, 'charge("three"), charge("four")')
    local id = kill_when_waiting(dir, { "run", file, "--budget", "requests=3" }, env)
    local code, _, err = h.cli({ "resume", id }, { env = env })
    assert.equal(1, code)
    assert.matches("(quota)", err, 1, true)
    assert.matches("requests", err, 1, true)
    h.rm(dir)
  end)

  it("keeps its memory limit and its trace file on resume", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local file = waiting(dir, [[sl.step{ name = "hog", run = function()
      local t = {}
      for i = 1, 1e7 do t[i] = ("x"):rep(64) .. i end
      return #t
    end }]])
    local trace = dir .. "/spans.jsonl"
    local id = kill_when_waiting(dir, { "run", file, "--memory-limit", "64", "--trace", trace }, env)
    local before = h.lines(trace)
    local code, _, err = h.cli({ "resume", id }, { env = env })
    assert.equal(1, code)
    assert.matches("step 'hog' (limit) failed", err, 1, true)
    assert.is_true(h.lines(trace) > before)
    h.rm(dir)
  end)
end)

describe("interrupted and cancelled runs", function()
  it("tell SIGINT (interrupted, resumable) from sl.abort (cancelled, for good)", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local file = h.script(([[
      local sl = require "sluice"
      local mark = %q
      return {
        nap = sl.pipeline{ name = "nap", sl.step{ name = "sleepy", run = function(_, ctx)
          if not io.open(mark) then
            ctx:sleep(0.02)   -- what completed is committed before the loop blocks
            local f = io.open(mark, "w"); f:write("waiting"); f:close()
            ctx:sleep(30)
          end
          return "rested"
        end } },
        stop = sl.pipeline{ name = "stop", sl.step{ name = "quitter", run = function()
          sl.abort("nothing more to do")
        end } },
      }
    ]]):format(dir .. "/mark"), dir, "ia.lua")
    local pid, out = h.cli({ "run", file, "--pipeline", "nap", "--json" }, { env = env, background = true })
    assert.is_true(h.wait_for(function() return h.peek(dir .. "/mark") == "waiting" end))
    os.execute("kill -INT " .. pid)
    assert.is_true(h.wait_for(function() return not h.alive(pid) end))
    local r = sl.decode(h.read(out))
    assert.equal("interrupted", r.status)
    local rows = sl.decode(select(2, h.cli({ "runs", "--json" }, { env = env })))
    assert.equal("interrupted", rows[1].status)
    local code, resumed = h.cli({ "resume", r.run_id }, { env = env })
    assert.equal(0, code)
    assert.equal('"rested"\n', resumed)

    local err
    code, out, err = h.cli({ "run", file, "--pipeline", "stop", "--json" }, { env = env })
    assert.equal(1, code)
    r = sl.decode(out)
    assert.same({ "cancelled", "cancelled", "quitter", true },
      { r.status, r.error.kind, r.error.step, r.error.aborted })
    rows = sl.decode(select(2, h.cli({ "runs", "--json" }, { env = env })))
    assert.equal("cancelled", rows[1].status)
    code, out, err = h.cli({ "resume", r.run_id }, { env = env })
    assert.equal(2, code)
    assert.matches("was aborted by step 'quitter' (nothing more to do): an aborted run has "
      .. "ended for good and cannot be resumed", err, 1, true)
    h.rm(dir)
  end)
end)

describe("a store that cannot be written", function()
  it("fails the run, exit 1, naming the store and why, and resumes once there is room", function()
    if os.getenv("USER") ~= "root" and not io.popen("id -u"):read("l"):match("^0$") then
      pending("needs root to mount a small tmpfs as a full disk")
      return
    end
    local dir = h.tmpdir()
    local mnt = dir .. "/disk"
    os.execute("mkdir -p " .. h.quote(mnt))
    if not os.execute("mount -t tmpfs -o size=1m tmpfs " .. h.quote(mnt) .. " 2>/dev/null") then
      pending("cannot mount a tmpfs here")
      h.rm(dir)
      return
    end
    local ok, err = pcall(function()
      local env = { SLUICE_STORE = mnt .. "/s.db" }
      local file = h.script([[
        local sl = require "sluice"
        local steps = {}
        for i = 1, 40 do
          steps[i] = sl.step{ name = "s" .. i, run = function(n, ctx)
            ctx:sleep(0.001)
            ctx.state["blob" .. i] = ("x"):rep(60000) .. i
            return n + 1
          end }
        end
        return sl.pipeline{ name = "big", table.unpack(steps) }
      ]], dir, "big.lua")
      local code, out, stderr = h.cli({ "run", file, "--input", "0" }, { env = env })
      assert.equal(1, code)
      assert.equal("", out)
      assert.matches("the store could not record the run", stderr, 1, true)
      assert.matches(mnt .. "/s.db", stderr, 1, true)
      assert.matches("full", stderr, 1, true)
      assert.is_true(os.execute("mount -o remount,size=64m " .. h.quote(mnt)))
      local rows = sl.decode(select(2, h.cli({ "runs", "--json" }, { env = env })))
      assert.equal(1, #rows)
      code, out = h.cli({ "resume", rows[1].run_id }, { env = env })
      assert.equal(0, code)
      assert.equal("40\n", out)
    end)
    os.execute("umount " .. h.quote(mnt))
    h.rm(dir)
    assert(ok, err)
  end)
end)

describe("human in the loop", function()
  local dir, env
  before_each(function() dir = h.tmpdir(); env = { SLUICE_STORE = dir .. "/s.db" } end)
  after_each(function() h.rm(dir) end)

  it("pauses the run (exit 3, id and message), refuses a wrong answer, and goes on with a right one", function()
    local file = h.script([[
local sl = require "sluice"
local calls = 0
return sl.pipeline{ name = "approve",
  sl.step{ name = "draft", run = function(x) return "draft of " .. x end },
  sl.human{ name = "review", message = "Ship it?", schema = {
    type = "object", required = { "ok" },
    properties = { ok = { type = "boolean" }, note = { type = "string" } } } },
  sl.step{ name = "after", run = function(a) return a.ok and ("shipped: " .. (a.note or "")) or "held" end },
}
]], dir, "h.lua")
    local code, out, err = h.cli({ "run", file, "--input", '"x"' }, { env = env })
    assert.equal(3, code)
    local id = out:match("%S+")
    assert.matches("run " .. id .. " paused", err, 1, true)
    assert.matches("Ship it?", err, 1, true)
    local _, list = h.cli({ "runs", "--json" }, { env = env })
    assert.equal("paused", sl.decode(list)[1].status)
    code, _, err = h.cli({ "resume", id }, { env = env })
    assert.equal(2, code)
    assert.matches("paused waiting for input", err, 1, true)
    code, _, err = h.cli({ "resume", id, "--input", '{"ok":"yes"}' }, { env = env })
    assert.equal(2, code)
    assert.matches("the answer for step 'review' was refused, the run stays paused", err, 1, true)
    assert.matches("$.ok", err, 1, true)
    _, list = h.cli({ "runs", "--json" }, { env = env })
    assert.equal("paused", sl.decode(list)[1].status)
    code, out = h.cli({ "resume", id, "--input", '{"ok":true,"note":"fine"}' }, { env = env })
    assert.equal(0, code)
    assert.equal('"shipped: fine"\n', out)
  end)

  it("pauses a run as a whole with waits in parallel branches, resuming them all", function()
    local file = h.script([[
local sl = require "sluice"
return sl.pipeline{ name = "two",
  sl.parallel{ name = "both", branches = {
    a = sl.human{ name = "ask_a", message = "A?" },
    b = sl.human{ name = "ask_b", message = "B?" },
    c = sl.step{ name = "calc", run = function(x, ctx) ctx:sleep(0.01); return 42 end } } },
  sl.step{ name = "join", run = function(t) return t.a .. "/" .. t.b .. "/" .. t.c end } }
]], dir, "two.lua")
    local code, out, err = h.cli({ "run", file }, { env = env })
    assert.equal(3, code)
    local id = out:match("%S+")
    assert.matches("A?", err, 1, true)
    assert.matches("B?", err, 1, true)
    code, out = h.cli({ "resume", id, "--input", '{"ask_a":"x","ask_b":"y"}' }, { env = env })
    assert.equal(0, code)
    assert.equal('"x/y/42"\n', out)
  end)

  it("needs a store", function()
    local r = sl.run(sl.pipeline{ name = "p", sl.human{ name = "ask", message = "?" } })
    assert.equal("failed", r.status)
    assert.matches("needs a durable run", r.error.message, 1, true)
  end)
end)

describe("sluice runs on a large store", function()
  it("lists 50 runs by default, newest first, and pages with --before", function()
    local dir = h.tmpdir()
    local store = dir .. "/s.db"
    local eng = sl.engine{ store = store }
    local one = sl.pipeline{ name = "one", sl.step{ name = "s", run = function(x) return x end } }
    local ids = {}
    for i = 1, 120 do ids[i] = eng:run(one, i).run_id end
    eng = nil
    collectgarbage()
    local env = { SLUICE_STORE = store }
    local code, json = h.cli({ "runs", "--json" }, { env = env })
    assert.equal(0, code)
    local rows = sl.decode(json)
    assert.equal(50, #rows)
    assert.equal(ids[120], rows[1].run_id)
    assert.equal(ids[71], rows[50].run_id)
    local _, text = h.cli({ "runs" }, { env = env })
    assert.matches("(50 shown; older runs: sluice runs --before " .. ids[71] .. ")", text, 1, true)
    local _, page2 = h.cli({ "runs", "--json", "--before", ids[71] }, { env = env })
    rows = sl.decode(page2)
    assert.equal(50, #rows)
    assert.equal(ids[70], rows[1].run_id)
    local _, all = h.cli({ "runs", "--json", "--limit", "0" }, { env = env })
    assert.equal(120, #sl.decode(all))
    local bad, _, err = h.cli({ "runs", "--limit", "-3" }, { env = env })
    assert.equal(2, bad)
    assert.matches("--limit must be a non-negative integer", err, 1, true)
    h.rm(dir)
  end)
end)

describe("tracing from the Lua API", function()
  it("writes OTLP/JSON spans for an engine given a trace file, and refuses one it cannot open", function()
    local dir = h.tmpdir()
    local path = dir .. "/spans.jsonl"
    local eng = sl.engine{ trace = path }
    local p = sl.pipeline{ name = "p", sl.step{ name = "s", run = function(x) return x + 1 end } }
    assert.equal(2, eng:run(p, 1).output)
    eng = nil
    collectgarbage()
    local names = {}
    for line in io.lines(path) do
      local span = sl.decode(line).resourceSpans[1].scopeSpans[1].spans[1]
      names[#names + 1] = span.name
    end
    table.sort(names)
    assert.same({ "p", "s" }, names)
    local ok, err = pcall(sl.engine, { trace = dir .. "/no/such/dir/t.jsonl" })
    assert.is_false(ok)
    assert.matches("t.jsonl", err, 1, true)
    h.rm(dir)
  end)
end)

describe("ctx:log", function()
  it("keeps structured records: a level, a message and fields, as the span's events", function()
    local dir = h.tmpdir()
    local path = dir .. "/spans.jsonl"
    local file = h.script(([[
local sl = require "sluice"
return sl.pipeline{ name = "logged",
  sl.step{ name = "s", run = function(x, ctx)
    ctx:log("plain")
    ctx:log("warn", "disk low", { free_mb = 3 })
    ctx:log({ just = "a table" })
    return x end },
  sl.step{ name = "chatty", run = function(x, ctx)
    for i = 1, 40 do ctx:log("line", i) end
    return x end } }
]]), dir, "logged.lua")
    local code, _, err = h.cli({ "run", file, "--input", "1", "--store", ":memory:", "--trace", path })
    assert.equal(0, code)
    assert.matches("%] plain\n", err)
    assert.matches("%] warn: disk low\t{\"free_mb\":3}\n", err)
    assert.matches("%] {\"just\":\"a table\"}\n", err)
    local spans = {}
    for line in io.lines(path) do
      local s = sl.decode(line).resourceSpans[1].scopeSpans[1].spans[1]
      spans[s.name] = s
    end
    local ev = spans.s.events
    assert.equal(3, #ev)
    local function attr(e, k)
      for _, a in ipairs(e.attributes) do if a.key == k then return a.value.stringValue end end
    end
    assert.equal("plain", ev[1].name)
    assert.equal("info", attr(ev[1], "log.level"))
    assert.equal("disk low", ev[2].name)
    assert.equal("warn", attr(ev[2], "log.level"))
    assert.same({ free_mb = 3 }, sl.decode(attr(ev[2], "log.fields")))
    assert.is_string(ev[2].timeUnixNano)
    assert.is_true(tonumber(ev[2].timeUnixNano) >= tonumber(spans.s.startTimeUnixNano))
    -- A span keeps at most 32; the rest went to stderr only.
    assert.equal(32, #spans.chatty.events)
    assert.matches("line\t40\n", err, 1, true)
    assert.is_nil(spans.logged.events)
    h.rm(dir)
  end)
end)

describe("ctx:log records in the store", function()
  it("are listed by show, in its text and JSON, and outlive a pause and resume", function()
    local dir = h.tmpdir()
    local file = h.script([[
local sl = require "sluice"
return sl.pipeline{ name = "kept",
  sl.step{ name = "fetch", run = function(x, ctx)
    ctx:log("warn", "slow source", { ms = 1200, host = "a\"b" })
    ctx:log("fetched", 3, "rows")
    return x end },
  sl.step{ name = "chatty", run = function(x, ctx)
    for i = 1, 40 do ctx:log("debug", "line", i) end
    return x end },
  sl.human{ name = "ok?", message = "go on?" },
  sl.step{ name = "after", run = function(x, ctx) ctx:log("resumed") return x end } }
]], dir, "kept.lua")
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local code, out = h.cli({ "run", file, "--input", "1" }, { env = env })
    assert.equal(3, code)
    local id = out:match("(%w+)")
    local _, text = h.cli({ "show", id }, { env = env })
    assert.matches("fetch %(step%)[^\n]*\n│ +log %+%d+%.%d+s warn: slow source  {\"host\":\"a\\\"b\",\"ms\":1200}\n", text)
    assert.matches("\n│ +log %+[%d.]+s fetched\t3\trows\n", text)
    assert.matches("log %+[%d.]+s debug: line\t32\n", text)
    assert.matches("%(8 more log records not kept%)", text)
    code = h.cli({ "resume", id, "--input", "true" }, { env = env })
    assert.equal(0, code)
    local _, js = h.cli({ "show", "--json", id }, { env = env })
    local steps = {}
    for _, s in ipairs(sl.decode(js).steps) do steps[s.name] = s end
    local logs = steps.fetch.logs
    assert.equal(2, #logs)
    assert.equal("warn", logs[1].level)
    assert.equal("slow source", logs[1].message)
    assert.same({ ms = 1200, host = "a\"b" }, logs[1].fields)
    assert.is_true(logs[1].time_ms > 1.7e12)
    assert.equal("info", logs[2].level)
    assert.equal(33, #steps.chatty.logs)
    assert.same({ dropped = 8 }, steps.chatty.logs[33])
    assert.equal("resumed", steps.after.logs[1].message)
    h.rm(dir)
  end)

  it("are in the result's steps, and a span counts the events it dropped", function()
    local e = sl.engine{}
    local p = sl.pipeline{ name = "r",
      sl.step{ name = "s", run = function(x, ctx)
        for i = 1, 35 do ctx:log("n", i) end
        ctx:log("error", "bad", { why = "x" })
        return x end } }
    local res = e:run(p, 1)
    local s = res.steps[2]
    assert.equal("s", s.name)
    assert.equal(33, #s.logs)
    assert.equal("n\t1", s.logs[1].message)
    assert.same({ dropped = 4 }, s.logs[33])
    local dir = h.tmpdir()
    local path = dir .. "/t.jsonl"
    local t = sl.engine{ trace = path }
    t:run(p, 1)
    t = nil
    collectgarbage()
    local dropped
    for line in io.lines(path) do
      local span = sl.decode(line).resourceSpans[1].scopeSpans[1].spans[1]
      if span.name == "s" then dropped = span.droppedEventsCount end
    end
    assert.equal(4, dropped)
    h.rm(dir)
  end)
end)

describe("an engine resuming the same run twice", function()
  it("restores what the run completed since it was last read", function()
    local dir = h.tmpdir()
    local file = h.script(([[
local sl = require "sluice"
local log = %q
local function mark(name) local f = assert(io.open(log, "a")); f:write(name, "\n"); f:close() end
return sl.pipeline{ name = "twice",
  sl.step{ name = "first", run = function(x) mark("first") return x end },
  sl.human{ name = "one", message = "1?" },
  sl.step{ name = "middle", run = function(x) mark("middle") return x end },
  sl.human{ name = "two", message = "2?" },
  sl.step{ name = "last", run = function(x) mark("last") return x end } }
]]):format(dir .. "/log"), dir, "twice.lua")
    local eng = sl.engine{ store = dir .. "/s.db" }
    local p = eng:load(file).twice
    local r = eng:run(p, 1)
    assert.equal("paused", r.status)
    local run = eng:resume(r.run_id, "a")
    assert.equal("paused", run:wait().status)
    run = eng:resume(r.run_id, "b")
    local res = run:wait()
    assert.equal("completed", res.status)
    assert.equal("b", res.output)
    local f = assert(io.open(dir .. "/log"))
    local text = f:read("a")
    f:close()
    assert.equal("first\nmiddle\nlast\n", text)
    h.rm(dir)
  end)
end)
