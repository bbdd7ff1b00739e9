-- A LuaJIT host: loads the self-contained sluice library with the FFI and
-- runs a pipeline through the C API, waiting on the engine's descriptor
-- with poll(2) between turns.
--   luajit tests/embed/luajit_host.lua LIBSLUICE_EMBED PIPELINE_FILE
-- Prints the run's result JSON; raises on a failure.
local ffi = require "ffi"

ffi.cdef [[
typedef struct sl_engine sl_engine;
typedef struct sl_run sl_run;
int sl_engine_new(sl_engine **out, const void *opts);
void sl_engine_free(sl_engine *e);
const char *sl_engine_errmsg(const sl_engine *e);
int sl_engine_load(sl_engine *e, const char *path);
int sl_run_start(sl_engine *e, const char *name, const char *input_json, sl_run **out);
int sl_engine_poll(sl_engine *e);
int sl_engine_fd(sl_engine *e);
int sl_engine_timeout(sl_engine *e);
int sl_run_status(const sl_run *r);
const char *sl_run_result_json(sl_run *r);
void sl_run_free(sl_run *r);
struct pollfd { int fd; short events; short revents; };
int poll(struct pollfd *fds, unsigned long nfds, int timeout);
]]

local lib_path, pipeline = arg[1], arg[2]
local sl = ffi.load(lib_path)
local SL_RUN_COMPLETED, POLLIN = 1, 1

local ep = ffi.new("sl_engine *[1]")
if sl.sl_engine_new(ep, nil) ~= 0 then error(ffi.string(sl.sl_engine_errmsg(nil))) end
local e = ep[0]
local rp = ffi.new("sl_run *[1]")
if sl.sl_engine_load(e, pipeline) ~= 0
  or sl.sl_run_start(e, nil, '{"name":"Ada"}', rp) ~= 0 then
  error(ffi.string(sl.sl_engine_errmsg(e)))
end
local r = rp[0]

local pfd = ffi.new("struct pollfd[1]")
while sl.sl_engine_poll(e) > 0 do
  pfd[0].fd, pfd[0].events = sl.sl_engine_fd(e), POLLIN
  ffi.C.poll(pfd, 1, sl.sl_engine_timeout(e))
end

local status = sl.sl_run_status(r)
local json = status == SL_RUN_COMPLETED and ffi.string(sl.sl_run_result_json(r)) or nil
sl.sl_run_free(r)
sl.sl_engine_free(e)
if not json then error("the run did not complete: status " .. status) end
print(json)
