-- Drawing pipelines: graph.render gives Mermaid or DOT text showing every
-- step, its kind and name, what holds it and under which label.
local sl = require "sluice"
local graph = require "sluice.graph"

local function step(name) return sl.step{ name = name, run = print } end

local function lines(text)
  local list = {}
  for l in text:gmatch("[^\n]+") do list[#list + 1] = l end
  return list
end

describe("graph.render", function()
  it("draws a pipeline in Mermaid by default, children in order", function()
    local p = sl.pipeline{ name = "hello", step("greet"), step("shout") }
    assert.equal(table.concat({
      "flowchart TD",
      '  n1["pipeline: hello"]',
      '  n2["step: greet"]',
      '  n3["step: shout"]',
      '  n1 -->|"1"| n2',
      '  n1 -->|"2"| n3',
    }, "\n") .. "\n", graph.render(p))
  end)

  it("labels branches, cases, routes and bodies, nesting to any depth", function()
    local p = sl.pipeline{ name = "main",
      sl.parallel{ name = "fan", branches = {
        z = step("last"),
        a = sl.map{ name = "each", body = sl.loop{ name = "retry", max = 2, body = step("leaf") } } } },
      sl.branch{ name = "pick", on = print, cases = { yes = step("y"), no = step("n") }, default = step("d") },
      sl.router{ name = "route", choose = print, routes = { web = step("w") } } }
    assert.same({
      "flowchart TD",
      '  n1["pipeline: main"]',
      '  n2["parallel: fan"]',
      '  n3["map: each"]',
      '  n4{{"loop: retry"}}',
      '  n5["step: leaf"]',
      '  n6["step: last"]',
      '  n7{"branch: pick"}',
      '  n8["step: n"]',
      '  n9["step: y"]',
      '  n10["step: d"]',
      '  n11{"router: route"}',
      '  n12["step: w"]',
      '  n1 -->|"1"| n2',
      '  n2 -->|"a"| n3',
      '  n3 -->|"body"| n4',
      '  n4 -->|"body"| n5',
      '  n2 -->|"z"| n6',
      '  n1 -->|"2"| n7',
      '  n7 -->|"no"| n8',
      '  n7 -->|"yes"| n9',
      '  n7 -->|"default"| n10',
      '  n1 -->|"3"| n11',
      '  n11 -->|"web"| n12',
    }, lines(graph.render(p, "mermaid")))
  end)

  it("draws a dag's dependencies as dashed edges, in DOT too", function()
    local d = sl.dag{ name = "d", nodes = { a = step("na"), b = step("nb"), c = step("nc") },
      after = { c = { "b", "a" }, b = "a" } }
    assert.equal(table.concat({
      "digraph sluice {",
      "  node [shape=box];",
      '  n1 [label="dag: d"];',
      '  n2 [label="step: na"];',
      '  n3 [label="step: nb"];',
      '  n4 [label="step: nc"];',
      '  n1 -> n2 [label="a"];',
      '  n1 -> n3 [label="b"];',
      '  n1 -> n4 [label="c"];',
      "  n2 -> n3 [style=dashed];",
      "  n2 -> n4 [style=dashed];",
      "  n3 -> n4 [style=dashed];",
      "}",
    }, "\n") .. "\n", graph.render(d, "dot"))
  end)

  it("draws a step used twice once, and the fields of a custom kind generically", function()
    local shared = step("shared")
    local custom = sl.step{ kind = "graph_vote", name = "v",
      agents = { x = shared, y = step("other") }, judge = shared, fallback = { step("f1"), step("f2") } }
    assert.same({
      "flowchart TD",
      '  n1["graph_vote: v"]',
      '  n2["step: shared"]',
      '  n3["step: other"]',
      '  n4["step: f1"]',
      '  n5["step: f2"]',
      '  n1 -->|"x"| n2',
      '  n1 -->|"y"| n3',
      '  n1 -->|"fallback 1"| n4',
      '  n1 -->|"fallback 2"| n5',
      '  n1 -->|"judge"| n2',
    }, lines(graph.render(custom)))
  end)

  it("gives the same text whatever order the branches were written in", function()
    local function build(order)
      local branches = {}
      for _, k in ipairs(order) do branches[k] = step("s" .. k) end
      return sl.parallel{ name = "p", branches = branches }
    end
    local a = graph.render(build({ "c", "a", "b", "d", "e" }))
    local b = graph.render(build({ "e", "d", "b", "a", "c" }))
    assert.equal(a, b)
    assert.matches('n1 -->|"a"| n2\n  n1 -->|"b"| n3', a, 1, true)
  end)

  it("escapes quotes in names for each format", function()
    local s = step('say "hi" #1')
    assert.matches('n1["step: say #quot;hi#quot; #35;1"]', graph.render(s), 1, true)
    assert.matches('n1 [label="step: say \\"hi\\" #1"];', graph.render(s, "dot"), 1, true)
  end)

  it("draws a table of named pipelines, each from its own root, and an import's file", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p '" .. dir .. "'"))
    local f = assert(io.open(dir .. "/lib.lua", "w"))
    f:write('local sl = require "sluice"\nreturn sl.pipeline{ name = "lib", sl.step{ name = "x", run = print } }\n')
    f:close()
    local imp = sl.import{ name = "uses", file = dir .. "/lib.lua" }
    local text = graph.render({ b = step("two"), a = sl.pipeline{ name = "one", imp } })
    os.execute("rm -rf '" .. dir .. "'")
    assert.same({
      "flowchart TD",
      '  n1["pipeline: one"]',
      ('  n2["import: uses (%s/lib.lua)"]'):format(dir),
      '  n3["pipeline: lib"]',
      '  n4["step: x"]',
      '  n5["step: two"]',
      '  n1 -->|"1"| n2',
      '  n2 -->|"imports"| n3',
      '  n3 -->|"1"| n4',
    }, lines(text))
  end)

  it("refuses an unknown format and a value that is not a step", function()
    local ok, e = pcall(graph.render, step("s"), "svg")
    assert.is_false(ok)
    assert.matches("bad argument #2 to 'render' (format must be 'mermaid' or 'dot', got 'svg')", e, 1, true)
    ok, e = pcall(graph.render, 42)
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'render' (step or table of pipelines expected, got number)", e, 1, true)
  end)
end)

describe("graph.flow", function()
  -- The flow's edges as "from -> to [label]" by node text.
  local function edges(g)
    local text = {}
    for _, n in ipairs(g.nodes) do text[n.id] = n.text end
    local out = {}
    for _, e in ipairs(g.edges) do
      out[#out + 1] = text[e.from] .. " -> " .. text[e.to] .. (e.label and (" [" .. e.label .. "]") or "")
        .. (e.dashed and " (dashed)" or "")
    end
    return out
  end

  it("draws a pipeline's steps in order and branches side by side between a fork and a join", function()
    local p = sl.pipeline{ name = "main", step("first"),
      sl.parallel{ name = "fan", branches = { b = step("right"), a = step("left") } },
      step("last") }
    local g = graph.flow(p)
    assert.same({
      "parallel: fan -> step: left [a]", "step: left -> end fan",
      "parallel: fan -> step: right [b]", "step: right -> end fan",
      "step: first -> parallel: fan", "end fan -> step: last",
      "start -> step: first", "step: last -> end",
    }, edges(g))
    -- Each container is a group, the parallel inside the pipeline.
    assert.same({ "pipeline: main", "parallel: fan" }, { g.groups[1].text, g.groups[2].text })
    assert.equal(g.groups[1].id, g.groups[2].parent)
  end)

  it("draws a branch as a decision, a loop's way back, a dag's dependencies and a fallback", function()
    local b = sl.branch{ name = "pick", on = function() return "x" end,
      cases = { x = step("ex"), y = step("why") } }
    local l = sl.loop{ name = "again", body = step("body"), stop_when = function() return true end }
    local d = sl.dag{ name = "d", nodes = { a = step("a"), b = step("b"), c = step("c") },
      after = { c = { "a", "b" } } }
    local f = sl.step{ name = "risky", run = print, fallback = step("safe") }
    local e = edges(graph.flow(sl.pipeline{ name = "p", b, l, d, f }))
    local has = {}
    for _, x in ipairs(e) do has[x] = true end
    for _, want in ipairs({ "branch: pick -> step: ex [x]", "branch: pick -> step: why [y]",
      "loop: again -> step: body [body]", "step: body -> loop: again [again] (dashed)",
      "dag: d -> step: a [a]", "dag: d -> step: b [b]", "step: a -> step: c", "step: b -> step: c",
      "step: c -> end d", "step: risky -> step: safe [on failure] (dashed)",
      "step: risky -> after risky", "step: safe -> after risky" }) do
      assert.is_true(has[want], want .. " not in " .. table.concat(e, "; "))
    end
    local shapes = {}
    for _, n in ipairs(graph.flow(b).nodes) do shapes[n.text] = n.shape end
    assert.equal("decision", shapes["branch: pick"])
  end)

  it("renders the flow as Mermaid subgraphs and DOT clusters", function()
    local p = sl.pipeline{ name = "hello", step("greet"), step("shout") }
    assert.equal(table.concat({
      "flowchart TD",
      '  f1(["start"])',
      '  f4(["end"])',
      '  subgraph g1["pipeline: hello"]',
      '    f2["step: greet"]',
      '    f3["step: shout"]',
      "  end",
      "  f2 --> f3",
      "  f1 --> f2",
      "  f3 --> f4",
    }, "\n") .. "\n", graph.render(p, "mermaid", "flow"))
    assert.matches("subgraph cluster_g1 {", graph.render(p, "dot", "flow"), 1, true)
    local ok, e = pcall(graph.render, p, "mermaid", "sideways")
    assert.is_false(ok)
    assert.matches("layout must be 'tree' or 'flow'", e, 1, true)
  end)
end)
