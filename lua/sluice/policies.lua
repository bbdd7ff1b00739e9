-- Policies written in Lua: the runner of an attempt with validators, the
-- runner of a step's fallback, and a library of ready fallback policies.
-- The C dispatcher decides when each runs (lua/../engine/attempt.c); these
-- decide what running it means.
local core = require "sluice.core"
local schema = require "sluice.schema"

local M = {}

local Step = core.step_mt
local error_mt = core.error_mt

local function is_step(v) return getmetatable(v) == Step end

-- An error table for a step, placed at the step's definition.
local function step_error(step, kind, message)
  return setmetatable({ kind = kind, message = message, step = step.name,
    where = step.where }, error_mt)
end

local function message_of(e)
  if type(e) == "table" then return tostring(e.message or e) end
  return tostring(e)
end

--- Runs the handler, then each validator on its output. A validator
--- returns ok[, feedback] or raises; a rejection is an error of kind
--- "validation" whose message is the feedback, which the next attempt sees
--- as ctx.feedback. A step's input_schema is checked before the handler
--- runs (a mismatch fails the step with kind "validation" and is not
--- retried: the same input would fail again) and its output_schema after
--- it, before the validators, refining as they do.
local no_validators = {}
function M.attempt_runner(handler, step, input, ctx)
  local ins = step.input_schema
  if ins ~= nil then
    local ok, msg = schema.validate_checked(ins, input)
    if not ok then
      local e = step_error(step, "validation", "the input does not match its input_schema: " .. msg)
      e.retry = false
      error(e, 0)
    end
  end
  local out, usage = handler(step, input, ctx)
  local outs = step.output_schema
  if outs ~= nil then
    local ok, msg = schema.validate_checked(outs, out)
    if not ok then
      if usage ~= nil then ctx:charge(usage) end
      error(step_error(step, "validation", "the output does not match its output_schema: " .. msg), 0)
    end
  end
  local validators = step.validate or no_validators
  for i = 1, #validators do
    local ok, verdict, feedback = pcall(validators[i], out, ctx)
    if not ok or not verdict then
      -- A rejected attempt still spent what it reports.
      if usage ~= nil then ctx:charge(usage) end
      -- A validator that raises is broken, not a verdict on the output:
      -- its error is the step's, as it was raised (kind, where).
      if not ok then error(verdict, 0) end
      local msg = feedback ~= nil and tostring(feedback)
        or ("validator #%d rejected the output"):format(i)
      error(step_error(step, "validation", msg), 0)
    end
  end
  return out, usage
end

-- A value a fallback policy supplies, nil included (a bare nil from a
-- policy means "fail with the original error").
local Use = {}

--- Wraps a value for a fallback policy to return as the step's output,
--- whatever it is (nil too): return sl.fallbacks.use(nil).
function M.use(v)
  return setmetatable({ value = v }, Use)
end

-- The error of a step whose fallbacks failed too: the primary's kind and
-- position, a message that tells the whole story, and every failure in
-- causes, the primary's first.
local function chain(step, primary, failures)
  if #failures == 0 then return primary end
  local causes, parts = { primary }, {}
  for i, f in ipairs(failures) do
    causes[i + 1] = f.err
    parts[i] = ("its fallback '%s' failed too: %s"):format(f.name, message_of(f.err))
  end
  local e = type(primary) == "table" and primary or {}
  return setmetatable({ kind = e.kind or "error", step = e.step or step.name,
    where = e.where, message = message_of(primary) .. "; " .. table.concat(parts, "; "),
    causes = setmetatable(causes, core.array_mt) }, error_mt)
end

--- Runs a step's fallback once its attempts are spent, on the step's input:
--- a step; a list of steps tried in turn until one succeeds; or a policy
--- function(err, input, ctx) returning a step to run, a value to use, or
--- nil to fail with the original error.
function M.fallback_runner(step, input, ctx, err)
  local fb = step.fallback
  local function try(s, key)
    local ok, out = pcall(ctx.run, ctx, s, input, key)
    if ok then return true, out end
    return false, out
  end
  if type(fb) == "function" then
    local choice = fb(err, input, ctx)
    if choice == nil then error(err, 0) end
    if getmetatable(choice) == Use then return choice.value end
    if is_step(choice) then
      local ok, out = try(choice, "fallback")
      if ok then return out end
      error(chain(step, err, { { name = choice.name, err = out } }), 0)
    end
    local t = type(choice)
    if t == "function" or t == "thread" or t == "userdata" then
      error(step_error(step, "error", ("its fallback policy returned a %s; a policy "
        .. "returns a step to run, a value to use, or nil to fail"):format(t)), 0)
    end
    return choice
  end
  local single = is_step(fb)
  local list = single and { fb } or fb
  local failures = {}
  for i = 1, #list do
    local ok, out = try(list[i], single and "fallback" or "fallback " .. i)
    if ok then return out end
    failures[#failures + 1] = { name = list[i].name, err = out }
  end
  error(chain(step, err, failures), 0)
end

--- Ready fallback policies (sl.fallbacks).
local fallbacks = {}
M.fallbacks = fallbacks

--- By error kind: { timeout = step_or_value, validation = ..., default = ... };
--- a kind with no entry (and no default) fails with the original error.
function fallbacks.by_kind(map)
  if type(map) ~= "table" then
    error("bad argument #1 to 'by_kind' (table expected, got " .. type(map) .. ")", 2)
  end
  return function(err)
    local choice = map[err.kind]
    if choice == nil then choice = map.default end
    return choice
  end
end

--- A default value, whatever the error (nil too).
function fallbacks.value(v)
  local boxed = M.use(v)
  return function() return boxed end
end

--- Uses what the branches that succeeded produced, when a parallel, map,
--- router or dag with on_failure = "all_settled" had some fail (the
--- error's partial); other errors fail as they were.
function fallbacks.partial()
  return function(err)
    if type(err) == "table" and err.partial ~= nil then return M.use(err.partial) end
    return nil
  end
end

--- Wraps a value, nil included, for a policy to return as the output.
fallbacks.use = M.use

--- The first of these steps that succeeds (the same as fallback = {...}).
function fallbacks.first(steps)
  return steps
end

--- Runs choice only when pred(err, input, ctx) is true.
function fallbacks.when(pred, choice)
  return function(err, input, ctx)
    if pred(err, input, ctx) then return choice end
    return nil
  end
end

return M
