// Trunk post-build hook: makes Trunk's page build servable under the console's CSP
// (`script-src 'self' 'wasm-unsafe-eval'; style-src 'self'`, no 'unsafe-inline').
//
//   index.html                        the page, with no inline script or style left
//   start.<hash>.js                   the start-up module Trunk would have inlined
//   confab-console-<hash>.js          the wasm-bindgen glue (`web` target)
//   confab-console-<hash>_bg.wasm     the module, optimised by wasm-opt -Oz, renamed by its hash
//   console-<hash>.css                the stylesheet
//
// plus .br and .gz next to each, and manifest.json with the sizes. Runs with TRUNK_STAGING_DIR
// set; tools come from the repo's node_modules (scripts/setup).
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync, renameSync, writeFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { brotliCompressSync, gzipSync, constants } from "node:zlib";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const staging = process.env.TRUNK_STAGING_DIR;
if (!staging) throw new Error("TRUNK_STAGING_DIR is not set: run through `trunk build`");
const publicUrl = "/console/";
const wasmOpt = join(root, "node_modules", ".bin", "wasm-opt");
const hash = (bytes) => createHash("sha256").update(bytes).digest("hex").slice(0, 16);

let html = readFileSync(join(staging, "index.html"), "utf8");
const files = readdirSync(staging);
const wasmName = files.find((f) => /^confab-console-.*_bg\.wasm$/.test(f));
if (!wasmName) throw new Error(`unexpected Trunk output: ${files.join(", ")}`);

// 1. The module, optimised for size (Debian's wasm-opt breaks it; this is binaryen from npm),
//    renamed after its new content.
const wasmPath = join(staging, wasmName);
execFileSync(wasmOpt, ["-Oz", "--enable-bulk-memory", "--enable-nontrapping-float-to-int",
  "--enable-sign-ext", "--enable-mutable-globals", "--enable-reference-types",
  wasmPath, "-o", wasmPath], { stdio: "inherit" });
const wasmOut = `confab-console-${hash(readFileSync(wasmPath))}_bg.wasm`;
renameSync(wasmPath, join(staging, wasmOut));
html = html.replaceAll(wasmName, wasmOut);

// 2. The start-up script Trunk inlines, moved into a module file of its own.
const inline = /<script type="module"[^>]*>([\s\S]*?)<\/script>/g;
const scripts = [...html.matchAll(inline)].filter((m) => m[1].trim() !== "");
if (scripts.length !== 1) throw new Error(`expected one inline module script, found ${scripts.length}`);
const start = scripts[0][1].trim() + "\n";
const startOut = `start.${hash(start)}.js`;
writeFileSync(join(staging, startOut), start);
html = html.replace(scripts[0][0], `<script type="module" src="${publicUrl}${startOut}"></script>`);

// 3. Nothing inline may remain: the relay's CSP would block it and the console would not start.
const leftovers = [
  ...[...html.matchAll(/<script\b[^>]*>([\s\S]*?)<\/script>/g)].filter((m) => m[1].trim() !== "" || !/\bsrc=/.test(m[0])),
  ...html.matchAll(/<style\b/g),
  ...html.matchAll(/\sstyle=/g),
  ...html.matchAll(/\son[a-z]+=/g),
];
if (leftovers.length) throw new Error(`inline script or style left in index.html: ${leftovers.map((m) => m[0]).join(" | ")}`);
writeFileSync(join(staging, "index.html"), html);

// 4. Precompressed copies and the sizes.
const manifest = {};
let brotliTotal = 0;
for (const name of readdirSync(staging).filter((f) => /\.(html|js|wasm|css)$/.test(f)).sort()) {
  const raw = readFileSync(join(staging, name));
  const br = brotliCompressSync(raw, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } });
  const gz = gzipSync(raw, { level: 9 });
  writeFileSync(join(staging, name + ".br"), br);
  writeFileSync(join(staging, name + ".gz"), gz);
  manifest[name] = { raw: raw.length, gzip: gz.length, brotli: br.length };
  brotliTotal += br.length;
  console.log(`${name.padEnd(48)} ${String(raw.length).padStart(8)} raw ${String(gz.length).padStart(8)} gzip ${String(br.length).padStart(8)} br`);
}
console.log(`${"total".padEnd(48)} ${" ".repeat(30)}${String(brotliTotal).padStart(8)} br`);
manifest.total_brotli = brotliTotal;
writeFileSync(join(staging, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
