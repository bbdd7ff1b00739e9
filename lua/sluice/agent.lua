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

local chat_options = {
  base_url = http_url,
  endpoint = http_url,
  model = check.string,
  api_key_env = env_name,
  system = text,
  prompt = text,
  temperature = temperature,
  max_tokens = positive_integer,
  json = boolean,
  timeout = check.positive_number,
  retries = check.nonneg_integer,
  headers = headers,
}

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

local function chat_call(a, input, ctx)
  local p = private[a]
  local where, label = p.where, "POST " .. safe_url(a.endpoint)
  local env = setmetatable({ input = input, feedback = ctx.feedback }, { __index =
    function(_, k) if k == "state" then return ctx.state end end })
  local content = p.prompt(env)
  if ctx.feedback ~= nil and not p.prompt_uses.feedback then
    content = with_feedback(content, ctx.feedback)
  end
  local messages = {}
  if p.system then messages[1] = { role = "system", content = p.system(env) } end
  messages[#messages + 1] = { role = "user", content = content }
  local body = assert(json_encode({ model = a.model, messages = messages,
    temperature = a.temperature, max_tokens = a.max_tokens,
    response_format = a.json and { type = "json_object" } or nil }))

  local key = a.api_key_env and os.getenv(a.api_key_env)
  if key == "" then key = nil end
  local hdrs = { ["Content-Type"] = "application/json", Accept = "application/json" }
  for k, v in pairs(a.headers or {}) do hdrs[k] = v end
  if key then hdrs.Authorization = "Bearer " .. key end

  local request = { url = a.endpoint, method = "POST", headers = hdrs, body = body,
    timeout = a.timeout or DEFAULT_TIMEOUT }
  local retries = a.retries or 3
  local res, shown
  for n = 1, retries + 1 do
    res = io_call(where, ctx, "http", request)
    -- Whatever of the answer a message quotes is taken from this copy,
    -- redacted whole before anything is cut from it: a server that echoes
    -- the Authorization header leaks no part of the key.
    shown = redact(res.body, key)
    local status = res.status
    if status >= 200 and status < 300 then break end
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
    ctx:sleep(delay)
  end

  local reply, err = json_decode(res.body)
  if type(reply) ~= "table" then
    ctx:charge{ requests = 1 }
    fail(where, "error", ("%s: the endpoint answered with malformed JSON (%s): %s"):format(
      label, err or ("a " .. type(reply) .. " where an object was expected"),
      excerpt(shown, 120)))
  end
  local usage_in = type(reply.usage) == "table" and reply.usage or {}
  local pt, ct = count(usage_in.prompt_tokens), count(usage_in.completion_tokens)
  local tokens = pt + ct
  if tokens == 0 then tokens = count(usage_in.total_tokens) end
  local model = prices[a.model] and a.model or reply.model
  local usage = { tokens = tokens, requests = 1, cost = M.cost(model, pt, ct) }

  local choice = type(reply.choices) == "table" and reply.choices[1]
  local message = type(choice) == "table" and choice.message
  local reply_text = type(message) == "table" and message.content
  if type(reply_text) ~= "string" then
    ctx:charge(usage)
    local refusal = type(message) == "table" and type(message.refusal) == "string"
      and message.refusal
    fail(where, "error", refusal and ("%s: the model refused: %s"):format(label,
        excerpt(redact(refusal, key)))
      or ("%s: the response has no choices[1].message.content (finish_reason %s): %s"):format(label,
        type(choice) == "table" and tostring(choice.finish_reason) or "absent",
        excerpt(shown, 120)))
  end
  if not a.json then return reply_text, usage end
  local value, jerr = json_decode(unfenced(reply_text))
  if jerr ~= nil then
    -- The tokens were spent all the same; the next attempt sees this
    -- message as ctx.feedback.
    ctx:charge(usage)
    fail(where, "validation", ("the model's reply is not valid JSON (%s); reply with "
      .. "JSON only. The reply began: %s"):format(jerr, excerpt(redact(reply_text, key), 120)))
  end
  if value == null then return nil, usage end
  return value, usage
end

--- sl.agent.chat{...}: an agent calling a chat-completions endpoint.
---   base_url     the API's base URL ("https://api.openai.com/v1"); requests
---                go to base_url .. "/chat/completions", before its query
---                string if it has one (Azure's "?api-version=...")
---   endpoint     the whole chat-completions URL instead of base_url
---   model        the model's name, sent and used to look up its price
---   api_key_env  the environment variable holding the API key, read at
---                each call; without it (or when it is unset) no key is sent
---   system       a template for the system message
---   prompt       a template for the user message; both templates see
---                input, state (ctx.state) and feedback (ctx.feedback),
---                and feedback is appended to the message when the prompt
---                does not place it itself
---   temperature, max_tokens   sent as they are
---   json         ask for a JSON object (response_format) and return the
---                decoded reply; a reply that is not JSON fails with kind
---                "validation", so a step's retries ask again with feedback
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
  if opts.prompt == nil then bad(w, ctor, "option 'prompt' is required (a template)") end
  local template = require "sluice.template"
  local prompt, prompt_uses = template.compile(opts.prompt, w, prompt_names)
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
  local a = setmetatable({ kind = "chat", endpoint = endpoint, model = opts.model,
    api_key_env = opts.api_key_env, system = opts.system, prompt = opts.prompt,
    temperature = opts.temperature, max_tokens = opts.max_tokens, json = opts.json or false,
    timeout = opts.timeout, retries = opts.retries, headers = hdrs }, Agent)
  private[a] = { call = chat_call, where = w, prompt = prompt, prompt_uses = prompt_uses,
    system = system }
  return a
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

local price_fields = { prompt = true, completion = true }

--- sl.prices{ ["model"] = { prompt = $, completion = $ }, ... }: adds
--- dollars per 1,000 tokens to the price table and returns it.
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
      dsl.fail(w, "sl.prices: the price of '%s' must be a table {prompt=, completion=}, got %s",
        model, type(p))
    end
    for k, v in pairs(p) do
      if not price_fields[k] then
        dsl.fail(w, "sl.prices: the price of '%s' has an unknown field '%s'%s", model,
          tostring(k), dsl.suggest(k, price_fields))
      end
      if type(v) ~= "number" or not (v >= 0) or v == math.huge then
        dsl.fail(w, "sl.prices: the %s price of '%s' must be a non-negative number of "
          .. "dollars per 1,000 tokens, got %s", k, model, type(v) == "number" and tostring(v) or type(v))
      end
    end
    if p.prompt == nil or p.completion == nil then
      dsl.fail(w, "sl.prices: the price of '%s' needs both prompt and completion", model)
    end
    add[model] = { prompt = p.prompt, completion = p.completion }
  end
  for model, p in pairs(add) do prices[model] = p end
  return prices
end

--- Adds sl.agent, sl.prices and sl.template to the module.
function M.install(sl)
  sl.agent = {
    chat = M.chat,
    command = M.command,
  }
  function sl.prices(tbl)
    local t = M.set_prices(tbl, dsl.where(2))
    return t
  end
  function sl.template(text)
    local render = require("sluice.template").compile(text, dsl.where(2))
    return render
  end
end

return M
