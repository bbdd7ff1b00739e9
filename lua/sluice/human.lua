-- Human in the loop: a step that pauses its run until a person answers.
local M = {}

--- Adds sl.human to the module and registers the `human` kind.
function M.install(sl, dsl)
  local check = dsl.check
  sl.builtin("human", function(step, input, ctx)
    return ctx:human(step.message, step.schema)
  end, {
    options = {
      message = check.string,
      schema = function(v)
        if type(v) ~= "table" then return false, "a JSON Schema table" end
        local ok, err = pcall(require("sluice.schema").check, v)
        if not ok then return false, "a valid schema", tostring(err):gsub("^.-: ", "", 1) end
        return true
      end,
    },
    check = function(s, where)
      if s.message == nil then
        dsl.fail(where, "human '%s' needs a message (message = \"...\")", s.name)
      end
    end,
  })

  --- A step that waits for a person: the run pauses, is stored, and goes on
  --- when resumed with an answer (checked against schema).
  function sl.human(spec)
    local s = dsl.build("human", spec, 2)
    return s
  end
end

return M
