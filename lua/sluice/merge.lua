-- Merging run state back after concurrent branches. Each branch of a
-- parallel, item of a map, route of a router or node of a dag works on its
-- own copy of ctx.state, taken from the state of the step that started it
-- (the base). When the construct succeeds, what each successful branch
-- changed is brought back into that step's state by a merge strategy.
--
-- A branch's changes are the top-level keys whose value differs from the
-- base, compared deeply, including keys it removed.

local M = {}

local next, type, rawget, rawset, tostring = next, type, rawget, rawset, tostring

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

--- The keys whose value in st differs from base, in no particular order.
function M.changes(base, st)
  local keys, n = {}, 0
  for k, v in next, st do
    if not equal(v, rawget(base, k)) then n = n + 1; keys[n] = k end
  end
  for k in next, base do
    if rawget(st, k) == nil then n = n + 1; keys[n] = k end
  end
  return keys, n
end

-- A label as it reads in a message: 'name' for a string, 3 for an index.
local function show(label)
  if type(label) == "string" then return "'" .. label .. "'" end
  return tostring(label)
end
M.show = show

--- The strategies a construct's merge option may name.
M.strategies = { error_on_conflict = true, last_wins = true }

--- Maps each branch's label to its state, for a merge function: labels is
--- an array of labels by position, or nil when the position is the label.
function M.by_label(states, n, labels)
  local by_label = {}
  for i = 1, n do
    local st = states[i]
    if st ~= nil then by_label[labels and labels[i] or i] = st end
  end
  return by_label
end

--[[
Merges the states of finished branches into base, the state they all
copied from, changing it in place, by a named strategy.

  states    map from branch position (1..n) to that branch's state; holds
            only the successful branches that touched ctx.state
  n         how many branches there were, for their declaration order
  labels    array of branch labels by position (names), or nil when the
            label is the position itself (map items)
  strategy  "error_on_conflict" (nil means this) or "last_wins"
  what      "parallel 'p' (defined at f:l)", the start of error messages
  nouns     what the branches are called in messages ("branches", "items")

Under "error_on_conflict", raises a message when two branches changed one
key to different values, and leaves base as it was.
]]
function M.apply(base, states, n, labels, strategy, what, nouns)
  -- Collect every branch's changes against the untouched base first: a
  -- branch's changes must not be measured against another's.
  local value_of, setter_of = {}, {}
  local order, norder = {}, 0
  local last_wins = strategy == "last_wins"
  for i = 1, n do
    local st = states[i]
    if st ~= nil then
      local keys, nk = M.changes(base, st)
      for j = 1, nk do
        local k = keys[j]
        local v = rawget(st, k)
        local prev = setter_of[k]
        if prev == nil then
          norder = norder + 1
          order[norder] = k
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
  end
  for j = 1, norder do
    local k = order[j]
    rawset(base, k, value_of[k])
  end
end

return M
