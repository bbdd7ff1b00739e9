-- sluice ui: its JSON API over real HTTP (curl) against the command on a
-- free port, and sluice show --timeline. Runs against SQLite, and against
-- PostgreSQL beside a server (tests/pg_env.sh).
local h = require "helpers"
local core = require "sluice.core"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local PIPELINES = [[
local sl = require "sluice"
return {
  ok = sl.pipeline{ name = "ok",
    sl.step{ name = "fetch", run = function(x, ctx)
      ctx:log("fetching", { url = "https://example.com" })
      ctx.state.fetched = true
      return { text = "<script>alert('x')</script>", n = x.n }
    end },
    sl.map{ name = "each", over = function(x) return { 1, 2, 3 } end,
      body = sl.step{ name = "item", run = function(x, ctx) ctx:sleep(0.01 * x); return x * 2 end } },
  },
  bad = sl.pipeline{ name = "bad",
    sl.step{ name = "prep", run = function(x) return x end },
    sl.step{ name = "boom", run = function(x) error("the answer had no title") end },
  },
  ask = sl.pipeline{ name = "ask",
    sl.step{ name = "draft", run = function(x) return { draft = "hello" } end },
    sl.human{ name = "approve", message = "Approve the <b>draft</b>?",
      schema = { type = "object", properties = { ok = { type = "boolean" },
        note = { type = "string" } }, required = { "ok" } } },
    sl.step{ name = "publish", run = function(x) return { published = x.ok, note = x.note } end },
  },
}
]]

-- One HTTP request: returns the status, the body decoded from JSON (or the
-- text) and the response headers as text.
local function http(url, opts)
  opts = opts or {}
  local body, head = os.tmpname(), os.tmpname()
  local cmd = { "curl -s -S --max-time 20 -o", q(body), "-D", q(head), "-w '%{http_code}'" }
  if opts.method then cmd[#cmd + 1] = "-X " .. opts.method end
  for k, v in pairs(opts.headers or {}) do cmd[#cmd + 1] = "-H " .. q(k .. ": " .. v) end
  if opts.data then cmd[#cmd + 1] = "--data-binary " .. q(opts.data) end
  cmd[#cmd + 1] = q(url)
  local p = assert(io.popen("env -u LD_PRELOAD " .. table.concat(cmd, " ")))
  local code = tonumber(p:read("a"))
  p:close()
  local text, headers = h.read(body), h.read(head)
  os.remove(body)
  os.remove(head)
  local ok, decoded = pcall(core.json_decode, text)
  return code, ok and decoded or text, headers
end

local function start_ui(store, args)
  local argv = { "ui", "--store", store, "--port", "0" }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local pid, out, err = h.cli(argv, { background = true })
  local url
  assert(h.wait_for(function()
    url = (h.read(out) or ""):match("^(http://[^\n]+/)\n")
    return url ~= nil or not h.alive(pid)
  end))
  assert(url, "sluice ui printed no URL: " .. tostring(h.read(err)))
  return { pid = pid, url = url, out = out, err = err }
end

local function stop_ui(ui)
  os.execute("kill -TERM " .. ui.pid)
  assert(h.wait_for(function() return not h.alive(ui.pid) end), "sluice ui did not stop on SIGTERM")
  -- It stopped cleanly: under the sanitizers, with nothing leaked.
  local err = h.read(ui.err) or ""
  assert(not err:find("Sanitizer", 1, true), err)
  assert(not err:find("sluice ui: ", 1, true), err)
end

describe("sluice ui", function()
  local dir, store, file, ui
  local ids = {}

  setup(function()
    dir = h.tmpdir()
    store = h.new_store(dir)
    file = h.write(dir .. "/p.lua", PIPELINES)
    for _, name in ipairs({ "ok", "bad", "ask" }) do
      local code, out, err = h.cli({ "run", file, "--pipeline", name, "--input", '{"n":7}',
        "--store", store, "--json" })
      assert(({ ok = 0, bad = 1, ask = 3 })[name] == code, err)
      ids[name] = core.json_decode(out).run_id
    end
    ui = start_ui(store)
  end)

  teardown(function()
    if ui then stop_ui(ui) end
  end)

  it("prints its URL first, on 127.0.0.1, and serves the page built into it", function()
    assert.matches("^http://127%.0%.0%.1:%d+/$", ui.url)
    local code, body, headers = http(ui.url)
    assert.equal(200, code)
    assert.matches("<title>sluice</title>", body, 1, true)
    assert.matches("Content%-Security%-Policy: default%-src 'self'", headers)
    assert.matches("text/html", headers, 1, true)
    code, body, headers = http(ui.url .. "app.js")
    assert.equal(200, code)
    assert.matches("text/javascript", headers, 1, true)
    assert.equal(404, (http(ui.url .. "nothing-here")))
  end)

  it("lists runs newest first with status, times, usage, and filters and pages them", function()
    local code, body = http(ui.url .. "api/runs")
    assert.equal(200, code)
    assert.equal(3, #body.runs)
    assert.same({ ids.ask, ids.bad, ids.ok }, { body.runs[1].id, body.runs[2].id, body.runs[3].id })
    assert.same({ "paused", "failed", "completed" },
      { body.runs[1].status, body.runs[2].status, body.runs[3].status })
    assert.is_number(body.runs[3].started_ms)
    assert.is_number(body.runs[3].duration_ms)
    assert.is_false(body.more)
    assert.matches("the answer had no title", body.runs[2].error, 1, true)

    code, body = http(ui.url .. "api/runs?status=failed")
    assert.equal(200, code)
    assert.equal(1, #body.runs)
    assert.equal(ids.bad, body.runs[1].id)

    code, body = http(ui.url .. "api/runs?pipeline=ok")
    assert.same({ ids.ok }, { body.runs[1].id })
    assert.equal(1, #body.runs)

    -- Text: in an error, and in an output (case aside).
    code, body = http(ui.url .. "api/runs?q=NO%20TITLE")
    assert.same({ ids.bad }, { body.runs[1] and body.runs[1].id })
    code, body = http(ui.url .. "api/runs?q=%5B2%2C4%2C6%5D")
    assert.equal(1, #body.runs)
    assert.equal(ids.ok, body.runs[1].id)

    code, body = http(ui.url .. "api/runs?limit=1&offset=1")
    assert.equal(1, #body.runs)
    assert.equal(ids.bad, body.runs[1].id)
    assert.is_true(body.more)
    code, body = http(ui.url .. "api/runs?limit=1&offset=2")
    assert.is_false(body.more)

    code, body = http(ui.url .. "api/runs?limit=lots")
    assert.equal(400, code)
    assert.matches("'limit' must be an integer", body.error, 1, true)
  end)

  it("gives a run's steps on its time axis and each step's input, output, state and logs", function()
    local code, run = http(ui.url .. "api/runs/" .. ids.ok)
    assert.equal(200, code)
    assert.equal("completed", run.status)
    assert.same({ n = 7 }, run.input)
    assert.equal(file, run.file)
    -- The root, fetch, each, and each's three items, each with its sleep
    -- (the record of its due time, over by now).
    assert.equal(9, #run.steps)
    local by, sleeps = {}, 0
    for _, s in ipairs(run.steps) do
      by[s.name .. (s.key or "")] = s
      if s.kind == "sleep" then
        sleeps = sleeps + 1
        assert.equal("waited", s.status)
        assert.equal("item", run.steps[s.parent_id].name)
      end
    end
    assert.equal(3, sleeps)
    assert.equal(0, run.steps[1].start_ms)
    assert.is_true(by.item3.ms >= 30 - 1)
    assert.is_true(by.item3.start_ms >= by.fetch.start_ms)
    assert.is_true(run.span_ms >= by.item3.start_ms + by.item3.ms - 0.01)
    assert.equal(run.steps[by.each.parent_id].name, "ok")
    assert.equal(run.steps[by.item1.parent_id].name, "each")

    local s
    code, s = http(ui.url .. "api/runs/" .. ids.ok .. "/step?path=" .. by.fetch.path)
    assert.equal(200, code)
    assert.same({ n = 7 }, s.input)
    assert.same({ text = "<script>alert('x')</script>", n = 7 }, s.output)
    assert.same({ fetched = true }, s.changes.set)
    assert.equal("fetching", s.logs[1].message)
    assert.equal("https://example.com", s.logs[1].fields.url)
    code, s = http(ui.url .. "api/runs/" .. ids.ok .. "/step?path=" .. by.item2.path)
    assert.equal(2, s.input)
    assert.equal(4, s.output)

    code, s = http(ui.url .. "api/runs/" .. ids.ok .. "/step?path=9/9")
    assert.equal(404, code)
    assert.matches("no step execution at path '9/9'", s.error, 1, true)
    code, s = http(ui.url .. "api/runs/nosuchrun")
    assert.equal(404, code)
    assert.matches("no run with id 'nosuchrun'", s.error, 1, true)
  end)

  it("gives a failed run's error with its file and line", function()
    local code, run = http(ui.url .. "api/runs/" .. ids.bad)
    assert.equal(200, code)
    assert.equal("failed", run.status)
    assert.matches("the answer had no title", run.errors[1].text, 1, true)
    assert.equal("boom", run.errors[1].step)
    assert.matches("p.lua:%d+", run.errors[1].where)
    local boom
    for _, s in ipairs(run.steps) do if s.name == "boom" then boom = s end end
    assert.equal("failed", boom.status)
    local _, s = http(ui.url .. "api/runs/" .. ids.bad .. "/step?path=" .. boom.path)
    assert.matches("p.lua:%d+", s.errors[1].where)
    assert.is_false(s.has_output)
  end)

  it("draws the run's pipeline as a flow", function()
    local code, g = http(ui.url .. "api/runs/" .. ids.ok .. "/graph")
    assert.equal(200, code)
    local texts = {}
    for _, n in ipairs(g.nodes) do texts[#texts + 1] = n.text end
    assert.same({ "start", "step: fetch", "map: each", "end each", "step: item", "end" }, texts)
    -- fetch, then the map's fork, its body, its join.
    local function edge(a, b)
      for _, e in ipairs(g.edges) do
        if g.nodes[tonumber(e.from:sub(2))].text == a and g.nodes[tonumber(e.to:sub(2))].text == b then
          return e
        end
      end
    end
    assert.truthy(edge("step: fetch", "map: each"))
    assert.equal("each item", edge("map: each", "step: item").label)
    assert.truthy(edge("step: item", "end each"))
  end)

  it("answers a paused run from its form's JSON and the run completes in the ui's process", function()
    local code, run = http(ui.url .. "api/runs/" .. ids.ask)
    assert.equal("paused", run.status)
    assert.equal(1, #run.waits)
    assert.equal("Approve the <b>draft</b>?", run.waits[1].message)
    assert.equal("object", run.waits[1].schema.type)

    local url = ui.url .. "api/runs/" .. ids.ask .. "/answer"
    -- Only JSON, and only from the page's own origin.
    local body
    code, body = http(url, { method = "POST", data = "answer=1",
      headers = { ["Content-Type"] = "application/x-www-form-urlencoded" } })
    assert.equal(415, code)
    code, body = http(url, { method = "POST", data = '{"answer":{"ok":true}}',
      headers = { ["Content-Type"] = "application/json", Origin = "http://evil.example" } })
    assert.equal(403, code)
    code, body = http(url, { method = "POST", data = "{not json",
      headers = { ["Content-Type"] = "application/json" } })
    assert.equal(400, code)
    code, body = http(url, { method = "GET" })
    assert.equal(405, code)
    -- A name that was made to point here (DNS rebinding) is not this server.
    code, body = http(ui.url .. "api/runs", { headers = { Host = "evil.example:" ..
      ui.url:match(":(%d+)/$") } })
    assert.equal(403, code)
    assert.matches("not for 'evil.example:", body.error, 1, true)

    code, body = http(url, { method = "POST", data = '{"answer":{"ok":true,"note":"fine"}}',
      headers = { ["Content-Type"] = "application/json" } })
    assert.equal(202, code, body.error)
    assert.truthy(h.wait_for(function()
      local _, r = http(ui.url .. "api/runs/" .. ids.ask)
      run = r
      return r.status == "completed"
    end))
    assert.same({ published = true, note = "fine" }, run.output)
    code, body = http(url, { method = "POST", data = '{"answer":{"ok":false}}',
      headers = { ["Content-Type"] = "application/json" } })
    assert.equal(409, code)
    assert.matches("not paused", body.error, 1, true)
    -- What the ui's process did is in the store for every other reader.
    local c, out = h.cli({ "show", ids.ask, "--store", store, "--json" })
    assert.equal(0, c)
    assert.equal("completed", core.json_decode(out).status)
  end)

  it("records the answer to a paused run of the queue for a worker to go on with", function()
    local env = { SLUICE_STORE = store }
    local code, out, err = h.cli({ "submit", file, "--pipeline", "ask", "--input", "{}" }, { env = env })
    assert.equal(0, code, err)
    local id = out:match("%S+")
    code, _, err = h.cli({ "worker", "--until-idle" }, { env = env })
    assert.equal(0, code, err)
    local _, run = http(ui.url .. "api/runs/" .. id)
    assert.equal("paused", run.status)
    local body
    code, body = http(ui.url .. "api/runs/" .. id .. "/answer", { method = "POST",
      data = '{"answer":{"ok":true,"note":"queued"}}', headers = { ["Content-Type"] = "application/json" } })
    assert.equal(202, code, body.error)
    assert.equal("queued", body.status)
    _, run = http(ui.url .. "api/runs/" .. id)
    assert.equal("queued", run.status)
    code, _, err = h.cli({ "worker", "--until-idle" }, { env = env })
    assert.equal(0, code, err)
    _, run = http(ui.url .. "api/runs/" .. id)
    assert.equal("completed", run.status)
    assert.same({ published = true, note = "queued" }, run.output)
  end)

  it("answers an unknown API path and a bad method with JSON errors", function()
    local code, body = http(ui.url .. "api/nothing")
    assert.equal(404, code)
    assert.matches("no such API", body.error, 1, true)
    code, body = http(ui.url .. "api/runs", { method = "DELETE" })
    assert.equal(405, code)
  end)
end)

describe("sluice ui options", function()
  it("refuses a bad port and warns before listening beyond this machine", function()
    local code, _, err = h.cli{ "ui", "--port", "http" }
    assert.equal(2, code)
    assert.matches("--port must be a whole number", err, 1, true)
    code, _, err = h.cli{ "ui", "--port", "70000" }
    assert.equal(2, code)
    assert.matches("--port must be from 0 to 65535", err, 1, true)
    -- 192.0.2.1 (TEST-NET-1) is no address of this machine: the warning,
    -- then a clear failure to listen.
    code, _, err = h.cli{ "ui", "--host", "192.0.2.1", "--store", h.tmpdir() .. "/s.db" }
    assert.equal(2, code)
    assert.matches("warning: listening on 192.0.2.1", err, 1, true)
    assert.matches("cannot listen on 192.0.2.1", err, 1, true)
    code, _, err = h.cli{ "ui", "--host", "no such host name", "--store", h.tmpdir() .. "/s.db" }
    assert.equal(2, code)
    assert.matches("cannot listen on host 'no such host name'", err, 1, true)
  end)

  it("serves an empty store, and a port already taken is a clear error", function()
    local dir = h.tmpdir()
    local ui = start_ui(dir .. "/s.db")
    local code, body = http(ui.url .. "api/runs")
    assert.equal(200, code)
    assert.same({}, body.runs)
    local port = ui.url:match(":(%d+)/$")
    local c, _, err = h.cli{ "ui", "--store", dir .. "/s.db", "--port", port }
    assert.equal(2, c)
    assert.matches("cannot listen on 127.0.0.1 port " .. port, err, 1, true)
    stop_ui(ui)
  end)
end)

describe("sluice show --timeline", function()
  it("draws one bar per execution, scaled to the run", function()
    local dir = h.tmpdir()
    local file = h.write(dir .. "/p.lua", PIPELINES)
    local store = dir .. "/s.db"
    local code, out = h.cli({ "run", file, "--pipeline", "ok", "--input", "{}", "--store", store,
      "--json" })
    assert.equal(0, code)
    local id = core.json_decode(out).run_id
    local err
    code, out, err = h.cli({ "show", id, "--timeline", "--store", store }, { env = { COLUMNS = "100" } })
    assert.equal(0, code, err)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.matches("^run " .. id .. "  ok  completed", lines[1])
    -- The axis, then the root's bar spanning it all and the items'.
    local root = assert(out:match("\nok %(pipeline%)%s+([█]+)"))
    local item3 = assert(out:match("\n    item%[3%] %(step%)%s+([█]+)"))
    local item1 = assert(out:match("\n    item%[1%] %(step%)%s+([█]+)"))
    assert.is_true(utf8.len(root) >= utf8.len(item3))
    assert.is_true(utf8.len(item3) > utf8.len(item1))
    for _, l in ipairs(lines) do assert.is_true(utf8.len(l) <= 120, l) end
    code, _, err = h.cli({ "show", id, "--timeline", "--json", "--store", store })
    assert.equal(2, code)
    assert.matches("give one", err, 1, true)
  end)
end)
