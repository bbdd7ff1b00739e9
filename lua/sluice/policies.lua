-- Policies written in Lua: the runner of an attempt with validators, the
-- runner of a step's fallback, and a library of ready fallback policies.
-- The C dispatcher decides when each runs (lua/../engine/attempt.c); these
-- decide what running it means.
local core = require "sluice.core"

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
--- as ctx.feedback.
function M.attempt_runner(handler, step, input, ctx)
  local out, usage = handler(step, input, ctx)
  local validators = step.validate
  for i = 1, #validators do
    local ok, verdict, feedback = pcall(validators[i], out, ctx)
    if not ok or not verdict then
      -- A rejected attempt still spent what it reports.
      if usage ~= nil then ctx:charge(usage) end
      local msg = not ok and message_of(verdict)
        or feedback ~= nil and tostring(feedback)
        or ("validator #%d rejected the output"):format(i)
      error(step_error(step, "validation", msg), 0)
    end
  end
  return out, usage
end

--- Runs a step's fallback once its attempts are spent, on the step's input:
--- a step; a list of steps tried in turn until one succeeds; or a policy
--- function(err, input, ctx) returning a step to run, a value to use, or
--- nil to fail with the original error.
function M.fallback_runner(step, input, ctx, err)
  local fb = step.fallback
  if type(fb) == "function" then
    local choice = fb(err, input, ctx)
    if choice == nil then error(err, 0) end
    if is_step(choice) then return ctx:run(choice, input, "fallback") end
    local t = type(choice)
    if t == "function" or t == "thread" or t == "userdata" then
      error(step_error(step, "error", ("its fallback policy returned a %s; a policy "
        .. "returns a step to run, a value to use, or nil to fail"):format(t)), 0)
    end
    return choice
  end
  if is_step(fb) then return ctx:run(fb, input, "fallback") end
  local last = err
  for i = 1, #fb do
    local ok, out = pcall(ctx.run, ctx, fb[i], input, "fallback " .. i)
    if ok then return out end
    last = out
  end
  error(last, 0)
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

--- A default value, whatever the error.
function fallbacks.value(v)
  return function() return v end
end

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
