-- The PostgreSQL store, against a real server that tests/pg_env.sh starts
-- (ctest runs this spec through it): what works on SQLite works here, and
-- the faults a server adds (a bad URL, a refused connection, a role that
-- may not create the schema, a connection lost mid-run) are told clearly
-- and lose nothing. queue_spec runs against this server too.

local sl = require "sluice"
local h = require "helpers"

local BASE = os.getenv("SLUICE_TEST_PG")
assert(BASE, "pg_spec runs beside a server: tests/pg_env.sh busted tests/lua/pg_spec.lua")

local function psql(url, sql)
  local p = assert(io.popen("env -u LD_PRELOAD psql -qAt " .. h.quote(url) .. " -c " ..
    h.quote(sql) .. " 2>&1"))
  local out = p:read("a")
  p:close()
  return out
end

-- Steps that log "run_id name" as they start; b sleeps as long as asked
-- the first time it runs, and not again.
local function logged(dir, nap)
  return h.script(([[
local sl = require "sluice"
local log = %q
local function mark(ctx, name)
  local f = assert(io.open(log, "a")); f:write(ctx.run_id, " ", name, "\n"); f:close()
end
return sl.pipeline{ name = "pg",
  sl.step{ name = "a", run = function(x, ctx) mark(ctx, "a") ctx:log("warn", "from a", { n = 1 }) return x + 1 end },
  sl.parallel{ name = "fan", merge = "last_wins", branches = {
    left = sl.step{ name = "left", run = function(x, ctx) mark(ctx, "left") return x end },
    right = sl.step{ name = "right", run = function(x, ctx) mark(ctx, "right") return x end } } },
  sl.step{ name = "pick", run = function(x) return x.left end },
  sl.step{ name = "b", run = function(x, ctx)
    mark(ctx, "b")
    local first = not io.open(log .. ".slept")
    if first then assert(io.open(log .. ".slept", "w")):close() ctx:sleep(%s) end
    return x * 2 end },
  sl.step{ name = "c", run = function(x, ctx) mark(ctx, "c") return x + 1 end },
}
]]):format(dir .. "/log", nap or "0.001"), dir, "pg.lua")
end

local function counts(dir)
  local n = {}
  local f = io.open(dir .. "/log")
  if not f then return n end
  for line in f:lines() do
    local name = line:match(" (%S+)$")
    n[name] = (n[name] or 0) + 1
  end
  f:close()
  return n
end

describe("the PostgreSQL store", function()
  it("records runs, shows and lists them, and prunes, as SQLite does", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = h.new_store(dir) }
    local file = logged(dir)
    -- Read-only commands on a database sluice has not used yet.
    local code, out = h.cli({ "runs" }, { env = env })
    assert.equal(0, code)
    assert.equal("no runs\n", out)
    code, out = h.cli({ "run", file, "--input", "1" }, { env = env })
    assert.equal(0, code)
    assert.equal("5\n", out)
    local rows = sl.decode(select(2, h.cli({ "runs", "--json" }, { env = env })))
    assert.equal(1, #rows)
    assert.equal("completed", rows[1].status)
    local _, shown = h.cli({ "show", rows[1].run_id }, { env = env })
    assert.matches("├─ a %(step%)", shown)
    assert.matches("log %+[%d.]+s warn: from a  {\"n\":1}", shown)
    local _, js = h.cli({ "show", "--json", rows[1].run_id }, { env = env })
    -- Its steps, and the record of a step's sleep (its due time).
    assert.equal(9, #sl.decode(js).steps)
    for _ = 1, 3 do h.cli({ "run", file, "--input", "1" }, { env = env }) end
    code, out = h.cli({ "runs", "prune", "--keep", "2" }, { env = env })
    assert.equal(0, code)
    assert.matches("removed 2 runs", out, 1, true)
    assert.equal(2, #sl.decode(select(2, h.cli({ "runs", "--json" }, { env = env }))))
    code, out = h.cli({ "store", "check" }, { env = env })
    assert.equal(0, code)
    code, out = h.cli({ "store", "stats", "--json" }, { env = env })
    assert.equal(0, code)
    assert.equal(2, sl.decode(out).runs)
    h.rm(dir)
  end)

  it("resumes a run killed with kill -9 without running completed steps again", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = h.new_store(dir) }
    local file = logged(dir, "30")
    local pid = h.cli({ "run", file, "--input", "1" }, { env = env, background = true })
    assert.is_true(h.wait_for(function() return counts(dir).b == 1 end))
    os.execute("sleep 0.2")   -- what completed before b is committed by now
    os.execute("kill -9 " .. pid)
    assert.is_true(h.wait_for(function() return not h.alive(pid) end))
    local rows = sl.decode(select(2, h.cli({ "runs", "--json", "--status", "interrupted" }, { env = env })))
    assert.equal(1, #rows)
    local code, out = h.cli({ "resume", rows[1].run_id }, { env = env })
    assert.equal(0, code, out)
    local n = counts(dir)
    assert.equal(1, n.a)
    assert.equal(1, n.left)
    assert.equal(1, n.right)
    assert.equal(2, n.b)
    assert.equal(1, n.c)
    assert.equal("5\n", out)
    h.rm(dir)
  end)

  it("pauses for a person and goes on with the answer", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = h.new_store(dir) }
    local file = h.script([[
local sl = require "sluice"
return sl.pipeline{ name = "asks",
  sl.human{ name = "review", message = "Ship it?", schema = { type = "boolean" } },
  sl.step{ name = "ship", run = function(ok) return ok and "shipped" or "held" end } }
]], dir, "asks.lua")
    local code, out = h.cli({ "run", file }, { env = env })
    assert.equal(3, code)
    local id = out:match("(%w+)")
    code = h.cli({ "resume", id, "--input", "3" }, { env = env })
    assert.equal(2, code)
    code, out = h.cli({ "resume", id, "--input", "true" }, { env = env })
    assert.equal(0, code)
    assert.equal('"shipped"\n', out)
    h.rm(dir)
  end)

  it("shares the persistent cache between processes", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = h.new_store(dir) }
    local file = h.script(([[
local sl = require "sluice"
return sl.pipeline{ name = "cached",
  sl.step{ name = "slow", cache = true, run = function(x)
    local f = assert(io.open(%q, "a")); f:write("ran\n"); f:close()
    return x * 10 end } }
]]):format(dir .. "/ran"), dir, "cached.lua")
    for _ = 1, 3 do
      local code, out = h.cli({ "run", file, "--input", "4" }, { env = env })
      assert.equal(0, code)
      assert.equal("40\n", out)
    end
    assert.equal(1, h.lines(dir .. "/ran"))
    local code, out = h.cli({ "cache", "stats", "--json" }, { env = env })
    assert.equal(0, code)
    local st = sl.decode(out)
    assert.equal(1, st.entries)
    assert.equal(2, st.hits)
    h.rm(dir)
  end)

  it("looks cached steps up off the loop: branches wait for one lookup, state changes come back", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = h.new_store(dir) }
    local file = h.script(([[
local sl = require "sluice"
local function ran() local f = assert(io.open(%q, "a")); f:write("ran\n"); f:close() end
local slow = sl.step{ name = "slow", cache = true, run = function(x, ctx)
  ran()
  ctx.state.seen = (ctx.state.seen or 0) + x
  return x * 10 end }
return sl.pipeline{ name = "fan",
  sl.parallel{ name = "p", merge = "last_wins", branches = { a = slow, b = slow, c = slow } },
  sl.step{ name = "out", run = function(x, ctx) return { v = x.a, seen = ctx.state.seen } end } }
]]):format(dir .. "/ran"), dir, "fan.lua")
    local outs = {}
    for i = 1, 3 do
      local code, out = h.cli({ "run", file, "--input", "4" }, { env = env })
      assert.equal(0, code)
      outs[i] = sl.decode(out)
    end
    -- One execution in the first run (the other branches waited for it);
    -- none after: every later lookup hit the store, and brought the state
    -- change back.
    assert.equal(1, h.lines(dir .. "/ran"))
    for i = 1, 3 do
      assert.equal(40, outs[i].v)
      assert.equal(4, outs[i].seen)
    end
    h.rm(dir)
  end)

  it("keeps the loop going while a cached step's lookup waits on the server", function()
    local function read(path)   -- "" while the file is not there yet
      local f = io.open(path)
      if not f then return "" end
      local text = f:read("a")
      f:close()
      return text
    end
    local dir = h.tmpdir()
    local url = h.new_store(dir)
    local env = { SLUICE_STORE = url }
    local log = dir .. "/log"
    local file
    local function pipeline(other)
      return h.script(([[
local sl = require "sluice"
local function say(what) local f = assert(io.open(%q, "a")); f:write(what, "\n"); f:close() end
return sl.pipeline{ name = "busy",
  sl.step{ name = "first", run = function(x, ctx) ctx:sleep(0.5) return x end },
  sl.parallel{ name = "p", merge = "last_wins", branches = {
    cached = sl.step{ name = "cached", cache = true, run = function(x) say("cached ran") return x end },
    other = %s } },
  sl.step{ name = "out", run = function(x) return x.cached end } }
]]):format(log, other), dir, "busy.lua")
    end
    -- Runs the pipeline; once it has started (its first step sleeps 0.5 s),
    -- a session holds the cache table locked for 2 s, so the lookups that
    -- follow wait. Returns its exit code and output.
    local function run_locked(input)
      local pid, outp = h.cli({ "run", file, "--input", input }, { env = env, background = true })
      os.execute("sleep 0.2")
      os.execute("(env -u LD_PRELOAD psql -q " .. h.quote(url) .. " -c " ..
        h.quote("BEGIN; LOCK TABLE sluice.cache IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(2); COMMIT;") ..
        " >/dev/null 2>&1; echo released >> " .. h.quote(log) .. ") &")
      assert.is_true(h.wait_for(function() return not h.alive(pid) end))
      assert.is_true(h.wait_for(function() return read(log):find("released", 1, true) ~= nil end))
      return read(outp)
    end
    local plain = h.script('return require("sluice").pipeline{ name = "one", ' ..
      'require("sluice").step{ name = "s", run = function(x) return x end } }', dir, "one.lua")
    assert.equal(0, (h.cli({ "run", plain, "--input", "1" }, { env = env })))   -- the tables
    file = pipeline([[sl.step{ name = "ticker", run = function(x, ctx)
      for _ = 1, 5 do ctx:sleep(0.02) end
      say("ticks done")
      return x end }]])
    local out = run_locked("1")
    assert.equal("1\n", out)
    -- The ticker went on while the lookup waited for the lock (let go some
    -- 1.5 s after the ticker is done); the cached step ran once the lookup
    -- could be answered (a miss).
    local text = read(log)
    local ticks, released, ran = text:find("ticks done", 1, true), text:find("released", 1, true),
      text:find("cached ran", 1, true)
    assert.is_true(ticks ~= nil and released ~= nil and ran ~= nil, text)
    assert.is_true(ticks < released, text)
    -- A lookup whose step is cancelled while it waits (a sibling fails)
    -- is answered into nothing: the run fails as it should.
    os.remove(log)
    file = pipeline([[sl.step{ name = "boom", run = function(x, ctx) ctx:sleep(0.05) error("boom") end }]])
    out = run_locked("2")
    assert.equal("", out)
    assert.is_nil(read(log):find("cached ran", 1, true))
    local rows = sl.decode(select(2, h.cli({ "runs", "--json", "--limit", "1" }, { env = env })))
    assert.equal("failed", rows[1].status)
    h.rm(dir)
  end)

  it("says clearly what is wrong with a URL, a server or a role", function()
    local dir = h.tmpdir()
    local file = logged(dir)
    local function fails(url, want)
      local code, _, err = h.cli({ "run", file, "--input", "1" }, { env = { SLUICE_STORE = url } })
      assert.equal(2, code, err)
      assert.matches(want, err, 1, true)
      return err
    end
    fails("postgresql://sluice@/sluice?host=" .. dir .. "/nowhere", "cannot connect")
    fails("postgresql://sluice@localhost:1/sluice", "cannot connect")
    fails("postgresql://[oops/x", "cannot connect")
    local err = fails((BASE:gsub("sluice@", "nobody:secret@")), "cannot connect")
    assert.is_nil(err:find("secret", 1, true), "the password stays out of messages")
    -- A role that may connect but not create the store's schema.
    local url = h.new_store(dir)
    local db = url:match("/([%w_]+)%?")
    psql(BASE, "CREATE ROLE limited LOGIN")
    psql(url, "REVOKE CREATE ON DATABASE " .. db .. " FROM PUBLIC")
    fails((url:gsub("sluice@", "limited@")), "the role may not create the store's schema")
    h.rm(dir)
  end)

  it("stops a run as interrupted when the connection is lost, and a resume finishes it", function()
    local dir = h.tmpdir()
    local url = h.new_store(dir)
    local env = { SLUICE_STORE = url }
    local file = logged(dir, "1.5")
    local pid, outp, errp = h.cli({ "run", file, "--input", "1" }, { env = env, background = true })
    assert.is_true(h.wait_for(function() return counts(dir).b == 1 end))
    os.execute("sleep 0.2")   -- what completed before b is committed by now
    local db = url:match("/([%w_]+)%?")
    psql(BASE, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '" ..
      db .. "' AND pid <> pg_backend_pid()")
    assert.is_true(h.wait_for(function() return not h.alive(pid) end))
    local err = h.read(errp)
    assert.matches("the store could not record", err, 1, true)
    assert.matches("server closed the connection", err, 1, true)
    assert.is_nil(h.read(outp):match("^5"), "no output is reported for a run the store lost")
    local rows = sl.decode(select(2, h.cli({ "runs", "--json" }, { env = env })))
    assert.equal(1, #rows)
    assert.equal("interrupted", rows[1].status)
    local code, out = h.cli({ "resume", rows[1].run_id }, { env = env })
    assert.equal(0, code)
    assert.equal("5\n", out)
    -- a was committed before the loss and is not run again; b and c ran
    -- after it, unrecorded, and run again (what was in flight).
    local n = counts(dir)
    assert.equal(1, n.a)
    assert.equal(2, n.b)
    assert.is_true(n.c >= 1 and n.c <= 2)
    h.rm(dir)
  end)
end)
