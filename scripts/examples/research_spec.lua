-- A spec for research.lua, as its author would write it: offline, from a
-- cassette recorded once against a real endpoint, plus mocks for the
-- cases the cassette does not hold. Run it with busted:
--
--   busted scripts/examples/research_spec.lua
--
-- To record the cassette again (against the endpoint SLUICE_LLM_BASE_URL
-- names, with the key in OPENAI_API_KEY):
--
--   SLUICE_RECORD=1 SLUICE_LLM_BASE_URL=... busted scripts/examples/research_spec.lua
local testing = require "sluice.testing"

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local FILE = here .. "research.lua"
local CASSETTE = here .. "../../tests/lua/fixtures/testing/research_cassette.json"
-- Where the cassette was recorded (build/mock_server); replaying needs no
-- server, only the same URLs.
local BASE = os.getenv("SLUICE_LLM_BASE_URL") or "http://127.0.0.1:8765/v1"

local function harness(opts)
  opts = opts or {}
  return testing.new{ file = FILE, cassette = opts.cassette, env = { SLUICE_LLM_BASE_URL = BASE } }
end

describe("research.lua", function()
  it("writes a cited brief from three researchers' notes (replayed from the cassette)", function()
    local t = harness{ cassette = CASSETTE }
    local r = t:run{ topic = "tides" }
    assert.equal("completed", r.status, r.error and r.error.message)
    assert.equal("tides", r.output.topic)
    assert.equal("gpt-4o", r.output.model)
    assert.matches("Sources: history, practice, science", r.output.brief, 1, true)
    assert.equal(1, #testing.steps(r, "plan"))
    assert.equal(1, #testing.steps(r, "history"))
    t:close()
  end)

  it("sends the brief back with the validator's objection, then falls back to the cheap model", function()
    local t = harness()
    t:mock_agent("plan", "1. Moon\n2. Sun\n3. Coasts")
    for _, angle in ipairs{ "history", "practice", "science" } do
      t:mock_agent(angle, "Notes on " .. angle .. ".")
    end
    -- The main model never cites its sources; the cheap one does.
    local main = t:mock_agent("synthesize", "A brief without its sources.")
    local cheap = t:mock_agent("synthesize_cheap", "A short brief.\nSources: history, practice, science")
    local r = t:run{ topic = "tides" }
    assert.equal("completed", r.status, r.error and r.error.message)
    assert.equal("gpt-4o-mini", r.output.model)
    main:called(3)                        -- its first try and two retries
    cheap:called(1)
    -- The second try carried the validator's objection.
    local second = main.calls[2].input
    assert.matches("must end with the line", second[#second].content, 1, true)
    assert.equal("gpt-4o", main.calls[1].model)
    t:close()
  end)

  it("retries a researcher whose model is overloaded, after the server's Retry-After, in no time", function()
    local t = harness()
    t:mock_agent("plan", "1. a\n2. b\n3. c")
    t:mock_agent("history", testing.sequence{
      testing.response{ status = 429, headers = { ["retry-after"] = "20" }, body = "{}" },
      "Notes on history." })
    t:mock_agent("practice", "Notes on practice.")
    t:mock_agent("science", "Notes on science.")
    t:mock_agent("synthesize", "Brief.\nSources: history, practice, science")
    local clock = os.clock()
    local r = t:run{ topic = "tides" }
    assert.equal("completed", r.status, r.error and r.error.message)
    assert.is_true(t:time() >= 20, "the wait of 20 s was not kept on the virtual clock")
    assert.is_true(os.clock() - clock < 1)
    t:close()
  end)

  it("refuses an input without a topic, before any model is called", function()
    local t = harness()
    local plan = t:mock_agent("plan", "never")
    local r = t:run{ subject = "tides" }
    assert.equal("failed", r.status)
    assert.matches('expects an input such as {"topic": "tides"}', r.error.message, 1, true)
    plan:not_called()
    t:close()
  end)
end)
