// Widget benchmark: what a visitor downloads and how long the chat takes to open.
//
//   node bench/widget.mjs [--runs N] [--timeout SECONDS] [--render-only]
//
// (scripts/bench-widget builds what this needs, then runs it.)
//
// - Sizes: raw, gzip and brotli bytes of the loader and of everything fetched when the chat
//   opens, from dist/widget/manifest.json, checked against what the relay really serves (each
//   request replayed with `Accept-Encoding: identity`, `gzip` and `br`), and what headless
//   Chromium really downloaded (encoding and body bytes on the wire).
// - Time from the click on the launcher to an interactive panel (its textarea in the Shadow DOM,
//   rendered and focused), measured inside the page with performance.now(), N times each in a
//   fresh browser context (empty HTTP cache): "cold" clicks as soon as the loader's placeholder
//   launcher exists (nothing of the widget fetched yet); "warm" clicks once the widget has
//   loaded on idle (module mounted, site config fetched).
// - The same on the throttled profile: Chromium's CPU slowed 4x and the network held to
//   Lighthouse's mobile figures (150 ms round trip, 1.6 Mbit/s down, 750 kbit/s up), through
//   CDP. And on both profiles, the longest task on the host page from the loader's arrival until
//   the widget is loaded (PerformanceObserver "longtask", buffered: tasks over 50 ms; the host
//   page's own earlier tasks are not the widget's).
// - Render cost: answers that were costly to render (4,000 `[`, 2,000 escaped backtick runs,
//   2,000 code spans; mock-upstream.mjs PATHOLOGICAL) streamed a piece per chunk, a millisecond
//   apart, through the real widget on a test host page, against a relay in front of the e2e
//   mock upstream. Reported: main-thread task time while it streamed (Chromium's TaskDuration,
//   through CDP), the longest task (PerformanceObserver "longtask": only tasks over 50 ms are
//   reported), the longest gap between animation frames, and the wall time to the `message`
//   event. `--render-only` runs only this part.
//
// Targets (issue 16): loader <= 5 KB brotli, everything on open <= 75 KB brotli (60 KB the aim),
// click to interactive <= 300 ms on the throttled profile, no task over 50 ms on the host page
// while the widget loads; KB = 1024 bytes.
// A missed target prints MISS but exits 0: this is a benchmark, not a test. Exits non-zero
// when it cannot measure (relay or browser failing, or the overall timeout).
// Everything runs on 127.0.0.1: the real `confab` binary in demo mode (target/debug/confab)
// and Debian's Chromium, both from tests/e2e/harness.mjs.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import { join } from "node:path";
import { brotliCompressSync, constants as zlibConstants, gzipSync } from "node:zlib";
import { launchBrowser, root, startRelay, startStack } from "../tests/e2e/harness.mjs";
import { PATHOLOGICAL } from "../tests/e2e/mock-upstream.mjs";

const KB = 1024;
const TARGETS = { loader: 5 * KB, everything: 75 * KB, aim: 60 * KB, interactiveMs: 300, longTaskMs: 50 };

/** The throttled profile (see the top of this file), applied to `page` through CDP. */
async function throttle(page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Emulation.setCPUThrottlingRate", { rate: 4 });
  await cdp.send("Network.enable");
  await cdp.send("Network.emulateNetworkConditions", {
    offline: false, latency: 150, downloadThroughput: (1.6 * 1024 * 1024) / 8, uploadThroughput: (750 * 1024) / 8,
  });
}

/** Init script: every long task of the page, from its start (the entries are buffered). */
const longTaskScript = `window.__longTasks = [];
new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__longTasks.push([e.startTime, e.duration]); })
  .observe({ type: "longtask", buffered: true });`;
const STEP_TIMEOUT = 20000;
/** How long one streamed pathological answer may take (the quadratic renderer took minutes). */
const RENDER_TIMEOUT = 300000;

function parseArgs(argv) {
  const options = { runs: 10, timeout: undefined, renderOnly: false };
  for (let i = 0; i < argv.length; i++) {
    const [name, inline] = argv[i].split("=", 2);
    const value = () => Number(inline ?? argv[++i]);
    if (name === "--runs") options.runs = value();
    else if (name === "--render-only") options.renderOnly = true;
    else if (name === "--timeout") options.timeout = value();
    else if (name === "-h" || name === "--help") {
      console.log("usage: node bench/widget.mjs [--runs N (default 10)] [--timeout SECONDS (default 240, or 30 per run above 8, plus 900 for the render part)] [--render-only]");
      process.exit(0);
    } else {
      console.error(`unknown argument: ${argv[i]} (see --help)`);
      process.exit(2);
    }
  }
  if (!Number.isInteger(options.runs) || options.runs < 1 || options.runs > 1000) {
    console.error("--runs takes a whole number from 1 to 1000");
    process.exit(2);
  }
  options.timeout ??= (options.renderOnly ? 0 : Math.max(240, 30 * options.runs)) + 900;
  if (!(options.timeout > 0)) {
    console.error("--timeout takes a positive number of seconds");
    process.exit(2);
  }
  return options;
}

// ---------------------------------------------------------------------------------------------
// In the page. `measure` is serialised into the page (init script or evaluate): no closures.

/**
 * Clicks (`click()`), then resolves with the milliseconds until the panel is interactive: the
 * panel's textarea exists in `shadow`, is rendered (has a box; the .18 s fade-in animation is
 * not waited for, the textarea takes input from its first frame) and has the focus. Checked on
 * every DOM mutation and focus change in the shadow root and on every animation frame.
 */
function measure(shadow, click, limit) {
  return new Promise((resolve, reject) => {
    let t0 = 0;
    let done = false;
    let frame = 0;
    const ready = () => {
      const input = shadow.querySelector(".panel textarea");
      if (!input || shadow.activeElement !== input) return false;
      const box = input.getBoundingClientRect();
      return input.checkVisibility() && box.width > 0 && box.height > 0;
    };
    const finish = (error) => {
      const t1 = performance.now();
      done = true;
      observer.disconnect();
      shadow.removeEventListener("focusin", check);
      cancelAnimationFrame(frame);
      clearTimeout(timer);
      if (error) reject(error);
      else resolve({ ms: t1 - t0, clickedAt: t0 });
    };
    const check = () => {
      if (!done && ready()) finish();
    };
    const poll = () => {
      check();
      if (!done) frame = requestAnimationFrame(poll);
    };
    const observer = new MutationObserver(check);
    observer.observe(shadow, { childList: true, subtree: true, attributes: true });
    shadow.addEventListener("focusin", check);
    const timer = setTimeout(() => {
      if (!done) finish(new Error(`the panel was not interactive ${limit} ms after the click`));
    }, limit);
    t0 = performance.now();
    click();
    check();
    poll();
  });
}

/** Init script for every timed run (an init script, so that no page CSP can stop it). */
const measureScript = `window.__confabMeasure = ${measure.toString()};`;

/** Init script for the cold variant: clicks the placeholder launcher the moment it exists. */
const coldScript = `(() => {
  const measure = window.__confabMeasure;
  window.__confabBench = new Promise((resolve, reject) => {
    const observer = new MutationObserver(() => {
      const shadow = document.querySelector("[data-confab]")?.shadowRoot;
      const launcher = shadow?.querySelector("button.launcher");
      if (!launcher) return;
      observer.disconnect();
      // Nothing of the widget fetched or mounted yet: the launcher is the loader's placeholder.
      const fetched = performance.getEntriesByType("resource").filter((e) => e.name.includes("/widget/")).length;
      const placeholder = !shadow.querySelector(".confab");
      measure(shadow, () => launcher.click(), ${STEP_TIMEOUT})
        .then((r) => ({ ...r, widgetFilesFetchedBefore: fetched, placeholder }))
        .then(resolve, reject);
    });
    observer.observe(document, { childList: true, subtree: true });
  });
})();`;

// ---------------------------------------------------------------------------------------------
// Sizes.

function readManifest() {
  const path = join(root, "dist", "widget", "manifest.json");
  if (!existsSync(path)) throw new Error(`${path} is missing: build the widget first (scripts/build-widget)`);
  return JSON.parse(readFileSync(path, "utf8"));
}

/** GET `url` with `headers`, counting the body's bytes as they arrive (nothing decoded). */
function rawGet(url, headers) {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { headers, timeout: STEP_TIMEOUT }, (response) => {
      let bytes = 0;
      const chunks = [];
      response.on("data", (chunk) => {
        bytes += chunk.length;
        chunks.push(chunk);
      });
      response.on("end", () => resolve({
        status: response.statusCode,
        encoding: response.headers["content-encoding"] || "identity",
        bytes,
        body: Buffer.concat(chunks),
      }));
      response.on("error", reject);
    });
    request.on("timeout", () => request.destroy(new Error(`timed out: GET ${url}`)));
    request.on("error", reject);
  });
}

/** The bytes the relay serves for a request Chromium made, for each Accept-Encoding. */
async function replay(entry) {
  const headers = { ...entry.requestHeaders };
  for (const name of Object.keys(headers)) {
    // Pseudo-headers and hop-by-hop ones are not for node:http to send.
    if (name.startsWith(":") || /^(accept-encoding|connection|host|content-length)$/i.test(name)) delete headers[name];
  }
  const served = {};
  for (const [label, accept] of [["raw", "identity"], ["gzip", "gzip"], ["brotli", "br"]]) {
    served[label] = await rawGet(entry.url, { ...headers, "accept-encoding": accept });
  }
  return served;
}

// ---------------------------------------------------------------------------------------------
// The wire: one visit, every request the relay answers.

const interactive = () => {
  const shadow = document.querySelector("[data-confab]")?.shadowRoot;
  const input = shadow?.querySelector(".panel textarea");
  return !!input && shadow.activeElement === input && input.checkVisibility();
};

async function visit(browser, url) {
  const origin = new URL(url).origin;
  const context = await browser.newContext();
  context.setDefaultTimeout(STEP_TIMEOUT);
  try {
    const page = await context.newPage();
    const errors = watch(page);
    const entries = [];
    const failed = [];
    page.on("requestfinished", (request) => {
      if (new URL(request.url()).origin !== origin) return;
      const entry = (async () => {
        const response = await request.response();
        const [sizes, requestHeaders, responseHeaders] = await Promise.all([
          request.sizes(), request.allHeaders(), response.allHeaders(),
        ]);
        return {
          url: request.url(),
          path: new URL(request.url()).pathname,
          type: request.resourceType(),
          status: response.status(),
          acceptEncoding: requestHeaders["accept-encoding"] || "(none)",
          encoding: responseHeaders["content-encoding"] || "identity",
          contentLength: responseHeaders["content-length"],
          bodyBytes: sizes.responseBodySize,
          headerBytes: sizes.responseHeadersSize,
          requestHeaders,
        };
      })();
      entries.push(entry);
    });
    page.on("requestfailed", (request) => failed.push(`${request.url()}: ${request.failure()?.errorText}`));
    await page.goto(url, { waitUntil: "load" });
    await page.locator("[data-confab] button.launcher").click();
    await page.waitForFunction(interactive, null, { polling: "raf" });
    // Everything that opening started (the site config) has finished, in the page and here.
    await page.waitForFunction(() => performance.getEntriesByType("resource").some((e) => e.name.includes("/v1/widget/config")));
    const deadline = Date.now() + STEP_TIMEOUT;
    while (!(await Promise.all(entries)).some((e) => e.path === "/v1/widget/config")) {
      if (Date.now() > deadline) throw new Error("Chromium never finished the /v1/widget/config request");
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const all = await Promise.all(entries);
    return { entries: all, failed, errors };
  } finally {
    await context.close();
  }
}

function watch(page) {
  const errors = [];
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  page.on("console", (m) => m.type() === "error" && errors.push(`console: ${m.text()}`));
  return errors;
}

// ---------------------------------------------------------------------------------------------
// Timing.

async function coldRun(browser, url, throttled) {
  const context = await browser.newContext();
  context.setDefaultTimeout(STEP_TIMEOUT);
  try {
    await context.addInitScript({ content: measureScript });
    await context.addInitScript({ content: coldScript });
    const page = await context.newPage();
    if (throttled) await throttle(page);
    const errors = watch(page);
    await page.goto(url, { waitUntil: "commit" });
    const result = await page.evaluate(() => window.__confabBench);
    return { ...result, errors };
  } finally {
    await context.close();
  }
}

async function warmRun(browser, url, throttled) {
  const context = await browser.newContext();
  context.setDefaultTimeout(STEP_TIMEOUT);
  try {
    await context.addInitScript({ content: measureScript });
    await context.addInitScript({ content: longTaskScript });
    const page = await context.newPage();
    if (throttled) await throttle(page);
    const errors = watch(page);
    await page.goto(url, { waitUntil: "load" });
    // Loaded on idle: the widget replaced the placeholder and has the site's config.
    await page.waitForFunction(() =>
      !!document.querySelector("[data-confab]")?.shadowRoot?.querySelector(".confab > button.launcher")
      && performance.getEntriesByType("resource").some((e) => e.name.includes("/v1/widget/config")));
    // The longest task while the page and the widget loaded (a frame later: a task that ends
    // with the mount is reported after it).
    const longest = await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 50))))
      .then(() => page.evaluate(() => {
        // The widget's, not the host page's own: tasks that end after confab.js arrived.
        const loader = performance.getEntriesByType("resource").find((e) => e.name.endsWith("/confab.js"));
        const from = loader ? loader.responseEnd : 0;
        return Math.max(0, ...window.__longTasks.filter(([start, duration]) => start + duration > from).map(([, d]) => d));
      }));
    const result = await page.evaluate((limit) => {
      const shadow = document.querySelector("[data-confab]").shadowRoot;
      return window.__confabMeasure(shadow, () => shadow.querySelector(".confab > button.launcher").click(), limit);
    }, STEP_TIMEOUT);
    return { ...result, longest, errors };
  } finally {
    await context.close();
  }
}

function stats(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
  const median = sorted.length % 2
    ? sorted[(sorted.length - 1) / 2]
    : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
  return { min: sorted[0], median, p90: at(0.9), max: sorted[sorted.length - 1] };
}

// ---------------------------------------------------------------------------------------------
// Render cost.

/**
 * In the page: sends `question` through window.Confab and resolves, once the answer is complete
 * and rendered, with what the page saw while it streamed.
 */
function streamAnswer({ question, limit }) {
  return new Promise((resolve, reject) => {
    const shadow = document.querySelector("[data-confab]").shadowRoot;
    const tasks = [];
    const observer = new PerformanceObserver((list) => tasks.push(...list.getEntries().map((e) => e.duration)));
    observer.observe({ type: "longtask" });
    let last = performance.now();
    let gap = 0;
    let running = true;
    const frame = (now) => {
      gap = Math.max(gap, now - last);
      last = now;
      if (running) requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
    let mutations = 0;
    const mutationObserver = new MutationObserver(() => mutations++);
    mutationObserver.observe(shadow, { subtree: true, childList: true, characterData: true });
    const timer = setTimeout(() => reject(new Error(`no complete answer after ${limit} ms`)), limit);
    const t0 = performance.now();
    window.Confab.on("message", () => {
      const t1 = performance.now();
      // Answers render on animation frames: let the last one land.
      requestAnimationFrame(() => requestAnimationFrame(() => {
        running = false;
        clearTimeout(timer);
        observer.disconnect();
        mutationObserver.disconnect();
        const answers = shadow.querySelectorAll("li.assistant:not(.greeting)");
        resolve({
          ms: t1 - t0,
          longest: Math.max(0, ...tasks),
          longTasks: tasks.length,
          gap,
          mutations,
          text: answers[answers.length - 1]?.textContent ?? "",
        });
      }));
    });
    window.Confab.send(question);
  });
}

/** The text a person sees for a pathological answer (what the markdown makes of it). */
const RENDERED = {
  RENDER_BRACKETS: (answer) => answer,
  RENDER_BACKTICKS: (answer) => answer.replace(/\\/g, "").trim(),
  RENDER_CODE_SPANS: (answer) => answer.replace(/`/g, "").trim(),
};

async function renderRun(browser, stack, name) {
  const context = await browser.newContext();
  context.setDefaultTimeout(STEP_TIMEOUT);
  try {
    const page = await context.newPage();
    const errors = watch(page);
    await page.goto(`${stack.hosts.url}/plain.html`, { waitUntil: "load" });
    await page.locator("[data-confab] button.launcher").click();
    await page.locator("[data-confab] .panel textarea").waitFor();
    const cdp = await context.newCDPSession(page);
    await cdp.send("Performance.enable");
    const metrics = async () =>
      Object.fromEntries((await cdp.send("Performance.getMetrics")).metrics.map((m) => [m.name, m.value]));
    const before = await metrics();
    const result = await page.evaluate(streamAnswer, { question: `Please answer ${name}`, limit: RENDER_TIMEOUT });
    const after = await metrics();
    const expected = RENDERED[name](PATHOLOGICAL[name].join(""));
    return {
      ...result,
      taskMs: (after.TaskDuration - before.TaskDuration) * 1000,
      scriptMs: (after.ScriptDuration - before.ScriptDuration) * 1000,
      correct: result.text.trim() === expected,
      errors,
    };
  } finally {
    await context.close();
  }
}

async function renderCost(browser, stack) {
  console.log("Render cost: pathological answers streamed a piece per chunk, 1 ms apart, through the widget");
  console.log("(host page www/test/plain.html, relay in front of the e2e mock upstream); main-thread figures from");
  console.log("Chromium (CDP Performance.getMetrics TaskDuration/ScriptDuration, PerformanceObserver longtask):");
  const rows = [];
  for (const [name, label] of [
    ["RENDER_BRACKETS", "4,000 `[` (4,000 chunks)"],
    ["RENDER_BACKTICKS", "2,000 escaped backtick runs \\`` (2,000 chunks)"],
    ["RENDER_CODE_SPANS", "2,000 code spans `a` (2,000 chunks)"],
  ]) {
    const r = await renderRun(browser, stack, name);
    for (const e of r.errors) console.log(`page error (${name}): ${e}`);
    if (!r.correct) console.log(`note: ${name}: the rendered text is not what the markdown should show (${r.text.length} chars)`);
    const ms = (v) => v.toFixed(0);
    rows.push([label, ms(r.ms), ms(r.taskMs), ms(r.scriptMs), r.longTasks ? ms(r.longest) : "< 50", String(r.longTasks), ms(r.gap)]);
  }
  console.log(table(["answer", "stream ms", "main-thread task ms", "script ms", "longest task ms", "tasks > 50 ms", "longest frame gap ms"],
    rows, ["l", "r", "r", "r", "r", "r", "r"]));
}

// ---------------------------------------------------------------------------------------------
// Output.

const kb = (bytes) => `${(bytes / KB).toFixed(1)} KB`;
const n = (bytes) => bytes.toLocaleString("en-US");

function table(header, rows, align) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) => cells.map((c, i) => (align[i] === "l" ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i])))
    .join("  ").trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

function machine(chromiumVersion) {
  const cpuinfo = existsSync("/proc/cpuinfo") ? readFileSync("/proc/cpuinfo", "utf8") : "";
  const model = cpuinfo.match(/^model name\s*:\s*(.+)$/m)?.[1] ?? os.cpus()[0]?.model ?? "unknown CPU";
  let commit = "unknown";
  try {
    commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: root, encoding: "utf8" }).trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--", "widget", "crates/protocol", "server"],
      { cwd: root, encoding: "utf8" }).trim();
    if (dirty) commit += " (with uncommitted changes)";
  } catch {
    // Not a git checkout: the commit stays unknown.
  }
  return [
    `Machine: ${model}, ${os.availableParallelism?.() ?? os.cpus().length} cores, ${os.platform()} ${os.release()}`,
    `Node ${process.version}, Chromium ${chromiumVersion} (headless, playwright-core), commit ${commit}`,
    `Date: ${new Date().toISOString()}`,
  ].join("\n");
}

// ---------------------------------------------------------------------------------------------

async function main({ runs, renderOnly }, stack) {
  if (renderOnly) {
    const browser = (stack.browser = await launchBrowser());
    console.log(`Confab widget benchmark: render cost only`);
    console.log(machine(browser.version()));
    console.log("");
    stack.e2e = await startStack();
    await renderCost(browser, stack.e2e);
    return;
  }
  const manifest = readManifest();
  const relay = (stack.relay = await startRelay());
  if (!relay.key) throw new Error(`the relay did not start in demo mode:\n${relay.output()}`);
  if (!/Embed the widget/.test(relay.output())) throw new Error("the relay does not serve the widget (not built?)");
  const browser = (stack.browser = await launchBrowser());
  const url = `${relay.url}/`;

  console.log(`Confab widget benchmark (KB = ${KB} bytes)`);
  console.log(machine(browser.version()));
  console.log("");

  // --- The wire.
  const wire = await visit(browser, url);
  const document = wire.entries.find((e) => e.type === "document");
  const fetched = wire.entries.filter((e) => e !== document);
  const byName = (name) => fetched.find((e) => e.path === `/${name}` || e.path === `/widget/${name}`);
  console.log(`Fetched by Chromium from ${relay.url} (one visit: load the demo page, click the launcher, panel open):`);
  const wireRows = fetched.map((e) => [e.path, e.type, e.status, e.acceptEncoding, e.encoding, n(e.bodyBytes)]);
  const wireTotal = fetched.reduce((sum, e) => sum + e.bodyBytes, 0);
  wireRows.push(["total (document excluded)", "", "", "", "", n(wireTotal)]);
  console.log(table(["request", "type", "status", "accept-encoding sent", "content-encoding", "body bytes"],
    wireRows, ["l", "l", "r", "l", "l", "r"]));
  if (document) {
    console.log(`Document (the demo page, not counted): ${document.path} ${document.status}, ${document.encoding}, ${n(document.bodyBytes)} bytes`);
  }
  for (const f of wire.failed) console.log(`FAILED request: ${f}`);
  for (const e of wire.errors) console.log(`page error: ${e}`);
  const mismatched = fetched.filter((e) => e.contentLength !== undefined && Number(e.contentLength) !== e.bodyBytes);
  for (const e of mismatched) console.log(`note: ${e.path}: content-length ${e.contentLength}, body bytes counted ${e.bodyBytes}`);
  console.log("");

  // --- Sizes: the build's manifest, each checked against what the relay serves.
  // The languages' files count when the visit fetched one (the chosen language's).
  const files = Object.keys(manifest).filter((f) => !f.startsWith("locales/") || byName(f));
  const loaderName = files.find((f) => f === "confab.js");
  const rows = [];
  const totals = { raw: 0, gzip: 0, brotli: 0 };
  const problems = [];
  for (const name of [loaderName, ...files.filter((f) => f !== loaderName)]) {
    const sizes = manifest[name];
    const entry = byName(name);
    if (!entry) problems.push(`${name} is in the manifest but Chromium did not fetch it on open`);
    else {
      const served = await replay(entry);
      for (const label of ["raw", "gzip", "brotli"]) {
        if (served[label].bytes !== sizes[label]) {
          problems.push(`${name}: manifest says ${sizes[label]} ${label} bytes, the relay served ${served[label].bytes} (${served[label].encoding})`);
        }
      }
    }
    rows.push([name, n(sizes.raw), n(sizes.gzip), n(sizes.brotli), "manifest"]);
    for (const label of ["raw", "gzip", "brotli"]) totals[label] += sizes[label];
  }
  // Requests outside the manifest (the site config): what the relay serves for each encoding.
  const unexpected = fetched.filter((e) => !files.some((f) => e === byName(f)));
  for (const entry of unexpected) {
    const served = await replay(entry);
    const encodings = [...new Set(["gzip", "brotli"].map((l) => served[l].encoding))].join("/");
    const note = encodings === "identity" ? "served uncompressed" : `served as ${encodings}`;
    rows.push([entry.path, n(served.raw.bytes), n(served.gzip.bytes), n(served.brotli.bytes), note]);
    for (const label of ["raw", "gzip", "brotli"]) totals[label] += served[label].bytes;
    if (encodings === "identity" && served.raw.bytes > 0) {
      const gz = gzipSync(served.raw.body, { level: 9 }).length;
      const br = brotliCompressSync(served.raw.body, { params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 11 } }).length;
      problems.push(`${entry.path} is not compressed by the relay (it would be ${gz} bytes gzip, ${br} brotli); counted as served`);
    }
  }
  console.log("Sizes in bytes (files: dist/widget/manifest.json, each checked against the bytes the relay serves");
  console.log("with Accept-Encoding identity / gzip / br; other requests: as the relay serves them):");
  const loader = manifest[loaderName];
  rows.push(["loader (confab.js)", n(loader.raw), n(loader.gzip), n(loader.brotli), ""]);
  rows.push(["everything on open", n(totals.raw), n(totals.gzip), n(totals.brotli), ""]);
  console.log(table(["file", "raw", "gzip", "brotli", "source"], rows, ["l", "r", "r", "r", "l"]));
  for (const p of problems) console.log(`note: ${p}`);
  console.log("");
  const verdict = (bytes, limit) => (bytes <= limit ? "PASS" : "MISS");
  console.log(`Target  loader <= ${kb(TARGETS.loader)} brotli:              ${kb(loader.brotli).padStart(9)}  ${verdict(loader.brotli, TARGETS.loader)}`);
  console.log(`Target  everything on open <= ${kb(TARGETS.everything)} brotli:  ${kb(totals.brotli).padStart(9)}  ${verdict(totals.brotli, TARGETS.everything)}${totals.brotli > TARGETS.everything ? ` (over by ${kb(totals.brotli - TARGETS.everything)})` : ""}; the aim, ${kb(TARGETS.aim)}: ${verdict(totals.brotli, TARGETS.aim)}`);
  const wireEncodings = [...new Set(fetched.map((e) => e.encoding))].join(", ");
  console.log(`On the wire Chromium downloaded ${n(wireTotal)} bytes (${kb(wireTotal)}), content-encoding: ${wireEncodings}.`);
  console.log("");

  // --- Timing, cold and warm runs interleaved (the visit above warmed the browser up), on the
  //     unthrottled and the throttled profile.
  const ms = (v) => v.toFixed(1);
  const summary = {};
  for (const throttled of [false, true]) {
    const profile = throttled ? "throttled (CPU 4x, 150 ms RTT, 1.6 Mbit/s)" : "unthrottled";
    const results = { cold: [], warm: [], longest: [] };
    const clickedAt = [];
    const early = [];
    for (let i = 0; i < runs; i++) {
      const cold = await coldRun(browser, url, throttled);
      results.cold.push(cold.ms);
      clickedAt.push(cold.clickedAt);
      if (cold.widgetFilesFetchedBefore > 0 || !cold.placeholder) early.push(i + 1);
      for (const e of cold.errors) console.log(`page error (cold run ${i + 1}): ${e}`);
      const warm = await warmRun(browser, url, throttled);
      results.warm.push(warm.ms);
      results.longest.push(warm.longest);
      for (const e of warm.errors) console.log(`page error (warm run ${i + 1}): ${e}`);
    }
    console.log(`Click to interactive panel (textarea rendered and focused), ms, ${profile}, ${runs} runs each,`);
    console.log("fresh browser context per run, measured in the page with performance.now():");
    const timingRows = [
      ["cold: click as soon as the placeholder launcher exists", results.cold],
      ["warm: click once the widget loaded on idle", results.warm],
      ["longest task from confab.js's arrival until the widget loaded (0: none over 50 ms)", results.longest],
    ].map(([label, values]) => {
      const s = stats(values);
      return [label, ms(s.min), ms(s.median), ms(s.p90), ms(s.max)];
    });
    console.log(table(["variant", "min", "median", "p90", "max"], timingRows, ["l", "r", "r", "r", "r"]));
    console.log(`cold clicks happened ${ms(stats(clickedAt).median)} ms (median) after navigation start; `
      + (early.length ? `runs ${early.join(", ")} had widget files requested before the click` : "no widget file was requested before any cold click"));
    console.log(`all (ms) cold: ${results.cold.map(ms).join(" ")}`);
    console.log(`all (ms) warm: ${results.warm.map(ms).join(" ")}`);
    console.log(`all (ms) longest task while loading: ${results.longest.map(ms).join(" ")}`);
    console.log("");
    summary[throttled ? "throttled" : "unthrottled"] = { warm: stats(results.warm).median, cold: stats(results.cold).median, longest: Math.max(...results.longest) };
  }
  const t = summary.throttled;
  console.log(`Target  click to interactive <= ${TARGETS.interactiveMs} ms, throttled, median: warm ${ms(t.warm)} ms ${t.warm <= TARGETS.interactiveMs ? "PASS" : "MISS"}; cold (the module not yet loaded) ${ms(t.cold)} ms ${t.cold <= TARGETS.interactiveMs ? "PASS" : "MISS"}`);
  const longest = Math.max(summary.unthrottled.longest, t.longest);
  console.log(`Target  no task over ${TARGETS.longTaskMs} ms on the page while loading: longest ${ms(summary.unthrottled.longest)} ms unthrottled, ${ms(t.longest)} ms throttled ${longest <= TARGETS.longTaskMs ? "PASS" : "MISS"}`);
  console.log("");

  // --- Render cost.
  stack.e2e = await startStack();
  await renderCost(browser, stack.e2e);
}

const options = parseArgs(process.argv.slice(2));
const stack = {};
let stopped = false;
async function stop() {
  if (stopped) return;
  stopped = true;
  await stack.browser?.close().catch(() => {});
  stack.relay?.close();
  await stack.e2e?.close();
}
let timedOut = false;
const watchdog = setTimeout(async () => {
  timedOut = true;
  console.error(`\nbench/widget.mjs: gave up after ${options.timeout} s (--timeout)`);
  await stop();
  process.exit(3);
}, options.timeout * 1000);
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, async () => {
    await stop();
    process.exit(130);
  });
}
try {
  await main(options, stack);
} catch (error) {
  // After the watchdog fired, the error is only the browser it closed.
  if (!timedOut) console.error(`\nbench/widget.mjs: ${error.stack || error}`);
  process.exitCode = 1;
} finally {
  clearTimeout(watchdog);
  await stop();
}
