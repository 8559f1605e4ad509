// The operator's console (dist/console, served by the relay at /console/ under its strict CSP),
// in headless Chromium against a real relay (demo upstream) with an admin token: logging in
// (a wrong token first), every page, and a conversation handed to a person end to end: found,
// opened, answered (the reply reaches the transcript), refreshed while held, handed back.
// Then every setting of a site and a key edited through the console's forms (checked through
// the admin API), the widget's live preview, copying the snippet, and deleting a conversation
// and a visitor's data. Screenshots of every page land in artifacts/console-<page>.png.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { WAIT, artifacts, launchBrowser, root, startRelay, watchErrors } from "./harness.mjs";

const TOKEN = "console-e2e-admin-token-0123456789abcdef";
let relay, browser, hook;
before(async () => {
  // A webhook receiver on 127.0.0.1 that fails until told otherwise.
  hook = { status: 500, received: 0 };
  hook.server = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      hook.received++;
      res.writeHead(hook.status).end();
    });
  });
  await new Promise((resolve) => hook.server.listen(0, "127.0.0.1", resolve));
  // The relay (demo upstream) in a temporary directory whose confab.toml names the receiver for
  // key.revoked, tried once; pointed at the built console (scripts/build-console).
  const dir = mkdtempSync(join(tmpdir(), "confab-e2e-console-"));
  writeFileSync(join(dir, "confab.toml"), [
    "[webhooks]",
    "max_attempts = 1",
    "poll_ms = 100",
    "[[webhooks.endpoints]]",
    `url = "http://127.0.0.1:${hook.server.address().port}/hook"`,
    'secret_env = "CONFAB_E2E_WEBHOOK_SECRET"',
    'events = ["key.revoked"]',
    "",
  ].join("\n"));
  relay = await startRelay({
    CONFAB_ADMIN_TOKEN: TOKEN,
    CONFAB_E2E_WEBHOOK_SECRET: "e2e-webhook-secret-0123456789",
    CONFAB__ADMIN__CONSOLE_DIR: join(root, "dist", "console"),
  }, dir);
  browser = await launchBrowser();
}, { timeout: 60000 });
after(async () => {
  await browser?.close();
  await relay?.close();
  await new Promise((resolve) => hook?.server.close(resolve));
});

/** Polls `fn` (async) every 50 ms until it returns something truthy, for at most 10 s. */
async function until(fn, what) {
  for (let i = 0; ; i++) {
    const value = await fn();
    if (value) return value;
    assert.ok(i < 200, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** An admin API call with the bearer token, as a script would make it; the parsed body. */
async function admin(method, path, body) {
  const response = await fetch(relay.url + path, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** An admin API call's status alone (for what must be gone: 404). */
async function adminStatus(method, path) {
  const response = await fetch(relay.url + path, { method, headers: { authorization: `Bearer ${TOKEN}` } });
  await response.arrayBuffer();
  return response.status;
}

/** A visitor's call with the site key from the relay's own origin, as the widget makes it. */
async function visitor(key, path, body, headers = {}) {
  const response = await fetch(relay.url + path, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, origin: relay.url, "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `POST ${path}: ${response.status} ${text}`);
  return { response, text };
}

/** A site that keeps transcripts and offers a person, with one conversation handed off. */
async function seedConversation() {
  const site = await admin("POST", "/admin/v1/sites", { name: "Corner Shop", origins: [relay.url] });
  await admin("PATCH", `/admin/v1/sites/${site.id}/conversations`, { transcripts: true, handoff: true });
  const conversation = "e2e_" + randomBytes(12).toString("hex");
  const { response } = await visitor(site.key, "/v1/chat/completions",
    { stream: true, messages: [{ role: "user", content: "Where is my order 4411?" }] },
    { "X-Confab-Conversation": conversation, "X-Confab-Page": relay.url + "/orders" });
  const requestId = response.headers.get("x-request-id");
  // The turn is recorded off the request path: wait until the relay lists it.
  for (let i = 0; ; i++) {
    const page = await admin("GET", `/admin/v1/conversations?site=${site.id}`);
    if (page.data.some((c) => c.id === conversation && c.messages_count >= 2)) break;
    assert.ok(i < 100, "the conversation was never recorded");
    await new Promise((r) => setTimeout(r, 50));
  }
  // So is its usage, in batches.
  for (let i = 0; (await admin("GET", "/admin/v1/usage?days=1")).totals.requests < 1; i++) {
    assert.ok(i < 200, "the request's usage was never recorded");
    await new Promise((r) => setTimeout(r, 50));
  }
  await visitor(site.key, "/v1/feedback",
    { conversation, message: requestId, rating: "down", comment: "It did not know my order" });
  await visitor(site.key, `/v1/conversations/${conversation}/handoff`, {});
  return { site, conversation };
}

const shot = (page, name) => page.screenshot({ path: join(artifacts, `console-${name}.png`), fullPage: true });

/** Every page fits the window's width: nothing scrolls sideways. */
async function assertFits(page, what) {
  const { scroll, width } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    width: window.innerWidth,
  }));
  assert.ok(scroll <= width, `${what}: ${scroll} px wide in a ${width} px window`);
}

async function logIn(page) {
  await page.goto(relay.url + "/console/");
  await page.getByLabel("Admin token").fill(TOKEN);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("button", { name: "Log out" }).waitFor(WAIT);
}

test("the console: log in, every page, a conversation answered by a person and handed back", { timeout: 120000 }, async (t) => {
  const { site, conversation } = await seedConversation();
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  context.setDefaultTimeout(15000);
  t.after(() => context.close());
  const page = await context.newPage();
  const errors = watchErrors(page);
  page.on("response", (r) => r.status() === 404 && errors.push(`404: ${r.url()}`));
  const violations = [];
  await page.exposeFunction("__cspViolation", (v) => violations.push(v));
  await page.addInitScript(() => document.addEventListener("securitypolicyviolation",
    (e) => window.__cspViolation(`${e.violatedDirective} ${e.blockedURI}`)));

  // The page itself: CSP from the relay, nothing inline.
  const served = await fetch(relay.url + "/console/");
  assert.equal(served.status, 200);
  assert.match(served.headers.get("content-security-policy") ?? "", /script-src 'self' 'wasm-unsafe-eval'/);
  const html = await served.text();
  assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/, "an inline script");
  assert.doesNotMatch(html, /<style|\sstyle=/, "an inline style");

  // 1. Login: a wrong token is refused next to the field, then the right one.
  await page.goto(relay.url + "/console/");
  const token = page.getByLabel("Admin token");
  await token.fill("not-the-token-not-the-token-0000");
  await page.getByRole("button", { name: "Log in" }).click();
  const tokenError = page.locator("#token-error");
  await tokenError.filter({ hasText: /\S/ }).waitFor(WAIT);
  assert.equal(await token.getAttribute("aria-invalid"), "true");
  await shot(page, "login");
  await token.fill(TOKEN);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("heading", { name: "Overview", level: 1 }).waitFor(WAIT);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "confab_console");
  assert.ok(session?.httpOnly, `the session cookie is HttpOnly: ${JSON.stringify(cookies)}`);

  // 2. Overview: today's figures and the 30 bars.
  await page.locator("[data-stat=today-requests]").waitFor(WAIT);
  assert.equal(await page.locator("[data-stat=today-requests]").textContent(), "1");
  assert.equal(await page.locator(".chart svg g").count(), 30);
  assert.match(await page.locator(".chart svg").getAttribute("aria-label"), /^Spend per day over the last 30 days/);
  await shot(page, "overview");

  // 3. Conversations: find it by its text, open it.
  await page.getByRole("link", { name: "Conversations" }).click();
  await page.getByRole("heading", { name: "Conversations", level: 1 }).waitFor(WAIT);
  await page.getByLabel("Text").fill("order 4411");
  await page.getByLabel("Holder").selectOption("waiting");
  await page.getByLabel("Feedback").selectOption("down");
  await page.getByRole("button", { name: "Search" }).click();
  // The card names the site once the site list has come in too.
  const card = page.locator(`[data-conversation="${conversation}"]`).filter({ hasText: "Corner Shop" });
  await card.waitFor(WAIT);
  assert.equal(await page.locator("[data-conversation]").count(), 1);
  assert.match(await card.textContent(), /Corner Shop.*Waiting for a person.*2 messages.*down 1/s);
  await shot(page, "conversations");
  await card.getByRole("link").click();
  await page.getByRole("heading", { name: "Conversation", level: 1 }).waitFor(WAIT);
  const messages = page.locator(".transcript li");
  await messages.nth(1).waitFor(WAIT);
  assert.match(await messages.nth(0).textContent(), /^Visitor.*Where is my order 4411\?/s);
  assert.match(await messages.nth(1).textContent(), /^Bot/);
  assert.match(await messages.nth(1).locator(".feedback").textContent(), /Rated down.*It did not know my order/s);
  assert.equal(await page.locator("[data-holder]").getAttribute("data-holder"), "waiting");

  // A person's reply: in the transcript, stored as the operator's, and the person holds it.
  await page.getByLabel("Reply as a person").fill("A person here: your order ships today.");
  await page.getByRole("button", { name: "Send reply" }).click();
  await page.locator(".transcript li.operator", { hasText: "your order ships today" }).waitFor(WAIT);
  assert.equal(await page.getByLabel("Reply as a person").inputValue(), "");
  const stored = await admin("GET", `/admin/v1/conversations/${conversation}`);
  assert.equal(stored.holder, "person");
  assert.deepEqual(stored.messages.at(-1).author, "operator");
  // The visitor answers from the widget: the open transcript shows it within its 2 s refresh.
  await visitor(site.key, `/v1/conversations/${conversation}/messages`, { content: "Thank you, person!" });
  await page.locator(".transcript li.visitor", { hasText: "Thank you, person!" }).waitFor(WAIT);
  await shot(page, "transcript");

  // Hand back: the reply box goes, the bot holds it again.
  await page.getByRole("button", { name: "Hand back to the bot" }).click();
  await page.locator("[data-holder=bot]").waitFor(WAIT);
  assert.equal(await page.getByLabel("Reply as a person").count(), 0);
  assert.equal((await admin("GET", `/admin/v1/conversations/${conversation}`)).holder, "bot");

  // 4. Sites: settings saved through the PATCH; a new site's snippet carries its key.
  await page.getByRole("link", { name: "Sites" }).click();
  const siteCard = page.locator(`[data-site="${site.id}"]`);
  await siteCard.waitFor(WAIT);
  await siteCard.getByLabel("Mask contact details").check();
  await siteCard.getByLabel("Retention (days)").fill("14");
  await siteCard.getByRole("button", { name: "Save settings" }).click();
  await siteCard.getByText("Saved.").waitFor(WAIT);
  const saved = await admin("GET", `/admin/v1/sites/${site.id}`);
  assert.equal(saved.conversations.mask_contacts, true);
  assert.equal(saved.conversations.retention_days, 14);
  assert.equal(saved.conversations.handoff, true);
  // The relay's error for a bad origin is shown next to the form, and nothing is created.
  const sitesBefore = await page.locator("[data-site]").count();
  await page.getByLabel("Name").fill("Blog");
  // (exact: each card's "Add origin" and the "no Origin" checkbox also mention origins)
  await page.getByLabel("Origin", { exact: true }).fill("ftp://blog.example/path");
  await page.getByRole("button", { name: "Create site" }).click();
  await page.locator("#site-error").filter({ hasText: /\S/ }).waitFor(WAIT);
  assert.equal(await page.locator("[data-site]").count(), sitesBefore);
  await page.getByLabel("Origin", { exact: true }).fill("https://blog.example");
  await page.getByRole("button", { name: "Create site" }).click();
  const snippet = page.locator("[data-snippet]", { hasText: "confab_pk_" });
  await snippet.waitFor(WAIT);
  assert.match(await snippet.textContent(),
    new RegExp(`^<script src="${relay.url}/confab.js" data-site="confab_pk_\\S+" async></script>$`));
  await shot(page, "sites");

  // 5. Keys: a new key's secret once, then revoked (asked twice).
  await page.getByRole("link", { name: "Keys" }).click();
  await page.getByRole("heading", { name: "Secret keys", level: 1 }).waitFor(WAIT);
  await page.getByLabel("Name").fill("reporting");
  await page.getByLabel("usage").check();
  await page.getByRole("button", { name: "Create key" }).click();
  const secret = page.locator("[data-secret]");
  await secret.waitFor(WAIT);
  assert.match(await secret.textContent(), /^confab_sk_/);
  const keyCard = page.locator("[data-key]", { hasText: "reporting" });
  await keyCard.waitFor(WAIT);
  assert.match(await keyCard.textContent(), /scopes: chat, usage/);
  await keyCard.getByRole("button", { name: "Revoke" }).click();
  await keyCard.getByRole("button", { name: "Confirm: revoke now" }).click();
  await page.locator("[data-key]", { hasText: "reporting" }).getByText(/^Revoked/).waitFor(WAIT);
  await shot(page, "keys");

  // 6. Webhooks: the revocation's delivery failed (the receiver answered 500); redelivered once
  //    the receiver works, it is delivered.
  const failed = await until(async () => (await admin("GET", "/admin/v1/webhooks/deliveries?limit=10"))
    .data.find((d) => d.event === "key.revoked" && d.status === "failed"), "the failed delivery");
  await page.getByRole("link", { name: "Webhooks" }).click();
  await page.getByRole("heading", { name: "Webhooks", level: 1 }).waitFor(WAIT);
  const delivery = page.locator(`[data-delivery="${failed.id}"]`);
  await delivery.waitFor(WAIT);
  assert.match(await delivery.textContent(), /key\.revoked.*failed.*Last error: /s);
  await shot(page, "webhooks");
  hook.status = 200;
  await delivery.getByRole("button", { name: "Redeliver" }).click();
  await until(async () => (await admin("GET", "/admin/v1/webhooks/deliveries?limit=10"))
    .data.some((d) => d.id === failed.id && d.status === "delivered"), "the redelivery");
  await page.reload();
  await page.locator(`[data-delivery="${failed.id}"] .badge`, { hasText: "delivered" }).waitFor(WAIT);

  // 7. Usage: stacked bars and the CSV.
  await page.getByRole("link", { name: "Usage" }).click();
  await page.getByRole("heading", { name: "Tokens per day" }).waitFor(WAIT);
  await page.getByLabel("Site").selectOption(site.id);
  await page.getByLabel("Days").selectOption("7");
  await page.getByRole("button", { name: "Show" }).click();
  await page.locator(".chart svg g").nth(6).waitFor(WAIT);
  assert.equal(await page.locator(".chart svg g").count(), 7);
  assert.equal(await page.locator(".chart svg g").last().locator("rect").count(), 2);
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("link", { name: "Download CSV" }).click(),
  ]);
  const csv = readFileSync(await download.path(), "utf8").trim().split("\n");
  assert.equal(csv[0], "date,requests,input_tokens,output_tokens,cost_micros");
  assert.equal(csv.length, 8);
  assert.match(csv.at(-1), /^\d{4}-\d\d-\d\d,1,\d+,\d+,\d+$/);
  await shot(page, "usage");

  // Logging out ends the session on the relay too.
  await page.getByRole("button", { name: "Log out" }).click();
  await page.getByLabel("Admin token").waitFor(WAIT);
  const after = await page.evaluate(() => fetch("/admin/v1/session").then((r) => r.status));
  assert.equal(after, 401);

  assert.deepEqual(violations, []);
  // The refused token (401) and the refused origin (400) are the only failed loads.
  assert.deepEqual(errors.filter((e) => !/status of (401|400)/.test(e)), []);
});

test("the console edits every setting of a site and a key, previews the widget, and erases conversations", { timeout: 120000 }, async (t) => {
  // A site that keeps transcripts, with two conversations of one visitor (the relay's own
  // origin, the demo upstream answering), and the model the relay serves.
  const shop = await admin("POST", "/admin/v1/sites", { name: "Erase Shop", origins: [relay.url] });
  await admin("PATCH", `/admin/v1/sites/${shop.id}/conversations`, { transcripts: true });
  const model = shop.models[0];
  const talks = [];
  for (const text of ["My address is 1 Main St", "Call me back please"]) {
    const id = "e2e_" + randomBytes(12).toString("hex");
    await visitor(shop.key, "/v1/chat/completions", { stream: true, messages: [{ role: "user", content: text }] },
      { "X-Confab-Conversation": id });
    talks.push(id);
  }
  const recorded = await until(async () => {
    const page = await admin("GET", `/admin/v1/conversations?site=${shop.id}`);
    return page.data.filter((c) => c.messages_count >= 2).length === 2 && page.data;
  }, "both conversations recorded");
  const visitorHash = recorded[0].visitor;
  assert.match(visitorHash, /^[0-9a-f]{16,}$/);
  assert.equal(recorded[1].visitor, visitorHash, "one visitor");

  const context = await browser.newContext({ viewport: { width: 1100, height: 900 },
    permissions: ["clipboard-read", "clipboard-write"] });
  context.setDefaultTimeout(15000);
  const page = await context.newPage();
  const errors = watchErrors(page);
  // What the page said and how it looked last (where a failure stopped it), then the end.
  t.after(async () => {
    if (errors.length) t.diagnostic(errors.join("\n"));
    await page.screenshot({ path: join(artifacts, "console-settings-last.png"), fullPage: true }).catch(() => {});
    await context.close();
  });
  const violations = [];
  await page.exposeFunction("__cspViolation", (v) => violations.push(v));
  await page.addInitScript(() => document.addEventListener("securitypolicyviolation",
    (e) => window.__cspViolation(`${e.violatedDirective} ${e.blockedURI}`)));
  await logIn(page);

  // 1. A new site with two origins, a model, limits and a widget title, from the form.
  await page.getByRole("link", { name: "Sites" }).click();
  await page.getByRole("heading", { name: "Sites", level: 1 }).waitFor(WAIT);
  const form = page.locator("section", { has: page.getByRole("heading", { name: "New site" }) });
  await form.getByLabel("Name", { exact: true }).fill("Docs");
  await form.getByLabel("Origin", { exact: true }).fill("https://docs.example,\nhttps://www.docs.example");
  await form.getByLabel("Models").fill(model);
  await form.getByLabel("Max tokens").fill("400");
  await form.getByLabel("Client instructions").selectOption("drop");
  await form.getByLabel("Widget title").fill("Docs help");
  await form.locator("summary", { hasText: "Limits" }).click();
  await form.getByLabel("Requests per minute", { exact: true }).fill("30");
  await form.getByLabel("Monthly budget ($)").fill("12.5");
  await form.getByLabel("Requests per day, each visitor", { exact: true }).fill("50");
  await form.getByRole("button", { name: "Create site" }).click();
  await page.locator("[data-snippet]", { hasText: "confab_pk_" }).waitFor(WAIT);
  const docs = (await admin("GET", "/admin/v1/sites")).data.find((s) => s.name === "Docs");
  assert.ok(docs, "the site was created");
  assert.deepEqual(docs.origins, ["https://docs.example", "https://www.docs.example"]);
  assert.deepEqual(docs.models, [model]);
  assert.equal(docs.max_tokens, 400);
  assert.equal(docs.client_instructions, "drop");
  assert.equal(docs.widget.title, "Docs help");
  assert.deepEqual(docs.limits, { rpm: 30, rpd: null, tpm: null, monthly_budget_micros: 12500000,
    daily_budget_micros: null, visitor_rpm: null, visitor_rpd: 50, verified_rpm: null, verified_rpd: null });
  const card = page.locator(`[data-site="${docs.id}"]`);
  const snippetText = await card.locator("[data-snippet]").textContent();
  assert.match(snippetText, /data-site="confab_pk_\S+"/);

  // The snippet, copied, is on the clipboard.
  await card.getByRole("button", { name: "Copy snippet" }).click();
  await card.getByText("Copied.").waitFor(WAIT);
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), snippetText);

  // 2. The widget: the preview follows the form before anything is saved.
  await card.locator("summary", { hasText: "Widget" }).click();
  const preview = card.locator("[data-preview]");
  assert.equal(await preview.getAttribute("aria-label"), "Widget preview");
  assert.equal(await preview.locator(".preview-head").textContent(), "Docs help");
  await card.getByLabel("Title", { exact: true }).fill("Docs desk");
  await card.getByLabel("Greeting").fill("Ask about the API.");
  await card.getByLabel("Suggested questions (one per line)").fill("How do I install it?\nPricing");
  await card.getByLabel("Primary colour").fill("#2a7d4f");
  await preview.locator(".preview-head", { hasText: "Docs desk" }).waitFor(WAIT);
  assert.equal(await preview.locator(".preview-bubble").textContent(), "Ask about the API.");
  assert.deepEqual(await preview.locator(".preview-chips li").allTextContents(), ["How do I install it?", "Pricing"]);
  const background = (selector) => preview.locator(selector).evaluate((e) => getComputedStyle(e).backgroundColor);
  assert.equal(await background(".preview-head"), "rgb(42, 125, 79)");
  assert.equal(await background(".preview-launcher"), "rgb(42, 125, 79)");
  assert.equal((await admin("GET", `/admin/v1/sites/${docs.id}`)).widget.title, "Docs help", "not saved yet");
  await shot(page, "site-widget");
  // A colour that is not one is refused next to its field, before anything is sent.
  await card.getByLabel("Primary colour").fill("green");
  await card.getByRole("button", { name: "Save widget" }).click();
  const colourError = card.locator(`[id="${docs.id}-primary_color-error"]`);
  await colourError.filter({ hasText: /colour like/ }).waitFor(WAIT);
  assert.equal(await card.getByLabel("Primary colour").getAttribute("aria-invalid"), "true");
  assert.equal(await card.getByLabel("Primary colour").getAttribute("aria-describedby"), `${docs.id}-primary_color-error`);
  await card.getByLabel("Primary colour").fill("#2a7d4f");
  await card.getByRole("button", { name: "Save widget" }).click();
  await card.locator(`[id="${docs.id}-widget-status"]`, { hasText: "Saved." }).waitFor(WAIT);
  const widget = (await admin("GET", `/admin/v1/sites/${docs.id}`)).widget;
  assert.deepEqual(widget, { title: "Docs desk", greeting: "Ask about the API.",
    suggestions: ["How do I install it?", "Pricing"], primary_color: "#2a7d4f" });

  // 3. Limits: one changed, one cleared, one set; a bad amount refused next to its field.
  await card.locator("summary", { hasText: "Limits" }).click();
  assert.equal(await card.getByLabel("Monthly budget ($)").inputValue(), "12.5");
  await card.getByLabel("Requests per minute", { exact: true }).fill("45");
  await card.getByLabel("Monthly budget ($)").fill("");
  await card.getByLabel("Daily budget ($)").fill("two");
  await card.getByRole("button", { name: "Save limits" }).click();
  await card.locator(`[id="${docs.id}-daily_budget_micros-error"]`, { hasText: "dollars" }).waitFor(WAIT);
  await card.getByLabel("Daily budget ($)").fill("2");
  await card.getByRole("button", { name: "Save limits" }).click();
  await card.locator(`[id="${docs.id}-limits-status"]`, { hasText: "Saved." }).waitFor(WAIT);
  const limits = (await admin("GET", `/admin/v1/sites/${docs.id}`)).limits;
  assert.equal(limits.rpm, 45);
  assert.equal(limits.monthly_budget_micros, null);
  assert.equal(limits.daily_budget_micros, 2000000);
  assert.equal(limits.visitor_rpd, 50, "kept");

  // 4. Origins: the relay's error next to the field, then one added and one removed.
  await card.locator("summary", { hasText: "Origins" }).click();
  const addOrigin = card.getByLabel("Add origin");
  await addOrigin.fill("ftp://files.docs.example/path");
  await card.getByRole("button", { name: "Add", exact: true }).click();
  const originError = card.locator(`[id="${docs.id}-add-origin-error"]`);
  await originError.filter({ hasText: /must start with http/ }).waitFor(WAIT);
  assert.equal(await addOrigin.getAttribute("aria-invalid"), "true");
  await shot(page, "site-origin-error");
  await addOrigin.fill("https://help.docs.example");
  await card.getByRole("button", { name: "Add", exact: true }).click();
  await card.locator(".origins li", { hasText: "https://help.docs.example" }).waitFor(WAIT);
  await card.getByRole("button", { name: "Remove https://www.docs.example" }).click();
  await card.locator(".origins li", { hasText: "https://www.docs.example" }).waitFor({ state: "detached", ...WAIT });
  assert.deepEqual((await admin("GET", `/admin/v1/sites/${docs.id}`)).origins,
    ["https://docs.example", "https://help.docs.example"]);

  // 5. Verification: a visitor secret shown once, then required.
  await card.locator("summary", { hasText: "Verification" }).click();
  await card.getByRole("button", { name: "Make a new visitor secret" }).click();
  const visitorSecret = card.locator("[data-visitor-secret]");
  await visitorSecret.waitFor(WAIT);
  assert.match(await visitorSecret.textContent(), /^\S{32,}$/);
  await card.getByLabel("Refuse visitors without a valid token").check();
  await card.getByRole("button", { name: "Save verification" }).click();
  await card.locator("[data-verification]", { hasText: /^Required/ }).waitFor(WAIT);
  const verified = await admin("GET", `/admin/v1/sites/${docs.id}`);
  assert.deepEqual(verified.verification, { enabled: true, required: true, mode: "hmac" });
  assert.equal(verified.visitor_secret, undefined, "the secret is shown once");
  await shot(page, "site-sections");

  // 6. A key with models and limits; rotated, its new secret shown once and different.
  await page.getByRole("link", { name: "Keys" }).click();
  await page.getByRole("heading", { name: "Secret keys", level: 1 }).waitFor(WAIT);
  await page.getByLabel("Name", { exact: true }).fill("rotating");
  await page.getByLabel("Allowed models").fill(model);
  await page.locator("summary", { hasText: "Limits" }).click();
  await page.getByLabel("Requests per minute").fill("10");
  await page.getByLabel("Monthly budget ($)").fill("3");
  await page.getByRole("button", { name: "Create key" }).click();
  const created = await page.locator("[data-secret]").textContent({ timeout: 15000 });
  assert.match(created, /^confab_sk_/);
  const keyCard = page.locator("[data-key]", { hasText: "rotating" });
  await keyCard.waitFor(WAIT);
  assert.match(await keyCard.locator("[data-limits]").textContent(), new RegExp(`Models: ${model} · Limits: 10 rpm · \\$3\\.00 a month`));
  const key = (await admin("GET", "/admin/v1/keys")).data.find((k) => k.name === "rotating");
  assert.deepEqual([key.models, key.rpm, key.monthly_budget_micros], [[model], 10, 3000000]);
  await keyCard.getByRole("button", { name: "Rotate secret" }).click();
  const rotated = keyCard.locator("[data-rotated]");
  await rotated.waitFor(WAIT);
  assert.match(await rotated.textContent(), /^confab_sk_/);
  assert.notEqual(await rotated.textContent(), created);
  assert.match(await keyCard.locator(".reveal").textContent(), /new secret of rotating, shown this once/);
  assert.ok((await admin("GET", "/admin/v1/keys")).data.find((k) => k.id === key.id).previous_key_prefix);
  await shot(page, "key-rotated");

  // 7. A conversation deleted (asked twice), then its visitor's other one erased.
  await page.goto(`${relay.url}/console/#/conversations/${talks[0]}`);
  await page.locator(".transcript li").nth(1).waitFor(WAIT);
  assert.equal(await page.locator("[data-visitor]").getAttribute("data-visitor"), visitorHash);
  await page.getByRole("button", { name: "Delete conversation" }).click();
  await page.getByRole("button", { name: "Confirm: delete this conversation" }).click();
  await page.getByRole("heading", { name: "Conversations", level: 1 }).waitFor(WAIT);
  assert.equal(await adminStatus("GET", `/admin/v1/conversations/${talks[0]}`), 404);
  // The other one, found by its visitor.
  await page.getByLabel("Visitor").fill(visitorHash);
  await page.getByLabel("Updated").selectOption("1");
  await page.getByRole("button", { name: "Search" }).click();
  const other = page.locator(`[data-conversation="${talks[1]}"]`);
  await other.waitFor(WAIT);
  assert.equal(await page.locator("[data-conversation]").count(), 1);
  await other.getByRole("link").click();
  await page.getByRole("heading", { name: "Conversation", level: 1 }).waitFor(WAIT);
  await page.getByRole("button", { name: "Erase this visitor's data" }).click();
  await shot(page, "erase-visitor");
  await page.getByRole("button", { name: "Confirm: erase every conversation of this visitor" }).click();
  await page.getByRole("heading", { name: "Conversations", level: 1 }).waitFor(WAIT);
  assert.deepEqual((await admin("GET", `/admin/v1/conversations?visitor=${visitorHash}`)).data, []);
  assert.equal(await adminStatus("GET", `/admin/v1/conversations/${talks[1]}`), 404);

  // 8. The site deleted, asked twice.
  await page.getByRole("link", { name: "Sites" }).click();
  await card.waitFor(WAIT);
  await card.getByRole("button", { name: "Delete site" }).click();
  await card.getByRole("button", { name: "Confirm: delete the site and its key" }).click();
  await card.waitFor({ state: "detached", ...WAIT });
  assert.equal(await adminStatus("GET", `/admin/v1/sites/${docs.id}`), 404);

  // 9. Usage by model: a model the relay has served, and one it has not (nothing).
  const served = Object.keys((await admin("GET", "/admin/v1/usage?days=1")).by_model);
  assert.ok(served.length >= 1, "the chats above were metered");
  await page.getByRole("link", { name: "Usage" }).click();
  await page.getByRole("heading", { name: "Tokens per day" }).waitFor(WAIT);
  const modelFilter = page.getByLabel("Model", { exact: true });
  await modelFilter.locator(`option[value="${served[0]}"]`).waitFor({ state: "attached", ...WAIT });
  await modelFilter.selectOption(served[0]);
  await page.getByRole("button", { name: "Show" }).click();
  const models = page.locator("section[aria-labelledby=models-heading] .card strong");
  await until(async () => (await models.allTextContents()).join() === served[0], "the report of one model");
  assert.equal(await modelFilter.inputValue(), served[0], "the filter stays chosen");
  await shot(page, "usage-model");

  assert.deepEqual(violations, []);
  // The session check before logging in (401) and the relay's refusal of the ftp origin (400)
  // are the only failed loads.
  assert.deepEqual(errors.filter((e) => !/status of (401|400)/.test(e)), []);
});

test("a new page takes the focus on its heading, the first one does not", async (t) => {
  const context = await browser.newContext();
  context.setDefaultTimeout(15000);
  t.after(() => context.close());
  const page = await context.newPage();
  await logIn(page);
  assert.equal(await page.evaluate(() => document.activeElement.tagName), "BODY");
  await page.getByRole("link", { name: "Secret keys" }).click();
  await page.getByRole("heading", { name: "Secret keys", level: 1 }).waitFor(WAIT);
  await until(() => page.evaluate(() => document.activeElement.tagName === "H1"
    && document.activeElement.textContent === "Secret keys"), "the focus on the heading");
  assert.equal(await page.locator("h1").getAttribute("tabindex"), "-1");
});

test("a lost session sends the operator back to the login form", async (t) => {
  const context = await browser.newContext();
  context.setDefaultTimeout(15000);
  t.after(() => context.close());
  const page = await context.newPage();
  await logIn(page);
  await context.clearCookies();
  await page.getByRole("link", { name: "Sites" }).click();
  await page.getByLabel("Admin token").waitFor(WAIT);
});

test("on a 390 px phone every page fits the screen", async (t) => {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  context.setDefaultTimeout(15000);
  t.after(() => context.close());
  const page = await context.newPage();
  await page.goto(relay.url + "/console/");
  await page.getByLabel("Admin token").waitFor(WAIT);
  await assertFits(page, "login");
  await logIn(page);
  for (const [hash, heading] of [["#/", "Overview"], ["#/conversations", "Conversations"], ["#/sites", "Sites"],
    ["#/keys", "Secret keys"], ["#/webhooks", "Webhooks"], ["#/usage", "Usage"]]) {
    await page.goto(relay.url + "/console/" + hash);
    await page.getByRole("heading", { name: heading, level: 1 }).waitFor(WAIT);
    await page.locator("[role=status]", { hasText: "Loading" }).waitFor({ state: "detached", ...WAIT });
    await assertFits(page, heading);
  }
  await shot(page, "phone");
});

test("the keyboard alone logs in and reaches every page", async (t) => {
  const context = await browser.newContext();
  context.setDefaultTimeout(15000);
  t.after(() => context.close());
  const page = await context.newPage();
  await page.goto(relay.url + "/console/");
  await page.getByLabel("Admin token").waitFor(WAIT);
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.id), "token");
  await page.keyboard.type(TOKEN);
  await page.keyboard.press("Enter");
  await page.getByRole("button", { name: "Log out" }).waitFor(WAIT);
  // Tab through the header from its first link: brand, six pages, logout.
  await page.locator(".brand").focus();
  const reached = [await page.evaluate(() => document.activeElement.textContent.trim())];
  for (let i = 0; i < 7; i++) {
    await page.keyboard.press("Tab");
    reached.push(await page.evaluate(() => document.activeElement.textContent.trim()));
  }
  assert.deepEqual(reached, ["Confab", "Overview", "Conversations", "Sites", "Secret keys", "Webhooks", "Usage", "Log out"]);
  await page.keyboard.press("Shift+Tab");
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Usage", level: 1 }).waitFor(WAIT);
});
