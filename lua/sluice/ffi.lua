-- sluice from LuaJIT (Neovim, OpenResty, LÖVE) and other Lua 5.1 hosts,
-- through LuaJIT's FFI on the self-contained library (libsluice_embed),
-- whose Lua 5.4 is its own: pipelines are still Lua 5.4 files, run inside
-- the engine; the host passes tables in and gets tables out (JSON
-- underneath, through lua-cjson).
--
--   local sluice = require "sluice.ffi"
--   local e = sluice.engine{ store = "runs.db" }
--   e:load("pipeline.lua")
--   local result = e:run(nil, { name = "Ada" })   -- blocks on the engine's loop
--   local run = e:start(nil, { name = "Ada" })    -- or drive it from a host loop:
--   -- watch e:fd() for reading, wake after e:timeout() ms, call e:poll()
--
-- Written for Lua 5.1 and LuaJIT; it needs the FFI.
local ffi = require "ffi"
local cjson = require "cjson"

ffi.cdef [[
typedef struct sl_engine sl_engine;
typedef struct sl_run sl_run;
typedef struct sl_step_handle sl_step_handle;
typedef void (*sl_kind_fn)(sl_step_handle *handle, const char *input_json, void *ud);
typedef struct sl_engine_options {
  size_t size;
  void *loop;
  void *L;
  size_t memory_limit;
  const char *store;
  double retain_days;
  long long retain_keep;
  const char *trace;
  const char *otlp;
} sl_engine_options;
const char *sl_version(void);
int sl_engine_new(sl_engine **out, const sl_engine_options *opts);
void sl_engine_free(sl_engine *e);
const char *sl_engine_errmsg(const sl_engine *e);
int sl_engine_load(sl_engine *e, const char *path);
int sl_engine_reload(sl_engine *e);
int sl_run_start(sl_engine *e, const char *name, const char *input_json, sl_run **out);
int sl_run_resume(sl_engine *e, const char *run_id, const char *answer_json, int force,
                  sl_run **out);
int sl_engine_poll(sl_engine *e);
int sl_engine_fd(sl_engine *e);
int sl_engine_timeout(sl_engine *e);
int sl_run_wait(sl_run *r);
int sl_run_status(const sl_run *r);
const char *sl_run_id(const sl_run *r);
const char *sl_run_result_json(sl_run *r);
void sl_run_free(sl_run *r);
const char *sl_engine_runs_json(sl_engine *e, const char *filter_json);
int sl_engine_kind(sl_engine *e, const char *name, sl_kind_fn fn, void *ud);
int sl_step_complete(sl_step_handle *handle, const char *output_json);
int sl_step_fail(sl_step_handle *handle, const char *message);
int sl_step_cancelled(const sl_step_handle *handle);
int lua_gettop(void *L);
]]

local M = {}

local STATUS = { [0] = "running", "completed", "failed", "paused", "cancelled", "interrupted",
  "waiting" }
local CODES = { [-1] = "bad argument", [-2] = "out of memory", [-3] = "bad script",
  [-4] = "bad input", [-5] = "not found", [-6] = "busy", [-7] = "cancelled" }

local lib

--- Loads the library: path, else SLUICE_EMBED_LIB, else the installed
--- libsluice_embed.so.0. Refuses the variant that uses the system's Lua
--- 5.4, which would bind to this process's Lua and crash.
function M.open(path, level)
  if lib then return lib end
  level = level or 2
  path = path or os.getenv("SLUICE_EMBED_LIB") or "libsluice_embed.so.0"
  local ok, l = pcall(ffi.load, path)
  if not ok then
    error(("sluice.ffi: cannot load %s (%s): install libsluice_embed, or set "
      .. "SLUICE_EMBED_LIB to its path"):format(path, tostring(l)), level)
  end
  -- The self-contained library exports sl_* only; one that has Lua's API
  -- within reach is libsluice.so, on the system's Lua.
  if pcall(function() return l.lua_gettop end) then
    error(("sluice.ffi: %s is the sluice library that uses the system's Lua 5.4; in "
      .. "a LuaJIT or Lua 5.1 process load libsluice_embed.so, which has its own"):format(path), level)
  end
  if not pcall(function() return l.sl_engine_fd end) then
    error(("sluice.ffi: %s is not a sluice library this module knows (no sl_engine_fd)")
      :format(path), level)
  end
  lib = l
  return lib
end

local function encode(v)
  if v == nil then return "null" end
  return cjson.encode(v)
end

local function decode(text)
  local v = cjson.decode(text)
  if v == cjson.null then return nil end
  return v
end

local Engine = {}
Engine.__index = Engine
local Run = {}
Run.__index = Run

local function check(e, rc, what)
  if rc < 0 then
    local msg = ffi.string(lib.sl_engine_errmsg(e and e.ptr or nil))
    error(("sluice.ffi: %s: %s"):format(what, msg ~= "" and msg or (CODES[rc] or tostring(rc))), 3)
  end
  return rc
end

--- sluice.engine{ store =, memory_limit =, trace =, lib = }: a new engine
--- with a loop of its own.
function M.engine(opts)
  opts = opts or {}
  M.open(opts.lib, 3)
  local o = ffi.new("sl_engine_options")
  o.size = ffi.sizeof("sl_engine_options")
  local keep = {}
  if opts.store then keep.store = opts.store; o.store = opts.store end
  if opts.trace then keep.trace = opts.trace; o.trace = opts.trace end
  if opts.memory_limit then o.memory_limit = opts.memory_limit end
  local out = ffi.new("sl_engine *[1]")
  check(nil, lib.sl_engine_new(out, o), "sl_engine_new")
  local e = setmetatable({ ptr = ffi.gc(out[0], lib.sl_engine_free), keep = keep,
    kinds = {} }, Engine)
  return e
end

function Engine:load(path)
  check(self, lib.sl_engine_load(self.ptr, path), "load " .. tostring(path))
  return self
end

function Engine:reload()
  check(self, lib.sl_engine_reload(self.ptr), "reload")
  return self
end

local function new_run(e, ptr)
  return setmetatable({ engine = e, ptr = ffi.gc(ptr, lib.sl_run_free) }, Run)
end

--- e:start(pipeline_name | nil, input): starts a run; returns it.
function Engine:start(name, input)
  local out = ffi.new("sl_run *[1]")
  check(self, lib.sl_run_start(self.ptr, name, encode(input), out), "start")
  return new_run(self, out[0])
end

--- e:run(name, input): runs to the end on the engine's loop; returns the
--- result table (run_id, status, output, error, usage, steps).
function Engine:run(name, input)
  return self:start(name, input):wait()
end

--- e:resume(run_id[, answer[, force]]): continues a stored run.
function Engine:resume(id, answer, force)
  local out = ffi.new("sl_run *[1]")
  check(self, lib.sl_run_resume(self.ptr, id, answer ~= nil and encode(answer) or nil,
    force and 1 or 0, out), "resume " .. tostring(id))
  if out[0] == nil then return nil, "queued" end
  return new_run(self, out[0])
end

--- e:runs{ status =, pipeline =, queue =, text =, limit =, offset =,
--- before = }: the stored runs, newest first (limit 50 unless given; 0:
--- all), as `sluice runs --json` gives them.
function Engine:runs(filter)
  local j = lib.sl_engine_runs_json(self.ptr, filter ~= nil and encode(filter) or nil)
  if j == nil then check(self, -1, "runs") end
  return decode(ffi.string(j))
end

--- e:poll(): one turn that does not block; the runs still active.
function Engine:poll() return check(self, lib.sl_engine_poll(self.ptr), "poll") end
--- e:fd(): the descriptor to watch for reading.
function Engine:fd() return lib.sl_engine_fd(self.ptr) end
--- e:timeout(): ms until the engine needs a turn anyway (-1: none).
function Engine:timeout() return lib.sl_engine_timeout(self.ptr) end

--- e:kind(name, fn): a step kind the host implements in its own Lua. fn
--- gets the step's input (a table) and a handle; it returns the output, or
--- nothing and later calls handle:complete(output) or handle:fail(message)
--- (from the host's loop). A handle's step may end first (its timeout):
--- handle:cancelled() says so, and completing it then does nothing.
function Engine:kind(name, fn)
  local Handle = {}
  Handle.__index = Handle
  function Handle:complete(v) return lib.sl_step_complete(self.h, encode(v)) == 0 end
  function Handle:fail(msg) return lib.sl_step_fail(self.h, tostring(msg)) == 0 end
  function Handle:cancelled() return lib.sl_step_cancelled(self.h) == 1 end
  -- Completing runs what the step unblocks, which may call back into Lua.
  if jit then jit.off(Handle.complete); jit.off(Handle.fail) end
  local cb = ffi.cast("sl_kind_fn", function(h, input, _)
    local handle = setmetatable({ h = h }, Handle)
    local ok, out = pcall(fn, decode(ffi.string(input)), handle)
    if not ok then
      lib.sl_step_fail(h, tostring(out))
    elseif out ~= nil then
      lib.sl_step_complete(h, encode(out))
    end
  end)
  self.kinds[name] = cb   -- kept alive as long as the engine
  check(self, lib.sl_engine_kind(self.ptr, name, cb, nil), "kind " .. tostring(name))
  return self
end

function Run:status() return STATUS[lib.sl_run_status(self.ptr)] or "unknown" end
function Run:id() return ffi.string(lib.sl_run_id(self.ptr)) end

--- run:result(): the result table once the run has ended, else nil.
function Run:result()
  local j = lib.sl_run_result_json(self.ptr)
  if j == nil then return nil end
  return decode(ffi.string(j))
end

--- run:wait(): drives the engine's loop until the run ends; its result.
function Run:wait()
  local st = lib.sl_run_wait(self.ptr)
  if st < 0 then check(self.engine, st, "wait") end
  return self:result()
end

-- Callbacks into Lua from C must not come from compiled code: the calls
-- that may run a host kind's function stay interpreted.
if jit then
  for _, f in ipairs({ Engine.start, Engine.run, Engine.resume, Engine.poll, Run.wait }) do
    jit.off(f)
  end
end

M.version = function() M.open(); return ffi.string(lib.sl_version()) end

return M
