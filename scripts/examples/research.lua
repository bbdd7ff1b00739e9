-- A research assistant over any OpenAI-compatible chat API:
--
--   plan        a lead model writes a short research plan for the topic
--   research    three researchers, each with its own angle, work on the
--               plan at once
--   synthesize  the main model writes a brief from their notes; a
--               validator sends it back with its objection until it cites
--               its sources; when the main model cannot do it, or its
--               estimate no longer fits the budget, a cheaper model does
--   report      the brief, which model wrote it, and for which topic
--
-- The whole run has a budget (tokens, dollars, requests), priced from the
-- price table below. Configuration, from the environment:
--
--   SLUICE_LLM_BASE_URL     the API's base URL, such as https://api.openai.com/v1 (required)
--   SLUICE_LLM_MODEL        the main model (default gpt-4o)
--   SLUICE_LLM_CHEAP_MODEL  the cheaper fallback model (default gpt-4o-mini)
--   SLUICE_LLM_API_KEY_ENV  the variable that holds the API key (default OPENAI_API_KEY)
--
--   SLUICE_LLM_BASE_URL=http://127.0.0.1:PORT/v1 ./build/sluice run \
--     scripts/examples/research.lua --input '{"topic":"tides"}'
--
-- `bash scripts/examples/demo.sh research` runs it against the local mock server
-- (build/mock_server), whose replies echo the prompts they were given.
local sl = require "sluice"

local base_url = os.getenv("SLUICE_LLM_BASE_URL")
if base_url == nil or base_url == "" then
  error("research.lua: set SLUICE_LLM_BASE_URL to the base URL of an OpenAI-compatible "
    .. "API (such as https://api.openai.com/v1), or run bash scripts/examples/demo.sh research "
    .. "to use the local mock server", 0)
end
local model = os.getenv("SLUICE_LLM_MODEL") or "gpt-4o"
local cheap_model = os.getenv("SLUICE_LLM_CHEAP_MODEL") or "gpt-4o-mini"
local key_env = os.getenv("SLUICE_LLM_API_KEY_ENV") or "OPENAI_API_KEY"

-- Dollars per 1,000 tokens.
sl.prices{
  ["gpt-4o"] = { prompt = 0.0025, completion = 0.01 },
  ["gpt-4o-mini"] = { prompt = 0.00015, completion = 0.0006 },
}

-- The settings every agent here shares, added to its own options.
local function llm(opts)
  opts.base_url = base_url
  opts.api_key_env = key_env
  opts.model = opts.model or model
  return opts
end

local planner = sl.agent.chat(llm{
  system = "You are a research lead. Be concise.",
  prompt = "Write a research plan on {{ input.topic | trim }} in three points, one line each.",
  temperature = 0.2,
  max_tokens = 300,
})

local plan = sl.step{ name = "plan", estimate = { tokens = 600, requests = 1 },
  run = function(input, ctx)
    if type(input) ~= "table" or type(input.topic) ~= "string" or input.topic == "" then
      error('research.lua expects an input such as {"topic": "tides"}', 0)
    end
    local text, usage = planner(input, ctx)
    ctx.state.topic = input.topic
    return { topic = input.topic, plan = text }, usage
  end }

-- Each researcher looks at the plan from its own angle.
local angles = {
  history = "a historian of science tracing how the understanding of it developed",
  practice = "an engineer weighing its practical uses and risks",
  science = "a physicist explaining its mechanisms",
}
local researchers = {}
for name, role in pairs(angles) do
  researchers[name] = sl.step{ name = name, retries = 1, estimate = { tokens = 1200, requests = 1 },
    agent = sl.agent.chat(llm{
      system = "You are " .. role .. ". Answer in at most five sentences.",
      prompt = "Research plan:\n{{ input.plan }}\n\nAs " .. role .. ", what matters most "
        .. "about {{ input.topic }}?",
      temperature = 0.4,
      max_tokens = 400,
    }) }
end
local research = sl.parallel{ name = "research", branches = researchers, limit = 3 }

-- The brief must end by naming the notes it drew on; the validator's
-- objection reaches the model with its next attempt.
local sources_line = "Sources: history, practice, science"
local function cites_sources(out)
  if out.brief:find(sources_line, 1, true) then return true end
  return false, ("The brief must end with the line %q."):format(sources_line)
end

-- A synthesis step on a given model. The usage of every attempt is
-- charged as it comes, so an attempt the validator rejects is paid for too.
local function synthesis(name, model_name, estimate, fallback)
  local writer = sl.agent.chat(llm{
    model = model_name,
    system = "You write short, plain research briefs.",
    prompt = "Write a brief on {{ state.topic }} from these notes, keyed by the angle "
      .. "of the researcher who wrote them:\n{{ input | json }}\nCite your sources.",
    temperature = 0.3,
    max_tokens = 700,
  })
  return sl.step{ name = name, retries = 2, estimate = estimate, validate = cites_sources,
    fallback = fallback,
    run = function(notes, ctx)
      local brief, usage = writer(notes, ctx)
      ctx:charge(usage)
      return { brief = brief, model = model_name }
    end }
end

local cheap = synthesis("synthesize_cheap", cheap_model, { tokens = 3000, requests = 1 })
local synthesize = synthesis("synthesize", model, { tokens = 6000, requests = 1 }, cheap)

local report = sl.step{ name = "report", run = function(out, ctx)
  return { topic = ctx.state.topic, model = out.model, brief = out.brief }
end }

return sl.pipeline{ name = "research", budget = { cost = 0.50, tokens = 20000, requests = 20 },
  plan, research, synthesize, report }
