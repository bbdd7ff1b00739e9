-- Human in the loop: a step that pauses its run until a person answers.
local M = {}

--- Adds sl.human to the module and registers the `human` kind.
function M.install(sl, dsl)
  local check = dsl.check
  sl.builtin("human", function(step, input, ctx)
    local answer, timed_out = ctx:human(step.message, step.schema, step.answer_within)
    if not timed_out then return answer end
    -- Nobody answered in time: the timeout path.
    local on = step.on_timeout
    if on == nil or on == "fail" then
      local e = sl.error("timeout", ("nobody answered within %g s"):format(step.answer_within))
      e.where = step.where   -- the human step's file:line, not this one's
      error(e, 0)
    end
    if dsl.is_step(on) then return ctx:run(on, input, "on_timeout") end
    return on
  end, {
    options = {
      message = check.string,
      schema = function(v)
        if type(v) ~= "table" then return false, "a JSON Schema table" end
        local ok, err = pcall(require("sluice.schema").check, v)
        if not ok then return false, "a valid schema", tostring(err):gsub("^.-: ", "", 1) end
        return true
      end,
      answer_within = check.positive_number,
      on_timeout = check.any,
    },
    check = function(s, where)
      if s.message == nil then
        dsl.fail(where, "human '%s' needs a message (message = \"...\")", s.name)
      end
      if s.on_timeout ~= nil and s.answer_within == nil then
        dsl.fail(where, "human '%s': on_timeout needs a timeout (timeout = seconds)", s.name)
      end
    end,
  })

  --- A step that waits for a person: the run pauses, is stored, and goes on
  --- when resumed with an answer (checked against schema). With timeout =
  --- seconds, a question nobody answers in time takes on_timeout: a value
  --- to return, a step to run on the human step's input, or "fail" (the
  --- default: a timeout error). The due time is recorded with the run, so
  --- it holds across processes: a resume after it, or a worker when it
  --- falls due, takes the timeout path.
  function sl.human(spec)
    if type(spec) == "table" and spec.timeout ~= nil then
      -- Not the step's attempt timeout: how long the question stays open.
      local copy = {}
      for k, v in pairs(spec) do copy[k] = v end
      copy.answer_within, copy.timeout = copy.timeout, nil
      spec = copy
    end
    local s = dsl.build("human", spec, 2)
    return s
  end
end

return M
