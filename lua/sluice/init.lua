-- sluice: the Lua side. The DSL (constructors that check their arguments
-- when a pipeline is defined) and the module-level API, which drives the
-- default engine of the C core.

local core = require "sluice.core"
local dsl = require "sluice.dsl"
local policies = require "sluice.policies"

core.set_runners(policies.attempt_runner, policies.fallback_runner)

local sl = {}

sl.version = core.version
sl.null = core.null
sl.array_mt = core.array_mt
--- Monotonic time in seconds.
sl.now = core.now

sl.step = dsl.step
sl.pipeline = dsl.pipeline
sl.kind_options = dsl.kind_options

-- Kinds written in Lua that every engine gets, by name. Components of the
-- Lua side add theirs with builtin(); engines made before that are updated.
local builtins = {}
local engines = setmetatable({}, { __mode = "k" })

local function adopt(eng)
  if not engines[eng] then
    engines[eng] = true
    for name, handler in pairs(builtins) do eng:kind(name, handler) end
  end
  return eng
end

--- Registers a built-in kind written in Lua into every engine.
function sl.builtin(name, handler, spec)
  dsl.declare_kind(name, spec or {}, 2)
  builtins[name] = handler
  for eng in pairs(engines) do eng:kind(name, handler) end
end

-- The engine the module-level functions use: the host's, or one made on
-- first use whose store is the one SLUICE_STORE names, if any.
local function default()
  return adopt(core.default_engine())
end

-- Options sl.run and sl.start accept.
local run_options = { budget = true }

local function check_opts(opts, fname)
  if opts == nil then return end
  if type(opts) ~= "table" then
    error(("bad argument #3 to '%s' (table expected, got %s)"):format(fname, type(opts)), 3)
  end
  for k in pairs(opts) do
    if not run_options[k] then
      error(("bad argument #3 to '%s' (unknown option '%s'%s)"):format(
        fname, tostring(k), dsl.suggest(k, run_options)), 3)
    end
  end
end

--- Runs a pipeline to completion and returns the result table.
function sl.run(pipeline, input, opts)
  check_opts(opts, "run")
  return default():run(pipeline, input, opts)
end

--- Starts a run and returns its handle at once.
function sl.start(pipeline, input, opts)
  check_opts(opts, "start")
  return default():start(pipeline, input, opts)
end

--- Continues a paused or interrupted run from the default engine's store
--- (answer: the input a paused run waits for) and returns its result.
function sl.resume(run_id, answer, opts)
  local force = opts and opts.force
  local run = default():resume(run_id, answer, force)
  return run:wait()
end

--- Advances the default engine without blocking; returns how many runs are
--- still active.
function sl.poll()
  return default():poll()
end

--- Adds or replaces a step kind: handler(step, input, ctx) returns
--- output[, usage]. spec.options lists the options its steps accept.
function sl.kind(name, handler, spec)
  if type(name) ~= "string" or name == "" then
    error(("bad argument #1 to 'kind' (kind name expected, got %s)"):format(type(name)), 2)
  end
  local ok = type(handler) == "function"
    or (getmetatable(handler) and getmetatable(handler).__call)
  if not ok then
    error(("bad argument #2 to 'kind' (function expected, got %s)"):format(type(handler)), 2)
  end
  dsl.declare_kind(name, spec, 2)
  -- Inside a file being loaded, the kind belongs to the snapshot that load
  -- builds, which is swapped in only if the whole file loads.
  local eng = core.loading_engine() or default()
  eng:kind(name, handler)
end

local engine_options = { memory_limit = true, store = true, retain = true, trace = true,
  otlp = true }

--- Makes an engine of its own, with the same methods as the module plus
--- load. opts.memory_limit caps the memory of the Lua state the engine
--- lives in, in bytes as in the C API (64 * 1024 * 1024), or as a size with
--- a unit ("64MB"): a step that allocates past it fails with kind "limit".
function sl.engine(opts)
  if opts ~= nil then
    if type(opts) ~= "table" then
      error(("bad argument #1 to 'engine' (table expected, got %s)"):format(type(opts)), 2)
    end
    for k in pairs(opts) do
      if not engine_options[k] then
        error(("bad argument #1 to 'engine' (unknown option '%s'%s)"):format(
          tostring(k), dsl.suggest(k, engine_options)), 2)
      end
    end
  end
  local limit = opts and opts.memory_limit
  if limit ~= nil then
    local ok, bytes = pcall(core.memory_bytes, limit)
    if not ok then
      error(("bad argument #1 to 'engine' (%s)"):format(tostring(bytes):gsub("^.-:%d+: ", "")), 2)
    end
    limit = bytes
  end
  local store = opts and opts.store
  if store ~= nil and type(store) ~= "string" then
    error("bad argument #1 to 'engine' (store must be a path or \":memory:\")", 2)
  end
  local retain = opts and opts.retain
  if retain ~= nil then
    local ok, what, got = dsl.check.retain(retain)
    if not ok then
      error(("bad argument #1 to 'engine' (retain must be %s, got %s)"):format(
        what, got or type(retain)), 2)
    end
  end
  local trace = opts and opts.trace
  if trace ~= nil and type(trace) ~= "string" then
    error("bad argument #1 to 'engine' (trace must be the path of a file)", 2)
  end
  local eng = core.new_engine(limit or 0, store)
  if retain ~= nil then eng:set_retain(retain) end
  if trace ~= nil then
    local ok, err = pcall(eng.set_trace, eng, trace)
    if not ok then error(("bad argument #1 to 'engine' (%s)"):format(err), 2) end
  end
  local otlp = opts and opts.otlp
  if otlp ~= nil then
    local ok, err = pcall(eng.set_otlp, eng, otlp)
    if not ok then error(("bad argument #1 to 'engine' (otlp: %s)"):format(err), 2) end
  end
  return adopt(eng)
end

--- Ends the whole run of the calling step at once, with status cancelled
--- and this reason. No retry, validator, fallback or pcall catches it.
sl.abort = core.abort

--- Ready fallback policies: by_kind, value, first, when.
sl.fallbacks = policies.fallbacks

--- A deep copy of a value; ctx.state becomes a plain table of the whole
--- state (ctx.state fills itself lazily: `next` and `rawget` see only what
--- the step has read or written so far).
sl.copy = core.copy
--- Encodes a value as JSON text; nil and a message when it cannot.
sl.encode = core.json_encode
--- Decodes JSON text; nil and a message when it is malformed.
sl.decode = core.json_decode
--- An error table of a given kind, for a step to raise: error(sl.error("validation", "..."))
sl.error = core.error

-- The parts most pipelines do without are loaded when first reached: the
-- kinds written in Lua, imports, agents (with prices and prompt
-- templates) and human steps. Reaching one of their constructors (sl.map)
-- or building a step of one of their kinds (sl.step{kind = "map"}) loads
-- the part, which then registers its kinds in every engine.
local parts = {
  { module = "sluice.kinds", names = { "parallel", "map", "loop", "branch", "router", "dag" } },
  { module = "sluice.import", names = { "import" } },
  { module = "sluice.agent", names = { "agent", "prices", "limits", "template" } },
  { module = "sluice.select", names = { "select", "compose" } },
  { module = "sluice.human", names = { "human" } },
}
local part_of = {}
for _, part in ipairs(parts) do
  for _, name in ipairs(part.names) do part_of[name] = part end
end

local function load_part(name)
  local part = part_of[name]
  if part == nil or part.loaded then return false end
  part.loaded = true
  require(part.module).install(sl, dsl)
  return true
end

setmetatable(sl, { __index = function(_, k)
  if load_part(k) then return rawget(sl, k) end
end })
dsl.on_unknown_kind = load_part

--- Loads every part now (tools that list what the module offers).
function sl.load_all()
  for name in pairs(part_of) do load_part(name) end
end

-- An engine made by a C host already exists: give it the built-in kinds.
default()

return sl
