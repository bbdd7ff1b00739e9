-- Drawing pipelines. graph.render(step, format) returns the structure under
-- a step as Mermaid flowchart text (the default) or Graphviz DOT: one node
-- per step (its kind and name), an edge from each step to each step inside
-- it, labelled with where it sits (a pipeline's position, a branch, case,
-- route or node name, body, default, fallback n), and dashed edges for a
-- dag's dependencies.
--
-- The walk is generic, like the loader's check: any field of a step that
-- holds a step, or a plain table of steps, is a child, so custom kinds draw
-- too. Keys are visited in a fixed order (positions, then names sorted), so
-- the same pipeline always gives the same text.

local core = require "sluice.core"

local M = {}

local Step = core.step_mt

local function is_step(v)
  return getmetatable(v) == Step
end

-- How a field holding one step is labelled, when not by its own name.
local field_label = { target = "imports" }

-- Kinds drawn as decisions or repetitions rather than boxes.
local shape_of = { branch = "decision", router = "decision", loop = "repeat" }

local rank = { number = 1, string = 2 }

-- Keys of t in drawing order: the positions 1..#t, then every other key
-- sorted (numbers before strings).
local function ordered_keys(t)
  local n = #t
  local keys, rest = {}, {}
  for i = 1, n do keys[i] = i end
  for k in next, t do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then rest[#rest + 1] = k end
  end
  table.sort(rest, function(a, b)
    local ra, rb = rank[type(a)] or 3, rank[type(b)] or 3
    if ra ~= rb then return ra < rb end
    if ra == 3 then return tostring(a) < tostring(b) end
    return a < b
  end)
  for i = 1, #rest do keys[n + i] = rest[i] end
  return keys
end

-- Builds the graph: nodes in the order they are first met, edges as
-- {from, to, label, dashed}, each edge listed before those below it.
local function build(root)
  local ids, nodes, edges = {}, {}, {}

  local function visit(step)
    local id = ids[step]
    if id then return id end
    id = "n" .. (#nodes + 1)
    ids[step] = id
    local text = ("%s: %s"):format(tostring(rawget(step, "kind")), tostring(rawget(step, "name")))
    if rawget(step, "kind") == "import" and type(rawget(step, "file")) == "string" then
      text = text .. " (" .. rawget(step, "file") .. ")"
    end
    nodes[#nodes + 1] = { id = id, text = text, shape = shape_of[rawget(step, "kind")] }
    for _, k in ipairs(ordered_keys(step)) do
      local v = rawget(step, k)
      if is_step(v) then
        local e = { id, nil, type(k) == "number" and tostring(k) or field_label[k] or k }
        edges[#edges + 1] = e
        e[2] = visit(v)
      elseif type(v) == "table" and getmetatable(v) == nil then
        for _, ck in ipairs(ordered_keys(v)) do
          local c = v[ck]
          if is_step(c) then
            local label = type(ck) == "number" and (tostring(k) .. " " .. ck) or tostring(ck)
            local e = { id, nil, label }
            edges[#edges + 1] = e
            e[2] = visit(c)
          end
        end
      end
    end
    -- A dag's dependencies: each node after the ones it names.
    local nodes_t, after = rawget(step, "nodes"), rawget(step, "after")
    if rawget(step, "kind") == "dag" and type(nodes_t) == "table" and type(after) == "table" then
      for _, node in ipairs(ordered_keys(after)) do
        local deps = after[node]
        if type(deps) == "string" then deps = { deps } end
        if is_step(nodes_t[node]) and type(deps) == "table" then
          local sorted = {}
          for i = 1, #deps do sorted[i] = deps[i] end
          table.sort(sorted, function(a, b) return tostring(a) < tostring(b) end)
          for _, d in ipairs(sorted) do
            if is_step(nodes_t[d]) then
              edges[#edges + 1] = { visit(nodes_t[d]), visit(nodes_t[node]), nil, true }
            end
          end
        end
      end
    end
    return id
  end

  if is_step(root) then
    visit(root)
  else
    for _, k in ipairs(ordered_keys(root)) do
      if is_step(root[k]) then visit(root[k]) end
    end
  end
  return nodes, edges
end

local function mermaid_text(s)
  return (s:gsub("[\"#<>]", { ['"'] = "#quot;", ["#"] = "#35;", ["<"] = "#lt;", [">"] = "#gt;" }))
end

local function mermaid(nodes, edges)
  local out = { "flowchart TD" }
  local open = { decision = "{", ["repeat"] = "{{" }
  local close = { decision = "}", ["repeat"] = "}}" }
  for _, n in ipairs(nodes) do
    out[#out + 1] = ('  %s%s"%s"%s'):format(n.id, open[n.shape] or "[",
      mermaid_text(n.text), close[n.shape] or "]")
  end
  for _, e in ipairs(edges) do
    if e[4] then
      out[#out + 1] = ("  %s -.-> %s"):format(e[1], e[2])
    else
      out[#out + 1] = ('  %s -->|"%s"| %s'):format(e[1], mermaid_text(e[3]), e[2])
    end
  end
  return table.concat(out, "\n") .. "\n"
end

local function dot_text(s)
  return (s:gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

local function dot(nodes, edges)
  local out = { "digraph sluice {", "  node [shape=box];" }
  local shapes = { decision = "diamond", ["repeat"] = "hexagon" }
  for _, n in ipairs(nodes) do
    local shape = shapes[n.shape]
    out[#out + 1] = ('  %s [label="%s"%s];'):format(n.id, dot_text(n.text),
      shape and (", shape=" .. shape) or "")
  end
  for _, e in ipairs(edges) do
    if e[4] then
      out[#out + 1] = ("  %s -> %s [style=dashed];"):format(e[1], e[2])
    else
      out[#out + 1] = ('  %s -> %s [label="%s"];'):format(e[1], e[2], dot_text(e[3]))
    end
  end
  out[#out + 1] = "}"
  return table.concat(out, "\n") .. "\n"
end

-- {======================================================
-- The flow: how control passes
-- =======================================================

-- Where the tree above draws containment, the flow draws the order steps
-- run in: a pipeline's children one after another, the branches of a
-- parallel, map, router or branch side by side between a fork and a join,
-- a loop's body with its way back, a dag's nodes along their
-- dependencies, and a fallback beside the step it stands in for. Every
-- leaf step is one node; each container becomes its fork (and join) nodes
-- inside a group named after it.

-- Fields holding the steps a kind runs side by side, and how a fork of that
-- kind is drawn.
local side_by_side = { parallel = "branches", router = "routes", branch = "cases" }

local function flow_build(root)
  local nodes, edges, groups = {}, {}, {}
  local drawn = {}   -- a step met again (used twice) is drawn again: the flow differs

  local function node(text, kind, shape, group, name)
    local id = "f" .. (#nodes + 1)
    nodes[#nodes + 1] = { id = id, text = text, kind = kind, name = name, shape = shape,
      group = group }
    return id
  end
  local function edge(from, to, label, dashed)
    edges[#edges + 1] = { from = from, to = to, label = label, dashed = dashed or nil }
  end

  local visit

  -- Each child step of a step, with its label, in drawing order (as build).
  local function children(step)
    local out = {}
    for _, k in ipairs(ordered_keys(step)) do
      local v = rawget(step, k)
      if is_step(v) then
        out[#out + 1] = { step = v, label = type(k) == "number" and tostring(k)
          or field_label[k] or k, field = k }
      elseif type(v) == "table" and getmetatable(v) == nil then
        for _, ck in ipairs(ordered_keys(v)) do
          if is_step(v[ck]) then
            out[#out + 1] = { step = v[ck], field = k, key = ck,
              label = type(ck) == "number" and (tostring(k) .. " " .. ck) or tostring(ck) }
          end
        end
      end
    end
    return out
  end

  -- Draws step in group; returns its entry and exit node ids.
  function visit(step, group)
    local kind, name = tostring(rawget(step, "kind")), tostring(rawget(step, "name"))
    local text = kind .. ": " .. name
    if kind == "import" and type(rawget(step, "file")) == "string" then
      text = text .. " (" .. rawget(step, "file") .. ")"
    end
    if drawn[step] and drawn[step] > 50 then   -- a cycle in the definition
      local id = node(text .. " (again)", kind, nil, group, name)
      return id, id
    end
    drawn[step] = (drawn[step] or 0) + 1
    local kids = children(step)
    local fallback
    for i = #kids, 1, -1 do
      if kids[i].field == "fallback" then
        fallback = table.remove(kids, i)
      end
    end
    local entry, exit
    if #kids == 0 then
      entry = node(text, kind, shape_of[kind], group, name)
      exit = entry
    else
      local g = "g" .. (#groups + 1)
      groups[#groups + 1] = { id = g, text = text, kind = kind, name = name, parent = group }
      local seq = kind == "pipeline" or (kind ~= "dag" and kind ~= "loop" and
        not side_by_side[kind] and #kids > 0 and kids[1].key == nil and
        math.type(kids[1].field) == "integer")
      if kind == "loop" then
        entry = node(text, kind, "repeat", g, name)
        local be, bx = visit(kids[1].step, g)
        edge(entry, be, kids[1].label)
        edge(bx, entry, "again", true)
        for i = 2, #kids do
          local ke, kx = visit(kids[i].step, g)
          edge(entry, ke, kids[i].label)
          edge(kx, entry, nil, true)
        end
        exit = entry
      elseif kind == "dag" then
        local nodes_t, after = rawget(step, "nodes"), rawget(step, "after")
        entry = node(text, kind, "fork", g, name)
        exit = node("end " .. name, kind, "join", g, name)
        local ends, needed = {}, {}
        for _, c in ipairs(kids) do
          local ce, cx = visit(c.step, g)
          ends[c.key or c.label] = { ce, cx }
        end
        for _, c in ipairs(kids) do
          local key = c.key or c.label
          local deps = type(after) == "table" and after[key] or nil
          if type(deps) == "string" then deps = { deps } end
          local has = false
          if type(deps) == "table" and type(nodes_t) == "table" then
            local sorted = {}
            for i = 1, #deps do sorted[i] = deps[i] end
            table.sort(sorted, function(a, b) return tostring(a) < tostring(b) end)
            for _, d in ipairs(sorted) do
              if ends[d] then
                edge(ends[d][2], ends[key][1], nil)
                needed[d] = true
                has = true
              end
            end
          end
          if not has then edge(entry, ends[key][1], tostring(key)) end
        end
        for _, c in ipairs(kids) do
          local key = c.key or c.label
          if not needed[key] then edge(ends[key][2], exit, nil) end
        end
      elseif seq then
        local prev
        for _, c in ipairs(kids) do
          local ce, cx = visit(c.step, g)
          if prev then edge(prev, ce, nil) else entry = ce end
          prev = cx
        end
        exit = prev
      else
        -- Side by side: a fork (a decision for branch and router), each
        -- child, a join.
        local decision = kind == "branch" or kind == "router"
        entry = node(text, kind, decision and "decision" or "fork", g, name)
        exit = node("end " .. name, kind, "join", g, name)
        for _, c in ipairs(kids) do
          local ce, cx = visit(c.step, g)
          local label = c.label
          if kind == "map" then label = "each item" end
          edge(entry, ce, label)
          edge(cx, exit, nil)
        end
      end
    end
    if fallback then
      local fe, fx = visit(fallback.step, group)
      edge(entry, fe, "on failure", true)
      local join = node("after " .. name, kind, "join", group, name)
      edge(exit, join, nil)
      edge(fx, join, nil)
      exit = join
    end
    return entry, exit
  end

  local roots = {}
  if is_step(root) then
    roots[1] = root
  else
    for _, k in ipairs(ordered_keys(root)) do
      if is_step(root[k]) then roots[#roots + 1] = root[k] end
    end
  end
  for _, r in ipairs(roots) do
    local s = node("start", "start", "start", nil, nil)
    local e, x = visit(r, nil)
    edge(s, e, nil)
    local t = node("end", "end", "end", nil, nil)
    edge(x, t, nil)
  end
  return nodes, edges, groups
end

--- The flow of a step (or of a table of named pipelines) as data, for the
--- ui: nodes {id, text, kind, name, shape, group}, edges {from, to, label,
--- dashed} and groups {id, text, kind, name, parent}, each in drawing order.
function M.flow(step)
  local nodes, edges, groups = flow_build(step)
  local arr = core.array_mt
  return { nodes = setmetatable(nodes, arr), edges = setmetatable(edges, arr),
    groups = setmetatable(groups, arr) }
end

-- Walks the flow's groups from the outside in: node(n, indent) for each
-- node of a group, then open(g, indent), its contents one level deeper and
-- close(g, indent) for each group inside it.
local function nest(nodes, groups, node, open, close)
  local in_group, inner = {}, {}
  for _, n in ipairs(nodes) do
    local k = n.group or ""
    in_group[k] = in_group[k] or {}
    table.insert(in_group[k], n)
  end
  for _, g in ipairs(groups) do
    local k = g.parent or ""
    inner[k] = inner[k] or {}
    table.insert(inner[k], g)
  end
  local function walk(key, indent)
    for _, n in ipairs(in_group[key] or {}) do node(n, indent) end
    for _, g in ipairs(inner[key] or {}) do
      open(g, indent)
      walk(g.id, indent .. "  ")
      close(g, indent)
    end
  end
  walk("", "  ")
end

local function mermaid_flow(nodes, edges, groups)
  local out = { "flowchart TD" }
  local open = { decision = "{", ["repeat"] = "{{", start = "([", ["end"] = "([",
    fork = "[/", join = "[\\" }
  local close = { decision = "}", ["repeat"] = "}}", start = "])", ["end"] = "])",
    fork = "\\]", join = "/]" }
  nest(nodes, groups, function(n, indent)
    out[#out + 1] = ('%s%s%s"%s"%s'):format(indent, n.id, open[n.shape] or "[",
      mermaid_text(n.text), close[n.shape] or "]")
  end, function(g, indent)
    out[#out + 1] = ('%ssubgraph %s["%s"]'):format(indent, g.id, mermaid_text(g.text))
  end, function(_, indent)
    out[#out + 1] = indent .. "end"
  end)
  for _, e in ipairs(edges) do
    local arrow = e.dashed and "-.->" or "-->"
    if e.label then
      out[#out + 1] = ('  %s %s|"%s"| %s'):format(e.from, arrow, mermaid_text(e.label), e.to)
    else
      out[#out + 1] = ("  %s %s %s"):format(e.from, arrow, e.to)
    end
  end
  return table.concat(out, "\n") .. "\n"
end

local function dot_flow(nodes, edges, groups)
  local out = { "digraph sluice {", "  node [shape=box];" }
  local shapes = { decision = "diamond", ["repeat"] = "hexagon", start = "oval", ["end"] = "oval",
    fork = "trapezium", join = "invtrapezium" }
  nest(nodes, groups, function(n, indent)
    local shape = shapes[n.shape]
    out[#out + 1] = ('%s%s [label="%s"%s];'):format(indent, n.id, dot_text(n.text),
      shape and (", shape=" .. shape) or "")
  end, function(g, indent)
    out[#out + 1] = ('%ssubgraph cluster_%s {'):format(indent, g.id)
    out[#out + 1] = ('%s  label="%s";'):format(indent, dot_text(g.text))
  end, function(_, indent)
    out[#out + 1] = indent .. "}"
  end)
  for _, e in ipairs(edges) do
    local attrs = {}
    if e.label then attrs[#attrs + 1] = ('label="%s"'):format(dot_text(e.label)) end
    if e.dashed then attrs[#attrs + 1] = "style=dashed" end
    out[#out + 1] = ("  %s -> %s%s;"):format(e.from, e.to,
      #attrs > 0 and (" [" .. table.concat(attrs, ", ") .. "]") or "")
  end
  out[#out + 1] = "}"
  return table.concat(out, "\n") .. "\n"
end

local flow_formats = { mermaid = mermaid_flow, dot = dot_flow }

-- }======================================================

local formats = { mermaid = mermaid, dot = dot }

--- The drawing of a step, or of a table of named pipelines (each drawn
--- from its own root), as text in format "mermaid" (default) or "dot";
--- layout "tree" (default) draws what contains what, "flow" the order
--- steps run in (M.flow).
function M.render(step, format, layout)
  if not is_step(step) and (type(step) ~= "table" or getmetatable(step) ~= nil) then
    error(("bad argument #1 to 'render' (step or table of pipelines expected, got %s)"):format(
      type(step)), 2)
  end
  local draw = formats[format or "mermaid"]
  if draw == nil then
    error(("bad argument #2 to 'render' (format must be 'mermaid' or 'dot', got %s)"):format(
      type(format) == "string" and ("'" .. format .. "'") or type(format)), 2)
  end
  if layout == "flow" then return flow_formats[format or "mermaid"](flow_build(step)) end
  if layout ~= nil and layout ~= "tree" then
    error(("bad argument #3 to 'render' (layout must be 'tree' or 'flow', got %s)"):format(
      tostring(layout)), 2)
  end
  return draw(build(step))
end

return M
