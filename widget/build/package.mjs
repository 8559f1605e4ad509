// Trunk post-build hook: turns Trunk's page build into what a website embeds.
//
//   confab.js                 the loader (short cache), from widget/loader.js
//   confab-widget.<hash>.js   the wasm-bindgen glue wrapped in one IIFE (immutable)
//   confab-widget.<hash>.wasm the module, optimised by wasm-opt -Oz (immutable)
//
// plus .br and .gz next to each, and manifest.json with sizes and SRI hashes.
// Runs with TRUNK_STAGING_DIR set; tools come from the repo's node_modules (scripts/setup).
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { brotliCompressSync, gzipSync, constants } from "node:zlib";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const staging = process.env.TRUNK_STAGING_DIR;
if (!staging) throw new Error("TRUNK_STAGING_DIR is not set: run through `trunk build`");
const esbuild = await import(join(root, "node_modules", "esbuild", "lib", "main.js"));
const wasmOpt = join(root, "node_modules", ".bin", "wasm-opt");

const files = readdirSync(staging);
const glueName = files.find((f) => /^confab-widget.*\.js$/.test(f));
const wasmName = files.find((f) => /^confab-widget.*_bg\.wasm$/.test(f));
if (!glueName || !wasmName) throw new Error(`unexpected Trunk output: ${files.join(", ")}`);

const hash = (bytes) => createHash("sha256").update(bytes).digest("hex").slice(0, 16);

// 1. The module, optimised for size (Debian's wasm-opt breaks it; this is binaryen from npm).
const wasmPath = join(staging, wasmName);
execFileSync(wasmOpt, ["-Oz", "--enable-bulk-memory", "--enable-nontrapping-float-to-int",
  "--enable-sign-ext", "--enable-mutable-globals", "--enable-reference-types",
  wasmPath, "-o", wasmPath], { stdio: "inherit" });
const wasm = readFileSync(wasmPath);
const wasmOut = `confab-widget.${hash(wasm)}.wasm`;

// 2. The glue, in an IIFE so that it adds no global; it hands its init function to the loader.
const glueSource = readFileSync(join(staging, glueName), "utf8");
const wrapped = `(()=>{${glueSource}
window.Confab.__start=async(url,integrity)=>{await wasm_bindgen({module_or_path:fetch(url,{integrity})});return wasm_bindgen;};})();`;
const glue = (await esbuild.transform(wrapped, { minify: true, target: "es2020" })).code;
const glueOut = `confab-widget.${hash(glue)}.js`;

// 3. The loader, pointing at the hashed names and carrying their SRI hashes: the glue is loaded
//    with `integrity` and the module fetched with it, so pinning confab.js pins everything.
const sri = (bytes) => "sha384-" + createHash("sha384").update(bytes).digest("base64");
const loaderSource = readFileSync(join(root, "widget", "loader.js"), "utf8")
  .replace("__GLUE__", glueOut)
  .replace("__GLUE_SRI__", sri(glue))
  .replace("__WASM__", wasmOut)
  .replace("__WASM_SRI__", sri(wasm));
const loader = (await esbuild.transform(loaderSource, { minify: true, target: "es2020" })).code;

// 4. Pages may enforce Trusted Types (`require-trusted-types-for 'script'`), where any string
//    given to an HTML or script sink throws. The glue and the loader must reach none: the
//    loader's one script URL goes through its `confab` policy, and every view is built with DOM
//    calls (a Leptos view whose attributes and children are all literals is "inert", built from
//    HTML through `innerHTML`; give one attribute as an expression, `fill={"currentColor"}`).
//    wasm-bindgen only imports the setters the module uses, so a sink in the glue means one in
//    the module.
const SINKS = /\b(innerHTML|outerHTML|insertAdjacentHTML|createContextualFragment|DOMParser|document\.write|srcdoc)\b|\beval\(|new Function\b/;
for (const [name, code] of [["glue", glue], ["loader", loader]]) {
  const found = code.match(SINKS);
  if (found) {
    throw new Error(`the widget's ${name} reaches ${found[0]}, which pages enforcing Trusted Types refuse`);
  }
}

for (const f of files) rmSync(join(staging, f), { recursive: true, force: true });

const manifest = {};
for (const [name, bytes] of [["confab.js", loader], [glueOut, glue], [wasmOut, wasm]]) {
  const raw = Buffer.from(bytes);
  const br = brotliCompressSync(raw, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } });
  const gz = gzipSync(raw, { level: 9 });
  writeFileSync(join(staging, name), raw);
  writeFileSync(join(staging, name + ".br"), br);
  writeFileSync(join(staging, name + ".gz"), gz);
  const integrity = sri(raw);
  manifest[name] = { raw: raw.length, gzip: gz.length, brotli: br.length, integrity };
  console.log(`${name.padEnd(40)} ${String(raw.length).padStart(7)} raw ${String(gz.length).padStart(7)} gzip ${String(br.length).padStart(7)} br  ${integrity}`);
}
writeFileSync(join(staging, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
