// confab.js: the loader a website embeds with
//   <script src="https://RELAY/confab.js" data-site="SITE_KEY" async></script>
// It draws the launcher at once inside a Shadow DOM root, then loads the widget (wasm) when the
// page is idle or on the first click, whichever comes first. It adds one global: window.Confab
// (open, close, send, identify, reset, on), and registers the <confab-chat> element, which
// shows the chat inline in the page (widget/js/embed.js).
//
// widget/build/package.mjs bundles it (with esbuild) with the modules it imports, and fills in
// __GLUE__, __GLUE_SRI__, __WASM__ and __WASM_SRI__: the hashed names of the glue and the module,
// and their SRI hashes.
import { defineElement, nextTask, rightToLeft } from "./js/embed.js";
import { forget, identity, token } from "./js/identity.js";
import { chosen, textsFrom } from "./js/locale.js";

(() => {
  const script = document.currentScript;
  if (!script || window.Confab) return;
  const data = script.dataset;
  const assets = new URL("widget/", script.src).href;
  const relay = new URL(".", script.src).href.replace(/\/$/, "");
  const listeners = {};
  // The same chat-bubble icon the widget draws (no emoji: not every system has an emoji font),
  // built with DOM calls: no string ever reaches an HTML sink (pages may enforce Trusted Types).
  const icon = () => {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    const path = document.createElementNS(ns, "path");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("fill", "currentColor");
    path.setAttribute("d", "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z");
    svg.appendChild(path);
    return svg;
  };
  // The glue's URL is the one string the loader hands to a script sink. On a page that enforces
  // Trusted Types (`require-trusted-types-for 'script'`) it goes through a policy named `confab`
  // that lets that URL through and nothing else; the page's CSP must allow the name
  // (`trusted-types confab`). Elsewhere it is the plain string.
  const glueUrl = assets + __GLUE__;
  let glueScriptUrl = glueUrl;
  if (window.trustedTypes && trustedTypes.createPolicy) {
    try {
      glueScriptUrl = trustedTypes
        .createPolicy("confab", {
          createScriptURL: (url) => {
            if (url !== glueUrl) throw new TypeError("Confab: not the widget's script");
            return url;
          },
        })
        .createScriptURL(glueUrl);
    } catch {
      // The page allows no policy of that name: fine unless it also enforces Trusted Types,
      // which `start` then explains.
    }
  }
  let root, placeholder, widget, loading, opened;
  let openOnLoad = "open" in data && data.open !== "false";
  // Right-to-left from data-locale, else from the page itself; the launcher then sits on the
  // left unless data-position says otherwise.
  const rtl = rightToLeft(data.locale);
  const left = data.position ? data.position === "left" : rtl;
  let visitorToken = data.visitorToken;
  const color = /^#([0-9a-f]{3}|[0-9a-f]{6})$/i.test(data.color || "") ? data.color : undefined;

  const api = (window.Confab = {
    identify: (t) => {
      visitorToken = token(t);
      if (widget) widget.identify(visitorToken || "", identity(visitorToken));
    },
    // On sign-out: forget the conversation (shown and stored, and the anonymous one) and the
    // identity, and abort the answer in flight. Synchronous, so a page may navigate right after.
    reset: () => {
      if (widget) widget.reset();
      else forget(data.site, visitorToken);
      visitorToken = undefined;
    },
    open: () => start(true).then(() => widget.open()),
    close: () => widget && widget.close(),
    send: (text) => start(true).then(() => widget && widget.send(text)),
    on: (name, fn) => (listeners[name] = listeners[name] || []).push(fn),
    emit: (name, detail) => (listeners[name] || []).forEach((fn) => fn(detail)),
  });

  // The module's bindings, loaded once for every chat on the page: the glue by a script element
  // (with its SRI hash), which fetches the module (with its own).
  let bindings;
  const load = () =>
    (bindings = bindings || new Promise((resolve, reject) => {
      const glue = document.createElement("script");
      try {
        glue.src = glueScriptUrl;
      } catch (error) {
        console.error("Confab: this page enforces Trusted Types; allow the policy named " +
          "`confab` in its Content-Security-Policy (`trusted-types confab`) to load the chat.");
        throw error;
      }
      glue.integrity = __GLUE_SRI__;
      glue.crossOrigin = "anonymous";
      glue.async = true;
      glue.onload = () => api.__start(assets + __WASM__, __WASM_SRI__).then(resolve, reject);
      glue.onerror = reject;
      document.head.appendChild(glue);
    }));
  // The texts of a language, from its file next to the module (with its SRI hash).
  const texts = textsFrom((language) => {
    const [file, integrity] = __LOCALES__[language];
    return fetch(assets + file, { integrity }).then((response) => {
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.json();
    });
  });
  // <confab-chat> talks to this relay about this site unless it names others.
  defineElement(load, texts, { relay, site: data.site });

  // `open`: the visitor (or the page's script) asked for the panel, so it takes the focus.
  function start(open) {
    opened = opened || open;
    if (!loading) {
      const { language, lang } = chosen(data.locale || document.documentElement.lang);
      loading = Promise.all([load(), texts(language, data.strings)])
        .then(nextTask)
        .then(([bindings, strings]) => {
          const hadFocus = root.activeElement === placeholder;
          placeholder.remove();
          widget = bindings.mount(root, {
            relay, site: data.site, open: openOnLoad || opened, focus: !!opened, title: data.title,
            greeting: data.greeting, color, position: left ? "left" : "right",
            dir: rtl ? "rtl" : "ltr", lang,
            strings, visitor_token: visitorToken,
            identity: identity(visitorToken), emit: api.emit,
          });
          if (hadFocus && !opened) root.querySelector(".launcher").focus();
        });
    }
    return loading;
  }

  function draw() {
    const host = document.createElement("div");
    host.setAttribute("data-confab", "");
    root = host.attachShadow({ mode: "open" });
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(
      // The same launcher the widget draws, so nothing moves when it takes over.
      ":host{all:initial!important}.launcher{position:fixed;bottom:20px;" + (left ? "left" : "right") +
      ":20px;z-index:2147483647;width:56px;height:56px;border-radius:50%;border:0;cursor:pointer;" +
      "background:var(--confab-primary," + (color || "#1f5fbf") + ");color:#fff;" +
      "box-shadow:0 4px 14px rgba(0,0,0,.25);padding:16px;margin:0}svg{width:24px;height:24px}"
    );
    root.adoptedStyleSheets = [sheet];
    placeholder = document.createElement("button");
    placeholder.type = "button";
    placeholder.className = "launcher";
    placeholder.setAttribute("aria-label", "Open chat");
    placeholder.setAttribute("aria-expanded", "false");
    placeholder.appendChild(icon());
    placeholder.onclick = () => start(true);
    root.appendChild(placeholder);
    document.body.appendChild(host);
    // With an on-screen keyboard open, the visual viewport is what is left of the screen: the
    // full-screen panel (narrow screens) fits into it so that the input stays visible.
    const viewport = window.visualViewport;
    if (viewport) {
      const fit = () => {
        host.style.setProperty("--confab-viewport-height", viewport.height + "px");
        host.style.setProperty("--confab-viewport-top", viewport.offsetTop + "px");
      };
      viewport.addEventListener("resize", fit);
      viewport.addEventListener("scroll", fit);
      fit();
    }
    if (openOnLoad) start(false);
    else (window.requestIdleCallback || ((fn) => setTimeout(fn, 1500)))(() => start(false));
  }

  if (document.body) draw();
  else document.addEventListener("DOMContentLoaded", draw);
})();
