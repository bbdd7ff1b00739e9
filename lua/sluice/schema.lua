-- Checking answers against a schema: the subset of JSON Schema a person's
-- answer to an sl.human step is held to.
--
-- Keywords: type (one of string, number, integer, boolean, object, array,
-- null, or a list of them), properties, required, additionalProperties
-- (true, false or a schema), enum, const, items (one schema for every
-- item), minimum, maximum, exclusiveMinimum, exclusiveMaximum (numbers),
-- minLength, maxLength (characters), pattern (an ECMA regular expression,
-- not anchored, in the subset engine/base/pattern.c translates), minItems,
-- maxItems and minProperties, maxProperties; plus the annotations title,
-- description, default, examples, format, $schema, $id and $comment,
-- which are allowed and not enforced. Any other keyword is a
-- mistake in the schema, reported with the closest valid one.
--
-- As in JSON Schema, a keyword applies only to values of its own type:
-- `required` says nothing about a string, `items` nothing about an object.
-- Use `type` to demand one.
--
-- Values are Lua values as value.c decodes JSON: a Lua integer counts as an
-- integer, and so does a float with an integral value (2.0); a table with
-- string keys is an object; a table with the keys 1..n, or with the array
-- metatable (core.array_mt), is an array; an empty table without that
-- metatable is both; core.null, and nil, are null.
--
-- Paths name where in the value or the schema a problem is: $ is the top,
-- .name a property ($["a b"] when the name is not an identifier) and [i]
-- the i-th item, counted from 1 as Lua counts (the same paths value.c's
-- encoder uses).
--
--   schema.check(s)            -> true, or raises "schema: <what> at <path>"
--   schema.validate(s, value)  -> true, or false and "<path>: <what>"

local core = require "sluice.core"
local dsl = require "sluice.dsl"

local M = {}

local null = core.null
local ArrayMT = core.array_mt

local TYPES = {
  string = true, number = true, integer = true, boolean = true,
  object = true, array = true, null = true,
}

-- Every keyword the checker accepts, with the function that checks its
-- value (nil for annotations, which may hold anything).
local KEYWORDS = {}

local ANNOTATIONS = {
  title = "string", description = "string",
  default = false, examples = false, ["$schema"] = false, ["$id"] = false,
  format = "string",
  ["$comment"] = "string",
}

local function is_name(s)
  return s:match("^[%a_][%w_]*$") ~= nil
end

-- path .. the segment for property name k.
local function prop_path(path, k)
  if is_name(k) then return path .. "." .. k end
  return path .. "[" .. core.json_encode(k) .. "]"
end


-- {======================================================
-- What a Lua value is, in JSON's terms
-- =======================================================

local function is_integral(v)
  if math.type(v) == "integer" then return true end
  return v == v and v ~= math.huge and v ~= -math.huge and v % 1 == 0
end

-- "array", "object", "empty" (both) or "mixed" (neither) for a table.
local function table_shape(t)
  if getmetatable(t) == ArrayMT then return "array" end
  local n, strings, others = 0, 0, 0
  for k in next, t do
    if type(k) == "string" then strings = strings + 1
    elseif math.type(k) == "integer" and k >= 1 then n = n + 1
    else others = others + 1 end
  end
  if strings == 0 and n == 0 and others == 0 then return "empty" end
  if others > 0 or (strings > 0 and n > 0) then return "mixed" end
  if strings > 0 then return "object" end
  -- n positive integer keys: an array only if they are exactly 1..n.
  for i = 1, n do
    if rawget(t, i) == nil then return "mixed" end
  end
  return "array"
end

local function is_null(v)
  return v == nil or v == null
end

-- Does v have JSON type tname?
local function has_type(v, tname)
  local lt = type(v)
  if tname == "null" then return is_null(v)
  elseif tname == "string" then return lt == "string"
  elseif tname == "boolean" then return lt == "boolean"
  elseif tname == "number" then return lt == "number"
  elseif tname == "integer" then return lt == "number" and is_integral(v)
  elseif lt ~= "table" then return false end
  local shape = table_shape(v)
  return shape == tname or shape == "empty"
end

-- What v is, for "got ..." in messages.
local function describe_type(v)
  if is_null(v) then return "null" end
  local lt = type(v)
  if lt == "number" then return is_integral(v) and "integer" or "number" end
  if lt ~= "table" then return lt end
  local shape = table_shape(v)
  if shape == "empty" then return "empty table" end
  if shape == "mixed" then return "table with mixed keys" end
  return shape
end

-- v as JSON text for a message, shortened past 40 bytes (never inside a
-- UTF-8 sequence).
local function render(v)
  if v == nil then return "null" end
  local text = core.json_encode(v)
  if not text then return describe_type(v) end
  if #text > 40 then
    local cut = 37
    while cut > 0 and (text:byte(cut + 1) or 0) & 0xC0 == 0x80 do cut = cut - 1 end
    text = text:sub(1, cut) .. "..."
  end
  return text
end

-- "a", "a or b", "a, b or c".
local function either(list)
  if #list == 1 then return list[1] end
  return table.concat(list, ", ", 1, #list - 1) .. " or " .. list[#list]
end

local function sorted_keys(t)
  local keys = {}
  for k in next, t do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- JSON equality: numbers by value (1 equals 1.0), tables member by member.
local function same(a, b)
  if a == b then return true end
  if is_null(a) and is_null(b) then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  for k, v in next, a do
    if not same(v, rawget(b, k)) then return false end
  end
  for k in next, b do
    if rawget(a, k) == nil then return false end
  end
  return true
end

-- }======================================================


-- {======================================================
-- Checking a schema
-- =======================================================

local function bad(path, fmt, ...)
  error("schema: " .. fmt:format(...) .. " at " .. path, 0)
end

local check_node

-- A list: a table with the keys 1..n (n may be 0), or the array metatable.
local function is_list(t)
  if type(t) ~= "table" then return false end
  local shape = table_shape(t)
  return shape == "array" or shape == "empty"
end

KEYWORDS.type = function(v, path)
  local names = v
  if type(v) == "string" then names = { v }
  elseif not is_list(v) or #v == 0 then
    bad(path, "'type' must be a type name or a non-empty list of them, got %s", describe_type(v))
  end
  for i, name in ipairs(names) do
    if type(name) ~= "string" then
      bad(path, "'type' entry %d must be a type name, got %s", i, describe_type(name))
    end
    if not TYPES[name] then
      bad(path, "unknown type '%s'%s", name, dsl.suggest(name, TYPES))
    end
  end
end

KEYWORDS.properties = function(v, path)
  if type(v) ~= "table" or getmetatable(v) == ArrayMT then
    bad(path, "'properties' must be a table of property schemas, got %s", describe_type(v))
  end
  for k in next, v do
    if type(k) ~= "string" then
      bad(path, "'properties' must be keyed by property names, got key %s", render(k))
    end
  end
  for _, k in ipairs(sorted_keys(v)) do
    check_node(v[k], prop_path(path .. ".properties", k))
  end
end

KEYWORDS.required = function(v, path)
  if not is_list(v) then
    bad(path, "'required' must be a list of property names, got %s", describe_type(v))
  end
  for i, name in ipairs(v) do
    if type(name) ~= "string" then
      bad(path, "'required' entry %d must be a property name, got %s", i, describe_type(name))
    end
  end
end

KEYWORDS.additionalProperties = function(v, path)
  if type(v) ~= "boolean" then check_node(v, path .. ".additionalProperties") end
end

KEYWORDS.enum = function(v, path)
  if not is_list(v) or #v == 0 then
    bad(path, "'enum' must be a non-empty list of values, got %s", describe_type(v))
  end
  for i, e in ipairs(v) do
    local t = type(e)
    if t ~= "string" and t ~= "number" and t ~= "boolean" and t ~= "table" and e ~= null then
      bad(path, "'enum' entry %d must be a JSON value, got %s", i, t)
    end
  end
end

KEYWORDS.items = function(v, path)
  if type(v) == "table" and table_shape(v) == "array" then
    bad(path, "'items' must be one schema for every item, got a list" ..
      " (a schema per position is not supported)")
  end
  check_node(v, path .. ".items")
end

KEYWORDS.const = function(v, path)
  local t = type(v)
  if t ~= "string" and t ~= "number" and t ~= "boolean" and t ~= "table" and v ~= null then
    bad(path, "'const' must be a JSON value, got %s", t)
  end
end

local function number_keyword(name)
  KEYWORDS[name] = function(v, path)
    if type(v) ~= "number" or v ~= v then
      bad(path, "'%s' must be a number, got %s", name, describe_type(v))
    end
  end
end
for _, name in ipairs { "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum" } do
  number_keyword(name)
end

local function count_keyword(name)
  KEYWORDS[name] = function(v, path)
    if not (type(v) == "number" and is_integral(v) and v >= 0) then
      bad(path, "'%s' must be a whole number >= 0, got %s", name, render(v))
    end
  end
end
for _, name in ipairs { "minLength", "maxLength", "minItems", "maxItems",
    "minProperties", "maxProperties" } do
  count_keyword(name)
end

-- Compiled patterns, by source text.
local patterns = setmetatable({}, { __mode = "v" })
local function compiled(src)
  local p = patterns[src]
  if p == nil then
    p = core.pattern(src)
    patterns[src] = p
  end
  return p
end

KEYWORDS.pattern = function(v, path)
  if type(v) ~= "string" then
    bad(path, "'pattern' must be a regular expression (a string), got %s", describe_type(v))
  end
  local ok, err = pcall(compiled, v)
  if not ok then bad(path, "'pattern' %s: %s", render(v), tostring(err):gsub("^bad pattern: ", "")) end
end

-- Checks the schema s found at path, raising at the first mistake.
function check_node(s, path)
  if type(s) ~= "table" then
    bad(path, "expected a schema (a table of keywords), got %s", describe_type(s))
  end
  local shape = table_shape(s)
  if shape == "array" then
    bad(path, "expected a schema (a table of keywords), got an array")
  end
  for k in next, s do
    if type(k) ~= "string" then
      bad(path, "keywords are strings, got key %s", render(k))
    end
  end
  for _, k in ipairs(sorted_keys(s)) do
    local v = s[k]
    local checker = KEYWORDS[k]
    if checker then
      checker(v, path)
    elseif ANNOTATIONS[k] ~= nil then
      local want = ANNOTATIONS[k]
      if want and type(v) ~= want then
        bad(path, "'%s' must be a %s, got %s", k, want, describe_type(v))
      end
    else
      local known = {}
      for name in next, KEYWORDS do known[name] = true end
      for name in next, ANNOTATIONS do known[name] = true end
      bad(path, "unknown keyword '%s'%s", k, dsl.suggest(k, known))
    end
  end
end

--- Checks that s is a schema this module understands. Returns true, or
--- raises (at level 0, so the caller can add the user's position) e.g.
--- "schema: unknown keyword 'requird' (did you mean 'required'?) at
--- $.properties.x".
function M.check(s)
  check_node(s, "$")
  return true
end

-- }======================================================


-- {======================================================
-- Validating a value
-- =======================================================

-- Validates v, found at path, against the checked schema s. Returns nil,
-- or the message of the first failure.
local function validate_node(s, v, path)
  local t = s.type
  if t ~= nil then
    local names = type(t) == "string" and { t } or t
    local ok = false
    for _, name in ipairs(names) do
      if has_type(v, name) then ok = true; break end
    end
    if not ok then
      return ("%s: expected %s, got %s"):format(path, either(names), describe_type(v))
    end
  end

  if s.enum ~= nil then
    local ok = false
    for _, e in ipairs(s.enum) do
      if same(v, e) then ok = true; break end
    end
    if not ok then
      local shown = {}
      for i = 1, math.min(#s.enum, 10) do shown[i] = render(s.enum[i]) end
      local list = table.concat(shown, ", ")
      if #s.enum > 10 then list = list .. (", ... (%d in all)"):format(#s.enum) end
      local what = #s.enum == 1 and list or "one of " .. list
      return ("%s: expected %s, got %s"):format(path, what, render(v))
    end
  end

  if s.const ~= nil and not same(v, s.const) then
    return ("%s: expected %s, got %s"):format(path, render(s.const), render(v))
  end

  if type(v) == "number" then
    if s.minimum ~= nil and v < s.minimum then
      return ("%s: %s is less than the minimum %s"):format(path, render(v), render(s.minimum))
    end
    if s.maximum ~= nil and v > s.maximum then
      return ("%s: %s is more than the maximum %s"):format(path, render(v), render(s.maximum))
    end
    if s.exclusiveMinimum ~= nil and v <= s.exclusiveMinimum then
      return ("%s: %s must be more than %s"):format(path, render(v), render(s.exclusiveMinimum))
    end
    if s.exclusiveMaximum ~= nil and v >= s.exclusiveMaximum then
      return ("%s: %s must be less than %s"):format(path, render(v), render(s.exclusiveMaximum))
    end
  end

  if type(v) == "string" then
    if s.minLength ~= nil or s.maxLength ~= nil then
      local n = utf8.len(v) or #v
      if s.minLength ~= nil and n < s.minLength then
        return ("%s: expected at least %d characters, got %d"):format(path, s.minLength, n)
      end
      if s.maxLength ~= nil and n > s.maxLength then
        return ("%s: expected at most %d characters, got %d"):format(path, s.maxLength, n)
      end
    end
    if s.pattern ~= nil and not core.pattern_match(compiled(s.pattern), v) then
      return ("%s: %s does not match the pattern %s"):format(path, render(v), render(s.pattern))
    end
  end

  if has_type(v, "object") and (s.minProperties ~= nil or s.maxProperties ~= nil) then
    local n = 0
    for _ in next, v do n = n + 1 end
    if s.minProperties ~= nil and n < s.minProperties then
      return ("%s: expected at least %d properties, got %d"):format(path, s.minProperties, n)
    end
    if s.maxProperties ~= nil and n > s.maxProperties then
      return ("%s: expected at most %d properties, got %d"):format(path, s.maxProperties, n)
    end
  end

  if has_type(v, "array") then
    if s.minItems ~= nil and #v < s.minItems then
      return ("%s: expected at least %d items, got %d"):format(path, s.minItems, #v)
    end
    if s.maxItems ~= nil and #v > s.maxItems then
      return ("%s: expected at most %d items, got %d"):format(path, s.maxItems, #v)
    end
  end

  if has_type(v, "object") then
    if s.required then
      for _, name in ipairs(s.required) do
        if v[name] == nil then
          return ("%s: missing required property '%s'"):format(path, name)
        end
      end
    end
    local props = s.properties or {}
    for _, k in ipairs(sorted_keys(v)) do
      local sub = props[k]
      if sub == nil then
        local extra = s.additionalProperties
        if extra == false then
          return ("%s: unexpected property '%s'"):format(path, k)
        elseif type(extra) == "table" then
          sub = extra
        end
      end
      if sub ~= nil then
        local msg = validate_node(sub, v[k], prop_path(path, k))
        if msg then return msg end
      end
    end
  end

  if s.items ~= nil and has_type(v, "array") then
    for i = 1, #v do
      local msg = validate_node(s.items, v[i], ("%s[%d]"):format(path, i))
      if msg then return msg end
    end
  end
  return nil
end

--- Validates value against schema s (checked first: a bad schema raises
--- as in schema.check). Returns true, or false and a message naming the
--- path that failed, e.g. "$.items[2]: expected integer, got string".
function M.validate(s, value)
  check_node(s, "$")
  local msg = validate_node(s, value, "$")
  if msg then return false, msg end
  return true
end

--- As validate, for a schema already checked with schema.check (a step's
--- schemas are checked where the step is defined, not at every call).
function M.validate_checked(s, value)
  local msg = validate_node(s, value, "$")
  if msg then return false, msg end
  return true
end

-- }======================================================

return M
