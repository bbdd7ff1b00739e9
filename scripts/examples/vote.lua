-- A custom step kind written by a user: "vote" asks several agents the same
-- question at once and returns the answer most of them gave.
--
--   ./build/sluice run scripts/examples/vote.lua --input '{"text":"I love it, great work"}'
--   "positive"
--
-- The agents here are plain steps with made-up latencies; in a real
-- pipeline they would be sl.step{ agent = ... } calls to different models.
local sl = require "sluice"

-- vote: runs every agent concurrently on the input (in name order, each
-- keyed by its name in the history) and returns the answer given by more
-- than half of them. Answers are compared by their JSON text, so tables
-- agree when their contents do. Without a majority the step fails, listing
-- what each agent said.
sl.kind("vote", function(step, input, ctx)
  local names = {}
  for name in pairs(step.agents) do names[#names + 1] = name end
  table.sort(names)
  local tasks = {}
  for i, name in ipairs(names) do
    tasks[i] = ctx:spawn(step.agents[name], input, name)
  end
  local answers = ctx:await(tasks)
  local count, first, said = {}, {}, {}
  local best, best_count = nil, 0
  for i, answer in ipairs(answers) do
    local key = assert(sl.encode(answer))
    count[key] = (count[key] or 0) + 1
    if first[key] == nil then first[key] = answer end
    if count[key] > best_count then best, best_count = key, count[key] end
    said[i] = names[i] .. "=" .. key
  end
  if best_count * 2 <= #names then
    error(("vote '%s': no majority among %d agents (%s)"):format(
      step.name, #names, table.concat(said, ", ")), 0)
  end
  ctx:log(("%d of %d agents answered %s"):format(best_count, #names, best))
  return first[best]
end, {
  options = { agents = function(v) return type(v) == "table", "a table of named steps" end },
  check = function(s, where)
    local n = 0
    for name, agent in pairs(s.agents or {}) do
      if type(name) ~= "string" or getmetatable(agent) ~= getmetatable(s) then
        error(("%s: vote '%s': agent %s must be a step"):format(where, s.name, tostring(name)), 0)
      end
      n = n + 1
    end
    if n == 0 then
      error(("%s: vote '%s' needs agents (agents = { name = step, ... })"):format(where, s.name), 0)
    end
  end,
})

local positive = { love = true, great = true, good = true, excellent = true, like = true }
local negative = { hate = true, bad = true, awful = true, terrible = true, dislike = true }

local function words(text)
  local list = {}
  for w in text:lower():gmatch("%a+") do list[#list + 1] = w end
  return list
end

-- Counts sentiment words.
local counter = sl.step{ name = "counter", run = function(input, ctx)
  ctx:sleep(0.02)
  local score = 0
  for _, w in ipairs(words(input.text)) do
    if positive[w] then score = score + 1 elseif negative[w] then score = score - 1 end
  end
  return score > 0 and "positive" or score < 0 and "negative" or "neutral"
end }

-- Trusts the first sentiment word it finds.
local first_word = sl.step{ name = "first_word", run = function(input, ctx)
  ctx:sleep(0.01)
  for _, w in ipairs(words(input.text)) do
    if positive[w] then return "positive" end
    if negative[w] then return "negative" end
  end
  return "neutral"
end }

-- Reads an exclamation mark as enthusiasm, and nothing else.
local excitable = sl.step{ name = "excitable", run = function(input, ctx)
  ctx:sleep(0.03)
  return input.text:find("!", 1, true) and "positive" or "neutral"
end }

return sl.pipeline{ name = "vote",
  sl.step{ kind = "vote", name = "sentiment",
    agents = { counter = counter, first_word = first_word, excitable = excitable } },
}
