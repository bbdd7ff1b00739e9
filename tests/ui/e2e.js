// The ui in a real browser: Debian's chromium, driven by playwright-core
// (no browser is downloaded). Records runs with the sluice command, serves
// them with `sluice ui --port 0`, and checks what a person sees: the runs
// page, a run's steps and timeline, a failed run's error, a paused run
// answered through its form, a running run updating live, and a step
// output holding markup shown as text. Screenshots go to SLUICE_UI_SHOTS
// (default: a temporary directory) to be looked at.
//
//   SLUICE_BIN=build/sluice node tests/ui/e2e.js
"use strict";
const { chromium } = require("playwright-core");
const { spawn, execFileSync } = require("child_process");
const fs = require("fs");
const os = require("os");
const path = require("path");

const BIN = process.env.SLUICE_BIN || path.join(__dirname, "../../build/sluice");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sluice-ui-"));
const SHOTS = process.env.SLUICE_UI_SHOTS || path.join(dir, "shots");
fs.mkdirSync(SHOTS, { recursive: true });
const store = path.join(dir, "s.db");
const childEnv = { ...process.env };
delete childEnv.LD_PRELOAD;
if (process.env.SLUICE_CHILD_ASAN_OPTIONS) childEnv.ASAN_OPTIONS = process.env.SLUICE_CHILD_ASAN_OPTIONS;

const PIPELINES = `
local sl = require "sluice"
return {
  ok = sl.pipeline{ name = "ok",
    sl.step{ name = "fetch", run = function(x, ctx)
      ctx:log("fetching", { url = "https://example.com" })
      return { text = "fetched" }
    end },
    sl.parallel{ name = "both", branches = {
      left = sl.step{ name = "left", run = function(x, ctx) ctx:sleep(0.03); return 1 end },
      right = sl.step{ name = "right", run = function(x, ctx) ctx:sleep(0.01); return 2 end } } },
  },
  bad = sl.pipeline{ name = "bad",
    sl.step{ name = "prep", run = function(x) return x end },
    sl.step{ name = "boom", run = function(x) error("the answer had no title") end },
  },
  ask = sl.pipeline{ name = "ask",
    sl.step{ name = "draft", run = function(x) return { draft = "hello" } end },
    sl.human{ name = "approve", message = "Approve the draft?",
      schema = { type = "object", properties = { ok = { type = "boolean" },
        note = { type = "string" } }, required = { "ok" } } },
    sl.step{ name = "publish", run = function(x) return { published = x.ok, note = x.note } end },
  },
  markup = sl.pipeline{ name = "markup",
    sl.step{ name = "evil", run = function(x)
      return { html = "<script>window.__pwned = 1</script><img src=x onerror=\\"window.__pwned = 2\\">" }
    end },
  },
  slow = sl.pipeline{ name = "slow",
    sl.step{ name = "s1", run = function(x, ctx) ctx:sleep(0.4); return 1 end },
    sl.step{ name = "s2", run = function(x, ctx) ctx:sleep(0.4); return 2 end },
    sl.step{ name = "s3", run = function(x, ctx) ctx:sleep(0.4); return 3 end },
    sl.step{ name = "s4", run = function(x, ctx) ctx:sleep(0.4); return 4 end },
    sl.step{ name = "s5", run = function(x, ctx) ctx:sleep(0.4); return 5 end },
    sl.step{ name = "s6", run = function(x, ctx) ctx:sleep(0.4); return 6 end },
  },
}
`;
const file = path.join(dir, "p.lua");
fs.writeFileSync(file, PIPELINES);

function sluice(args, okCodes) {
  try {
    return execFileSync(BIN, args, { env: childEnv, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (e) {
    if (okCodes && okCodes.includes(e.status)) return e.stdout;
    throw new Error(`sluice ${args.join(" ")} exited ${e.status}: ${e.stderr}`);
  }
}
function record(name, code) {
  const out = sluice(["run", file, "--pipeline", name, "--input", "{}", "--store", store, "--json"], [code]);
  return JSON.parse(out).run_id;
}

let failures = 0;
async function check(what, fn) {
  try {
    await fn();
    console.log("ok - " + what);
  } catch (e) {
    failures++;
    console.log("not ok - " + what + "\n  " + String(e && e.stack || e).replace(/\n/g, "\n  "));
  }
}
function assert(cond, msg) { if (!cond) throw new Error(msg); }

function startUi() {
  return new Promise((resolve, reject) => {
    const ui = spawn(BIN, ["ui", "--store", store, "--port", "0"], { env: childEnv });
    let out = "", err = "";
    ui.stderr.on("data", (d) => { err += d; });
    ui.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/^(http:\/\/127\.0\.0\.1:\d+\/)\n/);
      if (m) resolve({ ui, url: m[1], stderr: () => err });
    });
    ui.on("exit", (code) => reject(new Error("sluice ui exited " + code + ": " + err)));
    setTimeout(() => reject(new Error("sluice ui printed no URL: " + err)), 15000);
  });
}

(async () => {
  const ids = {
    ok: record("ok", 0), bad: record("bad", 1), ask: record("ask", 3), markup: record("markup", 0),
  };
  const { ui, url, stderr } = await startUi();
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error") pageErrors.push(m.text()); });

  await check("the runs page lists every run, newest first, with its status", async () => {
    await page.goto(url);
    await page.waitForSelector("table.runs tbody tr");
    const rows = await page.$$eval("table.runs tbody tr", (trs) => trs.map((tr) => ({
      id: tr.getAttribute("data-run"), status: tr.querySelector(".badge").textContent })));
    assert(rows.length === 4, "rows: " + JSON.stringify(rows));
    assert(JSON.stringify(rows.map((r) => r.id)) === JSON.stringify([ids.markup, ids.ask, ids.bad, ids.ok]),
      "order: " + JSON.stringify(rows));
    assert(JSON.stringify(rows.map((r) => r.status)) ===
      JSON.stringify(["completed", "paused", "failed", "completed"]), "statuses: " + JSON.stringify(rows));
    await page.screenshot({ path: path.join(SHOTS, "runs.png"), fullPage: true });
    // Filtering by status leaves the failed run.
    await page.selectOption("select[aria-label=status]", "failed");
    await page.waitForFunction(() => document.querySelectorAll("table.runs tbody tr").length === 1);
    const only = await page.$eval("table.runs tbody tr", (tr) => tr.getAttribute("data-run"));
    assert(only === ids.bad, "filtered: " + only);
  });

  await check("a run page shows its steps and their timeline, and a step's input and output", async () => {
    await page.goto(url + "#/runs/" + ids.ok);
    await page.waitForSelector(".tl-row");
    const names = await page.$$eval(".tl-row .nm", (ns) => ns.map((n) => n.textContent));
    for (const n of ["ok", "fetch", "both", "left", "right"])
      assert(names.includes(n), "steps: " + JSON.stringify(names));
    const bars = await page.$$eval(".tl-row .bar", (bs) => bs.map((b) => b.getBoundingClientRect().width));
    assert(bars.length === names.length && bars.every((w) => w > 0), "bars: " + JSON.stringify(bars));
    // The two branches overlap on the axis: they ran at once.
    const span = (nm) => page.evaluate((nm) => {
        const row = [...document.querySelectorAll(".tl-row")].find((r) => r.querySelector(".nm").textContent === nm);
        const b = row.querySelector(".bar").getBoundingClientRect();
        return [b.left, b.right];
      }, nm);
    const l = await span("left"), r = await span("right");
    assert(l[0] < r[1] && r[0] < l[1], "the branches do not overlap: " + JSON.stringify([l, r]));
    await page.click(".tl-row:has(.nm:text-is('fetch'))");
    await page.waitForSelector(".detail h3:text-is('fetch')");
    const detail = await page.textContent(".detail");
    assert(detail.includes("fetching") && detail.includes("https://example.com"), "logs: " + detail);
    assert(detail.includes('"text": "fetched"'), "output: " + detail);
    await page.screenshot({ path: path.join(SHOTS, "run.png"), fullPage: true });
    await page.click(".tabs button:text-is('Flow')");
    await page.waitForSelector(".flow svg .node");
    const nodes = await page.$$eval(".flow svg .node text", (ts) => ts.map((t) => t.textContent));
    assert(nodes.includes("step: left") && nodes.includes("parallel: both"), "flow: " + nodes);
    await page.screenshot({ path: path.join(SHOTS, "flow.png"), fullPage: true });
  });

  await check("a failed run shows its error with the file and line", async () => {
    await page.goto(url + "#/runs/" + ids.bad);
    await page.waitForSelector(".errors");
    const text = await page.textContent(".errors");
    assert(text.includes("the answer had no title"), "error: " + text);
    assert(/p\.lua:\d+/.test(text), "where: " + text);
    await page.screenshot({ path: path.join(SHOTS, "failed.png"), fullPage: true });
  });

  await check("markup in a step's output is shown as text and never runs", async () => {
    await page.goto(url + "#/runs/" + ids.markup + "?tab=io");
    await page.waitForSelector(".detail pre.json");
    await page.click(".tabs button:text-is('Timeline')");
    await page.click(".tl-row:has(.nm:text-is('evil'))");
    await page.waitForSelector(".detail h3:text-is('evil')");
    const shown = await page.textContent(".detail");
    assert(shown.includes("<script>window.__pwned = 1</script>"), "not shown as text: " + shown);
    const pwned = await page.evaluate(() => window.__pwned);
    assert(pwned === undefined, "the output ran: " + pwned);
    const injected = await page.$$eval("main script, main img", (es) => es.length);
    assert(injected === 0, injected + " elements came from the output");
  });

  await check("a paused run is answered through its form and then completes", async () => {
    await page.goto(url + "#/runs/" + ids.ask);
    await page.waitForSelector("form.answer");
    const q = await page.textContent(".question");
    assert(q.includes("Approve the draft?"), "question: " + q);
    await page.screenshot({ path: path.join(SHOTS, "paused.png"), fullPage: true });
    // Required fields are required: an empty boolean is false, so the
    // form goes; the note is typed.
    await page.check("form.answer input[name=ok]");
    await page.fill("form.answer textarea[name=note]", "ship it");
    await page.click("form.answer button[type=submit]");
    await page.waitForSelector("h1 .badge.completed", { timeout: 15000 });
    await page.click(".tabs button:text-is('Input & output')");
    const io = await page.textContent(".runview");
    assert(io.includes('"published": true') && io.includes('"note": "ship it"'), "output: " + io);
    await page.screenshot({ path: path.join(SHOTS, "answered.png"), fullPage: true });
  });

  await check("a running run updates as its steps finish", async () => {
    const run = spawn(BIN, ["run", file, "--pipeline", "slow", "--input", "{}", "--store", store, "--json"],
      { env: childEnv });
    let out = "";
    run.stdout.on("data", (d) => { out += d; });
    const done = new Promise((res) => run.on("exit", res));
    // Its id: the newest run, once it is recorded.
    let id = null;
    for (let i = 0; i < 200 && !id; i++) {
      const rows = JSON.parse(sluice(["runs", "--store", store, "--json", "--limit", "1"]));
      if (rows[0] && rows[0].pipeline === "slow") id = rows[0].run_id;
      else await new Promise((r) => setTimeout(r, 25));
    }
    assert(id, "the slow run was not recorded");
    await page.goto(url + "#/runs/" + id);
    await page.waitForSelector("h1 .badge.running");
    const seen = new Set();
    for (let i = 0; i < 150; i++) {
      seen.add(await page.$$eval(".tl-row", (rs) => rs.length));
      if (await page.$("h1 .badge.completed")) break;
      await page.waitForTimeout(50);
    }
    await done;
    assert(await page.$("h1 .badge.completed"), "the page never showed the run completed");
    const counts = [...seen].sort((a, b) => a - b);
    assert(counts.length >= 3, "the steps did not appear as they finished: " + counts);
    assert(JSON.parse(out).status === "completed", "the run: " + out);
  });

  await check("the page raised no errors", async () => {
    const real = pageErrors.filter((e) => !/favicon/.test(e));
    assert(real.length === 0, real.join("\n"));
  });

  await browser.close();
  ui.kill("SIGTERM");
  const code = await new Promise((res) => ui.on("exit", (c) => res(c)));
  await check("sluice ui stops cleanly on SIGTERM", async () => {
    assert(code === 0, "exit " + code + ": " + stderr());
    assert(!/Sanitizer/.test(stderr()), stderr());
  });
  console.log(`screenshots in ${SHOTS}`);
  if (!process.env.SLUICE_UI_SHOTS) fs.rmSync(dir, { recursive: true, force: true });
  process.exit(failures ? 1 : 0);
})().catch((e) => {
  console.log("not ok - " + (e.stack || e));
  process.exit(1);
});
