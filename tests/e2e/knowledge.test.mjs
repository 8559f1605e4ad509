// Answers from the site's own documents (issue 15), in headless Chromium against the real relay
// binary: `confab knowledge add` of a local folder and of a sitemap served by a test site on
// 127.0.0.1 (one of the site's origins); a question about a fact only those pages hold makes the
// upstream receive the passage that holds it, and the widget shows the source under the answer as
// a link (title and URL) that the keyboard reaches. A document removed is never retrieved again,
// through either relay of the stack. Hostile input (an off-origin sitemap, a looping one, a
// malformed PDF) ends with a clear error and leaves the knowledge as it was.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { WAIT, until, confab, lastAnswer, launchBrowser, openPage, startStack } from "./harness.mjs";
import { ANSWER_END } from "./mock-upstream.mjs";

// Facts no model knows: each is in exactly one document.
const WARRANTY_FACT = "The Tarnwick lantern carries a warranty of 7 years on its brass housing.";
const CARE_FACT = "Oil the Tarnwick hinges with walnut oil every 40 days.";
const FOLDER_FACT = "Parcels to the Orkney islands leave our depot every Thursday at 06:15.";

const BOUND = { timeout: 120000 };
const W = (selector) => `[data-confab] ${selector}`;

let stack, browser, docs, folder;

/**
 * The site's help pages on an origin of their own: robots.txt, a sitemap, two guides, a sitemap
 * that points off the origin and one that points at itself.
 */
async function startDocs() {
  const pages = {
    "/robots.txt": ["text/plain", "User-agent: *\nAllow: /\n"],
    "/guides/warranty.html": ["text/html", `<!doctype html><html><head><title>Lantern warranty</title></head>
      <body><nav><a href="/">Home</a> Shop Blog</nav><main><h1>Lantern warranty</h1>
      <h2>Brass housing</h2><p>${WARRANTY_FACT}</p></main><footer>© Tarnwick</footer></body></html>`],
    "/guides/care.html": ["text/html", `<!doctype html><html><head><title>Lantern care</title></head>
      <body><main><h1>Lantern care</h1><h2>Hinges</h2><p>${CARE_FACT}</p></main></body></html>`],
  };
  const server = createServer((req, res) => {
    const origin = `http://127.0.0.1:${server.address().port}`;
    const urlset = (...urls) => `<?xml version="1.0" encoding="UTF-8"?>
      <urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">${urls.map((u) => `<url><loc>${u}</loc></url>`).join("")}</urlset>`;
    const index = (...urls) => `<?xml version="1.0" encoding="UTF-8"?>
      <sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">${urls.map((u) => `<sitemap><loc>${u}</loc></sitemap>`).join("")}</sitemapindex>`;
    const dynamic = {
      "/sitemap.xml": urlset(`${origin}/guides/warranty.html`, `${origin}/guides/care.html`),
      "/offsite-sitemap.xml": urlset("https://elsewhere.example/page.html"),
      "/loop-sitemap.xml": index(`${origin}/loop-sitemap.xml`),
    };
    const path = new URL(req.url, origin).pathname;
    if (dynamic[path]) return res.writeHead(200, { "Content-Type": "application/xml" }).end(dynamic[path]);
    const page = pages[path];
    if (!page) return res.writeHead(404, { "Content-Type": "text/plain" }).end("not found");
    res.writeHead(200, { "Content-Type": `${page[0]}; charset=utf-8` }).end(page[1]);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((resolve) => { server.closeAllConnections?.(); server.close(() => resolve()); }),
  };
}

before(async () => {
  // Relays pick up knowledge added through the CLI within 200 ms; the test site is fetched
  // without the polite pause between pages.
  stack = await startStack({}, ["[knowledge]", "poll_ms = 200", "fetch_interval_ms = 0"]);
  docs = await startDocs();
  folder = mkdtempSync(join(tmpdir(), "confab-e2e-docs-"));
  writeFileSync(join(folder, "shipping.md"),
    `# Shipping\n\n## Islands\n\n${FOLDER_FACT}\n\n## Mainland\n\nMainland parcels leave every day.\n`);
  writeFileSync(join(folder, "about.txt"), "Tarnwick makes lanterns by hand in a small workshop.\n");
  browser = await launchBrowser();
  // The help pages are one of the site's origins: only those are ever fetched.
  await confab(["sites", "origins", stack.site, "--add", docs.url], stack.dir);
}, { timeout: 60000 });

after(async () => {
  await browser?.close();
  await docs?.close();
  await stack?.close();
  if (folder) rmSync(folder, { recursive: true, force: true });
});

/** `confab knowledge ...` in the stack's directory: { ok, out } (a failure's stderr in `out`). */
async function knowledge(...args) {
  try {
    return { ok: true, out: await confab(["knowledge", ...args], stack.dir) };
  } catch (error) {
    return { ok: false, out: `${error.stdout ?? ""}${error.stderr ?? ""}` };
  }
}

const documents = async () => JSON.parse((await knowledge("list", stack.site, "--json")).out);


/** A chat request to `relay` as the widget sends it; the body the upstream received. */
async function upstreamBodyFor(relay, question) {
  const before = stack.mock.chats().length;
  const response = await fetch(relay.url + "/v1/chat/completions", {
    method: "POST",
    headers: { authorization: `Bearer ${stack.key}`, origin: stack.hosts.url, "content-type": "application/json" },
    body: JSON.stringify({ messages: [{ role: "user", content: question }], stream: true }),
  });
  assert.equal(response.status, 200, await response.clone().text());
  await response.text();
  const chats = stack.mock.chats();
  assert.equal(chats.length, before + 1);
  return JSON.stringify(chats[chats.length - 1].body);
}

test("a folder and a sitemap become sources the upstream receives and the widget links to", BOUND, async (t) => {
  const added = await knowledge("add", stack.site, folder, `${docs.url}/sitemap.xml`);
  assert.ok(added.ok, added.out);
  const listed = await documents();
  const sources = listed.map((d) => d.source).sort();
  assert.deepEqual(sources.filter((s) => s.startsWith("http")),
    [`${docs.url}/guides/care.html`, `${docs.url}/guides/warranty.html`]);
  assert.equal(listed.length, 4, JSON.stringify(listed));

  // Both relays poll the database: each picks the new knowledge up on its own.
  for (const relay of [stack.relay, stack.other]) {
    await until(async () => (await upstreamBodyFor(relay, "How long is the lantern warranty?")).includes(WARRANTY_FACT),
      10000, "the relay to retrieve the warranty page");
  }

  const { page, errors } = await openPage(t, browser);
  await page.goto(stack.hosts.url + "/plain.html");
  await page.locator(W("button.launcher")).click();
  await page.locator(W("textarea")).waitFor(WAIT);
  const before = stack.mock.chats().length;
  await page.locator(W("textarea")).fill("How many years of warranty does the lantern's brass housing have?");
  await page.locator(W("textarea")).press("Enter");
  await lastAnswer(page).filter({ hasText: ANSWER_END }).waitFor(WAIT);

  // The upstream got the passage, under the site's prompt, as a numbered source with its URL.
  const sent = stack.mock.chats()[before].body;
  const block = sent.messages.find((m) => m.role === "system" && m.content.includes(WARRANTY_FACT));
  assert.ok(block, JSON.stringify(sent.messages));
  assert.match(block.content, new RegExp(`\\[1\\] Lantern warranty \\(${docs.url}/guides/warranty\\.html\\)`));

  // The widget shows the source under the answer: its title, linking to its page.
  const link = lastAnswer(page).locator(".sources a", { hasText: "Lantern warranty" });
  await link.waitFor(WAIT);
  assert.equal(await link.getAttribute("href"), `${docs.url}/guides/warranty.html`);
  assert.equal(await link.getAttribute("rel"), "noopener noreferrer");
  assert.equal(await link.getAttribute("target"), "_blank");
  assert.equal(await lastAnswer(page).locator(".sources ul").getAttribute("aria-label"), "Sources");

  // The keyboard reaches it: Tab from the answer's text lands on the link.
  await page.locator(W("textarea")).focus();
  let reached = false;
  for (let i = 0; i < 12 && !reached; i++) {
    await page.keyboard.press("Shift+Tab");
    reached = await page.evaluate(() => {
      const active = document.querySelector("[data-confab]").shadowRoot.activeElement;
      return active?.tagName === "A" && active.closest(".sources") !== null;
    });
  }
  assert.ok(reached, "the source link is reachable with the keyboard");

  // The folder's document is a source too; a file has a title and no link.
  await page.locator(W("textarea")).fill("When do parcels leave for the Orkney islands?");
  await page.locator(W("textarea")).press("Enter");
  await lastAnswer(page).filter({ hasText: "Orkney" }).filter({ hasText: ANSWER_END }).waitFor(WAIT);
  const fileSource = lastAnswer(page).locator(".sources li", { hasText: "Shipping" });
  await fileSource.waitFor(WAIT);
  assert.equal(await fileSource.locator("a").count(), 0, "a file's path is never a link");
  assert.ok(JSON.stringify(stack.mock.chats().at(-1).body).includes(FOLDER_FACT));

  // After a reload, the answers keep their sources.
  await page.reload();
  await page.locator(W("button.launcher")).click();
  await page.locator(W(".sources a"), { hasText: "Lantern warranty" }).first().waitFor(WAIT);
  assert.deepEqual(errors, []);
});

test("a removed document is never retrieved again, through either relay", BOUND, async () => {
  const care = (await documents()).find((d) => d.source.endsWith("/guides/care.html"));
  assert.ok(care, "the care page was added by the test before");
  const question = "How often should I oil the lantern hinges?";
  assert.ok((await upstreamBodyFor(stack.relay, question)).includes(CARE_FACT));
  const removed = await knowledge("remove", stack.site, String(care.id));
  assert.ok(removed.ok, removed.out);
  // At once, before either relay has polled: what reaches a prompt is read from the database.
  for (const relay of [stack.relay, stack.other]) {
    assert.ok(!(await upstreamBodyFor(relay, question)).includes(CARE_FACT));
  }
});

test("hostile sources end with a clear error and leave the knowledge as it was", BOUND, async () => {
  const before = await documents();
  const pdf = join(folder, "broken.pdf");
  writeFileSync(pdf, "%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF garbage");
  const cases = [
    [`${docs.url}/offsite-sitemap.xml`, "elsewhere.example"],
    [`${docs.url}/loop-sitemap.xml`, "loop-sitemap.xml"],
    [pdf, "broken.pdf"],
    ["https://elsewhere.example/sitemap.xml", "elsewhere.example"],
  ];
  for (const [source, named] of cases) {
    const result = await knowledge("add", stack.site, source);
    assert.equal(result.ok, false, `${source} was accepted: ${result.out}`);
    assert.ok(result.out.includes(named), `the error names ${named}: ${result.out}`);
  }
  rmSync(pdf);
  assert.deepEqual(await documents(), before);
});
