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

local formats = { mermaid = mermaid, dot = dot }

--- The drawing of a step, or of a table of named pipelines (each drawn
--- from its own root), as text in format "mermaid" (default) or "dot".
function M.render(step, format)
  if not is_step(step) and (type(step) ~= "table" or getmetatable(step) ~= nil) then
    error(("bad argument #1 to 'render' (step or table of pipelines expected, got %s)"):format(
      type(step)), 2)
  end
  local draw = formats[format or "mermaid"]
  if draw == nil then
    error(("bad argument #2 to 'render' (format must be 'mermaid' or 'dot', got %s)"):format(
      type(format) == "string" and ("'" .. format .. "'") or type(format)), 2)
  end
  return draw(build(step))
end

return M
