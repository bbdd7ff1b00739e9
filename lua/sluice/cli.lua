-- The Lua side of the listing commands, `sluice runs` and `sluice show`:
-- reading the store through an engine and formatting with sluice.show.
-- Each returns the text to print and the exit code.
local core = require "sluice.core"

local M = {}

local function encode(v)
  local text, err = core.json_encode(v)
  if not text then error(err, 0) end
  return text .. "\n"
end

-- How many runs `sluice runs` lists unless told.
local DEFAULT_LIMIT = 50

--- sluice runs: opts.status, opts.pipeline, opts.limit, opts.before,
--- opts.json. A page holds at most limit runs (default 50, 0 for all);
--- the text form ends saying how to get the next one.
function M.runs(eng, opts)
  local show = require "sluice.show"
  local limit = DEFAULT_LIMIT
  if opts.limit then
    limit = math.tointeger(tonumber(opts.limit))
    if not limit or limit < 0 then
      error("sluice runs: --limit must be a non-negative integer, got '" .. opts.limit .. "'", 0)
    end
  end
  -- One more than the page, to know whether there is a next one.
  local rows = eng:runs{ status = opts.status, pipeline = opts.pipeline,
    limit = limit > 0 and limit + 1 or 0, before = opts.before }
  local more = limit > 0 and #rows > limit
  if more then rows[#rows] = nil end
  if opts.json then return encode(show.runs_json(rows)), 0 end
  local text = show.runs(rows)
  if more then
    text = text .. ("(%d shown; older runs: sluice runs --before %s)\n"):format(limit,
      rows[#rows].run_id)
  end
  return text, 0
end

-- Turns stored checkpoints (keyed by path) into the steps shape of a
-- result: ids in order, parents by id.
local function steps_of(checkpoints)
  -- Checkpoints are written as steps end, children before their parents;
  -- the tree reads in the order steps started.
  table.sort(checkpoints, function(a, b)
    if a.t0 ~= b.t0 then return a.t0 < b.t0 end
    return #a.path < #b.path
  end)
  local id_of, steps = {}, setmetatable({}, core.array_mt)
  for i, c in ipairs(checkpoints) do id_of[c.path] = i end
  for i, c in ipairs(checkpoints) do
    steps[i] = { id = i, parent = c.parent_path and id_of[c.parent_path], path = c.path,
      name = c.name, kind = c.kind, status = c.status, attempts = c.attempts,
      cached = c.cached, ms = c.ms, usage = c.usage, error = c.error, key = c.key }
  end
  return steps
end

--- sluice show RUN_ID.
function M.show(eng, id, json)
  local show = require "sluice.show"
  local run, checkpoints, waits = eng:show(id)
  if not run then error(checkpoints, 0) end
  local steps = steps_of(checkpoints)
  if json then
    local t = show.run_json(run, steps)
    if #waits > 0 then t.waits = waits end
    return encode(t), 0
  end
  local text = show.run(run, steps)
  for _, w in ipairs(waits) do
    if w.answer == nil then
      text = text .. ("waiting at %s: %s\n"):format(w.path, w.message or "")
    end
  end
  return text, 0
end

--- sluice cache stats | clear [--step NAME].
function M.cache(eng, verb, opts)
  if verb == "clear" then
    local n = eng:cache_clear(opts.step)
    return ("cleared %d cached output%s%s\n"):format(n, n == 1 and "" or "s",
      opts.step and (" of step '" .. opts.step .. "'") or ""), 0
  end
  local st = eng:cache_stats()
  if opts.json then
    st.memory = nil   -- the command's own process has nothing in memory
    return encode(st), 0
  end
  local show = require "sluice.show"
  local lines = { ("%s cached output%s, %s bytes, %s hits"):format(
    show.thousands(st.entries or 0), st.entries == 1 and "" or "s",
    show.thousands(st.bytes or 0), show.thousands(st.hits or 0)) }
  for _, s in ipairs(st.steps or {}) do
    lines[#lines + 1] = ("  %-24s %6s entries %10s bytes %6s hits"):format(s.step,
      show.thousands(s.entries), show.thousands(s.bytes), show.thousands(s.hits))
  end
  return table.concat(lines, "\n") .. "\n", 0
end

return M
