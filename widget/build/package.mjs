// Trunk post-build hook: turns Trunk's page build into what a website embeds.
//
//   confab.js                 the loader (short cache), from widget/loader.js
//   confab-widget.<hash>.js   the wasm-bindgen glue wrapped in one IIFE (immutable)
//   confab-widget.<hash>.wasm the module, optimised by wasm-opt -Oz (immutable)
//
// plus .br and .gz next to each, and manifest.json with sizes and SRI hashes; and the npm
// package `confab-widget` in dist/npm/confab-widget (`npm pack` there makes its tarball): the
// same glue and module behind mount(), <confab-chat> and createClient() (widget/js/package.js).
// Runs with TRUNK_STAGING_DIR set; tools come from the repo's node_modules (scripts/setup).
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
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

// 3. The loader, bundled with the modules it shares with the package (widget/js), pointing at
//    the hashed names and carrying their SRI hashes: the glue is loaded with `integrity` and the
//    module fetched with it, so pinning confab.js pins everything.
const sri = (bytes) => "sha384-" + createHash("sha384").update(bytes).digest("base64");

// The languages besides English (widget/locales/<language>.json): each checked against the
// keys of widget/src/text.rs, minified, and named by content hash; the loader carries their
// names and SRI hashes and fetches the chosen one only.
const keys = [...readFileSync(join(root, "widget", "src", "text.rs"), "utf8").matchAll(/text\(\s*"(\w+)",/g)].map((m) => m[1]);
const declarations = readFileSync(join(root, "widget", "js", "index.d.ts"), "utf8");
const undeclared = keys.filter((k) => !k.startsWith("open_chat_unread_") && !declarations.includes(`"${k}"`));
if (undeclared.length) throw new Error(`widget/js/index.d.ts's TextKey lacks ${undeclared.join(", ")}`);
const counted = new Set(["rate_limited_wait", "too_long", "http_error"]);
const localeDir = join(root, "widget", "locales");
const locales = {};
for (const file of readdirSync(localeDir).filter((f) => f.endsWith(".json")).sort()) {
  const language = file.slice(0, -".json".length);
  const table = JSON.parse(readFileSync(join(localeDir, file), "utf8"));
  const plurals = new Intl.PluralRules(language).resolvedOptions().pluralCategories.map((c) => `open_chat_unread_${c}`);
  const wanted = [...keys.filter((k) => !k.startsWith("open_chat_unread_")), ...plurals];
  const missing = wanted.filter((k) => typeof table[k] !== "string" || !table[k]);
  const unknown = Object.keys(table).filter((k) => !wanted.includes(k));
  const misplaced = Object.keys(table).filter((k) =>
    (table[k].split("{n}").length - 1) !== (counted.has(k) || k.startsWith("open_chat_unread_") ? 1 : 0));
  if (missing.length || unknown.length || misplaced.length) {
    throw new Error(`widget/locales/${file}: missing ${missing.join(", ") || "-"}; unknown ${unknown.join(", ") || "-"}; wrong {n} in ${misplaced.join(", ") || "-"}`);
  }
  if (!readFileSync(join(root, "widget", "src", "component.rs"), "utf8").includes(`include_str!("../locales/${file}")`)) {
    throw new Error(`widget/locales/${file} is not in LANGUAGES in widget/src/component.rs (the Leptos component's languages)`);
  }
  const json = JSON.stringify(table);
  locales[language] = { json, file: `locales/${language}.${hash(json)}.json`, integrity: sri(json) };
}
const defines = {
  __GLUE__: JSON.stringify(glueOut),
  __GLUE_SRI__: JSON.stringify(sri(glue)),
  __WASM__: JSON.stringify(wasmOut),
  __WASM_NAME__: JSON.stringify(wasmOut),
  __WASM_URL__: JSON.stringify("./" + wasmOut),
  __WASM_SRI__: JSON.stringify(sri(wasm)),
  __LANGUAGES__: JSON.stringify(Object.keys(locales)),
  __LOCALES__: JSON.stringify(Object.fromEntries(Object.entries(locales).map(([l, { file, integrity }]) => [l, [file, integrity]]))),
};
const bundle = async (entry, options) =>
  (await esbuild.build({
    entryPoints: [join(root, "widget", entry)], bundle: true, write: false, target: "es2020",
    define: defines, logLevel: "warning", ...options,
  })).outputFiles[0].text;
const loader = await bundle("loader.js", { format: "iife", minify: true });

// The npm package: the same glue as an ES module (`confab:glue`), not minified (the app's
// bundler minifies), with the module next to it under its hashed name.
const glueModule = {
  name: "confab-glue",
  setup(build) {
    build.onResolve({ filter: /^confab:glue$/ }, () => ({ path: "glue", namespace: "confab" }));
    build.onLoad({ filter: /.*/, namespace: "confab" }, () => ({
      contents: `${glueSource}\nexport default wasm_bindgen;\n`, loader: "js",
    }));
  },
};
// The languages, one module each, imported when chosen (left as imports for the app's bundler).
const localeModules = {
  name: "confab-locales",
  setup(build) {
    build.onResolve({ filter: /^confab:locales$/ }, () => ({ path: "locales", namespace: "confab-locales" }));
    build.onResolve({ filter: /^\.\/locales\// }, (args) => ({ path: args.path, external: true }));
    build.onLoad({ filter: /.*/, namespace: "confab-locales" }, () => ({
      contents: `export default {${Object.keys(locales).map((l) => `${JSON.stringify(l)}: () => import("./locales/${l}.js")`).join(", ")}};\n`,
      loader: "js",
    }));
  },
};
const npmModule = await bundle("js/package.js", { format: "esm", plugins: [glueModule, localeModules] });

// 4. Pages may enforce Trusted Types (`require-trusted-types-for 'script'`), where any string
//    given to an HTML or script sink throws. The glue and the loader must reach none: the
//    loader's one script URL goes through its `confab` policy, and every view is built with DOM
//    calls (a Leptos view whose attributes and children are all literals is "inert", built from
//    HTML through `innerHTML`; give one attribute as an expression, `fill={"currentColor"}`).
//    wasm-bindgen only imports the setters the module uses, so a sink in the glue means one in
//    the module.
const SINKS = /\b(innerHTML|outerHTML|insertAdjacentHTML|createContextualFragment|DOMParser|document\.write|srcdoc)\b|\beval\(|new Function\b/;
for (const [name, code] of [["glue", glue], ["loader", loader], ["npm package", npmModule]]) {
  const found = code.match(SINKS);
  if (found) {
    throw new Error(`the widget's ${name} reaches ${found[0]}, which pages enforcing Trusted Types refuse`);
  }
}

for (const f of files) rmSync(join(staging, f), { recursive: true, force: true });

const manifest = {};
mkdirSync(join(staging, "locales"));
const served = [["confab.js", loader], [glueOut, glue], [wasmOut, wasm],
  ...Object.values(locales).map(({ file, json }) => [file, json])];
for (const [name, bytes] of served) {
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

// The npm package, in dist/npm/confab-widget (replaced whole).
const version = readFileSync(join(root, "Cargo.toml"), "utf8").match(/^version = "([^"]+)"/m)[1];
const npm = join(root, "dist", "npm", "confab-widget");
rmSync(npm, { recursive: true, force: true });
mkdirSync(npm, { recursive: true });
writeFileSync(join(npm, "index.js"), npmModule);
copyFileSync(join(root, "widget", "js", "index.d.ts"), join(npm, "index.d.ts"));
copyFileSync(join(root, "widget", "js", "README.md"), join(npm, "README.md"));
writeFileSync(join(npm, wasmOut), wasm);
mkdirSync(join(npm, "locales"));
for (const [language, { json }] of Object.entries(locales)) {
  writeFileSync(join(npm, "locales", `${language}.js`), `export default ${json};\n`);
}
writeFileSync(join(npm, "package.json"), JSON.stringify({
  name: "confab-widget",
  version,
  description: "The Confab chat: mount(), <confab-chat> and a headless client for a Confab relay.",
  license: "Apache-2.0",
  type: "module",
  main: "./index.js",
  module: "./index.js",
  types: "./index.d.ts",
  exports: {
    ".": { types: "./index.d.ts", import: "./index.js", default: "./index.js" },
    "./confab-widget.wasm": `./${wasmOut}`,
    "./package.json": "./package.json",
  },
  files: ["index.js", "index.d.ts", wasmOut, "locales/", "README.md"],
  sideEffects: ["./index.js"],
}, null, 2) + "\n");
console.log(`npm package confab-widget@${version} in ${npm}`);
