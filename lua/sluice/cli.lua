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
--- the text form ends saying how to get the next one. opts.nostore: there
--- is no store yet (the options are checked all the same).
function M.runs(eng, opts)
  local show = require "sluice.show"
  local limit = DEFAULT_LIMIT
  if opts.limit then
    limit = math.tointeger(tonumber(opts.limit))
    if not limit or limit < 0 then
      error("sluice runs: --limit must be a non-negative integer, got '" .. opts.limit .. "'", 0)
    end
  end
  if opts.nostore then return opts.json and "[]\n" or "no runs\n", 0 end
  -- One more than the page, to know whether there is a next one.
  local rows = eng:runs{ status = opts.status, pipeline = opts.pipeline,
    limit = limit > 0 and limit + 1 or 0, before = opts.before, queue = opts.queue }
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
  local show = require "sluice.show"
  for i, c in ipairs(checkpoints) do
    steps[i] = { id = i, parent = c.parent_path and id_of[c.parent_path], path = c.path,
      name = c.name, kind = c.kind, attempts = c.attempts,
      status = c.kind == "sleep" and show.sleep_status(c) or c.status,
      cached = c.cached, ms = c.ms, usage = c.usage, error = c.error, key = c.key,
      logs = c.logs }
  end
  return steps
end

--- sluice run --break: the breakpoints given (STEP, STEP:before,
--- STEP:after, STEP:both) as step name -> when, each checked against the
--- steps of the pipeline step, so a misspelt one stops the run before it
--- starts.
function M.breaks(step, given)
  local dsl = require "sluice.dsl"
  local names = dsl.step_names(step)
  local out = {}
  for _, b in ipairs(given) do
    local name, when = b:match("^(.-):(%a+)$")
    if not name or not ({ before = true, after = true, both = true })[when] then
      name, when = b, "before"
    end
    if not names[name] then
      error(("sluice run: --break '%s' names no step of pipeline '%s'%s"):format(name,
        tostring(step.name), dsl.suggest(name, names)), 0)
    end
    local had = out[name]
    out[name] = (had and had ~= when) and "both" or when
  end
  return out
end

--- sluice show RUN_ID [--json | --timeline].
function M.show(eng, id, json, timeline)
  local show = require "sluice.show"
  local run, checkpoints, waits = eng:show(id)
  if not run then error(checkpoints, 0) end
  if timeline then
    return show.timeline(run, checkpoints, waits, { width = tonumber(os.getenv("COLUMNS")) }), 0
  end
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

--- sluice wait RUN_ID, once the run has ended: what it prints (its output,
--- or with json the run as show --json gives it), what it says on stderr,
--- and the exit code, as sluice run would.
function M.wait_report(eng, id, json)
  local show = require "sluice.show"
  local run, checkpoints, waits = eng:show(id)
  if not run then error(checkpoints, 0) end
  local status = run.status
  local code = ({ completed = 0, paused = 3, interrupted = 130 })[status] or 1
  if json then
    local t = show.run_json(run, steps_of(checkpoints))
    if #waits > 0 then t.waits = waits end
    return encode(t), code
  end
  if status == "completed" then
    if run.output == nil then return "null\n", code end
    return encode(run.output), code
  end
  if status == "paused" then
    local lines = { ("sluice: run %s paused, waiting for input:"):format(id) }
    for _, w in ipairs(waits) do
      if w.answer == nil then lines[#lines + 1] = ("  at %s: %s"):format(w.path, w.message or "") end
    end
    lines[#lines + 1] = ("resume with: sluice resume %s --input JSON"):format(id)
    io.stderr:write(table.concat(lines, "\n"), "\n")
    return id .. "\n", code
  end
  io.stderr:write(("sluice: run %s %s: %s\n"):format(id, status, show.error_text(run.error)))
  return "", code
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

-- A duration as the CLI takes it: 7d, 12h, 30m, 90s, 2w (or a bare
-- number of seconds), in milliseconds; nil when it is not one.
local units = { s = 1e3, m = 60e3, h = 3600e3, d = 86400e3, w = 7 * 86400e3 }
local function duration_ms(text)
  local n, u = tostring(text):match("^(%d+%.?%d*)(%a?)$")
  if not n or (u ~= "" and not units[u]) then return nil end
  return math.floor(tonumber(n) * units[u ~= "" and u or "s"])
end
M.duration_ms = duration_ms

--- sluice runs prune: opts.older_than, opts.status, opts.keep, opts.pipeline, opts.json;
--- opts.nostore: there is no store (the options are checked all the same).
function M.prune(eng, opts)
  local older = 0
  if opts["older-than"] then
    local ms = duration_ms(opts["older-than"])
    if not ms then
      error("sluice runs prune: --older-than must be an age such as 7d, 12h, 30m or 90s, got '"
        .. opts["older-than"] .. "'", 0)
    end
    older = core.wall_ms() - ms
  end
  local keep = 0
  if opts.keep then
    keep = math.tointeger(tonumber(opts.keep))
    if not keep or keep < 0 then
      error("sluice runs prune: --keep must be a non-negative integer, got '" .. opts.keep .. "'", 0)
    end
  end
  local statuses = { completed = true, failed = true, cancelled = true, paused = true,
    interrupted = true }
  if opts.status and not statuses[opts.status] then
    error(("sluice runs prune: --status must be one of completed, failed, cancelled, "
      .. "paused or interrupted, got '%s'"):format(opts.status), 0)
  end
  if opts.nostore then
    return opts.json and "{\"removed\":0}\n" or "removed 0 runs (there is no store)\n", 0
  end
  local n = eng:prune{ older_than_ms = older, status = opts.status, keep = keep,
    pipeline = opts.pipeline }
  if opts.json then return encode{ removed = n }, 0 end
  return ("removed %d run%s\n"):format(n, n == 1 and "" or "s"), 0
end

local function bytes(n)
  if n >= 1 << 30 then return ("%.1f GB"):format(n / (1 << 30)) end
  if n >= 1 << 20 then return ("%.1f MB"):format(n / (1 << 20)) end
  if n >= 1 << 10 then return ("%.1f KB"):format(n / (1 << 10)) end
  return ("%d B"):format(n)
end

--- sluice store check | vacuum | stats.
function M.store(eng, verb, json)
  if verb == "check" then
    local ok, why = eng:store_check()
    if json then return encode{ ok = ok, problem = why }, ok and 0 or 1 end
    if ok then return "ok: the store is whole\n", 0 end
    return why .. "\n", 1
  end
  if verb == "vacuum" then
    local before = eng:store_stats().file_bytes
    eng:store_vacuum()
    local after = eng:store_stats().file_bytes
    if json then return encode{ before = before, after = after }, 0 end
    return ("vacuumed: %s -> %s\n"):format(bytes(before), bytes(after)), 0
  end
  local st = eng:store_stats()
  if json then return encode(st), 0 end
  local lines = {
    st.path,
    ("  runs           %10d  %10s"):format(st.runs, bytes(st.run_bytes)),
    ("  checkpoints    %10d  %10s"):format(st.checkpoints, bytes(st.checkpoint_bytes)),
    ("  waits          %10d"):format(st.waits),
    ("  stored values  %10d  %10s"):format(st.values, bytes(st.value_bytes)),
    ("  cache entries  %10d  %10s"):format(st.cache_entries, bytes(st.cache_bytes)),
    ("  file                       %10s"):format(bytes(st.file_bytes)),
  }
  return table.concat(lines, "\n") .. "\n", 0
end

return M
