-- Shared helpers for the specs: running the sluice CLI as a real process,
-- and writing throwaway pipeline files.
local M = {}

M.bin = os.getenv("SLUICE_BIN") or "build/sluice"
M.build = os.getenv("SLUICE_BUILD") or "build"

local tmpdir = os.getenv("TMPDIR") or "/tmp"
local counter = 0

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.quote = shell_quote

--- A fresh temporary directory, removed at process exit by the OS's tmp
--- cleaning; specs remove what they make with M.rm.
function M.tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(os.execute("mkdir -p " .. shell_quote(p)))
  return p
end

function M.rm(path)
  os.execute("rm -rf " .. shell_quote(path))
end

function M.read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

--- The contents of a file, or "" when it does not exist (yet).
function M.peek(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

function M.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

--- Writes text to a new .lua file in dir (or a new temp dir) and returns
--- its path.
function M.script(text, dir, name)
  counter = counter + 1
  dir = dir or M.tmpdir()
  local path = dir .. "/" .. (name or ("p" .. counter .. ".lua"))
  return M.write(path, text)
end

--- Runs the CLI with the given argument list; returns exit code, stdout
--- and stderr. opts.stdin feeds standard input; opts.env adds variables.
-- Every CLI the specs start uses a store of this process's own, unless a
-- spec names one, so the specs never touch .sluice/ in the source tree.
M.store = os.tmpname() .. ".db"

function M.cli(args, opts)
  opts = opts or {}
  local out, err = os.tmpname(), os.tmpname()
  local parts = {}
  if not (opts.env and opts.env.SLUICE_STORE) then
    parts[#parts + 1] = "SLUICE_STORE=" .. shell_quote(M.store)
  end
  local child_asan = os.getenv("SLUICE_CHILD_ASAN_OPTIONS")
  if child_asan then parts[#parts + 1] = "ASAN_OPTIONS=" .. shell_quote(child_asan) end
  for k, v in pairs(opts.env or {}) do parts[#parts + 1] = k .. "=" .. shell_quote(v) end
  parts[#parts + 1] = shell_quote(M.bin)
  for _, a in ipairs(args) do parts[#parts + 1] = shell_quote(a) end
  local cmd = table.concat(parts, " ")
  if opts.stdin then
    local inp = M.write(os.tmpname(), opts.stdin)
    cmd = cmd .. " <" .. shell_quote(inp)
  else
    cmd = cmd .. " </dev/null"
  end
  cmd = cmd .. " >" .. shell_quote(out) .. " 2>" .. shell_quote(err)
  if opts.background then
    -- Started and left running: returns its pid and the paths of its output.
    local pid = io.popen(cmd .. " & echo $!"):read("l")
    return tonumber(pid), out, err
  end
  local ok, how, code = os.execute(cmd)
  local stdout, stderr = M.read(out), M.read(err)
  os.remove(out)
  os.remove(err)
  if how == "signal" then code = 128 + code end
  return code, stdout, stderr
end

local databases = 0

--- A new, empty store for a test: a PostgreSQL database of its own when
--- the specs run beside a server (tests/pg_env.sh sets SLUICE_TEST_PG),
--- else an SQLite file in dir.
function M.new_store(dir)
  local base = os.getenv("SLUICE_TEST_PG")
  if not base then return dir .. "/s.db" end
  databases = databases + 1
  local name = ("t%d_%d"):format(math.floor(os.time() % 100000), databases)
  name = name .. "_" .. tostring(math.random(1000000))
  assert(os.execute("env -u LD_PRELOAD psql -q " .. shell_quote(base) ..
    " -c " .. shell_quote("CREATE DATABASE " .. name) .. " >/dev/null"))
  return (base:gsub("/sluice%?", "/" .. name .. "?"))
end

--- Whether process pid still runs. A killed process whose parent has gone
--- is a zombie until init reaps it, which kill -0 still finds: it counts
--- as gone.
function M.alive(pid)
  local f = io.open("/proc/" .. tostring(pid) .. "/stat")
  if not f then return false end
  local stat = f:read("a") or ""
  f:close()
  return stat:match("^%d+ %b() (%a)") ~= "Z"
end

--- Waits until pred() holds, polling every 5 ms, for about 10 seconds at
--- most; returns whether it did.
function M.wait_for(pred)
  for _ = 1, 2000 do
    if pred() then return true end
    os.execute("sleep 0.005")
  end
  return false
end

--- The number of lines in a file (0 when it does not exist).
function M.lines(path)
  local f = io.open(path)
  if not f then return 0 end
  local n = 0
  for _ in f:lines() do n = n + 1 end
  f:close()
  return n
end

return M
