// Conversations kept on the relay (issue 14), in headless Chromium on the plain test page,
// against the real relay in front of the scripted mock upstream: a site without transcripts
// sends what it always did; with transcripts and hand-off on, the visitor sees the notice, rates
// an answer with a comment, asks for a person, hears the person's replies live (after a reload
// too), talks to them without the model seeing it, and is answered by the bot again once the
// person hands back. What the relay stored is read through the admin API.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { WAIT, until, artifacts, lastAnswer, launchBrowser, openPage, startStack } from "./harness.mjs";
import { ANSWER_END, answerTo } from "./mock-upstream.mjs";

const ADMIN_TOKEN = "e2e-admin-token-for-the-conversations-test";
const NOTICE = "This conversation is recorded to help us improve our answers.";

let stack, browser;
before(async () => {
  stack = await startStack({ CONFAB_ADMIN_TOKEN: ADMIN_TOKEN });
  browser = await launchBrowser();
}, { timeout: 60000 });
after(async () => {
  await browser?.close();
  await stack?.close();
});

const BOUND = { timeout: 90000 };
const W = (selector) => `[data-confab] ${selector}`;

/** An admin API call on the relay the page uses: its JSON answer (throws on a failure). */
async function admin(method, path, body) {
  const response = await fetch(stack.relay.url + path, {
    method,
    headers: {
      authorization: `Bearer ${ADMIN_TOKEN}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}


/** The plain test page with the panel open; the widget's requests to the relay are recorded. */
async function visit(t) {
  const opened = await openPage(t, browser);
  const requests = [];
  opened.page.on("request", (request) => {
    if (request.url().startsWith(stack.relay.url + "/v1/")) requests.push(request);
  });
  await opened.page.goto(stack.hosts.url + "/plain.html");
  await openPanel(opened.page);
  return { ...opened, requests };
}

async function openPanel(page) {
  await page.locator(W("button.launcher")).click();
  await page.locator(W("textarea")).waitFor(WAIT);
}

/** Sends `text` from the input. */
async function say(page, text) {
  await page.locator(W("textarea")).fill(text);
  await page.locator(W("textarea")).press("Enter");
}

/** Asks `question` and waits for the mock's whole answer. */
async function ask(page, question) {
  await say(page, question);
  await lastAnswer(page).filter({ hasText: ANSWER_END }).waitFor(WAIT);
  await page.locator(W("button.send")).waitFor(WAIT);
  const shown = await lastAnswer(page).locator(".md").textContent();
  assert.equal(shown.replace(/[“”]/g, '"').trim(), answerTo(question));
}

/** What the widget keeps for the anonymous visitor of the e2e site: { messages, conversation }. */
const kept = (page) => page.evaluate((slot) => ({
  messages: JSON.parse(localStorage.getItem(slot) ?? "[]"),
  conversation: JSON.parse(localStorage.getItem(slot + "#conversation") ?? "null"),
}), `confab:v2:${stack.key}`);

const conversation = (id) => admin("GET", `/admin/v1/conversations/${id}`);
/** The conversation, or `null` while the relay has not written its first turn (it writes them
 * in batches, off the request path). */
async function written(id) {
  const response = await fetch(`${stack.relay.url}/admin/v1/conversations/${id}`,
    { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  if (response.status === 404) return null;
  const text = await response.text();
  assert.equal(response.status, 200, text);
  return JSON.parse(text);
}
const status = (page) => page.locator(W(".handoff .holder"));

test("a site without transcripts shows no notice and sends no conversation headers", BOUND, async (t) => {
  const { page, errors, requests } = await visit(t);
  await page.locator(W("li.greeting")).waitFor(WAIT);
  await ask(page, "Do you keep my messages?");
  assert.equal(await page.locator(W(".notice")).isVisible(), false);
  assert.equal(await page.locator(W(".handoff")).isVisible(), false);
  // No thumbs: the answer has no conversation to be rated in.
  assert.equal(await page.locator(W(".feedback button")).count(), 0);
  const chat = requests.find((r) => r.url().endsWith("/v1/chat/completions") && r.method() === "POST");
  const headers = await chat.allHeaders();
  assert.equal(headers["x-confab-conversation"], undefined);
  assert.equal(headers["x-confab-page"], undefined);
  assert.deepEqual((await kept(page)).conversation, null);
  assert.deepEqual(Object.keys((await kept(page)).messages[1]).sort(), ["content", "role"]);
  assert.deepEqual(errors, []);
});

test("feedback, a person's replies and the hand back, in a conversation the relay keeps", BOUND, async (t) => {
  await admin("PATCH", `/admin/v1/sites/${stack.site}/conversations`, { transcripts: true, handoff: true });
  const { page, errors, requests } = await visit(t);

  // The notice, in plain text, and the offer of a person.
  await page.locator(W(".notice"), { hasText: NOTICE }).waitFor(WAIT);
  await page.locator(W("button.ask-person"), { hasText: "Talk to a person" }).waitFor(WAIT);

  // The first question makes the conversation; the request names it and the page.
  const question = "What is your refund policy?";
  await ask(page, question);
  const id = (await kept(page)).conversation?.id;
  assert.match(id ?? "", /^c_[0-9a-f]{32}$/);
  const chat = requests.find((r) => r.url().endsWith("/v1/chat/completions") && r.method() === "POST");
  const headers = await chat.allHeaders();
  assert.equal(headers["x-confab-conversation"], id);
  assert.equal(headers["x-confab-page"], stack.hosts.url + "/plain.html");

  // Thumbs down, then a comment.
  const answer = lastAnswer(page);
  const up = answer.getByRole("button", { name: "Good answer" });
  const down = answer.getByRole("button", { name: "Bad answer" });
  await down.waitFor(WAIT);
  assert.equal(await up.getAttribute("aria-pressed"), "false");
  await down.click();
  // The row shows the verdict at the next frame.
  await answer.locator('button[aria-label="Bad answer"][aria-pressed="true"]').waitFor(WAIT);
  assert.equal(await up.getAttribute("aria-pressed"), "false");
  const comment = answer.getByRole("textbox", { name: "What was wrong? (optional)" });
  await comment.fill("Too vague about refunds");
  await answer.locator(".comment button[type=submit]").click();
  await answer.locator(".quiet", { hasText: "Thanks for your feedback." }).waitFor(WAIT);
  await page.screenshot({ path: join(artifacts, "conversations-feedback.png") });
  assert.equal(await comment.isVisible(), false);
  // The focus goes back to the thumb, not to the page.
  assert.equal(await page.evaluate(() =>
    document.querySelector("[data-confab]").shadowRoot.activeElement?.getAttribute("aria-label")), "Bad answer");
  const requestId = (await kept(page)).messages.find((m) => m.role === "assistant")?.request;
  assert.ok(requestId, "the answer's request id is kept with it");
  assert.equal((await kept(page)).messages.find((m) => m.request === requestId).rating, "down");
  const rated = await until(async () => {
    const shown = await written(id);
    return shown?.messages.find((m) => m.author === "bot" && m.rating === "down") && shown;
  }, 10000, "the relay to store the rated answer");
  const bot = rated.messages.find((m) => m.author === "bot");
  assert.equal(bot.request_id, requestId);
  assert.equal(bot.comment, "Too vague about refunds");
  assert.equal(bot.content.replace(/[“”]/g, '"'), answerTo(question));
  assert.ok(rated.messages.some((m) => m.author === "visitor" && m.content === question));

  // A message asking for a person makes the offer prominent; pressing it asks for one.
  await ask(page, "Can I talk to a human?");
  await page.locator(W("button.ask-person.suggested")).waitFor(WAIT);
  await page.locator(W("button.ask-person")).click();
  await status(page).filter({ hasText: "Waiting for a person…" }).waitFor(WAIT);
  assert.equal(await page.locator(W("button.ask-person")).isVisible(), false);
  assert.equal((await conversation(id)).holder, "waiting");
  // It names the page too: it may be what makes the conversation on the relay.
  const asked = requests.find((r) => r.url().endsWith(`/v1/conversations/${id}/handoff`));
  assert.equal((await asked.allHeaders())["x-confab-page"], stack.hosts.url + "/plain.html");

  // The person's reply arrives live, marked as a person's.
  await admin("POST", `/admin/v1/conversations/${id}/messages`, { content: "Hi, I am Ana" });
  const fromAna = page.locator(W("li.person"), { hasText: "Hi, I am Ana" });
  await fromAna.waitFor(WAIT);
  assert.equal(await fromAna.locator(".from").textContent(), "Person");
  await status(page).filter({ hasText: "You are chatting with a person" }).waitFor(WAIT);

  // What the visitor says now goes to the person, not to the model.
  const chats = stack.mock.chats().length;
  const toAna = "Can you check order 1234?";
  await say(page, toAna);
  await page.locator(W("li.user"), { hasText: toAna }).waitFor(WAIT);
  await until(async () => (await conversation(id)).messages.some((m) => m.author === "visitor" && m.content === toAna),
    10000, "the visitor's message to reach the conversation");
  assert.equal(stack.mock.chats().length, chats, "the model was not asked");
  assert.equal(await page.locator(W(".error")).count(), 0);

  // After a reload the person's messages and the holder are still there, and replies still come.
  await page.reload();
  await openPanel(page);
  await page.locator(W("li.person"), { hasText: "Hi, I am Ana" }).waitFor(WAIT);
  await status(page).filter({ hasText: "You are chatting with a person" }).waitFor(WAIT);
  await admin("POST", `/admin/v1/conversations/${id}/messages`, { content: "Order 1234 ships today." });
  await page.locator(W("li.person"), { hasText: "Order 1234 ships today." }).waitFor(WAIT);
  assert.equal(await page.locator(W("li.person"), { hasText: "Hi, I am Ana" }).count(), 1, "no reply is shown twice");
  await page.evaluate(() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done))));
  await page.screenshot({ path: join(artifacts, "conversations-with-a-person.png") });
  const stored = (await kept(page)).messages.filter((m) => m.person).map((m) => m.content);
  assert.deepEqual(stored, ["Hi, I am Ana", "Order 1234 ships today."]);

  // The person hands back: the bot answers again.
  await admin("POST", `/admin/v1/conversations/${id}/release`);
  await page.locator(W("button.ask-person")).waitFor(WAIT);
  assert.equal((await status(page).textContent()).trim(), "");
  await ask(page, "And the shipping times?");
  assert.equal(stack.mock.chats().length, chats + 1);
  assert.equal((await kept(page)).conversation.holder, "bot");
  assert.deepEqual(errors, []);
});

test("a person's reply to a closed panel counts on the launcher until the visitor opens it", BOUND, async (t) => {
  await admin("PATCH", `/admin/v1/sites/${stack.site}/conversations`, { transcripts: true, handoff: true });
  const { page, errors } = await visit(t);
  await ask(page, "Is anyone there?");
  await page.locator(W("button.ask-person")).click();
  await status(page).filter({ hasText: "Waiting for a person…" }).waitFor(WAIT);
  const id = (await kept(page)).conversation.id;

  // The visitor closes the panel and goes on reading the page; the widget still listens.
  const launcher = page.locator(W("button.launcher"));
  await page.locator(W("button.close")).click();
  await page.locator(W(".panel")).waitFor({ state: "hidden", ...WAIT });
  assert.equal(await page.locator(W(".unread")).count(), 0);
  await admin("POST", `/admin/v1/conversations/${id}/messages`, { content: "Hello, I am Sam." });
  await page.locator(W(".unread"), { hasText: /^1$/ }).waitFor(WAIT);
  assert.equal(await launcher.getAttribute("aria-label"), "Open chat (1 new message from a person)");
  await admin("POST", `/admin/v1/conversations/${id}/messages`, { content: "How can I help?" });
  await page.locator(W(".unread"), { hasText: /^2$/ }).waitFor(WAIT);
  assert.equal(await launcher.getAttribute("aria-label"), "Open chat (2 new messages from a person)");
  await page.screenshot({ path: join(artifacts, "conversations-unread.png") });

  // Opened, the replies are there and the count is gone.
  await launcher.click();
  await page.locator(W("li.person"), { hasText: "How can I help?" }).waitFor(WAIT);
  assert.equal(await page.locator(W("li.person")).count(), 2);
  assert.equal(await page.locator(W(".unread")).count(), 0);
  assert.equal(await launcher.getAttribute("aria-label"), "Close chat");
  await admin("POST", `/admin/v1/conversations/${id}/release`);
  assert.deepEqual(errors, []);
});
