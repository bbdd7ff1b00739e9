-- The control-flow kinds written in Lua: parallel, map, loop, branch,
-- router and dag (import has its own module, import.lua). Each is an entry of the policy table built on
-- ctx:run, ctx:spawn, ctx:await and ctx:cancel like any user kind, plus a
-- constructor (sl.parallel{...}) whose checks run where the step is
-- written, so a mistake is reported at the user's file:line.
--
-- Concurrent children (branches, items, routes, nodes) each work on their
-- own copy of ctx.state, taken from the construct's state; what they change
-- is merged back when the construct succeeds (see merge.lua).

local core = require "sluice.core"
local merge = require "sluice.merge"

local M = {}

local array_mt, error_mt, null = core.array_mt, core.error_mt, core.null
local setmetatable, pcall, type, next, tostring, error =
  setmetatable, pcall, type, next, tostring, error
local sort, concat = table.sort, table.concat

-- Plans: what a construct works out from its step once (sorted names, child
-- lists, dependency counts), cached per step table. Steps do not change
-- after they are built, and a reload makes new ones.
local plans = setmetatable({}, { __mode = "k" })

-- "map 'm' (defined at f.lua:3)": how runtime messages name a construct.
local function label(step)
  return ("%s '%s' (defined at %s)"):format(step.kind, tostring(step.name),
    tostring(step.where))
end

-- A value as it reads in a message.
local function show(v)
  if type(v) == "string" then return "'" .. v .. "'" end
  if type(v) == "number" or type(v) == "boolean" or v == nil then return tostring(v) end
  return "a " .. type(v)
end

-- Raises an error of the construct itself, kind "error".
local function fail(step, fmt, ...)
  error(setmetatable({ kind = "error", message = label(step) .. ": " .. fmt:format(...) },
    error_mt))
end

-- kind, message and where of a raised value, however it was raised: the
-- engine's own reading of it (engine/base/error.c).
local normalize_error = core.normalize_error
local function error_parts(e)
  local n = normalize_error(e)
  return n.kind or "error", tostring(n.message), n.where
end

-- Calls a function the user gave a construct (over, on, choose, ...); its
-- error is raised again naming the construct, keeping where it was raised.
local function call(step, what, fn, a, b, c)
  local ok, r = pcall(fn, a, b, c)
  if ok then return r end
  local kind, msg, where = error_parts(r)
  error(setmetatable({ kind = kind, where = where,
    message = ("%s: %s raised: %s"):format(label(step), what, msg) }, error_mt))
end

-- The error of a construct whose child failed: the child's kind, step and
-- position, with a message naming the construct and which child it was.
local function child_failed(step, noun, name, err)
  local kind, msg, where = error_parts(err)
  return setmetatable({ kind = kind, where = where, step = type(err) == "table" and err.step or nil,
    message = ("%s '%s': %s %s failed: %s"):format(step.kind, tostring(step.name), noun,
      show(name), msg) }, error_mt)
end

-- The error of a construct whose children were all waited for and some
-- failed: lists every failure, in declaration order.
local function children_failed(step, noun, nouns, names, n, errs)
  local parts, nbad, kind = {}, 0, nil
  for i = 1, n do
    local e = errs[i]
    if e ~= nil then
      local k, msg = error_parts(e)
      nbad = nbad + 1
      parts[nbad] = ("%s %s: %s"):format(noun, show(names and names[i] or i), msg)
      if kind == nil then kind = k elseif kind ~= k then kind = "error" end
    end
  end
  return setmetatable({ kind = kind,
    message = ("%s '%s': %d of %d %s failed: %s"):format(step.kind, tostring(step.name),
      nbad, n, nouns, concat(parts, "; ")) }, error_mt)
end

--[[
The ready queue every concurrent construct runs on. Children start as they
become ready, at most limit at a time, and each is handed to ended as it
ends, in the order they end; ended may make more ready. The engine queues
the children that end (core.collect, core.next_done), so handling one costs
the same however many are running, and memory follows the running ones.

  take()        -> tag, step, input, key of the next child ready to start,
                   or nil when none is ready now
  ended(tag, h) -> nil to go on, or a reason: the running children are
                   cancelled with it and drive returns tag
Returns nil once every child started has ended and none is ready.
]]
local collect, next_done = core.collect, core.next_done
local function drive(ctx, limit, take, ended)
  local spawn, cancel = ctx.spawn, ctx.cancel
  collect(ctx)
  local running, nrunning = {}, 0       -- handle -> tag
  while true do
    while nrunning < limit do
      local tag, child, inp, key = take()
      if tag == nil then break end
      local h = spawn(ctx, child, inp, key)
      running[h] = tag
      nrunning = nrunning + 1
      -- A child that ended at once is handled before another starts: after
      -- a failure nothing more does.
      if h.done then break end
    end
    if nrunning == 0 then return nil end
    local h = next_done(ctx)
    local tag = running[h]
    if tag == nil then error("the ready queue lost track of its children", 0) end
    running[h] = nil
    nrunning = nrunning - 1
    local why = ended(tag, h)
    if why ~= nil then
      for r in next, running do cancel(ctx, r, why) end
      return tag
    end
  end
end

-- What a successful child changed in the state, for merge_back.
local function keep_state(states, j, h)
  if h.state ~= nil then
    states = states or {}
    states[j] = { view = h.state, changes = h.changes, seq = h.seq }
  end
  return states
end

--[[
Runs n children concurrently, at most limit (nil or 0: all) at a time, and
waits for them. Child i is children[i] (or body for all) on inputs[i] (or
input for all), keyed keys[i] (or i) in the history. Without settle_all,
the first failure cancels the children still running and nothing more
starts. Returns:
  out     outputs by position (an array)
  states  position -> {view, changes, seq} of the successful children that
          touched ctx.state (their view of it, what they changed, and when
          they ended), or nil when none did
  failed  the position of the failure that stopped it (without settle_all)
  errs    position -> error of every child that failed, or nil
]]
local function fan(ctx, n, children, body, inputs, input, keys, limit, settle_all, noun)
  local out = setmetatable({}, array_mt)
  local states, errs
  if limit == nil or limit == 0 or limit > n then limit = n end
  local i = 0
  local failed = drive(ctx, limit, function()
    if i >= n then return nil end
    i = i + 1
    local inp = input
    if inputs then inp = inputs[i] end
    return i, children and children[i] or body, inp, keys and keys[i] or i
  end, function(j, h)
    if h.ok then
      out[j] = h.output
      states = keep_state(states, j, h)
      return nil
    end
    errs = errs or {}
    errs[j] = h.error
    if not settle_all then
      return ("cancelled because %s %s failed"):format(noun, show(keys and keys[j] or j))
    end
  end)
  return out, states, failed, errs
end

-- Merges the children's states into the construct's own (base, its
-- ctx.state read before any child started).
local function merge_back(step, ctx, base, states, n, labels, nouns)
  local strategy = step.merge
  if strategy == nil or type(strategy) == "string" then
    local ok, e = pcall(merge.apply, base, states, n, labels, strategy, label(step), nouns)
    if not ok then
      error(setmetatable({ kind = "error", message = tostring(e) }, error_mt))
    end
    return
  end
  local views = {}
  for j, st in next, states do views[j] = st.view end
  local result = call(step, "its merge function", strategy, base,
    merge.by_label(views, n, labels))
  if result ~= nil then
    if type(result) ~= "table" then
      fail(step, "its merge function must return a table or nil, got %s", type(result))
    end
    ctx.state = result
  end
end

-- Ends a construct whose children ran through fan: raises what failed.
-- When every child ran to its end (all_settled), the error carries what
-- the others produced: partial, shaped as the construct's output would be,
-- and errors, each failure by branch name or item position, so a fallback
-- can use the part that succeeded (sl.fallbacks.partial()).
local function check_fan(step, noun, nouns, names, n, failed, errs, partial)
  if failed then
    error(child_failed(step, noun, names and names[failed] or failed, errs[failed]))
  end
  if errs then
    local e = children_failed(step, noun, nouns, names, n, errs)
    local by = {}
    for i = 1, n do
      if errs[i] ~= nil then by[names and names[i] or i] = errs[i] end
    end
    e.partial, e.errors = partial, by
    error(e)
  end
end

-- Sorted names and the steps under them, of a table of named steps.
local function named(t)
  local names, n = {}, 0
  for k in next, t do n = n + 1; names[n] = k end
  sort(names)
  local steps = {}
  for i = 1, n do steps[i] = t[names[i]] end
  return { n = n, names = names, steps = steps }
end

-- The handlers.


-- Runs named children concurrently on the same input (parallel, router):
-- fails as the construct, keys the outputs by name, merges their states.
local function fan_named(step, ctx, input, children, names, n, limit, settle_all, noun, nouns)
  local base = ctx.state
  local out, states, failed, errs = fan(ctx, n, children, nil, nil, input, names, limit,
    settle_all, noun)
  local result = {}
  for i = 1, n do result[names[i]] = out[i] end
  check_fan(step, noun, nouns, names, n, failed, errs, result)
  if states then merge_back(step, ctx, base, states, n, names, nouns) end
  return result
end

local function run_parallel(step, input, ctx)
  local plan = plans[step]
  if plan == nil then
    plan = named(step.branches)
    plans[step] = plan
  end
  local n, names = plan.n, plan.names
  return fan_named(step, ctx, input, plan.steps, names, n, step.limit,
    step.on_failure == "all_settled", "branch", "branches")
end

-- The number of items of a list: a table whose keys are exactly 1..n.
-- Returns nil and why when t is not one.
local function list_length(t)
  if type(t) ~= "table" then return nil, "a " .. type(t) end
  local n, count = #t, 0
  for k in next, t do
    if math.type(k) ~= "integer" or k < 1 or k > n then
      return nil, ("a table with key %s, which is not a list index"):format(show(k))
    end
    count = count + 1
  end
  if count ~= n then return nil, "a list with holes" end
  return n
end

local function run_map(step, input, ctx)
  local items = input
  if step.over ~= nil then items = call(step, "over", step.over, input, ctx) end
  local n, why = list_length(items)
  if n == nil then
    if step.over ~= nil then
      fail(step, "over must return a list (a table with keys 1..n), got %s", why)
    end
    fail(step, "its input must be a list (a table with keys 1..n) when it has no over, got %s", why)
  end
  if n == 0 then return setmetatable({}, array_mt) end
  local base = ctx.state
  local out, states, failed, errs = fan(ctx, n, nil, step.body, items, nil, nil,
    step.limit, step.on_failure == "all_settled", "item")
  -- One entry per item: an item with no output holds null, so the list
  -- keeps its length (and its JSON its positions).
  for i = 1, n do
    if out[i] == nil then out[i] = null end
  end
  check_fan(step, "item", "items", nil, n, failed, errs, out)
  if states then merge_back(step, ctx, base, states, n, nil, "items") end
  return out
end

local function run_loop(step, input, ctx)
  local run, body, stop = ctx.run, step.body, step.stop_when
  local max = step.max or 10
  local value = input
  for i = 1, max do
    value = run(ctx, body, value, i)
    if stop ~= nil and call(step, "stop_when", stop, value, ctx, i) then return value end
  end
  if stop ~= nil and step.on_max ~= "return" then
    fail(step, "reached max = %d iterations without stop_when returning true "
      .. "(set on_max = \"return\" to return the last output instead)", max)
  end
  return value
end

-- The sorted keys of t, as they read in a message.
local function key_list(t)
  local keys = {}
  for k in next, t do keys[#keys + 1] = k end
  sort(keys, function(a, b)
    if type(a) == type(b) then return a < b end
    return type(a) == "number"
  end)
  for i = 1, #keys do keys[i] = tostring(keys[i]) end
  return concat(keys, ", ")
end

local function run_branch(step, input, ctx)
  local key = call(step, "on", step.on, input, ctx)
  local case = nil
  if key ~= nil and key == key then case = step.cases[key] end
  local kt = type(key)
  local hkey = (kt == "string" or kt == "number") and key or nil
  if case ~= nil then return ctx:run(case, input, hkey) end
  if step.default ~= nil then return ctx:run(step.default, input, hkey) end
  fail(step, "on returned %s, which is not one of its cases (%s) and it has no default",
    show(key), key_list(step.cases))
end

local function run_router(step, input, ctx)
  local chosen = call(step, "choose", step.choose, input, ctx)
  if type(chosen) == "string" then chosen = { chosen } end
  local n, why = list_length(chosen)
  if n == nil then
    fail(step, "choose must return a list of route names, got %s", why)
  end
  local routes = step.routes
  local names, seen = {}, {}
  for i = 1, n do
    local r = chosen[i]
    if type(r) ~= "string" or routes[r] == nil then
      fail(step, "choose returned %s, which is not one of its routes (%s)", show(r),
        key_list(routes))
    end
    if seen[r] then fail(step, "choose returned route '%s' twice", r) end
    seen[r] = true
    names[i] = r
  end
  if n == 0 then return {} end
  sort(names)
  local children = {}
  for i = 1, n do children[i] = routes[names[i]] end
  return fan_named(step, ctx, input, children, names, n, nil, false, "route", "routes")
end

-- A dag's plan: its nodes by sorted name, for each the positions of the
-- nodes it comes after and of those that come after it.
local function dag_plan(step)
  local plan = named(step.nodes)
  local pos = {}
  for i = 1, plan.n do pos[plan.names[i]] = i end
  local deps, dependents, indegree = {}, {}, {}
  for i = 1, plan.n do deps[i], dependents[i], indegree[i] = {}, {}, 0 end
  for node, list in next, step.after or {} do
    if type(list) == "string" then list = { list } end
    local i = pos[node]
    for _, d in ipairs(list) do
      local j = pos[d]
      deps[i][#deps[i] + 1] = j
      dependents[j][#dependents[j] + 1] = i
      indegree[i] = indegree[i] + 1
    end
  end
  for i = 1, plan.n do
    sort(deps[i])
    sort(dependents[i])
  end
  plan.deps, plan.dependents, plan.indegree = deps, dependents, indegree
  return plan
end

--[[
Runs a dag: a node starts once every node it comes after has ended, at most
limit nodes at a time. Roots get the dag's input, other nodes a table of
their dependencies' outputs by name. A failure cancels the running nodes
and nothing after them starts.
]]
local function run_dag(step, input, ctx)
  local plan = plans[step]
  if plan == nil then
    plan = dag_plan(step)
    plans[step] = plan
  end
  local n, names, nodes = plan.n, plan.names, plan.steps
  local deps, dependents = plan.deps, plan.dependents
  local limit = step.limit
  if limit == nil or limit == 0 then limit = n end
  local base = ctx.state
  local waiting = {}                    -- dependencies not yet ended, by node
  local ready, rh, rt = {}, 1, 0        -- nodes that may start, in order
  for i = 1, n do
    waiting[i] = plan.indegree[i]
    if waiting[i] == 0 then rt = rt + 1; ready[rt] = i end
  end
  local out, states, failed_err = {}, nil, nil
  local failed = drive(ctx, limit, function()
    if rh > rt then return nil end
    local j = ready[rh]
    ready[rh] = nil
    rh = rh + 1
    local inp = input
    local dj = deps[j]
    if #dj > 0 then
      inp = {}
      for k = 1, #dj do inp[names[dj[k]]] = out[names[dj[k]]] end
    end
    return j, nodes[j], inp, names[j]
  end, function(j, h)
    if not h.ok then
      failed_err = h.error
      return ("cancelled because node '%s' failed"):format(names[j])
    end
    out[names[j]] = h.output
    states = keep_state(states, j, h)
    local after = dependents[j]
    for k = 1, #after do
      local d = after[k]
      waiting[d] = waiting[d] - 1
      if waiting[d] == 0 then rt = rt + 1; ready[rt] = d end
    end
  end)
  if failed then error(child_failed(step, "node", names[failed], failed_err)) end
  if states then merge_back(step, ctx, base, states, n, names, "nodes") end
  return out
end

-- Definition-time checks. Each raises with dsl.fail(where, ...), so the
-- message starts with the user's file:line and names the construct.

local dsl            -- set by install
local is_step

local function describe(v)
  if is_step(v) then return "a step" end
  if type(v) == "table" then return "a plain table" end
  return type(v)
end

-- Is v a whole number (an integer, or a float such as 2.0) of at least min?
local function whole(v, min)
  local t = math.type(v)
  return (t == "integer" or (t == "float" and v % 1 == 0)) and v >= min
end

local function positive_integer(v)
  return whole(v, 1), "a positive integer"
end

-- A concurrency limit: how many children may run at once, 0 for no limit.
local function a_limit(v)
  return whole(v, 0), "a non-negative integer (0 for no limit)"
end

local function a_table(v)
  return type(v) == "table" and not is_step(v), "a table"
end

local function a_step(v)
  return is_step(v), "a step (made by sl.step or another constructor)"
end

-- Checks the option key of s is a non-empty table of steps with string names.
local function check_named_steps(s, w, key, noun)
  local t = s[key]
  if t == nil then
    dsl.fail(w, "%s '%s' needs %s (%s = { name = step, ... })", s.kind, s.name, key, key)
  end
  local n = 0
  for k, v in next, t do
    if type(k) ~= "string" then
      dsl.fail(w, "%s '%s': %s must be keyed by name, got key %s (write %s = { name = step, ... })",
        s.kind, s.name, key, show(k), key)
    end
    if not is_step(v) then
      dsl.fail(w, "%s '%s': %s '%s' must be a step, got %s", s.kind, s.name, noun, k, describe(v))
    end
    n = n + 1
  end
  if n == 0 then dsl.fail(w, "%s '%s' has no %s", s.kind, s.name, key) end
end

-- Makes a whole float option (limit = 2.0) an integer, so counts and
-- history keys read 2, not 2.0.
local function integral(s, key)
  if s[key] ~= nil then s[key] = math.tointeger(s[key]) or s[key] end
end

local function check_required(s, w, key, what)
  if s[key] == nil then dsl.fail(w, "%s '%s' needs %s", s.kind, s.name, what) end
end

local function check_choice(s, w, key, choices)
  local v = s[key]
  if v == nil then return end
  for i = 1, #choices do if v == choices[i] then return end end
  local quoted = {}
  for i = 1, #choices do quoted[i] = '"' .. choices[i] .. '"' end
  dsl.fail(w, "%s '%s': option '%s' must be %s, got %s", s.kind, s.name, key,
    concat(quoted, " or "), type(v) == "string" and ('"' .. v .. '"') or type(v))
end

local function check_merge(s, w)
  local m = s.merge
  if m == nil or dsl.check.callable(m) then return end
  if type(m) == "string" and merge.strategies[m] then return end
  dsl.fail(w, "%s '%s': option 'merge' must be \"error_on_conflict\", \"last_wins\" "
    .. "or a function(state, branch_states), got %s", s.kind, s.name,
    type(m) == "string" and ('"' .. m .. '"') or type(m))
end

local on_failure = { "fail_fast", "all_settled" }

local function check_parallel(s, w)
  check_named_steps(s, w, "branches", "branch")
  integral(s, "limit")
  check_choice(s, w, "on_failure", on_failure)
  check_merge(s, w)
end

local function check_map(s, w)
  check_required(s, w, "body", "a body (body = step)")
  integral(s, "limit")
  check_choice(s, w, "on_failure", on_failure)
  check_merge(s, w)
end

local function check_loop(s, w)
  check_required(s, w, "body", "a body (body = step)")
  if s.stop_when == nil and s.max == nil then
    dsl.fail(w, "loop '%s' needs stop_when or max (it would never stop)", s.name)
  end
  integral(s, "max")
  check_choice(s, w, "on_max", { "error", "return" })
end

local function check_branch(s, w)
  check_required(s, w, "on", "an on function (on = function(input, ctx) return key end)")
  local cases = s.cases
  if cases == nil then
    dsl.fail(w, "branch '%s' needs cases (cases = { key = step, ... })", s.name)
  end
  local n = 0
  for k, v in next, cases do
    if type(k) ~= "string" and type(k) ~= "number" then
      dsl.fail(w, "branch '%s': case keys must be strings or numbers, got %s", s.name, type(k))
    end
    if not is_step(v) then
      dsl.fail(w, "branch '%s': case %s must be a step, got %s", s.name, show(k), describe(v))
    end
    n = n + 1
  end
  if n == 0 then dsl.fail(w, "branch '%s' has no cases", s.name) end
end

local function check_router(s, w)
  check_required(s, w, "choose",
    "a choose function (choose = function(input, ctx) return {route, ...} end)")
  check_named_steps(s, w, "routes", "route")
  check_merge(s, w)
end

-- Finds a cycle among a dag's nodes: returns it as a list of names, each
-- running after the one before it, the first repeated at the end.
local function find_cycle(names, dependents)
  local color, path = {}, {}
  local function visit(u)
    color[u] = 1
    path[#path + 1] = u
    local list = dependents[u] or {}
    for i = 1, #list do
      local v = list[i]
      if color[v] == 1 then
        local cycle = {}
        for j = 1, #path do
          if path[j] == v then
            for k = j, #path do cycle[#cycle + 1] = path[k] end
            break
          end
        end
        cycle[#cycle + 1] = v
        return cycle
      elseif color[v] == nil then
        local c = visit(v)
        if c then return c end
      end
    end
    path[#path] = nil
    color[u] = 2
  end
  for i = 1, #names do
    if color[names[i]] == nil then
      local c = visit(names[i])
      if c then return c end
    end
  end
end

local function check_dag(s, w)
  check_named_steps(s, w, "nodes", "node")
  integral(s, "limit")
  check_merge(s, w)
  local after = s.after
  if after == nil then return end
  local nodes = s.nodes
  local dependents = {}
  for node, list in next, after do
    if nodes[node] == nil then
      dsl.fail(w, "dag '%s': after names %s, which is not one of its nodes (%s)", s.name,
        show(node), key_list(nodes))
    end
    if type(list) == "string" then list = { list } end
    if type(list) ~= "table" or is_step(list) then
      dsl.fail(w, "dag '%s': after.%s must be a list of node names, got %s", s.name,
        tostring(node), describe(list))
    end
    for i = 1, #list do
      local d = list[i]
      if nodes[d] == nil then
        dsl.fail(w, "dag '%s': node '%s' comes after %s, which is not one of its nodes (%s)",
          s.name, node, show(d), key_list(nodes))
      end
      dependents[d] = dependents[d] or {}
      dependents[d][#dependents[d] + 1] = node
    end
  end
  for _, list in next, dependents do sort(list) end
  local names = {}
  for k in next, nodes do names[#names + 1] = k end
  sort(names)
  local cycle = find_cycle(names, dependents)
  if cycle then
    dsl.fail(w, "dag '%s' has a dependency cycle: %s (each node comes after the one before it)",
      s.name, concat(cycle, " -> "))
  end
end

--- Adds the constructors to sl and registers the kinds' handlers.
function M.install(sl, d)
  dsl = d
  is_step = d.is_step

  local check = d.check
  sl.builtin("parallel", run_parallel, {
    options = { branches = a_table, limit = a_limit, on_failure = check.string,
      merge = check.any },
    check = check_parallel,
  })
  sl.builtin("map", run_map, {
    options = { over = check.callable, body = a_step, limit = a_limit,
      on_failure = check.string, merge = check.any },
    check = check_map,
  })
  sl.builtin("loop", run_loop, {
    options = { body = a_step, stop_when = check.callable, max = positive_integer,
      on_max = check.string },
    check = check_loop,
  })
  sl.builtin("branch", run_branch, {
    options = { on = check.callable, cases = a_table, default = a_step },
    check = check_branch,
  })
  sl.builtin("router", run_router, {
    options = { choose = check.callable, routes = a_table, merge = check.any },
    check = check_router,
  })
  sl.builtin("dag", run_dag, {
    options = { nodes = a_table, after = a_table, limit = a_limit, merge = check.any },
    check = check_dag,
  })

  -- No tail calls: the constructor's frame must stay on the stack for the
  -- DSL to find the user's line.
  function sl.parallel(spec) local s = d.build("parallel", spec, 2); return s end
  function sl.map(spec) local s = d.build("map", spec, 2); return s end
  function sl.loop(spec) local s = d.build("loop", spec, 2); return s end
  function sl.branch(spec) local s = d.build("branch", spec, 2); return s end
  function sl.router(spec) local s = d.build("router", spec, 2); return s end
  function sl.dag(spec) local s = d.build("dag", spec, 2); return s end
end

return M
