-- sluice.testing: testing users' own pipelines, from busted or any Lua
-- test runner.
--
--   local testing = require "sluice.testing"
--   local t = testing.new{ file = "pipeline.lua", cassette = "spec/fixtures/p.json" }
--   local plan = t:mock("plan", { topic = "tides", plan = "1. 2. 3." })
--   local r = t:run{ topic = "tides" }
--   plan:called(1)
--   t:close()
--
-- A harness runs the pipeline on an engine of its own, with a store of
-- its own, on the virtual clock (every wait takes no time, in the order it
-- would have ended), and sees three things on the way:
--
--   steps     a mocked step (any kind, by name) answers with the mock's
--             value, function or next reply instead of running;
--   models    a mocked agent (by the step that calls it, or by model
--             name) answers the model request itself, so the agent's own
--             templates, schema checks and usage accounting still run;
--   HTTP      every other request of ctx:http goes to the cassette: replayed
--             from it when it holds the same request, recorded into it
--             (keys and secrets removed) when it is being recorded.
--
-- Misuse (a bad option, a mock of a name no step has, a request that the
-- cassette does not hold) raises at the test's own line, naming what was
-- expected.

local sl = require "sluice"
local dsl = require "sluice.dsl"

local M = {}

-- The harness whose run is going on, if any: the wrappers of the ctx
-- methods act only for its runs.
local active = nil

---------------------------------------------------------------------------
-- Small helpers

local function fail(level, fmt, ...)
  error(fmt:format(...), level + 1)
end

-- "file:line" of the test code `level` frames up (for messages that are
-- not raised there).
local function site(level)
  local info = debug.getinfo(level + 1, "Sl")
  if not info then return "?" end
  return ("%s:%d"):format(info.short_src, info.currentline or 0)
end

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function write_file(path, text)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  f:write(text)
  f:close()
  local ok, rerr = os.rename(tmp, path)
  if not ok then return nil, rerr end
  return true
end

local function quote(v)
  if type(v) == "string" then
    if #v > 80 then v = v:sub(1, 77) .. "..." end
    return ("%q"):format(v):gsub("\\\n", "\\n")
  end
  local text = sl.encode(v)
  if text and #text > 80 then text = text:sub(1, 77) .. "..." end
  return text or tostring(v)
end

local function is_array(t)
  if getmetatable(t) == sl.array_mt then return true end
  local n = #t
  if n == 0 then return false end
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 or k > n then return false end
  end
  return true
end

-- The first place where a and b differ, as (path, a's value, b's value),
-- or nil when they are equal. Numbers compare by value (2 == 2.0).
local function difference(a, b, path)
  path = path or ""
  if type(a) ~= "table" or type(b) ~= "table" then
    if a == b or (a == sl.null and b == nil) or (a == nil and b == sl.null) then return nil end
    return path, a, b
  end
  local keys, seen = {}, {}
  for k in pairs(a) do if not seen[k] then seen[k] = true; keys[#keys + 1] = k end end
  for k in pairs(b) do if not seen[k] then seen[k] = true; keys[#keys + 1] = k end end
  table.sort(keys, function(x, y)
    if type(x) == type(y) and (type(x) == "number" or type(x) == "string") then return x < y end
    return type(x) < type(y)
  end)
  local array = is_array(a) or is_array(b)
  for _, k in ipairs(keys) do
    local sub
    if array and math.type(k) == "integer" then sub = ("%s[%d]"):format(path, k)
    elseif type(k) == "string" and k:match("^[%a_][%w_]*$") then
      sub = path == "" and k or (path .. "." .. k)
    else sub = ("%s[%s]"):format(path, quote(k)) end
    local p, x, y = difference(a[k], b[k], sub)
    if p then return p, x, y end
  end
  return nil
end
M.difference = difference

local function deep_equal(a, b)
  return difference(a, b) == nil
end

---------------------------------------------------------------------------
-- Replies: what a mock answers with

local Reply = {}
Reply.__index = Reply

--- testing.sequence{r1, r2, ...}: a mock answers its first call with r1,
--- its second with r2, and so on; a call past the last is an error that
--- names the mock and how many replies it has.
function M.sequence(list)
  if type(list) ~= "table" or #list == 0 then
    fail(2, "bad argument #1 to 'sequence' (a non-empty list of replies expected, got %s)",
      type(list) == "table" and "an empty table" or type(list))
  end
  return setmetatable({ kind = "sequence", list = list }, Reply)
end

--- testing.fail(kind, message): a reply that fails the call with an error
--- of this kind ("error", "timeout", "validation", ...), as sl.error does.
function M.fail(kind, message)
  if type(kind) ~= "string" then
    fail(2, "bad argument #1 to 'fail' (error kind expected, got %s)", type(kind))
  end
  return setmetatable({ kind = "fail", error_kind = kind,
    message = message ~= nil and tostring(message) or ("mocked " .. kind) }, Reply)
end

--- testing.response{status =, headers =, body =}: a raw HTTP answer, for
--- a mocked agent (a 429 or a 500 the agent retries on, a malformed body).
function M.response(r)
  if type(r) ~= "table" or math.type(r.status) ~= "integer" then
    fail(2, "bad argument #1 to 'response' (a table with an integer status expected)")
  end
  return setmetatable({ kind = "response", status = r.status, headers = r.headers or {},
    body = r.body or "" }, Reply)
end

local function is_reply(v, kind)
  return getmetatable(v) == Reply and (kind == nil or v.kind == kind)
end

---------------------------------------------------------------------------
-- Mocks

local Mock = {}
Mock.__index = Mock

function Mock:__tostring()
  return ("mock of %s '%s'"):format(self.what, self.name)
end

-- The reply for this call: the next of a sequence, else the one reply.
function Mock:next_reply()
  local r = self.reply
  if is_reply(r, "sequence") then
    local n = #self.calls
    local item = r.list[n]
    if item == nil then
      return nil, ("%s was called %d times, but its sequence has only %d replies"):format(
        tostring(self), n, #r.list)
    end
    return item
  end
  return r
end

--- m:called([n]): asserts that the mock was called (n times when given).
function Mock:called(n)
  if n == nil then
    if #self.calls == 0 then fail(2, "expected %s to be called, but it never was", tostring(self)) end
  elseif #self.calls ~= n then
    fail(2, "expected %s to be called %d time%s, but it was called %d time%s", tostring(self),
      n, n == 1 and "" or "s", #self.calls, #self.calls == 1 and "" or "s")
  end
  return self
end

--- m:not_called(): asserts that the mock was never called.
function Mock:not_called()
  if #self.calls > 0 then
    fail(2, "expected %s not to be called, but it was called %d time%s (first with %s)",
      tostring(self), #self.calls, #self.calls == 1 and "" or "s", quote(self.calls[1].input))
  end
  return self
end

--- m:called_with(input[, n]): asserts that call n (default: some call)
--- had this input (compared deeply). For an agent the input is the
--- request's messages.
function Mock:called_with(input, n)
  if n ~= nil then
    local c = self.calls[n]
    if c == nil then
      fail(2, "expected call #%d of %s, but it was called %d time%s", n, tostring(self),
        #self.calls, #self.calls == 1 and "" or "s")
    end
    local p, want, got = difference(input, c.input)
    if p then
      fail(2, "call #%d of %s: its input differs at %s: expected %s, got %s", n, tostring(self),
        p == "" and "the top" or p, quote(want), quote(got))
    end
    return self
  end
  for _, c in ipairs(self.calls) do
    if deep_equal(input, c.input) then return self end
  end
  if #self.calls == 0 then
    fail(2, "expected %s to be called with %s, but it was never called", tostring(self), quote(input))
  end
  local p, want, got = difference(input, self.calls[#self.calls].input)
  fail(2, "expected %s to be called with %s; no call was (the last differs at %s: expected %s, got %s)",
    tostring(self), quote(input), p == "" and "the top" or p, quote(want), quote(got))
end

--- m:last(): the last call ({input =, step =, attempt =, ...}), or nil.
function Mock:last()
  return self.calls[#self.calls]
end

local function check_reply(reply, level, fname)
  if reply == nil then
    fail(level + 1, "bad argument #2 to '%s' (a reply expected: a value, a function or "
      .. "testing.sequence{...}, got nil)", fname)
  end
end

---------------------------------------------------------------------------
-- The harness

local Harness = {}
Harness.__index = Harness

local harness_options = { file = true, pipeline = true, env = true, cassette = true,
  record = true, clock = true, store = true }
local record_modes = { once = true, all = true, none = true }

--- testing.new{...}: a harness for one pipeline.
---   file      a pipeline file, loaded into the harness's engine (the
---             pipeline it returns, or `pipeline` by name when it returns
---             several)
---   pipeline  a pipeline (a step) given directly, or the name in file
---   env       environment variables the file and its steps see through
---             os.getenv while loaded and run (false hides one)
---   cassette  the path of a cassette file for ctx:http
---   record    "once" (default: replay the cassette when it exists, else
---             record it), "all" (record it again) or "none" (replay
---             only; a missing cassette is an error). SLUICE_RECORD=1 in
---             the environment means "all".
---   clock     "virtual" (default) or "real"
---   store     the engine's store (default: a file of its own, removed
---             by t:close())
function M.new(opts)
  if type(opts) ~= "table" then
    fail(2, "bad argument #1 to 'new' (table expected, got %s)", type(opts))
  end
  for k in pairs(opts) do
    if not harness_options[k] then
      fail(2, "bad argument #1 to 'new' (unknown option '%s'%s)", tostring(k),
        dsl.suggest(k, harness_options))
    end
  end
  if opts.file == nil and not dsl.is_step(opts.pipeline) then
    fail(2, "bad argument #1 to 'new' (option 'file' (a pipeline file) or 'pipeline' "
      .. "(a step) expected)")
  end
  if opts.file ~= nil and type(opts.file) ~= "string" then
    fail(2, "bad argument #1 to 'new' (option 'file' must be a path, got %s)", type(opts.file))
  end
  if opts.env ~= nil and type(opts.env) ~= "table" then
    fail(2, "bad argument #1 to 'new' (option 'env' must be a table of names to strings)")
  end
  local record = opts.record or "once"
  if os.getenv("SLUICE_RECORD") == "1" then record = "all" end
  if not record_modes[record] then
    fail(2, "bad argument #1 to 'new' (option 'record' must be \"once\", \"all\" or \"none\", got %s)",
      quote(record))
  end
  local clock = opts.clock or "virtual"
  if clock ~= "virtual" and clock ~= "real" then
    fail(2, "bad argument #1 to 'new' (option 'clock' must be \"virtual\" or \"real\", got %s)",
      quote(clock))
  end
  if opts.cassette ~= nil and type(opts.cassette) ~= "string" then
    fail(2, "bad argument #1 to 'new' (option 'cassette' must be a path, got %s)", type(opts.cassette))
  end

  local t = setmetatable({ env = opts.env or {}, clock = clock, mocks = {}, agent_mocks = {},
    problems = {}, where = site(2) }, Harness)
  if opts.store then
    t.store = opts.store
  else
    t.tmp = os.tmpname()
    os.remove(t.tmp)
    assert(os.execute("mkdir -p " .. shell_quote(t.tmp)))
    t.store = t.tmp .. "/store.db"
  end
  t.engine = sl.engine{ store = t.store }

  if opts.cassette then t:open_cassette(opts.cassette, record, 3) end

  if opts.file then
    t.file = opts.file
    local loaded
    local ok, err = t:with_env(function()
      loaded = t.engine:load(opts.file)
    end)
    if not ok then fail(2, "loading %s: %s", opts.file, tostring(err)) end
    local p = loaded
    if not dsl.is_step(p) then
      if type(p) ~= "table" then fail(2, "%s returned no pipeline", opts.file) end
      local name = opts.pipeline
      local only, count = nil, 0
      for k in pairs(p) do only, count = k, count + 1 end
      if name == nil and count == 1 then name = only end
      if name == nil then
        local names = {}
        for k in pairs(p) do names[#names + 1] = tostring(k) end
        table.sort(names)
        fail(2, "%s returns several pipelines (%s): choose one with pipeline = NAME",
          opts.file, table.concat(names, ", "))
      end
      p = p[name]
      if not dsl.is_step(p) then fail(2, "%s has no pipeline named %s", opts.file, quote(name)) end
    end
    t.pipeline = p
  else
    t.pipeline = opts.pipeline
  end
  t.names = {}
  t:collect_names(t.pipeline, {})
  return t
end

-- The names of the steps reachable from s through its fields.
function Harness:collect_names(v, seen)
  if type(v) ~= "table" or seen[v] then return end
  seen[v] = true
  if dsl.is_step(v) then
    self.names[v.name] = v.kind
    self.defs = self.defs or {}
    self.defs[v.name] = self.defs[v.name] or v
  end
  for k, x in pairs(v) do
    if type(k) ~= "userdata" and type(x) == "table" then self:collect_names(x, seen) end
  end
end

-- Calls fn with os.getenv seeing the harness's env; returns pcall's.
function Harness:with_env(fn, ...)
  local getenv = os.getenv
  local env = self.env
  os.getenv = function(name)
    local v = env[name]
    if v == false then return nil end
    if v ~= nil then return tostring(v) end
    return getenv(name)
  end
  local res = table.pack(pcall(fn, ...))
  os.getenv = getenv
  return table.unpack(res, 1, res.n)
end

--- t:mock(name, reply): the step named name (of any kind) no longer runs;
--- each call answers with reply instead: a value (the output), a
--- function(input, ctx) returning output[, usage] (it may raise), a
--- testing.fail(kind, message), or testing.sequence{...} of these, one per
--- call. Returns the mock, whose calls list what each call was given.
function Harness:mock(name, reply)
  if type(name) ~= "string" or name == "" then
    fail(2, "bad argument #1 to 'mock' (step name expected, got %s)", type(name))
  end
  check_reply(reply, 2, "mock")
  if self.names[name] == nil then
    local known = {}
    for k in pairs(self.names) do known[k] = true end
    fail(2, "mock: the pipeline has no step named %s%s", quote(name), dsl.suggest(name, known))
  end
  local m = setmetatable({ name = name, what = "step", reply = reply, calls = {} }, Mock)
  self.mocks[name] = m
  return m
end

--- t:mock_agent(name, reply): the model requests an agent makes from the
--- step named name, or to the model named name, are answered by reply
--- instead of the endpoint: a string (the reply's text), a table
--- {content =, tool_calls =, usage = {prompt_tokens =, completion_tokens =}},
--- a testing.response{...} (a raw HTTP answer), a testing.fail(...), a
--- function(call) returning one of these, or testing.sequence{...}.
--- Each call records {input = messages, step =, model =, request =}.
function Harness:mock_agent(name, reply)
  if type(name) ~= "string" or name == "" then
    fail(2, "bad argument #1 to 'mock_agent' (step or model name expected, got %s)", type(name))
  end
  check_reply(reply, 2, "mock_agent")
  local m = setmetatable({ name = name, what = "agent", reply = reply, calls = {} }, Mock)
  self.agent_mocks[name] = m
  return m
end

--- t:unmock(name): the step (or agent) named name runs for real again.
function Harness:unmock(name)
  self.mocks[name] = nil
  self.agent_mocks[name] = nil
end

---------------------------------------------------------------------------
-- Step mocks: every kind's handler on the harness's engine is wrapped

local function reply_with(m, r, input, ctx)
  if is_reply(r, "fail") then
    error(sl.error(r.error_kind, r.message), 0)
  end
  if type(r) == "function" then return r(input, ctx) end
  if type(r) == "table" then return sl.copy(r) end
  return r
end

local function pipeline_kind(step, input, ctx)
  for i = 1, #step do input = ctx:run(step[i], input) end
  return input
end

local function step_kind(step, input, ctx)
  return step.run(input, ctx)
end

-- The handler each wrapper wraps. A wrapper answers for the harness whose
-- run is going on, so an engine that starts from the kinds of another, or
-- a resumed run that keeps the kinds it started with, still sees the
-- mocks of the harness running it.
local wrapped = setmetatable({}, { __mode = "k" })

local function wrapper_of(name, handler)
  local inner = handler
  if name == "step" then inner = step_kind
  elseif name == "pipeline" then inner = pipeline_kind end
  local w = function(step, input, ctx)
    local harness = active
    local m = harness and harness.mocks[step.name]
    if m == nil then return inner(step, input, ctx) end
    m.calls[#m.calls + 1] = { input = sl.copy(input), step = ctx.step, attempt = ctx.attempt,
      feedback = ctx.feedback }
    local r, problem = m:next_reply()
    if problem then
      harness.problems[#harness.problems + 1] = problem
      error(sl.error("error", problem), 0)
    end
    return reply_with(m, r, input, ctx)
  end
  wrapped[w] = handler
  return w
end

function Harness:wrap_kinds()
  local eng = self.engine
  for name, handler in pairs(eng:kinds()) do
    if wrapped[handler] == nil then eng:kind(name, wrapper_of(name, handler)) end
  end
end

---------------------------------------------------------------------------
-- Cassettes

local SECRET_NAME = { "auth", "key", "token", "secret", "password", "cookie", "session",
  "signature", "credential" }

local function secret_name(name)
  local n = tostring(name):lower()
  for _, s in ipairs(SECRET_NAME) do
    if n:find(s, 1, true) then return true end
  end
  return false
end

-- The variables that commonly hold API keys; the headers a request sends
-- name the rest.
local KEY_VARIABLES = { "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_OPENAI_API_KEY",
  "MISTRAL_API_KEY", "GROQ_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "TOGETHER_API_KEY",
  "OPENROUTER_API_KEY", "DEEPSEEK_API_KEY", "HF_TOKEN", "SLUICE_LLM_API_KEY" }

-- Values that must never be written: the keys the environment holds and
-- those a request sends, longest first.
local function secrets_of(request, env)
  local set = {}
  local function add(v)
    if type(v) == "string" and #v >= 8 then set[v] = true end
  end
  for _, k in ipairs(KEY_VARIABLES) do add(os.getenv(k)) end
  for k, v in pairs(env or {}) do if secret_name(k) then add(v) end end
  for k, v in pairs(request and request.headers or {}) do
    if secret_name(k) and type(v) == "string" then
      add(v)
      add(v:match("^%a+%s+(.+)$"))
    end
  end
  local list = {}
  for v in pairs(set) do list[#list + 1] = v end
  table.sort(list, function(a, b) return #a > #b end)
  return list
end

local function scrub(text, secrets)
  if type(text) ~= "string" then return text end
  for _, s in ipairs(secrets) do
    local i = text:find(s, 1, true)
    while i do
      text = text:sub(1, i - 1) .. "[REDACTED]" .. text:sub(i + #s)
      i = text:find(s, i + 10, true)
    end
  end
  return text
end

local function scrub_url(url, secrets)
  url = scrub(url, secrets)
  return (url:gsub("([?&])([^=&#]+)=([^&#]*)", function(sep, k, v)
    if secret_name(k) and v ~= "" then return sep .. k .. "=[REDACTED]" end
  end))
end

local function scrub_headers(hdrs, secrets)
  local out = {}
  for k, v in pairs(hdrs or {}) do
    if secret_name(k) then out[k] = "[REDACTED]"
    else out[k] = scrub(tostring(v), secrets) end
  end
  return out
end

-- The request as the cassette keeps it.
local function sanitize_request(req, secrets)
  return {
    method = (req.method or "GET"):upper(),
    url = scrub_url(req.url or "", secrets),
    headers = scrub_headers(req.headers, secrets),
    body = scrub(req.body, secrets),
  }
end

local function decoded(body)
  if type(body) ~= "string" then return body end
  local v = sl.decode(body)
  if type(v) == "table" then return v end
  return body
end

function Harness:open_cassette(path, record, level)
  local text = read_file(path)
  local c = { path = path, mode = "replay", interactions = {}, used = {} }
  if text == nil or record == "all" then
    if record == "none" then
      fail(level, "cassette %s does not exist (record = \"none\" replays only; record it "
        .. "with record = \"once\" against a real endpoint)", path)
    end
    c.mode = "record"
  else
    local v, err = sl.decode(text)
    if type(v) ~= "table" or type(v.interactions) ~= "table" then
      fail(level, "cassette %s is not a sluice cassette (%s)", path,
        err or "no interactions list")
    end
    c.interactions = v.interactions
    c.pipeline = v.pipeline
  end
  self.cassette = c
end

--- t:save(): writes the cassette being recorded (t:run does after each
--- run). Returns its path.
function Harness:save()
  local c = self.cassette
  if c == nil or c.mode ~= "record" then return c and c.path end
  local lines = { "{", ('  "sluice_cassette": 1,'), ('  "pipeline": %s,'):format(
    sl.encode(self.pipeline.name)), '  "interactions": [' }
  for i, it in ipairs(c.interactions) do
    lines[#lines + 1] = "    " .. assert(sl.encode(it)) .. (i < #c.interactions and "," or "")
  end
  lines[#lines + 1] = "  ]"
  lines[#lines + 1] = "}"
  local ok, err = write_file(c.path, table.concat(lines, "\n") .. "\n")
  if not ok then error(("cannot write cassette %s: %s"):format(c.path, tostring(err)), 2) end
  return c.path
end

-- A replayed response: streamed ones read back their chunks.
local function replayed(resp)
  if resp.chunks then
    local i = 0
    return { status = resp.status, headers = sl.copy(resp.headers or {}),
      read = function()
        i = i + 1
        return resp.chunks[i]
      end }
  end
  return { status = resp.status, headers = sl.copy(resp.headers or {}), body = resp.body }
end

function Harness:replay(ctx, req)
  local c = self.cassette
  local mine = sanitize_request(req, secrets_of(req, self.env))
  local body = decoded(mine.body)
  local closest, closest_score
  for i, it in ipairs(c.interactions) do
    if not c.used[i] then
      local r = it.request
      local same_url = r.url == mine.url and r.method == mine.method
      if same_url and deep_equal(decoded(r.body), body) then
        c.used[i] = true
        return replayed(it.response)
      end
      local score = (same_url and 2 or 0) + (it.step == ctx.step and 1 or 0)
      if closest == nil or score > closest_score then closest, closest_score = i, score end
    end
  end
  local label = ("%s %s"):format(mine.method, mine.url)
  local msg
  if closest == nil then
    msg = ("cassette %s: step '%s' made a request (%s) that the cassette does not hold: "
      .. "all %d recorded requests were already replayed"):format(c.path, ctx.step, label,
      #c.interactions)
  else
    local it = c.interactions[closest]
    local r = it.request
    local where, want, got
    if r.method ~= mine.method then where, want, got = "method", r.method, mine.method
    elseif r.url ~= mine.url then where, want, got = "url", r.url, mine.url
    else
      where, want, got = difference(decoded(r.body), body)
      where = "body" .. ((where == "" or where == nil) and "" or
        (where:sub(1, 1) == "[" and where or ("." .. where)))
    end
    msg = ("cassette %s: step '%s' made a request (%s) that the cassette does not hold; "
      .. "the closest, #%d (recorded from step '%s'), differs at %s: recorded %s, sent %s")
      :format(c.path, ctx.step, label, closest, tostring(it.step), where, quote(want), quote(got))
  end
  if c.pipeline and c.pipeline ~= self.pipeline.name then
    msg = msg .. (" (the cassette was recorded from pipeline '%s', this is '%s')"):format(
      c.pipeline, self.pipeline.name)
  end
  msg = msg .. "; if the pipeline changed on purpose, record the cassette again "
    .. "(record = \"all\", or SLUICE_RECORD=1)"
  self.problems[#self.problems + 1] = msg
  error(sl.error("error", msg), 0)
end

function Harness:record(ctx, req, http)
  local c = self.cassette
  local secrets = secrets_of(req, self.env)
  local entry = { step = ctx.step, request = sanitize_request(req, secrets) }
  c.interactions[#c.interactions + 1] = entry
  local res = http(ctx, req)
  local resp = { status = res.status, headers = scrub_headers(res.headers, secrets) }
  entry.response = resp
  if type(res.read) == "function" then
    local chunks = {}
    while true do
      local chunk = res:read()
      if chunk == nil then break end
      chunks[#chunks + 1] = chunk
    end
    resp.chunks = {}
    for i, ch in ipairs(chunks) do resp.chunks[i] = scrub(ch, secrets) end
    local i = 0
    return { status = res.status, headers = res.headers, read = function()
      i = i + 1
      return chunks[i]
    end }
  end
  resp.body = scrub(res.body, secrets)
  return res
end

---------------------------------------------------------------------------
-- Agent mocks: a model request answered here

local function count_chars(messages)
  local n = 0
  for _, m in ipairs(type(messages) == "table" and messages or {}) do
    if type(m.content) == "string" then n = n + #m.content end
  end
  return n
end

local function completion(model, messages, r)
  if type(r) == "string" then r = { content = r } end
  if type(r) ~= "table" then r = { content = sl.encode(r) } end
  local content = r.content
  if type(content) == "table" then content = sl.encode(content) end
  local usage = r.usage or { prompt_tokens = count_chars(messages) // 4 + 1,
    completion_tokens = #(content or "") // 4 + 1 }
  usage.total_tokens = usage.total_tokens
    or (usage.prompt_tokens or 0) + (usage.completion_tokens or 0)
  local message = { role = "assistant", content = content or sl.null, tool_calls = r.tool_calls }
  return {
    status = 200,
    headers = { ["content-type"] = "application/json" },
    body = assert(sl.encode({ id = "mock", object = "chat.completion", model = model,
      choices = { { index = 0, message = message,
        finish_reason = r.tool_calls and "tool_calls" or "stop" } },
      usage = usage })),
  }
end

function Harness:agent_reply(ctx, req, body)
  local m = self.agent_mocks[ctx.step] or self.agent_mocks[body.model]
  if m == nil then return nil end
  local call = { input = body.messages, step = ctx.step, model = body.model, request = body,
    attempt = ctx.attempt }
  m.calls[#m.calls + 1] = call
  local r, problem = m:next_reply()
  if problem then
    self.problems[#self.problems + 1] = problem
    error(sl.error("error", problem), 0)
  end
  if type(r) == "function" then r = r(call, ctx) end
  if is_reply(r, "fail") then error(sl.error(r.error_kind, r.message), 0) end
  if body.stream then
    local msg = ("%s: the agent streams its reply, which mock_agent does not "
      .. "answer; record a cassette instead"):format(tostring(m))
    self.problems[#self.problems + 1] = msg
    error(sl.error("error", msg), 0)
  end
  if is_reply(r, "response") then
    return { status = r.status, headers = sl.copy(r.headers), body = r.body }
  end
  return completion(body.model, body.messages, r)
end

---------------------------------------------------------------------------
-- The ctx methods the harness sees: http (mocked agents, cassettes)

local function methods_table()
  local methods = require("sluice.core").ctx_methods()
  if type(methods) == "table" and type(rawget(methods, "http")) == "function" then return methods end
  return nil
end

local real_http = nil
local function http_wrapper(ctx, req)
  local t = active
  if t == nil then return real_http(ctx, req) end
  if type(req) == "table" and type(req.body) == "string" and next(t.agent_mocks) then
    local body = sl.decode(req.body)
    if type(body) == "table" and body.messages ~= nil then
      local res = t:agent_reply(ctx, req, body)
      if res then return res end
    end
  end
  local c = t.cassette
  if c == nil or type(req) ~= "table" then return real_http(ctx, req) end
  if c.mode == "replay" then return t:replay(ctx, req) end
  return t:record(ctx, req, real_http)
end

local function install_http()
  local methods = methods_table()
  if methods == nil then
    error("sluice.testing: cannot find the methods of ctx (the engine's ctx metatable changed)", 3)
  end
  local cur = rawget(methods, "http")
  if cur ~= http_wrapper then
    real_http = cur
    rawset(methods, "http", http_wrapper)
  end
end

---------------------------------------------------------------------------
-- Runs

-- Runs fn(...) as the active harness: kinds wrapped, ctx:http seen, the
-- clock virtual; everything restored after, whatever happens.
function Harness:within(fn, ...)
  if active ~= nil and active ~= self then
    error("sluice.testing: another harness is running", 3)
  end
  if self.closed then error("sluice.testing: this harness was closed", 3) end
  self:wrap_kinds()
  install_http()
  self.problems = {}
  local previous = active
  active = self
  if self.clock == "virtual" then self.engine:set_clock("virtual") end
  local t0 = sl.now()
  local res = table.pack(self:with_env(fn, ...))
  self.elapsed = (self.elapsed or 0) + (sl.now() - t0)
  if self.clock == "virtual" then self.engine:set_clock("real") end
  active = previous
  if self.cassette and self.cassette.mode == "record" then self:save() end
  if not res[1] then error(res[2], 0) end
  if #self.problems > 0 then
    error(("%s: %s"):format(site(3), self.problems[1]), 0)
  end
  return table.unpack(res, 2, res.n)
end

--- t:run(input): runs the pipeline to its end (or its first pause) and
--- returns the result table (the shape sl.run returns). Raises when a
--- mock or the cassette was misused during the run, even if the pipeline
--- recovered from it.
function Harness:run(input)
  return self:within(function()
    -- From a file, by name: a resume loads the file again, and a run of the
    -- pipeline the engine holds now is one it can resume in turn.
    local p = self.file and rawget(self.pipeline, "name") or self.pipeline
    return self.engine:run(p, input)
  end)
end

--- testing.no_answer: an answer that gives none. On the virtual clock,
--- resuming with it lets the time pass until the paused run's question
--- falls due (sl.human{ timeout = }), so the run takes its timeout path.
M.no_answer = setmetatable({}, { __tostring = function() return "testing.no_answer" end })

--- t:resume(result_or_run_id, answer): continues a paused run with an
--- answer and returns its result.
function Harness:resume(r, answer)
  local id = type(r) == "table" and r.run_id or r
  if type(id) ~= "string" then
    fail(2, "bad argument #1 to 'resume' (a result or a run id expected, got %s)", type(r))
  end
  if answer == M.no_answer then
    if self.clock ~= "virtual" then
      fail(2, "testing.no_answer lets a question time out on the virtual clock; this harness's is real")
    end
    local run = self.engine:show(id)
    local due = run and run.due_ms
    if due == nil then
      fail(2, "run %s waits for an answer that never times out (no timeout = on its human step)", id)
    end
    return self:within(function()
      local left = (due - require("sluice.core").wall_ms()) / 1000
      if left > 0 then self.engine:advance(left + 0.001) end   -- counted in t:time()
      return self.engine:resume(id, nil, true):wait()
    end)
  end
  return self:within(function()
    -- The harness loaded the file itself: the run resumes with the
    -- steps it started with, whatever the file's mtime says.
    return self.engine:resume(id, answer, true):wait()
  end)
end

-- The human step a paused result waits on: its name, path and message
-- (defs: the harness's steps by name).
local function question_of(result, defs)
  local q
  for _, st in ipairs(result.steps or {}) do
    if st.kind == "human" and st.status ~= "completed" then q = st end
  end
  if q == nil then return nil end
  local def = defs and defs[q.name]
  return { step = q.name, path = q.path, message = def and def.message, schema = def and def.schema }
end
M.question_of = question_of

--- t:until_pause(input): runs the pipeline to a pause (an sl.human step)
--- and returns the paused result and the question ({step =, message =});
--- raises, naming the status, when the run does not pause.
function Harness:until_pause(input)
  local r = self:run(input)
  if r.status ~= "paused" then
    fail(2, "expected the run to pause for an answer, but it ended %s%s", r.status,
      r.error and (": " .. tostring(r.error.message)) or "")
  end
  return r, question_of(r, self.defs)
end

--- t:answer(input, answers): runs the pipeline, answering each pause from
--- answers until the run ends, and returns the final result and the
--- questions asked in order. answers is a list (the first pause takes the
--- first) or a table keyed by the human step's name; an answer may be a
--- function(question, result) returning it. A pause with no answer left
--- raises, naming the step.
function Harness:answer(input, answers)
  if type(answers) ~= "table" then
    fail(2, "bad argument #2 to 'answer' (a list of answers or a table keyed by step expected, got %s)",
      type(answers))
  end
  local asked = {}
  local r = self:run(input)
  local n = 0
  while r.status == "paused" do
    local q = question_of(r, self.defs) or { step = "?" }
    asked[#asked + 1] = q
    n = n + 1
    local a
    if #answers > 0 then a = answers[n] else a = answers[q.step] end
    if a == nil then
      fail(2, "the run paused at step '%s' (question %d), and answers has none for it", q.step, n)
    end
    if type(a) == "function" then a = a(q, r) end
    r = self:resume(r, a)
  end
  return r, asked
end

--- t:elapsed(): the seconds the harness's runs took on its clock (on the
--- virtual clock: what they would have taken, sleeps included).
function Harness:time()
  return self.elapsed or 0
end

--- t:close(): saves a cassette being recorded and removes the harness's
--- own store.
function Harness:close()
  if self.closed then return end
  if self.cassette and self.cassette.mode == "record" then self:save() end
  self.closed = true
  self.engine = nil
  collectgarbage()
  if self.tmp then os.execute("rm -rf " .. shell_quote(self.tmp)) end
end

--- testing.steps(result, name): the entries of result.steps for the step
--- named name, in order.
function M.steps(result, name)
  local out = {}
  for _, s in ipairs(result.steps or {}) do
    if s.name == name then out[#out + 1] = s end
  end
  return out
end

M.Harness = Harness
M.Mock = Mock
return M
