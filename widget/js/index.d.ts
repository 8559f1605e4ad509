// Types of the npm package `confab-widget` (widget/js/package.js).

/** What every way in to the chat takes. */
export interface ChatOptions {
  /** The relay's URL, e.g. `https://chat.example.com`. */
  relay: string;
  /** The site key (`pk_...`), public: the relay only accepts it from the site's origins. */
  site: string;
  /** `inline` (the default) fills the element; `floating` draws a launcher and a panel over the page. */
  mode?: "inline" | "floating";
  /**
   * Keeps this chat's conversation apart from other chats of the site on the page (stored
   * under the site key and this name). An inline chat is named `inline` unless named otherwise;
   * the script tag's floating chat has no name.
   */
  name?: string;
  /**
   * A BCP 47 language tag: the chat's language (the page's `<html lang>` without it). English,
   * Spanish, French, German, Portuguese, Italian, Dutch, Polish, Turkish, Russian, Arabic,
   * Hebrew, Hindi, Japanese, Korean and Chinese; English for any other. Right-to-left for Arabic
   * and Hebrew. Only the chosen language is downloaded.
   */
  locale?: string;
  /** The panel's title; the site's title on the relay otherwise. */
  title?: string;
  /** The first message shown; the site's greeting otherwise. */
  greeting?: string;
  /** `#rgb` or `#rrggbb`: the theme's main colour (`--confab-primary` on the page wins). */
  color?: string;
  /** Floating only: the launcher's corner (`right`, or `left` for right-to-left locales). */
  position?: "left" | "right";
  /** Floating only: open the panel at once. */
  open?: boolean;
  /**
   * The site's own texts, on top of the language's: key to text (the keys of
   * `widget/locales/*.json`, e.g. `{ send: "Ask" }`), or that object as JSON.
   */
  strings?: Partial<Record<TextKey, string>> | string;
  /** A verified visitor: a signed JWT, an `hmac.` token, or the user id and its hash. */
  visitorToken?: VisitorToken;
  /**
   * Where the wasm module comes from: `package` (the default: the file shipped next to this
   * package's module, which the bundler copies), `relay` (the relay's copy: it must run this
   * version), or a URL. Its SRI hash is checked either way.
   */
  wasm?: "package" | "relay" | string;
}

/** The widget's texts (see the README's "Every visitor's language"). */
export type TextKey =
  | "default_title" | "open_chat" | "close_chat" | "clear" | "your_message" | "placeholder"
  | "send" | "stop" | "retry" | "sources" | "stopped" | "budget_exhausted" | "upstream_down"
  | "offline" | "session_expired" | "sign_in" | "unexpected" | "with_person_now"
  | "rate_limited_wait" | "rate_limited" | "too_long" | "http_error" | "good_answer"
  | "bad_answer" | "comment_label" | "send_comment" | "thanks" | "talk_to_person"
  | "waiting_for_person" | "chatting_with_person" | "from_person" | "person_words"
  | "person_phrases" | `open_chat_unread_${"zero" | "one" | "two" | "few" | "many" | "other"}`;

export type VisitorToken = string | { userId: string; userHash: string };

/** The events of a mounted chat, and their details. */
export interface ChatEvents {
  /** The floating panel opened (an empty detail). */
  open: "";
  /** The floating panel closed (an empty detail). */
  close: "";
  /** An answer is complete: its text. */
  message: string;
  /** A piece of the answer streaming in. */
  "message.delta": string;
  /** Why an answer did not come (or the chat could not load), in the visitor's words. */
  error: string;
}

/** What `mount` returns. The methods that act on the chat resolve once it has loaded. */
export interface ChatHandle {
  /** Resolves once the chat is drawn (rejects if the module could not be loaded). */
  readonly ready: Promise<ChatHandle>;
  open(): Promise<void>;
  /** Closes a floating panel (an inline chat is always open). */
  close(): Promise<void>;
  /** Sends `text` as the visitor. */
  send(text: string): Promise<void>;
  /** The visitor signed in (or their token was refreshed): shows their conversation; none forgets the token. */
  identify(token?: VisitorToken): Promise<void>;
  /** The visitor signed out: forgets the conversation, shown and stored. Synchronous. */
  reset(): void;
  /** Listens to an event; returns the function that stops listening. */
  on<E extends keyof ChatEvents>(event: E, listener: (detail: ChatEvents[E]) => void): () => void;
  off<E extends keyof ChatEvents>(event: E, listener: (detail: ChatEvents[E]) => void): void;
  /** Removes the chat: no listener, timer or request of it stays behind. */
  destroy(): void;
}

/**
 * Mounts the chat in `element`, in its shadow root (made if it has none: `element` must be one
 * that can have one, such as a `div`, `section`, `aside` or a custom element).
 */
export function mount(element: HTMLElement, options: ChatOptions): ChatHandle;

/** A message of the conversation sent to `chat`. */
export interface ChatMessage {
  role: "user" | "assistant";
  content: string;
}

/** A document of the site an answer is grounded in. */
export interface Source {
  title: string;
  /** An `http:` or `https:` link (other links are left out). */
  url?: string;
}

/** A complete answer. */
export interface Answer {
  text: string;
  sources: Source[];
  /** The relay's id of the request (`X-Request-Id`). */
  requestId: string | null;
  /** The relay's name for the answer's stream, if it keeps one: `resume` follows it again. */
  stream: string | null;
}

export interface StreamOptions {
  /** Aborts the answer; it is cancelled on the relay too. */
  signal?: AbortSignal;
  /** Each piece of the answer as it arrives, and the answer so far. */
  onDelta?: (delta: string, answer: Answer) => void;
}

export interface Client {
  /**
   * Streams the answer to `messages`. A lost connection is followed again from the last piece
   * received where the relay keeps the stream. Rejects with a `ConfabError`, or with the abort
   * reason.
   */
  chat(messages: ChatMessage[], options?: StreamOptions & { conversation?: string }): Promise<Answer>;
  /** Follows the answer `stream` again from its start (after a reload, say). */
  resume(stream: string, options?: StreamOptions): Promise<Answer>;
  /** Stops the answer `stream` on the relay. */
  cancel(stream: string): Promise<void>;
  /** The visitor token sent from now on; none forgets it. */
  identify(token?: VisitorToken): void;
}

/** A client of the relay's chat API, for an interface of your own. */
export function createClient(options: { relay: string; site: string; visitorToken?: VisitorToken }): Client;

/** What a failed call throws: the relay's error envelope and HTTP status. */
export class ConfabError extends Error {
  readonly status: number;
  readonly code: string | null;
  readonly type: string | null;
  /** Seconds to wait, when rate limited. */
  readonly retryAfter: number | null;
}

/** `<confab-chat>`: registered when the package (or the script tag) loads. */
export interface ConfabChatElement extends HTMLElement {
  send(text: string): Promise<void> | undefined;
  open(): Promise<void> | undefined;
  close(): Promise<void> | undefined;
  identify(token?: VisitorToken): Promise<void> | undefined;
  reset(): void;
}

declare global {
  interface HTMLElementTagNameMap {
    "confab-chat": ConfabChatElement;
  }
}
