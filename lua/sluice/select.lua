-- Choosing and composing: the select kind, which runs the one of several
-- alternative steps that past executions rank best, and sl.compose, which
-- merges the outputs of several branches into one response.
--
--   sl.select{ name, candidates = {step, ...}, by = "latency" | "cost" |
--              "errors" | function(stats, ctx), explore = p, window = n }
--
-- The ranking reads the store: how each candidate did in the last `window`
-- runs of the pipeline (default 50), as ctx:step_stats gives it, kept in
-- memory for a few seconds and brought up to date with what this process
-- sees in between. A candidate with no history is tried first (in the
-- order given); with probability `explore` (default 0.05) a random one is
-- tried instead of the best, so a candidate that was slow once gets
-- another chance. The choice and why are a child step of their own
-- ("choose", its output {choice, reason, scores}, its log record the
-- reason, which `sluice show` lists): in the history, and restored on
-- resume so a resumed run runs the same candidate.

local core = require "sluice.core"

local M = {}

local dsl, is_step

-- Seconds the stats read from the store are used before they are read
-- again.
local STATS_TTL = 10

-- select step -> { at = sl.now of the read, stats = name -> stats }
local memo = setmetatable({}, { __mode = "k" })

local function empty()
  return { n = 0, ok = 0, failed = 0, cached = 0, timed = 0, total_ms = 0, cost = 0,
    tokens = 0, last_ms = 0 }
end

-- Reads the candidates' stats (from the store at most every STATS_TTL s).
local function stats_of(step, ctx)
  local m = memo[step]
  local t = core.now()
  if m == nil or t - m.at > STATS_TTL then
    local names = {}
    for i, c in ipairs(step.candidates) do names[i] = c.name end
    local read = ctx:step_stats(names, { runs = step.window or 50 })
    m = { at = t, stats = {} }
    for _, name in ipairs(names) do m.stats[name] = read[name] or empty() end
    memo[step] = m
  end
  return m.stats
end

-- What this process saw of a candidate, until the next read.
local function observe(step, name, ok, ms)
  local m = memo[step]
  if m == nil then return end
  local s = m.stats[name]
  s.n = s.n + 1
  if ok then s.ok = s.ok + 1 else s.failed = s.failed + 1 end
  if ms then s.timed = s.timed + 1; s.total_ms = s.total_ms + ms end
end

local function mean(total, n) return n > 0 and total / n or math.huge end

-- Each ranking: a score (lower is better) and how to say it.
local rankings = {
  latency = function(s) return mean(s.total_ms, s.timed),
    ("mean latency %.1f ms over %d executions"):format(mean(s.total_ms, s.timed), s.timed) end,
  cost = function(s) return mean(s.cost, s.n),
    ("mean cost $%.6f over %d executions"):format(mean(s.cost, s.n), s.n) end,
  errors = function(s)
    local rate = s.n > 0 and s.failed / s.n or 1
    -- Ties are broken by latency.
    return rate + mean(s.total_ms, s.timed) * 1e-12,
      ("error rate %.0f%% (%d of %d failed)"):format(rate * 100, s.failed, s.n)
  end,
}
M.rankings = rankings

-- The choice: {choice, reason, scores}.
local function choose(step, ctx)
  local cands = step.candidates
  local stats = stats_of(step, ctx)
  for _, c in ipairs(cands) do
    if stats[c.name].n == 0 then
      return { choice = c.name, reason = "no history yet: trying it" }
    end
  end
  if type(step.by) ~= "string" then
    local pick = step.by(stats, ctx)
    if is_step(pick) then pick = pick.name end
    for _, c in ipairs(cands) do
      if c.name == pick then return { choice = pick, reason = "chosen by its by function" } end
    end
    local names = {}
    for i, c in ipairs(cands) do names[i] = c.name end
    error(setmetatable({ kind = "error", step = step.name, where = step.where,
      message = ("select '%s': its by function returned %s, which is not one of its candidates "
        .. "(%s)"):format(step.name, tostring(pick), table.concat(names, ", ")) }, core.error_mt), 0)
  end
  local rank = rankings[step.by]
  local best, best_score, best_why
  local scores = {}
  for _, c in ipairs(cands) do
    local score, why = rank(stats[c.name])
    scores[c.name] = why
    if best == nil or score < best_score then best, best_score, best_why = c.name, score, why end
  end
  local explore = step.explore or 0.05
  if explore > 0 and #cands > 1 and math.random() < explore then
    local other = cands[math.random(#cands)].name
    if other ~= best then
      return { choice = other, reason = ("exploring (p = %g) instead of '%s' (%s)"):format(
        explore, best, best_why), scores = scores }
    end
  end
  return { choice = best, reason = ("best %s: %s"):format(step.by, best_why), scores = scores }
end

-- select step -> its "choose" child step.
local choosers = setmetatable({}, { __mode = "k" })

local function run_select(step, input, ctx)
  local decided = ctx:run(choosers[step], { candidates = #step.candidates, by =
    type(step.by) == "string" and step.by or "function" }, nil)
  local cand
  for _, c in ipairs(step.candidates) do
    if c.name == decided.choice then cand = c end
  end
  if cand == nil then
    -- A resumed run whose pipeline lost the candidate it chose.
    error(setmetatable({ kind = "error", step = step.name, where = step.where,
      message = ("select '%s' chose '%s', which is no longer one of its candidates"):format(
        step.name, tostring(decided.choice)) }, core.error_mt), 0)
  end
  local t0 = core.now()
  local ok, out = pcall(ctx.run, ctx, cand, input, nil)
  observe(step, cand.name, ok, (core.now() - t0) * 1000)
  if not ok then error(out, 0) end
  return out
end

local function check_select(s, w)
  local c = s.candidates
  if type(c) ~= "table" or #c == 0 then
    dsl.fail(w, "select '%s': option 'candidates' is required (a non-empty list of steps)", s.name)
  end
  local seen = {}
  for i, x in ipairs(c) do
    if not is_step(x) then
      dsl.fail(w, "select '%s': candidate #%d must be a step, got %s", s.name, i, type(x))
    end
    if seen[x.name] then
      dsl.fail(w, "select '%s': two candidates are named '%s'; names tell them apart in the "
        .. "history", s.name, x.name)
    end
    seen[x.name] = true
  end
  local by = s.by
  if by == nil then
    dsl.fail(w, "select '%s': option 'by' is required (\"latency\", \"cost\", \"errors\" or a "
      .. "function(stats, ctx))", s.name)
  end
  if type(by) ~= "function" and not rankings[by] then
    dsl.fail(w, "select '%s': option 'by' must be \"latency\", \"cost\", \"errors\" or a "
      .. "function(stats, ctx), got %s%s", s.name, type(by) == "string" and ('"' .. by .. '"')
      or type(by), type(by) == "string" and dsl.suggest(by, rankings) or "")
  end
  local e = s.explore
  if e ~= nil and (type(e) ~= "number" or not (e >= 0 and e <= 1)) then
    dsl.fail(w, "select '%s': option 'explore' must be a probability from 0 to 1, got %s",
      s.name, tostring(e))
  end
  local win = s.window
  if win ~= nil and (math.type(win) ~= "integer" or win < 1 or win > 1000) then
    dsl.fail(w, "select '%s': option 'window' must be a whole number of runs from 1 to 1000, "
      .. "got %s", s.name, tostring(win))
  end
  choosers[s] = dsl.build("step", { name = "choose", run = function(_, ctx)
    local c = choose(s, ctx)
    -- The reason is kept with the execution, where `sluice show` lists it.
    ctx:log("info", ("chose '%s': %s"):format(c.choice, c.reason),
      { choice = c.choice, reason = c.reason })
    return c
  end }, 2)
end

-- Compose.

-- A reference's identity: its URL without fragment, trailing slash or
-- the case of its scheme and host.
local function ref_key(url)
  local u = url:gsub("#.*$", ""):gsub("/+$", "")
  local scheme, host, path = u:match("^(%a[%w+.-]*://)([^/]*)(.*)$")
  if scheme then return scheme:lower() .. host:lower() .. path end
  return u
end

--- sl.compose(parts[, opts]): one response from the outputs of several
--- branches. parts: a list, or a table keyed by branch name (taken in
--- sorted order, or opts.order); each part is a string, or a table with
--- text and references = {{url, title}, ...} (a part may be nil: a branch
--- that gave nothing). Returns {text, references}: the texts joined by
--- opts.separator (default a blank line), the references in first-seen
--- order with duplicates (same URL, compared without fragment, trailing
--- slash or case of host) merged, keeping the first non-empty title.
function M.compose(parts, opts)
  opts = opts or {}
  if type(parts) ~= "table" then
    error(("sl.compose expects a list or table of branch outputs, got %s"):format(type(parts)), 2)
  end
  local list = {}
  if #parts > 0 or next(parts) == nil then
    for i = 1, #parts do list[#list + 1] = parts[i] end
  else
    local names = opts.order
    if names == nil then
      names = {}
      for k in pairs(parts) do names[#names + 1] = k end
      table.sort(names, function(a, b) return tostring(a) < tostring(b) end)
    end
    for _, k in ipairs(names) do list[#list + 1] = parts[k] end
  end
  local texts, refs, index = {}, {}, {}
  for i, p in ipairs(list) do
    local t, r
    if type(p) == "string" then t = p
    elseif type(p) == "table" then t, r = p.text, p.references
    elseif p ~= nil and p ~= core.null then
      error(("sl.compose: part #%d must be a string or a table {text, references}, got %s"):format(
        i, type(p)), 2)
    end
    if t ~= nil and t ~= core.null and tostring(t):match("%S") then texts[#texts + 1] = tostring(t) end
    for _, ref in ipairs(type(r) == "table" and r or {}) do
      local url = type(ref) == "table" and ref.url or ref
      if type(url) == "string" and url ~= "" then
        local k = ref_key(url)
        local title = type(ref) == "table" and type(ref.title) == "string" and ref.title ~= ""
          and ref.title or nil
        local have = index[k]
        if have == nil then
          refs[#refs + 1] = { url = url, title = title }
          index[k] = refs[#refs]
        elseif have.title == nil then
          have.title = title
        end
      end
    end
  end
  return { text = table.concat(texts, opts.separator or "\n\n"),
    references = setmetatable(refs, core.array_mt) }
end

--- Adds sl.select and sl.compose and registers the select kind.
function M.install(sl, d)
  dsl = d
  is_step = d.is_step
  local check = d.check
  sl.builtin("select", run_select, {
    options = { candidates = check.any, by = check.any, explore = check.any, window = check.any },
    check = check_select,
  })
  function sl.select(spec) local s = d.build("select", spec, 2); return s end
  sl.compose = M.compose
end

return M
