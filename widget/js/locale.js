// Which language a chat speaks, and its texts: English is built into the module; the other
// languages (widget/locales/<language>.json) are fetched, the chosen one only. Shared by the
// loader (confab.js) and the package, which fetch a language's file each their own way.

// The languages there is a file for (filled in by widget/build/package.mjs).
const LANGUAGES = __LANGUAGES__;

// The language of `tag` (a BCP 47 tag: `data-locale`, the `locale` option, or the page's
// `<html lang>`) if the widget speaks it, else English.
export const languageOf = (tag) => {
  let language = String(tag || "").toLowerCase().split(/[-_]/)[0];
  if (language === "iw") language = "he";
  return LANGUAGES.includes(language) ? language : "en";
};

// The language a chat speaks for `tag`, and the `lang` its panel says: the tag itself, or
// English when the widget does not speak the tag's language.
export const chosen = (tag) => {
  const language = languageOf(tag);
  let lang = "en";
  try {
    // `pt_BR` is written `pt-BR`; a tag the browser refuses is no tag.
    [lang = "en"] = Intl.getCanonicalLocales(String(tag || "").replace(/_/g, "-"));
  } catch {
    lang = language;
  }
  return { language, lang: language !== "en" || /^en\b/i.test(lang) ? lang : "en" };
};

// The texts of a chat: `fetchLanguage(language)` resolves to a language's table (key to
// text), once per language per page; the site's `overrides` (an object, or its JSON) go on
// top. A language that cannot be fetched leaves English.
export const textsFrom = (fetchLanguage) => {
  const tables = {};
  return (language, overrides) => {
    let own = overrides || {};
    if (typeof own === "string") {
      try {
        own = JSON.parse(own);
      } catch {
        console.error("Confab: the strings to override are not JSON: " + own);
        own = {};
      }
    }
    const table = language === "en"
      ? Promise.resolve({})
      : (tables[language] = tables[language] || fetchLanguage(language).catch((error) => {
          console.error("Confab: the texts in " + language + " could not be loaded; English it is.", error);
          delete tables[language];
          return {};
        }));
    return table.then((texts) => ({ ...texts, ...own }));
  };
};
