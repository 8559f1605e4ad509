// confab.js: the loader a website embeds with
//   <script src="https://RELAY/confab.js" data-site="SITE_KEY" async></script>
// It draws the launcher at once inside a Shadow DOM root, then loads the widget (wasm) when the
// page is idle or on the first click, whichever comes first. It adds one global: window.Confab.
(() => {
  const script = document.currentScript;
  if (!script || window.Confab) return;
  const data = script.dataset;
  const assets = new URL("widget/", script.src).href;
  const relay = new URL(".", script.src).href.replace(/\/$/, "");
  const listeners = {};
  // The same chat-bubble icon the widget draws (no emoji: not every system has an emoji font).
  const ICON = '<svg viewBox="0 0 24 24" aria-hidden="true" fill="currentColor"><path d="M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z"/></svg>';
  let root, placeholder, widget, loading, openOnLoad = data.open === "true";

  const api = (window.Confab = {
    open: () => start(true).then(() => widget.open()),
    close: () => widget && widget.close(),
    send: (text) => start(true).then(() => widget && widget.send(text)),
    on: (name, fn) => (listeners[name] = listeners[name] || []).push(fn),
    emit: (name, detail) => (listeners[name] || []).forEach((fn) => fn(detail)),
  });

  function start(open) {
    openOnLoad = openOnLoad || open;
    if (!loading) {
      loading = new Promise((resolve, reject) => {
        const glue = document.createElement("script");
        glue.src = assets + "__GLUE__";
        glue.async = true;
        glue.onload = () => api.__start(assets + "__WASM__").then(resolve, reject);
        glue.onerror = reject;
        document.head.appendChild(glue);
      }).then((bindings) => {
        placeholder.remove();
        widget = bindings.mount(root, {
          relay, site: data.site, open: openOnLoad, title: data.title,
          greeting: data.greeting, position: data.position, color: data.color,
        });
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
      ":host{all:initial}.launcher{position:fixed;bottom:20px;" + (data.position === "left" ? "left" : "right") +
      ":20px;z-index:2147483647;width:56px;height:56px;border-radius:50%;border:0;cursor:pointer;" +
      "background:var(--confab-primary," + (/^#[0-9a-f]{3,6}$/i.test(data.color || "") ? data.color : "#1f5fbf") +
      ");color:#fff;box-shadow:0 4px 14px rgba(0,0,0,.25);padding:16px}svg{width:24px;height:24px}"
    );
    root.adoptedStyleSheets = [sheet];
    placeholder = document.createElement("button");
    placeholder.type = "button";
    placeholder.className = "launcher";
    placeholder.setAttribute("aria-label", "Open chat");
    placeholder.innerHTML = ICON;
    placeholder.onclick = () => start(true);
    root.appendChild(placeholder);
    document.body.appendChild(host);
    (window.requestIdleCallback || ((fn) => setTimeout(fn, 1500)))(() => start(false));
  }

  if (document.body) draw();
  else document.addEventListener("DOMContentLoaded", draw);
})();
