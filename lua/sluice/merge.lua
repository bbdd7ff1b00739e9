-- Merging run state back after concurrent branches. Each branch of a
-- parallel, item of a map, route of a router or node of a dag works on its
-- own view of ctx.state over the state of the step that started it (the
-- base). When the construct succeeds, what each successful branch changed
-- is brought back into that step's state by a merge strategy.
--
-- A branch's changes are the top-level keys whose value differs from the
-- base, compared deeply, including keys it removed; the engine works them
-- out when the branch ends (engine/state.c).

local core = require "sluice.core"

local M = {}

local next, type, rawget, tostring, sort = next, type, rawget, tostring, table.sort

-- Marks a removed key in a changes table, and, as a key, changes that
-- replace the whole state.
local DELETED = core.state_deleted
M.DELETED = DELETED

-- Are a and b the same value, comparing tables by content (raw, without
-- metamethods)? seen maps each table of a already compared to its
-- partner in b, so shared and cyclic tables terminate.
local function equal(a, b, seen)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then
    return a ~= a and b ~= b           -- NaN equals NaN here
  end
  seen = seen or {}
  if seen[a] == b then return true end
  seen[a] = b
  for k, v in next, a do
    local w = rawget(b, k)
    if w == nil or not equal(v, w, seen) then return false end
  end
  for k in next, b do
    if rawget(a, k) == nil then return false end
  end
  return true
end
M.equal = equal

-- A label as it reads in a message: 'name' for a string, 3 for an index.
local function show(label)
  if type(label) == "string" then return "'" .. label .. "'" end
  return tostring(label)
end
M.show = show

--- The strategies a construct's merge option may name.
M.strategies = { error_on_conflict = true, last_wins = true }

--- Maps each branch's label to its value in t (position -> value), for a
--- merge function: labels is an array of labels by position, or nil when
--- the position is the label.
function M.by_label(t, n, labels)
  local by_label = {}
  for i = 1, n do
    local v = t[i]
    if v ~= nil then by_label[labels and labels[i] or i] = v end
  end
  return by_label
end

-- The changes of a branch that replaced the whole state (ctx.state = t),
-- as changes against base: every key it holds that differs, and every key
-- of base it does not hold, removed.
local function explicit(base, changes)
  local out = {}
  for k, v in next, changes do
    if k ~= DELETED then out[k] = v end
  end
  for k in pairs(base) do
    if out[k] == nil then out[k] = DELETED end
  end
  return out
end

--[[
Merges the changes of finished branches into base, the state they all
started from (the construct's own ctx.state), by a named strategy.

  base      the construct's ctx.state, changed in place
  states    map from branch position (1..n) to {changes, seq} of the
            successful branches that touched ctx.state: what the branch
            changed (nil for nothing) and the order it ended in
  n         how many branches there were, for their declaration order
  labels    array of branch labels by position (names), or nil when the
            label is the position itself (map items)
  strategy  "error_on_conflict" (nil means this) or "last_wins"
  what      "parallel 'p' (defined at f:l)", the start of error messages
  nouns     what the branches are called in messages ("branches", "items")

Under "error_on_conflict", raises a message when two branches changed one
key to different values, and leaves base as it was. Under "last_wins", the
branch that ended last wins a key.
]]
function M.apply(base, states, n, labels, strategy, what, nouns)
  local last_wins = strategy == "last_wins"
  local order, norder = {}, 0
  for i = 1, n do
    if states[i] ~= nil and states[i].changes ~= nil then
      norder = norder + 1
      order[norder] = i
    end
  end
  if last_wins then
    sort(order, function(a, b) return states[a].seq < states[b].seq end)
  end
  -- Collect every branch's changes first: base changes only once all agree.
  local value_of, setter_of = {}, {}
  local keys, nkeys = {}, 0
  for j = 1, norder do
    local i = order[j]
    local changes = states[i].changes
    if changes[DELETED] then changes = explicit(base, changes) end
    for k, v in next, changes do
      local prev = setter_of[k]
      if prev == nil then
        nkeys = nkeys + 1
        keys[nkeys] = k
      elseif not last_wins and not equal(value_of[k], v) then
        local a, b = labels and labels[prev] or prev, labels and labels[i] or i
        error(("%s: %s %s and %s both changed state key %s to different values "
          .. "(set merge = \"last_wins\" or a merge function to allow it)"):format(
          what, nouns, show(a), show(b), show(k)), 0)
      end
      setter_of[k] = i
      value_of[k] = v
    end
  end
  for j = 1, nkeys do
    local k = keys[j]
    local v = value_of[k]
    if v == DELETED then v = nil end
    base[k] = v
  end
end

return M
