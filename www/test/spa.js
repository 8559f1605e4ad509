// A tiny single-page app: client-side routes rendered into <main>, navigation by pushState.
(() => {
  const routes = {
    "/spa/": ["Home", "Welcome to the single-page app. Navigate with the links above."],
    "/spa/pricing": ["Pricing", "Every plan is free during the test."],
    "/spa/contact": ["Contact", "Write to us, or ask the chat in the corner."],
  };
  let renders = 0;

  function render() {
    const [title, text] = routes[location.pathname] || ["Not found", "No such page."];
    const main = document.getElementById("app");
    // Replace the whole view, as a framework's router would.
    main.replaceChildren();
    const h1 = document.createElement("h1");
    h1.textContent = title;
    const p = document.createElement("p");
    p.textContent = text;
    main.append(h1, p);
    document.title = "SPA: " + title.toLowerCase();
    document.body.dataset.route = location.pathname;
    document.body.dataset.renders = String(++renders);
  }

  document.addEventListener("click", (event) => {
    const link = event.target.closest && event.target.closest("a[data-route]");
    if (!link || event.metaKey || event.ctrlKey || event.shiftKey) return;
    event.preventDefault();
    history.pushState(null, "", link.getAttribute("href"));
    render();
  });
  window.addEventListener("popstate", render);
  render();
})();
