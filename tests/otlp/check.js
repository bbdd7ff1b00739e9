#!/usr/bin/env node
// Checks OTLP/JSON trace data against the official OpenTelemetry protobuf
// definitions (opentelemetry-proto, as shipped in
// @opentelemetry/otlp-grpc-exporter-base), as strictly as the OTLP JSON
// encoding allows:
//
//   - every key is the lowerCamelCase JSON name of a field of the message
//     it is in (no unknown or misspelled fields, no snake_case);
//   - enums are integers with a defined value; traceId and spanId are hex
//     of the right length, not base64; 64-bit integers are decimal strings
//     or integral numbers; 32-bit ones integral numbers; every value has
//     its field's JSON type; a oneof has at most one member (AnyValue
//     exactly one);
//   - the message then converts to protobuf, encodes and decodes back to
//     the same object (nothing lost), and has what a span needs: a non-zero
//     trace and span id, a name, an end not before its start, and a
//     resource with service.name.
//
// Usage: node check.js FILE...  where each FILE holds one TracesData (or
// ExportTraceServiceRequest, the same shape) per line (.jsonl) or per file.
// Prints "ok: N spans in M messages" or each problem, naming the file,
// line and JSON path; exits 1 on any problem.
'use strict';

const fs = require('fs');
const path = require('path');
const protobuf = require('protobufjs');

const protoDir = path.join(path.dirname(require.resolve(
  '@opentelemetry/otlp-grpc-exporter-base/package.json')), 'build', 'protos');

function loadRoot() {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => path.join(protoDir, target);
  root.loadSync('opentelemetry/proto/trace/v1/trace.proto');
  root.resolveAll();
  return root;
}

const root = loadRoot();
const TracesData = root.lookupType('opentelemetry.proto.trace.v1.TracesData');

const INT64 = new Set(['int64', 'uint64', 'sint64', 'fixed64', 'sfixed64']);
const INT32 = new Set(['int32', 'uint32', 'sint32', 'fixed32', 'sfixed32']);
// The OTLP exception to proto3 JSON: these bytes fields are hex, not base64.
const HEX_IDS = { traceId: 32, spanId: 16, parentSpanId: 16 };

class Problems {
  constructor() { this.list = []; }
  add(where, what) { this.list.push(`${where}: ${what}`); }
}

function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

// Checks value v (JSON) against message type t at JSON path p; returns the
// object protobufjs converts (ids as bytes, 64-bit values as strings).
function checkMessage(t, v, p, probs) {
  if (!isPlainObject(v)) {
    probs.add(p, `expected an object for ${t.fullName}`);
    return {};
  }
  const out = {};
  const oneofSeen = {};
  for (const [k, value] of Object.entries(v)) {
    const f = t.fields[k];
    if (!f) {
      const camel = k.replace(/_([a-z])/g, (_m, c) => c.toUpperCase());
      probs.add(`${p}.${k}`, t.fields[camel] ? `the JSON name of this field is "${camel}"` :
        `no field "${k}" in ${t.fullName} (fields: ${Object.keys(t.fields).join(', ')})`);
      continue;
    }
    if (value === null) {
      probs.add(`${p}.${k}`, 'null is not a value of any OTLP field');
      continue;
    }
    if (f.partOf) {
      if (oneofSeen[f.partOf.name]) {
        probs.add(`${p}.${k}`, `a second member of oneof ${f.partOf.name} (${oneofSeen[f.partOf.name]})`);
      }
      oneofSeen[f.partOf.name] = k;
    }
    if (f.repeated) {
      if (!Array.isArray(value)) {
        probs.add(`${p}.${k}`, 'expected an array (repeated field)');
        continue;
      }
      out[k] = value.map((x, i) => checkValue(f, k, x, `${p}.${k}[${i}]`, probs));
    } else {
      out[k] = checkValue(f, k, value, `${p}.${k}`, probs);
    }
  }
  if (t.fullName === '.opentelemetry.proto.common.v1.AnyValue' && !oneofSeen.value) {
    probs.add(p, 'an AnyValue with no value set');
  }
  return out;
}

function checkValue(f, k, v, p, probs) {
  const rt = f.resolvedType;
  if (rt instanceof protobuf.Type) return checkMessage(rt, v, p, probs);
  if (rt instanceof protobuf.Enum) {
    if (!Number.isInteger(v)) probs.add(p, `enum ${rt.name} must be an integer, not ${JSON.stringify(v)}`);
    else if (!Object.values(rt.values).includes(v)) probs.add(p, `${v} is not a value of enum ${rt.name}`);
    return v;
  }
  if (f.type === 'bytes') {
    const want = HEX_IDS[k];
    if (want === undefined) {
      if (typeof v !== 'string') probs.add(p, 'bytes must be a base64 string');
      return Buffer.from(String(v), 'base64');
    }
    if (typeof v !== 'string' || v.length !== want || !/^[0-9a-fA-F]+$/.test(v)) {
      probs.add(p, `${k} must be ${want} hex digits, not ${JSON.stringify(v)}`);
      return Buffer.alloc(want / 2);
    }
    return Buffer.from(v, 'hex');
  }
  if (INT64.has(f.type)) {
    const ok = (typeof v === 'string' && /^-?[0-9]+$/.test(v)) || Number.isSafeInteger(v);
    if (!ok) probs.add(p, `${f.type} must be a decimal string or an integral number, not ${JSON.stringify(v)}`);
    if (ok && f.type.startsWith('u') && String(v).startsWith('-')) probs.add(p, `${f.type} cannot be negative`);
    return String(v);
  }
  if (INT32.has(f.type)) {
    if (!Number.isInteger(v)) probs.add(p, `${f.type} must be an integral number, not ${JSON.stringify(v)}`);
    else if (f.type.startsWith('u') || f.type === 'fixed32') {
      if (v < 0 || v > 0xffffffff) probs.add(p, `${v} is out of range for ${f.type}`);
    } else if (v < -0x80000000 || v > 0x7fffffff) probs.add(p, `${v} is out of range for ${f.type}`);
    return v;
  }
  if (f.type === 'double' || f.type === 'float') {
    const ok = typeof v === 'number' || v === 'NaN' || v === 'Infinity' || v === '-Infinity';
    if (!ok) probs.add(p, `${f.type} must be a number, not ${JSON.stringify(v)}`);
    return typeof v === 'number' ? v : Number(v);
  }
  if (f.type === 'bool') {
    if (typeof v !== 'boolean') probs.add(p, `bool must be true or false, not ${JSON.stringify(v)}`);
    return v;
  }
  if (f.type === 'string') {
    if (typeof v !== 'string') probs.add(p, `string expected, not ${JSON.stringify(v)}`);
    return v;
  }
  probs.add(p, `unexpected field type ${f.type}`);
  return v;
}

// What a span needs beyond the schema.
function checkSemantics(obj, p, probs) {
  let spans = 0;
  const rs = obj.resourceSpans || [];
  if (rs.length === 0) probs.add(p, 'no resourceSpans');
  rs.forEach((r, i) => {
    const rp = `${p}.resourceSpans[${i}]`;
    const attrs = (r.resource && r.resource.attributes) || [];
    const svc = attrs.find((a) => a.key === 'service.name');
    if (!svc || !svc.value || typeof svc.value.stringValue !== 'string' || svc.value.stringValue === '') {
      probs.add(`${rp}.resource`, 'no service.name string attribute');
    }
    (r.scopeSpans || []).forEach((ss, j) => {
      (ss.spans || []).forEach((s, k) => {
        const sp = `${rp}.scopeSpans[${j}].spans[${k}]`;
        spans++;
        if (!s.traceId || /^0+$/.test(s.traceId)) probs.add(`${sp}.traceId`, 'missing or all zero');
        if (!s.spanId || /^0+$/.test(s.spanId)) probs.add(`${sp}.spanId`, 'missing or all zero');
        if (typeof s.name !== 'string' || s.name === '') probs.add(`${sp}.name`, 'missing or empty');
        if (s.startTimeUnixNano === undefined) probs.add(`${sp}.startTimeUnixNano`, 'missing');
        if (s.endTimeUnixNano === undefined) probs.add(`${sp}.endTimeUnixNano`, 'missing');
        else if (BigInt(s.endTimeUnixNano) < BigInt(s.startTimeUnixNano || 0)) {
          probs.add(`${sp}.endTimeUnixNano`, 'before the start');
        }
        (s.events || []).forEach((e, n) => {
          if (e.timeUnixNano === undefined) probs.add(`${sp}.events[${n}].timeUnixNano`, 'missing');
        });
      });
    });
  });
  return spans;
}

// Protobuf conversion with nothing lost: fromObject, verify, encode,
// decode, and the decoded message reads back as what was sent.
function roundTrip(converted, p, probs) {
  const msg = TracesData.fromObject(converted);
  const err = TracesData.verify(msg);
  if (err) {
    probs.add(p, `protobuf verify: ${err}`);
    return;
  }
  const back = TracesData.decode(TracesData.encode(msg).finish());
  const opts = { longs: String, bytes: String, defaults: false };
  const a = JSON.stringify(TracesData.toObject(msg, opts));
  const b = JSON.stringify(TracesData.toObject(back, opts));
  if (a !== b) probs.add(p, 'differs after a protobuf encode and decode');
}

function checkText(text, where, probs, counts) {
  let obj;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    probs.add(where, `not JSON: ${e.message}`);
    return;
  }
  const before = probs.list.length;
  const converted = checkMessage(TracesData, obj, where, probs);
  if (probs.list.length === before) {
    counts.spans += checkSemantics(obj, where, probs);
    roundTrip(converted, where, probs);
  }
  counts.messages++;
}

function main(files) {
  if (files.length === 0) {
    process.stderr.write('usage: check.js FILE...\n');
    return 2;
  }
  const probs = new Problems();
  const counts = { spans: 0, messages: 0 };
  for (const file of files) {
    const text = fs.readFileSync(file, 'utf8');
    // One message per line in a trace file (.jsonl); one per file else (a
    // request body).
    if (file.endsWith('.jsonl')) {
      text.split('\n').forEach((l, i) => {
        if (l.trim() !== '') checkText(l, `${file}:${i + 1}: $`, probs, counts);
      });
    } else {
      checkText(text, `${file}: $`, probs, counts);
    }
  }
  if (counts.messages === 0) probs.add(files.join(' '), 'no messages');
  if (probs.list.length > 0) {
    process.stdout.write(probs.list.slice(0, 50).join('\n') + '\n');
    if (probs.list.length > 50) process.stdout.write(`(${probs.list.length - 50} more)\n`);
    return 1;
  }
  process.stdout.write(`ok: ${counts.spans} spans in ${counts.messages} messages\n`);
  return 0;
}

process.exitCode = main(process.argv.slice(2));
