// confab.js: the loader a website embeds with
//   <script src="https://RELAY/confab.js" data-site="SITE_KEY" async></script>
// It draws the launcher at once inside a Shadow DOM root, then loads the widget (wasm) when the
// page is idle or on the first click, whichever comes first. It adds one global: window.Confab
// (open, close, send, identify, reset, on).
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
  const glueUrl = assets + "__GLUE__";
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
  const rtl = data.locale
    ? /^(ar|ckb|dv|fa|he|ks|ku|ps|sd|ug|ur|yi)\b/i.test(data.locale)
    : document.documentElement.dir === "rtl";
  const left = data.position ? data.position === "left" : rtl;
  const color = /^#([0-9a-f]{3}|[0-9a-f]{6})$/i.test(data.color || "") ? data.color : undefined;

  // A visitor token from the site's backend (verified visitors): a signed JWT or an
  // `hmac.<base64url user id>.<hex hash>` token, or { userId, userHash } to build the latter.
  let visitorToken = data.visitorToken;
  const token = (t) =>
    t && typeof t === "object"
      ? "hmac." + btoa(String.fromCharCode(...new TextEncoder().encode(String(t.userId))))
          .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "") + "." + t.userHash
      : t;

  // Whose conversation is shown and stored: the token's user id (the `hmac.` form's, or a JWT's
  // `sub`, both as UTF-8 bytes), so that a refreshed JWT keeps the history; the whole token for
  // any other shape. Hashed (cyrb53, 53 bits): the key of a stored conversation never holds a
  // token, which is a credential. "" is an anonymous visitor.
  const identity = (t) => {
    if (!t) return "";
    const [kind, id, sig] = t.split(".");
    const b64 = (s) => atob(s.replace(/-/g, "+").replace(/_/g, "/"));
    let user = "t" + t;
    try {
      if (kind === "hmac") user = "u" + b64(id);
      else if (sig !== undefined) {
        const sub = JSON.parse(b64(id)).sub;
        if (typeof sub === "string") user = "u" + sub;
      }
    } catch {
      // Not base64 or not JSON: the whole token stands for its holder.
    }
    let h1 = 0xdeadbeef, h2 = 0x41c6ce57;
    for (let i = 0; i < user.length; i++) {
      const c = user.charCodeAt(i);
      h1 = Math.imul(h1 ^ c, 2654435761);
      h2 = Math.imul(h2 ^ c, 1597334677);
    }
    h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
    h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
    return (4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(36);
  };
  // storage::key in the widget: where the conversation of `id` on this site is kept.
  const slot = (id) => "confab:v2:" + data.site + (id ? ":" + id : "");

  const api = (window.Confab = {
    identify: (t) => {
      visitorToken = token(t);
      if (widget) widget.identify(visitorToken || "", identity(visitorToken));
    },
    // On sign-out: forget the conversation (shown and stored, and the anonymous one) and the
    // identity, and abort the answer in flight. Synchronous, so a page may navigate right after.
    reset: () => {
      if (widget) widget.reset();
      else {
        try {
          // The conversation, and its id on the relay (a new one is made for the next visitor).
          for (const id of [slot(identity(visitorToken)), slot("")]) {
            localStorage.removeItem(id);
            localStorage.removeItem(id + "#conversation");
          }
        } catch {
          // Storage disabled: there is nothing stored to forget.
        }
      }
      visitorToken = undefined;
    },
    open: () => start(true).then(() => widget.open()),
    close: () => widget && widget.close(),
    send: (text) => start(true).then(() => widget && widget.send(text)),
    on: (name, fn) => (listeners[name] = listeners[name] || []).push(fn),
    emit: (name, detail) => (listeners[name] || []).forEach((fn) => fn(detail)),
  });

  // `open`: the visitor (or the page's script) asked for the panel, so it takes the focus.
  function start(open) {
    opened = opened || open;
    if (!loading) {
      loading = new Promise((resolve, reject) => {
        const glue = document.createElement("script");
        try {
          glue.src = glueScriptUrl;
        } catch (error) {
          console.error("Confab: this page enforces Trusted Types; allow the policy named " +
            "`confab` in its Content-Security-Policy (`trusted-types confab`) to load the chat.");
          throw error;
        }
        glue.integrity = "__GLUE_SRI__";
        glue.crossOrigin = "anonymous";
        glue.async = true;
        glue.onload = () => api.__start(assets + "__WASM__", "__WASM_SRI__").then(resolve, reject);
        glue.onerror = reject;
        document.head.appendChild(glue);
      }).then((bindings) => {
        const hadFocus = root.activeElement === placeholder;
        placeholder.remove();
        widget = bindings.mount(root, {
          relay, site: data.site, open: openOnLoad || opened, focus: !!opened, title: data.title,
          greeting: data.greeting, color, position: left ? "left" : "right",
          dir: rtl ? "rtl" : "ltr", lang: data.locale, visitor_token: visitorToken,
          identity: identity(visitorToken),
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
