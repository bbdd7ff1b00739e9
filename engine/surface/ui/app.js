// sluice ui: the runs page and the run page, on the JSON API under /api/
// (README, "The web UI"). Plain JavaScript, no framework and nothing from
// elsewhere. Everything a run holds is user data: it reaches the page only
// as text (textContent, attribute values), never as markup.
"use strict";

// {======================================================
// Helpers
// =======================================================

function el(tag, attrs, ...kids) {
  const SVG = "http://www.w3.org/2000/svg";
  const svg = ["svg", "g", "rect", "path", "text", "polygon", "ellipse", "title", "line"]
    .includes(tag);
  const e = svg ? document.createElementNS(SVG, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") e.textContent = String(v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class" && !svg) e.className = v;
    // Through the CSSOM: the page's policy refuses style attributes.
    else if (k === "style") e.style.cssText = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const k of kids.flat()) {
    if (k === undefined || k === null || k === false) continue;
    e.appendChild(typeof k === "string" || typeof k === "number"
      ? document.createTextNode(String(k)) : k);
  }
  return e;
}

async function api(path, opts) {
  const res = await fetch(path, opts);
  let body;
  try { body = await res.json(); } catch (e) { body = { error: "the server said " + res.status }; }
  if (!res.ok) {
    const err = new Error(body.error || ("HTTP " + res.status));
    err.status = res.status;
    throw err;
  }
  return body;
}

function fmtMs(ms) {
  if (ms === undefined || ms === null) return "–";
  if (ms === 0) return "0";
  if (ms < 1) return (ms * 1000).toFixed(0) + " µs";
  if (ms < 1000) return (ms < 10 ? ms.toFixed(2) : ms.toFixed(0)) + " ms";
  const s = ms / 1000;
  if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + "m" + String(Math.floor(s % 60)).padStart(2, "0") + "s";
  return Math.floor(m / 60) + "h" + String(m % 60).padStart(2, "0") + "m";
}

function fmtTime(ms) {
  if (!ms) return "–";
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

function fmtCost(c) {
  if (!c) return "–";
  return c < 0.01 ? c.toPrecision(2) : c.toFixed(c < 1 ? 4 : 2);
}

function fmtInt(n) {
  if (!n) return "–";
  return Number(n).toLocaleString("en-US");
}

function badge(status) {
  return el("span", { class: "badge " + status, text: status });
}

function pretty(v) {
  return el("pre", { class: "json", text: JSON.stringify(v, null, 2) });
}

const ACTIVE = new Set(["running", "queued", "waiting"]);

function parseHash() {
  const h = location.hash.replace(/^#/, "") || "/";
  const [path, query] = h.split("?");
  const params = new URLSearchParams(query || "");
  return { path, params };
}

function setHash(path, params, replace) {
  const q = params && params.toString();
  const h = "#" + path + (q ? "?" + q : "");
  if (replace) history.replaceState(null, "", h);
  else location.hash = h;
}

function setLive(on) { document.getElementById("live").hidden = !on; }

// }======================================================


// {======================================================
// The runs page
// =======================================================

const PAGE = 50;
const STATUSES = ["", "running", "queued", "waiting", "paused", "completed", "failed",
  "cancelled", "interrupted"];

function runsView(main, params) {
  let timer = null, stopped = false;
  const status = el("select", { "aria-label": "status", onchange: apply },
    STATUSES.map((s) => el("option", { value: s, text: s || "all statuses" })));
  status.value = params.get("status") || "";
  const pipeline = el("input", { type: "text", placeholder: "pipeline", "aria-label": "pipeline",
    value: params.get("pipeline") || "", onchange: apply });
  const search = el("input", { type: "search", placeholder: "search ids, errors, inputs, outputs",
    "aria-label": "search", value: params.get("q") || "" });
  let debounce = null;
  search.addEventListener("input", () => { clearTimeout(debounce); debounce = setTimeout(apply, 300); });
  const offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
  const body = el("div", {}, el("p", { class: "empty", text: "Loading…" }));
  const newer = el("button", { text: "← Newer", disabled: offset === 0, onclick: () => page(-1) });
  const older = el("button", { text: "Older →", disabled: true, onclick: () => page(1) });
  const where = el("span", {});
  main.replaceChildren(
    el("h1", {}, "Runs"),
    el("div", { class: "filters" }, status, pipeline, search),
    body,
    el("div", { class: "pager" }, where, newer, older));

  function query(extra) {
    const p = new URLSearchParams();
    if (status.value) p.set("status", status.value);
    if (pipeline.value.trim()) p.set("pipeline", pipeline.value.trim());
    if (search.value.trim()) p.set("q", search.value.trim());
    for (const [k, v] of Object.entries(extra || {})) if (v) p.set(k, v);
    return p;
  }
  function apply() { setHash("/", query(), true); load(0); }
  function page(dir) {
    const next = Math.max(0, currentOffset + dir * PAGE);
    setHash("/", query({ offset: next || "" }), false);
  }

  let currentOffset = offset;
  async function load(off) {
    currentOffset = off;
    clearTimeout(timer);
    const p = query({ limit: PAGE, offset: off });
    let data;
    try {
      data = await api("/api/runs?" + p.toString());
    } catch (e) {
      if (stopped) return;
      body.replaceChildren(el("p", { class: "empty formerr", text: "Cannot list the runs: " + e.message }));
      timer = setTimeout(() => load(currentOffset), 3000);
      return;
    }
    if (stopped) return;
    render(data);
    // Live: the page is read again while it is open, so new runs and runs
    // that change status show up.
    timer = setTimeout(() => load(currentOffset), 2000);
  }

  function render(data) {
    newer.disabled = data.offset === 0;
    older.disabled = !data.more;
    where.textContent = data.runs.length === 0 ? "" :
      `${data.offset + 1}–${data.offset + data.runs.length}`;
    setLive(data.runs.some((r) => ACTIVE.has(r.status)));
    if (data.runs.length === 0) {
      body.replaceChildren(el("p", { class: "empty", text:
        data.offset > 0 ? "No more runs." :
        (status.value || pipeline.value || search.value) ? "No run matches." :
        "No runs yet: sluice run FILE --store … records one." }));
      return;
    }
    const rows = data.runs.map((r) => el("tr", { "data-run": r.id },
      el("td", {}, badge(r.status)),
      el("td", {}, el("a", { href: "#/runs/" + encodeURIComponent(r.id), class: "mono", text: r.id }),
        r.error && r.status !== "paused" ? el("div", { class: "err", text: r.error, title: r.error }) : null,
        r.waiting_for ? el("div", { class: "sub", text: "waiting for " + r.waiting_for }) : null),
      el("td", { text: r.pipeline }),
      el("td", { class: "num", text: fmtTime(r.started_ms) }),
      el("td", { class: "num", text: r.duration_ms !== undefined ? fmtMs(r.duration_ms) : "–" }),
      el("td", { class: "num", text: fmtCost(r.cost) }),
      el("td", { class: "num", text: fmtInt(r.tokens) })));
    body.replaceChildren(el("table", { class: "runs" },
      el("thead", {}, el("tr", {}, ["Status", "Run", "Pipeline", "Started", "Duration", "Cost",
        "Tokens"].map((h, i) => el("th", { text: h, class: i >= 3 ? "num" : null })))),
      el("tbody", {}, rows)));
  }

  load(offset);
  return { stop() { stopped = true; clearTimeout(timer); clearTimeout(debounce); setLive(false); } };
}

// }======================================================


// {======================================================
// The run page
// =======================================================

const ROW = 26;

function runView(main, id, params) {
  let timer = null, stopped = false, run = null, selected = params.get("step") || null;
  // A step execution is named by its path and the epoch (owner) it ran
  // under: a resumed run runs some paths again.
  let tab = params.get("tab") || "timeline";
  const collapsed = new Set();
  const head = el("div", {});
  const errors = el("div", {});
  const question = el("div", {});
  const tabs = el("div", { class: "tabs", role: "tablist" });
  const left = el("div", { class: "panel" });
  const detail = el("aside", { class: "panel detail" },
    el("p", { class: "sub", text: "Click a step to see its input, output, logs and errors." }));
  main.replaceChildren(
    el("div", {}, el("a", { href: "#/", text: "← Runs" })),
    head, errors, question, tabs, el("div", { class: "runview" }, left, detail));

  let questionKey = null, headKey = null, errorsKey = null;
  const timeline = makeTimeline(left, (key) => select(key), collapsed);
  let flowBox = null;

  function showTabs() {
    tabs.replaceChildren(...[["timeline", "Timeline"], ["flow", "Flow"], ["io", "Input & output"]]
      .map(([k, label]) => el("button", { class: k === tab ? "on" : null, role: "tab", text: label,
        onclick: () => { tab = k; updateHash(); showTabs(); showLeft(); } })));
  }
  function updateHash() {
    const p = new URLSearchParams();
    if (selected) p.set("step", selected);
    if (tab !== "timeline") p.set("tab", tab);
    setHash("/runs/" + encodeURIComponent(id), p, true);
  }
  function showLeft() {
    if (!run) return;
    if (tab === "timeline") timeline.show(run, selected);
    else if (tab === "flow") {
      flowBox = el("div", { class: "flow" }, el("p", { class: "empty", text: "Drawing…" }));
      left.replaceChildren(flowBox);
      timeline.detach();
      api("/api/runs/" + encodeURIComponent(id) + "/graph").then((g) => {
        if (tab === "flow") flowBox.replaceChildren(drawFlow(g, run, (key) => select(key)));
      }).catch((e) => {
        flowBox.replaceChildren(el("p", { class: "empty", text: "Cannot draw the pipeline: " + e.message }));
      });
    } else {
      timeline.detach();
      left.replaceChildren(el("div", { class: "detail" },
        el("h4", { text: "Input" }), pretty(run.input === undefined ? null : run.input),
        el("h4", { text: "Output" }), run.output === undefined
          ? el("p", { class: "sub", text: run.status === "completed" ? "null" : "none yet" })
          : pretty(run.output)));
    }
  }

  function renderHead() {
    const key = JSON.stringify([run.status, run.duration_ms, run.cost, run.tokens, run.steps.length]);
    if (key === headKey) return;
    headKey = key;
    head.replaceChildren(
      el("h1", {}, el("span", { class: "mono", text: run.id }), badge(run.status)),
      el("div", { class: "facts" },
        fact("Pipeline", run.pipeline),
        fact("Started", fmtTime(run.started_ms)),
        fact("Duration", run.duration_ms !== undefined ? fmtMs(run.duration_ms) : "–"),
        fact("Steps", fmtInt(run.steps.length)),
        fact("Cost", fmtCost(run.cost)),
        fact("Tokens", fmtInt(run.tokens)),
        fact("Requests", fmtInt(run.requests)),
        run.file ? fact("File", run.file) : null));
  }
  function fact(k, v) { return el("div", {}, el("span", { text: k }), el("span", { text: v })); }

  function renderErrors() {
    const key = JSON.stringify(run.errors || null) + run.status;
    if (key === errorsKey) return;
    errorsKey = key;
    if (!run.errors || run.status === "paused" || run.status === "completed") {
      errors.replaceChildren();
      return;
    }
    errors.replaceChildren(el("div", { class: "errors", role: "alert" },
      el("strong", { text: "The run " + run.status + ":" }),
      el("ol", {}, run.errors.map((e) => el("li", {},
        el("span", { text: e.text || e.message }),
        e.step ? el("span", { class: "sub", text: "  in step " + e.step }) : null,
        e.where ? el("div", { class: "where", text: e.where }) : null)))));
  }

  function renderQuestion() {
    const open = (run.waits || []).filter((w) => !w.answered);
    const key = run.status + JSON.stringify(open);
    if (key === questionKey) return;
    questionKey = key;
    if (run.status !== "paused" || open.length === 0) {
      question.replaceChildren();
      return;
    }
    question.replaceChildren(...open.map((w) => answerForm(w)));
  }

  function answerForm(w) {
    const form = el("form", { class: "answer", novalidate: true });
    const fields = schemaFields(w.schema, form);
    const status = el("span", { class: "formerr", role: "status" });
    const submit = el("button", { type: "submit", class: "primary", text: "Answer and resume" });
    form.appendChild(el("div", { class: "actions" }, submit, status));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      let answer;
      try { answer = fields.value(); } catch (e) { status.textContent = e.message; return; }
      submit.disabled = true;
      status.textContent = "Resuming…";
      try {
        const r = await api("/api/runs/" + encodeURIComponent(id) + "/answer", {
          method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ answer }) });
        status.textContent = r.status === "queued" ? "Answered: queued for a worker." : "Answered.";
        questionKey = null;
        poll(200);
      } catch (e) {
        submit.disabled = false;
        status.textContent = e.message;
      }
    });
    return el("div", { class: "question" },
      el("div", { class: "sub", text: "Waiting for an answer at step " + w.path }),
      el("div", { class: "message", text: w.message || "(no message)" }), form);
  }

  async function select(key) {
    selected = key;
    updateHash();
    if (tab === "timeline") timeline.select(key);
    const [path, epoch] = key.split("@");
    detail.replaceChildren(el("p", { class: "sub", text: "Loading " + path + "…" }));
    let s;
    try {
      s = await api("/api/runs/" + encodeURIComponent(id) + "/step?path=" + encodeURIComponent(path) +
        (epoch ? "&epoch=" + encodeURIComponent(epoch) : ""));
    } catch (e) {
      detail.replaceChildren(el("p", { class: "formerr", text: e.message }));
      return;
    }
    if (selected !== key) return;
    detail.replaceChildren(...stepDetail(s, run, select));
  }

  async function poll(delay) {
    clearTimeout(timer);
    timer = setTimeout(load, delay);
  }
  async function load() {
    let r;
    try {
      r = await api("/api/runs/" + encodeURIComponent(id));
    } catch (e) {
      if (stopped) return;
      if (e.status === 404) {
        main.replaceChildren(el("div", {}, el("a", { href: "#/", text: "← Runs" })),
          el("p", { class: "empty", text: e.message }));
        return;
      }
      head.replaceChildren(el("p", { class: "formerr", text: "Cannot read the run: " + e.message }));
      poll(3000);
      return;
    }
    if (stopped) return;
    const first = run === null;
    const changed = first || JSON.stringify(r) !== JSON.stringify(run);
    run = r;
    const live = ACTIVE.has(run.status);
    setLive(live);
    if (changed) {
      renderHead(); renderErrors(); renderQuestion();
      if (first) { showTabs(); showLeft(); if (selected) select(selected); }
      else if (tab === "timeline") timeline.show(run, selected);
    }
    // Live while it runs; a paused run is looked at now and then, in case
    // someone else answers it.
    if (live) poll(1000);
    else if (run.status === "paused") poll(3000);
  }
  load();
  return { stop() { stopped = true; clearTimeout(timer); setLive(false); } };
}

// The step tree and its Gantt: one row per execution, in start order,
// children under their parent; only the rows in view are drawn.
function makeTimeline(box, onSelect, collapsed) {
  const scroll = el("div", { class: "tl-scroll" });
  const rowsBox = el("div", { class: "tl-rows" });
  scroll.appendChild(rowsBox);
  const axis = el("div", { class: "axis" });
  const headEl = el("div", { class: "tl-head" }, el("div", { class: "title", text: "Step" }), axis);
  const legend = el("div", { class: "legend" },
    ...[["var(--ok)", "completed"], ["var(--bad)", "failed"], ["var(--wait)", "waiting"],
      ["var(--cache)", "cache hit"], ["var(--restored)", "restored on resume"],
      ["var(--warn)", "retried"]].map(([c, t]) => el("span", {},
        el("i", { style: "background:" + c }), t)));
  // Finding steps in a large run: by name, kind, key or status.
  const find = el("input", { type: "search", placeholder: "find steps (name, kind, status)",
    "aria-label": "find steps" });
  const found = el("span", { class: "sub" });
  let filter = "";
  find.addEventListener("input", () => { filter = find.value.trim().toLowerCase(); build(); draw(); });
  const tools = el("div", { class: "tl-tools" }, find, found);
  const root = el("div", { class: "tl" }, tools, headEl, scroll, legend);
  let run = null, rows = [], selected = null, kids = new Map();
  scroll.addEventListener("scroll", draw);

  function build() {
    kids = new Map();
    const roots = [];
    for (const s of run.steps) {
      const p = s.parent_id && run.steps[s.parent_id - 1];
      if (p && p !== s) {
        if (!kids.has(stepKey(p))) kids.set(stepKey(p), []);
        kids.get(stepKey(p)).push(s);
      } else roots.push(s);
    }
    rows = [];
    const walk = (s, depth) => {
      rows.push({ s, depth });
      if (collapsed.has(stepKey(s)) || depth > 200) return;
      for (const k of kids.get(stepKey(s)) || []) walk(k, depth + 1);
    };
    for (const r of roots) walk(r, 0);
    if (filter) {
      const hit = (s) => [s.name, s.kind, s.key, s.status, s.path].some((v) =>
        v !== undefined && v !== null && String(v).toLowerCase().includes(filter));
      rows = run.steps.filter(hit).map((s) => ({ s, depth: 0 }));
      found.textContent = `${rows.length.toLocaleString("en-US")} of ${run.steps.length.toLocaleString("en-US")}`;
    } else {
      found.textContent = "";
    }
    rowsBox.style.height = rows.length * ROW + "px";
    scroll.style.height = Math.min(560, rows.length * ROW + 2) + "px";
    const span = Math.max(run.span_ms || 0, 0.001);
    axis.replaceChildren(...[0, 0.25, 0.5, 0.75, 1].map((f) =>
      el("span", { class: "tick", style: `left:${Math.min(f * 100, 97)}%`, text: fmtMs(span * f) })));
  }

  function draw() {
    if (!run) return;
    const span = Math.max(run.span_ms || 0, 0.001);
    const first = Math.max(0, Math.floor(scroll.scrollTop / ROW) - 10);
    const last = Math.min(rows.length, first + Math.ceil(scroll.clientHeight / ROW) + 20);
    const out = [];
    for (let i = first; i < last; i++) {
      const { s, depth } = rows[i];
      const key = stepKey(s);
      const has = kids.has(key);
      const marks = [];
      if (s.cached) marks.push(el("span", { class: "mark cached", text: "cache" }));
      if (s.restored) marks.push(el("span", { class: "mark restored", text: "restored" }));
      if (s.attempts > 1) marks.push(el("span", { class: "mark retry", text: "×" + s.attempts }));
      if (s.status === "waiting" || s.status === "waited")
        marks.push(el("span", { class: "mark wait", text: s.status }));
      else if (s.answered) marks.push(el("span", { class: "mark wait", text: "answered" }));
      const left = (s.start_ms / span) * 100;
      const width = Math.max(((s.ms || 0) / span) * 100, 0);
      const cls = ["bar", s.status, s.cached ? "cached" : "", s.restored ? "restored" : "",
        s.attempts > 1 ? "retried" : ""].join(" ");
      const labelLeft = left + width > 80;
      const row = el("div", { class: "tl-row" + (key === selected ? " sel" : ""),
        style: `top:${i * ROW}px`, "data-path": s.path, "data-key": key, role: "button",
        title: `${s.name} (${s.kind}) ${s.status}, ${fmtMs(s.ms)}` +
          (s.attempts > 1 ? `, ${s.attempts} attempts` : "") + (s.error ? "\n" + s.error : ""),
        onclick: () => onSelect(key) },
        el("div", { class: "tl-name", style: `padding-left:${8 + depth * 14}px` },
          el("span", { class: "caret", text: has ? (collapsed.has(key) ? "▸" : "▾") : "",
            onclick: has ? (ev) => { ev.stopPropagation(); toggle(key); } : null }),
          el("span", { class: "nm", text: s.key && s.key !== s.name ? `${s.name} [${s.key}]` : s.name }),
          el("span", { class: "kind", text: has ? `${s.kind} · ${fmtInt(kids.get(key).length)}` : s.kind }),
          ...marks),
        el("div", { class: "tl-lane" },
          el("div", { class: cls, style: `left:${left}%;width:${width}%` }),
          el("span", { class: "bar-label", text: fmtMs(s.ms),
            style: labelLeft ? `right:${100 - left}%;padding-right:4px`
              : `left:calc(${left + width}% + 4px)` })));
      out.push(row);
    }
    rowsBox.replaceChildren(...out);
  }

  function toggle(path) {
    if (collapsed.has(path)) collapsed.delete(path); else collapsed.add(path);
    build(); draw();
  }

  return {
    show(r, sel) {
      run = r; selected = sel;
      if (root.parentNode !== box) box.replaceChildren(root);
      if (run.steps.length === 0) {
        rowsBox.style.height = "0px";
        rowsBox.replaceChildren(el("p", { class: "empty", text: "No step has been recorded yet." }));
        return;
      }
      build(); draw();
    },
    select(key) {
      selected = key;
      const i = rows.findIndex((r) => stepKey(r.s) === key);
      if (i >= 0 && (i * ROW < scroll.scrollTop || (i + 1) * ROW > scroll.scrollTop + scroll.clientHeight))
        scroll.scrollTop = Math.max(0, i * ROW - scroll.clientHeight / 2);
      draw();
    },
    detach() {},
  };
}

function stepKey(s) { return s.path + "@" + (s.epoch || 0); }

function isMessages(v) {
  return Array.isArray(v) && v.length > 0 && v.every((m) => m && typeof m === "object" && "role" in m);
}

function messageList(msgs) {
  return msgs.map((m) => el("div", { class: "msg" },
    el("div", { class: "role", text: m.role + (m.name ? " · " + m.name : "") +
      (m.tool_call_id ? " · " + m.tool_call_id : "") }),
    m.content !== undefined && m.content !== null
      ? el("div", { class: "content", text: typeof m.content === "string" ? m.content
        : JSON.stringify(m.content, null, 2) }) : null,
    m.tool_calls ? toolCalls(m.tool_calls) : null));
}

function toolCalls(calls) {
  return el("div", {}, calls.map((c) => {
    const fn = (c && c.function) || {};
    return el("div", { class: "msg" }, el("div", { class: "role", text: "tool call · " + (fn.name || "?") }),
      el("div", { class: "content mono", text: typeof fn.arguments === "string" ? fn.arguments
        : JSON.stringify(fn.arguments) }));
  }));
}

function stepDetail(s, run, select) {
  const out = [];
  const st = (run.steps || []).find((x) => stepKey(x) === stepKey(s)) || {};
  out.push(el("h3", { text: s.name }),
    el("div", {}, badge(st.status || s.status), " ", el("span", { class: "sub", text: s.kind })));
  const u = s.usage || {};
  out.push(el("dl", { class: "kv" },
    el("dt", { text: "path" }), el("dd", { class: "mono", text: s.path }),
    s.key ? [el("dt", { text: "key" }), el("dd", { text: s.key })] : null,
    el("dt", { text: "time" }), el("dd", { text: fmtMs(s.ms) + (st.start_ms !== undefined
      ? "  (from +" + fmtMs(st.start_ms) + ")" : "") }),
    el("dt", { text: "attempts" }), el("dd", { text: String(s.attempts) }),
    s.cached ? [el("dt", { text: "cache" }), el("dd", { text: "hit: its output came from the cache" })] : null,
    st.restored ? [el("dt", { text: "restored" }), el("dd", { text: "recorded by an earlier attempt at the run" })] : null,
    u.tokens ? [el("dt", { text: "tokens" }), el("dd", { text: fmtInt(u.tokens) })] : null,
    u.cost ? [el("dt", { text: "cost" }), el("dd", { text: fmtCost(u.cost) })] : null,
    u.requests ? [el("dt", { text: "requests" }), el("dd", { text: fmtInt(u.requests) })] : null));
  if (s.errors && s.errors.length) {
    out.push(el("h4", { text: "Error" }), el("div", { class: "errors" },
      el("ol", {}, s.errors.map((e) => el("li", {}, el("span", { text: e.text || e.message }),
        e.where ? el("div", { class: "where", text: e.where }) : null)))));
  }
  // A model call: its prompt (the messages it was given) and its reply.
  const input = s.input, output = s.output;
  if (input && typeof input === "object" && isMessages(input.messages)) {
    out.push(el("h4", { text: "Prompt" }), ...messageList(input.messages));
  }
  if (output && typeof output === "object" && output.role && ("content" in output || output.tool_calls)) {
    out.push(el("h4", { text: "Reply" }), ...messageList([output]));
  }
  for (const l of s.logs || []) {
    if (l.fields && isMessages(l.fields.prompt)) {
      out.push(el("h4", { text: "Prompt" }), ...messageList(l.fields.prompt));
      if (l.fields.reply !== undefined)
        out.push(el("h4", { text: "Reply" }), ...messageList([{ role: "assistant", content: l.fields.reply }]));
    }
  }
  const children = (run.steps || []).filter((x) => x.parent_id === st.id);
  if (children.length) {
    out.push(el("h4", { text: "Calls (" + children.length + ")" }),
      el("table", { class: "logs" }, children.slice(0, 200).map((c) => el("tr", {},
        el("td", {}, el("a", { href: "#", text: c.name + (c.key && c.key !== c.name ? " [" + c.key + "]" : ""),
          onclick: (ev) => { ev.preventDefault(); select(stepKey(c)); } })),
        el("td", { text: c.kind }), el("td", {}, badge(c.status)), el("td", { text: fmtMs(c.ms) })))));
  }
  out.push(el("h4", { text: "Input" }), s.has_input ? pretty(input)
    : el("p", { class: "sub", text: "not recorded (a store written before sluice kept step inputs)" }));
  out.push(el("h4", { text: "Output" }), s.has_output ? pretty(output)
    : el("p", { class: "sub", text: "none: the step did not complete" }));
  if (s.changes) out.push(el("h4", { text: "State changes" }), pretty(s.changes));
  if (s.logs && s.logs.length) {
    out.push(el("h4", { text: "Logs (" + s.logs.length + ")" }), el("table", { class: "logs" },
      s.logs.map((l) => el("tr", {},
        el("td", { class: "mono", text: l.time_ms ? fmtTime(l.time_ms).slice(11) : "" }),
        el("td", { class: "lvl " + (l.level || ""), text: l.level || "" }),
        el("td", {}, el("div", { text: l.message === undefined ? "" : String(l.message) }),
          l.fields ? el("div", { class: "mono sub", text: JSON.stringify(l.fields) }) : null)))));
  }
  return out;
}

// A form for a JSON Schema (the subset sl.human uses): an object's
// properties as fields, else one field; value() returns the answer or
// throws saying what is wrong.
function schemaFields(schema, form) {
  const field = (name, s, required) => {
    const id = "f-" + Math.random().toString(36).slice(2);
    const label = el("label", { for: id, class: required ? "req" : null, text: name,
      title: s && s.description });
    let input, get;
    const type = s && s.type;
    if (s && Array.isArray(s.enum)) {
      input = el("select", { id, name }, (required ? [] : [el("option", { value: "", text: "" })])
        .concat(s.enum.map((v, i) => el("option", { value: String(i), text: String(v) }))));
      get = () => input.value === "" ? undefined : s.enum[Number(input.value)];
    } else if (type === "boolean") {
      input = el("input", { id, name, type: "checkbox" });
      get = () => input.checked;
    } else if (type === "number" || type === "integer") {
      input = el("input", { id, name, type: "number", step: type === "integer" ? "1" : "any" });
      get = () => {
        if (input.value === "") return undefined;
        const n = Number(input.value);
        if (type === "integer" && !Number.isInteger(n)) throw new Error(name + " must be a whole number");
        return n;
      };
    } else if (type === "string") {
      input = s.maxLength && s.maxLength <= 200 ? el("input", { id, name, type: "text" })
        : el("textarea", { id, name, rows: 3 });
      get = () => input.value === "" && !required ? undefined : input.value;
    } else {
      input = el("textarea", { id, name, rows: 4, placeholder: "JSON" });
      get = () => {
        if (input.value.trim() === "") return undefined;
        try { return JSON.parse(input.value); } catch (e) { throw new Error(name + ": not JSON: " + e.message); }
      };
    }
    form.appendChild(label);
    form.appendChild(input);
    return () => {
      const v = get();
      if (required && v === undefined) throw new Error(name + " is required");
      return v;
    };
  };
  if (schema && schema.type === "object" && schema.properties) {
    const req = new Set(schema.required || []);
    const getters = Object.keys(schema.properties).sort().map((k) => [k, field(k, schema.properties[k], req.has(k))]);
    return { value() {
      const o = {};
      for (const [k, g] of getters) { const v = g(); if (v !== undefined) o[k] = v; }
      return o;
    } };
  }
  const g = field("answer", schema || {}, true);
  return { value: g };
}

// }======================================================


// {======================================================
// The flow graph: a layered drawing of /api/runs/ID/graph
// =======================================================

function drawFlow(g, run, onSelect) {
  const W = 168, H = 34, GX = 26, GY = 58, PAD = 24;
  const nodes = g.nodes, idx = new Map(nodes.map((n, i) => [n.id, i]));
  const out = new Map(nodes.map((n) => [n.id, []]));
  for (const e of g.edges) out.get(e.from).push(e);
  // Back edges (a loop's way back) found by a depth-first walk.
  const state = new Map(), back = new Set();
  const dfs = (id) => {
    state.set(id, 1);
    for (const e of out.get(id)) {
      const s = state.get(e.to);
      if (s === 1) back.add(e);
      else if (!s) dfs(e.to);
    }
    state.set(id, 2);
  };
  for (const n of nodes) if (!state.get(n.id)) dfs(n.id);
  // Ranks: the longest path from a start over the forward edges.
  const rank = new Map(nodes.map((n) => [n.id, 0]));
  const indeg = new Map(nodes.map((n) => [n.id, 0]));
  for (const e of g.edges) if (!back.has(e)) indeg.set(e.to, indeg.get(e.to) + 1);
  const queue = nodes.filter((n) => indeg.get(n.id) === 0).map((n) => n.id);
  while (queue.length) {
    const id = queue.shift();
    for (const e of out.get(id)) {
      if (back.has(e)) continue;
      rank.set(e.to, Math.max(rank.get(e.to), rank.get(id) + 1));
      indeg.set(e.to, indeg.get(e.to) - 1);
      if (indeg.get(e.to) === 0) queue.push(e.to);
    }
  }
  const layers = [];
  for (const n of nodes) (layers[rank.get(n.id)] = layers[rank.get(n.id)] || []).push(n);
  // Order each layer by where its predecessors are (side by side stays
  // together), then place it centred.
  const preds = new Map(nodes.map((n) => [n.id, []]));
  for (const e of g.edges) if (!back.has(e)) preds.get(e.to).push(e.from);
  const pos = new Map();
  let widest = 0;
  for (const layer of layers) if (layer) widest = Math.max(widest, layer.length);
  for (const layer of layers) {
    if (!layer) continue;
    layer.sort((a, b) => {
      const bary = (n) => {
        const ps = preds.get(n.id).filter((p) => pos.has(p));
        return ps.length ? ps.reduce((s, p) => s + pos.get(p), 0) / ps.length : idx.get(n.id);
      };
      return bary(a) - bary(b) || idx.get(a.id) - idx.get(b.id);
    });
    layer.forEach((n, i) => pos.set(n.id, i - (layer.length - 1) / 2));
  }
  const width = widest * (W + GX) + PAD * 2, height = layers.length * (H + GY) + PAD * 2;
  const cx = (id) => width / 2 + pos.get(id) * (W + GX);
  const cy = (id) => PAD + rank.get(id) * (H + GY) + H / 2;
  const svg = el("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": "the pipeline's flow" });
  // Groups: the box around each container's nodes, outermost first.
  const members = new Map();
  const parentOf = new Map((g.groups || []).map((gr) => [gr.id, gr.parent]));
  for (const n of nodes) {
    for (let gid = n.group; gid; gid = parentOf.get(gid)) {
      if (!members.has(gid)) members.set(gid, []);
      members.get(gid).push(n.id);
    }
  }
  const depth = (gid) => { let d = 0; for (let p = parentOf.get(gid); p; p = parentOf.get(p)) d++; return d; };
  for (const gr of (g.groups || []).slice().sort((a, b) => depth(a.id) - depth(b.id))) {
    const ms = members.get(gr.id) || [];
    if (!ms.length) continue;
    const d = depth(gr.id), inset = Math.max(4, 16 - d * 3);
    const x0 = Math.min(...ms.map((m) => cx(m) - W / 2)) - inset;
    const x1 = Math.max(...ms.map((m) => cx(m) + W / 2)) + inset;
    const y0 = Math.min(...ms.map((m) => cy(m) - H / 2)) - inset - 12;
    const y1 = Math.max(...ms.map((m) => cy(m) + H / 2)) + inset;
    svg.appendChild(el("g", { class: "group" },
      el("rect", { x: x0, y: y0, width: x1 - x0, height: y1 - y0, rx: 8 }),
      el("text", { x: x0 + 6, y: y0 + 11, text: gr.text })));
  }
  for (const e of g.edges) {
    const x1 = cx(e.from), y1 = cy(e.from) + H / 2, x2 = cx(e.to), y2 = cy(e.to) - H / 2;
    let d;
    if (back.has(e)) {
      const xr = Math.max(x1, x2) + W / 2 + 18;
      d = `M${x1 + W / 2},${cy(e.from)} C${xr},${cy(e.from)} ${xr},${cy(e.to)} ${x2 + W / 2},${cy(e.to)}`;
    } else {
      const my = (y1 + y2) / 2;
      d = `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2 - 4}`;
    }
    svg.appendChild(el("path", { class: "edge" + (e.dashed ? " dashed" : ""), d,
      "marker-end": "url(#arrow)" }));
    if (e.label) {
      svg.appendChild(el("text", { class: "elabel", x: (x1 + x2) / 2 + 4, y: back.has(e) ? (cy(e.from) + cy(e.to)) / 2
        : (y1 + y2) / 2 + 4, text: e.label }));
    }
  }
  const defs = document.createElementNS("http://www.w3.org/2000/svg", "defs");
  defs.innerHTML = '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" ' +
    'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#8e97a8"/></marker>';
  svg.insertBefore(defs, svg.firstChild);
  // The status of a step's last execution colours its node.
  const last = new Map();
  for (const s of run.steps || []) last.set(s.name + "\u0000" + s.kind, s);
  for (const n of nodes) {
    const x = cx(n.id), y = cy(n.id);
    const s = n.name !== undefined ? last.get(n.name + "\u0000" + n.kind) : null;
    const shape = n.shape || "box";
    const text = n.text.length > 26 ? n.text.slice(0, 25) + "…" : n.text;
    let body;
    if (shape === "start" || shape === "end") body = el("ellipse", { cx: x, cy: y, rx: 34, ry: H / 2 - 4 });
    else if (shape === "decision") body = el("polygon", { points: `${x - W / 2},${y} ${x},${y - H / 2} ${x + W / 2},${y} ${x},${y + H / 2}` });
    else if (shape === "fork") body = el("polygon", { points: `${x - W / 2 + 12},${y - H / 2} ${x + W / 2 - 12},${y - H / 2} ${x + W / 2},${y + H / 2} ${x - W / 2},${y + H / 2}` });
    else if (shape === "join") body = el("polygon", { points: `${x - W / 2},${y - H / 2} ${x + W / 2},${y - H / 2} ${x + W / 2 - 12},${y + H / 2} ${x - W / 2 + 12},${y + H / 2}` });
    else if (shape === "repeat") body = el("polygon", { points: `${x - W / 2 + 10},${y - H / 2} ${x + W / 2 - 10},${y - H / 2} ${x + W / 2},${y} ${x + W / 2 - 10},${y + H / 2} ${x - W / 2 + 10},${y + H / 2} ${x - W / 2},${y}` });
    else body = el("rect", { x: x - W / 2, y: y - H / 2, width: W, height: H, rx: 5 });
    const node = el("g", { class: `node ${shape}` + (s ? " st-" + s.status : ""),
      style: s ? "cursor:pointer" : null, onclick: s ? () => onSelect(stepKey(s)) : null },
      el("title", { text: n.text + (s ? ` — ${s.status}, ${fmtMs(s.ms)}` : "") }), body,
      el("text", { x, y: y + 4, "text-anchor": "middle", text: shape === "start" || shape === "end" ? n.text : text }));
    svg.appendChild(node);
  }
  return svg;
}

// }======================================================


// {======================================================
// Routing
// =======================================================

let view = null;

function route() {
  if (view) view.stop();
  const main = document.getElementById("main");
  const { path, params } = parseHash();
  const m = path.match(/^\/runs\/([^/]+)$/);
  if (m) view = runView(main, decodeURIComponent(m[1]), params);
  else view = runsView(main, params);
  document.title = m ? "sluice · " + decodeURIComponent(m[1]) : "sluice · runs";
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  api("/api/info").then((i) => {
    document.getElementById("store").textContent = (i.store || "") + "  ·  sluice " + (i.version || "");
  }).catch(() => {});
  route();
});

// }======================================================
