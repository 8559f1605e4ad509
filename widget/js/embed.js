// A chat mounted into an element of the page: what the package's mount() and the <confab-chat>
// element return. Shared by the loader (confab.js) and the package.
import { forget, identity, token } from "./identity.js";
import { chosen } from "./locale.js";

// Whether the chat reads right to left: from its locale if it has one, else from the page.
export const rightToLeft = (locale) =>
  locale
    ? ["ar", "ckb", "dv", "fa", "he", "iw", "ks", "ku", "ps", "sd", "ug", "ur", "yi"].includes(String(locale).toLowerCase().split(/[-_]/)[0])
    : document.documentElement.dir === "rtl";

// Resolves to `value` in a task of its own: the module's instantiation and the chat's first
// render run in two tasks rather than one long one.
export const nextTask = (value) => new Promise((resolve) => setTimeout(() => resolve(value)));

const EVENTS = ["open", "close", "message", "message.delta", "error"];

// Mounts a chat into `host` (in its shadow root, made if it has none) once `load()` resolves
// to the module's bindings and `texts(language, overrides)` to its texts (locale.js). Calls made
// before then wait for it.
export function embed(host, options, load, texts) {
  const listeners = {};
  const emit = (name, detail) => {
    for (const fn of (listeners[name] || []).slice()) {
      try {
        fn(detail);
      } catch (error) {
        // A listener's own failure is the page's to see, and does not stop the others.
        setTimeout(() => { throw error; });
      }
    }
  };
  const mode = options.mode === "floating" ? "floating" : "inline";
  const storageKey = options.site + (options.name || mode === "inline" ? "/" + (options.name || "inline") : "");
  let visitorToken = token(options.visitorToken);
  let widget, destroyed;
  const root = host.shadowRoot || host.attachShadow({ mode: "open" });
  const { language, lang } = chosen(options.locale || document.documentElement.lang);
  const ready = Promise.all([load(), texts(language, options.strings)]).then(nextTask).then(([bindings, strings]) => {
    if (destroyed) return undefined;
    const rtl = rightToLeft(options.locale);
    widget = bindings.mount(root, {
      relay: String(options.relay || "").replace(/\/$/, ""), site: options.site, mode,
      name: options.name, open: !!options.open, title: options.title, greeting: options.greeting,
      color: options.color, position: options.position || (rtl ? "left" : "right"),
      dir: rtl ? "rtl" : "ltr", lang,
      strings, visitor_token: visitorToken, identity: identity(visitorToken), emit,
    });
    return widget;
  });
  ready.catch((error) => emit("error", "The chat could not be loaded: " + (error && error.message || error)));
  const when = (fn) => ready.then((w) => (w && !destroyed ? fn(w) : undefined));
  const handle = {
    ready: ready.then(() => handle),
    open: () => when((w) => w.open()),
    close: () => when((w) => w.close()),
    send: (text) => when((w) => w.send(String(text))),
    identify: (t) => {
      visitorToken = token(t);
      return when((w) => w.identify(visitorToken || "", identity(visitorToken)));
    },
    reset: () => {
      if (widget) widget.reset();
      else forget(storageKey, visitorToken);
      visitorToken = undefined;
    },
    on: (name, fn) => {
      if (!EVENTS.includes(name)) throw new TypeError("Confab: no event named " + name);
      (listeners[name] = listeners[name] || []).push(fn);
      return () => handle.off(name, fn);
    },
    off: (name, fn) => {
      listeners[name] = (listeners[name] || []).filter((f) => f !== fn);
    },
    destroy: () => {
      if (destroyed) return;
      destroyed = true;
      if (widget) {
        widget.destroy();
        widget.free();
        widget = undefined;
      }
      for (const name in listeners) delete listeners[name];
    },
  };
  return handle;
}

const ATTRIBUTES = ["relay", "site", "mode", "name", "title", "greeting", "color", "locale", "strings", "visitor-token", "open", "position"];

// Registers <confab-chat>, unless the page already has it (the script tag and the package both
// register it, whichever comes first). `defaults` fills what the element does not say (the
// script tag's relay and site).
export function defineElement(load, texts, defaults = {}) {
  if (typeof customElements === "undefined" || customElements.get("confab-chat")) return;
  customElements.define("confab-chat", class extends HTMLElement {
    static get observedAttributes() {
      return ATTRIBUTES;
    }
    connectedCallback() {
      this.placed = true;
      if (this.chat) return;
      const options = { ...defaults };
      for (const name of ATTRIBUTES) {
        if (this.hasAttribute(name)) {
          options[name.replace(/-(.)/g, (_, c) => c.toUpperCase())] = this.getAttribute(name);
        }
      }
      options.open = "open" in options && options.open !== "false";
      if (!options.relay || !options.site) {
        console.error("Confab: <confab-chat> needs relay and site attributes (the relay's URL and the site key)");
        return;
      }
      const chat = (this.chat = embed(this, options, load, texts));
      // The handle's events, as DOM events on the element (`detail` holds the event's detail).
      for (const name of EVENTS) {
        chat.on(name, (detail) => this.dispatchEvent(new CustomEvent(name, { detail })));
      }
    }
    // Removed from the page: nothing of it stays running.
    disconnectedCallback() {
      this.placed = false;
      if (this.chat) this.chat.destroy();
      this.chat = undefined;
    }
    // Another setting: mounted again with it (the conversation is kept in storage).
    // (Before the element is placed, its first attributes are just read when it is.)
    attributeChangedCallback(_name, before, after) {
      if (before === after || !this.placed) return;
      if (this.chat) this.chat.destroy();
      this.chat = undefined;
      this.connectedCallback();
    }
    send(text) { return this.chat && this.chat.send(text); }
    open() { return this.chat && this.chat.open(); }
    close() { return this.chat && this.chat.close(); }
    identify(t) { return this.chat && this.chat.identify(t); }
    reset() { return this.chat && this.chat.reset(); }
  });
}
