// The widget on the test host pages (www/test/*), each served from its own origin as a real
// website would be, in headless Chromium, against a real relay in front of a scripted mock
// upstream (mock-upstream.mjs): plain, hostile CSS, strict CSP, single-page app, right-to-left.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { SITE, WAIT, artifacts, holdModule, lastAnswer, launchBrowser, openPage, recordAnswerLengths, startStack, visitorHash } from "./harness.mjs";
import { ANSWER_END, XSS_PAYLOADS, answerTo } from "./mock-upstream.mjs";
import { cspFor, trustedTypesFor } from "./hosts.mjs";

let stack, browser;
before(async () => {
  stack = await startStack();
  browser = await launchBrowser();
}, { timeout: 60000 });
after(async () => {
  await browser?.close();
  await stack?.close();
});

/** Every test is bounded; the waits inside are bounded too (WAIT, the context's default). */
const BOUND = { timeout: 60000 };
const PAGES = { plain: "/plain.html", hostile: "/hostile.html", csp: "/csp.html", spa: "/spa/", rtl: "/rtl.html" };
const W = (selector) => `[data-confab] ${selector}`;

/** Collects CSP violations seen by the page itself (an init script is not subject to the CSP). */
function watchCsp(context) {
  return context.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener("securitypolicyviolation", (e) => {
      const seen = `${e.violatedDirective} blocked ${e.blockedURI} (${e.sourceFile}:${e.lineNumber}) ${e.sample}`;
      window.__cspViolations.push(seen);
      console.error(`CSP violation: ${seen}`);
    }, true);
  });
}

/** Opens a host page in a fresh context; `options` go to the context. */
async function visit(t, name, options = {}) {
  const opened = await openPage(t, browser, options);
  await watchCsp(opened.context);
  const response = await opened.page.goto(stack.hosts.url + (PAGES[name] ?? `/${name}.html`));
  assert.equal(response.status(), 200);
  return { ...opened, response };
}

const violations = (page) => page.evaluate(() => window.__cspViolations);

/** Opens the panel (by clicking the launcher, unless it is open already). */
async function openWidget(page) {
  const panel = page.locator(W("[role=dialog]"));
  if (!(await panel.isVisible())) await page.locator(W("button.launcher")).click();
  await panel.waitFor(WAIT);
  await page.locator(W("textarea")).waitFor(WAIT);
  return panel;
}

async function ask(page, text) {
  await page.locator(W("textarea")).fill(text);
  await page.locator(W("textarea")).press("Enter");
  await page.locator(W("li.user"), { hasText: text }).last().waitFor(WAIT);
}

/** Waits for the mock's whole answer to `question`, and for the widget to be ready again. */
async function answered(page, question) {
  await lastAnswer(page).filter({ hasText: ANSWER_END }).waitFor(WAIT);
  await page.locator(W("button.send")).waitFor(WAIT);
  assert.equal(normalise(await lastAnswer(page).textContent()).trim(), answerTo(question));
}

/** Opens a host page and the panel, asks `question` and waits for the whole answer. */
async function visitAndAsk(t, name, question, options = {}) {
  const opened = await visit(t, name, options);
  await openWidget(opened.page);
  await ask(opened.page, question);
  await answered(opened.page, question);
  return opened;
}

const normalise = (text) => text.replace(/[“”]/g, '"').replace(/[‘’]/g, "'").replace(/\s+/g, " ");

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

/**
 * The box of a visible element. Polled: the loader's placeholder launcher can be replaced by the
 * widget's own between finding it and measuring it.
 */
const boxOf = (locator) => until(() => locator.boundingBox({ timeout: 1000 }).catch(() => null), 5000, "a bounding box");

/** The shadow root's focused element, as a selector-ish description. */
const focused = (page) => page.evaluate(() => {
  const host = document.querySelector("[data-confab]");
  if (document.activeElement !== host) return `page: ${document.activeElement?.tagName}`;
  const el = host.shadowRoot.activeElement;
  return el ? `${el.tagName.toLowerCase()}${el.className ? "." + String(el.className).split(" ").join(".") : ""}` : "none";
});

/** Presses Tab until the launcher has the focus (at most 15 times). */
async function tabToLauncher(page) {
  for (let i = 0; i < 15; i++) {
    await page.keyboard.press("Tab");
    if ((await focused(page)) === "button.launcher") return;
  }
  assert.fail(`Tab never reached the launcher (focus: ${await focused(page)})`);
}

// ---------------------------------------------------------------------------------------------
// On every host page: the launcher, the panel, a streamed answer, a screenshot.

for (const name of Object.keys(PAGES)) {
  test(`${name}: the launcher appears, the panel opens and an answer streams in`, BOUND, async (t) => {
    const { page, errors } = await visit(t, name);
    const launcher = page.locator(W("button.launcher"));
    await launcher.waitFor({ state: "visible", ...WAIT });
    const box = await boxOf(launcher);
    const viewport = page.viewportSize();
    assert.ok(box.x >= 0 && box.y >= 0 && box.x + box.width <= viewport.width && box.y + box.height <= viewport.height,
      `the launcher is inside the viewport: ${JSON.stringify(box)}`);

    const panel = await openWidget(page);
    assert.equal(await panel.getAttribute("aria-label"), SITE.title);
    await page.locator(W("li.greeting"), { hasText: SITE.greeting }).waitFor(WAIT);
    await page.locator(W(".suggestions button")).first().waitFor(WAIT);
    assert.deepEqual(await page.locator(W(".suggestions button")).allTextContents(), SITE.suggestions);

    const recorder = await recordAnswerLengths(page);
    const question = `Hello from the ${name} page`;
    const before = stack.mock.chats().length;
    await ask(page, question);
    await answered(page, question);
    const lengths = await recorder.lengths();
    assert.ok(lengths.length >= 10, `the answer arrived in ${lengths.length} steps: ${lengths}`);
    assert.ok(lengths.every((n, i) => i === 0 || n >= lengths[i - 1]), `text only grows: ${lengths}`);

    // What the relay forwarded: one streamed request ending with the question.
    const forwarded = stack.mock.chats().slice(before);
    assert.equal(forwarded.length, 1);
    assert.equal(forwarded[0].body.stream, true);
    assert.deepEqual(forwarded[0].body.messages.at(-1), { role: "user", content: question });

    await page.screenshot({ path: join(artifacts, `host-${name}.png`) });
    assert.deepEqual(errors, []);
    assert.deepEqual(await violations(page), []);
  });
}

// ---------------------------------------------------------------------------------------------

test("stop aborts the answer and the upstream sees the cancellation", BOUND, async (t) => {
  const { page, errors } = await visit(t, "plain");
  await openWidget(page);
  const cancelled = stack.mock.cancellations.length;
  await ask(page, "SLOW answer please");
  await lastAnswer(page).filter({ hasText: "tick2" }).waitFor(WAIT);
  const cancel = page.waitForRequest((request) => request.url().endsWith("/cancel"), WAIT);
  await page.locator(W("button.stop")).click();
  await page.locator(W(".error"), { hasText: "Stopped" }).waitFor(WAIT);
  await page.locator(W("button.send")).waitFor(WAIT);
  // The widget told the relay to stop the answer (leaving it would not), and the relay closed
  // its upstream request: the provider stops generating (and billing).
  assert.equal((await cancel).method(), "POST");
  const cancellation = await until(() => stack.mock.cancellations[cancelled], 5000, "the upstream to see the cancellation");
  assert.ok(cancellation.tokens < 100, `the upstream stream ran on: ${JSON.stringify(cancellation)}`);
  const text = await lastAnswer(page).textContent();
  await sleep(600);
  assert.equal(await lastAnswer(page).textContent(), text, "the answer still grows after stop");
  // And the chat goes on.
  const next = "After stopping";
  await ask(page, next);
  await answered(page, next);
  assert.deepEqual(errors, []);
});


test("an answer whose connection ends mid-event is followed again from its last event, no word twice", BOUND, async (t) => {
  const { page, errors } = await visit(t, "plain");
  await openWidget(page);
  // The first answer's connection ends in the middle of its ninth event: the page gets its
  // headers and what came before, then nothing more.
  await page.route("**/v1/chat/completions", async (route) => {
    const response = await route.fetch();
    const body = await response.text();
    let cut = 0;
    for (let i = 0; i < 8; i++) cut = body.indexOf("\n\n", cut) + 2;
    await route.fulfill({ response, body: body.slice(0, cut + 12) });
  }, { times: 1 });
  const followed = [];
  page.on("request", (request) => request.url().includes("/v1/chat/streams/") && followed.push(request.headers()["last-event-id"]));
  const question = "Over a bad line";
  const before = stack.mock.chats().length;
  await ask(page, question);
  await answered(page, question);
  assert.deepEqual(followed, ["8"], "followed again once, after the last whole event");
  assert.equal(stack.mock.chats().length, before + 1, "the question was asked once");
  assert.deepEqual(errors, []);
});

/** The browser goes offline for a second (the test cuts its network), then online again. */
async function throughTunnel(page, context) {
  const devtools = await context.newCDPSession(page);
  const network = (offline) => devtools.send("Network.emulateNetworkConditions",
    { offline, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  await network(true);
  await sleep(1000);
  await network(false);
}

test("an answer through a tunnel (offline, then online) completes, no word twice", BOUND, async (t) => {
  const { page, context, errors } = await visit(t, "plain");
  await openWidget(page);
  const followed = [];
  page.on("request", (request) => request.url().includes("/v1/chat/streams/") && followed.push(request.method()));
  const question = "A LONG answer through a tunnel";
  const before = stack.mock.chats().length;
  await ask(page, question);
  await lastAnswer(page).filter({ hasText: "charlie" }).waitFor(WAIT);
  // The browser goes offline and comes back while the answer is still being generated; the
  // connection it had may be dead, so the widget follows the stream again when it is back.
  await throughTunnel(page, context);
  await answered(page, question);
  assert.ok(followed.includes("GET"), `the widget followed the stream again: ${followed}`);
  assert.equal(stack.mock.chats().length, before + 1, "the question was asked once");
  // What the browser says about a request that failed while it was offline is not the widget's.
  assert.deepEqual(errors.filter((e) => !/ERR_INTERNET_DISCONNECTED/.test(e)), []);
});

test("an answer through a tunnel comes back through the other relay, whole, no word twice", BOUND, async (t) => {
  const { page, context, errors } = await visit(t, "plain");
  await openWidget(page);
  // After the tunnel the load balancer sends the page to the other relay, which has never seen
  // the answer: it follows it from Redis, where the first relay mirrors it.
  const rerouted = [];
  await page.route("**/v1/chat/streams/**", (route) => {
    const url = route.request().url().replace(stack.relay.url, stack.other.url);
    rerouted.push(url);
    return route.continue({ url });
  });
  const question = "A LONG answer through another tunnel";
  const before = stack.mock.chats().length;
  await ask(page, question);
  await lastAnswer(page).filter({ hasText: "charlie" }).waitFor(WAIT);
  await throughTunnel(page, context);
  await answered(page, question);
  assert.ok(rerouted.length > 0 && rerouted.every((url) => url.startsWith(stack.other.url)),
    `the widget followed the stream again through the other relay: ${rerouted}`);
  assert.equal(stack.mock.chats().length, before + 1, "the question was asked once");
  assert.deepEqual(errors.filter((e) => !/ERR_INTERNET_DISCONNECTED/.test(e)), []);
});

test("a reload mid-answer follows the answer again and shows it once, whole", BOUND, async (t) => {
  const { page, errors } = await visit(t, "plain");
  await openWidget(page);
  const question = "Just before a reload";
  const before = stack.mock.chats().length;
  await ask(page, question);
  await lastAnswer(page).filter({ hasText: "bravo" }).waitFor(WAIT);
  await page.reload();
  await openWidget(page);
  await answered(page, question);
  assert.equal(await page.locator(W("li.user")).count(), 1);
  assert.equal(await page.locator(W("li.assistant:not(.greeting)")).count(), 1);
  assert.equal(stack.mock.chats().length, before + 1, "the question was asked once");
  assert.deepEqual(errors, []);
});
test("a reload restores the conversation, and clear empties it for good", BOUND, async (t) => {
  const question = "Please remember this conversation";
  const { page, errors } = await visitAndAsk(t, "plain", question);
  const stored = await page.evaluate((key) => localStorage.getItem(`confab:v2:${key}`), stack.key);
  assert.ok(stored && stored.includes(question), `the conversation is stored under confab:v2:<site key>: ${stored}`);

  await page.reload();
  await openWidget(page);
  await page.locator(W("li.user"), { hasText: question }).waitFor(WAIT);
  assert.deepEqual(await page.locator(W("li.user")).allTextContents(), [question]);
  assert.equal(normalise(await lastAnswer(page).textContent()).trim(), answerTo(question));

  await page.locator(W("button.clear")).click();
  await until(async () => (await page.locator(W("li.user")).count()) === 0, 5000, "clear to empty the list");
  await page.reload();
  await openWidget(page);
  await page.locator(W("li.greeting")).waitFor(WAIT);
  assert.equal(await page.locator(W("li.user")).count(), 0);
  assert.equal(await page.locator(W("li.assistant:not(.greeting)")).count(), 0);
  assert.deepEqual(errors, []);
});

test("an upstream 429 shows how long to wait", BOUND, async (t) => {
  const { page, errors } = await visit(t, "plain");
  await openWidget(page);
  await ask(page, "LIMIT me");
  const error = page.locator(W(".error[role=alert]"));
  await error.filter({ hasText: "17 s" }).waitFor(WAIT);
  await page.locator(W(".error button.retry")).waitFor(WAIT);
  // The failed request shows as a failed resource load in the console; nothing else may.
  assert.deepEqual(errors.filter((e) => !/status of 429/.test(e)), []);
});

test("an answer carrying HTML, script and javascript: links executes nothing", BOUND, async (t) => {
  const { page, errors } = await visit(t, "plain");
  const dialogs = [];
  page.on("dialog", (dialog) => {
    dialogs.push(dialog.message());
    dialog.dismiss().catch(() => {});
  });
  await openWidget(page);
  await ask(page, "XSS please");
  const answer = lastAnswer(page);
  await answer.filter({ hasText: "End of payloads." }).waitFor(WAIT);
  await page.locator(W("button.send")).waitFor(WAIT);
  await sleep(500); // time for an onerror/onload to fire, if anything was created

  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  assert.deepEqual(dialogs, []);
  const found = await page.evaluate(() => {
    const shadow = document.querySelector("[data-confab]").shadowRoot;
    const answers = shadow.querySelectorAll("li.assistant:not(.greeting)");
    const li = answers[answers.length - 1];
    const count = (root, selector) => root.querySelectorAll(selector).length;
    return {
      inAnswer: count(li, "img, script, iframe, svg, object, embed, style, link, form, input, frame"),
      handlers: [...li.querySelectorAll("*")].flatMap((el) => el.getAttributeNames().filter((n) => /^on/i.test(n))),
      inShadow: count(shadow, "img, script, iframe, object, embed"),
      inPage: count(document, "img, iframe, object, embed"),
      links: [...li.querySelectorAll("a")].map((a) => ({ href: a.getAttribute("href"), rel: a.getAttribute("rel"), text: a.textContent })),
      strong: [...li.querySelectorAll("strong, b")].map((el) => el.textContent),
      text: li.textContent,
    };
  });
  assert.equal(found.inAnswer, 0, "no active element inside the answer");
  assert.deepEqual(found.handlers, []);
  assert.equal(found.inShadow, 0);
  assert.equal(found.inPage, 0);
  // The only link is the legitimate one, made safe to follow.
  assert.deepEqual(found.links, [{ href: "https://example.com/docs", rel: "noopener noreferrer", text: "docs" }]);
  // The answer is rendered as markdown, and the raw HTML shows as the text it is.
  assert.deepEqual(found.strong, ["payloads"]);
  const text = normalise(found.text);
  for (const payload of XSS_PAYLOADS.filter((p) => p.startsWith("<"))) {
    assert.ok(text.includes(payload), `the payload ${payload} is shown as text in: ${text}`);
  }
  assert.ok(text.includes("click") && text.includes("data"), "the unsafe links keep their text");

  // Restored from storage after a reload, the answer is just as inert.
  await page.reload();
  await openWidget(page);
  await lastAnswer(page).filter({ hasText: "End of payloads." }).waitFor(WAIT);
  await sleep(500);
  const restored = await page.evaluate(() => {
    const shadow = document.querySelector("[data-confab]").shadowRoot;
    return {
      active: shadow.querySelectorAll("li img, li script, li iframe, li svg, li object, li embed").length,
      links: [...shadow.querySelectorAll("li a")].map((a) => a.getAttribute("href")),
    };
  });
  assert.deepEqual(restored, { active: 0, links: ["https://example.com/docs"] });
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  assert.deepEqual(dialogs, []);
  assert.deepEqual(errors, []);
});

// ---------------------------------------------------------------------------------------------
// Hostile CSS: everything measurable inside the widget is the same as on the plain page.

const STYLE_PROPS = ["font-family", "font-size", "font-weight", "font-style", "line-height", "color",
  "background-color", "padding", "margin", "border-top-width", "border-top-style", "position", "display",
  "width", "height", "z-index", "letter-spacing", "word-spacing", "text-transform", "text-indent",
  "text-shadow", "text-align", "white-space", "visibility", "opacity", "transform", "box-sizing", "cursor"];
const STYLED = [".confab", "button.launcher", "[role=dialog]", "header", "h2", "ol.messages",
  "li.greeting", "li.user", "li.assistant:not(.greeting)", "textarea", "button.send"];

async function measureWidget(t, name) {
  const { page, errors } = await visitAndAsk(t, name, "How do you look?", { reducedMotion: "reduce" });
  await page.mouse.move(1, 1);
  await page.evaluate(() => document.querySelector("[data-confab]").shadowRoot.activeElement?.blur());
  const measured = await page.evaluate(({ selectors, props }) => {
    const shadow = document.querySelector("[data-confab]").shadowRoot;
    return Object.fromEntries(selectors.map((selector) => {
      const el = shadow.querySelector(selector);
      if (!el) return [selector, null];
      const style = getComputedStyle(el);
      const rect = el.getBoundingClientRect();
      const values = Object.fromEntries(props.map((p) => [p, style.getPropertyValue(p)]));
      values.rect = [rect.x, rect.y, rect.width, rect.height].map((v) => Math.round(v)).join(",");
      return [selector, values];
    }));
  }, { selectors: STYLED, props: STYLE_PROPS });
  return { measured, errors };
}

test("hostile CSS changes nothing measurable in the widget", BOUND, async (t) => {
  const plain = await measureWidget(t, "plain");
  const hostile = await measureWidget(t, "hostile");
  const differences = [];
  for (const selector of STYLED) {
    assert.ok(plain.measured[selector], `${selector} exists on the plain page`);
    for (const [prop, value] of Object.entries(plain.measured[selector])) {
      const other = hostile.measured[selector]?.[prop];
      if (other !== value) differences.push(`${selector} ${prop}: plain ${JSON.stringify(value)}, hostile ${JSON.stringify(other)}`);
    }
  }
  assert.deepEqual(differences, []);
  assert.deepEqual(plain.errors, []);
  assert.deepEqual(hostile.errors, []);
});

// ---------------------------------------------------------------------------------------------

/** Closes the panel, then checks that neither the page nor the report endpoint saw a violation. */
async function closeWithoutViolations(page, errors, reportsBefore) {
  await page.locator(W("button.close")).click();
  await page.locator(W("[role=dialog]")).waitFor({ state: "hidden", ...WAIT });
  await sleep(1000); // reports are sent asynchronously
  assert.deepEqual(await violations(page), []);
  assert.deepEqual(stack.hosts.cspReports.slice(reportsBefore), []);
  assert.deepEqual(errors, []);
}

test("strict CSP: a full round trip without a single violation", BOUND, async (t) => {
  const reportsBefore = stack.hosts.cspReports.length;
  const { page, errors, response } = await visitAndAsk(t, "csp", "Does this work under a strict policy?");
  assert.equal(response.headers()["content-security-policy"], cspFor(stack.relay.url));
  await closeWithoutViolations(page, errors, reportsBefore);

  // The two channels do catch a violation: an inline style is refused and reported.
  await page.evaluate(() => document.head.append(Object.assign(document.createElement("style"), { textContent: "p { color: red }" })));
  await until(async () => (await violations(page)).length > 0, 5000, "the violation event");
  await until(() => stack.hosts.cspReports.length > reportsBefore, 5000, "the violation report");
  assert.match(JSON.stringify(stack.hosts.cspReports.at(-1)), /style-src/);
});

test("Trusted Types: the widget loads through the `confab` policy and chats without a violation", BOUND, async (t) => {
  const reportsBefore = stack.hosts.cspReports.length;
  const { page, errors, response } = await visitAndAsk(t, "tt", "Does this work with Trusted Types?");
  assert.equal(response.headers()["content-security-policy"], trustedTypesFor(stack.relay.url));
  await ask(page, "And a second answer, rendered the same way?");
  await answered(page, "And a second answer, rendered the same way?");
  await closeWithoutViolations(page, errors, reportsBefore);
  // The page does enforce Trusted Types: a string given to an HTML sink throws.
  const refused = await page.evaluate(() => {
    try {
      document.createElement("div").innerHTML = "<b>bold</b>";
      return false;
    } catch (error) {
      return error instanceof TypeError;
    }
  });
  assert.equal(refused, true, "the page enforces Trusted Types");
});

test("Trusted Types allowing no policy: the launcher is drawn and the console says what to allow", BOUND, async (t) => {
  const { page, errors } = await visit(t, "tt-none");
  await page.locator(W("button.launcher svg")).waitFor(WAIT);
  await page.locator(W("button.launcher")).click();
  await until(() => errors.some((e) => e.includes("trusted-types confab")), 5000, "the explanation");
  assert.equal(await page.locator(W("[role=dialog]")).count(), 0, "no panel without its script");
});

test("single-page app: the widget survives client-side navigations", BOUND, async (t) => {
  const first = "Hello before navigating";
  const { page, errors } = await visitAndAsk(t, "spa", first);

  for (const [link, route] of [["Pricing", "/spa/pricing"], ["Contact", "/spa/contact"]]) {
    await page.getByRole("link", { name: link }).click();
    await page.locator(`body[data-route="${route}"]`).waitFor(WAIT);
    assert.equal(new URL(page.url()).pathname, route);
    assert.equal(await page.locator("[data-confab]").count(), 1, "one widget, still in the page");
    await openWidget(page);
    assert.deepEqual(await page.locator(W("li.user")).allTextContents(), [first]);
  }
  assert.equal(await page.evaluate(() => document.body.dataset.renders), "3", "no reload happened");

  const second = "And after navigating";
  const before = stack.mock.chats().length;
  await ask(page, second);
  await answered(page, second);
  assert.deepEqual(await page.locator(W("li.user")).allTextContents(), [first, second]);
  // The conversation went upstream whole.
  const messages = stack.mock.chats()[before].body.messages.filter((m) => m.role !== "system");
  assert.deepEqual(messages.map((m) => m.role), ["user", "assistant", "user"]);

  await page.goBack();
  await page.locator('body[data-route="/spa/pricing"]').waitFor(WAIT);
  assert.equal(await page.locator("[data-confab]").count(), 1);
  assert.equal(await page.locator(W("li.user")).count(), 2);
  assert.deepEqual(errors, []);
});

test("right-to-left page: the widget is RTL and sits on the left", BOUND, async (t) => {
  const { page, errors } = await visit(t, "rtl");
  await openWidget(page);
  await page.locator(W(".confab[dir=rtl]")).waitFor({ state: "attached", ...WAIT });
  const viewport = page.viewportSize();
  const launcher = await boxOf(page.locator(W("button.launcher")));
  assert.ok(launcher.x + launcher.width < viewport.width / 2, `launcher on the left: ${JSON.stringify(launcher)}`);
  const panel = await boxOf(page.locator(W("[role=dialog]")));
  assert.ok(panel.x < viewport.width / 2, `panel on the left: ${JSON.stringify(panel)}`);
  assert.deepEqual(errors, []);
});

test("right-to-left page: messages in a left-to-right language still read left to right", BOUND, async (t) => {
  // Each message takes the direction of its own text (dir="auto"), not the panel's: an English
  // answer in an Arabic page must not end with its full stop on the left.
  const question = "An English question";
  const { page, errors } = await visitAndAsk(t, "rtl", question);
  const directions = await page.evaluate(() => {
    const shadow = document.querySelector("[data-confab]").shadowRoot;
    return Object.fromEntries(["li.greeting", "li.user", "li.assistant:not(.greeting)"].map((s) => {
      const el = shadow.querySelector(s);
      return [s, el && getComputedStyle(el).direction];
    }));
  });
  assert.deepEqual(directions, { "li.greeting": "ltr", "li.user": "ltr", "li.assistant:not(.greeting)": "ltr" });
  assert.deepEqual(errors, []);
});

test("keyboard only: Tab to the launcher, Enter opens, type and send, Escape closes", BOUND, async (t) => {
  const { page, errors } = await visit(t, "plain");
  // The module replaces the placeholder launcher when it loads: wait for it first.
  await page.locator(W(".confab")).waitFor({ state: "attached", ...WAIT });
  await tabToLauncher(page);

  await page.keyboard.press("Enter");
  await page.locator(W("[role=dialog]")).waitFor(WAIT);
  assert.equal(await page.locator(W("button.launcher")).getAttribute("aria-expanded"), "true");
  await until(async () => (await focused(page)) === "textarea", 3000, "focus to move into the textarea");

  const question = "Typed with the keyboard only";
  await page.keyboard.type(question);
  await page.keyboard.press("Enter");
  await answered(page, question);
  const live = page.locator(W("[aria-live=polite]"));
  await live.filter({ hasText: ANSWER_END }).waitFor({ state: "attached", ...WAIT });
  assert.match(normalise(await live.textContent()), new RegExp(ANSWER_END.replace(".", "\\.")));

  await page.keyboard.press("Escape");
  await page.locator(W("[role=dialog]")).waitFor({ state: "hidden", ...WAIT });
  await until(async () => (await focused(page)) === "button.launcher", 3000, "focus to return to the launcher");
  assert.equal(await page.locator(W("button.launcher")).getAttribute("aria-expanded"), "false");
  assert.deepEqual(errors, []);
});

test("keyboard focus on the launcher survives the module's load", BOUND, async (t) => {
  const { page, errors } = await openPage(t, browser);
  // Hold the module back so that the placeholder launcher (drawn by the loader) gets the focus.
  const release = await holdModule(page);
  await page.goto(stack.hosts.url + PAGES.plain);
  await page.locator(W("button.launcher")).waitFor(WAIT);
  await tabToLauncher(page);
  release();
  await page.locator(W(".confab")).waitFor({ state: "attached", ...WAIT });
  assert.equal(await focused(page), "button.launcher", "the focus was lost when the widget replaced the placeholder");
  await page.keyboard.press("Enter");
  await page.locator(W("[role=dialog]")).waitFor(WAIT);
  assert.deepEqual(errors, []);
});

test("Confab.send before the module has loaded opens the panel, emits open, and answers", BOUND, async (t) => {
  const { page, errors } = await openPage(t, browser);
  const release = await holdModule(page);
  await page.goto(stack.hosts.url + PAGES.plain);
  await page.waitForFunction(() => window.Confab, null, WAIT);
  const question = "Sent by the page's script";
  const answer = page.evaluate((text) => new Promise((resolve) => {
    const events = [];
    window.Confab.on("open", () => events.push("open"));
    window.Confab.on("close", () => events.push("close"));
    window.Confab.on("message", (message) => resolve({ events, message }));
    window.Confab.send(text);
  }), question);
  await sleep(200);
  release();
  const { events, message } = await answer;
  assert.deepEqual(events, ["open"], "the page was told that the panel opened");
  assert.equal(normalise(message).trim(), answerTo(question));
  await page.locator(W("[role=dialog]")).waitFor(WAIT);
  assert.deepEqual(errors, []);
});

test("phone: the open panel fills the screen and its input does not zoom", BOUND, async (t) => {
  const { page, errors } = await visit(t, "plain", {
    viewport: { width: 375, height: 667 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2,
  });
  await page.locator(W("button.launcher")).tap();
  const panel = page.locator(W("[role=dialog]"));
  await panel.waitFor(WAIT);
  await page.locator(W("textarea")).waitFor(WAIT);
  await sleep(400); // the opening animation
  const box = await boxOf(panel);
  const near = (a, b) => Math.abs(a - b) <= 1;
  assert.ok(near(box.x, 0) && near(box.y, 0) && near(box.width, 375) && near(box.height, 667),
    `the panel fills the viewport: ${JSON.stringify(box)}`);
  // The loader keeps the panel's height in step with the visual viewport (what an on-screen
  // keyboard leaves free).
  const fit = await page.evaluate(() => ({
    property: document.querySelector("[data-confab]").style.getPropertyValue("--confab-viewport-height"),
    visual: visualViewport.height,
  }));
  assert.equal(fit.property, `${fit.visual}px`);
  const fontSize = await page.locator(W("textarea")).evaluate((el) => parseFloat(getComputedStyle(el).fontSize));
  assert.ok(fontSize >= 16, `textarea font-size ${fontSize}px would zoom on focus`);

  const question = "Hello from a phone";
  await page.locator(W("textarea")).fill(question);
  await page.locator(W("button.send")).tap();
  await answered(page, question);
  await page.screenshot({ path: join(artifacts, "host-phone.png") });
  await page.locator(W("button.close")).tap();
  await panel.waitFor({ state: "hidden", ...WAIT });
  assert.deepEqual(errors, []);
});

test("script-tag attributes set the title, greeting, colour, side and open state", BOUND, async (t) => {
  const { page, errors } = await visit(t, "attributes");
  // Open on load, without a click.
  const panel = page.locator(W("[role=dialog]"));
  await panel.waitFor(WAIT);
  assert.equal(await panel.getAttribute("aria-label"), "Ask Acme");
  assert.equal(await page.locator(W("header h2")).textContent(), "Ask Acme");
  await page.locator(W("li.greeting"), { hasText: "Welcome to Acme" }).waitFor(WAIT);
  const launcher = page.locator(W("button.launcher"));
  const box = await boxOf(launcher);
  assert.ok(box.x + box.width < page.viewportSize().width / 2, `launcher on the left: ${JSON.stringify(box)}`);
  assert.equal(await launcher.evaluate((el) => getComputedStyle(el).backgroundColor), "rgb(138, 43, 226)");
  await page.screenshot({ path: join(artifacts, "host-attributes.png") });
  assert.deepEqual(errors, []);
});

/**
 * WCAG contrast ratios of the widget's text against what is behind it (the nearest ancestor
 * with an opaque background), for every visible text-bearing element of the open panel.
 */
function contrastReport() {
  const parse = (c) => (c.match(/[\d.]+/g) || []).map(Number);
  const luminance = ([r, g, b]) => {
    const lin = (v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || c[3] === 1) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const shadow = document.querySelector("[data-confab]").shadowRoot;
  const selectors = ["header h2", "button.clear", "button.close", "li.greeting", "li.user",
    "li.assistant:not(.greeting)", "textarea", "button.send", ".suggestions button", ".error"];
  return selectors.flatMap((selector) => [...shadow.querySelectorAll(selector)].map((el) => {
    const [l1, l2] = [luminance(parse(getComputedStyle(el).color)), luminance(background(el))];
    const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    return { selector, ratio: Math.round(ratio * 100) / 100 };
  }));
}

for (const colorScheme of ["light", "dark"]) {
  test(`${colorScheme} scheme: every text meets WCAG AA contrast (4.5:1)`, BOUND, async (t) => {
    const { page, errors } = await visit(t, "plain", { colorScheme });
    await openWidget(page);
    await page.locator(W(".suggestions button")).first().waitFor(WAIT);
    const before = await page.evaluate(contrastReport);
    const question = `Contrast in the ${colorScheme} scheme`;
    await ask(page, question);
    await answered(page, question);
    const after = await page.evaluate(contrastReport);
    const all = [...before, ...after];
    for (const selector of ["header h2", "li.user", "li.assistant:not(.greeting)", "button.send", ".suggestions button"]) {
      assert.ok(all.some((r) => r.selector === selector), `${selector} was measured`);
    }
    const low = all.filter((r) => r.ratio < 4.5);
    assert.deepEqual(low, [], `below 4.5:1 in the ${colorScheme} scheme`);
    // The scheme really changed the widget (dark background in the dark scheme).
    const panelBackground = await page.locator(W("[role=dialog]")).evaluate((el) => getComputedStyle(el).backgroundColor);
    assert.equal(panelBackground, colorScheme === "dark" ? "rgb(29, 33, 38)" : "rgb(255, 255, 255)");
    await page.screenshot({ path: join(artifacts, `host-plain-${colorScheme}.png`) });
    assert.deepEqual(errors, []);
  });
}

test("verified visitors: the token from the tag is sent; without one the visitor is asked to sign in", BOUND, async (t) => {
  const signedIn = await visit(t, "verified");
  await openWidget(signedIn.page);
  const question = "Hello as a member";
  await ask(signedIn.page, question);
  await answered(signedIn.page, question);
  const forwarded = stack.mock.requests.at(-1);
  assert.ok(forwarded, "the member's question reached the upstream");
  assert.deepEqual(signedIn.errors, []);

  const signedOut = await visit(t, "unverified");
  await openWidget(signedOut.page);
  await signedOut.page.locator(W("textarea")).fill("Hello as a stranger");
  await signedOut.page.locator(W("textarea")).press("Enter");
  await signedOut.page.locator(W(".error"), { hasText: "Please sign in to chat with us." }).waitFor(WAIT);

  // After signing in, the page's script hands the widget the user's id and hash. The signed-in
  // user starts from their own conversation: the stranger's question is not carried over.
  await signedOut.page.evaluate(({ userId, userHash }) => window.Confab.identify({ userId, userHash }),
    { userId: "bob@example.com", userHash: visitorHash(stack.visitorSecret, "bob@example.com") });
  await until(async () => (await signedOut.page.locator(W("li.user")).count()) === 0, 5000, "the panel to empty");
  assert.equal(await signedOut.page.locator(W(".error")).count(), 0);
  await ask(signedOut.page, "Hello as bob");
  await answered(signedOut.page, "Hello as bob");
});
