-- Rate limits: the capacity a provider gives, shared by every step that
-- calls it, so steps wait for it (suspended, in arrival order) instead of
-- failing against it.
--
--   sl.limits{ [key] = { concurrency = n, requests_per_minute = n,
--                        tokens_per_minute = n } }
--
-- key is a model name or a base URL. A request waits for each key it
-- matches, in the order it names them (its model, then its base URL). A
-- key holds:
--   concurrency          requests in flight at once
--   requests_per_minute  request starts spread evenly, one every 60/n s
--                        (the generic cell rate algorithm: no bursts that
--                        the provider's window would refuse)
--   tokens_per_minute    a bucket of that many tokens refilled evenly; a
--                        request takes its estimate when it starts and the
--                        difference from what it used when it ends
-- and, for every key a request names whether configured or not, a time
-- before which nothing starts: a 429 answer, a Retry-After or
-- Retry-After-Ms header, or x-ratelimit-remaining-* of 0 with its reset
-- set it, for everyone using that key.
--
-- Waiting is fair: the first to arrive is the first to go; only the head
-- of a key's queue watches the clock, the others are parked until the one
-- ahead of them leaves. A step stopped while it waits (a timeout, a
-- cancelled branch) leaves the queue as its to-be-closed variables run.
-- Each wait is logged on the waiting step (fields limit, waited_ms), so it
-- is in the run's history.
--
-- The state is the engine state's own: runs of one process share it,
-- processes do not (each worker holds the limit by itself).

local core = require "sluice.core"
local dsl = require "sluice.dsl"

local M = {}

local now = core.now

-- key -> { conf = {concurrency, rpm, tpm}, active, tat, tokens, refilled,
--          blocked_until, queue = {first, last, [i] = waiter} }
local keys = {}
M.keys = keys

local function state_of(key)
  local L = keys[key]
  if L == nil then
    L = { active = 0, tat = 0, tokens = nil, refilled = 0, blocked_until = 0,
          queue = { first = 1, last = 0 } }
    keys[key] = L
  end
  return L
end

local fields = { concurrency = true, requests_per_minute = true, tokens_per_minute = true }

local function positive(v)
  return (math.type(v) == "integer" and v > 0) or (math.type(v) == "float" and v > 0
    and v < math.huge)
end

--- sl.limits{...}: sets the limits of each key (replacing that key's
--- earlier ones; its waiting steps keep their place) and returns the table
--- of keys. w: the caller's file:line.
function M.set(tbl, w)
  if type(tbl) ~= "table" then
    dsl.fail(w, "sl.limits expects a table of keys (model names or base URLs) to limits, got %s",
      type(tbl))
  end
  local add = {}
  for key, conf in pairs(tbl) do
    if type(key) ~= "string" or key == "" then
      dsl.fail(w, "sl.limits: keys must be model names or base URLs (non-empty strings), got %s",
        type(key))
    end
    if type(conf) ~= "table" then
      dsl.fail(w, "sl.limits: the limits of '%s' must be a table {concurrency, "
        .. "requests_per_minute, tokens_per_minute}, got %s", key, type(conf))
    end
    for k, v in pairs(conf) do
      if not fields[k] then
        dsl.fail(w, "sl.limits: the limits of '%s' have an unknown field '%s'%s", key,
          tostring(k), dsl.suggest(k, fields))
      end
      if not positive(v) or (k == "concurrency" and math.type(v) ~= "integer") then
        dsl.fail(w, "sl.limits: '%s' of '%s' must be a positive %s, got %s", k, key,
          k == "concurrency" and "integer" or "number", tostring(v))
      end
    end
    add[key:gsub("/+$", "")] = { concurrency = conf.concurrency, rpm = conf.requests_per_minute,
      tpm = conf.tokens_per_minute }
  end
  for key, conf in pairs(add) do
    local L = state_of(key)
    L.conf = conf
    if conf.tpm then
      L.tokens = math.min(L.tokens or conf.tpm, conf.tpm)
      L.refilled = now()
    else
      L.tokens = nil
    end
  end
  return keys
end

-- The waiter at the head of L's queue, or nil.
local function head(L)
  local q = L.queue
  return q[q.first]
end

-- Takes waiters that left (stopped steps) off the head of the queue.
local function trim(q)
  while q.first <= q.last and q[q.first].gone do
    q[q.first] = nil
    q.first = q.first + 1
  end
end

-- Wakes the head of L's queue so it looks at the clock again.
local function nudge(L)
  trim(L.queue)
  local w = head(L)
  if w then w.ctx:unpark() end
end

-- Whether a request needing tokens may start now under L; if not, how
-- many seconds until it may (nil: when a request in flight ends).
local function admissible(L, need, t, waited_out)
  if L.blocked_until > t and L.blocked_until > waited_out then return false, L.blocked_until - t end
  local conf = L.conf
  if conf == nil then return true end
  if conf.concurrency and L.active >= conf.concurrency then return false, nil end
  if conf.rpm and L.tat > t then return false, L.tat - t end
  if conf.tpm then
    local rate = conf.tpm / 60
    L.tokens = math.min(conf.tpm, L.tokens + (t - L.refilled) * rate)
    L.refilled = t
    -- A request larger than the whole bucket waits for a full one.
    local want = math.min(need, conf.tpm)
    if L.tokens < want then return false, (want - L.tokens) / rate end
  end
  return true
end

local function take(L, need, t)
  local conf = L.conf
  L.active = L.active + 1
  if conf then
    if conf.rpm then L.tat = math.max(L.tat, t) + 60 / conf.rpm end
    if conf.tpm then L.tokens = L.tokens - math.min(need, conf.tpm) end
  end
end

-- A permit: what a started request holds of each key until it ends.
local Permit = {}
Permit.__index = Permit

--- Ends the request the permit was taken for: gives back its place in
--- flight and settles its token estimate against used (when known).
--- Releasing twice does nothing.
function Permit:release(used)
  if self.released then return end
  self.released = true
  for i = 1, #self do
    local L = self[i]
    L.active = L.active - 1
    if used and L.conf and L.conf.tpm and L.tokens then
      L.tokens = math.min(L.conf.tpm, L.tokens + (self.need - used))
    end
    nudge(L)
  end
end
Permit.__close = function(p) p:release() end

-- Waits (parked) until a request needing tokens may start under L, first
-- come first served, then takes its share. p holds what was taken under
-- the keys before this one: if the step is stopped while it waits, that
-- is given back as it leaves the queue. Returns the seconds waited.
local function wait_for(L, need, ctx, waited_out, p)
  local q = L.queue
  local w = { ctx = ctx }
  q.last = q.last + 1
  q[q.last] = w
  local guard <close> = setmetatable({}, { __close = function()
    if not w.done then
      w.gone = true
      if head(L) == w then nudge(L) end
      p:release()
    end
  end })
  local t0 = now()
  while true do
    if head(L) == w then
      local t = now()
      local ok, wait = admissible(L, need, t, waited_out)
      if ok then
        take(L, need, t)
        w.done = true
        q[q.first] = nil
        q.first = q.first + 1
        nudge(L)
        return t - t0
      end
      ctx:park(wait)
    else
      ctx:park()
    end
  end
end

--- Waits for capacity under every key of names (a list: model, base URL)
--- that has limits or was blocked, and returns a permit to release when
--- the request ends (a to-be-closed value), or nil when no key limits it.
--- need: its token estimate; waited_out: a block the caller has already
--- waited out itself (what M.observe returned before it slept), not
--- waited again.
function M.acquire(ctx, names, need, waited_out)
  local p
  for i = 1, #names do
    local L = keys[names[i]]
    if L ~= nil then
      need = need or 0
      waited_out = waited_out or 0
      if p == nil then p = setmetatable({ need = need }, Permit) end
      local q = L.queue
      trim(q)
      local t = now()
      if q.first > q.last and admissible(L, need, t, waited_out) then
        take(L, need, t)
      else
        local waited = wait_for(L, need, ctx, waited_out, p)
        if waited > 0.0005 then
          local ms = math.floor(waited * 1000 + 0.5)
          ctx:log("info", ("waited %d ms for the rate limit of '%s'"):format(ms, names[i]),
            { limit = names[i], waited_ms = ms })
        end
      end
      p[#p + 1] = L
    end
  end
  return p
end

-- Seconds in a reset header: "1s", "20ms", "6m0s", "1h2m3.5s", or a bare
-- number of seconds.
local function reset_seconds(v)
  if v == nil then return nil end
  v = v:match("^%s*(.-)%s*$")
  if v:match("^%d+%.?%d*$") then return tonumber(v) end
  local total, seen = 0, false
  for n, unit in v:gmatch("(%d+%.?%d*)(%a+)") do
    local mult = ({ h = 3600, m = 60, s = 1, ms = 0.001 })[unit]
    if mult == nil then return nil end
    total, seen = total + tonumber(n) * mult, true
  end
  return seen and total or nil
end
M.reset_seconds = reset_seconds

--- What an answer says of the capacity left (lowercased headers): on a
--- 429, or when x-ratelimit-remaining-requests or -tokens is 0, nothing
--- starts under these keys before the time it names (Retry-After-Ms,
--- Retry-After, the matching x-ratelimit-reset-*, or a second). Returns
--- the seconds it blocks for and the time (sl.now) it blocks until, or
--- nil.
function M.observe(names, status, hdrs, max_wait)
  hdrs = hdrs or {}
  local delay
  local function at_least(s) if s and (delay == nil or s > delay) then delay = s end end
  if status == 429 then
    local ms = tonumber(hdrs["retry-after-ms"] or "")
    if ms then at_least(ms / 1000) else
      local ra = tonumber(hdrs["retry-after"] or "")
      at_least(ra or 1)
    end
  end
  if hdrs["x-ratelimit-remaining-requests"] == "0" then
    at_least(reset_seconds(hdrs["x-ratelimit-reset-requests"]) or 1)
  end
  if hdrs["x-ratelimit-remaining-tokens"] == "0" then
    at_least(reset_seconds(hdrs["x-ratelimit-reset-tokens"]) or 1)
  end
  if delay == nil then return nil end
  if max_wait and delay > max_wait then delay = max_wait end
  local until_t = now() + delay
  for i = 1, #names do
    local L = state_of(names[i])
    if until_t > L.blocked_until then L.blocked_until = until_t end
  end
  return delay, until_t
end

--- Forgets every key's limits and state (tests).
function M.reset()
  for k in pairs(keys) do keys[k] = nil end
end

return M
