// WCAG 2.1 A and AA, checked by axe-core (the rules browsers' own audits use) in headless
// Chromium on every page of the console, on a desktop window and on a phone, with real data in
// each (a site, a key, a conversation with feedback waiting for a person, usage, a webhook
// delivery), and on the widget's open panel on the relay's demo page. Colour contrast is among
// the rules: a text below 4.5:1 (3:1 when large) fails the test with the element named.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { WAIT, launchBrowser, root, startRelay } from "./harness.mjs";

const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const TOKEN = "a11y-e2e-admin-token-0123456789abcdef";
const RULES = { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } };

let relay, browser, conversation;
before(async () => {
  relay = await startRelay({
    CONFAB_ADMIN_TOKEN: TOKEN,
    CONFAB__ADMIN__CONSOLE_DIR: join(root, "dist", "console"),
  });
  browser = await launchBrowser();
  conversation = await seed();
}, { timeout: 60000 });
after(async () => {
  await browser?.close();
  await relay?.close();
});

async function call(method, path, body, headers) {
  const response = await fetch(relay.url + path, {
    method,
    headers: { "content-type": "application/json", ...headers },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return { response, body: text ? JSON.parse(text) : null };
}
const admin = (method, path, body) => call(method, path, body, { authorization: `Bearer ${TOKEN}` });

/** A site with a conversation rated down and waiting for a person, and a secret key. */
async function seed() {
  const { body: site } = await admin("POST", "/admin/v1/sites", { name: "Corner Shop", origins: [relay.url] });
  await admin("PATCH", `/admin/v1/sites/${site.id}/conversations`, { transcripts: true, handoff: true });
  await admin("POST", "/admin/v1/keys", { name: "reporting", scopes: ["usage"] });
  const id = "a11y_" + randomBytes(12).toString("hex");
  const visitor = { authorization: `Bearer ${site.key}`, origin: relay.url };
  const { response } = await call("POST", "/v1/chat/completions",
    { messages: [{ role: "user", content: "Where is my order?" }] },
    { ...visitor, "X-Confab-Conversation": id, "X-Confab-Page": relay.url + "/orders" });
  for (let i = 0; !(await admin("GET", `/admin/v1/conversations?site=${site.id}`)).body.data.length; i++) {
    assert.ok(i < 200, "the conversation was never recorded");
    await new Promise((r) => setTimeout(r, 50));
  }
  await call("POST", "/v1/feedback",
    { conversation: id, message: response.headers.get("x-request-id"), rating: "down", comment: "Vague" }, visitor);
  await call("POST", `/v1/conversations/${id}/handoff`, {}, visitor);
  return id;
}

/** axe-core's WCAG A/AA violations on the page as it is now, one line each. */
async function violations(page) {
  await page.evaluate(AXE);
  const found = await page.evaluate((rules) => window.axe.run(document, rules), RULES);
  return found.violations.flatMap((v) => v.nodes.map((n) =>
    `${v.id} (${v.impact}): ${n.target.join(" ")}: ${n.failureSummary.replace(/\s+/g, " ")}`));
}

/** A context that lets the test inject axe-core despite the console's CSP (the page's own
 * scripts are still the built console's). */
async function newPage(t, options) {
  const context = await browser.newContext({ bypassCSP: true, ...options });
  context.setDefaultTimeout(15000);
  t.after(() => context.close());
  return context.newPage();
}

const PAGES = [
  ["#/", "Overview"],
  ["#/conversations", "Conversations"],
  [null, "Conversation"],
  ["#/sites", "Sites"],
  ["#/keys", "Secret keys"],
  ["#/webhooks", "Webhooks"],
  ["#/usage", "Usage"],
];

for (const [name, options] of [
  ["desktop", { viewport: { width: 1100, height: 900 } }],
  ["phone", { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true }],
]) {
  test(`every console page meets WCAG 2.1 AA (${name})`, { timeout: 90000 }, async (t) => {
    const page = await newPage(t, options);
    const found = [];
    await page.goto(relay.url + "/console/");
    await page.getByLabel("Admin token").waitFor(WAIT);
    found.push(...(await violations(page)).map((v) => `login: ${v}`));
    // The login form with its error shown.
    await page.getByLabel("Admin token").fill("not-the-admin-token-not-the-token");
    await page.getByRole("button", { name: "Log in" }).click();
    await page.locator("#token-error").filter({ hasText: /\S/ }).waitFor(WAIT);
    found.push(...(await violations(page)).map((v) => `login error: ${v}`));
    await page.getByLabel("Admin token").fill(TOKEN);
    await page.getByRole("button", { name: "Log in" }).click();
    await page.getByRole("button", { name: "Log out" }).waitFor(WAIT);
    for (const [hash, heading] of PAGES) {
      await page.goto(relay.url + "/console/" + (hash ?? `#/conversations/${conversation}`));
      await page.getByRole("heading", { name: heading, level: 1 }).waitFor(WAIT);
      await page.locator("[role=status]", { hasText: "Loading" }).waitFor({ state: "detached", ...WAIT });
      if (hash === null) await page.locator(".transcript li").nth(1).waitFor(WAIT);
      found.push(...(await violations(page)).map((v) => `${heading}: ${v}`));
    }
    assert.deepEqual(found, []);
  });
}

test("the demo page with the widget's open panel meets WCAG 2.1 AA", { timeout: 60000 }, async (t) => {
  const page = await newPage(t, { viewport: { width: 1000, height: 800 } });
  await page.goto(relay.url + "/");
  await page.locator("[data-confab] button.launcher").click();
  await page.locator("[data-confab] textarea").fill("Hello there");
  await page.locator("[data-confab] textarea").press("Enter");
  await page.locator("[data-confab] li.assistant:not(.greeting)").last().waitFor(WAIT);
  await page.locator("[data-confab] button.send").waitFor(WAIT);
  assert.deepEqual(await violations(page), []);
});
