// The widget on the demo page, in headless Chromium, against a real relay (demo upstream).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { WAIT, holdModule, lastAnswer, launchBrowser, openPage as open, recordAnswerLengths, startRelay } from "./harness.mjs";

let relay, browser;
before(async () => {
  relay = await startRelay();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await relay?.close();
});

const openPage = (t) => open(t, browser);

test("the launcher is drawn before the widget module is loaded", async (t) => {
  const { page, errors } = await openPage(t);
  const release = await holdModule(page);
  await page.goto(relay.url + "/");
  const launcher = page.locator("[data-confab] button.launcher");
  await launcher.waitFor(WAIT);
  assert.equal(await launcher.getAttribute("aria-label"), "Open chat");
  // The module is still held back, so no panel can exist yet.
  assert.equal(await page.locator("[data-confab] .panel").count(), 0);
  release();
  await launcher.click();
  await page.locator("[data-confab] .panel").waitFor(WAIT);
  assert.deepEqual(errors, []);
});

test("the panel opens with the site's greeting and suggested questions", async (t) => {
  const { page, errors } = await openPage(t);
  await page.goto(relay.url + "/");
  await page.locator("[data-confab] button.launcher").click();
  const panel = page.locator("[data-confab] [role=dialog]");
  await panel.waitFor(WAIT);
  assert.equal(await panel.getAttribute("aria-label"), "Confab demo");
  await page.locator("[data-confab] li.greeting", { hasText: "I'm the Confab demo" }).waitFor(WAIT);
  const suggestions = page.locator("[data-confab] .suggestions button");
  await suggestions.first().waitFor(WAIT);
  assert.deepEqual(await suggestions.allTextContents(), [
    "What is Confab?",
    "How do I add you to my site?",
  ]);
  await suggestions.first().click();
  await lastAnswer(page).filter({ hasText: "“What is Confab?”" }).waitFor(WAIT);
  assert.deepEqual(errors, []);
});

test("an answer streams in token by token", async (t) => {
  const { page, errors } = await openPage(t);
  await page.goto(relay.url + "/");
  await page.locator("[data-confab] button.launcher").click();
  const input = page.locator("[data-confab] textarea");
  await input.waitFor(WAIT);
  // Record every length the answer takes while it streams.
  const recorder = await recordAnswerLengths(page);
  await input.type("How fast are you?");
  await page.keyboard.press("Enter");
  await lastAnswer(page).filter({ hasText: "restart the relay." }).waitFor(WAIT);
  const lengths = await recorder.lengths();
  assert.ok(lengths.length > 20, `the answer arrived in ${lengths.length} steps`);
  assert.ok(lengths.every((n, i) => i === 0 || n >= lengths[i - 1]), "text only grows");
  assert.match(await lastAnswer(page).textContent(), /You asked: “How fast are you\?”/);
  await page.locator("[data-confab] button.send").waitFor(WAIT);
  assert.deepEqual(errors, []);
});

test("stop ends the answer where it is", async (t) => {
  const { page, errors } = await openPage(t);
  await page.goto(relay.url + "/");
  await page.locator("[data-confab] button.launcher").click();
  await page.locator("[data-confab] textarea").fill("Tell me everything");
  await page.keyboard.press("Enter");
  await lastAnswer(page).filter({ hasText: "demo upstream" }).waitFor(WAIT);
  await page.locator("[data-confab] button.stop").click();
  await page.locator("[data-confab] .error", { hasText: "Stopped." }).waitFor(WAIT);
  await page.locator("[data-confab] button.send").waitFor(WAIT);
  const text = await lastAnswer(page).textContent();
  assert.ok(!text.includes("restart the relay."), `the answer went on: ${text}`);
  assert.deepEqual(errors, []);
});

test("Enter sends and Shift+Enter breaks the line", async (t) => {
  const { page, errors } = await openPage(t);
  await page.goto(relay.url + "/");
  await page.locator("[data-confab] button.launcher").focus();
  await page.keyboard.press("Enter");
  const input = page.locator("[data-confab] textarea");
  await input.waitFor(WAIT);
  await input.focus();
  await page.keyboard.type("first line");
  await page.keyboard.press("Shift+Enter");
  await page.keyboard.type("second line");
  assert.equal(await input.inputValue(), "first line\nsecond line");
  await page.keyboard.press("Enter");
  await page.locator("[data-confab] li.user", { hasText: "second line" }).waitFor(WAIT);
  assert.equal(await input.inputValue(), "");
  assert.deepEqual(errors, []);
});

test("front-end code can drive the widget through window.Confab", async (t) => {
  const { page, errors } = await openPage(t);
  await page.goto(relay.url + "/");
  await page.waitForFunction(() => window.Confab, null, WAIT);
  const answer = await page.evaluate(
    () =>
      new Promise((resolve) => {
        const events = [];
        window.Confab.on("open", () => events.push("open"));
        window.Confab.on("message", (text) => resolve({ events, text }));
        window.Confab.send("Hello from script");
      }),
  );
  assert.deepEqual(answer.events, ["open"]);
  assert.match(answer.text, /You asked: “Hello from script”/);
  assert.deepEqual(Object.keys(window_globals_of(await page.evaluate(() => Object.keys(window)))), []);
  assert.deepEqual(errors, []);
});

/** Globals the widget added to the page, besides window.Confab. */
function window_globals_of(keys) {
  const allowed = new Set(["Confab"]);
  return Object.fromEntries(keys.filter((k) => /confab|wasm/i.test(k) && !allowed.has(k)).map((k) => [k, true]));
}
