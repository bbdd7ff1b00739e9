-- Agents for real LLM work (issue 16): tool calling, step schemas,
-- structured output, memory, streaming, rate limits, selection and
-- composition, against the mock server's OpenAI-compatible route
-- (scripts/mock_server.c), whose buckets (X-Mock-Key) count what each
-- test sent.
local sl = require "sluice"
local limits = require "sluice.limits"
local h = require "helpers"

local MOCK = os.getenv("SLUICE_MOCK_SERVER") or (h.build .. "/mock_server")

local function start_mock()
  local server = assert(io.popen("exec env -u LD_PRELOAD sh -c 'echo $$; exec "
    .. h.quote(MOCK) .. " 0'"))
  local pid = server:read("l")
  local port = assert((server:read("l") or ""):match("^listening on (%d+)$"), "the mock server did not start")
  return pid, server, "http://127.0.0.1:" .. port
end

-- A GET through the engine, decoded.
local function get(url)
  local r = sl.run(sl.step{ name = "get", run = function(_, ctx)
    return ctx:http{ url = url }.body
  end })
  assert.equal("completed", r.status, r.error and r.error.message)
  local v, err = sl.decode(r.output)
  assert(v ~= nil, tostring(err) .. ": " .. tostring(r.output))
  return v
end

-- The steps of a result by name: name -> list of entries.
local function steps_by_name(r)
  local by = {}
  for _, s in ipairs(r.steps) do
    by[s.name] = by[s.name] or {}
    table.insert(by[s.name], s)
  end
  return by
end

local lookup_calls
local lookup = sl.step{ name = "lookup", description = "Looks a city's population up.",
  input_schema = { type = "object", properties = { city = { type = "string", minLength = 2 } },
    required = { "city" }, additionalProperties = false },
  run = function(input)
    lookup_calls[#lookup_calls + 1] = input.city
    return { city = input.city, population = #input.city * 1000 }
  end }

describe("agents", function()
  local pid, server, base, v1
  setup(function()
    pid, server, base = start_mock()
    v1 = base .. "/v1"
  end)
  teardown(function()
    os.execute("kill -TERM " .. pid)
    server:close()
  end)
  before_each(function()
    lookup_calls = {}
    limits.reset()
  end)

  local function chat(opts)
    opts.base_url = opts.base_url or v1
    opts.model = opts.model or "mock-model"
    return sl.agent.chat(opts)
  end

  describe("tools", function()
    it("run each call as a child step and send the results back", function()
      local a = chat{ tools = { lookup }, headers = { ["X-Mock-Key"] = "tools-1" },
        prompt = [=[Find [[tool lookup {"city": "Oslo"}]] and [[tool lookup {"city": "Rome"}]]]=] }
      local r = sl.run(sl.step{ name = "ask", agent = a })
      assert.equal("completed", r.status, r.error and r.error.message)
      assert.equal('Tool results: {"city":"Oslo","population":4000} | '
        .. '{"city":"Rome","population":4000}', r.output)
      table.sort(lookup_calls)
      assert.same({ "Oslo", "Rome" }, lookup_calls)
      -- Two model turns and two tool calls, each a step in the history.
      local by = steps_by_name(r)
      assert.equal(2, #by.turn)
      assert.equal(2, #by.lookup)
      for _, s in ipairs(by.lookup) do assert.equal("completed", s.status) end
      -- The model was told the tools, and got the results as tool messages.
      local sent = get(base .. "/v1/mock/requests?key=tools-1")
      assert.equal(2, #sent)
      assert.same({ type = "function", ["function"] = { name = "lookup",
        description = "Looks a city's population up.", parameters = lookup.input_schema } },
        sent[1].tools[1])
      local second = sent[2].messages
      assert.equal("assistant", second[2].role)
      assert.equal("tool", second[3].role)
      assert.equal(second[2].tool_calls[1].id, second[3].tool_call_id)
      -- The usage of both turns reaches the run.
      assert.equal(2, r.usage.requests)
      assert.is_true(r.usage.tokens > 0)
    end)

    it("answer a malformed call with an error the model reads, not a crash", function()
      local a = chat{ tools = { lookup }, headers = { ["X-Mock-Key"] = "tools-2" },
        prompt = [=[[[tool lookup {"city": "Oslo"]] [[tool weather {}]] [[tool lookup {"town": "x"}]]]=] }
      local r = sl.run(sl.step{ name = "ask", agent = a })
      assert.equal("completed", r.status, r.error and r.error.message)
      local parts = {}
      for p in (r.output:gsub("^Tool results: ", "") .. " | "):gmatch("(.-) | ") do parts[#parts + 1] = p end
      assert.equal(3, #parts)
      assert.matches("^error: the arguments of this call to 'lookup' are not a JSON object", parts[1])
      assert.matches("^error: there is no tool named 'weather'; the tools are: lookup", parts[2])
      assert.matches("^error: the input does not match its input_schema: %$: missing required "
        .. "property 'city'", parts[3])
      -- Only the call whose arguments parsed became a step; its input was
      -- refused before it ran.
      assert.same({}, lookup_calls)
      local by = steps_by_name(r)
      assert.equal(1, #by.lookup)
      assert.equal("failed", by.lookup[1].status)
      assert.equal(1, by.lookup[1].attempts)
    end)

    it("stop after max_turns with kind limit", function()
      local a = chat{ tools = { lookup }, max_turns = 3,
        prompt = [=[[[tool-always lookup {"city": "Oslo"}]]]=] }
      local r = sl.run(sl.step{ name = "ask", agent = a })
      assert.equal("failed", r.status)
      assert.equal("limit", r.error.kind)
      assert.matches("still calling tools after max_turns (3) turns", r.error.message, 1, true)
      assert.equal(3, #lookup_calls)
    end)

    it("are refused at definition when they cannot be described to a model", function()
      local bare = sl.step{ name = "bare", run = function() end }
      local ok, err = pcall(function()
        sl.agent.chat{ base_url = v1, model = "m", prompt = "x", tools = { bare } }
      end)
      assert.is_false(ok)
      assert.matches("agents_spec.lua:%d+: sl.agent.chat: option 'tools' must be a list of steps, "
        .. "each with a description and an input_schema, got step 'bare' %(item #1%) without a "
        .. "description", err)
    end)
  end)

  describe("step schemas", function()
    it("check the input before the step runs, failing with the path", function()
      local ran = false
      local s = sl.step{ name = "s", input_schema = { type = "object", properties = {
        n = { type = "integer", minimum = 1, maximum = 9 } }, required = { "n" } },
        retries = 3, run = function() ran = true end }
      local r = sl.run(s, { n = 12 })
      assert.equal("failed", r.status)
      assert.equal("validation", r.error.kind)
      assert.matches("the input does not match its input_schema: $.n", r.error.message, 1, true)
      assert.matches("maximum 9", r.error.message, 1, true)
      assert.is_false(ran)
      assert.equal(1, r.steps[1].attempts)
    end)

    it("refine an output that does not match, with the error as feedback", function()
      local seen = {}
      local s = sl.step{ name = "s", retries = 2,
        output_schema = { type = "object", properties = { code = { type = "string",
          pattern = "^[A-Z]{3}-\\d+$" } }, required = { "code" } },
        run = function(_, ctx)
          seen[#seen + 1] = ctx.feedback or false
          return { code = ctx.attempt == 1 and "abc-1" or "ABC-12" }
        end }
      local r = sl.run(s, {})
      assert.equal("completed", r.status)
      assert.same({ code = "ABC-12" }, r.output)
      assert.is_false(seen[1])
      assert.matches("the output does not match its output_schema: $.code", seen[2], 1, true)
    end)
  end)

  describe("structured output", function()
    local score = { type = "object", properties = { score = { type = "integer", minimum = 1,
      maximum = 5 }, why = { type = "string" } }, required = { "score", "why" } }

    it("sends the schema, refines a reply that does not match, then accepts one", function()
      local a = chat{ schema = score, headers = { ["X-Mock-Key"] = "schema-1" },
        prompt = [=[Rate it. [[content {"score": 9, "why": "great"}]] [[retry-content {"score": 4, "why": "good"}]]]=] }
      local r = sl.run(sl.step{ name = "rate", agent = a })
      assert.equal("completed", r.status, r.error and r.error.message)
      assert.same({ score = 4, why = "good" }, r.output)
      assert.equal(2, r.steps[1].attempts)
      local sent = get(base .. "/v1/mock/requests?key=schema-1")
      assert.equal(2, #sent)
      assert.same({ type = "json_schema", json_schema = { name = "reply", schema = score } },
        sent[1].response_format)
      assert.matches("the reply does not match the schema: $.score", sent[2].messages[1].content, 1, true)
      -- Both replies' tokens were spent.
      assert.equal(2, r.usage.requests)
    end)

    it("fails with kind validation when every attempt mismatches", function()
      local a = chat{ schema = score, prompt = [=[[[content {"score": "high"}]]]=] }
      local r = sl.run(sl.step{ name = "rate", agent = a })
      assert.equal("failed", r.status)
      assert.equal("validation", r.error.kind)
      assert.equal(3, r.steps[1].attempts)
    end)

    it("takes a reply the mock generated from the schema itself", function()
      local a = chat{ schema = score, prompt = "Rate it." }
      local r = sl.run(sl.step{ name = "rate", agent = a })
      assert.equal("completed", r.status, r.error and r.error.message)
      assert.equal(1, r.output.score)
    end)
  end)

  describe("multi-turn", function()
    it("keeps the conversation in ctx.state across steps", function()
      local a = chat{ memory = "chat", system = "Be brief.", prompt = "{{ input }}",
        headers = { ["X-Mock-Key"] = "memory-1" } }
      local r = sl.run(sl.pipeline{ name = "talk",
        sl.step{ name = "one", run = function(_, ctx) return a("first", ctx) end },
        sl.step{ name = "two", run = function(_, ctx) return a("second", ctx) end },
        sl.step{ name = "out", run = function(_, ctx) return ctx.state.chat end } }, {})
      assert.equal("completed", r.status, r.error and r.error.message)
      assert.same({ { role = "user", content = "first" },
        { role = "assistant", content = "Mock reply to: first" },
        { role = "user", content = "second" },
        { role = "assistant", content = "Mock reply to: second" } }, r.output)
      local sent = get(base .. "/v1/mock/requests?key=memory-1")
      assert.equal(4, #sent[2].messages)
      assert.equal("system", sent[2].messages[1].role)
      assert.equal("first", sent[2].messages[2].content)
    end)

    it("keeps each call's prompt and reply with its step, at debug level", function()
      local a = chat{ system = "Be brief.", prompt = "Hello {{ input.name }}" }
      local r = sl.run(sl.step{ name = "greet", agent = a }, { name = "Ada" })
      assert.equal("completed", r.status, r.error and r.error.message)
      local logs = r.steps[1].logs
      assert.equal(1, #logs)
      assert.equal("debug", logs[1].level)
      assert.equal("model call", logs[1].message)
      assert.same({ { role = "system", content = "Be brief." },
        { role = "user", content = "Hello Ada" } }, logs[1].fields.prompt)
      assert.equal("Mock reply to: Hello Ada", logs[1].fields.reply)
      assert.equal("mock-model", logs[1].fields.model)
    end)

    it("takes messages from a function of the input", function()
      local a = chat{ messages = function(input) return { { role = "user", content = input.q } } end }
      local r = sl.run(sl.step{ name = "ask", agent = a }, { q = "why" })
      assert.equal("Mock reply to: why", r.output)
    end)
  end)

  describe("streaming", function()
    it("delivers the tokens in order and counts the final chunk's usage", function()
      local tokens = {}
      local a = chat{ stream = true, prompt = "one two three four five",
        on_token = function(t) tokens[#tokens + 1] = t end,
        headers = { ["X-Mock-Stream-Delay-Ms"] = "2" } }
      local r = sl.run(sl.step{ name = "ask", agent = a })
      assert.equal("completed", r.status, r.error and r.error.message)
      assert.equal("Mock reply to: one two three four five", r.output)
      assert.equal(r.output, table.concat(tokens))
      assert.equal(8, #tokens)
      assert.equal("Mock ", tokens[1])
      assert.equal("five", tokens[8])
      -- 5 words in, 8 out, as the usage chunk says.
      assert.equal(13, r.usage.tokens)
      assert.equal(1, r.usage.requests)
    end)

    it("fails a stream cut off midway, and the step's retry completes it", function()
      local tokens = {}
      local a = chat{ stream = true, prompt = "alpha beta gamma",
        on_token = function(t) tokens[#tokens + 1] = t end,
        headers = { ["X-Mock-Stream-Break"] = "2", ["X-Mock-Break-Times"] = "1",
          ["X-Mock-Key"] = "stream-break" } }
      local r = sl.run(sl.step{ name = "ask", agent = a, retries = 1 })
      assert.equal("completed", r.status, r.error and r.error.message)
      assert.equal("Mock reply to: alpha beta gamma", r.output)
      assert.equal(2, r.steps[1].attempts)
      -- The cut attempt's two pieces came first.
      assert.equal(2 + 6, #tokens)
      local r2 = sl.run(sl.step{ name = "ask", agent = chat{ stream = true, prompt = "x",
        headers = { ["X-Mock-Stream-Break"] = "1" } } })
      assert.equal("failed", r2.status)
      assert.equal("error", r2.error.kind)
      assert.matches("the stream was cut off after", r2.error.message, 1, true)
    end)

    it("streams tool calls too", function()
      local a = chat{ stream = true, tools = { lookup },
        prompt = [=[[[tool lookup {"city": "Lima"}]]]=] }
      local r = sl.run(sl.step{ name = "ask", agent = a })
      assert.equal("completed", r.status, r.error and r.error.message)
      assert.equal('Tool results: {"city":"Lima","population":4000}', r.output)
    end)
  end)

  describe("rate limits", function()
    -- Ten branches calling the same model at once.
    local function fan(a, n)
      local branches = {}
      for i = 1, n do
        branches["b" .. i] = sl.step{ name = "b" .. i, run = function(_, ctx) return a("hi " .. i, ctx) end }
      end
      return sl.run(sl.parallel{ name = "fan", branches = branches })
    end

    it("hold a concurrency of 2 across 10 parallel branches, waiting in line", function()
      sl.limits{ ["conc-model"] = { concurrency = 2 } }
      local a = chat{ model = "conc-model", prompt = "{{ input }}",
        headers = { ["X-Mock-Key"] = "conc", ["X-Mock-Delay-Ms"] = "30" } }
      local r = fan(a, 10)
      assert.equal("completed", r.status, r.error and r.error.message)
      local st = get(base .. "/v1/mock/stats?key=conc")
      assert.equal(10, st.requests)
      assert.equal(2, st.max_in_flight)
      assert.equal(0, st.rejected)
      -- The waits are in the history, on the steps that waited.
      local waited = 0
      for _, s in ipairs(r.steps) do
        for _, l in ipairs(s.logs or {}) do
          if l.fields and l.fields.limit == "conc-model" then
            waited = waited + 1
            assert.is_true(l.fields.waited_ms >= 1)
          end
        end
      end
      assert.is_true(waited >= 6, "waits logged: " .. waited)
    end)

    it("space requests by requests_per_minute so the provider refuses none", function()
      -- The mock refuses a second request within 80 ms; 600 a minute is
      -- one every 100 ms.
      sl.limits{ [v1] = { requests_per_minute = 600 } }
      local a = chat{ model = "rpm-model", prompt = "{{ input }}",
        headers = { ["X-Mock-Key"] = "rpm", ["X-Mock-RPM"] = "1", ["X-Mock-Window-Ms"] = "80" } }
      local r = fan(a, 5)
      assert.equal("completed", r.status, r.error and r.error.message)
      local st = get(base .. "/v1/mock/stats?key=rpm")
      assert.equal(5, st.requests)
      assert.equal(0, st.rejected)
      for i = 2, 5 do
        assert.is_true(st.arrivals_ms[i] - st.arrivals_ms[i - 1] >= 80,
          "arrivals " .. sl.encode(st.arrivals_ms))
      end
    end)

    it("let a 429 hold back everyone using the key", function()
      local a429 = chat{ model = "shared-model", prompt = "x", retries = 0,
        headers = { ["X-Mock-Status"] = "429" } }
      local ok = chat{ model = "shared-model", prompt = "y", headers = { ["X-Mock-Key"] = "after-429" } }
      local r = sl.run(sl.pipeline{ name = "p",
        sl.step{ name = "refused", run = function(_, ctx) return (pcall(a429, {}, ctx)) end },
        sl.step{ name = "next", run = function(_, ctx) return ok({}, ctx) end } })
      assert.equal("completed", r.status, r.error and r.error.message)
      local by = steps_by_name(r)
      -- The wait, then the call itself (kept at debug level).
      local logs = by.next[1].logs or {}
      assert.equal(2, #logs)
      assert.equal("shared-model", logs[1].fields.limit)
      assert.equal("debug", logs[2].level)
      assert.equal("model call", logs[2].message)
      -- The mock asked for 100 ms.
      assert.is_true(logs[1].fields.waited_ms >= 90, sl.encode(logs))
    end)

    it("refuse a malformed limit at the user's line", function()
      local ok, err = pcall(function() sl.limits{ m = { concurency = 2 } } end)
      assert.is_false(ok)
      assert.matches("agents_spec.lua:%d+: sl.limits: the limits of 'm' have an unknown field "
        .. "'concurency' %(did you mean 'concurrency'%?%)", err)
    end)

    it("read provider reset times", function()
      assert.equal(1, limits.reset_seconds("1s"))
      assert.equal(0.02, limits.reset_seconds("20ms"))
      assert.equal(360, limits.reset_seconds("6m0s"))
      assert.equal(3723.5, limits.reset_seconds("1h2m3.5s"))
    end)
  end)

  describe("prices", function()
    it("accept dollars per million input and output tokens", function()
      sl.prices{ ["per-million"] = { input = 2.5, output = 10 } }
      local a = chat{ model = "per-million", prompt = "a b c d" }
      local r = sl.run(sl.step{ name = "ask", agent = a })
      -- 4 words in, 7 out ("Mock reply to: a b c d").
      assert.near(4 * 2.5 / 1e6 + 7 * 10 / 1e6, r.usage.cost, 1e-12)
      local ok, err = pcall(sl.prices, { x = { input = 1, completion = 2 } })
      assert.is_false(ok)
      assert.matches("mixes", err, 1, true)
    end)
  end)

  describe("sl.compose", function()
    it("joins the texts and merges duplicate references", function()
      local out = sl.compose({
        web = { text = "From the web.", references = { { url = "https://Example.org/a/", title = "" },
          { url = "https://b.org/x", title = "B" } } },
        docs = { text = "From the docs.", references = { { url = "https://example.org/a",
          title = "A" } } },
        empty = nil })
      assert.equal("From the docs.\n\nFrom the web.", out.text)
      assert.same({ { url = "https://example.org/a", title = "A" },
        { url = "https://b.org/x", title = "B" } }, out.references)
    end)
  end)
end)

describe("agents through the CLI", function()
  local pid, server, base
  setup(function() pid, server, base = start_mock() end)
  teardown(function()
    os.execute("kill -TERM " .. pid)
    server:close()
  end)

  it("select the candidate the stored history ranks best, saying why", function()
    local dir = h.tmpdir()
    local store = h.new_store(dir)
    local file = h.script([[
local sl = require "sluice"
local slow = sl.step{ name = "slow", run = function(_, ctx) ctx:sleep(0.05) return "slow" end }
local fast = sl.step{ name = "fast", run = function(_, ctx) ctx:sleep(0.001) return "fast" end }
return sl.pipeline{ name = "pick", sl.select{ name = "tool", candidates = { slow, fast },
  by = "latency", explore = 0 } }
]], dir)
    local picks = {}
    for i = 1, 4 do
      local code, out = h.cli({ "run", file, "--json" }, { env = { SLUICE_STORE = store } })
      assert.equal(0, code, out)
      local res = sl.decode(out)
      picks[i] = res.output
      if i == 4 then
        local choose
        for _, s in ipairs(res.steps) do if s.name == "choose" then choose = s end end
        assert.is_not_nil(choose)
      end
    end
    -- Each untried candidate first, then the faster one.
    assert.same({ "slow", "fast", "fast", "fast" }, picks)
    local _, list = h.cli({ "runs", "--json" }, { env = { SLUICE_STORE = store } })
    local last = sl.decode(list)[1]
    local _, shown = h.cli({ "show", "--json", last.run_id }, { env = { SLUICE_STORE = store } })
    local reason
    for _, s in ipairs(sl.decode(shown).steps) do
      if s.name == "choose" then reason = s.logs[1].fields.reason end
    end
    assert.matches("^best latency: mean latency [%d.]+ ms over %d+ executions$", reason)
    h.rm(dir)
  end)

  it("run the staged example against the mock server by one command", function()
    local asan = os.getenv("SLUICE_CHILD_ASAN_OPTIONS")
    local f = assert(io.popen((asan and ("ASAN_OPTIONS=" .. h.quote(asan) .. " ") or "")
      .. "SLUICE_BUILD=" .. h.quote(h.build) .. " SLUICE_MOCK_SERVER=" .. h.quote(MOCK)
      .. " SLUICE_STORE=" .. h.quote(h.store) .. " bash scripts/examples/demo.sh staged 2>/dev/null"))
    local out = f:read("a")
    f:close()
    local res = sl.decode(out)
    assert.is_table(res, out)
    assert.equal("How do tides work?", res.question)
    -- Both branches cite the NOAA page: it is listed once.
    local urls = {}
    for _, r in ipairs(res.references) do urls[#urls + 1] = r.url end
    assert.equal(3, #urls)
    assert.equal("https://oceanservice.noaa.gov/facts/tides.html", urls[1])
    assert.matches("Sources:\n  %[1%] What are tides%?", res.answer)
  end)

  it("resume after a crash between tool calls without calling completed ones again", function()
    local dir = h.tmpdir()
    local store = h.new_store(dir)
    local log = dir .. "/log"
    local file = h.script(([==[
local sl = require "sluice"
local function note(what)
  local f = assert(io.open(%q, "a")); f:write(what, "\n"); f:close()
end
local schema = { type = "object", properties = { n = { type = "integer" } } }
local quick = sl.step{ name = "quick", description = "Quick.", input_schema = schema,
  run = function(x) note("quick") return "q" .. x.n end }
local slow = sl.step{ name = "slow", description = "Slow.", input_schema = schema,
  run = function(x, ctx) note("slow") ctx:sleep(1.5) return "s" .. x.n end }
local a = sl.agent.chat{ base_url = %q, model = "m", tools = { quick, slow },
  headers = { ["X-Mock-Key"] = "crash" },
  prompt = [=[[[tool quick {"n": 1}]] [[tool slow {"n": 2}]]]=] }
return sl.pipeline{ name = "crashy", sl.step{ name = "ask", agent = a } }
]==]):format(log, base .. "/v1"), dir)
    local env = { SLUICE_STORE = store }
    local pid2 = h.cli({ "run", file }, { env = env, background = true })
    assert.is_true(h.wait_for(function() return h.lines(log) >= 2 end))
    -- quick completed well before; give the writer its commit.
    os.execute("sleep 0.3")
    os.execute("kill -9 " .. pid2)
    assert.is_true(h.wait_for(function() return not h.alive(pid2) end))
    local before = get(base .. "/v1/mock/stats?key=crash").requests
    assert.equal(1, before)
    local _, list = h.cli({ "runs", "--json", "--status", "interrupted" }, { env = env })
    local rows = sl.decode(list)
    assert.equal(1, #rows)
    local code, out = h.cli({ "resume", rows[1].run_id, "--json" }, { env = env })
    assert.equal(0, code, out)
    assert.equal("Tool results: q1 | s2", sl.decode(out).output)
    -- The first model turn and the quick tool were restored, not made again.
    local f = assert(io.open(log))
    local text = f:read("a")
    f:close()
    local quick_n = select(2, text:gsub("quick", ""))
    local slow_n = select(2, text:gsub("slow", ""))
    assert.equal(1, quick_n)
    assert.equal(2, slow_n)
    assert.equal(2, get(base .. "/v1/mock/stats?key=crash").requests)
    h.rm(dir)
  end)
end)
