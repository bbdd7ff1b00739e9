// sluice ui benchmark: time to first render of the runs page with 100,000
// runs stored, against a store of 10; and of a run page of 10,000 step
// executions, against one of 10. Each figure is the median of REPS loads
// in Debian's chromium (playwright-core from tests/ui, npm ci there), from
// navigation to the first row drawn, plus the API call the page makes.
// Prints figures only.
//   node scripts/bench/ui.js   (SLUICE_BIN: the CLI, default build/sluice;
//   BENCH_RUNS, BENCH_STEPS, BENCH_REPS; LUA_PATH/LUA_CPATH as in the README)
"use strict";
const path = require("path");
const { chromium } = require(path.join(__dirname, "../../tests/ui/node_modules/playwright-core"));
const { spawn, execFileSync } = require("child_process");
const fs = require("fs");
const os = require("os");

const BIN = process.env.SLUICE_BIN || "build/sluice";
const RUNS = Number(process.env.BENCH_RUNS || 100000);
const STEPS = Number(process.env.BENCH_STEPS || 10000);
const REPS = Number(process.env.BENCH_REPS || 7);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sluice-ui-bench-"));

function fill(store, n, steps) {
  const t0 = Date.now();
  const out = execFileSync("lua5.4", [path.join(__dirname, "ui_fill.lua"), store, String(n), String(steps)],
    { encoding: "utf8" });
  return { ids: JSON.parse(out), s: (Date.now() - t0) / 1000 };
}

function serve(store) {
  return new Promise((resolve, reject) => {
    const ui = spawn(BIN, ["ui", "--store", store, "--port", "0"]);
    let out = "";
    ui.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/^(http:\S+)\n/);
      if (m) resolve({ ui, url: m[1] });
    });
    ui.on("exit", (c) => reject(new Error("sluice ui exited " + c)));
  });
}

const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function firstRender(page, url, selector) {
  const times = [];
  for (let i = 0; i < REPS + 1; i++) {
    await page.goto("about:blank");
    const t0 = Date.now();
    await page.goto(url);
    await page.waitForSelector(selector);
    if (i > 0) times.push(Date.now() - t0);   // the first warms the caches
  }
  return median(times);
}

async function apiTime(url) {
  const times = [];
  let bytes = 0;
  for (let i = 0; i < REPS; i++) {
    const t0 = process.hrtime.bigint();
    const r = await fetch(url);
    bytes = (await r.arrayBuffer()).byteLength;
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return { ms: median(times), bytes };
}

(async () => {
  const small = fill(path.join(dir, "small.db"), 10, 10);
  const big = fill(path.join(dir, "big.db"), RUNS, STEPS);
  const a = await serve(path.join(dir, "small.db"));
  const b = await serve(path.join(dir, "big.db"));
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu"] });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const runs10 = await firstRender(page, a.url, "table.runs tbody tr");
  const runsBig = await firstRender(page, b.url, "table.runs tbody tr");
  const run10 = await firstRender(page, a.url + "#/runs/" + small.ids.few, ".tl-row");
  const runBig = await firstRender(page, b.url + "#/runs/" + big.ids.big, ".tl-row");
  const rowsDrawn = await page.$$eval(".tl-row", (r) => r.length);
  const apiRuns10 = await apiTime(a.url + "api/runs?limit=50");
  const apiRunsBig = await apiTime(b.url + "api/runs?limit=50");
  const apiRunsOld = await apiTime(b.url + "api/runs?limit=50&offset=" + (RUNS - 50));
  const apiSearch = await apiTime(b.url + "api/runs?limit=50&q=no%20title");
  const apiScan = await apiTime(b.url + "api/runs?limit=50&q=nothing%20matches%20this");
  const apiRun10 = await apiTime(a.url + "api/runs/" + small.ids.few);
  const apiRunBig = await apiTime(b.url + "api/runs/" + big.ids.big);
  await browser.close();
  a.ui.kill(); b.ui.kill();
  const line = (what, ms, base) => console.log(`  ${what.padEnd(52)} ${ms.toFixed(1).padStart(8)} ms` +
    (base ? `  ${(ms / base).toFixed(2).padStart(5)}x` : ""));
  console.log(`sluice ui, medians of ${REPS} loads in chromium (store filled in ${big.s.toFixed(1)} s)`);
  line("runs page, 10 runs stored: first row drawn", runs10);
  line(`runs page, ${RUNS.toLocaleString("en-US")} runs stored`, runsBig, runs10);
  line("run page, 10 steps: first row drawn", run10);
  line(`run page, ${STEPS.toLocaleString("en-US")} steps (${rowsDrawn} rows in the page)`, runBig, run10);
  console.log("  API, from node:");
  line("GET /api/runs, 10 runs stored", apiRuns10.ms);
  line(`GET /api/runs, ${RUNS.toLocaleString("en-US")} runs`, apiRunsBig.ms, apiRuns10.ms);
  line(`GET /api/runs, the oldest page (offset ${RUNS - 50})`, apiRunsOld.ms, apiRuns10.ms);
  line(`GET /api/runs?q=, a search matching every tenth run`, apiSearch.ms, apiRuns10.ms);
  line(`GET /api/runs?q=, matching none: all ${RUNS.toLocaleString("en-US")} read`, apiScan.ms, apiRuns10.ms);
  line("GET /api/runs/ID, 10 steps", apiRun10.ms);
  line(`GET /api/runs/ID, ${STEPS.toLocaleString("en-US")} steps (${(apiRunBig.bytes / 1e6).toFixed(2)} MB)`,
    apiRunBig.ms, apiRun10.ms);
  fs.rmSync(dir, { recursive: true, force: true });
})().catch((e) => { console.error(e); process.exit(1); });
