-- The control-flow kinds written in Lua, built on ctx:run, ctx:spawn and
-- ctx:await like any user kind.
local M = {}

--- Adds the constructors to sl and registers the kinds' handlers.
function M.install(sl, dsl)
end

return M
