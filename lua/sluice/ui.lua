-- The JSON API of `sluice ui` (README, "The web UI"): what the page reads
-- and a script may read too. handle(eng, req) answers one request of
-- engine/surface/ui.c with a status and a JSON body; everything comes from
-- the engine's store, read as `sluice runs` and `sluice show` read it.
--
--   GET  /api/runs?status=&pipeline=&q=&limit=&offset=   a page of runs
--   GET  /api/runs/ID                  the run, its steps, its waits
--   GET  /api/runs/ID/step?path=P[&epoch=E]   one step execution in full
--   GET  /api/runs/ID/graph            its pipeline's flow graph
--   POST /api/runs/ID/answer           answers a paused run (JSON body)
--   GET  /api/info                     the store and the version
local core = require "sluice.core"
local show = require "sluice.show"

local M = {}

local MAX_LIMIT = 500
local DEFAULT_LIMIT = 50

local function encode(v)
  local text, err = core.json_encode(v)
  if not text then error(err, 0) end
  return text
end

local function array(t)
  return setmetatable(t or {}, core.array_mt)
end

local function fail(status, msg)
  return status, encode({ error = msg })
end

local function integer_arg(q, name, default, max)
  local v = q[name]
  if v == nil or v == "" then return default end
  local n = math.tointeger(tonumber(v))
  if not n or n < 0 or (max and n > max) then
    error({ status = 400, message = ("'%s' must be an integer from 0 to %s, got '%s'"):format(
      name, max or "any", v) }, 0)
  end
  return n
end

-- A run's tokens and cost as the runs page shows them.
local function summary(r)
  local u = type(r.usage) == "table" and r.usage or {}
  local ended = r.ended_ms and r.ended_ms > 0 and r.ended_ms or nil
  local e = r.error
  return {
    id = r.run_id, pipeline = r.pipeline, status = r.status, queue = r.queue,
    started_ms = r.started_ms, ended_ms = ended,
    duration_ms = ended and r.started_ms and (ended - r.started_ms) or nil,
    cost = u.cost, tokens = u.tokens, requests = u.requests,
    waiting_for = r.waiting_for,
    error = e ~= nil and show.error_text(e) or nil,
  }
end

local function list_runs(eng, q)
  local limit = integer_arg(q, "limit", DEFAULT_LIMIT, MAX_LIMIT)
  local offset = integer_arg(q, "offset", 0)
  if limit == 0 then limit = DEFAULT_LIMIT end
  local status = q.status ~= "" and q.status or nil
  local pipeline = q.pipeline ~= "" and q.pipeline or nil
  local rows = eng:runs{ status = status, pipeline = pipeline, text = q.q,
    limit = limit + 1, offset = offset }
  local more = #rows > limit
  if more then rows[#rows] = nil end
  local out = array()
  for i, r in ipairs(rows) do out[i] = summary(r) end
  return 200, encode({ runs = out, offset = offset, limit = limit, more = more })
end

-- The run's errors, outermost first: each cause the error carries.
local function error_chain(e)
  local chain, seen = array(), {}
  while type(e) == "table" and not seen[e] and #chain < 20 do
    seen[e] = true
    chain[#chain + 1] = { kind = e.kind, message = e.message, step = e.step,
      where = e.where, text = show.error_text(e) }
    e = e.cause
  end
  return chain
end


local function get_run(eng, id)
  local run, checkpoints, waits = eng:show(id)
  if not run then return fail(404, checkpoints) end
  local steps, span = show.executions(checkpoints, waits)
  local r = summary(run)
  r.input, r.output, r.file, r.code_version = run.input, run.output, run.file, run.code_version
  r.usage, r.owner = run.usage, run.owner
  if run.error ~= nil then r.errors = error_chain(run.error) end
  local ws = array()
  for _, w in ipairs(waits) do
    ws[#ws + 1] = { path = w.path, message = w.message, schema = w.schema,
      answered = w.answer ~= nil, answer = w.answer }
  end
  r.waits = ws
  r.steps = steps
  r.span_ms = span
  return 200, encode(r)
end

local function get_step(eng, id, path, epoch)
  if path == nil or path == "" then return fail(400, "'path' is missing: /api/runs/ID/step?path=1/2") end
  local run, checkpoints = eng:show(id)
  if not run then return fail(404, checkpoints) end
  epoch = epoch and epoch ~= "" and math.tointeger(tonumber(epoch)) or nil
  -- The execution of that path at that epoch, else its latest.
  local found
  for _, c in ipairs(checkpoints) do
    if c.path == path and (epoch == nil or c.epoch == epoch) then found = c end
  end
  if found then
    local c = found
    return 200, encode({
      path = c.path, parent = c.parent_path, name = c.name, kind = c.kind, key = c.key,
      status = c.status, attempts = c.attempts, cached = c.cached, ms = c.ms,
      usage = c.usage, input = c.input, output = c.output, changes = c.changes,
      logs = c.logs, errors = c.error ~= nil and error_chain(c.error) or nil, epoch = c.epoch,
      has_input = c.input ~= nil, has_output = c.output ~= nil,
    })
  end
  return fail(404, ("run %s has no step execution at path '%s'"):format(id, path))
end

local function get_graph(eng, id)
  local run, msg = eng:show(id)
  if not run then return fail(404, msg) end
  if not run.file then return fail(404, "the run does not say which file its pipeline is in") end
  local ok, set = pcall(eng.load, eng, run.file)
  if not ok then
    return fail(422, ("cannot load %s to draw it: %s"):format(run.file, tostring(set)))
  end
  local root = set
  if type(set) == "table" and getmetatable(set) ~= core.step_mt then
    root = set[run.pipeline] or set
  end
  local graph = require "sluice.graph"
  local g = graph.flow(root)
  g.file = run.file
  g.pipeline = run.pipeline
  return 200, encode(g)
end

-- An answer comes from the page (or a script) as JSON: {"answer": value}.
-- Only JSON is taken, so a form on another site cannot post one (a
-- cross-site JSON request needs the browser's preflight, which we never
-- grant).
local function post_answer(eng, id, req)
  local ct = (req.content_type or ""):lower()
  if not ct:find("^application/json") then
    return fail(415, "an answer is sent as application/json: {\"answer\": ...}")
  end
  local ok, body = pcall(core.json_decode, req.body)
  if not ok or type(body) ~= "table" then
    return fail(400, "the body must be a JSON object {\"answer\": ...}: " .. tostring(body))
  end
  local run, msg = eng:show(id)
  if not run then return fail(404, msg) end
  if run.status ~= "paused" then
    return fail(409, ("run %s is %s, not paused: there is nothing to answer"):format(id, run.status))
  end
  local answer = body.answer
  if answer == nil then answer = core.null end
  local rok, r, how = pcall(eng.resume, eng, id, answer)
  if not rok then return fail(422, tostring(r)) end
  if r == nil then return 202, encode({ id = id, status = "queued" }) end
  local status = r.status
  if type(status) == "function" then status = status(r) end
  return 202, encode({ id = id, status = type(status) == "string" and status or "running" })
end

local function info(eng)
  return 200, encode({ version = core.version, store = M.store })
end

-- The Host names a request to a loopback server may carry: a page of
-- another site whose name was made to resolve to 127.0.0.1 (DNS
-- rebinding) sends its own name, and is refused.
local hosts

--- Called once the server listens on host:port.
function M.listening(host, port)
  local loopback = host == "localhost" or host == "::1" or host:match("^127%.") ~= nil
  if not loopback then
    hosts = nil   -- the user chose to serve a network: any name reaching it
    return
  end
  hosts = {}
  for _, h in ipairs({ host, "127.0.0.1", "localhost", "[::1]" }) do
    if h:find(":", 1, true) and not h:find("^%[") then h = "[" .. h .. "]" end
    hosts[h .. ":" .. port] = true
  end
end

local function route(eng, req)
  local m, p, q = req.method, req.path, req.query or {}
  if hosts and not hosts[req.host or ""] then
    return fail(403, "this server answers requests for 127.0.0.1, not for '" ..
      tostring(req.host) .. "'")
  end
  -- A page of another site must not read the store through the visitor's
  -- browser: a request that says where it comes from must come from here.
  if req.origin and req.host and req.origin ~= "http://" .. req.host then
    return fail(403, "cross-origin requests are refused")
  end
  if p == "/api/runs" or p == "/api/runs/" then
    if m ~= "GET" then return fail(405, "use GET") end
    return list_runs(eng, q)
  end
  if p == "/api/info" then return info(eng) end
  local id, rest = p:match("^/api/runs/([^/]+)(.*)$")
  if id then
    if rest == "" then
      if m ~= "GET" then return fail(405, "use GET") end
      return get_run(eng, id)
    elseif rest == "/step" then
      return get_step(eng, id, q.path, q.epoch)
    elseif rest == "/graph" then
      return get_graph(eng, id)
    elseif rest == "/answer" then
      if m ~= "POST" then return fail(405, "use POST with {\"answer\": ...}") end
      return post_answer(eng, id, req)
    end
  end
  return fail(404, ("no such API: %s %s (see the README, \"The web UI\")"):format(m, p))
end

--- Answers one request: returns the HTTP status and the JSON body.
function M.handle(eng, req)
  local ok, status, body = pcall(route, eng, req)
  if ok then return status, body end
  if type(status) == "table" and status.status then return fail(status.status, status.message) end
  io.stderr:write(("sluice ui: %s %s: %s\n"):format(req.method, req.path, tostring(status)))
  return fail(500, tostring(status))
end

return M
