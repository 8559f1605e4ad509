//! The Confab widget. `confab.js` (the loader) draws a placeholder launcher in a Shadow DOM root
//! at once, loads this module when the page is idle or on the first click, and calls [`mount`],
//! which renders the chat into that same shadow root.

pub mod api;
mod app;
pub mod component;
pub mod conversation;
mod feedback;
mod json;
pub mod markdown;
pub mod sources;
pub mod storage;
pub mod text;

use std::any::Any;
use std::cell::RefCell;

use js_sys::{Array, Function, Reflect};
use leptos::prelude::{GetUntracked, Owner, Set, WithUntracked};
use wasm_bindgen::prelude::*;
use web_sys::ShadowRoot;

use app::{Chat, Controls, Embed};
pub use component::{ChatEvent, ConfabChat, Mode};

// Unit tests of this crate also run in headless Chromium (wasm-bindgen-test-runner).
#[cfg(all(test, target_family = "wasm"))]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

/// `widget.css`, minified by `build.rs`.
const STYLES: &str = include_str!(concat!(env!("OUT_DIR"), "/widget.min.css"));

thread_local! {
    /// The root owner of every chat's `Controls` and views, never cleaned up as a whole: a chat
    /// mounted from inside another Leptos app (`ConfabChat`) does not belong to the app's owners,
    /// and is cleaned up by its own `destroy`.
    static DETACHED: Owner = Owner::new_root(None);
}
/// The host element of the floating widget: nothing of the page's CSS reaches it (see the top
/// of `widget.css`).
const FLOATING_HOST: &str = ":host{all:initial!important}";
/// The host element of an inline chat: a block that fills its container, which the page sizes
/// (a page's rules on the host win over these); the chat fills the host.
const INLINE_HOST: &str = ":host{display:block;height:100%;min-height:320px}:host>div{height:100%}";

/// What `mount` returns: behind `Confab.open()`, `.close()`, `.send(text)`, `.identify(token)`,
/// `.reset()` for the script tag, and the package's handle (`destroy()` too).
#[wasm_bindgen]
#[derive(Debug)]
pub struct Widget {
    controls: Controls,
    /// Where its conversations are stored: the site key, and the chat's name if it has one
    /// (see [`mount`]).
    storage_key: String,
    /// Until [`Widget::destroy`].
    mounted: RefCell<Option<Mounted>>,
}

/// Freed by the page (`free()`, or the glue's finalizer) without `destroy()`: destroyed first,
/// so that no task still waiting on the network finds the views gone but the chat not shut.
impl Drop for Widget {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// What a mounted widget holds on the page.
struct Mounted {
    /// Owns every signal, effect and cleanup of the chat's views.
    owner: Owner,
    /// Leptos's handle of the mounted view (`UnmountHandle`, of a type too long to name).
    view: Box<dyn Any>,
    container: web_sys::HtmlElement,
    root: ShadowRoot,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mounted")
    }
}

#[wasm_bindgen]
impl Widget {
    fn mounted(&self) -> bool {
        self.mounted.borrow().is_some()
    }
    pub fn open(&self) {
        if self.mounted() {
            self.controls.open.set(true);
        }
    }
    /// Closes the floating panel (an inline chat is always open).
    pub fn close(&self) {
        if self.mounted() && !self.controls.inline {
            self.controls.open.set(false);
        }
    }
    pub fn send(&self, text: String) {
        if self.mounted() {
            self.controls.open.set(true);
            self.controls.outbox.set(Some(text));
        }
    }
    /// `Confab.identify(token)`: the visitor token sent with every message from now on (an
    /// empty one forgets it), and `identity`, the loader's hash of its user id. Another
    /// identity than the one shown empties the panel, aborts the answer in flight and shows that
    /// identity's stored conversation; the same one (a refreshed token) changes nothing else.
    pub fn identify(&self, token: String, identity: String) {
        if !self.mounted() {
            return;
        }
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
        if !self.mounted() {
            return;
        }
        let identity = self.controls.identity.get_untracked();
        storage::forget(&self.storage_key, &identity);
        storage::forget(&self.storage_key, "");
        self.controls.visitor_token.set(None);
        self.controls.switch_to(String::new());
    }
    /// Removes the chat from the page and leaves nothing running: the answer in flight is
    /// aborted (and cancelled on the relay), the conversation's event stream closed, every
    /// effect and listener of its views dropped. Work still awaiting the network when it is
    /// called finds the chat gone and does nothing. Calling it twice does nothing more; so do
    /// the other methods afterwards.
    pub fn destroy(&self) {
        let Some(mounted) = self.mounted.borrow_mut().take() else { return };
        self.controls.shut();
        drop(mounted.view);
        mounted.owner.cleanup();
        mounted.container.remove();
        let _ = Reflect::set(&mounted.root, &"adoptedStyleSheets".into(), &Array::new());
    }
}

/// Renders the widget into `root`. `options` carries the embedding's settings: `relay` (the
/// relay's URL), `site` (the site key), and optionally `mode` (`floating`, the default: a
/// launcher and a panel over the page; or `inline`: the panel alone, filling the host element),
/// `name` (keeps this chat's conversation apart from other chats of the site on the page; an
/// inline chat is named `inline` unless named otherwise), `emit` (a function called with each
/// event's name and detail: `open`, `close`, `message`, `message.delta`, `error`), `open`,
/// `focus` (opened by the visitor: move the focus into the panel), `title`, `greeting`,
/// `color`, `position` (`left` or `right`, resolved by the loader), `dir` (`rtl` or `ltr`),
/// `lang`, `strings` (the texts in the chat's language, with the site's overrides: an object of
/// key to text, see `text`), `visitor_token` and `identity` (whose conversation to show, see
/// `storage::key`).
#[wasm_bindgen]
pub fn mount(root: ShadowRoot, options: JsValue) -> Result<Widget, JsValue> {
    let text = |name: &str| Reflect::get(&options, &name.into()).ok().and_then(|v| v.as_string());
    let flag = |name: &str| Reflect::get(&options, &name.into()).ok().and_then(|v| v.as_bool());
    let flag = |name: &str| flag(name) == Some(true);
    let inline = text("mode").as_deref() == Some("inline");
    let site_key = text("site").unwrap_or_default();
    let name = text("name").filter(|n| !n.is_empty()).or_else(|| inline.then(|| "inline".into()));
    let storage_key = match name {
        Some(name) => [site_key.as_str(), "/", &name].concat(),
        None => site_key.clone(),
    };
    let embed = Embed {
        relay: text("relay").unwrap_or_default(),
        site_key,
        storage_key: storage_key.clone(),
        inline,
        open: flag("open") || inline,
        focus: flag("focus"),
        title: text("title"),
        greeting: text("greeting"),
        color: text("color"),
        left: text("position").as_deref() == Some("left"),
        dir: if text("dir").as_deref() == Some("rtl") { "rtl".into() } else { "ltr".into() },
        lang: text("lang"),
    };
    let emitter: Option<Function> =
        Reflect::get(&options, &"emit".into()).ok().and_then(|f| f.dyn_into().ok());
    // Outside the chat's owner, and outside any owner of the caller's (the `ConfabChat`
    // component's): what a call from the page or a late network answer touches must outlive
    // `destroy`, which they then find in `Controls::shut`'s state.
    let controls = DETACHED.with(|detached| {
        detached.with(|| {
            Controls::new(
                embed.open,
                inline,
                text("visitor_token").filter(|t| !t.is_empty()),
                text("identity").unwrap_or_default(),
                emitter,
            )
        })
    });
    let table = Reflect::get(&options, &"strings".into()).unwrap_or_default();
    let strings = text::Strings::new(table, embed.lang.clone());
    adopt_styles(&root, inline)?;
    let document = web_sys::window().and_then(|w| w.document()).ok_or("no document")?;
    let container: web_sys::HtmlElement = document.create_element("div")?.unchecked_into();
    root.append_child(&container)?;
    let owner = DETACHED.with(|detached| detached.with(Owner::new));
    let view = owner.with(|| {
        leptos::mount::mount_to(container.clone(), move || {
            leptos::view! { <Chat embed=embed.clone() controls=controls strings/> }
        })
    });
    let mounted = Mounted { owner, view: Box::new(view), container, root };
    Ok(Widget { controls, storage_key, mounted: RefCell::new(Some(mounted)) })
}

/// Attaches the widget's CSS to the shadow root as constructable stylesheets: they reach only
/// the widget, and unlike a `<style>` element they are allowed under a CSP without
/// `'unsafe-inline'`. They replace the loader's sheet, which styled only the placeholder.
fn adopt_styles(root: &ShadowRoot, inline: bool) -> Result<(), JsValue> {
    let sheets = Array::new();
    for css in [if inline { INLINE_HOST } else { FLOATING_HOST }, STYLES] {
        let sheet = web_sys::CssStyleSheet::new()?;
        sheet.replace_sync(css)?;
        sheets.push(&sheet);
    }
    Reflect::set(root, &"adoptedStyleSheets".into(), &sheets)?;
    Ok(())
}
