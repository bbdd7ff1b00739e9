-- Durable time: a ctx:sleep whose due time outlives the process that began
-- it, a worker that parks runs in long sleeps and claims them again when
-- due, and human steps whose question times out. Runs on SQLite and, under
-- pg_env.sh, on PostgreSQL.

local sl = require "sluice"
local h = require "helpers"

local function now_ms()
  local f = io.popen("date +%s%3N")
  local t = tonumber(f:read("l"))
  f:close()
  return t
end

local function submit(file, env, pipeline, input)
  local args = { "submit", file, "--input", input or "{}" }
  if pipeline then args[#args + 1] = "--pipeline"; args[#args + 1] = pipeline end
  local code, out, err = h.cli(args, { env = env })
  assert.equal(0, code, err)
  return (assert(out:match("^(%w+)\n$"), "an id"))
end

local function show(id, env)
  local code, out, err = h.cli({ "show", "--json", id }, { env = env })
  assert.equal(0, code, err)
  return sl.decode(out)
end

local function status_is(id, env, want)
  return function() return show(id, env).status == want end
end

local function kill(pid, sig)
  os.execute(("kill -%s %d 2>/dev/null"):format(sig or "TERM", pid))
  assert.is_true(h.wait_for(function() return not h.alive(pid) end))
end

-- A worker in the background, stopped when the test ends however it ends
-- (a failed assertion must not leave it running).
local function worker(args, env)
  local cmd = { "worker" }
  for _, a in ipairs(args) do cmd[#cmd + 1] = a end
  local pid, out, err = h.cli(cmd, { env = env, background = true })
  finally(function() os.execute(("kill -9 %d 2>/dev/null"):format(pid)) end)
  return pid, out, err
end

-- A step that marks the file `mark` once it began its sleep, then returns
-- when it woke (Unix ms).
local function sleeper(dir, seconds)
  return h.script(([[
local sl = require "sluice"
local mark = %q
local function ms()
  local f = io.popen("date +%%s%%3N"); local t = tonumber(f:read("l")); f:close(); return t
end
return {
  nap = sl.pipeline{ name = "nap",
    sl.step{ name = "before", run = function(x) return x end },
    sl.step{ name = "sleepy", run = function(x, ctx)
      local f = io.open(mark, "a"); f:write("began ", ms(), "\n"); f:close()
      ctx:sleep(%s)
      return { woke_ms = ms() }
    end },
  },
  quick = sl.pipeline{ name = "quick", sl.step{ name = "q", run = function(x) return x end } },
}
]]):format(dir .. "/mark", tostring(seconds)), dir, "nap.lua")
end

local function began(dir)
  local t = {}
  for line in (h.peek(dir .. "/mark") or ""):gmatch("[^\n]+") do
    t[#t + 1] = tonumber(line:match("began (%d+)"))
  end
  return t
end

describe("durable time", function()
  it("continue a run killed during a 3 s sleep, by a worker, at the original due time", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = h.new_store(dir) }
    local file = sleeper(dir, 3)
    local id = submit(file, env, "nap")
    -- This worker sleeps in process (the wait is below its threshold).
    local pid = worker({ "--poll", "0.05", "--park-after", "60" }, env)
    assert.is_true(h.wait_for(function() return #began(dir) == 1 end))
    local first = began(dir)[1]
    os.execute("sleep 1")
    kill(pid, "9")
    -- A second worker takes the run over from the dead one: the step runs
    -- again, and its sleep ends when the first one was due, not 3 s later.
    local pid2, out2, err2 = worker({ "--poll", "0.05", "--park-after", "60" }, env)
    assert.is_true(h.wait_for(status_is(id, env, "completed")))
    kill(pid2)
    local run = show(id, env)
    assert.equal(2, #began(dir))
    local woke = run.output.woke_ms
    assert.is_true(woke >= first + 3000, ("woke %d ms after it began: early"):format(woke - first))
    assert.is_true(woke < began(dir)[2] + 2900,
      ("woke %d ms after the second worker began it: the wait restarted"):format(woke - began(dir)[2]))
    -- The sleep's due time is with the step, as a record of its own.
    local sleeps = {}
    for _, s in ipairs(run.steps) do if s.kind == "sleep" then sleeps[#sleeps + 1] = s end end
    assert.equal(1, #sleeps)
    assert.equal("waited", sleeps[1].status)
    assert.equal("", h.read(err2):gsub("sluice: worker[^\n]*\n", ""))
    os.remove(out2)
    h.rm(dir)
  end)

  it("park a run in a long sleep, free its slot for other runs, and claim it again when due", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = h.new_store(dir) }
    local file = sleeper(dir, 2.5)
    local long = submit(file, env, "nap")
    local pid = worker({ "--concurrency", "1", "--poll", "0.05", "--park-after", "1" }, env)
    assert.is_true(h.wait_for(status_is(long, env, "waiting")))
    local parked = show(long, env)
    assert.is_nil(parked.owner)
    assert.is_number(parked.due_ms)
    local code, listed = h.cli({ "runs" }, { env = env })
    assert.equal(0, code)
    assert.matches(long .. "%s+nap%s+waiting.-due %d%d%d%d%-", listed)
    -- With one slot, other runs go through while the long one is parked.
    local quick = {}
    for i = 1, 3 do quick[i] = submit(file, env, "quick", tostring(i)) end
    for i = 1, 3 do assert.is_true(h.wait_for(status_is(quick[i], env, "completed"))) end
    assert.equal("waiting", show(long, env).status)
    assert.is_true(h.wait_for(status_is(long, env, "completed")))
    kill(pid)
    local run = show(long, env)
    assert.is_true(run.output.woke_ms >= parked.due_ms,
      ("woke %d ms before it was due"):format(parked.due_ms - run.output.woke_ms))
    -- The step ran again from its start once claimed; what completed
    -- before it was not.
    assert.equal(2, #began(dir))
    h.rm(dir)
  end)

  it("take up a parked run whose due time passed while no worker ran, at once", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = h.new_store(dir) }
    local file = sleeper(dir, 1.5)
    local id = submit(file, env, "nap")
    local pid = worker({ "--poll", "0.05", "--park-after", "0.5" }, env)
    assert.is_true(h.wait_for(status_is(id, env, "waiting")))
    kill(pid)
    local due = show(id, env).due_ms
    os.execute("sleep 2")
    local t = now_ms()
    assert.is_true(t > due)
    local code, _, err = h.cli({ "worker", "--poll", "0.05", "--until-idle" }, { env = env })
    assert.equal(0, code, err)
    local run = show(id, env)
    assert.equal("completed", run.status)
    assert.is_true(run.output.woke_ms - t < 1000)
    h.rm(dir)
  end)

  it("resume a run killed during its sleep at the same due time, from sluice run", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local file = sleeper(dir, 2)
    local pid = h.cli({ "run", file, "--pipeline", "nap", "--input", "{}" }, { env = env, background = true })
    assert.is_true(h.wait_for(function() return #began(dir) == 1 end))
    os.execute("sleep 0.5")
    kill(pid, "9")
    local rows = sl.decode(select(2, h.cli({ "runs", "--json" }, { env = env })))
    local code, out, err = h.cli({ "resume", rows[1].run_id }, { env = env })
    assert.equal(0, code, err)
    local woke = sl.decode(out).woke_ms
    local first, second = table.unpack(began(dir))
    assert.is_true(woke >= first + 2000)
    assert.is_true(woke < second + 1900)
    h.rm(dir)
  end)

  it("end an edited sleep that much after the recorded one began, not after its old length", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local file = sleeper(dir, 30)
    local pid = h.cli({ "run", file, "--pipeline", "nap", "--input", "{}" }, { env = env, background = true })
    assert.is_true(h.wait_for(function() return #began(dir) == 1 end))
    os.execute("sleep 0.2")
    kill(pid, "9")
    h.write(file, h.read(file):gsub("ctx:sleep%(30%)", "ctx:sleep(1)"))
    local rows = sl.decode(select(2, h.cli({ "runs", "--json" }, { env = env })))
    local code, out, err = h.cli({ "resume", rows[1].run_id, "--force" }, { env = env })
    assert.equal(0, code, err)
    local woke = sl.decode(out).woke_ms
    assert.is_true(woke >= began(dir)[1] + 1000)
    assert.is_true(woke < began(dir)[1] + 10000)
    h.rm(dir)
  end)
end)

describe("a human step's timeout", function()
  local function humans(dir)
    return h.script([[
local sl = require "sluice"
local escalate = sl.step{ name = "escalate", run = function(x) return "escalated " .. x.q end }
local function ask(name, extra)
  local spec = { name = name, message = "approve " .. name .. "?", timeout = 1 }
  for k, v in pairs(extra or {}) do spec[k] = v end
  return sl.human(spec)
end
return {
  value = sl.pipeline{ name = "value", ask("v", { on_timeout = "rejected" }) },
  step = sl.pipeline{ name = "step", ask("s", { on_timeout = escalate }) },
  fail = sl.pipeline{ name = "fail", ask("f") },
  long = sl.pipeline{ name = "long", sl.human{ name = "l", message = "ok?", timeout = 3600,
    on_timeout = "late" } },
}
]], dir, "humans.lua")
  end

  local function paused(file, env, pipeline)
    local code, _, err = h.cli({ "run", file, "--pipeline", pipeline, "--input", '{"q":"it"}' },
      { env = env })
    assert.equal(3, code, err)
    return (assert(err:match("run (%w+) paused"), err))
  end

  it("take the timeout path when resumed after it passed, with no answer", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local file = humans(dir)
    local ids = { value = paused(file, env, "value"), step = paused(file, env, "step"),
                  fail = paused(file, env, "fail") }
    -- Before it is due, a resume still needs the answer, and says when the
    -- question times out.
    local code, _, err = h.cli({ "resume", ids.value }, { env = env })
    assert.equal(2, code)
    assert.matches("paused waiting for input: resume it with %-%-input JSON, or after "
      .. "%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d, when its question times out", err)
    assert.equal("paused", show(ids.value, env).status)
    assert.is_number(show(ids.value, env).due_ms)
    os.execute("sleep 1.2")
    local out
    code, out, err = h.cli({ "resume", ids.value }, { env = env })
    assert.equal(0, code, err)
    assert.equal('"rejected"\n', out)
    code, out, err = h.cli({ "resume", ids.step }, { env = env })
    assert.equal(0, code, err)
    assert.equal('"escalated it"\n', out)
    code, out, err = h.cli({ "resume", ids.fail }, { env = env })
    assert.equal(1, code)
    assert.matches("step 'f' %(timeout%) failed: nobody answered within 1 s %(at .*humans%.lua:%d+%)", err)
    h.rm(dir)
  end)

  it("use an answer given before it timed out", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local file = humans(dir)
    local id = paused(file, env, "long")
    local code, out, err = h.cli({ "resume", id, "--input", '"yes"' }, { env = env })
    assert.equal(0, code, err)
    assert.equal('"yes"\n', out)
    h.rm(dir)
  end)

  it("time out in a worker when nobody answers, though no process ran when it fell due", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = h.new_store(dir) }
    local file = humans(dir)
    local id = submit(file, env, "value", '{"q":"it"}')
    local code, _, err = h.cli({ "worker", "--poll", "0.05", "--until-idle" }, { env = env })
    assert.equal(0, code, err)
    assert.equal("paused", show(id, env).status)
    os.execute("sleep 1.2")
    local pid = worker({ "--poll", "0.05" }, env)
    assert.is_true(h.wait_for(status_is(id, env, "completed")))
    kill(pid)
    assert.equal("rejected", show(id, env).output)
    h.rm(dir)
  end)

  it("close a question that timed out, so the run's next question is the only one open", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local file = h.script([[
local sl = require "sluice"
return sl.pipeline{ name = "two",
  sl.human{ name = "first", message = "quick?", timeout = 0.5, on_timeout = "skipped" },
  sl.human{ name = "second", message = "and now?" } }
]], dir, "two.lua")
    local id = paused(file, env, "two")
    os.execute("sleep 0.7")
    local code, out, err = h.cli({ "resume", id }, { env = env })
    assert.equal(3, code, err)
    assert.matches("at 1/2: and now%?", err)
    assert.not_matches("quick%?", err)
    code, out, err = h.cli({ "resume", id, "--input", '"yes"' }, { env = env })
    assert.equal(0, code, err)
    assert.equal('"yes"\n', out)
    h.rm(dir)
  end)

  it("keep a step's later sleep its own after its question with a timeout was answered", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/s.db" }
    local file = h.script([[
local sl = require "sluice"
return sl.pipeline{ name = "asknap", sl.step{ name = "s", run = function(_, ctx)
  local a = ctx:human("go?", nil, 3600)
  local t0 = sl.now()
  ctx:sleep(1)
  return { answer = a, slept = sl.now() - t0 }
end } }
]], dir, "asknap.lua")
    local id = paused(file, env, "asknap")
    local code, out, err = h.cli({ "resume", id, "--input", '"go"' }, { env = env })
    assert.equal(0, code, err)
    local r = sl.decode(out)
    assert.equal("go", r.answer)
    -- Not skipped as if it were the question's hour-long wait.
    assert.is_true(r.slept >= 0.99, "slept " .. r.slept .. " s")
    h.rm(dir)
  end)

  it("refuse on_timeout without a timeout, naming the file and line", function()
    local dir = h.tmpdir()
    local file = h.script([[
local sl = require "sluice"
return sl.pipeline{ name = "p",
  sl.human{ name = "h", message = "?", on_timeout = "x" } }
]], dir, "bad.lua")
    local code, _, err = h.cli({ "run", file })
    assert.equal(2, code)
    assert.matches("bad%.lua:3: human 'h': on_timeout needs a timeout %(timeout = seconds%)", err)
    h.rm(dir)
  end)
end)
