-- A LuaJIT host of sluice through require "sluice.ffi": an engine with a
-- store, a host kind that answers during the call and one the host
-- completes later from its own loop (poll(2) on the engine's descriptor),
-- a failing one, and a run resumed from the store. Prints "ok" or raises.
--   luajit tests/ffi/host.lua DIR   (SLUICE_EMBED_LIB: the library)
local ffi = require "ffi"
local sluice = require "sluice.ffi"
local dir = assert(arg[1], "a scratch directory")

ffi.cdef [[
struct pollfd { int fd; short events; short revents; };
int poll(struct pollfd *fds, unsigned long nfds, int timeout);
]]

local file = dir .. "/buffers.lua"
local f = assert(io.open(file, "w"))
f:write([[
local sl = require "sluice"
return {
  words = sl.pipeline{ name = "words",
    sl.step{ name = "read", kind = "buffer" },
    sl.step{ name = "count", run = function(b) local n = 0
      for _ in b.text:gmatch("%S+") do n = n + 1 end
      return { name = b.name, words = n, lua = _VERSION } end },
  },
  later = sl.pipeline{ name = "later", sl.step{ name = "ask", kind = "deferred", timeout = 5 } },
  broken = sl.pipeline{ name = "broken", sl.step{ name = "b", kind = "broken" } },
  pause = sl.pipeline{ name = "pause", sl.human{ name = "ok", message = "go on?" } },
}
]])
f:close()

local buffers = { notes = "one two three four" }
local e = sluice.engine{ store = dir .. "/runs.db" }
e:kind("buffer", function(input) return { name = input.buffer, text = buffers[input.buffer] } end)
local later
e:kind("deferred", function(input, handle) later = { input = input, handle = handle } end)
e:kind("broken", function() error("no such buffer") end)
e:load(file)

local r = e:run("words", { buffer = "notes" })
assert(r.status == "completed", r.error and r.error.message)
assert(r.output.words == 4 and r.output.name == "notes", "wrong output")
assert(r.output.lua == "Lua 5.4", "the pipeline ran on " .. tostring(r.output.lua))
assert(jit and jit.version, "not LuaJIT")

-- Completed later, from the host's loop, which sleeps on the descriptor.
local run = e:start("later", { q = 1 })
local pfd = ffi.new("struct pollfd[1]")
local turns = 0
while e:poll() > 0 do
  turns = turns + 1
  if later and not later.done then
    assert(later.input.q == 1)
    assert(not later.handle:cancelled())
    assert(later.handle:complete({ answer = 42 }))
    assert(not later.handle:complete({ answer = 43 }), "completed twice")
    later.done = true
  end
  pfd[0].fd, pfd[0].events = e:fd(), 1
  ffi.C.poll(pfd, 1, e:timeout())
  assert(turns < 1000, "the host loop spun")
end
local res = run:result()
assert(res.status == "completed" and res.output.answer == 42, "deferred: " .. tostring(res.status))

local bad = e:run("broken", {})
assert(bad.status == "failed")
assert(bad.error.message:find("no such buffer", 1, true), bad.error.message)

-- Durable: a paused run resumed with an answer.
local p = e:run("pause", {})
assert(p.status == "paused", p.status)
local again = assert(e:resume(p.run_id, "yes"))
local done = again:wait()
assert(done.status == "completed" and done.output == "yes", tostring(done.status))

-- The store's runs, newest first, as tables.
local ok, err
local rows = e:runs{ limit = 3 }
assert(#rows == 3, "runs: " .. #rows)
assert(rows[1].run_id == p.run_id and rows[1].status == "completed", tostring(rows[1].status))
assert(#e:runs{ status = "failed" } == 1)
ok, err = pcall(e.runs, e, { colour = "red" })
assert(not ok and err:find("colour", 1, true), err)

-- Misuse is an error naming what went wrong.
ok, err = pcall(e.load, e, dir .. "/missing.lua")
assert(not ok and err:find("missing.lua", 1, true), err)
ok, err = pcall(e.run, e, "nosuch", {})
assert(not ok and err:find("no pipeline named 'nosuch'", 1, true), err)
print("ok")
