#![cfg(not(target_arch = "wasm32"))]
//! Property tests of the markdown renderer, natively: for any text at all, the elements and
//! attributes it would build are on its allow-list.
//!
//! The DOM builder (`render_into`) runs only in a browser, where `tests/markdown.rs` walks the
//! real nodes for chosen inputs. Here the parser's output, the tree `render_into` walks, is turned
//! into the elements and attributes `render_into` makes for each node (one arm per node, as in
//! `render_block`, `render_list` and `render_inlines`) and checked against the same allow-list,
//! for many generated inputs: hostile HTML, link schemes in every case and with control
//! characters, unclosed delimiters, deep nesting.

use confab_widget::markdown::{Block, Inline, List, parse, safe_href};
use proptest::prelude::*;

const TAGS: [&str; 11] =
    ["p", "br", "ul", "ol", "li", "em", "strong", "code", "pre", "a", "blockquote"];

/// An element as `render_into` would create it: its tag and the attributes it sets.
#[derive(Debug)]
struct Element {
    tag: &'static str,
    attributes: Vec<(&'static str, String)>,
}

fn element(tag: &'static str) -> Element {
    Element { tag, attributes: Vec::new() }
}

fn block_elements(block: &Block, out: &mut Vec<Element>) {
    match block {
        Block::Paragraph(inlines) => {
            out.push(element("p"));
            inline_elements(inlines, out);
        }
        Block::List(list) => list_elements(list, out),
        Block::Code { lang, .. } => {
            out.push(element("pre"));
            let mut code = element("code");
            if let Some(lang) = lang {
                code.attributes.push(("class", format!("language-{lang}")));
            }
            out.push(code);
        }
        Block::Quote(blocks) => {
            out.push(element("blockquote"));
            for block in blocks {
                block_elements(block, out);
            }
        }
    }
}

fn list_elements(list: &List, out: &mut Vec<Element>) {
    let mut el = element(if list.start.is_some() { "ol" } else { "ul" });
    if let Some(start) = list.start.filter(|s| *s != 1) {
        el.attributes.push(("start", start.to_string()));
    }
    out.push(el);
    for item in &list.items {
        out.push(element("li"));
        inline_elements(&item.text, out);
        for sublist in &item.sublists {
            list_elements(sublist, out);
        }
    }
}

fn inline_elements(inlines: &[Inline], out: &mut Vec<Element>) {
    for inline in inlines {
        match inline {
            Inline::Text(_) => {}
            Inline::Break => out.push(element("br")),
            Inline::Code(_) => out.push(element("code")),
            Inline::Emphasis(inner) => {
                out.push(element("em"));
                inline_elements(inner, out);
            }
            Inline::Strong(inner) => {
                out.push(element("strong"));
                inline_elements(inner, out);
            }
            Inline::Link { href, text } => {
                let mut a = element("a");
                a.attributes.push(("href", href.clone()));
                a.attributes.push(("rel", "noopener noreferrer".to_owned()));
                a.attributes.push(("target", "_blank".to_owned()));
                out.push(a);
                inline_elements(text, out);
            }
        }
    }
}

/// The browser test's allow-list. Schemes are compared without regard to case, as browsers
/// compare them (`HTTPS://` is `https:`).
fn allowed(tag: &str, name: &str, value: &str) -> bool {
    match (tag, name) {
        ("a", "href") => {
            let scheme = value.split_once(':').map(|(scheme, _)| scheme.to_ascii_lowercase());
            matches!(scheme.as_deref(), Some("http" | "https" | "mailto"))
                // What the browser reads is what was checked: nothing it would strip or drop.
                && safe_href(value).as_deref() == Some(value)
        }
        ("a", "rel") => value == "noopener noreferrer",
        ("a", "target") => value == "_blank",
        ("code", "class") => value.strip_prefix("language-").is_some_and(|lang| {
            !lang.is_empty()
                && lang
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-'))
        }),
        ("ol", "start") => value.parse::<u32>().is_ok(),
        _ => false,
    }
}

/// Text that is mostly markdown syntax, hostile markup and link schemes, so that generated
/// inputs reach every branch of the parser; and now and then any character at all.
fn markdown_like() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        Just("*"),
        Just("**"),
        Just("_"),
        Just("__"),
        Just("`"),
        Just("```"),
        Just("~~~"),
        Just("["),
        Just("]"),
        Just("]("),
        Just("("),
        Just(")"),
        Just("\\"),
        Just("\n"),
        Just("\n\n"),
        Just("  \n"),
        Just("\r\n"),
        Just("- "),
        Just("* "),
        Just("1. "),
        Just("7) "),
        Just("4294967296. "),
        Just("    "),
        Just("\t"),
        Just("# "),
        Just("> "),
        Just("http://x.example/a_b"),
        Just("HTTPS://x.example"),
        Just("mailto:a@b.example"),
        Just("javascript:alert(1)"),
        Just(" java\tscript:alert(1)"),
        Just("\u{0}javascript:"),
        Just("data:text/html,<script>"),
        Just("vbscript:"),
        Just("javascript&#58;alert(1)"),
        Just("<img src=x onerror=alert(1)>"),
        Just("<script>alert(1)</script>"),
        Just("\" onmouseover=\"x"),
        Just("rust onload=x"),
        Just("c++"),
        Just("word"),
        Just("é"),
    ]
    .prop_map(str::to_owned);
    let piece = prop_oneof![8 => fragment, 1 => any::<char>().prop_map(String::from)];
    proptest::collection::vec(piece, 0..60).prop_map(|pieces| pieces.concat())
}

fn assert_only_allowed_markup(text: &str) -> Result<(), TestCaseError> {
    let mut elements = Vec::new();
    for block in &parse(text) {
        block_elements(block, &mut elements);
    }
    for el in &elements {
        prop_assert!(TAGS.contains(&el.tag), "<{}> from {:?}", el.tag, text);
        for (name, value) in &el.attributes {
            prop_assert!(
                allowed(el.tag, name, value),
                "<{} {}={:?}> from {:?}",
                el.tag,
                name,
                value,
                text
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn markdown_like_text_only_ever_makes_allowed_elements_and_attributes(text in markdown_like()) {
        assert_only_allowed_markup(&text)?;
    }

    #[test]
    fn any_text_only_ever_makes_allowed_elements_and_attributes(text in any::<String>()) {
        assert_only_allowed_markup(&text)?;
    }

}

proptest! {
    // Each case renders every prefix of its text, so fewer cases cover as much.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_prefix_of_a_streamed_answer_renders_only_allowed_markup(text in markdown_like()) {
        // Answers are rendered again on every token, so each prefix is rendered on its own.
        for (end, _) in text.char_indices() {
            assert_only_allowed_markup(&text[..end])?;
        }
    }
}
