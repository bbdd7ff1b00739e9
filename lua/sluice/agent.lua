-- Agents: step-compatible callables that call models and programs, the
-- price table their usage is costed with, and prompt templates.
--
--   sl.agent.chat{...}     a model behind any OpenAI-compatible
--                          chat-completions endpoint, through ctx:http
--   sl.agent.command{...}  a program that reads its input as JSON on stdin
--                          and prints its output as JSON, through ctx:exec
--   sl.prices{...}         dollars per 1,000 prompt and completion tokens
--   sl.template(text)      a compiled template (see template.lua)
--
-- An agent is a callable table, agent(input, ctx) -> output[, usage],
-- used as sl.step{ name = ..., agent = a } or called from a run function.
-- Its fields are its configuration (model, prompt text, ...), so a step's
-- version, and with it its cache entries, change when the agent does.
-- Options are checked where the agent is defined and every error it raises
-- at run time carries that definition's file:line as its position.
--
-- An API key is read from the environment when a request is made and goes
-- only into that request's Authorization header: no message, log line,
-- history entry or result ever holds it.

local core = require "sluice.core"
local dsl = require "sluice.dsl"
local limits = require "sluice.limits"
local schema = require "sluice.schema"

local M = {}

local json_encode, json_decode, new_error, null =
  core.json_encode, core.json_decode, core.error, core.null
local check = dsl.check

-- Dollars per 1,000 tokens, by model name: { prompt =, completion = }.
local prices = {}
M.prices = prices

-- What agents keep out of their fields: compiled templates and where they
-- were defined (neither belongs in a step's version).
local private = setmetatable({}, { __mode = "k" })

local Agent = { __name = "sluice.agent" }
function Agent.__call(a, input, ctx)
  return private[a].call(a, input, ctx)
end
function Agent.__tostring(a)
  return ("%s agent (defined at %s)"):format(a.kind, private[a].where)
end

-- Longest wait between two attempts, whatever the server asks for.
local MAX_WAIT = 30
-- First wait of the exponential backoff when the server names none.
local BACKOFF_BASE = 0.5
-- Default seconds a chat request may take before it fails with kind timeout.
local DEFAULT_TIMEOUT = 120

-- Option checking.

-- Reports a bad agent definition at the user's line.
local function bad(w, ctor, fmt, ...)
  dsl.fail(w, "%s: " .. fmt, ctor, ...)
end

local function http_url(v)
  if type(v) ~= "string" then return false, "an http:// or https:// URL" end
  return v:match("^https?://[^%s/?#]+[^%s]*$") ~= nil, "an http:// or https:// URL",
    "a string that is not one"
end

local function env_name(v)
  if type(v) ~= "string" then return false, "the name of an environment variable" end
  -- The value is never repeated in the message: it may be the key itself.
  return v:match("^[%a_][%w_]*$") ~= nil, "the name of an environment variable "
    .. "(such as \"OPENAI_API_KEY\"), not the key itself", "a string that is not a variable name"
end

local function text(v)
  return type(v) == "string", "a string"
end

local function boolean(v)
  return type(v) == "boolean", "true or false"
end

local function temperature(v)
  return type(v) == "number" and v >= 0 and v <= 2, "a number from 0 to 2"
end

local function positive_integer(v)
  return math.type(v) == "integer" and v > 0, "a positive integer"
end

local function headers(v)
  local what = "a table of header names to strings"
  if type(v) ~= "table" then return false, what end
  for k, x in pairs(v) do
    if type(k) ~= "string" or not k:match("^[%w!#$%%&'*+.^_`|~-]+$") then
      return false, what, "a table with a bad header name"
    end
    if type(x) ~= "string" or x:find("[\r\n%z]") then
      return false, what, ("a table whose header '%s' is not a one-line string"):format(k)
    end
    if k:lower() == "authorization" then
      return false, what, "an Authorization header (name the variable holding the key with api_key_env instead)"
    end
  end
  return true
end

local function argv_list(v)
  local what = "a non-empty list of strings (the program and its arguments)"
  if type(v) ~= "table" or #v == 0 then return false, what end
  for k, x in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > #v then
      return false, what, "a table with a non-list key"
    end
    if type(x) ~= "string" or (k == 1 and x == "") then
      return false, what, ("a list whose item #%d is %s"):format(k,
        type(x) == "string" and "empty" or "a " .. type(x))
    end
  end
  return true
end

local function env_table(v)
  local what = "a table of variable names to strings (or false to remove one)"
  if type(v) ~= "table" then return false, what end
  for k, x in pairs(v) do
    if type(k) ~= "string" or not k:match("^[^=%z]+$") then
      return false, what, "a table with a bad variable name"
    end
    if type(x) ~= "string" and x ~= false then
      return false, what, ("a table whose variable '%s' is a %s"):format(k, type(x))
    end
  end
  return true
end

-- " (did you mean 'x'?)" for the option closest to name, counting an
-- option that name begins (api_key for api_key_env) as close.
local function suggest(name, options)
  local s = dsl.suggest(name, options)
  if s ~= "" then return s end
  local best
  for k in pairs(options) do
    if #name >= 3 and k:sub(1, #name) == name and (best == nil or k < best) then best = k end
  end
  return best and (" (did you mean '%s'?)"):format(best) or ""
end

-- Checks opts against the checkers of options.
local function check_options(ctor, opts, options, w)
  if type(opts) ~= "table" then
    bad(w, ctor, "expects a table of options, got %s", type(opts))
  end
  for k, v in pairs(opts) do
    if type(k) ~= "string" then
      bad(w, ctor, "option names must be strings, got %s", type(k))
    end
    local checker = options[k]
    if checker == nil then
      bad(w, ctor, "unknown option '%s'%s", k, suggest(k, options))
    end
    local ok, expected, got = checker(v)
    if not ok then
      bad(w, ctor, "option '%s' must be %s, got %s", k, expected, got or type(v))
    end
  end
end

-- Errors at run time.

-- Raises an error table of kind with msg, placed at the agent's definition.
local function fail(where, kind, msg)
  local e = new_error(kind, msg)
  e.where = where
  error(e, 0)
end

-- msg with every occurrence of the secret replaced.
local function redact(msg, secret)
  if secret == nil or #secret < 4 then return msg end
  local out, from = {}, 1
  while true do
    local i, j = msg:find(secret, from, true)
    if i == nil then break end
    out[#out + 1] = msg:sub(from, i - 1)
    out[#out + 1] = "[redacted]"
    from = j + 1
  end
  out[#out + 1] = msg:sub(from)
  return table.concat(out)
end

-- A short one-line excerpt of a text, for messages.
local function excerpt(s, max)
  max = max or 200
  s = s:gsub("%s+", " "):match("^%s*(.-)%s*$")
  if #s > max then
    -- Do not cut a UTF-8 sequence in two.
    local cut = max
    while cut > 0 and (s:byte(cut + 1) or 0) & 0xC0 == 0x80 do cut = cut - 1 end
    s = s:sub(1, cut) .. "..."
  end
  return s
end

-- The last lines of a text (a program's stderr), for messages.
local function tail(s, max)
  max = max or 400
  s = s:match("^%s*(.-)%s*$")
  if s == "" then return "(nothing on stderr)" end
  if #s > max then
    local cut = #s - max + 1
    while cut <= #s and (s:byte(cut) or 0) & 0xC0 == 0x80 do cut = cut + 1 end
    s = "..." .. s:sub(cut)
  end
  return s
end

-- url without user information, query or fragment, for messages.
local function safe_url(url)
  local scheme, rest = url:match("^(%a[%w+.-]*://)(.*)$")
  if not scheme then return (url:gsub("[?#].*$", "")) end
  rest = rest:gsub("[?#].*$", "")
  local host, path = rest:match("^([^/]*)(.*)$")
  host = host:gsub("^.*@", "")
  return scheme .. host .. path
end

-- Calls ctx:<method>(...) and, when it raises an error or timeout of its
-- own, raises it again placed at the agent's definition rather than in
-- this file. Cancellations and the like pass unchanged.
local function io_call(where, ctx, method, ...)
  local ok, res = pcall(ctx[method], ctx, ...)
  if ok then return res end
  if type(res) == "table" and (res.kind == "error" or res.kind == "timeout") then
    fail(where, res.kind, tostring(res.message))
  end
  error(res, 0)
end

-- Seconds to wait before attempt n + 1 after a 429 or 5xx answer with
-- these (lowercased) headers, and why: Retry-After-Ms when the server
-- sends it (as Azure OpenAI does), else Retry-After in seconds (an HTTP
-- date there counts as one second), else exponential backoff from half a
-- second; never more than MAX_WAIT.
function M.retry_delay(hdrs, n)
  local ms = hdrs and hdrs["retry-after-ms"]
  if ms and ms:match("^%s*%d+%.?%d*%s*$") then
    return math.min(tonumber(ms) / 1000, MAX_WAIT), "Retry-After-Ms"
  end
  local ra = hdrs and hdrs["retry-after"]
  if ra and ra:match("^%s*%d+%.?%d*%s*$") then
    return math.min(tonumber(ra), MAX_WAIT), "Retry-After"
  end
  if ra and ra:match("%S") then
    return 1, "Retry-After (a date)"
  end
  return math.min(BACKOFF_BASE * 2 ^ (n - 1), MAX_WAIT), "backoff"
end

-- A count from a response's usage: a whole number >= 0, else 0.
local function count(v)
  local n = math.tointeger(v)
  return (n and n >= 0) and n or 0
end

--- The cost in dollars of a call to model with these token counts, from
--- the price table; 0 for a model without a price.
function M.cost(model, prompt_tokens, completion_tokens)
  local p = prices[model]
  if p == nil then return 0 end
  return prompt_tokens / 1000 * p.prompt + completion_tokens / 1000 * p.completion
end

-- The message an error answer carries: OpenAI's {"error": {"message"}},
-- {"error": "..."}, or the start of the body.
local function answer_message(body)
  local v = json_decode(body)
  if type(v) == "table" then
    local e = v.error
    if type(e) == "table" and type(e.message) == "string" then return excerpt(e.message) end
    if type(e) == "string" then return excerpt(e) end
    if type(v.message) == "string" then return excerpt(v.message) end
  end
  if body:match("%S") then return excerpt(body) end
  return "(empty body)"
end

-- The chat agent.

-- A list of tools: steps a model may call, each with a description and an
-- input_schema (its parameters).
local function tool_list(v)
  local what = "a list of steps, each with a description and an input_schema"
  if type(v) ~= "table" or #v == 0 then return false, what end
  local seen = {}
  for i, s in ipairs(v) do
    if not dsl.is_step(s) then
      return false, what, ("a list whose item #%d is %s"):format(i, type(s) == "table"
        and "a plain table" or "a " .. type(s))
    end
    if s.description == nil or s.input_schema == nil then
      return false, what, ("step '%s' (item #%d) without %s"):format(s.name, i,
        s.description == nil and "a description" or "an input_schema")
    end
    if not s.name:match("^[%w_-]+$") or #s.name > 64 then
      return false, what, ("step '%s', whose name a model cannot call (letters, digits, "
        .. "_ and - only, at most 64)"):format(s.name)
    end
    if seen[s.name] then return false, what, ("two tools named '%s'"):format(s.name) end
    seen[s.name] = true
  end
  return true
end

local function message_list(v)
  local what = "a list of messages {role = ..., content = ...} or a function(input, ctx) "
    .. "returning one"
  if type(v) == "function" then return true end
  if type(v) ~= "table" then return false, what end
  for i, m in ipairs(v) do
    if type(m) ~= "table" or type(m.role) ~= "string" then
      return false, what, ("a list whose item #%d has no role"):format(i)
    end
  end
  return true
end

local chat_options = {
  base_url = http_url,
  endpoint = http_url,
  model = check.string,
  api_key_env = env_name,
  system = text,
  prompt = text,
  messages = message_list,
  memory = check.string,
  temperature = temperature,
  max_tokens = positive_integer,
  json = boolean,
  schema = check.schema,
  tools = tool_list,
  max_turns = positive_integer,
  stream = boolean,
  on_token = check.callable,
  timeout = check.positive_number,
  retries = check.nonneg_integer,
  headers = headers,
}

-- Turns a tool-calling agent takes before it fails with kind "limit".
local DEFAULT_MAX_TURNS = 10

-- The names a chat agent's templates may use.
local prompt_names = { input = true, state = true, feedback = true }

-- The text appended to the user message when a validator rejected the
-- previous attempt, unless the prompt places ctx.feedback itself.
local function with_feedback(content, feedback)
  return content .. "\n\nYour previous answer was rejected: " .. tostring(feedback)
    .. "\nAnswer again, correcting this."
end

-- The JSON text inside a reply, without the code fence models sometimes
-- put around it.
local function unfenced(content)
  return content:match("^%s*```[%w_-]*%s+(.-)%s*```%s*$")
    or content:match("^%s*```(.-)```%s*$") or content
end

-- A copy of a message as it is sent: role, content, and the fields of a
-- tool call or a tool result.
local function copy_message(m)
  return { role = m.role, content = m.content, name = m.name,
    tool_calls = m.tool_calls, tool_call_id = m.tool_call_id }
end

-- The conversation of one call: the system message, the messages option
-- (a list, or what its function returns), the memory kept in ctx.state,
-- and the prompt as the last user message (feedback appended). Also
-- returns what the call adds to the memory.
local function conversation(a, p, input, ctx, env)
  local where = p.where
  local msgs = {}
  if p.system then msgs[1] = { role = "system", content = p.system(env) } end
  local given = p.messages
  if type(given) == "function" then
    given = given(input, ctx)
    local ok, what, got = message_list(given)
    if not ok or type(given) ~= "table" then
      fail(where, "error", ("the messages function must return %s, got %s"):format(
        "a list of messages {role = ..., content = ...}", got or type(given)))
    end
  end
  for _, m in ipairs(given or {}) do msgs[#msgs + 1] = copy_message(m) end
  local past
  if a.memory then
    past = ctx.state[a.memory]
    if past ~= nil and type(past) ~= "table" then
      fail(where, "error", ("ctx.state.%s holds the conversation's memory and must be a list "
        .. "of messages, got %s"):format(a.memory, type(past)))
    end
    for _, m in ipairs(past or {}) do msgs[#msgs + 1] = copy_message(m) end
  end
  local said
  if p.prompt then
    said = p.prompt(env)
    local content = said
    if ctx.feedback ~= nil and not p.prompt_uses.feedback then
      content = with_feedback(content, ctx.feedback)
    end
    msgs[#msgs + 1] = { role = "user", content = content }
  elseif ctx.feedback ~= nil then
    msgs[#msgs + 1] = { role = "user", content = with_feedback("", ctx.feedback) }
  end
  return msgs, past, said
end

-- A rough count of the tokens a request spends, for the token limits:
-- four bytes of text a token, and the most the reply may have.
local function estimate(messages, max_tokens)
  local bytes = 0
  for _, m in ipairs(messages) do
    if type(m.content) == "string" then bytes = bytes + #m.content end
  end
  return bytes // 4 + 1 + (max_tokens or 0)
end

-- Reads a streamed answer (server-sent events in OpenAI's chunk format)
-- as it arrives, calling on_token for each piece of content. Returns the
-- assembled reply, as a completed answer holds it.
local function read_events(a, p, ctx, s, label, key)
  local where = p.where
  local function read()
    local ok, chunk = pcall(s.read, s)
    if ok then return chunk end
    if type(chunk) == "table" and chunk.kind == "error" then
      fail(where, "error", tostring(chunk.message))
    end
    error(chunk, 0)
  end
  local parts, calls, usage, finish, model = {}, {}, nil, nil, nil
  local buf, done, events = "", false, 0
  while not done do
    local chunk = read()
    if chunk == nil then break end
    buf = buf .. chunk
    local pos = 1
    while true do
      local i, j = buf:find("\r?\n\r?\n", pos)
      if i == nil then break end
      local event = buf:sub(pos, i - 1)
      pos = j + 1
      local data = {}
      for line in (event .. "\n"):gmatch("(.-)\r?\n") do
        local d = line:match("^data: ?(.*)$")
        if d then data[#data + 1] = d end
      end
      if #data > 0 then
        local payload = table.concat(data, "\n")
        events = events + 1
        if payload == "[DONE]" then done = true; break end
        local obj, err = json_decode(payload)
        if type(obj) ~= "table" then
          fail(where, "error", ("%s: event %d of the stream is not a JSON object (%s): %s"):format(
            label, events, err or type(obj), excerpt(redact(payload, key), 120)))
        end
        if obj.error ~= nil then
          fail(where, "error", ("%s: the stream reported an error: %s"):format(label,
            answer_message(redact(payload, key))))
        end
        if type(obj.model) == "string" then model = obj.model end
        local choice = type(obj.choices) == "table" and obj.choices[1]
        if type(choice) == "table" then
          local delta = type(choice.delta) == "table" and choice.delta or {}
          local piece = delta.content
          if type(piece) == "string" and piece ~= "" then
            parts[#parts + 1] = piece
            if p.on_token then p.on_token(piece, ctx) end
          end
          if type(delta.tool_calls) == "table" then
            for _, tc in ipairs(delta.tool_calls) do
              local idx = (math.tointeger(tc.index) or 0) + 1
              local acc = calls[idx]
              if acc == nil then
                acc = { type = "function", ["function"] = { name = "", arguments = "" } }
                calls[idx] = acc
              end
              if type(tc.id) == "string" then acc.id = tc.id end
              local fn = type(tc["function"]) == "table" and tc["function"] or {}
              if type(fn.name) == "string" then acc["function"].name = acc["function"].name .. fn.name end
              if type(fn.arguments) == "string" then
                acc["function"].arguments = acc["function"].arguments .. fn.arguments
              end
            end
          end
          if choice.finish_reason ~= nil and choice.finish_reason ~= null then
            finish = choice.finish_reason
          end
        end
        if type(obj.usage) == "table" then usage = obj.usage end
      end
    end
    buf = buf:sub(pos)
  end
  if not done then
    fail(where, "error", ("%s: the stream was cut off after %d event%s (%d piece%s of content), "
      .. "before its end (data: [DONE])"):format(label, events, events == 1 and "" or "s",
      #parts, #parts == 1 and "" or "s"))
  end
  local message = { role = "assistant", content = #parts > 0 and table.concat(parts) or nil }
  if #calls > 0 then message.tool_calls = calls end
  if message.content == nil and message.tool_calls == nil then message.content = "" end
  return { model = model, usage = usage,
    choices = { { message = message, finish_reason = finish } } }
end

-- One request to the model: through the rate limits, retried after 429
-- and 5xx answers, streamed when the agent streams. Returns the reply's
-- message {role, content, tool_calls} and its usage {tokens, requests,
-- cost}. Raises (at the agent's definition) when no usable answer came;
-- what was spent by then is charged.
local function model_request(a, p, ctx, messages)
  local where, label = p.where, "POST " .. safe_url(a.endpoint)
  local response_format
  if a.schema then
    response_format = { type = "json_schema", json_schema = { name = "reply", schema = a.schema } }
  elseif a.json then
    response_format = { type = "json_object" }
  end
  local body = assert(json_encode({ model = a.model, messages = messages,
    temperature = a.temperature, max_tokens = a.max_tokens, response_format = response_format,
    tools = p.tool_defs, stream = a.stream or nil,
    stream_options = a.stream and { include_usage = true } or nil }))

  local key = a.api_key_env and os.getenv(a.api_key_env)
  if key == "" then key = nil end
  local hdrs = { ["Content-Type"] = "application/json",
    Accept = a.stream and "text/event-stream" or "application/json" }
  for k, v in pairs(a.headers or {}) do hdrs[k] = v end
  if key then hdrs.Authorization = "Bearer " .. key end

  local request = { url = a.endpoint, method = "POST", headers = hdrs, body = body,
    timeout = a.timeout or DEFAULT_TIMEOUT, stream = a.stream or nil }
  local need = estimate(messages, a.max_tokens)
  local retries = a.retries or 3
  local reply, shown, waited_out
  for n = 1, retries + 1 do
    local permit <close> = limits.acquire(ctx, p.limit_keys, need, waited_out)
    local res = io_call(where, ctx, "http", request)
    local status = res.status
    if a.stream and status >= 200 and status < 300 then
      reply = read_events(a, p, ctx, res, label, key)
      local u = reply.usage or {}
      if permit then permit:release(count(u.prompt_tokens) + count(u.completion_tokens)) end
      limits.observe(p.limit_keys, status, res.headers, MAX_WAIT)
      break
    end
    if a.stream then
      -- An error answer to a streamed request is read whole.
      local pieces = {}
      while true do
        local ok, chunk = pcall(res.read, res)
        if not ok or chunk == nil then break end
        pieces[#pieces + 1] = chunk
      end
      res = { status = status, headers = res.headers, body = table.concat(pieces) }
    end
    local _, blocked_until = limits.observe(p.limit_keys, status, res.headers, MAX_WAIT)
    -- Whatever of the answer a message quotes is taken from this copy,
    -- redacted whole before anything is cut from it: a server that echoes
    -- the Authorization header leaks no part of the key.
    shown = redact(res.body, key)
    if status >= 200 and status < 300 then
      local err
      reply, err = json_decode(res.body)
      if type(reply) ~= "table" then
        ctx:charge{ requests = 1 }
        fail(where, "error", ("%s: the endpoint answered with malformed JSON (%s): %s"):format(
          label, err or ("a " .. type(reply) .. " where an object was expected"),
          excerpt(shown, 120)))
      end
      if permit then
        local u = type(reply.usage) == "table" and reply.usage or {}
        permit:release(count(u.prompt_tokens) + count(u.completion_tokens))
      end
      break
    end
    -- A refused request is still a request made.
    ctx:charge{ requests = 1 }
    if status == 401 or status == 403 then
      local why
      if key then
        why = ("the key from $%s"):format(a.api_key_env)
      elseif a.api_key_env then
        why = ("no key was sent: $%s is not set"):format(a.api_key_env)
      else
        why = "no key was sent: the agent has no api_key_env"
      end
      fail(where, "error", ("%s: the endpoint refused the API key (HTTP %d; %s)"):format(
        label, status, why))
    end
    local transient = status == 429 or status >= 500
    if not transient then
      fail(where, "error", ("%s: HTTP %d: %s"):format(label, status, answer_message(shown)))
    end
    if n > retries then
      fail(where, "error", ("%s: HTTP %d after %d attempt%s: %s"):format(label, status,
        n, n == 1 and "" or "s", answer_message(shown)))
    end
    local delay, why = M.retry_delay(res.headers, n)
    ctx:log(("%s: HTTP %d; attempt %d of %d in %g s (%s)"):format(label, status, n + 1,
      retries + 1, delay, why))
    -- A 429 has also blocked the rate limit's keys for everyone else
    -- (limits.observe): they wait in line while this step sleeps, and it
    -- does not wait for that block again.
    ctx:sleep(delay)
    waited_out = blocked_until
  end

  local usage_in = type(reply.usage) == "table" and reply.usage or {}
  local pt, ct = count(usage_in.prompt_tokens), count(usage_in.completion_tokens)
  local tokens = pt + ct
  if tokens == 0 then tokens = count(usage_in.total_tokens) end
  local model = prices[a.model] and a.model or reply.model
  local usage = { tokens = tokens, requests = 1, cost = M.cost(model, pt, ct) }

  local choice = type(reply.choices) == "table" and reply.choices[1]
  local message = type(choice) == "table" and choice.message
  local calls = type(message) == "table" and message.tool_calls
  if type(calls) == "table" and #calls > 0 and p.tools then
    return { role = "assistant", content = type(message.content) == "string" and message.content
      or nil, tool_calls = calls }, usage
  end
  local reply_text = type(message) == "table" and message.content
  if type(reply_text) ~= "string" then
    ctx:charge(usage)
    local refusal = type(message) == "table" and type(message.refusal) == "string"
      and message.refusal
    fail(where, "error", refusal and ("%s: the model refused: %s"):format(label,
        excerpt(redact(refusal, key)))
      or ("%s: the response has no choices[1].message.content (finish_reason %s): %s"):format(label,
        type(choice) == "table" and tostring(choice.finish_reason) or "absent",
        excerpt(shown or "(streamed)", 120)))
  end
  return { role = "assistant", content = reply_text }, usage
end

-- The output of a reply's text: the text, or with json or schema the
-- value it holds, checked against the schema. A mismatch fails with kind
-- "validation" (its message the next attempt's ctx.feedback), charging
-- what the reply cost.
local function reply_value(a, p, ctx, reply_text, usage)
  if not a.json and not a.schema then return reply_text end
  local value, jerr = json_decode(unfenced(reply_text))
  if jerr ~= nil then
    -- The tokens were spent all the same; the next attempt sees this
    -- message as ctx.feedback.
    if usage then ctx:charge(usage) end
    fail(p.where, "validation", ("the model's reply is not valid JSON (%s); reply with "
      .. "JSON only. The reply began: %s"):format(jerr, excerpt(reply_text, 120)))
  end
  if a.schema then
    local ok, msg = schema.validate_checked(a.schema, value)
    if not ok then
      if usage then ctx:charge(usage) end
      fail(p.where, "validation", ("the reply does not match the schema: %s; reply with JSON "
        .. "that matches it"):format(msg))
    end
  end
  if value == null then return nil end
  return value
end

-- What a tool call gave, as the content of the tool message sent back.
local function tool_content(v)
  if type(v) == "string" then return v end
  local s = json_encode(v == nil and null or v)
  return s or tostring(v)
end

-- Runs the tool calls of one model turn as child steps, all at once, and
-- returns the tool messages that answer them, in their order. A call the
-- engine cannot make (an unknown tool, arguments that are not a JSON
-- object) and a tool that fails (its input_schema refused the arguments,
-- it raised) are answered with an error the model can act on.
local function run_tools(p, ctx, calls)
  local answers, tasks, slots = {}, {}, {}
  for i, call in ipairs(calls) do
    local fn = type(call) == "table" and type(call["function"]) == "table" and call["function"] or {}
    local tool = p.tools_by_name[fn.name]
    if tool == nil then
      answers[i] = ("error: there is no tool named '%s'; the tools are: %s"):format(
        tostring(fn.name), p.tool_names)
    else
      local args, err = json_decode(type(fn.arguments) == "string" and fn.arguments or "")
      if fn.arguments == "" then args, err = {}, nil end
      if err ~= nil or type(args) ~= "table" then
        answers[i] = ("error: the arguments of this call to '%s' are not a JSON object (%s); "
          .. "call it again with arguments matching its parameters"):format(fn.name,
          err or ("a " .. type(args)))
      else
        tasks[#tasks + 1] = ctx:spawn(tool, args)
        slots[#tasks] = i
      end
    end
  end
  if #tasks > 0 then
    local settled = ctx:settle(tasks)
    for k, r in ipairs(settled) do
      answers[slots[k]] = r.ok and tool_content(r.output)
        or ("error: %s"):format(tostring(type(r.error) == "table" and r.error.message or r.error))
    end
  end
  local msgs = {}
  for i, call in ipairs(calls) do
    msgs[i] = { role = "tool", tool_call_id = type(call) == "table" and call.id or nil,
      content = answers[i] }
  end
  return msgs
end

-- Keeps the exchange in the conversation's memory: ctx.state[memory]
-- gets what was said (the prompt, without feedback) and the reply.
local function remember(a, ctx, past, said, reply_text)
  if not a.memory then return end
  local kept = {}
  for i, m in ipairs(past or {}) do kept[i] = m end
  if said ~= nil then kept[#kept + 1] = { role = "user", content = said } end
  kept[#kept + 1] = { role = "assistant", content = reply_text }
  ctx.state[a.memory] = kept
end

local function chat_call(a, input, ctx)
  local p = private[a]
  local env = setmetatable({ input = input, feedback = ctx.feedback }, { __index =
    function(_, k) if k == "state" then return ctx.state end end })
  local messages, past, said = conversation(a, p, input, ctx, env)
  if not p.tools then
    local message, usage = model_request(a, p, ctx, messages)
    -- The exchange, kept with the step (show, the ui); a call with tools
    -- keeps its turns as steps, prompt in and reply out.
    ctx:log("debug", "model call", { model = a.model, prompt = messages, reply = message.content,
      tokens = usage and usage.tokens })
    local out = reply_value(a, p, ctx, message.content, usage)
    remember(a, ctx, past, said, message.content)
    return out, usage
  end
  -- With tools, every model turn and every tool call is a step of its
  -- own under this one: in the history, charged, and restored on resume
  -- instead of being made again.
  for _ = 1, a.max_turns or DEFAULT_MAX_TURNS do
    local message = ctx:run(p.turn, { messages = messages })
    messages[#messages + 1] = copy_message(message)
    local calls = message.tool_calls
    if type(calls) ~= "table" or #calls == 0 then
      local out = reply_value(a, p, ctx, message.content or "")
      remember(a, ctx, past, said, message.content or "")
      return out
    end
    for _, m in ipairs(run_tools(p, ctx, calls)) do messages[#messages + 1] = m end
  end
  fail(p.where, "limit", ("the model was still calling tools after max_turns (%d) turns"):format(
    a.max_turns or DEFAULT_MAX_TURNS))
end

--- sl.agent.chat{...}: an agent calling a chat-completions endpoint.
---   base_url     the API's base URL ("https://api.openai.com/v1"); requests
---                go to base_url .. "/chat/completions", before its query
---                string if it has one (Azure's "?api-version=...")
---   endpoint     the whole chat-completions URL instead of base_url
---   model        the model's name, sent, used to look up its price and
---                its rate limits (sl.limits; the base URL is the other key)
---   api_key_env  the environment variable holding the API key, read at
---                each call; without it (or when it is unset) no key is sent
---   system       a template for the system message
---   prompt       a template for the user message; both templates see
---                input, state (ctx.state) and feedback (ctx.feedback),
---                and feedback is appended to the message when the prompt
---                does not place it itself
---   messages     the conversation before the prompt: a list of
---                {role, content}, or a function(input, ctx) returning one
---   memory       a key of ctx.state holding the conversation: its
---                messages are sent before the prompt, and the prompt and
---                the reply are appended to it when the call succeeds
---   temperature, max_tokens   sent as they are
---   json         ask for a JSON object (response_format) and return the
---                decoded reply; a reply that is not JSON fails with kind
---                "validation", so a step's retries ask again with feedback
---   schema       the reply must be JSON matching this schema (sent as the
---                json_schema response format); a mismatch fails with kind
---                "validation" and the error as the next attempt's feedback
---                (a step running the agent retries twice unless it says)
---   tools        steps the model may call (each with a description and an
---                input_schema); each model turn and each call is a child
---                step; max_turns bounds the turns (default 10, then kind
---                "limit")
---   stream       stream the reply (server-sent events); on_token(text,
---                ctx) is called with each piece as it arrives
---   timeout      seconds per request (default 120)
---   retries      extra requests after a 429 or 5xx answer (default 3)
---   headers      extra request headers (not Authorization)
--- Returns the reply and {tokens, requests, cost}, cost priced from
--- sl.prices. Every refused request is charged as a request when it is
--- answered, and the tokens of a reply that fails are charged too.
function M.chat(opts)
  local w = dsl.where(2)
  local ctor = "sl.agent.chat"
  check_options(ctor, opts, chat_options, w)
  if opts.base_url == nil and opts.endpoint == nil then
    bad(w, ctor, "option 'base_url' is required (the API's base URL, such as "
      .. "\"https://api.openai.com/v1\")")
  end
  if opts.base_url ~= nil and opts.endpoint ~= nil then
    bad(w, ctor, "takes base_url or endpoint, not both")
  end
  if opts.model == nil then bad(w, ctor, "option 'model' is required") end
  if opts.prompt == nil and opts.messages == nil and opts.memory == nil then
    bad(w, ctor, "option 'prompt' is required (a template), unless messages or memory "
      .. "holds the conversation")
  end
  if opts.json and opts.schema then
    bad(w, ctor, "takes json or schema, not both (a schema asks for JSON already)")
  end
  if opts.on_token and not opts.stream then
    bad(w, ctor, "option 'on_token' needs stream = true")
  end
  if opts.max_turns and not opts.tools then
    bad(w, ctor, "option 'max_turns' bounds the turns of a tool-calling agent; give tools too")
  end
  local template = require "sluice.template"
  local prompt, prompt_uses
  if opts.prompt then prompt, prompt_uses = template.compile(opts.prompt, w, prompt_names) end
  local system = opts.system and template.compile(opts.system, w, prompt_names)
  local endpoint = opts.endpoint
  if endpoint == nil then
    local base, query = opts.base_url:match("^([^?#]*)(.*)$")
    endpoint = base:gsub("/+$", "") .. "/chat/completions" .. query
  end
  local hdrs
  if opts.headers then
    hdrs = {}
    for k, v in pairs(opts.headers) do hdrs[k] = v end
  end
  -- The key's variable is the agent's to read: programs that steps run
  -- with ctx:exec do not inherit it unless their env names it.
  if opts.api_key_env then core.secret_env(opts.api_key_env) end
  local tool_names, tools_by_name, tool_defs
  if opts.tools then
    tool_names, tools_by_name, tool_defs = {}, {}, {}
    for i, s in ipairs(opts.tools) do
      tool_names[i] = s.name
      tools_by_name[s.name] = s
      tool_defs[i] = { type = "function", ["function"] = { name = s.name,
        description = s.description, parameters = s.input_schema } }
    end
  end
  local messages = type(opts.messages) == "table" and {} or nil
  if messages then
    for i, m in ipairs(opts.messages) do messages[i] = copy_message(m) end
  end
  local a = setmetatable({ kind = "chat", endpoint = endpoint, model = opts.model,
    api_key_env = opts.api_key_env, system = opts.system, prompt = opts.prompt,
    messages = messages or (opts.messages and "function") or nil, memory = opts.memory,
    temperature = opts.temperature, max_tokens = opts.max_tokens, json = opts.json or false,
    schema = opts.schema, tools = tool_names, max_turns = opts.max_turns,
    stream = opts.stream or nil, timeout = opts.timeout, retries = opts.retries,
    headers = hdrs }, Agent)
  local p = { call = chat_call, where = w, prompt = prompt, prompt_uses = prompt_uses or {},
    system = system, messages = messages or opts.messages, on_token = opts.on_token,
    tools = opts.tools, tools_by_name = tools_by_name, tool_defs = tool_defs,
    tool_names = tool_names and table.concat(tool_names, ", "),
    limit_keys = { opts.model, ((opts.base_url or endpoint):gsub("[?#].*$", ""):gsub("/+$", "")) } }
  private[a] = p
  if opts.tools then
    -- A model turn of this agent: the conversation so far in, the
    -- model's message out. Its retries cover a stream cut off midway.
    p.turn = dsl.build("step", { name = "turn", retries = 2, run = function(inp, tctx)
      return model_request(a, p, tctx, inp.messages)
    end }, 2)
  end
  -- A step that runs this agent refines a reply that fails its schema.
  if opts.schema then p.default_retries = 2 end
  return a
end

-- The retries a step running agent a has when it names none, or nil
-- (the DSL asks its agent's metatable).
function Agent.default_retries(a)
  local p = private[a]
  return p and p.default_retries
end

-- The command agent.

local command_options = {
  argv = argv_list,
  timeout = check.positive_number,
  env = env_table,
  cwd = check.string,
  max_output = positive_integer,
}

local function command_call(a, input, ctx)
  local where = private[a].where
  local prog = a.argv[1]
  local stdin, err = json_encode(input)
  if stdin == nil then
    fail(where, "error", ("command '%s': its input cannot be sent as JSON: %s"):format(prog, err))
  end
  local res = io_call(where, ctx, "exec", a.argv, { stdin = stdin, timeout = a.timeout,
    env = a.env, cwd = a.cwd, max_output = a.max_output })
  if res.signal then
    fail(where, "error", ("command '%s' was killed by signal %d: %s"):format(prog, res.signal,
      tail(res.stderr)))
  end
  if res.code ~= 0 then
    fail(where, "error", ("command '%s' exited with code %d: %s"):format(prog, res.code,
      tail(res.stderr)))
  end
  if not res.stdout:match("%S") then
    fail(where, "error", ("command '%s' printed nothing on stdout; it must print its "
      .. "output as JSON"):format(prog))
  end
  local out, derr = json_decode(res.stdout)
  if derr ~= nil then
    fail(where, "error", ("command '%s' printed invalid JSON on stdout (%s): %s"):format(prog,
      derr, excerpt(res.stdout, 120)))
  end
  if out == null then return nil end
  return out
end

--- sl.agent.command{...}: an agent running a program: argv (the program,
--- searched in PATH, and its arguments), timeout (seconds; the program is
--- killed and the step fails with kind "timeout"), env (variables to set,
--- false to remove one), cwd, max_output (bytes kept of each stream). The
--- input goes to its stdin as JSON; it prints its output as JSON on
--- stdout. A non-zero exit, a signal or output that is not JSON fails
--- with kind "error", naming the program.
function M.command(opts)
  local w = dsl.where(2)
  local ctor = "sl.agent.command"
  check_options(ctor, opts, command_options, w)
  if opts.argv == nil then
    bad(w, ctor, "option 'argv' is required (the program and its arguments)")
  end
  local argv, env = {}, nil
  for i, v in ipairs(opts.argv) do argv[i] = v end
  if opts.env then
    env = {}
    for k, v in pairs(opts.env) do env[k] = v end
  end
  local a = setmetatable({ kind = "command", argv = argv, timeout = opts.timeout, env = env,
    cwd = opts.cwd, max_output = opts.max_output }, Agent)
  private[a] = { call = command_call, where = w }
  return a
end

-- Prices.

local price_fields = { prompt = true, completion = true, input = true, output = true }

--- sl.prices{ ["model"] = price, ... }: adds prices to the price table and
--- returns it. A price is { prompt = $, completion = $ } in dollars per
--- 1,000 tokens, or { input = $, output = $ } in dollars per million
--- tokens (the way providers publish them now); the table keeps the first
--- form.
function M.set_prices(tbl, w)
  if tbl == nil then return prices end
  if type(tbl) ~= "table" then
    dsl.fail(w, "sl.prices expects a table of model names to prices, got %s", type(tbl))
  end
  local add = {}
  for model, p in pairs(tbl) do
    if type(model) ~= "string" or model == "" then
      dsl.fail(w, "sl.prices: model names must be non-empty strings, got %s", type(model))
    end
    if type(p) ~= "table" then
      dsl.fail(w, "sl.prices: the price of '%s' must be a table {prompt=, completion=} (per "
        .. "1,000 tokens) or {input=, output=} (per million), got %s", model, type(p))
    end
    for k, v in pairs(p) do
      if not price_fields[k] then
        dsl.fail(w, "sl.prices: the price of '%s' has an unknown field '%s'%s", model,
          tostring(k), dsl.suggest(k, price_fields))
      end
      if type(v) ~= "number" or not (v >= 0) or v == math.huge then
        dsl.fail(w, "sl.prices: the %s price of '%s' must be a non-negative number of "
          .. "dollars per %s tokens, got %s", k, model,
          (k == "input" or k == "output") and "million" or "1,000",
          type(v) == "number" and tostring(v) or type(v))
      end
    end
    local per_k = p.prompt ~= nil or p.completion ~= nil
    local per_m = p.input ~= nil or p.output ~= nil
    if per_k and per_m then
      dsl.fail(w, "sl.prices: the price of '%s' mixes {prompt, completion} (per 1,000 tokens) "
        .. "with {input, output} (per million); give one pair", model)
    end
    if per_m then
      if p.input == nil or p.output == nil then
        dsl.fail(w, "sl.prices: the price of '%s' needs both input and output", model)
      end
      add[model] = { prompt = p.input / 1000, completion = p.output / 1000 }
    else
      if p.prompt == nil or p.completion == nil then
        dsl.fail(w, "sl.prices: the price of '%s' needs both prompt and completion", model)
      end
      add[model] = { prompt = p.prompt, completion = p.completion }
    end
  end
  for model, p in pairs(add) do prices[model] = p end
  return prices
end

--- Adds sl.agent, sl.prices, sl.limits and sl.template to the module.
function M.install(sl)
  sl.agent = {
    chat = M.chat,
    command = M.command,
  }
  function sl.prices(tbl)
    local t = M.set_prices(tbl, dsl.where(2))
    return t
  end
  function sl.limits(tbl)
    local t = limits.set(tbl, dsl.where(2))
    return t
  end
  function sl.template(text)
    local render = require("sluice.template").compile(text, dsl.where(2))
    return render
  end
end

return M
