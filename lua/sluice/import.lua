-- The import kind: a step that runs the pipeline of another file. The file
-- is loaded when the import is defined, so a bad one is reported when the
-- importing file loads, with the engine's own loader (core.load_pipeline,
-- engine/run/loader.c) and its messages.

local core = require "sluice.core"

local M = {}

local concat = table.concat
local dsl            -- set by install

-- The files being imported, outer first, catch a file that imports itself
-- through others.

local importing = {}
local own_sources = {}   -- the sluice Lua files, skipped to find the user's

-- The path of the file whose code is defining the step: the first frame
-- up the stack that is not sluice's own Lua. nil for code not from a file.
local function defining_file()
  for level = 3, 60 do
    local info = debug.getinfo(level, "S")
    if info == nil then return nil end
    if info.what ~= "C" and not own_sources[info.source] then
      local src = info.source
      if src:sub(1, 1) == "@" then return src:sub(2) end
      return nil
    end
  end
end

-- Removes "." and "x/.." parts of a path.
local function normalize(path)
  local absolute = path:sub(1, 1) == "/"
  local parts = {}
  for part in path:gmatch("[^/]+") do
    if part == ".." and #parts > 0 and parts[#parts] ~= ".." then
      parts[#parts] = nil
    elseif part ~= "." and not (part == ".." and absolute) then
      parts[#parts + 1] = part
    end
  end
  local s = concat(parts, "/")
  if absolute then return "/" .. s end
  return s == "" and "." or s
end

local function resolve(from, file)
  if file:sub(1, 1) == "/" then return normalize(file) end
  local dir = from and from:match("^(.*)/[^/]*$") or "."
  return normalize(dir .. "/" .. file)
end

local function check_import(s, w)
  local file = s.file
  if file == nil then dsl.fail(w, "import '%s' needs a file (file = \"other.lua\")", s.name) end
  local from = defining_file()
  local path = resolve(from, file)
  local depth = #importing
  if from ~= nil and importing[depth] ~= normalize(from) then
    importing[depth + 1] = normalize(from)
  end
  for k = 1, #importing do
    if importing[k] == path then
      local chain = {}
      for j = k, #importing do chain[#chain + 1] = importing[j] end
      chain[#chain + 1] = path
      for j = #importing, depth + 1, -1 do importing[j] = nil end
      dsl.fail(w, "import '%s': import cycle: %s", s.name, concat(chain, " -> "))
    end
  end
  importing[#importing + 1] = path
  -- An engine loading the importing file reloads when this one changes too.
  core.note_file(path)
  local target, err = core.load_pipeline(path, s.pipeline)
  for j = #importing, depth + 1, -1 do importing[j] = nil end
  if target == nil then dsl.fail(w, "import '%s': %s", s.name, err) end
  s.target = target
  s.path = path
end

local function run_import(step, input, ctx)
  return ctx:run(step.target, input)
end

--- Adds sl.import and registers its handler.
function M.install(sl, d)
  dsl = d
  own_sources[debug.getinfo(1, "S").source] = true
  own_sources[debug.getinfo(d.build, "S").source] = true
  own_sources[debug.getinfo(sl.builtin, "S").source] = true
  sl.builtin("import", run_import, {
    options = { file = d.check.string, pipeline = d.check.string },
    check = check_import,
  })
  -- No tail call: the constructor's frame must stay on the stack for the
  -- DSL to find the user's line.
  function sl.import(spec) local s = d.build("import", spec, 2); return s end
end

return M
