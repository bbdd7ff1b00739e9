-- What `sluice runs` and `sluice show` print: the table of runs, one run's
-- header and step tree, and the --json shapes, from plain rows.
local core = require "sluice.core"
local show = require "sluice.show"

local UTC = { utc = true }
local T0 = 1714564800000   -- 2024-05-01 12:00:00 UTC

local function text(lines)
  return table.concat(lines, "\n") .. "\n"
end

describe("show.usage", function()
  it("writes cost, tokens and requests with thousands separators", function()
    assert.equal("cost 0.0123 · 1,204 tok · 3 req", show.usage{ cost = 0.0123, tokens = 1204, requests = 3 })
    assert.equal("1,234,567 tok", show.usage{ tokens = 1234567 })
    assert.equal("999 tok · 1,000 req", show.usage{ tokens = 999, requests = 1000 })
  end)

  it("writes costs exactly, with at least two decimals", function()
    assert.equal("cost 0.50", show.usage{ cost = 0.5 })
    assert.equal("cost 3.00", show.usage{ cost = 3 })
    assert.equal("cost 0.30", show.usage{ cost = 0.1 + 0.2 })
    assert.equal("cost 0.000000001", show.usage{ cost = 1e-9 })
    assert.equal("cost 12.345678901", show.usage{ cost = 12.345678901 })
  end)

  it("leaves out what is zero, and gives nothing for no usage", function()
    assert.equal("2 req", show.usage{ cost = 0, tokens = 0, requests = 2 })
    assert.equal("", show.usage{ cost = 0, tokens = 0, requests = 0 })
    assert.equal("", show.usage(nil))
  end)

  it("takes whole floats, as JSON decoding may give them", function()
    assert.equal("1,500 tok", show.usage{ tokens = 1500.0 })
  end)
end)

describe("show.duration", function()
  it("picks the unit a person reads", function()
    assert.equal("40µs", show.duration(0.04))
    assert.equal("0µs", show.duration(0))
    assert.equal("1ms", show.duration(0.9996))
    assert.equal("350ms", show.duration(350))
    assert.equal("999ms", show.duration(999.4))
    assert.equal("1.0s", show.duration(999.6))
    assert.equal("1.2s", show.duration(1234))
    assert.equal("59.9s", show.duration(59940))
    assert.equal("1m00s", show.duration(59960))
    assert.equal("2m05s", show.duration(125000))
    assert.equal("1h02m", show.duration(3725000))
  end)
end)

describe("show.runs", function()
  it("lays runs out in columns that fit their content, with no trailing spaces", function()
    local rows = {
      { run_id = "r2", pipeline = "summarize", status = "running", started_ms = T0 + 5000 },
      { run_id = "r1-long-id", pipeline = "hello", status = "failed", started_ms = T0,
        ended_ms = T0 + 1234, usage = { cost = 0.0123, tokens = 1204, requests = 3 } },
      { run_id = "r0", pipeline = "hello", status = "completed", started_ms = T0 - 60000,
        ended_ms = T0 - 59650, usage = { cost = 0, tokens = 0, requests = 0 } },
    }
    assert.equal(text{
      "ID          PIPELINE   STATUS     STARTED               DURATION  USAGE",
      "r2          summarize  running    2024-05-01T12:00:05Z   running",
      "r1-long-id  hello      failed     2024-05-01T12:00:00Z    1.234s  cost 0.0123 · 1,204 tok · 3 req",
      "r0          hello      completed  2024-05-01T11:59:00Z    0.350s",
    }, show.runs(rows, UTC))
  end)

  it("keeps the order it is given", function()
    local out = show.runs({
      { run_id = "a", pipeline = "p", status = "completed", started_ms = T0, ended_ms = T0 },
      { run_id = "b", pipeline = "p", status = "completed", started_ms = T0 + 1000, ended_ms = T0 + 1000 },
    }, UTC)
    assert.truthy(out:find("\na .*\nb "))
  end)

  it("takes an ended_ms of 0, as the store keeps it, as not ended", function()
    local out = show.runs({
      { run_id = "a", pipeline = "p", status = "paused", started_ms = T0, ended_ms = 0 },
      { run_id = "b", pipeline = "p", status = "running", started_ms = T0, ended_ms = 0 },
    }, UTC)
    assert.equal(text{
      "ID  PIPELINE  STATUS   STARTED               DURATION  USAGE",
      "a   p         paused   2024-05-01T12:00:00Z         -",
      "b   p         running  2024-05-01T12:00:00Z   running",
    }, out)
  end)

  it("shows start times in ISO 8601, in local time with its offset unless asked for UTC", function()
    local out = show.runs({ { run_id = "a", pipeline = "p", status = "running", started_ms = T0 + 999 } })
    assert.truthy(out:find(os.date("%Y-%m-%dT%H:%M:%S", T0 // 1000), 1, true))
    assert.truthy(out:find("T%d%d:%d%d:%d%d[+-]%d%d:%d%d"))
  end)

  it("says so when there are no runs", function()
    assert.equal("no runs\n", show.runs({}))
  end)
end)

describe("show.run", function()
  local err = { kind = "timeout", message = "took too long", where = "x.lua:3", step = "work" }
  local run = { run_id = "r1", pipeline = "main", status = "failed", started_ms = T0,
    ended_ms = T0 + 350, usage = { cost = 0.5, tokens = 1234567 }, error = err }
  local steps = {
    { id = 1, name = "main", kind = "pipeline", status = "failed", attempts = 1, cached = false,
      ms = 350.2, error = err },
    { id = 2, parent = 1, index = 1, name = "fetch", kind = "step", status = "completed", attempts = 3,
      cached = false, ms = 12.4, usage = { cost = 0.0123, tokens = 1204, requests = 3 } },
    { id = 3, parent = 1, index = 2, name = "each", kind = "map", status = "failed", attempts = 1,
      cached = false, ms = 300, error = err },
    { id = 4, parent = 3, index = 1, key = "1", name = "work", kind = "step", status = "completed",
      attempts = 1, cached = true, ms = 0.04 },
    { id = 5, parent = 3, index = 2, key = "2", name = "work", kind = "step", status = "failed",
      attempts = 2, cached = false, ms = 1500, error = err },
    { id = 6, parent = 1, index = 3, name = "safe", kind = "step", status = "completed", attempts = 1,
      cached = false, ms = 2, fallback = "error: boom" },
  }

  it("prints a header and the tree of step executions", function()
    assert.equal(text{
      "run       r1",
      "pipeline  main",
      "status    failed",
      "started   2024-05-01T12:00:00Z",
      "duration  350ms",
      "usage     cost 0.50 · 1,234,567 tok",
      "error     timeout: took too long at x.lua:3 (step 'work')",
      "",
      "main (pipeline)       failed     350ms",
      "├─ fetch (step)       completed   12ms  3 attempts  cost 0.0123 · 1,204 tok · 3 req",
      "├─ each (map)         failed     300ms",
      "│  ├─ work[1] (step)  completed   40µs  cached",
      "│  └─ work[2] (step)  failed      1.5s  2 attempts",
      "│       error: timeout: took too long at x.lua:3",
      "└─ safe (step)        completed    2ms  fallback: error: boom",
    }, show.run(run, steps, UTC))
  end)

  it("continues the vertical line past an error when the step has children", function()
    local e = { kind = "quota", message = "cost budget exceeded", step = "loop" }
    local out = show.run({ run_id = "r", pipeline = "loop", status = "failed", started_ms = T0, ended_ms = T0 + 5 }, {
      { id = 1, name = "loop", kind = "loop", status = "failed", attempts = 1, ms = 5, error = e },
      { id = 2, parent = 1, key = 1, name = "body", kind = "step", status = "completed", attempts = 1, ms = 1 },
      { id = 3, parent = 1, key = 2, name = "body", kind = "step", status = "completed", attempts = 1, ms = 1 },
    }, UTC)
    assert.equal(text{
      "run       r",
      "pipeline  loop",
      "status    failed",
      "started   2024-05-01T12:00:00Z",
      "duration  5ms",
      "",
      "loop (loop)        failed     5ms",
      "│ error: quota: cost budget exceeded",
      "├─ body[1] (step)  completed  1ms",
      "└─ body[2] (step)  completed  1ms",
    }, out)
  end)

  it("indents a deep tree and lines of a long message under their step, leaving out the plain kind 'error'", function()
    local out = show.run({ run_id = "r", pipeline = "a", status = "running", started_ms = T0 }, {
      { id = 1, name = "a", kind = "pipeline", status = "running", attempts = 1, ms = 0 },
      { id = 2, parent = 1, name = "b", kind = "parallel", status = "running", attempts = 1, ms = 0 },
      { id = 3, parent = 2, key = "left", name = "c", kind = "pipeline", status = "running", attempts = 1, ms = 0 },
      { id = 4, parent = 3, name = "d", kind = "step", status = "failed", attempts = 1, ms = 3,
        error = { kind = "error", message = "boom\nstack line", step = "d" } },
      { id = 5, parent = 2, key = "right", name = "e", kind = "step", status = "running", attempts = 1, ms = 0 },
    }, UTC)
    assert.equal(text{
      "run       r",
      "pipeline  a",
      "status    running",
      "started   2024-05-01T12:00:00Z",
      "duration  running",
      "",
      "a (pipeline)              running  0µs",
      "└─ b (parallel)           running  0µs",
      "   ├─ c[left] (pipeline)  running  0µs",
      "   │  └─ d (step)         failed   3ms",
      "   │       error: boom",
      "   │              stack line",
      "   └─ e[right] (step)     running  0µs",
    }, out)
  end)

  it("shows a step whose parent is not among the steps as a root", function()
    local out = show.run({ run_id = "r", pipeline = "p", status = "completed", started_ms = T0, ended_ms = T0 }, {
      { id = 7, parent = 3, name = "orphan", kind = "step", status = "completed", attempts = 1, ms = 1 },
      { id = 8, parent = 7, name = "child", kind = "step", status = "completed", attempts = 1, ms = 1 },
    }, UTC)
    assert.truthy(out:find("\norphan %(step%)    completed  1ms\n└─ child %(step%)  completed  1ms\n$"))
  end)

  it("reads cached as the store keeps it, 0 or 1", function()
    local out = show.run({ run_id = "r", pipeline = "p", status = "completed", started_ms = T0, ended_ms = T0 }, {
      { id = 1, name = "p", kind = "pipeline", status = "completed", attempts = 1, cached = 0, ms = 2 },
      { id = 2, parent = 1, name = "s", kind = "step", status = "completed", attempts = 1, cached = 1, ms = 1 },
    }, UTC)
    assert.truthy(out:find("\np %(pipeline%)  completed  2ms\n└─ s %(step%)   completed  1ms  cached\n$"))
  end)

  it("says so when no steps were recorded, and shows an error given as text", function()
    local out = show.run({ run_id = "r", pipeline = "p", status = "failed", started_ms = T0,
      ended_ms = T0 + 2000, error = "could not load x.lua" }, {}, UTC)
    assert.equal(text{
      "run       r",
      "pipeline  p",
      "status    failed",
      "started   2024-05-01T12:00:00Z",
      "duration  2.0s",
      "error     could not load x.lua",
      "",
      "no steps recorded",
    }, out)
  end)
end)

describe("show.runs_json and show.run_json", function()
  it("gives an array of runs with their fields, ended ones with a duration", function()
    local rows = {
      { run_id = "b", pipeline = "p", status = "running", started_ms = T0, ended_ms = 0 },
      { run_id = "a", pipeline = "p", status = "completed", started_ms = T0, ended_ms = T0 + 20,
        usage = { tokens = 3 } },
    }
    local list = show.runs_json(rows)
    assert.equal(core.array_mt, getmetatable(list))
    assert.same({
      { run_id = "b", pipeline = "p", status = "running", started_ms = T0 },
      { run_id = "a", pipeline = "p", status = "completed", started_ms = T0, ended_ms = T0 + 20,
        duration_ms = 20, usage = { tokens = 3 } },
    }, list)
    assert.equal(0, rows[1].ended_ms, "the rows are left as they were")
    assert.equal('[]', core.json_encode(show.runs_json({})))
  end)

  it("gives one run with its steps as an array", function()
    local r = show.run_json({ run_id = "a", pipeline = "p", status = "completed", started_ms = T0,
      ended_ms = T0 + 1 }, { { id = 1, name = "p", kind = "pipeline", status = "completed",
      attempts = 1, cached = false, ms = 1.0 } })
    assert.equal(core.array_mt, getmetatable(r.steps))
    assert.same({ run_id = "a", pipeline = "p", status = "completed", started_ms = T0,
      ended_ms = T0 + 1, duration_ms = 1, steps = { { id = 1, name = "p", kind = "pipeline",
      status = "completed", attempts = 1, cached = false, ms = 1.0 } } }, r)
    local empty = show.run_json({ run_id = "a", pipeline = "p", status = "running", started_ms = T0 }, {})
    assert.matches('"steps":%[%]', core.json_encode(empty))
  end)
end)
