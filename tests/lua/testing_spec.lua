-- sluice.testing: a user's pipeline (fixtures/testing/support.lua) tested
-- with mocks, a cassette recorded from the mock server and replayed with
-- the server gone, and the virtual clock, as a user's busted spec would.
local sl = require "sluice"
local testing = require "sluice.testing"
local h = require "helpers"

local MOCK = os.getenv("SLUICE_MOCK_SERVER") or (h.build .. "/mock_server")
local FIXTURE = "tests/lua/fixtures/testing/support.lua"
local TOKEN = "sk-test-very-secret-4242"

local function start_mock(env)
  local server = assert(io.popen("exec env -u LD_PRELOAD " .. (env or "") .. " sh -c 'echo $$; exec "
    .. h.quote(MOCK) .. " 0'"))
  local pid = server:read("l")
  local port = assert((server:read("l") or ""):match("^listening on (%d+)$"), "the mock server did not start")
  return pid, server, "http://127.0.0.1:" .. port
end

local function stop_mock(pid, server)
  if io.type(server) ~= "file" then return end   -- stopped already
  os.execute("kill " .. pid)
  server:close()
end

-- A harness of the fixture with everything but the pause mocked.
local function mocked()
  local t = testing.new{ file = FIXTURE, env = { SUPPORT_BASE_URL = "http://127.0.0.1:9" } }
  local lookup = t:mock("lookup", function(input) return { ticket = input.ticket, query = "q" } end)
  local draft = t:mock_agent("draft", "Thanks, we are on it.")
  return t, lookup, draft
end

describe("mocks", function()
  it("replace a step by name with a value, a function or a sequence, and record each call", function()
    local t, lookup, draft = mocked()
    local polish = t:mock("polish", testing.sequence{
      testing.fail("error", "busy"), testing.fail("error", "still busy"),
      function(text, ctx) return { text = text .. "!", tries = ctx.attempt } end })
    local r, asked = t:answer({ ticket = 7 }, { approve = "yes" })
    assert.equal("completed", r.status, r.error and r.error.message)
    assert.same({ sent = true }, r.output)
    lookup:called(1):called_with({ ticket = 7 })
    draft:called(1)
    assert.equal("Draft a reply for ticket 7.", draft:last().input[1].content)
    polish:called(3)
    assert.equal(3, polish:last().attempt)
    assert.same({ "Thanks, we are on it." }, { polish:last().input })
    assert.equal(1, #asked)
    assert.equal("approve", asked[1].step)
    t:close()
  end)

  it("say what was expected when an assertion about calls fails", function()
    local t, lookup = mocked()
    t:mock("polish", "x")
    t:answer({ ticket = 1 }, { "no" })
    local ok, err = pcall(lookup.called, lookup, 2)
    assert.is_false(ok)
    assert.matches("expected mock of step 'lookup' to be called 2 times, but it was called 1 time", err, 1, true)
    ok, err = pcall(lookup.called_with, lookup, { ticket = 2 })
    assert.is_false(ok)
    assert.matches("differs at ticket: expected 2, got 1", err, 1, true)
    t:close()
  end)

  it("refuse a name no step has, suggesting the closest, at the test's line", function()
    local t = mocked()
    local ok, err = pcall(t.mock, t, "polsh", 1)
    assert.is_false(ok)
    assert.matches("the pipeline has no step named \"polsh\" (did you mean 'polish'?)", err, 1, true)
    t:close()
  end)

  it("fail the run when a sequence runs out, naming the mock", function()
    local t = mocked()
    t:mock("polish", testing.sequence{ testing.fail("error", "a"), testing.fail("error", "b") })
    local ok, err = pcall(t.run, t, { ticket = 1 })
    assert.is_false(ok)
    assert.matches("mock of step 'polish' was called 3 times, but its sequence has only 2 replies", err, 1, true)
    t:close()
  end)
end)

describe("the virtual clock", function()
  it("makes sleeps, backoff and timeouts take no time, measured as they would", function()
    local t = mocked()
    t:mock("polish", testing.sequence{ testing.fail("error", "busy"), "ok" })
    local wall = os.time()
    local clock = os.clock()
    local r = t:answer({ ticket = 3 }, { "yes" })
    assert.equal("completed", r.status, r.error and r.error.message)
    -- 300 s of cool-off, a backoff of 60 s, 10 s of sending.
    assert.is_true(t:time() >= 370, "virtual time " .. t:time())
    assert.is_true(os.clock() - clock < 1, "took " .. (os.clock() - clock) .. " s of CPU")
    assert.is_true(os.time() - wall <= 1)
    t:close()
  end)

  it("lets a timeout fire before a longer sleep ends", function()
    local t = mocked()
    t:mock("polish", "ok")
    t:mock("send", function(_, ctx) ctx:sleep(45); return "late" end)
    local r = t:answer({ ticket = 3 }, { "yes" })
    assert.equal("failed", r.status)
    assert.equal("timeout", r.error.kind)
    t:close()
  end)
end)

describe("a paused run", function()
  it("stops at the question and goes on with the answer", function()
    local t = mocked()
    t:mock("polish", "ok")
    local r, q = t:until_pause{ ticket = 5 }
    assert.equal("paused", r.status)
    assert.equal("approve", q.step)
    local done = t:resume(r, "no")
    assert.equal("completed", done.status)
    assert.same({ sent = false }, done.output)
    t:close()
  end)

  it("lets a question nobody answers time out on the virtual clock", function()
    local dir = h.tmpdir()
    local file = h.write(dir .. "/ask.lua", [[
local sl = require "sluice"
return sl.pipeline{ name = "ask",
  sl.human{ name = "approve", message = "Ship it?", timeout = 3600, on_timeout = "shelved" } }
]])
    local file2 = h.write(dir .. "/ask2.lua", [[
local sl = require "sluice"
return sl.pipeline{ name = "ask2", sl.human{ name = "approve", message = "Ship it?" } }
]])
    local t = testing.new{ file = file }
    local r = t:until_pause{}
    local before = t:time()
    local done = t:resume(r, testing.no_answer)
    assert.equal("completed", done.status, done.error and done.error.message)
    assert.equal("shelved", done.output)
    -- An hour on the harness's clock (less what passed between the two
    -- calls, outside it).
    assert.is_true(t:time() - before >= 3599, "virtual time " .. (t:time() - before))
    -- Through t:answer as well, and a question with no timeout is told apart.
    assert.equal("shelved", (t:answer({}, { testing.no_answer })).output)
    t:close()
    local t2 = testing.new{ file = file2 }
    local r2 = t2:until_pause{}
    local ok, err = pcall(t2.resume, t2, r2, testing.no_answer)
    assert.is_false(ok)
    assert.matches("waits for an answer that never times out", err, 1, true)
    t2:close()
    h.rm(dir)
  end)

  it("says how the run ended when it did not pause", function()
    local t = mocked()
    t:mock("approve", "yes")
    t:mock("polish", "ok")
    local ok, err = pcall(t.until_pause, t, { ticket = 5 })
    assert.is_false(ok)
    assert.matches("expected the run to pause for an answer, but it ended completed", err, 1, true)
    t:close()
  end)
end)

describe("a cassette", function()
  it("records against a real endpoint without its keys, then replays with the endpoint gone", function()
    local dir = h.tmpdir()
    local cassette = dir .. "/support.json"
    local pid, server, url = start_mock("MOCK_API_KEY=" .. TOKEN)
    -- A failed assertion must not leave the server running (busted would
    -- wait for it on exit).
    finally(function() stop_mock(pid, server) end)
    local env = { SUPPORT_BASE_URL = url, SUPPORT_TOKEN = TOKEN }
    local t = testing.new{ file = FIXTURE, env = env, cassette = cassette }
    t:mock("polish", "ok")
    local first = t:answer({ ticket = 11 }, { "yes" })
    t:close()
    stop_mock(pid, server)
    assert.equal("completed", first.status, first.error and first.error.message)

    local text = h.read(cassette)
    assert.is_nil(text:find(TOKEN, 1, true), "the key was written to the cassette")
    assert.matches("[REDACTED]", text, 1, true)
    local recorded = sl.decode(text)
    assert.equal(2, #recorded.interactions)
    assert.equal("lookup", recorded.interactions[1].step)
    assert.equal("draft", recorded.interactions[2].step)

    -- The endpoint is gone: the same run replays from the cassette alone.
    local t2 = testing.new{ file = FIXTURE, env = env, cassette = cassette, record = "none" }
    t2:mock("polish", "ok")
    local again = t2:answer({ ticket = 11 }, { "yes" })
    assert.equal("completed", again.status, again.error and again.error.message)
    local steps = testing.steps(again, "draft")
    assert.equal(1, #steps)
    t2:close()

    -- Another input makes another request, which the cassette does not hold.
    local t3 = testing.new{ file = FIXTURE, env = env, cassette = cassette, record = "none" }
    t3:mock("polish", "ok")
    local ok, err = pcall(t3.run, t3, { ticket = 12 })
    assert.is_false(ok)
    assert.matches("step 'lookup' made a request (GET " .. url .. "/echo?ticket=12&api_key=[REDACTED])"
      .. " that the cassette does not hold; the closest, #1 (recorded from step 'lookup'), differs at url",
      err, 1, true)
    t3:close()

    -- A changed pipeline: its prompt differs, and the error says where.
    local changed = h.read(FIXTURE):gsub("Draft a reply for ticket", "Write an answer to ticket")
    local file = h.write(dir .. "/support_v2.lua", changed)
    local t4 = testing.new{ file = file, env = env, cassette = cassette, record = "none" }
    t4:mock("polish", "ok")
    ok, err = pcall(t4.run, t4, { ticket = 11 })
    assert.is_false(ok)
    assert.matches("step 'draft' made a request (POST " .. url .. "/v1/chat/completions)", err, 1, true)
    assert.matches("differs at body.messages[1].content: recorded \"Draft a reply for ticket 11.\", "
      .. "sent \"Write an answer to ticket 11.\"", err, 1, true)
    assert.matches("record the cassette again", err, 1, true)
    t4:close()
    h.rm(dir)
  end)

  it("refuses to replay a cassette that does not exist", function()
    local ok, err = pcall(testing.new, { file = FIXTURE, env = { SUPPORT_BASE_URL = "http://x" },
      cassette = "/nonexistent/c.json", record = "none" })
    assert.is_false(ok)
    assert.matches("cassette /nonexistent/c.json does not exist", err, 1, true)
  end)
end)

describe("testing.new", function()
  it("names an unknown option and suggests the closest", function()
    local ok, err = pcall(testing.new, { file = FIXTURE, casette = "x.json" })
    assert.is_false(ok)
    assert.matches("unknown option 'casette' (did you mean 'cassette'?)", err, 1, true)
  end)
end)
