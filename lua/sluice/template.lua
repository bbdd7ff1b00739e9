-- Templates for prompts: literal text with {{ expression }} tags, parsed
-- with LPeg once, when the template is defined, into a render function.
--
--   local render = template.compile("Notes on {{ input.title | upper }}:\n{{ state.notes | json }}")
--   render{ input = { title = "Tides" }, state = { notes = { "moon" } } }
--
-- An expression is a value followed by filters, each after a '|':
--
--   value   a path: a name, then .name, [n] (n counts from 1) or ["key"]
--           steps, looked up in the render environment (input, state, ...);
--           or a literal: "text" or 'text' (with \n \t \\ \" \' escapes),
--           a number, true, false
--   filter  json, upper, lower, trim, default(x), join(sep)
--
-- A path that leads nowhere is a missing value, rendered as "" unless a
-- default() supplies one. A table renders as its JSON, with object keys in
-- sorted order so that the same value always renders the same text.
--
-- Every mistake in a template is found when it is compiled and raised as
-- "file:line: template error at column C: ..." (at "line L, column C" for
-- a template of several lines), file:line being where the template was
-- defined and the column counting characters within the template's text.

local lpeg = require "lpeg"
local core = require "sluice.core"
local dsl = require "sluice.dsl"

local P, R, S, C, Cs, Ct, Cp, Cmt =
  lpeg.P, lpeg.R, lpeg.S, lpeg.C, lpeg.Cs, lpeg.Ct, lpeg.Cp, lpeg.Cmt

local null, array_mt, json_encode = core.null, core.array_mt, core.json_encode
local type, tostring, pairs, ipairs, error, setmetatable, getmetatable =
  type, tostring, pairs, ipairs, error, setmetatable, getmetatable
local concat, sort = table.concat, table.sort

local M = {}

-- A mistake found in the template's text, at byte offset pos.
local Mistake = {}

local function throw(pos, msg)
  error(setmetatable({ pos = pos, msg = msg }, Mistake), 0)
end

-- "line L, column C" or "column C" of byte offset pos in text; columns
-- count UTF-8 characters when the line is valid UTF-8.
local function position(text, pos)
  local line, start = 1, 1
  for nl in text:sub(1, pos - 1):gmatch("()\n") do
    line, start = line + 1, nl + 1
  end
  local before = text:sub(start, pos - 1)
  local col = (utf8.len(before) or #before) + 1
  if text:find("\n", 1, true) then
    return ("line %d, column %d"):format(line, col)
  end
  return ("column %d"):format(col)
end

-- How the text at pos reads in "expected X, found Y".
local function found(s, i)
  if i > #s then return "the end of the template" end
  if s:sub(i, i + 1) == "}}" then return "'}}'" end
  local word = s:match("^[%w_]+", i) or s:match("^[^%s%w_]", i)
  if word == nil then return s:sub(i, i) == "\n" and "a line break" or "a space" end
  return "'" .. word .. "'"
end

-- Matches patt, or raises "expected what, found ..." where it stands.
local function expect(patt, what)
  return patt + Cmt(P(true), function(s, i)
    throw(i, ("expected %s, found %s"):format(what, found(s, i)))
  end)
end

-- The grammar. Expressions produce tables with their positions, which the
-- compiler below checks and turns into closures.

local ws = S(" \t\r\n") ^ 0
local idstart = R("az", "AZ") + P"_"
local idchar = idstart + R"09"
local ident = C(idstart * idchar ^ 0)

local escapes = { n = "\n", t = "\t", r = "\r", ["\\"] = "\\", ['"'] = '"', ["'"] = "'" }

-- A quoted string: its value, or a raised mistake for a bad escape or a
-- missing closing quote.
local function quoted(q)
  local escape = Cmt(Cp() * P"\\" * C(P(1) ^ -1), function(_, i, at, ch)
    local v = escapes[ch]
    if v == nil then
      throw(at, ch == "" and "unclosed string"
        or ("unknown escape '\\%s' in a string (use \\n, \\t, \\r, \\\\, \\\" or \\')"):format(ch))
    end
    return i, v
  end)
  local body = Cs((escape + (1 - S(q .. "\\"))) ^ 0)
  return Cmt(Cp() * P(q) * body * C(P(q) ^ -1), function(_, i, at, value, close)
    if close == "" then throw(at, "unclosed string (a " .. q .. " is missing)") end
    return i, value
  end)
end
local str = quoted('"') + quoted("'")

local digits = R"09" ^ 1
local number = C(P"-" ^ -1 * digits * (P"." * digits) ^ -1 * (S"eE" * S"+-" ^ -1 * digits) ^ -1)
  * -idchar / function(t) return math.tointeger(tonumber(t)) or tonumber(t) end

local keyword = (C(P"true" + P"false") * -idchar) / function(w) return w == "true" end

-- A literal: { lit = value, pos = where it starts }.
local literal = Ct(Cp() * (str + number + keyword)) / function(t)
  return { lit = t[2], pos = t[1] }
end

-- An index step: [n], n counting from 1, or ["key"].
local position_index = Cmt(Cp() * C(P"-" ^ -1 * digits), function(_, i, at, d)
  local n = math.tointeger(tonumber(d))
  if n == nil or n < 1 then throw(at, ("index [%s]: indexes count from 1"):format(d)) end
  return i, n
end)
local index = P"[" * ws * expect(position_index + str, "an index (a number or a quoted key)")
  * ws * expect(P"]", "']'")

-- A path: { path = { root, step, ... }, pos, text }.
local path = Cmt(Cp() * Ct(ident * ((P"." * expect(ident, "a name after '.'")) + index) ^ 0) * Cp(),
  function(s, i, at, parts, stop)
    return i, { path = parts, pos = at, text = s:sub(at, stop - 1) }
  end)

local value = literal + path

local a_value = "a value (a string in quotes or a number)"
local args = #P")" * Ct(P(true))
  + Ct(expect(literal, a_value) * (ws * P"," * ws * expect(literal, a_value)) ^ 0)

-- A filter: { name, pos, args = { literal, ... }, argpos }.
local filter = Cmt(Cp() * ident * (ws * Cp() * P"(" * ws * args * ws
  * expect(P")", "')' or ',' after a filter's argument")) ^ -1,
  function(_, i, at, name, argpos, list)
    return i, { name = name, pos = at, args = list or {}, argpos = argpos }
  end)

local tag = Cmt(P"{{", function(s, i)
  if not s:find("}}", i, true) then throw(i - 2, "unclosed '{{' (no '}}' follows it)") end
  return i
end) * ws * Ct(expect(value, "a value or a name") * (ws * P"|" * ws
  * expect(filter, "a filter name after '|'")) ^ 0) * ws * expect(P"}}", "'|' or '}}'")

local text = C((1 - P"{{") ^ 1)

local grammar = Ct((text + tag) ^ 0) * -1

-- Rendering values.

local function render_error(where, text, pos, msg)
  error(("%s: template error at %s: %s"):format(where, position(text, pos), msg), 0)
end

-- Appends the JSON of v to buf, objects with sorted keys; returns nil, or
-- a message saying why v cannot be written.
local function encode(v, buf, depth)
  if v == nil or v == null then
    buf[#buf + 1] = "null"
    return
  end
  local t = type(v)
  if t == "string" or t == "number" or t == "boolean" then
    local s, err = json_encode(v)
    if s == nil then return err end
    buf[#buf + 1] = s
    return
  end
  if t ~= "table" then return "cannot write a " .. t .. " as JSON" end
  if depth > 100 then return "a table nested more than 100 deep (a cycle?)" end
  local n, count, list = #v, 0, getmetatable(v) == array_mt
  if not list then
    for _ in pairs(v) do count = count + 1 end
    list = n > 0 and count == n
  end
  if list then
    buf[#buf + 1] = "["
    for i = 1, n do
      if i > 1 then buf[#buf + 1] = "," end
      local err = encode(v[i], buf, depth + 1)
      if err then return err end
    end
    buf[#buf + 1] = "]"
    return
  end
  local keys = {}
  for k in pairs(v) do
    if math.type(k) == "integer" then
      keys[#keys + 1] = tostring(k)
    elseif type(k) == "string" then
      keys[#keys + 1] = k
    else
      return "cannot write a table with a " .. type(k) .. " key as JSON"
    end
  end
  sort(keys)
  buf[#buf + 1] = "{"
  for i, k in ipairs(keys) do
    if i > 1 then buf[#buf + 1] = "," end
    buf[#buf + 1] = json_encode(k)
    buf[#buf + 1] = ":"
    local x = v[k]
    if x == nil then x = v[math.tointeger(tonumber(k))] end
    local err = encode(x, buf, depth + 1)
    if err then return err end
  end
  buf[#buf + 1] = "}"
end

--- The JSON text of v with object keys sorted; nil and a message when v
--- holds something JSON cannot (a function, a cycle).
function M.json(v)
  local buf = {}
  local err = encode(v, buf, 0)
  if err then return nil, err end
  return concat(buf)
end

-- The text of a value: "" for a missing one, JSON for a table.
local function to_text(v)
  if v == nil or v == null then return "" end
  local t = type(v)
  if t == "string" then return v end
  if t == "number" or t == "boolean" then return tostring(v) end
  if t ~= "table" then return nil, "it is a " .. t end
  return M.json(v)
end

-- Filters: fn(value, args...) returning the new value, or nil and a
-- message; min and max the fewest and most arguments it takes; check(i,
-- arg), when present, says whether argument i is acceptable and what is
-- expected otherwise. A filter given a missing value passes it on missing,
-- except json and default.

local function is_missing(v) return v == nil or v == null end

local function text_filter(f)
  return function(v)
    if is_missing(v) then return nil end
    local s, err = to_text(v)
    if s == nil then return nil, err end
    return f(s)
  end
end

local filters = {
  json = { min = 0, max = 0, fn = function(v) return M.json(v) end },
  upper = { min = 0, max = 0, fn = text_filter(string.upper) },
  lower = { min = 0, max = 0, fn = text_filter(string.lower) },
  trim = { min = 0, max = 0, fn = text_filter(function(s) return (s:match("^%s*(.-)%s*$")) end) },
  default = { min = 1, max = 1, fn = function(v, x)
    if is_missing(v) then return x end
    return v
  end },
  join = { min = 0, max = 1,
    check = function(_, a) return type(a) == "string", "a string" end,
    fn = function(v, sep)
      if is_missing(v) then return nil end
      if type(v) ~= "table" then return to_text(v) end
      local parts = {}
      for i = 1, #v do
        local s, err = to_text(v[i])
        if s == nil then return nil, err end
        parts[i] = s
      end
      return concat(parts, sep or ", ")
    end },
}

local function describe_arity(f)
  if f.max == 0 then return "takes no arguments" end
  if f.min == f.max then return ("takes %d argument%s"):format(f.min, f.min == 1 and "" or "s") end
  return ("takes at most %d argument%s"):format(f.max, f.max == 1 and "" or "s")
end

local function names_list(set)
  local list = {}
  for k in pairs(set) do list[#list + 1] = k end
  sort(list)
  if #list == 1 then return list[1] end
  return concat(list, ", ", 1, #list - 1) .. " and " .. list[#list]
end

-- Checks one filter of an expression; raises a mistake at its position.
local function check_filter(f)
  local def = filters[f.name]
  if def == nil then
    throw(f.pos, ("unknown filter '%s'%s"):format(f.name, dsl.suggest(f.name, filters)))
  end
  local n = #f.args
  if n < def.min or n > def.max then
    throw(f.argpos or f.pos, ("filter '%s' %s, got %d"):format(f.name, describe_arity(def), n))
  end
  for i, a in ipairs(f.args) do
    if def.check then
      local ok, expected = def.check(i, a.lit)
      if not ok then
        throw(a.pos, ("bad argument #%d to filter '%s' (%s expected, got %s)"):format(
          i, f.name, expected, math.type(a.lit) or type(a.lit)))
      end
    end
  end
  return def
end

-- Turns a parsed expression into a function(env) returning its text.
local function compile_expr(e, text, where, names)
  local v = e[1]
  if v.path and names and not names[v.path[1]] then
    throw(v.pos, ("unknown name '%s'%s; a template here can use %s"):format(v.path[1],
      dsl.suggest(v.path[1], names), names_list(names)))
  end
  local steps = {}
  for i = 2, #e do
    local f = e[i]
    local def = check_filter(f)
    local a = {}
    for j, arg in ipairs(f.args) do a[j] = arg.lit end
    steps[#steps + 1] = { fn = def.fn, args = a, nargs = #f.args, pos = f.pos, name = f.name }
  end
  local parts, lit, vpos = v.path, v.lit, v.pos
  return function(env)
    local x
    if parts then
      x = env[parts[1]]
      for i = 2, #parts do
        if type(x) ~= "table" then x = nil; break end
        x = x[parts[i]]
      end
    else
      x = lit
    end
    for i = 1, #steps do
      local st = steps[i]
      local err
      x, err = st.fn(x, table.unpack(st.args, 1, st.nargs))
      if err then render_error(where, text, st.pos, ("filter '%s': %s"):format(st.name, err)) end
    end
    local s, err = to_text(x)
    if s == nil then
      render_error(where, text, vpos, ("cannot render %s: %s"):format(
        parts and ("'" .. v.text .. "'") or "the value", err))
    end
    return s
  end
end

--- Compiles a template once and returns its render function(env), env
--- being a table of the names the template may use (input, state, ...),
--- and the set of names it uses. where ("file:line") names the template in
--- errors; by default, the line that called compile. names, when given, is
--- the set of names the template may use: any other is a mistake found now.
function M.compile(text, where, names)
  where = where or dsl.where(2)
  if type(text) ~= "string" then
    dsl.fail(where, "a template must be a string, got %s", type(text))
  end
  local ok, ast = pcall(lpeg.match, grammar, text)
  if not ok then
    if getmetatable(ast) == Mistake then
      render_error(where, text, ast.pos, ast.msg)
    end
    error(ast, 0)
  end
  local pieces, n, used = {}, 0, {}
  ok, ast = pcall(function()
    for _, item in ipairs(ast) do
      n = n + 1
      if type(item) == "string" then
        pieces[n] = item
      else
        pieces[n] = compile_expr(item, text, where, names)
        if item[1].path then used[item[1].path[1]] = true end
      end
    end
  end)
  if not ok then
    if getmetatable(ast) == Mistake then
      render_error(where, text, ast.pos, ast.msg)
    end
    error(ast, 0)
  end
  if n == 1 and type(pieces[1]) == "string" then
    local constant = pieces[1]
    return function() return constant end, used
  end
  return function(env)
    env = env or {}
    local out = {}
    for i = 1, n do
      local p = pieces[i]
      if type(p) == "string" then out[i] = p else out[i] = p(env) end
    end
    return concat(out)
  end, used
end

return M
