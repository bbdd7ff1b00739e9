-- Schemas for human answers: schema.validate holds an answer to a JSON
-- Schema subset and names the path that failed; schema.check finds the
-- mistakes in a schema itself.
local core = require "sluice.core"
local schema = require "sluice.schema"

local null = core.null

local function array(t) return setmetatable(t, core.array_mt) end

-- The message validate gives, asserting that it fails.
local function failure(s, value)
  local ok, msg = schema.validate(s, value)
  assert.is_false(ok, "expected the value to be refused")
  return msg
end

-- The message check raises, asserting that it raises.
local function mistake(s)
  local ok, msg = pcall(schema.check, s)
  assert.is_false(ok, "expected the schema to be refused")
  return msg
end

describe("schema.validate: type", function()
  local cases = {
    { "string", "hi", 1 },
    { "number", 1.5, "1.5" },
    { "integer", 3, 3.5 },
    { "boolean", false, 0 },
    { "object", { a = 1 }, { 1, 2 } },
    { "array", { 1, 2 }, { a = 1 } },
    { "null", null, false },
  }
  for _, c in ipairs(cases) do
    it("accepts a " .. c[1] .. " and refuses anything else", function()
      assert.is_true(schema.validate({ type = c[1] }, c[2]))
      assert.is_false((schema.validate({ type = c[1] }, c[3])))
    end)
  end

  it("names what it expected and what it got", function()
    assert.equal("$: expected string, got integer", failure({ type = "string" }, 5))
    assert.equal("$: expected integer, got number", failure({ type = "integer" }, 2.5))
    assert.equal("$: expected object, got array", failure({ type = "object" }, { 1 }))
    assert.equal("$: expected array, got object", failure({ type = "array" }, { a = 1 }))
    assert.equal("$: expected boolean, got null", failure({ type = "boolean" }, null))
    assert.equal("$: expected null, got string", failure({ type = "null" }, "x"))
  end)

  it("counts a Lua integer and a float with an integral value as integers", function()
    assert.is_true(schema.validate({ type = "integer" }, 7))
    assert.is_true(schema.validate({ type = "integer" }, 7.0))
    assert.is_true(schema.validate({ type = "integer" }, -0.0))
    assert.is_false((schema.validate({ type = "integer" }, math.huge)))
    assert.is_false((schema.validate({ type = "integer" }, 0 / 0)))
  end)

  it("counts an integer as a number", function()
    assert.is_true(schema.validate({ type = "number" }, 7))
  end)

  it("counts an empty table as both an object and an array, but not as anything else", function()
    assert.is_true(schema.validate({ type = "object" }, {}))
    assert.is_true(schema.validate({ type = "array" }, {}))
    assert.equal("$: expected string, got empty table", failure({ type = "string" }, {}))
  end)

  it("counts a table with the array metatable as an array only, even when empty", function()
    assert.is_true(schema.validate({ type = "array" }, array{}))
    assert.equal("$: expected object, got array", failure({ type = "object" }, array{}))
  end)

  it("refuses tables with holes or mixed keys as arrays and objects", function()
    assert.equal("$: expected array, got table with mixed keys",
      failure({ type = "array" }, { [1] = "a", [3] = "c" }))
    assert.equal("$: expected object, got table with mixed keys",
      failure({ type = "object" }, { "a", b = 1 }))
  end)

  it("takes nil as null", function()
    assert.is_true(schema.validate({ type = "null" }, nil))
    assert.equal("$: expected string, got null", failure({ type = "string" }, nil))
  end)

  it("accepts any of a list of types, naming them all when none fits", function()
    local s = { type = { "string", "null" } }
    assert.is_true(schema.validate(s, "x"))
    assert.is_true(schema.validate(s, null))
    assert.equal("$: expected string or null, got boolean", failure(s, true))
    assert.equal("$: expected string, integer or array, got boolean",
      failure({ type = { "string", "integer", "array" } }, false))
  end)

  it("accepts anything when the schema says nothing", function()
    assert.is_true(schema.validate({}, "x"))
    assert.is_true(schema.validate({}, { a = { 1, 2 } }))
    assert.is_true(schema.validate({}, null))
  end)
end)

describe("schema.validate: enum", function()
  it("accepts a listed value and names them all when refusing another", function()
    local s = { enum = { "yes", "no" } }
    assert.is_true(schema.validate(s, "no"))
    assert.equal('$: expected one of "yes", "no", got "maybe"', failure(s, "maybe"))
  end)

  it("says just the value when there is one", function()
    assert.equal('$: expected "ok", got "ko"', failure({ enum = { "ok" } }, "ko"))
  end)

  it("compares numbers by value and tables member by member", function()
    local s = { enum = { 1, { a = { 1, 2 } }, null, false } }
    assert.is_true(schema.validate(s, 1.0))
    assert.is_true(schema.validate(s, { a = { 1, 2 } }))
    assert.is_true(schema.validate(s, null))
    assert.is_true(schema.validate(s, false))
    assert.equal('$: expected one of 1, {"a":[1,2]}, null, false, got {"a":[1,2,3]}',
      failure(s, { a = { 1, 2, 3 } }))
    assert.is_false((schema.validate(s, "1")))
    assert.is_false((schema.validate(s, { a = { 1 } })))
  end)

  it("shortens long lists and long values", function()
    local many = {}
    for i = 1, 12 do many[i] = i end
    assert.equal("$: expected one of 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ... (12 in all), got 13",
      failure({ enum = many }, 13))
    local long = ("x"):rep(100)
    assert.equal('$: expected "a", got "' .. ("x"):rep(36) .. '...', failure({ enum = { "a" } }, long))
    -- 1 + 2 * 18 bytes fit, the 19th "é" would not: it is left out whole.
    assert.equal('$: expected "a", got "' .. ("é"):rep(18) .. '...',
      failure({ enum = { "a" } }, ("é"):rep(30)))
  end)
end)

describe("schema.validate: objects", function()
  local s = {
    type = "object",
    required = { "approved" },
    properties = {
      approved = { type = "boolean" },
      comment = { type = "string" },
    },
  }

  it("accepts an object with what is required", function()
    assert.is_true(schema.validate(s, { approved = true }))
    assert.is_true(schema.validate(s, { approved = false, comment = "fine" }))
  end)

  it("names a missing required property", function()
    assert.equal("$: missing required property 'approved'", failure(s, { comment = "hm" }))
  end)

  it("counts a property holding null as present", function()
    assert.equal("$.approved: expected boolean, got null", failure(s, { approved = null }))
  end)

  it("names the property whose value is wrong", function()
    assert.equal("$.comment: expected string, got integer", failure(s, { approved = true, comment = 5 }))
  end)

  it("allows properties the schema does not name", function()
    assert.is_true(schema.validate(s, { approved = true, extra = {} }))
  end)

  it("refuses them when additionalProperties is false", function()
    local closed = { properties = { a = {} }, additionalProperties = false }
    assert.is_true(schema.validate(closed, { a = 1 }))
    assert.equal("$: unexpected property 'b'", failure(closed, { a = 1, b = 2, c = 3 }))
  end)

  it("holds them to additionalProperties when it is a schema", function()
    local scores = { type = "object", additionalProperties = { type = "integer" } }
    assert.is_true(schema.validate(scores, { ada = 3, bob = 4 }))
    assert.equal("$.bob: expected integer, got string", failure(scores, { ada = 3, bob = "x" }))
  end)

  it("quotes property names that are not identifiers", function()
    local q = { properties = { ["first name"] = { type = "string" } } }
    assert.equal('$["first name"]: expected string, got integer', failure(q, { ["first name"] = 1 }))
  end)

  it("applies object keywords only to objects, as JSON Schema does", function()
    assert.is_true(schema.validate({ required = { "a" }, properties = { a = { type = "string" } } }, "text"))
  end)
end)

describe("schema.validate: arrays", function()
  it("holds every item to items, naming the first that fails by its position", function()
    local s = { type = "object", properties = { items = { type = "array", items = { type = "integer" } } } }
    assert.is_true(schema.validate(s, { items = { 1, 2, 3 } }))
    assert.is_true(schema.validate(s, { items = array{} }))
    assert.equal("$.items[2]: expected integer, got string", failure(s, { items = { 1, "two", "three" } }))
  end)

  it("applies items only to arrays", function()
    assert.is_true(schema.validate({ items = { type = "string" } }, { a = 1 }))
  end)
end)

describe("schema.validate: nesting", function()
  it("names the whole path down to the failure", function()
    local s = {
      type = "object",
      properties = {
        reviewers = {
          type = "array",
          items = {
            type = "object",
            required = { "email" },
            properties = {
              email = { type = "string" },
              role = { enum = { "owner", "reader" } },
            },
          },
        },
      },
    }
    assert.is_true(schema.validate(s, { reviewers = { { email = "a@x" }, { email = "b@x", role = "owner" } } }))
    assert.equal("$.reviewers[2]: missing required property 'email'",
      failure(s, { reviewers = { { email = "a@x" }, { role = "owner" } } }))
    assert.equal('$.reviewers[1].role: expected one of "owner", "reader", got "admin"',
      failure(s, { reviewers = { { email = "a@x", role = "admin" } } }))
  end)

  it("validates a decoded JSON answer", function()
    local s = { type = "object", required = { "n", "tags" },
      properties = { n = { type = "integer" }, tags = { type = "array", items = { type = "string" } } } }
    assert.is_true(schema.validate(s, core.json_decode('{"n": 2.0, "tags": []}')))
    assert.equal("$.tags[1]: expected string, got null",
      failure(s, core.json_decode('{"n": 2, "tags": [null]}')))
  end)

  it("checks the schema before using it", function()
    local ok, msg = pcall(schema.validate, { tpye = "string" }, "x")
    assert.is_false(ok)
    assert.equal("schema: unknown keyword 'tpye' (did you mean 'type'?) at $", msg)
  end)
end)

describe("schema.check", function()
  it("accepts every keyword and the annotations", function()
    assert.is_true(schema.check{
      ["$schema"] = "https://json-schema.org/draft/2020-12/schema",
      title = "Review", description = "Approve the draft",
      type = "object", required = { "approved" }, additionalProperties = false,
      properties = {
        approved = { type = "boolean", default = false },
        level = { type = { "integer", "null" }, enum = { 1, 2, 3, null }, examples = { 1 } },
        notes = { type = "array", items = { type = "string" }, ["$comment"] = "free text" },
      },
    })
  end)

  it("accepts a schema decoded from JSON", function()
    assert.is_true(schema.check(core.json_decode(
      '{"type":"object","required":[],"properties":{"x":{"enum":["a",null]}}}')))
  end)

  it("names an unknown keyword, the closest valid one and where it is", function()
    assert.equal("schema: unknown keyword 'requird' (did you mean 'required'?) at $.properties.x",
      mistake{ properties = { x = { requird = { "a" } } } })
    assert.equal("schema: unknown keyword 'zzzzzzzz' at $", mistake{ zzzzzzzz = 1 })
  end)

  it("names an unknown type with a suggestion", function()
    assert.equal("schema: unknown type 'strng' (did you mean 'string'?) at $.items",
      mistake{ items = { type = "strng" } })
    assert.equal("schema: unknown type 'int' at $", mistake{ type = { "null", "int" } })
  end)

  it("refuses a type that is neither a name nor a list of names", function()
    assert.equal("schema: 'type' must be a type name or a non-empty list of them, got integer at $",
      mistake{ type = 1 })
    assert.equal("schema: 'type' must be a type name or a non-empty list of them, got array at $",
      mistake{ type = array{} })
    assert.equal("schema: 'type' entry 2 must be a type name, got boolean at $",
      mistake{ type = { "string", true } })
  end)

  it("refuses a schema that is not a table of keywords", function()
    assert.equal("schema: expected a schema (a table of keywords), got string at $", mistake("string"))
    assert.equal("schema: expected a schema (a table of keywords), got string at $.properties.a",
      mistake{ properties = { a = "string" } })
    assert.equal("schema: expected a schema (a table of keywords), got an array at $.additionalProperties",
      mistake{ additionalProperties = { "x" } })
    assert.equal("schema: keywords are strings, got key 1.5 at $", mistake{ [1.5] = true })
  end)

  it("refuses malformed properties", function()
    assert.equal("schema: 'properties' must be keyed by property names, got key 1 at $",
      mistake{ properties = { { type = "string" } } })
    assert.equal("schema: 'properties' must be a table of property schemas, got string at $",
      mistake{ properties = "x" })
  end)

  it("refuses malformed required", function()
    assert.equal("schema: 'required' must be a list of property names, got string at $",
      mistake{ required = "a" })
    assert.equal("schema: 'required' entry 2 must be a property name, got integer at $.properties.o",
      mistake{ properties = { o = { required = { "a", 2 } } } })
  end)

  it("refuses an empty or malformed enum", function()
    assert.equal("schema: 'enum' must be a non-empty list of values, got empty table at $",
      mistake{ enum = {} })
    assert.equal("schema: 'enum' must be a non-empty list of values, got object at $",
      mistake{ enum = { a = 1 } })
    assert.equal("schema: 'enum' entry 2 must be a JSON value, got function at $",
      mistake{ enum = { "a", print } })
  end)

  it("refuses items given as a list of schemas", function()
    assert.equal("schema: 'items' must be one schema for every item, got a list" ..
      " (a schema per position is not supported) at $.properties.pair",
      mistake{ properties = { pair = { items = { { type = "string" }, { type = "integer" } } } } })
  end)

  it("checks annotations that are shown to people", function()
    assert.equal("schema: 'description' must be a string, got integer at $", mistake{ description = 5 })
  end)

  it("names the path through items and additionalProperties", function()
    assert.equal("schema: unknown keyword 'tyep' (did you mean 'type'?) at $.items.additionalProperties",
      mistake{ items = { additionalProperties = { tyep = "x" } } })
    assert.equal('schema: unknown type \'text\' at $.properties["a b"]',
      mistake{ properties = { ["a b"] = { type = "text" } } })
  end)
end)
