-- A staged assistant over any OpenAI-compatible chat API, in five stages:
--
--   route     a model classifies the question (structured output: its
--             reply must match a schema, and is asked again until it does)
--   validate  the request is checked against an input schema before any
--             work is spent on it
--   execute   two branches at once: "web" searches with whichever of two
--             search tools the run history says is faster (sl.select), and
--             a writer model summarizes the hits; "docs" is an agent that
--             calls a documentation tool itself (tool calling), each call a
--             step of its own
--   compose   the branches' outputs become one response, their references
--             merged and deduplicated (sl.compose)
--   present   the response as text with numbered sources
--
-- Every model call is a step: in the history, priced from the table below
-- against the run's budget, held to the provider's rate limits, and
-- restored rather than made again when a crashed run resumes.
--
--   SLUICE_LLM_BASE_URL     the API's base URL (required), such as https://api.openai.com/v1
--   SLUICE_LLM_MODEL        the model (default gpt-4o-mini)
--   SLUICE_LLM_API_KEY_ENV  the variable that holds the API key (default OPENAI_API_KEY)
--   SLUICE_LLM_MOCK         set by scripts/examples/demo.sh: the local mock
--                           server stands in, and the prompts carry the hints
--                           it reads to call tools
--
-- Against the local mock server, one command:
--   bash scripts/examples/demo.sh staged '{"question": "How do tides work?"}'
local sl = require "sluice"

local base_url = os.getenv("SLUICE_LLM_BASE_URL")
if base_url == nil or base_url == "" then
  error("staged.lua: set SLUICE_LLM_BASE_URL to the base URL of an OpenAI-compatible API, or "
    .. "run bash scripts/examples/demo.sh staged to use the local mock server", 0)
end
local model = os.getenv("SLUICE_LLM_MODEL") or "gpt-4o-mini"
local key_env = os.getenv("SLUICE_LLM_API_KEY_ENV") or "OPENAI_API_KEY"
local mock = os.getenv("SLUICE_LLM_MOCK") ~= nil

-- Dollars per million tokens, as providers publish them.
sl.prices{ [model] = { input = 0.15, output = 0.60 } }
-- What the provider allows this account: steps wait in line for it.
sl.limits{ [model] = { concurrency = 4, requests_per_minute = 500, tokens_per_minute = 200000 } }

local function llm(opts)
  opts.base_url, opts.model, opts.api_key_env = base_url, model, key_env
  return opts
end

-- The mock server calls a tool when the prompt carries [[tool NAME ARGS]];
-- a real model decides by itself from the tools' descriptions.
local function hint(text)
  return mock and (" " .. text) or ""
end

-- 1. Route.

local classifier = sl.agent.chat(llm{
  system = "You route questions for a research assistant.",
  prompt = "Classify this question and name its topic in one or two words: {{ input.question }}",
  schema = { type = "object", additionalProperties = false, required = { "intent", "topic" },
    properties = {
      intent = { type = "string", enum = { "research", "smalltalk" } },
      topic = { type = "string", minLength = 1, maxLength = 60 } } },
  temperature = 0,
  max_tokens = 60,
})

local route = sl.step{ name = "route", description = "Classifies the question.",
  run = function(input, ctx)
    ctx.state.question = input.question
    local c = classifier(input, ctx)
    return { question = input.question, intent = c.intent, topic = c.topic }
  end }

-- 2. Validate.

local validate = sl.step{ name = "validate", description = "Checks the routed request.",
  input_schema = { type = "object", required = { "question", "intent", "topic" },
    properties = {
      question = { type = "string", minLength = 3, maxLength = 2000 },
      intent = { type = "string", enum = { "research", "smalltalk" } },
      topic = { type = "string", minLength = 1 } } },
  run = function(req) return req end }

-- 3. Execute.

-- Two search tools that do the same work; sl.select learns which is faster.
local corpus = {
  { url = "https://en.wikipedia.org/wiki/Tide", title = "Tide" },
  { url = "https://oceanservice.noaa.gov/facts/tides.html", title = "What are tides?" },
  { url = "https://en.wikipedia.org/wiki/Moon", title = "Moon" },
}
local function search(query)
  local hits = {}
  for i, doc in ipairs(corpus) do
    if i <= 2 or query:lower():find(doc.title:lower(), 1, true) then hits[#hits + 1] = doc end
  end
  return hits
end
local search_index = sl.step{ name = "search_index", run = function(q, ctx)
  ctx:sleep(0.002)     -- an index lookup
  return search(q.query)
end }
local search_crawl = sl.step{ name = "search_crawl", run = function(q, ctx)
  ctx:sleep(0.02)      -- a live crawl
  return search(q.query)
end }
local search_web = sl.select{ name = "search_web", candidates = { search_index, search_crawl },
  by = "latency" }

local writer = sl.agent.chat(llm{
  system = "You write two-sentence summaries that cite their sources by title.",
  prompt = "Question: {{ state.question }}\nSources: {{ input | json }}\nSummarize what they say.",
  max_tokens = 200,
})

local web = sl.step{ name = "web", estimate = { tokens = 800, requests = 1 },
  run = function(req, ctx)
    local hits = ctx:run(search_web, { query = req.topic })
    return { text = writer(hits, ctx), references = hits }
  end }

local lookup_docs = sl.step{ name = "lookup_docs",
  description = "Looks a topic up in the documentation; returns matching pages.",
  input_schema = { type = "object", required = { "topic" }, additionalProperties = false,
    properties = { topic = { type = "string", minLength = 1 } } },
  run = function(args)
    return { { url = "https://oceanservice.noaa.gov/facts/tides.html", title = "What are tides?",
      excerpt = "Tides are very long-period waves that move through the oceans." },
      { url = "https://docs.example.org/" .. args.topic:lower():gsub("%W+", "-"),
        title = "Notes on " .. args.topic } }
  end }

local docs_agent = sl.agent.chat(llm{
  system = "Answer from the documentation only; look topics up with the tool.",
  prompt = "{{ input.question }}" .. hint([=[[[tool lookup_docs {"topic": "tides"}]]]=]),
  tools = { lookup_docs },
  max_turns = 4,
  max_tokens = 300,
})

local docs = sl.step{ name = "docs", estimate = { tokens = 1200, requests = 2 },
  run = function(req, ctx)
    local text = docs_agent(req, ctx)
    -- The pages the tool gave for this topic are the references.
    return { text = text, references = lookup_docs.run({ topic = req.topic }) }
  end }

local execute = sl.parallel{ name = "execute", branches = { web = web, docs = docs } }

-- 4. Compose, 5. Present.

local compose = sl.step{ name = "compose", run = function(outputs)
  return sl.compose(outputs, { order = { "docs", "web" } })
end }

local present = sl.step{ name = "present", run = function(resp, ctx)
  local lines = { resp.text, "", "Sources:" }
  for i, ref in ipairs(resp.references) do
    lines[#lines + 1] = ("  [%d] %s <%s>"):format(i, ref.title or ref.url, ref.url)
  end
  return { question = ctx.state.question, answer = table.concat(lines, "\n"),
    references = resp.references }
end }

-- Smalltalk skips the research.
local smalltalk = sl.agent.chat(llm{ prompt = "{{ input.question }}", max_tokens = 100 })
local answer = sl.branch{ name = "answer", on = function(req) return req.intent end, cases = {
  research = sl.pipeline{ name = "research", execute, compose, present },
  smalltalk = sl.step{ name = "chat", run = function(req, ctx)
    return { question = req.question, answer = smalltalk(req, ctx), references = {} }
  end },
} }

return sl.pipeline{ name = "staged", budget = { cost = 0.05, tokens = 20000, requests = 20 },
  route, validate, answer }
