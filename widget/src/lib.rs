//! The Confab widget. `confab.js` (the loader) draws a placeholder launcher in a Shadow DOM root
//! at once, loads this module when the page is idle or on the first click, and calls [`mount`],
//! which renders the chat into that same shadow root.

pub mod api;
mod app;
pub mod conversation;
mod feedback;
mod json;
pub mod markdown;
pub mod sources;
pub mod storage;
pub mod text;

use js_sys::Reflect;
use leptos::prelude::{GetUntracked, Set, WithUntracked};
use wasm_bindgen::prelude::*;
use web_sys::ShadowRoot;

use app::{Chat, Controls, Embed};

// Unit tests of this crate also run in headless Chromium (wasm-bindgen-test-runner).
#[cfg(all(test, target_family = "wasm"))]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

const STYLES: &str = include_str!("widget.css");

/// What `mount` returns to the loader, behind `Confab.open()`, `.close()`, `.send(text)`,
/// `.identify(token)` and `.reset()`.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Widget {
    controls: Controls,
    site_key: String,
}

#[wasm_bindgen]
impl Widget {
    pub fn open(&self) {
        self.controls.open.set(true);
    }
    pub fn close(&self) {
        self.controls.open.set(false);
    }
    pub fn send(&self, text: String) {
        self.controls.open.set(true);
        self.controls.outbox.set(Some(text));
    }
    /// `Confab.identify(token)`: the visitor token sent with every message from now on (an
    /// empty one forgets it), and `identity`, the loader's hash of its user id. Another
    /// identity than the one shown empties the panel, aborts the answer in flight and shows that
    /// identity's stored conversation; the same one (a refreshed token) changes nothing else.
    pub fn identify(&self, token: String, identity: String) {
        self.controls.visitor_token.set((!token.is_empty()).then_some(token));
        if self.controls.identity.with_untracked(|shown| *shown != identity) {
            self.controls.switch_to(identity);
        }
    }
    /// `Confab.reset()` (the site's visitor signed out): forgets the conversation, stored and
    /// shown (and its id on the relay: the next message starts a new one), and the identity,
    /// and aborts the answer in flight. The anonymous conversation is forgotten too, so that the
    /// widget shows what a reload would: nothing.
    pub fn reset(&self) {
        let identity = self.controls.identity.get_untracked();
        storage::forget(&self.site_key, &identity);
        storage::forget(&self.site_key, "");
        self.controls.visitor_token.set(None);
        self.controls.switch_to(String::new());
    }
}

/// Renders the widget into `root`. `options` carries the script tag's settings: `relay` (the
/// relay's URL), `site` (the site key), and optionally `open`, `focus` (opened by the visitor:
/// move the focus into the panel), `title`, `greeting`, `color`,
/// `position` (`left` or `right`, resolved by the loader), `dir` (`rtl` or `ltr`), `lang`,
/// `visitor_token` and `identity` (whose conversation to show, see `storage::key`).
#[wasm_bindgen]
pub fn mount(root: ShadowRoot, options: JsValue) -> Result<Widget, JsValue> {
    let text = |name: &str| Reflect::get(&options, &name.into()).ok().and_then(|v| v.as_string());
    let flag = |name: &str| Reflect::get(&options, &name.into()).ok().and_then(|v| v.as_bool());
    let flag = |name: &str| flag(name) == Some(true);
    let embed = Embed {
        relay: text("relay").unwrap_or_default(),
        site_key: text("site").unwrap_or_default(),
        open: flag("open"),
        focus: flag("focus"),
        title: text("title"),
        greeting: text("greeting"),
        color: text("color"),
        left: text("position").as_deref() == Some("left"),
        dir: if text("dir").as_deref() == Some("rtl") { "rtl".into() } else { "ltr".into() },
        lang: text("lang"),
    };
    let site_key = embed.site_key.clone();
    let controls = Controls::new(
        embed.open,
        text("visitor_token").filter(|t| !t.is_empty()),
        text("identity").unwrap_or_default(),
    );
    adopt_styles(&root)?;
    let document = web_sys::window().and_then(|w| w.document()).ok_or("no document")?;
    let container: web_sys::HtmlElement = document.create_element("div")?.unchecked_into();
    root.append_child(&container)?;
    leptos::mount::mount_to(container, move || {
        leptos::view! { <Chat embed=embed.clone() controls=controls/> }
    })
    .forget();
    Ok(Widget { controls, site_key })
}

/// Attaches the widget's CSS to the shadow root as a constructable stylesheet: it reaches only
/// the widget, and unlike a `<style>` element it is allowed under a CSP without
/// `'unsafe-inline'`. It replaces the loader's sheet, which styled only the placeholder.
fn adopt_styles(root: &ShadowRoot) -> Result<(), JsValue> {
    let sheet = web_sys::CssStyleSheet::new()?;
    sheet.replace_sync(STYLES)?;
    Reflect::set(root, &"adoptedStyleSheets".into(), &js_sys::Array::of1(&sheet))?;
    Ok(())
}
