-- The DSL: constructors that build step tables and check them where they
-- are written. Every mistake is reported at the user's file:line, naming
-- the step and, for an unknown option, the closest valid one.

local core = require "sluice.core"

local M = {}

local Step = core.step_mt
Step.__name = "sluice.step"
Step.__tostring = function(s)
  return ("step '%s' (%s)"):format(tostring(rawget(s, "name")), tostring(rawget(s, "kind")))
end

local function is_step(v)
  return getmetatable(v) == Step
end
M.is_step = is_step

--- The names of the steps in the tree from root (itself, the steps in its
--- fields and in plain tables of steps in its fields), as a set.
function M.step_names(root)
  local names, seen = {}, {}
  local function visit(s)
    if seen[s] then return end
    seen[s] = true
    names[rawget(s, "name")] = true
    for _, v in next, s do
      if is_step(v) then
        visit(v)
      elseif type(v) == "table" and getmetatable(v) == nil then
        for _, c in next, v do if is_step(c) then visit(c) end end
      end
    end
  end
  visit(root)
  return names
end

-- "file:line" of the function `level` frames above the caller.
-- The place of a definition: a step table, or the function of a
-- definition inside it (its run, or a child step's place).
local function site(spec)
  if type(spec) ~= "table" then return nil end
  for _, v in ipairs(spec) do
    if type(v) == "table" and rawget(v, "where") and getmetatable(v) ~= nil then return v.where end
  end
  for _, v in pairs(spec) do
    if type(v) == "function" then
      local info = debug.getinfo(v, "S")
      if info.what == "Lua" then return ("%s:%d"):format(info.short_src, info.linedefined) end
    end
  end
end

--- "file:line" of the code at `level` (1: the code that called where),
--- where it calls the function one level below. A tail call (`return sl.pipeline{...}`, the usual
--- last line of a pipeline file) leaves no frame for that code; the place
--- is then the nearest one the definition's own table (spec) tells.
local function where(level, spec)
  local callee = debug.getinfo(level, "t")
  if callee and callee.istailcall then
    local w = site(spec)
    if w then return w end
  end
  local info = debug.getinfo(level + 1, "Sl")
  if not info then return "?" end
  return ("%s:%d"):format(info.short_src, info.currentline or 0)
end
M.where = where

local function fail(w, fmt, ...)
  error(w .. ": " .. fmt:format(...), 0)
end
M.fail = fail

--- " (did you mean 'x'?)" for the key of set closest to name, or "" (the
--- engine's one rule for suggestions, engine/base/suggest.c).
function M.suggest(name, set)
  local best = core.suggest(tostring(name), set)
  return best and (" (did you mean '%s'?)"):format(best) or ""
end

-- Option checkers: each returns true, or false and what was expected.
local check = {}

function check.string(v)
  return type(v) == "string" and v ~= "", "a non-empty string"
end

function check.callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return (type(mt) == "table" and mt.__call ~= nil), "a function"
end

function check.any()
  return true
end

function check.pause(v)
  return v == "before" or v == "after", '"before" or "after"'
end

function check.nonneg_integer(v)
  return math.type(v) == "integer" and v >= 0, "a non-negative integer"
end

function check.positive_number(v)
  return type(v) == "number" and v > 0 and v == v and v ~= math.huge,
    "a positive number of seconds"
end

-- A table whose fields all pass their checkers: { field = checker }.
local function record(fields, what)
  return function(v)
    if type(v) ~= "table" then return false, what end
    for k, x in pairs(v) do
      local f = fields[k]
      if f == nil then
        return false, what, ("a table with an unknown field '%s'%s"):format(
          tostring(k), M.suggest(k, fields))
      end
      local ok, expected = f(x)
      if not ok then
        return false, what, ("a table whose field '%s' is not %s"):format(k, expected)
      end
    end
    return true
  end
end

local function nonneg_number(v)
  return type(v) == "number" and v >= 0 and v == v, "a non-negative number"
end

check.backoff = record({ base = nonneg_number, max = nonneg_number,
  jitter = function(v) return type(v) == "number" and v >= 0 and v <= 1, "a number from 0 to 1" end },
  "a table {base=, max=, jitter=}")

check.limits = record({ instructions = function(v)
  return math.type(v) == "integer" and v > 0, "a positive integer" end },
  "a table {instructions=}")

function check.validate(v)
  if type(v) == "function" then return true end
  if type(v) ~= "table" or getmetatable(v) ~= nil or #v == 0 then
    return false, "a function or a list of functions"
  end
  for i, f in pairs(v) do
    if math.type(i) ~= "integer" or i < 1 or i > #v then
      return false, "a function or a list of functions", "a table with a non-list key"
    end
    if type(f) ~= "function" then
      return false, "a function or a list of functions", ("a list whose item #%d is a %s"):format(i, type(f))
    end
  end
  return true
end

function check.fallback(v)
  local what = "a step, a list of steps or a function"
  if type(v) == "function" or getmetatable(v) == Step then return true end
  if type(v) ~= "table" or getmetatable(v) ~= nil or #v == 0 then return false, what end
  for i, f in pairs(v) do
    if math.type(i) ~= "integer" or i < 1 or i > #v or getmetatable(f) ~= Step then
      return false, what, ("a list whose item #%s is not a step"):format(tostring(i))
    end
  end
  return true
end

local function usage_fields()
  local whole = function(v) return math.type(v) == "integer" and v >= 0, "a non-negative integer" end
  return { cost = nonneg_number, tokens = whole, requests = whole }
end

-- A retention policy: runs older than days, beyond the keep newest, go.
local retain_fields = record({
  days = function(v) return type(v) == "number" and v > 0 and v <= 1e6, "a positive number of days" end,
  keep = function(v) return math.type(v) == "integer" and v >= 1, "a whole number of at least 1" end,
}, "a table {days=, keep=}")
function check.retain(v)
  local ok, what, got = retain_fields(v)
  if ok and v.days == nil and v.keep == nil then
    return false, "a table {days=, keep=}", "a table with neither days nor keep"
  end
  return ok, what, got
end

-- What a worker does with a run begun on other code than its own copy.
function check.on_code_change(v)
  return v == "wait" or v == "continue", '"wait" (the default) or "continue"'
end

check.estimate = record(usage_fields(), "a table {cost=, tokens=, requests=}")
check.budget = record(usage_fields(), "a table {cost=, tokens=, requests=}")

function check.cache(v)
  if v == true then return true end
  local what = "true or a table {ttl=, key=}"
  if type(v) ~= "table" then return false, what end
  for k, x in pairs(v) do
    if k == "ttl" then
      if type(x) ~= "number" or not (x > 0) then
        return false, what, "a table whose field 'ttl' is not a positive number of seconds"
      end
    elseif k == "key" then
      if type(x) ~= "function" then
        return false, what, "a table whose field 'key' is not a function"
      end
    else
      return false, what, ("a table with an unknown field '%s'%s"):format(
        tostring(k), M.suggest(k, { ttl = true, key = true }))
    end
  end
  return true
end

function check.background(v)
  return v == true or v == false or v == "required", 'true, false or "required"'
end

-- A JSON Schema in the subset schema.lua checks.
function check.schema(v)
  if type(v) ~= "table" then return false, "a JSON Schema (a table)" end
  local ok, err = pcall(require("sluice.schema").check, v)
  if not ok then return false, "a JSON Schema", "one with a mistake: " .. tostring(err) end
  return true
end

M.check = check

-- Options every step takes, whatever its kind.
local common = {
  name = check.string,
  kind = check.string,
  description = check.string,
  input_schema = check.schema,
  output_schema = check.schema,
  retries = check.nonneg_integer,
  backoff = check.backoff,
  timeout = check.positive_number,
  pause = check.pause,
  validate = check.validate,
  fallback = check.fallback,
  limits = check.limits,
  estimate = check.estimate,
  cache = check.cache,
  background = check.background,
  budget = check.budget,
}
M.common = common

-- The deepest chain of fallbacks one step may have (the engine's bound,
-- which it also holds fallbacks chosen while a run goes to).
local MAX_FALLBACK_DEPTH = core.max_fallback_depth

-- Walks a step's fallbacks, refusing chains deeper than the bound.
local function check_fallbacks(s, w, depth, seen)
  local fb = rawget(s, "fallback")
  if fb == nil or type(fb) == "function" then return end
  local list = getmetatable(fb) == Step and { fb } or fb
  for _, f in ipairs(list) do
    if seen[f] then
      fail(w, "step '%s': fallback cycle: step '%s' falls back to itself", s.name, f.name)
    end
    if depth >= MAX_FALLBACK_DEPTH then
      fail(w, "step '%s': fallback chain deeper than %d", s.name, MAX_FALLBACK_DEPTH)
    end
    seen[f] = true
    check_fallbacks(f, w, depth + 1, seen)
    seen[f] = nil
  end
end

-- Kinds the DSL knows: their options, whether they take positional steps,
-- and a final check of the whole step.
local kinds = {}

kinds.step = {
  options = { run = check.callable, agent = check.callable },
  finish = function(s, w)
    if s.run == nil and s.agent == nil then
      fail(w, "step '%s' needs a run function or an agent", s.name)
    end
    if s.run ~= nil and s.agent ~= nil then
      fail(w, "step '%s' takes run or agent, not both", s.name)
    end
    -- An agent may say how often a step running it tries by default (a
    -- chat agent with a schema refines its reply twice).
    local mt = s.agent ~= nil and getmetatable(s.agent)
    if s.retries == nil and type(mt) == "table" and type(mt.default_retries) == "function" then
      s.retries = mt.default_retries(s.agent)
    end
    if s.run == nil then
      local agent = s.agent
      s.run = type(agent) == "function" and agent
        or function(input, ctx) return agent(input, ctx) end
    end
  end,
}

kinds.pipeline = {
  options = { retain = check.retain, on_code_change = check.on_code_change },
  positional = true,
  finish = function(s, w)
    if #s == 0 then
      fail(w, "pipeline '%s' has no steps", s.name)
    end
  end,
}

--- Declares the options of a kind (spec.options: a list of names, or a
--- table of name -> checker function). A kind with no declaration accepts
--- any option.
function M.declare_kind(name, spec, level)
  if spec == nil then
    if not kinds[name] then return end
    spec = {}
  end
  local w = where(level + 1)
  if type(spec) ~= "table" then
    fail(w, "kind '%s': its spec must be a table, got %s", name, type(spec))
  end
  local options = {}
  for k, v in pairs(spec.options or {}) do
    if math.type(k) == "integer" then options[v] = check.any
    elseif type(v) == "function" then options[k] = v
    else options[k] = check.any end
  end
  kinds[name] = kinds[name] or {}
  local def = kinds[name]
  for k, v in pairs(options) do def.options = def.options or {}; def.options[k] = v end
  def.options = def.options or {}
  if spec.positional ~= nil then def.positional = spec.positional end
  if spec.check ~= nil then def.finish = spec.check end
end

--- The known kind definitions (read-only use).
M.kinds = kinds

local function all_options(def)
  local set = {}
  for k in pairs(common) do set[k] = true end
  for k in pairs(def and def.options or {}) do set[k] = true end
  return set
end

--- Builds a step of the given kind from spec; level is the stack level of
--- the user's call, for error positions.
function M.build(kind, spec, level)
  local w = where(level + 1, spec)
  if type(spec) ~= "table" then
    fail(w, "sl.%s expects a table of options, got %s", kind, type(spec))
  end
  if getmetatable(spec) == Step then
    fail(w, "sl.%s expects a table of options, got a step", kind)
  end
  local k = spec.kind or kind
  if type(k) ~= "string" or k == "" then
    fail(w, "%s: option 'kind' must be a non-empty string, got %s", kind, type(k))
  end
  local def = kinds[k]
  if def == nil and M.on_unknown_kind and M.on_unknown_kind(k) then def = kinds[k] end
  local name = spec.name
  if name == nil then
    if k == "step" then
      fail(w, "step needs a name (name = \"...\")")
    end
    name = k
  end
  local ok, expected = check.string(name)
  if not ok then
    fail(w, "%s: option 'name' must be %s, got %s", k, expected, type(name))
  end
  local s = setmetatable({ kind = k, name = name, where = w }, Step)
  local n = #spec
  for key, v in pairs(spec) do
    if math.type(key) == "integer" and key >= 1 and key <= n then
      if not (def and def.positional) and def ~= nil then
        fail(w, "%s '%s': unexpected positional entry #%d (%s takes options by name)",
          k, name, key, k)
      end
      if not is_step(v) then
        fail(w, "%s '%s': entry #%d must be a step, got %s", k, name, key,
          type(v) == "table" and "a plain table" or type(v))
      end
      s[key] = v
    elseif type(key) ~= "string" then
      fail(w, "%s '%s': option names must be strings, got %s", k, name, type(key))
    elseif key ~= "name" and key ~= "kind" then
      local checker = common[key] or (def and def.options[key])
      if checker == nil and def ~= nil then
        fail(w, "%s '%s': unknown option '%s'%s", k, name, key,
          M.suggest(key, all_options(def)))
      end
      if checker ~= nil then
        local good, what, got = checker(v)
        if not good then
          fail(w, "%s '%s': option '%s' must be %s, got %s", k, name, key,
            what or "valid", got or type(v))
        end
      end
      s[key] = v
    end
  end
  if type(s.validate) == "function" then s.validate = { s.validate } end
  if s.fallback ~= nil then check_fallbacks(s, w, 1, { [s] = true }) end
  if def and def.finish then def.finish(s, w) end
  -- What every execution shares (options, estimate, handler lookup) is
  -- worked out now, once.
  return core.prepare(s)
end

-- (No tail calls: the frame of the constructor must stay on the stack for
-- `where` to find the user's line.)
function M.step(spec)
  local s = M.build("step", spec, 2)
  return s
end

function M.pipeline(spec)
  local s = M.build("pipeline", spec, 2)
  return s
end

--- The option names a kind accepts, for tools such as `sluice check`.
function M.kind_options(kind)
  if kinds[kind] == nil and M.on_unknown_kind then M.on_unknown_kind(kind) end
  return all_options(kinds[kind])
end

return M
