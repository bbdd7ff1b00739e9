-- Templates (lua/sluice/template.lua): paths, filters, missing values, and
-- mistakes reported where the template was written, with the column.
local sl = require "sluice"
local template = require "sluice.template"

local here = debug.getinfo(1, "S").short_src

local function line() return debug.getinfo(2, "l").currentline end

-- Compiles text with sl.template on the line after the one l is taken on,
-- expecting a mistake; returns its message and that line.
local function mistake(text)
  local l
  local ok, e = pcall(function() l = line() + 1
    local r = sl.template(text); return r
  end)
  assert.is_false(ok, "expected a template error for: " .. text)
  return tostring(e), l
end

-- The message expected for a mistake at column col of a one-line template
-- compiled by mistake().
local function at(l, col, msg)
  return ("%s:%d: template error at column %d: %s"):format(here, l, col, msg)
end

local env = {
  input = { title = "Tides", tags = { "moon", "sun", 3 }, n = 2, ratio = 0.5,
    nested = { zeta = true, alpha = { 1, 2 } }, blank = "  spaced out \n", ["odd key"] = "odd" },
  state = { notes = { "high", "low" } },
}

describe("template rendering", function()
  it("replaces paths with dots, [n] indexes and quoted keys, keeping the text around them", function()
    local r = sl.template("Title: {{ input.title }}; first tag {{input.tags[1]}}, third {{ input.tags[3] }}; {{ input['odd key'] }}.")
    assert.equal("Title: Tides; first tag moon, third 3; odd.", r(env))
  end)

  it("renders numbers, booleans and literals as Lua writes them", function()
    local r = sl.template("{{ input.n }} {{ input.ratio }} {{ input.nested.zeta }} {{ 'lit' }} {{ -4 }} {{ 2.5 }} {{ false }}")
    assert.equal("2 0.5 true lit -4 2.5 false", r(env))
  end)

  it("renders a missing value as an empty string, however it is missing", function()
    local r = sl.template("[{{ input.nope }}|{{ nothing.at.all }}|{{ input.tags[9] }}|{{ input.title.length }}|{{ input.gone }}]")
    assert.equal("[||||]", r{ input = { title = "x", gone = sl.null, tags = {} } })
    assert.equal("[||||]", r{})
    assert.equal("[||||]", r())
  end)

  it("renders a table as its JSON, with object keys in sorted order", function()
    local r = sl.template("{{ input.nested }} {{ state.notes }}")
    assert.equal('{"alpha":[1,2],"zeta":true} ["high","low"]', r(env))
  end)

  it("filters: json writes any value as JSON, a missing one as null", function()
    local r = sl.template("{{ state.notes | json }} {{ input.title | json }} {{ input.n | json }} {{ input.nope | json }} {{ input.nested | json }}")
    assert.equal('["high","low"] "Tides" 2 null {"alpha":[1,2],"zeta":true}', r(env))
    assert.equal('{"a":{"b":[{"c":"d\\n"}]},"e":null,"f":{}}',
      sl.template("{{ input | json }}"){ input = { f = {}, e = sl.null, a = { b = { { c = "d\n" } } } } })
  end)

  it("filters: upper, lower and trim work on text and leave a missing value missing", function()
    local r = sl.template("{{ input.title | upper }}/{{ input.title | lower }}/[{{ input.blank | trim }}]/[{{ input.nope | upper }}]/{{ input.n | upper }}")
    assert.equal("TIDES/tides/[spaced out]/[]/2", r(env))
  end)

  it("filters: default replaces only a missing value, with a string or a number", function()
    local r = sl.template("{{ input.nope | default('none') }} {{ input.title | default(\"x\") }} "
      .. "{{ input.gone | default(0) }} {{ input.nope | upper | default('n/a') }} {{ input.empty | default('e') }}")
    assert.equal("none Tides 0 n/a ", r{ input = { title = "Tides", gone = sl.null, empty = "" } })
  end)

  it("filters: join writes a list's items with a separator, ', ' by default", function()
    local r = sl.template("{{ input.tags | join }}|{{ input.tags | join(' + ') }}|{{ state.notes | join('\\n') }}|{{ input.title | join('-') }}|{{ input.nope | join | default('-') }}")
    assert.equal("moon, sun, 3|moon + sun + 3|high\nlow|Tides|-", r(env))
    assert.equal('a;{"b":1}', sl.template("{{ x | join(';') }}"){ x = { "a", { b = 1 } } })
  end)

  it("chains filters left to right", function()
    local r = sl.template("{{ input.blank | trim | upper | json }}")
    assert.equal('"SPACED OUT"', r(env))
  end)

  it("compiles once: the same render function serves any number of environments", function()
    local r = sl.template("Notes on {{ input.title }}: {{ state.notes | join(', ') }}")
    assert.equal("Notes on Tides: high, low", r(env))
    assert.equal("Notes on Waves: crest", r{ input = { title = "Waves" }, state = { notes = { "crest" } } })
    assert.equal("Notes on : ", r{})
    assert.equal("Notes on Tides: high, low", r(env))
  end)

  it("keeps text without tags as it is, and writes {{ through a literal", function()
    assert.equal("no tags } here }}", sl.template("no tags } here }}")())
    assert.equal("{{ not a tag }}", sl.template("{{ '{{' }} not a tag }}")())
    assert.equal("", sl.template("")())
  end)

  it("tells which names a template uses, and refuses others when given the set", function()
    local r, used = template.compile("{{ input.a }} {{ state.b | json }} {{ 'x' }}", "f.lua:1")
    assert.same({ input = true, state = true }, used)
    assert.equal("1 2 x", r{ input = { a = 1 }, state = { b = 2 } })
    local ok, e = pcall(template.compile, "hi {{ inptu.a }}", "f.lua:7", { input = true, state = true })
    assert.is_false(ok)
    assert.equal("f.lua:7: template error at column 7: unknown name 'inptu' (did you mean 'input'?); "
      .. "a template here can use input and state", e)
  end)
end)

describe("template mistakes", function()
  it("an unknown filter, with the closest known one", function()
    local msg, l = mistake("Title: {{ input.title | uper }}")
    assert.equal(at(l, 25, "unknown filter 'uper' (did you mean 'upper'?)"), msg)
    msg, l = mistake("{{ x | frobnicate }}")
    assert.equal(at(l, 8, "unknown filter 'frobnicate'"), msg)
  end)

  it("an unclosed {{, at the column it opens", function()
    local msg, l = mistake("Dear {{ input.name , welcome")
    assert.equal(at(l, 6, "unclosed '{{' (no '}}' follows it)"), msg)
  end)

  it("a tag with no value, or something else where '|' or '}}' should be", function()
    local msg, l = mistake("a {{ }} b")
    assert.equal(at(l, 6, "expected a value or a name, found '}}'"), msg)
    msg, l = mistake("{{ input.title input }}")
    assert.equal(at(l, 16, "expected '|' or '}}', found 'input'"), msg)
    msg, l = mistake("{{ input. }}")
    assert.equal(at(l, 10, "expected a name after '.', found a space"), msg)
    msg, l = mistake("{{ x | }}")
    assert.equal(at(l, 8, "expected a filter name after '|', found '}}'"), msg)
  end)

  it("bad filter arguments: wrong count, wrong type, not a literal, unclosed", function()
    local msg, l = mistake("{{ x | default }}")
    assert.equal(at(l, 8, "filter 'default' takes 1 argument, got 0"), msg)
    msg, l = mistake("{{ x | default(1, 2) }}")
    assert.equal(at(l, 15, "filter 'default' takes 1 argument, got 2"), msg)
    msg, l = mistake("{{ x | upper(1) }}")
    assert.equal(at(l, 13, "filter 'upper' takes no arguments, got 1"), msg)
    msg, l = mistake("{{ x | join(3) }}")
    assert.equal(at(l, 13, "bad argument #1 to filter 'join' (a string expected, got integer)"), msg)
    msg, l = mistake("{{ x | default(input.x) }}")
    assert.equal(at(l, 16, "expected a value (a string in quotes or a number), found 'input'"), msg)
    msg, l = mistake("{{ x | join(', ' }}")
    assert.equal(at(l, 18, "expected ')' or ',' after a filter's argument, found '}}'"), msg)
  end)

  it("bad strings and indexes", function()
    local msg, l = mistake("{{ 'abc }}")
    assert.equal(at(l, 4, "unclosed string (a ' is missing)"), msg)
    msg, l = mistake([[{{ "a\q" }}]])
    assert.equal(at(l, 6, [[unknown escape '\q' in a string (use \n, \t, \r, \\, \" or \')]]), msg)
    msg, l = mistake("{{ input.tags[0] }}")
    assert.equal(at(l, 15, "index [0]: indexes count from 1"), msg)
    msg, l = mistake("{{ input[key] }}")
    assert.equal(at(l, 10, "expected an index (a number or a quoted key), found 'key'"), msg)
  end)

  it("gives the line and column within a template of several lines, counting characters", function()
    local msg, l = mistake("Résumé of {{ input.title }}\n\n  {{ state.notes | jsn }}")
    assert.equal(("%s:%d: template error at line 3, column 20: unknown filter 'jsn' (did you mean 'json'?)"):format(here, l), msg)
    msg, l = mistake("Résumé {{ x | nope }}")
    assert.equal(at(l, 15, "unknown filter 'nope'"), msg)
  end)

  it("names the caller's line when none is given, and refuses a template that is not a string", function()
    local l = line() + 1
    local ok, e = pcall(function() local r = template.compile("{{ x | bad }}"); return r end)
    assert.is_false(ok)
    assert.equal(at(l, 8, "unknown filter 'bad'"), e)
    local msg
    msg, l = mistake(42)
    assert.equal(("%s:%d: a template must be a string, got number"):format(here, l), msg)
  end)

  it("a value that cannot be rendered fails when rendering, naming the template and column", function()
    local l = line() + 1
    local r = sl.template("x {{ input.f }}")
    local ok, e = pcall(r, { input = { f = print } })
    assert.is_false(ok)
    assert.equal(at(l, 6, "cannot render 'input.f': it is a function"), e)
    l = line() + 1
    r = sl.template("{{ input | json }}")
    ok, e = pcall(r, { input = { print } })
    assert.equal(at(l, 12, "filter 'json': cannot write a function as JSON"), e)
    local cycle = {}
    cycle.self = cycle
    ok, e = pcall(r, { input = cycle })
    assert.matches("nested more than 100 deep (a cycle?)", e, 1, true)
  end)
end)
