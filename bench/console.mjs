// Console benchmark: what an operator's browser downloads for the console, and how long its
// first page takes to render.
//
//   node bench/console.mjs [--runs N]
//
// (scripts/bench-console builds what this needs, then runs it.)
//
// - Sizes: raw, gzip and brotli bytes of every file index.html loads (dist/console), checked
//   against what the relay really serves with `Accept-Encoding: br`.
// - Time to first render: a fresh browser context (empty cache) opens /console/ and the time
//   from navigation start to the login form's token field being visible is read in the page
//   (performance.now() at that moment); then, logged in, the time from navigation to the
//   overview's chart (logged in: its files are then in the cache). N runs each; min, median and
//   max are printed.
// Everything runs on 127.0.0.1: the real `confab` binary (target/debug/confab) in demo mode and
// Debian's Chromium, from tests/e2e/harness.mjs. Exits non-zero when it cannot measure.
import { readFileSync, readdirSync } from "node:fs";
import http from "node:http";
import { join } from "node:path";
import { brotliCompressSync, constants as zlibConstants, gzipSync } from "node:zlib";
import { launchBrowser, root, startRelay } from "../tests/e2e/harness.mjs";

const TOKEN = "console-bench-admin-token-0123456789abcdef";
const dir = join(root, "dist", "console");

function parseArgs(argv) {
  let runs = 10;
  for (let i = 0; i < argv.length; i++) {
    const [name, inline] = argv[i].split("=", 2);
    if (name === "--runs") runs = Number(inline ?? argv[++i]);
    else {
      console.error(`unknown argument: ${argv[i]} (usage: node bench/console.mjs [--runs N])`);
      process.exit(2);
    }
  }
  if (!Number.isInteger(runs) || runs < 1 || runs > 200) {
    console.error("--runs takes a whole number from 1 to 200");
    process.exit(2);
  }
  return { runs };
}

const kb = (bytes) => (bytes / 1024).toFixed(1).padStart(7);
const stats = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return `min ${sorted[0].toFixed(0)} ms, median ${at(0.5).toFixed(0)} ms, max ${sorted.at(-1).toFixed(0)} ms`;
};

async function sizes(relay) {
  const files = readdirSync(dir).filter((f) => !f.endsWith(".br") && !f.endsWith(".gz") && f !== "manifest.json");
  let totals = { raw: 0, gzip: 0, br: 0 };
  console.log("file                                           raw KB  gzip KB  brotli KB  served br KB");
  for (const file of files.sort()) {
    const bytes = readFileSync(join(dir, file));
    const gzip = gzipSync(bytes, { level: 9 }).length;
    const br = brotliCompressSync(bytes, { params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 11 } }).length;
    const path = file === "index.html" ? "/console/" : `/console/${file}`;
    // node:http, not fetch: fetch decodes brotli on the fly, and the bytes on the wire are wanted.
    const response = await new Promise((resolve, reject) => {
      http.get(relay.url + path, { headers: { "accept-encoding": "br" } }, (res) => {
        let length = 0;
        res.on("data", (chunk) => (length += chunk.length));
        res.on("end", () => resolve({ status: res.statusCode, length, encoding: res.headers["content-encoding"] }));
        res.on("error", reject);
      }).on("error", reject);
    });
    if (response.status !== 200) throw new Error(`GET ${path}: ${response.status}`);
    const served = response.length;
    totals = { raw: totals.raw + bytes.length, gzip: totals.gzip + gzip, br: totals.br + br };
    console.log(`${file.padEnd(45)} ${kb(bytes.length)} ${kb(gzip)} ${kb(br)}    ${kb(served)} (${response.encoding ?? "identity"})`);
  }
  console.log(`${"everything".padEnd(45)} ${kb(totals.raw)} ${kb(totals.gzip)} ${kb(totals.br)}`);
}

/** Milliseconds from navigation start until `selector` is visible, in a fresh context. */
async function firstRender(browser, url, selector, login) {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    if (login) {
      await page.goto(url);
      await page.waitForSelector("input[type=password]", { timeout: 20000 });
      await page.fill("input[type=password]", TOKEN);
      await page.keyboard.press("Enter");
      await page.waitForSelector(selector, { timeout: 20000 });
    }
    await page.goto(url);
    await page.waitForSelector(selector, { state: "visible", timeout: 20000 });
    return await page.evaluate(() => performance.now());
  } finally {
    await context.close();
  }
}

const { runs } = parseArgs(process.argv.slice(2));
const relay = await startRelay({ CONFAB_ADMIN_TOKEN: TOKEN, CONFAB__ADMIN__CONSOLE_DIR: dir });
const browser = await launchBrowser();
const guard = setTimeout(() => {
  console.error("the benchmark did not finish within 10 minutes");
  process.exit(1);
}, 600000);
try {
  console.log(`Console sizes (dist/console), KB = 1024 bytes:`);
  await sizes(relay);
  const login = [];
  const overview = [];
  for (let i = 0; i < runs; i++) {
    login.push(await firstRender(browser, `${relay.url}/console/`, "input[type=password]", false));
    overview.push(await firstRender(browser, `${relay.url}/console/`, "svg", true));
  }
  console.log(`\nTime to first render over ${runs} runs (navigation start to visible, empty cache):`);
  console.log(`  login form:            ${stats(login)}`);
  console.log(`  overview with a chart: ${stats(overview)} (logged in, files in the HTTP cache)`);
} finally {
  clearTimeout(guard);
  await browser.close();
  await relay.close();
}
