// One file to deploy (issue 16): the relay built with `--features embed-assets` (scripts/test
// builds it so, after the widget and the console), copied alone into an empty directory and
// started there with no configuration, serves the widget, the demo page and the console from
// itself, and a visitor chats through it in headless Chromium.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { WAIT, lastAnswer, launchBrowser, openPage, root, stopper } from "./harness.mjs";

const built = join(process.env.CARGO_TARGET_DIR || join(root, "target"), "debug", "confab");
const ADMIN_TOKEN = "single-binary-admin-token-0123456789";

/** Copies the binary alone into a fresh directory and starts it there; resolves to its URL. */
async function startAlone(t) {
  const dir = mkdtempSync(join(tmpdir(), "confab-alone-"));
  const binary = join(dir, "confab");
  copyFileSync(built, binary);
  chmodSync(binary, 0o755);
  // Nothing of the repository's: no dist/, no confab.toml, no CONFAB__* variables but the token.
  const env = { PATH: process.env.PATH, HOME: dir, RUST_LOG: "warn", CONFAB_ADMIN_TOKEN: ADMIN_TOKEN, CONFAB__DEMO__TOKEN_DELAY_MS: "5" };
  const child = spawn(binary, ["serve", "--listen", "127.0.0.1:0"], { cwd: dir, env, stdio: ["ignore", "pipe", "inherit"] });
  const stop = stopper(child);
  t.after(async () => {
    await stop();
    rmSync(dir, { recursive: true, force: true });
  });
  let output = "";
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the relay did not start:\n${output}`)), 20000);
    child.stdout.on("data", (chunk) => {
      output += chunk;
      const url = output.match(/listening on (http:\/\/[\d.:]+)/);
      if (url && /Embed the widget|Widget not built/.test(output)) {
        clearTimeout(timer);
        resolve(url[1]);
      }
    });
    child.on("exit", (code) => reject(new Error(`the relay exited with ${code}:\n${output}`)));
  });
  assert.match(output, /Embed the widget/, `the binary has its widget:\n${output}`);
  assert.match(output, /Console: /, `and its console:\n${output}`);
  return { url, dir };
}

let browser;
after(async () => {
  await browser?.close();
});

test("the binary alone serves the widget, the demo page and the console, and chats", { timeout: 60000 }, async (t) => {
  const { url, dir } = await startAlone(t);
  assert.deepEqual(readdirSync(dir).filter((f) => !f.startsWith("confab")), [], "nothing but the binary and its database");

  // Every widget file, byte for byte what the build made, brotli'd on the wire.
  const manifest = JSON.parse(readFileSync(join(root, "dist", "widget", "manifest.json"), "utf8"));
  for (const name of Object.keys(manifest)) {
    const path = name === "confab.js" ? "/confab.js" : `/widget/${name}`;
    const response = await fetch(url + path, { headers: { "Accept-Encoding": "br" } });
    assert.equal(response.status, 200, path);
    assert.equal(response.headers.get("content-encoding"), "br", path);
    const bytes = Buffer.from(await response.arrayBuffer());
    assert.ok(bytes.equals(readFileSync(join(root, "dist", "widget", name))), `${path} is the built file`);
  }
  const wasm = Object.keys(manifest).find((n) => n.endsWith(".wasm"));
  assert.equal((await fetch(`${url}/widget/${wasm}`)).headers.get("content-type"), "application/wasm");
  assert.equal((await fetch(`${url}/widget/missing.js`)).status, 404);

  // The console's page, under its policy.
  const console = await fetch(`${url}/console/`);
  assert.equal(console.status, 200);
  assert.match(console.headers.get("content-type"), /^text\/html/);
  assert.match(console.headers.get("content-security-policy"), /default-src 'self'/);
  assert.equal(await console.text(), readFileSync(join(root, "dist", "console", "index.html"), "utf8"));

  // A visitor on the demo page, the widget loaded from the binary.
  browser = await launchBrowser();
  const { page, errors } = await openPage(t, browser);
  await page.goto(url + "/");
  await page.locator("[data-confab] button.launcher").click();
  await page.locator("[data-confab] textarea").fill("Hello from the single binary");
  await page.locator("[data-confab] textarea").press("Enter");
  await lastAnswer(page).waitFor(WAIT);
  await page.locator("[data-confab] button.send").waitFor(WAIT);
  assert.ok((await lastAnswer(page).textContent()).trim().length > 0, "the demo model answered");
  assert.deepEqual(errors, []);
});
