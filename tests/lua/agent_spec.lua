-- Agents (lua/sluice/agent.lua): the chat agent against the local mock
-- server's OpenAI-compatible route (scripts/mock_server.c), its usage in
-- the budget, retries and refusals, the secrecy of its key; the command
-- agent; prices; and the research example through the CLI.
local sl = require "sluice"
local agent = require "sluice.agent"
local h = require "helpers"

local MOCK = os.getenv("SLUICE_MOCK_SERVER") or (h.build .. "/mock_server")
local here = debug.getinfo(1, "S").short_src

local function line() return debug.getinfo(2, "l").currentline end

-- A variable no test environment sets: an agent keyed on it sends no key.
local UNSET = "SLUICE_AGENT_SPEC_UNSET_KEY"
local SECRET = "sk-agent-spec-0123456789-secret"

-- Starts a mock server (with MOCK_API_KEY=key when given); returns its
-- pid, its popen handle and its base URL.
local function start_mock(key)
  local env = key and ("MOCK_API_KEY=" .. h.quote(key) .. " ") or ""
  local server = assert(io.popen("exec env -u LD_PRELOAD " .. env .. "sh -c 'echo $$; exec "
    .. h.quote(MOCK) .. " 0'"))
  local pid = server:read("l")
  local port = assert((server:read("l") or ""):match("^listening on (%d+)$"), "the mock server did not start")
  return pid, server, "http://127.0.0.1:" .. port
end

local function copy(t)
  local c = {}
  for k, v in pairs(t or {}) do c[k] = v end
  return c
end

-- A ctx that records what an agent does with it: the requests it sends
-- (url, headers, decoded body), the responses it gets, the waits it asks
-- for (without waiting) and the lines it logs. Everything else goes to
-- the step's own ctx.
local function spy(ctx, rec)
  return setmetatable({
    http = function(_, req)
      rec.requests[#rec.requests + 1] = { url = req.url, headers = copy(req.headers),
        body = sl.decode(req.body) }
      local res = ctx:http(req)
      rec.responses[#rec.responses + 1] = res
      return res
    end,
    sleep = function(_, s) rec.sleeps[#rec.sleeps + 1] = s end,
    log = function(_, msg) rec.logs[#rec.logs + 1] = msg end,
  }, { __index = function(_, k)
    local v = ctx[k]
    if type(v) == "function" then return function(_, ...) return v(ctx, ...) end end
    return v
  end })
end

-- Runs a as the one step of a run (with step options opts), through a spy;
-- returns the result and the record.
local function run_agent(a, input, opts)
  local rec = { requests = {}, responses = {}, sleeps = {}, logs = {} }
  local spec = copy(opts)
  spec.name = spec.name or "ask"
  spec.run = function(x, ctx) return a(x, spy(ctx, rec)) end
  return sl.run(sl.step(spec), input), rec
end

-- The message of the error f raises.
local function err_of(f)
  local ok, e = pcall(f)
  assert.is_false(ok, "expected an error")
  return tostring(e)
end

-- Does the text hold s anywhere?
local function holds(text, s) return text:find(s, 1, true) ~= nil end

describe("agents", function()
  local pid, server, base, v1
  local kpid, kserver, kbase

  setup(function()
    pid, server, base = start_mock()
    v1 = base .. "/v1"
    kpid, kserver, kbase = start_mock(SECRET)
  end)

  teardown(function()
    for _, p in ipairs{ pid, kpid } do os.execute("kill -TERM " .. p) end
    if server then server:close() end
    if kserver then kserver:close() end
  end)

  describe("sl.agent.chat", function()
    it("sends the system message and the rendered prompt, and returns the reply and its usage", function()
      sl.prices{ ["spec-model"] = { prompt = 2, completion = 4 } }
      local a = sl.agent.chat{ base_url = v1 .. "/", model = "spec-model", system = "You study {{ input.topic }}.",
        prompt = "Tell me about {{ input.topic | upper }} and {{ state.seen | default('nothing') }}",
        temperature = 0.2, max_tokens = 50 }
      local r, rec = run_agent(a, { topic = "tides" })
      assert.equal("completed", r.status)
      assert.equal("Mock reply to: Tell me about TIDES and nothing", r.output)
      assert.equal(1, #rec.requests)
      local req = rec.requests[1]
      assert.equal(v1 .. "/chat/completions", req.url)
      assert.equal("application/json", req.headers["Content-Type"])
      assert.is_nil(req.headers.Authorization)
      assert.same({ model = "spec-model", temperature = 0.2, max_tokens = 50, messages = {
        { role = "system", content = "You study tides." },
        { role = "user", content = "Tell me about TIDES and nothing" } } }, req.body)
      -- The usage the server reported, priced from the table.
      local u = sl.decode(rec.responses[1].body).usage
      -- 3 + 6 words of prompt, 9 of reply.
      assert.same({ prompt_tokens = 9, completion_tokens = 9, total_tokens = 18 }, u)
      assert.equal(18, r.usage.tokens)
      assert.equal(1, r.usage.requests)
      assert.near(9 / 1000 * 2 + 9 / 1000 * 4, r.usage.cost, 1e-9)
    end)

    it("renders ctx.state in the prompt, and costs a model without a price at 0", function()
      local a = sl.agent.chat{ base_url = v1, model = "unpriced", prompt = "Notes: {{ state.notes | join('; ') }}" }
      local r = sl.run(sl.pipeline{ name = "p",
        sl.step{ name = "note", run = function(_, ctx) ctx.state.notes = { "high", "low" } end },
        sl.step{ name = "ask", agent = a } })
      assert.equal("Mock reply to: Notes: high; low", r.output)
      assert.equal(3 + 6, r.usage.tokens)
      assert.equal(0, r.usage.cost)
    end)

    it("adds up usage of several calls in the result, per step and in total", function()
      sl.prices{ ["spec-a"] = { prompt = 1, completion = 1 }, ["spec-b"] = { prompt = 10, completion = 0 } }
      local a = sl.agent.chat{ base_url = v1, model = "spec-a", prompt = "one two three" }
      local b = sl.agent.chat{ base_url = v1, model = "spec-b", prompt = "{{ input }}" }
      local r = sl.run(sl.pipeline{ name = "p", sl.step{ name = "a", agent = a }, sl.step{ name = "b", agent = b } })
      assert.equal("completed", r.status)
      -- a: 3 prompt words, reply "Mock reply to: one two three" (6);
      -- b: that reply as its prompt (6), reply 3 + 6 words.
      assert.same({ 9, 1 }, { r.steps[2].usage.tokens, r.steps[2].usage.requests })
      assert.same({ 15, 1 }, { r.steps[3].usage.tokens, r.steps[3].usage.requests })
      assert.equal(24, r.usage.tokens)
      assert.equal(2, r.usage.requests)
      assert.near(9 / 1000 + 6 / 1000 * 10, r.usage.cost, 1e-9)
    end)

    it("is refused by the budget before it sends anything when its estimate does not fit", function()
      local a = sl.agent.chat{ base_url = v1, model = "m", prompt = "hello" }
      local rec = { requests = {}, responses = {}, sleeps = {}, logs = {} }
      local r = sl.run(sl.pipeline{ name = "p", budget = { tokens = 100 },
        sl.step{ name = "big", estimate = { tokens = 500 }, run = function(x, ctx) return a(x, spy(ctx, rec)) end } })
      assert.equal("failed", r.status)
      assert.equal("quota", r.error.kind)
      assert.equal(0, #rec.requests)
    end)

    it("fails the run when the usage the server reports overruns the budget", function()
      local a = sl.agent.chat{ base_url = v1, model = "m", prompt = "a prompt of six words here" }
      local after = false
      local r = sl.run(sl.pipeline{ name = "p", budget = { tokens = 10 }, sl.step{ name = "ask", agent = a },
        sl.step{ name = "after", run = function() after = true end } })
      assert.equal("failed", r.status)
      assert.equal("quota", r.error.kind)
      assert.matches("step 'ask' overran the budget: tokens budget overrun", r.error.message, 1, true)
      assert.equal(6 + 9, r.usage.tokens)
      assert.is_false(after)
    end)

    it("retries 429 answers as long as Retry-After says, then reads the answer", function()
      local a = sl.agent.chat{ endpoint = base .. "/retry-after?n=2&key=agent-spec-1&ms=1500", model = "m",
        prompt = "hi", retries = 3 }
      local r, rec = run_agent(a)
      -- Two 429s, each asking for 1.5 s, then the route's own 200 answer,
      -- which counts the requests it saw and is no chat completion.
      assert.same({ 1.5, 1.5 }, rec.sleeps)
      assert.equal(3, #rec.requests)
      assert.equal("failed", r.status)
      assert.equal("error", r.error.kind)
      assert.matches('the response has no choices[1].message.content (finish_reason absent): {"attempt": 3}',
        r.error.message, 1, true)
      assert.equal(2, #rec.logs)
      assert.matches("HTTP 429; attempt 2 of 4 in 1.5 s (Retry-After-Ms)", rec.logs[1], 1, true)
      -- Every request made counts, the refused ones too.
      assert.equal(3, r.usage.requests)
    end)

    it("gives up after its retries, waiting on the engine's clock, with the last answer's message", function()
      local a = sl.agent.chat{ endpoint = base .. "/retry-after?n=5&key=agent-spec-2&ms=0", model = "m",
        prompt = "hi", retries = 2 }
      local r = sl.run(sl.step{ name = "ask", agent = a })
      assert.equal("failed", r.status)
      assert.equal("error", r.error.kind)
      assert.matches("POST " .. base .. "/retry-after: HTTP 429 after 3 attempts: rate limited (3 of 5)",
        r.error.message, 1, true)
      assert.equal(3, r.usage.requests)
    end)

    it("backs off exponentially on 5xx answers without Retry-After, and does not retry other 4xx", function()
      local a = sl.agent.chat{ base_url = v1, model = "m", prompt = "hi", retries = 3,
        headers = { ["X-Mock-Status"] = "503" } }
      local r, rec = run_agent(a)
      assert.same({ 0.5, 1, 2 }, rec.sleeps)
      assert.equal(4, #rec.requests)
      assert.equal("503", rec.requests[1].headers["X-Mock-Status"])
      assert.matches("HTTP 503 after 4 attempts: status forced by X-Mock-Status", r.error.message, 1, true)
      local bad = sl.agent.chat{ base_url = v1, model = "m", prompt = "hi", headers = { ["X-Mock-Status"] = "422" } }
      r, rec = run_agent(bad)
      assert.equal(1, #rec.requests)
      assert.same({}, rec.sleeps)
      assert.equal("error", r.error.kind)
      assert.equal("POST " .. v1 .. "/chat/completions: HTTP 422: status forced by X-Mock-Status", r.error.message)
    end)

    it("works out waits from Retry-After-Ms, Retry-After seconds or date, capped at 30 s", function()
      assert.same({ 0.25, "Retry-After-Ms" }, { agent.retry_delay({ ["retry-after-ms"] = "250", ["retry-after"] = "1" }, 1) })
      assert.same({ 7, "Retry-After" }, { agent.retry_delay({ ["retry-after"] = "7" }, 1) })
      assert.same({ 30, "Retry-After" }, { agent.retry_delay({ ["retry-after"] = "3600" }, 1) })
      assert.same({ 1, "Retry-After (a date)" }, { agent.retry_delay({ ["retry-after"] = "Wed, 21 Oct 2015 07:28:00 GMT" }, 1) })
      local waits = {}
      for n = 1, 8 do waits[n] = agent.retry_delay({}, n) end
      assert.same({ 0.5, 1, 2, 4, 8, 16, 30, 30 }, waits)
    end)

    it("says the endpoint refused the API key on 401, without retrying, naming the variable", function()
      local a = sl.agent.chat{ base_url = kbase .. "/v1", model = "m", prompt = "hi", api_key_env = UNSET }
      local r, rec = run_agent(a)
      assert.equal("failed", r.status)
      assert.equal("error", r.error.kind)
      assert.equal(1, #rec.requests)
      assert.is_nil(rec.requests[1].headers.Authorization)
      assert.equal("POST " .. kbase .. "/v1/chat/completions: the endpoint refused the API key "
        .. "(HTTP 401; no key was sent: $" .. UNSET .. " is not set)", r.error.message)
      a = sl.agent.chat{ base_url = kbase .. "/v1", model = "m", prompt = "hi", api_key_env = "PATH" }
      r, rec = run_agent(a)
      assert.equal("Bearer " .. os.getenv("PATH"), rec.requests[1].headers.Authorization)
      assert.matches("the endpoint refused the API key (HTTP 401; the key from $PATH)", r.error.message, 1, true)
    end)

    it("with json = true asks for a JSON object and returns the decoded reply", function()
      local a = sl.agent.chat{ base_url = v1, model = "m", prompt = "three little words", json = true }
      local r, rec = run_agent(a)
      assert.equal("completed", r.status)
      assert.same({ type = "json_object" }, rec.requests[1].body.response_format)
      assert.same({ reply = "three little words", words = 3 }, r.output)
      assert.equal("integer", math.type(r.output.words))
      local fenced = sl.agent.chat{ base_url = v1, model = "m", prompt = "x", json = true,
        headers = { ["X-Mock-Content"] = '```json {"a": [1, 2]} ```' } }
      assert.same({ a = { 1, 2 } }, sl.run(sl.step{ name = "f", agent = fenced }).output)
    end)

    it("with json = true fails with kind validation on a reply that is not JSON, and the retry sees why", function()
      local a = sl.agent.chat{ base_url = v1, model = "m", prompt = "give me data", json = true,
        headers = { ["X-Mock-Content"] = "Sure! Here it is." } }
      local r, rec = run_agent(a, nil, { retries = 1 })
      assert.equal("failed", r.status)
      assert.equal("validation", r.error.kind)
      assert.matches("the model's reply is not valid JSON (", r.error.message, 1, true)
      assert.matches("The reply began: Sure! Here it is.", r.error.message, 1, true)
      assert.equal(2, #rec.requests)
      assert.equal("give me data", rec.requests[1].body.messages[1].content)
      local second = rec.requests[2].body.messages[1].content
      assert.equal("give me data\n\nYour previous answer was rejected: " .. r.error.message
        .. "\nAnswer again, correcting this.", second)
      -- Both attempts used tokens, and both are charged.
      local t = 0
      for _, res in ipairs(rec.responses) do t = t + sl.decode(res.body).usage.total_tokens end
      assert.equal(t, r.usage.tokens)
    end)

    it("puts the feedback where the prompt says, when it uses it", function()
      local a = sl.agent.chat{ base_url = v1, model = "m",
        prompt = "Write a haiku.{{ feedback | default('') }}" }
      local seen = 0
      local r = sl.run(sl.step{ name = "poet", agent = a, retries = 1, validate = function(out)
        seen = seen + 1
        return seen > 1, " Count the syllables."
      end })
      assert.equal("completed", r.status)
      assert.equal("Mock reply to: Write a haiku. Count the syllables.", r.output)
    end)

    it("fails with kind error naming the endpoint when the response is not JSON", function()
      local a = sl.agent.chat{ endpoint = base .. "/malformed?token=abc", model = "m", prompt = "hi" }
      local l = line() - 1
      local r = sl.run(sl.step{ name = "ask", agent = a })
      assert.equal("error", r.error.kind)
      assert.matches("^POST " .. base:gsub("%p", "%%%0") .. "/malformed: the endpoint answered with malformed JSON %(",
        r.error.message)
      assert.is_nil(r.error.message:find("token=abc", 1, true))
      assert.equal(here .. ":" .. l, r.error.where)
    end)

    it("places a failure to connect at the agent's definition", function()
      local a = sl.agent.chat{ base_url = "http://127.0.0.1:1/v1", model = "m", prompt = "hi" }
      local l = line() - 1
      local r = sl.run(sl.step{ name = "ask", agent = a })
      assert.equal("error", r.error.kind)
      assert.matches("POST http://127.0.0.1:1/v1/chat/completions failed:", r.error.message, 1, true)
      assert.equal(here .. ":" .. l, r.error.where)
      assert.equal("ask", r.error.step)
    end)

    it("checks its options where it is defined", function()
      local l
      local msg = err_of(function() l = line() + 1
        sl.agent.chat{ base_url = v1, modle = "m", prompt = "x" }
      end)
      assert.equal(here .. ":" .. l .. ": sl.agent.chat: unknown option 'modle' (did you mean 'model'?)", msg)
      local cases = {
        { { base_url = v1, model = "m", prompt = "x", temperature = "hot" },
          "option 'temperature' must be a number from 0 to 2, got string" },
        { { base_url = v1, model = "m", prompt = "x", max_tokens = 1.5 }, "option 'max_tokens' must be a positive integer, got number" },
        { { base_url = v1, model = "m", prompt = "x", retries = -1 }, "option 'retries' must be a non-negative integer" },
        { { base_url = v1, model = "m", prompt = "x", json = "yes" }, "option 'json' must be true or false, got string" },
        { { base_url = "ftp://x", model = "m", prompt = "x" }, "option 'base_url' must be an http:// or https:// URL, got a string that is not one" },
        { { model = "m", prompt = "x" }, "option 'base_url' is required" },
        { { base_url = v1, endpoint = v1, model = "m", prompt = "x" }, "takes base_url or endpoint, not both" },
        { { base_url = v1, prompt = "x" }, "option 'model' is required" },
        { { base_url = v1, model = "m" }, "option 'prompt' is required" },
        { { base_url = v1, model = "m", prompt = "x", headers = { Authorization = "Bearer x" } },
          "name the variable holding the key with api_key_env instead" },
        { "nope", "sl.agent.chat: expects a table of options, got string" },
      }
      for _, c in ipairs(cases) do
        assert.matches(c[2], err_of(function() local a = sl.agent.chat(c[1]); return a end), 1, true)
      end
    end)

    it("never repeats a key given by mistake where a variable name belongs", function()
      local msg = err_of(function() local a = sl.agent.chat{ base_url = v1, model = "m", prompt = "x",
        api_key_env = SECRET }; return a end)
      assert.matches("option 'api_key_env' must be the name of an environment variable", msg, 1, true)
      assert.is_nil(msg:find(SECRET, 1, true))
      msg = err_of(function() local a = sl.agent.chat{ base_url = v1, model = "m", prompt = "x",
        api_key = SECRET }; return a end)
      assert.matches("unknown option 'api_key' (did you mean 'api_key_env'?)", msg, 1, true)
      assert.is_nil(msg:find(SECRET, 1, true))
    end)

    it("compiles its prompt when it is defined: a template mistake names its line and column", function()
      local l
      local msg = err_of(function() l = line() + 1
        sl.agent.chat{ base_url = v1, model = "m", prompt = "About {{ input.topic | uper }}" }
      end)
      assert.equal(here .. ":" .. l .. ": template error at column 24: unknown filter 'uper' (did you mean 'upper'?)", msg)
      msg = err_of(function() l = line() + 1
        sl.agent.chat{ base_url = v1, model = "m", prompt = "About {{ topic }}" }
      end)
      assert.equal(here .. ":" .. l .. ": template error at column 10: unknown name 'topic'; "
        .. "a template here can use feedback, input and state", msg)
    end)

    it("is a callable whose fields are its configuration, so steps using it are versioned by it", function()
      local a = sl.agent.chat{ base_url = v1, model = "m", prompt = "p {{ input }}", json = true }
      assert.equal("chat", a.kind)
      assert.equal("m", a.model)
      assert.equal("p {{ input }}", a.prompt)
      assert.equal(v1 .. "/chat/completions", a.endpoint)
      assert.matches("^chat agent %(defined at " .. here:gsub("%p", "%%%0") .. ":%d+%)$", tostring(a))
      -- Two steps alike but for their agent's prompt share no cache entry.
      local function cached(prompt)
        local inner = sl.agent.chat{ base_url = v1, model = "m", prompt = prompt }
        return sl.step{ name = "cached", cache = true, agent = inner }
      end
      local s1, s2 = cached("first {{ input }}"), cached("second {{ input }}")
      assert.equal("Mock reply to: first x", sl.run(s1, "x").output)
      assert.equal("Mock reply to: second x", sl.run(s2, "x").output)
      assert.is_true(sl.run(s1, "x").steps[1].cached)
    end)
  end)

  describe("the API key", function()
    -- A pipeline file calling the keyed mock with the key from $SPEC_KEY;
    -- with status, the mock answers that status (after checking the key).
    local function pipeline_file(url, status)
      return h.script(([[
        local sl = require "sluice"
        local ask = sl.agent.chat{ base_url = %q, model = "m", api_key_env = "SPEC_KEY",
          prompt = "Hello {{ input.name }}", retries = 1, headers = %s }
        return sl.pipeline{ name = "keyed", sl.step{ name = "ask", agent = ask } }
      ]]):format(url, status and ('{ ["X-Mock-Status"] = "%d" }'):format(status) or "nil"))
    end

    it("is sent, and appears nowhere in the output, history or errors", function()
      local code, out, err = h.cli({ "run", pipeline_file(kbase .. "/v1"), "--input", '{"name":"Ada"}', "--json" },
        { env = { SPEC_KEY = SECRET } })
      assert.equal(0, code)
      assert.equal("Mock reply to: Hello Ada", sl.decode(out).output)
      assert.is_false(holds(out, SECRET) or holds(err, SECRET))
      -- A wrong key: refused, and the key named only by its variable.
      code, out, err = h.cli({ "run", pipeline_file(kbase .. "/v1"), "--input", '{"name":"Ada"}', "--json" },
        { env = { SPEC_KEY = SECRET .. "-wrong" } })
      assert.equal(1, code)
      local res = sl.decode(out)
      assert.equal("error", res.error.kind)
      assert.matches("the endpoint refused the API key (HTTP 401; the key from $SPEC_KEY)", res.error.message, 1, true)
      assert.is_false(holds(out, SECRET) or holds(err, SECRET))
      -- Error answers, after a retry that is logged.
      code, out, err = h.cli({ "run", pipeline_file(kbase .. "/v1", 503), "--json" }, { env = { SPEC_KEY = SECRET } })
      assert.equal(1, code)
      assert.matches("HTTP 503 after 2 attempts", sl.decode(out).error.message, 1, true)
      assert.matches("HTTP 503; attempt 2 of 2 in 0.5 s (backoff)", err, 1, true)
      assert.is_false(holds(out, SECRET) or holds(err, SECRET))
    end)

    it("leaves no part of itself in a message quoting an answer that echoed it", function()
      -- The key starts a few characters before the 200 a message quotes.
      for _, dots in ipairs{ 140, 150, 160, 165 } do
        local file = h.script(([[
          local sl = require "sluice"
          local ask = sl.agent.chat{ base_url = %q, model = "m", api_key_env = "SPEC_KEY",
            prompt = "hi", retries = 0,
            headers = { ["X-Mock-Status"] = "400", ["X-Mock-Echo-Auth"] = "%d" } }
          return sl.pipeline{ name = "echo", sl.step{ name = "ask", agent = ask } }
        ]]):format(kbase .. "/v1", dots))
        local code, out, err = h.cli({ "run", file, "--json" }, { env = { SPEC_KEY = SECRET } })
        assert.equal(1, code)
        local msg = sl.decode(out).error.message
        assert.matches("HTTP 400", msg, 1, true)
        for cut = 6, #SECRET do
          assert.is_nil((out .. err):find(SECRET:sub(1, cut), 1, true), dots .. " dots leak " .. cut)
        end
      end
    end)

    it("is not passed to programs a step runs unless their env names it", function()
      local file = h.script([[
        local sl = require "sluice"
        local ask = sl.agent.chat{ base_url = "http://127.0.0.1:9/v1", model = "m",
          api_key_env = "SPEC_KEY", prompt = "hi" }
        local function show(env)
          return sl.step{ name = "show", run = function(_, ctx)
            local r = ctx:exec({ "sh", "-c", "printf %s \"${SPEC_KEY-unset}\"" }, { env = env })
            return r.stdout
          end }
        end
        return { plain = sl.pipeline{ name = "plain", show(nil) },
                 asked = sl.pipeline{ name = "asked", show({ SPEC_KEY = true }) } }
      ]])
      local code, out = h.cli({ "run", file, "--pipeline", "plain" }, { env = { SPEC_KEY = SECRET } })
      assert.equal(0, code)
      assert.equal('"unset"\n', out)
      code, out = h.cli({ "run", file, "--pipeline", "asked" }, { env = { SPEC_KEY = SECRET } })
      assert.equal(0, code)
      assert.equal('"' .. SECRET .. '"\n', out)
    end)
  end)

  describe("sl.agent.command", function()
    it("sends its input as JSON on stdin and returns the JSON the program prints", function()
      local a = sl.agent.command{ argv = { "sh", "-c", 'read -r x; printf \'{"got": %s, "n": 2}\' "$x"' } }
      local r = sl.run(sl.step{ name = "cmd", agent = a }, { list = { 1, 2 }, s = "é" })
      assert.equal("completed", r.status)
      assert.same({ got = { list = { 1, 2 }, s = "é" }, n = 2 }, r.output)
      assert.equal("integer", math.type(r.output.n))
    end)

    it("passes env and cwd to the program", function()
      local dir = h.tmpdir()
      local a = sl.agent.command{ argv = { "sh", "-c", 'printf \'["%s", "%s"]\' "$SPEC_VAR" "$(pwd -P)"' },
        env = { SPEC_VAR = "v1" }, cwd = dir }
      local r = sl.run(sl.step{ name = "cmd", agent = a })
      local real = io.popen("cd " .. h.quote(dir) .. " && pwd -P"):read("l")
      h.rm(dir)
      assert.same({ "v1", real }, r.output)
    end)

    it("fails with the exit code and the end of stderr when the program fails", function()
      local a = sl.agent.command{ argv = { "sh", "-c", "echo starting >&2; echo 'bad input: no title' >&2; exit 3" } }
      local l = line() - 1
      local r = sl.run(sl.step{ name = "cmd", agent = a }, {})
      assert.equal("error", r.error.kind)
      assert.equal("command 'sh' exited with code 3: starting\nbad input: no title", r.error.message)
      assert.equal(here .. ":" .. l, r.error.where)
      local long = sl.agent.command{ argv = { "sh", "-c", "i=0; while [ $i -lt 200 ]; do echo line $i >&2; i=$((i+1)); done; exit 1" } }
      r = sl.run(sl.step{ name = "cmd", agent = long })
      assert.matches("exited with code 1: ...", r.error.message, 1, true)
      assert.matches("line 199$", r.error.message)
      assert.is_nil(r.error.message:find("line 1\n", 1, true))
    end)

    it("fails naming the program when it prints no JSON, or nothing", function()
      local a = sl.agent.command{ argv = { "echo", "not json" } }
      local r = sl.run(sl.step{ name = "cmd", agent = a })
      assert.equal("error", r.error.kind)
      assert.matches("^command 'echo' printed invalid JSON on stdout %(.*%): not json$", r.error.message)
      r = sl.run(sl.step{ name = "cmd", agent = sl.agent.command{ argv = { "true" } } })
      assert.equal("command 'true' printed nothing on stdout; it must print its output as JSON", r.error.message)
    end)

    it("reports a program killed by a signal, one that cannot start, and a timeout", function()
      local r = sl.run(sl.step{ name = "cmd", agent = sl.agent.command{ argv = { "sh", "-c", "kill -9 $$" } } })
      assert.matches("command 'sh' was killed by signal 9", r.error.message, 1, true)
      r = sl.run(sl.step{ name = "cmd", agent = sl.agent.command{ argv = { "no-such-program-sluice" } } })
      assert.equal("error", r.error.kind)
      assert.matches("cannot run 'no-such-program-sluice'", r.error.message, 1, true)
      r = sl.run(sl.step{ name = "cmd", agent = sl.agent.command{ argv = { "sleep", "30" }, timeout = 0.05 } })
      assert.equal("timeout", r.error.kind)
    end)

    it("fails when its input cannot be sent as JSON", function()
      local r = sl.run(sl.step{ name = "cmd", agent = sl.agent.command{ argv = { "cat" } } }, nil)
      assert.equal("completed", r.status)
      assert.is_nil(r.output)
      local s = sl.pipeline{ name = "p", sl.step{ name = "f", run = function() return { f = print } end },
        sl.step{ name = "cmd", agent = sl.agent.command{ argv = { "cat" } } } }
      r = sl.run(s)
      assert.matches("command 'cat': its input cannot be sent as JSON", r.error.message, 1, true)
    end)

    it("checks its options where it is defined", function()
      local l
      local msg = err_of(function() l = line() + 1
        sl.agent.command{ argv = { "cat" }, timout = 1 }
      end)
      assert.equal(here .. ":" .. l .. ": sl.agent.command: unknown option 'timout' (did you mean 'timeout'?)", msg)
      assert.matches("option 'argv' is required", err_of(function() local a = sl.agent.command{}; return a end), 1, true)
      assert.matches("option 'argv' must be a non-empty list of strings (the program and its arguments), got table",
        err_of(function() local a = sl.agent.command{ argv = {} }; return a end), 1, true)
      assert.matches("got a list whose item #2 is a number",
        err_of(function() local a = sl.agent.command{ argv = { "a", 2 } }; return a end), 1, true)
      assert.matches("option 'env' must be a table of variable names to strings",
        err_of(function() local a = sl.agent.command{ argv = { "a" }, env = { X = 1 } }; return a end), 1, true)
    end)
  end)

  describe("sl.prices", function()
    it("merges prices into one table and returns it", function()
      local t = sl.prices{ ["spec-p1"] = { prompt = 1, completion = 2 } }
      local t2 = sl.prices{ ["spec-p2"] = { prompt = 0.5, completion = 0 } }
      assert.equal(t, t2)
      assert.same({ prompt = 1, completion = 2 }, t["spec-p1"])
      assert.same({ prompt = 0.5, completion = 0 }, t["spec-p2"])
      assert.equal(t, sl.prices())
    end)

    it("refuses bad prices at the caller's line, adding none of them", function()
      local l
      local msg = err_of(function() l = line() + 1
        sl.prices{ ["spec-ok"] = { prompt = 1, completion = 1 }, ["spec-bad"] = { promt = 1, completion = 1 } }
      end)
      assert.equal(here .. ":" .. l .. ": sl.prices: the price of 'spec-bad' has an unknown field 'promt' (did you mean 'prompt'?)", msg)
      assert.is_nil(sl.prices()["spec-ok"])
      assert.matches("the prompt price of 'x' must be a non-negative number",
        err_of(function() sl.prices{ x = { prompt = -1, completion = 1 } } end), 1, true)
      assert.matches("the price of 'x' needs both prompt and completion",
        err_of(function() sl.prices{ x = { prompt = 1 } } end), 1, true)
      assert.matches("sl.prices expects a table", err_of(function() sl.prices("cheap") end), 1, true)
    end)
  end)

  describe("the research example", function()
    local file = "scripts/examples/research.lua"
    local input = '{"topic":"tides"}'

    it("runs end to end against the mock server: plan, research, refined synthesis, report", function()
      local env = { SLUICE_LLM_BASE_URL = v1 }
      local code, out, err = h.cli({ "run", file, "--input", input, "--json" }, { env = env })
      assert.equal(0, code, err)
      local r = sl.decode(out)
      assert.equal("completed", r.status)
      assert.equal("tides", r.output.topic)
      assert.equal("gpt-4o", r.output.model)
      local brief = r.output.brief
      assert.matches("^Mock reply to: Write a brief on tides from these notes", brief)
      -- The researchers' notes, in the order of their names.
      local h1, p1, s1 = brief:find('"history":', 1, true), brief:find('"practice":', 1, true), brief:find('"science":', 1, true)
      assert.is_true(h1 < p1 and p1 < s1)
      assert.matches("As a physicist explaining its mechanisms, what matters most about tides?", brief, 1, true)
      -- The validator's objection came back to the model, which complied.
      assert.matches('Your previous answer was rejected: The brief must end with the line "Sources: history, practice, science".',
        brief, 1, true)
      local by_name, tokens = {}, 0
      for _, s in ipairs(r.steps) do
        by_name[s.name] = s
        if s.usage then tokens = tokens + s.usage.tokens end
      end
      assert.equal(2, by_name.synthesize.attempts)
      assert.equal("completed", by_name.science.status)
      assert.equal(tokens, r.usage.tokens)
      assert.equal(6, r.usage.requests)
      assert.is_true(r.usage.cost > 0)
      -- The same input gives the same output.
      local code2, out2 = h.cli({ "run", file, "--input", input }, { env = env })
      assert.equal(0, code2)
      assert.same(r.output, sl.decode(out2))
    end)

    it("falls back to the cheaper model when the main one's estimate does not fit the budget", function()
      local code, out, err = h.cli({ "run", file, "--input", input, "--json", "--budget", "tokens=5000" },
        { env = { SLUICE_LLM_BASE_URL = v1, SLUICE_LLM_CHEAP_MODEL = "spec-cheap" } })
      assert.equal(0, code, err)
      local r = sl.decode(out)
      assert.equal("spec-cheap", r.output.model)
      assert.is_true(r.usage.tokens <= 5000)
      local fell = false
      for _, s in ipairs(r.steps) do
        if s.name == "synthesize_cheap" then fell = s.status == "completed" end
      end
      assert.is_true(fell)
    end)

    it("says what to set when SLUICE_LLM_BASE_URL is not set", function()
      local code, _, err = h.cli({ "run", file, "--input", input }, { env = { SLUICE_LLM_BASE_URL = "" } })
      assert.equal(2, code)
      assert.matches("set SLUICE_LLM_BASE_URL to the base URL of an OpenAI-compatible API", err, 1, true)
    end)
  end)
end)
