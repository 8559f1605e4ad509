// The npm package `confab-widget`: mount(), <confab-chat> and createClient(), for front-end
// developers who bundle their app. widget/build/package.mjs builds it into dist/npm with the
// module's glue (`confab:glue`, the same glue the script tag loads) and the languages
// (`confab:locales`: a dynamic import of `./locales/<language>.js` each, so that a bundler that
// splits code downloads the chosen one only), and fills in __WASM_URL__, __WASM_NAME__ and
// __WASM_SRI__.
import bindings from "confab:glue";
import languages from "confab:locales";
import { defineElement, embed } from "./embed.js";
import { textsFrom } from "./locale.js";

export { ConfabError, createClient } from "./client.js";

// The module ships in the package, next to this file: bundlers that understand
// `new URL(..., import.meta.url)` (Vite, webpack, Parcel, Rollup with its plugin) copy it into
// the build; with esbuild, copy it next to the bundle. Or pass `wasm: "relay"` to fetch the same
// file from the relay (which must run this version), or a URL. Its SRI hash is checked either
// way.
const wasmUrl = (wasm, relay) =>
  wasm === "relay"
    ? String(relay).replace(/\/$/, "") + "/widget/" + __WASM_NAME__
    : wasm && wasm !== "package"
      ? wasm
      : new URL(__WASM_URL__, import.meta.url);

// One module for every chat on the page, loaded by the first one (and again after a failure).
let loading;
const loader = (options) => () =>
  (loading = loading || bindings({
    module_or_path: fetch(wasmUrl(options.wasm, options.relay), { integrity: __WASM_SRI__ }),
  }).then(() => bindings, (error) => {
    loading = undefined;
    throw error;
  }));

const texts = textsFrom((language) => languages[language]().then((module) => module.default));

// Mounts the chat in `element`: `mode: "inline"` (the default) fills it; `"floating"` draws the
// launcher and its panel over the page. Returns the chat's handle.
export function mount(element, options) {
  if (typeof HTMLElement === "undefined" || !(element instanceof HTMLElement)) {
    throw new TypeError("Confab: mount(element, options) needs an element to mount into");
  }
  if (!options || !options.relay || !options.site) {
    throw new TypeError("Confab: mount needs { relay, site }: the relay's URL and the site key");
  }
  return embed(element, options, loader(options), texts);
}

// <confab-chat relay="..." site="..."> (unless the page's confab.js registered it first).
defineElement(loader({}), texts);
