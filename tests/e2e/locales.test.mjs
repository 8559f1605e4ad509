// The widget in the visitor's language, in headless Chromium against a real relay: chosen by
// data-locale, the element's locale or the page's <html lang>, only the chosen language's file
// downloaded, the site's overrides on top, English for a language the widget does not speak.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { WAIT, launchBrowser, openPage, root, startStack } from "./harness.mjs";
import { ANSWER_END, RETRY_AFTER } from "./mock-upstream.mjs";

let stack, browser;
before(async () => {
  stack = await startStack();
  browser = await launchBrowser();
}, { timeout: 60000 });
after(async () => {
  await browser?.close();
  await stack?.close();
});

const BOUND = { timeout: 60000 };
/** A language's texts, as the build ships them. */
const texts = (language) => JSON.parse(readFileSync(join(root, "widget", "locales", `${language}.json`), "utf8"));
const FLOATING = "[data-confab]";
const INLINE = "confab-chat";

/** Opens locale.html with `query` (lang, locale, element, strings), recording the language files fetched. */
async function visit(t, query) {
  const opened = await openPage(t, browser);
  const fetched = [];
  opened.page.on("request", (r) => {
    const m = new URL(r.url()).pathname.match(/^\/widget\/locales\/([a-z]+)\.[0-9a-f]{16}\.json$/);
    if (m) fetched.push(m[1]);
  });
  const params = new URLSearchParams({ lang: "", locale: "", element: "", strings: "", ...query });
  await opened.page.goto(`${stack.hosts.url}/locale.html?${params}`);
  await opened.page.locator(`${INLINE} textarea`).waitFor(WAIT);
  return { ...opened, fetched };
}

async function openFloating(page) {
  await page.locator(`${FLOATING} button.launcher`).click();
  await page.locator(`${FLOATING} section.panel textarea`).waitFor(WAIT);
}

const attribute = (page, selector, name) => page.locator(selector).first().getAttribute(name);

test("data-locale picks the language: its texts, its lang, and only its file downloaded", BOUND, async (t) => {
  const { page, errors, fetched } = await visit(t, { lang: "en", locale: "fr" });
  await openFloating(page);
  const fr = texts("fr");
  assert.equal(await page.locator(`${FLOATING} button.send`).textContent(), fr.send);
  assert.equal(await attribute(page, `${FLOATING} textarea`, "placeholder"), fr.placeholder);
  assert.equal(await attribute(page, `${FLOATING} button.launcher`, "aria-label"), fr.close_chat);
  assert.equal(await attribute(page, `${FLOATING} .confab`, "lang"), "fr");
  // The inline chat follows the page (English: no file at all).
  assert.equal(await page.locator(`${INLINE} button.send`).textContent(), "Send");
  assert.deepEqual(fetched, ["fr"]);
  assert.deepEqual(errors, []);
});

test("without a locale the page's <html lang> decides, for the element and the floating widget alike", BOUND, async (t) => {
  const { page, errors, fetched } = await visit(t, { lang: "ja-JP" });
  const ja = texts("ja");
  assert.equal(await attribute(page, `${INLINE} textarea`, "placeholder"), ja.placeholder);
  assert.equal(await attribute(page, `${INLINE} .confab`, "lang"), "ja-JP");
  await openFloating(page);
  assert.equal(await page.locator(`${FLOATING} button.clear`).textContent(), ja.clear);
  assert.deepEqual(fetched, ["ja"], "one file for both chats");
  assert.deepEqual(errors, []);
});

test("the element and the script tag can speak two languages on one page; right-to-left follows the language", BOUND, async (t) => {
  const { page, errors, fetched } = await visit(t, { lang: "es", element: "ar" });
  const [ar, es] = [texts("ar"), texts("es")];
  assert.equal(await page.locator(`${INLINE} button.send`).textContent(), ar.send);
  assert.equal(await attribute(page, `${INLINE} .confab`, "dir"), "rtl");
  await openFloating(page);
  assert.equal(await page.locator(`${FLOATING} button.send`).textContent(), es.send);
  assert.equal(await attribute(page, `${FLOATING} .confab`, "dir"), "ltr");
  assert.deepEqual(fetched.sort(), ["ar", "es"]);
  assert.deepEqual(errors, []);
});

test("a site overrides any text on top of the language; a language the widget does not speak is English", BOUND, async (t) => {
  const { page, errors, fetched } = await visit(t, { lang: "sw", locale: "de", strings: JSON.stringify({ send: "Los!", clear: "Neu" }) });
  await openFloating(page);
  const de = texts("de");
  assert.equal(await page.locator(`${FLOATING} button.send`).textContent(), "Los!");
  assert.equal(await page.locator(`${FLOATING} button.clear`).textContent(), "Neu");
  assert.equal(await attribute(page, `${FLOATING} textarea`, "placeholder"), de.placeholder);
  // Swahili: English, and said to be English.
  assert.equal(await page.locator(`${INLINE} button.send`).textContent(), "Send");
  assert.equal(await attribute(page, `${INLINE} .confab`, "lang"), "en");
  assert.deepEqual(fetched, ["de"]);
  assert.deepEqual(errors, []);
});

test("a tag written with an underscore (pt_BR) still picks its language, and says it the browser's way", BOUND, async (t) => {
  const { page, errors, fetched } = await visit(t, { lang: "en", element: "pt_BR" });
  assert.equal(await page.locator(`${INLINE} button.send`).textContent(), texts("pt").send);
  assert.equal(await attribute(page, `${INLINE} .confab`, "lang"), "pt-BR");
  assert.deepEqual(fetched, ["pt"]);
  assert.deepEqual(errors, []);
});

test("errors are told in the language, with their numbers", BOUND, async (t) => {
  const { page, errors } = await visit(t, { lang: "pl" });
  await page.locator(`${INLINE} textarea`).fill("LIMIT me");
  await page.locator(`${INLINE} textarea`).press("Enter");
  const error = page.locator(`${INLINE} p.error`);
  await error.waitFor(WAIT);
  const pl = texts("pl");
  assert.equal((await error.textContent()).replace(pl.retry, "").trim(), pl.rate_limited_wait.replace("{n}", String(RETRY_AFTER)));
  assert.equal(await page.locator(`${INLINE} button.retry`).textContent(), pl.retry);
  // And an answer still streams as ever.
  await page.locator(`${INLINE} textarea`).fill("Dzień dobry");
  await page.locator(`${INLINE} textarea`).press("Enter");
  await page.locator(`${INLINE} li.assistant`, { hasText: ANSWER_END }).waitFor(WAIT);
  // The relay's 429 shows in the console as a failed request; nothing else may.
  assert.deepEqual(errors.filter((e) => !/429/.test(e)), []);
});
