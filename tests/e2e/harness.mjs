// Shared harness for the widget's end-to-end tests: the real `confab` binary (demo upstream,
// fresh database, 127.0.0.1:0) and Debian's Chromium driven by playwright-core.
// Every process started here is stopped by the returned `close()`.
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const binary = join(process.env.CARGO_TARGET_DIR || join(root, "target"), "debug", "confab");
export const artifacts = join(root, "artifacts");
mkdirSync(artifacts, { recursive: true });

/** Starts a relay in demo mode and resolves once it prints its address and demo key. */
export async function startRelay(env = {}) {
  const dir = mkdtempSync(join(tmpdir(), "confab-e2e-"));
  const child = spawn(binary, ["serve", "--listen", "127.0.0.1:0"], {
    cwd: dir,
    env: {
      ...process.env,
      RUST_LOG: "warn",
      CONFAB__WIDGET__ASSETS_DIR: join(root, "dist", "widget"),
      CONFAB__DEMO__TOKEN_DELAY_MS: "30",
      ...env,
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let output = "";
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`relay did not start:\n${output}`)), 20000);
    child.stdout.on("data", (chunk) => {
      output += chunk;
      const url = output.match(/listening on (http:\/\/[\d.:]+)/);
      const key = output.match(/Demo site key \(new at every start\): (\S+)/);
      if (url && key && output.includes("Embed the widget")) {
        clearTimeout(timer);
        resolve({ url: url[1], key: key[1] });
      }
    });
    child.on("exit", (code) => reject(new Error(`relay exited with ${code}:\n${output}`)));
  });
  const { url, key } = await ready;
  return {
    url,
    key,
    close() {
      child.kill("SIGTERM");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/** Fails the page on any uncaught error or console error. */
export function watchErrors(page) {
  const errors = [];
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  page.on("console", (m) => m.type() === "error" && errors.push(`console: ${m.text()}`));
  return errors;
}
