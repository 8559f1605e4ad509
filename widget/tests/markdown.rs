#![cfg(target_arch = "wasm32")]
#![expect(
    clippy::unwrap_used,
    reason = "clippy's allow-unwrap-in-tests does not see #[wasm_bindgen_test] functions"
)]
//! The markdown renderer in a real browser: what it builds, and that the model's text can never
//! build anything else. Every render is attached to the page (where an `<img onerror>` would fire)
//! and walked: each element must be one of the allowed tags and carry only the allowed attributes.
//! Exact output is compared through `innerHTML`, which is only read here, as a serialisation.

use confab_widget::markdown::{Rendered, render_into};
use wasm_bindgen_test::*;
use web_sys::Element;

wasm_bindgen_test_configure!(run_in_browser);

const TAGS: [&str; 11] =
    ["p", "br", "ul", "ol", "li", "em", "strong", "code", "pre", "a", "blockquote"];

fn container() -> Element {
    let document = web_sys::window().unwrap().document().unwrap();
    let div = document.create_element("div").unwrap();
    document.body().unwrap().append_child(&div).unwrap();
    div
}

/// Renders `text` into a fresh `<div>` on the page and checks every element it made.
fn render(text: &str) -> Element {
    let div = container();
    render_into(&div, text).unwrap();
    assert_only_allowed_markup(&div);
    div
}

fn html(text: &str) -> String {
    render(text).inner_html()
}

fn assert_only_allowed_markup(parent: &Element) {
    let mut next = parent.first_element_child();
    while let Some(el) = next {
        let tag = el.tag_name().to_lowercase();
        assert!(TAGS.contains(&tag.as_str()), "<{tag}> in {}", parent.outer_html());
        for name in el.get_attribute_names().iter() {
            let name = name.as_string().unwrap();
            let value = el.get_attribute(&name).unwrap();
            let allowed = match (tag.as_str(), name.as_str()) {
                ("a", "href") => {
                    ["http:", "https:", "mailto:"].iter().any(|s| value.starts_with(s))
                }
                ("a", "rel") => value == "noopener noreferrer",
                ("a", "target") => value == "_blank",
                ("code", "class") => value.starts_with("language-"),
                ("ol", "start") => value.parse::<u32>().is_ok(),
                _ => false,
            };
            assert!(allowed, "<{tag} {name}={value:?}> in {}", parent.outer_html());
        }
        assert_only_allowed_markup(&el);
        next = el.next_element_sibling();
    }
}

#[wasm_bindgen_test]
fn renders_paragraphs_with_line_breaks() {
    assert_eq!(html("one\ntwo\n\nthree"), "<p>one<br>two</p><p>three</p>");
}

#[wasm_bindgen_test]
fn renders_emphasis_strong_and_inline_code() {
    assert_eq!(
        html("*a* __b__ ***c*** `<d> **e**`"),
        "<p><em>a</em> <strong>b</strong> <strong><em>c</em></strong> \
         <code>&lt;d&gt; **e**</code></p>"
    );
}

#[wasm_bindgen_test]
fn renders_headings_as_bold_paragraphs() {
    assert_eq!(
        html("## Install *it*\ntext"),
        "<p><strong>Install <em>it</em></strong></p><p>text</p>"
    );
}

#[wasm_bindgen_test]
fn renders_lists_with_their_start_number_and_one_nested_level() {
    assert_eq!(html("- a\n  - b\n- c"), "<ul><li>a<ul><li>b</li></ul></li><li>c</li></ul>");
    assert_eq!(html("1. a\n\n2. b"), "<ol><li>a</li><li>b</li></ol>");
    assert_eq!(
        html("7) g\n8) **h**"),
        "<ol start=\"7\"><li>g</li><li><strong>h</strong></li></ol>"
    );
}

#[wasm_bindgen_test]
fn renders_fenced_code_verbatim_with_its_language() {
    assert_eq!(
        html("```rust\nif a < b && *c* {\n\n}\n```"),
        "<pre><code class=\"language-rust\">if a &lt; b &amp;&amp; *c* {\n\n}</code></pre>"
    );
    assert_eq!(html("```\nstill streaming"), "<pre><code>still streaming</code></pre>");
}

#[wasm_bindgen_test]
fn renders_quotes() {
    assert_eq!(html("> a\n> *b*\n\nc"), "<blockquote><p>a<br><em>b</em></p></blockquote><p>c</p>");
}

#[wasm_bindgen_test]
fn renders_links_that_open_in_a_new_tab_without_an_opener() {
    let div = render("see [the docs](https://e.com/a?b=1&c=2) or http://e.com/x.");
    assert_eq!(
        div.inner_html(),
        "<p>see <a href=\"https://e.com/a?b=1&amp;c=2\" rel=\"noopener noreferrer\" \
         target=\"_blank\">the docs</a> or <a href=\"http://e.com/x\" rel=\"noopener noreferrer\" \
         target=\"_blank\">http://e.com/x</a>.</p>"
    );
    let a = div.query_selector("a").unwrap().unwrap();
    assert_eq!(a.get_attribute("href").as_deref(), Some("https://e.com/a?b=1&c=2"));
    assert_eq!(a.get_attribute("rel").as_deref(), Some("noopener noreferrer"));
    assert_eq!(a.get_attribute("target").as_deref(), Some("_blank"));
    assert_eq!(
        html("[write](mailto:a@e.com)"),
        "<p><a href=\"mailto:a@e.com\" rel=\"noopener noreferrer\" target=\"_blank\">write</a></p>"
    );
}

#[wasm_bindgen_test]
fn shows_raw_html_as_literal_text() {
    for payload in [
        "<img src=x onerror=alert(1)>",
        "<script>alert(1)</script>",
        "<a href=\"javascript:alert(1)\">x</a>",
        "<svg onload=alert(1)>",
        "<iframe src=\"javascript:alert(1)\"></iframe>",
        "<p style=\"position:fixed\" onclick=alert(1)>x</p>",
        "&lt;b&gt; &amp; &#60;i&#62;",
    ] {
        let div = render(payload);
        assert_eq!(div.child_element_count(), 1, "{payload}");
        let p = div.first_element_child().unwrap();
        assert_eq!(p.tag_name(), "P");
        assert_eq!(p.child_element_count(), 0, "{payload}");
        assert_eq!(p.text_content().as_deref(), Some(payload));
    }
}

#[wasm_bindgen_test]
fn shows_raw_html_literally_inside_every_construct() {
    let payload = "<img src=x onerror=alert(1)>";
    for doc in [
        format!("**{payload}**"),
        format!("- {payload}"),
        format!("> {payload}"),
        format!("# {payload}"),
        format!("`{payload}`"),
        format!("```\n{payload}\n```"),
        format!("[{payload}](https://e.com)"),
    ] {
        let div = render(&doc);
        assert!(div.text_content().unwrap().contains(payload), "{doc}");
        assert!(div.query_selector("img").unwrap().is_none(), "{doc}");
    }
}

#[wasm_bindgen_test]
fn shows_only_the_text_of_links_to_unsafe_urls() {
    for url in [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        " javascript:alert(1)",
        "<java\tscript:alert(1)>",
        "javascript&#58;alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox(1)",
        "file:///etc/passwd",
        "//evil.com",
        "/account/delete",
    ] {
        let doc = format!("[click *me*]({url})");
        assert_eq!(html(&doc), "<p>click <em>me</em></p>", "{doc}");
    }
}

#[wasm_bindgen_test]
fn keeps_attribute_injection_inside_attribute_values() {
    let div = render("[x](https://e.com/\"onmouseover=\"alert(1))");
    let a = div.query_selector("a").unwrap().unwrap();
    assert_eq!(a.get_attribute_names().length(), 3);
    assert_eq!(a.get_attribute("href").as_deref(), Some("https://e.com/\"onmouseover=\"alert(1)"));
    let fence = render("```js\"onload=\"alert(1)\ncode\n```");
    assert_eq!(fence.inner_html(), "<pre><code>code</code></pre>");
}

#[wasm_bindgen_test]
fn replaces_what_was_rendered_before() {
    let div = container();
    render_into(&div, "first *draft*").unwrap();
    render_into(&div, "**final**").unwrap();
    assert_eq!(div.inner_html(), "<p><strong>final</strong></p>");
}

#[wasm_bindgen_test]
fn renders_every_prefix_of_a_streamed_answer() {
    let doc = "## Plan\n\nUse **bold** and [a link](https://e.com/a_(b)) <img src=x onerror=alert(1)>\n\n\
               1. one\n   - two `x`\n3. three [bad](javascript:alert(1))\n\n> quote\n\n```html\n\
               <script>alert(1)</script>\n```\nend ünïcödé 😀";
    let div = container();
    for (i, _) in doc.char_indices().chain([(doc.len(), ' ')]) {
        render_into(&div, &doc[..i]).unwrap();
        assert_only_allowed_markup(&div);
    }
    assert_eq!(div.inner_html().matches("<a ").count(), 1);
    assert_eq!(
        div.query_selector("code.language-html").unwrap().unwrap().text_content().as_deref(),
        Some("<script>alert(1)</script>")
    );
}

#[wasm_bindgen_test]
fn an_answer_updated_token_by_token_shows_what_a_fresh_render_shows() {
    let docs = [
        "## Plan\n\nUse **bold** and [a link](https://e.com/a_(b)) <img src=x onerror=alert(1)>\n\n\
         1. one\n   - two `x`\n3. three [bad](javascript:alert(1))\n\n> quote\n\n```html\n\
         <script>alert(1)</script>\n```\nend ünïcödé 😀",
        // A block that looks finished can still change: `1.` starts a list that `1.5` takes back.
        "text\n1.5 is a number\n# not\n#tag\n\n- a\n\n  more a\n- b",
        "`a` `b` `c` **d `e` f** [g `h`](https://e.com) i",
    ];
    for doc in docs {
        let (streamed, fresh) = (container(), container());
        let mut shown = Rendered::default();
        for (i, _) in doc.char_indices().chain([(doc.len(), ' ')]) {
            shown.update(&streamed, &doc[..i]).unwrap();
            render_into(&fresh, &doc[..i]).unwrap();
            assert_eq!(streamed.inner_html(), fresh.inner_html(), "{:?}", &doc[..i]);
            assert_only_allowed_markup(&streamed);
        }
    }
}

#[wasm_bindgen_test]
fn a_growing_answer_keeps_the_nodes_that_did_not_change() {
    let div = container();
    let mut shown = Rendered::default();
    shown.update(&div, "First paragraph.\n\n`one` and").unwrap();
    let first = div.first_element_child().unwrap();
    let code = div.query_selector("code").unwrap().unwrap();
    shown.update(&div, "First paragraph.\n\n`one` and `two` and more").unwrap();
    assert_eq!(
        div.inner_html(),
        "<p>First paragraph.</p><p><code>one</code> and <code>two</code> and more</p>"
    );
    assert!(div.first_element_child().unwrap().is_same_node(Some(&first)));
    assert!(div.query_selector("code").unwrap().unwrap().is_same_node(Some(&code)));
}

#[wasm_bindgen_test]
fn pathological_answers_render_as_text_and_code() {
    let brackets = "[".repeat(4_000);
    assert_eq!(html(&brackets), format!("<p>{brackets}</p>"));
    let escaped = "\\`` ".repeat(2_000);
    assert_eq!(html(&escaped), format!("<p>{}</p>", escaped.replace('\\', "").trim_end()));
    let spans = html(&"`a` ".repeat(2_000));
    assert_eq!(spans.matches("<code>a</code>").count(), 2_000);
}
