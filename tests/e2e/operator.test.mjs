// The whole support loop of issue 14 in one story, in headless Chromium against the real relay
// (in front of the scripted mock upstream, with prices) and the built console and widget: an
// operator logs in to the console, creates a site for a shop's origin and turns transcripts and
// the hand-off on; the shop pastes the console's snippet into its page (another origin); a
// visitor chats there, rates the answer and asks for a person; the operator finds the
// conversation, answers as a person, and the reply arrives live in the visitor's widget; the
// operator sees the visitor's answer, the feedback and the cost, and hands back to the bot. The
// hand-off webhook's link opens the conversation read-only in the console, without a login.
// Screenshots land in artifacts/operator-*.png.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { WAIT, artifacts, lastAnswer, launchBrowser, root, startStack, watchErrors } from "./harness.mjs";
import { ANSWER_END, MODEL, answerTo } from "./mock-upstream.mjs";

const TOKEN = "operator-e2e-admin-token-0123456789abcdef";
// Dear enough that one short answer costs whole cents.
const INPUT_PER_MILLION = 3_000_000_000;
const OUTPUT_PER_MILLION = 6_000_000_000;

let stack, browser, hook;
before(async () => {
  // The team's webhook receiver, on 127.0.0.1: what it is sent, parsed.
  hook = { events: [] };
  hook.server = createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (d) => (body += d));
    req.on("end", () => {
      hook.events.push(JSON.parse(body));
      res.writeHead(200).end();
    });
  });
  await new Promise((resolve) => hook.server.listen(0, "127.0.0.1", resolve));
  stack = await startStack(
    {
      CONFAB_ADMIN_TOKEN: TOKEN,
      CONFAB__ADMIN__CONSOLE_DIR: join(root, "dist", "console"),
      CONFAB_E2E_HOOK_SECRET: "operator-e2e-webhook-secret-0123",
    },
    [
      `[prices."${MODEL}"]`,
      `input_per_million = ${INPUT_PER_MILLION}`,
      `output_per_million = ${OUTPUT_PER_MILLION}`,
      "[webhooks]",
      "poll_ms = 100",
      "[[webhooks.endpoints]]",
      `url = "http://127.0.0.1:${hook.server.address().port}/hook"`,
      'secret_env = "CONFAB_E2E_HOOK_SECRET"',
      'events = ["conversation.handoff"]',
    ],
  );
  browser = await launchBrowser();
}, { timeout: 60000 });
after(async () => {
  await browser?.close();
  await stack?.close();
  await new Promise((resolve) => hook?.server.close(resolve));
});

/** An admin API call with the bearer token: the parsed body (throws on a failure). */
async function admin(method, path) {
  const response = await fetch(stack.relay.url + path, { method, headers: { authorization: `Bearer ${TOKEN}` } });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

/** Polls `fn` until it returns something truthy, for at most 10 s. */
async function until(fn, what) {
  const end = Date.now() + 10000;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** The console's rendering of a cost (console/src/format.rs `dollars`, for a cent or more). */
const dollars = (micros) => {
  const cents = Math.floor((micros + 5000) / 10000);
  return `$${Math.floor(cents / 100).toLocaleString("en-US")}.${String(cents % 100).padStart(2, "0")}`;
};

async function newPage(viewport) {
  const context = await browser.newContext({ viewport });
  context.setDefaultTimeout(15000);
  const page = await context.newPage();
  return { context, page, errors: watchErrors(page) };
}

const W = (selector) => `[data-confab] ${selector}`;

test("an operator sets a site up in the console, and answers its visitor as a person", { timeout: 120000 }, async (t) => {
  const operator = await newPage({ width: 1100, height: 900 });
  const visitor = await newPage({ width: 1000, height: 800 });
  t.after(async () => {
    await operator.page.screenshot({ path: join(artifacts, "operator-console-end.png") }).catch(() => {});
    await visitor.page.screenshot({ path: join(artifacts, "operator-visitor-end.png") }).catch(() => {});
    await operator.context.close();
    await visitor.context.close();
  });
  const console_ = operator.page;
  const shop = visitor.page;
  const violations = [];
  await console_.exposeFunction("__cspViolation", (v) => violations.push(v));
  await console_.addInitScript(() => document.addEventListener("securitypolicyviolation",
    (e) => window.__cspViolation(`${e.violatedDirective} ${e.blockedURI}`)));

  // 1. The operator logs in and creates the shop's site.
  await console_.goto(stack.relay.url + "/console/");
  await console_.getByLabel("Admin token").fill(TOKEN);
  await console_.getByRole("button", { name: "Log in" }).click();
  await console_.getByRole("heading", { name: "Overview", level: 1 }).waitFor(WAIT);
  await console_.getByRole("link", { name: "Sites" }).click();
  await console_.getByRole("heading", { name: "Sites", level: 1 }).waitFor(WAIT);
  await console_.getByLabel("Name", { exact: true }).fill("Corner Shop");
  await console_.getByLabel("Origin", { exact: true }).fill(stack.hosts.url);
  await console_.getByRole("button", { name: "Create site" }).click();
  const snippetCode = console_.locator("[data-snippet]", { hasText: "confab_pk_" });
  await snippetCode.waitFor(WAIT);
  const snippet = (await snippetCode.textContent()).trim();
  const key = snippet.match(/data-site="(confab_pk_[^"]+)"/)?.[1];
  assert.ok(key, `a site key in the snippet: ${snippet}`);
  const site = console_.locator("[data-site]").filter({ has: snippetCode });
  const siteId = await site.getAttribute("data-site");
  // Transcripts and the hand-off, on.
  await site.getByLabel("Keep transcripts").check();
  await site.getByLabel("Visitors can ask for a person").check();
  await site.getByRole("button", { name: "Save settings" }).click();
  await site.getByText("Saved.").waitFor(WAIT);
  const saved = await admin("GET", `/admin/v1/sites/${siteId}`);
  assert.deepEqual(saved.origins, [stack.hosts.url]);
  assert.equal(saved.conversations.transcripts, true);
  assert.equal(saved.conversations.handoff, true);
  await console_.screenshot({ path: join(artifacts, "operator-site.png"), fullPage: true });

  // 2. The shop pastes the snippet into its page, on its own origin.
  stack.hosts.vars.SNIPPET = snippet;
  await shop.goto(stack.hosts.url + "/snippet.html");
  await shop.locator(W("button.launcher")).click();
  await shop.locator(W(".notice")).waitFor(WAIT);

  // 3. A visitor asks, rates the answer down with a comment, and asks for a person.
  const question = "Where is my order 4411?";
  await shop.locator(W("textarea")).fill(question);
  await shop.locator(W("textarea")).press("Enter");
  await lastAnswer(shop).filter({ hasText: ANSWER_END }).waitFor(WAIT);
  assert.equal((await lastAnswer(shop).locator(".md").textContent()).replace(/[“”]/g, '"').trim(), answerTo(question));
  await lastAnswer(shop).getByRole("button", { name: "Bad answer" }).click();
  await lastAnswer(shop).getByRole("textbox", { name: "What was wrong? (optional)" }).fill("It did not know my order");
  await lastAnswer(shop).locator(".comment button[type=submit]").click();
  await lastAnswer(shop).locator(".quiet", { hasText: "Thanks for your feedback." }).waitFor(WAIT);
  await shop.locator(W("button.ask-person")).click();
  await shop.locator(W(".handoff .holder"), { hasText: "Waiting for a person…" }).waitFor(WAIT);
  const conversation = await shop.evaluate((slot) => JSON.parse(localStorage.getItem(slot))?.id,
    `confab:v2:${key}#conversation`);
  assert.match(conversation ?? "", /^c_[0-9a-f]{32}$/);
  // The relay writes turns and feedback off the request path: wait until it has both.
  const stored = await until(async () => {
    const c = await admin("GET", `/admin/v1/conversations/${conversation}`).catch(() => null);
    return c?.holder === "waiting" && c.messages?.some((m) => m.rating === "down") && c.cost_micros > 0 && c;
  }, "the conversation, its feedback and its cost to be stored");
  assert.equal(stored.site_id, siteId);
  assert.equal(stored.page_url, stack.hosts.url + "/snippet.html");

  // The team hears of it: the hand-off webhook's link opens the conversation in the console,
  // read-only, for someone who is not logged in.
  const handoff = await until(() => hook.events.find((e) => e.type === "conversation.handoff"
    && e.data.conversation_id === conversation), "the hand-off webhook");
  assert.match(handoff.data.link, new RegExp(`^/console/#/shared/${conversation}\\?expires=\\d+&sig=[0-9a-f]+$`));
  const colleague = await newPage({ width: 1000, height: 800 });
  t.after(() => colleague.context.close());
  await colleague.page.goto(stack.relay.url + handoff.data.link);
  await colleague.page.getByRole("heading", { name: "Conversation", level: 1 }).waitFor(WAIT);
  await colleague.page.locator(".transcript li.visitor", { hasText: question }).waitFor(WAIT);
  assert.equal(await colleague.page.locator("[data-holder]").getAttribute("data-holder"), "waiting");
  assert.equal(await colleague.page.getByLabel("Admin token").count(), 0);
  assert.equal(await colleague.page.getByLabel("Reply as a person").count(), 0);
  await colleague.page.screenshot({ path: join(artifacts, "operator-shared-link.png") });
  // A tampered link shows the relay's refusal instead.
  await colleague.page.goto(stack.relay.url + handoff.data.link.replace(/sig=(.)/, (_, c) => `sig=${c === "0" ? "1" : "0"}`));
  await colleague.page.locator("[role=alert]", { hasText: "not valid or has expired" }).waitFor(WAIT);

  // 4. The operator finds it among the conversations waiting for a person, and opens it.
  await console_.getByRole("link", { name: "Conversations" }).click();
  await console_.getByRole("heading", { name: "Conversations", level: 1 }).waitFor(WAIT);
  await console_.getByLabel("Holder").selectOption("waiting");
  await console_.getByRole("button", { name: "Search" }).click();
  const card = console_.locator(`[data-conversation="${conversation}"]`).filter({ hasText: "Corner Shop" });
  await card.waitFor(WAIT);
  assert.match(await card.textContent(), /Corner Shop.*Waiting for a person.*down 1/s);
  await console_.screenshot({ path: join(artifacts, "operator-conversations.png"), fullPage: true });
  await card.getByRole("link").click();
  await console_.getByRole("heading", { name: "Conversation", level: 1 }).waitFor(WAIT);
  const transcript = console_.locator(".transcript li");
  await transcript.nth(1).waitFor(WAIT);
  assert.match(await transcript.nth(0).textContent(), /^Visitor.*Where is my order 4411\?/s);
  assert.match(await transcript.nth(1).locator(".feedback").textContent(), /Rated down.*It did not know my order/s);
  // Its cost, as the relay recorded it at the model's price.
  const cost = console_.locator("dt", { hasText: /^Cost$/ }).locator("xpath=following-sibling::dd[1]");
  assert.equal((await cost.textContent()).trim(), dollars(stored.cost_micros));
  assert.ok(stored.cost_micros >= 10 * INPUT_PER_MILLION / 1e6, `a cost of at least the prompt: ${stored.cost_micros}`);

  // 5. The operator answers as a person: the reply arrives live in the visitor's open widget.
  await console_.getByLabel("Reply as a person").fill("Ana here: order 4411 ships today.");
  await console_.getByRole("button", { name: "Send reply" }).click();
  const reply = shop.locator(W("li.person"), { hasText: "Ana here: order 4411 ships today." });
  await reply.waitFor(WAIT);
  assert.equal(await reply.locator(".from").textContent(), "Person");
  await shop.locator(W(".handoff .holder"), { hasText: "You are chatting with a person" }).waitFor(WAIT);
  await shop.screenshot({ path: join(artifacts, "operator-visitor-reply.png") });

  // 6. The visitor answers; the operator's open transcript shows it, and the model is not asked.
  const chats = stack.mock.chats().length;
  await shop.locator(W("textarea")).fill("Great, thank you!");
  await shop.locator(W("textarea")).press("Enter");
  await console_.locator(".transcript li.visitor", { hasText: "Great, thank you!" }).waitFor(WAIT);
  assert.equal(stack.mock.chats().length, chats);
  await console_.screenshot({ path: join(artifacts, "operator-transcript.png"), fullPage: true });

  // 7. The operator hands back: the visitor is offered a person again and the bot answers.
  await console_.getByRole("button", { name: "Hand back to the bot" }).click();
  await console_.locator("[data-holder=bot]").waitFor(WAIT);
  await shop.locator(W("button.ask-person")).waitFor(WAIT);
  await shop.locator(W("textarea")).fill("And the shipping times?");
  await shop.locator(W("textarea")).press("Enter");
  await lastAnswer(shop).filter({ hasText: ANSWER_END }).waitFor(WAIT);
  assert.equal(stack.mock.chats().length, chats + 1);
  // Everything said is on the relay, in order, each under its author.
  const authors = ["visitor", "bot", "operator", "visitor", "visitor", "bot"];
  const final = await until(async () => {
    const c = await admin("GET", `/admin/v1/conversations/${conversation}`);
    return c.messages.length === authors.length && c;
  }, "the last turn to be stored");
  assert.deepEqual(final.messages.map((m) => m.author), authors);
  assert.equal(final.holder, "bot");

  assert.deepEqual(violations, []);
  // The console asks for its session once before the login: that 401 is the only failed load.
  assert.deepEqual(operator.errors.filter((e) => !/status of 401/.test(e)), []);
  assert.ok(operator.errors.length <= 1, operator.errors.join("\n"));
  assert.deepEqual(visitor.errors, []);
});
