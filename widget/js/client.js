// The headless client (the package's createClient): the relay's chat API for developers who
// draw their own UI. No wasm, no DOM: fetch and a few lines of SSE parsing (hand-written: an
// SSE parser package would be a dependency of every app that imports this one, for the 30 lines
// below).
import { token } from "./identity.js";

// What a failed call throws: the relay's error envelope (`{"error": {"message", "type",
// "code"}}`), its HTTP status and, when rate limited, how long to wait.
export class ConfabError extends Error {
  constructor(message, { status = 0, code = null, type = null, retryAfter = null } = {}) {
    super(message);
    this.name = "ConfabError";
    this.status = status;
    this.code = code;
    this.type = type;
    this.retryAfter = retryAfter;
  }
}

const failure = async (response) => {
  let error = {};
  try {
    error = (await response.json()).error || {};
  } catch {
    // Not the relay's envelope (a proxy's page): the status says what there is to say.
  }
  const retryAfter = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  return new ConfabError(error.message || "HTTP " + response.status, {
    status: response.status, code: error.code || null, type: error.type || null,
    retryAfter: Number.isFinite(retryAfter) ? retryAfter : null,
  });
};

const aborted = (signal) => signal && signal.aborted;

// An error thrown by the app's `onDelta`, carried out of the reading as it is.
class ListenerError extends Error {
  constructor(cause) {
    super("onDelta threw");
    this.cause = cause;
  }
}
const abortError = (signal) =>
  (signal && signal.reason) || new DOMException("The chat was aborted.", "AbortError");

// Calls `onEvent({ id, event, data })` for each event of an SSE body until it returns true
// (the answer is complete): resolves true then, false if the body ended first; rejects with
// what `onEvent` throws. The connection is closed whichever way reading ends.
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    return await readBody(reader, onEvent);
  } finally {
    reader.cancel().catch(() => {});
  }
}

async function readBody(reader, onEvent) {
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += value;
    let end;
    while ((end = /\r?\n\r?\n/.exec(buffer))) {
      const block = buffer.slice(0, end.index);
      buffer = buffer.slice(end.index + end[0].length);
      const event = { id: null, event: "message", data: [] };
      for (const line of block.split(/\r?\n/)) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") event.data.push(value);
        else if (field === "id") event.id = value;
        else if (field === "event") event.event = value;
      }
      if (event.data.length && onEvent({ ...event, data: event.data.join("\n") })) return true;
    }
  }
}

// Waits `ms`, or rejects when `signal` aborts.
const pause = (ms, signal) =>
  new Promise((resolve, reject) => {
    if (aborted(signal)) return reject(abortError(signal));
    const done = () => {
      clearTimeout(timer);
      reject(abortError(signal));
    };
    const timer = setTimeout(() => {
      if (signal) signal.removeEventListener("abort", done);
      resolve();
    }, ms);
    if (signal) signal.addEventListener("abort", done, { once: true });
  });

// Attempts to follow a lost answer again (as the widget does: half a second, doubling to 8 s).
const MAX_ATTEMPTS = 16;

export function createClient(options = {}) {
  const { relay, site } = options;
  if (!relay || !site) throw new TypeError("Confab: createClient needs { relay, site }");
  const base = String(relay).replace(/\/$/, "");
  let visitor = token(options.visitorToken);
  const headers = (more = {}) => ({
    Authorization: "Bearer " + site,
    ...(visitor ? { "X-Confab-Visitor": visitor } : {}),
    ...more,
  });

  // Stops the answer `stream` on the relay (its generation ends too).
  const cancel = (stream) =>
    fetch(base + "/v1/chat/streams/" + encodeURIComponent(stream) + "/cancel", {
      method: "POST", headers: headers(),
    }).then(() => undefined, () => undefined);

  // Reads the answer from `response` (or, without it, from the relay's replay of `stream`),
  // following it again from the last event whenever the connection is lost.
  async function follow(stream, response, signal, onDelta, answer) {
    let last = 0, failures = 0;
    const onEvent = ({ id, event, data }) => {
      const seq = id === null ? NaN : Number(id);
      if (Number.isFinite(seq)) {
        if (seq <= last) return false;
        last = seq;
      }
      if (event === "error") throw new ConfabError("The assistant could not answer.", { code: "upstream_error" });
      if (data === "[DONE]") return true;
      let chunk;
      try {
        chunk = JSON.parse(data);
      } catch {
        return false;
      }
      const text = (chunk.choices || []).map((c) => (c.delta && c.delta.content) || "").join("");
      if (text) {
        answer.text += text;
        if (onDelta) {
          try {
            onDelta(text, answer);
          } catch (error) {
            // The app's own failure: reading stops, and the chat rejects with it.
            throw new ListenerError(error);
          }
        }
      } else if (chunk.confab && Array.isArray(chunk.confab.sources)) {
        // Links only to web pages, as the widget shows them.
        answer.sources = chunk.confab.sources
          .filter((s) => s && typeof s.title === "string")
          .map((s) => ({ title: s.title, ...(/^https?:\/\//i.test(s.url || "") ? { url: s.url } : {}) }));
      }
      return false;
    };
    for (;;) {
      if (response) {
        const before = last;
        try {
          if (await readEvents(response, onEvent)) return answer;
        } catch (error) {
          if (aborted(signal)) throw abortError(signal);
          if (error instanceof ListenerError) throw error.cause;
          if (error instanceof ConfabError) throw error;
        }
        failures = last === before ? failures + 1 : 0;
        response = undefined;
      }
      if (!stream) throw new ConfabError("The connection was lost.", { code: "connection_lost" });
      if (failures >= MAX_ATTEMPTS) throw new ConfabError("The relay could not be reached.", { code: "offline" });
      if (failures > 0) await pause(500 * 2 ** Math.min(failures - 1, 4), signal);
      let next;
      try {
        next = await fetch(base + "/v1/chat/streams/" + encodeURIComponent(stream), {
          headers: headers({ "Last-Event-ID": String(last) }), signal,
        });
      } catch (error) {
        if (aborted(signal)) throw abortError(signal);
        failures += 1;
        continue;
      }
      // Gone (no longer kept, or not this visitor's): nothing more will come.
      if (!next.ok) {
        const error = await failure(next);
        throw aborted(signal) ? abortError(signal) : error;
      }
      response = next;
    }
  }

  // Runs `work(stream => ...)`, cancelling the answer on the relay if `signal` aborts once it
  // has a name.
  const cancellable = async (signal, work) => {
    let stream;
    const stop = () => stream && cancel(stream);
    if (signal) signal.addEventListener("abort", stop, { once: true });
    try {
      return await work((name) => {
        stream = name;
        // Aborted before the answer had a name: it is cancelled now that it has one.
        if (name && aborted(signal)) stop();
        return name;
      });
    } finally {
      if (signal) signal.removeEventListener("abort", stop);
    }
  };

  return {
    // Streams the answer to `messages` ({ role, content }[]): `onDelta(text, answer)` for each
    // piece as it arrives. Resolves to { text, sources, requestId, stream } once it is
    // complete; rejects with a ConfabError, or the abort reason when `signal` aborts (the answer
    // is then cancelled on the relay). A lost connection is followed again from the last piece
    // received where the relay keeps the stream (`stream` is its name).
    chat: (messages, { signal, onDelta, conversation } = {}) =>
      cancellable(signal, async (named) => {
        if (aborted(signal)) throw abortError(signal);
        const response = await fetch(base + "/v1/chat/completions", {
          method: "POST",
          headers: headers({
            "Content-Type": "application/json",
            ...(conversation ? { "X-Confab-Conversation": conversation } : {}),
          }),
          body: JSON.stringify({ messages, stream: true }),
          signal,
        }).catch(() => {
          throw aborted(signal) ? abortError(signal) : new ConfabError("The relay could not be reached.", { code: "offline" });
        });
        if (!response.ok) {
          const error = await failure(response);
          throw aborted(signal) ? abortError(signal) : error;
        }
        const stream = named(response.headers.get("X-Confab-Stream"));
        const answer = { text: "", sources: [], requestId: response.headers.get("X-Request-Id"), stream };
        return follow(stream, response, signal, onDelta, answer);
      }),
    // Follows the answer the relay named `stream` (a chat's `stream`, kept after a reload) from
    // its start.
    resume: (stream, { signal, onDelta } = {}) =>
      cancellable(signal, async (named) => {
        named(stream);
        return follow(stream, undefined, signal, onDelta, { text: "", sources: [], requestId: null, stream });
      }),
    cancel,
    // The visitor token sent from now on (verified visitors); none forgets it.
    identify: (t) => {
      visitor = token(t);
    },
  };
}
