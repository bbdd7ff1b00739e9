-- The queue: sluice submit, sluice worker and sluice wait on one store, with
-- several worker processes, a worker killed mid-run, a paused run answered
-- for another worker, code versions and a worker stopped by SIGTERM.

local sl = require "sluice"
local h = require "helpers"

-- A pipeline whose steps append "run_id step" to log as they start, so a
-- test can count how often each step of each run was executed.
local function logged(dir, opts)
  opts = opts or {}
  return h.script(([[
local sl = require "sluice"
local log = %q
local function mark(ctx, name)
  local f = assert(io.open(log, "a"))
  f:write(ctx.run_id, " ", name, "\n")
  f:close()
end
return sl.pipeline{ name = "logged"%s,
  sl.step{ name = "a", run = function(x, ctx) mark(ctx, "a") return x + 1 end },
  sl.step{ name = "b", run = function(x, ctx) mark(ctx, "b") ctx:sleep(%s) return x * 2 end },
  sl.step{ name = "c", run = function(x, ctx) mark(ctx, "c") return x + %d end },
}
]]):format(dir .. "/log", opts.extra or "", opts.nap or "0.001", opts.add or 0), dir, opts.name or "logged.lua")
end

-- How many times each "run step" was logged.
local function counts(dir)
  local n = {}
  local f = io.open(dir .. "/log")
  if not f then return n end
  for line in f:lines() do n[line] = (n[line] or 0) + 1 end
  f:close()
  return n
end

local function submit(file, env, input)
  local code, out, err = h.cli({ "submit", file, "--input", input or "1" }, { env = env })
  assert.equal(0, code, err)
  return (assert(out:match("^(%w+)\n$"), "an id"))
end

local function show(id, env)
  local _, out = h.cli({ "show", "--json", id }, { env = env })
  return sl.decode(out)
end

local function wait_dead(pid)
  return h.wait_for(function() return not h.alive(pid) end)
end

describe("sluice submit, worker and wait", function()
  it("queue a run, execute it in a worker and print its output", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = h.new_store(dir) }
    local file = logged(dir)
    local id = submit(file, env, "3")
    local _, listed = h.cli({ "runs", "--queue", "default" }, { env = env })
    assert.matches(id .. "%s+logged%s+queued", listed)
    assert.matches("QUEUE", listed)
    local code, _, err = h.cli({ "wait", id, "--timeout", "0.05" }, { env = env })
    assert.equal(130, code)
    assert.matches("has not ended after 0.05s", err, 1, true)
    code, _, err = h.cli({ "worker", "--until-idle" }, { env = env })
    assert.equal(0, code, err)
    assert.matches("1 runs claimed, 1 ended here", err, 1, true)
    local out
    code, out = h.cli({ "wait", id }, { env = env })
    assert.equal(0, code)
    assert.equal("8\n", out)
    local run = show(id, env)
    assert.equal("completed", run.status)
    assert.equal("default", run.queue)
    assert.is_string(run.code_version)
    code, out = h.cli({ "wait", "--json", id }, { env = env })
    assert.equal(0, code)
    assert.equal(8, sl.decode(out).output)
    local n = counts(dir)
    assert.same({ [id .. " a"] = 1, [id .. " b"] = 1, [id .. " c"] = 1 }, n)
    -- Queues are apart: a worker of another queue takes nothing.
    local other = submit(file, env)
    code, _, err = h.cli({ "worker", "--until-idle", "--queue", "nightly" }, { env = env })
    assert.equal(0, code)
    assert.matches("0 runs claimed", err, 1, true)
    assert.equal("queued", show(other, env).status)
    h.rm(dir)
  end)

  it("wakes an idle worker when a run is submitted, without waiting for its poll", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = h.new_store(dir) }
    local file = logged(dir)
    -- The store exists before the worker opens it; the worker's first look
    -- (as it starts) takes this one.
    local first = submit(file, env, "0")
    local pid = h.cli({ "worker", "--poll", "60" }, { env = env, background = true })
    assert.equal(0, (h.cli({ "wait", first, "--timeout", "10" }, { env = env })))
    for i = 1, 3 do
      local id = submit(file, env, tostring(i))
      -- Far sooner than the 60 s poll: the store woke the worker.
      local code, out = h.cli({ "wait", id, "--timeout", "10" }, { env = env })
      assert.equal(0, code)
      assert.equal(tostring((i + 1) * 2) .. "\n", out)
    end
    os.execute("kill -TERM " .. pid)
    assert.is_true(wait_dead(pid))
    h.rm(dir)
  end)

  it("refuses what makes no sense, naming it", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = h.new_store(dir) }
    local code, _, err = h.cli({ "worker", "--concurrency", "0" }, { env = env })
    assert.equal(2, code)
    assert.matches("--concurrency must be a whole number of at least 1, got '0'", err, 1, true)
    code, _, err = h.cli({ "worker", "--queue", "a b" }, { env = env })
    assert.equal(2, code)
    assert.matches("--queue must be 1 to 64 letters", err, 1, true)
    code, _, err = h.cli({ "worker", "--store", ":memory:" }, { env = env })
    assert.equal(2, code)
    assert.matches("not :memory:", err, 1, true)
    code, _, err = h.cli({ "submit", dir .. "/none.lua" }, { env = env })
    assert.equal(2, code)
    assert.matches("none.lua", err, 1, true)
    code, _, err = h.cli({ "wait", "01NOSUCHRUN" }, { env = env })
    assert.equal(2, code)
    assert.matches("no run with id '01NOSUCHRUN'", err, 1, true)
    code, _, err = h.cli({ "submit", logged(dir), "--input", "{bad" }, { env = env })
    assert.equal(2, code)
    assert.matches("--input: malformed JSON", err, 1, true)
    h.rm(dir)
  end)

  it("gives each run to one worker: several worker processes execute every step once", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = h.new_store(dir) }
    local file = logged(dir)
    local ids = {}
    for i = 1, 40 do ids[i] = submit(file, env, tostring(i)) end
    local pids = {}
    for i = 1, 3 do
      pids[i] = h.cli({ "worker", "--concurrency", "4", "--until-idle", "--poll", "0.01" },
        { env = env, background = true })
    end
    for _, pid in ipairs(pids) do assert.is_true(wait_dead(pid)) end
    local n = counts(dir)
    for i, id in ipairs(ids) do
      assert.equal(1, n[id .. " a"], id)
      assert.equal(1, n[id .. " b"], id)
      assert.equal(1, n[id .. " c"], id)
      local code, out = h.cli({ "wait", id }, { env = env })
      assert.equal(0, code)
      assert.equal(tostring((i + 1) * 2) .. "\n", out)
    end
    h.rm(dir)
  end)

  it("takes over the runs of a worker killed mid-run, without running completed steps again", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = h.new_store(dir) }
    local file = logged(dir, { nap = "30" })
    local id = submit(file, env, "1")
    -- It sleeps in process rather than park the run (time_spec parks).
    local pid = h.cli({ "worker", "--park-after", "60" }, { env = env, background = true })
    assert.is_true(h.wait_for(function() return counts(dir)[id .. " b"] == 1 end))
    os.execute("sleep 0.2")   -- what completed before b is committed by now
    os.execute("kill -9 " .. pid)
    assert.is_true(wait_dead(pid))
    -- The run is shown interrupted (its owner is gone); a worker takes it.
    assert.equal("interrupted", show(id, env).status)
    h.write(file, (h.read(file):gsub("ctx:sleep%(30%)", "ctx:sleep(0.001)")))
    local code, _, err = h.cli({ "worker", "--until-idle" }, { env = env })
    assert.equal(0, code, err)
    -- Its code changed, so the new worker let it wait.
    assert.matches("1 passed over", err, 1, true)
    local run = show(id, env)
    assert.equal("queued", run.status)
    assert.matches("a worker with code version", run.waiting_for, 1, true)
    local _, listed = h.cli({ "runs", "--queue", "default" }, { env = env })
    assert.matches("WAITING FOR", listed, 1, true)
    -- Back to the code it began with: it goes on from after step a.
    h.write(file, (h.read(file):gsub("ctx:sleep%(0%.001%)", "ctx:sleep(30)")))
    local wpid = h.cli({ "worker", "--until-idle", "--grace", "0", "--park-after", "60" },
      { env = env, background = true })
    assert.is_true(h.wait_for(function() return counts(dir)[id .. " b"] == 2 end))
    os.execute("kill -TERM " .. wpid)
    assert.is_true(wait_dead(wpid))
    assert.equal(1, counts(dir)[id .. " a"])
    -- Handed back by SIGTERM: interrupted, in its queue; taken once more.
    assert.equal("interrupted", show(id, env).status)
    h.write(file, (h.read(file):gsub("ctx:sleep%(30%)", "ctx:sleep(0.001)")
      :gsub('name = "logged"', 'name = "logged", on_code_change = "continue"')))
    code, _, err = h.cli({ "worker", "--until-idle" }, { env = env })
    assert.equal(0, code, err)
    local out
    code, out = h.cli({ "wait", id }, { env = env })
    assert.equal(0, code)
    assert.equal("4\n", out)
    local n = counts(dir)
    assert.equal(1, n[id .. " a"])
    assert.equal(3, n[id .. " b"])
    assert.equal(1, n[id .. " c"])
    h.rm(dir)
  end)

  it("lets one worker go on with a run it paused, restoring what completed before", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = h.new_store(dir) }
    local file = h.script(([[
local sl = require "sluice"
local log = %q
return sl.pipeline{ name = "asks",
  sl.step{ name = "draft", run = function(x)
    local f = assert(io.open(log, "a")); f:write("draft\n"); f:close()
    return "draft " .. x end },
  sl.human{ name = "review", message = "Ship it?", schema = { type = "boolean" } },
  sl.step{ name = "ship", run = function(ok, ctx) return ok and "shipped" or "held" end },
}
]]):format(dir .. "/log"), dir, "asks.lua")
    local pid = h.cli({ "worker", "--poll", "0.01" }, { env = env, background = true })
    for round = 1, 2 do
      local id = submit(file, env, '"v' .. round .. '"')
      assert.is_true(h.wait_for(function() return show(id, env).status == "paused" end))
      local code, _, err = h.cli({ "resume", id, "--input", "true" }, { env = env })
      assert.equal(0, code, err)
      local out
      code, out = h.cli({ "wait", id, "--timeout", "10" }, { env = env })
      assert.equal(0, code)
      assert.equal('"shipped"\n', out)
      assert.equal(round, h.lines(dir .. "/log"), "draft ran once per run")
    end
    os.execute("kill -TERM " .. pid)
    assert.is_true(wait_dead(pid))
    h.rm(dir)
  end)

  it("puts a paused run answered by sluice resume back in the queue for any worker", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = h.new_store(dir) }
    local file = h.script([[
local sl = require "sluice"
return sl.pipeline{ name = "asks",
  sl.step{ name = "draft", run = function(x) return "draft " .. x end },
  sl.human{ name = "review", message = "Ship it?", schema = { type = "boolean" } },
  sl.step{ name = "ship", run = function(ok) return ok and "shipped" or "held" end },
}
]], dir, "asks.lua")
    local id = submit(file, env, '"v1"')
    local code, _, err = h.cli({ "worker", "--until-idle" }, { env = env })
    assert.equal(0, code, err)
    local out
    code, out, err = h.cli({ "wait", id }, { env = env })
    assert.equal(3, code)
    assert.equal(id .. "\n", out)
    assert.matches("Ship it?", err, 1, true)
    code, _, err = h.cli({ "resume", id, "--input", '"yes"' }, { env = env })
    assert.equal(2, code)
    assert.matches("refused", err, 1, true)
    code, out, err = h.cli({ "resume", id, "--input", "true" }, { env = env })
    assert.equal(0, code, err)
    assert.matches("queued again for a worker", err, 1, true)
    assert.equal("queued", show(id, env).status)
    code, _, err = h.cli({ "worker", "--until-idle" }, { env = env })
    assert.equal(0, code, err)
    code, out = h.cli({ "wait", id }, { env = env })
    assert.equal(0, code)
    assert.equal('"shipped"\n', out)
    h.rm(dir)
  end)
end)
