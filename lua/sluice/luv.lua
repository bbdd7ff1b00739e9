-- An engine driven by luv's loop: require("sluice.luv").attach(engine)
-- watches the engine's descriptor with a luv poll handle and its next
-- timer with a luv timer, and gives the engine a turn when either fires,
-- so one uv.run() drives the host's handles and the engine's runs with
-- no polling. Works with engines of `require "sluice"` (stock lua5.4 with
-- luv) and of `require "sluice.ffi"` (LuaJIT, Neovim's vim.loop), which
-- both have fd(), timeout() and poll(). Lua 5.1 to 5.4.
local M = {}

--- attach(engine[, uv]): uv is the luv module (default require "luv";
--- pass vim.loop in Neovim). Returns a handle whose :close() detaches it.
--- on_idle, if given as the third argument, is called each time the
--- engine has no runs left.
function M.attach(engine, uv, on_idle)
  uv = uv or require("luv")
  local poll = uv.new_poll(engine:fd())
  local timer = uv.new_timer()
  local closed = false
  local turn
  local function arm()
    -- Wake when the engine's next timer is due, if its descriptor is quiet.
    timer:stop()
    local ms = engine:timeout()
    if ms >= 0 then timer:start(ms, 0, turn) end
  end
  turn = function()
    if closed then return end
    local active = engine:poll()
    if active == 0 and on_idle then on_idle() end
    if not closed then arm() end
  end
  poll:start("r", turn)
  local h = {}
  --- Gives the engine a turn now: call it after starting a run, or after
  --- completing a host kind's step, from outside the engine's own
  --- callbacks, so what that made ready runs and its next timer is watched.
  function h.kick() turn() end
  function h.close()
    if closed then return end
    closed = true
    poll:stop()
    timer:stop()
    poll:close()
    timer:close()
  end
  arm()
  return h
end

return M
