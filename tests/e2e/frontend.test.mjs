// The chat for front-end developers, in headless Chromium against a real relay: the npm package
// (packed with `npm pack`, installed from the tarball, type-checked and bundled by esbuild into
// a test app), the <confab-chat> element next to the script tag's floating widget, the
// ConfabChat component in a Leptos app, the headless client, and destroy() leaving nothing
// behind.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { WAIT, launchBrowser, openPage, root, startStack, until } from "./harness.mjs";
import { ANSWER_END, answerTo } from "./mock-upstream.mjs";

let stack, browser, appDir;
before(async () => {
  appDir = buildApp();
  stack = await startStack();
  stack.hosts.serve("/npm-app/", join(appDir, "out"));
  // The Leptos example (examples/leptos-chat), built by scripts/test with Trunk.
  stack.hosts.serve("/leptos-chat/", join(root, "dist", "leptos-chat"));
  browser = await launchBrowser();
}, { timeout: 180000 });
after(async () => {
  await browser?.close();
  await stack?.close();
  if (appDir) rmSync(appDir, { recursive: true, force: true });
});

const BOUND = { timeout: 90000 };

/**
 * What a front-end developer does with the package: `npm pack` (in dist/npm/confab-widget,
 * which the widget's build makes), install the tarball into an app, type-check the app against
 * the package's declarations, bundle it with esbuild, and put the module next to the bundle.
 */
function buildApp() {
  const dir = mkdtempSync(join(tmpdir(), "confab-npm-app-"));
  const run = (cmd, args, cwd) => execFileSync(cmd, args, { cwd, stdio: ["ignore", "pipe", "inherit"], timeout: 120000 }).toString();
  const packed = JSON.parse(run("npm", ["pack", "--json", "--pack-destination", dir], join(root, "dist", "npm", "confab-widget")));
  const tarball = join(dir, packed[0].filename);
  const files = packed[0].files.map((f) => f.path).sort();
  assert.deepEqual(files.filter((f) => !f.endsWith(".wasm") && !f.startsWith("locales/")), ["README.md", "index.d.ts", "index.js", "package.json"]);
  assert.equal(files.filter((f) => /^locales\/[a-z]{2}\.js$/.test(f)).length, 15, files.join(", "));
  assert.equal(files.filter((f) => /^confab-widget\.[0-9a-f]{16}\.wasm$/.test(f)).length, 1, files.join(", "));
  const app = join(dir, "app");
  cpSync(join(root, "tests", "e2e", "npm-app"), app, { recursive: true });
  writeFileSync(join(app, "package.json"), JSON.stringify({ private: true, dependencies: { "confab-widget": `file:${tarball}` } }));
  run("npm", ["install", "--offline", "--no-audit", "--no-fund", "--loglevel=error"], app);
  run(join(root, "node_modules", ".bin", "tsc"), ["-p", "tsconfig.json"], app);
  const out = join(dir, "out");
  mkdirSync(out);
  // Code splitting: each language the package can speak becomes a chunk of its own.
  run(join(root, "node_modules", ".bin", "esbuild"), ["app.ts", "--bundle", "--format=esm", "--splitting", "--minify", `--outdir=${out}`], app);
  const installed = join(app, "node_modules", "confab-widget");
  for (const f of readdirSync(installed).filter((f) => f.endsWith(".wasm"))) copyFileSync(join(installed, f), join(out, f));
  copyFileSync(join(app, "index.html"), join(out, "index.html"));
  return dir;
}

/** Opens the test app and waits for its inline chat. */
async function openApp(t) {
  const opened = await openPage(t, browser);
  opened.chunks = [];
  opened.page.on("request", (r) => /\/npm-app\/(?!app\.js)[\w-]+\.js$/.test(r.url()) && opened.chunks.push(r.url()));
  await opened.page.goto(stack.hosts.url + "/npm-app/");
  await opened.page.locator("#help textarea").waitFor(WAIT);
  return opened;
}

/** Asks `question` in the chat inside `scope` and waits for the whole answer there. */
async function askIn(page, scope, question) {
  await page.locator(`${scope} textarea`).fill(question);
  await page.locator(`${scope} textarea`).press("Enter");
  const answer = page.locator(`${scope} li.assistant:not(.greeting)`).last();
  await answer.filter({ hasText: ANSWER_END }).waitFor(WAIT);
  assert.equal((await answer.textContent()).replace(/\s+/g, " ").trim(), answerTo(question));
}

test("an app bundled with esbuild from the packed npm tarball mounts the chat inline and streams an answer", BOUND, async (t) => {
  const { page, errors, chunks } = await openApp(t);
  // Inline: no launcher, no close button, the panel fills the column the page gave it.
  assert.equal(await page.locator("#help button.launcher").count(), 0);
  assert.equal(await page.locator("#help button.close").count(), 0);
  const column = await page.locator("#help").boundingBox();
  const panel = await page.locator("#help section.panel").boundingBox();
  assert.ok(Math.abs(panel.width - column.width) <= 1 && Math.abs(panel.height - column.height) <= 1,
    `panel ${JSON.stringify(panel)} fills column ${JSON.stringify(column)}`);
  assert.equal(await page.locator("#help section.panel").getAttribute("role"), "region");
  await askIn(page, "#help", "Where is my parcel?");
  // The handle's events: the pieces as they came, then the whole answer, nothing else.
  const events = await until(() => page.evaluate(() => window.app.events.some(([name]) => name === "message") && window.app.events), 5000, "the message event");
  const deltas = events.filter(([name]) => name === "message.delta").map(([, piece]) => piece);
  assert.ok(deltas.length > 3, `${deltas.length} deltas`);
  assert.equal(deltas.join(""), answerTo("Where is my parcel?"));
  assert.deepEqual(events.filter(([name]) => name !== "message.delta"), [["message", answerTo("Where is my parcel?")]]);
  // send() from the page, through the handle.
  await page.evaluate(() => window.app.chat.send("And my invoice?"));
  await page.locator("#help li.assistant", { hasText: "You asked: And my invoice?" }).filter({ hasText: ANSWER_END }).waitFor(WAIT);
  // Another chat in French: its language is the one chunk the app downloads.
  assert.deepEqual(chunks, [], "an English chat needs no language chunk");
  const french = JSON.parse(readFileSync(join(root, "widget", "locales", "fr.json"), "utf8"));
  await page.evaluate(() => {
    const host = document.createElement("div");
    host.id = "fr";
    host.style.height = "400px";
    document.body.append(host);
    window.app.mount(host, { relay: window.app.relay, site: window.app.site, locale: "fr" });
  });
  await page.locator("#fr button.send", { hasText: french.send }).waitFor(WAIT);
  assert.equal(chunks.length, 1, chunks.join(", "));
  assert.match(chunks[0], /\/fr-\w+\.js$/);
  assert.deepEqual(errors, []);
  // An element that names no relay (there is no script tag here to default to) says so and
  // draws nothing.
  await page.evaluate(() => document.body.append(document.createElement("confab-chat")));
  await until(() => errors.length, 5000, "the console error");
  assert.match(errors[0], /needs relay and site attributes/);
  assert.equal(await page.evaluate(() => document.querySelector("confab-chat").shadowRoot), null);
});

test("the package's floating mode draws the launcher and its panel; the handle opens, closes, identifies and resets", BOUND, async (t) => {
  const { page, errors } = await openApp(t);
  await page.evaluate(() => {
    const host = document.createElement("div");
    host.id = "floating";
    document.body.append(host);
    window.floating = window.app.mount(host, { relay: window.app.relay, site: window.app.site, mode: "floating", name: "bubble" });
    window.seen = [];
    for (const name of ["open", "close"]) window.floating.on(name, () => window.seen.push(name));
  });
  const launcher = page.locator("#floating button.launcher");
  await launcher.waitFor(WAIT);
  assert.equal(await page.locator("#floating section.panel").isVisible(), false);
  await page.evaluate(() => window.floating.open());
  await page.locator("#floating section.panel[role=dialog] textarea").waitFor(WAIT);
  await askIn(page, "#floating", "From the bubble");
  await page.evaluate(() => window.floating.close());
  await page.locator("#floating section.panel").waitFor({ state: "hidden", ...WAIT });
  assert.deepEqual(await page.evaluate(() => window.seen), ["open", "close"]);
  // Its conversation is its own (named "bubble"): the inline chat does not show it.
  assert.equal(await page.locator("#help li.user").count(), 0);
  const kept = () => page.evaluate(() => Object.keys(localStorage).filter((k) => k.includes("/bubble")));
  assert.ok((await kept()).length > 0, "the anonymous conversation is stored under the chat's name");
  // Another visitor signs in: the panel empties; reset() forgets what is stored.
  await page.evaluate(() => window.floating.identify("opaque-token-of-bob"));
  await until(async () => (await page.locator("#floating li.user").count()) === 0, 5000, "the panel to empty");
  await page.evaluate(() => window.floating.reset());
  assert.deepEqual(await kept(), []);
  assert.deepEqual(errors, []);
});

test("the module is fetched with its SRI hash: a module that does not match is refused and the handle says so", BOUND, async (t) => {
  const { page } = await openPage(t, browser);
  await page.route("**/*.wasm", async (route) => {
    const response = await route.fetch();
    const body = await response.body();
    body[body.length - 1] ^= 0xff;
    await route.fulfill({ response, body });
  });
  // The page's own console error (the browser's SRI refusal) is expected here.
  await page.goto(stack.hosts.url + "/npm-app/");
  const said = await until(() => page.evaluate(() => window.app?.events.find(([name]) => name === "error")?.[1]), 10000, "the error event");
  assert.match(said, /could not be loaded/);
  assert.equal(await page.locator("#help textarea").count(), 0);
});

test("<confab-chat> inline and the script tag's floating widget share a page without disturbing each other", BOUND, async (t) => {
  const { page, errors } = await openPage(t, browser);
  await page.goto(stack.hosts.url + "/element.html");
  const inline = "confab-chat";
  await page.locator(`${inline} textarea`).waitFor(WAIT);
  // Styled by the page: its custom property and a ::part() rule reach in.
  const header = page.locator(`${inline} header`);
  assert.equal(await header.evaluate((h) => getComputedStyle(h).backgroundColor), "rgb(11, 110, 79)");
  assert.equal(await header.evaluate((h) => getComputedStyle(h).letterSpacing), "2px");
  // The page's font does not leak in (the chat's own is used).
  assert.doesNotMatch(await page.locator(`${inline} textarea`).evaluate((el) => getComputedStyle(el).fontFamily), /Georgia/);
  await askIn(page, inline, "Inline question");
  // The floating widget: still closed, and empty when opened.
  const floating = "[data-confab]";
  assert.equal(await page.locator(`${floating} section.panel`).isVisible(), false);
  await page.locator(`${floating} button.launcher`).click();
  await page.locator(`${floating} [role=dialog] textarea`).waitFor(WAIT);
  assert.equal(await page.locator(`${floating} li.user`).count(), 0);
  await askIn(page, floating, "Floating question");
  // Each kept its own conversation, on screen and after a reload.
  const said = async (scope) => page.locator(`${scope} li.user`).allTextContents();
  assert.deepEqual(await said(inline), ["Inline question"]);
  assert.deepEqual(await said(floating), ["Floating question"]);
  await page.reload();
  await page.locator(`${inline} li.user`).first().waitFor(WAIT);
  assert.deepEqual(await said(inline), ["Inline question"]);
  await page.evaluate(() => window.Confab.open());
  await page.locator(`${floating} li.user`).first().waitFor(WAIT);
  assert.deepEqual(await said(floating), ["Floating question"]);
  // Closing the floating panel leaves the inline chat alone.
  await page.evaluate(() => window.Confab.close());
  assert.equal(await page.locator(`${inline} section.panel`).isVisible(), true);
  assert.deepEqual(errors, []);
});

test("the ConfabChat component renders and chats inside a Leptos app, and cleans up when the app removes it", BOUND, async (t) => {
  const { page, errors } = await openPage(t, browser);
  const response = await page.goto(stack.hosts.url + "/leptos-chat/");
  assert.equal(response.status(), 200, "dist/leptos-chat is built (scripts/test: trunk build in examples/leptos-chat)");
  await page.locator("#help textarea").waitFor(WAIT);
  assert.equal(await page.locator("#help h2").textContent(), "Leptos help");
  // In the language it was given (built into the app).
  const german = JSON.parse(readFileSync(join(root, "widget", "locales", "de.json"), "utf8"));
  assert.equal(await page.locator("#help button.send").textContent(), german.send);
  assert.equal(await page.locator("#help .confab").getAttribute("lang"), "de");
  await askIn(page, "#help", "From Leptos?");
  // The component's on_event reached the app's signals.
  await page.locator("#answers", { hasText: "1" }).waitFor(WAIT);
  assert.equal(await page.locator("#last").textContent(), answerTo("From Leptos?"));
  // The app removes the component (<Show>) in the middle of an answer: the chat goes with it
  // and its answer is cancelled on the relay; back, it shows the same conversation (stored
  // under its name).
  const before = stack.mock.cancellations.length;
  await page.locator("#help textarea").fill("SLOW in Leptos");
  await page.locator("#help textarea").press("Enter");
  await page.locator("#help li.assistant", { hasText: "tick2" }).waitFor(WAIT);
  await page.locator("#toggle").click();
  await until(() => stack.mock.cancellations.length > before, 10000, "the upstream's generation to stop");
  await until(() => page.evaluate(() => !document.querySelector("#help .confab-chat")), 5000, "the chat to go");
  await page.locator("#toggle").click();
  await page.locator("#help li.user", { hasText: "From Leptos?" }).waitFor(WAIT);
  assert.deepEqual(errors, []);
});

test("the headless client streams an answer, and cancels one on the relay when its signal aborts", BOUND, async (t) => {
  const { page, errors } = await openApp(t);
  const answer = await page.evaluate(async () => {
    const pieces = [];
    const client = window.app.createClient({ relay: window.app.relay, site: window.app.site });
    const answer = await client.chat([{ role: "user", content: "Headless?" }], { onDelta: (piece) => pieces.push(piece) });
    return { ...answer, pieces };
  });
  assert.equal(answer.text, answerTo("Headless?"));
  assert.equal(answer.pieces.join(""), answer.text);
  assert.ok(answer.pieces.length > 3);
  assert.ok(answer.requestId, "the relay's request id");
  assert.ok(answer.stream, "the relay keeps the stream (Redis): it can be resumed");
  // The same answer, followed again from its start by its stream's name.
  const again = await page.evaluate((stream) => window.app.createClient({ relay: window.app.relay, site: window.app.site }).resume(stream).then((a) => a.text), answer.stream);
  assert.equal(again, answer.text);

  // An endless answer, aborted after its first pieces: the promise rejects with the abort, no
  // piece arrives after it, and the relay stops the upstream's generation.
  const before = stack.mock.cancellations.length;
  const aborted = await page.evaluate(async () => {
    const controller = new AbortController();
    const client = window.app.createClient({ relay: window.app.relay, site: window.app.site });
    let pieces = 0, afterAbort = 0;
    const chat = client.chat([{ role: "user", content: "SLOW please" }], {
      signal: controller.signal,
      onDelta: () => {
        pieces += 1;
        if (controller.signal.aborted) afterAbort += 1;
        else if (pieces === 3) controller.abort();
      },
    });
    const outcome = await chat.then(() => "resolved", (e) => e.name);
    await new Promise((r) => setTimeout(r, 500));
    return { outcome, pieces, afterAbort };
  });
  assert.deepEqual(aborted, { outcome: "AbortError", pieces: 3, afterAbort: 0 });
  await until(() => stack.mock.cancellations.length > before, 10000, "the upstream's generation to stop");

  // What the app's onDelta throws ends the chat with that very error.
  const thrown = await page.evaluate(async () => {
    const client = window.app.createClient({ relay: window.app.relay, site: window.app.site });
    return client.chat([{ role: "user", content: "Throw" }], { onDelta: () => { throw new TypeError("mine"); } })
      .then(() => "resolved", (e) => `${e.name}: ${e.message}`);
  });
  assert.equal(thrown, "TypeError: mine");

  // Errors come in the relay's envelope, typed.
  const failure = await page.evaluate(async () => {
    const client = window.app.createClient({ relay: window.app.relay, site: "pk_not_a_key" });
    try {
      await client.chat([{ role: "user", content: "hi" }]);
      return null;
    } catch (e) {
      return { name: e.name, status: e.status, code: e.code, message: e.message };
    }
  });
  assert.equal(failure.name, "ConfabError");
  assert.equal(failure.status, 401);
  assert.ok(failure.code && failure.message, JSON.stringify(failure));
  // The refused key shows in the page's console as a failed request; nothing else may.
  assert.deepEqual(errors.filter((e) => !/401/.test(e)), []);
});

/**
 * Counts what the page has running: listeners on window, document and connected nodes (added
 * and not removed), timers set and neither fired nor cleared, and (from the browser's side)
 * requests started and neither finished nor failed.
 */
async function watchLeaks(context, page) {
  await context.addInitScript(() => {
    const listeners = new Map();
    const keyOf = (target, type, fn, options) => {
      const capture = typeof options === "boolean" ? options : !!options?.capture;
      let perTarget = listeners.get(target);
      if (!perTarget) listeners.set(target, (perTarget = new Map()));
      return [perTarget, `${type}|${capture}`, fn];
    };
    const add = EventTarget.prototype.addEventListener;
    const remove = EventTarget.prototype.removeEventListener;
    EventTarget.prototype.addEventListener = function (type, fn, options) {
      if (fn) {
        const [perTarget, key] = keyOf(this, type, fn, options);
        if (!perTarget.has(key)) perTarget.set(key, new Set());
        perTarget.get(key).add(fn);
      }
      return add.call(this, type, fn, options);
    };
    EventTarget.prototype.removeEventListener = function (type, fn, options) {
      if (fn) {
        const [perTarget, key] = keyOf(this, type, fn, options);
        perTarget.get(key)?.delete(fn);
      }
      return remove.call(this, type, fn, options);
    };
    const timers = new Set();
    const [setT, clearT, setI, clearI] = [setTimeout, clearTimeout, setInterval, clearInterval];
    window.setTimeout = (fn, ms, ...args) => {
      const id = setT((...a) => {
        timers.delete(id);
        return typeof fn === "function" ? fn(...a) : undefined;
      }, ms, ...args);
      timers.add(id);
      return id;
    };
    window.clearTimeout = (id) => {
      timers.delete(id);
      clearT(id);
    };
    window.setInterval = (...a) => {
      const id = setI(...a);
      timers.add(id);
      return id;
    };
    window.clearInterval = (id) => {
      timers.delete(id);
      clearI(id);
    };
    window.__leaks = () => {
      const live = [];
      for (const [target, perTarget] of listeners) {
        const connected = target === window || target === document || target instanceof Node && target.isConnected;
        const name = target === window ? "window" : target === document ? "document" : target.nodeName || String(target);
        if (connected) for (const [key, set] of perTarget) for (let i = 0; i < set.size; i++) live.push(`${name} ${key}`);
      }
      return { listeners: live.sort(), timers: timers.size };
    };
  });
  let open = 0;
  page.on("request", () => (open += 1));
  page.on("requestfinished", () => (open -= 1));
  page.on("requestfailed", () => (open -= 1));
  return async () => ({ ...(await page.evaluate(() => window.__leaks())), requests: open });
}

test("destroy() leaves no listener, timer or open request behind, over 100 mounts of the handle and of <confab-chat>", { timeout: 180000 }, async (t) => {
  const { page, context, errors } = await openPage(t, browser);
  const leaks = await watchLeaks(context, page);
  await page.goto(stack.hosts.url + "/npm-app/");
  await page.locator("#help textarea").waitFor(WAIT);
  // An answer and one cycle of each first: what is installed once per page (the listeners that
  // wake answers when the browser is back online) is the baseline.
  await askIn(page, "#help", "Warm-up");
  const cycle = (times, how) => page.evaluate(async ({ times, how }) => {
    const { mount, relay, site } = window.app;
    for (let i = 0; i < times; i++) {
      const host = document.createElement("div");
      host.style.height = "400px";
      document.body.append(host);
      if (how === "handle") {
        const chat = mount(host, { relay, site, name: "cycle" });
        await chat.ready;
        chat.on("message", () => {});
        chat.destroy();
        if (host.shadowRoot.children.length) throw new Error("destroy() left the chat on the page");
        host.remove();
      } else {
        const element = document.createElement("confab-chat");
        element.setAttribute("relay", relay);
        element.setAttribute("site", site);
        element.setAttribute("name", "cycle");
        host.append(element);
        await element.chat.ready;
        host.remove();
        if (element.shadowRoot.children.length) throw new Error("removing <confab-chat> left the chat in it");
      }
    }
  }, { times, how });
  await cycle(1, "handle");
  await cycle(1, "element");
  const settle = async () => {
    await page.waitForTimeout(300);
    return until(async () => {
      const now = await leaks();
      return now.requests === 0 && now;
    }, 10000, "no open request");
  };
  const baseline = await settle();
  await cycle(100, "handle");
  await cycle(100, "element");
  const after100 = await settle();
  assert.deepEqual(after100, baseline, `after 200 mounts: ${JSON.stringify(after100)}; after 2: ${JSON.stringify(baseline)}`);
  // Nothing of the removed chats stays in the DOM.
  assert.equal(await page.evaluate(() => document.querySelectorAll("confab-chat").length), 0);

  // Destroyed in the middle of an answer: the stream is closed and the generation cancelled on
  // the relay; what comes back late touches nothing.
  const before = stack.mock.cancellations.length;
  await page.evaluate(async () => {
    const { mount, relay, site } = window.app;
    const host = document.createElement("div");
    host.style.height = "400px";
    document.body.append(host);
    const chat = mount(host, { relay, site, name: "slow" });
    await chat.ready;
    chat.send("SLOW answer to destroy");
    const shadow = host.shadowRoot;
    await new Promise((resolve) => {
      const seen = () => shadow.querySelector("li.assistant:not(.greeting)")?.textContent.includes("tick2") ? resolve() : setTimeout(seen, 50);
      seen();
    });
    chat.destroy();
    host.remove();
  });
  await until(() => stack.mock.cancellations.length > before, 10000, "the upstream's generation to stop");
  // Destroyed by the page's own `message` listener, and an element given its relay after it
  // was placed: the module carries on (a panic in it would stop every chat on the page).
  const late = await page.evaluate(async () => {
    const { mount, relay, site } = window.app;
    const host = document.createElement("div");
    document.body.append(host);
    const chat = mount(host, { relay, site, name: "listener" });
    await chat.ready;
    const heard = new Promise((resolve) => chat.on("message", (text) => {
      chat.destroy();
      host.remove();
      resolve(text);
    }));
    chat.send("Destroy me when you answer");
    await heard;
    const element = document.createElement("confab-chat");
    element.setAttribute("name", "late");
    document.body.append(element);
    element.setAttribute("relay", relay);
    element.setAttribute("site", site);
    await element.chat.ready;
    const drawn = !!element.shadowRoot.querySelector("textarea");
    element.remove();
    return drawn;
  });
  assert.equal(late, true, "the element mounts once it has its relay and site");
  // Placed without them, it said so (twice: placed, then given its relay alone).
  const said = errors.splice(0).filter((e) => !/needs relay and site attributes/.test(e));
  assert.deepEqual(said, []);
  const afterStream = await settle();
  assert.deepEqual(afterStream, baseline);
  // The app's own chat still works after all that.
  await askIn(page, "#help", "Still there?");
  assert.deepEqual(errors, []);
});
