-- The sluice command: output, exit codes, and a clear message for each bad
-- input.
local h = require "helpers"

local function script(text) return h.script(text) end

local hello = "scripts/examples/hello.lua"
local function sl_decode(text) return assert(require("sluice").decode(text)) end

describe("sluice run", function()
  it("prints the output as JSON and exits 0", function()
    local code, out, err = h.cli{ "run", hello, "--input", '{"name":"Ada"}' }
    assert.equal("", err)
    assert.equal('"Hello, Ada"\n', out)
    assert.equal(0, code)
  end)

  it("reads --input from a file with @ and from standard input with -", function()
    local f = h.write(os.tmpname(), '{"name":"Bo"}')
    local code, out = h.cli{ "run", hello, "--input", "@" .. f }
    assert.equal(0, code)
    assert.equal('"Hello, Bo"\n', out)
    code, out = h.cli({ "run", hello, "--input", "-" }, { stdin = '{"name":"Cy"}' })
    assert.equal(0, code)
    assert.equal('"Hello, Cy"\n', out)
    os.remove(f)
  end)

  it("passes JSON integers to steps as Lua integers", function()
    local p = script([[
      local sl = require "sluice"
      return sl.pipeline{ name = "p", sl.step{ name = "s", run = function(i) return "x" .. i.n end } }
    ]])
    local code, out = h.cli{ "run", p, "--input", '{"n":2}' }
    assert.equal(0, code)
    assert.equal('"x2"\n', out)
  end)

  it("prints the whole result with --json", function()
    local code, out = h.cli{ "run", hello, "--input", '{"name":"Ada"}', "--json" }
    assert.equal(0, code)
    local r = require("sluice").decode(out)
    assert.equal("completed", r.status)
    assert.equal("hello", r.pipeline)
    assert.equal("Hello, Ada", r.output)
    assert.matches("^%w+$", r.run_id)
    assert.is_table(r.usage)
    assert.equal(2, #r.steps)
    local root, greet = r.steps[1], r.steps[2]
    assert.same({ "hello", "pipeline", "completed", 1, false }, { root.name, root.kind, root.status, root.attempts, root.cached })
    assert.same({ "greet", "step", "completed", root.id }, { greet.name, greet.kind, greet.status, greet.parent })
    assert.is_number(greet.ms)
  end)

  it("writes the same text for the same value, keys sorted, in the output and --json", function()
    local p = script([[
      local sl = require "sluice"
      return sl.pipeline{ name = "p", sl.step{ name = "s", run = function()
        local t = {}
        for _, k in ipairs{ "b", "zz", "a", "m" } do t[k] = #k end
        return t
      end } }
    ]])
    for _ = 1, 3 do
      local code, out = h.cli{ "run", p }
      assert.equal(0, code)
      assert.equal('{"a":1,"b":1,"m":1,"zz":2}\n', out)
    end
    local _, out = h.cli{ "run", p, "--json" }
    assert.matches('"output":{"a":1,"b":1,"m":1,"zz":2}', out, 1, true)
  end)

  it("writes a string that is not UTF-8 with U+FFFD for each bad byte, everywhere", function()
    local p = script([[
      local sl = require "sluice"
      return sl.pipeline{ name = "p", sl.step{ name = "s", run = function() return "ok\255\192!" end } }
    ]])
    local code, out = h.cli{ "run", p }
    assert.equal(0, code)
    assert.equal('"ok\239\191\189\239\191\189!"\n', out)
    local _, json = h.cli{ "run", p, "--json" }
    local r = sl_decode(json)
    assert.equal("ok\239\191\189\239\191\189!", r.output)
    local _, shown = h.cli{ "show", r.run_id, "--json" }
    assert.equal("ok\239\191\189\239\191\189!", sl_decode(shown).output)
  end)

  it("writes tables ctx:log is given as JSON", function()
    local p = script([[
      local sl = require "sluice"
      return sl.pipeline{ name = "p", sl.step{ name = "s", run = function(_, ctx)
        ctx:log("got", { b = 2, a = { 1 } }, 3)
      end } }
    ]])
    local code, _, err = h.cli{ "run", p }
    assert.equal(0, code)
    assert.matches(' s] got\t{"a":[1],"b":2}\t3\n', err, 1, true)
  end)

  it("chooses among several pipelines with --pipeline", function()
    local p = script([[
      local sl = require "sluice"
      local function k(v) return sl.pipeline{ name = v, sl.step{ name = v, run = function() return v end } } end
      return { one = k("one"), two = k("two") }
    ]])
    local code, out = h.cli{ "run", p, "--pipeline", "two" }
    assert.equal(0, code)
    assert.equal('"two"\n', out)
    local err
    code, out, err = h.cli{ "run", p }
    assert.equal(2, code)
    assert.matches("several pipelines (one, two)", err, 1, true)
    code, out, err = h.cli{ "run", p, "--pipeline", "three" }
    assert.equal(2, code)
    assert.matches("has no pipeline named 'three' (it has: one, two)", err, 1, true)
  end)

  it("fails a run whose step raises, naming the step, the message and its file:line, exit 1", function()
    local p = script([[
      local sl = require "sluice"
      return sl.pipeline{ name = "p", sl.step{ name = "boom", run = function()
        error("kaboom")
      end } }
    ]])
    local code, out, err = h.cli{ "run", p }
    assert.equal(1, code)
    assert.equal("", out)
    assert.matches("step 'boom' failed: kaboom (at " .. p .. ":3)", err, 1, true)
  end)

  it("reports the failed step in --json results", function()
    local p = script([[
      local sl = require "sluice"
      return sl.pipeline{ name = "p", sl.step{ name = "boom", run = function() error("kaboom") end } }
    ]])
    local code, out = h.cli{ "run", p, "--json" }
    assert.equal(1, code)
    local r = require("sluice").decode(out)
    assert.equal("failed", r.status)
    assert.same({ kind = "error", message = "kaboom", step = "boom", where = p .. ":2" }, r.error)
    assert.equal("failed", r.steps[2].status)
  end)

  it("fails the step, exit 1, when its output is a function or a cyclic table the store cannot keep", function()
    local p = script([[
      local sl = require "sluice"
      local t = {}; t.self = t
      return {
        fn = sl.pipeline{ name = "fn", sl.step{ name = "s", run = function() return print end } },
        cyc = sl.pipeline{ name = "cyc", sl.step{ name = "s", run = function() return t end } },
      }
    ]])
    local code, out, err = h.cli{ "run", p, "--pipeline", "fn" }
    assert.equal(1, code)
    assert.matches("step 's' failed: its output cannot be stored with the run, so it could not "
      .. "be restored on resume: cannot encode a function at $", err, 1, true)
    code, out, err = h.cli{ "run", p, "--pipeline", "cyc" }
    assert.equal(1, code)
    assert.matches("cyclic table at $.self", err, 1, true)
    code, out = h.cli{ "run", p, "--pipeline", "cyc", "--json" }
    assert.equal(1, code)
    local r = require("sluice").decode(out)
    assert.equal("failed", r.status)
    assert.matches("cyclic table", r.error.message, 1, true)
  end)

  describe("refuses bad input with exit 2 and a clear message", function()
    it("a missing file", function()
      local code, out, err = h.cli{ "run", "/nonexistent/p.lua" }
      assert.equal(2, code)
      assert.matches("cannot open '/nonexistent/p.lua': No such file or directory", err, 1, true)
    end)

    it("a syntax error, with file:line", function()
      local p = script("local sl = require 'sluice'\nreturn sl.pipeline{ name = \n")
      local code, _, err = h.cli{ "run", p }
      assert.equal(2, code)
      assert.matches(p .. ":3: unexpected symbol near <eof>", err, 1, true)
    end)

    it("a script that returns something other than a pipeline", function()
      local p = script("return 42")
      local code, _, err = h.cli{ "run", p }
      assert.equal(2, code)
      assert.matches(p .. ": expected the file to return a pipeline (sl.pipeline{...}) or a table of named pipelines, got number", err, 1, true)
    end)

    it("an unknown option in a step, with file:line and a suggestion", function()
      local p = script("local sl = require 'sluice'\nreturn sl.pipeline{ name = 'p',\n  sl.step{ name = 's', rnu = print } }\n")
      local code, _, err = h.cli{ "run", p }
      assert.equal(2, code)
      assert.matches(p .. ":3: step 's': unknown option 'rnu' (did you mean 'run'?)", err, 1, true)
    end)

    it("a wrong type for an option", function()
      local p = script("local sl = require 'sluice'\nreturn sl.pipeline{ name = 'p', sl.step{ name = 's', run = 'x' } }\n")
      local code, _, err = h.cli{ "run", p }
      assert.equal(2, code)
      assert.matches(p .. ":2: step 's': option 'run' must be a function, got string", err, 1, true)
    end)

    it("a step of an unregistered kind", function()
      local p = script("local sl = require 'sluice'\nreturn sl.pipeline{ name = 'p', sl.step{ kind = 'nope', name = 's' } }\n")
      local code, _, err = h.cli{ "run", p }
      assert.equal(2, code)
      assert.matches(p .. ":2: step 's' has kind 'nope', which is not registered", err, 1, true)
    end)

    it("malformed --input JSON, with line and column", function()
      local code, _, err = h.cli{ "run", hello, "--input", '{"name":}' }
      assert.equal(2, code)
      assert.matches("--input: malformed JSON: line 1, column 9", err, 1, true)
    end)

    it("an unknown command-line option, with a suggestion", function()
      local code, _, err = h.cli{ "run", hello, "--inptu", "{}" }
      assert.equal(2, code)
      assert.matches("unknown option '--inptu' (did you mean '--input'?)", err, 1, true)
    end)

    it("an unknown command", function()
      local code, _, err = h.cli{ "rnu", hello }
      assert.equal(2, code)
      assert.matches("unknown command 'rnu' (did you mean 'run'?)", err, 1, true)
    end)

    it("a missing FILE", function()
      local code, _, err = h.cli{ "run" }
      assert.equal(2, code)
      assert.matches("missing FILE", err, 1, true)
    end)
  end)

  it("takes --memory-limit in MB, or with a unit, and refuses one no one can mean", function()
    local code, out = h.cli{ "run", hello, "--input", '{"name":"Ada"}', "--memory-limit", "256MB" }
    assert.equal(0, code)
    assert.equal('"Hello, Ada"\n', out)
    local err
    code, _, err = h.cli{ "run", hello, "--memory-limit", "0.001" }
    assert.equal(2, code)
    assert.matches("sluice: run: --memory-limit: a memory limit of 1048 bytes cannot be meant", err, 1, true)
  end)

  it("prints help for each command and exits 0", function()
    for _, cmd in ipairs{ "run", "check" } do
      local code, out = h.cli{ cmd, "--help" }
      assert.equal(0, code)
      assert.matches("usage: sluice " .. cmd, out, 1, true)
    end
    local code, out = h.cli{ "--help" }
    assert.equal(0, code)
    assert.matches("commands:", out, 1, true)
  end)
end)

describe("sluice graph", function()
  it("draws a pipeline for Mermaid and Graphviz", function()
    local code, out = h.cli{ "graph", "scripts/examples/hello.lua" }
    assert.equal(0, code)
    assert.matches("flowchart", out, 1, true)
    assert.matches('"step: greet"', out, 1, true)
    -- A flow by default: the pipeline is a group around its steps.
    assert.matches('subgraph g1["pipeline: ', out, 1, true)
    code, out = h.cli{ "graph", "scripts/examples/hello.lua", "--tree" }
    assert.equal(0, code)
    assert.not_matches("subgraph", out, 1, true)
    assert.matches('-->|"1"|', out, 1, true)
    code, out = h.cli{ "graph", "scripts/examples/hello.lua", "--format", "dot" }
    assert.equal(0, code)
    assert.matches("digraph", out, 1, true)
    local err
    code, out, err = h.cli{ "graph", "scripts/examples/hello.lua", "--format", "svg" }
    assert.equal(2, code)
    assert.matches("--format must be mermaid or dot", err, 1, true)
  end)
end)

describe("sluice check", function()
  it("accepts a good file without running it", function()
    local p = script([[
      local sl = require "sluice"
      return sl.pipeline{ name = "p", sl.step{ name = "s", run = function() error("must not run") end } }
    ]])
    local code, out, err = h.cli{ "check", p }
    assert.equal("", err)
    assert.equal(0, code)
    assert.matches("ok: " .. p .. " (p)", out, 1, true)
  end)

  it("refuses a bad file with exit 2 and file:line", function()
    local p = script("local sl = require 'sluice'\nreturn sl.pipeline{ name = 'p', sl.step{ name = 's', run = print, retires = 1 } }\n")
    local code, _, err = h.cli{ "check", p }
    assert.equal(2, code)
    assert.matches(p .. ":2: step 's': unknown option 'retires'", err, 1, true)
  end)

  it("checks only the pipeline --pipeline names, and refuses a name the file lacks", function()
    local p = script([[
      local sl = require "sluice"
      local function k(v) return sl.pipeline{ name = v, sl.step{ name = v, run = print } } end
      return { one = k("one"), two = k("two") }
    ]])
    local code, out, err = h.cli{ "check", p, "--pipeline", "two" }
    assert.equal("", err)
    assert.equal(0, code)
    assert.equal("ok: " .. p .. " (two)\n", out)
    code, out, err = h.cli{ "check", p, "--pipeline", "three" }
    assert.equal(2, code)
    assert.matches("has no pipeline named 'three' (it has: one, two)", err, 1, true)
  end)
end)

describe("the command's messages", function()
  it("all start with sluice: and name no position inside sluice itself", function()
    local dir = h.tmpdir()
    local env = { SLUICE_STORE = dir .. "/none/s.db" }
    local bad = h.script("local sl = require 'sluice'\nreturn sl.pipeline{ name = 'p',\n  sl.step{ name = 's', run = 3 } }\n", dir, "bad.lua")
    local syntax = h.script("return {\n", dir, "syntax.lua")
    local cases = {
      { "frob" },
      { "run", hello, "--frob" },
      { "run", hello, "--input", "{bad", "--store", ":memory:" },
      { "run", dir .. "/missing.lua" },
      { "run", bad, "--store", ":memory:" },
      { "run", syntax, "--store", ":memory:" },
      { "runs", "--limit", "x" },
      { "runs", "prune", "--keep", "x" },
      { "show", "01NOPE" },
      { "store", "frob" },
    }
    for _, args in ipairs(cases) do
      local code, _, err = h.cli(args, { env = env })
      local what = table.concat(args, " ")
      assert.equal(2, code, what)
      local first = err:match("^[^\n]*")
      assert.matches("^sluice: ", first, nil, false, what)
      assert.is_nil(err:find("sluice/[%w_]+%.lua:%d+:"), what .. ": " .. err)
      assert.is_nil(err:find("%[C%]:"), what .. ": " .. err)
    end
    -- A user's own file:line stays.
    local _, _, err = h.cli({ "run", bad, "--store", ":memory:" }, { env = env })
    assert.matches("bad.lua:3", err, 1, true)
    -- Wrong options are refused even where there is no store to read.
    local _, _, e1 = h.cli({ "runs", "--limit", "x" }, { env = env })
    assert.matches("--limit must be a non-negative integer", e1, 1, true)
    h.rm(dir)
  end)

  it("take -- as the end of the options", function()
    local dir = h.tmpdir()
    local code, _, err = h.cli({ "check", "--", "--help" })
    assert.equal(2, code)
    assert.matches("cannot open '--help'", err, 1, true)
    code = h.cli({ "check", "--", hello })
    assert.equal(0, code)
    code, _, err = h.cli({ "check", "--", hello, "extra" })
    assert.equal(2, code)
    assert.matches("unexpected argument 'extra'", err, 1, true)
    h.rm(dir)
  end)
end)

describe("ctx:log levels on stderr", function()
  it("keeps debug records with the step but writes them only with SLUICE_LOG=debug", function()
    local p = script([[
      local sl = require "sluice"
      return sl.step{ name = "s", run = function(x, ctx)
        ctx:log("debug", "quiet one", { n = 1 })
        ctx:log("loud one")
        return 1
      end }
    ]])
    local code, out, err = h.cli{ "run", p, "--json" }
    assert.equal(0, code, err)
    assert.matches("loud one", err, 1, true)
    assert.not_matches("quiet one", err, 1, true)
    assert.matches('"message":"quiet one"', out, 1, true)
    code, out, err = h.cli({ "run", p }, { env = { SLUICE_LOG = "debug" } })
    assert.equal(0, code, err)
    assert.matches("debug: quiet one", err, 1, true)
  end)
end)
