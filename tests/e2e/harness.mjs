// Shared harness for the widget's end-to-end tests: the real `confab` binary (fresh database,
// 127.0.0.1:0), either in demo mode or in front of the scripted mock upstream with the test host
// pages on their own origin (two relays on one database and a real Redis, as behind a load
// balancer), and Debian's Chromium driven by playwright-core.
// Every process and server started here is stopped by the returned `close()`.
import { createHmac } from "node:crypto";
import { spawn, execFile } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { chromium } from "playwright-core";
import { startHosts } from "./hosts.mjs";
import { MODEL, startMockUpstream } from "./mock-upstream.mjs";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const binary = join(process.env.CARGO_TARGET_DIR || join(root, "target"), "debug", "confab");
export const artifacts = join(root, "artifacts");
mkdirSync(artifacts, { recursive: true });

const relayEnv = (env) => ({
  ...process.env,
  RUST_LOG: "warn",
  CONFAB__WIDGET__ASSETS_DIR: join(root, "dist", "widget"),
  CONFAB__DEMO__TOKEN_DELAY_MS: "30",
  // Every test's browser is the same visitor (127.0.0.1): lift the per-visitor default limits
  // (20 a minute) above what the whole suite sends.
  CONFAB__VISITORS__RPM: "1000",
  ...env,
});

/**
 * Starts a relay and resolves once it has printed its start-up text (address, demo key when in
 * demo mode). `cwd` is its working directory (its confab.toml and confab.db), `dir` by default;
 * `dir` is a fresh temporary one by default, removed by `close()` either way.
 */
export async function startRelay(env = {}, dir = mkdtempSync(join(tmpdir(), "confab-e2e-")), cwd = dir) {
  const child = spawn(binary, ["serve", "--listen", "127.0.0.1:0"], {
    cwd,
    env: relayEnv(env),
    stdio: ["ignore", "pipe", "inherit"],
  });
  let output = "";
  let timer;
  const ready = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`relay did not start:\n${output}`)), 20000);
    child.stdout.on("data", (chunk) => {
      output += chunk;
      const url = output.match(/listening on (http:\/\/[\d.:]+)/);
      const key = output.match(/Demo site key \(new at every start\): (\S+)/);
      // The start-up text ends with how to embed the widget (or why it cannot be embedded).
      if (url && /Embed the widget|Widget not built/.test(output)) resolve({ url: url[1], key: key?.[1] });
    });
    child.on("exit", (code) => reject(new Error(`relay exited with ${code}:\n${output}`)));
  }).finally(() => clearTimeout(timer));
  const stop = stopper(child);
  const close = async () => {
    await stop();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const { url, key } = await ready;
    if (!output.includes("Embed the widget")) {
      console.warn(`the widget is not built: run \`trunk build --cargo-profile widget\`\n${output}`);
    }
    return { url, key, output: () => output, close };
  } catch (error) {
    await close();
    throw error;
  }
}

/**
 * What stops a relay process: SIGTERM, then SIGKILL if it is still draining streams after 5 s;
 * resolves once it has exited. Call it at once, so the exit is never missed.
 */
export function stopper(child) {
  const exited = new Promise((resolve) => child.once("exit", resolve));
  return async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    }
  };
}

/** A free TCP port of 127.0.0.1 (free when asked). */
async function freePort() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * Starts Debian's redis-server on a free port of 127.0.0.1, persisting nothing, and resolves
 * once it accepts connections to { url, close }.
 */
export async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "confab-e2e-redis-"));
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "",
    "--appendonly", "no", "--dir", dir], { stdio: ["ignore", "pipe", "inherit"] });
  let output = "";
  let timer;
  const ready = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`redis-server did not start:\n${output}`)), 20000);
    child.stdout.on("data", (chunk) => {
      output += chunk;
      if (output.includes("Ready to accept connections")) resolve();
    });
    child.on("error", (error) => reject(new Error(`cannot run redis-server (scripts/test installs it): ${error.message}`)));
    child.on("exit", (code) => reject(new Error(`redis-server exited with ${code}:\n${output}`)));
  }).finally(() => clearTimeout(timer));
  const exited = new Promise((resolve) => child.once("exit", resolve));
  const close = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await ready;
    return { url: `redis://127.0.0.1:${port}`, close };
  } catch (error) {
    await close();
    throw error;
  }
}

/** Runs a `confab` command (like `sites create`) to its end in `dir`. */
export async function confab(args, dir, env = {}) {
  const { stdout } = await promisify(execFile)(binary, args, { cwd: dir, env: relayEnv(env), timeout: 20000 });
  return stdout;
}

/** The site the host pages embed the widget for. */
export const SITE = {
  title: "E2E Help",
  greeting: "Hello from the e2e site!",
  suggestions: ["What can you do?", "Where are the docs?"],
};

/**
 * The whole setup of a real website: the mock upstream, the host pages on their own origin,
 * two relays in front of the mock on one database and one Redis (the pages use the first; a
 * test may send requests to the other, as a load balancer would), and one site registered for
 * the host's origin. `env` is more of the relays' environment (an admin token, say) and `config`
 * more lines of their confab.toml (prices, say). Resolves to
 * { mock, hosts, relay, other, key, site (its id), dir (the relays' working directory), close }.
 */
export async function startStack(env = {}, config = []) {
  const stopped = [];
  const close = async () => {
    for (const stop of stopped.reverse()) await stop();
  };
  try {
    const mock = await startMockUpstream();
    stopped.push(() => mock.close());
    const hosts = await startHosts();
    stopped.push(() => hosts.close());
    const dir = mkdtempSync(join(tmpdir(), "confab-e2e-"));
    stopped.push(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, "confab.toml"), [
      "[[upstreams]]",
      'name = "mock"',
      'kind = "openai"',
      `base_url = "${mock.url}"`,
      `models = ["${MODEL}"]`,
      ...config,
      "",
    ].join("\n"));
    const created = JSON.parse(await confab(["sites", "create", "--name", "e2e", "--origin", hosts.url,
      "--title", SITE.title, "--greeting", SITE.greeting,
      ...SITE.suggestions.flatMap((s) => ["--suggestion", s]), "--json"], dir));
    // A second site for the same pages that requires verified visitors: its backend (here, the
    // test) signs visitor tokens with the site's visitor secret.
    const verified = JSON.parse(await confab(["sites", "create", "--name", "members",
      "--origin", hosts.url, "--json"], dir));
    const secretText = await confab(["sites", "verification", verified.id, "--new-secret",
      "--require"], dir);
    const visitorSecret = secretText.match(/^\s+([0-9a-f]{64})$/m)[1];
    const redis = await startRedis();
    stopped.push(() => redis.close());
    const shared = { CONFAB__REDIS__URL: redis.url, ...env };
    const relay = await startRelay(shared, dir);
    stopped.push(() => relay.close());
    // The second relay: the same directory (its confab.toml and database), a reservation
    // journal of its own. Closed first, since the first one's close removes the directory.
    const other = await startRelay({ ...shared, CONFAB__USAGE__JOURNAL_DIR: join(dir, "other.reservations") },
      mkdtempSync(join(tmpdir(), "confab-e2e-")), dir);
    stopped.push(() => other.close());
    hosts.vars.RELAY = relay.url;
    hosts.vars.SITE_KEY = created.key;
    hosts.vars.VERIFIED_KEY = verified.key;
    hosts.vars.VISITOR_TOKEN = visitorToken(visitorSecret, "alice@example.com");
    return { mock, hosts, relay, other, key: created.key, site: created.id, visitorSecret, dir, close };
  } catch (error) {
    await close();
    throw error;
  }
}

/**
 * The hash a site's backend computes for a logged-in user (HMAC-SHA256 of the user id, keyed
 * with the site's visitor secret as text), and the token the widget sends.
 */
export const visitorHash = (secret, userId) => createHmac("sha256", secret).update(userId).digest("hex");
export const visitorToken = (secret, userId) =>
  `hmac.${Buffer.from(userId).toString("base64url")}.${visitorHash(secret, userId)}`;

export async function launchBrowser() {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    timeout: 20000,
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

/**
 * A fresh browser context and page for one test, closed (after a screenshot named after the
 * test) when the test ends. `options` go to `browser.newContext`.
 */
export async function openPage(t, browser, options = {}) {
  const context = await browser.newContext(options);
  context.setDefaultTimeout(15000);
  const page = await context.newPage();
  const errors = watchErrors(page);
  t.after(async () => {
    await page.screenshot({ path: join(artifacts, `${t.name.replace(/\W+/g, "-")}.png`), timeout: 5000 })
      .catch(() => {});
    await context.close();
  });
  return { page, errors, context };
}

export const WAIT = { timeout: 15000 };

/** Polls `fn` until it returns something truthy, for at most `ms`. */
export async function until(fn, ms = 10000, what = "condition") {
  const end = Date.now() + ms;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** The last answer in the widget (not the greeting). */
export const lastAnswer = (page) => page.locator("[data-confab] li.assistant:not(.greeting)").last();

/**
 * Starts recording every length the last answer takes while it streams; `lengths()` then
 * resolves to the distinct lengths seen, in order.
 */
export async function recordAnswerLengths(page) {
  await page.evaluate(() => {
    window.__lengths = [];
    const shadow = document.querySelector("[data-confab]").shadowRoot;
    new MutationObserver(() => {
      const answers = shadow.querySelectorAll("li.assistant:not(.greeting)");
      const last = answers[answers.length - 1];
      if (last) window.__lengths.push(last.textContent.length);
    }).observe(shadow, { subtree: true, characterData: true, childList: true });
  });
  return { lengths: () => page.evaluate(() => [...new Set(window.__lengths)]) };
}

/**
 * Holds the widget's module back (the loader's placeholder launcher stays) until the returned
 * function is called.
 */
export async function holdModule(page) {
  let release;
  const held = new Promise((resolve) => (release = resolve));
  await page.route("**/*.wasm", async (route) => {
    await held;
    await route.continue();
  });
  return release;
}
