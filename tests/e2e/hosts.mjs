// The test host pages (www/test/*) served as a real website would serve them: from their own
// origin (127.0.0.1:<random port>, not the relay's), with {{RELAY}} and {{SITE_KEY}} filled in,
// csp.html under a strict Content-Security-Policy, and a collector for CSP violation reports.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { join, extname, basename, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const pages = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "www", "test");
const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".wasm": "application/wasm",
};

/**
 * What tt.html adds to csp.html's policy: Trusted Types enforced for every script sink, with one
 * policy allowed, the widget's (`confab`); tt-none.html allows none.
 */
export const trustedTypesFor = (relay, policies = "confab") =>
  `${cspFor(relay)}; require-trusted-types-for 'script'; trusted-types ${policies}`;

/** The policy csp.html is served with: nothing inline, nothing eval'd, only the relay. */
export const cspFor = (relay) => {
  const origin = new URL(relay).origin;
  return `default-src 'none'; script-src ${origin} 'wasm-unsafe-eval'; connect-src ${origin}; ` +
    `style-src ${origin}; img-src ${origin}; report-uri /csp-report`;
};

/**
 * Starts the host server. `vars` (RELAY, SITE_KEY) can be set after the start: they are read
 * at every request, because the relay needs the host's origin before the host knows the relay.
 */
export async function startHosts(vars = {}) {
  const cspReports = [];
  // Directories served under a path prefix (`serve`): an app a test built.
  const served = new Map();
  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url, "http://host").pathname);
    if (req.method === "POST" && path === "/csp-report") {
      let raw = "";
      req.setEncoding("utf8");
      req.on("data", (d) => (raw += d));
      req.on("end", () => {
        try {
          cspReports.push(JSON.parse(raw));
        } catch {
          cspReports.push(raw);
        }
        res.writeHead(204).end();
      });
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") return res.writeHead(405).end();
    if (path === "/favicon.ico") return res.writeHead(204).end();
    // The SPA's own routes all serve its page, as a single-page app's server does.
    const asked = path.startsWith("/spa/") ? "spa.html" : basename(path) || "plain.html";
    // tt-none.html is tt.html under a policy that allows no Trusted Types policy at all.
    let file = asked === "tt-none.html" ? "tt.html" : asked;
    let from = join(pages, file);
    for (const [prefix, dir] of served) {
      if (path.startsWith(prefix) && !path.includes("..")) {
        file = path.slice(prefix.length) || "index.html";
        from = join(dir, file);
      }
    }
    let body;
    try {
      body = await readFile(from);
    } catch {
      return res.writeHead(404, { "Content-Type": "text/plain" }).end("not found");
    }
    const type = TYPES[extname(file)] ?? "application/octet-stream";
    const headers = { "Content-Type": type, "Cache-Control": "no-store" };
    if (type.startsWith("text/")) {
      // The page's query parameters fill {{name}} too (locale.html?lang=fr): one page, many cases.
      const query = Object.fromEntries(new URL(req.url, "http://host").searchParams);
      body = body.toString("utf8").replace(/\{\{(\w+)\}\}/g, (m, name) => query[name] ?? vars[name] ?? m);
    }
    if (file === "csp.html") headers["Content-Security-Policy"] = cspFor(vars.RELAY);
    if (asked === "tt.html") headers["Content-Security-Policy"] = trustedTypesFor(vars.RELAY);
    if (asked === "tt-none.html") {
      headers["Content-Security-Policy"] = trustedTypesFor(vars.RELAY, "'none'");
    }
    res.writeHead(200, headers).end(req.method === "HEAD" ? undefined : body);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    url,
    vars,
    cspReports,
    /** Serves the files of `dir` under `prefix` (`/app/`), {{VARS}} filled in as for the pages. */
    serve(prefix, dir) {
      served.set(prefix, dir);
    },
    close() {
      server.closeAllConnections?.();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
