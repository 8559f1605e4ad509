//! The feedback row under a complete answer of a conversation the relay keeps: thumbs up and
//! down (`aria-pressed` shows the verdict given), a quiet line for what the relay answered, and
//! after a thumbs-down an optional comment. Built by hand with DOM calls, like the answers
//! themselves (`markdown`): as a Leptos view this row cost about 6 KB of brotli'd module, for a
//! few elements that never change shape. The chat attaches one click and one submit handler to
//! the row and finds here which thumb or form they came from.

use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Document, Element};

use crate::conversation::{MAX_COMMENT_CHARS, Rating};
use crate::text::{self, Strings};

const SVG: &str = "http://www.w3.org/2000/svg";
/// A thumbs-up (turned over by CSS for thumbs-down).
const THUMB: &str = "M2 10h4v11H2zM8 10l4.5-7.5c1.6 0 2.7 1.3 2.3 2.9L14 9h6a2 2 0 0 1 2 2.3l-1.4 7.9a2.2 2.2 0 0 1-2.2 1.8H8z";

fn element(
    document: &Document,
    tag: &str,
    attributes: &[(&str, &str)],
) -> Result<Element, JsValue> {
    let element = document.create_element(tag)?;
    for (name, value) in attributes {
        element.set_attribute(name, value)?;
    }
    Ok(element)
}

/// Fills the empty `row`: the two thumbs, the quiet line (a status region) and the hidden
/// comment form. Its text is all from [`text`]; nothing in it comes from the relay.
pub fn build(row: &Element, strings: &Strings) -> Result<(), JsValue> {
    let document = row.owner_document().ok_or(JsValue::NULL)?;
    let thumbs = [
        (Rating::Up, "thumb", strings.get(text::GOOD_ANSWER)),
        (Rating::Down, "thumb down", strings.get(text::BAD_ANSWER)),
    ];
    for (rating, class, label) in thumbs {
        let button = element(
            &document,
            "button",
            &[
                ("type", "button"),
                ("class", class),
                ("data-rating", rating.as_str()),
                ("aria-label", &label),
                ("aria-pressed", "false"),
            ],
        )?;
        let icon = document.create_element_ns(Some(SVG), "svg")?;
        for (name, value) in
            [("viewBox", "0 0 24 24"), ("aria-hidden", "true"), ("fill", "currentColor")]
        {
            icon.set_attribute(name, value)?;
        }
        let path = document.create_element_ns(Some(SVG), "path")?;
        path.set_attribute("d", THUMB)?;
        icon.append_child(&path)?;
        button.append_child(&icon)?;
        row.append_child(&button)?;
    }
    let line = element(&document, "span", &[("class", "quiet"), ("role", "status")])?;
    row.append_child(&line)?;
    let form = element(&document, "form", &[("class", "comment hidden")])?;
    let limit = text::decimal(MAX_COMMENT_CHARS as u64);
    let comment_label = strings.get(text::COMMENT_LABEL);
    let input = element(
        &document,
        "input",
        &[
            ("type", "text"),
            ("name", "comment"),
            ("dir", "auto"),
            ("maxlength", &limit),
            ("aria-label", &comment_label),
            ("placeholder", &comment_label),
        ],
    )?;
    let send = element(&document, "button", &[("type", "submit")])?;
    send.set_text_content(Some(&strings.get(text::SEND_COMMENT)));
    form.append_child(&input)?;
    form.append_child(&send)?;
    row.append_child(&form)?;
    Ok(())
}

/// Shows `rating` as the thumb pressed (`None`: neither).
pub fn show_rating(row: &Element, rating: Option<Rating>) {
    for thumb in [Rating::Up, Rating::Down] {
        if let Ok(Some(button)) =
            row.query_selector(&["[data-rating=", thumb.as_str(), "]"].concat())
        {
            let pressed = if rating == Some(thumb) { "true" } else { "false" };
            let _ = button.set_attribute("aria-pressed", pressed);
        }
    }
}

/// Shows or hides the comment form. Hidden once sent, it hands the focus back to the
/// thumbs-down it came from (rather than to the page).
pub fn show_comment(row: &Element, shown: bool) {
    if let Ok(Some(form)) = row.query_selector("form") {
        let had_focus = form.matches(":focus-within").unwrap_or_default();
        let _ = form.set_attribute("class", if shown { "comment" } else { "comment hidden" });
        if had_focus
            && !shown
            && let Ok(Some(thumb)) = row.query_selector("[data-rating=down]")
            && let Ok(thumb) = thumb.dyn_into::<web_sys::HtmlElement>()
        {
            let _ = thumb.focus();
        }
    }
}

/// The quiet line, where what the relay answered is said.
pub fn line(row: &Element) -> Option<Element> {
    row.query_selector(".quiet").ok().flatten()
}

/// The thumb a click on `target` (the thumb, or its icon) pressed.
pub fn thumb_of(target: Option<web_sys::EventTarget>) -> Option<Rating> {
    let target: Element = target?.dyn_into().ok()?;
    let thumb = target.closest("[data-rating]").ok()??;
    Rating::from_name(&thumb.get_attribute("data-rating")?)
}

/// What the visitor typed in the comment form (the submit event's target).
pub fn comment_of(form: Option<web_sys::EventTarget>) -> String {
    let field =
        |of: &JsValue, name: &str| js_sys::Reflect::get(of, &name.into()).unwrap_or_default();
    let form = form.map(JsValue::from).unwrap_or_default();
    field(&field(&form, "comment"), "value").as_string().unwrap_or_default()
}

// The DOM: in headless Chromium only.
#[cfg(all(test, target_family = "wasm"))]
#[expect(clippy::unwrap_used, reason = "a failing test should panic")]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test]
    fn the_row_has_two_labelled_thumbs_a_status_line_and_a_hidden_comment_form() {
        let document = web_sys::window().unwrap().document().unwrap();
        let row = document.create_element("div").unwrap();
        build(&row, &Strings::default()).unwrap();
        assert_eq!(row.child_element_count(), 4);
        let up = row.query_selector("[aria-label='Good answer']").unwrap().unwrap();
        let down = row.query_selector("[aria-label='Bad answer']").unwrap().unwrap();
        assert_eq!(up.get_attribute("type").as_deref(), Some("button"));
        show_rating(&row, Some(Rating::Down));
        assert_eq!(down.get_attribute("aria-pressed").as_deref(), Some("true"));
        assert_eq!(up.get_attribute("aria-pressed").as_deref(), Some("false"));
        // A click on the icon inside a thumb is a click on that thumb.
        let icon = down.first_element_child().unwrap();
        assert_eq!(thumb_of(Some(icon.into())), Some(Rating::Down));
        assert_eq!(thumb_of(Some(row.clone().into())), None);
        let form = row.query_selector("form").unwrap().unwrap();
        assert_eq!(form.get_attribute("class").as_deref(), Some("comment hidden"));
        show_comment(&row, true);
        assert_eq!(form.get_attribute("class").as_deref(), Some("comment"));
        let input = row.query_selector("input").unwrap().unwrap();
        assert_eq!(input.get_attribute("maxlength").as_deref(), Some("500"));
        js_sys::Reflect::set(&input, &"value".into(), &"too vague".into()).unwrap();
        assert_eq!(comment_of(Some(form.into())), "too vague");
        assert_eq!(line(&row).unwrap().get_attribute("role").as_deref(), Some("status"));
    }
}
