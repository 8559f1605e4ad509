//! The chat as a Leptos component, for Rust front-ends (Leptos 0.8, client-side rendering):
//! `<ConfabChat relay=... site=.../>` draws the same chat as the script tag and the npm
//! package, in a shadow root of its own, with the same options, and destroys it when it leaves
//! the page. Nothing here is exported to JavaScript, so it adds nothing to the widget's module.

use std::collections::HashMap;

use leptos::prelude::*;
use wasm_bindgen::prelude::*;

use crate::{Widget, mount};

/// Inline (the panel alone, filling the component's box) or floating (a launcher and its panel
/// over the page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Inline,
    Floating,
}

/// What the chat tells the app (the package's events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatEvent {
    Open,
    Close,
    /// An answer is complete: its text.
    Message(String),
    /// A piece of the answer streaming in.
    Delta(String),
    /// Why an answer did not come, in the visitor's words.
    Error(String),
}

impl ChatEvent {
    fn from_js(name: &str, detail: String) -> Option<Self> {
        Some(match name {
            "open" => Self::Open,
            "close" => Self::Close,
            "message" => Self::Message(detail),
            "message.delta" => Self::Delta(detail),
            "error" => Self::Error(detail),
            _ => return None,
        })
    }
}

/// The Confab chat. `relay` is the relay's URL and `site` the site key; the rest are the
/// package's options (`name` keeps this chat's conversation apart from other chats of the site
/// on the page; an inline chat is named `inline` unless named otherwise). `visitor_token` is a
/// verified visitor's token (a signed JWT or an `hmac.` token). `on_event` hears what the chat
/// tells the page. The texts are in the language of `locale` (English when the widget does not
/// speak it; the languages are built into the app that uses the component, about 12 KB of it
/// compressed), with `strings` (key to text, see `confab_widget::text`) on top.
#[component]
#[expect(clippy::too_many_arguments, reason = "a component's props")]
pub fn ConfabChat(
    #[prop(into)] relay: String,
    #[prop(into)] site: String,
    #[prop(optional)] mode: Mode,
    #[prop(optional, into)] name: Option<String>,
    #[prop(optional, into)] locale: Option<String>,
    #[prop(optional, into)] title: Option<String>,
    #[prop(optional, into)] greeting: Option<String>,
    #[prop(optional, into)] color: Option<String>,
    #[prop(optional, into)] visitor_token: Option<String>,
    #[prop(optional)] strings: HashMap<String, String>,
    #[prop(optional)] on_event: Option<Callback<ChatEvent>>,
) -> impl IntoView {
    let host = NodeRef::<leptos::html::Div>::new();
    // The chat, and the function that hands its events to `on_event` (dropped after it).
    let widget = StoredValue::new_local(None::<(Widget, Option<Closure<dyn Fn(String, String)>>)>);
    let rtl = locale.as_deref().is_some_and(right_to_left);
    let texts = locale.as_deref().and_then(texts_of);
    // The panel says the language it speaks.
    let locale = if texts.is_some() || locale.as_deref().is_some_and(|l| language(l) == "en") {
        locale
    } else {
        Some("en".to_owned())
    };
    let options = [
        ("relay", Some(relay.trim_end_matches('/').to_owned())),
        ("site", Some(site)),
        ("mode", Some(if mode == Mode::Floating { "floating" } else { "inline" }.to_owned())),
        ("name", name),
        ("lang", locale),
        ("title", title),
        ("greeting", greeting),
        ("color", color),
        ("dir", Some(if rtl { "rtl" } else { "ltr" }.to_owned())),
        ("position", Some(if rtl { "left" } else { "right" }.to_owned())),
        ("identity", Some(visitor_token.as_deref().map(identity).unwrap_or_default())),
        ("visitor_token", visitor_token),
    ];
    Effect::new(move |_| {
        let Some(host) = host.get() else { return };
        if widget.with_value(Option::is_some) {
            return;
        }
        let init = web_sys::ShadowRootInit::new(web_sys::ShadowRootMode::Open);
        let Ok(root) = host.shadow_root().map_or_else(|| host.attach_shadow(&init), Ok) else {
            return;
        };
        let object = js_sys::Object::new();
        for (key, value) in &options {
            if let Some(value) = value {
                let _ = js_sys::Reflect::set(&object, &(*key).into(), &value.into());
            }
        }
        let emit = on_event.map(|on_event| {
            let emit = Closure::<dyn Fn(String, String)>::new(move |name: String, detail| {
                if let Some(event) = ChatEvent::from_js(&name, detail) {
                    on_event.try_run(event);
                }
            });
            let _ = js_sys::Reflect::set(&object, &"emit".into(), emit.as_ref());
            emit
        });
        let table = texts
            .and_then(|json| js_sys::JSON::parse(json).ok())
            .unwrap_or_else(|| js_sys::Object::new().into());
        for (key, text) in &strings {
            let _ = js_sys::Reflect::set(&table, &key.into(), &text.into());
        }
        let _ = js_sys::Reflect::set(&object, &"strings".into(), &table);
        match mount(root, object.into()) {
            Ok(mounted) => widget.set_value(Some((mounted, emit))),
            Err(error) => {
                web_sys::console::error_2(&"Confab: the chat could not be mounted".into(), &error)
            }
        }
    });
    on_cleanup(move || {
        if let Some((widget, emit)) = widget.try_update_value(Option::take).flatten() {
            // The chat calls `emit` no more once destroyed.
            widget.destroy();
            drop(emit);
        }
    });
    view! { <div class="confab-chat" node_ref=host style:display="block" style:height="100%"></div> }
}

/// The languages besides English: `widget/locales/<language>.json` (`languageOf` in
/// `widget/js/locale.js` chooses among the same).
const LANGUAGES: &[(&str, &str)] = &[
    ("ar", include_str!("../locales/ar.json")),
    ("de", include_str!("../locales/de.json")),
    ("es", include_str!("../locales/es.json")),
    ("fr", include_str!("../locales/fr.json")),
    ("he", include_str!("../locales/he.json")),
    ("hi", include_str!("../locales/hi.json")),
    ("it", include_str!("../locales/it.json")),
    ("ja", include_str!("../locales/ja.json")),
    ("ko", include_str!("../locales/ko.json")),
    ("nl", include_str!("../locales/nl.json")),
    ("pl", include_str!("../locales/pl.json")),
    ("pt", include_str!("../locales/pt.json")),
    ("ru", include_str!("../locales/ru.json")),
    ("tr", include_str!("../locales/tr.json")),
    ("zh", include_str!("../locales/zh.json")),
];

/// The primary language subtag of a locale, in lower case (`iw`, Hebrew's old code, is `he`).
fn language(locale: &str) -> String {
    let language = locale.split(['-', '_']).next().unwrap_or_default().to_ascii_lowercase();
    if language == "iw" { "he".into() } else { language }
}

/// The texts (JSON) of `locale`'s language, if the widget speaks it and it is not English.
pub fn texts_of(locale: &str) -> Option<&'static str> {
    let language = language(locale);
    LANGUAGES.iter().find(|(code, _)| *code == language).map(|(_, json)| *json)
}

/// Whether a locale reads right to left (`rightToLeft` in `widget/js/embed.js`).
fn right_to_left(locale: &str) -> bool {
    matches!(
        language(locale).as_str(),
        "ar" | "ckb" | "dv" | "fa" | "he" | "ks" | "ku" | "ps" | "sd" | "ug" | "ur" | "yi"
    )
}

/// Whose conversation a visitor token stands for: `identity` in `widget/js/identity.js` (the
/// user id in an `hmac.` token or a JWT's `sub`, else the whole token, hashed with cyrb53), so
/// that the component and the script tag keep the same visitor's conversation in the same slot.
pub fn identity(token: &str) -> String {
    let mut parts = token.split('.');
    let (kind, id, sig) = (parts.next(), parts.next(), parts.next());
    let decoded = |s: &str| -> Option<String> {
        let standard: String = s
            .chars()
            .map(|c| match c {
                '-' => '+',
                '_' => '/',
                c => c,
            })
            .collect();
        let padded = standard.clone() + &"=".repeat((4 - standard.len() % 4) % 4);
        web_sys::window()?.atob(&padded).ok()
    };
    let user = match (kind, id, sig) {
        (Some("hmac"), Some(id), _) => decoded(id).map(|u| ["u", &u].concat()),
        (Some(_), Some(id), Some(_)) => decoded(id)
            .and_then(|json| js_sys::JSON::parse(&json).ok())
            .and_then(|claims| js_sys::Reflect::get(&claims, &"sub".into()).ok())
            .and_then(|sub| sub.as_string())
            .map(|sub| ["u", &sub].concat()),
        _ => None,
    };
    cyrb53(&user.unwrap_or_else(|| ["t", token].concat()))
}

/// cyrb53 over UTF-16 code units (as `charCodeAt`), in base 36: the loader's hash.
fn cyrb53(text: &str) -> String {
    let (mut h1, mut h2) = (0xdead_beef_u32, 0x41c6_ce57_u32);
    for c in text.encode_utf16() {
        h1 = (h1 ^ u32::from(c)).wrapping_mul(2_654_435_761);
        h2 = (h2 ^ u32::from(c)).wrapping_mul(1_597_334_677);
    }
    h1 = (h1 ^ (h1 >> 16)).wrapping_mul(2_246_822_507)
        ^ (h2 ^ (h2 >> 13)).wrapping_mul(3_266_489_909);
    h2 = (h2 ^ (h2 >> 16)).wrapping_mul(2_246_822_507)
        ^ (h1 ^ (h1 >> 13)).wrapping_mul(3_266_489_909);
    let mut n = (u64::from(h2 & 0x1f_ffff) << 32) | u64::from(h1);
    let mut digits = Vec::new();
    loop {
        let d = (n % 36) as u8;
        digits.push(if d < 10 { b'0' + d } else { b'a' + d - 10 });
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.iter().rev().map(|&d| char::from(d)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    // What the loader's JavaScript gives for the same text (identity.js's cyrb53, run in node).
    const CYRB53_ALICE: &str = "1oausnr8dkf";
    const CYRB53_OPAQUE: &str = "242ognfp8fp";
    const CYRB53_UNICODE: &str = "1acjjwz9a31";

    #[wasm_bindgen_test(unsupported = test)]
    fn cyrb53_matches_the_loaders_hash() {
        assert_eq!(cyrb53("ualice@example.com"), CYRB53_ALICE);
        assert_eq!(cyrb53("tsome-opaque-token"), CYRB53_OPAQUE);
        assert_eq!(cyrb53("u\u{e9}l\u{e8}ve \u{1f600}"), CYRB53_UNICODE);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn every_language_file_is_there_and_chosen_by_its_primary_subtag() {
        assert_eq!(LANGUAGES.len(), 15);
        for (code, json) in LANGUAGES {
            assert!(json.contains("\"send\""), "{code}");
            assert_eq!(texts_of(&[code, "-XX"].concat()), Some(*json));
        }
        assert_eq!(texts_of("iw"), texts_of("he"));
        assert_eq!(texts_of("en-GB"), None);
        assert_eq!(texts_of("sw"), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn right_to_left_locales() {
        for rtl in ["ar", "he-IL", "fa_IR", "UR"] {
            assert!(right_to_left(rtl), "{rtl}");
        }
        for ltr in ["en", "fr-CA", "arn", "hi"] {
            assert!(!right_to_left(ltr), "{ltr}");
        }
    }
}
