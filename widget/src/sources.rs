//! The sources an answer is grounded in (the relay's knowledge), shown under it as links.
//!
//! The relay names them in a chunk with no choices and a `confab.sources` list (see the relay's
//! `knowledge::grounding`): `{"n": 1, "title": "Returns", "url": "https://…"}`, `url` only for a
//! page. A URL becomes a link only through [`markdown::safe_href`] and only for `http`/`https`,
//! like every other link the widget draws; a title is text, never markup.
//!
//! The list is built with DOM calls ([`show`]), like `feedback`'s row: as a Leptos view it cost
//! about 4 KB of brotli'd module.

use wasm_bindgen::JsValue;
use web_sys::Element;

use crate::text::{self, Strings};
use crate::{json, markdown};

/// Sources shown under one answer, at most.
const MAX_SOURCES: usize = 8;
/// Characters of a title shown, at most.
const MAX_TITLE_CHARS: usize = 120;

/// One source as the widget shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLink {
    pub title: String,
    /// Safe to use as a link's `href`; `None`: shown as text (a file, or a URL refused).
    pub href: Option<String>,
}

/// The sources a stream chunk names, if it is the relay's sources chunk.
pub fn from_chunk(data: &str) -> Option<Vec<SourceLink>> {
    let chunk = json::parse(data)?;
    let confab = json::get(&chunk, "confab");
    if confab.is_undefined() {
        return None;
    }
    Some(from_list(&confab, "sources"))
}

/// The sources in `value[key]` (a chunk's list, or a stored answer's): those with a title.
pub fn from_list(value: &JsValue, key: &str) -> Vec<SourceLink> {
    json::items(value, key)
        .iter()
        .filter_map(|source| {
            let title = json::string(source, "title")?;
            let title: String = title.trim().chars().take(MAX_TITLE_CHARS).collect();
            let href = json::string(source, "url").and_then(|url| web_href(&url));
            (!title.is_empty()).then_some(SourceLink { title, href })
        })
        .take(MAX_SOURCES)
        .collect()
}

/// `url` as a link to a web page, or `None` (anything but http and https).
fn web_href(url: &str) -> Option<String> {
    let href = markdown::safe_href(url)?;
    let scheme = href.split_once(':')?.0.to_ascii_lowercase();
    matches!(scheme.as_str(), "http" | "https").then_some(href)
}

/// Fills `holder` (emptied first) with `sources`: a "Sources" label and a list of links (or plain
/// titles). Nothing for no sources, so the holder stays empty (and hidden by CSS).
pub fn show(holder: &Element, sources: &[SourceLink], strings: &Strings) -> Result<(), JsValue> {
    holder.set_text_content(None);
    if sources.is_empty() {
        return Ok(());
    }
    let document = holder.owner_document().ok_or(JsValue::NULL)?;
    let label = document.create_element("span")?;
    label.set_class_name("sources-label");
    label.set_attribute("aria-hidden", "true")?;
    let said = strings.get(text::SOURCES);
    label.set_text_content(Some(&said));
    holder.append_child(&label)?;
    let list = document.create_element("ul")?;
    list.set_attribute("aria-label", &said)?;
    for source in sources {
        let item = document.create_element("li")?;
        match &source.href {
            Some(href) => {
                let link = document.create_element("a")?;
                link.set_attribute("href", href)?;
                link.set_attribute("target", "_blank")?;
                link.set_attribute("rel", "noopener noreferrer")?;
                link.set_text_content(Some(&source.title));
                item.append_child(&link)?;
            }
            None => item.set_text_content(Some(&source.title)),
        }
        list.append_child(&item)?;
    }
    holder.append_child(&list)?;
    Ok(())
}

/// The sources as stored with an answer: a list of `{title, url}`.
pub fn to_list(sources: &[SourceLink]) -> JsValue {
    let list: js_sys::Array = sources
        .iter()
        .map(|source| {
            let mut fields = vec![("title", source.title.as_str().into())];
            if let Some(href) = &source.href {
                fields.push(("url", href.as_str().into()));
            }
            json::object(&fields)
        })
        .collect();
    list.into()
}

// The browser's JSON: these run in headless Chromium only.
#[cfg(all(test, target_family = "wasm"))]
// clippy's allow-unwrap-in-tests does not recognise #[wasm_bindgen_test] functions.
#[expect(clippy::unwrap_used, reason = "a failing test should panic")]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    // JSON goes through the browser's own parser: these run in headless Chromium only.
    #[wasm_bindgen_test]
    fn a_sources_chunk_gives_safe_links_and_plain_titles() {
        let chunk = r#"{"choices":[],"confab":{"sources":[
            {"n":1,"title":"Returns","url":"https://shop.example/returns"},
            {"n":2,"title":"Shipping notes"},
            {"n":3,"title":"<b>x</b>","url":"javascript:alert(1)"},
            {"n":4,"title":"Mail","url":"mailto:a@b.example"},
            {"n":5,"url":"https://no-title.example"}]}}"#;
        let sources = from_chunk(chunk).unwrap();
        assert_eq!(
            sources,
            vec![
                SourceLink {
                    title: "Returns".into(),
                    href: Some("https://shop.example/returns".into())
                },
                SourceLink { title: "Shipping notes".into(), href: None },
                SourceLink { title: "<b>x</b>".into(), href: None },
                SourceLink { title: "Mail".into(), href: None },
            ]
        );
    }

    #[wasm_bindgen_test]
    fn other_chunks_name_no_sources() {
        for other in [r#"{"choices":[{"delta":{"content":"hi"}}]}"#, r#"{"usage":{}}"#, "nope"] {
            assert_eq!(from_chunk(other), None, "{other}");
        }
    }
}
