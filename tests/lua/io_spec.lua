-- ctx:exec and ctx:http: processes and HTTP requests that suspend only the
-- calling step, against real programs and the local mock server
-- (scripts/mock_server.c).
local sl = require "sluice"
local helpers = require "helpers"

local MOCK = os.getenv("SLUICE_MOCK_SERVER") or (helpers.build .. "/mock_server")
local q = helpers.quote

local function step(name, run) return sl.step{ name = name, run = run } end

-- Runs fn(ctx) as the one step of a run and returns the result table.
local function run_step(fn)
  return sl.run(step("io", function(_, ctx) return fn(ctx) end))
end

-- Runs fn(ctx) in a step and returns the error it raised.
local function step_error(fn)
  local r = run_step(fn)
  assert.equal("failed", r.status, "the step was expected to fail")
  return r.error
end

local alive = helpers.alive

-- Lets the engine's loop run (to reap what it killed) until pid has died,
-- for at most about ten seconds; returns whether it has.
local function wait_dead(pid)
  local nap = step("nap", function(_, ctx) ctx:sleep(0.01) end)
  for _ = 1, 1000 do
    if not alive(pid) then return true end
    sl.run(nap)
  end
  return not alive(pid)
end

local function read_pid(path)
  local f = assert(io.open(path))
  local pid = tonumber(f:read("l"))
  f:close()
  return assert(pid, "no pid in " .. path)
end

-- A kind that spawns its step's children a and b and returns both outputs.
sl.kind("io_both", function(s, input, ctx)
  local a, b = ctx:spawn(s.a, input), ctx:spawn(s.b, input)
  return ctx:await{ a, b }
end)

describe("ctx:exec", function()
  it("returns the exit code and output of a program fed its stdin", function()
    local r = run_step(function(ctx)
      return ctx:exec({ "cat" }, { stdin = "hello\nworld\0!" })
    end)
    assert.equal("completed", r.status)
    assert.same({ code = 0, stdout = "hello\nworld\0!", stderr = "" }, r.output)
  end)

  it("gives the program /dev/null as stdin when none is given", function()
    local r = run_step(function(ctx) return ctx:exec{ "cat" } end)
    assert.same({ code = 0, stdout = "", stderr = "" }, r.output)
  end)

  it("feeds a large stdin to a program that reads it as it goes", function()
    local big = ("0123456789abcdef"):rep(256 * 1024)   -- 4 MiB
    local r = run_step(function(ctx) return ctx:exec({ "wc", "-c" }, { stdin = big }) end)
    assert.equal(#big, tonumber(r.output.stdout))
  end)

  it("does not fail when the program stops reading its stdin", function()
    local r = run_step(function(ctx)
      return ctx:exec({ "head", "-c", "3" }, { stdin = ("x"):rep(4 * 1024 * 1024) })
    end)
    assert.same({ code = 0, stdout = "xxx", stderr = "" }, r.output)
  end)

  it("adds env entries to the engine's environment, removes those set to false, and runs in cwd", function()
    assert.is_string(os.getenv("LUA_PATH"))
    assert.is_string(os.getenv("LUA_CPATH"))
    local dir = helpers.tmpdir()
    local r = run_step(function(ctx)
      return ctx:exec({ "sh", "-c", 'printf "%s|%s|%s|%s" "$SLUICE_IO_A" "${LUA_PATH-unset}" "$LUA_CPATH" "$(pwd -P)"' },
        { env = { SLUICE_IO_A = "a b", LUA_PATH = false }, cwd = dir })
    end)
    local real = io.popen("cd " .. q(dir) .. " && pwd -P"):read("l")
    assert.equal("a b|unset|" .. os.getenv("LUA_CPATH") .. "|" .. real, r.output.stdout)
    helpers.rm(dir)
  end)

  it("separates stdout from stderr", function()
    local r = run_step(function(ctx)
      return ctx:exec{ "sh", "-c", "echo out; echo err >&2" }
    end)
    assert.equal("out\n", r.output.stdout)
    assert.equal("err\n", r.output.stderr)
  end)

  it("returns a non-zero exit status as code, not as an error", function()
    local r = run_step(function(ctx) return ctx:exec{ "sh", "-c", "echo partial; exit 7" } end)
    assert.equal("completed", r.status)
    assert.same({ code = 7, stdout = "partial\n", stderr = "" }, r.output)
  end)

  it("returns the signal that killed the program, with no code", function()
    local r = run_step(function(ctx) return ctx:exec{ "sh", "-c", "kill -TERM $$" } end)
    assert.equal("completed", r.status)
    assert.equal(15, r.output.signal)
    assert.is_nil(r.output.code)
  end)

  it("raises a clear error naming a program that does not exist", function()
    local e = step_error(function(ctx) return ctx:exec{ "sluice-no-such-program", "x" } end)
    assert.equal("error", e.kind)
    assert.equal("cannot run 'sluice-no-such-program': no such file or directory", e.message)
    assert.equal("io", e.step)
    assert.matches("io_spec.lua:%d+$", e.where)
  end)

  it("names the directory when cwd does not exist", function()
    local e = step_error(function(ctx) return ctx:exec({ "true" }, { cwd = "/nonexistent/sluice" }) end)
    assert.equal("error", e.kind)
    assert.matches("cannot run 'true' in directory '/nonexistent/sluice'", e.message, 1, true)
  end)

  it("kills a program whose output exceeds max_output and fails with a clear error", function()
    local e = step_error(function(ctx) return ctx:exec({ "yes" }, { max_output = 4096 }) end)
    assert.equal("error", e.kind)
    assert.matches("the stdout of command 'yes' %(pid %d+%) exceeded 4096 bytes %(max_output%); the command was killed", e.message)
    local pid = tonumber(e.message:match("pid (%d+)"))
    assert.is_false(alive(pid))
  end)

  it("bounds each stream to 8 MiB by default", function()
    local e = step_error(function(ctx)
      return ctx:exec{ "sh", "-c", "head -c 9000000 /dev/zero >&2" }
    end)
    assert.matches("the stderr of command 'sh' %(pid %d+%) exceeded 8388608 bytes", e.message)
    local r = run_step(function(ctx) return ctx:exec{ "head", "-c", "8388608", "/dev/zero" } end)
    assert.equal(8388608, #r.output.stdout)
  end)

  it("kills a program that runs past its timeout, reaps it, and raises kind timeout", function()
    local dir = helpers.tmpdir()
    local pidfile = dir .. "/pid"
    local e = step_error(function(ctx)
      return ctx:exec({ "sh", "-c", "echo $$ > " .. q(pidfile) .. "; exec sleep 300" }, { timeout = 1 })
    end)
    assert.equal("timeout", e.kind)
    assert.matches("command 'sh' %(pid %d+%) timed out after 1 s and was killed", e.message)
    local pid = read_pid(pidfile)
    assert.equal(pid, tonumber(e.message:match("pid (%d+)")))
    assert.is_false(alive(pid))
    helpers.rm(dir)
  end)

  it("kills the program's whole process group when its step is cancelled", function()
    local dir = helpers.tmpdir()
    local shell, child = dir .. "/shell", dir .. "/child"
    -- The slow branch starts a shell that starts a grandchild; the fast one
    -- waits until both are running, then fails; the kind then cancels the
    -- slow branch.
    local slow = step("slow", function(_, ctx)
      return ctx:exec{ "sh", "-c", "sleep 300 & echo $! > " .. q(child) .. "; echo $$ > " .. q(shell) .. "; wait" }
    end)
    local fast = step("fast", function(_, ctx)
      ctx:exec({ "sh", "-c", "until [ -s " .. q(shell) .. " ]; do sleep 0.01; done" }, { timeout = 60 })
      error("fast failure")
    end)
    sl.kind("io_race", function(s, input, ctx)
      local a = ctx:spawn(s.slow, input)
      local b = ctx:spawn(s.fast, input)
      local settled = ctx:settle{ b }
      ctx:cancel(a)
      return { fast = settled[1].error.message, slow_done = ctx:settle{ a }[1].error.kind }
    end)
    local r = sl.run(sl.step{ kind = "io_race", name = "race", slow = slow, fast = fast })
    assert.equal("completed", r.status)
    assert.same({ fast = "fast failure", slow_done = "cancelled" }, r.output)
    local shell_pid, child_pid = read_pid(shell), read_pid(child)
    assert.is_true(wait_dead(shell_pid), "the program survived its cancelled step")
    assert.is_true(wait_dead(child_pid), "the program's child survived its cancelled step")
    helpers.rm(dir)
  end)

  it("kills the program when the step's own timeout ends the attempt", function()
    local dir = helpers.tmpdir()
    local pidfile = dir .. "/pid"
    local s = sl.step{ name = "bounded", timeout = 1, run = function(_, ctx)
      return ctx:exec{ "sh", "-c", "echo $$ > " .. q(pidfile) .. "; exec sleep 300" }
    end }
    local r = sl.run(s)
    assert.equal("failed", r.status)
    assert.equal("timeout", r.error.kind)
    assert.is_true(wait_dead(read_pid(pidfile)))
    helpers.rm(dir)
  end)

  it("suspends only its step: another step runs while the program waits for it", function()
    local dir = helpers.tmpdir()
    local flag = dir .. "/flag"
    -- a's program finishes only once b, running meanwhile, has made the file.
    local a = step("a", function(_, ctx)
      return ctx:exec({ "sh", "-c", "until [ -e " .. q(flag) .. " ]; do sleep 0.01; done; echo seen" }, { timeout = 60 }).stdout
    end)
    local b = step("b", function(_, ctx)
      ctx:sleep(0.01)
      assert(io.open(flag, "w")):close()
      return "made"
    end)
    local r = sl.run(sl.step{ kind = "io_both", name = "both", a = a, b = b })
    assert.equal("completed", r.status)
    assert.same({ "seen\n", "made" }, r.output)
    helpers.rm(dir)
  end)

  it("runs many programs at once", function()
    local child = step("child", function(i, ctx)
      return ctx:exec({ "sh", "-c", "echo $0", tostring(i) }).stdout
    end)
    sl.kind("io_many", function(s, input, ctx)
      local tasks = {}
      for i = 1, 200 do tasks[i] = ctx:spawn(s.child, i) end
      return ctx:await(tasks)
    end)
    local r = sl.run(sl.step{ kind = "io_many", name = "many", child = child })
    assert.equal("completed", r.status)
    for i = 1, 200 do assert.equal(i .. "\n", r.output[i]) end
  end)

  it("raises at the caller's line on misuse", function()
    local cases = {
      { function(ctx) return ctx:exec() end, "bad argument #1 to 'exec' (list of strings expected, got nil)" },
      { function(ctx) return ctx:exec({}) end, "bad argument #1 to 'exec' (the argument list is empty)" },
      { function(ctx) return ctx:exec("ls") end, "bad argument #1 to 'exec' (list of strings expected, got string)" },
      { function(ctx) return ctx:exec({ "echo", 1 }) end, "bad argument #1 to 'exec' (item 2 must be a string, got number)" },
      { function(ctx) return ctx:exec({ "true" }, { timout = 1 }) end, "bad argument #2 to 'exec' (unknown option 'timout' (did you mean 'timeout'?))" },
      { function(ctx) return ctx:exec({ "true" }, { timeout = -1 }) end, "bad argument #2 to 'exec' (option 'timeout' must be a positive number of seconds, got number)" },
      { function(ctx) return ctx:exec({ "true" }, { env = { A = 1 } }) end, "bad argument #2 to 'exec' (env: the value of 'A' must be a string, true (pass on the engine's) or false, got number)" },
      { function(ctx) return ctx:exec({ "true" }, { max_output = 0.5 }) end, "bad argument #2 to 'exec' (option 'max_output' must be a positive integer number of bytes, got number)" },
    }
    for _, case in ipairs(cases) do
      local e = step_error(case[1])
      assert.equal(case[2], e.message)
      assert.matches("io_spec.lua:%d+$", e.where)
    end
  end)
end)

describe("ctx:http", function()
  local server, server_pid, base

  setup(function()
    server = assert(io.popen("exec env -u LD_PRELOAD sh -c 'echo $$; exec " .. q(MOCK) .. " 0'"))
    server_pid = server:read("l")
    local port = assert(server:read("l"):match("^listening on (%d+)$"), "the mock server did not start")
    base = "http://127.0.0.1:" .. port
  end)

  teardown(function()
    if server_pid then os.execute("kill -TERM " .. server_pid) end
    if server then server:close() end
  end)

  it("returns the status, the headers with lowercased names, and the body", function()
    local r = run_step(function(ctx)
      return ctx:http{ url = base .. "/echo?x=1", method = "PUT", body = { a = 1 },
                       headers = { ["X-Sluice-Test"] = "yes" } }
    end)
    assert.equal("completed", r.status)
    local res = r.output
    assert.equal(200, res.status)
    assert.equal("application/json", res.headers["content-type"])
    assert.equal(tostring(#res.body), res.headers["content-length"])
    local echo = sl.decode(res.body)
    assert.equal("PUT", echo.method)
    assert.equal("/echo", echo.path)
    assert.equal("x=1", echo.query)
    assert.equal("yes", echo.headers["x-sluice-test"])
    assert.equal("application/json", echo.headers["content-type"])
    assert.equal('{"a":1}', echo.body)
  end)

  it("sends a GET for a plain URL and a POST for a body without a method", function()
    local r = run_step(function(ctx)
      return { sl.decode(ctx:http(base .. "/echo").body),
               sl.decode(ctx:http{ url = base .. "/echo", body = "raw" }.body) }
    end)
    local get, post = r.output[1], r.output[2]
    assert.same({ "GET", "" }, { get.method, get.body })
    assert.same({ "POST", "raw" }, { post.method, post.body })
  end)

  it("returns 4xx and 5xx responses as their status, not as errors", function()
    local r = run_step(function(ctx)
      return { ctx:http(base .. "/status/404").status, ctx:http(base .. "/status/503").status,
               ctx:http(base .. "/no/such/route").status }
    end)
    assert.equal("completed", r.status)
    assert.same({ 404, 503, 404 }, r.output)
  end)

  it("talks to the mock chat completions route", function()
    local r = run_step(function(ctx)
      return ctx:http{ url = base .. "/v1/chat/completions", body = {
        model = "m", messages = { { role = "system", content = "be brief" }, { role = "user", content = "hello there" } } } }
    end)
    local chat = sl.decode(r.output.body)
    assert.equal(200, r.output.status)
    assert.equal("Mock reply to: hello there", chat.choices[1].message.content)
    assert.same({ prompt_tokens = 4, completion_tokens = 5, total_tokens = 9 }, chat.usage)
  end)

  it("gets 429 with Retry-After from the mock's rate limit for the first n requests of a key", function()
    local r = run_step(function(ctx)
      local out = {}
      for i = 1, 3 do
        local res = ctx:http(base .. "/retry-after?n=2&key=io-spec&ms=1500")
        out[i] = { res.status, res.headers["retry-after"], res.headers["retry-after-ms"] }
      end
      return out
    end)
    assert.same({ { 429, "2", "1500" }, { 429, "2", "1500" }, { 200 } }, r.output)
  end)

  it("makes the mock's chat route require the key given in MOCK_API_KEY", function()
    local keyed = assert(io.popen("exec env -u LD_PRELOAD MOCK_API_KEY=sk-io sh -c 'echo $$; exec " .. q(MOCK) .. " 0'"))
    local pid = keyed:read("l")
    local url = "http://127.0.0.1:" .. keyed:read("l"):match("(%d+)$") .. "/v1/chat/completions"
    local r = run_step(function(ctx)
      local body = { messages = { { role = "user", content = "reply in JSON" } } }
      local bare = ctx:http{ url = url, body = body }
      local authed = ctx:http{ url = url, body = body, headers = { Authorization = "Bearer sk-io" } }
      return { bare.status, sl.decode(bare.body).error.code, authed.status,
               sl.decode(sl.decode(authed.body).choices[1].message.content) }
    end)
    os.execute("kill -TERM " .. pid)
    keyed:close()
    assert.same({ 401, "invalid_api_key", 200, { reply = "reply in JSON", words = 3 } }, r.output)
  end)

  it("runs 1,000 requests at once from one engine, all succeeding", function()
    local child = step("get", function(i, ctx)
      local res = ctx:http(base .. "/slow?ms=20")
      return res.status == 200 and sl.decode(res.body).slept_ms == 20 and i
    end)
    sl.kind("io_fan", function(s, input, ctx)
      local tasks = {}
      for i = 1, 1000 do tasks[i] = ctx:spawn(s.child, i) end
      return ctx:await(tasks)
    end)
    local r = sl.run(sl.step{ kind = "io_fan", name = "fan", child = child })
    assert.equal("completed", r.status, r.error and tostring(r.error))
    assert.equal(1000, #r.output)
    for i = 1, 1000 do assert.equal(i, r.output[i]) end
  end)

  it("raises kind error with curl's message for an unreachable host", function()
    local e = step_error(function(ctx) return ctx:http("http://127.0.0.1:1/x?secret=1") end)
    assert.equal("error", e.kind)
    assert.matches("^GET http://127.0.0.1:1/x failed: .*connect", e.message)
    assert.matches("io_spec.lua:%d+$", e.where)
  end)

  it("raises kind error when the server resets the connection", function()
    local e = step_error(function(ctx) return ctx:http(base .. "/reset") end)
    assert.equal("error", e.kind)
    assert.matches("^GET " .. base:gsub("%p", "%%%0") .. "/reset failed: %S", e.message)
  end)

  it("raises kind timeout when the server answers after the timeout", function()
    local e = step_error(function(ctx) return ctx:http{ url = base .. "/slow?ms=10000", timeout = 0.2 } end)
    assert.equal("timeout", e.kind)
    assert.matches("/slow failed: .*[Tt]imed out", e.message)
  end)

  it("fails with a clear error when the response exceeds max_response", function()
    local e = step_error(function(ctx) return ctx:http{ url = base .. "/bytes?n=100000", max_response = 1000 } end)
    assert.equal("error", e.kind)
    assert.matches("the response exceeded 1000 bytes (max_response)", e.message, 1, true)
    local r = run_step(function(ctx) return #ctx:http{ url = base .. "/bytes?n=100000", max_response = 100000 }.body end)
    assert.equal(100000, r.output)
  end)

  it("suspends only its step: another step runs while a request waits", function()
    -- a's request is answered only once b, which sleeps first, has asked
    -- the server to release it.
    local a = step("a", function(_, ctx)
      return ctx:http{ url = base .. "/hold?key=io-order", timeout = 60 }.status
    end)
    local b = step("b", function(_, ctx)
      ctx:sleep(0.01)
      return ctx:http(base .. "/release?key=io-order").status
    end)
    local r = sl.run(sl.step{ kind = "io_both", name = "both", a = a, b = b })
    assert.equal("completed", r.status, r.error and tostring(r.error))
    assert.same({ 200, 200 }, r.output)
  end)

  it("drops the request of a cancelled step and keeps serving others", function()
    local held = step("held", function(_, ctx) return ctx:http(base .. "/hold?key=io-never") end)
    sl.kind("io_drop", function(s, input, ctx)
      local t = ctx:spawn(s.held, input)
      ctx:sleep(0.01)
      ctx:cancel(t)
      return { ctx:settle{ t }[1].error.kind, ctx:http(base .. "/status/204").status }
    end)
    local r = sl.run(sl.step{ kind = "io_drop", name = "drop", held = held })
    assert.equal("completed", r.status, r.error and tostring(r.error))
    assert.same({ "cancelled", 204 }, r.output)
  end)

  it("raises at the caller's line on misuse", function()
    local cases = {
      { function(ctx) return ctx:http() end, "bad argument #1 to 'http' (request table or URL expected, got nil)" },
      { function(ctx) return ctx:http{ url = base, methd = "GET" } end, "bad argument #1 to 'http' (unknown option 'methd' (did you mean 'method'?))" },
      { function(ctx) return ctx:http{ method = "GET" } end, "bad argument #1 to 'http' (option 'url' must be a string, got nil)" },
      { function(ctx) return ctx:http{ url = base, headers = { ["X-A"] = "a\r\nInjected: 1" } } end, "bad argument #1 to 'http' (the value of header 'X-A' holds a line break or a zero byte)" },
      { function(ctx) return ctx:http{ url = base, body = print } end, "bad argument #1 to 'http' (option 'body' must be a string or a table (sent as JSON), got function)" },
      { function(ctx) return ctx:http{ url = base, body = { f = print } } end, "bad argument #1 to 'http' (the body cannot be sent as JSON: cannot encode a function at $.f)" },
    }
    for _, case in ipairs(cases) do
      local e = step_error(case[1])
      assert.equal(case[2], e.message)
      assert.matches("io_spec.lua:%d+$", e.where)
    end
  end)

  it("leaves the mock server to exit cleanly on SIGTERM", function()
    os.execute("kill -TERM " .. server_pid)
    local ok, how, code = server:close()
    server, server_pid = nil, nil
    assert.same({ true, "exit", 0 }, { ok, how, code })
  end)
end)

describe("the OTLP exporter", function()
  local server, server_pid, base

  setup(function()
    server = assert(io.popen("exec env -u LD_PRELOAD sh -c 'echo $$; exec " .. q(MOCK) .. " 0'"))
    server_pid = server:read("l")
    local port = assert(server:read("l"):match("^listening on (%d+)$"), "the mock server did not start")
    base = "http://127.0.0.1:" .. port
  end)

  teardown(function()
    if server_pid then os.execute("kill -TERM " .. server_pid) end
    if server then server:close() end
  end)

  local function counts()
    local r = run_step(function(ctx) return ctx:http{ url = base .. "/v1/traces/count" } end)
    assert.equal("completed", r.status)
    return sl.decode(r.output.body)
  end

  local function script(n)
    local dir = helpers.tmpdir()
    local lines = { 'local sl = require "sluice"', "local steps = {}" }
    lines[#lines + 1] = ("for i = 1, %d do steps[i] = sl.step{ name = 's' .. i, run = function(x) return x + 1 end } end"):format(n)
    lines[#lines + 1] = "return sl.pipeline{ name = 'many', table.unpack(steps) }"
    return helpers.script(table.concat(lines, "\n") .. "\n", dir, "many.lua"), dir
  end

  it("sends every span to the collector over OTLP/HTTP, in batches, from --otlp or the environment", function()
    local before = counts()
    local file, dir = script(1200)
    local code, out = helpers.cli({ "run", file, "--input", "0", "--store", ":memory:", "--otlp", base })
    assert.equal(0, code)
    assert.equal("1200\n", out)
    local after = counts()
    assert.equal(1201, after.spans - before.spans)
    assert.is_true(after.requests - before.requests >= 3)   -- batches of at most 512
    code = helpers.cli({ "run", file, "--input", "0", "--store", ":memory:" },
      { env = { OTEL_EXPORTER_OTLP_ENDPOINT = base } })
    assert.equal(0, code)
    assert.equal(1201, counts().spans - after.spans)
    helpers.rm(dir)
  end)

  it("lets go of an exporter replaced while its request is in flight only once it is answered", function()
    local eng = sl.engine{ otlp = base .. "/hold?key=otlp-late&to=/v1/traces" }
    local p = sl.pipeline{ name = "p", sl.step{ name = "s", run = function(x) return x end } }
    assert.equal(1, eng:run(p, 1).output)
    local lost = eng:flush_spans(0)          -- sent; the collector holds it
    assert.equal(2, lost)                    -- not answered: not known to be taken
    eng:set_otlp(nil)                        -- the exporter goes while it waits
    run_step(function(ctx) return ctx:http{ url = base .. "/release?key=otlp-late" } end)
    -- The engine's loop turns and the answer arrives for the closed exporter.
    local nap = sl.pipeline{ name = "nap", sl.step{ name = "z", run = function(x, ctx)
      ctx:sleep(0.3); return x end } }
    assert.equal(5, eng:run(nap, 5).output)
  end)

  it("counts the spans a collector that is down did not take, and the run is unaffected", function()
    local file, dir = script(3)
    local code, out, err = helpers.cli({ "run", file, "--input", "0", "--store", ":memory:",
      "--otlp", "http://127.0.0.1:1" })
    assert.equal(0, code)
    assert.equal("3\n", out)
    assert.matches("sluice: 4 spans were not exported to http://127.0.0.1:1/v1/traces", err, 1, true)
    code, _, err = helpers.cli({ "run", file, "--otlp", "ftp://x" })
    assert.equal(2, code)
    assert.matches("--otlp: the OTLP endpoint must be an http:// or https:// URL", err, 1, true)
    helpers.rm(dir)
  end)
end)

describe("the OTLP exporter from the Lua API", function()
  it("exports an engine's spans and says what a collector that is down did not take", function()
    local eng = sl.engine{ otlp = "http://127.0.0.1:1" }
    local p = sl.pipeline{ name = "p", sl.step{ name = "s", run = function(x) return x end } }
    assert.equal(7, eng:run(p, 7).output)
    local lost, why = eng:flush_spans(2)
    assert.equal(2, lost)
    assert.matches("not exported to http://127.0.0.1:1/v1/traces", why, 1, true)
    local ok, err = pcall(sl.engine, { otlp = "nope" })
    assert.is_false(ok)
    assert.matches("http:// or https://", err, 1, true)
  end)
end)
