-- A Neovim plugin-style script: runs a sluice pipeline on Neovim's own
-- loop (vim.loop) through require "sluice.ffi", with a host kind that
-- reads a buffer. Neovim never blocks and never spins: it watches the
-- engine's descriptor and wakes on its timeout.
--   nvim --headless -u NONE -c "luafile scripts/examples/nvim/wordcount.lua"
-- SLUICE_EMBED_LIB names libsluice_embed; the result is written as JSON to
-- $SLUICE_NVIM_OUT (or printed) and Neovim quits.
local sluice = require "sluice.ffi"
local uv = vim.loop

local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
local out = os.getenv("SLUICE_NVIM_OUT")

local function finish(text, code)
  if out then
    local f = assert(io.open(out, "w"))
    f:write(text, "\n")
    f:close()
  else
    io.stdout:write(text, "\n")
  end
  vim.schedule(function() vim.cmd(code == 0 and "qa!" or "cq!") end)
end

-- A buffer to count, as a plugin would be given.
local buf = vim.api.nvim_create_buf(false, true)
vim.api.nvim_buf_set_lines(buf, 0, -1, false, { "sluice runs pipelines", "inside Neovim, on its loop" })

local e = sluice.engine{ store = os.getenv("SLUICE_NVIM_STORE") }
-- The host kind: a pipeline step that reads one of the editor's buffers.
e:kind("buffer", function(input)
  local lines = vim.api.nvim_buf_get_lines(input.buffer, 0, -1, false)
  return { lines = lines }
end)
e:load(here .. "wordcount_pipeline.lua")

local run = e:start(nil, { buffer = buf })
local poll = uv.new_poll(e:fd())
local timer = uv.new_timer()
local turns = 0

local function turn()
  turns = turns + 1
  local active = e:poll()
  if active == 0 then
    poll:stop()
    timer:stop()
    local r = run:result()
    r.turns = turns
    finish(vim.fn.json_encode(r), r.status == "completed" and 0 or 1)
    return
  end
  -- Wake again when the engine's timer is due, if its descriptor is quiet.
  local ms = e:timeout()
  timer:stop()
  if ms >= 0 then timer:start(ms, 0, vim.schedule_wrap(turn)) end
end

poll:start("r", vim.schedule_wrap(turn))
turn()
