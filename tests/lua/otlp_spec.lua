-- The trace file and what the OTLP/HTTP exporter sends, checked against the
-- official OpenTelemetry protobuf definitions (tests/otlp/check.js, with
-- opentelemetry-proto from npm) as strictly as the OTLP JSON encoding
-- allows: field names, enum integers, hex ids, 64-bit values, and a
-- protobuf encode and decode that loses nothing.

local sl = require "sluice"
local helpers = require "helpers"

local q = helpers.quote
local MOCK = os.getenv("SLUICE_MOCK_SERVER") or (helpers.build .. "/mock_server")
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local CHECK = here .. "/../otlp/check.js"

-- Runs the checker on files; returns its exit code and what it printed.
local function check(files)
  local quoted = {}
  for i, f in ipairs(files) do quoted[i] = q(f) end
  local p = assert(io.popen("env -u LD_PRELOAD node " .. q(CHECK) .. " " .. table.concat(quoted, " ") .. " 2>&1"))
  local out = p:read("a")
  local _, _, code = p:close()
  return code, out
end

-- A pipeline with what a span can carry: children and keys, a failure
-- with retries and a fallback, usage, a cache hit, log records with fields
-- and more of them than a span keeps, and text that needs escaping.
local RICH = [[
local sl = require "sluice"
local cached = sl.step{ name = "cached", cache = true, run = function(x) return x end }
return sl.pipeline{ name = "rich \"quoted\" ünïcode",
  sl.step{ name = "logs", run = function(x, ctx)
    ctx:log("warn", "disk low", { free_mb = 3, path = "/tmp/\n" })
    for i = 1, 40 do ctx:log("debug", "tick", i) end
    ctx:charge{ cost = 0.25, tokens = 12, requests = 1 }
    return x end },
  sl.map{ name = "each", over = function(x) return { 1, 2 } end,
    body = sl.step{ name = "item", run = function(v) return v end } },
  sl.pipeline{ name = "guarded",
    sl.step{ name = "flaky", retries = 1, backoff = { base = 0 },
      run = function() error("always fails") end },
    fallback = sl.step{ name = "backup", run = function() return "ok" end } },
  sl.step{ name = "again", run = function(x) return x end },
  cached, cached,
}
]]

describe("OTLP/JSON against the official protobuf definitions", function()
  it("the checker refuses what the encoding forbids, naming where", function()
    local dir = helpers.tmpdir()
    local bad = dir .. "/bad.jsonl"
    local f = assert(io.open(bad, "w"))
    -- The trace file's old form: a bare span, enum names, base64 ids.
    f:write('{"traceId":"AAECAwQFBgcICQoLDA0ODw==","spanId":"AAECAwQFBgc=","name":"s",'
      .. '"kind":"SPAN_KIND_INTERNAL","startTimeUnixNano":"1","endTimeUnixNano":"2"}\n')
    f:close()
    local code, out = check({ bad })
    assert.equal(1, code)
    assert.matches("bad.jsonl:1: $.traceId: no field \"traceId\" in .opentelemetry.proto.trace.v1.TracesData", out, 1, true)
    f = assert(io.open(bad, "w"))
    f:write('{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"x"}}]},'
      .. '"scopeSpans":[{"spans":[{"traceId":"000102030405060708090a0b0c0d0e0f","spanId":"0001020304050607",'
      .. '"name":"s","kind":"SPAN_KIND_INTERNAL","startTimeUnixNano":"1","endTimeUnixNano":"2",'
      .. '"status":{"code":"STATUS_CODE_OK"},"attributes":[{"key":"k","value":{"intValue":1.5}}]}]}]}]}\n')
    f:close()
    code, out = check({ bad })
    assert.equal(1, code)
    assert.matches("spans[0].kind: enum SpanKind must be an integer", out, 1, true)
    assert.matches("spans[0].status.code: enum StatusCode must be an integer", out, 1, true)
    assert.matches("attributes[0].value.intValue: int64 must be a decimal string", out, 1, true)
    helpers.rm(dir)
  end)

  it("accepts every line of a trace file", function()
    local dir = helpers.tmpdir()
    local file = helpers.script(RICH, dir, "rich.lua")
    local trace = dir .. "/t.jsonl"
    local code = helpers.cli({ "run", file, "--input", "{}", "--store", ":memory:", "--trace", trace })
    assert.equal(0, code)
    local out
    code, out = check({ trace })
    assert.equal(0, code, out)
    -- pipeline, logs, each, two items, guarded, flaky, backup, again, cached twice
    assert.matches("^ok: 11 spans in 11 messages\n$", out)
    helpers.rm(dir)
  end)

  it("accepts every request the exporter sends to a collector", function()
    local dir = helpers.tmpdir()
    local bodies = dir .. "/bodies"
    assert(os.execute("mkdir -p " .. q(bodies)))
    local server = assert(io.popen("exec env -u LD_PRELOAD MOCK_OTLP_DIR=" .. q(bodies)
      .. " sh -c 'echo $$; exec " .. q(MOCK) .. " 0'"))
    local pid = server:read("l")
    local port = assert(server:read("l"):match("^listening on (%d+)$"), "the mock server did not start")
    local file = helpers.script(RICH, dir, "rich.lua")
    local code = helpers.cli({ "run", file, "--input", "{}", "--store", ":memory:",
      "--otlp", "http://127.0.0.1:" .. port })
    os.execute("kill -TERM " .. pid)
    server:close()
    assert.equal(0, code)
    local files = {}
    local ls = assert(io.popen("ls " .. q(bodies)))
    for name in ls:lines() do files[#files + 1] = bodies .. "/" .. name end
    ls:close()
    assert.is_true(#files >= 1)
    local out
    code, out = check(files)
    assert.equal(0, code, out)
    assert.matches("^ok: 11 spans in %d+ messages\n$", out)
    helpers.rm(dir)
  end)
end)
