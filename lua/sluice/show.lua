-- What `sluice runs` and `sluice show RUN_ID` print: pure functions from
-- plain tables (rows read from the store, or a run's result) to text for a
-- terminal, or to tables ready for JSON.
--
-- A run (a row of `sluice runs`, or the run of `sluice show`):
--   { run_id, pipeline, status, started_ms, ended_ms, usage, error }
--   started_ms, ended_ms: Unix time in milliseconds; ended_ms nil (or 0, as
--     the store keeps it) while the run has not ended
--   usage: { cost = <number>, tokens = <integer>, requests = <integer> } or nil
--   error: { kind, message, step, where } or nil
-- A step execution, as in a result's steps:
--   { id, parent, index, key, name, kind, status, attempts, cached, ms,
--     usage, error = { kind, message, step, where }, fallback }
--   parent is the parent's id (nil for a root); steps come in the order
--   they started; cached may be a boolean or, as the store keeps it, 0 or 1.
--
-- opts (may be nil): utc = true prints times in UTC rather than local time.

local core = require "sluice.core"

local M = {}


-- {======================================================
-- Formatting values
-- =======================================================

-- Display width: characters, not bytes (the tree glyphs, "·" and "µ" are
-- several bytes each).
local function width(s)
  return utf8.len(s) or #s
end

local function pad_right(s, w)
  return s .. (" "):rep(w - width(s))
end

local function pad_left(s, w)
  return (" "):rep(w - width(s)) .. s
end

-- A whole number with thousands separators: 1204 -> "1,204".
local function thousands(n)
  local digits = ("%d"):format(math.tointeger(n) or math.floor(n + 0.5))
  local sign, rest = digits:match("^(-?)(%d+)$")
  rest = rest:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
  return sign .. rest
end
M.thousands = thousands

-- A cost as an exact decimal, as the engine writes costs (sl_cost_format):
-- at least two decimals, more only when needed, at most nine.
-- 0.0123 -> "0.0123", 0.5 -> "0.50", 3 -> "3.00".
local function cost(c)
  local nanos = math.tointeger(math.floor(math.abs(c) * 1e9 + 0.5))
  if not nanos then return ("%.2f"):format(c) end
  local frac = ("%09d"):format(nanos % 1000000000):gsub("0+$", "")
  if #frac < 2 then frac = frac .. ("0"):rep(2 - #frac) end
  return ("%s%d.%s"):format(c < 0 and "-" or "", nanos // 1000000000, frac)
end
M.cost = cost

-- "cost 0.0123 · 1,204 tok · 3 req", leaving out what is zero; "" for none.
local function usage(u)
  if type(u) ~= "table" then return "" end
  local parts = {}
  if (u.cost or 0) > 0 then parts[#parts + 1] = "cost " .. cost(u.cost) end
  if (u.tokens or 0) > 0 then parts[#parts + 1] = thousands(u.tokens) .. " tok" end
  if (u.requests or 0) > 0 then parts[#parts + 1] = thousands(u.requests) .. " req" end
  return table.concat(parts, " · ")
end
M.usage = usage

-- A duration in milliseconds, to the precision a person reads:
-- "40µs", "350ms", "1.2s", "2m05s", "1h02m".
local function duration(ms)
  if ms < 1 then
    local us = math.floor(ms * 1000 + 0.5)
    if us < 1000 then return ("%dµs"):format(us) end
  end
  local whole = math.floor(ms + 0.5)
  if whole < 1000 then return ("%dms"):format(whole) end
  local tenths = math.floor(ms / 100 + 0.5)
  if tenths < 600 then return ("%d.%ds"):format(tenths // 10, tenths % 10) end
  local s = math.floor(ms / 1000 + 0.5)
  if s < 3600 then return ("%dm%02ds"):format(s // 60, s % 60) end
  return ("%dh%02dm"):format(s // 3600, s % 3600 // 60)
end
M.duration = duration

local function ended(run)
  local e = run.ended_ms
  if e == nil or e == 0 then return nil end
  return e
end

-- A run's duration, or what it is doing while it has not ended; `fmt`
-- formats the milliseconds (a listing uses one unit for every row).
local function run_duration(run, fmt)
  local e = ended(run)
  if e and run.started_ms then return (fmt or duration)(e - run.started_ms) end
  if run.status == "running" then return "running" end
  return "-"
end

-- Seconds, to the millisecond: the one unit of a listing's durations.
local function seconds(ms)
  return ("%.3fs"):format(ms / 1000)
end

-- Formatted times by second, for one listing: listings hold many runs
-- from the same second. M.runs starts each listing with an empty one.
local time_memo = {}

-- ISO 8601 with the zone: 2024-05-01T12:00:00Z in UTC, else local time
-- with its offset, 2024-05-01T14:00:00+02:00.
local function time(ms, opts)
  if not ms then return "" end
  local utc = opts and opts.utc
  local key = (utc and "u" or "l") .. (ms // 1000)
  local text = time_memo[key]
  if text == nil then
    if utc then
      text = os.date("!%Y-%m-%dT%H:%M:%SZ", ms // 1000)
    else
      text = os.date("%Y-%m-%dT%H:%M:%S%z", ms // 1000):gsub("(%d%d)(%d%d)$", "%1:%2")
    end
    time_memo[key] = text
  end
  return text
end

-- "kind: message at where", any part may be missing; a string is taken as
-- the message itself. It is always shown after the word "error", so the
-- plain kind "error" is left out.
local function error_text(e)
  if type(e) ~= "table" then return tostring(e) end
  local text = e.message and tostring(e.message) or ""
  if e.kind and e.kind ~= "error" then
    text = text == "" and tostring(e.kind) or (e.kind .. ": " .. text)
  end
  if e.where then text = text .. " at " .. tostring(e.where) end
  return text
end

local function split_lines(s)
  local lines = {}
  for l in (s .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = l end
  return lines
end

local function rstrip(s)
  if s:byte(-1) ~= 32 then return s end
  return (s:gsub("%s+$", ""))
end

-- }======================================================


-- {======================================================
-- sluice runs
-- =======================================================

--- The runs as a table for a terminal, one line per row in the order
--- given, under a header: ID, PIPELINE, STATUS, STARTED, DURATION, USAGE.
--- "no runs\n" when there are none.
function M.runs(rows, opts)
  if #rows == 0 then return "no runs\n" end
  time_memo = {}
  -- Runs submitted to a queue add its column, and what a queued one waits
  -- for, when there are any.
  local queued, waiting = false, false
  for _, r in ipairs(rows) do
    queued = queued or r.queue ~= nil
    waiting = waiting or r.waiting_for ~= nil or r.due_ms ~= nil
  end
  local head = { "ID", "PIPELINE", "STATUS", "STARTED", "DURATION", "USAGE" }
  if queued then head[#head + 1] = "QUEUE" end
  if waiting then head[#head + 1] = "WAITING FOR" end
  local cells = { head }
  for i, r in ipairs(rows) do
    local line = {
      tostring(r.run_id), tostring(r.pipeline), tostring(r.status),
      time(r.started_ms, opts), run_duration(r, seconds), usage(r.usage),
    }
    if queued then line[#line + 1] = r.queue or "" end
    if waiting then
      -- A parked or paused run waits for its due time.
      line[#line + 1] = r.waiting_for or r.due_ms and "due " .. time(r.due_ms, opts) or ""
    end
    cells[i + 1] = line
  end
  local widths = {}
  for _, line in ipairs(cells) do
    for c, text in ipairs(line) do widths[c] = math.max(widths[c] or 0, width(text)) end
  end
  local out, ncols = {}, #cells[1]
  for i, line in ipairs(cells) do
    local parts = {}
    for c, text in ipairs(line) do
      -- The last column is not padded, so no line ends in spaces.
      parts[c] = c == 5 and pad_left(text, widths[c])
        or c == ncols and text or pad_right(text, widths[c])
    end
    out[i] = rstrip(table.concat(parts, "  "))
  end
  return table.concat(out, "\n") .. "\n"
end

-- }======================================================


-- {======================================================
-- sluice show
-- =======================================================

-- The steps as a forest: roots (no parent, or a parent not among the
-- steps) in order, and each step's children in the order they started.
local function forest(steps)
  local by_id, children, roots = {}, {}, {}
  for _, s in ipairs(steps) do
    if s.id ~= nil then by_id[s.id] = s end
  end
  for _, s in ipairs(steps) do
    local p = s.parent ~= nil and by_id[s.parent] or nil
    if p and p ~= s then
      local list = children[p]
      if not list then list = {}; children[p] = list end
      list[#list + 1] = s
    else
      roots[#roots + 1] = s
    end
  end
  return roots, children
end

-- A step's label: name, its key in brackets, its kind in parentheses.
local function label(s)
  local text = tostring(s.name or "?")
  if s.key ~= nil then text = text .. "[" .. tostring(s.key) .. "]" end
  return text .. " (" .. tostring(s.kind or "?") .. ")"
end

-- Does step s show its error? Only where the error started: a parent that
-- failed because a child did carries the child's error, shown at the child.
local function shows_error(s)
  local e = s.error
  if e == nil then return false end
  if type(e) ~= "table" or e.step == nil then return true end
  return e.step == s.name
end

-- Lines of the step tree: each { head, status, duration, extras, notes },
-- head being the tree prefix and label, notes the lines shown beneath.
-- A log record as a line: its time after the run's start, its level
-- unless info, its message and its fields.
local function log_line(l, start_ms)
  if l.dropped then return ("(%d more log records not kept)"):format(l.dropped) end
  local at = (l.time_ms and start_ms) and ("+" .. seconds(l.time_ms - start_ms) .. " ") or ""
  local level = (l.level and l.level ~= "info") and (tostring(l.level) .. ": ") or ""
  local fields = ""
  if l.fields ~= nil then
    fields = "  " .. (core.json_encode(l.fields) or tostring(l.fields))
    -- A long record (a model call's prompt) in full is in show --json and the ui.
    if width(fields) > 200 then fields = fields:sub(1, (utf8.offset(fields, 197) or 197) - 1) .. " …" end
  end
  return "log " .. at .. level .. tostring(l.message or "") .. fields
end

local function tree_lines(steps, start_ms)
  local roots, children = forest(steps)
  local lines, seen = {}, {}

  local function visit(s, head_prefix, body_prefix)
    if seen[s] then return end
    seen[s] = true
    local kids = children[s] or {}
    local extras = {}
    if (s.attempts or 1) > 1 then extras[#extras + 1] = ("%d attempts"):format(s.attempts) end
    if s.cached == true or (type(s.cached) == "number" and s.cached ~= 0) then
      extras[#extras + 1] = "cached"
    end
    local u = usage(s.usage)
    if u ~= "" then extras[#extras + 1] = u end
    if s.fallback then extras[#extras + 1] = "fallback: " .. tostring(s.fallback) end
    local notes = {}
    if shows_error(s) then
      local under = body_prefix .. (#kids > 0 and "│ " or "  ")
      for i, l in ipairs(split_lines(error_text(s.error))) do
        notes[#notes + 1] = under .. (i == 1 and "error: " or "       ") .. l
      end
    end
    if type(s.logs) == "table" then
      local under = body_prefix .. (#kids > 0 and "│ " or "  ")
      for _, rec in ipairs(s.logs) do
        for i, l in ipairs(split_lines(log_line(rec, start_ms))) do
          notes[#notes + 1] = under .. (i == 1 and "" or "    ") .. l
        end
      end
    end
    lines[#lines + 1] = {
      head = head_prefix .. label(s), status = tostring(s.status or "?"),
      duration = s.ms and duration(s.ms) or "", extras = extras, notes = notes,
    }
    for i, c in ipairs(kids) do
      local last = i == #kids
      visit(c, body_prefix .. (last and "└─ " or "├─ "), body_prefix .. (last and "   " or "│  "))
    end
  end

  for _, r in ipairs(roots) do visit(r, "", "") end
  -- Steps on a cycle of parents are reached from no root: show them too.
  for _, s in ipairs(steps) do visit(s, "", "") end
  return lines
end

local function render_tree(steps, start_ms)
  local lines = tree_lines(steps, start_ms)
  local wh, ws, wd = 0, 0, 0
  for _, l in ipairs(lines) do
    wh = math.max(wh, width(l.head))
    ws = math.max(ws, width(l.status))
    wd = math.max(wd, width(l.duration))
  end
  local out = {}
  for _, l in ipairs(lines) do
    local parts = { pad_right(l.head, wh), pad_right(l.status, ws), pad_left(l.duration, wd) }
    for _, e in ipairs(l.extras) do parts[#parts + 1] = e end
    out[#out + 1] = rstrip(table.concat(parts, "  "))
    for _, n in ipairs(l.notes) do out[#out + 1] = rstrip(n) end
  end
  return out
end

--- One run: a header (run, pipeline, status, started, duration, usage,
--- and the error of a run that failed), a blank line, then the tree of
--- its step executions, one line each: label (name[key] (kind)), status,
--- duration, then attempts when more than one, "cached", usage and
--- "fallback: why" when they apply, with a failed step's error beneath it.
function M.run(run, steps, opts)
  local header = {
    { "run", tostring(run.run_id) },
    { "pipeline", tostring(run.pipeline) },
    { "status", tostring(run.status) },
    { "started", time(run.started_ms, opts) },
    { "duration", run_duration(run) },
  }
  local u = usage(run.usage)
  if u ~= "" then header[#header + 1] = { "usage", u } end
  if run.queue ~= nil then header[#header + 1] = { "queue", tostring(run.queue) } end
  if run.owner ~= nil then
    -- "host:pid:start": the worker (or process) executing it.
    local host, pid = tostring(run.owner):match("^(.*):(%d+):%d+$")
    header[#header + 1] = { "owner", host and ("%s pid %s"):format(host, pid) or tostring(run.owner) }
  end
  if run.code_version ~= nil then
    header[#header + 1] = { "code", tostring(run.code_version):sub(1, 12) }
  end
  if run.waiting_for ~= nil then
    header[#header + 1] = { "waiting", "for " .. tostring(run.waiting_for) }
  end
  if run.due_ms ~= nil then header[#header + 1] = { "due", time(run.due_ms, opts) } end
  local fork = run.forked_from
  if type(fork) == "table" then
    header[#header + 1] = { "forked", ("from %s at %s"):format(tostring(fork.run_id), tostring(fork.path)) }
  end
  if run.error ~= nil then
    local text = error_text(run.error)
    if type(run.error) == "table" and run.error.step then
      text = text .. (" (step '%s')"):format(tostring(run.error.step))
    end
    header[#header + 1] = { "error", text }
  end
  local out = {}
  for _, h in ipairs(header) do
    for i, l in ipairs(split_lines(h[2])) do
      out[#out + 1] = rstrip(pad_right(i == 1 and h[1] or "", 10) .. l)
    end
  end
  out[#out + 1] = ""
  if not steps or #steps == 0 then
    out[#out + 1] = "no steps recorded"
  else
    for _, l in ipairs(render_tree(steps, run.started_ms)) do out[#out + 1] = l end
  end
  return table.concat(out, "\n") .. "\n"
end

-- }======================================================


local function array(t)
  return setmetatable(t or {}, core.array_mt)
end

local function micro(ms)
  return math.floor(ms * 1000 + 0.5) / 1000
end

--- The status a durable sleep's record shows (kind "sleep", its output
--- {due_ms, seconds}): "waiting" until it is due, then "waited".
function M.sleep_status(c, now_ms)
  local due = type(c.output) == "table" and tonumber(c.output.due_ms)
  return due and due > (now_ms or core.wall_ms()) and "waiting" or "waited"
end

--- A run's step executions on its time axis, for the timeline (show
--- --timeline and the ui): from engine:show's checkpoints and waits, one
--- record per execution in the order they started, each {id, parent_id,
--- epoch, path, parent, name, kind, key, status, attempts, cached,
--- restored, answered, start_ms, ms, usage, error (text), logs (a count)},
--- start_ms from the run's first step; and the axis's length in ms.
--- status is the checkpoint's, but "waiting" for a question still open,
--- "waited" for one answered (and for a durable sleep, as sleep_status
--- says), and "paused" for the steps a pause ended.
function M.executions(checkpoints, waits)
  table.sort(checkpoints, function(a, b)
    if a.t0 ~= b.t0 then return a.t0 < b.t0 end
    return #a.path < #b.path
  end)
  local waiting = {}
  for _, w in ipairs(waits) do waiting[w.path] = w.answer == nil and "waiting" or "waited" end
  -- The time axis starts at the first step. Steps recorded by an earlier
  -- process (the run was resumed) are on that process's clock: each
  -- epoch's steps are placed after the previous epoch's.
  local first = {}
  for _, c in ipairs(checkpoints) do
    local ep = c.epoch or 0
    if first[ep] == nil or c.t0 < first[ep] then first[ep] = c.t0 end
  end
  local epochs = {}
  for ep in next, first do epochs[#epochs + 1] = ep end
  table.sort(epochs)
  local shift, at = {}, 0
  for _, ep in ipairs(epochs) do
    shift[ep] = at - first[ep] / 1e6
    local last = at
    for _, c in ipairs(checkpoints) do
      if (c.epoch or 0) == ep then
        local e = c.t0 / 1e6 + shift[ep] + (c.ms or 0)
        if e > last then last = e end
      end
    end
    at = last
  end
  local steps = array()
  local latest = epochs[#epochs]
  -- A path runs again when the run is resumed (the step that paused, and
  -- those around it): each execution is its own row, id'd by its place,
  -- under its parent's execution of the same epoch where there is one.
  local by_path = {}
  for i, c in ipairs(checkpoints) do
    local ep = c.epoch or 0
    by_path[c.path] = by_path[c.path] or {}
    by_path[c.path][ep] = i
    by_path[c.path].last = i
  end
  for i, c in ipairs(checkpoints) do
    local ep = c.epoch or 0
    local pp = c.parent_path and by_path[c.parent_path]
    -- How a pause shows: the step waiting for a person (or that waited,
    -- in an earlier epoch, for the answer the run resumed with), and the
    -- steps around it that the pause ended.
    local status, err = c.status, c.error
    local w = waiting[c.path]
    if w and c.kind == "human" and (status == "cancelled" or status == "running") then
      status = (w == "waiting" and ep == latest) and "waiting" or "waited"
      err = nil
    elseif c.kind == "sleep" then
      status = M.sleep_status(c)
    elseif type(err) == "table" and err.kind == "paused" then
      status = ep == latest and "paused" or "waited"
    end
    steps[i] = {
      id = i, parent_id = pp and (pp[ep] or pp.last) or nil, epoch = c.epoch,
      path = c.path, parent = c.parent_path, name = c.name, kind = c.kind, key = c.key,
      status = status, attempts = c.attempts,
      answered = (w == "waited" and c.kind == "human") or nil,
      cached = c.cached or nil,
      restored = (#epochs > 1 and ep ~= latest) or nil,
      start_ms = micro(c.t0 / 1e6 + shift[ep]), ms = c.ms and micro(c.ms),
      usage = c.usage,
      error = err ~= nil and error_text(err) or nil,
      logs = c.logs and #c.logs or nil,
    }
  end
  return steps, micro(at)
end

-- Bar glyphs by status; the legend under the timeline says which is which.
local glyph = { completed = "█", failed = "▓", cancelled = "░", paused = "┅", waiting = "┅",
  waited = "┄", running = "▒" }

--- sluice show RUN_ID --timeline: one line per step execution, its name
--- indented under its parent's, a bar from its start to its end on the
--- run's time axis (opts.width columns in all, 100 unless told), its time
--- and what marks it (a cache hit, restored on resume, retries, a wait).
function M.timeline(run, checkpoints, waits, opts)
  opts = opts or {}
  local steps, span = M.executions(checkpoints, waits or {})
  local out = { ("run %s  %s  %s  %s"):format(run.run_id, run.pipeline or "?", run.status or "?",
    run_duration(run, duration)) }
  if #steps == 0 then
    out[#out + 1] = "no step has been recorded"
    return table.concat(out, "\n") .. "\n"
  end
  local depth, labels = {}, {}
  local name_w = 0
  for i, s in ipairs(steps) do
    depth[i] = s.parent_id and (depth[s.parent_id] or 0) + 1 or 0
    local name = s.name or "?"
    if s.key and s.key ~= s.name then name = name .. "[" .. s.key .. "]" end
    labels[i] = ("  "):rep(math.min(depth[i], 12)) .. name .. " (" .. tostring(s.kind) .. ")"
    if width(labels[i]) > 48 then labels[i] = labels[i]:sub(1, 46) .. "…" end
    name_w = math.max(name_w, width(labels[i]))
  end
  local total = math.max(tonumber(opts.width) or 100, 60)
  local bar_w = math.max(total - name_w - 14, 20)
  if span <= 0 then span = 0.001 end
  -- The axis: its start, middle and end.
  local axis = { (" "):rep(name_w + 2) }
  local ticks = { "0", duration(span / 2), duration(span) }
  local line = {}
  for c = 1, bar_w do line[c] = " " end
  local function put(col, text)
    local k = 0
    for _, cp in utf8.codes(text) do
      if col + k >= 1 and col + k <= bar_w then line[col + k] = utf8.char(cp) end
      k = k + 1
    end
  end
  put(1, ticks[1])
  put(bar_w // 2 - width(ticks[2]) // 2, ticks[2])
  put(bar_w - width(ticks[3]) + 1, ticks[3])
  axis[2] = table.concat(line)
  out[#out + 1] = table.concat(axis)
  out[#out + 1] = (" "):rep(name_w + 2) .. "├" .. ("─"):rep(bar_w - 2) .. "┤"
  for i, s in ipairs(steps) do
    local from = math.floor(s.start_ms / span * bar_w)
    local to = math.floor((s.start_ms + (s.ms or 0)) / span * bar_w + 0.5)
    if from >= bar_w then from = bar_w - 1 end
    if to <= from then to = from + 1 end
    if to > bar_w then to = bar_w end
    local g = glyph[s.status] or "█"
    if s.cached then g = "▚" end
    local bar = (" "):rep(from) .. g:rep(to - from) .. (" "):rep(bar_w - to)
    local marks = { duration(s.ms) }
    if s.status ~= "completed" then marks[#marks + 1] = s.status end
    if (s.attempts or 1) > 1 then marks[#marks + 1] = "×" .. s.attempts .. " attempts" end
    if s.cached then marks[#marks + 1] = "cache hit" end
    if s.restored then marks[#marks + 1] = "restored" end
    if s.answered then marks[#marks + 1] = "answered" end
    out[#out + 1] = pad_right(labels[i], name_w) .. "  " .. bar .. "  " .. table.concat(marks, " ")
  end
  out[#out + 1] = ""
  out[#out + 1] = "█ completed  ▓ failed  ░ cancelled  ┅ waiting or paused  ┄ waited  ▚ cache hit"
  return table.concat(out, "\n") .. "\n"
end


-- {======================================================
-- --json
-- =======================================================

local function copy(t)
  local c = {}
  for k, v in next, t do c[k] = v end
  return c
end

-- A run's fields for JSON: a copy, without an ended_ms of 0, with
-- duration_ms once it has ended.
local function run_record(r)
  local c = copy(r)
  c.ended_ms = ended(r)
  if c.ended_ms and r.started_ms then c.duration_ms = c.ended_ms - r.started_ms end
  return c
end

--- The runs for `sluice runs --json`: an array (core.array_mt) of copies of
--- the rows, each with run_id, pipeline, status, started_ms and, once
--- ended, ended_ms and duration_ms, plus whatever else the row holds.
function M.runs_json(rows)
  local list = setmetatable({}, core.array_mt)
  for i, r in ipairs(rows) do list[i] = run_record(r) end
  return list
end

--- One run for `sluice show --json`: the run's fields as in runs_json, and
--- steps, an array of copies of the step records.
function M.run_json(run, steps)
  local r = run_record(run)
  local list = setmetatable({}, core.array_mt)
  for i, s in ipairs(steps or {}) do list[i] = copy(s) end
  r.steps = list
  return r
end

-- }======================================================

M.error_text = error_text

return M
