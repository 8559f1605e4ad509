// A scripted OpenAI-compatible upstream for the end-to-end tests, on 127.0.0.1:<random port>.
//
//   POST /v1/chat/completions   streamed (SSE) or not; what it answers depends on the last user
//                               message (LIMIT, XSS, SLOW, LONG, the PATHOLOGICAL names; below)
//   GET  /v1/models             the one model it serves
//
// Everything it receives is kept in `requests`; every stream the relay closed before the end is
// counted in `cancellations`.
import { createServer } from "node:http";

export const MODEL = "mock-model";

/** The default answer: 20 words and a closing sentence, streamed one word per chunk. */
export const WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
  "india", "juliett", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
  "sierra", "tango"];
export const ANSWER_END = "That is all.";
export const answerTo = (question) => `You asked: ${question}. ${WORDS.join(" ")}. ${ANSWER_END}`;

/** The hostile answer: markdown and raw HTML that must never run. */
export const XSS_PAYLOADS = [
  `<img src=x onerror="window.__pwned=1">`,
  `<script>window.__pwned=2</script>`,
  `[click](javascript:window.__pwned=3)`,
  `<a href="javascript:window.__pwned=4">a</a>`,
  `<svg onload="window.__pwned=5">`,
  `<iframe srcdoc="<script>parent.__pwned=6</script>">`,
  `[data](data:text/html,<script>alert(1)</script>)`,
];
export const XSS_ANSWER = [
  "Here are some **payloads**:",
  "",
  ...XSS_PAYLOADS.map((p) => `- ${p}`),
  "",
  "And the real [docs](https://example.com/docs). End of payloads.",
].join("\n");

/**
 * Answers that were costly to render while they streamed (bench/widget.mjs): asked for by a
 * question containing the name, streamed one piece per chunk, a millisecond apart.
 */
export const PATHOLOGICAL = {
  // 4,000 unclosed brackets: each one looked for its `]` to the end of the answer.
  RENDER_BRACKETS: Array(4000).fill("["),
  // 2,000 runs of two backticks, each escaped: the run of one left after each escape looked for
  // a closing run of one to the end of the answer.
  RENDER_BACKTICKS: Array(2000).fill("\\`` "),
  // 2,000 code spans: every one was rebuilt for every token.
  RENDER_CODE_SPANS: Array(2000).fill("`a` "),
};
const PATHOLOGICAL_TOKEN_MS = 1;

export const RETRY_AFTER = 17;
const TOKEN_MS = 40;
const SLOW_TOKEN_MS = 200;
const SLOW_MAX_MS = 60000;

const chunk = (content) => ({
  id: "x", object: "chat.completion.chunk", created: 1, model: "mock",
  choices: [{ index: 0, delta: { content }, finish_reason: null }],
});

/** Splits text into chunks the way a model would: words with their following space. */
const tokensOf = (text) => text.match(/\S+\s*|\s+/g) ?? [];

function lastUserText(body) {
  const messages = Array.isArray(body?.messages) ? body.messages : [];
  const last = [...messages].reverse().find((m) => m.role === "user");
  if (!last) return "";
  return typeof last.content === "string"
    ? last.content
    : (last.content ?? []).map((part) => part.text ?? "").join("");
}

export async function startMockUpstream() {
  const requests = [];
  const cancellations = [];
  const open = new Set();

  function stream(req, res, body, tokens, delayMs, { endless = false } = {}) {
    res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
    const send = (data) => res.write(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`);
    const started = Date.now();
    let sent = 0;
    let finished = false;
    const timer = setInterval(() => {
      if (endless ? Date.now() - started > SLOW_MAX_MS : sent >= tokens.length) {
        finished = true;
        clearInterval(timer);
        send({ ...chunk(""), choices: [{ index: 0, delta: {}, finish_reason: "stop" }] });
        if (body.stream_options?.include_usage) {
          send({ ...chunk(""), choices: [], usage: { prompt_tokens: 10, completion_tokens: sent, total_tokens: 10 + sent } });
        }
        send("[DONE]");
        res.end();
        return;
      }
      send(chunk(endless ? `tick${sent} ` : tokens[sent]));
      sent += 1;
    }, delayMs);
    res.on("close", () => {
      clearInterval(timer);
      if (!finished) cancellations.push({ at: Date.now(), after: Date.now() - started, tokens: sent });
    });
    open.add(res);
    res.on("close", () => open.delete(res));
  }

  function complete(res, text) {
    json(res, 200, {
      id: "x", object: "chat.completion", created: 1, model: "mock",
      choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: "stop" }],
      usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 },
    });
  }

  const server = createServer((req, res) => {
    let raw = "";
    req.setEncoding("utf8");
    req.on("data", (d) => (raw += d));
    req.on("end", () => {
      let body = null;
      try {
        body = raw ? JSON.parse(raw) : null;
      } catch {
        body = raw;
      }
      requests.push({ method: req.method, url: req.url, headers: req.headers, body });
      const path = req.url.split("?")[0];
      if (req.method === "GET" && path === "/v1/models") {
        return json(res, 200, { object: "list", data: [{ id: MODEL, object: "model", created: 1, owned_by: "mock" }] });
      }
      if (req.method !== "POST" || path !== "/v1/chat/completions") {
        return json(res, 404, { error: { message: "not found", type: "invalid_request_error", code: "not_found" } });
      }
      const question = lastUserText(body);
      if (question.includes("LIMIT")) {
        res.setHeader("Retry-After", String(RETRY_AFTER));
        return json(res, 429, { error: { message: "Rate limit reached for requests", type: "requests", code: "rate_limit_exceeded" } });
      }
      const text = question.includes("XSS") ? XSS_ANSWER : answerTo(question);
      if (!body?.stream) return complete(res, text);
      if (question.includes("SLOW")) return stream(req, res, body, [], SLOW_TOKEN_MS, { endless: true });
      // The usual answer, at the slow pace: still streaming a few seconds after it starts.
      if (question.includes("LONG")) return stream(req, res, body, tokensOf(text), SLOW_TOKEN_MS);
      const pathological = Object.keys(PATHOLOGICAL).find((name) => question.includes(name));
      if (pathological) return stream(req, res, body, PATHOLOGICAL[pathological], PATHOLOGICAL_TOKEN_MS);
      // The hostile answer goes in small pieces so that tags are split across chunks too.
      const tokens = question.includes("XSS") ? text.match(/[^]{1,7}/g) : tokensOf(text);
      return stream(req, res, body, tokens, question.includes("XSS") ? 10 : TOKEN_MS);
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}/v1`,
    requests,
    cancellations,
    /** The chat requests the relay forwarded, oldest first. */
    chats: () => requests.filter((r) => r.url.startsWith("/v1/chat/completions")),
    close() {
      for (const res of open) res.destroy();
      server.closeAllConnections?.();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

function json(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}
