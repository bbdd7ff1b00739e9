-- Hot reload: all-or-nothing loads, runs that keep their snapshot, watches,
-- and `sluice dev`.
local sl = require "sluice"
local h = require "helpers"

local function version(n, extra)
  return ([[
local sl = require "sluice"
sl.kind("tag", function(step, input) return "v%d:" .. input end)
%s
return sl.pipeline{ name = "p",
  sl.step{ name = "wait", run = function(x, ctx) ctx:sleep(x.wait or 0); return x.value end },
  sl.step{ kind = "tag", name = "tag" } }
]]):format(n, extra or "")
end

-- Runs the engine's loop until pred() holds, for at most about two seconds.
local function poll_until(eng, pred)
  for _ = 1, 400 do
    eng:poll()
    if pred() then return true end
    os.execute("sleep 0.005")
  end
  return false
end

describe("engine:load and engine:reload", function()
  local dir, file, eng
  before_each(function()
    dir = h.tmpdir()
    file = h.write(dir .. "/p.lua", version(1))
    eng = sl.engine()
    eng:load(file)
  end)
  after_each(function() h.rm(dir) end)

  it("swap in a new version of the file", function()
    assert.equal("v1:a", eng:run("p", { value = "a" }).output)
    h.write(file, version(2))
    eng:reload()
    assert.equal("v2:a", eng:run("p", { value = "a" }).output)
  end)

  it("keep the old snapshot when the new file fails, reporting file:line", function()
    h.write(file, version(2, "local broken = \n"))
    local ok, err = pcall(eng.reload, eng)
    assert.is_false(ok)
    assert.matches(file .. ":%d+:", err)
    assert.equal("v1:a", eng:run("p", { value = "a" }).output)
  end)

  it("register nothing from a file that fails after registering", function()
    h.write(file, version(2, "sl.kind('extra', function() return 1 end)\nerror('late failure')"))
    local ok, err = pcall(eng.reload, eng)
    assert.is_false(ok)
    assert.matches("late failure", err, 1, true)
    assert.is_nil(eng:kinds().extra)
    assert.equal("v1:a", eng:run("p", { value = "a" }).output)
  end)

  it("let a run in flight finish on its snapshot while new runs get the new one", function()
    local old = eng:start("p", { value = "a", wait = 0.02 })
    h.write(file, version(2))
    eng:reload()
    local new = eng:start("p", { value = "b" })
    assert.equal("v2:b", new:wait().output)
    assert.equal("v1:a", old:wait().output)
  end)

  it("release snapshots no run holds", function()
    local handlers = setmetatable({}, { __mode = "v" })
    handlers[1] = eng:kinds().tag
    for n = 2, 5 do
      h.write(file, version(n))
      eng:reload()
    end
    collectgarbage()
    collectgarbage()
    assert.is_nil(handlers[1])
  end)

  it("run everything started while the file is rewritten many times", function()
    local runs = {}
    for i = 1, 300 do
      runs[#runs + 1] = eng:start("p", { value = tostring(i), wait = (i % 3) * 0.001 })
      if i % 10 == 0 then
        h.write(file, version(i // 10 + 1, i % 20 == 0 and "" or nil))
        eng:reload()
      end
      eng:poll()
    end
    assert.is_true(poll_until(eng, function() return eng:active() == 0 end))
    for i, run in ipairs(runs) do
      local r = run:result()
      assert.equal("completed", r.status)
      assert.matches("^v%d+:" .. i .. "$", r.output)
    end
  end)
end)

describe("engine:watch", function()
  it("reloads when the file changes and reports failures without swapping", function()
    local dir = h.tmpdir()
    local file = h.write(dir .. "/p.lua", version(1))
    local eng = sl.engine()
    eng:load(file)
    local events = {}
    assert.is_true(eng:watch(function(ok, err) events[#events + 1] = ok and "ok" or err end, 5))
    h.write(file, version(2))
    assert.is_true(poll_until(eng, function() return #events >= 1 end))
    assert.equal("ok", events[1])
    assert.equal("v2:a", eng:run("p", { value = "a" }).output)
    h.write(file, "return {\n")
    assert.is_true(poll_until(eng, function() return #events >= 2 end))
    assert.matches("p.lua:2:", events[2])
    assert.equal("v2:a", eng:run("p", { value = "a" }).output)
    eng:watch(false)
    h.rm(dir)
  end)
end)

describe("sluice dev", function()
  it("re-executes only what an edit changed, serving the rest from the cache", function()
    local dir = h.tmpdir()
    local src = [[
local sl = require "sluice"
return sl.pipeline{ name = "p",
  sl.step{ name = "stable", run = function(x) return x .. "+s" end },
  sl.step{ name = "edited", run = function(x) return x .. "+EDIT" end } }
]]
    local file = h.write(dir .. "/p.lua", src:gsub("EDIT", "e1"))
    local out, err = dir .. "/out", dir .. "/err"
    local asan = os.getenv("SLUICE_CHILD_ASAN_OPTIONS")
    local pid = io.popen(("%s %s dev %s --input '\"x\"' --debounce 5 >%s 2>%s & echo $!"):format(
      asan and ("ASAN_OPTIONS=" .. h.quote(asan)) or "", h.quote(h.bin), h.quote(file),
      h.quote(out), h.quote(err))):read("l")
    assert.is_true(h.wait_for(function() return h.peek(out):find('"x+s+e1"', 1, true) end))
    h.write(file, (src:gsub("EDIT", "e2")))
    assert.is_true(h.wait_for(function() return h.peek(out):find('"x+s+e2"', 1, true) end))
    os.execute("kill -INT " .. pid)
    assert.is_true(h.wait_for(function() return not h.alive(pid) end))
    local second = h.read(err):match("reloaded.-$")
    assert.matches("cached%s+stable", second)
    assert.matches("ran%s+edited", second)
    assert.matches("ran%s+p ", second)
    h.rm(dir)
  end)

  it("runs, reruns on save, keeps the previous version on a syntax error, and exits on Ctrl-C", function()
    local dir = h.tmpdir()
    local file = h.write(dir .. "/p.lua", version(1))
    local out, err = dir .. "/out", dir .. "/err"
    local asan = os.getenv("SLUICE_CHILD_ASAN_OPTIONS")
    local cmd = ("%s %s dev %s --input '{\"value\":\"a\"}' --debounce 5 >%s 2>%s & echo $!"):format(
      asan and ("ASAN_OPTIONS=" .. h.quote(asan)) or "", h.quote(h.bin), h.quote(file), h.quote(out), h.quote(err))
    local pid = io.popen(cmd):read("l")
    local function wait_for(path, text)
      for _ = 1, 400 do
        local f = io.open(path)
        local s = f and f:read("a") or ""
        if f then f:close() end
        if s:find(text, 1, true) then return true end
        os.execute("sleep 0.005")
      end
      return false
    end
    assert.is_true(wait_for(out, '"v1:a"'))
    h.write(file, version(2))
    assert.is_true(wait_for(out, '"v2:a"'))
    h.write(file, "return {\n")
    assert.is_true(wait_for(err, "reload failed, keeping the previous version"))
    h.write(file, version(3))
    assert.is_true(wait_for(out, '"v3:a"'))
    os.execute("kill -INT " .. pid)
    local exited = false
    for _ = 1, 400 do
      if not h.alive(pid) then exited = true break end
      os.execute("sleep 0.005")
    end
    assert.is_true(exited)
    local e = h.read(err)
    assert.matches("ran%s+tag", e)
    assert.not_matches("AddressSanitizer", e)
    h.rm(dir)
  end)
end)
