// The widget on the demo page, in headless Chromium, against a real relay (demo upstream); and
// visitor identities (Confab.identify, Confab.reset) on the members' test page, against a relay
// in front of the scripted mock upstream, whose recorded requests show what the widget sent.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { WAIT, holdModule, lastAnswer, launchBrowser, openPage as open, recordAnswerLengths, startRelay, startStack, visitorToken } from "./harness.mjs";
import { ANSWER_END, answerTo } from "./mock-upstream.mjs";

let relay, stack, browser;
before(async () => {
  relay = await startRelay();
  stack = await startStack();
  browser = await launchBrowser();
}, { timeout: 60000 });
after(async () => {
  await browser?.close();
  await stack?.close();
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

// ---------------------------------------------------------------------------------------------
// Visitor identities: the members' page (www/test/verified.html) signs alice in through its tag.

const BOUND = { timeout: 60000 };
const W = (selector) => `[data-confab] ${selector}`;

/** Polls `fn` until it returns something truthy, for at most `ms`. */
async function until(fn, ms = 5000, what = "condition") {
  const end = Date.now() + ms;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

async function members(t) {
  const opened = await openPage(t);
  await opened.page.goto(stack.hosts.url + "/verified.html");
  await openPanel(opened.page);
  return opened;
}

async function openPanel(page) {
  await page.locator(W("button.launcher")).click();
  await page.locator(W("textarea")).waitFor(WAIT);
}

/** Asks `question` and waits for the mock's whole answer. */
async function ask(page, question) {
  await page.locator(W("textarea")).fill(question);
  await page.locator(W("textarea")).press("Enter");
  await lastAnswer(page).filter({ hasText: ANSWER_END }).waitFor(WAIT);
  await page.locator(W("button.send")).waitFor(WAIT);
  assert.equal((await lastAnswer(page).textContent()).replace(/[“”]/g, '"').trim(), answerTo(question));
}

const shownQuestions = (page) => page.locator(W("li.user")).allTextContents();
const shownAnswers = (page) => page.locator(W("li.assistant:not(.greeting)")).count();
/** The conversations stored for the members' site: { key: JSON text }. */
const stored = (page) => page.evaluate((site) => Object.fromEntries(Object.keys(localStorage)
  .filter((k) => k.startsWith(`confab:v2:${site}`)).map((k) => [k, localStorage.getItem(k)])), stack.hosts.vars.VERIFIED_KEY);
/** What the upstream was last asked, without the site's system prompt. */
const lastForwarded = () => stack.mock.chats().at(-1).body.messages.filter((m) => m.role !== "system");
const identifyAs = (page, user) =>
  page.evaluate((token) => window.Confab.identify(token), visitorToken(stack.visitorSecret, user));

test("after Confab.identify with another user, the previous user's messages are neither shown nor sent", BOUND, async (t) => {
  const { page, errors } = await members(t);
  const alices = "What did alice order last week?";
  await ask(page, alices);
  const afterAlice = await stored(page);
  const aliceKey = Object.keys(afterAlice).find((k) => afterAlice[k].includes(alices));
  assert.match(aliceKey ?? "", new RegExp(`^confab:v2:${stack.hosts.vars.VERIFIED_KEY}:[0-9a-z]+$`),
    `alice's conversation is stored under her own key: ${JSON.stringify(afterAlice)}`);
  assert.ok(!aliceKey.includes("alice") && !Object.keys(afterAlice).some((k) => k.includes("hmac")), "no user id or token in the key");

  await identifyAs(page, "bob@example.com");
  await until(async () => (await shownQuestions(page)).length === 0 && (await shownAnswers(page)) === 0, 5000, "the panel to empty");
  const bobs = "Hello, I am bob";
  await ask(page, bobs);
  assert.deepEqual(await shownQuestions(page), [bobs]);
  assert.deepEqual(lastForwarded(), [{ role: "user", content: bobs }]);
  const afterBob = await stored(page);
  assert.equal(Object.keys(afterBob).length, 2, JSON.stringify(afterBob));
  assert.ok(!afterBob[aliceKey].includes(bobs), "bob's messages are not in alice's conversation");

  // Alice signs in again: her own conversation comes back, and only hers.
  await identifyAs(page, "alice@example.com");
  await page.locator(W("li.user"), { hasText: alices }).waitFor(WAIT);
  assert.deepEqual(await shownQuestions(page), [alices]);
  assert.deepEqual(errors, []);
});

test("identifying another user mid-answer aborts the answer and shows none of it", BOUND, async (t) => {
  const { page, errors } = await members(t);
  const cancelled = stack.mock.cancellations.length;
  await page.locator(W("textarea")).fill("SLOW answer for alice");
  await page.locator(W("textarea")).press("Enter");
  await lastAnswer(page).filter({ hasText: "tick1" }).waitFor(WAIT);
  await identifyAs(page, "carol@example.com");
  await until(() => stack.mock.cancellations.length > cancelled, 5000, "the upstream to see the cancellation");
  await until(async () => (await shownQuestions(page)).length === 0 && (await shownAnswers(page)) === 0, 5000, "the panel to empty");
  // Nothing of it comes back: no error about the aborted answer, and the send button is back.
  await page.locator(W("button.send")).waitFor(WAIT);
  await sleep(300);
  assert.equal(await page.locator(W(".error")).count(), 0);
  assert.equal(await shownAnswers(page), 0);
  const carols = "Hi from carol";
  await ask(page, carols);
  assert.deepEqual(lastForwarded(), [{ role: "user", content: carols }]);
  assert.deepEqual(errors, []);
});

test("Confab.reset() empties the panel and the stored conversation", BOUND, async (t) => {
  const { page, errors } = await members(t);
  const question = "Remember me until I sign out";
  await ask(page, question);
  assert.equal(Object.keys(await stored(page)).length, 1);
  await page.evaluate(() => window.Confab.reset());
  await until(async () => (await shownQuestions(page)).length === 0 && (await shownAnswers(page)) === 0, 5000, "the panel to empty");
  assert.deepEqual(await stored(page), {});
  // The signed-out visitor's next question goes without the conversation and without a token
  // (this site requires one, so it is refused).
  const before = stack.mock.chats().length;
  await page.locator(W("textarea")).fill("Anyone there?");
  await page.locator(W("textarea")).press("Enter");
  await page.locator(W(".error"), { hasText: "Please sign in to chat with us." }).waitFor(WAIT);
  assert.equal(stack.mock.chats().length, before);
  // Signed in again (the page is reloaded with alice's token), the conversation stays gone.
  await page.reload();
  await openPanel(page);
  await page.locator(W("li.greeting")).waitFor(WAIT);
  assert.deepEqual(await shownQuestions(page), []);
  assert.deepEqual(errors.filter((e) => !/status of 401/.test(e)), []);
});

test("Confab.reset() before the module has loaded still forgets the stored conversation", BOUND, async (t) => {
  const { page, errors } = await members(t);
  await ask(page, "Something to forget");
  const release = await holdModule(page);
  await page.reload();
  await page.waitForFunction(() => window.Confab, null, WAIT);
  assert.equal(Object.keys(await stored(page)).length, 1);
  await page.evaluate(() => window.Confab.reset());
  assert.deepEqual(await stored(page), {});
  release();
  await openPanel(page);
  await page.locator(W("li.greeting")).waitFor(WAIT);
  assert.deepEqual(await shownQuestions(page), []);
  assert.deepEqual(errors, []);
});
